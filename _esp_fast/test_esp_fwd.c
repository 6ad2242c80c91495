/* The forwarder's own tests (esp_fwd.c + esp_inner.c over esp_core.c), run under ASan + UBSan (and TSan
 * for the threaded part) without root: a SOCK_SEQPACKET socketpair stands in for the TUN queue (one
 * read or write is one packet, as on a TUN device without packet information) and UDP sockets on
 * 127.0.0.1 for the worker's UDP/4500 socket and the peer. The peer's side of each SA is an independent
 * esp_sa_t with the same keys. Packets are built here byte by byte and checksums are verified with a
 * checksum routine of the test's own, not the library's. Each case drives esp_fwd_poll_once until the
 * descriptors are idle, so nothing depends on timing except the bounded multi-threaded table swap. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "esp_frame.h"
#include "esp_fwd.h"
#include "test_check.h"


#define KEY_LEN 16             /* AES-128-GCM */
#define ICV_LEN 16
#define REPLAY_WINDOW 64
#define SPI_IN 0x1001u         /* ours inbound = the peer's outbound */
#define SPI_OUT 0x2001u        /* ours outbound = the peer's inbound */
#define SPI_UNKNOWN 0x7777u
#define SLOT 1
#define MAX_SLOTS 64
#define TUN_MTU 1400
#define TUN_MSS 1360           /* for inner IPv4; inner IPv6 is clamped 20 lower */
#define IPV6_MSS (TUN_MSS - 20)
#define PKT_MAX 10000          /* above FWD_MAX_INNER */
#define SETTLE_MS 20           /* a descriptor quiet this long is idle (loopback delivers at once) */
#define MAX_PUMPS 64           /* poll_once calls per pump: each drains a batch, so this is plenty */
#define IPV4_HDR 20
#define IPV6_HDR 40
#define UDP_HDR 8
#define TCP_HDR 20
#define ICMP_HDR 8
#define IPV4_DF 0x4000
#define IPV4_MF 0x2000
#define NH_HOP_BY_HOP 0
#define NH_FRAGMENT 44
#define NH_DEST_OPTS 60
#define TCP_SYN 0x02
#define TCP_ACK 0x10

static const uint8_t KEYMAT[KEY_LEN + ESP_SALT_LEN] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19};

/* ---- bytes, addresses, checksums ------------------------------------------------------------------ */

static uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

static int is6(const char *a) { return strchr(a, ':') != NULL; }

static void addr(const char *s, uint8_t out[16])
{
    memset(out, 0, 16);
    int ok = inet_pton(is6(s) ? AF_INET6 : AF_INET, s, out);
    if (ok != 1) abort();
}

/* The test's own one's-complement sum: byte by byte (even bytes high), in 64 bits, folded once at the end. */
static uint64_t ref_add(uint64_t acc, const uint8_t *p, size_t n, size_t *pos)
{
    for (size_t i = 0; i < n; i++, (*pos)++) acc += (*pos & 1) ? p[i] : (uint64_t)p[i] << 8;
    return acc;
}

static uint16_t ref_fold(uint64_t acc)
{
    while (acc > 0xffff) acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)acc;
}

static int ref_ipv4_header_ok(const uint8_t *ip)
{
    size_t pos = 0;
    return ref_fold(ref_add(0, ip, (size_t)(ip[0] & 0x0f) * 4, &pos)) == 0xffff;
}

/* Does the transport segment (checksum field included) sum to all ones with its pseudo-header? */
static int ref_l4_ok(int family, const uint8_t *src, const uint8_t *dst, uint8_t proto, const uint8_t *seg,
                     size_t len)
{
    uint8_t pseudo[40];
    size_t alen = family == 4 ? 4 : 16, n = 0, pos = 0;
    memcpy(pseudo, src, alen);
    memcpy(pseudo + alen, dst, alen);
    n = 2 * alen;
    if (family == 4) {
        pseudo[n++] = 0;
        pseudo[n++] = proto;
        wr16(pseudo + n, (uint16_t)len);
        n += 2;
    } else { /* RFC 8200 8.1: 32-bit length, 24 zero bits, next header */
        pseudo[n++] = (uint8_t)(len >> 24); pseudo[n++] = (uint8_t)(len >> 16);
        pseudo[n++] = (uint8_t)(len >> 8); pseudo[n++] = (uint8_t)len;
        pseudo[n++] = 0; pseudo[n++] = 0; pseudo[n++] = 0; pseudo[n++] = proto;
    }
    uint64_t acc = ref_add(0, pseudo, n, &pos);
    return ref_fold(ref_add(acc, seg, len, &pos)) == 0xffff;
}

/* The checksum value that makes ref_l4_ok true (the field at `at` must be zero on entry). */
static void ref_l4_fill(int family, const uint8_t *src, const uint8_t *dst, uint8_t proto, uint8_t *seg,
                        size_t len, size_t at)
{
    for (uint32_t v = 0; v <= 0xffff; v++) { /* brute force: slow but obviously right, and packets are few */
        wr16(seg + at, (uint16_t)v);
        if (ref_l4_ok(family, src, dst, proto, seg, len)) return;
    }
    abort();
}

/* ---- packet builders ------------------------------------------------------------------------------- */

/* An IPv4 header in front of l4 (copied); frag is the flags + offset field. Returns the length. */
static size_t ipv4(uint8_t *p, const char *src, const char *dst, uint8_t proto, uint16_t frag, const uint8_t *l4,
                   size_t l4_len)
{
    uint8_t a[16];
    memset(p, 0, IPV4_HDR);
    p[0] = 0x45;
    wr16(p + 2, (uint16_t)(IPV4_HDR + l4_len));
    wr16(p + 4, 0x1234);
    wr16(p + 6, frag);
    p[8] = 64;
    p[9] = proto;
    addr(src, a); memcpy(p + 12, a, 4);
    addr(dst, a); memcpy(p + 16, a, 4);
    size_t pos = 0;
    wr16(p + 10, (uint16_t)~ref_fold(ref_add(0, p, IPV4_HDR, &pos)));
    if (l4_len) memmove(p + IPV4_HDR, l4, l4_len);
    return IPV4_HDR + l4_len;
}

static size_t ipv6(uint8_t *p, const char *src, const char *dst, uint8_t nh, const uint8_t *rest, size_t rest_len)
{
    uint8_t a[16];
    memset(p, 0, IPV6_HDR);
    p[0] = 0x60;
    wr16(p + 4, (uint16_t)rest_len);
    p[6] = nh;
    p[7] = 64;
    addr(src, a); memcpy(p + 8, a, 16);
    addr(dst, a); memcpy(p + 24, a, 16);
    if (rest_len) memmove(p + IPV6_HDR, rest, rest_len);
    return IPV6_HDR + rest_len;
}

static size_t udp_hdr(uint8_t *u, uint16_t sport, uint16_t dport, size_t payload_len, uint8_t fill)
{
    wr16(u, sport);
    wr16(u + 2, dport);
    wr16(u + 4, (uint16_t)(UDP_HDR + payload_len));
    wr16(u + 6, 0); /* no UDP checksum: nothing here looks at it */
    memset(u + UDP_HDR, fill, payload_len);
    return UDP_HDR + payload_len;
}

/* IPv4 or IPv6 UDP packet, 4000 -> 53, `payload_len` bytes of `fill`. */
static size_t udp_packet(uint8_t *p, const char *src, const char *dst, uint16_t frag, size_t payload_len, uint8_t fill)
{
    static uint8_t l4[PKT_MAX];
    size_t n = udp_hdr(l4, 4000, 53, payload_len, fill);
    return is6(src) ? ipv6(p, src, dst, INNER_PROTO_UDP, l4, n) : ipv4(p, src, dst, INNER_PROTO_UDP, frag, l4, n);
}

/* A TCP SYN with MSS, window scale and SACK-permitted options; the MSS sits at an odd offset when asked
 * (a NOP in front), which an incremental checksum update must handle byte-swapped. Checksum filled. */
static size_t tcp_syn(uint8_t *p, const char *src, const char *dst, uint16_t mss, int odd, uint8_t flags,
                      size_t *mss_at)
{
    uint8_t t[TCP_HDR + 12], a[16], b[16];
    memset(t, 0, sizeof(t));
    wr16(t, 40000);
    wr16(t + 2, 5201);
    t[4] = 0x11; t[7] = 0x42;      /* sequence number */
    t[12] = (sizeof(t) / 4) << 4;  /* data offset: 8 words */
    t[13] = flags;
    wr16(t + 14, 64240);
    size_t o = TCP_HDR;
    if (odd) t[o++] = 1;           /* NOP */
    *mss_at = o + 2;
    t[o++] = 2; t[o++] = 4; wr16(t + o, mss); o += 2;
    t[o++] = 3; t[o++] = 3; t[o++] = 7;  /* window scale 7 */
    t[o++] = 4; t[o++] = 2;              /* SACK permitted */
    /* the rest stays 0: end of option list */
    addr(src, a);
    addr(dst, b);
    int fam = is6(src) ? 6 : 4;
    ref_l4_fill(fam, a, b, INNER_PROTO_TCP, t, sizeof(t), 16);
    size_t n = fam == 6 ? ipv6(p, src, dst, INNER_PROTO_TCP, t, sizeof(t)) : ipv4(p, src, dst, INNER_PROTO_TCP, 0, t, sizeof(t));
    *mss_at += fam == 6 ? IPV6_HDR : IPV4_HDR;
    return n;
}

/* ---- selectors ------------------------------------------------------------------------------------- */

static inner_selector_t sel(const char *lo, const char *hi, uint8_t proto, uint16_t plo, uint16_t phi)
{
    inner_selector_t s;
    memset(&s, 0, sizeof(s));
    s.family = is6(lo) ? 6 : 4;
    s.proto = proto;
    s.port_lo = plo;
    s.port_hi = phi;
    addr(lo, s.lo);
    addr(hi, s.hi);
    return s;
}

#define ANY_PORT 0, UINT16_MAX
#define OPAQUE_PORT UINT16_MAX, 0 /* RFC 4301 4.4.1: only packets whose ports are unknown */
#define N_SELS 4                  /* ours (IPv4, IPv6), then the peer's (IPv4, IPv6) */

