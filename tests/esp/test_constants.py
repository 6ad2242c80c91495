"""One source for the C core's constants: `_esp_fast/esp_core.h`.

The Python side keeps its own copies (the pure back end must run without the extension, and mypy needs
the `Status` members spelled out), so these tests prove every copy equal to the header: the header as
parsed here, the values the extension was compiled with (`_esp_fast._constants()`), `Status`,
`LifetimeState`, the algorithm numbers and limits in `params`, the pure back end's own constants and
`ikev2lib.natt.UdpKind`. The RFC 3948 classifier of the C core is compared with the Python one
(`ikev2lib.natt.classify_udp4500`, which the pure back end uses) on every input that matters.
"""

from __future__ import annotations

import ast
import itertools
import operator
import re
from pathlib import Path
from types import ModuleType

from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib import esp
from ikev2lib.esp import _pure, backends, params
from ikev2lib.esp.errors import Status
from ikev2lib.esp.params import LifetimeState
from ikev2lib.natt import UdpKind, classify_udp4500

HEADER = Path(__file__).resolve().parents[2] / "_esp_fast" / "esp_core.h"

# Python name of each status -> its enumerator in `enum esp_status` (the names differ on purpose:
# Python spells the outcome, C the error).
STATUS_NAMES = {
    Status.OK: "ESP_OK",
    Status.AUTH_FAILED: "ESP_ERR_AUTH",
    Status.REPLAYED: "ESP_ERR_REPLAY",
    Status.OUTSIDE_WINDOW: "ESP_ERR_WINDOW",
    Status.MALFORMED: "ESP_ERR_MALFORMED",
    Status.BAD_PADDING: "ESP_ERR_PADDING",
    Status.UNKNOWN_SPI: "ESP_ERR_UNKNOWN_SPI",
    Status.NOT_ESP: "ESP_ERR_NOT_ESP",
    Status.DUMMY: "ESP_ERR_DUMMY",
    Status.HARD_EXPIRED: "ESP_ERR_HARD_EXPIRED",
    Status.SEQUENCE_OVERFLOW: "ESP_ERR_SEQ_OVERFLOW",
    Status.BUFFER_TOO_SMALL: "ESP_ERR_BUFFER",
    Status.INVALID: "ESP_ERR_INVALID",
    Status.CRYPTO_FAILURE: "ESP_ERR_CRYPTO",
}

# Python copies of the header's limits and wire constants -> their C names.
COPIES = {
    "ESP_MAX_PACKET": params.MAX_PACKET,
    "ESP_MAX_TFC_PAD": params.MAX_TFC_PADDING,
    "ESP_MAX_REPLAY_WINDOW": params.MAX_REPLAY_WINDOW,
    "ESP_DEFAULT_REPLAY_WINDOW": params.DEFAULT_REPLAY_WINDOW,
    "ESP_SALT_LEN": params.SALT_LEN,
    "ESP_HDR_LEN": _pure.HDR_LEN,
    "ESP_IV_LEN": _pure.IV_LEN,
    "ESP_CBC_IV_LEN": _pure.CBC_IV_LEN,
    "ESP_CBC_BLOCK": _pure.CBC_BLOCK,
    "ESP_NH_IPV4": _pure.NH_IPV4,
    "ESP_NH_IPV6": _pure.NH_IPV6,
    "ESP_NH_NONE": _pure.NH_NONE,
    "ESP_UDP_HDR_LEN": _pure.UDP_HDR_LEN,
}

_BINOPS = {ast.LShift: operator.lshift, ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.BitOr: operator.or_}  # fmt: skip


def _value(expr: str) -> int:
    """An integer constant expression of the header (`65535`, `(1u << 20)`, `(-1)`), without eval()."""

    def walk(node: ast.expr) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"esp_core.h: cannot read constant {expr!r}")

    return walk(ast.parse(re.sub(r"\b(\d+)[uUlL]+\b", r"\1", expr.strip()), mode="eval").body)


