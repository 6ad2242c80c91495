"""strongSwan proposal keywords <-> `Proposal`/`Transform` objects.

    parse_proposals("aes128gcm16-prfsha256-x25519,aes256-sha256-modp2048", ProtocolId.IKE)

Each comma-separated item is one proposal; its dash-separated keywords are alternatives grouped by
transform type into that proposal (strongSwan's syntax, as in swanctl.conf `proposals`/`esp_proposals`).
Rules followed from strongSwan's proposal checks:
- IKE: without an explicit PRF, each integrity algorithm contributes its matching PRF; a PRF and a key
  exchange method are mandatory; AEAD and classic ciphers may not share a proposal; classic ciphers need
  an integrity algorithm, AEADs take none.
- ESP: no key exchange keyword means no KE transform (no PFS); without `esn`/`noesn` the proposal
  offers "no ESN". AH takes integrity algorithms only.
- `ke1_<method>` .. `ke7_<method>` are RFC 9370 additional key exchanges (transform types 6-12);
  `<method>` may be `none` to make that exchange optional.
Transforms are emitted grouped in the order ENCR, INTEG, PRF, KE, ADDKE1..7, ESN (keyword order within
a type). An unknown keyword raises `LocalProtocolError` naming it.
"""

from __future__ import annotations

from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.wire.enums import EncrId, EsnId, IntegId, KeyExchangeId, PrfId, ProtocolId, TransformType
from ikev2lib.wire.limits import MAX_PROPOSALS
from ikev2lib.wire.sa import Proposal, Transform

_AES_SIZES = (128, 192, 256)
_AEAD = {
    EncrId.AES_CCM_8,
    EncrId.AES_CCM_12,
    EncrId.AES_CCM_16,
    EncrId.AES_GCM_8,
    EncrId.AES_GCM_12,
    EncrId.AES_GCM_16,
    EncrId.NULL_AUTH_AES_GMAC,
    EncrId.CAMELLIA_CCM_8,
    EncrId.CAMELLIA_CCM_12,
    EncrId.CAMELLIA_CCM_16,
    EncrId.CHACHA20_POLY1305,
}


def _encryption_keywords() -> dict[str, tuple[int, int | None]]:
    table: dict[str, tuple[int, int | None]] = {
        "3des": (EncrId.TRIPLE_DES, None),
        "des": (EncrId.DES, None),
        "null": (EncrId.NULL, None),
        "chacha20poly1305": (EncrId.CHACHA20_POLY1305, None),
        "aes": (EncrId.AES_CBC, 128),
        "camellia": (EncrId.CAMELLIA_CBC, 128),
    }
    icv = {8: 64, 12: 96, 16: 128}
    gcm = {8: EncrId.AES_GCM_8, 12: EncrId.AES_GCM_12, 16: EncrId.AES_GCM_16}
    ccm = {8: EncrId.AES_CCM_8, 12: EncrId.AES_CCM_12, 16: EncrId.AES_CCM_16}
    cam_ccm = {8: EncrId.CAMELLIA_CCM_8, 12: EncrId.CAMELLIA_CCM_12, 16: EncrId.CAMELLIA_CCM_16}
    for bits in _AES_SIZES:
        table[f"aes{bits}"] = (EncrId.AES_CBC, bits)
        table[f"aes{bits}ctr"] = (EncrId.AES_CTR, bits)
        table[f"aes{bits}gmac"] = (EncrId.NULL_AUTH_AES_GMAC, bits)
        table[f"camellia{bits}"] = (EncrId.CAMELLIA_CBC, bits)
        table[f"camellia{bits}ctr"] = (EncrId.CAMELLIA_CTR, bits)
        table[f"aes{bits}gcm"] = (EncrId.AES_GCM_16, bits)
        table[f"aes{bits}ccm"] = (EncrId.AES_CCM_16, bits)
        for octets, ident in gcm.items():
            table[f"aes{bits}gcm{octets}"] = (ident, bits)
            table[f"aes{bits}gcm{icv[octets]}"] = (ident, bits)
        for octets, ident in ccm.items():
            table[f"aes{bits}ccm{octets}"] = (ident, bits)
            table[f"aes{bits}ccm{icv[octets]}"] = (ident, bits)
        for octets, ident in cam_ccm.items():
            table[f"camellia{bits}ccm{octets}"] = (ident, bits)
            table[f"camellia{bits}ccm{icv[octets]}"] = (ident, bits)
    return table


