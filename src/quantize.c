/* quantize.c - `clara quantize`: the per-tensor type choice (llama.cpp's rules for its standard
 * file types, see quantize.h), metadata copy and a streaming row-by-row conversion into a new
 * GGUF file. */
#include "quantize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "base/threadpool.h"
#include "dtype.h"
#include "gguf.h"
#include "quant.h"

static const struct {
    const char *name;
    int ftype;
    clara_type base;
} k_mixes[] = {
    {"q4_0", 2, CLARA_TYPE_Q4_0},    {"q4_1", 3, CLARA_TYPE_Q4_1},  {"q8_0", 7, CLARA_TYPE_Q8_0},
    {"q5_0", 8, CLARA_TYPE_Q5_0},    {"q5_1", 9, CLARA_TYPE_Q5_1},  {"q4_k_m", 15, CLARA_TYPE_Q4_K},
    {"q5_k_m", 17, CLARA_TYPE_Q5_K}, {"q6_k", 18, CLARA_TYPE_Q6_K},
};
#define N_MIXES (sizeof k_mixes / sizeof k_mixes[0])

static int find_mix(const char *mix) {
    for (size_t i = 0; i < N_MIXES; i++)
        if (mix && strcmp(k_mixes[i].name, mix) == 0) return (int)i;
    return -1;
}

