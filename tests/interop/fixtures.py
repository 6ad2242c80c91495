"""pytest fixtures of the interop harness (re-exported by tests/interop/conftest.py).

Other test directories can use them with `from interop.fixtures import *` (or
`tests.interop.fixtures`, depending on how pytest put the tests on sys.path), or the lead can list
this module in a top-level `pytest_plugins`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .netns import NamespacePair
from .preflight import preflight_problems
from .strongswan import Charon, CharonSettings, PskPeers

__all__ = ["require_interop", "netns_pair", "charon_factory", "psk_peers"]


@pytest.fixture
def require_interop() -> None:
    """Fail (never skip) at once, with one message naming what to install, when this machine cannot
    run the interop tests. The check starts one charon per test session (preflight.py), so a machine
    missing a plugin package pays one charon start, not one timeout per test."""
    problems = preflight_problems()
    if problems:
        pytest.fail("interop preflight: this machine cannot run the strongSwan tests:\n  "
                    + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def netns_pair(require_interop: None) -> Iterator[NamespacePair]:
    """Two fresh namespaces `left`/`right` joined by veth (192.0.2.1 <-> 192.0.2.2), inner
    addresses 10.1.0.1/32 and 10.2.0.1/32 on their `lo`; everything removed afterwards."""
    pair = NamespacePair()
    pair.setup()
    try:
        yield pair
    finally:
        pair.close()


CharonFactory = Callable[..., Charon]


@pytest.fixture
def charon_factory(require_interop: None, tmp_path: Path,
                   request: pytest.FixtureRequest) -> Iterator[CharonFactory]:
    """`charon_factory(ns, name="a", settings=CharonSettings(...))` -> a started Charon, stopped at
    teardown. On test failure the tail of each log is printed (pytest shows it with the report)."""
    started: list[Charon] = []

    def make(ns: object, name: str = "charon", settings: CharonSettings | None = None) -> Charon:
        from .netns import Namespace
        if not isinstance(ns, Namespace):
            raise TypeError("ns must be a Namespace")
        charon = Charon(ns, tmp_path / name, settings, name)
        started.append(charon)
        charon.start()
        return charon

    yield make
    for charon in started:
        charon.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for charon in started:
            print(f"==== {charon.name} log\n{charon.tail_log(60)}")


@pytest.fixture
def psk_peers(netns_pair: NamespacePair, charon_factory: CharonFactory) -> PskPeers:
    """Two charons (left initiator, right responder) loaded with a PSK aes128gcm16-prfsha256-x25519
    connection `conn` / child `net` between 10.1.0.0/16 and 10.2.0.0/16; not yet initiated."""
    from .strongswan import psk_connection_pair
    left_cfg, right_cfg = psk_connection_pair(netns_pair.left_addr, netns_pair.right_addr)
    left = charon_factory(netns_pair.left, "left")
    right = charon_factory(netns_pair.right, "right")
    right.load(right_cfg)
    left.load(left_cfg)
    return PskPeers(left, right, "conn", "net")

