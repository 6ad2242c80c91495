"""Child SAs with AES-CBC + HMAC-SHA1/SHA2 ESP (RFC 3602, RFC 4868) negotiated by two engines."""

from __future__ import annotations

import pytest

from ikev2lib.child_sa import esp_algorithm_name
from ikev2lib.config import ChildConfig
from ikev2lib.esp.errors import EspAuthenticationError
from ikev2lib.esp.params import ALGORITHMS
from ikev2lib.events import ChildSaCreated, IkeSaEstablished, ProtocolErrorEvent
from ikev2lib.exceptions import LocalProtocolError, RemoteProtocolError
from ikev2lib.negotiation import SelectedProposal, select_proposal
from ikev2lib.proposals import parse_proposals
from ikev2lib.wire import NotifyType, ProtocolId

from .network import RESPONDER_IP, ike_config, pair

INNER = bytes.fromhex("4500001c000100004011f9c40a0100010a020001") + bytes(8)  # IPv4/UDP


def _child_pair(esp_i: str, esp_r: str):  # type: ignore[no-untyped-def]
    icfg = ike_config(local_id="alice@example.org", remote_id="gw.example.org", esp=esp_i)
    rcfg = ike_config(local_id="gw.example.org", remote_id="alice@example.org", esp=esp_r,
                      local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",))  # fmt: skip
    net, a, b, icfg = pair(initiator=icfg, responder=rcfg)
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    return a, b


@pytest.mark.parametrize(
    "esp, keyword",
    [
        ("aes256-sha256", "aes256-sha256"),
        ("aes128-sha256-esn", "aes128-sha256"),
        ("aes192-sha384", "aes192-sha384"),
        ("aes256-sha512", "aes256-sha512"),
        ("aes128-sha1", "aes128-sha1"),
    ],
)
def test_cbc_child_sa_carries_traffic_both_ways(esp: str, keyword: str) -> None:
    a, b = _child_pair(esp, f"aes128gcm16,{esp}")
    assert len(a.of_type(IkeSaEstablished)) == len(b.of_type(IkeSaEstablished)) == 1
    ca, cb = a.of_type(ChildSaCreated)[0], b.of_type(ChildSaCreated)[0]
    assert ca.proposal == cb.proposal == (esp if esp.endswith("-esn") else f"{esp}-noesn")
    assert ca.outbound.algorithm == cb.inbound.algorithm == keyword
    icv = ALGORITHMS[keyword].icv_len
    for sender, receiver in ((ca, cb), (cb, ca)):
        packet = sender.outbound.encap(INNER)
        assert len(packet) == 8 + 16 + 32 + icv  # 16-byte IV, 28+2 bytes padded to two AES blocks
        bad = bytearray(sender.outbound.encap(INNER))
        bad[-1] ^= 1
        with pytest.raises(EspAuthenticationError):
            receiver.inbound.decap(bytes(bad))
        assert receiver.inbound.decap(packet) == (4, INNER)
    # the two directions use different keys (KEYMAT: i->r then r->i, each encryption key || integrity key)
    swapped = cb.outbound.encap(INNER)
    swapped = ca.spi_out + swapped[4:]  # right SPI for a's outbound direction, keys of the other one
    with pytest.raises(EspAuthenticationError):
        cb.inbound.decap(swapped)


def test_cbc_with_an_integrity_the_data_plane_lacks_is_refused_or_skipped() -> None:
    # AES-XCBC is a valid IKEv2 ESP integrity transform, but the ESP data plane cannot run it: our own
    # configuration refuses it, and a peer that offers it first gets the HMAC it offers next.
    with pytest.raises(LocalProtocolError, match="esp_proposals.*'aesxcbc'"):
        ChildConfig(esp_proposals="aes128-aesxcbc")
    icfg = ike_config(local_id="alice@example.org", remote_id="gw.example.org", esp="aes128-sha256")
    object.__setattr__(icfg.children[0], "esp_proposals", "aes128-aesxcbc-sha256")  # another implementation
    rcfg = ike_config(local_id="gw.example.org", remote_id="alice@example.org", esp="aes128-sha256",
                      local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",))  # fmt: skip
    net, a, b, icfg = pair(initiator=icfg, responder=rcfg)
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    assert not a.of_type(ProtocolErrorEvent) and not b.of_type(ProtocolErrorEvent)
    assert a.of_type(ChildSaCreated)[0].outbound.algorithm == b.of_type(ChildSaCreated)[0].inbound.algorithm == "aes128-sha256"


def test_gcm_and_cbc_peers_do_not_agree() -> None:
    a, b = _child_pair("aes256-sha256", "aes256gcm16")
    assert not a.of_type(ChildSaCreated)
    assert a.of_type(ProtocolErrorEvent)[0].notify == NotifyType.NO_PROPOSAL_CHOSEN


@pytest.mark.parametrize(
    "text, name",
    [
        ("aes128-sha256", "aes128-sha256"),
        ("aes256-sha384", "aes256-sha384"),
        ("aes192-sha512", "aes192-sha512"),
        ("aes256-sha1", "aes256-sha1"),
        ("aes128-md5", None),
        ("aes256gcm16", "aes256gcm16"),
    ],
)
def test_esp_algorithm_name(text: str, name: str | None) -> None:
    offered = parse_proposals(text, ProtocolId.ESP)
    selected = SelectedProposal(number=1, protocol_id=ProtocolId.ESP, spi=b"", transforms=tuple(offered[0].transforms))
    assert esp_algorithm_name(selected) == name
    if name is None:  # negotiation never picks a suite the data plane lacks
        with pytest.raises(RemoteProtocolError):
            select_proposal(offered, offered)
    else:
        assert esp_algorithm_name(select_proposal(offered, offered)) == name


def test_cbc_child_sa_rekey_with_pfs_gets_fresh_keys() -> None:
    from ikev2lib.events import ChildSaRekeyed

    icfg = ike_config(local_id="alice@example.org", remote_id="gw.example.org", esp="aes256-sha512-x25519")
    rcfg = ike_config(local_id="gw.example.org", remote_id="alice@example.org", esp="aes256-sha512-x25519",
                      local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",))  # fmt: skip
    net, a, b, icfg = pair(initiator=icfg, responder=rcfg)
    sid = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    first_a, first_b = a.of_type(ChildSaCreated)[0], b.of_type(ChildSaCreated)[0]
    a.endpoint.rekey_child_sa(sid, first_a.child_id)
    net.run()
    new_a, new_b = a.of_type(ChildSaRekeyed)[0], b.of_type(ChildSaRekeyed)[0]
    assert new_a.outbound.algorithm == "aes256-sha512"
    for sender, receiver in ((new_a, new_b), (new_b, new_a)):
        packet = sender.outbound.encap(INNER)
        assert receiver.inbound.decap(packet) == (4, INNER)
    # the old SA's keys do not open the new SA's packets (new KEYMAT from the rekey's nonces and DH)
    stale = first_b.spi_in + new_a.outbound.encap(INNER)[4:]
    with pytest.raises(EspAuthenticationError):
        first_b.inbound.decap(stale)
