"""RFC 9611 per-resource Child SAs against strongSwan 6.1 (`per_cpu_sas = yes`), the first release
that has them; Debian 13 ships 6.0.1, so charon runs from a Debian testing root filesystem
(scripts/strongswan6-rootfs.sh DIR testing, built on first use) with chroot in its namespace.

- ikev2lib initiates with per_cpu_sas = 2: IKE_AUTH asks with SA_RESOURCE_INFO, charon answers with
  it (the fallback SA), ikev2lib adds one CREATE_CHILD_SA per resource and charon numbers them with
  its CPU IDs. ESP through every one of the three SAs reaches charon's namespace, and charon's replies
  are decrypted by ikev2lib. A Child SA rekey of a member keeps its resource on both sides.
- charon initiates: its IKE_AUTH carries SA_RESOURCE_INFO and ikev2lib's answer makes charon log
  that the SA is one of several per-resource SAs (it adds more only on per-CPU kernel acquires,
  which its userland kernel-libipsec does not raise), and ikev2lib keeps it as the group's fallback.
- strongSwan 6.0.1 (no RFC 9611) as the peer of an ikev2lib initiator asking for them: one ordinary
  Child SA and no further request.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytest.register_assert_rewrite(f"{__package__}.engine_pair")

from ikev2lib.events import ChildSaCreated, ChildSaRekeyed, IkeSaEstablished

from .engine_pair import (  # make_pair and peers are pytest fixtures: imported to be used here
    CHILD,
    CONN,
    DATAGRAMS,
    LEFT_INNER,
    RIGHT_INNER,
    TRAFFIC_PORT,
    Pair,
    PairFactory,
    esp_to_charon,
    make_pair,
    no_errors,
    peers,
)
from .netns import NamespacePair
from .strongswan import PLUGINS_BY_MAJOR, CharonSettings
from .test_engine_strongswan6_raw_esp import build_rootfs, strongswan6_rootfs
from .traffic import udp_send

__all__ = ["make_pair", "peers", "strongswan6_rootfs"]

TESTING_ROOTFS = Path(os.environ.get("IKEV2LIB_STRONGSWAN61_ROOT", "/var/tmp/ikev2lib-strongswan6/testing"))
RESOURCES = 2  # ikev2lib's per_cpu_sas: one fallback SA and two per-resource SAs
PER_CPU = {"per_cpu_sas": "yes"}
# charon 6.1 names each member with its CPU ID and the Resource Identifier we sent
MEMBER_LOG = re.compile(r"creating per-resource SA as one of several \(our ID \d+, peer's ID [^)]+\)")


@pytest.fixture(scope="session")
def strongswan61_rootfs() -> Path:
    """Debian testing with strongSwan >= 6.1 (built on first use; fails, never skips)."""
    return build_rootfs(TESTING_ROOTFS, "testing")


def _pair(netns_pair: NamespacePair, make_pair: PairFactory, rootfs: Path | None, *, charon_per_cpu: bool,
          resources: int = RESOURCES) -> Pair:
    for ns in (netns_pair.left, netns_pair.right):
        for scope in ("all", "default"):  # no IPv6: libipsec's TUN would make charon roam (MOBIKE)
            ns.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{scope}.disable_ipv6=1"])
    settings = CharonSettings(plugins=PLUGINS_BY_MAJOR[6], rootfs=rootfs,
                              log_levels={"default": 1, "ike": 2, "cfg": 2, "esp": 1})
    return make_pair(settings=settings, child_extra=PER_CPU if charon_per_cpu else None,
                     child_options={"per_cpu_sas": resources})


def _esp_from_charon(pair: Pair, child_ids: set[int], tag: str) -> None:
    """charon's namespace sends UDP into its tunnel; ikev2lib decrypts every datagram on one of the
    group's SAs (which one is charon's choice: libipsec's policy picks an SA)."""
    start = len(pair.peer.wait_for_esp(0, timeout=0))
    payloads = [f"charon->ikev2lib {tag} {i}".encode() for i in range(DATAGRAMS)]
    pair.ns.right.call(udp_send, RIGHT_INNER, LEFT_INNER, TRAFFIC_PORT, payloads, 0.02)
    got = pair.peer.wait_for_esp(start + DATAGRAMS)[start:]
    assert {r.child_id for r in got} <= child_ids
    assert [r.next_header for r in got] == [4] * DATAGRAMS


