"""Run strongSwan's charon inside a network namespace and drive it with swanctl (needs root).

Each `Charon` gets a private working directory holding its strongswan.conf, swanctl.conf, VICI
socket and log file, and a private /run (a tmpfs in its own mount namespace, so instances do not
fight over /run/charon.pid). ESP runs in userland (kernel-libipsec, a TUN device `ipsec0`)
because the kernel here has no ESP. Every wait is bounded.

    charon = Charon(ns, workdir, CharonSettings(log_levels={"ike": 4}))
    charon.start()
    charon.load(SwanctlConfig(connections=[conn], secrets=[psk]))
    charon.initiate(child="net")
    charon.wait_for_child("net", state="INSTALLED")
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .netns import Namespace, stop_process

CHARON = "/usr/lib/ipsec/charon"
SWANCTL = shutil.which("swanctl") or "/usr/sbin/swanctl"
CHARON_IN_ROOTFS = "/usr/lib/ipsec/charon"
START_TIMEOUT = 15.0  # seconds for charon to open its VICI socket
SWANCTL_TIMEOUT = 20.0  # one swanctl command; initiate blocks until the exchange ends
DEFAULT_WAIT = 20.0  # default bound of the wait_for_* helpers
POLL_INTERVAL = 0.1  # seconds between polls in wait helpers



def strongswan_major() -> int | None:
    """The major version of the installed strongSwan (5 on Debian 12, 6 on Debian 13), None if absent."""
    try:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "strongswan-charon"],
                              capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    head = proc.stdout.split(".", 1)[0]
    return int(head) if proc.returncode == 0 and head.isdigit() else None


# Plugins that work with userland ESP (see /work/shared/ENVIRONMENT.md), per strongSwan major version.
# strongSwan 5 builds AES, SHA-1/2, HMAC and the KDF as plugins of their own (and its openssl plugin
# cannot do KDF_PRF for every PRF); Debian's strongSwan 6 does all of them in the openssl plugin and
# ships no such files. Order is priority. IKEV2LIB_CHARON_PLUGINS replaces the list (to try another
# set; the preflight check reports what such a set cannot do).
PLUGINS_BY_MAJOR = {
    5: "random nonce openssl aes sha1 sha2 hmac gcm kdf pem pkcs1 pkcs8 x509 pubkey constraints "
       "revocation kernel-libipsec kernel-netlink socket-default vici",
    6: "random nonce openssl gcm pem pkcs1 pkcs8 x509 pubkey constraints revocation kernel-libipsec "
       "kernel-netlink socket-default vici",
}  # fmt: skip
STRONGSWAN_MAJOR = strongswan_major()
DEFAULT_PLUGINS = os.environ.get("IKEV2LIB_CHARON_PLUGINS") or PLUGINS_BY_MAJOR.get(
    STRONGSWAN_MAJOR or max(PLUGINS_BY_MAJOR), PLUGINS_BY_MAJOR[max(PLUGINS_BY_MAJOR)])


class CharonError(RuntimeError):
    """charon failed to start, a swanctl command failed, or a wait timed out."""


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass
class CharonSettings:
    """What goes into this instance's strongswan.conf (`charon { ... }`)."""

    plugins: str = DEFAULT_PLUGINS
    log_levels: Mapping[str, int] = field(default_factory=lambda: {"default": 1, "ike": 2})
    fragment_size: int | None = None  # charon.fragment_size (IKE fragmentation threshold)
    cookie_threshold: int | None = None  # charon.cookie_threshold (half-open SAs before COOKIE)
    dos_protection: bool | None = None
    retransmit_timeout: float = 2.0  # seconds; short so failed tests end quickly
    retransmit_tries: int = 3
    extra: str = ""  # appended verbatim inside `charon { }`
    # run charon from another Debian root filesystem (e.g. a trixie chroot with strongSwan 6), see
    # `Charon.start`; None: the host's /usr/lib/ipsec/charon
    rootfs: Path | None = None


