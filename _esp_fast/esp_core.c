/* ESP (RFC 4303) with AEAD and AES-CBC + HMAC transforms on OpenSSL 3 EVP. See esp_core.h for the contract. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "esp_core.h"

#define NONCE_LEN (ESP_SALT_LEN + ESP_IV_LEN)
#define MAX_AAD_LEN 12           /* SPI + ESN high + low */
#define MAX_ICV_LEN 32           /* HMAC-SHA-512-256 */
#define MAX_MAC_LEN 64           /* untruncated HMAC-SHA-512 output */
#define ESP_CACHE_LINE 64
/* Window used only to infer the ESN high half when anti-replay is switched off (RFC 4303 A2 needs one). */
#define ESP_INFER_WINDOW_NO_REPLAY ESP_DEFAULT_REPLAY_WINDOW

struct esp_sa {
    pthread_mutex_t lock;
    EVP_CIPHER_CTX *ctx;        /* key schedule set once; per packet only the IV changes */
    EVP_MAC_CTX *mac;           /* AES-CBC algorithms: HMAC keyed once; re-initialized per packet */
    unsigned iv_len;            /* explicit IV on the wire: ESP_IV_LEN (AEAD) or ESP_CBC_IV_LEN */
    unsigned block;             /* the ciphertext is padded to this: 4 (AEAD) or ESP_CBC_BLOCK */
    int cbc;                    /* 1: AES-CBC + HMAC, 0: AEAD */
    esp_sa_config_t cfg;        /* cfg.key / cfg.salt are not kept: see salt below */
    uint8_t salt[ESP_SALT_LEN];
    uint64_t last_sent;         /* outbound: last sequence number used, 0 = none */
    uint64_t ceiling;           /* outbound: the last sequence number it may use, 0 = the whole space */
    esp_replay_t replay;        /* inbound */
    esp_stats_t stats;
};

/* ---- cipher fetch: once per process ------------------------------------------------------------- */

static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *cipher_gcm128, *cipher_gcm192, *cipher_gcm256, *cipher_chacha;
static EVP_CIPHER *cipher_cbc128, *cipher_cbc192, *cipher_cbc256;
static EVP_MAC *mac_hmac;

static void fetch_ciphers(void)
{
    cipher_gcm128 = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    cipher_gcm192 = EVP_CIPHER_fetch(NULL, "AES-192-GCM", NULL);
    cipher_gcm256 = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    cipher_chacha = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
    cipher_cbc128 = EVP_CIPHER_fetch(NULL, "AES-128-CBC", NULL);
    cipher_cbc192 = EVP_CIPHER_fetch(NULL, "AES-192-CBC", NULL);
    cipher_cbc256 = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    mac_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    ERR_clear_error();
}

static const EVP_CIPHER *cipher_for(int alg, size_t key_len)
{
    pthread_once(&fetch_once, fetch_ciphers);
    if (alg == ESP_ALG_AES_GCM) {
        if (key_len == 16) return cipher_gcm128;
        if (key_len == 24) return cipher_gcm192;
        if (key_len == 32) return cipher_gcm256;
        return NULL;
    }
    if (alg == ESP_ALG_CHACHA20_POLY1305 && key_len == 32) return cipher_chacha;
    if (alg >= ESP_ALG_AES_CBC_HMAC_SHA1 && alg <= ESP_ALG_AES_CBC_HMAC_SHA512) {
        if (key_len == 16) return cipher_cbc128;
        if (key_len == 24) return cipher_cbc192;
        if (key_len == 32) return cipher_cbc256;
    }
    return NULL;
}

/* HMAC parameters of an AES-CBC algorithm: digest name, key length, truncated ICV length. */
typedef struct {
    const char *digest;
    size_t key_len;
    unsigned icv_len;
} hmac_alg_t;

static const hmac_alg_t *hmac_for(int alg)
{
    static const hmac_alg_t table[] = {
        {"SHA1", 20, 12},   /* RFC 2404 */
        {"SHA256", 32, 16}, /* RFC 4868 */
        {"SHA384", 48, 24},
        {"SHA512", 64, 32},
    };
    if (alg < ESP_ALG_AES_CBC_HMAC_SHA1 || alg > ESP_ALG_AES_CBC_HMAC_SHA512) return NULL;
    return &table[alg - ESP_ALG_AES_CBC_HMAC_SHA1];
}

const char *esp_core_openssl_version(void)
{
    return OpenSSL_version(OPENSSL_VERSION);
}

/* ---- byte order helpers ------------------------------------------------------------------------- */

static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static inline uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v;
}

static inline uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(((uint16_t)p[0] << 8) | p[1]);
}

/* ---- replay window (RFC 6479) ------------------------------------------------------------------- */

int esp_replay_init(esp_replay_t *w, uint32_t window)
{
    memset(w, 0, sizeof(*w));
    if (window == 0) return ESP_OK; /* anti-replay off */
    if (window > ESP_MAX_REPLAY_WINDOW) return ESP_ERR_INVALID;
    uint32_t need = (window + 63) / 64 + 1; /* +1 word: the ring never clears a word still in the window */
    uint32_t words = 1;
    while (words < need) words <<= 1;
    w->bitmap = calloc(words, sizeof(uint64_t));
    if (w->bitmap == NULL) return ESP_ERR_INVALID;
    w->words = words;
    w->window = window;
    return ESP_OK;
}

