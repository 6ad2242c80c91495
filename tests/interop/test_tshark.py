"""tshark, an independent IKEv2 implementation, decrypts strongSwan's IKE traffic with the keys
strongSwan logged: on the stored corpus captures and on a fresh capture made by the harness."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from .capture import Capture, ike_messages
from .corpus import CORPUS_DIR, decryption_rows, load_keys, manifest
from .fixtures import CharonFactory
from .netns import NamespacePair
from .strongswan import CharonSettings, logged_ike_keys, psk_connection_pair
from .tshark import DecodedIkeMessage, IkeDecryptionRow, decode_ike

IKE_AUTH, INFORMATIONAL, CREATE_CHILD_SA = 35, 37, 36
SK, IDI, IDR, AUTH, SA, TSI, TSR, NOTIFY, DELETE = 46, 35, 36, 39, 33, 44, 45, 41, 42


def _without_notifies(payloads: list[int]) -> list[int]:
    return [p for p in payloads if p != NOTIFY]


def _assert_ike_auth_decrypted(decoded: list[DecodedIkeMessage]) -> None:
    auth = [m for m in decoded if m.exchange_type == IKE_AUTH]
    assert len(auth) == 2
    request, response = auth
    assert request.authenticated and response.authenticated
    assert _without_notifies(request.payloads) == [SK, IDI, IDR, AUTH, SA, TSI, TSR]
    assert _without_notifies(response.payloads) == [SK, IDR, AUTH, SA, TSI, TSR]


@pytest.mark.parametrize("scenario", ["aes128gcm16_prfsha256_x25519", "aes256_sha256_modp2048"])
def test_tshark_decrypts_corpus_capture(scenario: str) -> None:
    keys = load_keys(scenario)
    pcap = CORPUS_DIR / keys["pcap"]
    decoded = decode_ike(pcap, decryption_rows(keys))
    # Same messages as the .bin files of this scenario, in the same order.
    files = [e for e in manifest() if f"_{scenario}_" in e.file]
    assert [m.exchange_type for m in decoded] == [
        {"ike_sa_init": 34, "ike_auth": 35, "create_child_sa": 36, "informational": 37}[e.description.split()[0]]
        for e in files]
    _assert_ike_auth_decrypted(decoded)
    encrypted = [m for m in decoded if m.exchange_type != 34]
    assert all(m.authenticated for m in encrypted)
    deletes = [m for m in encrypted if m.exchange_type == INFORMATIONAL and DELETE in m.payloads]
    assert deletes  # the final delete (and, with rekeying, the old SAs' deletes) decrypt too


def test_tshark_with_a_wrong_key_fails_authentication() -> None:
    keys = load_keys("aes128gcm16_prfsha256_x25519")
    rows = decryption_rows(keys)
    wrong = [dataclasses.replace(r, sk_ei=bytes(len(r.sk_ei)), sk_er=bytes(len(r.sk_er))) for r in rows]
    decoded = decode_ike(CORPUS_DIR / keys["pcap"], wrong)
    auth = [m for m in decoded if m.exchange_type == IKE_AUTH]
    # The SK header names the first inner payload; the garbage after it never parses as AUTH.
    assert auth and all(m.decrypted and not m.authenticated and AUTH not in m.payloads for m in auth)


@pytest.mark.interop
def test_tshark_decrypts_live_capture_with_logged_keys(netns_pair: NamespacePair, charon_factory: CharonFactory,
                                                     tmp_path: Path) -> None:
    settings = CharonSettings(log_levels={"default": 1, "ike": 4})
    proposal = "aes256gcm16-prfsha384-ecp384"
    left_cfg, right_cfg = psk_connection_pair(netns_pair.left_addr, netns_pair.right_addr, proposals=[proposal])
    left = charon_factory(netns_pair.left, "left", settings)
    right = charon_factory(netns_pair.right, "right", CharonSettings())
    right.load(right_cfg)
    left.load(left_cfg)
    pcap = tmp_path / "live.pcap"
    with Capture(netns_pair.left, netns_pair.left_if, pcap):
        left.initiate(child="net")
        ike = left.wait_for_ike("conn")
        right.wait_for_child("net")
    messages = ike_messages(pcap)
    assert [m[18] for _, m in messages] == [34, 34, 35, 35]

    (keys,) = logged_ike_keys(left.log_text())
    row = IkeDecryptionRow(bytes.fromhex(ike.spi_i), bytes.fromhex(ike.spi_r), keys["sk_ei"], keys["sk_er"],
                           ike.encr_alg or "", int(ike.encr_keysize or 0))
    assert len(row.sk_ei) == 32 + 4  # AES-256 key + GCM salt
    _assert_ike_auth_decrypted(decode_ike(pcap, [row]))
