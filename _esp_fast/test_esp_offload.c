/* Tests of esp_offload.c, run under -fsanitize=address,undefined by scripts/test-esp-core.sh.
 * Real IPv4/IPv6 TCP packets (IPv4 options, an IPv6 hop-by-hop header, TCP timestamps) are built here,
 * checksummed with a plain byte-pair reference sum (the library sums in host order), split, coalesced
 * and compared byte for byte. `test_esp_offload --write-corpus DIR` writes the seeds of fuzz_offload.c. */
#define _DEFAULT_SOURCE
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esp_offload.h"
#include "test_check.h"
#include "test_bytes.h"

#define VNET OFFLOAD_VNET_HDR_LEN
#define TCP_HDR 32          /* 20 + NOP NOP timestamps */
#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04
#define F_PSH 0x08
#define F_ACK 0x10
#define F_URG 0x20
#define F_CWR 0x80
#define BIG_PAYLOAD 64000
#define BIG_GSO 1400
#define BIG_SEGS 46         /* 45 * 1400 + 1000 */
#define MAX_SEGS 512
#define BATCH_BUF (1 << 20)

/* ---- checksums over the reference sum of test_bytes.h ---- */

static uint32_t ref_pseudo(const uint8_t *ip, size_t l4_len)
{
    uint32_t acc = (ip[0] >> 4) == 4 ? ref_sum(ip + 12, 8, 0) : ref_sum(ip + 8, 32, 0);
    return acc + 6 + (uint32_t)l4_len;
}

static int tcp_csum_ok(const uint8_t *ip, size_t l4, size_t total)
{
    return ref_fold(ref_sum(ip + l4, total - l4, ref_pseudo(ip, total - l4))) == 0xffff;
}

static int ipv4_csum_ok(const uint8_t *ip) { return ref_fold(ref_sum(ip, (size_t)(ip[0] & 15) * 4, 0)) == 0xffff; }

/* ---- packets ---- */

typedef struct {
    int family;
    int ip_ext;     /* IPv4: 4 bytes of options; IPv6: an 8-byte hop-by-hop header */
    size_t payload;
    uint32_t seq;
    uint8_t flags;
    uint16_t id;
    uint8_t ttl;
    uint16_t window;
    uint16_t sport;
    uint32_t ts;
    int partial;    /* TCP checksum field: the folded pseudo-header sum only (CHECKSUM_PARTIAL) */
} spec_t;

static spec_t spec(int family, size_t payload, uint32_t seq, uint8_t flags)
{
    spec_t s = {family, 0, payload, seq, flags | F_ACK, 0x1234, 64, 512, 40000, 0x01020304, 0};
    return s;
}

/* Payload bytes follow the sequence number: any piece can be checked on its own. */
static uint8_t pattern(uint32_t seq) { return (uint8_t)(seq * 131u + (seq >> 9) + 7); }

static size_t l4_of(const spec_t *s) { return s->family == 4 ? 20 + (s->ip_ext ? 4 : 0) : 40 + (s->ip_ext ? 8 : 0); }

