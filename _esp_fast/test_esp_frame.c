/* Tests of esp_frame.c, run under -fsanitize=address,undefined by scripts/test-esp-core.sh.
 * Frames are built here byte by byte (VLAN tags, IPv4 options, fragments, Ethernet padding) and
 * checksummed with a plain byte-pair reference sum (the library sums in host order); every parse runs on
 * an exactly sized copy, so ASan sees any read past the frame. Built frames are checked field by field
 * and parsed back. `test_esp_frame --write-corpus DIR` writes the seeds of fuzz_frame.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "esp_frame.h"
#include "test_check.h"
#include "test_bytes.h"

#define MAX_FRAME 70000
#define SPI 0x0a0b0c0du
#define ETH_MIN_FRAME 60           /* without FCS: shorter frames are padded by the sender */
#define IPV4_MF 0x2000
#define IPV4_DF 0x4000
#define PROTO_TCP 6
#define ETHERTYPE_ARP 0x0806

static const uint8_t MAC_A[6] = {0x02, 0, 0, 0, 0, 0x0a}, MAC_B[6] = {0x02, 0, 0, 0, 0, 0x0b};
static const uint8_t V4_A[16] = {192, 0, 2, 1}, V4_B[16] = {198, 51, 100, 7};
static const uint8_t V6_A[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1}, V6_B[16] = {0x20, 0x01, 0x0d, 0xb8, 0xff, [15] = 2};

/* ---- checksums over the reference sum of test_bytes.h ---- */

static int ipv4_csum_ok(const uint8_t *ip) { return ref_fold(ref_sum(ip, (size_t)(ip[0] & 15) * 4, 0)) == 0xffff; }

static void ipv4_fix_csum(uint8_t *ip)
{
    put16(ip + 10, 0);
    put16(ip + 10, (uint16_t)~ref_fold(ref_sum(ip, (size_t)(ip[0] & 15) * 4, 0)));
}

/* UDP checksum over the pseudo-header of the IP header at ip (4 or 6) and the datagram at udp. */
static uint16_t udp_sum(const uint8_t *ip, const uint8_t *udp, size_t ulen)
{
    uint32_t acc = (ip[0] >> 4) == 4 ? ref_sum(ip + 12, 8, 0) : ref_sum(ip + 8, 32, 0);
    acc += 17 + (uint32_t)ulen;
    return ref_fold(ref_sum(udp, ulen, acc));
}

/* ---- frames built by hand ---- */

typedef struct {
    int n_tags;
    uint16_t tpid[3], tci[3];
    uint16_t ethertype;       /* after the tags; 0: from family */
    int family;
    size_t ip_opts;           /* IPv4 option bytes (a multiple of 4) */
    uint16_t frag;            /* IPv4 flags + fragment offset */
    int proto;                /* -1: UDP if udp, else ESP */
    int udp;
    uint16_t sport, dport;
    const uint8_t *payload;   /* UDP payload, or what follows the IP header */
    size_t plen;
    size_t pad;               /* Ethernet padding after the IP packet (0x5a bytes) */
} spec_t;

static uint8_t esp_bytes[2048]; /* SPI, then a pattern: filled by main */

static spec_t spec(int family, int udp, size_t plen)
{
    spec_t s;
    memset(&s, 0, sizeof(s));
    s.family = family;
    s.udp = udp;
    s.proto = -1;
    s.sport = 40000;
    s.dport = FRAME_NATT_PORT;
    s.payload = esp_bytes;
    s.plen = plen;
    return s;
}

static size_t l3_of(const spec_t *s) { return FRAME_ETH_HDR_LEN + (size_t)s->n_tags * FRAME_VLAN_TAG_LEN; }
static size_t iphdr_of(const spec_t *s) { return s->family == 4 ? 20 + s->ip_opts : 40; }
static size_t esp_of(const spec_t *s) { return l3_of(s) + iphdr_of(s) + (s->udp ? 8 : 0); }

