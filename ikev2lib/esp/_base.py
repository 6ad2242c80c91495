"""What both back ends' SAs share: the validated configuration and the properties derived from it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ikev2lib.esp.errors import EspUsageError
from ikev2lib.esp.params import (
    DEFAULT_REPLAY_WINDOW,
    Direction,
    EspStats,
    Lifetime,
    LifetimeState,
    Mode,
    SAConfig,
    make_config,
    stats_from_counts,
)


class SAInfo:
    """The public constructor and a read-only view of an SA's configuration and state. Back ends
    provide `_setup` (build the SA from the validated config), `_counts` and `_lifetime_state`."""

    _config: SAConfig

    def __init__(
        self,
        spi: int,
        algorithm: str,
        key: bytes,
        direction: Direction | str,
        mode: Mode | str = Mode.TUNNEL,
        *,
        esn: bool = False,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        udp_encap: tuple[int, int] | None = None,
        lifetime: Lifetime | None = None,
    ) -> None:
        self._setup(make_config(spi, algorithm, key, direction, mode, esn, replay_window, udp_encap, lifetime))

    def __copy__(self) -> SAInfo:
        # a copy would carry its own sequence counter under the same key: nonce reuse
        raise EspUsageError("an ESP SA cannot be copied (the copy would reuse sequence numbers and nonces)")

    def __deepcopy__(self, memo: object) -> SAInfo:
        return self.__copy__()

    def __reduce__(self) -> str | tuple[object, ...]:
        raise EspUsageError("an ESP SA cannot be pickled (the copy would reuse sequence numbers and nonces)")

    def _setup(self, cfg: SAConfig) -> None:
        raise NotImplementedError

    if TYPE_CHECKING:  # provided by the back end class that comes after this mixin in the MRO

        def _counts(self) -> tuple[int, int, list[int]]: ...

        def _lifetime_state(self) -> int: ...

    @property
    def spi(self) -> int:
        return self._config.spi

    @property
    def algorithm(self) -> str:
        return self._config.algorithm

    @property
    def direction(self) -> Direction:
        return self._config.direction

    @property
    def mode(self) -> Mode:
        return self._config.mode

    @property
    def esn(self) -> bool:
        return self._config.esn

    @property
    def replay_window(self) -> int:
        return self._config.replay_window

    @property
    def udp_encap(self) -> tuple[int, int] | None:
        return self._config.udp_encap

    @property
    def lifetime(self) -> Lifetime:
        return self._config.lifetime

    @property
    def icv_length(self) -> int:
        return self._config.icv_len

    @property
    def stats(self) -> EspStats:
        """Packets and inner bytes processed, and refused packets by reason (Status names)."""
        return stats_from_counts(*self._counts())

    @property
    def lifetime_state(self) -> LifetimeState:
        return LifetimeState(self._lifetime_state())

    @property
    def soft_expired(self) -> bool:
        """The soft lifetime is reached: time to rekey."""
        return self._lifetime_state() >= LifetimeState.SOFT

    @property
    def hard_expired(self) -> bool:
        """The hard lifetime is reached: the SA refuses all traffic."""
        return self._lifetime_state() >= LifetimeState.HARD

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__qualname__} {self._config!r}>"