static size_t build(const spec_t *s, uint8_t *p)
{
    size_t l4 = l4_of(s), total = l4 + TCP_HDR + s->payload;
    memset(p, 0, l4 + TCP_HDR);
    if (s->family == 4) {
        p[0] = (uint8_t)(0x40 | l4 / 4);
        put16(p + 2, (uint16_t)total);
        put16(p + 4, s->id);
        put16(p + 6, 0x4000); /* DF */
        p[8] = s->ttl;
        p[9] = 6;
        memcpy(p + 12, "\x0a\x01\x00\x01\x0a\x02\x00\x01", 8);
        if (s->ip_ext) memcpy(p + 20, "\x01\x01\x01\x00", 4); /* NOP NOP NOP EOL */
    } else {
        memcpy(p, "\x60\x0a\xbc\xde", 4); /* traffic class and flow label */
        put16(p + 4, (uint16_t)(total - 40));
        p[6] = s->ip_ext ? 0 : 6;
        p[7] = s->ttl;
        memcpy(p + 8, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
        memcpy(p + 24, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x02", 16);
        if (s->ip_ext) memcpy(p + 40, "\x06\x00\x01\x04\x00\x00\x00\x00", 8); /* hop-by-hop: PadN */
    }
    uint8_t *t = p + l4;
    put16(t, s->sport);
    put16(t + 2, 443);
    put32(t + 4, s->seq);
    put32(t + 8, 0xabcdef01);
    t[12] = (TCP_HDR / 4) << 4;
    t[13] = s->flags;
    put16(t + 14, s->window);
    memcpy(t + 20, "\x01\x01\x08\x0a", 4);
    put32(t + 24, s->ts);
    put32(t + 28, 0x0badcafe);
    for (size_t k = 0; k < s->payload; k++) t[TCP_HDR + k] = pattern(s->seq + (uint32_t)k);
    if (s->family == 4) put16(p + 10, (uint16_t)~ref_fold(ref_sum(p, l4, 0)));
    uint32_t pseudo = ref_pseudo(p, total - l4);
    put16(t + 16, s->partial ? ref_fold(pseudo) : (uint16_t)~ref_fold(ref_sum(t, total - l4, pseudo)));
    return total;
}

static void put_vnet(uint8_t *f, uint8_t flags, uint8_t gso_type, uint16_t hdr_len, uint16_t gso_size,
                     uint16_t csum_start, uint16_t csum_offset)
{
    struct virtio_net_hdr h = {flags, gso_type, htole16(hdr_len), htole16(gso_size), htole16(csum_start),
                               htole16(csum_offset)};
    memcpy(f, &h, sizeof(h));
}

static void get_vnet(const uint8_t *f, struct virtio_net_hdr *h)
{
    memcpy(h, f, sizeof(*h));
    h->hdr_len = le16toh(h->hdr_len);
    h->gso_size = le16toh(h->gso_size);
    h->csum_start = le16toh(h->csum_start);
    h->csum_offset = le16toh(h->csum_offset);
}

/* A TSO frame as the kernel hands it out: partial checksum, NEEDS_CSUM, the real header length. */
static size_t build_tso(spec_t s, uint16_t gso_size, uint8_t *f)
{
    s.partial = 1;
    size_t n = build(&s, f + VNET);
    uint8_t type = s.family == 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6;
    if (s.flags & F_CWR) type |= VIRTIO_NET_HDR_GSO_ECN;
    put_vnet(f, VIRTIO_NET_HDR_F_NEEDS_CSUM, type, (uint16_t)(l4_of(&s) + TCP_HDR), gso_size, (uint16_t)l4_of(&s), 16);
    return VNET + n;
}

static uint8_t *copy_exact(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1); /* exactly sized: ASan catches any read past it */
    if (n) memcpy(c, p, n);
    return c;
}

static size_t split_n(const uint8_t *f, size_t len, uint8_t *out, size_t cap, uint32_t *offs, uint32_t *lens,
                      size_t max_segs, int *rc)
{
    size_t n = 99;
    uint8_t *c = copy_exact(f, len);
    *rc = offload_split(c, len, out, cap, offs, lens, max_segs, &n);
    free(c);
    return n;
}

/* Segment i of n cut from the packet `orig` (of spec s) with gso_size: every field the brief names. */
static void check_segment(const uint8_t *seg, size_t len, const spec_t *s, const uint8_t *orig, size_t i, size_t n,
                          size_t gso)
{
    size_t l4 = l4_of(s), hdrs = l4 + TCP_HDR, from = i * gso;
    size_t chunk = s->payload - from < gso ? s->payload - from : gso;
    CHECK(len == hdrs + chunk);
    if (len != hdrs + chunk) return;
    if (s->family == 4) {
        CHECK(be16(seg + 2) == len);
        CHECK(be16(seg + 4) == (uint16_t)(s->id + i));
        CHECK(ipv4_csum_ok(seg));
        CHECK(memcmp(seg, orig, 2) == 0 && memcmp(seg + 6, orig + 6, 4) == 0 && memcmp(seg + 12, orig + 12, l4 - 12) == 0);
    } else {
        CHECK(be16(seg + 4) == len - 40);
        CHECK(memcmp(seg, orig, 4) == 0 && memcmp(seg + 6, orig + 6, l4 - 6) == 0);
    }
    const uint8_t *t = seg + l4, *ot = orig + l4;
    CHECK(be32(t + 4) == s->seq + (uint32_t)from);
    uint8_t flags = s->flags;
    if (i + 1 < n) flags &= (uint8_t)~(F_FIN | F_PSH);
    if (i > 0) flags &= (uint8_t)~F_CWR;
    CHECK(t[13] == flags);
    CHECK(memcmp(t, ot, 4) == 0 && memcmp(t + 8, ot + 8, 5) == 0 && memcmp(t + 14, ot + 14, 2) == 0 &&
          memcmp(t + 18, ot + 18, TCP_HDR - 18) == 0);
    CHECK(tcp_csum_ok(seg, l4, len));
    int pay_ok = 1;
    for (size_t k = 0; k < chunk; k++) pay_ok &= t[TCP_HDR + k] == pattern(s->seq + (uint32_t)(from + k));
    CHECK(pay_ok);
}

static void check_split(const spec_t *s, uint16_t gso, size_t expect_segs)
{
    static uint8_t frame[OFFLOAD_MAX_FRAME], out[OFFLOAD_SPLIT_OUT_CAP(MAX_SEGS)];
    uint32_t offs[MAX_SEGS], lens[MAX_SEGS];
    size_t flen = build_tso(*s, gso, frame);
    int rc;
    size_t n = split_n(frame, flen, out, sizeof(out), offs, lens, MAX_SEGS, &rc);
    CHECK(rc == OFFLOAD_OK && n == expect_segs);
    if (rc != OFFLOAD_OK) return;
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(offs[i] == pos); /* back to back */
        check_segment(out + offs[i], lens[i], s, frame + VNET, i, n, gso);
        pos += lens[i];
    }
}

static void test_split_tso(void)
{
    spec_t s = spec(4, BIG_PAYLOAD, 0xfffff000u, F_PSH | F_FIN | F_CWR); /* the sequence number wraps */
    s.ip_ext = 1;
    s.id = 0xfff0; /* and so does the id */
    check_split(&s, BIG_GSO, BIG_SEGS);
    s.ip_ext = 0;
    s.payload = BIG_GSO * 3; /* exact multiple: no short last */
    check_split(&s, BIG_GSO, 3);
    s.payload = 1401; /* odd lengths: the checksum's padded last byte */
    check_split(&s, 700, 3);
    s.payload = 0; /* a super-packet without payload: one segment */
    check_split(&s, BIG_GSO, 1);

    spec_t v6 = spec(6, 10000, 77, F_PSH);
    v6.ip_ext = 1;
    check_split(&v6, 1220, 9);
    v6.ip_ext = 0;
    v6.payload = BIG_PAYLOAD;
    check_split(&v6, BIG_GSO, BIG_SEGS);
    v6.payload = 999;
    check_split(&v6, 100, 10);
}