static void default_sels(inner_selector_t s[N_SELS])
{
    s[0] = sel("10.1.0.0", "10.1.0.255", 0, ANY_PORT);
    s[1] = sel("2001:db8:1::", "2001:db8:1::ffff", 0, ANY_PORT);
    s[2] = sel("10.2.0.0", "10.2.0.255", 0, ANY_PORT);
    s[3] = sel("2001:db8:2::", "2001:db8:2::ffff", 0, ANY_PORT);
}

/* ---- the rig --------------------------------------------------------------------------------------- */

typedef struct {
    esp_fwd_t *dp;
    int tun_app, tun_fw;      /* the kernel's side of the "TUN", the worker's side */
    int gw, peer;             /* UDP sockets on 127.0.0.1 */
    struct sockaddr_in gw_addr;
    uint16_t peer_port;
    esp_fwd_io_t io;
    esp_sa_t *gw_in, *gw_out, *peer_in, *peer_out;
    inner_selector_t sels[N_SELS];
} rig_t;

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
    c.udp_encap = 0; /* the kernel strips the UDP header: the forwarder sees bare ESP */
    int st = 0;
    esp_sa_t *sa = esp_sa_new(&c, &st);
    if (sa == NULL) abort();
    return sa;
}

static int udp_socket(struct sockaddr_in *bound)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) abort();
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || getsockname(fd, (struct sockaddr *)&a, &al) != 0) abort();
    int buf = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf)); /* capped by rmem_max: best effort */
    *bound = a;
    return fd;
}

/* The rig's one tunnel in slot SLOT: both SAs in one entry. */
static esp_fwd_tunnel_t tunnel_of(const rig_t *r)
{
    esp_fwd_tunnel_t t;
    memset(&t, 0, sizeof(t));
    t.slot = SLOT;
    t.in_sa = r->gw_in;
    t.out_sa = r->gw_out;
    t.spi_in = SPI_IN;
    t.udp_encap = 1;
    t.peer_family = 4;
    addr("127.0.0.1", t.peer_addr);
    t.peer_port = r->peer_port;
    t.mtu = TUN_MTU;
    t.mss = TUN_MSS;
    t.sel_offset = 0;
    t.n_local = 2;
    t.n_remote = 2;
    return t;
}

static int install(rig_t *r, const esp_fwd_tunnel_t *t, size_t n, const uint8_t *src4, const uint8_t *src6)
{
    return esp_fwd_set_tables(r->dp, t, n, r->sels, N_SELS, src4, src6);
}

static void rig_open(rig_t *r)
{
    memset(r, 0, sizeof(*r));
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) abort();
    r->tun_app = sv[0];
    r->tun_fw = sv[1];
    if (fcntl(r->tun_fw, F_SETFL, fcntl(r->tun_fw, F_GETFL) | O_NONBLOCK) != 0) abort(); /* as a TUN queue */
    struct sockaddr_in pa;
    r->gw = udp_socket(&r->gw_addr);
    r->peer = udp_socket(&pa);
    r->peer_port = ntohs(pa.sin_port);
    r->dp = esp_fwd_new(MAX_SLOTS);
    if (r->dp == NULL) abort();
    r->gw_in = new_sa(SPI_IN, 0);
    r->gw_out = new_sa(SPI_OUT, 1);
    r->peer_in = new_sa(SPI_OUT, 0);
    r->peer_out = new_sa(SPI_IN, 1);
    default_sels(r->sels);
    r->io = (esp_fwd_io_t){.tun_fd = r->tun_fw, .udp_fd = r->gw, .raw_fd = -1, .raw_rx = 0, .stop_fd = -1};
    esp_fwd_tunnel_t t = tunnel_of(r);
    CHECK(install(r, &t, 1, NULL, NULL) == 0);
}

static void rig_close(rig_t *r)
{
    esp_fwd_free(r->dp);
    esp_sa_free(r->gw_in);
    esp_sa_free(r->gw_out);
    esp_sa_free(r->peer_in);
    esp_sa_free(r->peer_out);
    close(r->tun_app);
    close(r->tun_fw);
    close(r->gw);
    close(r->peer);
}

/* Run the worker until its descriptors stay quiet for SETTLE_MS. */
static void pump(rig_t *r)
{
    for (int i = 0; i < MAX_PUMPS; i++) {
        struct pollfd p[2] = {{r->tun_fw, POLLIN, 0}, {r->gw, POLLIN, 0}};
        if (poll(p, 2, SETTLE_MS) <= 0) return;
        CHECK(esp_fwd_poll_once(r->dp, &r->io) == 0);
    }
}

static void send_inner(rig_t *r, const uint8_t *p, size_t n)
{
    CHECK(send(r->tun_app, p, n, 0) == (ssize_t)n);
}

static void send_datagram(rig_t *r, const uint8_t *p, size_t n)
{
    CHECK(sendto(r->peer, p, n, 0, (const struct sockaddr *)&r->gw_addr, sizeof(r->gw_addr)) == (ssize_t)n);
}

/* The peer encrypts an inner packet with its outbound SA (optionally returned instead of sent). */
static size_t seal(rig_t *r, const uint8_t *inner, size_t n, uint8_t *out)
{
    size_t len = 0;
    CHECK(esp_encap(r->peer_out, 0, inner, n, 0, out, PKT_MAX, &len) == ESP_OK);
    return len;
}

static void send_esp(rig_t *r, const uint8_t *inner, size_t n)
{
    static uint8_t buf[PKT_MAX];
    send_datagram(r, buf, seal(r, inner, n, buf));
}

static ssize_t recv_wait(int fd, uint8_t *buf, size_t cap, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return -1;
    return recv(fd, buf, cap, MSG_DONTWAIT);
}

/* What reached the peer, decapsulated with the peer's SA (a failure there counts as a test failure). */
static ssize_t wire(rig_t *r, uint8_t *plain, int *nh, uint8_t *raw, size_t *raw_len)
{
    static uint8_t buf[PKT_MAX];
    uint8_t *b = raw ? raw : buf;
    ssize_t n = recv_wait(r->peer, b, PKT_MAX, SETTLE_MS);
    if (n < 0) return -1;
    if (raw_len) *raw_len = (size_t)n;
    size_t len = 0;
    int st = esp_decap(r->peer_in, b, (size_t)n, plain, PKT_MAX, &len, nh);
    CHECK(st == ESP_OK);
    return st == ESP_OK ? (ssize_t)len : -2;
}

static ssize_t tun_read(rig_t *r, uint8_t *buf) { return recv_wait(r->tun_app, buf, PKT_MAX, SETTLE_MS); }

static uint64_t slot_get(rig_t *r, uint32_t slot, int which)
{
    uint64_t c[FWD_COUNTERS];
    esp_fwd_slot_counters(r->dp, slot, c);
    return c[which];
}

static uint64_t slot_drop(rig_t *r, int reason) { return slot_get(r, SLOT, 4 + reason); }

static uint64_t global_drop(rig_t *r, int reason)
{
    uint64_t g[FWD_DROP_COUNT];
    esp_fwd_global_drops(r->dp, g);
    return g[reason];
}

static uint64_t all_drops(rig_t *r, uint32_t slot)
{
    uint64_t s = 0;
    for (int i = 0; i < FWD_DROP_COUNT; i++) s += slot_get(r, slot, 4 + i) + (slot == SLOT ? global_drop(r, i) : 0);
    return s;
}

/* ---- outbound -------------------------------------------------------------------------------------- */

static void test_outbound_is_encrypted_and_decapsulates_to_the_same_bytes(void)
{
    rig_t r;
    rig_open(&r);
    static uint8_t p4[PKT_MAX], p6[PKT_MAX], plain[PKT_MAX], raw[PKT_MAX];
    size_t n4 = udp_packet(p4, "10.1.0.5", "10.2.0.7", 0, 100, 'a');
    size_t n6 = udp_packet(p6, "2001:db8:1::5", "2001:db8:2::7", 0, 60, 'b');
    /* bytes after the IPv4 length are not part of the packet and must not be sent */
    memset(p4 + n4, 'T', 16);
    send_inner(&r, p4, n4 + 16);
    send_inner(&r, p6, n6);
    pump(&r);
    int nh = 0;
    size_t raw_len = 0;
    ssize_t m = wire(&r, plain, &nh, raw, &raw_len);
    CHECK(m == (ssize_t)n4 && nh == ESP_NH_IPV4 && memcmp(plain, p4, n4) == 0);
    CHECK(raw_len > 4 && be32(raw) == SPI_OUT && memmem(raw, raw_len, p4 + IPV4_HDR, n4 - IPV4_HDR) == NULL);
    m = wire(&r, plain, &nh, NULL, NULL);
    CHECK(m == (ssize_t)n6 && nh == ESP_NH_IPV6 && memcmp(plain, p6, n6) == 0);
    CHECK(wire(&r, plain, &nh, NULL, NULL) == -1);
    CHECK(slot_get(&r, SLOT, FWD_PACKETS_OUT) == 2 && slot_get(&r, SLOT, FWD_BYTES_OUT) == n4 + n6);
    CHECK(all_drops(&r, SLOT) == 0);
    rig_close(&r);
}

static void test_no_policy_is_dropped_never_sent_in_clear(void)
{
    rig_t r;
    rig_open(&r);
    static uint8_t p[PKT_MAX], plain[PKT_MAX];
    int nh;
    /* destination outside the peer's selectors, source outside ours, IPv6 outside */
    const char *pairs[][2] = {{"10.1.0.5", "10.3.0.7"}, {"10.9.0.5", "10.2.0.7"}, {"2001:db8:1::5", "2001:db8:3::7"}};
    for (size_t i = 0; i < 3; i++) send_inner(&r, p, udp_packet(p, pairs[i][0], pairs[i][1], 0, 10, 'x'));
    pump(&r);
    CHECK(wire(&r, plain, &nh, NULL, NULL) == -1);
    CHECK(global_drop(&r, FWD_DROP_NO_POLICY) == 3 && slot_get(&r, SLOT, FWD_PACKETS_OUT) == 0);
    rig_close(&r);
}

