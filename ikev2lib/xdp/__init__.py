"""AF_XDP for the ESP data plane: the XDP program that redirects the gateway's ESP to XSKs, and the XSKs.

    program = XdpProgram.attach("eth0", mode="native")   # or "skb" (generic XDP: any driver, copies)
    program.add_spi(0x1234abcd)                          # inbound SPIs the data plane holds
    xsk = XskSocket.open(program, "eth0", queue=0)       # one per device queue and worker
    n = xsk.recv(addrs, lens)                            # frames in xsk.area (no copy), in batches
    ...                                                  # parse and decrypt them in place (_esp_fast)
    xsk.release(addrs, n)                                # back to the fill ring

The program (esp_xdp.bpf.o, built from _esp_fast/xdp/esp_xdp.bpf.c) redirects IP protocol 50 and
UDP to the NAT-T port whose first word is not the non-ESP marker, for SPIs in its map, and passes
everything else (IKE, NAT keepalives, fragments, unknown SPIs, all other traffic) to the kernel.
The binding is `ikev2lib._xsk`, a cffi module over libxdp built when libxdp-dev and libbpf-dev are
installed; without it, or without XDP on the device, or without the permission (CAP_NET_ADMIN,
CAP_BPF), XdpUnavailable says which.
"""

from __future__ import annotations

import errno
import mmap
import os
import time
from array import array
from importlib import resources
from typing import Any

from ..exceptions import LocalProtocolError

__all__ = ["XdpUnavailable", "XdpProgram", "XskSocket", "FRAME_SIZE", "program_path", "unavailable_reason"]

try:
    from .. import _xsk  # type: ignore[attr-defined]
except ImportError as exc:  # built only where libxdp is installed (setup.py)
    _xsk = None
    _IMPORT_ERROR = f"ikev2lib was built without AF_XDP ({exc}); install libxdp-dev libbpf-dev clang and reinstall"
else:
    _IMPORT_ERROR = ""

FRAME_SIZE = 4096  # esp_xsk.h ESP_XSK_FRAME_SIZE
REBIND_WAIT = 1.0  # seconds an XSK open waits for the queue of one just closed to be free
REBIND_POLL = 0.01
DEFAULT_FRAMES = 4096  # UMEM frames per XSK: half for receiving, half for sending
MIN_FRAMES, MAX_FRAMES = 64, 65536  # esp_xsk.h ESP_XSK_MIN_FRAMES, ESP_XSK_MAX_FRAMES
MODES = {"native": 0, "skb": 1}


class XdpUnavailable(LocalProtocolError):
    """AF_XDP cannot be used here: the message says why (not built, no XDP on the device, no permission)."""


def unavailable_reason() -> str | None:
    """Why AF_XDP is not usable at all on this installation (None: the binding and program are here)."""
    if _xsk is None:
        return _IMPORT_ERROR
    if not program_path().exists():
        return f"the XDP program {program_path()} is missing (reinstall ikev2lib with clang present)"
    return None


def program_path() -> Any:
    return resources.files(__package__).joinpath("esp_xdp.bpf.o")


def _lib() -> Any:
    reason = unavailable_reason()
    if reason is not None:
        raise XdpUnavailable(reason)
    return _xsk.lib


def _failure(what: str, err: int) -> XdpUnavailable:
    code = -err if err < 0 else err
    hint = {errno.EPERM: " (needs root: CAP_NET_ADMIN and CAP_BPF)",
            errno.EOPNOTSUPP: " (not supported by this device or driver)", errno.ENODEV: " (no such interface)",
            errno.EBUSY: " (busy: another XDP program or XSK is there)"}.get(code, "")
    return XdpUnavailable(f"{what}: {os.strerror(code)}{hint}")


