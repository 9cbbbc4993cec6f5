/* test_gguf.c - GGUF reader and writer. The independent truth is a tiny file assembled byte by
 * byte below from the public GGUF layout (not with the writer): the reader must parse it to the
 * exact values and the writer must reproduce it byte for byte. Then round trips of every value
 * type, tensors with a non-default alignment, a file written to disk in chunks, and malformed
 * files that must each fail with a specific message (never crash: run this under ASan).
 *
 * With GGUF_WRITE_SEEDS=<dir> it also writes the fuzz seed corpus (tests/fuzz/corpus/gguf). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/status.h"
#include "dtype.h"
#include "gguf.h"
#include "t.h"

/* little-endian byte lists */
/* T_EQ_STR on arrays trips -Waddress: go through pointers */
#define EQ_BUF(a, b)                                                                               \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        T_EQ_STR(a_, b_);                                                                          \
    } while (0)

#define U16(x) (uint8_t)((x)&0xff), (uint8_t)(((x) >> 8) & 0xff)
#define U32(x) U16((x)&0xffff), U16(((x) >> 16) & 0xffff)
#define U64(x) U32((uint64_t)(x)&0xffffffffu), U32(((uint64_t)(x) >> 32) & 0xffffffffu)

/* Offsets (hand-summed): header 24; KVs end at 207; tensor infos end at 283; 5 bytes of padding
 * put the data section at 288; t0 (3 x f32 = 12 bytes) + 20 padding; t1 (4 x f16 = 8 bytes) +
 * 24 padding; 352 bytes in all. */
static const uint8_t k_tiny[] = {
    'G', 'G', 'U', 'F', U32(3), U64(2), U64(6),
    /* general.architecture: str "llama" */
    U64(20), 'g', 'e', 'n', 'e', 'r', 'a', 'l', '.', 'a', 'r', 'c', 'h', 'i', 't', 'e', 'c', 't',
    'u', 'r', 'e', U32(8), U64(5), 'l', 'l', 'a', 'm', 'a',
    /* a.u32: u32 0x01020304 */
    U64(5), 'a', '.', 'u', '3', '2', U32(4), U32(0x01020304),
    /* a.arr: array of i16 {-1, 2} */
    U64(5), 'a', '.', 'a', 'r', 'r', U32(9), U32(3), U64(2), U16(0xffff), U16(2),
    /* a.strs: array of str {"x", "yz"} */
    U64(6), 'a', '.', 's', 't', 'r', 's', U32(9), U32(8), U64(2), U64(1), 'x', U64(2), 'y', 'z',
    /* a.b: bool true */
    U64(3), 'a', '.', 'b', U32(7), 1,
    /* a.f: f32 1.5 */
    U64(3), 'a', '.', 'f', U32(6), U32(0x3fc00000),
    /* t0: f32 [3] at 0 */
    U64(2), 't', '0', U32(1), U64(3), U32(0), U64(0),
    /* t1: f16 [2, 2] at 32 */
    U64(2), 't', '1', U32(2), U64(2), U64(2), U32(1), U64(32),
    /* padding to 288 */
    0, 0, 0, 0, 0,
    /* t0 data: 1.0, -2.0, 0.5 then 20 bytes of padding */
    U32(0x3f800000), U32(0xc0000000), U32(0x3f000000), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0,
    /* t1 data: f16 1.0, 2.0, -1.0, 0.5 then 24 bytes of padding */
    U16(0x3c00), U16(0x4000), U16(0xbc00), U16(0x3800), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0};

static void check_tiny(const gguf_ctx *g) {
    T_EQ_INT(gguf_n_kv(g), 6);
    T_EQ_INT(gguf_n_tensors(g), 2);
    T_EQ_INT(gguf_alignment(g), 32);
    T_EQ_INT(gguf_data_offset(g), 288);
    T_EQ_STR(gguf_kv_key(g, 0), "general.architecture");
    T_EQ_STR(gguf_kv_key(g, 5), "a.f");
    T_EQ_INT(gguf_kv_type(g, 2), GGUF_VT_ARR);
    const char *s = NULL;
    T_EQ_INT(gguf_get_str(g, "general.architecture", &s), CLARA_OK);
    T_EQ_STR(s, "llama");
    uint64_t u = 0;
    T_EQ_INT(gguf_get_uint(g, "a.u32", &u), CLARA_OK);
    T_EQ_INT(u, 0x01020304);
    gguf_vtype et;
    uint64_t n = 0;
    const void *p;
    T_EQ_INT(gguf_get_arr_data(g, "a.arr", GGUF_VT_I16, &p, &n), CLARA_OK);
    T_EQ_INT(n, 2);
    int16_t v[2];
    memcpy(v, p, 4);
    T_EQ_INT(v[0], -1);
    T_EQ_INT(v[1], 2);
    T_EQ_INT(gguf_get_arr(g, "a.strs", &et, &n), CLARA_OK);
    T_EQ_INT(et, GGUF_VT_STR);
    T_EQ_INT(n, 2);
    T_EQ_STR(gguf_get_arr_str(g, "a.strs", 0), "x");
    T_EQ_STR(gguf_get_arr_str(g, "a.strs", 1), "yz");
    T_CHECK(gguf_get_arr_str(g, "a.strs", 2) == NULL);
    T_CHECK(gguf_get_arr_str(g, "a.arr", 0) == NULL);
    bool b = false;
    T_EQ_INT(gguf_get_bool(g, "a.b", &b), CLARA_OK);
    T_CHECK(b);
    float f = 0;
    T_EQ_INT(gguf_get_f32(g, "a.f", &f), CLARA_OK);
    T_NEAR(f, 1.5, 0);
    const gguf_tensor *t0 = gguf_find_tensor(g, "t0"), *t1 = gguf_find_tensor(g, "t1");
    T_CHECK(t0 && t1 && t0 == gguf_tensor_at(g, 0) && t1 == gguf_tensor_at(g, 1));
    if (!t0 || !t1) return;
    T_EQ_INT(t0->type, CLARA_TYPE_F32);
    T_EQ_INT(t0->n_dims, 1);
    T_EQ_INT(t0->ne[0], 3);
    T_EQ_INT(t0->ne[1], 1);
    T_EQ_INT(t0->nbytes, 12);
    T_EQ_INT(t0->offset, 0);
    T_EQ_INT(t1->type, CLARA_TYPE_F16);
    T_EQ_INT(t1->n_dims, 2);
    T_EQ_INT(t1->ne[0] * 10 + t1->ne[1], 22);
    T_EQ_INT(t1->offset, 32);
    T_EQ_INT(t1->nbytes, 8);
    T_EQ_INT(t0->data - gguf_file_data(g), 288);
    T_EQ_INT(t1->data - gguf_file_data(g), 320);
    float x[3];
    memcpy(x, t0->data, 12);
    T_CHECK(x[0] == 1.0f && x[1] == -2.0f && x[2] == 0.5f);
    uint16_t h[4];
    memcpy(h, t1->data, 8);
    T_CHECK(h[0] == 0x3c00 && h[1] == 0x4000 && h[2] == 0xbc00 && h[3] == 0x3800);
    T_CHECK(gguf_find_tensor(g, "t2") == NULL);
    T_EQ_INT(gguf_find_key(g, "a.b"), 4);
    T_EQ_INT(gguf_find_key(g, "a.c"), -1);
}

