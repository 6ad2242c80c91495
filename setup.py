"""Build of the C data plane (`ikev2lib._esp_fast`) and of the AF_XDP binding (`ikev2lib._xsk`).

The extension links the system OpenSSL libcrypto, located with pkg-config. A machine without the
OpenSSL headers gets one clear message naming the package to install instead of a compiler error.

AF_XDP is optional: with libxdp and libbpf (pkg-config `libxdp`, `libbpf`) and clang, the cffi module
`ikev2lib._xsk` (_esp_fast/xsk/) is built and the XDP program (_esp_fast/xdp/esp_xdp.bpf.c) is
compiled with `clang -target bpf` into ikev2lib/xdp/esp_xdp.bpf.o. Without them the build says which
packages are missing and goes on; `ikev2lib.xdp` then raises XdpUnavailable naming them.
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
                 "_esp_fast/esp_fwd.c", "_esp_fast/esp_offload.c", "_esp_fast/esp_frame.c"],
        include_dirs=["_esp_fast", *flags["include_dirs"]],
        library_dirs=flags["library_dirs"],
        libraries=flags["libraries"],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-unused-function"],
    )
    return cythonize([esp], language_level=3, compiler_directives={"boundscheck": False, "wraparound": False})


XDP_PACKAGES = "libxdp-dev libbpf-dev clang"  # Debian names, in the message when AF_XDP is not built
XDP_SOURCE = "_esp_fast/xdp/esp_xdp.bpf.c"
XDP_OBJECT = "ikev2lib/xdp/esp_xdp.bpf.o"


def _xdp_missing() -> str | None:
    """Why AF_XDP cannot be built here, or None."""
    if shutil.which("pkg-config") is None:
        return "pkg-config is missing"
    for library in ("libxdp", "libbpf"):
        if subprocess.run(["pkg-config", "--exists", library], capture_output=True).returncode != 0:
            return f"pkg-config finds no {library}"
    if shutil.which("clang") is None:
        return "clang is missing (it compiles the XDP program)"
    return None


def compile_xdp_program() -> None:
    """clang -target bpf: the kernel headers of the host architecture (asm/types.h) are under its
    multiarch directory, which the BPF target does not search by itself."""
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
    includes = [f"-I/usr/include/{multiarch}"] if multiarch else []
    subprocess.run(["clang", "-O2", "-g", "-Wall", "-target", "bpf", *includes, "-c", XDP_SOURCE, "-o", XDP_OBJECT],
                   check=True)


def xsk_extensions() -> list[Extension]:
    missing = _xdp_missing()
    if missing is None:
        try:
            sys.path.insert(0, "_esp_fast/xsk")
            from build_xsk import ffibuilder

            compile_xdp_program()
            return [ffibuilder.distutils_extension(tmpdir="build/xsk")]
        except (ImportError, subprocess.CalledProcessError) as exc:
            missing = f"{type(exc).__name__}: {exc}"
    print(f"ikev2lib: AF_XDP support not built ({missing}); install {XDP_PACKAGES} and reinstall for it",
          file=sys.stderr)
    return []


setup(ext_modules=extensions() + xsk_extensions())
