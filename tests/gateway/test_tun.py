"""The TUN device and its routes, against the real kernel inside a fresh network namespace (needs root:
fails, never skips, like tests/interop). Each check runs in a forked child that joined the namespace
(`Namespace.call`), since queue fds and netlink sockets belong to the process that opened them."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import select
import struct
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from interop.netns import Namespace
from ikev2lib.gateway import tun
from ikev2lib.gateway.tun import TunDevice, TunUnavailable

WAIT = 2.0  # seconds for the kernel's answer to a ping; it takes microseconds
NAME = "iktun0"
NOBODY = 65534
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY = 128, 129


@pytest.fixture
def ns() -> Iterator[Namespace]:
    namespace = Namespace.create(f"ikt-tun-{secrets.token_hex(3)}")
    try:
        yield namespace
    finally:
        namespace.close()


def _ip_json(*args: str) -> Any:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else None


def _routes(family: str) -> list[str]:
    return [f"{r['dst']} dev {r.get('dev')}" for r in _ip_json(family, "route", "show") or []]


def _link(name: str) -> dict[str, Any] | None:
    found = _ip_json("-d", "link", "show", "dev", name)
    return found[0] if found else None


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _echo4(src: str, dst: str, ident: int, payload: bytes) -> bytes:
    icmp = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, 1) + payload
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ident, 0, 64, 1, 0,
                         bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))  # fmt: skip
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + icmp


def _echo6(src: bytes, dst: bytes, ident: int, payload: bytes) -> bytes:
    icmp = struct.pack("!BBHHH", ICMPV6_ECHO_REQUEST, 0, 0, ident, 1) + payload
    pseudo = src + dst + struct.pack("!IxxxB", len(icmp), 58)  # RFC 8200 section 8.1
    icmp = icmp[:2] + struct.pack("!H", _checksum(pseudo + icmp)) + icmp[4:]
    return struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 64, src, dst) + icmp


def _read_any(fds: tuple[int, ...], want: int) -> bytes | None:
    """The first packet of IP version `want` from any queue (the kernel picks the queue by flow hash);
    other traffic (IPv6 router solicitations, ...) is skipped."""
    end = time.monotonic() + WAIT
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select(list(fds), [], [], left)
        for fd in ready:
            try:
                packet = os.read(fd, 65535)
            except BlockingIOError:
                continue
            if packet and packet[0] >> 4 == want:
                return packet
    return None


# ---- bodies run inside the namespace (forked child) ----


def _open_and_describe() -> dict[str, Any]:
    with TunDevice.open(NAME, 3, 1400) as dev:
        return {
            "name": dev.name, "index": dev.index, "ifindex": _link(NAME)["ifindex"],  # type: ignore[index]
            "fds": len(set(dev.fds)), "blocking": [os.get_blocking(fd) for fd in dev.fds],
            "link": _link(NAME),
        }  # fmt: skip


def _ping_through_tun() -> dict[str, Any]:
    with TunDevice.open(NAME, 2, 1400) as dev:
        dev.add_address("10.1.0.1/32")
        dev.add_address("10.1.0.1/32")  # again: no error
        dev.add_address("2001:db8:1::1/128")
        dev.add_route("10.2.0.0/24")  # the reply to 10.2.0.5 goes back into the device
        dev.add_route("2001:db8:2::/48")
        os.write(dev.fds[0], _echo4("10.2.0.5", "10.1.0.1", 0x4242, b"ikev2lib tun"))
        reply4 = _read_any(dev.fds, 4)
        src6 = bytes.fromhex("20010db8000200000000000000000005")
        dst6 = bytes.fromhex("20010db8000100000000000000000001")
        os.write(dev.fds[1], _echo6(src6, dst6, 0x4343, b"ikev2lib tun6"))
        reply6 = _read_any(dev.fds, 6)
        return {"reply4": reply4, "reply6": reply6}


def _route_refcounts() -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with TunDevice.open(NAME, 1, 1500) as dev:
        seen["first"] = dev.add_route("10.2.0.0/24")
        seen["second"] = dev.add_route("10.2.0.0/24")  # a rekey installs the same selector again
        seen["refs"] = dev.routes.refcount("10.2.0.0/24")
        seen["after_add"] = _routes("-4")
        seen["remove_1"] = dev.remove_route("10.2.0.0/24")
        seen["after_remove_1"] = _routes("-4")
        seen["remove_2"] = dev.remove_route("10.2.0.0/24")
        seen["after_remove_2"] = _routes("-4")
        seen["remove_missing"] = dev.remove_route("10.2.0.0/24")
        dev.add_route("0.0.0.0/0")
        dev.add_route("2001:db8:2::/48")
        dev.add_route("2001:db8:2::/48")
        dev.add_route("::/0")
        seen["default4"] = _routes("-4")
        seen["v6"] = _routes("-6")
        dev.remove_route("2001:db8:2::/48")
        seen["v6_one_ref_left"] = _routes("-6")
        dev.remove_route("2001:db8:2::/48")
        dev.remove_route("::/0")
        dev.remove_route("0.0.0.0/0")
        seen["v6_end"] = _routes("-6")
        seen["v4_end"] = _routes("-4")
        # Someone deleted the route behind our back (e.g. the link was reset): the last remove is fine.
        dev.add_route("10.3.0.0/24")
        subprocess.run(["ip", "route", "del", "10.3.0.0/24"], check=True, timeout=10)
        seen["vanished_remove"] = dev.remove_route("10.3.0.0/24")
        # A route to the same prefix through another device is refused, not adopted.
        subprocess.run(["ip", "route", "add", "10.4.0.0/24", "dev", "lo"], check=True, timeout=10)
        try:
            dev.add_route("10.4.0.0/24")
            seen["other_device"] = "accepted"
        except tun.NetlinkConfigError as exc:
            seen["other_device"] = str(exc)
        seen["refs_after_refusal"] = dev.routes.refcount("10.4.0.0/24")
        dev.set_mtu(1300)
        seen["mtu"] = (_link(NAME) or {}).get("mtu")
    return seen


def _from_asyncio() -> list[str]:
    # pyroute2's synchronous API cannot run inside a running loop; the module must cope.
    async def main() -> list[str]:
        with TunDevice.open(NAME, 1, 1500) as dev:
            dev.add_route("10.5.0.0/16")
            return _routes("-4")

    return asyncio.run(main())


def _bad_opens() -> dict[str, str]:
    errors: dict[str, str] = {}
    for label, name in (("long", "x" * 16), ("slash", "a/b"), ("space", "a b"), ("empty", ""),
                        ("not_tun", "lo")):  # fmt: skip
        try:
            TunDevice.open(name, 1, 1500).close()
            errors[label] = "opened"
        except TunUnavailable as exc:
            errors[label] = str(exc)
    subprocess.run(["ip", "tuntap", "add", "mode", "tun", "name", "single0"], check=True, timeout=10)
    try:
        TunDevice.open("single0", 1, 1500).close()  # exists without IFF_MULTI_QUEUE
        errors["single_queue"] = "opened"
    except TunUnavailable as exc:
        errors["single_queue"] = str(exc)
    return errors


def _unprivileged_open() -> str:
    os.setgid(NOBODY)
    os.setuid(NOBODY)  # drops CAP_NET_ADMIN (this forked child only)
    try:
        TunDevice.open(NAME, 1, 1500).close()
    except TunUnavailable as exc:
        return str(exc)
    return "opened"


def _close_lifecycle() -> dict[str, Any]:
    seen: dict[str, Any] = {}
    first = TunDevice.open(NAME, 2, 1500)
    second = TunDevice.open(NAME, 1, 1500)  # attaches one more queue to the same device
    seen["same_device"] = first.index == second.index
    seen["queues"] = ((_link(NAME) or {}).get("linkinfo") or {}).get("info_data", {}).get("numqueues")
    first.close()
    first.close()  # twice: no error
    seen["after_first_close"] = _link(NAME) is not None
    second.close()
    seen["after_last_close"] = _link(NAME) is not None
    try:
        second.add_route("10.2.0.0/24")
        seen["use_after_close"] = "accepted"
    except tun.TunError as exc:
        seen["use_after_close"] = str(exc)
    subprocess.run(["ip", "tuntap", "add", "mode", "tun", "multi_queue", "name", "pers0"], check=True, timeout=10)
    persistent = TunDevice.open("pers0", 2, 1500)
    seen["persistent_up"] = "UP" in ((_link("pers0") or {}).get("flags") or [])
    persistent.close()
    seen["persistent_after_close"] = _link("pers0") is not None
    numbered = TunDevice.open("iknum%d", 2, 1500)
    seen["numbered"] = numbered.name
    numbered.close()
    return seen


# ---- tests ----


def test_device_exists_with_mtu_and_queues(ns: Namespace) -> None:
    seen = ns.call(_open_and_describe)
    link = seen["link"]
    assert seen["name"] == NAME and seen["index"] == seen["ifindex"]
    assert seen["fds"] == 3 and seen["blocking"] == [False, False, False]
    assert link["mtu"] == 1400 and "UP" in link["flags"]
    info = link["linkinfo"]["info_data"]
    assert (info["type"], info["pi"], info["multi_queue"], info["numqueues"]) == ("tun", False, True, 3)


def test_kernel_answers_a_ping_written_into_a_queue(ns: Namespace) -> None:
    seen = ns.call(_ping_through_tun)
    reply4, reply6 = seen["reply4"], seen["reply6"]
    assert reply4 is not None, "no ICMP echo reply from the kernel"
    assert reply4[9] == 1 and reply4[12:16] == bytes([10, 1, 0, 1]) and reply4[16:20] == bytes([10, 2, 0, 5])
    ihl = (reply4[0] & 0x0F) * 4
    assert reply4[ihl] == ICMP_ECHO_REPLY and reply4[ihl + 4:ihl + 6] == b"\x42\x42"
    assert reply4[ihl + 8:] == b"ikev2lib tun"
    assert reply6 is not None, "no ICMPv6 echo reply from the kernel"
    assert reply6[6] == 58 and reply6[40] == ICMPV6_ECHO_REPLY and reply6[48:] == b"ikev2lib tun6"


def test_routes_are_reference_counted(ns: Namespace) -> None:
    seen = ns.call(_route_refcounts)
    route = f"10.2.0.0/24 dev {NAME}"
    assert (seen["first"], seen["second"], seen["refs"]) == (True, False, 2)
    assert route in seen["after_add"]
    assert seen["remove_1"] is False and route in seen["after_remove_1"]
    assert seen["remove_2"] is True and route not in seen["after_remove_2"]
    assert seen["remove_missing"] is False
    assert f"default dev {NAME}" in seen["default4"]
    assert f"2001:db8:2::/48 dev {NAME}" in seen["v6"] and f"default dev {NAME}" in seen["v6"]
    assert f"2001:db8:2::/48 dev {NAME}" in seen["v6_one_ref_left"]
    assert not [r for r in seen["v6_end"] if r.startswith(("2001:db8:2::", "default"))]
    assert not [r for r in seen["v4_end"] if r.startswith(("10.2.", "default"))]
    assert seen["vanished_remove"] is True
    assert "another device" in seen["other_device"] and seen["refs_after_refusal"] == 0
    assert seen["mtu"] == 1300


def test_netlink_calls_work_inside_a_running_event_loop(ns: Namespace) -> None:
    assert f"10.5.0.0/16 dev {NAME}" in ns.call(_from_asyncio)


def test_bad_names_and_refusals_raise_tun_unavailable(ns: Namespace) -> None:
    errors = ns.call(_bad_opens)
    assert "Linux allows 15" in errors["long"]
    assert "invalid" in errors["slash"] and "invalid" in errors["space"] and "invalid" in errors["empty"]
    assert "refused 'lo'" in errors["not_tun"]
    assert "IFF_MULTI_QUEUE" in errors["single_queue"]
    assert "CAP_NET_ADMIN" in ns.call(_unprivileged_open)


def test_missing_tun_device_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tun, "TUN_PATH", "/nonexistent/net/tun")
    with pytest.raises(TunUnavailable, match="is missing"):
        TunDevice.open(NAME, 1, 1500)


def test_argument_limits() -> None:
    for queues in (0, tun.MAX_QUEUES + 1, True):
        with pytest.raises(ValueError, match="queues"):
            TunDevice.open(NAME, queues, 1500)
    for mtu in (tun.MIN_MTU - 1, tun.MAX_MTU + 1):
        with pytest.raises(ValueError, match="mtu"):
            TunDevice.open(NAME, 1, mtu)
    table = tun.RouteTable(1)
    with pytest.raises(ValueError, match="route prefix"):
        table.add("10.2.0.1/24")  # host bits set: a typo, not a selector
    assert table.refcount("10.2.0.0/24") == 0 and table.remove("10.2.0.0/24") is False


def test_close_removes_the_device(ns: Namespace) -> None:
    seen = ns.call(_close_lifecycle)
    assert seen["same_device"] is True and seen["queues"] == 3
    assert seen["after_first_close"] is True  # the other object's queue keeps it
    assert seen["after_last_close"] is False
    assert "closed" in seen["use_after_close"]
    assert seen["persistent_up"] is True and seen["persistent_after_close"] is False
    assert seen["numbered"].startswith("iknum") and seen["numbered"] != "iknum%d"
