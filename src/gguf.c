/* gguf.c - GGUF v2/v3 reader (from a pointer and length, every offset, size and count checked
 * before use) and streaming writer. The reader copies keys and strings into NUL-terminated arena
 * storage, points numeric arrays and tensor data into the file, and indexes keys and tensor
 * names with hash tables (real files have ~1000 tensors and ~50k vocabulary strings). */
#include "gguf.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/mapfile.h"
#include "base/outfile.h"
#include "base/status.h"
#include "dtype.h"

static const uint8_t k_magic[4] = {'G', 'G', 'U', 'F'};

/* ------------------------------------------------------------------------------------------ */
/* value types                                                                                  */

static const char *const k_vt_names[GGUF_VT_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"};
static const uint8_t k_vt_sizes[GGUF_VT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *gguf_vtype_name(gguf_vtype t) {
    return (unsigned)t < GGUF_VT_COUNT ? k_vt_names[t] : "?";
}

size_t gguf_vtype_size(gguf_vtype t) {
    return (unsigned)t < GGUF_VT_COUNT ? k_vt_sizes[t] : 0;
}

static bool vt_is_int(gguf_vtype t) {
    return t <= GGUF_VT_I32 || t == GGUF_VT_U64 || t == GGUF_VT_I64;
}

static bool vt_is_signed(gguf_vtype t) {
    return t == GGUF_VT_I8 || t == GGUF_VT_I16 || t == GGUF_VT_I32 || t == GGUF_VT_I64;
}

static uint64_t load_le(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void store_le(uint8_t *p, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Sign-extends the raw little-endian bits of an integer of type t. */
static int64_t bits_to_i64(gguf_vtype t, uint64_t bits) {
    switch (t) {
    case GGUF_VT_I8:
        return (int8_t)(uint8_t)bits;
    case GGUF_VT_I16:
        return (int16_t)(uint16_t)bits;
    case GGUF_VT_I32:
        return (int32_t)(uint32_t)bits;
    default:
        return (int64_t)bits;
    }
}

static double bits_to_f64(gguf_vtype t, uint64_t bits) {
    if (t == GGUF_VT_F32) {
        uint32_t u = (uint32_t)bits;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    double d = 0;
    memcpy(&d, &bits, 8);
    return d;
}

/* ------------------------------------------------------------------------------------------ */
/* arena for copied strings: chunks, so pointers stay valid as it grows                         */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    char data[];
} arena_chunk;

static char *arena_strdup(arena_chunk **head, const uint8_t *s, size_t n) {
    arena_chunk *c = *head;
    if (!c || c->cap - c->used < n + 1) {
        size_t cap = n + 1 > 65536 ? n + 1 : 65536;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = *head;
        c->used = 0;
        c->cap = cap;
        *head = c;
    }
    char *p = c->data + c->used;
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    c->used += n + 1;
    return p;
}

static void arena_free(arena_chunk *c) {
    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
}

/* Grows *arr (of elem-size items) so that it holds at least need items. */
static bool grow(void **arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / elem) return false;
        nc *= 2;
    }
    void *p = realloc(*arr, nc * elem);
    if (!p) return false;
    *arr = p;
    *cap = nc;
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* hash index from names to positions (open addressing, FNV-1a)                                 */

typedef struct {
    size_t *slots; /* index + 1; 0 = empty */
    size_t mask;
} name_index;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

typedef const char *(*name_of_fn)(const void *items, size_t i);

/* Builds the index; returns the position of the first duplicate in *dup (or SIZE_MAX). */
static bool index_build(name_index *ix, const void *items, size_t n, name_of_fn name_of,
                        size_t *dup) {
    size_t cap = 16;
    while (cap < n * 2) cap *= 2;
    ix->slots = calloc(cap, sizeof *ix->slots);
    if (!ix->slots) return false;
    ix->mask = cap - 1;
    *dup = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        const char *name = name_of(items, i);
        size_t h = (size_t)fnv1a(name) & ix->mask;
        while (ix->slots[h]) {
            if (strcmp(name_of(items, ix->slots[h] - 1), name) == 0) {
                *dup = i;
                return true;
            }
            h = (h + 1) & ix->mask;
        }
        ix->slots[h] = i + 1;
    }
    return true;
}

static int64_t index_find(const name_index *ix, const void *items, name_of_fn name_of,
                          const char *name) {
    if (!ix->slots || !name) return -1;
    size_t h = (size_t)fnv1a(name) & ix->mask;
    while (ix->slots[h]) {
        if (strcmp(name_of(items, ix->slots[h] - 1), name) == 0) return (int64_t)ix->slots[h] - 1;
        h = (h + 1) & ix->mask;
    }
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* reader context                                                                               */

typedef struct {
    const char *key;
    gguf_vtype type;
    gguf_vtype elem;    /* arrays: element type */
    uint64_t n;         /* arrays: element count */
    uint64_t bits;      /* scalars: raw little-endian bits, zero-extended */
    const char *str;    /* strings */
    const uint8_t *raw; /* arrays of fixed-size elements: data in the file */
    const char **strs;  /* string arrays */
} gguf_kv;

struct gguf_ctx {
    char *name;
    const uint8_t *data;
    size_t len;
    clara_mapped map; /* owned mapping (gguf_open) */
    uint32_t version, alignment;
    uint64_t data_offset;
    gguf_kv *kvs;
    size_t n_kv, cap_kv;
    gguf_tensor *tensors;
    size_t n_tensors, cap_tensors;
    name_index kv_index, tensor_index;
    arena_chunk *arena;
};

static const char *kv_name_of(const void *items, size_t i) {
    return ((const gguf_kv *)items)[i].key;
}

static const char *tensor_name_of(const void *items, size_t i) {
    return ((const gguf_tensor *)items)[i].name;
}

typedef struct {
    gguf_ctx *ctx;
    size_t pos;
} reader;

static size_t rd_left(const reader *r) {
    return r->ctx->len - r->pos;
}

static clara_status rd_truncated(const reader *r, const char *what, uint64_t need) {
    return clara_fail(CLARA_ERR_FORMAT,
                      "%s: truncated: %s needs %" PRIu64 " bytes at offset %zu, %zu left",
                      r->ctx->name, what, need, r->pos, rd_left(r));
}

static clara_status rd_uint(reader *r, size_t n, const char *what, uint64_t *out) {
    if (rd_left(r) < n) return rd_truncated(r, what, n);
    *out = load_le(r->ctx->data + r->pos, n);
    r->pos += n;
    return CLARA_OK;
}

static clara_status rd_u32(reader *r, const char *what, uint32_t *out) {
    uint64_t v = 0;
    clara_status s = rd_uint(r, 4, what, &v);
    *out = (uint32_t)v;
    return s;
}

/* Reads a GGUF string into the arena. NUL bytes are refused: callers get C strings. */
static clara_status rd_str(reader *r, const char *what, const char **out) {
    uint64_t n = 0;
    clara_status s = rd_uint(r, 8, what, &n);
    if (s != CLARA_OK) return s;
    if (n > rd_left(r))
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: %s: string length %" PRIu64 " at offset %zu runs past the end of "
                          "the file (%zu bytes left)",
                          r->ctx->name, what, n, r->pos - 8, rd_left(r));
    const uint8_t *p = r->ctx->data + r->pos;
    if (memchr(p, 0, (size_t)n))
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s: string at offset %zu contains a NUL byte",
                          r->ctx->name, what, r->pos - 8);
    char *c = arena_strdup(&r->ctx->arena, p, (size_t)n);
    if (!c) return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", r->ctx->name);
    r->pos += (size_t)n;
    *out = c;
    return CLARA_OK;
}

static clara_status check_bools(reader *r, const uint8_t *p, uint64_t n, const char *key) {
    for (uint64_t i = 0; i < n; i++)
        if (p[i] > 1)
            return clara_fail(CLARA_ERR_FORMAT, "%s: key '%s': bool byte %u is not 0 or 1",
                              r->ctx->name, key, p[i]);
    return CLARA_OK;
}

static clara_status rd_str_array(reader *r, gguf_kv *kv) {
    /* each string takes at least its 8-byte length: bound the count before allocating */
    if (kv->n > rd_left(r) / 8)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: key '%s': array of %" PRIu64 " strings cannot fit in the %zu bytes "
                          "left",
                          r->ctx->name, kv->key, kv->n, rd_left(r));
    kv->strs = malloc((size_t)(kv->n ? kv->n : 1) * sizeof *kv->strs);
    if (!kv->strs) return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", r->ctx->name);
    for (uint64_t j = 0; j < kv->n; j++) {
        clara_status s = rd_str(r, kv->key, &kv->strs[j]);
        if (s != CLARA_OK) return s;
    }
    return CLARA_OK;
}

