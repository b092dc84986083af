#!/usr/bin/env bash
# pqcc end-to-end demo: build everything, create keys, build a model archive from the
# bundled model, build the guest's initramfs, start the key broker, boot the guest under
# QEMU, and show each stage with its time:
#   evidence → policy → verity → channel → secret received → workload output → power-off
# The workload (pqcc-workload, workload/) is a small Llama-architecture transformer
# trained here on demo/corpus.txt, written as a Hugging Face directory, sealed with the
# model owner's key (pqcc model seal) and served in the guest with candle once the
# broker released that key.
#
#   scripts/demo.sh                      # the happy path; exit 0
#   scripts/demo.sh --tamper model       # one byte of the model disk changed → refused
#   scripts/demo.sh --tamper broker-key  # the broker signs with a key the guest does not trust
#   scripts/demo.sh --tamper policy      # the broker's policy names another model
#   scripts/demo.sh --tamper broker-down # no broker: the guest gives up after its wait
#   scripts/demo.sh --tamper key         # the broker releases a wrong model key: the
#                                        # workload cannot open the weights
# With --tamper the demo shows the refusal and exits 1. Work files: target/demo/.
# Installs what it needs (Debian packages, the guest kernel) idempotently.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

TAMPER=
while [ $# -gt 0 ]; do
    case "$1" in
        --tamper) TAMPER=${2:-}; shift 2 || true ;;
        --tamper=*) TAMPER=${1#--tamper=}; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$TAMPER" in
    ""|model|broker-key|policy|broker-down|key) ;;
    *) echo "demo: --tamper model|broker-key|policy|broker-down|key" >&2; exit 2 ;;
esac

T0=$(date +%s.%N)
stage() { printf '[%6.1fs] %-9s %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN { print a - b }')" "$1" "$2"; }
need_apt() {
    if ! command -v "$1" >/dev/null 2>&1; then
        stage setup "installing $2"
        if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null
    fi
}

stage setup "packages (qemu, kmod, xz, cpio), Rust toolchain"
need_apt qemu-system-x86_64 qemu-system-x86
need_apt depmod kmod
need_apt xz xz-utils
need_apt zstd zstd
need_apt cpio cpio
command -v cargo >/dev/null || { echo "demo: install Rust first (https://rustup.rs)" >&2; exit 2; }

W=$REPO/target/demo
rm -rf "$W"
mkdir -p "$W"
LOG=$W/build.log

stage build "pqcc (host tools), pqcc-init and pqcc-workload (static)"
cargo build -q -p pqcc-tools --bin pqcc >>"$LOG" 2>&1 || { tail -30 "$LOG"; exit 2; }
PQCC=$REPO/target/debug/pqcc
# Two builds, so that pqcc-init's dependencies keep their own features.
for crate in pqcc-init pqcc-workload; do
    RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --profile guest -p "$crate" \
        --target x86_64-unknown-linux-gnu --bin "$crate" >>"$LOG" 2>&1 \
        || { tail -30 "$LOG"; exit 2; }
done
GUEST=$REPO/target/x86_64-unknown-linux-gnu/guest
INIT=$GUEST/pqcc-init
WORKLOAD=$GUEST/pqcc-workload
echo "           pqcc-workload $(( $(stat -c %s "$WORKLOAD") / 1024 )) KiB (static), pqcc-init $(( $(stat -c %s "$INIT") / 1024 )) KiB"

stage kernel "Debian guest kernel and modules (cached in target/guest-kernel)"
KDIR=$(bash scripts/guest-kernel.sh "$REPO/target/guest-kernel" | tail -1)

stage keys "broker signing key (ML-DSA-65) and the model owner's data key (AES-256)"
"$PQCC" keygen --alg ml-dsa-65 --out "$W/broker.key" >"$W/broker.id"
head -c 32 /dev/urandom >"$W/model-key"
chmod 600 "$W/model-key"
echo "           broker $(cat "$W/broker.id")"

