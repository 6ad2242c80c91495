/* Batched socket I/O for the ESP data plane: sendmmsg/recvmmsg with no per-packet Python work.
 * Works on a UDP/4500 socket and on a raw IP protocol-50 (ESP) socket. */
#ifndef ESP_SOCK_H
#define ESP_SOCK_H

#include <stddef.h>
#include <stdint.h>

/* Send buf[offs[i]+skip .. offs[i]+lens[i]) for i < n on a connected socket. Returns 0 when all were sent,
 * -1 on a socket error (*err = errno, *sent = how many went out), -2 if a packet lies outside buf. */
int esp_sock_send_batch(int fd, const uint8_t *buf, size_t buf_size, const uint32_t *offs, const uint32_t *lens,
                        size_t n, size_t skip, size_t *sent, int *err);

/* Receive up to n datagrams, datagram i into slot i (buf + i*slot + headroom). Blocks for the first one
 * only (MSG_WAITFORONE). strip_ipv4 skips the IPv4 header a raw socket delivers; synth_udp writes an
 * RFC 3948 UDP header into the 8 bytes of headroom. offs/lens describe each frame. Returns 0 or -1
 * (*err = errno). */
int esp_sock_recv_batch(int fd, uint8_t *buf, size_t buf_size, size_t slot, size_t headroom, size_t n,
                        int strip_ipv4, int synth_udp, uint32_t *offs, uint32_t *lens, size_t *received, int *err);

#endif
