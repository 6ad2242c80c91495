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
