/* The load and the two receivers of benchmarks/xdp_compare.py, in C, so that neither receiver pays for a
 * Python loop and the comparison is between the kernel paths. Built by that script at run time (see its
 * build_bench) with the project's own C: esp_core.c, esp_frame.c, xsk/esp_xsk.c.
 *
 *   xdp_rx_bench gen IFNAME   --src IP --dst IP --src-mac MAC --dst-mac MAC --spi HEX --key HEX --size N --seconds S
 *   xdp_rx_bench rx-sockets   --spi HEX --key HEX --seconds S
 *   xdp_rx_bench rx-xsk IFNAME --mode native|skb --prog OBJ --spi HEX --key HEX --seconds S
 *
 * gen: a send-only XSK (copy mode) on IFNAME; every frame is encrypted when it is sent (AES-128-GCM, tunnel
 * mode, inner IPv4 of --size bytes, raw IP protocol 50), so sequence numbers only go up and the receiver
 * keeps its anti-replay window on. rx-sockets: a raw IPv4 ESP socket read with recvmmsg. rx-xsk: the
 * project's XDP program redirects the SPI to one XSK on queue 0 (copy mode), frames are classified and
 * decrypted straight from the UMEM. Both receivers read batches of BATCH and decrypt them with
 * esp_decap_batch into a separate buffer; each prints "ready" once set up, starts its clock at the first
 * packet and prints one JSON line at the end. --key is the KEYMAT: 16 key bytes then the 4-byte salt.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "esp_core.h"
#include "esp_frame.h"
#include "esp_xsk.h"

#define BATCH 64                /* packets per recvmmsg / esp_xsk_recv and per decap call, both receivers */
#define TX_BATCH 64             /* frames encrypted and submitted per generator step */
#define UMEM_FRAMES 4096        /* per XSK: half for the fill ring, half for sending (esp_xsk.h) */
#define SLOT 2048               /* socket receive slot: any packet of a 1500-byte MTU fits */
#define OUT_CAP (BATCH * SLOT)  /* decrypted packets of one batch, packed */
#define MAX_SECONDS 30.0        /* every run is bounded */
#define FIRST_PACKET_WAIT 10.0  /* a receiver gives up if no packet comes at all */
#define POLL_MS 100             /* idle receivers wake this often to look at the clock */
#define SOCKET_BUFFER (32 << 20)
#define KEY_LEN 16              /* AES-128 */
#define ICV_LEN 16              /* aes128gcm16 */
#define MIN_INNER 28            /* IPv4 + UDP header */
#define MAX_INNER 1400          /* + ESP (<= 37 B) + outer IPv4 stays within a 1500-byte MTU */
#define MAX_CPUS 64             /* /proc/stat lines read */
#define IPV4_MIN_HDR 20

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double tv_seconds(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec / 1e6; }

static double cpu_user(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return tv_seconds(ru.ru_utime);
}

static double cpu_self(void) /* user + system */
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return tv_seconds(ru.ru_utime) + tv_seconds(ru.ru_stime);
}

/* Busy seconds of each CPU so far (/proc/stat: user + nice + system + irq + softirq) and its steal (time the
 * hypervisor ran something else: neither busy nor idle for us); returns the count. */
static int cpu_busy(double *busy, double *steal)
{
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL) return 0;
    char line[512];
    int n = 0;
    double tick = (double)sysconf(_SC_CLK_TCK);
    while (n < MAX_CPUS && fgets(line, sizeof(line), f) != NULL) {
        unsigned long long user, nice, sys, idle, iowait, irq, softirq, st;
        int cpu;
        if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &user, &nice, &sys, &idle, &iowait,
                   &irq, &softirq, &st) == 9 && cpu == n) {
            steal[n] = (double)st / tick;
            busy[n++] = (double)(user + nice + sys + irq + softirq) / tick;
        }
    }
    fclose(f);
    return n;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "xdp_rx_bench: %s: %s\n", what, strerror(err < 0 ? -err : err));
    exit(1);
}

static void usage(const char *why)
{
    fprintf(stderr, "xdp_rx_bench: %s\nusage: xdp_rx_bench gen|rx-sockets|rx-xsk [IFNAME] --spi HEX --key HEX "
            "--seconds S [--src IP --dst IP --src-mac MAC --dst-mac MAC --size N] [--mode native|skb --prog OBJ]\n",
            why);
    exit(2);
}

