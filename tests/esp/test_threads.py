"""Threads and the GIL: waiting for a busy SA never stalls the other Python threads.

An SA's calls are serialized by its own lock. While one thread runs a long batch on an SA (lock held,
GIL released), a second thread calling the same SA waits for that lock: it must wait without the GIL,
or every Python thread of the process stands still until the batch ends.

The witness is a third, pure-Python thread that counts. The switch interval is raised so far that the
interpreter never hands the GIL over by force during the test: a thread gets it only when its holder
gives it up (a sleep, a call that releases it). So the count can move between two reads in the calling
thread only if the call in between gave up the GIL, which is what a call that waits must do.
"""

from __future__ import annotations

import sys
import threading
import time
from array import array
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from ikev2lib.esp import errors
from tests.esp.helpers import ipv4, pair

SPI = 0x3000
NO_FORCED_SWITCH = 600.0  # s: longer than the test, so the GIL changes hands only when given up
BUSY_BATCH = 2048  # packets per batch of the busy thread: a few ms of work with the SA's lock held
BUSY_INNER = ipv4(bytes(1380))  # 1400-byte inner packet, the same one for every slot of the batch
SMALL_INNER = ipv4(bytes(20))  # below the size at which a single call always releases the GIL
WITNESSED = 3  # calls that must be seen letting the counting thread run
TIME_LIMIT = 20.0  # s: bound on each test's loop, whatever the machine's load


class _Busy:
    """Runs batches on one SA in a loop (GIL released inside each batch) until stopped."""

    def __init__(self, run_batch: Callable[[], int]) -> None:
        self.run_batch = run_batch
        self.batches = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        try:
            while not self.stop.is_set():
                if self.run_batch() != BUSY_BATCH:
                    raise AssertionError("busy batch refused packets")
                self.batches += 1
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc


def _encap_batch(sa: Any) -> Callable[[], int]:
    buf = bytearray(BUSY_INNER)
    offs, lens = array("I", [0] * BUSY_BATCH), array("I", [len(BUSY_INNER)] * BUSY_BATCH)
    out = bytearray(BUSY_BATCH * (len(BUSY_INNER) + 64))
    o_offs, o_lens, sts = array("I", bytes(4 * BUSY_BATCH)), array("I", bytes(4 * BUSY_BATCH)), bytearray(BUSY_BATCH)
    return lambda: sa.encap_batch(buf, offs, lens, out, o_offs, o_lens, sts)


def _decap_batch(backend: ModuleType, sa: Any, frame: bytes) -> Callable[[], int]:
    # Anti-replay is off on this SA, so the same authentic frame decrypts again and again.
    table = backend.SATable([sa])
    buf = bytearray(frame)
    offs, lens = array("I", [0] * BUSY_BATCH), array("I", [len(frame)] * BUSY_BATCH)
    out = bytearray(BUSY_BATCH * len(frame))
    o_offs, o_lens = array("I", bytes(4 * BUSY_BATCH)), array("I", bytes(4 * BUSY_BATCH))
    nhs, sts = bytearray(BUSY_BATCH), bytearray(BUSY_BATCH)
    return lambda: table.decap_batch(buf, offs, lens, out, o_offs, o_lens, nhs, sts)


OPERATIONS = ["encap", "decap", "stats", "soft_expired", "next_sequence", "highest_sequence", "advance_sequence"]


