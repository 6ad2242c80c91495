"""Message level: header, flags, version and length rules, chains, SK/SKF, limits, errors."""

from __future__ import annotations

import struct

import pytest

from ikev2lib import Message as TopLevelMessage
from ikev2lib.exceptions import (
    InvalidMajorVersion,
    LocalProtocolError,
    ParseError,
    RemoteProtocolError,
    UnsupportedCriticalPayload,
)
from ikev2lib.wire import (
    SA,
    Encrypted,
    EncryptedFragment,
    ExchangeType,
    IDi,
    Message,
    Nonce,
    Notify,
    NotifyType,
    PayloadType,
    UnknownPayload,
    VendorID,
    parse_payloads,
    serialize_payloads,
)
from ikev2lib.wire.limits import MAX_PAYLOADS

from .samples import SPI_I, SPI_R, every_payload_message, ike_auth_fragment, ike_auth_inner, ike_sa_init_request


def header(next_payload: int, length: int, *, version: int = 0x20, exchange: int = 34, flags: int = 0x08,
           message_id: int = 0) -> bytes:
    return SPI_I + SPI_R + struct.pack(">BBBBII", next_payload, version, exchange, flags, message_id, length)


def test_top_level_export() -> None:
    assert TopLevelMessage is Message


def test_sample_messages_round_trip_byte_exact() -> None:
    for msg in (ike_sa_init_request(), every_payload_message(), ike_auth_fragment()):
        data = msg.serialize()
        parsed = Message.parse(data)
        assert parsed == msg
        assert parsed.serialize() == data


def test_ike_sa_init_request_shape() -> None:
    data = ike_sa_init_request().serialize()
    assert 400 <= len(data) <= 500
    msg = Message.parse(data)
    sa = msg.find(SA)
    assert sa is not None and [len(p.transforms) for p in sa.proposals] == [14, 14]
    assert msg.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    assert msg.notify(NotifyType.COOKIE) is None
    assert len(msg.find_all(Notify)) == 4


def test_header_fields_and_flags() -> None:
    body = b"\x00\x00\x00\x14" + bytes(16)
    data = header(40, 48, flags=0x20 | 0x08 | 0x10 | 0x01, exchange=37, message_id=7, version=0x21) + body
    msg = Message.parse(data)
    assert (msg.is_initiator, msg.is_response) == (True, True)
    assert msg.flags_extra == 0x11  # Version bit and a reserved bit kept as received
    assert msg.exchange_type is ExchangeType.INFORMATIONAL and msg.message_id == 7
    assert msg.minor_version == 1
    assert msg.serialize() == data
    hdr = Message.parse_header(data)
    assert (hdr.spi_i, hdr.spi_r, hdr.next_payload, hdr.length) == (SPI_I, SPI_R, PayloadType.NONCE, 48)
    assert hdr.is_initiator and hdr.is_response


def test_unknown_exchange_type_stays_int() -> None:
    msg = Message(SPI_I, SPI_R, 240, 1, [])
    parsed = Message.parse(msg.serialize())
    assert parsed.exchange_type == 240 and type(parsed.exchange_type) is int


def test_intermediate_and_followup_exchange_numbers() -> None:
    assert ExchangeType.IKE_INTERMEDIATE == 43 and ExchangeType.IKE_FOLLOWUP_KE == 44


@pytest.mark.parametrize("version", [0x10, 0x30, 0xF0, 0x00])
def test_major_version_other_than_2_is_invalid_major_version(version: int) -> None:
    data = header(0, 28, version=version)
    with pytest.raises(InvalidMajorVersion) as info:
        Message.parse(data)
    assert info.value.notify == NotifyType.INVALID_MAJOR_VERSION
    assert info.value.major_version == version >> 4
    assert isinstance(info.value, ParseError) and isinstance(info.value, ValueError)
    # parse_header still works so that a responder can answer with the SPIs.
    assert Message.parse_header(data).major_version == version >> 4


@pytest.mark.parametrize("length", [0, 27, 29, 0xFFFFFFFF])
def test_length_field_must_match_datagram(length: int) -> None:
    with pytest.raises(ParseError) as info:
        Message.parse(header(0, length))
    assert info.value.offset == 24


def test_short_datagrams() -> None:
    for size in range(28):
        with pytest.raises(ParseError):
            Message.parse(bytes(size))
        with pytest.raises(ParseError):
            Message.parse_header(bytes(size))


def test_chain_errors_carry_offsets() -> None:
    good = Message(SPI_I, SPI_R, 37, 0, [VendorID(b"ab"), VendorID(b"cd")]).serialize()
    # Second payload's length set to 3 (below its own header).
    bad = bytearray(good)
    bad[28 + 6 + 2 : 28 + 6 + 4] = (3).to_bytes(2, "big")
    with pytest.raises(ParseError) as info:
        Message.parse(bytes(bad))
    assert info.value.offset == 34 and info.value.notify == NotifyType.INVALID_SYNTAX
    # Last payload announces a following payload that is not there.
    bad = bytearray(good)
    bad[34] = 43
    with pytest.raises(ParseError) as info:
        Message.parse(bytes(bad))
    assert info.value.offset == len(good)
    # Chain ends (next payload 0) before the data does.
    bad = bytearray(good)
    bad[28] = 0
    with pytest.raises(ParseError):
        Message.parse(bytes(bad))


