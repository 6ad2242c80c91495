/* Plain C core of the ESP data plane: no Python API, so it can be unit-tested and fuzzed on its own.
 *
 * One esp_sa_t is one unidirectional ESP SA (RFC 4303) with an AEAD transform: AES-GCM with an 8, 12 or
 * 16 byte ICV (RFC 4106) or ChaCha20-Poly1305 (RFC 7634). The SA owns its OpenSSL EVP context (key schedule
 * set once), its salt, its sequence counter and its RFC 6479 anti-replay window. The nonce is always
 * salt || IV and on output the IV is the 64-bit sequence number: no function here accepts a nonce or IV.
 * The AES-CBC + HMAC-SHA1/SHA2 transforms (RFC 3602, RFC 2404, RFC 4868) instead draw a random 16-byte IV
 * from the CSPRNG (RAND_bytes) inside esp_encap, MAC SPI..ciphertext (plus the ESN high half, RFC 4303
 * 2.2.1) and verify the ICV in constant time before anything is decrypted.
 *
 * Threads: every entry point that touches an SA takes that SA's own mutex, so one SA used from several
 * threads is serialized (a sequence number is reserved under the lock and can never be used twice) while
 * different SAs proceed in parallel: there is no global lock. The `_try` twins never wait for that mutex:
 * they are for callers that hold a lock of their own (the Python binding holds the GIL) and must drop it
 * before they wait.
 */
#ifndef ESP_CORE_H
#define ESP_CORE_H

#include <stddef.h>
#include <stdint.h>

/* Limits (named so callers and tests can reason about them). */
#define ESP_SPI_LEN 4
#define ESP_SEQ_LEN 4
#define ESP_HDR_LEN 8          /* SPI + low 32 bits of the sequence number */
#define ESP_IV_LEN 8           /* explicit IV on the wire (RFC 4106 section 3.1, RFC 7634 section 2) */
#define ESP_SALT_LEN 4         /* KEYMAT salt: the implicit part of the nonce */
#define ESP_UDP_HDR_LEN 8      /* RFC 3948 UDP encapsulation header */
#define ESP_MAX_PAD 255        /* the pad length field is one octet */
#define ESP_MAX_PACKET 65535   /* an ESP packet must fit in one IP datagram */
#define ESP_MAX_TFC_PAD 65535  /* bounded by ESP_MAX_PACKET anyway */
#define ESP_MAX_REPLAY_WINDOW (1u << 20) /* 1 Mi packets: 256 KiB bitmap per SA, far above any real need */
#define ESP_DEFAULT_REPLAY_WINDOW 1024
#define ESP_NH_IPV4 4
#define ESP_NH_IPV6 41
#define ESP_NH_NONE 59         /* dummy packet (RFC 4303 section 2.6): discarded by the receiver */

enum esp_alg {
    ESP_ALG_AES_GCM = 1,
    ESP_ALG_CHACHA20_POLY1305 = 2,
    /* AES-CBC (RFC 3602) + HMAC (RFC 2404 / RFC 4868), encrypt-then-MAC: explicit random 16-byte IV. */
    ESP_ALG_AES_CBC_HMAC_SHA1 = 3,   /* HMAC-SHA1-96: 20-byte key, 12-byte ICV */
    ESP_ALG_AES_CBC_HMAC_SHA256 = 4, /* HMAC-SHA-256-128: 32-byte key, 16-byte ICV */
    ESP_ALG_AES_CBC_HMAC_SHA384 = 5, /* HMAC-SHA-384-192: 48-byte key, 24-byte ICV */
    ESP_ALG_AES_CBC_HMAC_SHA512 = 6, /* HMAC-SHA-512-256: 64-byte key, 32-byte ICV */
};
#define ESP_CBC_IV_LEN 16      /* AES block: random explicit IV of the CBC transforms (RFC 3602 section 3) */
#define ESP_CBC_BLOCK 16       /* CBC ciphertext (payload..next header) is a whole number of AES blocks */

