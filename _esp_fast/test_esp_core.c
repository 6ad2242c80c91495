/* The C core's own tests: run under -fsanitize=address,undefined by scripts/test-esp-core.sh.
 * Published vectors (draft-mcgrew-gcm-test-01 section 4 test case #2; RFC 7634 Appendix A; RFC 3602 section 4
 * case #5 with an HMAC-SHA-256-128 ICV appended, since the RFC's ESP cases carry none), round trips
 * over every algorithm/mode/ESN/UDP combination, every single-bit flip, truncations, the replay window
 * edges and the ESN inference cases of RFC 4303 Appendix A. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "esp_core.h"
#include "test_check.h"


static size_t unhex(const char *s, uint8_t *out)
{
    size_t n = 0;
    while (s[0] && s[1]) {
        unsigned v;
        sscanf(s, "%2x", &v);
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static esp_sa_t *make_sa(int alg, const uint8_t *keymat, size_t key_len, unsigned icv, int outbound, int tunnel,
                         int esn, uint32_t window, int udp, uint32_t spi)
{
    esp_sa_config_t c;
    memset(&c, 0, sizeof(c));
    c.spi = spi;
    c.alg = alg;
    c.key = keymat;
    c.key_len = key_len;
    c.salt = keymat + key_len;
    if (alg >= ESP_ALG_AES_CBC_HMAC_SHA1) { /* KEYMAT: cipher key || HMAC key (RFC 7296 2.17) */
        static const size_t integ_len[] = {20, 32, 48, 64};
        c.salt = NULL;
        c.integ_key = keymat + key_len;
        c.integ_key_len = integ_len[alg - ESP_ALG_AES_CBC_HMAC_SHA1];
    }
    c.icv_len = icv;
    c.outbound = outbound;
    c.tunnel = tunnel;
    c.esn = esn;
    c.replay_window = window;
    c.udp_encap = udp;
    c.udp_sport = 4500;
    c.udp_dport = 4500;
    int st;
    esp_sa_t *sa = esp_sa_new(&c, &st);
    CHECK(sa != NULL && st == ESP_OK);
    return sa;
}

static void test_draft_mcgrew_case2(void)
{
    /* draft-mcgrew-gcm-test-01 section 4, test case #2: AES-128-GCM, SPI 0xa5f8, seq 10. */
    uint8_t key[20], pkt[256], plain[128], out[256];
    unhex("feffe9928665731c6d6a8f9467308308cafebabe", key);
    size_t n = unhex("0000a5f80000000afacedbaddecaf888"
                     "deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c3de81827c10e9a4f51330d0eec416642"
                     "cfbb85a5b47e48a4ec3b9ba95d918bd1" "83b70d3aa8bc6ee4c309e9d85a41ad4a", pkt);
    size_t pn = unhex("4500003e698f000080114dccc0a80102c0a801010a980035002a2343b2d00100000100000000000003736970"
                      "0963796265726369747902646b00000100010001", plain);
    esp_sa_t *sa = make_sa(ESP_ALG_AES_GCM, key, 16, 16, 0, 0, 0, 64, 0, 0xa5f8);
    size_t len = 0;
    int nh = -1;
    CHECK(esp_decap(sa, pkt, n, out, sizeof(out), &len, &nh) == ESP_OK);
    CHECK(nh == 1 && len == pn - 2 && memcmp(out, plain, len) == 0);
    CHECK(esp_decap(sa, pkt, n, out, sizeof(out), &len, &nh) == ESP_ERR_REPLAY);
    esp_sa_free(sa);
}

static void test_rfc7634_appendix_a(void)
{
    uint8_t key[36], pkt[256], plain[128], out[256];
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)(0x80 + i);
    unhex("a0a1a2a3", key + 32);
    size_t n = unhex("01020304000000051011121314151617"
                     "24039428b97f417e3c13753a4f05087b67c352e6a7fab1b982d466ef407ae5c614ee8099"
                     "d52844eb61aa95dfab4c02f72aa71e7c4c4f64c9befe2facc638e8f3cbec163fac469b50"
                     "2773f6fb94e664da9165b82829f641e076aaa8266b7fb0f7b11b369907e1ad43", pkt);
    size_t pn = unhex("45000054a6f200004001e778c6336405c000020508005b7a3a080000553bec1000073627"
                      "08090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b"
                      "2c2d2e2f3031323334353637", plain);
    esp_sa_t *sa = make_sa(ESP_ALG_CHACHA20_POLY1305, key, 32, 16, 0, 1, 0, 1024, 0, 0x01020304);
    size_t len = 0;
    int nh = -1;
    CHECK(esp_decap(sa, pkt, n, out, sizeof(out), &len, &nh) == ESP_OK);
    CHECK(nh == 4 && len == pn && memcmp(out, plain, pn) == 0);
    esp_sa_free(sa);
}

