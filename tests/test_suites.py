"""What the library can run (suites.py) and the check of configured proposals against it (config.py).

Every ESP_SUITES entry builds a working ESP SA pair in both data-plane back ends; every RUNNABLE entry
builds; a configuration naming anything else is refused at construction with the keyword and the field
in the message; and random keyword strings either give a configuration whose proposals all run, or a
LocalProtocolError, never anything else.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib import esp
from ikev2lib.child_sa import esp_algorithm_name
from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.crypto import IKE_TRANSFORMS, KeyExchange, Prf, child_key_lengths, ike_key_lengths, sk_cipher
from ikev2lib.esp.params import ALGORITHMS
from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.negotiation import AEAD_ENCR_IDS, SelectedProposal
from ikev2lib.proposals import ENCRYPTION, ESN, INTEGRITY, KEY_EXCHANGE, PRF, keyword_transform, parse_proposals
from ikev2lib.suites import ENGINE_PENDING_KE, ESP_SUITES, RUNNABLE, esp_suite_name
from ikev2lib.wire import Proposal, ProtocolId, Transform, TransformType
from ikev2lib.wire.enums import EncrId, IntegId

IKE, ESP = ProtocolId.IKE, ProtocolId.ESP
ENCR, PRF_T, INTEG, KE, ESN_T = 1, 2, 3, 4, 5
INNER = bytes.fromhex("4500001c000100004011f9c40a0100010a020001") + bytes(8)  # IPv4/UDP
SPI = 0x1000


# ---- the ESP table is what the data plane runs -----------------------------------------------------


@functools.cache
def _esp_runs(encr: int, bits: int | None, integ: int | None, esn: bool, backend: str) -> bool:
    """An outbound and an inbound SA of the suite, keyed as the engine keys them (KEYMAT lengths from
    the crypto layer), carry a packet; a flipped ICV bit is refused."""
    name = esp_suite_name(encr, bits, integ)
    assert name is not None
    enc_len, integ_len = child_key_lengths(encr, bits, integ)
    key = os.urandom(enc_len + integ_len)
    module = esp.backends()[backend]
    out = module.EspSA(SPI, name, key, "outbound", esn=esn)
    inb = module.EspSA(SPI, name, key, "inbound", esn=esn)
    assert inb.decap(out.encap(INNER)) == (4, INNER)
    packet = out.encap(INNER)
    with pytest.raises(esp.EspAuthenticationError):
        inb.decap(packet[:-1] + bytes((packet[-1] ^ 1,)))
    return True


_SUITES = sorted(ESP_SUITES, key=lambda k: (k[0], k[1] or 0, k[2] or 0))


@pytest.mark.parametrize("backend", sorted(esp.backends()))
@pytest.mark.parametrize("suite", _SUITES, ids=repr)
def test_every_esp_suite_carries_traffic(suite: tuple[int, int | None, int | None], backend: str) -> None:
    for esn in (False, True):
        assert _esp_runs(*suite, esn, backend)


def test_every_data_plane_keyword_is_a_suite() -> None:
    # the table misses nothing the data plane runs: each keyword (and alias) lands on a suite of the same algorithm
    for keyword, alg in ALGORITHMS.items():
        parts = [keyword_transform(word, ESP) for word in keyword.split("-")]
        assert all(parts), keyword
        encr = parts[0]
        integ = int(parts[1].transform_id) if len(parts) == 2 and parts[1] else None
        assert encr is not None
        name = ESP_SUITES[(int(encr.transform_id), encr.key_length, integ)]
        assert ALGORITHMS[name] == alg, keyword


def test_checking_each_esp_transform_alone_suffices() -> None:
    """Negotiation and the config check look at transforms one by one: that is only right if every
    runnable cipher pairs with every runnable integrity algorithm (AEAD: with none)."""
    encrs = {(k[1], k[2]) for k in RUNNABLE[ESP] if k[0] == ENCR}
    integs = {k[1] for k in RUNNABLE[ESP] if k[0] == INTEG}
    for encr, bits in encrs:
        pairs = [None] if encr in AEAD_ENCR_IDS else sorted(integs)
        for integ in pairs:
            assert (encr, bits, integ) in ESP_SUITES


def test_runnable_tables_come_from_the_layers() -> None:
    ike_ke = {k[1] for k in IKE_TRANSFORMS if k[0] == KE}
    assert RUNNABLE[IKE] == {k for k in IKE_TRANSFORMS if k[0] != KE or k[1] not in ENGINE_PENDING_KE}
    assert {k[1] for k in RUNNABLE[ESP] if k[0] == KE} == ike_ke - ENGINE_PENDING_KE
    assert {(k[1], k[2]) for k in RUNNABLE[ESP] if k[0] == ENCR} == {(e, b) for e, b, _ in ESP_SUITES}
    assert ProtocolId.AH not in RUNNABLE  # no AH data plane


@pytest.mark.parametrize(
    "encr, bits, integ, name",
    [
        (EncrId.AES_GCM_16, 128, None, "aes128gcm16"),
        (EncrId.AES_GCM_8, 256, None, "aes256gcm8"),
        (EncrId.AES_GCM_12, 192, None, "aes192gcm12"),
        (EncrId.CHACHA20_POLY1305, None, None, "chacha20poly1305"),
        (EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_256_128, "aes256-sha256"),
        (EncrId.AES_CBC, 128, IntegId.HMAC_SHA1_96, "aes128-sha1"),
        (EncrId.AES_GCM_16, 128, IntegId.HMAC_SHA2_256_128, None),  # AEAD with integrity: never valid
        (EncrId.AES_CBC, 128, None, None),  # CBC without integrity
        (EncrId.AES_GCM_16, 64, None, None),
        (EncrId.AES_CTR, 128, IntegId.HMAC_SHA2_256_128, None),
    ],
)
def test_child_sa_names_negotiated_esp_suites(encr: int, bits: int | None, integ: int | None, name: str | None) -> None:
    transforms = [Transform(TransformType.ENCR, encr, bits)]
    if integ is not None:
        transforms.append(Transform(TransformType.INTEG, integ))
    selected = SelectedProposal(number=1, protocol_id=ESP, spi=b"", transforms=tuple(transforms))
    assert esp_algorithm_name(selected) == esp_suite_name(encr, bits, integ) == name


# ---- configurations are checked when built ---------------------------------------------------------

_IKE_REFUSED = [
    ("aes128gcm16-prfsha256-x2551", "x2551"),  # the typo
    ("aes128ccm16-prfsha256-x25519", "aes128ccm16"),
    ("aes128gcm16-aes256ccm8-prfsha256-x25519", "aes256ccm8"),  # one bad alternative is enough
    ("aes128ctr-sha256-x25519", "aes128ctr"),
    ("3des-sha256-x25519", "3des"),
    ("camellia128-sha256-x25519", "camellia128"),
    ("null-sha256-x25519", "null"),
    ("aes128gmac-prfsha256-x25519", "aes128gmac"),
    ("aes128-aesxcbc-prfsha256-x25519", "aesxcbc"),  # XCBC integrity (the XCBC PRF runs)
    ("aes128-aescmac-prfsha256-x25519", "aescmac"),
    ("aes128-md5-x25519", "md5"),
    ("aes128gcm16-prfmd5-x25519", "prfmd5"),
    ("aes128gcm16-prfsha256-modp768", "modp768"),
    ("aes128gcm16-prfsha256-modp1024", "modp1024"),
    ("aes128gcm16-prfsha256-modp1536", "modp1536"),
    ("aes128gcm16-prfsha256-modp2048s256", "modp2048s256"),
    ("aes128gcm16-prfsha256-ecp192", "ecp192"),
    ("aes128gcm16-prfsha256-ecp224", "ecp224"),
    ("aes128gcm16-prfsha256-ecp256bp", "ecp256bp"),
    ("aes128gcm16-prfsha256-mlkem512", "mlkem512"),
    ("aes128gcm16-prfsha256-x25519-ke1_mlkem768", "ke1_mlkem768"),  # RFC 9370 is not implemented
    ("aes128gcm16-prfsha256-x25519,aes256gcm16-prfsha384-curve25519-modp1024", "modp1024"),  # second proposal
    ("aes128gcm16-prfsha256", "key exchange"),  # what an IKE SA needs: a KE method
    ("aes128-prfsha256-x25519", "integrity"),  # ... integrity unless AEAD
    ("aes128gcm16-x25519", "PRF"),  # ... a PRF
]


@pytest.mark.parametrize("text, needle", _IKE_REFUSED)
def test_ike_config_refuses(text: str, needle: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        IkeConfig(local_id="a", psk=b"k", ike_proposals=text)
    assert "ike_proposals" in str(info.value) and needle in str(info.value)


_ESP_REFUSED = [
    ("aes128gcm61", "aes128gcm61"),
    ("aes128ccm16", "aes128ccm16"),
    ("aes128ctr-sha256", "aes128ctr"),
    ("3des-sha1", "3des"),
    ("null-sha256", "null"),
    ("aes128gmac", "aes128gmac"),
    ("camellia256-sha256", "camellia256"),
    ("aes128-aesxcbc", "aesxcbc"),
    ("aes256-md5", "md5"),
    ("aes256-sha256-sha1_160", "sha1_160"),
    ("aes128gcm16-modp1024", "modp1024"),
    ("aes128gcm16-mlkem512", "mlkem512"),
    ("aes128gcm16-ke1_x25519", "ke1_x25519"),
    ("aes128gcm16-prfsha256", "PRF"),
]


@pytest.mark.parametrize("text, needle", _ESP_REFUSED)
def test_child_config_refuses(text: str, needle: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        ChildConfig(name="net", esp_proposals=text)
    assert "esp_proposals" in str(info.value) and "'net'" in str(info.value) and needle in str(info.value)


def test_refusal_says_what_runs() -> None:
    with pytest.raises(LocalProtocolError, match=r"'aes128ccm16' cannot be used: .*aes128gcm16"):
        IkeConfig(local_id="a", psk=b"k", ike_proposals="aes128ccm16-prfsha256-x25519")


def test_not_a_string_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="ike_proposals"):
        IkeConfig(local_id="a", psk=b"k", ike_proposals=["aes128gcm16-prfsha256-x25519"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "ike, esp_text",
    [("aes128gcm16-prfsha256-x25519", "aes128gcm16"),
     ("aes256gcm16-aes128gcm12-chacha20poly1305-prfsha384-prfaesxcbc-prfaescmac-ecp384-x448-modp8192",
      "aes256gcm8-chacha20poly1305-x25519-esn-noesn,aes192-sha1-sha2_512-ecp521"),
     ("aes256-aes192-sha1-sha2_384-modp2048-modp3072-modp4096-modp6144-ecp256-ecp521-curve448", "aes128-sha256")],
)  # fmt: skip
def test_configs_that_run_are_accepted(ike: str, esp_text: str) -> None:
    cfg = IkeConfig(local_id="a", psk=b"k", ike_proposals=ike, children=(ChildConfig(esp_proposals=esp_text),))
    assert cfg.ike_proposals == ike and cfg.children[0].esp_proposals == esp_text


# ---- random keyword strings ------------------------------------------------------------------------


@functools.cache
def _ike_runs(encr: int, bits: int | None, integ: int | None) -> bool:
    enc_len, integ_len = ike_key_lengths(encr, bits, integ)
    key, ikey = os.urandom(enc_len), os.urandom(integ_len)
    body = sk_cipher(encr, bits, integ, key, ikey).encrypt(b"aad", b"chain")
    return sk_cipher(encr, bits, integ, key, ikey).decrypt(b"aad", body) == b"chain"


@functools.cache
def _ke_runs(group: int) -> bool:
    initiator = KeyExchange.generate(group)
    responder, secret = KeyExchange.respond(group, initiator.public_bytes())
    return initiator.shared_secret(responder.public_bytes()) == secret


def _runs(proposal: Proposal, protocol: ProtocolId) -> None:
    by_type: dict[int, list[Transform]] = {}
    for t in proposal.transforms:
        assert (int(t.transform_type), int(t.transform_id), t.key_length) in RUNNABLE[protocol]
        by_type.setdefault(int(t.transform_type), []).append(t)
    encrs = by_type[ENCR]
    integs: list[int | None] = [int(t.transform_id) for t in by_type.get(INTEG, [])] or [None]
    for encr, integ in itertools.product(encrs, integs):
        if protocol == IKE:
            assert _ike_runs(int(encr.transform_id), encr.key_length, integ)
        else:
            assert _esp_runs(int(encr.transform_id), encr.key_length, integ, True, esp.BACKEND)
    for t in by_type.get(PRF_T, []):
        Prf(t.transform_id)
    for t in by_type.get(KE, []):
        assert _ke_runs(int(t.transform_id))
    if protocol == IKE:  # what an IKE SA needs
        assert by_type.get(PRF_T) and by_type.get(KE)
        assert (int(encrs[0].transform_id) in AEAD_ENCR_IDS) == (INTEG not in by_type)


_KNOWN = sorted({*ENCRYPTION, *INTEGRITY, *PRF, *KEY_EXCHANGE, *ESN})
_WORDS = st.one_of(
    st.sampled_from(_KNOWN),
    st.sampled_from(_KNOWN).map(str.upper),  # keywords are case-insensitive
    st.builds(lambda n, m: f"ke{n}_{m}", st.integers(0, 9), st.sampled_from([*KEY_EXCHANGE, "none", "foo"])),
    st.sampled_from(["x2551", "aes128gcm17", "", " ", "none", "prf", "aes", "sha", "\u00b2", "ke\u0663_x25519"]),
    st.text(max_size=6),
)
def _plausible(protocol: ProtocolId) -> st.SearchStrategy[str]:
    """The shape of a valid proposal (encryption, maybe integrity, PRF and KE for IKE, maybe KE and ESN
    for ESP) drawn from every keyword known, runnable or not."""
    ike = protocol == IKE
    groups = st.tuples(
        st.lists(st.sampled_from(sorted(ENCRYPTION)), min_size=1, max_size=2),
        st.lists(st.sampled_from(sorted(INTEGRITY)), max_size=2),
        st.lists(st.sampled_from(sorted(PRF)), max_size=2 if ike else 0),
        st.lists(st.sampled_from(sorted(KEY_EXCHANGE)), min_size=1 if ike else 0, max_size=2),
        st.lists(st.sampled_from(sorted(ESN)), max_size=0 if ike else 1),
    )
    return groups.map(lambda g: "-".join(itertools.chain.from_iterable(g)))


def _proposal_text(protocol: ProtocolId) -> st.SearchStrategy[str]:
    return st.one_of(
        st.lists(_plausible(protocol), min_size=1, max_size=3).map(",".join),
        st.lists(st.lists(_WORDS, min_size=1, max_size=6).map("-".join), min_size=1, max_size=3).map(",".join),
        st.text(max_size=40),
    )


@settings(max_examples=400, deadline=None)
@given(_proposal_text(IKE))
def test_ike_config_either_runs_or_is_refused(text: str) -> None:
    try:
        IkeConfig(local_id="a", psk=b"k", ike_proposals=text)
    except LocalProtocolError as exc:
        assert "ike_proposals" in str(exc)
        return
    for proposal in parse_proposals(text, IKE):
        _runs(proposal, IKE)


@settings(max_examples=400, deadline=None)
@given(_proposal_text(ESP))
def test_child_config_either_runs_or_is_refused(text: str) -> None:
    try:
        ChildConfig(esp_proposals=text)
    except LocalProtocolError as exc:
        assert "esp_proposals" in str(exc)
        return
    for proposal in parse_proposals(text, ESP):
        _runs(proposal, ESP)


def _runnable_words(table: Mapping[str, object], protocol: ProtocolId, aead: bool | None = None) -> list[str]:
    words = []
    for word in sorted(table):
        t = keyword_transform(word, protocol)
        if t is None or (int(t.transform_type), int(t.transform_id), t.key_length) not in RUNNABLE[protocol]:
            continue
        if aead is None or (int(t.transform_id) in AEAD_ENCR_IDS) == aead:
            words.append(word)
    return words


def _sample(words: list[str], min_size: int) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(words), min_size=min_size, max_size=3)


@st.composite
def _runnable_proposal(draw: st.DrawFn, protocol: ProtocolId) -> str:
    aead = draw(st.booleans())
    words = draw(_sample(_runnable_words(ENCRYPTION, protocol, aead), 1))
    if not aead:
        words += draw(_sample(_runnable_words(INTEGRITY, protocol), 1))
    if protocol == IKE:
        words += draw(_sample(_runnable_words(PRF, protocol), 1 if aead else 0))
        words += draw(_sample(_runnable_words(KEY_EXCHANGE, protocol), 1))
    else:
        words += draw(_sample(_runnable_words(KEY_EXCHANGE, protocol), 0))
        words += draw(_sample(sorted(ESN), 0))
    return "-".join(draw(st.permutations(words)))


@settings(max_examples=200, deadline=None)
@given(st.lists(_runnable_proposal(IKE), min_size=1, max_size=3), st.lists(_runnable_proposal(ESP), min_size=1, max_size=3))
def test_proposals_of_runnable_keywords_are_accepted_and_run(ike: list[str], esp_items: list[str]) -> None:
    cfg = IkeConfig(local_id="a", psk=b"k", ike_proposals=",".join(ike),
                    children=(ChildConfig(esp_proposals=",".join(esp_items)),))  # fmt: skip
    for proposal in parse_proposals(cfg.ike_proposals, IKE):
        _runs(proposal, IKE)
    for proposal in parse_proposals(cfg.children[0].esp_proposals, ESP):
        _runs(proposal, ESP)
