"""`NatTopology` is a real NAT: `outside` sees only the NAT's address, answers to the mapped address and
port come back inside, the private address is unreachable from outside, conntrack shows the mapping,
and after a flush a new mapping gets a new public port when `random_ports` is set."""

from __future__ import annotations

import errno
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from .nat import PUBLIC_PORT_RANGE, NatAddresses, NatMapping, NatTopology
from .netns import NetnsError

pytestmark = pytest.mark.interop

IKE_PORT, NATT_PORT = 500, 4500
RECV_TIMEOUT = 5.0  # seconds for one exchange through the NAT; it takes well under a millisecond
RETRY_INTERVAL = 0.1  # the probe resends until the reflector (started concurrently) has bound
ROUNDS = 4  # mappings compared across flushes: all equal by chance with odds (1/16384)**3
RECV_BUFFER = 2048


def reflect(bind_addr: str, port: int, timeout: float) -> list[tuple[str, int]]:
    """Run in `outside`: answer each datagram with "ADDR PORT", the source it came from, until a b"bye"
    (or `timeout`); returns every source seen."""
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((bind_addr, port))
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, (addr, sport) = sock.recvfrom(RECV_BUFFER)
            except TimeoutError:
                break
            seen.append((addr, sport))
            if data == b"bye":
                break
            sock.sendto(f"{addr} {sport}".encode(), (addr, sport))
    return seen


def probe(bind_addr: str, port: int, dst: str, dport: int, timeout: float) -> tuple[str, int]:
    """Run in `inside`: send from bind_addr:port to the reflector until it answers, then say b"bye";
    returns the source address and port the reflector saw."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((bind_addr, port))
        while (left := deadline - time.monotonic()) > 0:
            sock.sendto(b"probe", (dst, dport))
            sock.settimeout(min(RETRY_INTERVAL, left))
            try:
                data, src = sock.recvfrom(RECV_BUFFER)
            except TimeoutError:
                continue
            if src == (dst, dport):
                sock.sendto(b"bye", (dst, dport))
                addr, seen_port = data.decode().split()
                return addr, int(seen_port)
    raise TimeoutError(f"no answer from {dst}:{dport} within {timeout} s")


def send_to_private(dst: str, port: int) -> int:
    """Run in `outside`: try to send to the private address; returns the errno (0: it was sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"direct", (dst, port))
        except OSError as exc:
            return exc.errno or -1
    return 0


def exchange(nat: NatTopology, port: int = NATT_PORT) -> tuple[str, int]:
    """One probe from inside:port to outside:port through the NAT; the source both sides agree the
    outside saw (inside learns it from the reply, which proves replies come back)."""
    reflector = nat.outside.start(reflect, nat.outside_addr, port, RECV_TIMEOUT)
    answered = nat.inside.call(probe, nat.inside_addr, port, nat.outside_addr, port, RECV_TIMEOUT,
                               timeout=RECV_TIMEOUT + 5)
    seen = reflector.result(timeout=RECV_TIMEOUT + 5)
    assert set(seen) == {answered}  # probes, retries and the bye all came through one mapping
    result: tuple[str, int] = answered
    return result


def ns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=20).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture
def nat() -> Iterator[NatTopology]:
    with NatTopology() as topology:
        yield topology


@pytest.fixture
def nat_random() -> Iterator[NatTopology]:
    with NatTopology(random_ports=True) as topology:
        yield topology


def test_outside_sees_the_public_address_and_answers_come_back(nat: NatTopology) -> None:
    addr, port = exchange(nat)
    assert addr == nat.public_addr != nat.inside_addr
    # plain masquerade keeps a free source port, also for a new mapping after a flush
    assert port == NATT_PORT
    nat.flush_conntrack()
    assert exchange(nat) == (nat.public_addr, NATT_PORT)


def test_outside_cannot_reach_the_private_address(nat: NatTopology) -> None:
    exchange(nat)  # a mapping exists; still no way in except through it
    assert nat.outside.call(send_to_private, nat.inside_addr, NATT_PORT) == errno.ENETUNREACH
    route = nat.outside.run(["ip", "route", "get", nat.inside_addr], check=False)
    assert route.returncode != 0, route.stdout


def test_mappings_show_the_entry_and_are_empty_after_a_flush(nat_random: NatTopology) -> None:
    assert nat_random.mappings() == []
    _, public_port = exchange(nat_random)
    assert nat_random.mappings() == [NatMapping(nat_random.inside_addr, NATT_PORT, nat_random.outside_addr,
                                                NATT_PORT, public_port)]
    nat_random.flush_conntrack()
    assert nat_random.mappings() == []


@pytest.mark.parametrize("private_port", [IKE_PORT, NATT_PORT])
def test_random_ports_give_a_new_public_port_after_a_flush(nat_random: NatTopology, private_port: int) -> None:
    low, high = PUBLIC_PORT_RANGE
    ports = []
    for _ in range(ROUNDS):
        addr, port = exchange(nat_random, private_port)
        assert addr == nat_random.public_addr
        assert low <= port <= high and port != private_port
        assert [m.public_port for m in nat_random.mappings()] == [port]
        ports.append(port)
        nat_random.flush_conntrack()
    assert len(set(ports)) > 1, f"every new mapping got the same public port: {ports}"


def test_namespaces_are_removed_when_the_body_fails() -> None:
    with pytest.raises(RuntimeError, match="midway"):
        with NatTopology() as topology:
            names = {topology.inside_name, topology.router_name, topology.outside_name}
            assert names <= ns_names()
            raise RuntimeError("midway")
    assert not names & ns_names()


def test_namespaces_are_removed_when_setup_fails_midway() -> None:
    topology = NatTopology(addresses=NatAddresses(prefix_len=33))  # `ip addr add` rejects it
    with pytest.raises(NetnsError, match="addr add"):
        topology.setup()
    assert not {topology.inside_name, topology.router_name, topology.outside_name} & ns_names()
