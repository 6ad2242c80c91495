/* libFuzzer harness over the forwarder's worker path, esp_fwd_poll_once (clang -fsanitize=fuzzer,address,undefined).
 *
 * Set up once: one forwarder, a SOCK_SEQPACKET socketpair standing in for the TUN queue, the worker's UDP
 * socket and the peer's on 127.0.0.1. Per input, one tunnel with fixed keys (its SAs made afresh, so runs
 * repeat) and its MTU, MSS and ICMP sources picked by byte 0.
 * Input: byte 0 = config (bits 0-1 MTU, 2-3 MSS, 4 ICMP source v4, 5 ICMP source v6), then up to
 * MAX_PACKETS chunks of [route][length: 2 bytes big-endian, cut to what is left][bytes], where route & 3 is
 *   TO_TUN         written to the TUN side (an inner packet from the kernel),
 *   TO_UDP         sent as is to the worker's UDP socket,
 *   TO_UDP_SPI     sent behind our inbound SPI, so it reaches the SA and fails there,
 *   TO_UDP_SEALED  encrypted with the peer's SA first (authentic: reaches inner parsing and policy).
 * Invariants after the worker went idle:
 *   everything the peer receives decapsulates with the peer's SA (nothing in clear) to a packet written
 *   to the TUN (cut to its IP length, MSS clamped), and never to one that was too big with DF;
 *   everything on the TUN side is a sealed packet's inner packet (cut and clamped, inside the selectors)
 *   or an ICMP "too big" answer to a packet written to the TUN; nothing else, so random bytes get nothing;
 *   every counter only grows, and together they grow by exactly the number of packets fed in (a
 *   keepalive and a zero-length TUN read are no packets).
 * No sleeps: the worker is driven with zero-timeout polls, and waits are short polls with a deadline. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "esp_fwd.h"

#define MAX_PACKETS 8
#define CHUNK_HDR 3
#define FUZZ_MAX_INPUT 20000      /* bounded work per input; the largest inner packet still fits */
#define MAX_SLOTS 4
#define SLOT 1
#define SPI_IN 0x1001u
#define SPI_OUT 0x2001u
#define KEY_LEN 16
#define ICV_LEN 16
#define REPLAY_WINDOW 64
#define IPV6_MSS_LESS 20          /* the tunnel's MSS is for inner IPv4; IPv6 headers are 20 bytes longer */
#define WAIT_STEP_MS 1
#define DEADLINE_MS 2000          /* loopback delivers at once: only a lost packet (a bug) takes this long */
#define BUF_LEN 70000
#define N_SELS 5               /* ours: 2, then the peer's: 3 */
#define N_LOCAL 2
#define N_REMOTE 3

enum { TO_TUN = 0, TO_UDP = 1, TO_UDP_SPI = 2, TO_UDP_SEALED = 3 };

static const uint16_t MTUS[] = {1400, 576, 1280, FWD_MAX_INNER};
static const uint16_t MSSES[] = {1360, 0, 536, 20};
static const uint8_t KEYMAT[KEY_LEN + ESP_SALT_LEN] = {0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19,
                                                       0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0xa0, 0xa1, 0xa2, 0xa3};
static const uint8_t ICMP_SRC4[4] = {10, 1, 0, 1};
static const uint8_t ICMP_SRC6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

static struct {
    esp_fwd_t *dp;
    esp_fwd_io_t io;
    int tun_app, peer;
    struct sockaddr_in gw_addr;
    uint16_t peer_port;
    inner_selector_t sels[N_SELS];
    uint8_t buf[BUF_LEN], plain[BUF_LEN];
} g;

