/* The inner (plaintext) IP packets of a tunnel: parsing them into a 5-tuple, matching traffic
 * selectors (RFC 7296 3.13.1, RFC 4301 4.4.1), TCP MSS clamping and ICMP "too big" replies.
 *
 * Pure functions over caller buffers: no allocation, no locks, no OpenSSL, so they can be unit
 * tested and fuzzed on their own. Every read is bounded by the length passed in.
 */
#ifndef ESP_INNER_H
#define ESP_INNER_H

#include <stddef.h>
#include <stdint.h>

#define INNER_IPV4_MIN_HDR 20
#define INNER_IPV6_HDR 40
#define INNER_MAX_EXT_HEADERS 8   /* IPv6 extension headers walked before giving up on ports */
#define INNER_IPV6_MIN_MTU 1280   /* RFC 8200 5: an ICMPv6 error must fit in this */
#define INNER_ICMP_QUOTE_V4 8     /* RFC 792: the original header + 64 bits of its data */

#define INNER_PROTO_ICMP 1
#define INNER_PROTO_TCP 6
#define INNER_PROTO_UDP 17
#define INNER_PROTO_ICMPV6 58
#define INNER_PROTO_SCTP 132
#define INNER_PROTO_UDPLITE 136

/* What the policies look at. Addresses in network byte order; IPv4 uses the first 4 bytes. */
typedef struct {
    uint8_t family;       /* 4 or 6 */
    uint8_t proto;        /* transport protocol (after IPv6 extension headers) */
    uint8_t ports_known;  /* 0: a non-first fragment or an unwalked header: only "any port" matches */
    uint8_t df;           /* IPv4 Don't Fragment (IPv6 is never fragmented by routers: treated as 1) */
    uint8_t fragment;     /* part of a fragmented packet (IPv4 MF or offset, IPv6 fragment header) */
    uint16_t sport, dport;/* ICMP/ICMPv6: type << 8 | code in both (RFC 4301 4.4.1.1) */
    uint16_t l4_offset;   /* offset of the transport header, valid when ports_known */
    uint16_t length;      /* the IP packet's own length (<= the buffer length) */
    uint8_t src[16], dst[16];
} inner_info_t;

/* One traffic selector: an address range, a protocol (0 = any) and a port range. */
typedef struct {
    uint8_t family;       /* 4 or 6 */
    uint8_t proto;
    uint16_t port_lo, port_hi;
    uint8_t lo[16], hi[16];
} inner_selector_t;

/* 0 and *info filled, or -1: not an IPv4/IPv6 packet we can use (truncated, bad header, lying length). */
int inner_parse(const uint8_t *pkt, size_t len, inner_info_t *info);

/* Does address `addr` / port `port` of protocol `proto` lie inside selector `ts`? */
int inner_selector_match(const inner_selector_t *ts, const inner_info_t *info, int use_src);

/* 1 if the packet lies inside the selectors: source in one of `src_ts`, destination in one of `dst_ts`. */
int inner_policy_match(const inner_selector_t *src_ts, size_t n_src, const inner_selector_t *dst_ts, size_t n_dst,
                       const inner_info_t *info);

/* Lower the MSS option of a TCP SYN (or SYN-ACK) to `mss` in place, fixing the checksum (RFC 1624).
 * Returns 1 if the packet was changed, 0 otherwise (not a SYN, no MSS option, MSS already small). */
int inner_clamp_mss(uint8_t *pkt, const inner_info_t *info, uint16_t mss);

/* Build the ICMP "fragmentation needed" (IPv4, RFC 792/1191) or ICMPv6 "packet too big" (RFC 4443)
 * answer to `pkt` for next-hop MTU `mtu` into out, from `src` (our address of that family; NULL: the
 * packet's own destination). Returns its length, or 0 when no answer is due (IPv4 without DF, an ICMP
 * error itself, out too small). */
size_t inner_too_big(const uint8_t *pkt, const inner_info_t *info, uint16_t mtu, const uint8_t *src, uint8_t *out,
                     size_t out_cap);

#endif
