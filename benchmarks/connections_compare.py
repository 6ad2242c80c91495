"""What many connections on one responder cost a handshake: in-process complete handshakes/s (PSK,
X25519, AES-GCM) against a responder holding one connection, and against responders holding N (500 by
default) where the peer's connection is the last one added:

- `by_identity`: every connection open to any address (%any), each with its own `remote_id`: chosen
  at IKE_AUTH by the peer's IDi (the hub of road warriors or of spokes behind NATs).
- `by_address`: every connection with its own exact `remote_addrs` and `remote_id`.
- `by_subnet`: every connection with its own remote subnet (10.x.y.0/24): the ranked scan.

The rounds interleave (one-connection, then each N-connection responder, repeated), best of each kept,
so machine load hits all alike. Also the bare lookup cost (`for_addresses` + `for_identity`) in
microseconds per handshake. Target: each N-connection rate is at least 0.95 of the one-connection rate.

    .venv/bin/python benchmarks/connections_compare.py [--connections 500] [--seconds 1]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from bench_handshake import INITIATOR, PSK, RESPONDER, handshake  # the same one-handshake loop
from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.endpoint import IkeEndpoint
from ikev2lib.wire import AuthMethod, IDi

PEER_ID = "alice@example.org"  # bench_handshake's initiator
TARGET_RATIO = 0.95  # handshakes/s with N connections / with one
MAX_ROUNDS = 200  # bound on measurement rounds whatever the clock does
LOOKUPS = 2_000  # bare lookups timed per layout
RESPONDER_CHILD = (ChildConfig(local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",)),)


def connection(i: int, *, remote_id: str, remote_addrs: tuple[str, ...] = ()) -> IkeConfig:
    return IkeConfig(name=f"conn{i}", local_id="gw.example.org", remote_id=remote_id, psk=PSK,
                     remote_addrs=remote_addrs, children=RESPONDER_CHILD)


def layouts(n: int) -> dict[str, list[IkeConfig]]:
    """The responder's connections per layout; the peer's own connection comes last."""
    ours = connection(n, remote_id=PEER_ID)
    return {
        "one": [ours],
        "by_identity": [connection(i, remote_id=f"spoke{i}@example.org") for i in range(n - 1)] + [ours],
        "by_address": [connection(i, remote_id=f"spoke{i}@example.org", remote_addrs=(f"198.18.{i // 250}.{i % 250 + 1}",))
                       for i in range(n - 1)] + [connection(n, remote_id=PEER_ID, remote_addrs=(INITIATOR[0],))],
        "by_subnet": [connection(i, remote_id=f"spoke{i}@example.org", remote_addrs=(f"10.{i // 250}.{i % 250}.0/24",))
                      for i in range(n - 1)] + [connection(n, remote_id=PEER_ID, remote_addrs=("192.0.2.0/24",))],
    }


def rates(configs: dict[str, list[IkeConfig]], seconds: float) -> dict[str, float]:
    pairs = {name: (IkeEndpoint(local_addr=INITIATOR), IkeEndpoint(cs, local_addr=RESPONDER))
             for name, cs in configs.items()}
    best = dict.fromkeys(pairs, 0.0)
    batch = 20
    deadline = time.monotonic() + seconds
    for _ in range(MAX_ROUNDS):
        for name, (a, b) in pairs.items():
            start = time.perf_counter()
            for _ in range(batch):
                handshake(a, b, 0.0)
            best[name] = max(best[name], batch / (time.perf_counter() - start))
        if time.monotonic() > deadline:
            break
    return best


def lookup_microseconds(configs: list[IkeConfig]) -> float:
    table = IkeEndpoint(configs, local_addr=RESPONDER).configs
    idi = IDi.from_value(PEER_ID)
    method = int(AuthMethod.SHARED_KEY_MIC)

    def once() -> None:
        next(iter(table.for_addresses(RESPONDER[0], INITIATOR[0])))
        next(iter(table.for_identity(RESPONDER[0], INITIATOR[0], idi, None, method)))

    return _per_call(once) * 1e6


def _per_call(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    for _ in range(LOOKUPS):
        fn()
    return (time.perf_counter() - start) / LOOKUPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    configs = layouts(max(args.connections, 2))
    measured = rates(configs, args.seconds)
    base = measured["one"]
    report: dict[str, object] = {"connections": args.connections, "handshakes_per_s": measured}
    targets_met: dict[str, bool] = {}
    print(f"{'layout':<12} {'handshakes/s':>13} {'vs one':>8} {'lookup us':>10}")
    for name, cs in configs.items():
        ratio = measured[name] / base
        lookup = lookup_microseconds(cs)
        print(f"{name:<12} {measured[name]:>13.0f} {ratio:>8.3f} {lookup:>10.1f}")
        report[f"{name}_lookup_us"] = round(lookup, 2)
        if name != "one":
            report[f"{name}_vs_one"] = round(ratio, 3)
            targets_met[f"{name}_vs_one"] = ratio >= TARGET_RATIO
    report["targets_met"] = targets_met
    print(json.dumps(report))


if __name__ == "__main__":
    main()