void esp_replay_free(esp_replay_t *w)
{
    free(w->bitmap);
    w->bitmap = NULL;
}

void esp_replay_reset(esp_replay_t *w, uint64_t last)
{
    if (w->bitmap) memset(w->bitmap, 0, (size_t)w->words * sizeof(uint64_t));
    w->last = last;
}

int esp_replay_check(const esp_replay_t *w, uint64_t seq)
{
    if (seq == 0) return ESP_ERR_WINDOW; /* never sent (RFC 4303 section 3.3.3) */
    if (w->window == 0) return ESP_OK;
    if (seq > w->last) return ESP_OK;
    if (w->last - seq >= w->window) return ESP_ERR_WINDOW;
    uint64_t word = w->bitmap[(seq >> 6) & (w->words - 1)];
    if (word & ((uint64_t)1 << (seq & 63))) return ESP_ERR_REPLAY;
    return ESP_OK;
}

void esp_replay_update(esp_replay_t *w, uint64_t seq)
{
    if (w->window == 0) {
        if (seq > w->last) w->last = seq; /* still tracked: ESN inference needs it */
        return;
    }
    if (seq > w->last) {
        uint64_t cur = w->last >> 6, idx = seq >> 6;
        uint64_t diff = idx - cur;
        if (diff > w->words) diff = w->words;
        for (uint64_t i = 1; i <= diff; i++) w->bitmap[(cur + i) & (w->words - 1)] = 0;
        w->last = seq;
    }
    w->bitmap[(seq >> 6) & (w->words - 1)] |= (uint64_t)1 << (seq & 63);
}

int esp_infer_seq(uint64_t last, uint32_t window, uint32_t seq_lo, uint64_t *seq)
{
    uint32_t tl = (uint32_t)last, th = (uint32_t)(last >> 32);
    uint32_t seqh;
    if (window == 0) window = ESP_INFER_WINDOW_NO_REPLAY;
    if (tl >= window - 1) { /* case A: the window lies within one 2^32 subspace */
        if (seq_lo >= tl - window + 1) {
            seqh = th;
        } else {
            if (th == UINT32_MAX) return -1; /* beyond 2^64: cannot be a valid number */
            seqh = th + 1;
        }
    } else {                /* case B: the window spans two subspaces */
        if (seq_lo >= (uint32_t)(tl - window + 1)) {
            if (th == 0) return -1;
            seqh = th - 1;
        } else {
            seqh = th;
        }
    }
    *seq = ((uint64_t)seqh << 32) | seq_lo;
    return 0;
}

/* ---- SA lifecycle ------------------------------------------------------------------------------- */

esp_sa_t *esp_sa_new(const esp_sa_config_t *cfg, int *status)
{
    *status = ESP_ERR_INVALID;
    if (cfg == NULL || cfg->key == NULL) return NULL;
    const EVP_CIPHER *cipher = cipher_for(cfg->alg, cfg->key_len);
    if (cipher == NULL) return NULL;
    const hmac_alg_t *hm = hmac_for(cfg->alg);
    if (hm == NULL && cfg->salt == NULL) return NULL;
    if (hm != NULL && (cfg->integ_key == NULL || cfg->integ_key_len != hm->key_len || cfg->icv_len != hm->icv_len))
        return NULL;
    if (hm != NULL && mac_hmac == NULL) {
        *status = ESP_ERR_CRYPTO;
        return NULL;
    }
    if (cfg->alg == ESP_ALG_AES_GCM && cfg->icv_len != 8 && cfg->icv_len != 12 && cfg->icv_len != 16) return NULL;
    if (cfg->alg == ESP_ALG_CHACHA20_POLY1305 && cfg->icv_len != 16) return NULL;
    if (cfg->replay_window > ESP_MAX_REPLAY_WINDOW) return NULL;

    /* Cache-line aligned and padded: two SAs driven by two threads never share a line (no false sharing). */
    size_t size = (sizeof(struct esp_sa) + ESP_CACHE_LINE - 1) / ESP_CACHE_LINE * ESP_CACHE_LINE;
    esp_sa_t *sa = aligned_alloc(ESP_CACHE_LINE, size);
    if (sa == NULL) return NULL;
    memset(sa, 0, size);
    sa->cfg = *cfg;
    sa->cfg.key = NULL;
    sa->cfg.salt = NULL;
    sa->cfg.integ_key = NULL;
    if (hm == NULL) memcpy(sa->salt, cfg->salt, ESP_SALT_LEN);
    sa->cbc = hm != NULL;
    sa->iv_len = sa->cbc ? ESP_CBC_IV_LEN : ESP_IV_LEN;
    sa->block = sa->cbc ? ESP_CBC_BLOCK : 4;
    if (pthread_mutex_init(&sa->lock, NULL) != 0) {
        OPENSSL_cleanse(sa, size); /* the salt is already in it */
        free(sa);
        return NULL;
    }
    if (!cfg->outbound && esp_replay_init(&sa->replay, cfg->replay_window) != ESP_OK) goto fail;
    sa->ctx = EVP_CIPHER_CTX_new();
    if (sa->ctx == NULL) goto crypto_fail;
    /* The key schedule is computed here, once; the 12-byte nonce length is the EVP default for both. */
    if (!EVP_CipherInit_ex2(sa->ctx, cipher, cfg->key, NULL, cfg->outbound ? 1 : 0, NULL)) goto crypto_fail;
    if (sa->cbc) {
        /* ESP does its own padding (RFC 4303 2.4): the cipher must add none. */
        if (!EVP_CIPHER_CTX_set_padding(sa->ctx, 0)) goto crypto_fail;
        sa->mac = EVP_MAC_CTX_new(mac_hmac);
        if (sa->mac == NULL) goto crypto_fail;
        OSSL_PARAM params[2];
        params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)hm->digest, 0);
        params[1] = OSSL_PARAM_construct_end();
        /* The key (ipad/opad state) is set once; per packet EVP_MAC_init with a NULL key restarts it. */
        if (!EVP_MAC_init(sa->mac, cfg->integ_key, cfg->integ_key_len, params)) goto crypto_fail;
    }
    *status = ESP_OK;
    return sa;

