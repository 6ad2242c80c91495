"""`ikev2lib run` as a separate process inside a namespace, for the gateway interop tests: start it,
talk to it through `ikev2lib status|initiate|terminate|reload`, wait for SAs, read its log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .netns import Namespace

START_TIMEOUT = 20.0  # seconds for the gateway to come up and an SA to establish
COMMAND_TIMEOUT = 30.0  # seconds for one control command
POLL = 0.1


class RunningGateway:
    """`ikev2lib run SOURCE_ARGS` as a process in `ns`, with its control socket and log under `workdir`."""

    def __init__(self, ns: Namespace, source_args: list[str], workdir: Path) -> None:
        self.control = workdir / "control.sock"
        self.log = workdir / "gateway.log"
        self._out = open(self.log, "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = ns.popen([sys.executable, "-m", "ikev2lib", "run", *source_args, "--control", str(self.control)],
                             stdout=self._out, stderr=subprocess.STDOUT, env=env)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`ikev2lib ARGS --control <ours>`, from the root namespace (the socket is a file)."""
        return subprocess.run([sys.executable, "-m", "ikev2lib", *args, "--control", str(self.control)],
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)

    def command(self, *args: str) -> Any:
        """A control command that must succeed: its JSON answer (`status` without --json: the text)."""
        done = self.run(*args)
        assert done.returncode == 0, (done.stdout, done.stderr, self.text())
        return done.stdout if args == ("status",) else json.loads(done.stdout)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.command("status", "--json")
        return result

    def wait(self, predicate: Callable[[dict[str, Any]], Any], what: str, timeout: float = START_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited ({self.proc.returncode}):\n{self.text()}")
            if self.control.exists():
                found = predicate(self.status())
                if found:
                    return found
            time.sleep(POLL)
        raise AssertionError(f"timed out waiting for {what}:\n{self.text()}")

    def text(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._out.close()


def established(name: str) -> Callable[[dict[str, Any]], Any]:
    """A `RunningGateway.wait` predicate: the established IKE SA of connection `name` with a Child SA."""
    def check(status: dict[str, Any]) -> Any:
        return next((s for s in status["ike_sas"] if s["name"] == name and s["state"] == "established"
                     and s["children"]), None)
    return check