static size_t make_frame(const spec_t *s, uint8_t *f)
{
    memcpy(f, MAC_A, 6);
    memcpy(f + 6, MAC_B, 6);
    uint8_t *p = f + 12;
    for (int i = 0; i < s->n_tags; i++, p += 4) {
        put16(p, s->tpid[i]);
        put16(p + 2, s->tci[i]);
    }
    put16(p, s->ethertype ? s->ethertype : s->family == 4 ? FRAME_ETHERTYPE_IPV4 : FRAME_ETHERTYPE_IPV6);
    uint8_t *ip = p + 2;
    size_t ih = iphdr_of(s), l4 = (s->udp ? 8 : 0) + s->plen, total = ih + l4;
    uint8_t proto = s->proto >= 0 ? (uint8_t)s->proto : s->udp ? FRAME_PROTO_UDP : FRAME_PROTO_ESP;
    memset(ip, 0, ih);
    if (s->family == 4) {
        ip[0] = (uint8_t)(0x40 | ih / 4);
        ip[1] = 0x28;
        put16(ip + 2, (uint16_t)total);
        put16(ip + 4, 0x1234);
        put16(ip + 6, s->frag ? s->frag : IPV4_DF);
        ip[8] = 61;
        ip[9] = proto;
        memcpy(ip + 12, V4_A, 4);
        memcpy(ip + 16, V4_B, 4);
        for (size_t k = 20; k < ih; k++) ip[k] = 1; /* NOP options */
        ipv4_fix_csum(ip);
    } else {
        put32(ip, 0x60012345);
        put16(ip + 4, (uint16_t)l4);
        ip[6] = proto;
        ip[7] = 61;
        memcpy(ip + 8, V6_A, 16);
        memcpy(ip + 24, V6_B, 16);
    }
    uint8_t *l = ip + ih;
    if (s->udp) {
        put16(l, s->sport);
        put16(l + 2, s->dport);
        put16(l + 4, (uint16_t)l4);
        put16(l + 6, 0);
    }
    memcpy(l + (s->udp ? 8 : 0), s->payload, s->plen);
    if (s->udp && s->family == 6) put16(l + 6, (uint16_t)~udp_sum(ip, l, l4));
    size_t n = (size_t)(ip - f) + total;
    memset(f + n, 0x5a, s->pad);
    return n + s->pad;
}

static int parse_copy(const uint8_t *f, size_t n, uint16_t natt_port, esp_frame_t *out)
{
    uint8_t *c = malloc(n ? n : 1); /* exactly sized: ASan catches any read past it */
    if (n) memcpy(c, f, n);
    esp_frame_config_t cfg = {natt_port};
    int rc = esp_frame_parse(n ? c : NULL, n, &cfg, out);
    free(c);
    return rc;
}

static int seen_drop[FRAME_DROP_COUNT];

static esp_frame_t parse(const uint8_t *f, size_t n)
{
    esp_frame_t r;
    CHECK(parse_copy(f, n, FRAME_NATT_PORT, &r) == 0);
    CHECK(r.verdict < FRAME_VERDICT_COUNT && r.reason < FRAME_DROP_COUNT);
    CHECK((r.verdict == FRAME_DROP) == (r.reason != FRAME_DROP_NONE));
    if (r.verdict == FRAME_DROP && r.reason < FRAME_DROP_COUNT) seen_drop[r.reason] = 1;
    return r;
}

static esp_frame_t parse_spec(const spec_t *s)
{
    static uint8_t f[MAX_FRAME];
    return parse(f, make_frame(s, f));
}

static void expect_drop(const uint8_t *f, size_t n, int reason)
{
    esp_frame_t r = parse(f, n);
    CHECK(r.verdict == FRAME_DROP && r.reason == reason);
    if (r.reason != reason) fprintf(stderr, "  expected drop %s, got %s/%s\n", esp_frame_drop_name(reason),
                                    esp_frame_verdict_name(r.verdict), esp_frame_drop_name(r.reason));
}

static void check_esp(const esp_frame_t *r, const spec_t *s, size_t esp_len)
{
    CHECK(r->verdict == (s->udp ? FRAME_ESP_UDP : FRAME_ESP_RAW) && r->reason == FRAME_DROP_NONE);
    CHECK(r->family == s->family && r->l3_offset == l3_of(s));
    CHECK(r->esp_offset == esp_of(s) && r->esp_len == esp_len && r->spi == SPI);
    CHECK(memcmp(r->src, s->family == 4 ? V4_A : V6_A, 16) == 0);
    CHECK(memcmp(r->dst, s->family == 4 ? V4_B : V6_B, 16) == 0);
    if (s->udp) CHECK(r->sport == s->sport && r->dport == s->dport);
    else CHECK(r->sport == 0 && r->dport == 0);
    CHECK(r->n_vlans == (s->n_tags < FRAME_MAX_VLANS ? s->n_tags : FRAME_MAX_VLANS));
}

/* ---- verdicts ---- */

