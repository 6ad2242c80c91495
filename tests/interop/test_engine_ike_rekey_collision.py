"""A forced simultaneous IKE SA rekey (RFC 7296 2.8.2) between ikev2lib and strongSwan.

Both rekey requests must cross: for a moment ikev2lib's messages take a long path (each held back the
same time, in order), so ikev2lib sees charon's request while its own is outstanding,
and charon sees ikev2lib's request while its own is outstanding. Each end then holds both new IKE SAs
and must pick the same survivor from the four nonces. ikev2lib's two nonces are set by the test,
so either end wins on purpose: afterwards charon and ikev2lib hold one and the same IKE SA.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite(f"{__package__}.engine_pair")

from ikev2lib.events import IkeSaRekeyed
from ikev2lib.exchanges import ike_rekey

from .engine_pair import (  # make_pair and peers are pytest fixtures: imported to be used here
    CHILD,
    CONN,
    ROLES,
    PairFactory,
    establish,
    esp_both_ways,
    make_pair,
    peers,
)
from .strongswan import IkeSA

__all__ = ["make_pair", "peers"]

LOWEST = bytes(31) + b"\x01"  # below any nonce charon draws (with overwhelming probability)
HIGHEST = b"\xff" * 32
LATENCY = 0.5  # seconds each of ikev2lib's messages is held back while the rekeys cross
LATENCY_WINDOW = 5.0  # seconds the long path lasts


@pytest.mark.interop
@pytest.mark.parametrize("ikev2lib_wins", [True, False], ids=["ikev2lib-wins", "charon-wins"])
@pytest.mark.parametrize("role", ROLES)
def test_crossed_ike_rekeys_settle_on_the_same_sa(
    make_pair: PairFactory, role: str, ikev2lib_wins: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = make_pair()
    est, child, old, _ = establish(pair, role)
    # our rekey's Ni, then our answer's Nr to charon's rekey: the lowest of the four loses
    ours = [HIGHEST, LOWEST] if ikev2lib_wins else [LOWEST, HIGHEST]
    drawn = iter(ours)
    monkeypatch.setattr(ike_rekey, "new_nonce", lambda: next(drawn))
    pair.peer.add_latency(LATENCY, LATENCY_WINDOW)
    pair.peer.request("rekey_ike_sa", pair.ike_sa_id)
    pair.charon.rekey(ike=CONN)
    rekeyed = pair.peer.wait_for(IkeSaRekeyed)
    pair.charon.wait_for_log(r"IKE_SA rekey collision (won|lost)")

    def settled() -> list[IkeSA]:
        sas = pair.charon.list_sas()
        if len(sas) != 1 or sas[0].state != "ESTABLISHED" or sas[0].child(CHILD) is None:
            return []
        live = pair.peer.call(
            lambda: [(c.spi_i.hex(), c.spi_r.hex()) for c in pair.peer.endpoint.connections() if not c.finished]
        )
        return sas if live == [(sas[0].spi_i, sas[0].spi_r)] else []

    (new,) = pair.charon.wait_until(settled, 30.0, "the same single IKE SA on both sides")
    assert (new.spi_i, new.spi_r) == (rekeyed.spi_i.hex(), rekeyed.spi_r.hex())
    assert (new.spi_i, new.spi_r) != (old.spi_i, old.spi_r)
    # the survivor was created by the winner: the winner initiated that rekey exchange
    assert new.initiator is (not ikev2lib_wins)
    outcome = "won" if not ikev2lib_wins else "lost"
    assert pair.charon.wait_for_log(rf"IKE_SA rekey collision {outcome}")
    stats = pair.peer.call(lambda: pair.peer.endpoint.stats)
    assert stats.get("ike_rekey_collisions_won" if ikev2lib_wins else "ike_rekey_collisions_lost") == 1
    ch = new.child(CHILD)
    assert ch is not None
    esp_both_ways(pair, child.child_id, ch.spi_in, "after crossed IKE rekeys")
    assert [e for e in pair.peer.all_events() if isinstance(e, IkeSaRekeyed)] == [rekeyed]
