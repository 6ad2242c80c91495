/* AF_XDP for the ESP data plane: see esp_xsk.h. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>

#include "esp_xsk.h"

struct esp_xdp {
    struct xdp_program *prog;
    int ifindex;
    enum xdp_attach_mode mode;
    int xsks_fd, spis_fd;
};

struct esp_xsk {
    struct xsk_umem *umem;
    struct xsk_socket *sock;
    struct xsk_ring_prod fill, tx;
    struct xsk_ring_cons comp, rx;
    uint8_t *area;
    size_t size;
    uint32_t frames, ring;              /* UMEM frames; each ring holds half of them */
    uint64_t *free_tx;                  /* frames free for sending (a stack) */
    uint32_t n_free;
    uint32_t outstanding;               /* sent, not yet completed */
    uint64_t received, sent, send_full;
    int xsks_fd;                        /* our own copy of the program's XSK map (or -1): the entry holds
                                         * the socket, so close must remove it or the queue stays busy */
    uint32_t queue;
};

#define KERNEL_TX_BATCH 32              /* frames one sendto transmits in copy mode (net/xdp/xsk.c) */

struct esp_xdp_config {                 /* the program's `config` map value (esp_xdp.bpf.c) */
    uint16_t natt_port;
};

/* Errors come back as errno values; libxdp's and libbpf's own messages would only go to stderr (libbpf
 * notes, for one, that it skips libxdp's metadata section in every object it opens). */
static int quiet_libxdp(enum libxdp_print_level level, const char *fmt, va_list args)
{
    (void)level, (void)fmt, (void)args;
    return 0;
}

static int quiet_libbpf(enum libbpf_print_level level, const char *fmt, va_list args)
{
    (void)level, (void)fmt, (void)args;
    return 0;
}

esp_xdp_t *esp_xdp_attach(const char *obj_path, const char *ifname, int mode, uint16_t natt_port, int *err)
{
    libxdp_set_print(quiet_libxdp);
    libbpf_set_print(quiet_libbpf);
    esp_xdp_t *x = calloc(1, sizeof(*x));
    if (x == NULL) { *err = -ENOMEM; return NULL; }
    x->ifindex = (int)if_nametoindex(ifname);
    x->mode = mode == ESP_XDP_SKB ? XDP_MODE_SKB : XDP_MODE_NATIVE;
    if (x->ifindex == 0) { *err = -ENODEV; free(x); return NULL; }
    x->prog = xdp_program__open_file(obj_path, "xdp", NULL);
    long rc = libxdp_get_error(x->prog);
    if (rc) { *err = (int)rc; free(x); return NULL; }
    rc = xdp_program__attach(x->prog, x->ifindex, x->mode, 0);
    if (rc) { *err = (int)rc; xdp_program__close(x->prog); free(x); return NULL; }
    struct bpf_object *obj = xdp_program__bpf_obj(x->prog);
    x->xsks_fd = bpf_object__find_map_fd_by_name(obj, "xsks");
    x->spis_fd = bpf_object__find_map_fd_by_name(obj, "spis");
    int config_fd = bpf_object__find_map_fd_by_name(obj, "config");
    struct esp_xdp_config cfg = {natt_port};
    uint32_t key = 0;
    if (x->xsks_fd < 0 || x->spis_fd < 0 || config_fd < 0 || bpf_map_update_elem(config_fd, &key, &cfg, 0) != 0) {
        *err = -EINVAL; /* not our program */
        esp_xdp_detach(x);
        return NULL;
    }
    return x;
}

void esp_xdp_detach(esp_xdp_t *x)
{
    if (x == NULL) return;
    xdp_program__detach(x->prog, x->ifindex, x->mode, 0);
    xdp_program__close(x->prog);
    free(x);
}

int esp_xdp_add_spi(esp_xdp_t *x, uint32_t spi)
{
    uint32_t key = htonl(spi);
    uint8_t one = 1;
    return bpf_map_update_elem(x->spis_fd, &key, &one, 0) == 0 ? 0 : -errno;
}

int esp_xdp_remove_spi(esp_xdp_t *x, uint32_t spi)
{
    uint32_t key = htonl(spi);
    return bpf_map_delete_elem(x->spis_fd, &key) == 0 ? 0 : -errno;
}

static void close_parts(esp_xsk_t *k)
{
    if (k->xsks_fd >= 0) {
        bpf_map_delete_elem(k->xsks_fd, &k->queue); /* ENOENT if it was never put there: fine */
        close(k->xsks_fd);
    }
    if (k->sock) xsk_socket__delete(k->sock);
    if (k->umem) xsk_umem__delete(k->umem);
    free(k->free_tx);
    free(k);
}