def header_constants() -> dict[str, int]:
    """Every `#define ESP_...` with a value and every enumerator of esp_core.h."""
    text = re.sub(r"/\*.*?\*/", " ", HEADER.read_text(), flags=re.S)
    found: dict[str, int] = {}
    for name, expr in re.findall(r"^[ \t]*#define[ \t]+(ESP_\w+)[ \t]+(\S[^\n]*)$", text, re.M):
        found[name] = _value(expr)
    for body in re.findall(r"\benum\s+\w+\s*\{(.*?)\}", text, re.S):
        following = 0  # C: an enumerator without a value is the previous one plus one
        for item in filter(None, (part.strip() for part in body.split(","))):
            name, _, expr = (piece.strip() for piece in item.partition("="))
            following = _value(expr) if expr else following
            found[name] = following
            following += 1
    return found


def test_the_header_parses_to_what_the_extension_was_compiled_with() -> None:
    # Proves the parser below reads the header right, the build is not stale, and _constants()
    # exports every constant the header has.
    from ikev2lib import _esp_fast

    header = header_constants()
    assert len(header) > 40
    assert _esp_fast._constants() == header


def test_status_is_enum_esp_status() -> None:
    header = header_constants()
    assert set(STATUS_NAMES) == set(Status)
    assert set(STATUS_NAMES.values()) == {n for n in header if n.startswith("ESP_ERR_")} | {"ESP_OK"}
    assert {status: header[name] for status, name in STATUS_NAMES.items()} == {s: s.value for s in Status}
    assert len(Status) == header["ESP_STATUS_COUNT"] == max(Status) + 1  # the drop counter arrays
    assert header["ESP_BUSY"] not in {s.value for s in Status}  # never reported for a packet


def test_drop_counters_have_one_slot_per_status(backend: ModuleType) -> None:
    out, inb = backend.EspSA(0x100, "aes128gcm16", bytes(20), "outbound"), backend.EspSA(
        0x100, "aes128gcm16", bytes(20), "inbound"
    )
    assert len(out._counts()[2]) == len(Status)
    assert set(out.stats.drops) <= {s.name.lower() for s in Status}
    table = backend.SATable([inb])
    assert table.drops == {}
    if backend.BACKEND == "c":
        assert len(table._drops()) == len(Status)


def test_lifetime_states_algorithms_and_udp_kinds_match_the_header() -> None:
    header = header_constants()

    def group(prefix: str, skip: tuple[str, ...] = ()) -> dict[str, int]:
        return {n[len(prefix) :]: v for n, v in header.items() if n.startswith(prefix) and n not in skip}

    assert {s.name: s.value for s in LifetimeState} == group("ESP_LIFETIME_")
    assert {n[len("ALG_") :]: getattr(params, n) for n in dir(params) if n.startswith("ALG_")} == group("ESP_ALG_")
    assert {k.name: k.value for k in UdpKind} == group("ESP_UDP_", skip=("ESP_UDP_HDR_LEN",))


def test_limits_match_the_header() -> None:
    header = header_constants()
    assert {name: header[name] for name in COPIES} == COPIES
    assert esp.DEFAULT_REPLAY_WINDOW == header["ESP_DEFAULT_REPLAY_WINDOW"]
    assert esp.MAX_REPLAY_WINDOW == header["ESP_MAX_REPLAY_WINDOW"]


# ---- RFC 3948 classifier: C esp_udp_classify vs ikev2lib.natt (and the pure back end over it) ------


def _agree(payload: bytes) -> int:
    c, py = backends()["c"], backends()["python"]
    classifiers = (c.udp_classify, py.udp_classify, classify_udp4500)
    kinds = {f(kind(payload)) for f in classifiers for kind in (bytes, bytearray, memoryview)}
    assert len(kinds) == 1, (payload.hex(), kinds)
    return kinds.pop()


def test_udp_classifiers_agree_on_every_short_payload() -> None:
    # The classifier reads the length and at most the first four octets, and decides at the lengths
    # 1, 4 and 8 and on the octets 0x00 and 0xff: every payload of up to 9 octets over {0x00, 0x01,
    # 0xff} covers each branch on both sides of each boundary.
    seen = set()
    for length in range(10):
        for octets in itertools.product(b"\x00\x01\xff", repeat=length):
            seen.add(_agree(bytes(octets)))
    assert seen == set(UdpKind)


_PREFIXES = st.sampled_from([b"", b"\xff", b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x00"])


@settings(max_examples=1500, deadline=None)
@given(payload=st.one_of(st.binary(max_size=64), st.builds(operator.add, _PREFIXES, st.binary(max_size=12))))
def test_udp_classifiers_agree(payload: bytes) -> None:
    _agree(payload)
