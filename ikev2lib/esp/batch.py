"""`PacketBatch`: many packets in one contiguous buffer, in the layout the batch calls take.

The batch calls (`EspSA.encap_batch`, `SATable.decap_batch`, `send_batch`, `recv_batch`) work on a buffer
plus uint32 offset/length arrays, with no per-packet Python objects. This class builds that layout from
Python packets and holds the output arrays, for callers that start from (or want) `bytes` objects.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from typing import Any

from ikev2lib.esp.errors import Status

__all__ = ["PacketBatch", "BatchResult"]

# worst case over every algorithm (AES-CBC + HMAC-SHA-512): UDP + ESP header + 16-byte IV + 15 bytes of
# block padding + trailer + 32-byte ICV; TFC padding excluded
ESP_OVERHEAD_MAX = 8 + 8 + 16 + 15 + 2 + 32


class BatchResult:
    """Output of one batch call: a buffer, per-packet offsets/lengths/statuses (and next headers)."""

    def __init__(self, count: int, size: int) -> None:
        self.count = count
        self.buf = bytearray(size)
        self.offsets = array("I", bytes(4 * count))
        self.lengths = array("I", bytes(4 * count))
        self.statuses = bytearray(count)
        self.next_headers = bytearray(count)

    def status(self, i: int) -> Status:
        return Status(self.statuses[i])

    def packet(self, i: int) -> memoryview:
        """Packet i of the output (a view into the buffer: copy it if the batch is reused)."""
        return memoryview(self.buf)[self.offsets[i] : self.offsets[i] + self.lengths[i]]

    def ok_packets(self) -> Iterator[memoryview]:
        for i in range(self.count):
            if self.statuses[i] == Status.OK:
                yield self.packet(i)


class PacketBatch:
    """Packets packed back to back in `buf`, described by `offsets` and `lengths` (uint32 arrays)."""

    def __init__(self, buf: bytearray, offsets: array[int], lengths: array[int]) -> None:
        self.buf, self.offsets, self.lengths = buf, offsets, lengths

    @classmethod
    def from_packets(cls, packets: Iterable[bytes]) -> PacketBatch:
        buf, offsets, lengths = bytearray(), array("I"), array("I")
        for p in packets:
            offsets.append(len(buf))
            lengths.append(len(p))
            buf += p
        return cls(buf, offsets, lengths)

    def __len__(self) -> int:
        return len(self.offsets)

    def encap(self, sa: Any, *, next_header: int | None = None) -> BatchResult:
        """Encapsulate every packet with the outbound `sa` in one call (GIL released)."""
        res = BatchResult(len(self), len(self.buf) + len(self) * ESP_OVERHEAD_MAX)
        sa.encap_batch(self.buf, self.offsets, self.lengths, res.buf, res.offsets, res.lengths, res.statuses,
                       next_header=next_header)  # fmt: skip
        return res

    def decap(self, table: Any) -> BatchResult:
        """Decapsulate every packet with the SA of its SPI from `table` (an SATable), in one call."""
        res = BatchResult(len(self), max(len(self.buf), 1))
        table.decap_batch(self.buf, self.offsets, self.lengths, res.buf, res.offsets, res.lengths,
                          res.next_headers, res.statuses)  # fmt: skip
        return res