static int parse_hex(const char *s, uint8_t *out, size_t len)
{
    if (strlen(s) != 2 * len) return -1;
    for (size_t i = 0; i < len; i++)
        if (sscanf(s + 2 * i, "%2hhx", &out[i]) != 1) return -1;
    return 0;
}

static int parse_mac(const char *s, uint8_t *mac)
{
    return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) == 6
               ? 0 : -1;
}

typedef struct {
    const char *mode, *ifname, *xdp_mode, *prog;
    uint32_t spi;
    uint8_t keymat[KEY_LEN + ESP_SALT_LEN];
    double seconds;
    size_t size;
    esp_frame_tx_t tx;          /* gen: outer headers */
} args_t;

static void parse_args(int argc, char **argv, args_t *a)
{
    static const struct option opts[] = {
        {"spi", 1, 0, 'p'}, {"key", 1, 0, 'k'}, {"seconds", 1, 0, 't'}, {"size", 1, 0, 'n'},
        {"src", 1, 0, 's'}, {"dst", 1, 0, 'd'}, {"src-mac", 1, 0, 'S'}, {"dst-mac", 1, 0, 'D'},
        {"mode", 1, 0, 'm'}, {"prog", 1, 0, 'o'}, {0, 0, 0, 0},
    };
    int have_key = 0, have_spi = 0, c;
    unsigned have_tx = 0; /* bits: --src, --dst, --src-mac, --dst-mac */
    memset(a, 0, sizeof(*a));
    a->tx.family = 4;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'p': a->spi = (uint32_t)strtoul(optarg, &end, 16); have_spi = *end == 0 && a->spi != 0; break;
        case 'k': have_key = parse_hex(optarg, a->keymat, sizeof(a->keymat)) == 0; break;
        case 't': a->seconds = strtod(optarg, NULL); break;
        case 'n': a->size = strtoul(optarg, NULL, 10); break;
        case 's': if (inet_pton(AF_INET, optarg, a->tx.src) != 1) usage("bad --src"); have_tx |= 1; break;
        case 'd': if (inet_pton(AF_INET, optarg, a->tx.dst) != 1) usage("bad --dst"); have_tx |= 2; break;
        case 'S': if (parse_mac(optarg, a->tx.src_mac)) usage("bad --src-mac"); have_tx |= 4; break;
        case 'D': if (parse_mac(optarg, a->tx.dst_mac)) usage("bad --dst-mac"); have_tx |= 8; break;
        case 'm': a->xdp_mode = optarg; break;
        case 'o': a->prog = optarg; break;
        default: usage("unknown option");
        }
    }
    if (optind >= argc) usage("no mode");
    a->mode = argv[optind++];
    if (optind < argc) a->ifname = argv[optind++];
    if (!have_spi || !have_key) usage("--spi (hex, not 0) and --key (40 hex digits) are needed");
    if (!(a->seconds > 0 && a->seconds <= MAX_SECONDS)) usage("--seconds must be in (0, 30]");
    if (strcmp(a->mode, "gen") == 0 && have_tx != 0xf) usage("gen needs --src, --dst, --src-mac and --dst-mac");
}

static esp_sa_t *make_sa(const args_t *a, int outbound)
{
    esp_sa_config_t cfg = {.spi = a->spi, .alg = ESP_ALG_AES_GCM, .key = a->keymat, .key_len = KEY_LEN,
                           .salt = a->keymat + KEY_LEN, .icv_len = ICV_LEN, .outbound = outbound, .tunnel = 1,
                           .replay_window = outbound ? 0 : ESP_DEFAULT_REPLAY_WINDOW};
    int st = 0;
    esp_sa_t *sa = esp_sa_new(&cfg, &st);
    if (sa == NULL) {
        fprintf(stderr, "xdp_rx_bench: esp_sa_new: status %d\n", st);
        exit(1);
    }
    return sa;
}

static uint8_t *umem(size_t *len)
{
    *len = (size_t)UMEM_FRAMES * ESP_XSK_FRAME_SIZE;
    void *p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) die("mmap", errno);
    return p;
}

/* ---- the load ------------------------------------------------------------------------------------- */

