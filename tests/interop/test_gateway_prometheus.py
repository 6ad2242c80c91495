"""A real Prometheus server (Debian's /usr/bin/prometheus) scrapes two `ikev2lib run --metrics`
processes on loopback that bring a tunnel up between them; the series are read back through
Prometheus' HTTP query API. Loopback UDP with ESP in UDP (`encap`): no root, no namespaces.

Prometheus' own log is printed when the test fails, and the gateways' JSON logs too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PROMETHEUS = "/usr/bin/prometheus"
SITE_ADDR, HUB_ADDR = "127.0.0.1", "127.0.0.2"
PSK = "prometheus-test-psk-0123456789abcdef"
SCRAPE_INTERVAL = "1s"
READY_TIMEOUT = 15.0  # seconds for Prometheus to start and answer /-/ready
SERIES_TIMEOUT = 15.0  # seconds for the tunnel to come up and be scraped
STOP_TIMEOUT = 10.0  # seconds for a SIGTERM'd process to exit before it is killed
POLL = 0.2
HTTP_TIMEOUT = 2.0

SITE_TOML = """\
[connections.site]
local_addrs = ["{site}"]
remote_addrs = ["{hub}"]
remote_port = {hub_ike}
remote_natt_port = {hub_natt}
local_id = "site.example"
remote_id = "hub.example"
psk = "{psk}"
encap = true
[connections.site.children.net]
local_ts = ["10.1.0.0/16"]
remote_ts = ["10.2.0.0/16"]
start_action = "start"
"""

HUB_TOML = """\
[connections.hub]
local_addrs = ["{hub}"]
remote_addrs = ["{site}"]
remote_natt_port = {site_natt}
local_id = "hub.example"
remote_id = "site.example"
psk = "{psk}"
encap = true
[connections.hub.children.hub-net]
local_ts = ["10.2.0.0/16"]
remote_ts = ["10.1.0.0/16"]
"""

PROMETHEUS_YML = """\
global:
  scrape_interval: {interval}
  scrape_timeout: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: ikev2lib
    static_configs:
      - targets: ["{site_metrics}"]
        labels: {{side: site}}
      - targets: ["{hub_metrics}"]
        labels: {{side: hub}}
"""


def _free_port(kind: int, host: str) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as answer:  # loopback only
        return json.load(answer)


@dataclass
class Prometheus:
    url: str
    log: Path

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector of `expression` (each item: {"metric": labels, "value": [t, "v"]})."""
        answer = _get_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expression}))
        if answer.get("status") != "success":
            raise AssertionError(f"query {expression!r} failed: {answer}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_for(self, expression: str, check: Callable[[list[dict[str, Any]]], bool],
                 what: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + SERIES_TIMEOUT
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expression)
            if check(result):
                return result
            time.sleep(POLL)
        raise AssertionError(f"timed out after {SERIES_TIMEOUT}s waiting for {what}: {expression} = {result}")


@dataclass
class Gateways:
    site_metrics: str
    hub_metrics: str
    logs: dict[str, Path]
    procs: dict[str, subprocess.Popen[bytes]]


def _show_logs_on_failure(request: pytest.FixtureRequest, paths: dict[str, Path]) -> None:
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for name, path in paths.items():
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            print(f"----- {name} log ({path}) -----\n{text}", file=sys.stderr)


@pytest.fixture
def gateways(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Gateways]:
    """`ikev2lib run` for `site` (initiates) and `hub` (answers), each with --metrics and JSON logs."""
    site_ike, site_natt = _free_port(socket.SOCK_DGRAM, SITE_ADDR), _free_port(socket.SOCK_DGRAM, SITE_ADDR)
    hub_ike, hub_natt = _free_port(socket.SOCK_DGRAM, HUB_ADDR), _free_port(socket.SOCK_DGRAM, HUB_ADDR)
    values = {"site": SITE_ADDR, "hub": HUB_ADDR, "psk": PSK, "hub_ike": hub_ike, "hub_natt": hub_natt,
              "site_natt": site_natt}
    sides = {
        "hub": (HUB_TOML.format(**values), hub_ike, hub_natt),  # the responder first: it must be there to answer
        "site": (SITE_TOML.format(**values), site_ike, site_natt),
    }
    metrics = {name: f"127.0.0.1:{_free_port(socket.SOCK_STREAM, '127.0.0.1')}" for name in sides}
    logs = {name: tmp_path / f"{name}.log" for name in sides}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for name, (toml_text, ike_port, natt_port) in sides.items():
            config = tmp_path / f"{name}.toml"
            config.write_text(toml_text)
            with open(logs[name], "wb") as out:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "ikev2lib", "run", "--config", str(config), "--ike-port", str(ike_port),
                     "--natt-port", str(natt_port), "--control", str(tmp_path / f"{name}.sock"),
                     "--metrics", metrics[name], "--log-format", "json"],
                    stdout=out, stderr=subprocess.STDOUT, env=env,
                )  # fmt: skip
        yield Gateways(metrics["site"], metrics["hub"], logs, procs)
    finally:
        for proc in procs.values():
            _stop(proc)
        _show_logs_on_failure(request, {f"gateway {n}": p for n, p in logs.items()})


