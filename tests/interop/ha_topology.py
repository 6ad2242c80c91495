"""Four namespaces on one Ethernet LAN for the active-passive HA tests (`test_ha_failover.py`).

`HaTopology` builds:

- `lan`: a Linux bridge (STP off, forward delay 0) with 192.0.2.250/24 on it, and a single-member
  etcd (Debian's /usr/bin/etcd, the raft timings of `tests/ha/etcd.py`) listening on
  192.0.2.250:2379 (clients) and :2380 (peers), its data directory on tmpfs (/dev/shm) so fsync is
  cheap;
- `peer` (192.0.2.2/24; strongSwan runs here), `gw-a` (192.0.2.11/24) and `gw-b` (192.0.2.12/24),
  each joined to the bridge by a veth pair (the bridge-side end sits in `lan`).

IPv6 is off in all four, rp_filter off, `promote_secondaries` on. The service address
192.0.2.1/24 is put on nobody: whichever gateway leads adds it to its LAN interface and sends a
gratuitous ARP (the harness moves nothing itself; `send_gratuitous_arp` exists to validate the
LAN). `neighbour()` reads the neighbour entry of an address in `peer`, `owner_of()` maps its MAC
to a gateway, `holders()` says which gateway namespaces have the service address configured.

`kill_leader`, `sigstop`, `sigcont` signal a `RunningGateway`'s process (the Python process:
`ip netns exec` execs it in place; the ESP workers are threads of it) and return the wall-clock
time (`time.time()`, the clock of `ping -D` and of the captures) just before the signal.

`PingRun` runs `ping -D` in a namespace in the background (output to a file, so a full pipe never
stalls it) and `Outage` measures the interruption around a moment from its timestamps.
`read_frames` / `esp_frames` / `ike_frames` read a `capture.Capture` pcap with the Ethernet
source address kept (which gateway sent a frame, when both use 192.0.2.1).

Leaving the context manager kills etcd and everything started in the namespaces, deletes the
namespaces (the veths and the bridge go with them) and the etcd data directory.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ha.etcd import ELECTION_MS, ETCD, HEARTBEAT_MS, etcd_problem

from .capture import LINKTYPE_ETHERNET, MAX_PCAP_BYTES, NON_ESP_MARKER, PCAP_MAGIC_LE, _PCAP_HEADER, _PCAP_RECORD
from .gateway_process import RunningGateway
from .netns import IP, Namespace, NetnsError, _run_checked, require_root, stop_process

LAN_NET = "192.0.2.0/24"
PREFIX_LEN = 24
SERVICE_ADDR = "192.0.2.1"
PEER_ADDR = "192.0.2.2"
GW_A_ADDR = "192.0.2.11"
GW_B_ADDR = "192.0.2.12"
LAN_ADDR = "192.0.2.250"  # the bridge; etcd listens here
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
ETCD_ENDPOINT = f"{LAN_ADDR}:{ETCD_CLIENT_PORT}"
ETCD_START_TIMEOUT = 20.0  # seconds for etcd to answer /health
ETCD_STOP_TIMEOUT = 10.0  # seconds after SIGTERM before SIGKILL
ETCD_HEALTH_TIMEOUT = 1.0  # one /health request
TMPFS = "/dev/shm"  # etcd's data directory goes here when it is a tmpfs
IFNAME_MAX = 15
SYSCTLS = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
           "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
           "net.ipv4.conf.all.promote_secondaries=1", "net.ipv4.conf.default.promote_secondaries=1")
SIGNAL_REAP_TIMEOUT = 10.0  # seconds for a killed gateway to be reaped
PING_LINE = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [^:]+: icmp_seq=(\d+)", re.M)
ETH_P_ARP = 0x0806
IPPROTO_ESP = 50
ESP_IN_UDP_PORT = 4500
IKE_EXCHANGES = {34: "IKE_SA_INIT", 35: "IKE_AUTH", 36: "CREATE_CHILD_SA", 37: "INFORMATIONAL",
                 43: "IKE_INTERMEDIATE", 44: "IKE_FOLLOWUP_KE"}


class HaTopologyError(NetnsError):
    """The HA topology or its etcd could not be set up."""


# ---------------------------------------------------------------------------------------------
# etcd inside the `lan` namespace


def _etcd_health(url: str) -> bool:
    """Runs inside the namespace: etcd's /health says true."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=ETCD_HEALTH_TIMEOUT) as reply:
            return bool(json.loads(reply.read()).get("health") == "true")
    except (urllib.error.URLError, OSError, ValueError):
        return False


