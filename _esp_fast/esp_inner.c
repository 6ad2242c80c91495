/* Inner IP packets of a tunnel: see esp_inner.h. */
#include <string.h>

#include "esp_inner.h"

#define IPV4_FLAG_DF 0x4000
#define IPV4_FLAG_MF 0x2000
#define IPV4_OFFSET_MASK 0x1fff
#define IPV6_FRAG_OFFSET_MASK 0xfff8
#define IPV6_EXT_HOP_BY_HOP 0
#define IPV6_EXT_ROUTING 43
#define IPV6_EXT_FRAGMENT 44
#define IPV6_EXT_DEST_OPTS 60
#define IPV6_FRAG_HDR_LEN 8
#define TCP_MIN_HDR 20
#define TCP_FLAG_SYN 0x02
#define TCP_OPT_END 0
#define TCP_OPT_NOP 1
#define TCP_OPT_MSS 2
#define TCP_OPT_MSS_LEN 4
#define ICMP_HDR_LEN 8
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMPV6_PACKET_TOO_BIG 2
#define ICMPV6_FIRST_INFO_TYPE 128 /* types below are errors (RFC 4443 2.1) */
#define REPLY_TTL 64

static uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

static int has_ports(uint8_t proto)
{
    return proto == INNER_PROTO_TCP || proto == INNER_PROTO_UDP || proto == INNER_PROTO_SCTP ||
           proto == INNER_PROTO_UDPLITE;
}

/* Ports (or ICMP type/code) of the transport header at off, if the packet holds them. */
static void read_ports(const uint8_t *pkt, size_t total, size_t off, inner_info_t *info)
{
    if (has_ports(info->proto) && off + 4 <= total) {
        info->sport = be16(pkt + off);
        info->dport = be16(pkt + off + 2);
        info->ports_known = 1;
    } else if ((info->proto == INNER_PROTO_ICMP || info->proto == INNER_PROTO_ICMPV6) && off + 2 <= total) {
        info->sport = info->dport = be16(pkt + off);
        info->ports_known = 1;
    }
    info->l4_offset = (uint16_t)off;
}

static int parse_ipv4(const uint8_t *pkt, size_t len, inner_info_t *info)
{
    if (len < INNER_IPV4_MIN_HDR) return -1;
    size_t ihl = (size_t)(pkt[0] & 0x0f) * 4, total = be16(pkt + 2);
    if (ihl < INNER_IPV4_MIN_HDR || ihl > len || total < ihl || total > len) return -1;
    uint16_t frag = be16(pkt + 6);
    info->family = 4;
    info->proto = pkt[9];
    info->df = (frag & IPV4_FLAG_DF) != 0;
    info->fragment = (frag & (IPV4_FLAG_MF | IPV4_OFFSET_MASK)) != 0;
    info->length = (uint16_t)total;
    memcpy(info->src, pkt + 12, 4);
    memcpy(info->dst, pkt + 16, 4);
    if ((frag & IPV4_OFFSET_MASK) == 0) read_ports(pkt, total, ihl, info);
    return 0;
}

static int parse_ipv6(const uint8_t *pkt, size_t len, inner_info_t *info)
{
    if (len < INNER_IPV6_HDR) return -1;
    size_t total = INNER_IPV6_HDR + (size_t)be16(pkt + 4);
    if (total > len) return -1;
    if (total == INNER_IPV6_HDR && pkt[6] == IPV6_EXT_HOP_BY_HOP) return -1; /* a jumbogram (RFC 2675): never here */
    info->family = 6;
    info->df = 1;
    info->length = (uint16_t)total;
    memcpy(info->src, pkt + 8, 16);
    memcpy(info->dst, pkt + 24, 16);
    uint8_t nh = pkt[6];
    size_t off = INNER_IPV6_HDR;
    for (int i = 0; i <= INNER_MAX_EXT_HEADERS; i++) { /* up to the limit of extension headers, then the transport */
        if (nh == IPV6_EXT_HOP_BY_HOP || nh == IPV6_EXT_ROUTING || nh == IPV6_EXT_DEST_OPTS) {
            if (off + 2 > total) break;
            size_t hlen = ((size_t)pkt[off + 1] + 1) * 8;
            nh = pkt[off];
            off += hlen;
            if (off > total) break;
        } else if (nh == IPV6_EXT_FRAGMENT) {
            if (off + IPV6_FRAG_HDR_LEN > total) break;
            info->fragment = 1;
            nh = pkt[off];
            int first = (be16(pkt + off + 2) & IPV6_FRAG_OFFSET_MASK) == 0;
            off += IPV6_FRAG_HDR_LEN;
            if (!first) { info->proto = nh; return 0; }
        } else {
            info->proto = nh;
            read_ports(pkt, total, off, info);
            return 0;
        }
    }
    info->proto = nh; /* headers we could not walk: the protocol is a guess and the ports unknown */
    return 0;
}

