"""Cross-check against strongSwan 5.9.8: key material charon logged (ike = 4) for real exchanges
between two charon peers is recomputed here, and every captured SK payload is opened and every
PSK AUTH payload verified with ikev2lib.crypto. Fixtures: tests/crypto/data/strongswan/."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from ikev2lib.crypto import (
    child_key_lengths,
    derive_child_keymat,
    derive_ike_keys,
    derive_rekeyed_ike_keys,
    sk_cipher,
    signed_octets,
    split_child_keymat,
    verify_psk_auth,
)

DATA = Path(__file__).parent / "data" / "strongswan"
SCENARIOS = ["aes256_sha256_modp2048", "aes128gcm16_prfsha256_x25519"]

PRF = {"PRF_HMAC_SHA2_256": 5, "PRF_HMAC_SHA2_384": 6, "PRF_HMAC_SHA2_512": 7}
ENCR = {"AES_CBC": 12, "AES_GCM_16": 20, "CHACHA20_POLY1305": 28}
INTEG = {None: None, "HMAC_SHA2_256_128": 12, "HMAC_SHA2_384_192": 13, "HMAC_SHA2_512_256": 14}
SK, SA, NONCE, IDI, IDR, AUTH = 46, 33, 40, 35, 36, 39
FLAG_INITIATOR = 0x08
AUTH_SHARED_KEY = 2


def _walk(first: int, data: bytes, offset: int = 0) -> list[tuple[int, int, bytes]]:
    """(type, offset, body) of a generic payload chain (test helper, trusted input)."""
    out = []
    ptype = first
    while ptype != 0:
        nxt, _, length = struct.unpack_from("!BBH", data, offset)
        out.append((ptype, offset, data[offset + 4 : offset + length]))
        if ptype == SK:  # its "next payload" field names the first inner payload: stop here
            break
        ptype, offset = nxt, offset + length
    return out


def _load(name: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    folder = DATA / name
    doc = json.loads((folder / f"keys_{name}.json").read_text())
    msgs = {p.name: p.read_bytes() for p in sorted(folder.glob("*.bin"))}
    return doc, msgs


def _suite(sa: dict[str, Any]) -> tuple[int, int, int | None, int | None]:
    bits = sa["encr_keysize"] or None
    return PRF[sa["prf"]], ENCR[sa["encr"]], bits, INTEG[sa["integ"]]


def _ciphers(sa: dict[str, Any]) -> dict[bool, Any]:
    _, encr, bits, integ = _suite(sa)
    return {
        True: sk_cipher(encr, bits, integ, bytes.fromhex(sa["sk_ei"]), bytes.fromhex(sa.get("sk_ai", ""))),
        False: sk_cipher(encr, bits, integ, bytes.fromhex(sa["sk_er"]), bytes.fromhex(sa.get("sk_ar", ""))),
    }


def _open(msg: bytes, ciphers: dict[bool, Any]) -> list[tuple[int, int, bytes]]:
    ((ptype, off, _),) = [p for p in _walk(msg[16], msg, 28) if p[0] == SK]
    length = struct.unpack_from("!H", msg, off + 2)[0]
    cipher = ciphers[bool(msg[19] & FLAG_INITIATOR)]
    plain = cipher.decrypt(msg[: off + 4], msg[off + 4 : off + length])
    return _walk(msg[off], plain)


def _body(payloads: list[tuple[int, int, bytes]], ptype: int) -> bytes:
    return next(body for t, _, body in payloads if t == ptype)


@pytest.mark.parametrize("name", SCENARIOS)
def test_ike_sa_init_keys_match_strongswan(name: str) -> None:
    doc, _ = _load(name)
    sa = doc["ike_sas"][0]
    prf, encr, bits, integ = _suite(sa)
    skeyseed, keys = derive_ike_keys(
        prf,
        encr,
        bits,
        integ,
        bytes.fromhex(sa["shared_secret"]),
        bytes.fromhex(sa["ni"]),
        bytes.fromhex(sa["nr"]),
        bytes.fromhex(sa["spi_i"]),
        bytes.fromhex(sa["spi_r"]),
    )
    assert skeyseed.hex() == sa["skeyseed"]
    for field in ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"):
        assert getattr(keys, field).hex() == sa.get(field, ""), field


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_sk_payload_opens_and_psk_auth_verifies(name: str) -> None:
    doc, msgs = _load(name)
    psk = doc["psk"].encode()
    opened = 0
    for sa in doc["ike_sas"]:
        ciphers = _ciphers(sa)
        for fname in sa["messages"]:
            msg = msgs[fname]
            if msg[16] == SK:
                _open(msg, ciphers)  # raises IntegrityError if our SK format differed
                opened += 1
    assert opened == sum(1 for m in msgs.values() if m[16] == SK)

    sa = doc["ike_sas"][0]
    prf = PRF[sa["prf"]]
    ciphers = _ciphers(sa)
    init_req, init_resp, auth_req, auth_resp = (msgs[f] for f in sa["messages"][:4])
    ni, nr = bytes.fromhex(sa["ni"]), bytes.fromhex(sa["nr"])
    # RFC 7296 2.15: initiator signs its IKE_SA_INIT request | Nr | prf(SK_pi, IDi body).
    req = _open(auth_req, ciphers)
    octets = signed_octets(prf, bytes.fromhex(sa["sk_pi"]), init_req, nr, _body(req, IDI))
    auth = _body(req, AUTH)
    assert auth[0] == AUTH_SHARED_KEY
    assert verify_psk_auth(prf, psk, octets, auth[4:])
    assert not verify_psk_auth(prf, psk + b"x", octets, auth[4:])
    # ... and the responder its IKE_SA_INIT response | Ni | prf(SK_pr, IDr body).
    resp = _open(auth_resp, ciphers)
    octets = signed_octets(prf, bytes.fromhex(sa["sk_pr"]), init_resp, ni, _body(resp, IDR))
    auth = _body(resp, AUTH)
    assert auth[0] == AUTH_SHARED_KEY
    assert verify_psk_auth(prf, psk, octets, auth[4:])


@pytest.mark.parametrize("name", SCENARIOS)
def test_first_child_sa_keymat_matches_strongswan(name: str) -> None:
    doc, _ = _load(name)
    sa, child = doc["ike_sas"][0], doc["child_sas"][0]
    prf = PRF[sa["prf"]]
    esp = doc["esp_proposals"][0]
    # The ESP suite of these scenarios: AES-GCM-16/128 (no integrity) or AES-CBC-256 + SHA2-256.
    encr, bits, integ = (20, 128, None) if esp.startswith("aes128gcm16") else (12, 256, 12)
    enc_len, integ_len = child_key_lengths(encr, bits, integ)
    keymat = derive_child_keymat(
        prf, bytes.fromhex(sa["sk_d"]), bytes.fromhex(sa["ni"]), bytes.fromhex(sa["nr"]), 2 * (enc_len + integ_len)
    )
    keys = split_child_keymat(keymat, enc_len, integ_len)
    assert keys.encr_i.hex() == child["encr_i"] and keys.encr_r.hex() == child["encr_r"]
    assert keys.integ_i.hex() == child.get("integ_i", "") and keys.integ_r.hex() == child.get("integ_r", "")


def test_ike_rekey_keys_match_strongswan() -> None:
    doc, msgs = _load("aes128gcm16_prfsha256_x25519")
    old, new = doc["ike_sas"]
    ciphers = _ciphers(old)
    # The CREATE_CHILD_SA exchange whose SA payload proposes protocol IKE (1) is the IKE rekey.
    rekey = []
    for fname in old["messages"]:
        msg = msgs[fname]
        if msg[18] == 36:
            payloads = _open(msg, ciphers)
            if _body(payloads, SA)[5] == 1:
                rekey.append(payloads)
    req, resp = rekey

    def spi(payloads: list[tuple[int, int, bytes]]) -> bytes:
        prop = _body(payloads, SA)
        return prop[8 : 8 + prop[6]]

    assert spi(req).hex() == new["spi_i"] and spi(resp).hex() == new["spi_r"]
    prf, encr, bits, integ = _suite(new)
    skeyseed, keys = derive_rekeyed_ike_keys(
        prf,
        encr,
        bits,
        integ,
        bytes.fromhex(old["sk_d"]),
        bytes.fromhex(new["shared_secret"]),
        _body(req, NONCE),
        _body(resp, NONCE),
        spi(req),
        spi(resp),
    )
    assert skeyseed.hex() == new["skeyseed"]
    for field in ("sk_d", "sk_ei", "sk_er", "sk_pi", "sk_pr"):
        assert getattr(keys, field).hex() == new[field], field