static void test_tiny_read(void) {
    T_EQ_INT(sizeof k_tiny, 352);
    gguf_ctx *g = NULL;
    T_EQ_INT(gguf_parse(k_tiny, sizeof k_tiny, "tiny.gguf", &g), CLARA_OK);
    if (!g) return;
    T_EQ_INT(gguf_version(g), 3);
    check_tiny(g);
    gguf_free(g);
    /* version 2 has the same layout */
    uint8_t v2[sizeof k_tiny];
    memcpy(v2, k_tiny, sizeof v2);
    v2[4] = 2;
    T_EQ_INT(gguf_parse(v2, sizeof v2, "v2.gguf", &g), CLARA_OK);
    if (!g) return;
    T_EQ_INT(gguf_version(g), 2);
    check_tiny(g);
    gguf_free(g);
}

static gguf_writer *tiny_writer(void) {
    gguf_writer *w = gguf_writer_new();
    const int16_t arr[2] = {-1, 2};
    const char *strs[2] = {"x", "yz"};
    const uint64_t ne0[1] = {3}, ne1[2] = {2, 2};
    /* a.u32 is set twice: the second value replaces the first in place */
    T_EQ_INT(gguf_writer_set_str(w, "general.architecture", "llama"), CLARA_OK);
    T_EQ_INT(gguf_writer_set_u32(w, "a.u32", 7), CLARA_OK);
    T_EQ_INT(gguf_writer_set_arr(w, "a.arr", GGUF_VT_I16, arr, 2), CLARA_OK);
    T_EQ_INT(gguf_writer_set_arr_str(w, "a.strs", strs, 2), CLARA_OK);
    T_EQ_INT(gguf_writer_set_bool(w, "a.b", true), CLARA_OK);
    T_EQ_INT(gguf_writer_set_f32(w, "a.f", 1.5f), CLARA_OK);
    T_EQ_INT(gguf_writer_set_u32(w, "a.u32", 0x01020304), CLARA_OK);
    T_EQ_INT(gguf_writer_add_tensor(w, "t0", CLARA_TYPE_F32, 1, ne0), CLARA_OK);
    T_EQ_INT(gguf_writer_add_tensor(w, "t1", CLARA_TYPE_F16, 2, ne1), CLARA_OK);
    return w;
}

static void test_tiny_write(void) {
    gguf_writer *w = tiny_writer();
    T_EQ_INT(gguf_writer_begin_mem(w), CLARA_OK);
    /* tensor bytes in odd chunks crossing the tensor boundary */
    T_EQ_INT(gguf_writer_write(w, k_tiny + 288, 5), CLARA_OK);
    uint8_t rest[15];
    memcpy(rest, k_tiny + 293, 7);
    memcpy(rest + 7, k_tiny + 320, 8);
    T_EQ_INT(gguf_writer_write(w, rest, 15), CLARA_OK);
    T_EQ_INT(gguf_writer_write(w, rest, 1), CLARA_ERR_INVALID_ARG);
    T_CHECK(strstr(clara_last_error(), "past the last tensor") != NULL);
    uint8_t *out = NULL;
    size_t len = 0;
    /* the failed write poisons the writer: finish must refuse */
    T_CHECK(gguf_writer_finish_mem(w, &out, &len) != CLARA_OK);
    gguf_writer_free(w);

    w = tiny_writer();
    T_EQ_INT(gguf_writer_begin_mem(w), CLARA_OK);
    T_EQ_INT(gguf_writer_write(w, k_tiny + 288, 12), CLARA_OK);
    T_EQ_INT(gguf_writer_write(w, k_tiny + 320, 8), CLARA_OK);
    T_EQ_INT(gguf_writer_finish_mem(w, &out, &len), CLARA_OK);
    T_EQ_INT(len, sizeof k_tiny);
    T_CHECK(out && len == sizeof k_tiny && memcmp(out, k_tiny, len) == 0);
    for (size_t i = 0; out && i < len && i < sizeof k_tiny; i++)
        if (out[i] != k_tiny[i]) {
            fprintf(stderr, "  first difference at byte %zu: %u vs %u\n", i, out[i], k_tiny[i]);
            break;
        }
    free(out);
    gguf_writer_free(w);
}

/* Every prefix that cuts into the last tensor's data must be rejected cleanly (each in an
 * exact-size buffer for ASan). The padding after the last tensor is optional, as for llama.cpp,
 * which checks only that each tensor's bytes lie within the file. */
static void test_truncated(void) {
    int bad = 0;
    for (size_t n = 0; n < sizeof k_tiny; n++) {
        if (n >= 328) { /* 320 + 8: t1 is complete */
            gguf_ctx *g = NULL;
            T_EQ_INT(gguf_parse(k_tiny, n, "cut.gguf", &g), CLARA_OK);
            gguf_free(g);
            continue;
        }
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, k_tiny, n);
        gguf_ctx *g = NULL;
        clara_status s = gguf_parse(copy, n, "cut.gguf", &g);
        if (s == CLARA_OK || g != NULL || strstr(clara_last_error(), "cut.gguf: ") == NULL) {
            fprintf(stderr, "  prefix %zu: status %d '%s'\n", n, s, clara_last_error());
            bad++;
        }
        gguf_free(g);
        free(copy);
    }
    T_EQ_INT(bad, 0);
}

/* ---- a tiny byte builder for malformed files (independent of the writer) ---- */

typedef struct {
    uint8_t b[1024];
    size_t n;
} bb;

