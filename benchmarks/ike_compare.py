"""IKE engine speed and scale, each figure with a baseline measured in the same run.

Three parts (each can be skipped):

1. in-process: complete handshakes/s (IKE_SA_INIT + IKE_AUTH with the first Child SA; PSK, X25519,
   AES-128-GCM, HMAC-SHA256 PRF) with both engines in this process, against the bare crypto of one
   handshake (2 X25519 key pairs + 2 shared secrets, SKEYSEED/SK_* at both ends, 2 SK encrypts + 2 SK
   decrypts, 4 PSK AUTH values, 2 Child KEYMATs); the ratio is the share of a handshake spent in
   crypto. Then a cProfile of the handshake loop: the top functions and the time per module family.
2. udp: an ikev2lib initiator in one network namespace drives handshakes over UDP (each IKE SA fresh,
   deleted once established, a bounded number in flight) against (a) the ikev2lib responder on its
   asyncio driver and (b) strongSwan's charon, both in the other namespace (tests/interop harness).
   Needs root and strongswan-charon; bounded by --udp-handshakes and --udp-seconds per responder.
3. scale: one responder endpoint holding N established IKE SAs, each with its Child SA and live DPD and
   rekey timers; memory per SA (RSS delta and tracemalloc, each in a fresh child process) and the cost
   of get_timer / handle_timer / firing one due timer at 100, 1,000 and N SAs.

Prints a table, then (LAST line) one JSON object with every figure, the ratios and the targets met
(`targets`, `targets_met`). Every speed target is a ratio against a baseline measured in the same run
(absolute rates vary between runs on a shared machine): crypto_share >= 0.5 (engine handshakes/s over
bare-crypto handshakes/s, interleaved), and over UDP the ikev2lib responder's handshakes per responder
CPU-second >= 1.5x strongSwan's, measured alternately. The memory target is a size (bytes per SA), not
a rate, and the timer target a growth ratio against the smallest N of the same run.

Usage: .venv/bin/python benchmarks/ike_compare.py [--seconds 2] [--quick] [--skip-udp] [--skip-scale]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.crypto import KeyExchange, derive_child_keymat, derive_ike_keys, psk_auth_data, signed_octets, sk_cipher
from ikev2lib.endpoint import MAX_IKE_SAS, MAX_SAS_PER_PEER, IkeEndpoint
from ikev2lib.events import ChildSaCreated, IkeSaDeleted, IkeSaEstablished, PeerDead, ProtocolErrorEvent
from ikev2lib.exchanges import next_deadline
from ikev2lib.wire import ExchangeType, Message

ROOT = Path(__file__).resolve().parents[1]

# Targets (speed is reported, never asserted in tests). Speed targets are same-run ratios only.
TARGET_CRYPTO_SHARE = 0.5  # in-process engine handshakes/s / bare-crypto handshakes/s
TARGET_UDP_PER_CPU_VS_STRONGSWAN = 1.5  # handshakes per responder CPU-second, ikev2lib / strongSwan
TARGET_ECDSA_PER_CPU_VS_STRONGSWAN = 1.0  # the same with ECDSA P-256 certificates on both sides
TARGET_BYTES_PER_SA = 16 * 1024  # per established IKE SA with its Child SA
TARGET_TIMER_GROWTH = 3.0  # timer cost at N SAs / at 100 SAs: "flat" means a heap/wheel, not a scan

PSK = b"ikev2lib-benchmark-psk-0123456789"
IKE_PROPOSAL = "aes128gcm16-prfsha256-x25519"
ESP_PROPOSAL = "aes128gcm16"
BATCH = MAX_SAS_PER_PEER  # handshakes per initiator address: the responder's per-peer limit
MAX_ROUNDS = 16  # bound on datagram ping-pong rounds per handshake (IKE_SA_INIT + IKE_AUTH need 2)
PROFILE_HANDSHAKES = 400  # handshakes under cProfile
INCLUSIVE_CUTOFF = 0.15  # inclusive-time list: skip functions above this share (whole exchanges)
MAX_MEASURE_ROUNDS = 400  # bound on the timing rounds whatever the clock does
SCALE_WORKER_TIMEOUT = 300.0  # seconds for one scale child process
UDP_START_TIMEOUT = 15.0  # seconds for a responder to bind its sockets
UDP_HANDSHAKES = 1_000  # handshakes per responder (also bounded by --udp-seconds)
UDP_ROUNDS = 3  # alternating runs per responder; the best one is reported
UDP_INFLIGHT = 16  # IKE SAs in flight at the initiator (below the responder's MAX_SAS_PER_PEER)
INITIATOR_CPU, RESPONDER_CPU = 0, 1  # cores the two sides are pinned to
INITIATOR_BOUND = 0.8  # initiator CPU / wall time above which the initiator, not the responder, limits
TIMER_CALLS = 2_000  # upper bound on get_timer/handle_timer calls per measurement
TIMER_SECONDS = 0.3  # and time bound
TIMER_FIRES = 50  # due timers fired per measurement (each one a DPD request going out)
SOCKETPAIR_TIMEOUT = 10.0  # seconds a scale worker waits for the other side of its socketpair

# Module families for the profile summary (first match wins).
_FAMILIES = (
    ("ikev2lib/wire/", "codec (ikev2lib/wire)"),
    ("ikev2lib/crypto/", "IKE crypto glue (ikev2lib/crypto)"),
    ("ikev2lib/esp/", "ESP SA setup (ikev2lib/esp)"),
    ("ikev2lib/negotiation", "negotiation.py"),
    ("ikev2lib/proposals", "proposals.py"),
    ("ikev2lib/", "engine (other ikev2lib modules)"),
    ("ipaddress.py", "stdlib ipaddress"),
    ("_rust", "OpenSSL/Rust primitives"),
    ("x25519", "OpenSSL/Rust primitives"),
    ("_hashlib", "OpenSSL/Rust primitives"),
    ("cryptography", "cryptography (Python side)"),
    ("built-in method", "other builtins"),
    ("method '", "other builtins"),
    ("benchmarks/", "benchmark driver"),
)


# --------------------------------------------------------------------------------------------------
# configs and in-process wiring


def initiator_config(**auth: Any) -> IkeConfig:
    """`auth`: IkeConfig fields for certificates (`cert_auth`); PSK without."""
    return IkeConfig(
        ike_proposals=IKE_PROPOSAL, local_id="left", remote_id="right", psk=PSK,
        children=(ChildConfig(esp_proposals=ESP_PROPOSAL, local_ts=("10.1.0.0/16",), remote_ts=("10.2.0.0/16",)),),
        **auth,
    )  # fmt: skip


def cert_auth(pki: Any, name: str) -> dict[str, Any]:
    """IkeConfig fields for ECDSA P-256 certificate authentication both ways (a pki_files test PKI)."""
    return {"local_auth": "pubkey", "remote_auth": "pubkey", "credentials": (pki.leaf(name),), "trust": pki.trust()}


def responder_config(*, timers: bool = False, **auth: Any) -> IkeConfig:
    # timers=True: DPD and IKE/Child rekeying armed on every SA (the scale part)
    child = ChildConfig(
        esp_proposals=ESP_PROPOSAL, local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",),
        rekey_time=1800.0 if timers else None,
    )  # fmt: skip
    return IkeConfig(
        ike_proposals=IKE_PROPOSAL, local_id="right", remote_id=None, psk=PSK, children=(child,),
        dpd_delay=300.0 if timers else None, rekey_time=3600.0 if timers else None, **auth,
    )  # fmt: skip


RESPONDER = ("127.0.0.2", 500)  # labels only: in-process datagrams never reach a socket


def initiator_address(index: int) -> tuple[str, int]:
    return (f"127.1.{index // 250}.{index % 250 + 1}", 500)


def shuttle(a: IkeEndpoint, b: IkeEndpoint, now: float) -> int:
    """Hand datagrams between two endpoints until both are quiet; returns the datagrams moved."""
    moved = 0
    a_addr, b_addr = a.ctx.local_addr, b.ctx.local_addr
    for _ in range(MAX_ROUNDS):
        out_a = a.datagrams_to_send(now)
        for data, _addr in out_a:
            b.receive_datagram(data, a_addr, now)
        out_b = b.datagrams_to_send(now)
        for data, _addr in out_b:
            a.receive_datagram(data, b_addr, now)
        moved += len(out_a) + len(out_b)
        if not out_a and not out_b:
            return moved
    raise RuntimeError("endpoints did not settle")


def count_established(endpoint: IkeEndpoint) -> tuple[int, int]:
    """(IkeSaEstablished, ChildSaCreated) events drained from `endpoint`."""
    ike = child = 0
    while (event := endpoint.next_event()) is not None:
        if isinstance(event, IkeSaEstablished):
            ike += 1
        elif isinstance(event, ChildSaCreated):
            child += 1
    return ike, child


def handshake_batch(count: int, cfg: IkeConfig, rcfg: IkeConfig, now: float = 1000.0) -> None:
    """`count` complete handshakes one after the other on a fresh endpoint pair; checks they completed."""
    ini = IkeEndpoint(local_addr=initiator_address(0))
    res = IkeEndpoint(rcfg, local_addr=RESPONDER, cookie_threshold=MAX_IKE_SAS)
    for _ in range(count):
        ini.initiate(cfg, RESPONDER, now)
        shuttle(ini, res, now)
    if count_established(ini) != (count, count) or count_established(res) != (count, count):
        raise RuntimeError("a handshake did not complete")


# --------------------------------------------------------------------------------------------------
# 1. in-process handshakes vs the bare crypto


_AUTH_REQUEST = bytes(260)  # plaintext of a typical IKE_AUTH request chain (IDi, AUTH, SA, TSi, TSr, N)
_AUTH_RESPONSE = bytes(200)
_AAD = bytes(32)  # IKE header + SK generic header
_SA_INIT = bytes(400)  # stands in for the IKE_SA_INIT message bytes signed by AUTH


def bare_crypto_handshake() -> None:
    """The cryptographic work of one handshake at both ends, nothing else."""
    ni, nr, spi_i, spi_r = os.urandom(32), os.urandom(32), os.urandom(8), os.urandom(8)
    kex_i = KeyExchange.generate(31)
    kex_r = KeyExchange.generate(31)
    secret_r = kex_r.shared_secret(kex_i.public_bytes())
    secret_i = kex_i.shared_secret(kex_r.public_bytes())
    ends = []
    for secret in (secret_i, secret_r):
        _, keys = derive_ike_keys(5, 20, 128, None, secret, ni, nr, spi_i, spi_r)
        ends.append((keys, sk_cipher(20, 128, None, keys.sk_ei), sk_cipher(20, 128, None, keys.sk_er)))
    (ki, out_i, in_i), (kr, in_r, out_r) = ends[0], ends[1]
    for sender_keys, receiver_keys in ((ki, kr), (kr, ki)):  # AUTH made by one side, checked by the other
        for keys in (sender_keys, receiver_keys):
            psk_auth_data(5, PSK, signed_octets(5, keys.sk_pi, _SA_INIT, nr, b"\x02\x00\x00\x00left"))
    in_r.decrypt(_AAD, out_i.encrypt(_AAD, _AUTH_REQUEST))
    in_i.decrypt(_AAD, out_r.encrypt(_AAD, _AUTH_RESPONSE))
    for keys in (ki, kr):
        derive_child_keymat(5, keys.sk_d, ni, nr, 40)


def interleaved_rates(fns: dict[str, tuple[Callable[[], None], int]], seconds: float) -> dict[str, float]:
    """Best units/s of each function over rounds taken in turn (so that load from other processes
    hits every candidate alike), for about `seconds` in all. fns: name -> (call, units per call)."""
    best = dict.fromkeys(fns, 0.0)
    deadline = time.perf_counter() + seconds
    for _ in range(MAX_MEASURE_ROUNDS):
        for name, (fn, units) in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = max(best[name], units / (time.perf_counter() - start))
        if time.perf_counter() > deadline:
            break
    return best


def crypto_rounds(count: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(count):
            bare_crypto_handshake()

    return run


def measure_inprocess(seconds: float) -> dict[str, Any]:
    cfg, rcfg = initiator_config(), responder_config()
    handshake_batch(2, cfg, rcfg)  # warm-up (imports, caches)
    rates = interleaved_rates(
        {
            "engine": (lambda: handshake_batch(BATCH, cfg, rcfg), BATCH),
            "crypto": (crypto_rounds(BATCH), BATCH),
        },
        seconds,
    )
    return {
        "handshakes_per_s": rates["engine"],
        "bare_crypto_handshakes_per_s": rates["crypto"],
        "crypto_share": rates["engine"] / rates["crypto"],
    }


def _family(location: str) -> str:
    for needle, name in _FAMILIES:
        if needle in location:
            return name
    return "other stdlib/Python"


def profile_handshakes(count: int, top: int = 15) -> dict[str, Any]:
    cfg, rcfg = initiator_config(), responder_config()
    handshake_batch(2, cfg, rcfg)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count // BATCH):
        handshake_batch(BATCH, cfg, rcfg)
    profiler.disable()
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    rows = []
    families: dict[str, float] = {}
    for (filename, line, func), (_cc, calls, tottime, cumtime, _callers) in raw.items():
        where = f"{filename}:{line}({func})" if line else f"{filename}{func}"
        short = where.replace(str(ROOT) + "/", "")
        short = short.split("site-packages/")[-1].split("lib/python3.11/")[-1]
        rows.append((tottime, cumtime, calls, short))
        families[_family(where)] = families.get(_family(where), 0.0) + tottime
    rows.sort(reverse=True)
    handshakes = (count // BATCH) * BATCH
    # ikev2lib functions by inclusive time, without the entry points that contain everything
    inclusive = sorted(
        ((cum, calls, short) for _t, cum, calls, short in rows
         if short.startswith("ikev2lib/") and cum / total <= INCLUSIVE_CUTOFF),
        reverse=True,
    )  # fmt: skip
    return {
        "handshakes": handshakes,
        "profiled_us_per_handshake": total / handshakes * 1e6,
        "top": [
            {"function": f, "share": t / total, "us_per_handshake": t / handshakes * 1e6,
             "calls_per_handshake": c / handshakes, "cumulative_share": cum / total}
            for t, cum, c, f in rows[:top]
        ],  # fmt: skip
        "top_inclusive": [
            {"function": f, "share": cum / total, "calls_per_handshake": c / handshakes} for cum, c, f in inclusive[:top]
        ],
        "families": {k: v / total for k, v in sorted(families.items(), key=lambda kv: -kv[1])},
    }


# --------------------------------------------------------------------------------------------------
# 3. scale (runs in child processes: `--scale-worker rss|tracemalloc --n N`)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_responder(n: int, start: float) -> tuple[IkeEndpoint, float]:
    """A responder holding `n` established IKE SAs (each with one Child SA), made by real handshakes
    from initiators that are discarded afterwards. Handshake i happens at `start + i * 0.005` so the
    SAs' timers are spread out. Returns (responder, simulated time after the last handshake)."""
    if n > MAX_IKE_SAS:
        raise ValueError(f"the engine holds at most MAX_IKE_SAS={MAX_IKE_SAS} IKE SAs")
    cfg = initiator_config()
    res = IkeEndpoint(responder_config(timers=True), local_addr=RESPONDER, cookie_threshold=MAX_IKE_SAS)
    now = start
    made = 0
    for peer in range(-(-n // BATCH)):
        ini = IkeEndpoint(local_addr=initiator_address(peer))
        for _ in range(min(BATCH, n - made)):
            ini.initiate(cfg, RESPONDER, now)
            shuttle(ini, res, now)
            made += 1
            now += 0.005
        count_established(ini)
        count_established(res)
    return res, now


def _initiator_process(sock: socket.socket, n: int) -> None:
    """Forked child of a scale worker: drives `n` handshakes against the responder in the parent
    through a SOCK_SEQPACKET socketpair (2-octet initiator index, then the datagram), so that no
    initiator state lives in the process whose memory is measured. A batch of handshakes is kept in
    flight (the responder answers every request with one datagram), so both processes work at once."""
    cfg = initiator_config()
    sock.settimeout(SOCKETPAIR_TIMEOUT)
    now = 1000.0
    made = 0
    for peer in range(-(-n // BATCH)):
        ini = IkeEndpoint(local_addr=initiator_address(peer))
        tag = peer.to_bytes(2, "big")
        batch = min(BATCH, n - made)
        waiting = 0

        def flush() -> int:
            out = ini.datagrams_to_send(now)
            for data, _addr in out:
                sock.send(tag + data)
            return len(out)

        for _ in range(batch):
            ini.initiate(cfg, RESPONDER, now)
            waiting += flush()
            now += 0.005
        for _ in range(MAX_ROUNDS * batch):
            if not waiting:
                break
            ini.receive_datagram(sock.recv(65535), RESPONDER, now)
            waiting -= 1
            waiting += flush()
        made += batch
        if count_established(ini) != (batch, batch):
            raise RuntimeError("a handshake did not complete")
    sock.send(b"")


def build_responder_split(n: int, start: float) -> tuple[IkeEndpoint, float]:
    """Like `build_responder`, with the initiators in a forked child process (see above)."""
    if n > MAX_IKE_SAS:
        raise ValueError(f"the engine holds at most MAX_IKE_SAS={MAX_IKE_SAS} IKE SAs")
    res = IkeEndpoint(responder_config(timers=True), local_addr=RESPONDER, cookie_threshold=MAX_IKE_SAS)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        ours.close()
        tracemalloc.stop()  # only the responder's allocations are of interest
        code = 0
        try:
            _initiator_process(theirs, n)
        except BaseException as exc:  # reported through the exit code and stderr
            print(f"initiator process: {exc!r}", file=sys.stderr)
            code = 1
        os._exit(code)
    theirs.close()
    ours.settimeout(SOCKETPAIR_TIMEOUT)
    now = start
    try:
        while True:
            message = ours.recv(65535)
            if not message:
                break
            peer = int.from_bytes(message[:2], "big")
            res.receive_datagram(message[2:], initiator_address(peer), now)
            for data, _addr in res.datagrams_to_send(now):
                ours.send(data)
            count_established(res)
            now += 0.0025  # two requests per handshake: 5 ms apart, as in build_responder
    finally:
        ours.close()
        _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError("the initiator process failed")
    return res, now


def check_live(res: IkeEndpoint, n: int) -> int:
    """Number of established IKE SAs with exactly one Child SA and a pending timer (should be n)."""
    live = 0
    for conn in res.connections():
        if conn.state.name == "ESTABLISHED" and len(conn.children) == 1 and next_deadline(conn) is not None:
            live += 1
    return live


def _per_call(fn: Callable[[], Any]) -> float:
    """Seconds per call in the steady state (a first call absorbs one-off work such as the lazy
    clean-up of a timer heap after the build)."""
    fn()
    calls = 0
    start = time.perf_counter()
    deadline = start + TIMER_SECONDS
    while calls < TIMER_CALLS:
        fn()
        calls += 1
        if time.perf_counter() > deadline:
            break
    return (time.perf_counter() - start) / calls


def timer_costs(res: IkeEndpoint, now: float) -> dict[str, float]:
    """Microseconds for get_timer(), an idle handle_timer(now), and one full timer cycle
    (get_timer + handle_timer at the deadline + datagrams_to_send) that fires a due timer."""
    idle_get = _per_call(res.get_timer)
    idle_handle = _per_call(lambda: res.handle_timer(now))
    fired = sent = 0
    start = time.perf_counter()
    deadline = start + 2 * TIMER_SECONDS
    for _ in range(TIMER_FIRES):
        due = res.get_timer()
        if due is None:
            break
        res.handle_timer(due)
        sent += len(res.datagrams_to_send(due))
        fired += 1
        if time.perf_counter() > deadline:
            break
    cycle = (time.perf_counter() - start) / max(fired, 1)
    while res.next_event() is not None:
        pass
    # What a driver does per received datagram (drivers/asyncio_udp.py: receive_datagram, then
    # transmit() = datagrams_to_send + get_timer), for a datagram the engine drops at once.
    stray = Message(spi_i=os.urandom(8), spi_r=os.urandom(8), exchange_type=ExchangeType.INFORMATIONAL,
                    message_id=0, payloads=[], is_initiator=True, is_response=False).serialize()  # fmt: skip

    def driver_datagram() -> None:
        res.receive_datagram(stray, initiator_address(0), now)
        res.datagrams_to_send(now)
        res.get_timer()

    per_datagram = _per_call(driver_datagram)
    return {"get_timer_us": idle_get * 1e6, "handle_timer_idle_us": idle_handle * 1e6,
            "fire_one_timer_us": cycle * 1e6, "driver_datagram_us": per_datagram * 1e6,
            "timers_fired": fired, "datagrams_sent": sent}  # fmt: skip


def scale_worker(mode: str, n: int) -> dict[str, Any]:
    cfg, rcfg = initiator_config(), responder_config()
    handshake_batch(4, cfg, rcfg)  # imports and caches outside the measured delta
    gc.collect()
    result: dict[str, Any] = {"mode": mode, "n": n}
    if mode == "tracemalloc":
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    rss0 = rss_bytes()
    started = time.perf_counter()
    res, now = build_responder_split(n, 1000.0)
    result["build_seconds"] = time.perf_counter() - started
    gc.collect()
    result["live_sas"] = check_live(res, n)
    if mode == "tracemalloc":
        current = tracemalloc.get_traced_memory()[0]
        result["traced_bytes_per_sa"] = (current - base) / n
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        top = snapshot.statistics("lineno")[:10]
        result["top_allocations"] = [
            {"where": f"{s.traceback[0].filename.replace(str(ROOT) + '/', '')}:{s.traceback[0].lineno}",
             "bytes_per_sa": s.size / n, "blocks_per_sa": s.count / n}
            for s in top
        ]  # fmt: skip
    else:
        result["rss_bytes_per_sa"] = (rss_bytes() - rss0) / n
        result["timers"] = timer_costs(res, now)
    return result


def run_scale_worker(mode: str, n: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--scale-worker", mode, "--n", str(n)],
        capture_output=True, text=True, timeout=SCALE_WORKER_TIMEOUT,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"scale worker {mode} {n} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure_scale(n: int) -> dict[str, Any]:
    sizes = sorted({min(100, n), min(1000, n), n})
    timers = {}
    rss = {}
    for size in sizes:
        worker = run_scale_worker("rss", size)
        if worker["live_sas"] != size:
            raise RuntimeError(f"only {worker['live_sas']} of {size} SAs are established with live timers")
        timers[size] = worker["timers"]
        rss[size] = worker["rss_bytes_per_sa"]
        build_rate = size / worker["build_seconds"]
    traced = run_scale_worker("tracemalloc", n)
    small, large = timers[sizes[0]], timers[n]
    growth = {k: large[k] / small[k] for k in ("get_timer_us", "handle_timer_idle_us", "fire_one_timer_us",
                                                "driver_datagram_us")}
    per_sa = max(rss[n], traced["traced_bytes_per_sa"])
    return {
        "n": n,
        "rss_bytes_per_sa": rss[n],
        "rss_bytes_per_sa_by_n": rss,
        "traced_bytes_per_sa": traced["traced_bytes_per_sa"],
        "top_allocations": traced["top_allocations"],
        "build_handshakes_per_s": build_rate,
        "timers": timers,
        "timer_growth_vs_smallest": growth,
        "bytes_per_sa": per_sa,
    }


# --------------------------------------------------------------------------------------------------
# 2. handshakes over UDP between network namespaces


def udp_initiator(local: str, remote: str, total: int, seconds: float, inflight: int,
                  cfg: IkeConfig | None = None) -> dict[str, Any]:
    """Runs inside the left namespace: a plain select() loop around one initiator endpoint. Each IKE SA
    is deleted as soon as it is established; at most `inflight` exist at once. Bounded by `total`
    handshakes and `seconds`."""
    _pin(INITIATOR_CPU)
    endpoint = IkeEndpoint(local_addr=(local, 500))
    ike = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    natt = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ike.bind((local, 500))
    natt.bind((local, 4500))
    for s in (ike, natt):
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    cfg = cfg or initiator_config()
    clock = time.monotonic
    started_at: dict[int, float] = {}
    open_sas: set[int] = set()
    established: set[int] = set()
    latencies: list[float] = []
    failed = started = 0
    cpu0 = os.times()
    t0 = clock()
    last_done = t0
    deadline = t0 + seconds

    def flush(now: float) -> None:
        for data, addr in endpoint.datagrams_to_send(now):
            (natt if data[:4] == b"\x00\x00\x00\x00" else ike).sendto(data, addr)

    while clock() < deadline and (started < total or open_sas):
        now = clock()
        while started < total and len(open_sas) < inflight:
            sa = endpoint.initiate(cfg, (remote, 500), now)
            started_at[sa] = now
            open_sas.add(sa)
            started += 1
        flush(now)
        due = endpoint.get_timer()
        wait = 0.05 if due is None else min(0.05, max(0.0, due - now))
        ready, _, _ = select.select([ike, natt], [], [], wait)
        now = clock()
        for sock in ready:
            for _ in range(256):  # bounded drain per wake-up
                try:
                    data, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                if sock is natt and data[:4] != b"\x00\x00\x00\x00":
                    continue  # ESP or keepalive: not measured here
                endpoint.receive_datagram(data, addr, now)
        due = endpoint.get_timer()
        if due is not None and due <= now:
            endpoint.handle_timer(now)
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, IkeSaEstablished) and event.ike_sa_id is not None:
                established.add(event.ike_sa_id)
                latencies.append(now - started_at[event.ike_sa_id])
                last_done = now
                endpoint.delete_ike_sa(event.ike_sa_id)
            elif isinstance(event, IkeSaDeleted) and event.ike_sa_id in open_sas:
                open_sas.discard(event.ike_sa_id)
                if event.ike_sa_id not in established:
                    failed += 1
            elif isinstance(event, (PeerDead, ProtocolErrorEvent)):
                pass  # counted when the IKE SA goes away
        flush(now)
    cpu1 = os.times()
    ike.close()
    natt.close()
    latencies.sort()
    done = len(established)
    return {
        "completed": done,
        "failed": failed,
        "unfinished": len(open_sas),
        "seconds": last_done - t0,
        "handshakes_per_s": done / (last_done - t0) if done else 0.0,
        "median_latency_ms": latencies[len(latencies) // 2] * 1e3 if latencies else None,
        "initiator_cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        "initiator_retransmissions": endpoint.stats.get("retransmissions", 0),
    }


def ikev2lib_responder(local: str, ready_path: str, stop_path: str, seconds: float,
                       rcfg: IkeConfig | None = None) -> dict[str, Any]:
    """Runs inside the right namespace: the ikev2lib responder on its asyncio driver until
    `stop_path` exists (or `seconds` pass)."""
    import asyncio

    from ikev2lib.drivers.asyncio_udp import AsyncioIkeDriver

    _pin(RESPONDER_CPU)

    async def main() -> dict[str, Any]:
        config = rcfg or responder_config()
        driver = await AsyncioIkeDriver.create(
            lambda addr: IkeEndpoint(config, local_addr=addr, cookie_threshold=MAX_IKE_SAS), host=local
        )
        counts = {"established": 0, "deleted": 0}

        async def drain() -> None:
            while True:
                event = await driver.next_event()
                if isinstance(event, IkeSaEstablished):
                    counts["established"] += 1
                elif isinstance(event, IkeSaDeleted):
                    counts["deleted"] += 1

        task = asyncio.get_running_loop().create_task(drain())
        Path(ready_path).touch()
        end = time.monotonic() + seconds
        while not os.path.exists(stop_path) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        task.cancel()
        driver.close()
        return counts

    return asyncio.run(main())


def _pin(cpu: int, pid: int = 0) -> None:
    """Keep a process (every thread of it) on one core, so that the initiator and the responder do
    not take turns on the same one; a no-op on a machine with a single core."""
    if os.cpu_count() and os.cpu_count() > max(INITIATOR_CPU, RESPONDER_CPU):  # type: ignore[operator]
        tasks = [int(t) for t in os.listdir(f"/proc/{pid}/task")] if pid else [0]
        for tid in tasks:
            try:
                os.sched_setaffinity(tid, {cpu})
            except OSError:
                pass  # a thread that just ended


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _annotate(run: dict[str, Any]) -> dict[str, Any]:
    busy = run["initiator_cpu_s"] / run["seconds"] if run["seconds"] > 0 else 0.0
    run["limited_by"] = "initiator CPU" if busy >= INITIATOR_BOUND else "responder (or round trips)"
    cpu = run["responder_cpu_s"]
    run["handshakes_per_responder_cpu_s"] = run["completed"] / cpu if cpu > 0 else None
    return run


def measure_udp(total: int, seconds: float, inflight: int, rounds: int, *, certificates: bool = False) -> dict[str, Any]:
    """`rounds` alternating runs against each responder (each in its own namespace pair, both up for
    the whole measurement); the best run of each is kept, as other load on the machine only slows.
    `certificates`: ECDSA P-256 certificates with an intermediate CA on every side instead of a PSK."""
    sys.path.insert(0, str(ROOT / "tests"))
    from interop.netns import NamespacePair, require_root
    from interop.pki_files import build_pki, write_swanctl_credentials
    from interop.strongswan import CHARON, Charon, CharonSettings, psk_connection_pair

    icfg = rcfg = None
    conn_options: dict[str, Any] = {}
    if certificates:
        pki = build_pki("p256")
        icfg, rcfg = initiator_config(**cert_auth(pki, "left")), responder_config(**cert_auth(pki, "right"))
        charon_credential = pki.leaf("right")
        conn_options = {"auth": "pubkey", "local_extra": {"certs": "own.pem"}}

    require_root()
    if not os.path.exists(CHARON):
        raise RuntimeError(f"{CHARON} not found (apt strongswan-charon)")
    runs: dict[str, list[dict[str, Any]]] = {"ikev2lib": [], "strongswan": []}
    work = Path(tempfile.mkdtemp(prefix="ike-compare-"))
    try:
        with NamespacePair() as ours, NamespacePair() as theirs:
            # (a) the ikev2lib responder on its asyncio driver
            ready, stop = work / "ready", work / "stop"
            budget = rounds * (seconds + 10) + 30
            responder = ours.right.start(ikev2lib_responder, ours.right_addr, str(ready), str(stop), budget, rcfg)
            _wait_for(ready.exists, UDP_START_TIMEOUT, "the ikev2lib responder")
            # (b) strongSwan's charon, same proposals, no DoS protection (COOKIEs) on either side
            _, right_cfg = psk_connection_pair(
                theirs.left_addr, theirs.right_addr, proposals=[IKE_PROPOSAL], esp_proposals=[ESP_PROPOSAL],
                left_id="left", right_id="right", psk=PSK.decode(), **conn_options,
            )  # fmt: skip
            settings = CharonSettings(log_levels={"default": 0}, dos_protection=False)
            with Charon(theirs.right, work / "charon", settings, name="right") as charon:
                if certificates:
                    write_swanctl_credentials(charon.swanctl_dir, charon_credential, [pki.root])
                charon.load(right_cfg)
                charon_pid = _charon_pid(theirs.right.name)
                _pin(RESPONDER_CPU, charon_pid)
                sides = {"ikev2lib": (ours, responder.pid), "strongswan": (theirs, charon_pid)}
                for _ in range(rounds):
                    for name, (pair, pid) in sides.items():
                        cpu0 = _cpu_seconds(pid)
                        run = pair.left.call(udp_initiator, pair.left_addr, pair.right_addr, total, seconds,
                                             inflight, icfg, timeout=seconds + 30)  # fmt: skip
                        run["responder_cpu_s"] = _cpu_seconds(pid) - cpu0
                        runs[name].append(_annotate(run))
            stop.touch()
            counts = responder.result(timeout=15)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results: dict[str, Any] = {}
    for name, done in runs.items():
        results[name] = max(done, key=lambda r: r["handshakes_per_s"])
        results[name]["all_rates"] = [r["handshakes_per_s"] for r in done]
        results[name]["all_per_responder_cpu_s"] = [r["handshakes_per_responder_cpu_s"] for r in done]
        results[name]["all_initiator_cpu_s"] = [r["initiator_cpu_s"] for r in done]
        per_cpu = [r["handshakes_per_responder_cpu_s"] for r in done if r["handshakes_per_responder_cpu_s"]]
        results[name]["best_handshakes_per_responder_cpu_s"] = max(per_cpu) if per_cpu else None
    results["ikev2lib"]["responder_counts"] = counts
    a, b = results["ikev2lib"], results["strongswan"]
    results["ratio_ikev2lib_vs_strongswan"] = (
        a["handshakes_per_s"] / b["handshakes_per_s"] if b["handshakes_per_s"] else None
    )
    if a["best_handshakes_per_responder_cpu_s"] and b["best_handshakes_per_responder_cpu_s"]:
        results["ratio_per_cpu_ikev2lib_vs_strongswan"] = (
            a["best_handshakes_per_responder_cpu_s"] / b["best_handshakes_per_responder_cpu_s"]
        )
    results.update(handshakes_requested=total, inflight=inflight, rounds=rounds,
                   auth="ECDSA P-256 certificates" if certificates else "PSK")
    return results


def _charon_pid(netns: str) -> int:
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10).stdout.split()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "charon":
                return int(pid)
        except OSError:
            continue
    raise RuntimeError("charon process not found")


# --------------------------------------------------------------------------------------------------
# targets and output


def check_targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with its baseline, threshold and what this run measured; `met` is None for a part
    that did not run. Speed targets compare two rates of this run, never an absolute rate."""
    ip, udp, sc = report.get("inprocess"), report.get("udp") or {}, report.get("scale")
    per_cpu = udp.get("ratio_per_cpu_ikev2lib_vs_strongswan")
    ecdsa_per_cpu = (report.get("udp_ecdsa") or {}).get("ratio_per_cpu_ikev2lib_vs_strongswan")
    growth = max(sc["timer_growth_vs_smallest"].values()) if sc else None
    rows = {
        "crypto_share": (ip["crypto_share"] if ip else None, ">=", TARGET_CRYPTO_SHARE,
                         "bare-crypto handshakes/s, same run (interleaved rounds)"),
        "udp_per_responder_cpu_vs_strongswan": (per_cpu, ">=", TARGET_UDP_PER_CPU_VS_STRONGSWAN,
                                                "strongSwan responder, same run (alternating rounds)"),
        "ecdsa_udp_per_responder_cpu_vs_strongswan": (ecdsa_per_cpu, ">=", TARGET_ECDSA_PER_CPU_VS_STRONGSWAN,
                                                      "strongSwan responder with ECDSA P-256 certificates, same run"),
        "bytes_per_sa": (sc["bytes_per_sa"] if sc else None, "<=", TARGET_BYTES_PER_SA,
                         "none: a size, not a rate (max of RSS delta and tracemalloc)"),
        "timer_growth": (growth, "<=", TARGET_TIMER_GROWTH, "timer cost at the smallest N of the same run"),
    }  # fmt: skip
    out = {}
    for name, (measured, op, target, baseline) in rows.items():
        met = None if measured is None else (measured >= target if op == ">=" else measured <= target)
        out[name] = {"measured": measured, "target": f"{op} {target}", "baseline": baseline, "met": met}
    return out



def _print_udp(udp: dict[str, Any] | None) -> None:
    if udp and "error" not in udp:
        print(f"== UDP between namespaces, {udp['auth']}: {udp['handshakes_requested']} handshakes, "
              f"{udp['inflight']} in flight, delete after establish; best of {udp['rounds']} alternating runs")
        for name in ("ikev2lib", "strongswan"):
            r = udp[name]
            print(f"  {name:10} responder  {r['handshakes_per_s']:6.0f} /s  (runs: "
                  + ", ".join(f"{x:.0f}" for x in r["all_rates"]) + f"), completed {r['completed']}, failed "
                  f"{r['failed']}, median {r['median_latency_ms'] or 0:.1f} ms, "
                  f"{r['best_handshakes_per_responder_cpu_s'] or 0:.0f} per responder CPU-s; limited by {r['limited_by']}")
        print(f"  ratio ikev2lib / strongSwan: {udp['ratio_ikev2lib_vs_strongswan']:.2f} (wall), "
              f"{udp.get('ratio_per_cpu_ikev2lib_vs_strongswan', 0):.2f} (per responder CPU second)")
    elif udp:
        print(f"== UDP part not run: {udp['error']}")


def print_report(report: dict[str, Any]) -> None:
    ip = report.get("inprocess")
    if ip:
        print("== in-process complete handshakes (IKE_SA_INIT + IKE_AUTH + Child SA; PSK, x25519, aes128gcm16)")
        print(f"  ikev2lib engine, both ends      {ip['handshakes_per_s']:10.0f} /s")
        print(f"  bare crypto of one handshake    {ip['bare_crypto_handshakes_per_s']:10.0f} /s")
        print(f"  crypto share of a handshake     {ip['crypto_share']:10.2f}   (target >= {TARGET_CRYPTO_SHARE})")
    prof = report.get("profile")
    if prof:
        print(f"== cProfile of {prof['handshakes']} handshakes ({prof['profiled_us_per_handshake']:.0f} us each "
              "under the profiler)")
        for name, share in prof["families"].items():
            print(f"  {share * 100:5.1f}%  {name}")
        print("  top functions (own time):")
        for row in prof["top"]:
            print(f"  {row['share'] * 100:5.1f}% {row['us_per_handshake']:7.1f} us {row['calls_per_handshake']:6.1f}x  "
                  f"{row['function']}")
        print(f"  ikev2lib functions by inclusive time (those under {INCLUSIVE_CUTOFF:.0%}):")
        for row in prof["top_inclusive"]:
            print(f"  {row['share'] * 100:5.1f}% {row['calls_per_handshake']:6.1f}x  {row['function']}")
    for key in ("udp", "udp_ecdsa"):
        _print_udp(report.get(key))
    sc = report.get("scale")

    sc = report.get("scale")
    if sc:
        print(f"== scale: one responder holding {sc['n']} IKE SAs + Child SAs, DPD and rekey timers armed")
        print(f"  RSS delta / SA          {sc['rss_bytes_per_sa']:9.0f} B   (by N: "
              + ", ".join(f"{k}: {v:.0f}" for k, v in sc["rss_bytes_per_sa_by_n"].items()) + ")")
        print(f"  tracemalloc / SA        {sc['traced_bytes_per_sa']:9.0f} B   (Python heap only)")
        print(f"  target <= {TARGET_BYTES_PER_SA} B per SA (the larger of the two)")
        print("  largest Python allocation sites per SA:")
        for row in sc["top_allocations"][:6]:
            print(f"    {row['bytes_per_sa']:7.0f} B {row['blocks_per_sa']:5.1f} blocks  {row['where']}")
        print("  timer handling (us per call)   get_timer  handle_timer(idle)  fire one due timer  "
              "driver cost per datagram")
        for size, t in sc["timers"].items():
            print(f"    {size:>6} SAs            {t['get_timer_us']:10.1f} {t['handle_timer_idle_us']:15.1f} "
                  f"{t['fire_one_timer_us']:19.1f} {t['driver_datagram_us']:20.1f}")
        growth = sc["timer_growth_vs_smallest"]
        print(f"  growth {sc['n']} vs smallest: " + ", ".join(f"{k} x{v:.0f}" for k, v in growth.items())
              + f"  (flat target x{TARGET_TIMER_GROWTH:.0f})")
    targets = report.get("targets")
    if targets:
        print("== targets (speed: same-run ratios)")
        for name, t in targets.items():
            measured = "not run" if t["measured"] is None else f"{t['measured']:.3g}"
            verdict = {True: "met", False: "NOT met", None: "-"}[t["met"]]
            print(f"  {name:38} {measured:>10}  target {t['target']:<8} {verdict:8} vs {t['baseline']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time for the in-process rates")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--skip-udp", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument("--udp-handshakes", type=int, default=UDP_HANDSHAKES)
    parser.add_argument("--udp-seconds", type=float, default=20.0)
    parser.add_argument("--inflight", type=int, default=UDP_INFLIGHT)
    parser.add_argument("--udp-rounds", type=int, default=UDP_ROUNDS)
    parser.add_argument("--scale-n", type=int, default=MAX_IKE_SAS)
    parser.add_argument("--scale-worker", choices=("rss", "tracemalloc"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_worker:
        print(json.dumps(scale_worker(args.scale_worker, args.n)))
        return
    if args.quick:
        args.seconds, args.udp_handshakes, args.udp_seconds = 0.5, 100, 10.0
        args.scale_n = min(args.scale_n, 1000)
    report: dict[str, Any] = {}
    report["inprocess"] = measure_inprocess(args.seconds)
    if not args.skip_profile:
        report["profile"] = profile_handshakes(PROFILE_HANDSHAKES // (4 if args.quick else 1))
    if not args.skip_udp:
        try:
            report["udp"] = measure_udp(args.udp_handshakes, args.udp_seconds, args.inflight, args.udp_rounds)
        except Exception as exc:  # no root / no charon: the other parts still report
            report["udp"] = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            report["udp_ecdsa"] = measure_udp(args.udp_handshakes, args.udp_seconds, args.inflight, args.udp_rounds,
                                              certificates=True)
        except Exception as exc:
            report["udp_ecdsa"] = {"error": f"{type(exc).__name__}: {exc}"}
    if not args.skip_scale:
        report["scale"] = measure_scale(args.scale_n)
    report["targets"] = check_targets(report)
    report["targets_met"] = {name: t["met"] for name, t in report["targets"].items()}
    print_report(report)
    print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()
