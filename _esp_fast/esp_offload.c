/* TUN offloads (segmentation and receive coalescing): see esp_offload.h. */
#define _DEFAULT_SOURCE
#include <endian.h>
#include <string.h>

#include "esp_csum.h"
#include "esp_offload.h"

#define IPV4_MIN_HDR 20
#define IPV6_HDR 40
#define IPV4_FLAG_MF 0x2000
#define IPV4_OFFSET_MASK 0x1fff
#define IPV6_EXT_HOP_BY_HOP 0
#define IPV6_EXT_ROUTING 43
#define IPV6_EXT_DEST_OPTS 60
#define IPV6_EXT_UNIT 8           /* extension header length is counted in 8-octet units, the first not counted */
#define PROTO_TCP 6
#define TCP_MIN_HDR 20
#define TCP_CSUM_OFFSET 16
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_PSH 0x08
#define TCP_FLAG_URG 0x20
#define TCP_FLAG_CWR 0x80
#define TCP_NO_MERGE (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST | TCP_FLAG_URG)
#define CSUM_MANGLED_ZERO 0xffff  /* a computed 0 is sent as its one's complement twin (UDP: 0 = "none") */

static uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

/* ---- vnet header ------------------------------------------------------------------------------- */

typedef struct {
    uint8_t flags, gso_type;
    uint16_t hdr_len, gso_size, csum_start, csum_offset;
} vnet_t;

static void vnet_read(const uint8_t *p, vnet_t *v)
{
    struct virtio_net_hdr h;
    memcpy(&h, p, sizeof(h)); /* frames sit at any alignment */
    v->flags = h.flags;
    v->gso_type = h.gso_type;
    v->hdr_len = le16toh(h.hdr_len);
    v->gso_size = le16toh(h.gso_size);
    v->csum_start = le16toh(h.csum_start);
    v->csum_offset = le16toh(h.csum_offset);
}

static void vnet_write(uint8_t *p, const vnet_t *v)
{
    struct virtio_net_hdr h;
    memset(&h, 0, sizeof(h));
    h.flags = v->flags;
    h.gso_type = v->gso_type;
    h.hdr_len = htole16(v->hdr_len);
    h.gso_size = htole16(v->gso_size);
    h.csum_start = htole16(v->csum_start);
    h.csum_offset = htole16(v->csum_offset);
    memcpy(p, &h, sizeof(h));
}

/* ---- checksums --------------------------------------------------------------------------------- */

/* csum_add, csum_fold, store_native16: esp_csum.h */

/* IPv4 or IPv6 pseudo-header of a TCP segment of l4_len bytes (RFC 9293 3.1, RFC 8200 8.1). */
static uint64_t pseudo_sum(const uint8_t *ip, int family, size_t l4_len)
{
    uint64_t acc = family == 4 ? csum_add(0, ip + 12, 8) : csum_add(0, ip + 8, 32);
    /* 32-bit length then three zero octets and the protocol: the same sum as IPv4's zero/proto/length */
    uint8_t tail[8] = {(uint8_t)(l4_len >> 24), (uint8_t)(l4_len >> 16), (uint8_t)(l4_len >> 8), (uint8_t)l4_len,
                       0, 0, 0, PROTO_TCP};
    return csum_add(acc, tail, sizeof(tail));
}

static void ipv4_header_checksum(uint8_t *ip, size_t ihl)
{
    put16(ip + 10, 0);
    store_native16(ip + 10, (uint16_t)~csum_fold(csum_add(0, ip, ihl)));
}

/* ---- parsing ----------------------------------------------------------------------------------- */

