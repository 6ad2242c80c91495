"""Real strongSwan datagrams (tests/wire/corpus/strongswan/*.bin, captured by
tests/interop/capture_corpus.py) decode, and re-encode byte-exact."""

from __future__ import annotations

import re
from pathlib import Path

from ikev2lib.wire import SA, Encrypted, EncryptedFragment, ExchangeType, Message, Notify, NotifyType

CORPUS = Path(__file__).parent / "corpus" / "strongswan"
EXCHANGE_NAMES = {
    "ike_sa_init": ExchangeType.IKE_SA_INIT,
    "ike_auth": ExchangeType.IKE_AUTH,
    "create_child_sa": ExchangeType.CREATE_CHILD_SA,
    "informational": ExchangeType.INFORMATIONAL,
}
NAME = re.compile(r"_(ike_sa_init|ike_auth|create_child_sa|informational)_(req|resp)(?:_skf_(\d+)of(\d+))?\.bin$")


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.bin"))


def test_corpus_is_present() -> None:
    # Fails (rather than skips) until the interop capture has filled the folder.
    assert len(corpus_files()) >= 4, f"no strongSwan datagrams in {CORPUS}"


def test_every_strongswan_datagram_round_trips_byte_exact() -> None:
    failures = []
    for path in corpus_files():
        data = path.read_bytes()
        try:
            msg = Message.parse(data)
        except ValueError as exc:
            failures.append(f"{path.name}: {exc}")
            continue
        if msg.serialize() != data:
            failures.append(f"{path.name}: re-encoding differs")
        assert Message.parse(msg.serialize()) == msg
    assert not failures, "\n".join(failures)


def test_strongswan_datagrams_match_their_names() -> None:
    """The file name records exchange, direction and fragment numbers: the decoded header must agree."""
    checked = 0
    for path in corpus_files():
        match = NAME.search(path.name)
        if match is None:
            continue
        msg = Message.parse(path.read_bytes())
        assert msg.exchange_type == EXCHANGE_NAMES[match.group(1)], path.name
        assert msg.is_response == (match.group(2) == "resp"), path.name
        if match.group(3):
            skf = msg.payloads[-1]
            assert isinstance(skf, EncryptedFragment), path.name
            assert (skf.fragment_number, skf.total_fragments) == (int(match.group(3)), int(match.group(4)))
        elif msg.exchange_type == ExchangeType.IKE_SA_INIT:
            # An SA payload, or a bare COOKIE / INVALID_KE_PAYLOAD answer (RFC 7296 sections 2.6, 1.2).
            answers = {NotifyType.COOKIE, NotifyType.INVALID_KE_PAYLOAD}
            assert msg.find(SA) is not None or {n.notify_type for n in msg.find_all(Notify)} & answers, path.name
        else:
            assert isinstance(msg.payloads[-1], Encrypted), path.name
        checked += 1
    assert checked >= 4


def _gcm_open(msg_bytes: bytes, sk: Encrypted, key_and_salt: bytes) -> bytes:
    """RFC 5282 AES-GCM for the SK payload: nonce = salt || IV, AAD = header through SK's generic header."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aad = msg_bytes[: len(msg_bytes) - len(sk.data)]
    iv, body = sk.data[:8], sk.data[8:]
    plain = AESGCM(key_and_salt[:-4]).decrypt(key_and_salt[-4:] + iv, body, aad)
    return plain[: len(plain) - plain[-1] - 1]  # strip IKE padding and the Pad Length octet


def _cbc_hmac_open(msg_bytes: bytes, sk: Encrypted, enc_key: bytes, integ_key: bytes) -> bytes:
    """AES-CBC + HMAC-SHA2-256-128 SK payload (RFC 7296 section 3.14): verify the ICV, then decrypt."""
    import hmac

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import hmac as crypto_hmac
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    icv = msg_bytes[-16:]
    mac = crypto_hmac.HMAC(integ_key, hashes.SHA256())
    mac.update(msg_bytes[:-16])
    assert hmac.compare_digest(mac.finalize()[:16], icv)
    iv, body = sk.data[:16], sk.data[16:-16]
    dec = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).decryptor()
    plain = dec.update(body) + dec.finalize()
    return plain[: len(plain) - plain[-1] - 1]


def test_decrypted_strongswan_inner_chains_round_trip() -> None:
    """With the keys charon logged, open every AES-GCM / AES-CBC+SHA256 SK payload of the capture: the
    inner chains (IDi, AUTH, SA, TSi, TSr, N, D, ...) must decode and re-encode byte-exact."""
    import json

    from ikev2lib.wire import parse_payloads, serialize_payloads

    opened: set[str] = set()
    count = 0
    for keys_file in sorted(CORPUS.glob("keys_*.json")):
        info = json.loads(keys_file.read_text())
        for sa in info["ike_sas"]:
            if sa["encr"] not in ("AES_GCM_16", "AES_CBC") or sa["integ"] not in (None, "HMAC_SHA2_256_128"):
                continue
            for name in sa["messages"]:
                data = (CORPUS / name).read_bytes()
                msg = Message.parse(data)
                sk = msg.payloads[-1]
                if not isinstance(sk, Encrypted):
                    continue
                key = bytes.fromhex(sa["sk_ei"] if msg.is_initiator else sa["sk_er"])
                if sa["encr"] == "AES_GCM_16":
                    plain = _gcm_open(data, sk, key)
                else:
                    integ = bytes.fromhex(sa["sk_ai"] if msg.is_initiator else sa["sk_ar"])
                    plain = _cbc_hmac_open(data, sk, key, integ)
                inner = parse_payloads(sk.first_payload_type, plain, base_offset=len(data) - len(sk.data))
                assert serialize_payloads(inner) == (sk.first_payload_type, plain), name
                opened.add(sa["encr"])
                count += 1
    assert opened == {"AES_GCM_16", "AES_CBC"} and count >= 8