static clara_status rd_array(reader *r, gguf_kv *kv) {
    uint32_t et = 0;
    clara_status s = rd_u32(r, "array element type", &et);
    if (s == CLARA_OK) s = rd_uint(r, 8, "array count", &kv->n);
    if (s != CLARA_OK) return s;
    if (et == GGUF_VT_ARR)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: key '%s': nested arrays are not supported",
                          r->ctx->name, kv->key);
    if (et >= GGUF_VT_COUNT)
        return clara_fail(CLARA_ERR_FORMAT, "%s: key '%s': unknown array element type %u",
                          r->ctx->name, kv->key, et);
    kv->elem = (gguf_vtype)et;
    if (kv->elem == GGUF_VT_STR) return rd_str_array(r, kv);
    uint64_t bytes;
    if (!clara_mul_u64(kv->n, k_vt_sizes[et], &bytes) || bytes > rd_left(r))
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: key '%s': array of %" PRIu64 " %s runs past the end of the file "
                          "(%zu bytes left)",
                          r->ctx->name, kv->key, kv->n, k_vt_names[et], rd_left(r));
    kv->raw = r->ctx->data + r->pos;
    if (kv->elem == GGUF_VT_BOOL && (s = check_bools(r, kv->raw, kv->n, kv->key)) != CLARA_OK)
        return s;
    r->pos += (size_t)bytes;
    return CLARA_OK;
}

static clara_status rd_value(reader *r, gguf_kv *kv) {
    if (kv->type == GGUF_VT_STR) return rd_str(r, kv->key, &kv->str);
    if (kv->type == GGUF_VT_ARR) return rd_array(r, kv);
    size_t size = k_vt_sizes[kv->type];
    const uint8_t *p = r->ctx->data + r->pos;
    clara_status s = rd_uint(r, size, kv->key, &kv->bits);
    if (s == CLARA_OK && kv->type == GGUF_VT_BOOL) s = check_bools(r, p, 1, kv->key);
    return s;
}

static clara_status rd_kvs(reader *r, uint64_t n_kv) {
    gguf_ctx *c = r->ctx;
    for (uint64_t i = 0; i < n_kv; i++) {
        if (!grow((void **)&c->kvs, &c->cap_kv, c->n_kv + 1, sizeof *c->kvs))
            return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", c->name);
        gguf_kv *kv = &c->kvs[c->n_kv];
        memset(kv, 0, sizeof *kv);
        c->n_kv++; /* counted before filling so that gguf_free releases partial arrays */
        uint32_t type;
        clara_status s = rd_str(r, "key", &kv->key);
        if (s == CLARA_OK) s = rd_u32(r, "value type", &type);
        if (s != CLARA_OK) return s;
        if (type >= GGUF_VT_COUNT)
            return clara_fail(CLARA_ERR_FORMAT, "%s: key '%s': unknown value type %u", c->name,
                              kv->key, type);
        kv->type = (gguf_vtype)type;
        if ((s = rd_value(r, kv)) != CLARA_OK) return s;
    }
    size_t dup = SIZE_MAX;
    if (!index_build(&c->kv_index, c->kvs, c->n_kv, kv_name_of, &dup))
        return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", c->name);
    if (dup != SIZE_MAX)
        return clara_fail(CLARA_ERR_FORMAT, "%s: duplicate key '%s'", c->name, c->kvs[dup].key);
    return CLARA_OK;
}

