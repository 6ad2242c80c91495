"""Certificate authentication between ikev2lib and strongSwan, both roles, over real UDP in namespaces.

One test PKI per key type (root -> intermediate -> leaves "left" and "right"): ECDSA P-256, RSA-2048
and Ed25519, always through RFC 7427 (both sides announce SIGNATURE_HASH_ALGORITHMS). Each side holds
the root only and learns the intermediate from the other's CERT payloads. Then the refusals, each
seen from both sides: strongSwan presents an expired, revoked, untrusted or wrongly named certificate
and ikev2lib refuses it; ikev2lib presents one strongSwan does not trust and reports strongSwan's
refusal cleanly. Setup: engine_pair.py (PSK harness, extended with `before_load`) and pki_files.py.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

pytest.register_assert_rewrite(f"{__package__}.engine_pair")

from ikev2lib.config import IkeConfig
from ikev2lib.events import IkeSaDeleted, IkeSaEstablished, ProtocolErrorEvent
from ikev2lib.pki import Credential, TrustStore
from ikev2lib.wire import NotifyType

from .engine_pair import (  # make_pair and peers are pytest fixtures: imported to be used here
    CHILD,
    CONN,
    ROLES,
    Pair,
    PairFactory,
    esp_both_ways,
    establish,
    make_pair,
    no_errors,
    peers,
)
from .pki_files import InteropPki, build_pki, write_swanctl_credentials
from .strongswan import Charon, CharonError

pytestmark = pytest.mark.interop

# how strongSwan names the RFC 7427 signature scheme it verified, per key type (its log, `ike` level 1+)
SCHEME_LOGGED = {"p256": "ECDSA_WITH_SHA256_DER", "rsa": "RSA_EMSA_PKCS1_SHA2_256", "ed25519": "ED25519"}
REFUSAL_WAIT = 15.0  # seconds for a refused IKE_AUTH to be reported on both sides


@pytest.fixture(scope="module", params=sorted(SCHEME_LOGGED))
def pki(request: pytest.FixtureRequest) -> InteropPki:
    return build_pki(request.param)


@pytest.fixture(scope="module")
def p256() -> InteropPki:
    """The PKI of the refusals (the tunnels cover every key type)."""
    return build_pki("p256")


def cert_pair(make_pair: PairFactory, *, charon_cred: Credential, charon_anchors: list[Any],
              ours: Credential, trust: TrustStore, charon_crls: list[Any] = (), **ikev2lib: Any) -> Pair:
    """charon ("right") and ikev2lib ("left") authenticating each other with certificates."""
    files: dict[str, str] = {}

    def install(charon: Charon) -> None:
        files["cert"] = write_swanctl_credentials(charon.swanctl_dir, charon_cred, charon_anchors, list(charon_crls))

    # the local block needs the certificate's file name, known before charon starts: it is fixed
    options = {"local_auth": "pubkey", "remote_auth": "pubkey", "credentials": (ours,), "trust": trust, **ikev2lib}
    return make_pair(auth="pubkey", local_extra={"certs": "own.pem"}, before_load=install, ikev2lib_options=options)


def scheme_verified(charon: Charon, peer_id: str) -> str:
    match = re.search(rf"authentication of '{peer_id}' with (\S+) successful", charon.log_text())
    assert match, charon.tail_log(30)
    return match.group(1)


# ---- tunnels -------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_certificate_tunnel(make_pair: PairFactory, pki: InteropPki, role: str) -> None:
    charon_cred, ours = pki.leaf("right"), pki.leaf("left")
    pair = cert_pair(make_pair, charon_cred=charon_cred, charon_anchors=[pki.root], ours=ours, trust=pki.trust())
    est, child, ike, ch = establish(pair, role)
    esp_both_ways(pair, child.child_id, ch.spi_in, "certs")
    # strongSwan checked our RFC 7427 signature with the key of the certificate we sent
    assert scheme_verified(pair.charon, "left") == SCHEME_LOGGED[pki.kind]
    # and we checked its chain (with the intermediate it sent) and its signature
    sa = pair.peer.call(lambda: pair.peer.endpoint.connection(est.ike_sa_id))
    assert sa.peer_certificate == charon_cred.certificate
    assert sa.peer_signature_hashes and 2 in sa.peer_signature_hashes
    assert f"CN=right" in pair.charon.swanctl("--list-certs")
    no_errors(pair)


# ---- strongSwan presents something ikev2lib must refuse ---------------------------------------------------


def _charon_initiates_and_fails(pair: Pair) -> None:
    with pytest.raises(CharonError):
        pair.charon.initiate(child=CHILD, timeout=int(REFUSAL_WAIT))
    pair.charon.wait_for_log(r"received AUTHENTICATION_FAILED notify error", timeout=REFUSAL_WAIT)


def _ikev2lib_refused(pair: Pair, reason: str) -> None:
    error = pair.peer.wait_for(ProtocolErrorEvent, lambda e: e.notify == NotifyType.AUTHENTICATION_FAILED)
    assert reason in error.description, error.description
    assert not [e for e in pair.peer.all_events() if isinstance(e, IkeSaEstablished)]
    assert pair.peer.call(lambda: pair.peer.endpoint.stats.get("authentication_failed")) == 1


@pytest.mark.parametrize("case", ["expired", "not_yet_valid", "revoked", "untrusted", "identity"])
def test_ikev2lib_refuses_strongswan_certificate(make_pair: PairFactory, p256: InteropPki, case: str) -> None:
    pki = p256
    charon_cred = pki.leaf("right")
    trust = pki.trust()
    anchors = [pki.root]
    if case == "expired":
        charon_cred = pki.leaf("right", start=-dt.timedelta(days=3), end=-dt.timedelta(days=1))
    elif case == "not_yet_valid":
        charon_cred = pki.leaf("right", start=dt.timedelta(days=1), end=dt.timedelta(days=3))
    elif case == "revoked":
        trust = pki.trust(pki.crl(charon_cred))
    elif case == "untrusted":
        stranger = build_pki("p256", tag=" stranger")
        charon_cred = stranger.leaf("right")
        anchors = [stranger.root, pki.root]
    else:  # a valid certificate of another name, presented as "right"
        charon_cred = pki.leaf("imposter")
    pair = cert_pair(make_pair, charon_cred=charon_cred, charon_anchors=anchors, ours=pki.leaf("left"), trust=trust)
    _charon_initiates_and_fails(pair)
    _ikev2lib_refused(pair, {"identity": "identity_mismatch"}.get(case, case))
    pair.charon.wait_for_no_sas(timeout=REFUSAL_WAIT)


def test_ikev2lib_initiator_refuses_strongswan_responder_and_tells_it(make_pair: PairFactory, p256: InteropPki) -> None:
    """RFC 7296 2.21.2: the responder has already established its SA; our INFORMATIONAL with
    AUTHENTICATION_FAILED makes strongSwan drop it at once instead of waiting for DPD."""
    expired = p256.leaf("right", start=-dt.timedelta(days=3), end=-dt.timedelta(days=1))
    pair = cert_pair(make_pair, charon_cred=expired, charon_anchors=[p256.root], ours=p256.leaf("left"),
                     trust=p256.trust())
    pair.peer.initiate(pair.config, pair.ns.right_addr)
    _ikev2lib_refused(pair, "expired")
    pair.peer.wait_for(IkeSaDeleted)
    pair.charon.wait_for_log(r"parsed INFORMATIONAL request \d+ \[ N\(AUTH_FAILED\) \]", timeout=REFUSAL_WAIT)
    pair.charon.wait_for_log(r"IKE_SA deleted", timeout=REFUSAL_WAIT)
    pair.charon.wait_for_no_sas(timeout=REFUSAL_WAIT)


# ---- ikev2lib presents something strongSwan does not trust ---------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_strongswan_refuses_an_untrusted_ikev2lib_certificate(make_pair: PairFactory, p256: InteropPki,
                                                               role: str) -> None:
    stranger = build_pki("p256", tag=" stranger")
    pair = cert_pair(make_pair, charon_cred=p256.leaf("right"), charon_anchors=[p256.root],
                     ours=stranger.leaf("left"), trust=p256.trust())
    if role == "ikev2lib-initiator":
        pair.peer.initiate(pair.config, pair.ns.right_addr)
    else:
        with pytest.raises(CharonError):
            pair.charon.initiate(child=CHILD, timeout=int(REFUSAL_WAIT))
    # strongSwan found no trusted key for "left" (it has not our root)...
    pair.charon.wait_for_log(r"no trusted \w+ public key found for 'left'", timeout=REFUSAL_WAIT)
    # ...and said so: in its IKE_AUTH response (we initiated) or in an INFORMATIONAL (it initiated)
    error = pair.peer.wait_for(ProtocolErrorEvent, lambda e: e.notify == NotifyType.AUTHENTICATION_FAILED)
    assert error.received, error
    pair.peer.wait_for(IkeSaDeleted)
    assert pair.peer.call(lambda: pair.peer.endpoint.ike_sa_ids()) == []
    pair.charon.wait_for_no_sas(timeout=REFUSAL_WAIT)
