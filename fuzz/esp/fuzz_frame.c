/* libFuzzer harness over the Ethernet frame parser and builder of esp_frame.c
 * (clang -fsanitize=fuzzer,address,undefined).
 *
 * Byte 0 < 0x80, parse mode: bit 0 repairs the IPv4 header checksum of the frame first (so the fuzzer
 *   gets past it), bit 1 takes the NAT-T port from bytes 1-2 (big-endian, 0 = off; else FRAME_NATT_PORT);
 *   from byte 3 on, one frame. Invariants: the verdict and reason agree; ESP_* lies inside the frame and
 *   inside the IP packet (and UDP datagram) that the header bytes describe, with the SPI of the bytes at
 *   esp_offset; an IPv4 header accepted has a valid checksum (summed here); addresses and ports are the
 *   header bytes; and what follows the IP packet never matters: the frame cut to its IP end and the frame
 *   with junk appended parse the same, and ESP cut short by one byte is dropped.
 * Byte 0 >= 0x80, build mode: bits of FLAG_* below, then TX_BLOCK bytes of parameters (see read_tx), the
 *   rest is the ESP bytes. Invariants: nothing is written unless the frame fits the capacity (the buffer
 *   is exactly cap bytes) and the IP limit; the ESP bytes are left alone; the checksums verify; parsing
 *   the frame gives back every field, with the verdict the RFC 3948 rule predicts.
 * Buffers are exactly sized (malloc), so ASan sees any access past them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "esp_frame.h"
#include "test_bytes.h"

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

#define MODE_BUILD 0x80
#define PARSE_FIX_CSUM 0x01
#define PARSE_PORT 0x02
#define PARSE_HDR 3               /* flags + NAT-T port */
#define FLAG_V6 0x01
#define FLAG_UDP 0x02
#define FLAG_VLAN 0x04
#define FLAG_LONG 0x08            /* esp_len around the IP limit (zero bytes past the input) */
#define FLAG_CAP_SHIFT 4          /* 2 bits: exact, one byte short, generous, below the headers */
#define FLAG_RAW_FLOW 0x40        /* the flow label unmasked: 24 bits, often invalid */
#define TX_BLOCK 57               /* MACs 12, TCI 2, ports 4, tclass 1, id 2, flow 3, addresses 32, delta 1 */
#define JUNK_LEN 37
#define FUZZ_MAX_INPUT 70000

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) << 16 | rd16(p + 2); }

static uint8_t *dup_exact(const uint8_t *p, size_t n, size_t extra)
{
    uint8_t *d = malloc(n + extra ? n + extra : 1);
    REQUIRE(d != NULL);
    if (n) memcpy(d, p, n);
    return d;
}

/* ---- parse mode -------------------------------------------------------------------------------------- */

static int is_tag(uint16_t t) { return t == FRAME_ETHERTYPE_VLAN || t == FRAME_ETHERTYPE_QINQ; }

/* Where the parser will look for an IP header: its offset, or 0 (too short for one). */
static size_t l3_guess(const uint8_t *f, size_t len, uint16_t *type)
{
    if (len < FRAME_ETH_HDR_LEN) return 0;
    size_t at = 12;
    *type = rd16(f + at);
    for (int i = 0; i < FRAME_MAX_VLANS && is_tag(*type) && at + 6 <= len; i++) {
        at += FRAME_VLAN_TAG_LEN;
        *type = rd16(f + at);
    }
    return at + 2;
}

static void fix_ipv4_csum(uint8_t *f, size_t len)
{
    uint16_t type = 0;
    size_t l3 = l3_guess(f, len, &type);
    if (l3 == 0 || type != FRAME_ETHERTYPE_IPV4 || l3 + FRAME_IPV4_MIN_HDR > len) return;
    uint8_t *ip = f + l3;
    size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
    if (ihl < FRAME_IPV4_MIN_HDR || l3 + ihl > len) return;
    ip[10] = ip[11] = 0;
    uint16_t c = (uint16_t)~ref_fold(ref_sum(ip, ihl, 0));
    ip[10] = (uint8_t)(c >> 8);
    ip[11] = (uint8_t)c;
}

static int same(const esp_frame_t *a, const esp_frame_t *b) { return memcmp(a, b, sizeof(*a)) == 0; }

static void parse_exact(const uint8_t *f, size_t len, const esp_frame_config_t *cfg, esp_frame_t *r)
{
    uint8_t *c = dup_exact(f, len, 0);
    REQUIRE(esp_frame_parse(c, len, cfg, r) == 0);
    free(c);
}

