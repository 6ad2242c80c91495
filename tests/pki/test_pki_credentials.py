"""Loading our keys, certificates, CRLs and PKCS#12 bundles (ikev2lib/pki/credentials.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x25519
from cryptography.hazmat.primitives.serialization import pkcs12

from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.pki import (
    Credential,
    PrivateKey,
    TrustStore,
    load_certificate_dir,
    load_certificates,
    load_credential,
    load_crl_dir,
    load_crls,
    load_pkcs12,
    load_private_key,
    parse_private_key,
)

from .certs import KeyPool, OpensslPki, Pki, der, make_crl, openssl

Enc, Fmt = serialization.Encoding, serialization.PrivateFormat
PASSPHRASE = "correct horse battery staple"


def spki(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(Enc.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_key(a: PrivateKey, b: PrivateKey) -> bool:
    return type(a) is type(b) and spki(a) == spki(b)


KINDS = ["rsa", "p256", "p384", "p521", "ed25519", "ed448"]


def formats(key: PrivateKey) -> list[tuple[str, bytes, str | None]]:
    """(label, encoded key, passphrase) in every format cryptography writes for the key type."""
    out = []
    traditional = not isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
    for enc_name, enc in (("PEM", Enc.PEM), ("DER", Enc.DER)):
        out.append((f"pkcs8-{enc_name}", key.private_bytes(enc, Fmt.PKCS8, serialization.NoEncryption()), None))
        secret = serialization.BestAvailableEncryption(PASSPHRASE.encode())
        out.append((f"pkcs8-encrypted-{enc_name}", key.private_bytes(enc, Fmt.PKCS8, secret), PASSPHRASE))
        if traditional:  # PKCS#1 for RSA, SEC1 for EC
            out.append((f"traditional-{enc_name}", key.private_bytes(enc, Fmt.TraditionalOpenSSL,
                                                                      serialization.NoEncryption()), None))
    if traditional:  # legacy "Proc-Type: 4,ENCRYPTED" PEM
        legacy = key.private_bytes(Enc.PEM, Fmt.TraditionalOpenSSL, serialization.BestAvailableEncryption(b"pw"))
        out.append(("traditional-encrypted-PEM", legacy, "pw"))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_every_key_format(keys: KeyPool, tmp_path: Path, kind: str) -> None:
    key = keys.new(kind)
    for label, data, passphrase in formats(key):
        path = tmp_path / f"{kind}-{label}.key"
        path.write_bytes(data)
        loaded = load_private_key(path, passphrase)
        assert same_key(loaded, key), label
        if passphrase is not None:
            with pytest.raises(LocalProtocolError, match="wrong passphrase") as info:
                load_private_key(path, "not it")
            assert str(path) in str(info.value)
            with pytest.raises(LocalProtocolError, match="no passphrase was given"):
                load_private_key(path)
        else:
            assert same_key(load_private_key(path, "ignored"), key)


def test_pkcs1_and_sec1_headers(keys: KeyPool) -> None:
    """The traditional formats are what their PEM labels say: PKCS#1 for RSA, SEC1 for EC."""
    rsa_pem = keys.rsa().private_bytes(Enc.PEM, Fmt.TraditionalOpenSSL, serialization.NoEncryption())
    ec_pem = keys.new("p256").private_bytes(Enc.PEM, Fmt.TraditionalOpenSSL, serialization.NoEncryption())
    assert rsa_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert ec_pem.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert isinstance(parse_private_key(rsa_pem), rsa.RSAPrivateKey)
    assert isinstance(parse_private_key(ec_pem), ec.EllipticCurvePrivateKey)


