"""libFuzzer (atheris) harness for the engine past the ICV: mutated payload chains of real IKE_AUTH,
CREATE_CHILD_SA and INFORMATIONAL messages, properly re-protected under the live SA keys, so that
the code that runs after decryption is what gets fuzzed (fuzz_engine.py mutates ciphertext, which
the integrity check drops).

    .venv/bin/python fuzz/fuzz_engine_authenticated.py -max_total_time=60 -timeout=5 -rss_limit_mb=2048

How one input runs:

1. Restore. Short fixed scenarios (SCENARIOS: IKE_AUTH, Child SA create with PFS and in transport
   mode, Child SA rekeys from both ends and colliding, deletes (one colliding with a rekey), DPD both
   ways, IKE SA rekeys from both ends and colliding, IKE SA deletes) are replayed on a fresh
   in-process initiator/responder pair up to the message the input targets. Every random value the
   engine draws (SPIs, nonces, X25519/P-256 keys, CBC IVs) comes from a generator seeded with SEED,
   so the replay is byte-identical to the capture made once at start (checked: a diverging replay
   raises ReplayDiverged). Deep copies are impossible (SK ciphers refuse copy); replaying the prefix
   of one short scenario costs a few milliseconds, so the harness rebuilds.
2. Open. The target message is decrypted with the live keys of the IKE SA it belongs to.
3. Mutate. Structure-aware operations on the decoded payload chain (drop, duplicate, reorder,
   payload type, critical bit, Notify type/protocol/SPI, proposal numbers/protocols/SPI sizes/
   transforms, traffic selectors, Delete SPIs, KE groups, nonce sizes, payloads spliced in from the
   other captured messages), then raw mutations of the serialized inner chain (bit flips, bytes,
   payload length and next-payload fields, truncation, insertion), then rarely the header
   (exchange type, message ID, flags).
4. Re-protect. The chain is sealed under the direction's SK_e/SK_a as one SK payload, or as SKF
   fragments (RFC 7383: numbers 1..n, the first payload type in fragment 1 only, each fragment its
   own AAD) delivered in an order the input chooses. SPIs, message ID and flags are the original's.
5. Deliver and settle. The receiving endpoint gets it; then everything either end sends in return is
   delivered until both are quiet (bounded), optionally followed by the original message and by
   timer jumps (retransmissions, timeouts).
6. Check (Finding is raised on any violation): no exception escapes the engine (the receive path
   raises only the library's own typed errors internally, and receive_datagram raises nothing); the
   ESP factory never raises on parameters the engine built; every IKE SA and Child SA is in a valid
   state, no Child SA is stuck rekeying/deleting and no IKE SA stuck deleting with nothing in flight;
   message-ID counters never go backward; queued requests stay within MAX_PENDING_REQUESTS; IKE SAs,
   datagrams and events per input stay within the named limits below; every Child SA uses algorithms
   and traffic selectors the local configuration allows, and no more Child SAs appear than the
   CREATE_CHILD_SA/IKE_AUTH messages delivered could create. A per-input wall-clock bound is atheris'
   `-timeout` (scripts/test.sh passes 5 s). Ends that disagree are no finding after a forged (if
   authenticated) message; on the unmutated capture, made at start, they must agree after every
   scenario step: same IKE SA, same installed Child SAs, matching keys (Finding at start otherwise).

A long campaign (several cores, a corpus kept between runs):

    mkdir -p fuzz/corpus_engine_authenticated
    .venv/bin/python fuzz/fuzz_engine_authenticated.py fuzz/corpus_engine_authenticated \\
        -jobs=8 -workers=8 -max_total_time=3600 -timeout=5 -rss_limit_mb=2048 -max_len=4096

Seeds (one per captured message, with no mutation) are written into the first corpus directory at
start. A crash leaves `crash-<sha1>` in the working directory (`-artifact_prefix=DIR/` moves it);
reproduce it, with the full traceback, by running the harness on that file alone:

    .venv/bin/python fuzz/fuzz_engine_authenticated.py crash-<sha1>

and read what it does (the targeted message, the mutated chain, both ends' events, the verdict):

    .venv/bin/python fuzz/fuzz_engine_authenticated.py describe crash-<sha1>

An input's meaning depends on this file (SCENARIOS, the operations): a crash file is reproducible
with the revision that found it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import shlex
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["ikev2lib"]):
    from ikev2lib.child_sa import EspParams, default_esp_factory
    from ikev2lib.config import ChildConfig, IkeConfig
    from ikev2lib.crypto import KeyExchange, SKCipher, sk_cipher
    from ikev2lib.dataplane import DataPlaneSA
    from ikev2lib.endpoint import IkeEndpoint
    from ikev2lib.events import ChildSaCreated, ChildSaRekeyed, Event
    from ikev2lib.exceptions import IKEv2Error, LocalProtocolError
    from ikev2lib.ike_sa import MAX_CHILD_SAS, MAX_PENDING_REQUESTS, IkeSa
    from ikev2lib.negotiation import ts_from_config, ts_within
    from ikev2lib.proposals import parse_proposals
    from ikev2lib.protection import MAX_FRAGMENTS, Reassembly, unprotect
    from ikev2lib.state import ChildState, IkeState
    from ikev2lib.wire import (
        KE,
        SA,
        Delete,
        Encrypted,
        EncryptedFragment,
        ExchangeType,
        Message,
        Nonce,
        Notify,
        NotifyType,
        Payload,
        PayloadType,
        Proposal,
        ProtocolId,
        RawTrafficSelector,
        TrafficSelector,
        Transform,
        TransformType,
        TSi,
        TSr,
        UnknownPayload,
        parse_payloads,
        serialize_payloads,
    )

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.engine.network import INITIATOR_IP, RESPONDER_IP, ike_config  # noqa: E402

# ---- named limits ------------------------------------------------------------------------------

SEED = 7296  # seeds every random value the engine draws during a replay
MAX_STRUCT_MUTATIONS = 8  # structure-aware operations on the decoded chain, per input
MAX_RAW_MUTATIONS = 4  # raw operations on the serialized chain, per input
MAX_SETTLE_DELIVERIES = 64  # datagrams delivered after the injection before both ends must be quiet
MAX_TIMER_JUMPS = 6  # optional jumps in simulated time after settling (retransmits, timeouts)
TIMER_JUMP = 80.0  # seconds per jump: past the first retransmission timeouts
MAX_DATAGRAMS_PER_INPUT = 96  # sent by both endpoints during one input (after the restore)
MAX_EVENTS_PER_INPUT = 64  # emitted by both endpoints during one input
MAX_IKE_SAS_PER_ENDPOINT = 6  # IKE SAs either endpoint may hold (the scenarios never have more than 3)
MAX_FRAGMENT_ORDER_OPS = 4  # swaps/duplicates/drops of SKF fragments before delivery
MAX_SCENARIO_STEPS = 400  # deliveries of one replay (bounds a replay that does not settle)
START = 1000.0  # simulated time of the replay
DEFAULT_MAX_LEN = 1024  # input bytes (libFuzzer -max_len) unless the command line says otherwise


class Finding(Exception):
    """An invariant of the engine does not hold: a bug to fix (atheris reports it as a crash)."""


class ReplayDiverged(Exception):
    """The restored state is not the captured one: a bug of this harness (or lost determinism)."""


# ---- determinism -------------------------------------------------------------------------------

_real_urandom = os.urandom
_real_generate = KeyExchange.generate.__func__  # type: ignore[attr-defined]


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Every os.urandom and KeyExchange.generate call of the engine draws from one seeded generator."""
    rng = random.Random(seed)

    def urandom(n: int) -> bytes:
        return rng.randbytes(n)

    def generate(cls: type[KeyExchange], group: int) -> KeyExchange:
        if int(group) in (31, 32):  # X25519/X448: any scalar is a valid private key (RFC 7748 clamps)
            return KeyExchange.from_private_bytes(group, rng.randbytes(32 if int(group) == 31 else 56))
        if int(group) == 19:  # P-256: a scalar below the group order
            return KeyExchange.from_private_bytes(group, b"\x00" + rng.randbytes(31))
        return _real_generate(cls, group)  # type: ignore[no-any-return]

    os.urandom = urandom
    KeyExchange.generate = classmethod(generate)  # type: ignore[method-assign, assignment, arg-type]
    try:
        yield
    finally:
        os.urandom = _real_urandom
        KeyExchange.generate = classmethod(_real_generate)  # type: ignore[method-assign, assignment, arg-type]