@dataclass
class ChildConfig:
    name: str
    local_ts: Sequence[str]
    remote_ts: Sequence[str]
    esp_proposals: Sequence[str] = ("aes128gcm16-x25519",)
    start_action: str = "none"
    mode: str = "tunnel"
    rekey_time: str = "0"  # "0" disables automatic rekeying: tests rekey explicitly
    life_time: str | None = None
    dpd_action: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ConnectionConfig:
    name: str
    local_addrs: Sequence[str]
    remote_addrs: Sequence[str]
    local_id: str
    remote_id: str
    children: Sequence[ChildConfig]
    proposals: Sequence[str] = ("aes128gcm16-prfsha256-x25519",)
    auth: str = "psk"
    rekey_time: str = "0"
    reauth_time: str = "0"
    dpd_delay: str | None = None
    fragmentation: str = "yes"
    mobike: str = "no"
    encap: str = "no"
    local_port: int | None = None
    remote_port: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    local_extra: Mapping[str, str] = field(default_factory=dict)  # more of `local { }` (certs, ...)
    remote_extra: Mapping[str, str] = field(default_factory=dict)  # more of `remote { }` (cacerts, ...)


@dataclass
class PskSecret:
    ids: Sequence[str]
    secret: str


@dataclass
class SwanctlConfig:
    connections: Sequence[ConnectionConfig]
    secrets: Sequence[PskSecret] = ()


def _conf_value(value: str) -> str:
    # swanctl.conf values with spaces or specials must be quoted; quotes themselves are never needed here.
    if '"' in value or "\n" in value:
        raise ValueError(f"unsupported character in swanctl.conf value {value!r}")
    return f'"{value}"' if re.search(r"[\s{}=#,]", value) else value


def _block(name: str, items: Mapping[str, Any], indent: int) -> list[str]:
    pad = "    " * indent
    lines = [f"{pad}{name} {{"]
    for key, value in items.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            lines.extend(_block(key, value, indent + 1))
        elif isinstance(value, (list, tuple)):
            lines.append(f"{pad}    {key} = {','.join(_conf_value(str(v)) for v in value)}")
        else:
            lines.append(f"{pad}    {key} = {_conf_value(str(value))}")
    lines.append(f"{pad}}}")
    return lines


def render_swanctl_conf(config: SwanctlConfig) -> str:
    conns: dict[str, Any] = {}
    for c in config.connections:
        children: dict[str, Any] = {}
        for ch in c.children:
            children[ch.name] = {
                "local_ts": list(ch.local_ts), "remote_ts": list(ch.remote_ts),
                "esp_proposals": list(ch.esp_proposals), "start_action": ch.start_action,
                "mode": ch.mode, "rekey_time": ch.rekey_time, "life_time": ch.life_time,
                "dpd_action": ch.dpd_action, **ch.extra,
            }
        conns[c.name] = {
            "version": 2, "local_addrs": list(c.local_addrs), "remote_addrs": list(c.remote_addrs),
            "local_port": c.local_port, "remote_port": c.remote_port,
            "proposals": list(c.proposals), "rekey_time": c.rekey_time, "reauth_time": c.reauth_time,
            "dpd_delay": c.dpd_delay, "fragmentation": c.fragmentation, "mobike": c.mobike,
            "encap": c.encap, **c.extra,
            "local": {"auth": c.auth, "id": c.local_id, **c.local_extra},
            "remote": {"auth": c.auth, "id": c.remote_id, **c.remote_extra},
            "children": children,
        }
    secrets: dict[str, Any] = {}
    for i, s in enumerate(config.secrets):
        entry: dict[str, Any] = {f"id-{j}": ident for j, ident in enumerate(s.ids)}
        entry["secret"] = s.secret
        secrets[f"ike-{i}"] = entry
    lines = _block("connections", conns, 0) + _block("secrets", secrets, 0)
    return "\n".join(lines) + "\n"


