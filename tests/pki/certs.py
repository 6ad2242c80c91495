"""Test PKIs: one built with `cryptography` (any key type, any extension), one with the `openssl`
command-line tool (an independent maker of certificates and CRLs).

Times are fixed (`NOW`) for the cryptography PKIs, so tests pass `now` explicitly; the openssl PKI is
valid around the real current time, because `openssl x509 -req` in OpenSSL 3.0 only takes `-days`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from ikev2lib.pki import PrivateKey

UTC = dt.timezone.utc
NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)
YEAR = dt.timedelta(days=365)
OPENSSL = "/usr/bin/openssl"
IPSEC_IKE = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17")

EE_DNS = "vpn.example.org"
EE_MAIL = "alice@Example.ORG"
EE_IPV4 = ipaddress.ip_address("192.0.2.10")
EE_IPV6 = ipaddress.ip_address("2001:db8::10")


class KeyPool:
    """Keys for test PKIs. RSA keys are slow to make, so a session makes a few and hands them out in
    turn (a PKI never needs two equal RSA keys next to each other); the others are made fresh."""

    def __init__(self, rsa_count: int = 4) -> None:
        self._rsa = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(rsa_count)]
        self._next = 0

    def rsa(self) -> rsa.RSAPrivateKey:
        key = self._rsa[self._next % len(self._rsa)]
        self._next += 1
        return key

    def new(self, kind: str) -> PrivateKey:
        if kind == "rsa":
            return self.rsa()
        if kind == "p256":
            return ec.generate_private_key(ec.SECP256R1())
        if kind == "p384":
            return ec.generate_private_key(ec.SECP384R1())
        if kind == "p521":
            return ec.generate_private_key(ec.SECP521R1())
        if kind == "ed25519":
            return ed25519.Ed25519PrivateKey.generate()
        if kind == "ed448":
            return ed448.Ed448PrivateKey.generate()
        raise ValueError(kind)


def name(common_name: str, org: str = "ikev2lib tests") -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _hash_for(key: object) -> hashes.HashAlgorithm | None:
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    return hashes.SHA256()


def _usage(*, signature: bool = False, cert_sign: bool = False, crl_sign: bool = False,
           non_repudiation: bool = False, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signature, content_commitment=non_repudiation, key_encipherment=key_encipherment,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=crl_sign,
        encipher_only=False, decipher_only=False,
    )


CA_USAGE = _usage(cert_sign=True, crl_sign=True)
EE_USAGE = _usage(signature=True)
DEFAULT_SAN = x509.SubjectAlternativeName(
    [x509.DNSName(EE_DNS), x509.RFC822Name(EE_MAIL), x509.IPAddress(EE_IPV4), x509.IPAddress(EE_IPV6)]
)
_SERIAL = iter(range(1000, 1 << 30))


def issue(
    subject: x509.Name,
    key: PrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: PrivateKey,
    *,
    ca: bool,
    path_len: int | None = None,
    key_usage: x509.KeyUsage | None | str = "default",
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    san: x509.SubjectAlternativeName | None | str = "default",
    not_before: dt.datetime = NOW - YEAR,
    not_after: dt.datetime = NOW + YEAR,
    basic_constraints: bool = True,
    extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
    hash_algorithm: hashes.HashAlgorithm | None | str = "default",
    serial: int | None = None,
) -> x509.Certificate:
    """One certificate; `issuer` None makes it self-signed."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else next(_SERIAL))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
    if key_usage == "default":
        key_usage = CA_USAGE if ca else EE_USAGE
    if isinstance(key_usage, x509.KeyUsage):
        builder = builder.add_extension(key_usage, critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if san == "default":
        san = None if ca else DEFAULT_SAN
    if isinstance(san, x509.SubjectAlternativeName):
        builder = builder.add_extension(san, critical=False)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    for extension, critical in extra:
        builder = builder.add_extension(extension, critical=critical)
    algorithm = _hash_for(issuer_key) if hash_algorithm == "default" else hash_algorithm
    return builder.sign(issuer_key, algorithm)  # type: ignore[arg-type]


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass
class Pki:
    root: x509.Certificate
    root_key: PrivateKey
    inter: x509.Certificate
    inter_key: PrivateKey
    ee: x509.Certificate
    ee_key: PrivateKey
    keys: KeyPool = field(repr=False)

    @property
    def sent(self) -> tuple[bytes, list[bytes]]:
        """What the peer puts in CERT payloads: its certificate and the intermediate."""
        return der(self.ee), [der(self.inter)]

    def leaf(self, kind: str = "p256", **options: object) -> tuple[x509.Certificate, PrivateKey]:
        """Another end-entity certificate from the intermediate."""
        key = self.keys.new(kind)
        options.setdefault("ca", False)
        return issue(name(f"leaf {kind}"), key, self.inter, self.inter_key, **options), key  # type: ignore[arg-type]


def build_pki(keys: KeyPool, kind: str = "p256", *, ee_kind: str | None = None, tag: str = "") -> Pki:
    """root CA -> intermediate CA -> end entity, all keys of `kind` (the end entity's `ee_kind`)."""
    root_key, inter_key, ee_key = keys.new(kind), keys.new(kind), keys.new(ee_kind or kind)
    root = issue(name(f"Root CA {kind}{tag}"), root_key, None, root_key, ca=True)
    inter = issue(name(f"Intermediate CA {kind}{tag}"), inter_key, root, root_key, ca=True, path_len=0)
    ee = issue(name(EE_DNS), ee_key, inter, inter_key, ca=False, eku=[IPSEC_IKE])
    return Pki(root, root_key, inter, inter_key, ee, ee_key, keys)


def make_crl(
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    revoked: Sequence[int] = (),
    *,
    last_update: dt.datetime = NOW - DAY,
    next_update: dt.datetime = NOW + 7 * DAY,
    issuer_name: x509.Name | None = None,
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_name or issuer.subject)
        .last_update(last_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(1), critical=False)
    )
    for serial in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last_update).build()
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(issuer_key, _hash_for(issuer_key))  # type: ignore[arg-type]