# ---- the pair and the scenario -----------------------------------------------------------------

# Two groups each: an INVALID_KE_PAYLOAD answer naming the other one starts a retry (RFC 7296 1.3).
IKE = "aes128gcm16-prfsha256-x25519-ecp256"
ESP = "aes128gcm16-x25519-ecp256"  # PFS: CREATE_CHILD_SA for Child SAs carries KE payloads too


def _with_transport(config: IkeConfig, local: str, remote: str, child_rekey: float | None = None) -> IkeConfig:
    tunnel = dc_replace(config.children[0], rekey_time=child_rekey)
    host = ChildConfig(name="host", esp_proposals=ESP, mode="transport", local_ts=(local,), remote_ts=(remote,))
    return dc_replace(config, children=(tunnel, host))


# Timed work (DPD, rekeys on time, hard lifetimes) is never due during a replay, whose clock stands
# still; the input's optional timer jumps (up to MAX_TIMER_JUMPS * TIMER_JUMP seconds) reach it.
# MOBIKE off: its float to port 4500 puts the non-ESP marker before the captured messages, which this
# harness opens as plain IKE (MOBIKE's notifies are fuzzed in tests/engine/test_mobike.py).
ICFG = _with_transport(
    ike_config(
        local_id="alice@example.org", remote_id="gw.example.org", ike=IKE, esp=ESP, dpd_delay=150.0,
        rekey_time=250.0, mobike=False,
    ),
    f"{INITIATOR_IP}/32", f"{RESPONDER_IP}/32",
)  # fmt: skip
RCFG = _with_transport(
    ike_config(
        local_id="gw.example.org", remote_id="alice@example.org", ike=IKE, esp=ESP, local_ts=("10.2.0.0/16",),
        remote_ts=("10.1.0.0/16",), rekey_time=330.0, mobike=False,
    ),
    f"{RESPONDER_IP}/32", f"{INITIATOR_IP}/32", child_rekey=200.0,
)  # fmt: skip
ADDRS = ((INITIATOR_IP, 500), (RESPONDER_IP, 500))


class EspFactoryFailure(Finding):
    pass


@dataclass
class Pair:
    """Initiator (0) and responder (1) endpoints, the datagrams in flight, what the factory saw."""

    endpoints: tuple[IkeEndpoint, IkeEndpoint]
    now: float = START
    in_flight: list[tuple[int, bytes]] = field(default_factory=list)  # (sender index, datagram)
    factory_errors: list[str] = field(default_factory=list)
    sent: int = 0  # datagrams collected from both endpoints
    log: list[tuple[int, bytes]] = field(default_factory=list)  # (sender, datagram) sent after `logging`
    logging: bool = False
    events: list[list[Event]] = field(default_factory=lambda: [[], []])
    delivered_creating: list[int] = field(default_factory=lambda: [0, 0])  # IKE_AUTH/CREATE_CHILD_SA

    def collect(self) -> None:
        for index, endpoint in enumerate(self.endpoints):
            for data, _addr in endpoint.datagrams_to_send(self.now):
                self.sent += 1
                self.in_flight.append((index, data))
                if self.logging:
                    self.log.append((index, data))
            while (event := endpoint.next_event()) is not None:
                self.events[index].append(event)

    def deliver(self, sender: int, data: bytes) -> None:
        receiver = 1 - sender
        try:
            header = Message.parse_header(data)
            # one per message: an SKF message counts with its fragment 1 (RFC 7383 2.5 numbering)
            first_fragment = header.next_payload != PayloadType.SKF or data[32:34] == b"\x00\x01"
            if header.exchange_type in (ExchangeType.IKE_AUTH, ExchangeType.CREATE_CHILD_SA) and first_fragment:
                self.delivered_creating[receiver] += 1
        except IKEv2Error:
            pass
        self.endpoints[receiver].receive_datagram(data, ADDRS[sender], self.now)


def new_pair() -> Pair:
    errors: list[str] = []

    def factory(params: EspParams) -> DataPlaneSA:
        # the engine turns any factory exception into a refusal; here it must never happen at all
        try:
            return default_esp_factory(params)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc} ({params!r})")
            raise

    initiator = IkeEndpoint(local_addr=ADDRS[0], esp_factory=factory)
    responder = IkeEndpoint(RCFG, local_addr=ADDRS[1], esp_factory=factory)
    pair = Pair((initiator, responder))
    pair.factory_errors = errors
    return pair


def _ike_id(endpoint: IkeEndpoint) -> int:
    ids = endpoint.ike_sa_ids()
    if not ids:
        raise ReplayDiverged("no IKE SA")
    return ids[0]


def _child(endpoint: IkeEndpoint, which: int) -> int:
    children = sorted(endpoint.connection(_ike_id(endpoint)).children)
    if not children:
        raise ReplayDiverged("no Child SA")
    return children[which]