crypto_fail:
    ERR_clear_error();
    *status = ESP_ERR_CRYPTO;
fail:
    EVP_CIPHER_CTX_free(sa->ctx);
    EVP_MAC_CTX_free(sa->mac);
    esp_replay_free(&sa->replay);
    pthread_mutex_destroy(&sa->lock);
    OPENSSL_cleanse(sa, sizeof(*sa));
    free(sa);
    return NULL;
}

void esp_sa_free(esp_sa_t *sa)
{
    if (sa == NULL) return;
    EVP_CIPHER_CTX_free(sa->ctx); /* clears the key schedule */
    EVP_MAC_CTX_free(sa->mac);
    esp_replay_free(&sa->replay);
    pthread_mutex_destroy(&sa->lock);
    OPENSSL_cleanse(sa, sizeof(*sa));
    free(sa);
}

/* Takes the SA's lock; with wait == 0 only if it is free at once (the `_try` entry points). 1 when held. */
static int sa_lock(esp_sa_t *sa, int wait)
{
    if (wait) {
        pthread_mutex_lock(&sa->lock);
        return 1;
    }
    return pthread_mutex_trylock(&sa->lock) == 0;
}

/* ---- lifetime ----------------------------------------------------------------------------------- */

static int lifetime_state_locked(const esp_sa_t *sa)
{
    const esp_sa_config_t *c = &sa->cfg;
    const esp_stats_t *s = &sa->stats;
    if ((c->hard_packets && s->packets >= c->hard_packets) || (c->hard_bytes && s->bytes >= c->hard_bytes))
        return ESP_LIFETIME_HARD;
    if ((c->soft_packets && s->packets >= c->soft_packets) || (c->soft_bytes && s->bytes >= c->soft_bytes))
        return ESP_LIFETIME_SOFT;
    return ESP_LIFETIME_OK;
}

/* ---- encap -------------------------------------------------------------------------------------- */

/* Pad length for a body (payload + TFC padding): RFC 4303 2.4, the ciphertext ends on a 4-byte boundary
 * (AEAD) or an AES block boundary (CBC). */
static size_t pad_len(const esp_sa_t *sa, size_t body)
{
    return (sa->block - ((body + 2) % sa->block)) % sa->block;
}

static size_t encap_size(const esp_sa_t *sa, size_t inner_len, size_t tfc_pad)
{
    const esp_sa_config_t *c = &sa->cfg;
    if (inner_len > ESP_MAX_PACKET || tfc_pad > ESP_MAX_TFC_PAD) return 0;
    size_t body = inner_len + tfc_pad;
    size_t pad = pad_len(sa, body);
    size_t total = (c->udp_encap ? ESP_UDP_HDR_LEN : 0) + ESP_HDR_LEN + sa->iv_len + body + pad + 2 + c->icv_len;
    if (total > ESP_MAX_PACKET) return 0; /* with UDP encapsulation the UDP length field must hold it */
    return total;
}

size_t esp_encap_size(const esp_sa_t *sa, size_t inner_len, size_t tfc_pad)
{
    return encap_size(sa, inner_len, tfc_pad);
}

static int crypto_failed(void)
{
    ERR_clear_error();
    return ESP_ERR_CRYPTO;
}

/* ICV of an AES-CBC SA: HMAC over SPI..ciphertext, then the ESN high half if any (RFC 4303 2.2.1: it is
 * authenticated but never sent), truncated to icv_len (RFC 2404 / RFC 4868). */
static int cbc_icv(esp_sa_t *sa, const uint8_t *data, size_t len, uint64_t seq, uint8_t icv[MAX_ICV_LEN])
{
    uint8_t mac[MAX_MAC_LEN], hi[4];
    size_t mac_len = 0;
    if (!EVP_MAC_init(sa->mac, NULL, 0, NULL)) return ESP_ERR_CRYPTO;
    if (!EVP_MAC_update(sa->mac, data, len)) return ESP_ERR_CRYPTO;
    if (sa->cfg.esn) {
        put32(hi, (uint32_t)(seq >> 32));
        if (!EVP_MAC_update(sa->mac, hi, 4)) return ESP_ERR_CRYPTO;
    }
    if (!EVP_MAC_final(sa->mac, mac, &mac_len, sizeof(mac)) || mac_len < sa->cfg.icv_len) return ESP_ERR_CRYPTO;
    memcpy(icv, mac, sa->cfg.icv_len);
    OPENSSL_cleanse(mac, sizeof(mac));
    return ESP_OK;
}

