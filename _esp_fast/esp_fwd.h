/* The gateway's packet path in C: TUN <-> policy <-> ESP <-> UDP/raw sockets, with no Python per packet.
 *
 * An esp_fwd_t holds the tunnels (Child SAs) as an immutable snapshot that the control plane replaces
 * as a whole (esp_fwd_set_tables) and the workers read under a writer-preferring read lock, one batch
 * at a time. Each worker (esp_fwd_run, one thread each, the GIL released by the binding) owns one TUN
 * queue and one UDP/4500 socket (SO_REUSEPORT; esp_fwd_attach_steering sends every SPI to one
 * worker, IKE to socket 0) and optionally the raw ESP socket:
 *
 *   outbound: TUN read (batch; TSO super-packets split, esp_offload.c) -> parse -> policy (most specific
 *             first, flow cache) -> MTU check / ICMP too big -> MSS clamp -> esp_encap -> sendmmsg (UDP/4500
 *             or raw ESP), or esp_encap into an XSK frame behind Ethernet/IP/UDP headers -> TX ring
 *   inbound:  recvmmsg, or XSK frames parsed in the UMEM (esp_frame.c) -> esp_decap_batch where they lie
 *             -> outer source check (raw) -> inbound policy (RFC 4301
 *             5.2: the decrypted packet must lie inside the Child SA's selectors) -> MSS clamp -> TCP
 *             segments coalesced into GSO frames (offloading) -> TUN write
 *
 * Counters are per slot (the control plane gives one slot per connection, so a rekey's new Child SA
 * adds to the same counters) plus gateway-wide drops for packets no tunnel owns.
 */
#ifndef ESP_FWD_H
#define ESP_FWD_H

#include <stddef.h>
#include <stdint.h>

#include "esp_core.h"
#include "esp_inner.h"

#define FWD_BATCH 64            /* packets per system call batch */
#define FWD_MAX_INNER 9000      /* largest inner packet (and TUN MTU) the workers handle */
#define FWD_MAX_SLOTS 65536     /* counter slots (connections) */
#define FWD_MAX_WORKERS 256     /* worker indexes a tunnel can be bound to */
#define FWD_MAX_TUNNELS 262144  /* Child SAs in one table */
#define FWD_MAX_SELECTORS 16    /* traffic selectors per side of one Child SA */
#define FWD_ICMP_PER_SECOND 100 /* "too big" answers per worker and second (RFC 4443 2.4 f: rate-limit) */
#define FWD_FLOW_CACHE 1024     /* outbound flow cache entries per worker (power of two) */
#define FWD_MAX_MAPPINGS 64     /* peer address changes waiting for the control plane */

/* Why a packet was dropped: the order of ikev2lib.gateway.counters.DROP_REASONS. */
enum fwd_drop {
    FWD_DROP_ICV = 0,
    FWD_DROP_REPLAY,
    FWD_DROP_WINDOW,
    FWD_DROP_PADDING,
    FWD_DROP_MALFORMED,
    FWD_DROP_NO_SA,
    FWD_DROP_NO_POLICY,
    FWD_DROP_POLICY,
    FWD_DROP_NOT_ESP,
    FWD_DROP_TOO_BIG,
    FWD_DROP_EXPIRED,
    FWD_DROP_ERROR,
    FWD_DROP_COUNT,
};

/* Per slot: packets and inner bytes each way, then drops by reason. */
enum { FWD_PACKETS_IN = 0, FWD_BYTES_IN, FWD_PACKETS_OUT, FWD_BYTES_OUT, FWD_COUNTERS = 4 + FWD_DROP_COUNT };

typedef struct {
    uint32_t slot;              /* counter slot, < the max_slots given to esp_fwd_new */
    esp_sa_t *in_sa;            /* NULL: no inbound (never for a live Child SA) */
    esp_sa_t *out_sa;           /* NULL: inbound only (a rekeyed SA draining) */
    uint32_t spi_in;            /* the SPI of in_sa (host order) */
    int udp_encap;              /* 1: ESP in UDP/4500 (RFC 3948), 0: raw IP protocol 50 */
    uint8_t peer_family;        /* 4 or 6: the outer address family */
    uint8_t peer_addr[16];
    uint16_t peer_port;         /* UDP port of the peer when udp_encap */
    uint16_t mtu;               /* largest inner packet sent through this tunnel */
    uint16_t mss;               /* TCP MSS clamp for SYNs both ways (inner IPv4; IPv6 gets 20 less), 0 = off */
    uint32_t sel_offset;        /* selectors: n_local ours, then n_remote the peer's, from here */
    uint32_t n_local, n_remote;
    uint32_t bound_worker;      /* outbound: 0 = any worker; k + 1 = only worker k sends on out_sa (an RFC
                                 * 9611 per-resource SA: its sequence counter is never shared). 0 when zeroed */
    /* Sending as Ethernet frames from the worker's XSK (AF_XDP). l2_ok 0 (the next hop's MAC address is not
     * known, or the route to the peer leaves by another device): the sockets send, and the kernel resolves. */
    uint8_t l2_ok;
    uint8_t l2_dst[6], l2_src[6]; /* the next hop's MAC address and the device's */
    uint16_t l2_mtu;            /* the device's MTU: a larger ESP packet goes to the sockets (the kernel fragments) */
    uint8_t local_addr[16];     /* the outer source address (peer_family), what the sockets are bound to */
} esp_fwd_tunnel_t;