def _peer_child(pair: Pair, which: int) -> tuple[int, int]:
    """(initiator's child_id, responder's child_id) of one Child SA, seen from both ends."""
    ours = pair.endpoints[0].connection(_ike_id(pair.endpoints[0])).children[_child(pair.endpoints[0], which)]
    theirs = pair.endpoints[1].connection(_ike_id(pair.endpoints[1])).children.values()
    peer = next((c for c in theirs if c.spi_in == ours.spi_out), None)
    if peer is None:
        raise ReplayDiverged("the ends disagree on their Child SAs")
    return ours.child_id, peer.child_id


def _both_rekey_child(pair: Pair) -> None:
    # both requests are in flight before either is delivered: a rekey collision (RFC 7296 2.8.1)
    ours, theirs = _peer_child(pair, -1)
    pair.endpoints[0].rekey_child_sa(_ike_id(pair.endpoints[0]), ours)
    pair.endpoints[1].rekey_child_sa(_ike_id(pair.endpoints[1]), theirs)


def _delete_while_rekeyed(pair: Pair) -> None:
    ours, theirs = _peer_child(pair, 0)
    pair.endpoints[0].delete_child_sa(_ike_id(pair.endpoints[0]), ours)
    pair.endpoints[1].rekey_child_sa(_ike_id(pair.endpoints[1]), theirs)


def _rekey_ike_against_child_rekey(pair: Pair) -> None:
    # the peer rekeys the IKE SA while our Child SA rekey is in flight: refused (TEMPORARY_FAILURE)
    pair.endpoints[0].rekey_child_sa(_ike_id(pair.endpoints[0]), _child(pair.endpoints[0], 0))
    pair.endpoints[1].rekey_ike_sa(_ike_id(pair.endpoints[1]))


def _both_rekey_ike(pair: Pair) -> None:
    pair.endpoints[0].rekey_ike_sa(_ike_id(pair.endpoints[0]))
    pair.endpoints[1].rekey_ike_sa(_ike_id(pair.endpoints[1]))


Action = Callable[[Pair], None]
_INITIATE: tuple[str, Action] = ("initiate", lambda p: p.endpoints[0].initiate(ICFG, ADDRS[1], p.now) and None)
# Short scenarios, each from a fresh handshake: restoring replays the prefix of one of them, so
# their length is what an input costs.
SCENARIOS: list[list[tuple[str, Action]]] = [
    [
        _INITIATE,
        ("I creates a Child SA", lambda p: p.endpoints[0].create_child_sa(_ike_id(p.endpoints[0]))),
        ("R rekeys a Child SA", lambda p: p.endpoints[1].rekey_child_sa(_ike_id(p.endpoints[1]), _child(p.endpoints[1], 0))),
        ("I rekeys a Child SA", lambda p: p.endpoints[0].rekey_child_sa(_ike_id(p.endpoints[0]), _child(p.endpoints[0], -1))),
        ("I deletes a Child SA", lambda p: p.endpoints[0].delete_child_sa(_ike_id(p.endpoints[0]), _child(p.endpoints[0], 0))),
        ("R sends a DPD", lambda p: p.endpoints[1].send_dpd(_ike_id(p.endpoints[1]))),
        ("I creates a transport-mode Child SA",
         lambda p: p.endpoints[0].create_child_sa(_ike_id(p.endpoints[0]), ICFG.children[1])),
    ],
    [
        _INITIATE,
        ("both rekey the same Child SA", _both_rekey_child),
        ("I deletes a Child SA that R rekeys", _delete_while_rekeyed),
    ],
    [
        _INITIATE,
        ("I rekeys the IKE SA", lambda p: p.endpoints[0].rekey_ike_sa(_ike_id(p.endpoints[0]))),
        ("R creates a Child SA", lambda p: p.endpoints[1].create_child_sa(_ike_id(p.endpoints[1]))),
        ("R rekeys the IKE SA", lambda p: p.endpoints[1].rekey_ike_sa(_ike_id(p.endpoints[1]))),
        ("I deletes the IKE SA", lambda p: p.endpoints[0].delete_ike_sa(_ike_id(p.endpoints[0]))),
    ],
    [
        _INITIATE,
        ("both rekey the IKE SA", _both_rekey_ike),
        ("R rekeys the IKE SA while I rekeys a Child SA", _rekey_ike_against_child_rekey),
        ("I sends a DPD", lambda p: p.endpoints[0].send_dpd(_ike_id(p.endpoints[0]))),
        ("R deletes the IKE SA", lambda p: p.endpoints[1].delete_ike_sa(_ike_id(p.endpoints[1]))),
    ],
]


@dataclass(frozen=True)
class Captured:
    """One message of a scenario: who sent it, its datagrams (several if in SKF fragments)."""

    scenario: int
    position: int  # in its scenario
    sender: int
    datagrams: tuple[bytes, ...]
    label: str

    @property
    def header(self) -> Any:
        return Message.parse_header(self.datagrams[0])


def _message_key(data: bytes) -> tuple[bytes, bytes, int, int, int]:
    h = Message.parse_header(data)
    return (h.spi_i, h.spi_r, h.message_id, h.flags, h.exchange_type)


def run_scenario(
    scenario: int, stop_at: int | None, chains: list[list[Payload]] | None = None
) -> tuple[Pair, list[Captured]]:
    """Replay one scenario with the seeded generator. With `stop_at`, stop before delivering message
    number `stop_at` (its datagrams are taken off the wire, the rest stays in flight). With `chains`,
    collect the decrypted payload chain of every protected message."""
    pair = new_pair()
    messages: list[Captured] = []
    steps = 0
    for label, action in SCENARIOS[scenario]:
        action(pair)
        while True:
            pair.collect()
            if not pair.in_flight:
                break
            sender, data = pair.in_flight.pop(0)
            # the other fragments of the same message were queued right behind it
            group = [data]
            key = _message_key(data)
            while pair.in_flight and pair.in_flight[0][0] == sender and _message_key(pair.in_flight[0][1]) == key:
                group.append(pair.in_flight.pop(0)[1])
            messages.append(Captured(scenario, len(messages), sender, tuple(group), label))
            if stop_at is not None and len(messages) == stop_at + 1:
                return pair, messages
            if chains is not None and messages[-1].header.exchange_type != ExchangeType.IKE_SA_INIT:
                chains.append(open_captured(pair, messages[-1]))
            for datagram in group:
                pair.deliver(sender, datagram)
            steps += 1
            if steps > MAX_SCENARIO_STEPS:
                raise ReplayDiverged("the scenario does not settle")
        if chains is not None:
            agree(pair, label)
    return pair, messages


