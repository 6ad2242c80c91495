/* The gateway's packet path: see esp_fwd.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "esp_frame.h"
#include "esp_fwd.h"
#include "esp_offload.h"

#define IPV4_HDR_MIN 20
#define IPPROTO_ESP_NUM 50
#define KEEPALIVE_LEN 1                 /* RFC 3948 2.3: a single 0xFF octet */
#define NON_ESP_MARKER_LEN 4            /* RFC 3948 2.2: four zero octets in front of IKE */
#define RECV_SLOT (FWD_MAX_INNER + 256) /* an ESP packet of the largest inner packet, with any overhead */
#define RAW_SLOT (RECV_SLOT + 60)       /* plus the IPv4 header a raw socket delivers */
#define OUT_SLOT (FWD_MAX_INNER + 256)  /* encapsulated packet: inner + ESP overhead (at most ~90 bytes) */
#define ICMP_BUF 1280                   /* an ICMP answer never exceeds the IPv6 minimum MTU */
#define FWD_MAX_SEGS 256                /* segments of one TSO super-packet (64 KiB at an MSS of 256) */
#define FWD_SEND_BATCH (2 * FWD_BATCH)  /* ESP packets queued per socket before a sendmmsg */
#define FWD_SEND_ARENA (FWD_SEND_BATCH * 1600 + OUT_SLOT) /* their bytes: full-size packets, one jumbo more */

typedef struct {
    uint32_t spi;
    uint32_t tunnel;
} spi_index_t;

typedef struct {
    uint64_t generation;
    esp_fwd_tunnel_t *tunnels;
    size_t n_tunnels;
    inner_selector_t *sels;
    esp_table_entry_t *in_table;        /* sorted by SPI, for esp_decap_batch */
    spi_index_t *in_index;              /* the same order: SPI -> tunnel */
    size_t n_in;
    uint8_t icmp_src4[4], icmp_src6[16];
    int has_src4, has_src6;
} fwd_tables_t;

struct esp_fwd {
    pthread_rwlock_t lock;              /* writer-preferring: table swaps never wait behind busy workers */
    fwd_tables_t *tables;
    uint64_t next_generation;
    uint32_t max_slots;
    uint64_t *slots;                    /* max_slots * FWD_COUNTERS */
    uint64_t drops[FWD_DROP_COUNT];     /* packets no tunnel owns */
    pthread_mutex_t mapping_lock;       /* the waiting mappings: written by workers, taken by the control plane */
    esp_fwd_mapping_t mappings[FWD_MAX_MAPPINGS];
    size_t n_mappings;
    int mapping_fd;                     /* eventfd: readable while mappings wait */
};

#define IPV6_EXTRA_HDR 20               /* an IPv6 header is 20 bytes longer than IPv4's: MSS 20 lower */

static void count(uint64_t *c, uint64_t v) { __atomic_fetch_add(c, v, __ATOMIC_RELAXED); }

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void tables_free(fwd_tables_t *t)
{
    if (t == NULL) return;
    free(t->tunnels);
    free(t->sels);
    free(t->in_table);
    free(t->in_index);
    free(t);
}

esp_fwd_t *esp_fwd_new(uint32_t max_slots)
{
    if (max_slots == 0 || max_slots > FWD_MAX_SLOTS) return NULL;
    esp_fwd_t *dp = calloc(1, sizeof(*dp));
    if (dp == NULL) return NULL;
    dp->slots = calloc((size_t)max_slots * FWD_COUNTERS, sizeof(uint64_t));
    dp->tables = calloc(1, sizeof(fwd_tables_t));
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&dp->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    dp->mapping_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (dp->slots == NULL || dp->tables == NULL || rc != 0 || dp->mapping_fd < 0 ||
        pthread_mutex_init(&dp->mapping_lock, NULL) != 0) {
        if (dp->mapping_fd >= 0) close(dp->mapping_fd);
        free(dp->slots);
        free(dp->tables);
        free(dp);
        return NULL;
    }
    dp->max_slots = max_slots;
    return dp;
}

void esp_fwd_free(esp_fwd_t *dp)
{
    if (dp == NULL) return;
    pthread_rwlock_destroy(&dp->lock);
    pthread_mutex_destroy(&dp->mapping_lock);
    close(dp->mapping_fd);
    tables_free(dp->tables);
    free(dp->slots);
    free(dp);
}

static int cmp_spi(const void *a, const void *b)
{
    uint32_t x = ((const spi_index_t *)a)->spi, y = ((const spi_index_t *)b)->spi;
    return x < y ? -1 : x > y;
}

