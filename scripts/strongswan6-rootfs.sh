#!/usr/bin/env bash
# A Debian 13 (trixie) root filesystem holding strongSwan 6 (charon, swanctl, the standard plugins), for
# the interop test in which charon's kernel-libipsec sends raw ESP (IP protocol 50): that needs
# strongSwan >= 5.9.11 (`charon.plugins.kernel-libipsec.raw_esp`), Debian 12 ships 5.9.8, and this
# kernel has no ESP in xfrm, so kernel-netlink cannot do it either. The tests run that charon with
# chroot inside a namespace (tests/interop/strongswan.py, CharonSettings.rootfs).
# SUITE `testing` gives strongSwan 6.1, the first with RFC 9611 per-CPU Child SAs (`per_cpu_sas`), for
# tests/interop/test_engine_strongswan_per_cpu.py.
#
# Usage (root): scripts/strongswan6-rootfs.sh [DIR [SUITE]]
#   (default DIR /var/tmp/ikev2lib-strongswan6/trixie, SUITE trixie)
# Idempotent: a complete tree is kept; a new one is built beside it and renamed into place, so an
# interrupted run never leaves a half tree at DIR. About 230 MB and a few minutes (Debian archive).
set -euo pipefail

ROOT=${1:-${IKEV2LIB_STRONGSWAN6_ROOT:-/var/tmp/ikev2lib-strongswan6/trixie}}
SUITE=${2:-trixie}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=strongswan-charon,strongswan-swanctl,libstrongswan-standard-plugins,libcharon-extra-plugins
MARKER=.ikev2lib-complete

if [[ -e "$ROOT/$MARKER" && -x "$ROOT/usr/lib/ipsec/charon" ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "strongswan6-rootfs: debootstrap needs root" >&2
    exit 1
fi
command -v debootstrap >/dev/null || {
    echo "strongswan6-rootfs: debootstrap missing (scripts/apt-packages.txt; run scripts/bootstrap.sh)" >&2
    exit 1
}
mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9  # concurrent runs (parallel test sessions) build it once
if [[ -e "$ROOT/$MARKER" && -x "$ROOT/usr/lib/ipsec/charon" ]]; then
    exit 0
fi
tmp="$ROOT.partial.$$"
trap 'rm -rf "$tmp"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" "$MIRROR" >"$tmp.log" 2>&1 || {
    tail -20 "$tmp.log" >&2
    rm -f "$tmp.log"
    echo "strongswan6-rootfs: debootstrap $SUITE from $MIRROR failed" >&2
    exit 1
}
rm -f "$tmp.log"
touch "$tmp/$MARKER"
rm -rf "$ROOT"
mv "$tmp" "$ROOT"
trap - EXIT
echo "strongswan6-rootfs: $ROOT ready ($(chroot "$ROOT" /usr/sbin/swanctl --version 2>/dev/null || echo strongSwan))"
