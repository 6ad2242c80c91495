"""swanctl.conf syntax (ikev2lib.gateway.swanctl_syntax), cross-checked against strongSwan itself.

strongSwan's settings parser is part of libstrongswan, which the tests call through ctypes: the
raw tree from settings_parser_parse_file(), and the view with references resolved from a
settings_t's enumerators. No charon is needed; without libstrongswan those checks fail (it is installed by bootstrap).
"""

from __future__ import annotations

import ctypes
import functools
import os
import pickle
import re
import tempfile
import time
from ctypes import c_bool, c_char_p, c_int, c_void_p
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.gateway import swanctl_syntax
from ikev2lib.gateway.swanctl_syntax import (
    MAX_FILE_SIZE,
    MAX_INCLUDE_DEPTH,
    MAX_NESTING,
    MAX_REFERENCE_DEPTH,
    Section,
    Setting,
    SwanctlSyntaxError,
    parse_file,
    parse_text,
    resolve_references,
)

LIBSTRONGSWAN = Path("/usr/lib/ipsec/libstrongswan.so.0")

# (references, ((key, value), ...), ((name, Shape), ...)): a tree, order included, locations not
Shape = tuple[Any, ...]


def shape(section: Section) -> Shape:
    return (
        section.references,
        tuple((key, setting.value) for key, setting in section.settings.items()),
        tuple((name, shape(sub)) for name, sub in section.sections.items()),
    )


def resolved_shape(section: Section) -> Shape:
    """shape() of a resolved tree as strongSwan's enumerators show it: without empty values."""
    return (
        (),
        tuple((key, setting.value) for key, setting in section.settings.items() if setting.value),
        tuple((name, resolved_shape(sub)) for name, sub in section.sections.items()),
    )


# --- strongSwan's own parser, through ctypes ------------------------------------------------------


class _SectionT(ctypes.Structure):  # section_t, settings_types.h (strongSwan 5.7 and later)
    _fields_ = [
        ("name", c_char_p),
        ("references", c_void_p),
        ("sections", c_void_p),
        ("sections_order", c_void_p),
        ("kv", c_void_p),
        ("kv_order", c_void_p),
    ]


class _KvT(ctypes.Structure):
    _fields_ = [("key", c_char_p), ("value", c_char_p)]


class _SectionRefT(ctypes.Structure):
    _fields_ = [("name", c_char_p), ("permanent", c_bool)]


def _text(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "surrogateescape")


def _enumerate(enumerator: int, count: int) -> list[tuple[bytes, ...]]:
    """Everything an enumerator_t yields: enumerate() is its first function pointer, destroy() its
    third (enumerator.h)."""
    table = ctypes.cast(enumerator, ctypes.POINTER(c_void_p))
    step = ctypes.CFUNCTYPE(c_bool, c_void_p, *[c_void_p] * count)(table[0])
    outs = [c_char_p() for _ in range(count)]
    items = []
    try:
        while step(enumerator, *[ctypes.addressof(out) for out in outs]):
            items.append(tuple(out.value or b"" for out in outs))
    finally:
        ctypes.CFUNCTYPE(None, c_void_p)(table[2])(enumerator)
    return items


class StrongSwan:
    """libstrongswan's settings parser."""

    # positions in settings_t's table of function pointers (settings.h)
    SECTION_ENUMERATOR, KEY_VALUE_ENUMERATOR, DESTROY = 11, 12, 18

    def __init__(self, library: Path) -> None:
        lib = ctypes.CDLL(str(library))
        lib.library_init.argtypes, lib.library_init.restype = [c_char_p, c_char_p], c_bool
        lib.dbg_default_set_level.argtypes = [c_int]
        lib.settings_section_create.argtypes, lib.settings_section_create.restype = [c_char_p], c_void_p
        lib.settings_section_destroy.argtypes = [c_void_p, c_void_p]
        lib.settings_parser_parse_file.argtypes = [c_void_p, c_char_p]
        lib.settings_parser_parse_file.restype = c_bool
        lib.settings_create.argtypes, lib.settings_create.restype = [c_char_p], c_void_p
        lib.array_count.argtypes, lib.array_count.restype = [c_void_p], c_int
        lib.array_get.argtypes, lib.array_get.restype = [c_void_p, c_int, c_void_p], c_bool
        if not lib.library_init(None, b"ikev2lib-tests"):
            raise OSError("library_init() failed")
        lib.dbg_default_set_level(0)  # parser messages are level 1: keep them out of test output
        self.lib = lib

    def parse(self, path: Path) -> Shape | None:
        """The tree strongSwan's parser makes of a file (includes followed), None if it fails."""
        root = self.lib.settings_section_create(None)
        try:
            return self._shape(root) if self.lib.settings_parser_parse_file(root, os.fsencode(path)) else None
        finally:
            self.lib.settings_section_destroy(root, None)

    def parse_text(self, text: str | bytes) -> Shape | None:
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch, "swanctl.conf")
            path.write_bytes(text.encode() if isinstance(text, str) else text)
            return self.parse(path)

    def resolved(self, path: Path) -> Shape:
        """What strongSwan's enumerators list for a file: references resolved, keys without a
        value left out."""
        settings_t = self.lib.settings_create(os.fsencode(path))
        table = ctypes.cast(settings_t, ctypes.POINTER(c_void_p))
        sections = ctypes.CFUNCTYPE(c_void_p, c_void_p, c_char_p)(table[self.SECTION_ENUMERATOR])
        pairs = ctypes.CFUNCTYPE(c_void_p, c_void_p, c_char_p)(table[self.KEY_VALUE_ENUMERATOR])

        def view(names: tuple[str, ...]) -> Shape:
            key = ".".join(names).replace("%", "%%").encode()  # keys are printf formats
            kvs = tuple((_text(k), _text(v)) for k, v in _enumerate(pairs(settings_t, key), 2))
            subs = [_text(name) for (name,) in _enumerate(sections(settings_t, key), 1)]
            return (), kvs, tuple((name, view((*names, name))) for name in subs)

        try:
            return view(())
        finally:
            ctypes.CFUNCTYPE(None, c_void_p)(table[self.DESTROY])(settings_t)

    def resolved_text(self, text: str) -> Shape:
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch, "swanctl.conf")
            path.write_text(text)
            return self.resolved(path)

    def _items(self, array: int | None) -> list[int]:
        items = []
        for index in range(self.lib.array_count(array) if array else 0):
            item = c_void_p()
            self.lib.array_get(array, index, ctypes.byref(item))
            items.append(item.value or 0)
        return items

    def _shape(self, address: int) -> Shape:
        section = _SectionT.from_address(address)
        refs = tuple(_text(_SectionRefT.from_address(ref).name) for ref in self._items(section.references))
        kvs = tuple(
            (_text(kv.key), _text(kv.value)) for kv in map(_KvT.from_address, self._items(section.kv_order))
        )
        subs = tuple(
            (_text(_SectionT.from_address(sub).name), self._shape(sub))
            for sub in self._items(section.sections_order)
        )
        return refs, kvs, subs