static clara_status rd_alignment(gguf_ctx *c) {
    c->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = gguf_find_key(c, "general.alignment");
    if (i < 0) return CLARA_OK;
    const gguf_kv *kv = &c->kvs[i];
    if (kv->type != GGUF_VT_U32)
        return clara_fail(CLARA_ERR_FORMAT, "%s: general.alignment has type %s, expected u32",
                          c->name, gguf_vtype_name(kv->type));
    uint32_t a = (uint32_t)kv->bits;
    if (a == 0 || (a & (a - 1)) != 0)
        return clara_fail(CLARA_ERR_FORMAT, "%s: general.alignment %u is not a power of two",
                          c->name, a);
    c->alignment = a;
    return CLARA_OK;
}

static clara_status rd_tensor_info(reader *r, gguf_tensor *t) {
    gguf_ctx *c = r->ctx;
    uint32_t type = 0;
    clara_status s = rd_str(r, "tensor name", &t->name);
    if (s == CLARA_OK) s = rd_u32(r, "tensor n_dims", &t->n_dims);
    if (s != CLARA_OK) return s;
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s' has %u dimensions (must be 1 to 4)",
                          c->name, t->name, t->n_dims);
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        if ((s = rd_uint(r, 8, "tensor dimension", &t->ne[d])) != CLARA_OK) return s;
    if ((s = rd_u32(r, "tensor type", &type)) != CLARA_OK) return s;
    if ((s = rd_uint(r, 8, "tensor offset", &t->offset)) != CLARA_OK) return s;
    if (!clara_type_get(type))
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: tensor '%s' has unknown type %u", c->name,
                          t->name, type);
    t->type = (clara_type)type;
    if ((s = clara_tensor_bytes(t->type, t->ne, t->n_dims, &t->nbytes)) != CLARA_OK)
        return clara_fail_context(s, "%s: tensor '%s'", c->name, t->name);
    if (t->offset % c->alignment != 0)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: tensor '%s' offset %" PRIu64 " is not aligned to %u", c->name,
                          t->name, t->offset, c->alignment);
    return CLARA_OK;
}

static int cmp_by_offset(const void *a, const void *b) {
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Every tensor lies inside the file and no two share a byte. */
static clara_status check_tensor_data(gguf_ctx *c) {
    for (size_t i = 0; i < c->n_tensors; i++) {
        gguf_tensor *t = &c->tensors[i];
        uint64_t start, end;
        if (!clara_add_u64(c->data_offset, t->offset, &start) ||
            !clara_add_u64(start, t->nbytes, &end) || end > c->len)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: tensor '%s' data (offset %" PRIu64 ", %" PRIu64
                              " bytes) runs past the end of the file (%zu bytes)",
                              c->name, t->name, t->offset, t->nbytes, c->len);
        t->data = c->data + start;
    }
    if (c->n_tensors < 2) return CLARA_OK;
    const gguf_tensor **order = malloc(c->n_tensors * sizeof *order);
    if (!order) return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", c->name);
    for (size_t i = 0; i < c->n_tensors; i++) order[i] = &c->tensors[i];
    qsort(order, c->n_tensors, sizeof *order, cmp_by_offset);
    clara_status s = CLARA_OK;
    for (size_t i = 1; i < c->n_tensors && s == CLARA_OK; i++)
        if (order[i - 1]->offset + order[i - 1]->nbytes > order[i]->offset)
            s = clara_fail(CLARA_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap", c->name,
                           order[i - 1]->name, order[i]->name);
    free(order);
    return s;
}

static clara_status rd_tensors(reader *r, uint64_t n_tensors) {
    gguf_ctx *c = r->ctx;
    for (uint64_t i = 0; i < n_tensors; i++) {
        if (!grow((void **)&c->tensors, &c->cap_tensors, c->n_tensors + 1, sizeof *c->tensors))
            return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", c->name);
        gguf_tensor *t = &c->tensors[c->n_tensors];
        memset(t, 0, sizeof *t);
        clara_status s = rd_tensor_info(r, t);
        if (s != CLARA_OK) return s;
        c->n_tensors++;
    }
    size_t dup = SIZE_MAX;
    if (!index_build(&c->tensor_index, c->tensors, c->n_tensors, tensor_name_of, &dup))
        return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", c->name);
    if (dup != SIZE_MAX)
        return clara_fail(CLARA_ERR_FORMAT, "%s: duplicate tensor '%s'", c->name,
                          c->tensors[dup].name);
    return CLARA_OK;
}

static clara_status rd_header(reader *r, uint64_t *n_tensors, uint64_t *n_kv) {
    gguf_ctx *c = r->ctx;
    if (c->len < 4 || memcmp(c->data, k_magic, 4) != 0)
        return clara_fail(CLARA_ERR_FORMAT, "%s: not a GGUF file (bad magic)", c->name);
    r->pos = 4;
    clara_status s = rd_u32(r, "version", &c->version);
    if (s != CLARA_OK) return s;
    if (c->version != 2 && c->version != 3) {
        uint32_t v = c->version;
        uint32_t swapped = (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24);
        if (swapped == 2 || swapped == 3)
            return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: big-endian GGUF is not supported",
                              c->name);
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: GGUF version %u is not supported (only versions 2 and 3)", c->name,
                          v);
    }
    if ((s = rd_uint(r, 8, "tensor count", n_tensors)) != CLARA_OK) return s;
    if ((s = rd_uint(r, 8, "KV count", n_kv)) != CLARA_OK) return s;
    /* a KV takes at least 13 bytes (key length, type, a u8), a tensor info at least 32 */
    if (*n_kv > rd_left(r) / 13)
        return clara_fail(CLARA_ERR_FORMAT, "%s: KV count %" PRIu64 " is impossible in %zu bytes",
                          c->name, *n_kv, rd_left(r));
    if (*n_tensors > rd_left(r) / 32)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: tensor count %" PRIu64 " is impossible in %zu bytes", c->name,
                          *n_tensors, rd_left(r));
    return CLARA_OK;
}