static void bb_u(bb *b, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) b->b[b->n++] = (uint8_t)(v >> (8 * i));
}
static void bb_str(bb *b, const char *s) {
    size_t n = strlen(s);
    bb_u(b, n, 8);
    memcpy(b->b + b->n, s, n);
    b->n += n;
}
static void bb_head(bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    b->n = 0;
    memcpy(b->b, "GGUF", 4);
    b->n = 4;
    bb_u(b, version, 4);
    bb_u(b, n_tensors, 8);
    bb_u(b, n_kv, 8);
}
static void bb_tensor(bb *b, const char *name, uint32_t type, uint32_t n_dims, const uint64_t *ne,
                      uint64_t offset) {
    bb_str(b, name);
    bb_u(b, n_dims, 4);
    for (uint32_t i = 0; i < n_dims; i++) bb_u(b, ne[i], 8);
    bb_u(b, type, 4);
    bb_u(b, offset, 8);
}
/* zero padding to `align`, then `data` zero bytes */
static void bb_data(bb *b, size_t align, size_t data) {
    while (b->n % align) b->b[b->n++] = 0;
    memset(b->b + b->n, 0, data);
    b->n += data;
}

/* Parses b (in an exact-size copy) and checks it fails with st and a message containing want. */
#define EXPECT_FAIL(b, st, want) expect_fail(b, st, want, __LINE__)
static void expect_fail(const bb *b, clara_status st, const char *want, int line) {
    uint8_t *copy = malloc(b->n ? b->n : 1);
    memcpy(copy, b->b, b->n);
    gguf_ctx *g = NULL;
    clara_status s = gguf_parse(copy, b->n, "bad.gguf", &g);
    const char *msg = clara_last_error();
    T_CHECK_MSG(s == st && g == NULL && strstr(msg, want) && strncmp(msg, "bad.gguf: ", 10) == 0,
                "line %d: status %d (want %d), message '%s' (want '%s')", line, s, st, msg, want);
    gguf_free(g);
    free(copy);
}

static void test_bad_header(void) {
    bb b;
    bb_head(&b, 3, 0, 0);
    b.b[0] = 'g';
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "bad magic");
    bb_head(&b, 1, 0, 0);
    EXPECT_FAIL(&b, CLARA_ERR_UNSUPPORTED, "version 1 is not supported");
    bb_head(&b, 4, 0, 0);
    EXPECT_FAIL(&b, CLARA_ERR_UNSUPPORTED, "version 4 is not supported");
    bb_head(&b, 0x03000000, 0, 0);
    EXPECT_FAIL(&b, CLARA_ERR_UNSUPPORTED, "big-endian");
    bb_head(&b, 3, 0, 1ull << 40);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "KV count 1099511627776 is impossible");
    bb_head(&b, 3, UINT64_MAX, 0);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "tensor count");
    /* a valid empty file parses */
    bb_head(&b, 3, 0, 0);
    gguf_ctx *g = NULL;
    T_EQ_INT(gguf_parse(b.b, b.n, "empty.gguf", &g), CLARA_OK);
    if (g) T_EQ_INT(gguf_n_kv(g) + gguf_n_tensors(g), 0);
    gguf_free(g);
}

static void test_bad_kv(void) {
    bb b;
    bb_head(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u(&b, GGUF_VT_STR, 4);
    bb_u(&b, 1000, 8);
    bb_str(&b, "short");
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "string length 1000");

    bb_head(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u(&b, GGUF_VT_ARR, 4);
    bb_u(&b, GGUF_VT_U32, 4);
    bb_u(&b, 1ull << 62, 8);
    bb_u(&b, 0, 8);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "array of 4611686018427387904 u32 runs past the end");

    bb_head(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u(&b, GGUF_VT_ARR, 4);
    bb_u(&b, GGUF_VT_STR, 4);
    bb_u(&b, UINT64_MAX, 8);
    bb_u(&b, 0, 8);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "strings cannot fit");

    bb_head(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u(&b, GGUF_VT_ARR, 4);
    bb_u(&b, GGUF_VT_ARR, 4);
    bb_u(&b, 1, 8);
    bb_u(&b, GGUF_VT_U8, 4);
    bb_u(&b, 0, 8);
    EXPECT_FAIL(&b, CLARA_ERR_UNSUPPORTED, "key 'k': nested arrays are not supported");

    bb_head(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u(&b, GGUF_VT_ARR, 4);
    bb_u(&b, 13, 4);
    bb_u(&b, 0, 8);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "unknown array element type 13");

    bb_head(&b, 3, 0, 1);
    bb_str(&b, "flag");
    bb_u(&b, GGUF_VT_BOOL, 4);
    bb_u(&b, 2, 1);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "key 'flag': bool byte 2 is not 0 or 1");

    bb_head(&b, 3, 0, 1);
    bb_str(&b, "flags");
    bb_u(&b, GGUF_VT_ARR, 4);
    bb_u(&b, GGUF_VT_BOOL, 4);
    bb_u(&b, 3, 8);
    bb_u(&b, 0x010001, 3);
    b.b[b.n - 1] = 0xff;
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "bool byte 255");

    bb_head(&b, 3, 0, 2);
    bb_str(&b, "k");
    bb_u(&b, GGUF_VT_U8, 4);
    bb_u(&b, 1, 1);
    bb_str(&b, "k");
    bb_u(&b, GGUF_VT_I32, 4);
    bb_u(&b, 1, 4);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "duplicate key 'k'");

    bb_head(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u(&b, 13, 4);
    bb_u(&b, 0, 8);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "key 'k': unknown value type 13");

    bb_head(&b, 3, 0, 1);
    bb_u(&b, 3, 8);
    memcpy(b.b + b.n, "a\0b", 3);
    b.n += 3;
    bb_u(&b, GGUF_VT_U8, 4);
    bb_u(&b, 1, 1);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "contains a NUL byte");
}

static void alignment_file(bb *b, gguf_vtype type, uint64_t value) {
    bb_head(b, 3, 0, 1);
    bb_str(b, "general.alignment");
    bb_u(b, type, 4);
    bb_u(b, value, (int)gguf_vtype_size(type));
}

static void test_bad_alignment(void) {
    bb b;
    alignment_file(&b, GGUF_VT_U32, 0);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "general.alignment 0 is not a power of two");
    alignment_file(&b, GGUF_VT_U32, 3);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "general.alignment 3 is not a power of two");
    alignment_file(&b, GGUF_VT_U64, 32);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "general.alignment has type u64, expected u32");
    alignment_file(&b, GGUF_VT_U32, 8);
    gguf_ctx *g = NULL;
    T_EQ_INT(gguf_parse(b.b, b.n, "a8.gguf", &g), CLARA_OK);
    if (g) T_EQ_INT(gguf_alignment(g), 8);
    gguf_free(g);
}

