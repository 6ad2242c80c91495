"""ikev2lib and strongSwan's charon negotiate an AES-CBC + HMAC-SHA-256-128 Child SA (ESP `aes256-sha256`,
RFC 3602 / RFC 4868) in both roles, and real UDP traffic flows through it both ways (both ESP back ends).
Setup and helpers: engine_pair.py."""

from __future__ import annotations

import pytest

# the shared helpers assert too: let pytest explain their failures (must precede their import)
pytest.register_assert_rewrite(f"{__package__}.engine_pair")

from ikev2lib import esp as esp_plane
from ikev2lib.child_sa import EspFactory, EspParams

from .engine_pair import (  # make_pair and peers are pytest fixtures: imported to be used here
    ROLES,
    PairFactory,
    establish,
    esp_both_ways,
    make_pair,
    no_errors,
    peers,
)

__all__ = ["make_pair", "peers"]


def _factory(backend: str) -> EspFactory:
    module = esp_plane.backends()[backend]

    def build(params: EspParams) -> object:
        return module.EspSA(int.from_bytes(params.spi, "big"), params.algorithm, params.key + params.integ_key,
                            params.direction, params.mode, esn=params.esn, replay_window=params.replay_window)

    return build


@pytest.mark.interop
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("backend", ["c", "python"])
def test_aes256_sha256_child_sa_with_charon(make_pair: PairFactory, role: str, backend: str) -> None:
    pair = make_pair(ike="aes256-sha256-modp2048", esp="aes256-sha256-modp2048", esp_factory=_factory(backend))
    _, child, _, ch = establish(pair, role)
    assert (ch.encr_alg, ch.encr_keysize, ch.integ_alg) == ("AES_CBC", "256", "HMAC_SHA2_256_128")
    esp_both_ways(pair, child.child_id, ch.spi_in, f"aes256-sha256 ({backend})")
    no_errors(pair)