static clara_status parse_all(gguf_ctx *c) {
    reader r = {c, 0};
    uint64_t n_tensors = 0, n_kv = 0;
    clara_status s = rd_header(&r, &n_tensors, &n_kv);
    if (s == CLARA_OK) s = rd_kvs(&r, n_kv);
    if (s == CLARA_OK) s = rd_alignment(c);
    if (s == CLARA_OK) s = rd_tensors(&r, n_tensors);
    if (s != CLARA_OK) return s;
    uint64_t pad = (c->alignment - r.pos % c->alignment) % c->alignment;
    c->data_offset = r.pos + pad;
    /* a file without tensors may end before the padding; one with tensors needs its data */
    if (c->n_tensors > 0 && c->data_offset > c->len)
        return clara_fail(CLARA_ERR_FORMAT, "%s: file ends in the padding before the data section",
                          c->name);
    return check_tensor_data(c);
}

clara_status gguf_parse(const uint8_t *data, size_t len, const char *name, gguf_ctx **out) {
    *out = NULL;
    if (!data && len) return clara_fail(CLARA_ERR_INVALID_ARG, "gguf_parse: no data");
    gguf_ctx *c = calloc(1, sizeof *c);
    if (c) c->name = strdup(name ? name : "gguf");
    if (!c || !c->name) {
        free(c);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    c->data = data;
    c->len = len;
    clara_status s = parse_all(c);
    if (s != CLARA_OK) {
        gguf_free(c);
        return s;
    }
    *out = c;
    return CLARA_OK;
}

clara_status gguf_open(const char *path, gguf_ctx **out) {
    *out = NULL;
    clara_mapped m;
    clara_status s = clara_map_file(path, &m);
    if (s != CLARA_OK) return s;
    s = gguf_parse(m.data, m.size, path, out);
    if (s != CLARA_OK) {
        clara_unmap_file(&m);
        return s;
    }
    (*out)->map = m;
    return CLARA_OK;
}

void gguf_free(gguf_ctx *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_kv; i++) free(c->kvs[i].strs);
    free(c->kvs);
    free(c->tensors);
    free(c->kv_index.slots);
    free(c->tensor_index.slots);
    arena_free(c->arena);
    clara_unmap_file(&c->map);
    free(c->name);
    free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* accessors                                                                                    */

const char *gguf_name(const gguf_ctx *c) {
    return c->name;
}
uint32_t gguf_version(const gguf_ctx *c) {
    return c->version;
}
uint32_t gguf_alignment(const gguf_ctx *c) {
    return c->alignment;
}
uint64_t gguf_data_offset(const gguf_ctx *c) {
    return c->data_offset;
}
const uint8_t *gguf_file_data(const gguf_ctx *c) {
    return c->data;
}
size_t gguf_file_size(const gguf_ctx *c) {
    return c->len;
}
bool gguf_file_id(const gguf_ctx *c, clara_file_id *out) {
    if (!c->map.data) return false;
    *out = c->map.id;
    return true;
}
clara_status gguf_check_file(const gguf_ctx *c) {
    return clara_mapped_check(&c->map, c->name);
}
size_t gguf_n_kv(const gguf_ctx *c) {
    return c->n_kv;
}

const char *gguf_kv_key(const gguf_ctx *c, size_t i) {
    return i < c->n_kv ? c->kvs[i].key : NULL;
}

gguf_vtype gguf_kv_type(const gguf_ctx *c, size_t i) {
    return i < c->n_kv ? c->kvs[i].type : GGUF_VT_COUNT;
}

int64_t gguf_find_key(const gguf_ctx *c, const char *key) {
    return index_find(&c->kv_index, c->kvs, kv_name_of, key);
}

size_t gguf_n_tensors(const gguf_ctx *c) {
    return c->n_tensors;
}

const gguf_tensor *gguf_tensor_at(const gguf_ctx *c, size_t i) {
    return i < c->n_tensors ? &c->tensors[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_ctx *c, const char *name) {
    int64_t i = index_find(&c->tensor_index, c->tensors, tensor_name_of, name);
    return i < 0 ? NULL : &c->tensors[i];
}

/* Finds key; fails with NOT_FOUND naming what was wanted. */
static clara_status get_kv(const gguf_ctx *c, const char *key, const char *want,
                           const gguf_kv **out) {
    int64_t i = gguf_find_key(c, key);
    if (i < 0)
        return clara_fail(CLARA_ERR_NOT_FOUND, "%s: key '%s' (%s) not found", c->name,
                          key ? key : "(null)", want);
    *out = &c->kvs[i];
    return CLARA_OK;
}

static clara_status wrong_type(const gguf_ctx *c, const gguf_kv *kv, const char *want) {
    if (kv->type == GGUF_VT_ARR)
        return clara_fail(CLARA_ERR_FORMAT, "%s: key '%s' is an array of %s, expected %s", c->name,
                          kv->key, gguf_vtype_name(kv->elem), want);
    return clara_fail(CLARA_ERR_FORMAT, "%s: key '%s' has type %s, expected %s", c->name, kv->key,
                      gguf_vtype_name(kv->type), want);
}

clara_status gguf_get_int(const gguf_ctx *c, const char *key, int64_t *out) {
    const gguf_kv *kv = NULL;
    clara_status s = get_kv(c, key, "integer", &kv);
    if (s != CLARA_OK) return s;
    if (!vt_is_int(kv->type)) return wrong_type(c, kv, "an integer");
    if (kv->type == GGUF_VT_U64 && kv->bits > INT64_MAX)
        return clara_fail(CLARA_ERR_FORMAT, "%s: key '%s' value %" PRIu64 " is out of range",
                          c->name, kv->key, kv->bits);
    *out = bits_to_i64(kv->type, kv->bits);
    return CLARA_OK;
}

clara_status gguf_get_uint(const gguf_ctx *c, const char *key, uint64_t *out) {
    const gguf_kv *kv = NULL;
    clara_status s = get_kv(c, key, "unsigned integer", &kv);
    if (s != CLARA_OK) return s;
    if (!vt_is_int(kv->type)) return wrong_type(c, kv, "an unsigned integer");
    if (vt_is_signed(kv->type) && bits_to_i64(kv->type, kv->bits) < 0)
        return clara_fail(CLARA_ERR_FORMAT, "%s: key '%s' is negative (%" PRId64 ")", c->name,
                          kv->key, bits_to_i64(kv->type, kv->bits));
    *out = vt_is_signed(kv->type) ? (uint64_t)bits_to_i64(kv->type, kv->bits) : kv->bits;
    return CLARA_OK;
}

clara_status gguf_get_f64(const gguf_ctx *c, const char *key, double *out) {
    const gguf_kv *kv = NULL;
    clara_status s = get_kv(c, key, "float", &kv);
    if (s != CLARA_OK) return s;
    if (kv->type != GGUF_VT_F32 && kv->type != GGUF_VT_F64) return wrong_type(c, kv, "f32 or f64");
    *out = bits_to_f64(kv->type, kv->bits);
    return CLARA_OK;
}

clara_status gguf_get_f32(const gguf_ctx *c, const char *key, float *out) {
    double d = 0;
    clara_status s = gguf_get_f64(c, key, &d);
    if (s == CLARA_OK) *out = (float)d;
    return s;
}

clara_status gguf_get_bool(const gguf_ctx *c, const char *key, bool *out) {
    const gguf_kv *kv = NULL;
    clara_status s = get_kv(c, key, "bool", &kv);
    if (s != CLARA_OK) return s;
    if (kv->type != GGUF_VT_BOOL) return wrong_type(c, kv, "bool");
    *out = kv->bits != 0;
    return CLARA_OK;
}

clara_status gguf_get_str(const gguf_ctx *c, const char *key, const char **out) {
    const gguf_kv *kv = NULL;
    clara_status s = get_kv(c, key, "string", &kv);
    if (s != CLARA_OK) return s;
    if (kv->type != GGUF_VT_STR) return wrong_type(c, kv, "str");
    *out = kv->str;
    return CLARA_OK;
}

clara_status gguf_get_arr(const gguf_ctx *c, const char *key, gguf_vtype *elem_type, uint64_t *n) {
    const gguf_kv *kv = NULL;
    clara_status s = get_kv(c, key, "array", &kv);
    if (s != CLARA_OK) return s;
    if (kv->type != GGUF_VT_ARR) return wrong_type(c, kv, "an array");
    if (elem_type) *elem_type = kv->elem;
    if (n) *n = kv->n;
    return CLARA_OK;
}

static const char *arr_str(const gguf_kv *kv, uint64_t j) {
    if (kv->type != GGUF_VT_ARR || kv->elem != GGUF_VT_STR || j >= kv->n) return NULL;
    return kv->strs[j];
}

const char *gguf_get_arr_str(const gguf_ctx *c, const char *key, uint64_t i) {
    int64_t k = gguf_find_key(c, key);
    return k < 0 ? NULL : arr_str(&c->kvs[k], i);
}

clara_status gguf_get_arr_data(const gguf_ctx *c, const char *key, gguf_vtype elem_type,
                               const void **data, uint64_t *n) {
    const gguf_kv *kv = NULL;
    clara_status s = get_kv(c, key, "array", &kv);
    if (s != CLARA_OK) return s;
    if (kv->type != GGUF_VT_ARR || kv->elem != elem_type || kv->elem == GGUF_VT_STR) {
        char want[32];
        snprintf(want, sizeof want, "an array of %s", gguf_vtype_name(elem_type));
        return wrong_type(c, kv, want);
    }
    *data = kv->raw;
    *n = kv->n;
    return CLARA_OK;
}

clara_status gguf_kv_arr(const gguf_ctx *c, size_t i, gguf_vtype *elem_type, uint64_t *n) {
    if (i >= c->n_kv || c->kvs[i].type != GGUF_VT_ARR)
        return clara_fail(CLARA_ERR_INVALID_ARG, "%s: KV %zu is not an array", c->name, i);
    *elem_type = c->kvs[i].elem;
    *n = c->kvs[i].n;
    return CLARA_OK;
}

const char *gguf_kv_arr_str(const gguf_ctx *c, size_t i, uint64_t j) {
    return i < c->n_kv ? arr_str(&c->kvs[i], j) : NULL;
}

const char *gguf_kv_str(const gguf_ctx *c, size_t i) {
    return i < c->n_kv && c->kvs[i].type == GGUF_VT_STR ? c->kvs[i].str : NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* formatting values for people                                                                 */

typedef struct {
    char *buf;
    size_t cap, pos; /* pos may pass cap: output is clipped */
} fmt_buf;

static void fb_printf(fmt_buf *b, const char *fmt, ...) CLARA_PRINTF(2, 3);
static void fb_printf(fmt_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->pos < b->cap ? b->cap - b->pos : 0;
    int n = vsnprintf(room ? b->buf + b->pos : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) b->pos += (size_t)n;
}

/* Quoted, escaped, at most max source bytes (cut at a UTF-8 boundary) then "...". */
static void fb_string(fmt_buf *b, const char *s, size_t max) {
    size_t n = strlen(s), cut = n;
    if (n > max) {
        cut = max;
        while (cut > 0 && ((uint8_t)s[cut] & 0xc0) == 0x80) cut--;
    }
    fb_printf(b, "\"");
    for (size_t i = 0; i < cut; i++) {
        uint8_t ch = (uint8_t)s[i];
        if (ch == '"' || ch == '\\')
            fb_printf(b, "\\%c", ch);
        else if (ch == '\n')
            fb_printf(b, "\\n");
        else if (ch == '\t')
            fb_printf(b, "\\t");
        else if (ch == '\r')
            fb_printf(b, "\\r");
        else if (ch < 0x20 || ch == 0x7f)
            fb_printf(b, "\\x%02x", ch);
        else
            fb_printf(b, "%c", ch);
    }
    fb_printf(b, cut < n ? "\"..." : "\"");
}

static void fb_scalar(fmt_buf *b, gguf_vtype t, uint64_t bits) {
    if (t == GGUF_VT_BOOL)
        fb_printf(b, "%s", bits ? "true" : "false");
    else if (t == GGUF_VT_F32)
        fb_printf(b, "%.9g", bits_to_f64(t, bits));
    else if (t == GGUF_VT_F64)
        fb_printf(b, "%.17g", bits_to_f64(t, bits));
    else if (vt_is_signed(t))
        fb_printf(b, "%" PRId64, bits_to_i64(t, bits));
    else
        fb_printf(b, "%" PRIu64, bits);
}

void gguf_kv_format(const gguf_ctx *c, size_t i, char *buf, size_t n) {
    if (!buf || n == 0) return;
    buf[0] = '\0';
    if (i >= c->n_kv) return;
    const gguf_kv *kv = &c->kvs[i];
    fmt_buf b = {buf, n, 0};
    if (kv->type == GGUF_VT_STR) {
        fb_string(&b, kv->str, 120);
    } else if (kv->type != GGUF_VT_ARR) {
        fb_scalar(&b, kv->type, kv->bits);
    } else {
        const uint64_t show = 6;
        fb_printf(&b, "[%s \xc3\x97 %" PRIu64 "]", gguf_vtype_name(kv->elem), kv->n);
        for (uint64_t j = 0; j < kv->n && j < show && b.pos < n; j++) {
            fb_printf(&b, j ? ", " : " ");
            if (kv->elem == GGUF_VT_STR) {
                fb_string(&b, kv->strs[j], 24);
            } else {
                size_t sz = k_vt_sizes[kv->elem];
                fb_scalar(&b, kv->elem, load_le(kv->raw + j * sz, sz));
            }
        }
        if (kv->n > show) fb_printf(&b, ", ...");
    }
    if (b.pos >= n && n > 4) memcpy(buf + n - 4, "...", 4); /* show that it was clipped */
}

/* ------------------------------------------------------------------------------------------ */
/* writer                                                                                       */

typedef struct {
    char *key;
    gguf_vtype type, elem;
    uint64_t n, bits;
    char *str;
    uint8_t *raw; /* fixed-size array elements, little-endian */
    char **strs;
} wkv;

typedef struct {
    char *name;
    clara_type type;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint64_t nbytes, offset;
} wtensor;

enum { W_NEW, W_STARTED, W_DONE, W_FAILED };

struct gguf_writer {
    wkv *kvs;
    size_t n_kv, cap_kv;
    wtensor *tensors;
    size_t n_tensors, cap_tensors;
    int state;
    bool to_mem;
    clara_outfile file;
    uint8_t *mem; /* memory output, or the encoded header before it is written */
    size_t mem_len, mem_cap;
    uint32_t alignment;
    size_t cur;        /* tensor being written */
    uint64_t cur_done; /* its bytes written so far */
};

gguf_writer *gguf_writer_new(void) {
    gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

static void wkv_clear(wkv *kv) {
    free(kv->str);
    free(kv->raw);
    for (uint64_t j = 0; kv->strs && j < kv->n; j++) free(kv->strs[j]);
    free(kv->strs);
    kv->str = NULL;
    kv->raw = NULL;
    kv->strs = NULL;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    if (w->state == W_STARTED || w->state == W_FAILED) {
        if (!w->to_mem && w->file.fp) clara_outfile_abort(&w->file);
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        wkv_clear(&w->kvs[i]);
        free(w->kvs[i].key);
    }
    free(w->kvs);
    for (size_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->tensors);
    free(w->mem);
    free(w);
}

/* Finds the slot for key (existing, cleared; or new at the end of the insertion order). */
static clara_status w_slot(gguf_writer *w, const char *key, wkv **out) {
    if (w->state != W_NEW)
        return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: cannot set '%s' after begin",
                          key ? key : "(null)");
    if (!key || !*key) return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: empty key");
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, key) == 0) {
            wkv_clear(&w->kvs[i]);
            *out = &w->kvs[i];
            return CLARA_OK;
        }
    char *k = strdup(key);
    if (!k || !grow((void **)&w->kvs, &w->cap_kv, w->n_kv + 1, sizeof *w->kvs)) {
        free(k);
        return clara_fail(CLARA_ERR_NOMEM, "gguf writer: out of memory");
    }
    wkv *kv = &w->kvs[w->n_kv++];
    memset(kv, 0, sizeof *kv);
    kv->key = k;
    *out = kv;
    return CLARA_OK;
}

static clara_status w_scalar(gguf_writer *w, const char *key, gguf_vtype t, uint64_t bits) {
    wkv *kv = NULL;
    clara_status s = w_slot(w, key, &kv);
    if (s != CLARA_OK) return s;
    kv->type = t;
    kv->bits = bits;
    return CLARA_OK;
}

clara_status gguf_writer_set_u8(gguf_writer *w, const char *key, uint8_t v) {
    return w_scalar(w, key, GGUF_VT_U8, v);
}
clara_status gguf_writer_set_i8(gguf_writer *w, const char *key, int8_t v) {
    return w_scalar(w, key, GGUF_VT_I8, (uint8_t)v);
}
clara_status gguf_writer_set_u16(gguf_writer *w, const char *key, uint16_t v) {
    return w_scalar(w, key, GGUF_VT_U16, v);
}
clara_status gguf_writer_set_i16(gguf_writer *w, const char *key, int16_t v) {
    return w_scalar(w, key, GGUF_VT_I16, (uint16_t)v);
}
clara_status gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v) {
    return w_scalar(w, key, GGUF_VT_U32, v);
}
clara_status gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v) {
    return w_scalar(w, key, GGUF_VT_I32, (uint32_t)v);
}
clara_status gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v) {
    return w_scalar(w, key, GGUF_VT_U64, v);
}
clara_status gguf_writer_set_i64(gguf_writer *w, const char *key, int64_t v) {
    return w_scalar(w, key, GGUF_VT_I64, (uint64_t)v);
}
clara_status gguf_writer_set_f32(gguf_writer *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    return w_scalar(w, key, GGUF_VT_F32, u);
}
clara_status gguf_writer_set_f64(gguf_writer *w, const char *key, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    return w_scalar(w, key, GGUF_VT_F64, u);
}
clara_status gguf_writer_set_bool(gguf_writer *w, const char *key, bool v) {
    return w_scalar(w, key, GGUF_VT_BOOL, v ? 1 : 0);
}