def _setup(backend: ModuleType, operation: str) -> tuple[Callable[[], object], Callable[[], int]]:
    """(the call under test, the busy batch) on one SA."""
    # ESN: advance_sequence below jumps 2**32 numbers per call, far ahead of anything the batches use.
    out, inb = pair(backend, spi=SPI, replay_window=0, esn=True)
    if operation in ("decap", "highest_sequence"):
        frame = out.encap(BUSY_INNER)
        small = out.encap(SMALL_INNER)
        call: Callable[[], object] = {
            "decap": lambda: inb.decap(small),
            "highest_sequence": lambda: inb.highest_sequence,
        }[operation]
        return call, _decap_batch(backend, inb, frame)
    call = {
        "encap": lambda: out.encap(SMALL_INNER),
        "stats": lambda: out.stats,
        "soft_expired": lambda: out.soft_expired,
        "next_sequence": lambda: out.next_sequence,
        "advance_sequence": lambda: out.advance_sequence(out.next_sequence + 2**32),
    }[operation]
    return call, _encap_batch(out)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_waiting_for_a_busy_sa_lets_other_python_threads_run(c_backend: ModuleType, operation: str) -> None:
    # C back end only: the pure-Python SA lock is a threading.Lock, whose acquire() always releases the
    # GIL while it waits, and its batches are Python code that needs forced switches to share the GIL.
    call, batch = _setup(c_backend, operation)
    busy = _Busy(batch)
    count = [0]
    stop_counting = threading.Event()

    def counting() -> None:
        while not stop_counting.is_set():
            count[0] += 1
            time.sleep(0.0002)  # gives the GIL up, so the other threads need no forced switch

    counter = threading.Thread(target=counting, daemon=True)
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(NO_FORCED_SWITCH)
    witnessed = calls = 0
    try:
        busy.thread.start()
        counter.start()
        deadline = time.monotonic() + TIME_LIMIT
        while witnessed < WITNESSED and time.monotonic() < deadline and busy.error is None:
            time.sleep(0.001)  # lets the busy thread start its next batch
            before = count[0]
            call()
            witnessed += count[0] != before  # only a call that gave the GIL up lets the count move
            calls += 1
    finally:
        sys.setswitchinterval(old_interval)
        busy.stop.set()
        stop_counting.set()
        busy.thread.join(timeout=30)
        counter.join(timeout=30)
    assert busy.error is None, busy.error
    assert busy.batches > 0 and calls > 0
    assert witnessed >= WITNESSED, (
        f"{operation}: in {calls} calls racing {busy.batches} batches on the same SA, the counting "
        f"thread moved during only {witnessed}: the calls waited for the SA holding the GIL"
    )


def test_single_calls_and_batches_on_one_sa_share_its_sequence_space(backend: ModuleType) -> None:
    # Same semantics on both back ends while single calls, counter reads and batches race on one SA:
    # every sequence number is used once, the counters are exact, every packet decrypts.
    out, inb = pair(backend, spi=SPI, replay_window=0)
    batches, batch_size, singles = 20, 64, 400
    inner = ipv4(bytes(60))
    buf = bytearray(inner)
    offs, lens = array("I", [0] * batch_size), array("I", [len(inner)] * batch_size)
    frames: list[bytes] = []
    errors_seen: list[BaseException] = []

    def batch_thread() -> None:
        try:
            for _ in range(batches):
                o, sts = bytearray(batch_size * 200), bytearray(batch_size)
                o_offs, o_lens = array("I", bytes(4 * batch_size)), array("I", bytes(4 * batch_size))
                assert out.encap_batch(buf, offs, lens, o, o_offs, o_lens, sts) == batch_size
                frames.extend(bytes(o[a : a + n]) for a, n in zip(o_offs, o_lens))
        except BaseException as exc:
            errors_seen.append(exc)

    t = threading.Thread(target=batch_thread)
    t.start()
    singles_out: list[bytes] = []
    reads: list[int] = []
    try:
        for _ in range(singles):
            singles_out.append(out.encap(inner))
            reads.append(out.stats.packets)
            reads.append(out.next_sequence - 1)
    finally:
        t.join(timeout=60)
    assert not errors_seen, errors_seen
    total = batches * batch_size + singles
    seqs = sorted(int.from_bytes(f[4:8], "big") for f in frames + singles_out)
    assert seqs == list(range(1, total + 1))
    assert reads == sorted(reads) and 0 < reads[0] and reads[-1] <= total  # counters only move forward
    assert out.stats.packets == total and out.next_sequence == total + 1
    for frame in frames + singles_out:
        assert inb.decap(frame) == (4, inner)
    assert inb.stats.packets == total
    with pytest.raises(errors.EspUsageError):
        out.advance_sequence(total)  # never back
