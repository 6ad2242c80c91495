"""Per-worker raw ESP sockets (`attach_raw_steering`): each keeps only the SPIs of its worker, IPv4
and IPv6, and worker 0 alone gets packets too short to hold an SPI (it counts them). Real raw sockets
on loopback (root), real kernel delivery: every raw ESP socket is offered every packet."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from ikev2lib import _esp_fast

IPPROTO_ESP = 50
WORKERS = 3
WAIT = 0.2  # seconds to wait for a packet that must (or must not) arrive


def _payloads(sock: socket.socket, family: int) -> list[bytes]:
    found = []
    while select.select([sock], [], [], WAIT)[0]:
        data = sock.recv(2048)
        found.append(data[(data[0] & 0x0F) * 4:] if family == 4 else data)  # IPv4 raw reads carry the header
    return found


@pytest.fixture(params=[4, 6])
def sockets(request: pytest.FixtureRequest) -> Iterator[tuple[int, str, socket.socket, list[socket.socket]]]:
    family = request.param
    af, host = (socket.AF_INET, "127.0.0.1") if family == 4 else (socket.AF_INET6, "::1")
    workers = []
    for index in range(WORKERS):
        sock = socket.socket(af, socket.SOCK_RAW, IPPROTO_ESP)
        sock.bind((host, 0))
        _esp_fast.attach_raw_steering(sock.fileno(), family, WORKERS, index)
        workers.append(sock)
    sender = socket.socket(af, socket.SOCK_RAW, IPPROTO_ESP)
    _esp_fast.attach_raw_steering(sender.fileno(), family, 1, 0)  # keeps every packet: drained, unused
    yield family, host, sender, workers
    for sock in (sender, *workers):
        sock.close()


def test_each_worker_reads_only_its_spis(sockets: tuple[int, str, socket.socket, list[socket.socket]]) -> None:
    family, host, sender, workers = sockets
    packets = {spi: spi.to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes(24) for spi in range(0x1000, 0x1009)}
    for packet in packets.values():
        sender.sendto(packet, (host, 0))
    for index, sock in enumerate(workers):
        got = _payloads(sock, family)
        assert got == [p for spi, p in packets.items() if spi % WORKERS == index]


def test_packets_without_a_whole_spi_go_to_worker_zero_only(
    sockets: tuple[int, str, socket.socket, list[socket.socket]],
) -> None:
    family, host, sender, workers = sockets
    sender.sendto(b"\x00\x00\x10", (host, 0))
    assert _payloads(workers[0], family) == [b"\x00\x00\x10"]
    assert _payloads(workers[1], family) == [] and _payloads(workers[2], family) == []


@pytest.mark.parametrize("args", [(4, 0, 0), (4, 2, 2), (5, 2, 0)])
def test_bad_arguments_are_refused(args: tuple[int, int, int]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_ESP)
    try:
        with pytest.raises(OSError):
            _esp_fast.attach_raw_steering(sock.fileno(), *args)
    finally:
        sock.close()
