/* libFuzzer harness over the C ESP core's decap path (clang -fsanitize=fuzzer,address,undefined).
 *
 * Input byte 0 picks one of CONFIGS (low bits) and a mode (high bit):
 *   raw mode:     the rest is a packet, decapsulated as is, singly and as a batch through an SA table;
 *   crafted mode: 4 bytes of sequence number, then an ESP *plaintext* (payload + trailer) that the harness
 *                 seals with the SA's key, so the fuzzer reaches the checks after the ICV (padding, next
 *                 header, inner IP length, TFC stripping) with authentic packets.
 * CBC configurations (AES-CBC + HMAC) are sealed with a fixed IV and the plaintext cut to whole blocks.
 * Invariants: no memory error (ASan/UBSan), decap writes only inside its output buffer, and a failed
 * packet leaves nothing but zeros in it. SAs are created per input so runs are deterministic. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "esp_core.h"

typedef struct {
    int alg;
    size_t key_len;
    unsigned icv;
    int tunnel, esn, udp;
    uint32_t window;
} fuzz_config_t;

static const fuzz_config_t CONFIGS[] = {
    {ESP_ALG_AES_GCM, 16, 16, 1, 0, 0, 64},
    {ESP_ALG_AES_GCM, 32, 8, 0, 1, 0, 1024},
    {ESP_ALG_CHACHA20_POLY1305, 32, 16, 1, 0, 1, 32},
    {ESP_ALG_AES_GCM, 24, 12, 0, 0, 0, 0},
    {ESP_ALG_AES_CBC_HMAC_SHA256, 32, 16, 1, 0, 0, 64},
    {ESP_ALG_AES_CBC_HMAC_SHA1, 16, 12, 0, 1, 1, 32},
    {ESP_ALG_AES_CBC_HMAC_SHA512, 24, 32, 1, 1, 0, 0},
};
#define N_CONFIGS (sizeof(CONFIGS) / sizeof(CONFIGS[0]))
#define FUZZ_SPI_BASE 0x1000u
#define FUZZ_MAX_INPUT 70000 /* above ESP_MAX_PACKET so the size limits are exercised too */

#define FUZZ_KEYMAT_LEN 96 /* largest KEYMAT: AES-256 key || HMAC-SHA-512 key */
static uint8_t keymat[FUZZ_KEYMAT_LEN];

static int is_cbc(int alg)
{
    return alg >= ESP_ALG_AES_CBC_HMAC_SHA1 && alg <= ESP_ALG_AES_CBC_HMAC_SHA512;
}

static esp_sa_t *make_sa(const fuzz_config_t *c, uint32_t spi)
{
    esp_sa_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.spi = spi;
    cfg.alg = c->alg;
    cfg.key = keymat;
    cfg.key_len = c->key_len;
    cfg.salt = keymat + c->key_len;
    if (is_cbc(c->alg)) {
        static const size_t integ_len[] = {20, 32, 48, 64};
        cfg.salt = NULL;
        cfg.integ_key = keymat + c->key_len;
        cfg.integ_key_len = integ_len[c->alg - ESP_ALG_AES_CBC_HMAC_SHA1];
    }
    cfg.icv_len = c->icv;
    cfg.tunnel = c->tunnel;
    cfg.esn = c->esn;
    cfg.replay_window = c->window;
    cfg.udp_encap = c->udp;
    cfg.udp_sport = cfg.udp_dport = 4500;
    int st;
    esp_sa_t *sa = esp_sa_new(&cfg, &st);
    if (sa == NULL) abort();
    return sa;
}

