"""ESP decapsulation rate through AF_XDP against the socket path, in the same run.

Two network namespaces joined by veth (tests/interop/netns.py). The left one sends real ESP (AES-128-GCM,
inner IPv4 packets of 64 and of 1400 bytes, raw IP protocol 50) for SECONDS, as fast as a send-only XSK
resubmits pre-encrypted frames from its UMEM (a sendmmsg sender tops out near the receivers' rates on
this machine); the right one decapsulates with `SATable.decap_batch`, reading either

- `sockets`: a raw ESP socket with `recv_batch` (recvmmsg), the gateway's socket path, or
- `xdp`: ikev2lib's XDP program (native mode on veth, copy) redirecting the SPI to an XSK, the frames
  classified in the UMEM (`frame_parse_batch`) and decrypted from there, no copy.

Both receivers are the same kind of Python loop over batches of BATCH packets (no Python per packet),
on one core; the sender is on the other (both on 2 shared cores here: the ratio, not the absolute rate). The receiving SA has no replay window, so the sender can
repeat its pre-encrypted packets and every one costs a full authentication and decryption. Reported:
packets/s decrypted (status OK) and sent, per path and size, best of ROUNDS alternating rounds, and
the ratio xdp / sockets (target >= 2 at 64 bytes). Needs root. Every namespace is removed at the end.

Usage: .venv/bin/python benchmarks/xdp_compare.py [--seconds 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import socket
import sys
import time
from array import array
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from interop.netns import NamespacePair, PairAddresses, require_root  # noqa: E402

TARGET_XDP_VS_SOCKETS_64 = 2.0
SIZES = (64, 1400)  # inner IPv4 packet bytes
PATHS = ("sockets", "xdp")
DEFAULT_SECONDS = 3.0
DEFAULT_ROUNDS = 2
MAX_SECONDS = 30.0
BATCH = 64
TX_FRAMES = 2048  # pre-encrypted frames the sender cycles through
TX_BATCH = 256  # frames the sender submits per call
SPI = 0x1001
KEY = bytes(range(20))
SLOT = 2048  # receive slot per packet (socket path)
READY_WAIT = 10.0
SOCKET_BUFFER = 32 << 20
SO_RCVBUFFORCE = 33
RESULT_MARGIN = 20.0  # seconds beyond --seconds a side may take to report


def _inner(size: int, i: int) -> bytes:
    header = bytearray(28)
    header[0], header[9] = 0x45, 17
    header[2:4] = size.to_bytes(2, "big")
    header[4:6] = (i & 0xFFFF).to_bytes(2, "big")
    header[12:16], header[16:20] = bytes([10, 1, 0, 1]), bytes([10, 2, 0, 1])
    return bytes(header) + bytes(size - len(header))


def sender(dst: str, size: int, seconds: float, addrs_macs: tuple[str, str, bytes, bytes]) -> dict[str, float]:
    """The load: pre-encrypted ESP frames written once into a send-only XSK's UMEM and submitted again
    and again from its TX ring (a kernel socket sender tops out near the receivers' own rates here)."""
    from ikev2lib import _esp_fast
    from ikev2lib.esp import EspSA
    from ikev2lib.xdp import FRAME_SIZE, XskSocket

    ifname, src, src_mac, dst_mac = addrs_macs
    sa = EspSA(SPI, "aes128gcm16", KEY, "outbound")
    template = _esp_fast.FrameTemplate(family=4, src=socket.inet_aton(src), dst=socket.inet_aton(dst),
                                       dst_mac=dst_mac, src_mac=src_mac)
    with XskSocket.open(None, ifname, 0, frames=TX_FRAMES * 2) as xsk:
        frames = array("Q", bytes(8 * TX_FRAMES))
        assert xsk.tx_frames(frames, TX_FRAMES) == TX_FRAMES
        inner = b"".join(_inner(size, i) for i in range(TX_FRAMES))
        offs, lens = array("I", [i * size for i in range(TX_FRAMES)]), array("I", [size] * TX_FRAMES)
        f_lens, sts = array("I", bytes(4 * TX_FRAMES)), bytearray(TX_FRAMES)
        assert template.encap_batch(sa, inner, offs, lens, xsk.area, frames, FRAME_SIZE, f_lens, sts) == TX_FRAMES
        assert len(set(f_lens)) == 1  # one size: a frame that comes back is resent with the same length
        xsk.send(frames, f_lens, TX_FRAMES)
        batch, batch_lens = array("Q", bytes(8 * TX_BATCH)), array("I", [f_lens[0]] * TX_BATCH)
        sent, start = TX_FRAMES, time.monotonic()
        deadline = start + seconds
        while time.monotonic() < deadline:
            sent += xsk.send(batch, batch_lens, xsk.tx_frames(batch, TX_BATCH))
        return {"sent_pps": sent / (time.monotonic() - start)}


def _table() -> Any:
    from ikev2lib.esp import EspSA, SATable

    return SATable([EspSA(SPI, "aes128gcm16", KEY, "inbound", replay_window=0)])


def receive_sockets(ready: str, seconds: float) -> dict[str, float]:
    from ikev2lib.esp import recv_batch

    table = _table()
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
    raw.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SOCKET_BUFFER)
    raw.settimeout(0.1)
    buf = bytearray(BATCH * SLOT)
    offs, lens = array("I", bytes(4 * BATCH)), array("I", bytes(4 * BATCH))
    out = bytearray(BATCH * SLOT)
    o_offs, o_lens, nhs, sts = array("I", bytes(4 * BATCH)), array("I", bytes(4 * BATCH)), bytearray(BATCH), \
        bytearray(BATCH)
    Path(ready).touch()
    select.select([raw], [], [], READY_WAIT)  # the clock starts with the first packet
    ok, start, cpu0 = 0, time.monotonic(), _cpu_now()
    deadline = start + seconds
    while time.monotonic() < deadline:
        try:
            n = recv_batch(raw.fileno(), buf, SLOT, offs, lens, strip_ipv4=True)
        except OSError:  # the 0.1 s timeout: nothing came
            continue
        ok += table.decap_batch(buf, offs[:n], lens[:n], out, o_offs, o_lens, nhs, sts)
    return _rates(ok, start, cpu0)