class LanEtcd:
    """One etcd member in `ns` on `address`, data directory `data_dir`, log `log_path`. Same flags as
    `tests/ha/etcd.py` (its Member binds 127.0.0.1 in the root namespace, which the gateway
    namespaces cannot reach). `stop()` / `start()` again keep the data (initial-cluster-state
    existing): the leases and keys survive, as with a real restart."""

    def __init__(self, ns: Namespace, address: str, data_dir: Path, log_path: Path, name: str = "lan0") -> None:
        self.ns = ns
        self.address = address
        self.data_dir = data_dir
        self.log_path = log_path
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = f"ikev2lib-ha-{secrets.token_hex(4)}"

    @property
    def client_url(self) -> str:
        return f"http://{self.address}:{ETCD_CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.address}:{ETCD_PEER_PORT}"

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{ETCD_CLIENT_PORT}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = ETCD_START_TIMEOUT) -> LanEtcd:
        if self.running():
            raise HaTopologyError("etcd is already running")
        state = "existing" if (self.data_dir / "member").exists() else "new"
        args = [
            ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", f"{self.name}={self.peer_url}", "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
            "--logger", "zap", "--log-level", "warn",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = self.ns.popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait_healthy(timeout)
        return self

    def healthy(self) -> bool:
        if not self.running():
            return False
        return bool(self.ns.call(_etcd_health, self.client_url, timeout=ETCD_HEALTH_TIMEOUT + 5))

    def wait_healthy(self, timeout: float = ETCD_START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if not self.running():
                raise HaTopologyError(f"etcd exited ({self.proc and self.proc.returncode}):\n{self.tail_log()}")
            if time.monotonic() > deadline:
                raise HaTopologyError(f"etcd not healthy after {timeout:.0f} s:\n{self.tail_log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (then SIGKILL); the data directory stays for `start()`."""
        if self.proc is not None:
            stop_process(self.proc, grace=ETCD_STOP_TIMEOUT)
            if self.proc in self.ns.processes:
                self.ns.processes.remove(self.proc)
            self.proc = None

    def tail_log(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no etcd log)"


# ---------------------------------------------------------------------------------------------
# The topology


@dataclass
class LanNode:
    """One namespace on the LAN: its veth end `ifname` (with `address`), the bridge port `port`."""

    name: str  # "peer", "gw-a", "gw-b": also the HA node name of a gateway
    ns: Namespace
    ifname: str
    port: str  # the other end of the veth, a port of the bridge in `lan`
    address: str

    @property
    def mac(self) -> str:
        info = json.loads(self.ns.ip("-j", "link", "show", "dev", self.ifname))
        return str(info[0]["address"]).lower()

    def addresses(self) -> list[str]:
        """The IPv4 addresses (with prefix) on the LAN interface."""
        info = json.loads(self.ns.ip("-j", "-4", "addr", "show", "dev", self.ifname))
        return [f"{a['local']}/{a['prefixlen']}" for entry in info for a in entry.get("addr_info", [])]

    def has(self, address: str) -> bool:
        return any(a.split("/")[0] == address for a in self.addresses())


@dataclass(frozen=True)
class Neighbour:
    address: str
    mac: str | None  # None: no link-layer address (INCOMPLETE / FAILED)
    state: tuple[str, ...]


class HaTopology:
    """peer, gw-a, gw-b on one bridge in `lan` (with etcd); use as a context manager."""

    def __init__(self, work_dir: Path, tag: str | None = None, etcd: bool = True) -> None:
        self.tag = tag or secrets.token_hex(3)
        self.work_dir = Path(work_dir)
        self.with_etcd = etcd
        self.names = {"peer": f"ikt-{self.tag}-p", "gw-a": f"ikt-{self.tag}-a", "gw-b": f"ikt-{self.tag}-b",
                      "lan": f"ikt-{self.tag}-lan"}
        self.bridge = f"br{self.tag}"
        self._ifs = {"peer": (f"vk{self.tag}p", f"vk{self.tag}pb", PEER_ADDR),
                     "gw-a": (f"vk{self.tag}a", f"vk{self.tag}ab", GW_A_ADDR),
                     "gw-b": (f"vk{self.tag}b", f"vk{self.tag}bb", GW_B_ADDR)}
        for ifname, port, _ in self._ifs.values():
            if max(len(ifname), len(port), len(self.bridge)) > IFNAME_MAX:
                raise HaTopologyError(f"tag {self.tag!r} too long for interface names")
        self._namespaces: dict[str, Namespace] = {}
        self.nodes: dict[str, LanNode] = {}
        self.etcd: LanEtcd | None = None
        self._etcd_dir: Path | None = None

    # -- accessors ------------------------------------------------------------------------------

    @property
    def lan(self) -> Namespace:
        return self._ns("lan")

    @property
    def peer(self) -> LanNode:
        return self._node("peer")

    @property
    def gw_a(self) -> LanNode:
        return self._node("gw-a")

    @property
    def gw_b(self) -> LanNode:
        return self._node("gw-b")

    @property
    def gateways(self) -> tuple[LanNode, LanNode]:
        return self.gw_a, self.gw_b

    def _ns(self, role: str) -> Namespace:
        ns = self._namespaces.get(role)
        if ns is None:
            raise HaTopologyError("HA topology not set up")
        return ns

    def _node(self, role: str) -> LanNode:
        node = self.nodes.get(role)
        if node is None:
            raise HaTopologyError("HA topology not set up")
        return node

    # -- lifecycle ------------------------------------------------------------------------------

    def setup(self) -> HaTopology:
        require_root()
        if self.with_etcd:
            problem = etcd_problem()
            if problem is not None:
                raise HaTopologyError(problem)
        for addr in (SERVICE_ADDR, PEER_ADDR, GW_A_ADDR, GW_B_ADDR, LAN_ADDR):
            assert ipaddress.ip_address(addr) in ipaddress.ip_network(LAN_NET)
        try:
            for role, name in self.names.items():
                self._namespaces[role] = ns = Namespace.create(name)
                ns.run(["sysctl", "-qw", *SYSCTLS])  # before the links: no IPv6 on them at all
            lan = self.lan
            lan.ip("link", "add", self.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            lan.ip("addr", "add", f"{LAN_ADDR}/{PREFIX_LEN}", "dev", self.bridge)
            lan.ip("link", "set", self.bridge, "up")
            for role, (ifname, port, addr) in self._ifs.items():
                ns = self._namespaces[role]
                _run_checked([IP, "link", "add", ifname, "netns", ns.name, "type", "veth",
                              "peer", "name", port, "netns", lan.name])
                lan.ip("link", "set", port, "master", self.bridge)
                lan.ip("link", "set", port, "up")
                ns.ip("addr", "add", f"{addr}/{PREFIX_LEN}", "dev", ifname)
                ns.ip("link", "set", ifname, "up")
                self.nodes[role] = LanNode(role, ns, ifname, port, addr)
            if self.with_etcd:
                self.start_etcd()
        except BaseException:
            self.close()
            raise
        return self

    def start_etcd(self) -> LanEtcd:
        if self.etcd is None:
            base = TMPFS if os.path.isdir(TMPFS) and os.access(TMPFS, os.W_OK) else str(self.work_dir)
            self._etcd_dir = Path(tempfile.mkdtemp(prefix=f"ikev2lib-ha-etcd-{self.tag}-", dir=base))
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self.etcd = LanEtcd(self.lan, LAN_ADDR, self._etcd_dir / "data", self.work_dir / "etcd.log")
        return self.etcd.start()

    def close(self) -> None:
        if self.etcd is not None:
            self.etcd.stop()
        for role in ("peer", "gw-a", "gw-b", "lan"):
            ns = self._namespaces.pop(role, None)
            if ns is not None:
                ns.close()
        self.nodes.clear()
        if self._etcd_dir is not None:
            shutil.rmtree(self._etcd_dir, ignore_errors=True)
            self._etcd_dir = None

    def __enter__(self) -> HaTopology:
        return self.setup()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- the service address --------------------------------------------------------------------

    def neighbour(self, address: str = SERVICE_ADDR, node: LanNode | None = None) -> Neighbour | None:
        """The neighbour entry of `address` in `node` (default: peer), None if there is none."""
        node = node or self.peer
        entries = json.loads(node.ns.ip("-j", "-4", "neigh", "show", address, "dev", node.ifname) or "[]")
        for entry in entries:
            if entry.get("dst") == address:
                mac = entry.get("lladdr")
                return Neighbour(address, str(mac).lower() if mac else None, tuple(entry.get("state", ())))
        return None

    def owner_of(self, address: str = SERVICE_ADDR) -> str | None:
        """Which gateway (node name) the peer's neighbour entry of `address` points at, or None."""
        entry = self.neighbour(address)
        if entry is None or entry.mac is None:
            return None
        for gw in self.gateways:
            if gw.mac == entry.mac:
                return gw.name
        return f"unknown MAC {entry.mac}"

    def wait_owner(self, name: str, timeout: float = 5.0, address: str = SERVICE_ADDR) -> float:
        """Wait (bounded) until the peer's neighbour entry points at gateway `name`; seconds waited."""
        start = time.monotonic()
        while True:
            owner = self.owner_of(address)
            if owner == name:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"peer's neighbour entry of {address} is {self.neighbour(address)} "
                                     f"(owner {owner}), not {name}'s after {timeout} s")
            time.sleep(0.02)

    def holders(self, address: str = SERVICE_ADDR) -> list[str]:
        """The gateways that have `address` on their LAN interface now."""
        return [gw.name for gw in self.gateways if gw.has(address)]

    def bridge_fdb(self) -> dict[str, str]:
        """The bridge's learned MAC addresses -> port name."""
        entries = json.loads(self.lan.run(["bridge", "-j", "fdb", "show", "br", self.bridge]).stdout or "[]")
        return {str(e["mac"]).lower(): e.get("ifname", "") for e in entries
                if "mac" in e and "self" not in e.get("flags", [])}

    def send_gratuitous_arp(self, node: LanNode, address: str = SERVICE_ADDR, count: int = 1) -> None:
        """A gratuitous ARP request (sender = target = `address`) from `node`'s LAN interface, as the
        gateway sends one on takeover; for validating the LAN (the HA test leaves this to the gateway)."""
        node.ns.call(_send_garp, node.ifname, node.mac, address, count)


def _send_garp(ifname: str, mac: str, address: str, count: int) -> None:
    """Runs inside the namespace."""
    hw = bytes.fromhex(mac.replace(":", ""))
    ip = socket.inet_aton(address)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, hw, ip, b"\0" * 6, ip)
    frame = b"\xff" * 6 + hw + struct.pack("!H", ETH_P_ARP) + arp
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((ifname, 0))
        for _ in range(count):
            sock.send(frame)


# ---------------------------------------------------------------------------------------------
# Signals to a gateway


def _signal_gateway(gateway: RunningGateway, sig: signal.Signals) -> float:
    proc = gateway.proc
    if proc.poll() is not None:
        raise AssertionError(f"gateway already exited ({proc.returncode}):\n{gateway.text()}")
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    if b"ikev2lib" not in cmdline:  # `ip netns exec` execs the command in place: this is the gateway
        raise AssertionError(f"pid {proc.pid} is not the gateway: {cmdline!r}")
    at = time.time()
    os.kill(proc.pid, sig)
    return at


def kill_leader(gateway: RunningGateway) -> float:
    """`kill -9` the gateway (its ESP worker threads die with it); the wall-clock time of the kill.
    Its namespace stays as it was: the service address it added stays configured there (a crashed
    process, not a crashed host)."""
    at = _signal_gateway(gateway, signal.SIGKILL)
    gateway.proc.wait(timeout=SIGNAL_REAP_TIMEOUT)
    return at


def sigstop(gateway: RunningGateway) -> float:
    return _signal_gateway(gateway, signal.SIGSTOP)


def sigcont(gateway: RunningGateway) -> float:
    return _signal_gateway(gateway, signal.SIGCONT)


# ---------------------------------------------------------------------------------------------
# ping -D and what it tells about an outage


@dataclass(frozen=True)
class Outage:
    """The interruption of the replies around `event_at` (wall clock)."""

    event_at: float
    last_before: float  # the reply that started the largest gap at or after event_at - slack
    first_after: float  # the reply that ended it
    sent: int
    received: int
    lost_in_gap: int  # icmp_seq numbers missing between those two replies

    @property
    def gap(self) -> float:
        """Seconds from the last reply before the outage to the first one after it."""
        return self.first_after - self.last_before

    @property
    def resume(self) -> float:
        """Seconds from the event to the first reply after the outage."""
        return self.first_after - self.event_at

    def describe(self) -> str:
        return (f"gap {self.gap * 1000:.0f} ms (last reply before -> first reply after), "
                f"first reply {self.resume * 1000:.0f} ms after the event, {self.lost_in_gap} pings lost "
                f"in the gap, {self.received}/{self.sent} answered")


class PingRun:
    """`ping -D -n -i INTERVAL -c COUNT -I SRC DST` in `ns`, in the background, output to `out`."""

    def __init__(self, ns: Namespace, src: str, dst: str, out: Path, *, interval: float = 0.01,
                 count: int = 700) -> None:
        self.count = count
        self.interval = interval
        self.out = Path(out)
        self.started_at = time.time()
        with open(self.out, "wb") as f:
            self.proc = ns.popen(["ping", "-D", "-n", "-i", str(interval), "-c", str(count), "-W", "1", "-I", src,
                                  dst], stdout=f, stderr=subprocess.STDOUT)

    @property
    def duration(self) -> float:
        return self.count * self.interval

    def wait(self) -> list[tuple[float, int]]:
        """Wait for ping to end (bounded by its count): (timestamp, icmp_seq) of every reply."""
        try:
            self.proc.wait(timeout=self.duration + 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        return self.replies()

    def replies(self) -> list[tuple[float, int]]:
        return [(float(m.group(1)), int(m.group(2))) for m in PING_LINE.finditer(self.text())]

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def outage(self, event_at: float, slack: float = 0.2) -> Outage:
        """The largest gap between consecutive replies that ends after `event_at` and starts no earlier
        than `slack` seconds before it (replies already on their way when the event happened may
        arrive just after it)."""
        replies = self.replies()
        if not replies:
            raise AssertionError(f"no ping reply at all:\n{self.text()[-2000:]}")
        best: tuple[float, int, int] | None = None  # (gap, index before, index after)
        for i in range(len(replies) - 1):
            (t0, _), (t1, _) = replies[i], replies[i + 1]
            if t1 <= event_at or t0 < event_at - slack:
                continue
            if best is None or t1 - t0 > best[0]:
                best = (t1 - t0, i, i + 1)
        if best is None:
            after = [r for r in replies if r[0] > event_at]
            raise AssertionError(f"no reply after the event at {event_at:.3f} ({len(after)} after, "
                                 f"{len(replies)} in all):\n{self.text()[-2000:]}")
        _, i, j = best
        return Outage(event_at, replies[i][0], replies[j][0], self.count, len(replies),
                      replies[j][1] - replies[i][1] - 1)

    def max_gap_after(self, at: float) -> float:
        """The largest gap between consecutive replies after `at` (seconds)."""
        times = [t for t, _ in self.replies() if t >= at]
        return max((b - a for a, b in zip(times, times[1:])), default=float("inf"))


# ---------------------------------------------------------------------------------------------
# Captured frames, with their Ethernet source


@dataclass(frozen=True)
class Frame:
    timestamp: float
    src_mac: str
    dst_mac: str
    data: bytes  # the whole Ethernet frame


@dataclass(frozen=True)
class EspPacket:
    timestamp: float
    src_mac: str
    src: str
    dst: str
    spi: int
    seq: int
    iv: bytes  # the 8 octets after the sequence number (the IV of AES-GCM / ChaCha20-Poly1305)
    udp: bool


@dataclass(frozen=True)
class IkeFrame:
    timestamp: float
    src_mac: str
    src: str
    dst: str
    spi_i: str
    spi_r: str
    exchange: int
    response: bool

    @property
    def exchange_name(self) -> str:
        return IKE_EXCHANGES.get(self.exchange, str(self.exchange))


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def read_frames(path: Path) -> list[Frame]:
    """Every frame of a little-endian Ethernet pcap (as `capture.Capture` writes them)."""
    data = Path(path).read_bytes()
    if len(data) > MAX_PCAP_BYTES or len(data) < _PCAP_HEADER.size:
        raise AssertionError(f"{path}: not a usable pcap ({len(data)} bytes)")
    magic, _, _, _, _, _, linktype = _PCAP_HEADER.unpack_from(data)
    if magic != PCAP_MAGIC_LE or linktype != LINKTYPE_ETHERNET:
        raise AssertionError(f"{path}: not a little-endian Ethernet pcap")
    frames, pos = [], _PCAP_HEADER.size
    while pos + _PCAP_RECORD.size <= len(data):
        sec, usec, incl, _ = _PCAP_RECORD.unpack_from(data, pos)
        pos += _PCAP_RECORD.size
        frame = data[pos:pos + incl]
        pos += incl
        if len(frame) >= 14:
            frames.append(Frame(sec + usec / 1e6, _mac(frame[6:12]), _mac(frame[0:6]), frame))
    return frames


def _ipv4(frame: Frame) -> tuple[str, str, int, bytes] | None:
    """(src, dst, protocol, transport payload) of an unfragmented IPv4 frame."""
    if frame.data[12:14] != b"\x08\x00":
        return None
    ip = frame.data[14:]
    if len(ip) < 20 or ip[0] >> 4 != 4 or int.from_bytes(ip[6:8], "big") & 0x3FFF:
        return None
    ihl, total = (ip[0] & 0x0F) * 4, int.from_bytes(ip[2:4], "big")
    return socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]), ip[9], bytes(ip[ihl:total])


def esp_frames(frames: list[Frame]) -> list[EspPacket]:
    """ESP packets (raw, or in UDP 4500 with a non-zero first word) among `frames`."""
    found = []
    for frame in frames:
        parsed = _ipv4(frame)
        if parsed is None:
            continue
        src, dst, proto, body = parsed
        udp = False
        if proto == 17 and len(body) >= 8:
            sport, dport = struct.unpack_from("!HH", body)
            if ESP_IN_UDP_PORT not in (sport, dport):
                continue
            body, udp = body[8:], True
            if len(body) < 16 or body.startswith(NON_ESP_MARKER):
                continue  # IKE or a NAT keepalive
        elif proto != IPPROTO_ESP or len(body) < 16:
            continue
        spi, seq = struct.unpack_from("!II", body)
        found.append(EspPacket(frame.timestamp, frame.src_mac, src, dst, spi, seq, body[8:16], udp))
    return found


def ike_frames(frames: list[Frame]) -> list[IkeFrame]:
    """IKE messages (UDP 500, or 4500 with the non-ESP marker) among `frames`; fragments of IKE
    fragmentation count as their exchange too."""
    found = []
    for frame in frames:
        parsed = _ipv4(frame)
        if parsed is None or parsed[2] != 17 or len(parsed[3]) < 8:
            continue
        src, dst, _, body = parsed
        sport, dport = struct.unpack_from("!HH", body)
        payload = body[8:]
        if ESP_IN_UDP_PORT in (sport, dport):
            if not payload.startswith(NON_ESP_MARKER):
                continue
            payload = payload[4:]
        elif 500 not in (sport, dport):
            continue
        if len(payload) < 28:
            continue
        flags = payload[19]
        found.append(IkeFrame(frame.timestamp, frame.src_mac, src, dst, payload[0:8].hex(), payload[8:16].hex(),
                              payload[18], bool(flags & 0x20)))
    return found


def summarize_esp(packets: list[EspPacket]) -> dict[str, Any]:
    """Per sender MAC and SPI: count and sequence-number range (for messages)."""
    out: dict[str, Any] = {}
    for p in packets:
        key = f"{p.src_mac} spi {p.spi:08x}"
        entry = out.setdefault(key, {"count": 0, "seq_min": p.seq, "seq_max": p.seq, "first": p.timestamp,
                                     "last": p.timestamp})
        entry["count"] += 1
        entry["seq_min"] = min(entry["seq_min"], p.seq)
        entry["seq_max"] = max(entry["seq_max"], p.seq)
        entry["last"] = p.timestamp
    return out
