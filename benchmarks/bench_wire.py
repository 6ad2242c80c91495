"""Wire codec benchmarks (pytest-benchmark). Run:

    .venv/bin/python -m pytest benchmarks/bench_wire.py --benchmark-enable

Messages: the brief's typical IKE_SA_INIT request (SA with 2 proposals / 28 transforms, KE x25519,
Ni 32 bytes, NAT-D x2, IKEV2_FRAGMENTATION_SUPPORTED, SIGNATURE_HASH_ALGORITHMS; ~450 bytes) and the
decrypted IKE_AUTH payload chain (IDi, N, IDr, AUTH, CP, SA (ESP), TSi, TSr, notifies). scapy's parse
and build of the same IKE_SA_INIT run in the same session as the reference for ratios (absolute times
are meaningless on a shared machine). Without --benchmark-enable each body runs once, as a test.
"""

from __future__ import annotations

import os
from typing import Any

from ikev2lib.proposals import parse_proposals
from ikev2lib.wire import (
    KE,
    SA,
    Auth,
    AuthMethod,
    ConfigAttribute,
    ConfigType,
    Configuration,
    ExchangeType,
    HashAlgorithm,
    IDi,
    IDr,
    KeyExchangeId,
    Message,
    Nonce,
    Notify,
    NotifyType,
    Payload,
    ProtocolId,
    TrafficSelector,
    TSi,
    TSr,
    parse_payloads,
    serialize_payloads,
)

IKE_PROPOSALS = (
    "aes128gcm16-aes256gcm16-chacha20poly1305-prfsha256-prfsha384-prfsha512"
    "-x25519-ecp256-ecp384-modp2048-x448-ecp521-mlkem768-modp3072,"
    "aes128-aes256-sha256-sha384-sha512-prfsha256-prfsha384-prfsha512"
    "-x25519-ecp256-ecp384-modp2048-modp3072-ecp521"
)


def ike_sa_init_request() -> Message:
    return Message(
        os.urandom(8),
        bytes(8),
        ExchangeType.IKE_SA_INIT,
        0,
        [
            SA(parse_proposals(IKE_PROPOSALS, ProtocolId.IKE)),
            KE(KeyExchangeId.CURVE25519, os.urandom(32)),
            Nonce(os.urandom(32)),
            Notify(NotifyType.NAT_DETECTION_SOURCE_IP, os.urandom(20)),
            Notify(NotifyType.NAT_DETECTION_DESTINATION_IP, os.urandom(20)),
            Notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED),
            Notify.signature_hash_algorithms(
                [HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512, HashAlgorithm.IDENTITY]
            ),
        ],
    )


def ike_auth_inner() -> list[Payload]:
    return [
        IDi.from_value("moon.strongswan.org"),
        Notify(NotifyType.INITIAL_CONTACT),
        IDr.from_value("sun.strongswan.org"),
        Auth(AuthMethod.SHARED_KEY_MIC, os.urandom(32)),
        Configuration(ConfigType.CFG_REQUEST, [ConfigAttribute(1), ConfigAttribute(3)]),
        SA(parse_proposals("aes128gcm16-aes256gcm16,aes128-sha256-modp2048", ProtocolId.ESP, spi=os.urandom(4))),
        TSi([TrafficSelector.from_network("10.1.0.0/16")]),
        TSr([TrafficSelector.from_network("10.2.0.0/16")]),
        Notify(NotifyType.MOBIKE_SUPPORTED),
        Notify(NotifyType.NO_ADDITIONAL_ADDRESSES),
        Notify(NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED),
    ]


def to_scapy(msg: Message) -> Any:
    """The same message built with scapy's constructors (not dissected, so scapy has no cached bytes)."""
    from scapy.contrib import ikev2 as sc

    pkt = sc.IKEv2(init_SPI=msg.spi_i, resp_SPI=msg.spi_r, exch_type=int(msg.exchange_type), flags="Initiator",
                   id=msg.message_id)
    for p in msg.payloads:
        if isinstance(p, SA):
            props = None
            for q in p.proposals:
                trans = None
                for t in q.transforms:
                    kw: dict[str, Any] = {"transform_type": int(t.transform_type), "transform_id": int(t.transform_id)}
                    if t.key_length is not None:
                        kw.update(length=12, key_length=t.key_length)
                    layer = sc.IKEv2_Transform(**kw)
                    trans = layer if trans is None else trans / layer
                prop = sc.IKEv2_Proposal(proposal=q.number, proto=int(q.protocol_id), SPI=q.spi,
                                         trans_nb=len(q.transforms), trans=trans)
                props = prop if props is None else props / prop
            pkt = pkt / sc.IKEv2_SA(prop=props)
        elif isinstance(p, KE):
            pkt = pkt / sc.IKEv2_KE(group=int(p.group), ke=p.data)
        elif isinstance(p, Nonce):
            pkt = pkt / sc.IKEv2_Nonce(nonce=p.data)
        elif isinstance(p, Notify):
            pkt = pkt / sc.IKEv2_Notify(type=int(p.notify_type), notify=p.data, proto=int(p.protocol_id), SPI=p.spi)
        else:
            raise TypeError(f"no scapy form for {p!r}")
    return pkt


SA_INIT = ike_sa_init_request()
SA_INIT_BYTES = SA_INIT.serialize()
INNER = ike_auth_inner()
INNER_FIRST, INNER_BYTES = serialize_payloads(INNER)


def test_sizes() -> None:
    assert 400 <= len(SA_INIT_BYTES) <= 500
    assert sum(len(p.transforms) for p in SA_INIT.payloads[0].proposals) == 28  # type: ignore[attr-defined]


def test_parse_ike_sa_init(benchmark: Any) -> None:
    msg = benchmark(Message.parse, SA_INIT_BYTES)
    assert msg == SA_INIT


def test_serialize_ike_sa_init(benchmark: Any) -> None:
    assert benchmark(SA_INIT.serialize) == SA_INIT_BYTES


def test_parse_ike_auth_inner_chain(benchmark: Any) -> None:
    assert benchmark(parse_payloads, INNER_FIRST, INNER_BYTES) == INNER


def test_serialize_ike_auth_inner_chain(benchmark: Any) -> None:
    assert benchmark(serialize_payloads, INNER) == (INNER_FIRST, INNER_BYTES)


def test_scapy_parse_ike_sa_init(benchmark: Any) -> None:
    from scapy.contrib import ikev2 as sc

    pkt = benchmark(sc.IKEv2, SA_INIT_BYTES)
    assert pkt.exch_type == 34


def test_scapy_build_ike_sa_init(benchmark: Any) -> None:
    pkt = to_scapy(SA_INIT)
    assert benchmark(bytes, pkt) == SA_INIT_BYTES
