/* safetensors.h - reader for Hugging Face safetensors files (single file or a sharded model
 * directory with model.safetensors.index.json). Files are mmapped; tensors point into the map.
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 * {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the
 * data block; offsets are relative to the data block. Every field is validated (see st_parse). */
#ifndef CLARA_CONVERT_SAFETENSORS_H
#define CLARA_CONVERT_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clara.h"

/* Source element types of checkpoint files (safetensors dtypes; the .pth reader maps torch
 * storage classes onto the same enum). */
typedef enum {
    ST_BOOL = 0,
    ST_U8,
    ST_I8,
    ST_F8_E5M2,
    ST_F8_E4M3,
    ST_I16,
    ST_U16,
    ST_F16,
    ST_BF16,
    ST_I32,
    ST_U32,
    ST_F32,
    ST_F64,
    ST_I64,
    ST_U64,
    ST_DTYPE_COUNT,
} st_dtype;

#define ST_MAX_DIMS         8
#define ST_MAX_HEADER_BYTES (100u * 1000u * 1000u)

/* "BF16", "F32", ... (the safetensors spelling); "?" for an invalid value. */
const char *st_dtype_name(st_dtype d);
/* Bytes per element (1 for BOOL and the F8 types); 0 for an invalid value. */
uint32_t st_dtype_size(st_dtype d);
/* The matching clara_type, or -1 where there is none (BOOL, U8, U16, U32, U64, F8_*). */
int st_dtype_to_clara(st_dtype d);
/* Parses a safetensors dtype string; returns -1 if unknown. */
int st_dtype_parse(const char *s);

typedef struct {
    const char *name;
    st_dtype dtype;
    int type; /* clara_type, or -1 (see st_dtype_to_clara) */
    uint32_t n_dims;
    uint64_t shape[ST_MAX_DIMS];
    uint64_t numel;
    const uint8_t *data; /* inside the file's map; row-major, little-endian; may be unaligned */
    uint64_t nbytes;
    const char *file; /* the name/path the file was opened under */
} st_tensor;

typedef struct st_file st_file;

/* Parses a safetensors image held in memory (not copied: tensors point into `data`, which must
 * outlive the st_file). `name` is used in error messages and as st_tensor.file. Validates: header
 * length <= len - 8 and <= ST_MAX_HEADER_BYTES; a JSON object; every entry has a known dtype, a
 * shape of <= 8 non-negative integers, data_offsets begin <= end <= data size with
 * end - begin == numel * element size; no duplicate names and no overlapping tensors;
 * __metadata__ (optional) maps strings to strings. */
clara_status st_parse(const uint8_t *data, size_t len, const char *name, st_file **out);
/* Maps and parses a file; the map is released by st_free. */
clara_status st_open(const char *path, st_file **out);
void st_free(st_file *f);

/* Tensors in header order. */
size_t st_n_tensors(const st_file *f);
const st_tensor *st_tensor_at(const st_file *f, size_t i);
/* Lookup by exact name (binary search); NULL if absent. */
const st_tensor *st_find(const st_file *f, const char *name);
/* Value of a __metadata__ key, or NULL. */
const char *st_metadata(const st_file *f, const char *key);
/* Size of the data block in bytes. */
uint64_t st_data_size(const st_file *f);

/* A model directory: DIR/model.safetensors.index.json with its shards, or DIR/model.safetensors. */
typedef struct st_model st_model;

clara_status st_model_open(const char *dir, st_model **out);
void st_model_free(st_model *m);
/* Tensors sorted by name (byte order). */
size_t st_model_n_tensors(const st_model *m);
const st_tensor *st_model_tensor_at(const st_model *m, size_t i);
const st_tensor *st_model_find(const st_model *m, const char *name);
/* Sum of nbytes over the model's tensors. */
uint64_t st_model_total_bytes(const st_model *m);
size_t st_model_n_shards(const st_model *m);
const st_file *st_model_shard(const st_model *m, size_t i);

#endif