int esp_fwd_set_tables(esp_fwd_t *dp, const esp_fwd_tunnel_t *tunnels, size_t n, const inner_selector_t *sels,
                       size_t n_sels, const uint8_t *icmp_src4, const uint8_t *icmp_src6)
{
    if (n > FWD_MAX_TUNNELS || n_sels > n * 2 * FWD_MAX_SELECTORS) return -1;
    size_t n_in = 0;
    for (size_t i = 0; i < n; i++) {
        const esp_fwd_tunnel_t *t = &tunnels[i];
        if (t->slot >= dp->max_slots || t->n_local > FWD_MAX_SELECTORS || t->n_remote > FWD_MAX_SELECTORS ||
            t->sel_offset > n_sels || t->n_local + t->n_remote > n_sels - t->sel_offset ||
            (t->peer_family != 4 && t->peer_family != 6) || t->mtu > FWD_MAX_INNER)
            return -1;
        if (t->in_sa != NULL) n_in++;
    }
    fwd_tables_t *nt = calloc(1, sizeof(*nt));
    if (nt == NULL) return -2;
    nt->tunnels = malloc((n ? n : 1) * sizeof(*nt->tunnels));
    nt->sels = malloc((n_sels ? n_sels : 1) * sizeof(*nt->sels));
    nt->in_table = malloc((n_in ? n_in : 1) * sizeof(*nt->in_table));
    nt->in_index = malloc((n_in ? n_in : 1) * sizeof(*nt->in_index));
    if (nt->tunnels == NULL || nt->sels == NULL || nt->in_table == NULL || nt->in_index == NULL) {
        tables_free(nt);
        return -2;
    }
    if (n) memcpy(nt->tunnels, tunnels, n * sizeof(*tunnels));
    if (n_sels) memcpy(nt->sels, sels, n_sels * sizeof(*sels));
    nt->n_tunnels = n;
    for (size_t i = 0, k = 0; i < n; i++)
        if (tunnels[i].in_sa != NULL) nt->in_index[k++] = (spi_index_t){tunnels[i].spi_in, (uint32_t)i};
    qsort(nt->in_index, n_in, sizeof(*nt->in_index), cmp_spi);
    for (size_t k = 0; k < n_in; k++) {
        if (k && nt->in_index[k].spi == nt->in_index[k - 1].spi) { /* one SPI, one SA */
            tables_free(nt);
            return -1;
        }
        nt->in_table[k] = (esp_table_entry_t){nt->in_index[k].spi, tunnels[nt->in_index[k].tunnel].in_sa};
    }
    nt->n_in = n_in;
    if (icmp_src4) { memcpy(nt->icmp_src4, icmp_src4, 4); nt->has_src4 = 1; }
    if (icmp_src6) { memcpy(nt->icmp_src6, icmp_src6, 16); nt->has_src6 = 1; }
    pthread_rwlock_wrlock(&dp->lock);
    nt->generation = ++dp->next_generation;
    fwd_tables_t *old = dp->tables;
    dp->tables = nt;
    pthread_rwlock_unlock(&dp->lock);
    tables_free(old); /* no worker can hold it: they read tables only under the lock */
    return 0;
}

void esp_fwd_slot_counters(esp_fwd_t *dp, uint32_t slot, uint64_t out[FWD_COUNTERS])
{
    for (int i = 0; i < FWD_COUNTERS; i++)
        out[i] = slot < dp->max_slots ? __atomic_load_n(&dp->slots[(size_t)slot * FWD_COUNTERS + i], __ATOMIC_RELAXED)
                                      : 0;
}

void esp_fwd_global_drops(esp_fwd_t *dp, uint64_t out[FWD_DROP_COUNT])
{
    for (int i = 0; i < FWD_DROP_COUNT; i++) out[i] = __atomic_load_n(&dp->drops[i], __ATOMIC_RELAXED);
}

static uint64_t *slot_counter(esp_fwd_t *dp, uint32_t slot, int which)
{
    return &dp->slots[(size_t)slot * FWD_COUNTERS + which];
}

static void drop(esp_fwd_t *dp, const esp_fwd_tunnel_t *t, int reason)
{
    count(t ? slot_counter(dp, t->slot, 4 + reason) : &dp->drops[reason], 1);
}

/* The tunnel's MSS is for inner IPv4; inner IPv6 gets 20 bytes less. 0 = no clamping. */
static uint16_t mss_for(const esp_fwd_tunnel_t *tn, const inner_info_t *info)
{
    if (info->family == 4 || tn->mss <= IPV6_EXTRA_HDR) return info->family == 4 ? tn->mss : 0;
    return (uint16_t)(tn->mss - IPV6_EXTRA_HDR);
}

static int drop_reason(int status)
{
    switch (status) {
    case ESP_ERR_AUTH: return FWD_DROP_ICV;
    case ESP_ERR_REPLAY: return FWD_DROP_REPLAY;
    case ESP_ERR_WINDOW: return FWD_DROP_WINDOW;
    case ESP_ERR_MALFORMED: return FWD_DROP_MALFORMED;
    case ESP_ERR_PADDING: return FWD_DROP_PADDING;
    case ESP_ERR_UNKNOWN_SPI: return FWD_DROP_NO_SA;
    case ESP_ERR_NOT_ESP: return FWD_DROP_NOT_ESP;
    case ESP_ERR_HARD_EXPIRED:
    case ESP_ERR_SEQ_OVERFLOW: return FWD_DROP_EXPIRED;
    default: return FWD_DROP_ERROR;
    }
}

/* ---- per-worker state ------------------------------------------------------------------------ */

typedef struct {
    uint64_t generation;                /* 0 = empty */
    uint8_t key[40];                    /* family, proto, ports, addresses */
    uint32_t tunnel;
} flow_entry_t;

/* An outer address of either family, as sendmmsg and recvmmsg take it. */
typedef union {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
} peer_addr_t;

/* The tunnel's peer as a socket address (the UDP port only when encapsulating). */
static socklen_t peer_sockaddr(const esp_fwd_tunnel_t *tn, peer_addr_t *to)
{
    uint16_t port = tn->udp_encap ? htons(tn->peer_port) : 0;
    memset(to, 0, sizeof(*to));
    if (tn->peer_family == 6) {
        to->v6.sin6_family = AF_INET6;
        to->v6.sin6_port = port;
        memcpy(&to->v6.sin6_addr, tn->peer_addr, 16);
        return sizeof(to->v6);
    }
    to->v4.sin_family = AF_INET;
    to->v4.sin_port = port;
    memcpy(&to->v4.sin_addr, tn->peer_addr, 4);
    return sizeof(to->v4);
}