@pytest.fixture
def prometheus(gateways: Gateways, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Prometheus]:
    """A Prometheus server scraping both gateways every second; stopped (and its data removed) after."""
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail(f"{PROMETHEUS} is missing: install the Debian package `prometheus` "
                    "(scripts/apt-packages.txt lists it)", pytrace=False)
    work = tmp_path / "prometheus"
    work.mkdir()
    config = work / "prometheus.yml"
    config.write_text(PROMETHEUS_YML.format(interval=SCRAPE_INTERVAL, site_metrics=gateways.site_metrics,
                                            hub_metrics=gateways.hub_metrics))
    listen = f"127.0.0.1:{_free_port(socket.SOCK_STREAM, '127.0.0.1')}"
    log = work / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address={listen}", "--web.enable-lifecycle"],
            stdout=out, stderr=subprocess.STDOUT, cwd=work,
        )  # fmt: skip
    server = Prometheus(f"http://{listen}", log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=HTTP_TIMEOUT) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready after {READY_TIMEOUT}s:\n{log.read_text(errors='replace')}")
            time.sleep(POLL)
        yield server
    finally:
        _stop(proc)
        _show_logs_on_failure(request, {"prometheus": log})
        shutil.rmtree(work / "data", ignore_errors=True)


def _values(result: list[dict[str, Any]]) -> dict[str, float]:
    return {item["metric"].get("side", ""): float(item["value"][1]) for item in result}


def test_prometheus_scrapes_a_tunnel(prometheus: Prometheus, gateways: Gateways) -> None:
    both_up = prometheus.wait_for('up{job="ikev2lib"}', lambda r: _values(r) == {"site": 1.0, "hub": 1.0},
                                  "both gateways scraped")
    assert len(both_up) == 2

    established = prometheus.wait_for(
        'ikev2lib_ike_sas{state="established"}', lambda r: _values(r) == {"site": 1.0, "hub": 1.0},
        "the IKE SA established on both sides")
    assert {item["metric"]["connection"] for item in established} == {"site", "hub"}

    children = prometheus.wait_for(
        'ikev2lib_child_sas{state="installed"}', lambda r: _values(r) == {"site": 1.0, "hub": 1.0},
        "the Child SA installed on both sides")
    assert {(i["metric"]["connection"], i["metric"]["child"]) for i in children} == {
        ("site", "net"), ("hub", "hub-net")}

    handshakes = prometheus.wait_for(
        "ikev2lib_handshake_duration_seconds_count", lambda r: _values(r) == {"site": 1.0, "hub": 1.0},
        "one handshake observed per side")
    assert {(i["metric"]["connection"], i["metric"]["role"]) for i in handshakes} == {
        ("site", "initiator"), ("hub", "responder")}
    latency = _values(prometheus.query("ikev2lib_handshake_duration_seconds_sum"))
    assert all(0 < seconds < SERIES_TIMEOUT for seconds in latency.values()), latency

    events = _values(prometheus.query('ikev2lib_ike_sa_events_total{event="established"}'))
    assert events == {"site": 1.0, "hub": 1.0}
    assert _values(prometheus.query("ikev2lib_ike_sas_udp_encap")) == {"site": 1.0, "hub": 1.0}
    assert _values(prometheus.query("sum by (side) (ikev2lib_rekey_failures_total)")) == {"site": 0.0, "hub": 0.0}
    assert set(_values(prometheus.query("ikev2lib_engine_retransmissions_total"))) == {"site", "hub"}

    # labels stay bounded: across every ikev2lib series, only configuration names and fixed sets
    ours = urllib.parse.urlencode({"match[]": '{__name__=~"ikev2lib_.+"}'})
    labels = _get_json(f"{prometheus.url}/api/v1/labels?{ours}")
    scrape_labels = {"__name__", "instance", "job", "side"}
    assert set(labels["data"]) - scrape_labels <= {"connection", "child", "state", "event", "cause", "limit", "kind",
                                                   "sa", "origin", "role", "reason", "direction", "le"}, labels

    # the gateways log JSON lines that name their connections
    for name, path in gateways.logs.items():
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
        assert entries and all(entry["time"].endswith("Z") for entry in entries), path.read_text()
        assert any(e["message"].startswith(f"{name}: IKE SA") and "established" in e["message"] for e in entries)
        assert any(e["message"].startswith("metrics on http://") for e in entries)