/* One tensor (or two) with the given fields, then the padding and `data` bytes. */
static void tensor_file(bb *b, uint32_t type, uint32_t n_dims, const uint64_t *ne, uint64_t off,
                        size_t data) {
    bb_head(b, 3, 1, 0);
    bb_tensor(b, "w", type, n_dims, ne, off);
    bb_data(b, 32, data);
}

static void test_bad_tensors(void) {
    bb b;
    const uint64_t ne[5] = {32, 2, 1, 1, 1};
    tensor_file(&b, CLARA_TYPE_F32, 0, ne, 0, 0);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "tensor 'w' has 0 dimensions");
    tensor_file(&b, CLARA_TYPE_F32, 5, ne, 0, 256);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "tensor 'w' has 5 dimensions");
    tensor_file(&b, 16, 2, ne, 0, 256);
    EXPECT_FAIL(&b, CLARA_ERR_UNSUPPORTED, "tensor 'w' has unknown type 16");
    tensor_file(&b, 1000, 2, ne, 0, 256);
    EXPECT_FAIL(&b, CLARA_ERR_UNSUPPORTED, "unknown type 1000");
    tensor_file(&b, CLARA_TYPE_F32, 2, ne, 4, 256);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "tensor 'w' offset 4 is not aligned to 32");
    tensor_file(&b, CLARA_TYPE_F32, 2, ne, 0, 255);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "tensor 'w' data (offset 0, 256 bytes) runs past the end");
    tensor_file(&b, CLARA_TYPE_F32, 2, ne, 1ull << 63, 256);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "runs past the end");
    tensor_file(&b, CLARA_TYPE_F32, 2, ne, UINT64_MAX - 31, 256);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "runs past the end");
    const uint64_t q[2] = {33, 1};
    tensor_file(&b, CLARA_TYPE_Q4_0, 2, q, 0, 64);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT,
                "tensor 'w': row of 33 elements is not a multiple of the "
                "q4_0 block size 32");
    const uint64_t big[3] = {1ull << 32, 1ull << 32, 1ull << 32};
    tensor_file(&b, CLARA_TYPE_F32, 3, big, 0, 0);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "tensor 'w': tensor element count overflows");
    const uint64_t huge[1] = {UINT64_MAX};
    tensor_file(&b, CLARA_TYPE_I8, 1, huge, 0, 0);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "overflows");

    /* two tensors */
    bb_head(&b, 3, 2, 0);
    bb_tensor(&b, "a", CLARA_TYPE_F32, 1, ne, 0);
    bb_tensor(&b, "a", CLARA_TYPE_F32, 1, ne, 128);
    bb_data(&b, 32, 256);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "duplicate tensor 'a'");
    bb_head(&b, 3, 2, 0);
    bb_tensor(&b, "a", CLARA_TYPE_F32, 2, ne, 0); /* 256 bytes */
    bb_tensor(&b, "b", CLARA_TYPE_F32, 1, ne, 224);
    bb_data(&b, 32, 512);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "tensors 'a' and 'b' overlap");
    bb_head(&b, 3, 2, 0);
    bb_tensor(&b, "a", CLARA_TYPE_F32, 2, ne, 256);
    bb_tensor(&b, "b", CLARA_TYPE_F32, 1, ne, 256);
    bb_data(&b, 32, 512);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "overlap");
    /* touching but not overlapping, listed out of order: fine */
    bb_head(&b, 3, 2, 0);
    bb_tensor(&b, "a", CLARA_TYPE_F32, 2, ne, 128);
    bb_tensor(&b, "b", CLARA_TYPE_F32, 1, ne, 0);
    bb_data(&b, 32, 384);
    gguf_ctx *g = NULL;
    T_EQ_INT(gguf_parse(b.b, b.n, "ok.gguf", &g), CLARA_OK);
    gguf_free(g);
    /* file ends inside the padding before the data section */
    bb_head(&b, 3, 1, 0);
    bb_tensor(&b, "w", CLARA_TYPE_F32, 1, ne + 2, 0);
    EXPECT_FAIL(&b, CLARA_ERR_FORMAT, "padding before the data section");
}

/* ---- round trips through the writer ---- */

/* Getter errors name the file, key and types (g holds test_scalars_roundtrip's keys). */
static void check_scalar_errors(const gguf_ctx *g) {
    int64_t i64 = 0;
    uint64_t u64 = 0;
    float f = 0;
    bool yes = false;
    const char *s = NULL;
    T_EQ_INT(gguf_get_int(g, "u64", &i64), CLARA_ERR_FORMAT);
    T_CHECK(strstr(clara_last_error(), "out of range") != NULL);
    T_EQ_INT(gguf_get_uint(g, "i8", &u64), CLARA_ERR_FORMAT);
    T_CHECK(strstr(clara_last_error(), "'i8' is negative") != NULL);
    T_EQ_INT(gguf_get_str(g, "u32", &s), CLARA_ERR_FORMAT);
    T_EQ_STR(clara_last_error(), "scalars.gguf: key 'u32' has type u32, expected str");
    T_EQ_INT(gguf_get_f32(g, "i32", &f), CLARA_ERR_FORMAT);
    T_CHECK(strstr(clara_last_error(), "expected f32 or f64") != NULL);
    T_EQ_INT(gguf_get_int(g, "s", &i64), CLARA_ERR_FORMAT);
    T_EQ_INT(gguf_get_bool(g, "u8", &yes), CLARA_ERR_FORMAT);
    T_EQ_INT(gguf_get_int(g, "yes", &i64), CLARA_ERR_FORMAT);
    T_EQ_INT(gguf_get_arr(g, "u8", NULL, NULL), CLARA_ERR_FORMAT);
    T_EQ_INT(gguf_get_uint(g, "missing.key", &u64), CLARA_ERR_NOT_FOUND);
    T_CHECK(strstr(clara_last_error(), "scalars.gguf: key 'missing.key'") != NULL);
}

static void check_scalar_format(const gguf_ctx *g) {
    /* formatting */
    char out[64];
    const char *want[] = {"255",
                          "-128",
                          "65535",
                          "-32768",
                          "4294967295",
                          "-2147483648",
                          "18446744073709551615",
                          "-9223372036854775808",
                          "-0.100000001",
                          "1.0000000000000001e+300",
                          "true",
                          "false",
                          "\"h\xc3\xa9llo \\\"q\\\"\\n\"",
                          "\"\"",
                          "7"};
    for (size_t i = 0; i < 15; i++) {
        gguf_kv_format(g, i, out, sizeof out);
        EQ_BUF(out, want[i]);
    }
    gguf_kv_format(g, 99, out, sizeof out);
    EQ_BUF(out, "");
}