clara_status gguf_writer_set_str(gguf_writer *w, const char *key, const char *v) {
    if (!v) return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: NULL string value");
    char *copy = strdup(v);
    if (!copy) return clara_fail(CLARA_ERR_NOMEM, "gguf writer: out of memory");
    wkv *kv = NULL;
    clara_status s = w_slot(w, key, &kv);
    if (s != CLARA_OK) {
        free(copy);
        return s;
    }
    kv->type = GGUF_VT_STR;
    kv->str = copy;
    return CLARA_OK;
}

clara_status gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_vtype elem, const void *data,
                                 uint64_t n) {
    size_t sz = gguf_vtype_size(elem);
    if (sz == 0)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "gguf writer: '%s': set_arr needs a fixed-size element type, not %s",
                          key ? key : "(null)", gguf_vtype_name(elem));
    if ((n && !data) || n > SIZE_MAX / sz)
        return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: '%s': bad array",
                          key ? key : "(null)");
    const uint8_t *src = data;
    for (uint64_t j = 0; elem == GGUF_VT_BOOL && j < n; j++)
        if (src[j] > 1)
            return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: '%s': bool element not 0/1",
                              key);
    uint8_t *raw = malloc(n ? (size_t)n * sz : 1);
    if (!raw) return clara_fail(CLARA_ERR_NOMEM, "gguf writer: out of memory");
    /* elements arrive in host order, possibly unaligned (e.g. an array read straight from a
     * mapped GGUF); the file is little-endian */
    for (uint64_t j = 0; j < n; j++) {
        uint64_t v = 0;
        if (sz == 1) {
            v = src[j];
        } else if (sz == 2) {
            uint16_t x;
            memcpy(&x, src + j * 2, 2);
            v = x;
        } else if (sz == 4) {
            uint32_t x;
            memcpy(&x, src + j * 4, 4);
            v = x;
        } else {
            memcpy(&v, src + j * 8, 8);
        }
        store_le(raw + j * sz, v, sz);
    }
    wkv *kv = NULL;
    clara_status s = w_slot(w, key, &kv);
    if (s != CLARA_OK) {
        free(raw);
        return s;
    }
    kv->type = GGUF_VT_ARR;
    kv->elem = elem;
    kv->n = n;
    kv->raw = raw;
    return CLARA_OK;
}

