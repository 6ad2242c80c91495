"""`python -m ikev2lib messages` runs and prints the tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from ikev2lib.__main__ import main


def test_demo_prints_tree_and_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["messages"]) == 0
    out = capsys.readouterr().out
    assert "proposal #1 IKE: aes128gcm16-aes256gcm16-prfsha256-prfsha384-x25519-ecp256" in out
    assert "NAT_DETECTION_SOURCE_IP" in out and "identical" in out
    assert "captured strongSwan datagram" in out and "re-encoded byte-exact: yes" in out


def test_demo_without_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["messages", "--corpus", str(tmp_path), "--proposals", "aes256-sha384-ecp384"]) == 0
    out = capsys.readouterr().out
    assert "aes256-sha384-prfsha384-ecp384" in out and "no strongSwan corpus" in out


def test_demo_rejects_unknown_keyword(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["messages", "--proposals", "aes128-nonsense"]) == 2
    assert "unknown proposal keyword 'nonsense'" in capsys.readouterr().err