def test_openssl_made_key_files(tmp_path: Path) -> None:
    openssl("genrsa", "-traditional", "-out", "rsa1.pem", "2048", cwd=tmp_path)
    openssl("ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", "ec.pem", cwd=tmp_path)
    openssl("pkcs8", "-topk8", "-in", "ec.pem", "-v2", "aes-256-cbc", "-passout", f"pass:{PASSPHRASE}",
            "-outform", "DER", "-out", "ec-enc.der", cwd=tmp_path)
    openssl("genpkey", "-algorithm", "ed448", "-out", "ed448.pem", cwd=tmp_path)
    assert (tmp_path / "rsa1.pem").read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert isinstance(load_private_key(tmp_path / "rsa1.pem"), rsa.RSAPrivateKey)
    sec1 = load_private_key(tmp_path / "ec.pem")
    assert isinstance(sec1, ec.EllipticCurvePrivateKey) and sec1.curve.name == "secp384r1"
    assert same_key(load_private_key(tmp_path / "ec-enc.der", PASSPHRASE), sec1)
    with pytest.raises(LocalProtocolError, match="wrong passphrase"):
        load_private_key(tmp_path / "ec-enc.der", PASSPHRASE.upper())
    assert isinstance(load_private_key(tmp_path / "ed448.pem"), ed448.Ed448PrivateKey)


@pytest.mark.parametrize(
    "make, why",
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), "RSA key of 1024 bits is too small"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "secp256k1 is not supported"),
        (lambda: x25519.X25519PrivateKey.generate(), "not supported"),
        (lambda: dsa.generate_private_key(key_size=2048), "not supported"),
    ],
    ids=["rsa1024", "secp256k1", "x25519", "dsa"],
)
def test_unsupported_and_weak_keys(tmp_path: Path, make: object, why: str) -> None:
    key = make()  # type: ignore[operator]
    path = tmp_path / "weak.pem"
    path.write_bytes(key.private_bytes(Enc.PEM, Fmt.PKCS8, serialization.NoEncryption()))
    with pytest.raises(LocalProtocolError, match=why) as info:
        load_private_key(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("data", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                                  b"\x30\x03\x02\x01\x00"])
def test_not_a_key(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(data)
    with pytest.raises(LocalProtocolError, match="not a private key") as info:
        load_private_key(path)
    assert str(path) in str(info.value)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(LocalProtocolError, match="cannot read") as info:
        load_private_key(tmp_path / "nope.key")
    assert "nope.key" in str(info.value)


def test_key_material_never_in_repr_or_errors(keys: KeyPool, pki: Pki, tmp_path: Path) -> None:
    key = keys.rsa()
    cred = Credential(pki.ee_key, pki.ee, (pki.inter,))
    secret_hex = format(pki.ee_key.private_numbers().private_value, "x")  # type: ignore[union-attr]
    assert secret_hex not in repr(cred) and "ECDSA-secp256r1" in repr(cred)
    pem = key.private_bytes(Enc.PEM, Fmt.PKCS8, serialization.BestAvailableEncryption(b"pw"))
    path = tmp_path / "k.pem"
    path.write_bytes(pem)
    with pytest.raises(LocalProtocolError) as info:
        load_private_key(path, "wrong")
    assert pem.decode() not in str(info.value) and "wrong" not in str(info.value).replace("wrong passphrase", "")


def _p12(pki: Pki, passphrase: bytes | None, *, with_key: bool = True) -> bytes:
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption())
    return pkcs12.serialize_key_and_certificates(
        b"vpn", pki.ee_key if with_key else None, pki.ee, [pki.inter, pki.root], encryption  # type: ignore[arg-type]
    )


