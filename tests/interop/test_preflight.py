"""The preflight check against a real charon: this machine passes it, and a charon that lacks the
openssl plugin (on Debian 12, a machine without libstrongswan-standard-plugins) makes every interop
test fail at once with the package named, before any of them waits on the peer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from .preflight import PLUGIN_PACKAGES, check_charon, preflight_problems
from .strongswan import DEFAULT_PLUGINS

ROOT = Path(__file__).resolve().parents[2]
WITHOUT_OPENSSL = " ".join(p for p in DEFAULT_PLUGINS.split() if p != "openssl")
# interop tests that would each wait up to 20 s on a charon that cannot negotiate
VICTIMS = [
    "tests/interop/test_harness.py::test_psk_tunnel_carries_udp",
    "tests/interop/test_engine_strongswan.py",
]


@pytest.mark.interop
def test_this_machine_passes_the_preflight(require_interop: None) -> None:
    assert preflight_problems() == ()


@pytest.mark.interop
def test_a_charon_without_openssl_is_reported_with_the_package(require_interop: None) -> None:
    problems = check_charon(WITHOUT_OPENSSL)
    # strongSwan 5 starts and lacks X25519, ChaCha20-Poly1305, ...; strongSwan 6 aborts for want of SHA-1
    assert any("'openssl' plugin" in p and f"install {PLUGIN_PACKAGES['openssl']}" in p for p in problems), problems


@pytest.mark.interop
def test_every_interop_test_fails_at_once_when_the_peer_is_broken(require_interop: None, tmp_path: Path) -> None:
    env = {**os.environ, "IKEV2LIB_CHARON_PLUGINS": WITHOUT_OPENSSL}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--junitxml",
         str(tmp_path / "report.xml"), *VICTIMS],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    cases = ElementTree.parse(tmp_path / "report.xml").getroot().iter("testcase")
    verdicts = [(case.get("name"), [child.get("message", "") + (child.text or "") for child in case
                                    if child.tag in ("error", "failure")]) for case in cases]
    assert len(verdicts) >= 5, out[-3000:]
    for name, problems in verdicts:
        # failed in its setup with the one message, naming the package; it never reached a wait on charon
        assert len(problems) == 1, (name, out[-3000:])
        assert "interop preflight: this machine cannot run the strongSwan tests" in problems[0], name
        assert f"install {PLUGIN_PACKAGES['openssl']}" in problems[0], name
        assert "timed out" not in problems[0] and "CharonError" not in problems[0], name