@functools.cache
def _strongswan() -> StrongSwan | None:
    try:
        return StrongSwan(LIBSTRONGSWAN) if LIBSTRONGSWAN.exists() else None
    except OSError:
        return None


@pytest.fixture(scope="module")
def strongswan() -> StrongSwan:
    oracle = _strongswan()
    if oracle is None:
        pytest.fail(f"{LIBSTRONGSWAN} cannot be loaded: install libstrongswan (scripts/apt-packages.txt)")
    return oracle


def value(section: Section, key: str) -> str | None:
    setting = section.get(key)
    return setting.value if setting is not None else None


def write(base: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# --- examples ---------------------------------------------------------------------------------------

MAN_PAGE_EXAMPLE = """\
a = b
section-one {
	somevalue = asdf
	subsection {
		othervalue = xxx
	}
	# yei, a comment
	yetanother = zz
}
section-two {
	x = 12
}
"""

# strongswan.conf(5), INCLUDING FILES: these three files give the same config as the example above
MAN_PAGE_INCLUDES = {
    "strongswan.conf": """\
a = b
section-one {
	somevalue = before include
	include include.conf
}
include other.conf
""",
    "include.conf": """\
# settings loaded from this file are added to section-one
# the following replaces the previous value
somevalue = asdf
subsection {
	othervalue = yyy
}
yetanother = zz
""",
    "other.conf": """\
# this extends section-one and subsection
section-one {
	subsection {
		# this replaces the previous value
		othervalue = xxx
	}
}
section-two {
	x = 12
}
""",
}


def test_man_page_example(strongswan: StrongSwan) -> None:
    root = parse_text(MAN_PAGE_EXAMPLE, path="strongswan.conf")
    assert root.get("section-one.subsection.othervalue") == Setting("othervalue", "xxx", "strongswan.conf", 5)
    assert root.get("a") == Setting("a", "b", "strongswan.conf", 1)
    assert list(root.sections) == ["section-one", "section-two"]
    assert list(root.sections["section-one"].settings) == ["somevalue", "yetanother"]
    assert shape(root) == strongswan.parse_text(MAN_PAGE_EXAMPLE)


def test_man_page_includes(tmp_path: Path, strongswan: StrongSwan) -> None:
    write(tmp_path, MAN_PAGE_INCLUDES)
    root = parse_file(tmp_path / "strongswan.conf")
    assert shape(root) == shape(parse_text(MAN_PAGE_EXAMPLE))
    assert shape(root) == strongswan.parse(tmp_path / "strongswan.conf")
    # the replaced value keeps its place but says where the winning one came from
    assert root.get("section-one.somevalue") == Setting(
        "somevalue", "asdf", str(tmp_path / "include.conf"), 3
    )
    assert root.get("section-one.subsection.othervalue") == Setting(
        "othervalue", "xxx", str(tmp_path / "other.conf"), 5
    )
    # a section is located where it first appears
    assert root.sections["section-one"].line == 2
    assert root.sections["section-one"].path == str(tmp_path / "strongswan.conf")


SITE_TO_SITE = {
    "swanctl.conf": """\
# gateway moon: site-to-site to sun, a road warrior pool from conf.d
connections {
    site-sun {
        version = 2
        local_addrs  = 192.0.2.1
        remote_addrs = 198.51.100.1
        proposals = aes256gcm16-prfsha384-ecp384, aes128-sha256-modp3072
        local {
            auth = psk
            id = moon.example.org
        }
        remote {
            auth = psk
            id = sun.example.org
        }
        children {
            net-net {
                local_ts  = 10.1.0.0/16
                remote_ts = 10.2.0.0/16,10.3.0.0/16
                esp_proposals = aes256gcm16-ecp384
                start_action = trap
            }
        }
    }
}

secrets {
    ike-1 {
        id = sun.example.org
        secret = "0sFpZAZqEN6Ti9sqt4ZP5EWcqx # not a comment } nor a brace"
    }
}

include conf.d/*.conf
""",
    "conf.d/roadwarrior.conf": """\
connections {
    rw : connections.site-sun {      # everything from site-sun, then:
        remote_addrs = %any
        pools = rw-pool
        remote {
            id = *@example.org
        }
        children {
            net-net {
                remote_ts = dynamic
            }
        }
    }
}
pools {
    rw-pool {
        addrs = 10.4.0.0/24
    }
}
""",
    "conf.d/secrets.conf": """\
secrets {
    ike-rw {
        id = "*@example.org"
        secret = "with \\"quotes\\" and a \\\\ backslash"
    }
}
""",
}


def test_site_to_site(tmp_path: Path, strongswan: StrongSwan) -> None:
    write(tmp_path, SITE_TO_SITE)
    main = tmp_path / "swanctl.conf"
    root = parse_file(main)
    site = root.section("connections.site-sun")
    assert site is not None and site.line == 3
    assert root.get("connections.site-sun.remote_addrs") == Setting(
        "remote_addrs", "198.51.100.1", str(main), 6
    )
    assert site.settings["proposals"].value == "aes256gcm16-prfsha384-ecp384, aes128-sha256-modp3072"
    assert value(root, "connections.site-sun.children.net-net.remote_ts") == "10.2.0.0/16,10.3.0.0/16"
    assert value(root, "secrets.ike-1.secret") == "0sFpZAZqEN6Ti9sqt4ZP5EWcqx # not a comment } nor a brace"
    secret = root.get("secrets.ike-rw.secret")
    where = str(tmp_path / "conf.d/secrets.conf")
    assert secret == Setting("secret", 'with "quotes" and a \\ backslash', where, 4)
    assert list(root.sections) == ["connections", "secrets", "pools"]
    assert list(root.sections["connections"].sections) == ["site-sun", "rw"]
    assert root.sections["connections"].sections["rw"].references == ("connections.site-sun",)
    assert shape(root) == strongswan.parse(main)

    resolved = resolve_references(root)
    rw = resolved.section("connections.rw")
    assert rw is not None and rw.references == ()
    assert [(key, s.value) for key, s in rw.settings.items()] == [
        ("remote_addrs", "%any"),
        ("pools", "rw-pool"),
        ("version", "2"),
        ("local_addrs", "192.0.2.1"),
        ("proposals", "aes256gcm16-prfsha384-ecp384, aes128-sha256-modp3072"),
    ]
    assert value(rw, "local.id") == "moon.example.org"
    assert value(rw, "remote.id") == "*@example.org"
    assert value(rw, "remote.auth") == "psk"
    child = rw.section("children.net-net")
    assert child is not None
    assert value(child, "remote_ts") == "dynamic"
    assert child.get("local_ts") == Setting("local_ts", "10.1.0.0/16", str(main), 18)
    assert resolved.section("connections.site-sun") == root.section("connections.site-sun")
    assert resolved_shape(resolved) == strongswan.resolved(main)


def test_values_run_to_the_end_of_the_line() -> None:
    # the classic mistake: on one line, the first value swallows the rest
    root = parse_text('ike-1 { id = sun.example.org  secret = "x" }\n')
    assert [(key, s.value) for key, s in root.sections["ike-1"].settings.items()] == [
        ("id", "sun.example.org secret = x")
    ]


# --- values and layout, each checked against strongSwan ---------------------------------------------

VALUES = [
    ("k = v", "v"),
    ("k =   spaced \t  out  ", "spaced out"),
    ('k = a   "b  c"  d', "a b  c d"),
    ('k = b"c"d', "b c d"),
    ('k = "x # y" # a comment', "x # y"),
    ("k = v # a comment", "v"),
    ("k = v#comment", "v"),
    ("k = a=b:c,d.e{f", "a=b:c,d.e{f"),
    ("k ==", "="),
    ('k = ""', ""),
    ("k =", ""),
    ("k =  # nothing but a comment", ""),
    ('k = "\\t\\n\\r \\"q\\" \\\\ \\x \\é"', '\t\n\r "q" \\ x é'),
    ('k = "joined \\\nline"', "joined line"),
    ('k = "joined \\\r\nCRLF"', "joined CRLF"),
    ('k = "two\nlines"', "two\nlines"),
    ('k = "CR\r\nLF"', "CR\nLF"),  # a raw carriage return is dropped inside quotes
    ('k = "lone \\\rCR"', "lone \rCR"),  # ... but not an escaped one
    ("k = a\rb", "a b"),  # outside quotes it is a blank
    ("k = trailing\\", "trailing\\"),  # no line continuation outside quotes
    ("k = ü ß 😀 \\u00e9", "ü ß 😀 \\u00e9"),
    ("k = tab\tseparated", "tab separated"),
    ('k = "a"b "c"', "a b c"),
]


@pytest.mark.parametrize(("line", "value"), VALUES)
def test_values(line: str, value: str, strongswan: StrongSwan) -> None:
    text = f"{line}\nnext = 1\n"
    root = parse_text(text)
    assert root.settings["k"] == Setting("k", value, "<string>", 1)
    assert root.settings["next"].line == 2 + line.count("\n")
    assert shape(root) == strongswan.parse_text(text)


LAYOUTS = [
    "",
    "\n\n  \t\n",
    "# only a comment",
    "a { b = 1 }",
    "a {} b {} c = 1",
    "a\n{\n}\n",
    "a # a comment before the brace\n{ x = 1\n}",
    "k\n= v\n",
    "a { x = 1 y = 2 }",
    "a = 1\na = 2\nb = 3\na = 4\n",
    "a = 1\na =\n",
    "a { x = 1 }\nb = 2\na { y = 2\n x = 3\n c {} }\n",
    "a { x = 1 }\nb { a { x = 2 } }\n",
    "same = key\nsame { as = section }\n",
    "a {}\na : b {}\na : c, b {}\nb {}\nc {}\n",
    "a : b, b, c {}\n",
    "a:b{}",
    "a : b # a comment\n , c.d.e\n\n{}\n",
    "a\n:\nb\n{\n}\n",
    "include = x\n",  # a key named include
    "include\n{\n}\n",  # and a section
    "include\t\t\n",  # an include without a pattern is ignored
    "include missing.conf b = c\n",  # a pattern matching nothing is ignored too
    'include "missing file.conf" x = 1\n',
    "a { include nothing*.conf }\n",
    "ké😀 = ü\n",
    "a = x\r\nb = y\r\n",
    "x\\y = 1\n",
]


@pytest.mark.parametrize("text", LAYOUTS)
def test_layouts(text: str, strongswan: StrongSwan) -> None:
    with tempfile.TemporaryDirectory() as scratch:  # strongSwan takes relative includes from here
        path = Path(scratch, "swanctl.conf")
        path.write_text(text)
        expected = strongswan.parse(path)
        assert expected is not None
        assert shape(parse_file(path)) == expected


def test_merging_keeps_first_places_and_latest_values() -> None:
    root = parse_text("a {\n x = 1\n y = 2\n}\nb = 0\na : r {\n z = 3\n x = 4\n}\na : s, r {}\n")
    section = root.sections["a"]
    assert [(key, s.value, s.line) for key, s in section.settings.items()] == [
        ("x", "4", 8), ("y", "2", 3), ("z", "3", 7)
    ]
    assert (section.line, section.references) == (1, ("r", "s"))
    assert list(root.sections) == ["a"]


def test_lookup_helpers() -> None:
    root = parse_text("a {\n b {\n  c = 1\n }\n d = 2\n}\n")
    assert root.section("a.b") is root.sections["a"].sections["b"]
    assert root.section("a.missing.b") is None
    assert root.section("a.b.c") is None
    assert root.get("a.b.c") == Setting("c", "1", "<string>", 3)
    assert root.get("a.d") == Setting("d", "2", "<string>", 5)
    assert root.get("a.b") is None
    assert root.get("x.y.z") is None
    assert root.sections["a"].get("b.c") == root.get("a.b.c")


# --- errors ------------------------------------------------------------------------------------------

# (text, line, part of the message, does strongSwan reject it too?)
ERRORS = [
    ("a {\n b = 1\n", 1, "section 'a' is not closed (missing '}')", True),
    ("a {\n b {\n }\n", 1, "section 'a' is not closed", True),
    ("a = 1\n}\n", 2, "'}' without an open section", True),
    ("a {}}\n", 1, "'}' without an open section", True),
    ("k = v}\n", 1, "'}' without an open section", True),
    ("a {\n k = v } }\n", 2, "'}' without an open section", True),
    ("x = 1\nlonely\n", 2, "expected '=', '{' or ':' after 'lonely', found the end of the file", True),
    ("a b = c\n", 1, "expected '=', '{' or ':' after 'a', found 'b'", True),
    ("k\n=\nv\n", 3, "expected '=', '{' or ':' after 'v'", True),  # a value starts on the line of its "="
    ('a "b" = c\n', 1, "expected '=', '{' or ':' after 'a', found '\"'", True),
    ("x = 1\na.b = c\n", 2, "'.' is not allowed in section names or keys", True),
    ("a,b = c\n", 1, "',' is not allowed in section names or keys", True),
    (".a = b\n", 1, "'.' is not allowed", True),
    ('"a" = b\n', 1, "unexpected quoted string", True),
    ("= v\n", 1, "'=' without a name before it", True),
    ("{}\n", 1, "'{' without a name before it", True),
    (": b {}\n", 1, "':' without a name before it", True),
    ("include  = x\n", 1, "'=' without a name before it", True),  # strongSwan: include, empty pattern
    ("a : {}\n", 1, "expected a section name after ':', found '{'", True),
    ("a : b, {}\n", 1, "expected a section name after ',', found '{'", True),
    ("a : b c {}\n", 1, "expected ',' or '{' after the references of section 'a', found 'c'", True),
    ("a : b. c {}\n", 1, "expected ',' or '{' after the references of section 'a', found '.'", True),
    ("a : b..c {}\n", 1, "found '.'", True),
    ("a : .b {}\n", 1, "expected a section name after ':', found '.'", True),
    ('a : "b" {}\n', 1, "expected a section name after ':', found '\"'", True),
    ("a : b = c\n", 1, "found '='", True),
    ("a : b\n\n", 3, "found the end of the file", True),
    ('a = 1\nb = "x\ny\n', 2, "unterminated quoted string", True),
    ('b = "ends in a backslash\\', 1, "unterminated quoted string", True),
    ('include "x.conf\n', 1, "unterminated quoted string", True),
    # deviations: strongSwan takes these, but they are never what was meant
    ("ok = 1\nk\x01 = v\n", 2, "invalid character U+0001 in name 'k\\x01'", False),
    ("k\u00a0 = v\n", 1, "invalid character U+00A0", False),
    ("a : b\u200b {}\n", 1, "invalid character U+200B", False),
    ("a = b\nc = d\x00e\n", 2, "NUL character", False),
    (b"\xef\xbb\xbfa = b\n", 1, "byte order mark", False),
    (b"a = b\n\nc = \xff\n", 3, "not valid UTF-8", False),
]


@pytest.mark.parametrize(("text", "line", "message", "strongswan_rejects"), ERRORS)
def test_errors(
    text: str | bytes, line: int, message: str, strongswan_rejects: bool, strongswan: StrongSwan
) -> None:
    with pytest.raises(SwanctlSyntaxError) as caught:
        parse_text(text, path="test.conf")
    assert (caught.value.path, caught.value.line) == ("test.conf", line)
    assert message in caught.value.message
    assert str(caught.value) == f"test.conf:{line}: {caught.value.message}"
    assert (strongswan.parse_text(text) is None) == strongswan_rejects


def test_error_type() -> None:
    error = SwanctlSyntaxError("a.conf", 3, "bad")
    assert isinstance(error, LocalProtocolError)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.path, copy.line, copy.message) == (SwanctlSyntaxError, "a.conf", 3, "bad")
    assert str(copy) == "a.conf:3: bad"
    assert str(SwanctlSyntaxError("a.conf", 0, "too big")) == "a.conf: too big"