static int run_gen(const args_t *a)
{
    if (a->ifname == NULL) usage("gen needs IFNAME");
    if (a->size < MIN_INNER || a->size > MAX_INNER) usage("--size must be in [28, 1400]");
    esp_sa_t *sa = make_sa(a, 1);
    /* TX_BATCH inner IPv4/UDP packets; only the IPv4 header matters to the receiver (tunnel mode) */
    static uint8_t inner[TX_BATCH * MAX_INNER];
    uint32_t offs[TX_BATCH], lens[TX_BATCH];
    for (uint32_t i = 0; i < TX_BATCH; i++) {
        uint8_t *p = inner + i * a->size;
        p[0] = 0x45;                                              /* IPv4, 20-byte header */
        p[2] = (uint8_t)(a->size >> 8), p[3] = (uint8_t)a->size;  /* total length: tunnel-mode decap checks it */
        p[8] = 64, p[9] = 17;                                     /* TTL, UDP */
        memcpy(p + 12, (uint8_t[]){10, 1, 0, 1}, 4);
        memcpy(p + 16, (uint8_t[]){10, 2, 0, 1}, 4);
        offs[i] = i * (uint32_t)a->size;
        lens[i] = (uint32_t)a->size;
    }
    size_t area_len;
    uint8_t *area = umem(&area_len);
    int err = 0;
    esp_xsk_t *xsk = esp_xsk_open(NULL, a->ifname, 0, area, area_len, 0, &err);
    if (xsk == NULL) die("esp_xsk_open", err);
    esp_frame_tx_t tx = a->tx;
    uint64_t addrs[TX_BATCH], sent = 0;
    uint32_t flens[TX_BATCH];
    uint8_t sts[TX_BATCH];
    int failed = ESP_OK;
    double start = now(), cpu0 = cpu_self(), user0 = cpu_user(), deadline = start + a->seconds, t, starved = 0;
    while ((t = now()) < deadline) {
        size_t n = esp_xsk_tx_frames(xsk, addrs, TX_BATCH);
        if (n == 0) {
            /* every frame is on the TX ring or not yet completed by the receiving side (copy mode frees a
             * frame when the receiver's kernel frees its skb): only a sendto moves the TX ring on */
            sendto(esp_xsk_fd(xsk), NULL, 0, MSG_DONTWAIT, NULL, 0);
            starved += now() - t;
            continue;
        }
        size_t ready = esp_frame_encap_batch(sa, &tx, inner, sizeof(inner), offs, lens, n, area, area_len, addrs,
                                             ESP_XSK_FRAME_SIZE, flens, sts, &tx.ip_id);
        if (ready != n) { /* cannot happen with one fixed size below the frame; stop rather than send gaps */
            for (size_t i = 0; i < n; i++) if (sts[i] != ESP_OK) failed = sts[i];
            break;
        }
        sent += esp_xsk_send(xsk, addrs, flens, n);
    }
    double wall = now() - start, cpu = cpu_self() - cpu0, user = cpu_user() - user0;
    esp_xsk_stats_t st;
    esp_xsk_stats(xsk, &st);
    printf("{\"mode\":\"gen\",\"sent\":%llu,\"seconds\":%.6f,\"cpu_seconds\":%.6f,\"user_seconds\":%.6f,"
           "\"starved_seconds\":%.6f,\"cpu\":%d,\"send_full\":%llu,\"tx_invalid_descs\":%llu,"
           "\"encap_failed_status\":%d}\n", (unsigned long long)sent, wall, cpu, user, starved, sched_getcpu(),
           (unsigned long long)st.send_full, (unsigned long long)st.tx_invalid_descs, failed);
    esp_xsk_close(xsk);
    esp_sa_free(sa);
    return failed == ESP_OK ? 0 : 1;
}

/* ---- receivers: the common part ------------------------------------------------------------------- */

typedef struct {
    esp_table_entry_t table[1];
    uint8_t out[OUT_CAP];
    uint32_t o_offs[BATCH], o_lens[BATCH];
    uint8_t nhs[BATCH], sts[BATCH];
    uint64_t table_drops[ESP_STATUS_COUNT];
    uint64_t ok, status[ESP_STATUS_COUNT];
    int started;
    double start, deadline, cpu0, user0, busy0[MAX_CPUS], steal0[MAX_CPUS];
    int n_cpus;
} rx_t;

static void rx_init(rx_t *r, const args_t *a)
{
    memset(r, 0, sizeof(*r));
    r->table[0].spi = a->spi;
    r->table[0].sa = make_sa(a, 0);
    r->deadline = now() + FIRST_PACKET_WAIT; /* until the first packet */
    printf("ready\n");
    fflush(stdout);
}

