"""Active-passive high availability on etcd, end to end against strongSwan (`ha_topology.HaTopology`).

Two `ikev2lib run` gateways, gw-a and gw-b, run the same TOML (but `[ha] node`) on one LAN with a
strongSwan peer (kernel-libipsec, so ESP in UDP 4500) and an etcd member. gw-a starts first and
leads: it adds the service address 192.0.2.1/24 to its LAN interface, listens there and replicates
its IKE and Child SAs to etcd; gw-b is its standby (no listeners). strongSwan initiates to
192.0.2.1. When gw-a fails, gw-b adds the service address, sends a gratuitous ARP and resumes the
SAs from etcd: strongSwan notices nothing but a short gap in the traffic.

- `test_kill_9_of_the_leader_...`: gw-a dies (SIGKILL) under 100 pings/s; gw-b resumes the very
  same IKE SA and Child SA (SPIs on both sides), no IKE_SA_INIT after the kill, its ESP sequence
  numbers continue above gw-a's (no (SPI, sequence number) or (SPI, IV) sent twice: no AES-GCM
  nonce reuse), the peer's neighbour entry of 192.0.2.1 moves to gw-b's MAC; then strongSwan
  rekeys the Child SA and the IKE SA against gw-b, and TCP runs through gw-b.
- `test_split_brain_...`: gw-a is frozen (SIGSTOP), gw-b takes over, gw-a is thawed (SIGCONT): it
  notices it lost the leadership and stops (exits, or reports role "deposed"), sends no ESP and no
  IKE from its MAC any more (captured on its bridge port), releases the service address; the
  tunnel keeps working through gw-b.
- `test_etcd_down_while_the_child_sa_rekeys_...`: etcd stops for ~10 s while strongSwan rekeys the
  Child SA: gw-a keeps serving, gw-b does not take over; etcd returns, gw-a catches up
  (`replicated` grows) and stays leader; then gw-a is killed and gw-b resumes the rekeyed SA.
- `test_topology_*`: the harness itself (needs no HA code): etcd reachable from both gateway
  namespaces with the client the gateway uses, a gratuitous ARP moves the peer's neighbour entry
  through the bridge, strongSwan reaches a plain gateway at the service address, and the ping and
  capture measurements work.

The measured numbers are printed on the terminal even under `-q` (and kept as junit properties).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .capture import Capture
from .fixtures import CharonFactory
from .gateway_process import RunningGateway, established
from .ha_topology import (ETCD_ENDPOINT, GW_A_ADDR, GW_B_ADDR, LAN_ADDR, PEER_ADDR, SERVICE_ADDR, EspPacket,
                          HaTopology, LanNode, PingRun, esp_frames, ike_frames, kill_leader, read_frames, sigcont,
                          sigstop, summarize_esp)
from .strongswan import Charon, CharonSettings, IkeSA, psk_connection_pair
from .test_gateway_datapath import PSK, gateway_toml, iperf_server, iperf_tcp, ping, start_gateway, wait_for_ping

pytestmark = pytest.mark.interop

GW_NET, PEER_NET = "10.1.0.0/24", "10.2.0.0/24"
GW_INNER, PEER_INNER = "10.1.0.1", "10.2.0.1"
CONN, CHILD = "site", "net"
CLUSTER = "hub"
LEASE = "2s"
DEAD_AFTER = "0.3s"
ROLE_TIMEOUT = 20.0  # seconds for a gateway to report its HA role at start
TAKEOVER_TIMEOUT = 10.0  # seconds for the standby to report "leader" after the leader failed
RESUME_BOUND = 5.0  # seconds: pings must come back within this after the failure (target: < 1 s)
PING_INTERVAL = 0.01
PING_COUNT = 700  # 7 s at PING_INTERVAL: the failure 1 s in, up to RESUME_BOUND to resume, and more
PING_LEAD = 1.0  # seconds of pings before the failure
DEPOSE_TIMEOUT = 5.0  # seconds for a thawed old leader to notice it was deposed
ETCD_OUTAGE = 30.0  # seconds etcd is down in the etcd test (the issue asks for 30)
CATCH_UP_TIMEOUT = 15.0  # seconds for the leader's `replicated` to grow after etcd is back
REPLICATION_SETTLE = 0.5  # seconds after `replicated >= 1` for the last records of a fresh SA
# A thawed old leader's C workers run on for the moment its event loop needs to see that its lease
# lapsed: they may send this long after SIGCONT, and only below the new leader's sequence numbers.
STALE_ESP_WINDOW = 0.1


# ---------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture
def topo(require_interop: None, tmp_path: Path) -> Iterator[HaTopology]:
    with HaTopology(tmp_path / "lan") as topology:
        yield topology


@pytest.fixture
def charon(topo: HaTopology, charon_factory: CharonFactory) -> Charon:
    """strongSwan in `peer`: initiator of `site`/`net` (10.2.0.0/24 <-> 10.1.0.0/24) to 192.0.2.1."""
    topo.peer.ns.add_inner_address(f"{PEER_INNER}/32")  # charon needs an address inside its local TS
    config, _ = psk_connection_pair(PEER_ADDR, SERVICE_ADDR, conn=CONN, child=CHILD, esp_proposals=["aes128gcm16"],
                                    left_ts=[PEER_NET], right_ts=[GW_NET], psk=PSK, left_id="peer", right_id="gw")
    started = charon_factory(topo.peer.ns, "peer", CharonSettings())
    started.load(config)
    return started


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "ha.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return path


@pytest.fixture
def say(capsys: pytest.CaptureFixture[str], record_property: Callable[[str, object], None]) -> Callable[..., None]:
    """Print on the terminal despite capturing (the numbers the note reports), and keep them as
    junit properties."""
    def emit(text: str, **values: object) -> None:
        with capsys.disabled():
            print(f"\n==== {text}", flush=True)
        for key, value in values.items():
            record_property(key, value)
    return emit


@pytest.fixture
def gateway_logs(request: pytest.FixtureRequest) -> Iterator[list[RunningGateway]]:
    """The gateways a test started; their logs are printed when it fails (pytest shows them)."""
    started: list[RunningGateway] = []
    yield started
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for gateway in started:
            print(f"==== {gateway.log.parent.name} log\n" + "\n".join(log_text(gateway).splitlines()[-40:]))


def ha_toml(node: str, interface: str, key_file: Path, *, lease: str = LEASE, dead_after: str = DEAD_AFTER) -> str:
    base = gateway_toml(me=SERVICE_ADDR, peer=PEER_ADDR, inner=GW_INNER, local_net=GW_NET, remote_net=PEER_NET,
                        local_id="gw", remote_id="peer", initiate=False)
    return base + "\n".join([
        "[ha]", f'etcd = ["{ETCD_ENDPOINT}"]', f'cluster = "{CLUSTER}"', f'node = "{node}"',
        f'key_file = "{key_file}"', f'service_address = "{SERVICE_ADDR}/24"', f'service_interface = "{interface}"',
        f'lease = "{lease}"', f'dead_after = "{dead_after}"',
    ]) + "\n"


def ha(status: dict[str, Any]) -> dict[str, Any]:
    found = status.get("ha")
    assert isinstance(found, dict), f"`ikev2lib status --json` has no \"ha\" object: {sorted(status)}"
    return found


def role(name: str, leader: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def check(status: dict[str, Any]) -> bool:
        state = ha(status)
        return bool(state["role"] == name and (leader is None or state["leader"] == leader))
    return check


def log_text(gateway: RunningGateway) -> str:
    return gateway.log.read_text(errors="replace")


def ha_lines(gateway: RunningGateway) -> str:
    return "\n".join(line for line in log_text(gateway).splitlines() if "ha:" in line)[-3000:]


@dataclass
class Pair:
    a: RunningGateway  # gw-a, the first leader
    b: RunningGateway  # gw-b, its standby


def start_ha_pair(stack: contextlib.ExitStack, topo: HaTopology, work: Path, key_file: Path,
                  logs: list[RunningGateway]) -> Pair:
    """gw-a first, until it leads and listens on the service address; then gw-b, until it is gw-a's standby."""
    a = start_gateway(stack, topo.gw_a.ns, work / "gw-a", ha_toml("gw-a", topo.gw_a.ifname, key_file))
    logs.append(a)
    a.wait(role("leader"), "gw-a: ha.role leader", timeout=ROLE_TIMEOUT)
    a.wait(lambda s: SERVICE_ADDR in s["listen"], "gw-a listening on the service address")
    assert topo.holders() == ["gw-a"], topo.holders()
    b = start_gateway(stack, topo.gw_b.ns, work / "gw-b", ha_toml("gw-b", topo.gw_b.ifname, key_file))
    logs.append(b)
    b.wait(role("standby", leader="gw-a"), "gw-b: ha.role standby, leader gw-a", timeout=ROLE_TIMEOUT)
    status = b.status()
    # a standby serves nothing: no SA, not the service address (its sockets may be bound to the
    # address already, ip_nonlocal_bind: `listen` is not looked at)
    assert status["ike_sas"] == [], status
    assert ha(status)["node"] == "gw-b" and ha(a.status())["node"] == "gw-a"
    assert topo.holders() == ["gw-a"], topo.holders()
    return Pair(a, b)


