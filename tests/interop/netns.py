"""Network namespaces joined by a veth pair, for interop tests (needs root).

`NamespacePair` creates two namespaces `left` and `right` with a veth link between them
(192.0.2.1/24 <-> 192.0.2.2/24 by default) and optional inner /32 addresses on `lo`; leaving the
context manager kills every process started through it and deletes both namespaces.

Code runs inside a namespace either as a subprocess (`Namespace.run` / `Namespace.popen`, via
`ip netns exec`) or as a Python callable in a forked child that joined the namespace with
setns(2) (`Namespace.call` / `Namespace.start`); the callable's return value (or exception) comes
back pickled through a pipe.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import pickle
import secrets
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"
CLONE_NEWNET = 0x40000000
CMD_TIMEOUT = 20.0  # seconds for one `ip` / setup command; they take milliseconds normally
CALL_TIMEOUT = 30.0  # default bound for a callable run inside a namespace
MAX_RESULT_BYTES = 16 * 1024 * 1024  # a callable's pickled result is read up to this size
KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when stopping a process


class NetnsError(RuntimeError):
    """A namespace could not be set up, or code inside it failed or timed out."""


def _run_checked(args: Sequence[str], timeout: float = CMD_TIMEOUT) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise NetnsError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def require_root() -> None:
    """Raise NetnsError with a clear message if namespaces cannot be created here."""
    if os.geteuid() != 0:
        raise NetnsError("interop tests need root (network namespaces, veth, TUN); run them as root")


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    # os.setns exists only from Python 3.12; the project targets 3.11.
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def stop_process(proc: subprocess.Popen[Any], grace: float = KILL_GRACE) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; always reaps the process."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


class NsTask:
    """A Python callable running in a forked child inside a namespace."""

    def __init__(self, pid: int, fd: int, description: str) -> None:
        self.pid = pid
        self._fd = fd
        self._description = description
        self._done = False

    def result(self, timeout: float = CALL_TIMEOUT) -> Any:
        """Wait (bounded) for the callable; return its value or re-raise its exception."""
        if self._done:
            raise NetnsError("result() already collected")
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NetnsError(f"{self._description} timed out after {timeout:.1f}s")
                ready, _, _ = select.select([self._fd], [], [], left)
                if not ready:
                    continue
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_RESULT_BYTES:
                    raise NetnsError(f"{self._description} returned more than {MAX_RESULT_BYTES} bytes")
                chunks.append(chunk)
        finally:
            self._finish()
        if not chunks:
            raise NetnsError(f"{self._description} died without a result")
        ok, value = pickle.loads(b"".join(chunks))
        if ok:
            return value
        raise value

    def kill(self) -> None:
        if not self._done:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        os.close(self._fd)
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)


@dataclass
class Namespace:
    """One named network namespace (created by `NamespacePair` or `Namespace.create`)."""

    name: str
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    tasks: list[NsTask] = field(default_factory=list)

    @classmethod
    def create(cls, name: str) -> Namespace:
        require_root()
        _run_checked([IP, "netns", "add", name])
        ns = cls(name)
        try:
            ns.ip("link", "set", "lo", "up")
        except BaseException:
            ns.close()  # a half-made namespace must not outlive the failure
            raise
        return ns

    def exec_prefix(self) -> list[str]:
        return [IP, "netns", "exec", self.name]

    def ip(self, *args: str) -> str:
        """Run `ip ARGS` inside the namespace (checked)."""
        return _run_checked([IP, "-n", self.name, *args])

    def run(self, args: Sequence[str], timeout: float = CMD_TIMEOUT, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace to completion (bounded by `timeout`)."""
        proc = subprocess.run([*self.exec_prefix(), *args], capture_output=True, text=True,
                              timeout=timeout, env=env)
        if check and proc.returncode != 0:
            raise NetnsError(f"[{self.name}] {' '.join(args)} failed ({proc.returncode}): "
                             f"{proc.stderr.strip()}")
        return proc

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a long-running command inside the namespace; stopped when the namespace closes."""
        proc: subprocess.Popen[Any] = subprocess.Popen([*self.exec_prefix(), *args], **kwargs)
        self.processes.append(proc)
        return proc

    def start(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> NsTask:
        """Run fn(*args, **kwargs) in a forked child that joined this namespace; returns at once."""
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(rfd)
            try:
                try:
                    fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
                    _setns(fd, CLONE_NEWNET)
                    os.close(fd)
                    payload = pickle.dumps((True, fn(*args, **kwargs)))
                except BaseException as exc:  # report everything to the parent
                    try:
                        payload = pickle.dumps((False, exc))
                    except Exception:
                        payload = pickle.dumps((False, NetnsError(repr(exc))))
                view = memoryview(payload)
                while view:
                    view = view[os.write(wfd, view):]
            finally:
                os._exit(0)
        os.close(wfd)
        task = NsTask(pid, rfd, f"[{self.name}] {getattr(fn, '__name__', fn)!s}")
        self.tasks.append(task)
        return task

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = CALL_TIMEOUT,
             **kwargs: Any) -> Any:
        """Run fn inside the namespace and return its result (bounded by `timeout`)."""
        return self.start(fn, *args, **kwargs).result(timeout)

    def add_inner_address(self, cidr: str) -> None:
        """Put an inner test address (e.g. 10.1.0.1/32) on `lo`."""
        self.ip("addr", "add", cidr, "dev", "lo")

    def close(self) -> None:
        """Stop every process and task started here, then delete the namespace."""
        for task in self.tasks:
            task.kill()
        self.tasks.clear()
        for proc in self.processes:
            stop_process(proc)
        self.processes.clear()
        # Anything else still inside (e.g. started by a caller directly) dies with SIGKILL.
        pids = subprocess.run([IP, "netns", "pids", self.name], capture_output=True, text=True,
                              timeout=CMD_TIMEOUT).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run([IP, "netns", "del", self.name], capture_output=True, timeout=CMD_TIMEOUT)


@dataclass(frozen=True)
class PairAddresses:
    left_outer: str = "192.0.2.1"
    right_outer: str = "192.0.2.2"
    prefix_len: int = 24
    left_inner: tuple[str, ...] = ("10.1.0.1/32",)
    right_inner: tuple[str, ...] = ("10.2.0.1/32",)


class NamespacePair:
    """Two namespaces joined by veth; use as a context manager (cleanup guaranteed)."""

    def __init__(self, addresses: PairAddresses = PairAddresses(), tag: str | None = None) -> None:
        self.tag = tag or secrets.token_hex(3)
        self.addresses = addresses
        self.left_name = f"ikt-{self.tag}-l"
        self.right_name = f"ikt-{self.tag}-r"
        # Interface names are limited to 15 characters.
        self.left_if = f"vk{self.tag}l"
        self.right_if = f"vk{self.tag}r"
        self._left: Namespace | None = None
        self._right: Namespace | None = None

    @property
    def left(self) -> Namespace:
        if self._left is None:
            raise NetnsError("namespace pair not set up")
        return self._left

    @property
    def right(self) -> Namespace:
        if self._right is None:
            raise NetnsError("namespace pair not set up")
        return self._right

    @property
    def left_addr(self) -> str:
        return self.addresses.left_outer

    @property
    def right_addr(self) -> str:
        return self.addresses.right_outer

    def setup(self) -> NamespacePair:
        require_root()
        try:
            self._left = Namespace.create(self.left_name)
            self._right = Namespace.create(self.right_name)
            _run_checked([IP, "link", "add", self.left_if, "netns", self.left_name, "type", "veth",
                          "peer", "name", self.right_if, "netns", self.right_name])
            a = self.addresses
            for ns, ifname, addr, inner in ((self._left, self.left_if, a.left_outer, a.left_inner),
                                            (self._right, self.right_if, a.right_outer, a.right_inner)):
                ipaddress.ip_address(addr)  # reject a typo before `ip` does something odd
                ns.ip("addr", "add", f"{addr}/{a.prefix_len}", "dev", ifname)
                ns.ip("link", "set", ifname, "up")
                for cidr in inner:
                    ns.add_inner_address(cidr)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for ns in (self._right, self._left):
            if ns is not None:
                ns.close()
        self._left = self._right = None

    def __enter__(self) -> NamespacePair:
        return self.setup()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