def agree(pair: Pair, label: str) -> None:
    """Two honest ends, once quiet, hold the same IKE SA and the same installed Child SAs, each
    end's inbound keys the other's outbound ones (checked on the capture, which nothing mutates)."""
    live = []
    for endpoint in pair.endpoints:
        ids = endpoint.ike_sa_ids()
        live.append(endpoint.connection(ids[0]) if ids else None)
    ours, theirs = live
    if ours is None or theirs is None:
        if ours is not theirs:
            raise Finding(f"after {label!r}: one end has an IKE SA, the other not")
        return
    if (ours.spi_i, ours.spi_r) != (theirs.spi_i, theirs.spi_r):
        raise Finding(f"after {label!r}: the ends use different IKE SAs")
    mine = {(c.spi_in, c.spi_out, c.keys_in, c.keys_out, c.state) for c in ours.children.values()}
    peer = {(c.spi_out, c.spi_in, c.keys_out, c.keys_in, c.state) for c in theirs.children.values()}
    if mine != peer or any(c[4] != ChildState.INSTALLED for c in mine):
        raise Finding(f"after {label!r}: the ends disagree on their Child SAs")


# ---- opening and sealing -----------------------------------------------------------------------


def find_sa(endpoint: IkeEndpoint, spi_i: bytes, spi_r: bytes) -> IkeSa:
    for sa in endpoint.connections():
        if sa.spi_i == spi_i and sa.spi_r == spi_r:
            return sa
    raise ReplayDiverged("the receiving IKE SA is gone")


def direction_cipher(sa: IkeSa, from_initiator: bool) -> SKCipher:
    """A fresh SK cipher for one direction of `sa`, from its keys (the live objects stay untouched)."""
    keys, selected = sa.keys, sa.selected
    if keys is None or selected is None:
        raise ReplayDiverged("the IKE SA has no keys")
    enc, integ = (keys.sk_ei, keys.sk_ai) if from_initiator else (keys.sk_er, keys.sk_ar)
    return sk_cipher(selected.encr_id, selected.encr_key_bits, selected.integ_id, enc, integ)


def open_message(cipher: SKCipher, datagrams: tuple[bytes, ...]) -> list[Payload]:
    """The inner payload chain of a captured message (SK, or SKF fragments reassembled)."""
    first = Message.parse(datagrams[0])
    if isinstance(first.payloads[-1], Encrypted):
        return unprotect(cipher, datagrams[0], first)
    reassembly = Reassembly()
    for data in datagrams:
        payloads = reassembly.add(cipher, data, Message.parse(data), first.is_response)
        if payloads is not None:
            return payloads
    raise ReplayDiverged("captured SKF message is incomplete")


@dataclass
class Shell:
    """The header fields a re-protected message carries."""

    spi_i: bytes
    spi_r: bytes
    exchange_type: int
    message_id: int
    is_initiator: bool
    is_response: bool


def seal(cipher: SKCipher, shell: Shell, first: int, plain: bytes) -> bytes:
    """One datagram: header + SK payload around `plain` (RFC 7296 3.14: AAD = header + SK header)."""
    body = bytes(cipher.body_length(len(plain)))
    message = Message(
        spi_i=shell.spi_i, spi_r=shell.spi_r, exchange_type=shell.exchange_type, message_id=shell.message_id,
        payloads=[Encrypted(first, body)], is_initiator=shell.is_initiator, is_response=shell.is_response,
    )  # fmt: skip
    aad = message.serialize()[: 28 + 4]
    return aad + cipher.encrypt(aad, plain)


def seal_fragments(cipher: SKCipher, shell: Shell, first: int, plain: bytes, chunk: int) -> list[bytes]:
    """SKF fragments (RFC 7383 2.5) of `chunk` plaintext octets each, numbered 1..n."""
    chunk = max(1, chunk)
    pieces = [plain[i : i + chunk] for i in range(0, len(plain), chunk)] or [b""]
    out = []
    for number, piece in enumerate(pieces, start=1):
        body = bytes(cipher.body_length(len(piece)))
        message = Message(
            spi_i=shell.spi_i, spi_r=shell.spi_r, exchange_type=shell.exchange_type, message_id=shell.message_id,
            payloads=[EncryptedFragment(first if number == 1 else 0, number, len(pieces), body)],
            is_initiator=shell.is_initiator, is_response=shell.is_response,
        )  # fmt: skip
        aad = message.serialize()[: 28 + 8]
        out.append(aad + cipher.encrypt(aad, piece))
    return out


def open_captured(pair: Pair, captured: Captured) -> list[Payload]:
    """Decrypt a protected message of the scenario with the live keys of the IKE SA receiving it."""
    header = captured.header
    sa = find_sa(pair.endpoints[1 - captured.sender], header.spi_i, header.spi_r)
    return open_message(direction_cipher(sa, bool(header.flags & 0x08)), captured.datagrams)


# ---- the capture, once per process -------------------------------------------------------------

CHAINS: list[list[Payload]] = []  # the decrypted chain of every target, in order (splice material)
CAPTURED: list[Captured] = []  # every message of every scenario
for _number in range(len(SCENARIOS)):
    with deterministic(SEED):
        _, _messages = run_scenario(_number, None, CHAINS)
    with deterministic(SEED):
        _, _again = run_scenario(_number, None)
    if [c.datagrams for c in _again] != [c.datagrams for c in _messages]:
        raise ReplayDiverged("two replays of a scenario differ: the engine drew randomness we did not seed")
    CAPTURED += _messages
del _number, _messages, _again
# IKE_SA_INIT travels in clear: fuzz_engine.py covers it. Every protected message is a target.
TARGETS = [i for i, c in enumerate(CAPTURED) if c.header.exchange_type != ExchangeType.IKE_SA_INIT]


def restore(index: int) -> tuple[Pair, Captured]:
    """A fresh pair in the state right before message `index` of CAPTURED is delivered."""
    wanted = CAPTURED[index]
    pair, messages = run_scenario(wanted.scenario, wanted.position)
    if messages[-1] != wanted:
        raise ReplayDiverged(f"replay of message {index} differs from the capture")
    return pair, messages[-1]


def following(index: int) -> list[Captured]:
    """The messages of the same scenario after message `index` of CAPTURED."""
    scenario = CAPTURED[index].scenario
    return [c for c in CAPTURED[index + 1 :] if c.scenario == scenario]


SPLICE = [p for chain in CHAINS for p in chain]  # payloads of every target


# ---- mutations ---------------------------------------------------------------------------------

INTERESTING_NOTIFIES = [int(t) for t in NotifyType] + [0, 8191, 16383, 16384, 40959, 65535]
INTERESTING_PAYLOAD_TYPES = list(range(33, 55)) + [0, 1, 32, 55, 128, 255]
GROUPS = [0, 1, 2, 14, 19, 20, 21, 31, 32, 35, 36, 37, 1024, 65535]


