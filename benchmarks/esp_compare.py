"""ESP data-plane throughput, compared in one run against its ceilings and alternatives.

Prints one table, then (LAST line) one JSON object with the ratios
  batch_encap_vs_openssl   C batch encap (AES-128-GCM, 1400-byte inner, batch 256) / `openssl speed` encrypt
  batch_decap_vs_openssl   C batch decap with the replay check, same workload / `openssl speed -decrypt`
  single_encap_vs_pyca     one EspSA.encap() call per packet / a plain `cryptography` AESGCM ESP loop
  two_threads_vs_one       two threads on two SAs / one thread (batch encap), wall clock
and whether each target (0.9, 0.85, 2.0, 1.7) is met. Ratios are measured in the same run; absolute
numbers are not comparable across runs. Every measurement is bounded in time (--seconds each).
Single-thread rates are per CPU-second of the measuring thread, as `openssl speed` reports them, so a
busy shared machine does not skew the ratios; the thread-scaling ratio is necessarily wall-clock (plus
a per-CPU-second diagnostic that shows whether the threads slow each other down).

Usage: .venv/bin/python benchmarks/esp_compare.py [--seconds 0.25] [--quick]
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
import threading
import time
from array import array
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ikev2lib.esp import backends

SPI = 0x10000
SIZES = (64, 512, 1400)
BATCHES = (1, 32, 256)
ALGS = {"AES-128-GCM": ("aes128gcm16", 16, "aes-128-gcm"), "ChaCha20-Poly1305": ("chacha20poly1305", 32,
        "chacha20-poly1305")}  # fmt: skip
REPEATS = 2  # alternations of each ratio's two sides
DECAP_POOL_BYTES = 24 << 20  # pre-encrypted packets for decap runs (distinct sequence numbers)
TARGETS = {"batch_encap_vs_openssl": 0.9, "batch_decap_vs_openssl": 0.85, "single_encap_vs_pyca": 2.0,
           "two_threads_vs_one": 1.7}  # fmt: skip

_c = backends()["c"]


def inner_packet(size: int) -> bytes:
    payload = bytes(size - 20)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 17, 0, b"\n\1\0\1", b"\n\2\0\1") + payload


def keymat(alg: str) -> bytes:
    return bytes(range(ALGS_KEYLEN[alg] + 4))


ALGS_KEYLEN = {v[0]: v[1] for v in ALGS.values()}


class Batch:
    """n packets in one buffer plus the output arrays the batch calls fill."""

    def __init__(self, packets: list[bytes], out_size: int) -> None:
        n = len(packets)
        self.n = n
        self.buf = bytearray(b"".join(packets))
        self.offs, self.lens, pos = array("I"), array("I"), 0
        for p in packets:
            self.offs.append(pos)
            self.lens.append(len(p))
            pos += len(p)
        self.out = bytearray(out_size)
        self.o_offs, self.o_lens = array("I", bytes(4 * n)), array("I", bytes(4 * n))
        self.nhs, self.sts = bytearray(n), bytearray(n)

    def frames(self) -> list[bytes]:
        return [bytes(self.out[o : o + n]) for o, n in zip(self.o_offs, self.o_lens)]


def timed(fn: Callable[[], int], seconds: float) -> float:
    """Packets per CPU-second of fn (which returns packets per call), run for about `seconds` of wall time.

    CPU time of this thread, like `openssl speed` (CPU user time unless -elapsed): other processes on a
    shared machine then do not skew the ratios against it."""
    fn()  # warm-up
    count, cpu0, start = 0, time.thread_time(), time.perf_counter()
    deadline = start + seconds
    while True:
        count += fn()
        if time.perf_counter() >= deadline:
            return count / max(time.thread_time() - cpu0, 1e-9)


def c_encap_batch(alg: str, size: int, batch: int, seconds: float) -> float:
    sa = _c.EspSA(SPI, alg, keymat(alg), "outbound", "tunnel")
    b = Batch([inner_packet(size)] * batch, batch * (size + 64))

    def run() -> int:
        return int(sa.encap_batch(b.buf, b.offs, b.lens, b.out, b.o_offs, b.o_lens, b.sts))

    return timed(run, seconds)


def c_decap_batch(alg: str, size: int, batch: int, seconds: float) -> float:
    """Decap with the replay check on: every round uses a fresh inbound SA over a pool of in-order packets."""
    key = keymat(alg)
    out_sa = _c.EspSA(SPI, alg, key, "outbound", "tunnel")
    rounds = max(1, min(256, DECAP_POOL_BYTES // ((size + 64) * batch)))
    enc = Batch([inner_packet(size)] * batch, batch * (size + 64))
    pool: list[Batch] = []
    for _ in range(rounds):
        out_sa.encap_batch(enc.buf, enc.offs, enc.lens, enc.out, enc.o_offs, enc.o_lens, enc.sts)
        pool.append(Batch(enc.frames(), batch * (size + 64)))
    state: dict[str, Any] = {"i": rounds}

    def run() -> int:
        if state["i"] == rounds:
            state["table"] = _c.SATable([_c.EspSA(SPI, alg, key, "inbound", "tunnel")])
            state["i"] = 0
        b = pool[state["i"]]
        state["i"] += 1
        ok = state["table"].decap_batch(b.buf, b.offs, b.lens, b.out, b.o_offs, b.o_lens, b.nhs, b.sts)
        if ok != b.n:
            raise RuntimeError("decap benchmark: packets failed")
        return int(ok)

    return timed(run, seconds)


def c_single_encap(size: int, seconds: float) -> float:
    sa = _c.EspSA(SPI, "aes128gcm16", keymat("aes128gcm16"), "outbound", "tunnel")
    inner = inner_packet(size)
    encap = sa.encap

    def run() -> int:
        for _ in range(100):
            encap(inner)
        return 100

    return timed(run, seconds)


def pyca_loop_encap(size: int, seconds: float) -> float:
    """The plain way: cryptography's AESGCM per packet, ESP framing in Python."""
    key = keymat("aes128gcm16")
    aead, salt, spi = AESGCM(key[:16]), key[16:], struct.pack("!I", SPI)
    inner = inner_packet(size)
    state = {"seq": 0}

    def run() -> int:
        for _ in range(100):
            state["seq"] += 1
            seq = state["seq"]
            iv = seq.to_bytes(8, "big")
            pad = -(len(inner) + 2) % 4
            pt = inner + bytes(range(1, pad + 1)) + bytes((pad, 4))
            hdr = spi + struct.pack("!I", seq)
            _ = hdr + iv + aead.encrypt(salt + iv, pt, hdr)
        return 100

    return timed(run, seconds)


