"""Property tests: generated messages round-trip; hostile bytes raise only ParseError."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikev2lib.exceptions import ParseError
from ikev2lib.wire import Message, Payload, parse_payloads, serialize_payloads

from .samples import every_payload_message, ike_auth_fragment, ike_sa_init_request
from .strategies import messages, plain_payloads

# No deadline: tests must not depend on timing (the machine is shared); bounds come from the design.
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Built samples plus real strongSwan datagrams (IKE_SA_INIT with the INVALID_KE/COOKIE variants, SK, SKF).
_CORPUS = Path(__file__).parent / "corpus" / "strongswan"
SEEDS = [ike_sa_init_request().serialize(), every_payload_message().serialize(), ike_auth_fragment().serialize()]
SEEDS += [path.read_bytes() for path in sorted(_CORPUS.glob("*.bin"))[:: 4]]


def parse_or_parse_error(data: bytes) -> Message | None:
    """Parse hostile bytes: a ParseError is fine; any other exception fails the test. A message that
    parses must re-serialize to bytes that parse to the same message."""
    try:
        msg = Message.parse(data)
    except ParseError as exc:
        assert 0 <= exc.offset <= len(data)  # the offset names a byte of (or the end of) the input
        assert exc.notify in (1, 5, 7)  # UNSUPPORTED_CRITICAL_PAYLOAD, INVALID_MAJOR_VERSION, INVALID_SYNTAX
        return None
    again = Message.parse(msg.serialize())
    assert again == msg
    return msg


@FAST
@given(messages())
def test_generated_messages_round_trip(msg: Message) -> None:
    data = msg.serialize()
    parsed = Message.parse(data)
    assert parsed == msg
    assert parsed.serialize() == data


@FAST
@given(st.lists(plain_payloads, max_size=10), st.integers(0, 1000))
def test_generated_inner_chains_round_trip(payloads: list[Payload], base: int) -> None:
    first, chain = serialize_payloads(payloads)
    parsed = parse_payloads(first, chain, base)
    assert parsed == payloads
    assert serialize_payloads(parsed) == (first, chain)


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes(data: bytes) -> None:
    parse_or_parse_error(data)


@FAST
@given(st.binary(max_size=400), st.integers(0, 255))
def test_arbitrary_bodies_behind_a_valid_header(body: bytes, first: int) -> None:
    data = SEEDS[0][:16] + bytes([first]) + SEEDS[0][17:24] + (28 + len(body)).to_bytes(4, "big") + body
    parse_or_parse_error(data)


@FAST
@given(st.sampled_from(SEEDS), st.data())
def test_truncations(seed: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(seed) - 1))
    truncated = seed[:cut]
    parse_or_parse_error(truncated)
    # With the header's length fixed up, the truncation hits the payload parsers instead.
    if cut >= 28:
        parse_or_parse_error(truncated[:24] + cut.to_bytes(4, "big") + truncated[28:])


@FAST
@given(st.sampled_from(SEEDS), st.data())
def test_bit_flips(seed: bytes, data: st.DataObject) -> None:
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] ^= 1 << data.draw(st.integers(0, 7))
    parse_or_parse_error(bytes(buf))


@FAST
@given(st.sampled_from(SEEDS), st.data())
def test_length_fields_set_to_edge_values(seed: bytes, data: st.DataObject) -> None:
    """Any 16-bit big-endian field (every payload/substructure length is one) set to 0, 1, 3, 4 or 0xFFFF."""
    buf = bytearray(seed)
    pos = data.draw(st.integers(28, len(buf) - 2))
    value = data.draw(st.sampled_from([0, 1, 3, 4, 8, 0xFFFF]))
    buf[pos : pos + 2] = value.to_bytes(2, "big")
    parse_or_parse_error(bytes(buf))


@FAST
@given(st.integers(0, 20000), st.integers(0, 255), st.integers(0, 255))
def test_long_payload_chains(count: int, payload_type: int, flags: int) -> None:
    chain = bytes([payload_type, flags, 0, 4]) * count
    data = SEEDS[0][:16] + bytes([payload_type]) + SEEDS[0][17:24] + (28 + len(chain)).to_bytes(4, "big") + chain
    parse_or_parse_error(data)


@FAST
@given(st.sampled_from(SEEDS), st.data())
def test_spliced_garbage(seed: bytes, data: st.DataObject) -> None:
    pos = data.draw(st.integers(28, len(seed)))
    junk = data.draw(st.binary(min_size=1, max_size=64))
    spliced = seed[:pos] + junk + seed[pos:]
    parse_or_parse_error(spliced[:24] + len(spliced).to_bytes(4, "big") + spliced[28:])


@FAST
@given(st.integers(0, 255), st.binary(max_size=400), st.integers(0, 100))
def test_arbitrary_inner_chains(first: int, data: bytes, base: int) -> None:
    try:
        payloads = parse_payloads(first, data, base)
    except ParseError as exc:
        assert base <= exc.offset <= base + len(data)
        return
    assert parse_payloads(*serialize_payloads(payloads)) == payloads
