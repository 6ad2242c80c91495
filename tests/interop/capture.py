"""Packet capture inside a namespace, and a small pcap reader for IKE datagrams.

`Capture(ns, iface, path)` sniffs one interface (UDP 500/4500 and raw ESP, IP protocol 50) with an
AF_PACKET socket in a forked child that
joined the namespace (the socket is bound before `start()` returns, so nothing sent afterwards is
missed — tshark's "Capturing on" message comes too early for that) and writes a classic pcap file
on `stop()`. `read_pcap()` returns the UDP datagrams (raw ESP is left to tshark, `tshark_esp.py`); `ike_messages()` keeps only IKE messages
(port 4500 datagrams lose their 4-byte non-ESP marker; ESP and NAT-keepalives are dropped).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from .netns import Namespace, NsTask

CAPTURE_START_TIMEOUT = 10.0
CAPTURE_STOP_TIMEOUT = 10.0
MAX_CAPTURE_SECONDS = 300.0  # a capture ends by itself after this long
MAX_CAPTURE_PACKETS = 100_000  # ... or after this many packets
SNAPLEN = 65535
MAX_PCAP_BYTES = 64 * 1024 * 1024  # refuse to read a larger capture
NON_ESP_MARKER = b"\x00\x00\x00\x00"  # RFC 3948 section 2.2
IKE_HEADER_LEN = 28
ETH_P_ALL = 0x0003
IKE_PORTS = (500, 4500)
IPPROTO_ESP = 50

_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")
PCAP_MAGIC_LE = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1


class CaptureError(RuntimeError):
    """A capture failed, or a capture file is not what we expect."""


def _is_ike_or_esp(frame: bytes) -> bool:
    """UDP 500/4500 (IKE, ESP in UDP, keepalives) or raw ESP (IP protocol 50) over IPv4."""
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
        return False
    if frame[14 + 9] == IPPROTO_ESP:
        return True
    if frame[14 + 9] != 17:
        return False
    ihl = (frame[14] & 0x0F) * 4
    if len(frame) < 14 + ihl + 4:
        return False
    sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
    return sport in IKE_PORTS or dport in IKE_PORTS


def _sniff(iface: str, path: str, ready: str, stop: str, max_seconds: float, max_packets: int) -> int:
    """Runs inside the namespace: capture UDP 500/4500 and IP protocol 50 frames until `stop` exists;
    write a pcap."""
    records: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + max_seconds
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sock:
        sock.bind((iface, 0))
        sock.settimeout(0.05)
        Path(ready).touch()
        stopping = False
        while len(records) < max_packets and time.monotonic() < deadline:
            try:
                frame = sock.recv(SNAPLEN)
            except (TimeoutError, BlockingIOError):
                if stopping:
                    break
                if os.path.exists(stop):
                    stopping = True  # drain what is already queued, then stop
                    sock.setblocking(False)
                continue
            if _is_ike_or_esp(frame):
                records.append((time.time(), frame))
    with open(path, "wb") as f:
        f.write(_PCAP_HEADER.pack(PCAP_MAGIC_LE, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
        for ts, frame in records:
            f.write(_PCAP_RECORD.pack(int(ts), int((ts % 1) * 1e6), len(frame), len(frame)))
            f.write(frame)
    return len(records)


class Capture:
    """Context manager: capture UDP 500/4500 and raw ESP on `iface` inside `ns` into `path` (pcap)."""

    def __init__(self, ns: Namespace, iface: str, path: Path) -> None:
        self.ns = ns
        self.iface = iface
        self.path = Path(path)
        self._ready = self.path.with_suffix(".ready")
        self._stop = self.path.with_suffix(".stop")
        self._task: NsTask | None = None
        self.packets = 0

    def start(self) -> Capture:
        for p in (self.path, self._ready, self._stop):
            p.unlink(missing_ok=True)
        self._task = self.ns.start(_sniff, self.iface, str(self.path), str(self._ready), str(self._stop),
                                   MAX_CAPTURE_SECONDS, MAX_CAPTURE_PACKETS)
        deadline = time.monotonic() + CAPTURE_START_TIMEOUT
        while not self._ready.exists():
            if time.monotonic() > deadline:
                self._task.kill()
                raise CaptureError(f"capture on {self.iface} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> Path:
        if self._task is not None:
            self._stop.touch()
            task, self._task = self._task, None
            self.packets = task.result(timeout=CAPTURE_STOP_TIMEOUT)
        for p in (self._ready, self._stop):
            p.unlink(missing_ok=True)
        return self.path

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class UdpDatagram:
    timestamp: float
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes


def read_pcap(path: Path) -> list[UdpDatagram]:
    """UDP-over-IPv4-over-Ethernet datagrams of a little-endian, microsecond pcap file."""
    data = Path(path).read_bytes()
    if len(data) > MAX_PCAP_BYTES:
        raise CaptureError(f"{path}: capture larger than {MAX_PCAP_BYTES} bytes")
    if len(data) < _PCAP_HEADER.size:
        raise CaptureError(f"{path}: not a pcap file")
    magic, _, _, _, _, _, linktype = _PCAP_HEADER.unpack_from(data)
    if magic != PCAP_MAGIC_LE or linktype != LINKTYPE_ETHERNET:
        raise CaptureError(f"{path}: expected a little-endian Ethernet pcap (magic {magic:#x}, link {linktype})")
    out: list[UdpDatagram] = []
    pos = _PCAP_HEADER.size
    while pos + _PCAP_RECORD.size <= len(data):
        sec, usec, incl, _ = _PCAP_RECORD.unpack_from(data, pos)
        pos += _PCAP_RECORD.size
        frame = data[pos:pos + incl]
        pos += incl
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        if ip[0] >> 4 != 4 or ip[9] != 17 or total > len(ip) or ihl < 20:
            continue
        if int.from_bytes(ip[6:8], "big") & 0x3FFF:
            continue  # IP fragment: not expected here (IKE fragmentation keeps datagrams small)
        udp = ip[ihl:total]
        sport, dport, ulen = struct.unpack_from("!HHH", udp)
        out.append(UdpDatagram(sec + usec / 1e6, ".".join(map(str, ip[12:16])),
                               ".".join(map(str, ip[16:20])), sport, dport, bytes(udp[8:ulen])))
    return out


def ike_payload(d: UdpDatagram) -> bytes | None:
    """The IKE message inside a datagram, or None for ESP / NAT-keepalive / non-IKE ports."""
    if 500 in (d.sport, d.dport) and 4500 not in (d.sport, d.dport):
        body = d.payload
    elif 4500 in (d.sport, d.dport):
        if not d.payload.startswith(NON_ESP_MARKER):
            return None  # ESP in UDP, or a 1-byte NAT-keepalive
        body = d.payload[len(NON_ESP_MARKER):]
    else:
        return None
    return body if len(body) >= IKE_HEADER_LEN else None


def ike_messages(path: Path) -> list[tuple[UdpDatagram, bytes]]:
    return [(d, m) for d in read_pcap(path) if (m := ike_payload(d)) is not None]
