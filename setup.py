"""Build of the C data plane (`ikev2lib._esp_fast`).

The extension links the system OpenSSL libcrypto, located with pkg-config. A machine without the
OpenSSL headers gets one clear message naming the package to install instead of a compiler error.
"""

import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup

OPENSSL_MIN = "3.0"
MISSING_OPENSSL = (
    "ikev2lib: the OpenSSL 3 development files (libcrypto headers and pkg-config file) were not found.\n"
    "Install them first: Debian/Ubuntu `apt-get install libssl-dev pkg-config`, "
    "Fedora/RHEL `dnf install openssl-devel pkgconf-pkg-config`."
)


def _pkg_config(*args: str) -> list[str]:
    out = subprocess.run(["pkg-config", *args], check=True, capture_output=True, text=True).stdout
    return out.split()


def openssl_flags() -> dict[str, list[str]]:
    if shutil.which("pkg-config") is None:
        sys.exit(MISSING_OPENSSL + "\n(pkg-config itself is missing)")
    try:
        _pkg_config(f"--atleast-version={OPENSSL_MIN}", "libcrypto")
        cflags = _pkg_config("--cflags", "libcrypto")
        libs = _pkg_config("--libs", "libcrypto")
    except subprocess.CalledProcessError:
        sys.exit(MISSING_OPENSSL)
    include_dirs = [f[2:] for f in cflags if f.startswith("-I")] or ["/usr/include"]
    if not any(os.path.exists(os.path.join(d, "openssl", "evp.h")) for d in include_dirs):
        sys.exit(MISSING_OPENSSL + "\n(openssl/evp.h is not in " + ", ".join(include_dirs) + ")")
    return {
        "include_dirs": include_dirs,
        "library_dirs": [f[2:] for f in libs if f.startswith("-L")],
        "libraries": [f[2:] for f in libs if f.startswith("-l")],
    }


def extensions() -> list[Extension]:
    from Cython.Build import cythonize

    flags = openssl_flags()
    esp = Extension(
        "ikev2lib._esp_fast",
        sources=["_esp_fast/_esp_fast.pyx", "_esp_fast/esp_core.c", "_esp_fast/esp_sock.c", "_esp_fast/esp_inner.c",
                 "_esp_fast/esp_fwd.c", "_esp_fast/esp_offload.c"],
        include_dirs=["_esp_fast", *flags["include_dirs"]],
        library_dirs=flags["library_dirs"],
        libraries=flags["libraries"],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-unused-function"],
    )
    return cythonize([esp], language_level=3, compiler_directives={"boundscheck": False, "wraparound": False})


setup(ext_modules=extensions())
