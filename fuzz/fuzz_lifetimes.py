"""libFuzzer (atheris) harness for Child SA lifetimes and ESP-aware DPD: any sequence of ESP traffic
(both ways, up to and past the limits), forged ESP, user rekey/delete requests and jumps in time must
never raise out of the engine, and must leave both ends established and in agreement on their
Child SAs (each end's live SPIs are the other's, swapped).

    .venv/bin/python fuzz/fuzz_lifetimes.py -max_total_time=30 -rss_limit_mb=2048

Each input gets a fresh pair of engines (tests/engine/network.py) with soft/hard packet limits on
both ends and DPD on the initiator; its bytes are a script of operations.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports():
    from ikev2lib.config import ChildConfig, IkeConfig
    from ikev2lib.esp import EspError
    from ikev2lib.events import ChildSaCreated, ChildSaDeleted, ChildSaRekeyed, ProtocolErrorEvent
    from ikev2lib.exceptions import LocalProtocolError
    from ikev2lib.lifetimes import LIFETIME_CHECK_INTERVAL
    from ikev2lib.state import IkeState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.engine.network import RESPONDER_IP, Node, ike_config, pair  # noqa: E402

MAX_OPS = 40  # operations per input
MAX_BURST = 60  # ESP packets per traffic operation
MAX_STEP = 40.0  # simulated seconds per time jump
INNER = bytes.fromhex("4500001c000100004011f9c40a0100010a020001") + bytes(8)  # IPv4/UDP


def _with_limits(config: IkeConfig) -> IkeConfig:
    child: ChildConfig = replace(config.children[0], rekey_packets=30, life_packets=60)
    return replace(config, children=(child,))


ICFG = _with_limits(ike_config(local_id="alice@example.org", remote_id="gw.example.org", dpd_delay=30.0))
RCFG = _with_limits(
    ike_config(local_id="gw.example.org", remote_id="alice@example.org", local_ts=("10.2.0.0/16",),
               remote_ts=("10.1.0.0/16",))
)


def _live(node: Node) -> list[Any]:
    node.drain()
    deleted = {e.child_id for e in node.events if isinstance(e, ChildSaDeleted)}
    return [e for e in node.events if isinstance(e, (ChildSaCreated, ChildSaRekeyed)) and e.child_id not in deleted]


def _peer(node: Node, event: Any) -> Any:
    for other in _live(node):
        if other.spi_in == event.spi_out and other.spi_out == event.spi_in:
            return other
    return None


def _traffic(sender: Any, receiver: Any, count: int) -> None:
    for _ in range(count):
        try:
            receiver.inbound.decap(sender.outbound.encap(INNER))
        except EspError:  # past the hard limit the data plane refuses: that is the point
            return


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    net, a, b, _ = pair(initiator=ICFG, responder=RCFG)
    sid = a.endpoint.initiate(ICFG, (RESPONDER_IP, 500), net.now)
    net.run()
    for _ in range(fdp.ConsumeIntInRange(0, MAX_OPS)):
        op = fdp.ConsumeIntInRange(0, 5)
        live = _live(a)
        mine = live[-1] if live else None
        theirs = _peer(b, mine) if mine is not None else None
        if op in (0, 1) and mine is not None and theirs is not None:
            count = fdp.ConsumeIntInRange(0, MAX_BURST)
            if op == 0:
                _traffic(mine, theirs, count)
            else:
                _traffic(theirs, mine, count)
        elif op == 2:
            net.run(until=net.now + fdp.ConsumeFloatInRange(0.0, MAX_STEP))
        elif op == 3 and mine is not None:
            try:  # forged ESP to our inbound SA: refused, and no sign of the peer's life
                mine.inbound.decap(mine.spi_in + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80)))
            except EspError:
                pass
        elif op == 4 and mine is not None:
            try:
                a.endpoint.rekey_child_sa(sid, mine.child_id)
            except LocalProtocolError:
                pass
        elif op == 5 and theirs is not None:
            try:
                b.endpoint.rekey_child_sa(b.endpoint.ike_sa_ids()[0], theirs.child_id)
            except LocalProtocolError:
                pass
        net.run()
    net.run(until=net.now + 3 * LIFETIME_CHECK_INTERVAL)
    errors = [e for n in (a, b) for e in n.events if isinstance(e, ProtocolErrorEvent)]
    if a.endpoint.state_of(sid) != IkeState.ESTABLISHED or errors:
        raise RuntimeError(f"IKE SA lost or errors: {a.endpoint.state_of(sid)} {errors}")
    ours = {(e.spi_in, e.spi_out) for e in _live(a)}
    theirs_set = {(e.spi_out, e.spi_in) for e in _live(b)}
    if ours != theirs_set or len(ours) > 1:
        raise RuntimeError(f"ends disagree on their Child SAs: {ours} vs {theirs_set}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
