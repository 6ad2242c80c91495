/* libFuzzer harness over the TUN offload helpers (clang -fsanitize=fuzzer,address,undefined).
 *
 * Byte 0 < 0x80, split mode: max_segs = 1 + byte 0 (0x40 and up: MAX_SEGS); byte 1 picks the out capacity
 *   (0: OFFLOAD_SPLIT_OUT_CAP, else byte 1 * 64); the rest is one frame read from the TUN.
 *   Invariants: segments inside out, back to back; GSO segments carry a correct TCP checksum (summed
 *   here the plain way); a completed NONE checksum sums to zero with the original field; and
 *   split(coalesce(split(x))) == split(x) byte for byte.
 * Byte 0 >= 0x80, coalesce mode: from byte 2 on, packets each behind a 2-byte big-endian length (a length
 *   past the end is kept: the library must skip it). Invariants: frames inside out and back to back, in
 *   the order of their first packet; a single-packet frame is its packet behind a zero vnet header; a
 *   merged frame splits back into exactly its packets (IPv4 id and checksums aside); one byte less of
 *   out gives no frames.
 * Buffers are exactly sized, so ASan sees any access past them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "esp_offload.h"
#include "test_bytes.h"

#define FUZZ_MAX_INPUT 70000
#define MAX_SEGS 1024
#define MAX_PKTS 600 /* above OFFLOAD_COALESCE_BATCH: chunk boundaries get exercised */
#define VNET OFFLOAD_VNET_HDR_LEN

/* Offset of TCP in an IP packet that offload_split produced from a GSO frame (its headers parsed). */
static size_t tcp_offset(const uint8_t *p)
{
    if ((p[0] >> 4) == 4) return (size_t)(p[0] & 15) * 4;
    size_t off = 40;
    uint8_t nh = p[6];
    while (nh != 6) {
        nh = p[off];
        off += ((size_t)p[off + 1] + 1) * 8;
    }
    return off;
}

static void check_tcp_csum(const uint8_t *p, size_t len)
{
    size_t l4 = tcp_offset(p);
    if (l4 + 20 > len) abort();
    uint32_t acc = (p[0] >> 4) == 4 ? ref_sum(p + 12, 8, 0) : ref_sum(p + 8, 32, 0);
    acc += 6 + (uint32_t)(len - l4);
    if (ref_fold(ref_sum(p + l4, len - l4, acc)) != 0xffff) abort();
    if ((p[0] >> 4) == 4 && ref_fold(ref_sum(p, l4, 0)) != 0xffff) abort();
}

static void check_layout(const uint32_t *offs, const uint32_t *lens, size_t n, size_t cap)
{
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        if (offs[i] != pos || (size_t)offs[i] + lens[i] > cap) abort();
        pos += lens[i];
    }
}

/* Coalesce the n packets, check the frames, split every frame again; returns the re-split bytes
 * concatenated (malloc'd, *out_len) so split mode can compare. */
