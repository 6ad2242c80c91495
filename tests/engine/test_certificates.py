"""Certificate authentication between two engines: every signature method, CERT/CERTREQ handling,
identities bound to certificates, and every way a peer's certificate is refused (both roles)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from cryptography import x509

from ikev2lib.auth import pubkey
from ikev2lib.config import IkeConfig
from ikev2lib.crypto import signature
from ikev2lib.events import IkeSaDeleted, IkeSaEstablished, ProtocolErrorEvent
from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.exchanges import ike_auth, ike_init
from ikev2lib.pki import MAX_CERT_PAYLOADS, Credential, TrustStore, ca_key_hash
from ikev2lib.wire import Cert, CertEncoding, CertReq, Message, NotifyType

from pki.certs import DAY, NOW, YEAR, KeyPool, Pki, build_pki, der, issue, make_crl, name

from .network import RESPONDER_IP, Network, Node, ike_config, pair

GW = "gw.example.org"
CLIENT = "client.example.org"
WALL = NOW.timestamp()


@pytest.fixture(scope="module")
def keys() -> KeyPool:
    return KeyPool()


@pytest.fixture(scope="module")
def pki(keys: KeyPool) -> Pki:
    return build_pki(keys, "p256")


def credential(pki: Pki, kind: str, dns: str, **options: object) -> Credential:
    key = pki.keys.new(kind)
    options.setdefault("san", x509.SubjectAlternativeName([x509.DNSName(dns)]))
    cert = issue(name(dns), key, pki.inter, pki.inter_key, ca=False, **options)  # type: ignore[arg-type]
    return Credential(key, cert, (pki.inter,))


def cert_config(local_id: str, remote_id: str | None, cred: Credential | None, trust: TrustStore | None,
                *, responder: bool = False, **extra: object) -> IkeConfig:
    ts: dict[str, object] = {"local_ts": ("10.2.0.0/16",), "remote_ts": ("10.1.0.0/16",)} if responder else {}
    auth: dict[str, object] = {}
    if cred is not None:
        auth.update(local_auth="pubkey", credentials=(cred,))
    if trust is not None:
        auth.update(remote_auth="pubkey", trust=trust)
    return ike_config(local_id=local_id, remote_id=remote_id, **ts, **auth, **extra)  # type: ignore[arg-type]


def cert_pair(pki: Pki, *, initiator: IkeConfig | None = None, responder: IkeConfig | None = None,
              wall: float = WALL, kind: str = "p256") -> tuple[Network, Node, Node, IkeConfig]:
    trust = TrustStore([pki.root])
    icfg = initiator or cert_config(CLIENT, GW, credential(pki, kind, CLIENT), trust)
    rcfg = responder or cert_config(GW, CLIENT, credential(pki, kind, GW), trust, responder=True)
    return pair(initiator=icfg, responder=rcfg, wall_clock=lambda: wall)


def run(net: Network, a: Node, icfg: IkeConfig) -> None:
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()


def established(a: Node, b: Node) -> tuple[IkeSaEstablished, IkeSaEstablished]:
    ea, eb = a.of_type(IkeSaEstablished), b.of_type(IkeSaEstablished)
    assert len(ea) == 1 and len(eb) == 1, (a.of_type(ProtocolErrorEvent), b.of_type(ProtocolErrorEvent))
    return ea[0], eb[0]  # type: ignore[return-value]


def refused_by_responder(a: Node, b: Node, reason: str, counter: str = "authentication_failed") -> None:
    """The responder answered AUTHENTICATION_FAILED saying `reason`; neither side kept an SA."""
    assert not a.of_type(IkeSaEstablished) and not b.of_type(IkeSaEstablished)
    errors = [e for e in b.of_type(ProtocolErrorEvent) if e.notify == NotifyType.AUTHENTICATION_FAILED]
    assert len(errors) == 1 and reason in errors[0].description, b.of_type(ProtocolErrorEvent)
    assert any(e.notify == NotifyType.AUTHENTICATION_FAILED and e.received for e in a.of_type(ProtocolErrorEvent))
    assert b.endpoint.stats.get(counter) == 1
    assert len(a.endpoint) == 0 and len(b.endpoint) == 0


@pytest.fixture
def methods(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The AUTH methods of every signature verified (both sides), in order."""
    seen: list[int] = []
    real = signature.verify

    def spy(method: int, *args: object, **kwargs: object) -> bool:
        seen.append(method)
        return real(method, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pubkey.signature, "verify", spy)
    return seen


