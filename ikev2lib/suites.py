"""What this library can run, as IKEv2 transforms, and the check of configured proposals against it.

One table per layer, each derived from the layer itself:
- IKE SA: `ikev2lib.crypto.IKE_TRANSFORMS` (what the crypto layer implements), less the key exchange
  methods the engine does not drive yet (`ENGINE_PENDING_KE`).
- ESP: `ESP_SUITES`, (ENCR id, key bits, INTEG id or None) -> the data plane's algorithm keyword, read
  from the keywords `ikev2lib.esp.params.ALGORITHMS` accepts through the proposal keyword tables.

`RUNNABLE[protocol]` holds the `(transform type, id, key length)` that negotiation may pick (it skips
everything else, negotiation.py); `check_proposals` refuses a configured proposal string that names
anything else (config.py). tests/test_suites.py builds a key exchange, an SK cipher or an ESP SA for
every entry.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from .crypto import IKE_TRANSFORMS
from .crypto.capabilities import TransformKey
from .esp.params import ALGORITHMS
from .exceptions import LocalProtocolError
from .proposals import keyword_transform, parse_proposals, proposal_to_keywords
from .wire.enums import EsnId, ProtocolId, TransformType
from .wire.sa import Proposal, Transform

__all__ = [
    "ENGINE_PENDING_KE",
    "ESP_SUITES",
    "RUNNABLE",
    "TransformKey",
    "check_proposals",
    "esp_suite_name",
]

SuiteKey = tuple[int, int | None, int | None]  # (ENCR id, key bits, INTEG id or None for AEAD)

_ENCR, _PRF, _INTEG = int(TransformType.ENCR), int(TransformType.PRF), int(TransformType.INTEG)
_KE, _ESN = int(TransformType.KE), int(TransformType.ESN)
_ADDKE = frozenset(int(t) for t in TransformType if t >= TransformType.ADDKE1)

# Key exchange methods the crypto layer has but the engine does not drive yet (none: the responder
# paths use KeyExchange.respond, which encapsulates for ML-KEM).
ENGINE_PENDING_KE: frozenset[int] = frozenset()
_RUNNABLE_KE = frozenset(k[1] for k in IKE_TRANSFORMS if k[0] == _KE) - ENGINE_PENDING_KE


def _esp_suites() -> dict[SuiteKey, str]:
    table: dict[SuiteKey, str] = {}
    for keyword, alg in ALGORITHMS.items():  # "aes128gcm16", "chacha20poly1305", "aes256-sha256", ...
        parts = [keyword_transform(word, ProtocolId.ESP) for word in keyword.split("-")]
        encr = parts[0]
        integ = parts[1] if len(parts) == 2 else None
        if encr is None or encr.transform_type != _ENCR or (len(parts) == 2 and integ is None) or len(parts) > 2:
            continue  # a data-plane keyword without a proposal keyword cannot be negotiated (a test proves none)
        integ_id = None if integ is None else int(integ.transform_id)
        table.setdefault((int(encr.transform_id), encr.key_length, integ_id), keyword)
        if encr.key_length is None:
            # a fixed-size key (ChaCha20) announced with a Key Length attribute all the same
            table.setdefault((int(encr.transform_id), alg.key_len * 8, integ_id), keyword)
    return table


ESP_SUITES: Mapping[SuiteKey, str] = _esp_suites()
"""(ENCR id, key bits, INTEG id or None) -> the ESP data plane's keyword for that cipher suite."""

RUNNABLE: Mapping[int, frozenset[TransformKey]] = {
    int(ProtocolId.IKE): frozenset(k for k in IKE_TRANSFORMS if k[0] != _KE or k[1] in _RUNNABLE_KE),
    int(ProtocolId.ESP): frozenset(
        {
            *((_ENCR, encr, bits) for encr, bits, _ in ESP_SUITES),
            *((_INTEG, integ, None) for _, _, integ in ESP_SUITES if integ is not None),
            *((_KE, group, None) for group in _RUNNABLE_KE),  # PFS: the IKE side's key exchange
            # both back ends of the data plane implement 64-bit sequence numbers (EspSA esn=True)
            *((_ESN, int(esn), None) for esn in EsnId),
        }
    ),
}
"""Protocol ID -> the transforms negotiation may pick for it (AH: none, there is no AH data plane)."""

