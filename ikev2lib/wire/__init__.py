"""The IKEv2 wire codec: IANA registries, header, one class per payload, message. No state, no crypto.

    msg = Message.parse(datagram)        # raises only ikev2lib.exceptions.ParseError (and subclasses)
    datagram == msg.serialize()          # byte-exact for every well-formed message

Decisions, documented where they apply:
- `message.py`: major version != 2 -> InvalidMajorVersion (notify INVALID_MAJOR_VERSION) before any
  payload is read; minor version and all non-I/R header flags are kept; Length must equal the input size.
- `payloads.py`: RESERVED fields are ignored on receipt and sent as zero, so byte exactness holds for
  every message whose sender zeroed them (as RFC 7296 requires); the critical bit is kept on every payload.
- `sa.py`: Key Length is `Transform.key_length` only when it is the first (TV) attribute, all other
  attributes stay in wire order; Last Substruc / Num Transforms must agree with the lengths.
  `Transform` is an immutable NamedTuple and common transforms are interned (bounded table).
- `chain.py`: iterative walk; SK/SKF end the outer chain and must be last; an unknown payload with the
  critical bit raises UnsupportedCriticalPayload, without it becomes UnknownPayload.
- `limits.py`: bounds on everything a peer controls.
"""

from ikev2lib.wire.chain import PAYLOAD_CLASSES, parse_payloads, serialize_payloads
from ikev2lib.wire.enums import (
    AuthMethod,
    CertEncoding,
    ConfigAttributeType,
    ConfigType,
    DhGroup,
    EncrId,
    EsnId,
    ExchangeType,
    HashAlgorithm,
    IdType,
    IntegId,
    KeyExchangeId,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformAttributeType,
    TransformType,
    TSType,
)
from ikev2lib.wire.message import Header, Message
from ikev2lib.wire.payloads import (
    EAP,
    KE,
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
    Nonce,
    Notify,
    UnknownPayload,
    VendorID,
)
from ikev2lib.wire._base import Payload
from ikev2lib.wire.sa import SA, Proposal, Transform, TransformAttribute
from ikev2lib.wire.ts import RawTrafficSelector, TrafficSelector, TSi, TSr

__all__ = [
    "PAYLOAD_CLASSES",
    "parse_payloads",
    "serialize_payloads",
    "AuthMethod",
    "CertEncoding",
    "ConfigAttributeType",
    "ConfigType",
    "DhGroup",
    "EncrId",
    "EsnId",
    "ExchangeType",
    "HashAlgorithm",
    "IdType",
    "IntegId",
    "KeyExchangeId",
    "NotifyType",
    "PayloadType",
    "PrfId",
    "ProtocolId",
    "TransformAttributeType",
    "TransformType",
    "TSType",
    "Header",
    "Message",
    "Payload",
    "EAP",
    "KE",
    "Auth",
    "Cert",
    "CertReq",
    "ConfigAttribute",
    "Configuration",
    "Delete",
    "Encrypted",
    "EncryptedFragment",
    "IDi",
    "IDr",
    "Nonce",
    "Notify",
    "UnknownPayload",
    "VendorID",
    "SA",
    "Proposal",
    "Transform",
    "TransformAttribute",
    "RawTrafficSelector",
    "TrafficSelector",
    "TSi",
    "TSr",
]
