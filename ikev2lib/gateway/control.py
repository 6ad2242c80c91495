"""The control socket of `ikev2lib run`: a Unix stream socket only its owner may use (mode 0600),
one JSON object per line each way.

    {"command": "status"}                    -> {"ok": true, "status": {...}}   (Gateway.status())
    {"command": "initiate", "name": "hub"}   -> {"ok": true, "ike_sa_id": 3}
    {"command": "terminate", "name": "hub"}  -> {"ok": true, "terminated": 1}
    {"command": "reload"}                    -> {"ok": true, "added": [...], "changed": [...], "removed": [...]}
    {"command": "redirect", "to": "192.0.2.2", "name": "hub"}   (name optional: every connection)
                                             -> {"ok": true, "redirected": 3, "unable": 1}

A failed command answers {"ok": false, "error": "..."}. Requests are bounded (MAX_REQUEST bytes, one
per connection, REQUEST_TIMEOUT seconds); anything else closes the connection.
`request()` is the client side the `ikev2lib status|initiate|terminate|reload|redirect` commands use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

from ..exceptions import LocalProtocolError
from .run import Gateway

__all__ = ["DEFAULT_CONTROL_PATH", "ControlServer", "request"]

DEFAULT_CONTROL_PATH = "/run/ikev2lib/control.sock"
MAX_REQUEST = 4096  # bytes of one request line
MAX_RESPONSE = 64 * 1024 * 1024  # bytes of one answer the client reads (a status of many SAs)
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request or read the answer
OWNER_ONLY = 0o600


class ControlServer:
    def __init__(self, gateway: Gateway, path: str | os.PathLike[str]) -> None:
        self.gateway = gateway
        self.path = Path(path)
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise LocalProtocolError(f"{self.path} exists and is not a socket")
            self.path.unlink()  # a stale socket of an earlier run
        old_mask = os.umask(0o177)  # the socket is created owner-only: no window with wider access
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_REQUEST)
        finally:
            os.umask(old_mask)
        os.chmod(self.path, OWNER_ONLY)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            answer = self._answer(line)
            writer.write(json.dumps(answer).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError, ConnectionError):
            pass  # a slow, oversized or broken client: it just loses its connection
        finally:
            writer.close()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            message = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "a request is one JSON object on one line"}
        if not isinstance(message, dict) or not isinstance(message.get("command"), str):
            return {"ok": False, "error": 'a request needs "command"'}
        command, name = message["command"], message.get("name")
        try:
            if command == "status":
                return {"ok": True, "status": self.gateway.status()}
            if command == "reload":
                return {"ok": True, **self.gateway.reload()}
            if command == "redirect":
                to = message.get("to")
                if not isinstance(to, str) or not (name is None or isinstance(name, str)):
                    return {"ok": False, "error": 'redirect needs "to" (and "name" as a string, if given)'}
                return {"ok": True, **self.gateway.redirect(to, name)}
            if command in ("initiate", "terminate"):
                if not isinstance(name, str):
                    return {"ok": False, "error": f'{command} needs "name"'}
                if command == "initiate":
                    return {"ok": True, "ike_sa_id": self.gateway.initiate(name)}
                return {"ok": True, "terminated": self.gateway.terminate(name)}
        except LocalProtocolError as exc:  # a bad name, or a configuration that does not load
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown command {command!r}"}


def request(path: str | os.PathLike[str], command: str, name: str | None = None, **fields: str) -> dict[str, Any]:
    """Send one command to a running gateway and return its answer (LocalProtocolError if none)."""
    message: dict[str, Any] = {"command": command, **fields}
    if name is not None:
        message["name"] = name
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(REQUEST_TIMEOUT)
            sock.connect(os.fspath(path))
            sock.sendall(json.dumps(message).encode() + b"\n")
            chunks, size = [], 0
            while size <= MAX_RESPONSE:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except OSError as exc:
        raise LocalProtocolError(f"cannot reach the gateway at {os.fspath(path)}: {exc}") from exc
    try:
        answer: dict[str, Any] = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise LocalProtocolError(f"the gateway at {os.fspath(path)} sent no valid answer") from exc
    return answer
