"""The settings syntax of strongSwan's swanctl.conf (and strongswan.conf): text in, a tree out.

Only the syntax: sections (`name { ... }`), settings (`key = value`), comments, quoted strings,
`include` and section references (`name : other.path { ... }`); nothing here knows what a key
means. Every Section and Setting carries the file and line it came from, so that the code mapping
the tree onto a configuration can name them in its errors.

The grammar is strongSwan's (src/libstrongswan/settings/settings_lexer.l and settings_parser.y,
strongSwan 5.7 and later), checked against libstrongswan 5.9.8's own parser:

- Statements need no line breaks between them (`a { b = 1 }` is fine), but a value runs to the end
  of its line. A value is a sequence of parts, each an unquoted word (anything but blanks, `#`,
  `}` and `"`) or a quoted string, joined by one space: `k = a   "b  c"d` is `a b  c d`. A `#`
  (comment) or `}` (closing the section) also ends a value. `key =` alone gives the empty value.
  There is no line continuation outside quoted strings.
- Names (sections, keys) are runs of anything but blanks, line breaks and `. , : { } = " #`.
- Quoted strings may span lines. Escapes: `\\n`, `\\r`, `\\t`; a backslash before a line break
  joins the lines; before any other character it stands for that character (`\\"`, `\\\\`). A raw
  carriage return inside quotes is dropped; outside them it is a blank.
- `include PATTERN`: the pattern ends at a blank, `#` or `}` (`\\ `, `\\#`, `\\}` and `\\"` escape
  those), or is quoted. It is a glob(3) pattern, relative ones taken from the directory of the
  including file; the matches are parsed in sorted order into the section the statement is in. A
  pattern that matches nothing, a literal path that does not exist included, is ignored, as
  strongSwan does; so is `include` with no pattern. `include = x` is a key named include.
- A section given again is merged into the first: a key given again replaces the value but keeps
  its place; subsections merge the same way; references are appended. Order is first appearance.
- `name : a.b, c { ... }` records references, absolute dotted paths from the root.
  `resolve_references` merges them in the order strongSwan looks settings up: the section's own
  settings first, then each referenced section (and, depth first, what it references); inherited
  settings come after the section's own, as in strongSwan's enumerators. Subsections are
  inherited too, also through the references of enclosing sections.

Deviations from strongSwan, on purpose:

- Errors where strongSwan accepts: a file that is not UTF-8, starts with a byte order mark
  (strongSwan reads it as part of the first name) or holds a NUL (strongSwan truncates there);
  names with non-printable characters (strongswan.conf(5) allows printable ones only); a reference
  to a section that does not exist or a reference cycle (strongSwan ignores the first; on the
  second it skips sections already seen, or with `a : a.x` recurses until it crashes); include
  cycles and includes nested deeper than MAX_INCLUDE_DEPTH (strongSwan recurses until it runs out
  of descriptors); an included path that is not a readable regular file (strongSwan skips an
  unreadable one, blocks on a FIFO and aborts on a directory); the size limits below, and include
  patterns of more than 64 path components; a relative include in parse_text without base_dir
  (strongSwan would use the working directory).
- Each file must hold complete statements with balanced braces, and an include statement cannot
  stand inside another statement. strongSwan splices an included file's tokens into the including
  file's, so there a `}` in one can close a section of the other, and `a include x.conf = 1` is
  `a = 1` if x.conf is empty or missing.
- `key =` and `key = ""` both give the value "". strongSwan stores no value for the first ("use
  the default": swanctl skips the key, though it still hides an inherited value) and an empty
  string for the second.
- A comment always runs to the end of the line; strongSwan's lexer can end one at a lone carriage
  return inside it.
- Glob metacharacters in the directory of the including file are taken literally (strongSwan
  expands them too), and `parse_file` reads the path it is given, not a pattern.
- Error lines: an unterminated string or an unclosed section is reported where it starts, not at
  the end of the file. Errors about a whole file have line 0.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ikev2lib.exceptions import LocalProtocolError

MAX_FILE_SIZE = 4 * 1024 * 1024  # bytes in one file
MAX_TOTAL_SIZE = 16 * 1024 * 1024  # bytes in a file and everything it includes
MAX_INCLUDE_DEPTH = 10  # include levels below the first file (strongSwan 4.x had the same limit)
MAX_NESTING = 32  # section levels below the root
MAX_SETTINGS = 200_000  # settings, sections and references in one tree
MAX_REFERENCE_DEPTH = 16  # references followed in one chain (a : b, b : c, ...)

# resolve_references may have to look at far more entries than it produces (shadowed settings,
# sections seen through many references); this bounds its time on a hostile reference graph.
_MAX_RESOLVE_STEPS = 10 * MAX_SETTINGS

# Python's glob recurses once per path component of a pattern; real include patterns have a few
_MAX_PATTERN_PARTS = 64

_NAME = r'[^#{}:.,="\r\n\t ]+'
_NAME_RE = re.compile(_NAME)
_REFERENCE_RE = re.compile(rf"{_NAME}(?:\.{_NAME})*")
_WORD_RE = re.compile(r'[^#}"\r\n\t ]+')  # an unquoted part of a value
_PATTERN_RE = re.compile(r'[^"\\#}\r\n\t ]+')  # an unquoted part of an include pattern
_STRING_RE = re.compile(r'[^\\\r"]+')  # literal text inside quotes
_BLANKS_RE = re.compile(r"[\t\r ]+")
_INCLUDE_BLANKS_RE = re.compile(r"[\t ]+")
_STRING_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
_PATTERN_ESCAPES = ('"', "#", "}", " ")


class SwanctlSyntaxError(LocalProtocolError):
    """A configuration file (or text) is malformed. `path` and `line` say where (line 0: the file
    as a whole), `message` what is wrong."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")
        self.path = path
        self.line = line
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path, self.line, self.message))