ENCRYPTION = _encryption_keywords()
INTEGRITY: dict[str, int] = {
    "md5": IntegId.HMAC_MD5_96,
    "md5_128": IntegId.HMAC_MD5_128,
    "sha1": IntegId.HMAC_SHA1_96,
    "sha": IntegId.HMAC_SHA1_96,
    "sha1_160": IntegId.HMAC_SHA1_160,
    "sha256": IntegId.HMAC_SHA2_256_128,
    "sha2_256": IntegId.HMAC_SHA2_256_128,
    "sha384": IntegId.HMAC_SHA2_384_192,
    "sha2_384": IntegId.HMAC_SHA2_384_192,
    "sha512": IntegId.HMAC_SHA2_512_256,
    "sha2_512": IntegId.HMAC_SHA2_512_256,
    "aesxcbc": IntegId.AES_XCBC_96,
    "aescmac": IntegId.AES_CMAC_96,
    "aes128gmac": IntegId.AES_128_GMAC,  # AH only; ESP uses the ENCR form (handled by protocol)
    "aes192gmac": IntegId.AES_192_GMAC,
    "aes256gmac": IntegId.AES_256_GMAC,
}
PRF: dict[str, int] = {
    "prfmd5": PrfId.HMAC_MD5,
    "prfsha1": PrfId.HMAC_SHA1,
    "prfsha256": PrfId.HMAC_SHA2_256,
    "prfsha384": PrfId.HMAC_SHA2_384,
    "prfsha512": PrfId.HMAC_SHA2_512,
    "prfaesxcbc": PrfId.AES128_XCBC,
    "prfaescmac": PrfId.AES128_CMAC,
}
KEY_EXCHANGE: dict[str, int] = {
    "modp768": KeyExchangeId.MODP_768,
    "modp1024": KeyExchangeId.MODP_1024,
    "modp1536": KeyExchangeId.MODP_1536,
    "modp2048": KeyExchangeId.MODP_2048,
    "modp3072": KeyExchangeId.MODP_3072,
    "modp4096": KeyExchangeId.MODP_4096,
    "modp6144": KeyExchangeId.MODP_6144,
    "modp8192": KeyExchangeId.MODP_8192,
    "modp1024s160": KeyExchangeId.MODP_1024_160,
    "modp2048s224": KeyExchangeId.MODP_2048_224,
    "modp2048s256": KeyExchangeId.MODP_2048_256,
    "ecp192": KeyExchangeId.ECP_192,
    "ecp224": KeyExchangeId.ECP_224,
    "ecp256": KeyExchangeId.ECP_256,
    "ecp384": KeyExchangeId.ECP_384,
    "ecp521": KeyExchangeId.ECP_521,
    "ecp224bp": KeyExchangeId.BRAINPOOL_P224R1,
    "ecp256bp": KeyExchangeId.BRAINPOOL_P256R1,
    "ecp384bp": KeyExchangeId.BRAINPOOL_P384R1,
    "ecp512bp": KeyExchangeId.BRAINPOOL_P512R1,
    "curve25519": KeyExchangeId.CURVE25519,
    "x25519": KeyExchangeId.CURVE25519,
    "curve448": KeyExchangeId.CURVE448,
    "x448": KeyExchangeId.CURVE448,
    "mlkem512": KeyExchangeId.ML_KEM_512,
    "mlkem768": KeyExchangeId.ML_KEM_768,
    "mlkem1024": KeyExchangeId.ML_KEM_1024,
}
ESN: dict[str, int] = {"esn": EsnId.ESN, "noesn": EsnId.NO_ESN}
# The PRF strongSwan derives from an integrity algorithm when an IKE proposal names none.
PRF_FOR_INTEGRITY: dict[int, int] = {
    IntegId.HMAC_MD5_96: PrfId.HMAC_MD5,
    IntegId.HMAC_SHA1_96: PrfId.HMAC_SHA1,
    IntegId.HMAC_SHA2_256_128: PrfId.HMAC_SHA2_256,
    IntegId.HMAC_SHA2_384_192: PrfId.HMAC_SHA2_384,
    IntegId.HMAC_SHA2_512_256: PrfId.HMAC_SHA2_512,
    IntegId.AES_XCBC_96: PrfId.AES128_XCBC,
    IntegId.AES_CMAC_96: PrfId.AES128_CMAC,
}
_ADDKE_TYPES = {n: TransformType(5 + n) for n in range(1, 8)}  # ke1_ -> ADDKE1 (6) .. ke7_ -> ADDKE7 (12)
_ORDER = (
    TransformType.ENCR,
    TransformType.INTEG,
    TransformType.PRF,
    TransformType.KE,
    *_ADDKE_TYPES.values(),
    TransformType.ESN,
)