static void test_malformed_inner_packets_are_counted(void)
{
    rig_t r;
    rig_open(&r);
    static uint8_t good[PKT_MAX], bad[16][128], plain[PKT_MAX];
    size_t lens[16], nb = 0;
    size_t ng = udp_packet(good, "10.1.0.5", "10.2.0.7", 0, 20, 'g');
    bad[nb][0] = 0x45; lens[nb++] = 1;                                        /* one byte */
    memset(bad[nb], 0, 40); lens[nb++] = 40;                                  /* version 0 */
    memset(bad[nb], 0, 20); bad[nb][0] = 0x45; lens[nb++] = 20;               /* total length 0 */
    memcpy(bad[nb], good, ng - 3); lens[nb++] = ng - 3;                       /* length says 3 more */
    memset(bad[nb], 0, 31); bad[nb][0] = 0x60; lens[nb++] = 31;               /* shorter than IPv6's header */
    memcpy(bad[nb], good, ng); bad[nb][0] = 0x4f; lens[nb++] = 30;            /* IHL 60 in 30 bytes */
    memcpy(bad[nb], good, ng); bad[nb][0] = 0x44; lens[nb++] = ng;            /* IHL below 5 words */
    memcpy(bad[nb], good, ng); wr16(bad[nb] + 2, 19); lens[nb++] = ng;        /* total below the header */
    memcpy(bad[nb], good, ng); bad[nb][0] = 0x75; lens[nb++] = ng;            /* version 7 */
    /* an IPv6 jumbogram marker (payload length 0 with hop-by-hop): never valid on a tunnel */
    lens[nb] = ipv6(bad[nb], "2001:db8:1::5", "2001:db8:2::7", NH_HOP_BY_HOP, NULL, 0);
    nb++;
    for (size_t i = 0; i < nb; i++) send_inner(&r, bad[i], lens[i]);
    pump(&r);
    int nh;
    CHECK(wire(&r, plain, &nh, NULL, NULL) == -1);
    CHECK(global_drop(&r, FWD_DROP_MALFORMED) == nb);
    /* a zero-length read ends a batch and is no packet at all: nothing counted */
    send_inner(&r, good, 0);
    pump(&r);
    CHECK(global_drop(&r, FWD_DROP_MALFORMED) == nb && all_drops(&r, SLOT) == nb);
    /* longer than the largest inner packet: the TUN read truncates it, so its IP length lies */
    static uint8_t huge[PKT_MAX];
    send_inner(&r, huge, udp_packet(huge, "10.1.0.5", "10.2.0.7", 0, FWD_MAX_INNER, 'h'));
    pump(&r);
    CHECK(global_drop(&r, FWD_DROP_MALFORMED) == nb + 1);
    rig_close(&r);
}

/* An ICMP "fragmentation needed" answer to orig: parsed field by field, checksums summed independently. */
static void check_icmp4(const uint8_t *a, size_t n, const uint8_t *orig, const char *src, uint16_t mtu)
{
    uint8_t s[16];
    addr(src, s);
    size_t quote = (size_t)(orig[0] & 0x0f) * 4 + 8;
    CHECK(n == IPV4_HDR + ICMP_HDR + quote);
    CHECK(a[0] == 0x45 && be16(a + 2) == n && a[9] == INNER_PROTO_ICMP && a[8] > 0);
    CHECK(ref_ipv4_header_ok(a));
    CHECK(memcmp(a + 12, s, 4) == 0 && memcmp(a + 16, orig + 12, 4) == 0); /* back to the sender */
    const uint8_t *icmp = a + IPV4_HDR;
    CHECK(icmp[0] == 3 && icmp[1] == 4 && be16(icmp + 4) == 0 && be16(icmp + 6) == mtu);
    size_t pos = 0;
    CHECK(ref_fold(ref_add(0, icmp, n - IPV4_HDR, &pos)) == 0xffff);
    CHECK(memcmp(icmp + ICMP_HDR, orig, quote) == 0);
    inner_info_t info;
    CHECK(inner_parse(a, n, &info) == 0 && info.proto == INNER_PROTO_ICMP && info.sport == 0x0304);
}

static void test_too_big_with_df_is_answered_with_icmp(void)
{
    rig_t r;
    rig_open(&r);
    static uint8_t p[PKT_MAX], a[PKT_MAX], plain[PKT_MAX];
    int nh;
    size_t n = udp_packet(p, "10.1.0.5", "10.2.0.7", IPV4_DF, 1500, 'x');
    send_inner(&r, p, n);
    pump(&r);
    CHECK(wire(&r, plain, &nh, NULL, NULL) == -1);
    ssize_t m = tun_read(&r, a);
    CHECK(m > 0);
    if (m > 0) check_icmp4(a, (size_t)m, p, "10.2.0.7", TUN_MTU); /* no ICMP source set: the destination */
    CHECK(tun_read(&r, a) == -1);
    CHECK(slot_drop(&r, FWD_DROP_TOO_BIG) == 1 && slot_get(&r, SLOT, FWD_PACKETS_OUT) == 0);

    /* exactly the MTU passes; one more is too big */
    send_inner(&r, p, udp_packet(p, "10.1.0.5", "10.2.0.7", IPV4_DF, TUN_MTU - IPV4_HDR - UDP_HDR, 'e'));
    pump(&r);
    CHECK(wire(&r, plain, &nh, NULL, NULL) == TUN_MTU && tun_read(&r, a) == -1);

    /* with an ICMP source configured, and an IPv4 header with options (the quote grows with it) */
    uint8_t src4[16];
    addr("10.1.0.1", src4);
    esp_fwd_tunnel_t t = tunnel_of(&r);
    CHECK(install(&r, &t, 1, src4, NULL) == 0);
    n = udp_packet(p, "10.1.0.6", "10.2.0.9", IPV4_DF, 1500, 'o');
    memmove(p + IPV4_HDR + 4, p + IPV4_HDR, n - IPV4_HDR);
    memset(p + IPV4_HDR, 1, 4); /* four NOP options */
    p[0] = 0x46;
    wr16(p + 2, (uint16_t)(n + 4));
    n += 4;
    send_inner(&r, p, n);
    pump(&r);
    m = tun_read(&r, a);
    CHECK(m > 0);
    if (m > 0) check_icmp4(a, (size_t)m, p, "10.1.0.1", TUN_MTU);

    /* an ICMP error itself is never answered (RFC 1122 3.2.2), but still not sent */
    static uint8_t l4[PKT_MAX];
    memset(l4, 'z', 1500);
    l4[0] = 3; l4[1] = 1;
    send_inner(&r, p, ipv4(p, "10.1.0.5", "10.2.0.7", INNER_PROTO_ICMP, IPV4_DF, l4, 1500));
    pump(&r);
    CHECK(tun_read(&r, a) == -1 && wire(&r, plain, &nh, NULL, NULL) == -1);
    CHECK(slot_drop(&r, FWD_DROP_TOO_BIG) == 3);
    rig_close(&r);
}

static void test_too_big_without_df_is_sent(void)
{
    rig_t r;
    rig_open(&r);
    static uint8_t p[PKT_MAX], a[PKT_MAX], plain[PKT_MAX];
    int nh;
    size_t n = udp_packet(p, "10.1.0.5", "10.2.0.7", 0, 1500, 'x');
    send_inner(&r, p, n);
    pump(&r);
    CHECK(wire(&r, plain, &nh, NULL, NULL) == (ssize_t)n && memcmp(plain, p, n) == 0);
    CHECK(tun_read(&r, a) == -1);
    CHECK(slot_drop(&r, FWD_DROP_TOO_BIG) == 0 && slot_get(&r, SLOT, FWD_PACKETS_OUT) == 1);
    rig_close(&r);
}

static void test_ipv6_too_big_gets_packet_too_big(void)
{
    rig_t r;
    rig_open(&r);
    static uint8_t p[PKT_MAX], a[PKT_MAX];
    uint8_t src6[16], s[16];
    addr("2001:db8:1::1", src6);
    esp_fwd_tunnel_t t = tunnel_of(&r);
    CHECK(install(&r, &t, 1, NULL, src6) == 0);
    size_t n = udp_packet(p, "2001:db8:1::5", "2001:db8:2::7", 0, 1500, 'y');
    send_inner(&r, p, n);
    pump(&r);
    ssize_t m = tun_read(&r, a);
    CHECK(m == INNER_IPV6_MIN_MTU); /* RFC 4443 2.4 (c): as much of the packet as fits in 1280 */
    if (m > 0) {
        CHECK(a[0] >> 4 == 6 && a[6] == INNER_PROTO_ICMPV6 && be16(a + 4) == m - IPV6_HDR);
        CHECK(memcmp(a + 8, src6, 16) == 0 && memcmp(a + 24, p + 8, 16) == 0);
        const uint8_t *icmp = a + IPV6_HDR;
        CHECK(icmp[0] == 2 && icmp[1] == 0 && be32(icmp + 4) == TUN_MTU);
        CHECK(ref_l4_ok(6, a + 8, a + 24, INNER_PROTO_ICMPV6, icmp, (size_t)m - IPV6_HDR));
        CHECK(memcmp(icmp + ICMP_HDR, p, (size_t)m - IPV6_HDR - ICMP_HDR) == 0);
    }
    /* no ICMP source for IPv6: the packet's own destination answers */
    CHECK(install(&r, &t, 1, NULL, NULL) == 0);
    send_inner(&r, p, n);
    pump(&r);
    m = tun_read(&r, a);
    addr("2001:db8:2::7", s);
    CHECK(m == INNER_IPV6_MIN_MTU && memcmp(a + 8, s, 16) == 0);
    CHECK(slot_drop(&r, FWD_DROP_TOO_BIG) == 2);
    rig_close(&r);
}

/* The SYN after clamping: the MSS is `want`, the checksum verifies, nothing else changed. */
static void check_clamped(const uint8_t *got, size_t n, const uint8_t *orig, size_t orig_n, size_t mss_at,
                          uint16_t want)
{
    CHECK(n == orig_n);
    if (n != orig_n) return;
    int fam = got[0] >> 4;
    size_t l4 = fam == 6 ? IPV6_HDR : IPV4_HDR;
    CHECK(be16(got + mss_at) == want);
    const uint8_t *src = fam == 6 ? got + 8 : got + 12, *dst = fam == 6 ? got + 24 : got + 16;
    CHECK(ref_l4_ok(fam, src, dst, INNER_PROTO_TCP, got + l4, n - l4));
    for (size_t i = 0; i < n; i++)
        if (i != mss_at && i != mss_at + 1 && i != l4 + 16 && i != l4 + 17) CHECK(got[i] == orig[i]);
}