def test_lone_surrogate_in_text() -> None:
    with pytest.raises(SwanctlSyntaxError, match="not valid Unicode") as caught:
        parse_text("a = 1\nb = \udcff\n")
    assert caught.value.line == 2


# --- limits ------------------------------------------------------------------------------------------


def test_file_size_limit(tmp_path: Path) -> None:
    parse_text("#" * MAX_FILE_SIZE)
    for text in ("#" * (MAX_FILE_SIZE + 1), "é" * (MAX_FILE_SIZE // 2 + 1), b"#" * (MAX_FILE_SIZE + 1)):
        with pytest.raises(SwanctlSyntaxError, match=f"larger than {MAX_FILE_SIZE} bytes") as caught:
            parse_text(text)
        assert caught.value.line == 0
    (tmp_path / "big.conf").write_bytes(b"#" * (MAX_FILE_SIZE + 1))
    with pytest.raises(SwanctlSyntaxError, match="larger than") as caught:
        parse_file(tmp_path / "big.conf")
    assert (caught.value.path, caught.value.line) == (str(tmp_path / "big.conf"), 0)
    (tmp_path / "main.conf").write_text("a {\n include big.conf\n}\n")
    with pytest.raises(SwanctlSyntaxError, match="big.conf' is larger than") as caught:
        parse_file(tmp_path / "main.conf")
    assert (caught.value.path, caught.value.line) == (str(tmp_path / "main.conf"), 2)


def test_total_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swanctl_syntax, "MAX_TOTAL_SIZE", 100)
    write(tmp_path, {"main.conf": "include part*.conf\n", "part1.conf": "#" * 50, "part2.conf": "#" * 50})
    with pytest.raises(SwanctlSyntaxError, match="add up to more than 100 bytes") as caught:
        parse_file(tmp_path / "main.conf")
    assert caught.value.path == str(tmp_path / "part2.conf")


def test_nesting_limit(strongswan: StrongSwan) -> None:
    deepest = "\n".join(["s {"] * MAX_NESTING + ["k = v"] + ["}"] * MAX_NESTING)
    assert parse_text(deepest).get(".".join(["s"] * MAX_NESTING + ["k"])) is not None
    too_deep = "\n".join(["s {"] * (MAX_NESTING + 1) + ["}"] * (MAX_NESTING + 1))
    with pytest.raises(SwanctlSyntaxError, match=f"nested deeper than {MAX_NESTING} levels") as caught:
        parse_text(too_deep)
    assert caught.value.line == MAX_NESTING + 1
    # hostile depth is refused quickly and without recursion
    start = time.monotonic()
    with pytest.raises(SwanctlSyntaxError, match="nested deeper"):
        parse_text("a{" * 1_000_000)
    assert time.monotonic() - start < 5


def test_nesting_counts_through_includes(tmp_path: Path) -> None:
    outer = MAX_NESTING - 1
    write(tmp_path, {
        "main.conf": "a {\n" * outer + "include deep.conf\n" + "}\n" * outer,
        "deep.conf": "b {\n c {\n }\n}\n",
    })
    with pytest.raises(SwanctlSyntaxError, match="nested deeper") as caught:
        parse_file(tmp_path / "main.conf")
    assert (caught.value.path, caught.value.line) == (str(tmp_path / "deep.conf"), 2)


def test_settings_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swanctl_syntax, "MAX_SETTINGS", 10)
    parse_text("".join(f"k{i} = {i}\n" for i in range(10)) + "k0 = again\n")  # replacing is not adding
    with pytest.raises(SwanctlSyntaxError, match="more than 10 settings, sections and references") as caught:
        parse_text("".join(f"k{i} = {i}\n" for i in range(11)))
    assert caught.value.line == 11
    for text, line in (("a {\n" + "".join(f"s{i} {{}}\n" for i in range(10)) + "}\n", 11),
                       ("a : " + ", ".join(f"r{i}" for i in range(10)) + " {}\n", 1)):
        with pytest.raises(SwanctlSyntaxError, match="more than 10") as caught:
            parse_text(text)
        assert caught.value.line == line


