/* libFuzzer harness over the inner-packet functions of esp_inner.c (clang -fsanitize=fuzzer,address,undefined).
 *
 * Input: byte 0 = n_src (bits 0-1), n_dst (bits 2-3), "ICMP source given" (bit 4); bytes 1-2 the MSS and
 * 3-4 the MTU (big-endian); then n_src + n_dst selectors of SEL_BYTES each (see make_selector); then, with
 * bit 4, ADDR_LEN bytes of ICMP source address; the rest is one inner packet.
 * Invariants:
 *   inner_parse: the info agrees with the header bytes, ports only when the packet holds them, and the
 *     packet parses the same when cut to its own length (nothing past it is read);
 *   inner_clamp_mss (on a copy): unchanged unless it says so; if changed, only one MSS option value
 *     (now the clamp) and the TCP checksum differ, the checksum verifies (summed here), the copy parses to
 *     the same info, and a second clamp does nothing;
 *   inner_too_big: no answer for IPv4 without DF or for ICMP errors, otherwise one that fits the minimum
 *     IPv6 MTU, parses as ICMP/ICMPv6 "too big" back to the sender with valid checksums and a quote of the
 *     packet's start, is itself never answered, and is not written into a buffer one byte too small;
 *   inner_selector_match / inner_policy_match: agree with the reference model in this file.
 * Buffers are exactly sized (malloc), so ASan sees any access past them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "esp_inner.h"

#define CFG_BYTES 5               /* flags, MSS, MTU */
#define SEL_BYTES 7               /* flags, prefix length, protocol, port low, port high */
#define ADDR_LEN 16
#define MAX_SIDE 3                /* selectors per side: two bits of byte 0 */
#define SEL_FAMILY6 0x01          /* selector flag bits */
#define SEL_ANCHORED 0x02         /* the range is around the packet's own address (else around a flipped one) */
#define SEL_ANY_PROTO 0x04
#define CFG_ICMP_SRC 0x10
#define TOO_BIG_CAP INNER_IPV6_MIN_MTU /* what the forwarder gives inner_too_big */
#define IPV4_DF 0x4000
#define IPV4_MF 0x2000
#define IPV4_OFFSET 0x1fff
#define ICMP_HDR 8
#define TCP_MIN 20
#define TCP_CSUM_AT 16
#define FUZZ_MAX_INPUT 70000      /* above 64 KiB: inner_parse must cap the length */

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static uint8_t *dup_exact(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    REQUIRE(d != NULL);
    if (n) memcpy(d, p, n);
    return d;
}

/* ---- reference checksum: byte at a time, even bytes high, 64-bit accumulator ----------------------- */

static uint64_t sum_bytes(uint64_t acc, const uint8_t *p, size_t n, size_t *pos)
{
    for (size_t i = 0; i < n; i++, (*pos)++) acc += (*pos & 1) ? p[i] : (uint64_t)p[i] << 8;
    return acc;
}

static int sums_to_ones(uint64_t acc)
{
    while (acc > 0xffff) acc = (acc & 0xffff) + (acc >> 16);
    return acc == 0xffff;
}

static int l4_sum_ok(int family, const uint8_t *src, const uint8_t *dst, uint8_t proto, const uint8_t *seg, size_t len)
{
    size_t alen = family == 4 ? 4 : ADDR_LEN, pos = 0;
    uint8_t tail[8] = {0};
    uint64_t acc = sum_bytes(0, src, alen, &pos);
    acc = sum_bytes(acc, dst, alen, &pos);
    if (family == 4) {
        tail[1] = proto;
        tail[2] = (uint8_t)(len >> 8);
        tail[3] = (uint8_t)len;
        acc = sum_bytes(acc, tail, 4, &pos);
    } else {
        tail[0] = (uint8_t)(len >> 24); tail[1] = (uint8_t)(len >> 16);
        tail[2] = (uint8_t)(len >> 8); tail[3] = (uint8_t)len;
        tail[7] = proto;
        acc = sum_bytes(acc, tail, 8, &pos);
    }
    return sums_to_ones(sum_bytes(acc, seg, len, &pos));
}

/* ---- reference selector model ------------------------------------------------------------------------ */

static int addr_cmp(const uint8_t *a, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
    return 0;
}

