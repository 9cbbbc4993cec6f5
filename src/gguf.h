/* gguf.h - GGUF (versions 2 and 3) reader over a (pointer, length) pair with every offset checked,
 * and a streaming writer that never holds tensor data in memory.
 *
 * Layout (little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv, n_kv x (string key,
 * u32 value type, value), n_tensors x (string name, u32 n_dims, n_dims x u64 ne, u32 ggml type,
 * u64 offset), zero padding to general.alignment (default 32), then the data section. Tensor
 * offsets are relative to the data section and multiples of the alignment. Strings are a u64
 * length and that many bytes, no NUL. */
#ifndef CLARA_GGUF_H
#define CLARA_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/mapfile.h"
#include "clara.h"

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS          4

typedef enum {
    GGUF_VT_U8 = 0,
    GGUF_VT_I8 = 1,
    GGUF_VT_U16 = 2,
    GGUF_VT_I16 = 3,
    GGUF_VT_U32 = 4,
    GGUF_VT_I32 = 5,
    GGUF_VT_F32 = 6,
    GGUF_VT_BOOL = 7,
    GGUF_VT_STR = 8,
    GGUF_VT_ARR = 9,
    GGUF_VT_U64 = 10,
    GGUF_VT_I64 = 11,
    GGUF_VT_F64 = 12,
    GGUF_VT_COUNT = 13,
} gguf_vtype;

/* "u8", "str", "arr", ...; "?" for an unknown value. */
const char *gguf_vtype_name(gguf_vtype t);
/* Bytes of one element of a fixed-size type (0 for str, arr and unknown types). */
size_t gguf_vtype_size(gguf_vtype t);

typedef struct {
    const char *name;
    clara_type type;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the contiguous dimension; unused dims are 1 */
    uint64_t offset;            /* relative to the data section */
    uint64_t nbytes;
    const uint8_t *data; /* points into the file; aligned to the alignment relative to its start */
} gguf_tensor;

typedef struct gguf_ctx gguf_ctx;

/* ---- reading ---- */

/* Parses a whole file image. `data` must outlive the context; `name` (copied) names the file in
 * error messages. */
clara_status gguf_parse(const uint8_t *data, size_t len, const char *name, gguf_ctx **out);
/* Maps `path` read-only and parses it; the context owns the mapping. */
clara_status gguf_open(const char *path, gguf_ctx **out);
void gguf_free(gguf_ctx *ctx);

const char *gguf_name(const gguf_ctx *ctx);
uint32_t gguf_version(const gguf_ctx *ctx);
uint32_t gguf_alignment(const gguf_ctx *ctx);
uint64_t gguf_data_offset(const gguf_ctx *ctx); /* file offset of the data section */
/* The whole file image (for callers that checksum or re-read it). */
const uint8_t *gguf_file_data(const gguf_ctx *ctx);
size_t gguf_file_size(const gguf_ctx *ctx);
/* For a context from gguf_open: the file as fstat saw it when mapped (false for gguf_parse). */
bool gguf_file_id(const gguf_ctx *ctx, clara_file_id *out);
/* For a context from gguf_open: whether the mapped file is unchanged on disk since
 * (clara_mapped_check); CLARA_OK for gguf_parse. */
clara_status gguf_check_file(const gguf_ctx *ctx);

size_t gguf_n_kv(const gguf_ctx *ctx);
const char *gguf_kv_key(const gguf_ctx *ctx, size_t i);
gguf_vtype gguf_kv_type(const gguf_ctx *ctx, size_t i);
int64_t gguf_find_key(const gguf_ctx *ctx, const char *key); /* -1 if absent */

/* Typed getters. A missing key is CLARA_ERR_NOT_FOUND, a wrong type CLARA_ERR_FORMAT; both with a
 * message naming the file, the key and the expected/actual type. */
