/* The Internet checksum for the C data plane (esp_offload.c, esp_frame.c): one copy, inline.
 *
 * One's complement sum in host byte order, 8 bytes at a time. The sum does not depend on byte order
 * (RFC 1071 2.B), so a result folded and stored with memcpy is the network-order value. Every region
 * but the last one summed into one accumulator must have an even length.
 */
#ifndef ESP_CSUM_H
#define ESP_CSUM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t csum_add(uint64_t acc, const uint8_t *p, size_t n)
{
    uint64_t w;
    for (; n >= sizeof(w); p += sizeof(w), n -= sizeof(w)) {
        memcpy(&w, p, sizeof(w));
        acc += w;
        acc += acc < w; /* end-around carry */
    }
    if (n) {
        uint8_t tail[sizeof(w)] = {0}; /* an odd last byte is padded with zero (RFC 1071) */
        memcpy(tail, p, n);
        memcpy(&w, tail, sizeof(w));
        acc += w;
        acc += acc < w;
    }
    return acc;
}

/* Folded to 16 bits, not complemented; still in host order. */
static inline uint16_t csum_fold(uint64_t acc)
{
    while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)acc;
}

static inline void store_native16(uint8_t *p, uint16_t v) { memcpy(p, &v, sizeof(v)); }

#endif
