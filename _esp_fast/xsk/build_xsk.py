"""cffi builder of `ikev2lib._xsk`: esp_xsk.c (libxdp's XSK API and the XDP program's maps) in API mode.

Used by setup.py (from the repository root, as setuptools wants relative source paths) when libxdp and
libbpf are installed (Debian `libxdp-dev libbpf-dev`). The whole interface is esp_xsk.h.
"""

from cffi import FFI

SOURCE_DIR = "_esp_fast/xsk"
HEADER = f"{SOURCE_DIR}/esp_xsk.h"
# The interface is the header itself, without its include guard and includes (cffi's cdef takes plain
# declarations and integer #defines): one copy of the declarations, which cannot drift from the C.
_SKIPPED = ("#ifndef", "#endif", "#include", "#define ESP_XSK_H")
with open(HEADER) as header:
    CDEF = "\n".join(line for line in header.read().splitlines() if not line.startswith(_SKIPPED))

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "ikev2lib._xsk",
    '#include "esp_xsk.h"',
    sources=[f"{SOURCE_DIR}/esp_xsk.c"],
    include_dirs=[SOURCE_DIR],
    libraries=["xdp", "bpf"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
