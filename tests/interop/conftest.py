"""Fixtures of the strongSwan-in-namespaces harness; see tests/interop/README.md."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from .fixtures import charon_factory, netns_pair, psk_peers, require_interop

__all__ = ["charon_factory", "netns_pair", "psk_peers", "require_interop"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    # Lets charon_factory see whether the test body failed, to print the daemons' logs.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
