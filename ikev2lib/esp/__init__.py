"""ESP data plane (RFC 4303): AEAD SAs, AES-GCM (RFC 4106) and ChaCha20-Poly1305 (RFC 7634), and
AES-CBC (RFC 3602) with HMAC-SHA1-96 (RFC 2404) or HMAC-SHA-256-128/-384-192/-512-256 (RFC 4868).

The back end is chosen here, in one place: the C core (`ikev2lib._esp_fast`, OpenSSL libcrypto) when it is
importable, else the pure-Python fallback on `cryptography`. IKEV2LIB_ESP_PURE=1 forces the fallback.
Both have the same API; `BACKEND` says which one runs, `backends()` gives both for differential testing.

`EspSA(spi, algorithm, key, direction, mode="tunnel", *, esn=False, replay_window=1024, udp_encap=None,
lifetime=None)` is one unidirectional SA:

- `algorithm`: strongSwan ESP keyword (`aes128gcm16`, `aes256gcm8`, `aes192gcm12`, `chacha20poly1305`,
  `aes128-sha256`, `aes256-sha384`, `aes256-sha512`, `aes128-sha1`...; `sha2_256` spellings too);
  `key`: the SA's KEYMAT slice: cipher key || 4-byte salt for AEAD; encryption key || integrity key
  (RFC 7296 2.17 order) for AES-CBC + HMAC, e.g. 32 + 32 bytes for `aes256-sha256`.
- `direction`: "outbound" SAs only `encap`, "inbound" SAs only `decap`.
- `mode`: "tunnel" (inner IPv4/IPv6 packet; next header 4/41 from it; TFC padding allowed and stripped
  on decap using the inner IP length) or "transport" (`encap(..., next_header=N)`).
- `esn`: 64-bit sequence numbers; the high half is authenticated (RFC 4106 section 5) and inferred on
  decap (RFC 4303 Appendix A).
- `replay_window`: anti-replay window in packets (RFC 6479 ring in C), 0 switches anti-replay off.
- `udp_encap=(source port, destination port)`: RFC 3948; packets carry the 8-byte UDP header. Decap
  raises `EspNotEspError` for IKE (non-ESP marker) and NAT keepalives; `udp_classify` demultiplexes.
- `lifetime=Lifetime(soft_packets=, hard_packets=, soft_bytes=, hard_bytes=)`: `soft_expired` tells the
  IKE layer to rekey; at `hard_expired` the SA refuses traffic (`EspLifetimeExpiredError`).

Packets: `encap(inner, *, next_header=None, tfc_padding=0) -> bytes`, `decap(packet) -> (next_header,
inner)`, `encap_into`/`decap_into` write into caller buffers (which must not overlap the input).
decap_into decrypts into the caller's buffer and wipes it (zeros) before raising if the ICV or any
later check fails, so no plaintext is left behind; do not read the buffer from another thread while
the call runs. Inputs are any contiguous buffers (bytes, bytearray, memoryview), never copied. For AEAD SAs the IV is the 64-bit sequence number, built inside the SA: no call accepts a
nonce or an IV; `advance_sequence` only moves forward. Encap refuses with `SequenceOverflowError`
once the sequence number would wrap. AES-CBC SAs instead draw a random 16-byte IV from the CSPRNG per
packet (RFC 3602 section 3), pad to the 16-byte block, MAC SPI..ciphertext (plus the ESN high half,
RFC 4303 2.2.1, which is never sent) encrypt-then-MAC, and on decap verify the ICV in constant time
before anything is decrypted.

Batches: `EspSA.encap_batch(...)` and `SATable(inbound_sas).decap_batch(...)` process many packets of
one buffer (uint32 offsets/lengths arrays, e.g. `array("I")`) in one call with the GIL released, with a
per-packet `Status`. `send_batch`/`recv_batch` move such batches through sendmmsg/recvmmsg on a UDP/4500
socket or a raw IP protocol-50 socket. `PacketBatch` (ikev2lib.esp.batch) builds and reads them.

`SATable.drops` counts packets refused before any SA was found (unknown SPI, not ESP, too short).

Threads: every SA has its own lock, so one SA used from several threads is serialized (a sequence
number is reserved under the lock and is never used twice) while different SAs run in parallel. No call
waits for that lock holding the GIL: while one thread runs a long batch on an SA, a call on the same SA
from another thread waits with the GIL released, so the process's other Python threads keep running.

Counters: `stats` (packets, inner bytes, drops by reason), `next_sequence`, `highest_sequence`.
"""

from __future__ import annotations

import os
from types import ModuleType

from ikev2lib.esp.batch import BatchResult, PacketBatch
from ikev2lib.esp import errors as _errors
from ikev2lib.esp.errors import *  # noqa: F403 - the whole error family (errors.__all__) is public here
from ikev2lib.esp.params import (
    ALGORITHMS,
    DEFAULT_REPLAY_WINDOW,
    MAX_REPLAY_WINDOW,
    Direction,
    EspStats,
    Lifetime,
    LifetimeState,
    Mode,
)

__all__ = [
    "BACKEND",
    "EspSA",
    "SATable",
    "ReplayWindow",
    "udp_classify",
    "send_batch",
    "recv_batch",
    "backends",
    "PacketBatch",
    "BatchResult",
    "ALGORITHMS",
    "DEFAULT_REPLAY_WINDOW",
    "MAX_REPLAY_WINDOW",
    "Direction",
    "Mode",
    "Lifetime",
    "LifetimeState",
    "EspStats",
]
__all__ += _errors.__all__

PURE_ENV = "IKEV2LIB_ESP_PURE"


def _load() -> ModuleType:
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        from ikev2lib.esp import _pure

        return _pure
    try:
        from ikev2lib.esp import _fast
    except ImportError:  # the extension was not built: fall back, same API
        from ikev2lib.esp import _pure

        return _pure
    return _fast


def backends() -> dict[str, ModuleType]:
    """Every importable back end by name ("c", "python"), for differential tests and benchmarks."""
    from ikev2lib.esp import _pure

    found: dict[str, ModuleType] = {"python": _pure}
    try:
        from ikev2lib.esp import _fast

        found["c"] = _fast
    except ImportError:
        pass
    return found


_backend = _load()
BACKEND: str = _backend.BACKEND
if _backend.BACKEND == "c":
    from ikev2lib.esp._fast import EspSA, ReplayWindow, SATable, recv_batch, send_batch, udp_classify
else:
    from ikev2lib.esp._pure import EspSA, ReplayWindow, SATable, recv_batch, send_batch, udp_classify  # type: ignore[assignment]
