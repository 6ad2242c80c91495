"""Named limits of certificate handling. Every count and size a peer controls is bounded here."""

__all__ = ["MAX_CERTREQ_HASHES", "MAX_CERT_PAYLOADS", "MAX_CERT_SIZE", "MAX_CHAIN_DEPTH"]

# Certificates in one path, end-entity and trust anchor included. Real IKE PKIs have 2-4 (root,
# one or two intermediates, end-entity); strongSwan stops at a trust path of 7 CAs, and so do we.
MAX_CHAIN_DEPTH = 8
# DER size of one certificate from a CERT payload. IKE certificates are 0.5-3 KiB; an RSA-8192 key
# with a long subjectAltName list stays under 8 KiB. The cap bounds parsing and hashing work.
MAX_CERT_SIZE = 16 * 1024
# CERT payloads (certificates) a peer may send in one IKE_AUTH: the end-entity certificate plus
# intermediates. More than MAX_CHAIN_DEPTH of them cannot all be on one path, but a peer may add
# unrelated ones; twice the depth leaves room for that and bounds the path search.
MAX_CERT_PAYLOADS = 2 * MAX_CHAIN_DEPTH
# CA hashes taken from a peer's CERTREQ payloads (RFC 7296 3.7). A peer trusting more CAs than this
# names some of them only; the rest are cut, so that a CERTREQ of thousands of hashes costs nothing.
MAX_CERTREQ_HASHES = 64