# ---- what works ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["p256", "p384", "p521", "rsa", "ed25519", "ed448"])
def test_certificates_both_ways_with_rfc7427(pki: Pki, kind: str, methods: list[int]) -> None:
    net, a, b, icfg = cert_pair(pki, kind=kind)
    run(net, a, icfg)
    ea, eb = established(a, b)
    assert ea.remote_id == GW and eb.remote_id == CLIENT
    assert methods == [14, 14]  # both sent SIGNATURE_HASH_ALGORITHMS: Digital Signature both ways
    (sa_a,) = a.endpoint.connections()
    (sa_b,) = b.endpoint.connections()
    assert sa_a.peer_certificate is not None and sa_a.peer_certificate.subject == name(GW)
    assert sa_b.peer_certificate is not None and sa_b.peer_certificate.subject == name(CLIENT)
    assert sa_a.peer_signature_hashes == (2, 3, 4, 5)


@pytest.mark.parametrize("kind, method", [("rsa", 1), ("p256", 9), ("p384", 10), ("p521", 11)])
def test_classic_methods_when_the_peer_has_no_rfc7427(
    pki: Pki, kind: str, method: int, methods: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ike_init, "_SIGNATURE_HASHES_DATA", b"")  # an empty notify...
    real = ike_init._capabilities
    monkeypatch.setattr(  # ...and then none at all: both sides fall back to the key's own method
        ike_init, "_capabilities",
        lambda **kw: [p for p in real(**kw) if p.notify_type != NotifyType.SIGNATURE_HASH_ALGORITHMS],  # type: ignore[attr-defined]
    )
    net, a, b, icfg = cert_pair(pki, kind=kind)
    run(net, a, icfg)
    established(a, b)
    assert methods == [method, method]


def test_eddsa_without_rfc7427_fails_cleanly_on_the_initiator(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    real = ike_init._capabilities
    monkeypatch.setattr(
        ike_init, "_capabilities",
        lambda **kw: [p for p in real(**kw) if p.notify_type != NotifyType.SIGNATURE_HASH_ALGORITHMS],  # type: ignore[attr-defined]
    )
    net, a, b, icfg = cert_pair(pki, kind="ed25519")
    run(net, a, icfg)
    assert not a.of_type(IkeSaEstablished)
    (error,) = a.of_type(ProtocolErrorEvent)
    assert "RFC 7427" in error.description  # type: ignore[attr-defined]
    assert len(a.of_type(IkeSaDeleted)) == 1 and len(a.endpoint) == 0


def test_rsa_pss(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    trust = TrustStore([pki.root])
    icfg = cert_config(CLIENT, GW, credential(pki, "rsa", CLIENT), trust, rsa_pss=True)
    net, a, b, icfg = cert_pair(pki, initiator=icfg)
    schemes: list[str] = []
    real = signature.split_signature_auth_data

    def spy(data: bytes):  # type: ignore[no-untyped-def]
        split = real(data)
        schemes.append(split[0].name if split is not None else "?")
        return split

    monkeypatch.setattr(pubkey.signature, "split_signature_auth_data", spy)
    run(net, a, icfg)
    established(a, b)
    assert schemes[0] == "RSASSA-PSS-SHA256", schemes  # the initiator's RSA key, verified by the responder


def test_distinguished_name_identities(pki: Pki) -> None:
    trust = TrustStore([pki.root])
    client_dn, gw_dn = f"O=ikev2lib tests, CN={CLIENT}", f"O=ikev2lib tests, CN={GW}"
    icfg = cert_config(client_dn, gw_dn, credential(pki, "p256", CLIENT), trust)
    rcfg = cert_config(gw_dn, client_dn, credential(pki, "p256", GW), trust, responder=True)
    net, a, b, icfg = cert_pair(pki, initiator=icfg, responder=rcfg)
    run(net, a, icfg)
    ea, eb = established(a, b)
    assert ea.remote_id == gw_dn and eb.remote_id == client_dn


def test_dn_compares_by_value_not_by_string_type(pki: Pki) -> None:
    """The certificate says PrintableString, our configured DN becomes UTF8String: still the same name."""
    from cryptography.x509.name import _ASN1Type
    from cryptography.x509.oid import NameOID

    printable = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CLIENT, _ASN1Type.PrintableString)])
    key = pki.keys.new("p256")
    cert = issue(printable, key, pki.inter, pki.inter_key, ca=False, san=None)
    trust = TrustStore([pki.root])
    icfg = cert_config(f"CN={CLIENT}", GW, Credential(key, cert, (pki.inter,)), trust)
    rcfg = cert_config(GW, f"CN={CLIENT}", credential(pki, "p256", GW), trust, responder=True)
    net, a, b, icfg = cert_pair(pki, initiator=icfg, responder=rcfg)
    run(net, a, icfg)
    established(a, b)