/* AES-CBC encap of one packet; esp points at the ESP header (SPI and sequence number already written). */
static int encap_cbc(esp_sa_t *sa, uint8_t *esp, uint64_t seq, int next_header, const uint8_t *in, size_t in_len,
                     size_t tfc_pad)
{
    uint8_t *iv = esp + ESP_HDR_LEN;
    uint8_t *ct = iv + ESP_CBC_IV_LEN;
    size_t body = in_len + tfc_pad;
    size_t pad = pad_len(sa, body);
    size_t ct_len = body + pad + 2;
    /* RFC 3602 section 3: the IV must be unpredictable, so it comes from the CSPRNG, never from a caller. */
    if (RAND_bytes(iv, ESP_CBC_IV_LEN) != 1) return crypto_failed();
    if (in_len) memcpy(ct, in, in_len);
    uint8_t *trailer = ct + in_len;
    memset(trailer, 0, tfc_pad);
    for (size_t i = 0; i < pad; i++) trailer[tfc_pad + i] = (uint8_t)(i + 1);
    trailer[tfc_pad + pad] = (uint8_t)pad;
    trailer[tfc_pad + pad + 1] = (uint8_t)next_header;
    EVP_CIPHER_CTX *ctx = sa->ctx;
    int outl = 0;
    if (!EVP_EncryptInit_ex2(ctx, NULL, NULL, iv, NULL)) return crypto_failed();
    if (!EVP_EncryptUpdate(ctx, ct, &outl, ct, (int)ct_len) || (size_t)outl != ct_len) return crypto_failed();
    if (!EVP_EncryptFinal_ex(ctx, ct + ct_len, &outl)) return crypto_failed();
    /* Encrypt-then-MAC: the ICV covers SPI, sequence number, IV and ciphertext. */
    if (cbc_icv(sa, esp, ESP_HDR_LEN + ESP_CBC_IV_LEN + ct_len, seq, ct + ct_len) != ESP_OK) return crypto_failed();
    return ESP_OK;
}

static int encap_locked(esp_sa_t *sa, int next_header, const uint8_t *in, size_t in_len, size_t tfc_pad,
                        uint8_t *out, size_t out_cap, size_t *out_len)
{
    const esp_sa_config_t *c = &sa->cfg;
    if (!c->outbound) return ESP_ERR_INVALID;
    if (c->tunnel) {
        /* The inner packet is an IP packet; its version decides the next header (RFC 4303 section 2.6). */
        if (in_len < 1) return ESP_ERR_MALFORMED;
        unsigned version = in[0] >> 4;
        if (version == 4 && in_len >= 20) next_header = ESP_NH_IPV4;
        else if (version == 6 && in_len >= 40) next_header = ESP_NH_IPV6;
        else return ESP_ERR_MALFORMED;
    } else {
        if (next_header < 0 || next_header > 255 || tfc_pad != 0) return ESP_ERR_INVALID;
    }
    size_t total = encap_size(sa, in_len, tfc_pad);
    if (total == 0) return ESP_ERR_INVALID;
    if (total > out_cap) return ESP_ERR_BUFFER;
    if (lifetime_state_locked(sa) == ESP_LIFETIME_HARD) return ESP_ERR_HARD_EXPIRED;
    uint64_t max_seq = c->esn ? UINT64_MAX : UINT32_MAX;
    if (sa->ceiling && sa->ceiling < max_seq) max_seq = sa->ceiling;
    if (sa->last_sent >= max_seq) return ESP_ERR_SEQ_OVERFLOW;

    /* Reserve the sequence number first: even if encryption fails below, this IV is never reused. */
    uint64_t seq = ++sa->last_sent;
    uint8_t *p = out;
    if (c->udp_encap) {
        put16(p, c->udp_sport);
        put16(p + 2, c->udp_dport);
        put16(p + 4, (uint16_t)total);
        put16(p + 6, 0); /* RFC 3948 section 3.1.1: checksum SHOULD be zero */
        p += ESP_UDP_HDR_LEN;
    }
    put32(p, c->spi);
    put32(p + 4, (uint32_t)seq);
    if (sa->cbc) {
        int st = encap_cbc(sa, p, seq, next_header, in, in_len, tfc_pad);
        if (st != ESP_OK) return st;
        sa->stats.packets++;
        sa->stats.bytes += in_len;
        *out_len = total;
        return ESP_OK;
    }
    put32(p + 8, (uint32_t)(seq >> 32)); /* IV = the 64-bit sequence number, unique per key */
    put32(p + 12, (uint32_t)seq);

    uint8_t nonce[NONCE_LEN], aad[MAX_AAD_LEN];
    size_t aad_len;
    memcpy(nonce, sa->salt, ESP_SALT_LEN);
    memcpy(nonce + ESP_SALT_LEN, p + 8, ESP_IV_LEN);
    put32(aad, c->spi);
    if (c->esn) { /* RFC 4106 section 5: SPI || seq high || seq low */
        put32(aad + 4, (uint32_t)(seq >> 32));
        put32(aad + 8, (uint32_t)seq);
        aad_len = 12;
    } else {
        put32(aad + 4, (uint32_t)seq);
        aad_len = 8;
    }

    uint8_t *ct = p + ESP_HDR_LEN + ESP_IV_LEN;
    size_t body = in_len + tfc_pad;
    size_t pad = (4 - ((body + 2) & 3)) & 3;
    size_t trailer_len = tfc_pad + pad + 2;
    uint8_t *trailer = ct + in_len;
    memset(trailer, 0, tfc_pad); /* TFC padding (RFC 4303 2.7): the inner IP length tells the receiver */
    for (size_t i = 0; i < pad; i++) trailer[tfc_pad + i] = (uint8_t)(i + 1);
    trailer[tfc_pad + pad] = (uint8_t)pad;
    trailer[tfc_pad + pad + 1] = (uint8_t)next_header;

    EVP_CIPHER_CTX *ctx = sa->ctx;
    int outl = 0;
    if (!EVP_EncryptInit_ex2(ctx, NULL, NULL, nonce, NULL)) return crypto_failed();
    if (!EVP_EncryptUpdate(ctx, NULL, &outl, aad, (int)aad_len)) return crypto_failed();
    if (in_len && !EVP_EncryptUpdate(ctx, ct, &outl, in, (int)in_len)) return crypto_failed();
    if (!EVP_EncryptUpdate(ctx, trailer, &outl, trailer, (int)trailer_len)) return crypto_failed();
    if (!EVP_EncryptFinal_ex(ctx, trailer + trailer_len, &outl)) return crypto_failed();
    if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, (int)c->icv_len, trailer + trailer_len))
        return crypto_failed();
    sa->stats.packets++;
    sa->stats.bytes += in_len;
    *out_len = total;
    return ESP_OK;
}

