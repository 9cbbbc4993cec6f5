/* pth.c - binds the tensors of a torch.save zip checkpoint (see pth.h): finds the archive
 * directory, interprets data.pkl with the allow-list VM, walks the dict tree into a flat list of
 * named tensors and checks each one's extent against its storage entry. */
#include "convert/pth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/mapfile.h"
#include "base/status.h"
#include "convert/torch_pickle.h"
#include "convert/zip.h"

struct pth_file {
    char *name;
    clara_mapped map; /* only when opened by pth_open */
    zip_archive *zip;
    pk_result *pickle;
    char *dir; /* top-level directory, without the slash */
    pth_tensor *tensors;
    size_t n, cap;
    const pth_tensor **sorted; /* by name */
    size_t skipped;
    size_t visits; /* dict entries walked; bounded against shared-subtree blowup */
};

/* All entries must share one top-level directory; returns it in f->dir. */
static clara_status find_dir(pth_file *f) {
    const zip_entry *e0 = zip_entry_at(f->zip, 0);
    const char *slash = e0 ? strchr(e0->name, '/') : NULL;
    if (!slash || slash == e0->name)
        return clara_fail(CLARA_ERR_FORMAT, "%s: not a torch.save archive (no top-level directory)",
                          f->name);
    size_t dl = (size_t)(slash - e0->name);
    if (!(f->dir = strndup(e0->name, dl))) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < zip_n_entries(f->zip); i++) {
        const char *nm = zip_entry_at(f->zip, i)->name;
        if (strncmp(nm, f->dir, dl) != 0 || nm[dl] != '/')
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: entry '%s' is outside the archive directory '%s/'", f->name, nm,
                              f->dir);
    }
    return CLARA_OK;
}

static const zip_entry *find_in_dir(const pth_file *f, const char *rel) {
    char path[PTH_MAX_NAME_LEN + 64];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", f->dir, rel) >= sizeof path) return NULL;
    return zip_find(f->zip, path);
}

static clara_status check_byteorder(const pth_file *f) {
    const zip_entry *e = find_in_dir(f, "byteorder");
    if (!e) return CLARA_OK;
    size_t n = (size_t)e->size;
    while (n > 0 && (e->data[n - 1] == '\n' || e->data[n - 1] == '\r')) n--;
    if (n != 6 || memcmp(e->data, "little", 6) != 0) {
        char b[17];
        size_t k = 0;
        for (; k < n && k < 16; k++)
            b[k] = (e->data[k] >= 0x20 && e->data[k] < 0x7f) ? (char)e->data[k] : '?';
        b[k] = '\0';
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: byteorder is '%s'; only little-endian checkpoints are supported",
                          f->name, b);
    }
    return CLARA_OK;
}

/* Largest element index the tensor touches, or an error on overflow. */
static bool tensor_extent(const pth_tensor *t, uint64_t *max_index) {
    uint64_t m = t->storage_offset, step;
    for (uint32_t i = 0; i < t->n_dims; i++) {
        if (!clara_mul_u64(t->shape[i] - 1, t->stride[i], &step) || !clara_add_u64(m, step, &m))
            return false;
    }
    *max_index = m;
    return true;
}

static bool is_contiguous(const pth_tensor *t) {
    uint64_t expect = 1;
    for (uint32_t i = t->n_dims; i-- > 0;) {
        if (t->shape[i] != 1 && t->stride[i] != expect) return false;
        expect *= t->shape[i]; /* no overflow: numel was checked */
    }
    return true;
}

