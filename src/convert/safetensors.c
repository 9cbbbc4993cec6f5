/* safetensors.c - validating reader for safetensors files and sharded model directories.
 *
 * The header is parsed with cJSON and kept alive: tensor and metadata names point into it, tensor
 * data points into the caller's buffer (or our mmap). Lookups use a name-sorted index. */
#include "convert/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/checked.h"
#include "base/mapfile.h"
#include "base/status.h"

static const struct {
    const char *name;
    uint32_t size;
    int clara;
} k_dtypes[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1, -1},
    [ST_U8] = {"U8", 1, -1},
    [ST_I8] = {"I8", 1, CLARA_TYPE_I8},
    [ST_F8_E5M2] = {"F8_E5M2", 1, -1},
    [ST_F8_E4M3] = {"F8_E4M3", 1, -1},
    [ST_I16] = {"I16", 2, CLARA_TYPE_I16},
    [ST_U16] = {"U16", 2, -1},
    [ST_F16] = {"F16", 2, CLARA_TYPE_F16},
    [ST_BF16] = {"BF16", 2, CLARA_TYPE_BF16},
    [ST_I32] = {"I32", 4, CLARA_TYPE_I32},
    [ST_U32] = {"U32", 4, -1},
    [ST_F32] = {"F32", 4, CLARA_TYPE_F32},
    [ST_F64] = {"F64", 8, CLARA_TYPE_F64},
    [ST_I64] = {"I64", 8, CLARA_TYPE_I64},
    [ST_U64] = {"U64", 8, -1},
};

const char *st_dtype_name(st_dtype d) {
    return (unsigned)d < ST_DTYPE_COUNT ? k_dtypes[d].name : "?";
}

uint32_t st_dtype_size(st_dtype d) {
    return (unsigned)d < ST_DTYPE_COUNT ? k_dtypes[d].size : 0;
}

int st_dtype_to_clara(st_dtype d) {
    return (unsigned)d < ST_DTYPE_COUNT ? k_dtypes[d].clara : -1;
}

int st_dtype_parse(const char *s) {
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (strcmp(s, k_dtypes[i].name) == 0) return i;
    return -1;
}

struct st_file {
    char *name;
    clara_mapped map; /* only when opened by st_open */
    cJSON *root;
    st_tensor *tensors;       /* header order */
    const st_tensor **sorted; /* by name */
    size_t n;
    const cJSON *meta; /* __metadata__ object or NULL */
    uint64_t data_size;
};

/* A JSON number that is an exact non-negative integer below 2^53 (cJSON stores doubles). */
static bool json_u64(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double v = j->valuedouble;
    if (!(v >= 0.0) || v >= 9007199254740992.0 || floor(v) != v) return false;
    *out = (uint64_t)v;
    return true;
}

static clara_status parse_shape(const char *fname, const char *tname, const cJSON *shape,
                                st_tensor *t) {
    if (!cJSON_IsArray(shape))
        return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s': shape is not an array", fname, tname);
    int nd = cJSON_GetArraySize(shape);
    if (nd > ST_MAX_DIMS)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: tensor '%s' has %d dimensions (at most %d)",
                          fname, tname, nd, ST_MAX_DIMS);
    t->n_dims = (uint32_t)nd;
    t->numel = 1;
    int i = 0;
    for (const cJSON *d = shape->child; d; d = d->next, i++) {
        if (!json_u64(d, &t->shape[i]))
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: tensor '%s': shape[%d] is not a non-negative integer", fname,
                              tname, i);
        if (!clara_mul_u64(t->numel, t->shape[i], &t->numel))
            return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s': element count overflows", fname,
                              tname);
    }
    return CLARA_OK;
}

