"""Key exchange method parameters: RFC 3526 MODP primes, RFC 5903 ECP curves, RFC 8031 curves,
and the ML-KEM key encapsulation methods (FIPS 203, draft-ietf-ipsecme-ikev2-mlkem)."""

from __future__ import annotations

from dataclasses import dataclass

from ..exceptions import LocalProtocolError
from ..wire.enums import KeyExchangeId

__all__ = ["GroupInfo", "GROUPS", "SUPPORTED_GROUPS", "KEM_GROUPS", "public_length", "response_length"]

# RFC 3526 section 7: the 8192-bit MODP prime (IKE group 18), as printed there.
_MODP_8192 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7"
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8"
    "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2"
    "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C93402849236C3FAB4D27C7026"
    "C1D4DCB2602646DEC9751E763DBA37BDF8FF9406AD9E530EE5DB382F413001AE"
    "B06A53ED9027D831179727B0865A8918DA3EDBEBCF9B14ED44CE6CBACED4BB1B"
    "DB7F1447E6CC254B332051512BD7AF426FB8F401378CD2BF5983CA01C64B92EC"
    "F032EA15D1721D03F482D7CE6E74FEF6D55E702F46980C82B5A84031900B1C9E"
    "59E7C97FBEC7E8F323A97A7E36CC88BE0F1D45B7FF585AC54BD407B22B4154AA"
    "CC8F6D7EBF48E1D814CC5ED20F8037E0A79715EEF29BE32806A1D58BB7C5DA76"
    "F550AA3D8A1FBFF0EB19CCB1A313D55CDA56C9EC2EF29632387FE8D76E3C0468"
    "043E8F663F4860EE12BF2D5B0B7474D6E694F91E6DBE115974A3926F12FEE5E4"
    "38777CB6A932DF8CD8BEC4D073B931BA3BC832B68D9DD300741FA7BF8AFC47ED"
    "2576F6936BA424663AAB639C5AE4F5683423B4742BF1C978238F16CBE39D652D"
    "E3FDB8BEFC848AD922222E04A4037C0713EB57A81A23F0C73473FC646CEA306B"
    "4BCBC8862F8385DDFA9D4B7FA2C087E879683303ED5BDD3A062B3CF5B3A278A6"
    "6D2A13F83F44F82DDF310EE074AB6A364597E899A0255DC164F31CC50846851D"
    "F9AB48195DED7EA1B1D510BD7EE74D73FAF36BC31ECFA268359046F4EB879F92"
    "4009438B481C6CD7889A002ED5EE382BC9190DA6FC026E479558E4475677E9AA"
    "9E3050E2765694DFC81F56E880B96E7160C980DD98EDD3DFFFFFFFFFFFFFFFFF"
    ,
    16,
)

# RFC 3526: every MODP prime is p = 2^N - 2^(N-64) - 1 + 2^64 * (floor(2^(N-130) * pi) + k), so the
# smaller ones are built from a prefix of the pi bits inside the 8192-bit prime instead of being
# repeated as hex (test_crypto_kex recomputes all five from pi independently).
_MODP_OFFSETS = {2048: 124476, 3072: 1690314, 4096: 240904, 6144: 929484, 8192: 4743158}  # the k per size
_PI_BITS_8062 = ((_MODP_8192 >> 64) & ((1 << (8192 - 128)) - 1)) - _MODP_OFFSETS[8192] + 1


def _rfc3526_prime(bits: int) -> int:
    pi_bits = _PI_BITS_8062 >> (8192 - bits)
    return (1 << bits) - (1 << (bits - 64)) - 1 + (1 << 64) * (pi_bits + _MODP_OFFSETS[bits])


@dataclass(frozen=True)
class GroupInfo:
    """`kind` is "modp", "ecp", "x" or "kem"; `public_length` is the exact KE data length the
    initiator sends (RFC 7296 3.4, RFC 5903 section 7, RFC 8031 section 2; the encapsulation key
    for ML-KEM), `response_length` what the responder sends (the ciphertext for ML-KEM, else the
    same); `secret_length` the fixed shared secret length."""

    group: int
    kind: str
    public_length: int
    secret_length: int
    prime: int = 0  # MODP only
    curve: str = ""  # ECP/X/KEM only: "secp256r1", ..., "x25519", "x448", "mlkem768", "mlkem1024"
    response_length: int = 0  # KEM only; 0 = same as public_length

    @property
    def responder_length(self) -> int:
        return self.response_length or self.public_length


def _modp(group: int, bits: int) -> GroupInfo:
    size = bits // 8
    return GroupInfo(group, "modp", size, size, prime=_rfc3526_prime(bits))


GROUPS: dict[int, GroupInfo] = {
    # RFC 3526 sections 3-7, generator 2.
    KeyExchangeId.MODP_2048: _modp(KeyExchangeId.MODP_2048, 2048),
    KeyExchangeId.MODP_3072: _modp(KeyExchangeId.MODP_3072, 3072),
    KeyExchangeId.MODP_4096: _modp(KeyExchangeId.MODP_4096, 4096),
    KeyExchangeId.MODP_6144: _modp(KeyExchangeId.MODP_6144, 6144),
    KeyExchangeId.MODP_8192: _modp(KeyExchangeId.MODP_8192, 8192),
    # RFC 5903 section 7: KE data is x || y, each coordinate fixed-length big-endian;
    # the shared secret is the x coordinate only.
    KeyExchangeId.ECP_256: GroupInfo(KeyExchangeId.ECP_256, "ecp", 64, 32, curve="secp256r1"),
    KeyExchangeId.ECP_384: GroupInfo(KeyExchangeId.ECP_384, "ecp", 96, 48, curve="secp384r1"),
    KeyExchangeId.ECP_521: GroupInfo(KeyExchangeId.ECP_521, "ecp", 132, 66, curve="secp521r1"),
    # RFC 8031 section 2: the raw RFC 7748 public value and shared secret.
    KeyExchangeId.CURVE25519: GroupInfo(KeyExchangeId.CURVE25519, "x", 32, 32, curve="x25519"),
    KeyExchangeId.CURVE448: GroupInfo(KeyExchangeId.CURVE448, "x", 56, 56, curve="x448"),
    # FIPS 203 sizes: encapsulation key 1184/1568, ciphertext 1088/1568, shared secret 32.
    KeyExchangeId.ML_KEM_768: GroupInfo(
        KeyExchangeId.ML_KEM_768, "kem", 1184, 32, curve="mlkem768", response_length=1088
    ),
    KeyExchangeId.ML_KEM_1024: GroupInfo(
        KeyExchangeId.ML_KEM_1024, "kem", 1568, 32, curve="mlkem1024", response_length=1568
    ),
}

# Diffie-Hellman style groups: both sides may use generate() + shared_secret().
SUPPORTED_GROUPS: tuple[int, ...] = tuple(sorted(g for g, i in GROUPS.items() if i.kind != "kem"))
# Key encapsulation methods: the responder must use KeyExchange.respond().
KEM_GROUPS: tuple[int, ...] = tuple(sorted(g for g, i in GROUPS.items() if i.kind == "kem"))


def public_length(group: int) -> int:
    """Exact length of the KE payload data for `group`."""
    info = GROUPS.get(int(group))
    if info is None:
        raise LocalProtocolError(f"unsupported key exchange group {group}")
    return info.public_length


def response_length(group: int) -> int:
    """Exact length of the responder's KE payload data for `group` (ciphertext for ML-KEM)."""
    info = GROUPS.get(int(group))
    if info is None:
        raise LocalProtocolError(f"unsupported key exchange group {group}")
    return info.responder_length
