"""libFuzzer (atheris) harness for the swanctl.conf syntax (ikev2lib.gateway.swanctl_syntax): any
bytes must give a Section or a SwanctlSyntaxError, and so must resolving that Section's references;
any other exception (or a hang, or runaway memory) is a bug.

    .venv/bin/python fuzz/fuzz_swanctl_syntax.py -max_total_time=30 -timeout=5 -rss_limit_mb=1024

The first byte picks how the rest is read: as the text itself, or as a list of tokens (names,
braces, quotes, escapes, includes, references) for inputs that get deeper into the grammar.
Relative includes resolve against a scratch directory ($TMPDIR/ikev2lib-fuzz-swanctl-UID) with a few
files, one of them including itself and one leaving a section open.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from ikev2lib.gateway.swanctl_syntax import SwanctlSyntaxError, parse_text, resolve_references

_INCLUDED = {
    "a.conf": 'x = 1\nsub { y = "2 # \\" }" }\n',
    "b.conf": "include a.conf\nt : sub, a.sub { z = 3 }\n",
    "loop.conf": "include loop.conf\n",
    "open.conf": "s {\n",
}
# libFuzzer ends the process without Python's clean-up, so this is one fixed directory, rewritten
# by every run rather than a new temporary one each time
_DIR = Path(tempfile.gettempdir(), f"ikev2lib-fuzz-swanctl-{os.getuid()}")
_DIR.mkdir(exist_ok=True)
for _name, _text in _INCLUDED.items():
    (_DIR / _name).write_text(_text)

_TOKENS = [
    "a", "b", "sub", "x", "k", "é", "\u00a0", " ", "\t", "\n", "\r", "\r\n", "{", "}", "=", ":", ".", ",",
    '"', "#", "\\", "\\n", "\\\n", "\0", "\ufeff", "include ", "include  ", "include *.conf",
    "include a.conf", "include b.conf", "include loop.conf", "include open.conf", "include /dev/null",
    "a : b", " : a.sub, sub", "a.sub", "k = v\n", "s {\n", "}\n", "*/", "*/*/*/*/*/*/*/*/",
]


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        text: bytes | str = fdp.ConsumeBytes(fdp.remaining_bytes())
    else:
        count = fdp.ConsumeIntInRange(0, 200)
        text = "".join(_TOKENS[fdp.ConsumeIntInRange(0, len(_TOKENS) - 1)] for _ in range(count))
    try:
        resolve_references(parse_text(text, path="fuzz.conf", base_dir=_DIR))
    except SwanctlSyntaxError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