def scapy_encap(size: int, seconds: float) -> float:
    from scapy.layers.inet import IP
    from scapy.layers.ipsec import ESP, SecurityAssociation

    sa = SecurityAssociation(ESP, spi=SPI, crypt_algo="AES-GCM", crypt_key=keymat("aes128gcm16"),
                             tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))  # fmt: skip
    pkt = IP(inner_packet(size))

    def run() -> int:
        for _ in range(10):
            sa.encrypt(pkt)
        return 10

    return timed(run, seconds)


def threads_encap(n_threads: int, seconds: float) -> tuple[float, float]:
    """n threads, each running batch encap (1400 B, batch 256) on its own SA. Returns (total packets per
    wall-clock second, packets per second of CPU time the threads actually got): the second shows whether
    the code scales when the shared machine lends fewer cores than threads."""
    counts = [0] * n_threads
    cpu = [0.0] * n_threads
    start_evt = threading.Event()
    stop_at: list[float] = [0.0]

    def worker(i: int) -> None:
        sa = _c.EspSA(SPI + i, "aes128gcm16", keymat("aes128gcm16"), "outbound", "tunnel")
        b = Batch([inner_packet(1400)] * 256, 256 * 1464)
        start_evt.wait()
        t0 = time.thread_time()
        while time.perf_counter() < stop_at[0]:
            counts[i] += sa.encap_batch(b.buf, b.offs, b.lens, b.out, b.o_offs, b.o_lens, b.sts)
        cpu[i] = time.thread_time() - t0

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    start = time.perf_counter()
    stop_at[0] = start + seconds
    start_evt.set()
    for t in threads:
        t.join(timeout=seconds + 30)
    return sum(counts) / (time.perf_counter() - start), sum(counts) / max(sum(cpu), 1e-9)


def openssl_speed(evp: str, nbytes: int, seconds: int, decrypt: bool, aead: bool = True) -> float:
    """Packets/s of `openssl speed -evp ... -aead` at nbytes per operation (the single-core ceiling).
    Note: OpenSSL 3.0's -aead loop sets the key again for every operation; without -aead it only streams
    EVP_EncryptUpdate over the buffer (no IV, AAD or tag per packet): a bulk upper bound."""
    cmd = ["openssl", "speed", "-seconds", str(seconds), "-bytes", str(nbytes), "-evp", evp]
    if aead:
        cmd.append("-aead")
    if decrypt:
        cmd.append("-decrypt")
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 4 + 30, check=True).stdout
    m = re.search(r"^\S+\s+([\d.]+)k\s*$", text.strip().splitlines()[-1])
    if m is None:
        raise RuntimeError(f"cannot parse openssl speed output: {text!r}")
    return float(m.group(1)) * 1000 / nbytes