/* The IP length of pkt and where its upper layer may start at the earliest. */
static int ip_extent(const uint8_t *pkt, size_t len, size_t *total, size_t *min_l4)
{
    if (len < 1) return OFFLOAD_ERR_TRUNCATED;
    if (pkt[0] >> 4 == 4) {
        if (len < IPV4_MIN_HDR) return OFFLOAD_ERR_TRUNCATED;
        size_t ihl = (size_t)(pkt[0] & 0x0f) * 4;
        *total = be16(pkt + 2);
        *min_l4 = ihl;
        if (ihl < IPV4_MIN_HDR || *total < ihl) return OFFLOAD_ERR_HEADER;
        return *total > len ? OFFLOAD_ERR_TRUNCATED : OFFLOAD_OK;
    }
    if (pkt[0] >> 4 == 6) {
        if (len < IPV6_HDR) return OFFLOAD_ERR_TRUNCATED;
        *total = IPV6_HDR + (size_t)be16(pkt + 4);
        *min_l4 = IPV6_HDR;
        if (*total == IPV6_HDR && pkt[6] == IPV6_EXT_HOP_BY_HOP) return OFFLOAD_ERR_HEADER; /* jumbogram: RFC 2675 */
        return *total > len ? OFFLOAD_ERR_TRUNCATED : OFFLOAD_OK;
    }
    return OFFLOAD_ERR_HEADER;
}

typedef struct {
    int family;   /* 4 or 6 */
    size_t l4;    /* offset of the TCP header */
    size_t hdrs;  /* l4 + TCP data offset: everything in front of the payload */
    size_t total; /* the IP length (<= the bytes present) */
    int ext;      /* IPv6 extension headers in front of TCP */
} tcp_pkt_t;

/* A TCP segment that can be cut or merged: no fragment, every header inside the IP length. */
static int parse_tcp(const uint8_t *pkt, size_t len, tcp_pkt_t *t)
{
    memset(t, 0, sizeof(*t));
    size_t off;
    int rc = ip_extent(pkt, len, &t->total, &off);
    if (rc != OFFLOAD_OK) return rc;
    if (pkt[0] >> 4 == 4) {
        t->family = 4;
        if (be16(pkt + 6) & (IPV4_FLAG_MF | IPV4_OFFSET_MASK)) return OFFLOAD_ERR_HEADER;
        if (pkt[9] != PROTO_TCP) return OFFLOAD_ERR_HEADER;
    } else {
        t->family = 6;
        uint8_t nh = pkt[6];
        /* only the headers the kernel's GSO walks too; a fragment header means no TSO packet */
        for (int i = 0; nh != PROTO_TCP; i++) {
            if (i == OFFLOAD_MAX_EXT_HEADERS ||
                (nh != IPV6_EXT_HOP_BY_HOP && nh != IPV6_EXT_ROUTING && nh != IPV6_EXT_DEST_OPTS))
                return OFFLOAD_ERR_HEADER;
            if (off + 2 > t->total) return OFFLOAD_ERR_TRUNCATED;
            nh = pkt[off];
            off += ((size_t)pkt[off + 1] + 1) * IPV6_EXT_UNIT;
            if (off > t->total) return OFFLOAD_ERR_TRUNCATED;
            t->ext = 1;
        }
    }
    if (off + TCP_MIN_HDR > t->total) return OFFLOAD_ERR_TRUNCATED;
    size_t doff = (size_t)(pkt[off + 12] >> 4) * 4;
    if (doff < TCP_MIN_HDR) return OFFLOAD_ERR_HEADER;
    if (off + doff > t->total) return OFFLOAD_ERR_TRUNCATED;
    if (off + doff > OFFLOAD_MAX_HDR_LEN) return OFFLOAD_ERR_HEADER;
    t->l4 = off;
    t->hdrs = off + doff;
    return OFFLOAD_OK;
}

/* ---- split (read side) ------------------------------------------------------------------------- */

static int split_none(const vnet_t *v, const uint8_t *pkt, size_t len, uint8_t *out, size_t out_cap,
                      uint32_t *offs, uint32_t *lens, size_t max_segs, size_t *n_segs)
{
    if (max_segs < 1) return OFFLOAD_ERR_TOO_MANY;
    size_t n = len;
    if (v->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
        size_t min_l4;
        int rc = ip_extent(pkt, len, &n, &min_l4);
        if (rc != OFFLOAD_OK) return rc;
        size_t at = (size_t)v->csum_start + v->csum_offset;
        /* the field must lie in the upper layer, on a 16-bit boundary of the summed range */
        if (v->csum_start < min_l4 || at + 2 > n || (v->csum_offset & 1)) return OFFLOAD_ERR_HEADER;
    }
    if (n > out_cap || n > UINT32_MAX) return OFFLOAD_ERR_SPACE;
    memcpy(out, pkt, n);
    if (v->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
        /* the field holds the pseudo-header sum already (CHECKSUM_PARTIAL): sum over it and complement */
        uint16_t c = (uint16_t)~csum_fold(csum_add(0, out + v->csum_start, n - v->csum_start));
        store_native16(out + v->csum_start + v->csum_offset, c ? c : CSUM_MANGLED_ZERO);
    }
    offs[0] = 0;
    lens[0] = (uint32_t)n;
    *n_segs = 1;
    return OFFLOAD_OK;
}