def _rates(ok: int, start: float, cpu0: float) -> dict[str, float]:
    wall = time.monotonic() - start
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    return {"decap_pps": ok / wall, "receiver_cpu": (cpu.ru_utime + cpu.ru_stime - cpu0) / wall}


def _cpu_now() -> float:
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    return cpu.ru_utime + cpu.ru_stime


def receive_xdp(ready: str, seconds: float, ifname: str) -> dict[str, float]:
    from ikev2lib import _esp_fast
    from ikev2lib.xdp import XdpProgram, XskSocket

    table = _table()
    with XdpProgram.attach(ifname, mode="native") as program, XskSocket.open(program, ifname, 0) as xsk:
        program.add_spi(SPI)
        addrs, lens = array("Q", bytes(8 * BATCH)), array("I", bytes(4 * BATCH))
        offs, esp_lens = array("I", bytes(4 * BATCH)), array("I", bytes(4 * BATCH))
        verdicts, reasons = bytearray(BATCH), bytearray(BATCH)
        out = bytearray(BATCH * SLOT)
        o_offs, o_lens, nhs, sts = array("I", bytes(4 * BATCH)), array("I", bytes(4 * BATCH)), bytearray(BATCH), \
            bytearray(BATCH)
        Path(ready).touch()
        select.select([xsk], [], [], READY_WAIT)
        ok, start, cpu0 = 0, time.monotonic(), _cpu_now()
        deadline = start + seconds
        while time.monotonic() < deadline:
            n = xsk.recv(addrs, lens)
            if n == 0:
                select.select([xsk], [], [], 0.1)
                continue
            _esp_fast.frame_parse_batch(xsk.area, addrs, lens, n, offs, esp_lens, verdicts, reasons)
            ok += table.decap_batch(xsk.area, offs[:n], esp_lens[:n], out, o_offs, o_lens, nhs, sts)
            xsk.release(addrs, n)
        stats = xsk.stats()
    return {**_rates(ok, start, cpu0), "rx_dropped": stats["rx_dropped"], "rx_ring_full": stats["rx_ring_full"],
            "rx_fill_ring_empty": stats["rx_fill_ring_empty"]}