static int encap_one(esp_sa_t *sa, int wait, int next_header, const uint8_t *in, size_t in_len, size_t tfc_pad,
                     uint8_t *out, size_t out_cap, size_t *out_len)
{
    if (!sa_lock(sa, wait)) return ESP_BUSY;
    int st = encap_locked(sa, next_header, in, in_len, tfc_pad, out, out_cap, out_len);
    if (st != ESP_OK) sa->stats.drops[st]++;
    pthread_mutex_unlock(&sa->lock);
    return st;
}

int esp_encap(esp_sa_t *sa, int next_header, const uint8_t *in, size_t in_len, size_t tfc_pad, uint8_t *out,
              size_t out_cap, size_t *out_len)
{
    return encap_one(sa, 1, next_header, in, in_len, tfc_pad, out, out_cap, out_len);
}

int esp_encap_try(esp_sa_t *sa, int next_header, const uint8_t *in, size_t in_len, size_t tfc_pad, uint8_t *out,
                  size_t out_cap, size_t *out_len)
{
    return encap_one(sa, 0, next_header, in, in_len, tfc_pad, out, out_cap, out_len);
}

size_t esp_encap_batch(esp_sa_t *sa, int next_header, const uint8_t *in, size_t in_size, const uint32_t *offs,
                       const uint32_t *lens, size_t n, uint8_t *out, size_t out_cap, uint32_t *out_offs,
                       uint32_t *out_lens, uint8_t *status)
{
    size_t ok = 0, pos = 0;
    if (out_cap > UINT32_MAX) out_cap = UINT32_MAX; /* output offsets are uint32 */
    pthread_mutex_lock(&sa->lock);
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        int st;
        if ((size_t)offs[i] > in_size || (size_t)lens[i] > in_size - offs[i]) {
            st = ESP_ERR_INVALID;
        } else {
            st = encap_locked(sa, next_header, in + offs[i], lens[i], 0, out + pos, out_cap - pos, &len);
        }
        out_offs[i] = (uint32_t)pos;
        out_lens[i] = (uint32_t)len;
        status[i] = (uint8_t)st;
        if (st == ESP_OK) {
            pos += len;
            ok++;
        } else {
            sa->stats.drops[st]++;
        }
    }
    pthread_mutex_unlock(&sa->lock);
    return ok;
}

/* ---- decap -------------------------------------------------------------------------------------- */

int esp_udp_classify(const uint8_t *payload, size_t len)
{
    if (len == 1 && payload[0] == 0xFF) return ESP_UDP_KEEPALIVE; /* RFC 3948 section 2.3 */
    if (len >= 4 && get32(payload) == 0) return ESP_UDP_IKE;      /* non-ESP marker (RFC 3948 2.2) */
    if (len >= ESP_HDR_LEN) return ESP_UDP_ESP;                   /* an SPI is never zero */
    return ESP_UDP_INVALID;
}