static clara_status parse_entry(st_file *f, const cJSON *e, const uint8_t *base, st_tensor *t) {
    const char *fn = f->name, *tn = e->string;
    t->name = tn;
    t->file = f->name;
    if (!cJSON_IsObject(e))
        return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s': entry is not an object", fn, tn);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(dt))
        return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s': missing dtype", fn, tn);
    int d = st_dtype_parse(dt->valuestring);
    if (d < 0)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: tensor '%s': unknown dtype '%.32s'", fn, tn,
                          dt->valuestring);
    t->dtype = (st_dtype)d;
    t->type = st_dtype_to_clara(t->dtype);
    clara_status s = parse_shape(fn, tn, cJSON_GetObjectItemCaseSensitive(e, "shape"), t);
    if (s != CLARA_OK) return s;
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    uint64_t b, end, want;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !json_u64(off->child, &b) ||
        !json_u64(off->child->next, &end))
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets is not [begin, end] of integers", fn, tn);
    if (b > end || end > f->data_size)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] outside the %llu-byte data "
                          "block (truncated?)",
                          fn, tn, (unsigned long long)b, (unsigned long long)end,
                          (unsigned long long)f->data_size);
    if (!clara_mul_u64(t->numel, st_dtype_size(t->dtype), &want) || want != end - b)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets span %llu bytes but shape and dtype "
                          "need %llu",
                          fn, tn, (unsigned long long)(end - b), (unsigned long long)want);
    t->data = base + b;
    t->nbytes = end - b;
    return CLARA_OK;
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

static int cmp_by_offset(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

/* Duplicate names (checked first: a repeated entry would otherwise be reported as overlapping
 * itself) and overlapping byte ranges; leaves f->sorted ordered by name. */
static clara_status check_layout(st_file *f) {
    qsort(f->sorted, f->n, sizeof *f->sorted, cmp_by_name);
    for (size_t i = 1; i < f->n; i++) {
        const char *a = f->sorted[i - 1]->name, *b = f->sorted[i]->name;
        if (strcmp(a, b) == 0)
            return clara_fail(CLARA_ERR_FORMAT, "%s: duplicate tensor name '%s'", f->name, a);
    }
    qsort(f->sorted, f->n, sizeof *f->sorted, cmp_by_offset);
    const uint8_t *prev_end = NULL;
    const char *prev_name = NULL;
    for (size_t i = 0; i < f->n; i++) {
        const st_tensor *t = f->sorted[i];
        if (t->nbytes == 0) continue;
        if (prev_end && t->data < prev_end)
            return clara_fail(CLARA_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap", f->name,
                              prev_name, t->name);
        prev_end = t->data + t->nbytes;
        prev_name = t->name;
    }
    qsort(f->sorted, f->n, sizeof *f->sorted, cmp_by_name);
    return CLARA_OK;
}

static clara_status check_metadata(st_file *f, const cJSON *m) {
    if (!cJSON_IsObject(m))
        return clara_fail(CLARA_ERR_FORMAT, "%s: __metadata__ is not an object", f->name);
    for (const cJSON *e = m->child; e; e = e->next)
        if (!cJSON_IsString(e))
            return clara_fail(CLARA_ERR_FORMAT, "%s: __metadata__ value '%s' is not a string",
                              f->name, e->string);
    f->meta = m;
    return CLARA_OK;
}

static clara_status parse_header(st_file *f, const uint8_t *data, size_t len) {
    if (len < 8)
        return clara_fail(CLARA_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file",
                          f->name, len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | data[i];
    if (n > len - 8)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: header length %llu exceeds the file size (%zu bytes; truncated?)",
                          f->name, (unsigned long long)n, len);
    if (n > ST_MAX_HEADER_BYTES)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: header length %llu exceeds the %u-byte limit",
                          f->name, (unsigned long long)n, ST_MAX_HEADER_BYTES);
    f->data_size = len - 8 - n;
    const char *end = NULL;
    f->root = cJSON_ParseWithLengthOpts((const char *)data + 8, (size_t)n, &end, 0);
    if (!f->root) return clara_fail(CLARA_ERR_FORMAT, "%s: header is not valid JSON", f->name);
    /* the writer pads the header with spaces; anything else after the object is an error */
    for (const char *p = end; p && p < (const char *)data + 8 + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return clara_fail(CLARA_ERR_FORMAT, "%s: junk after the JSON header", f->name);
    if (!cJSON_IsObject(f->root))
        return clara_fail(CLARA_ERR_FORMAT, "%s: header is not a JSON object", f->name);
    return CLARA_OK;
}

static clara_status parse_body(st_file *f, const uint8_t *data, size_t len) {
    const uint8_t *base = data + (len - f->data_size);
    size_t count = 0;
    for (const cJSON *e = f->root->child; e; e = e->next) count++;
    f->tensors = calloc(count ? count : 1, sizeof *f->tensors);
    f->sorted = calloc(count ? count : 1, sizeof *f->sorted);
    if (!f->tensors || !f->sorted)
        return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory for %zu tensors", f->name, count);
    for (const cJSON *e = f->root->child; e; e = e->next) {
        clara_status s;
        if (strcmp(e->string, "__metadata__") == 0) {
            if (f->meta) return clara_fail(CLARA_ERR_FORMAT, "%s: duplicate __metadata__", f->name);
            s = check_metadata(f, e);
        } else {
            f->sorted[f->n] = &f->tensors[f->n];
            s = parse_entry(f, e, base, &f->tensors[f->n]);
            f->n++;
        }
        if (s != CLARA_OK) return s;
    }
    return check_layout(f);
}

clara_status st_parse(const uint8_t *data, size_t len, const char *name, st_file **out) {
    *out = NULL;
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->name = strdup(name ? name : "safetensors"))) {
        free(f);
        return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", name ? name : "safetensors");
    }
    clara_status s = parse_header(f, data, len);
    if (s == CLARA_OK) s = parse_body(f, data, len);
    if (s != CLARA_OK) {
        st_free(f);
        return s;
    }
    *out = f;
    return CLARA_OK;
}

