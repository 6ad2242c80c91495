"""Why ikev2lib UDP-encapsulates toward strongSwan's kernel-libipsec although no NAT is in between.

libipsec requires UDP encapsulation (its kernel interface reports KERNEL_REQUIRE_UDP_ENCAPSULATION),
so charon fakes its NAT_DETECTION_SOURCE_IP hash, as with `encap = yes`. ikev2lib, configured
without `encap`, sees that fake as a NAT in front of charon (RFC 7296 2.23), marks the Child SA
`udp_encap` and its driver sends ESP in UDP/4500; tshark confirms every ESP packet on the wire is.
(Raw ESP toward charon would need kernel-netlink, and this kernel has no ESP in xfrm.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.register_assert_rewrite(f"{__package__}.engine_pair")

from ikev2lib.keyexport import esp_sa_table
from ikev2lib.natt import natd_hash
from ikev2lib.wire import Message, Notify, NotifyType

from .capture import Capture, ike_messages
from .engine_pair import (  # make_pair and peers are pytest fixtures: imported to be used here
    IKE_SA_INIT,
    ROLES,
    PairFactory,
    establish,
    esp_both_ways,
    make_pair,
    no_errors,
    peers,
)
from .tshark_esp import decode_esp

__all__ = ["make_pair", "peers"]


def _natd(message: bytes, kind: NotifyType) -> list[bytes]:
    return [bytes(n.data) for n in Message.parse(message).find_all(Notify) if n.notify_type == kind]


@pytest.mark.interop
@pytest.mark.parametrize("role", ROLES)
def test_libipsec_fakes_nat_detection_so_ikev2lib_encapsulates(make_pair: PairFactory, tmp_path: Path,
                                                               role: str) -> None:
    pair = make_pair()
    assert not pair.config.encap
    pcap = tmp_path / "natd.pcap"
    with Capture(pair.ns.left, pair.ns.left_if, pcap):
        _, child, sa, ch = establish(pair, role)
        esp_both_ways(pair, child.child_id, ch.spi_in, "libipsec natd")
    charon_addr, our_addr = (pair.ns.right_addr, 500), (pair.ns.left_addr, 500)
    (init,) = [m for d, m in ike_messages(pcap) if (d.src, d.sport) == charon_addr and m[18] == IKE_SA_INIT]
    header = Message.parse(init)
    # charon's source hash is not the hash of the address it sends from: a (fake) NAT in front of it ...
    assert natd_hash(header.spi_i, header.spi_r, charon_addr) not in _natd(init, NotifyType.NAT_DETECTION_SOURCE_IP)
    # ... while it saw our address unchanged: there is no real NAT on the path
    assert _natd(init, NotifyType.NAT_DETECTION_DESTINATION_IP) == [natd_hash(header.spi_i, header.spi_r, our_addr)]
    # charon itself says the NAT is faked (and that there is no real one on either side)
    assert {k: v for k, v in sa.raw.items() if k.startswith("nat-")} == {"nat-fake": "yes", "nat-any": "yes"}
    assert child.udp_encap and pair.peer.call(lambda: pair.peer.endpoint.connection(pair.ike_sa_id).nat_detected)

    _, esp_records = pair.peer.call(pair.peer.endpoint.key_records)
    packets = decode_esp(pcap, esp_sa_table(esp_records).splitlines())
    assert packets and {(p.ip_proto, p.udp_ports) for p in packets} == {(17, (4500, 4500))}
    assert all(p.udp_payload is not None for p in packets)  # tshark decrypted every one
    no_errors(pair)
