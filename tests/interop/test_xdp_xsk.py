"""AF_XDP on a real veth between two network namespaces: ikev2lib's XDP program and XSKs (ikev2lib.xdp).

The right namespace attaches the program (native and generic/SKB mode), registers SPIs and reads its
XSK; the left one sends. What the data plane owns (raw ESP and ESP in UDP/4500 with a registered SPI)
arrives in the UMEM and nowhere else; IKE with the non-ESP marker, NAT keepalives, unknown SPIs,
ESP too short to have a header and IPv4 fragments of ESP reach the kernel's sockets as before.

Then the zero-copy path both ways: frames are classified in the UMEM (frame_parse_batch) and
decrypted from there by SATable.decap_batch; outgoing packets are encrypted straight into UMEM
frames behind their Ethernet/IP(/UDP) headers (FrameTemplate.encap_batch) and sent from the TX ring,
and the left namespace's kernel delivers them to a raw ESP socket and a UDP socket, where independent
EspSA objects decrypt them.
"""

from __future__ import annotations

import select
import socket
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from .netns import NamespacePair, PairAddresses

pytestmark = pytest.mark.interop

OURS, OTHER = 0x1001, 0x2002  # registered in the XDP map / not registered
NATT_PORT = 4500
BATCH = 64
LISTEN = 3.0  # seconds the right side reads its XSK and sockets, far above the sends' few milliseconds
READY_WAIT = 10.0
FRAGMENTED_PAYLOAD = 3000  # above the veth MTU: the kernel fragments the raw ESP packet


def _esp(spi: int, seq: int, body: bytes) -> bytes:
    return spi.to_bytes(4, "big") + seq.to_bytes(4, "big") + body


def _receive(ifname: str, ready: str, mode: str) -> dict[str, Any]:
    """In the right namespace: XSK frames and what the kernel's raw ESP and UDP/4500 sockets got."""
    from ikev2lib.xdp import XdpProgram, XskSocket

    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", NATT_PORT))
    with XdpProgram.attach(ifname, mode=mode, natt_port=NATT_PORT) as program:
        program.add_spi(OURS)
        assert program.remove_spi(0x7777) is False  # never added: no error
        with XskSocket.open(program, ifname, 0) as xsk:
            Path(ready).touch()
            addrs, lens = array("Q", bytes(8 * BATCH)), array("I", bytes(4 * BATCH))
            frames: list[bytes] = []
            kernel_raw: list[bytes] = []
            kernel_udp: list[bytes] = []
            deadline = time.monotonic() + LISTEN
            while time.monotonic() < deadline:
                n = xsk.recv(addrs, lens)
                frames += [bytes(xsk.area[addrs[i]:addrs[i] + lens[i]]) for i in range(n)]
                xsk.release(addrs, n)
                readable, _, _ = select.select([raw, udp, xsk], [], [], 0.01)
                if raw in readable:
                    data = raw.recv(65535)
                    kernel_raw.append(data[(data[0] & 0x0F) * 4:])
                if udp in readable:
                    kernel_udp.append(udp.recv(65535))
            stats = xsk.stats()
    return {"frames": frames, "raw": kernel_raw, "udp": kernel_udp, "stats": stats}


def _send(dst: str) -> None:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.sendto(_esp(OURS, 1, b"raw ours"), (dst, 0))
    raw.sendto(_esp(OTHER, 1, b"raw other"), (dst, 0))
    raw.sendto(OURS.to_bytes(4, "big") + b"\x00\x00", (dst, 0))  # shorter than an ESP header
    raw.sendto(_esp(OURS, 2, b"F" * FRAGMENTED_PAYLOAD), (dst, 0))  # leaves as IPv4 fragments
    udp.sendto(_esp(OURS, 3, b"udp ours"), (dst, NATT_PORT))
    udp.sendto(_esp(OTHER, 3, b"udp other"), (dst, NATT_PORT))
    udp.sendto(bytes(4) + b"IKE message", (dst, NATT_PORT))  # the non-ESP marker
    udp.sendto(b"\xff", (dst, NATT_PORT))  # NAT keepalive


@pytest.fixture
def pair() -> Iterator[NamespacePair]:
    with NamespacePair(PairAddresses(left_inner=(), right_inner=())) as ns:
        yield ns