static int ref_match(const inner_selector_t *ts, const inner_info_t *info, int use_src)
{
    if (ts->family != info->family || (ts->proto && ts->proto != info->proto)) return 0;
    size_t n = info->family == 4 ? 4 : ADDR_LEN;
    const uint8_t *a = use_src ? info->src : info->dst;
    if (addr_cmp(a, ts->lo, n) < 0 || addr_cmp(a, ts->hi, n) > 0) return 0;
    if (ts->port_lo == 0 && ts->port_hi == UINT16_MAX) return 1;                  /* any port */
    if (ts->port_lo == UINT16_MAX && ts->port_hi == 0) return !info->ports_known; /* OPAQUE */
    uint16_t port = use_src ? info->sport : info->dport;
    return info->ports_known && port >= ts->port_lo && port <= ts->port_hi;
}

static int ref_policy(const inner_selector_t *s, size_t ns, const inner_selector_t *d, size_t nd,
                      const inner_info_t *info)
{
    int src_ok = 0, dst_ok = 0;
    for (size_t i = 0; i < ns; i++) src_ok |= ref_match(&s[i], info, 1);
    for (size_t i = 0; i < nd; i++) dst_ok |= ref_match(&d[i], info, 0);
    return src_ok && dst_ok;
}

/* A prefix range around an anchor address: the packet's own (so matches happen) or one with its first
 * byte flipped (so mismatches do). The family may differ from the packet's. */
static inner_selector_t make_selector(const uint8_t *b, const inner_info_t *info, int use_src)
{
    inner_selector_t s;
    memset(&s, 0, sizeof(s));
    s.family = (b[0] & SEL_FAMILY6) ? 6 : 4;
    s.proto = (b[0] & SEL_ANY_PROTO) ? 0 : b[2];
    s.port_lo = rd16(b + 3);
    s.port_hi = rd16(b + 5);
    size_t bits = s.family == 4 ? 32 : 128, alen = bits / 8;
    uint8_t anchor[ADDR_LEN];
    memcpy(anchor, use_src ? info->src : info->dst, ADDR_LEN);
    if (!(b[0] & SEL_ANCHORED)) anchor[0] ^= 0x80;
    size_t prefix = b[1] % (bits + 1);
    for (size_t i = 0; i < alen; i++) {
        size_t keep = prefix > i * 8 ? (prefix - i * 8 >= 8 ? 8 : prefix - i * 8) : 0;
        uint8_t mask = (uint8_t)(0xff00 >> keep);
        s.lo[i] = anchor[i] & mask;
        s.hi[i] = anchor[i] | (uint8_t)~mask;
    }
    return s;
}

/* ---- parse ---------------------------------------------------------------------------------------------- */

static void check_info(const uint8_t *pkt, size_t len, const inner_info_t *info)
{
    size_t hdr;
    REQUIRE(info->family == pkt[0] >> 4 && info->length <= len && info->length <= UINT16_MAX);
    if (info->family == 4) {
        hdr = (size_t)(pkt[0] & 0x0f) * 4;
        uint16_t frag = rd16(pkt + 6);
        REQUIRE(hdr >= INNER_IPV4_MIN_HDR && info->length == rd16(pkt + 2) && info->length >= hdr);
        REQUIRE(info->proto == pkt[9] && info->df == ((frag & IPV4_DF) != 0));
        REQUIRE(info->fragment == ((frag & (IPV4_MF | IPV4_OFFSET)) != 0));
        REQUIRE(memcmp(info->src, pkt + 12, 4) == 0 && memcmp(info->dst, pkt + 16, 4) == 0);
        if (frag & IPV4_OFFSET) REQUIRE(!info->ports_known); /* a later fragment has no transport header */
    } else {
        hdr = INNER_IPV6_HDR;
        REQUIRE(info->family == 6 && info->df == 1 && info->length == INNER_IPV6_HDR + rd16(pkt + 4));
        REQUIRE(memcmp(info->src, pkt + 8, ADDR_LEN) == 0 && memcmp(info->dst, pkt + 24, ADDR_LEN) == 0);
    }
    for (size_t i = (info->family == 4 ? 4 : ADDR_LEN); i < ADDR_LEN; i++)
        REQUIRE(info->src[i] == 0 && info->dst[i] == 0);
    if (info->ports_known) {
        int icmp = info->proto == INNER_PROTO_ICMP || info->proto == INNER_PROTO_ICMPV6;
        REQUIRE(info->l4_offset >= hdr && (size_t)info->l4_offset + (icmp ? 2 : 4) <= info->length);
        REQUIRE(info->sport == rd16(pkt + info->l4_offset));
        REQUIRE(info->dport == (icmp ? info->sport : rd16(pkt + info->l4_offset + 2)));
    }
}