@pytest.mark.interop
def test_ikev2lib_initiator_builds_a_per_cpu_group_with_strongswan61(
        netns_pair: NamespacePair, make_pair: PairFactory, strongswan61_rootfs: Path) -> None:
    pair = _pair(netns_pair, make_pair, strongswan61_rootfs, charon_per_cpu=True)
    assert re.search(r"strongSwan 6\.[1-9]", pair.charon.log_text())
    pair.peer.initiate(pair.config, pair.ns.right_addr)
    pair.peer.wait_for(IkeSaEstablished)
    created = [pair.peer.wait_for(ChildSaCreated) for _ in range(1 + RESOURCES)]  # in order
    assert [(c.per_resource, c.resource) for c in created] == [(True, None), (True, 0), (True, 1)]
    for event in created[1:]:
        assert int.from_bytes(event.spi_in, "big") % RESOURCES == event.resource
    # charon: the first is its fallback, the others get CPU IDs; all three installed with our SPIs
    pair.charon.wait_for_log(r"creating SA as one of several per-resource SAs")
    pair.charon.wait_until(lambda: len(MEMBER_LOG.findall(pair.charon.log_text())) == RESOURCES, 10.0,
                           "charon's per-resource SAs")
    for event in created:
        charon_child = pair.charon.wait_for_child(CHILD, where=lambda c, e=event: c.spi_out == e.spi_in.hex())
        esp_to_charon(pair, event.child_id, charon_child.spi_in, f"resource {event.resource}")
    _esp_from_charon(pair, {c.child_id for c in created}, "group")

    member = created[2]
    pair.peer.request("rekey_child_sa", member.ike_sa_id, member.child_id)
    rekeyed = pair.peer.wait_for(ChildSaRekeyed)
    assert (rekeyed.old_child_id, rekeyed.per_resource, rekeyed.resource) == (member.child_id, True, 1)
    assert int.from_bytes(rekeyed.spi_in, "big") % RESOURCES == 1
    new = pair.charon.wait_for_child(CHILD, where=lambda c: c.spi_out == rekeyed.spi_in.hex())
    esp_to_charon(pair, rekeyed.child_id, new.spi_in, "resource 1, rekeyed")
    assert len([c for sa in pair.charon.list_sas() for c in sa.children if c.state == "INSTALLED"]) == 1 + RESOURCES
    no_errors(pair)


@pytest.mark.interop
def test_strongswan61_initiator_is_answered_as_a_per_cpu_fallback(
        netns_pair: NamespacePair, make_pair: PairFactory, strongswan61_rootfs: Path) -> None:
    pair = _pair(netns_pair, make_pair, strongswan61_rootfs, charon_per_cpu=True)
    pair.charon.initiate(child=CHILD)
    child = pair.peer.wait_for(ChildSaCreated)
    assert (child.per_resource, child.resource) == (True, None)
    pair.charon.wait_for_log(r"creating SA as one of several per-resource SAs")
    charon_child = pair.charon.wait_for_child(CHILD)
    esp_to_charon(pair, child.child_id, charon_child.spi_in, "fallback")
    _esp_from_charon(pair, {child.child_id}, "fallback")
    no_errors(pair)


@pytest.mark.interop
def test_strongswan_without_rfc9611_gets_one_ordinary_child_sa(
        netns_pair: NamespacePair, make_pair: PairFactory, strongswan6_rootfs: Path | None) -> None:
    pair = _pair(netns_pair, make_pair, strongswan6_rootfs, charon_per_cpu=False)
    assert "strongSwan 6.0." in pair.charon.log_text()  # Debian 13's, before RFC 9611 support
    pair.peer.initiate(pair.config, pair.ns.right_addr)
    child = pair.peer.wait_for(ChildSaCreated)
    assert (child.per_resource, child.resource) == (False, None)
    charon_child = pair.charon.wait_for_child(CHILD)
    esp_to_charon(pair, child.child_id, charon_child.spi_in, "ordinary")
    children = pair.peer.call(lambda: dict(pair.peer.endpoint.connection(child.ike_sa_id).children))
    assert len(children) == 1  # no per-resource request followed
    assert len([c for sa in pair.charon.list_sas() for c in sa.children]) == 1
    no_errors(pair)
