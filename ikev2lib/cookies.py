"""Stateless IKE_SA_INIT cookies (RFC 7296 2.6).

Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>), with SHA-256 as the hash. The secret
rotates every COOKIE_SECRET_LIFETIME seconds (time comes from the caller); a cookie made with the
previous secret is still accepted, so a rotation never rejects an initiator that is mid-retry.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os

__all__ = ["CookieJar", "COOKIE_SECRET_LIFETIME", "COOKIE_SIZE"]

COOKIE_SECRET_LIFETIME = 120.0  # seconds a secret stays current (the previous one is kept as well)
_SECRET_SIZE = 32
_VERSION_SIZE = 4
COOKIE_SIZE = _VERSION_SIZE + 32  # version id + SHA-256; RFC 7296 allows 1..64 octets


class CookieJar:
    def __init__(self) -> None:
        self._version = int.from_bytes(os.urandom(_VERSION_SIZE), "big")
        self._secret = os.urandom(_SECRET_SIZE)
        self._previous: tuple[int, bytes] | None = None
        self._rotate_at: float | None = None

    def _maybe_rotate(self, now: float) -> None:
        if self._rotate_at is None:
            self._rotate_at = now + COOKIE_SECRET_LIFETIME
        elif now >= self._rotate_at:
            self._previous = (self._version, self._secret)
            self._version = (self._version + 1) & 0xFFFFFFFF
            self._secret = os.urandom(_SECRET_SIZE)
            self._rotate_at = now + COOKIE_SECRET_LIFETIME

    @staticmethod
    def _digest(secret: bytes, ni: bytes, ip: str, spi_i: bytes) -> bytes:
        try:
            packed = ipaddress.ip_address(ip).packed
        except ValueError:  # a driver handing us a non-IP address string
            packed = ip.encode("utf-8", "replace")
        return hashlib.sha256(ni + packed + spi_i + secret).digest()

    def make(self, ni: bytes, ip: str, spi_i: bytes, now: float) -> bytes:
        self._maybe_rotate(now)
        return self._version.to_bytes(_VERSION_SIZE, "big") + self._digest(self._secret, ni, ip, spi_i)

    def verify(self, cookie: bytes, ni: bytes, ip: str, spi_i: bytes, now: float) -> bool:
        self._maybe_rotate(now)
        if len(cookie) != COOKIE_SIZE:
            return False
        version = int.from_bytes(cookie[:_VERSION_SIZE], "big")
        candidates = [(self._version, self._secret)]
        if self._previous is not None:
            candidates.append(self._previous)
        for cand_version, secret in candidates:
            if cand_version == version:
                return hmac.compare_digest(cookie[_VERSION_SIZE:], self._digest(secret, ni, ip, spi_i))
        return False
