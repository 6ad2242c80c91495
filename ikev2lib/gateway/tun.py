"""The gateway's TUN device: inner packets between the kernel and the ESP data plane (Linux only).

`TunDevice.open(name, queues, mtu)` creates (or attaches to) a multi-queue TUN device (IFF_TUN |
IFF_NO_PI | IFF_MULTI_QUEUE, no packet-information prefix: every read/write is one bare IPv4 or IPv6
packet), one non-blocking file descriptor per queue for the C worker to poll, sets the MTU and brings
the link up. Addresses, routes to remote traffic selectors and the MTU are managed through rtnetlink
(pyroute2). `RouteTable` counts references per prefix, so a Child SA rekey that installs the same
route again and then deletes the old SA leaves the route in place.

Needs CAP_NET_ADMIN. The netlink calls are synchronous (about a millisecond each); called from a
thread running an asyncio loop they run in a short-lived helper thread, because pyroute2's synchronous
API cannot run inside a running loop.

No ESP here, and no engine imports: this module only moves the OS side.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from pyroute2 import IPRoute, NetlinkError  # type: ignore[import-untyped]

__all__ = [
    "TUN_PATH",
    "MAX_IFNAME_LEN",
    "MAX_QUEUES",
    "MIN_MTU",
    "MAX_MTU",
    "TunError",
    "TunUnavailable",
    "NetlinkConfigError",
    "TunDevice",
    "RouteTable",
]

TUN_PATH = "/dev/net/tun"
# <linux/if_tun.h>: _IOW('T', 202, int) and friends; the ifreq flags of TUNSETIFF.
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNGETIFF = 0x800454D2
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_PERSIST = 0x0800
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
# TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN: TCP super-packets with a partial checksum
TUN_OFFLOADS = 0x01 | 0x02 | 0x04 | 0x08
IFNAMSIZ = 16  # <linux/if.h>: the name buffer of struct ifreq, NUL included
MAX_IFNAME_LEN = IFNAMSIZ - 1
IFREQ = struct.Struct(f"{IFNAMSIZ}sH22x")  # struct ifreq: name, ifr_flags, rest of the 40-byte union
MAX_QUEUES = 256  # the kernel's MAX_TAP_QUEUES (drivers/net/tun.c): more queues get EINVAL
MIN_MTU = 68  # RFC 791: every IPv4 host must pass a 68-byte datagram; the kernel refuses less
MAX_QUEUE_LENGTH = 1 << 20  # packets; far above any useful queue
MAX_MTU = 65535  # the TUN driver's max_mtu (an IPv4 datagram's total length is 16 bits too)
_BAD_NAME_CHARS = frozenset("/:") | frozenset(" \t\n\r\v\f")  # the kernel's dev_valid_name()

_T = TypeVar("_T")
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TunError(Exception):
    """Base of this module's errors."""


class TunUnavailable(TunError):
    """A TUN device cannot be opened here; the message names the cause (missing /dev/net/tun, no
    CAP_NET_ADMIN, a bad or too long name, a name taken by another kind of device, ...)."""