static void test_scalars_roundtrip(void) {
    gguf_writer *w = gguf_writer_new();
    T_EQ_INT(gguf_writer_set_u8(w, "u8", 255), CLARA_OK);
    T_EQ_INT(gguf_writer_set_i8(w, "i8", -128), CLARA_OK);
    T_EQ_INT(gguf_writer_set_u16(w, "u16", 65535), CLARA_OK);
    T_EQ_INT(gguf_writer_set_i16(w, "i16", -32768), CLARA_OK);
    T_EQ_INT(gguf_writer_set_u32(w, "u32", 4294967295u), CLARA_OK);
    T_EQ_INT(gguf_writer_set_i32(w, "i32", INT32_MIN), CLARA_OK);
    T_EQ_INT(gguf_writer_set_u64(w, "u64", UINT64_MAX), CLARA_OK);
    T_EQ_INT(gguf_writer_set_i64(w, "i64", INT64_MIN), CLARA_OK);
    T_EQ_INT(gguf_writer_set_f32(w, "f32", -0.1f), CLARA_OK);
    T_EQ_INT(gguf_writer_set_f64(w, "f64", 1e300), CLARA_OK);
    T_EQ_INT(gguf_writer_set_bool(w, "yes", true), CLARA_OK);
    T_EQ_INT(gguf_writer_set_bool(w, "no", false), CLARA_OK);
    T_EQ_INT(gguf_writer_set_str(w, "s", "h\xc3\xa9llo \"q\"\n"), CLARA_OK);
    T_EQ_INT(gguf_writer_set_str(w, "empty", ""), CLARA_OK);
    T_EQ_INT(gguf_writer_set_u16(w, "small", 7), CLARA_OK);
    T_EQ_INT(gguf_writer_begin_mem(w), CLARA_OK);
    T_EQ_INT(gguf_writer_set_u8(w, "late", 1), CLARA_ERR_INVALID_ARG);
    uint8_t *buf = NULL;
    size_t len = 0;
    T_EQ_INT(gguf_writer_finish_mem(w, &buf, &len), CLARA_OK);
    gguf_writer_free(w);
    gguf_ctx *g = NULL;
    T_EQ_INT(gguf_parse(buf, len, "scalars.gguf", &g), CLARA_OK);
    if (!g) {
        free(buf);
        return;
    }
    static const gguf_vtype types[] = {GGUF_VT_U8,  GGUF_VT_I8,  GGUF_VT_U16,  GGUF_VT_I16,
                                       GGUF_VT_U32, GGUF_VT_I32, GGUF_VT_U64,  GGUF_VT_I64,
                                       GGUF_VT_F32, GGUF_VT_F64, GGUF_VT_BOOL, GGUF_VT_BOOL,
                                       GGUF_VT_STR, GGUF_VT_STR, GGUF_VT_U16};
    T_EQ_INT(gguf_n_kv(g), 15);
    for (size_t i = 0; i < 15; i++) T_EQ_INT(gguf_kv_type(g, i), types[i]);
    int64_t i64 = 0;
    uint64_t u64 = 0;
    T_EQ_INT(gguf_get_int(g, "u8", &i64), CLARA_OK);
    T_EQ_INT(i64, 255);
    T_EQ_INT(gguf_get_int(g, "i8", &i64), CLARA_OK);
    T_EQ_INT(i64, -128);
    T_EQ_INT(gguf_get_int(g, "u16", &i64), CLARA_OK);
    T_EQ_INT(i64, 65535);
    T_EQ_INT(gguf_get_int(g, "i16", &i64), CLARA_OK);
    T_EQ_INT(i64, -32768);
    T_EQ_INT(gguf_get_uint(g, "u32", &u64), CLARA_OK);
    T_EQ_INT(u64, 4294967295u);
    T_EQ_INT(gguf_get_int(g, "i32", &i64), CLARA_OK);
    T_EQ_INT(i64, INT32_MIN);
    T_EQ_INT(gguf_get_uint(g, "u64", &u64), CLARA_OK);
    T_CHECK(u64 == UINT64_MAX);
    T_EQ_INT(gguf_get_int(g, "i64", &i64), CLARA_OK);
    T_CHECK(i64 == INT64_MIN);
    float f = 0;
    double d = 0;
    T_EQ_INT(gguf_get_f32(g, "f32", &f), CLARA_OK);
    T_CHECK(f == -0.1f);
    T_EQ_INT(gguf_get_f64(g, "f64", &d), CLARA_OK);
    T_CHECK(d == 1e300);
    T_EQ_INT(gguf_get_f64(g, "f32", &d), CLARA_OK);
    T_CHECK(d == (double)-0.1f);
    bool yes = false, no = true;
    T_EQ_INT(gguf_get_bool(g, "yes", &yes), CLARA_OK);
    T_EQ_INT(gguf_get_bool(g, "no", &no), CLARA_OK);
    T_CHECK(yes && !no);
    const char *s = NULL;
    T_EQ_INT(gguf_get_str(g, "s", &s), CLARA_OK);
    T_EQ_STR(s, "h\xc3\xa9llo \"q\"\n");
    T_EQ_INT(gguf_get_str(g, "empty", &s), CLARA_OK);
    T_EQ_STR(s, "");
    check_scalar_errors(g);
    check_scalar_format(g);
    gguf_free(g);
    free(buf);
}

