#!/usr/bin/env bash
# Smoke-runs every pqcc fuzz target (libFuzzer via cargo-fuzz) for a short while:
# pqcc-core's decoders, pqcc-verify's evidence parsers and the host tools' parsers of
# key files, audit logs, policy files and ELF headers.
# The core has no unsafe code, so the targets run without a sanitizer; what they check
# is panics, failed assertions (canonical re-encoding, nothing opens without the key)
# and timeouts. Longer runs: FUZZ_SECONDS=600 .ci/fuzz.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECONDS_EACH="${FUZZ_SECONDS:-15}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked --quiet
fi
# cargo-fuzz passes unstable rustc flags; this stable toolchain accepts them with
# RUSTC_BOOTSTRAP (fuzz builds only, never the shipped crates).
export RUSTC_BOOTSTRAP=1

# run_targets DIR TARGET...: builds the fuzz crate in DIR and runs each target.
run_targets() {
    local dir="$1"
    shift
    cd "$dir"
    cargo fuzz build -O --sanitizer none >/dev/null 2>&1 || cargo fuzz build -O --sanitizer none
    for t in "$@"; do
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
}

run_targets "$ROOT/core-nostd/fuzz" decode_message frame_header open_frame handshake_response \
    statement_envelope statement_body policy_check evidence_bundle sealed_parsers

# pqcc-verify (std; its parsers for NVIDIA GPU evidence, RIM XML, X.509, OCSP, CRLs,
# the launch-measurement parsers: OVMF metadata, PE images, kernel headers, and the TEE
# evidence parsers: SEV-SNP reports, certificate tables and AMD CRLs, TDX quotes).
# The real SNP report and TDX quote seed their targets (a leading mode byte 0 selects
# the evidence path); random bytes almost never get past the length and version checks.
shared="$ROOT/../shared/data"
for t in snp_report tdx_quote; do mkdir -p "$ROOT/verify/fuzz/corpus/$t"; done
if [ -r "$shared/sev-snp/report_milan.bin" ] && [ ! -e "$ROOT/verify/fuzz/corpus/snp_report/seed-milan" ]; then
    { printf '\0'; cat "$shared/sev-snp/report_milan.bin"; } > "$ROOT/verify/fuzz/corpus/snp_report/seed-milan"
fi
if [ -r "$shared/tdx/tdx_quote" ] && [ ! -e "$ROOT/verify/fuzz/corpus/tdx_quote/seed-tdx" ]; then
    cp "$shared/tdx/tdx_quote" "$ROOT/verify/fuzz/corpus/tdx_quote/seed-tdx"
fi
run_targets "$ROOT/verify/fuzz" gpu_evidence launch_measure snp_report tdx_quote

# The host tools. Real key files seed the key-file corpus (random bytes almost never
# carry a valid header), made with the pqcc binary the test run built.
seeds="$ROOT/host-tools/fuzz/corpus/key_file"
mkdir -p "$seeds"
pqcc_bin="${CARGO_TARGET_DIR:-$ROOT/target}/debug/pqcc"
if [ -x "$pqcc_bin" ] && [ ! -e "$seeds/seed-ml-dsa-65" ]; then
    for alg in ml-dsa-65 ml-kem-768; do
        "$pqcc_bin" keygen --alg "$alg" --out "$seeds/seed-$alg" --force >/dev/null 2>&1
        mv "$seeds/seed-$alg.pub" "$seeds/seed-$alg-pub"
    done
fi
# A small real program seeds the ELF reader (random bytes never reach its dynamic
# section), and the dynamic loader its search-directory reader.
elf_seeds="$ROOT/host-tools/fuzz/corpus/elf_dynamic"
mkdir -p "$elf_seeds"
[ -e "$elf_seeds/seed-true" ] || cp "$(type -P true)" "$elf_seeds/seed-true"
loader=/lib64/ld-linux-x86-64.so.2
[ -e "$elf_seeds/seed-ld.so" ] || { [ -e "$loader" ] && cp "$loader" "$elf_seeds/seed-ld.so"; } || true
run_targets "$ROOT/host-tools/fuzz" key_file audit_log policy_files elf_dynamic