/* AES-CBC + HMAC sealing: fixed IV, plaintext cut to whole blocks, ICV over SPI..ciphertext (|| ESN high 0). */
static size_t seal_cbc(const fuzz_config_t *c, uint32_t spi, uint32_t seq, const uint8_t *pt, size_t pt_len,
                       uint8_t *out)
{
    static const char *digests[] = {"SHA1", "SHA256", "SHA384", "SHA512"};
    static const size_t integ_len[] = {20, 32, 48, 64};
    const char *name = c->key_len == 16 ? "AES-128-CBC" : c->key_len == 24 ? "AES-192-CBC" : "AES-256-CBC";
    pt_len -= pt_len % 16;
    size_t hdr = c->udp ? ESP_UDP_HDR_LEN : 0;
    size_t total = hdr + 8 + 16 + pt_len + c->icv;
    uint8_t *p = out;
    if (c->udp) {
        uint8_t udp[8] = {0x11, 0x94, 0x11, 0x94, (uint8_t)(total >> 8), (uint8_t)total, 0, 0};
        memcpy(p, udp, 8);
        p += 8;
    }
    uint8_t esp[8] = {(uint8_t)(spi >> 24), (uint8_t)(spi >> 16), (uint8_t)(spi >> 8), (uint8_t)spi,
                      (uint8_t)(seq >> 24), (uint8_t)(seq >> 16), (uint8_t)(seq >> 8), (uint8_t)seq};
    memcpy(p, esp, 8);
    for (int i = 0; i < 16; i++) p[8 + i] = (uint8_t)(0xc0 + i);
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, name, NULL);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int l;
    EVP_EncryptInit_ex2(ctx, cipher, keymat, p + 8, NULL);
    EVP_CIPHER_CTX_set_padding(ctx, 0);
    if (pt_len) EVP_EncryptUpdate(ctx, p + 24, &l, pt, (int)pt_len);
    EVP_EncryptFinal_ex(ctx, p + 24 + pt_len, &l);
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(cipher);
    int d = c->alg - ESP_ALG_AES_CBC_HMAC_SHA1;
    EVP_MD *md = EVP_MD_fetch(NULL, digests[d], NULL);
    uint8_t signed_buf[ESP_MAX_PACKET + 4], mac[64];
    size_t signed_len = 24 + pt_len;
    memcpy(signed_buf, p, signed_len);
    if (c->esn) { /* high half 0: what the receiver infers from a fresh window */
        memset(signed_buf + signed_len, 0, 4);
        signed_len += 4;
    }
    unsigned mac_len = 0;
    HMAC(md, keymat + c->key_len, (int)integ_len[d], signed_buf, signed_len, mac, &mac_len);
    memcpy(p + 24 + pt_len, mac, c->icv);
    EVP_MD_free(md);
    return total;
}

/* Seal an arbitrary ESP plaintext the way a peer holding the key would (IV = sequence number). */
static size_t seal(const fuzz_config_t *c, uint32_t spi, uint32_t seq, const uint8_t *pt, size_t pt_len, uint8_t *out)
{
    const char *name = c->alg == ESP_ALG_CHACHA20_POLY1305 ? "ChaCha20-Poly1305"
                       : c->key_len == 16                  ? "AES-128-GCM"
                       : c->key_len == 24                  ? "AES-192-GCM"
                                                           : "AES-256-GCM";
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, name, NULL);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    uint8_t *p = out;
    size_t hdr = c->udp ? ESP_UDP_HDR_LEN : 0;
    size_t total = hdr + 16 + pt_len + c->icv;
    if (c->udp) {
        uint8_t udp[8] = {0x11, 0x94, 0x11, 0x94, (uint8_t)(total >> 8), (uint8_t)total, 0, 0};
        memcpy(p, udp, 8);
        p += 8;
    }
    uint8_t esp[16] = {(uint8_t)(spi >> 24), (uint8_t)(spi >> 16), (uint8_t)(spi >> 8), (uint8_t)spi,
                       (uint8_t)(seq >> 24), (uint8_t)(seq >> 16), (uint8_t)(seq >> 8), (uint8_t)seq,
                       0, 0, 0, 0, (uint8_t)(seq >> 24), (uint8_t)(seq >> 16), (uint8_t)(seq >> 8), (uint8_t)seq};
    memcpy(p, esp, 16);
    uint8_t nonce[12], aad[12];
    memcpy(nonce, keymat + c->key_len, 4);
    memcpy(nonce + 4, esp + 8, 8);
    size_t aad_len = 8;
    memcpy(aad, esp, 4);
    if (c->esn) { /* high half 0: what the receiver infers from a fresh window */
        memset(aad + 4, 0, 4);
        memcpy(aad + 8, esp + 4, 4);
        aad_len = 12;
    } else {
        memcpy(aad + 4, esp + 4, 4);
    }
    int l;
    EVP_EncryptInit_ex2(ctx, cipher, keymat, nonce, NULL);
    EVP_EncryptUpdate(ctx, NULL, &l, aad, (int)aad_len);
    if (pt_len) EVP_EncryptUpdate(ctx, p + 16, &l, pt, (int)pt_len);
    EVP_EncryptFinal_ex(ctx, p + 16 + pt_len, &l);
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, (int)c->icv, p + 16 + pt_len);
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(cipher);
    return total;
}