static void test_esp_verdicts(void)
{
    for (int fam = 4; fam <= 6; fam += 2)
        for (int udp = 0; udp <= 1; udp++) {
            spec_t s = spec(fam, udp, 100);
            esp_frame_t r = parse_spec(&s);
            check_esp(&r, &s, 100);
            CHECK(r.proto == (udp ? FRAME_PROTO_UDP : FRAME_PROTO_ESP));
            CHECK(r.ethertype == (fam == 4 ? FRAME_ETHERTYPE_IPV4 : FRAME_ETHERTYPE_IPV6));
            s.plen = FRAME_ESP_MIN_LEN; /* the smallest ESP: a header alone */
            r = parse_spec(&s);
            check_esp(&r, &s, FRAME_ESP_MIN_LEN);
        }
    /* a custom NAT-T port, and NAT-T off */
    static uint8_t f[MAX_FRAME];
    spec_t s = spec(4, 1, 64);
    s.dport = 4501;
    size_t n = make_frame(&s, f);
    esp_frame_t r;
    CHECK(parse_copy(f, n, 4501, &r) == 0 && r.verdict == FRAME_ESP_UDP && r.esp_len == 64);
    CHECK(parse_copy(f, n, FRAME_NATT_PORT, &r) == 0 && r.verdict == FRAME_PASS && r.dport == 4501);
    s.dport = FRAME_NATT_PORT;
    n = make_frame(&s, f);
    CHECK(parse_copy(f, n, 0, &r) == 0 && r.verdict == FRAME_PASS && r.sport == 40000);
    CHECK(esp_frame_parse(f, n, NULL, &r) == 0 && r.verdict == FRAME_ESP_UDP); /* NULL: the defaults */
}

static void expect_pass(const spec_t *s)
{
    esp_frame_t r = parse_spec(s);
    CHECK(r.verdict == FRAME_PASS && r.reason == FRAME_DROP_NONE && r.esp_offset == 0 && r.esp_len == 0);
    if (r.verdict != FRAME_PASS) fprintf(stderr, "  expected PASS, got %s/%s\n", esp_frame_verdict_name(r.verdict),
                                         esp_frame_drop_name(r.reason));
}

static void test_pass(void)
{
    static const uint8_t marker_ike[28] = {0, 0, 0, 0, 0x11, 0x22}; /* non-ESP marker + an IKE header */
    static const uint8_t keepalive[1] = {0xff};
    for (int fam = 4; fam <= 6; fam += 2) {
        spec_t s = spec(fam, 1, sizeof(marker_ike));
        s.payload = marker_ike;
        expect_pass(&s);
        s.payload = keepalive;
        s.plen = 1;
        expect_pass(&s);
        s.payload = marker_ike;
        s.plen = 4; /* a marker alone */
        expect_pass(&s);
        s = spec(fam, 1, 100);
        s.dport = 53; /* UDP to another port */
        esp_frame_t r = parse_spec(&s);
        CHECK(r.verdict == FRAME_PASS && r.dport == 53 && r.sport == 40000 && r.family == fam);
        s.sport = FRAME_NATT_PORT;
        s.dport = 500; /* from 4500 is not enough */
        expect_pass(&s);
        s = spec(fam, 0, 100);
        s.proto = PROTO_TCP;
        r = parse_spec(&s);
        CHECK(r.verdict == FRAME_PASS && r.proto == PROTO_TCP);
    }
    /* IPv6 extension headers, even with ESP behind them */
    static const uint8_t hbh_then_esp[16] = {FRAME_PROTO_ESP, 0, 1, 4};
    static const uint8_t frag_then_esp[16] = {FRAME_PROTO_ESP, 0, 0, 1, 0, 0, 0, 9};
    spec_t s = spec(6, 0, sizeof(hbh_then_esp));
    s.proto = 0;
    s.payload = hbh_then_esp;
    expect_pass(&s);
    s.proto = 44;
    s.payload = frag_then_esp;
    expect_pass(&s);
    s.proto = 43; /* routing */
    expect_pass(&s);
    /* a jumbogram's zero payload length with hop-by-hop */
    s = spec(6, 0, 0);
    s.proto = 0;
    expect_pass(&s);
    /* IPv4 fragments of ESP and of UDP/4500: first, middle, last */
    static const uint16_t frags[] = {IPV4_MF, IPV4_MF | 100, 200, IPV4_DF | 1};
    for (size_t i = 0; i < sizeof(frags) / sizeof(frags[0]); i++)
        for (int udp = 0; udp <= 1; udp++) {
            s = spec(4, udp, 64);
            s.frag = frags[i];
            esp_frame_t r = parse_spec(&s);
            CHECK(r.verdict == FRAME_PASS && r.family == 4 && r.proto == (udp ? 17 : 50));
        }
    /* not IP: ARP, an 802.3 length, LLDP */
    static const uint16_t others[] = {ETHERTYPE_ARP, 0x0040, 0x88cc};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        s = spec(4, 0, 28);
        s.ethertype = others[i];
        esp_frame_t r = parse_spec(&s);
        CHECK(r.verdict == FRAME_PASS && r.ethertype == others[i] && r.family == 0);
    }
    /* an exact Ethernet header with an unknown type: nothing more is needed */
    uint8_t eth[FRAME_ETH_HDR_LEN] = {[12] = 0x08, [13] = 0x06};
    esp_frame_t r = parse(eth, sizeof(eth));
    CHECK(r.verdict == FRAME_PASS && r.ethertype == ETHERTYPE_ARP);
}

