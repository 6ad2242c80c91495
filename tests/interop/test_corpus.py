"""The captured strongSwan corpus is complete and self-consistent: every message listed, headers
sane, and the logged keys really are the keys of those messages (RFC 7296 section 2.14 key
derivation recomputed with `cryptography`, SK payloads decrypted and authenticated)."""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .corpus import CORPUS_DIR, load_keys, manifest

MAX_CORPUS_BYTES = 200 * 1024
KEYED_SCENARIOS = ["aes128gcm16_prfsha256_x25519", "aes256_sha256_modp2048"]
PRF_HASH = {"PRF_HMAC_SHA2_256": hashlib.sha256}
PAYLOAD_SK, PAYLOAD_SKF = 46, 53


def _prf(name: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, PRF_HASH[name]).digest()


def _prf_plus(name: str, key: bytes, seed: bytes, length: int) -> bytes:
    # RFC 7296 section 2.13: T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n)
    out, t, n = b"", b"", 1
    while len(out) < length:
        t = _prf(name, key, t + seed + bytes([n]))
        out += t
        n += 1
    return out[:length]


def test_manifest_lists_exactly_the_corpus_files() -> None:
    entries = manifest()
    on_disk = {p.name for p in CORPUS_DIR.glob("*.bin")}
    assert len(entries) >= 60
    assert {e.file for e in entries} == on_disk
    assert sum(p.stat().st_size for p in CORPUS_DIR.iterdir()) < MAX_CORPUS_BYTES
    for e in entries:
        data = (CORPUS_DIR / e.file).read_bytes()
        assert len(data) == e.size
        assert "strongSwan 5.9.8" in e.version


def test_every_message_has_a_consistent_ikev2_header() -> None:
    names = {34: "ike_sa_init", 35: "ike_auth", 36: "create_child_sa", 37: "informational"}
    for e in manifest():
        data = (CORPUS_DIR / e.file).read_bytes()
        spi_i, spi_r, next_payload, version, exch, flags, msgid, length = struct.unpack_from("!8s8sBBBBII", data)
        assert version == 0x20 and length == len(data), e.file
        exchange, kind, msgid_text, _, sender = e.description.split()
        assert names[exch] == exchange and f"_{exchange}_" in e.file
        assert bool(flags & 0x20) == (kind == "resp") and int(msgid_text.split("=")[1]) == msgid
        assert bool(flags & 0x08) == (sender == "initiator")
        assert spi_i != bytes(8)
        if exch != 34:
            assert next_payload in (PAYLOAD_SK, PAYLOAD_SKF), e.file
        if "_skf_" in e.file:
            assert next_payload == PAYLOAD_SKF
            number, total = struct.unpack_from("!HH", data, 32)
            assert e.file.endswith(f"_skf_{number}of{total}.bin")


def test_corpus_covers_the_required_cases() -> None:
    files = [e.file for e in manifest()]

    def has(*parts: str) -> bool:
        return any(all(p in f for p in parts) for f in files)

    for scenario in ("aes128gcm16_prfsha256_x25519", "aes256gcm16_prfsha384_ecp384",
                     "chacha20poly1305_prfsha512_curve25519", "aes256_sha256_modp2048", "multi_proposal"):
        assert has(scenario, "ike_sa_init_req") and has(scenario, "ike_sa_init_resp")
    assert has("ike_auth_req_skf_1of") and has("ike_auth_resp_skf_2of")
    assert has("rekey_child_create_child_sa_req") and has("rekey_ike_create_child_sa_resp")
    assert has("dpd_informational_req") and has("delete_ike_informational_req")
    # INVALID_KE_PAYLOAD (17) and COOKIE (16390) notifies, in the 38/60-byte IKE_SA_INIT responses
    for scenario, notify in (("invalid_ke", 17), ("cookie", 16390)):
        first_resp = next(f for f in files if scenario in f and "ike_sa_init_resp" in f)
        data = (CORPUS_DIR / first_resp).read_bytes()
        assert data[16] == 41 and struct.unpack_from("!H", data, 28 + 6)[0] == notify


