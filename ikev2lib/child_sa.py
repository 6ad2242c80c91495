"""Child SA records of the engine: KEYMAT split per direction and the ESP SA objects built from it.

The engine builds ESP SAs through an `EspFactory` (default: `ikev2lib.esp.EspSA`), so that the
sans-IO core can be driven with any data plane, and tests can count what was installed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from .dataplane import DataPlaneSA
from .crypto import child_key_lengths, derive_child_keymat, split_child_keymat
from .exceptions import LocalProtocolError
from .negotiation import SelectedProposal
from .state import ChildInput, ChildState, child_transition
from .suites import esp_suite_name

__all__ = [
    "VolumeLimits",
    "NO_LIMITS",
    "EspParams",
    "EspFactory",
    "ChildSa",
    "default_esp_factory",
    "esp_algorithm_name",
    "random_esp_spi",
]

def esp_algorithm_name(selected: SelectedProposal) -> str | None:
    """The data plane's keyword for a negotiated ESP cipher (and integrity), None if it has none."""
    return esp_suite_name(selected.encr_id, selected.encr_key_bits, selected.integ_id)


def random_esp_spi(residue: tuple[int, int] | None = None) -> bytes:
    """A random 4-octet SPI outside the reserved range 0..255 (RFC 4303 2.1). With `residue` (k, n),
    one whose value is k modulo n: a receiver that steers ESP by SPI modulo n (the gateway's data
    path) then decrypts an RFC 9611 per-resource SA on worker k without any table."""
    while True:
        value = int.from_bytes(os.urandom(4), "big")
        if residue is not None:
            k, n = residue
            value += k - value % n
        if 255 < value <= 0xFFFFFFFF:
            return value.to_bytes(4, "big")


@dataclass(frozen=True, kw_only=True, slots=True)
class VolumeLimits:
    """Soft (rekey) and hard (refuse traffic) limits of one ESP SA in packets and inner bytes; 0 = off.
    The same four numbers `ikev2lib.esp.Lifetime` takes."""

    soft_packets: int = 0
    hard_packets: int = 0
    soft_bytes: int = 0
    hard_bytes: int = 0

    @property
    def active(self) -> bool:
        return bool(self.soft_packets or self.hard_packets or self.soft_bytes or self.hard_bytes)


NO_LIMITS = VolumeLimits()


@dataclass(frozen=True, kw_only=True)
class EspParams:
    """Everything needed to build one direction of a Child SA in the data plane."""

    spi: bytes
    algorithm: str
    key: bytes = field(repr=False)  # encryption key || salt (AEAD) or encryption key (AES-CBC), from KEYMAT
    integ_key: bytes = field(repr=False)  # AES-CBC + HMAC: the integrity key; empty for AEAD
    direction: str  # "inbound" or "outbound"
    mode: str
    esn: bool
    replay_window: int
    udp_encap: bool
    limits: VolumeLimits = NO_LIMITS  # the data plane counts, the engine polls soft/hard (lifetimes.py)


EspFactory = Callable[[EspParams], DataPlaneSA]


@functools.cache
def _data_plane() -> ModuleType:
    # late import: the engine itself does not need the data plane. Cached: `from . import` runs
    # importlib's Python-level fromlist handling on every call
    from . import esp

    return esp


def default_esp_factory(params: EspParams) -> DataPlaneSA:
    """Build an `ikev2lib.esp.EspSA` (the C data plane, or its pure-Python fallback).

    The SA is always built with `udp_encap=None` (no UDP header of the data plane's own): with NAT-T
    (`params.udp_encap`) drivers send ESP through their port-4500 UDP socket, which adds the UDP header
    (RFC 3948 2.1); without it they send raw ESP (IP protocol 50), where the kernel adds only the IP
    header. For AES-CBC + HMAC
    the data plane takes encryption key || integrity key (the KEYMAT order, RFC 7296 2.17); for AEAD
    ciphers the integrity key is empty."""
    esp = _data_plane()
    limits = params.limits
    lifetime = None
    if limits.active:
        lifetime = esp.Lifetime(
            soft_packets=limits.soft_packets,
            hard_packets=limits.hard_packets,
            soft_bytes=limits.soft_bytes,
            hard_bytes=limits.hard_bytes,
        )
    sa: DataPlaneSA = esp.EspSA(
        spi=int.from_bytes(params.spi, "big"),
        algorithm=params.algorithm,
        key=params.key + params.integ_key,
        direction=params.direction,
        mode=params.mode,
        esn=params.esn,
        replay_window=params.replay_window,
        lifetime=lifetime,
    )
    return sa