static void test_drops(void)
{
    static uint8_t f[MAX_FRAME];
    spec_t s = spec(4, 0, 100);
    size_t n = make_frame(&s, f);
    expect_drop(f, 0, FRAME_DROP_SHORT_L2);
    expect_drop(f, FRAME_ETH_HDR_LEN - 1, FRAME_DROP_SHORT_L2);
    expect_drop(f, FRAME_ETH_HDR_LEN + FRAME_IPV4_MIN_HDR - 1, FRAME_DROP_SHORT_L3);
    expect_drop(f, n - 1, FRAME_DROP_IP_LENGTH); /* total length past the frame */
    f[14] = 0x65;
    expect_drop(f, n, FRAME_DROP_IP_VERSION);
    f[14] = 0x44;
    expect_drop(f, n, FRAME_DROP_IP_HDR_LEN);
    f[14] = 0x4f; /* 60 bytes of header, 40 there */
    expect_drop(f, FRAME_ETH_HDR_LEN + 40, FRAME_DROP_IP_HDR_LEN);
    f[14] = 0x46; /* total length 23 < IHL 24 */
    put16(f + 16, 23);
    ipv4_fix_csum(f + 14);
    expect_drop(f, n, FRAME_DROP_IP_LENGTH);
    n = make_frame(&s, f);
    f[14 + 8] ^= 1; /* TTL: the checksum no longer holds */
    expect_drop(f, n, FRAME_DROP_IP_CHECKSUM);
    f[14 + 8] ^= 1;
    CHECK(parse(f, n).verdict == FRAME_ESP_RAW);

    s = spec(6, 0, 100);
    n = make_frame(&s, f);
    expect_drop(f, FRAME_ETH_HDR_LEN + FRAME_IPV6_HDR - 1, FRAME_DROP_SHORT_L3);
    expect_drop(f, n - 1, FRAME_DROP_IP_LENGTH);
    f[14] = 0x40;
    expect_drop(f, n, FRAME_DROP_IP_VERSION);
    /* IPv4 header behind the IPv6 ethertype and the reverse */
    s = spec(4, 0, 100);
    s.ethertype = FRAME_ETHERTYPE_IPV6;
    n = make_frame(&s, f);
    expect_drop(f, n, FRAME_DROP_IP_VERSION);

    /* VLAN tag cut off */
    s = spec(4, 0, 100);
    s.n_tags = 1;
    s.tpid[0] = FRAME_ETHERTYPE_VLAN;
    n = make_frame(&s, f);
    for (size_t cut = FRAME_ETH_HDR_LEN; cut < FRAME_ETH_HDR_LEN + FRAME_VLAN_TAG_LEN; cut++)
        expect_drop(f, cut, FRAME_DROP_SHORT_L2);

    /* ESP too short for its header, raw and in UDP */
    for (int fam = 4; fam <= 6; fam += 2) {
        for (size_t len = 0; len < FRAME_ESP_MIN_LEN; len++) {
            s = spec(fam, 0, len);
            n = make_frame(&s, f);
            expect_drop(f, n, FRAME_DROP_ESP_SHORT);
        }
        static const uint8_t short_udp[8] = {1, 2, 3, 4, 5, 6, 7};
        for (size_t len = 0; len < FRAME_ESP_MIN_LEN; len++) {
            if (len == 4) continue; /* four zeros would be a marker: see below */
            s = spec(fam, 1, len);
            s.payload = short_udp;
            n = make_frame(&s, f);
            expect_drop(f, n, FRAME_DROP_ESP_SHORT);
        }
        static const uint8_t not_keepalive[1] = {0xfe}, three_zeros[3] = {0};
        s = spec(fam, 1, 1);
        s.payload = not_keepalive;
        n = make_frame(&s, f);
        expect_drop(f, n, FRAME_DROP_ESP_SHORT);
        s.payload = three_zeros;
        s.plen = 3;
        n = make_frame(&s, f);
        expect_drop(f, n, FRAME_DROP_ESP_SHORT);

        /* UDP: header past the IP payload (any port), length field < 8 or past the payload (NAT-T port) */
        s = spec(fam, 0, 7);
        s.proto = FRAME_PROTO_UDP;
        n = make_frame(&s, f);
        expect_drop(f, n, FRAME_DROP_UDP_LENGTH);
        s = spec(fam, 1, 100);
        n = make_frame(&s, f);
        size_t udp = esp_of(&s) - 8;
        put16(f + udp + 4, 7);
        expect_drop(f, n, FRAME_DROP_UDP_LENGTH);
        put16(f + udp + 4, 109);
        expect_drop(f, n, FRAME_DROP_UDP_LENGTH);
        put16(f + udp + 4, 0);
        expect_drop(f, n, FRAME_DROP_UDP_LENGTH);
        put16(f + udp + 4, 108);
        CHECK(parse(f, n).verdict == FRAME_ESP_UDP);
        s.dport = 53; /* another port: its length is the kernel's to judge */
        n = make_frame(&s, f);
        put16(f + udp + 4, 7);
        CHECK(parse(f, n).verdict == FRAME_PASS);
    }
    for (int reason = 1; reason < FRAME_DROP_COUNT; reason++) {
        CHECK(seen_drop[reason]);
        if (!seen_drop[reason]) fprintf(stderr, "  drop reason %s never seen\n", esp_frame_drop_name(reason));
    }
}