/* Did this datagram come from the tunnel's peer address? */
static int from_peer(const peer_addr_t *from, const esp_fwd_tunnel_t *tn)
{
    if (from->sa.sa_family == AF_INET6)
        return tn->peer_family == 6 && memcmp(&from->v6.sin6_addr, tn->peer_addr, 16) == 0;
    return tn->peer_family == 4 && memcmp(&from->v4.sin_addr, tn->peer_addr, 4) == 0;
}

/* Did this datagram come from the tunnel's peer address and port? */
static int from_peer_port(const peer_addr_t *from, const esp_fwd_tunnel_t *tn)
{
    uint16_t port = from->sa.sa_family == AF_INET6 ? from->v6.sin6_port : from->v4.sin_port;
    return from_peer(from, tn) && ntohs(port) == tn->peer_port;
}

/* Authentic ESP of `tn` from `from`, not its peer: reported once until the control plane takes it. */
static void note_mapping(esp_fwd_t *dp, const esp_fwd_tunnel_t *tn, const peer_addr_t *from)
{
    esp_fwd_mapping_t m;
    memset(&m, 0, sizeof(m)); /* padding too: entries are compared whole */
    m.spi = tn->spi_in;
    if (from->sa.sa_family == AF_INET6) {
        m.family = 6;
        memcpy(m.addr, &from->v6.sin6_addr, 16);
        m.port = ntohs(from->v6.sin6_port);
    } else {
        m.family = 4;
        memcpy(m.addr, &from->v4.sin_addr, 4);
        m.port = ntohs(from->v4.sin_port);
    }
    pthread_mutex_lock(&dp->mapping_lock);
    int known = 0;
    for (size_t k = 0; k < dp->n_mappings && !known; k++) known = memcmp(&dp->mappings[k], &m, sizeof(m)) == 0;
    if (!known && dp->n_mappings < FWD_MAX_MAPPINGS) {
        dp->mappings[dp->n_mappings++] = m;
        uint64_t one = 1;
        ssize_t rc = write(dp->mapping_fd, &one, sizeof(one)); /* the counter is far from full: cannot fail */
        (void)rc;
    }
    pthread_mutex_unlock(&dp->mapping_lock);
}

int esp_fwd_mapping_fd(const esp_fwd_t *dp) { return dp->mapping_fd; }

size_t esp_fwd_take_mappings(esp_fwd_t *dp, esp_fwd_mapping_t *out, size_t max)
{
    pthread_mutex_lock(&dp->mapping_lock);
    size_t n = dp->n_mappings < max ? dp->n_mappings : max;
    memcpy(out, dp->mappings, n * sizeof(*out));
    memmove(dp->mappings, dp->mappings + n, (dp->n_mappings - n) * sizeof(*out));
    dp->n_mappings -= n;
    if (dp->n_mappings == 0) { /* readable again only when a new one comes */
        uint64_t drained;
        ssize_t rc = read(dp->mapping_fd, &drained, sizeof(drained)); /* EAGAIN if it was not signalled */
        (void)rc;
    }
    pthread_mutex_unlock(&dp->mapping_lock);
    return n;
}

/* Outbound ESP packets waiting for sendmmsg: packed in `arena`, one message each. */
typedef struct {
    uint8_t arena[FWD_SEND_ARENA];
    size_t used;
    size_t n;
    struct mmsghdr msgs[FWD_SEND_BATCH];
    struct iovec iov[FWD_SEND_BATCH];
    peer_addr_t to[FWD_SEND_BATCH];
} send_queue_t;

/* Outbound ESP frames written into the worker's XSK UMEM, waiting for one send to its TX ring. */
typedef struct {
    uint64_t addrs[FWD_SEND_BATCH];
    uint32_t lens[FWD_SEND_BATCH];
    size_t n;
    uint64_t spare[FWD_SEND_BATCH];     /* TX frames taken from the XSK, not yet written: kept for the next */
    size_t n_spare;
    uint16_t ip_id;                     /* IPv4 identification of our frames: per worker, no atomics */
} xsk_queue_t;

typedef struct {
    uint8_t in[FWD_BATCH][RAW_SLOT];    /* RAW_SLOT >= RECV_SLOT: one slot size serves both sockets */
    uint8_t out[FWD_BATCH][OUT_SLOT];
    uint32_t offs[FWD_BATCH], lens[FWD_BATCH], out_offs[FWD_BATCH], out_lens[FWD_BATCH];
    uint8_t status[FWD_BATCH], nh[FWD_BATCH];
    peer_addr_t from[FWD_BATCH];
    uint8_t is_raw[FWD_BATCH];          /* received as IP protocol 50 (1) or in UDP (0) */
    uint64_t xsk_addrs[FWD_BATCH];      /* the XSK frames of this batch, released after it */
    uint32_t xsk_lens[FWD_BATCH];
    struct mmsghdr msgs[FWD_BATCH];
    struct iovec iov[FWD_BATCH];
    uint8_t frame[OFFLOAD_MAX_FRAME];   /* one TUN read (with its virtio_net_hdr when offloading) */
    uint8_t segs[OFFLOAD_SPLIT_OUT_CAP(FWD_MAX_SEGS)];
    uint32_t seg_offs[FWD_MAX_SEGS], seg_lens[FWD_MAX_SEGS];
    uint8_t frames[OFFLOAD_COALESCE_OUT_CAP(FWD_BATCH * OUT_SLOT, FWD_BATCH)]; /* coalesced TUN writes */
    uint32_t frame_offs[FWD_BATCH], frame_lens[FWD_BATCH];
    send_queue_t udp, raw;
    xsk_queue_t xsk;
    uint8_t icmp[OFFLOAD_VNET_HDR_LEN + ICMP_BUF];
    flow_entry_t flows[FWD_FLOW_CACHE];
    time_t icmp_second;
    unsigned icmp_sent;
} worker_t;

