"""The SA payload and its substructures (RFC 7296 section 3.3): proposals, transforms, attributes.

Byte exactness: the Key Length attribute (type 14, TV form) is lifted into `Transform.key_length`
only when it is the transform's first attribute; every other attribute (a second Key Length, TLV
forms, unknown types) stays in `Transform.attributes` in wire order, so every accepted SA payload
serializes back to the same bytes. "Last Substruc" and "Num Transforms" are checked against the
lengths (they are redundant; a mismatch is INVALID_SYNTAX) and recomputed when serializing.
"""

from __future__ import annotations

import functools
import operator
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from ikev2lib.wire._base import Payload, check_body, fail, local_fail, name, short_hex
from ikev2lib.wire.enums import (
    PROTOCOL_LOOKUP,
    TRANSFORM_ID_LOOKUP,
    TRANSFORM_TYPE_LOOKUP,
    PayloadType,
    TransformAttributeType,
)
from ikev2lib.wire.limits import MAX_PROPOSALS, MAX_TRANSFORM_ATTRIBUTES, MAX_TRANSFORM_CACHE, MAX_TRANSFORMS

_PROPOSAL = struct.Struct(">BBHBBBB")  # last, reserved, length, number, protocol, SPI size, #transforms
_TRANSFORM = struct.Struct(">BBHBBH")  # last, reserved, length, type, reserved, transform ID
_TRANSFORM_KEYLEN = struct.Struct(">BBHBBHHH")  # the common 12-octet transform with a Key Length
_ATTR = struct.Struct(">HH")  # AF + type, value (TV) or length (TLV)
_LAST_PROPOSAL_MORE = 2  # "Last Substruc" values, RFC 7296 section 3.3.1
_LAST_TRANSFORM_MORE = 3
_AF_TV = 0x8000
_KEY_LENGTH_TV = _AF_TV | TransformAttributeType.KEY_LENGTH
_KEY_LENGTH_TV_BYTES = _KEY_LENGTH_TV.to_bytes(2, "big")
_CACHEABLE_TRANSFORM = 12
_GENERATION = MAX_TRANSFORM_CACHE // 2  # entries per generation of the transform cache


class _TransformCache:
    """Interning of decoded transforms: {octets after Last Substruc/RESERVED/Length: Transform}.
    Transforms are immutable, a peer population sends few distinct ones, and a dict hit costs far less
    than decoding; only <= 12-octet transforms are kept.

    Two generations bound it (at most MAX_TRANSFORM_CACHE entries) and let it evict: lookups go to
    `young`; a hit in `old` moves the entry back to `young`; when `young` is full it becomes `old` and
    the previous `old` is dropped. So a flood of distinct transforms only cycles the generations: what
    honest peers keep sending is found again (or promoted) in every cycle, and the hit path stays one
    dict lookup (an LRU would reorder on every hit). `SA._parse` does all of this inline; this class
    only holds the two generations.
    """

    __slots__ = ("young", "old")

    def __init__(self) -> None:
        self.young: dict[bytes, Transform] = {}
        self.old: dict[bytes, Transform] = {}

    def __len__(self) -> int:
        return len(self.young) + len(self.old)

    def clear(self) -> None:
        self.young = {}
        self.old = {}

    def rotate(self) -> dict[bytes, Transform]:
        """Make the full young generation the old one (dropping the previous); returns the new young."""
        self.old = self.young
        self.young = {}
        return self.young


_TRANSFORM_CACHE = _TransformCache()


class TransformAttribute(NamedTuple):
    """A transform attribute: an int `value` is sent in TV form (AF=1), bytes in TLV form."""

    attr_type: int
    value: int | bytes

    def __repr__(self) -> str:
        shown = self.value if isinstance(self.value, int) else short_hex(self.value)
        return f"TransformAttribute({self.attr_type}, {shown!r})"