class Mutator:
    """Applies the input's structure-aware operations to a decoded chain."""

    def __init__(self, fdp: Any, spis: list[bytes], splice: list[Payload]) -> None:
        self.fdp = fdp
        self.spis = spis  # live ESP and IKE SPIs: Delete and REKEY_SA mutations point at real SAs
        self.splice = splice

    def pick(self, items: list[Any]) -> Any:
        return items[self.fdp.ConsumeIntInRange(0, len(items) - 1)]

    def some_bytes(self, limit: int) -> bytes:
        return bytes(self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, limit)))

    def some_spi(self) -> bytes:
        choice = self.fdp.ConsumeIntInRange(0, 3)
        if choice == 0 and self.spis:
            return bytes(self.pick(self.spis))
        if choice == 1:
            return self.some_bytes(16)
        if choice == 2:
            return bytes(self.fdp.ConsumeBytes(4)).ljust(4, b"\0")
        return bytes(self.fdp.ConsumeBytes(8)).ljust(8, b"\0")

    def apply(self, payloads: list[Payload]) -> list[Payload]:
        for _ in range(self.fdp.ConsumeIntInRange(0, MAX_STRUCT_MUTATIONS)):
            trial = copy.deepcopy(payloads)
            try:
                self.one(trial)
                serialize_payloads(trial)  # a value the codec cannot encode: skip this operation
            except (LocalProtocolError, IndexError, ValueError, OverflowError, struct.error):
                continue
            payloads = trial
        return payloads

    def one(self, payloads: list[Payload]) -> None:
        fdp = self.fdp
        op = fdp.ConsumeIntInRange(0, 11)
        if op == 0 and payloads:  # drop
            del payloads[fdp.ConsumeIntInRange(0, len(payloads) - 1)]
        elif op == 1 and payloads:  # duplicate
            p = self.pick(payloads)
            payloads.insert(fdp.ConsumeIntInRange(0, len(payloads)), copy.deepcopy(p))
        elif op == 2 and len(payloads) > 1:  # move
            p = payloads.pop(fdp.ConsumeIntInRange(0, len(payloads) - 1))
            payloads.insert(fdp.ConsumeIntInRange(0, len(payloads)), p)
        elif op == 3 and payloads:  # payload type: the same body under another type number
            i = fdp.ConsumeIntInRange(0, len(payloads) - 1)
            body = payloads[i]._body()
            payloads[i] = UnknownPayload(self.pick(INTERESTING_PAYLOAD_TYPES), body, fdp.ConsumeBool())
        elif op == 4 and payloads:  # critical bit
            p = self.pick(payloads)
            p.critical = not p.critical
        elif op == 5:  # splice a payload of another captured message (or a crafted one)
            payloads.insert(fdp.ConsumeIntInRange(0, len(payloads)), self.crafted())
        elif op == 6:
            notifies = [p for p in payloads if isinstance(p, Notify)]
            if notifies:
                self.notify(self.pick(notifies))
        elif op == 7:
            sas = [p for p in payloads if isinstance(p, SA)]
            if sas:
                self.sa(self.pick(sas))
        elif op == 8:
            tss = [p for p in payloads if isinstance(p, (TSi, TSr))]
            if tss:
                self.ts(self.pick(tss))
        elif op == 9:
            deletes = [p for p in payloads if isinstance(p, Delete)]
            if deletes:
                self.delete(self.pick(deletes))
        elif op == 10:
            kes = [p for p in payloads if isinstance(p, (KE, Nonce))]
            if kes:
                self.ke_or_nonce(self.pick(kes))
        elif op == 11 and payloads:  # raw body of one payload
            i = fdp.ConsumeIntInRange(0, len(payloads) - 1)
            body = bytearray(payloads[i]._body())
            if body and fdp.ConsumeBool():
                body[fdp.ConsumeIntInRange(0, len(body) - 1)] = fdp.ConsumeIntInRange(0, 255)
            else:
                body = body[: fdp.ConsumeIntInRange(0, len(body))] + self.some_bytes(8)
            payloads[i] = UnknownPayload(int(payloads[i].payload_type), bytes(body), payloads[i].critical)

    def crafted(self) -> Payload:
        fdp = self.fdp
        kind = fdp.ConsumeIntInRange(0, 6)
        if kind == 6:  # an answer asking for another group (a retry, if we offered it)
            return Notify(NotifyType.INVALID_KE_PAYLOAD, int(self.pick(GROUPS)).to_bytes(2, "big"))
        if kind == 0 and self.splice:
            return copy.deepcopy(self.pick(self.splice))
        if kind == 1:
            return Notify(self.pick(INTERESTING_NOTIFIES), self.some_bytes(8), fdp.ConsumeIntInRange(0, 4), self.some_spi())
        if kind == 2:
            return Delete(fdp.ConsumeIntInRange(0, 4), [self.some_spi() for _ in range(fdp.ConsumeIntInRange(0, 3))])
        if kind == 3:
            protocol = self.pick([ProtocolId.IKE, ProtocolId.ESP, ProtocolId.AH, 0, 7])
            spi = self.some_spi()
            text = "aes128gcm16-prfsha256-x25519" if protocol == ProtocolId.IKE else ESP
            try:
                proposals = parse_proposals(text, ProtocolId.IKE if protocol == ProtocolId.IKE else ProtocolId.ESP)
            except LocalProtocolError:
                proposals = []
            for p in proposals:
                p.protocol_id = protocol
                p.spi = spi
            return SA(proposals)
        if kind == 4:
            return KE(self.pick(GROUPS), self.some_bytes(64))
        return Nonce(self.some_bytes(40).ljust(16, b"\0"))

    def notify(self, n: Notify) -> None:
        fdp = self.fdp
        what = fdp.ConsumeIntInRange(0, 3)
        if what == 0:
            n.notify_type = self.pick(INTERESTING_NOTIFIES)
        elif what == 1:
            n.protocol_id = fdp.ConsumeIntInRange(0, 5)
        elif what == 2:
            n.spi = self.some_spi()
        else:
            n.data = self.some_bytes(16)

    def sa(self, sa: SA) -> None:
        fdp = self.fdp
        if not sa.proposals or fdp.ConsumeIntInRange(0, 7) == 0:
            sa.proposals.append(copy.deepcopy(sa.proposals[0]) if sa.proposals and fdp.ConsumeBool() else Proposal(1, 3))
            return
        p: Proposal = self.pick(sa.proposals)
        what = fdp.ConsumeIntInRange(0, 7)
        if what == 0:
            p.number = fdp.ConsumeIntInRange(0, 255)
        elif what == 1:
            p.protocol_id = fdp.ConsumeIntInRange(0, 4)
        elif what == 2:  # SPI size and value
            p.spi = self.some_spi()
        elif what == 3 and p.transforms:
            del p.transforms[fdp.ConsumeIntInRange(0, len(p.transforms) - 1)]
        elif what == 4 and p.transforms:
            p.transforms.insert(fdp.ConsumeIntInRange(0, len(p.transforms)), self.pick(p.transforms))
        elif what == 5 and p.transforms:
            i = fdp.ConsumeIntInRange(0, len(p.transforms) - 1)
            t = p.transforms[i]
            field_ = fdp.ConsumeIntInRange(0, 2)
            if field_ == 0:
                t = t._replace(transform_type=fdp.ConsumeIntInRange(0, 6))
            elif field_ == 1:
                t = t._replace(transform_id=self.pick([0, 1, 2, 3, 5, 12, 14, 19, 20, 28, 31, 36, 1024]))
            else:
                t = t._replace(key_length=self.pick([None, 0, 64, 128, 192, 256, 65535]))
            p.transforms[i] = t
        elif what == 6:  # a KE transform appears (IKE_AUTH) or changes group
            kes = [i for i, t in enumerate(p.transforms) if int(t.transform_type) == TransformType.KE]
            group = self.pick(GROUPS)
            if kes:
                p.transforms[kes[0]] = Transform(TransformType.KE, group)
            else:
                p.transforms.append(Transform(TransformType.KE, group))
        else:
            del sa.proposals[fdp.ConsumeIntInRange(0, len(sa.proposals) - 1)]

    def ts(self, payload: TSi | TSr) -> None:
        fdp = self.fdp
        selectors = payload.selectors
        what = fdp.ConsumeIntInRange(0, 4)
        if what == 0 or not selectors:
            selectors.append(self.pick([
                TrafficSelector.from_network("0.0.0.0/0"), TrafficSelector.from_network("10.0.0.0/8"),
                TrafficSelector.from_network("10.1.2.0/24"), TrafficSelector.from_network("10.2.0.0/16"),
                TrafficSelector.from_network("::/0"), TrafficSelector.from_network("10.1.0.0/16", 17, 53, 53),
                RawTrafficSelector(10, self.some_bytes(12)),
            ]))  # fmt: skip
            return
        i = fdp.ConsumeIntInRange(0, len(selectors) - 1)
        s = selectors[i]
        if what == 1:
            del selectors[i]
        elif what == 2 and isinstance(s, TrafficSelector):
            s.ip_protocol = fdp.ConsumeIntInRange(0, 255)
            s.start_port, s.end_port = fdp.ConsumeIntInRange(0, 65535), fdp.ConsumeIntInRange(0, 65535)
        elif what == 3 and isinstance(s, TrafficSelector):
            if fdp.ConsumeBool():
                s.start_address, s.end_address = s.end_address, s.start_address
            else:
                size = len(s.start_address)
                s.start_address = bytes(fdp.ConsumeBytes(size)).ljust(size, b"\0")
                s.end_address = bytes(fdp.ConsumeBytes(size)).ljust(size, b"\xff")
        else:
            selectors.insert(i, copy.deepcopy(s))

    def delete(self, d: Delete) -> None:
        fdp = self.fdp
        what = fdp.ConsumeIntInRange(0, 2)
        if what == 0:
            d.protocol_id = fdp.ConsumeIntInRange(0, 4)
        elif what == 1:
            d.spis = [self.some_spi() for _ in range(fdp.ConsumeIntInRange(0, 4))]
            if d.spis:
                size = len(d.spis[0])
                d.spis = [s[:size].ljust(size, b"\0") for s in d.spis]
        else:
            d.spis = d.spis + d.spis

    def ke_or_nonce(self, p: KE | Nonce) -> None:
        fdp = self.fdp
        if isinstance(p, KE):
            if fdp.ConsumeBool():
                p.group = self.pick(GROUPS)
            else:
                p.data = p.data[: fdp.ConsumeIntInRange(0, len(p.data))] + self.some_bytes(8)
        else:
            size = self.pick([0, 1, 15, 16, 17, 32, 255, 256, 257])
            p.data = (p.data * 9)[:size]


