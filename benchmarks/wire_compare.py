"""Messages/s for ikev2lib and scapy on the same IKE_SA_INIT request, measured in the same run.

    .venv/bin/python benchmarks/wire_compare.py [--seconds 1.0]

Each measurement runs repeated batches for about `--seconds` and keeps the best batch (least disturbed
by other load on a shared machine). The ratio is what matters; absolute numbers vary between runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).parent))

from bench_wire import INNER, INNER_BYTES, INNER_FIRST, SA_INIT, SA_INIT_BYTES, to_scapy  # noqa: E402

from ikev2lib.wire import Message, parse_payloads, serialize_payloads  # noqa: E402

MAX_BATCHES = 200  # bounds the loop whatever the clock does


def rate(fn: Callable[[], Any], seconds: float) -> float:
    """Best calls/s over batches of ~10 ms, for about `seconds` of wall time."""
    batch = 1
    while True:
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        if time.perf_counter() - start > 0.01 or batch >= 1 << 20:
            break
        batch *= 2
    best = 0.0
    deadline = time.perf_counter() + seconds
    for _ in range(MAX_BATCHES):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        best = max(best, batch / (time.perf_counter() - start))
        if time.perf_counter() > deadline:
            break
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    from scapy.contrib import ikev2 as sc

    scapy_pkt = to_scapy(SA_INIT)
    assert bytes(scapy_pkt) == SA_INIT_BYTES == SA_INIT.serialize()
    rows = [
        ("IKE_SA_INIT parse", rate(lambda: Message.parse(SA_INIT_BYTES), args.seconds),
         rate(lambda: sc.IKEv2(SA_INIT_BYTES), args.seconds)),
        ("IKE_SA_INIT serialize", rate(SA_INIT.serialize, args.seconds),
         rate(lambda: bytes(scapy_pkt), args.seconds)),
    ]
    print(f"IKE_SA_INIT request: {len(SA_INIT_BYTES)} bytes, 2 proposals / 28 transforms")
    print(f"{'operation':<26}{'ikev2lib msg/s':>16}{'scapy msg/s':>14}{'ratio':>9}")
    for label, ours, theirs in rows:
        print(f"{label:<26}{ours:>16,.0f}{theirs:>14,.0f}{ours / theirs:>8.1f}x")
    from ikev2lib.wire import sa as sa_module

    def parse_cold() -> None:
        sa_module._TRANSFORM_CACHE.clear()  # every transform decoded from scratch (worst case)
        Message.parse(SA_INIT_BYTES)

    print(f"{'  parse, transform cache cold':<26}{rate(parse_cold, args.seconds):>16,.0f}")
    inner_parse = rate(lambda: parse_payloads(INNER_FIRST, INNER_BYTES), args.seconds)
    inner_ser = rate(lambda: serialize_payloads(INNER), args.seconds)
    print(f"IKE_AUTH inner chain ({len(INNER_BYTES)} bytes): parse {inner_parse:,.0f}/s, serialize {inner_ser:,.0f}/s")


if __name__ == "__main__":
    main()
