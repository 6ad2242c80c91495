"""Command line entry point: `python -m ikev2lib <command>`.

`demo` (the README's main job) runs two ikev2lib endpoints on loopback: IKE SA, Child SA, real traffic
through the C ESP data plane, rekeys, deletes, and a summary.

`run` runs a gateway from a TOML file or a strongSwan swanctl directory; `status`, `initiate`,
`terminate` and `reload` control it (ikev2lib/gateway/).

`messages` shows the codec: it builds a realistic IKE_SA_INIT request from strongSwan proposal
keywords, encodes it, decodes it back, prints it as a tree, and decodes one captured strongSwan
datagram when the test corpus is present.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ikev2lib.demo import run_demo
from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.gateway.cli import add_commands
from ikev2lib.proposals import parse_proposals, proposal_to_keywords
from ikev2lib.wire import (
    KE,
    SA,
    ExchangeType,
    HashAlgorithm,
    KeyExchangeId,
    Message,
    Nonce,
    Notify,
    NotifyType,
    ProtocolId,
)

DEFAULT_PROPOSALS = "aes128gcm16-aes256gcm16-prfsha256-prfsha384-x25519-ecp256,aes256-sha256-modp2048"
DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "tests" / "wire" / "corpus" / "strongswan"


def render(msg: Message) -> str:
    """`Message.pretty()`, with each proposal also shown in strongSwan keyword form."""
    lines = msg.pretty().splitlines()[:2]
    for payload in msg.payloads:
        if isinstance(payload, SA):
            lines.append("  SA" + (" [critical]" if payload.critical else ""))
            for p in payload.proposals:
                spi = f" spi={p.spi.hex()}" if p.spi else ""
                lines.append(f"    proposal #{p.number} {getattr(p.protocol_id, 'name', p.protocol_id)}{spi}: "
                             f"{proposal_to_keywords(p)}")
                lines.extend(f"      {t!r}" for t in p.transforms)
        else:
            block = payload.pretty_lines()
            lines.append(f"  {block[0]}" + (" [critical]" if payload.critical else ""))
            lines.extend(f"  {line}" for line in block[1:])
    return "\n".join(lines)


def build_ike_sa_init(proposals: str) -> Message:
    return Message(
        os.urandom(8),
        bytes(8),
        ExchangeType.IKE_SA_INIT,
        0,
        [
            SA(parse_proposals(proposals, ProtocolId.IKE)),
            KE(KeyExchangeId.CURVE25519, os.urandom(32)),
            Nonce(os.urandom(32)),
            Notify(NotifyType.NAT_DETECTION_SOURCE_IP, os.urandom(20)),
            Notify(NotifyType.NAT_DETECTION_DESTINATION_IP, os.urandom(20)),
            Notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED),
            Notify.signature_hash_algorithms([HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512]),
        ],
    )


def messages(args: argparse.Namespace) -> int:
    msg = build_ike_sa_init(args.proposals)
    data = msg.serialize()
    parsed = Message.parse(data)
    print(f"== IKE_SA_INIT request built from {args.proposals!r}: {len(data)} bytes")
    print(render(parsed))
    same = parsed == msg and parsed.serialize() == data
    print(f"round trip (object -> bytes -> object -> bytes): {'identical' if same else 'DIFFERENT'}")
    if not same:
        return 1
    corpus = Path(args.corpus)
    captured = sorted(corpus.glob("*ike_sa_init_req*.bin")) or sorted(corpus.glob("*.bin"))
    if captured:
        path = captured[0]
        raw = path.read_bytes()
        strongswan = Message.parse(raw)
        print(f"\n== captured strongSwan datagram {path.name}: {len(raw)} bytes")
        print(render(strongswan))
        exact = strongswan.serialize() == raw
        print(f"re-encoded byte-exact: {'yes' if exact else 'NO'}")
        if not exact:
            return 1
    else:
        print(f"\n(no strongSwan corpus in {corpus})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ikev2lib", description="ikev2lib command line")
    commands = parser.add_subparsers(dest="command", required=True)
    p_demo = commands.add_parser(
        "demo", help="two endpoints on loopback: IKE SA, Child SA, ESP traffic through the C data plane, rekey, delete"
    )
    p_demo.set_defaults(func=lambda _args: run_demo())
    p_msgs = commands.add_parser("messages", help="build, encode, decode and print an IKE_SA_INIT request")
    p_msgs.add_argument("--proposals", default=DEFAULT_PROPOSALS, help="IKE proposals in strongSwan keyword syntax")
    p_msgs.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="folder of captured strongSwan datagrams")
    p_msgs.set_defaults(func=messages)
    add_commands(commands)
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except LocalProtocolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
