"""Is this machine able to run the interop suite? One check, run once per test session.

The interop fixtures start one charon before the first interop test and compare what it loaded with
what the harness asked for (`swanctl --stats` lists the loaded plugins, `swanctl --list-algs` the
algorithms they provide). A machine missing a plugin package then fails every interop test at once
with one message naming the Debian package, instead of each test waiting out its timeout against a
peer that can never answer.

`PLUGIN_PACKAGES` and `TOOL_PACKAGES` say which Debian package provides what the suite runs;
tests/test_environment.py checks both tables against `dpkg -S` and scripts/apt-packages.txt.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from .netns import Namespace, NetnsError, require_root
from .strongswan import CHARON, DEFAULT_PLUGINS, STRONGSWAN_MAJOR, SWANCTL, Charon, CharonError, CharonSettings

PLUGIN_DIR = "/usr/lib/ipsec/plugins"

# strongSwan plugin -> the Debian package that ships /usr/lib/ipsec/plugins/libstrongswan-<plugin>.so.
# The openssl plugin moved from libstrongswan-standard-plugins (strongSwan 5, Debian 12) into
# libstrongswan (strongSwan 6, Debian 13).
_LIBSTRONGSWAN = "random nonce pem pkcs1 pkcs8 x509 pubkey constraints revocation kernel-netlink"
_LIBSTRONGSWAN_5_ONLY = "aes sha1 sha2 hmac kdf"  # strongSwan 6 does these in its openssl plugin
PLUGIN_PACKAGES_BY_MAJOR = {
    major: {
        "openssl": openssl_package,
        "gcm": "libstrongswan-standard-plugins",
        "kernel-libipsec": "libcharon-extra-plugins",
        "socket-default": "strongswan-libcharon",
        "vici": "strongswan-swanctl",
        **{name: "libstrongswan" for name in libstrongswan.split()},
    }
    for major, openssl_package, libstrongswan in (
        (5, "libstrongswan-standard-plugins", f"{_LIBSTRONGSWAN} {_LIBSTRONGSWAN_5_ONLY}"),
        (6, "libstrongswan", _LIBSTRONGSWAN),
    )
}
PLUGIN_PACKAGES = PLUGIN_PACKAGES_BY_MAJOR.get(STRONGSWAN_MAJOR or 6, PLUGIN_PACKAGES_BY_MAJOR[6])

# Algorithms the interop tests negotiate (names as `swanctl --list-algs` prints them) and the plugin
# the harness relies on for each: without the openssl plugin charon has no X25519 and no AES-GCM.
REQUIRED_ALGORITHMS = {
    "AES_GCM_16": "openssl", "CHACHA20_POLY1305": "openssl", "AES_CBC": "openssl",
    "HMAC_SHA2_256_128": "openssl", "PRF_HMAC_SHA2_256": "openssl", "PRF_HMAC_SHA2_384": "openssl",
    "PRF_HMAC_SHA2_512": "openssl", "CURVE_25519": "openssl", "ECP_256": "openssl", "ECP_384": "openssl",
    "MODP_2048": "openssl", "MODP_3072": "openssl",
}  # fmt: skip

# Programs (and files) the tests and scripts use -> (paths, the Debian package that provides them). Several paths
# because of the merged /usr: dpkg knows /bin/ip on Debian 12 and /usr/sbin/ip on 13.
TOOL_PACKAGES = {
    "charon": ((CHARON,), "strongswan-charon"),
    "swanctl": (("/usr/sbin/swanctl",), "strongswan-swanctl"),
    "ip": (("/usr/sbin/ip", "/bin/ip", "/sbin/ip"), "iproute2"),
    "sysctl": (("/usr/sbin/sysctl", "/sbin/sysctl"), "procps"),
    "debootstrap": (("/usr/sbin/debootstrap",), "debootstrap"),
    # not a program: the protocol names charon resolves in traffic selectors ("[udp/5001]")
    "/etc/protocols": (("/etc/protocols",), "netbase"),
    "tshark": (("/usr/bin/tshark",), "tshark"),
    "openssl": (("/usr/bin/openssl",), "openssl"),
    # not a program: strongSwan's settings parser, called by tests/gateway/test_swanctl_syntax.py
    "libstrongswan": (("/usr/lib/ipsec/libstrongswan.so.0",), "libstrongswan"),
    "clang": (("/usr/bin/clang",), "clang"),
    "iperf3": (("/usr/bin/iperf3",), "iperf3"),
    "prometheus": (("/usr/bin/prometheus",), "prometheus"),
    "ping": (("/usr/bin/ping", "/bin/ping"), "iputils-ping"),
    "nft": (("/usr/sbin/nft",), "nftables"),
    "conntrack": (("/usr/sbin/conntrack",), "conntrack"),
    "llvm-symbolizer": (("/usr/bin/llvm-symbolizer",), "llvm"),
    # the HA tests' etcd members (tests/ha/etcd.py)
    "etcd": (("/usr/bin/etcd",), "etcd-server"),
    # not programs: the headers ikev2lib._xsk (AF_XDP) is built from
    "libxdp headers": (("/usr/include/xdp/xsk.h",), "libxdp-dev"),
    "libbpf headers": (("/usr/include/bpf/libbpf.h",), "libbpf-dev"),
}

# clang's sanitizer and libFuzzer runtimes (scripts/test-esp-core.sh); their package is versioned.
CLANG_RUNTIMES = ("libclang_rt.asan", "libclang_rt.ubsan_standalone", "libclang_rt.fuzzer")


def plugin_path(plugin: str) -> str:
    return f"{PLUGIN_DIR}/libstrongswan-{plugin}.so"


def package_of_plugin(plugin: str, packages: Mapping[str, str] = PLUGIN_PACKAGES) -> str:
    return packages.get(plugin, "unknown package (add it to tests/interop/preflight.py)")


def clang_runtime_files(resource_dir: str) -> dict[str, list[str]]:
    """Each runtime -> its static archives under clang's resource directory (`clang
    -print-resource-dir`). Debian's clang 14 and 19 both keep them in lib/linux/ with an arch suffix
    (libclang_rt.asan-x86_64.a); upstream layouts use lib/<target triple>/libclang_rt.asan.a."""
    found = {}
    for name in CLANG_RUNTIMES:
        found[name] = sorted(glob.glob(f"{resource_dir}/lib/*/{name}.a") + glob.glob(f"{resource_dir}/lib/*/{name}-*.a"))
    return found


def loaded_plugins(stats: str) -> list[str]:
    """The plugin names of the `loaded plugins:` line of `swanctl --stats`."""
    match = re.search(r"^loaded plugins: (.*)$", stats, re.MULTILINE)
    if match is None:
        raise CharonError(f"no 'loaded plugins' line in swanctl --stats output:\n{stats[:1000]}")
    return match.group(1).split()


def missing_from(requested: Iterable[str], loaded: Iterable[str], algorithms: str,
                 packages: Mapping[str, str] = PLUGIN_PACKAGES) -> list[str]:
    """One line per problem: a requested plugin charon did not load, or a required algorithm no loaded
    plugin provides. Each line names the Debian package to install."""
    have = set(loaded)
    problems = []
    for plugin in requested:
        if plugin not in have:
            where = "present" if os.path.exists(plugin_path(plugin)) else "missing"
            problems.append(f"plugin '{plugin}' did not load ({plugin_path(plugin)} {where}): "
                            f"install {package_of_plugin(plugin, packages)}")
    names = set(re.findall(r"^\s+([A-Z0-9_]+)\[", algorithms, re.MULTILINE))
    for alg, plugin in REQUIRED_ALGORITHMS.items():
        if alg not in names:
            problems.append(f"charon has no {alg} (from its '{plugin}' plugin): install {package_of_plugin(plugin, packages)}")
    return problems


# Feature types of charon's plugin loader that name algorithms; the harness takes them from openssl.
ALGORITHM_FEATURES = ("CRYPTER", "AEAD", "SIGNER", "HASHER", "PRF", "XOF", "KDF", "DH", "KE", "RNG")


def unmet_at_start(log: str) -> list[str]:
    """charon aborts at start when a critical feature lacks an algorithm ("feature CUSTOM:libcharon in
    critical plugin 'charon' has unmet dependency: HASHER:HASH_SHA1"): one line per missing algorithm."""
    problems = []
    for feature in sorted(set(re.findall(r"in critical plugin '[^']+' has unmet dependency: (\S+)", log))):
        kind = feature.split(":", 1)[0]
        if kind in ALGORITHM_FEATURES:
            problems.append(f"charon aborted at start: it has no {feature} (from its 'openssl' plugin): "
                            f"install {package_of_plugin('openssl')}")
        else:
            problems.append(f"charon aborted at start: critical feature dependency {feature} unmet")
    return problems


def check_charon(plugins: str = DEFAULT_PLUGINS) -> list[str]:
    """Start one charon with `plugins` in a scratch namespace and list what it cannot do (empty: ready)."""
    try:
        require_root()
    except NetnsError as exc:
        return [str(exc)]
    for path, package in ((CHARON, "strongswan-charon"), (SWANCTL, "strongswan-swanctl")):
        if not os.path.exists(path):
            return [f"{path} missing: install {package} (scripts/apt-packages.txt)"]
    workdir = Path(tempfile.mkdtemp(prefix="ikev2lib-preflight-"))
    ns = charon = None
    try:
        ns = Namespace.create(f"preflight-{workdir.name[-8:]}")
        charon = Charon(ns, workdir, CharonSettings(plugins=plugins), "preflight")
        charon.start()
        stats = charon.swanctl("--stats")
        algorithms = charon.swanctl("--list-algs")
        return missing_from(plugins.split(), loaded_plugins(stats), algorithms)
    except (CharonError, NetnsError, OSError, subprocess.SubprocessError) as exc:
        log = charon.log_text() + charon.tail_log() if charon is not None else ""
        return unmet_at_start(log) or [f"charon could not be started in a network namespace: {type(exc).__name__}: {exc}"]
    finally:
        if charon is not None:
            charon.stop()
        if ns is not None:
            ns.close()
        shutil.rmtree(workdir, ignore_errors=True)


@functools.cache
def preflight_problems() -> tuple[str, ...]:
    """`check_charon()` with the harness's plugins, once per process (the interop fixtures ask it)."""
    return tuple(check_charon())


def dpkg_owner(*paths: str) -> str | None:
    """The Debian package that installed the first of `paths` dpkg knows (None when it knows none)."""
    for path in paths:
        proc = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True, timeout=30)
        if proc.returncode == 0:
            return proc.stdout.split(":", 1)[0].strip()
    return None
