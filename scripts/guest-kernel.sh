#!/usr/bin/env bash
# Fetch a Debian kernel for test guests into a cache folder, never into /boot.
#
#   scripts/guest-kernel.sh [CACHE_DIR]      (default: target/guest-kernel)
#
# Idempotent. Leaves in CACHE_DIR/current/:
#   vmlinuz       the Debian bzImage
#   vmlinux       the ELF kernel extracted from it (PVH entry: boots ~5 s faster under TCG)
#   release       the kernel release string, e.g. 6.1.0-41-amd64
#   root/         the unpacked package (lib/modules/<release>/..., depmod run)
#   modules.list  absolute paths of the .ko files for virtio disks, the virtio console
#                 (the broker link), dm-verity and
#                 fuse, in load order (from modprobe --show-depends; rewritten each run)
# Needs: apt-get, dpkg, kmod (depmod, modprobe), xz-utils.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
CACHE=${1:-target/guest-kernel}
MODULES=(virtio_pci virtio_blk virtio_console dm_verity fuse)

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

# Which kernel linux-image-amd64 points at (override with GUEST_KERNEL_PKG).
pkg=${GUEST_KERNEL_PKG:-$(apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')}
if [ -z "$pkg" ]; then
    echo "guest-kernel: cannot resolve linux-image-amd64 (run apt-get update?)" >&2
    exit 1
fi
dir="$CACHE/$pkg"

if [ ! -f "$dir/.done" ]; then
    rm -rf "$dir"
    mkdir -p "$dir/deb"
    (cd "$dir/deb" && apt-get download -q "$pkg" >/dev/null)
    dpkg -x "$dir"/deb/*.deb "$dir/root"
    release=$(ls "$dir/root/lib/modules")
    echo "$release" >"$dir/release"
    depmod -b "$dir/root" "$release"
    cp "$dir/root/boot/vmlinuz-$release" "$dir/vmlinuz"

    # The bzImage holds an XZ stream with the ELF vmlinux: try each XZ magic.
    for off in $(grep -obUaP '\xfd7zXZ\x00' "$dir/vmlinuz" | cut -d: -f1); do
        tail -c +"$((off + 1))" "$dir/vmlinuz" | xz -dcq 2>/dev/null >"$dir/vmlinux.tmp" || true
        if [ "$(head -c 4 "$dir/vmlinux.tmp" | od -An -c | tr -d ' ')" = '177ELF' ]; then
            mv "$dir/vmlinux.tmp" "$dir/vmlinux"
            break
        fi
    done
    rm -f "$dir/vmlinux.tmp"
    [ -f "$dir/vmlinux" ] || { echo "guest-kernel: no ELF vmlinux in $dir/vmlinuz" >&2; exit 1; }
    rm -rf "$dir/deb"
    touch "$dir/.done"
fi

release=$(cat "$dir/release")
for m in "${MODULES[@]}"; do
    modprobe -d "$dir/root" -S "$release" --show-depends "$m" \
        | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' >"$dir/modules.list.tmp"
mv "$dir/modules.list.tmp" "$dir/modules.list"
ln -sfn "$pkg" "$CACHE/current"
echo "$CACHE/current"