int clara_quantize_ftype(const char *mix) {
    int m = find_mix(mix);
    return m < 0 ? -1 : k_mixes[m].ftype;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static bool is_k(clara_type t) {
    return t == CLARA_TYPE_Q4_K || t == CLARA_TYPE_Q5_K || t == CLARA_TYPE_Q6_K;
}

/* llama.cpp's use_more_bits: the first and last eighth of the layers and every third between. */
static bool use_more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

typedef struct {
    int n_attn_v, n_ffn_down, i_attn_v, i_ffn_down;
    bool has_output;
} mix_state;

static bool quantizable(const gguf_tensor *t) {
    return strncmp(t->name, "clara.", 6) != 0 && t->n_dims >= 2 && ends_with(t->name, "weight") &&
           (t->type == CLARA_TYPE_F32 || t->type == CLARA_TYPE_F16 || t->type == CLARA_TYPE_BF16);
}

/* The type for tensor t; sets *fallback when the row length forced another type. */
static clara_type choose_type(const gguf_tensor *t, clara_type base, bool k_mix,
                              const clara_quantize_opts *o, mix_state *st, bool *fallback) {
    *fallback = false;
    if (!quantizable(t)) return t->type;
    clara_type nt = base;
    bool is_output = strcmp(t->name, "output.weight") == 0 ||
                     (!st->has_output && strcmp(t->name, "token_embd.weight") == 0);
    if (is_output) {
        if (t->ne[0] % CLARA_QK_K != 0)
            nt = CLARA_TYPE_Q8_0;
        else if (nt != CLARA_TYPE_Q8_0)
            nt = CLARA_TYPE_Q6_K;
    } else if (strcmp(t->name, "token_embd.weight") == 0) {
        if (o->keep_embeddings_f16) return CLARA_TYPE_F16;
    } else if (strstr(t->name, "attn_v.weight")) {
        if (k_mix && use_more_bits(st->i_attn_v, st->n_attn_v)) nt = CLARA_TYPE_Q6_K;
        st->i_attn_v++;
    } else if (strstr(t->name, "ffn_down")) {
        if (k_mix && use_more_bits(st->i_ffn_down, st->n_ffn_down)) nt = CLARA_TYPE_Q6_K;
        st->i_ffn_down++;
    }
    const clara_type_info *ti = clara_type_get((uint32_t)nt);
    if (t->ne[0] % ti->block_size != 0) {
        *fallback = true;
        if (!is_k(nt)) return t->type; /* llama.cpp would refuse; we keep the tensor as is */
        nt = nt == CLARA_TYPE_Q4_K   ? CLARA_TYPE_Q5_0
             : nt == CLARA_TYPE_Q5_K ? CLARA_TYPE_Q5_1
                                     : CLARA_TYPE_Q8_0;
        if (t->ne[0] % CLARA_QK != 0) nt = CLARA_TYPE_F16;
    }
    return nt;
}

static clara_status copy_arr(gguf_writer *w, const gguf_ctx *g, size_t i, const char *key) {
    gguf_vtype et;
    uint64_t n;
    clara_status s = gguf_kv_arr(g, i, &et, &n);
    if (s != CLARA_OK) return s;
    if (et == GGUF_VT_STR) {
        const char **v = malloc((n ? n : 1) * sizeof *v);
        if (!v) return clara_fail(CLARA_ERR_NOMEM, "out of memory copying '%s'", key);
        for (uint64_t j = 0; j < n; j++) v[j] = gguf_kv_arr_str(g, i, j);
        s = gguf_writer_set_arr_str(w, key, v, n);
        free(v);
        return s;
    }
    const void *p;
    s = gguf_get_arr_data(g, key, et, &p, &n);
    if (s != CLARA_OK) return s;
    return gguf_writer_set_arr(w, key, et, p, n);
}

static clara_status copy_kv(gguf_writer *w, const gguf_ctx *g, size_t i) {
    const char *k = gguf_kv_key(g, i);
    int64_t iv = 0;
    uint64_t uv = 0;
    double dv = 0;
    bool bv = false;
    const char *sv;
    switch (gguf_kv_type(g, i)) {
    case GGUF_VT_U8:
        gguf_get_uint(g, k, &uv);
        return gguf_writer_set_u8(w, k, (uint8_t)uv);
    case GGUF_VT_I8:
        gguf_get_int(g, k, &iv);
        return gguf_writer_set_i8(w, k, (int8_t)iv);
    case GGUF_VT_U16:
        gguf_get_uint(g, k, &uv);
        return gguf_writer_set_u16(w, k, (uint16_t)uv);
    case GGUF_VT_I16:
        gguf_get_int(g, k, &iv);
        return gguf_writer_set_i16(w, k, (int16_t)iv);
    case GGUF_VT_U32:
        gguf_get_uint(g, k, &uv);
        return gguf_writer_set_u32(w, k, (uint32_t)uv);
    case GGUF_VT_I32:
        gguf_get_int(g, k, &iv);
        return gguf_writer_set_i32(w, k, (int32_t)iv);
    case GGUF_VT_U64:
        gguf_get_uint(g, k, &uv);
        return gguf_writer_set_u64(w, k, uv);
    case GGUF_VT_I64:
        gguf_get_int(g, k, &iv);
        return gguf_writer_set_i64(w, k, iv);
    case GGUF_VT_F32:
        gguf_get_f64(g, k, &dv);
        return gguf_writer_set_f32(w, k, (float)dv);
    case GGUF_VT_F64:
        gguf_get_f64(g, k, &dv);
        return gguf_writer_set_f64(w, k, dv);
    case GGUF_VT_BOOL:
        gguf_get_bool(g, k, &bv);
        return gguf_writer_set_bool(w, k, bv);
    case GGUF_VT_STR:
        gguf_get_str(g, k, &sv);
        return gguf_writer_set_str(w, k, sv);
    case GGUF_VT_ARR:
        return copy_arr(w, g, i, k);
    default:
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: key '%s' has an unsupported type",
                          gguf_name(g), k);
    }
}

/* Rows are converted in parallel, a slab at a time, then written in order: each row's bytes depend
 * on that row alone, so the file is the same at any thread count. A slab holds at most this many
 * output bytes (and at least one row). */
#define SLAB_BYTES   ((size_t)32 << 20)
#define SLAB_MSG_MAX 512 /* bytes kept of a failing task's message */