static void test_vlans(void)
{
    static const uint16_t tpids[][3] = {
        {FRAME_ETHERTYPE_VLAN}, {FRAME_ETHERTYPE_QINQ}, {FRAME_ETHERTYPE_QINQ, FRAME_ETHERTYPE_VLAN},
        {FRAME_ETHERTYPE_VLAN, FRAME_ETHERTYPE_VLAN},
    };
    static const int counts[] = {1, 1, 2, 2};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
        for (int fam = 4; fam <= 6; fam += 2)
            for (int udp = 0; udp <= 1; udp++) {
                spec_t s = spec(fam, udp, 77);
                s.n_tags = counts[i];
                memcpy(s.tpid, tpids[i], sizeof(s.tpid));
                s.tci[0] = 0xe000 | 100; /* priority 7: not part of the ID */
                s.tci[1] = 0x1000 | 4094; /* DEI set */
                esp_frame_t r = parse_spec(&s);
                check_esp(&r, &s, 77);
                CHECK(r.vlan[0] == 100);
                CHECK(r.vlan[1] == (counts[i] == 2 ? 4094 : 0));
            }
    /* a third tag: not an ethertype we know */
    spec_t s = spec(4, 0, 77);
    s.n_tags = 3;
    s.tpid[0] = FRAME_ETHERTYPE_QINQ;
    s.tpid[1] = s.tpid[2] = FRAME_ETHERTYPE_VLAN;
    s.tci[0] = 1, s.tci[1] = 2, s.tci[2] = 3;
    esp_frame_t r = parse_spec(&s);
    CHECK(r.verdict == FRAME_PASS && r.n_vlans == 2 && r.vlan[0] == 1 && r.vlan[1] == 2);
    CHECK(r.ethertype == FRAME_ETHERTYPE_VLAN);
}

static void test_ipv4_options(void)
{
    for (size_t opts = 4; opts <= 40; opts += 4)
        for (int udp = 0; udp <= 1; udp++) {
            spec_t s = spec(4, udp, 50);
            s.ip_opts = opts;
            esp_frame_t r = parse_spec(&s);
            check_esp(&r, &s, 50);
        }
}

static void test_padding(void)
{
    /* a small ESP packet padded to the Ethernet minimum: the IP length counts, not the frame's */
    for (int fam = 4; fam <= 6; fam += 2)
        for (int udp = 0; udp <= 1; udp++) {
            spec_t s = spec(fam, udp, 12);
            static uint8_t f[MAX_FRAME];
            size_t n = make_frame(&s, f);
            s.pad = n < ETH_MIN_FRAME ? ETH_MIN_FRAME - n : 8;
            esp_frame_t r = parse_spec(&s);
            check_esp(&r, &s, 12);
        }
    /* a UDP length short of the IP payload: ESP ends where the datagram does */
    spec_t s = spec(4, 1, 100);
    static uint8_t f[MAX_FRAME];
    size_t n = make_frame(&s, f);
    put16(f + esp_of(&s) - 4, 8 + 60);
    esp_frame_t r = parse(f, n);
    check_esp(&r, &s, 60);
}

/* Every cut of a valid frame short of its IP end is dropped; cuts in the padding change nothing. */
static void test_truncations(void)
{
    static uint8_t f[MAX_FRAME];
    for (int fam = 4; fam <= 6; fam += 2)
        for (int udp = 0; udp <= 1; udp++)
            for (int tags = 0; tags <= 2; tags++) {
                spec_t s = spec(fam, udp, 40);
                s.n_tags = tags;
                s.tpid[0] = s.tpid[1] = FRAME_ETHERTYPE_VLAN;
                s.ip_opts = fam == 4 && tags == 1 ? 8 : 0;
                s.pad = 10;
                size_t n = make_frame(&s, f), ip_end = n - s.pad;
                for (size_t cut = 0; cut <= n; cut++) {
                    esp_frame_t r = parse(f, cut);
                    if (cut >= ip_end) check_esp(&r, &s, 40);
                    else CHECK(r.verdict == FRAME_DROP);
                }
            }
    /* and cuts of frames we pass are passed or dropped, never taken for ESP */
    static const uint8_t ike[8] = {0};
    spec_t s = spec(6, 1, sizeof(ike));
    s.payload = ike;
    size_t n = make_frame(&s, f);
    for (size_t cut = 0; cut <= n; cut++) CHECK(parse(f, cut).verdict >= FRAME_PASS);
}