def esp_plaintext_len(inner: int) -> int:
    return inner + 2 + (-(inner + 2) % 4)  # what ESP actually encrypts for an inner packet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.25, help="time per measurement (bounded)")
    ap.add_argument("--quick", action="store_true", help="only the measurements behind the JSON ratios")
    args = ap.parse_args()
    sec = args.seconds
    ossl_sec = max(1, round(sec * 4))
    rows: list[tuple[str, str, int, str, float]] = []

    def row(what: str, alg: str, size: int, batch: str, pps: float) -> float:
        rows.append((what, alg, size, batch, pps))
        return pps

    # The ratios' two sides are measured alternately, REPEATS times, keeping the best of each side: the
    # machine is shared, and a burst of someone else's load should not decide a ratio.
    plain = esp_plaintext_len(1400)
    best: dict[str, float] = {}
    for _ in range(REPEATS):
        for key, fn in (
            ("ceil_enc", lambda: openssl_speed("aes-128-gcm", plain, ossl_sec, False)),
            ("enc256", lambda: c_encap_batch("aes128gcm16", 1400, 256, sec)),
            ("ceil_dec", lambda: openssl_speed("aes-128-gcm", plain, ossl_sec, True)),
            ("dec256", lambda: c_decap_batch("aes128gcm16", 1400, 256, sec)),
            ("single", lambda: c_single_encap(1400, sec)),
            ("pyca", lambda: pyca_loop_encap(1400, sec)),
        ):
            best[key] = max(best.get(key, 0.0), fn())
    ceil_enc = row("openssl speed -aead (ceiling)", "AES-128-GCM", 1400, "-", best["ceil_enc"])
    ceil_dec = row("openssl speed -aead -decrypt", "AES-128-GCM", 1400, "-", best["ceil_dec"])
    bulk = row("openssl speed, bulk (no -aead)", "AES-128-GCM", 1400, "-",
               openssl_speed("aes-128-gcm", plain, ossl_sec, False, aead=False))  # fmt: skip
    enc256 = row("C encap_batch", "AES-128-GCM", 1400, "256", best["enc256"])
    dec256 = row("C decap_batch +replay", "AES-128-GCM", 1400, "256", best["dec256"])
    single = row("C encap() per packet", "AES-128-GCM", 1400, "1", best["single"])
    pyca = row("pyca AESGCM ESP loop", "AES-128-GCM", 1400, "1", best["pyca"])
    # Alternate 1 and 2 threads (the machine is shared and noisy) and keep the best of each.
    thread_sec = max(0.5, sec * 4)
    runs = [(n, *threads_encap(n, thread_sec)) for _ in range(3) for n in (1, 2)]
    one = max(pps for n, pps, _ in runs if n == 1)
    two = max(pps for n, pps, _ in runs if n == 2)
    one_cpu = max(per_cpu for n, _, per_cpu in runs if n == 1)
    two_cpu = max(per_cpu for n, _, per_cpu in runs if n == 2)
    row("C encap_batch, 1 thread", "AES-128-GCM", 1400, "256", one)
    row("C encap_batch, 2 threads/2 SAs", "AES-128-GCM", 1400, "256", two)
    if not args.quick:
        row("scapy SecurityAssociation", "AES-128-GCM", 1400, "1", scapy_encap(1400, sec))
        row("openssl speed -aead (ceiling)", "ChaCha20-Poly1305", 1400, "-",
            openssl_speed("chacha20-poly1305", esp_plaintext_len(1400), ossl_sec, False))  # fmt: skip
        for name, (alg, _, _) in ALGS.items():
            for size in SIZES:
                for batch in BATCHES:
                    if (alg, size, batch) == ("aes128gcm16", 1400, 256):
                        continue  # measured above
                    row("C encap_batch", name, size, str(batch), c_encap_batch(alg, size, batch, sec))
                    row("C decap_batch +replay", name, size, str(batch), c_decap_batch(alg, size, batch, sec))

    print(f"{'implementation':34} {'algorithm':18} {'inner B':>7} {'batch':>5} {'packets/s':>12} {'Gbit/s':>7}")
    for what, alg, size, batch, pps in rows:
        print(f"{what:34} {alg:18} {size:7} {batch:>5} {pps:12,.0f} {pps * size * 8 / 1e9:7.2f}")
    ratios = {
        "batch_encap_vs_openssl": enc256 / ceil_enc,
        "batch_decap_vs_openssl": dec256 / ceil_dec,
        "single_encap_vs_pyca": single / pyca,
        "two_threads_vs_one": two / one,
    }
    # Per CPU-second of the threads: ~1.0 means two threads lose nothing to each other (no shared lock);
    # then a wall-clock ratio below 2 only reflects the cores the shared machine actually lent.
    extra = {"batch_encap_vs_openssl_bulk": round(enc256 / bulk, 3),
             "two_threads_per_cpu_second_vs_one": round(two_cpu / one_cpu, 3)}  # fmt: skip
    result: dict[str, Any] = {k: round(v, 3) for k, v in ratios.items()}
    result.update(extra)
    result["targets_met"] = {k: ratios[k] >= t for k, t in TARGETS.items()}
    result["packets_per_second"] = {"openssl_encrypt": round(ceil_enc), "openssl_bulk": round(bulk), "openssl_decrypt": round(ceil_dec),
                                    "batch_encap": round(enc256), "batch_decap": round(dec256),
                                    "single_encap": round(single), "pyca_loop": round(pyca),
                                    "one_thread": round(one), "two_threads": round(two)}  # fmt: skip
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