def test_psk_initiator_and_certificate_responder(pki: Pki) -> None:
    trust = TrustStore([pki.root])
    icfg = ike_config(local_id=CLIENT, remote_id=GW, remote_auth="pubkey", trust=trust)
    rcfg = ike_config(local_id=GW, remote_id=CLIENT, local_auth="pubkey", credentials=(credential(pki, "p256", GW),),
                      local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",))
    net, a, b, icfg = pair(initiator=icfg, responder=rcfg, wall_clock=lambda: WALL)
    run(net, a, icfg)
    established(a, b)
    (sa_b,) = b.endpoint.connections()
    assert sa_b.peer_certificate is None


def test_certreq_chooses_the_credential_the_peer_trusts(keys: KeyPool, pki: Pki) -> None:
    other = build_pki(keys, "p256", tag=" other")
    mine = credential(pki, "p256", CLIENT)
    theirs = credential(other, "p256", CLIENT)
    theirs = Credential(theirs.key, theirs.certificate, (other.inter, other.root))  # the root: not sent, but hashed
    icfg = cert_config(CLIENT, GW, mine, TrustStore([pki.root]))
    icfg = dataclasses.replace(icfg, credentials=(mine, theirs))
    rcfg = cert_config(GW, CLIENT, credential(pki, "p256", GW), TrustStore([other.root, pki.root]), responder=True)
    # the responder trusts both roots but asks for `other` first; the initiator's first credential
    # chains to `pki`: CERTREQ order does not matter, any requested CA wins over configuration order
    net, a, b, icfg = cert_pair(pki, initiator=icfg, responder=rcfg)
    run(net, a, icfg)
    established(a, b)
    response = Message.parse(net.tap[1][0])
    (certreq,) = [p for p in response.payloads if isinstance(p, CertReq)]
    assert certreq.encoding == CertEncoding.X509_SIGNATURE
    assert bytes(certreq.data) == ca_key_hash(other.root) + ca_key_hash(pki.root)
    (sa_b,) = b.endpoint.connections()
    assert sa_b.peer_certificate == mine.certificate

    rcfg = dataclasses.replace(rcfg, trust=TrustStore([other.root]))
    net, a, b, icfg = cert_pair(pki, initiator=icfg, responder=rcfg)
    run(net, a, icfg)
    established(a, b)
    (sa_b,) = b.endpoint.connections()
    assert sa_b.peer_certificate == theirs.certificate


def test_send_cert_policies(pki: Pki) -> None:
    trust = TrustStore([pki.root])
    for send_cert, certreq, sent in (("ifasked", True, True), ("ifasked", False, False), ("always", False, True)):
        icfg = cert_config(CLIENT, GW, credential(pki, "p256", CLIENT), trust, send_cert=send_cert)
        rcfg = cert_config(GW, CLIENT, credential(pki, "p256", GW), trust, responder=True, send_certreq=certreq)
        net, a, b, icfg = cert_pair(pki, initiator=icfg, responder=rcfg)
        certs: list[int] = []
        real = pubkey.PubkeyVerifier.verify

        def count(self, prf_id, octets, proof):  # type: ignore[no-untyped-def]
            certs.append(len(proof.certificates))
            return real(self, prf_id, octets, proof)

        pubkey.PubkeyVerifier.verify = count  # type: ignore[method-assign]
        try:
            run(net, a, icfg)
        finally:
            pubkey.PubkeyVerifier.verify = real  # type: ignore[method-assign]
        assert certs[0] == (2 if sent else 0), (send_cert, certreq)  # end entity + intermediate
        if sent:
            established(a, b)
        else:
            refused_by_responder(a, b, "no_certificate")


# ---- the responder refuses the initiator's certificate ------------------------------------------------


def _initiator_with(pki: Pki, cred: Credential, local_id: str = CLIENT) -> IkeConfig:
    return cert_config(local_id, GW, cred, TrustStore([pki.root]))


def test_expired_and_not_yet_valid(pki: Pki) -> None:
    for wall, reason in ((WALL + 2 * YEAR.total_seconds(), "expired"), (WALL - 2 * YEAR.total_seconds(), "not_yet_valid")):
        net, a, b, icfg = cert_pair(pki, wall=wall)
        run(net, a, icfg)
        refused_by_responder(a, b, reason)


def test_untrusted_ca(keys: KeyPool, pki: Pki) -> None:
    stranger = build_pki(keys, "p256", tag=" stranger")
    net, a, b, icfg = cert_pair(pki, initiator=_initiator_with(pki, credential(stranger, "p256", CLIENT)))
    run(net, a, icfg)
    refused_by_responder(a, b, "untrusted")


def test_revoked(pki: Pki) -> None:
    cred = credential(pki, "p256", CLIENT)
    crl = make_crl(pki.inter, pki.inter_key, [cred.certificate.serial_number])
    trust = TrustStore([pki.root], [crl])
    rcfg = cert_config(GW, CLIENT, credential(pki, "p256", GW), trust, responder=True)
    net, a, b, icfg = cert_pair(pki, initiator=_initiator_with(pki, cred), responder=rcfg)
    run(net, a, icfg)
    refused_by_responder(a, b, "revoked")


def test_identity_not_in_the_certificate(pki: Pki) -> None:
    # the initiator claims another name than its certificate carries
    icfg = _initiator_with(pki, credential(pki, "p256", "other.example.org"))
    net, a, b, icfg = cert_pair(pki, initiator=icfg)
    run(net, a, icfg)
    refused_by_responder(a, b, "identity_mismatch")


def test_certificate_of_someone_else_than_remote_id(pki: Pki) -> None:
    icfg = _initiator_with(pki, credential(pki, "p256", "mallory.example.org"), local_id="mallory.example.org")
    net, a, b, icfg = cert_pair(pki, initiator=icfg)
    run(net, a, icfg)
    refused_by_responder(a, b, "no connection for peer 'mallory.example.org'", "no_matching_connection")


def test_end_entity_without_signature_key_usage(pki: Pki) -> None:
    cred = credential(pki, "p256", CLIENT, key_usage=x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=True, data_encipherment=False,
        key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False))
    net, a, b, icfg = cert_pair(pki, initiator=_initiator_with(pki, cred))
    run(net, a, icfg)
    refused_by_responder(a, b, "bad_key_usage")


