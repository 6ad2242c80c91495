"""The README's main job: two `ikev2lib run` gateways at work (needs root).

Two network namespaces joined by a veth pair (192.0.2.1 <-> 192.0.2.2) stand for two sites; each
runs a gateway with its TUN data path and an inner network behind it (10.1.0.0/24, 10.2.0.0/24).
The demo brings the tunnel up, pings across it, runs iperf3 TCP through it while the left gateway
rekeys the Child SA every few seconds and the right one rekeys the IKE SA, then prints what the
gateways say: `ikev2lib status`, the drops, and an excerpt of the Prometheus metrics. Everything it
creates (namespaces, processes, files) is removed at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

IP = shutil.which("ip") or "/usr/sbin/ip"
LEFT, RIGHT = "192.0.2.1", "192.0.2.2"
LEFT_NET, RIGHT_NET = "10.1.0.0/24", "10.2.0.0/24"
LEFT_INNER, RIGHT_INNER = "10.1.0.1", "10.2.0.1"
METRICS_PORT = 9109
SETUP_TIMEOUT = 20.0  # seconds for a gateway to start and the tunnel to come up
COMMAND_TIMEOUT = 30.0
METRIC_PREFIXES = ("ikev2lib_tunnel_", "ikev2lib_child_sa_events_total", "ikev2lib_ike_sa_events_total",
                   "ikev2lib_handshake_duration_seconds_count", "ikev2lib_ike_sas{")

TOML = """\
listen = ["{me}"]
[datapath]
tun = "ikv0"
addresses = ["{inner}/24"]
[connections.site]
local_addrs = ["{me}"]
remote_addrs = ["{peer}"]
local_id = "{local_id}"
remote_id = "{remote_id}"
psk = "{psk}"
ike_proposals = "aes128gcm16-prfsha256-x25519"
start_action = "{start}"
{ike_rekey}
[connections.site.children.net]
local_ts = ["{local_net}"]
remote_ts = ["{remote_net}"]
esp_proposals = "aes128gcm16"
{child_rekey}
"""


def run(*args: str, timeout: float = COMMAND_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=check)


class Site:
    def __init__(self, name: str, work: Path) -> None:
        self.ns = name
        self.work = work
        self.control = work / "control.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def exec(self, *args: str) -> list[str]:
        return [IP, "netns", "exec", self.ns, *args]

    def start(self, toml: str, metrics: bool) -> None:
        (self.work / "gateway.toml").write_text(toml)
        extra = ["--metrics", f"127.0.0.1:{METRICS_PORT}"] if metrics else []
        log = open(self.work / "gateway.log", "wb")
        self.proc = subprocess.Popen(self.exec(sys.executable, "-m", "ikev2lib", "run", "--config",
                                               str(self.work / "gateway.toml"), "--control", str(self.control),
                                               *extra), stdout=log, stderr=subprocess.STDOUT)

    def ikev2lib(self, *args: str) -> str:
        return run(sys.executable, "-m", "ikev2lib", *args, "--control", str(self.control)).stdout

    def status(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.ikev2lib("status", "--json"))

    def wait_established(self) -> None:
        deadline = time.monotonic() + SETUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"{self.ns}: the gateway exited:\n{(self.work / 'gateway.log').read_text()[-3000:]}")
            if self.control.exists():
                sas = self.status()["ike_sas"]
                if any(s["state"] == "established" and s["children"] for s in sas):
                    return
            time.sleep(0.1)
        raise SystemExit(f"{self.ns}: no tunnel after {SETUP_TIMEOUT} s:\n{(self.work / 'gateway.log').read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def setup_namespaces(left: Site, right: Site, tag: str) -> None:
    for site in (left, right):
        run(IP, "netns", "add", site.ns)
        run(*site.exec("ip", "link", "set", "lo", "up"))
        run(*site.exec("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"))
    run(IP, "link", "add", f"vd{tag}l", "netns", left.ns, "type", "veth", "peer", "name", f"vd{tag}r", "netns", right.ns)
    for site, ifname, addr in ((left, f"vd{tag}l", LEFT), (right, f"vd{tag}r", RIGHT)):
        run(*site.exec("ip", "addr", "add", f"{addr}/24", "dev", ifname))
        run(*site.exec("ip", "link", "set", ifname, "up"))


def iperf(left: Site, right: Site, seconds: int) -> dict:  # type: ignore[type-arg]
    server = subprocess.Popen(right.exec("iperf3", "-s", "-1", "-B", RIGHT_INNER), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        done = run(*left.exec("iperf3", "-c", RIGHT_INNER, "-B", LEFT_INNER, "-t", str(seconds), "-J"),
                   timeout=seconds + COMMAND_TIMEOUT, check=False)
        return json.loads(done.stdout)  # type: ignore[no-any-return]
    finally:
        server.wait(timeout=COMMAND_TIMEOUT)


def metrics_excerpt(left: Site) -> list[str]:
    script = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/metrics').read().decode())"
    text = run(*left.exec(sys.executable, "-c", script)).stdout
    return [line for line in text.splitlines() if line.startswith(METRIC_PREFIXES) and not line.endswith(" 0.0")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8, help="length of the iperf3 run (default 8)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the gateway demo creates network namespaces and TUN devices: run it as root")
    for tool in ("iperf3", "ping"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run scripts/bootstrap.sh first")
    tag = secrets.token_hex(2)
    work = Path(tempfile.mkdtemp(prefix="ikev2lib-demo-"))
    left, right = Site(f"ikv-demo-{tag}-l", work / "left"), Site(f"ikv-demo-{tag}-r", work / "right")
    psk = secrets.token_hex(16)
    try:
        for site in (left, right):
            site.work.mkdir()
        setup_namespaces(left, right, tag)
        right.start(TOML.format(me=RIGHT, peer=LEFT, inner=RIGHT_INNER, local_id="right", remote_id="left", psk=psk,
                                start="none", ike_rekey='rekey_time = "4s"', local_net=RIGHT_NET,
                                remote_net=LEFT_NET, child_rekey=""), metrics=False)
        time.sleep(1.0)
        left.start(TOML.format(me=LEFT, peer=RIGHT, inner=LEFT_INNER, local_id="left", remote_id="right", psk=psk,
                               start="start", ike_rekey="", local_net=LEFT_NET, remote_net=RIGHT_NET,
                               child_rekey='rekey_time = "3s"'), metrics=True)
        left.wait_established()
        print(f"== tunnel up: {LEFT_NET} (left, {LEFT}) <=> {RIGHT_NET} (right, {RIGHT})")
        print(run(*left.exec("ping", "-c", "3", "-i", "0.2", "-I", LEFT_INNER, RIGHT_INNER), check=False).stdout)
        first = left.status()["ike_sas"][0]
        print(f"== iperf3 TCP {LEFT_INNER} -> {RIGHT_INNER} for {args.seconds} s, rekeying as it runs")
        report = iperf(left, right, args.seconds)
        if "error" in report:
            raise SystemExit(f"iperf3 failed: {report['error']}")
        for interval in report["intervals"]:
            s = interval["sum"]
            print(f"  {s['start']:4.1f}-{s['end']:4.1f} s  {s['bits_per_second'] / 1e6:8.1f} Mbit/s")
        end = report["end"]
        print(f"  total {end['sum_received']['bits_per_second'] / 1e6:.1f} Mbit/s received, "
              f"{end['sum_sent'].get('retransmits', 0)} TCP retransmissions")
        last = left.status()["ike_sas"][0]
        print(f"  Child SA #{first['children'][0]['child_id']} -> #{last['children'][0]['child_id']} "
              f"(rekeyed {last['children'][0]['child_id'] - first['children'][0]['child_id']} times), "
              f"IKE SPIs {first['spi_i']} -> {last['spi_i']}")
        print("\n== ikev2lib status (left)")
        print(left.ikev2lib("status"))
        print("== metrics (left, excerpt of http://127.0.0.1:9109/metrics)")
        print("\n".join(metrics_excerpt(left)))
        return 0
    finally:
        for site in (left, right):
            site.stop()
            run(IP, "netns", "delete", site.ns, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
