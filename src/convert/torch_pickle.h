/* torch_pickle.h - an allow-list pickle interpreter for the subset torch.save uses for (nested)
 * dicts of tensors. It is a small stack machine that builds plain values; nothing is ever
 * imported or executed. Only these globals are accepted: torch._utils._rebuild_tensor_v2,
 * torch._utils._rebuild_parameter, collections.OrderedDict and the torch.<T>Storage classes
 * (Float, Half, BFloat16, Double, Long, Int, Short, Char, Byte, Bool); any other global, and any
 * opcode outside the supported set, is an error naming it. Tensors come out as descriptors
 * (storage key, dtype, offset, shape, stride); the .pth reader (pth.h) binds them to data. */
#ifndef CLARA_CONVERT_TORCH_PICKLE_H
#define CLARA_CONVERT_TORCH_PICKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clara.h"
#include "convert/safetensors.h" /* st_dtype, ST_MAX_DIMS */

/* Fixed limits; inputs beyond them are rejected with CLARA_ERR_NOMEM / FORMAT. */
#define PK_MAX_STACK  (1u << 20) /* values on the stack */
#define PK_MAX_MARKS  4096u      /* open MARKs */
#define PK_MAX_MEMO   (1u << 22) /* memo slots */
#define PK_MAX_VALUES (1u << 24) /* objects created in one load */
#define PK_MAX_GLOBAL 256u       /* bytes of a GLOBAL module/name line */

typedef enum {
    PK_NONE,
    PK_BOOL,
    PK_INT,
    PK_FLOAT,
    PK_STR,
    PK_BYTES,
    PK_TUPLE,
    PK_LIST,
    PK_DICT, /* dict or OrderedDict (insertion order kept) */
    PK_GLOBAL,
    PK_STORAGE,
    PK_TENSOR,
} pk_kind;

typedef enum {
    PK_G_REBUILD_TENSOR_V2,
    PK_G_REBUILD_PARAMETER,
    PK_G_ORDERED_DICT,
    PK_G_STORAGE, /* a torch.<T>Storage class; dtype in global.dtype */
} pk_global_id;

typedef struct pk_value pk_value;

struct pk_value {
    pk_kind kind;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            char *s; /* NUL-terminated; may contain NULs for PK_BYTES */
            size_t len;
        } str;
        struct {
            pk_value **items;
            size_t n, cap;
        } seq; /* PK_TUPLE, PK_LIST */
        struct {
            pk_value **keys, **vals;
            size_t n, cap;
        } dict;
        struct {
            pk_global_id id;
            st_dtype dtype;
        } global;
        struct {
            st_dtype dtype;
            const char *key;      /* points into a PK_STR value */
            const char *location; /* "cpu", "cuda:0", ... */
            uint64_t numel;       /* elements in the storage */
        } storage;
        struct {
            const pk_value *storage; /* PK_STORAGE */
            uint64_t offset;         /* in elements */
            uint32_t n_dims;
            uint64_t shape[ST_MAX_DIMS];
            uint64_t stride[ST_MAX_DIMS]; /* in elements */
            bool requires_grad;
        } tensor;
    } u;
};

typedef struct pk_result pk_result;

/* Interprets the pickle in data[0, len) up to STOP. `name` prefixes error messages
 * ("NAME: pickle: ..."). On success *out owns every value; the root is pk_root(*out). Values may
 * be shared (memo) and, in hostile input, form cycles: walkers must bound their depth. */
clara_status pk_load(const uint8_t *data, size_t len, const char *name, pk_result **out);
const pk_value *pk_root(const pk_result *r);
void pk_free(pk_result *r);

/* Name of an opcode byte ("BINUNICODE"), or "unknown". */
const char *pk_opcode_name(uint8_t op);

/* The .pth binding (pth_open, pth_tensor, ...) lives in pth.h; included here so that callers of
 * the torch reader need one header. */
#include "convert/pth.h"

#endif