/* Strips the RFC 3948 header of a UDP-encapsulated packet; ESP_OK and the ESP part, or a status. */
static int strip_udp(const uint8_t **pkt, size_t *len)
{
    if (*len < ESP_UDP_HDR_LEN) return ESP_ERR_MALFORMED;
    if (get16(*pkt + 4) != *len) return ESP_ERR_MALFORMED; /* UDP length must match the datagram */
    *pkt += ESP_UDP_HDR_LEN;
    *len -= ESP_UDP_HDR_LEN;
    int kind = esp_udp_classify(*pkt, *len);
    if (kind == ESP_UDP_KEEPALIVE || kind == ESP_UDP_IKE) return ESP_ERR_NOT_ESP;
    if (kind != ESP_UDP_ESP) return ESP_ERR_MALFORMED;
    return ESP_OK;
}

/* Inner packet length in tunnel mode, from the inner IP header (this strips TFC padding), or 0. */
static size_t inner_ip_length(int next_header, const uint8_t *p, size_t len)
{
    if (next_header == ESP_NH_IPV4) {
        if (len < 20 || (p[0] >> 4) != 4) return 0;
        size_t total = get16(p + 2);
        if (total < 20 || total > len) return 0;
        return total;
    }
    if (next_header == ESP_NH_IPV6) {
        if (len < 40 || (p[0] >> 4) != 6) return 0;
        size_t total = 40 + (size_t)get16(p + 4);
        if (total > len) return 0;
        return total;
    }
    return 0;
}

static int finish_decap(esp_sa_t *sa, uint64_t seq, uint8_t *out, size_t ct_len, size_t *out_len, int *next_header);

/* AES-CBC: verify the ICV (constant time) over SPI..ciphertext first; only an authentic packet is decrypted. */
static int decrypt_cbc(esp_sa_t *sa, const uint8_t *pkt, size_t ct_len, uint64_t seq, uint8_t *out)
{
    const uint8_t *iv = pkt + ESP_HDR_LEN;
    const uint8_t *ct = iv + ESP_CBC_IV_LEN;
    uint8_t icv[MAX_ICV_LEN];
    if (cbc_icv(sa, pkt, ESP_HDR_LEN + ESP_CBC_IV_LEN + ct_len, seq, icv) != ESP_OK) return crypto_failed();
    if (CRYPTO_memcmp(icv, ct + ct_len, sa->cfg.icv_len) != 0) return ESP_ERR_AUTH;
    EVP_CIPHER_CTX *ctx = sa->ctx;
    int outl = 0;
    if (!EVP_DecryptInit_ex2(ctx, NULL, NULL, iv, NULL) || !EVP_DecryptUpdate(ctx, out, &outl, ct, (int)ct_len)
        || (size_t)outl != ct_len || !EVP_DecryptFinal_ex(ctx, out + ct_len, &outl)) {
        OPENSSL_cleanse(out, ct_len);
        return crypto_failed();
    }
    return ESP_OK;
}

/* pkt points at the ESP header (any UDP header already stripped). */
static int decap_locked(esp_sa_t *sa, const uint8_t *pkt, size_t len, uint8_t *out, size_t out_cap,
                        size_t *out_len, int *next_header)
{
    const esp_sa_config_t *c = &sa->cfg;
    if (c->outbound) return ESP_ERR_INVALID;
    size_t min_ct = sa->cbc ? ESP_CBC_BLOCK : 2; /* at least pad length + next header, in whole blocks */
    if (len < ESP_HDR_LEN + sa->iv_len + min_ct + c->icv_len || len > ESP_MAX_PACKET) return ESP_ERR_MALFORMED;
    if (sa->cbc && (len - ESP_HDR_LEN - ESP_CBC_IV_LEN - c->icv_len) % ESP_CBC_BLOCK != 0) return ESP_ERR_MALFORMED;
    if (get32(pkt) != c->spi) return ESP_ERR_UNKNOWN_SPI;
    if (lifetime_state_locked(sa) == ESP_LIFETIME_HARD) return ESP_ERR_HARD_EXPIRED;

    uint32_t seq_lo = get32(pkt + 4);
    uint64_t seq = seq_lo;
    if (c->esn && esp_infer_seq(sa->replay.last, sa->replay.window, seq_lo, &seq) != 0) return ESP_ERR_WINDOW;
    /* Cheap pre-check before any cryptography; the window is only updated after the ICV verified. */
    int st = esp_replay_check(&sa->replay, seq);
    if (st != ESP_OK) return st;

    size_t ct_len = len - ESP_HDR_LEN - sa->iv_len - c->icv_len;
    if (out_cap < ct_len) return ESP_ERR_BUFFER;
    if (sa->cbc) {
        st = decrypt_cbc(sa, pkt, ct_len, seq, out);
        if (st != ESP_OK) return st;
        return finish_decap(sa, seq, out, ct_len, out_len, next_header);
    }
    const uint8_t *iv = pkt + ESP_HDR_LEN;
    const uint8_t *ct = iv + ESP_IV_LEN;
    uint8_t nonce[NONCE_LEN], aad[MAX_AAD_LEN], tag[MAX_ICV_LEN];
    size_t aad_len;
    memcpy(nonce, sa->salt, ESP_SALT_LEN);
    memcpy(nonce + ESP_SALT_LEN, iv, ESP_IV_LEN);
    memcpy(aad, pkt, ESP_HDR_LEN);
    if (c->esn) {
        put32(aad + 4, (uint32_t)(seq >> 32));
        put32(aad + 8, seq_lo);
        aad_len = 12;
    } else {
        aad_len = 8;
    }
    memcpy(tag, ct + ct_len, c->icv_len);

    EVP_CIPHER_CTX *ctx = sa->ctx;
    int outl = 0;
    if (!EVP_DecryptInit_ex2(ctx, NULL, NULL, nonce, NULL)) return crypto_failed();
    if (!EVP_DecryptUpdate(ctx, NULL, &outl, aad, (int)aad_len)) return crypto_failed();
    if (!EVP_DecryptUpdate(ctx, out, &outl, ct, (int)ct_len)) {
        OPENSSL_cleanse(out, ct_len);
        return crypto_failed();
    }
    if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, (int)c->icv_len, tag)) {
        OPENSSL_cleanse(out, ct_len);
        return crypto_failed();
    }
    if (EVP_DecryptFinal_ex(ctx, out + ct_len, &outl) <= 0) {
        OPENSSL_cleanse(out, ct_len); /* never leave unauthenticated plaintext behind */
        ERR_clear_error();
        return ESP_ERR_AUTH;
    }

    return finish_decap(sa, seq, out, ct_len, out_len, next_header);
}

