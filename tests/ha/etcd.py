"""Real etcd for the HA tests: Debian's /usr/bin/etcd (package etcd-server) on loopback, with a
temporary data directory and free ports, as one member or a cluster of three, each member stoppable,
killable and restartable. Every wait is bounded; `close()` kills what was started and removes the
data directories. Works with etcd 3.4 (Debian 12) and 3.5 (Debian 13): only flags both know."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ETCD = "/usr/bin/etcd"
ETCD_PACKAGE = "etcd-server"
START_TIMEOUT = 20.0  # seconds for members to report healthy
STOP_TIMEOUT = 10.0  # seconds for a member to exit after SIGTERM (then SIGKILL)
HEALTH_TIMEOUT = 1.0  # seconds per /health request
# Faster raft than etcd's defaults (100 ms / 1000 ms), so elections and restarts take little test
# time; the smallest lease TTL etcd grants is 1.5 election timeouts.
HEARTBEAT_MS = 50
ELECTION_MS = 500


class EtcdError(Exception):
    pass


def etcd_problem(path: str = ETCD) -> str | None:
    """Why this machine cannot run the etcd tests (None: it can)."""
    if not os.access(path, os.X_OK):
        return f"{path} is missing: install the Debian package {ETCD_PACKAGE} (scripts/apt-packages.txt)"
    return None


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (all held open together, so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Member:
    def __init__(self, name: str, data_dir: Path, client_port: int, peer_port: int) -> None:
        self.name = name
        self.data_dir = data_dir
        self.client_port = client_port
        self.peer_port = peer_port
        self.log_path = data_dir.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self, initial_cluster: str, token: str) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise EtcdError(f"{self.name} is already running")
        state = "existing" if (self.data_dir / "member").exists() else "new"
        args = [
            ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", initial_cluster, "--initial-cluster-state", state,
            "--initial-cluster-token", token,
            "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
            "--logger", "zap", "--log-level", "warn",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        """etcd's /health: true once this member serves requests with a quorum behind it."""
        if not self.running():
            return False
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=HEALTH_TIMEOUT) as reply:
                return bool(json.loads(reply.read()).get("health") == "true")
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

    def tail_log(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class EtcdCluster:
    """`size` members on loopback under `base_dir`; `start()` returns once every member is healthy."""

    def __init__(self, base_dir: Path, size: int = 1) -> None:
        problem = etcd_problem()
        if problem is not None:
            raise EtcdError(problem)
        base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir = base_dir
        ports = free_ports(2 * size)
        self.members = [Member(f"m{i}", base_dir / f"m{i}", ports[2 * i], ports[2 * i + 1]) for i in range(size)]
        self.token = f"ikev2lib-test-{os.getpid()}-{ports[0]}"
        self.initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self) -> EtcdCluster:
        for member in self.members:
            member.start(self.initial_cluster, self.token)
        self.wait_healthy()
        return self

    def wait_healthy(self, members: list[Member] | None = None, timeout: float = START_TIMEOUT) -> None:
        want = members if members is not None else [m for m in self.members if m.running() or m.proc is None]
        deadline = time.monotonic() + timeout
        while True:
            waiting = [m for m in want if not m.healthy()]
            if not waiting:
                return
            dead = [m for m in waiting if not m.running()]
            if dead or time.monotonic() >= deadline:
                why = "exited" if dead else f"not healthy after {timeout:.0f} s"
                logs = "\n".join(f"---- {m.name} ({m.log_path})\n{m.tail_log()}" for m in (dead or waiting))
                raise EtcdError(f"etcd {', '.join(m.name for m in dead or waiting)} {why}\n{logs}")
            time.sleep(0.05)

    def raft_leader(self) -> int:
        """The index of the member that is raft leader now (asked of the running members)."""
        for member in self.members:
            if not member.running():
                continue
            request = urllib.request.Request(f"{member.client_url}/v3/maintenance/status", data=b"{}", method="POST")
            try:
                with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT) as reply:
                    status = json.loads(reply.read())
            except (urllib.error.URLError, OSError, ValueError):
                continue
            if status.get("leader") == status.get("header", {}).get("member_id"):
                return self.members.index(member)
        raise EtcdError("no member says it is the raft leader")

    def stop_member(self, index: int) -> None:
        self.members[index].stop()

    def kill_member(self, index: int) -> None:
        self.members[index].kill()

    def restart_member(self, index: int) -> None:
        """Start a stopped member again on its ports and data directory, and wait until it is healthy."""
        member = self.members[index]
        member.stop()
        member.start(self.initial_cluster, self.token)
        self.wait_healthy([member])

    def close(self) -> None:
        for member in self.members:
            member.kill()
        shutil.rmtree(self.base_dir, ignore_errors=True)
