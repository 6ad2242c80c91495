"""Smoke test of the harness: two strongSwan peers in two namespaces, PSK, traffic through ESP."""

from __future__ import annotations

import time

import pytest

from .netns import Namespace, NamespacePair
from .strongswan import PskPeers, parse_vici_raw
from .traffic import udp_receive, udp_send

PORT = 5001
DATAGRAMS = 5


def _ns_names() -> set[str]:
    import subprocess
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.mark.interop
def test_psk_tunnel_carries_udp(psk_peers: PskPeers, netns_pair: NamespacePair) -> None:
    left, right = psk_peers.left, psk_peers.right
    left.initiate(child=psk_peers.child)

    ike = left.wait_for_ike(psk_peers.conn)
    assert ike.initiator
    assert (ike.encr_alg, ike.encr_keysize, ike.prf_alg, ike.dh_group) == (
        "AES_GCM_16", "128", "PRF_HMAC_SHA2_256", "CURVE_25519")
    peer_ike = right.wait_for_ike(psk_peers.conn)
    assert not peer_ike.initiator
    assert (peer_ike.spi_i, peer_ike.spi_r) == (ike.spi_i, ike.spi_r)

    child = left.wait_for_child(psk_peers.child)
    peer_child = right.wait_for_child(psk_peers.child)
    assert child.encap  # libipsec always encapsulates in UDP
    assert (child.spi_in, child.spi_out) == (peer_child.spi_out, peer_child.spi_in)
    assert child.local_ts == ["10.1.0.0/16"] and child.remote_ts == ["10.2.0.0/16"]

    receiver = netns_pair.right.start(udp_receive, "10.2.0.1", PORT, DATAGRAMS, 10.0)
    time.sleep(0.2)  # let the receiver bind; a late bind only loses datagrams, failing the test below
    payloads = [f"through the tunnel {i}".encode() for i in range(DATAGRAMS)]
    netns_pair.left.call(udp_send, "10.1.0.1", "10.2.0.1", PORT, payloads, 0.02)
    got = receiver.result(timeout=15.0)

    assert [data for data, _ in got] == payloads
    assert {src for _, src in got} == {"10.1.0.1"}
    sent = left.wait_for_child(psk_peers.child, where=lambda c: c.packets_out >= DATAGRAMS)
    recv = right.wait_for_child(psk_peers.child, where=lambda c: c.packets_in >= DATAGRAMS)
    assert sent.bytes_out > 0 and recv.bytes_in > 0

    left.terminate(ike=psk_peers.conn)
    right.wait_for_no_sas()


@pytest.mark.interop
def test_namespace_pair_cleans_up(require_interop: None) -> None:
    with NamespacePair() as pair:
        names = {pair.left_name, pair.right_name}
        assert names <= _ns_names()
        # The veth link works: a callable in `left` reaches `right` over it.
        receiver = pair.right.start(udp_receive, pair.right_addr, PORT, 1, 10.0)
        time.sleep(0.2)
        pair.left.call(udp_send, pair.left_addr, pair.right_addr, PORT, [b"x"] * 3, 0.05)
        assert receiver.result(15.0)[0] == (b"x", pair.left_addr)
        assert isinstance(pair.left, Namespace)
    assert not names & _ns_names()


@pytest.mark.interop
def test_callable_exception_crosses_namespace(netns_pair: NamespacePair) -> None:
    def boom() -> None:
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        netns_pair.left.call(boom)


def test_parse_vici_raw() -> None:
    text = ("list-sa event {c {uniqueid=1 state=ESTABLISHED child-sas {net-1 {name=net "
            "local-ts=[10.1.0.0/16 10.3.0.0/16] bytes-in=84}}}}\nlist-sas reply {}\n")
    assert parse_vici_raw(text) == [
        {"c": {"uniqueid": "1", "state": "ESTABLISHED", "child-sas": {"net-1": {
            "name": "net", "local-ts": ["10.1.0.0/16", "10.3.0.0/16"], "bytes-in": "84"}}}},
        {},
    ]


def test_require_root_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from . import netns
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(netns.NetnsError, match="need root"):
        netns.require_root()