static void flow_key(const inner_info_t *info, uint8_t key[40])
{
    size_t alen = info->family == 4 ? 4 : 16;
    memset(key, 0, 40);
    key[0] = info->family;
    key[1] = info->proto;
    key[2] = (uint8_t)(info->sport >> 8); key[3] = (uint8_t)info->sport;
    key[4] = (uint8_t)(info->dport >> 8); key[5] = (uint8_t)info->dport;
    key[6] = info->ports_known;
    memcpy(key + 8, info->src, alen);
    memcpy(key + 24, info->dst, alen);
}

static uint32_t flow_hash(const uint8_t key[40])
{
    uint32_t h = 2166136261u; /* FNV-1a: the key is not attacker-chosen beyond what the sender owns */
    for (int i = 0; i < 40; i++) h = (h ^ key[i]) * 16777619u;
    return h & (FWD_FLOW_CACHE - 1);
}

/* The first tunnel (most specific first) whose selectors hold the packet and that this worker may send
 * on, or -1. The flow cache is per worker, so a cached choice is always one of this worker's. */
static long policy_lookup(const fwd_tables_t *t, worker_t *w, int worker, const inner_info_t *info)
{
    uint8_t key[40];
    flow_key(info, key);
    flow_entry_t *e = &w->flows[flow_hash(key)];
    if (e->generation == t->generation && memcmp(e->key, key, sizeof(key)) == 0) return e->tunnel;
    for (size_t i = 0; i < t->n_tunnels; i++) {
        const esp_fwd_tunnel_t *tn = &t->tunnels[i];
        if (tn->out_sa == NULL || (tn->bound_worker != 0 && tn->bound_worker != (uint32_t)worker + 1)) continue;
        const inner_selector_t *local = &t->sels[tn->sel_offset], *remote = local + tn->n_local;
        if (inner_policy_match(local, tn->n_local, remote, tn->n_remote, info)) {
            e->generation = t->generation;
            memcpy(e->key, key, sizeof(key));
            e->tunnel = (uint32_t)i;
            return (long)i;
        }
    }
    return -1;
}

static long inbound_tunnel(const fwd_tables_t *t, uint32_t spi)
{
    size_t lo = 0, hi = t->n_in;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->in_index[mid].spi == spi) return t->in_index[mid].tunnel;
        if (t->in_index[mid].spi < spi) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

static int icmp_allowed(worker_t *w)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec != w->icmp_second) {
        w->icmp_second = now.tv_sec;
        w->icmp_sent = 0;
    }
    return w->icmp_sent++ < FWD_ICMP_PER_SECOND;
}

/* sendmmsg msgs[0..n) on fd; what cannot be sent is counted as an error drop. */
static void send_all(esp_fwd_t *dp, int fd, struct mmsghdr *msgs, size_t n)
{
    size_t sent = 0;
    while (sent < n) {
        int rc = sendmmsg(fd, msgs + sent, (unsigned)(n - sent), 0);
        if (rc < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
                struct pollfd p = {fd, POLLOUT, 0};
                if (poll(&p, 1, 100) > 0) continue;
            }
            count(&dp->drops[FWD_DROP_ERROR], n - sent);
            return;
        }
        sent += (size_t)rc;
    }
}

/* ---- outbound: TUN -> ESP ---------------------------------------------------------------------- */

static void flush(esp_fwd_t *dp, send_queue_t *q, int fd)
{
    if (q->n) send_all(dp, fd, q->msgs, q->n);
    q->n = q->used = 0;
}

/* Frames the TX ring does not take (it is full: the kernel has not sent the previous ones) are lost,
 * counted as errors; esp_xsk_send puts their frames back on its free list. */
static void flush_xsk(esp_fwd_t *dp, xsk_queue_t *q, const esp_fwd_xsk_t *x)
{
    if (q->n == 0) return;
    size_t taken = x->send(x->ctx, q->addrs, q->lens, q->n);
    if (taken < q->n) count(&dp->drops[FWD_DROP_ERROR], q->n - taken);
    q->n = 0;
}

static void flush_all(esp_fwd_t *dp, worker_t *w, const esp_fwd_io_t *io)
{
    flush(dp, &w->udp, io->udp_fd);
    flush(dp, &w->raw, io->raw_fd);
    if (io->xsk != NULL && io->xsk->send != NULL) flush_xsk(dp, &w->xsk, io->xsk);
}

enum { XSK_QUEUED = 0, XSK_QUEUE_FULL = 1, XSK_USE_SOCKETS = 2 };