@dataclass(eq=False, kw_only=True, slots=True)
class ChildSa:
    """One negotiated Child SA: SPIs, selectors, keys (never in repr) and its state."""

    child_id: int
    config_name: str
    spi_in: bytes
    spi_out: bytes
    selected: SelectedProposal
    proposal_text: str
    mode: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    local_ts_wire: list[Any] = field(repr=False)
    remote_ts_wire: list[Any] = field(repr=False)
    udp_encap: bool
    keys_in: tuple[bytes, bytes] = field(repr=False)  # (encryption key || salt, integrity key)
    keys_out: tuple[bytes, bytes] = field(repr=False)
    inbound: DataPlaneSA | None = field(repr=False, default=None)  # built by the EspFactory
    outbound: DataPlaneSA | None = field(repr=False, default=None)
    created_at: float = 0.0
    rekey_at: float | None = None
    expire_at: float | None = None  # hard lifetime on time: the child is deleted then
    limits: VolumeLimits = NO_LIMITS  # what its ESP SAs were built with
    lifetime_check_at: float | None = None  # next poll of the ESP SAs' counters (volume limits only)
    inbound_seen: int = 0  # inbound ESP packets at the last liveness check (DPD)
    soft_rekeys: int = 0  # rekeys started because a soft packet/byte limit was reached
    state: ChildState = ChildState.INSTALLED
    # a simultaneous rekey by the peer (RFC 7296 2.8.1): (its new child_id, its Ni, our Nr)
    collision: tuple[int, bytes, bytes] | None = None
    # RFC 9611: one of a group of Child SAs with the same selectors; `resource` is our resource index
    # (None for the group's fallback SA), `peer_resource` the Resource Identifier the peer sent (opaque)
    per_resource: bool = False
    resource: int | None = None
    peer_resource: bytes = b""

    def esp_sas(self) -> tuple[DataPlaneSA, DataPlaneSA]:
        """(inbound, outbound) ESP SAs, once `build_esp_pair` made them."""
        if self.inbound is None or self.outbound is None:
            raise LocalProtocolError("the Child SA has no ESP SAs yet")
        return self.inbound, self.outbound

    def apply(self, event: ChildInput) -> None:
        """The only way a Child SA changes state (through the table in state.py)."""
        self.state = child_transition(self.state, event)


def derive_child_keys(
    *,
    prf_id: int,
    sk_d: bytes,
    selected: SelectedProposal,
    ni: bytes,
    nr: bytes,
    is_initiator: bool,
    shared_secret: bytes | None,
) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """(inbound keys, outbound keys) for our side, from KEYMAT (RFC 7296 2.17)."""
    enc_len, integ_len = child_key_lengths(selected.encr_id, selected.encr_key_bits, selected.integ_id)
    keymat = derive_child_keymat(prf_id, sk_d, ni, nr, 2 * (enc_len + integ_len), shared_secret)
    keys = split_child_keymat(keymat, enc_len, integ_len)
    i_to_r = (keys.encr_i, keys.integ_i)
    r_to_i = (keys.encr_r, keys.integ_r)
    return (r_to_i, i_to_r) if is_initiator else (i_to_r, r_to_i)


def build_esp_pair(child: ChildSa, factory: EspFactory, replay_window: int, limits: VolumeLimits = NO_LIMITS) -> None:
    """Create the inbound and outbound ESP SA objects of `child`, both with `limits`."""
    algorithm = esp_algorithm_name(child.selected)
    if algorithm is None:
        raise LocalProtocolError("the ESP data plane does not support the negotiated cipher")
    mode, esn, udp_encap = child.mode, child.selected.esn, child.udp_encap
    child.limits = limits
    child.inbound = factory(
        EspParams(
            spi=child.spi_in, algorithm=algorithm, key=child.keys_in[0], integ_key=child.keys_in[1],
            direction="inbound", mode=mode, esn=esn, replay_window=replay_window, udp_encap=udp_encap,
            limits=limits,
        )
    )  # fmt: skip
    child.outbound = factory(
        EspParams(
            spi=child.spi_out, algorithm=algorithm, key=child.keys_out[0], integ_key=child.keys_out[1],
            direction="outbound", mode=mode, esn=esn, replay_window=replay_window, udp_encap=udp_encap,
            limits=limits,
        )
    )  # fmt: skip