/* The clock starts at the first packet. */
static void rx_first(rx_t *r, const args_t *a)
{
    if (r->started) return;
    r->started = 1;
    r->start = now();
    r->deadline = r->start + a->seconds;
    r->cpu0 = cpu_self();
    r->user0 = cpu_user();
    r->n_cpus = cpu_busy(r->busy0, r->steal0);
}

static void rx_decap(rx_t *r, const uint8_t *in, size_t in_size, const uint32_t *offs, const uint32_t *lens, size_t n)
{
    r->ok += esp_decap_batch(r->table, 1, 0, in, in_size, offs, lens, n, r->out, sizeof(r->out), r->o_offs,
                             r->o_lens, r->nhs, r->sts, r->table_drops);
    for (size_t i = 0; i < n; i++) r->status[r->sts[i]]++;
}

/* The JSON line, without its closing brace: the caller adds its own counters. */
static void rx_report(rx_t *r, const char *path)
{
    double end = now(), cpu = cpu_self() - r->cpu0, user = cpu_user() - r->user0, busy[MAX_CPUS], steal[MAX_CPUS];
    int n = cpu_busy(busy, steal);
    double wall = r->started ? end - r->start : 0;
    uint64_t other = 0;
    for (int s = 1; s < ESP_STATUS_COUNT; s++) other += r->status[s];
    /* cpu_seconds counts the softirq work that ran while the process was current; user_seconds is its own */
    printf("{\"mode\":\"%s\",\"ok\":%llu,\"other\":%llu,\"seconds\":%.6f,\"cpu_seconds\":%.6f,"
           "\"user_seconds\":%.6f,\"cpu\":%d,\"statuses\":{", path, (unsigned long long)r->ok,
           (unsigned long long)other, wall, r->started ? cpu : 0.0, r->started ? user : 0.0, sched_getcpu());
    for (int s = 1, first = 1; s < ESP_STATUS_COUNT; s++)
        if (r->status[s]) printf("%s\"%d\":%llu", first ? "" : ",", s, (unsigned long long)r->status[s]), first = 0;
    printf("},\"busy\":["); /* per CPU, seconds over the run; empty when no packet came */
    for (int i = 0; r->started && i < n && i < r->n_cpus; i++) printf("%s%.4f", i ? "," : "", busy[i] - r->busy0[i]);
    printf("],\"steal\":[");
    for (int i = 0; r->started && i < n && i < r->n_cpus; i++) printf("%s%.4f", i ? "," : "", steal[i] - r->steal0[i]);
    printf("]");
}

/* ---- rx-sockets ----------------------------------------------------------------------------------- */

/* The kernel's drop count for the raw socket with this inode (/proc/net/raw, last column), or -1. */
static long long raw_drops(unsigned long inode)
{
    FILE *f = fopen("/proc/net/raw", "r");
    if (f == NULL) return -1;
    char line[512];
    long long drops = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long ino;
        long long d;
        /* sl local rem st tx:rx tr:tm retrnsmt uid timeout inode ref pointer drops */
        if (sscanf(line, "%*s %*s %*s %*s %*s %*s %*s %*s %*s %lu %*s %*s %lld", &ino, &d) == 2 && ino == inode)
            drops = d;
    }
    fclose(f);
    return drops;
}

static int run_rx_sockets(const args_t *a)
{
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ESP);
    if (fd < 0) die("socket", errno);
    int rcvbuf = SOCKET_BUFFER;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0) die("SO_RCVBUFFORCE", errno);
    struct timeval tv = {0, POLL_MS * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) die("SO_RCVTIMEO", errno);
    static uint8_t buf[BATCH * SLOT];
    static rx_t r;
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    uint32_t offs[BATCH], lens[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iov[i] = (struct iovec){buf + i * SLOT, SLOT};
        msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[i], .msg_iovlen = 1}};
    }
    rx_init(&r, a);
    while (now() < r.deadline) {
        /* blocks (at most POLL_MS) for the first datagram only, then takes what is queued */
        int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0) continue;
        rx_first(&r, a);
        for (int i = 0; i < n; i++) { /* a raw IPv4 socket delivers the IP header: skip it */
            size_t len = msgs[i].msg_len, ihl = (size_t)(buf[i * SLOT] & 0x0f) * 4;
            int bad = len > SLOT || ihl < IPV4_MIN_HDR || ihl > len;
            offs[i] = (uint32_t)(i * SLOT + (bad ? 0 : ihl));
            lens[i] = bad ? 0 : (uint32_t)(len - ihl); /* 0: counted MALFORMED by esp_decap_batch */
        }
        rx_decap(&r, buf, sizeof(buf), offs, lens, (size_t)n);
    }
    rx_report(&r, "rx-sockets");
    struct stat sb;
    printf(",\"kernel_drops\":%lld}\n", fstat(fd, &sb) == 0 ? raw_drops(sb.st_ino) : -1LL);
    close(fd);
    esp_sa_free(r.table[0].sa);
    return 0;
}