static void check_parse(const uint8_t *f, size_t len, uint16_t natt_port, const esp_frame_t *r)
{
    REQUIRE(r->verdict < FRAME_VERDICT_COUNT && r->reason < FRAME_DROP_COUNT);
    REQUIRE((r->verdict == FRAME_DROP) == (r->reason != FRAME_DROP_NONE));
    REQUIRE(esp_frame_verdict_name(r->verdict) != NULL && esp_frame_drop_name(r->reason) != NULL);
    REQUIRE(r->n_vlans <= FRAME_MAX_VLANS);
    int esp = r->verdict == FRAME_ESP_RAW || r->verdict == FRAME_ESP_UDP;
    if (!esp) REQUIRE(r->esp_offset == 0 && r->esp_len == 0 && r->spi == 0);
    if (len >= FRAME_ETH_HDR_LEN && r->reason != FRAME_DROP_SHORT_L2) {
        size_t at = 12 + (size_t)r->n_vlans * FRAME_VLAN_TAG_LEN;
        REQUIRE(at + 2 <= len && rd16(f + at) == r->ethertype);
        for (size_t i = 0; i < r->n_vlans; i++) {
            REQUIRE(is_tag(rd16(f + 12 + i * FRAME_VLAN_TAG_LEN)));
            REQUIRE(r->vlan[i] == (rd16(f + 14 + i * FRAME_VLAN_TAG_LEN) & FRAME_VLAN_ID_MASK));
        }
        if (r->n_vlans < FRAME_MAX_VLANS) REQUIRE(!is_tag(r->ethertype));
    }
    if (r->family == 0) {
        REQUIRE(!esp && r->l3_offset == 0 && r->sport == 0 && r->dport == 0);
        return;
    }
    REQUIRE(r->family == 4 || r->family == 6);
    size_t l3 = r->l3_offset, alen = r->family == 4 ? 4 : 16;
    REQUIRE(l3 == FRAME_ETH_HDR_LEN + (size_t)r->n_vlans * FRAME_VLAN_TAG_LEN);
    REQUIRE(r->ethertype == (r->family == 4 ? FRAME_ETHERTYPE_IPV4 : FRAME_ETHERTYPE_IPV6));
    REQUIRE(l3 + (r->family == 4 ? FRAME_IPV4_MIN_HDR : FRAME_IPV6_HDR) <= len);
    const uint8_t *ip = f + l3;
    size_t ihl, ip_end;
    REQUIRE(ip[0] >> 4 == r->family);
    if (r->family == 4) {
        ihl = (size_t)(ip[0] & 0x0f) * 4;
        ip_end = l3 + rd16(ip + 2);
        REQUIRE(ihl >= FRAME_IPV4_MIN_HDR && l3 + ihl <= ip_end && ip_end <= len);
        REQUIRE(ref_fold(ref_sum(ip, ihl, 0)) == 0xffff);
        REQUIRE(r->proto == ip[9] && memcmp(r->src, ip + 12, 4) == 0 && memcmp(r->dst, ip + 16, 4) == 0);
    } else {
        ihl = FRAME_IPV6_HDR;
        ip_end = l3 + FRAME_IPV6_HDR + rd16(ip + 4);
        REQUIRE(ip_end <= len);
        REQUIRE(r->proto == ip[6] && memcmp(r->src, ip + 8, 16) == 0 && memcmp(r->dst, ip + 24, 16) == 0);
    }
    static const uint8_t zero[16];
    REQUIRE(memcmp(r->src + alen, zero, 16 - alen) == 0 && memcmp(r->dst + alen, zero, 16 - alen) == 0);
    if (r->sport || r->dport) {
        REQUIRE(r->proto == FRAME_PROTO_UDP && l3 + ihl + FRAME_UDP_HDR_LEN <= ip_end);
        REQUIRE(rd16(ip + ihl) == r->sport && rd16(ip + ihl + 2) == r->dport);
    }
    if (!esp) return;
    size_t off = r->esp_offset, n = r->esp_len;
    REQUIRE(n >= FRAME_ESP_MIN_LEN && off + n <= ip_end && off + n <= len);
    REQUIRE(r->spi == rd32(f + off));
    if (r->family == 4) REQUIRE((rd16(ip + 6) & 0x3fff) == 0); /* neither MF nor an offset */
    if (r->verdict == FRAME_ESP_RAW) {
        REQUIRE(r->proto == FRAME_PROTO_ESP && off == l3 + ihl && off + n == ip_end);
    } else {
        REQUIRE(r->proto == FRAME_PROTO_UDP && natt_port != 0 && r->dport == natt_port);
        REQUIRE(off == l3 + ihl + FRAME_UDP_HDR_LEN && rd16(f + off - 4) == n + FRAME_UDP_HDR_LEN);
        REQUIRE(r->spi != 0); /* a zero first word is the non-ESP marker */
    }
}