def test_pkcs12(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "bundle.p12"
    path.write_bytes(_p12(pki, PASSPHRASE.encode()))
    cred = load_pkcs12(path, PASSPHRASE)
    assert same_key(cred.key, pki.ee_key) and cred.certificate == pki.ee
    assert cred.chain == (pki.inter, pki.root)
    assert cred.cert_payloads() == (der(pki.ee), der(pki.inter))  # the self-signed root is not sent
    with pytest.raises(LocalProtocolError, match="wrong passphrase"):
        load_pkcs12(path, "wrong")
    with pytest.raises(LocalProtocolError, match="no passphrase"):
        load_pkcs12(path)
    open_path = tmp_path / "open.p12"
    open_path.write_bytes(_p12(pki, None))
    assert load_pkcs12(open_path).certificate == pki.ee
    assert load_pkcs12(open_path, "ignored").certificate == pki.ee


def test_pkcs12_without_key_and_garbage(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "certs-only.p12"
    path.write_bytes(_p12(pki, None, with_key=False))
    with pytest.raises(LocalProtocolError, match="no private key"):
        load_pkcs12(path)
    path.write_bytes(b"definitely not PKCS#12")
    with pytest.raises(LocalProtocolError, match="not a PKCS#12"):
        load_pkcs12(path, "x")


def test_pkcs12_made_by_openssl(ossl: OpensslPki) -> None:
    openssl("pkcs12", "-export", "-inkey", "ee.key", "-in", "ee.pem", "-certfile", "inter.pem",
            "-passout", f"pass:{PASSPHRASE}", "-out", "ee.p12", cwd=ossl.dir)
    cred = load_pkcs12(ossl.path("ee.p12"), PASSPHRASE)
    assert isinstance(cred.key, ed25519.Ed25519PrivateKey)
    assert cred.certificate == ossl.cert("ee.pem") and cred.chain == (ossl.cert("inter.pem"),)
    with pytest.raises(LocalProtocolError, match="wrong passphrase"):
        load_pkcs12(ossl.path("ee.p12"), "nope")


def test_load_credential_and_mismatch(pki: Pki, other_pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "ee.key").write_bytes(pki.ee_key.private_bytes(Enc.PEM, Fmt.PKCS8, serialization.NoEncryption()))
    (tmp_path / "ee.pem").write_bytes(pki.ee.public_bytes(Enc.PEM) + pki.inter.public_bytes(Enc.PEM))
    (tmp_path / "root.der").write_bytes(der(pki.root))
    (tmp_path / "other.pem").write_bytes(other_pki.ee.public_bytes(Enc.PEM))
    cred = load_credential(tmp_path / "ee.key", tmp_path / "ee.pem", [tmp_path / "root.der"])
    assert cred.certificate == pki.ee and cred.chain == (pki.inter, pki.root)
    with pytest.raises(LocalProtocolError, match="does not belong") as info:
        load_credential(tmp_path / "ee.key", tmp_path / "other.pem")
    assert "other.pem" in str(info.value)
    with pytest.raises(LocalProtocolError, match="does not belong"):
        Credential(other_pki.ee_key, pki.ee)


def test_certificate_files_and_directories(pki: Pki, other_pki: Pki, tmp_path: Path) -> None:
    """swanctl-like x509ca/ and x509crl/ directories, PEM and DER mixed."""
    ca_dir, crl_dir = tmp_path / "x509ca", tmp_path / "x509crl"
    ca_dir.mkdir()
    crl_dir.mkdir()
    (ca_dir / "a.pem").write_bytes(pki.root.public_bytes(Enc.PEM))
    (ca_dir / "b.der").write_bytes(der(other_pki.root))
    (ca_dir / ".hidden").write_bytes(b"editor swap file")
    (ca_dir / "subdir").mkdir()
    crl = make_crl(pki.inter, pki.inter_key, [pki.ee.serial_number])
    (crl_dir / "inter.crl").write_bytes(crl.public_bytes(Enc.DER))
    two = b"".join(make_crl(p.root, p.root_key).public_bytes(Enc.PEM) for p in (pki, other_pki))
    (crl_dir / "roots.pem").write_bytes(two)
    assert load_certificate_dir(ca_dir) == (pki.root, other_pki.root)
    assert len(load_crl_dir(crl_dir)) == 3 and len(load_crls(crl_dir / "roots.pem")) == 2
    store = TrustStore.from_directories(ca_dir, crl_dir)
    assert repr(store) == "TrustStore(anchors=2, crls=3, revocation=relaxed)"
    (ca_dir / "junk.pem").write_bytes(b"not a certificate")
    with pytest.raises(LocalProtocolError, match="not an X.509 certificate") as info:
        load_certificate_dir(ca_dir)
    assert "junk.pem" in str(info.value)
    (crl_dir / "junk.crl").write_bytes(b"\x30\x00")
    with pytest.raises(LocalProtocolError, match="not an X.509 CRL") as info:
        load_crl_dir(crl_dir)
    assert "junk.crl" in str(info.value)
    with pytest.raises(LocalProtocolError, match="cannot list"):
        load_certificate_dir(tmp_path / "absent")
    assert load_certificates(ca_dir / "a.pem") == (pki.root,)