/* ---- MSS clamp --------------------------------------------------------------------------------------------- */

static void check_clamp(const uint8_t *pkt, size_t len, const inner_info_t *info, uint16_t mss)
{
    uint8_t *c = dup_exact(pkt, len);
    int changed = inner_clamp_mss(c, info, mss);
    REQUIRE(changed == 0 || changed == 1);
    if (!changed) {
        REQUIRE(len == 0 || memcmp(c, pkt, len) == 0);
        free(c);
        return;
    }
    REQUIRE(mss != 0 && info->proto == INNER_PROTO_TCP && info->ports_known && !info->fragment);
    size_t l4 = info->l4_offset, doff = (size_t)(pkt[l4 + 12] >> 4) * 4;
    REQUIRE(doff > TCP_MIN && l4 + doff <= info->length);
    /* the changed bytes, apart from the checksum field: inside one 2-byte MSS value */
    size_t first = SIZE_MAX, last = 0;
    for (size_t i = 0; i < len; i++) {
        if (c[i] == pkt[i] || i == l4 + TCP_CSUM_AT || i == l4 + TCP_CSUM_AT + 1) continue;
        if (first == SIZE_MAX) first = i;
        last = i;
    }
    REQUIRE(first != SIZE_MAX && last - first <= 1);
    size_t at = SIZE_MAX; /* where the 16-bit value starts: at `first`, or one before it */
    for (size_t f = first > 0 ? first - 1 : 0; f <= first; f++)
        if (f >= l4 + TCP_MIN + 2 && f + 2 <= l4 + doff && last <= f + 1 && rd16(c + f) == mss && c[f - 2] == 2 &&
            c[f - 1] == 4)
            at = f;
    REQUIRE(at != SIZE_MAX && rd16(pkt + at) > mss);
    /* RFC 1624 incremental update: a right checksum stays right, a wrong one stays wrong */
    REQUIRE(l4_sum_ok(info->family, info->src, info->dst, INNER_PROTO_TCP, c + l4, info->length - l4) ==
            l4_sum_ok(info->family, info->src, info->dst, INNER_PROTO_TCP, pkt + l4, info->length - l4));
    inner_info_t again;
    REQUIRE(inner_parse(c, len, &again) == 0 && memcmp(&again, info, sizeof(again)) == 0);
    REQUIRE(inner_clamp_mss(c, &again, mss) == 0);
    free(c);
}

/* ---- ICMP too big ---------------------------------------------------------------------------------------------- */

/* The reference rule: ICMP errors are never answered (RFC 1122 3.2.2, RFC 4443 2.4 e.1). Unknown type: assume one. */
static int ref_is_icmp_error(const uint8_t *pkt, const inner_info_t *info)
{
    if (info->proto != INNER_PROTO_ICMP && info->proto != INNER_PROTO_ICMPV6) return 0;
    if (!info->ports_known) return 1;
    uint8_t type = pkt[info->l4_offset];
    if (info->proto == INNER_PROTO_ICMPV6) return type < 128;
    return !(type == 0 || type == 8 || type == 13 || type == 14); /* echo reply/request, timestamp pair */
}

/* The reference rule: no ICMP error to an unspecified, broadcast or multicast source (RFC 1812 4.3.2.7,
 * RFC 4443 2.4 e). */
static int ref_source_may_get_icmp(const inner_info_t *info)
{
    if (info->family == 4) {
        int all_zero = !info->src[0] && !info->src[1] && !info->src[2] && !info->src[3];
        int all_ones = info->src[0] == 255 && info->src[1] == 255 && info->src[2] == 255 && info->src[3] == 255;
        return !all_zero && !all_ones && (info->src[0] < 224 || info->src[0] > 239);
    }
    int all_zero = 1;
    for (int i = 0; i < 16; i++) all_zero &= info->src[i] == 0;
    return !all_zero && info->src[0] != 0xff;
}