/* Trailer checks on an authentic, decrypted ciphertext (RFC 4303 section 2.4-2.6), then the window moves. */
static int finish_decap(esp_sa_t *sa, uint64_t seq, uint8_t *out, size_t ct_len, size_t *out_len, int *next_header)
{
    const esp_sa_config_t *c = &sa->cfg;
    int st = ESP_OK;
    size_t pad = out[ct_len - 2];
    int nh = out[ct_len - 1];
    if (pad + 2 > ct_len) st = ESP_ERR_PADDING;
    size_t payload_len = ct_len - 2 - (st == ESP_OK ? pad : 0);
    for (size_t i = 0; st == ESP_OK && i < pad; i++)
        if (out[payload_len + i] != (uint8_t)(i + 1)) st = ESP_ERR_PADDING;
    if (st == ESP_OK && nh == ESP_NH_NONE) st = ESP_ERR_DUMMY;
    if (st == ESP_OK && c->tunnel) {
        size_t inner = inner_ip_length(nh, out, payload_len);
        if (inner == 0) st = ESP_ERR_MALFORMED;
        else payload_len = inner; /* anything after the inner packet is TFC padding */
    }
    if (st == ESP_OK || st == ESP_ERR_DUMMY) esp_replay_update(&sa->replay, seq); /* both are authentic */
    if (st != ESP_OK) {
        OPENSSL_cleanse(out, ct_len);
        return st;
    }
    if (payload_len < ct_len) OPENSSL_cleanse(out + payload_len, ct_len - payload_len); /* trailer, TFC */
    sa->stats.packets++;
    sa->stats.bytes += payload_len;
    *out_len = payload_len;
    *next_header = nh;
    return ESP_OK;
}

static int decap_one(esp_sa_t *sa, int wait, const uint8_t *pkt, size_t len, uint8_t *out, size_t out_cap,
                     size_t *out_len, int *next_header)
{
    int st;
    if (!sa_lock(sa, wait)) return ESP_BUSY;
    if (sa->cfg.udp_encap && (st = strip_udp(&pkt, &len)) != ESP_OK) {
        /* not counted as a drop: IKE and keepalives on port 4500 are normal traffic */
        if (st != ESP_ERR_NOT_ESP) sa->stats.drops[st]++;
        pthread_mutex_unlock(&sa->lock);
        return st;
    }
    st = decap_locked(sa, pkt, len, out, out_cap, out_len, next_header);
    if (st != ESP_OK) sa->stats.drops[st]++;
    pthread_mutex_unlock(&sa->lock);
    return st;
}

int esp_decap(esp_sa_t *sa, const uint8_t *pkt, size_t pkt_len, uint8_t *out, size_t out_cap, size_t *out_len,
              int *next_header)
{
    *out_len = 0;
    *next_header = 0;
    return decap_one(sa, 1, pkt, pkt_len, out, out_cap, out_len, next_header);
}

int esp_decap_try(esp_sa_t *sa, const uint8_t *pkt, size_t pkt_len, uint8_t *out, size_t out_cap, size_t *out_len,
                  int *next_header)
{
    *out_len = 0;
    *next_header = 0;
    return decap_one(sa, 0, pkt, pkt_len, out, out_cap, out_len, next_header);
}

static int entry_cmp(const void *a, const void *b)
{
    uint32_t x = ((const esp_table_entry_t *)a)->spi, y = ((const esp_table_entry_t *)b)->spi;
    return (x > y) - (x < y);
}

void esp_table_sort(esp_table_entry_t *table, size_t n_sa)
{
    qsort(table, n_sa, sizeof(*table), entry_cmp);
}

int esp_table_check_unique(const esp_table_entry_t *table, size_t n_sa)
{
    for (size_t i = 1; i < n_sa; i++)
        if (table[i].spi == table[i - 1].spi) return -1;
    return 0;
}

