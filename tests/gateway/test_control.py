"""The control socket: owner-only, one JSON request per connection, hostile clients only lose their
connection. (The commands against a running gateway and strongSwan: tests/interop/test_gateway_run.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from ikev2lib.config import IkeConfig
from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.gateway.control import MAX_REQUEST, ControlServer, request
from ikev2lib.gateway.model import Connection, GatewayConfig
from ikev2lib.gateway.run import Gateway

CONFIG = GatewayConfig(connections=(Connection(config=IkeConfig(name="hub", local_id="gw", psk=b"k")),))


def _exchange(path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def _with_server(path: Path, body: Any) -> Any:
    gateway = Gateway(lambda: CONFIG)
    gateway.config = CONFIG  # not started: no sockets, the control commands still answer
    server = ControlServer(gateway, path)
    await server.start()
    try:
        return await asyncio.to_thread(body)
    finally:
        await server.close()


def test_commands_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "run" / "control.sock"

    def body() -> list[dict[str, Any]]:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o600, oct(mode)
        return [
            request(path, "status"),
            request(path, "initiate", "nope"),
            request(path, "initiate", "hub"),  # no remote address: a clear error
            request(path, "terminate", "hub"),
            request(path, "frobnicate"),
            json.loads(_exchange(path, b"not json\n")),
            json.loads(_exchange(path, b'["a list"]\n')),
            json.loads(_exchange(path, b'{"command": "initiate"}\n')),
            request(path, "redirect", to="192.0.2.9"),
            request(path, "redirect", "hub", to="gw2.example.org"),
            request(path, "redirect", "nope", to="192.0.2.9"),
            request(path, "redirect", to="no such gateway!"),
            json.loads(_exchange(path, b'{"command": "redirect"}\n')),
        ]

    (status, unknown_name, no_remote, terminated, unknown, garbage, wrong_shape, no_name, redirected, redirected_hub,
     redirect_unknown, redirect_bad, redirect_no_to) = asyncio.run(_with_server(path, body))
    assert status["ok"] and status["status"]["connections"] == ["hub"] and status["status"]["ike_sas"] == []
    assert not unknown_name["ok"] and "no connection named 'nope'" in unknown_name["error"]
    assert not no_remote["ok"] and "no remote address" in no_remote["error"]
    assert terminated == {"ok": True, "terminated": 0}
    assert not unknown["ok"] and "unknown command" in unknown["error"]
    assert not garbage["ok"] and not wrong_shape["ok"] and not no_name["ok"]
    assert redirected == redirected_hub == {"ok": True, "redirected": 0, "unable": 0}  # no clients yet
    assert not redirect_unknown["ok"] and "no connection named 'nope'" in redirect_unknown["error"]
    assert not redirect_bad["ok"] and "neither an IP address nor a DNS name" in redirect_bad["error"]
    assert not redirect_no_to["ok"] and 'redirect needs "to"' in redirect_no_to["error"]
    assert not path.exists()  # removed on close


def test_oversized_or_silent_clients_just_lose_their_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "control.sock"
    monkeypatch.setattr("ikev2lib.gateway.control.REQUEST_TIMEOUT", 0.5)

    def body() -> tuple[bytes, bytes, dict[str, Any]]:
        oversized = _exchange(path, b"x" * (MAX_REQUEST * 4) + b"\n")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:  # connects and says nothing
            sock.settimeout(5)
            sock.connect(str(path))
            silent = sock.recv(100)
        return oversized, silent, request(path, "status")

    oversized, silent, after = asyncio.run(_with_server(path, body))
    assert oversized == b"" and silent == b""
    assert after["ok"]  # the server is still there for the next client


def test_stale_socket_is_replaced_but_other_files_are_not(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))  # left behind by an earlier run
    asyncio.run(_with_server(stale, lambda: request(stale, "status")))
    regular = tmp_path / "regular"
    regular.write_text("important")
    with pytest.raises(LocalProtocolError, match="not a socket"):
        asyncio.run(_with_server(regular, lambda: None))
    assert regular.read_text() == "important"


def test_client_without_a_gateway(tmp_path: Path) -> None:
    with pytest.raises(LocalProtocolError, match="cannot reach the gateway"):
        request(tmp_path / "none.sock", "status")