@dataclass(frozen=True)
class Setting:
    """`key = value`, from line `line` of file `path` (the definition that won, if repeated)."""

    key: str
    value: str
    path: str
    line: int


@dataclass
class Section:
    """A section: its settings and subsections in order of first appearance, and the sections it
    references (dotted paths from the root). `path` and `line` are where it first appears; the
    root is named "" and has line 0."""

    name: str
    path: str
    line: int
    settings: dict[str, Setting] = field(default_factory=dict)
    sections: dict[str, Section] = field(default_factory=dict)
    references: tuple[str, ...] = ()

    def get(self, key: str) -> Setting | None:
        """The setting `key`; a dotted key ("connections.gw.version") looks in subsections."""
        parent, _, last = key.rpartition(".")
        section = self.section(parent) if parent else self
        return section.settings.get(last) if section is not None else None

    def section(self, name: str) -> Section | None:
        """The subsection `name`; a dotted name ("connections.gw") walks down several levels."""
        current: Section | None = self
        for part in name.split("."):
            if current is None:
                return None
            current = current.sections.get(part)
        return current


def parse_text(text: str | bytes, *, path: str = "<string>", base_dir: Path | str | None = None) -> Section:
    """Parse settings text (bytes must be UTF-8). `path` names it in errors and locations;
    relative include patterns are taken from `base_dir` (without one they are an error)."""
    if isinstance(text, str):
        if len(text) > MAX_FILE_SIZE:  # a character is at least a byte: no need to encode it
            raise SwanctlSyntaxError(path, 0, f"larger than {MAX_FILE_SIZE} bytes")
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate
            line = text.count("\n", 0, error.start) + 1
            raise SwanctlSyntaxError(path, line, "not valid Unicode") from None
    else:
        data = bytes(text)
    parser = _Parser()
    root = Section("", path, 0)
    parser.parse(data, root, path, None if base_dir is None else Path(base_dir), ((path, None),), 0)
    return parser.finish(root)


def parse_file(path: str | Path) -> Section:
    """Parse a file and everything it includes."""
    name = os.fspath(path)
    parser = _Parser()
    data, identity = _read_file(name, name, 0)
    root = Section("", name, 0)
    parser.parse(data, root, name, Path(os.path.dirname(name) or "."), ((name, identity),), 0)
    return parser.finish(root)


