"""Child SA records of the engine: KEYMAT split per direction and the ESP SA objects built from it.

The engine builds ESP SAs through an `EspFactory` (default: `ikev2lib.esp.EspSA`), so that the
sans-IO core can be driven with any data plane, and tests can count what was installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .crypto import child_key_lengths, derive_child_keymat, split_child_keymat
from .exceptions import LocalProtocolError
from .negotiation import SelectedProposal
from .state import ChildInput, ChildState, child_transition

__all__ = ["EspParams", "EspFactory", "ChildSa", "default_esp_factory", "esp_algorithm_name", "random_esp_spi"]

# ESP algorithm keywords the data plane understands, by (ENCR id, key bits)
_ESP_NAMES: dict[tuple[int, int | None], str] = {
    (18, 128): "aes128gcm8",
    (18, 192): "aes192gcm8",
    (18, 256): "aes256gcm8",
    (19, 128): "aes128gcm12",
    (19, 192): "aes192gcm12",
    (19, 256): "aes256gcm12",
    (20, 128): "aes128gcm16",
    (20, 192): "aes192gcm16",
    (20, 256): "aes256gcm16",
    (28, None): "chacha20poly1305",
    (28, 256): "chacha20poly1305",
}


def esp_algorithm_name(selected: SelectedProposal) -> str | None:
    """The data plane's keyword for a negotiated ESP cipher, None if it has none."""
    return _ESP_NAMES.get((selected.encr_id, selected.encr_key_bits))


def random_esp_spi() -> bytes:
    """A random 4-octet SPI outside the reserved range 0..255 (RFC 4303 2.1)."""
    while True:
        spi = os.urandom(4)
        if int.from_bytes(spi, "big") > 255:
            return spi


@dataclass(frozen=True, kw_only=True)
class EspParams:
    """Everything needed to build one direction of a Child SA in the data plane."""

    spi: bytes
    algorithm: str
    key: bytes = field(repr=False)  # encryption key || salt, as KEYMAT gives it
    integ_key: bytes = field(repr=False)
    direction: str  # "inbound" or "outbound"
    mode: str
    esn: bool
    replay_window: int
    udp_encap: bool


EspFactory = Callable[[EspParams], Any]


def default_esp_factory(params: EspParams) -> Any:
    """Build an `ikev2lib.esp.EspSA` (the C data plane, or its pure-Python fallback).

    The SA is built without the data plane's own UDP header even when NAT-T is in use: drivers send
    ESP through their port-4500 UDP socket, which adds the UDP header (RFC 3948 2.1)."""
    from . import esp  # late import: the engine itself does not need the data plane

    return esp.EspSA(
        spi=int.from_bytes(params.spi, "big"),
        algorithm=params.algorithm,
        key=params.key,
        direction=params.direction,
        mode=params.mode,
        esn=params.esn,
        replay_window=params.replay_window,
    )


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
    inbound: Any = field(repr=False, default=None)
    outbound: Any = field(repr=False, default=None)
    created_at: float = 0.0
    rekey_at: float | None = None
    state: ChildState = ChildState.INSTALLED
    # a simultaneous rekey by the peer (RFC 7296 2.8.1): (its new child_id, its Ni, our Nr)
    collision: tuple[int, bytes, bytes] | None = None

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


def build_esp_pair(child: ChildSa, factory: EspFactory, replay_window: int) -> None:
    """Create the inbound and outbound ESP SA objects of `child`."""
    algorithm = esp_algorithm_name(child.selected)
    if algorithm is None:
        raise LocalProtocolError("the ESP data plane does not support the negotiated cipher")
    common = dict(
        algorithm=algorithm,
        mode=child.mode,
        esn=child.selected.esn,
        replay_window=replay_window,
        udp_encap=child.udp_encap,
    )
    child.inbound = factory(
        EspParams(spi=child.spi_in, key=child.keys_in[0], integ_key=child.keys_in[1], direction="inbound", **common)  # type: ignore[arg-type]
    )
    child.outbound = factory(
        EspParams(spi=child.spi_out, key=child.keys_out[0], integ_key=child.keys_out[1], direction="outbound", **common)  # type: ignore[arg-type]
    )
