"""libFuzzer harness (atheris) for the hostile-input surface of ikev2lib.crypto: SK payload
decryption for every IKE cipher suite and peer KE values for every group.

Invariant: only RemoteProtocolError (IntegrityError is one) escapes; anything else is a bug.
Run bounded, e.g.:  .venv/bin/python fuzz/fuzz_crypto.py -runs=20000 -max_total_time=30
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from ikev2lib.crypto import SUPPORTED_GROUPS, KeyExchange, public_length, sk_cipher
    from ikev2lib.exceptions import RemoteProtocolError

_SUITES = [
    (20, 128, None, 20, 0),
    (19, 256, None, 36, 0),
    (18, 192, None, 28, 0),
    (28, None, None, 36, 0),
    (12, 128, 12, 16, 32),
    (12, 256, 14, 32, 64),
    (12, 128, 2, 16, 20),
]
_CIPHERS = [sk_cipher(e, b, i, bytes(range(ek)), bytes(range(ik))) for e, b, i, ek, ik in _SUITES]
# Small groups only: a fuzz iteration must stay cheap (MODP-8192 would dominate the run).
_KEX = {g: KeyExchange.generate(g) for g in SUPPORTED_GROUPS if public_length(g) <= 256}


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, len(_CIPHERS) + len(_KEX))
    try:
        if choice == len(_CIPHERS) + len(_KEX):
            # ML-KEM responder: the initiator's encapsulation key is the hostile input.
            size = public_length(36) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 1300)
            KeyExchange.respond(36, fdp.ConsumeBytes(size))
        elif choice < len(_CIPHERS):
            aad = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
            _CIPHERS[choice].decrypt(aad, fdp.ConsumeBytes(fdp.remaining_bytes()))
        else:
            group = sorted(_KEX)[choice - len(_CIPHERS)]
            # Bias toward the exact length so the value checks, not only the length check, run.
            size = public_length(group) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 300)
            peer = fdp.ConsumeBytes(size)
            _KEX[group].shared_secret(peer)
    except RemoteProtocolError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