static void test_split_none(void)
{
    uint8_t frame[4096], full[4096], out[4096];
    uint32_t offs[4], lens[4];
    int rc;
    for (int fam = 4; fam <= 6; fam += 2)
        for (size_t pay = 0; pay < 4; pay++) {
            spec_t s = spec(fam, 1000 + pay, 5, F_PSH);
            size_t len = build(&s, full);
            /* no flags: the packet as it is */
            memcpy(frame + VNET, full, len);
            put_vnet(frame, 0, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 0, 0);
            size_t n = split_n(frame, VNET + len, out, sizeof(out), offs, lens, 4, &rc);
            CHECK(rc == OFFLOAD_OK && n == 1 && offs[0] == 0 && lens[0] == len && memcmp(out, full, len) == 0);
            /* NEEDS_CSUM: the partial checksum completed into exactly the full one */
            s.partial = 1;
            build(&s, frame + VNET);
            put_vnet(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, (uint16_t)l4_of(&s), 16);
            n = split_n(frame, VNET + len, out, sizeof(out), offs, lens, 4, &rc);
            CHECK(rc == OFFLOAD_OK && n == 1 && lens[0] == len && memcmp(out, full, len) == 0);
            /* trailing bytes after the IP length are not summed, and cut */
            memset(frame + VNET + len, 0xee, 3);
            n = split_n(frame, VNET + len + 3, out, sizeof(out), offs, lens, 4, &rc);
            CHECK(rc == OFFLOAD_OK && n == 1 && lens[0] == len && memcmp(out, full, len) == 0);
        }
    /* not even IP, no NEEDS_CSUM: passed on as it is (the forwarder's parser drops it) */
    memset(frame, 0, VNET);
    memcpy(frame + VNET, "\x00\x01\x02", 3);
    size_t n = split_n(frame, VNET + 3, out, sizeof(out), offs, lens, 4, &rc);
    CHECK(rc == OFFLOAD_OK && n == 1 && lens[0] == 3 && memcmp(out, "\x00\x01\x02", 3) == 0);
    n = split_n(frame, VNET, out, sizeof(out), offs, lens, 4, &rc); /* an empty packet too */
    CHECK(rc == OFFLOAD_OK && n == 1 && lens[0] == 0);
}

