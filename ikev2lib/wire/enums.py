"""IANA "Internet Key Exchange Version 2 (IKEv2) Parameters" registries as IntEnums.

Values come from RFC 7296 and the IANA registry (extensions: RFC 4555 MOBIKE, RFC 5685 redirect,
RFC 7383 fragmentation, RFC 7427 signature hashes, RFC 8784 PPK, RFC 9242 IKE_INTERMEDIATE,
RFC 9370 additional key exchanges, ML-KEM for IKEv2). The parser never converts unknown values
into enum members: they stay plain ints so that they round-trip. `*_LOOKUP` dicts map a known value
to its member; they are used on the hot path instead of calling the (slow) IntEnum constructor.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TypeVar

_E = TypeVar("_E", bound=IntEnum)


class ExchangeType(IntEnum):
    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37
    IKE_SESSION_RESUME = 38  # RFC 5723
    GSA_AUTH = 39  # RFC 9838 (G-IKEv2)
    GSA_REGISTRATION = 40
    GSA_REKEY = 41
    GSA_INBAND_REKEY = 42
    IKE_INTERMEDIATE = 43  # RFC 9242
    IKE_FOLLOWUP_KE = 44  # RFC 9370


class PayloadType(IntEnum):
    NONE = 0
    SA = 33
    KE = 34
    IDi = 35
    IDr = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40
    NOTIFY = 41
    DELETE = 42
    VENDOR_ID = 43
    TSi = 44
    TSr = 45
    SK = 46
    CP = 47
    EAP = 48
    GSPM = 49  # RFC 6467
    IDg = 50  # G-IKEv2
    GSA = 51
    KD = 52
    SKF = 53  # RFC 7383
    PS = 54  # RFC 8019 puzzle solution


class NotifyType(IntEnum):
    # Error types (0 - 16383): RFC 7296 section 3.10.1 and later additions.
    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    UNACCEPTABLE_ADDRESSES = 40  # RFC 4555
    UNEXPECTED_NAT_DETECTED = 41  # RFC 4555
    USE_ASSIGNED_HoA = 42  # RFC 5026
    TEMPORARY_FAILURE = 43
    CHILD_SA_NOT_FOUND = 44
    INVALID_GROUP_ID = 45  # G-IKEv2
    AUTHORIZATION_FAILED = 46  # G-IKEv2
    STATE_NOT_FOUND = 47  # RFC 9370
    TS_MAX_QUEUE = 48  # RFC 9611
    # Status types (16384 - 40959).
    INITIAL_CONTACT = 16384
    SET_WINDOW_SIZE = 16385
    ADDITIONAL_TS_POSSIBLE = 16386
    IPCOMP_SUPPORTED = 16387
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    HTTP_CERT_LOOKUP_SUPPORTED = 16392
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    NON_FIRST_FRAGMENTS_ALSO = 16395
    MOBIKE_SUPPORTED = 16396  # RFC 4555
    ADDITIONAL_IP4_ADDRESS = 16397
    ADDITIONAL_IP6_ADDRESS = 16398
    NO_ADDITIONAL_ADDRESSES = 16399
    UPDATE_SA_ADDRESSES = 16400
    COOKIE2 = 16401
    NO_NATS_ALLOWED = 16402
    AUTH_LIFETIME = 16403  # RFC 4478
    MULTIPLE_AUTH_SUPPORTED = 16404  # RFC 4739
    ANOTHER_AUTH_FOLLOWS = 16405
    REDIRECT_SUPPORTED = 16406  # RFC 5685
    REDIRECT = 16407
    REDIRECTED_FROM = 16408
    TICKET_LT_OPAQUE = 16409  # RFC 5723
    TICKET_REQUEST = 16410
    TICKET_ACK = 16411
    TICKET_NACK = 16412
    TICKET_OPAQUE = 16413
    LINK_ID = 16414
    USE_WESP_MODE = 16415
    ROHC_SUPPORTED = 16416
    EAP_ONLY_AUTHENTICATION = 16417  # RFC 5998
    CHILDLESS_IKEV2_SUPPORTED = 16418  # RFC 6023
    QUICK_CRASH_DETECTION = 16419
    IKEV2_MESSAGE_ID_SYNC_SUPPORTED = 16420  # RFC 6311
    IPSEC_REPLAY_COUNTER_SYNC_SUPPORTED = 16421
    IKEV2_MESSAGE_ID_SYNC = 16422
    IPSEC_REPLAY_COUNTER_SYNC = 16423
    SECURE_PASSWORD_METHODS = 16424
    PSK_PERSIST = 16425
    PSK_CONFIRM = 16426
    ERX_SUPPORTED = 16427
    IFOM_CAPABILITY = 16428
    SENDER_REQUEST_ID = 16429
    IKEV2_FRAGMENTATION_SUPPORTED = 16430  # RFC 7383
    SIGNATURE_HASH_ALGORITHMS = 16431  # RFC 7427
    CLONE_IKE_SA_SUPPORTED = 16432
    CLONE_IKE_SA = 16433
    PUZZLE = 16434  # RFC 8019
    USE_PPK = 16435  # RFC 8784
    PPK_IDENTITY = 16436
    NO_PPK_AUTH = 16437
    INTERMEDIATE_EXCHANGE_SUPPORTED = 16438  # RFC 9242
    IP4_ALLOWED = 16439  # RFC 8983
    IP6_ALLOWED = 16440
    ADDITIONAL_KEY_EXCHANGE = 16441  # RFC 9370
    USE_AGGFRAG = 16442  # RFC 9347
    SUPPORTED_AUTH_METHODS = 16443  # RFC 9593
    SA_RESOURCE_INFO = 16444  # RFC 9611
    USE_PPK_INT = 16445  # RFC 9867
    PPK_IDENTITY_KEY = 16446
    IKE_SA_INIT_FULL_TRANSCRIPT_AUTH = 16447  # draft-ietf-ipsecme-ikev2-downgrade-prevention


class ProtocolId(IntEnum):
    IKE = 1
    AH = 2
    ESP = 3
    FC_ESP_HEADER = 4
    FC_CT_AUTHENTICATION = 5


class TransformType(IntEnum):
    ENCR = 1
    PRF = 2
    INTEG = 3
    KE = 4  # "Key Exchange Method", formerly D-H group (RFC 9370)
    ESN = 5  # "Sequence Numbers"
    ADDKE1 = 6  # RFC 9370 additional key exchanges 1..7
    ADDKE2 = 7
    ADDKE3 = 8
    ADDKE4 = 9
    ADDKE5 = 10
    ADDKE6 = 11
    ADDKE7 = 12


class EncrId(IntEnum):
    DES_IV64 = 1
    DES = 2
    TRIPLE_DES = 3
    RC5 = 4
    IDEA = 5
    CAST = 6
    BLOWFISH = 7
    THREE_IDEA = 8
    DES_IV32 = 9
    NULL = 11
    AES_CBC = 12
    AES_CTR = 13
    AES_CCM_8 = 14
    AES_CCM_12 = 15
    AES_CCM_16 = 16
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20
    NULL_AUTH_AES_GMAC = 21
    CAMELLIA_CBC = 23
    CAMELLIA_CTR = 24
    CAMELLIA_CCM_8 = 25
    CAMELLIA_CCM_12 = 26
    CAMELLIA_CCM_16 = 27
    CHACHA20_POLY1305 = 28  # RFC 7634
    AES_CCM_8_IIV = 29  # RFC 8750
    AES_GCM_16_IIV = 30
    CHACHA20_POLY1305_IIV = 31
    KUZNYECHIK_MGM_KTREE = 32  # RFC 9227
    MAGMA_MGM_KTREE = 33
    KUZNYECHIK_MGM_MAC_KTREE = 34
    MAGMA_MGM_MAC_KTREE = 35


class PrfId(IntEnum):
    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    HMAC_TIGER = 3
    AES128_XCBC = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7
    AES128_CMAC = 8
    HMAC_STREEBOG_512 = 9


class IntegId(IntEnum):
    NONE = 0
    HMAC_MD5_96 = 1
    HMAC_SHA1_96 = 2
    DES_MAC = 3
    KPDK_MD5 = 4
    AES_XCBC_96 = 5
    HMAC_MD5_128 = 6
    HMAC_SHA1_160 = 7
    AES_CMAC_96 = 8
    AES_128_GMAC = 9
    AES_192_GMAC = 10
    AES_256_GMAC = 11
    HMAC_SHA2_256_128 = 12
    HMAC_SHA2_384_192 = 13
    HMAC_SHA2_512_256 = 14


class KeyExchangeId(IntEnum):
    NONE = 0
    MODP_768 = 1
    MODP_1024 = 2
    MODP_1536 = 5
    MODP_2048 = 14
    MODP_3072 = 15
    MODP_4096 = 16
    MODP_6144 = 17
    MODP_8192 = 18
    ECP_256 = 19
    ECP_384 = 20
    ECP_521 = 21
    MODP_1024_160 = 22
    MODP_2048_224 = 23
    MODP_2048_256 = 24
    ECP_192 = 25
    ECP_224 = 26
    BRAINPOOL_P224R1 = 27
    BRAINPOOL_P256R1 = 28
    BRAINPOOL_P384R1 = 29
    BRAINPOOL_P512R1 = 30
    CURVE25519 = 31
    CURVE448 = 32
    GOST3410_2012_256 = 33
    GOST3410_2012_512 = 34
    ML_KEM_512 = 35
    ML_KEM_768 = 36
    ML_KEM_1024 = 37


DhGroup = KeyExchangeId


class EsnId(IntEnum):
    NO_ESN = 0
    ESN = 1


class IdType(IntEnum):
    ID_IPV4_ADDR = 1
    ID_FQDN = 2
    ID_RFC822_ADDR = 3
    ID_IPV6_ADDR = 5
    ID_DER_ASN1_DN = 9
    ID_DER_ASN1_GN = 10
    ID_KEY_ID = 11
    ID_FC_NAME = 12
    ID_NULL = 13  # RFC 7619


class AuthMethod(IntEnum):
    RSA_SIG = 1
    SHARED_KEY_MIC = 2
    DSS_SIG = 3
    ECDSA_SHA256_P256 = 9
    ECDSA_SHA384_P384 = 10
    ECDSA_SHA512_P521 = 11
    GENERIC_SECURE_PASSWORD = 12  # RFC 6467
    NULL_AUTH = 13  # RFC 7619
    DIGITAL_SIGNATURE = 14  # RFC 7427


class TSType(IntEnum):
    TS_IPV4_ADDR_RANGE = 7
    TS_IPV6_ADDR_RANGE = 8
    TS_FC_ADDR_RANGE = 9  # RFC 4595
    TS_SECLABEL = 10  # RFC 9478


class CertEncoding(IntEnum):
    PKCS7_X509 = 1
    PGP = 2
    DNS_SIGNED_KEY = 3
    X509_SIGNATURE = 4
    KERBEROS_TOKEN = 6
    CRL = 7
    ARL = 8
    SPKI = 9
    X509_ATTRIBUTE = 10
    RAW_RSA_KEY = 11
    HASH_URL_X509_CERT = 12
    HASH_URL_X509_BUNDLE = 13
    OCSP_CONTENT = 14  # RFC 4806
    RAW_PUBLIC_KEY = 15  # RFC 7670


class ConfigType(IntEnum):
    CFG_REQUEST = 1
    CFG_REPLY = 2
    CFG_SET = 3
    CFG_ACK = 4


class ConfigAttributeType(IntEnum):
    INTERNAL_IP4_ADDRESS = 1
    INTERNAL_IP4_NETMASK = 2
    INTERNAL_IP4_DNS = 3
    INTERNAL_IP4_NBNS = 4
    INTERNAL_IP4_DHCP = 6
    APPLICATION_VERSION = 7
    INTERNAL_IP6_ADDRESS = 8
    INTERNAL_IP6_DNS = 10
    INTERNAL_IP6_DHCP = 12
    INTERNAL_IP4_SUBNET = 13
    SUPPORTED_ATTRIBUTES = 14
    INTERNAL_IP6_SUBNET = 15
    MIP6_HOME_PREFIX = 16
    INTERNAL_IP6_LINK = 17
    INTERNAL_IP6_PREFIX = 18
    HOME_AGENT_ADDRESS = 19
    P_CSCF_IP4_ADDRESS = 20
    P_CSCF_IP6_ADDRESS = 21
    FTT_KAT = 22
    EXTERNAL_SOURCE_IP4_NAT_INFO = 23
    TIMEOUT_PERIOD_FOR_LIVENESS_CHECK = 24
    INTERNAL_DNS_DOMAIN = 25
    INTERNAL_DNSSEC_TA = 26


class TransformAttributeType(IntEnum):
    KEY_LENGTH = 14  # the only IKEv2 transform attribute (RFC 7296 section 3.3.5)


class HashAlgorithm(IntEnum):
    """RFC 7427 hash algorithm identifiers (the SIGNATURE_HASH_ALGORITHMS notify data)."""

    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4
    IDENTITY = 5  # RFC 8420


def lookup(enum_cls: type[_E]) -> dict[int, _E]:
    """{value: member} for `enum_cls` (a dict lookup is ~20x cheaper than `enum_cls(value)`)."""
    return {int(m): m for m in enum_cls}


EXCHANGE_LOOKUP = lookup(ExchangeType)
PAYLOAD_LOOKUP = lookup(PayloadType)
NOTIFY_LOOKUP = lookup(NotifyType)
PROTOCOL_LOOKUP = lookup(ProtocolId)
TRANSFORM_TYPE_LOOKUP = lookup(TransformType)
ID_TYPE_LOOKUP = lookup(IdType)
AUTH_LOOKUP = lookup(AuthMethod)
TS_TYPE_LOOKUP = lookup(TSType)
CERT_LOOKUP = lookup(CertEncoding)
CONFIG_TYPE_LOOKUP = lookup(ConfigType)
CONFIG_ATTR_LOOKUP = lookup(ConfigAttributeType)
KE_LOOKUP = lookup(KeyExchangeId)

_KE_TYPES = (4, 6, 7, 8, 9, 10, 11, 12)
# Transform ID registry per transform type (types 6-12 share the KE registry, RFC 9370).
TRANSFORM_ID_LOOKUP: dict[int, dict[int, IntEnum]] = {
    1: dict(lookup(EncrId)),
    2: dict(lookup(PrfId)),
    3: dict(lookup(IntegId)),
    5: dict(lookup(EsnId)),
    **{t: dict(KE_LOOKUP) for t in _KE_TYPES},
}
