"""Fixtures of the HA tests: real etcd members started from Debian's etcd-server (see etcd.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from .etcd import EtcdCluster, EtcdError, etcd_problem


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `etcd` every test that starts etcd (through any fixture here), and only those."""
    for item in items:
        if "require_etcd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.etcd)


@pytest.fixture(scope="session")
def require_etcd() -> None:
    """Fail (never skip), naming the Debian package, when this machine has no etcd."""
    problem = etcd_problem()
    if problem is not None:
        pytest.fail(f"the HA tests need etcd: {problem}", pytrace=False)


def _started(cluster: EtcdCluster) -> EtcdCluster:
    try:
        return cluster.start()
    except EtcdError as exc:
        cluster.close()
        pytest.fail(f"etcd did not start: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def shared_etcd(require_etcd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd member for the whole session, for tests that never stop it (use `key_prefix`)."""
    cluster = _started(EtcdCluster(tmp_path_factory.mktemp("etcd-shared"), size=1))
    yield cluster
    cluster.close()


@pytest.fixture
def etcd_single(require_etcd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A fresh single-member etcd of this test's own, which it may stop, kill and restart."""
    cluster = _started(EtcdCluster(tmp_path_factory.mktemp("etcd-single"), size=1))
    yield cluster
    cluster.close()


@pytest.fixture
def etcd_cluster3(require_etcd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A fresh three-member etcd cluster of this test's own."""
    cluster = _started(EtcdCluster(tmp_path_factory.mktemp("etcd-cluster3"), size=3))
    yield cluster
    cluster.close()


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test's own, so that tests can share `shared_etcd`."""
    return "test/" + re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name) + "/"