/* Per-packet status. Values are part of the Python API (ikev2lib.esp.Status mirrors them). */
enum esp_status {
    ESP_OK = 0,
    ESP_ERR_AUTH = 1,          /* ICV did not verify */
    ESP_ERR_REPLAY = 2,        /* sequence number already received */
    ESP_ERR_WINDOW = 3,        /* sequence number left of the replay window (or zero) */
    ESP_ERR_MALFORMED = 4,     /* truncated, oversized, bad inner packet, bad next header */
    ESP_ERR_PADDING = 5,       /* pad length / monotonic pad bytes wrong (after the ICV verified) */
    ESP_ERR_UNKNOWN_SPI = 6,   /* no SA for this SPI */
    ESP_ERR_NOT_ESP = 7,       /* UDP/4500 datagram that is IKE (non-ESP marker) or a NAT keepalive */
    ESP_ERR_DUMMY = 8,         /* authentic dummy packet (next header 59): dropped */
    ESP_ERR_HARD_EXPIRED = 9,  /* hard lifetime reached: the SA refuses traffic */
    ESP_ERR_SEQ_OVERFLOW = 10, /* outbound sequence number space exhausted */
    ESP_ERR_BUFFER = 11,       /* the caller's output buffer is too small */
    ESP_ERR_INVALID = 12,      /* API misuse: wrong direction, bad argument, input too large */
    ESP_ERR_CRYPTO = 13,       /* OpenSSL reported an internal failure */
    ESP_STATUS_COUNT = 14,
};

/* Returned by the `_try` entry points when another thread holds the SA: nothing was done or counted, call
 * the blocking twin. Not an esp_status: it is never counted and never reported for a packet. */
#define ESP_BUSY (-1)

/* Lifetime state, visible to the caller (the IKE layer rekeys on soft and stops on hard). */
enum esp_lifetime_state {
    ESP_LIFETIME_OK = 0,
    ESP_LIFETIME_SOFT = 1,
    ESP_LIFETIME_HARD = 2,
};

typedef struct {
    uint32_t spi;
    int alg;                    /* enum esp_alg */
    const uint8_t *key;         /* cipher key, without the salt */
    size_t key_len;             /* 16/24/32 for AES-GCM and AES-CBC, 32 for ChaCha20-Poly1305 */
    const uint8_t *salt;        /* ESP_SALT_LEN bytes (AEAD only; ignored, may be NULL, for AES-CBC) */
    unsigned icv_len;           /* 8, 12, 16 (GCM); 16 (ChaCha20-Poly1305); 12/16/24/32 (HMAC, by alg) */
    int outbound;               /* 1: encap only, 0: decap only */
    int tunnel;                 /* 1: tunnel mode (inner IPv4/IPv6), 0: transport mode */
    int esn;                    /* extended (64-bit) sequence numbers */
    uint32_t replay_window;     /* inbound: window size in packets, 0 = anti-replay off */
    int udp_encap;              /* RFC 3948: packets carry an 8-byte UDP header */
    uint16_t udp_sport, udp_dport;
    uint64_t soft_packets, hard_packets, soft_bytes, hard_bytes; /* 0 = unlimited */
    const uint8_t *integ_key;   /* AES-CBC algorithms only: HMAC key (20/32/48/64 bytes by alg) */
    size_t integ_key_len;
} esp_sa_config_t;

typedef struct {
    uint64_t packets;           /* packets processed successfully */
    uint64_t bytes;             /* inner (payload) bytes of those packets */
    uint64_t drops[ESP_STATUS_COUNT]; /* refused/dropped packets by status */
} esp_stats_t;

/* RFC 6479 window: a ring of 64-bit words, never shifted. Sequence numbers are full 64-bit values. */
typedef struct {
    uint64_t *bitmap;
    uint32_t words;             /* power of two, >= window/64 + 1 */
    uint32_t window;            /* W: accepted range is (last - W, last] plus anything above last */
    uint64_t last;              /* highest authenticated sequence number, 0 = none yet */
} esp_replay_t;

typedef struct esp_sa esp_sa_t;

/* Batch tables map SPI -> inbound SA; entries must be sorted by SPI (esp_table_sort does it). */
typedef struct {
    uint32_t spi;
    esp_sa_t *sa;
} esp_table_entry_t;

const char *esp_core_openssl_version(void);

/* SA lifecycle. esp_sa_new returns NULL and sets *status (ESP_ERR_INVALID or ESP_ERR_CRYPTO) on failure. */
esp_sa_t *esp_sa_new(const esp_sa_config_t *cfg, int *status);
void esp_sa_free(esp_sa_t *sa);

/* Size of the packet esp_encap produces for an inner packet of inner_len bytes, or 0 if too large. */
size_t esp_encap_size(const esp_sa_t *sa, size_t inner_len, size_t tfc_pad);

/* Encapsulate one packet. next_header is used in transport mode only (tunnel mode derives 4/41 from the
 * inner packet). out must not overlap in. On success *out_len is the packet length. */
int esp_encap(esp_sa_t *sa, int next_header, const uint8_t *in, size_t in_len, size_t tfc_pad, uint8_t *out,
              size_t out_cap, size_t *out_len);

/* Decapsulate one packet into out (out_cap >= the ciphertext length is enough; must not overlap pkt).
 * Nothing is left in out unless the status is ESP_OK: failed packets are wiped. */