static void test_mss_clamp_both_ways_with_valid_checksums(void)
{
    rig_t r;
    rig_open(&r);
    static uint8_t p[PKT_MAX], got[PKT_MAX];
    int nh;
    size_t at;
    for (int odd = 0; odd < 2; odd++) {
        size_t n = tcp_syn(p, "10.1.0.5", "10.2.0.7", 1460, odd, TCP_SYN, &at);
        send_inner(&r, p, n);
        pump(&r);
        ssize_t m = wire(&r, got, &nh, NULL, NULL);
        CHECK(m > 0);
        if (m > 0) check_clamped(got, (size_t)m, p, n, at, TUN_MSS);
        /* the SYN-ACK coming back from the peer, with a jumbo MSS */
        n = tcp_syn(p, "10.2.0.7", "10.1.0.5", 8960, odd, TCP_SYN | TCP_ACK, &at);
        send_esp(&r, p, n);
        pump(&r);
        m = tun_read(&r, got);
        CHECK(m > 0);
        if (m > 0) check_clamped(got, (size_t)m, p, n, at, TUN_MSS);
        /* inner IPv6: 20 bytes less */
        n = tcp_syn(p, "2001:db8:1::5", "2001:db8:2::7", 1440, odd, TCP_SYN, &at);
        send_inner(&r, p, n);
        pump(&r);
        m = wire(&r, got, &nh, NULL, NULL);
        CHECK(m > 0);
        if (m > 0) check_clamped(got, (size_t)m, p, n, at, IPV6_MSS);
    }
    /* already small, or not a SYN: untouched to the byte */
    const struct { uint16_t mss; uint8_t flags; } keep[] = {{536, TCP_SYN}, {TUN_MSS, TCP_SYN}, {1460, TCP_ACK}};
    for (size_t k = 0; k < sizeof(keep) / sizeof(keep[0]); k++) {
        size_t n = tcp_syn(p, "10.1.0.5", "10.2.0.7", keep[k].mss, 1, keep[k].flags, &at);
        send_inner(&r, p, n);
        pump(&r);
        CHECK(wire(&r, got, &nh, NULL, NULL) == (ssize_t)n && memcmp(got, p, n) == 0);
    }
    /* clamping off */
    esp_fwd_tunnel_t t = tunnel_of(&r);
    t.mss = 0;
    CHECK(install(&r, &t, 1, NULL, NULL) == 0);
    size_t n = tcp_syn(p, "10.1.0.5", "10.2.0.7", 1460, 0, TCP_SYN, &at);
    send_inner(&r, p, n);
    pump(&r);
    CHECK(wire(&r, got, &nh, NULL, NULL) == (ssize_t)n && memcmp(got, p, n) == 0);
    rig_close(&r);
}

/* ---- inbound --------------------------------------------------------------------------------------- */

static void test_inbound_valid_reaches_the_tun(void)
{
    rig_t r;
    rig_open(&r);
    static uint8_t p[PKT_MAX], got[PKT_MAX];
    size_t n4 = udp_packet(p, "10.2.0.7", "10.1.0.5", 0, 33, 'b');
    send_esp(&r, p, n4);
    pump(&r);
    CHECK(tun_read(&r, got) == (ssize_t)n4 && memcmp(got, p, n4) == 0);
    size_t n6 = udp_packet(p, "2001:db8:2::7", "2001:db8:1::5", 0, 44, 'c');
    send_esp(&r, p, n6);
    pump(&r);
    CHECK(tun_read(&r, got) == (ssize_t)n6 && memcmp(got, p, n6) == 0);
    CHECK(tun_read(&r, got) == -1);
    CHECK(slot_get(&r, SLOT, FWD_PACKETS_IN) == 2 && slot_get(&r, SLOT, FWD_BYTES_IN) == n4 + n6);
    CHECK(all_drops(&r, SLOT) == 0);
    rig_close(&r);
}

static int readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 0) == 1;
}

/* Authentic ESP from another port (the peer's NAT made a new mapping) is delivered and reported once;
 * from the peer, or forged, nothing is reported. */
static void test_authentic_esp_from_a_new_source_is_reported_once(void)
{
    rig_t r;
    rig_open(&r);
    static uint8_t p[PKT_MAX], esp[PKT_MAX], got[PKT_MAX];
    size_t n = udp_packet(p, "10.2.0.7", "10.1.0.5", 0, 33, 'm');
    send_esp(&r, p, n);
    pump(&r);
    int mfd = esp_fwd_mapping_fd(r.dp);
    esp_fwd_mapping_t m[4];
    CHECK(!readable(mfd) && esp_fwd_take_mappings(r.dp, m, 4) == 0);
    struct sockaddr_in moved_addr;
    int moved = udp_socket(&moved_addr);
    for (int i = 0; i < 3; i++) {
        size_t len = seal(&r, p, n, esp);
        CHECK(sendto(moved, esp, len, 0, (const struct sockaddr *)&r.gw_addr, sizeof(r.gw_addr)) == (ssize_t)len);
    }
    size_t len = seal(&r, p, n, esp);
    esp[len - 1] ^= 1; /* forged: fails the ICV, never reported */
    CHECK(sendto(moved, esp, len, 0, (const struct sockaddr *)&r.gw_addr, sizeof(r.gw_addr)) == (ssize_t)len);
    pump(&r);
    for (int i = 0; i < 3; i++) CHECK(tun_read(&r, got) == (ssize_t)n); /* delivered all the same */
    CHECK(readable(mfd) && esp_fwd_take_mappings(r.dp, m, 4) == 1);
    uint8_t lo[16];
    addr("127.0.0.1", lo);
    CHECK(m[0].spi == SPI_IN && m[0].family == 4 && memcmp(m[0].addr, lo, 4) == 0);
    CHECK(m[0].port == ntohs(moved_addr.sin_port) && m[0].port != r.peer_port);
    CHECK(!readable(mfd) && esp_fwd_take_mappings(r.dp, m, 4) == 0); /* taken: drained */
    CHECK(slot_drop(&r, FWD_DROP_ICV) == 1);
    close(moved);
    rig_close(&r);
}

