"""ikev2lib's Child SA lifetimes against strongSwan 5.9.8: a soft packet limit of ikev2lib's ESP SA
starts a Child SA rekey that charon accepts, and a hard limit deletes the Child SA on both sides.

Same setup as test_engine_strongswan.py (engine_pair.py). The engine polls the ESP counters every
`LIFETIME_CHECK_INTERVAL` seconds; the tests shorten it to keep the run short (every wait is bounded).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

pytest.register_assert_rewrite(f"{__package__}.engine_pair")

from ikev2lib import lifetimes
from ikev2lib.config import ChildConfig
from ikev2lib.events import ChildSaDeleted, ChildSaExpired, ChildSaRekeyed

from .engine_pair import (  # make_pair and peers are pytest fixtures: imported to be used here
    CHILD,
    CONN,
    DATAGRAMS,
    ROLES,
    Pair,
    PairFactory,
    esp_both_ways,
    esp_to_charon,
    establish,
    make_pair,
    no_errors,
    peers,
)

POLL_INTERVAL = 0.5  # seconds between lifetime polls in these tests


def _with_child_limits(pair: Pair, **limits: object) -> None:
    """Give ikev2lib's child config packet limits, for both roles (the initiator's config and the
    endpoint's responder config)."""
    child: ChildConfig = replace(pair.config.children[0], **limits)  # type: ignore[arg-type]
    config = replace(pair.config, children=(child,))
    pair.config = config
    pair.peer.call(lambda: setattr(pair.peer.endpoint, "config", config))


@pytest.mark.interop
@pytest.mark.parametrize("role", ROLES)
def test_soft_packet_limit_rekeys_and_charon_accepts(
    make_pair: PairFactory, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifetimes, "LIFETIME_CHECK_INTERVAL", POLL_INTERVAL)
    pair = make_pair()
    _with_child_limits(pair, rekey_packets=2 * DATAGRAMS, life_packets=1000)
    _, child, _, ch = establish(pair, role)
    esp_both_ways(pair, child.child_id, ch.spi_in, "below the soft limit")
    assert not [e for e in pair.peer.all_events() if isinstance(e, ChildSaExpired)]
    esp_to_charon(pair, child.child_id, ch.spi_in, "reaching the soft limit")  # outbound: 2 x DATAGRAMS

    expired = pair.peer.wait_for(ChildSaExpired)
    assert (expired.child_id, expired.limit, expired.hard) == (child.child_id, "packets", False)
    rekeyed = pair.peer.wait_for(ChildSaRekeyed, lambda e: e.old_child_id == child.child_id)
    gone = pair.peer.wait_for(ChildSaDeleted, lambda e: e.child_id == child.child_id)
    assert not gone.by_peer  # the rekey initiator (ikev2lib) deletes the old Child SA
    new = pair.charon.wait_for_child(CHILD, where=lambda c: c.spi_in == rekeyed.spi_out.hex())
    assert new.spi_out == rekeyed.spi_in.hex()
    pair.charon.wait_until(
        lambda: all(c.spi_in != ch.spi_in for s in pair.charon.list_sas() for c in s.children),
        20.0,
        "old Child SA gone",
    )
    pair.charon.wait_for_log(r"CREATE_CHILD_SA request \d+ \[ N\(REKEY_SA\)")
    esp_both_ways(pair, rekeyed.child_id, new.spi_in, "after the soft-limit rekey")
    assert len([e for e in pair.peer.all_events() if isinstance(e, ChildSaRekeyed)]) == 1
    no_errors(pair)


@pytest.mark.interop
def test_hard_packet_limit_deletes_the_child_at_charon_too(
    make_pair: PairFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifetimes, "LIFETIME_CHECK_INTERVAL", POLL_INTERVAL)
    pair = make_pair()
    _with_child_limits(pair, life_packets=DATAGRAMS)
    _, child, ike, ch = establish(pair, "ikev2lib-initiator")
    esp_to_charon(pair, child.child_id, ch.spi_in, "up to the hard limit")

    expired = pair.peer.wait_for(ChildSaExpired)
    assert (expired.child_id, expired.limit, expired.hard) == (child.child_id, "packets", True)
    gone = pair.peer.wait_for(ChildSaDeleted, lambda e: e.child_id == child.child_id)
    assert not gone.by_peer
    pair.charon.wait_until(lambda: not any(s.children for s in pair.charon.list_sas()), 20.0, "no Child SA")
    assert pair.charon.wait_for_ike(CONN).spi_i == ike.spi_i  # the IKE SA stays
    assert not [e for e in pair.peer.all_events() if isinstance(e, ChildSaRekeyed)]
    no_errors(pair)