/* ---- building ---- */

static esp_frame_tx_t tx_of(int fam, int udp, int vlan)
{
    esp_frame_tx_t tx;
    memset(&tx, 0, sizeof(tx));
    memcpy(tx.dst_mac, MAC_A, 6);
    memcpy(tx.src_mac, MAC_B, 6);
    tx.vlan = (uint8_t)vlan;
    tx.vlan_tci = 0x2000 | 333;
    tx.family = (uint8_t)fam;
    tx.udp_encap = (uint8_t)udp;
    tx.tclass = 0xb9; /* DSCP 46 (EF) + ECT(1) */
    tx.ip_id = 0xbeef;
    tx.flow_label = 0xabcde;
    tx.sport = 4500;
    tx.dport = 61234;
    memcpy(tx.src, fam == 4 ? V4_A : V6_A, 16);
    memcpy(tx.dst, fam == 4 ? V4_B : V6_B, 16);
    return tx;
}

static void fill_esp(uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed + i * 7 + (i >> 8));
    if (n >= 4) put32(p, SPI);
}

/* The headers of a built frame, field by field, and the parse of it. */
static void check_built(const esp_frame_tx_t *tx, const uint8_t *f, size_t n, size_t esp_len)
{
    size_t l3 = FRAME_ETH_HDR_LEN + (tx->vlan ? 4 : 0), ih = tx->family == 4 ? 20 : 40;
    size_t hdr = l3 + ih + (tx->udp_encap ? 8 : 0);
    CHECK(n == hdr + esp_len && esp_frame_header_len(tx) == hdr);
    CHECK(memcmp(f, MAC_A, 6) == 0 && memcmp(f + 6, MAC_B, 6) == 0);
    if (tx->vlan) CHECK(be16(f + 12) == FRAME_ETHERTYPE_VLAN && be16(f + 14) == tx->vlan_tci);
    CHECK(be16(f + l3 - 2) == (tx->family == 4 ? FRAME_ETHERTYPE_IPV4 : FRAME_ETHERTYPE_IPV6));
    const uint8_t *ip = f + l3;
    uint8_t proto = tx->udp_encap ? FRAME_PROTO_UDP : FRAME_PROTO_ESP;
    if (tx->family == 4) {
        CHECK(ip[0] == 0x45 && ip[1] == tx->tclass && be16(ip + 2) == n - l3 && be16(ip + 4) == tx->ip_id);
        CHECK(be16(ip + 6) == IPV4_DF && ip[8] == FRAME_TX_HOP_LIMIT && ip[9] == proto && ipv4_csum_ok(ip));
        CHECK(memcmp(ip + 12, tx->src, 4) == 0 && memcmp(ip + 16, tx->dst, 4) == 0);
    } else {
        CHECK(be32(ip) == (0x60000000u | (uint32_t)tx->tclass << 20 | tx->flow_label));
        CHECK(be16(ip + 4) == n - l3 - 40 && ip[6] == proto && ip[7] == FRAME_TX_HOP_LIMIT);
        CHECK(memcmp(ip + 8, tx->src, 16) == 0 && memcmp(ip + 24, tx->dst, 16) == 0);
    }
    if (tx->udp_encap) {
        const uint8_t *u = ip + ih;
        CHECK(be16(u) == tx->sport && be16(u + 2) == tx->dport && be16(u + 4) == 8 + esp_len);
        if (tx->family == 4) CHECK(be16(u + 6) == 0);
        else CHECK(be16(u + 6) != 0 && udp_sum(ip, u, 8 + esp_len) == 0xffff);
    }
    esp_frame_t r;
    CHECK(parse_copy(f, n, tx->dport, &r) == 0);
    CHECK(r.verdict == (tx->udp_encap ? FRAME_ESP_UDP : FRAME_ESP_RAW));
    CHECK(r.family == tx->family && r.l3_offset == l3 && r.esp_offset == hdr && r.esp_len == esp_len);
    CHECK(r.spi == SPI && r.n_vlans == tx->vlan && r.vlan[0] == (tx->vlan ? (tx->vlan_tci & 0xfff) : 0));
    CHECK(memcmp(r.src, tx->src, 16) == 0 && memcmp(r.dst, tx->dst, 16) == 0);
    if (tx->udp_encap) CHECK(r.sport == tx->sport && r.dport == tx->dport);
}

static void test_round_trips(void)
{
    static uint8_t f[MAX_FRAME], want[MAX_FRAME];
    static const size_t lens[] = {8, 9, 100, 1401, 1438};
    for (int fam = 4; fam <= 6; fam += 2)
        for (int udp = 0; udp <= 1; udp++)
            for (int vlan = 0; vlan <= 1; vlan++)
                for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
                    esp_frame_tx_t tx = tx_of(fam, udp, vlan);
                    size_t hdr = esp_frame_header_len(&tx);
                    memset(f, 0xcc, hdr);
                    fill_esp(f + hdr, lens[i], (uint32_t)i);
                    memcpy(want, f + hdr, lens[i]);
                    size_t n = esp_frame_build(&tx, f, hdr + lens[i], lens[i]);
                    check_built(&tx, f, n, lens[i]);
                    CHECK(memcmp(f + hdr, want, lens[i]) == 0); /* the ESP bytes are left alone */
                }
}