/* An AF_XDP socket the worker reads ESP from instead of (or besides) its sockets, and sends ESP on to
 * peers whose next hop is known (esp_fwd_tunnel_t.l2_ok): its UMEM and the calls of the binding
 * (ikev2lib._xsk, esp_xsk.c), handed over as plain pointers. Only this worker may use the XSK's rings. */
typedef struct {
    void *ctx;                  /* the esp_xsk_t */
    uint8_t *area;              /* its UMEM: frame bytes are parsed and decrypted where they lie */
    size_t area_len;            /* below 4 GiB (the batch offsets are 32-bit) */
    size_t (*recv)(void *ctx, uint64_t *addrs, uint32_t *lens, size_t max);
    void (*release)(void *ctx, const uint64_t *addrs, size_t n);
    int fd;                     /* readable when frames wait */
    uint16_t natt_port;         /* ESP in UDP to this port (0: none); the source port of what we send */
    size_t (*tx_frames)(void *ctx, uint64_t *addrs, size_t n);   /* NULL: receive only */
    size_t (*send)(void *ctx, const uint64_t *addrs, const uint32_t *lens, size_t n);
    size_t frame_size;          /* bytes of one UMEM frame */
} esp_fwd_xsk_t;

typedef struct {
    int tun_fd;                 /* this worker's TUN queue (non-blocking) */
    int udp_fd;                 /* this worker's UDP/4500 socket, or -1 */
    int raw_fd;                 /* the raw ESP socket (shared by every worker for sending), or -1 */
    int raw_rx;                 /* 1: this worker also reads raw_fd (one worker only: raw sockets each get a copy) */
    int vnet_hdr;               /* 1: the TUN has IFF_VNET_HDR and TSO offloads: reads are split, writes coalesced */
    int stop_fd;                /* readable = stop (an eventfd shared by all workers) */
    int worker;                 /* this worker's index: outbound entries bound to another worker are skipped */
    const esp_fwd_xsk_t *xsk;   /* NULL, or an AF_XDP socket for ESP frames both ways */
} esp_fwd_io_t;

typedef struct esp_fwd esp_fwd_t;

/* Authentic UDP-encapsulated ESP, inside its Child SA's selectors, from a source other than the
 * tunnel's peer: the peer's NAT may have made a new mapping (RFC 7296 2.23). The forwarder only
 * reports it (and delivers the packet); the control plane decides whether the SA follows and puts the
 * new address in the next table. */
typedef struct {
    uint32_t spi;               /* the inbound SPI it came on */
    uint8_t family;             /* 4 or 6 */
    uint8_t addr[16];           /* network order, IPv4 in the first 4 bytes */
    uint16_t port;
} esp_fwd_mapping_t;

esp_fwd_t *esp_fwd_new(uint32_t max_slots);
void esp_fwd_free(esp_fwd_t *dp);

/* Replace every tunnel at once (copied; the SAs must stay alive until the next call returns).
 * Outbound policy order is the array order: put the most specific first. icmp_src4/6 (may be NULL):
 * the source of our ICMP answers. Returns 0, -1 for invalid input, -2 when out of memory. */
int esp_fwd_set_tables(esp_fwd_t *dp, const esp_fwd_tunnel_t *tunnels, size_t n, const inner_selector_t *sels,
                       size_t n_sels, const uint8_t *icmp_src4, const uint8_t *icmp_src6);

/* Run a worker until io->stop_fd becomes readable (returns 0) or a fatal poll error (-1, errno set). */
int esp_fwd_run(esp_fwd_t *dp, const esp_fwd_io_t *io);

/* Process what is ready on the worker's descriptors once, without waiting (for tests). */
int esp_fwd_poll_once(esp_fwd_t *dp, const esp_fwd_io_t *io);

/* An eventfd that is readable while mappings wait (owned by the forwarder). */
int esp_fwd_mapping_fd(const esp_fwd_t *dp);

/* Take up to max waiting mappings, oldest first. Each (SPI, source) is reported once until taken; when
 * FWD_MAX_MAPPINGS wait, new ones are left out (the peer's next packet reports them again). */
size_t esp_fwd_take_mappings(esp_fwd_t *dp, esp_fwd_mapping_t *out, size_t max);

void esp_fwd_slot_counters(esp_fwd_t *dp, uint32_t slot, uint64_t out[FWD_COUNTERS]);
void esp_fwd_global_drops(esp_fwd_t *dp, uint64_t out[FWD_DROP_COUNT]);

/* On a bound SO_REUSEPORT UDP socket: steer datagrams whose first word is zero (IKE, RFC 3948) and
 * shorter ones (keepalives) to socket 0 of the group, ESP to socket 1 + SPI % workers. 0 or -1 (errno). */
int esp_fwd_attach_steering(int fd, uint32_t workers);

/* On worker `index`'s raw ESP socket (family 4 or 6): keep only ESP whose SPI % workers == index, so
 * that each worker reads its own SAs as with UDP (raw sockets each get a copy of every packet). Packets
 * too short to hold an SPI go to worker 0, which counts them as malformed. 0 or -1 (errno). */
int esp_fwd_attach_raw_steering(int fd, int family, uint32_t workers, uint32_t index);

#endif