def test_forged_signature(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pubkey.PubkeyAuthenticator.sign

    def forged(self, prf_id, octets, peer):  # type: ignore[no-untyped-def]
        data = bytearray(real(self, prf_id, octets, peer))
        data[-1] ^= 1
        return bytes(data)

    monkeypatch.setattr(pubkey.PubkeyAuthenticator, "sign", forged)
    net, a, b, icfg = cert_pair(pki)
    run(net, a, icfg)
    refused_by_responder(a, b, "does not verify")


def test_psk_is_not_accepted_where_certificates_are_required(pki: Pki) -> None:
    icfg = ike_config(local_id=CLIENT, remote_id=GW)  # PSK both ways
    net, a, b, icfg = cert_pair(pki, initiator=icfg)
    run(net, a, icfg)
    refused_by_responder(a, b, "no connection for peer 'client.example.org', IDr 'gw.example.org' with AUTH method 2", "no_matching_connection")


def test_certificate_is_not_accepted_where_a_psk_is_required(pki: Pki) -> None:
    rcfg = ike_config(local_id=GW, remote_id=CLIENT, local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",))
    net, a, b, icfg = cert_pair(pki, responder=rcfg)
    run(net, a, icfg)
    refused_by_responder(a, b, "with AUTH method 14", "no_matching_connection")


def test_auth_method_that_does_not_fit_the_key(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    # the initiator's ECDSA P-256 certificate with AUTH announced as RSA (method 1)
    monkeypatch.setattr(pubkey.signature, "method_for_key", lambda key, rfc7427: 1)
    monkeypatch.setattr(pubkey.PubkeyAuthenticator, "sign", lambda self, prf_id, octets, peer: bytes(256))
    net, a, b, icfg = cert_pair(pki)
    run(net, a, icfg)
    refused_by_responder(a, b, "AUTH method 1 signature does not verify")


# ---- hostile CERT and CERTREQ payloads (authentic messages, the peer's content) ----------------------


def _hostile_certs(monkeypatch: pytest.MonkeyPatch, payloads: Callable[[Credential], list[Cert]]) -> None:
    monkeypatch.setattr(pubkey.PubkeyAuthenticator, "cert_payloads", lambda self: payloads(self._credential))


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda c: [Cert(CertEncoding.X509_SIGNATURE, b"\x30\x03garbage")], "malformed"),
        (lambda c: [Cert(CertEncoding.X509_SIGNATURE, b"")], "malformed"),
        (lambda c: [Cert(CertEncoding.X509_SIGNATURE, b"\x30" * 20_000)], "too_large"),
        (lambda c: [Cert(CertEncoding.X509_SIGNATURE, der(c.certificate))] * (MAX_CERT_PAYLOADS + 1), "too_large"),
        (lambda c: [Cert(CertEncoding.HASH_URL_X509_CERT, bytes(20) + b"http://x/")], "no_certificate"),
        (lambda c: [Cert(CertEncoding.X509_SIGNATURE, der(c.certificate))], "untrusted"),  # intermediate missing
        (lambda c: [Cert(CertEncoding.X509_SIGNATURE, der(c.chain[0])), Cert(CertEncoding.X509_SIGNATURE, der(c.certificate))],
         "bad_key_usage"),  # the CA certificate first: it is no end entity
    ],
    ids=["garbage", "empty", "oversized", "too-many", "hash-and-url", "no-intermediate", "ca-as-end-entity"],
)
def test_hostile_cert_payloads(pki: Pki, monkeypatch: pytest.MonkeyPatch, make: Callable[[Credential], list[Cert]],
                               reason: str) -> None:
    _hostile_certs(monkeypatch, make)
    net, a, b, icfg = cert_pair(pki)
    run(net, a, icfg)
    refused_by_responder(a, b, reason)