def resolve_references(root: Section) -> Section:
    """A new tree with the references of every section merged in (their `references` emptied):
    own settings win, then the referenced sections in order, each with what it references."""
    return _Resolver(root).build(())


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _read_file(name: str, where: str, line: int) -> tuple[bytes, tuple[int, int]]:
    """A regular file's bytes and identity (device, inode); errors are reported at where:line."""
    try:
        # non-blocking, so that opening a FIFO cannot hang (it is refused below)
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SwanctlSyntaxError(where, line, f"{name!r} is not a regular file")
            with open(fd, "rb", closefd=False) as file:
                data = file.read(MAX_FILE_SIZE + 1)
        finally:
            os.close(fd)
    except OSError as error:
        raise SwanctlSyntaxError(where, line, f"cannot read {name!r}: {error.strerror}") from None
    if len(data) > MAX_FILE_SIZE:
        raise SwanctlSyntaxError(where, line, f"{name!r} is larger than {MAX_FILE_SIZE} bytes")
    return data, (info.st_dev, info.st_ino)


def _decode(data: bytes, path: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SwanctlSyntaxError(path, data.count(b"\n", 0, error.start) + 1, "not valid UTF-8") from None
    if text.startswith("\ufeff"):
        message = "starts with a byte order mark (strongSwan reads it as part of a name)"
        raise SwanctlSyntaxError(path, 1, message)
    nul = text.find("\0")
    if nul >= 0:
        raise SwanctlSyntaxError(path, text.count("\n", 0, nul) + 1, "NUL character")
    return text


def _describe(char: str) -> str:
    return repr(char) if char else "the end of the file"


def _posix_glob(pattern: str) -> str:
    """A glob(3) pattern, where a backslash quotes the next character, for Python's glob."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            out.append(glob.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


class _Scanner:
    """strongSwan's lexer states, one method each, over the text of one file."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.pos = 0
        self.line = 1

    def error(self, message: str, line: int | None = None) -> SwanctlSyntaxError:
        return SwanctlSyntaxError(self.path, self.line if line is None else line, message)

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def skip_blanks(self) -> None:
        match = _BLANKS_RE.match(self.text, self.pos)
        if match:
            self.pos = match.end()

    def skip_space(self) -> None:
        """Blanks, line breaks and comments: what may separate statements and references."""
        while True:
            self.skip_blanks()
            char = self.peek()
            if char == "\n":
                self.pos += 1
                self.line += 1
            elif char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def token(self) -> tuple[str, str, int]:
        """The next token where a statement may start: (kind, text, line). Kinds: "eof", "name",
        "include" (text: the pattern), or one of "{", "}", "=", ":"."""
        self.skip_space()
        line = self.line
        char = self.peek()
        if not char:
            return "eof", "", line
        if char in "{}=:":
            self.pos += 1
            return char, char, line
        if char in ".,":
            raise self.error(f"{char!r} is not allowed in section names or keys")
        if char == '"':
            raise self.error("unexpected quoted string (quotes are for values and include patterns)")
        pattern_start = self._include_start()
        if pattern_start is not None:
            self.pos = pattern_start
            return "include", self.include_pattern(), line
        return "name", self.name(_NAME_RE), line

    def _include_start(self) -> int | None:
        """Where the pattern starts if an include statement starts here. strongSwan's rule is
        "include", blanks, then a character that is not "=" (so "include  = x" is an include with
        an empty pattern, the blank run giving its last blank to that character)."""
        if not self.text.startswith("include", self.pos):
            return None
        blanks = _INCLUDE_BLANKS_RE.match(self.text, self.pos + len("include"))
        if blanks is None:
            return None
        if blanks.end() < len(self.text) and self.text[blanks.end()] != "=":
            return blanks.end()
        if blanks.end() - blanks.start() >= 2:
            return blanks.end() - 1
        return None

    def name(self, pattern: re.Pattern[str]) -> str:
        match = pattern.match(self.text, self.pos)
        if match is None:
            raise self.error(f"expected a name, found {self.peek()!r}")
        name = match.group()
        if not name.isprintable():
            bad = next(char for char in name if not char.isprintable())
            raise self.error(f"invalid character U+{ord(bad):04X} in name {name!r}")
        self.pos = match.end()
        return name

    def value(self) -> str:
        """The value after "=": its parts up to the end of the line, "#" or "}"."""
        parts: list[str] = []
        while True:
            self.skip_blanks()
            char = self.peek()
            if char in ("", "\n", "#", "}"):
                return " ".join(parts)
            if char == '"':
                self.pos += 1
                parts.append(self.string())
            else:
                parts.append(self._word())

    def _word(self) -> str:
        match = _WORD_RE.match(self.text, self.pos)
        if match is None:  # value() calls this only on a character that starts a word
            raise self.error(f"unexpected {self.peek()!r}")
        self.pos = match.end()
        return match.group()

    def string(self) -> str:
        """The rest of a quoted string, after its opening quote."""
        start = self.line
        text = self.text
        out: list[str] = []
        while True:
            match = _STRING_RE.match(text, self.pos)
            if match:
                out.append(match.group())
                self.line += match.group().count("\n")
                self.pos = match.end()
            char = self.peek()
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == "\r":
                self.pos += 1
            elif char == "\\":
                following = text[self.pos + 1 : self.pos + 2]
                if following == "\n" or text.startswith("\r\n", self.pos + 1):
                    self.pos += 2 if following == "\n" else 3
                    self.line += 1
                elif following:
                    out.append(_STRING_ESCAPES.get(following, following))
                    self.pos += 2
                else:
                    raise self.error("unterminated quoted string", start)
            else:
                raise self.error("unterminated quoted string", start)

    def include_pattern(self) -> str:
        """The pattern of an include statement, up to a blank, line break, "#" or "}"."""
        out: list[str] = []
        while True:
            match = _PATTERN_RE.match(self.text, self.pos)
            if match:
                out.append(match.group())
                self.pos = match.end()
            char = self.peek()
            if char == "\r":
                self.pos += 1
            elif char == "\\":
                following = self.text[self.pos + 1 : self.pos + 2]
                if following in _PATTERN_ESCAPES:
                    out.append(following)
                    self.pos += 2
                else:  # left for glob, where it quotes the next character
                    out.append("\\")
                    self.pos += 1
            elif char == '"':
                self.pos += 1
                out.append(self.string())
                return "".join(out)
            else:
                return "".join(out)

    def references(self) -> list[str]:
        """The comma-separated section paths after ":"."""
        refs: list[str] = []
        while True:
            self.skip_space()
            if not _REFERENCE_RE.match(self.text, self.pos):
                after = "','" if refs else "':'"
                raise self.error(f"expected a section name after {after}, found {_describe(self.peek())}")
            ref = self.name(_REFERENCE_RE)
            if ref.count(".") >= MAX_NESTING:
                raise self.error(f"reference {ref[:40]!r}... is deeper than {MAX_NESTING} levels")
            refs.append(ref)
            self.skip_space()
            if self.peek() != ",":
                return refs
            self.pos += 1


class _Parser:
    """One parse: a file or text and everything it includes."""

    def __init__(self) -> None:
        self.total_size = 0
        self.entries = 0
        # references collected per section (by id: sections stay alive until finish()), kept in a
        # dict so that merging many sections with many references stays linear
        self.refs: dict[int, tuple[Section, dict[str, None]]] = {}

    def finish(self, root: Section) -> Section:
        for section, refs in self.refs.values():
            section.references = tuple(refs)
        return root

    def count(self, path: str, line: int) -> None:
        self.entries += 1
        if self.entries > MAX_SETTINGS:
            message = f"more than {MAX_SETTINGS} settings, sections and references"
            raise SwanctlSyntaxError(path, line, message)

    def parse(
        self,
        data: bytes,
        target: Section,
        path: str,
        base_dir: Path | None,
        chain: tuple[tuple[str, object], ...],
        nesting: int,
    ) -> None:
        """Parse `data` into `target` (nested `nesting` levels below the root). `chain` is the
        (name, identity) of each file from the first to this one, for include checks."""
        self.total_size += len(data)
        if len(data) > MAX_FILE_SIZE:
            raise SwanctlSyntaxError(path, 0, f"larger than {MAX_FILE_SIZE} bytes")
        if self.total_size > MAX_TOTAL_SIZE:
            message = f"the included files add up to more than {MAX_TOTAL_SIZE} bytes"
            raise SwanctlSyntaxError(path, 0, message)
        scanner = _Scanner(_decode(data, path), path)
        # the sections open in this file, innermost last, with the line each was opened on
        stack: list[tuple[Section, int]] = [(target, 0)]
        while True:
            kind, text, line = scanner.token()
            section = stack[-1][0]
            if kind == "name":
                self._statement(scanner, text, line, stack, nesting)
            elif kind == "}":
                if len(stack) == 1:
                    raise scanner.error("'}' without an open section")
                stack.pop()
            elif kind == "include":
                self._include(text, section, path, line, base_dir, chain, nesting + len(stack) - 1)
            elif kind == "eof":
                if len(stack) > 1:
                    name, opened = stack[-1][0].name, stack[-1][1]
                    raise scanner.error(f"section {name!r} is not closed (missing '}}')", opened)
                return
            else:
                raise scanner.error(f"{text!r} without a name before it")

    def _statement(
        self, scanner: _Scanner, name: str, line: int, stack: list[tuple[Section, int]], nesting: int
    ) -> None:
        """What follows a name: "= value", "{" or ": references {"."""
        parent = stack[-1][0]
        scanner.skip_space()
        char = scanner.peek()
        if char == "=":
            scanner.pos += 1
            if name not in parent.settings:
                self.count(scanner.path, line)
            parent.settings[name] = Setting(name, scanner.value(), scanner.path, line)
            return
        if char in (".", ","):
            raise scanner.error(f"{char!r} is not allowed in section names or keys (after {name!r})", line)
        if char not in ("{", ":"):
            raise scanner.error(f"expected '=', '{{' or ':' after {name!r}, found {_describe(char)}", line)
        scanner.pos += 1
        refs = scanner.references() if char == ":" else []
        if refs:
            scanner.skip_space()
            if scanner.peek() != "{":
                found = _describe(scanner.peek())
                message = f"expected ',' or '{{' after the references of section {name!r}, found {found}"
                raise scanner.error(message)
            scanner.pos += 1
        if nesting + len(stack) > MAX_NESTING:
            raise scanner.error(f"sections nested deeper than {MAX_NESTING} levels", line)
        section = parent.sections.get(name)
        if section is None:
            self.count(scanner.path, line)
            section = parent.sections[name] = Section(name, scanner.path, line)
        if refs:
            entry = self.refs.get(id(section))
            if entry is None:
                entry = self.refs[id(section)] = (section, dict.fromkeys(section.references))
            known = entry[1]
            for ref in refs:
                if ref not in known:
                    self.count(scanner.path, line)
                    known[ref] = None
        stack.append((section, line))

    def _include(
        self,
        pattern: str,
        section: Section,
        path: str,
        line: int,
        base_dir: Path | None,
        chain: tuple[tuple[str, object], ...],
        nesting: int,
    ) -> None:
        if not pattern:
            return  # strongSwan ignores an include without a pattern
        if os.path.isabs(pattern):
            full = _posix_glob(pattern)
        elif base_dir is None:
            message = f"relative include {pattern!r} in text parsed without a base_dir"
            raise SwanctlSyntaxError(path, line, message)
        else:
            full = os.path.join(glob.escape(str(base_dir)), _posix_glob(pattern))
        if full.count("/") > _MAX_PATTERN_PARTS:
            message = f"include pattern {pattern[:40]!r}... has over {_MAX_PATTERN_PARTS} path components"
            raise SwanctlSyntaxError(path, line, message)
        for name in sorted(glob.glob(full)):
            if len(chain) > MAX_INCLUDE_DEPTH:
                names = " -> ".join([*(link for link, _ in chain), name])
                message = f"includes nested deeper than {MAX_INCLUDE_DEPTH} levels: {names}"
                raise SwanctlSyntaxError(path, line, message)
            data, identity = _read_file(name, path, line)
            names = " -> ".join([*(link for link, _ in chain), name])
            if any(identity == other for _, other in chain):
                raise SwanctlSyntaxError(path, line, f"include cycle: {names}")
            child_dir = Path(os.path.dirname(name) or ".")
            self.parse(data, section, name, child_dir, (*chain, (name, identity)), nesting)


class _Resolver:
    """Materialises references. The "layers" of a section path are the parsed sections that make
    it up, in lookup order: for each layer of the parent, its subsection of that name followed by
    the layers of every section that subsection references (strongSwan's find_sections())."""

    def __init__(self, root: Section) -> None:
        self.layers_of: dict[tuple[str, ...], list[Section]] = {(): [root]}
        self.active: list[tuple[str, ...]] = []  # paths whose layers are being worked out
        self.entries = 0
        self.steps = 0

    def step(self, where: Section) -> None:
        self.steps += 1
        if self.steps > _MAX_RESOLVE_STEPS:
            message = "references multiply beyond what can be resolved"
            raise SwanctlSyntaxError(where.path, where.line, message)

    def build(self, path: tuple[str, ...]) -> Section:
        layers = self.layers(path, 0)
        first = layers[0]  # never empty: build() is only called for paths some layer has
        if len(path) > MAX_NESTING:
            message = f"sections nested deeper than {MAX_NESTING} levels through references (a cycle?)"
            raise SwanctlSyntaxError(first.path, first.line, message)
        result = Section(first.name, first.path, first.line)
        names: dict[str, None] = {}
        for layer in layers:
            for key, setting in layer.settings.items():
                self.step(first)
                if key not in result.settings:
                    self.add(first)
                    result.settings[key] = setting
            for name in layer.sections:
                self.step(first)
                names.setdefault(name)
        for name in names:
            self.add(first)
            result.sections[name] = self.build((*path, name))
        return result

    def add(self, where: Section) -> None:
        self.entries += 1
        if self.entries > MAX_SETTINGS:
            message = f"more than {MAX_SETTINGS} settings and sections once references are resolved"
            raise SwanctlSyntaxError(where.path, where.line, message)

    def layers(self, path: tuple[str, ...], hops: int) -> list[Section]:
        known = len(path)
        while path[:known] not in self.layers_of:
            known -= 1
        for end in range(known + 1, len(path) + 1):  # iterative, so deep paths do not recurse
            self.layers_of[path[:end]] = self.extend(path[:end], self.layers_of[path[: end - 1]], hops)
        return self.layers_of[path]

    def extend(self, path: tuple[str, ...], parents: list[Section], hops: int) -> list[Section]:
        self.active.append(path)
        try:
            result: dict[int, Section] = {}  # by identity: a section seen twice counts once
            for parent in parents:
                self.step(parent)
                own = parent.sections.get(path[-1])
                if own is None or id(own) in result:
                    continue
                result[id(own)] = own
                for ref in own.references:
                    for layer in self.referenced(own, path, ref, hops):
                        self.step(own)
                        result.setdefault(id(layer), layer)
            return list(result.values())
        finally:
            self.active.pop()

    def referenced(self, own: Section, path: tuple[str, ...], ref: str, hops: int) -> list[Section]:
        target = tuple(ref.split("."))
        for active in self.active:
            # the same path, or one inside the other: inheriting it would never end
            if active[: len(target)] == target or target[: len(active)] == active:
                chain = " -> ".join([*(_dotted(p) for p in self.active), ref])
                raise SwanctlSyntaxError(own.path, own.line, f"reference cycle: {chain}")
        if hops >= MAX_REFERENCE_DEPTH:
            message = f"references nested deeper than {MAX_REFERENCE_DEPTH} levels"
            raise SwanctlSyntaxError(own.path, own.line, message)
        layers = self.layers(target, hops + 1)
        if not layers:
            message = f"section {_dotted(path)!r} references {ref!r}, which does not exist"
            raise SwanctlSyntaxError(own.path, own.line, message)
        return layers