stage model "train a tiny Llama on demo/corpus.txt (Hugging Face layout, 2 shards)"
# Training is deterministic: the same corpus and workload binary give the same model, so
# it is kept in target/demo-model-cache and reused (the tamper runs of the tests).
TRAIN_KEY=$(cat demo/corpus.txt "$WORKLOAD" | sha256sum | cut -c1-16)
TRAINED=$REPO/target/demo-model-cache/$TRAIN_KEY
if [ -f "$TRAINED/complete" ]; then
    cp -r "$TRAINED/model" "$W/model"
    sed 's/^/           /; s/$/ (kept from an earlier run of this binary on this corpus)/' \
        "$TRAINED/train.log"
else
    "$WORKLOAD" train demo/corpus.txt "$W/model" --shards 2 >"$W/train.log"
    sed 's/^/           /' "$W/train.log"
    rm -rf "$REPO/target/demo-model-cache"
    mkdir -p "$TRAINED"
    cp -r "$W/model" "$W/train.log" "$TRAINED/"
    touch "$TRAINED/complete"
fi
stage seal "seal every tensor and file with the model key, build the archive of the sealed model"
"$PQCC" model seal "$W/model" --key "$W/model-key" --out "$W/sealed" \
    --name alice-llama --revision v1 2>>"$LOG" | sed 's/^/           sealed /'
"$PQCC" model build --name alice-llama --revision v1 --out "$W/archive" --json "$W/sealed" \
    >"$W/model.json" 2>>"$LOG"
ROOT=$(sed -n 's/.*"root_hash": *"\([0-9a-f]*\)".*/\1/p' "$W/model.json")
ARCHIVE=$(sed -n 's/.*"archive": *"\([^"]*\)".*/\1/p' "$W/model.json")
BLOCKS=$(( $(stat -c %s "$ARCHIVE") / 4096 ))
MODEL="alice-llama@v1:$ROOT"
echo "           $MODEL"

stage image "initramfs: pqcc-init, measured init.toml, workload, modules"
SALT=$(sed -n 's/.*"salt": *"\([0-9a-f]*\)".*/\1/p' "${ARCHIVE}.stamp")
PK=$("$PQCC" id --json "$W/broker.key.pub" | sed -n 's/.*"public_key_hex": *"\([0-9a-f]*\)".*/\1/p')
# As pqcc image build installs them: NAME.ko (Debian's 6.12 ships .ko.xz; decompressed).
MODULES=$(sed 's|.*/||; s/\.\(xz\|zst\|gz\)$//; s|^|"/lib/modules/|; s|$|"|' "$KDIR/modules.list" \
    | paste -sd, -)
cat >"$W/init.toml" <<TOML
[model]
name = "alice-llama"
revision = "v1"
root_hash = "$ROOT"
salt = "$SALT"
data_blocks = $BLOCKS
data_serial = "pqcc-model-data"
hash_serial = "pqcc-model-hash"

[platform]
required = "none"
insecure_no_tee = true

[broker]
public_key = "$PK"
transport = "virtio-serial:org.pqcc.broker.0"
wait_ms = $( [ "$TAMPER" = broker-down ] && echo 5000 || echo 30000 )

[workload]
command = "/bin/workload"

[modules]
load = [$MODULES]

[debug]
qemu_debug_exit = true
TOML
"$PQCC" image build --init "$INIT" --config "$W/init.toml" --workload "$WORKLOAD" \
    --kernel-release "$KDIR" -o "$W/initrd.img" | sed 's/^/           /'
echo "           initrd.img $(( $(stat -c %s "$W/initrd.img") / 1024 )) KiB"

POLICY_ROOT=$ROOT
BROKER_KEY=$W/broker.key
SECRET_FILE=model-key
case "$TAMPER" in
    policy) POLICY_ROOT=$(printf '%064d' 0) ;;
    broker-key) "$PQCC" keygen --alg ml-dsa-65 --out "$W/rogue.key" >/dev/null; BROKER_KEY=$W/rogue.key ;;
    model) printf '\x01' | dd of="$ARCHIVE" bs=1 seek=$((BLOCKS * 4096 / 2)) conv=notrunc status=none ;;
    key) head -c 32 /dev/urandom >"$W/wrong-model-key"; chmod 600 "$W/wrong-model-key"
         SECRET_FILE=wrong-model-key ;;   # released under the same name, model-key