class XdpProgram:
    """The ESP redirect program attached to one interface; `close()` detaches it."""

    def __init__(self, handle: Any, ifname: str, mode: str) -> None:
        self._handle = handle
        self.ifname = ifname
        self.mode = mode

    @classmethod
    def attach(cls, ifname: str, *, mode: str = "native", natt_port: int = 4500) -> XdpProgram:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if not 0 <= natt_port <= 0xFFFF:
            raise ValueError("natt_port must be 0..65535 (0: no UDP encapsulation)")
        lib = _lib()
        err = _xsk.ffi.new("int *")
        handle = lib.esp_xdp_attach(str(program_path()).encode(), ifname.encode(), MODES[mode], natt_port, err)
        if handle == _xsk.ffi.NULL:
            raise _failure(f"XDP program on {ifname} ({mode})", err[0])
        return cls(handle, ifname, mode)

    def add_spi(self, spi: int) -> None:
        rc = _xsk.lib.esp_xdp_add_spi(self._live(), spi)
        if rc:
            raise _failure(f"SPI {spi:#010x} into the XDP map", rc)

    def remove_spi(self, spi: int) -> bool:
        """False if the SPI was not there."""
        rc = _xsk.lib.esp_xdp_remove_spi(self._live(), spi)
        if rc and rc != -errno.ENOENT:
            raise _failure(f"SPI {spi:#010x} out of the XDP map", rc)
        return bool(rc == 0)

    def _live(self) -> Any:
        if self._handle is None:
            raise XdpUnavailable("the XDP program was detached")
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            _xsk.lib.esp_xdp_detach(self._handle)
            self._handle = None

    def __enter__(self) -> XdpProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class XskSocket:
    """One AF_XDP socket with its UMEM, bound to (interface, queue) and registered with the program.

    `area` is the UMEM (a writable memoryview of an anonymous mmap): a received frame is
    area[addr:addr + len]. Python owns that memory, so a view kept after `close` stays valid (the kernel
    no longer writes there). Batches go through caller-owned arrays (`array('Q')` of addresses,
    `array('I')` of lengths), so no Python object is made per packet."""

    def __init__(self, handle: Any, memory: mmap.mmap, pinned: Any, ifname: str, queue: int, zerocopy: bool) -> None:
        self._handle = handle
        self._pinned = pinned  # the cdata pointer into `memory` the C side holds: kept with the socket
        self.ifname, self.queue, self.zerocopy = ifname, queue, zerocopy
        self.area = memoryview(memory)

    @classmethod
    def open(cls, program: XdpProgram | None, ifname: str, queue: int = 0, *, frames: int = DEFAULT_FRAMES,
             zerocopy: bool | None = False) -> XskSocket:
        """program None: a socket that only sends (nothing is redirected to it). zerocopy: True demands
        XDP_ZEROCOPY (XdpUnavailable where the driver lacks it), False copy mode, None lets the kernel
        choose: zero-copy where the driver has it, else copy mode. `self.zerocopy` is what it got."""
        lib = _lib()
        if not MIN_FRAMES <= frames <= MAX_FRAMES or frames & (frames - 1):
            raise ValueError(f"frames must be a power of two in {MIN_FRAMES}..{MAX_FRAMES}")
        err = _xsk.ffi.new("int *")
        owner = _xsk.ffi.NULL if program is None else program._live()
        memory = mmap.mmap(-1, frames * FRAME_SIZE)  # anonymous, page-aligned: the UMEM
        pinned = _xsk.ffi.from_buffer("uint8_t[]", memory)
        mode = lib.ESP_XSK_AUTO if zerocopy is None else lib.ESP_XSK_ZEROCOPY if zerocopy else lib.ESP_XSK_COPY
        deadline = time.monotonic() + REBIND_WAIT
        while True:
            handle = lib.esp_xsk_open(owner, ifname.encode(), queue, pinned, len(memory), mode, err)
            # the kernel frees a closed XSK's hold on the queue a moment later: a quick reopen sees EBUSY
            if handle != _xsk.ffi.NULL or err[0] != -errno.EBUSY or time.monotonic() > deadline:
                break
            time.sleep(REBIND_POLL)
        if handle == _xsk.ffi.NULL:
            asked = "zero-copy or copy" if zerocopy is None else "zero-copy" if zerocopy else "copy"
            raise _failure(f"XSK on {ifname} queue {queue} ({asked} mode, {frames} frames)", err[0])
        got = int(lib.esp_xsk_zerocopy(handle))
        if got < 0:
            lib.esp_xsk_close(handle)
            raise _failure(f"XSK on {ifname} queue {queue}: XDP_OPTIONS", got)
        return cls(handle, memory, pinned, ifname, queue, bool(got))

    def fileno(self) -> int:
        return int(_xsk.lib.esp_xsk_fd(self._live()))

    def forwarder_handle(self, natt_port: int, *, send: bool = True) -> tuple[int, ...]:
        """What `CoreForwarder.run(xsk=...)` takes: this XSK, its UMEM and its ring functions as plain
        pointers, so that the C worker uses the rings without Python (send=False: it only receives).
        The socket must stay open while a worker uses it, and nothing else may use its rings."""
        ffi, lib = _xsk.ffi, _xsk.lib
        size = ffi.new("size_t *")
        area = lib.esp_xsk_area(self._live(), size)

        def address(name: str) -> int:
            return int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))

        return (int(ffi.cast("uintptr_t", self._handle)), int(ffi.cast("uintptr_t", area)), int(size[0]),
                address("esp_xsk_recv"), address("esp_xsk_release"), self.fileno(), natt_port,
                address("esp_xsk_tx_frames") if send else 0, address("esp_xsk_send") if send else 0, FRAME_SIZE)

    def recv(self, addrs: array[int], lens: array[int]) -> int:
        """Take up to len(addrs) received frames: their UMEM addresses and lengths. Give them back
        with `release` once their bytes are used."""
        n = min(len(addrs), len(lens))
        return int(_xsk.lib.esp_xsk_recv(self._live(), _xsk.ffi.from_buffer("uint64_t[]", addrs),
                                         _xsk.ffi.from_buffer("uint32_t[]", lens), n))

    def release(self, addrs: array[int], n: int) -> None:
        _xsk.lib.esp_xsk_release(self._live(), _xsk.ffi.from_buffer("uint64_t[]", addrs), min(n, len(addrs)))

    def tx_frames(self, addrs: array[int], n: int) -> int:
        """Up to n free frames to write outgoing frames into (their addresses into addrs)."""
        return int(_xsk.lib.esp_xsk_tx_frames(self._live(), _xsk.ffi.from_buffer("uint64_t[]", addrs),
                                              min(n, len(addrs))))

    def send(self, addrs: array[int], lens: array[int], n: int) -> int:
        """Submit n frames written at addrs (from tx_frames); returns how many the TX ring took."""
        n = min(n, len(addrs), len(lens))
        return int(_xsk.lib.esp_xsk_send(self._live(), _xsk.ffi.from_buffer("uint64_t[]", addrs),
                                         _xsk.ffi.from_buffer("uint32_t[]", lens), n))

    def stats(self) -> dict[str, int]:
        out = _xsk.ffi.new("esp_xsk_stats_t *")
        rc = _xsk.lib.esp_xsk_stats(self._live(), out)
        if rc:
            raise _failure("XDP_STATISTICS", rc)
        return {name: int(getattr(out, name)) for name in (
            "rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full", "rx_fill_ring_empty",
            "tx_ring_empty", "received", "sent", "send_full")}

    def _live(self) -> Any:
        if self._handle is None:
            raise XdpUnavailable("the XSK was closed")
        return self._handle

    def close(self) -> None:
        """Close the socket and deregister the UMEM; the memory goes when the last view of it does."""
        if self._handle is not None:
            _xsk.lib.esp_xsk_close(self._handle)
            self._handle = None
            self._pinned = None

    def __enter__(self) -> XskSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