static void test_arrays_roundtrip(void) {
    const uint8_t u8[3] = {0, 128, 255};
    const int8_t i8[3] = {-128, 0, 127};
    const uint16_t u16[2] = {1, 65535};
    const int16_t i16[2] = {-32768, 32767};
    const uint32_t u32[2] = {0, 4000000000u};
    const int32_t i32[3] = {INT32_MIN, -1, INT32_MAX};
    const float f32[2] = {0.25f, -1e30f};
    const uint8_t bools[4] = {1, 0, 0, 1};
    const uint64_t u64[2] = {UINT64_MAX, 5};
    const int64_t i64[2] = {INT64_MIN, 6};
    const double f64[1] = {-2.5};
    const void *datas[13] = {u8, i8, u16, i16, u32, i32, f32, bools, NULL, NULL, u64, i64, f64};
    const uint64_t counts[13] = {3, 3, 2, 2, 2, 3, 2, 4, 0, 0, 2, 2, 1};
    const char *strs[4] = {"<unk>", "", "\xe2\x96\x81the", "a\tb"};
    gguf_writer *w = gguf_writer_new();
    char key[16];
    for (int t = 0; t < GGUF_VT_COUNT; t++) {
        if (t == GGUF_VT_STR || t == GGUF_VT_ARR) continue;
        snprintf(key, sizeof key, "arr.%d", t);
        T_EQ_INT(gguf_writer_set_arr(w, key, (gguf_vtype)t, datas[t], counts[t]), CLARA_OK);
    }
    T_EQ_INT(gguf_writer_set_arr_str(w, "arr.str", strs, 4), CLARA_OK);
    T_EQ_INT(gguf_writer_set_arr(w, "arr.empty", GGUF_VT_F32, NULL, 0), CLARA_OK);
    T_EQ_INT(gguf_writer_set_arr(w, "bad", GGUF_VT_STR, strs, 1), CLARA_ERR_INVALID_ARG);
    const uint8_t two = 2;
    T_EQ_INT(gguf_writer_set_arr(w, "bad", GGUF_VT_BOOL, &two, 1), CLARA_ERR_INVALID_ARG);
    T_EQ_INT(gguf_writer_begin_mem(w), CLARA_OK);
    uint8_t *buf = NULL;
    size_t len = 0;
    T_EQ_INT(gguf_writer_finish_mem(w, &buf, &len), CLARA_OK);
    gguf_writer_free(w);
    gguf_ctx *g = NULL;
    T_EQ_INT(gguf_parse(buf, len, "arrays.gguf", &g), CLARA_OK);
    if (!g) {
        free(buf);
        return;
    }
    T_EQ_INT(gguf_n_kv(g), 13);
    for (int t = 0; t < GGUF_VT_COUNT; t++) {
        if (t == GGUF_VT_STR || t == GGUF_VT_ARR) continue;
        snprintf(key, sizeof key, "arr.%d", t);
        const void *p = NULL;
        uint64_t n = 0;
        T_EQ_INT(gguf_get_arr_data(g, key, (gguf_vtype)t, &p, &n), CLARA_OK);
        T_EQ_INT(n, counts[t]);
        T_CHECK(p && memcmp(p, datas[t], (size_t)n * gguf_vtype_size((gguf_vtype)t)) == 0);
    }
    const void *p;
    uint64_t n;
    T_EQ_INT(gguf_get_arr_data(g, "arr.6", GGUF_VT_F64, &p, &n), CLARA_ERR_FORMAT);
    T_EQ_STR(clara_last_error(), "arrays.gguf: key 'arr.6' is an array of f32, expected an "
                                 "array of f64");
    T_EQ_INT(gguf_get_arr_data(g, "arr.str", GGUF_VT_STR, &p, &n), CLARA_ERR_FORMAT);
    T_EQ_INT(gguf_get_arr_data(g, "arr.empty", GGUF_VT_F32, &p, &n), CLARA_OK);
    T_EQ_INT(n, 0);
    for (uint64_t j = 0; j < 4; j++) T_EQ_STR(gguf_get_arr_str(g, "arr.str", j), strs[j]);
    char out[128];
    int64_t i = gguf_find_key(g, "arr.str");
    gguf_kv_format(g, (size_t)i, out, sizeof out);
    EQ_BUF(out, "[str \xc3\x97 4] \"<unk>\", \"\", \"\xe2\x96\x81the\", \"a\\tb\"");
    gguf_kv_format(g, (size_t)gguf_find_key(g, "arr.5"), out, sizeof out);
    EQ_BUF(out, "[i32 \xc3\x97 3] -2147483648, -1, 2147483647");
    gguf_kv_format(g, (size_t)gguf_find_key(g, "arr.7"), out, sizeof out);
    EQ_BUF(out, "[bool \xc3\x97 4] true, false, false, true");
    gguf_kv_format(g, (size_t)gguf_find_key(g, "arr.empty"), out, sizeof out);
    EQ_BUF(out, "[f32 \xc3\x97 0]");
    gguf_kv_format(g, (size_t)gguf_find_key(g, "arr.5"), out, 12); /* clipped */
    EQ_BUF(out, "[i32 \xc3\x97 ...");
    gguf_free(g);
    free(buf);
}

/* Long strings and long arrays are shortened for display. */
static void test_format_truncation(void) {
    char longs[300];
    memset(longs, 'a', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    const char *many[10];
    for (int i = 0; i < 10; i++) many[i] = i == 0 ? longs : "b";
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "long", longs);
    gguf_writer_set_arr_str(w, "many", many, 10);
    T_EQ_INT(gguf_writer_begin_mem(w), CLARA_OK);
    uint8_t *buf = NULL;
    size_t len = 0;
    T_EQ_INT(gguf_writer_finish_mem(w, &buf, &len), CLARA_OK);
    gguf_writer_free(w);
    gguf_ctx *g = NULL;
    T_EQ_INT(gguf_parse(buf, len, "long.gguf", &g), CLARA_OK);
    char out[512];
    if (g) {
        gguf_kv_format(g, 0, out, sizeof out);
        T_EQ_INT(strlen(out), 120 + 5);
        T_CHECK(strcmp(out + 120, "a\"...") == 0);
        gguf_kv_format(g, 1, out, sizeof out);
        EQ_BUF(out,
               "[str \xc3\x97 10] \"aaaaaaaaaaaaaaaaaaaaaaaa\"..., \"b\", \"b\", \"b\", \"b\", "
               "\"b\", ...");
    }
    gguf_free(g);
    free(buf);
}

