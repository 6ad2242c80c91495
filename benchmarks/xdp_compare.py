"""ESP decapsulation rate through AF_XDP against the socket path, in the same run, both in C.

Two network namespaces joined by veth (tests/interop/netns.py). The load and both receivers are one small
C program, benchmarks/xdp_rx_bench.c, compiled here at run time with the system `cc` against the
project's own C (esp_core.c, esp_frame.c, xsk/esp_xsk.c), so no Python runs per batch on either side:

- the generator (left namespace, pinned to CPU 0): a send-only XSK in copy mode; every frame is encrypted
  when it is sent (AES-128-GCM, tunnel mode, inner IPv4 of 64 or 1400 bytes, raw IP protocol 50), so the
  sequence numbers only go up and the receiver keeps its anti-replay window on;
- the receiver (right namespace, pinned to CPU 1), one of
  - `sockets`: a raw IPv4 ESP socket, recvmmsg batches of BATCH, `esp_decap_batch`;
  - `xdp-skb`: ikev2lib's XDP program in generic (SKB) mode, the SPI redirected to one XSK (copy mode),
    `esp_frame_parse_batch` and `esp_decap_batch` reading the frames in the UMEM, batches of BATCH;
  - `xdp-native`: the same with the program in native (driver) mode. On veth, native XDP runs in the
    veth NAPI of the *sending* CPU (CPU 0, the generator's): the XDP program and the copy into the UMEM
    are not on the receive core, and they slow the generator down instead.

RPS on the receiving veth's rx-0 is set to CPU 1, so the socket path's kernel receive work (backlog, IP,
raw socket delivery) and generic XDP run on the receive core too: in `sockets` and `xdp-skb` CPU 1 carries
all the receive-side work (checked: the share of the backlog packets CPU 1 processed is printed).
Both receivers decrypt into a separate buffer with the same call, block only when idle, and start their
clock at the first packet. In copy mode the generator gets a frame back only once the receiving kernel
has freed its skb, so a slow receive side also slows the generator ("gen starved" is the share of its
time it found no free frame), and that completion work (xsk_destruct_skb) lands on the core that frees
the skb: the receive core for `sockets` and `xdp-skb` alike, the sender's for `xdp-native`.

Reported per path and size, best of ROUNDS rounds that alternate the paths: packets decrypted per second
(status OK) and sent per second; the receive core's busy fraction (its /proc/stat line, user + nice +
system + irq + softirq, over the receiver's run; its steal, the hypervisor's share, apart) and packets
decrypted per busy second of it; the whole machine's busy CPU per packet; the receiver's own user-space
CPU; the drop counters (receiving socket or XSK, backlog, veth). /proc/stat and softnet_stat are
machine-wide, so other work on a shared machine shows up in the busy figures. Then xdp / sockets end to
end and per receive-core second, and the target: the better XDP mode (by end-to-end decap/s) >= 2x the
socket path at 64 B. Needs root, cc, pkg-config and the libxdp, libbpf and libcrypto headers. Every
namespace is removed at the end.

Usage: .venv/bin/python benchmarks/xdp_compare.py [--seconds 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from interop.netns import NamespacePair, PairAddresses, require_root  # noqa: E402

TARGET_XDP_VS_SOCKETS_64 = 2.0
SIZES = (64, 1400)  # inner IPv4 packet bytes
PATHS = ("sockets", "xdp-skb", "xdp-native")
XDP_PATHS = ("xdp-skb", "xdp-native")
BACKLOG_PATHS = ("sockets", "xdp-skb")  # their packets go through the receiving CPU's backlog (RPS)
DEFAULT_SECONDS = 3.0
DEFAULT_ROUNDS = 2
MAX_SECONDS = 30.0  # xdp_rx_bench.c MAX_SECONDS
MAX_ROUNDS = 10
GEN_CPU, RX_CPU = 0, 1
GEN_TAIL = 0.5  # the generator runs this much longer than the receiver, whose clock starts at the first packet
FIRST_PACKET_WAIT = 10.0  # xdp_rx_bench.c FIRST_PACKET_WAIT
READY_WAIT = 10.0  # seconds for a receiver to set up (attach the program, open the XSK)
RESULT_MARGIN = 20.0  # seconds beyond its run a side may take to report
BUILD_TIMEOUT = 120.0
SPI = 0x1001
KEYMAT = bytes(range(20))  # 16-byte AES-128 key, then the 4-byte salt
BENCH_SOURCE = ROOT / "benchmarks" / "xdp_rx_bench.c"
C_SOURCES = ("_esp_fast/esp_core.c", "_esp_fast/esp_frame.c", "_esp_fast/xsk/esp_xsk.c")
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-unused-function")  # as setup.py
PKG_CONFIG_LIBS = ("libxdp", "libbpf", "libcrypto")
PACKAGES_HINT = "Debian/Ubuntu: apt-get install build-essential pkg-config libxdp-dev libbpf-dev libssl-dev"
SOFTNET_PROCESSED, SOFTNET_DROPPED = 0, 1  # /proc/net/softnet_stat columns (hex, one line per CPU)


class BenchUnavailable(RuntimeError):
    """This machine cannot build or run the benchmark: the message says what is missing."""


def build_bench(work: Path) -> Path:
    """Compile xdp_rx_bench.c with the project's C into `work`; BenchUnavailable names what is missing."""
    for tool in ("cc", "pkg-config"):
        if shutil.which(tool) is None:
            raise BenchUnavailable(f"`{tool}` is missing ({PACKAGES_HINT})")
    for lib in PKG_CONFIG_LIBS:
        if subprocess.run(["pkg-config", "--exists", lib], capture_output=True).returncode != 0:
            raise BenchUnavailable(f"pkg-config finds no {lib} (its development files: {PACKAGES_HINT})")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", *PKG_CONFIG_LIBS], capture_output=True, text=True,
                           check=True).stdout.split()
    binary = work / "xdp_rx_bench"
    cmd = ["cc", *CFLAGS, "-I_esp_fast", "-I_esp_fast/xsk", str(BENCH_SOURCE), *C_SOURCES, *flags, "-lpthread",
           "-o", str(binary)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if proc.returncode != 0:
        raise BenchUnavailable(f"compiling {BENCH_SOURCE.name} failed ({PACKAGES_HINT}):\n{proc.stderr[-3000:]}")
    return binary


def xdp_program() -> Path:
    try:
        from ikev2lib import xdp

        path = Path(str(xdp.program_path()))
    except ImportError:
        path = ROOT / "ikev2lib" / "xdp" / "esp_xdp.bpf.o"
    if not path.exists():
        raise BenchUnavailable(f"the XDP program {path} is missing (build ikev2lib with clang installed)")
    return path


def _pin(cpu: int) -> Callable[[], None]:
    return lambda: os.sched_setaffinity(0, {cpu})


def _mac(pair: NamespacePair, left: bool) -> str:
    ns, ifname = (pair.left, pair.left_if) if left else (pair.right, pair.right_if)
    address: str = json.loads(ns.run(["ip", "-j", "link", "show", ifname]).stdout)[0]["address"]
    return address


def set_rps(pair: NamespacePair) -> str:
    """Steer the right veth's rx-0 to RX_CPU and read it back (sysfs of the right namespace)."""
    mask = f"{1 << RX_CPU:x}"
    knob = f"/sys/class/net/{pair.right_if}/queues/rx-0/rps_cpus"
    got = str(pair.right.run(["sh", "-c", f"echo {mask} > {knob} && cat {knob}"]).stdout).strip()
    if int(got.replace(",", ""), 16) != 1 << RX_CPU:
        raise BenchUnavailable(f"RPS did not take: {knob} reads {got!r}, wanted {mask}")
    return got


def _softnet() -> list[tuple[int, int]]:
    """(processed, dropped) of each CPU's backlog so far (machine-wide)."""
    rows = []
    for line in Path("/proc/net/softnet_stat").read_text().splitlines():
        cols = line.split()
        rows.append((int(cols[SOFTNET_PROCESSED], 16), int(cols[SOFTNET_DROPPED], 16)))
    return rows


def _veth_drops(pair: NamespacePair) -> int:
    """Frames the sending veth could not hand over (a full NAPI ring in native mode) so far. The receiving
    end's rx `dropped` is left out: in native mode it counts the XSK's own drops a second time."""
    stats = json.loads(pair.left.run(["ip", "-j", "-s", "link", "show", pair.left_if]).stdout)[0]["stats64"]
    return int(stats["tx"]["dropped"])


def _xdp_off(pair: NamespacePair) -> None:
    """No program left on the receiving veth (a receiver that died could leave one attached)."""
    for kind in ("xdpgeneric", "xdpdrv"):
        pair.right.run(["ip", "link", "set", "dev", pair.right_if, kind, "off"], check=False)


def _wait_ready(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdout is None:
        raise RuntimeError("receiver started without a stdout pipe")
    fd, line, deadline = proc.stdout.fileno(), b"", time.monotonic() + READY_WAIT
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise RuntimeError(f"receiver not ready after {READY_WAIT:g} s")
        chunk = os.read(fd, 1)
        if not chunk:
            _, err = proc.communicate(timeout=RESULT_MARGIN)
            raise RuntimeError(f"receiver exited {proc.returncode}: {err.decode(errors='replace').strip()}")
        line += chunk


def _result(proc: subprocess.Popen[bytes], timeout: float, what: str) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited {proc.returncode}: {err.decode(errors='replace').strip()}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def measure(pair: NamespacePair, bench: Path, prog: Path, path: str, size: int, seconds: float) -> dict[str, Any]:
    _xdp_off(pair)
    keys = ["--spi", f"{SPI:x}", "--key", KEYMAT.hex()]
    if path == "sockets":
        rx_cmd = [str(bench), "rx-sockets"]
    else:
        rx_cmd = [str(bench), "rx-xsk", pair.right_if, "--mode", path.removeprefix("xdp-"), "--prog", str(prog)]
    gen_cmd = [str(bench), "gen", pair.left_if, "--src", pair.left_addr, "--dst", pair.right_addr,
               "--src-mac", _mac(pair, True), "--dst-mac", _mac(pair, False), "--size", str(size)]
    pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    rx = pair.right.popen([*rx_cmd, *keys, "--seconds", f"{seconds:g}"], preexec_fn=_pin(RX_CPU), **pipes)
    gen: subprocess.Popen[bytes] | None = None
    try:
        _wait_ready(rx)
        softnet0, veth0 = _softnet(), _veth_drops(pair)
        gen = pair.left.popen([*gen_cmd, *keys, "--seconds", f"{seconds + GEN_TAIL:g}"], preexec_fn=_pin(GEN_CPU),
                              **pipes)
        got = _result(rx, seconds + FIRST_PACKET_WAIT + RESULT_MARGIN, f"receiver ({path})")
        sent = _result(gen, seconds + GEN_TAIL + RESULT_MARGIN, "generator")
        softnet1, veth1 = _softnet(), _veth_drops(pair)
    finally:
        for proc in (rx, gen):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    processed = [b[0] - a[0] for a, b in zip(softnet0, softnet1)]
    backlog = sum(processed)
    backlog_drops = sum(b[1] - a[1] for a, b in zip(softnet0, softnet1))
    if path == "sockets":
        receiver_drops = int(got["kernel_drops"])
    else:
        receiver_drops = int(got["rx_dropped"]) + int(got["rx_ring_full"])
    ok, wall, busy = int(got["ok"]), float(got["seconds"]), [float(b) for b in got["busy"]]
    rx_busy = busy[RX_CPU] if len(busy) > RX_CPU else 0.0
    rx_steal = float(got["steal"][RX_CPU]) if len(got["steal"]) > RX_CPU else 0.0
    return {
        "decap_pps": ok / wall if wall else 0.0,
        "sent_pps": sent["sent"] / sent["seconds"],
        "rx_core_busy": rx_busy / wall if wall else 0.0,
        "rx_core_steal": rx_steal / wall if wall else 0.0,  # the hypervisor's: neither busy nor idle
        "decap_per_rx_core_s": ok / rx_busy if rx_busy else 0.0,
        "machine_us_per_packet": sum(busy) * 1e6 / ok if ok else 0.0,
        "rx_process_cpu": got["cpu_seconds"] / wall if wall else 0.0,  # with softirq work run while it was current
        "rx_user": got["user_seconds"] / wall if wall else 0.0,  # its own work: parse, decrypt, rings
        "gen_cpu": sent["cpu_seconds"] / sent["seconds"],
        "gen_starved": sent["starved_seconds"] / sent["seconds"],
        "other_statuses": got["statuses"],
        "drops": receiver_drops + backlog_drops + veth1 - veth0,
        "drops_receiver": receiver_drops, "drops_backlog": backlog_drops, "drops_veth": veth1 - veth0,
        # machine-wide counters, so other traffic blurs it; native XDP redirects before the backlog
        "backlog_on_rx_cpu": processed[RX_CPU] / backlog if path in BACKLOG_PATHS and backlog else None,
        "rx_cpu_seen": got["cpu"], "gen_cpu_seen": sent["cpu"],
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def report(best: dict[str, dict[int, dict[str, Any]]], args: argparse.Namespace, rps: str,
           load: str) -> dict[str, Any]:
    print(f"== ESP decapsulated per second (AES-128-GCM, tunnel mode, inner IPv4, anti-replay on), C receivers, "
          f"{args.seconds:g} s runs, best of {args.rounds} alternating rounds; load average before: {load}")
    print(f"   generator on CPU {GEN_CPU} (send-only XSK, encrypting every frame), receiver on CPU {RX_CPU}, "
          f"RPS of the receiving veth = {rps}")
    print(f"  {'path':10} {'size':>5} {'decap/s':>10} {'sent/s':>10} {'rx core':>7} {'steal':>5} "
          f"{'decap/rx-core-s':>15} {'us/pkt':>6} {'rx user':>7} {'gen starved':>11} {'drops':>9} {'backlog@rx':>10}")
    for path in PATHS:
        for size in SIZES:
            r = best[path][size]
            share = "-" if r["backlog_on_rx_cpu"] is None else f"{r['backlog_on_rx_cpu']:.1%}"
            print(f"  {path:10} {size:>5} {r['decap_pps']:>10,.0f} {r['sent_pps']:>10,.0f} {r['rx_core_busy']:>7.2f} "
                  f"{r['rx_core_steal']:>5.2f} {r['decap_per_rx_core_s']:>15,.0f} {r['machine_us_per_packet']:>6.2f} "
                  f"{r['rx_user']:>7.2f} {r['gen_starved']:>11.2f} {r['drops']:>9,} {share:>10}")
    print(f"  (rx core: CPU {RX_CPU} busy fraction over the receiver's run, whatever ran there; steal: its share "
          "taken by the hypervisor; us/pkt: busy CPU of the whole machine per packet decrypted; rx user: the "
          "receiver's own user-space work (parse, decrypt, rings); gen starved: share of the generator's time with "
          "no free frame; drops: receiving socket or XSK + backlog + veth; backlog@rx: share of the machine's "
          f"backlog packets CPU {RX_CPU} processed, ~100% for sockets and xdp-skb when RPS works)")
    print(f"  xdp-native: on veth the XDP program and the copy into the UMEM run in the veth NAPI on the sender's "
          f"CPU {GEN_CPU}, so its rx-core figures leave that work out and the generator pays for it")
    ratios: dict[str, dict[str, dict[str, float | None]]] = {}
    for mode in XDP_PATHS:
        ratios[mode] = {str(size): {
            "decap_pps": _ratio(best[mode][size]["decap_pps"], best["sockets"][size]["decap_pps"]),
            "per_rx_core_s": _ratio(best[mode][size]["decap_per_rx_core_s"],
                                    best["sockets"][size]["decap_per_rx_core_s"]),
        } for size in SIZES}
        cells = ", ".join(f"{size} B {_fmt(ratios[mode][str(size)]['decap_pps'])} "
                          f"(per rx-core second {_fmt(ratios[mode][str(size)]['per_rx_core_s'])})" for size in SIZES)
        print(f"== ratio {mode} / sockets, end-to-end decap/s: {cells}")
    target_mode = max(XDP_PATHS, key=lambda m: best[m][64]["decap_pps"])
    target_ratio = ratios[target_mode]["64"]["decap_pps"]
    met = target_ratio is not None and target_ratio >= TARGET_XDP_VS_SOCKETS_64
    print(f"== target: AF_XDP / sockets at 64 B >= {TARGET_XDP_VS_SOCKETS_64:g} (end-to-end decap/s of the better "
          f"XDP mode, {target_mode}): {_fmt(target_ratio)}, {'met' if met else 'NOT met'}")
    return {"ratios": ratios, "target": {"size": 64, "mode": target_mode, "ratio": target_ratio,
                                         "min": TARGET_XDP_VS_SOCKETS_64}, "target_met": met}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    args = parser.parse_args()
    if not 0 < args.seconds <= MAX_SECONDS or not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--seconds in (0, {MAX_SECONDS:g}], --rounds in [1, {MAX_ROUNDS}]")
    require_root()
    if not {GEN_CPU, RX_CPU} <= os.sched_getaffinity(0):
        sys.exit(f"xdp_compare: needs CPUs {GEN_CPU} and {RX_CPU} (one for the load, one for the receiver)")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    best: dict[str, dict[int, dict[str, Any]]] = {p: {} for p in PATHS}
    with tempfile.TemporaryDirectory(prefix="xdp_compare-") as tmp:
        try:
            bench, prog = build_bench(Path(tmp)), xdp_program()
        except BenchUnavailable as exc:
            sys.exit(f"xdp_compare: {exc}")
        with NamespacePair(PairAddresses(left_inner=(), right_inner=())) as pair:
            rps = set_rps(pair)
            for _ in range(args.rounds):
                for size in SIZES:
                    for path in PATHS:
                        run = measure(pair, bench, prog, path, size, args.seconds)
                        if size not in best[path] or run["decap_pps"] > best[path][size]["decap_pps"]:
                            best[path][size] = run
    verdict = report(best, args, rps, load)
    print(json.dumps({"seconds": args.seconds, "rounds": args.rounds, "load_before": load, "paths": best, **verdict},
                     separators=(",", ":")))


if __name__ == "__main__":
    main()