static void test_split_errors(void)
{
    static uint8_t frame[OFFLOAD_MAX_FRAME], out[OFFLOAD_SPLIT_OUT_CAP(MAX_SEGS)];
    uint32_t offs[MAX_SEGS], lens[MAX_SEGS];
    int rc;
    size_t n;
    spec_t s = spec(4, BIG_PAYLOAD, 1000, F_PSH);
    size_t flen = build_tso(s, BIG_GSO, frame), hdrs = 20 + TCP_HDR, total = flen - VNET;
#define SPLIT(len, cap, max) split_n(frame, (len), out, (cap), offs, lens, (max), &rc)
#define EXPECT_ERR(code) CHECK(rc == (code) && n == 0)

    for (size_t len = 0; len < VNET; len++) { /* truncated vnet header */
        n = SPLIT(len, sizeof(out), MAX_SEGS);
        EXPECT_ERR(OFFLOAD_ERR_TRUNCATED);
    }
    n = SPLIT(flen - 1, sizeof(out), MAX_SEGS); /* IP length past the bytes read */
    EXPECT_ERR(OFFLOAD_ERR_TRUNCATED);

    put_vnet(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, (uint16_t)(total + 1), BIG_GSO, 20, 16);
    n = SPLIT(flen, sizeof(out), MAX_SEGS); /* hdr_len beyond the packet */
    EXPECT_ERR(OFFLOAD_ERR_HEADER);
    put_vnet(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 0, BIG_GSO, 20, 16);
    n = SPLIT(flen, sizeof(out), MAX_SEGS); /* hdr_len short of the headers: only a hint, the parse decides */
    CHECK(rc == OFFLOAD_OK && n == BIG_SEGS && lens[0] == hdrs + BIG_GSO);
    put_vnet(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, (uint16_t)total, BIG_GSO, 20, 16);
    n = SPLIT(flen, sizeof(out), MAX_SEGS); /* the kernel's head length: fine too */
    CHECK(rc == OFFLOAD_OK && n == BIG_SEGS && lens[0] == hdrs + BIG_GSO);

    const uint16_t bad_csum[][2] = {{24, 16}, {20, 6}, {0, 16}, {(uint16_t)total, 16}};
    for (size_t i = 0; i < sizeof(bad_csum) / sizeof(bad_csum[0]); i++) { /* GSO: not at the TCP checksum */
        put_vnet(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, (uint16_t)hdrs, BIG_GSO,
                 bad_csum[i][0], bad_csum[i][1]);
        n = SPLIT(flen, sizeof(out), MAX_SEGS);
        EXPECT_ERR(OFFLOAD_ERR_HEADER);
    }
    /* GSO without NEEDS_CSUM: the offsets are ignored, the checksums computed anyway */
    put_vnet(frame, 0, VIRTIO_NET_HDR_GSO_TCPV4, (uint16_t)hdrs, BIG_GSO, 999, 999);
    n = SPLIT(flen, sizeof(out), MAX_SEGS);
    CHECK(rc == OFFLOAD_OK && n == BIG_SEGS && tcp_csum_ok(out, 20, lens[0]));

    const uint16_t gso_bad[] = {0, (uint16_t)(OFFLOAD_MAX_PACKET - hdrs + 1), 0xffff};
    for (size_t i = 0; i < sizeof(gso_bad) / sizeof(gso_bad[0]); i++) {
        put_vnet(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, (uint16_t)hdrs, gso_bad[i], 20, 16);
        n = SPLIT(flen, sizeof(out), MAX_SEGS);
        EXPECT_ERR(OFFLOAD_ERR_GSO_SIZE);
    }
    put_vnet(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, (uint16_t)hdrs,
             (uint16_t)(OFFLOAD_MAX_PACKET - hdrs), 20, 16);
    n = SPLIT(flen, sizeof(out), MAX_SEGS); /* the largest gso_size: the payload fits one segment */
    CHECK(rc == OFFLOAD_OK && n == 1 && lens[0] == total && tcp_csum_ok(out, 20, total));

    put_vnet(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, (uint16_t)hdrs, BIG_GSO, 20, 16);
    n = SPLIT(flen, sizeof(out), BIG_SEGS - 1); /* too many segments */
    EXPECT_ERR(OFFLOAD_ERR_TOO_MANY);
    n = SPLIT(flen, sizeof(out), BIG_SEGS);
    CHECK(rc == OFFLOAD_OK && n == BIG_SEGS);
    size_t need = BIG_SEGS * hdrs + BIG_PAYLOAD;
    n = SPLIT(flen, need - 1, MAX_SEGS); /* out too small */
    EXPECT_ERR(OFFLOAD_ERR_SPACE);
    uint8_t *exact = malloc(need); /* exactly enough: ASan sees any write past it */
    uint8_t *c = copy_exact(frame, flen);
    CHECK(offload_split(c, flen, exact, need, offs, lens, MAX_SEGS, &n) == OFFLOAD_OK && n == BIG_SEGS);
    free(c);
    free(exact);

    const uint8_t unsupported[] = {VIRTIO_NET_HDR_GSO_UDP, 5 /* UDP_L4 */, 2, 0x7f, VIRTIO_NET_HDR_GSO_ECN | 3};
    for (size_t i = 0; i < sizeof(unsupported); i++) {
        put_vnet(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, unsupported[i], (uint16_t)hdrs, BIG_GSO, 20, 16);
        n = SPLIT(flen, sizeof(out), MAX_SEGS);
        EXPECT_ERR(OFFLOAD_ERR_UNSUPPORTED);
    }
    put_vnet(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, (uint16_t)hdrs, BIG_GSO, 20, 16);
    n = SPLIT(flen, sizeof(out), MAX_SEGS); /* IPv4 packet, IPv6 gso_type */
    EXPECT_ERR(OFFLOAD_ERR_HEADER);

    /* NONE with NEEDS_CSUM: the field must lie inside the packet's upper layer */
    const uint16_t none_bad[][2] = {{(uint16_t)total, 0}, {(uint16_t)(total - 1), 0}, {(uint16_t)(total - 16), 16},
                                    {20, 17}, {10, 0}, {0xffff, 0xffff}};
    for (size_t i = 0; i < sizeof(none_bad) / sizeof(none_bad[0]); i++) {
        put_vnet(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, none_bad[i][0], none_bad[i][1]);
        n = SPLIT(flen, sizeof(out), MAX_SEGS);
        EXPECT_ERR(OFFLOAD_ERR_HEADER);
    }
    put_vnet(frame, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, (uint16_t)(total - 2), 0);
    n = SPLIT(flen, sizeof(out), MAX_SEGS); /* the very last two bytes: allowed */
    CHECK(rc == OFFLOAD_OK && n == 1);
    n = SPLIT(flen, total - 1, MAX_SEGS);
    EXPECT_ERR(OFFLOAD_ERR_SPACE);
    n = SPLIT(flen, sizeof(out), 0);
    EXPECT_ERR(OFFLOAD_ERR_TOO_MANY);
    n = SPLIT(flen - 1, sizeof(out), MAX_SEGS); /* NEEDS_CSUM needs the whole IP packet */
    EXPECT_ERR(OFFLOAD_ERR_TRUNCATED);

    /* Headers that lie: each mutation of a small TSO frame (62-byte packet), then restored. */
    s.payload = 10;
    flen = build_tso(s, 40, frame);
    uint8_t *ip = frame + VNET;
    struct { size_t at; uint8_t val; int code; } lies[] = {
        {0, 0x44, OFFLOAD_ERR_HEADER},            /* IHL 4 */
        {0, 0x4f, OFFLOAD_ERR_TRUNCATED},         /* IHL 15: the TCP header would end past the packet */
        {0, 0x55, OFFLOAD_ERR_HEADER},            /* IP version 5 */
        {2, 0x00, OFFLOAD_ERR_HEADER},            /* total length below IHL (high byte 0, low byte kept) */
        {6, 0x60, OFFLOAD_ERR_HEADER},            /* DF + MF: a fragment */
        {7, 0x01, OFFLOAD_ERR_HEADER},            /* fragment offset */
        {9, 17, OFFLOAD_ERR_HEADER},              /* UDP */
        {20 + 12, 0x40, OFFLOAD_ERR_HEADER},      /* TCP data offset 4 */
        {20 + 12, 0xf0, OFFLOAD_ERR_TRUNCATED},   /* data offset 15: 60 bytes of TCP header past the packet */
    };
    for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
        uint8_t keep = ip[lies[i].at];
        ip[lies[i].at] = lies[i].at == 2 ? 0 : lies[i].val;
        if (lies[i].at == 2) ip[3] = 19;
        n = SPLIT(flen, sizeof(out), MAX_SEGS);
        CHECK(rc == lies[i].code && n == 0);
        if (rc != lies[i].code) fprintf(stderr, "  lie %zu: got %d\n", i, rc);
        ip[lies[i].at] = keep;
        if (lies[i].at == 2) ip[3] = (uint8_t)(flen - VNET);
    }
    n = SPLIT(flen, sizeof(out), MAX_SEGS);
    CHECK(rc == OFFLOAD_OK && n == 1); /* restored: 10 bytes, gso 40 */

    /* IPv6: fragment header, unknown next header, an extension header past the end, a jumbogram */
    spec_t v6 = spec(6, 100, 1, 0);
    v6.ip_ext = 1;
    flen = build_tso(v6, 40, frame);
    n = SPLIT(flen, sizeof(out), MAX_SEGS);
    CHECK(rc == OFFLOAD_OK && n == 3);
    const uint8_t v6_nh[] = {44, 17, 59};
    for (size_t i = 0; i < sizeof(v6_nh); i++) {
        ip[6] = v6_nh[i];
        n = SPLIT(flen, sizeof(out), MAX_SEGS);
        EXPECT_ERR(OFFLOAD_ERR_HEADER);
    }
    ip[6] = 0;
    ip[41] = 200; /* hop-by-hop of 1608 bytes */
    n = SPLIT(flen, sizeof(out), MAX_SEGS);
    EXPECT_ERR(OFFLOAD_ERR_TRUNCATED);
    ip[41] = 0;
    ip[40] = 0; /* hop-by-hop after hop-by-hop ... past OFFLOAD_MAX_EXT_HEADERS or past the end */
    n = SPLIT(flen, sizeof(out), MAX_SEGS);
    CHECK(rc == OFFLOAD_ERR_HEADER || rc == OFFLOAD_ERR_TRUNCATED);
    ip[40] = 6;
    put16(ip + 4, 0); /* payload length 0 with hop-by-hop: a jumbogram */
    n = SPLIT(flen, sizeof(out), MAX_SEGS);
    EXPECT_ERR(OFFLOAD_ERR_HEADER);
    put16(ip + 4, (uint16_t)(flen - VNET - 40));
    /* eight extension headers are walked, a ninth is not */
    {
        uint8_t many[VNET + 40 + 9 * 8 + TCP_HDR];
        spec_t m = spec(6, 0, 1, 0);
        for (int k = 8; k <= 9; k++) {
            size_t l4 = 40 + (size_t)k * 8, len = l4 + 20;
            memset(many, 0, sizeof(many));
            uint8_t *p = many + VNET;
            build(&m, p); /* the addresses; the rest rewritten below */
            p[6] = 60;
            put16(p + 4, (uint16_t)(len - 40));
            for (int e = 0; e < k; e++) {
                memset(p + 40 + e * 8, 0, 8);
                p[40 + e * 8] = e + 1 < k ? 60 : 6;
            }
            memset(p + l4, 0, 20);
            p[l4 + 12] = 0x50;
            put_vnet(many, 0, VIRTIO_NET_HDR_GSO_TCPV6, 0, 100, 0, 0);
            uint8_t *cm = copy_exact(many, VNET + len);
            rc = offload_split(cm, VNET + len, out, sizeof(out), offs, lens, MAX_SEGS, &n);
            free(cm);
            CHECK(k == 8 ? rc == OFFLOAD_OK && n == 1 && lens[0] == len : rc == OFFLOAD_ERR_HEADER);
        }
    }

    /* Every truncation of a TSO frame is refused, never read past (exact-size copies). */
    s.payload = 3000;
    flen = build_tso(s, BIG_GSO, frame);
    int all_trunc = 1;
    for (size_t len = 0; len < flen; len++) {
        n = SPLIT(len, sizeof(out), MAX_SEGS);
        all_trunc &= rc == OFFLOAD_ERR_TRUNCATED && n == 0;
    }
    CHECK(all_trunc);
    v6.ip_ext = 1;
    v6.payload = 3000;
    flen = build_tso(v6, BIG_GSO, frame);
    all_trunc = 1;
    for (size_t len = 0; len < flen; len++) {
        n = SPLIT(len, sizeof(out), MAX_SEGS);
        all_trunc &= rc == OFFLOAD_ERR_TRUNCATED && n == 0;
    }
    CHECK(all_trunc);