clara_status gguf_get_int(const gguf_ctx *ctx, const char *key, int64_t *out);   /* any int */
clara_status gguf_get_uint(const gguf_ctx *ctx, const char *key, uint64_t *out); /* any int >= 0 */
clara_status gguf_get_f32(const gguf_ctx *ctx, const char *key, float *out);     /* f32 or f64 */
clara_status gguf_get_f64(const gguf_ctx *ctx, const char *key, double *out);    /* f32 or f64 */
clara_status gguf_get_bool(const gguf_ctx *ctx, const char *key, bool *out);
clara_status gguf_get_str(const gguf_ctx *ctx, const char *key, const char **out);
/* Any array: its element type and count. */
clara_status gguf_get_arr(const gguf_ctx *ctx, const char *key, gguf_vtype *elem_type, uint64_t *n);
/* Element i of a string array; NULL if absent, not a string array or out of range. */
const char *gguf_get_arr_str(const gguf_ctx *ctx, const char *key, uint64_t i);
/* A numeric (or bool) array of exactly elem_type: pointer into the file, possibly unaligned, so
 * callers memcpy elements out. */
clara_status gguf_get_arr_data(const gguf_ctx *ctx, const char *key, gguf_vtype elem_type,
                               const void **data, uint64_t *n);

/* Same, by KV index (for callers that iterate, such as `clara info`). */
clara_status gguf_kv_arr(const gguf_ctx *ctx, size_t i, gguf_vtype *elem_type, uint64_t *n);
const char *gguf_kv_arr_str(const gguf_ctx *ctx, size_t i, uint64_t j);
const char *gguf_kv_str(const gguf_ctx *ctx, size_t i); /* NULL unless a string */

/* Renders value i for people into buf (always NUL-terminated when n > 0): numbers, true/false,
 * strings quoted and escaped and truncated, arrays as [str × 32019] "a", "b", ... */
void gguf_kv_format(const gguf_ctx *ctx, size_t i, char *buf, size_t n);

size_t gguf_n_tensors(const gguf_ctx *ctx);
const gguf_tensor *gguf_tensor_at(const gguf_ctx *ctx, size_t i); /* NULL if out of range */
const gguf_tensor *gguf_find_tensor(const gguf_ctx *ctx, const char *name);

/* ---- writing ---- */

typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void); /* NULL if out of memory */
/* Releases the writer; a started but unfinished output file is removed. */
void gguf_writer_free(gguf_writer *w);

/* Setters copy key and value. Setting an existing key replaces its value in place (keys are
 * written in first-insertion order). They fail after gguf_writer_begin. */
clara_status gguf_writer_set_u8(gguf_writer *w, const char *key, uint8_t v);
clara_status gguf_writer_set_i8(gguf_writer *w, const char *key, int8_t v);
clara_status gguf_writer_set_u16(gguf_writer *w, const char *key, uint16_t v);
clara_status gguf_writer_set_i16(gguf_writer *w, const char *key, int16_t v);
clara_status gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
clara_status gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
clara_status gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v);
clara_status gguf_writer_set_i64(gguf_writer *w, const char *key, int64_t v);
clara_status gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
clara_status gguf_writer_set_f64(gguf_writer *w, const char *key, double v);
clara_status gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
clara_status gguf_writer_set_str(gguf_writer *w, const char *key, const char *v);
/* Array of a fixed-size type (not str/arr); data holds n native little-endian elements (bool
 * elements are bytes 0/1). */
clara_status gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_vtype elem, const void *data,
                                 uint64_t n);
clara_status gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                                     uint64_t n);

/* Declares the next tensor (data is written later, in declaration order). Validates like the
 * reader: unique name, 1-4 dims, known type, ne[0] a multiple of the block size, no overflow. */
clara_status gguf_writer_add_tensor(gguf_writer *w, const char *name, clara_type type,
                                    uint32_t n_dims, const uint64_t *ne);

/* Opens a temporary file next to `path` and writes header, KVs, tensor infos and padding. */
clara_status gguf_writer_begin(gguf_writer *w, const char *path);
/* The same into a growable memory buffer (for tests and small files). */
clara_status gguf_writer_begin_mem(gguf_writer *w);
/* Appends tensor bytes, in declaration order, in chunks of any size; zero padding to the
 * alignment is inserted after each tensor completes. Fails when writing past the last tensor. */
clara_status gguf_writer_write(gguf_writer *w, const void *data, size_t n);
/* Fails unless every tensor was written in full; then renames the file into place. */
clara_status gguf_writer_finish(gguf_writer *w);
/* For gguf_writer_begin_mem: checks completeness and hands over the buffer (free() it). */
clara_status gguf_writer_finish_mem(gguf_writer *w, uint8_t **out, size_t *len);

#endif
