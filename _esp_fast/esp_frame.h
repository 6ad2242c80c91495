/* Whole Ethernet frames for a data plane that sits on the device's rings (AF_XDP): classifying a
 * received frame as ESP of ours (raw IP protocol 50, or ESP in UDP to the NAT-T port, RFC 3948) or
 * something for the kernel stack, and writing the Ethernet + IP (+ UDP) headers in front of an ESP
 * packet that was encrypted straight into the transmit frame.
 *
 *   receive:  esp_frame_parse -> ESP_RAW / ESP_UDP: frame + esp_offset, esp_len bytes go to esp_decap_batch
 *                             -> PASS: XDP_PASS (IKE, keepalives, fragments, ARP, everything else)
 *                             -> DROP: malformed, counted by reason
 *   transmit: esp_frame_header_len -> esp_encap into frame + that offset -> esp_frame_build in front
 *
 * Pure functions over caller buffers in the style of esp_inner.h: no allocation, no locks, no I/O; every
 * read is bounded by the length passed in, every write by the capacity. The UDP/4500 demultiplexing rule
 * is esp_core.c's (esp_udp_classify), so there is one copy of it.
 */
#ifndef ESP_FRAME_H
#define ESP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_ETH_ALEN 6
#define FRAME_ETH_HDR_LEN 14       /* destination MAC, source MAC, ethertype */
#define FRAME_VLAN_TAG_LEN 4       /* TPID + TCI */
#define FRAME_MAX_VLANS 2          /* 802.1ad S-tag + 802.1Q C-tag; behind a third tag is "another ethertype" */
#define FRAME_IPV4_MIN_HDR 20
#define FRAME_IPV6_HDR 40
#define FRAME_UDP_HDR_LEN 8
#define FRAME_ESP_MIN_LEN 8        /* SPI + sequence number: less cannot be ESP */
#define FRAME_MAX_IP_LEN 65535     /* IPv4 total length; built IPv6 packets are held to it as well */
#define FRAME_TX_HOP_LIMIT 64      /* TTL / hop limit of built frames */
#define FRAME_NATT_PORT 4500       /* RFC 3948 */
/* The most esp_frame_header_len returns: Ethernet + one VLAN tag + IPv6 + UDP. */
#define FRAME_MAX_HDR_LEN (FRAME_ETH_HDR_LEN + FRAME_VLAN_TAG_LEN + FRAME_IPV6_HDR + FRAME_UDP_HDR_LEN)
/* The longest frame esp_frame_build writes. */
#define FRAME_MAX_LEN (FRAME_ETH_HDR_LEN + FRAME_VLAN_TAG_LEN + FRAME_MAX_IP_LEN)

#define FRAME_ETHERTYPE_IPV4 0x0800
#define FRAME_ETHERTYPE_IPV6 0x86dd
#define FRAME_ETHERTYPE_VLAN 0x8100 /* 802.1Q (C-tag) */
#define FRAME_ETHERTYPE_QINQ 0x88a8 /* 802.1ad (S-tag) */
#define FRAME_VLAN_ID_MASK 0x0fff
#define FRAME_PROTO_UDP 17
#define FRAME_PROTO_ESP 50

enum frame_verdict {
    FRAME_ESP_RAW = 0,   /* IP protocol 50: ESP at esp_offset */
    FRAME_ESP_UDP,       /* ESP in UDP to the NAT-T port: ESP (after the UDP header) at esp_offset */
    FRAME_PASS,          /* not for the fast path: hand it to the kernel stack */
    FRAME_DROP,          /* malformed: `reason` says how */
    FRAME_VERDICT_COUNT,
};

