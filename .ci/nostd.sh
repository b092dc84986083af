#!/usr/bin/env bash
# no_std proofs for pqcc-core. Run from the repository root.
#
# 1. core-nostd/proof-nostd: a freestanding x86_64 Linux executable (no std, no alloc,
#    no global allocator, no libc, own _start, raw exit_group) that runs
#    pqcc_core::selftest::run_all. If std or alloc enters pqcc-core's dependency tree
#    it no longer builds.
# 2. core-nostd/cortex-m: pqcc-core's self-tests under defmt-test on a Cortex-M4
#    (thumbv7em-none-eabihf) in QEMU mps2-an386, log decoded by defmt-print.
#    Skipped (exit 0) when `rustup target add thumbv7em-none-eabihf` is refused.
#
# Installs what it needs only when missing: qemu-system-arm (apt-get), the rustup
# target, defmt-print (cargo install). Each project builds in its own target dir
# inside its folder (gitignored), with its own committed Cargo.lock (--locked).
set -euo pipefail

root="$(pwd)"
if [ ! -f "$root/core-nostd/proof-nostd/Cargo.toml" ]; then
  echo "nostd.sh: run me from the repository root" >&2
  exit 2
fi
# cargo install puts defmt-print here.
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
# These builds need the rustflags in each project's .cargo/config.toml; a RUSTFLAGS
# from the environment would replace them.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "nostd.sh: need root to run: $*" >&2
    return 1
  fi
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---- 1. freestanding x86_64 proof --------------------------------------------------
proof1_dir="$root/core-nostd/proof-nostd"
# _start paints 1 MiB of the main-thread stack and the self-tests use ~0.7 MiB, so the
# stack limit must be comfortably above that (the default is 8 MiB).
stack_kib="$(ulimit -s)"
if [ "$stack_kib" != "unlimited" ] && [ "$stack_kib" -lt 8192 ]; then
  ulimit -s 8192
fi

t0="$(now)"
echo "== no_std proof: building core-nostd/proof-nostd (release)"
# cargo reads .cargo/config.toml from the current directory upwards, not from the
# manifest's folder, so build from inside the project.
(cd "$proof1_dir" && CARGO_TARGET_DIR="$proof1_dir/target" cargo build --release --locked)
bin="$proof1_dir/target/x86_64-unknown-linux-gnu/release/pqcc-proof-nostd"
if command -v readelf >/dev/null; then
  # A freestanding static executable: no dynamic loader, no dynamic section.
  if readelf -lW "$bin" | grep -Eq '^\s*(INTERP|DYNAMIC)\s'; then
    echo "no_std proof: FAILED ($bin is not a static freestanding executable)" >&2
    exit 1
  fi
fi
set +e
out="$("$bin")"
rc=$?
set -e
echo "$out"
if [ "$rc" -ne 0 ]; then
  echo "no_std proof: FAILED (exit status $rc)" >&2
  exit 1
fi
peak="$(sed -n 's/.*peak stack \([0-9]*\) bytes.*/\1/p' <<<"$out")"
echo "no_std proof: ok (handshake, seal/open, sign/verify, signed statement; peak stack ${peak:-?} bytes; $(elapsed "$t0") s incl. build)"

# ---- 2. Cortex-M4 under QEMU ------------------------------------------------------
proof2_dir="$root/core-nostd/cortex-m"
target=thumbv7em-none-eabihf

if ! rustup target list --installed | grep -qx "$target"; then
  if ! why="$(rustup target add "$target" 2>&1)"; then
    echo "$why"
    echo "cortex-m proof: SKIPPED (rustup target add $target was refused, see above)"
    exit 0
  fi
fi

if ! command -v qemu-system-arm >/dev/null; then
  echo "== installing qemu-system-arm"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-system-arm
fi

# defmt-print must decode defmt wire format version 4 (defmt 1.x).
if ! command -v defmt-print >/dev/null || ! defmt-print --version 2>/dev/null | grep -Eq 'supported defmt versions:.*\b4\b'; then
  echo "== installing defmt-print"
  cargo install defmt-print --version 1.2.0 --locked
fi

t0="$(now)"
echo "== cortex-m proof: building core-nostd/cortex-m tests (release, $target)"
elfs="$(cd "$proof2_dir" && CARGO_TARGET_DIR="$proof2_dir/target" \
  cargo test --release --locked --no-run --message-format=json-render-diagnostics |
  grep -o '"executable":"[^"]*"' | sed 's/^"executable":"\(.*\)"$/\1/')"
if [ -z "$elfs" ]; then
  echo "cortex-m proof: FAILED (no test executable was built)" >&2
  exit 1
fi

status=0
passed=0
failed=0
for elf in $elfs; do
  echo "== cortex-m proof: $(basename "$elf") on qemu-system-arm -machine mps2-an386"
  log="$(mktemp)"
  set +e
  QEMU_TIMEOUT=600 "$proof2_dir/run-qemu.sh" "$elf" | tee "$log"
  rc="${PIPESTATUS[0]}"
  set -e
  line="$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 || true)"
  rm -f "$log"
  p="$(sed -n 's/^\([0-9]*\) passed.*/\1/p' <<<"$line")"
  f="$(sed -n 's/^[0-9]* passed, \([0-9]*\) failed.*/\1/p' <<<"$line")"
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-1}))
  if [ "$rc" -ne 0 ]; then status=1; fi
done

if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ]; then
  echo "cortex-m proof: FAILED: $passed passed, $failed failed" >&2
  exit 1
fi
echo "cortex-m proof: $passed passed, $failed failed ($(elapsed "$t0") s incl. build)"