def test_many_settings_parse_in_reasonable_time() -> None:
    count = swanctl_syntax.MAX_SETTINGS // 2
    start = time.monotonic()
    root = parse_text("".join(f"key{i} = value {i}\n" for i in range(count)))
    assert len(root.settings) == count
    assert time.monotonic() - start < 10


# --- includes ----------------------------------------------------------------------------------------


def test_include_glob_order(tmp_path: Path, strongswan: StrongSwan) -> None:
    write(tmp_path, {
        "swanctl.conf": "first = main\ninclude conf.d/*.conf\nlast = main\n",
        "conf.d/b.conf": "order = b\nb = 1\n",
        "conf.d/a.conf": "order = a\na = 1\n",
        "conf.d/c.conf": "order = c\nc = 1\n",
        "conf.d/.hidden.conf": "hidden = 1\n",
        "conf.d/d.conf.disabled": "d = 1\n",
    })
    root = parse_file(tmp_path / "swanctl.conf")
    assert [(key, s.value) for key, s in root.settings.items()] == [
        ("first", "main"), ("order", "c"), ("a", "1"), ("b", "1"), ("c", "1"), ("last", "main")
    ]
    assert root.settings["order"] == Setting("order", "c", str(tmp_path / "conf.d/c.conf"), 1)
    assert shape(root) == strongswan.parse(tmp_path / "swanctl.conf")


