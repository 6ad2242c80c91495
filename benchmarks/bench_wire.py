"""Wire codec benchmarks (pytest-benchmark). Run:

    .venv/bin/python -m pytest benchmarks/bench_wire.py --benchmark-enable

Messages: the brief's typical IKE_SA_INIT request (SA with 2 proposals / 28 transforms, KE x25519,
Ni 32 bytes, NAT-D x2, IKEV2_FRAGMENTATION_SUPPORTED, SIGNATURE_HASH_ALGORITHMS; ~450 bytes) and the
decrypted IKE_AUTH payload chain (IDi, N, IDr, AUTH, CP, SA (ESP), TSi, TSr, notifies). scapy's parse
and build of the same IKE_SA_INIT run in the same session as the reference for ratios (absolute times
are meaningless on a shared machine). Without --benchmark-enable each body runs once, as a test.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ikev2lib.wire import KE, SA, Message, Nonce, Notify, parse_payloads, serialize_payloads

# the benchmarked messages are the wire tests' samples (one definition); the repository root makes
# `tests` importable when this file runs as a script's module too
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.wire.samples import ike_auth_inner, ike_sa_init_request  # noqa: E402


def to_scapy(msg: Message) -> Any:
    """The same message built with scapy's constructors (not dissected, so scapy has no cached bytes)."""
    from scapy.contrib import ikev2 as sc

    pkt = sc.IKEv2(init_SPI=msg.spi_i, resp_SPI=msg.spi_r, exch_type=int(msg.exchange_type), flags="Initiator",
                   id=msg.message_id)
    for p in msg.payloads:
        if isinstance(p, SA):
            props = None
            for q in p.proposals:
                trans = None
                for t in q.transforms:
                    kw: dict[str, Any] = {"transform_type": int(t.transform_type), "transform_id": int(t.transform_id)}
                    if t.key_length is not None:
                        kw.update(length=12, key_length=t.key_length)
                    layer = sc.IKEv2_Transform(**kw)
                    trans = layer if trans is None else trans / layer
                prop = sc.IKEv2_Proposal(proposal=q.number, proto=int(q.protocol_id), SPI=q.spi,
                                         trans_nb=len(q.transforms), trans=trans)
                props = prop if props is None else props / prop
            pkt = pkt / sc.IKEv2_SA(prop=props)
        elif isinstance(p, KE):
            pkt = pkt / sc.IKEv2_KE(group=int(p.group), ke=p.data)
        elif isinstance(p, Nonce):
            pkt = pkt / sc.IKEv2_Nonce(nonce=p.data)
        elif isinstance(p, Notify):
            pkt = pkt / sc.IKEv2_Notify(type=int(p.notify_type), notify=p.data, proto=int(p.protocol_id), SPI=p.spi)
        else:
            raise TypeError(f"no scapy form for {p!r}")
    return pkt


SA_INIT = ike_sa_init_request()
SA_INIT_BYTES = SA_INIT.serialize()
INNER = ike_auth_inner()
INNER_FIRST, INNER_BYTES = serialize_payloads(INNER)


def test_sizes() -> None:
    assert 400 <= len(SA_INIT_BYTES) <= 500
    assert sum(len(p.transforms) for p in SA_INIT.payloads[0].proposals) == 28  # type: ignore[attr-defined]


def test_parse_ike_sa_init(benchmark: Any) -> None:
    msg = benchmark(Message.parse, SA_INIT_BYTES)
    assert msg == SA_INIT


def test_serialize_ike_sa_init(benchmark: Any) -> None:
    assert benchmark(SA_INIT.serialize) == SA_INIT_BYTES


def test_parse_ike_auth_inner_chain(benchmark: Any) -> None:
    assert benchmark(parse_payloads, INNER_FIRST, INNER_BYTES) == INNER


def test_serialize_ike_auth_inner_chain(benchmark: Any) -> None:
    assert benchmark(serialize_payloads, INNER) == (INNER_FIRST, INNER_BYTES)


def test_scapy_parse_ike_sa_init(benchmark: Any) -> None:
    from scapy.contrib import ikev2 as sc

    pkt = benchmark(sc.IKEv2, SA_INIT_BYTES)
    assert pkt.exch_type == 34


def test_scapy_build_ike_sa_init(benchmark: Any) -> None:
    pkt = to_scapy(SA_INIT)
    assert benchmark(bytes, pkt) == SA_INIT_BYTES