/* ---- rx-xsk ----------------------------------------------------------------------------------------- */

static int run_rx_xsk(const args_t *a)
{
    if (a->ifname == NULL || a->prog == NULL || a->xdp_mode == NULL) usage("rx-xsk needs IFNAME, --mode, --prog");
    int mode;
    if (strcmp(a->xdp_mode, "native") == 0) mode = ESP_XDP_NATIVE;
    else if (strcmp(a->xdp_mode, "skb") == 0) mode = ESP_XDP_SKB;
    else usage("--mode is native or skb");
    int err = 0;
    esp_xdp_t *xdp = esp_xdp_attach(a->prog, a->ifname, mode, 0, &err);
    if (xdp == NULL) die("esp_xdp_attach", err);
    if ((err = esp_xdp_add_spi(xdp, a->spi)) != 0) die("esp_xdp_add_spi", err);
    size_t area_len;
    uint8_t *area = umem(&area_len);
    esp_xsk_t *xsk = esp_xsk_open(xdp, a->ifname, 0, area, area_len, 0, &err);
    if (xsk == NULL) die("esp_xsk_open", err);
    static rx_t r;
    uint64_t addrs[BATCH], not_esp = 0;
    uint32_t lens[BATCH], esp_offs[BATCH], esp_lens[BATCH];
    uint8_t verdicts[BATCH], reasons[BATCH];
    esp_frame_config_t fcfg = {0}; /* no NAT-T port: the load is raw ESP */
    struct pollfd pfd = {esp_xsk_fd(xsk), POLLIN, 0};
    rx_init(&r, a);
    while (now() < r.deadline) {
        size_t n = esp_xsk_recv(xsk, addrs, lens, BATCH);
        if (n == 0) {
            poll(&pfd, 1, POLL_MS);
            continue;
        }
        rx_first(&r, a);
        esp_frame_parse_batch(area, area_len, addrs, lens, n, &fcfg, esp_offs, esp_lens, verdicts, reasons);
        size_t m = 0; /* the ESP frames, in order; the program redirects nothing else */
        for (size_t i = 0; i < n; i++) {
            if (esp_lens[i] == 0) { not_esp++; continue; }
            esp_offs[m] = esp_offs[i], esp_lens[m++] = esp_lens[i];
        }
        rx_decap(&r, area, area_len, esp_offs, esp_lens, m);
        esp_xsk_release(xsk, addrs, n);
    }
    esp_xsk_stats_t st;
    esp_xsk_stats(xsk, &st);
    rx_report(&r, "rx-xsk");
    printf(",\"xdp_mode\":\"%s\",\"frames\":%llu,\"not_esp\":%llu,\"rx_dropped\":%llu,\"rx_ring_full\":%llu,"
           "\"rx_fill_ring_empty\":%llu,\"rx_invalid_descs\":%llu}\n", a->xdp_mode, (unsigned long long)st.received,
           (unsigned long long)not_esp, (unsigned long long)st.rx_dropped, (unsigned long long)st.rx_ring_full,
           (unsigned long long)st.rx_fill_ring_empty, (unsigned long long)st.rx_invalid_descs);
    esp_xsk_close(xsk);
    esp_xdp_detach(xdp);
    esp_sa_free(r.table[0].sa);
    return 0;
}

int main(int argc, char **argv)
{
    args_t a;
    parse_args(argc, argv, &a);
    if (strcmp(a.mode, "gen") == 0) return run_gen(&a);
    if (strcmp(a.mode, "rx-sockets") == 0) return run_rx_sockets(&a);
    if (strcmp(a.mode, "rx-xsk") == 0) return run_rx_xsk(&a);
    usage("mode is gen, rx-sockets or rx-xsk");
    return 2;
}