/* Encrypt one inner packet straight into a TX frame of the worker's XSK, behind the Ethernet and IP (and
 * UDP) headers of the tunnel's next hop. XSK_USE_SOCKETS before anything is consumed (no sequence number
 * spent) when no frame is free or the packet would exceed the device's MTU or the frame. */
static int xsk_packet(esp_fwd_t *dp, worker_t *w, const esp_fwd_xsk_t *x, const esp_fwd_tunnel_t *tn,
                      const uint8_t *pkt, size_t len)
{
    xsk_queue_t *q = &w->xsk;
    esp_frame_tx_t tx = {.vlan = 0, .family = tn->peer_family, .udp_encap = (uint8_t)tn->udp_encap,
                         .ip_id = q->ip_id, .sport = x->natt_port, .dport = tn->peer_port};
    memcpy(tx.dst_mac, tn->l2_dst, sizeof(tx.dst_mac));
    memcpy(tx.src_mac, tn->l2_src, sizeof(tx.src_mac));
    memcpy(tx.src, tn->local_addr, sizeof(tx.src));
    memcpy(tx.dst, tn->peer_addr, sizeof(tx.dst));
    size_t hdr = esp_frame_header_len(&tx), esp_len = esp_encap_size(tn->out_sa, len, 0);
    if (hdr == 0 || esp_len == 0 || hdr + esp_len > x->frame_size ||
        hdr - FRAME_ETH_HDR_LEN + esp_len > tn->l2_mtu)
        return XSK_USE_SOCKETS;
    if (q->n_spare == 0) q->n_spare = x->tx_frames(x->ctx, q->spare, FWD_SEND_BATCH);
    if (q->n_spare == 0) return XSK_USE_SOCKETS; /* every TX frame is in flight */
    uint64_t addr = q->spare[q->n_spare - 1];
    if (addr > x->area_len || x->frame_size > x->area_len - addr) return XSK_USE_SOCKETS; /* cannot happen */
    size_t flen = 0;
    int st = esp_frame_encap(tn->out_sa, &tx, pkt, len, x->area + addr, x->frame_size, &flen);
    if (st != ESP_OK) { /* ESP_ERR_BUFFER cannot happen: the sizes were checked above */
        drop(dp, tn, drop_reason(st));
        return XSK_QUEUED;
    }
    q->n_spare--;
    q->ip_id++;
    q->addrs[q->n] = addr;
    q->lens[q->n] = (uint32_t)flen;
    q->n++;
    count(slot_counter(dp, tn->slot, FWD_PACKETS_OUT), 1);
    count(slot_counter(dp, tn->slot, FWD_BYTES_OUT), len);
    return q->n == FWD_SEND_BATCH ? XSK_QUEUE_FULL : XSK_QUEUED;
}

/* One inner packet read from the TUN: policy, MTU, MSS, ESP, then queued for its socket. Returns 1 when
 * a queue is full and must be flushed before the next packet. */
static int outbound_packet(esp_fwd_t *dp, worker_t *w, const fwd_tables_t *t, const esp_fwd_io_t *io, uint8_t *pkt,
                           size_t len)
{
    inner_info_t info;
    if (inner_parse(pkt, len, &info) != 0) {
        drop(dp, NULL, FWD_DROP_MALFORMED);
        return 0;
    }
    long ti = policy_lookup(t, w, io->worker, &info);
    if (ti < 0) {
        drop(dp, NULL, FWD_DROP_NO_POLICY); /* never sent in clear */
        return 0;
    }
    const esp_fwd_tunnel_t *tn = &t->tunnels[ti];
    if (info.length > tn->mtu && info.df) {
        const uint8_t *src = info.family == 4 ? (t->has_src4 ? t->icmp_src4 : NULL)
                                              : (t->has_src6 ? t->icmp_src6 : NULL);
        size_t hdr = io->vnet_hdr ? OFFLOAD_VNET_HDR_LEN : 0; /* an all-zero virtio_net_hdr: a plain packet */
        memset(w->icmp, 0, hdr);
        size_t m = icmp_allowed(w) ? inner_too_big(pkt, &info, tn->mtu, src, w->icmp + hdr, ICMP_BUF) : 0;
        if (m && write(io->tun_fd, w->icmp, hdr + m) < 0) count(&dp->drops[FWD_DROP_ERROR], 1);
        drop(dp, tn, FWD_DROP_TOO_BIG);
        return 0;
    }
    inner_clamp_mss(pkt, &info, mss_for(tn, &info));
    if (io->xsk != NULL && io->xsk->send != NULL && tn->l2_ok) {
        int r = xsk_packet(dp, w, io->xsk, tn, pkt, info.length);
        if (r != XSK_USE_SOCKETS) return r == XSK_QUEUE_FULL;
    }
    send_queue_t *q = tn->udp_encap ? &w->udp : &w->raw;
    if ((tn->udp_encap ? io->udp_fd : io->raw_fd) < 0) {
        drop(dp, tn, FWD_DROP_ERROR); /* this worker has no socket for that path */
        return 0;
    }
    size_t olen = 0;
    int st = esp_encap(tn->out_sa, 0, pkt, info.length, 0, q->arena + q->used, sizeof(q->arena) - q->used, &olen);
    if (st != ESP_OK) {
        drop(dp, tn, drop_reason(st));
        return 0;
    }
    count(slot_counter(dp, tn->slot, FWD_PACKETS_OUT), 1);
    count(slot_counter(dp, tn->slot, FWD_BYTES_OUT), info.length);
    peer_addr_t *to = &q->to[q->n];
    socklen_t to_len = peer_sockaddr(tn, to);
    q->iov[q->n] = (struct iovec){q->arena + q->used, olen};
    q->msgs[q->n].msg_hdr = (struct msghdr){.msg_name = to, .msg_namelen = to_len, .msg_iov = &q->iov[q->n],
                                            .msg_iovlen = 1};
    q->n++;
    q->used += olen;
    return q->n == FWD_SEND_BATCH || sizeof(q->arena) - q->used < OUT_SLOT;
}