typedef struct {
    const gguf_tensor *t;
    clara_type nt;
    uint64_t in_row, out_row, r0, n_rows, rows_per_task;
    uint8_t *out; /* the slab */
    float *row;   /* one row of floats per thread */
    clara_status *status;
    char (*msg)[SLAB_MSG_MAX]; /* per task: its failure's message */
} slab_job;

static void slab_task(void *arg, size_t task, int thread) {
    const slab_job *j = arg;
    float *row = j->row + (size_t)thread * j->t->ne[0];
    uint64_t a = task * j->rows_per_task, b = a + j->rows_per_task;
    if (b > j->n_rows) b = j->n_rows;
    clara_status s = CLARA_OK;
    for (uint64_t r = a; r < b && s == CLARA_OK; r++) {
        s = clara_dequantize_row(j->t->type, j->t->data + (j->r0 + r) * j->in_row, j->t->ne[0],
                                 row);
        if (s == CLARA_OK)
            s = clara_quantize_row(j->nt, row, j->t->ne[0], j->out + r * j->out_row, j->t->name);
    }
    j->status[task] = s;
    if (s != CLARA_OK) snprintf(j->msg[task], sizeof j->msg[task], "%s", clara_last_error());
}

/* Converts tensor t into type nt and appends it to the output. */
static clara_status write_tensor(gguf_writer *w, const gguf_tensor *t, clara_type nt,
                                 clara_pool *pool, float *row_bufs, uint8_t *slab) {
    uint64_t in_row, out_row, rows = 1;
    clara_status s = clara_type_row_bytes(t->type, t->ne[0], &in_row);
    if (s != CLARA_OK) return s;
    if (nt == t->type) return gguf_writer_write(w, t->data, (size_t)t->nbytes);
    s = clara_type_row_bytes(nt, t->ne[0], &out_row);
    if (s != CLARA_OK) return s;
    for (uint32_t d = 1; d < t->n_dims; d++) rows *= t->ne[d];
    uint64_t per_slab = SLAB_BYTES / out_row ? SLAB_BYTES / out_row : 1;
    enum { TASKS = 64 };
    clara_status status[TASKS];
    char msg[TASKS][SLAB_MSG_MAX];
    for (uint64_t r0 = 0; r0 < rows && s == CLARA_OK; r0 += per_slab) {
        uint64_t n = rows - r0 < per_slab ? rows - r0 : per_slab;
        slab_job j = {t,    nt,       in_row, out_row, r0, n, (n + TASKS - 1) / TASKS,
                      slab, row_bufs, status, msg};
        size_t tasks = (size_t)((n + j.rows_per_task - 1) / j.rows_per_task);
        clara_pool_run(pool, tasks, slab_task, &j);
        for (size_t k = 0; k < tasks && s == CLARA_OK; k++)
            if (status[k] != CLARA_OK) s = clara_fail(status[k], "%s", msg[k]);
        if (s == CLARA_OK) s = gguf_writer_write(w, slab, (size_t)(n * out_row));
    }
    return s;
}

static void count_layers(const gguf_ctx *g, mix_state *st) {
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (strncmp(t->name, "clara.", 6) == 0) continue;
        if (strstr(t->name, "attn_v.weight")) st->n_attn_v++;
        if (strstr(t->name, "ffn_down")) st->n_ffn_down++;
        if (strcmp(t->name, "output.weight") == 0) st->has_output = true;
    }
}