/* An IPv6 UDP checksum that computes to zero goes out as 0xffff (0 would mean "no checksum"). */
static void test_udp6_zero_checksum(void)
{
    static uint8_t f[256];
    esp_frame_tx_t tx = tx_of(6, 1, 0);
    size_t hdr = esp_frame_header_len(&tx), len = 32;
    fill_esp(f + hdr, len, 5);
    put16(f + hdr + len - 2, 0);
    size_t n = esp_frame_build(&tx, f, sizeof(f), len);
    uint16_t c = be16(f + hdr - 2);
    put16(f + hdr + len - 2, c); /* adding ~sum to the sum makes it all ones: the complement is zero */
    CHECK(esp_frame_build(&tx, f, sizeof(f), len) == n);
    CHECK(be16(f + hdr - 2) == 0xffff);
    check_built(&tx, f, n, len);
}

static void test_build_limits(void)
{
    static uint8_t f[MAX_FRAME + 16], before[MAX_FRAME + 16];
    for (int fam = 4; fam <= 6; fam += 2)
        for (int udp = 0; udp <= 1; udp++)
            for (int vlan = 0; vlan <= 1; vlan++) {
                esp_frame_tx_t tx = tx_of(fam, udp, vlan);
                size_t hdr = esp_frame_header_len(&tx), l3 = FRAME_ETH_HDR_LEN + (vlan ? 4 : 0);
                CHECK(hdr > 0 && hdr <= FRAME_MAX_HDR_LEN);
                fill_esp(f, sizeof(f), 9);
                memcpy(before, f, sizeof(f));
                /* one byte short of the capacity: nothing written */
                CHECK(esp_frame_build(&tx, f, hdr + 99, 100) == 0);
                CHECK(esp_frame_build(&tx, f, hdr - 1, 0) == 0);
                CHECK(esp_frame_build(&tx, f, 0, 0) == 0);
                CHECK(memcmp(f, before, sizeof(f)) == 0);
                CHECK(esp_frame_build(&tx, f, hdr + 100, 100) == hdr + 100);
                /* the IP length limit: exactly FRAME_MAX_IP_LEN is fine, one more is not */
                size_t most = FRAME_MAX_IP_LEN - (hdr - l3);
                memcpy(f, before, sizeof(f));
                CHECK(esp_frame_build(&tx, f, sizeof(f), most + 1) == 0);
                CHECK(memcmp(f, before, sizeof(f)) == 0);
                put32(f + hdr, SPI);
                size_t n = esp_frame_build(&tx, f, sizeof(f), most);
                CHECK(n == l3 + FRAME_MAX_IP_LEN && n <= FRAME_MAX_LEN);
                check_built(&tx, f, n, most);
                CHECK(esp_frame_build(&tx, f, sizeof(f), (size_t)-1) == 0); /* no wrap-around */
            }
    esp_frame_tx_t tx = tx_of(4, 1, 0);
    CHECK(esp_frame_build(&tx, NULL, 100, 10) == 0);
    tx.family = 5;
    CHECK(esp_frame_header_len(&tx) == 0 && esp_frame_build(&tx, f, sizeof(f), 10) == 0);
    tx = tx_of(4, 0, 2);
    CHECK(esp_frame_header_len(&tx) == 0 && esp_frame_build(&tx, f, sizeof(f), 10) == 0);
    tx = tx_of(6, 0, 0);
    tx.flow_label = 0x100000;
    CHECK(esp_frame_header_len(&tx) == 0 && esp_frame_build(&tx, f, sizeof(f), 10) == 0);
    CHECK(esp_frame_header_len(NULL) == 0 && esp_frame_build(NULL, f, sizeof(f), 10) == 0);
    /* small payloads are written too: a keepalive */
    tx = tx_of(4, 1, 0);
    size_t hdr = esp_frame_header_len(&tx);
    f[hdr] = 0xff;
    esp_frame_t r;
    CHECK(esp_frame_build(&tx, f, sizeof(f), 1) == hdr + 1);
    CHECK(parse_copy(f, hdr + 1, tx.dport, &r) == 0 && r.verdict == FRAME_PASS);
}