static void parse_mode(const uint8_t *data, size_t size)
{
    if (size < PARSE_HDR) return;
    esp_frame_config_t cfg = FRAME_CONFIG_DEFAULT;
    if (data[0] & PARSE_PORT) cfg.natt_port = rd16(data + 1);
    size_t len = size - PARSE_HDR;
    uint8_t *f = dup_exact(data + PARSE_HDR, len, 0);
    if (data[0] & PARSE_FIX_CSUM) fix_ipv4_csum(f, len);
    esp_frame_t r, again;
    REQUIRE(esp_frame_parse(f, len, &cfg, &r) == 0);
    check_parse(f, len, cfg.natt_port, &r);

    if (r.verdict != FRAME_DROP) { /* junk after the frame: the Ethernet padding a NIC may leave */
        uint8_t *longer = dup_exact(f, len, JUNK_LEN);
        memset(longer + len, 0xa5, JUNK_LEN);
        REQUIRE(esp_frame_parse(longer, len + JUNK_LEN, &cfg, &again) == 0 && same(&r, &again));
        free(longer);
    }
    if (r.family != 0 && r.verdict != FRAME_DROP) {
        const uint8_t *ip = f + r.l3_offset;
        size_t ip_end = r.l3_offset + (r.family == 4 ? rd16(ip + 2) : FRAME_IPV6_HDR + (size_t)rd16(ip + 4));
        parse_exact(f, ip_end, &cfg, &again);
        REQUIRE(same(&r, &again));
        if (r.verdict != FRAME_PASS) {
            parse_exact(f, ip_end - 1, &cfg, &again);
            REQUIRE(again.verdict == FRAME_DROP);
        }
    }
    free(f);
}

/* ---- build mode -------------------------------------------------------------------------------------- */

static esp_frame_tx_t read_tx(uint8_t flags, const uint8_t *b, int *delta)
{
    esp_frame_tx_t tx;
    memset(&tx, 0, sizeof(tx));
    memcpy(tx.dst_mac, b, 6);
    memcpy(tx.src_mac, b + 6, 6);
    tx.vlan_tci = rd16(b + 12);
    tx.sport = rd16(b + 14);
    tx.dport = rd16(b + 16);
    tx.tclass = b[18];
    tx.ip_id = rd16(b + 19);
    tx.flow_label = (uint32_t)b[21] << 16 | rd16(b + 22);
    if (!(flags & FLAG_RAW_FLOW)) tx.flow_label &= 0xfffff;
    memcpy(tx.src, b + 24, 16);
    memcpy(tx.dst, b + 40, 16);
    *delta = (int8_t)b[56];
    tx.family = (flags & FLAG_V6) ? 6 : 4;
    tx.udp_encap = (flags & FLAG_UDP) != 0;
    tx.vlan = (flags & FLAG_VLAN) != 0;
    return tx;
}

/* The RFC 3948 rule, restated: what a built datagram of these bytes must parse as. */
static int expected_verdict(const esp_frame_tx_t *tx, const uint8_t *esp, size_t n)
{
    if (!tx->udp_encap) return n >= FRAME_ESP_MIN_LEN ? FRAME_ESP_RAW : FRAME_DROP;
    if (tx->dport == 0) return FRAME_PASS; /* NAT-T off: the parse is configured with the destination port */
    if (n == 1 && esp[0] == 0xff) return FRAME_PASS;
    if (n >= 4 && rd32(esp) == 0) return FRAME_PASS;
    return n >= FRAME_ESP_MIN_LEN ? FRAME_ESP_UDP : FRAME_DROP;
}