static uint8_t *coalesce_and_check(const uint8_t *in, size_t in_len, const uint32_t *offs, const uint32_t *lens,
                                   size_t n, size_t *out_len)
{
    size_t bytes = 0, used = 0;
    for (size_t i = 0; i < n; i++)
        if (lens[i] && offs[i] <= in_len && lens[i] <= in_len - offs[i]) bytes += lens[i], used++;
    size_t cap = OFFLOAD_COALESCE_OUT_CAP(bytes, used);
    uint8_t *out = malloc(cap ? cap : 1);
    uint32_t *f_offs = malloc((n ? n : 1) * sizeof(uint32_t)), *f_lens = malloc((n ? n : 1) * sizeof(uint32_t));
    uint32_t *f_of = malloc((n ? n : 1) * sizeof(uint32_t));
    size_t nf = offload_coalesce(in, in_len, offs, lens, n, out, cap, f_offs, f_lens, f_of);
    if (nf > used || (used && nf == 0)) abort();
    check_layout(f_offs, f_lens, nf, cap);
    /* members per frame, and frames numbered in the order of their first packet */
    uint32_t *count = calloc(nf ? nf : 1, sizeof(uint32_t));
    size_t seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (f_of[i] == OFFLOAD_NO_FRAME) continue;
        if (f_of[i] > seen || f_of[i] >= nf) abort();
        if (f_of[i] == seen) seen++;
        count[f_of[i]]++;
    }
    if (seen != nf) abort();

    uint8_t *resplit = malloc(OFFLOAD_SPLIT_OUT_CAP(MAX_SEGS) + cap);
    size_t rlen = 0;
    static uint32_t s_offs[MAX_SEGS], s_lens[MAX_SEGS];
    static const uint8_t zero[VNET];
    size_t next_member = 0;
    for (size_t j = 0; j < nf; j++) {
        const uint8_t *f = out + f_offs[j];
        if (count[j] == 1) {
            while (f_of[next_member] != j) next_member++;
            const uint8_t *p = in + offs[next_member];
            if (f_lens[j] != VNET + lens[next_member] || memcmp(f, zero, VNET) || memcmp(f + VNET, p, lens[next_member]))
                abort();
            memcpy(resplit + rlen, p, lens[next_member]);
            rlen += lens[next_member];
            continue;
        }
        size_t ns = 0;
        if (offload_split(f, f_lens[j], resplit + rlen, OFFLOAD_SPLIT_OUT_CAP(MAX_SEGS), s_offs, s_lens, count[j],
                          &ns) != OFFLOAD_OK ||
            ns != count[j])
            abort();
        size_t k = 0;
        for (size_t i = 0; i < n && k < ns; i++) {
            if (f_of[i] != j) continue;
            const uint8_t *seg = resplit + rlen + s_offs[k], *p = in + offs[i];
            if (s_lens[k] != lens[i]) abort();
            check_tcp_csum(seg, s_lens[k]);
            size_t l4 = tcp_offset(seg);
            /* the same packet but for the IPv4 id and header checksum and the TCP checksum */
            int v4 = (seg[0] >> 4) == 4;
            for (size_t b = 0; b < lens[i]; b++) {
                int skip = (v4 && (b == 4 || b == 5 || b == 10 || b == 11)) || b == l4 + 16 || b == l4 + 17;
                if (!skip && seg[b] != p[b]) abort();
            }
            k++;
        }
        rlen += s_offs[ns - 1] + s_lens[ns - 1];
    }
    /* one byte short of the bound: nothing at all */
    if (cap && offload_coalesce(in, in_len, offs, lens, n, out, cap - 1, f_offs, f_lens, f_of) != 0) abort();
    free(count);
    free(out);
    free(f_offs);
    free(f_lens);
    free(f_of);
    *out_len = rlen;
    return resplit;
}

static void fuzz_split(uint8_t ctl, uint8_t cap_sel, const uint8_t *frame, size_t len)
{
    size_t max_segs = ctl >= 0x40 ? MAX_SEGS : (size_t)ctl + 1;
    size_t cap = cap_sel ? (size_t)cap_sel * 64 : OFFLOAD_SPLIT_OUT_CAP(max_segs);
    uint8_t *out = malloc(cap);
    static uint32_t offs[MAX_SEGS], lens[MAX_SEGS];
    size_t n = 12345;
    int rc = offload_split(frame, len, out, cap, offs, lens, max_segs, &n);
    if (rc > 0 || rc < OFFLOAD_ERR_UNSUPPORTED) abort();
    if (rc != OFFLOAD_OK) {
        if (n != 0) abort();
        free(out);
        return;
    }
    if (n < 1 || n > max_segs) abort();
    check_layout(offs, lens, n, cap);
    uint8_t gso = frame[1] & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
    if (gso != VIRTIO_NET_HDR_GSO_NONE) {
        for (size_t i = 0; i < n; i++) check_tcp_csum(out + offs[i], lens[i]);
    } else if (frame[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
        /* the completed field plus the sum the packet had (pseudo-header sum in the field) folds to zero */
        size_t start = (size_t)frame[6] | (size_t)frame[7] << 8, at = start + ((size_t)frame[8] | (size_t)frame[9] << 8);
        uint16_t before = ref_fold(ref_sum(frame + VNET + start, lens[0] - start, 0));
        if (ref_fold((uint32_t)before + be16(out + at)) != 0xffff) abort();
    }
    /* round trip through coalescing: the same segments again */
    size_t total = offs[n - 1] + lens[n - 1], rlen = 0;
    uint8_t *again = coalesce_and_check(out, total, offs, lens, n, &rlen);
    if (rlen != total || memcmp(again, out, total) != 0) abort();
    free(again);
    free(out);
}

static void fuzz_coalesce(const uint8_t *data, size_t size)
{
    static uint32_t offs[MAX_PKTS], lens[MAX_PKTS];
    size_t n = 0, pos = 0;
    while (pos + 2 <= size && n < MAX_PKTS) {
        offs[n] = (uint32_t)(pos + 2);
        lens[n] = be16(data + pos);
        pos += 2 + lens[n++];
    }
    size_t rlen = 0;
    free(coalesce_and_check(data, size, offs, lens, n, &rlen));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > FUZZ_MAX_INPUT) return 0;
    if (data[0] < 0x80) fuzz_split(data[0], data[1], data + 2, size - 2);
    else fuzz_coalesce(data + 2, size - 2);
    return 0;
}
