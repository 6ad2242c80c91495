"""After scripts/bootstrap.sh, every external file the suite runs is on this machine, and each miss
names the Debian package that provides it. The package tables are checked against dpkg itself and
against the release's list in scripts/apt-packages.txt, so a table cannot drift from what bootstrap
installs."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path

import pytest

from interop.preflight import (
    CLANG_RUNTIMES,
    PLUGIN_PACKAGES,
    PLUGIN_PACKAGES_BY_MAJOR,
    REQUIRED_ALGORITHMS,
    TOOL_PACKAGES,
    clang_runtime_files,
    dpkg_owner,
    loaded_plugins,
    missing_from,
    plugin_path,
    unmet_at_start,
)
from interop.strongswan import DEFAULT_PLUGINS, PLUGINS_BY_MAJOR, STRONGSWAN_MAJOR

ROOT = Path(__file__).resolve().parents[1]


def _release() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    return "unknown"


@cache
def bootstrap_packages() -> frozenset[str]:
    out = subprocess.run([str(ROOT / "scripts/apt-packages.sh"), _release()], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        pytest.fail(f"scripts/apt-packages.txt has no list for Debian release {_release()!r}")
    return frozenset(out.stdout.split())


@cache
def installed_by_bootstrap() -> frozenset[str]:
    """The bootstrap list plus everything it pulls in through Depends (what a fresh machine ends up with)."""
    seen: set[str] = set()
    todo = list(bootstrap_packages())
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Depends},${Pre-Depends}", pkg],
                              capture_output=True, text=True, timeout=30)
        for dep in proc.stdout.replace("|", ",").split(","):
            name = dep.strip().split(" ")[0].split(":")[0]
            if name:
                todo.append(name)
    return frozenset(seen)


@pytest.mark.parametrize("plugin", DEFAULT_PLUGINS.split())
def test_every_plugin_the_harness_loads_is_installed(plugin: str) -> None:
    assert os.path.exists(plugin_path(plugin)), (
        f"{plugin_path(plugin)} is missing: install {PLUGIN_PACKAGES.get(plugin, '?')} (scripts/apt-packages.txt)")


@pytest.mark.parametrize("plugin", sorted(PLUGIN_PACKAGES))
def test_plugin_table_names_the_package_dpkg_knows(plugin: str) -> None:
    owner = dpkg_owner(plugin_path(plugin))
    assert owner == PLUGIN_PACKAGES[plugin], f"{plugin_path(plugin)} comes from {owner}, the table says {PLUGIN_PACKAGES[plugin]}"
    assert owner in installed_by_bootstrap(), f"{owner} is neither in scripts/apt-packages.txt nor pulled in by it"


def test_the_plugin_tables_cover_the_harness_and_the_algorithms() -> None:
    assert STRONGSWAN_MAJOR in PLUGINS_BY_MAJOR, f"no plugin list for strongSwan {STRONGSWAN_MAJOR}"
    for major, plugins in PLUGINS_BY_MAJOR.items():
        assert set(plugins.split()) <= set(PLUGIN_PACKAGES_BY_MAJOR[major])
        assert set(REQUIRED_ALGORITHMS.values()) <= set(plugins.split())


@pytest.mark.parametrize("tool", sorted(TOOL_PACKAGES))
def test_every_tool_the_suite_runs_is_installed_from_the_named_package(tool: str) -> None:
    paths, package = TOOL_PACKAGES[tool]
    assert any(os.path.exists(p) for p in paths), f"{tool} ({' or '.join(paths)}) is missing: install {package}"
    assert dpkg_owner(*paths) == package
    assert package in bootstrap_packages(), f"{package} is not in scripts/apt-packages.txt for {_release()}"


def test_clang_sanitizer_and_fuzzer_runtimes_come_from_the_listed_package() -> None:
    resource_dir = subprocess.run(["clang", "-print-resource-dir"], capture_output=True, text=True,
                                  check=True, timeout=30).stdout.strip()
    listed = sorted(p for p in bootstrap_packages() if p.startswith("libclang-rt-"))
    found = clang_runtime_files(resource_dir)
    for name in CLANG_RUNTIMES:
        assert found[name], f"{name} is missing under {resource_dir}: install {' or '.join(listed) or 'libclang-rt-N-dev'}"
        owner = dpkg_owner(found[name][0])
        assert owner in listed, f"{found[name][0]} comes from {owner}; scripts/apt-packages.txt lists {listed}"


# -- the preflight's verdicts, on charon output as both releases print it ---------------------------

STATS = """uptime: 0 seconds, since Dec 03 07:26:45 2026
worker threads: 16 total, 7 idle, working: 4/0/5/0
loaded plugins: charon random nonce aes sha1 sha2 hmac kdf pem pkcs1 pkcs8 x509 pubkey constraints revocation kernel-libipsec kernel-netlink socket-default vici
"""
ALGS_WITHOUT_OPENSSL = "encryption:\n  AES_CBC[aes]\nintegrity:\n  HMAC_SHA2_256_128[hmac]\nke:\n  MODP_2048[gmp]\n"


@pytest.mark.parametrize("major, package", [(5, "libstrongswan-standard-plugins"), (6, "libstrongswan")])
def test_a_plugin_that_failed_to_load_names_its_package(major: int, package: str) -> None:
    plugins = PLUGINS_BY_MAJOR[major].split()
    problems = missing_from(plugins, loaded_plugins(STATS), ALGS_WITHOUT_OPENSSL, PLUGIN_PACKAGES_BY_MAJOR[major])
    lines = [p for p in problems if p.startswith("plugin")]
    assert {line.split("'")[1] for line in lines} == {"openssl", "gcm"}
    assert f"install {package}" in next(line for line in lines if "'openssl'" in line)
    assert "install libstrongswan-standard-plugins" in next(line for line in lines if "'gcm'" in line)
    # ... and the algorithms only openssl gives are named too (the symptom charon logs)
    assert any(p.startswith("charon has no CURVE_25519") and f"install {package}" in p for p in problems)


def test_a_charon_that_aborts_for_want_of_an_algorithm_names_the_package() -> None:
    log = ("00[LIB] feature CUSTOM:libcharon-sa-managers in critical plugin 'charon' has unmet dependency: HASHER:HASH_SHA1\n"
           "00[LIB] feature CUSTOM:libcharon in critical plugin 'charon' has unmet dependency: CUSTOM:libcharon-sa-managers\n"
           "00[LIB] failed to load 3 critical plugin features\n00[DMN] initialization failed - aborting charon\n")
    problems = unmet_at_start(log)
    assert problems[1] == ("charon aborted at start: it has no HASHER:HASH_SHA1 (from its 'openssl' plugin): "
                           f"install {PLUGIN_PACKAGES['openssl']}")
    assert problems[0].endswith("CUSTOM:libcharon-sa-managers unmet")
    assert unmet_at_start("00[DMN] Starting IKE charon daemon\n") == []


def test_a_complete_charon_has_no_problems() -> None:
    stats = STATS.replace("charon random", "charon random openssl gcm")
    algs = "".join(f"  {alg}[openssl]\n" for alg in REQUIRED_ALGORITHMS)
    assert missing_from(PLUGINS_BY_MAJOR[5].split(), loaded_plugins(stats), "aead:\n" + algs) == []