def raw_mutations(fdp: Any, first: int, plain: bytes) -> tuple[int, bytes]:
    """Byte-level operations on the serialized inner chain (header fields of the inner payloads)."""
    buf = bytearray(plain)
    offsets: list[int] = []  # generic payload headers, found by walking the unmutated chain
    pos = 0
    while pos + 4 <= len(buf):
        offsets.append(pos)
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        if length < 4:
            break
        pos += length
    for _ in range(fdp.ConsumeIntInRange(0, MAX_RAW_MUTATIONS)):
        op = fdp.ConsumeIntInRange(0, 6)
        if op == 0 and buf:
            bit = fdp.ConsumeIntInRange(0, len(buf) * 8 - 1)
            buf[bit // 8] ^= 1 << (bit % 8)
        elif op == 1 and buf:
            buf[fdp.ConsumeIntInRange(0, len(buf) - 1)] = fdp.ConsumeIntInRange(0, 255)
        elif op == 2 and offsets:  # a payload length field
            at = offsets[fdp.ConsumeIntInRange(0, len(offsets) - 1)]
            value = fdp.ConsumeIntInRange(0, 0xFFFF)
            if at + 4 <= len(buf):  # (an earlier truncation may have cut it off)
                buf[at + 2 : at + 4] = value.to_bytes(2, "big")
        elif op == 3 and offsets:  # a next-payload field
            at = offsets[fdp.ConsumeIntInRange(0, len(offsets) - 1)]
            value = fdp.ConsumeIntInRange(0, 255)
            if at < len(buf):
                buf[at] = value
        elif op == 4:
            first = fdp.PickValueInList(INTERESTING_PAYLOAD_TYPES)
        elif op == 5:
            del buf[fdp.ConsumeIntInRange(0, len(buf)) :]
        else:
            at = fdp.ConsumeIntInRange(0, len(buf))
            buf[at:at] = bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16)))
    return first, bytes(buf)


# ---- invariants --------------------------------------------------------------------------------


def _policy(config: IkeConfig) -> tuple[set[tuple[int, int, int | None]], list[Any], list[Any]]:
    allowed: set[tuple[int, int, int | None]] = set()
    for cfg in config.children:
        for proposal in parse_proposals(cfg.esp_proposals, ProtocolId.ESP):
            for t in proposal.transforms:
                allowed.add((int(t.transform_type), int(t.transform_id), t.key_length))
    local = [ts_from_config(n) for cfg in config.children for n in cfg.local_ts]
    remote = [ts_from_config(n) for cfg in config.children for n in cfg.remote_ts]
    return allowed, local, remote


POLICIES = (_policy(ICFG), _policy(RCFG))


@dataclass
class Snapshot:
    mids: dict[tuple[int, bytes], tuple[int, int]]
    sent: int
    events: tuple[int, int]
    children: tuple[int, int]
    creating: tuple[int, int]  # IKE_AUTH/CREATE_CHILD_SA messages delivered to each end so far