TOOK_OVER = re.compile(r"ha: (?:leading; )?took over (\d+) IKE SAs in ([\d.]+) ms")


def assert_contract_logs(pair: Pair, took_over: int | None = None) -> None:
    """The log lines of the contract; checked at the end of a test, so that a wording difference
    does not hide what the test found about the behaviour."""
    assert "ha: leading" in log_text(pair.a), ha_lines(pair.a)
    assert "ha: standby of gw-a" in log_text(pair.b), ha_lines(pair.b)
    if took_over is not None:
        counts = [int(m.group(1)) for m in TOOK_OVER.finditer(log_text(pair.b))]
        assert counts == [took_over], ha_lines(pair.b)


def establish(topo: HaTopology, charon: Charon, leader: RunningGateway) -> IkeSA:
    """strongSwan initiates to the service address; returns charon's IKE SA once it is replicated."""
    charon.initiate(child=CHILD, timeout=20)
    leader.wait(established(CONN), "tunnel up on the leader")
    charon.wait_for_child(CHILD, timeout=20)
    wait_for_ping(topo.peer.ns, PEER_INNER, GW_INNER)
    leader.wait(lambda s: ha(s)["replicated"] >= 1, "the SA replicated (ha.replicated >= 1)")
    time.sleep(REPLICATION_SETTLE)
    sas = charon.list_sas()
    assert len(sas) == 1 and len(sas[0].children) == 1, sas
    return sas[0]


