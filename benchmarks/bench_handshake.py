"""In-process complete IKEv2 handshakes per second: IKE_SA_INIT + IKE_AUTH + first Child SA
(PSK, X25519, AES-GCM-128, ESP SAs built in the C data plane), both engines in one process, no
sockets. Target (a same-run ratio, as everywhere in benchmarks/): the rate is at least 0.5 of the
bare cryptography of a handshake measured alongside it (ike_compare.py's crypto_share).

    .venv/bin/python benchmarks/bench_handshake.py          # prints the rate (bounded: 2 s)
    .venv/bin/python -m pytest benchmarks/bench_handshake.py --benchmark-enable
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.endpoint import IkeEndpoint
from ikev2lib.events import ChildSaCreated

INITIATOR = ("192.0.2.1", 500)
RESPONDER = ("192.0.2.2", 500)
PSK = b"benchmark pre-shared key"
MAX_SECONDS = 2.0  # bound of the standalone measurement
MAX_HANDSHAKES = 20_000

INITIATOR_CFG = IkeConfig(
    local_id="alice@example.org",
    remote_id="gw.example.org",
    psk=PSK,
    children=(ChildConfig(local_ts=("10.1.0.0/16",), remote_ts=("10.2.0.0/16",)),),
)
RESPONDER_CFG = IkeConfig(
    local_id="gw.example.org",
    remote_id="alice@example.org",
    psk=PSK,
    children=(ChildConfig(local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",)),),
)


def _pump(a: IkeEndpoint, b: IkeEndpoint, now: float) -> None:
    for _ in range(10):  # IKE_SA_INIT + IKE_AUTH need two round trips
        moved = False
        for src, dst, addr in ((a, b, INITIATOR), (b, a, RESPONDER)):
            for data, _ in src.datagrams_to_send(now):
                moved = True
                dst.receive_datagram(data, addr, now)
        if not moved:
            return


def handshake(initiator: IkeEndpoint, responder: IkeEndpoint, now: float) -> Any:
    """One complete handshake; returns the initiator's ChildSaCreated event."""
    sa_id = initiator.initiate(INITIATOR_CFG, RESPONDER, now)
    _pump(initiator, responder, now)
    created = None
    while (event := initiator.next_event()) is not None:
        if isinstance(event, ChildSaCreated):
            created = event
    while responder.next_event() is not None:
        pass
    if created is None:
        raise RuntimeError("handshake did not complete")
    # forget both SAs so the endpoints do not grow during the benchmark (no wire traffic needed)
    initiator.abandon_ike_sa(sa_id, now)
    for other in responder.ike_sa_ids():
        responder.abandon_ike_sa(other, now)
    while initiator.next_event() is not None or responder.next_event() is not None:
        pass
    return created


def _endpoints() -> tuple[IkeEndpoint, IkeEndpoint]:
    return IkeEndpoint(local_addr=INITIATOR), IkeEndpoint(RESPONDER_CFG, local_addr=RESPONDER)


def test_bench_complete_handshake(benchmark: Any) -> None:
    initiator, responder = _endpoints()
    result = benchmark(handshake, initiator, responder, 0.0)
    assert isinstance(result, ChildSaCreated)


def measure(seconds: float = MAX_SECONDS) -> tuple[float, float]:
    """(handshakes per wall-clock second, handshakes per CPU second of this process)."""
    initiator, responder = _endpoints()
    for _ in range(50):  # warm-up
        handshake(initiator, responder, 0.0)
    count = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while count < MAX_HANDSHAKES and time.perf_counter() - start < seconds:
        handshake(initiator, responder, 0.0)
        count += 1
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu_start)


def crypto_floor(seconds: float = MAX_SECONDS / 2) -> float:
    """The same handshake's cryptography alone (both sides), per CPU second: the baseline the
    engine's rate is compared with in the same run (the machine is shared and noisy)."""
    from ikev2lib.crypto import (
        KeyExchange,
        derive_child_keymat,
        derive_ike_keys,
        psk_auth_data,
        signed_octets,
        sk_cipher,
    )

    nonce = bytes(32)
    count = 0
    cpu_start = time.process_time()
    while count < MAX_HANDSHAKES and time.process_time() - cpu_start < seconds:
        a, b = KeyExchange.generate(31), KeyExchange.generate(31)
        shared = a.shared_secret(b.public_bytes())
        b.shared_secret(a.public_bytes())
        for _ in range(2):
            _, keys = derive_ike_keys(5, 20, 128, None, shared, nonce, nonce, b"\x01" * 8, b"\x02" * 8)
            out = sk_cipher(20, 128, None, keys.sk_ei, b"")
            into = sk_cipher(20, 128, None, keys.sk_ei, b"")
            for _ in range(2):
                into.decrypt(bytes(32), out.encrypt(bytes(32), bytes(200)))
            for _ in range(2):
                psk_auth_data(5, PSK, signed_octets(5, keys.sk_pi, bytes(300), nonce, bytes(20)))
            derive_child_keymat(5, keys.sk_d, nonce, nonce, 40)
        count += 1
    return count / (time.process_time() - cpu_start)


if __name__ == "__main__":
    wall, cpu = measure()
    floor = crypto_floor()
    print(f"complete IKEv2 handshakes (SA_INIT + AUTH + Child SA, PSK, X25519, AES-GCM), in-process:")
    print(f"  {wall:,.0f}/s wall clock, {cpu:,.0f}/s per CPU second")
    print(f"  cryptography alone: {floor:,.0f}/s per CPU second; engine/crypto ratio {cpu / floor:.2f} "
          "(target >= 0.5: ike_compare.py's crypto_share)")
    sys.exit(0)
