/* test_zip.c - the ZIP reader against archives whose contents Python's zipfile module reported
 * (tests/unit/data/expected.json): a hand-built all-ZIP64 archive with torch-style local padding,
 * a plain archive with a 300-byte comment; plus corrupted copies that must each be rejected with
 * a message naming the problem. */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdlib.h>

#include "base/mapfile.h"
#include "base/status.h"
#include "convert/zip.h"
#include "t.h"

#define DATA "tests/unit/data/"

static cJSON *g_expected;

/* A private, writable copy of a data file. */
static uint8_t *load(const char *file, size_t *len) {
    clara_mapped m;
    if (clara_map_file(file, &m) != CLARA_OK) return NULL;
    uint8_t *p = malloc(m.size);
    memcpy(p, m.data, m.size);
    *len = m.size;
    clara_unmap_file(&m);
    return p;
}

/* Offset of the nth (0-based) occurrence of the 4-byte little-endian signature. */
static size_t find_sig(const uint8_t *p, size_t len, uint32_t sig, int nth) {
    for (size_t i = 0; i + 4 <= len; i++) {
        uint32_t v = p[i] | p[i + 1] << 8 | p[i + 2] << 16 | (uint32_t)p[i + 3] << 24;
        if (v == sig && nth-- == 0) return i;
    }
    return (size_t)-1;
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void check_against_python(const char *file) {
    size_t len;
    char path[256];
    snprintf(path, sizeof path, DATA "%s", file);
    uint8_t *buf = load(path, &len);
    zip_archive *z = NULL;
    T_EQ_INT(zip_parse(buf, len, file, &z), CLARA_OK);
    if (!z) {
        free(buf);
        return;
    }
    const cJSON *exp = cJSON_GetObjectItem(g_expected, file);
    T_EQ_INT(zip_n_entries(z), cJSON_GetArraySize(exp));
    size_t i = 0;
    for (const cJSON *e = exp->child; e; e = e->next, i++) {
        const zip_entry *ze = zip_entry_at(z, i);
        T_EQ_STR(ze->name, cJSON_GetObjectItem(e, "name")->valuestring);
        T_EQ_INT(ze->size, cJSON_GetObjectItem(e, "size")->valueint);
        T_EQ_INT(ze->crc32, (uint32_t)cJSON_GetObjectItem(e, "crc")->valuedouble);
        T_CHECK(hex_eq(ze->data, ze->size, cJSON_GetObjectItem(e, "hex")->valuestring));
        T_EQ_INT(zip_entry_check_crc(z, ze), CLARA_OK);
        T_CHECK(zip_find(z, ze->name) == ze);
    }
    T_CHECK(zip_find(z, "archive/nothing") == NULL);
    zip_free(z);
    free(buf);
}

static void test_valid(void) {
    check_against_python("zip64.zip");
    check_against_python("comment.zip");
    /* torch aligns data to 64 bytes with local-only padding; zip64.zip imitates that */
    size_t len;
    uint8_t *buf = load(DATA "zip64.zip", &len);
    zip_archive *z = NULL;
    if (zip_parse(buf, len, "zip64.zip", &z) == CLARA_OK)
        for (size_t i = 0; i < zip_n_entries(z); i++)
            T_EQ_INT(zip_entry_at(z, i)->data_offset % 64, 0);
    zip_free(z);
    free(buf);
}

static void test_crc32(void) {
    T_EQ_INT(zip_crc32(0, "123456789", 9), 0xCBF43926u); /* the standard check value */
    T_EQ_INT(zip_crc32(0, "", 0), 0);
    T_EQ_INT(zip_crc32(zip_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u);
}

static void test_truncations(void) {
    size_t len;
    uint8_t *buf = load(DATA "zip64.zip", &len);
    int accepted = 0;
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        zip_archive *z = NULL;
        if (zip_parse(copy, n, "cut.zip", &z) == CLARA_OK) accepted++;
        zip_free(z);
        free(copy);
    }
    T_EQ_INT(accepted, 0);
    T_CHECK(zip_parse(buf, len - 1, "cut.zip", &(zip_archive *){NULL}) != CLARA_OK);
    T_CHECK(err_has("cut.zip: no ZIP end of central directory record"));
    free(buf);
}

/* Applies `patch` to a fresh copy of comment.zip and expects zip_parse to fail with `msg`. */
static void expect_bad(const char *file, void (*patch)(uint8_t *, size_t), const char *msg) {
    size_t len;
    char path[256];
    snprintf(path, sizeof path, DATA "%s", file);
    uint8_t *buf = load(path, &len);
    if (!buf) {
        T_CHECK(0);
        return;
    }
    if (patch) patch(buf, len);
    zip_archive *z = NULL;
    T_CHECK(zip_parse(buf, len, file, &z) != CLARA_OK && z == NULL);
    T_CHECK(err_has(msg));
    zip_free(z);
    free(buf);
}

/* central header field offsets: flags 8, csize 20, usize 24, local header offset 42 */
static void p_encrypted(uint8_t *b, size_t n) {
    b[find_sig(b, n, 0x02014b50u, 0) + 8] |= 1;
}
static void p_past_end(uint8_t *b, size_t n) {
    size_t c = find_sig(b, n, 0x02014b50u, 1); /* archive/data/0, 200 bytes */
    put32(b + c + 20, 1u << 20);
    put32(b + c + 24, 1u << 20);
}
static void p_overlap(uint8_t *b, size_t n) {
    size_t c = find_sig(b, n, 0x02014b50u, 0); /* data.pkl runs into the next local header */
    put32(b + c + 20, 40);
    put32(b + c + 24, 40);
}
static void p_count(uint8_t *b, size_t n) {
    size_t e = find_sig(b, n, 0x06054b50u, 0);
    b[e + 8] = b[e + 10] = 0xff; /* 255 entries in a small directory */
}
static void p_local_sig(uint8_t *b, size_t n) {
    (void)n;
    b[0] = 'X'; /* first local header signature */
}
static void p_zip64_offset(uint8_t *b, size_t n) {
    size_t l = find_sig(b, n, 0x07064b50u, 0);
    b[l + 8] ^= 0x40; /* ZIP64 EOCD record offset now points elsewhere */
}

static void test_bad(void) {
    expect_bad("bad_deflated.zip", NULL,
               "bad_deflated.zip: entry 'archive/data.pkl' is compressed (method 8); only stored "
               "entries are supported");
    expect_bad("bad_duplicate.zip", NULL, "duplicate entry 'a'");
    expect_bad("comment.zip", p_encrypted, "entry 'archive/data.pkl' is encrypted");
    expect_bad("comment.zip", p_past_end, "entry 'archive/data/0': 1048576 bytes of data at");
    expect_bad("comment.zip", p_overlap, "entry 'archive/data.pkl' overlaps the next entry");
    expect_bad("comment.zip", p_count, "implausible entry count 255");
    expect_bad("comment.zip", p_local_sig, "entry 'archive/data.pkl': bad local header");
    expect_bad("zip64.zip", p_zip64_offset, "ZIP64 end of central directory");
    uint8_t junk[100] = {0};
    T_CHECK(zip_parse(junk, sizeof junk, "junk.zip", &(zip_archive *){NULL}) != CLARA_OK);
    T_CHECK(err_has("junk.zip: no ZIP end of central directory record"));

    /* a flipped data byte parses but fails the CRC check */
    size_t len;
    uint8_t *buf = load(DATA "comment.zip", &len);
    zip_archive *z = NULL;
    T_EQ_INT(zip_parse(buf, len, "comment.zip", &z), CLARA_OK);
    if (z) {
        const zip_entry *e = zip_find(z, "archive/data/0");
        buf[e->data_offset + 17] ^= 1;
        T_EQ_INT(zip_entry_check_crc(z, e), CLARA_ERR_FORMAT);
        T_CHECK(err_has("comment.zip: entry 'archive/data/0': CRC-32 mismatch"));
        zip_free(z);
    }
    free(buf);
}

int main(void) {
    char *text = NULL;
    size_t len;
    if (clara_read_file(DATA "expected.json", 1 << 20, &text, &len) != CLARA_OK ||
        !(g_expected = cJSON_Parse(text))) {
        fprintf(stderr, "cannot load %sexpected.json: %s\n", DATA, clara_last_error());
        return 1;
    }
    free(text);
    T_RUN(test_crc32);
    T_RUN(test_valid);
    T_RUN(test_truncations);
    T_RUN(test_bad);
    cJSON_Delete(g_expected);
    return t_report("zip");
}
