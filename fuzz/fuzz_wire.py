"""atheris harness for the IKEv2 wire codec.

Invariant: for any input, `Message.parse` and `parse_payloads` either raise ParseError (or a subclass)
or return objects that serialize, re-parse to an equal object, and re-serialize to the same bytes.
Any other exception (struct.error, IndexError, RecursionError, ...) is a bug and stops the fuzzer.

    .venv/bin/python fuzz/fuzz_wire.py -max_total_time=60 -rss_limit_mb=1024 WORKDIR fuzz/corpus_wire
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from ikev2lib.exceptions import ParseError
    from ikev2lib.wire import Message, parse_payloads, serialize_payloads


def check_message(data: bytes) -> None:
    try:
        msg = Message.parse(data)
    except ParseError:
        return
    encoded = msg.serialize()
    again = Message.parse(encoded)
    if again != msg or again.serialize() != encoded:
        raise AssertionError(f"message does not round-trip: {msg!r}")


def check_chain(data: bytes) -> None:
    if not data:
        return
    try:
        payloads = parse_payloads(data[0], data[1:], base_offset=1)
    except ParseError:
        return
    first, chain = serialize_payloads(payloads)
    if parse_payloads(first, chain) != payloads:
        raise AssertionError(f"chain does not round-trip: {payloads!r}")


def test_one_input(data: bytes) -> None:
    check_message(data)
    check_chain(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