/* Binds a PK_TENSOR to its storage entry after checking every size. */
static clara_status bind_tensor(pth_file *f, const pk_value *v, pth_tensor *t) {
    const pk_value *st = v->u.tensor.storage;
    uint32_t es = st_dtype_size(st->u.storage.dtype);
    t->dtype = st->u.storage.dtype;
    t->type = st_dtype_to_clara(t->dtype);
    t->n_dims = v->u.tensor.n_dims;
    memcpy(t->shape, v->u.tensor.shape, sizeof t->shape);
    memcpy(t->stride, v->u.tensor.stride, sizeof t->stride);
    t->storage_offset = v->u.tensor.offset;
    t->storage_key = st->u.storage.key;
    char rel[PTH_MAX_NAME_LEN];
    snprintf(rel, sizeof rel, "data/%s", t->storage_key);
    const zip_entry *e = find_in_dir(f, rel);
    if (!e)
        return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s': storage entry '%s/%s' is missing",
                          f->name, t->name, f->dir, rel);
    uint64_t need, max_index;
    if (!clara_mul_u64(st->u.storage.numel, es, &need) || need > e->size)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: tensor '%s': storage '%s' holds %llu bytes, too small for %llu "
                          "elements of %s",
                          f->name, t->name, t->storage_key, (unsigned long long)e->size,
                          (unsigned long long)st->u.storage.numel, st_dtype_name(t->dtype));
    t->numel = 1;
    for (uint32_t i = 0; i < t->n_dims; i++)
        if (!clara_mul_u64(t->numel, t->shape[i], &t->numel))
            return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s': element count overflows", f->name,
                              t->name);
    /* stride-0 (expanded) tensors may have more elements than their storage */
    if (!clara_mul_u64(t->numel, es, &t->nbytes))
        return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s': byte size overflows", f->name,
                          t->name);
    if (t->numel > 0 && (!tensor_extent(t, &max_index) || max_index >= st->u.storage.numel))
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: tensor '%s': offset %llu with its shape and strides reaches past "
                          "the %llu elements of storage '%s'",
                          f->name, t->name, (unsigned long long)t->storage_offset,
                          (unsigned long long)st->u.storage.numel, t->storage_key);
    t->data = e->data + (t->numel > 0 ? t->storage_offset * es : 0);
    t->contiguous = is_contiguous(t);
    return CLARA_OK;
}

static clara_status add_tensor(pth_file *f, char *name, const pk_value *v) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 64;
        pth_tensor *a = realloc(f->tensors, cap * sizeof *a);
        if (!a) {
            free(name);
            return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", f->name);
        }
        f->tensors = a;
        f->cap = cap;
    }
    pth_tensor *t = &f->tensors[f->n++];
    memset(t, 0, sizeof *t);
    t->name = name; /* owned from here on, freed by pth_free */
    return bind_tensor(f, v, t);
}

/* prefix + key (+ '/' between) as a new string */
static clara_status join_name(pth_file *f, const char *prefix, const pk_value *key, char **out) {
    if (key->kind != PK_STR)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: dict key under '%s' is a non-string", f->name,
                          prefix[0] ? prefix : "(root)");
    size_t pl = strlen(prefix), kl = key->u.str.len;
    if (strlen(key->u.str.s) != kl)
        return clara_fail(CLARA_ERR_FORMAT, "%s: dict key under '%s' contains a NUL byte", f->name,
                          prefix[0] ? prefix : "(root)");
    if (pl + kl + 2 > PTH_MAX_NAME_LEN)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: tensor name longer than %d bytes", f->name,
                          PTH_MAX_NAME_LEN);
    char *s = malloc(pl + kl + 2);
    if (!s) return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", f->name);
    if (pl) {
        memcpy(s, prefix, pl);
        s[pl++] = '/';
    }
    memcpy(s + pl, key->u.str.s, kl + 1);
    *out = s;
    return CLARA_OK;
}

static clara_status walk(pth_file *f, const pk_value *d, const char *prefix, int depth,
                         size_t max_visits) {
    if (depth > PTH_MAX_DEPTH)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: dicts nested deeper than %d levels", f->name,
                          PTH_MAX_DEPTH);
    for (size_t i = 0; i < d->u.dict.n; i++) {
        const pk_value *v = d->u.dict.vals[i];
        if (++f->visits > max_visits)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: dict tree is larger than the pickle (shared "
                              "sub-dicts)",
                              f->name);
        if (v->kind != PK_TENSOR && v->kind != PK_DICT) {
            f->skipped++;
            continue;
        }
        char *name = NULL;
        clara_status s = join_name(f, prefix, d->u.dict.keys[i], &name);
        if (s != CLARA_OK) return s;
        if (v->kind == PK_TENSOR) {
            s = add_tensor(f, name, v);
        } else {
            s = walk(f, v, name, depth + 1, max_visits);
            free(name);
        }
        if (s != CLARA_OK) return s;
    }
    return CLARA_OK;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const pth_tensor *const *)a)->name, (*(const pth_tensor *const *)b)->name);
}

static clara_status index_names(pth_file *f) {
    f->sorted = calloc(f->n ? f->n : 1, sizeof *f->sorted);
    if (!f->sorted) return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", f->name);
    for (size_t i = 0; i < f->n; i++) f->sorted[i] = &f->tensors[i];
    qsort(f->sorted, f->n, sizeof *f->sorted, cmp_tensor_name);
    for (size_t i = 1; i < f->n; i++)
        if (strcmp(f->sorted[i - 1]->name, f->sorted[i]->name) == 0)
            return clara_fail(CLARA_ERR_FORMAT, "%s: duplicate tensor name '%s'", f->name,
                              f->sorted[i]->name);
    return CLARA_OK;
}

