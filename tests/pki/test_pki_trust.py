"""Chain validation (ikev2lib/pki/trust.py) on PKIs made with cryptography (tests/pki/certs.py)."""

from __future__ import annotations

import datetime as dt
import pickle

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from ikev2lib.exceptions import LocalProtocolError, RemoteProtocolError
from ikev2lib.pki import (
    MAX_CERT_PAYLOADS,
    MAX_CERT_SIZE,
    MAX_CHAIN_DEPTH,
    CertFailure,
    CertificateError,
    Revocation,
    TrustStore,
    validate_chain,
)
from ikev2lib.wire import IdType, NotifyType

from .certs import DAY, EE_DNS, NOW, YEAR, KeyPool, Pki, _usage, build_pki, der, issue, make_crl, name

FQDN = (int(IdType.ID_FQDN), EE_DNS.encode())


def fails(reason: CertFailure, store: TrustStore, ee: bytes, inter: list[bytes], *, now: object = NOW,
          identity: tuple[int, bytes] = FQDN) -> CertificateError:
    with pytest.raises(CertificateError) as info:
        validate_chain(store, ee, inter, now=now, identity=identity)  # type: ignore[arg-type]
    assert info.value.reason is reason, str(info.value)
    return info.value


def test_valid_chain_every_key_type(any_pki: Pki) -> None:
    ee, inter = any_pki.sent
    result = validate_chain(TrustStore([any_pki.root]), ee, inter, now=NOW, identity=FQDN)
    assert result.end_entity == any_pki.ee
    assert result.path == (any_pki.ee, any_pki.inter, any_pki.root)
    assert result.anchor == any_pki.root
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert result.public_key.public_bytes(serialization.Encoding.DER, spki) == any_pki.ee_key.public_key().public_bytes(
        serialization.Encoding.DER, spki
    )


def test_unix_timestamp_and_aware_datetime_are_the_same_now(pki: Pki, store: TrustStore) -> None:
    ee, inter = pki.sent
    validate_chain(store, ee, inter, now=NOW.timestamp(), identity=FQDN)
    validate_chain(store, ee, inter, now=NOW.astimezone(dt.timezone(dt.timedelta(hours=-5))), identity=FQDN)
    expired = (pki.ee.not_valid_after_utc + DAY).timestamp()
    fails(CertFailure.EXPIRED, store, ee, inter, now=expired)


@pytest.mark.parametrize("now", [dt.datetime(2030, 1, 1), "2030-01-01", float("nan"), True])
def test_bad_now_is_a_local_error(pki: Pki, store: TrustStore, now: object) -> None:
    ee, inter = pki.sent
    with pytest.raises(LocalProtocolError):
        validate_chain(store, ee, inter, now=now, identity=FQDN)  # type: ignore[arg-type]


def test_intermediate_configured_as_anchor(pki: Pki) -> None:
    """Like strongSwan, a trusted intermediate ends the path: the root is neither needed nor read."""
    result = validate_chain(TrustStore([pki.inter]), der(pki.ee), [], now=NOW, identity=FQDN)
    assert result.path == (pki.ee, pki.inter)


def test_missing_intermediate_is_untrusted(pki: Pki, store: TrustStore) -> None:
    fails(CertFailure.UNTRUSTED, store, der(pki.ee), [])


def test_wrong_ca(pki: Pki, other_pki: Pki) -> None:
    ee, inter = pki.sent
    fails(CertFailure.UNTRUSTED, TrustStore([other_pki.root]), ee, inter)


def test_same_name_other_key_is_a_bad_signature(keys: KeyPool, pki: Pki) -> None:
    """An anchor with the issuer's name but another key: the name matched, the signature did not."""
    impostor_key = keys.new("p256")
    impostor = issue(pki.root.subject, impostor_key, None, impostor_key, ca=True)
    ee, inter = pki.sent
    error = fails(CertFailure.BAD_SIGNATURE, TrustStore([impostor]), ee, inter)
    assert error.notify == NotifyType.AUTHENTICATION_FAILED
    assert isinstance(error, RemoteProtocolError)


