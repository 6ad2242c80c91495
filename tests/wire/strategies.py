"""Hypothesis strategies for every payload and for whole messages (valid by construction)."""

from __future__ import annotations

from hypothesis import strategies as st

from ikev2lib.wire import (
    EAP,
    KE,
    PAYLOAD_CLASSES,
    SA,
    Auth,
    Cert,
    CertReq,
    ConfigAttribute,
    Configuration,
    Delete,
    Encrypted,
    EncryptedFragment,
    IDi,
    IDr,
    Message,
    Nonce,
    Notify,
    Payload,
    Proposal,
    RawTrafficSelector,
    Transform,
    TransformAttribute,
    TrafficSelector,
    TSi,
    TSr,
    UnknownPayload,
    VendorID,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
small = st.binary(max_size=40)
critical = st.booleans()

attributes = st.builds(TransformAttribute, st.integers(0, 0x7FFF), st.one_of(u16, st.binary(max_size=12)))


@st.composite
def transforms(draw: st.DrawFn) -> Transform:
    key_length = draw(st.none() | u16)
    attrs = tuple(draw(st.lists(attributes, max_size=3)))
    if key_length is None and attrs and attrs[0].attr_type == 14 and isinstance(attrs[0].value, int):
        key_length, attrs = attrs[0].value, attrs[1:]  # the parser lifts a leading TV Key Length
    ttype = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 12]) | u8)
    return Transform(ttype, draw(u16), key_length, attrs)


proposals = st.builds(Proposal, u8, u8, st.binary(max_size=8), st.lists(transforms(), max_size=6))
selectors = st.one_of(
    st.builds(TrafficSelector, st.just(7), u8, u16, u16, st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4)),
    st.builds(TrafficSelector, st.just(8), u8, u16, u16, st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16)),
    st.builds(RawTrafficSelector, u8.filter(lambda t: t not in (7, 8)), small, u8),
)


@st.composite
def deletes(draw: st.DrawFn) -> Delete:
    size = draw(st.integers(0, 8))
    spis = [] if size == 0 else draw(st.lists(st.binary(min_size=size, max_size=size), min_size=1, max_size=5))
    return Delete(draw(u8), spis, critical=draw(critical))


@st.composite
def eaps(draw: st.DrawFn) -> EAP:
    rest = draw(st.binary(max_size=30))
    return EAP(bytes([draw(u8), draw(u8)]) + (len(rest) + 4).to_bytes(2, "big") + rest, critical=draw(critical))


unknown_types = u8.filter(lambda t: t != 0 and t not in PAYLOAD_CLASSES and t not in (46, 53))

plain_payloads: st.SearchStrategy[Payload] = st.one_of(
    st.builds(SA, st.lists(proposals, min_size=1, max_size=3), critical=critical),
    st.builds(KE, u16, small, critical=critical),
    st.builds(IDi, u8, small, critical=critical),
    st.builds(IDr, u8, small, critical=critical),
    st.builds(Cert, u8, small, critical=critical),
    st.builds(CertReq, u8, small, critical=critical),
    st.builds(Auth, u8, small, critical=critical),
    st.builds(Nonce, st.binary(min_size=16, max_size=64), critical=critical),
    st.builds(Notify, u16, small, u8, st.binary(max_size=8), critical=critical),
    deletes(),
    st.builds(VendorID, small, critical=critical),
    st.builds(TSi, st.lists(selectors, max_size=4), critical=critical),
    st.builds(TSr, st.lists(selectors, max_size=4), critical=critical),
    st.builds(Configuration, u8, st.lists(st.builds(ConfigAttribute, st.integers(0, 0x7FFF), small), max_size=4),
              critical=critical),
    eaps(),
    st.builds(UnknownPayload, unknown_types, small, st.just(False)),
)


@st.composite
def encrypted_tails(draw: st.DrawFn) -> Payload:
    if draw(st.booleans()):
        return Encrypted(draw(u8), draw(small), critical=draw(critical))
    total = draw(st.integers(1, 0xFFFF))
    return EncryptedFragment(draw(u8), draw(st.integers(1, total)), total, draw(small), critical=draw(critical))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    payloads = draw(st.lists(plain_payloads, max_size=8))
    if draw(st.booleans()):
        payloads.append(draw(encrypted_tails()))
    return Message(
        draw(st.binary(min_size=8, max_size=8)),
        draw(st.binary(min_size=8, max_size=8)),
        draw(u8),
        draw(u32),
        payloads,
        draw(st.booleans()),
        draw(st.booleans()),
        2,
        draw(st.integers(0, 15)),
        draw(st.sampled_from([0, 0x10, 0x01, 0x80, 0x97])),
    )
