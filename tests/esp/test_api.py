"""The SA API: configuration, directions, sequence numbers, lifetimes, buffers, batches, UDP, threads, sockets."""

from __future__ import annotations

import socket
import struct
import threading
from array import array
from types import ModuleType

import pytest

from ikev2lib.esp import Lifetime, LifetimeState, Status, errors
from tests.esp.helpers import ipv4, ipv6, keymat, out_arrays, pack, pair

SPI = 0x1000


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(spi=0),
        dict(spi=255),
        dict(spi=2**32),
        dict(algorithm="aes128cbc"),
        dict(key=bytes(16)),
        dict(direction="sideways"),
        dict(mode="beet"),
        dict(replay_window=2**21),
        dict(replay_window=-1),
        dict(udp_encap=(4500,)),
        dict(udp_encap=(0, 4500)),
        dict(lifetime=Lifetime(hard_packets=-1)),
    ],
)
def test_bad_configuration_is_refused(backend: ModuleType, kwargs: dict) -> None:
    args = dict(spi=SPI, algorithm="aes128gcm16", key=keymat("aes128gcm16"), direction="inbound", mode="tunnel")
    args.update(kwargs)
    with pytest.raises(errors.EspUsageError):
        backend.EspSA(**args)


def test_repr_hides_key(backend: ModuleType) -> None:
    sa = backend.EspSA(SPI, "aes256gcm16", keymat("aes256gcm16"), "outbound")
    assert keymat("aes256gcm16")[:8].hex() not in repr(sa)
    assert "0x00001000" in repr(sa)


@pytest.mark.parametrize("alias, icv", [("aes128gcm", 16), ("aes128gcm128", 16), ("aes128gcm64", 8),
                                        ("aes256gcm96", 12), ("AES256GCM16", 16)])  # fmt: skip
