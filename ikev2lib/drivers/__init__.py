"""I/O drivers for the sans-IO engine. `asyncio_udp.AsyncioIkeDriver`: UDP 500/4500 on asyncio."""

from __future__ import annotations

from .asyncio_udp import AsyncioIkeDriver

__all__ = ["AsyncioIkeDriver"]