#define REQUIRE(c)                                                                   \
    do {                                                                             \
        if (!(c)) {                                                                  \
            fprintf(stderr, "fuzz_fwd: invariant failed at line %d: %s\n", __LINE__, #c); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static int udp_socket(struct sockaddr_in *bound)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    *bound = a;
    return fd;
}

/* A selector over half of each address space: random addresses match about half the time, so the
 * fuzzer reaches both the policy drop and everything after it without guessing exact addresses. */
static inner_selector_t half(uint8_t family, int upper, uint8_t proto, uint16_t plo, uint16_t phi)
{
    inner_selector_t s;
    memset(&s, 0, sizeof(s));
    s.family = family;
    s.proto = proto;
    s.port_lo = plo;
    s.port_hi = phi;
    size_t n = family == 4 ? 4 : 16;
    memset(s.hi, 0xff, n);
    if (upper) s.lo[0] = 0x80;
    else s.hi[0] = 0x7f;
    return s;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    int big = 4 << 20; /* room for MAX_PACKETS of the largest input in the socketpair */
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    g.tun_app = sv[0];
    struct sockaddr_in pa;
    int gw = udp_socket(&g.gw_addr);
    g.peer = udp_socket(&pa);
    g.peer_port = ntohs(pa.sin_port);
    g.dp = esp_fwd_new(MAX_SLOTS);
    REQUIRE(g.dp != NULL);
    g.io = (esp_fwd_io_t){.tun_fd = sv[1], .udp_fd = gw, .raw_fd = -1, .raw_rx = 0, .stop_fd = -1};
    /* ours: the lower halves; the peer's: the upper halves, IPv4 only UDP below port 32768 or TCP */
    g.sels[0] = half(4, 0, 0, 0, UINT16_MAX);
    g.sels[1] = half(6, 0, 0, 0, UINT16_MAX);
    g.sels[2] = half(4, 1, INNER_PROTO_UDP, 0, 32767);
    g.sels[3] = half(4, 1, INNER_PROTO_TCP, 0, UINT16_MAX);
    g.sels[4] = half(6, 1, 0, 0, UINT16_MAX);
    return 0;
}

static esp_sa_t *new_sa(uint32_t spi, int outbound)
{
    esp_sa_config_t c;
    memset(&c, 0, sizeof(c));
    c.spi = spi;
    c.alg = ESP_ALG_AES_GCM;
    c.key = KEYMAT;
    c.key_len = KEY_LEN;
    c.salt = KEYMAT + KEY_LEN;
    c.icv_len = ICV_LEN;
    c.outbound = outbound;
    c.tunnel = 1;
    c.replay_window = outbound ? 0 : REPLAY_WINDOW;
    int st = 0;
    esp_sa_t *sa = esp_sa_new(&c, &st);
    REQUIRE(sa != NULL);
    return sa;
}

typedef struct {
    const uint8_t *p;
    size_t len;
    int route;
    int used;                 /* matched by something read back */
} chunk_t;

static uint64_t total_count(uint64_t slot[FWD_COUNTERS], uint64_t glob[FWD_DROP_COUNT])
{
    esp_fwd_slot_counters(g.dp, SLOT, slot);
    esp_fwd_global_drops(g.dp, glob);
    uint64_t n = slot[FWD_PACKETS_IN] + slot[FWD_PACKETS_OUT];
    for (int i = 0; i < FWD_DROP_COUNT; i++) n += slot[4 + i] + glob[i];
    return n;
}

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static int readable(int fd, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, timeout_ms) > 0;
}

/* Poll the worker until the counters account for `want` packets and its descriptors are empty. */
static void drive(uint64_t want)
{
    uint64_t slot[FWD_COUNTERS], glob[FWD_DROP_COUNT], deadline = now_ms() + DEADLINE_MS;
    for (;;) {
        REQUIRE(esp_fwd_poll_once(g.dp, &g.io) == 0);
        int busy = readable(g.io.tun_fd, 0) || readable(g.io.udp_fd, 0);
        uint64_t have = total_count(slot, glob);
        REQUIRE(have <= want);
        if (!busy && have == want) return;
        REQUIRE(now_ms() < deadline);
        if (!busy) readable(g.io.udp_fd, WAIT_STEP_MS);
    }
}

static uint16_t mss_for(uint16_t mss, int family)
{
    if (family == 4) return mss;
    return mss > IPV6_MSS_LESS ? (uint16_t)(mss - IPV6_MSS_LESS) : 0;
}

/* What the forwarder passes on for packet p: cut to its IP length and MSS clamped. 0 if it does not parse.
 * A TUN read takes at most FWD_MAX_INNER bytes of a packet. */
static size_t expected_form(const chunk_t *c, uint16_t mss, uint8_t *out, inner_info_t *info)
{
    const uint8_t *p = c->p;
    size_t len = c->route == TO_TUN && c->len > FWD_MAX_INNER ? FWD_MAX_INNER : c->len;
    if (inner_parse(p, len, info) != 0) return 0;
    memcpy(out, p, info->length);
    inner_clamp_mss(out, info, mss_for(mss, info->family));
    return info->length;
}

/* Is a (read from the TUN) our "too big" answer to one of the packets written to the TUN? */
static int is_our_too_big(const uint8_t *a, size_t n, const chunk_t *c, size_t nc, uint16_t mtu)
{
    inner_info_t ai;
    if (inner_parse(a, n, &ai) != 0 || ai.length != n || !ai.ports_known) return 0;
    size_t hdr = ai.family == 4 ? INNER_IPV4_MIN_HDR : INNER_IPV6_HDR, alen = ai.family == 4 ? 4 : 16;
    if (ai.family == 4 && !(ai.proto == INNER_PROTO_ICMP && ai.sport == 0x0304)) return 0;
    if (ai.family == 6 && !(ai.proto == INNER_PROTO_ICMPV6 && ai.sport == 0x0200)) return 0;
    if (n < hdr + 8 || rd16(a + hdr + 6) != mtu || n > INNER_IPV6_MIN_MTU) return 0;
    const uint8_t *quote = a + hdr + 8;
    size_t qlen = n - hdr - 8;
    for (size_t i = 0; i < nc; i++) {
        inner_info_t pi;
        size_t len = c[i].len > FWD_MAX_INNER ? FWD_MAX_INNER : c[i].len;
        if (c[i].route != TO_TUN || inner_parse(c[i].p, len, &pi) != 0) continue;
        if (pi.family == ai.family && pi.length > mtu && pi.df && qlen <= pi.length &&
            memcmp(quote, c[i].p, qlen) == 0 && memcmp(ai.dst, pi.src, alen) == 0)
            return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > FUZZ_MAX_INPUT) return 0;
    uint16_t mtu = MTUS[data[0] & 3], mss = MSSES[(data[0] >> 2) & 3];
    esp_sa_t *gw_in = new_sa(SPI_IN, 0), *gw_out = new_sa(SPI_OUT, 1);
    esp_sa_t *peer_in = new_sa(SPI_OUT, 0), *peer_out = new_sa(SPI_IN, 1);
    esp_fwd_tunnel_t t;
    memset(&t, 0, sizeof(t));
    t.slot = SLOT;
    t.in_sa = gw_in;
    t.out_sa = gw_out;
    t.spi_in = SPI_IN;
    t.udp_encap = 1;
    t.peer_family = 4;
    memcpy(t.peer_addr, &(uint32_t){htonl(INADDR_LOOPBACK)}, 4);
    t.peer_port = g.peer_port;
    t.mtu = mtu;
    t.mss = mss;
    t.n_local = N_LOCAL;
    t.n_remote = N_REMOTE;
    REQUIRE(esp_fwd_set_tables(g.dp, &t, 1, g.sels, N_SELS, (data[0] & 0x10) ? ICMP_SRC4 : NULL,
                               (data[0] & 0x20) ? ICMP_SRC6 : NULL) == 0);

    uint64_t before[FWD_COUNTERS], before_g[FWD_DROP_COUNT];
    uint64_t want = total_count(before, before_g);
    chunk_t c[MAX_PACKETS];
    size_t nc = 0, pos = 1;
    static uint8_t dgram[BUF_LEN];
    while (nc < MAX_PACKETS && pos + CHUNK_HDR <= size) {
        int route = data[pos] & 3;
        size_t len = rd16(data + pos + 1);
        pos += CHUNK_HDR;
        if (len > size - pos) len = size - pos;
        chunk_t *k = &c[nc++];
        *k = (chunk_t){data + pos, len, route, 0};
        pos += len;
        size_t n = 0;
        if (route == TO_TUN) {
            REQUIRE(send(g.tun_app, k->p, len, 0) == (ssize_t)len);
            want += len > 0; /* a zero-length read is no packet */
            continue;
        }
        int sealed = route == TO_UDP_SEALED && esp_encap(peer_out, 0, k->p, len, 0, dgram, sizeof(dgram), &n) == ESP_OK;
        if (sealed) {
            /* dgram holds the ESP packet */
        } else if (route == TO_UDP_SPI) {
            uint32_t spi = htonl(SPI_IN);
            memcpy(dgram, &spi, 4);
            memcpy(dgram + 4, k->p, len);
            n = len + 4;
        } else {
            k->route = TO_UDP; /* includes sealing refused (not an IP packet): then sent as is */
            memcpy(dgram, k->p, len);
            n = len;
        }
        REQUIRE(sendto(g.peer, dgram, n, 0, (struct sockaddr *)&g.gw_addr, sizeof(g.gw_addr)) == (ssize_t)n);
        want += !(n == 1 && dgram[0] == 0xff); /* a NAT keepalive is no packet */
    }
    drive(want);

    /* the peer: only ESP of our SA, carrying what was written to the TUN */
    static uint8_t expect[BUF_LEN];
    ssize_t r;
    while ((r = recv(g.peer, g.buf, sizeof(g.buf), MSG_DONTWAIT)) >= 0) {
        size_t len = 0;
        int nh = 0;
        REQUIRE(esp_decap(peer_in, g.buf, (size_t)r, g.plain, sizeof(g.plain), &len, &nh) == ESP_OK);
        int found = 0;
        for (size_t i = 0; i < nc && !found; i++) {
            inner_info_t info;
            if (c[i].route != TO_TUN || c[i].used) continue;
            size_t m = expected_form(&c[i], mss, expect, &info);
            if (m == 0 || m != len || memcmp(expect, g.plain, m) != 0) continue;
            REQUIRE(!(info.length > mtu && info.df));      /* too big with DF is never sent */
            REQUIRE(inner_policy_match(g.sels, N_LOCAL, g.sels + N_LOCAL, N_REMOTE, &info)); /* ours -> the peer's */
            c[i].used = found = 1;
        }
        REQUIRE(found);
    }
    /* the TUN: authentic inner packets inside the selectors, or our ICMP answers; nothing else */
    while ((r = recv(g.tun_app, g.buf, sizeof(g.buf), MSG_DONTWAIT)) >= 0) {
        int found = 0;
        for (size_t i = 0; i < nc && !found; i++) {
            inner_info_t info;
            if (c[i].route != TO_UDP_SEALED || c[i].used) continue;
            size_t m = expected_form(&c[i], mss, expect, &info);
            if (m == 0 || m != (size_t)r || memcmp(expect, g.buf, m) != 0) continue;
            REQUIRE(inner_policy_match(g.sels + N_LOCAL, N_REMOTE, g.sels, N_LOCAL, &info)); /* the peer's -> ours */
            c[i].used = found = 1;
        }
        REQUIRE(found || is_our_too_big(g.buf, (size_t)r, c, nc, mtu));
    }

    uint64_t after[FWD_COUNTERS], after_g[FWD_DROP_COUNT];
    REQUIRE(total_count(after, after_g) == want);
    for (int i = 0; i < FWD_COUNTERS; i++) REQUIRE(after[i] >= before[i]);
    for (int i = 0; i < FWD_DROP_COUNT; i++) REQUIRE(after_g[i] >= before_g[i]);

    REQUIRE(esp_fwd_set_tables(g.dp, NULL, 0, NULL, 0, NULL, NULL) == 0); /* before the SAs go */
    esp_sa_free(gw_in);
    esp_sa_free(gw_out);
    esp_sa_free(peer_in);
    esp_sa_free(peer_out);
    return 0;
}