esp_xsk_t *esp_xsk_open(esp_xdp_t *x, const char *ifname, uint32_t queue, uint8_t *area, size_t area_len,
                        int mode, int *err)
{
    /* the rings are powers of two, half the frames each */
    size_t frames = area_len / ESP_XSK_FRAME_SIZE;
    static const uint16_t bind_mode[] = {[ESP_XSK_COPY] = XDP_COPY, [ESP_XSK_ZEROCOPY] = XDP_ZEROCOPY,
                                         [ESP_XSK_AUTO] = 0};
    if (mode < ESP_XSK_COPY || mode > ESP_XSK_AUTO || area == NULL || area_len % ESP_XSK_FRAME_SIZE || (uintptr_t)area % (uintptr_t)getpagesize() ||
        frames < ESP_XSK_MIN_FRAMES || frames > ESP_XSK_MAX_FRAMES || (frames & (frames - 1))) {
        *err = -EINVAL;
        return NULL;
    }
    esp_xsk_t *k = calloc(1, sizeof(*k));
    if (k == NULL) { *err = -ENOMEM; return NULL; }
    k->xsks_fd = -1;
    k->queue = queue;
    k->frames = (uint32_t)frames;
    k->ring = k->frames / 2;
    k->area = area;
    k->size = area_len;
    k->free_tx = calloc(k->ring, sizeof(uint64_t));
    if (k->free_tx == NULL) {
        *err = -ENOMEM;
        close_parts(k);
        return NULL;
    }
    struct xsk_umem_config ucfg = {.fill_size = k->ring, .comp_size = k->ring, .frame_size = ESP_XSK_FRAME_SIZE,
                                   .frame_headroom = 0, .flags = 0};
    int rc = xsk_umem__create(&k->umem, k->area, k->size, &k->fill, &k->comp, &ucfg);
    if (rc) { *err = rc; k->umem = NULL; close_parts(k); return NULL; }
    struct xsk_socket_config scfg = {.rx_size = k->ring, .tx_size = k->ring,
                                     .libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD, .xdp_flags = 0,
                                     .bind_flags = (uint16_t)(bind_mode[mode] | XDP_USE_NEED_WAKEUP)};
    rc = xsk_socket__create(&k->sock, ifname, queue, k->umem, &k->rx, &k->tx, &scfg);
    if (rc) { *err = rc; k->sock = NULL; close_parts(k); return NULL; }
    int fd = xsk_socket__fd(k->sock);
    if (x != NULL) {
        k->xsks_fd = fcntl(x->xsks_fd, F_DUPFD_CLOEXEC, 0); /* the program may be detached before us */
        if (k->xsks_fd < 0 || bpf_map_update_elem(k->xsks_fd, &queue, &fd, 0) != 0) {
            *err = -errno;
            close_parts(k);
            return NULL;
        }
    }
    uint32_t idx;
    if (xsk_ring_prod__reserve(&k->fill, k->ring, &idx) != k->ring) {
        *err = -EIO;
        close_parts(k);
        return NULL;
    }
    for (uint32_t i = 0; i < k->ring; i++) *xsk_ring_prod__fill_addr(&k->fill, idx + i) = (uint64_t)i * ESP_XSK_FRAME_SIZE;
    xsk_ring_prod__submit(&k->fill, k->ring);
    for (uint32_t i = 0; i < k->ring; i++) k->free_tx[i] = (uint64_t)(k->ring + i) * ESP_XSK_FRAME_SIZE;
    k->n_free = k->ring;
    return k;
}

void esp_xsk_close(esp_xsk_t *k)
{
    if (k != NULL) close_parts(k);
}

int esp_xsk_fd(const esp_xsk_t *k) { return xsk_socket__fd(k->sock); }

int esp_xsk_zerocopy(const esp_xsk_t *k)
{
    struct xdp_options opts;
    socklen_t len = sizeof(opts);
    if (getsockopt(xsk_socket__fd(k->sock), SOL_XDP, XDP_OPTIONS, &opts, &len) != 0) return -errno;
    return (opts.flags & XDP_OPTIONS_ZEROCOPY) != 0;
}

uint8_t *esp_xsk_area(const esp_xsk_t *k, size_t *size)
{
    *size = k->size;
    return k->area;
}