_NOTHING: frozenset[TransformKey] = frozenset()


def esp_suite_name(encr_id: int, key_bits: int | None, integ_id: int | None) -> str | None:
    """The data plane's keyword for a negotiated ESP cipher (and integrity), None if it has none."""
    return ESP_SUITES.get((encr_id, key_bits, integ_id or None))


# Distinct (proposal string, protocol, field) checks remembered: configurations are built often
# (one per connection) from few distinct strings. Refusals are never cached.
CHECKED_CACHE_SIZE = 256

_KIND = {_ENCR: "encryption algorithm", _INTEG: "integrity algorithm", _PRF: "PRF", _KE: "key exchange method"}
_LAYER = {int(ProtocolId.IKE): "the IKE SA crypto", int(ProtocolId.ESP): "the ESP data plane"}


def check_proposals(text: object, protocol: ProtocolId, field: str) -> None:
    """Refuse (LocalProtocolError naming `field` and the keyword) a proposal string with an unknown
    keyword, a malformed proposal, or a transform `RUNNABLE` lacks."""
    if not isinstance(text, str):
        raise LocalProtocolError(f"{field} must be a string, not {type(text).__name__}")
    _check(text, int(protocol), field)


@functools.lru_cache(maxsize=CHECKED_CACHE_SIZE)
def _check(text: str, protocol: int, field: str) -> None:
    try:
        proposals = parse_proposals(text, ProtocolId(protocol))
    except LocalProtocolError as exc:
        raise LocalProtocolError(f"{field}: {exc}") from None
    runnable = RUNNABLE.get(protocol, _NOTHING)
    for item, proposal in zip(text.split(","), proposals):
        for t in proposal.transforms:
            if (int(t.transform_type), int(t.transform_id), t.key_length) not in runnable:
                raise LocalProtocolError(
                    f"{field}: {_typed(item, t, protocol)!r} cannot be used: {_why_not(t, protocol)}"
                )
    # Checking each transform suffices for ESP: the AEAD suites take no integrity algorithm (the parser
    # refuses one) and every CBC key size has every integrity algorithm (tests/test_suites.py).


def _typed(item: str, t: Transform, protocol: int) -> str:
    # the keyword as the user wrote it; a PRF derived from an integrity keyword has none
    for word in item.split("-"):
        if keyword_transform(word, ProtocolId(protocol)) == t:
            return word.strip()
    return proposal_to_keywords(Proposal(0, protocol, b"", [t]))


def _why_not(t: Transform, protocol: int) -> str:
    ttype, ident = int(t.transform_type), int(t.transform_id)
    if ttype in _ADDKE:
        return "additional key exchanges (RFC 9370) are not implemented"
    if ttype == _KE and ident in ENGINE_PENDING_KE:
        return "ML-KEM as a key exchange method is not run by the engine yet (its responder does not encapsulate)"
    layer = _LAYER.get(protocol)
    if layer is None:
        return "no data plane runs this protocol"
    kind = _KIND.get(ttype, f"transform of type {ttype}")
    return f"{layer} does not run this {kind} (it runs: {', '.join(_runnable_names(protocol, ttype))})"


def _runnable_names(protocol: int, ttype: int) -> list[str]:
    names = {
        proposal_to_keywords(Proposal(0, protocol, b"", [Transform(k[0], k[1], k[2])]))
        for k in RUNNABLE.get(protocol, _NOTHING)
        if k[0] == ttype
    }
    return sorted(n for n in names if not n.startswith("unknown("))
