"""What the IKE SA crypto can run: one table of IKEv2 transforms, `(transform type, id, key length)`.

Derived from the implementations, so it cannot drift from them: the encryption and integrity
transforms `sk_cipher` builds (sk.py) with every key length `encr_key_length` accepts (keys.py), the
PRFs `Prf` computes (prf.py) and the key exchange methods `KeyExchange` runs (groups.py).
tests/crypto/test_crypto_capabilities.py builds an SK cipher, a PRF or a key exchange for each entry.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..exceptions import LocalProtocolError
from ..wire.enums import TransformType
from .groups import GROUPS
from .keys import encr_key_length
from .prf import SUPPORTED_PRFS
from .sk import SK_ENCRYPTION_IDS, SK_INTEGRITY_IDS

__all__ = ["IKE_TRANSFORMS", "TransformKey"]

TransformKey = tuple[int, int, int | None]  # (transform type, transform id, key length in bits or None)

# Key Length attribute values tried for each cipher: none (fixed-size keys) and the AES sizes.
_KEY_LENGTHS = (None, 128, 192, 256)


def _encryption() -> Iterator[TransformKey]:
    for encr in sorted(SK_ENCRYPTION_IDS):
        for bits in _KEY_LENGTHS:
            try:
                encr_key_length(encr, bits)
            except LocalProtocolError:
                continue
            yield (int(TransformType.ENCR), encr, bits)


IKE_TRANSFORMS: frozenset[TransformKey] = frozenset(
    {
        *_encryption(),
        *((int(TransformType.INTEG), integ, None) for integ in SK_INTEGRITY_IDS),
        *((int(TransformType.PRF), int(prf), None) for prf in SUPPORTED_PRFS),
        *((int(TransformType.KE), int(group), None) for group in GROUPS),
    }
)