/* Read up to FWD_BATCH frames from the TUN queue; a TSO super-packet (offloading) is split into its
 * segments first. Sends go out when a queue fills and at the end, outside the table lock. */
static void outbound(esp_fwd_t *dp, worker_t *w, const esp_fwd_io_t *io)
{
    size_t cap = io->vnet_hdr ? sizeof(w->frame) : FWD_MAX_INNER;
    pthread_rwlock_rdlock(&dp->lock);
    for (size_t frames = 0; frames < FWD_BATCH; frames++) {
        ssize_t r = read(io->tun_fd, w->frame, cap);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break; /* EAGAIN: the queue is empty */
        size_t n = 1;
        if (io->vnet_hdr) {
            if (offload_split(w->frame, (size_t)r, w->segs, sizeof(w->segs), w->seg_offs, w->seg_lens, FWD_MAX_SEGS,
                              &n) != OFFLOAD_OK) {
                drop(dp, NULL, FWD_DROP_MALFORMED);
                continue;
            }
        } else {
            w->seg_offs[0] = 0;
            w->seg_lens[0] = (uint32_t)r;
        }
        uint8_t *base = io->vnet_hdr ? w->segs : w->frame;
        for (size_t i = 0; i < n; i++) {
            if (outbound_packet(dp, w, dp->tables, io, base + w->seg_offs[i], w->seg_lens[i])) {
                pthread_rwlock_unlock(&dp->lock); /* never send holding the lock: a table swap may wait */
                flush_all(dp, w, io);
                pthread_rwlock_rdlock(&dp->lock);
            }
        }
    }
    pthread_rwlock_unlock(&dp->lock);
    flush_all(dp, w, io);
}

/* ---- inbound: ESP -> TUN ----------------------------------------------------------------------- */

/* Read a batch; for raw IPv4 sockets strip (and check) the IPv4 header (raw IPv6 sockets deliver the
 * payload alone). Returns how many frames are in w->offs/lens (length 0 = skip). */
static size_t receive(esp_fwd_t *dp, worker_t *w, int fd, int raw)
{
    size_t slot = raw ? RAW_SLOT : RECV_SLOT;
    for (size_t j = 0; j < FWD_BATCH; j++) {
        w->iov[j] = (struct iovec){w->in[j], slot};
        w->msgs[j].msg_hdr = (struct msghdr){.msg_name = &w->from[j], .msg_namelen = sizeof(w->from[j]),
                                             .msg_iov = &w->iov[j], .msg_iovlen = 1};
    }
    int rc;
    do {
        rc = recvmmsg(fd, w->msgs, FWD_BATCH, MSG_DONTWAIT, NULL);
    } while (rc < 0 && errno == EINTR);
    if (rc <= 0) return 0;
    for (size_t j = 0; j < (size_t)rc; j++) {
        uint8_t *p = w->in[j];
        size_t len = w->msgs[j].msg_len, off = 0;
        w->offs[j] = (uint32_t)((size_t)(p - &w->in[0][0]));
        w->lens[j] = 0;
        if (w->msgs[j].msg_hdr.msg_flags & MSG_TRUNC) {
            drop(dp, NULL, FWD_DROP_MALFORMED);
            continue;
        }
        if (raw && w->from[j].sa.sa_family == AF_INET6) {
            if (len < ESP_HDR_LEN) {
                drop(dp, NULL, FWD_DROP_MALFORMED);
                continue;
            }
        } else if (raw) {
            size_t ihl = len >= IPV4_HDR_MIN ? (size_t)(p[0] & 0x0f) * 4 : 0;
            size_t total = len >= IPV4_HDR_MIN ? ((size_t)p[2] << 8 | p[3]) : 0;
            if ((p[0] >> 4) != 4 || ihl < IPV4_HDR_MIN || ihl > len || total < ihl || total > len ||
                p[9] != IPPROTO_ESP_NUM) {
                drop(dp, NULL, FWD_DROP_MALFORMED);
                continue;
            }
            off = ihl;
            len = total - ihl;
        } else if (len < NON_ESP_MARKER_LEN || be32(p) == 0) {
            /* a keepalive, or IKE that the steering should have sent to socket 0 */
            if (!(len == KEEPALIVE_LEN && p[0] == 0xff)) drop(dp, NULL, FWD_DROP_NOT_ESP);
            continue;
        }
        w->offs[j] += (uint32_t)off;
        w->lens[j] = (uint32_t)len;
        w->is_raw[j] = (uint8_t)raw;
    }
    return (size_t)rc;
}

/* One batch of frames from the XSK: each ESP packet located in the UMEM (offs/lens into x->area), its
 * outer source as a socket address for the raw-ESP source check. Frames that are not ESP (the XDP
 * program should not have redirected them) are counted; their length 0 keeps them out of the batch. */