def _add(bucket: dict[int, list[Transform]], transform: Transform) -> None:
    items = bucket.setdefault(transform.transform_type, [])
    if transform not in items:  # strongSwan drops duplicates too
        items.append(transform)


def keyword_transform(keyword: str, protocol: ProtocolId) -> Transform | None:
    """The transform one keyword stands for in a `protocol` proposal, None for an unknown keyword."""
    word = keyword.strip().lower()
    if word in ENCRYPTION and not (protocol == ProtocolId.AH and word.endswith("gmac")):
        ident, bits = ENCRYPTION[word]
        return Transform(TransformType.ENCR, EncrId(ident), bits)
    if word in INTEGRITY:
        return Transform(TransformType.INTEG, IntegId(INTEGRITY[word]))
    if word in PRF:
        return Transform(TransformType.PRF, PrfId(PRF[word]))
    if word in KEY_EXCHANGE:
        return Transform(TransformType.KE, KeyExchangeId(KEY_EXCHANGE[word]))
    if word in ESN:
        return Transform(TransformType.ESN, EsnId(ESN[word]))
    if word.startswith("ke") and "_" in word and word[2:3].isdigit():
        index_text, _, method = word[2:].partition("_")
        # ASCII only: str.isdigit() also accepts "²" (int() then fails) and other scripts' digits.
        index = int(index_text) if index_text.isascii() and index_text.isdigit() else 0
        if index in _ADDKE_TYPES and (method == "none" or method in KEY_EXCHANGE):
            ident = KeyExchangeId.NONE if method == "none" else KeyExchangeId(KEY_EXCHANGE[method])
            return Transform(_ADDKE_TYPES[index], ident)
    return None


def _parse_one(text: str, protocol: ProtocolId, number: int, spi: bytes) -> Proposal:
    bucket: dict[int, list[Transform]] = {}
    for raw in text.split("-"):
        if not raw.strip():
            raise LocalProtocolError(f"empty keyword in proposal {text!r}")
        transform = keyword_transform(raw, protocol)
        if transform is None:
            raise LocalProtocolError(f"unknown proposal keyword {raw!r} in {text!r}")
        _add(bucket, transform)
    _check(bucket, protocol, text)
    transforms = [t for kind in _ORDER for t in bucket.get(kind, [])]
    return Proposal(number, protocol, spi, transforms)


def _check(bucket: dict[int, list[Transform]], protocol: ProtocolId, text: str) -> None:
    encr = bucket.get(TransformType.ENCR, [])
    integ = bucket.get(TransformType.INTEG, [])
    aead = [t for t in encr if t.transform_id in _AEAD]
    if aead and len(aead) != len(encr):
        raise LocalProtocolError(f"AEAD and non-AEAD ciphers mixed in one proposal: {text!r}")
    if protocol == ProtocolId.AH:
        if encr or not integ:
            raise LocalProtocolError(f"an AH proposal takes integrity algorithms only: {text!r}")
    else:
        if not encr:
            raise LocalProtocolError(f"no encryption algorithm in proposal {text!r}")
        if aead and integ:
            raise LocalProtocolError(f"an AEAD proposal takes no integrity algorithm: {text!r}")
        if not aead and not integ:
            raise LocalProtocolError(f"no integrity algorithm in proposal {text!r}")
    if protocol == ProtocolId.IKE:
        if TransformType.PRF not in bucket:
            for t in integ:
                prf = PRF_FOR_INTEGRITY.get(t.transform_id)
                if prf is not None:
                    _add(bucket, Transform(TransformType.PRF, PrfId(prf)))
        if TransformType.PRF not in bucket:
            raise LocalProtocolError(f"a PRF is mandatory in IKE proposals: {text!r}")
        if TransformType.KE not in bucket:
            raise LocalProtocolError(f"a key exchange method is mandatory in IKE proposals: {text!r}")
        if TransformType.ESN in bucket:
            raise LocalProtocolError(f"ESN keywords apply to ESP/AH only: {text!r}")
    else:
        if TransformType.PRF in bucket:
            raise LocalProtocolError(f"a PRF applies to IKE proposals only: {text!r}")
        if TransformType.ESN not in bucket:
            bucket[TransformType.ESN] = [Transform(TransformType.ESN, EsnId.NO_ESN)]


