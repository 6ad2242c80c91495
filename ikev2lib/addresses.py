"""Address selectors of a connection's `local_addrs`/`remote_addrs`, as strongSwan writes them:
an address (192.0.2.1), a subnet (10.0.0.0/8), a range (10.0.0.1-10.0.0.9) or %any / %any4 / %any6.

Host names are not resolved here: the engine is sans-IO, so a gateway resolves names before it hands
a configuration in (a name is refused with a message saying so).
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from .exceptions import LocalProtocolError

__all__ = ["ANY_RANK", "EXACT_RANK", "AddressSelector", "IpAddress", "parse_address", "parse_selector", "selectors_rank"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SELECTOR_CACHE = 4096  # selector strings kept parsed
EXACT_RANK = 1000  # an exact address ranks above any subnet or range (whose rank is 2 + prefix length)
ANY_RANK = 1  # %any, and an empty list
_ANY_FAMILY = {"%any": None, "%any4": 4, "%any6": 6}


@dataclass(frozen=True, slots=True)
class AddressSelector:
    low: int
    high: int
    version: int | None  # None: %any of both families
    rank: int  # how specific a match is: exact > longer prefix > shorter prefix / range > %any
    prefixlen: int | None = None  # an address or a subnet (None: a range or %any)

    def contains(self, address: IpAddress) -> bool:
        if self.version is not None and address.version != self.version:
            return False
        return self.low <= int(address) <= self.high


@functools.lru_cache(maxsize=SELECTOR_CACHE)
def parse_selector(text: str) -> AddressSelector:
    value = text.strip()
    if value in _ANY_FAMILY:
        return AddressSelector(0, 2**128 - 1, _ANY_FAMILY[value], ANY_RANK)
    try:
        if "-" in value:
            first, last = (ipaddress.ip_address(v.strip()) for v in value.split("-", 1))
            if first.version != last.version or int(first) > int(last):
                raise ValueError("a range runs from a lower to a higher address of one family")
            # ranked like the smallest subnet that would hold it
            prefix = first.max_prefixlen - (int(last) - int(first)).bit_length()
            return AddressSelector(int(first), int(last), first.version, ANY_RANK + 1 + prefix)
        network = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise LocalProtocolError(
            f"address {text!r} is not an IP address, subnet, range or %any (host names are not resolved here)"
        ) from exc
    rank = EXACT_RANK if network.num_addresses == 1 else ANY_RANK + 1 + network.prefixlen
    low, high = int(network.network_address), int(network.broadcast_address)
    return AddressSelector(low, high, network.version, rank, network.prefixlen)


@functools.lru_cache(maxsize=SELECTOR_CACHE)
def parse_address(text: str) -> IpAddress:
    """A peer's or our address as the endpoint sees it (parsed once: the same peers come back)."""
    return ipaddress.ip_address(text)


def selectors_rank(selectors: tuple[str, ...], address: IpAddress) -> int:
    """How well `address` matches a list of selectors: 0 not at all; an empty list is %any."""
    if not selectors:
        return ANY_RANK
    return max((s.rank for s in map(parse_selector, selectors) if s.contains(address)), default=0)