class Transform(NamedTuple):
    """One transform. Immutable and hashable (a NamedTuple: cheap to build, usable in sets); the
    parser interns the common 8/12-octet transforms (see `_TransformCache`)."""

    transform_type: int
    transform_id: int
    key_length: int | None = None
    attributes: tuple[TransformAttribute, ...] = ()

    def __repr__(self) -> str:
        extra = "" if self.key_length is None else f", key_length={self.key_length}"
        if self.attributes:
            extra += f", attributes={self.attributes!r}"
        return f"Transform({name(self.transform_type)}, {name(self.transform_id)}{extra})"

    def _serialize(self, last: int) -> bytes:
        if not self.attributes:
            if self.key_length is None:
                return _TRANSFORM.pack(last, 0, 8, self.transform_type, 0, self.transform_id)
            return _TRANSFORM_KEYLEN.pack(
                last, 0, 12, self.transform_type, 0, self.transform_id, _KEY_LENGTH_TV, self.key_length
            )
        if len(self.attributes) > MAX_TRANSFORM_ATTRIBUTES:
            local_fail(f"more than {MAX_TRANSFORM_ATTRIBUTES} attributes in a transform")
        parts = [b""]
        if self.key_length is not None:
            parts.append(_ATTR.pack(_KEY_LENGTH_TV, self.key_length))
        for attr in self.attributes:
            if attr.attr_type > 0x7FFF:
                local_fail(f"transform attribute type {attr.attr_type} does not fit 15 bits")
            if isinstance(attr.value, int):
                parts.append(_ATTR.pack(_AF_TV | attr.attr_type, attr.value))
            else:
                parts.append(_ATTR.pack(attr.attr_type, len(attr.value)))
                parts.append(attr.value)
        attrs = b"".join(parts)
        length = 8 + len(attrs)
        if length > 0xFFFF:
            local_fail("transform too long")
        return _TRANSFORM.pack(last, 0, length, self.transform_type, 0, self.transform_id) + attrs


@dataclass(slots=True, repr=False)
class Proposal:
    number: int
    protocol_id: int
    spi: bytes = b""
    transforms: list[Transform] = field(default_factory=list)

    def __repr__(self) -> str:
        spi = f", spi={self.spi.hex()}" if self.spi else ""
        return f"Proposal(#{self.number}, {name(self.protocol_id)}{spi}, {self.transforms!r})"

    def transforms_of(self, transform_type: int) -> list[Transform]:
        return [t for t in self.transforms if t.transform_type == transform_type]

    def _serialize(self, last: int) -> bytes:
        transforms = self.transforms
        count = len(transforms)
        if count > MAX_TRANSFORMS:
            local_fail(f"more than {MAX_TRANSFORMS} transforms in a proposal")
        key = tuple(transforms)
        # only plain lists become cache keys: a parsed hostile proposal (many transforms, large TLV
        # attributes) being re-encoded must not stay in memory
        if count > _CACHEABLE_LIST or any(map(_ATTRIBUTES, key)):
            body = _transforms_wire.__wrapped__(key)
        else:
            try:
                body = _transforms_wire(key)
            except TypeError:  # unhashable parts (attributes as a list, bytearray values): encode uncached
                body = _transforms_wire.__wrapped__(key)
        length = 8 + len(self.spi) + len(body)
        if length > 0xFFFF or len(self.spi) > 0xFF:
            local_fail("proposal too long")
        return _PROPOSAL.pack(last, 0, length, self.number, self.protocol_id, len(self.spi), count) + self.spi + body


# Encoded transform lists kept: a configuration offers (and a negotiation answers) few distinct ones.
MAX_TRANSFORM_LIST_CACHE = 256
_CACHEABLE_LIST = 32  # longest transform list kept as a key there
_ATTRIBUTES = operator.itemgetter(3)  # Transform.attributes


@functools.lru_cache(maxsize=MAX_TRANSFORM_LIST_CACHE)
def _transforms_wire(transforms: tuple[Transform, ...]) -> bytes:
    """The transforms of one proposal on the wire (equal transforms encode alike, so the cache may)."""
    parts = [t._serialize(_LAST_TRANSFORM_MORE) for t in transforms[:-1]]
    if transforms:
        parts.append(transforms[-1]._serialize(0))
    return b"".join(parts)


def _parse_attributes(buf: bytes, pos: int, end: int) -> tuple[int | None, tuple[TransformAttribute, ...]]:
    key_length: int | None = None
    attrs: list[TransformAttribute] = []
    first = True
    while pos < end:
        if end - pos < 4:
            fail("truncated transform attribute", pos)
        if len(attrs) >= MAX_TRANSFORM_ATTRIBUTES:
            fail(f"more than {MAX_TRANSFORM_ATTRIBUTES} transform attributes", pos)
        atype, value = _ATTR.unpack_from(buf, pos)
        if atype & _AF_TV:
            if first and atype == _KEY_LENGTH_TV:
                key_length = value
            else:
                attrs.append(TransformAttribute(atype & 0x7FFF, value))
            pos += 4
        else:
            aend = pos + 4 + value
            if aend > end:
                fail("transform attribute length exceeds the transform", pos)
            attrs.append(TransformAttribute(atype, buf[pos + 4 : aend]))
            pos = aend
        first = False
    return key_length, tuple(attrs)


_new_transform = tuple.__new__  # NamedTuple construction without the Python-level __new__