def test_include_relative_to_including_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strongswan: StrongSwan
) -> None:
    write(tmp_path, {
        "etc/swanctl.conf": "include sub/one.conf\n",
        "etc/sub/one.conf": "one = 1\ninclude two.conf\n",
        "etc/sub/two.conf": "two = 2\ninclude /" + str(tmp_path / "abs.conf").lstrip("/") + "\n",
        "abs.conf": "abs = 3\n",
        "elsewhere/sub/two.conf": "wrong = 1\n",
    })
    monkeypatch.chdir(tmp_path / "elsewhere")
    root = parse_file(tmp_path / "etc/swanctl.conf")
    assert [(key, s.value) for key, s in root.settings.items()] == [("one", "1"), ("two", "2"), ("abs", "3")]
    assert root.settings["two"].path == str(tmp_path / "etc/sub/two.conf")
    assert shape(root) == strongswan.parse(tmp_path / "etc/swanctl.conf")
    # a relative main file: its includes are relative to its directory
    monkeypatch.chdir(tmp_path)
    assert shape(parse_file("etc/swanctl.conf")) == shape(root)
    assert parse_file("etc/swanctl.conf").settings["one"].path == "etc/sub/one.conf"


def test_include_inside_section(tmp_path: Path, strongswan: StrongSwan) -> None:
    write(tmp_path, {
        "swanctl.conf": "connections {\n    include conns/*.conf\n    shared = 1\n}\n"
                        "secrets { include secrets.conf }\n",
        "conns/a.conf": "a {\n    version = 2\n}\n",
        "conns/b.conf": "b {\n    version = 1\n}\nshared = 0\n",
        "secrets.conf": 'ike {\n  secret = "s"\n}\n',
    })
    root = parse_file(tmp_path / "swanctl.conf")
    assert list(root.sections) == ["connections", "secrets"]
    assert root.get("connections.b.version") == Setting("version", "1", str(tmp_path / "conns/b.conf"), 2)
    assert root.get("connections.shared") == Setting("shared", "1", str(tmp_path / "swanctl.conf"), 3)
    assert root.get("secrets.ike.secret") is not None
    assert shape(root) == strongswan.parse(tmp_path / "swanctl.conf")


def test_include_patterns(tmp_path: Path, strongswan: StrongSwan) -> None:
    write(tmp_path, {
        "swanctl.conf": 'include "my file.conf"\ninclude my\\ file2.conf\ninclude \\*.conf\n'
                        "include x\\#.conf # comment\ninclude nope.conf\ninclude nothing/*.conf\n",
        "my file.conf": "quoted = 1\n",
        "my file2.conf": "escaped = 1\n",
        "*.conf": "literal_star = 1\n",
        "x#.conf": "hash = 1\n",
    })
    root = parse_file(tmp_path / "swanctl.conf")
    assert list(root.settings) == ["quoted", "escaped", "literal_star", "hash"]
    assert shape(root) == strongswan.parse(tmp_path / "swanctl.conf")