static clara_status run(gguf_ctx *g, gguf_writer *w, const char *out_path, int m,
                        const clara_quantize_opts *o) {
    clara_status s = CLARA_OK;
    for (size_t i = 0; i < gguf_n_kv(g) && s == CLARA_OK; i++) s = copy_kv(w, g, i);
    if (s == CLARA_OK) s = gguf_writer_set_u32(w, "general.file_type", (uint32_t)k_mixes[m].ftype);
    if (s == CLARA_OK) s = gguf_writer_set_u32(w, "general.quantization_version", 2);
    size_t n = gguf_n_tensors(g);
    clara_type *types = calloc(n ? n : 1, sizeof *types);
    bool *fb = calloc(n ? n : 1, sizeof *fb);
    mix_state st = {0};
    count_layers(g, &st);
    uint64_t max_row = 1, in_total = 0, out_total = 0, elems = 0;
    bool k_mix = is_k(k_mixes[m].base);
    for (size_t i = 0; i < n && s == CLARA_OK && types; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        types[i] = choose_type(t, k_mixes[m].base, k_mix, o, &st, &fb[i]);
        if (t->ne[0] > max_row) max_row = t->ne[0];
        s = gguf_writer_add_tensor(w, t->name, types[i], t->n_dims, t->ne);
    }
    /* every core: quantizing is compute-bound (k-quants search scales per block) */
    clara_pool *pool = NULL;
    int threads = clara_physical_cores() < 1 ? 1 : clara_physical_cores();
    if (s == CLARA_OK) s = clara_pool_create(threads, &pool);
    float *row = malloc((size_t)threads * max_row * sizeof *row);
    uint8_t *buf = malloc(SLAB_BYTES > max_row * 4 + 64 ? SLAB_BYTES : max_row * 4 + 64);
    if (s == CLARA_OK && (!types || !fb || !row || !buf))
        s = clara_fail(CLARA_ERR_NOMEM, "out of memory quantizing %s", gguf_name(g));
    if (s == CLARA_OK) s = gguf_writer_begin(w, out_path);
    for (size_t i = 0; i < n && s == CLARA_OK; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        uint64_t ob = 0, ne = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) ne *= t->ne[d];
        s = clara_tensor_bytes(types[i], t->ne, t->n_dims, &ob);
        if (s == CLARA_OK) s = write_tensor(w, t, types[i], pool, row, buf);
        in_total += t->nbytes, out_total += ob, elems += ne;
        if (s == CLARA_OK && o->progress)
            fprintf(o->progress, "[%4zu/%4zu] %-40s %-5s -> %-5s %10.3f KiB -> %10.3f KiB%s\n",
                    i + 1, n, t->name, clara_type_name(t->type), clara_type_name(types[i]),
                    (double)t->nbytes / 1024, (double)ob / 1024,
                    fb[i]
                        ? (types[i] == t->type ? "  (row length not a multiple of the block: kept)"
                                               : "  (fallback: row length not a multiple of 256)")
                        : "");
    }
    if (s == CLARA_OK) s = gguf_writer_finish(w);
    if (s == CLARA_OK && o->progress)
        fprintf(o->progress, "%s: %.2f MiB -> %.2f MiB of tensor data, %.3f bits/weight\n",
                k_mixes[m].name, (double)in_total / 1048576, (double)out_total / 1048576,
                elems ? 8.0 * (double)out_total / (double)elems : 0.0);
    if (pool) clara_pool_free(pool);
    free(types);
    free(fb);
    free(row);
    free(buf);
    return s;
}

clara_status clara_quantize_file(const char *in_path, const char *out_path, const char *mix,
                                 const clara_quantize_opts *opts) {
    clara_quantize_opts none = {false, NULL};
    const clara_quantize_opts *o = opts ? opts : &none;
    int m = find_mix(mix);
    if (m < 0)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "unknown quantization type '%s' (q4_0 q4_1 q5_0 q5_1 q8_0 q4_k_m "
                          "q5_k_m q6_k)",
                          mix ? mix : "");
    gguf_ctx *g;
    clara_status s = gguf_open(in_path, &g);
    if (s != CLARA_OK) return s;
    gguf_writer *w = gguf_writer_new();
    if (!w)
        s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    else
        s = run(g, w, out_path, m, o);
    gguf_writer_free(w);
    gguf_free(g);
    return s;
}
