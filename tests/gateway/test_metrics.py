"""Metrics and JSON logs of `ikev2lib run` (ikev2lib.gateway.metrics, ikev2lib.gateway.logs): two
in-process gateways on loopback establish, rekey and fail to rekey; the exposition text says so with
bounded labels. (A real Prometheus scraping `ikev2lib run`: tests/interop/test_gateway_prometheus.py.)"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import io
import json
import logging
import socket
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.events import IkeSaDeleted, IkeSaEstablished, ProtocolErrorEvent
from ikev2lib.exchanges import ike_rekey
from ikev2lib.gateway.cli import _serve, add_commands
from ikev2lib.gateway.counters import DROP_REASONS, TunnelCounters
from ikev2lib.gateway.logs import JsonFormatter, setup_logging
from ikev2lib.gateway.metrics import (
    IKE_REKEY_FAILURE_PREFIX,
    MAX_REQUEST_HEAD,
    GatewayMetrics,
    ListenAddressError,
    parse_listen,
)
from ikev2lib.gateway.model import Connection, GatewayConfig
from ikev2lib.gateway.run import Gateway

from .gateway_pair import SETTLE_TIMEOUT, established, gateway_pair

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# every label the metrics may carry: configuration names and fixed sets, never SPIs or ids
BOUNDED_LABELS = {"connection", "child", "state", "event", "cause", "limit", "kind", "sa", "origin", "role",
                  "reason", "direction", "le"}
CHILD_REKEY_TIME = 1.0  # seconds: short enough for a test, long enough to establish first
TEST_TIMEOUT = 8.0  # seconds for each test's asyncio part


def samples(metrics: GatewayMetrics) -> Samples:
    text = metrics.exposition().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, TEST_TIMEOUT))


def test_an_established_tunnel_and_its_deletion() -> None:
    async def body() -> tuple[Samples, Samples, Samples, Samples, list[str]]:
        async with gateway_pair() as pair:
            site, hub = pair.initiator.metrics, pair.responder.metrics

            def handshakes_seen() -> bool:
                return (value(samples(site), "ikev2lib_handshake_duration_seconds_count", connection="site",
                              role="initiator") == 1
                        and value(samples(hub), "ikev2lib_child_sa_events_total", connection="hub", child="hub-net",
                                  event="created") == 1)

            await pair.wait_for(handshakes_seen, "both gateways to count the handshake")
            spis = [sa[key] for sa in pair.initiator.status()["ike_sas"] for key in ("spi_i", "spi_r")]
            spis += [c[key] for sa in pair.initiator.status()["ike_sas"] for c in sa["children"]
                     for key in ("spi_in", "spi_out")]
            up_site, up_hub = samples(site), samples(hub)
            assert pair.initiator.terminate("site") == 1

            def deleted() -> bool:
                return (value(samples(site), "ikev2lib_ike_sa_events_total", connection="site", event="deleted") == 1
                        and value(samples(hub), "ikev2lib_ike_sa_events_total", connection="hub", event="deleted") == 1)

            await pair.wait_for(deleted, "both gateways to count the deletion")
            return up_site, up_hub, samples(site), samples(hub), spis

    up_site, up_hub, down_site, down_hub, spis = run(body())
    # gauges of the SAs by state, read from the endpoints at scrape time
    assert value(up_site, "ikev2lib_ike_sas", connection="site", state="established") == 1
    assert value(up_site, "ikev2lib_ike_sas", connection="site", state="sa-init-sent") == 0
    assert value(up_site, "ikev2lib_child_sas", connection="site", child="net", state="installed") == 1
    assert value(up_hub, "ikev2lib_ike_sas", connection="hub", state="established") == 1
    assert value(up_hub, "ikev2lib_child_sas", connection="hub", child="hub-net", state="installed") == 1
    assert value(up_site, "ikev2lib_ike_sas_udp_encap", connection="site") == 1  # encap forces NAT-T
    # transitions, by connection
    assert value(up_site, "ikev2lib_ike_sa_events_total", connection="site", event="established") == 1
    assert value(up_site, "ikev2lib_ike_sa_events_total", connection="site", event="deleted") == 0
    assert value(up_site, "ikev2lib_child_sa_events_total", connection="site", child="net", event="created") == 1
    assert value(up_site, "ikev2lib_rekey_failures_total", connection="site", sa="child") == 0
    # handshake latency: one observation per side, each role on its own series
    assert value(up_site, "ikev2lib_handshake_duration_seconds_count", connection="site", role="initiator") == 1
    assert value(up_hub, "ikev2lib_handshake_duration_seconds_count", connection="hub", role="responder") == 1
    latency = value(up_site, "ikev2lib_handshake_duration_seconds_sum", connection="site", role="initiator")
    assert latency is not None and 0 < latency < SETTLE_TIMEOUT
    assert value(up_site, "ikev2lib_handshake_duration_seconds_bucket", connection="site", role="initiator",
                 le="+Inf") == 1
    # engine counters are there from the start
    assert value(up_site, "ikev2lib_engine_retransmissions_total") is not None
    assert value(up_site, "ikev2lib_engine_retransmitted_requests_total") is not None
    # labels stay bounded: no SPI, no ike_sa_id, no address anywhere
    for found in (up_site, up_hub, down_site, down_hub):
        label_names = {name for _, labels in found for name, _ in labels}
        assert label_names <= BOUNDED_LABELS, label_names - BOUNDED_LABELS
        label_values = {text for _, labels in found for _, text in labels}
        assert not label_values & set(spis) and "127.0.0.1" not in label_values and "1" not in label_values
    # after `terminate`: the gauge falls, the cause is told on each side
    assert value(down_site, "ikev2lib_ike_sas", connection="site", state="established") == 0
    assert value(down_site, "ikev2lib_ike_sas_deleted_total", connection="site", cause="local") == 1
    assert value(down_hub, "ikev2lib_ike_sas_deleted_total", connection="hub", cause="peer") == 1
    assert value(down_site, "ikev2lib_child_sa_events_total", connection="site", child="net", event="deleted") == 1


def test_rekeys_are_counted() -> None:
    child = ChildConfig(name="net", local_ts=("10.1.0.0/16",), remote_ts=("10.2.0.0/16",), rekey_time=CHILD_REKEY_TIME)

    async def body() -> Samples:
        async with gateway_pair(initiator_child=child, ike_rekey_time=CHILD_REKEY_TIME) as pair:
            def rekeyed() -> bool:
                found = samples(pair.initiator.metrics)
                return ((value(found, "ikev2lib_child_sa_events_total", connection="site", child="net",
                               event="rekeyed") or 0) >= 1
                        and (value(found, "ikev2lib_ike_sa_events_total", connection="site", event="rekeyed") or 0) >= 1)

            await pair.wait_for(rekeyed, "a Child SA and an IKE SA rekey")
            return samples(pair.initiator.metrics)

    found = run(body())
    assert (value(found, "ikev2lib_child_sas_expired_total", connection="site", child="net", limit="time",
                  kind="soft") or 0) >= 1
    assert value(found, "ikev2lib_rekey_failures_total", connection="site", sa="child") == 0
    assert value(found, "ikev2lib_rekey_failures_total", connection="site", sa="ike") == 0
    assert value(found, "ikev2lib_ike_sas", connection="site", state="established") == 1
    assert value(found, "ikev2lib_handshake_duration_seconds_count", connection="site", role="initiator") == 1


def test_a_refused_child_rekey_is_a_rekey_failure() -> None:
    # The initiator asks for PFS (x25519) on rekey, which the responder's proposals refuse; IKE_AUTH
    # carries no key exchange, so the first Child SA still comes up.
    child = ChildConfig(name="net", local_ts=("10.1.0.0/16",), remote_ts=("10.2.0.0/16",),
                        esp_proposals="aes128gcm16-x25519", rekey_time=CHILD_REKEY_TIME)

    async def body() -> Samples:
        async with gateway_pair(initiator_child=child, responder_esp="aes128gcm16") as pair:
            await pair.wait_for(lambda: established(pair.initiator), "the first Child SA")
            await pair.wait_for(lambda: value(samples(pair.initiator.metrics), "ikev2lib_rekey_failures_total",
                                              connection="site", sa="child") == 1, "the refused rekey")
            return samples(pair.initiator.metrics)

    found = run(body())
    assert value(found, "ikev2lib_child_sa_events_total", connection="site", child="net", event="rekeyed") == 0
    assert value(found, "ikev2lib_protocol_errors_total", connection="site", origin="peer") == 1
    assert value(found, "ikev2lib_rekey_failures_total", connection="site", sa="ike") == 0


def test_ike_rekey_failures_are_recognized_as_the_engine_reports_them() -> None:
    # one copy of the rule: the prefix the collector matches is the one exchanges/ike_rekey.py writes
    assert f'f"{IKE_REKEY_FAILURE_PREFIX}: ' in inspect.getsource(ike_rekey)
    metrics = GatewayMetrics()
    metrics.observe(IkeSaEstablished(ike_sa_id=7, spi_i=b"i" * 8, spi_r=b"r" * 8, is_initiator=True,
                                     remote_addr=("192.0.2.9", 500), local_id="a", remote_id="b", proposal="p",
                                     udp_encap=False, connection="branch"), 1.0)
    failure = f"{IKE_REKEY_FAILURE_PREFIX}: NO_PROPOSAL_CHOSEN"
    metrics.observe(ProtocolErrorEvent(ike_sa_id=7, remote_addr=None, description=failure), 2.0)
    # a reason quoting the peer must not become a label value
    metrics.observe(IkeSaDeleted(ike_sa_id=7, spi_i=b"i" * 8, spi_r=b"r" * 8, reason="AUTH failed: peer said 0xdead",
                                 by_peer=False), 3.0)
    found = samples(metrics)
    assert value(found, "ikev2lib_rekey_failures_total", connection="branch", sa="ike") == 1
    assert value(found, "ikev2lib_protocol_errors_total", connection="branch", origin="local") == 1
    assert value(found, "ikev2lib_ike_sas_deleted_total", connection="branch", cause="error") == 1
    # no endpoint to look the IKE SA up in: no creation time, so no latency rather than a wrong one
    assert value(found, "ikev2lib_handshake_duration_seconds_count", connection="branch", role="initiator") is None


def test_tunnel_counters_and_drops_by_reason() -> None:
    config = GatewayConfig(connections=(Connection(config=IkeConfig(name="site", local_id="a", psk=b"k")),))
    counters = {"site": TunnelCounters(packets_in=3, bytes_in=300, packets_out=2, bytes_out=200,
                                       drops={"icv": 1, "replay": 5, "not-a-reason": 2})}
    gateway = SimpleNamespace(listeners=[], config=config, tunnel_counters=lambda: counters,
                              datapath_drops=lambda: {"no_sa": 4})
    found = samples(GatewayMetrics(gateway))
    assert value(found, "ikev2lib_tunnel_packets_total", connection="site", direction="in") == 3
    assert value(found, "ikev2lib_tunnel_packets_total", connection="site", direction="out") == 2
    assert value(found, "ikev2lib_tunnel_bytes_total", connection="site", direction="in") == 300
    assert value(found, "ikev2lib_tunnel_bytes_total", connection="site", direction="out") == 200
    assert value(found, "ikev2lib_tunnel_drops_total", connection="site", reason="icv") == 1
    assert value(found, "ikev2lib_tunnel_drops_total", connection="site", reason="replay") == 5
    assert value(found, "ikev2lib_tunnel_drops_total", connection="site", reason="error") == 2  # unknown: folded
    assert value(found, "ikev2lib_datapath_drops_total", reason="no_sa") == 4
    for reason in DROP_REASONS:  # every reason has its series from the start
        assert value(found, "ikev2lib_datapath_drops_total", reason=reason) is not None
    # configured connections have their gauges at 0 before any SA exists
    assert value(found, "ikev2lib_ike_sas", connection="site", state="established") == 0
    assert value(found, "ikev2lib_child_sas", connection="site", child="child", state="installed") == 0
    # a gateway without data-path counters exports the rest
    bare = samples(GatewayMetrics(SimpleNamespace(listeners=[], config=config)))
    assert not any(name.startswith("ikev2lib_tunnel_") for name, _ in bare)
    assert value(bare, "ikev2lib_ike_sas", connection="site", state="established") == 0


def test_each_gateway_has_a_registry_of_its_own() -> None:
    empty = GatewayConfig(connections=())
    first, second = Gateway(lambda: empty), Gateway(lambda: empty)
    assert first.metrics.registry is not second.metrics.registry
    assert b"ikev2lib_engine_retransmissions_total 0.0" in first.metrics.exposition()


async def _http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


def test_http_endpoint() -> None:
    async def body() -> list[bytes]:
        metrics = GatewayMetrics()
        server = await metrics.serve("127.0.0.1", 0)
        try:
            return [
                await _http(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"),
                await _http(server.port, b"HEAD /metrics HTTP/1.1\r\n\r\n"),
                await _http(server.port, b"GET /other HTTP/1.1\r\n\r\n"),
                await _http(server.port, b"POST /metrics HTTP/1.1\r\n\r\n"),
                await _http(server.port, b"garbage\r\n\r\n"),
                await _http(server.port, b"GET /metrics HTTP/1.1\r\nX: " + b"y" * MAX_REQUEST_HEAD + b"\r\n\r\n"),
            ]
        finally:
            await server.close()

    ok, head, missing, post, garbage, oversized = run(body())
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Type: text/plain; version=0.0.4" in ok
    assert b"\r\n\r\n# HELP ikev2lib_" in ok and b"ikev2lib_engine_retransmissions_total 0.0" in ok
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert missing.startswith(b"HTTP/1.1 404") and post.startswith(b"HTTP/1.1 405")
    assert garbage.startswith(b"HTTP/1.1 400") and oversized == b""


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9100", ("127.0.0.1", 9100)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
    ("[::1]:9100", ("::1", 9100)),
    ("[::]:80", ("::", 80)),
    ("localhost:9100", ("localhost", 9100)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("9100", "expected ADDR:PORT"),
    (":9100", "expected ADDR:PORT"),
    ("127.0.0.1", "expected ADDR:PORT"),
    ("127.0.0.1:", "the port must be a number"),
    ("127.0.0.1:65536", "the port must be a number"),
    ("127.0.0.1:-1", "the port must be a number"),
    ("127.0.0.1:http", "the port must be a number"),
    ("::1:9100", "put an IPv6 address in brackets"),
    ("[::1]", "expected ADDR:PORT"),
    ("[::1:9100", "expected ADDR:PORT"),
    ("[example]:9100", "not an IPv6 address"),
    ("bad host:9100", "not an address or host name"),
])
def test_parse_listen_errors(text: str, message: str) -> None:
    with pytest.raises(ListenAddressError, match=message):
        parse_listen(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ikev2lib")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_run_options(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["run", "--config", "gw.toml", "--metrics", "[::1]:9100", "--log-format", "json"])
    assert args.metrics == ("::1", 9100) and args.log_format == "json"
    plain = _parser().parse_args(["run", "--config", "gw.toml"])
    assert plain.metrics is None and plain.log_format == "text"
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--config", "gw.toml", "--metrics", "::1:9100"])
    assert "argument --metrics: '::1:9100': put an IPv6 address in brackets" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--config", "gw.toml", "--log-format", "xml"])


def test_run_stops_when_the_metrics_port_is_taken(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = _parser().parse_args(["run", "--config", "never-read.toml", "--metrics", f"127.0.0.1:{port}"])
        with caplog.at_level(logging.ERROR, "ikev2lib.gateway"):
            assert run(_serve(args)) == 1  # before the configuration is loaded or any SA initiated
    assert f"cannot serve metrics on 127.0.0.1:{port}" in caplog.text


@pytest.fixture
def restored_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def test_json_formatter_fields() -> None:
    record = logging.LogRecord("ikev2lib.gateway", logging.WARNING, __file__, 1, "%s: IKE SA %d up\nnext line",
                               ("site", 3), None)
    record.connection, record.ike_sa_id, record.event, record.spi = "site", 3, "IkeSaEstablished", b"\x01\x02"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "site: IKE SA 3 up\nnext line"
    assert (entry["level"], entry["logger"]) == ("WARNING", "ikev2lib.gateway")
    assert (entry["connection"], entry["ike_sa_id"], entry["event"]) == ("site", 3, "IkeSaEstablished")
    assert entry["spi"] == "b'\\x01\\x02'"  # not JSON-native: written as its str()
    when = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    assert entry["time"].endswith("Z") and when.tzinfo == timezone.utc
    assert abs(when.timestamp() - record.created) < 0.001
    assert not {"args", "msg", "levelno", "pathname", "created"} & set(entry)  # the record's own attributes
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(failed))["exception"]


def test_json_logs_of_a_running_gateway(restored_root_logger: None) -> None:
    stream = io.StringIO()
    setup_logging(logging.INFO, "json", stream)

    async def body() -> None:
        async with gateway_pair() as pair:
            await pair.wait_for(lambda: established(pair.initiator) and established(pair.responder), "the tunnel")

    run(body())
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    messages = [e["message"] for e in entries if e["logger"] == "ikev2lib.gateway"]
    assert any(m.startswith("site: IKE SA") and "established" in m for m in messages), messages
    assert any(m.startswith("hub: IKE SA") and "established" in m for m in messages), messages
    events = [e for e in entries if e.get("event") == "IkeSaEstablished"]  # the structured fields of each event
    assert {e["connection"] for e in events} == {"site", "hub"} and all(e["ike_sa_id"] for e in events)
    assert all(e["time"].endswith("Z") and e["level"] in ("INFO", "WARNING") for e in entries)
    with pytest.raises(ValueError, match="log format must be one of text, json"):
        setup_logging(logging.INFO, "xml")