static void check_wiped(int st, const uint8_t *out, size_t cap)
{
    if (st == ESP_OK) return;
    for (size_t i = 0; i < cap; i++)
        if (out[i] != 0) abort(); /* plaintext left behind after a failure */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (int i = 0; i < FUZZ_KEYMAT_LEN; i++) keymat[i] = (uint8_t)(i * 7 + 3);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > FUZZ_MAX_INPUT) return 0;
    const fuzz_config_t *c = &CONFIGS[(data[0] & 0x7f) % N_CONFIGS];
    uint32_t spi = FUZZ_SPI_BASE + (uint32_t)((data[0] & 0x7f) % N_CONFIGS);
    const uint8_t *pkt = data + 1;
    size_t len = size - 1;
    uint8_t *sealed = NULL;
    if (data[0] & 0x80) {
        if (len < 4 || len > ESP_MAX_PACKET - 64) return 0;
        uint32_t seq = ((uint32_t)pkt[0] << 24) | ((uint32_t)pkt[1] << 16) | ((uint32_t)pkt[2] << 8) | pkt[3];
        sealed = malloc(len + 64);
        len = is_cbc(c->alg) ? seal_cbc(c, spi, seq, pkt + 4, len - 4, sealed) : seal(c, spi, seq, pkt + 4, len - 4, sealed);
        pkt = sealed;
    }
    esp_sa_t *sa = make_sa(c, spi);
    size_t cap = len ? len : 1;
    uint8_t *out = calloc(1, cap); /* exactly sized: ASan catches any write past it */
    size_t out_len = 0;
    int nh = 0;
    int st = esp_decap(sa, pkt, len, out, cap, &out_len, &nh);
    if (st == ESP_OK && out_len > cap) abort();
    check_wiped(st, out, cap);
    memset(out, 0, cap);
    st = esp_decap(sa, pkt, len, out, cap, &out_len, &nh); /* second time: replayed (or still bad) */
    if (st == ESP_OK && c->window != 0) abort();
    check_wiped(st, out, cap);

    /* The same bytes as a two-packet batch through an SA table (fresh SA, so no replay state). */
    esp_sa_t *sa2 = make_sa(c, spi);
    esp_table_entry_t table[1] = {{spi, sa2}};
    uint32_t offs[2] = {0, (uint32_t)(len / 2)}, lens[2] = {(uint32_t)len, (uint32_t)(len - len / 2)};
    uint32_t o_offs[2], o_lens[2];
    uint8_t nhs[2], sts[2];
    size_t bcap = 2 * cap;
    uint8_t *bout = calloc(1, bcap);
    uint64_t drops[ESP_STATUS_COUNT] = {0};
    esp_decap_batch(table, 1, c->udp, pkt, len, offs, lens, 2, bout, bcap, o_offs, o_lens, nhs, sts, drops);
    for (int i = 0; i < 2; i++)
        if (sts[i] == ESP_OK && (size_t)o_offs[i] + o_lens[i] > bcap) abort();
    free(bout);
    esp_sa_free(sa2);
    esp_sa_free(sa);
    free(out);
    free(sealed);
    return 0;
}
