"""Small UDP helpers meant to run inside a namespace via `Namespace.start` / `Namespace.call`."""

from __future__ import annotations

import socket
import time

RECV_BUFFER = 65535


def udp_receive(bind_addr: str, port: int, count: int, timeout: float) -> list[tuple[bytes, str]]:
    """Receive up to `count` datagrams on bind_addr:port within `timeout` seconds; returns
    [(payload, source address)]."""
    received: list[tuple[bytes, str]] = []
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((bind_addr, port))
        while len(received) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data, (src, _) = sock.recvfrom(RECV_BUFFER)
            except TimeoutError:
                break
            received.append((data, src))
    return received


def udp_send(src_addr: str, dst_addr: str, port: int, payloads: list[bytes], interval: float) -> int:
    """Send each payload from src_addr to dst_addr:port, `interval` seconds apart; returns the count."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((src_addr, 0))
        for payload in payloads:
            sock.sendto(payload, (dst_addr, port))
            time.sleep(interval)
    return len(payloads)
