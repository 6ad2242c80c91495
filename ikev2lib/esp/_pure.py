"""The pure-Python back end on `cryptography`: same API as the C back end, and its reference model.

It is written independently of the C core (e.g. the replay window here is a shifted integer bitmap, not
an RFC 6479 ring) so that differential tests compare two implementations, not one twice. It is slow:
use it where the C extension cannot be built, or force it with IKEV2LIB_ESP_PURE=1. AES-CBC + HMAC uses
pyca's AES-CBC and the standard library's hmac (keyed once per SA, copied per packet).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ikev2lib.esp._base import SAInfo
from ikev2lib.esp.errors import EspUsageError, Status, raise_for_status
from ikev2lib.esp.params import (
    ALG_AES_CBC_HMAC_SHA1,
    ALG_AES_CBC_HMAC_SHA256,
    ALG_AES_CBC_HMAC_SHA384,
    ALG_AES_CBC_HMAC_SHA512,
    ALG_AES_GCM,
    DEFAULT_REPLAY_WINDOW,
    MAX_PACKET,
    MAX_REPLAY_WINDOW,
    MAX_TFC_PADDING,
    Direction,
    LifetimeState,
    SAConfig,
)
from ikev2lib.natt import UdpKind, classify_udp4500

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["EspSA", "SATable", "ReplayWindow", "udp_classify", "send_batch", "recv_batch", "BACKEND"]

BACKEND = "python"

HDR_LEN = 8  # SPI + sequence number (low half)
IV_LEN = 8
CBC_IV_LEN = 16  # AES-CBC: random explicit IV, one AES block (RFC 3602 section 3)
CBC_BLOCK = 16  # the CBC ciphertext is a whole number of AES blocks
_HMAC_DIGESTS = {  # AES-CBC algorithm -> HMAC hash (the ICV is its truncated output)
    ALG_AES_CBC_HMAC_SHA1: hashlib.sha1,
    ALG_AES_CBC_HMAC_SHA256: hashlib.sha256,
    ALG_AES_CBC_HMAC_SHA384: hashlib.sha384,
    ALG_AES_CBC_HMAC_SHA512: hashlib.sha512,
}
UDP_HDR_LEN = 8
NH_IPV4 = 4
NH_IPV6 = 41
NH_NONE = 59
INFER_WINDOW_NO_REPLAY = DEFAULT_REPLAY_WINDOW  # ESN inference needs a window even with anti-replay off
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_HDR = struct.Struct("!II")
_UDP = struct.Struct("!HHHH")

_NOT_ESP_KINDS = (UdpKind.KEEPALIVE, UdpKind.IKE)  # normal port-4500 traffic, not counted as drops


def udp_classify(payload: Buffer) -> int:
    """Kind of a UDP/4500 datagram payload: 0 keepalive, 1 IKE (non-ESP marker), 2 ESP, 3 invalid.
    The rule is ikev2lib.natt's (the engine's); tests/esp/test_constants.py holds the C copy equal."""
    return int(classify_udp4500(memoryview(payload).cast("B")))  # octets, whatever the buffer's format


def infer_seq(last: int, window: int, seq_lo: int) -> int | None:
    """RFC 4303 Appendix A2.2: the full 64-bit number for a received low half, or None if below zero."""
    if window == 0:
        window = INFER_WINDOW_NO_REPLAY
    tl, th = last & _U32, last >> 32
    if tl >= window - 1:  # case A
        if seq_lo >= tl - window + 1:
            seqh = th
        elif th == _U32:
            return None
        else:
            seqh = th + 1
    else:  # case B
        if seq_lo >= (tl - window + 1) & _U32:
            if th == 0:
                return None
            seqh = th - 1
        else:
            seqh = th
    return (seqh << 32) | seq_lo


class ReplayWindow:
    """Anti-replay window as a shifted bitmap: bit i stands for sequence number `last - i`."""

    def __init__(self, window: int) -> None:
        if not 0 <= window <= MAX_REPLAY_WINDOW:
            raise EspUsageError("bad replay window size")
        self.window = window
        self.last = 0
        self._bits = 0

    def reset(self, last: int) -> None:
        self.last = last
        self._bits = 0

    def check(self, seq: int) -> int:
        if seq == 0:
            return Status.OUTSIDE_WINDOW
        if self.window == 0 or seq > self.last:
            return Status.OK
        age = self.last - seq
        if age >= self.window:
            return Status.OUTSIDE_WINDOW
        return Status.REPLAYED if (self._bits >> age) & 1 else Status.OK

    def update(self, seq: int) -> None:
        if self.window == 0:
            self.last = max(self.last, seq)
            return
        if seq > self.last:
            shift = seq - self.last
            self._bits = 1 if shift >= self.window else ((self._bits << shift) | 1) & ((1 << self.window) - 1)
            self.last = seq
        else:
            self._bits |= 1 << (self.last - seq)

    def infer(self, seq_lo: int) -> int | None:
        return infer_seq(self.last, self.window, seq_lo)


def _inner_ip_length(next_header: int, data: bytes) -> int:
    """Length of the inner IP packet from its header (strips TFC padding), 0 if it is not valid IP."""
    if next_header == NH_IPV4:
        if len(data) < 20 or data[0] >> 4 != 4:
            return 0
        total = int.from_bytes(data[2:4], "big")
        return total if 20 <= total <= len(data) else 0
    if next_header == NH_IPV6:
        if len(data) < 40 or data[0] >> 4 != 6:
            return 0
        total = 40 + int.from_bytes(data[4:6], "big")
        return total if total <= len(data) else 0
    return 0


class EspSA(SAInfo):
    """One unidirectional ESP SA (see `ikev2lib.esp` for the full description)."""

    def _setup(self, cfg: SAConfig) -> None:
        if hasattr(self, "_config"):  # re-initializing would restart the sequence numbers (IVs) under one key
            raise EspUsageError("SA already configured")
        self._config = cfg
        self._lock = threading.Lock()  # one SA used from several threads is serialized
        self._last_sent = 0
        self._ceiling = 0  # outbound: the last sequence number it may use, 0 = the whole space
        self._replay = ReplayWindow(cfg.replay_window if not cfg.outbound else 0)
        self._packets = 0
        self._bytes = 0
        self._drops = [0] * len(Status)
        self._gcm = cfg.alg == ALG_AES_GCM
        self._cbc = cfg.cbc
        self._iv_len = CBC_IV_LEN if self._cbc else IV_LEN
        self._block = CBC_BLOCK if self._cbc else 4
        self._aead: AESGCM | ChaCha20Poly1305 | None = None
        if self._cbc:
            self._hmac = hmac.new(cfg.integ_key, digestmod=_HMAC_DIGESTS[cfg.alg])  # keyed once, copied per packet
        else:
            self._aead = AESGCM(cfg.key) if self._gcm else ChaCha20Poly1305(cfg.key)
        self._spi_bytes = cfg.spi.to_bytes(4, "big")

    # ---- shared helpers ----

    def _counts(self) -> tuple[int, int, list[int]]:
        with self._lock:
            return self._packets, self._bytes, list(self._drops)

    def _lifetime_state(self) -> int:
        with self._lock:
            return int(self._config.lifetime.state(self._packets, self._bytes))

    def _aad(self, seq: int) -> bytes:
        if self._config.esn:  # RFC 4106 section 5
            return self._spi_bytes + struct.pack("!II", seq >> 32, seq & _U32)
        return self._spi_bytes + struct.pack("!I", seq & _U32)

    def _check_next_header(self, next_header: int | None) -> int:
        if self._config.tunnel:
            if next_header is not None:
                raise_for_status(Status.INVALID, "tunnel mode takes the next header from the inner packet")
            return -1
        if next_header is None:
            raise_for_status(Status.INVALID, "transport mode needs next_header")
        if not 0 <= next_header <= 255:
            raise_for_status(Status.INVALID, "next_header must be 0..255")
        return next_header

    def _size(self, inner_len: int, tfc: int) -> int:
        if inner_len > MAX_PACKET or tfc > MAX_TFC_PADDING:
            return 0
        body = inner_len + tfc
        pad = (self._block - ((body + 2) % self._block)) % self._block
        total = (UDP_HDR_LEN if self._config.udp_encap else 0) + HDR_LEN + self._iv_len + body + pad + 2
        total += self._config.icv_len
        return total if total <= MAX_PACKET else 0

    def encap_size(self, inner_len: int, tfc_padding: int = 0) -> int:
        """Length of the packet `encap` produces for an inner packet of `inner_len` bytes."""
        if inner_len < 0 or tfc_padding < 0:
            raise_for_status(Status.INVALID, "negative length")
        n = self._size(inner_len, tfc_padding)
        if n == 0:
            raise_for_status(Status.INVALID, "packet too large")
        return n

    # ---- encap ----

    def _encap_locked(self, nh: int, inner: bytes, tfc: int, cap: int) -> tuple[int, bytes]:
        cfg = self._config
        if not cfg.outbound:
            return Status.INVALID, b""
        if cfg.tunnel:
            version = inner[0] >> 4 if inner else 0
            if version == 4 and len(inner) >= 20:
                nh = NH_IPV4
            elif version == 6 and len(inner) >= 40:
                nh = NH_IPV6
            else:
                return Status.MALFORMED, b""
        elif not 0 <= nh <= 255 or tfc != 0:
            return Status.INVALID, b""
        total = self._size(len(inner), tfc)
        if total == 0:
            return Status.INVALID, b""
        if total > cap:
            return Status.BUFFER_TOO_SMALL, b""
        if cfg.lifetime.state(self._packets, self._bytes) is LifetimeState.HARD:
            return Status.HARD_EXPIRED, b""
        top = _U64 if cfg.esn else _U32
        if self._ceiling and self._ceiling < top:
            top = self._ceiling
        if self._last_sent >= top:
            return Status.SEQUENCE_OVERFLOW, b""
        self._last_sent += 1
        seq = self._last_sent
        pad = (self._block - ((len(inner) + tfc + 2) % self._block)) % self._block
        plaintext = b"".join((inner, bytes(tfc), bytes(range(1, pad + 1)), bytes((pad, nh))))
        if self._cbc:
            iv = os.urandom(CBC_IV_LEN)  # RFC 3602: unpredictable IV, from the CSPRNG, never from a caller
            enc = Cipher(algorithms.AES(cfg.key), modes.CBC(iv)).encryptor()
            signed = _HDR.pack(cfg.spi, seq & _U32) + iv + enc.update(plaintext) + enc.finalize()
            esp = signed + self._icv(signed, seq)  # encrypt-then-MAC
        elif self._aead is None:  # unreachable: _setup sets it for every AEAD SA
            return Status.CRYPTO_FAILURE, b""
        else:
            iv = seq.to_bytes(8, "big")  # the IV is the sequence number: unique for this key
            sealed = self._aead.encrypt(cfg.salt + iv, plaintext, self._aad(seq))
            if cfg.icv_len != 16:  # truncated GCM ICV: the leading bytes of the full tag (RFC 4106 section 6)
                sealed = sealed[: len(plaintext) + cfg.icv_len]
            esp = _HDR.pack(cfg.spi, seq & _U32) + iv + sealed
        if cfg.udp_encap:
            esp = _UDP.pack(cfg.udp_encap[0], cfg.udp_encap[1], total, 0) + esp
        self._packets += 1
        self._bytes += len(inner)
        return Status.OK, esp

    def _encap(self, nh: int, inner: bytes, tfc: int, cap: int) -> tuple[int, bytes]:
        with self._lock:
            st, out = self._encap_locked(nh, inner, tfc, cap)
            if st != Status.OK:
                self._drops[st] += 1
            return st, out

    def encap(self, inner: Buffer, *, next_header: int | None = None, tfc_padding: int = 0) -> bytes:
        """Protect one packet and return the ESP packet (with the UDP header if the SA has udp_encap)."""
        nh = self._check_next_header(next_header)
        if tfc_padding < 0:
            raise_for_status(Status.INVALID, "negative TFC padding")
        st, out = self._encap(nh, bytes(inner), tfc_padding, MAX_PACKET)
        if st != Status.OK:
            raise_for_status(st)
        return out

    def encap_into(
        self, inner: Buffer, out: Buffer, *, next_header: int | None = None, tfc_padding: int = 0
    ) -> int:
        """Protect one packet into `out` (a writable buffer); returns the packet length."""
        nh = self._check_next_header(next_header)
        view = memoryview(out).cast("B")
        if tfc_padding < 0:
            raise_for_status(Status.INVALID, "negative TFC padding")
        if len(view) == 0:
            raise_for_status(Status.BUFFER_TOO_SMALL)
        st, pkt = self._encap(nh, bytes(inner), tfc_padding, len(view))
        if st != Status.OK:
            raise_for_status(st)
        view[: len(pkt)] = pkt
        return len(pkt)

    def encap_batch(
        self,
        buf: Buffer,
        offsets: Buffer,
        lengths: Buffer,
        out: Buffer,
        out_offsets: Buffer,
        out_lengths: Buffer,
        statuses: Buffer,
        *,
        next_header: int | None = None,
    ) -> int:
        """Protect many packets of one buffer (see the C back end); returns the number with status OK."""
        nh = self._check_next_header(next_header)
        data = memoryview(buf).cast("B")
        offs, lens = memoryview(offsets).cast("B").cast("I"), memoryview(lengths).cast("B").cast("I")
        dst = memoryview(out).cast("B")
        o_offs, o_lens = memoryview(out_offsets).cast("B").cast("I"), memoryview(out_lengths).cast("B").cast("I")
        sts = memoryview(statuses).cast("B")
        n = len(offs)
        if len(lens) != n or len(o_offs) < n or len(o_lens) < n or len(sts) < n:
            raise_for_status(Status.INVALID, "batch arrays have mismatched lengths")
        if n == 0:
            return 0
        if len(dst) == 0:
            raise_for_status(Status.BUFFER_TOO_SMALL)
        ok = pos = 0
        with self._lock:
            for i in range(n):
                st: int = Status.INVALID
                pkt = b""
                if offs[i] <= len(data) and lens[i] <= len(data) - offs[i]:
                    st, pkt = self._encap_locked(nh, bytes(data[offs[i] : offs[i] + lens[i]]), 0, len(dst) - pos)
                o_offs[i], o_lens[i], sts[i] = pos, len(pkt), st
                if st == Status.OK:
                    dst[pos : pos + len(pkt)] = pkt
                    pos += len(pkt)
                    ok += 1
                else:
                    self._drops[st] += 1
        return ok

    # ---- decap ----

    def _icv(self, signed: bytes, seq: int) -> bytes:
        """HMAC over SPI..ciphertext plus the ESN high half (RFC 4303 2.2.1: authenticated, never sent)."""
        mac = self._hmac.copy()
        mac.update(signed)
        if self._config.esn:
            mac.update((seq >> 32).to_bytes(4, "big"))
        return mac.digest()[: self._config.icv_len]

    def _open_cbc(self, pkt: bytes, ct_len: int, seq: int) -> bytes | None:
        """Verify the ICV first (constant time); only an authentic packet is decrypted."""
        end = HDR_LEN + CBC_IV_LEN + ct_len
        if not hmac.compare_digest(self._icv(pkt[:end], seq), pkt[end:]):
            return None
        dec = Cipher(algorithms.AES(self._config.key), modes.CBC(pkt[HDR_LEN : HDR_LEN + CBC_IV_LEN])).decryptor()
        return dec.update(pkt[HDR_LEN + CBC_IV_LEN : end]) + dec.finalize()

    def _open(self, nonce: bytes, ct: bytes, tag: bytes, aad: bytes) -> bytes | None:
        if self._aead is None:  # unreachable: _setup sets it for every AEAD SA
            return None
        try:
            if self._gcm and len(tag) != 16:
                dec = Cipher(algorithms.AES(self._config.key), modes.GCM(nonce, tag, min_tag_length=len(tag)))
                ctx = dec.decryptor()
                ctx.authenticate_additional_data(aad)
                plain = ctx.update(ct)
                ctx.finalize()  # raises InvalidTag; `plain` is dropped unseen in that case
                return plain
            return self._aead.decrypt(nonce, ct + tag, aad)
        except InvalidTag:
            return None

    def _decap_locked(self, pkt: bytes, cap: int) -> tuple[int, int, bytes]:
        cfg = self._config
        if cfg.outbound:
            return Status.INVALID, 0, b""
        min_ct = CBC_BLOCK if self._cbc else 2  # pad length + next header, in whole blocks for CBC
        if len(pkt) < HDR_LEN + self._iv_len + min_ct + cfg.icv_len or len(pkt) > MAX_PACKET:
            return Status.MALFORMED, 0, b""
        if self._cbc and (len(pkt) - HDR_LEN - CBC_IV_LEN - cfg.icv_len) % CBC_BLOCK:
            return Status.MALFORMED, 0, b""
        spi, seq_lo = _HDR.unpack_from(pkt)
        if spi != cfg.spi:
            return Status.UNKNOWN_SPI, 0, b""
        if cfg.lifetime.state(self._packets, self._bytes) is LifetimeState.HARD:
            return Status.HARD_EXPIRED, 0, b""
        seq = seq_lo
        if cfg.esn:
            inferred = self._replay.infer(seq_lo)
            if inferred is None:
                return Status.OUTSIDE_WINDOW, 0, b""
            seq = inferred
        st: int = self._replay.check(seq)
        if st != Status.OK:
            return st, 0, b""
        ct_len = len(pkt) - HDR_LEN - self._iv_len - cfg.icv_len
        if cap < ct_len:
            return Status.BUFFER_TOO_SMALL, 0, b""
        if self._cbc:
            plain = self._open_cbc(pkt, ct_len, seq)
        else:
            iv = pkt[HDR_LEN : HDR_LEN + IV_LEN]
            ct = pkt[HDR_LEN + IV_LEN : HDR_LEN + IV_LEN + ct_len]
            plain = self._open(cfg.salt + iv, ct, pkt[HDR_LEN + IV_LEN + ct_len :], self._aad(seq))
        if plain is None:
            return Status.AUTH_FAILED, 0, b""
        pad, nh = plain[-2], plain[-1]
        if pad + 2 > len(plain) or plain[len(plain) - 2 - pad : -2] != bytes(range(1, pad + 1)):
            st = Status.BAD_PADDING
        elif nh == NH_NONE:
            st = Status.DUMMY
        inner = plain[: len(plain) - 2 - pad]
        if st == Status.OK and cfg.tunnel:
            length = _inner_ip_length(nh, inner)
            if length == 0:
                st = Status.MALFORMED
            inner = inner[:length]  # the rest is TFC padding
        if st in (Status.OK, Status.DUMMY):  # authentic: only now may the window move
            self._replay.update(seq)
        if st != Status.OK:
            return st, 0, b""
        self._packets += 1
        self._bytes += len(inner)
        return Status.OK, nh, inner

    def _decap(self, pkt: bytes, cap: int) -> tuple[int, int, bytes]:
        with self._lock:
            if self._config.udp_encap:
                if len(pkt) < UDP_HDR_LEN or int.from_bytes(pkt[4:6], "big") != len(pkt):
                    self._drops[Status.MALFORMED] += 1
                    return Status.MALFORMED, 0, b""
                pkt = pkt[UDP_HDR_LEN:]
                kind = udp_classify(pkt)
                if kind in _NOT_ESP_KINDS:
                    return Status.NOT_ESP, 0, b""  # normal port-4500 traffic: not counted as a drop
                if kind != UdpKind.ESP:
                    self._drops[Status.MALFORMED] += 1
                    return Status.MALFORMED, 0, b""
            st, nh, inner = self._decap_locked(pkt, cap)
            if st != Status.OK:
                self._drops[st] += 1
            return st, nh, inner

    def decap(self, packet: Buffer) -> tuple[int, bytes]:
        """Verify and decrypt one packet; returns (next_header, inner). Raises an EspError subclass."""
        pkt = bytes(packet)
        st, nh, inner = self._decap(pkt, max(len(pkt), 1))
        if st != Status.OK:
            raise_for_status(st)
        return nh, inner

    def decap_into(self, packet: Buffer, out: Buffer) -> tuple[int, int]:
        """Verify and decrypt one packet into `out`; returns (next_header, length). Nothing is written to
        `out` unless the packet is valid."""
        view = memoryview(out).cast("B")
        if len(view) == 0:
            raise_for_status(Status.BUFFER_TOO_SMALL)
        st, nh, inner = self._decap(bytes(packet), len(view))
        if st != Status.OK:
            raise_for_status(st)
        view[: len(inner)] = inner
        return nh, len(inner)

    # ---- sequence state ----

    @property
    def next_sequence(self) -> int:
        with self._lock:
            return (self._last_sent + 1) & _U64

    @property
    def highest_sequence(self) -> int:
        with self._lock:
            return self._replay.last

    def advance_sequence(self, next_seq: int) -> None:
        """Move the sequence state forward (never back, so no IV can repeat). Outbound: the next packet
        uses `next_seq`. Inbound: the replay window restarts, empty, just below `next_seq`."""
        with self._lock:
            top = _U64 if self._config.esn else _U32
            ok = 0 < next_seq <= top
            if ok and self._config.outbound:
                ok = next_seq - 1 >= self._last_sent
                if ok:
                    self._last_sent = next_seq - 1
            elif ok:
                ok = next_seq - 1 >= self._replay.last
                if ok:
                    self._replay.reset(next_seq - 1)
        if not ok:
            raise_for_status(Status.INVALID, "sequence numbers only move forward")

    def limit_sequence(self, last_allowed: int | None) -> None:
        """Outbound: never send with a sequence number above `last_allowed` (None: no limit); beyond
        it encapsulation fails as when the sequence space is exhausted."""
        if last_allowed is not None and not 0 < last_allowed < 2**64:
            raise_for_status(Status.INVALID, "sequence number out of range")
        if not self._config.outbound:
            raise_for_status(Status.INVALID, "only an outbound SA has a sequence limit")
        with self._lock:
            self._ceiling = last_allowed or 0


class SATable:
    """Inbound SAs keyed by SPI for `decap_batch` (packets with another SPI get Status.UNKNOWN_SPI)."""

    def __init__(self, sas: Iterable[EspSA]) -> None:
        sas = list(sas)
        table: dict[int, EspSA] = {}
        for sa in sas:
            if not isinstance(sa, EspSA) or sa.direction is not Direction.INBOUND:
                raise EspUsageError("SA table holds inbound EspSA objects of the same back end only")
            if sa.spi in table:
                raise EspUsageError("duplicate SPI in SA table")
            table[sa.spi] = sa
        udp = {sa.udp_encap is not None for sa in sas}
        if len(udp) > 1:
            raise EspUsageError("all SAs of a table must agree on UDP encapsulation")
        self.sas = tuple(sas)
        self.udp_encap = udp == {True}
        self._table = table
        self._lock = threading.Lock()
        self._drop_counts = [0] * len(Status)

    @property
    def drops(self) -> dict[str, int]:
        """Packets refused before an SA was found (unknown SPI, not ESP, too short), by reason."""
        with self._lock:
            return {Status(i).name.lower(): n for i, n in enumerate(self._drop_counts) if i and n}

    def decap_batch(
        self,
        buf: Buffer,
        offsets: Buffer,
        lengths: Buffer,
        out: Buffer,
        out_offsets: Buffer,
        out_lengths: Buffer,
        next_headers: Buffer,
        statuses: Buffer,
    ) -> int:
        """Decapsulate many packets, each with the SA of its SPI; returns the number with status OK."""
        data = memoryview(buf).cast("B")
        offs, lens = memoryview(offsets).cast("B").cast("I"), memoryview(lengths).cast("B").cast("I")
        dst = memoryview(out).cast("B")
        o_offs, o_lens = memoryview(out_offsets).cast("B").cast("I"), memoryview(out_lengths).cast("B").cast("I")
        nhs, sts = memoryview(next_headers).cast("B"), memoryview(statuses).cast("B")
        n = len(offs)
        if len(lens) != n or len(o_offs) < n or len(o_lens) < n or len(sts) < n or len(nhs) < n:
            raise_for_status(Status.INVALID, "batch arrays have mismatched lengths")
        if n == 0:
            return 0
        if len(dst) == 0:
            raise_for_status(Status.BUFFER_TOO_SMALL)
        spi_at = UDP_HDR_LEN if self.udp_encap else 0
        ok = pos = 0
        for i in range(n):
            st: int = Status.INVALID
            nh, inner, counted = 0, b"", False
            if offs[i] <= len(data) and lens[i] <= len(data) - offs[i]:
                pkt = bytes(data[offs[i] : offs[i] + lens[i]])
                if self.udp_encap and len(pkt) >= UDP_HDR_LEN and udp_classify(pkt[UDP_HDR_LEN:]) in _NOT_ESP_KINDS:
                    st = Status.NOT_ESP
                elif len(pkt) < spi_at + HDR_LEN:
                    st = Status.MALFORMED
                else:
                    sa = self._table.get(int.from_bytes(pkt[spi_at : spi_at + 4], "big"))
                    if sa is None:
                        st = Status.UNKNOWN_SPI
                    else:
                        st, nh, inner = sa._decap(pkt, len(dst) - pos)
                        counted = True  # by the SA itself
            if st != Status.OK and not counted:
                with self._lock:
                    self._drop_counts[st] += 1
            o_offs[i], o_lens[i], nhs[i], sts[i] = pos, len(inner), nh, st
            if st == Status.OK:
                dst[pos : pos + len(inner)] = inner
                pos += len(inner)
                ok += 1
        return ok


def send_batch(fd: int, buf: Buffer, offsets: Buffer, lengths: Buffer, skip: int = 0) -> int:
    """Send buf[offsets[i]+skip : offsets[i]+lengths[i]] on a connected socket, one send per packet."""
    data = memoryview(buf).cast("B")
    offs, lens = memoryview(offsets).cast("B").cast("I"), memoryview(lengths).cast("B").cast("I")
    if len(offs) != len(lens) or skip < 0:
        raise_for_status(Status.INVALID, "batch arrays have mismatched lengths")
    for o, n in zip(offs, lens):
        if o > len(data) or n > len(data) - o or n < skip:
            raise_for_status(Status.INVALID, "packet outside the buffer")
    sock = socket.socket(fileno=fd)
    sent = 0
    try:
        for o, n in zip(offs, lens):
            try:
                sock.send(data[o + skip : o + n])
            except OSError:
                if sent == 0:
                    raise
                break
            sent += 1
    finally:
        sock.detach()  # the caller owns the descriptor
    return sent


def recv_batch(
    fd: int,
    buf: Buffer,
    slot_size: int,
    offsets: Buffer,
    lengths: Buffer,
    *,
    strip_ipv4: bool = False,
    udp_header: bool = False,
) -> int:
    """Receive up to len(offsets) datagrams into fixed slots of `buf` (blocking for the first only)."""
    view = memoryview(buf).cast("B")
    offs, lens = memoryview(offsets).cast("B").cast("I"), memoryview(lengths).cast("B").cast("I")
    headroom = UDP_HDR_LEN if udp_header else 0
    n = min(len(offs), 64)
    if len(offs) != len(lens) or slot_size <= headroom:
        raise_for_status(Status.INVALID, "bad batch arrays or slot size")
    if len(offs) == 0:
        return 0
    if len(view) < len(offs) * slot_size:
        raise_for_status(Status.BUFFER_TOO_SMALL, "buffer smaller than len(offsets) * slot_size")
    sock = socket.socket(fileno=fd)
    got = 0
    try:
        local_port = sock.getsockname()[1] if udp_header else 0
        while got < n:
            start = got * slot_size + headroom
            try:
                size, _anc, flags, addr = sock.recvmsg_into(
                    [view[start : got * slot_size + slot_size]], 0, 0 if got == 0 else socket.MSG_DONTWAIT
                )
            except OSError as exc:
                # like recvmmsg: what was already received is returned; an error with nothing received raises
                if got == 0 and not isinstance(exc, BlockingIOError):
                    raise
                break
            off, length = start, size if not flags & socket.MSG_TRUNC else 0
            if strip_ipv4 and length >= 20 and view[off] >> 4 == 4:
                ihl = (view[off] & 0x0F) * 4
                ihl = ihl if 20 <= ihl <= length else length
                off, length = off + ihl, length - ihl
            if udp_header:
                sport = addr[1] if isinstance(addr, tuple) else 0
                off, length = off - headroom, length + headroom
                view[off : off + headroom] = _UDP.pack(sport, local_port, length, 0)
            offs[got], lens[got] = off, length
            got += 1
    finally:
        sock.detach()
    return got
