"""A per-second budget for answers and events that unauthenticated input can trigger."""

from __future__ import annotations

__all__ = ["PerSecondBudget"]


class PerSecondBudget:
    """At most `limit` uses in any one-second window that starts at a first use (time from the caller)."""

    __slots__ = ("limit", "_window_start", "_used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._window_start = float("-inf")
        self._used = 0

    def take(self, now: float) -> bool:
        """True (and one use spent) if the budget of the current second allows one more."""
        if now - self._window_start >= 1.0:
            self._window_start, self._used = now, 0
        if self._used >= self.limit:
            return False
        self._used += 1
        return True
