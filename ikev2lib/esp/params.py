"""SA parameters shared by both back ends: algorithm keywords, validation, lifetimes, statistics.

Both back ends build their SAs from the same validated `SAConfig`, so a configuration is accepted or
refused identically whichever back end runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Mapping, NamedTuple

from ikev2lib.esp.errors import EspUsageError, Status

__all__ = [
    "ALG_AES_GCM",
    "ALG_CHACHA20_POLY1305",
    "ALG_AES_CBC_HMAC_SHA1",
    "ALG_AES_CBC_HMAC_SHA256",
    "ALG_AES_CBC_HMAC_SHA384",
    "ALG_AES_CBC_HMAC_SHA512",
    "CBC_ALGS",
    "ALGORITHMS",
    "DEFAULT_REPLAY_WINDOW",
    "MAX_REPLAY_WINDOW",
    "MAX_PACKET",
    "MAX_TFC_PADDING",
    "SALT_LEN",
    "Direction",
    "Mode",
    "Lifetime",
    "LifetimeState",
    "EspStats",
    "SAConfig",
    "make_config",
]

ALG_AES_GCM = 1  # values of `enum esp_alg` in esp_core.h (tests/esp/test_constants.py checks every copy)
ALG_CHACHA20_POLY1305 = 2
ALG_AES_CBC_HMAC_SHA1 = 3  # AES-CBC (RFC 3602) + HMAC-SHA1-96 (RFC 2404)
ALG_AES_CBC_HMAC_SHA256 = 4  # AES-CBC + HMAC-SHA-256-128 (RFC 4868)
ALG_AES_CBC_HMAC_SHA384 = 5  # AES-CBC + HMAC-SHA-384-192
ALG_AES_CBC_HMAC_SHA512 = 6  # AES-CBC + HMAC-SHA-512-256
CBC_ALGS = frozenset({ALG_AES_CBC_HMAC_SHA1, ALG_AES_CBC_HMAC_SHA256, ALG_AES_CBC_HMAC_SHA384, ALG_AES_CBC_HMAC_SHA512})

SALT_LEN = 4  # KEYMAT salt for AES-GCM (RFC 4106 section 8.1) and ChaCha20-Poly1305 (RFC 7634 section 4)
DEFAULT_REPLAY_WINDOW = 1024  # packets; strongSwan's default is 32, Linux offloads often use 1024+
MAX_REPLAY_WINDOW = 1 << 20  # 1 Mi packets (a 256 KiB bitmap per SA): bounds memory per inbound SA
MAX_PACKET = 65535  # an ESP packet (with its UDP header, if any) must fit in one IP datagram
MAX_TFC_PADDING = 65535  # bounded by MAX_PACKET anyway
MIN_SPI = 256  # RFC 4303 section 2.1: 0 is local-only, 1..255 are reserved by IANA
MAX_SPI = 0xFFFFFFFF


@dataclass(frozen=True)
class _Alg:
    alg: int
    key_len: int
    icv_len: int
    integ_key_len: int = 0  # AES-CBC + HMAC only: HMAC key length (RFC 7296 2.17: after the cipher key)

    @property
    def keymat_len(self) -> int:
        """Bytes of KEYMAT one SA takes: cipher key || salt (AEAD) or cipher key || HMAC key (CBC)."""
        return self.key_len + (self.integ_key_len if self.integ_key_len else SALT_LEN)


def _algorithms() -> dict[str, _Alg]:
    table: dict[str, _Alg] = {}
    for bits in (128, 192, 256):
        for icv, aliases in ((8, ("8", "64")), (12, ("12", "96")), (16, ("16", "128", ""))):
            for suffix in aliases:  # strongSwan: aes128gcm16 == aes128gcm128 == aes128gcm
                table[f"aes{bits}gcm{suffix}"] = _Alg(ALG_AES_GCM, bits // 8, icv)
    table["chacha20poly1305"] = _Alg(ALG_CHACHA20_POLY1305, 32, 16)
    hmacs = (
        ("sha1", ALG_AES_CBC_HMAC_SHA1, 20, 12),
        ("sha256", ALG_AES_CBC_HMAC_SHA256, 32, 16),
        ("sha384", ALG_AES_CBC_HMAC_SHA384, 48, 24),
        ("sha512", ALG_AES_CBC_HMAC_SHA512, 64, 32),
    )
    for bits in (128, 192, 256):
        for name, alg, integ_len, icv in hmacs:  # strongSwan: aes256-sha256 == aes256-sha2_256
            table[f"aes{bits}-{name}"] = _Alg(alg, bits // 8, icv, integ_len)
            if name != "sha1":
                table[f"aes{bits}-sha2_{name[3:]}"] = _Alg(alg, bits // 8, icv, integ_len)
    return table


ALGORITHMS: Mapping[str, _Alg] = _algorithms()
"""strongSwan ESP keywords -> (algorithm, cipher key length, ICV length, HMAC key length or 0 for AEAD)."""


class Direction(str, Enum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Mode(str, Enum):
    TUNNEL = "tunnel"  # inner IPv4/IPv6 packet, next header 4/41 taken from it
    TRANSPORT = "transport"  # caller gives the next header


class LifetimeState(IntEnum):
    """Where the SA stands against its lifetimes: rekey on SOFT, the SA refuses traffic at HARD."""

    OK = 0
    SOFT = 1
    HARD = 2


@dataclass(frozen=True, kw_only=True)
class Lifetime:
    """Packet and byte (inner payload bytes) lifetimes of one SA; 0 means unlimited."""

    soft_packets: int = 0
    hard_packets: int = 0
    soft_bytes: int = 0
    hard_bytes: int = 0

    def state(self, packets: int, nbytes: int) -> LifetimeState:
        if (self.hard_packets and packets >= self.hard_packets) or (self.hard_bytes and nbytes >= self.hard_bytes):
            return LifetimeState.HARD
        if (self.soft_packets and packets >= self.soft_packets) or (self.soft_bytes and nbytes >= self.soft_bytes):
            return LifetimeState.SOFT
        return LifetimeState.OK


@dataclass(frozen=True)
class EspStats:
    """Counters of one SA: packets and inner bytes processed, and refused packets by reason."""

    packets: int
    bytes: int
    drops: Mapping[str, int] = field(default_factory=dict)


def stats_from_counts(packets: int, nbytes: int, drops: list[int]) -> EspStats:
    return EspStats(packets, nbytes, {Status(i).name.lower(): n for i, n in enumerate(drops) if i and n})


class SAConfig(NamedTuple):
    """A validated SA configuration (immutable; a tuple is built several times faster than a frozen
    dataclass, and four are built per handshake). `repr` hides the key material."""

    spi: int
    algorithm: str
    alg: int
    key: bytes  # cipher key without the salt
    salt: bytes  # AEAD: 4-byte KEYMAT salt; AES-CBC: empty
    icv_len: int
    direction: Direction
    mode: Mode
    esn: bool
    replay_window: int
    udp_encap: tuple[int, int] | None
    lifetime: Lifetime
    integ_key: bytes = b""  # AES-CBC + HMAC: the HMAC key; empty for AEAD

    @property
    def cbc(self) -> bool:
        return self.alg in CBC_ALGS

    @property
    def outbound(self) -> bool:
        return self.direction is Direction.OUTBOUND

    @property
    def tunnel(self) -> bool:
        return self.mode is Mode.TUNNEL

    def __repr__(self) -> str:
        return (
            f"SAConfig(spi=0x{self.spi:08x}, algorithm={self.algorithm!r}, direction={self.direction.value}, "
            f"mode={self.mode.value}, esn={self.esn}, replay_window={self.replay_window}, "
            f"udp_encap={self.udp_encap})"
        )


_DIRECTIONS = {d.value: d for d in Direction}
_MODES = {m.value: m for m in Mode}
_NO_LIFETIME = Lifetime()  # shared default (frozen): unlimited


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise EspUsageError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def make_config(
    spi: int,
    algorithm: str,
    key: bytes,
    direction: Direction | str,
    mode: Mode | str = Mode.TUNNEL,
    esn: bool = False,
    replay_window: int = DEFAULT_REPLAY_WINDOW,
    udp_encap: tuple[int, int] | None = None,
    lifetime: Lifetime | None = None,
) -> SAConfig:
    """Validate SA parameters. `key` is the KEYMAT slice for this SA: cipher key || 4-byte salt (AEAD) or
    cipher key || HMAC key (AES-CBC + HMAC, RFC 7296 section 2.17 order)."""
    _check_int("spi", spi, MIN_SPI, MAX_SPI)
    name = algorithm.lower() if isinstance(algorithm, str) else ""
    alg = ALGORITHMS.get(name)
    if alg is None:
        raise EspUsageError(f"unsupported ESP algorithm {algorithm!r} (supported: {', '.join(sorted(ALGORITHMS))})")
    if not isinstance(key, (bytes, bytearray, memoryview)):  # bytes(20) would be 20 zero bytes
        raise EspUsageError(f"key must be bytes-like, not {type(key).__name__}")
    key = bytes(key)
    if len(key) != alg.keymat_len:
        parts = "key || integrity key" if alg.integ_key_len else "key || salt"
        raise EspUsageError(f"{algorithm} needs {alg.keymat_len} bytes of key material ({parts})")
    try:
        # dict lookups first (str enums hash as their values); the Enum call reports bad values
        direction = _DIRECTIONS[direction] if direction in _DIRECTIONS else Direction(direction)
        mode = _MODES[mode] if mode in _MODES else Mode(mode)
    except (ValueError, TypeError) as exc:
        raise EspUsageError(str(exc)) from None
    _check_int("replay_window", replay_window, 0, MAX_REPLAY_WINDOW)
    if udp_encap is not None:
        if not isinstance(udp_encap, tuple) or len(udp_encap) != 2:
            raise EspUsageError("udp_encap must be a (source port, destination port) tuple")
        for port in udp_encap:
            _check_int("udp_encap port", port, 1, 65535)
    if lifetime is None:
        lifetime = _NO_LIFETIME  # valid by construction: nothing to check
    else:
        for name in ("soft_packets", "hard_packets", "soft_bytes", "hard_bytes"):
            _check_int(f"lifetime.{name}", getattr(lifetime, name), 0, 2**64 - 1)
    cut = alg.key_len
    salt, integ_key = (b"", key[cut:]) if alg.integ_key_len else (key[cut:], b"")
    return SAConfig(
        spi, name, alg.alg, key[:cut], salt, alg.icv_len, direction, mode, bool(esn), replay_window, udp_encap,
        lifetime, integ_key,
    )  # fmt: skip