# --- the openssl-made PKI --------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> str:
    done = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr}")
    return done.stdout


_CA_EXT = """[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ee]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:gw.openssl.test, email:bob@openssl.test, IP:198.51.100.7
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[signer]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
subjectAltName = DNS:code.openssl.test
"""

_CA_CONF = """[ca]
default_ca = intermediate
[intermediate]
database = {dir}/index.txt
crlnumber = {dir}/crlnumber
certificate = {dir}/inter.pem
private_key = {dir}/inter.key
default_md = sha256
default_crl_days = 30
"""


@dataclass
class OpensslPki:
    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    def cert(self, name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.path(name).read_bytes())

    def der(self, name: str) -> bytes:
        return der(self.cert(name))

    def revoke_and_gencrl(self, cert_name: str, out: str = "crl.pem") -> Path:
        """`openssl ca -revoke` then `openssl ca -gencrl`: a CRL of the intermediate."""
        conf = str(self.path("ca.cnf"))
        openssl("ca", "-config", conf, "-revoke", cert_name, cwd=self.dir)
        openssl("ca", "-config", conf, "-gencrl", "-out", out, cwd=self.dir)
        return self.path(out)

    def gencrl(self, out: str = "crl-empty.pem") -> Path:
        openssl("ca", "-config", str(self.path("ca.cnf")), "-gencrl", "-out", out, cwd=self.dir)
        return self.path(out)


def build_openssl_pki(directory: Path) -> OpensslPki:
    """root (P-384) -> intermediate (P-256) -> end entity `ee.pem` (Ed25519, SANs of gw.openssl.test)
    and `signer.pem` (P-256, codeSigning only), with openssl's own key generation and signing."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ext.cnf").write_text(_CA_EXT)
    (directory / "ca.cnf").write_text(_CA_CONF.format(dir=directory))
    (directory / "index.txt").write_text("")
    (directory / "crlnumber").write_text("01\n")
    run = lambda *args: openssl(*args, cwd=directory)  # noqa: E731
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes",
        "-keyout", "root.key", "-out", "root.pem", "-days", "3650", "-subj", "/O=openssl tests/CN=OpenSSL Root",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for stem, subj, key_args, ext, issuer in (
        ("inter", "/O=openssl tests/CN=OpenSSL Intermediate",
         ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"), "ca", "root"),
        ("ee", "/O=openssl tests/CN=gw.openssl.test", ("-newkey", "ed25519"), "ee", "inter"),
        ("signer", "/O=openssl tests/CN=code.openssl.test",
         ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"), "signer", "inter"),
    ):
        run("req", "-new", *key_args, "-nodes", "-keyout", f"{stem}.key", "-out", f"{stem}.csr", "-subj", subj)
        run("x509", "-req", "-in", f"{stem}.csr", "-CA", f"{issuer}.pem", "-CAkey", f"{issuer}.key",
            "-CAcreateserial", "-days", "365", "-extfile", "ext.cnf", "-extensions", ext, "-out", f"{stem}.pem",
            "-sha256")
    return OpensslPki(directory)
