/* dtype.c - the tensor type table. Sizes follow ggml's block structs (ggml-common.h), which define
 * what GGUF files contain: e.g. block_q8_1 is two f16 + 32 int8 = 36 bytes (gguf-py's table still
 * says 40 from when the scales were f32; the C struct is what files hold). */
#include "dtype.h"

#include <stddef.h>
#include <strings.h>

#include "base/checked.h"
#include "base/status.h"

#define QK_K 256

static const clara_type_info k_types[] = {
    {CLARA_TYPE_F32, "f32", 1, 4},
    {CLARA_TYPE_F16, "f16", 1, 2},
    {CLARA_TYPE_Q4_0, "q4_0", 32, 2 + 16},
    {CLARA_TYPE_Q4_1, "q4_1", 32, 2 + 2 + 16},
    {CLARA_TYPE_Q5_0, "q5_0", 32, 2 + 4 + 16},
    {CLARA_TYPE_Q5_1, "q5_1", 32, 2 + 2 + 4 + 16},
    {CLARA_TYPE_Q8_0, "q8_0", 32, 2 + 32},
    {CLARA_TYPE_Q8_1, "q8_1", 32, 2 + 2 + 32},
    /* K quants: 256-element super-blocks; sizes are the sum of the struct fields */
    {CLARA_TYPE_Q2_K, "q2_k", QK_K, QK_K / 16 + QK_K / 4 + 2 + 2},
    {CLARA_TYPE_Q3_K, "q3_k", QK_K, QK_K / 8 + QK_K / 4 + 12 + 2},
    {CLARA_TYPE_Q4_K, "q4_k", QK_K, 2 + 2 + 12 + QK_K / 2},
    {CLARA_TYPE_Q5_K, "q5_k", QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2},
    {CLARA_TYPE_Q6_K, "q6_k", QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2},
    {CLARA_TYPE_Q8_K, "q8_k", QK_K, 4 + QK_K + QK_K / 16 * 2},
    {CLARA_TYPE_I8, "i8", 1, 1},
    {CLARA_TYPE_I16, "i16", 1, 2},
    {CLARA_TYPE_I32, "i32", 1, 4},
    {CLARA_TYPE_I64, "i64", 1, 8},
    {CLARA_TYPE_F64, "f64", 1, 8},
    {CLARA_TYPE_BF16, "bf16", 1, 2},
    /* CLaRa extension (docs/FORMAT.md, gptq_awq.h): f16 d, u16 z, u8 qs[32] */
    {CLARA_TYPE_Q8_Z, "q8_z", 32, 2 + 2 + 32},
};

#define N_TYPES (sizeof k_types / sizeof k_types[0])

const clara_type_info *clara_type_get(uint32_t type) {
    for (size_t i = 0; i < N_TYPES; i++)
        if ((uint32_t)k_types[i].type == type) return &k_types[i];
    return NULL;
}

const char *clara_type_name(clara_type t) {
    const clara_type_info *ti = clara_type_get((uint32_t)t);
    return ti ? ti->name : "?";
}

int clara_type_from_name(const char *name) {
    if (!name) return -1;
    for (size_t i = 0; i < N_TYPES; i++)
        if (strcasecmp(k_types[i].name, name) == 0) return (int)k_types[i].type;
    return -1;
}

clara_status clara_type_row_bytes(clara_type t, uint64_t n_elems, uint64_t *out) {
    const clara_type_info *ti = clara_type_get((uint32_t)t);
    if (!ti) return clara_fail(CLARA_ERR_FORMAT, "unknown tensor type %u", (unsigned)t);
    if (n_elems % ti->block_size != 0)
        return clara_fail(CLARA_ERR_FORMAT,
                          "row of %llu elements is not a multiple of the %s block size %u",
                          (unsigned long long)n_elems, ti->name, ti->block_size);
    if (!clara_mul_u64(n_elems / ti->block_size, ti->type_size, out))
        return clara_fail(CLARA_ERR_FORMAT, "size of a %llu-element %s row overflows",
                          (unsigned long long)n_elems, ti->name);
    return CLARA_OK;
}

clara_status clara_tensor_bytes(clara_type t, const uint64_t *ne, uint32_t n_dims, uint64_t *out) {
    if (n_dims == 0 || n_dims > 4)
        return clara_fail(CLARA_ERR_FORMAT, "tensor has %u dimensions (must be 1 to 4)",
                          (unsigned)n_dims);
    uint64_t bytes;
    clara_status s = clara_type_row_bytes(t, ne[0], &bytes);
    if (s != CLARA_OK) return s;
    /* the element count must fit in int64 too (ggml counts elements in int64_t) */
    uint64_t elems = ne[0];
    for (uint32_t i = 1; i < n_dims; i++) {
        if (!clara_mul_u64(elems, ne[i], &elems) || elems > INT64_MAX)
            return clara_fail(CLARA_ERR_FORMAT, "tensor element count overflows");
        if (!clara_mul_u64(bytes, ne[i], &bytes))
            return clara_fail(CLARA_ERR_FORMAT, "tensor size overflows 64 bits");
    }
    if (elems > INT64_MAX) return clara_fail(CLARA_ERR_FORMAT, "tensor element count overflows");
    *out = bytes;
    return CLARA_OK;
}