static void test_inbound_drops_by_reason(void)
{
    rig_t r;
    rig_open(&r);
    static uint8_t p[PKT_MAX], good[PKT_MAX], forged[PKT_MAX], old[PKT_MAX], got[PKT_MAX];
    size_t n = udp_packet(p, "10.2.0.7", "10.1.0.5", 0, 10, 'g');
    size_t ng = seal(&r, p, n, good);
    size_t nf = seal(&r, p, n, forged);
    forged[nf - 1] ^= 1; /* the ICV */
    size_t nold = seal(&r, p, n, old);
    send_datagram(&r, good, ng);
    send_datagram(&r, good, ng);   /* replay */
    send_datagram(&r, forged, nf); /* ICV */
    pump(&r);
    CHECK(tun_read(&r, got) == (ssize_t)n && tun_read(&r, got) == -1);
    CHECK(slot_drop(&r, FWD_DROP_REPLAY) == 1 && slot_drop(&r, FWD_DROP_ICV) == 1);

    /* authentic, but outside the peer's selectors (RFC 4301 5.2): source, then destination, then a port */
    static uint8_t q[PKT_MAX];
    send_esp(&r, q, udp_packet(q, "10.7.0.7", "10.1.0.5", 0, 10, 'o'));
    send_esp(&r, q, udp_packet(q, "10.2.0.7", "10.1.9.5", 0, 10, 'o'));
    send_esp(&r, q, udp_packet(q, "2001:db8:2::7", "2001:db8:7::5", 0, 10, 'o'));
    pump(&r);
    CHECK(tun_read(&r, got) == -1 && slot_drop(&r, FWD_DROP_POLICY) == 3);

    /* authentic but its inner packet does not parse */
    uint8_t junk[IPV4_HDR + 8];
    memset(junk, 0, sizeof(junk));
    junk[0] = 0x4f; /* IHL 60 bytes in a 28-byte packet: esp_core passes it (total fits), inner_parse does not */
    wr16(junk + 2, sizeof(junk));
    send_esp(&r, junk, sizeof(junk));
    pump(&r);
    CHECK(tun_read(&r, got) == -1 && slot_drop(&r, FWD_DROP_MALFORMED) == 1);

    /* left of the window: sealed early, sent after the peer moved far ahead */
    CHECK(esp_sa_advance(r.peer_out, 10 * REPLAY_WINDOW) == ESP_OK);
    send_esp(&r, p, n);
    pump(&r);
    send_datagram(&r, old, nold);
    pump(&r);
    CHECK(tun_read(&r, got) == (ssize_t)n && tun_read(&r, got) == -1);
    CHECK(slot_drop(&r, FWD_DROP_WINDOW) == 1);

    /* gateway-wide: an SPI no tunnel has, IKE behind the non-ESP marker, too short, and a keepalive (no drop) */
    esp_sa_t *stranger = new_sa(SPI_UNKNOWN, 1);
    size_t ns = 0;
    CHECK(esp_encap(stranger, 0, p, n, 0, forged, PKT_MAX, &ns) == ESP_OK);
    esp_sa_free(stranger);
    send_datagram(&r, forged, ns);
    static const uint8_t ike[] = {0, 0, 0, 0, 'i', 'k', 'e', '!', 0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t keepalive[] = {0xff}, short_one[] = {0x12, 0x34};
    send_datagram(&r, ike, sizeof(ike));
    send_datagram(&r, short_one, sizeof(short_one));
    send_datagram(&r, keepalive, sizeof(keepalive));
    send_datagram(&r, keepalive, 0); /* an empty datagram: not ESP either */
    /* our SPI in front of too little for an ESP packet: that SA's own malformed count */
    static const uint8_t stub[] = {0, 0, SPI_IN >> 8, SPI_IN & 0xff, 'j', 'u', 'n', 'k'};
    send_datagram(&r, stub, sizeof(stub));
    pump(&r);
    CHECK(tun_read(&r, got) == -1);
    CHECK(global_drop(&r, FWD_DROP_NO_SA) == 1 && global_drop(&r, FWD_DROP_NOT_ESP) == 3);
    CHECK(slot_drop(&r, FWD_DROP_MALFORMED) == 2);
    uint64_t total = 0;
    for (int i = 0; i < FWD_DROP_COUNT; i++) total += global_drop(&r, i);
    CHECK(total == 4); /* the keepalive is not a drop */
    CHECK(slot_get(&r, SLOT, FWD_PACKETS_IN) == 2);
    rig_close(&r);
}

/* ---- the table --------------------------------------------------------------------------------------- */

static void test_set_tables_refuses_bad_input_and_keeps_the_old(void)
{
    rig_t r;
    rig_open(&r);
    static uint8_t p[PKT_MAX], got[PKT_MAX];
    int nh;
    esp_sa_t *other_in = new_sa(SPI_IN, 0);
    esp_fwd_tunnel_t good = tunnel_of(&r), bad[2];
    bad[0] = good;
    bad[1] = good;
    bad[1].slot = 2;
    bad[1].in_sa = other_in; /* a second SA behind the same inbound SPI */
    bad[1].out_sa = NULL;
    CHECK(install(&r, bad, 2, NULL, NULL) == -1);
    /* the same SPI is fine once, when the other entry has no inbound SA */
    bad[1].in_sa = NULL;
    bad[1].out_sa = r.gw_out;
    CHECK(install(&r, bad, 2, NULL, NULL) == 0);

    enum { BAD_SLOT, BAD_SLOT_FAR, BAD_N_LOCAL, BAD_N_REMOTE, BAD_SELS_PAST_END, BAD_OFFSET_PAST_END,
           BAD_OFFSET_HUGE, BAD_MTU, BAD_FAMILY5, BAD_FAMILY0, BAD_COUNT };
    for (int b = 0; b < BAD_COUNT; b++) {
        esp_fwd_tunnel_t t = good;
        switch (b) {
        case BAD_SLOT: t.slot = MAX_SLOTS; break;
        case BAD_SLOT_FAR: t.slot = UINT32_MAX; break;
        case BAD_N_LOCAL: t.n_local = FWD_MAX_SELECTORS + 1; break;
        case BAD_N_REMOTE: t.n_remote = FWD_MAX_SELECTORS + 1; break;
        case BAD_SELS_PAST_END: t.sel_offset = 1; break; /* 1 + 2 + 2 > N_SELS */
        case BAD_OFFSET_PAST_END: t.sel_offset = N_SELS + 1; t.n_local = t.n_remote = 0; break;
        case BAD_OFFSET_HUGE: t.sel_offset = UINT32_MAX; t.n_local = 0; t.n_remote = 1; break;
        case BAD_MTU: t.mtu = FWD_MAX_INNER + 1; break;
        case BAD_FAMILY5: t.peer_family = 5; break;
        case BAD_FAMILY0: t.peer_family = 0; break;
        }
        int rc = install(&r, &t, 1, NULL, NULL);
        if (rc != -1) fprintf(stderr, "set_tables accepted bad case %d\n", b);
        CHECK(rc == -1);
    }
    /* the same bad tunnel behind a good one: the whole table is refused */
    bad[0] = good;
    bad[1] = good;
    bad[1].in_sa = NULL;
    bad[1].mtu = FWD_MAX_INNER + 1;
    CHECK(install(&r, bad, 2, NULL, NULL) == -1);
    /* more selectors than the tunnels could use */
    static inner_selector_t many[2 * FWD_MAX_SELECTORS + 1];
    CHECK(esp_fwd_set_tables(r.dp, &good, 1, many, 2 * FWD_MAX_SELECTORS + 1, NULL, NULL) == -1);
    /* the limits themselves are accepted */
    esp_fwd_tunnel_t edge = good;
    edge.slot = MAX_SLOTS - 1;
    edge.mtu = FWD_MAX_INNER;
    CHECK(install(&r, &edge, 1, NULL, NULL) == 0);
    /* and a refusal leaves the running table alone: a small MTU there, the default in the refused one */
    esp_fwd_tunnel_t running = good, t = good;
    running.mtu = 100;
    CHECK(install(&r, &running, 1, NULL, NULL) == 0);
    t.peer_family = 5;
    CHECK(install(&r, &t, 1, NULL, NULL) == -1);
    send_inner(&r, p, udp_packet(p, "10.1.0.5", "10.2.0.7", IPV4_DF, 200, 'k'));
    send_inner(&r, p, udp_packet(p, "10.1.0.5", "10.2.0.7", 0, 10, 'k'));
    pump(&r);
    CHECK(slot_drop(&r, FWD_DROP_TOO_BIG) == 1 && tun_read(&r, got) > 0);
    CHECK(wire(&r, got, &nh, NULL, NULL) > 0);
    CHECK(slot_get(&r, SLOT, FWD_PACKETS_OUT) == 1);
    /* an empty table: everything is without policy, and unknown inbound */
    CHECK(esp_fwd_set_tables(r.dp, NULL, 0, NULL, 0, NULL, NULL) == 0);
    send_inner(&r, p, udp_packet(p, "10.1.0.5", "10.2.0.7", 0, 10, 'k'));
    send_esp(&r, p, udp_packet(p, "10.2.0.7", "10.1.0.5", 0, 10, 'k'));
    pump(&r);
    CHECK(global_drop(&r, FWD_DROP_NO_POLICY) == 1 && global_drop(&r, FWD_DROP_NO_SA) == 1);
    esp_sa_free(other_in);
    rig_close(&r);
}

/* ---- a worker thread while the table changes ------------------------------------------------------ */

#define SWAP_PACKETS 2000      /* each way: bounded, a few thousand in all */
#define SWAP_EVERY 100         /* packets between table swaps */
#define SWAP_GENERATIONS ((SWAP_PACKETS - 1) / SWAP_EVERY) /* swaps before packets 100, 200, ... */
#define SWAP_IN_FLIGHT 32      /* unprocessed packets at most: no socket buffer ever overflows */
#define SWAP_DEADLINE_S 30     /* a hung worker fails the test instead of hanging it */
#define DECOY_SLOT 2

typedef struct {
    esp_fwd_t *dp;
    esp_fwd_io_t io;
    int rc;
} worker_arg_t;

static void *worker_main(void *arg)
{
    worker_arg_t *w = arg;
    w->rc = esp_fwd_run(w->dp, &w->io);
    return NULL;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Every packet the worker has dealt with, either way, in any counter. */
static uint64_t accounted(rig_t *r)
{
    uint64_t n = all_drops(r, SLOT) + all_drops(r, DECOY_SLOT);
    for (int which = FWD_PACKETS_IN; which <= FWD_PACKETS_OUT; which += 2)
        n += slot_get(r, SLOT, which) + slot_get(r, DECOY_SLOT, which);
    return n;
}

/* Read what arrived at the peer (decapsulated with the SA of its SPI) and on the TUN. */
static void drain(rig_t *r, esp_sa_t *const *peer_ins, size_t *wire_n, size_t *tun_n, size_t tun_len)
{
    static uint8_t buf[PKT_MAX], plain[PKT_MAX];
    ssize_t n;
    while ((n = recv(r->peer, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
        uint32_t gen = n >= 4 ? be32(buf) - SPI_OUT : UINT32_MAX;
        CHECK(gen <= SWAP_GENERATIONS);
        if (gen > SWAP_GENERATIONS) continue;
        size_t len = 0;
        int nh = 0;
        CHECK(esp_decap(peer_ins[gen], buf, (size_t)n, plain, sizeof(plain), &len, &nh) == ESP_OK);
        CHECK(len > IPV4_HDR && plain[15] == 5); /* from 10.1.0.5: the decoy tunnel never gets it */
        (*wire_n)++;
    }
    while ((n = recv(r->tun_app, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
        CHECK((size_t)n == tun_len);
        (*tun_n)++;
    }
}

static void test_table_swaps_under_a_running_worker(void)
{
    rig_t r;
    rig_open(&r);
    static uint8_t out_pkt[PKT_MAX], in_pkt[PKT_MAX];
    esp_sa_t *outs[SWAP_GENERATIONS + 1], *peer_ins[SWAP_GENERATIONS + 1];
    outs[0] = r.gw_out;
    peer_ins[0] = r.peer_in;
    esp_sa_t *decoy_out = new_sa(0x3001, 1);
    /* the rig's selectors, then the decoy's: ours 10.9.0.0/24, so the test traffic never matches it */
    inner_selector_t sels[N_SELS + 2];
    memcpy(sels, r.sels, sizeof(r.sels));
    sels[N_SELS] = sel("10.9.0.0", "10.9.0.255", 0, ANY_PORT);
    sels[N_SELS + 1] = r.sels[2];
    esp_fwd_tunnel_t decoy = tunnel_of(&r);
    decoy.slot = DECOY_SLOT;
    decoy.in_sa = NULL;
    decoy.out_sa = decoy_out;
    decoy.sel_offset = N_SELS;
    decoy.n_local = decoy.n_remote = 1;

    int stop = eventfd(0, EFD_CLOEXEC);
    CHECK(stop >= 0);
    worker_arg_t w = {r.dp, r.io, -2};
    w.io.stop_fd = stop;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, worker_main, &w) == 0);

    size_t n_out = udp_packet(out_pkt, "10.1.0.5", "10.2.0.7", 0, 64, 'o');
    size_t n_in = udp_packet(in_pkt, "10.2.0.7", "10.1.0.5", 0, 48, 'i');
    size_t wire_n = 0, tun_n = 0;
    uint64_t sent = 0;
    double deadline = now_s() + SWAP_DEADLINE_S;
    for (int i = 0, g = 0; i < SWAP_PACKETS; i++) {
        if (i && i % SWAP_EVERY == 0) {
            g++;
            outs[g] = new_sa(SPI_OUT + (uint32_t)g, 1);
            peer_ins[g] = new_sa(SPI_OUT + (uint32_t)g, 0);
            esp_fwd_tunnel_t t[2] = {decoy, tunnel_of(&r)};
            t[1].out_sa = outs[g];
            /* odd generations put the decoy first, so a flow cache that outlived its table would misroute */
            CHECK(esp_fwd_set_tables(r.dp, g % 2 ? t : t + 1, g % 2 ? 2 : 1, sels, N_SELS + 2, NULL, NULL) == 0);
            if (g > 1) esp_sa_free(outs[g - 1]); /* the contract: no worker uses it once set_tables returned */
        }
        out_pkt[IPV4_HDR + UDP_HDR] = (uint8_t)i; /* a new payload, the same flow */
        send_inner(&r, out_pkt, n_out);
        send_esp(&r, in_pkt, n_in);
        sent += 2;
        while (sent - accounted(&r) > SWAP_IN_FLIGHT && now_s() < deadline) {
            drain(&r, peer_ins, &wire_n, &tun_n, n_in);
            poll(NULL, 0, 1);
        }
        drain(&r, peer_ins, &wire_n, &tun_n, n_in);
    }
    while ((accounted(&r) < sent || wire_n < SWAP_PACKETS || tun_n < SWAP_PACKETS) && now_s() < deadline) {
        poll(NULL, 0, 1);
        drain(&r, peer_ins, &wire_n, &tun_n, n_in);
    }
    CHECK(eventfd_write(stop, 1) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(w.rc == 0);
    CHECK(accounted(&r) == sent);
    CHECK(slot_get(&r, SLOT, FWD_PACKETS_OUT) == SWAP_PACKETS && slot_get(&r, SLOT, FWD_PACKETS_IN) == SWAP_PACKETS);
    CHECK(slot_get(&r, SLOT, FWD_BYTES_OUT) == (uint64_t)SWAP_PACKETS * n_out);
    CHECK(all_drops(&r, SLOT) == 0 && accounted(&r) - slot_get(&r, SLOT, FWD_PACKETS_OUT) -
                                          slot_get(&r, SLOT, FWD_PACKETS_IN) == 0);
    CHECK(wire_n == SWAP_PACKETS && tun_n == SWAP_PACKETS);
    esp_stats_t s;
    esp_sa_stats(r.gw_in, &s);
    CHECK(s.packets == SWAP_PACKETS);
    /* the last table still points at outs[SWAP_GENERATIONS]: replace it before freeing that */
    esp_fwd_tunnel_t t = tunnel_of(&r);
    CHECK(install(&r, &t, 1, NULL, NULL) == 0);
    if (SWAP_GENERATIONS > 0) esp_sa_free(outs[SWAP_GENERATIONS]);
    for (int g = 1; g <= SWAP_GENERATIONS; g++) esp_sa_free(peer_ins[g]);
    esp_sa_free(decoy_out);
    close(stop);
    rig_close(&r);
}

/* ---- inner_parse ---------------------------------------------------------------------------------- */

/* IPv6 UDP 4000 -> 53 behind n destination options headers (8 bytes each: a PadN option). */
static size_t ipv6_ext_chain(uint8_t *p, int n)
{
    uint8_t rest[512];
    size_t o = 0;
    for (int k = 0; k < n; k++) {
        memset(rest + o, 0, 8);
        rest[o] = k == n - 1 ? INNER_PROTO_UDP : NH_DEST_OPTS;
        rest[o + 2] = 1; /* PadN */
        rest[o + 3] = 4;
        o += 8;
    }
    o += udp_hdr(rest + o, 4000, 53, 4, 'u');
    return ipv6(p, "2001:db8:1::5", "2001:db8:2::7", n ? NH_DEST_OPTS : INNER_PROTO_UDP, rest, o);
}

static void test_inner_parse_ipv6_chains_and_fragments(void)
{
    static uint8_t p[PKT_MAX];
    inner_info_t info;
    inner_selector_t port53 = sel("2001:db8:2::", "2001:db8:2::ffff", INNER_PROTO_UDP, 53, 53);
    inner_selector_t any = sel("2001:db8:2::", "2001:db8:2::ffff", 0, ANY_PORT);
    inner_selector_t opaque = sel("2001:db8:2::", "2001:db8:2::ffff", 0, OPAQUE_PORT);
    for (int n = 0; n <= INNER_MAX_EXT_HEADERS + 3; n++) {
        size_t len = ipv6_ext_chain(p, n);
        CHECK(inner_parse(p, len, &info) == 0 && info.family == 6 && info.length == len && info.df == 1);
        if (n < INNER_MAX_EXT_HEADERS) {
            CHECK(info.ports_known && info.proto == INNER_PROTO_UDP && info.sport == 4000 && info.dport == 53);
            CHECK(info.l4_offset == IPV6_HDR + 8 * n);
            CHECK(inner_selector_match(&port53, &info, 0) && !inner_selector_match(&opaque, &info, 0));
        } else if (n > INNER_MAX_EXT_HEADERS) {
            /* too long a chain: given up, so only "any port" (and OPAQUE) selectors may match */
            CHECK(!info.ports_known);
            CHECK(!inner_selector_match(&port53, &info, 0) && inner_selector_match(&opaque, &info, 0));
        }
        CHECK(inner_selector_match(&any, &info, 0));
    }
    /* an extension header whose length runs past the packet: no ports, no read past the end (ASan) */
    size_t len = ipv6_ext_chain(p, 1);
    p[IPV6_HDR + 1] = 255;
    CHECK(inner_parse(p, len, &info) == 0 && !info.ports_known);
    /* the header ends exactly at the packet's end: parsed, but nothing left for ports */
    len = ipv6_ext_chain(p, 1);
    CHECK(inner_parse(p, IPV6_HDR + 8, &info) == -1); /* the payload length says more: a lie */
    wr16(p + 4, 8);
    CHECK(inner_parse(p, len, &info) == 0 && !info.ports_known && info.length == IPV6_HDR + 8);

    /* fragment header: the first fragment keeps its ports, a later one has none */
    uint8_t rest[64];
    for (int later = 0; later < 2; later++) {
        memset(rest, 0, 8);
        rest[0] = INNER_PROTO_UDP;
        wr16(rest + 2, later ? (uint16_t)(185 << 3) : 1); /* offset 185 (x8), or offset 0 with M set */
        rest[4] = 0xab;                                    /* identification */
        size_t u = udp_hdr(rest + 8, 4000, 53, 8, 'f');
        len = ipv6(p, "2001:db8:1::5", "2001:db8:2::7", NH_FRAGMENT, rest, 8 + u);
        CHECK(inner_parse(p, len, &info) == 0 && info.fragment == 1 && info.proto == INNER_PROTO_UDP);
        CHECK(info.ports_known == !later);
        if (!later) CHECK(info.sport == 4000 && info.l4_offset == IPV6_HDR + 8);
        CHECK(inner_selector_match(&port53, &info, 0) == !later);
        CHECK(inner_selector_match(&opaque, &info, 0) == later);
        CHECK(inner_clamp_mss(p, &info, 500) == 0);
    }
    /* a fragment header cut short */
    len = ipv6(p, "2001:db8:1::5", "2001:db8:2::7", NH_FRAGMENT, rest, 4);
    CHECK(inner_parse(p, len, &info) == 0 && !info.ports_known);
    /* a jumbogram marker is refused, a hop-by-hop header with payload is walked */
    len = ipv6(p, "2001:db8:1::5", "2001:db8:2::7", NH_HOP_BY_HOP, NULL, 0);
    CHECK(inner_parse(p, len, &info) == -1);
    len = ipv6_ext_chain(p, 2);
    p[6] = NH_HOP_BY_HOP;
    CHECK(inner_parse(p, len, &info) == 0 && info.ports_known && info.dport == 53);
}

static void test_inner_parse_ipv4_and_lies(void)
{
    static uint8_t p[PKT_MAX], big[UINT16_MAX + 100];
    inner_info_t info;
    CHECK(inner_parse(NULL, 20, &info) == -1 && inner_parse(p, 0, &info) == -1);
    size_t n = udp_packet(p, "10.1.0.5", "10.2.0.7", IPV4_DF, 10, 'v');
    CHECK(inner_parse(p, n, &info) == 0 && info.family == 4 && info.df && !info.fragment && info.length == n);
    CHECK(info.proto == INNER_PROTO_UDP && info.sport == 4000 && info.dport == 53 && info.l4_offset == IPV4_HDR);
    /* the buffer may be longer than the packet, never shorter */
    CHECK(inner_parse(p, n + 100, &info) == 0 && info.length == n);
    CHECK(inner_parse(p, n - 1, &info) == -1);
    /* options: 8 bytes of NOPs, the transport header behind them */
    memmove(p + IPV4_HDR + 8, p + IPV4_HDR, n - IPV4_HDR);
    memset(p + IPV4_HDR, 1, 8);
    p[0] = 0x47;
    wr16(p + 2, (uint16_t)(n + 8));
    CHECK(inner_parse(p, n + 8, &info) == 0 && info.l4_offset == IPV4_HDR + 8 && info.sport == 4000);
    p[0] = 0x4f; /* IHL 60: longer than the whole packet */
    CHECK(inner_parse(p, n + 8, &info) == -1);
    /* fragments: the first one (MF) has ports, a later one has none */
    n = udp_packet(p, "10.1.0.5", "10.2.0.7", IPV4_MF, 10, 'v');
    CHECK(inner_parse(p, n, &info) == 0 && info.fragment && info.ports_known && !info.df);
    n = udp_packet(p, "10.1.0.5", "10.2.0.7", 100, 10, 'v');
    CHECK(inner_parse(p, n, &info) == 0 && info.fragment && !info.ports_known && info.proto == INNER_PROTO_UDP);
    /* a transport header cut by the IP length: no ports */
    n = udp_packet(p, "10.1.0.5", "10.2.0.7", 0, 10, 'v');
    wr16(p + 2, IPV4_HDR + 3);
    CHECK(inner_parse(p, n, &info) == 0 && !info.ports_known && info.length == IPV4_HDR + 3);
    wr16(p + 2, IPV4_HDR);
    CHECK(inner_parse(p, n, &info) == 0 && !info.ports_known);
    /* ICMP: type << 8 | code in both ports; one byte of ICMP is not enough */
    uint8_t icmp[8] = {8, 0, 0, 0, 0, 1, 0, 1};
    n = ipv4(p, "10.1.0.5", "10.2.0.7", INNER_PROTO_ICMP, 0, icmp, sizeof(icmp));
    CHECK(inner_parse(p, n, &info) == 0 && info.ports_known && info.sport == 0x0800 && info.dport == 0x0800);
    wr16(p + 2, IPV4_HDR + 1);
    CHECK(inner_parse(p, n, &info) == 0 && !info.ports_known);
    icmp[0] = 128;
    n = ipv6(p, "2001:db8:1::5", "2001:db8:2::7", INNER_PROTO_ICMPV6, icmp, sizeof(icmp));
    CHECK(inner_parse(p, n, &info) == 0 && info.sport == 0x8000 && info.dport == 0x8000);
    /* a buffer beyond 64 KiB is read as at most 64 KiB */
    n = udp_packet(big, "10.1.0.5", "10.2.0.7", 0, 10, 'v');
    CHECK(inner_parse(big, sizeof(big), &info) == 0 && info.length == n);
    wr16(big + 2, UINT16_MAX);
    CHECK(inner_parse(big, sizeof(big), &info) == 0 && info.length == UINT16_MAX);
    big[0] = 0x60;
    wr16(big + 4, UINT16_MAX); /* 40 + 65535 > 65535: cannot be in any buffer we read */
    CHECK(inner_parse(big, sizeof(big), &info) == -1);
    p[0] = 0x55;
    CHECK(inner_parse(p, n, &info) == -1);
}

/* ---- selectors --------------------------------------------------------------------------------------- */

static void test_selector_match(void)
{
    static uint8_t p[PKT_MAX];
    inner_info_t info, frag, icmp_info;
    CHECK(inner_parse(p, udp_packet(p, "10.1.0.5", "10.2.0.7", 0, 4, 'w'), &info) == 0);
    CHECK(inner_parse(p, udp_packet(p, "10.1.0.5", "10.2.0.7", 8, 4, 'w'), &frag) == 0 && !frag.ports_known);
    inner_selector_t s = sel("10.1.0.0", "10.1.0.255", 0, ANY_PORT);
    CHECK(inner_selector_match(&s, &info, 1) && !inner_selector_match(&s, &info, 0));
    CHECK(inner_selector_match(&s, &frag, 1)); /* "any port" holds ports unknown too */
    s = sel("10.1.0.0", "10.1.0.255", INNER_PROTO_UDP, 4000, 4000);
    CHECK(inner_selector_match(&s, &info, 1) && !inner_selector_match(&s, &frag, 1));
    s.proto = INNER_PROTO_TCP;
    CHECK(!inner_selector_match(&s, &info, 1));
    s = sel("10.1.0.0", "10.1.0.255", 0, 4001, UINT16_MAX);
    CHECK(!inner_selector_match(&s, &info, 1));
    s = sel("10.1.0.0", "10.1.0.255", 0, 0, 3999);
    CHECK(!inner_selector_match(&s, &info, 1));
    s = sel("10.2.0.7", "10.2.0.7", 0, 53, 53);
    CHECK(inner_selector_match(&s, &info, 0) && !inner_selector_match(&s, &info, 1));
    s = sel("10.2.0.7", "10.2.0.7", 0, 100, 50); /* an empty range (not OPAQUE): nothing */
    CHECK(!inner_selector_match(&s, &info, 0));
    /* OPAQUE (65535..0): exactly the packets whose ports cannot be known */
    s = sel("10.2.0.0", "10.2.0.255", 0, OPAQUE_PORT);
    CHECK(!inner_selector_match(&s, &info, 0) && inner_selector_match(&s, &frag, 0));
    /* families never mix, however wide the range */
    s = sel("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, ANY_PORT);
    CHECK(!inner_selector_match(&s, &info, 0));

    /* ranges at the address extremes; the comparison is in network byte order */
    CHECK(inner_parse(p, udp_packet(p, "0.0.0.0", "255.255.255.255", 0, 4, 'x'), &info) == 0);
    s = sel("0.0.0.0", "255.255.255.255", 0, ANY_PORT);
    CHECK(inner_selector_match(&s, &info, 1) && inner_selector_match(&s, &info, 0));
    s = sel("0.0.0.0", "0.0.0.0", 0, ANY_PORT);
    CHECK(inner_selector_match(&s, &info, 1) && !inner_selector_match(&s, &info, 0));
    s = sel("255.255.255.255", "255.255.255.255", 0, ANY_PORT);
    CHECK(!inner_selector_match(&s, &info, 1) && inner_selector_match(&s, &info, 0));
    s = sel("0.0.0.1", "255.255.255.254", 0, ANY_PORT);
    CHECK(!inner_selector_match(&s, &info, 1) && !inner_selector_match(&s, &info, 0));
    CHECK(inner_parse(p, udp_packet(p, "10.1.1.0", "10.0.255.255", 0, 4, 'x'), &info) == 0);
    s = sel("10.1.0.0", "10.1.0.255", 0, ANY_PORT); /* host-order comparison would get these wrong */
    CHECK(!inner_selector_match(&s, &info, 1) && !inner_selector_match(&s, &info, 0));
    s = sel("10.0.255.255", "10.1.1.0", 0, ANY_PORT);
    CHECK(inner_selector_match(&s, &info, 1) && inner_selector_match(&s, &info, 0));
    CHECK(inner_parse(p, udp_packet(p, "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, 4, 'x'), &info) == 0);
    s = sel("::", "::", 0, ANY_PORT);
    CHECK(inner_selector_match(&s, &info, 1) && !inner_selector_match(&s, &info, 0));
    s = sel("::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 0, ANY_PORT);
    CHECK(!inner_selector_match(&s, &info, 1) && !inner_selector_match(&s, &info, 0));
    s = sel("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, ANY_PORT);
    CHECK(inner_selector_match(&s, &info, 0));
    CHECK(inner_parse(p, udp_packet(p, "2001:db8::1:0", "2001:db8::ffff", 0, 4, 'x'), &info) == 0);
    s = sel("2001:db8::", "2001:db8::ffff", 0, ANY_PORT);
    CHECK(!inner_selector_match(&s, &info, 1) && inner_selector_match(&s, &info, 0));

    /* ICMP type/code as the port (RFC 4301 4.4.1.1), the same on both sides */
    uint8_t icmp[8] = {3, 4, 0, 0, 0, 0, 5, 0x78};
    CHECK(inner_parse(p, ipv4(p, "10.1.0.5", "10.2.0.7", INNER_PROTO_ICMP, 0, icmp, 8), &icmp_info) == 0);
    s = sel("10.2.0.0", "10.2.0.255", INNER_PROTO_ICMP, 0x0300, 0x03ff); /* destination unreachable, any code */
    CHECK(inner_selector_match(&s, &icmp_info, 0));
    s = sel("10.1.0.0", "10.1.0.255", INNER_PROTO_ICMP, 0x0304, 0x0304);
    CHECK(inner_selector_match(&s, &icmp_info, 1));
    s = sel("10.1.0.0", "10.1.0.255", INNER_PROTO_ICMP, 0x0800, 0x08ff); /* echo request only */
    CHECK(!inner_selector_match(&s, &icmp_info, 1));

    /* a policy needs both sides */
    inner_selector_t src[2] = {sel("10.9.0.0", "10.9.0.255", 0, ANY_PORT), sel("10.1.0.0", "10.1.0.255", 0, ANY_PORT)};
    inner_selector_t dst[2] = {sel("10.8.0.0", "10.8.0.255", 0, ANY_PORT), sel("10.2.0.0", "10.2.0.255", 0, ANY_PORT)};
    CHECK(inner_policy_match(src, 2, dst, 2, &icmp_info) == 1);
    CHECK(inner_policy_match(src, 1, dst, 2, &icmp_info) == 0 && inner_policy_match(src, 2, dst, 1, &icmp_info) == 0);
    CHECK(inner_policy_match(src, 0, dst, 2, &icmp_info) == 0 && inner_policy_match(src, 2, dst, 0, &icmp_info) == 0);
}

/* ---- MSS clamp and too-big on their own ------------------------------------------------------------ */

static void test_clamp_and_too_big_edges(void)
{
    static uint8_t p[PKT_MAX], q[PKT_MAX], out[PKT_MAX];
    inner_info_t info;
    size_t at;
    size_t n = tcp_syn(p, "10.1.0.5", "10.2.0.7", 1460, 0, TCP_SYN, &at);
    CHECK(inner_parse(p, n, &info) == 0);
    memcpy(q, p, n);
    CHECK(inner_clamp_mss(q, &info, 0) == 0 && memcmp(p, q, n) == 0); /* 0 = off */
    CHECK(inner_clamp_mss(q, &info, 1460) == 0 && memcmp(p, q, n) == 0);
    CHECK(inner_clamp_mss(q, &info, 1459) == 1);
    check_clamped(q, n, p, n, at, 1459);
    CHECK(inner_clamp_mss(q, &info, 1459) == 0); /* idempotent */
    /* broken option lists: stop, change nothing */
    const size_t opt = IPV4_HDR + TCP_HDR;
    const uint8_t broken[][4] = {{2, 0, 5, 0xb4}, {2, 1, 5, 0xb4}, {2, 3, 5, 0xb4}, {8, 40, 0, 0}, {0, 2, 4, 5}};
    for (size_t b = 0; b < sizeof(broken) / sizeof(broken[0]); b++) {
        memcpy(q, p, n);
        memcpy(q + opt, broken[b], 4);
        CHECK(inner_parse(q, n, &info) == 0);
        memcpy(out, q, n);
        CHECK(inner_clamp_mss(q, &info, 500) == 0 && memcmp(q, out, n) == 0);
    }
    /* a data offset below 5 words, and one past the packet */
    for (int doff = 0; doff < 2; doff++) {
        memcpy(q, p, n);
        q[IPV4_HDR + 12] = doff ? 0xf0 : 0x40;
        CHECK(inner_parse(q, n, &info) == 0 && inner_clamp_mss(q, &info, 500) == 0);
    }
    /* the IP length ends inside the TCP header */
    memcpy(q, p, n);
    wr16(q + 2, IPV4_HDR + TCP_HDR - 1);
    CHECK(inner_parse(q, n, &info) == 0 && inner_clamp_mss(q, &info, 500) == 0);

    /* too big: the output must fit, IPv4 needs DF, ICMP errors get nothing, ICMP queries do */
    n = udp_packet(p, "10.1.0.5", "10.2.0.7", IPV4_DF, 100, 'q');
    CHECK(inner_parse(p, n, &info) == 0);
    size_t want = IPV4_HDR + ICMP_HDR + IPV4_HDR + 8;
    CHECK(inner_too_big(p, &info, 68, NULL, out, want - 1) == 0);
    CHECK(inner_too_big(p, &info, 68, NULL, out, want) == want);
    check_icmp4(out, want, p, "10.2.0.7", 68);
    n = udp_packet(p, "10.1.0.5", "10.2.0.7", 0, 100, 'q');
    CHECK(inner_parse(p, n, &info) == 0 && inner_too_big(p, &info, 68, NULL, out, sizeof(out)) == 0);
    uint8_t icmp[16] = {8, 0};
    n = ipv4(p, "10.1.0.5", "10.2.0.7", INNER_PROTO_ICMP, IPV4_DF, icmp, sizeof(icmp));
    CHECK(inner_parse(p, n, &info) == 0 && inner_too_big(p, &info, 68, NULL, out, sizeof(out)) > 0);
    icmp[0] = 11; /* time exceeded */
    n = ipv4(p, "10.1.0.5", "10.2.0.7", INNER_PROTO_ICMP, IPV4_DF, icmp, sizeof(icmp));
    CHECK(inner_parse(p, n, &info) == 0 && inner_too_big(p, &info, 68, NULL, out, sizeof(out)) == 0);
    /* a short IPv4 packet quotes only itself */
    icmp[0] = 8;
    n = ipv4(p, "10.1.0.5", "10.2.0.7", INNER_PROTO_ICMP, IPV4_DF, icmp, 2);
    CHECK(inner_parse(p, n, &info) == 0 && info.ports_known);
    CHECK(inner_too_big(p, &info, 68, NULL, out, sizeof(out)) == IPV4_HDR + ICMP_HDR + n);
    icmp[0] = 1; /* ICMPv6 destination unreachable: an error */
    n = ipv6(p, "2001:db8:1::5", "2001:db8:2::7", INNER_PROTO_ICMPV6, icmp, sizeof(icmp));
    CHECK(inner_parse(p, n, &info) == 0 && inner_too_big(p, &info, 1280, NULL, out, sizeof(out)) == 0);
    icmp[0] = 128; /* echo request: a query */
    n = ipv6(p, "2001:db8:1::5", "2001:db8:2::7", INNER_PROTO_ICMPV6, icmp, sizeof(icmp));
    CHECK(inner_parse(p, n, &info) == 0);
    CHECK(inner_too_big(p, &info, 1280, NULL, out, IPV6_HDR + ICMP_HDR + n - 1) == 0);
    CHECK(inner_too_big(p, &info, 1280, NULL, out, IPV6_HDR + ICMP_HDR + n) == IPV6_HDR + ICMP_HDR + n);
    CHECK(ref_l4_ok(6, out + 8, out + 24, INNER_PROTO_ICMPV6, out + IPV6_HDR, ICMP_HDR + n));
}

/* ---- sending as frames from an XSK (AF_XDP) -------------------------------------------------------- */

#define XSK_FRAMES 8           /* the fake XSK's UMEM */
#define XSK_FRAME 4096
#define XSK_NATT_PORT 4500
#define XSK_MTU 1500

/* A fake of the binding's TX side over a plain area: hands out frames, records what is sent. */
typedef struct {
    uint8_t area[XSK_FRAMES * XSK_FRAME];
    uint64_t free[XSK_FRAMES];
    size_t n_free;
    uint64_t sent_addrs[XSK_FRAMES];
    uint32_t sent_lens[XSK_FRAMES];
    size_t n_sent;
    size_t ring_room;          /* frames the "TX ring" still takes */
    uint64_t bogus_addr;       /* nonzero: tx_frames hands out this address (outside the area) */
} fake_xsk_t;

static size_t fake_tx_frames(void *ctx, uint64_t *addrs, size_t n)
{
    fake_xsk_t *k = ctx;
    size_t got = 0;
    if (k->bogus_addr) {
        addrs[0] = k->bogus_addr;
        return 1;
    }
    while (got < n && k->n_free) addrs[got++] = k->free[--k->n_free];
    return got;
}

static size_t fake_send(void *ctx, const uint64_t *addrs, const uint32_t *lens, size_t n)
{
    fake_xsk_t *k = ctx;
    size_t taken = n < k->ring_room ? n : k->ring_room;
    for (size_t i = 0; i < taken; i++) {
        k->sent_addrs[k->n_sent] = addrs[i];
        k->sent_lens[k->n_sent++] = lens[i];
    }
    k->ring_room -= taken;
    for (size_t i = taken; i < n; i++) k->free[k->n_free++] = addrs[i]; /* as esp_xsk_send does */
    return taken;
}

static size_t fake_recv(void *ctx, uint64_t *addrs, uint32_t *lens, size_t max)
{
    (void)ctx, (void)addrs, (void)lens, (void)max;
    return 0;
}

static void fake_release(void *ctx, const uint64_t *addrs, size_t n) { (void)ctx, (void)addrs, (void)n; }

static const uint8_t PEER_MAC[6] = {0x02, 0, 0, 0, 0, 0x02}, OUR_MAC[6] = {0x02, 0, 0, 0, 0, 0x01};

static void xsk_rig(rig_t *r, fake_xsk_t *k, esp_fwd_xsk_t *x, int l2_ok, uint16_t l2_mtu)
{
    rig_open(r);
    memset(k, 0, sizeof(*k));
    for (size_t i = 0; i < XSK_FRAMES; i++) k->free[k->n_free++] = i * XSK_FRAME;
    k->ring_room = XSK_FRAMES;
    *x = (esp_fwd_xsk_t){.ctx = k, .area = k->area, .area_len = sizeof(k->area), .recv = fake_recv,
                         .release = fake_release, .fd = -1, .natt_port = XSK_NATT_PORT, .tx_frames = fake_tx_frames,
                         .send = fake_send, .frame_size = XSK_FRAME};
    r->io.xsk = x;
    esp_fwd_tunnel_t t = tunnel_of(r);
    t.l2_ok = (uint8_t)l2_ok;
    memcpy(t.l2_dst, PEER_MAC, 6);
    memcpy(t.l2_src, OUR_MAC, 6);
    t.l2_mtu = l2_mtu;
    addr("127.0.0.2", t.local_addr);
    CHECK(install(r, &t, 1, NULL, NULL) == 0);
}

static void test_with_a_next_hop_esp_leaves_as_a_frame_from_the_umem(void)
{
    rig_t r;
    fake_xsk_t k;
    esp_fwd_xsk_t x;
    xsk_rig(&r, &k, &x, 1, XSK_MTU);
    static uint8_t p[PKT_MAX], plain[PKT_MAX];
    for (int i = 0; i < 3; i++) send_inner(&r, p, udp_packet(p, "10.1.0.5", "10.2.0.7", 0, 100 + i, (uint8_t)i));
    pump(&r);
    CHECK(k.n_sent == 3 && wire(&r, plain, NULL, NULL, NULL) == -1); /* nothing on the socket */
    for (size_t i = 0; i < k.n_sent; i++) {
        esp_frame_t f;
        const uint8_t *frame = k.area + k.sent_addrs[i];
        esp_frame_config_t to_peer = {r.peer_port}; /* parsed as the peer would: ESP in UDP to its port */
        CHECK(esp_frame_parse(frame, k.sent_lens[i], &to_peer, &f) == 0 && f.verdict == FRAME_ESP_UDP);
        CHECK(memcmp(frame, PEER_MAC, 6) == 0 && memcmp(frame + 6, OUR_MAC, 6) == 0);
        CHECK(f.sport == XSK_NATT_PORT && f.dport == r.peer_port && f.spi == SPI_OUT);
        uint8_t src[16], dst[16];
        addr("127.0.0.2", src);
        addr("127.0.0.1", dst);
        CHECK(memcmp(f.src, src, 4) == 0 && memcmp(f.dst, dst, 4) == 0);
        size_t n = udp_packet(p, "10.1.0.5", "10.2.0.7", 0, 100 + i, (uint8_t)i), len = 0;
        int nh = 0;
        CHECK(esp_decap(r.peer_in, frame + f.esp_offset, f.esp_len, plain, PKT_MAX, &len, &nh) == ESP_OK);
        CHECK(len == n && memcmp(plain, p, n) == 0); /* in order: sequence numbers 1, 2, 3 */
    }
    CHECK(slot_get(&r, SLOT, FWD_PACKETS_OUT) == 3 && all_drops(&r, SLOT) == 0);
    rig_close(&r);
}

/* Without a resolved next hop, without a free frame, beyond the device MTU, or with a frame outside
 * the area: the socket sends, and nothing is written to the UMEM. */
static void test_without_a_usable_frame_the_socket_sends(void)
{
    static uint8_t p[PKT_MAX], plain[PKT_MAX], zeros[XSK_FRAMES * XSK_FRAME];
    for (int c = 0; c < 4; c++) {
        rig_t r;
        fake_xsk_t k;
        esp_fwd_xsk_t x;
        xsk_rig(&r, &k, &x, c != 0, c == 2 ? 200 : XSK_MTU);
        if (c == 1) k.n_free = 0;
        if (c == 3) k.bogus_addr = sizeof(k.area) - XSK_FRAME / 2; /* the frame would run past the area */
        size_t n = udp_packet(p, "10.1.0.5", "10.2.0.7", 0, 300, 'x');
        send_inner(&r, p, n);
        pump(&r);
        CHECK(k.n_sent == 0 && memcmp(k.area, zeros, sizeof(k.area)) == 0);
        int nh = 0;
        CHECK(wire(&r, plain, &nh, NULL, NULL) == (ssize_t)n && memcmp(plain, p, n) == 0);
        CHECK(all_drops(&r, SLOT) == 0);
        rig_close(&r);
    }
}

static void test_frames_the_tx_ring_refuses_are_counted(void)
{
    rig_t r;
    fake_xsk_t k;
    esp_fwd_xsk_t x;
    xsk_rig(&r, &k, &x, 1, XSK_MTU);
    k.ring_room = 2;
    static uint8_t p[PKT_MAX];
    for (int i = 0; i < 5; i++) send_inner(&r, p, udp_packet(p, "10.1.0.5", "10.2.0.7", 0, 64, 'y'));
    pump(&r);
    /* 5 packets, 2 taken; of the rest, the frames that were free went to the ring and back */
    CHECK(k.n_sent == 2 && global_drop(&r, FWD_DROP_ERROR) == 3);
    rig_close(&r);
}

int main(void)
{
    double t0 = now_s();
    test_outbound_is_encrypted_and_decapsulates_to_the_same_bytes();
    test_no_policy_is_dropped_never_sent_in_clear();
    test_malformed_inner_packets_are_counted();
    test_too_big_with_df_is_answered_with_icmp();
    test_too_big_without_df_is_sent();
    test_ipv6_too_big_gets_packet_too_big();
    test_mss_clamp_both_ways_with_valid_checksums();
    test_inbound_valid_reaches_the_tun();
    test_inbound_drops_by_reason();
    test_authentic_esp_from_a_new_source_is_reported_once();
    test_set_tables_refuses_bad_input_and_keeps_the_old();
    test_inner_parse_ipv6_chains_and_fragments();
    test_inner_parse_ipv4_and_lies();
    test_selector_match();
    test_clamp_and_too_big_edges();
    test_with_a_next_hop_esp_leaves_as_a_frame_from_the_umem();
    test_without_a_usable_frame_the_socket_sends();
    test_frames_the_tx_ring_refuses_are_counted();
    test_table_swaps_under_a_running_worker();
    if (failures) {
        fprintf(stderr, "test_esp_fwd: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_esp_fwd: all tests passed (%.1f s)\n", now_s() - t0);
    return 0;
}
