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
# The kernel is Debian 12's bookworm-backports linux-image-amd64 (6.12): its EFI stub
# measures the command line and the initrd (with the guest's measured init.toml) into
# RTMR2 on a TD, which Linux 6.9 added; Debian 12's own 6.1 does not, and `pqcc image
# measure --profile tdx` refuses such a kernel. The backports package list is kept in
# CACHE/apt (the machine's apt sources are not changed). GUEST_KERNEL_PKG names another
# package (from the machine's apt sources), e.g. linux-image-6.1.0-41-amd64.
# Needs: apt-get, dpkg, kmod (depmod, modprobe), zstd and xz-utils.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
CACHE=${1:-target/guest-kernel}
MODULES=(virtio_pci virtio_blk virtio_console dm_verity fuse)

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

APT_OPTS=()
if [ -z "${GUEST_KERNEL_PKG:-}" ]; then
    A=$CACHE/apt
    mkdir -p "$A/lists/partial" "$A/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main" \
        >"$A/sources.list"
    APT_OPTS=(-o "Dir::Etc::SourceList=$A/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o APT::Sandbox::User=root)
    # Once: the package list stays, so the kernel stays the same until CACHE/apt goes.
    if [ ! -f "$A/updated" ]; then
        apt-get "${APT_OPTS[@]}" -qq update >/dev/null && touch "$A/updated"
    fi
fi

# Which kernel linux-image-amd64 points at (override with GUEST_KERNEL_PKG).
pkg=${GUEST_KERNEL_PKG:-$(apt-cache "${APT_OPTS[@]}" depends linux-image-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')}
if [ -z "$pkg" ]; then
    echo "guest-kernel: cannot resolve linux-image-amd64 from bookworm-backports (no network?)" >&2
    exit 1
fi
dir="$CACHE/$pkg"

if [ ! -f "$dir/.done" ]; then
    rm -rf "$dir"
    mkdir -p "$dir/deb"
    (cd "$dir/deb" && apt-get "${APT_OPTS[@]}" download -q "$pkg" >/dev/null)
    dpkg -x "$dir"/deb/*.deb "$dir/root"
    release=$(ls "$dir/root/lib/modules")
    echo "$release" >"$dir/release"
    depmod -b "$dir/root" "$release"
    cp "$dir/root/boot/vmlinuz-$release" "$dir/vmlinuz"

    # The bzImage holds a zstd (6.12) or XZ (6.1) stream with the ELF vmlinux: try each
    # magic of each.
    for magic in '\x28\xb5\x2f\xfd' '\xfd7zXZ\x00'; do
        for off in $(grep -obUaP "$magic" "$dir/vmlinuz" | cut -d: -f1); do
            if [ "$magic" = '\x28\xb5\x2f\xfd' ]; then
                tail -c +"$((off + 1))" "$dir/vmlinuz" | zstd -dcq 2>/dev/null >"$dir/vmlinux.tmp" || true
            else
                tail -c +"$((off + 1))" "$dir/vmlinuz" | xz -dcq 2>/dev/null >"$dir/vmlinux.tmp" || true
            fi
            if [ "$(head -c 4 "$dir/vmlinux.tmp" | od -An -c | tr -d ' ')" = '177ELF' ]; then
                mv "$dir/vmlinux.tmp" "$dir/vmlinux"
                break 2
            fi
        done
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
