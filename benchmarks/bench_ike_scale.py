"""IKE engine benchmarks (pytest-benchmark): in-process handshakes and timer handling at scale.

    .venv/bin/python -m pytest benchmarks/bench_ike_scale.py --benchmark-enable -p no:cacheprovider

* `test_handshake_in_process`: one complete handshake (IKE_SA_INIT + IKE_AUTH with the first Child SA;
  PSK, X25519, AES-128-GCM) between two engines in this process; `test_baseline_bare_crypto_handshake`
  is the same handshake's crypto alone, the in-run reference (their ratio = the crypto share).
* `test_get_timer[N]`, `test_handle_timer_idle[N]`, `test_fire_due_timer[N]`: one responder holding N
  established IKE SAs, each with a Child SA and armed DPD/rekey timers (N = 100, 1,000, 10,000; the
  10,000 responder takes some 15 s to build, once per session). Flat cost across N means a heap or a
  timer wheel; cost growing with N means a scan.

Compare rows within one run (shared, noisy machine). Without --benchmark-enable (the pyproject default)
each body runs once, as a smoke test. `benchmarks/ike_compare.py` reports the same figures as a table.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ike_compare import (  # noqa: E402
    RESPONDER,
    bare_crypto_handshake,
    build_responder,
    count_established,
    initiator_address,
    initiator_config,
    responder_config,
    shuttle,
)

from ikev2lib.endpoint import MAX_IKE_SAS, MAX_SAS_PER_PEER, IkeEndpoint  # noqa: E402

SIZES = (100, 1_000, 10_000)
FIRE_ROUNDS = 20  # due timers fired per benchmark (each sends one DPD request)


class _HandshakePair:
    """Fresh endpoint pairs, replaced before the responder's per-peer limit is reached."""

    def __init__(self) -> None:
        self.cfg = initiator_config()
        self.rcfg = responder_config()
        self.now = 1000.0
        self._new()

    def _new(self) -> None:
        self.ini = IkeEndpoint(local_addr=initiator_address(0))
        self.res = IkeEndpoint(self.rcfg, local_addr=RESPONDER, cookie_threshold=MAX_IKE_SAS)
        self.held = 0

    def handshake(self) -> tuple[int, int]:
        if self.held >= MAX_SAS_PER_PEER:
            self._new()
        self.ini.initiate(self.cfg, RESPONDER, self.now)
        shuttle(self.ini, self.res, self.now)
        self.held += 1
        count_established(self.res)
        return count_established(self.ini)


def test_handshake_in_process(benchmark: Any) -> None:
    pair = _HandshakePair()
    result = benchmark(pair.handshake)
    assert result == (1, 1)  # one IKE SA and its Child SA established by the last round


def test_baseline_bare_crypto_handshake(benchmark: Any) -> None:
    benchmark(bare_crypto_handshake)


_responders: dict[int, tuple[IkeEndpoint, float]] = {}


def _responder(n: int) -> tuple[IkeEndpoint, float]:
    # Built once per size and session; the fire benchmark advances it, which the others tolerate.
    if n not in _responders:
        _responders[n] = build_responder(n, 1000.0)
    return _responders[n]


@pytest.mark.parametrize("n", SIZES)
def test_get_timer(benchmark: Any, n: int) -> None:
    res, now = _responder(n)
    assert len(res) == n
    due = benchmark(res.get_timer)
    assert due is not None and due > 1000.0


@pytest.mark.parametrize("n", SIZES)
def test_handle_timer_idle(benchmark: Any, n: int) -> None:
    res, _ = _responder(n)
    due = res.get_timer()
    assert due is not None
    before = len(res)
    benchmark(res.handle_timer, due - 1.0)  # nothing is due yet: pure bookkeeping cost
    assert len(res) == before and not res.datagrams_to_send(due - 1.0)


@pytest.mark.parametrize("n", SIZES)
def test_fire_due_timer(benchmark: Any, n: int) -> None:
    res, _ = _responder(n)
    sent: list[int] = []

    def fire() -> None:
        due = res.get_timer()
        if due is None:
            raise AssertionError("no timer armed")
        res.handle_timer(due)
        sent.append(len(res.datagrams_to_send(due)))

    benchmark.pedantic(fire, rounds=FIRE_ROUNDS, iterations=1)
    while res.next_event() is not None:
        pass
    assert sum(sent) >= len(sent)  # every fired timer sent a DPD request or a retransmission
