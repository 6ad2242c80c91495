"""libFuzzer (atheris) harness for the engine's receive path: any datagram, into an endpoint that
holds a live IKE SA, must never raise out of `receive_datagram`, and the IKE SA must keep working.

    .venv/bin/python fuzz/fuzz_engine.py -max_total_time=30 -rss_limit_mb=2048

Inputs are mutated around real datagrams of a handshake (seeded into the corpus at start), and a
byte of each input picks a shape: as-is, behind the non-ESP marker, or grafted onto the live SPIs
so that it reaches the decryption and exchange code rather than the SPI lookup.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from ikev2lib.endpoint import IkeEndpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.engine.network import INITIATOR_IP, RESPONDER_IP, pair  # noqa: E402

NET, A, B, CFG = pair()
SA_ID = A.endpoint.initiate(CFG, (RESPONDER_IP, 500), NET.now)
NET.run()
SPIS = NET.tap[2][0][:16]  # SPIi | SPIr of the live IKE SA
CHECK_EVERY = 500  # inputs between checks that the IKE SA still answers a DPD


def _target(endpoint: IkeEndpoint, data: bytes) -> None:
    endpoint.receive_datagram(data, (INITIATOR_IP, 500), NET.now)
    endpoint.datagrams_to_send(NET.now)


_count = 0


def test_one_input(data: bytes) -> None:
    global _count
    if not data:
        return
    shape, body = data[0] % 3, data[1:]
    if shape == 1:
        body = b"\x00\x00\x00\x00" + body
    elif shape == 2 and len(body) >= 16:
        body = SPIS + body[16:]
    _target(B.endpoint, body)
    _target(A.endpoint, body)
    _count += 1
    if _count % CHECK_EVERY == 0:
        A.endpoint.send_dpd(SA_ID)
        before = len(NET.tap)
        NET.run()
        if len(NET.tap) < before + 2:
            raise RuntimeError("the live IKE SA stopped answering")


if __name__ == "__main__":
    import tempfile

    # seed corpus: the real datagrams of the handshake, in the as-is and grafted shapes
    seeds = Path(tempfile.mkdtemp(prefix="ikev2lib-fuzz-engine-"))
    for i, (datagram, _, _) in enumerate(NET.tap):
        (seeds / f"as-is-{i}").write_bytes(b"\x00" + datagram)
        (seeds / f"grafted-{i}").write_bytes(b"\x02" + datagram)
    atheris.Setup(sys.argv + [str(seeds)], test_one_input)
    atheris.Fuzz()