def test_tampered_signature(pki: Pki, store: TrustStore) -> None:
    ee = bytearray(der(pki.ee))
    ee[-5] ^= 0x01  # inside the signature BIT STRING, still valid DER
    fails(CertFailure.BAD_SIGNATURE, store, bytes(ee), [der(pki.inter)])


@pytest.mark.parametrize("which", ["ee", "inter", "root"])
def test_expired_and_not_yet_valid_for_every_position(keys: KeyPool, which: str) -> None:
    p = build_pki(keys, "p256")
    late = {"ee": p.ee, "inter": p.inter, "root": p.root}[which].not_valid_after_utc + DAY
    early = {"ee": p.ee, "inter": p.inter, "root": p.root}[which].not_valid_before_utc - DAY
    ee, inter = p.sent
    store = TrustStore([p.root])
    # every certificate in build_pki has the same validity, so shift just one and test at NOW
    for shift, reason in ((-2 * YEAR, CertFailure.EXPIRED), (2 * YEAR, CertFailure.NOT_YET_VALID)):
        root, inter_cert, ee_cert = p.root, p.inter, p.ee
        window = {"not_before": NOW - YEAR + shift, "not_after": NOW + YEAR + shift}
        if which == "root":
            root = issue(p.root.subject, p.root_key, None, p.root_key, ca=True, **window)  # type: ignore[arg-type]
        elif which == "inter":
            inter_cert = issue(p.inter.subject, p.inter_key, p.root, p.root_key, ca=True, **window)  # type: ignore[arg-type]
        else:
            ee_cert = issue(p.ee.subject, p.ee_key, p.inter, p.inter_key, ca=False, **window)  # type: ignore[arg-type]
        fails(reason, TrustStore([root]), der(ee_cert), [der(inter_cert)])
    assert late > NOW and early < NOW
    fails(CertFailure.EXPIRED, store, ee, inter, now=late)
    fails(CertFailure.NOT_YET_VALID, store, ee, inter, now=early)


def test_validity_bounds_are_inclusive(pki: Pki, store: TrustStore) -> None:
    ee = issue(name("edges"), pki.ee_key, pki.inter, pki.inter_key, ca=False, not_before=NOW, not_after=NOW + DAY)
    validate_chain(store, der(ee), [der(pki.inter)], now=NOW, identity=FQDN)
    validate_chain(store, der(ee), [der(pki.inter)], now=NOW + DAY, identity=FQDN)
    fails(CertFailure.EXPIRED, store, der(ee), [der(pki.inter)], now=NOW + DAY + dt.timedelta(seconds=1))


def test_path_len_exceeded(keys: KeyPool, pki: Pki, store: TrustStore) -> None:
    """The intermediate has pathLenConstraint 0: a second CA below it breaks it."""
    sub_key = keys.new("p256")
    sub = issue(name("Sub CA"), sub_key, pki.inter, pki.inter_key, ca=True)
    ee = issue(name("deep"), keys.new("p256"), sub, sub_key, ca=False)
    error = fails(CertFailure.PATH_LEN_EXCEEDED, store, der(ee), [der(sub), der(pki.inter)])
    assert "pathLenConstraint is 0" in str(error)
    # the same shape under a root that sets no limit is fine
    free_inter = issue(pki.inter.subject, pki.inter_key, pki.root, pki.root_key, ca=True, path_len=None)
    validate_chain(store, der(ee), [der(sub), der(free_inter)], now=NOW, identity=(int(IdType.ID_FQDN), EE_DNS.encode()))


def test_ca_without_key_cert_sign(pki: Pki, store: TrustStore) -> None:
    inter = issue(pki.inter.subject, pki.inter_key, pki.root, pki.root_key, ca=True,
                  key_usage=_usage(signature=True, crl_sign=True))
    fails(CertFailure.BAD_KEY_USAGE, store, der(pki.ee), [der(inter)])


@pytest.mark.parametrize("constraints", [False, True])
def test_issuer_that_is_not_a_ca(pki: Pki, store: TrustStore, constraints: bool) -> None:
    inter = issue(pki.inter.subject, pki.inter_key, pki.root, pki.root_key, ca=False,
                  basic_constraints=constraints, key_usage=_usage(cert_sign=True), san=None)
    fails(CertFailure.NOT_A_CA, store, der(pki.ee), [der(inter)])