def snapshot(pair: Pair) -> Snapshot:
    mids = {}
    children = [0, 0]
    for index, endpoint in enumerate(pair.endpoints):
        for sa in endpoint.connections():
            mids[(index, sa.local_spi)] = (sa._send_mid, sa._recv_mid)
            children[index] += len(sa.children)
    return Snapshot(
        mids, pair.sent, (len(pair.events[0]), len(pair.events[1])), (children[0], children[1]),
        (pair.delivered_creating[0], pair.delivered_creating[1]),
    )  # fmt: skip


def check(pair: Pair, before: Snapshot) -> None:
    if pair.factory_errors:
        raise EspFactoryFailure(pair.factory_errors[0])
    produced = pair.sent - before.sent
    if produced > MAX_DATAGRAMS_PER_INPUT:
        raise Finding(f"{produced} datagrams for one input (limit {MAX_DATAGRAMS_PER_INPUT})")
    for index, endpoint in enumerate(pair.endpoints):
        events = pair.events[index][before.events[index] :]
        if len(events) > MAX_EVENTS_PER_INPUT:
            raise Finding(f"endpoint {index}: {len(events)} events for one input (limit {MAX_EVENTS_PER_INPUT})")
        if not all(isinstance(e, Event) for e in events):
            raise Finding(f"endpoint {index}: a non-Event came out of next_event()")
        sas = list(endpoint.connections())
        if len(sas) > MAX_IKE_SAS_PER_ENDPOINT:
            raise Finding(f"endpoint {index} holds {len(sas)} IKE SAs")
        allowed, local_ts, remote_ts = POLICIES[index]
        children = 0
        spis_in: set[bytes] = set()
        for sa in sas:
            if not isinstance(sa.state, IkeState) or sa.finished != (sa.state in (IkeState.DELETED, IkeState.FAILED)):
                raise Finding(f"endpoint {index}: {sa!r} has an invalid state")
            if sa.finished:
                raise Finding(f"endpoint {index}: finished {sa!r} still registered")
            previous = before.mids.get((index, sa.local_spi))
            mids = (sa._send_mid, sa._recv_mid)
            if previous is not None and (mids[0] < previous[0] or mids[1] < previous[1]):
                raise Finding(f"endpoint {index}: message IDs of {sa!r} went back from {previous} to {mids}")
            if len(sa._queue) > MAX_PENDING_REQUESTS:
                raise Finding(f"endpoint {index}: {len(sa._queue)} queued requests on {sa!r}")
            if len(sa.children) > MAX_CHILD_SAS:
                raise Finding(f"endpoint {index}: {len(sa.children)} Child SAs on {sa!r}")
            if sa.window_free and sa.state == IkeState.DELETING:
                raise Finding(f"endpoint {index}: {sa!r} deleting with no Delete in flight")
            for child in sa.children.values():
                children += 1
                if not isinstance(child.state, ChildState) or child.state == ChildState.DELETED:
                    raise Finding(f"endpoint {index}: Child SA {child.child_id} in state {child.state}")
                if sa.window_free and child.state in (ChildState.REKEYING, ChildState.DELETING):
                    raise Finding(f"endpoint {index}: Child SA {child.child_id} stuck {child.state.value}")
                if child.spi_in in spis_in or child.spi_in not in endpoint.ctx.esp_spis:
                    raise Finding(f"endpoint {index}: Child SA {child.child_id} inbound SPI not reserved or shared")
                spis_in.add(child.spi_in)
                for t in child.selected.transforms:
                    if (int(t.transform_type), int(t.transform_id), t.key_length) not in allowed:
                        raise Finding(f"endpoint {index}: Child SA {child.child_id} uses {t!r}, not configured")
                if not ts_within(child.local_ts_wire, local_ts) or not ts_within(child.remote_ts_wire, remote_ts):
                    raise Finding(f"endpoint {index}: Child SA {child.child_id} selectors outside the configuration")
        # each IKE_AUTH/CREATE_CHILD_SA message (request or answer) may install one Child SA at most
        creating = pair.delivered_creating[index] - before.creating[index]
        created = sum(1 for e in events if isinstance(e, (ChildSaCreated, ChildSaRekeyed)))
        if created > creating or children > before.children[index] + creating:
            raise Finding(f"endpoint {index}: {created} Child SAs created ({children} now) from {creating} messages")


# ---- one input ---------------------------------------------------------------------------------


def settle(pair: Pair) -> None:
    for _ in range(MAX_SETTLE_DELIVERIES):
        pair.collect()
        if not pair.in_flight:
            return
        sender, data = pair.in_flight.pop(0)
        pair.deliver(sender, data)
    pair.collect()
    if pair.in_flight:
        raise Finding(f"both ends still talking after {MAX_SETTLE_DELIVERIES} deliveries")


def live_spis(pair: Pair) -> list[bytes]:
    out: list[bytes] = []
    for endpoint in pair.endpoints:
        for sa in endpoint.connections():
            out += [sa.spi_i, sa.spi_r]
            for child in sa.children.values():
                out += [child.spi_in, child.spi_out]
    return out


Mutation = Callable[[list[Payload]], list[Payload]]


