"""IANA registry values (spot checks against the RFC/IANA tables) and unknown-value handling."""

from __future__ import annotations

import pytest

from ikev2lib.wire import (
    SA,
    EncrId,
    ExchangeType,
    IntegId,
    KeyExchangeId,
    DhGroup,
    Message,
    NotifyType,
    PayloadType,
    PrfId,
    Proposal,
    Transform,
    TransformType,
)


@pytest.mark.parametrize(
    "member, value",
    [
        (ExchangeType.IKE_SA_INIT, 34), (ExchangeType.INFORMATIONAL, 37), (ExchangeType.IKE_INTERMEDIATE, 43),
        (ExchangeType.IKE_FOLLOWUP_KE, 44),
        (PayloadType.SA, 33), (PayloadType.SK, 46), (PayloadType.EAP, 48), (PayloadType.SKF, 53),
        (NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, 1), (NotifyType.INVALID_SYNTAX, 7),
        (NotifyType.INVALID_KE_PAYLOAD, 17), (NotifyType.TS_UNACCEPTABLE, 38), (NotifyType.STATE_NOT_FOUND, 47),
        (NotifyType.NAT_DETECTION_SOURCE_IP, 16388), (NotifyType.COOKIE, 16390), (NotifyType.REKEY_SA, 16393),
        (NotifyType.MOBIKE_SUPPORTED, 16396), (NotifyType.UPDATE_SA_ADDRESSES, 16400),
        (NotifyType.REDIRECT_SUPPORTED, 16406), (NotifyType.REDIRECT, 16407),
        (NotifyType.CHILDLESS_IKEV2_SUPPORTED, 16418), (NotifyType.IKEV2_FRAGMENTATION_SUPPORTED, 16430),
        (NotifyType.SIGNATURE_HASH_ALGORITHMS, 16431), (NotifyType.USE_PPK, 16435), (NotifyType.NO_PPK_AUTH, 16437),
        (NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED, 16438), (NotifyType.ADDITIONAL_KEY_EXCHANGE, 16441),
        (TransformType.KE, 4), (TransformType.ESN, 5), (TransformType.ADDKE1, 6), (TransformType.ADDKE7, 12),
        (EncrId.AES_CBC, 12), (EncrId.AES_GCM_16, 20), (EncrId.CHACHA20_POLY1305, 28),
        (PrfId.HMAC_SHA2_256, 5), (PrfId.AES128_CMAC, 8), (IntegId.HMAC_SHA2_512_256, 14),
        (KeyExchangeId.MODP_2048, 14), (KeyExchangeId.CURVE25519, 31), (KeyExchangeId.CURVE448, 32),
        (KeyExchangeId.ML_KEM_512, 35), (KeyExchangeId.ML_KEM_768, 36), (KeyExchangeId.ML_KEM_1024, 37),
    ],
)
def test_registry_values(member: int, value: int) -> None:
    assert member == value


def test_dh_group_alias() -> None:
    assert DhGroup is KeyExchangeId


def test_known_values_decode_to_members_unknown_stay_ints() -> None:
    proposal = Proposal(1, 77, b"", [Transform(1, 20, 128), Transform(200, 5), Transform(6, 36), Transform(2, 999)])
    msg = Message(b"\x01" * 8, bytes(8), 34, 0, [SA([proposal])])
    (parsed,) = Message.parse(msg.serialize()).payloads
    assert isinstance(parsed, SA)
    p = parsed.proposals[0]
    assert type(p.protocol_id) is int
    t = p.transforms
    assert t[0].transform_type is TransformType.ENCR and t[0].transform_id is EncrId.AES_GCM_16
    assert type(t[1].transform_type) is int and type(t[1].transform_id) is int
    assert t[2].transform_type is TransformType.ADDKE1 and t[2].transform_id is KeyExchangeId.ML_KEM_768
    assert t[3].transform_type is TransformType.PRF and type(t[3].transform_id) is int
