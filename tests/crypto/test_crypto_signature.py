"""Public-key AUTH data (RFC 7296 3.8, RFC 4754, RFC 7427, RFC 8420) against independent checks:
a small DER reader written here, the AlgorithmIdentifiers `cryptography` puts in certificates, and
the `openssl` command line in both directions."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib.crypto.signature import (
    MAX_SIGNATURE_HASHES,
    MIN_RSA_BITS,
    SIGNATURE_SCHEMES,
    SignatureScheme,
    decode_signature_hashes,
    encode_signature_hashes,
    method_for_key,
    sign,
    split_signature_auth_data,
    verify,
)
from ikev2lib.exceptions import LocalProtocolError, ParseError
from ikev2lib.wire.enums import AuthMethod, HashAlgorithm

RSA_SIG, DIGITAL_SIGNATURE = AuthMethod.RSA_SIG, AuthMethod.DIGITAL_SIGNATURE
ECDSA_256, ECDSA_384 = AuthMethod.ECDSA_SHA256_P256, AuthMethod.ECDSA_SHA384_P384
ECDSA_521 = AuthMethod.ECDSA_SHA512_P521
SHA2 = (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512)
ALL_HASHES = (*SHA2, HashAlgorithm.IDENTITY)
OCTETS = b"IKE_SA_INIT request" + bytes(range(256)) + b"Nr" * 16 + b"prf(SK_pi, IDi)"
SCHEMES = {s.name: s for s in SIGNATURE_SCHEMES}
Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
# installed by bootstrap and checked by tests/test_environment.py: a missing openssl fails, never skips
OPENSSL = "/usr/bin/openssl"


# --- keys: RSA once per session (generation dominates the run time otherwise) ---------------------


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def small_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


@pytest.fixture(scope="session")
def keys(rsa_key: rsa.RSAPrivateKey) -> dict[str, Key]:
    return {
        "rsa": rsa_key,
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "ed448": ed448.Ed448PrivateKey.generate(),
    }


# --- an independent DER reader (definite lengths, single-octet tags: all these encodings need) ---


def der_tlv(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """(tag, contents, end) of the TLV at `pos`."""
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        n = first & 0x7F
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    else:
        length = first
    if pos + length > len(data):
        raise ValueError("TLV runs past the data")
    return tag, data[pos : pos + length], pos + length


def der_children(contents: bytes) -> list[bytes]:
    """The raw TLVs inside a constructed value."""
    out, pos = [], 0
    while pos < len(contents):
        _, _, end = der_tlv(contents, pos)
        out.append(contents[pos:end])
        pos = end
    return out


def der_oid(contents: bytes) -> str:
    arcs, value = [], 0
    for octet in contents:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


def der_decode(data: bytes) -> object:
    """A whole DER value as nested Python: ("SEQ", [...]), ("[n]", x), OID strings, ints, None."""
    tag, contents, end = der_tlv(data)
    if end != len(data):
        raise ValueError("trailing data")
    if tag == 0x30:
        return ("SEQ", [der_decode(child) for child in der_children(contents)])
    if tag & 0xE0 == 0xA0:  # context-specific, constructed: EXPLICIT [n]
        (inner,) = der_children(contents)
        return (f"[{tag & 0x1F}]", der_decode(inner))
    if tag == 0x06:
        return der_oid(contents)
    if tag == 0x05 and contents == b"":
        return None
    if tag == 0x02:
        return int.from_bytes(contents, "big", signed=True)
    raise ValueError(f"unexpected tag {tag:#x}")


OID_PSS, OID_MGF1 = "1.2.840.113549.1.1.10", "1.2.840.113549.1.1.8"
OID_SHA = {256: "2.16.840.1.101.3.4.2.1", 384: "2.16.840.1.101.3.4.2.2", 512: "2.16.840.1.101.3.4.2.3"}


def pss_tree(bits: int, null: bool) -> object:
    hash_alg = ("SEQ", [OID_SHA[bits], None] if null else [OID_SHA[bits]])
    params = ("SEQ", [("[0]", hash_alg), ("[1]", ("SEQ", [OID_MGF1, hash_alg])), ("[2]", bits // 8)])
    return ("SEQ", [OID_PSS, params])


# What each accepted encoding must decode to, written from RFC 4055, RFC 5758, RFC 8410.
EXPECTED_TREES: dict[str, list[object]] = {
    "sha256WithRSAEncryption": [("SEQ", ["1.2.840.113549.1.1.11", None]), ("SEQ", ["1.2.840.113549.1.1.11"])],
    "sha384WithRSAEncryption": [("SEQ", ["1.2.840.113549.1.1.12", None]), ("SEQ", ["1.2.840.113549.1.1.12"])],
    "sha512WithRSAEncryption": [("SEQ", ["1.2.840.113549.1.1.13", None]), ("SEQ", ["1.2.840.113549.1.1.13"])],
    "RSASSA-PSS-SHA256": [pss_tree(256, True), pss_tree(256, False)],
    "RSASSA-PSS-SHA384": [pss_tree(384, True), pss_tree(384, False)],
    "RSASSA-PSS-SHA512": [pss_tree(512, True), pss_tree(512, False)],
    "ecdsa-with-SHA256": [("SEQ", ["1.2.840.10045.4.3.2"])],
    "ecdsa-with-SHA384": [("SEQ", ["1.2.840.10045.4.3.3"])],
    "ecdsa-with-SHA512": [("SEQ", ["1.2.840.10045.4.3.4"])],
    "Ed25519": [("SEQ", ["1.3.101.112"])],
    "Ed448": [("SEQ", ["1.3.101.113"])],
}


def test_the_scheme_table_is_exactly_the_expected_list() -> None:
    assert sorted(SCHEMES) == sorted(EXPECTED_TREES)
    assert len(SIGNATURE_SCHEMES) == 11


@pytest.mark.parametrize("name", sorted(EXPECTED_TREES))
def test_each_encoding_decodes_to_its_oid_and_parameters(name: str) -> None:
    scheme = SCHEMES[name]
    assert [der_decode(der) for der in scheme.accepted] == EXPECTED_TREES[name]
    assert scheme.algorithm_identifier == scheme.accepted[0]
    assert all(len(der) < 128 for der in scheme.accepted)  # fits the one-octet length of RFC 7427 3


def _rfc_dump(text: str) -> bytes:
    """The hex of an RFC 7427 Appendix A dump ("0000: 300d 0609 ...")."""
    return bytes.fromhex("".join(line.split(":", 1)[1] for line in text.strip().splitlines()))


# RFC 7427 Appendix A, as printed there.
RFC7427_APPENDIX_A = {
    # A.1.2 sha256WithRSAEncryption, Length = 15
    "sha256WithRSAEncryption": "0000: 300d 0609 2a86 4886 f70d 0101 0b05 00",
    # A.1.3 sha384WithRSAEncryption
    "sha384WithRSAEncryption": "0000: 300d 0609 2a86 4886 f70d 0101 0c05 00",
    # A.1.4 sha512WithRSAEncryption
    "sha512WithRSAEncryption": "0000: 300d 0609 2a86 4886 f70d 0101 0d05 00",
    # A.3.2 ecdsa-with-sha256, Length = 12
    "ecdsa-with-SHA256": "0000: 300a 0608 2a86 48ce 3d04 0302",
    # A.3.3 ecdsa-with-sha384
    "ecdsa-with-SHA384": "0000: 300a 0608 2a86 48ce 3d04 0303",
    # A.3.4 ecdsa-with-sha512
    "ecdsa-with-SHA512": "0000: 300a 0608 2a86 48ce 3d04 0304",
    # A.4.3 RSASSA-PSS with SHA-256, Length = 67
    "RSASSA-PSS-SHA256": """
        0000: 3041 0609 2a86 4886 f70d 0101 0a30 34a0
        0016: 0f30 0d06 0960 8648 0165 0304 0201 0500
        0032: a11c 301a 0609 2a86 4886 f70d 0101 0830
        0048: 0d06 0960 8648 0165 0304 0201 0500 a203
        0064: 0201 20
    """,
}


@pytest.mark.parametrize("name", sorted(RFC7427_APPENDIX_A))
def test_we_send_the_rfc7427_appendix_a_encodings(name: str) -> None:
    assert SCHEMES[name].algorithm_identifier == _rfc_dump(RFC7427_APPENDIX_A[name])


def test_rfc7427_sha1_and_empty_pss_encodings_are_not_accepted() -> None:
    # A.1.1 sha1WithRSAEncryption, A.3.1 ecdsa-with-sha1, A.4.1 RSASSA-PSS with empty parameters
    # (= SHA-1 defaults): SHA-1 is not among the method 14 schemes we run.
    for dump in ("0000: 300d 0609 2a86 4886 f70d 0101 0505 00", "0000: 3009 0607 2a86 48ce 3d04 01",
                 "0000: 300d 0609 2a86 4886 f70d 0101 0a30 00"):
        der = _rfc_dump(dump)
        assert split_signature_auth_data(bytes([len(der)]) + der + b"sig") is None


# --- cross-check: the AlgorithmIdentifier `cryptography` writes into a certificate ---------------


def _certificate_sig_alg(key: Key, scheme: SignatureScheme) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signature test")])
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
    )
    h = {HashAlgorithm.SHA2_256: hashes.SHA256(), HashAlgorithm.SHA2_384: hashes.SHA384(),
         HashAlgorithm.SHA2_512: hashes.SHA512()}.get(scheme.hash_id)
    if scheme.key == "rsa-pss":
        assert h is not None
        pss = padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
        cert = builder.sign(key, h, rsa_padding=pss)  # type: ignore[arg-type]
    else:
        cert = builder.sign(key, h)  # type: ignore[arg-type]
    # Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    _, contents, _ = der_tlv(cert.public_bytes(serialization.Encoding.DER))
    return der_children(contents)[1]


@pytest.mark.parametrize("name", sorted(EXPECTED_TREES))
def test_algorithm_identifier_matches_what_cryptography_puts_in_certificates(
    name: str, keys: dict[str, Key]
) -> None:
    scheme = SCHEMES[name]
    key = keys[{"rsa": "rsa", "rsa-pss": "rsa", "ecdsa": "p256"}.get(scheme.key, scheme.key)]
    assert _certificate_sig_alg(key, scheme) == scheme.algorithm_identifier


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_name", "method", "size"),
    [("rsa", RSA_SIG, 256), ("p256", ECDSA_256, 64), ("p384", ECDSA_384, 96), ("p521", ECDSA_521, 132)],
)
def test_classic_methods_round_trip(
    keys: dict[str, Key], key_name: str, method: int, size: int
) -> None:
    key = keys[key_name]
    auth = sign(method, key, OCTETS)
    assert len(auth) == size
    public = key.public_key()
    assert verify(method, public, OCTETS, auth)
    assert not verify(method, public, OCTETS + b"x", auth)
    assert not verify(DIGITAL_SIGNATURE, public, OCTETS, auth)


def test_method_1_is_pkcs1_v15_with_sha1(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = sign(RSA_SIG, rsa_key, OCTETS)
    rsa_key.public_key().verify(auth, OCTETS, padding.PKCS1v15(), hashes.SHA1())  # raises if not


@pytest.mark.parametrize("curve_key", ["p256", "p384", "p521"])
def test_ecdsa_methods_are_fixed_length_r_s(keys: dict[str, Key], curve_key: str) -> None:
    key = keys[curve_key]
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    method, size, h = {"p256": (ECDSA_256, 32, hashes.SHA256()), "p384": (ECDSA_384, 48, hashes.SHA384()),
                       "p521": (ECDSA_521, 66, hashes.SHA512())}[curve_key]
    for _ in range(8):  # r or s with leading zero octets come up now and then; sizes stay fixed
        auth = sign(method, key, OCTETS)
        assert len(auth) == 2 * size
        der = encode_dss_signature(int.from_bytes(auth[:size], "big"), int.from_bytes(auth[size:], "big"))
        key.public_key().verify(der, OCTETS, ec.ECDSA(h))


SCHEME_CASES = [
    ("sha256WithRSAEncryption", "rsa", (HashAlgorithm.SHA2_256,), False),
    ("sha384WithRSAEncryption", "rsa", (HashAlgorithm.SHA2_384,), False),
    ("sha512WithRSAEncryption", "rsa", (HashAlgorithm.SHA2_512,), False),
    ("RSASSA-PSS-SHA256", "rsa", (HashAlgorithm.SHA2_256,), True),
    ("RSASSA-PSS-SHA384", "rsa", (HashAlgorithm.SHA2_384,), True),
    ("RSASSA-PSS-SHA512", "rsa", (HashAlgorithm.SHA2_512,), True),
    ("ecdsa-with-SHA256", "p256", (HashAlgorithm.SHA2_256,), False),
    ("ecdsa-with-SHA384", "p384", (HashAlgorithm.SHA2_384,), False),
    ("ecdsa-with-SHA512", "p521", (HashAlgorithm.SHA2_512,), False),
    ("ecdsa-with-SHA512", "p256", (HashAlgorithm.SHA2_512,), False),  # RFC 7427: any hash with any curve
    ("ecdsa-with-SHA256", "p521", (HashAlgorithm.SHA2_256,), False),
    ("Ed25519", "ed25519", (HashAlgorithm.IDENTITY,), False),
    ("Ed448", "ed448", (HashAlgorithm.IDENTITY,), False),
]


@pytest.mark.parametrize(("name", "key_name", "peer_hashes", "pss"), SCHEME_CASES)
def test_digital_signature_round_trip(
    keys: dict[str, Key], name: str, key_name: str, peer_hashes: tuple[int, ...], pss: bool
) -> None:
    key = keys[key_name]
    auth = sign(DIGITAL_SIGNATURE, key, OCTETS, hashes_peer_accepts=peer_hashes, rsa_pss=pss)
    der = SCHEMES[name].algorithm_identifier
    assert auth[0] == len(der) and auth[1 : 1 + len(der)] == der
    public = key.public_key()
    assert verify(DIGITAL_SIGNATURE, public, OCTETS, auth)
    assert verify(DIGITAL_SIGNATURE, public, OCTETS, auth, accepted_hashes=ALL_HASHES)
    assert not verify(DIGITAL_SIGNATURE, public, OCTETS, auth, accepted_hashes=())
    assert not verify(DIGITAL_SIGNATURE, public, OCTETS[:-1], auth)
    split = split_signature_auth_data(auth)
    assert split is not None and split[0] is SCHEMES[name]


def test_rsa_encodings_without_null_parameters_verify(rsa_key: rsa.RSAPrivateKey) -> None:
    for name in ("sha256WithRSAEncryption", "RSASSA-PSS-SHA384"):
        auth = sign(DIGITAL_SIGNATURE, rsa_key, OCTETS, hashes_peer_accepts=[SCHEMES[name].hash_id],
                    rsa_pss=name.startswith("RSASSA"))
        default, bare = SCHEMES[name].accepted
        signature = auth[1 + len(default) :]
        assert verify(DIGITAL_SIGNATURE, rsa_key.public_key(), OCTETS, bytes([len(bare)]) + bare + signature)


def test_pss_salt_must_be_the_hash_length(rsa_key: rsa.RSAPrivateKey) -> None:
    der = SCHEMES["RSASSA-PSS-SHA256"].algorithm_identifier
    for salt in (0, 20, 31, 33):
        sig = rsa_key.sign(OCTETS, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt), hashes.SHA256())
        assert not verify(DIGITAL_SIGNATURE, rsa_key.public_key(), OCTETS, bytes([len(der)]) + der + sig)
    # and PKCS#1 v1.5 under the PSS identifier (or the reverse) fails too
    v15 = rsa_key.sign(OCTETS, padding.PKCS1v15(), hashes.SHA256())
    assert not verify(DIGITAL_SIGNATURE, rsa_key.public_key(), OCTETS, bytes([len(der)]) + der + v15)


# --- choosing the method and the scheme ----------------------------------------------------------


def test_method_for_key(keys: dict[str, Key]) -> None:
    classic = {"rsa": RSA_SIG, "p256": ECDSA_256, "p384": ECDSA_384, "p521": ECDSA_521}
    for name, key in keys.items():
        assert method_for_key(key, True) == DIGITAL_SIGNATURE
        if name in classic:
            assert method_for_key(key, False) == classic[name]
        else:
            with pytest.raises(LocalProtocolError, match="RFC 7427"):
                method_for_key(key, False)


def test_method_for_unusable_keys(small_rsa_key: rsa.RSAPrivateKey) -> None:
    for key in (small_rsa_key, ec.generate_private_key(ec.SECP256K1())):
        for rfc7427 in (True, False):
            with pytest.raises(LocalProtocolError, match="cannot sign"):
                method_for_key(key, rfc7427)


def _scheme_of(auth: bytes) -> str:
    split = split_signature_auth_data(auth)
    assert split is not None
    return split[0].name


def test_scheme_choice_prefers_sha256_and_ignores_unknown(keys: dict[str, Key]) -> None:
    peer = [HashAlgorithm.SHA2_512, 77, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_256, HashAlgorithm.IDENTITY]
    def chosen(key_name: str, accepted: list[int], pss: bool = False) -> str:
        return _scheme_of(sign(DIGITAL_SIGNATURE, keys[key_name], OCTETS, hashes_peer_accepts=accepted, rsa_pss=pss))

    assert chosen("rsa", peer) == "sha256WithRSAEncryption"
    assert chosen("rsa", peer, pss=True) == "RSASSA-PSS-SHA256"
    assert chosen("p384", peer) == "ecdsa-with-SHA256"
    assert chosen("p384", [4, 3]) == "ecdsa-with-SHA384"
    assert chosen("ed25519", peer) == "Ed25519"
    assert chosen("ed448", peer) == "Ed448"


@pytest.mark.parametrize(
    ("key_name", "peer"),
    [
        ("ed25519", SHA2),
        ("ed448", SHA2),
        ("rsa", (HashAlgorithm.IDENTITY, HashAlgorithm.SHA1)),
        ("p256", ()),
        ("rsa", (999,)),
    ],
)
def test_no_acceptable_hash_is_a_local_error(keys: dict[str, Key], key_name: str, peer: tuple[int, ...]) -> None:
    with pytest.raises(LocalProtocolError, match="SIGNATURE_HASH_ALGORITHMS"):
        sign(DIGITAL_SIGNATURE, keys[key_name], OCTETS, hashes_peer_accepts=peer)


def test_signing_refuses_keys_that_do_not_fit(keys: dict[str, Key], small_rsa_key: rsa.RSAPrivateKey) -> None:
    bad = [
        (RSA_SIG, "p256"), (ECDSA_256, "p384"), (ECDSA_384, "p256"), (ECDSA_521, "rsa"),
        (ECDSA_256, "ed25519"), (RSA_SIG, "ed448"), (AuthMethod.SHARED_KEY_MIC, "rsa"), (AuthMethod.DSS_SIG, "rsa"),
    ]
    for method, name in bad:
        with pytest.raises(LocalProtocolError):
            sign(method, keys[name], OCTETS, hashes_peer_accepts=ALL_HASHES)
    with pytest.raises(LocalProtocolError, match="needs a private key"):
        sign(RSA_SIG, keys["rsa"].public_key(), OCTETS)  # type: ignore[arg-type]
    for method in (RSA_SIG, DIGITAL_SIGNATURE):
        with pytest.raises(LocalProtocolError, match=str(MIN_RSA_BITS)) as info:
            sign(method, small_rsa_key, OCTETS, hashes_peer_accepts=SHA2)
        assert format(small_rsa_key.private_numbers().p, "x")[:16] not in str(info.value)  # no key material
        assert str(small_rsa_key.public_key().public_numbers().n) not in str(info.value)


def test_min_rsa_bits_applies_to_verification(small_rsa_key: rsa.RSAPrivateKey) -> None:
    assert MIN_RSA_BITS == 2048
    der = SCHEMES["sha256WithRSAEncryption"].algorithm_identifier
    sig = small_rsa_key.sign(OCTETS, padding.PKCS1v15(), hashes.SHA256())
    assert not verify(DIGITAL_SIGNATURE, small_rsa_key.public_key(), OCTETS, bytes([len(der)]) + der + sig)
    sig1 = small_rsa_key.sign(OCTETS, padding.PKCS1v15(), hashes.SHA1())
    assert not verify(RSA_SIG, small_rsa_key.public_key(), OCTETS, sig1)


# --- hostile AUTH data ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rsa_auth(rsa_key: rsa.RSAPrivateKey) -> bytes:
    return sign(DIGITAL_SIGNATURE, rsa_key, OCTETS, hashes_peer_accepts=SHA2)


def test_truncated_and_bad_length_octet(rsa_key: rsa.RSAPrivateKey, rsa_auth: bytes) -> None:
    public = rsa_key.public_key()
    assert verify(DIGITAL_SIGNATURE, public, OCTETS, rsa_auth)
    for cut in range(len(rsa_auth)):
        assert not verify(DIGITAL_SIGNATURE, public, OCTETS, rsa_auth[:cut])
    body = rsa_auth[1:]
    for length in (0, 13, 14, 16, 127, 255):
        assert not verify(DIGITAL_SIGNATURE, public, OCTETS, bytes([length]) + body)
    assert split_signature_auth_data(bytes([200]) + body[:100]) is None
    assert split_signature_auth_data(b"") is None


def test_unknown_oid_and_mangled_parameters(rsa_key: rsa.RSAPrivateKey, rsa_auth: bytes) -> None:
    public = rsa_key.public_key()
    der = SCHEMES["sha256WithRSAEncryption"].algorithm_identifier
    signature = rsa_auth[1 + len(der) :]
    variants = [
        der[:-3] + b"\x0e\x05\x00",  # sha224WithRSAEncryption (1.2.840.113549.1.1.14)
        der[:-2] + b"\x04\x00",  # OCTET STRING instead of NULL
        bytes([0x30, 0x0F]) + der[2:] + b"\x05\x00",  # two NULLs
        bytes([0x30, 0x81, 0x0D]) + der[2:],  # long-form length: BER, not DER
        bytes([0x31]) + der[1:],  # SET instead of SEQUENCE
    ]
    pss_oid = "06092a864886f70d01010a"
    hash_null, hash_bare = "a00f300d06096086480165030402010500", "a00d300b0609608648016503040201"
    mgf_null = "a11c301a06092a864886f70d010108300d06096086480165030402010500"
    mgf_bare = "a11a301806092a864886f70d010108300b0609608648016503040201"
    salt = "a203020120"
    for params in (
        hash_null + mgf_null + "a203020121",  # salt 33
        hash_null + mgf_bare + salt,  # NULL and absent hash parameters mixed
        hash_null + mgf_null,  # no saltLength: the DEFAULT 20
        hash_null + mgf_null + salt + "a303020101",  # trailerField 1 spelled out: BER, not DER
        mgf_null + salt,  # no hashAlgorithm: the DEFAULT SHA-1, with MGF1-SHA256
    ):
        body = bytes.fromhex(pss_oid) + bytes([0x30, len(params) // 2]) + bytes.fromhex(params)
        variants.append(bytes([0x30, len(body)]) + body)
    assert der_decode(variants[-1])  # well-formed DER, just not an encoding we know
    for alg in variants:
        assert not verify(DIGITAL_SIGNATURE, public, OCTETS, bytes([len(alg)]) + alg + signature)


def test_tampered_signature_and_other_octets(keys: dict[str, Key]) -> None:
    for name, key in keys.items():
        public = key.public_key()
        auth = sign(DIGITAL_SIGNATURE, key, OCTETS, hashes_peer_accepts=ALL_HASHES)
        for position in (len(auth) - 1, len(auth) // 2, auth[0] + 1):
            flipped = bytearray(auth)
            flipped[position] ^= 0x01
            assert not verify(DIGITAL_SIGNATURE, public, OCTETS, bytes(flipped)), name
        assert not verify(DIGITAL_SIGNATURE, public, b"other octets", auth), name
        assert not verify(DIGITAL_SIGNATURE, public, OCTETS, auth + b"\x00"), name


def test_key_type_must_match_the_algorithm(keys: dict[str, Key]) -> None:
    auths = {name: sign(DIGITAL_SIGNATURE, key, OCTETS, hashes_peer_accepts=ALL_HASHES) for name, key in keys.items()}
    for signer, auth in auths.items():
        for other, key in keys.items():
            if other == signer:
                continue
            assert not verify(DIGITAL_SIGNATURE, key.public_key(), OCTETS, auth), (signer, other)
    # the ECDSA identifier over an RSA signature, with the RSA key: refused before any crypto
    rsa_sig = auths["rsa"][16:]
    ecdsa = SCHEMES["ecdsa-with-SHA256"].algorithm_identifier
    assert not verify(DIGITAL_SIGNATURE, keys["rsa"].public_key(), OCTETS, bytes([len(ecdsa)]) + ecdsa + rsa_sig)


def test_classic_methods_need_their_curve(keys: dict[str, Key]) -> None:
    p256, p384 = keys["p256"], keys["p384"]
    auth256 = sign(ECDSA_256, p256, OCTETS)
    auth384 = sign(ECDSA_384, p384, OCTETS)
    assert not verify(ECDSA_384, p256.public_key(), OCTETS, auth256)
    assert not verify(ECDSA_256, p384.public_key(), OCTETS, auth384)
    assert not verify(ECDSA_384, p256.public_key(), OCTETS, auth384)
    assert not verify(RSA_SIG, p256.public_key(), OCTETS, auth256)
    assert not verify(ECDSA_256, keys["rsa"].public_key(), OCTETS, auth256)
    with pytest.raises(LocalProtocolError):
        sign(ECDSA_256, p384, OCTETS)


def test_wrong_r_s_length_and_der_for_classic_ecdsa(keys: dict[str, Key]) -> None:
    key = keys["p256"]
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    public = key.public_key()
    auth = sign(ECDSA_256, key, OCTETS)
    assert verify(ECDSA_256, public, OCTETS, auth)
    for bad in (auth[:-1], auth + b"\x00", b"\x00" + auth, auth[:32], b"", bytes(64), b"\xff" * 64):
        assert not verify(ECDSA_256, public, OCTETS, bad)
    der = encode_dss_signature(int.from_bytes(auth[:32], "big"), int.from_bytes(auth[32:], "big"))
    assert not verify(ECDSA_256, public, OCTETS, der)  # DER is method 14's encoding, not 9's


def test_non_der_ecdsa_signature_value_in_method_14(keys: dict[str, Key]) -> None:
    key = keys["p256"]
    public = key.public_key()
    auth = sign(DIGITAL_SIGNATURE, key, OCTETS, hashes_peer_accepts=SHA2)
    prefix, sig = auth[:13], auth[13:]
    r, s = decode_dss_signature(sig)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    tag, contents, _ = der_tlv(sig)
    long_form = bytes([tag, 0x81, len(contents)]) + contents
    for bad in (raw, sig + b"\x00", long_form, encode_dss_signature(r, 0), encode_dss_signature(0, s)):
        assert not verify(DIGITAL_SIGNATURE, public, OCTETS, prefix + bad)


def test_unknown_methods_never_verify(rsa_key: rsa.RSAPrivateKey, rsa_auth: bytes) -> None:
    for method in (0, 2, 3, 12, 13, 15, 255, -1, 1 << 40):
        assert not verify(method, rsa_key.public_key(), OCTETS, rsa_auth)


def test_unsupported_public_keys_never_verify(rsa_auth: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric import x25519

    k1 = ec.generate_private_key(ec.SECP256K1())
    auth = k1.sign(OCTETS, ec.ECDSA(hashes.SHA256()))
    der = SCHEMES["ecdsa-with-SHA256"].algorithm_identifier
    assert not verify(DIGITAL_SIGNATURE, k1.public_key(), OCTETS, bytes([len(der)]) + der + auth)
    assert not verify(DIGITAL_SIGNATURE, x25519.X25519PrivateKey.generate().public_key(), OCTETS, rsa_auth)


METHODS = st.sampled_from([RSA_SIG, ECDSA_256, ECDSA_384, ECDSA_521, DIGITAL_SIGNATURE]) | st.integers(-5, 300)


@settings(max_examples=400, deadline=None)
@given(method=METHODS, key_name=st.sampled_from(["rsa", "p256", "p384", "p521", "ed25519", "ed448"]),
       data=st.binary(max_size=300))
def test_arbitrary_auth_data_is_only_ever_false(
    keys: dict[str, Key], method: int, key_name: str, data: bytes
) -> None:
    assert verify(method, keys[key_name].public_key(), OCTETS, data) is False


ALG_PREFIXES = sorted({bytes([len(der)]) + der for s in SIGNATURE_SCHEMES for der in s.accepted})


@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from(ALG_PREFIXES), key_name=st.sampled_from(["rsa", "p256", "p521", "ed25519", "ed448"]),
       signature=st.binary(max_size=600))
def test_known_identifier_with_arbitrary_signature_is_false(
    keys: dict[str, Key], prefix: bytes, key_name: str, signature: bytes
) -> None:
    auth = prefix + signature
    assert verify(DIGITAL_SIGNATURE, keys[key_name].public_key(), OCTETS, auth) is False


@settings(max_examples=200, deadline=None)
@given(
    position=st.integers(min_value=0),
    value=st.integers(1, 255),
    key_name=st.sampled_from(["rsa", "p384", "ed25519"]),
)
def test_one_changed_octet_never_verifies(
    keys: dict[str, Key], position: int, value: int, key_name: str
) -> None:
    key = keys[key_name]
    auth = bytearray(sign(DIGITAL_SIGNATURE, key, OCTETS, hashes_peer_accepts=ALL_HASHES))
    position %= len(auth)
    auth[position] ^= value
    public = key.public_key()
    assert verify(DIGITAL_SIGNATURE, public, OCTETS, bytes(auth)) is False


# --- openssl, both directions --------------------------------------------------------------------


def _run(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([OPENSSL, *map(str, args)], capture_output=True, timeout=30, check=False)


def _write_keys(tmp_path: Path, key: Key) -> tuple[Path, Path, Path]:
    priv, pub, data = tmp_path / "key.pem", tmp_path / "pub.pem", tmp_path / "octets.bin"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    data.write_bytes(OCTETS)
    return priv, pub, data


# (name, key, openssl signing options, how AUTH data is built from openssl's signature)
OPENSSL_CASES: list[tuple[str, str, int, list[str]]] = [
    ("rsa-pkcs1-sha256", "rsa", DIGITAL_SIGNATURE, ["dgst", "-sha256"]),
    ("rsa-pss-sha256", "rsa", DIGITAL_SIGNATURE,
     ["dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32",
      "-sigopt", "rsa_mgf1_md:sha256"]),
    ("rsa-method-1", "rsa", RSA_SIG, ["dgst", "-sha1"]),
    ("ecdsa-p256-method-9", "p256", ECDSA_256, ["dgst", "-sha256"]),
    ("ecdsa-p256-method-14", "p256", DIGITAL_SIGNATURE, ["dgst", "-sha256"]),
    ("ed25519", "ed25519", DIGITAL_SIGNATURE, ["pkeyutl", "-rawin"]),
]
ALGID = {
    "rsa-pkcs1-sha256": "sha256WithRSAEncryption", "rsa-pss-sha256": "RSASSA-PSS-SHA256",
    "ecdsa-p256-method-14": "ecdsa-with-SHA256", "ed25519": "Ed25519",
}


def _der_to_r_s(der: bytes, size: int) -> bytes:
    _, contents, _ = der_tlv(der)
    r, s = (der_tlv(child)[1] for child in der_children(contents))
    return int.from_bytes(r, "big").to_bytes(size, "big") + int.from_bytes(s, "big").to_bytes(size, "big")


def _r_s_to_der(raw: bytes) -> bytes:
    half = len(raw) // 2

    def integer(value: bytes) -> bytes:
        value = value.lstrip(b"\x00") or b"\x00"
        if value[0] & 0x80:
            value = b"\x00" + value
        return bytes([0x02, len(value)]) + value

    body = integer(raw[:half]) + integer(raw[half:])
    return bytes([0x30, len(body)]) + body


@pytest.mark.parametrize(("name", "key_name", "method", "command"), OPENSSL_CASES)
def test_openssl_signature_verifies_with_us(
    tmp_path: Path, keys: dict[str, Key], name: str, key_name: str, method: int, command: list[str]
) -> None:
    key = keys[key_name]
    priv, _, data = _write_keys(tmp_path, key)
    sig_file = tmp_path / "sig.bin"
    if command[0] == "dgst":
        result = _run(*command, "-sign", priv, "-out", sig_file, data)
    else:
        result = _run(*command, "-sign", "-inkey", priv, "-in", data, "-out", sig_file)
    assert result.returncode == 0, result.stderr.decode()
    signature = sig_file.read_bytes()
    if name in ALGID:
        der = SCHEMES[ALGID[name]].algorithm_identifier
        auth = bytes([len(der)]) + der + signature
    elif method == ECDSA_256:
        auth = _der_to_r_s(signature, 32)
    else:
        auth = signature
    public = key.public_key()
    assert verify(method, public, OCTETS, auth)
    assert not verify(method, public, OCTETS + b"!", auth)


@pytest.mark.parametrize(("name", "key_name", "method", "command"), OPENSSL_CASES)
def test_our_signature_verifies_with_openssl(
    tmp_path: Path, keys: dict[str, Key], name: str, key_name: str, method: int, command: list[str]
) -> None:
    key = keys[key_name]
    _, pub, data = _write_keys(tmp_path, key)
    auth = sign(method, key, OCTETS, hashes_peer_accepts=ALL_HASHES, rsa_pss="pss" in name)
    if method == DIGITAL_SIGNATURE:
        assert _scheme_of(auth) == ALGID[name]
        signature = auth[1 + auth[0] :]
    elif method == ECDSA_256:
        signature = _r_s_to_der(auth)
    else:
        signature = auth
    sig_file = tmp_path / "sig.bin"
    sig_file.write_bytes(signature)
    if command[0] == "dgst":
        result = _run(*command, "-verify", pub, "-signature", sig_file, data)
    else:
        result = _run(*command, "-verify", "-pubin", "-inkey", pub, "-in", data, "-sigfile", sig_file)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert b"Verified OK" in result.stdout or b"Signature Verified Successfully" in result.stdout


# --- SIGNATURE_HASH_ALGORITHMS notify data (RFC 7427 section 4) ----------------------------------


def test_signature_hashes_encoding() -> None:
    assert encode_signature_hashes([2, 3, 4]) == bytes.fromhex("000200030004")
    assert encode_signature_hashes([]) == b""
    decoded = decode_signature_hashes(bytes.fromhex("0002 0005 1234 0001".replace(" ", "")))
    assert decoded == (HashAlgorithm.SHA2_256, HashAlgorithm.IDENTITY, 0x1234, HashAlgorithm.SHA1)
    assert isinstance(decoded[0], HashAlgorithm) and not isinstance(decoded[2], HashAlgorithm)


def test_signature_hashes_parse_failures() -> None:
    for odd in (b"\x00", b"\x00\x02\x00"):
        with pytest.raises(ParseError, match="odd"):
            decode_signature_hashes(odd)
    assert len(decode_signature_hashes(b"\x00\x02" * MAX_SIGNATURE_HASHES)) == MAX_SIGNATURE_HASHES
    with pytest.raises(ParseError, match="more than"):
        decode_signature_hashes(b"\x00\x02" * (MAX_SIGNATURE_HASHES + 1))
    for bad in ([-1], [0x10000]):
        with pytest.raises(LocalProtocolError):
            encode_signature_hashes(bad)
    with pytest.raises(LocalProtocolError):
        encode_signature_hashes([2] * (MAX_SIGNATURE_HASHES + 1))


@given(st.lists(st.integers(0, 0xFFFF), max_size=MAX_SIGNATURE_HASHES))
def test_signature_hashes_round_trip(ids: list[int]) -> None:
    assert decode_signature_hashes(encode_signature_hashes(ids)) == tuple(ids)


@given(st.binary(max_size=200))
def test_signature_hashes_arbitrary_data_parses_or_raises_parse_error(data: bytes) -> None:
    try:
        decoded = decode_signature_hashes(data)
    except ParseError:
        return
    assert encode_signature_hashes(decoded) == data


def test_decoded_hashes_feed_the_scheme_choice(keys: dict[str, Key]) -> None:
    peer = decode_signature_hashes(encode_signature_hashes([0xBEEF, 4, 5]))
    auth = sign(DIGITAL_SIGNATURE, keys["p256"], OCTETS, hashes_peer_accepts=peer)
    assert _scheme_of(auth) == "ecdsa-with-SHA512"


def test_scheme_reprs_hold_no_key_material(keys: dict[str, Key]) -> None:
    text = repr(SIGNATURE_SCHEMES)
    rsa_key = keys["rsa"]
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    assert format(rsa_key.public_key().public_numbers().n, "x")[:16] not in text