def render_strongswan_conf(settings: CharonSettings, vici_uri: str, log_path: Path) -> str:
    levels = "\n".join(f"                {k} = {v}" for k, v in settings.log_levels.items())
    optional = []
    if settings.fragment_size is not None:
        optional.append(f"    fragment_size = {settings.fragment_size}")
    if settings.cookie_threshold is not None:
        optional.append(f"    cookie_threshold = {settings.cookie_threshold}")
    if settings.dos_protection is not None:
        optional.append(f"    dos_protection = {'yes' if settings.dos_protection else 'no'}")
    return f"""\
charon {{
    load = {settings.plugins}
    install_routes = no
    install_virtual_ip = no
    retransmit_timeout = {settings.retransmit_timeout}
    retransmit_tries = {settings.retransmit_tries}
{chr(10).join(optional)}
    filelog {{
        harness {{
            path = {log_path}
            append = no
            flush_line = yes
            time_format = %H:%M:%S
            ike_name = yes
{levels}
        }}
    }}
    syslog {{
        identifier = charon-harness
        daemon {{
            default = -1
        }}
    }}
    plugins {{
        vici {{
            socket = {vici_uri}
        }}
    }}
{settings.extra}
}}
swanctl {{
    load = pem pkcs1 pkcs8 x509 openssl random nonce
    socket = {vici_uri}
}}
"""


# ---------------------------------------------------------------------------------------------
# `swanctl --raw` output parser


_KEY = re.compile(r"([^\s={}\[\]]+)(=\[|=|\s*\{|\s*\[)")


def parse_vici_raw(text: str) -> list[dict[str, Any]]:
    """Parse the messages of `swanctl ... --raw` (one per line) into nested dicts.

    Format: `name {key=value sub {...} list [a b]}`; values have no spaces in the outputs we read.
    """
    messages: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or "{" not in line:
            continue
        _, _, body = line.partition("{")
        if not body.endswith("}"):
            raise CharonError(f"cannot parse swanctl raw output: {line[:200]!r}")
        value, pos = _parse_section(body[:-1], 0)
        if pos != len(body) - 1:
            raise CharonError(f"trailing data in swanctl raw output: {line[:200]!r}")
        messages.append(value)
    return messages


def _parse_section(text: str, pos: int) -> tuple[dict[str, Any], int]:
    result: dict[str, Any] = {}
    while True:
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos >= len(text) or text[pos] == "}":
            return result, pos
        m = _KEY.match(text, pos)
        if not m:
            raise CharonError(f"cannot parse swanctl raw output near {text[pos:pos + 60]!r}")
        key, kind = m.group(1), m.group(2).strip().lstrip("=") or "="
        pos = m.end()
        if kind == "=":
            end = pos
            while end < len(text) and text[end] not in " }":
                end += 1
            result[key] = text[pos:end]
            pos = end
        elif kind == "{":
            sub, pos = _parse_section(text, pos)
            if pos >= len(text) or text[pos] != "}":
                raise CharonError("unterminated section in swanctl raw output")
            result[key] = sub
            pos += 1
        else:
            end = text.find("]", pos)
            if end < 0:
                raise CharonError("unterminated list in swanctl raw output")
            result[key] = text[pos:end].split()
            pos = end + 1


# ---------------------------------------------------------------------------------------------
# The daemon


@dataclass
class ChildSA:
    name: str
    uniqueid: str
    reqid: str
    state: str
    mode: str
    protocol: str
    encap: bool
    spi_in: str
    spi_out: str
    encr_alg: str | None
    encr_keysize: str | None
    integ_alg: str | None
    dh_group: str | None
    bytes_in: int
    packets_in: int
    bytes_out: int
    packets_out: int
    local_ts: list[str]
    remote_ts: list[str]
    raw: dict[str, Any]


