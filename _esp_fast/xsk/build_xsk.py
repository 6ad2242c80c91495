"""cffi builder of `ikev2lib._xsk`: esp_xsk.c (libxdp's XSK API and the XDP program's maps) in API mode.

Used by setup.py (from the repository root, as setuptools wants relative source paths) when libxdp and
libbpf are installed (Debian `libxdp-dev libbpf-dev`); the C declarations below are the whole
interface, as in esp_xsk.h.
"""

from cffi import FFI

SOURCE_DIR = "_esp_fast/xsk"
CDEF = """
#define ESP_XSK_FRAME_SIZE 4096
#define ESP_XSK_MIN_FRAMES 64
#define ESP_XSK_MAX_FRAMES 65536
enum esp_xdp_mode { ESP_XDP_NATIVE = 0, ESP_XDP_SKB = 1 };
typedef struct esp_xdp esp_xdp_t;
typedef struct esp_xsk esp_xsk_t;
typedef struct {
    uint64_t rx_dropped;
    uint64_t rx_invalid_descs;
    uint64_t tx_invalid_descs;
    uint64_t rx_ring_full;
    uint64_t rx_fill_ring_empty;
    uint64_t tx_ring_empty;
    uint64_t received, sent, send_full;
} esp_xsk_stats_t;
esp_xdp_t *esp_xdp_attach(const char *obj_path, const char *ifname, int mode, uint16_t natt_port, int *err);
void esp_xdp_detach(esp_xdp_t *xdp);
int esp_xdp_add_spi(esp_xdp_t *xdp, uint32_t spi);
int esp_xdp_remove_spi(esp_xdp_t *xdp, uint32_t spi);
esp_xsk_t *esp_xsk_open(esp_xdp_t *xdp, const char *ifname, uint32_t queue, uint8_t *area, size_t area_len,
                        int zerocopy, int *err);
void esp_xsk_close(esp_xsk_t *xsk);
int esp_xsk_fd(const esp_xsk_t *xsk);
uint8_t *esp_xsk_area(const esp_xsk_t *xsk, size_t *size);
size_t esp_xsk_recv(esp_xsk_t *xsk, uint64_t *addrs, uint32_t *lens, size_t max);
void esp_xsk_release(esp_xsk_t *xsk, const uint64_t *addrs, size_t n);
size_t esp_xsk_tx_frames(esp_xsk_t *xsk, uint64_t *addrs, size_t n);
size_t esp_xsk_send(esp_xsk_t *xsk, const uint64_t *addrs, const uint32_t *lens, size_t n);
int esp_xsk_stats(esp_xsk_t *xsk, esp_xsk_stats_t *out);
"""

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
