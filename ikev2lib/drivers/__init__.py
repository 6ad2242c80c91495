"""I/O drivers for the sans-IO engine. `asyncio_udp.AsyncioIkeDriver`: UDP 500/4500 on asyncio, and raw
ESP (IP protocol 50, `raw_esp`) for Child SAs without UDP encapsulation."""

from __future__ import annotations

from .asyncio_udp import AsyncioIkeDriver

__all__ = ["AsyncioIkeDriver"]
