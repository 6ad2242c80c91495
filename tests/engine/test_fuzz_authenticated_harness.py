"""The post-ICV engine fuzz harness (fuzz/fuzz_engine_authenticated.py) over fixed inputs.

An unmodified chain, re-protected by the harness, must be accepted exactly like the original (the
rest of the scenario follows byte for byte): that proves the re-protection (keys, AAD, message ID,
flags, SKF numbering) is right, so that mutated chains reach the code after decryption. Mutated
chains must get an answer or a typed refusal from that code, never an ICV drop.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ikev2lib.events import ChildSaCreated, IkeSaEstablished, ProtocolErrorEvent
from ikev2lib.state import IkeState
from ikev2lib.wire import SA, Auth, ExchangeType, NotifyType, Payload

_PATH = Path(__file__).resolve().parents[2] / "fuzz" / "fuzz_engine_authenticated.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_engine_authenticated", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


harness = _load()


def _target(label: str, exchange: int, response: bool) -> int:
    """The harness's target number of one captured message."""
    for number, index in enumerate(harness.TARGETS):
        captured = harness.CAPTURED[index]
        header = captured.header
        if captured.label == label and header.exchange_type == exchange and bool(header.flags & 0x20) == response:
            return int(number)
    raise LookupError(label)


def _following(outcome) -> tuple[list[bytes], list[bytes]]:  # type: ignore[no-untyped-def]
    """(what the pair sent after the injection, what it sent at that point of the capture)."""
    got = [data for _, data in outcome.pair.log]
    after = [d for captured in harness.following(outcome.target) for d in captured.datagrams]
    return got, after[outcome.pending : outcome.pending + len(got)]


def _events(outcome, side: int, kind: type) -> list:  # type: ignore[no-untyped-def]
    return [e for e in outcome.new_events(side) if isinstance(e, kind)]


@pytest.mark.parametrize("number", range(len(harness.TARGETS)))
def test_unmodified_chain_reprotected_is_accepted_exactly_like_the_original(number: int) -> None:
    outcome = harness.run_input(harness.noop_input(number))
    assert outcome.target == harness.TARGETS[number]
    assert outcome.opened
    got, expected = _following(outcome)
    assert got == expected


@pytest.mark.parametrize("chunk", [7, 40, 1000])
def test_unmodified_chain_in_skf_fragments_is_accepted_like_the_original(chunk: int) -> None:
    number = _target("I creates a Child SA", ExchangeType.CREATE_CHILD_SA, False)
    outcome = harness.run_input(harness.noop_input(number), chunk=chunk)
    assert (len(outcome.injected) > 1) == (chunk < 100)  # the chain is about 190 octets
    assert outcome.opened
    got, expected = _following(outcome)
    assert got == expected and got  # the responder answered, and its answer is the captured one
    assert _events(outcome, 1, ChildSaCreated)


def test_unmodified_ike_auth_request_establishes_the_sa() -> None:
    outcome = harness.run_input(harness.noop_input(_target("initiate", ExchangeType.IKE_AUTH, False)))
    responder = outcome.pair.endpoints[1]
    assert _events(outcome, 1, IkeSaEstablished) and _events(outcome, 1, ChildSaCreated)
    assert _events(outcome, 0, IkeSaEstablished) and _events(outcome, 0, ChildSaCreated)
    assert responder.state_of(responder.ike_sa_ids()[0]) == IkeState.ESTABLISHED


def _forged_auth(payloads: list[Payload]) -> list[Payload]:
    auth = next(p for p in payloads if isinstance(p, Auth))
    auth.data = bytes(len(auth.data))
    return payloads


def test_mutated_ike_auth_request_is_refused_after_decryption() -> None:
    number = _target("initiate", ExchangeType.IKE_AUTH, False)
    outcome = harness.run_input(harness.noop_input(number), mutation=_forged_auth)
    assert outcome.opened  # past the ICV: the AUTH check refused it
    refused = _events(outcome, 1, ProtocolErrorEvent)
    assert refused and refused[0].notify == NotifyType.AUTHENTICATION_FAILED
    answered = _events(outcome, 0, ProtocolErrorEvent)  # the initiator got (and decrypted) the Notify
    assert answered and answered[0].received and answered[0].notify == NotifyType.AUTHENTICATION_FAILED
    assert not _events(outcome, 1, IkeSaEstablished)


def test_mutated_create_child_sa_request_gets_a_notify_answer() -> None:
    number = _target("I creates a Child SA", ExchangeType.CREATE_CHILD_SA, False)
    outcome = harness.run_input(harness.noop_input(number), chunk=30,
                                mutation=lambda chain: [p for p in chain if not isinstance(p, SA)])  # fmt: skip
    assert outcome.opened and len(outcome.injected) > 1
    answered = _events(outcome, 0, ProtocolErrorEvent)
    assert answered and answered[0].received and answered[0].notify == NotifyType.INVALID_SYNTAX
    assert not _events(outcome, 1, ChildSaCreated)


def test_invariant_checks_fire() -> None:
    outcome = harness.run_input(harness.noop_input(0))
    before = harness.snapshot(outcome.pair)
    key = next(iter(before.mids))
    before.mids[key] = (before.mids[key][0] + 5, before.mids[key][1])
    with pytest.raises(harness.Finding, match="went back"):
        harness.check(outcome.pair, before)


def test_fixed_random_inputs_hold_the_invariants() -> None:
    rng = random.Random(4)
    for _ in range(150):
        harness.run_input(rng.randbytes(rng.randint(1, 300)))


def test_describe_tells_what_an_input_does() -> None:
    text = harness.describe(harness.noop_input(_target("initiate", ExchangeType.IKE_AUTH, False)))
    assert "IKE_AUTH request from the initiator" in text and "decrypted and parsed: True" in text
    assert "IkeSaEstablished" in text and text.endswith("invariants hold")