static void build_mode(const uint8_t *data, size_t size)
{
    if (size < 1 + TX_BLOCK) return;
    uint8_t flags = data[0];
    int delta;
    esp_frame_tx_t tx = read_tx(flags, data + 1, &delta);
    const uint8_t *given = data + 1 + TX_BLOCK;
    size_t given_len = size - 1 - TX_BLOCK;

    int valid = tx.flow_label <= 0xfffff;
    size_t l3 = FRAME_ETH_HDR_LEN + (tx.vlan ? FRAME_VLAN_TAG_LEN : 0);
    size_t hdr = l3 + (tx.family == 4 ? FRAME_IPV4_MIN_HDR : FRAME_IPV6_HDR) + (tx.udp_encap ? FRAME_UDP_HDR_LEN : 0);
    REQUIRE(esp_frame_header_len(&tx) == (valid ? hdr : 0));
    REQUIRE(hdr <= FRAME_MAX_HDR_LEN);
    size_t most = FRAME_MAX_IP_LEN - (hdr - l3), esp_len = given_len;
    if (flags & FLAG_LONG) esp_len = (size_t)((long)most + delta > 0 ? (long)most + delta : 0);
    size_t need = hdr + esp_len, cap;
    switch ((flags >> FLAG_CAP_SHIFT) & 3) {
    case 0: cap = need; break;
    case 1: cap = need - 1; break;
    case 2: cap = need + (size_t)(uint8_t)delta; break;
    default: cap = hdr ? (size_t)(uint8_t)delta % hdr : 0; break;
    }
    int ok = valid && need <= cap && esp_len <= most;

    uint8_t *out = malloc(cap ? cap : 1), *before = malloc(cap ? cap : 1), *esp = malloc(esp_len ? esp_len : 1);
    REQUIRE(out != NULL && before != NULL && esp != NULL);
    memset(esp, 0, esp_len);
    memcpy(esp, given, given_len < esp_len ? given_len : esp_len);
    memset(out, 0xcc, cap);
    if (need <= cap) memcpy(out + hdr, esp, esp_len);
    memcpy(before, out, cap);

    size_t n = esp_frame_build(&tx, out, cap, esp_len);
    REQUIRE(n == (ok ? need : 0));
    if (!ok) {
        REQUIRE(memcmp(out, before, cap) == 0);
        goto done;
    }
    REQUIRE(memcmp(out + hdr, esp, esp_len) == 0 && memcmp(out + need, before + need, cap - need) == 0);
    const uint8_t *ip = out + l3;
    if (tx.family == 4) REQUIRE(ref_fold(ref_sum(ip, FRAME_IPV4_MIN_HDR, 0)) == 0xffff);
    if (tx.udp_encap) {
        const uint8_t *udp = out + hdr - FRAME_UDP_HDR_LEN;
        size_t ulen = FRAME_UDP_HDR_LEN + esp_len;
        if (tx.family == 4) {
            REQUIRE(rd16(udp + 6) == 0);
        } else {
            uint32_t acc = ref_sum(ip + 8, 32, FRAME_PROTO_UDP + (uint32_t)ulen);
            REQUIRE(rd16(udp + 6) != 0 && ref_fold(ref_sum(udp, ulen, acc)) == 0xffff);
        }
    }

    esp_frame_config_t cfg = {tx.dport};
    esp_frame_t r;
    parse_exact(out, n, &cfg, &r);
    check_parse(out, n, cfg.natt_port, &r);
    int want = expected_verdict(&tx, esp, esp_len);
    REQUIRE(r.verdict == want);
    if (want == FRAME_DROP) REQUIRE(r.reason == FRAME_DROP_ESP_SHORT);
    size_t alen = tx.family == 4 ? 4 : 16;
    REQUIRE(r.family == tx.family && r.l3_offset == l3 && r.n_vlans == tx.vlan);
    REQUIRE(r.vlan[0] == (tx.vlan ? (tx.vlan_tci & FRAME_VLAN_ID_MASK) : 0));
    REQUIRE(memcmp(r.src, tx.src, alen) == 0 && memcmp(r.dst, tx.dst, alen) == 0);
    if (tx.udp_encap) REQUIRE(r.sport == tx.sport && r.dport == tx.dport);
    if (want == FRAME_ESP_RAW || want == FRAME_ESP_UDP)
        REQUIRE(r.esp_offset == hdr && r.esp_len == esp_len && r.spi == rd32(esp));
done:
    free(out);
    free(before);
    free(esp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > FUZZ_MAX_INPUT) return 0;
    if (data[0] & MODE_BUILD) build_mode(data, size);
    else parse_mode(data, size);
    return 0;
}