@dataclass
class IkeSA:
    name: str
    uniqueid: str
    state: str
    initiator: bool
    spi_i: str
    spi_r: str
    local_host: str
    remote_host: str
    encr_alg: str | None
    encr_keysize: str | None
    integ_alg: str | None
    prf_alg: str | None
    dh_group: str | None
    children: list[ChildSA]
    raw: dict[str, Any]

    def child(self, name: str) -> ChildSA | None:
        for c in self.children:
            if c.name == name:
                return c
        return None


def _child_from_raw(key: str, d: dict[str, Any]) -> ChildSA:
    return ChildSA(
        name=d.get("name", key), uniqueid=d.get("uniqueid", ""), reqid=d.get("reqid", ""),
        state=d.get("state", ""), mode=d.get("mode", ""), protocol=d.get("protocol", ""),
        encap=d.get("encap") == "yes", spi_in=d.get("spi-in", ""), spi_out=d.get("spi-out", ""),
        encr_alg=d.get("encr-alg"), encr_keysize=d.get("encr-keysize"), integ_alg=d.get("integ-alg"),
        dh_group=d.get("dh-group"),
        bytes_in=int(d.get("bytes-in", 0)), packets_in=int(d.get("packets-in", 0)),
        bytes_out=int(d.get("bytes-out", 0)), packets_out=int(d.get("packets-out", 0)),
        local_ts=list(d.get("local-ts", [])), remote_ts=list(d.get("remote-ts", [])), raw=d,
    )


def ike_sas_from_raw(messages: list[dict[str, Any]]) -> list[IkeSA]:
    sas = []
    for msg in messages:
        for name, d in msg.items():
            if not isinstance(d, dict):
                continue
            children = [_child_from_raw(k, v) for k, v in d.get("child-sas", {}).items()]
            sas.append(IkeSA(
                name=name, uniqueid=d.get("uniqueid", ""), state=d.get("state", ""),
                initiator=d.get("initiator") == "yes", spi_i=d.get("initiator-spi", ""),
                spi_r=d.get("responder-spi", ""), local_host=d.get("local-host", ""),
                remote_host=d.get("remote-host", ""), encr_alg=d.get("encr-alg"),
                encr_keysize=d.get("encr-keysize"), integ_alg=d.get("integ-alg"),
                prf_alg=d.get("prf-alg"), dh_group=d.get("dh-group"), children=children, raw=d,
            ))
    return sas


