/* AF_XDP for the ESP data plane, on libxdp's XSK API: the XDP program that redirects the gateway's ESP
 * (xdp/esp_xdp.bpf.c) with its SPI map, and XSKs with their UMEM and rings. Bound to Python with cffi
 * (_esp_fast/xsk/build_xsk.py); _esp_fast parses the frames and decrypts them where they lie in the UMEM
 * (the plaintext goes to the caller's buffer).
 *
 * One XSK per device queue, each with its own UMEM: the first half of its frames belong to the fill
 * ring (receive), the second half to a free list for sending. Every function returns without waiting;
 * errors are negative errno values (or NULL with *err set).
 */
#ifndef ESP_XSK_H
#define ESP_XSK_H

#include <stddef.h>
#include <stdint.h>

#define ESP_XSK_FRAME_SIZE 4096      /* one UMEM frame: a full 1500-byte frame with headroom, page-aligned */
#define ESP_XSK_MIN_FRAMES 64
#define ESP_XSK_MAX_FRAMES 65536     /* 256 MiB of UMEM per XSK at most */

enum esp_xdp_mode { ESP_XDP_NATIVE = 0, ESP_XDP_SKB = 1 };

typedef struct esp_xdp esp_xdp_t;
typedef struct esp_xsk esp_xsk_t;

typedef struct {
    uint64_t rx_dropped;            /* the kernel's XDP_STATISTICS: dropped for want of a fill frame, ... */
    uint64_t rx_invalid_descs;
    uint64_t tx_invalid_descs;
    uint64_t rx_ring_full;
    uint64_t rx_fill_ring_empty;
    uint64_t tx_ring_empty;
    uint64_t received, sent, send_full;  /* ours: frames taken from RX, submitted to TX, refused (TX full) */
} esp_xsk_stats_t;

/* Load the program at `obj_path` and attach it to `ifname` (native or generic/SKB mode). */
esp_xdp_t *esp_xdp_attach(const char *obj_path, const char *ifname, int mode, uint16_t natt_port, int *err);
void esp_xdp_detach(esp_xdp_t *xdp);
int esp_xdp_add_spi(esp_xdp_t *xdp, uint32_t spi);      /* host order; 0 or -errno */
int esp_xdp_remove_spi(esp_xdp_t *xdp, uint32_t spi);   /* 0, -ENOENT, or -errno */

/* An XSK on (ifname, queue) registered in the program's XSK map (xdp NULL: a socket that only sends,
 * no program needed), with the caller's page-aligned memory as its UMEM: area_len / ESP_XSK_FRAME_SIZE
 * frames, a power of two. The caller owns the memory (the binding: an mmap that Python keeps alive
 * while any view of it exists) and must keep it until esp_xsk_close returns.
 * mode: ESP_XSK_ZEROCOPY asks for XDP_ZEROCOPY (fails where the driver lacks it), ESP_XSK_COPY for copy
 * mode, ESP_XSK_AUTO lets the kernel take zero-copy where the driver has it and copy mode elsewhere
 * (esp_xsk_zerocopy says which it took). */
enum esp_xsk_mode { ESP_XSK_COPY = 0, ESP_XSK_ZEROCOPY = 1, ESP_XSK_AUTO = 2 };
esp_xsk_t *esp_xsk_open(esp_xdp_t *xdp, const char *ifname, uint32_t queue, uint8_t *area, size_t area_len,
                        int mode, int *err);
int esp_xsk_zerocopy(const esp_xsk_t *xsk);   /* 1 zero-copy, 0 copy mode, or -errno */
void esp_xsk_close(esp_xsk_t *xsk);      /* the socket and the UMEM registration; not the memory */
int esp_xsk_fd(const esp_xsk_t *xsk);
uint8_t *esp_xsk_area(const esp_xsk_t *xsk, size_t *size);

/* Received frames (at most max): their addresses in the UMEM area and lengths. The frames are the
 * caller's until esp_xsk_release gives them back to the fill ring. */
size_t esp_xsk_recv(esp_xsk_t *xsk, uint64_t *addrs, uint32_t *lens, size_t max);
void esp_xsk_release(esp_xsk_t *xsk, const uint64_t *addrs, size_t n);

/* Up to n free frames for sending (their addresses); completed sends are reclaimed first. */
size_t esp_xsk_tx_frames(esp_xsk_t *xsk, uint64_t *addrs, size_t n);
/* Submit frames written at addrs (from esp_xsk_tx_frames) and kick the kernel. Returns how many were
 * taken; the rest go back to the free list. */
size_t esp_xsk_send(esp_xsk_t *xsk, const uint64_t *addrs, const uint32_t *lens, size_t n);

int esp_xsk_stats(esp_xsk_t *xsk, esp_xsk_stats_t *out);

#endif
