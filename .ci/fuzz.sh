#!/usr/bin/env bash
# Smoke-runs every pqcc-core and pqcc-verify fuzz target (libFuzzer via cargo-fuzz)
# for a short while.
# The core has no unsafe code, so the targets run without a sanitizer; what they check
# is panics, failed assertions (canonical re-encoding, nothing opens without the key)
# and timeouts. Longer runs: FUZZ_SECONDS=600 .ci/fuzz.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT/core-nostd/fuzz"
SECONDS_EACH="${FUZZ_SECONDS:-15}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked --quiet
fi
# cargo-fuzz passes unstable rustc flags; this stable toolchain accepts them with
# RUSTC_BOOTSTRAP (fuzz builds only, never the shipped crates).
export RUSTC_BOOTSTRAP=1
targets=(decode_message frame_header open_frame handshake_response statement_envelope statement_body policy_check)
cargo fuzz build -O --sanitizer none >/dev/null 2>&1 || cargo fuzz build -O --sanitizer none
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    out=$(cargo fuzz run -O --sanitizer none "$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 2>&1) || {
        echo "$out" | tail -n 40 >&2
        echo "fuzz: $t FAILED" >&2
        exit 1
    }
    runs=$(echo "$out" | grep -oE "Done [0-9]+ runs" | tail -n 1)
    echo "fuzz: $t ok ($runs in ${SECONDS_EACH}s)"
done

# pqcc-verify (std; its parsers for NVIDIA GPU evidence, RIM XML, X.509, OCSP, CRLs,
# and the launch-measurement parsers: OVMF metadata, PE images, kernel headers).
cd "$ROOT/verify/fuzz"
cargo fuzz build -O --sanitizer none >/dev/null 2>&1 || cargo fuzz build -O --sanitizer none
for t in gpu_evidence launch_measure; do
    mkdir -p "corpus/$t"
    out=$(cargo fuzz run -O --sanitizer none "$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 2>&1) || {
        echo "$out" | tail -n 40 >&2
        echo "fuzz: $t FAILED" >&2
        exit 1
    }
    runs=$(echo "$out" | grep -oE "Done [0-9]+ runs" | tail -n 1)
    echo "fuzz: $t ok ($runs in ${SECONDS_EACH}s)"
done