# Lines as charon 5.9.8 writes them with `ike = 4`, `ike_name = yes` (keys from a throwaway SA).
LOG_SNIPPET = """\
20:43:13 03[IKE] <c|1> shared Diffie Hellman secret => 32 bytes @ 0x7fac34003280
20:43:13 03[IKE] <c|1>    0: BB CA 2F 6C 30 93 ED FC 8B 96 51 B7 CD CC 8E 57  ../l0.....Q....W
20:43:13 03[IKE] <c|1>   16: 80 B0 C9 C4 95 FD 35 B0 66 8C F6 28 7B 79 9A 0C  ......5.f..({y..
20:43:13 03[IKE] <c|1> SKEYSEED => 32 bytes @ 0x7fac3400a950
20:43:13 03[IKE] <c|1>    0: AB 9B 31 35 70 54 D2 FE D5 B9 F3 42 77 46 BA 2A  ..15pT.....BwF.*
20:43:13 03[IKE] <c|1>   16: 87 1E 16 9A 03 CA E7 73 5C 89 C5 62 5D EF 1D 1F  .......s\\..b]...
20:43:13 03[IKE] <c|1> Sk_ei secret => 20 bytes @ 0x7fac3400a4f0
20:43:13 03[IKE] <c|1>    0: 5E 1E 60 A3 E7 87 16 63 29 92 21 79 98 C6 91 5C  ^.`....c).!y...\\
20:43:13 03[IKE] <c|1>   16: 5D 97 E2 DD                                      ]...
20:43:13 03[IKE] <c|1> reinitiating already active tasks
20:43:13 13[CHD] <c|1> encryption initiator key => 20 bytes @ 0x562386ce8240
20:43:13 13[CHD] <c|1>    0: 7E CA 4F EE F6 86 BD 3B EB 7C 82 5C E9 F0 FB 94  ~.O....;.|.\\....
20:43:13 13[CHD] <c|1>   16: 4E B9 B4 3A                                      N..:
20:43:13 13[CHD] <c|1> encryption responder key => 20 bytes @ 0x562386ce8e80
20:43:13 13[CHD] <c|1>    0: 26 B5 E3 72 9D E7 68 37 3C 94 1D 42 7D 7C 6D 71  &..r..h7<..B}|mq
20:43:13 13[CHD] <c|1>   16: 92 FB 44 24                                      ..D$
20:43:13 13[CHD] <c|1> encryption initiator key => 20 bytes @ 0x562386ce8240
20:43:13 13[CHD] <c|1>    0: 7E CA 4F EE F6 86 BD 3B EB 7C 82 5C E9 F0 FB 94  ~.O....;.|.\\....
"""


def test_logged_key_parsers() -> None:
    from .strongswan import logged_child_keys, logged_ike_keys, parse_logged_dumps
    dumps = parse_logged_dumps(LOG_SNIPPET)
    # The truncated last dump (16 of 20 bytes) is dropped, not returned short.
    assert [d.label for d in dumps] == ["shared Diffie Hellman secret", "SKEYSEED", "Sk_ei secret",
                                        "encryption initiator key", "encryption responder key"]
    assert dumps[2].ike_sa == "c|1" and dumps[2].group == "IKE"
    (ike,) = logged_ike_keys(LOG_SNIPPET)
    assert ike["sk_ei"] == bytes.fromhex("5E1E60A3E787166329922179 98C6915C5D97E2DD".replace(" ", ""))
    assert ike["shared_secret"][:4] == bytes.fromhex("BBCA2F6C") and len(ike["skeyseed"]) == 32
    (child,) = logged_child_keys(LOG_SNIPPET)
    assert child == {"encr_i": bytes.fromhex("7ECA4FEEF686BD3BEB7C825CE9F0FB944EB9B43A"),
                     "encr_r": bytes.fromhex("26B5E3729DE768373C941D427D7C6D7192FB4424")}


@pytest.mark.interop
def test_rekey_and_delete_through_swanctl(psk_peers: PskPeers) -> None:
    left, right = psk_peers.left, psk_peers.right
    left.initiate(child=psk_peers.child)
    old_ike = left.wait_for_ike(psk_peers.conn)
    old_child = left.wait_for_child(psk_peers.child)

    left.rekey(child=psk_peers.child)
    new_child = left.wait_for_child(psk_peers.child, where=lambda c: c.spi_in != old_child.spi_in)
    right.wait_for_child(psk_peers.child, where=lambda c: c.spi_out == new_child.spi_in)

    left.rekey(ike=psk_peers.conn)
    left.wait_for_ike_gone(old_ike.spi_i)
    new_ike = left.wait_for_ike(psk_peers.conn)
    assert new_ike.spi_i != old_ike.spi_i and new_ike.spi_r != old_ike.spi_r
    assert new_ike.child(psk_peers.child) is not None  # the Child SA moved to the new IKE SA
    assert right.wait_for_ike(psk_peers.conn).spi_i == new_ike.spi_i

    left.terminate(ike=psk_peers.conn)
    left.wait_for_no_sas()
    right.wait_for_no_sas()
