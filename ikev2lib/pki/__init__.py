"""The certificate side of IKEv2 certificate authentication (RFC 7296 3.6, 3.7 and 2.15, RFC 5280).

Not yet wired into the engine. The parts, imports pointing down:

- `limits.py`: the named bounds on what a peer controls (chain depth, certificate size and count,
  CERTREQ hashes).
- `keys.py`: the key types and sizes IKE authentication runs (one rule for our keys and the peer's).
- `errors.py`: `CertificateError` (a RemoteProtocolError answered with AUTHENTICATION_FAILED) and its
  `CertFailure` reasons.
- `credentials.py`: our keys, certificates, CRLs and PKCS#12 bundles from files and directories
  (`LocalProtocolError` naming the file on any problem), and `Credential`.
- `certreq.py`: CA key hashes (`ca_key_hash`), CERTREQ parsing and building, choosing the credential
  whose chain the peer asked for.
- `identity.py`: an IKE identity against the end-entity certificate.
- `parsed.py`, `store.py`: decoded certificates; `TrustStore` (anchors and CRLs).
- `trust.py`: `validate_chain`, a peer's chain against a `TrustStore` at a given `now`.
"""

from __future__ import annotations

from .certreq import (
    CERTREQ_HASH_SIZE,
    ca_key_hash,
    certreq_data,
    certreq_hashes,
    chain_ca_hashes,
    parse_certreq,
    select_credential,
)
from .credentials import (
    MAX_CREDENTIAL_FILE,
    Credential,
    Passphrase,
    load_certificate_dir,
    load_certificates,
    load_credential,
    load_crl_dir,
    load_crls,
    load_pkcs12,
    load_private_key,
    parse_certificates,
    parse_crls,
    parse_private_key,
)
from .errors import CertFailure, CertificateError
from .identity import cert_matches_id
from .keys import CURVES, MIN_RSA_BITS, PrivateKey, PublicKey, key_problem
from .limits import MAX_CERT_PAYLOADS, MAX_CERT_SIZE, MAX_CERTREQ_HASHES, MAX_CHAIN_DEPTH
from .store import Revocation, TrustStore
from .trust import IKE_EKUS, ValidatedChain, to_datetime, validate_chain

__all__ = [
    "CERTREQ_HASH_SIZE",
    "CURVES",
    "CertFailure",
    "CertificateError",
    "Credential",
    "IKE_EKUS",
    "MAX_CERTREQ_HASHES",
    "MAX_CERT_PAYLOADS",
    "MAX_CERT_SIZE",
    "MAX_CHAIN_DEPTH",
    "MAX_CREDENTIAL_FILE",
    "MIN_RSA_BITS",
    "Passphrase",
    "PrivateKey",
    "PublicKey",
    "Revocation",
    "TrustStore",
    "ValidatedChain",
    "ca_key_hash",
    "cert_matches_id",
    "certreq_data",
    "certreq_hashes",
    "chain_ca_hashes",
    "key_problem",
    "load_certificate_dir",
    "load_certificates",
    "load_credential",
    "load_crl_dir",
    "load_crls",
    "load_pkcs12",
    "load_private_key",
    "parse_certificates",
    "parse_certreq",
    "parse_crls",
    "parse_private_key",
    "select_credential",
    "to_datetime",
    "validate_chain",
]
