"""Per-packet status codes of the ESP data plane and the typed exceptions they map to.

`Status` values are shared with the C core (`_esp_fast/esp_core.h`, `enum esp_status`): batch calls report
one status per packet, single-packet calls raise the matching exception. Errors caused by the peer's
packet derive from `RemoteProtocolError`; errors caused by the caller (wrong direction, buffer too small,
sequence space or lifetime exhausted) derive from `LocalProtocolError`.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NoReturn

from ikev2lib.exceptions import IKEv2Error, IntegrityError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "Status",
    "EspError",
    "EspAuthenticationError",
    "EspReplayError",
    "EspOutsideWindowError",
    "EspMalformedError",
    "EspPaddingError",
    "EspUnknownSpiError",
    "EspNotEspError",
    "EspDummyPacket",
    "EspLifetimeExpiredError",
    "SequenceOverflowError",
    "EspBufferTooSmallError",
    "EspUsageError",
    "EspCryptoError",
]  # raise_for_status is for the back ends only


class Status(IntEnum):
    """Outcome of processing one packet (mirrors `enum esp_status` in esp_core.h; tests/esp/test_constants.py
    proves the copies equal)."""

    OK = 0
    AUTH_FAILED = 1
    REPLAYED = 2
    OUTSIDE_WINDOW = 3
    MALFORMED = 4
    BAD_PADDING = 5
    UNKNOWN_SPI = 6
    NOT_ESP = 7
    DUMMY = 8
    HARD_EXPIRED = 9
    SEQUENCE_OVERFLOW = 10
    BUFFER_TOO_SMALL = 11
    INVALID = 12
    CRYPTO_FAILURE = 13


class EspError(IKEv2Error):
    """Base of every ESP data-plane error. `status` is the matching per-packet `Status`."""

    status: Status = Status.INVALID


class EspAuthenticationError(EspError, IntegrityError):
    """The ICV did not verify (like pyca's InvalidTag). No plaintext is returned or left behind."""

    status = Status.AUTH_FAILED


class EspReplayError(EspError, RemoteProtocolError):
    """The sequence number was already received (anti-replay, RFC 4303 section 3.4.3)."""

    status = Status.REPLAYED


class EspOutsideWindowError(EspReplayError):
    """The sequence number lies left of the replay window (too old), or is zero."""

    status = Status.OUTSIDE_WINDOW


class EspMalformedError(EspError, RemoteProtocolError):
    """Truncated or oversized packet, bad next header, or a tunnel-mode inner packet that is not IP."""

    status = Status.MALFORMED


class EspPaddingError(EspMalformedError):
    """Pad length or the monotonic pad bytes 1, 2, 3... are wrong (RFC 4303 section 2.4)."""

    status = Status.BAD_PADDING


class EspUnknownSpiError(EspError, RemoteProtocolError):
    """The packet's SPI does not belong to this SA (or to any SA of the table)."""

    status = Status.UNKNOWN_SPI


class EspNotEspError(EspError, RemoteProtocolError):
    """A UDP/4500 datagram that is IKE (non-ESP marker) or a NAT keepalive, not ESP (RFC 3948)."""

    status = Status.NOT_ESP


class EspDummyPacket(EspError):
    """An authentic dummy packet (next header 59, RFC 4303 section 2.6): discard it silently."""

    status = Status.DUMMY


class EspLifetimeExpiredError(EspError, LocalProtocolError):
    """The SA reached its hard lifetime (packets or bytes) and refuses traffic; rekey before that."""

    status = Status.HARD_EXPIRED


class SequenceOverflowError(EspError, LocalProtocolError):
    """The outbound sequence number would wrap (2^32-1 without ESN, 2^64-1 with): rekey the SA."""

    status = Status.SEQUENCE_OVERFLOW


class EspBufferTooSmallError(EspError, LocalProtocolError):
    """The caller's output buffer cannot hold the result."""

    status = Status.BUFFER_TOO_SMALL


class EspUsageError(EspError, LocalProtocolError):
    """The call does not fit the SA (wrong direction, bad argument, oversized input, bad config)."""

    status = Status.INVALID


class EspCryptoError(EspError):
    """The crypto library reported an internal failure (the OpenSSL error queue has been cleared)."""

    status = Status.CRYPTO_FAILURE


_BY_STATUS: dict[int, type[EspError]] = {
    cls.status: cls
    for cls in (
        EspAuthenticationError,
        EspReplayError,
        EspOutsideWindowError,
        EspMalformedError,
        EspPaddingError,
        EspUnknownSpiError,
        EspNotEspError,
        EspDummyPacket,
        EspLifetimeExpiredError,
        SequenceOverflowError,
        EspBufferTooSmallError,
        EspUsageError,
        EspCryptoError,
    )
}

_MESSAGES: dict[int, str] = {
    Status.AUTH_FAILED: "ESP ICV verification failed",
    Status.REPLAYED: "ESP sequence number replayed",
    Status.OUTSIDE_WINDOW: "ESP sequence number outside the replay window",
    Status.MALFORMED: "malformed ESP packet",
    Status.BAD_PADDING: "bad ESP padding",
    Status.UNKNOWN_SPI: "unknown SPI",
    Status.NOT_ESP: "UDP datagram is not ESP (IKE or NAT keepalive)",
    Status.DUMMY: "dummy ESP packet (next header 59)",
    Status.HARD_EXPIRED: "SA hard lifetime expired",
    Status.SEQUENCE_OVERFLOW: "outbound sequence number space exhausted",
    Status.BUFFER_TOO_SMALL: "output buffer too small",
    Status.INVALID: "invalid use of the SA",
    Status.CRYPTO_FAILURE: "crypto library failure",
}


def raise_for_status(status: int, detail: str = "") -> NoReturn:
    """Raise the exception for a non-OK status (`detail` is appended to the message)."""
    cls = _BY_STATUS.get(status, EspCryptoError)
    message = _MESSAGES.get(status, f"ESP status {status}")
    raise cls(f"{message}: {detail}" if detail else message)
