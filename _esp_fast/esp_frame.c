/* Ethernet frames of the ESP data plane: see esp_frame.h. */
#include <string.h>

#include "esp_core.h"
#include "esp_csum.h"
#include "esp_frame.h"

#define IPV4_FLAG_DF 0x4000
#define IPV4_FLAG_MF 0x2000
#define IPV4_OFFSET_MASK 0x1fff
#define IPV4_VERSION_IHL5 0x45
#define IPV6_FLOW_LABEL_MAX 0xfffff
#define CSUM_OK 0xffff            /* a header summed with its checksum field folds to all ones */
#define CSUM_MANGLED_ZERO 0xffff  /* a computed UDP checksum of 0 is sent as its twin: 0 means "none" (RFC 768) */

static uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

/* ---- checksums --------------------------------------------------------------------------------- */

/* csum_add, csum_fold, store_native16: esp_csum.h */

/* ---- receive ----------------------------------------------------------------------------------- */

static int verdict(esp_frame_t *out, int v, int reason)
{
    out->verdict = (uint8_t)v;
    out->reason = (uint8_t)reason;
    return 0;
}

static int pass(esp_frame_t *out) { return verdict(out, FRAME_PASS, FRAME_DROP_NONE); }
static int drop(esp_frame_t *out, int reason) { return verdict(out, FRAME_DROP, reason); }

static int found_esp(const uint8_t *frame, size_t off, size_t len, int kind, esp_frame_t *out)
{
    if (len < FRAME_ESP_MIN_LEN) return drop(out, FRAME_DROP_ESP_SHORT);
    out->esp_offset = (uint32_t)off;
    out->esp_len = (uint32_t)len;
    out->spi = be32(frame + off);
    return verdict(out, kind, FRAME_DROP_NONE);
}

/* The IP payload [off, off + len) of protocol out->proto, inside the frame. */
static int parse_l4(const uint8_t *frame, size_t off, size_t len, uint16_t natt_port, esp_frame_t *out)
{
    if (out->proto == FRAME_PROTO_ESP) return found_esp(frame, off, len, FRAME_ESP_RAW, out);
    if (out->proto != FRAME_PROTO_UDP) return pass(out);
    /* no port can be judged without the header, and the kernel would drop it as well */
    if (len < FRAME_UDP_HDR_LEN) return drop(out, FRAME_DROP_UDP_LENGTH);
    const uint8_t *udp = frame + off;
    out->sport = be16(udp);
    out->dport = be16(udp + 2);
    if (natt_port == 0 || out->dport != natt_port) return pass(out);
    /* The checksum is not verified: the ESP ICV covers every byte that matters, and IKE (passed) is
     * checked by the kernel. A UDP length short of the IP payload leaves bytes after the datagram,
     * which the kernel trims as well. */
    size_t ulen = be16(udp + 4);
    if (ulen < FRAME_UDP_HDR_LEN || ulen > len) return drop(out, FRAME_DROP_UDP_LENGTH);
    const uint8_t *payload = udp + FRAME_UDP_HDR_LEN;
    size_t plen = ulen - FRAME_UDP_HDR_LEN;
    switch (esp_udp_classify(payload, plen)) {
    case ESP_UDP_KEEPALIVE: /* RFC 3948 2.3: nothing to do, and a keepalive is no error */
    case ESP_UDP_IKE:       /* non-ESP marker: IKE goes to the daemon's socket */
        return pass(out);
    case ESP_UDP_ESP:
        return found_esp(frame, off + FRAME_UDP_HDR_LEN, plen, FRAME_ESP_UDP, out);
    default:
        return drop(out, FRAME_DROP_ESP_SHORT);
    }
}

