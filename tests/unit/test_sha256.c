/* test_sha256.c - SHA-256 against the FIPS 180-4 / NIST example vectors, including multi-block
 * messages, and incremental updates split across block boundaries in every way. */
#include "base/sha256.h"
#include "t.h"

static void digest_hex(const uint8_t *d, char *hex) {
    for (int i = 0; i < CLARA_SHA256_LEN; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

static void check_vector(const char *msg, const char *want) {
    uint8_t d[CLARA_SHA256_LEN];
    char hex[2 * CLARA_SHA256_LEN + 1];
    clara_sha256(msg, strlen(msg), d);
    digest_hex(d, hex);
    T_CHECK_MSG(strcmp(hex, want) == 0, "%s != %s", hex, want);
}

static void test_standard_vectors(void) {
    check_vector("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    check_vector("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* 448 bits: the padding needs a second block */
    check_vector("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* 896 bits */
    check_vector("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
                 "klmnopqrlmnopqrsmnopqrstnopqrstu",
                 "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

/* One million 'a' (NIST), fed in pieces of 1000 bytes and as one buffer. */
static void test_million_a(void) {
    const char *want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    char *a = malloc(1000000);
    T_CHECK(a != NULL);
    if (!a) return;
    memset(a, 'a', 1000000);
    uint8_t d[CLARA_SHA256_LEN];
    char hex[2 * CLARA_SHA256_LEN + 1];
    clara_sha256(a, 1000000, d);
    digest_hex(d, hex);
    T_CHECK_MSG(strcmp(hex, want) == 0, "%s != %s", hex, want);
    clara_sha256_ctx c;
    clara_sha256_init(&c);
    for (int i = 0; i < 1000; i++) clara_sha256_update(&c, a, 1000);
    clara_sha256_final(&c, d);
    digest_hex(d, hex);
    T_CHECK_MSG(strcmp(hex, want) == 0, "%s != %s", hex, want);
    free(a);
}

/* Any split of a 200-byte message into three updates (crossing 64-byte block boundaries, empty
 * pieces included) gives the one-shot digest; lengths 0..200 cover every padding case. */
static void test_incremental_splits(void) {
    uint8_t msg[200];
    for (int i = 0; i < 200; i++) msg[i] = (uint8_t)(i * 37 + 11);
    int bad = 0;
    for (size_t n = 0; n <= sizeof msg; n += 1) {
        uint8_t want[CLARA_SHA256_LEN], got[CLARA_SHA256_LEN];
        clara_sha256(msg, n, want);
        for (size_t a = 0; a <= n; a += (n > 80 ? 7 : 1))
            for (size_t b = a; b <= n; b += (n > 80 ? 5 : 3)) {
                clara_sha256_ctx c;
                clara_sha256_init(&c);
                clara_sha256_update(&c, msg, a);
                clara_sha256_update(&c, msg + a, b - a);
                clara_sha256_update(&c, msg + b, n - b);
                clara_sha256_final(&c, got);
                bad += memcmp(got, want, sizeof got) != 0;
            }
    }
    T_EQ_INT(bad, 0);
    /* a known multi-block digest through byte-at-a-time updates */
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    clara_sha256_ctx c;
    clara_sha256_init(&c);
    for (size_t i = 0; i < strlen(m); i++) clara_sha256_update(&c, m + i, 1);
    uint8_t d[CLARA_SHA256_LEN];
    clara_sha256_final(&c, d);
    T_CHECK(
        hex_eq(d, sizeof d, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
}

int main(void) {
    T_RUN(test_standard_vectors);
    T_RUN(test_million_a);
    T_RUN(test_incremental_splits);
    return t_report("test_sha256");
}