static void check_too_big(const uint8_t *pkt, const inner_info_t *info, uint16_t mtu, const uint8_t *src)
{
    uint8_t *out = malloc(TOO_BIG_CAP);
    REQUIRE(out != NULL);
    size_t m = inner_too_big(pkt, info, mtu, src, out, TOO_BIG_CAP);
    int due = info->df && !ref_is_icmp_error(pkt, info) && ref_source_may_get_icmp(info);
    REQUIRE((m != 0) == due && m <= TOO_BIG_CAP);
    if (m == 0) {
        free(out);
        return;
    }
    inner_info_t a;
    REQUIRE(inner_parse(out, m, &a) == 0 && a.family == info->family && a.length == m && a.ports_known);
    REQUIRE(!a.fragment && a.df == (info->family == 6)); /* IPv4 answers may be fragmented on their way */
    size_t alen = info->family == 4 ? 4 : ADDR_LEN, hdr = info->family == 4 ? INNER_IPV4_MIN_HDR : INNER_IPV6_HDR;
    REQUIRE(memcmp(a.dst, info->src, alen) == 0 && memcmp(a.src, src ? src : info->dst, alen) == 0);
    const uint8_t *icmp = out + hdr;
    size_t quote = m - hdr - ICMP_HDR;
    if (info->family == 4) {
        size_t pos = 0;
        REQUIRE(a.proto == INNER_PROTO_ICMP && a.sport == 0x0304 && rd16(icmp + 6) == mtu);
        REQUIRE(sums_to_ones(sum_bytes(0, out, hdr, &pos)));
        pos = 0;
        REQUIRE(sums_to_ones(sum_bytes(0, icmp, m - hdr, &pos)));
        size_t ihl = (size_t)(pkt[0] & 0x0f) * 4;
        REQUIRE(quote == (ihl + 8 < info->length ? ihl + 8 : info->length)); /* RFC 792: header + 64 bits */
    } else {
        REQUIRE(a.proto == INNER_PROTO_ICMPV6 && a.sport == 0x0200 && rd16(icmp + 4) == 0 && rd16(icmp + 6) == mtu);
        REQUIRE(l4_sum_ok(6, out + 8, out + 24, INNER_PROTO_ICMPV6, icmp, m - hdr));
        REQUIRE(quote == (info->length < TOO_BIG_CAP - hdr - ICMP_HDR ? info->length : TOO_BIG_CAP - hdr - ICMP_HDR));
    }
    REQUIRE(memcmp(icmp + ICMP_HDR, pkt, quote) == 0);
    uint8_t *again = malloc(TOO_BIG_CAP);
    REQUIRE(again != NULL && inner_too_big(out, &a, mtu, NULL, again, TOO_BIG_CAP) == 0); /* an error: never answered */
    free(again);
    uint8_t *small = malloc(m - 1); /* exactly one byte short: nothing may be written */
    REQUIRE(small != NULL && inner_too_big(pkt, info, mtu, src, small, m - 1) == 0);
    free(small);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < CFG_BYTES || size > FUZZ_MAX_INPUT) return 0;
    size_t n_src = data[0] & 3, n_dst = (data[0] >> 2) & 3, pos = CFG_BYTES;
    uint16_t mss = rd16(data + 1), mtu = rd16(data + 3);
    const uint8_t *sel_bytes = data + pos;
    pos += (n_src + n_dst) * SEL_BYTES;
    const uint8_t *icmp_src = NULL;
    if (data[0] & CFG_ICMP_SRC) {
        icmp_src = data + pos;
        pos += ADDR_LEN;
    }
    if (pos > size) return 0;
    size_t len = size - pos;
    uint8_t *pkt = dup_exact(data + pos, len);
    uint8_t *src = icmp_src ? dup_exact(icmp_src, ADDR_LEN) : NULL;

    inner_info_t info;
    int rc = inner_parse(pkt, len, &info);
    REQUIRE(rc == 0 || rc == -1);
    if (rc == 0) {
        check_info(pkt, len, &info);
        inner_info_t cut;
        REQUIRE(inner_parse(pkt, info.length, &cut) == 0 && memcmp(&cut, &info, sizeof(cut)) == 0);
        check_clamp(pkt, len, &info, mss);
        check_too_big(pkt, &info, mtu, src);
        inner_selector_t s[MAX_SIDE], d[MAX_SIDE];
        for (size_t i = 0; i < n_src; i++) s[i] = make_selector(sel_bytes + i * SEL_BYTES, &info, 1);
        for (size_t i = 0; i < n_dst; i++) d[i] = make_selector(sel_bytes + (n_src + i) * SEL_BYTES, &info, 0);
        for (size_t i = 0; i < n_src; i++) REQUIRE(inner_selector_match(&s[i], &info, 1) == ref_match(&s[i], &info, 1));
        for (size_t i = 0; i < n_dst; i++) REQUIRE(inner_selector_match(&d[i], &info, 0) == ref_match(&d[i], &info, 0));
        REQUIRE(inner_policy_match(s, n_src, d, n_dst, &info) == ref_policy(s, n_src, d, n_dst, &info));
    }
    free(src);
    free(pkt);
    return 0;
}