def test_unknown_critical_payload_raises_unsupported_critical_payload() -> None:
    data = Message(SPI_I, SPI_R, 37, 0, [VendorID(b"x"), UnknownPayload(222, b"?", True)]).serialize()
    with pytest.raises(UnsupportedCriticalPayload) as info:
        Message.parse(data)
    assert info.value.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert info.value.payload_type == 222 and info.value.offset == 33
    # The same payload without the critical bit is skipped and kept.
    data = Message(SPI_I, SPI_R, 37, 0, [UnknownPayload(222, b"?", False)]).serialize()
    assert Message.parse(data).payloads == [UnknownPayload(222, b"?", False)]


def test_sk_is_last_and_names_the_first_inner_payload() -> None:
    inner_first, inner = serialize_payloads(ike_auth_inner())
    assert inner_first == PayloadType.IDi
    msg = Message(SPI_I, SPI_R, ExchangeType.IKE_AUTH, 1, [Encrypted(inner_first, b"IV" + inner + b"ICV")])
    data = msg.serialize()
    assert data[16] == PayloadType.SK and data[28] == PayloadType.IDi
    parsed = Message.parse(data)
    sk = parsed.payloads[0]
    assert isinstance(sk, Encrypted) and sk.first_payload_type is PayloadType.IDi
    # The "decrypted" body parses into the inner chain.
    assert parse_payloads(sk.first_payload_type, sk.data[2:-3]) == ike_auth_inner()
    with pytest.raises(LocalProtocolError):
        Message(SPI_I, SPI_R, 35, 1, [Encrypted(35, b"x"), Nonce(bytes(16))]).serialize()


def test_data_after_sk_is_rejected() -> None:
    data = bytearray(Message(SPI_I, SPI_R, 35, 1, [Encrypted(35, bytes(8))]).serialize())
    data[30:32] = (8).to_bytes(2, "big")  # SK now ends 4 octets before the message
    with pytest.raises(ParseError):
        Message.parse(bytes(data))


def test_skf_fragment_numbers() -> None:
    msg = ike_auth_fragment()
    assert Message.parse(msg.serialize()) == msg
    for number, total in ((0, 3), (4, 3), (1, 0)):
        bad = Message(SPI_I, SPI_R, 35, 1, [EncryptedFragment(0, number, total, b"x")]).serialize()
        with pytest.raises(ParseError):
            Message.parse(bad)


def test_encrypted_payload_not_allowed_in_inner_chain() -> None:
    _, chain = serialize_payloads([Encrypted(0, b"abc")])
    with pytest.raises(ParseError):
        parse_payloads(PayloadType.SK, chain)


def test_parse_payloads_base_offset() -> None:
    _, chain = serialize_payloads([VendorID(b"a"), UnknownPayload(250, b"", True)])
    with pytest.raises(UnsupportedCriticalPayload) as info:
        parse_payloads(PayloadType.VENDOR_ID, chain, base_offset=60)
    assert info.value.offset == 65
    with pytest.raises(ParseError) as info2:
        parse_payloads(PayloadType.VENDOR_ID, chain[:3], base_offset=60)
    assert info2.value.offset == 60 and "at byte 60" in str(info2.value)


def test_payload_count_limit() -> None:
    ok = Message(SPI_I, SPI_R, 37, 0, [VendorID(b"")] * MAX_PAYLOADS)
    assert len(Message.parse(ok.serialize()).payloads) == MAX_PAYLOADS
    with pytest.raises(LocalProtocolError):
        Message(SPI_I, SPI_R, 37, 0, [VendorID(b"")] * (MAX_PAYLOADS + 1)).serialize()
    # A hand-made chain of MAX_PAYLOADS + 1 empty payloads is refused by the parser.
    chain = b"".join(bytes([43, 0, 0, 4]) for _ in range(MAX_PAYLOADS)) + bytes([0, 0, 0, 4])
    with pytest.raises(ParseError):
        Message.parse(header(43, 28 + len(chain)) + chain)


def test_bytearray_and_memoryview_input() -> None:
    data = ike_sa_init_request().serialize()
    assert Message.parse(bytearray(data)) == Message.parse(memoryview(data)) == Message.parse(data)


def test_parse_errors_are_remote_protocol_errors() -> None:
    with pytest.raises(RemoteProtocolError):
        Message.parse(b"\x00" * 10)


def test_serialize_validates_header_fields() -> None:
    for msg in (
        Message(b"short", SPI_R, 34, 0, []),
        Message(SPI_I, SPI_R, 34, 1 << 32, []),
        Message(SPI_I, SPI_R, 300, 0, []),
        Message(SPI_I, SPI_R, 34, 0, [], major_version=16),
    ):
        with pytest.raises(LocalProtocolError):
            msg.serialize()


def test_repr_and_pretty_are_readable() -> None:
    msg = ike_sa_init_request()
    text = msg.pretty()
    assert "IKE_SA_INIT request from initiator" in text
    assert "NAT_DETECTION_SOURCE_IP" in text and "AES_GCM_16" in text and "CURVE25519" in text
    assert "Proposal(#2" in text
    assert "Message(IKE_SA_INIT request" in repr(msg)
    assert repr(IDi.from_value("moon.strongswan.org")) == "IDi(ID_FQDN, 'moon.strongswan.org')"
    assert repr(Notify(60000)) == "Notify(60000)"
