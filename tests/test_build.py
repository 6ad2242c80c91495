"""The C extension's build finds OpenSSL with pkg-config, and says which package is missing when it cannot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _build_ext(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-temp", str(tmp_path / "t"), "--build-lib", str(tmp_path / "l")],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_openssl_headers_name_the_package(tmp_path: Path) -> None:
    # an empty pkg-config search path is what a machine without libssl-dev looks like to the build
    empty = tmp_path / "pkgconfig"
    empty.mkdir()
    result = _build_ext(tmp_path, PKG_CONFIG_LIBDIR=str(empty), PKG_CONFIG_PATH="")
    assert result.returncode != 0
    assert "libssl-dev" in result.stderr and "OpenSSL 3 development files" in result.stderr


def test_libcrypto_is_what_the_extension_links() -> None:
    import ikev2lib._esp_fast as fast

    libs = subprocess.run(["ldd", fast.__file__], capture_output=True, text=True, check=True).stdout
    assert "libcrypto.so.3" in libs


def test_the_af_xdp_binding_and_program_are_built_where_libxdp_is() -> None:
    """bootstrap installs libxdp-dev and libbpf-dev, so here AF_XDP must not be silently missing."""
    from ikev2lib import xdp

    assert xdp.unavailable_reason() is None
    libs = subprocess.run(["ldd", xdp._xsk.__file__], capture_output=True, text=True, check=True).stdout
    assert "libxdp.so" in libs and "libbpf.so" in libs
    header = Path(str(xdp.program_path())).read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[18] == 247  # e_machine EM_BPF


def test_without_libxdp_the_build_goes_on_and_names_the_packages(tmp_path: Path) -> None:
    # a pkg-config path with OpenSSL but without libxdp/libbpf: what a machine without libxdp-dev looks like
    only_openssl = tmp_path / "pkgconfig"
    only_openssl.mkdir()
    found = subprocess.run(["pkg-config", "--variable=pcfiledir", "libcrypto"], capture_output=True, text=True,
                           check=True).stdout.strip()
    for name in ("libcrypto.pc",):
        (only_openssl / name).write_text((Path(found) / name).read_text())
    result = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PKG_CONFIG_LIBDIR": str(only_openssl), "PKG_CONFIG_PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "AF_XDP support not built (pkg-config finds no libxdp)" in result.stderr
    assert "libxdp-dev libbpf-dev" in result.stderr