static clara_status parse_all(pth_file *f, const uint8_t *data, size_t len) {
    clara_status s = zip_parse(data, len, f->name, &f->zip);
    if (s == CLARA_OK) s = find_dir(f);
    if (s == CLARA_OK) s = check_byteorder(f);
    if (s != CLARA_OK) return s;
    const zip_entry *pkl = find_in_dir(f, "data.pkl");
    if (!pkl) return clara_fail(CLARA_ERR_FORMAT, "%s: no %s/data.pkl", f->name, f->dir);
    if ((s = zip_entry_check_crc(f->zip, pkl)) != CLARA_OK) return s;
    s = pk_load(pkl->data, (size_t)pkl->size, f->name, &f->pickle);
    if (s != CLARA_OK) return s;
    const pk_value *root = pk_root(f->pickle);
    if (root->kind != PK_DICT)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: data.pkl holds a %s, not a dict", f->name,
                          root->kind == PK_TENSOR ? "tensor" : "non-dict value");
    /* a tree has at most one dict entry per pickle byte; more means shared sub-dicts */
    s = walk(f, root, "", 1, (size_t)pkl->size);
    return s == CLARA_OK ? index_names(f) : s;
}

clara_status pth_parse(const uint8_t *data, size_t len, const char *name, pth_file **out) {
    *out = NULL;
    pth_file *f = calloc(1, sizeof *f);
    if (!f || !(f->name = strdup(name ? name : "pth"))) {
        free(f);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    clara_status s = parse_all(f, data, len);
    if (s != CLARA_OK) {
        pth_free(f);
        return s;
    }
    *out = f;
    return CLARA_OK;
}

clara_status pth_open(const char *path, pth_file **out) {
    clara_mapped m;
    *out = NULL;
    clara_status s = clara_map_file(path, &m);
    if (s != CLARA_OK) return s;
    s = pth_parse(m.data, m.size, path, out);
    if (s != CLARA_OK) {
        clara_unmap_file(&m);
        return s;
    }
    (*out)->map = m;
    return CLARA_OK;
}

void pth_free(pth_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) free((char *)f->tensors[i].name);
    free(f->tensors);
    free(f->sorted);
    pk_free(f->pickle);
    zip_free(f->zip);
    clara_unmap_file(&f->map);
    free(f->dir);
    free(f->name);
    free(f);
}

size_t pth_n_tensors(const pth_file *f) {
    return f->n;
}

const pth_tensor *pth_tensor_at(const pth_file *f, size_t i) {
    return i < f->n ? &f->tensors[i] : NULL;
}

const pth_tensor *pth_find(const pth_file *f, const char *name) {
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->sorted[mid]->name);
        if (c == 0) return f->sorted[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

size_t pth_n_skipped(const pth_file *f) {
    return f->skipped;
}

const char *pth_archive_dir(const pth_file *f) {
    return f->dir;
}

clara_status pth_check_crc(const pth_file *f) {
    for (size_t i = 0; i < zip_n_entries(f->zip); i++) {
        clara_status s = zip_entry_check_crc(f->zip, zip_entry_at(f->zip, i));
        if (s != CLARA_OK) return s;
    }
    return CLARA_OK;
}

/* Row-major copy of a strided tensor: an odometer over all but the last dimension, then the
 * last dimension element by element (or one memcpy when it is dense). */
clara_status pth_tensor_copy(const pth_tensor *t, void *dst, size_t dst_size) {
    if (dst_size < t->nbytes)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "tensor '%s': destination holds %zu bytes, need %llu", t->name, dst_size,
                          (unsigned long long)t->nbytes);
    if (t->numel == 0) return CLARA_OK;
    const size_t es = st_dtype_size(t->dtype);
    if (t->contiguous || t->n_dims == 0) {
        memcpy(dst, t->data, (size_t)t->nbytes);
        return CLARA_OK;
    }
    uint8_t *out = dst;
    const uint32_t last = t->n_dims - 1;
    const uint64_t inner = t->shape[last], istride = t->stride[last] * es;
    uint64_t idx[ST_MAX_DIMS] = {0};
    for (uint64_t done = 0; done < t->numel; done += inner) {
        uint64_t off = 0;
        for (uint32_t d = 0; d < last; d++) off += idx[d] * t->stride[d];
        const uint8_t *src = t->data + off * es;
        if (istride == es) {
            memcpy(out, src, (size_t)(inner * es));
            out += inner * es;
        } else {
            for (uint64_t j = 0; j < inner; j++, out += es) memcpy(out, src + j * istride, es);
        }
        for (uint32_t d = last; d-- > 0;) { /* advance the odometer */
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
    return CLARA_OK;
}
