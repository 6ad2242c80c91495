"""pytest-benchmark cases for the ESP data plane (run: .venv/bin/python -m pytest benchmarks/bench_esp.py
--benchmark-enable). Compare within one run (e.g. --benchmark-group-by=group); the cross-implementation
table with ratios is benchmarks/esp_compare.py."""

from __future__ import annotations

from typing import Any

import pytest

from esp_compare import SPI, Batch, inner_packet, keymat  # benchmarks/ is on sys.path under pytest
from ikev2lib.esp import backends

BACKENDS = backends()


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("alg", ["aes128gcm16", "chacha20poly1305"])
@pytest.mark.parametrize("size", [64, 1400])
def test_encap_single(benchmark: Any, backend: str, alg: str, size: int) -> None:
    benchmark.group = f"encap single {alg} {size}B"
    sa = BACKENDS[backend].EspSA(SPI, alg, keymat(alg), "outbound", "tunnel")
    inner = inner_packet(size)
    out = benchmark(sa.encap, inner)
    assert len(out) > size


@pytest.mark.parametrize("alg", ["aes128gcm16", "chacha20poly1305"])
@pytest.mark.parametrize("size", [64, 512, 1400])
def test_encap_batch_256(benchmark: Any, alg: str, size: int) -> None:
    benchmark.group = f"encap batch 256 {size}B"
    sa = BACKENDS["c"].EspSA(SPI, alg, keymat(alg), "outbound", "tunnel")
    b = Batch([inner_packet(size)] * 256, 256 * (size + 64))
    ok = benchmark(sa.encap_batch, b.buf, b.offs, b.lens, b.out, b.o_offs, b.o_lens, b.sts)
    assert ok == 256


@pytest.mark.parametrize("alg", ["aes128gcm16", "chacha20poly1305"])
def test_decap_batch_256_without_replay(benchmark: Any, alg: str) -> None:
    # Anti-replay off so the same batch can be decapsulated again and again (esp_compare.py measures
    # decap with the replay check on, over a pool of distinct packets).
    c = BACKENDS["c"]
    out_sa = c.EspSA(SPI, alg, keymat(alg), "outbound", "tunnel")
    enc = Batch([inner_packet(1400)] * 256, 256 * 1464)
    out_sa.encap_batch(enc.buf, enc.offs, enc.lens, enc.out, enc.o_offs, enc.o_lens, enc.sts)
    b = Batch(enc.frames(), 256 * 1464)
    table = c.SATable([c.EspSA(SPI, alg, keymat(alg), "inbound", "tunnel", replay_window=0)])
    ok = benchmark(table.decap_batch, b.buf, b.offs, b.lens, b.out, b.o_offs, b.o_lens, b.nhs, b.sts)
    assert ok == 256