def test_include_depth_limit(tmp_path: Path) -> None:
    files = {f"f{i}.conf": f"level{i} = {i}\ninclude f{i + 1}.conf\n" for i in range(MAX_INCLUDE_DEPTH + 1)}
    write(tmp_path, files)
    root = parse_file(tmp_path / "f0.conf")  # f0 includes f1 ... f10: 10 levels
    assert len(root.settings) == MAX_INCLUDE_DEPTH + 1
    (tmp_path / f"f{MAX_INCLUDE_DEPTH + 1}.conf").write_text("too = deep\n")
    message = f"includes nested deeper than {MAX_INCLUDE_DEPTH} levels"
    with pytest.raises(SwanctlSyntaxError, match=message) as caught:
        parse_file(tmp_path / "f0.conf")
    assert (caught.value.path, caught.value.line) == (str(tmp_path / f"f{MAX_INCLUDE_DEPTH}.conf"), 2)
    chain = " -> ".join(str(tmp_path / f"f{i}.conf") for i in range(MAX_INCLUDE_DEPTH + 2))
    assert chain in caught.value.message


def test_include_cycle(tmp_path: Path) -> None:
    write(tmp_path, {
        "a.conf": "a = 1\ninclude b.conf\n",
        "b.conf": "x {\n  include a.conf\n}\n",
        "self.conf": "include self.conf\n",
    })
    with pytest.raises(SwanctlSyntaxError, match="include cycle") as caught:
        parse_file(tmp_path / "a.conf")
    assert (caught.value.path, caught.value.line) == (str(tmp_path / "b.conf"), 2)
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    assert caught.value.message == f"include cycle: {a} -> {b} -> {a}"
    with pytest.raises(SwanctlSyntaxError, match="include cycle"):
        parse_file(tmp_path / "self.conf")
    (tmp_path / "link.conf").symlink_to(tmp_path / "c.conf")
    (tmp_path / "c.conf").write_text("include link.conf\n")  # the same file under another name
    with pytest.raises(SwanctlSyntaxError, match="include cycle"):
        parse_file(tmp_path / "c.conf")


def test_include_same_file_twice_is_no_cycle(tmp_path: Path) -> None:
    write(tmp_path, {
        "main.conf": "include part.conf\nsec {\n  include part.conf\n}\ninclude part.conf\n",
        "part.conf": "p = 1\n",
    })
    root = parse_file(tmp_path / "main.conf")
    assert root.get("p") is not None and root.get("sec.p") is not None


def test_include_needs_regular_files(tmp_path: Path) -> None:
    (tmp_path / "dir.conf").mkdir()
    os.mkfifo(tmp_path / "fifo.conf")
    for name in ("dir.conf", "fifo.conf"):
        (tmp_path / "main.conf").write_text(f"x = 1\ninclude {name}\n")
        with pytest.raises(SwanctlSyntaxError, match=f"{name}' is not a regular file") as caught:
            parse_file(tmp_path / "main.conf")  # the FIFO must not block
        assert (caught.value.path, caught.value.line) == (str(tmp_path / "main.conf"), 2)
    with pytest.raises(SwanctlSyntaxError, match="cannot read") as caught:
        parse_file(tmp_path / "missing.conf")
    assert (caught.value.path, caught.value.line) == (str(tmp_path / "missing.conf"), 0)


def test_included_file_must_be_complete(tmp_path: Path, strongswan: StrongSwan) -> None:
    write(tmp_path, {"main.conf": "a {\n include open.conf\n}\n", "open.conf": "b {\n",
                     "other.conf": "a {\n include close.conf\nx = 1\n", "close.conf": "}\n"})
    with pytest.raises(SwanctlSyntaxError, match="section 'b' is not closed") as caught:
        parse_file(tmp_path / "main.conf")
    assert (caught.value.path, caught.value.line) == (str(tmp_path / "open.conf"), 1)
    with pytest.raises(SwanctlSyntaxError, match="'}' without an open section") as caught:
        parse_file(tmp_path / "other.conf")
    assert caught.value.path == str(tmp_path / "close.conf")
    # the deviation: strongSwan splices the included tokens in, so there the "}" closes "a"
    assert strongswan.parse(tmp_path / "other.conf") is not None


def test_include_in_text(tmp_path: Path) -> None:
    (tmp_path / "part.conf").write_text("p = 1\n")
    message = "relative include 'part.conf' in text parsed without a base_dir"
    with pytest.raises(SwanctlSyntaxError, match=message) as caught:
        parse_text("x = 1\ninclude part.conf\n", path="inline")
    assert (caught.value.path, caught.value.line) == ("inline", 2)
    root = parse_text("include part.conf\n", base_dir=tmp_path)
    assert root.settings["p"].path == str(tmp_path / "part.conf")
    assert parse_text(f"include {tmp_path}/part.conf\n").get("p") is not None
    assert parse_text(f"include {tmp_path}/nothing*.conf\n").settings == {}


def test_include_pattern_depth_is_bounded(tmp_path: Path) -> None:
    parse_text("include " + "*/" * 40 + "x\n", base_dir=tmp_path)
    with pytest.raises(SwanctlSyntaxError, match="has over 64 path components") as caught:
        parse_text("x = 1\ninclude " + "*/" * 2000 + "x\n", base_dir=tmp_path)  # glob would recurse too deep
    assert caught.value.line == 2


def test_include_glob_metacharacters_in_directory(tmp_path: Path) -> None:
    write(tmp_path, {"[x]/main.conf": "include part.conf\n", "[x]/part.conf": "p = 1\n"})
    assert parse_file(tmp_path / "[x]/main.conf").get("p") is not None


# --- references --------------------------------------------------------------------------------------

