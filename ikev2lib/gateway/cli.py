"""The gateway commands of `ikev2lib`: `run` (the gateway in the foreground) and the control
commands `status`, `initiate`, `terminate`, `reload`, `redirect` that talk to it over its control socket.

`run --metrics ADDR:PORT` serves Prometheus metrics (metrics.py); `run --log-format json` writes one
JSON object per log line (logs.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from ..exceptions import LocalProtocolError
from .control import DEFAULT_CONTROL_PATH, ControlServer, request
from .logs import LOG_FORMATS, setup_logging
from .metrics import ListenAddressError, MetricsServer, format_listen, parse_listen
from .model import DEFAULT_PATH_MTU, XDP_MODES, DataPathConfig, GatewayConfig
from .run import IKE_PORT, NATT_PORT, Gateway

__all__ = ["add_commands"]

log = logging.getLogger("ikev2lib.gateway")


def _loader(args: argparse.Namespace) -> Callable[[], GatewayConfig]:
    if args.config is not None:
        from .toml_config import load_toml

        return lambda: load_toml(args.config)
    from .swanctl import load_swanctl

    return lambda: load_swanctl(args.swanctl)


def _metrics_address(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ListenAddressError as exc:  # argparse prints it as the option's error
        raise argparse.ArgumentTypeError(str(exc)) from None


def _datapath(args: argparse.Namespace) -> DataPathConfig | None:
    """--tun and its companions, in place of the file's [datapath] (a swanctl directory has none)."""
    if args.tun is None:
        return None
    return DataPathConfig(tun=args.tun, addresses=tuple(args.tun_address or ()), workers=args.workers,
                          path_mtu=args.path_mtu, mss_clamp=not args.no_mss_clamp, xdp=args.xdp or "",
                          xdp_mode=args.xdp_mode)


async def _serve(args: argparse.Namespace) -> int:
    try:
        datapath = _datapath(args)
    except LocalProtocolError as exc:
        log.error("%s", exc)
        return 2
    gateway = Gateway(_loader(args), listen=tuple(args.listen or ()), ike_port=args.ike_port,
                      natt_port=args.natt_port, datapath=datapath)
    metrics: MetricsServer | None = None
    if args.metrics is not None:  # bound first: a taken port stops us before any SA is initiated
        try:
            metrics = await gateway.metrics.serve(*args.metrics)
        except OSError as exc:
            log.error("cannot serve metrics on %s: %s", format_listen(*args.metrics), exc)
            return 1
    try:
        await gateway.start()
    except LocalProtocolError as exc:  # a configuration or a data path that cannot run here
        log.error("%s", exc)
        if metrics is not None:
            await metrics.close()
        return 1
    control = ControlServer(gateway, args.control)
    await control.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        try:
            gateway.reload()
        except LocalProtocolError as exc:  # the old configuration stays in force
            log.error("reload failed, configuration unchanged: %s", exc)

    loop.add_signal_handler(signal.SIGHUP, reload)
    log.info("running; control socket %s", args.control)
    await stop.wait()
    await control.close()
    await gateway.shutdown()
    if metrics is not None:
        await metrics.close()
    return 0


def run(args: argparse.Namespace) -> int:
    setup_logging(logging.INFO, args.log_format)
    return asyncio.run(_serve(args))


def _print_status(status: dict[str, Any]) -> None:
    print(f"{len(status['connections'])} connections, listening on {', '.join(status['listen'])}")
    for ike in status["ike_sas"]:
        star_i, star_r = ("*", "") if ike["initiator"] else ("", "*")
        print(f"{ike['name']}: #{ike['ike_sa_id']}, {ike['state'].upper()}, IKEv2, "
              f"{ike['spi_i']}_i{star_i} {ike['spi_r']}_r{star_r}")
        print(f"  local  '{ike['local_id']}' @ {ike['local']}")
        cert = f" [{ike['remote_certificate']}]" if ike["remote_certificate"] else ""
        print(f"  remote '{ike['remote_id']}' @ {ike['remote']}{cert}")
        print(f"  {ike['proposal']}{', NAT-T' if ike['udp_encap'] else ''}")
        rekey = f", rekeying in {ike['rekey_in_s']}s" if ike["rekey_in_s"] is not None else ""
        print(f"  established {ike['established_s']}s ago{rekey}")
        for child in ike["children"]:
            encap = "-in-UDP" if child["udp_encap"] else ""
            print(f"  {child['name']}: #{child['child_id']}, {child['state'].upper()}, {child['mode'].upper()}{encap}, "
                  f"ESP SPIs: {child['spi_in']}_i {child['spi_out']}_o")
            rekey = f", rekeying in {child['rekey_in_s']}s" if child["rekey_in_s"] is not None else ""
            print(f"    {child['proposal']}, {child['bytes_in']} bytes_i ({child['packets_in']} pkts), "
                  f"{child['bytes_out']} bytes_o ({child['packets_out']} pkts){rekey}")
            print(f"    local  {' '.join(child['local_ts'])}")
            print(f"    remote {' '.join(child['remote_ts'])}")
    datapath = status.get("datapath")
    if datapath is not None:
        drops = ", ".join(f"{n} {reason}" for reason, n in datapath["drops"].items()) or "none"
        print(f"data path {datapath['tun']} (MTU {datapath['mtu']}, {datapath['workers']} workers, "
              f"{datapath['tunnels']} Child SAs), drops outside tunnels: {drops}")
        for name, t in datapath["traffic"].items():
            rate = ""
            if "bits_in_per_s" in t:
                rate = f", now {t['bits_in_per_s'] / 1e6:.1f} Mbit/s in, {t['bits_out_per_s'] / 1e6:.1f} Mbit/s out"
            dropped = ", ".join(f"{n} {reason}" for reason, n in t["drops"].items()) or "no drops"
            print(f"  {name}: {t['bytes_in']} bytes_i ({t['packets_in']} pkts), {t['bytes_out']} bytes_o "
                  f"({t['packets_out']} pkts){rate}, {dropped}")