static size_t receive_xsk(esp_fwd_t *dp, worker_t *w, const esp_fwd_xsk_t *x)
{
    size_t n = x->recv(x->ctx, w->xsk_addrs, w->xsk_lens, FWD_BATCH);
    esp_frame_config_t cfg = {x->natt_port};
    for (size_t j = 0; j < n; j++) {
        esp_frame_t f;
        w->lens[j] = w->offs[j] = 0;
        if (w->xsk_addrs[j] > x->area_len || w->xsk_lens[j] > x->area_len - w->xsk_addrs[j]) {
            drop(dp, NULL, FWD_DROP_MALFORMED);
            continue;
        }
        esp_frame_parse(x->area + w->xsk_addrs[j], w->xsk_lens[j], &cfg, &f);
        if (f.verdict != FRAME_ESP_RAW && f.verdict != FRAME_ESP_UDP) {
            drop(dp, NULL, f.verdict == FRAME_DROP ? FWD_DROP_MALFORMED : FWD_DROP_NOT_ESP);
            continue;
        }
        w->offs[j] = (uint32_t)(w->xsk_addrs[j] + f.esp_offset);
        w->lens[j] = f.esp_len;
        w->is_raw[j] = f.verdict == FRAME_ESP_RAW;
        peer_addr_t *from = &w->from[j];
        memset(from, 0, sizeof(*from));
        if (f.family == 6) {
            from->v6.sin6_family = AF_INET6;
            from->v6.sin6_port = htons(f.sport);
            memcpy(&from->v6.sin6_addr, f.src, 16);
        } else {
            from->v4.sin_family = AF_INET;
            from->v4.sin_port = htons(f.sport);
            memcpy(&from->v4.sin_addr, f.src, 4);
        }
    }
    return n;
}

/* Decrypt, check and deliver n received ESP packets (in + offs[i], lens[i]; length 0: skipped). */
static void deliver_inbound(esp_fwd_t *dp, worker_t *w, const esp_fwd_io_t *io, const uint8_t *in, size_t in_size,
                            size_t n)
{
    uint8_t deliver[FWD_BATCH] = {0}; /* authentic and inside the policy: written to the TUN */
    pthread_rwlock_rdlock(&dp->lock);
    const fwd_tables_t *t = dp->tables;
    /* frames skipped above have length 0: decap reports them MALFORMED, and they are not counted twice */
    esp_decap_batch(t->in_table, t->n_in, 0, in, in_size, w->offs, w->lens, n, &w->out[0][0], sizeof(w->out),
                    w->out_offs, w->out_lens, w->nh, w->status, NULL);
    for (size_t i = 0; i < n; i++) {
        if (w->lens[i] == 0) continue;
        uint32_t spi = w->lens[i] >= 4 ? be32(in + w->offs[i]) : 0;
        long ti = inbound_tunnel(t, spi);
        const esp_fwd_tunnel_t *tn = ti >= 0 ? &t->tunnels[ti] : NULL;
        if (w->status[i] != ESP_OK) {
            if (w->status[i] != ESP_ERR_DUMMY) drop(dp, tn, drop_reason(w->status[i]));
            continue;
        }
        if (tn == NULL) { /* cannot happen: decap found the SA by this SPI */
            drop(dp, NULL, FWD_DROP_ERROR);
            continue;
        }
        /* an authentic packet on the wrong path or, raw, from another address: not this SA's peer */
        if (tn->udp_encap == w->is_raw[i] || (w->is_raw[i] && !from_peer(&w->from[i], tn))) {
            drop(dp, tn, FWD_DROP_POLICY);
            continue;
        }
        uint8_t *pkt = &w->out[0][0] + w->out_offs[i];
        inner_info_t info;
        if (inner_parse(pkt, w->out_lens[i], &info) != 0) {
            drop(dp, tn, FWD_DROP_MALFORMED);
            continue;
        }
        const inner_selector_t *local = &t->sels[tn->sel_offset], *remote = local + tn->n_local;
        if (!inner_policy_match(remote, tn->n_remote, local, tn->n_local, &info)) {
            drop(dp, tn, FWD_DROP_POLICY); /* RFC 4301 5.2: outside the SA's selectors */
            continue;
        }
        inner_clamp_mss(pkt, &info, mss_for(tn, &info));
        w->out_lens[i] = info.length; /* without any TFC padding: what goes to the TUN */
        deliver[i] = 1;
        if (!w->is_raw[i] && !from_peer_port(&w->from[i], tn)) note_mapping(dp, tn, &w->from[i]);
        count(slot_counter(dp, tn->slot, FWD_PACKETS_IN), 1);
        count(slot_counter(dp, tn->slot, FWD_BYTES_IN), info.length);
    }
    pthread_rwlock_unlock(&dp->lock);
    for (size_t i = 0; i < n; i++)
        if (!deliver[i]) w->out_lens[i] = 0;
    if (io->vnet_hdr) { /* TCP segments of one flow merged into GSO frames: fewer, larger writes */
        size_t frames = offload_coalesce(&w->out[0][0], sizeof(w->out), w->out_offs, w->out_lens, n, w->frames,
                                         sizeof(w->frames), w->frame_offs, w->frame_lens, NULL);
        size_t delivered = 0;
        for (size_t i = 0; i < n; i++) delivered += deliver[i];
        if (frames == 0 && delivered) /* cannot happen: w->frames holds a whole batch */
            count(&dp->drops[FWD_DROP_ERROR], delivered);
        for (size_t j = 0; j < frames; j++)
            if (write(io->tun_fd, w->frames + w->frame_offs[j], w->frame_lens[j]) < 0)
                count(&dp->drops[FWD_DROP_ERROR], 1);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (w->out_lens[i] && write(io->tun_fd, &w->out[0][0] + w->out_offs[i], w->out_lens[i]) < 0)
            count(&dp->drops[FWD_DROP_ERROR], 1);
}

static void inbound(esp_fwd_t *dp, worker_t *w, const esp_fwd_io_t *io, int fd, int raw)
{
    size_t n = receive(dp, w, fd, raw);
    if (n) deliver_inbound(dp, w, io, &w->in[0][0], sizeof(w->in), n);
}

/* The plaintext is in w->out once decap is done, so the frames go back to the fill ring right after. */
static void inbound_xsk(esp_fwd_t *dp, worker_t *w, const esp_fwd_io_t *io)
{
    const esp_fwd_xsk_t *x = io->xsk;
    size_t n = receive_xsk(dp, w, x);
    if (n == 0) return;
    deliver_inbound(dp, w, io, x->area, x->area_len, n);
    x->release(x->ctx, w->xsk_addrs, n);
}

/* ---- the loop ---------------------------------------------------------------------------------- */

static int poll_io(esp_fwd_t *dp, worker_t *w, const esp_fwd_io_t *io, int timeout_ms)
{
    struct pollfd p[5] = {{io->stop_fd, POLLIN, 0}, {io->tun_fd, POLLIN, 0}, {io->udp_fd, POLLIN, 0},
                          {io->raw_rx ? io->raw_fd : -1, POLLIN, 0}, {io->xsk ? io->xsk->fd : -1, POLLIN, 0}};
    int rc = poll(p, 5, timeout_ms); /* negative fds are ignored by poll */
    if (rc < 0) return errno == EINTR ? 0 : -1;
    if (p[0].revents) return 1;
    if (p[1].revents & POLLIN) outbound(dp, w, io);
    if (p[2].revents & POLLIN) inbound(dp, w, io, io->udp_fd, 0);
    if (p[3].revents & POLLIN) inbound(dp, w, io, io->raw_fd, 1);
    if (p[4].revents & POLLIN) inbound_xsk(dp, w, io);
    return 0;
}

int esp_fwd_poll_once(esp_fwd_t *dp, const esp_fwd_io_t *io)
{
    worker_t *w = calloc(1, sizeof(*w));
    if (w == NULL) return -1;
    int rc = poll_io(dp, w, io, 0);
    free(w);
    return rc < 0 ? -1 : 0;
}

int esp_fwd_run(esp_fwd_t *dp, const esp_fwd_io_t *io)
{
    worker_t *w = calloc(1, sizeof(*w)); /* ~1.3 MB of batch buffers: on the heap, not the stack */
    if (w == NULL) return -1;
    int rc;
    while ((rc = poll_io(dp, w, io, -1)) == 0) {
    }
    free(w);
    return rc > 0 ? 0 : -1;
}

int esp_fwd_attach_steering(int fd, uint32_t workers)
{
    if (workers == 0) { errno = EINVAL; return -1; }
    /* Classic BPF run by the reuseport group with the data at the UDP payload: returns the socket index. */
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, NON_ESP_MARKER_LEN, 0, 5), /* shorter: keepalive -> 0 */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),                          /* the SPI, or the marker */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, 0),                   /* non-ESP marker: IKE -> 0 */
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, workers),
        BPF_STMT(BPF_ALU | BPF_ADD | BPF_K, 1),
        BPF_STMT(BPF_RET | BPF_A, 0),
        BPF_STMT(BPF_RET | BPF_K, 0),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof(code) / sizeof(code[0])), code};
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog));
}