@pytest.mark.parametrize(
    "eku, ok",
    [
        ([ExtendedKeyUsageOID.CODE_SIGNING], False),
        ([ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.TIME_STAMPING], False),
        ([ExtendedKeyUsageOID.SERVER_AUTH], True),
        ([ExtendedKeyUsageOID.CLIENT_AUTH], True),
        ([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE], True),
        ([x509.ObjectIdentifier("1.3.6.1.5.5.8.2.2")], True),
        ([ExtendedKeyUsageOID.CODE_SIGNING, x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17")], True),
        (None, True),
    ],
)
def test_extended_key_usage(pki: Pki, store: TrustStore, eku: list[x509.ObjectIdentifier] | None, ok: bool) -> None:
    ee, _ = pki.leaf(eku=eku)
    if ok:
        validate_chain(store, der(ee), [der(pki.inter)], now=NOW, identity=FQDN)
    else:
        fails(CertFailure.BAD_KEY_USAGE, store, der(ee), [der(pki.inter)])


@pytest.mark.parametrize(
    "usage, ok",
    [
        (_usage(signature=True), True),
        (_usage(non_repudiation=True), True),
        (_usage(key_encipherment=True), False),
        (_usage(cert_sign=True), False),
        (None, True),
    ],
)
def test_end_entity_key_usage(pki: Pki, store: TrustStore, usage: x509.KeyUsage | None, ok: bool) -> None:
    ee, _ = pki.leaf(key_usage=usage)
    if ok:
        validate_chain(store, der(ee), [der(pki.inter)], now=NOW, identity=FQDN)
    else:
        fails(CertFailure.BAD_KEY_USAGE, store, der(ee), [der(pki.inter)])


def _ladder(keys: KeyPool, root_kind: str, depth: int) -> tuple[TrustStore, bytes, list[bytes]]:
    """root -> `depth` intermediates (no pathLen) -> end entity."""
    key = keys.new(root_kind)
    root = issue(name("Ladder root"), key, None, key, ca=True)
    issuer, issuer_key, chain = root, key, []
    for level in range(depth):
        sub_key = keys.new("ed25519")
        issuer = issue(name(f"Ladder CA {level}"), sub_key, issuer, issuer_key, ca=True)
        issuer_key = sub_key
        chain.append(der(issuer))
    ee = issue(name("ladder"), keys.new("ed25519"), issuer, issuer_key, ca=False)
    return TrustStore([root]), der(ee), chain[::-1]


def test_chain_depth_limit(keys: KeyPool) -> None:
    # MAX_CHAIN_DEPTH certificates in all (end entity and anchor included) is the longest accepted
    store, ee, chain = _ladder(keys, "ed25519", MAX_CHAIN_DEPTH - 2)
    assert len(validate_chain(store, ee, chain, now=NOW, identity=FQDN).path) == MAX_CHAIN_DEPTH
    store, ee, chain = _ladder(keys, "ed25519", MAX_CHAIN_DEPTH - 1)
    fails(CertFailure.PATH_TOO_LONG, store, ee, chain)


def test_too_many_cert_payloads(pki: Pki, store: TrustStore) -> None:
    ee, inter = pki.sent
    validate_chain(store, ee, inter * (MAX_CERT_PAYLOADS - 1), now=NOW, identity=FQDN)
    fails(CertFailure.TOO_LARGE, store, ee, inter * MAX_CERT_PAYLOADS)


def test_oversized_certificate(pki: Pki, store: TrustStore) -> None:
    names = [x509.DNSName(f"host{i:05d}.example.org") for i in range(MAX_CERT_SIZE // 20)]
    big, _ = pki.leaf(san=x509.SubjectAlternativeName([x509.DNSName(EE_DNS), *names]))
    assert len(der(big)) > MAX_CERT_SIZE
    error = fails(CertFailure.TOO_LARGE, store, der(big), [der(pki.inter)])
    assert "end-entity" in str(error)
    fails(CertFailure.TOO_LARGE, store, der(pki.ee), [der(big)])


def test_unknown_critical_extension_refused(pki: Pki, store: TrustStore) -> None:
    constraint = x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.org")], excluded_subtrees=None)
    ee, _ = pki.leaf(extra=[(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"), True)])
    fails(CertFailure.UNSUPPORTED_CRITICAL_EXTENSION, store, der(ee), [der(pki.inter)])
    inter = issue(pki.inter.subject, pki.inter_key, pki.root, pki.root_key, ca=True, extra=[(constraint, True)])
    fails(CertFailure.UNSUPPORTED_CRITICAL_EXTENSION, store, der(pki.ee), [der(inter)])
    # the same extension, not critical, is ignored
    ee, _ = pki.leaf(extra=[(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"), False)])
    validate_chain(store, der(ee), [der(pki.inter)], now=NOW, identity=FQDN)


def test_weak_algorithms(keys: KeyPool, pki: Pki, store: TrustStore) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ee = issue(name("small"), small, pki.inter, pki.inter_key, ca=False)
    fails(CertFailure.WEAK_ALGORITHM, store, der(ee), [der(pki.inter)])
    # (cryptography 50 no longer signs with SHA-1: test_pki_openssl.py makes that certificate)
    ee, _ = pki.leaf(hash_algorithm=hashes.SHA512())
    validate_chain(store, der(ee), [der(pki.inter)], now=NOW, identity=FQDN)


def test_unsupported_curve(pki: Pki, store: TrustStore) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256K1())
    ee = issue(name("k1"), key, pki.inter, pki.inter_key, ca=False)  # type: ignore[arg-type]
    fails(CertFailure.UNSUPPORTED_ALGORITHM, store, der(ee), [der(pki.inter)])


def test_unrelated_and_duplicate_intermediates_are_skipped(pki: Pki, other_pki: Pki, store: TrustStore) -> None:
    ee, inter = pki.sent
    result = validate_chain(store, ee, [der(other_pki.inter), der(other_pki.root), *inter, *inter], now=NOW,
                            identity=FQDN)
    assert result.path == (pki.ee, pki.inter, pki.root)


def test_a_loop_of_cross_signed_cas_ends(keys: KeyPool) -> None:
    """A and B each certified by the other, neither trusted: the walk must end, untrusted."""
    a_key, b_key, root_key = keys.new("p256"), keys.new("p256"), keys.new("p256")
    root = issue(name("Loop root"), root_key, None, root_key, ca=True)
    a_self = issue(name("Loop A"), a_key, None, a_key, ca=True)
    b = issue(name("Loop B"), b_key, a_self, a_key, ca=True)
    a = issue(name("Loop A"), a_key, b, b_key, ca=True)
    ee = issue(name("looped"), keys.new("p256"), a, a_key, ca=False)
    fails(CertFailure.UNTRUSTED, TrustStore([root]), der(ee), [der(a), der(b), der(a_self)])


# --- revocation -----------------------------------------------------------------------------------


def test_revoked_end_entity_and_intermediate(pki: Pki) -> None:
    ee, inter = pki.sent
    crl = make_crl(pki.inter, pki.inter_key, [pki.ee.serial_number])
    error = fails(CertFailure.REVOKED, TrustStore([pki.root], [crl]), ee, inter)
    assert "revoked" in str(error)
    root_crl = make_crl(pki.root, pki.root_key, [pki.inter.serial_number])
    fails(CertFailure.REVOKED, TrustStore([pki.root], [root_crl]), ee, inter)
    # a CRL listing other serials
    clean = make_crl(pki.inter, pki.inter_key, [pki.ee.serial_number + 1])
    validate_chain(TrustStore([pki.root], [clean]), ee, inter, now=NOW, identity=FQDN)


def test_crl_signed_by_the_wrong_key_is_ignored(keys: KeyPool, pki: Pki) -> None:
    ee, inter = pki.sent
    forger = keys.new("p256")
    forged = make_crl(pki.inter, forger, [pki.ee.serial_number])
    validate_chain(TrustStore([pki.root], [forged]), ee, inter, now=NOW, identity=FQDN)
    fails(CertFailure.REVOCATION_UNKNOWN, TrustStore([pki.root], [forged], revocation=Revocation.STRICT), ee, inter)


def test_crl_of_another_issuer_name_does_not_apply(pki: Pki) -> None:
    """The intermediate's key signing a CRL in the root's name: serials are per issuer."""
    ee, inter = pki.sent
    crl = make_crl(pki.inter, pki.inter_key, [pki.ee.serial_number], issuer_name=pki.root.subject)
    validate_chain(TrustStore([pki.root], [crl]), ee, inter, now=NOW, identity=FQDN)


@pytest.mark.parametrize("window", [(NOW + DAY, NOW + 2 * DAY), (NOW - 9 * DAY, NOW - DAY)], ids=["future", "stale"])
def test_crl_not_current_is_ignored(pki: Pki, window: tuple[dt.datetime, dt.datetime]) -> None:
    ee, inter = pki.sent
    crl = make_crl(pki.inter, pki.inter_key, [pki.ee.serial_number], last_update=window[0], next_update=window[1])
    validate_chain(TrustStore([pki.root], [crl]), ee, inter, now=NOW, identity=FQDN)
    fails(CertFailure.REVOCATION_UNKNOWN, TrustStore([pki.root], [crl], revocation=Revocation.STRICT), ee, inter)


def test_crl_by_issuer_without_crl_sign_is_ignored(pki: Pki) -> None:
    inter = issue(pki.inter.subject, pki.inter_key, pki.root, pki.root_key, ca=True, key_usage=_usage(cert_sign=True))
    crl = make_crl(inter, pki.inter_key, [pki.ee.serial_number])
    validate_chain(TrustStore([pki.root], [crl]), der(pki.ee), [der(inter)], now=NOW, identity=FQDN)


def test_strict_revocation_needs_a_crl_for_every_certificate(pki: Pki) -> None:
    ee, inter = pki.sent
    ee_crl = make_crl(pki.inter, pki.inter_key)
    root_crl = make_crl(pki.root, pki.root_key)
    error = fails(CertFailure.REVOCATION_UNKNOWN, TrustStore([pki.root], [ee_crl], revocation=Revocation.STRICT), ee,
                  inter)
    assert "Intermediate" in str(error)
    validate_chain(TrustStore([pki.root], [ee_crl, root_crl], revocation=Revocation.STRICT), ee, inter, now=NOW,
                   identity=FQDN)


def test_delta_crl_is_a_configuration_error(pki: Pki) -> None:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.inter.subject)
        .last_update(NOW - DAY)
        .next_update(NOW + DAY)
        .add_extension(x509.DeltaCRLIndicator(1), critical=True)
    )
    delta = builder.sign(pki.inter_key, hashes.SHA256())  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="critical"):
        TrustStore([pki.root], [delta])


# --- the trust store's own checks ------------------------------------------------------------------


def test_anchor_must_be_a_ca(pki: Pki) -> None:
    with pytest.raises(LocalProtocolError, match="not a CA"):
        TrustStore([pki.ee])


def test_anchor_with_weak_key_is_refused(keys: KeyPool) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    root = issue(name("small root"), small, None, small, ca=True)
    with pytest.raises(LocalProtocolError, match="too small"):
        TrustStore([root])


def test_store_repr_and_anchors(pki: Pki, other_pki: Pki) -> None:
    store = TrustStore([pki.root, other_pki.root], [make_crl(pki.inter, pki.inter_key)])
    assert set(store.anchors) == {pki.root, other_pki.root}
    assert repr(store) == "TrustStore(anchors=2, crls=1, revocation=relaxed)"


def test_error_pickles_with_its_reason(pki: Pki, other_pki: Pki) -> None:
    ee, inter = pki.sent
    error = fails(CertFailure.UNTRUSTED, TrustStore([other_pki.root]), ee, inter)
    copy = pickle.loads(pickle.dumps(error))
    assert copy.reason is CertFailure.UNTRUSTED and str(copy) == str(error) and copy.notify == 24
