"""Our side of certificate authentication, loaded from files: private keys, certificates, CRLs.

Private keys: PEM or DER, PKCS#1 (RSA), SEC1 (EC), PKCS#8, encrypted PKCS#8 and legacy encrypted PEM
(a passphrase), and PKCS#12 bundles (key, end-entity certificate and extra certificates). Key types
and sizes are those of `keys.key_problem`. Certificates and CRLs: PEM (one or more blocks) or DER,
from single files or from a directory in the manner of strongSwan's swanctl `x509/`, `x509ca/` and
`x509crl/` (every regular, non-hidden file, in name order).

Every problem is a `LocalProtocolError` (the configuration is wrong) that names the file and what was
wrong; an encrypted key that does not decrypt is reported as a wrong passphrase. Key material never
appears in a message or a repr.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from ..exceptions import LocalProtocolError
from .errors import DECODE_ERRORS
from .keys import PrivateKey, as_private_key, key_description, key_problem

__all__ = [
    "MAX_CREDENTIAL_FILE",
    "Credential",
    "Passphrase",
    "load_certificate_dir",
    "load_certificates",
    "load_credential",
    "load_crl_dir",
    "load_crls",
    "load_pkcs12",
    "load_private_key",
    "parse_certificates",
    "parse_crls",
    "parse_private_key",
]

# Largest credential file read: real keys, certificates and bundles are a few KiB and a CRL of a big
# CA a few MiB at most; the cap stops a mistyped path (a disk image, /dev/zero) from filling memory.
MAX_CREDENTIAL_FILE = 16 * 1024 * 1024

Passphrase: TypeAlias = bytes | str | None
StrPath: TypeAlias = str | os.PathLike[str]

_PEM_MARK = b"-----BEGIN "
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


def _fail(source: str, why: str) -> LocalProtocolError:
    return LocalProtocolError(f"{source}: {why}")


def _read(path: StrPath) -> tuple[bytes, str]:
    source = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CREDENTIAL_FILE + 1)
    except OSError as exc:
        raise _fail(source, f"cannot read ({exc.strerror or exc})") from exc
    if len(data) > MAX_CREDENTIAL_FILE:
        raise _fail(source, f"larger than {MAX_CREDENTIAL_FILE} bytes, not a credential file")
    return data, source


def _password(passphrase: Passphrase) -> bytes | None:
    return passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase


def _checked_key(key: object, source: str) -> PrivateKey:
    problem = key_problem(key)
    if problem is not None:
        raise _fail(source, problem[1])
    private = as_private_key(key)
    if private is None:  # key_problem refuses every other type; this narrows the type
        raise _fail(source, "unsupported private key type")
    return private


def parse_private_key(data: bytes, passphrase: Passphrase = None, *, source: str = "<key>") -> PrivateKey:
    """A private key from PEM or DER bytes (PKCS#1, SEC1, PKCS#8, encrypted PKCS#8 or legacy PEM).
    A passphrase given for a key that is not encrypted is ignored (as strongSwan does)."""
    loader = serialization.load_pem_private_key if _PEM_MARK in data else serialization.load_der_private_key
    try:
        # first without a passphrase: cryptography tells "encrypted" (TypeError) from "not a key"
        return _checked_key(loader(data, None), source)
    except TypeError:
        pass
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _fail(source, "not a private key in PEM or DER (PKCS#1, SEC1 or PKCS#8)") from exc
    password = _password(passphrase)
    if not password:
        raise _fail(source, "the private key is encrypted and no passphrase was given")
    try:
        key = loader(data, password)
    except ValueError as exc:
        raise _fail(source, "wrong passphrase for the encrypted private key") from exc
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise _fail(source, "the private key's encryption is not supported") from exc
    return _checked_key(key, source)


def load_private_key(path: StrPath, passphrase: Passphrase = None) -> PrivateKey:
    data, source = _read(path)
    return parse_private_key(data, passphrase, source=source)


def _checked_certificate(cert: x509.Certificate, source: str) -> x509.Certificate:
    try:
        # parsing is lazy: decode what validation and selection read now, while the file is known
        cert.public_key()
        cert.extensions
        cert.subject.public_bytes()
        cert.issuer.public_bytes()
    except DECODE_ERRORS as exc:
        raise _fail(source, f"certificate does not decode ({exc})") from exc
    return cert


def parse_certificates(data: bytes, *, source: str = "<certificates>") -> tuple[x509.Certificate, ...]:
    """Every certificate of PEM bytes (one or more blocks), or the one certificate of DER bytes."""
    try:
        if _PEM_MARK in data:
            certs = tuple(x509.load_pem_x509_certificates(data))
        else:
            certs = (x509.load_der_x509_certificate(data),)
    except DECODE_ERRORS as exc:
        raise _fail(source, "not an X.509 certificate in PEM or DER") from exc
    return tuple(_checked_certificate(cert, source) for cert in certs)


def load_certificates(path: StrPath) -> tuple[x509.Certificate, ...]:
    data, source = _read(path)
    return parse_certificates(data, source=source)


def _directory(path: StrPath) -> list[Path]:
    root = Path(path)
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise _fail(os.fspath(path), f"cannot list directory ({exc.strerror or exc})") from exc
    # swanctl loads every file of the directory; editors' and tools' hidden files are not credentials
    return [entry for entry in entries if not entry.name.startswith(".") and entry.is_file()]


def load_certificate_dir(path: StrPath) -> tuple[x509.Certificate, ...]:
    """All certificates of a directory (like swanctl's `x509/` or `x509ca/`); a file that does not
    hold certificates is an error naming it."""
    return tuple(cert for entry in _directory(path) for cert in load_certificates(entry))


def parse_crls(data: bytes, *, source: str = "<crls>") -> tuple[x509.CertificateRevocationList, ...]:
    """Every CRL of PEM bytes (one or more blocks), or the one CRL of DER bytes. Entries are decoded
    here, so that a damaged CRL is a configuration error and not a surprise during validation."""
    try:
        if _PEM_MARK in data:
            blocks = _PEM_CRL.findall(data)
            if not blocks:
                raise ValueError("no X509 CRL block")
            crls = tuple(x509.load_pem_x509_crl(block) for block in blocks)
        else:
            crls = (x509.load_der_x509_crl(data),)
        for crl in crls:
            crl.issuer.public_bytes()
            crl.extensions
            for entry in crl:
                entry.extensions
    except DECODE_ERRORS as exc:
        raise _fail(source, "not an X.509 CRL in PEM or DER") from exc
    return crls


def load_crls(path: StrPath) -> tuple[x509.CertificateRevocationList, ...]:
    data, source = _read(path)
    return parse_crls(data, source=source)


def load_crl_dir(path: StrPath) -> tuple[x509.CertificateRevocationList, ...]:
    """All CRLs of a directory (like swanctl's `x509crl/`)."""
    return tuple(crl for entry in _directory(path) for crl in load_crls(entry))


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_pair(key: PrivateKey, cert: x509.Certificate, source: str) -> None:
    try:
        matches = _spki(key.public_key()) == _spki(cert.public_key())
    except DECODE_ERRORS as exc:
        raise _fail(source, "the certificate's public key does not decode") from exc
    if not matches:
        subject = cert.subject.rfc4514_string()
        raise _fail(source, f"the private key does not belong to certificate {subject!r}")


@dataclass(frozen=True, slots=True, repr=False)
class Credential:
    """A private key, its end-entity certificate, and the CA certificates to send with it (intermediates
    first, in issuing order; a self-signed root may be included and is not sent)."""

    key: PrivateKey = field(repr=False)
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        _checked_key(self.key, "credential")
        _check_pair(self.key, self.certificate, "credential")

    def __repr__(self) -> str:
        subject = self.certificate.subject.rfc4514_string()
        return f"Credential({key_description(self.key)}, {subject!r}, chain={len(self.chain)})"

    def cert_payloads(self) -> tuple[bytes, ...]:
        """DER of the certificates for CERT payloads (encoding 4): end-entity first, then the chain
        without self-signed roots (the peer must hold its trust anchor already, RFC 7296 3.6)."""
        sent = [self.certificate] + [c for c in self.chain if c.subject != c.issuer]
        return tuple(cert.public_bytes(serialization.Encoding.DER) for cert in sent)


def load_credential(
    key: StrPath, certificate: StrPath, chain: Sequence[StrPath] = (), passphrase: Passphrase = None
) -> Credential:
    """A credential from a key file, a certificate file (its first certificate is the end-entity one,
    any further ones join the chain) and chain files."""
    private = load_private_key(key, passphrase)
    certs = load_certificates(certificate)
    _check_pair(private, certs[0], os.fspath(certificate))
    extra = tuple(cert for path in chain for cert in load_certificates(path))
    return Credential(private, certs[0], certs[1:] + extra)


def _looks_like_der(data: bytes) -> bool:
    """Whether `data` is one DER SEQUENCE exactly (so a failed PKCS#12 decode means the passphrase)."""
    if len(data) < 2 or data[0] != 0x30:
        return False
    if data[1] < 0x80:
        return 2 + data[1] == len(data)
    size = data[1] & 0x7F
    if not 1 <= size <= 4 or len(data) < 2 + size:
        return False
    return 2 + size + int.from_bytes(data[2 : 2 + size], "big") == len(data)


def _open_pkcs12(data: bytes, password: bytes | None) -> pkcs12.PKCS12KeyAndCertificates:
    try:
        return pkcs12.load_pkcs12(data, password)
    except ValueError:
        if not password:
            raise
    # as for keys, a passphrase given for an unprotected bundle is ignored
    return pkcs12.load_pkcs12(data, None)


def load_pkcs12(path: StrPath, passphrase: Passphrase = None) -> Credential:
    """A credential from a PKCS#12 bundle: its key, its certificate and its other certificates."""
    data, source = _read(path)
    password = _password(passphrase)
    try:
        bundle = _open_pkcs12(data, password)
    except UnsupportedAlgorithm as exc:
        raise _fail(source, "the PKCS#12 encryption or MAC algorithm is not supported") from exc
    except (ValueError, TypeError) as exc:
        if not _looks_like_der(data):
            raise _fail(source, "not a PKCS#12 bundle") from exc
        if not password:
            raise _fail(source, "the PKCS#12 bundle is protected and no passphrase was given") from exc
        raise _fail(source, "wrong passphrase for the PKCS#12 bundle (or damaged contents)") from exc
    if bundle.key is None:
        raise _fail(source, "the PKCS#12 bundle holds no private key")
    if bundle.cert is None:
        raise _fail(source, "the PKCS#12 bundle holds no certificate for its key")
    key = _checked_key(bundle.key, source)
    cert = _checked_certificate(bundle.cert.certificate, source)
    _check_pair(key, cert, source)
    extra = tuple(_checked_certificate(c.certificate, source) for c in bundle.additional_certs)
    return Credential(key, cert, extra)