/* Why a frame was dropped. Anything not addressed to the fast path is passed, not dropped, however odd. */
enum frame_drop {
    FRAME_DROP_NONE = 0,    /* the verdict is not FRAME_DROP */
    FRAME_DROP_SHORT_L2,    /* shorter than the Ethernet header and its VLAN tags */
    FRAME_DROP_SHORT_L3,    /* shorter than the fixed IPv4 / IPv6 header */
    FRAME_DROP_IP_VERSION,  /* the IP version is not the ethertype's */
    FRAME_DROP_IP_HDR_LEN,  /* IPv4 IHL below 5, or the header goes past the frame */
    FRAME_DROP_IP_LENGTH,   /* IPv4 total length below the IHL or past the frame; IPv6 payload length past it */
    FRAME_DROP_IP_CHECKSUM, /* IPv4 header checksum */
    FRAME_DROP_UDP_LENGTH,  /* UDP: no room for its header; to the NAT-T port also: length < 8 or past the IP end */
    FRAME_DROP_ESP_SHORT,   /* less than an ESP header (raw; or in UDP, and neither a marker nor a keepalive) */
    FRAME_DROP_COUNT,
};

typedef struct {
    uint16_t natt_port;     /* destination port of ESP in UDP; 0: no NAT-T (every UDP datagram is passed) */
} esp_frame_config_t;

#define FRAME_CONFIG_DEFAULT {FRAME_NATT_PORT}

/* A parsed frame. Fields the parse did not reach are zero. */
typedef struct {
    uint8_t verdict;        /* enum frame_verdict */
    uint8_t reason;         /* enum frame_drop */
    uint8_t family;         /* 4 or 6 once an IP header has been validated, else 0 */
    uint8_t proto;          /* IPv4 protocol / IPv6 next header, with family */
    uint8_t n_vlans;        /* VLAN tags read (0..FRAME_MAX_VLANS) */
    uint16_t vlan[FRAME_MAX_VLANS]; /* their VLAN IDs (12 bits), outer first */
    uint16_t ethertype;     /* of the payload, after the tags */
    uint16_t sport, dport;  /* UDP ports, once a UDP header has been read */
    uint32_t l3_offset;     /* the IP header, with family */
    uint32_t esp_offset;    /* ESP_*: the ESP header (SPI) */
    uint32_t esp_len;       /* ESP_*: to the end of the IP packet (UDP: of the UDP length), never Ethernet padding */
    uint32_t spi;           /* ESP_*: host order */
    uint8_t src[16], dst[16]; /* outer addresses in network order, IPv4 in the first 4 bytes; with family */
} esp_frame_t;

/* Classify one received frame of len bytes (from its destination MAC; no FCS) with cfg (NULL: the
 * defaults). Handles Ethernet II with up to two VLAN tags (0x8100 / 0x88a8, in any order), IPv4
 * (options, header checksum) and IPv6. Returns 0 with *out filled, whatever the verdict; -1 only when
 * out is NULL or frame is NULL with len > 0. */
int esp_frame_parse(const uint8_t *frame, size_t len, const esp_frame_config_t *cfg, esp_frame_t *out);

/* "ESP_RAW", ... / "NONE", "SHORT_L2", ...: the enum names without their prefix; NULL when out of range. */
const char *esp_frame_verdict_name(int verdict);
const char *esp_frame_drop_name(int reason);

/* What to put in front of an outgoing ESP packet. */
typedef struct {
    uint8_t dst_mac[FRAME_ETH_ALEN], src_mac[FRAME_ETH_ALEN];
    uint8_t vlan;           /* 1: one 802.1Q tag carrying vlan_tci; 0: untagged */
    uint16_t vlan_tci;      /* priority (3 bits), DEI (1), VLAN ID (12) */
    uint8_t family;         /* 4 or 6 */
    uint8_t udp_encap;      /* 1: ESP in UDP from sport to dport (RFC 3948); 0: IP protocol 50 */
    uint8_t tclass;         /* IPv4 TOS / IPv6 traffic class: DSCP + ECN, as copied from the inner header
                             * (RFC 4301 5.1.2.1, RFC 6040) */
    uint16_t ip_id;         /* IPv4 identification: the caller's counter (a per-worker one needs no atomics) */
    uint32_t flow_label;    /* IPv6 flow label (20 bits) */
    uint16_t sport, dport;  /* with udp_encap */
    uint8_t src[16], dst[16]; /* outer addresses in network order, IPv4 in the first 4 bytes */
} esp_frame_tx_t;