clara_status st_open(const char *path, st_file **out) {
    clara_mapped m;
    *out = NULL;
    clara_status s = clara_map_file(path, &m);
    if (s != CLARA_OK) return s;
    s = st_parse(m.data, m.size, path, out);
    if (s != CLARA_OK) {
        clara_unmap_file(&m);
        return s;
    }
    (*out)->map = m;
    return CLARA_OK;
}

void st_free(st_file *f) {
    if (!f) return;
    clara_unmap_file(&f->map);
    cJSON_Delete(f->root);
    free(f->tensors);
    free(f->sorted);
    free(f->name);
    free(f);
}

size_t st_n_tensors(const st_file *f) {
    return f->n;
}

const st_tensor *st_tensor_at(const st_file *f, size_t i) {
    return i < f->n ? &f->tensors[i] : NULL;
}

const st_tensor *st_find(const st_file *f, const char *name) {
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const st_tensor *t = f->sorted[mid];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *st_metadata(const st_file *f, const char *key) {
    const cJSON *v = f->meta ? cJSON_GetObjectItemCaseSensitive(f->meta, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

uint64_t st_data_size(const st_file *f) {
    return f->data_size;
}

/* ---- model directories ---- */

#define ST_INDEX_NAME      "model.safetensors.index.json"
#define ST_SINGLE_NAME     "model.safetensors"
#define ST_MAX_INDEX_BYTES (64u << 20)

struct st_model {
    st_file **shards;
    size_t n_shards;
    const st_tensor **tensors; /* by name */
    size_t n;
    uint64_t total;
};

static char *join_path(const char *dir, const char *file) {
    size_t a = strlen(dir), b = strlen(file);
    char *p = malloc(a + b + 2);
    if (p) snprintf(p, a + b + 2, "%s/%s", dir, file);
    return p;
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* A shard must be a plain file name inside the model directory. */
static bool shard_name_ok(const char *s) {
    return s[0] != '\0' && !strchr(s, '/') && !strchr(s, '\\') && !strstr(s, "..");
}

/* Opens `file` as a new shard unless already open; returns its index in *idx. */
static clara_status model_add_shard(st_model *m, const char *dir, const char *file, size_t *idx) {
    for (size_t i = 0; i < m->n_shards; i++) {
        const char *p = m->shards[i]->name, *slash = strrchr(p, '/');
        if (strcmp(slash ? slash + 1 : p, file) == 0) {
            *idx = i;
            return CLARA_OK;
        }
    }
    st_file **ns = realloc(m->shards, (m->n_shards + 1) * sizeof *ns);
    char *path = join_path(dir, file);
    if (ns) m->shards = ns;
    if (!ns || !path) {
        free(path);
        return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", dir);
    }
    st_file *f;
    clara_status s = st_open(path, &f);
    free(path);
    if (s != CLARA_OK) return clara_fail_context(s, "%s: shard '%s'", ST_INDEX_NAME, file);
    *idx = m->n_shards;
    m->shards[m->n_shards++] = f;
    return CLARA_OK;
}

static int cmp_tensor_ptr_name(const void *a, const void *b) {
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

static clara_status model_from_weight_map(st_model *m, const char *dir, const cJSON *wm) {
    size_t count = 0;
    for (const cJSON *e = wm->child; e; e = e->next) count++;
    m->tensors = calloc(count ? count : 1, sizeof *m->tensors);
    if (!m->tensors) return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", dir);
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !shard_name_ok(e->valuestring))
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s/%s: tensor '%s': shard name '%s' is not allowed (must be a "
                              "plain file name in the model directory, no path)",
                              dir, ST_INDEX_NAME, e->string,
                              cJSON_IsString(e) ? e->valuestring : "(not a string)");
        size_t idx;
        clara_status s = model_add_shard(m, dir, e->valuestring, &idx);
        if (s != CLARA_OK) return s;
        const st_tensor *t = st_find(m->shards[idx], e->string);
        if (!t)
            return clara_fail(CLARA_ERR_NOT_FOUND,
                              "%s/%s: tensor '%s' is listed in shard '%s' but that shard does not "
                              "contain it (missing tensor)",
                              dir, ST_INDEX_NAME, e->string, e->valuestring);
        m->tensors[m->n++] = t;
    }
    return CLARA_OK;
}

static clara_status model_open_index(st_model *m, const char *dir, const char *index_path) {
    char *text;
    size_t len;
    clara_status s = clara_read_file(index_path, ST_MAX_INDEX_BYTES, &text, &len);
    if (s != CLARA_OK) return s;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm))
        s = clara_fail(CLARA_ERR_FORMAT, "%s: %s", index_path,
                       root ? "no \"weight_map\" object" : "not valid JSON");
    else
        s = model_from_weight_map(m, dir, wm);
    cJSON_Delete(root);
    return s;
}

static clara_status model_finish(st_model *m, const char *dir) {
    qsort(m->tensors, m->n, sizeof *m->tensors, cmp_tensor_ptr_name);
    for (size_t i = 0; i < m->n; i++) {
        if (i > 0 && strcmp(m->tensors[i - 1]->name, m->tensors[i]->name) == 0)
            return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s' is listed twice", dir,
                              m->tensors[i]->name);
        m->total += m->tensors[i]->nbytes; /* bounded by the mapped file sizes */
    }
    return CLARA_OK;
}