def _payloads(msg: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    next_type, pos = msg[16], 28
    while next_type:
        length = struct.unpack_from("!H", msg, pos + 2)[0]
        out.setdefault(next_type, msg[pos + 4:pos + length])
        next_type, pos = msg[pos], pos + length
    return out


def _sa_messages(keys: dict[str, Any], sa: dict[str, Any]) -> list[bytes]:
    return [(CORPUS_DIR / name).read_bytes() for name in sa["messages"]]


@pytest.mark.parametrize("scenario", KEYED_SCENARIOS)
def test_logged_keys_follow_from_logged_secret_and_captured_nonces(scenario: str) -> None:
    keys = load_keys(scenario)
    sa = keys["ike_sas"][0]
    init_req, init_resp = _sa_messages(keys, sa)[:2]
    ni, nr = bytes.fromhex(sa["ni"]), bytes.fromhex(sa["nr"])
    assert _payloads(init_req)[40] == ni and _payloads(init_resp)[40] == nr
    prf = sa["prf"]
    skeyseed = _prf(prf, ni + nr, bytes.fromhex(sa["shared_secret"]))
    assert skeyseed.hex() == sa["skeyseed"]
    spis = init_resp[:16]
    assert spis.hex() == sa["spi_i"] + sa["spi_r"]
    names = ["sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"]
    sizes = [len(bytes.fromhex(sa.get(n, ""))) for n in names]
    stream = _prf_plus(prf, skeyseed, ni + nr + spis, sum(sizes))
    pos = 0
    for name, size in zip(names, sizes):
        assert stream[pos:pos + size].hex() == sa.get(name, ""), name
        pos += size


def _decrypt_sk(sa: dict[str, Any], msg: bytes) -> tuple[int, bytes]:
    """(first inner payload type, plaintext without padding) of an SK message."""
    from_initiator = bool(msg[19] & 0x08)
    sk_len = struct.unpack_from("!H", msg, 30)[0]
    aad, body = msg[:32], msg[32:28 + sk_len]
    enc_key = bytes.fromhex(sa["sk_ei" if from_initiator else "sk_er"])
    if sa["encr"] == "AES_GCM_16":  # RFC 5282: key||salt, 8-byte explicit IV, 16-byte ICV
        nonce = enc_key[-4:] + body[:8]
        plain = AESGCM(enc_key[:-4]).decrypt(nonce, body[8:], aad)
    else:  # AES-CBC + HMAC-SHA2-256-128 over header..ciphertext (RFC 7296 section 3.14)
        integ_key = bytes.fromhex(sa["sk_ai" if from_initiator else "sk_ar"])
        signed, icv = msg[:28 + sk_len - 16], msg[28 + sk_len - 16:28 + sk_len]
        assert hmac.compare_digest(hmac.new(integ_key, signed, hashlib.sha256).digest()[:16], icv)
        iv, ct = body[:16], body[16:-16]
        d = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).decryptor()
        plain = d.update(ct) + d.finalize()
    pad = plain[-1]
    return msg[28], plain[:-1 - pad]


@pytest.mark.parametrize("scenario", KEYED_SCENARIOS)
def test_logged_keys_decrypt_the_captured_ike_auth(scenario: str) -> None:
    keys = load_keys(scenario)
    sa = keys["ike_sas"][0]
    msgs = [m for m in _sa_messages(keys, sa) if m[18] == 35]
    assert len(msgs) == 2
    for msg in msgs:
        first, plain = _decrypt_sk(sa, msg)
        types, next_type, pos = [], first, 0
        while next_type:
            types.append(next_type)
            next_type, pos = plain[pos], pos + struct.unpack_from("!H", plain, pos + 2)[0]
        assert pos == len(plain)
        if msg[19] & 0x08:  # IDi [N(INITIAL_CONTACT)] IDr AUTH SA TSi TSr N...
            assert [t for t in types if t != 41][:6] == [35, 36, 39, 33, 44, 45]
            assert b"left" in plain
        else:
            assert types[:5] == [36, 39, 33, 44, 45]


