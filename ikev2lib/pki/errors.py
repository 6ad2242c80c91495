"""Why a peer's certificate chain was refused.

`CertificateError` is a `RemoteProtocolError` (the peer's data is at fault) whose Notify is
AUTHENTICATION_FAILED (RFC 7296 section 2.21.2: a responder that cannot authenticate its peer answers
with it). `reason` says which check failed, for logs, counters and tests; the message says which
certificate (by position and subject) and what was wrong.
"""

from __future__ import annotations

from enum import Enum

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from ..exceptions import RemoteProtocolError
from ..wire.enums import NotifyType

__all__ = ["DECODE_ERRORS", "CertFailure", "CertificateError"]

# What `cryptography` raises on DER it cannot decode, found lazily when a field is first read (a
# duplicate extension, a name of an unknown type, an unknown version or key algorithm).
DECODE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    x509.InvalidVersion,
)


class CertFailure(Enum):
    NO_CERTIFICATE = "no_certificate"  # no X.509 CERT payload to verify a signature with
    MALFORMED = "malformed"  # not DER X.509, or an extension that does not decode
    TOO_LARGE = "too_large"  # a certificate, or the number of them, over the named limits
    UNTRUSTED = "untrusted"  # no path to a configured trust anchor
    BAD_SIGNATURE = "bad_signature"  # an issuer by name whose key did not make the signature
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REVOKED = "revoked"
    REVOCATION_UNKNOWN = "revocation_unknown"  # strict revocation and no usable CRL
    NOT_A_CA = "not_a_ca"  # an issuer without basicConstraints cA
    BAD_KEY_USAGE = "bad_key_usage"  # keyUsage or extendedKeyUsage forbids this use
    PATH_LEN_EXCEEDED = "path_len_exceeded"  # a CA's pathLenConstraint
    PATH_TOO_LONG = "path_too_long"  # our MAX_CHAIN_DEPTH
    UNSUPPORTED_CRITICAL_EXTENSION = "unsupported_critical_extension"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"  # key type, curve or signature algorithm
    WEAK_ALGORITHM = "weak_algorithm"  # RSA below MIN_RSA_BITS, MD5 or SHA-1 signatures
    IDENTITY_MISMATCH = "identity_mismatch"  # the IKE ID is not the certificate's


class CertificateError(RemoteProtocolError):
    """A peer's certificate chain failed validation; `reason` is the check that failed."""

    notify = int(NotifyType.AUTHENTICATION_FAILED)

    def __init__(self, reason: CertFailure, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.detail = message

    def __reduce__(self) -> str | tuple[object, ...]:
        # __init__ takes (reason, message), not the formatted args, so pickling needs the originals
        return (type(self), (self.reason, self.detail))