/* Bytes of headers esp_frame_build writes for tx (where the ESP packet starts), or 0 when tx is invalid
 * (family not 4/6, vlan not 0/1, flow label over 20 bits). At most FRAME_MAX_HDR_LEN. */
size_t esp_frame_header_len(const esp_frame_tx_t *tx);

/* Write the headers of tx into out in front of the esp_len bytes that the caller has already placed at
 * out + esp_frame_header_len(tx): Ethernet (+ VLAN tag), IPv4 (no options, DF, TTL FRAME_TX_HOP_LIMIT,
 * identification tx->ip_id, header checksum) or IPv6 (hop limit FRAME_TX_HOP_LIMIT), and with udp_encap
 * a UDP header whose checksum is 0 over IPv4 (RFC 3948 2.1, RFC 768) and computed over the pseudo-header
 * and those bytes over IPv6, where it is mandatory (RFC 8200 8.1). The bytes are not checked: IKE behind
 * its non-ESP marker or a keepalive can be sent the same way. Returns the frame length, or 0 (nothing
 * written) when tx is invalid, the frame does not fit in cap, or the IP packet would exceed
 * FRAME_MAX_IP_LEN. */
size_t esp_frame_build(const esp_frame_tx_t *tx, uint8_t *out, size_t cap, size_t esp_len);

/* ---- batches over an AF_XDP UMEM area (frame i at area + addrs[i], in place, no copy) ------------ */

/* Classify n received frames (lens[i] bytes each): for an ESP frame, esp_offs[i] / esp_lens[i] locate
 * its ESP packet as an offset into the area (what esp_decap_batch takes); for any other, esp_lens[i] is
 * 0. verdicts[i] / reasons[i] as esp_frame_parse's, a descriptor outside the area being DROP SHORT_L2.
 * Returns the number of ESP frames. */
size_t esp_frame_parse_batch(const uint8_t *area, size_t area_len, const uint64_t *addrs, const uint32_t *lens,
                             size_t n, const esp_frame_config_t *cfg, uint32_t *esp_offs, uint32_t *esp_lens,
                             uint8_t *verdicts, uint8_t *reasons);

struct esp_sa;
/* Encapsulate one inner packet (len bytes at in) with the outbound SA straight into frame (frame_cap
 * bytes), behind tx's headers, then write the headers. Returns esp_encap's status (ESP_ERR_BUFFER: the
 * frame is too small, or tx is invalid) with *frame_len the frame length (0 on failure). */
int esp_frame_encap(struct esp_sa *sa, const esp_frame_tx_t *tx, const uint8_t *in, size_t len, uint8_t *frame,
                    size_t frame_cap, size_t *frame_len);
/* Encapsulate n inner packets (in + offs[i], lens[i] bytes) with the outbound SA straight into the frames
 * at area + frame_addrs[i] (frame_cap bytes each), behind tx's headers, then write the headers; IPv4
 * identifications count up from tx->ip_id (*next_ip_id gets the next one). frame_lens[i] is the frame
 * length, statuses[i] esp_encap's status (ESP_ERR_BUFFER: the frame is too small, or outside the area).
 * A frame that failed has length 0: leave it out of the send. Returns the number of frames ready. */
size_t esp_frame_encap_batch(struct esp_sa *sa, const esp_frame_tx_t *tx, const uint8_t *in, size_t in_len,
                             const uint32_t *offs, const uint32_t *lens, size_t n, uint8_t *area, size_t area_len,
                             const uint64_t *frame_addrs, size_t frame_cap, uint32_t *frame_lens,
                             uint8_t *statuses, uint16_t *next_ip_id);

#endif
