"""Every keyword a configuration accepts runs through two engines: the IKE SA comes up, the Child SA
carries traffic both ways, and every PFS group rekeys a Child SA. (What a configuration refuses is in
tests/test_suites.py.)"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from ikev2lib.events import ChildSaCreated, ChildSaRekeyed, IkeSaEstablished, IkeSaRekeyed, ProtocolErrorEvent
from ikev2lib.proposals import ENCRYPTION, INTEGRITY, KEY_EXCHANGE, PRF, keyword_transform
from ikev2lib.suites import ENGINE_PENDING_KE, ESP_SUITES, RUNNABLE
from ikev2lib.wire import ProtocolId

from .network import RESPONDER_IP, Node, ike_config, pair

IKE, ESP = ProtocolId.IKE, ProtocolId.ESP
INNER = bytes.fromhex("4500001c000100004011f9c40a0100010a020001") + bytes(8)  # IPv4/UDP


def _canonical(table: Mapping[str, object], protocol: ProtocolId) -> list[str]:
    """One keyword per runnable transform (aliases such as curve25519/x25519 run the same transform)."""
    seen: dict[tuple[int, int, int | None], str] = {}
    for word in sorted(table, key=lambda w: (len(w), w)):
        t = keyword_transform(word, protocol)
        key = None if t is None else (int(t.transform_type), int(t.transform_id), t.key_length)
        if key is not None and key in RUNNABLE[protocol]:
            seen.setdefault(key, word)
    return sorted(seen.values())


def _handshake(ike: str, esp: str, rekey: bool = False) -> tuple[Node, Node]:
    icfg = ike_config(local_id="alice@example.org", remote_id="gw.example.org", ike=ike, esp=esp)
    rcfg = ike_config(local_id="gw.example.org", remote_id="alice@example.org", ike=ike, esp=esp,
                      local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",))  # fmt: skip
    net, a, b, icfg = pair(initiator=icfg, responder=rcfg)
    sid = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    assert not a.of_type(ProtocolErrorEvent) and not b.of_type(ProtocolErrorEvent)
    assert len(a.of_type(IkeSaEstablished)) == len(b.of_type(IkeSaEstablished)) == 1
    if rekey:
        a.endpoint.rekey_child_sa(sid, a.of_type(ChildSaCreated)[0].child_id)
        net.run()
        assert not a.of_type(ProtocolErrorEvent) and not b.of_type(ProtocolErrorEvent)
    return a, b


def _traffic(a: Node, b: Node, kind: type[ChildSaCreated] | type[ChildSaRekeyed] = ChildSaCreated) -> None:
    ca, cb = a.of_type(kind)[-1], b.of_type(kind)[-1]
    for sender, receiver in ((ca, cb), (cb, ca)):
        assert receiver.inbound.decap(sender.outbound.encap(INNER)) == (4, INNER)


def _ike_cases() -> list[str]:
    cases = []
    for encr in _canonical(ENCRYPTION, IKE):
        t = keyword_transform(encr, IKE)
        aead = t is not None and int(t.transform_id) != 12  # AES-CBC is the only non-AEAD IKE cipher
        cases.append(f"{encr}-prfsha256-x25519" if aead else f"{encr}-sha256-x25519")
    cases += [f"aes128-{integ}-x25519" for integ in _canonical(INTEGRITY, IKE)]
    cases += [f"aes128gcm16-{prf}-x25519" for prf in _canonical(PRF, IKE)]
    cases += [f"aes128gcm16-prfsha256-{ke}" for ke in _canonical(KEY_EXCHANGE, IKE)]
    return cases


@pytest.mark.parametrize("ike", _ike_cases())
def test_every_runnable_ike_keyword_establishes(ike: str) -> None:
    a, b = _handshake(ike, "aes128gcm16")
    _traffic(a, b)


@pytest.mark.parametrize("esn", ["noesn", "esn"])
@pytest.mark.parametrize("suite", sorted(set(ESP_SUITES.values())))
def test_every_esp_suite_carries_traffic_through_the_engines(suite: str, esn: str) -> None:
    a, b = _handshake("aes128gcm16-prfsha256-x25519", f"{suite}-{esn}")
    assert a.of_type(ChildSaCreated)[0].outbound.algorithm == suite
    _traffic(a, b)


@pytest.mark.parametrize("group", _canonical(KEY_EXCHANGE, ESP))
def test_every_pfs_group_rekeys_a_child(group: str) -> None:
    a, b = _handshake("aes128gcm16-prfsha256-x25519", f"aes128gcm16-{group}", rekey=True)
    _traffic(a, b, ChildSaRekeyed)


@pytest.mark.parametrize("group", ["mlkem768", "mlkem1024"])
def test_ml_kem_ike_sa_establishes_and_rekeys(group: str) -> None:
    """The responder encapsulates to the initiator's key (KeyExchange.respond) in IKE_SA_INIT and in
    the IKE SA rekey; CREATE_CHILD_SA with an ML-KEM PFS group is covered above."""
    assert not ENGINE_PENDING_KE
    ike = f"aes256gcm16-prfsha384-{group}"
    icfg = ike_config(local_id="alice@example.org", remote_id="gw.example.org", ike=ike)
    rcfg = ike_config(local_id="gw.example.org", remote_id="alice@example.org", ike=ike,
                      local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",))  # fmt: skip
    net, a, b, icfg = pair(initiator=icfg, responder=rcfg)
    sid = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    (established,) = a.of_type(IkeSaEstablished)
    assert group in established.proposal
    a.endpoint.rekey_ike_sa(sid)
    net.run()
    (rekeyed_a,) = a.of_type(IkeSaRekeyed)
    (rekeyed_b,) = b.of_type(IkeSaRekeyed)
    assert (rekeyed_a.spi_i, rekeyed_a.spi_r) == (rekeyed_b.spi_i, rekeyed_b.spi_r) and group in rekeyed_a.proposal
    assert not a.of_type(ProtocolErrorEvent) and not b.of_type(ProtocolErrorEvent)
    _traffic(a, b)
