"""Capture real IKEv2 datagrams between two strongSwan peers into tests/wire/corpus/strongswan/.

Run as root from the repository root:  .venv/bin/python tests/interop/capture_corpus.py [OUTDIR]

Every scenario starts two fresh charons in a fresh namespace pair, captures the veth with tshark,
drives the exchanges with swanctl and stores each IKE message (UDP payload; the non-ESP marker of
port 4500 removed; ESP skipped) as NNN_<scenario>_<phase>_<exchange>_<req|resp>[_skf_XofY].bin.
MANIFEST.txt describes every file; keys_<scenario>.json holds the keys strongSwan logged (ike=4,
chd=4) for the SAs of a scenario, next to its pcap. Bounded: each step has a timeout.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import struct
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ -> `interop` package

from interop.capture import Capture, ike_messages  # noqa: E402
from interop.capture import read_pcap  # noqa: E402
from interop.netns import NamespacePair  # noqa: E402
from interop.traffic import udp_receive, udp_send  # noqa: E402
from interop.strongswan import (  # noqa: E402
    CHARON, Charon, CharonSettings, IkeSA, SwanctlConfig, logged_child_keys, logged_ike_keys, psk_connection_pair,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "tests" / "wire" / "corpus" / "strongswan"
PSK = "interop-test-psk-0123456789abcdef"
EXCHANGES = {34: "ike_sa_init", 35: "ike_auth", 36: "create_child_sa", 37: "informational"}
PAYLOAD_SKF = 53
PAYLOAD_NONCE = 40
TRAFFIC_PORT = 5001
TRAFFIC_COUNT = 3  # UDP datagrams each way through a Child SA of the keyed scenarios
MAX_PAYLOADS = 64  # bound on the generic payload walk below
DPD_DELAY = 2  # seconds; DPD fires this long after the last inbound message
LOG_LEVELS = {"default": 1, "ike": 4, "chd": 4, "enc": 1, "cfg": 1, "net": 1}
# Extra traffic selectors (disjoint per side) make IKE_AUTH ~900 bytes -> fragments of 512.
EXTRA_TS_LEFT = tuple(f"10.{n}.0.0/16" for n in range(100, 120))
EXTRA_TS_RIGHT = tuple(f"10.{n}.0.0/16" for n in range(200, 220))


def strongswan_version() -> str:
    """e.g. "strongSwan 5.9.8 (Debian 5.9.8-5+deb12u6)"."""
    out = subprocess.run([CHARON, "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"strongSwan (\S+)", out)
    deb = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "strongswan-charon"], capture_output=True,
                         text=True, timeout=10).stdout.strip()
    return f"strongSwan {m.group(1) if m else '?'}" + (f" (Debian {deb})" if deb else "")


@dataclass
class Scenario:
    name: str
    left_proposals: Sequence[str]
    right_proposals: Sequence[str] | None = None
    esp_proposals: Sequence[str] = ("aes128gcm16-x25519",)
    left_settings: dict[str, Any] = field(default_factory=dict)
    right_settings: dict[str, Any] = field(default_factory=dict)
    conn_kwargs: dict[str, Any] = field(default_factory=dict)
    left_ts: Sequence[str] = ("10.1.0.0/16",)
    right_ts: Sequence[str] = ("10.2.0.0/16",)
    full_lifecycle: bool = False  # also DPD (left only), child rekey, IKE rekey, child delete
    decoy_half_open: bool = False  # leave one half-open IKE SA on the responder first (for COOKIE)
    keys: bool = False  # write keys_<name>.json and <name>.pcap


SCENARIOS = [
    Scenario("aes128gcm16_prfsha256_x25519", ["aes128gcm16-prfsha256-x25519"],
             conn_kwargs={"dpd_delay": f"{DPD_DELAY}s"}, full_lifecycle=True, keys=True),
    Scenario("aes256gcm16_prfsha384_ecp384", ["aes256gcm16-prfsha384-ecp384"],
             esp_proposals=("aes256gcm16",)),
    Scenario("chacha20poly1305_prfsha512_curve25519", ["chacha20poly1305-prfsha512-curve25519"],
             esp_proposals=("chacha20poly1305",)),
    Scenario("aes256_sha256_modp2048", ["aes256-sha256-modp2048"], esp_proposals=("aes256-sha256",),
             keys=True),
    # Three proposals, the last with several algorithms per type; the responder picks proposal 3.
    Scenario("multi_proposal", ["aes256gcm16-prfsha384-x25519-ecp384",
                                "aes128-sha256-modp3072",
                                "aes128gcm16-aes256gcm16-prfsha256-prfsha512-x25519-ecp256"],
             right_proposals=["aes128gcm16-prfsha256-x25519"]),
    # Initiator's first group is ecp256, the responder only takes x25519: INVALID_KE_PAYLOAD, retry.
    Scenario("invalid_ke", ["aes128gcm16-prfsha256-ecp256-x25519"],
             right_proposals=["aes128gcm16-prfsha256-x25519"]),
    # Responder demands a COOKIE once one IKE SA is half-open (cookie_threshold = 0 disables
    # cookies in charon 5.9.8, so a hand-made IKE_SA_INIT that is never completed opens one first).
    Scenario("cookie", ["aes128gcm16-prfsha256-x25519"],
             right_settings={"cookie_threshold": 1, "dos_protection": True}, decoy_half_open=True),
    # Small fragment size and many traffic selectors: IKE_AUTH goes out as SKF fragments (RFC 7383).
    Scenario("fragmented", ["aes128gcm16-prfsha256-x25519"],
             left_settings={"fragment_size": 512}, right_settings={"fragment_size": 512},
             left_ts=("10.1.0.0/16",) + EXTRA_TS_LEFT, right_ts=("10.2.0.0/16",) + EXTRA_TS_RIGHT),
]


def walk_payloads(msg: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of the plaintext payload chain; stops at SK/SKF (their body is opaque)."""
    out: list[tuple[int, bytes]] = []
    next_type, pos = msg[16], 28
    while next_type and pos + 4 <= len(msg) and len(out) < MAX_PAYLOADS:
        length = int.from_bytes(msg[pos + 2:pos + 4], "big")
        if length < 4 or pos + length > len(msg):
            break
        out.append((next_type, msg[pos + 4:pos + length]))
        if next_type in (46, PAYLOAD_SKF):
            break
        next_type, pos = msg[pos], pos + length
    return out