REFERENCES = """\
conn-defaults {
    version = 2
    proposals = default
    local {
        auth = pubkey
        certs = moon.pem
    }
}
eap-defaults {
    proposals = eap
    remote-eap {
        auth = eap-tls
    }
}
child-defaults {
    esp_proposals = aes128gcm16
    local_ts = 10.1.0.0/16
}
connections {
    conn-a : conn-defaults, eap-defaults {
        remote_addrs = a.example.org
        children {
            child-a : child-defaults {
                remote_ts = 10.2.0.0/16
            }
        }
    }
    conn-b : conn-defaults {
        version = 1
        local {
            auth = psk
        }
        children {
            child-b : child-defaults {
                local_ts = 10.9.0.0/16
            }
        }
    }
    conn-c : connections.conn-a {
        remote_addrs = c.example.org
        children {
            child-a {
                mode = transport
            }
        }
    }
}
"""


def test_references(strongswan: StrongSwan) -> None:
    root = parse_text(REFERENCES, path="swanctl.conf")
    resolved = resolve_references(root)
    a = resolved.section("connections.conn-a")
    assert a is not None and a.references == ()
    assert [(key, s.value) for key, s in a.settings.items()] == [
        ("remote_addrs", "a.example.org"), ("version", "2"), ("proposals", "default")  # left to right
    ]
    assert list(a.sections) == ["children", "local", "remote-eap"]  # own first, then inherited
    assert a.get("local.certs") == Setting("certs", "moon.pem", "swanctl.conf", 6)
    assert a.section("local") == root.section("conn-defaults.local")  # located where it is written
    assert [(key, s.value) for key, s in a.sections["children"].sections["child-a"].settings.items()] == [
        ("remote_ts", "10.2.0.0/16"), ("esp_proposals", "aes128gcm16"), ("local_ts", "10.1.0.0/16")
    ]
    b = resolved.section("connections.conn-b")
    assert b is not None
    assert value(b, "version") == "1"
    assert [(key, s.value) for key, s in b.sections["local"].settings.items()] == [
        ("auth", "psk"), ("certs", "moon.pem")
    ]
    assert value(b, "children.child-b.local_ts") == "10.9.0.0/16"
    # conn-c inherits everything conn-a has, including what conn-a and its subsections inherit
    c = resolved.section("connections.conn-c")
    assert c is not None
    assert [(key, s.value) for key, s in c.settings.items()] == [
        ("remote_addrs", "c.example.org"), ("version", "2"), ("proposals", "default")
    ]
    assert [(key, s.value) for key, s in c.sections["children"].sections["child-a"].settings.items()] == [
        ("mode", "transport"),
        ("remote_ts", "10.2.0.0/16"),
        ("esp_proposals", "aes128gcm16"),
        ("local_ts", "10.1.0.0/16"),
    ]
    assert value(c, "remote-eap.auth") == "eap-tls"
    assert resolved_shape(resolved) == strongswan.resolved_text(REFERENCES)
    # the input is left alone
    assert shape(root) == shape(parse_text(REFERENCES, path="swanctl.conf"))


RESOLVABLE = [
    "a : b { x = 1\n}\nb { x = 2\ny = 3\n}\n",
    "a : b, c {}\nb : d {}\nc { k = c\n}\nd { k = d\n}\n",  # depth first: b, d, then c
    "a : c, b {}\nb : d {}\nc { k = c\n}\nd { k = d\n}\n",
    "a : b, c {}\nb : c {}\nc { k = c\n}\n",  # c reached twice counts once
    "t { s { k = 1\n}\n}\nx : t { s { j = 2\n}\n}\ny : x.s {}\n",  # x.s exists partly through x's reference
    "a : b { k =\n}\nb { k = hidden\n}\n",  # an empty value still hides the inherited one
    "p : q { c { } }\nq { c : r { } }\nr { v = 1\n}\n",
    "n { m : o.p {}\n}\no { p { v = 1\n}\n}\n",
    "later : earlier {}\nearlier { k = 1\n}\n",
]


@pytest.mark.parametrize("text", RESOLVABLE)
def test_references_like_strongswan(text: str, strongswan: StrongSwan) -> None:
    assert resolved_shape(resolve_references(parse_text(text))) == strongswan.resolved_text(text)


def test_empty_value_hides_inherited_one() -> None:
    resolved = resolve_references(parse_text("a : b {\n k =\n}\nb {\n k = 1\n}\n"))
    assert resolved.get("a.k") == Setting("k", "", "<string>", 2)


REFERENCE_ERRORS = [
    ("a : missing {}\n", 1, "section 'a' references 'missing', which does not exist"),
    ("a {}\nb { c : a.x {}\n}\n", 2, "section 'b.c' references 'a.x', which does not exist"),
    ("a : b {}\nb : a {}\n", 2, "reference cycle: a -> b -> a"),  # where the cycle closes
    ("a : a {}\n", 1, "reference cycle: a -> a"),
    ("a {\n x : a {}\n}\n", 2, "reference cycle: a.x -> a"),  # it would contain itself
    ("a : a.x {\n x {}\n}\n", 1, "reference cycle: a -> a.x"),
    ("a {\n x : b {}\n}\nb {\n y : a {}\n}\n", 5, "reference cycle"),
]


@pytest.mark.parametrize(("text", "line", "message"), REFERENCE_ERRORS)
def test_reference_errors(text: str, line: int, message: str) -> None:
    root = parse_text(text, path="test.conf")
    with pytest.raises(SwanctlSyntaxError) as caught:
        resolve_references(root)
    assert (caught.value.path, caught.value.line) == ("test.conf", line)
    assert message in caught.value.message


def test_reference_depth_limit() -> None:
    links = "".join(f"s{i} : s{i + 1} {{}}\n" for i in range(MAX_REFERENCE_DEPTH))
    chain = f"{links}s{MAX_REFERENCE_DEPTH} {{ k = 1\n}}\n"
    assert resolve_references(parse_text(chain)).get("s0.k") is not None
    longer = f"s : s0 {{}}\n{chain}"
    message = f"references nested deeper than {MAX_REFERENCE_DEPTH} levels"
    with pytest.raises(SwanctlSyntaxError, match=message):
        resolve_references(parse_text(longer))
    with pytest.raises(SwanctlSyntaxError, match="deeper than 32 levels") as caught:
        parse_text("a : " + ".".join(["x"] * (MAX_NESTING + 1)) + " {}\n")
    assert caught.value.line == 1


