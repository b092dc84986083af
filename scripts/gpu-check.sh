#!/usr/bin/env bash
# The GPU checks of pqcc-gpu (docs/gpu.md, "Running") for a machine with an NVIDIA GPU
# and its driver but no Rust toolchain: build on a development machine, copy the
# repository with target/gpu-check/ to the GPU machine, run there.
#
#   scripts/gpu-check.sh build          # release binaries and test data -> target/gpu-check/
#   scripts/gpu-check.sh run [OUTDIR [BENCH-ARG...]]   # on the GPU machine, from the
#                                                     # repository root
#   scripts/gpu-check.sh sweep [OUTDIR [RUNS]]          # there too: small tensors only
#
# `run` executes the GPU tests (every opener case under every schedule, Wycheproof through
# the kernel) and `pqcc bench gpu --json [BENCH-ARG...]` (e.g. `--sizes 1M,4M,16M --runs
# 9`) and `pqcc bench sealed --gpu` (a sealed model of GPU_CHECK_SEALED_SIZE, default 1G,
# loaded into VRAM against the plain safetensors), printing as it goes and writing
# gpu-tests.log, bench.jsonl, bench.log, bench-sealed.jsonl and bench-sealed.log to OUTDIR (default target/gpu-check/out). It needs libnvrtc:
# from LD_LIBRARY_PATH, the system's library cache, a CUDA installation, or an
# nvidia-cuda-nvrtc wheel in a Python environment. The tests are stopped after
# GPU_CHECK_TEST_SECONDS (default 300: a driver that ran the resident kernel's stream
# apart from the copy streams would make every resident tensor wait 10 s), and the
# benchmark runs whatever the tests did. Exit status: that of the first failing step.
#
# `sweep` runs only the benchmark, for 1, 4 and 16 MiB tensors cut into 1, 2, 4 and 8
# frames (every split the resident kernel takes), on 2 and 4 streams, RUNS runs each
# (default 9), appending every row to OUTDIR/sweep.jsonl: which split and stream count
# suit small tensors best, per schedule.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/gpu-check

build() {
    rm -rf "$dir"
    mkdir -p "$dir/data/wycheproof"
    cargo build --release -p pqcc-tools --bin pqcc
    local exe
    exe=$(cargo test --release -p pqcc-gpu --test gpu --no-run --message-format=json |
        jq -r 'select(.reason == "compiler-artifact" and .target.name == "gpu"
                      and .profile.test == true) | .executable')
    [ -x "$exe" ] || { echo "gpu-check: the GPU test binary was not built" >&2; exit 1; }
    cp target/release/pqcc "$dir/pqcc"
    cp "$exe" "$dir/gpu-tests"
    strip "$dir/pqcc" "$dir/gpu-tests"
    cp ../shared/data/wycheproof/aes_gcm_test.json "$dir/data/wycheproof/"
    du -sh "$dir"
}

# A directory holding libnvrtc.so*, or nothing.
find_nvrtc() {
    local d
    for d in ${LD_LIBRARY_PATH:+${LD_LIBRARY_PATH//:/ }}; do
        compgen -G "$d/libnvrtc.so*" > /dev/null && { echo "$d"; return; }
    done
    d=$(ldconfig -p 2>/dev/null | awk '/libnvrtc\.so/ {print $NF; exit}')
    [ -n "$d" ] && { dirname "$d"; return; }
    for d in /usr/local/cuda/lib64 /usr/local/cuda-*/lib64 /usr/local/cuda*/targets/*/lib \
        target/nvrtc/nvidia/cu13/lib; do
        compgen -G "$d/libnvrtc.so*" > /dev/null && { echo "$d"; return; }
    done
    d=$(python3 -c 'import glob, site, sys
for p in site.getsitepackages() + sys.path:
    for g in glob.glob(p + "/nvidia/cu*/lib/libnvrtc.so*") + glob.glob(p + "/nvidia/cuda_nvrtc/lib/libnvrtc.so*"):
        print(g.rsplit("/", 1)[0]); sys.exit()' 2>/dev/null || true)
    [ -n "$d" ] && echo "$d"
}

# Checks the build is there, finds libnvrtc, prints the GPU; OUTDIR is made.
prepare() {
    local out=$1
    [ -x "$dir/gpu-tests" ] && [ -x "$dir/pqcc" ] ||
        { echo "gpu-check: $dir is missing: run 'scripts/gpu-check.sh build' first" >&2; exit 2; }
    mkdir -p "$out"
    local nvrtc
    nvrtc=$(find_nvrtc)
    [ -n "$nvrtc" ] || { echo "gpu-check: no libnvrtc found" >&2; exit 2; }
    export LD_LIBRARY_PATH="$nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export PQCC_SHARED_DATA="$PWD/$dir/data"
    echo "gpu-check: libnvrtc from $nvrtc"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
}

run() {
    local out=${1:-$dir/out} rc=0
    shift || true
    prepare "$out"
    timeout "${GPU_CHECK_TEST_SECONDS:-300}" "$dir/gpu-tests" --test-threads=1 --nocapture 2>&1 |
        tee "$out/gpu-tests.log" || rc=$?
    [ "$rc" = 124 ] && echo "gpu-check: the GPU tests ran out of time" >&2
    local b=0
    "$dir/pqcc" bench gpu --json "$@" 2> >(tee "$out/bench.log" >&2) | tee "$out/bench.jsonl" ||
        b=$?
    [ "$rc" != 0 ] || rc=$b
    # A sealed model of GPU_CHECK_SEALED_SIZE (default 1G) loaded into VRAM against the
    # same safetensors copied plain, with the CPU seal/open figures beside the raw AEAD.
    b=0
    "$dir/pqcc" bench sealed --gpu --json --size "${GPU_CHECK_SEALED_SIZE:-1G}" --runs 5 \
        2> >(tee "$out/bench-sealed.log" >&2) | tee "$out/bench-sealed.jsonl" || b=$?
    [ "$rc" != 0 ] || rc=$b
    return "$rc"
}

sweep() {
    local out=${1:-$dir/out} runs=${2:-9} size frames streams
    prepare "$out"
    for size in 1 4 16; do
        for frames in 1 2 4 8; do
            for streams in 2 4; do
                "$dir/pqcc" bench gpu --json --sizes "${size}M" --runs "$runs" \
                    --chunk "$((size * 1024 / frames))K" --streams "$streams" \
                    2>> "$out/sweep.log" | tee -a "$out/sweep.jsonl"
            done
        done
    done
}

case "${1:-}" in
    build) build ;;
    run)
        shift
        run "$@"
        ;;
    sweep)
        shift
        sweep "$@"
        ;;
    *)
        echo "usage: scripts/gpu-check.sh build | run [OUTDIR [BENCH-ARG...]] | sweep [OUTDIR [RUNS]]" >&2
        exit 2
        ;;
esac
