"""One test per payload: hand-encoded octets (laid out from the RFC figures) <-> objects."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

from ikev2lib.exceptions import LocalProtocolError, ParseError
from ikev2lib.wire import (
    EAP,
    KE,
    SA,
    Auth,
    AuthMethod,
    Cert,
    CertEncoding,
    CertReq,
    ConfigAttribute,
    ConfigAttributeType,
    Configuration,
    ConfigType,
    Delete,
    EncrId,
    IDi,
    IDr,
    IdType,
    KeyExchangeId,
    Nonce,
    Notify,
    NotifyType,
    Payload,
    PayloadType,
    Proposal,
    ProtocolId,
    RawTrafficSelector,
    Transform,
    TransformAttribute,
    TransformType,
    TrafficSelector,
    TSi,
    TSr,
    TSType,
    UnknownPayload,
    VendorID,
    parse_payloads,
    serialize_payloads,
)


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def check(payload: Payload, body: bytes) -> None:
    """`payload` alone in a chain encodes to generic header + `body`, and `body` decodes to it."""
    encoded = bytes([0, 0x80 if payload.critical else 0]) + (len(body) + 4).to_bytes(2, "big") + body
    first, chain = serialize_payloads([payload])
    assert first == payload.payload_type
    assert chain == encoded
    assert parse_payloads(first, encoded) == [payload]


def test_sa_ike_proposal_with_key_length_and_plain_transforms() -> None:
    # RFC 7296 3.3.1/3.3.2/3.3.5: proposal header, transforms, Key Length attribute (TV, AF=1, type 14).
    sa = SA([
        Proposal(1, ProtocolId.IKE, b"", [
            Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256),
            Transform(TransformType.PRF, 5),
            Transform(TransformType.KE, KeyExchangeId.CURVE25519),
        ])
    ])
    body = h("""
        00 00 0024 01 01 00 03
           03 00 000c 01 00 0014 800e 0100
           03 00 0008 02 00 0005
           00 00 0008 04 00 001f
    """)
    check(sa, body)
    parsed = parse_payloads(33, bytes([0, 0, 0, len(body) + 4]) + body)[0]
    assert isinstance(parsed, SA)
    t = parsed.proposals[0].transforms[0]
    assert t.transform_type is TransformType.ENCR and t.transform_id is EncrId.AES_GCM_16


def test_sa_two_proposals_esp_spi_and_last_substruc() -> None:
    sa = SA([
        Proposal(1, ProtocolId.ESP, h("c0ffee01"), [Transform(1, 20, 128), Transform(5, 0)]),
        Proposal(2, ProtocolId.ESP, h("c0ffee01"), [Transform(1, 12, 128), Transform(3, 12), Transform(5, 0)]),
    ])
    body = h("""
        02 00 0020 01 03 04 02 c0ffee01
           03 00 000c 01 00 0014 800e 0080
           00 00 0008 05 00 0000
        00 00 0028 02 03 04 03 c0ffee01
           03 00 000c 01 00 000c 800e 0080
           03 00 0008 03 00 000c
           00 00 0008 05 00 0000
    """)
    check(sa, body)


def test_transform_attributes_tlv_unknown_and_second_key_length_round_trip() -> None:
    t = Transform(1, 99, 128, (TransformAttribute(14, 256), TransformAttribute(300, b"\x01\x02\x03"),
                                TransformAttribute(7, 5)))
    body = h("""
        00 00 0023 01 01 00 01
           00 00 001b 01 00 0063 800e 0080 800e 0100 012c 0003 010203 8007 0005
    """)
    check(SA([Proposal(1, 1, b"", [t])]), body)


def test_key_length_not_first_stays_an_attribute() -> None:
    body = h("00 00 0014 01 01 00 01  00 00 000c 01 00 000c 0007 0000")
    sa = parse_payloads(33, h("00 00 0018") + body)[0]
    assert isinstance(sa, SA)
    assert sa.proposals[0].transforms[0] == Transform(1, 12, None, (TransformAttribute(7, b""),))


@pytest.mark.parametrize(
    "body, what",
    [
        (h("02 00 0010 01 01 00 01  00 00 0008 01 00 000c"), "last proposal marked 'more'"),
        (h("00 00 0010 01 01 00 01  03 00 0008 01 00 000c"), "last transform marked 'more'"),
        (h("00 00 0010 01 01 00 02  00 00 0008 01 00 000c"), "announces 2 transforms, holds 1"),
        (h("00 00 0010 01 01 00 00  00 00 0008 01 00 000c"), "announces 0 transforms, holds 1"),
        (h("00 00 0011 01 01 00 01  00 00 0008 01 00 000c"), "proposal longer than SA"),
        (h("00 00 0010 01 01 09 01  00 00 0008 01 00 000c"), "SPI size beyond proposal"),
        (h("00 00 0010 01 01 00 01  00 00 0007 01 00 000c"), "transform length 7"),
        (h("00 00 0010 01 01 00 01  00 00 000a 01 00 000c"), "transform longer than proposal"),
        (h("00 00 000e 01 01 00 01  00 00 0006 01 00"), "truncated transform"),
        (h("00 00 0010 01 01 00 01  00 00 000c 01 00 000c 0001 00ff"), "TLV attribute too long"),
        (h("00 00 0006 01 01"), "truncated proposal"),
        (b"", "no proposals"),
    ],
)
def test_sa_malformed(body: bytes, what: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_payloads(33, bytes([0, 0]) + (len(body) + 4).to_bytes(2, "big") + body, base_offset=100)
    assert info.value.notify == NotifyType.INVALID_SYNTAX
    assert info.value.offset >= 100, what


def test_ke() -> None:
    check(KE(KeyExchangeId.ECP_256, bytes(range(64))), h("0013 0000") + bytes(range(64)))
    check(KE(4242, b"x"), h("1092 0000") + b"x")  # unknown group stays an int
    with pytest.raises(ParseError):
        parse_payloads(34, h("0000 0007 0013 00"))


def test_identification_payloads() -> None:
    check(IDi(IdType.ID_FQDN, b"moon.strongswan.org"), h("02 000000") + b"moon.strongswan.org")
    check(IDr(IdType.ID_IPV4_ADDR, h("c0000201")), h("01 000000 c0000201"))
    assert IDi.from_value("192.0.2.1") == IDi(IdType.ID_IPV4_ADDR, h("c0000201"))
    assert IDi.from_value("2001:db8::1") == IDi(IdType.ID_IPV6_ADDR, ipaddress.ip_address("2001:db8::1").packed)
    assert IDr.from_value("carol@strongswan.org").id_type == IdType.ID_RFC822_ADDR
    assert IDr.from_value("sun.strongswan.org").display() == "sun.strongswan.org"
    assert "192.0.2.1" in repr(IDi.from_value("192.0.2.1"))


def test_reserved_octets_ignored_on_receipt_and_sent_as_zero() -> None:
    # RFC 7296 section 3: RESERVED "MUST be sent as zero; MUST be ignored on receipt".
    received = h("0000 000c 02 ffffff") + b"abcd"
    (payload,) = parse_payloads(35, received)
    assert payload == IDi(IdType.ID_FQDN, b"abcd")
    assert serialize_payloads([payload])[1] == h("0000 000c 02 000000") + b"abcd"
    # The generic header's 7 reserved bits too, while the critical bit is kept.
    (payload,) = parse_payloads(35, h("00ff 000c 02 000000") + b"abcd")
    assert payload.critical is True
    assert serialize_payloads([payload])[1] == h("0080 000c 02 000000") + b"abcd"


def test_cert_and_certreq() -> None:
    check(Cert(CertEncoding.X509_SIGNATURE, b"\x30\x82der"), h("04") + b"\x30\x82der")
    check(CertReq(CertEncoding.X509_SIGNATURE, bytes(20)), h("04") + bytes(20))
    check(Cert(200, b""), h("c8"))
    with pytest.raises(ParseError):
        parse_payloads(37, h("0000 0004"))


def test_auth() -> None:
    check(Auth(AuthMethod.SHARED_KEY_MIC, bytes(32)), h("02 000000") + bytes(32))
    check(Auth(AuthMethod.DIGITAL_SIGNATURE, b"sig"), h("0e 000000") + b"sig")


@pytest.mark.parametrize("size", [16, 32, 256])
def test_nonce_sizes_accepted(size: int) -> None:
    check(Nonce(bytes(size)), bytes(size))


@pytest.mark.parametrize("size", [0, 15, 257])
def test_nonce_sizes_rejected(size: int) -> None:
    # RFC 7296 section 3.9: 16..256 octets.
    with pytest.raises(ParseError):
        parse_payloads(40, b"\x00\x00" + (size + 4).to_bytes(2, "big") + bytes(size))


def test_notify() -> None:
    check(Notify(NotifyType.NAT_DETECTION_SOURCE_IP, bytes(20)), h("00 00 4004") + bytes(20))
    check(Notify(NotifyType.REKEY_SA, b"", ProtocolId.ESP, h("01020304")), h("03 04 4009 01020304"))
    check(Notify(NotifyType.INVALID_KE_PAYLOAD, h("001f")), h("00 00 0011 001f"))
    check(Notify(55555, b"?"), h("00 00 d903") + b"?")
    n = Notify.signature_hash_algorithms([2, 3, 4])
    check(n, h("00 00 402f 0002 0003 0004"))
    assert n.hash_algorithms() == [2, 3, 4]
    assert Notify(NotifyType.AUTHENTICATION_FAILED).is_error and not n.is_error
    with pytest.raises(ParseError):
        parse_payloads(41, h("0000 0009 03 04 4009 0102"))  # SPI size beyond the payload


def test_delete() -> None:
    check(Delete(ProtocolId.IKE, []), h("01 00 0000"))
    check(Delete(ProtocolId.ESP, [h("01020304"), h("05060708")]), h("03 04 0002 01020304 05060708"))
    for bad in (h("03 04 0002 01020304"), h("03 00 0002"), h("03 04 0000"), h("03 04 0001 0102030405")):
        with pytest.raises(ParseError):
            parse_payloads(42, b"\x00\x00" + (len(bad) + 4).to_bytes(2, "big") + bad)
    with pytest.raises(LocalProtocolError):
        serialize_payloads([Delete(ProtocolId.ESP, [h("01020304"), h("01")])])


def test_vendor_id() -> None:
    check(VendorID(h("882fe56d6fd20dbc2251613b2ebe5beb")), h("882fe56d6fd20dbc2251613b2ebe5beb"))


def test_traffic_selectors_v4_v6() -> None:
    ts = TSi([
        TrafficSelector.from_network("10.1.0.0/16"),
        TrafficSelector.from_range("2001:db8::1", "2001:db8::ff", ip_protocol=6, start_port=443, end_port=443),
    ])
    body = h("""
        02 000000
        07 00 0010 0000 ffff 0a010000 0a01ffff
        08 06 0028 01bb 01bb 20010db8000000000000000000000001 20010db80000000000000000000000ff
    """)
    check(ts, body)
    sel = ts.selectors[0]
    assert isinstance(sel, TrafficSelector)
    assert sel.networks() == [ipaddress.ip_network("10.1.0.0/16")]
    assert str(sel.end_ip) == "10.1.255.255"


def test_traffic_selector_unknown_type_round_trips() -> None:
    # RFC 9478 TS_SECLABEL: type, reserved, length, label.
    ts = TSr([RawTrafficSelector(TSType.TS_SECLABEL, b"system_u:object_r:ipsec_spd_t:s0\x00")])
    check(ts, h("01 000000 0a 00 0025") + b"system_u:object_r:ipsec_spd_t:s0\x00")


@pytest.mark.parametrize(
    "body",
    [
        h("01 000000 07 00 0014 0000 ffff 0a010000 0a01ffff 00000000"),  # v4 range of 20 octets
        h("02 000000 07 00 0010 0000 ffff 0a010000 0a01ffff"),  # announces 2, holds 1
        h("01 000000 07 00 0010 0000 ffff 0a010000 0a01ffff 00"),  # trailing octet
        h("01 000000 07 00 0003"),  # selector length below its header
        h("01 00"),
    ],
)
def test_traffic_selectors_malformed(body: bytes) -> None:
    with pytest.raises(ParseError):
        parse_payloads(44, b"\x00\x00" + (len(body) + 4).to_bytes(2, "big") + body)


def test_configuration() -> None:
    cp = Configuration(ConfigType.CFG_REPLY, [
        ConfigAttribute(ConfigAttributeType.INTERNAL_IP4_ADDRESS, h("0a000001")),
        ConfigAttribute(ConfigAttributeType.INTERNAL_IP4_DNS, h("08080808")),
        ConfigAttribute(ConfigAttributeType.INTERNAL_IP6_ADDRESS),
        ConfigAttribute(28000, b"vendor"),
    ])
    check(cp, h("02 000000 0001 0004 0a000001 0003 0004 08080808 0008 0000 6d60 0006") + b"vendor")
    assert "10.0.0.1" in repr(cp)
    with pytest.raises(ParseError):
        parse_payloads(47, h("0000 000c 01 000000 0001 0004"))


def test_eap() -> None:
    check(EAP(h("01 02 0005 01")), h("01 02 0005 01"))
    check(EAP(h("03 02 0004")), h("03 02 0004"))  # EAP-Success
    with pytest.raises(ParseError):
        parse_payloads(48, h("0000 0009 01 02 0009 01"))  # EAP length disagrees


def test_unknown_payload_kept_when_not_critical() -> None:
    check(UnknownPayload(99, b"blob", False), b"blob")
    assert parse_payloads(99, h("0000 0005 ff")) == [UnknownPayload(99, b"\xff", False)]


def test_known_payload_with_critical_bit_round_trips() -> None:
    check(Nonce(bytes(16), critical=True), bytes(16))


def test_payload_types_are_enum_members() -> None:
    assert SA.payload_type is PayloadType.SA
    assert Notify.payload_type == 41
    assert {TSi.payload_type, TSr.payload_type} == {44, 45}


def test_serialize_rejects_values_that_do_not_fit() -> None:
    for payload in (KE(70000, b""), Notify(1 << 16), Auth(AuthMethod.RSA_SIG, bytes(70000)),
                    SA([Proposal(1, 1, b"", [Transform(1, 12, 1 << 16)])]),
                    TSi([TrafficSelector(TSType.TS_IPV4_ADDR_RANGE, 0, 0, 65535, bytes(16), bytes(16))])):
        with pytest.raises(LocalProtocolError):
            serialize_payloads([payload])


def test_reprs_show_no_nonce_auth_or_eap_octets() -> None:
    # Nonces feed the key derivation, AUTH data derives from the PSK, EAP carries credentials:
    # reprs (which end up in logs) give lengths only.
    secret = bytes(range(0xA0, 0xC0))
    payloads = [Nonce(secret), Auth(AuthMethod.SHARED_KEY_MIC, secret), EAP(h("02 07 0026 06") + secret[:33])]
    for payload in payloads:
        text = repr(payload)
        assert secret[:4].hex() not in text and secret[-4:].hex() not in text, text
        assert "bytes" in text


def _sa_body(transforms: list[bytes]) -> bytes:
    """One ESP proposal (SPI 01020304) holding the given encoded transforms."""
    parts = [bytes([3 if i < len(transforms) - 1 else 0, 0]) + t[2:] for i, t in enumerate(transforms)]
    body = b"".join(parts)
    return bytes([0, 0]) + (8 + 4 + len(body)).to_bytes(2, "big") + bytes([1, 3, 4, len(transforms)]) + h("01020304") + body


@pytest.fixture
def empty_transform_cache() -> Iterator[Any]:
    """The process-wide transform cache, emptied for the test and given back as it was after it."""
    from ikev2lib.wire import sa as sa_module

    cache = sa_module._TRANSFORM_CACHE
    saved = cache.young, cache.old
    cache.clear()
    try:
        yield cache
    finally:
        cache.young, cache.old = saved


def _flood_message(n: int) -> bytes:
    """SA payload of the n-th hostile message: 64 new 12-octet transforms (ENCR n, key lengths 7..70)."""
    transforms = [h("0000 000c 01 00") + n.to_bytes(2, "big") + h("800e") + (bits + 7).to_bytes(2, "big")
                  for bits in range(64)]  # fmt: skip
    body = _sa_body(transforms)
    return b"\x00\x00" + (len(body) + 4).to_bytes(2, "big") + body


# An honest proposal: none of its transforms occurs in the flood (no ENCR key length there exceeds 70).
_, HONEST_SA = serialize_payloads([SA([Proposal(1, ProtocolId.IKE, b"", [
    Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256), Transform(TransformType.ENCR, EncrId.AES_GCM_16, 128),
    Transform(TransformType.PRF, 5), Transform(TransformType.KE, KeyExchangeId.CURVE25519),
])])])  # fmt: skip


def _honest_transforms() -> list[Transform]:
    (parsed,) = parse_payloads(PayloadType.SA, HONEST_SA)
    assert isinstance(parsed, SA)
    return parsed.proposals[0].transforms


def _check_flood(cache: Any, start: int, stop: int) -> None:
    from ikev2lib.wire.limits import MAX_TRANSFORM_CACHE

    for n in range(start, stop):
        (parsed,) = parse_payloads(PayloadType.SA, _flood_message(n))
        assert isinstance(parsed, SA)
        got = [(t.transform_type, t.transform_id, t.key_length) for t in parsed.proposals[0].transforms]
        assert got == [(TransformType.ENCR, n, bits + 7) for bits in range(64)]  # decoding stays exact
        assert len(cache) <= MAX_TRANSFORM_CACHE  # memory stays bounded


FLOOD_MESSAGES = 3 * 4096 // 64  # three times MAX_TRANSFORM_CACHE distinct transforms


def test_transform_cache_evicts_a_flood_for_later_honest_messages(empty_transform_cache: Any) -> None:
    # A hostile peer sends ever new transforms, more than the cache holds. Afterwards an honest
    # message's transforms must be interned again (the second parse hits the cache: same objects),
    # not decoded from scratch forever because the flood took every slot.
    from ikev2lib.wire.limits import MAX_TRANSFORM_CACHE

    assert FLOOD_MESSAGES * 64 == 3 * MAX_TRANSFORM_CACHE
    _check_flood(empty_transform_cache, 0, FLOOD_MESSAGES)
    first, again = _honest_transforms(), _honest_transforms()
    assert first == again
    assert all(a is b for a, b in zip(first, again)), "honest transforms are no longer cached"


def test_transforms_in_use_survive_a_flood(empty_transform_cache: Any) -> None:
    # Eviction must not throw out what honest peers keep sending: parsed between the flood's
    # messages, the honest transforms are hits (the very same objects) from start to end.
    first = _honest_transforms()
    for n in range(0, FLOOD_MESSAGES, 8):  # 512 hostile transforms between two honest messages
        _check_flood(empty_transform_cache, n, n + 8)
        assert all(a is b for a, b in zip(first, _honest_transforms())), f"evicted after {n + 8} messages"


def test_transforms_with_unhashable_parts_still_serialize() -> None:
    # CONTRACT.md spells attributes as a list; values may be any bytes-like: encoding must not depend
    # on the transforms being hashable (the encoder caches hashable transform lists).
    listed = Transform(1, 12, 128, [TransformAttribute(17, b"ab")])  # type: ignore[arg-type]
    mutable = Transform(1, 12, 128, (TransformAttribute(17, bytearray(b"ab")),))  # type: ignore[arg-type]
    expected = Transform(1, 12, 128, (TransformAttribute(17, b"ab"),))
    for transform in (listed, mutable):
        first, chain = serialize_payloads([SA([Proposal(1, ProtocolId.IKE, b"", [transform])])])
        assert chain == serialize_payloads([SA([Proposal(1, ProtocolId.IKE, b"", [expected])])])[1]
        assert parse_payloads(first, chain) == [SA([Proposal(1, ProtocolId.IKE, b"", [expected])])]
