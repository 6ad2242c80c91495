"""The two error families of ikev2lib.

`RemoteProtocolError`: the peer sent something invalid. It carries the Notify type a responder should
answer with (`notify`, a class attribute that instances may override). The receive path of every
parser and of the engine raises only this family; anything else escaping is a bug (the fuzz invariant).

`LocalProtocolError`: the caller misused the API (bad configuration, a call in the wrong state).
"""

from __future__ import annotations


def _rebuild(cls: type[BaseException], args: tuple[object, ...]) -> BaseException:
    error = cls.__new__(cls)
    error.args = args
    return error


class IKEv2Error(Exception):
    """Base of every exception ikev2lib raises on purpose."""


class LocalProtocolError(IKEv2Error):
    """The caller asked for something invalid (configuration, API misuse)."""


class RemoteProtocolError(IKEv2Error, ValueError):
    """The peer's data is invalid. `notify` is the Notify message type to answer with, `data` the
    notification data that goes with it (INVALID_KE_PAYLOAD carries the group we want)."""

    notify: int = 7  # INVALID_SYNTAX (RFC 7296 section 3.10.1)
    data: bytes = b""

    def __init__(self, message: str, *, notify: int | None = None, data: bytes = b"") -> None:
        super().__init__(message)
        if notify is not None:
            self.notify = notify
        if data:
            self.data = bytes(data)


class PeerNotifyError(RemoteProtocolError):
    """The peer answered one of our requests with an error Notify (`notify` is what it sent)."""


class ParseError(RemoteProtocolError):
    """A datagram or payload could not be decoded. `offset` is the byte offset of the fault."""

    def __init__(self, message: str, offset: int, *, notify: int | None = None) -> None:
        super().__init__(f"{message} (at byte {offset})", notify=notify)
        self.offset = offset

    def __reduce__(self) -> str | tuple[object, ...]:
        # args hold only the formatted text; rebuild without __init__ so the error pickles (worker pools)
        return (_rebuild, (type(self), self.args), self.__dict__)


class UnsupportedCriticalPayload(ParseError):
    """An unknown payload type had its critical bit set (RFC 7296 section 2.5)."""

    notify = 1  # UNSUPPORTED_CRITICAL_PAYLOAD

    def __init__(self, payload_type: int, offset: int) -> None:
        super().__init__(f"unsupported critical payload type {payload_type}", offset)
        self.payload_type = payload_type


class IntegrityError(RemoteProtocolError):
    """Authentication of protected data failed (ICV/tag mismatch). No plaintext is ever returned."""


class InvalidMajorVersion(ParseError):
    """The IKE header's major version is not 2 (RFC 7296 section 2.5): answer INVALID_MAJOR_VERSION."""

    notify = 5  # INVALID_MAJOR_VERSION

    def __init__(self, major_version: int, offset: int) -> None:
        super().__init__(f"unsupported IKE major version {major_version}", offset)
        self.major_version = major_version