clara_status gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                                     uint64_t n) {
    if ((n && !strs) || n > SIZE_MAX / sizeof(char *))
        return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: '%s': bad string array",
                          key ? key : "(null)");
    for (uint64_t j = 0; j < n; j++)
        if (!strs[j])
            return clara_fail(CLARA_ERR_INVALID_ARG,
                              "gguf writer: '%s': string %" PRIu64 " is NULL", key ? key : "(null)",
                              j);
    char **copy = calloc(n ? (size_t)n : 1, sizeof *copy);
    bool ok = copy != NULL;
    for (uint64_t j = 0; ok && j < n; j++) ok = (copy[j] = strdup(strs[j])) != NULL;
    wkv *kv = NULL;
    clara_status s =
        ok ? w_slot(w, key, &kv) : clara_fail(CLARA_ERR_NOMEM, "gguf writer: out of memory");
    if (s != CLARA_OK) {
        for (uint64_t j = 0; copy && j < n; j++) free(copy[j]);
        free(copy);
        return s;
    }
    kv->type = GGUF_VT_ARR;
    kv->elem = GGUF_VT_STR;
    kv->n = n;
    kv->strs = copy;
    return CLARA_OK;
}

clara_status gguf_writer_add_tensor(gguf_writer *w, const char *name, clara_type type,
                                    uint32_t n_dims, const uint64_t *ne) {
    if (w->state != W_NEW)
        return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: cannot add tensors after begin");
    if (!name || !*name || !ne)
        return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: tensor without a name or shape");
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: duplicate tensor '%s'", name);
    wtensor t = {0};
    t.type = type;
    t.n_dims = n_dims;
    clara_status s = clara_tensor_bytes(type, ne, n_dims, &t.nbytes);
    if (s != CLARA_OK) return clara_fail_context(CLARA_ERR_INVALID_ARG, "tensor '%s'", name);
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t.ne[d] = d < n_dims ? ne[d] : 1;
    t.name = strdup(name);
    if (!t.name ||
        !grow((void **)&w->tensors, &w->cap_tensors, w->n_tensors + 1, sizeof *w->tensors)) {
        free(t.name);
        return clara_fail(CLARA_ERR_NOMEM, "gguf writer: out of memory");
    }
    w->tensors[w->n_tensors++] = t;
    return CLARA_OK;
}

