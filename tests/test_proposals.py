"""strongSwan proposal keywords <-> Proposal objects, checked against what strongSwan itself sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.proposals import ENCRYPTION, INTEGRITY, KEY_EXCHANGE, PRF, parse_proposals, proposal_to_keywords
from ikev2lib.wire import (
    SA,
    EncrId,
    EsnId,
    IntegId,
    KeyExchangeId,
    Message,
    PrfId,
    Proposal,
    ProtocolId,
    Transform,
    TransformType,
)

IKE, ESP = ProtocolId.IKE, ProtocolId.ESP
T = Transform
CORPUS = Path(__file__).parent / "wire" / "corpus" / "strongswan"


def test_brief_example() -> None:
    first, second = parse_proposals("aes128gcm16-prfsha256-x25519,aes256-sha256-modp2048", IKE)
    assert first == Proposal(1, IKE, b"", [
        T(TransformType.ENCR, EncrId.AES_GCM_16, 128),
        T(TransformType.PRF, PrfId.HMAC_SHA2_256),
        T(TransformType.KE, KeyExchangeId.CURVE25519),
    ])
    # No prf given with a classic integrity algorithm: strongSwan derives prfsha256 from sha256.
    assert second == Proposal(2, IKE, b"", [
        T(TransformType.ENCR, EncrId.AES_CBC, 256),
        T(TransformType.INTEG, IntegId.HMAC_SHA2_256_128),
        T(TransformType.PRF, PrfId.HMAC_SHA2_256),
        T(TransformType.KE, KeyExchangeId.MODP_2048),
    ])


def test_dash_list_puts_every_alternative_into_one_proposal() -> None:
    (p,) = parse_proposals("aes128-aes256-sha1-sha256-modp2048-ecp256", IKE)
    assert [t.transform_id for t in p.transforms_of(TransformType.ENCR)] == [EncrId.AES_CBC] * 2
    assert [t.key_length for t in p.transforms_of(TransformType.ENCR)] == [128, 256]
    assert [t.transform_id for t in p.transforms_of(TransformType.INTEG)] == [2, 12]
    assert [t.transform_id for t in p.transforms_of(TransformType.PRF)] == [PrfId.HMAC_SHA1, PrfId.HMAC_SHA2_256]
    assert [t.transform_id for t in p.transforms_of(TransformType.KE)] == [14, 19]


@pytest.mark.parametrize(
    "text, esn",
    [("aes128gcm16-esn", [EsnId.ESN]), ("aes128gcm16-noesn", [EsnId.NO_ESN]),
     ("aes128gcm16", [EsnId.NO_ESN]), ("aes128gcm16-esn-noesn", [EsnId.ESN, EsnId.NO_ESN])],
)
def test_esp_esn(text: str, esn: list[int]) -> None:
    (p,) = parse_proposals(text, ESP, spi=b"\x01\x02\x03\x04")
    assert [t.transform_id for t in p.transforms_of(TransformType.ESN)] == esn
    assert p.transforms_of(TransformType.KE) == []  # ESP without a group: no KE transform
    assert p.spi == b"\x01\x02\x03\x04" and p.protocol_id == ESP


def test_esp_with_pfs_group() -> None:
    (p,) = parse_proposals("aes256-sha512-modp3072", ESP)
    assert [int(t.transform_type) for t in p.transforms] == [1, 3, 4, 5]


@pytest.mark.parametrize(
    "word, ident, bits",
    [("aes192", EncrId.AES_CBC, 192), ("aes256gcm8", EncrId.AES_GCM_8, 256), ("aes128gcm12", EncrId.AES_GCM_12, 128),
     ("aes256gcm128", EncrId.AES_GCM_16, 256), ("aes128ccm16", EncrId.AES_CCM_16, 128),
     ("aes192ccm8", EncrId.AES_CCM_8, 192), ("aes128ctr", EncrId.AES_CTR, 128), ("3des", EncrId.TRIPLE_DES, None),
     ("chacha20poly1305", EncrId.CHACHA20_POLY1305, None)],
)
def test_encryption_keywords(word: str, ident: int, bits: int | None) -> None:
    integ = "" if ident in (EncrId.AES_GCM_8, EncrId.AES_GCM_12, EncrId.AES_GCM_16, EncrId.AES_CCM_16,
                            EncrId.AES_CCM_8, EncrId.CHACHA20_POLY1305) else "-sha256"
    (p,) = parse_proposals(f"{word}{integ}-prfsha256-ecp256", IKE)
    assert p.transforms[0] == T(TransformType.ENCR, ident, bits)


@pytest.mark.parametrize(
    "integ, prf",
    [("md5", PrfId.HMAC_MD5), ("sha1", PrfId.HMAC_SHA1), ("sha384", PrfId.HMAC_SHA2_384),
     ("sha512", PrfId.HMAC_SHA2_512), ("aesxcbc", PrfId.AES128_XCBC), ("aescmac", PrfId.AES128_CMAC)],
)
def test_prf_derived_from_integrity(integ: str, prf: int) -> None:
    (p,) = parse_proposals(f"aes128-{integ}-modp2048", IKE)
    assert [t.transform_id for t in p.transforms_of(TransformType.PRF)] == [prf]


@pytest.mark.parametrize(
    "word, group",
    [("modp1024", 2), ("modp1536", 5), ("modp4096", 16), ("modp6144", 17), ("modp8192", 18), ("ecp384", 20),
     ("ecp521", 21), ("ecp192", 25), ("ecp224", 26), ("ecp256bp", 28), ("ecp512bp", 30), ("curve25519", 31),
     ("x448", 32), ("curve448", 32), ("mlkem512", 35), ("mlkem768", 36), ("mlkem1024", 37)],
)
def test_key_exchange_keywords(word: str, group: int) -> None:
    (p,) = parse_proposals(f"aes128gcm16-prfsha256-{word}", IKE)
    assert p.transforms_of(TransformType.KE) == [T(TransformType.KE, group)]


def test_additional_key_exchanges_rfc9370() -> None:
    (p,) = parse_proposals("aes256gcm16-prfsha384-ecp384-ke1_mlkem768-ke2_mlkem1024-ke2_none", IKE)
    assert p.transforms_of(TransformType.ADDKE1) == [T(6, KeyExchangeId.ML_KEM_768)]
    assert p.transforms_of(TransformType.ADDKE2) == [T(7, KeyExchangeId.ML_KEM_1024), T(7, KeyExchangeId.NONE)]
    assert proposal_to_keywords(p) == "aes256gcm16-prfsha384-ecp384-ke1_mlkem768-ke2_mlkem1024-ke2_none"


@pytest.mark.parametrize(
    "text, needle",
    [("aes128-sha256-bogus", "bogus"), ("aes999-sha256-modp2048", "aes999"), ("aes128-sha256-ke8_mlkem768", "ke8"),
     ("aes128gcm16-prfsha256-ke1_foo", "ke1_foo"),
     # str.isdigit() accepts these, int() does not / maps them to ASCII digits: both must be refused.
     ("aes128gcm16-prfsha256-x25519-ke\u00b2_x25519", "ke\u00b2"),
     ("aes128gcm16-prfsha256-x25519-ke\u0663_x25519", "ke\u0663")],
)
def test_unknown_keyword_is_named(text: str, needle: str) -> None:
    with pytest.raises(LocalProtocolError, match=needle):
        parse_proposals(text, IKE)


@pytest.mark.parametrize(
    "text, protocol",
    [("aes128gcm16-x25519", IKE),  # IKE: no PRF and nothing to derive it from
     ("aes128-sha256", IKE),  # IKE: no key exchange
     ("aes128-prfsha256-x25519", IKE),  # classic cipher without integrity
     ("aes128gcm16-sha256-prfsha256-x25519", IKE),  # AEAD with integrity
     ("aes128gcm16-aes128-sha256-x25519", IKE),  # AEAD mixed with classic
     ("aes128gcm16-prfsha256-x25519-esn", IKE),
     ("aes128gcm16-prfsha256", ESP),
     ("sha256", ESP),
     ("", IKE), ("aes128gcm16,,aes256gcm16", ESP), ("aes128gcm16--esn", ESP)],
)
def test_invalid_proposals(text: str, protocol: ProtocolId) -> None:
    with pytest.raises(LocalProtocolError):
        parse_proposals(text, protocol)


def test_keywords_round_trip() -> None:
    for text, protocol in [
        ("aes128gcm16-aes256gcm16-chacha20poly1305-prfsha256-prfsha384-x25519-ecp256-mlkem768", IKE),
        ("aes256-sha384-prfsha384-modp2048-ecp521", IKE),
        ("aes128ctr-aes192-3des-aesxcbc-aescmac-prfaesxcbc-prfaescmac-modp3072", IKE),
        ("aes128gcm16-esn-noesn", ESP),
        ("aes256-sha512-modp4096-noesn", ESP),
    ]:
        (p,) = parse_proposals(text, protocol)
        assert proposal_to_keywords(p) == text
        assert parse_proposals(proposal_to_keywords(p), protocol) == [p]


def test_keywords_are_canonical_whatever_the_wire_order() -> None:
    (p,) = parse_proposals("aes256-sha256-modp2048", IKE)
    shuffled = Proposal(1, IKE, b"", [p.transforms[3], p.transforms[2], p.transforms[0], p.transforms[1]])
    assert proposal_to_keywords(shuffled) == proposal_to_keywords(p) == "aes256-sha256-prfsha256-modp2048"


def test_unknown_transforms_are_shown_not_dropped() -> None:
    p = Proposal(1, IKE, b"", [T(200, 1), T(1, 99, 64), T(4, 4242)])
    assert proposal_to_keywords(p) == "unknown(1:99/64)-unknown(4:4242)-unknown(200:1)"


_encr = st.sampled_from(sorted(w for w in ENCRYPTION if "gcm" in w or "ccm" in w or "chacha" in w))
_prf = st.sampled_from(sorted(PRF))
_ke = st.sampled_from(sorted(KEY_EXCHANGE))


@settings(max_examples=100, deadline=None)
@given(st.lists(_encr, min_size=1, max_size=3), st.lists(_prf, min_size=1, max_size=2), st.lists(_ke, min_size=1, max_size=3))
def test_generated_aead_proposals_round_trip(encr: list[str], prf: list[str], ke: list[str]) -> None:
    (p,) = parse_proposals("-".join(encr + prf + ke), IKE)
    again = parse_proposals(proposal_to_keywords(p), IKE)
    assert again == [p]
    # On the wire and back.
    msg = Message(b"\x01" * 8, bytes(8), 34, 0, [SA([p])])
    assert Message.parse(msg.serialize()).payloads == [SA([p])]


def test_matches_what_strongswan_sent() -> None:
    """The IKE_SA_INIT requests of the strongSwan capture carry the proposals of the configured keyword
    strings (MANIFEST.txt): the same transforms, in the same order, come out of parse_proposals."""
    manifest = (CORPUS / "MANIFEST.txt").read_text().splitlines()
    checked = 0
    for line in manifest:
        fields = [f.strip() for f in line.split("|")]
        if line.startswith("#") or len(fields) < 6 or "ike_sa_init req" not in fields[1]:
            continue
        keywords = fields[5].removeprefix("proposals:").split(" / ")[0].strip()
        msg = Message.parse((CORPUS / fields[0]).read_bytes())
        sa = msg.find(SA)
        if sa is None:
            continue
        ours = parse_proposals(keywords, IKE)
        if "invalid_ke" in fields[0]:
            # After INVALID_KE_PAYLOAD strongSwan moves the requested group first: same set, new order.
            assert sorted(sorted(map(repr, p.transforms)) for p in sa.proposals) == sorted(
                sorted(map(repr, p.transforms)) for p in ours
            ), fields[0]
        else:
            # Proposal numbering may differ from the configured order; the transforms and their order may not.
            assert sorted(repr(p.transforms) for p in sa.proposals) == sorted(repr(p.transforms) for p in ours), fields[0]
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("protocol", [0, 9, 256])
def test_unknown_protocol_id_is_a_local_error(protocol: int) -> None:
    with pytest.raises(LocalProtocolError, match="protocol"):
        parse_proposals("aes128gcm16", protocol)  # type: ignore[arg-type]


def test_proposal_count_is_bounded_by_what_the_codec_accepts() -> None:
    from ikev2lib.wire.limits import MAX_PROPOSALS

    assert len(parse_proposals(",".join(["aes128gcm16"] * MAX_PROPOSALS), ESP)) == MAX_PROPOSALS
    with pytest.raises(LocalProtocolError, match="proposals"):
        parse_proposals(",".join(["aes128gcm16"] * (MAX_PROPOSALS + 1)), ESP)
