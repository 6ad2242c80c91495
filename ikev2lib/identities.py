"""Identities as IKE carries them (RFC 7296 3.5): configured strings against IDi/IDr payloads."""

from __future__ import annotations

import functools

from .wire import IDi, IDr

__all__ = ["id_body", "id_matches", "own_id"]

IDENTITY_CACHE = 1024  # configured identity strings kept parsed


def id_body(payload: IDi | IDr) -> bytes:
    """"RestOfInitIDPayload" (RFC 7296 2.15): ID type, three reserved octets, identification data."""
    return bytes((int(payload.id_type), 0, 0, 0)) + bytes(payload.data)


@functools.lru_cache(maxsize=IDENTITY_CACHE)
def _id_wire(text: str) -> tuple[int, bytes]:
    """(ID type, data) of a configured identity string (parsed once)."""
    payload = IDi.from_value(text)
    return int(payload.id_type), bytes(payload.data)


def id_matches(payload: IDi | IDr, expected: str) -> bool:
    return (int(payload.id_type), bytes(payload.data)) == _id_wire(expected)


def own_id(kind: type[IDi] | type[IDr], text: str) -> IDi | IDr:
    id_type, data = _id_wire(text)
    return kind(id_type, data)