def test_certreq_with_thousands_of_hashes_is_bounded(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    flood = [CertReq(CertEncoding.X509_SIGNATURE, b"".join(i.to_bytes(20, "big") for i in range(3000)))]
    monkeypatch.setattr(ike_auth, "our_certreq", lambda sa: flood)
    net, a, b, icfg = cert_pair(pki)
    run(net, a, icfg)
    established(a, b)  # nothing we hold was asked for: our first credential is sent
    (sa_b,) = b.endpoint.connections()
    assert sa_b.peer_certreq is not None and len(sa_b.peer_certreq) == 64


def test_malformed_certreq_is_a_syntax_error(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ike_auth, "our_certreq", lambda sa: [CertReq(CertEncoding.X509_SIGNATURE, bytes(21))])
    net, a, b, icfg = cert_pair(pki)
    run(net, a, icfg)
    assert not a.of_type(IkeSaEstablished) and not b.of_type(IkeSaEstablished)
    assert any(e.notify == NotifyType.INVALID_SYNTAX for e in b.of_type(ProtocolErrorEvent))
    assert len(a.endpoint) == 0 and len(b.endpoint) == 0


# ---- the initiator refuses the responder's certificate ------------------------------------------------


def test_initiator_refuses_an_untrusted_responder_and_tells_it(keys: KeyPool, pki: Pki) -> None:
    stranger = build_pki(keys, "p256", tag=" stranger")
    rcfg = cert_config(GW, CLIENT, credential(stranger, "p256", GW), TrustStore([pki.root]), responder=True)
    net, a, b, icfg = cert_pair(pki, responder=rcfg)
    run(net, a, icfg)
    assert not a.of_type(IkeSaEstablished)
    (error,) = a.of_type(ProtocolErrorEvent)
    assert error.notify == NotifyType.AUTHENTICATION_FAILED and "untrusted" in error.description  # type: ignore[attr-defined]
    assert a.endpoint.stats.get("authentication_failed") == 1
    # the responder had established the SA; the initiator's INFORMATIONAL AUTHENTICATION_FAILED ends it
    assert len(b.of_type(IkeSaEstablished)) == 1
    assert any(e.notify == NotifyType.AUTHENTICATION_FAILED and e.received for e in b.of_type(ProtocolErrorEvent))
    assert len(b.of_type(IkeSaDeleted)) == 1
    assert len(a.endpoint) == 0 and len(b.endpoint) == 0


def test_initiator_checks_the_responder_certificate_dates(pki: Pki) -> None:
    late = credential(pki, "p256", GW, not_before=NOW - 3 * DAY, not_after=NOW - DAY)
    rcfg = cert_config(GW, CLIENT, late, TrustStore([pki.root]), responder=True)
    net, a, b, icfg = cert_pair(pki, responder=rcfg)
    run(net, a, icfg)
    assert not a.of_type(IkeSaEstablished)
    assert any("expired" in e.description for e in a.of_type(ProtocolErrorEvent))  # type: ignore[attr-defined]


# ---- configuration -----------------------------------------------------------------------------------


def test_configuration_errors(pki: Pki) -> None:
    cred = credential(pki, "p256", CLIENT)
    with pytest.raises(LocalProtocolError, match="needs credentials"):
        IkeConfig(local_id=CLIENT, local_auth="pubkey", remote_auth="pubkey", trust=TrustStore([pki.root]))
    with pytest.raises(LocalProtocolError, match="needs trust"):
        IkeConfig(local_id=CLIENT, local_auth="pubkey", remote_auth="pubkey", credentials=(cred,))
    with pytest.raises(LocalProtocolError, match="psk"):
        IkeConfig(local_id=CLIENT, local_auth="pubkey", credentials=(cred,))  # the peer would use a PSK
    with pytest.raises(LocalProtocolError, match="local_auth"):
        IkeConfig(local_id=CLIENT, local_auth="eap", psk=b"x")
    with pytest.raises(LocalProtocolError, match="send_cert"):
        IkeConfig(local_id=CLIENT, psk=b"x", send_cert="sometimes")
    with pytest.raises(LocalProtocolError, match="not a KEYWORD=value"):
        IkeConfig(local_id="XX=1, CN=a", psk=b"x")
    IkeConfig(local_id=CLIENT, local_auth="pubkey", remote_auth="pubkey", credentials=(cred,),
              trust=TrustStore([pki.root]))  # no PSK needed