def build(
    fdp: Any, pair: Pair, target: Captured, mutation: Mutation | None, chunk: int | None
) -> tuple[list[bytes], int, bytes]:
    """The datagrams that replace the target message (its chain mutated and re-protected), the
    mutated chain's first payload type and octets. `mutation` (tests) replaces the input's chain
    operations, `chunk` forces SKF framing."""
    header = target.header
    receiver = pair.endpoints[1 - target.sender]
    sa = find_sa(receiver, header.spi_i, header.spi_r)
    from_initiator = bool(header.flags & 0x08)
    payloads = open_message(direction_cipher(sa, from_initiator), target.datagrams)
    if mutation is not None:
        payloads = mutation(payloads)
    else:
        payloads = Mutator(fdp, live_spis(pair), SPLICE).apply(payloads)
    first, plain = serialize_payloads(payloads)
    if fdp.ConsumeIntInRange(0, 3) == 3:  # a quarter of the inputs: most raw edits end in the codec
        first, plain = raw_mutations(fdp, first, plain)
    shell = Shell(header.spi_i, header.spi_r, int(header.exchange_type), header.message_id, from_initiator,
                  bool(header.flags & 0x20))  # fmt: skip
    if fdp.ConsumeIntInRange(0, 15) == 15:  # rare; an exhausted provider reads the minimum
        what = fdp.ConsumeIntInRange(0, 3)
        if what == 0:
            shell.exchange_type = fdp.PickValueInList([34, 35, 36, 37, 0, 255])
        elif what == 1:
            shell.message_id = (shell.message_id + fdp.ConsumeIntInRange(-2, 2)) & 0xFFFFFFFF
        elif what == 2:
            shell.is_response = not shell.is_response
        else:
            shell.message_id = fdp.ConsumeIntInRange(0, 0xFFFFFFFF)
    cipher = direction_cipher(sa, from_initiator)
    if chunk is not None:
        return seal_fragments(cipher, shell, first, plain, chunk), first, plain
    if not fdp.ConsumeBool():
        return [seal(cipher, shell, first, plain)], first, plain
    chunk = fdp.ConsumeIntInRange(1, 600)
    if -(-len(plain) // chunk) > MAX_FRAGMENTS + 2:
        chunk = max(1, -(-len(plain) // MAX_FRAGMENTS))
    fragments = seal_fragments(cipher, shell, first, plain, chunk)
    for _ in range(fdp.ConsumeIntInRange(0, MAX_FRAGMENT_ORDER_OPS)):
        op = fdp.ConsumeIntInRange(0, 2)
        i, j = fdp.ConsumeIntInRange(0, len(fragments) - 1), fdp.ConsumeIntInRange(0, len(fragments) - 1)
        if op == 0:
            fragments[i], fragments[j] = fragments[j], fragments[i]
        elif op == 1:
            fragments.insert(j, fragments[i])
        elif len(fragments) > 1:
            del fragments[i]
    return fragments, first, plain


@dataclass
class Outcome:
    """What one input did (for tests and `describe`)."""

    target: int  # index into CAPTURED
    injected: list[bytes]
    pair: Pair
    opened: bool  # the receiving IKE SA decrypted the injected message and parsed its inner chain
    before: Snapshot
    pending: int  # datagrams of the scenario already in flight when the target was taken off the wire
    first: int  # the mutated inner chain: its first payload type
    chain: bytes  # and its octets

    def new_events(self, side: int) -> list[Event]:
        """Events endpoint `side` (0 initiator, 1 responder) emitted during the input."""
        return self.pair.events[side][self.before.events[side] :]


def run_input(
    data: bytes, *, mutation: Mutation | None = None, chunk: int | None = None, checked: bool = True
) -> Outcome:
    """One input: restore, mutate, re-protect, deliver, settle, check (Finding on a violation;
    `checked=False` leaves the check to the caller)."""
    fdp = atheris.FuzzedDataProvider(data)
    index = TARGETS[fdp.ConsumeIntInRange(0, len(TARGETS) - 1)]
    with deterministic(SEED):
        pair, target = restore(index)
        pending = len(pair.in_flight)
        before = snapshot(pair)
        pair.now += 1.0  # last_heard moves to this time only once the injected message is opened
        pair.logging = True
        header = target.header
        receiving = find_sa(pair.endpoints[1 - target.sender], header.spi_i, header.spi_r)
        datagrams, first, chain = build(fdp, pair, target, mutation, chunk)
        for datagram in datagrams:
            pair.deliver(target.sender, datagram)
        opened = receiving.last_heard == pair.now
        then_original = fdp.ConsumeIntInRange(0, 7) == 7  # the real message after the forged one
        jumps = fdp.ConsumeIntInRange(0, MAX_TIMER_JUMPS) if fdp.ConsumeIntInRange(0, 3) == 3 else 0
        settle(pair)
        if then_original:
            for datagram in target.datagrams:
                pair.deliver(target.sender, datagram)
            settle(pair)
        for _ in range(jumps):
            pair.now += TIMER_JUMP
            for endpoint in pair.endpoints:
                endpoint.handle_timer(pair.now)
            settle(pair)
        if checked:
            check(pair, before)
    return Outcome(index, datagrams, pair, opened, before, pending, first, chain)


def test_one_input(data: bytes) -> None:
    run_input(data)


def describe(data: bytes) -> str:
    """What one input does, for reading a crash: the target, the mutated chain, the injected
    datagrams, each end's events and the invariant check's verdict."""
    outcome = run_input(data, checked=False)
    target = CAPTURED[outcome.target]
    header = target.header
    lines = [
        f"target {outcome.target}: {target.label!r}, {getattr(header.exchange_type, 'name', header.exchange_type)} "
        f"{'response' if header.flags & 0x20 else 'request'} from the {('initiator', 'responder')[target.sender]}",
        f"decrypted and parsed: {outcome.opened}",
    ]
    try:
        lines.append(f"mutated chain: {parse_payloads(outcome.first, outcome.chain)!r}")
    except IKEv2Error as exc:
        lines.append(f"mutated chain (first {outcome.first}, {outcome.chain.hex()}) does not parse: {exc}")
    lines += [f"injected: {Message.parse(d)!r}" for d in outcome.injected]
    for side in (0, 1):
        lines.append(f"events of the {('initiator', 'responder')[side]}:")
        lines += [f"  {e!r}" for e in outcome.new_events(side)]
    try:
        check(outcome.pair, outcome.before)
        lines.append("invariants hold")
    except Finding as exc:
        lines.append(f"FINDING: {type(exc).__name__}: {exc}")
    return "\n".join(lines)


def seed_inputs() -> list[tuple[str, bytes]]:
    """One input per target with no mutation: (name, bytes)."""
    out = []
    for n, index in enumerate(TARGETS):
        label = CAPTURED[index].label.replace(" ", "-")
        out.append((f"{n:02d}-{index:02d}-{label}", noop_input(n)))
    return out


def noop_input(target_number: int) -> bytes:
    """An input that picks target number `target_number` and mutates nothing (SK framing): the
    target choice is its only byte, and every later choice reads the minimum from an exhausted
    provider (no operations, SK not SKF, no header change, no timer jumps)."""
    for value in range(256):
        if atheris.FuzzedDataProvider(bytes([value])).ConsumeIntInRange(0, len(TARGETS) - 1) == target_number:
            return bytes([value])
    raise IndexError(target_number)


if __name__ == "__main__":
    if sys.argv[1:2] == ["describe"]:
        for name in sys.argv[2:]:
            print(f"== {name}\n{describe(Path(name).read_bytes())}")
        sys.exit(0)
    args = list(sys.argv)
    corpus = next((a for a in args[1:] if not a.startswith("-") and Path(a).is_dir()), None)
    if corpus is None and not any(not a.startswith("-") for a in args[1:]):
        import tempfile

        corpus = tempfile.mkdtemp(prefix="ikev2lib-fuzz-authenticated-")
        args.append(corpus)
    if corpus is not None:
        for name, seed in seed_inputs():
            (Path(corpus) / f"seed-{name}").write_bytes(seed)
    # the seeds are one byte long: without these libFuzzer would grow inputs too slowly to reach the
    # structure-aware operations (each takes a few bytes); explicit flags win
    if not any(a.startswith("-max_len=") for a in args):
        args.append(f"-max_len={DEFAULT_MAX_LEN}")
    if not any(a.startswith("-len_control=") for a in args):
        args.append("-len_control=0")
    # -jobs/-fork start workers through the shell with argv[0] as the command: name the interpreter
    args[0] = f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))}"
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()