class NetlinkConfigError(TunError):
    """The kernel refused an address, route or link change; `code` is the errno it returned."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[type[NetlinkConfigError], tuple[str, int]]:
        return type(self), (str(self), self.code)  # keeps `code` across pickling (worker processes)


def _check_name(name: str) -> bytes:
    # The kernel would truncate nothing and silently accept little: check here, with a clear message.
    if not isinstance(name, str):
        raise TunUnavailable(f"TUN device name must be a str, not {type(name).__name__}")
    raw = name.encode("ascii", "replace")
    if not name or name in (".", ".."):
        raise TunUnavailable(f"invalid TUN device name {name!r}")
    if len(raw) > MAX_IFNAME_LEN:
        raise TunUnavailable(f"TUN device name {name!r} is {len(raw)} bytes; Linux allows {MAX_IFNAME_LEN}")
    if any(c in _BAD_NAME_CHARS for c in name) or not name.isascii() or not name.isprintable():
        raise TunUnavailable(f"invalid TUN device name {name!r} (no '/', ':', whitespace or non-ASCII)")
    return raw


def _open_error(exc: OSError, name: str) -> TunUnavailable:
    code = exc.errno
    if isinstance(exc, FileNotFoundError) or code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        cause = f"{TUN_PATH} is missing (load the tun module, or give the container the device)"
    elif code in (errno.EPERM, errno.EACCES):
        cause = "permission denied: creating or attaching to a TUN device needs CAP_NET_ADMIN"
    elif code == errno.EBUSY:
        cause = f"{name!r} exists and is busy (a single-queue TUN device already attached elsewhere)"
    elif code == errno.EINVAL:
        cause = (f"the kernel refused {name!r}: the name belongs to another kind of device or to a TUN "
                 f"device created without IFF_MULTI_QUEUE or with other flags, or the queue limit is reached")
    else:
        cause = f"{os.strerror(code) if code else exc}"
    return TunUnavailable(f"cannot open TUN device {name!r}: {cause}")


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _netlink(work: Callable[[Any], _T], what: str) -> _T:
    """Run `work(ipr)` with a fresh IPRoute and turn kernel refusals into NetlinkConfigError.

    A fresh socket per call (about 1 ms) keeps the object usable from any thread: pyroute2 ties an
    IPRoute to the thread that made it."""

    def run() -> _T:
        try:
            with IPRoute() as ipr:
                return work(ipr)
        except NetlinkError as exc:
            code = int(exc.code)
            raise NetlinkConfigError(f"{what}: {os.strerror(code)}", code) from None

    if not _in_running_loop():
        return run()
    # pyroute2's synchronous API starts its own event loop, which fails inside a running one.
    box: list[_T] = []
    failure: list[BaseException] = []

    def in_thread() -> None:
        try:
            box.append(run())
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=in_thread, name="tun-netlink")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return box[0]


def _network(cidr: str) -> IpNetwork:
    try:
        return ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:  # host bits set, or not a prefix at all
        raise ValueError(f"not a route prefix: {cidr!r} ({exc})") from None


class RouteTable:
    """Routes of one device, counted per prefix: the kernel route exists while any holder needs it.

    `add` installs the route on the first reference, `remove` deletes it on the last; a route the
    kernel already has through this device counts as installed, one it no longer has (the link was
    reset) is not an error to delete. `metric` and `table` apply to every route of this table
    (None: the kernel's defaults, metric 0 for IPv4 and 1024 for IPv6, table main)."""

    def __init__(self, ifindex: int, *, metric: int | None = None, table: int | None = None) -> None:
        self.ifindex = ifindex
        self.metric = metric
        self.table = table
        self._refs: dict[IpNetwork, int] = {}

    def _spec(self, net: IpNetwork) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "family": socket.AF_INET if net.version == 4 else socket.AF_INET6,
            "dst": str(net.network_address),
            "dst_len": net.prefixlen,
            "oif": self.ifindex,
        }
        if self.metric is not None:
            spec["priority"] = self.metric
        if self.table is not None:
            spec["table"] = self.table
        return spec

    def refcount(self, cidr: str) -> int:
        return self._refs.get(_network(cidr), 0)

    def routes(self) -> dict[str, int]:
        """Prefix -> reference count, for status output."""
        return {str(net): n for net, n in self._refs.items()}

    def add(self, cidr: str) -> bool:
        """Take a reference on `cidr`; True when this call installed the kernel route (or adopted the same
        route through this device, found already there)."""
        net = _network(cidr)
        held = self._refs.get(net, 0)
        if held == 0:
            self._install(net)
        self._refs[net] = held + 1
        return held == 0

    def remove(self, cidr: str) -> bool:
        """Drop a reference on `cidr` (none held: no-op); True when this call deleted the route."""
        net = _network(cidr)
        held = self._refs.get(net, 0)
        if held == 0:
            return False
        if held > 1:
            self._refs[net] = held - 1
            return False
        self._uninstall(net)
        del self._refs[net]
        return True

    def forget(self) -> None:
        """Drop every reference without touching the kernel (the device is gone, and its routes too)."""
        self._refs.clear()

    def _install(self, net: IpNetwork) -> None:
        spec = self._spec(net)

        def work(ipr: Any) -> None:
            try:
                ipr.route("add", **spec)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
                # The same prefix and metric exist already: fine if they lead into this device.
                found = ipr.route("dump", family=spec["family"], dst_len=net.prefixlen,
                                  table=spec.get("table", 254))
                for msg in found:
                    if msg.get("dst", _default_dst(net)) == spec["dst"] and msg.get("oif") == self.ifindex:
                        return
                raise NetlinkConfigError(f"a route to {net} exists through another device", exc.code) from None

        _netlink(work, f"adding route {net} via ifindex {self.ifindex}")

    def _uninstall(self, net: IpNetwork) -> None:
        spec = self._spec(net)

        def work(ipr: Any) -> None:
            try:
                ipr.route("del", **spec)
            except NetlinkError as exc:
                if exc.code not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                    raise  # already gone (link reset or device removed): the goal is reached

        _netlink(work, f"deleting route {net} via ifindex {self.ifindex}")


