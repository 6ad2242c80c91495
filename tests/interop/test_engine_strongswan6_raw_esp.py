"""Raw ESP (IP protocol 50) between ikev2lib and strongSwan, no NAT and no UDP encapsulation.

strongSwan 5.9.8 (Debian 12) cannot do it here: kernel-libipsec always UDP-encapsulates (it fakes NAT
detection, test_engine_libipsec_natd.py), and kernel-netlink needs ESP in the kernel's xfrm, which this
kernel lacks (charon logs "received netlink error: Protocol not supported (93)" / "unable to add SAD
entry"). strongSwan >= 5.9.11 gives kernel-libipsec a raw ESP socket on Linux
(`charon.plugins.kernel-libipsec.raw_esp = yes`); with it charon reports no NAT and sends ESP as IP
protocol 50. So this test runs Debian 13's strongSwan 6: the host's on Debian 13, on Debian 12 from a
trixie root filesystem (scripts/strongswan6-rootfs.sh builds it once, the fixture calls it) with chroot
inside charon's namespace, and checks with tshark that every ESP packet of both directions, before and after a Child
SA rekey, is IP protocol 50 and that IKE never leaves port 500.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest.register_assert_rewrite(f"{__package__}.engine_pair")

from ikev2lib.events import ChildSaCreated, ChildSaRekeyed, IkeSaEstablished
from ikev2lib.keyexport import esp_sa_table

from .capture import Capture, read_pcap
from .engine_pair import (  # make_pair and peers are pytest fixtures: imported to be used here
    CHILD,
    CONN,
    DATAGRAMS,
    ROLES,
    Pair,
    PairFactory,
    esp_both_ways,
    make_pair,
    no_errors,
    peers,
)
from .netns import NamespacePair
from .strongswan import PLUGINS_BY_MAJOR, STRONGSWAN_MAJOR, CharonSettings
from .tshark_esp import decode_esp

__all__ = ["make_pair", "peers"]

ROOTFS_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "strongswan6-rootfs.sh"
ROOTFS = Path(os.environ.get("IKEV2LIB_STRONGSWAN6_ROOT", "/var/tmp/ikev2lib-strongswan6/trixie"))
ROOTFS_TIMEOUT = 900.0  # seconds for a first build (debootstrap from the Debian archive: minutes)
PLUGINS = PLUGINS_BY_MAJOR[6]
RAW_ESP = """\
    plugins {
        kernel-libipsec {
            raw_esp = yes
        }
    }
"""


@pytest.fixture(scope="session")
def strongswan6_rootfs() -> Path | None:
    """None when the host's charon is strongSwan 6 already (Debian 13); otherwise the trixie root
    filesystem with strongSwan 6 (built on first use; fails, never skips)."""
    if (STRONGSWAN_MAJOR or 0) >= 6:
        return None
    return build_rootfs(ROOTFS, "trixie")


def build_rootfs(root: Path, suite: str) -> Path:
    """scripts/strongswan6-rootfs.sh ROOT SUITE, bounded; a failure fails the test, never skips it."""
    try:
        proc = subprocess.run([str(ROOTFS_SCRIPT), str(root), suite], capture_output=True, text=True,
                              timeout=ROOTFS_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{ROOTFS_SCRIPT} {suite} did not finish in {ROOTFS_TIMEOUT:.0f} s")
    if proc.returncode != 0:
        pytest.fail(f"{ROOTFS_SCRIPT} {suite} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return root


def _pair(netns_pair: NamespacePair, make_pair: PairFactory, rootfs: Path | None) -> Pair:
    for ns in (netns_pair.left, netns_pair.right):
        # no IPv6: libipsec's TUN would get a link-local address and charon would roam (MOBIKE) on it
        for scope in ("all", "default"):
            ns.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{scope}.disable_ipv6=1"])
    settings = CharonSettings(plugins=PLUGINS, rootfs=rootfs, extra=RAW_ESP,
                              log_levels={"default": 1, "ike": 2, "cfg": 2, "esp": 1})
    # MOBIKE off on both sides: with it an initiator floats IKE to 4500 without any NAT (RFC 4555 3.3),
    # and this test is about the plain case (IKE on 500, raw ESP); test_mobike.py covers MOBIKE
    return make_pair(settings=settings, ikev2lib_options={"mobike": False}, mobike="no")


@pytest.mark.interop
@pytest.mark.parametrize("role", ROLES)
def test_raw_esp_with_strongswan6_libipsec(netns_pair: NamespacePair, make_pair: PairFactory,
                                          strongswan6_rootfs: Path | None, tmp_path: Path, role: str) -> None:
    pair = _pair(netns_pair, make_pair, strongswan6_rootfs)
    assert "strongSwan 6." in pair.charon.log_text()  # on Debian 12 the chroot's charon, not the host's 5.9.8
    pcap = tmp_path / "raw.pcap"
    with Capture(pair.ns.left, pair.ns.left_if, pcap):
        if role == "ikev2lib-initiator":
            pair.peer.initiate(pair.config, pair.ns.right_addr)
        else:
            pair.charon.initiate(child=CHILD)
        est = pair.peer.wait_for(IkeSaEstablished)
        child = pair.peer.wait_for(ChildSaCreated)
        ike = pair.charon.wait_for_ike(CONN)
        ch = pair.charon.wait_for_child(CHILD)
        # no NAT, none faked: IKE stays on 500, and neither side encapsulates ESP
        assert est.remote_addr == (pair.ns.right_addr, 500) and not est.udp_encap
        assert not child.udp_encap and not ch.encap
        assert not {k for k in ike.raw if k.startswith("nat-")}
        assert (ch.spi_in, ch.spi_out) == (child.spi_out.hex(), child.spi_in.hex())
        esp_both_ways(pair, child.child_id, ch.spi_in, "raw")
        # tshark needs the keys of both Child SAs: take these before the rekey deletes the old one
        _, records = pair.peer.call(pair.peer.endpoint.key_records)

        pair.charon.rekey(child=CHILD)
        rekeyed = pair.peer.wait_for(ChildSaRekeyed)
        assert not rekeyed.udp_encap
        new = pair.charon.wait_for_child(CHILD, where=lambda c: c.spi_in == rekeyed.spi_out.hex())
        assert not new.encap
        esp_both_ways(pair, rekeyed.child_id, new.spi_in, "raw, rekeyed")
        _, after = pair.peer.call(pair.peer.endpoint.key_records)

    lines = sorted(set(esp_sa_table([*records, *after]).splitlines()))
    packets = decode_esp(pcap, lines)
    assert sorted(p.udp_payload or b"" for p in packets) == sorted(  # every packet decrypted by tshark
        f"{direction} {tag} {i}".encode() for direction in ("ikev2lib->charon", "charon->ikev2lib")
        for tag in ("raw", "raw, rekeyed") for i in range(DATAGRAMS))
    assert {(p.ip_proto, p.udp_ports) for p in packets} == {(50, None)}
    spis = {int.from_bytes(s, "big") for s in (child.spi_in, child.spi_out, rekeyed.spi_in, rekeyed.spi_out)}
    assert {p.spi for p in packets} == spis
    assert {(d.sport, d.dport) for d in read_pcap(pcap)} == {(500, 500)}  # IKE only, never 4500
    assert pair.peer.call(lambda: pair.peer.driver.esp_drops if pair.peer.driver else None) == {}
    no_errors(pair)
