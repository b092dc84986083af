#!/usr/bin/env bash
# The whole test suite: formatting, lints, docs, unit and integration tests (with the
# official ACVP and Wycheproof vectors from ../shared/data), the no_std/no-alloc link
# proof, and pqcc-core's self-tests on a Cortex-M4 under QEMU.
# Installs what it needs (rustup components and targets, Debian packages) idempotently.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }
need_apt() {
    # need_apt COMMAND PACKAGE: install PACKAGE when COMMAND is missing.
    if ! command -v "$1" >/dev/null 2>&1; then
        step "installing $2"
        if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null
    fi
}

# The model-archive tests compare with GNU tar and cryptsetup's veritysetup.
need_apt veritysetup cryptsetup-bin
# The guest boot tests: QEMU, cpio (image checks), depmod and xz (guest kernel modules).
need_apt qemu-system-x86_64 qemu-system-x86
need_apt cpio cpio
need_apt depmod kmod
need_apt xz xz-utils
need_apt zstd zstd
# FakeCuda (gpu/fake-cuda) compiles the CUDA kernel source as C++ to emulate it.
need_apt g++ g++

if [ ! -d ../shared/data ]; then
    echo "error: ../shared/data (the outside test vectors) is missing beside the repository" >&2
    exit 1
fi

step "toolchain"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo --version

PACKAGES=(pqcc-core pqcc-init pqcc-tools pqcc-verify pqcc-sealed pqcc-gpu pqcc-fake-cuda pqcc-tests pqcc-workload)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings (per package)"
for p in "${PACKAGES[@]}"; do
    cargo clippy -q -p "$p" --all-targets -- -D warnings
done

step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc -q --no-deps -p pqcc-core -p pqcc-tools -p pqcc-sealed -p pqcc-gpu -p pqcc-fake-cuda -p pqcc-workload

# NVRTC needs no GPU: the nvidia-cuda-nvrtc wheel (CUDA 13, matching pqcc-gpu's cudarc
# feature) carries libnvrtc, so the GPU kernel is compiled to PTX here too
# (pqcc-gpu/tests/nvrtc.rs). Fetched once into target/nvrtc; only the two libraries are
# unpacked. Without pip or network the test prints why it skipped.
step "libnvrtc for the kernel compile test"
NVRTC_DIR=target/nvrtc/nvidia/cu13/lib
mkdir -p target/nvrtc
if [ ! -e "$NVRTC_DIR/libnvrtc.so.13" ]; then
    if python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_12_x86_64 \
        --platform manylinux2010_x86_64 --platform manylinux_2_17_x86_64 \
        --python-version 3.12 -d target/nvrtc "nvidia-cuda-nvrtc==13.0.*" >/dev/null 2>&1; then
        python3 - <<'PY'
import glob, zipfile
whl = glob.glob("target/nvrtc/nvidia_cuda_nvrtc-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for n in ("libnvrtc.so.13", "libnvrtc-builtins.so.13.0"):
        z.extract("nvidia/cu13/lib/" + n, "target/nvrtc")
PY
        rm -f target/nvrtc/nvidia_cuda_nvrtc-*.whl
    else
        echo "note: could not fetch nvidia-cuda-nvrtc; the NVRTC test will skip" >&2
    fi
fi
if [ -e "$NVRTC_DIR/libnvrtc.so.13" ]; then
    export LD_LIBRARY_PATH="$PWD/$NVRTC_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# The TDX measurement tests (verify/tests/tdx_measure.rs) compare the Authenticode hash
# of a real kernel with LIEF (PyPI `lief`), installed once into target/pyref, and use the
# Debian kernel the boot tests use (fetched here first so both find it). Debian's
# OVMF.fd they fetch themselves. Without network each check prints why it skipped.
step "lief and the guest kernel for the TDX measurement tests"
if [ ! -d target/pyref/lief ]; then
    python3 -m pip install -q --target target/pyref lief >/dev/null 2>&1 \
        || echo "note: could not install lief; the Authenticode cross-check will skip" >&2
fi
scripts/guest-kernel.sh >/dev/null \
    || echo "note: no guest kernel; the real-kernel checks will skip" >&2

step "cargo test (workspace)"
mkdir -p target
if ! cargo test --workspace -- --nocapture >target/test.log 2>&1; then
    tail -n 120 target/test.log >&2
    echo "cargo test failed; the whole log is target/test.log" >&2
    exit 1
fi
# What ran: per-binary results, vector counts, simulation figures.
grep -E "^test result|^\[|simulation|robustness|^  " target/test.log | grep -v "^   Compiling" || true

step "no_std / no-alloc proof and Cortex-M4 self-tests"
bash .ci/nostd.sh

step "fuzz smoke run (every parser, ${FUZZ_SECONDS:-15}s each)"
.ci/fuzz.sh

step "all tests passed"
