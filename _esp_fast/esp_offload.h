/* TUN offloads in userland: a TUN opened with IFF_VNET_HDR and TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 |
 * TUN_F_TSO6) reads and writes frames = struct virtio_net_hdr (<linux/virtio_net.h>) + an IP packet, where
 * the packet may be a TCP "super-packet" of up to 64 KiB that stands for many wire segments.
 *
 *   read side:  offload_split     one frame -> wire-sized IP packets with complete checksums (for ESP)
 *   write side: offload_coalesce  a batch of decrypted IP packets -> fewer frames (GRO done by us)
 *
 * Pure functions over caller buffers, in the style of esp_inner.h: no allocation, no locks, every read
 * bounded by the lengths passed in, every write by the capacities. The vnet header is little-endian
 * (TUN's legacy header is host-endian: on big-endian hosts set TUNSETVNETLE).
 */
#ifndef ESP_OFFLOAD_H
#define ESP_OFFLOAD_H

#include <stddef.h>
#include <stdint.h>

#include <linux/virtio_net.h>

#define OFFLOAD_VNET_HDR_LEN ((size_t)sizeof(struct virtio_net_hdr)) /* 10 */
#define OFFLOAD_MAX_PACKET 65535  /* largest IP packet produced or merged (what IPv4 total length holds) */
#define OFFLOAD_MAX_HDR_LEN 256   /* IP + IPv6 extension headers + TCP accepted in a super-packet */
#define OFFLOAD_MAX_EXT_HEADERS 8 /* IPv6 extension headers walked to reach TCP */
/* A read buffer that holds any frame: IPv6 payload length counts 65535 bytes after its 40-byte header. */
#define OFFLOAD_MAX_FRAME (OFFLOAD_VNET_HDR_LEN + 40 + 65535)
/* out capacity of offload_split that is always enough for any frame producing at most max_segs segments. */
#define OFFLOAD_SPLIT_OUT_CAP(max_segs) (OFFLOAD_MAX_FRAME + (size_t)(max_segs) * OFFLOAD_MAX_HDR_LEN)

#define OFFLOAD_COALESCE_BATCH 256 /* packets considered together: merges never cross such a chunk */
#define OFFLOAD_FLOW_TABLE (2 * OFFLOAD_COALESCE_BATCH) /* flows tracked per chunk: never more than half full */
#define OFFLOAD_FLOW_PROBES 8      /* slots tried per packet; a flow finding none passes through unmerged */
#define OFFLOAD_NO_FRAME UINT32_MAX
/* out capacity of offload_coalesce for n packets of `bytes` bytes in all: every packet passed through
 * costs a vnet header, a merge only saves bytes. */
#define OFFLOAD_COALESCE_OUT_CAP(bytes, n) ((size_t)(bytes) + (size_t)(n) * OFFLOAD_VNET_HDR_LEN)

enum offload_status {
    OFFLOAD_OK = 0,
    OFFLOAD_ERR_TRUNCATED = -1,   /* shorter than a vnet header, or an IP/TCP header or IP length past the bytes read */
    OFFLOAD_ERR_HEADER = -2,      /* the vnet header disagrees with the packet (hdr_len past the packet, csum_start /
                                   * csum_offset out of range or not at the TCP checksum, IP version vs gso_type) or
                                   * the packet is no plain TCP segment (fragment, unknown extension header, bad IHL
                                   * or data offset, headers over OFFLOAD_MAX_HDR_LEN, jumbogram) */
    OFFLOAD_ERR_GSO_SIZE = -3,    /* gso_size 0, or headers + gso_size over OFFLOAD_MAX_PACKET */
    OFFLOAD_ERR_TOO_MANY = -4,    /* more segments than max_segs */
    OFFLOAD_ERR_SPACE = -5,       /* out too small */
    OFFLOAD_ERR_UNSUPPORTED = -6, /* gso_type other than NONE / TCPV4 / TCPV6 (with or without the ECN bit) */
};