static int parse_ipv4(const uint8_t *frame, size_t l3, size_t len, uint16_t natt_port, esp_frame_t *out)
{
    const uint8_t *ip = frame + l3;
    size_t avail = len - l3;
    if (avail < FRAME_IPV4_MIN_HDR) return drop(out, FRAME_DROP_SHORT_L3);
    if (ip[0] >> 4 != 4) return drop(out, FRAME_DROP_IP_VERSION);
    size_t ihl = (size_t)(ip[0] & 0x0f) * 4, total = be16(ip + 2);
    if (ihl < FRAME_IPV4_MIN_HDR || ihl > avail) return drop(out, FRAME_DROP_IP_HDR_LEN);
    if (total < ihl || total > avail) return drop(out, FRAME_DROP_IP_LENGTH);
    if (csum_fold(csum_add(0, ip, ihl)) != CSUM_OK) return drop(out, FRAME_DROP_IP_CHECKSUM);
    out->family = 4;
    out->proto = ip[9];
    out->l3_offset = (uint32_t)l3;
    memcpy(out->src, ip + 12, 4);
    memcpy(out->dst, ip + 16, 4);
    /* a fragment, even the first, is reassembled by the kernel: only whole packets are ours */
    if (be16(ip + 6) & (IPV4_FLAG_MF | IPV4_OFFSET_MASK)) return pass(out);
    return parse_l4(frame, l3 + ihl, total - ihl, natt_port, out);
}

static int parse_ipv6(const uint8_t *frame, size_t l3, size_t len, uint16_t natt_port, esp_frame_t *out)
{
    const uint8_t *ip = frame + l3;
    size_t avail = len - l3;
    if (avail < FRAME_IPV6_HDR) return drop(out, FRAME_DROP_SHORT_L3);
    if (ip[0] >> 4 != 6) return drop(out, FRAME_DROP_IP_VERSION);
    size_t payload = be16(ip + 4);
    if (payload > avail - FRAME_IPV6_HDR) return drop(out, FRAME_DROP_IP_LENGTH);
    out->family = 6;
    out->proto = ip[6];
    out->l3_offset = (uint32_t)l3;
    memcpy(out->src, ip + 8, 16);
    memcpy(out->dst, ip + 24, 16);
    /* Only ESP or UDP right behind the fixed header is ours. Any extension header (hop-by-hop 0, routing,
     * destination options, fragment 44, a jumbogram's) goes to the kernel: fragments need reassembly,
     * hop-by-hop and routing headers need processing we do not do, and all are rare in front of ESP,
     * so walking them here would add parsing risk for no traffic. */
    if (out->proto != FRAME_PROTO_ESP && out->proto != FRAME_PROTO_UDP) return pass(out);
    return parse_l4(frame, l3 + FRAME_IPV6_HDR, payload, natt_port, out);
}

static int is_vlan_tpid(uint16_t type) { return type == FRAME_ETHERTYPE_VLAN || type == FRAME_ETHERTYPE_QINQ; }

int esp_frame_parse(const uint8_t *frame, size_t len, const esp_frame_config_t *cfg, esp_frame_t *out)
{
    if (out == NULL || (frame == NULL && len != 0)) return -1;
    memset(out, 0, sizeof(*out));
    uint16_t natt_port = cfg != NULL ? cfg->natt_port : FRAME_NATT_PORT;
    if (len < FRAME_ETH_HDR_LEN) return drop(out, FRAME_DROP_SHORT_L2);
    size_t at = 2 * FRAME_ETH_ALEN; /* the ethertype, or the TPID of a tag */
    uint16_t type = be16(frame + at);
    while (is_vlan_tpid(type) && out->n_vlans < FRAME_MAX_VLANS) {
        if (at + FRAME_VLAN_TAG_LEN + 2 > len) return drop(out, FRAME_DROP_SHORT_L2);
        out->vlan[out->n_vlans++] = be16(frame + at + 2) & FRAME_VLAN_ID_MASK;
        at += FRAME_VLAN_TAG_LEN;
        type = be16(frame + at);
    }
    out->ethertype = type;
    size_t l3 = at + 2;
    if (type == FRAME_ETHERTYPE_IPV4) return parse_ipv4(frame, l3, len, natt_port, out);
    if (type == FRAME_ETHERTYPE_IPV6) return parse_ipv6(frame, l3, len, natt_port, out);
    return pass(out); /* ARP, LLDP, a third VLAN tag, 802.3 lengths: the kernel's */
}

