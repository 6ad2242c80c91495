"""Realistic messages shared by the wire tests (deterministic: fixed SPIs, nonces and keys)."""

from __future__ import annotations

import hashlib

from ikev2lib.proposals import parse_proposals
from ikev2lib.wire import (
    EAP,
    KE,
    SA,
    Auth,
    AuthMethod,
    Cert,
    CertEncoding,
    CertReq,
    ConfigAttribute,
    ConfigAttributeType,
    Configuration,
    ConfigType,
    Delete,
    Encrypted,
    EncryptedFragment,
    ExchangeType,
    HashAlgorithm,
    IDi,
    IDr,
    KeyExchangeId,
    Message,
    Nonce,
    Notify,
    NotifyType,
    Payload,
    PayloadType,
    ProtocolId,
    TrafficSelector,
    TSi,
    TSr,
    UnknownPayload,
    VendorID,
)

SPI_I = bytes.fromhex("a1b2c3d4e5f60718")
SPI_R = bytes.fromhex("1122334455667788")
# strongSwan's default IKE proposal set of 5.9 is larger; this is the brief's "typical" request.
IKE_PROPOSALS = (
    "aes128gcm16-aes256gcm16-chacha20poly1305-prfsha256-prfsha384-prfsha512"
    "-x25519-ecp256-ecp384-modp2048-x448-ecp521-mlkem768-modp3072,"
    "aes128-aes256-sha256-sha384-sha512-prfsha256-prfsha384-prfsha512"
    "-x25519-ecp256-ecp384-modp2048-modp3072-ecp521"
)


def fake(label: str, size: int) -> bytes:
    """Deterministic filler bytes (SHA-256 stream) for keys, nonces, ciphertext."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}:{counter}".encode()).digest()
        counter += 1
    return out[:size]


def ike_sa_init_request() -> Message:
    """IKE_SA_INIT request: SA (2 proposals, 28 transforms), KE x25519, Ni, NAT-D x2, fragmentation, RFC 7427."""
    return Message(
        SPI_I,
        bytes(8),
        ExchangeType.IKE_SA_INIT,
        0,
        [
            SA(parse_proposals(IKE_PROPOSALS, ProtocolId.IKE)),
            KE(KeyExchangeId.CURVE25519, fake("ke", 32)),
            Nonce(fake("ni", 32)),
            Notify(NotifyType.NAT_DETECTION_SOURCE_IP, fake("natd-src", 20)),
            Notify(NotifyType.NAT_DETECTION_DESTINATION_IP, fake("natd-dst", 20)),
            Notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED),
            Notify.signature_hash_algorithms(
                [HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512, HashAlgorithm.IDENTITY]
            ),
        ],
    )


def ike_auth_inner() -> list[Payload]:
    """The decrypted body of an IKE_AUTH request: IDi, AUTH, SA (ESP), TSi, TSr and notifies."""
    return [
        IDi.from_value("moon.strongswan.org"),
        Notify(NotifyType.INITIAL_CONTACT),
        IDr.from_value("sun.strongswan.org"),
        Auth(AuthMethod.SHARED_KEY_MIC, fake("auth", 32)),
        Configuration(ConfigType.CFG_REQUEST, [ConfigAttribute(ConfigAttributeType.INTERNAL_IP4_ADDRESS)]),
        SA(parse_proposals("aes128gcm16-aes256gcm16,aes128-sha256-modp2048", ProtocolId.ESP, spi=fake("spi", 4))),
        TSi([TrafficSelector.from_network("10.1.0.0/16"), TrafficSelector.from_network("2001:db8:1::/48")]),
        TSr([TrafficSelector.from_network("10.2.0.0/16", ip_protocol=17, start_port=500, end_port=500)]),
        Notify(NotifyType.MOBIKE_SUPPORTED),
        Notify(NotifyType.NO_ADDITIONAL_ADDRESSES),
        Notify(NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED),
    ]


def every_payload_message() -> Message:
    """A (semantically meaningless) message holding every decoded payload class at least once."""
    payloads: list[Payload] = list(ike_sa_init_request().payloads)
    payloads += ike_auth_inner()
    payloads += [
        Cert(CertEncoding.X509_SIGNATURE, fake("cert", 300)),
        CertReq(CertEncoding.X509_SIGNATURE, fake("certreq", 40)),
        Delete(ProtocolId.ESP, [fake("d1", 4), fake("d2", 4)]),
        Delete(ProtocolId.IKE, []),
        VendorID(fake("vid", 16)),
        EAP(bytes([2, 7, 0, 9, 1]) + b"user"),
        Notify(NotifyType.REKEY_SA, b"", ProtocolId.ESP, fake("rekey", 4)),
        Notify(40000, b"private use", critical=True),
        UnknownPayload(200, b"opaque", False),
        Encrypted(PayloadType.IDi, fake("sk", 80)),
    ]
    return Message(SPI_I, SPI_R, ExchangeType.IKE_AUTH, 1, payloads)


def ike_auth_fragment() -> Message:
    return Message(
        SPI_I,
        SPI_R,
        ExchangeType.IKE_AUTH,
        1,
        [EncryptedFragment(PayloadType.IDi, 1, 3, fake("skf", 120))],
    )