def _interface(cidr: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        return ipaddress.ip_interface(cidr)
    except ValueError as exc:
        raise ValueError(f"not an address with prefix length: {cidr!r} ({exc})") from None


def _default_dst(net: IpNetwork) -> str:
    # A /0 route carries no RTA_DST attribute.
    return "0.0.0.0" if net.version == 4 else "::"


class TunDevice:
    """One multi-queue TUN device: `name`, `index` (ifindex), `fds` (one non-blocking fd per queue),
    `mtu`, and `routes` (a RouteTable on this device). Use `open`; `close` ends it (also as a context
    manager)."""

    def __init__(self, name: str, index: int, fds: tuple[int, ...], mtu: int, offload: bool = False) -> None:
        self.name = name
        self.offload = offload  # reads and writes carry a virtio_net_hdr
        self.index = index
        self.fds = fds
        self.mtu = mtu
        self.routes = RouteTable(index)
        self._closed = False

    @classmethod
    def open(cls, name: str, queues: int, mtu: int, *, offload: bool = False) -> TunDevice:
        """Create `name` (or attach `queues` more queues to an existing multi-queue TUN device of that
        name), set its MTU and bring it up. A name with "%d" lets the kernel pick the number.
        offload: IFF_VNET_HDR with TSO (TUNSETOFFLOAD): every read and write starts with a 10-byte
        virtio_net_hdr, and the kernel hands over TCP super-packets of up to 64 KiB to split (what
        makes userland tunnels fast: one trip through the stack per 64 KiB, not per segment)."""
        raw = _check_name(name)
        if isinstance(queues, bool) or not isinstance(queues, int) or not 1 <= queues <= MAX_QUEUES:
            raise ValueError(f"queues must be an integer in [1, {MAX_QUEUES}], got {queues!r}")
        _check_mtu(mtu)
        fds: list[int] = []
        try:
            for _ in range(queues):
                try:
                    fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                except OSError as exc:
                    raise _open_error(exc, name) from None
                fds.append(fd)
                try:
                    flags = IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | (IFF_VNET_HDR if offload else 0)
                    answer = fcntl.ioctl(fd, TUNSETIFF, IFREQ.pack(raw, flags))
                    if offload:
                        fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_OFFLOADS)
                except OSError as exc:
                    raise _open_error(exc, name) from None
                # The kernel writes back the real name ("tun%d" becomes "tun0"): later queues use it.
                raw = IFREQ.unpack(answer)[0].rstrip(b"\0")
            real = raw.decode("ascii")
            device = cls(real, socket.if_nametoindex(real), tuple(fds), mtu, offload)
            _netlink(lambda ipr: ipr.link("set", index=device.index, mtu=mtu, state="up"),
                     f"setting {real} up with MTU {mtu}")
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return device

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise TunError(f"TUN device {self.name} is closed")

    def set_mtu(self, mtu: int) -> None:
        """Change the device MTU (e.g. after a path MTU change: see ikev2lib.gateway.mtu)."""
        self._check_open()
        _check_mtu(mtu)
        _netlink(lambda ipr: ipr.link("set", index=self.index, mtu=mtu), f"setting MTU {mtu} on {self.name}")
        self.mtu = mtu

    def set_queue_length(self, packets: int) -> None:
        """The kernel's queue of packets waiting for a reader, per queue (txqueuelen; default 500). A
        reader that falls behind a burst loses what does not fit, which TCP reads as congestion."""
        self._check_open()
        if not 1 <= packets <= MAX_QUEUE_LENGTH:
            raise ValueError(f"queue length must be 1..{MAX_QUEUE_LENGTH}")
        _netlink(lambda ipr: ipr.link("set", index=self.index, txqlen=packets),
                 f"setting queue length {packets} on {self.name}")

    def add_address(self, cidr: str) -> None:
        """Put a local address on the device ("10.1.0.1/32", "2001:db8:1::1/128"); already there: no-op.
        IPv6 needs an MTU of at least 1280 (RFC 8200): below that the kernel disables IPv6 here."""
        self._check_open()
        iface = _interface(cidr)

        def work(ipr: Any) -> None:
            try:
                ipr.addr("add", index=self.index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise

        _netlink(work, f"adding address {iface} to {self.name}")

    def remove_address(self, cidr: str) -> None:
        """Take a local address off the device; not there: no-op."""
        self._check_open()
        iface = _interface(cidr)

        def work(ipr: Any) -> None:
            try:
                ipr.addr("del", index=self.index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            except NetlinkError as exc:
                if exc.code not in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
                    raise

        _netlink(work, f"removing address {iface} from {self.name}")

    def add_route(self, cidr: str) -> bool:
        """Route a remote traffic selector ("10.2.0.0/24", "::/0") into the device, counted: see RouteTable."""
        self._check_open()
        return self.routes.add(cidr)

    def remove_route(self, cidr: str) -> bool:
        """Drop one reference on a route; the route goes with the last one."""
        self._check_open()
        return self.routes.remove(cidr)

    def close(self) -> None:
        """Close every queue. The kernel removes the device with its last queue; a device made persistent
        (TUNSETPERSIST, e.g. by `ip tuntap add`) loses that flag first so it goes too."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.fds:
                flags = IFREQ.unpack(fcntl.ioctl(self.fds[0], TUNGETIFF, bytes(IFREQ.size)))[1]
                if flags & IFF_PERSIST:
                    fcntl.ioctl(self.fds[0], TUNSETPERSIST, 0)
        finally:
            for fd in self.fds:
                os.close(fd)
            self.routes.forget()

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.fds)} queues"
        return f"TunDevice({self.name!r}, index={self.index}, mtu={self.mtu}, {state})"


def _check_mtu(mtu: int) -> None:
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU:
        raise ValueError(f"mtu must be an integer in [{MIN_MTU}, {MAX_MTU}], got {mtu!r}")