/* Split one frame read from the TUN (vnet header + IP packet) into IP packets, written back to back into
 * out: packet i at out + offs[i], lens[i] bytes, *n_segs of them (offs/lens hold max_segs entries; on
 * error *n_segs = 0 and out holds garbage).
 *
 * gso_type NONE: the packet as it is (one segment). With VIRTIO_NET_HDR_F_NEEDS_CSUM the 16-bit one's
 *   complement checksum over [csum_start, IP end) is completed into csum_start + csum_offset (both checked
 *   against the IP length; csum_offset must be even) and the packet is cut to its IP length.
 * gso_type TCPV4 / TCPV6 (| ECN): the TCP payload cut into gso_size pieces, each behind a copy of the
 *   IP (+ IPv6 extension) and TCP headers with: IPv4 total length, id + i, header checksum; IPv6 payload
 *   length; sequence number + offset; FIN and PSH only on the last, CWR only on the first; the full TCP
 *   checksum. The header lengths come from parsing the packet: hdr_len is only checked not to lie past it
 *   (the kernel may report its linear head length there), csum_start/csum_offset (when NEEDS_CSUM) must
 *   point at the TCP checksum. A super-packet without payload gives one segment.
 * Returns OFFLOAD_OK or an offload_status error. */
int offload_split(const uint8_t *frame, size_t frame_len, uint8_t *out, size_t out_cap, uint32_t *offs,
                  uint32_t *lens, size_t max_segs, size_t *n_segs);

/* Coalesce n IP packets (packet i at in + offs[i], lens[i] bytes; lens[i] == 0 or a range outside
 * in_len: skipped) into frames for writing to the TUN, back to back into out: frame j at
 * out + frame_offs[j], frame_lens[j] bytes (frame_offs/frame_lens hold n entries). Returns the number
 * of frames; 0 as well when out_cap < OFFLOAD_COALESCE_OUT_CAP(sum of the used lens, their count)
 * (nothing written then). frame_of (n entries, may be NULL) receives the frame of each packet, or
 * OFFLOAD_NO_FRAME for a skipped one.
 *
 * A run of TCP segments of one flow is merged into one frame when each next segment has: the same IP
 * header except total length / id / checksum (IPv4 without fragmentation, IPv6 without extension
 * headers), the same TCP header except sequence number / checksum / PSH, no SYN/FIN/RST/URG, no CWR
 * (the first may have it), a payload that is not empty, the sequence number right after the previous
 * one, and the payload size of the first (gso_size) or a shorter one, which ends the run, as PSH does;
 * the merged IP packet stays within OFFLOAD_MAX_PACKET. The merged frame's vnet header: NEEDS_CSUM,
 * gso_type TCPV4/TCPV6 (| ECN when the first has CWR), gso_size, hdr_len, csum_start = TCP offset,
 * csum_offset 16; its TCP checksum field holds the folded, non-complemented pseudo-header sum; its
 * PSH is the last segment's. Any other packet, and a run of one, becomes a frame of its own with an
 * all-zero vnet header, its bytes untouched.
 *
 * Frames come in the order of their first packet. Flows are coalesced separately even when interleaved
 * (A1 B1 A2 B2 -> [A1 A2] [B1 B2]); a packet of a flow that does not join that flow's open run ends the
 * run, so the packets of one flow (same addresses and TCP ports) keep their order. Work: O(n), at most
 * OFFLOAD_FLOW_PROBES flow-table compares per packet, no matter how many flows interleave; ~24 KB of
 * stack. Checksums of the inputs are not verified (ESP authenticated them); their header lengths are. */
size_t offload_coalesce(const uint8_t *in, size_t in_len, const uint32_t *offs, const uint32_t *lens, size_t n,
                        uint8_t *out, size_t out_cap, uint32_t *frame_offs, uint32_t *frame_lens,
                        uint32_t *frame_of);

#endif
