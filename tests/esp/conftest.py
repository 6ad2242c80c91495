"""Every ESP test runs on both back ends: the C core and the pure-Python reference."""

from __future__ import annotations

from types import ModuleType

import pytest

from ikev2lib.esp import backends

BACKEND_NAMES = ("c", "python")


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> ModuleType:
    found = backends()
    name = request.param
    if name not in found:  # the C extension must be built for the suite: a missing one is a failure
        raise RuntimeError(f"ESP back end {name!r} is not importable (build the extension)")
    return found[name]


@pytest.fixture
def c_backend() -> ModuleType:
    return backends()["c"]


@pytest.fixture
def py_backend() -> ModuleType:
    return backends()["python"]