#undef SPLIT
#undef EXPECT_ERR
}

/* ---- coalescing ---- */

typedef struct {
    uint8_t *buf;
    size_t used, n;
    uint32_t offs[MAX_SEGS * 2], lens[MAX_SEGS * 2];
    uint8_t *out;
    size_t n_frames;
    uint32_t frame_offs[MAX_SEGS * 2], frame_lens[MAX_SEGS * 2], frame_of[MAX_SEGS * 2];
} batch_t;

static batch_t *batch_new(void)
{
    batch_t *b = calloc(1, sizeof(*b));
    b->buf = malloc(BATCH_BUF);
    b->out = malloc(BATCH_BUF + MAX_SEGS * 2 * VNET);
    return b;
}

static void batch_free(batch_t *b)
{
    free(b->buf);
    free(b->out);
    free(b);
}

static void add_bytes(batch_t *b, const uint8_t *p, size_t len)
{
    memcpy(b->buf + b->used, p, len);
    b->offs[b->n] = (uint32_t)b->used;
    b->lens[b->n++] = (uint32_t)len;
    b->used += len + 3; /* odd gaps: packets at any alignment */
}

static void add(batch_t *b, const spec_t *s)
{
    b->offs[b->n] = (uint32_t)b->used;
    b->lens[b->n] = (uint32_t)build(s, b->buf + b->used);
    b->used += b->lens[b->n++] + 1;
}

static void coalesce(batch_t *b)
{
    size_t bytes = 0;
    for (size_t i = 0; i < b->n; i++) bytes += b->lens[i];
    b->n_frames = offload_coalesce(b->buf, b->used, b->offs, b->lens, b->n, b->out,
                                   OFFLOAD_COALESCE_OUT_CAP(bytes, b->n), b->frame_offs, b->frame_lens, b->frame_of);
}

static const uint8_t *frame(const batch_t *b, size_t j) { return b->out + b->frame_offs[j]; }

/* Frame j is packet i passed through: zero vnet header, the bytes untouched. */
static int passed(const batch_t *b, size_t j, size_t i)
{
    static const uint8_t zero[VNET];
    return j < b->n_frames && b->frame_of[i] == j && b->frame_lens[j] == VNET + b->lens[i] &&
           memcmp(frame(b, j), zero, VNET) == 0 && memcmp(frame(b, j) + VNET, b->buf + b->offs[i], b->lens[i]) == 0;
}

/* Frame j is the merge of the packets of specs s[0..k): exactly the TSO frame of one spec with all of
 * their payload (they follow each other by construction). */
static int merged(const batch_t *b, size_t j, const spec_t *first, size_t total_payload, uint8_t last_flags)
{
    static uint8_t expect[OFFLOAD_MAX_FRAME];
    spec_t s = *first;
    s.payload = total_payload;
    s.flags = (uint8_t)((first->flags & ~F_PSH) | (last_flags & F_PSH));
    size_t n = build_tso(s, (uint16_t)first->payload, expect);
    return j < b->n_frames && b->frame_lens[j] == n && memcmp(frame(b, j), expect, n) == 0;
}