class Charon:
    """One charon daemon inside `ns`, with everything it writes under `workdir`."""

    def __init__(self, ns: Namespace, workdir: Path, settings: CharonSettings | None = None,
                 name: str = "charon") -> None:
        self.ns = ns
        self.name = name
        self.workdir = Path(workdir)
        self.settings = settings or CharonSettings()
        self.conf_path = self.workdir / "strongswan.conf"
        self.swanctl_dir = self.workdir / "swanctl"
        self.socket_path = self.workdir / "charon.vici"
        self.vici_uri = f"unix://{self.socket_path}"
        self.log_path = self.workdir / "charon.log"
        self.stdout_path = self.workdir / "charon.stdout"
        self.proc: subprocess.Popen[Any] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> Charon:
        if not os.path.exists(CHARON):
            raise CharonError(f"{CHARON} not found: install strongswan-charon (scripts/apt-packages.txt)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.swanctl_dir.mkdir(exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self.conf_path.write_text(render_strongswan_conf(self.settings, self.vici_uri, self.log_path))
        env = self._env()
        # A private /run per daemon: charon refuses to start if /run/charon.pid names a live process.
        script = f"mount -t tmpfs tmpfs /run && exec {CHARON}"
        root = self.settings.rootfs
        if root is not None:
            # every mount lives only in charon's private mount namespace (unshare -m: private propagation);
            # the work directory appears at the same path inside, so config, log and VICI socket are shared.
            # Its mount point is made on a private tmpfs over the tree's /tmp (pytest's tmp_path is under
            # /tmp), so nothing is left in the tree afterwards.
            q = shlex.quote
            inside = q(f"{root}{self.workdir}")
            script = (" && ".join(f"mount -t tmpfs tmpfs {q(str(root / d))}" for d in ("run", "tmp")) + " && "
                      + " && ".join(f"mount --rbind /{d} {q(str(root / d))}" for d in ("proc", "sys", "dev"))
                      + f" && mkdir -p {inside} && mount --bind {q(str(self.workdir))} {inside}"
                      + f" && exec chroot {q(str(root))} {CHARON_IN_ROOTFS}")
        with open(self.stdout_path, "wb") as out:
            self.proc = self.ns.popen(["unshare", "-m", "sh", "-c", script], env=env,
                                      stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.socket_path.exists():
            if self.proc.poll() is not None:
                raise CharonError(f"{self.name} exited ({self.proc.returncode}) at start:\n{self.tail_log()}")
            if time.monotonic() > deadline:
                raise CharonError(f"{self.name} did not open {self.socket_path} in {timeout}s:\n{self.tail_log()}")
            time.sleep(POLL_INTERVAL)
        # The socket file appears before it accepts connections; a cheap query proves it is ready.
        self.wait_until(lambda: self._try_swanctl("--stats"), timeout, "VICI ready")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        self.socket_path.unlink(missing_ok=True)

    def __enter__(self) -> Charon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGSWAN")}
        env["STRONGSWAN_CONF"] = str(self.conf_path)
        env["SWANCTL_DIR"] = str(self.swanctl_dir)
        return env

    def tail_log(self, lines: int = 40) -> str:
        parts = []
        for path in (self.stdout_path, self.log_path):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- swanctl --------------------------------------------------------------------------------

    def swanctl(self, *args: str, timeout: float = SWANCTL_TIMEOUT, check: bool = True) -> str:
        """Run `swanctl ARGS -u <this socket>` (from the host: the socket is a file)."""
        cmd = [SWANCTL, *args, "--uri", self.vici_uri]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self._env())
        except subprocess.TimeoutExpired as exc:
            raise CharonError(f"swanctl {' '.join(args)} timed out after {timeout}s") from exc
        if check and proc.returncode != 0:
            raise CharonError(f"swanctl {' '.join(args)} failed ({proc.returncode}):\n"
                              f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}\n{self.tail_log(20)}")
        return proc.stdout

    def _try_swanctl(self, *args: str) -> bool:
        try:
            self.swanctl(*args, timeout=5.0)
        except CharonError:
            return False
        return True

    def load(self, config: SwanctlConfig) -> None:
        """Write swanctl.conf and `swanctl --load-all`."""
        (self.swanctl_dir / "swanctl.conf").write_text(render_swanctl_conf(config))
        self.swanctl("--load-all", "--noprompt")

    def initiate(self, child: str | None = None, ike: str | None = None,
                 timeout: float = SWANCTL_TIMEOUT) -> str:
        args = ["--initiate", "--timeout", str(int(timeout))]
        if child:
            args += ["--child", child]
        if ike:
            args += ["--ike", ike]
        return self.swanctl(*args, timeout=timeout + 5)

    def terminate(self, child: str | None = None, ike: str | None = None,
                  timeout: float = SWANCTL_TIMEOUT) -> str:
        args = ["--terminate", "--timeout", str(int(timeout))]
        if child:
            args += ["--child", child]
        if ike:
            args += ["--ike", ike]
        return self.swanctl(*args, timeout=timeout + 5)

    def rekey(self, child: str | None = None, ike: str | None = None, reauth: bool = False) -> str:
        args = ["--rekey"]
        if child:
            args += ["--child", child]
        if ike:
            args += ["--ike", ike]
        if reauth:
            args.append("--reauth")
        return self.swanctl(*args)

    def list_sas(self) -> list[IkeSA]:
        return ike_sas_from_raw(parse_vici_raw(self.swanctl("--list-sas", "--raw")))

    # -- waiting --------------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll `predicate` until it returns something truthy (returned); CharonError after
        `timeout` seconds or if charon dies."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.proc is not None and self.proc.poll() is not None:
                raise CharonError(f"{self.name} died while waiting for {what}:\n{self.tail_log()}")
            if time.monotonic() > deadline:
                raise CharonError(f"{self.name}: timed out after {timeout}s waiting for {what}\n"
                                  f"{self.tail_log(20)}")
            time.sleep(POLL_INTERVAL)

    def wait_for_ike(self, name: str, state: str = "ESTABLISHED", timeout: float = DEFAULT_WAIT) -> IkeSA:
        def check() -> IkeSA | None:
            for sa in self.list_sas():
                if sa.name == name and sa.state == state:
                    return sa
            return None
        result: IkeSA = self.wait_until(check, timeout, f"IKE SA {name} {state}")
        return result

    def wait_for_child(self, name: str, state: str = "INSTALLED",
                       timeout: float = DEFAULT_WAIT,
                       where: Callable[[ChildSA], bool] | None = None) -> ChildSA:
        def check() -> ChildSA | None:
            for sa in self.list_sas():
                for c in sa.children:
                    if c.name == name and c.state == state and (where is None or where(c)):
                        return c
            return None
        result: ChildSA = self.wait_until(check, timeout, f"Child SA {name} {state}")
        return result

    def wait_for_ike_gone(self, spi_i: str, timeout: float = DEFAULT_WAIT) -> None:
        self.wait_until(lambda: all(sa.spi_i != spi_i for sa in self.list_sas()), timeout,
                        f"IKE SA {spi_i} gone")

    def wait_for_no_sas(self, timeout: float = DEFAULT_WAIT) -> None:
        self.wait_until(lambda: not self.list_sas(), timeout, "no IKE SAs")

    def wait_for_log(self, pattern: str, timeout: float = DEFAULT_WAIT) -> re.Match[str]:
        rx = re.compile(pattern)
        result: re.Match[str] = self.wait_until(lambda: rx.search(self.log_text()), timeout,
                                            f"log line /{pattern}/")
        return result


# ---------------------------------------------------------------------------------------------
# A ready-made pair of peers


@dataclass
class PskPeers:
    """Two charons configured for the same PSK connection; `left` usually initiates."""

    left: Charon
    right: Charon
    conn: str
    child: str


def psk_connection_pair(
    left_addr: str, right_addr: str, *, conn: str = "conn", child: str = "net",
    proposals: Sequence[str] = ("aes128gcm16-prfsha256-x25519",),
    esp_proposals: Sequence[str] = ("aes128gcm16-x25519",),
    right_proposals: Sequence[str] | None = None,
    left_ts: Sequence[str] = ("10.1.0.0/16",), right_ts: Sequence[str] = ("10.2.0.0/16",),
    psk: str = "interop-test-psk-0123456789abcdef", left_id: str = "left", right_id: str = "right",
    conn_extra: Mapping[str, str] | None = None, child_extra: Mapping[str, str] | None = None,
    **conn_kwargs: Any,
) -> tuple[SwanctlConfig, SwanctlConfig]:
    """swanctl configurations for both ends of one PSK tunnel (left = initiator by convention)."""
    secret = [PskSecret([left_id, right_id], psk)]

    def side(local: str, remote: str, lid: str, rid: str, lts: Sequence[str], rts: Sequence[str],
             props: Sequence[str]) -> SwanctlConfig:
        ch = ChildConfig(child, lts, rts, esp_proposals=esp_proposals, extra=dict(child_extra or {}))
        return SwanctlConfig([ConnectionConfig(conn, [local], [remote], lid, rid, [ch], proposals=props,
                                               extra=dict(conn_extra or {}), **conn_kwargs)], secret)

    return (side(left_addr, right_addr, left_id, right_id, left_ts, right_ts, proposals),
            side(right_addr, left_addr, right_id, left_id, right_ts, left_ts,
                 right_proposals if right_proposals is not None else proposals))


# ---------------------------------------------------------------------------------------------
# Key material from an `ike = 4` / `chd = 4` log


_DUMP_HEAD = re.compile(r"\[(?P<grp>\w+)\] (?:<(?P<sa>[^>]*)> )?(?P<label>[^\[\]]+?) => (?P<n>\d+) bytes @ 0x[0-9a-f]+$")
_DUMP_LINE = re.compile(r"\[\w+\] (?:<[^>]*> )?\s*(?P<off>\d+): (?P<hex>(?:[0-9A-F]{2} ?)+)")


@dataclass(frozen=True)
class LoggedDump:
    """One `label => N bytes` hex dump from charon's log (in log order)."""

    group: str  # log group, e.g. IKE, CHD
    ike_sa: str  # "<name>|<unique id>" prefix, "" if none
    label: str  # e.g. "SKEYSEED", "Sk_ei secret", "encryption initiator key"
    data: bytes


def parse_logged_dumps(log: str) -> list[LoggedDump]:
    """All hex dumps in a charon filelog written with `ike_name = yes`."""
    dumps: list[LoggedDump] = []
    lines = log.splitlines()
    i = 0
    while i < len(lines):
        m = _DUMP_HEAD.search(lines[i])
        i += 1
        if not m:
            continue
        size = int(m.group("n"))
        data = bytearray()
        while len(data) < size and i < len(lines):
            line = _DUMP_LINE.search(lines[i])
            if not line or int(line.group("off")) != len(data):
                break
            take = min(16, size - len(data))
            data += bytes.fromhex(line.group("hex")[:take * 3])
            i += 1
        if len(data) == size:
            dumps.append(LoggedDump(m.group("grp"), m.group("sa") or "", m.group("label"), bytes(data)))
    return dumps


IKE_KEY_LABELS = {
    "SKEYSEED": "skeyseed", "Sk_d secret": "sk_d", "Sk_ai secret": "sk_ai", "Sk_ar secret": "sk_ar",
    "Sk_ei secret": "sk_ei", "Sk_er secret": "sk_er", "Sk_pi secret": "sk_pi", "Sk_pr secret": "sk_pr",
}
CHILD_KEY_LABELS = {
    "encryption initiator key": "encr_i", "encryption responder key": "encr_r",
    "integrity initiator key": "integ_i", "integrity responder key": "integ_r",
}
SHARED_SECRET_LABELS = ("shared Diffie Hellman secret", "DH secret")


def logged_ike_keys(log: str) -> list[dict[str, bytes]]:
    """IKE SA key sets in derivation order: {shared_secret?, skeyseed, sk_d, sk_ai?, ..., sk_pr}.

    A set starts at SKEYSEED; the last shared secret logged before it is included."""
    sets: list[dict[str, bytes]] = []
    secret: bytes | None = None
    for d in parse_logged_dumps(log):
        if d.label in SHARED_SECRET_LABELS:
            secret = d.data
        elif d.label == "SKEYSEED":
            sets.append({"skeyseed": d.data} | ({"shared_secret": secret} if secret is not None else {}))
            secret = None
        elif d.label in IKE_KEY_LABELS and sets:
            sets[-1][IKE_KEY_LABELS[d.label]] = d.data
    return sets


def logged_child_keys(log: str) -> list[dict[str, bytes]]:
    """Child SA key sets in derivation order: {encr_i, encr_r, integ_i?, integ_r?}."""
    sets: list[dict[str, bytes]] = []
    for d in parse_logged_dumps(log):
        key = CHILD_KEY_LABELS.get(d.label)
        if key is None:
            continue
        if not sets or key in sets[-1]:
            sets.append({})
        sets[-1][key] = d.data
    return sets