int inner_parse(const uint8_t *pkt, size_t len, inner_info_t *info)
{
    memset(info, 0, sizeof(*info));
    if (pkt == NULL || len == 0) return -1;
    if (len > UINT16_MAX) len = UINT16_MAX;
    switch (pkt[0] >> 4) {
    case 4: return parse_ipv4(pkt, len, info);
    case 6: return parse_ipv6(pkt, len, info);
    default: return -1;
    }
}

int inner_selector_match(const inner_selector_t *ts, const inner_info_t *info, int use_src)
{
    if (ts->family != info->family) return 0;
    if (ts->proto != 0 && ts->proto != info->proto) return 0;
    size_t n = info->family == 4 ? 4 : 16;
    const uint8_t *addr = use_src ? info->src : info->dst;
    if (memcmp(addr, ts->lo, n) < 0 || memcmp(addr, ts->hi, n) > 0) return 0;
    if (ts->port_lo == 0 && ts->port_hi == UINT16_MAX) return 1;
    if (ts->port_lo == UINT16_MAX && ts->port_hi == 0) return !info->ports_known; /* OPAQUE (RFC 4301) */
    if (!info->ports_known) return 0;
    uint16_t port = use_src ? info->sport : info->dport;
    return port >= ts->port_lo && port <= ts->port_hi;
}

int inner_policy_match(const inner_selector_t *src_ts, size_t n_src, const inner_selector_t *dst_ts, size_t n_dst,
                       const inner_info_t *info)
{
    int src_ok = 0;
    for (size_t i = 0; i < n_src && !src_ok; i++) src_ok = inner_selector_match(&src_ts[i], info, 1);
    if (!src_ok) return 0;
    for (size_t i = 0; i < n_dst; i++)
        if (inner_selector_match(&dst_ts[i], info, 0)) return 1;
    return 0;
}

/* ---- checksums ------------------------------------------------------------------------------ */

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t acc)
{
    for (; n >= 2; p += 2, n -= 2) acc += be16(p);
    if (n) acc += (uint32_t)p[0] << 8;
    return acc;
}

static uint16_t fold(uint32_t acc)
{
    while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)~acc;
}

/* Checksum of an upper-layer segment with its IPv4 or IPv6 pseudo-header (RFC 793, RFC 8200 8.1). */
static uint16_t l4_checksum(int family, const uint8_t *src, const uint8_t *dst, uint8_t proto, const uint8_t *seg,
                            size_t seg_len)
{
    size_t alen = family == 4 ? 4 : 16;
    uint32_t acc = sum16(src, alen, 0);
    acc = sum16(dst, alen, acc);
    acc += proto;
    acc += (uint32_t)(seg_len & 0xffff) + (uint32_t)(seg_len >> 16);
    return fold(sum16(seg, seg_len, acc));
}

/* ---- MSS clamping ------------------------------------------------------------------------------ */

int inner_clamp_mss(uint8_t *pkt, const inner_info_t *info, uint16_t mss)
{
    if (mss == 0 || info->proto != INNER_PROTO_TCP || !info->ports_known || info->fragment) return 0;
    size_t off = info->l4_offset, total = info->length;
    if (off + TCP_MIN_HDR > total) return 0;
    uint8_t *tcp = pkt + off;
    size_t doff = (size_t)(tcp[12] >> 4) * 4;
    if (!(tcp[13] & TCP_FLAG_SYN) || doff < TCP_MIN_HDR || off + doff > total) return 0;
    for (size_t i = TCP_MIN_HDR; i < doff;) {
        uint8_t kind = tcp[i];
        if (kind == TCP_OPT_END) break;
        if (kind == TCP_OPT_NOP) { i++; continue; }
        if (i + 1 >= doff) break;
        size_t olen = tcp[i + 1];
        if (olen < 2 || i + olen > doff) break;
        if (kind == TCP_OPT_MSS && olen == TCP_OPT_MSS_LEN) {
            if (be16(tcp + i + 2) <= mss) return 0;
            /* RFC 1624 incremental update over the 16-bit words that hold the field (it may start at an
             * odd offset): a wrong checksum stays wrong, and no pseudo-header is needed */
            size_t first = (i + 2) & ~(size_t)1, last = (i + 4 + 1) & ~(size_t)1;
            if (last > doff) return 0; /* the option ends the header at an odd offset: its word has no pair */
            uint32_t acc = (uint16_t)~be16(tcp + 16);
            for (size_t w = first; w < last; w += 2) acc += (uint16_t)~be16(tcp + w);
            put16(tcp + i + 2, mss);
            for (size_t w = first; w < last; w += 2) acc += be16(tcp + w);
            put16(tcp + 16, fold(acc));
            return 1;
        }
        i += olen;
    }
    return 0;
}

