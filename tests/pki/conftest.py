"""Session-wide test PKIs: RSA keys are made once (slow), the openssl PKI once (many subprocesses)."""

from __future__ import annotations

import pytest

from ikev2lib.pki import TrustStore

from .certs import KeyPool, OpensslPki, Pki, build_openssl_pki, build_pki


@pytest.fixture(scope="session")
def keys() -> KeyPool:
    return KeyPool()


@pytest.fixture(scope="session", params=["p256", "rsa", "ed25519", "ed448", "p384"])
def any_pki(request: pytest.FixtureRequest, keys: KeyPool) -> Pki:
    """One PKI per key type (root, intermediate and end entity of that type)."""
    return build_pki(keys, request.param)


@pytest.fixture(scope="session")
def pki(keys: KeyPool) -> Pki:
    return build_pki(keys, "p256")


@pytest.fixture(scope="session")
def other_pki(keys: KeyPool) -> Pki:
    """A second, unrelated PKI (same names with a tag, different keys)."""
    return build_pki(keys, "p256", tag=" other")


@pytest.fixture(scope="session")
def store(pki: Pki) -> TrustStore:
    return TrustStore([pki.root])


@pytest.fixture(scope="session")
def ossl(tmp_path_factory: pytest.TempPathFactory) -> OpensslPki:
    return build_openssl_pki(tmp_path_factory.mktemp("openssl-pki"))