def decoy_ike_sa_init() -> bytes:
    """A minimal IKE_SA_INIT request (AES-GCM-16-128, PRF-HMAC-SHA256, X25519) with random SPI,
    KE and nonce: the responder answers it and keeps the SA half-open."""
    transforms = (bytes.fromhex("0300000c01000014800e0080")  # ENCR AES-GCM-16, key length 128
                  + bytes.fromhex("0300000802000005")  # PRF HMAC-SHA2-256
                  + bytes.fromhex("000000080400001f"))  # KE Curve25519
    proposal = struct.pack("!BBHBBBB", 0, 0, 8 + len(transforms), 1, 1, 0, 3) + transforms
    sa = struct.pack("!BBH", 34, 0, 4 + len(proposal)) + proposal
    ke = struct.pack("!BBHHH", 40, 0, 8 + 32, 31, 0) + os.urandom(32)
    nonce = struct.pack("!BBH", 0, 0, 4 + 32) + os.urandom(32)
    body = sa + ke + nonce
    return os.urandom(8) + bytes(8) + struct.pack("!BBBBII", 33, 0x20, 34, 0x08, 0, 28 + len(body)) + body


def send_decoy(src: str, dst: str) -> bool:
    """Runs inside a namespace: send the decoy from an unused port; True once answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((src, 0))
        sock.settimeout(5.0)
        sock.sendto(decoy_ike_sa_init(), (dst, 500))
        try:
            sock.recv(65535)
        except TimeoutError:
            return False
    return True


def describe(msg: bytes) -> dict[str, Any]:
    flags = msg[19]
    info: dict[str, Any] = {
        "exchange": EXCHANGES.get(msg[18], f"exchange{msg[18]}"), "msgid": int.from_bytes(msg[20:24], "big"),
        "response": bool(flags & 0x20), "from_initiator": bool(flags & 0x08),
        "spi_i": msg[0:8].hex(), "spi_r": msg[8:16].hex(), "first_payload": msg[16],
    }
    payloads = walk_payloads(msg)
    if payloads and payloads[-1][0] == PAYLOAD_SKF and len(payloads[-1][1]) >= 4:
        body = payloads[-1][1]
        info["fragment"] = (int.from_bytes(body[0:2], "big"), int.from_bytes(body[2:4], "big"))
    return info


class Run:
    """One scenario: namespaces, two charons, a capture and phase markers."""

    def __init__(self, sc: Scenario, pair: NamespacePair, work: Path) -> None:
        self.sc = sc
        self.pair = pair
        self.work = work
        self.left = Charon(pair.left, work / "left", CharonSettings(log_levels=LOG_LEVELS, **sc.left_settings),
                           "left")
        self.right = Charon(pair.right, work / "right",
                            CharonSettings(log_levels=LOG_LEVELS, **sc.right_settings), "right")
        self.pcap = work / f"{sc.name}.pcap"
        self.phases: list[tuple[float, str]] = []
        self.ike_sas: list[IkeSA] = []  # left's view of each IKE SA, in creation order
        self.child_spis: list[tuple[str, str]] = []  # (initiator->responder SPI, responder->initiator SPI)
        self.plaintexts: list[str] = []  # inner UDP payloads sent through the tunnel

    def phase(self, name: str, action: Callable[[], None]) -> None:
        self.phases.append((time.time(), name))
        action()

    def run(self) -> None:
        sc = self.sc
        left_cfg, right_cfg = psk_connection_pair(
            self.pair.left_addr, self.pair.right_addr, proposals=sc.left_proposals,
            right_proposals=sc.right_proposals, esp_proposals=sc.esp_proposals, left_ts=sc.left_ts,
            right_ts=sc.right_ts, psk=PSK, **sc.conn_kwargs)
        # libipsec routes each local TS with a source address from it: give every extra TS one.
        for ns, tss, first in ((self.pair.left, sc.left_ts, "10.1.0.0/16"), (self.pair.right, sc.right_ts,
                                                                            "10.2.0.0/16")):
            for ts in tss:
                if ts != first:
                    ns.add_inner_address(f"{ipaddress.ip_network(ts)[1]}/32")
        self.left.start()
        self.right.start()
        if sc.full_lifecycle:
            for conn in right_cfg.connections:
                conn.dpd_delay = None  # only the initiator probes: keeps the phases apart
        self.right.load(right_cfg)
        self.left.load(left_cfg)
        if sc.decoy_half_open and not self.pair.left.call(send_decoy, self.pair.left_addr, self.pair.right_addr):
            raise RuntimeError("decoy IKE_SA_INIT got no answer")
        with Capture(self.pair.left, self.pair.left_if, self.pcap):
            self.phase("establish", self._establish)
            if sc.full_lifecycle:
                self.phase("dpd", self._dpd)
                self.phase("rekey_child", self._rekey_child)
                self.phase("rekey_ike", self._rekey_ike)
                self.phase("delete_child", self._delete_child)
            self.phase("delete_ike", self._delete_ike)
            time.sleep(0.1)  # a retransmission or late delete, if any, lands in the capture too
        self.left.stop()
        self.right.stop()

    def _establish(self) -> None:
        self.left.initiate(child="net")
        self.ike_sas.append(self.left.wait_for_ike("conn"))
        child = self.left.wait_for_child("net")
        self.child_spis.append((child.spi_out, child.spi_in))
        self.right.wait_for_child("net")
        if self.sc.keys:
            self.traffic("child1")

    def traffic(self, tag: str) -> None:
        """UDP through the tunnel both ways (ESP in the capture, for the keys file)."""
        for src_ns, dst_ns, src, dst, way in ((self.pair.left, self.pair.right, "10.1.0.1", "10.2.0.1", "i->r"),
                                              (self.pair.right, self.pair.left, "10.2.0.1", "10.1.0.1", "r->i")):
            payloads = [f"{self.sc.name} {tag} {way} {n}".encode() for n in range(TRAFFIC_COUNT)]
            receiver = dst_ns.start(udp_receive, dst, TRAFFIC_PORT, len(payloads), 5.0)
            time.sleep(0.1)  # let the receiver bind
            src_ns.call(udp_send, src, dst, TRAFFIC_PORT, payloads, 0.01)
            got = [data for data, _ in receiver.result(10.0)]
            if got != payloads:
                raise RuntimeError(f"tunnel traffic lost: sent {payloads}, got {got}")
            self.plaintexts += [p.decode() for p in payloads]

    def _dpd(self) -> None:
        # An empty INFORMATIONAL request after DPD_DELAY seconds without inbound traffic.
        self.left.wait_for_log(r"generating INFORMATIONAL request \d+ \[ \]", timeout=DPD_DELAY * 4)
        self.left.wait_for_log(r"parsed INFORMATIONAL response \d+ \[ \]", timeout=10)

    def _rekey_child(self) -> None:
        old = self.left.wait_for_child("net")
        self.left.rekey(child="net")
        new = self.left.wait_for_child("net", where=lambda c: c.spi_in != old.spi_in)
        self.child_spis.append((new.spi_out, new.spi_in))
        self.traffic("child2")
        # Rekeying ends with the INFORMATIONAL exchange deleting the old Child SA.
        # charon keeps a deleted Child SA listed (state DELETED) for a few seconds; that is enough.
        self.left.wait_until(lambda: all(c.spi_in != old.spi_in or c.state == "DELETED"
                                         for sa in self.left.list_sas() for c in sa.children),
                             10, "old Child SA deleted")

    def _rekey_ike(self) -> None:
        old = self.ike_sas[-1]
        self.left.rekey(ike="conn")
        # Done when the old IKE SA (deleted by the rekey's INFORMATIONAL exchange) is gone.
        self.left.wait_for_ike_gone(old.spi_i, timeout=10)
        self.ike_sas.append(self.left.wait_for_ike("conn", timeout=10))

    def _delete_child(self) -> None:
        self.left.terminate(child="net")

    def _delete_ike(self) -> None:
        self.left.terminate(ike="conn")
        self.right.wait_for_ike_gone(self.ike_sas[-1].spi_i, timeout=10)

    def phase_at(self, t: float) -> str:
        name = self.phases[0][1]
        for start, phase in self.phases:
            if t >= start:
                name = phase
        return name


def write_scenario(run: Run, out: Path, seq: int, manifest: list[str], version: str) -> int:
    sc = run.sc
    messages = ike_messages(run.pcap)
    if not messages:
        raise RuntimeError(f"{sc.name}: no IKE messages captured")
    files_by_spi: dict[str, list[str]] = {}
    init_msgs: dict[str, tuple[bytes, bytes]] = {}
    for d, msg in messages:
        info = describe(msg)
        kind = "resp" if info["response"] else "req"
        name = f"{seq:03d}_{sc.name}_{run.phase_at(d.timestamp)}_{info['exchange']}_{kind}"
        if "fragment" in info:
            name += "_skf_{}of{}".format(*info["fragment"])
        name += ".bin"
        (out / name).write_bytes(msg)
        files_by_spi.setdefault(info["spi_i"], []).append(name)
        direction = f"{d.src}:{d.sport} -> {d.dst}:{d.dport}"
        sender = "initiator" if info["from_initiator"] else "responder"
        manifest.append(f"{name} | {info['exchange']} {kind} msgid={info['msgid']} from {sender} | {direction} "
                        f"| {len(msg)} bytes | {version} | proposals: {','.join(sc.left_proposals)}"
                        f"{' / responder: ' + ','.join(sc.right_proposals) if sc.right_proposals else ''}")
        if info["exchange"] == "ike_sa_init" and not info["response"]:
            init_msgs.setdefault(info["spi_i"], (msg, b""))
        if info["exchange"] == "ike_sa_init" and info["response"] and info["spi_r"] != "0" * 16:
            init_msgs[info["spi_i"]] = (init_msgs.get(info["spi_i"], (b"", b""))[0], msg)
        seq += 1
    if sc.keys:
        write_keys(run, out, files_by_spi, init_msgs, version)
    return seq


def nonce_of(msg: bytes) -> str | None:
    return next((body.hex() for t, body in walk_payloads(msg) if t == PAYLOAD_NONCE), None)


def write_keys(run: Run, out: Path, files_by_spi: dict[str, list[str]],
               init_msgs: dict[str, tuple[bytes, bytes]], version: str) -> None:
    log = run.left.log_text()
    key_sets = logged_ike_keys(log)
    child_sets = logged_child_keys(log)
    if len(key_sets) != len(run.ike_sas) or len(child_sets) != len(run.child_spis):
        raise RuntimeError(f"{run.sc.name}: {len(key_sets)} IKE key sets for {len(run.ike_sas)} SAs, "
                           f"{len(child_sets)} child key sets for {len(run.child_spis)} Child SAs")
    ike_entries = []
    for i, (sa, keys) in enumerate(zip(run.ike_sas, key_sets)):
        req, resp = init_msgs.get(sa.spi_i, (b"", b""))
        entry: dict[str, Any] = {
            "spi_i": sa.spi_i, "spi_r": sa.spi_r,
            "created_by": "IKE_SA_INIT" if i == 0 else "CREATE_CHILD_SA (IKE rekey of the previous SA)",
            "encr": sa.encr_alg, "encr_keysize": int(sa.encr_keysize or 0), "integ": sa.integ_alg,
            "prf": sa.prf_alg, "dh_group": sa.dh_group,
            # Nonces are plaintext in IKE_SA_INIT; for a rekeyed SA they are inside the SK payload.
            "ni": nonce_of(req) if req else None, "nr": nonce_of(resp) if resp else None,
            **{k: v.hex() for k, v in keys.items()},
            "messages": files_by_spi.get(sa.spi_i, []),
        }
        ike_entries.append(entry)
    child_entries = [{"spi_i_to_r": spis[0], "spi_r_to_i": spis[1], **{k: v.hex() for k, v in keys.items()}}
                     for spis, keys in zip(run.child_spis, child_sets)]
    esp = []
    for d in read_pcap(run.pcap):
        if d.dport == 4500 and d.sport == 4500 and len(d.payload) > 8 and not d.payload.startswith(b"\0\0\0\0"):
            esp.append({"from": "initiator" if d.src == run.pair.left_addr else "responder",
                        "spi": d.payload[:4].hex(), "packet": d.payload.hex()})
    doc = {
        "strongswan": version, "scenario": run.sc.name, "ike_proposals": list(run.sc.left_proposals),
        "esp_proposals": list(run.sc.esp_proposals), "psk": PSK, "ids": {"initiator": "left", "responder": "right"},
        "pcap": f"{run.sc.name}.pcap",
        "notes": ("Keys as charon logs them at ike=4/chd=4 (initiator's log). For AEAD ciphers sk_ei/sk_er and "
                  "encr_i/encr_r are key||salt (4-byte salt). shared_secret is g^ir. Child keys: *_i protect "
                  "initiator->responder traffic (ESP SPI spi_i_to_r). Child SAs in order: first, rekeyed. "
                  "esp_packets are the UDP-encapsulated ESP packets carrying esp_plaintexts."),
        "ike_sas": ike_entries, "child_sas": child_entries,
        "esp_plaintexts": run.plaintexts,  # inner UDP payloads (10.1.0.1 <-> 10.2.0.1 port 5001)
        "esp_packets": esp,  # ESP packets (UDP payload on port 4500) of the Child SAs above
    }
    (out / f"keys_{run.sc.name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    shutil.copy(run.pcap, out / f"{run.sc.name}.pcap")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outdir", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", action="append", help="run only this scenario (debugging; repeatable)")
    args = parser.parse_args(argv[1:])
    out: Path = args.outdir
    scenarios = [sc for sc in SCENARIOS if not args.only or sc.name in args.only]
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("*.bin")) + list(out.glob("keys_*.json")) + list(out.glob("*.pcap")):
        old.unlink()
    version = strongswan_version()
    manifest = [f"# Real IKEv2 messages between two {version} peers (charon, kernel-libipsec, PSK),",
                "# captured by tests/interop/capture_corpus.py. Each .bin is one IKE message: the UDP payload,",
                "# with the 4-byte non-ESP marker removed for port 4500. Phase = the step the script was in.",
                "# file | exchange, msgid, sender | UDP | size | version | IKE proposals (initiator / responder)"]
    seq = 1
    with tempfile.TemporaryDirectory(prefix="ikev2-corpus-") as tmp:
        for sc in scenarios:
            with NamespacePair() as pair:
                run = Run(sc, pair, Path(tmp) / sc.name)
                try:
                    run.run()
                except Exception:
                    print(run.left.tail_log(80), run.right.tail_log(80), sep="\n", file=sys.stderr)
                    raise
                seq = write_scenario(run, out, seq, manifest, version)
            print(f"{sc.name}: done ({seq - 1} messages so far)")
    (out / "MANIFEST.txt").write_text("\n".join(manifest) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {seq - 1} messages to {out} ({total} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
