"""Smoke runs of the comparison scripts (wire_compare, esp_compare, ike_compare, connections_compare, xdp_compare,
tunnel_compare): each runs with the smallest bounds and must end with its JSON line, whose
`targets_met` holds one verdict per target (True/False, or None for a part that did not run). Only the
shape is checked, never a rate or whether a target is met: speed is measured, never asserted
(tunnel_compare's rows must carry traffic: a positive TCP rate and a ping through the path; its
strongswan row also runs the default --flood, which must have sent every kind).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
SMOKE_TIMEOUT = 180.0  # seconds for one script's smoke run


def run_script(name: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(HERE / name), *args], capture_output=True, text=True,
                          timeout=SMOKE_TIMEOUT, cwd=HERE.parent, check=False)  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"{name} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def check_verdicts(targets_met: Any, expected: set[str]) -> None:
    if not isinstance(targets_met, dict) or set(targets_met) != expected:
        pytest.fail(f"targets_met {targets_met!r} does not name exactly {sorted(expected)}")
    for name, met in targets_met.items():
        if met not in (True, False, None):
            pytest.fail(f"targets_met[{name!r}] is {met!r}, not a verdict")


def test_wire_compare_reports_ratios_vs_scapy() -> None:
    result = run_script("wire_compare.py", "--seconds", "0.01")
    check_verdicts(result["targets_met"], {"parse_vs_scapy", "serialize_vs_scapy"})
    for name in result["targets_met"]:
        if not result[name] > 0:
            pytest.fail(f"{name} = {result[name]!r}")


def test_esp_compare_reports_ratios() -> None:
    result = run_script("esp_compare.py", "--quick", "--seconds", "0.02")
    expected = {"batch_encap_vs_openssl", "batch_decap_vs_openssl", "single_encap_vs_pyca", "two_threads_vs_one"}
    check_verdicts(result["targets_met"], expected)
    for name in expected:
        if not result[name] > 0:
            pytest.fail(f"{name} = {result[name]!r}")


def test_ike_compare_reports_ratio_targets() -> None:
    # in-process part only: the UDP part needs root and strongSwan, the scale part about a minute
    result = run_script("ike_compare.py", "--quick", "--skip-udp", "--skip-scale", "--skip-profile",
                        "--seconds", "0.1")  # fmt: skip
    expected = {"crypto_share", "udp_per_responder_cpu_vs_strongswan", "ecdsa_udp_per_responder_cpu_vs_strongswan",
                "bytes_per_sa", "timer_growth"}
    check_verdicts(result["targets_met"], expected)
    if result["targets_met"]["crypto_share"] is None or not result["inprocess"]["crypto_share"] > 0:
        pytest.fail(f"crypto_share not measured: {result['inprocess']!r}")
    for name in expected - {"crypto_share"}:
        if result["targets_met"][name] is not None:
            pytest.fail(f"{name} has a verdict although its part was skipped")


def test_connections_compare_reports_ratios() -> None:
    result = run_script("connections_compare.py", "--connections", "20", "--seconds", "0.05")
    expected = {"by_identity_vs_one", "by_address_vs_one", "by_subnet_vs_one"}
    check_verdicts(result["targets_met"], expected)
    for name in expected:
        if not result[name] > 0:
            pytest.fail(f"{name} = {result[name]!r}")


TUNNEL_TARGETS = {"tcp_ikev2lib_vs_strongswan", "tcp_ikev2lib_vs_strongswan_stretch", "tcp_under_flood_vs_clean"}


@pytest.mark.parametrize("path", ["veth", "strongswan"])
def test_tunnel_compare_measures_a_path(path: str) -> None:
    # needs root, iperf3 and strongswan-charon; the ikev2lib rows are not run here (no verdict)
    result = run_script("tunnel_compare.py", "--quick", "--only", path)
    check_verdicts(result["targets_met"], TUNNEL_TARGETS)
    if any(met is not None for met in result["targets_met"].values()):
        pytest.fail(f"a verdict without the ikev2lib row: {result['targets_met']!r}")
    row = result["paths"][path]
    if row is None:
        pytest.fail(f"{path} not run: {result['not_run'].get(path)}")
    tcp = row.get("tcp")
    if tcp is None or not tcp["mbit_s"] > 0:
        pytest.fail(f"{path}: no TCP rate: {row!r}")
    if not row["ping"]["received"] > 0:
        pytest.fail(f"{path}: no ping through it: {row['ping']!r}")
    if path == "strongswan":  # the default --flood runs on this path too: clean and flooded TCP, packets sent
        flooded = (result.get("flood") or {}).get("paths", {}).get(path)
        if flooded is None:
            pytest.fail(f"{path}: no flood row: {result.get('flood')!r}")
        if not (flooded["clean"]["mbit_s"] > 0 and all(flooded["sent"][kind] > 0 for kind in
                                                        ("forged", "replayed", "unknown_spi"))):
            pytest.fail(f"{path}: flood row without traffic: {flooded!r}")


def test_xdp_compare_decapsulates_through_every_path() -> None:
    # needs root, cc and the libxdp/libbpf/libcrypto headers; the ratios are reported, never judged here
    result = run_script("xdp_compare.py", "--seconds", "0.5", "--rounds", "1")
    for path in ("sockets", "xdp-skb", "xdp-native"):
        for size, row in result["paths"][path].items():
            if not row["decap_pps"] > 0 or not row["sent_pps"] > 0:
                pytest.fail(f"{path} at {size} B decapsulated nothing: {row!r}")
    if not isinstance(result["target_met"], bool):
        pytest.fail(f"no verdict: {result['target_met']!r}")
