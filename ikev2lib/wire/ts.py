"""Traffic Selector payloads TSi/TSr (RFC 7296 section 3.13).

IPv4 and IPv6 address ranges become `TrafficSelector`; any other TS type (RFC 4595 Fibre Channel,
RFC 9478 security labels, future types) is kept as `RawTrafficSelector` so it round-trips.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar, Union

from ikev2lib.wire._base import Payload, check_body, fail, local_fail, name, short_hex
from ikev2lib.wire.enums import TS_TYPE_LOOKUP, PayloadType, TSType
from ikev2lib.wire.limits import MAX_TRAFFIC_SELECTORS

_TS_HEADER = struct.Struct(">BBH")  # TS type, IP protocol ID, selector length
_TS_RANGE = struct.Struct(">BBHHH")  # ... + start port, end port
_COUNT = struct.Struct(">B3x")  # number of TSs, reserved
_RANGE_LENGTH: dict[int, int] = {TSType.TS_IPV4_ADDR_RANGE: 16, TSType.TS_IPV6_ADDR_RANGE: 40}
_ADDRESS_SIZE: dict[int, int] = {TSType.TS_IPV4_ADDR_RANGE: 4, TSType.TS_IPV6_ADDR_RANGE: 16}

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass(slots=True, repr=False)
class TrafficSelector:
    """An address range selector (TS_IPV4_ADDR_RANGE or TS_IPV6_ADDR_RANGE); addresses are packed bytes."""

    ts_type: int
    ip_protocol: int
    start_port: int
    end_port: int
    start_address: bytes
    end_address: bytes

    @classmethod
    def from_network(
        cls, network: str | IPNetwork, ip_protocol: int = 0, start_port: int = 0, end_port: int = 65535
    ) -> TrafficSelector:
        """The selector covering `network` (e.g. "10.1.0.0/16" or "2001:db8::/32")."""
        net = ipaddress.ip_network(network, strict=False)
        return cls.from_range(net.network_address, net.broadcast_address, ip_protocol, start_port, end_port)

    @classmethod
    def from_range(
        cls,
        start: str | IPAddress,
        end: str | IPAddress,
        ip_protocol: int = 0,
        start_port: int = 0,
        end_port: int = 65535,
    ) -> TrafficSelector:
        first, last = ipaddress.ip_address(start), ipaddress.ip_address(end)
        if first.version != last.version:
            local_fail("a traffic selector range needs two addresses of the same family")
        ts_type = TSType.TS_IPV4_ADDR_RANGE if first.version == 4 else TSType.TS_IPV6_ADDR_RANGE
        return cls(ts_type, ip_protocol, start_port, end_port, first.packed, last.packed)

    @property
    def start_ip(self) -> IPAddress:
        return ipaddress.ip_address(self.start_address)

    @property
    def end_ip(self) -> IPAddress:
        return ipaddress.ip_address(self.end_address)

    def networks(self) -> list[IPNetwork]:
        """The smallest list of CIDR networks covering the address range."""
        return list(ipaddress.summarize_address_range(self.start_ip, self.end_ip))

    def __repr__(self) -> str:
        try:
            rng = f"{self.start_ip}-{self.end_ip}"
        except ValueError:
            rng = f"{self.start_address.hex()}-{self.end_address.hex()}"
        ports = "" if (self.start_port, self.end_port) == (0, 65535) else f" ports {self.start_port}-{self.end_port}"
        proto = "" if self.ip_protocol == 0 else f" proto {self.ip_protocol}"
        return f"TrafficSelector({rng}{proto}{ports})"

    def _serialize(self) -> bytes:
        size = _ADDRESS_SIZE.get(self.ts_type)
        if size is None:
            local_fail(f"TrafficSelector type {self.ts_type} is not an address range; use RawTrafficSelector")
        if len(self.start_address) != size or len(self.end_address) != size:
            local_fail(f"{name(self.ts_type)} needs {size}-octet addresses")
        return (
            _TS_RANGE.pack(self.ts_type, self.ip_protocol, 8 + 2 * size, self.start_port, self.end_port)
            + self.start_address
            + self.end_address
        )


@dataclass(slots=True, repr=False)
class RawTrafficSelector:
    """A selector of a type this codec does not decode; `data` follows the 4-octet selector header.

    `ip_protocol` is the selector's second octet (IP protocol ID for ranges, RESERVED for TS_SECLABEL).
    """

    ts_type: int
    data: bytes
    ip_protocol: int = 0

    def __repr__(self) -> str:
        return f"RawTrafficSelector({name(self.ts_type)}, {short_hex(self.data)})"

    def _serialize(self) -> bytes:
        if len(self.data) > 0xFFFF - 4:
            local_fail("traffic selector too long")
        return _TS_HEADER.pack(self.ts_type, self.ip_protocol, 4 + len(self.data)) + self.data


AnySelector = Union[TrafficSelector, RawTrafficSelector]
_T = TypeVar("_T", bound="_TSPayload")


@dataclass(slots=True, repr=False)
class _TSPayload(Payload):
    selectors: list[AnySelector] = field(default_factory=list)
    critical: bool = field(default=False, kw_only=True)
    _label: ClassVar[str] = "TS"

    def __repr__(self) -> str:
        return f"{self._label}({self.selectors!r})"

    def pretty_lines(self) -> list[str]:
        return [self._label] + [f"  {s!r}" for s in self.selectors]

    def _body(self) -> bytes:
        if len(self.selectors) > MAX_TRAFFIC_SELECTORS:
            local_fail(f"more than {MAX_TRAFFIC_SELECTORS} traffic selectors")
        return check_body(
            _COUNT.pack(len(self.selectors)) + b"".join([s._serialize() for s in self.selectors]), self._label
        )

    @classmethod
    def _parse(cls: type[_T], buf: bytes, pos: int, end: int, critical: bool) -> _T:
        if end - pos < 4:
            fail("truncated traffic selector payload", pos)
        (count,) = _COUNT.unpack_from(buf, pos)
        pos += 4
        selectors: list[AnySelector] = []
        for _ in range(count):
            if end - pos < 4:
                fail("truncated traffic selector", pos)
            ts_type, protocol, length = _TS_HEADER.unpack_from(buf, pos)
            send = pos + length
            if length < 4 or send > end:
                fail(f"bad traffic selector length {length}", pos)
            expected = _RANGE_LENGTH.get(ts_type)
            if expected is None:
                selectors.append(RawTrafficSelector(TS_TYPE_LOOKUP.get(ts_type, ts_type), buf[pos + 4 : send], protocol))
            else:
                if length != expected:
                    fail(f"traffic selector of type {ts_type} must be {expected} octets, not {length}", pos)
                size = (expected - 8) // 2
                _, _, _, start_port, end_port = _TS_RANGE.unpack_from(buf, pos)
                selectors.append(
                    TrafficSelector(
                        TS_TYPE_LOOKUP[ts_type],
                        protocol,
                        start_port,
                        end_port,
                        buf[pos + 8 : pos + 8 + size],
                        buf[pos + 8 + size : send],
                    )
                )
            pos = send
        if pos != end:
            fail("traffic selector payload longer than its selectors", pos)
        return cls(selectors, critical=critical)


@dataclass(slots=True, repr=False)
class TSi(_TSPayload):
    payload_type = PayloadType.TSi
    _label: ClassVar[str] = "TSi"


@dataclass(slots=True, repr=False)
class TSr(_TSPayload):
    payload_type = PayloadType.TSr
    _label: ClassVar[str] = "TSr"
