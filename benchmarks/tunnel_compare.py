"""Tunnel throughput between network namespaces: bare veth, strongSwan and ikev2lib, in the same run.

Each path is a pair of fresh namespaces `tcmp-<tag>-l` / `tcmp-<tag>-r` joined by veth (outer network
192.0.2.0/24, tests/interop/netns.py):

- `veth`: no tunnel, iperf3 between the outer addresses (the ceiling);
- `strongswan`: two charons with kernel-libipsec (userland ESP in UDP/4500, a TUN `ipsec0` on each
  side; tests/interop/strongswan.py), IKE aes128gcm16-prfsha256-x25519, ESP aes128gcm16, between
  10.1.0.0/24 (left) and 10.2.0.0/24 (right), inner addresses 10.1.0.1 and 10.2.0.1 on `lo`;
- `ikev2lib`: two `ikev2lib run` gateway processes (tests/interop/gateway_process.py) with the same
  proposals and networks, configured by `ikev2lib_gateway_config`;
- `ikev2lib-percpu`: the same with `per_cpu_sas = true` on both (RFC 9611 per-resource Child SAs: a
  fallback plus one per CPU, each data-path worker sending on its own and decrypting its own); measured
  once the left gateway holds all of them (else `null` with the reason);
- `ikev2lib-xdp`: the `ikev2lib` pair with both gateways on AF_XDP (`xdp` in their [datapath]:
  ikev2lib's XDP program in native mode on each veth, one XSK per queue), receiving ESP from the
  XSK and sending it as frames from its UMEM once the peer's next hop is resolved;
- `ikev2lib-strongswan`: the ikev2lib gateway on the left, charon on the right.

Every path that comes up must first carry an ICMP echo through the tunnel within a bounded time; a
path that does not (e.g. a gateway without a TUN data path) is reported as `null` with the reason,
never with a number. The paths are set up together, then measured in alternating rounds (each kind
of run goes through every path in turn, the best of each kept, so load from other work on the machine
hits every path alike):

- TCP: iperf3, one stream, `-t SECONDS`, Mbit/s received;
- TCP x4 (`tcp4`): the same with `-P 4`, Mbit/s received summed over the four streams (what per-CPU
  SAs can spread over the workers);
- UDP: iperf3 `-u -b 0 -l 64` and `-l 1400`, packets/s received and loss, from the server's JSON;
- ping: ICMP echo round trip (a raw socket in the namespace; this machine has no `ping` binary);
- CPU share per tunnel process (charon, gateway) from /proc/PID/stat over each run (1.0 = one core),
  and iperf3's own CPU from its JSON.

Hostile traffic under load (`--flood`, on by default, about 30 s at 5 s runs; `--no-flood` skips it):
on the `strongswan` and `ikev2lib` paths (`--flood-all`: `ikev2lib-strongswan` too), after the
rounds, iperf3 TCP with `-R` (the right side sends, so the LEFT gateway receives and decrypts the
tunnel's stream) once clean, then once while a flooder in the right namespace sends to the left outer
address, from the right's, at up to `--flood-rate` packets/s per kind (default 20,000) for the run's
duration: (1) forged: real ESP of the tunnel captured on the left veth during the clean run with the
sequence number moved far ahead (passes the window, fails the ICV: the expensive drop), (2) replayed:
the captured packets as they were (the replay window refuses them), (3) the captured packets with an
SPI nobody holds. Raw IP protocol 50 for a raw-ESP tunnel (ikev2lib <-> ikev2lib), UDP/4500 for a
UDP-encapsulated one (strongSwan libipsec always is). The flooder reports what it actually sent and
its CPU; for an ikev2lib left side, its drop counters (`ikev2lib status --json`) before and after
are compared with what was sent per kind (icv / replay + window / no_sa), and the left namespace's
kernel socket drops (full receive buffers, /proc/net/raw and /proc/net/udp) account for a difference.
On `ikev2lib` a control run between the two sends the same packets at the same rate as IP protocol
253, which the left kernel discards after IP input: the share of the loss that the flooder and the
kernel cost on these shared cores, apart from what handling the drops costs the gateway.

Ratios: each tunnel / bare veth, and ikev2lib / strongSwan TCP, whose target is >= 3 (stretch >= 5);
ikev2lib TCP with the flood / without it (`tcp_under_flood_vs_clean`), target >= 0.7; TCP x4 of
ikev2lib-percpu / ikev2lib and / strongSwan (`tcp4_ikev2lib_percpu_vs_ikev2lib`,
`tcp4_ikev2lib_percpu_vs_strongswan`), and TCP and UDP 64 B of ikev2lib-xdp / ikev2lib
(`tcp_ikev2lib_xdp_vs_ikev2lib`, `udp64_ikev2lib_xdp_vs_ikev2lib`), reported without a target.
Prints a table, then (LAST line) one JSON object with every figure, `targets` and `targets_met`.
Needs root, iperf3 and strongswan-charon. Every namespace, charon, gateway and iperf3 process is
removed at the end and on errors; every wait and subprocess is bounded.

Usage: .venv/bin/python benchmarks/tunnel_compare.py [--seconds 5] [--rounds 2] [--quick]
       [--only {veth,strongswan,ikev2lib,ikev2lib-percpu,ikev2lib-xdp,ikev2lib-strongswan}]... [--profile]
       [--no-flood | --flood-only] [--flood-all] [--flood-rate 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from interop.gateway_process import RunningGateway, established  # noqa: E402
from interop.netns import (  # noqa: E402
    CMD_TIMEOUT,
    Namespace,
    NamespacePair,
    NetnsError,
    NsTask,
    PairAddresses,
    require_root,
    stop_process,
)
from interop.strongswan import CHARON, Charon, CharonError, CharonSettings, psk_connection_pair  # noqa: E402

from ikev2lib.gateway.model import per_cpu_sas_for  # noqa: E402

# Targets (speed is reported, never asserted in tests): same-run ratios only.
TARGET_TCP_VS_STRONGSWAN = 3.0  # ikev2lib <-> ikev2lib TCP Mbit/s / strongSwan <-> strongSwan TCP Mbit/s
STRETCH_TCP_VS_STRONGSWAN = 5.0
TARGET_TCP_UNDER_FLOOD = 0.7  # ikev2lib <-> ikev2lib TCP Mbit/s with the --flood / the same without it

PATHS = ("veth", "strongswan", "ikev2lib", "ikev2lib-percpu", "ikev2lib-xdp", "ikev2lib-strongswan")
NS_PREFIX = "tcmp"  # namespace names tcmp-<tag>-l / -r; no other test uses this prefix
IKE_PROPOSAL = "aes128gcm16-prfsha256-x25519"
ESP_PROPOSAL = "aes128gcm16"
PSK = "tunnel-compare-psk-0123456789abcdef"
LEFT_ID, RIGHT_ID = "left", "right"
LEFT_NET, RIGHT_NET = "10.1.0.0/24", "10.2.0.0/24"
LEFT_INNER, RIGHT_INNER = "10.1.0.1", "10.2.0.1"
CONNECTION, CHILD = "tunnel", "net"
TUN_NAME = "ikv0"  # the TUN device the ikev2lib gateway is asked to create in its namespace

DEFAULT_SECONDS = 5.0
QUICK_SECONDS = 1.0
DEFAULT_ROUNDS = 2
MAX_ROUNDS = 10
MAX_SECONDS = 120.0  # bound on --seconds: one iperf3 run
UDP_PAYLOADS = (64, 1400)  # bytes of UDP payload per iperf3 datagram
IPERF = shutil.which("iperf3") or "/usr/bin/iperf3"
IPERF_PORT = 5201
IPERF_MARGIN = 20.0  # seconds an iperf3 client may take beyond -t (connect, end-of-test exchange)
SERVER_READY_TIMEOUT = 5.0  # seconds for the iperf3 server to listen
SERVER_EXIT_TIMEOUT = 10.0  # seconds for a one-off iperf3 server to print its JSON after the client ends
POLL = 0.05  # seconds between polls
SETTLE_SECONDS = 0.5  # pause between runs, so a UDP flood's queues drain before the next run
CHILD_TIMEOUT = 20.0  # seconds for charon's Child SA to be installed
GATEWAY_TIMEOUT = 20.0  # seconds for an ikev2lib gateway to establish its IKE SA and Child SA
PER_RESOURCE_TIMEOUT = 20.0  # seconds for the per-resource Child SAs once the first Child SA is up
PER_RESOURCE_CHILDREN = per_cpu_sas_for(True) + 1  # the fallback + one per CPU (the gateway's count): 3 on 2 CPUs
TCP_STREAMS = 4  # iperf3 -P of the tcp4 runs: enough streams to keep every worker's SA busy
TUNNEL_READY_TIMEOUT = 10.0  # seconds an established tunnel gets to pass its first ICMP echo
PING_COUNT = 20
QUICK_PING_COUNT = 5
PING_INTERVAL = 0.05  # seconds between echo requests
PING_REPLY_TIMEOUT = 1.0  # seconds to wait for one echo reply
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMP_PAYLOAD = bytes(range(48))
MAX_ICMP_READS = 64  # datagrams read per echo before giving up on its reply (other ICMP traffic)
CLK_TCK = os.sysconf("SC_CLK_TCK")


class NotAvailable(RuntimeError):
    """A path could not be set up or does not carry traffic; the message is the reason reported."""


# --------------------------------------------------------------------------------------------------
# the ikev2lib gateway's configuration


def ikev2lib_gateway_config(*, local_addr: str, remote_addr: str, local_id: str, remote_id: str,
                            local_net: str, remote_net: str, initiate: bool, per_cpu: bool = False,
                            xdp: str = "") -> str:
    """The TOML file (`ikev2lib run --config`) of one ikev2lib gateway of the `ikev2lib`,
    `ikev2lib-percpu` and `ikev2lib-strongswan` paths: one PSK connection `tunnel` (IKE
    aes128gcm16-prfsha256-x25519) with one child `net` (ESP aes128gcm16) between `local_net` and
    `remote_net`; `initiate` gives it `start_action = "start"` (the left side), the other side answers.
    `per_cpu` (the `ikev2lib-percpu` path) gives the child `per_cpu_sas = true`: RFC 9611 per-resource
    Child SAs, a fallback plus one per CPU, so that each data-path worker sends on its own SA. `xdp`
    (the `ikev2lib-xdp` path) carries ESP both ways on that interface through AF_XDP.

    The measurement needs the gateway to run a TUN data path: a TUN device (`[datapath] tun`, named
    TUN_NAME in the gateway's namespace) to which the gateway routes `remote_net` (as kernel-libipsec
    does for charon), decrypted ESP written to it and packets read from it encrypted to the peer.
    The inner address (10.1.0.1 or 10.2.0.1) is already on the namespace's `lo`. This function is the
    one place that knows how the data path is configured; a gateway that refuses this file or does
    not carry an ICMP echo through the tunnel makes its path `null` with the reason."""
    lines = [
        f'listen = ["{local_addr}"]',
        "",
        "[datapath]",
        f'tun = "{TUN_NAME}"',
        *([f'xdp = "{xdp}"'] if xdp else []),
        "",
        f"[connections.{CONNECTION}]",
        f'local_addrs = ["{local_addr}"]',
        f'remote_addrs = ["{remote_addr}"]',
        f'local_id = "{local_id}"',
        f'remote_id = "{remote_id}"',
        f'psk = "{PSK}"',
        f'ike_proposals = "{IKE_PROPOSAL}"',
        f'start_action = "{"start" if initiate else "none"}"',
        f"[connections.{CONNECTION}.children.{CHILD}]",
        f'local_ts = ["{local_net}"]',
        f'remote_ts = ["{remote_net}"]',
        f'esp_proposals = "{ESP_PROPOSAL}"',
        *(["per_cpu_sas = true"] if per_cpu else []),
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# namespaces, processes and CPU time


NS_TAGS: set[str] = set()  # the tags drawn in this run, one per path


def namespace_pair(inner: bool) -> NamespacePair:
    """A NamespacePair named with this script's prefix (not yet set up), under a random tag no other
    path of this run has (two paths sharing namespaces would tear down each other's); `inner`:
    10.1.0.1/32 and 10.2.0.1/32 on the two `lo`s."""
    tag = secrets.token_hex(3)
    while tag in NS_TAGS:  # 1 in 16 million per pair
        tag = secrets.token_hex(3)
    NS_TAGS.add(tag)
    addresses = PairAddresses() if inner else PairAddresses(left_inner=(), right_inner=())
    pair = NamespacePair(addresses, tag=tag)
    pair.left_name, pair.right_name = f"{NS_PREFIX}-{tag}-l", f"{NS_PREFIX}-{tag}-r"
    pair.left_if, pair.right_if = f"tc{tag}l", f"tc{tag}r"  # interface names: at most 15 characters
    return pair


def disable_ipv6(ns: Namespace) -> None:
    # a TUN with an IPv6 link-local address makes charon send MOBIKE address updates (ENVIRONMENT.md)
    ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], check=False)


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def namespace_pid(ns: Namespace, comm: str) -> int:
    """The pid of the process named `comm` inside `ns` (e.g. charon, forked by `unshare ... sh`)."""
    pids = subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True, text=True,
                          timeout=CMD_TIMEOUT).stdout.split()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                return int(pid)
        except OSError:
            continue
    raise NotAvailable(f"no {comm} process in namespace {ns.name}")


def route_mtu(ns: Namespace, dst: str, src: str) -> dict[str, Any]:
    """The device and MTU the route from `src` to `dst` takes in `ns`."""
    route = ns.run(["ip", "-o", "route", "get", dst, "from", src], check=False).stdout
    dev = re.search(r"\bdev (\S+)", route)
    if dev is None:
        return {"device": None, "mtu": None}
    link = ns.run(["ip", "-o", "link", "show", "dev", dev.group(1)], check=False).stdout
    mtu = re.search(r"\bmtu (\d+)", link)
    return {"device": dev.group(1), "mtu": int(mtu.group(1)) if mtu else None}


# --------------------------------------------------------------------------------------------------
# ICMP echo (runs inside a namespace through Namespace.call)


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of a message shorter than 64 KiB."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    for _ in range(2):  # a sum of fewer than 2**16 16-bit words folds into 16 bits in two steps
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_ping(src: str, dst: str, count: int, interval: float, reply_timeout: float) -> dict[str, Any]:
    """Send `count` ICMP echo requests from src to dst on a raw socket; round trips of the replies."""
    ident = os.getpid() & 0xFFFF
    rtts: list[float] = []
    send_error = None
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.bind((src, 0))
        for seq in range(count):
            header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
            packet = header[:2] + struct.pack("!H", _checksum(header + ICMP_PAYLOAD)) + header[4:] + ICMP_PAYLOAD
            sent = time.perf_counter()
            try:
                sock.sendto(packet, (dst, 0))
            except OSError as exc:  # e.g. no route to dst: the tunnel installed none
                send_error = str(exc)
                time.sleep(interval)
                continue
            deadline = sent + reply_timeout
            for _ in range(MAX_ICMP_READS):
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                sock.settimeout(left)
                try:
                    data, (addr, _) = sock.recvfrom(2048)
                except TimeoutError:
                    break
                ihl = (data[0] & 0x0F) * 4
                kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if addr == dst and kind == ICMP_ECHO_REPLY and rid == ident and rseq == seq:
                    rtts.append(time.perf_counter() - sent)
                    break
            time.sleep(interval)
    result: dict[str, Any] = {"sent": count, "received": len(rtts)}
    if send_error is not None:
        result["send_error"] = send_error
    if rtts:
        result.update(rtt_min_ms=min(rtts) * 1e3, rtt_avg_ms=sum(rtts) / len(rtts) * 1e3,
                      rtt_max_ms=max(rtts) * 1e3)
    return result


# --------------------------------------------------------------------------------------------------
# one path: its namespaces, its processes, how to reach across it


@dataclass
class Tunnel:
    name: str
    description: str
    pair: NamespacePair
    client_addr: str  # iperf3 client binds here (left namespace)
    server_addr: str  # iperf3 server binds here (right namespace)
    processes: dict[str, int] = field(default_factory=dict)  # label -> pid whose CPU share is reported
    gateway: RunningGateway | None = None  # the LEFT ikev2lib gateway (drop counters), None for charon
    esp_in_udp: bool = True  # how ESP crosses the outer network: UDP/4500 or raw IP protocol 50

    def ping(self, count: int) -> dict[str, Any]:
        timeout = count * (PING_INTERVAL + PING_REPLY_TIMEOUT) + CMD_TIMEOUT
        result: dict[str, Any] = self.pair.left.call(icmp_ping, self.client_addr, self.server_addr, count,
                                                     PING_INTERVAL, PING_REPLY_TIMEOUT, timeout=timeout)
        return result

    def wait_for_ping(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.ping(1)
            if last["received"]:
                return
            time.sleep(POLL)
        why = f" (sending: {last['send_error']})" if "send_error" in last else ""
        raise NotAvailable(f"no reply to an ICMP echo from {self.client_addr} to {self.server_addr} through the tunnel "
                           f"within {timeout:.0f} s{why}")


def setup_veth(stack: contextlib.ExitStack, work: Path) -> Tunnel:
    pair = stack.enter_context(namespace_pair(inner=False))
    tunnel = Tunnel("veth", "bare veth, no tunnel", pair, pair.left_addr, pair.right_addr)
    tunnel.wait_for_ping(TUNNEL_READY_TIMEOUT)
    return tunnel


def start_charon(stack: contextlib.ExitStack, ns: Namespace, work: Path, name: str) -> Charon:
    if not os.path.exists(CHARON):
        raise NotAvailable(f"{CHARON} not found (apt strongswan-charon)")
    charon = Charon(ns, work / name, CharonSettings(log_levels={"default": 0}), name=name)
    stack.callback(charon.stop)
    charon.start()
    return charon


def charon_configs(pair: NamespacePair) -> tuple[Any, Any]:
    return psk_connection_pair(pair.left_addr, pair.right_addr, conn=CONNECTION, child=CHILD,
                               proposals=[IKE_PROPOSAL], esp_proposals=[ESP_PROPOSAL], left_ts=[LEFT_NET],
                               right_ts=[RIGHT_NET], psk=PSK, left_id=LEFT_ID, right_id=RIGHT_ID)


def setup_strongswan(stack: contextlib.ExitStack, work: Path) -> Tunnel:
    pair = stack.enter_context(namespace_pair(inner=True))
    for ns in (pair.left, pair.right):
        disable_ipv6(ns)
    left_cfg, right_cfg = charon_configs(pair)
    left = start_charon(stack, pair.left, work / "strongswan", "left")
    right = start_charon(stack, pair.right, work / "strongswan", "right")
    right.load(right_cfg)
    left.load(left_cfg)
    left.initiate(child=CHILD, timeout=CHILD_TIMEOUT)
    for charon in (left, right):
        charon.wait_for_child(CHILD, timeout=CHILD_TIMEOUT)
    tunnel = Tunnel("strongswan", "strongSwan 5 charon <-> charon, kernel-libipsec (ESP in UDP/4500)", pair,
                    LEFT_INNER, RIGHT_INNER)
    tunnel.processes = {"charon left": namespace_pid(pair.left, "charon"),
                        "charon right": namespace_pid(pair.right, "charon")}
    tunnel.wait_for_ping(TUNNEL_READY_TIMEOUT)
    return tunnel


def start_gateway(stack: contextlib.ExitStack, ns: Namespace, work: Path, config: str) -> RunningGateway:
    work.mkdir(parents=True, exist_ok=True)
    path = work / "gateway.toml"
    path.write_text(config)
    gateway = RunningGateway(ns, ["--config", str(path)], work)
    stack.callback(gateway.close)
    return gateway


def first_error_line(gateway: RunningGateway) -> str:
    lines = [line.strip() for line in gateway.text().splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:300]
    return lines[-1][:300] if lines else "(empty log)"


def wait_gateway_established(gateway: RunningGateway, side: str) -> None:
    try:
        gateway.wait(established(CONNECTION), f"{side} gateway established", timeout=GATEWAY_TIMEOUT)
    except AssertionError as exc:  # RunningGateway.wait's way of saying exited / timed out
        if gateway.proc.poll() is not None:
            raise NotAvailable(f"the {side} ikev2lib gateway exited ({gateway.proc.returncode}): "
                               f"{first_error_line(gateway)}") from exc
        raise NotAvailable(f"the {side} ikev2lib gateway did not establish {CONNECTION} within "
                           f"{GATEWAY_TIMEOUT:.0f} s") from exc


def child_udp_encap(gateway: RunningGateway) -> bool:
    """Whether the gateway's Child SA of CONNECTION sends ESP in UDP/4500 (else raw IP protocol 50)."""
    ike = established(CONNECTION)(gateway.status())
    return bool(ike and ike["children"][0].get("udp_encap"))


def no_data_path(exc: NotAvailable, gateway_sides: str) -> NotAvailable:
    return NotAvailable(f"{exc}; the {gateway_sides} has no working TUN data path")


def per_resource_children(gateway: RunningGateway) -> int:
    """How many installed Child SAs of CONNECTION's IKE SA are RFC 9611 per-resource ones (the
    fallback, `resource` None, counts too)."""
    ike = established(CONNECTION)(gateway.status())
    return sum(1 for child in (ike["children"] if ike else [])
               if child.get("per_resource") and child.get("state") == "installed")


def wait_per_resource_children(gateway: RunningGateway, side: str) -> None:
    """Wait until the gateway holds the fallback and one per-resource Child SA per CPU: the initiator
    creates the members after the first Child SA, one CREATE_CHILD_SA each."""
    deadline = time.monotonic() + PER_RESOURCE_TIMEOUT
    count = 0
    while time.monotonic() < deadline:
        if gateway.proc.poll() is not None:
            raise NotAvailable(f"the {side} ikev2lib gateway exited ({gateway.proc.returncode}): "
                               f"{first_error_line(gateway)}")
        count = per_resource_children(gateway)
        if count >= PER_RESOURCE_CHILDREN:
            return
        time.sleep(POLL)
    raise NotAvailable(f"the {side} ikev2lib gateway has {count} per-resource Child SAs (per_cpu_sas = true), "
                       f"not the {PER_RESOURCE_CHILDREN} of a fallback and one per CPU, within "
                       f"{PER_RESOURCE_TIMEOUT:.0f} s")


def setup_ikev2lib_pair(stack: contextlib.ExitStack, work: Path, name: str, description: str,
                        per_cpu: bool, xdp: bool = False) -> Tunnel:
    """Two ikev2lib gateways, the left one initiating; `per_cpu`: with per-resource Child SAs, all of
    them installed before the tunnel is measured."""
    pair = stack.enter_context(namespace_pair(inner=True))
    for ns in (pair.left, pair.right):
        disable_ipv6(ns)
    right = start_gateway(stack, pair.right, work / name / "right", ikev2lib_gateway_config(
        local_addr=pair.right_addr, remote_addr=pair.left_addr, local_id=RIGHT_ID, remote_id=LEFT_ID,
        local_net=RIGHT_NET, remote_net=LEFT_NET, initiate=False, per_cpu=per_cpu, xdp=pair.right_if if xdp else ""))
    left = start_gateway(stack, pair.left, work / name / "left", ikev2lib_gateway_config(
        local_addr=pair.left_addr, remote_addr=pair.right_addr, local_id=LEFT_ID, remote_id=RIGHT_ID,
        local_net=LEFT_NET, remote_net=RIGHT_NET, initiate=True, per_cpu=per_cpu, xdp=pair.left_if if xdp else ""))
    wait_gateway_established(left, "left")
    wait_gateway_established(right, "right")
    if per_cpu:
        wait_per_resource_children(left, "left")
    for side, gateway in (("right", right), ("left", left)):
        if xdp and gateway.status()["datapath"]["xdp"] is None:
            raise NotAvailable(f"the {side} gateway runs without AF_XDP: {first_error_line(gateway)}")
    tunnel = Tunnel(name, description, pair, LEFT_INNER, RIGHT_INNER)
    tunnel.processes = {"gateway left": left.proc.pid, "gateway right": right.proc.pid}
    tunnel.gateway, tunnel.esp_in_udp = left, child_udp_encap(left)
    try:
        tunnel.wait_for_ping(TUNNEL_READY_TIMEOUT)
    except NotAvailable as exc:
        raise no_data_path(exc, "ikev2lib gateway") from exc
    return tunnel


def setup_ikev2lib(stack: contextlib.ExitStack, work: Path) -> Tunnel:
    return setup_ikev2lib_pair(stack, work, "ikev2lib", "ikev2lib run <-> ikev2lib run (TUN data path)",
                               per_cpu=False)


def setup_ikev2lib_percpu(stack: contextlib.ExitStack, work: Path) -> Tunnel:
    return setup_ikev2lib_pair(stack, work, "ikev2lib-percpu",
                               "ikev2lib run <-> ikev2lib run (TUN data path), per_cpu_sas: one Child SA per worker",
                               per_cpu=True)


def setup_ikev2lib_xdp(stack: contextlib.ExitStack, work: Path) -> Tunnel:
    return setup_ikev2lib_pair(stack, work, "ikev2lib-xdp",
                               "ikev2lib run <-> ikev2lib run (TUN data path), both on AF_XDP", per_cpu=False,
                               xdp=True)


def setup_ikev2lib_strongswan(stack: contextlib.ExitStack, work: Path) -> Tunnel:
    pair = stack.enter_context(namespace_pair(inner=True))
    for ns in (pair.left, pair.right):
        disable_ipv6(ns)
    _, right_cfg = charon_configs(pair)
    charon = start_charon(stack, pair.right, work / "ikev2lib-strongswan", "right")
    charon.load(right_cfg)
    left = start_gateway(stack, pair.left, work / "ikev2lib-strongswan" / "left", ikev2lib_gateway_config(
        local_addr=pair.left_addr, remote_addr=pair.right_addr, local_id=LEFT_ID, remote_id=RIGHT_ID,
        local_net=LEFT_NET, remote_net=RIGHT_NET, initiate=True))
    wait_gateway_established(left, "left")
    charon.wait_for_child(CHILD, timeout=CHILD_TIMEOUT)
    tunnel = Tunnel("ikev2lib-strongswan", "ikev2lib run <-> strongSwan charon (kernel-libipsec)", pair,
                    LEFT_INNER, RIGHT_INNER)
    tunnel.processes = {"gateway left": left.proc.pid, "charon right": namespace_pid(pair.right, "charon")}
    tunnel.gateway, tunnel.esp_in_udp = left, child_udp_encap(left)
    try:
        tunnel.wait_for_ping(TUNNEL_READY_TIMEOUT)
    except NotAvailable as exc:
        raise no_data_path(exc, "ikev2lib gateway") from exc
    return tunnel


SETUPS: dict[str, Callable[[contextlib.ExitStack, Path], Tunnel]] = {
    "veth": setup_veth, "strongswan": setup_strongswan, "ikev2lib": setup_ikev2lib,
    "ikev2lib-percpu": setup_ikev2lib_percpu, "ikev2lib-xdp": setup_ikev2lib_xdp,
    "ikev2lib-strongswan": setup_ikev2lib_strongswan,
}


# --------------------------------------------------------------------------------------------------
# iperf3 runs


class MeasureError(RuntimeError):
    """An iperf3 run failed (its error message)."""


def _wait_listening(ns: Namespace, port: int, server: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + SERVER_READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise MeasureError(f"iperf3 server exited ({server.returncode}) at start")
        if ns.run(["ss", "-Hltn", f"sport = :{port}"], check=False).stdout.strip():
            return
        time.sleep(POLL)
    raise MeasureError(f"iperf3 server not listening after {SERVER_READY_TIMEOUT:.0f} s")


def _json(text: str, who: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MeasureError(f"iperf3 {who} printed no JSON: {text[-300:]!r}") from exc
    if data.get("error"):
        raise MeasureError(f"iperf3 {who}: {data['error']}")
    return data


def iperf_run(tunnel: Tunnel, seconds: float, extra: list[str],
              alongside: Callable[[], NsTask] | None = None) -> dict[str, Any]:
    """One iperf3 test through `tunnel`: a one-off server in the right namespace, the client in the left.
    Returns both JSON documents and the CPU share of the tunnel's processes over the run.
    `alongside`: started (a task in a namespace) just before the client, its result awaited after it
    (`alongside` in the answer)."""
    server = tunnel.pair.right.popen([IPERF, "-s", "-1", "-J", "-B", tunnel.server_addr, "-p", str(IPERF_PORT)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    task = None
    try:
        _wait_listening(tunnel.pair.right, IPERF_PORT, server)
        cpu0 = {label: cpu_seconds(pid) for label, pid in tunnel.processes.items()}
        started = time.monotonic()
        task = alongside() if alongside is not None else None
        client = tunnel.pair.left.run(
            [IPERF, "-c", tunnel.server_addr, "-B", tunnel.client_addr, "-p", str(IPERF_PORT), "-t", f"{seconds:g}",
             "-J", *extra], timeout=seconds + IPERF_MARGIN, check=False)  # fmt: skip
        wall = time.monotonic() - started
        cpu1 = {label: cpu_seconds(pid) for label, pid in tunnel.processes.items()}
        side_result = task.result(seconds + IPERF_MARGIN) if task is not None else None
        try:
            server_out, _ = server.communicate(timeout=SERVER_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise MeasureError(f"iperf3 server did not end within {SERVER_EXIT_TIMEOUT:.0f} s") from exc
    finally:
        if task is not None:
            task.kill()  # a no-op once its result was read
        stop_process(server)
    cpu: dict[str, float | None] = {}
    for label in tunnel.processes:
        before, after = cpu0[label], cpu1[label]
        cpu[label] = None if before is None or after is None else (after - before) / wall
    return {"client": _json(client.stdout, "client"), "server": _json(server_out, "server"), "cpu": cpu,
            "alongside": side_result, "wall": wall}


def measure_tcp(tunnel: Tunnel, seconds: float, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    run = iperf_run(tunnel, seconds, list(extra))
    end = run["client"]["end"]
    util = end.get("cpu_utilization_percent", {})
    return {"mbit_s": end["sum_received"]["bits_per_second"] / 1e6,
            "retransmits": end["sum_sent"].get("retransmits"),
            "cpu": run["cpu"],
            "iperf3_cpu_percent": {"client": util.get("host_total"), "server": util.get("remote_total")}}


def measure_tcp4(tunnel: Tunnel, seconds: float) -> dict[str, Any]:
    """TCP_STREAMS parallel streams (Mbit/s received: their sum). The kernel puts one flow on one queue
    of the multi-queue TUN, so one stream keeps one worker busy; several can spread over the workers."""
    return measure_tcp(tunnel, seconds, ("-P", str(TCP_STREAMS)))


def measure_udp(tunnel: Tunnel, seconds: float, payload: int) -> dict[str, Any]:
    run = iperf_run(tunnel, seconds, ["-u", "-b", "0", "-l", str(payload)])
    received = run["server"]["end"]["sum_received"]  # the receiving side's own count
    sent_packets, lost = received["packets"], received["lost_packets"]  # packets: highest sequence number seen
    got = max(sent_packets - lost, 0)
    span = received["seconds"] or seconds
    util = run["client"]["end"].get("cpu_utilization_percent", {})
    return {"received_pps": got / span, "sent_pps": sent_packets / span,
            "loss_percent": 100.0 * lost / sent_packets if sent_packets else None,
            "received_mbit_s": received["bits_per_second"] / 1e6, "cpu": run["cpu"],
            "iperf3_cpu_percent": {"client": util.get("host_total"), "server": util.get("remote_total")}}


RunKind = tuple[str, Callable[[Tunnel, float], dict[str, Any]], str]
RUN_KINDS: tuple[RunKind, ...] = (
    ("tcp", measure_tcp, "mbit_s"),
    ("tcp4", measure_tcp4, "mbit_s"),
    *((f"udp{size}", lambda t, s, size=size: measure_udp(t, s, size), "received_pps") for size in UDP_PAYLOADS),
)


def measure(tunnels: dict[str, Tunnel], seconds: float, rounds: int, ping_count: int) -> dict[str, dict[str, Any]]:
    """Alternating rounds: each kind of run goes through every tunnel in turn; the best run of each
    kind is kept (with every run's figure in `all`). A run that fails is recorded as an error."""
    results: dict[str, dict[str, Any]] = {}
    for name, tunnel in tunnels.items():
        results[name] = {"description": tunnel.description, "ping": tunnel.ping(ping_count),
                         "route": route_mtu(tunnel.pair.left, tunnel.server_addr, tunnel.client_addr)}
    for _ in range(rounds):
        for kind, fn, key in RUN_KINDS:
            for name, tunnel in tunnels.items():
                time.sleep(SETTLE_SECONDS)
                try:
                    run = fn(tunnel, seconds)
                except (MeasureError, NetnsError, subprocess.TimeoutExpired) as exc:
                    results[name].setdefault("errors", []).append(f"{kind}: {exc}")
                    continue
                best = results[name].get(kind)
                figures = (best["all"] if best else []) + [run[key]]
                if best is None or run[key] > best[key]:
                    best = run
                best["all"] = figures
                results[name][kind] = best
    for name, tunnel in tunnels.items():
        results[name]["ping_after"] = tunnel.ping(ping_count)  # still carrying traffic after the floods
    return results


# --------------------------------------------------------------------------------------------------
# hostile traffic under load (--flood)
#
# The LEFT gateway is flooded while it receives the tunnel's TCP: iperf3 -R (the server in the right
# namespace sends, the left client receives), so the flood competes with the decryption of the
# tunnel's bulk ESP on the side that verifies it, in the same receive path (for ikev2lib raw ESP: the
# one raw socket its worker 0 reads). The flooder runs in the right namespace, sending from the right
# gateway's outer address to the left's, as the peer would.

FLOOD_KINDS = ("forged", "replayed", "unknown_spi")
DEFAULT_FLOOD_RATE = 20_000  # packets/s per kind (the flooder reports what it actually sent)
MAX_FLOOD_RATE = 1_000_000
FLOOD_CAPTURE = 256  # real ESP packets of the tunnel captured on the left veth during the clean run
FLOOD_CAPTURE_MIN_BYTES = 1000  # IP packets this long or longer: data segments, a full ICV check each
FLOOD_SEQ = 0x7FFF0000  # forged sequence numbers start here: right of any window, so the ICV decides
UNKNOWN_SPI = b"\x99\x99\x99\x99"
FLOOD_TAIL = 0.25  # seconds the flood lasts beyond -t (iperf3 connects before its clock starts)
FLOOD_BURST = 64  # packets of one kind sent before the next kind's turn
FLOOD_IDLE = 0.0002  # seconds the flooder sleeps when no packet is due
FLOOD_SETTLE = 0.3  # seconds for the gateway to drain its queues before its counters are read
NATT_PORT = 4500
FLOOD_PATHS = ("strongswan", "ikev2lib")  # the paths flooded, in this order (ikev2lib-strongswan: --flood-all)
CONTROL_PATHS = ("ikev2lib",)  # paths that also get the control flood (all of them with --flood-all)
CONTROL_PROTO = 253  # IP protocol of the control flood (RFC 3692 experimental): no socket takes it
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
FLOOD_DIRECTION = ("iperf3 -R: the right side sends the TCP stream, the left gateway receives and decrypts it and "
                   "is the one flooded (from the right namespace, source = the right gateway's outer address)")


def capture_esp(interface: str, udp: bool, count: int, min_bytes: int, timeout: float) -> list[bytes]:
    """Up to `count` packets of the tunnel's ESP addressed to this side, seen on `interface` (AF_PACKET,
    in the namespace), each as its IP payload: the ESP packet, or UDP header + ESP for ESP in UDP/4500
    (non-ESP marker excluded). Only IP packets of `min_bytes` or more."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    found: list[bytes] = []
    try:
        sock.bind((interface, 0))
        sock.settimeout(0.2)
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            try:
                packet, meta = sock.recvfrom(70000)
            except TimeoutError:
                continue
            if meta[2] != socket.PACKET_HOST or len(packet) < max(min_bytes, 20):
                continue
            payload = packet[(packet[0] & 0x0F) * 4:]
            if udp:
                if packet[9] != 17 or len(payload) < 16 or int.from_bytes(payload[2:4], "big") != NATT_PORT \
                        or payload[8:12] == bytes(4):
                    continue
            elif packet[9] != 50:
                continue
            found.append(bytes(payload))
    finally:
        sock.close()
    return found


def flood_packets(captured: list[bytes], udp: bool) -> dict[str, list[bytes]]:
    """The three kinds built from captured ESP (IP payloads): the sequence number moved far ahead
    (authentic-looking, fails the ICV), the packets as captured (replays), an SPI nobody holds."""
    off = 8 if udp else 0  # ESP starts after the UDP header

    def no_checksum(p: bytes) -> bytes:  # a changed UDP payload: checksum 0 (none, allowed over IPv4)
        return p[:6] + b"\x00\x00" + p[8:] if udp else p

    forged = [no_checksum(p[:off + 4] + ((FLOOD_SEQ + i) & 0xFFFFFFFF).to_bytes(4, "big") + p[off + 8:])
              for i, p in enumerate(captured)]
    unknown = [no_checksum(p[:off] + UNKNOWN_SPI + p[off + 4:]) for p in captured]
    return {"forged": forged, "replayed": list(captured), "unknown_spi": unknown}


def _drop_all_input(sock: socket.socket) -> None:
    """A classic BPF program returning 0 on `sock`: a raw socket sending the flood queues no copy of
    what its namespace receives."""
    import ctypes

    program = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF_RET | BPF_K, 0
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", 1, ctypes.addressof(program)))


def send_flood(src: str, dst: str, proto: int, packets: dict[str, list[bytes]], rate: int,
               seconds: float) -> dict[str, Any]:
    """Send each kind's packets in turn (cycling through its list) at up to `rate` packets/s per kind for
    `seconds`, on a raw socket of IP protocol `proto` (50: ESP; 17: UDP, the packets carry their UDP
    header): at most rate * seconds packets per kind, and never past `seconds`. Returns what was sent."""
    limit = int(rate * seconds)
    attempts = dict.fromkeys(packets, 0)
    sent = dict.fromkeys(packets, 0)
    errors: dict[str, int] = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
    try:
        _drop_all_input(sock)
        sock.bind((src, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        cpu0, started = time.process_time(), time.perf_counter()
        elapsed = 0.0
        while elapsed < seconds:
            due_any = False
            for kind, batch in packets.items():
                n = min(min(int(elapsed * rate) + 1, limit) - attempts[kind], FLOOD_BURST)
                for _ in range(max(n, 0)):
                    try:
                        sock.sendto(batch[attempts[kind] % len(batch)], (dst, 0))
                        sent[kind] += 1
                    except OSError as exc:  # e.g. ENOBUFS: not sent, still counted against the bound
                        errors[exc.strerror or str(exc)] = errors.get(exc.strerror or str(exc), 0) + 1
                    attempts[kind] += 1
                due_any = due_any or n > 0
            if not due_any:
                time.sleep(FLOOD_IDLE)
            elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu0
    finally:
        sock.close()
    return {"sent": sent, "send_errors": errors, "seconds": elapsed, "cpu_seconds": cpu}


def socket_drops() -> dict[str, int]:
    """Packets the kernel dropped at this namespace's raw ESP sockets and UDP/4500 sockets (full
    receive buffers), from /proc/net/raw and /proc/net/udp (their `drops` column)."""
    out = {"raw_esp": 0, "udp_4500": 0}
    for table, key, port in (("raw", "raw_esp", 50), ("udp", "udp_4500", NATT_PORT)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                out[key] += int(fields[-1])
    return out


def gateway_drops(gateway: RunningGateway) -> dict[str, dict[str, int]]:
    """The gateway's drop counters: CONNECTION's (`tunnel`) and those no connection owns (`gateway`)."""
    datapath = gateway.status()["datapath"]
    return {"tunnel": dict(datapath["traffic"].get(CONNECTION, {}).get("drops", {})),
            "gateway": dict(datapath["drops"])}


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))
            if after.get(k, 0) != before.get(k, 0)}


def reverse_tcp(run: dict[str, Any]) -> dict[str, Any]:
    """The figures of an iperf3 -R TCP run: Mbit/s received by the left client, the right server's
    retransmissions, the tunnel processes' CPU share."""
    return {"mbit_s": run["client"]["end"]["sum_received"]["bits_per_second"] / 1e6,
            "retransmits": run["server"]["end"].get("sum_sent", {}).get("retransmits"), "cpu": run["cpu"]}


def measure_flood(tunnel: Tunnel, seconds: float, rate: int, control: bool) -> dict[str, Any]:
    """TCP (iperf3 -R) through `tunnel` without, then with, the flood arriving at the left side; the
    clean run also captures the real ESP the flood is made of. For an ikev2lib left side, the
    gateway's drop counters before and after the flooded run, and what they counted per kind.

    `control`: one more run between the two with the same packets at the same rate sent as IP protocol
    CONTROL_PROTO, which the left kernel discards after its IP input (no socket, no gateway): what the
    flooder and the kernel cost on these shared cores, so that flooded / control is the part of the
    loss due to the gateway handling the drops."""
    left, right, udp = tunnel.pair.left, tunnel.pair.right, tunnel.esp_in_udp
    clean = iperf_run(tunnel, seconds, ["-R"], alongside=lambda: left.start(
        capture_esp, tunnel.pair.left_if, udp, FLOOD_CAPTURE, FLOOD_CAPTURE_MIN_BYTES, seconds))
    captured: list[bytes] = clean["alongside"]
    if not captured:
        raise MeasureError(f"no {'UDP/4500' if udp else 'raw'} ESP of {FLOOD_CAPTURE_MIN_BYTES} B or more "
                           f"captured on {tunnel.pair.left_if} during the clean run")
    packets = flood_packets(captured, udp)
    control_row = None
    if control:
        time.sleep(SETTLE_SECONDS)
        control_run = iperf_run(tunnel, seconds, ["-R"], alongside=lambda: right.start(
            send_flood, tunnel.pair.right_addr, tunnel.pair.left_addr, CONTROL_PROTO, packets, rate,
            seconds + FLOOD_TAIL))
        sent_control = control_run["alongside"]
        control_row = {**reverse_tcp(control_run), "sent": sent_control["sent"],
                       "flooder_cpu": sent_control["cpu_seconds"] / sent_control["seconds"]}
    time.sleep(SETTLE_SECONDS)
    before = gateway_drops(tunnel.gateway) if tunnel.gateway else None
    kernel_before: dict[str, int] = left.call(socket_drops)
    flooded = iperf_run(tunnel, seconds, ["-R"], alongside=lambda: right.start(
        send_flood, tunnel.pair.right_addr, tunnel.pair.left_addr, 17 if udp else 50, packets, rate,
        seconds + FLOOD_TAIL))
    time.sleep(FLOOD_SETTLE)
    kernel_after: dict[str, int] = left.call(socket_drops)
    after = gateway_drops(tunnel.gateway) if tunnel.gateway else None
    sent: dict[str, Any] = flooded["alongside"]
    ping_after = tunnel.ping(QUICK_PING_COUNT)  # the tunnel still carries traffic once the flood is over
    clean_tcp, flooded_tcp = reverse_tcp(clean), reverse_tcp(flooded)
    row: dict[str, Any] = {
        "esp": "UDP/4500" if udp else "raw ESP (IP protocol 50)", "captured": len(captured),
        "captured_bytes_avg": sum(map(len, captured)) / len(captured),
        "clean": clean_tcp, "flooded": flooded_tcp,
        "ratio": flooded_tcp["mbit_s"] / clean_tcp["mbit_s"] if clean_tcp["mbit_s"] else None,
        "control": control_row,
        "ratio_vs_control": (flooded_tcp["mbit_s"] / control_row["mbit_s"]
                             if control_row and control_row["mbit_s"] else None),
        "sent": sent["sent"], "send_errors": sent["send_errors"], "flood_seconds": sent["seconds"],
        "sent_pps": {kind: n / sent["seconds"] for kind, n in sent["sent"].items()},
        "flooder_cpu": sent["cpu_seconds"] / sent["seconds"],
        "kernel_socket_drops": _delta(kernel_after, kernel_before), "ping_after": ping_after,
        "counted": None, "counted_minus_sent": None, "gateway_drops_before": before, "gateway_drops_after": after,
    }
    if before is not None and after is not None:
        tunnel_delta = _delta(after["tunnel"], before["tunnel"])
        gateway_delta = _delta(after["gateway"], before["gateway"])
        counted = {"forged": tunnel_delta.get("icv", 0),
                   "replayed": tunnel_delta.get("replay", 0) + tunnel_delta.get("window", 0),
                   "unknown_spi": gateway_delta.get("no_sa", 0)}
        row["counted"] = counted
        row["counted_minus_sent"] = {kind: counted[kind] - sent["sent"][kind] for kind in FLOOD_KINDS}
        row["kernel_drops_vs_missing"] = {
            "missing": -sum(row["counted_minus_sent"].values()),
            "kernel_socket_drops": sum(row["kernel_socket_drops"].values())}
        row["other_drops"] = {**{f"tunnel {k}": v for k, v in tunnel_delta.items()
                                 if k not in ("icv", "replay", "window")},
                              **{f"gateway {k}": v for k, v in gateway_delta.items() if k != "no_sa"}}
    return row


def measure_floods(tunnels: dict[str, Tunnel], names: tuple[str, ...], seconds: float,
                   rate: int, control: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": seconds, "rate_per_kind": rate, "direction": FLOOD_DIRECTION,
                           "paths": {}, "errors": {}}
    for name in names:
        if name not in tunnels:
            continue
        time.sleep(SETTLE_SECONDS)
        try:
            out["paths"][name] = measure_flood(tunnels[name], seconds, rate, name in control)
        except (MeasureError, NetnsError, subprocess.TimeoutExpired, AssertionError, OSError) as exc:
            out["errors"][name] = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
    return out


# --------------------------------------------------------------------------------------------------
# ratios, targets, output


def _figure(row: dict[str, Any] | None, kind: str, key: str) -> float | None:
    if not row or kind not in row:
        return None
    value: float = row[kind][key]
    return value


def ratios(paths: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    out: dict[str, Any] = {"vs_veth": {}}
    for name in PATHS[1:]:
        row = paths.get(name)
        if not row:
            continue
        out["vs_veth"][name] = {}
        for kind, _, key in RUN_KINDS:
            mine, ceiling = _figure(row, kind, key), _figure(paths.get("veth"), kind, key)
            out["vs_veth"][name][kind] = mine / ceiling if mine is not None and ceiling else None
    for name in ("ikev2lib", "ikev2lib-strongswan"):
        mine, theirs = _figure(paths.get(name), "tcp", "mbit_s"), _figure(paths.get("strongswan"), "tcp", "mbit_s")
        out[f"tcp_{name.replace('-', '_')}_vs_strongswan"] = mine / theirs if mine is not None and theirs else None
    # what per-CPU SAs give with several streams: against one SA (ikev2lib) and against strongSwan (no target)
    percpu = _figure(paths.get("ikev2lib-percpu"), "tcp4", "mbit_s")
    for name in ("ikev2lib", "strongswan"):
        theirs = _figure(paths.get(name), "tcp4", "mbit_s")
        out[f"tcp4_ikev2lib_percpu_vs_{name}"] = percpu / theirs if percpu is not None and theirs else None
    # the same pair with both gateways on AF_XDP (no target: the issue's target is xdp_compare's)
    for kind in ("tcp", "udp64"):
        key = "mbit_s" if kind == "tcp" else "received_pps"
        mine, theirs = _figure(paths.get("ikev2lib-xdp"), kind, key), _figure(paths.get("ikev2lib"), kind, key)
        out[f"{kind}_ikev2lib_xdp_vs_ikev2lib"] = mine / theirs if mine is not None and theirs else None
    return out


def check_targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    measured = report["ratios"]["tcp_ikev2lib_vs_strongswan"]
    baseline = "strongSwan <-> strongSwan (kernel-libipsec) TCP, same run (alternating rounds)"
    out = {}
    for name, threshold in (("tcp_ikev2lib_vs_strongswan", TARGET_TCP_VS_STRONGSWAN),
                            ("tcp_ikev2lib_vs_strongswan_stretch", STRETCH_TCP_VS_STRONGSWAN)):
        out[name] = {"measured": measured, "target": f">= {threshold}", "baseline": baseline,
                     "met": None if measured is None else measured >= threshold}
    flood = (report.get("flood") or {}).get("paths", {}).get("ikev2lib")
    measured = flood["ratio"] if flood else None
    out["tcp_under_flood_vs_clean"] = {
        "measured": measured, "target": f">= {TARGET_TCP_UNDER_FLOOD}",
        "baseline": "the same ikev2lib path's TCP (iperf3 -R) without the flood, the run just before",
        "met": None if measured is None else measured >= TARGET_TCP_UNDER_FLOOD}
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _cpu_text(run: dict[str, Any]) -> str:
    parts = [f"{label} {_fmt(share, '.2f')}" for label, share in run["cpu"].items()]
    util = run["iperf3_cpu_percent"]
    parts.append(f"iperf3 client {_fmt(util['client'], '.0f')}% server {_fmt(util['server'], '.0f')}%")
    return ", ".join(parts)


def print_report(report: dict[str, Any]) -> None:
    rounds = f"best of {report['rounds']} alternating rounds" if report["rounds"] else "no rounds (--flood-only)"
    print(f"== iperf3 through each path: {report['seconds']:g} s per run, {rounds}; "
          "UDP: received packets/s at the server (loss)")
    print(f"  {'path':20} {'TCP Mbit/s':>11} {f'TCP x{TCP_STREAMS} Mbit/s':>14} {'UDP 64 B pps':>13} {'loss':>6} "
          f"{'UDP 1400 B pps':>15} {'loss':>6} {'ping avg ms':>12} {'inner MTU':>9}")
    for name in PATHS:
        row = report["paths"].get(name)
        if row is None:
            if report["not_run"].get(name, "").startswith("not selected"):
                continue
            if name in report["not_run"]:
                print(f"  {name:20} not run: {report['not_run'][name]}")
            continue
        cells = [_fmt(_figure(row, kind, "mbit_s"), ".0f") for kind in ("tcp", "tcp4")]
        for size in UDP_PAYLOADS:
            udp = row.get(f"udp{size}")
            cells += [_fmt(udp["received_pps"] if udp else None, ",.0f"),
                      (_fmt(udp["loss_percent"], ".1f") + "%") if udp and udp["loss_percent"] is not None else "-"]
        ping = row["ping"]
        print(f"  {name:20} {cells[0]:>11} {cells[1]:>14} {cells[2]:>13} {cells[3]:>6} {cells[4]:>15} {cells[5]:>6} "
              f"{_fmt(ping.get('rtt_avg_ms'), '.3f'):>12} {_fmt(row['route']['mtu'], 'd'):>9}")
    print("== CPU share over the best run (1.0 = one core)")
    for name in PATHS:
        row = report["paths"].get(name)
        if row is None:
            continue
        for kind, _, _ in RUN_KINDS:
            if kind in row:
                print(f"  {name:20} {kind:8} {_cpu_text(row[kind])}")
        for error in row.get("errors", []):
            print(f"  {name:20} error: {error}")
        ping, after = row["ping"], row["ping_after"]
        print(f"  {name:20} ping {ping['received']}/{ping['sent']} before, {after['received']}/{after['sent']} after; "
              f"route via {row['route']['device']}")
    r = report["ratios"]
    print("== ratios")
    for name, kinds in r["vs_veth"].items():
        print(f"  {name:20} / veth: " + ", ".join(f"{kind} {_fmt(v, '.3f')}" for kind, v in kinds.items()))
    for name in ("ikev2lib", "ikev2lib_strongswan"):
        print(f"  TCP {name} / strongswan: {_fmt(r[f'tcp_{name}_vs_strongswan'], '.2f')}")
    for name in ("ikev2lib", "strongswan"):
        print(f"  TCP x{TCP_STREAMS} ikev2lib_percpu / {name}: {_fmt(r[f'tcp4_ikev2lib_percpu_vs_{name}'], '.2f')}")
    print(f"  ikev2lib_xdp / ikev2lib: TCP {_fmt(r['tcp_ikev2lib_xdp_vs_ikev2lib'], '.2f')}, "
          f"UDP 64 B {_fmt(r['udp64_ikev2lib_xdp_vs_ikev2lib'], '.2f')}")
    core = report["esp_core"]
    print(f"== the ESP core's own batch rate, same run: {core['batch_encap_pps']:,.0f} packets/s of "
          f"{core['packet_bytes']} B on one core; the ikev2lib TCP run reaches "
          f"{_fmt(core['tcp_share'], '.1%')} of it (one direction, full-size segments)")
    if report["profile"]:
        print("== perf profile of the left ikev2lib gateway during a TCP run (share of its samples)")
        print("\n".join(f"  {line}" for line in report["profile"]))
    if report.get("flood"):
        print_flood(report["flood"])
    print("== targets (same-run ratios)")
    for name, t in report["targets"].items():
        verdict = {True: "met", False: "NOT met", None: "-"}[t["met"]]
        print(f"  {name:36} {_fmt(t['measured'], '.2f'):>8}  target {t['target']:<6} {verdict:8} vs {t['baseline']}")


def print_flood(flood: dict[str, Any]) -> None:
    print(f"== hostile traffic under load: TCP {flood['seconds']:g} s, {flood['direction']}; flood of up to "
          f"{flood['rate_per_kind']:,} packets/s per kind (forged = sequence number moved ahead, fails the ICV; "
          "replayed = captured packets again; unknown SPI)")
    print(f"  {'path':20} {'clean Mbit/s':>12} {'flooded':>8} {'ratio':>6}  sent packets/s forged / replayed / "
          "unknown SPI (flooder CPU)")
    for name, row in flood["paths"].items():
        pps = " / ".join(_fmt(row["sent_pps"][kind], ",.0f") for kind in FLOOD_KINDS)
        print(f"  {name:20} {row['clean']['mbit_s']:>12.0f} {row['flooded']['mbit_s']:>8.0f} "
              f"{_fmt(row['ratio'], '.2f'):>6}  {pps} ({row['flooder_cpu']:.2f} core, {row['esp']}, "
              f"{row['captured']} captured of {row['captured_bytes_avg']:.0f} B)")
        control = row["control"]
        if control is not None:
            print(f"  {'':20} control flood (same packets and rate as IP protocol {CONTROL_PROTO}, discarded by the "
                  f"left kernel): {control['mbit_s']:.0f} Mbit/s ({control['mbit_s'] / row['clean']['mbit_s']:.2f} of "
                  f"clean; flooder {control['flooder_cpu']:.2f} core); flooded / control "
                  f"{_fmt(row['ratio_vs_control'], '.2f')}")
        cpu = ", ".join(f"{label} {_fmt(share, '.2f')}" for label, share in row["flooded"]["cpu"].items())
        print(f"  {'':20} CPU flooded: {cpu}; retransmits clean {row['clean']['retransmits']}, "
              f"flooded {row['flooded']['retransmits']}; ping after {row['ping_after']['received']}/"
              f"{row['ping_after']['sent']}")
        if row["counted"] is not None:
            counted = ", ".join(f"{kind} {row['counted'][kind]:,}/{row['sent'][kind]:,}" for kind in FLOOD_KINDS)
            diff = {kind: d for kind, d in row["counted_minus_sent"].items() if d}
            print(f"  {'':20} counted by the gateway / sent: {counted} "
                  f"({'all counted' if not diff else f'difference {diff}'}; "
                  f"other drops {row['other_drops'] or 'none'})")
        else:
            print(f"  {'':20} no drop counters (charon)")
        if row["send_errors"] or row["kernel_socket_drops"]:
            print(f"  {'':20} send errors {row['send_errors'] or 'none'}; kernel socket drops at the left "
                  f"{row['kernel_socket_drops'] or 'none'}")
    for name, error in flood["errors"].items():
        print(f"  {name:20} error: {error}")


CORE_PACKET = 1406  # the inner MTU of the ikev2lib path: what a full-size TCP segment is
CORE_BATCH = 64
CORE_SECONDS = 1.0
PROFILE_SECONDS = 3.0
PROFILE_LINES = 20
PERF = shutil.which("perf")


def esp_core_rate(seconds: float = CORE_SECONDS) -> float:
    """Packets/s of the C ESP core's batch encapsulation of CORE_PACKET-byte packets on one core, in
    this run: the ceiling the tunnel's share is measured against."""
    from array import array

    from ikev2lib.esp import EspSA

    sa = EspSA(0x1000, "aes128gcm16", bytes(20), "outbound")
    packet = b"\x45" + bytes(CORE_PACKET - 1)
    buf = bytearray(packet * CORE_BATCH)
    offs = array("I", [i * CORE_PACKET for i in range(CORE_BATCH)])
    lens = array("I", [CORE_PACKET] * CORE_BATCH)
    out = bytearray(len(buf) + CORE_BATCH * 128)
    out_offs, out_lens, statuses = array("I", bytes(4 * CORE_BATCH)), array("I", bytes(4 * CORE_BATCH)), bytearray(CORE_BATCH)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        sa.encap_batch(buf, offs, lens, out, out_offs, out_lens, statuses)
        done += CORE_BATCH
    return done / (time.perf_counter() - started)


def profile_gateway(tunnel: Tunnel, seconds: float = PROFILE_SECONDS) -> list[str]:
    """`perf` samples of the left gateway's process (its C workers and the IKE loop) during one TCP run:
    where the data path spends its time. Empty without perf."""
    pid = tunnel.processes.get("gateway left")
    if PERF is None or pid is None:
        return []
    data = Path(tempfile.mkdtemp(prefix="tunnel-profile-")) / "perf.data"
    recorder = subprocess.Popen([PERF, "record", "-q", "-F", "999", "-p", str(pid), "-o", str(data), "--",
                                 "sleep", f"{seconds:g}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        iperf_run(tunnel, seconds, [])
    except (MeasureError, NetnsError, subprocess.TimeoutExpired):
        pass
    recorder.wait(timeout=seconds + IPERF_MARGIN)
    report = subprocess.run([PERF, "report", "-q", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,symbol",
                             "--percent-limit", "1"], capture_output=True, text=True, timeout=60, check=False).stdout
    shutil.rmtree(data.parent, ignore_errors=True)
    return [line.strip() for line in report.splitlines() if line.strip() and not line.startswith("#")][:PROFILE_LINES]


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM (e.g. from a timeout) becomes SystemExit, so that the cleanup below still runs."""
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(selected: list[str], seconds: float, rounds: int, ping_count: int, profile: bool = False,
        flood: tuple[str, ...] = (), flood_rate: int = DEFAULT_FLOOD_RATE,
        control: tuple[str, ...] = CONTROL_PATHS) -> dict[str, Any]:
    paths: dict[str, dict[str, Any] | None] = dict.fromkeys(PATHS)
    not_run = {name: "not selected (--only)" for name in PATHS if name not in selected}
    tunnels: dict[str, Tunnel] = {}
    work = Path(tempfile.mkdtemp(prefix="tunnel-compare-"))
    with terminate_as_exit(), contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        if not os.path.exists(IPERF):
            raise SystemExit(f"{IPERF} not found (apt iperf3)")
        require_root()
        for name in selected:
            # each path gets its own stack, so that a path that fails to come up is torn down at once
            path_stack = contextlib.ExitStack()
            stack.push(path_stack.__exit__)
            try:
                tunnels[name] = SETUPS[name](path_stack, work)
            except (NotAvailable, CharonError, NetnsError, subprocess.TimeoutExpired, OSError) as exc:
                not_run[name] = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
                if not isinstance(exc, NotAvailable):
                    not_run[name] = f"{type(exc).__name__}: {not_run[name]}"
                path_stack.close()
        paths.update(measure(tunnels, seconds, rounds, ping_count))
        flooded = measure_floods(tunnels, flood, seconds, flood_rate, control) if flood else None
        worker_profile = profile_gateway(tunnels["ikev2lib"]) if profile and "ikev2lib" in tunnels else []
    report: dict[str, Any] = {"seconds": seconds, "rounds": rounds, "paths": paths, "not_run": not_run,
                              "flood": flooded}
    core = esp_core_rate()
    tcp = _figure(paths.get("ikev2lib"), "tcp", "mbit_s")
    report["esp_core"] = {"batch_encap_pps": core, "packet_bytes": CORE_PACKET,
                          "tcp_share": None if tcp is None else tcp * 1e6 / 8 / CORE_PACKET / core}
    report["profile"] = worker_profile
    report["ratios"] = ratios(paths)
    report["targets"] = check_targets(report)
    report["targets_met"] = {name: t["met"] for name, t in report["targets"].items()}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="iperf3 -t of each run")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="alternating rounds (best kept)")
    parser.add_argument("--quick", action="store_true", help="1 s runs, one round (smoke test)")
    parser.add_argument("--only", action="append", choices=PATHS, help="measure only this path (repeatable)")
    parser.add_argument("--profile", action="store_true", help="perf profile of the ikev2lib gateway in a TCP run")
    parser.add_argument("--flood", action=argparse.BooleanOptionalAction, default=True,
                        help="TCP without and with forged / replayed / unknown-SPI ESP arriving at the left side "
                             f"({', '.join(FLOOD_PATHS)}; default on)")
    parser.add_argument("--flood-all", action="store_true",
                        help="flood ikev2lib-strongswan too, and give every flooded path the control flood")
    parser.add_argument("--flood-only", action="store_true", help="no alternating rounds: setup, ping, the flood runs")
    parser.add_argument("--flood-rate", type=int, default=DEFAULT_FLOOD_RATE, help="flood packets/s per kind")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = QUICK_SECONDS, 1
    if not 0 < args.seconds <= MAX_SECONDS or not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS:g}] and --rounds in [1, {MAX_ROUNDS}]")
    if not 1 <= args.flood_rate <= MAX_FLOOD_RATE:
        parser.error(f"--flood-rate must be in [1, {MAX_FLOOD_RATE:,}]")
    selected = [name for name in PATHS if name in (args.only or PATHS)]
    flood = (*FLOOD_PATHS, *(("ikev2lib-strongswan",) if args.flood_all else ())) if args.flood else ()
    if args.flood_only:
        if not flood:
            parser.error("--flood-only with --no-flood measures nothing")
        args.rounds = 0
    report = run(selected, args.seconds, args.rounds, QUICK_PING_COUNT if args.quick else PING_COUNT, args.profile,
                 flood, args.flood_rate, flood if args.flood_all else CONTROL_PATHS)
    print_report(report)
    print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()