static void test_round_trip(void)
{
    static uint8_t sframe[OFFLOAD_MAX_FRAME], segs[OFFLOAD_SPLIT_OUT_CAP(MAX_SEGS)];
    uint32_t offs[MAX_SEGS], lens[MAX_SEGS];
    for (int fam = 4; fam <= 6; fam += 2)
        for (int fin = 0; fin <= 1; fin++) {
            spec_t s = spec(fam, BIG_PAYLOAD, 0x7ffffff0u, F_PSH | F_CWR | (fin ? F_FIN : 0));
            s.ip_ext = fam == 4; /* IPv4 options merge, IPv6 extension headers do not (below) */
            size_t flen = build_tso(s, BIG_GSO, sframe);
            int rc;
            size_t n = split_n(sframe, flen, segs, sizeof(segs), offs, lens, MAX_SEGS, &rc);
            CHECK(rc == OFFLOAD_OK && n == BIG_SEGS);
            batch_t *b = batch_new();
            for (size_t i = 0; i < n; i++) add_bytes(b, segs + offs[i], lens[i]);
            coalesce(b);
            if (!fin) { /* the original frame again, byte for byte: vnet header, ids and checksums included */
                CHECK(b->n_frames == 1 && b->frame_lens[0] == flen && memcmp(b->out, sframe, flen) == 0);
                struct virtio_net_hdr h;
                get_vnet(b->out, &h);
                uint16_t l4 = (uint16_t)l4_of(&s);
                CHECK(h.flags == VIRTIO_NET_HDR_F_NEEDS_CSUM && h.gso_size == BIG_GSO && h.hdr_len == l4 + TCP_HDR &&
                      h.csum_start == l4 && h.csum_offset == 16 &&
                      h.gso_type == ((fam == 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6) |
                                     VIRTIO_NET_HDR_GSO_ECN));
            } else { /* FIN never merges: everything before it, then the FIN segment alone */
                spec_t head = s;
                head.flags &= (uint8_t)~F_FIN;
                head.payload = BIG_GSO;
                CHECK(b->n_frames == 2 && merged(b, 0, &head, (BIG_SEGS - 1) * BIG_GSO, F_ACK) &&
                      passed(b, 1, BIG_SEGS - 1));
            }
            for (size_t i = 0; i < n; i++) CHECK(b->frame_of[i] == (fin && i == n - 1 ? 1u : 0u));
            batch_free(b);
        }
    /* IPv6 with an extension header: split fine, passed through one by one */
    spec_t s = spec(6, 5000, 1, 0);
    s.ip_ext = 1;
    size_t flen = build_tso(s, BIG_GSO, sframe);
    int rc;
    size_t n = split_n(sframe, flen, segs, sizeof(segs), offs, lens, MAX_SEGS, &rc);
    CHECK(rc == OFFLOAD_OK && n == 4);
    batch_t *b = batch_new();
    for (size_t i = 0; i < n; i++) add_bytes(b, segs + offs[i], lens[i]);
    coalesce(b);
    CHECK(b->n_frames == 4);
    for (size_t i = 0; i < n; i++) CHECK(passed(b, i, i));
    batch_free(b);
}

/* A flow of k segments of `size` bytes from seq, optionally flag bits on segment `at`. */
static void flow(spec_t *out, size_t k, int family, uint16_t sport, uint32_t seq, size_t size)
{
    for (size_t i = 0; i < k; i++) {
        out[i] = spec(family, size, seq + (uint32_t)(i * size), 0);
        out[i].sport = sport;
        out[i].id = (uint16_t)(7 * i + 3); /* ids need not follow each other */
    }
}

