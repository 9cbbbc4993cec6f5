/* dtype.h - the tensor type table: name, block size and bytes per block of every clara_type
 * (ggml's type ids), and overflow-checked size computations for rows and whole tensors. */
#ifndef CLARA_DTYPE_H
#define CLARA_DTYPE_H

#include <stdint.h>

#include "clara.h"

typedef struct {
    clara_type type;
    const char *name;    /* lower case, as in ggml: "f32", "q4_k", ... */
    uint32_t block_size; /* elements per block: 1 for plain types */
    uint32_t type_size;  /* bytes per block */
} clara_type_info;

/* Table entry for a ggml type id; NULL if the id is unknown or not supported here. */
const clara_type_info *clara_type_get(uint32_t type);

/* "f32", ...; "?" for an unknown id (never NULL, so it can go straight into messages). */
const char *clara_type_name(clara_type t);

/* Type id for a name (case-insensitive), or -1 if unknown. */
int clara_type_from_name(const char *name);

/* Bytes of a row of n_elems elements. Fails (CLARA_ERR_FORMAT) if the type is unknown, n_elems
 * is not a multiple of the block size, or the size overflows 64 bits. */
clara_status clara_type_row_bytes(clara_type t, uint64_t n_elems, uint64_t *out);

/* Bytes of a tensor with dims ne[0..n_dims-1] (ne[0] is the row, the contiguous dimension).
 * Fails if n_dims is 0 or > 4, ne[0] is not a multiple of the block size, or on overflow. */
clara_status clara_tensor_bytes(clara_type t, const uint64_t *ne, uint32_t n_dims, uint64_t *out);

#endif