def _mac(pair: NamespacePair, left: bool) -> bytes:
    ns, ifname = (pair.left, pair.left_if) if left else (pair.right, pair.right_if)
    info = json.loads(ns.run(["ip", "-j", "link", "show", ifname]).stdout)[0]
    return bytes.fromhex(info["address"].replace(":", ""))


def measure(pair: NamespacePair, path: str, size: int, seconds: float, work: Path) -> dict[str, float]:
    macs = (pair.left_if, pair.left_addr, _mac(pair, True), _mac(pair, False))
    ready = work / f"ready-{path}-{size}-{time.monotonic_ns()}"
    if path == "xdp":
        task = pair.right.start(receive_xdp, str(ready), seconds, pair.right_if)
    else:
        task = pair.right.start(receive_sockets, str(ready), seconds)
    deadline = time.monotonic() + READY_WAIT
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    busy0 = _machine_busy()
    sent = pair.left.start(sender, pair.right_addr, size, seconds + 0.5, macs)
    result = task.result(seconds + RESULT_MARGIN)
    result.update(sent.result(seconds + RESULT_MARGIN))
    busy = _machine_busy() - busy0  # the whole machine: sender, both kernels' packet work, receiver
    result["machine_us_per_packet"] = busy * 1e6 / (result["decap_pps"] * seconds) if result["decap_pps"] else 0.0
    return result


def _machine_busy() -> float:
    """CPU seconds all cores spent not idle so far (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    args = parser.parse_args()
    if not 0 < args.seconds <= MAX_SECONDS or not 1 <= args.rounds <= 10:
        parser.error(f"--seconds in (0, {MAX_SECONDS:g}], --rounds in [1, 10]")
    require_root()
    work = Path(os.environ.get("TMPDIR", "/tmp"))
    best: dict[str, dict[int, dict[str, float]]] = {p: {} for p in PATHS}
    with NamespacePair(PairAddresses(left_inner=(), right_inner=())) as pair:
        for _ in range(args.rounds):
            for size in SIZES:
                for path in PATHS:
                    run = measure(pair, path, size, args.seconds, work)
                    if size not in best[path] or run["decap_pps"] > best[path][size]["decap_pps"]:
                        best[path][size] = run
    ratios = {size: best["xdp"][size]["decap_pps"] / best["sockets"][size]["decap_pps"]
              if best["sockets"][size]["decap_pps"] else None for size in SIZES}
    print(f"== ESP decapsulated per second (AES-128-GCM, inner IPv4), {args.seconds:g} s runs, "
          f"best of {args.rounds} alternating rounds; sender: an XSK resubmitting frames")
    print(f"  {'path':10} " + " ".join(f"{f'{size} B decap/s':>16} {'sent/s':>10} {'recv CPU':>8} {'us/pkt':>7}"
                                        for size in SIZES))
    for path in PATHS:
        cells = " ".join(f"{best[path][s]['decap_pps']:>16,.0f} {best[path][s]['sent_pps']:>10,.0f} "
                         f"{best[path][s]['receiver_cpu']:>8.2f} {best[path][s]['machine_us_per_packet']:>7.2f}"
                         for s in SIZES)
        print(f"  {path:10} {cells}")
    print("  (recv CPU: the receiving process, 1.0 = one core; us/pkt: busy CPU of the whole machine per packet)")
    print("== ratio xdp / sockets: " + ", ".join(f"{size} B {ratios[size]:.2f}" for size in SIZES if ratios[size]))
    met = ratios[64] is not None and ratios[64] >= TARGET_XDP_VS_SOCKETS_64
    print(f"== target: xdp / sockets at 64 B >= {TARGET_XDP_VS_SOCKETS_64}: {'met' if met else 'NOT met'}")
    print(json.dumps({"seconds": args.seconds, "rounds": args.rounds, "paths": best, "ratios": ratios,
                      "target_met": met}, separators=(",", ":")))


if __name__ == "__main__":
    main()