static void test_coalesce(void)
{
    spec_t a[64], c[64];
    batch_t *b;

    /* four in order: one frame, as the TSO frame of their sum */
    b = batch_new();
    flow(a, 4, 4, 1000, 1, BIG_GSO);
    for (int i = 0; i < 4; i++) add(b, &a[i]);
    coalesce(b);
    CHECK(b->n_frames == 1 && merged(b, 0, &a[0], 4 * BIG_GSO, 0));
    batch_free(b);

    /* IPv6 as well, PSH on the last carried over */
    b = batch_new();
    flow(a, 3, 6, 1000, 1, 1200);
    a[2].flags |= F_PSH;
    for (int i = 0; i < 3; i++) add(b, &a[i]);
    coalesce(b);
    CHECK(b->n_frames == 1 && merged(b, 0, &a[0], 3 * 1200, F_PSH));
    batch_free(b);

    /* reordered: nothing merges, the order stays */
    b = batch_new();
    flow(a, 4, 4, 1000, 1, BIG_GSO);
    const int order[] = {0, 2, 1, 3};
    for (int i = 0; i < 4; i++) add(b, &a[order[i]]);
    coalesce(b);
    CHECK(b->n_frames == 4);
    for (size_t i = 0; i < 4; i++) CHECK(passed(b, i, i));
    batch_free(b);

    /* two flows interleaved: each merged on its own, frames in the order of their first packet */
    b = batch_new();
    flow(a, 3, 4, 1000, 1, BIG_GSO);
    flow(c, 3, 4, 2000, 500, BIG_GSO);
    for (int i = 0; i < 3; i++) {
        add(b, &a[i]);
        add(b, &c[i]);
    }
    coalesce(b);
    CHECK(b->n_frames == 2 && merged(b, 0, &a[0], 3 * BIG_GSO, 0) && merged(b, 1, &c[0], 3 * BIG_GSO, 0));
    for (size_t i = 0; i < 6; i++) CHECK(b->frame_of[i] == i % 2);
    batch_free(b);

    /* SYN / FIN / RST / URG in the middle: passed through, ending the run before it */
    const uint8_t stoppers[] = {F_SYN, F_FIN, F_RST, F_URG};
    for (size_t k = 0; k < sizeof(stoppers); k++) {
        b = batch_new();
        flow(a, 5, 4, 1000, 1, BIG_GSO);
        a[2].flags |= stoppers[k];
        for (int i = 0; i < 5; i++) add(b, &a[i]);
        coalesce(b);
        CHECK(b->n_frames == 3 && merged(b, 0, &a[0], 2 * BIG_GSO, 0) && passed(b, 1, 2) &&
              merged(b, 2, &a[3], 2 * BIG_GSO, 0));
        batch_free(b);
    }

    /* a short segment in the middle ends the run; a longer one after a short first never joins */
    b = batch_new();
    flow(a, 3, 4, 1000, 1, BIG_GSO);
    a[1].payload = 700;
    a[2].seq = a[1].seq + 700;
    for (int i = 0; i < 3; i++) add(b, &a[i]);
    coalesce(b);
    CHECK(b->n_frames == 2 && merged(b, 0, &a[0], BIG_GSO + 700, 0) && passed(b, 1, 2));
    batch_free(b);
    b = batch_new();
    flow(a, 2, 4, 1000, 1, 700);
    a[1].payload = BIG_GSO;
    for (int i = 0; i < 2; i++) add(b, &a[i]);
    coalesce(b);
    CHECK(b->n_frames == 2 && passed(b, 0, 0) && passed(b, 1, 1));
    batch_free(b);

    /* PSH in the middle ends the run with it */
    b = batch_new();
    flow(a, 3, 4, 1000, 1, BIG_GSO);
    a[1].flags |= F_PSH;
    for (int i = 0; i < 3; i++) add(b, &a[i]);
    coalesce(b);
    CHECK(b->n_frames == 2 && merged(b, 0, &a[0], 2 * BIG_GSO, F_PSH) && passed(b, 1, 2));
    batch_free(b);

    /* CWR: on the first it merges (and sets the ECN gso bit), on a later one it refuses */
    b = batch_new();
    flow(a, 3, 4, 1000, 1, BIG_GSO);
    a[0].flags |= F_CWR;
    for (int i = 0; i < 3; i++) add(b, &a[i]);
    coalesce(b);
    CHECK(b->n_frames == 1 && merged(b, 0, &a[0], 3 * BIG_GSO, 0));
    batch_free(b);
    b = batch_new();
    flow(a, 3, 4, 1000, 1, BIG_GSO);
    a[1].flags |= F_CWR;
    for (int i = 0; i < 3; i++) add(b, &a[i]);
    coalesce(b);
    CHECK(b->n_frames == 2 && passed(b, 0, 0) && merged(b, 1, &a[1], 2 * BIG_GSO, 0));
    batch_free(b);

    /* header differences: TTL, window, timestamp, IP options */
    for (int what = 0; what < 4; what++) {
        b = batch_new();
        flow(a, 2, 4, 1000, 1, BIG_GSO);
        if (what == 0) a[1].ttl = 63;
        if (what == 1) a[1].window = 513;
        if (what == 2) a[1].ts++;
        if (what == 3) a[1].ip_ext = 1;
        for (int i = 0; i < 2; i++) add(b, &a[i]);
        coalesce(b);
        CHECK(b->n_frames == 2 && passed(b, 0, 0) && passed(b, 1, 1));
        batch_free(b);
    }

    /* a pure ACK ends the run; garbage, empty and out-of-range entries */
    b = batch_new();
    flow(a, 3, 4, 1000, 1, BIG_GSO);
    spec_t ack = spec(4, 0, a[1].seq, 0);
    ack.sport = 1000;
    add(b, &a[0]);
    add(b, &ack);
    add(b, &a[1]);
    add(b, &a[2]);
    add_bytes(b, (const uint8_t *)"\x45garbage", 8);
    add_bytes(b, (const uint8_t *)"", 0);
    add(b, &a[0]);
    b->offs[b->n - 1] = (uint32_t)BATCH_BUF; /* past in_len */
    coalesce(b);
    CHECK(b->n_frames == 4 && passed(b, 0, 0) && passed(b, 1, 1) && merged(b, 2, &a[1], 2 * BIG_GSO, 0) &&
          passed(b, 3, 4) && b->frame_of[5] == OFFLOAD_NO_FRAME && b->frame_of[6] == OFFLOAD_NO_FRAME);
    /* out too small: nothing */
    size_t bytes = 0;
    for (size_t i = 0; i < 5; i++) bytes += b->lens[i];
    CHECK(offload_coalesce(b->buf, b->used, b->offs, b->lens, b->n, b->out, OFFLOAD_COALESCE_OUT_CAP(bytes, 5) - 1,
                           b->frame_offs, b->frame_lens, b->frame_of) == 0 &&
          b->frame_of[0] == OFFLOAD_NO_FRAME);
    uint8_t *exact = malloc(OFFLOAD_COALESCE_OUT_CAP(bytes, 5)); /* exactly the bound: ASan checks the writes */
    CHECK(offload_coalesce(b->buf, b->used, b->offs, b->lens, b->n, exact, OFFLOAD_COALESCE_OUT_CAP(bytes, 5),
                           b->frame_offs, b->frame_lens, NULL) == 4);
    free(exact);
    batch_free(b);

    /* the 64 KiB limit: 50 segments of 1400 + 52 header bytes -> 46 (64452 bytes) and 4 */
    b = batch_new();
    flow(a, 50, 4, 1000, 1, BIG_GSO);
    for (int i = 0; i < 50; i++) add(b, &a[i]);
    coalesce(b);
    CHECK(b->n_frames == 2 && merged(b, 0, &a[0], 46 * BIG_GSO, 0) && merged(b, 1, &a[46], 4 * BIG_GSO, 0));
    batch_free(b);

    /* more than OFFLOAD_COALESCE_BATCH packets: merges stop at the chunk boundary */
    b = batch_new();
    spec_t many[300];
    flow(many, 300, 6, 1000, 1, 100);
    for (int i = 0; i < 300; i++) add(b, &many[i]);
    coalesce(b);
    CHECK(b->n_frames == 2 && merged(b, 0, &many[0], OFFLOAD_COALESCE_BATCH * 100, 0) &&
          merged(b, 1, &many[OFFLOAD_COALESCE_BATCH], (300 - OFFLOAD_COALESCE_BATCH) * 100, 0));
    batch_free(b);
}

/* Many flows round robin: each is merged on its own, and its bytes come out in order. */
static void test_many_flows(void)
{
    enum { FLOWS = 60, PER_FLOW = 4 };
    static uint8_t segs[OFFLOAD_SPLIT_OUT_CAP(MAX_SEGS)];
    uint32_t offs[MAX_SEGS], lens[MAX_SEGS];
    spec_t f[FLOWS][PER_FLOW];
    batch_t *b = batch_new();
    for (int k = 0; k < FLOWS; k++) flow(f[k], PER_FLOW, k % 2 ? 6 : 4, (uint16_t)(3000 + k), 1000u * (uint32_t)k, 500);
    for (int i = 0; i < PER_FLOW; i++)
        for (int k = 0; k < FLOWS; k++) add(b, &f[k][i]);
    coalesce(b);
    CHECK(b->n_frames == FLOWS);
    uint32_t next[FLOWS];
    for (int k = 0; k < FLOWS; k++) next[k] = f[k][0].seq;
    size_t total = 0;
    for (size_t j = 0; j < b->n_frames; j++) {
        int rc;
        size_t n = split_n(frame(b, j), b->frame_lens[j], segs, sizeof(segs), offs, lens, MAX_SEGS, &rc);
        CHECK(rc == OFFLOAD_OK);
        for (size_t i = 0; i < n && rc == OFFLOAD_OK; i++) {
            const uint8_t *p = segs + offs[i];
            size_t l4 = (p[0] >> 4) == 4 ? 20 : 40;
            int k = be16(p + l4) - 3000;
            CHECK(k >= 0 && k < FLOWS && be32(p + l4 + 4) == next[k] && tcp_csum_ok(p, l4, lens[i]));
            if (k >= 0 && k < FLOWS) next[k] += 500;
            total++;
        }
    }
    CHECK(total == FLOWS * PER_FLOW);
    batch_free(b);
}