static void test_rfc3602_case5(void)
{
    /* RFC 3602 section 4 case #5 (AES-128-CBC, SPI 0x4321, seq 1, ICMP payload, next header 1). */
    uint8_t keymat[48], pkt[256], plain[128], out[256];
    unhex("90d382b410eeba7ad938c46cec1a82bf", keymat);
    for (int i = 0; i < 32; i++) keymat[16 + i] = (uint8_t)(0x40 + i);
    size_t n = unhex("0000432100000001e96e8c08ab465763fd098d45dd3ff893f663c25d325c18c6a9453e194e120849"
                     "a4870b66cc6b9965330013b4898dc856a4699e523a55db080b59ec3a8e4b7e52775b07d1db34ed9c"
                     "538ab50c551b874aa269add047ad2d5913ac19b7cfbad4a6", pkt);
    size_t pn = unhex("08000ebda70a00008e9c083db95b070008090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                      "202122232425262728292a2b2c2d2e2f3031323334353637", plain);
    uint8_t mac[32];
    unsigned mac_len = 0;
    HMAC(EVP_sha256(), keymat + 16, 32, pkt, n, mac, &mac_len);
    CHECK(mac_len == 32);
    memcpy(pkt + n, mac, 16); /* HMAC-SHA-256-128: the leftmost 128 bits */
    esp_sa_t *sa = make_sa(ESP_ALG_AES_CBC_HMAC_SHA256, keymat, 16, 16, 0, 0, 0, 64, 0, 0x4321);
    size_t len = 0;
    int nh = -1;
    memset(out, 0xaa, sizeof(out));
    pkt[n + 15] ^= 1;
    CHECK(esp_decap(sa, pkt, n + 16, out, sizeof(out), &len, &nh) == ESP_ERR_AUTH);
    for (size_t i = 0; i < sizeof(out); i++) CHECK(out[i] == 0xaa); /* nothing decrypted before the ICV */
    pkt[n + 15] ^= 1;
    CHECK(esp_decap(sa, pkt, n + 15, out, sizeof(out), &len, &nh) == ESP_ERR_MALFORMED); /* not whole blocks */
    CHECK(esp_decap(sa, pkt, n + 16, out, sizeof(out), &len, &nh) == ESP_OK);
    CHECK(nh == 1 && len == pn && memcmp(out, plain, pn) == 0);
    CHECK(esp_decap(sa, pkt, n + 16, out, sizeof(out), &len, &nh) == ESP_ERR_REPLAY);
    esp_sa_free(sa);

    /* The HMAC key length and the ICV length are fixed by the algorithm. */
    esp_sa_config_t c;
    memset(&c, 0, sizeof(c));
    c.spi = 0x4321;
    c.alg = ESP_ALG_AES_CBC_HMAC_SHA256;
    c.key = keymat;
    c.key_len = 16;
    c.icv_len = 16;
    c.integ_key = keymat + 16;
    c.integ_key_len = 31;
    int st = 0;
    CHECK(esp_sa_new(&c, &st) == NULL && st == ESP_ERR_INVALID);
    c.integ_key_len = 32;
    c.icv_len = 12;
    CHECK(esp_sa_new(&c, &st) == NULL && st == ESP_ERR_INVALID);
    c.icv_len = 16;
    c.key_len = 20;
    CHECK(esp_sa_new(&c, &st) == NULL && st == ESP_ERR_INVALID);
}

static void test_round_trips_and_bit_flips(void)
{
    static const struct { int alg; size_t key_len; unsigned icv; } algs[] = {
        {ESP_ALG_AES_GCM, 16, 16}, {ESP_ALG_AES_GCM, 24, 12}, {ESP_ALG_AES_GCM, 32, 8},
        {ESP_ALG_CHACHA20_POLY1305, 32, 16},
        {ESP_ALG_AES_CBC_HMAC_SHA1, 16, 12}, {ESP_ALG_AES_CBC_HMAC_SHA256, 32, 16},
        {ESP_ALG_AES_CBC_HMAC_SHA384, 24, 24}, {ESP_ALG_AES_CBC_HMAC_SHA512, 32, 32},
    };
    uint8_t keymat[96], inner[300], pkt[1024], out[1024];
    for (int i = 0; i < 96; i++) keymat[i] = (uint8_t)(i * 13 + 5);
    memset(inner, 0x5a, sizeof(inner));
    inner[0] = 0x45;
    inner[2] = 0x01; inner[3] = 0x2c; /* IPv4 total length 300 */
    for (size_t a = 0; a < sizeof(algs) / sizeof(algs[0]); a++) {
        for (int mode = 0; mode < 8; mode++) {
            int tunnel = mode & 1, esn = (mode >> 1) & 1, udp = (mode >> 2) & 1;
            esp_sa_t *o = make_sa(algs[a].alg, keymat, algs[a].key_len, algs[a].icv, 1, tunnel, esn, 0, udp, 0x1234);
            esp_sa_t *in = make_sa(algs[a].alg, keymat, algs[a].key_len, algs[a].icv, 0, tunnel, esn, 128, udp, 0x1234);
            size_t len = 0, olen = 0;
            int nh = 0;
            CHECK(esp_encap(o, 17, inner, sizeof(inner), tunnel ? 37 : 0, pkt, sizeof(pkt), &len) == ESP_OK);
            CHECK(len == esp_encap_size(o, sizeof(inner), tunnel ? 37 : 0));
            size_t hdr = udp ? ESP_UDP_HDR_LEN : 0;
            for (size_t bit = 0; bit < len * 8; bit++) {
                size_t byte = bit / 8;
                /* RFC 3948: UDP ports and checksum are not protected (NATs rewrite them) */
                if (udp && (byte < 4 || byte == 6 || byte == 7)) continue;
                pkt[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                memset(out, 0xaa, sizeof(out));
                int st = esp_decap(in, pkt, len, out, sizeof(out), &olen, &nh);
                CHECK(st != ESP_OK);
                if (bit / 8 >= hdr + 8) CHECK(st == ESP_ERR_AUTH);
                for (size_t i = 0; i < sizeof(out); i++) CHECK(out[i] == 0xaa || out[i] == 0);
                pkt[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            }
            for (size_t cut = 0; cut < len; cut += 7)
                CHECK(esp_decap(in, pkt, cut, out, sizeof(out), &olen, &nh) != ESP_OK);
            CHECK(esp_decap(in, pkt, len, out, 10, &olen, &nh) == ESP_ERR_BUFFER);
            CHECK(esp_decap(in, pkt, len, out, sizeof(out), &olen, &nh) == ESP_OK);
            CHECK(olen == sizeof(inner) && memcmp(out, inner, olen) == 0);
            CHECK(nh == (tunnel ? 4 : 17));
            CHECK(esp_decap(in, pkt, len, out, sizeof(out), &olen, &nh) == ESP_ERR_REPLAY);
            CHECK(esp_decap(o, pkt, len, out, sizeof(out), &olen, &nh) == ESP_ERR_INVALID);
            esp_stats_t s;
            esp_sa_stats(in, &s);
            CHECK(s.packets == 1 && s.bytes == sizeof(inner) && s.drops[ESP_ERR_REPLAY] == 1);
            esp_sa_free(o);
            esp_sa_free(in);
        }
    }
}

static void test_sequence_overflow(void)
{
    uint8_t keymat[20] = {1}, inner[20] = {0x45}, pkt[128];
    size_t len;
    for (int esn = 0; esn < 2; esn++) {
        esp_sa_t *o = make_sa(ESP_ALG_AES_GCM, keymat, 16, 16, 1, 0, esn, 0, 0, 0x999);
        uint64_t top = esn ? UINT64_MAX : UINT32_MAX;
        CHECK(esp_sa_advance(o, top) == ESP_OK);
        CHECK(esp_sa_advance(o, top - 1) == ESP_ERR_INVALID);
        CHECK(esp_encap(o, 6, inner, sizeof(inner), 0, pkt, sizeof(pkt), &len) == ESP_OK);
        CHECK(esp_encap(o, 6, inner, sizeof(inner), 0, pkt, sizeof(pkt), &len) == ESP_ERR_SEQ_OVERFLOW);
        esp_sa_free(o);
    }
}

static void test_replay_window(void)
{
    esp_replay_t w;
    CHECK(esp_replay_init(&w, 64) == ESP_OK);
    CHECK(esp_replay_check(&w, 0) == ESP_ERR_WINDOW);
    for (uint64_t s = 1; s <= 200; s += 2) esp_replay_update(&w, s);
    CHECK(w.last == 199);
    CHECK(esp_replay_check(&w, 199) == ESP_ERR_REPLAY);
    CHECK(esp_replay_check(&w, 198) == ESP_OK);
    CHECK(esp_replay_check(&w, 136) == ESP_OK);       /* 199 - 63 */
    CHECK(esp_replay_check(&w, 135) == ESP_ERR_WINDOW); /* one left of the window */
    CHECK(esp_replay_check(&w, 137) == ESP_ERR_REPLAY);
    esp_replay_update(&w, 100000);                      /* a jump clears the whole ring */
    CHECK(esp_replay_check(&w, 99999) == ESP_OK && esp_replay_check(&w, 100000) == ESP_ERR_REPLAY);
    esp_replay_free(&w);
    CHECK(esp_replay_init(&w, ESP_MAX_REPLAY_WINDOW + 1) == ESP_ERR_INVALID);
}

static void test_esn_inference(void)
{
    uint64_t s = 0;
    const uint64_t b = (uint64_t)1 << 32;
    CHECK(esp_infer_seq(b - 10, 64, 5, &s) == 0 && s == b + 5);              /* case A, wrapped */
    CHECK(esp_infer_seq(b - 10, 64, 0xffffffecu, &s) == 0 && s == b - 20);   /* case A */
    CHECK(esp_infer_seq(b + 10, 64, 0xffffffecu, &s) == 0 && s == b - 20);   /* case B, previous */
    CHECK(esp_infer_seq(b + 10, 64, 20, &s) == 0 && s == b + 20);            /* case B */
    CHECK(esp_infer_seq(5, 64, 0xfffffffdu, &s) == -1);                     /* below zero */
    CHECK(esp_infer_seq(UINT64_MAX - 1, 64, 0xffffffffu, &s) == 0 && s == UINT64_MAX);
    CHECK(esp_infer_seq(UINT64_MAX, 64, 5, &s) == -1);                      /* beyond 2^64 */
}

static void test_udp_classify(void)
{
    uint8_t ka[1] = {0xff}, ike[8] = {0, 0, 0, 0, 1}, esp[8] = {0, 0, 1, 0};
    CHECK(esp_udp_classify(ka, 1) == ESP_UDP_KEEPALIVE);
    CHECK(esp_udp_classify(ike, 8) == ESP_UDP_IKE);
    CHECK(esp_udp_classify(esp, 8) == ESP_UDP_ESP);
    CHECK(esp_udp_classify(esp, 3) == ESP_UDP_INVALID);
}

/* ---- the never-waiting `_try` entry points ---- */

#define BUSY_BATCH 4096  /* packets of the batch that holds the SA while the main thread tries it */
#define BUSY_ROUNDS 50   /* batches tried at most until one was seen busy (bounds the test) */
#define BUSY_INNER 200

typedef struct {
    esp_sa_t *sa;
    int decap;              /* 0: encap batch, 1: decap batch of one frame repeated */
    uint8_t *in, *out;
    size_t in_len, out_cap;
    uint32_t offs[BUSY_BATCH], lens[BUSY_BATCH], out_offs[BUSY_BATCH], out_lens[BUSY_BATCH];
    uint8_t status[BUSY_BATCH], nhs[BUSY_BATCH];
    size_t ok;
    int started, done;      /* atomics: set around the batch */
} busy_t;

static void *busy_run(void *arg)
{
    busy_t *b = arg;
    esp_table_entry_t table = {0x2468, b->sa};
    __atomic_store_n(&b->started, 1, __ATOMIC_RELEASE);
    if (b->decap)
        b->ok = esp_decap_batch(&table, 1, 0, b->in, b->in_len, b->offs, b->lens, BUSY_BATCH, b->out, b->out_cap,
                                b->out_offs, b->out_lens, b->nhs, b->status, NULL);
    else
        b->ok = esp_encap_batch(b->sa, 17, b->in, b->in_len, b->offs, b->lens, BUSY_BATCH, b->out, b->out_cap,
                                b->out_offs, b->out_lens, b->status);
    __atomic_store_n(&b->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_try_entry_points(void)
{
    uint8_t keymat[20], inner[BUSY_INNER], pkt[512], out[512];
    for (int i = 0; i < 20; i++) keymat[i] = (uint8_t)(i + 1);
    memset(inner, 0x33, sizeof(inner));
    esp_sa_t *o = make_sa(ESP_ALG_AES_GCM, keymat, 16, 16, 1, 0, 0, 0, 0, 0x2468);
    esp_sa_t *in = make_sa(ESP_ALG_AES_GCM, keymat, 16, 16, 0, 0, 0, 0, 0, 0x2468); /* anti-replay off */
    size_t len = 0, olen = 0;
    int nh = 0;
    esp_stats_t s, t;

    /* Free SA: a `_try` call is its blocking twin. */
    CHECK(esp_encap_try(o, 17, inner, sizeof(inner), 0, pkt, sizeof(pkt), &len) == ESP_OK);
    CHECK(esp_decap_try(in, pkt, len, out, sizeof(out), &olen, &nh) == ESP_OK);
    CHECK(nh == 17 && olen == sizeof(inner) && memcmp(out, inner, olen) == 0);
    CHECK(esp_encap_try(o, 17, inner, sizeof(inner), 0, pkt, 10, &len) == ESP_ERR_BUFFER); /* counted */
    CHECK(esp_sa_stats_try(o, &s) == ESP_OK);
    esp_sa_stats(o, &t);
    CHECK(memcmp(&s, &t, sizeof(s)) == 0 && s.packets == 1 && s.drops[ESP_ERR_BUFFER] == 1);
    CHECK(esp_sa_lifetime_state_try(o) == ESP_LIFETIME_OK && esp_sa_lifetime_state(o) == ESP_LIFETIME_OK);

    /* Held SA: ESP_BUSY, and nothing done or counted (no sequence number used, no drop counted). */
    for (int dir = 0; dir < 2; dir++) {
        esp_sa_t *sa = dir ? in : o;
        busy_t *b = calloc(1, sizeof(*b));
        CHECK(b != NULL);
        if (b == NULL) return;
        b->sa = sa;
        b->decap = dir;
        b->in = dir ? pkt : inner;
        b->in_len = dir ? len : sizeof(inner);
        b->out_cap = (size_t)BUSY_BATCH * 256;
        b->out = malloc(b->out_cap);
        CHECK(b->out != NULL);
        for (size_t i = 0; i < BUSY_BATCH; i++) b->lens[i] = (uint32_t)b->in_len; /* offsets 0: one input */
        esp_sa_stats(sa, &s);
        uint64_t before = s.packets, busy_ok = 0, try_ok = 0, busy = 0;
        for (int round = 0; round < BUSY_ROUNDS && busy == 0 && b->out != NULL; round++) {
            pthread_t th;
            b->started = b->done = 0;
            CHECK(pthread_create(&th, NULL, busy_run, b) == 0);
            while (!__atomic_load_n(&b->started, __ATOMIC_ACQUIRE)) {
            }
            while (!__atomic_load_n(&b->done, __ATOMIC_ACQUIRE)) {
                int st = dir ? esp_decap_try(sa, pkt, len, out, sizeof(out), &olen, &nh)
                             : esp_encap_try(sa, 17, inner, sizeof(inner), 0, out, sizeof(out), &olen);
                if (st == ESP_BUSY) {
                    busy++;
                    CHECK(esp_sa_stats_try(sa, &t) == ESP_BUSY || t.packets >= before);
                    int lt = esp_sa_lifetime_state_try(sa);
                    CHECK(lt == ESP_BUSY || lt == ESP_LIFETIME_OK);
                } else {
                    CHECK(st == ESP_OK);
                    try_ok += st == ESP_OK;
                }
            }
            pthread_join(th, NULL);
            CHECK(b->ok == BUSY_BATCH);
            busy_ok += b->ok;
        }
        CHECK(busy > 0); /* the batch was seen holding the SA */
        esp_sa_stats(sa, &s);
        CHECK(s.packets == before + busy_ok + try_ok);
        for (int i = 1; i < ESP_STATUS_COUNT; i++) CHECK(s.drops[i] == (!dir && i == ESP_ERR_BUFFER ? 1u : 0u));
        if (!dir) CHECK(esp_sa_next_seq(o) == s.packets + 1); /* a busy try reserved no sequence number */
        free(b->out);
        free(b);
    }
    esp_sa_free(o);
    esp_sa_free(in);
}

int main(void)
{
    test_draft_mcgrew_case2();
    test_rfc7634_appendix_a();
    test_rfc3602_case5();
    test_round_trips_and_bit_flips();
    test_sequence_overflow();
    test_replay_window();
    test_esn_inference();
    test_udp_classify();
    test_try_entry_points();
    if (failures) {
        fprintf(stderr, "test_esp_core: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_esp_core: all tests passed\n");
    return 0;
}