/* Finish segment s (headers + chunk copied) number i of n. */
static void fix_segment(uint8_t *s, size_t slen, const tcp_pkt_t *t, size_t i, size_t n, uint16_t id,
                        uint32_t seq, uint8_t flags)
{
    if (t->family == 4) {
        put16(s + 2, (uint16_t)slen);
        put16(s + 4, (uint16_t)(id + i));
        ipv4_header_checksum(s, t->l4);
    } else {
        put16(s + 4, (uint16_t)(slen - IPV6_HDR));
    }
    uint8_t *tcp = s + t->l4;
    put32(tcp + 4, seq);
    if (i + 1 < n) flags &= (uint8_t)~(TCP_FLAG_FIN | TCP_FLAG_PSH);
    if (i > 0) flags &= (uint8_t)~TCP_FLAG_CWR;
    tcp[13] = flags;
    put16(tcp + TCP_CSUM_OFFSET, 0);
    uint64_t acc = csum_add(pseudo_sum(s, t->family, slen - t->l4), tcp, slen - t->l4);
    store_native16(tcp + TCP_CSUM_OFFSET, (uint16_t)~csum_fold(acc));
}

int offload_split(const uint8_t *frame, size_t frame_len, uint8_t *out, size_t out_cap, uint32_t *offs,
                  uint32_t *lens, size_t max_segs, size_t *n_segs)
{
    *n_segs = 0;
    if (frame == NULL || frame_len < OFFLOAD_VNET_HDR_LEN) return OFFLOAD_ERR_TRUNCATED;
    vnet_t v;
    vnet_read(frame, &v);
    const uint8_t *pkt = frame + OFFLOAD_VNET_HDR_LEN;
    size_t len = frame_len - OFFLOAD_VNET_HDR_LEN;
    uint8_t gso = v.gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
    if (gso == VIRTIO_NET_HDR_GSO_NONE) return split_none(&v, pkt, len, out, out_cap, offs, lens, max_segs, n_segs);
    if (gso != VIRTIO_NET_HDR_GSO_TCPV4 && gso != VIRTIO_NET_HDR_GSO_TCPV6) return OFFLOAD_ERR_UNSUPPORTED;

    tcp_pkt_t t;
    int rc = parse_tcp(pkt, len, &t);
    if (rc != OFFLOAD_OK) return rc;
    if (t.family != (gso == VIRTIO_NET_HDR_GSO_TCPV4 ? 4 : 6) || v.hdr_len > t.total) return OFFLOAD_ERR_HEADER;
    /* without NEEDS_CSUM the offsets mean nothing: the checksums are computed from scratch anyway */
    if ((v.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && (v.csum_start != t.l4 || v.csum_offset != TCP_CSUM_OFFSET))
        return OFFLOAD_ERR_HEADER;
    if (v.gso_size == 0 || t.hdrs + v.gso_size > OFFLOAD_MAX_PACKET) return OFFLOAD_ERR_GSO_SIZE;

    size_t payload = t.total - t.hdrs, gso_size = v.gso_size;
    size_t n = payload ? (payload + gso_size - 1) / gso_size : 1;
    if (n > max_segs) return OFFLOAD_ERR_TOO_MANY;
    /* n <= 65535 and hdrs <= OFFLOAD_MAX_HDR_LEN: no overflow, and the offsets fit 32 bits */
    if (n * t.hdrs + payload > out_cap) return OFFLOAD_ERR_SPACE;

    uint16_t id = be16(pkt + 4);
    uint32_t seq = be32(pkt + t.l4 + 4);
    uint8_t flags = pkt[t.l4 + 13];
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        size_t from = i * gso_size, chunk = payload - from < gso_size ? payload - from : gso_size;
        uint8_t *s = out + pos;
        memcpy(s, pkt, t.hdrs);
        memcpy(s + t.hdrs, pkt + t.hdrs + from, chunk);
        fix_segment(s, t.hdrs + chunk, &t, i, n, id, seq + (uint32_t)from, flags);
        offs[i] = (uint32_t)pos;
        lens[i] = (uint32_t)(t.hdrs + chunk);
        pos += t.hdrs + chunk;
    }
    *n_segs = n;
    return OFFLOAD_OK;
}

