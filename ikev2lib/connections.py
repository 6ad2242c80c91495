"""The connections a responder serves, and how one is chosen for a new IKE SA (strongSwan's way).

A connection is an `IkeConfig` with a `name`, `local_addrs` and `remote_addrs` (addresses.py). The
responder chooses twice:

1. At IKE_SA_INIT, by addresses: the connections whose `local_addrs` contain our address and whose
   `remote_addrs` contain the peer's, best match first (an exact address beats a subnet, a longer
   prefix a shorter one, anything beats `%any`; ties keep the order connections were added in). The
   first whose IKE proposals accept the peer's offer answers IKE_SA_INIT.
2. At IKE_AUTH, by identities: among the connections that match the addresses and accept the IKE
   proposal already chosen, the best-matching one whose `remote_id` is the peer's IDi (connections
   without `remote_id` accept anyone and rank below every exact match), whose `local_id` is the IDr
   hint if the peer sent one, and whose `remote_auth` allows the AUTH method the peer used.

The lookups are indexed so that hundreds of connections cost a handshake next to nothing: remote
addresses and subnets are dictionary hits (one per prefix length in use), and so are exact peer
identities; connections open to any address are taken in order without ranking. Scanned one by one:
connections with remote ranges or %any4/%any6 (ranked per lookup), and at IKE_AUTH the connections
without `remote_id`, only after those naming the peer's identity.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Iterator

from cryptography import x509

from .addresses import ANY_RANK, EXACT_RANK, IpAddress, parse_address, parse_selector, selectors_rank
from .auth import accepts_method
from .config import IkeConfig
from .exceptions import LocalProtocolError
from .identities import id_matches, parse_identity
from .wire import IDi, IDr, IdType

__all__ = ["ConnectionTable"]

_OPEN_RANK = ANY_RANK * 2 * EXACT_RANK + ANY_RANK  # what `_rank` gives a connection open to all
RANKED_CACHE = 4096  # (local, remote) address pairs whose ranked matches are kept (cleared when full)


def _open_to_all(config: IkeConfig) -> bool:
    """Whether every address matches (%any or nothing everywhere; %any4 and %any6 pick a family)."""
    return all(parse_selector(s).version is None for s in config.local_addrs + config.remote_addrs)


class ConnectionTable:
    """Named connections; adding a name again replaces its definition where it stood. IKE SAs keep the
    `IkeConfig` they were set up with, so changing the table never touches an established SA."""

    def __init__(self, configs: Iterable[IkeConfig] = ()) -> None:
        self._by_name: dict[str, IkeConfig] = {}
        self._order: dict[str, int] = {}  # name -> when first added, for stable tie-breaking
        self._next = 0
        # remote addresses and subnets: (IP version, prefix length) -> network -> names
        self._by_prefix: dict[tuple[int, int], dict[int, list[str]]] = {}
        self._scanned: list[str] = []  # remote ranges or %any4/%any6, or local selectors only: ranked per lookup
        self._open: list[str] = []  # %any (or nothing) everywhere: always match, lowest rank
        self._by_remote_id: dict[tuple[int, bytes], list[str]] = {}
        self._dn_remote_id: list[str] = []  # DNs also match in other encodings: checked one by one
        self._any_remote_id: list[str] = []
        self._anchors: tuple[x509.Certificate, ...] | None = None  # cache of certreq_anchors()
        # (local, remote) -> the ranked address matches: many connections can share one peer address
        # (spokes behind a NAT), and ranking them all for each IKE_SA_INIT is what costs
        self._ranked: dict[tuple[str, str], tuple[list[str], list[tuple[int, str]]]] = {}
        for config in configs:
            self.add(config)

    # ---- changes -----------------------------------------------------------------------------------

    def add(self, config: IkeConfig) -> None:
        """Add the connection `config.name`, or replace the one of that name."""
        if config.name in self._by_name:
            self._unindex(config.name)
        else:
            self._order[config.name] = self._next
            self._next += 1
        self._by_name[config.name] = config
        self._index(config)
        self._anchors = None
        self._ranked.clear()

    def remove(self, name: str) -> IkeConfig:
        config = self._by_name.get(name)
        if config is None:
            raise LocalProtocolError(f"no connection named {name!r}")
        self._unindex(name)
        del self._by_name[name], self._order[name]
        self._anchors = None
        self._ranked.clear()
        return config

    def _insert(self, names: list[str], name: str) -> None:
        """Into an index list, keeping the order connections were first added in (a replaced
        connection keeps its place)."""
        bisect.insort(names, name, key=self._order.__getitem__)

    def _index(self, config: IkeConfig) -> None:
        name = config.name
        remote = [parse_selector(s) for s in config.remote_addrs]
        if remote and all(s.prefixlen is not None for s in remote):
            for s in remote:
                networks = self._by_prefix.setdefault((s.version or 0, s.prefixlen or 0), {})
                self._insert(networks.setdefault(s.low, []), name)
        elif _open_to_all(config):
            self._insert(self._open, name)
        else:
            self._insert(self._scanned, name)
        if config.remote_id is None:
            self._insert(self._any_remote_id, name)
        else:
            key = parse_identity(config.remote_id)
            self._insert(self._by_remote_id.setdefault(key, []), name)
            if key[0] == IdType.ID_DER_ASN1_DN:
                self._insert(self._dn_remote_id, name)

    def _unindex(self, name: str) -> None:
        for key, networks in list(self._by_prefix.items()):
            for network, names in list(networks.items()):
                if name in names:
                    names.remove(name)
                    if not names:
                        del networks[network]
            if not networks:
                del self._by_prefix[key]  # the lookup loops over the prefix lengths in use
        for names in (self._scanned, self._open, *self._by_remote_id.values(), self._dn_remote_id,
                      self._any_remote_id):
            if name in names:
                names.remove(name)

    # ---- lookups -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[IkeConfig]:
        return iter(list(self._by_name.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> IkeConfig | None:
        return self._by_name.get(name)

    def certreq_anchors(self) -> tuple[x509.Certificate, ...]:
        """The trust anchors of every connection that asks peers for certificates: what a responder
        names in its IKE_SA_INIT CERTREQ, before it knows which connection the peer is for."""
        if self._anchors is None:
            self._anchors = tuple(
                anchor
                for config in self._by_name.values()
                if config.remote_auth == "pubkey" and config.send_certreq and config.trust is not None
                for anchor in config.trust.anchors
            )  # repeats are fine: certreq_data names each CA once
        return self._anchors

    def _rank(self, config: IkeConfig, local: IpAddress, remote: IpAddress) -> int:
        remote_rank = selectors_rank(config.remote_addrs, remote)
        if not remote_rank:
            return 0
        # bound to 0.0.0.0 / ::, the endpoint does not know which of its addresses the peer reached
        local_rank = ANY_RANK if local.is_unspecified else selectors_rank(config.local_addrs, local)
        return remote_rank * 2 * EXACT_RANK + local_rank if local_rank else 0

    def _best_first(self, names: Iterable[str], local: IpAddress, remote: IpAddress) -> list[IkeConfig]:
        ranked = [(self._rank(self._by_name[n], local, remote), self._order[n], n) for n in names]
        return [self._by_name[n] for rank, _, n in sorted(ranked, key=lambda t: (-t[0], t[1])) if rank]

    def _remote_hits(self, remote: IpAddress) -> list[str]:
        """The indexed connections one of whose remote addresses or subnets holds `remote`."""
        hits: dict[str, None] = {}
        value, bits = int(remote), remote.max_prefixlen
        for (version, prefixlen), networks in self._by_prefix.items():
            if version == remote.version:
                shift = bits - prefixlen
                hits.update(dict.fromkeys(networks.get(value >> shift << shift, ())))
        return list(hits)

    def for_addresses(self, local: str, remote: str) -> Iterator[IkeConfig]:
        """The connections for a peer at `remote` reaching us at `local`, best match first (lazily:
        the caller usually takes the first)."""
        cached = self._ranked.get((local, remote))
        if cached is None:
            local_ip, remote_ip = parse_address(local), parse_address(remote)
            names = self._remote_hits(remote_ip) + self._scanned
            ranked = [(self._rank(self._by_name[n], local_ip, remote_ip), self._order[n], n) for n in names]
            better = [n for *_, n in sorted((t for t in ranked if t[0] > _OPEN_RANK), key=lambda t: (-t[0], t[1]))]
            # what matched only as %any would ranks with the connections open to all: by order
            same = sorted((order, n) for rank, order, n in ranked if rank == _OPEN_RANK)
            if len(self._ranked) >= RANKED_CACHE:
                self._ranked.clear()
            cached = self._ranked[(local, remote)] = (better, same)
        better, same = cached
        yield from (self._by_name[n] for n in better)
        for _, name in heapq.merge(same, ((self._order[n], n) for n in list(self._open))):
            yield self._by_name[name]

    def for_identity(self, local: str, remote: str, idi: IDi, idr: IDr | None, method: int) -> Iterator[IkeConfig]:
        """The connections for a peer authenticating as `idi`, best first (see the module docstring)."""
        local_ip, remote_ip = parse_address(local), parse_address(remote)
        exact = self._by_remote_id.get((int(idi.id_type), bytes(idi.data)), [])
        groups: list[list[str]] = [exact]
        if idi.id_type == IdType.ID_DER_ASN1_DN:  # the same DN in another string encoding
            groups.append([n for n in self._dn_remote_id if n not in exact])
        groups.append(self._any_remote_id)
        for group in groups:
            for config in self._best_first(group, local_ip, remote_ip):
                if idr is not None and not id_matches(idr, config.local_id):
                    continue
                if accepts_method(config, method):
                    yield config