/* ---- encoding the metadata into w->mem ---- */

static bool mem_put(gguf_writer *w, const void *p, size_t n) {
    if (!grow((void **)&w->mem, &w->mem_cap, w->mem_len + n, 1)) return false;
    if (n) memcpy(w->mem + w->mem_len, p, n);
    w->mem_len += n;
    return true;
}

static bool mem_uint(gguf_writer *w, uint64_t v, size_t n) {
    uint8_t b[8];
    store_le(b, v, n);
    return mem_put(w, b, n);
}

static bool mem_str(gguf_writer *w, const char *s) {
    size_t n = strlen(s);
    return mem_uint(w, n, 8) && mem_put(w, s, n);
}

static bool encode_kv(gguf_writer *w, const wkv *kv) {
    bool ok = mem_str(w, kv->key) && mem_uint(w, (uint32_t)kv->type, 4);
    if (!ok) return false;
    if (kv->type == GGUF_VT_STR) return mem_str(w, kv->str);
    if (kv->type != GGUF_VT_ARR) return mem_uint(w, kv->bits, k_vt_sizes[kv->type]);
    ok = mem_uint(w, (uint32_t)kv->elem, 4) && mem_uint(w, kv->n, 8);
    if (kv->elem != GGUF_VT_STR)
        return ok && mem_put(w, kv->raw, (size_t)kv->n * k_vt_sizes[kv->elem]);
    for (uint64_t j = 0; ok && j < kv->n; j++) ok = mem_str(w, kv->strs[j]);
    return ok;
}

static uint64_t pad_to(uint64_t x, uint32_t a) {
    return (a - x % a) % a;
}

