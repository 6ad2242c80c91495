"""The Cython binding of the C core: configuration that fails half way, and import order."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from array import array
from types import ModuleType

import pytest

from ikev2lib.esp import errors
from tests.esp.helpers import ipv4, out_arrays, pack, pair


def test_refused_table_configuration_leaves_no_half_built_table(c_backend: ModuleType) -> None:
    from ikev2lib import _esp_fast

    out, inb = pair(c_backend)
    others = [c_backend.EspSA(0x2000 + i, "aes128gcm16", bytes(20), "inbound") for i in range(8)]
    table = _esp_fast.CoreSATable()
    # The outbound SA is refused after the table memory exists and some entries are filled.
    with pytest.raises(errors.EspUsageError):
        table._configure(others + [out] + others, [sa.spi for sa in others] + [out.spi] + [1] * 8, False)
    with pytest.raises(errors.EspUsageError, match="not configured"):
        table.decap_batch(*pack([b"\x00\x00\x20\x00" + bytes(60)]), *out_arrays(1, 100))
    with pytest.raises(errors.EspUsageError):
        table._configure([inb], [], False)  # SPI list shorter than the SA list
    # Still unconfigured, so a correct configuration is accepted and works.
    table._configure([inb], [inb.spi], False)
    packet = out.encap(ipv4())
    assert table.decap_batch(*pack([packet]), *out_arrays(1, 100)) == 1


def test_importing_the_extension_first_still_selects_the_c_back_end(c_backend: ModuleType) -> None:
    # ikev2lib.esp chooses the back end when first imported; importing the extension module directly
    # before it must not make that choice fall back to pure Python.
    env = {k: v for k, v in os.environ.items() if k != "IKEV2LIB_ESP_PURE"}
    code = "import ikev2lib._esp_fast\nfrom ikev2lib.esp import BACKEND, EspSA\nprint(BACKEND, EspSA.__module__)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["c", "ikev2lib.esp._fast"]


def test_recv_batch_refuses_a_slot_size_whose_total_wraps_around(backend: ModuleType) -> None:
    # 4 slots of 2**62 octets "fit" a 64-byte buffer if len(offsets) * slot_size is computed in 64
    # bits; the kernel would then write a queued 1000-octet datagram past the end of the buffer.
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 0))  # bounded wait
        tx.sendto(bytes(1000), rx.getsockname())
        buf, offs, lens = bytearray(64), array("I", bytes(16)), array("I", bytes(16))
        with pytest.raises(errors.EspBufferTooSmallError):
            backend.recv_batch(rx.fileno(), buf, 2**62, offs, lens)
        assert buf == bytearray(64)
        assert len(rx.recv(2000)) == 1000  # still queued: nothing was received into the buffer
    finally:
        rx.close()
        tx.close()