/* Flows whose hashes crowd one probe window: the first OFFLOAD_FLOW_PROBES get slots and merge, the next
 * finds none and passes through, in order. Mirrors the library's FNV-1a flow hash (a change there
 * shows up here as a failure, not as a silent pass). */
static uint32_t lib_flow_hash(const uint8_t *ip)
{
    uint32_t h = 2166136261u ^ 4u;
    for (size_t i = 12; i < 20; i++) h = (h ^ ip[i]) * 16777619u;
    for (size_t i = 20; i < 24; i++) h = (h ^ ip[i]) * 16777619u;
    return h;
}

static void test_flow_table_full(void)
{
    enum { CROWD = OFFLOAD_FLOW_PROBES + 1 };
    uint16_t sports[CROWD];
    size_t found = 0;
    uint8_t p[128];
    for (uint32_t port = 1; port < 65536 && found < CROWD; port++) {
        spec_t s = spec(4, 0, 1, 0);
        s.sport = (uint16_t)port;
        build(&s, p);
        if ((lib_flow_hash(p) & (OFFLOAD_FLOW_TABLE - 1)) == 0) sports[found++] = (uint16_t)port;
    }
    CHECK(found == CROWD);
    spec_t f[CROWD][2];
    batch_t *b = batch_new();
    for (size_t k = 0; k < CROWD; k++) flow(f[k], 2, 4, sports[k], 100, 300);
    for (int i = 0; i < 2; i++)
        for (size_t k = 0; k < CROWD; k++) add(b, &f[k][i]);
    coalesce(b);
    CHECK(b->n_frames == OFFLOAD_FLOW_PROBES + 2);
    for (size_t k = 0; k < OFFLOAD_FLOW_PROBES; k++) CHECK(merged(b, k, &f[k][0], 600, 0));
    CHECK(passed(b, OFFLOAD_FLOW_PROBES, CROWD - 1) && passed(b, OFFLOAD_FLOW_PROBES + 1, 2 * CROWD - 1));
    batch_free(b);
}

/* ---- seed corpus of fuzz/esp/fuzz_offload.c ---- */

static int write_seed(const char *dir, const char *name, uint8_t mode, const uint8_t *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (fp == NULL) return -1;
    uint8_t hdr[2] = {mode, 0};
    int ok = fwrite(hdr, 1, 2, fp) == 2 && fwrite(p, 1, n, fp) == n;
    return fclose(fp) == 0 && ok ? 0 : -1;
}

/* Split mode (byte 0 < 0x80): byte 1 out capacity selector, then a frame. Coalesce mode: packets each
 * behind a 2-byte big-endian length. Kept small: the fuzzer runs with -max_len=8192. */
static int write_corpus(const char *dir)
{
    static uint8_t f[8192], pk[8192];
    int rc = 0;
    spec_t s = spec(4, 3000, 0xfffffe00u, F_PSH | F_CWR);
    s.ip_ext = 1;
    rc |= write_seed(dir, "split-v4-tso", 0x3f, f, build_tso(s, 1000, f));
    s.flags |= F_FIN;
    rc |= write_seed(dir, "split-v4-fin", 0x07, f, build_tso(s, 536, f));
    spec_t v6 = spec(6, 2500, 9, 0);
    v6.ip_ext = 1;
    rc |= write_seed(dir, "split-v6-ext", 0x3f, f, build_tso(v6, 1220, f));
    v6.ip_ext = 0;
    rc |= write_seed(dir, "split-v6-tso", 0x7f, f, build_tso(v6, 100, f));
    spec_t none = spec(4, 333, 1, F_PSH);
    none.partial = 1;
    size_t n = build(&none, f + VNET);
    put_vnet(f, VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, 16);
    rc |= write_seed(dir, "split-none-csum", 0x01, f, VNET + n);
    put_vnet(f, 0, 0, 0, 0, 0, 0);
    rc |= write_seed(dir, "split-none", 0x01, f, VNET + n);

    /* coalesce: two flows interleaved, a short one, a SYN, an IPv6 run, garbage */
    spec_t a[8], c[4];
    flow(a, 4, 4, 1000, 1, 300);
    flow(c, 4, 6, 2000, 5, 250);
    a[3].payload = 100;
    c[2].flags |= F_SYN;
    size_t pos = 0;
    for (int i = 0; i < 4; i++) {
        for (int w = 0; w < 2; w++) {
            size_t len = build(w ? &c[i] : &a[i], pk + pos + 2);
            put16(pk + pos, (uint16_t)len);
            pos += 2 + len;
        }
    }
    memcpy(pk + pos, "\x00\x03\x45\x00\x00", 5);
    pos += 5;
    rc |= write_seed(dir, "coalesce-mix", 0x80, pk, pos);
    pos = 0;
    flow(a, 8, 4, 1000, 1, 200);
    for (int i = 0; i < 8; i++) {
        size_t len = build(&a[i], pk + pos + 2);
        put16(pk + pos, (uint16_t)len);
        pos += 2 + len;
    }
    rc |= write_seed(dir, "coalesce-run", 0x80, pk, pos);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) return write_corpus(argv[2]) ? 1 : 0;
    test_split_tso();
    test_split_none();
    test_split_errors();
    test_round_trip();
    test_coalesce();
    test_many_flows();
    test_flow_table_full();
    if (failures) {
        fprintf(stderr, "test_esp_offload: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_esp_offload: all tests passed\n");
    return 0;
}