/* ---- ICMP "too big" ---------------------------------------------------------------------------- */

/* RFC 1812 4.3.2.7 / RFC 4443 2.4 (e): no ICMP error to an unspecified, broadcast or multicast source. */
static int source_may_get_icmp(const inner_info_t *info)
{
    static const uint8_t zero[16];
    if (info->family == 4) {
        uint32_t a = ((uint32_t)info->src[0] << 24) | ((uint32_t)info->src[1] << 16) | ((uint32_t)info->src[2] << 8) |
                     info->src[3];
        return a != 0 && a != UINT32_MAX && (info->src[0] & 0xf0) != 0xe0;
    }
    return memcmp(info->src, zero, 16) != 0 && info->src[0] != 0xff;
}

static int is_icmp_error(const uint8_t *pkt, const inner_info_t *info)
{
    if (!info->ports_known) return info->proto == INNER_PROTO_ICMP || info->proto == INNER_PROTO_ICMPV6;
    uint8_t type = pkt[info->l4_offset];
    if (info->proto == INNER_PROTO_ICMP) return type != 0 && type != 8 && type != 13 && type != 14;
    if (info->proto == INNER_PROTO_ICMPV6) return type < ICMPV6_FIRST_INFO_TYPE;
    return 0;
}

size_t inner_too_big(const uint8_t *pkt, const inner_info_t *info, uint16_t mtu, const uint8_t *src, uint8_t *out,
                     size_t out_cap)
{
    if (!info->df || is_icmp_error(pkt, info) || !source_may_get_icmp(info)) return 0;
    if (info->family == 4) {
        size_t ihl = (size_t)(pkt[0] & 0x0f) * 4;
        size_t quote = ihl + INNER_ICMP_QUOTE_V4 < info->length ? ihl + INNER_ICMP_QUOTE_V4 : info->length;
        size_t n = INNER_IPV4_MIN_HDR + ICMP_HDR_LEN + quote;
        if (n > out_cap) return 0;
        memset(out, 0, INNER_IPV4_MIN_HDR + ICMP_HDR_LEN);
        out[0] = 0x45;
        put16(out + 2, (uint16_t)n);
        out[8] = REPLY_TTL;
        out[9] = INNER_PROTO_ICMP;
        memcpy(out + 12, src ? src : info->dst, 4);
        memcpy(out + 16, info->src, 4);
        put16(out + 10, fold(sum16(out, INNER_IPV4_MIN_HDR, 0)));
        uint8_t *icmp = out + INNER_IPV4_MIN_HDR;
        icmp[0] = ICMP_DEST_UNREACH;
        icmp[1] = ICMP_FRAG_NEEDED;
        put16(icmp + 6, mtu);
        memcpy(icmp + ICMP_HDR_LEN, pkt, quote);
        put16(icmp + 2, fold(sum16(icmp, ICMP_HDR_LEN + quote, 0)));
        return n;
    }
    size_t room = INNER_IPV6_MIN_MTU - INNER_IPV6_HDR - ICMP_HDR_LEN;
    size_t quote = info->length < room ? info->length : room;
    size_t n = INNER_IPV6_HDR + ICMP_HDR_LEN + quote;
    if (n > out_cap) return 0;
    memset(out, 0, INNER_IPV6_HDR + ICMP_HDR_LEN);
    out[0] = 0x60;
    put16(out + 4, (uint16_t)(ICMP_HDR_LEN + quote));
    out[6] = INNER_PROTO_ICMPV6;
    out[7] = REPLY_TTL;
    memcpy(out + 8, src ? src : info->dst, 16);
    memcpy(out + 24, info->src, 16);
    uint8_t *icmp = out + INNER_IPV6_HDR;
    icmp[0] = ICMPV6_PACKET_TOO_BIG;
    icmp[4] = 0; icmp[5] = 0;
    put16(icmp + 6, mtu);
    memcpy(icmp + ICMP_HDR_LEN, pkt, quote);
    put16(icmp + 2, l4_checksum(6, out + 8, out + 24, INNER_PROTO_ICMPV6, icmp, ICMP_HDR_LEN + quote));
    return n;
}