static const char *const VERDICT_NAMES[FRAME_VERDICT_COUNT] = {"ESP_RAW", "ESP_UDP", "PASS", "DROP"};
static const char *const DROP_NAMES[FRAME_DROP_COUNT] = {
    "NONE", "SHORT_L2", "SHORT_L3", "IP_VERSION", "IP_HDR_LEN", "IP_LENGTH", "IP_CHECKSUM", "UDP_LENGTH",
    "ESP_SHORT",
};

const char *esp_frame_verdict_name(int v) { return v >= 0 && v < FRAME_VERDICT_COUNT ? VERDICT_NAMES[v] : NULL; }
const char *esp_frame_drop_name(int r) { return r >= 0 && r < FRAME_DROP_COUNT ? DROP_NAMES[r] : NULL; }

/* ---- transmit ---------------------------------------------------------------------------------- */

size_t esp_frame_header_len(const esp_frame_tx_t *tx)
{
    if (tx == NULL || (tx->family != 4 && tx->family != 6) || tx->vlan > 1 || tx->flow_label > IPV6_FLOW_LABEL_MAX)
        return 0;
    return FRAME_ETH_HDR_LEN + (tx->vlan ? FRAME_VLAN_TAG_LEN : 0) +
           (tx->family == 4 ? FRAME_IPV4_MIN_HDR : FRAME_IPV6_HDR) + (tx->udp_encap ? FRAME_UDP_HDR_LEN : 0);
}

size_t esp_frame_build(const esp_frame_tx_t *tx, uint8_t *out, size_t cap, size_t esp_len)
{
    size_t hdr = esp_frame_header_len(tx);
    if (hdr == 0 || out == NULL || cap < hdr || esp_len > cap - hdr) return 0;
    size_t l3 = FRAME_ETH_HDR_LEN + (tx->vlan ? FRAME_VLAN_TAG_LEN : 0);
    size_t ip_hdr = tx->family == 4 ? FRAME_IPV4_MIN_HDR : FRAME_IPV6_HDR;
    if (esp_len > FRAME_MAX_IP_LEN - (hdr - l3)) return 0;
    size_t ip_len = hdr - l3 + esp_len;
    uint8_t proto = tx->udp_encap ? FRAME_PROTO_UDP : FRAME_PROTO_ESP;

    memcpy(out, tx->dst_mac, FRAME_ETH_ALEN);
    memcpy(out + FRAME_ETH_ALEN, tx->src_mac, FRAME_ETH_ALEN);
    uint8_t *p = out + 2 * FRAME_ETH_ALEN;
    if (tx->vlan) {
        put16(p, FRAME_ETHERTYPE_VLAN);
        put16(p + 2, tx->vlan_tci);
        p += FRAME_VLAN_TAG_LEN;
    }
    put16(p, tx->family == 4 ? FRAME_ETHERTYPE_IPV4 : FRAME_ETHERTYPE_IPV6);
    uint8_t *ip = out + l3;
    if (tx->family == 4) {
        ip[0] = IPV4_VERSION_IHL5;
        ip[1] = tx->tclass;
        put16(ip + 2, (uint16_t)ip_len);
        put16(ip + 4, tx->ip_id);
        put16(ip + 6, IPV4_FLAG_DF); /* the peer's path MTU is ours to handle: never fragmented on the way */
        ip[8] = FRAME_TX_HOP_LIMIT;
        ip[9] = proto;
        put16(ip + 10, 0);
        memcpy(ip + 12, tx->src, 4);
        memcpy(ip + 16, tx->dst, 4);
        store_native16(ip + 10, (uint16_t)~csum_fold(csum_add(0, ip, FRAME_IPV4_MIN_HDR)));
    } else {
        put32(ip, (uint32_t)6 << 28 | (uint32_t)tx->tclass << 20 | tx->flow_label);
        put16(ip + 4, (uint16_t)(ip_len - FRAME_IPV6_HDR));
        ip[6] = proto;
        ip[7] = FRAME_TX_HOP_LIMIT;
        memcpy(ip + 8, tx->src, 16);
        memcpy(ip + 24, tx->dst, 16);
    }
    if (tx->udp_encap) {
        uint8_t *udp = ip + ip_hdr;
        size_t ulen = FRAME_UDP_HDR_LEN + esp_len;
        put16(udp, tx->sport);
        put16(udp + 2, tx->dport);
        put16(udp + 4, (uint16_t)ulen);
        put16(udp + 6, 0); /* IPv4: no checksum (RFC 3948 2.1: the ICV protects the ESP bytes) */
        if (tx->family == 6) {
            /* pseudo-header: addresses, 32-bit upper-layer length, three zero octets, next header */
            uint8_t tail[8] = {(uint8_t)(ulen >> 24), (uint8_t)(ulen >> 16), (uint8_t)(ulen >> 8), (uint8_t)ulen,
                               0, 0, 0, FRAME_PROTO_UDP};
            uint64_t acc = csum_add(0, ip + 8, 32);
            acc = csum_add(acc, tail, sizeof(tail));
            acc = csum_add(acc, udp, ulen); /* the header (checksum 0) and the ESP bytes already in place */
            uint16_t c = (uint16_t)~csum_fold(acc);
            store_native16(udp + 6, c ? c : CSUM_MANGLED_ZERO);
        }
    }
    return hdr + esp_len;
}