def test_strongswan_keyword_aliases(backend: ModuleType, alias: str, icv: int) -> None:
    bits = 256 if "256" in alias else 128
    sa = backend.EspSA(SPI, alias, bytes(bits // 8 + 4), "outbound")
    assert sa.icv_length == icv


def test_direction_is_enforced(backend: ModuleType) -> None:
    out, inb = pair(backend)
    with pytest.raises(errors.EspUsageError):
        inb.encap(ipv4())
    with pytest.raises(errors.EspUsageError):
        out.decap(out.encap(ipv4()))


def test_mode_rules(backend: ModuleType) -> None:
    tun_out, tun_in = pair(backend)
    with pytest.raises(errors.EspMalformedError):
        tun_out.encap(b"\x55not an ip packet at all........")
    with pytest.raises(errors.EspUsageError):
        tun_out.encap(ipv4(), next_header=17)
    assert tun_in.decap(tun_out.encap(ipv6()))[0] == 41
    tr_out, tr_in = pair(backend, mode="transport", spi=0x2000)
    with pytest.raises(errors.EspUsageError):
        tr_out.encap(b"udp datagram")
    with pytest.raises(errors.EspUsageError):
        tr_out.encap(b"udp datagram", next_header=17, tfc_padding=4)
    assert tr_in.decap(tr_out.encap(b"", next_header=17)) == (17, b"")
    assert tr_in.decap(tr_out.encap(b"udp datagram", next_header=17)) == (17, b"udp datagram")


def test_iv_is_the_sequence_number(backend: ModuleType) -> None:
    out, _ = pair(backend, esn=True)
    out.advance_sequence(2**40 + 7)
    pkt = out.encap(ipv4())
    assert pkt[4:8] == (7).to_bytes(4, "big")  # low half on the wire
    assert pkt[8:16] == (2**40 + 7).to_bytes(8, "big")
    assert out.next_sequence == 2**40 + 8


@pytest.mark.parametrize("esn, top", [(False, 2**32 - 1), (True, 2**64 - 1)])
def test_sequence_overflow(backend: ModuleType, esn: bool, top: int) -> None:
    out, inb = pair(backend, esn=esn)
    out.advance_sequence(top - 1)
    inb.advance_sequence(top - 1)
    inb.decap(out.encap(ipv4()))
    inb.decap(out.encap(ipv4()))  # the last number, top, is still used
    with pytest.raises(errors.SequenceOverflowError):
        out.encap(ipv4())
    with pytest.raises(errors.SequenceOverflowError):
        out.encap(ipv4())
    assert out.stats.drops == {"sequence_overflow": 2}
    assert inb.highest_sequence == top


def test_sequence_only_moves_forward(backend: ModuleType) -> None:
    out, inb = pair(backend)
    out.advance_sequence(100)
    with pytest.raises(errors.EspUsageError):
        out.advance_sequence(99)
    with pytest.raises(errors.EspUsageError):
        out.advance_sequence(2**32)  # beyond a 32-bit space
    inb.advance_sequence(100)
    inb.decap(out.encap(ipv4()))
    with pytest.raises(errors.EspUsageError):
        inb.advance_sequence(50)


def test_a_sequence_limit_stops_sending_until_it_is_raised(backend: ModuleType) -> None:
    """What an HA standby would start at is never used here (ikev2lib.gateway.ha)."""
    out, inb = pair(backend)
    out.limit_sequence(3)
    for _ in range(3):
        inb.decap(out.encap(ipv4()))
    with pytest.raises(errors.SequenceOverflowError):
        out.encap(ipv4())
    assert out.next_sequence == 4  # the refused packet used no number
    out.limit_sequence(10)
    inb.decap(out.encap(ipv4()))
    out.limit_sequence(None)
    out.advance_sequence(2**32 - 1)
    inb.decap(out.encap(ipv4()))  # no limit: the whole space again
    with pytest.raises(errors.EspUsageError):
        inb.limit_sequence(5)
    with pytest.raises(errors.EspUsageError):
        out.limit_sequence(0)


def test_lifetimes(backend: ModuleType) -> None:
    out, inb = pair(backend, lifetime=Lifetime(soft_packets=2, hard_packets=3, soft_bytes=10**6))
    assert out.lifetime_state is LifetimeState.OK
    for _ in range(2):
        inb.decap(out.encap(ipv4()))
    assert out.soft_expired and not out.hard_expired and inb.lifetime_state is LifetimeState.SOFT
    last = out.encap(ipv4())
    assert out.hard_expired
    with pytest.raises(errors.EspLifetimeExpiredError):
        out.encap(ipv4())
    inb.decap(last)
    assert inb.hard_expired
    with pytest.raises(errors.EspLifetimeExpiredError):
        inb.decap(last)  # refused before anything else (even before the replay check)
    assert out.stats.drops == {"hard_expired": 1}


def test_byte_lifetime(backend: ModuleType) -> None:
    out, _ = pair(backend, lifetime=Lifetime(soft_bytes=50, hard_bytes=100))
    out.encap(ipv4(bytes(40)))  # 60 inner bytes
    assert out.soft_expired and not out.hard_expired
    out.encap(ipv4(bytes(40)))
    assert out.hard_expired and out.stats.bytes == 120


def test_into_buffers(backend: ModuleType) -> None:
    out, inb = pair(backend)
    inner = ipv4(b"z" * 100)
    size = out.encap_size(len(inner))
    with pytest.raises(errors.EspBufferTooSmallError):
        out.encap_into(inner, bytearray(size - 1))
    buf = bytearray(size + 10)
    n = out.encap_into(memoryview(inner), buf)
    assert n == size
    small = bytearray(10)
    with pytest.raises(errors.EspBufferTooSmallError):
        inb.decap_into(bytes(buf[:n]), small)
    assert inb.highest_sequence == 0
    dst = bytearray(2000)
    assert inb.decap_into(buf[:n], dst) == (4, len(inner))
    assert dst[: len(inner)] == inner


def test_stats(backend: ModuleType) -> None:
    out, inb = pair(backend)
    pkts = [out.encap(ipv4(bytes(i))) for i in range(3)]
    for p in pkts + pkts[:1]:
        try:
            inb.decap(p)
        except errors.EspReplayError:
            pass
    s = inb.stats
    assert (s.packets, s.bytes, dict(s.drops)) == (3, 3 * 20 + 3, {"replayed": 1})
    assert out.stats.packets == 3


def test_encap_and_decap_batch(backend: ModuleType) -> None:
    out1, in1 = pair(backend, spi=0x1111)
    out2, in2 = pair(backend, "chacha20poly1305", spi=0x2222)
    inners = [ipv4(bytes([i]) * i) for i in range(10)]
    buf, offs, lens = pack(inners)
    offs.append(len(buf))
    lens.append(5)  # outside the buffer
    o_buf, o_offs, o_lens, _, sts = out_arrays(11, 64 * 1024)
    assert out1.encap_batch(buf, offs, lens, o_buf, o_offs, o_lens, sts) == 10
    assert list(sts) == [0] * 10 + [Status.INVALID]
    frames = [bytes(o_buf[o : o + n]) for o, n in zip(o_offs[:10], o_lens[:10])]
    assert frames[3] == bytes(o_buf[o_offs[3] : o_offs[3] + o_lens[3]]) and o_offs[1] == o_lens[0]
    other = out2.encap(ipv4(b"other"))
    stranger = pair(backend, spi=0x3333)[0].encap(ipv4())
    corrupt = bytearray(frames[5])
    corrupt[20] ^= 4
    wire = frames[:5] + [other, frames[0], stranger, bytes(corrupt), b"\x00\x00"] + frames[5:]
    from ikev2lib.esp import backends

    table = {"c": backends()["c"], "python": backends()["python"]}[backend.BACKEND].SATable([in2, in1])
    w_buf, w_offs, w_lens = pack(wire)
    d_buf, d_offs, d_lens, nhs, d_sts = out_arrays(len(wire), 64 * 1024)
    ok = table.decap_batch(w_buf, w_offs, w_lens, d_buf, d_offs, d_lens, nhs, d_sts)
    expected = [0] * 6 + [Status.REPLAYED, Status.UNKNOWN_SPI, Status.AUTH_FAILED, Status.MALFORMED] + [0] * 5
    assert list(d_sts) == expected and ok == 11
    got = [bytes(d_buf[o : o + n]) for o, n, s in zip(d_offs, d_lens, d_sts) if s == 0]
    assert got == inners[:5] + [ipv4(b"other")] + inners[5:]
    assert all(nh == 4 for nh, s in zip(nhs, d_sts) if s == 0)
    assert in1.stats.drops == {"replayed": 1, "auth_failed": 1} and in2.stats.packets == 1
    assert table.drops == {"unknown_spi": 1, "malformed": 1}  # refused before any SA was involved


def test_batch_output_too_small(backend: ModuleType) -> None:
    out, _ = pair(backend)
    buf, offs, lens = pack([ipv4(bytes(100))] * 3)
    o_buf, o_offs, o_lens, _, sts = out_arrays(3, out.encap_size(120) * 2)
    assert out.encap_batch(buf, offs, lens, o_buf, o_offs, o_lens, sts) == 2
    assert list(sts) == [0, 0, Status.BUFFER_TOO_SMALL]
    assert out.next_sequence == 3  # the refused packet used no sequence number


def test_sa_table_rules(backend: ModuleType) -> None:
    out, inb = pair(backend)
    with pytest.raises(errors.EspUsageError):
        backend.SATable([out])
    with pytest.raises(errors.EspUsageError):
        backend.SATable([inb, pair(backend)[1]])  # duplicate SPI
    udp_in = pair(backend, spi=0x4444, udp_encap=(4500, 4500))[1]
    with pytest.raises(errors.EspUsageError):
        backend.SATable([inb, udp_in])


def test_udp_encapsulation_and_demux(backend: ModuleType) -> None:
    out, inb = pair(backend, udp_encap=(4500, 4501))
    frame = out.encap(ipv4())
    assert struct.unpack("!HHHH", frame[:8]) == (4500, 4501, len(frame), 0)
    assert inb.decap(frame) == (4, ipv4())
    assert backend.udp_classify(frame[8:]) == 2
    assert backend.udp_classify(b"\xff") == 0
    assert backend.udp_classify(bytes(4) + b"IKE header...") == 1
    assert backend.udp_classify(b"\x01\x02") == 3
    for payload in (b"\xff", bytes(4) + b"x" * 40):
        with pytest.raises(errors.EspNotEspError):
            inb.decap(struct.pack("!HHHH", 4500, 4500, 8 + len(payload), 0) + payload)
    with pytest.raises(errors.EspMalformedError):
        inb.decap(frame[:-1])  # UDP length no longer matches
    assert inb.stats.drops == {"malformed": 1}  # IKE and keepalives are not drops
    table = backend.SATable([pair(backend, spi=0x5000, udp_encap=(4500, 4500))[1]])
    w_buf, w_offs, w_lens = pack([struct.pack("!HHHH", 1, 2, 9, 0) + b"\xff", frame])
    d = out_arrays(2, 4096)
    table.decap_batch(w_buf, w_offs, w_lens, *d[:3], d[4], d[3])
    assert list(d[3]) == [Status.NOT_ESP, Status.UNKNOWN_SPI]


def test_one_sa_from_many_threads_never_reuses_a_sequence_number(backend: ModuleType) -> None:
    out, _ = pair(backend)
    seqs: list[list[int]] = [[] for _ in range(4)]

    def work(i: int) -> None:
        for _ in range(300):
            seqs[i].append(int.from_bytes(out.encap(ipv4())[8:16], "big"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    flat = sorted(s for part in seqs for s in part)
    assert flat == list(range(1, 1201))


def test_batches_on_two_sas_in_two_threads(backend: ModuleType) -> None:
    results: dict[int, list[bytes]] = {}

    def work(spi: int) -> None:
        out, inb = pair(backend, spi=spi)
        inners = [ipv4(bytes([spi & 0xFF]) * 50)] * 64
        got: list[bytes] = []
        for _ in range(5):
            buf, offs, lens = pack(inners)
            o = out_arrays(64, 64 * 200)
            out.encap_batch(buf, offs, lens, o[0], o[1], o[2], o[4])
            frames = [bytes(o[0][a : a + n]) for a, n in zip(o[1], o[2])]
            w = pack(frames)
            d = out_arrays(64, 64 * 200)
            backend.SATable([inb]).decap_batch(*w, d[0], d[1], d[2], d[3], d[4])
            got += [bytes(d[0][a : a + n]) for a, n in zip(d[1], d[2])]
        results[spi] = got

    threads = [threading.Thread(target=work, args=(spi,)) for spi in (0x7001, 0x7002)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for spi in (0x7001, 0x7002):
        assert results[spi] == [ipv4(bytes([spi & 0xFF]) * 50)] * 320


def test_udp_socket_batches_over_loopback(backend: ModuleType) -> None:
    out, inb = pair(backend, udp_encap=(4500, 4500))
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        tx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 2, 0))  # bounded wait
        tx.connect(rx.getsockname())
        inners = [ipv4(bytes([i]) * 30) for i in range(20)]
        buf, offs, lens = pack(inners)
        o = out_arrays(20, 20 * 200)
        out.encap_batch(buf, offs, lens, o[0], o[1], o[2], o[4])
        assert backend.send_batch(tx.fileno(), o[0], o[1], o[2], skip=8) == 20  # the kernel adds UDP
        slot = 2048
        rbuf, r_offs, r_lens = bytearray(32 * slot), array("I", bytes(4 * 32)), array("I", bytes(4 * 32))
        got = 0
        while got < 20:
            n = backend.recv_batch(rx.fileno(), rbuf, slot, r_offs, r_lens, udp_header=True)
            assert n > 0
            for a, b in zip(r_offs[:n], r_lens[:n]):
                frame = bytes(rbuf[a : a + b])
                assert struct.unpack("!HH", frame[:4]) == (tx.getsockname()[1], rx.getsockname()[1])
                assert inb.decap(frame)[1] == inners[got]
                got += 1
    finally:
        rx.close()
        tx.close()


def test_raw_esp_socket_over_loopback(backend: ModuleType) -> None:
    out, inb = pair(backend)
    rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ESP)
    tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ESP)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 2, 0))
        tx.connect(("127.0.0.1", 0))
        inners = [ipv4(bytes([i]) * 10) for i in range(8)]
        frames = [out.encap(x) for x in inners]
        assert backend.send_batch(tx.fileno(), *pack(frames)) == 8
        slot = 2048
        rbuf, r_offs, r_lens = bytearray(8 * slot), array("I", bytes(32)), array("I", bytes(32))
        seen: list[bytes] = []
        while len(seen) < 8:
            n = backend.recv_batch(rx.fileno(), rbuf, slot, r_offs, r_lens, strip_ipv4=True)
            assert n > 0
            seen += [inb.decap(rbuf[a : a + b])[1] for a, b in zip(r_offs[:n], r_lens[:n])]
        assert seen == inners
    finally:
        rx.close()
        tx.close()