def parse_proposals(text: str, protocol: ProtocolId, spi: bytes = b"") -> list[Proposal]:
    """Proposals numbered from 1, one per comma-separated item. `spi` goes into each (ESP/AH: 4 octets)."""
    if not isinstance(text, str):
        raise LocalProtocolError(f"proposals must be a string, not {type(text).__name__}")
    try:
        protocol = ProtocolId(protocol)
    except ValueError:
        raise LocalProtocolError(f"unknown protocol ID {protocol!r}") from None
    items = text.split(",")
    if not text.strip() or any(not item.strip() for item in items):
        raise LocalProtocolError(f"empty proposal in {text!r}")
    if len(items) > MAX_PROPOSALS:  # the wire codec neither builds nor accepts more
        raise LocalProtocolError(f"more than {MAX_PROPOSALS} proposals")
    return [_parse_one(item.strip(), protocol, i, spi) for i, item in enumerate(items, start=1)]


def _reverse(table: dict[str, int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for word, ident in table.items():
        out.setdefault(int(ident), word)
    return out


_ENCR_NAMES: dict[tuple[int, int | None], str] = {}
for _word, _value in ENCRYPTION.items():
    if _word not in ("aes", "camellia") and not _word.endswith(("gcm", "ccm", "gcm64", "gcm96", "gcm128", "ccm64", "ccm96", "ccm128")):
        _ENCR_NAMES.setdefault((int(_value[0]), _value[1]), _word)
_INTEG_NAMES = _reverse({k: v for k, v in INTEGRITY.items() if k not in ("sha", "sha2_256", "sha2_384", "sha2_512")})
_PRF_NAMES = _reverse(PRF)
_KE_NAMES = _reverse({k: v for k, v in KEY_EXCHANGE.items() if k not in ("curve25519", "curve448")})


def _transform_keyword(t: Transform) -> str:
    kind, ident = int(t.transform_type), int(t.transform_id)
    word: str | None = None
    if t.attributes:
        word = None
    elif kind == TransformType.ENCR:
        word = _ENCR_NAMES.get((ident, t.key_length))
    elif t.key_length is not None:
        word = None
    elif kind == TransformType.INTEG:
        word = _INTEG_NAMES.get(ident)
    elif kind == TransformType.PRF:
        word = _PRF_NAMES.get(ident)
    elif kind == TransformType.KE:
        word = _KE_NAMES.get(ident)
    elif kind == TransformType.ESN:
        word = {0: "noesn", 1: "esn"}.get(ident)
    elif 6 <= kind <= 12:
        method = "none" if ident == 0 else _KE_NAMES.get(ident)
        word = None if method is None else f"ke{kind - 5}_{method}"
    if word is None:
        keylen = "" if t.key_length is None else f"/{t.key_length}"
        word = f"unknown({kind}:{ident}{keylen})"
    return word


_RANK = {int(kind): rank for rank, kind in enumerate(_ORDER)}


def proposal_to_keywords(proposal: Proposal) -> str:
    """The strongSwan keyword form of one proposal (unknown transforms as `unknown(type:id)`).

    Canonical: keywords are grouped ENCR, INTEG, PRF, KE, ke1_..ke7_, ESN (unknown types last) whatever
    the wire order, keeping the order of alternatives within a type; so equal proposals read the same.
    """
    ordered = sorted(proposal.transforms, key=lambda t: _RANK.get(int(t.transform_type), len(_RANK)))
    return "-".join(_transform_keyword(t) for t in ordered)