clara_status st_model_open(const char *dir, st_model **out) {
    *out = NULL;
    st_model *m = calloc(1, sizeof *m);
    char *index = join_path(dir, ST_INDEX_NAME), *single = join_path(dir, ST_SINGLE_NAME);
    clara_status s = CLARA_OK;
    if (!m || !index || !single) {
        s = clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", dir);
    } else if (file_exists(index)) {
        s = model_open_index(m, dir, index);
    } else if (file_exists(single)) {
        size_t idx;
        s = model_add_shard(m, dir, ST_SINGLE_NAME, &idx);
        const st_file *f = s == CLARA_OK ? m->shards[0] : NULL;
        if (f && !(m->tensors = calloc(f->n ? f->n : 1, sizeof *m->tensors)))
            s = clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", dir);
        for (size_t i = 0; s == CLARA_OK && i < f->n; i++) m->tensors[m->n++] = &f->tensors[i];
    } else {
        s = clara_fail(CLARA_ERR_NOT_FOUND, "%s: neither %s nor %s found", dir, ST_INDEX_NAME,
                       ST_SINGLE_NAME);
    }
    if (s == CLARA_OK) s = model_finish(m, dir);
    free(index);
    free(single);
    if (s != CLARA_OK) {
        st_model_free(m);
        return s;
    }
    *out = m;
    return CLARA_OK;
}

void st_model_free(st_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_shards; i++) st_free(m->shards[i]);
    free(m->shards);
    free(m->tensors);
    free(m);
}

size_t st_model_n_tensors(const st_model *m) {
    return m->n;
}

const st_tensor *st_model_tensor_at(const st_model *m, size_t i) {
    return i < m->n ? m->tensors[i] : NULL;
}

const st_tensor *st_model_find(const st_model *m, const char *name) {
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, m->tensors[mid]->name);
        if (c == 0) return m->tensors[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

uint64_t st_model_total_bytes(const st_model *m) {
    return m->total;
}

size_t st_model_n_shards(const st_model *m) {
    return m->n_shards;
}

const st_file *st_model_shard(const st_model *m, size_t i) {
    return i < m->n_shards ? m->shards[i] : NULL;
}
