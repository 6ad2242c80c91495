"""Key exchange groups: RFC 5903 / RFC 7748 vectors, RFC 3526 primes, peer-value validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib.crypto import KEM_GROUPS, SUPPORTED_GROUPS, KeyExchange, public_length, response_length
from ikev2lib.crypto.groups import GROUPS
from ikev2lib.exceptions import LocalProtocolError, RemoteProtocolError

INVALID_SYNTAX = 7

# RFC 5903 section 8: (group, i, g^i x||y or None, r, g^r x||y or None, g^ir x).
RFC5903 = [
    (  # 8.1, 256-bit random ECP group
        19,
        "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
        "DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180"
        "5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3",
        "C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53",
        "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63"
        "56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB",
        "D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE",
    ),
    (  # 8.2, 384-bit random ECP group
        20,
        "099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655E35B538041E649EE3FAEF896783AB194",
        "667842D7D180AC2CDE6F74F37551F55755C7645C20EF73E31634FE72B4C55EE6DE3AC808ACB4BDB4C88732AEE95F41AA"
        "9482ED1FC0EEB9CAFC4984625CCFC23F65032149E0E144ADA024181535A0F38EEB9FCFF3C2C947DAE69B4C634573A81C",
        "41CB0779B4BDB85D47846725FBEC3C9430FAB46CC8DC5060855CC9BDA0AA2942E0308312916B8ED2960E4BD55A7448FC",
        "E558DBEF53EECDE3D3FCCFC1AEA08A89A987475D12FD950D83CFA41732BC509D0D1AC43A0336DEF96FDA41D0774A3571"
        "DCFBEC7AACF3196472169E838430367F66EEBE3C6E70C416DD5F0C68759DD1FFF83FA40142209DFF5EAAD96DB9E6386C",
        "11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4D603135569B9E9D09CF5D4A270F59746",
    ),
    (  # 8.3, 521-bit random ECP group (public values checked by agreement below)
        21,
        "0037ADE9319A89F4DABDB3EF411AACCCA5123C61ACAB57B5393DCE47608172A095AA85A30FE1C2952C6771D937BA9777"
        "F5957B2639BAB072462F68C27A57382D4A52",
        None,
        "0145BA99A847AF43793FDD0E872E7CDFA16BE30FDC780F97BCCC3F078380201E9C677D600B343757A3BDBF2A3163E4C2"
        "F869CCA7458AA4A4EFFC311F5CB151685EB9",
        None,
        "01144C7D79AE6956BC8EDB8E7C787C4521CB086FA64407F97894E5E6B2D79B04D1427E73CA4BAA240A34786859810C06"
        "B3C715A3A8CC3151F2BEE417996D19F3DDEA",
    ),
]


@pytest.mark.parametrize("group,i,gi,r,gr,gir", RFC5903)
def test_rfc5903_ecp_vectors(group: int, i: str, gi: str | None, r: str, gr: str | None, gir: str) -> None:
    ki = KeyExchange.from_private_bytes(group, bytes.fromhex(i))
    kr = KeyExchange.from_private_bytes(group, bytes.fromhex(r))
    # RFC 5903 section 7: KE data = x || y, fixed length, no point-format octet.
    assert len(ki.public_bytes()) == public_length(group)
    if gi is not None and gr is not None:
        assert ki.public_bytes() == bytes.fromhex(gi)
        assert kr.public_bytes() == bytes.fromhex(gr)
    assert ki.shared_secret(kr.public_bytes()) == bytes.fromhex(gir)
    assert kr.shared_secret(ki.public_bytes()) == bytes.fromhex(gir)


# RFC 7748 section 6.1 (X25519) and 6.2 (X448): Alice's and Bob's keys and the shared secret.
RFC7748 = [
    (
        31,
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
        "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
    ),
    (
        32,
        "9a8f4925d1519f5775cf46b04b5800d4ee9ee8bae8bc5565d498c28dd9c9baf574a9419744897391006382a6f127ab1d9ac2d8c0a598726b",
        "9b08f7cc31b7e3e67d22d5aea121074a273bd2b83de09c63faa73d2c22c5d9bbc836647241d953d40c5b12da88120d53177f80e532c41fa0",
        "1c306a7ac2a0e2e0990b294470cba339e6453772b075811d8fad0d1d6927c120bb5ee8972b0d3e21374c9c921b09d1b0366f10b65173992d",
        "3eb7a829b0cd20f5bcfc0b599b6feccf6da4627107bdb0d4f345b43027d8b972fc3e34fb4232a13ca706dcb57aec3dae07bdc1c67bf33609",
        "07fff4181ac6cc95ec1c16a94a0f74d12da232ce40a77552281d282bb60c0b56fd2464c335543936521c24403085d59a449a5037514a879d",
    ),
]


@pytest.mark.parametrize("group,a,a_pub,b,b_pub,shared", RFC7748)
def test_rfc7748_vectors(group: int, a: str, a_pub: str, b: str, b_pub: str, shared: str) -> None:
    alice = KeyExchange.from_private_bytes(group, bytes.fromhex(a))
    bob = KeyExchange.from_private_bytes(group, bytes.fromhex(b))
    assert alice.public_bytes().hex() == a_pub
    assert bob.public_bytes().hex() == b_pub
    assert alice.shared_secret(bytes.fromhex(b_pub)).hex() == shared
    assert bob.shared_secret(bytes.fromhex(a_pub)).hex() == shared


def _pi_fixed(bits: int) -> int:
    """floor(pi * 2**bits), by Machin's formula in integers (independent of the embedded primes)."""
    guard = 64
    one = 1 << (bits + guard)

    def arctan_inv(x: int) -> int:
        total, term, n, sign = 0, one // x, 1, 1
        x2 = x * x
        while term:
            total += sign * (term // n)
            term //= x2
            n += 2
            sign = -sign
        return total

    return (16 * arctan_inv(5) - 4 * arctan_inv(239)) >> guard


# RFC 3526: p = 2^N - 2^(N-64) - 1 + 2^64 * ( [2^(N-130) pi] + k ), sections 3..7.
RFC3526 = [(14, 2048, 124476), (15, 3072, 1690314), (16, 4096, 240904), (17, 6144, 929484), (18, 8192, 4743158)]


@pytest.mark.parametrize("group,bits,k", RFC3526)
def test_modp_primes_follow_rfc3526_formula(group: int, bits: int, k: int) -> None:
    p = 2**bits - 2 ** (bits - 64) - 1 + 2**64 * (_pi_fixed(bits - 130) + k)
    assert GROUPS[group].prime == p
    assert public_length(group) == bits // 8


@pytest.mark.parametrize("group", SUPPORTED_GROUPS)
def test_generated_pairs_agree(group: int) -> None:
    a, b = KeyExchange.generate(group), KeyExchange.generate(group)
    assert len(a.public_bytes()) == public_length(group)
    assert a.public_bytes() != b.public_bytes()
    secret = a.shared_secret(b.public_bytes())
    assert secret == b.shared_secret(a.public_bytes())
    assert len(secret) == GROUPS[group].secret_length


def test_modp_secret_keeps_leading_zeros() -> None:
    # g^ir is fixed length (RFC 7296 2.14). With x = 1 on our side, g^ir = y_peer; choose a peer
    # value with a zero leading octet so a non-padding implementation would return 255 octets.
    me = KeyExchange.from_private_bytes(14, b"\x01")
    peer_value = (3).to_bytes(256, "big")
    assert me.shared_secret(peer_value) == peer_value


@pytest.mark.parametrize("group", [14, 15])
def test_modp_peer_range_is_checked(group: int) -> None:
    me = KeyExchange.generate(group)
    p = GROUPS[group].prime
    size = public_length(group)
    for bad in (0, 1, p - 1, p, p + 1, 2 ** (8 * size) - 1):
        with pytest.raises(RemoteProtocolError) as err:
            me.shared_secret(bad.to_bytes(size, "big"))
        assert err.value.notify == INVALID_SYNTAX
    assert len(me.shared_secret((2).to_bytes(size, "big"))) == size


@pytest.mark.parametrize("group", SUPPORTED_GROUPS)
def test_wrong_length_is_invalid_syntax(group: int) -> None:
    me = KeyExchange.generate(group)
    good = KeyExchange.generate(group).public_bytes()
    for bad in (b"", good[:-1], good + b"\x00", b"\x04" + good):
        with pytest.raises(RemoteProtocolError) as err:
            me.shared_secret(bad)
        assert err.value.notify == INVALID_SYNTAX


@pytest.mark.parametrize("group", [19, 20, 21])
def test_ecp_point_not_on_curve(group: int) -> None:
    me = KeyExchange.generate(group)
    good = bytearray(KeyExchange.generate(group).public_bytes())
    good[-1] ^= 1  # y + 1 (or - 1): off the curve
    for bad in (bytes(good), bytes(public_length(group))):
        with pytest.raises(RemoteProtocolError):
            me.shared_secret(bad)


@pytest.mark.parametrize("group", [31, 32])
def test_low_order_points_give_an_error_not_a_zero_secret(group: int) -> None:
    # RFC 8031 section 2.3 / RFC 7748 section 6: an all-zero result must be refused.
    me = KeyExchange.generate(group)
    size = public_length(group)
    for u in (0, 1):
        with pytest.raises(RemoteProtocolError):
            me.shared_secret(u.to_bytes(size, "little"))


def test_unsupported_group_is_a_local_error() -> None:
    for group in (1, 2, 5, 22, 99):
        with pytest.raises(LocalProtocolError):
            KeyExchange.generate(group)
        with pytest.raises(LocalProtocolError):
            public_length(group)


def test_repr_does_not_show_key() -> None:
    kex = KeyExchange.generate(31)
    assert repr(kex) == "KeyExchange(group=31)"


@settings(max_examples=80, deadline=None)
@given(group=st.sampled_from([14, 19, 20, 21, 31, 32]), data=st.data())
def test_hostile_peer_values_give_typed_errors_only(group: int, data: st.DataObject) -> None:
    me = _CACHED.setdefault(group, KeyExchange.generate(group))
    size = public_length(group)
    peer = data.draw(st.one_of(st.binary(min_size=size, max_size=size), st.binary(max_size=size + 8)))
    try:
        secret = me.shared_secret(peer)
    except RemoteProtocolError as exc:
        assert exc.notify == INVALID_SYNTAX
    else:
        assert len(secret) == GROUPS[group].secret_length and any(secret)


_CACHED: dict[int, KeyExchange] = {}


# ML-KEM (FIPS 203) as an IKEv2 key exchange method (draft-ietf-ipsecme-ikev2-mlkem): the
# initiator sends the encapsulation key, the responder the ciphertext; the secret is 32 octets.
@pytest.mark.parametrize("group,ek_len,ct_len", [(36, 1184, 1088), (37, 1568, 1568)])
def test_mlkem_round_trip(group: int, ek_len: int, ct_len: int) -> None:
    assert group in KEM_GROUPS and group not in SUPPORTED_GROUPS
    initiator = KeyExchange.generate(group)
    assert len(initiator.public_bytes()) == public_length(group) == ek_len
    responder, secret = KeyExchange.respond(group, initiator.public_bytes())
    assert len(responder.public_bytes()) == response_length(group) == ct_len
    assert initiator.shared_secret(responder.public_bytes()) == secret and len(secret) == 32
    with pytest.raises(LocalProtocolError):
        responder.shared_secret(initiator.public_bytes())


@pytest.mark.parametrize("group", [36, 37])
def test_mlkem_bad_inputs(group: int) -> None:
    initiator = KeyExchange.generate(group)
    ek = initiator.public_bytes()
    for bad in (ek[:-1], ek + b"\x00", b""):
        with pytest.raises(RemoteProtocolError):
            KeyExchange.respond(group, bad)
    # Coefficients >= q = 3329 fail the FIPS 203 7.2 encapsulation key check.
    with pytest.raises(RemoteProtocolError):
        KeyExchange.respond(group, b"\xff" * (len(ek) - 32) + ek[-32:])
    responder, secret = KeyExchange.respond(group, ek)
    ct = bytearray(responder.public_bytes())
    with pytest.raises(RemoteProtocolError):
        initiator.shared_secret(bytes(ct[:-1]))
    ct[0] ^= 1  # implicit rejection: a different secret, no exception
    assert initiator.shared_secret(bytes(ct)) != secret


def test_mlkem_from_seed_is_deterministic() -> None:
    seed = bytes(range(64))
    a, b = KeyExchange.from_private_bytes(36, seed), KeyExchange.from_private_bytes(36, seed)
    assert a.public_bytes() == b.public_bytes()
    with pytest.raises(LocalProtocolError):
        KeyExchange.from_private_bytes(36, seed[:63])


@pytest.mark.parametrize("group", [14, 19, 31, 32])
def test_respond_works_for_dh_groups(group: int) -> None:
    initiator = KeyExchange.generate(group)
    responder, secret = KeyExchange.respond(group, initiator.public_bytes())
    assert initiator.shared_secret(responder.public_bytes()) == secret
    assert response_length(group) == public_length(group)
