"""Validation against a PKI made by the openssl command-line tool (an independent encoder of the
certificates, extensions and CRLs), tests/pki/certs.py:build_openssl_pki."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest

from ikev2lib.pki import CertFailure, CertificateError, TrustStore, load_certificates, load_crls, validate_chain
from ikev2lib.wire import IdType

from .certs import OpensslPki, build_openssl_pki, openssl

FQDN = (int(IdType.ID_FQDN), b"gw.openssl.test")


def now() -> dt.datetime:
    # openssl 3.0's `x509 -req` dates certificates from the real current time
    return dt.datetime.now(dt.timezone.utc)


def test_openssl_chain_is_valid(ossl: OpensslPki) -> None:
    store = TrustStore(load_certificates(ossl.path("root.pem")))
    ee, inter = ossl.der("ee.pem"), ossl.der("inter.pem")
    for identity in (
        FQDN,
        (int(IdType.ID_RFC822_ADDR), b"bob@openssl.test"),
        (int(IdType.ID_IPV4_ADDR), ipaddress.ip_address("198.51.100.7").packed),
        (int(IdType.ID_DER_ASN1_DN), ossl.cert("ee.pem").subject.public_bytes()),
    ):
        result = validate_chain(store, ee, [inter], now=now(), identity=identity)
        assert result.path == (ossl.cert("ee.pem"), ossl.cert("inter.pem"), ossl.cert("root.pem"))
    with pytest.raises(CertificateError) as info:
        validate_chain(store, ee, [inter], now=now(), identity=(int(IdType.ID_FQDN), b"gw.other.test"))
    assert info.value.reason is CertFailure.IDENTITY_MISMATCH
    with pytest.raises(CertificateError) as info:
        validate_chain(store, ee, [inter], now=now() + dt.timedelta(days=400), identity=FQDN)
    assert info.value.reason is CertFailure.EXPIRED


def test_openssl_code_signing_certificate_is_refused(ossl: OpensslPki) -> None:
    store = TrustStore([ossl.cert("root.pem")])
    with pytest.raises(CertificateError) as info:
        validate_chain(store, ossl.der("signer.pem"), [ossl.der("inter.pem")], now=now(),
                       identity=(int(IdType.ID_FQDN), b"code.openssl.test"))
    assert info.value.reason is CertFailure.BAD_KEY_USAGE


def test_openssl_sha1_signature_is_weak(ossl: OpensslPki) -> None:
    openssl("x509", "-req", "-in", "ee.csr", "-CA", "inter.pem", "-CAkey", "inter.key", "-CAcreateserial",
            "-days", "30", "-extfile", "ext.cnf", "-extensions", "ee", "-sha1", "-out", "ee-sha1.pem", cwd=ossl.dir)
    with pytest.raises(CertificateError) as info:
        validate_chain(TrustStore([ossl.cert("root.pem")]), ossl.der("ee-sha1.pem"), [ossl.der("inter.pem")],
                       now=now(), identity=FQDN)
    assert info.value.reason is CertFailure.WEAK_ALGORITHM


def test_openssl_ca_gencrl_revocation(tmp_path: Path) -> None:
    """`openssl ca -gencrl` before and after `openssl ca -revoke` (own PKI: revoking changes its state)."""
    pki = build_openssl_pki(tmp_path / "pki")
    ee, inter = pki.der("ee.pem"), pki.der("inter.pem")
    root = pki.cert("root.pem")
    empty = load_crls(pki.gencrl())
    validate_chain(TrustStore([root], empty), ee, [inter], now=now(), identity=FQDN)
    revoked = load_crls(pki.revoke_and_gencrl("ee.pem"))
    with pytest.raises(CertificateError, match="revoked") as info:
        validate_chain(TrustStore([root], revoked), ee, [inter], now=now(), identity=FQDN)
    assert info.value.reason is CertFailure.REVOKED
    assert revoked[0].get_revoked_certificate_by_serial_number(pki.cert("signer.pem").serial_number) is None
    # a CRL dated past its nextUpdate (30 days) is ignored
    validate_chain(TrustStore([root], revoked), ee, [inter], now=now() + dt.timedelta(days=31), identity=FQDN)


def test_openssl_crl_from_an_impostor_ca_is_ignored(ossl: OpensslPki, tmp_path: Path) -> None:
    """A CA with the intermediate's name but its own key revokes the end entity: not signed by the
    real issuer, so the CRL is ignored."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "index.txt").write_text("")
    (fake / "crlnumber").write_text("01\n")
    (fake / "ca.cnf").write_text(
        f"[ca]\ndefault_ca = f\n[f]\ndatabase = {fake}/index.txt\ncrlnumber = {fake}/crlnumber\n"
        f"certificate = {fake}/fake.pem\nprivate_key = {fake}/fake.key\ndefault_md = sha256\ndefault_crl_days = 30\n"
    )
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            "fake.key", "-out", "fake.pem", "-days", "30", "-subj", "/O=openssl tests/CN=OpenSSL Intermediate",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=fake)
    (fake / "ee.pem").write_bytes(ossl.path("ee.pem").read_bytes())
    openssl("ca", "-config", "ca.cnf", "-revoke", "ee.pem", cwd=fake)
    openssl("ca", "-config", "ca.cnf", "-gencrl", "-out", "forged.pem", cwd=fake)
    forged = load_crls(fake / "forged.pem")
    assert forged[0].issuer == ossl.cert("inter.pem").subject
    validate_chain(TrustStore([ossl.cert("root.pem")], forged), ossl.der("ee.pem"), [ossl.der("inter.pem")],
                   now=now(), identity=FQDN)
