"""MOBIKE (RFC 4555) against real strongSwan 5.9.8 (kernel-libipsec) in network namespaces.

The topology (`mobike_topology.MobikeTopology`): a `mobile` namespace at 192.0.2.10 that moves, a
`gateway` namespace at 192.0.2.1 that stays. A move adds 192.0.2.20 and deletes 192.0.2.10
(promote_secondaries keeps the new one); the second-link variant takes link 1 down (its addresses
flushed) and leaves a route over link 2 (198.51.100.10).

- the topology itself, and strongSwan-to-strongSwan MOBIKE in it (the reference: charon notices the
  move through kernel-netlink about 0.1 s after it and has traffic back some 10 ms later);
- strongSwan initiates and moves, `ikev2lib run` answers (the road warrior): the same IKE SA, charon's
  UPDATE_SA_ADDRESSES answered, the gateway's data path sends to the new address, ping comes back;
- ikev2lib initiates (wildcard sockets, `local_addresses_changed`) and moves, charon answers;
- ikev2lib moves to an address charon cannot answer: the SA is not moved silently;
- the gateway with `mobike = false`: charon reauthenticates instead (a new IKE SA).

charon with libipsec rekeys every Child SA right after a MOBIKE update, as initiator and as responder
("queueing CHILD_REKEY task" right after "local/remote endpoint changed"; it does not move the installed
SA in place): the Child SA SPIs change through a CREATE_CHILD_SA in the same IKE SA (no IKE_SA_INIT).
Kernel ESP, which would keep them, is not available on this machine.

Times: ping -D timestamps and charon's own log (a second filelog with epoch seconds and milliseconds)
against time.time() of the move; all in one clock. Each test prints what it measured.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ikev2lib.config import ChildConfig, IkeConfig, RetransmitConfig
from ikev2lib.events import (
    ChildSaCreated,
    ChildSaRekeyed,
    Event,
    IkeSaAddressesUpdated,
    IkeSaDeleted,
    IkeSaEstablished,
    PeerDead,
)

from .capture import Capture, ike_messages, read_pcap
from .fixtures import CharonFactory
from .gateway_process import RunningGateway, established
from .ikev2lib_peer import IkeLibPeer, ReceivedEsp, start_receiver, udp_ipv4_packet, udp_payload_of
from .mobike_topology import MobikeAddresses, MobikeTopology
from .netns import Namespace
from .strongswan import Charon, CharonSettings, IkeSA, psk_connection_pair
from .test_gateway_datapath import PSK, gateway_toml, start_gateway, wait_for_ping
from .traffic import udp_send

pytestmark = pytest.mark.interop

GW_NET, MOBILE_NET = "10.1.0.0/24", "10.2.0.0/24"
GW_INNER, MOBILE_INNER = "10.1.0.1", "10.2.0.1"
IKE_PROPOSAL, ESP_PROPOSAL = "aes128gcm16-prfsha256-x25519", "aes128gcm16"
PING_INTERVAL = 0.02
PING_COUNT = 350  # 7 s of pings
MOVE_AFTER = 1.5  # seconds of pings before the move
RESUME_BOUND = 5.0  # seconds after the move within which traffic must be back (measured: well under 1 s)
NOTICE_BOUND = 5.0  # seconds after the move within which charon must have sent its update
WAIT = 20.0  # bound of the waits for SAs and log lines
TRAFFIC_PORT = 5001
STREAM_COUNT = 200  # charon's side sends this many datagrams into the tunnel during a move ...
STREAM_INTERVAL = 0.02  # ... this far apart (4 s)
DATAGRAMS = 3  # per direction in the before/after ESP checks
RECEIVE_TIMEOUT = 10.0
IKE_SA_INIT, INFORMATIONAL = 34, 37
UNREACHABLE = "203.0.113.5"  # test 3: the gateway namespace has no route back to this address
FAST_RETRANSMIT = RetransmitConfig(timeout=0.5, base=1.5, tries=3)  # gives up after about 4 s
REFUSED_WATCH = 15.0  # seconds test 3 waits for the engine to give up

# the ikev2lib gateway's log line when MOBIKE moved an IKE SA (IkeSaAddressesUpdated), and when the
# RFC 7296 2.23 NAT following moved it instead (PeerAddressChanged: libipsec fakes a NAT)
GATEWAY_NAT_FOLLOW_LOG = re.compile(r"(?m)^.*: peer moved from .*$")


def gateway_mobike_log(gateway: str, old: str, new: str) -> re.Pattern[str]:
    g, o, n = (re.escape(x) for x in (gateway, old, new))
    return re.compile(rf"(?m)^.*site: IKE SA \d+: MOBIKE moved {g}:\d+ - {o}:4500 to {g}:\d+ - {n}:4500 "
                      r"\(UDP-encapsulated\)$")


# ---- topology and charon ---------------------------------------------------------------------------


@pytest.fixture
def topologies(require_interop: None) -> Iterator[Callable[..., MobikeTopology]]:
    """`topologies(second_link=False, **addresses)` -> a set-up MobikeTopology, closed at teardown."""
    with contextlib.ExitStack() as stack:
        def make(second_link: bool = False, **addresses: Any) -> MobikeTopology:
            return stack.enter_context(MobikeTopology(second_link, MobikeAddresses(**addresses)))
        yield make


PRECISE_LOG = "precise.log"


def precise_settings(charon_dir: Path, **settings: Any) -> CharonSettings:
    """CharonSettings with a second filelog, `<charon_dir>/precise.log`, stamped with epoch seconds and
    milliseconds (the harness's own log has whole seconds). charon_factory's directory is tmp_path/name."""
    extra = f"""    filelog {{
        precise {{
            path = {charon_dir / PRECISE_LOG}
            append = no
            flush_line = yes
            time_format = %s
            time_add_ms = yes
            default = 1
            ike = 2
            knl = 2
        }}
    }}"""
    return CharonSettings(extra=extra, **settings)


_STAMPED = re.compile(r"^(\d+\.\d{3}) (.*)$")


def charon_log_time(charon: Charon, pattern: str, after: float = 0.0) -> tuple[float, str] | None:
    """(time, line) of the first line of charon's precise log matching `pattern` at or after `after`."""
    path = charon.workdir / PRECISE_LOG
    if not path.exists():
        return None
    rx = re.compile(pattern)
    for line in path.read_text(errors="replace").splitlines():
        m = _STAMPED.match(line)
        if m and float(m.group(1)) >= after - 0.001 and rx.search(m.group(2)):
            return float(m.group(1)), m.group(2)
    return None


def wait_charon_log_time(charon: Charon, pattern: str, after: float, timeout: float = WAIT) -> tuple[float, str]:
    found: tuple[float, str] = charon.wait_until(lambda: charon_log_time(charon, pattern, after), timeout,
                                                 f"precise log line /{pattern}/")
    return found


def only_sa(charon: Charon) -> IkeSA:
    sas = charon.list_sas()
    assert len(sas) == 1, sas
    return sas[0]


# ---- measuring --------------------------------------------------------------------------------------


class PingRun:
    """`ping -D` from `src` to `dst` in the background; `replies()` waits (bounded) for it to end."""

    def __init__(self, ns: Namespace, src: str, dst: str, count: int = PING_COUNT,
                 interval: float = PING_INTERVAL) -> None:
        import subprocess
        self.count, self.interval = count, interval
        self.started = time.time()
        self.proc = ns.popen(["ping", "-D", "-n", "-c", str(count), "-i", str(interval), "-W", "1", "-I", src, dst],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output = ""

    def replies(self) -> list[float]:
        self.output, _ = self.proc.communicate(timeout=self.count * self.interval + 15)
        return [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes from", self.output, re.M)]


@dataclass(frozen=True)
class Outage:
    last_before: float  # last reply (or packet) before the move
    first_after: float  # first one after it
    moved_at: float
    after: int  # how many came after the move

    @property
    def gap(self) -> float:
        return self.first_after - self.last_before

    @property
    def resume(self) -> float:
        return self.first_after - self.moved_at


def outage(times: list[float], moved_at: float, what: str) -> Outage:
    before = [t for t in times if t < moved_at]
    after = [t for t in times if t >= moved_at]
    assert before, f"no {what} before the move"
    assert after, f"no {what} after the move"
    return Outage(before[-1], after[0], moved_at, len(after))


def ike_headers(pcap: Path) -> list[tuple[float, str, str, int, bool, int]]:
    """(time, src, dst, exchange type, is response, message ID) of every IKE message in a capture."""
    return [(d.timestamp, d.src, d.dst, m[18], bool(m[19] & 0x20), int.from_bytes(m[20:24], "big"))
            for d, m in ike_messages(pcap)]


# ---- the topology, and strongSwan to strongSwan -----------------------------------------------------


def _promote_secondaries_matters(ns: Namespace) -> tuple[list[str], list[str]]:
    """On a scratch loopback subnet: the secondary left after deleting the primary, with
    promote_secondaries off and on (proof that the knob does what the topology relies on); ends on."""
    left = []
    for value in ("0", "1"):  # the kernel ORs `all` with the interface's value: both change
        ns.run(["sysctl", "-qw", f"net.ipv4.conf.all.promote_secondaries={value}",
                f"net.ipv4.conf.lo.promote_secondaries={value}"])
        ns.ip("addr", "add", "10.250.0.1/24", "dev", "lo")
        ns.ip("addr", "add", "10.250.0.2/24", "dev", "lo")
        ns.ip("addr", "del", "10.250.0.1/24", "dev", "lo")
        left.append([a for a in MobikeTopology.ipv4_addresses(ns, "lo") if a.startswith("10.250.")])
        for a in left[-1]:
            ns.ip("addr", "del", f"{a}/24", "dev", "lo")
    return left[0], left[1]


def test_topology_moves_the_address_and_strongswan_follows_itself(topologies: Callable[..., MobikeTopology],
                                                                  charon_factory: CharonFactory,
                                                                  tmp_path: Path) -> None:
    """The layer below the other tests: the address moves (promote_secondaries), the kernel's source for
    the gateway follows, and charon-to-charon MOBIKE (mobike = yes) carries ping across the move."""
    t = topologies(mobile_inner=(f"{MOBILE_INNER}/32",), gateway_inner=(f"{GW_INNER}/32",))
    a = t.addresses
    off, on = _promote_secondaries_matters(t.mobile)
    assert (off, on) == ([], ["10.250.0.2"]), (off, on)
    for ns, ifname in ((t.mobile, t.mobile_if), (t.gateway, t.gateway_if)):
        for scope in ("all", ifname):
            value = ns.run(["sysctl", "-n", f"net.ipv4.conf.{scope}.promote_secondaries"]).stdout.strip()
            assert value == "1", (ns.name, scope, value)
        assert ns.run(["sysctl", "-n", "net.ipv6.conf.all.disable_ipv6"]).stdout.strip() == "1"
    assert t.route_source(t.mobile, a.gateway) == a.mobile

    mobile_cfg, _ = psk_connection_pair("%any", a.gateway, mobike="yes", left_ts=[MOBILE_NET], right_ts=[GW_NET],
                                        esp_proposals=[ESP_PROPOSAL], left_id="peer", right_id="gw", psk=PSK)
    _, gw_cfg = psk_connection_pair(a.mobile, "%any", mobike="yes", left_ts=[MOBILE_NET], right_ts=[GW_NET],
                                    esp_proposals=[ESP_PROPOSAL], left_id="peer", right_id="gw", psk=PSK)
    gw = charon_factory(t.gateway, "gw", precise_settings(tmp_path / "gw"))
    gw.load(gw_cfg)
    mobile = charon_factory(t.mobile, "mobile", precise_settings(tmp_path / "mobile"))
    mobile.load(mobile_cfg)
    mobile.initiate(child="net")
    before = only_sa(mobile)
    assert before.local_host == a.mobile
    wait_for_ping(t.mobile, MOBILE_INNER, GW_INNER)

    pings = PingRun(t.mobile, MOBILE_INNER, GW_INNER)
    time.sleep(MOVE_AFTER)
    moved_at = t.move_address()
    assert t.mobile_addresses() == [a.moved]
    assert t.route_source(t.mobile, a.gateway) == a.moved
    replies = pings.replies()
    gone = wait_charon_log_time(mobile, rf"{re.escape(a.mobile)} disappeared from", moved_at - 1)
    update = wait_charon_log_time(mobile, r"generating INFORMATIONAL request \d+ \[ N\(UPD_SA_ADDR\)", moved_at)
    wait_charon_log_time(gw, rf"remote endpoint changed from {re.escape(a.mobile)}\[4500\] to "
                             rf"{re.escape(a.moved)}\[4500\]", moved_at)
    after = only_sa(mobile)
    assert (after.spi_i, after.spi_r, after.local_host) == (before.spi_i, before.spi_r, a.moved)
    assert only_sa(gw).remote_host == a.moved
    lost = outage(replies, moved_at, "ping reply")
    assert lost.resume < RESUME_BOUND, pings.output[-2000:]
    print(f"strongSwan<->strongSwan MOBIKE: kernel-netlink saw the address go {gone[0] - moved_at:+.3f} s, "
          f"UPDATE_SA_ADDRESSES {update[0] - moved_at:.3f} s after the move; ping gap {lost.gap:.3f} s, "
          f"first reply {lost.resume:.3f} s after the move, {lost.first_after - update[0]:.3f} s after the update; "
          f"{len(replies)}/{PING_COUNT} replies")


# ---- 1: strongSwan initiator moves, the ikev2lib gateway answers -------------------------------------


def _gateway_with_mobike(stack: contextlib.ExitStack, ns: Namespace, work: Path, me: str,
                         mobike: bool = True) -> RunningGateway:
    toml = gateway_toml(me=me, peer="%any", inner=GW_INNER, local_net=GW_NET, remote_net=MOBILE_NET, local_id="gw",
                        remote_id="peer", initiate=False)
    # a connection key: after the [connections.site] table's other keys
    toml = toml.replace("[connections.site.children.net]",
                        f"mobike = {str(mobike).lower()}\n[connections.site.children.net]")
    return start_gateway(stack, ns, work, toml)


@pytest.mark.parametrize("move", ["address", "second-link"])
def test_strongswan_initiator_moves_and_the_ikev2lib_gateway_follows(topologies: Callable[..., MobikeTopology],
                                                                     charon_factory: CharonFactory, tmp_path: Path,
                                                                     move: str) -> None:
    """address: 192.0.2.10 -> 192.0.2.20 on link 1; second-link: link 1 goes down, charon moves to
    198.51.100.10 on link 2 (the gateway keeps 192.0.2.1, reached over link 2)."""
    second = move == "second-link"
    t = topologies(second_link=second, mobile_inner=(f"{MOBILE_INNER}/32",))
    a = t.addresses
    new_addr = a.mobile2 if second else a.moved
    charon_cfg, _ = psk_connection_pair("%any", a.gateway, conn="site", child="net", mobike="yes",
                                        left_ts=[MOBILE_NET], right_ts=[GW_NET], esp_proposals=[ESP_PROPOSAL],
                                        left_id="peer", right_id="gw", psk=PSK)
    charon = charon_factory(t.mobile, "mobile", precise_settings(tmp_path / "mobile"))
    charon.load(charon_cfg)
    with contextlib.ExitStack() as stack:
        captures = [stack.enter_context(Capture(t.gateway, ifname, tmp_path / f"{ifname}.pcap"))
                    for ifname in ((t.gateway_if, t.gateway_if2) if second else (t.gateway_if,))]
        gw = _gateway_with_mobike(stack, t.gateway, tmp_path / "gw", a.gateway)
        gw.wait(lambda s: s["listen"], "gateway listening")
        charon.initiate(child="net", timeout=20)
        gw.wait(established("site"), "tunnel up")
        charon.wait_for_child("net")
        wait_for_ping(t.mobile, MOBILE_INNER, GW_INNER)
        before, gw_before = only_sa(charon), gw.status()["ike_sas"][0]
        child_before = charon.wait_for_child("net")
        assert (gw_before["spi_i"], gw_before["spi_r"]) == (before.spi_i, before.spi_r)
        assert before.local_host == a.mobile and gw_before["remote"].startswith(f"{a.mobile}[")
        assert charon_log_time(charon, r"N\(MOBIKE_SUP\)") is not None  # charon offered MOBIKE ...
        assert re.search(r"parsed IKE_AUTH response 1 \[.*N\(MOBIKE_SUP\)", charon.log_text()), \
            "the gateway did not answer MOBIKE_SUPPORTED"  # ... and the gateway took it

        pings = PingRun(t.mobile, MOBILE_INNER, GW_INNER)
        time.sleep(MOVE_AFTER)
        moved_at = t.link_down(1) if second else t.move_address()
        assert t.route_source(t.mobile, a.gateway) == new_addr
        replies = pings.replies()
        noticed = wait_charon_log_time(charon, r"creating roam job", moved_at)
        update = wait_charon_log_time(charon, r"generating INFORMATIONAL request \d+ \[ N\(UPD_SA_ADDR\)", moved_at,
                                      timeout=NOTICE_BOUND)
        update_id = re.search(r"request (\d+)", update[1]).group(1)  # type: ignore[union-attr]
        answered = wait_charon_log_time(charon, rf"parsed INFORMATIONAL response {update_id} \[", update[0])
        changed = wait_charon_log_time(charon, rf"local endpoint changed from {re.escape(a.mobile)}\[4500\] to "
                                               rf"{re.escape(new_addr)}\[4500\]", moved_at)
        for capture in captures:
            capture.stop()

        after = only_sa(charon)
        assert (after.spi_i, after.spi_r, after.local_host) == (before.spi_i, before.spi_r, new_addr)
        gw_after = gw.wait(lambda s: s["ike_sas"] and s["ike_sas"][0]["remote"].startswith(f"{new_addr}[")
                           and s["ike_sas"][0], "the gateway's IKE SA at the new address")
        assert (gw_after["spi_i"], gw_after["spi_r"]) == (before.spi_i, before.spi_r)  # the same IKE SA
        # the Child SA: the same one, or (libipsec cannot update SAs: charon rekeys after MOBIKE) its
        # rekeyed successor in the same IKE SA, installed alike on both sides
        child_after = charon.wait_for_child("net")
        installed = [c for c in gw_after["children"] if c["state"] == "installed"]
        assert [(c["spi_in"], c["spi_out"]) for c in installed] == [(child_after.spi_out, child_after.spi_in)], \
            (installed, child_after)
        rekeyed = child_after.spi_in != child_before.spi_in

        log = gw.log.read_text(errors="replace")
        mobike_lines = gateway_mobike_log(a.gateway, a.mobile, new_addr).findall(log)
        nat_lines = GATEWAY_NAT_FOLLOW_LOG.findall(log)
        headers = sorted(h for c in captures for h in ike_headers(c.path))
        inits = [h for h in headers if h[3] == IKE_SA_INIT]
        assert len(inits) == 2, inits  # the one IKE_SA_INIT exchange before the move, no new one
        from_new = [h for h in headers if h[1] == new_addr and h[3] == INFORMATIONAL]
        assert from_new, "no INFORMATIONAL from the new address reached the gateway"
        # the gateway's own request to the new address after the move: its return routability check
        checks = [h for h in headers if h[0] >= moved_at and h[1] == a.gateway and h[2] == new_addr
                  and h[3] == INFORMATIONAL and not h[4]]
        exchanges = [(round(h[0] - moved_at, 3), "gw" if h[1] == a.gateway else "charon", h[3],
                      "resp" if h[4] else "req",
                      h[5]) for h in headers if h[0] >= moved_at]

        rekey_done = charon_log_time(charon, r"outbound CHILD_SA net\{\d+\} established", update[0])
        installed_after = ("" if rekey_done is None
                           else f" (charon installed it {rekey_done[0] - update[0]:.3f} s after its update)")
        lost = outage(replies, moved_at, "ping reply")
        report = (f"{move}: charon's roam job {noticed[0] - moved_at:.3f} s after the move, UPDATE_SA_ADDRESSES "
                  f"{update[0] - moved_at:.3f} s, answered {answered[0] - update[0] :.3f} s later; ping gap "
                  f"{lost.gap:.3f} s, first reply {lost.resume:.3f} s after the move and "
                  f"{lost.first_after - update[0]:.3f} s after charon's update; {len(replies)}/{PING_COUNT} replies; "
                  f"Child SA {'rekeyed' if rekeyed else 'kept'}{installed_after}; gateway's return routability check "
                  f"{[round(h[0] - update[0], 3) for h in checks]} s after charon's update; gateway log: "
                  f"MOBIKE {mobike_lines[-2:]}, NAT following {nat_lines[-2:]}; IKE after the move (s, from, "
                  f"exchange, req/resp, message ID): {exchanges[:12]}")
        print(report)
        assert changed and lost.resume < RESUME_BOUND, report + "\n" + pings.output[-2000:]
        assert lost.after >= (PING_COUNT - (MOVE_AFTER + RESUME_BOUND) / PING_INTERVAL) * 0.9, report
        assert len(mobike_lines) == 1, "the gateway did not log one MOBIKE address update:\n" + log[-3000:]
        assert nat_lines == [], nat_lines  # a new IP of a MOBIKE peer waits for its update (RFC 4555 3.5)
        assert checks, "the gateway moved without a return routability check of the new address"
        for state in (gw.status(),):
            assert state["datapath"]["drops"] == {}, state["datapath"]


# ---- 2 and 3: the ikev2lib initiator moves, strongSwan answers ---------------------------------------


def _charon_responder(charon_factory: CharonFactory, t: MobikeTopology, tmp_path: Path) -> Charon:
    cfg, _ = psk_connection_pair(t.addresses.gateway, "%any", conn="site", child="net", mobike="yes",
                                 left_ts=[GW_NET], right_ts=[MOBILE_NET], esp_proposals=[ESP_PROPOSAL],
                                 left_id="gw", right_id="peer", psk=PSK)
    charon = charon_factory(t.gateway, "gw", precise_settings(tmp_path / "gw"))
    charon.load(cfg)
    return charon


def _our_config(**options: Any) -> IkeConfig:
    return IkeConfig(ike_proposals=IKE_PROPOSAL, local_id="peer", remote_id="gw", psk=PSK.encode(), mobike=True,
                     # no PFS, as charon's: its rekey after a MOBIKE update offers no KE payload
                     children=(ChildConfig(name="net", esp_proposals=ESP_PROPOSAL, local_ts=(MOBILE_NET,),
                                           remote_ts=(GW_NET,)),), **options)


@pytest.fixture
def our_peers() -> Iterator[list[IkeLibPeer]]:
    started: list[IkeLibPeer] = []
    yield started
    for peer in started:
        peer.close()


def _start_ours(our_peers: list[IkeLibPeer], t: MobikeTopology, config: IkeConfig) -> IkeLibPeer:
    peer = IkeLibPeer(t.mobile, t.addresses.mobile, config, bind_host="0.0.0.0")
    our_peers.append(peer)
    return peer.start()


def _esp_to_charon(peer: IkeLibPeer, t: MobikeTopology, child_id: int, tag: str, workdir: Path) -> None:
    receiver = start_receiver(t.gateway, GW_INNER, TRAFFIC_PORT, DATAGRAMS, RECEIVE_TIMEOUT, str(workdir))
    payloads = [f"ikev2lib->charon {tag} {i}".encode() for i in range(DATAGRAMS)]
    for i, payload in enumerate(payloads):
        peer.send_esp(child_id, udp_ipv4_packet(MOBILE_INNER, GW_INNER, 4000, TRAFFIC_PORT, payload, i))
    got = receiver.result(timeout=RECEIVE_TIMEOUT + 5)
    assert [data for data, _ in got] == payloads, f"{tag}: charon's side received {got}"


def _esp_from_charon(peer: IkeLibPeer, t: MobikeTopology, child_id: int, tag: str) -> None:
    start = len(peer.wait_for_esp(0, timeout=0))
    payloads = [f"charon->ikev2lib {tag} {i}".encode() for i in range(DATAGRAMS)]
    t.gateway.call(udp_send, GW_INNER, MOBILE_INNER, TRAFFIC_PORT, payloads, 0.02)
    got = peer.wait_for_esp(start + DATAGRAMS)[start:]
    decoded = [udp_payload_of(r.inner) for r in got]
    assert [(r.child_id, d[4] if d else None) for r, d in zip(got, decoded)] == [(child_id, p) for p in payloads], tag


def _settled_child(peer: IkeLibPeer, charon: Charon, first: ChildSaCreated) -> int:
    """The child_id of the Child SA now carrying the tunnel, once charon has exactly that one installed
    (charon rekeys after a MOBIKE update: libipsec cannot move an SA)."""
    def check() -> tuple[int] | None:
        rekeys = [e for e in peer.all_events() if isinstance(e, ChildSaRekeyed)]
        ours: ChildSaCreated | ChildSaRekeyed = rekeys[-1] if rekeys else first
        theirs = [c.spi_in for sa in charon.list_sas() for c in sa.children if c.state == "INSTALLED"]
        return (ours.child_id,) if theirs == [ours.spi_out.hex()] else None
    found: tuple[int] = charon.wait_until(check, WAIT, "one Child SA installed alike on both sides")
    return found[0]


def _establish(peer: IkeLibPeer, charon: Charon, t: MobikeTopology) -> tuple[IkeSaEstablished, ChildSaCreated, IkeSA]:
    peer.initiate(peer.config or _our_config(), t.addresses.gateway)
    est = peer.wait_for(IkeSaEstablished)
    child = peer.wait_for(ChildSaCreated)
    sa = charon.wait_for_ike("site")
    charon.wait_for_child("net")
    assert (sa.spi_i, sa.spi_r) == (est.spi_i.hex(), est.spi_r.hex())
    assert sa.remote_host == t.addresses.mobile
    ike_sa_id = est.ike_sa_id
    assert ike_sa_id is not None
    assert peer.call(lambda: peer.endpoint.connection(ike_sa_id).peer_mobike) is True  # charon said MOBIKE_SUP
    return est, child, sa


def _events_text(events: list[Event]) -> str:
    return "\n".join(repr(e) for e in events if not isinstance(e, (ChildSaCreated, ChildSaRekeyed)))[-3000:]


def test_ikev2lib_initiator_moves_and_strongswan_follows(topologies: Callable[..., MobikeTopology],
                                                         charon_factory: CharonFactory, our_peers: list[IkeLibPeer],
                                                         tmp_path: Path) -> None:
    t = topologies(gateway_inner=(f"{GW_INNER}/32",))
    a = t.addresses
    charon = _charon_responder(charon_factory, t, tmp_path)
    peer = _start_ours(our_peers, t, _our_config())
    with Capture(t.mobile, t.mobile_if, tmp_path / "mobile.pcap") as capture:
        est, child, before = _establish(peer, charon, t)
        _esp_to_charon(peer, t, child.child_id, "before", tmp_path)
        _esp_from_charon(peer, t, child.child_id, "before")

        start = len(peer.wait_for_esp(0, timeout=0))
        stream = t.gateway.start(udp_send, GW_INNER, MOBILE_INNER, TRAFFIC_PORT,
                                 [f"stream {i}".encode() for i in range(STREAM_COUNT)], STREAM_INTERVAL)
        time.sleep(1.0)
        moved_at = t.move_address()
        asked_at = time.time()
        told_at = peer.local_addresses_changed(t.mobile_addresses())
        updated = peer.wait_for(IkeSaAddressesUpdated, timeout=WAIT)
        updated_at = time.time()
        stream.result(timeout=STREAM_COUNT * STREAM_INTERVAL + 20)
        received: list[ReceivedEsp] = peer.wait_for_esp(0, timeout=0)[start:]
        changed = wait_charon_log_time(charon, rf"remote endpoint changed from {re.escape(a.mobile)}\[4500\] to "
                                               rf"{re.escape(a.moved)}\[4500\]", moved_at)
        # ESP both ways through the Child SA that now carries the tunnel, from the new address
        current = _settled_child(peer, charon, child)
        _esp_to_charon(peer, t, current, "after", tmp_path)
        _esp_from_charon(peer, t, current, "after")
    headers = ike_headers(capture.path)

    assert updated.ike_sa_id == est.ike_sa_id
    assert (updated.old_local_addr[0], updated.local_addr[0]) == (a.mobile, a.moved), updated
    assert updated.remote_addr == updated.old_remote_addr == (a.gateway, 4500), updated
    after = only_sa(charon)
    assert (after.spi_i, after.spi_r) == (before.spi_i, before.spi_r)  # the same IKE SA on charon's side
    assert after.remote_host == a.moved
    inits = [h for h in headers if h[3] == IKE_SA_INIT]
    assert len(inits) == 2, inits  # no new IKE_SA_INIT
    sent_after = [h for h in headers if h[0] >= moved_at and h[2] == a.gateway]
    assert sent_after and {h[1] for h in sent_after} == {a.moved}, sent_after  # IKE left from the new address
    esp_after = [d for d in read_pcap(capture.path) if d.timestamp >= moved_at and d.dst == a.gateway
                 and d.dport == 4500 and len(d.payload) > 8 and d.payload[:4] != bytes(4)]
    assert esp_after and {(d.src, d.sport) for d in esp_after} == {(a.moved, 4500)}  # and ESP in UDP too
    failures = [e for e in peer.all_events() if isinstance(e, (PeerDead, IkeSaDeleted))]
    assert not failures, _events_text(peer.all_events())

    streamed = [r for r in received if (d := udp_payload_of(r.inner)) and d[4].startswith(b"stream ")]
    times = [r.at for r in streamed]
    lost = outage(times, moved_at, "ESP from charon")
    resumed_on = next(r.child_id for r in streamed if r.at >= moved_at)
    print(f"ikev2lib initiator moved: engine told {asked_at - moved_at:.3f} s after the move (the call took "
          f"{told_at - asked_at:.3f} s), IkeSaAddressesUpdated seen {updated_at - asked_at:.3f} s after the call, "
          f"charon moved {changed[0] - asked_at:.3f} s after it; ESP from charon: gap {lost.gap:.3f} s, back "
          f"{lost.first_after - asked_at:.3f} s after local_addresses_changed; {len(times)}/{STREAM_COUNT} datagrams; "
          f"Child SA {'rekeyed' if current != child.child_id else 'kept'}, the first ESP after the move on Child SA "
          f"{resumed_on} ({'the first' if resumed_on == child.child_id else 'the rekeyed one'}); "
          f"IKE after the move (s after the call, "
          f"src, dst, exchange, response, message ID): "
          f"{[(round(h[0] - asked_at, 3), h[1], h[2], h[3], h[4], h[5]) for h in headers if h[0] >= moved_at][:10]}")
    assert lost.first_after - asked_at < RESUME_BOUND


def test_a_move_strongswan_cannot_answer_is_not_taken_silently(topologies: Callable[..., MobikeTopology],
                                                               charon_factory: CharonFactory,
                                                               our_peers: list[IkeLibPeer], tmp_path: Path) -> None:
    """The mobile host moves to 203.0.113.5 (a host route to the gateway over link 1); the gateway
    namespace has no route back, so charon's answers cannot leave ("Network is unreachable"). The
    engine must not report the SA moved; it gives up on the peer after its retransmissions."""
    t = topologies(gateway_inner=(f"{GW_INNER}/32",))
    a = t.addresses
    charon = _charon_responder(charon_factory, t, tmp_path)
    peer = _start_ours(our_peers, t, _our_config(retransmit=FAST_RETRANSMIT))
    est, child, before = _establish(peer, charon, t)
    _esp_to_charon(peer, t, child.child_id, "before", tmp_path)
    moved_at = t.move_address(new=UNREACHABLE)
    t.mobile.ip("route", "add", f"{a.gateway}/32", "dev", t.mobile_if, "src", UNREACHABLE)
    assert t.route_source(t.mobile, a.gateway) == UNREACHABLE
    assert t.gateway.run(["ip", "route", "get", UNREACHABLE], check=False).returncode != 0
    with Capture(t.mobile, t.mobile_if, tmp_path / "mobile.pcap") as capture:
        told_at = peer.local_addresses_changed(t.mobile_addresses())
        try:
            dead = peer.wait_for(PeerDead, timeout=REFUSED_WATCH)
        except TimeoutError:
            dead = None
    events = [e for e in peer.all_events() if not isinstance(e, (ChildSaCreated, ChildSaRekeyed, IkeSaEstablished))]
    sent = [h for h in ike_headers(capture.path) if h[1] == UNREACHABLE]
    state = peer.call(lambda: [(sa.ike_sa_id, sa.state.value, getattr(sa, "local_addr", None), sa.remote_addr)
                               for sa in peer.endpoint.connections()])
    charon_side = charon_log_time(charon, rf"remote endpoint changed from {re.escape(a.mobile)}\[4500\] to "
                                          rf"{re.escape(UNREACHABLE)}\[4500\]", moved_at)
    unreachable = charon_log_time(charon, r"error writing to socket", moved_at)
    print(f"refused move: requests sent from {UNREACHABLE}: "
          f"{[(round(h[0] - told_at, 3), h[3], h[4], h[5]) for h in sent]}; charon moved its side: {charon_side}; "
          f"charon could not answer: {unreachable}; PeerDead after {None if dead is None else 'yes'}; "
          f"engine SAs now {state}; events: {[type(e).__name__ for e in events]}")
    assert sent, "the engine sent nothing from the new address"
    assert not [e for e in events if isinstance(e, IkeSaAddressesUpdated)], _events_text(events)
    assert dead is not None and dead.ike_sa_id == est.ike_sa_id, \
        f"the engine neither moved the SA nor gave up on the path within {REFUSED_WATCH} s: {state}"


def test_with_mobike_off_the_gateway_makes_strongswan_start_over(topologies: Callable[..., MobikeTopology],
                                                                 charon_factory: CharonFactory,
                                                                 tmp_path: Path) -> None:
    """`mobike = false` on the gateway: no MOBIKE_SUPPORTED in its IKE_AUTH answer, so charon cannot
    move the IKE SA; after the move it reauthenticates ("reauthenticating IKE_SA due to address
    change": a Delete of the old IKE SA from the new address, then a new IKE_SA_INIT) and the gateway
    takes the new one. The contrast to the MOBIKE test above, and proof of the TOML switch."""
    t = topologies(mobile_inner=(f"{MOBILE_INNER}/32",))
    a = t.addresses
    charon_cfg, _ = psk_connection_pair("%any", a.gateway, conn="site", child="net", mobike="yes",
                                        left_ts=[MOBILE_NET], right_ts=[GW_NET], esp_proposals=[ESP_PROPOSAL],
                                        left_id="peer", right_id="gw", psk=PSK)
    charon = charon_factory(t.mobile, "mobile", precise_settings(tmp_path / "mobile"))
    charon.load(charon_cfg)
    with contextlib.ExitStack() as stack:
        capture = stack.enter_context(Capture(t.gateway, t.gateway_if, tmp_path / "gw.pcap"))
        gw = _gateway_with_mobike(stack, t.gateway, tmp_path / "gw", a.gateway, mobike=False)
        gw.wait(lambda s: s["listen"], "gateway listening")
        charon.initiate(child="net", timeout=20)
        gw.wait(established("site"), "tunnel up")
        wait_for_ping(t.mobile, MOBILE_INNER, GW_INNER)
        before = only_sa(charon)
        auth = re.search(r"parsed IKE_AUTH response 1 \[(.*)\]", charon.log_text())
        assert auth and "MOBIKE_SUP" not in auth.group(1), auth
        pings = PingRun(t.mobile, MOBILE_INNER, GW_INNER)
        time.sleep(MOVE_AFTER)
        moved_at = t.move_address()
        replies = pings.replies()
        capture.stop()
        new = charon.wait_until(lambda: [sa for sa in charon.list_sas() if sa.state == "ESTABLISHED"
                                         and sa.spi_i != before.spi_i and sa.child("net") is not None], WAIT,
                                "a new IKE SA")[0]
        assert new.local_host == a.moved
        gw_new = gw.wait(lambda s: [x for x in s["ike_sas"] if x["spi_i"] == new.spi_i and x["children"]],
                         "the gateway's new IKE SA")[0]
        assert gw_new["remote"].startswith(f"{a.moved}[")
        inits = [h for h in ike_headers(capture.path) if h[3] == IKE_SA_INIT and h[0] >= moved_at]
        assert inits and inits[0][1] == a.moved, inits  # a new IKE_SA_INIT, from the new address
        assert gateway_mobike_log(a.gateway, a.mobile, a.moved).findall(gw.log.read_text(errors="replace")) == []
        lost = outage(replies, moved_at, "ping reply")
        print(f"mobike = false: charon started over {inits[0][0] - moved_at:.3f} s after the move; ping gap "
              f"{lost.gap:.3f} s, first reply {lost.resume:.3f} s after the move; {len(replies)}/{PING_COUNT} replies")
