"""Data-path counters of a gateway, as `ikev2lib status` and the metrics endpoint read them.

Counters are per connection (the configuration's name), not per Child SA: a rekey adds a new Child
SA whose packets add to the same counters, and nothing ever resets them, so rate graphs stay
continuous across rekeys. Drops carry one of `DROP_REASONS`; the set is fixed so that metric labels
stay bounded however many tunnels and SPIs come and go.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["DROP_REASONS", "TunnelCounters"]

# Why a packet was dropped. Attributed to a connection when its SA or policy was found (icv, replay,
# window, padding, policy, too_big, expired), otherwise counted for the gateway as a whole.
DROP_REASONS = (
    "icv",  # inbound ESP whose ICV did not verify (forged or corrupted)
    "replay",  # inbound sequence number already received
    "window",  # inbound sequence number left of the replay window
    "padding",  # authentic packet with bad ESP padding
    "malformed",  # truncated or otherwise unparsable packet (either direction)
    "no_sa",  # inbound ESP with an SPI the gateway does not hold
    "no_policy",  # outbound packet that no Child SA's traffic selectors cover: never sent in clear
    "policy",  # decrypted packet outside its Child SA's selectors (RFC 4301 5.2)
    "not_esp",  # datagram on the ESP path that is not ESP (IKE, keepalive) where ESP was expected
    "too_big",  # inner packet above the tunnel MTU: answered with ICMP, not sent
    "expired",  # the SA reached its hard lifetime
    "error",  # internal failure (crypto library, socket, buffer): should stay zero
)


@dataclass(frozen=True)
class TunnelCounters:
    """What crossed one connection's tunnels since the gateway started (monotonic)."""

    packets_in: int = 0
    bytes_in: int = 0  # inner (decrypted) bytes
    packets_out: int = 0
    bytes_out: int = 0  # inner bytes before encryption
    drops: Mapping[str, int] = field(default_factory=dict)  # reason (one of DROP_REASONS) -> packets