/* ---- coalesce (write side) --------------------------------------------------------------------- */

typedef struct {
    uint32_t first;      /* packet index (in the chunk) of its first packet */
    uint32_t count;      /* packets merged */
    uint32_t ip_len;     /* IP length of the merged packet */
    uint32_t gso_size;   /* payload of the first */
    uint32_t next_seq;
    uint32_t out_off;    /* where the frame goes, then the write cursor */
    uint8_t psh;         /* the last merged one had PSH */
    uint8_t closed;      /* a short segment or PSH ended the run */
    tcp_pkt_t hdr;       /* of the first */
} run_t;

typedef struct {
    int32_t run;         /* the flow's latest run (maybe closed), -1: free slot */
    uint32_t hash;       /* of the flow's addresses and ports */
} flow_slot_t;

typedef struct {
    const uint8_t *in;
    const uint32_t *offs, *lens;
    run_t runs[OFFLOAD_COALESCE_BATCH];
    uint32_t run_of[OFFLOAD_COALESCE_BATCH];
    flow_slot_t flows[OFFLOAD_FLOW_TABLE];
} coalesce_t;

static uint32_t flow_hash(const uint8_t *pkt, const tcp_pkt_t *t)
{
    /* FNV-1a over addresses and ports; crafted collisions cost at most OFFLOAD_FLOW_PROBES compares */
    const uint8_t *a = t->family == 4 ? pkt + 12 : pkt + 8;
    size_t alen = t->family == 4 ? 8 : 32;
    uint32_t h = 2166136261u ^ (uint32_t)t->family;
    for (size_t i = 0; i < alen; i++) h = (h ^ a[i]) * 16777619u;
    for (size_t i = 0; i < 4; i++) h = (h ^ pkt[t->l4 + i]) * 16777619u;
    return h;
}

static int same_flow(const uint8_t *a, const tcp_pkt_t *ta, const uint8_t *b, const tcp_pkt_t *tb)
{
    if (ta->family != tb->family) return 0;
    int addr = ta->family == 4 ? memcmp(a + 12, b + 12, 8) : memcmp(a + 8, b + 8, 32);
    return addr == 0 && memcmp(a + ta->l4, b + tb->l4, 4) == 0;
}

/* The table slot of p's flow, or a free slot for it (run < 0), or NULL: none within the probes, so the
 * flow has no run here either (slots are never freed within a chunk: a flow's slot stays put). */
static flow_slot_t *flow_slot(coalesce_t *c, const uint8_t *p, const tcp_pkt_t *t, uint32_t hash)
{
    for (uint32_t k = 0; k < OFFLOAD_FLOW_PROBES; k++) {
        flow_slot_t *s = &c->flows[(hash + k) & (OFFLOAD_FLOW_TABLE - 1)];
        if (s->run < 0) return s;
        const run_t *r = &c->runs[s->run];
        if (s->hash == hash && same_flow(c->in + c->offs[r->first], &r->hdr, p, t)) return s;
    }
    return NULL;
}