static void test_api(void)
{
    esp_frame_t r;
    uint8_t b[FRAME_ETH_HDR_LEN] = {0};
    CHECK(esp_frame_parse(b, sizeof(b), NULL, NULL) == -1);
    CHECK(esp_frame_parse(NULL, 5, NULL, &r) == -1);
    CHECK(esp_frame_parse(NULL, 0, NULL, &r) == 0 && r.verdict == FRAME_DROP && r.reason == FRAME_DROP_SHORT_L2);
    for (int v = 0; v < FRAME_VERDICT_COUNT; v++) {
        CHECK(esp_frame_verdict_name(v) != NULL);
        for (int w = 0; w < v; w++) CHECK(strcmp(esp_frame_verdict_name(v), esp_frame_verdict_name(w)) != 0);
    }
    for (int d = 0; d < FRAME_DROP_COUNT; d++) {
        CHECK(esp_frame_drop_name(d) != NULL);
        for (int e = 0; e < d; e++) CHECK(strcmp(esp_frame_drop_name(d), esp_frame_drop_name(e)) != 0);
    }
    CHECK(strcmp(esp_frame_verdict_name(FRAME_ESP_UDP), "ESP_UDP") == 0);
    CHECK(strcmp(esp_frame_drop_name(FRAME_DROP_ESP_SHORT), "ESP_SHORT") == 0);
    CHECK(esp_frame_verdict_name(-1) == NULL && esp_frame_verdict_name(FRAME_VERDICT_COUNT) == NULL);
    CHECK(esp_frame_drop_name(-1) == NULL && esp_frame_drop_name(FRAME_DROP_COUNT) == NULL);
}

/* ---- seeds of fuzz_frame.c ---- */

static int write_seed(const char *dir, const char *name, const uint8_t *hdr, size_t hn, const uint8_t *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (fp == NULL) return -1;
    int ok = fwrite(hdr, 1, hn, fp) == hn && fwrite(p, 1, n, fp) == n;
    return fclose(fp) == 0 && ok ? 0 : -1;
}

/* Parse mode: flags 0 (natt port 4500, checksums as they are) + a frame. Build mode (0x80 | flags): the
 * tx block of fuzz_frame.c (57 bytes) + ESP bytes. Kept small: the fuzzer runs with -max_len=4096. */
static int write_corpus(const char *dir)
{
    static uint8_t f[4096];
    static const uint8_t parse_hdr[3] = {0x00, 0x11, 0x94};
    static const uint8_t ike[12] = {0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, ka[1] = {0xff};
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return -1;
    int rc = 0, k = 0;
    char name[64];
    for (int fam = 4; fam <= 6; fam += 2)
        for (int udp = 0; udp <= 1; udp++)
            for (int tags = 0; tags <= 2; tags++) {
                spec_t s = spec(fam, udp, 60);
                s.n_tags = tags;
                s.tpid[0] = FRAME_ETHERTYPE_QINQ;
                s.tpid[1] = FRAME_ETHERTYPE_VLAN;
                s.ip_opts = fam == 4 && tags == 2 ? 12 : 0;
                snprintf(name, sizeof(name), "parse-%d", k++);
                rc |= write_seed(dir, name, parse_hdr, sizeof(parse_hdr), f, make_frame(&s, f));
            }
    spec_t s = spec(4, 1, sizeof(ike));
    s.payload = ike;
    rc |= write_seed(dir, "parse-ike", parse_hdr, sizeof(parse_hdr), f, make_frame(&s, f));
    s.payload = ka;
    s.plen = 1;
    rc |= write_seed(dir, "parse-keepalive", parse_hdr, sizeof(parse_hdr), f, make_frame(&s, f));
    s = spec(4, 0, 30);
    s.frag = IPV4_MF;
    rc |= write_seed(dir, "parse-fragment", parse_hdr, sizeof(parse_hdr), f, make_frame(&s, f));
    for (int flags = 0; flags < 8; flags++) {
        uint8_t hdr[58] = {(uint8_t)(0x80 | flags)};
        for (size_t i = 1; i < sizeof(hdr); i++) hdr[i] = (uint8_t)(i * 37);
        hdr[15] = 0x11, hdr[16] = 0x94; /* the source port, as a peer behind a NAT sees it */
        fill_esp(f, 100 + (size_t)flags, (uint32_t)flags);
        snprintf(name, sizeof(name), "build-%d", flags);
        rc |= write_seed(dir, name, hdr, sizeof(hdr), f, 100 + (size_t)flags);
    }
    return rc;
}

int main(int argc, char **argv)
{
    fill_esp(esp_bytes, sizeof(esp_bytes), 1); /* starts with SPI */
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) return write_corpus(argv[2]) ? 1 : 0;
    test_api();
    test_esp_verdicts();
    test_pass();
    test_vlans();
    test_ipv4_options();
    test_padding();
    test_truncations();
    test_drops();
    test_round_trips();
    test_udp6_zero_checksum();
    test_build_limits();
    if (failures) {
        fprintf(stderr, "test_esp_frame: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_esp_frame: all tests passed\n");
    return 0;
}