@pytest.mark.parametrize("mode", ["native", "skb"])
def test_only_registered_esp_reaches_the_xsk_and_the_rest_the_kernel(pair: NamespacePair, tmp_path: Path,
                                                                    mode: str) -> None:
    ready = tmp_path / "ready"
    task = pair.right.start(_receive, pair.right_if, str(ready), mode)
    deadline = time.monotonic() + READY_WAIT
    while not ready.exists():
        assert time.monotonic() < deadline, "the XSK side did not come up"
        time.sleep(0.02)
    pair.left.call(_send, pair.right_addr)
    got = task.result(LISTEN + 10)

    frames = [Ether(f) for f in got["frames"]]
    assert [bytes(f[IP].payload) if UDP not in f else bytes(f[UDP].payload) for f in frames] == [
        _esp(OURS, 1, b"raw ours"), _esp(OURS, 3, b"udp ours")]
    assert frames[0][IP].proto == 50 and frames[0][IP].src == pair.left_addr
    assert frames[1][UDP].dport == NATT_PORT
    # the kernel still gets everything else: unknown SPIs, the short packet, the reassembled fragments
    assert sorted(got["raw"]) == sorted([_esp(OTHER, 1, b"raw other"), OURS.to_bytes(4, "big") + b"\x00\x00",
                                         _esp(OURS, 2, b"F" * FRAGMENTED_PAYLOAD)])
    assert sorted(got["udp"]) == sorted([_esp(OTHER, 3, b"udp other"), bytes(4) + b"IKE message", b"\xff"])
    stats = got["stats"]
    assert stats["received"] == 2 and stats["rx_dropped"] == 0 and stats["rx_invalid_descs"] == 0


KEY = bytes(range(20))  # AES-128-GCM key + salt, both sides
REPLY_SPI = 0x5005  # right -> left
INNER_COUNT = 16


def _inner(i: int, src: str, dst: str) -> bytes:
    return bytes(IP(src=src, dst=dst, id=i) / UDP(sport=4000 + i, dport=5000) / f"inner {i}".encode())


def _mac(ns: Any, ifname: str) -> bytes:
    import json

    return bytes.fromhex(json.loads(ns.run(["ip", "-j", "link", "show", ifname]).stdout)[0]["address"].replace(":", ""))


def _gateway_side(ifname: str, ready: str, addrs_macs: tuple[str, str, bytes, bytes]) -> dict[str, Any]:
    """Right namespace: decrypt what arrives in the UMEM in place, then send replies from UMEM frames."""
    from ikev2lib import _esp_fast
    from ikev2lib.esp import EspSA, SATable
    from ikev2lib.xdp import FRAME_SIZE, XdpProgram, XskSocket

    me, peer, my_mac, peer_mac = addrs_macs
    table = SATable([EspSA(OURS, "aes128gcm16", KEY, "inbound")])
    outbound = EspSA(REPLY_SPI, "aes128gcm16", KEY, "outbound")
    inner: list[bytes] = []
    with XdpProgram.attach(ifname, mode="native") as program:
        program.add_spi(OURS)
        with XskSocket.open(program, ifname, 0) as xsk:
            Path(ready).touch()
            addrs, lens = array("Q", bytes(8 * BATCH)), array("I", bytes(4 * BATCH))
            offs, esp_lens = array("I", bytes(4 * BATCH)), array("I", bytes(4 * BATCH))
            verdicts, reasons = bytearray(BATCH), bytearray(BATCH)
            out = bytearray(BATCH * 2048)
            o_offs, o_lens, nhs, sts = array("I", bytes(4 * BATCH)), array("I", bytes(4 * BATCH)), bytearray(BATCH), \
                bytearray(BATCH)
            deadline = time.monotonic() + LISTEN
            while len(inner) < 2 * INNER_COUNT and time.monotonic() < deadline:
                n = xsk.recv(addrs, lens)
                if n:
                    found = _esp_fast.frame_parse_batch(xsk.area, addrs, lens, n, offs, esp_lens, verdicts, reasons)
                    assert found == n and set(verdicts[:n]) <= {0, 1}  # ESP_RAW / ESP_UDP
                    ok = table.decap_batch(xsk.area, offs[:n], esp_lens[:n], out, o_offs, o_lens, nhs, sts)
                    assert ok == n, list(sts[:n])
                    inner += [bytes(out[o_offs[i]:o_offs[i] + o_lens[i]]) for i in range(n)]
                    xsk.release(addrs, n)
                else:
                    time.sleep(0.001)
            # replies: raw ESP, then ESP in UDP/4500, each encrypted into its frame in the UMEM
            replies = b"".join(_inner(i, "10.2.0.1", "10.1.0.1") for i in range(INNER_COUNT))
            sizes = [len(_inner(i, "10.2.0.1", "10.1.0.1")) for i in range(INNER_COUNT)]
            r_offs = array("I", [sum(sizes[:i]) for i in range(INNER_COUNT)])
            r_lens = array("I", sizes)
            sent = 0
            for ports in (None, (NATT_PORT, NATT_PORT)):
                template = _esp_fast.FrameTemplate(family=4, src=socket.inet_aton(me), dst=socket.inet_aton(peer),
                                                   dst_mac=peer_mac, src_mac=my_mac, udp_ports=ports)
                frames = array("Q", bytes(8 * INNER_COUNT))
                assert xsk.tx_frames(frames, INNER_COUNT) == INNER_COUNT
                f_lens, f_sts = array("I", bytes(4 * INNER_COUNT)), bytearray(INNER_COUNT)
                ready_n = template.encap_batch(outbound, replies, r_offs, r_lens, xsk.area, frames, FRAME_SIZE,
                                               f_lens, f_sts)
                assert ready_n == INNER_COUNT, list(f_sts)
                sent += xsk.send(frames, f_lens, INNER_COUNT)
                time.sleep(0.2)  # let the kernel complete them before the next batch reuses the ring
            stats = xsk.stats()
    return {"inner": inner, "sent": sent, "stats": stats}