def test_references_that_multiply_are_bounded() -> None:
    # every level references the previous one twice: 2**40 settings once resolved
    levels = (f"l{i} {{\n x : l{i - 1} {{}}\n y : l{i - 1} {{}}\n}}\n" for i in range(1, 41))
    text = "l0 { k = 1\n}\n" + "".join(levels)
    start = time.monotonic()
    with pytest.raises(SwanctlSyntaxError, match="once references are resolved|references multiply"):
        resolve_references(parse_text(text))
    assert time.monotonic() - start < 10


def test_references_that_nest_without_end_are_bounded() -> None:
    # a cycle hidden behind a section resolved earlier still ends at the nesting limit
    text = "c : a {}\na {\n x : b {}\n}\nb {\n y : c {}\n}\n"
    with pytest.raises(SwanctlSyntaxError, match="reference cycle|nested deeper"):
        resolve_references(parse_text(text))


# --- properties ----------------------------------------------------------------------------------------

_NAME_CHARACTERS = st.characters(
    blacklist_characters='#{}:.,="', blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp")
)
names = st.text(_NAME_CHARACTERS, min_size=1, max_size=8)
section_names = names.filter(lambda name: name != "include")  # "include {" is an include statement
values = st.text(st.characters(codec="utf-8", blacklist_characters="\0"), max_size=20)

Tree = tuple[dict[str, str], dict[str, Any]]


def trees(depth: int = 0) -> st.SearchStrategy[Tree]:
    subsections = st.just({}) if depth >= 3 else st.dictionaries(section_names, trees(depth + 1), max_size=3)
    return st.tuples(st.dictionaries(names, values, max_size=4), subsections)


class Style(NamedTuple):
    bare: bool  # unquoted values where that keeps them intact
    indent: bool
    comments: bool
    brace_on_next_line: bool


_BARE_VALUE = re.compile(r'[^#}"\r\n\t ]+( [^#}"\r\n\t ]+)*')


def render_value(value: str, bare: bool) -> str:
    if bare and _BARE_VALUE.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\r").replace("\n", "\\n")
    return f'"{escaped}"'


def render(tree: Tree, style: Style, depth: int = 0) -> str:
    """A small renderer, just for the round trip."""
    pad = "\t" * depth if style.indent else ""
    lines = []
    settings_, sections = tree
    for key, value in settings_.items():
        lines.append(f"{pad}{key} = {render_value(value, style.bare)}")
        if style.comments:
            lines.append(f'{pad}# a comment with {{ }} = " in it')
    for name, sub in sections.items():
        lines.append(f"{pad}{name}\n{pad}{{" if style.brace_on_next_line else f"{pad}{name} {{")
        lines.append(render(sub, style, depth + 1))
        lines.append(f"{pad}}}")
    return "\n".join(lines) + "\n"


def tree_shape(tree: Tree) -> Shape:
    settings_, sections = tree
    return (), tuple(settings_.items()), tuple((name, tree_shape(sub)) for name, sub in sections.items())


@settings(max_examples=300, deadline=None)
@given(tree=trees(), style=st.builds(Style, st.booleans(), st.booleans(), st.booleans(), st.booleans()))
def test_round_trip(tree: Tree, style: Style, strongswan: StrongSwan) -> None:
    text = render(tree, style)
    assert shape(parse_text(text)) == tree_shape(tree)
    assert strongswan.parse_text(text) == tree_shape(tree)


_TOKENS = [
    "a", "b", "key", "x.y", "1", "é", " ", "\t", "\n", "\r\n",
    "{", "}", "=", ":", ".", ",", '"', "#", "\\", "\\n",
]


@settings(max_examples=1000, deadline=None)
@given(text=st.lists(st.sampled_from(_TOKENS), max_size=40).map("".join))
def test_same_verdict_as_strongswan(text: str, strongswan: StrongSwan) -> None:
    try:
        ours: Shape | None = shape(parse_text(text))
    except SwanctlSyntaxError:
        ours = None
    assert ours == strongswan.parse_text(text)


_HOSTILE_TOKENS = [
    *_TOKENS, "include ", "include *", "*/*/*/*/*/*/*/*/", "\0", "\r", "\x01", "\ufeff", "\udcff", "a : b ", "a{",
]
hostile_inputs = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100),
    st.lists(st.sampled_from(_HOSTILE_TOKENS), max_size=50).map("".join),
)


@settings(max_examples=500, deadline=None)
@pytest.fixture(scope="module")
def include_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("includes")
    write(base, {"a.conf": "k = 1\nsub { j = 2\n}\n", "b.conf": "include b.conf\n", "c/d.conf": "open {\n"})
    return base


@given(text=hostile_inputs)
def test_only_syntax_errors_escape(text: str | bytes, include_dir: Path) -> None:
    try:
        resolve_references(parse_text(text, base_dir=include_dir))
    except SwanctlSyntaxError as error:
        assert error.line >= 0 and error.message


@st.composite
def reference_graphs(draw: st.DrawFn) -> str:
    """Sections s0..s3, each with a subsection sub holding a subsection d, and random references
    among all of them: half the time only to sections of higher number, which cannot cycle."""
    acyclic = draw(st.booleans())
    lines = []
    for index in range(4):
        later = range(index + 1, 4) if acyclic else range(4)
        targets = [path for i in later for path in (f"s{i}", f"s{i}.sub", f"s{i}.sub.d")]
        for depth, name in enumerate((f"s{index}", "sub", "d")):
            pad = "  " * depth
            refs = draw(st.lists(st.sampled_from(targets), max_size=2)) if targets else []
            lines.append(f"{pad}{name} : {', '.join(refs)} {{" if refs else f"{pad}{name} {{")
            for key in draw(st.lists(st.sampled_from("abc"), max_size=3, unique=True)):
                lines.append(f"{pad}  {key} = s{index}.{depth}.{key}")
        lines.extend(["    }", "  }", "}"])
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None)
@given(text=reference_graphs())
def test_references_resolve_like_strongswan(text: str, strongswan: StrongSwan) -> None:
    try:
        resolved = resolve_references(parse_text(text))
    except SwanctlSyntaxError as error:  # cycles: strongSwan skips what it has seen, we refuse
        assert "reference cycle" in error.message or "nested deeper" in error.message
        return
    assert resolved_shape(resolved) == strongswan.resolved_text(text)