/* Checks general.alignment and assigns offsets. */
static clara_status plan_layout(gguf_writer *w) {
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, "general.alignment") != 0) continue;
        uint64_t a = w->kvs[i].bits;
        if (w->kvs[i].type != GGUF_VT_U32 || a == 0 || (a & (a - 1)) != 0)
            return clara_fail(CLARA_ERR_INVALID_ARG,
                              "gguf writer: general.alignment must be a u32 power of two");
        w->alignment = (uint32_t)a;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        w->tensors[i].offset = off;
        uint64_t padded = w->tensors[i].nbytes + pad_to(w->tensors[i].nbytes, w->alignment);
        if (padded < w->tensors[i].nbytes || !clara_add_u64(off, padded, &off))
            return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: data section overflows");
    }
    return CLARA_OK;
}

static clara_status encode_header(gguf_writer *w) {
    w->mem_len = 0;
    bool ok = mem_put(w, k_magic, 4) && mem_uint(w, 3, 4) && mem_uint(w, w->n_tensors, 8) &&
              mem_uint(w, w->n_kv, 8);
    for (size_t i = 0; ok && i < w->n_kv; i++) ok = encode_kv(w, &w->kvs[i]);
    for (size_t i = 0; ok && i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        ok = mem_str(w, t->name) && mem_uint(w, t->n_dims, 4);
        for (uint32_t d = 0; ok && d < t->n_dims; d++) ok = mem_uint(w, t->ne[d], 8);
        ok = ok && mem_uint(w, (uint32_t)t->type, 4) && mem_uint(w, t->offset, 8);
    }
    static const uint8_t zeros[256];
    for (uint64_t pad = pad_to(w->mem_len, w->alignment); ok && pad > 0;) {
        size_t k = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
        ok = mem_put(w, zeros, k);
        pad -= k;
    }
    return ok ? CLARA_OK : clara_fail(CLARA_ERR_NOMEM, "gguf writer: out of memory");
}

/* ---- output sink: memory buffer or atomic file ---- */

static clara_status sink_write(gguf_writer *w, const void *p, size_t n) {
    if (w->to_mem) {
        if (!mem_put(w, p, n)) return clara_fail(CLARA_ERR_NOMEM, "gguf writer: out of memory");
        return CLARA_OK;
    }
    return clara_outfile_write(&w->file, p, n);
}

static clara_status sink_pad(gguf_writer *w, uint64_t n) {
    static const uint8_t zeros[256];
    clara_status s = CLARA_OK;
    while (n > 0 && s == CLARA_OK) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        s = sink_write(w, zeros, k);
        n -= k;
    }
    return s;
}

static clara_status begin(gguf_writer *w, const char *path) {
    if (w->state != W_NEW)
        return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: begin called twice");
    clara_status s = plan_layout(w);
    if (s == CLARA_OK) s = encode_header(w);
    if (s != CLARA_OK) return s;
    w->to_mem = path == NULL;
    if (!w->to_mem) {
        s = clara_outfile_open(&w->file, path);
        if (s == CLARA_OK) s = clara_outfile_write(&w->file, w->mem, w->mem_len);
        free(w->mem);
        w->mem = NULL;
        w->mem_len = w->mem_cap = 0;
        if (s != CLARA_OK) {
            if (w->file.fp) clara_outfile_abort(&w->file);
            w->state = W_FAILED;
            return s;
        }
    }
    w->state = W_STARTED;
    w->cur = 0;
    w->cur_done = 0;
    return CLARA_OK;
}

clara_status gguf_writer_begin(gguf_writer *w, const char *path) {
    if (!path) return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: no output path");
    return begin(w, path);
}

clara_status gguf_writer_begin_mem(gguf_writer *w) {
    return begin(w, NULL);
}

/* Finishes tensors that are complete (including empty ones): pads each to the alignment. */
static clara_status advance(gguf_writer *w) {
    while (w->cur < w->n_tensors && w->cur_done == w->tensors[w->cur].nbytes) {
        clara_status s = sink_pad(w, pad_to(w->tensors[w->cur].nbytes, w->alignment));
        if (s != CLARA_OK) return s;
        w->cur++;
        w->cur_done = 0;
    }
    return CLARA_OK;
}

clara_status gguf_writer_write(gguf_writer *w, const void *data, size_t n) {
    if (w->state != W_STARTED)
        return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: write outside begin/finish");
    const uint8_t *p = data;
    clara_status s = advance(w);
    while (s == CLARA_OK && n > 0) {
        if (w->cur >= w->n_tensors) {
            s = clara_fail(CLARA_ERR_INVALID_ARG,
                           "gguf writer: %zu bytes written past the last tensor", n);
            break;
        }
        uint64_t left = w->tensors[w->cur].nbytes - w->cur_done;
        size_t k = left < n ? (size_t)left : n;
        s = sink_write(w, p, k);
        w->cur_done += k;
        p += k;
        n -= k;
        if (s == CLARA_OK) s = advance(w);
    }
    if (s != CLARA_OK) w->state = W_FAILED;
    return s;
}

static clara_status finish_check(gguf_writer *w) {
    if (w->state != W_STARTED)
        return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: finish without a successful begin");
    clara_status s = advance(w);
    if (s != CLARA_OK) return s;
    if (w->cur < w->n_tensors)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "gguf writer: tensor '%s' has %" PRIu64 " of %" PRIu64
                          " bytes written (%zu of %zu tensors complete)",
                          w->tensors[w->cur].name, w->cur_done, w->tensors[w->cur].nbytes, w->cur,
                          w->n_tensors);
    return CLARA_OK;
}

clara_status gguf_writer_finish(gguf_writer *w) {
    if (w->to_mem)
        return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: memory output: use finish_mem");
    clara_status s = finish_check(w);
    if (s != CLARA_OK) return s; /* the file stays open: gguf_writer_free removes it */
    w->state = W_DONE;
    return clara_outfile_commit(&w->file);
}

clara_status gguf_writer_finish_mem(gguf_writer *w, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (!w->to_mem)
        return clara_fail(CLARA_ERR_INVALID_ARG, "gguf writer: file output: use finish");
    clara_status s = finish_check(w);
    if (s != CLARA_OK) return s;
    w->state = W_DONE;
    *out = w->mem;
    *len = w->mem_len;
    w->mem = NULL;
    w->mem_len = w->mem_cap = 0;
    return CLARA_OK;
}
