#!/usr/bin/env bash
# Maintainers' check that the README's test command passes on a new machine: build a clean Debian root
# filesystem with debootstrap (bookworm = Debian 12, trixie = Debian 13), put a clean clone of this
# repository's HEAD into it, and run scripts/test.sh there as root, as CI does. Slow (a few minutes for
# debootstrap, then the whole suite), so it is not part of CI. Needs root and Debian's archive.
#
#   scripts/fresh-machine-check.sh bookworm|trixie [pytest arguments]
#
# FRESH_ROOT (default /var/tmp/ikev2lib-fresh) holds the root filesystems; each run starts from an empty
# one. The summary goes to stdout and the whole log to $FRESH_ROOT/<release>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
release=${1:-}
case "$release" in
bookworm | trixie) ;;
*)
    echo "usage: $0 bookworm|trixie [pytest arguments]" >&2
    exit 2
    ;;
esac
shift
if [[ $(id -u) -ne 0 ]]; then
    echo "fresh-machine-check: needs root (debootstrap, chroot, network namespaces)" >&2
    exit 1
fi
MIRROR=${MIRROR:-http://deb.debian.org/debian}
FRESH_ROOT=${FRESH_ROOT:-/var/tmp/ikev2lib-fresh}
root="$FRESH_ROOT/$release"
log="$FRESH_ROOT/$release.log"
mkdir -p "$FRESH_ROOT"

command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null

# What a new machine of this kind has before the project's bootstrap runs: Python, gcc, git.
# Everything else (headers, clang, strongSwan, tshark, ...) must come from scripts/bootstrap.sh.
BASE_PACKAGES=python3,gcc,libc6-dev,git,ca-certificates

unmount_all() {
    # deepest first; lazy so a process still exiting cannot keep the tree busy
    local mnt
    for mnt in $(awk -v root="$root" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$mnt" || true
    done
}
trap unmount_all EXIT
unmount_all
rm -rf "$root"
echo "== fresh-machine-check $release: debootstrap into $root"
started=$(date +%s)
debootstrap --variant=minbase --include="$BASE_PACKAGES" "$release" "$root" "$MIRROR" >"$log" 2>&1 || {
    tail -n 30 "$log" >&2
    exit 1
}
# The chroot reaches the network as the host does: its resolver, and the extra certificate
# authorities the host trusts (a TLS-inspecting egress proxy in front of PyPI, for instance).
cp /etc/resolv.conf "$root/etc/resolv.conf"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1
fi

echo "== clean clone of HEAD ($(git rev-parse --short HEAD))"
git clone -q --no-hardlinks "$PWD" "$root/root/ikev2lib"

# The root must be a mount point of its own: `ip netns exec` remounts / as a slave in its namespace.
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"

echo "== scripts/test.sh inside the $release root filesystem (log: $log)"
status=0
chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 bash -c 'cd /root/ikev2lib && scripts/test.sh "$@"' test.sh "$@" >>"$log" 2>&1 || status=$?
elapsed=$(($(date +%s) - started))

echo "-- $release: $(cat "$root/etc/debian_version" 2>/dev/null), $(chroot "$root" python3 --version 2>&1)," \
    "$(chroot "$root" sh -c 'dpkg-query -W -f="strongSwan \${Version}" strongswan-charon' 2>/dev/null)," \
    "$(chroot "$root" sh -c 'openssl version 2>/dev/null || dpkg-query -W -f="libssl \${Version}" libssl3t64 libssl3' 2>/dev/null | head -n 1)"
grep -E '^(FAILED|ERROR) |^[0-9]+ (passed|failed).* in [0-9.]+s|^suite:|^== all stages|^bootstrap: ' "$log" | tail -n 40 || true
if ((status)); then
    echo "-- $release: last lines of the log:"
    tail -n 15 "$log"
fi
echo "-- $release: exit status $status after ${elapsed}s (debootstrap included)"
exit "$status"
