/* test_dtype.c - the tensor type table against the block sizes in ggml's ggml-common.h (checked
 * via the static_asserts on each block struct: e.g. block_q8_1 = 2 halves + 32 int8 = 36 bytes),
 * names, and the overflow-checked row and tensor size computations. */
#include <stdint.h>

#include "base/status.h"
#include "dtype.h"
#include "t.h"

typedef struct {
    uint32_t id;
    const char *name;
    uint32_t block, bytes;
} expect;

/* ids from ggml.h's enum ggml_type; sizes hand-summed from the block structs */
static const expect k_expect[] = {
    {0, "f32", 1, 4},       {1, "f16", 1, 2},       {2, "q4_0", 32, 18},    {3, "q4_1", 32, 20},
    {6, "q5_0", 32, 22},    {7, "q5_1", 32, 24},    {8, "q8_0", 32, 34},    {9, "q8_1", 32, 36},
    {10, "q2_k", 256, 84},  {11, "q3_k", 256, 110}, {12, "q4_k", 256, 144}, {13, "q5_k", 256, 176},
    {14, "q6_k", 256, 210}, {15, "q8_k", 256, 292}, {24, "i8", 1, 1},       {25, "i16", 1, 2},
    {26, "i32", 1, 4},      {27, "i64", 1, 8},      {28, "f64", 1, 8},      {30, "bf16", 1, 2},
};

static void test_table(void) {
    size_t n = sizeof k_expect / sizeof k_expect[0];
    for (size_t i = 0; i < n; i++) {
        const clara_type_info *ti = clara_type_get(k_expect[i].id);
        T_CHECK_MSG(ti != NULL, "type %u missing", k_expect[i].id);
        if (!ti) continue;
        T_EQ_INT(ti->type, k_expect[i].id);
        T_EQ_STR(ti->name, k_expect[i].name);
        T_EQ_INT(ti->block_size, k_expect[i].block);
        T_EQ_INT(ti->type_size, k_expect[i].bytes);
        T_EQ_STR(clara_type_name((clara_type)k_expect[i].id), k_expect[i].name);
        T_EQ_INT(clara_type_from_name(k_expect[i].name), k_expect[i].id);
    }
    /* every id outside the list is unknown (4, 5 were removed from ggml; 16-23 are IQ types) */
    int known = 0;
    for (uint32_t id = 0; id < 64; id++) known += clara_type_get(id) != NULL;
    T_EQ_INT(known, (int)n);
    T_CHECK(clara_type_get(4) == NULL);
    T_CHECK(clara_type_get(16) == NULL);
    T_CHECK(clara_type_get(UINT32_MAX) == NULL);
    T_EQ_STR(clara_type_name((clara_type)99), "?");
    T_EQ_INT(clara_type_from_name("Q4_K"), 12);
    T_EQ_INT(clara_type_from_name("q4_2"), -1);
    T_EQ_INT(clara_type_from_name(""), -1);
    T_EQ_INT(clara_type_from_name(NULL), -1);
}

static void test_row_bytes(void) {
    uint64_t b = 0;
    T_EQ_INT(clara_type_row_bytes(CLARA_TYPE_F32, 4096, &b), CLARA_OK);
    T_EQ_INT(b, 16384);
    T_EQ_INT(clara_type_row_bytes(CLARA_TYPE_Q4_0, 4096, &b), CLARA_OK);
    T_EQ_INT(b, 4096 / 32 * 18);
    T_EQ_INT(clara_type_row_bytes(CLARA_TYPE_Q4_K, 4096, &b), CLARA_OK);
    T_EQ_INT(b, 16 * 144);
    T_EQ_INT(clara_type_row_bytes(CLARA_TYPE_Q6_K, 14336, &b), CLARA_OK);
    T_EQ_INT(b, 56 * 210);
    T_EQ_INT(clara_type_row_bytes(CLARA_TYPE_BF16, 0, &b), CLARA_OK);
    T_EQ_INT(b, 0);
    T_EQ_INT(clara_type_row_bytes(CLARA_TYPE_Q4_0, 33, &b), CLARA_ERR_FORMAT);
    T_CHECK(strstr(clara_last_error(), "multiple") != NULL);
    T_EQ_INT(clara_type_row_bytes(CLARA_TYPE_Q4_K, 128, &b), CLARA_ERR_FORMAT);
    T_EQ_INT(clara_type_row_bytes((clara_type)5, 32, &b), CLARA_ERR_FORMAT);
    T_CHECK(strstr(clara_last_error(), "unknown") != NULL);
    T_EQ_INT(clara_type_row_bytes(CLARA_TYPE_F64, UINT64_MAX / 4, &b), CLARA_ERR_FORMAT);
    T_CHECK(strstr(clara_last_error(), "overflow") != NULL);
}

static void test_tensor_bytes(void) {
    uint64_t b = 0;
    const uint64_t emb[2] = {4096, 32000};
    T_EQ_INT(clara_tensor_bytes(CLARA_TYPE_F16, emb, 2, &b), CLARA_OK);
    T_EQ_INT(b, 4096ull * 32000 * 2);
    T_EQ_INT(clara_tensor_bytes(CLARA_TYPE_Q8_0, emb, 2, &b), CLARA_OK);
    T_EQ_INT(b, 4096ull / 32 * 34 * 32000);
    const uint64_t four[4] = {64, 3, 5, 7};
    T_EQ_INT(clara_tensor_bytes(CLARA_TYPE_Q5_1, four, 4, &b), CLARA_OK);
    T_EQ_INT(b, 2ull * 24 * 3 * 5 * 7);
    T_EQ_INT(clara_tensor_bytes(CLARA_TYPE_F32, four, 0, &b), CLARA_ERR_FORMAT);
    T_CHECK(strstr(clara_last_error(), "dimensions") != NULL);
    T_EQ_INT(clara_tensor_bytes(CLARA_TYPE_F32, four, 5, &b), CLARA_ERR_FORMAT);
    const uint64_t big[3] = {1ull << 32, 1ull << 32, 1ull << 32};
    T_EQ_INT(clara_tensor_bytes(CLARA_TYPE_F32, big, 3, &b), CLARA_ERR_FORMAT);
    T_CHECK(strstr(clara_last_error(), "overflow") != NULL);
    /* bytes fit but the element count does not fit in int64 (q4_0 is < 1 byte per element) */
    const uint64_t many[2] = {1ull << 32, 1ull << 31};
    T_EQ_INT(clara_tensor_bytes(CLARA_TYPE_Q4_0, many, 2, &b), CLARA_ERR_FORMAT);
    T_CHECK(strstr(clara_last_error(), "element count") != NULL);
    const uint64_t one[1] = {1ull << 63};
    T_EQ_INT(clara_tensor_bytes(CLARA_TYPE_I8, one, 1, &b), CLARA_ERR_FORMAT);
}

int main(void) {
    T_RUN(test_table);
    T_RUN(test_row_bytes);
    T_RUN(test_tensor_bytes);
    return t_report("test_dtype");
}