def test_rekeyed_ike_sa_keys_decrypt_its_messages() -> None:
    keys = load_keys("aes128gcm16_prfsha256_x25519")
    old, new = keys["ike_sas"]
    assert new["spi_i"] != old["spi_i"]
    msgs = _sa_messages(keys, new)
    assert msgs and all(m[:8].hex() == new["spi_i"] for m in msgs)
    for msg in msgs:
        _decrypt_sk(new, msg)  # raises InvalidTag on a wrong key
    # The rekey exchange itself is protected by the old SA and carries the new SPIs.
    rekey_req = next(m for m in _sa_messages(keys, old) if m[18] == 36 and bytes.fromhex(new["spi_i"]) in
                     _decrypt_sk(old, m)[1])
    assert rekey_req


@pytest.mark.parametrize("scenario", KEYED_SCENARIOS)
def test_first_child_keys_are_keymat_from_sk_d(scenario: str) -> None:
    # RFC 7296 section 2.17: KEYMAT = prf+(SK_d, Ni | Nr); initiator->responder keys first,
    # encryption before integrity in each direction.
    keys = load_keys(scenario)
    sa, child = keys["ike_sas"][0], keys["child_sas"][0]
    parts = [bytes.fromhex(child.get(n, "")) for n in ("encr_i", "integ_i", "encr_r", "integ_r")]
    keymat = _prf_plus(sa["prf"], bytes.fromhex(sa["sk_d"]), bytes.fromhex(sa["ni"]) + bytes.fromhex(sa["nr"]),
                       sum(map(len, parts)))
    assert keymat == b"".join(parts)


def _decrypt_esp(child: dict[str, Any], from_initiator: bool, packet: bytes) -> tuple[int, bytes]:
    """(next header, inner packet) of one ESP packet, checked against the logged Child SA keys."""
    side = "i" if from_initiator else "r"
    key = bytes.fromhex(child[f"encr_{side}"])
    if "integ_i" not in child:  # AES-GCM-16 (RFC 4106): key||salt, 8-byte IV, AAD = SPI||seq
        plain = AESGCM(key[:-4]).decrypt(key[-4:] + packet[8:16], packet[16:], packet[:8])
    else:  # AES-CBC + HMAC-SHA2-256-128 (RFC 4303, RFC 4868)
        integ = bytes.fromhex(child[f"integ_{side}"])
        assert hmac.compare_digest(hmac.new(integ, packet[:-16], hashlib.sha256).digest()[:16], packet[-16:])
        d = Cipher(algorithms.AES(key), modes.CBC(packet[8:24])).decryptor()
        plain = d.update(packet[24:-16]) + d.finalize()
    pad_len, next_header = plain[-2], plain[-1]
    assert plain[-2 - pad_len:-2] == bytes(range(1, pad_len + 1))  # RFC 4303 default padding
    return next_header, plain[:-2 - pad_len]


@pytest.mark.parametrize("scenario", KEYED_SCENARIOS)
def test_logged_child_keys_decrypt_the_captured_esp(scenario: str) -> None:
    keys = load_keys(scenario)
    by_spi = {}
    for child in keys["child_sas"]:
        by_spi[child["spi_i_to_r"]] = (child, True)
        by_spi[child["spi_r_to_i"]] = (child, False)
    inner_payloads = []
    for esp in keys["esp_packets"]:
        child, from_initiator = by_spi[esp["spi"]]
        assert from_initiator == (esp["from"] == "initiator")
        next_header, inner = _decrypt_esp(child, from_initiator, bytes.fromhex(esp["packet"]))
        assert next_header == 4 and inner[0] >> 4 == 4  # tunnel mode, IPv4 inside
        src, dst = inner[12:16], inner[16:20]
        expected = (bytes([10, 1, 0, 1]), bytes([10, 2, 0, 1]))
        assert (src, dst) == (expected if from_initiator else expected[::-1])
        assert inner[9] == 17 and struct.unpack_from("!H", inner, 22)[0] == 5001
        inner_payloads.append(inner[28:].decode())
    assert sorted(inner_payloads) == sorted(keys["esp_plaintexts"])
    assert len(inner_payloads) >= 6