size_t esp_xsk_recv(esp_xsk_t *k, uint64_t *addrs, uint32_t *lens, size_t max)
{
    uint32_t idx;
    size_t n = xsk_ring_cons__peek(&k->rx, (uint32_t)(max < k->ring ? max : k->ring), &idx);
    for (size_t i = 0; i < n; i++) {
        const struct xdp_desc *d = xsk_ring_cons__rx_desc(&k->rx, idx + (uint32_t)i);
        /* the kernel writes only inside our UMEM; checked anyway: a bad descriptor is dropped here */
        addrs[i] = d->addr;
        lens[i] = d->addr < k->size && d->len <= ESP_XSK_FRAME_SIZE - (d->addr % ESP_XSK_FRAME_SIZE) ? d->len : 0;
    }
    if (n) xsk_ring_cons__release(&k->rx, (uint32_t)n);
    k->received += n;
    if (xsk_ring_prod__needs_wakeup(&k->fill)) recvfrom(xsk_socket__fd(k->sock), NULL, 0, MSG_DONTWAIT, NULL, NULL);
    return n;
}

void esp_xsk_release(esp_xsk_t *k, const uint64_t *addrs, size_t n)
{
    uint32_t idx;
    /* we hold at most the frames of the fill ring, so this reserve always gets them all */
    size_t got = xsk_ring_prod__reserve(&k->fill, (uint32_t)n, &idx);
    for (size_t i = 0; i < got; i++)
        *xsk_ring_prod__fill_addr(&k->fill, idx + (uint32_t)i) = addrs[i] & ~(uint64_t)(ESP_XSK_FRAME_SIZE - 1);
    xsk_ring_prod__submit(&k->fill, (uint32_t)got);
}

/* In copy mode each sendto transmits at most the kernel's batch (32 frames) and says EAGAIN while more
 * wait, so the ring is kicked until it is empty; in zero-copy mode one call wakes the driver. Other
 * errors (ENOBUFS, ENETDOWN) leave the frames queued for the next send. */
static void kick_tx(esp_xsk_t *k)
{
    int fd = xsk_socket__fd(k->sock);
    for (uint32_t i = 0; i <= k->ring / KERNEL_TX_BATCH; i++) {
        if (sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0) return;
        if (errno != EAGAIN && errno != EBUSY && errno != EINTR) return;
    }
}

static void reclaim(esp_xsk_t *k)
{
    uint32_t idx;
    size_t n = xsk_ring_cons__peek(&k->comp, k->ring, &idx);
    for (size_t i = 0; i < n && k->n_free < k->ring; i++)
        k->free_tx[k->n_free++] = *xsk_ring_cons__comp_addr(&k->comp, idx + (uint32_t)i);
    if (n) xsk_ring_cons__release(&k->comp, (uint32_t)n);
    k->outstanding -= (uint32_t)n < k->outstanding ? (uint32_t)n : k->outstanding;
}

size_t esp_xsk_tx_frames(esp_xsk_t *k, uint64_t *addrs, size_t n)
{
    reclaim(k);
    /* every frame still on the ring (the last kick met backpressure): kick again, or nothing would */
    if (k->n_free == 0 && k->outstanding) {
        kick_tx(k);
        reclaim(k);
    }
    size_t got = 0;
    while (got < n && k->n_free) addrs[got++] = k->free_tx[--k->n_free];
    return got;
}

size_t esp_xsk_send(esp_xsk_t *k, const uint64_t *addrs, const uint32_t *lens, size_t n)
{
    uint32_t idx;
    size_t got = xsk_ring_prod__reserve(&k->tx, (uint32_t)n, &idx);
    for (size_t i = 0; i < got; i++) {
        struct xdp_desc *d = xsk_ring_prod__tx_desc(&k->tx, idx + (uint32_t)i);
        d->addr = addrs[i];
        d->len = lens[i];
    }
    xsk_ring_prod__submit(&k->tx, (uint32_t)got);
    for (size_t i = got; i < n && k->n_free < k->ring; i++) k->free_tx[k->n_free++] = addrs[i];
    k->outstanding += (uint32_t)got;
    k->sent += got;
    k->send_full += n - got;
    if (got && xsk_ring_prod__needs_wakeup(&k->tx)) kick_tx(k);
    return got;
}

int esp_xsk_stats(esp_xsk_t *k, esp_xsk_stats_t *out)
{
    struct xdp_statistics st;
    socklen_t len = sizeof(st);
    memset(out, 0, sizeof(*out));
    if (getsockopt(xsk_socket__fd(k->sock), SOL_XDP, XDP_STATISTICS, &st, &len) != 0) return -errno;
    out->rx_dropped = st.rx_dropped;
    out->rx_invalid_descs = st.rx_invalid_descs;
    out->tx_invalid_descs = st.tx_invalid_descs;
    out->rx_ring_full = st.rx_ring_full;
    out->rx_fill_ring_empty = st.rx_fill_ring_empty_descs;
    out->tx_ring_empty = st.tx_ring_empty_descs;
    out->received = k->received;
    out->sent = k->sent;
    out->send_full = k->send_full;
    return 0;
}