/* f32, f16 and bf16 tensors with alignment 64, plus a zero-size and a quantized tensor. */
static void test_tensors_roundtrip(void) {
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[5] = {0x3c00, 0x4000, 0x4200, 0x4400, 0x4500};
    uint16_t bf[3] = {0x3f80, 0xbf80, 0x4049};
    uint8_t q[2 * 18];
    for (int i = 0; i < 36; i++) q[i] = (uint8_t)(i * 7);
    const uint64_t ne_a[2] = {3, 2}, ne_h[1] = {5}, ne_bf[3] = {1, 3, 1}, ne_z[2] = {0, 4},
                   ne_q[2] = {32, 2};
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_u32(w, "general.alignment", 64);
    T_EQ_INT(gguf_writer_add_tensor(w, "a", CLARA_TYPE_F32, 2, ne_a), CLARA_OK);
    T_EQ_INT(gguf_writer_add_tensor(w, "zero", CLARA_TYPE_F32, 2, ne_z), CLARA_OK);
    T_EQ_INT(gguf_writer_add_tensor(w, "h", CLARA_TYPE_F16, 1, ne_h), CLARA_OK);
    T_EQ_INT(gguf_writer_add_tensor(w, "bf", CLARA_TYPE_BF16, 3, ne_bf), CLARA_OK);
    T_EQ_INT(gguf_writer_add_tensor(w, "q", CLARA_TYPE_Q4_0, 2, ne_q), CLARA_OK);
    /* the writer validates like the reader */
    const uint64_t bad_q[1] = {33};
    T_EQ_INT(gguf_writer_add_tensor(w, "q2", CLARA_TYPE_Q4_0, 1, bad_q), CLARA_ERR_INVALID_ARG);
    T_CHECK(strstr(clara_last_error(), "tensor 'q2'") && strstr(clara_last_error(), "multiple"));
    T_EQ_INT(gguf_writer_add_tensor(w, "a", CLARA_TYPE_F32, 1, ne_h), CLARA_ERR_INVALID_ARG);
    T_EQ_INT(gguf_writer_add_tensor(w, "x", (clara_type)16, 1, ne_h), CLARA_ERR_INVALID_ARG);
    T_EQ_INT(gguf_writer_add_tensor(w, "x", CLARA_TYPE_F32, 5, ne_bf), CLARA_ERR_INVALID_ARG);
    T_EQ_INT(gguf_writer_begin_mem(w), CLARA_OK);
    T_EQ_INT(gguf_writer_write(w, a, sizeof a), CLARA_OK);
    T_EQ_INT(gguf_writer_write(w, h, sizeof h), CLARA_OK);
    uint8_t *buf = NULL;
    size_t len = 0;
    T_EQ_INT(gguf_writer_finish_mem(w, &buf, &len), CLARA_ERR_INVALID_ARG);
    T_CHECK(strstr(clara_last_error(), "tensor 'bf' has 0 of 6 bytes written") != NULL);
    T_EQ_INT(gguf_writer_write(w, bf, sizeof bf), CLARA_OK);
    T_EQ_INT(gguf_writer_write(w, q, sizeof q), CLARA_OK);
    T_EQ_INT(gguf_writer_finish_mem(w, &buf, &len), CLARA_OK);
    gguf_writer_free(w);
    gguf_ctx *g = NULL;
    T_EQ_INT(gguf_parse(buf, len, "t.gguf", &g), CLARA_OK);
    if (!g) {
        free(buf);
        return;
    }
    T_EQ_INT(gguf_alignment(g), 64);
    T_EQ_INT(gguf_data_offset(g) % 64, 0);
    T_EQ_INT(len % 64, 0);
    const gguf_tensor *ta = gguf_find_tensor(g, "a"), *tz = gguf_find_tensor(g, "zero"),
                      *th = gguf_find_tensor(g, "h"), *tb = gguf_find_tensor(g, "bf"),
                      *tq = gguf_find_tensor(g, "q");
    T_CHECK(ta && tz && th && tb && tq);
    if (ta && tz && th && tb && tq) {
        T_EQ_INT(ta->offset, 0);
        T_EQ_INT(tz->offset, 64);
        T_EQ_INT(tz->nbytes, 0);
        T_EQ_INT(th->offset, 64);
        T_EQ_INT(tb->offset, 128);
        T_EQ_INT(tb->n_dims, 3);
        T_EQ_INT(tb->ne[0] + tb->ne[1] * 10 + tb->ne[2] * 100 + tb->ne[3] * 1000, 1131);
        T_EQ_INT(tq->offset, 192);
        T_EQ_INT(tq->nbytes, 36);
        T_EQ_INT(len, gguf_data_offset(g) + 256);
        T_CHECK(memcmp(ta->data, a, sizeof a) == 0);
        T_CHECK(memcmp(th->data, h, sizeof h) == 0);
        T_CHECK(memcmp(tb->data, bf, sizeof bf) == 0);
        T_CHECK(memcmp(tq->data, q, sizeof q) == 0);
        T_EQ_INT((tq->data - buf) % 64, 0);
    }
    gguf_free(g);
    free(buf);
}

static void test_writer_errors(void) {
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_u64(w, "general.alignment", 32);
    T_EQ_INT(gguf_writer_begin_mem(w), CLARA_ERR_INVALID_ARG);
    T_CHECK(strstr(clara_last_error(), "general.alignment") != NULL);
    gguf_writer_set_u32(w, "general.alignment", 48);
    T_EQ_INT(gguf_writer_begin_mem(w), CLARA_ERR_INVALID_ARG);
    T_EQ_INT(gguf_writer_set_u8(w, "", 1), CLARA_ERR_INVALID_ARG);
    T_EQ_INT(gguf_writer_set_str(w, "k", NULL), CLARA_ERR_INVALID_ARG);
    T_EQ_INT(gguf_writer_write(w, "x", 1), CLARA_ERR_INVALID_ARG);
    const char *strs[2] = {"a", NULL};
    T_EQ_INT(gguf_writer_set_arr_str(w, "k", strs, 2), CLARA_ERR_INVALID_ARG);
    T_CHECK(strstr(clara_last_error(), "string 1 is NULL") != NULL);
    gguf_writer_free(w);
    gguf_writer_free(NULL);
}

/* Many tensors and keys: lookups go through the hash index. */
static void test_many(void) {
    enum { N = 3000 };
    gguf_writer *w = gguf_writer_new();
    char name[32];
    const uint64_t ne[1] = {1};
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "blk.%d.w", i);
        T_CHECK(gguf_writer_add_tensor(w, name, CLARA_TYPE_F32, 1, ne) == CLARA_OK);
        snprintf(name, sizeof name, "k.%d", i);
        T_CHECK(gguf_writer_set_i32(w, name, -i) == CLARA_OK);
    }
    T_EQ_INT(gguf_writer_begin_mem(w), CLARA_OK);
    for (int i = 0; i < N; i++) {
        float v = (float)i;
        gguf_writer_write(w, &v, 4);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    T_EQ_INT(gguf_writer_finish_mem(w, &buf, &len), CLARA_OK);
    gguf_writer_free(w);
    gguf_ctx *g = NULL;
    T_EQ_INT(gguf_parse(buf, len, "many.gguf", &g), CLARA_OK);
    int bad = 0;
    for (int i = 0; g && i < N; i++) {
        snprintf(name, sizeof name, "blk.%d.w", i);
        const gguf_tensor *t = gguf_find_tensor(g, name);
        float v = -1;
        if (t) memcpy(&v, t->data, 4);
        snprintf(name, sizeof name, "k.%d", i);
        int64_t k = 0;
        if (!t || t->offset != (uint64_t)i * 32 || v != (float)i || gguf_find_key(g, name) != i ||
            gguf_get_int(g, name, &k) != CLARA_OK || k != -i)
            bad++;
    }
    T_EQ_INT(bad, 0);
    gguf_free(g);
    free(buf);
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}