int esp_decap(esp_sa_t *sa, const uint8_t *pkt, size_t pkt_len, uint8_t *out, size_t out_cap, size_t *out_len,
              int *next_header);
/* As esp_encap / esp_decap if the SA's lock is free at once; otherwise ESP_BUSY (nothing done or counted). */
int esp_encap_try(esp_sa_t *sa, int next_header, const uint8_t *in, size_t in_len, size_t tfc_pad, uint8_t *out,
                  size_t out_cap, size_t *out_len);
int esp_decap_try(esp_sa_t *sa, const uint8_t *pkt, size_t pkt_len, uint8_t *out, size_t out_cap,
                  size_t *out_len, int *next_header);

/* Batches: packet i is in[offs[i] .. offs[i]+lens[i]); outputs are packed into out one after the other,
 * out_offs/out_lens/status are filled for every packet. Returns the number of ESP_OK packets. */
size_t esp_encap_batch(esp_sa_t *sa, int next_header, const uint8_t *in, size_t in_size, const uint32_t *offs,
                       const uint32_t *lens, size_t n, uint8_t *out, size_t out_cap, uint32_t *out_offs,
                       uint32_t *out_lens, uint8_t *status);
/* table_drops (may be NULL): ESP_STATUS_COUNT counters, atomically incremented for packets refused
 * before an SA was found (unknown SPI, not ESP, too short, outside the buffer). */
size_t esp_decap_batch(const esp_table_entry_t *table, size_t n_sa, int udp_encap, const uint8_t *in,
                       size_t in_size, const uint32_t *offs, const uint32_t *lens, size_t n, uint8_t *out,
                       size_t out_cap, uint32_t *out_offs, uint32_t *out_lens, uint8_t *next_headers,
                       uint8_t *status, uint64_t *table_drops);
void esp_table_sort(esp_table_entry_t *table, size_t n_sa);
/* Returns 0 if the SPIs in the sorted table are unique, -1 otherwise. */
int esp_table_check_unique(const esp_table_entry_t *table, size_t n_sa);

/* UDP/4500 demultiplexing (RFC 3948 section 2.2 and RFC 7296 section 2.23) of one datagram payload. */
enum esp_udp_kind { ESP_UDP_KEEPALIVE = 0, ESP_UDP_IKE = 1, ESP_UDP_ESP = 2, ESP_UDP_INVALID = 3 };
int esp_udp_classify(const uint8_t *payload, size_t len);

/* Observers and controls (all take the SA lock). */
void esp_sa_stats(esp_sa_t *sa, esp_stats_t *out);
int esp_sa_lifetime_state(esp_sa_t *sa);
int esp_sa_stats_try(esp_sa_t *sa, esp_stats_t *out); /* ESP_OK, or ESP_BUSY and *out untouched */
int esp_sa_lifetime_state_try(esp_sa_t *sa);          /* enum esp_lifetime_state, or ESP_BUSY */
uint64_t esp_sa_next_seq(esp_sa_t *sa);        /* outbound: next sequence number to be sent */
uint64_t esp_sa_highest_seq(esp_sa_t *sa);     /* inbound: highest authenticated sequence number */
/* Move the sequence state forward only (so an IV can never repeat): outbound, the next number sent is
 * next_seq; inbound, the window restarts empty just below next_seq. ESP_ERR_INVALID if it would go back. */
int esp_sa_advance(esp_sa_t *sa, uint64_t next_seq);
/* Outbound: never use a sequence number above last_allowed (encapsulation answers ESP_ERR_SEQ_OVERFLOW
 * as when the space is exhausted); 0 lifts the limit. What another process may start at after a
 * takeover stays unused here (ikev2lib.gateway.ha). ESP_ERR_INVALID on an inbound SA. */
int esp_sa_set_ceiling(esp_sa_t *sa, uint64_t last_allowed);

/* The replay window on its own (used inside the SA; exposed for tests and the fuzzer). */
int esp_replay_init(esp_replay_t *w, uint32_t window);
void esp_replay_free(esp_replay_t *w);
void esp_replay_reset(esp_replay_t *w, uint64_t last);
int esp_replay_check(const esp_replay_t *w, uint64_t seq);   /* ESP_OK, ESP_ERR_REPLAY, ESP_ERR_WINDOW */
void esp_replay_update(esp_replay_t *w, uint64_t seq);       /* call only after the ICV verified */
/* RFC 4303 Appendix A2.2: full 64-bit number for received low half seq_lo. Returns 0 and sets *seq, or
 * -1 when the number would lie below zero (necessarily outside the window). */
int esp_infer_seq(uint64_t last, uint32_t window, uint32_t seq_lo, uint64_t *seq);

#endif