#define BPF_ACCEPT 0xffffffffu /* socket filter verdict: keep the whole packet */

int esp_fwd_attach_raw_steering(int fd, int family, uint32_t workers, uint32_t index)
{
    if (workers == 0 || index >= workers || (family != 4 && family != 6)) { errno = EINVAL; return -1; }
    uint32_t short_verdict = index == 0 ? BPF_ACCEPT : 0;
    /* An IPv4 raw socket's filter sees the IP header (the SPI follows IHL * 4 octets), an IPv6 one the
     * ESP header (the kernel pulls the IPv6 header first). */
    struct sock_filter v4[] = {
        BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0),                         /* X = IHL * 4 */
        BPF_STMT(BPF_MISC | BPF_TXA, 0),
        BPF_STMT(BPF_ALU | BPF_ADD | BPF_K, 4),
        BPF_STMT(BPF_MISC | BPF_TAX, 0),                                /* X = end of the SPI */
        BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_X, 0, 1, 0),                   /* len >= X: SPI present */
        BPF_STMT(BPF_RET | BPF_K, short_verdict),
        BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0),
        BPF_STMT(BPF_LD | BPF_W | BPF_IND, 0),                          /* A = SPI */
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, workers),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, index, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, BPF_ACCEPT),
        BPF_STMT(BPF_RET | BPF_K, 0),
    };
    struct sock_filter v6[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 4, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, short_verdict),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),                          /* A = SPI */
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, workers),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, index, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, BPF_ACCEPT),
        BPF_STMT(BPF_RET | BPF_K, 0),
    };
    struct sock_fprog prog = family == 4 ? (struct sock_fprog){sizeof(v4) / sizeof(v4[0]), v4}
                                         : (struct sock_fprog){sizeof(v6) / sizeof(v6[0]), v6};
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog));
}