/* The file path: written in small chunks, committed by rename, read back with gguf_open; an
 * unfinished writer leaves nothing behind. */
static void test_file_output(void) {
    char dir[] = "/tmp/clara_test_gguf_XXXXXX";
    if (!mkdtemp(dir)) {
        T_CHECK(0);
        return;
    }
    char path[128];
    snprintf(path, sizeof path, "%s/tiny.gguf", dir);
    gguf_writer *w = tiny_writer();
    T_EQ_INT(gguf_writer_begin(w, path), CLARA_OK);
    T_EQ_INT(count_files(dir), 1); /* the temporary */
    T_CHECK(access(path, F_OK) != 0);
    for (size_t i = 0; i < 12; i += 3)
        T_EQ_INT(gguf_writer_write(w, k_tiny + 288 + i, 3), CLARA_OK);
    T_EQ_INT(gguf_writer_write(w, k_tiny + 320, 8), CLARA_OK);
    T_EQ_INT(gguf_writer_finish(w), CLARA_OK);
    gguf_writer_free(w);
    gguf_ctx *g = NULL;
    T_EQ_INT(gguf_open(path, &g), CLARA_OK);
    if (g) {
        T_EQ_INT(gguf_file_size(g), sizeof k_tiny);
        T_CHECK(memcmp(gguf_file_data(g), k_tiny, sizeof k_tiny) == 0);
        EQ_BUF(gguf_name(g), path);
        check_tiny(g);
    }
    gguf_free(g);
    unlink(path);
    w = tiny_writer();
    T_EQ_INT(gguf_writer_begin(w, path), CLARA_OK);
    T_EQ_INT(gguf_writer_write(w, k_tiny + 288, 4), CLARA_OK);
    T_EQ_INT(gguf_writer_finish(w), CLARA_ERR_INVALID_ARG);
    gguf_writer_free(w);
    T_EQ_INT(count_files(dir), 0);
    T_EQ_INT(gguf_open(path, &g), CLARA_ERR_IO);
    rmdir(dir);
}

/* Writes the fuzz seeds: the tiny file, the scalar/array/tensor files. */
static void write_seeds(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/tiny.gguf", dir);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(k_tiny, 1, sizeof k_tiny, f);
        fclose(f);
    }
    gguf_writer *w = gguf_writer_new();
    const int32_t ints[3] = {1, -2, 3};
    const char *strs[3] = {"<s>", "</s>", "\xe2\x96\x81hi"};
    const uint64_t ne[2] = {32, 2};
    gguf_writer_set_u32(w, "general.alignment", 16);
    gguf_writer_set_u8(w, "u8", 1);
    gguf_writer_set_i64(w, "i64", -5);
    gguf_writer_set_f64(w, "f64", 0.5);
    gguf_writer_set_bool(w, "b", true);
    gguf_writer_set_arr(w, "ints", GGUF_VT_I32, ints, 3);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", strs, 3);
    gguf_writer_add_tensor(w, "q", CLARA_TYPE_Q8_0, 2, ne);
    gguf_writer_add_tensor(w, "k", CLARA_TYPE_Q4_K, 1, (const uint64_t[]){256});
    uint8_t data[144] = {0};
    snprintf(path, sizeof path, "%s/mixed.gguf", dir);
    if (gguf_writer_begin(w, path) == CLARA_OK) {
        gguf_writer_write(w, data, 68);
        gguf_writer_write(w, data, 144);
        gguf_writer_finish(w);
    }
    gguf_writer_free(w);
    /* metadata only: one KV of every scalar type and an array of every element type */
    w = gguf_writer_new();
    const uint64_t vals[2] = {0x8000000000000101ull, 0x0100000000008002ull};
    const uint8_t bits[2] = {0, 1};
    gguf_writer_set_u8(w, "s.u8", 200);
    gguf_writer_set_i8(w, "s.i8", -3);
    gguf_writer_set_u16(w, "s.u16", 60000);
    gguf_writer_set_i16(w, "s.i16", -300);
    gguf_writer_set_u32(w, "s.u32", 3000000000u);
    gguf_writer_set_i32(w, "s.i32", -3);
    gguf_writer_set_f32(w, "s.f32", 2.5f);
    gguf_writer_set_bool(w, "s.bool", false);
    gguf_writer_set_str(w, "s.str", "tab\there");
    gguf_writer_set_u64(w, "s.u64", UINT64_MAX);
    gguf_writer_set_i64(w, "s.i64", -3);
    gguf_writer_set_f64(w, "s.f64", -2.5);
    char key[16];
    for (int t = 0; t < GGUF_VT_COUNT; t++) {
        snprintf(key, sizeof key, "a.%d", t);
        if (t == GGUF_VT_BOOL)
            gguf_writer_set_arr(w, key, GGUF_VT_BOOL, bits, 2);
        else if (gguf_vtype_size((gguf_vtype)t))
            gguf_writer_set_arr(w, key, t, vals, 2);
    }
    snprintf(path, sizeof path, "%s/kv_only.gguf", dir);
    if (gguf_writer_begin(w, path) == CLARA_OK) gguf_writer_finish(w);
    gguf_writer_free(w);
}

int main(void) {
    const char *seeds = getenv("GGUF_WRITE_SEEDS");
    if (seeds) write_seeds(seeds);
    T_RUN(test_tiny_read);
    T_RUN(test_tiny_write);
    T_RUN(test_truncated);
    T_RUN(test_bad_header);
    T_RUN(test_bad_kv);
    T_RUN(test_bad_alignment);
    T_RUN(test_bad_tensors);
    T_RUN(test_scalars_roundtrip);
    T_RUN(test_arrays_roundtrip);
    T_RUN(test_format_truncation);
    T_RUN(test_tensors_roundtrip);
    T_RUN(test_writer_errors);
    T_RUN(test_many);
    T_RUN(test_file_output);
    return t_report("test_gguf");
}
