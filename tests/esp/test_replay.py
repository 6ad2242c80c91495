"""Anti-replay window (RFC 4303 section 3.4.3, RFC 6479) and ESN inference (RFC 4303 Appendix A2.2).

A RuleBasedStateMachine drives the C window (RFC 6479 ring) and the pure-Python window (shifted bitmap)
against a deliberately naive model: the set of accepted numbers and their maximum.
"""

from __future__ import annotations

from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ikev2lib.esp import Status, backends, errors
from tests.esp.helpers import ipv4, pair

U32 = 0xFFFFFFFF


class ModelWindow:
    """The textbook definition: accepted if above the highest, or within W of it and not yet seen."""

    def __init__(self, window: int, last: int = 0) -> None:
        self.window, self.last, self.seen = window, last, set[int]()

    def check(self, seq: int) -> int:
        if seq == 0:
            return Status.OUTSIDE_WINDOW
        if seq > self.last:
            return Status.OK
        if self.last - seq >= self.window:
            return Status.OUTSIDE_WINDOW
        return Status.REPLAYED if seq in self.seen else Status.OK

    def update(self, seq: int) -> None:
        self.seen.add(seq)
        self.last = max(self.last, seq)


def model_infer(last: int, window: int, seq_lo: int) -> int | None:
    """RFC 4303 Appendix A2.2, transcribed literally (with the 2^64 / below-zero edges made explicit)."""
    tl, th = last & U32, last >> 32
    if tl >= window - 1:  # Case A
        seqh = th if seq_lo >= tl - window + 1 else th + 1
    else:  # Case B
        seqh = th - 1 if seq_lo >= (tl - window + 1) % 2**32 else th
    if seqh < 0 or seqh > U32:
        return None
    return (seqh << 32) | seq_lo


WINDOWS = st.sampled_from([1, 32, 63, 64, 65, 128, 1000, 1024, 4096])


class WindowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.impls: list[object] = []
        self.model = ModelWindow(64)

    @initialize(window=WINDOWS, start=st.sampled_from([0, 1000, 2**32 - 100, 2**33 + 5, 2**64 - 5000]))
    def setup(self, window: int, start: int) -> None:
        self.impls = [b.ReplayWindow(window) for b in backends().values()]
        for w in self.impls:
            w.reset(start)  # type: ignore[attr-defined]
        self.model = ModelWindow(window, start)

    def _offer(self, seq: int) -> None:
        expected = self.model.check(seq)
        for w in self.impls:
            assert w.check(seq) == expected, (type(w).__module__, seq)  # type: ignore[attr-defined]
        if expected == Status.OK:
            for w in self.impls:
                w.update(seq)  # type: ignore[attr-defined]
            self.model.update(seq)

    @rule(delta=st.integers(-5000, 5000))
    def near_top(self, delta: int) -> None:
        seq = self.model.last + delta
        if 0 <= seq < 2**64:
            self._offer(seq)

    @rule(delta=st.integers(0, 70))
    def window_edge(self, delta: int) -> None:
        seq = self.model.last - self.model.window + delta - 35
        if 0 <= seq < 2**64:
            self._offer(seq)

    @rule(jump=st.integers(1, 2**40))
    @precondition(lambda self: self.model.last < 2**63)
    def big_jump(self, jump: int) -> None:
        self._offer(self.model.last + jump)

    @rule(seq_lo=st.integers(0, U32))
    def infer(self, seq_lo: int) -> None:
        expected = model_infer(self.model.last, self.model.window, seq_lo)
        for w in self.impls:
            assert w.infer(seq_lo) == expected  # type: ignore[attr-defined]

    @invariant()
    def same_top(self) -> None:
        for w in self.impls:
            assert w.last == self.model.last  # type: ignore[attr-defined]


TestWindowMachine = WindowMachine.TestCase
TestWindowMachine.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)


@given(last=st.integers(0, 2**64 - 1), window=WINDOWS, seq_lo=st.integers(0, U32))
@settings(max_examples=300, deadline=None)
def test_esn_inference_matches_rfc4303_appendix_a(last: int, window: int, seq_lo: int) -> None:
    expected = model_infer(last, window, seq_lo)
    for b in backends().values():
        w = b.ReplayWindow(window)
        w.reset(last)
        assert w.infer(seq_lo) == expected


@pytest.mark.parametrize(
    "last, seq_lo, expected",
    [
        (2**32 - 10, 5, 2**32 + 5),  # case A, the sender wrapped its low half: high half + 1
        (2**32 - 10, 2**32 - 20, 2**32 - 20),  # case A, same subspace
        (2**32 + 10, 2**32 - 20, 2**32 - 20),  # case B, late packet from the previous subspace
        (2**32 + 10, 20, 2**32 + 20),  # case B, same subspace
        (5, 2**32 - 3, None),  # case B with high half 0: would be below zero
        (2**64 - 2, 2**32 - 1, 2**64 - 1),
    ],
)
def test_esn_inference_cases(backend: ModuleType, last: int, seq_lo: int, expected: int | None) -> None:
    w = backend.ReplayWindow(64)
    w.reset(last)
    assert w.infer(seq_lo) == expected


def test_sa_window_edges(backend: ModuleType) -> None:
    out, inb = pair(backend, replay_window=64)
    packets = [out.encap(ipv4()) for _ in range(200)]  # sequence numbers 1..200
    inb.decap(packets[199])  # highest: 200
    inb.decap(packets[136])  # 137 = 200 - 63: the oldest number inside a 64-packet window
    with pytest.raises(errors.EspOutsideWindowError):
        inb.decap(packets[135])  # 136: one left of the window
    with pytest.raises(errors.EspReplayError):
        inb.decap(packets[136])
    assert inb.stats.drops == {"replayed": 1, "outside_window": 1}


def test_window_update_only_after_icv(backend: ModuleType) -> None:
    out, inb = pair(backend)
    pkt = bytearray(out.encap(ipv4()))
    good = bytes(pkt)
    pkt[-1] ^= 1
    with pytest.raises(errors.EspAuthenticationError):
        inb.decap(bytes(pkt))
    assert inb.highest_sequence == 0
    assert inb.decap(good)[0] == 4  # the forged copy did not burn the sequence number


def test_replay_protection_off(backend: ModuleType) -> None:
    out, inb = pair(backend, replay_window=0)
    pkt = out.encap(ipv4())
    assert inb.decap(pkt) == inb.decap(pkt)


def test_esn_sa_across_the_32_bit_boundary(backend: ModuleType) -> None:
    out, inb = pair(backend, esn=True, replay_window=128)
    out.advance_sequence(2**32 - 3)
    inb.advance_sequence(2**32 - 3)
    packets = [out.encap(ipv4(bytes([i]))) for i in range(6)]  # 2^32-3 .. 2^32+2
    assert [int.from_bytes(p[4:8], "big") for p in packets] == [2**32 - 3, 2**32 - 2, 2**32 - 1, 0, 1, 2]
    for i in (4, 0, 5, 2, 1, 3):  # out of order across the wrap
        assert inb.decap(packets[i])[1] == ipv4(bytes([i]))
    assert inb.highest_sequence == 2**32 + 2