/* May packet p (same flow, payload > 0, no TCP_NO_MERGE flag) follow run r? */
static int can_join(const coalesce_t *c, const run_t *r, const uint8_t *p, const tcp_pkt_t *t, size_t payload)
{
    const uint8_t *f = c->in + c->offs[r->first];
    const tcp_pkt_t *h = &r->hdr;
    if (r->closed || t->l4 != h->l4 || t->hdrs != h->hdrs || t->ext || payload > r->gso_size ||
        r->ip_len + payload > OFFLOAD_MAX_PACKET)
        return 0;
    if (t->family == 4) { /* all but total length (2-3), id (4-5) and checksum (10-11) */
        if (memcmp(f, p, 2) || memcmp(f + 6, p + 6, 4) || memcmp(f + 12, p + 12, t->l4 - 12)) return 0;
    } else { /* all but payload length (4-5) */
        if (memcmp(f, p, 4) || memcmp(f + 6, p + 6, IPV6_HDR - 6)) return 0;
    }
    const uint8_t *ft = f + h->l4, *pt = p + t->l4;
    if (be32(pt + 4) != r->next_seq || (pt[13] & TCP_FLAG_CWR)) return 0;
    /* ports, ack, data offset, flags but PSH and CWR, window; urgent pointer and options */
    uint8_t fmask = (uint8_t)~(TCP_FLAG_PSH | TCP_FLAG_CWR);
    if (memcmp(ft, pt, 4) || memcmp(ft + 8, pt + 8, 5) || (ft[13] & fmask) != (pt[13] & fmask) ||
        memcmp(ft + 14, pt + 14, 2) || memcmp(ft + 18, pt + 18, t->hdrs - t->l4 - 18))
        return 0;
    return 1;
}

static int valid_range(size_t in_len, uint32_t off, uint32_t len) { return len && off <= in_len && len <= in_len - off; }

/* Assign packets [0, m) of the chunk to runs; returns how many runs. */
static uint32_t plan_chunk(coalesce_t *c, size_t m)
{
    uint32_t n_runs = 0;
    for (size_t k = 0; k < OFFLOAD_FLOW_TABLE; k++) c->flows[k].run = -1;
    for (size_t i = 0; i < m; i++) {
        if (c->run_of[i] == OFFLOAD_NO_FRAME) continue; /* skipped */
        const uint8_t *p = c->in + c->offs[i];
        size_t len = c->lens[i];
        tcp_pkt_t t;
        int tcp = parse_tcp(p, len, &t) == OFFLOAD_OK;
        size_t payload = tcp ? t.total - t.hdrs : 0;
        int mergeable = tcp && t.total == len && !t.ext && payload > 0 && !(p[t.l4 + 13] & TCP_NO_MERGE);
        uint32_t hash = tcp ? flow_hash(p, &t) : 0;
        flow_slot_t *slot = tcp ? flow_slot(c, p, &t, hash) : NULL;
        if (slot && slot->run >= 0) {
            run_t *r = &c->runs[slot->run];
            if (mergeable && can_join(c, r, p, &t, payload)) {
                r->count++;
                r->ip_len += (uint32_t)payload;
                r->next_seq += (uint32_t)payload;
                r->psh = (p[t.l4 + 13] & TCP_FLAG_PSH) != 0;
                r->closed = r->psh || payload < r->gso_size;
                c->run_of[i] = (uint32_t)slot->run;
                continue;
            }
            r->closed = 1; /* the flow's run ends here: nothing of the flow may overtake p */
        }
        run_t *r = &c->runs[n_runs];
        memset(r, 0, sizeof(*r));
        r->first = (uint32_t)i;
        r->count = 1;
        r->ip_len = (uint32_t)len;
        r->closed = 1;
        c->run_of[i] = n_runs;
        if (mergeable && slot) {
            r->hdr = t;
            r->gso_size = (uint32_t)payload;
            r->next_seq = be32(p + t.l4 + 4) + (uint32_t)payload;
            r->psh = (p[t.l4 + 13] & TCP_FLAG_PSH) != 0;
            r->closed = r->psh;
            slot->run = (int32_t)n_runs;
            slot->hash = hash;
        }
        n_runs++;
    }
    return n_runs;
}