def control(args: argparse.Namespace) -> int:
    extra = {"to": args.to} if args.command == "redirect" else {}
    answer = request(args.control, args.command, getattr(args, "name", None), **extra)
    if not answer.get("ok"):
        print(f"error: {answer.get('error', 'no answer')}", file=sys.stderr)
        return 1
    if args.command == "status" and not args.json:
        _print_status(answer["status"])
    else:
        print(json.dumps(answer.get("status", answer), indent=2))
    return 0


def add_commands(commands: Any) -> None:
    """Add `run`, `status`, `initiate`, `terminate`, `reload` and `redirect` to an argparse subparsers object."""
    p_run = commands.add_parser("run", help="run a gateway in the foreground (SIGHUP reloads, SIGTERM stops)")
    source = p_run.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="the native TOML configuration file")
    source.add_argument("--swanctl", help="a strongSwan swanctl directory (swanctl.conf, x509/, x509ca/, ...)")
    p_run.add_argument("--control", default=DEFAULT_CONTROL_PATH, help="control socket path")
    p_run.add_argument("--listen", action="append", help="address to bind (default: the connections' local_addrs)")
    p_run.add_argument("--ike-port", type=int, default=IKE_PORT)
    p_run.add_argument("--natt-port", type=int, default=NATT_PORT)
    p_run.add_argument("--metrics", type=_metrics_address, metavar="ADDR:PORT",
                       help="serve Prometheus metrics on http://ADDR:PORT/metrics (e.g. 127.0.0.1:9100, [::1]:9100)")
    p_run.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                       help="text lines, or one JSON object per line (default: text)")
    p_run.add_argument("--tun", metavar="NAME", help="carry the tunnels' traffic through TUN device NAME "
                       "(replaces the configuration's [datapath])")
    p_run.add_argument("--tun-address", action="append", metavar="CIDR", help="an inner address of the gateway "
                       "on the TUN device (e.g. 10.1.0.1/24); repeat for more")
    p_run.add_argument("--workers", type=int, default=0, help="data-path worker threads (default: one per CPU)")
    p_run.add_argument("--path-mtu", type=int, default=DEFAULT_PATH_MTU, help="outer MTU towards the peers")
    p_run.add_argument("--no-mss-clamp", action="store_true", help="leave the MSS of TCP SYNs as it is")
    p_run.add_argument("--xdp", metavar="IFACE", help="receive and send ESP on IFACE through AF_XDP (falls back "
                       "to the sockets, with a warning, where it cannot)")
    p_run.add_argument("--xdp-mode", choices=XDP_MODES, default="native",
                       help="native (the driver's XDP) or skb (generic XDP, any device)")
    p_run.set_defaults(func=run)
    for name, text in (("status", "IKE and Child SAs of a running gateway"), ("reload", "reload the configuration"),
                       ("initiate", "initiate a connection"), ("terminate", "delete a connection's IKE SAs"),
                       ("redirect", "send established clients to another gateway (RFC 5685)")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--control", default=DEFAULT_CONTROL_PATH, help="control socket path")
        if name in ("initiate", "terminate"):
            sub.add_argument("name")
        if name == "redirect":
            sub.add_argument("--to", required=True, help="the gateway: an IP address or a DNS name")
            sub.add_argument("name", nargs="?", help="only this connection's clients (default: all)")
        if name == "status":
            sub.add_argument("--json", action="store_true", help="print the status as JSON")
        sub.set_defaults(func=control)
