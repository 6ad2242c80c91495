"""Ethernet frames of the AF_XDP path (esp_frame.c) against scapy, both ways.

Frames that scapy builds (Ether / Dot1Q / Dot1AD / IP with options / IPv6 / UDP, around real ESP packets
from the C core) must classify to the fields scapy put there, and the ESP bytes found must decrypt;
frames that esp_frame_build writes must dissect in scapy to the same addresses, ports and payload, with
the checksums scapy recomputes. Hypothesis throws arbitrary bytes, mutated frames and every truncation at
the parser, and random parameters at the builder.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP, IPOption_NOP, IPOption_RR, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

from ikev2lib import _esp_fast
from ikev2lib.esp import EspUsageError, backends
from tests.esp.helpers import ipv4, keymat

SPI = 0x0A0B0C0D
ALG = "aes128gcm16"
MAC_PEER, MAC_US = "02:00:00:00:00:0b", "02:00:00:00:00:0a"
ADDRS = {4: ("192.0.2.1", "198.51.100.7"), 6: ("2001:db8::1", "2001:db8:ff::2")}
VERDICTS = {"ESP_RAW", "ESP_UDP", "PASS", "DROP"}
NATT = 4500
ETH_MIN_FRAME = 60  # without FCS

_settings = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sa_pair() -> tuple[Any, Any]:
    c = backends()["c"]
    key = keymat(ALG)
    return c.EspSA(SPI, ALG, key, "outbound", "tunnel"), c.EspSA(SPI, ALG, key, "inbound", "tunnel")


def _addr(family: int, text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6, text)


def _l3(family: int, **kw: Any) -> Packet:
    src, dst = ADDRS[family]
    return IP(src=src, dst=dst, **kw) if family == 4 else IPv6(src=src, dst=dst, **kw)


def _ether(tags: list[Packet]) -> Packet:
    p: Packet = Ether(src=MAC_PEER, dst=MAC_US)
    for tag in tags:
        p = p / tag
    return p


def _esp_frame(family: int, udp: bool, tags: list[Packet], esp: bytes, **ip: Any) -> Packet:
    l4: Packet = UDP(sport=40000, dport=NATT) / Raw(esp) if udp else Raw(esp)
    layer = _l3(family, **ip) if udp else _l3(family, **({"proto": 50} if family == 4 else {"nh": 50}), **ip)
    return _ether(tags) / layer / l4


def _ip_end(frame: bytes, info: dict[str, Any]) -> int:
    """Where the IP packet ends, from its header (the parser was told nothing else)."""
    l3 = info["l3_offset"]
    if info["family"] == 4:
        return l3 + int.from_bytes(frame[l3 + 2 : l3 + 4], "big")
    return l3 + 40 + int.from_bytes(frame[l3 + 4 : l3 + 6], "big")


def _check_invariants(frame: bytes, info: dict[str, Any]) -> None:
    assert info["verdict"] in VERDICTS
    assert (info["reason"] is None) == (info["verdict"] != "DROP")
    assert len(info["src"]) == len(info["dst"]) == {0: 0, 4: 4, 6: 16}[info["family"]]
    if info["verdict"] in ("ESP_RAW", "ESP_UDP"):
        off, n = info["esp_offset"], info["esp_len"]
        assert info["family"] in (4, 6) and info["l3_offset"] < off
        assert n >= 8 and off + n <= _ip_end(frame, info) <= len(frame)
        assert info["spi"] == int.from_bytes(frame[off : off + 4], "big")
    else:
        assert info["esp_offset"] == info["esp_len"] == info["spi"] == 0


TAGS = {
    "untagged": [],
    "dot1q": [Dot1Q(vlan=10, prio=5)],
    "qinq": [Dot1AD(vlan=20), Dot1Q(vlan=4094)],
    "dot1q-dot1q": [Dot1Q(vlan=1), Dot1Q(vlan=2)],
}


# ---- scapy builds, we parse --------------------------------------------------------------------------


@pytest.mark.parametrize("tags", sorted(TAGS))
@pytest.mark.parametrize("udp", [False, True])
@pytest.mark.parametrize("family", [4, 6])
def test_scapy_frames_parse_to_their_fields_and_decrypt(family: int, udp: bool, tags: str) -> None:
    out, inbound = _sa_pair()
    inner = ipv4(b"payload of the tunnel" * 5)
    esp = out.encap(inner)
    pkt = _esp_frame(family, udp, TAGS[tags], esp)
    frame = bytes(pkt)
    info = _esp_fast._frame_parse(frame)
    _check_invariants(frame, info)
    l3 = 14 + 4 * len(TAGS[tags])
    assert info["verdict"] == ("ESP_UDP" if udp else "ESP_RAW") and info["reason"] is None
    assert info["family"] == family and info["l3_offset"] == l3
    assert info["src"] == _addr(family, ADDRS[family][0]) and info["dst"] == _addr(family, ADDRS[family][1])
    assert info["vlans"] == tuple(t.vlan for t in TAGS[tags])
    assert info["esp_offset"] == l3 + (20 if family == 4 else 40) + (8 if udp else 0)
    assert info["esp_len"] == len(esp) and info["spi"] == SPI
    assert (info["sport"], info["dport"]) == ((40000, NATT) if udp else (0, 0))
    got = frame[info["esp_offset"] : info["esp_offset"] + info["esp_len"]]
    assert got == esp
    assert inbound.decap(got) == (4, inner)


@pytest.mark.parametrize("udp", [False, True])
@pytest.mark.parametrize("options", [[IPOption_NOP()] * 4, [IPOption_RR(routers=["10.0.0.1", "10.0.0.2"])]])
def test_ipv4_options_are_skipped(udp: bool, options: list[Packet]) -> None:
    esp = SPI.to_bytes(4, "big") + bytes(range(60))
    pkt = _esp_frame(4, udp, [], esp, options=options)
    frame = bytes(pkt)
    info = _esp_fast._frame_parse(frame)
    ihl = Ether(frame)[IP].ihl * 4
    assert ihl > 20
    assert info["verdict"] == ("ESP_UDP" if udp else "ESP_RAW")
    assert info["esp_offset"] == 14 + ihl + (8 if udp else 0) and info["esp_len"] == len(esp)


@pytest.mark.parametrize("udp", [False, True])
@pytest.mark.parametrize("family", [4, 6])
def test_ethernet_padding_is_not_esp(family: int, udp: bool) -> None:
    esp = SPI.to_bytes(4, "big") + b"\x00\x00\x00\x01"  # the smallest ESP header
    frame = bytes(_esp_frame(family, udp, [], esp))
    padded = frame + b"\xa5" * max(ETH_MIN_FRAME - len(frame), 8)
    info = _esp_fast._frame_parse(padded)
    assert info["verdict"] == ("ESP_UDP" if udp else "ESP_RAW") and info["esp_len"] == len(esp)
    assert info == _esp_fast._frame_parse(frame)


@pytest.mark.parametrize(
    "pkt",
    [
        pytest.param(_ether([]) / _l3(4) / UDP(sport=500, dport=NATT) / (bytes(4) + b"IKE header..." * 3), id="ike-v4"),
        pytest.param(_ether([Dot1Q(vlan=7)]) / _l3(6) / UDP(sport=4500, dport=NATT) / (bytes(4) + b"IKE"), id="ike-v6"),
        pytest.param(_ether([]) / _l3(4) / UDP(sport=4500, dport=NATT) / b"\xff", id="keepalive-v4"),
        pytest.param(_ether([]) / _l3(6) / UDP(sport=4500, dport=NATT) / b"\xff", id="keepalive-v6"),
        pytest.param(_ether([]) / _l3(4) / UDP(sport=4500, dport=500) / (b"\x01" * 40), id="ike-port-500"),
        pytest.param(_ether([]) / _l3(4) / UDP(sport=53, dport=53) / (b"\x01" * 40), id="dns"),
        pytest.param(_ether([]) / _l3(6) / UDP(sport=4500, dport=4501) / (b"\x01" * 40), id="other-port-v6"),
        pytest.param(_ether([]) / ARP(psrc="192.0.2.1", pdst="192.0.2.2"), id="arp"),
        pytest.param(_ether([Dot1Q(vlan=3)]) / ARP(psrc="192.0.2.1", pdst="192.0.2.2"), id="arp-vlan"),
        pytest.param(_ether([]) / _l3(4, proto=6) / (b"\x00" * 20), id="tcp"),
        pytest.param(_ether([]) / _l3(6) / IPv6ExtHdrHopByHop() / Raw(SPI.to_bytes(4, "big") + bytes(20)),
                     id="v6-hop-by-hop"),
        pytest.param(_ether([]) / _l3(6) / IPv6ExtHdrFragment(nh=50, m=1) / Raw(SPI.to_bytes(4, "big") + bytes(20)),
                     id="v6-fragment"),
        pytest.param(_ether([Dot1AD(vlan=1), Dot1Q(vlan=2), Dot1Q(vlan=3)]) / _l3(4, proto=50) / Raw(bytes(40)),
                     id="three-tags"),
    ],
)
def test_what_is_not_ours_is_passed(pkt: Packet) -> None:
    info = _esp_fast._frame_parse(bytes(pkt))
    assert info["verdict"] == "PASS" and info["reason"] is None


@pytest.mark.parametrize("udp", [False, True])
def test_ipv4_fragments_are_passed_for_reassembly(udp: bool) -> None:
    esp = SPI.to_bytes(4, "big") + bytes(range(256)) * 4
    whole = _l3(4) / (UDP(sport=4500, dport=NATT) / Raw(esp) if udp else Raw(esp))
    if not udp:
        whole.proto = 50
    frags = fragment(whole, fragsize=400)
    assert len(frags) >= 3
    for frag in frags:
        info = _esp_fast._frame_parse(bytes(_ether([]) / frag))
        assert info["verdict"] == "PASS" and info["family"] == 4 and info["proto"] == (17 if udp else 50)


def test_drop_reasons() -> None:
    esp = SPI.to_bytes(4, "big") + bytes(40)
    good = bytes(_esp_frame(4, True, [], esp))
    cases = {
        "SHORT_L2": good[:13],
        "SHORT_L3": good[:14 + 19],
        "IP_VERSION": bytes(Ether(src=MAC_PEER, dst=MAC_US, type=0x0800) / _l3(6, nh=50) / Raw(esp)),
        "IP_CHECKSUM": bytes(_esp_frame(4, True, [], esp, chksum=0x1234)),
        "IP_LENGTH": bytes(_esp_frame(4, True, [], esp, len=200)),
        "IP_HDR_LEN": bytes(_esp_frame(4, True, [], esp, ihl=4)),
        "UDP_LENGTH": bytes(_ether([]) / _l3(4) / UDP(sport=4500, dport=NATT, len=200) / Raw(esp)),
        "ESP_SHORT": bytes(_ether([]) / _l3(4) / UDP(sport=4500, dport=NATT) / b"\x01\x02\x03\x04\x05"),
    }
    for reason, frame in cases.items():
        info = _esp_fast._frame_parse(frame)
        assert (info["verdict"], info["reason"]) == ("DROP", reason), reason
    info = _esp_fast._frame_parse(bytes(_ether([]) / _l3(6, nh=50) / b"\x01\x02\x03"))
    assert (info["verdict"], info["reason"]) == ("DROP", "ESP_SHORT")


def test_the_natt_port_is_configurable() -> None:
    frame = bytes(_ether([]) / _l3(4) / UDP(sport=4500, dport=4501) / Raw(SPI.to_bytes(4, "big") + bytes(20)))
    assert _esp_fast._frame_parse(frame)["verdict"] == "PASS"
    assert _esp_fast._frame_parse(frame, natt_port=4501)["verdict"] == "ESP_UDP"
    standard = bytes(_esp_frame(4, True, [], SPI.to_bytes(4, "big") + bytes(20)))
    assert _esp_fast._frame_parse(standard, natt_port=0)["verdict"] == "PASS"  # NAT-T off
    with pytest.raises(EspUsageError):
        _esp_fast._frame_parse(standard, natt_port=65536)


# ---- we build, scapy dissects --------------------------------------------------------------------------


def _recomputed(pkt: Packet, layer: type[Packet]) -> int:
    """The checksum scapy computes for `layer` of pkt from scratch."""
    copy = pkt.copy()
    del copy[layer].chksum
    return int(Ether(bytes(copy))[layer].chksum)


def _build(esp: bytes, family: int, udp: bool, vlan: int | None, **kw: Any) -> bytes:
    src, dst = (_addr(family, a) for a in ADDRS[family])
    return _esp_fast._frame_build(esp, family=family, src=src, dst=dst, dst_mac=bytes.fromhex("02000000000b"),
                                  src_mac=bytes.fromhex("02000000000a"), udp_ports=(4500, 61234) if udp else None,
                                  vlan_tci=vlan, **kw)  # fmt: skip


@pytest.mark.parametrize("vlan", [None, 0x2000 | 333])
@pytest.mark.parametrize("udp", [False, True])
@pytest.mark.parametrize("family", [4, 6])
def test_scapy_dissects_our_frames(family: int, udp: bool, vlan: int | None) -> None:
    out, inbound = _sa_pair()
    inner = ipv4(b"x" * 333)
    esp = out.encap(inner)
    frame = _build(esp, family, udp, vlan, ip_id=0xBEEF, tclass=0xB9, flow_label=0xABCDE)
    pkt = Ether(frame)
    assert pkt.dst == "02:00:00:00:00:0b" and pkt.src == "02:00:00:00:00:0a"
    if vlan is not None:
        assert pkt[Dot1Q].vlan == 333 and pkt[Dot1Q].prio == 1
    else:
        assert Dot1Q not in pkt
    if family == 4:
        ip = pkt[IP]
        assert (ip.src, ip.dst, ip.ttl, ip.id, ip.tos, ip.ihl) == (*ADDRS[4], 64, 0xBEEF, 0xB9, 5)
        assert ip.flags == "DF" and ip.frag == 0 and ip.len == len(frame) - (18 if vlan is not None else 14)
        assert ip.proto == (17 if udp else 50) and ip.chksum == _recomputed(pkt, IP)
    else:
        ip6 = pkt[IPv6]
        assert (ip6.src, ip6.dst, ip6.hlim, ip6.tc, ip6.fl) == (*ADDRS[6], 64, 0xB9, 0xABCDE)
        assert ip6.nh == (17 if udp else 50)
    if udp:
        u = pkt[UDP]
        assert (u.sport, u.dport, u.len) == (4500, 61234, 8 + len(esp))
        assert u.chksum == (0 if family == 4 else _recomputed(pkt, UDP))
        assert bytes(u.payload) == esp
    else:
        assert bytes((pkt[IP] if family == 4 else pkt[IPv6]).payload) == esp
    info = _esp_fast._frame_parse(frame, natt_port=61234)
    assert info["verdict"] == ("ESP_UDP" if udp else "ESP_RAW") and info["spi"] == SPI
    assert inbound.decap(frame[info["esp_offset"] : info["esp_offset"] + info["esp_len"]]) == (4, inner)


@_settings
@given(
    family=st.sampled_from([4, 6]),
    udp=st.booleans(),
    vlan=st.none() | st.integers(0, 0xFFFF),
    ports=st.tuples(st.integers(0, 0xFFFF), st.integers(1, 0xFFFF)),
    ip_id=st.integers(0, 0xFFFF),
    tclass=st.integers(0, 0xFF),
    flow_label=st.integers(0, 0xFFFFF),
    addrs=st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16)),
    spi=st.integers(1, 0xFFFFFFFF),
    body=st.binary(min_size=4, max_size=1500),
)
def test_build_parse_and_scapy_agree(family: int, udp: bool, vlan: int | None, ports: tuple[int, int], ip_id: int,
                                     tclass: int, flow_label: int, addrs: tuple[bytes, bytes], spi: int,
                                     body: bytes) -> None:  # fmt: skip
    alen = 4 if family == 4 else 16
    src, dst = addrs[0][:alen], addrs[1][:alen]
    esp = spi.to_bytes(4, "big") + body
    frame = _esp_fast._frame_build(esp, family=family, src=src, dst=dst, udp_ports=ports if udp else None,
                                   vlan_tci=vlan, ip_id=ip_id, tclass=tclass, flow_label=flow_label)  # fmt: skip
    info = _esp_fast._frame_parse(frame, natt_port=ports[1])
    _check_invariants(frame, info)
    l3 = 18 if vlan is not None else 14
    assert info["verdict"] == ("ESP_UDP" if udp else "ESP_RAW")
    assert (info["family"], info["src"], info["dst"], info["l3_offset"]) == (family, src, dst, l3)
    assert info["vlans"] == (() if vlan is None else (vlan & 0xFFF,))
    assert (info["esp_len"], info["spi"]) == (len(esp), spi)
    assert frame[info["esp_offset"] :] == esp
    if udp:
        assert (info["sport"], info["dport"]) == ports
    pkt = Ether(frame)
    layer = IP if family == 4 else IPv6
    assert socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6, pkt[layer].src) == src
    if family == 4:
        assert pkt[IP].chksum == _recomputed(pkt, IP)
    if udp and family == 6:
        assert pkt[UDP].chksum == _recomputed(pkt, UDP) != 0


def test_build_refuses_what_does_not_fit() -> None:
    esp = SPI.to_bytes(4, "big") + bytes(96)
    src, dst = _addr(4, ADDRS[4][0]), _addr(4, ADDRS[4][1])
    need = 14 + 20 + 8 + len(esp)
    assert len(_esp_fast._frame_build(esp, family=4, src=src, dst=dst, udp_ports=(1, 2), cap=need)) == need
    assert _esp_fast._frame_build(esp, family=4, src=src, dst=dst, udp_ports=(1, 2), cap=need - 1) == b""
    assert _esp_fast._frame_build(esp, family=4, src=src, dst=dst, cap=10) == b""
    most = bytes(65535 - 20)  # the IP length limit
    assert len(_esp_fast._frame_build(most, family=4, src=src, dst=dst)) == 14 + 65535
    assert _esp_fast._frame_build(most + b"\x00", family=4, src=src, dst=dst) == b""
    with pytest.raises(EspUsageError):
        _esp_fast._frame_build(esp, family=6, src=src, dst=dst)
    with pytest.raises(EspUsageError):
        _esp_fast._frame_build(esp, family=6, src=bytes(16), dst=bytes(16), flow_label=1 << 20)


# ---- hostile input ---------------------------------------------------------------------------------------


@_settings
@given(st.binary(max_size=300), st.integers(0, 0xFFFF))
def test_arbitrary_bytes_never_crash(data: bytes, natt_port: int) -> None:
    _check_invariants(data, _esp_fast._frame_parse(data, natt_port=natt_port))


def _valid_frames() -> list[bytes]:
    esp = SPI.to_bytes(4, "big") + bytes(range(50))
    frames = [bytes(_esp_frame(f, u, TAGS[t], esp)) for f in (4, 6) for u in (False, True) for t in TAGS]
    frames.append(bytes(_esp_frame(4, True, [], esp, options=[IPOption_NOP()] * 8)))
    return frames


VALID = _valid_frames()


@_settings
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6))
def test_mutated_frames_keep_the_invariants(frame: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(frame)
    for at, value in flips:
        data[at % len(data)] = value
    _check_invariants(bytes(data), _esp_fast._frame_parse(bytes(data)))


@pytest.mark.parametrize("frame", VALID)
def test_every_truncation_is_dropped(frame: bytes) -> None:
    full = _esp_fast._frame_parse(frame)
    assert full["verdict"] in ("ESP_RAW", "ESP_UDP")
    ip_end = _ip_end(frame, full)
    for cut in range(len(frame) + 1):
        info = _esp_fast._frame_parse(frame[:cut])
        _check_invariants(frame[:cut], info)
        if cut < ip_end:
            assert info["verdict"] == "DROP", cut
        else:
            assert info == full


# ---- batches over a UMEM-like area (frame_parse_batch, FrameTemplate.encap_batch) ------------------


def test_parse_batch_locates_esp_in_the_area_and_refuses_descriptors_outside_it() -> None:
    from array import array

    from ikev2lib import _esp_fast
    from ikev2lib.esp import EspSA, SATable

    out_sa = EspSA(0x4242, "aes128gcm16", bytes(range(20)), "outbound")
    table = SATable([EspSA(0x4242, "aes128gcm16", bytes(range(20)), "inbound")])
    inner = bytes(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=1, dport=2) / (b"x" * 50))
    esp = out_sa.encap(inner)
    frames = [bytes(Ether() / IP(src="192.0.2.1", dst="192.0.2.2", proto=50) / Raw(esp)),
              bytes(Ether() / Dot1Q(vlan=7) / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=4500, dport=4500)
                    / Raw(out_sa.encap(inner))),
              bytes(Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=500, dport=500) / Raw(b"ike"))]
    slot = 4096
    area = bytearray(slot * 8)
    for i, frame in enumerate(frames):
        area[i * slot:i * slot + len(frame)] = frame
    addrs = array("Q", [0, slot, 2 * slot, len(area) - 10, len(area) + 5, 2**63])
    lens = array("I", [len(frames[0]), len(frames[1]), len(frames[2]), 64, 1, 1])
    n = len(addrs)
    offs, esp_lens, verdicts, reasons = array("I", [0] * n), array("I", [0] * n), bytearray(n), bytearray(n)
    assert _esp_fast.frame_parse_batch(area, addrs, lens, n, offs, esp_lens, verdicts, reasons) == 2
    assert list(verdicts) == [0, 1, 2, 3, 3, 3]  # ESP_RAW, ESP_UDP, PASS, then three descriptors outside
    assert list(esp_lens[2:]) == [0, 0, 0, 0]
    d = [array("I", [0] * 2), array("I", [0] * 2)]
    ok = table.decap_batch(area, offs[:2], esp_lens[:2], bytearray(4096), d[0], d[1], bytearray(2), bytearray(2))
    assert ok == 2  # decrypted where they lie, the VLAN-tagged one too
    with pytest.raises(EspUsageError):
        _esp_fast.frame_parse_batch(area, addrs, lens, n + 1, offs, esp_lens, verdicts, reasons)


def test_encap_batch_writes_frames_that_scapy_reads_and_refuses_frames_outside_the_area() -> None:
    from array import array

    from ikev2lib import _esp_fast
    from ikev2lib.esp import EspSA

    key = bytes(range(20))
    out_sa, in_sa = EspSA(0x999, "aes128gcm16", key, "outbound"), EspSA(0x999, "aes128gcm16", key, "inbound")
    template = _esp_fast.FrameTemplate(family=4, src=bytes([192, 0, 2, 1]), dst=bytes([192, 0, 2, 2]),
                                       dst_mac=b"\x02" * 6, src_mac=b"\x04" * 6, udp_ports=(4500, 4500), ip_id=7)
    inner = [bytes(IP(src="10.1.0.1", dst="10.2.0.1") / UDP() / (b"p" * i)) for i in (1, 100, 1300)]
    buf = b"".join(inner)
    offs = array("I", [0, len(inner[0]), len(inner[0]) + len(inner[1])])
    lens = array("I", [len(p) for p in inner])
    slot = 2048
    area = bytearray(slot * 3)
    frames = array("Q", [0, slot, 2 * slot + 1])  # the last one's frame_cap runs past the area
    f_lens, sts = array("I", [0] * 3), bytearray(3)
    assert template.encap_batch(out_sa, buf, offs, lens, area, frames, slot, f_lens, sts) == 2
    assert sts[2] != 0 and f_lens[2] == 0
    for i in range(2):
        frame = Ether(bytes(area[frames[i]:frames[i] + f_lens[i]]))
        assert frame[IP].id == 7 + i and frame[UDP].dport == 4500 and frame[Ether].dst == "02:02:02:02:02:02"
        assert in_sa.decap(bytes(frame[UDP].payload)) == (4, inner[i])
    assert template.ip_id == 9