def test_packet_batch_helper(backend: ModuleType) -> None:
    from ikev2lib.esp.batch import PacketBatch

    out, inb = pair(backend, udp_encap=(4500, 4500))
    inners = [ipv4(bytes(i)) for i in range(50)]
    enc = PacketBatch.from_packets(inners).encap(out)
    assert all(enc.status(i) is Status.OK for i in range(50))
    frames = [bytes(p) for p in enc.ok_packets()]
    frames.insert(3, frames[2])  # a replay
    dec = PacketBatch.from_packets(frames).decap(backend.SATable([inb]))
    assert dec.status(3) is Status.REPLAYED
    assert [bytes(p) for p in dec.ok_packets()] == inners


def test_reinitializing_an_sa_is_refused(backend: ModuleType) -> None:
    out, _ = pair(backend)
    out.encap(ipv4())
    with pytest.raises(errors.EspUsageError):
        out.__init__(SPI, "aes128gcm16", keymat("aes128gcm16"), "outbound")  # would restart the IVs
    assert out.next_sequence == 2


def test_unconfigured_core_objects_do_not_crash(c_backend: ModuleType) -> None:
    from ikev2lib import _esp_fast

    raw = _esp_fast.CoreSA()
    for call in (lambda: raw.encap(b"x"), lambda: raw.decap(b"x" * 40), lambda: raw.next_sequence,
                 lambda: raw.advance_sequence(5), lambda: raw._counts()):  # fmt: skip
        with pytest.raises(errors.EspUsageError):
            call()
    table = _esp_fast.CoreSATable()
    with pytest.raises(errors.EspUsageError):
        table.decap_batch(*pack([b"x" * 40]), *out_arrays(1, 100)[:3], bytearray(1), bytearray(1))


def test_sa_cannot_be_copied_or_pickled(backend: ModuleType) -> None:
    import copy
    import pickle

    sa = backend.EspSA(0x1000, "aes128gcm16", bytes(20), "outbound")
    for duplicate in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(errors.EspUsageError):
            duplicate(sa)


@pytest.mark.parametrize("key", [20, "x" * 20])
def test_key_must_be_bytes_like(backend: ModuleType, key: object) -> None:
    with pytest.raises(errors.EspUsageError):
        backend.EspSA(0x1000, "aes128gcm16", key, "outbound")


def test_batch_buffer_holds_cbc_worst_case(backend: ModuleType) -> None:
    from ikev2lib.esp.batch import PacketBatch

    inner = bytes([0x45, 0, 0, 100]) + bytes(96)
    sa = backend.EspSA(0x1000, "aes256-sha512", bytes(96), "outbound")
    result = PacketBatch.from_packets([inner] * 10).encap(sa)
    assert list(result.statuses) == [0] * 10