def gateway_sa(gateway: RunningGateway) -> dict[str, Any]:
    sas = [s for s in gateway.status()["ike_sas"] if s["state"] == "established"]
    assert len(sas) == 1, sas
    found: dict[str, Any] = sas[0]
    return found


def assert_same_sas(charon_sa: IkeSA, charon: Charon, gateway: RunningGateway) -> None:
    """charon still has `charon_sa` (same IKE and Child SPIs), and so does the gateway (mirrored)."""
    after = charon.list_sas()
    assert len(after) == 1, after
    now = after[0]
    assert (now.spi_i, now.spi_r, now.state) == (charon_sa.spi_i, charon_sa.spi_r, "ESTABLISHED"), now
    children = [c for c in now.children if c.state == "INSTALLED"]
    before = charon_sa.children[0]
    assert [(c.spi_in, c.spi_out) for c in children] == [(before.spi_in, before.spi_out)], now.children
    mine = gateway_sa(gateway)
    assert (mine["spi_i"], mine["spi_r"]) == (charon_sa.spi_i, charon_sa.spi_r), mine
    installed = [c for c in mine["children"] if c["state"] == "installed"]
    assert [(c["spi_in"], c["spi_out"]) for c in installed] == [(before.spi_out, before.spi_in)], mine


def wait_ping_reply_after(run: PingRun, at: float, timeout: float) -> float:
    """Wait (bounded) until the running ping got a reply stamped after `at`; its timestamp."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        later = [t for t, _ in run.replies() if t > at]
        if later:
            return later[0]
        time.sleep(0.05)
    raise AssertionError(f"no ping reply within {timeout} s after {at:.3f}:\n{run.text()[-1500:]}")


def check_esp_continuity(packets: list[EspPacket], old_mac: str, new_mac: str, switch_at: float) -> str:
    """ESP the gateways sent (source 192.0.2.1): the new leader's sequence numbers per SPI continue
    above everything the old leader sent on that SPI, and no (SPI, sequence number) or (SPI, IV)
    went out twice (AES-GCM nonce reuse). Returns a summary for the report."""
    sent = [p for p in packets if p.src == SERVICE_ADDR]
    old = [p for p in sent if p.src_mac == old_mac and p.timestamp <= switch_at + 0.5]
    new = [p for p in sent if p.src_mac == new_mac]
    assert old and new, summarize_esp(sent)
    lines = []
    for spi in sorted({p.spi for p in new}):
        old_seqs = [p.seq for p in old if p.spi == spi]
        new_seqs = [p.seq for p in new if p.spi == spi]
        if old_seqs:
            assert min(new_seqs) > max(old_seqs), (f"SPI {spi:08x}: the new leader sent sequence number "
                                                   f"{min(new_seqs)}, the old one had reached {max(old_seqs)}")
            lines.append(f"SPI {spi:08x}: old leader up to seq {max(old_seqs)}, new leader from {min(new_seqs)} "
                         f"(+{min(new_seqs) - max(old_seqs)})")
    seen_seq: set[tuple[int, int]] = set()
    seen_iv: set[tuple[int, bytes]] = set()
    for p in sent:
        assert (p.spi, p.seq) not in seen_seq, f"(SPI {p.spi:08x}, seq {p.seq}) sent twice"
        assert (p.spi, p.iv) not in seen_iv, f"(SPI {p.spi:08x}, IV {p.iv.hex()}) sent twice: nonce reuse"
        seen_seq.add((p.spi, p.seq))
        seen_iv.add((p.spi, p.iv))
    return "; ".join(lines) or "no SPI common to both leaders"


# ---------------------------------------------------------------------------------------------
# the HA tests


def test_kill_9_of_the_leader_under_traffic_resumes_the_same_sas_on_the_standby(
        topo: HaTopology, charon: Charon, key_file: Path, tmp_path: Path, say: Callable[..., None],
        gateway_logs: list[RunningGateway]) -> None:
    with contextlib.ExitStack() as stack:
        pair = start_ha_pair(stack, topo, tmp_path, key_file, gateway_logs)
        charon_sa = establish(topo, charon, pair.a)
        assert_same_sas(charon_sa, charon, pair.a)
        assert topo.owner_of() == "gw-a", topo.neighbour()
        a_mac, b_mac = topo.gw_a.mac, topo.gw_b.mac
        replicated = ha(pair.a.status())["replicated"]

        capture = Capture(topo.peer.ns, topo.peer.ifname, tmp_path / "peer.pcap").start()
        run = PingRun(topo.peer.ns, PEER_INNER, GW_INNER, tmp_path / "ping.txt", interval=PING_INTERVAL,
                      count=PING_COUNT)
        time.sleep(PING_LEAD)
        killed_at = kill_leader(pair.a)
        run.wait()
        outage = run.outage(killed_at)
        state = pair.b.wait(lambda s: ha(s) if ha(s)["role"] == "leader" else None, "gw-b leading",
                            timeout=TAKEOVER_TIMEOUT)
        say(f"HA kill -9: {outage.describe()}; gw-b ha: takeover_ms={state['takeover_ms']} "
            f"restored={state['restored']} (gw-a had replicated {replicated} records)",
            kill9_gap_ms=round(outage.gap * 1000, 1), kill9_resume_ms=round(outage.resume * 1000, 1),
            kill9_takeover_ms=state["takeover_ms"], kill9_lost=outage.lost_in_gap)
        assert outage.resume < RESUME_BOUND, outage.describe() + "\n" + run.text()[-1500:]
        # after the gap the tunnel carries (almost) every ping again
        assert outage.received >= PING_COUNT - (outage.gap + 0.5) / PING_INTERVAL, outage.describe()
        assert state["leader"] == "gw-b" and state["node"] == "gw-b" and state["restored"] >= 1, state
        assert state["takeover_ms"] is not None and state["takeover_ms"] >= 0, state
        assert SERVICE_ADDR in pair.b.status()["listen"]
        assert "gw-b" in topo.holders()
        topo.wait_owner("gw-b", timeout=1.0)  # the gratuitous ARP moved the peer's neighbour entry
        assert topo.bridge_fdb().get(b_mac) == topo.gw_b.port, topo.bridge_fdb()

        # the same IKE SA and Child SA on both sides: nothing was renegotiated
        assert_same_sas(charon_sa, charon, pair.b)

        # strongSwan rekeys the Child SA, then the IKE SA, against gw-b
        old_child = charon_sa.children[0]
        charon.rekey(child=CHILD)
        new_child = charon.wait_for_child(CHILD, where=lambda c: c.spi_in != old_child.spi_in)
        pair.b.wait(lambda s: any(c["spi_in"] == new_child.spi_out and c["state"] == "installed"
                                  for sa in s["ike_sas"] for c in sa["children"]), "gw-b: the rekeyed Child SA")
        ping(topo.peer.ns, PEER_INNER, GW_INNER)
        charon.rekey(ike=CONN)
        new_ike = charon.wait_until(lambda: next((sa for sa in charon.list_sas() if sa.state == "ESTABLISHED"
                                                  and sa.spi_i != charon_sa.spi_i), None), 20, "the rekeyed IKE SA")
        pair.b.wait(lambda s: any(sa["spi_i"] == new_ike.spi_i and sa["spi_r"] == new_ike.spi_r
                                  and sa["state"] == "established" for sa in s["ike_sas"]), "gw-b: the rekeyed IKE SA")
        charon.wait_until(lambda: len(charon.list_sas()) == 1, 20, "the old IKE SA gone")
        ping(topo.peer.ns, PEER_INNER, GW_INNER)
        # the capture, from before the kill to after both rekeys: never an IKE_SA_INIT, and ESP that
        # never repeats a sequence number or an IV
        capture.stop()
        frames = read_frames(capture.path)
        after_kill = [m for m in ike_frames(frames) if m.timestamp > killed_at]
        exchanges = sorted({(m.exchange_name, m.src) for m in after_kill})
        assert not [m for m in after_kill if m.exchange == 34], exchanges
        assert ("CREATE_CHILD_SA", SERVICE_ADDR) in exchanges, exchanges  # the rekeys were seen (capture works)
        esp = check_esp_continuity(esp_frames(frames), a_mac, b_mac, killed_at)
        say(f"HA kill -9: ESP {esp}; IKE after the kill: {exchanges}")
        with iperf_server(topo.gw_b.ns, GW_INNER):
            report = iperf_tcp(topo.peer.ns, PEER_INNER, GW_INNER, seconds=2)
        assert report["end"]["sum_received"]["bytes"] > 1_000_000
        assert pair.b.status()["datapath"]["drops"] == {}, pair.b.status()["datapath"]
        mbits = report["end"]["sum_received"]["bits_per_second"] / 1e6
        say(f"HA kill -9: after the rekeys through gw-b: TCP {mbits:.0f} Mbit/s", kill9_tcp_mbits=round(mbits))
        assert_contract_logs(pair, took_over=1)


def test_split_brain_the_thawed_old_leader_stops_and_never_reuses_a_sequence_number(
        topo: HaTopology, charon: Charon, key_file: Path, tmp_path: Path, say: Callable[..., None],
        gateway_logs: list[RunningGateway]) -> None:
    with contextlib.ExitStack() as stack:
        pair = start_ha_pair(stack, topo, tmp_path, key_file, gateway_logs)
        charon_sa = establish(topo, charon, pair.a)
        a_mac, b_mac = topo.gw_a.mac, topo.gw_b.mac
        # what each gateway puts on the LAN, captured on its bridge port
        cap_a = Capture(topo.lan, topo.gw_a.port, tmp_path / "port-a.pcap").start()
        cap_b = Capture(topo.lan, topo.gw_b.port, tmp_path / "port-b.pcap").start()
        run = PingRun(topo.peer.ns, PEER_INNER, GW_INNER, tmp_path / "ping.txt", interval=PING_INTERVAL,
                      count=900)
        time.sleep(PING_LEAD)
        stopped_at = sigstop(pair.a)
        try:
            state = pair.b.wait(lambda s: ha(s) if ha(s)["role"] == "leader" else None, "gw-b leading",
                                timeout=TAKEOVER_TIMEOUT)
            wait_ping_reply_after(run, time.time(), RESUME_BOUND)  # gw-b serves before gw-a thaws
            time.sleep(0.5)
        finally:
            thawed_at = sigcont(pair.a)
        # the old leader notices it lost the leadership: it exits, or says "deposed"
        deadline = time.monotonic() + DEPOSE_TIMEOUT
        old_role = None
        while time.monotonic() < deadline:
            if pair.a.proc.poll() is not None:
                old_role = f"exited ({pair.a.proc.returncode})"
                break
            done = pair.a.run("status", "--json")
            if done.returncode == 0 and '"deposed"' in done.stdout:
                old_role = "deposed"
                break
            time.sleep(0.1)
        assert old_role is not None, f"gw-a neither exited nor reported role deposed:\n{ha_lines(pair.a)}"
        run.wait()
        outage = run.outage(stopped_at)
        after_thaw = run.max_gap_after(thawed_at)
        cap_a.stop()
        cap_b.stop()
        from_a = [f for f in read_frames(cap_a.path) if f.src_mac == a_mac]
        esp_a = [p for p in esp_frames(from_a) if p.timestamp >= thawed_at]
        ike_a = [m for m in ike_frames(from_a) if m.timestamp >= thawed_at]
        esp_b = [p for p in esp_frames(read_frames(cap_b.path)) if p.src_mac == b_mac]
        say(f"HA split brain (SIGSTOP): {outage.describe()}; gw-b ha: takeover_ms={state['takeover_ms']} "
            f"restored={state['restored']}; after SIGCONT gw-a {old_role}, sent {len(esp_a)} ESP "
            f"{summarize_esp(esp_a)} and {len(ike_a)} IKE; largest ping gap after SIGCONT {after_thaw * 1000:.0f} ms",
            split_gap_ms=round(outage.gap * 1000, 1), split_takeover_ms=state["takeover_ms"],
            split_old_esp=len(esp_a), split_old_ike=len(ike_a))
        # every finding at once: which of them fail matters for the gateway's design
        problems = []
        if outage.resume >= RESUME_BOUND:
            problems.append(f"no resume within {RESUME_BOUND} s: {outage.describe()}")
        # what the old leader's data path sent in the moment before it noticed (its C workers resume
        # with the process) must stay below every number the new leader used: no ESP nonce is used twice
        for spi in {p.spi for p in esp_a}:
            floor = min((p.seq for p in esp_b if p.spi == spi), default=None)
            if floor is not None and not all(p.seq < floor for p in esp_a if p.spi == spi):
                problems.append(f"gw-a sent ESP after SIGCONT at or above gw-b's numbers: "
                                f"{summarize_esp(esp_a + esp_b)}")
        if esp_a and esp_a[-1].timestamp - thawed_at > STALE_ESP_WINDOW:
            problems.append(f"gw-a still sent ESP {esp_a[-1].timestamp - thawed_at:.3f} s after SIGCONT")
        if ike_a:
            problems.append(f"gw-a sent IKE after SIGCONT: {[(m.exchange_name, m.dst) for m in ike_a]}")
        # a deposed leader must not keep the service address: its kernel would answer ARP for it
        if "gw-a" in topo.holders():
            problems.append(f"gw-a ({old_role}) still has {SERVICE_ADDR}: {topo.gw_a.addresses()}")
        # the tunnel works through gw-b all along
        if after_thaw >= 0.5:
            problems.append(f"a ping gap of {after_thaw:.3f} s after SIGCONT")
        if topo.owner_of() != "gw-b":
            problems.append(f"the peer's neighbour entry is {topo.neighbour()}, not gw-b's MAC")
        assert not problems, "\n".join(problems)
        ping(topo.peer.ns, PEER_INNER, GW_INNER)
        assert_same_sas(charon_sa, charon, pair.b)
        assert ha(pair.b.status())["role"] == "leader"
        assert_contract_logs(pair, took_over=1)


def test_etcd_down_while_the_child_sa_rekeys_then_the_standby_resumes_the_rekeyed_sa(
        topo: HaTopology, charon: Charon, key_file: Path, tmp_path: Path, say: Callable[..., None],
        gateway_logs: list[RunningGateway]) -> None:
    assert topo.etcd is not None
    with contextlib.ExitStack() as stack:
        pair = start_ha_pair(stack, topo, tmp_path, key_file, gateway_logs)
        charon_sa = establish(topo, charon, pair.a)
        before = ha(pair.a.status())["replicated"]
        topo.etcd.stop()
        down_at = time.monotonic()
        old_child = charon_sa.children[0]
        charon.rekey(child=CHILD)
        new_child = charon.wait_for_child(CHILD, where=lambda c: c.spi_in != old_child.spi_in)
        pair.a.wait(lambda s: [(c["spi_in"], c["spi_out"]) for sa in s["ike_sas"] for c in sa["children"]
                               if c["state"] == "installed"] == [(new_child.spi_out, new_child.spi_in)],
                    "gw-a: only the rekeyed Child SA installed")
        charon.wait_until(lambda: all(c.spi_in != old_child.spi_in or c.state == "DELETED"
                                      for sa in charon.list_sas() for c in sa.children), 20, "old Child SA deleted")
        ping(topo.peer.ns, PEER_INNER, GW_INNER)  # the leader keeps serving without etcd
        while time.monotonic() - down_at < ETCD_OUTAGE:
            assert ha(pair.b.status())["role"] == "standby", ha_lines(pair.b)  # no takeover without etcd
            assert topo.holders() == ["gw-a"], topo.holders()
            time.sleep(0.5)
        ping(topo.peer.ns, PEER_INNER, GW_INNER)
        during = ha(pair.a.status())
        topo.etcd.start()
        back_at = time.monotonic()
        caught = pair.a.wait(lambda s: ha(s) if ha(s)["replicated"] > before else None,
                             "gw-a catching up (ha.replicated grows)", timeout=CATCH_UP_TIMEOUT)
        caught_after = time.monotonic() - back_at
        time.sleep(REPLICATION_SETTLE + 1.0)  # and a stale heartbeat must not make gw-b depose gw-a
        assert ha(pair.a.status())["role"] == "leader", ha_lines(pair.a)
        assert ha(pair.b.status())["role"] == "standby" and topo.holders() == ["gw-a"], ha_lines(pair.b)

        run = PingRun(topo.peer.ns, PEER_INNER, GW_INNER, tmp_path / "ping.txt", interval=PING_INTERVAL,
                      count=PING_COUNT)
        time.sleep(PING_LEAD)
        killed_at = kill_leader(pair.a)
        run.wait()
        outage = run.outage(killed_at)
        state = pair.b.wait(lambda s: ha(s) if ha(s)["role"] == "leader" else None, "gw-b leading",
                            timeout=TAKEOVER_TIMEOUT)
        say(f"HA etcd down {ETCD_OUTAGE:.0f} s: gw-a during the outage {during}; replicated {before} -> "
            f"{caught['replicated']} {caught_after:.1f} s after etcd came back; then kill -9: {outage.describe()}; "
            f"gw-b takeover_ms={state['takeover_ms']}",
            etcd_catch_up_s=round(caught_after, 2), etcd_kill9_gap_ms=round(outage.gap * 1000, 1))
        assert outage.resume < RESUME_BOUND, outage.describe()
        rekeyed = charon.list_sas()[0]
        rekeyed.children = [c for c in rekeyed.children if c.state == "INSTALLED"]
        assert [(c.spi_in, c.spi_out) for c in rekeyed.children] == [(new_child.spi_in, new_child.spi_out)]
        assert_same_sas(rekeyed, charon, pair.b)  # the rekeyed Child SA, on the original IKE SA
        assert rekeyed.spi_i == charon_sa.spi_i
        ping(topo.peer.ns, PEER_INNER, GW_INNER)
        assert_contract_logs(pair, took_over=1)


# ---------------------------------------------------------------------------------------------
# the harness itself (no HA code needed)


_STORE_CHECK = """
import asyncio, sys
from ikev2lib.ha.store import EtcdStore
async def main():
    async with EtcdStore([sys.argv[1]], timeout=3.0) as store:
        await store.put_batch({"ikev2lib-topology-check/" + sys.argv[2]: b"reachable"})
        info = await store.get("ikev2lib-topology-check/" + sys.argv[2])
        print(info.value.decode() if info else "missing")