size_t esp_frame_parse_batch(const uint8_t *area, size_t area_len, const uint64_t *addrs, const uint32_t *lens,
                             size_t n, const esp_frame_config_t *cfg, uint32_t *esp_offs, uint32_t *esp_lens,
                             uint8_t *verdicts, uint8_t *reasons)
{
    size_t esp = 0;
    for (size_t i = 0; i < n; i++) {
        esp_frame_t f;
        esp_offs[i] = esp_lens[i] = 0;
        if (addrs[i] > area_len || lens[i] > area_len - addrs[i]) { /* never trust a descriptor */
            verdicts[i] = FRAME_DROP;
            reasons[i] = FRAME_DROP_SHORT_L2;
            continue;
        }
        esp_frame_parse(area + addrs[i], lens[i], cfg, &f);
        verdicts[i] = f.verdict;
        reasons[i] = f.reason;
        if (f.verdict == FRAME_ESP_RAW || f.verdict == FRAME_ESP_UDP) {
            esp_offs[i] = (uint32_t)(addrs[i] + f.esp_offset); /* area_len < 4 GiB: checked by the binding */
            esp_lens[i] = f.esp_len;
            esp++;
        }
    }
    return esp;
}

int esp_frame_encap(struct esp_sa *sa, const esp_frame_tx_t *tx, const uint8_t *in, size_t len, uint8_t *frame,
                    size_t frame_cap, size_t *frame_len)
{
    size_t hlen = esp_frame_header_len(tx), esp_len = 0;
    *frame_len = 0;
    if (hlen == 0 || frame_cap <= hlen) return ESP_ERR_BUFFER;
    int st = esp_encap(sa, 0, in, len, 0, frame + hlen, frame_cap - hlen, &esp_len);
    if (st != ESP_OK) return st;
    *frame_len = esp_frame_build(tx, frame, frame_cap, esp_len);
    return *frame_len ? ESP_OK : ESP_ERR_BUFFER;
}

size_t esp_frame_encap_batch(struct esp_sa *sa, const esp_frame_tx_t *tx, const uint8_t *in, size_t in_len,
                             const uint32_t *offs, const uint32_t *lens, size_t n, uint8_t *area, size_t area_len,
                             const uint64_t *frame_addrs, size_t frame_cap, uint32_t *frame_lens,
                             uint8_t *statuses, uint16_t *next_ip_id)
{
    esp_frame_tx_t hdr = *tx;
    size_t ready = 0;
    for (size_t i = 0; i < n; i++) {
        frame_lens[i] = 0;
        if (frame_addrs[i] > area_len || frame_cap > area_len - frame_addrs[i] || offs[i] > in_len ||
            lens[i] > in_len - offs[i]) {
            statuses[i] = ESP_ERR_BUFFER;
            continue;
        }
        size_t flen = 0;
        statuses[i] = (uint8_t)esp_frame_encap(sa, &hdr, in + offs[i], lens[i], area + frame_addrs[i], frame_cap, &flen);
        if (statuses[i] != ESP_OK) continue;
        frame_lens[i] = (uint32_t)flen;
        hdr.ip_id++;
        ready++;
    }
    *next_ip_id = hdr.ip_id;
    return ready;
}