def _peer_side(dst: str, count: int) -> dict[str, Any]:
    """Left namespace: send ESP raw and in UDP, then read the gateway's replies from the kernel."""
    from ikev2lib.esp import EspSA

    out = EspSA(OURS, "aes128gcm16", KEY, "outbound")
    replies = EspSA(REPLY_SPI, "aes128gcm16", KEY, "inbound", replay_window=0)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", NATT_PORT))
    for i in range(count):
        raw.sendto(out.encap(_inner(i, "10.1.0.1", "10.2.0.1")), (dst, 0))
        udp.sendto(out.encap(_inner(count + i, "10.1.0.1", "10.2.0.1")), (dst, NATT_PORT))
    got: dict[str, list[bytes]] = {"raw": [], "udp": []}
    deadline = time.monotonic() + LISTEN + 5
    while len(got["raw"]) + len(got["udp"]) < 2 * count and time.monotonic() < deadline:
        readable, _, _ = select.select([raw, udp], [], [], 0.05)
        if raw in readable:
            data = raw.recv(65535)
            got["raw"].append(replies.decap(data[(data[0] & 0x0F) * 4:])[1])
        if udp in readable:
            got["udp"].append(replies.decap(udp.recv(65535))[1])
    return got


def test_esp_is_decrypted_in_the_umem_and_replies_leave_from_it(pair: NamespacePair, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    macs = (pair.right_addr, pair.left_addr, _mac(pair.right, pair.right_if), _mac(pair.left, pair.left_if))
    task = pair.right.start(_gateway_side, pair.right_if, str(ready), macs)
    deadline = time.monotonic() + READY_WAIT
    while not ready.exists():
        assert time.monotonic() < deadline, "the XSK side did not come up"
        time.sleep(0.02)
    peer = pair.left.start(_peer_side, pair.right_addr, INNER_COUNT)
    result = task.result(LISTEN + 15)
    replies = peer.result(LISTEN + 15)
    assert sorted(result["inner"]) == sorted(_inner(i, "10.1.0.1", "10.2.0.1") for i in range(2 * INNER_COUNT))
    assert result["sent"] == 2 * INNER_COUNT and result["stats"]["tx_invalid_descs"] == 0
    expected = sorted(_inner(i, "10.2.0.1", "10.1.0.1") for i in range(INNER_COUNT))
    assert sorted(replies["raw"]) == expected and sorted(replies["udp"]) == expected


VERDICTS = ("ESP_RAW", "ESP_UDP", "PASS", "DROP")  # esp_frame.h enum frame_verdict


def _classify(ifname: str, ready: str, expected: int) -> list[tuple[str, str | None, bytes]]:
    """Right namespace: (verdict, drop reason, ESP bytes) of every frame the XSK gets, by frame_parse_batch
    (and the single-frame parser's names for the same frame, which must agree)."""
    from ikev2lib import _esp_fast
    from ikev2lib.xdp import XdpProgram, XskSocket

    found: list[tuple[str, str | None, bytes]] = []
    with XdpProgram.attach(ifname, mode="native") as program, XskSocket.open(program, ifname, 0) as xsk:
        program.add_spi(OURS)
        Path(ready).touch()
        addrs, lens = array("Q", bytes(8 * BATCH)), array("I", bytes(4 * BATCH))
        offs, esp_lens = array("I", bytes(4 * BATCH)), array("I", bytes(4 * BATCH))
        verdicts, reasons = bytearray(BATCH), bytearray(BATCH)
        deadline = time.monotonic() + LISTEN
        while len(found) < expected and time.monotonic() < deadline:
            n = xsk.recv(addrs, lens)
            _esp_fast.frame_parse_batch(xsk.area, addrs, lens, n, offs, esp_lens, verdicts, reasons)
            for i in range(n):
                info = _esp_fast._frame_parse(bytes(xsk.area[addrs[i]:addrs[i] + lens[i]]))
                assert info["verdict"] == VERDICTS[verdicts[i]]
                found.append((info["verdict"], info["reason"], bytes(xsk.area[offs[i]:offs[i] + esp_lens[i]])))
            xsk.release(addrs, n)
            if n == 0:
                time.sleep(0.005)
    return found


def _inject(ifname: str, frames: list[bytes]) -> None:
    """Left namespace: frames exactly as given, onto the veth (AF_PACKET), bypassing the IP stack."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((ifname, 0))
    for frame in frames:
        sock.send(frame)


def test_hostile_frames_are_classified_never_misread(pair: NamespacePair, tmp_path: Path) -> None:
    """Frames the kernel's stack would never build, injected with AF_PACKET: the XDP program redirects
    what has our SPI at the right place, and the frame parser drops the liars by reason."""
    from scapy.layers.l2 import Dot1AD, Dot1Q

    dst, src = _mac(pair.right, pair.right_if), _mac(pair.left, pair.left_if)
    eth = Ether(dst=":".join(f"{b:02x}" for b in dst), src=":".join(f"{b:02x}" for b in src))
    esp = _esp(OURS, 9, b"q" * 40)
    ip = IP(src=pair.left_addr, dst=pair.right_addr, proto=50)
    good = bytes(eth / ip / esp)
    bad_checksum = bytearray(good)
    bad_checksum[24] ^= 0xFF
    lying = IP(src=pair.left_addr, dst=pair.right_addr, proto=50, len=20 + len(esp) + 40)  # past the frame
    frames = [
        bytes(eth / Dot1AD(vlan=100) / Dot1Q(vlan=7) / ip / esp),  # two VLAN tags: ours, ESP behind them
        bytes(eth / IP(src=pair.left_addr, dst=pair.right_addr, proto=50, options=b"\x01\x01\x01\x00") / esp),
        bytes(bad_checksum),  # header checksum wrong: dropped by reason
        bytes(eth / lying / esp),  # total length past the frame: dropped by reason
        good[:14 + 20 + 6],  # ESP cut short: the program passes it to the kernel, the XSK never sees it
        good,
    ]
    ready = tmp_path / "ready"
    task = pair.right.start(_classify, pair.right_if, str(ready), 5)
    deadline = time.monotonic() + READY_WAIT
    while not ready.exists():
        assert time.monotonic() < deadline, "the XSK side did not come up"
        time.sleep(0.02)
    pair.left.call(_inject, pair.left_if, frames)
    found = task.result(LISTEN + 10)
    assert [(v, e) for v, _, e in found if v != "DROP"] == [("ESP_RAW", esp)] * 3  # the ESP bytes exactly
    assert sorted(str(r) for v, r, _ in found if v == "DROP") == ["IP_CHECKSUM", "IP_LENGTH"]
    assert len(found) == 5  # the cut-short frame went to the kernel


def test_unavailable_is_a_clear_error() -> None:
    from ikev2lib.xdp import XdpProgram, XdpUnavailable

    with pytest.raises(XdpUnavailable, match="no such interface|No such device"):
        XdpProgram.attach("nonexistent0")
    with pytest.raises(ValueError):
        XdpProgram.attach("lo", mode="offload")


def _view_after_close(ifname: str) -> tuple[bytes, int]:
    from ikev2lib.xdp import XdpProgram, XskSocket

    with XdpProgram.attach(ifname, mode="skb") as program:
        xsk = XskSocket.open(program, ifname, 0, frames=64)
        view = xsk.area[0:16]
        view[:4] = b"kept"
        xsk.close()
        return bytes(view), len(xsk.area)  # Python owns the UMEM: still readable, never freed under a view


def test_a_view_of_the_umem_outlives_the_socket(pair: NamespacePair) -> None:
    data, size = pair.right.call(_view_after_close, pair.right_if)
    assert data[:4] == b"kept" and size == 64 * 4096


def _bind_modes(ifname: str) -> dict[str, Any]:
    from ikev2lib.xdp import XdpProgram, XdpUnavailable, XskSocket

    found: dict[str, Any] = {}
    with XdpProgram.attach(ifname, mode="native") as program:
        with XskSocket.open(program, ifname, 0, frames=64, zerocopy=None) as xsk:  # the kernel chooses
            found["auto"] = xsk.zerocopy
        with XskSocket.open(program, ifname, 0, frames=64) as xsk:
            found["copy"] = xsk.zerocopy
        try:
            XskSocket.open(program, ifname, 0, frames=64, zerocopy=True)
            found["zerocopy"] = "opened"
        except XdpUnavailable as exc:
            found["zerocopy"] = str(exc)
    return found


def test_zero_copy_is_taken_where_the_driver_has_it_and_refused_clearly_where_not(pair: NamespacePair) -> None:
    """veth has no XDP_ZEROCOPY: left to the kernel the XSK falls back to copy mode; demanded, the
    error says which mode failed and why."""
    found = pair.right.call(_bind_modes, pair.right_if)
    assert found["auto"] is False and found["copy"] is False
    assert "zero-copy mode" in found["zerocopy"] and "not supported" in found["zerocopy"], found