asyncio.run(main())
"""


def test_topology_etcd_reachable_and_a_gratuitous_arp_moves_the_peers_neighbour_entry(
        topo: HaTopology, say: Callable[..., None]) -> None:
    for node in (topo.peer, topo.gw_a, topo.gw_b):
        ping(node.ns, node.address, LAN_ADDR, count=2)
    for gw in topo.gateways:  # the etcd client the gateway uses, from the gateway's namespace
        done = gw.ns.run([sys.executable, "-c", _STORE_CHECK, ETCD_ENDPOINT, gw.name], timeout=30, check=False)
        assert done.returncode == 0 and done.stdout.strip() == "reachable", done.stdout + done.stderr
    assert topo.etcd is not None
    topo.etcd.stop()  # and back, with its data: what the etcd test does
    topo.etcd.start()
    done = topo.gw_b.ns.run([sys.executable, "-c", _STORE_CHECK, ETCD_ENDPOINT, "again"], timeout=30, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "reachable", done.stdout + done.stderr

    # the service address on gw-a; the peer learns gw-a's MAC
    topo.gw_a.ns.ip("addr", "add", f"{SERVICE_ADDR}/24", "dev", topo.gw_a.ifname)
    ping(topo.peer.ns, PEER_ADDR, SERVICE_ADDR, count=2)
    assert topo.owner_of() == "gw-a" and topo.holders() == ["gw-a"], topo.neighbour()
    # moved to gw-b with a gratuitous ARP, within the peer's locktime of the last update (a
    # gratuitous ARP overrides it), while gw-a's kernel still has the address (a killed process)
    topo.gw_b.ns.ip("addr", "add", f"{SERVICE_ADDR}/24", "dev", topo.gw_b.ifname)
    start = time.monotonic()
    topo.send_gratuitous_arp(topo.gw_b)
    moved = topo.wait_owner("gw-b", timeout=1.0)
    say(f"topology: the peer's neighbour entry moved to gw-b {moved * 1000:.0f} ms after the gratuitous ARP "
        f"({time.monotonic() - start:.3f} s incl. the send); {topo.neighbour()}")
    # ... and the peer's traffic goes to gw-b (an ICMP echo to 192.0.2.1 answered from gw-b's MAC)
    topo.gw_a.ns.ip("addr", "del", f"{SERVICE_ADDR}/24", "dev", topo.gw_a.ifname)
    ping(topo.peer.ns, PEER_ADDR, SERVICE_ADDR, count=2)
    assert topo.owner_of() == "gw-b"
    assert topo.bridge_fdb().get(topo.gw_b.mac) == topo.gw_b.port, topo.bridge_fdb()
    # back to gw-a the same way (both directions work)
    topo.gw_b.ns.ip("addr", "del", f"{SERVICE_ADDR}/24", "dev", topo.gw_b.ifname)
    topo.gw_a.ns.ip("addr", "add", f"{SERVICE_ADDR}/24", "dev", topo.gw_a.ifname)
    topo.send_gratuitous_arp(topo.gw_a)
    topo.wait_owner("gw-a", timeout=1.0)
    assert GW_A_ADDR in [a.split("/")[0] for a in topo.gw_a.addresses()]
    assert GW_B_ADDR in [a.split("/")[0] for a in topo.gw_b.addresses()]


def test_topology_strongswan_reaches_a_plain_gateway_at_the_service_address(
        topo: HaTopology, charon: Charon, tmp_path: Path, say: Callable[..., None]) -> None:
    """No [ha]: the test puts the service address on gw-a itself. Checks the measurement code: ping -D
    parsing, the outage finder, and the capture readers (IKE exchanges, ESP by sender MAC)."""
    topo.gw_a.ns.ip("addr", "add", f"{SERVICE_ADDR}/24", "dev", topo.gw_a.ifname)
    with contextlib.ExitStack() as stack:
        gw = start_gateway(stack, topo.gw_a.ns, tmp_path / "gw-a", gateway_toml(
            me=SERVICE_ADDR, peer=PEER_ADDR, inner=GW_INNER, local_net=GW_NET, remote_net=PEER_NET, local_id="gw",
            remote_id="peer", initiate=False))
        gw.wait(lambda s: SERVICE_ADDR in s["listen"], "gateway listening")
        capture = Capture(topo.peer.ns, topo.peer.ifname, tmp_path / "peer.pcap").start()
        charon.initiate(child=CHILD, timeout=20)
        gw.wait(established(CONN), "tunnel up")
        charon.wait_for_child(CHILD, timeout=20)
        wait_for_ping(topo.peer.ns, PEER_INNER, GW_INNER)
        charon_sa = charon.list_sas()[0]
        assert_same_sas(charon_sa, charon, gw)
        assert topo.owner_of() == "gw-a"
        run = PingRun(topo.peer.ns, PEER_INNER, GW_INNER, tmp_path / "ping.txt", interval=PING_INTERVAL, count=200)
        time.sleep(0.8)
        # an outage of our own making: gw-a's LAN link down for 0.5 s
        cut_at = time.time()
        topo.gw_a.ns.ip("link", "set", topo.gw_a.ifname, "down")
        time.sleep(0.5)
        topo.gw_a.ns.ip("link", "set", topo.gw_a.ifname, "up")
        run.wait()
        outage = run.outage(cut_at)
        capture.stop()
        say(f"topology: plain gateway at {SERVICE_ADDR}: a 0.5 s link cut measured as {outage.describe()}")
        assert 0.4 < outage.gap < 3.0 and 0 <= outage.resume < 3.0, outage.describe()
        assert outage.received > 100, run.text()[-1500:]
        frames = read_frames(capture.path)
        exchanges = [m.exchange_name for m in ike_frames(frames)]
        assert exchanges[:4] == ["IKE_SA_INIT", "IKE_SA_INIT", "IKE_AUTH", "IKE_AUTH"], exchanges
        esp = esp_frames(frames)
        from_gw = [p for p in esp if p.src == SERVICE_ADDR]
        assert from_gw and all(p.src_mac == topo.gw_a.mac and p.udp for p in from_gw), summarize_esp(esp)
        assert {p.spi for p in from_gw} == {int(charon_sa.children[0].spi_in, 16)}
        seqs = [p.seq for p in from_gw]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert gw.status()["datapath"]["drops"] == {}
