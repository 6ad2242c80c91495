"""Snapshots of IKE SAs and their Child SAs, for another process to carry them on (high availability).

    record = capture(sa, now, wall)                       # plain data: identities, keys, counters
    blob = seal(record, key, label)                       # what the store holds: never plaintext keys
    record = unseal(blob, key, label)                     # SnapshotError: wrong key, tampered, ...
    ike_sa_id = restore(endpoint, record, now, wall, HandOver())

A record holds everything the engine needs to continue without renegotiating: SPIs, the seven IKE
keys, the negotiated transforms, identities, NAT-T and MOBIKE state, message IDs, the cached response, our request
in flight (as sent), rekey and lifetime deadlines, and per Child SA its selectors, ESP keys and
sequence numbers. Deadlines are stored as seconds left at `wall` (seconds since the epoch), since two
processes share no monotonic clock; the restoring one subtracts the time that passed since.

Nothing sent by the process that is gone may be repeated: `HandOver` says how far the counters jump.
The outbound ESP sequence number and the IKE SK cipher's IV counter skip a margin past the recorded
value (messages and packets sent after the last record never share a nonce with ours); the inbound
replay window restarts so that nothing up to the highest recorded sequence number is accepted again
(what arrived after the last record can be replayed once: the replication interval bounds that).

`seal` is AES-256-GCM (`cryptography`) under an operator key, with a random 96-bit nonce and the
`label` (e.g. the store key the record lives under) as associated data, so a record cannot be moved
to another key unnoticed. Layout: MAGIC | version (1 octet) | nonce (12) | ciphertext+tag. The version
is checked before anything is decrypted: a newer one than this library knows is refused.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding

from .. import lifetimes

from ..child_sa import ChildSa, VolumeLimits, build_esp_pair
from ..crypto import IkeKeys
from ..dataplane import HandOverSA
from ..endpoint import IkeEndpoint
from ..events import ChildSaCreated, IkeSaRestored
from ..exceptions import LocalProtocolError
from ..exchanges.mobike import MAX_PEER_ADDRESSES
from ..ike_sa import IkeSa, MessageState
from ..negotiation import SelectedProposal
from ..state import ChildState, IkeInput, IkeState
from ..wire import TrafficSelector, Transform

__all__ = [
    "SnapshotError",
    "HandOver",
    "SNAPSHOT_VERSION",
    "KEY_SIZE",
    "capture",
    "restore",
    "seal",
    "unseal",
]

SNAPSHOT_VERSION = 1
MAGIC = b"IKEv2HA"
KEY_SIZE = 32  # AES-256
NONCE_SIZE = 12
MAX_RECORD = 1 << 20  # octets of one sealed record: an IKE SA with 64 Child SAs is far below
_HEADER = len(MAGIC) + 1
_U32, _U64 = 2**32 - 1, 2**64 - 1
_IKE_KEYS = ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr")


class SnapshotError(LocalProtocolError):
    """A record that cannot be restored: wrong key, truncated or tampered, an unknown version, or
    content that does not fit this endpoint (a connection it does not have). Nothing was restored."""


@dataclass(frozen=True, kw_only=True)
class HandOver:
    """How far the counters jump when an SA changes process: past anything the previous owner can
    have sent after its last record. A margin only has to exceed what one process sends between two
    records; the sequence space (2**32 without ESN) is what it costs, so keep it well below that."""

    esp_seq_margin: int = 1 << 20  # outbound ESP packets skipped
    iv_margin: int = 1 << 32  # IKE SK IVs skipped (a 64-bit counter: costs nothing)


# ---- plain data -----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise SnapshotError("malformed record: expected base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise SnapshotError("malformed record: bad base64") from None


def _left(deadline: float | None, now: float) -> float | None:
    return None if deadline is None else deadline - now


def _at(left: object, now: float, elapsed: float) -> float | None:
    if left is None:
        return None
    if not isinstance(left, (int, float)) or isinstance(left, bool):
        raise SnapshotError("malformed record: a deadline is not a number")
    return now + float(left) - elapsed


def _proposal(selected: SelectedProposal) -> dict[str, Any]:
    return {"number": selected.number, "protocol": selected.protocol_id, "spi": _b64(selected.spi),
            "transforms": [[int(t.transform_type), int(t.transform_id), t.key_length] for t in selected.transforms]}


def _selected(data: Mapping[str, Any]) -> SelectedProposal:
    transforms = _transforms(tuple((int(t), int(i), k if k is None else int(k)) for t, i, k in data["transforms"]))
    return SelectedProposal(number=int(data["number"]), protocol_id=int(data["protocol"]), spi=_unb64(data["spi"]),
                            transforms=transforms)


@functools.lru_cache(maxsize=256)  # a cluster's SAs share a few transform sets
def _transforms(ids: tuple[tuple[int, int, int | None], ...]) -> tuple[Transform, ...]:
    return tuple(Transform(transform_type=t, transform_id=i, key_length=k) for t, i, k in ids)


def _selector(ts: Any) -> list[Any]:
    return [ts.ts_type, ts.ip_protocol, ts.start_port, ts.end_port, _b64(ts.start_address), _b64(ts.end_address)]


def _unselector(data: list[Any]) -> TrafficSelector:
    kind, protocol, start_port, end_port, start, end = data
    return TrafficSelector(ts_type=kind, ip_protocol=protocol, start_port=start_port, end_port=end_port,
                           start_address=_unb64(start), end_address=_unb64(end))


_CHECKED_TYPES: set[type] = set()  # ESP SA classes seen to be HandOverSAs (a Protocol check is slow)


def _handed_over(child: ChildSa) -> tuple[HandOverSA, HandOverSA]:
    inbound, outbound = child.esp_sas()
    for sa in (inbound, outbound):
        if type(sa) not in _CHECKED_TYPES:
            if not isinstance(sa, HandOverSA):
                raise LocalProtocolError("the ESP factory's SAs cannot report or move their sequence numbers")
            _CHECKED_TYPES.add(type(sa))
    return inbound, outbound  # type: ignore[return-value]


def _child(child: ChildSa, now: float) -> dict[str, Any]:
    inbound, outbound = _handed_over(child)
    limits = child.limits
    return {
        "child_id": child.child_id, "config": child.config_name, "spi_in": _b64(child.spi_in),
        "spi_out": _b64(child.spi_out), "proposal": _proposal(child.selected), "proposal_text": child.proposal_text,
        "mode": child.mode, "local_ts": list(child.local_ts), "remote_ts": list(child.remote_ts),
        "local_ts_wire": [_selector(t) for t in child.local_ts_wire],
        "remote_ts_wire": [_selector(t) for t in child.remote_ts_wire],
        "udp_encap": child.udp_encap, "keys_in": [_b64(k) for k in child.keys_in],
        "keys_out": [_b64(k) for k in child.keys_out], "rekey_in": _left(child.rekey_at, now),
        "expire_in": _left(child.expire_at, now),
        "limits": [limits.soft_packets, limits.hard_packets, limits.soft_bytes, limits.hard_bytes],
        "per_resource": child.per_resource, "resource": child.resource, "peer_resource": _b64(child.peer_resource),
        "replay_window": inbound.replay_window, "next_seq_out": outbound.next_sequence,
        "highest_seq_in": inbound.highest_sequence,
    }  # fmt: skip


def capture(sa: IkeSa, now: float, wall: float) -> dict[str, Any]:
    """The record of one established IKE SA (`now`: the engine's clock, `wall`: seconds since the
    epoch). Only installed Child SAs are part of it: one being created, rekeyed or deleted at this
    moment is left out (the next record, after that exchange, has its outcome)."""
    if sa.state != IkeState.ESTABLISHED or sa.keys is None or sa.selected is None:
        raise LocalProtocolError(f"IKE SA {sa.ike_sa_id} is {sa.state.value}: only established SAs are captured")
    state = sa.message_state()
    certificate = sa.peer_certificate
    return {
        "version": SNAPSHOT_VERSION, "wall": wall, "ike_sa_id": sa.ike_sa_id, "connection": sa.config.name,
        "initiator": sa.is_initiator, "local": list(sa.local_addr), "remote": list(sa.remote_addr),
        "original_initiator": sa.original_initiator, "peer_mobike": sa.peer_mobike,
        "peer_additional_addresses": list(sa.peer_additional_addresses),
        "ike_port": sa.ike_port, "spi_i": _b64(sa.spi_i), "spi_r": _b64(sa.spi_r),
        "natt": sa.natt, "nat_detected": sa.nat_detected, "nat_here": sa.nat_here, "nat_there": sa.nat_there,
        "remote_id": sa.remote_id_text, "peer_fragmentation": sa.peer_fragmentation,
        "peer_signature_hashes": list(sa.peer_signature_hashes),
        "peer_certificate": None if certificate is None else _b64(certificate.public_bytes(Encoding.DER)),
        "accepts_redirect": sa.accepts_redirect, "peer_accepts_redirect": sa.peer_accepts_redirect,
        "proposal": _proposal(sa.selected), "proposal_text": sa.proposal_text,
        "keys": {name: _b64(getattr(sa.keys, name)) for name in _IKE_KEYS},
        "send_mid": state.send_mid, "recv_mid": state.recv_mid, "next_iv": state.next_iv,
        "cached_response": None if state.cached_response is None else [
            state.cached_response[0], _b64(state.cached_response[1]), [_b64(d) for d in state.cached_response[2]]],
        "in_flight": None if state.in_flight is None else [
            state.in_flight[0], state.in_flight[1], [_b64(d) for d in state.in_flight[2]]],
        "rekey_in": _left(sa.rekey_at, now), "delete_in": _left(sa.delete_at, now),
        "heard_ago": now - sa.last_heard,
        "children": [_child(c, now) for c in sa.children.values() if c.state == ChildState.INSTALLED],
    }  # fmt: skip


# ---- sealing --------------------------------------------------------------------------------------


def seal(record: Mapping[str, Any], key: bytes, label: bytes) -> bytes:
    """The record encrypted and authenticated under `key` (KEY_SIZE octets), bound to `label`."""
    if len(key) != KEY_SIZE:
        raise LocalProtocolError(f"a snapshot key is {KEY_SIZE} octets")
    header = MAGIC + bytes((SNAPSHOT_VERSION,))
    nonce = os.urandom(NONCE_SIZE)  # random: many processes seal under one key, no counter to share
    plaintext = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + label)


def unseal(blob: bytes, key: bytes, label: bytes) -> dict[str, Any]:
    if len(key) != KEY_SIZE:
        raise LocalProtocolError(f"a snapshot key is {KEY_SIZE} octets")
    if len(blob) > MAX_RECORD:
        raise SnapshotError("record too large")
    if len(blob) < _HEADER + NONCE_SIZE + 16 or not blob.startswith(MAGIC):
        raise SnapshotError("not a snapshot record (truncated or foreign)")
    version = blob[len(MAGIC)]
    if version > SNAPSHOT_VERSION:
        raise SnapshotError(f"record version {version} is newer than this library's ({SNAPSHOT_VERSION})")
    if version != SNAPSHOT_VERSION:
        raise SnapshotError(f"record version {version} is not supported")
    nonce, sealed = blob[_HEADER : _HEADER + NONCE_SIZE], blob[_HEADER + NONCE_SIZE :]
    try:
        plaintext = AESGCM(key).decrypt(nonce, sealed, blob[:_HEADER] + label)
    except InvalidTag:
        raise SnapshotError("record does not authenticate (wrong key, wrong label, or tampered)") from None
    try:
        record = json.loads(plaintext)
    except ValueError:
        raise SnapshotError("record is not valid JSON") from None
    if not isinstance(record, dict) or record.get("version") != version:
        raise SnapshotError("record content does not match its header")
    return record


# ---- restoring ------------------------------------------------------------------------------------


def restore(endpoint: IkeEndpoint, record: Mapping[str, Any], now: float, wall: float, hand_over: HandOver) -> int:
    """Rebuild the IKE SA of `record` and its Child SAs in `endpoint` (which must serve the same
    connection), with fresh ESP SA objects whose counters jumped ahead; returns its ike_sa_id.
    Emits IkeSaRestored and one ChildSaCreated per Child SA, so a data path installs them as usual.
    SnapshotError, and nothing restored, if the record does not fit."""
    try:
        sa, children = _rebuild(endpoint, record, now, wall, hand_over)
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise SnapshotError(f"malformed record: {exc!r}") from None
    endpoint.adopt(sa, children)
    ctx = sa.ctx
    ctx.emit(IkeSaRestored(ike_sa_id=sa.ike_sa_id, spi_i=sa.spi_i, spi_r=sa.spi_r, is_initiator=sa.is_initiator,
                           remote_addr=sa.remote_addr, remote_id=sa.remote_id_text, connection=sa.config.name,
                           children=len(children)))
    for child in children:
        inbound, outbound = child.esp_sas()
        ctx.emit(ChildSaCreated(
            ike_sa_id=sa.ike_sa_id, child_id=child.child_id, spi_in=child.spi_in, spi_out=child.spi_out,
            proposal=child.proposal_text, mode=child.mode, udp_encap=child.udp_encap, local_ts=child.local_ts,
            remote_ts=child.remote_ts, name=child.config_name, resource=child.resource,
            per_resource=child.per_resource, inbound=inbound, outbound=outbound,
        ))  # fmt: skip
    return sa.ike_sa_id


def _rebuild(endpoint: IkeEndpoint, record: Mapping[str, Any], now: float, wall: float,
             hand_over: HandOver) -> tuple[IkeSa, list[ChildSa]]:
    if record.get("version") != SNAPSHOT_VERSION:
        raise SnapshotError(f"record version {record.get('version')!r} is not supported")
    name = record["connection"]
    config = next((c for c in endpoint.configs if c.name == name), None)
    if config is None:
        raise SnapshotError(f"this endpoint has no connection {name!r}")
    ctx = endpoint.ctx
    spi_i, spi_r = _unb64(record["spi_i"]), _unb64(record["spi_r"])
    is_initiator = bool(record["initiator"])
    local_spi = spi_i if is_initiator else spi_r
    if local_spi in ctx.ike_spis:
        raise SnapshotError(f"IKE SPI {local_spi.hex()} is already in use here")
    elapsed = max(0.0, wall - float(record["wall"]))  # clocks of two hosts: never run time backwards
    remote = record["remote"]
    sa = IkeSa(ctx=ctx, ike_sa_id=int(record["ike_sa_id"]), config=config, is_initiator=is_initiator,
               remote_addr=(str(remote[0]), int(remote[1])), spi_i=spi_i, spi_r=spi_r, now=now)
    sa.ike_port = int(record["ike_port"])
    local = record["local"]
    sa.local_addr = (str(local[0]), int(local[1]))
    sa.original_initiator, sa.peer_mobike = bool(record["original_initiator"]), bool(record["peer_mobike"])
    sa.peer_additional_addresses = tuple(str(a) for a in record["peer_additional_addresses"])[:MAX_PEER_ADDRESSES]
    sa.natt, sa.nat_detected = bool(record["natt"]), bool(record["nat_detected"])
    sa.nat_here, sa.nat_there = bool(record["nat_here"]), bool(record["nat_there"])
    sa.remote_id_text = str(record["remote_id"])
    sa.peer_fragmentation = bool(record["peer_fragmentation"])
    sa.peer_signature_hashes = tuple(int(h) for h in record["peer_signature_hashes"])
    if record["peer_certificate"] is not None:
        sa.peer_certificate = x509.load_der_x509_certificate(_unb64(record["peer_certificate"]))
    sa.accepts_redirect, sa.peer_accepts_redirect = bool(record["accepts_redirect"]), bool(record["peer_accepts_redirect"])
    keys = IkeKeys(**{k: _unb64(record["keys"][k]) for k in _IKE_KEYS})
    sa.install_keys(_selected(record["proposal"]), keys, str(record["proposal_text"]))
    cached = record["cached_response"]
    in_flight = record["in_flight"]
    state = MessageState(
        send_mid=int(record["send_mid"]), recv_mid=int(record["recv_mid"]),
        cached_response=None if cached is None else (int(cached[0]), _unb64(cached[1]),
                                                     tuple(_unb64(d) for d in cached[2])),
        in_flight=None if in_flight is None else (int(in_flight[0]), int(in_flight[1]),
                                                  tuple(_unb64(d) for d in in_flight[2])),
        next_iv=None if record["next_iv"] is None else int(record["next_iv"]),
    )  # fmt: skip
    sa.resume_message_state(state, iv_margin=hand_over.iv_margin, now=now)
    sa.apply(IkeInput.RESTORED)
    sa.established_at = now
    sa.last_heard = now - min(float(record["heard_ago"]) + elapsed, 1e9)
    sa.rekey_at = _at(record["rekey_in"], now, elapsed)
    sa.delete_at = _at(record["delete_in"], now, elapsed)
    children = [_rebuild_child(sa, data, now, elapsed, hand_over) for data in record["children"]]
    for child in children:
        if child.spi_in in ctx.esp_spis:
            raise SnapshotError(f"ESP SPI {child.spi_in.hex()} is already in use here")
    return sa, children


def _rebuild_child(sa: IkeSa, data: Mapping[str, Any], now: float, elapsed: float, hand_over: HandOver) -> ChildSa:
    keys_in, keys_out = data["keys_in"], data["keys_out"]
    child = ChildSa(
        child_id=int(data["child_id"]), config_name=str(data["config"]), spi_in=_unb64(data["spi_in"]),
        spi_out=_unb64(data["spi_out"]), selected=_selected(data["proposal"]),
        proposal_text=str(data["proposal_text"]), mode=str(data["mode"]),
        local_ts=tuple(str(t) for t in data["local_ts"]), remote_ts=tuple(str(t) for t in data["remote_ts"]),
        local_ts_wire=[_unselector(t) for t in data["local_ts_wire"]],
        remote_ts_wire=[_unselector(t) for t in data["remote_ts_wire"]],
        udp_encap=bool(data["udp_encap"]), keys_in=(_unb64(keys_in[0]), _unb64(keys_in[1])),
        keys_out=(_unb64(keys_out[0]), _unb64(keys_out[1])), created_at=now,
        rekey_at=_at(data["rekey_in"], now, elapsed), expire_at=_at(data["expire_in"], now, elapsed),
        per_resource=bool(data["per_resource"]),
        resource=None if data["resource"] is None else int(data["resource"]),
        peer_resource=_unb64(data["peer_resource"]),
    )  # fmt: skip
    soft_packets, hard_packets, soft_bytes, hard_bytes = (int(v) for v in data["limits"])
    limits = VolumeLimits(soft_packets=soft_packets, hard_packets=hard_packets, soft_bytes=soft_bytes,
                          hard_bytes=hard_bytes)
    build_esp_pair(child, sa.ctx.esp_factory, int(data["replay_window"]), limits)
    inbound, outbound = _handed_over(child)
    next_out = int(data["next_seq_out"]) + hand_over.esp_seq_margin
    # the window's top moves a whole window past the highest recorded number: every number up to it
    # falls outside, so no packet the old process took can be taken again; the next ones still fit
    top = _U64 if child.selected.esn else _U32
    window_top = min(int(data["highest_seq_in"]) + inbound.replay_window + 1, top)
    try:
        outbound.advance_sequence(next_out)
        if inbound.replay_window:
            inbound.advance_sequence(window_top)
    except Exception as exc:  # the data plane's own error types: sequence space exhausted, ...
        raise SnapshotError(f"Child SA {child.child_id}: {exc}") from None
    if limits.active:
        child.lifetime_check_at = now + lifetimes.LIFETIME_CHECK_INTERVAL
    return child
