"""IANA "IKEv2 Transform" numbers this package implements (RFC 7296 section 3.3.2 and the IANA
registry). Plain ints so that `ikev2lib.wire` IntEnum members (which compare equal) and raw wire
values both work; kept here so the crypto layer does not import the codec."""

from __future__ import annotations

# Transform type 1, encryption algorithms.
ENCR_NULL = 11  # ESP only (RFC 2410)
ENCR_AES_CBC = 12  # RFC 3602
ENCR_AES_CTR = 13  # ESP only (RFC 3686)
ENCR_AES_GCM_8 = 18  # RFC 4106 / RFC 5282
ENCR_AES_GCM_12 = 19
ENCR_AES_GCM_16 = 20
ENCR_NULL_AUTH_AES_GMAC = 21  # ESP only (RFC 4543)
ENCR_CHACHA20_POLY1305 = 28  # RFC 7634

# Transform type 2, pseudorandom functions.
PRF_HMAC_SHA1 = 2  # RFC 2104, legacy
PRF_AES128_XCBC = 4  # RFC 4434
PRF_HMAC_SHA2_256 = 5  # RFC 4868
PRF_HMAC_SHA2_384 = 6
PRF_HMAC_SHA2_512 = 7
PRF_AES128_CMAC = 8  # RFC 4615

# Transform type 3, integrity algorithms.
AUTH_NONE = 0
AUTH_HMAC_SHA1_96 = 2  # RFC 2404
AUTH_AES_XCBC_96 = 5  # RFC 3566, ESP only here
AUTH_AES_CMAC_96 = 8  # RFC 4494, ESP only here
AUTH_HMAC_SHA2_256_128 = 12  # RFC 4868
AUTH_HMAC_SHA2_384_192 = 13
AUTH_HMAC_SHA2_512_256 = 14

# Transform type 4, key exchange methods.
MODP_2048 = 14  # RFC 3526
MODP_3072 = 15
MODP_4096 = 16
MODP_6144 = 17
MODP_8192 = 18
ECP_256 = 19  # RFC 5903
ECP_384 = 20
ECP_521 = 21
CURVE25519 = 31  # RFC 8031
CURVE448 = 32
ML_KEM_768 = 36  # draft-ietf-ipsecme-ikev2-mlkem (FIPS 203)
ML_KEM_1024 = 37
