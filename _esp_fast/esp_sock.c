/* Batched socket I/O: see esp_sock.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "esp_sock.h"

#define SOCK_CHUNK 64 /* mmsghdr entries per system call (stack space is bounded) */

int esp_sock_send_batch(int fd, const uint8_t *buf, size_t buf_size, const uint32_t *offs, const uint32_t *lens,
                        size_t n, size_t skip, size_t *sent, int *err)
{
    struct mmsghdr msgs[SOCK_CHUNK];
    struct iovec iov[SOCK_CHUNK];
    *sent = 0;
    *err = 0;
    for (size_t i = 0; i < n; i++)
        if ((size_t)offs[i] > buf_size || (size_t)lens[i] > buf_size - offs[i] || lens[i] < skip) return -2;
    while (*sent < n) {
        size_t k = n - *sent < SOCK_CHUNK ? n - *sent : SOCK_CHUNK;
        memset(msgs, 0, k * sizeof(msgs[0]));
        for (size_t j = 0; j < k; j++) {
            size_t i = *sent + j;
            iov[j].iov_base = (void *)(buf + offs[i] + skip);
            iov[j].iov_len = lens[i] - skip;
            msgs[j].msg_hdr.msg_iov = &iov[j];
            msgs[j].msg_hdr.msg_iovlen = 1;
        }
        int rc = sendmmsg(fd, msgs, (unsigned)k, 0);
        if (rc < 0) {
            if (errno == EINTR) continue;
            *err = errno;
            return -1;
        }
        *sent += (size_t)rc;
    }
    return 0;
}

int esp_sock_recv_batch(int fd, uint8_t *buf, size_t buf_size, size_t slot, size_t headroom, size_t n,
                        int strip_ipv4, int synth_udp, uint32_t *offs, uint32_t *lens, size_t *received, int *err)
{
    struct mmsghdr msgs[SOCK_CHUNK];
    struct iovec iov[SOCK_CHUNK];
    struct sockaddr_storage from[SOCK_CHUNK];
    uint16_t local_port = 0;
    *received = 0;
    *err = 0;
    if (slot <= headroom || n > buf_size / slot) { /* not n * slot > buf_size: that product can wrap */
        *err = EINVAL;
        return -1;
    }
    if (synth_udp) {
        struct sockaddr_storage self;
        socklen_t sl = sizeof(self);
        if (getsockname(fd, (struct sockaddr *)&self, &sl) == 0) {
            if (self.ss_family == AF_INET) local_port = ntohs(((struct sockaddr_in *)&self)->sin_port);
            else if (self.ss_family == AF_INET6) local_port = ntohs(((struct sockaddr_in6 *)&self)->sin6_port);
        }
    }
    /* One system call: at most SOCK_CHUNK datagrams per call keeps the stack bounded. */
    size_t k = n < SOCK_CHUNK ? n : SOCK_CHUNK;
    memset(msgs, 0, k * sizeof(msgs[0]));
    for (size_t j = 0; j < k; j++) {
        iov[j].iov_base = buf + j * slot + headroom;
        iov[j].iov_len = slot - headroom;
        msgs[j].msg_hdr.msg_iov = &iov[j];
        msgs[j].msg_hdr.msg_iovlen = 1;
        msgs[j].msg_hdr.msg_name = &from[j];
        msgs[j].msg_hdr.msg_namelen = sizeof(from[j]);
    }
    int rc;
    do {
        rc = recvmmsg(fd, msgs, (unsigned)k, MSG_WAITFORONE, NULL);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        *err = errno;
        return -1;
    }
    for (size_t j = 0; j < (size_t)rc; j++) {
        size_t off = j * slot + headroom, len = msgs[j].msg_len;
        if (msgs[j].msg_hdr.msg_flags & MSG_TRUNC) len = 0; /* larger than a slot: report it empty */
        if (strip_ipv4 && len >= 20 && (buf[off] >> 4) == 4) {
            size_t ihl = (size_t)(buf[off] & 0x0f) * 4;
            if (ihl < 20 || ihl > len) ihl = len;
            off += ihl;
            len -= ihl;
        }
        if (synth_udp) {
            uint16_t sport = 0;
            if (from[j].ss_family == AF_INET) sport = ntohs(((struct sockaddr_in *)&from[j])->sin_port);
            else if (from[j].ss_family == AF_INET6) sport = ntohs(((struct sockaddr_in6 *)&from[j])->sin6_port);
            uint8_t *h = buf + off - headroom;
            size_t total = len + headroom;
            h[0] = (uint8_t)(sport >> 8); h[1] = (uint8_t)sport;
            h[2] = (uint8_t)(local_port >> 8); h[3] = (uint8_t)local_port;
            h[4] = (uint8_t)(total >> 8); h[5] = (uint8_t)total;
            h[6] = 0; h[7] = 0;
            off -= headroom;
            len = total;
        }
        offs[j] = (uint32_t)off;
        lens[j] = (uint32_t)len;
    }
    *received = (size_t)rc;
    return 0;
}