def _parse_transform(buf: bytes, pos: int, end: int) -> Transform:
    """Decode one transform whose bounds were checked by the caller."""
    _, _, length, ttype, _, tid = _TRANSFORM.unpack_from(buf, pos)
    ids = TRANSFORM_ID_LOOKUP.get(ttype)
    if ids is not None:
        tid = ids.get(tid, tid)
    kind = TRANSFORM_TYPE_LOOKUP.get(ttype, ttype)
    if length == 8:
        return _new_transform(Transform, (kind, tid, None, ()))
    if length == 12 and buf[pos + 8 : pos + 10] == _KEY_LENGTH_TV_BYTES:
        return _new_transform(Transform, (kind, tid, (buf[pos + 10] << 8) | buf[pos + 11], ()))
    key_length, attrs = _parse_attributes(buf, pos + 8, end)
    return _new_transform(Transform, (kind, tid, key_length, attrs))


@dataclass(slots=True, repr=False)
class SA(Payload):
    payload_type = PayloadType.SA
    proposals: list[Proposal] = field(default_factory=list)
    critical: bool = field(default=False, kw_only=True)

    def __repr__(self) -> str:
        return f"SA({self.proposals!r})"

    def pretty_lines(self) -> list[str]:
        return ["SA"] + [f"  {p!r}" for p in self.proposals]

    def _body(self) -> bytes:
        proposals = self.proposals
        if len(proposals) > MAX_PROPOSALS:
            local_fail(f"more than {MAX_PROPOSALS} proposals in an SA payload")
        parts = [p._serialize(_LAST_PROPOSAL_MORE) for p in proposals[:-1]]
        if proposals:
            parts.append(proposals[-1]._serialize(0))
        return check_body(b"".join(parts), "SA")

    @classmethod
    def _parse(cls, buf: bytes, pos: int, end: int, critical: bool) -> SA:
        if pos == end:
            fail("SA payload without proposals", pos)
        proposals: list[Proposal] = []
        ptype = PROTOCOL_LOOKUP.get
        cache = _TRANSFORM_CACHE
        young = cache.young
        cache_get, old_pop = young.get, cache.old.pop
        tid_maps = TRANSFORM_ID_LOOKUP
        ttype_get = TRANSFORM_TYPE_LOOKUP.get
        new_transform = _new_transform
        while pos < end:
            if len(proposals) >= MAX_PROPOSALS:
                fail(f"more than {MAX_PROPOSALS} proposals", pos)
            if end - pos < 8:
                fail("truncated proposal", pos)
            last, _, plen, number, protocol, spi_size, count = _PROPOSAL.unpack_from(buf, pos)
            pend = pos + plen
            if plen < 8 + spi_size or pend > end:
                fail(f"bad proposal length {plen}", pos)
            if last != (0 if pend == end else _LAST_PROPOSAL_MORE):
                fail(f"proposal 'last substruc' {last} does not match its position", pos)
            tpos = pos + 8 + spi_size
            spi = buf[pos + 8 : tpos]
            transforms: list[Transform] = []
            append = transforms.append
            seen = 0
            while tpos < pend:
                if seen == count:
                    fail("more transforms than the proposal announces", tpos)
                if pend - tpos < 8:
                    fail("truncated transform", tpos)
                tlen = (buf[tpos + 2] << 8) | buf[tpos + 3]
                tend = tpos + tlen
                if tlen < 8 or tend > pend:
                    fail(f"bad transform length {tlen}", tpos)
                if buf[tpos] != (0 if tend == pend else _LAST_TRANSFORM_MORE):
                    fail(f"transform 'last substruc' {buf[tpos]} does not match its position", tpos)
                key = buf[tpos + 4 : tend]
                transform = cache_get(key)
                if transform is None:
                    cacheable = tlen <= _CACHEABLE_TRANSFORM
                    if cacheable:
                        transform = old_pop(key, None)  # a hit in the old generation moves to the young one
                    if transform is None:
                        if tlen == 8:  # no attributes: decoded inline (the most common transform)
                            kind = buf[tpos + 4]
                            tid = (buf[tpos + 6] << 8) | buf[tpos + 7]
                            ids = tid_maps.get(kind)
                            transform = new_transform(
                                Transform,
                                (ttype_get(kind, kind), ids.get(tid, tid) if ids is not None else tid, None, ()),
                            )
                        else:
                            transform = _parse_transform(buf, tpos, tend)
                    if cacheable:
                        if len(young) >= _GENERATION:
                            young = cache.rotate()
                            cache_get, old_pop = young.get, cache.old.pop
                        young[key] = transform
                append(transform)
                seen += 1
                tpos = tend
            if seen != count:
                fail(f"proposal announces {count} transforms but holds {len(transforms)}", pos)
            proposals.append(Proposal(number, ptype(protocol, protocol), spi, transforms))
            pos = pend
        return cls(proposals, critical=critical)