/* Headers of a merged frame at f (vnet header + packet), once every payload is in. */
static void finish_merged(uint8_t *f, const run_t *r, const uint8_t *first)
{
    const tcp_pkt_t *h = &r->hdr;
    uint8_t *ip = f + OFFLOAD_VNET_HDR_LEN, *tcp = ip + h->l4;
    vnet_t v = {VIRTIO_NET_HDR_F_NEEDS_CSUM,
                h->family == 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6,
                (uint16_t)h->hdrs, (uint16_t)r->gso_size, (uint16_t)h->l4, TCP_CSUM_OFFSET};
    if (first[h->l4 + 13] & TCP_FLAG_CWR) v.gso_type |= VIRTIO_NET_HDR_GSO_ECN; /* what the kernel's GRO does */
    vnet_write(f, &v);
    if (h->family == 4) {
        put16(ip + 2, (uint16_t)r->ip_len);
        ipv4_header_checksum(ip, h->l4);
    } else {
        put16(ip + 4, (uint16_t)(r->ip_len - IPV6_HDR));
    }
    tcp[13] = (uint8_t)((tcp[13] & ~TCP_FLAG_PSH) | (r->psh ? TCP_FLAG_PSH : 0));
    /* CHECKSUM_PARTIAL: the kernel (or the NIC) adds the segment sums to the pseudo-header sum */
    put16(tcp + TCP_CSUM_OFFSET, 0);
    store_native16(tcp + TCP_CSUM_OFFSET, csum_fold(pseudo_sum(ip, h->family, r->ip_len - h->l4)));
}

size_t offload_coalesce(const uint8_t *in, size_t in_len, const uint32_t *offs, const uint32_t *lens, size_t n,
                        uint8_t *out, size_t out_cap, uint32_t *frame_offs, uint32_t *frame_lens,
                        uint32_t *frame_of)
{
    size_t need = 0;
    for (size_t i = 0; i < n; i++)
        if (valid_range(in_len, offs[i], lens[i])) need += lens[i] + OFFLOAD_VNET_HDR_LEN;
    if (need > out_cap || need > UINT32_MAX) {
        if (frame_of)
            for (size_t i = 0; i < n; i++) frame_of[i] = OFFLOAD_NO_FRAME;
        return 0;
    }
    coalesce_t state; /* ~20 KB of stack: no allocation, no shared state */
    coalesce_t *c = &state;
    size_t n_frames = 0, pos = 0;
    for (size_t base = 0; base < n; base += OFFLOAD_COALESCE_BATCH) {
        size_t m = n - base < OFFLOAD_COALESCE_BATCH ? n - base : OFFLOAD_COALESCE_BATCH;
        c->in = in;
        c->offs = offs + base;
        c->lens = lens + base;
        for (size_t i = 0; i < m; i++)
            c->run_of[i] = valid_range(in_len, c->offs[i], c->lens[i]) ? 0 : OFFLOAD_NO_FRAME;
        uint32_t n_runs = plan_chunk(c, m);
        for (uint32_t k = 0; k < n_runs; k++) {
            run_t *r = &c->runs[k];
            r->out_off = (uint32_t)pos;
            frame_offs[n_frames + k] = (uint32_t)pos;
            frame_lens[n_frames + k] = (uint32_t)(OFFLOAD_VNET_HDR_LEN + r->ip_len);
            pos += OFFLOAD_VNET_HDR_LEN + r->ip_len;
        }
        for (size_t i = 0; i < m; i++) {
            uint32_t k = c->run_of[i];
            if (frame_of) frame_of[base + i] = k == OFFLOAD_NO_FRAME ? k : (uint32_t)(n_frames + k);
            if (k == OFFLOAD_NO_FRAME) continue;
            run_t *r = &c->runs[k];
            const uint8_t *p = in + c->offs[i];
            if (r->first == i) { /* a zero vnet header (finish_merged rewrites it), then the whole packet */
                memset(out + r->out_off, 0, OFFLOAD_VNET_HDR_LEN);
                memcpy(out + r->out_off + OFFLOAD_VNET_HDR_LEN, p, c->lens[i]);
                r->out_off += (uint32_t)(OFFLOAD_VNET_HDR_LEN + c->lens[i]);
            } else {
                size_t payload = c->lens[i] - r->hdr.hdrs;
                memcpy(out + r->out_off, p + r->hdr.hdrs, payload);
                r->out_off += (uint32_t)payload;
            }
        }
        for (uint32_t k = 0; k < n_runs; k++)
            if (c->runs[k].count > 1)
                finish_merged(out + frame_offs[n_frames + k], &c->runs[k], in + c->offs[c->runs[k].first]);
        n_frames += n_runs;
    }
    return n_frames;
}