esac
[ -n "$TAMPER" ] && stage tamper "$TAMPER"

cat >"$W/broker.toml" <<TOML
handshake_timeout_s = 30

[secrets.model-key]
file = "$SECRET_FILE"

[[rule]]
name = "demo"
platform = "none"
insecure_no_tee = true   # the demo runs without a TEE; a production policy names snp or tdx
models = ["alice-llama@v1:$POLICY_ROOT"]
secrets = ["model-key"]
TOML
chmod 600 "$W/broker.toml"

stage broker "pqcc broker serve on unix:$W/broker.sock"
touch "$W/broker.log" "$W/audit.log"
BROKER_PID=
trap '[ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true' EXIT
if [ "$TAMPER" != broker-down ]; then
    # --allow-insecure: the `none` rule above (printed at start, named in the audit log).
    "$PQCC" broker serve --verbose --allow-insecure --key "$BROKER_KEY" \
        --policy "$W/broker.toml" --listen "unix:$W/broker.sock" --audit-log "$W/audit.log" >/dev/null 2>"$W/broker.log" &
    BROKER_PID=$!
    for _ in $(seq 100); do [ -S "$W/broker.sock" ] && break; sleep 0.1; done
fi

stage guest "booting under QEMU (TCG, no TEE: platform none)"
set +e
"$PQCC" launch --profile none --kernel "$KDIR/vmlinux" --initrd "$W/initrd.img" \
    --model "$MODEL" --model-dir "$W/archive" \
    --data-serial pqcc-model-data --hash-serial pqcc-model-hash \
    --broker "unix:$W/broker.sock" --console "$W/console.log" --timeout 300 >/dev/null 2>"$W/launch.err"
STATUS=$?
set -e
sleep 0.2
if [ -n "$BROKER_PID" ]; then
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
fi

# What happened, from the guest's console and the broker's log, in order.
show() { # show LABEL PATTERN [FILE]
    grep -a -m1 -E "$2" "${3:-$W/console.log}" | sed -E 's/^pqcc-init: \[ *([0-9.]+s)\] /\1  /; s/\r//' \
        | sed "s/^/           $(printf '%-9s' "$1") /" || true
}
echo
show verity "verity: "
show evidence "attest: (INSECURE|evidence)"
show policy "broker: .*(ACCEPT|REJECT)" "$W/broker.log"
show channel "attest: channel up"
show secret "attest: secrets received"
grep -a "pqcc-workload:" "$W/console.log" | sed 's/\r//; s/^/           workload  /' || true
show power-off "pqcc-init: .*(powering off|FATAL)"
echo
"$PQCC" audit verify "$W/audit.log" | sed 's/^/           audit     /' || true

if [ -n "$TAMPER" ]; then
    if grep -aq "pqcc-init: FATAL" "$W/console.log"; then
        stage refused "the guest refused to go on ($TAMPER): $(grep -a -m1 'pqcc-init: FATAL' "$W/console.log" | tr -d '\r')"
        exit 1
    fi
    # A wrong key gets past attestation (the broker released it): the workload is what
    # refuses it, and pqcc-init reports the failed workload and powers off.
    if [ "$TAMPER" = key ] && [ "$STATUS" -eq 1 ] \
        && grep -aq "pqcc-workload: FATAL" "$W/console.log" \
        && grep -aq "workload exited with status 1; powering off" "$W/console.log" \
        && ! grep -aq "pqcc-workload: text" "$W/console.log"; then
        stage refused "the workload refused the released key ($TAMPER): $(grep -a -m1 'pqcc-workload: FATAL' "$W/console.log" | tr -d '\r')"
        exit 1
    fi
    stage ERROR "tampering with $TAMPER was NOT detected"
    exit 3
fi
if [ "$STATUS" -ne 0 ] || ! grep -aq "pqcc-workload: text" "$W/console.log"; then
    stage FAILED "launch exit $STATUS; console: $W/console.log, broker: $W/broker.log"
    tail -5 "$W/console.log" >&2 || true
    exit 1
fi
stage done "workload ran on the released key; guest powered off (console: $W/console.log)"
