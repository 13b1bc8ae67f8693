#!/bin/sh
# Builds the Debian bookworm image of berth's real-guest tests, or reuses
# the one already built from the same inputs.
#
# usage: build.sh [CACHE_ROOT]    (default /var/cache/berth-test/guest)
#
# The image is a debootstrap minbase tree with the packages listed in
# packages.txt (systemd, cloud-init, curl, ...) and the files under
# overlay/. It is cached in CACHE_ROOT/KEY, where KEY is a hash of this
# script, packages.txt and overlay/, so a change to any of them builds a
# new image and a rerun reuses the old one. Builds of the other keys are
# removed when a new one is built. A lock on CACHE_ROOT/.lock lets only
# one build run at a time.
#
# The outputs, printed as NAME=PATH lines on standard output:
#   rootfs-tarball  the tree as an uncompressed tarball, for the LXC
#                   manager's image key
#   disk            a raw ext4 disk image of a copy of the tree in which
#                   Debian's cloud kernel (linux-image-cloud-amd64) and udev
#                   are installed; its root is the whole disk, /dev/vda
#   disk-sha256     the SHA-256 of that disk image (a value, not a path)
#   kernel, initrd  that kernel and its initramfs, for direct kernel boot
#
# Needs root, debootstrap, e2fsprogs (mkfs.ext4 -d), tar and flock, and
# the Debian mirror BERTH_GUEST_MIRROR (default http://deb.debian.org/debian).
# The first build takes one to three minutes, mostly downloads.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${1:-/var/cache/berth-test/guest}
mirror=${BERTH_GUEST_MIRROR:-http://deb.debian.org/debian}
suite=bookworm

log() { printf 'guest-image: %s\n' "$*" >&2; }
fail() {
    log "error: $*"
    exit 1
}

[ "$(id -u)" = 0 ] || fail "must run as root: debootstrap and chroot need it"
for tool in debootstrap:debootstrap mkfs.ext4:e2fsprogs tar:tar flock:util-linux chroot:coreutils; do
    command -v "${tool%%:*}" >/dev/null 2>&1 ||
        fail "${tool%%:*} not found; install the ${tool#*:} package"
done
case $cache_root in
/*) ;;
*) fail "cache root $cache_root must be an absolute path" ;;
esac

# The key covers every input that changes the image, file modes included.
key=$(
    cd "$here"
    {
        cat build.sh packages.txt
        find overlay -type f -o -type l | LC_ALL=C sort | while IFS= read -r file; do
            stat -c '%a %n' "$file"
            if [ -L "$file" ]; then readlink "$file"; else sha256sum "$file"; fi
        done
    } | sha256sum | cut -c 1-16
)
out=$cache_root/$key

print_outputs() {
    printf 'key=%s\n' "$key"
    printf 'rootfs-tarball=%s\n' "$out/rootfs.tar"
    printf 'disk=%s\n' "$out/disk.raw"
    printf 'disk-sha256=%s\n' "$(cut -d ' ' -f 1 "$out/disk.raw.sha256")"
    printf 'kernel=%s\n' "$out/vmlinuz"
    printf 'initrd=%s\n' "$out/initrd.img"
}

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9

if [ -f "$out/done" ]; then
    log "reusing $out"
    print_outputs
    exit 0
fi

work=$cache_root/.build-$key
mounted=""
cleanup() {
    status=$?
    for mount_point in $mounted; do
        umount "$mount_point" 2>/dev/null || umount -l "$mount_point" || true
    done
    # --one-file-system: never descend into a mount that survived.
    rm -rf --one-file-system "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf --one-file-system "$work"
mkdir -p "$work"
started=$(date +%s)

packages=$(grep -v '^[[:space:]]*#' "$here/packages.txt" | grep -v '^[[:space:]]*$' | paste -sd , -)
log "debootstrap $suite from $mirror with $packages"
debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" >&2 ||
    fail "debootstrap failed; see $work/rootfs/debootstrap/debootstrap.log"

# Files of the image, then its units: the report service starts with
# multi-user.target, apt's timers never (the guests have no mirror).
cp -a "$here/overlay/." "$work/rootfs/"
chroot "$work/rootfs" systemctl enable berth-guest-report.service >&2
chroot "$work/rootfs" systemctl mask apt-daily.timer apt-daily-upgrade.timer >&2

# The VM tree is a copy with a kernel. Its root is the whole virtio disk.
log "installing the cloud kernel in the VM tree"
cp -a "$work/rootfs" "$work/vmroot"
printf '/dev/vda / ext4 defaults 0 0\n' >"$work/vmroot/etc/fstab"
mkdir -p "$work/vmroot/etc/initramfs-tools/conf.d"
printf 'RESUME=none\n' >"$work/vmroot/etc/initramfs-tools/conf.d/resume"
# No service starts inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$work/vmroot/usr/sbin/policy-rc.d"
chmod 755 "$work/vmroot/usr/sbin/policy-rc.d"
mount -t proc proc "$work/vmroot/proc"
mounted="$work/vmroot/proc"
chroot "$work/vmroot" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends linux-image-cloud-amd64 udev >&2 ||
    fail "installing linux-image-cloud-amd64 in the VM tree failed"
umount "$work/vmroot/proc"
mounted=""
rm -f "$work/vmroot/usr/sbin/policy-rc.d"

# Clear what debootstrap copied from the build host or made once for
# every machine: cloud-init writes hostname and hosts, systemd makes a
# machine id on first boot, and SSH host keys are made per instance.
for tree in "$work/rootfs" "$work/vmroot"; do
    printf 'localhost\n' >"$tree/etc/hostname"
    printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$tree/etc/hosts"
    : >"$tree/etc/resolv.conf"
    : >"$tree/etc/machine-id"
    rm -f "$tree/var/lib/dbus/machine-id" "$tree"/etc/ssh/ssh_host_*
    rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
done

mkdir -p "$work/out"
vmlinuz=$(find "$work/vmroot/boot" -name 'vmlinuz-*' | head -n 1)
initrd=$(find "$work/vmroot/boot" -name 'initrd.img-*' | head -n 1)
[ -n "$vmlinuz" ] && [ -n "$initrd" ] || fail "the kernel package left no vmlinuz or initrd.img in /boot"
cp "$vmlinuz" "$work/out/vmlinuz"
cp "$initrd" "$work/out/initrd.img"

log "writing the rootfs tarball"
tar --numeric-owner --xattrs -C "$work/rootfs" -cf "$work/out/rootfs.tar" .

# The disk gets half again the tree's size, at least 1 GiB. cloud-init's
# resizefs grows the file system to the VM's root disk at first boot.
used_mib=$(du -sm "$work/vmroot" | cut -f 1)
size_mib=$((used_mib * 3 / 2))
[ "$size_mib" -ge 1024 ] || size_mib=1024
log "writing the ${size_mib} MiB ext4 disk image of a ${used_mib} MiB tree"
mkfs.ext4 -q -L berth-root -d "$work/vmroot" "$work/out/disk.raw" "${size_mib}M" >&2
(cd "$work/out" && sha256sum disk.raw >disk.raw.sha256)

# Publish: older keys go, the new build takes its final name.
for old in "$cache_root"/*; do
    [ -d "$old" ] && [ "$old" != "$out" ] || continue
    log "removing the build of an older key, $old"
    rm -rf --one-file-system "$old"
done
rm -rf --one-file-system "$out"
printf '%s\n' "$key" >"$work/out/done"
mv "$work/out" "$out"
log "built $out in $(($(date +%s) - started)) s"
print_outputs