static esp_sa_t *table_find(const esp_table_entry_t *table, size_t n_sa, uint32_t spi)
{
    size_t lo = 0, hi = n_sa;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (table[mid].spi == spi) return table[mid].sa;
        if (table[mid].spi < spi) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

size_t esp_decap_batch(const esp_table_entry_t *table, size_t n_sa, int udp_encap, const uint8_t *in,
                       size_t in_size, const uint32_t *offs, const uint32_t *lens, size_t n, uint8_t *out,
                       size_t out_cap, uint32_t *out_offs, uint32_t *out_lens, uint8_t *next_headers,
                       uint8_t *status, uint64_t *table_drops)
{
    size_t ok = 0, pos = 0;
    if (out_cap > UINT32_MAX) out_cap = UINT32_MAX; /* output offsets are uint32 */
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        int nh = 0, st;
        esp_sa_t *sa = NULL;
        if ((size_t)offs[i] > in_size || (size_t)lens[i] > in_size - offs[i]) {
            st = ESP_ERR_INVALID;
        } else {
            const uint8_t *pkt = in + offs[i];
            size_t plen = lens[i];
            size_t spi_at = udp_encap ? ESP_UDP_HDR_LEN : 0;
            if (udp_encap && plen >= ESP_UDP_HDR_LEN) {
                int kind = esp_udp_classify(pkt + ESP_UDP_HDR_LEN, plen - ESP_UDP_HDR_LEN);
                if (kind == ESP_UDP_KEEPALIVE || kind == ESP_UDP_IKE) {
                    st = ESP_ERR_NOT_ESP;
                    goto done;
                }
            }
            if (plen < spi_at + ESP_HDR_LEN) {
                st = ESP_ERR_MALFORMED;
            } else if ((sa = table_find(table, n_sa, get32(pkt + spi_at))) == NULL) {
                st = ESP_ERR_UNKNOWN_SPI;
            } else if (sa->cfg.udp_encap != udp_encap) {
                st = ESP_ERR_MALFORMED;
            } else {
                st = decap_one(sa, 1, pkt, plen, out + pos, out_cap - pos, &len, &nh); /* the SA counts */
            }
        }
    done:
        if (st != ESP_OK && sa == NULL && table_drops != NULL)
            __atomic_fetch_add(&table_drops[st], 1, __ATOMIC_RELAXED); /* tables may be shared by threads */
        out_offs[i] = (uint32_t)pos;
        out_lens[i] = (uint32_t)(st == ESP_OK ? len : 0);
        next_headers[i] = (uint8_t)(st == ESP_OK ? nh : 0);
        status[i] = (uint8_t)st;
        if (st == ESP_OK) {
            pos += len;
            ok++;
        }
    }
    return ok;
}

/* ---- observers ---------------------------------------------------------------------------------- */

static int stats_one(esp_sa_t *sa, int wait, esp_stats_t *out)
{
    if (!sa_lock(sa, wait)) return ESP_BUSY;
    *out = sa->stats;
    pthread_mutex_unlock(&sa->lock);
    return ESP_OK;
}

void esp_sa_stats(esp_sa_t *sa, esp_stats_t *out)
{
    stats_one(sa, 1, out);
}

int esp_sa_stats_try(esp_sa_t *sa, esp_stats_t *out)
{
    return stats_one(sa, 0, out);
}

static int lifetime_state_one(esp_sa_t *sa, int wait)
{
    if (!sa_lock(sa, wait)) return ESP_BUSY;
    int st = lifetime_state_locked(sa);
    pthread_mutex_unlock(&sa->lock);
    return st;
}

int esp_sa_lifetime_state(esp_sa_t *sa)
{
    return lifetime_state_one(sa, 1);
}

int esp_sa_lifetime_state_try(esp_sa_t *sa)
{
    return lifetime_state_one(sa, 0);
}

uint64_t esp_sa_next_seq(esp_sa_t *sa)
{
    pthread_mutex_lock(&sa->lock);
    uint64_t v = sa->last_sent + 1; /* wraps to 0 only when an ESN space is exhausted */
    pthread_mutex_unlock(&sa->lock);
    return v;
}

uint64_t esp_sa_highest_seq(esp_sa_t *sa)
{
    pthread_mutex_lock(&sa->lock);
    uint64_t v = sa->replay.last;
    pthread_mutex_unlock(&sa->lock);
    return v;
}

int esp_sa_set_ceiling(esp_sa_t *sa, uint64_t last_allowed)
{
    if (!sa->cfg.outbound) return ESP_ERR_INVALID;
    pthread_mutex_lock(&sa->lock);
    sa->ceiling = last_allowed;
    pthread_mutex_unlock(&sa->lock);
    return ESP_OK;
}

int esp_sa_advance(esp_sa_t *sa, uint64_t next_seq)
{
    int st = ESP_OK;
    pthread_mutex_lock(&sa->lock);
    uint64_t max_seq = sa->cfg.esn ? UINT64_MAX : UINT32_MAX;
    if (next_seq == 0 || next_seq > max_seq) {
        st = ESP_ERR_INVALID;
    } else if (sa->cfg.outbound) {
        if (next_seq - 1 < sa->last_sent) st = ESP_ERR_INVALID;
        else sa->last_sent = next_seq - 1;
    } else {
        if (next_seq - 1 < sa->replay.last) st = ESP_ERR_INVALID;
        else esp_replay_reset(&sa->replay, next_seq - 1);
    }
    pthread_mutex_unlock(&sa->lock);
    return st;
}
