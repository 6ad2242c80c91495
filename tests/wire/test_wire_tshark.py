"""Cross-check against Wireshark's independent IKEv2 dissector (tshark): ikev2lib-built messages and
the captured strongSwan datagrams are written to a pcap (UDP/500) and tshark's field view of every
packet must match ikev2lib's decoding."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.packet import Raw
from scapy.utils import wrpcap

from ikev2lib.wire import (
    SA,
    Auth,
    Delete,
    EncryptedFragment,
    IDi,
    IDr,
    Message,
    Notify,
    ProtocolId,
    TrafficSelector,
    TSi,
    TSr,
    VendorID,
)

from .samples import SPI_I, SPI_R, fake, ike_auth_inner, ike_sa_init_request

CORPUS = Path(__file__).parent / "corpus" / "strongswan"
TSHARK_TIMEOUT = 60  # seconds for one tshark run over all packets
FIELDS = [
    "isakmp.exchangetype", "isakmp.typepayload", "isakmp.criticalpayload", "isakmp.prop.number",
    "isakmp.prop.transforms", "isakmp.notify.msgtype", "isakmp.tf.type", "isakmp.tf.id.encr", "isakmp.tf.id.prf",
    "isakmp.tf.id.integ", "isakmp.tf.id.dh", "isakmp.tf.id.esn", "isakmp.ike2.attr.key_length", "isakmp.id.type",
    "isakmp.auth.method", "isakmp.ts.start_ipv4", "isakmp.ts.end_ipv4", "isakmp.ts.start_ipv6", "isakmp.delete.spi",
]


def built_messages() -> list[Message]:
    clear_auth = [p for p in ike_auth_inner()] + [
        Delete(ProtocolId.ESP, [fake("d1", 4), fake("d2", 4)]),
        VendorID(fake("vid", 16)),
        Notify(16393, b"", ProtocolId.ESP, fake("rekey", 4), critical=True),
    ]
    return [
        ike_sa_init_request(),
        Message(SPI_I, SPI_R, 35, 1, clear_auth),
        Message(SPI_I, SPI_R, 35, 1, [EncryptedFragment(35, 1, 2, fake("skf", 64))], is_initiator=False,
                is_response=True),
    ]


def ours(msg: Message) -> list[str]:
    types, crit, numbers, counts, notes, tf_types, key_lengths, id_types, auths, v4s, v4e, v6s, spis = (
        [] for _ in range(13)
    )
    by_kind: dict[int, list[str]] = {1: [], 2: [], 3: [], 4: [], 5: []}
    for p in msg.payloads:
        types.append(str(int(p.payload_type)))
        crit.append("1" if p.critical else "0")
        if isinstance(p, SA):
            for q in p.proposals:
                types.append("2")
                numbers.append(str(q.number))
                counts.append(str(len(q.transforms)))
                for t in q.transforms:
                    types.append("3")
                    tf_types.append(str(int(t.transform_type)))
                    by_kind[int(t.transform_type)].append(str(int(t.transform_id)))
                    if t.key_length is not None:
                        key_lengths.append(str(t.key_length))
        elif isinstance(p, Notify):
            notes.append(str(int(p.notify_type)))
        elif isinstance(p, (IDi, IDr)):
            id_types.append(str(int(p.id_type)))
        elif isinstance(p, Auth):
            auths.append(str(int(p.method)))
        elif isinstance(p, (TSi, TSr)):
            for s in p.selectors:
                assert isinstance(s, TrafficSelector)
                if len(s.start_address) == 4:
                    v4s.append(str(s.start_ip))
                    v4e.append(str(s.end_ip))
                else:
                    v6s.append(str(s.start_ip))
        elif isinstance(p, Delete):
            spis.extend(spi.hex() for spi in p.spis)
    cols = [[str(int(msg.exchange_type))], types, crit, numbers, counts, notes, tf_types,
            *(by_kind[k] for k in (1, 2, 3, 4, 5)), key_lengths, id_types, auths, v4s, v4e, v6s, spis]
    return [",".join(c) for c in cols]


def tshark_view(datagrams: list[bytes], tmp: Path) -> list[list[str]]:
    pcap = tmp / "ike.pcap"
    wrpcap(str(pcap), [IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=500, dport=500) / Raw(d) for d in datagrams])
    cmd = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=|", "-E", "aggregator=,"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=TSHARK_TIMEOUT, check=True).stdout
    rows = [line.split("|") for line in out.splitlines()]
    crit = FIELDS.index("isakmp.criticalpayload")
    for row in rows:
        # tshark 4.4 (Debian 13) prints booleans as True/False, 3.6 (Debian 12) as 1/0.
        row[crit] = row[crit].replace("True", "1").replace("False", "0")
    # tshark prints Delete SPIs with ':' separators.
    return [row[:-1] + [row[-1].replace(":", "")] for row in rows]


def test_tshark_is_installed() -> None:
    assert shutil.which("tshark"), "apt package tshark is needed for the dissector cross-check"


def test_tshark_agrees_with_ikev2lib(tmp_path: Path) -> None:
    messages = built_messages()
    datagrams = [m.serialize() for m in messages]
    corpus = sorted(CORPUS.glob("*.bin"))
    assert corpus, f"no strongSwan datagrams in {CORPUS}"
    datagrams += [p.read_bytes() for p in corpus]
    messages += [Message.parse(p.read_bytes()) for p in corpus]
    theirs = tshark_view(datagrams, tmp_path)
    assert len(theirs) == len(messages)
    names = ["built_sa_init", "built_auth_clear", "built_skf"] + [p.name for p in corpus]
    for name, msg, row in zip(names, messages, theirs):
        assert row == ours(msg), name
