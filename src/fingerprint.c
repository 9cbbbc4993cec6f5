/* fingerprint.c - clara_model_fingerprint: what a document's vectors depend on, in 64 hex digits,
 * so that a memory store never mixes vectors of different models or numerics. It runs at every
 * model load, so it reads all of the small tensors (LoRA adapters, norms) but only samples the
 * large ones (a 4 GB model reads a few tens of MB) — a re-quantized or retrained base changes
 * its bytes everywhere, so the samples catch it.
 *
 * The recipe (docs/STORE.md quotes it; changing anything here changes every fingerprint, so
 * bump FP_VERSION with it):
 *
 *   fingerprint = hex(SHA-256(header || tensor records)), all integers little-endian:
 *   header:
 *     "clara-vectors-1" and a NUL (FP_VERSION: the engine's numerics version)
 *     u32 n_mem, n_embd, doc_max_length, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab
 *         (the tokenizer's vocabulary size)
 *     u32 bits of the f32 rope_theta and rms_eps
 *     i32 the ids of <ENC>, <s>, </s> and the n_mem memory tokens
 *     every piece of the vocabulary (NUL-terminated, in id order), then u64 the number of
 *         BPE merges and each merge string (NUL-terminated) from tokenizer.ggml.merges
 *     for the adapter compression uses (encoder) and the one queries use (query reasoner),
 *         after the adapter policy: its name (NUL-terminated; "" and no more when absent),
 *         u32 rank, u32 bits of the f32 scale alpha/rank
 *     u64 the number of tensors
 *   tensor records: every tensor of the model — the model file's, and in two-file mode the base
 *     file's whose names the add-on does not hold (as the model resolves names) — in ascending
 *     byte order of their names, each:
 *     name and a NUL, u32 GGUF type, u32 n_dims, n_dims x u64 ne, u64 byte size,
 *     32 bytes: SHA-256 of its sampled bytes:
 *       - all bytes of a LoRA tensor (clara.*.lora_a / .lora_b) and of any tensor <= 1 MiB;
 *       - otherwise bytes [0, 4096), then 32 windows of 512 bytes at offsets
 *         floor((size - 512) * (2i + 1) / 64) for i = 0..31, then [size - 4096, size).
 *
 * Sorting by name makes the fingerprint independent of tensor order in the file, so one file
 * and the equivalent base + add-on pair (the same tensors, types and bytes) agree. The tensor
 * digests are computed in parallel (the adapters of a 7B f32 model are ~500 MB). */
#include <stdlib.h>
#include <string.h>

#include "base/sha256.h"
#include "base/status.h"
#include "base/threadpool.h"
#include "model.h"

#define FP_VERSION     "clara-vectors-1"
#define FP_WHOLE_MAX   ((uint64_t)1 << 20) /* tensors up to 1 MiB are hashed whole */
#define FP_EDGE        4096                /* bytes hashed at each end of a larger tensor */
#define FP_WINDOWS     32                  /* evenly spaced windows in between */
#define FP_WINDOW      512
#define FP_MAX_THREADS 8

typedef struct {
    const gguf_tensor *t;
    uint8_t digest[CLARA_SHA256_LEN];
} fp_tensor;

static void put_u32(clara_sha256_ctx *c, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    clara_sha256_update(c, b, 4);
}

static void put_u64(clara_sha256_ctx *c, uint64_t v) {
    put_u32(c, (uint32_t)v);
    put_u32(c, (uint32_t)(v >> 32));
}

static void put_f32(clara_sha256_ctx *c, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(c, v);
}

static void put_str(clara_sha256_ctx *c, const char *s) {
    clara_sha256_update(c, s, strlen(s) + 1);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

static bool is_lora(const char *name) {
    return strncmp(name, "clara.", 6) == 0 &&
           (ends_with(name, ".lora_a") || ends_with(name, ".lora_b"));
}

/* The digest of one tensor's sampled bytes (the recipe above). */
static void tensor_digest(void *arg, size_t i, int thread) {
    (void)thread;
    fp_tensor *ft = (fp_tensor *)arg + i;
    const uint8_t *d = ft->t->data;
    uint64_t n = ft->t->nbytes;
    if (n <= FP_WHOLE_MAX || is_lora(ft->t->name)) {
        clara_sha256(d, n, ft->digest);
        return;
    }
    clara_sha256_ctx c;
    clara_sha256_init(&c);
    clara_sha256_update(&c, d, FP_EDGE);
    for (uint64_t w = 0; w < FP_WINDOWS; w++)
        clara_sha256_update(&c, d + (n - FP_WINDOW) * (2 * w + 1) / (2 * FP_WINDOWS), FP_WINDOW);
    clara_sha256_update(&c, d + n - FP_EDGE, FP_EDGE);
    clara_sha256_final(&c, ft->digest);
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const fp_tensor *)a)->t->name, ((const fp_tensor *)b)->t->name);
}

/* The model's tensors as it resolves names: the model file's, then the base's not shadowed. */
static clara_status collect(const clara_model *m, fp_tensor **out, size_t *n_out) {
    size_t n_file = gguf_n_tensors(m->gguf), n_base = m->base ? gguf_n_tensors(m->base) : 0;
    fp_tensor *ft = calloc(n_file + n_base + 1, sizeof *ft);
    if (!ft) return clara_fail(CLARA_ERR_NOMEM, "fingerprint: out of memory");
    size_t n = 0;
    for (size_t i = 0; i < n_file; i++) ft[n++].t = gguf_tensor_at(m->gguf, i);
    for (size_t i = 0; i < n_base; i++) {
        const gguf_tensor *t = gguf_tensor_at(m->base, i);
        if (!gguf_find_tensor(m->gguf, t->name)) ft[n++].t = t;
    }
    qsort(ft, n, sizeof *ft, by_name);
    *out = ft;
    *n_out = n;
    return CLARA_OK;
}

static void put_adapter(clara_sha256_ctx *c, const clara_adapter *a) {
    put_str(c, a ? a->name : "");
    if (!a) return;
    put_u32(c, a->rank);
    put_f32(c, a->scale);
}

/* Tokenization decides the encoder's input: the vocabulary and the merges. */
static void put_tokenizer(clara_sha256_ctx *c, const clara_model *m) {
    uint32_t nv = clara_tokenizer_n_vocab(m->tok);
    for (uint32_t id = 0; id < nv; id++) put_str(c, clara_tokenizer_piece(m->tok, (int32_t)id));
    gguf_vtype et;
    uint64_t n = 0;
    if (gguf_find_key(m->gguf, "tokenizer.ggml.merges") < 0 ||
        gguf_get_arr(m->gguf, "tokenizer.ggml.merges", &et, &n) != CLARA_OK || et != GGUF_VT_STR)
        n = 0;
    put_u64(c, n);
    for (uint64_t i = 0; i < n; i++) {
        const char *s = gguf_get_arr_str(m->gguf, "tokenizer.ggml.merges", i);
        put_str(c, s ? s : "");
    }
}

static void put_header(clara_sha256_ctx *c, const clara_model *m, size_t n_tensors) {
    const clara_hparams *hp = &m->hp;
    const clara_meta *mt = &m->meta;
    put_str(c, FP_VERSION);
    const uint32_t u[] = {mt->n_mem,     hp->n_embd,   mt->doc_max_length, hp->n_layer, hp->n_head,
                          hp->n_head_kv, hp->head_dim, hp->n_ff,           hp->n_vocab};
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) put_u32(c, u[i]);
    put_f32(c, hp->rope_theta);
    put_f32(c, hp->rms_eps);
    put_u32(c, (uint32_t)mt->enc_id);
    put_u32(c, (uint32_t)mt->bos_id);
    put_u32(c, (uint32_t)mt->eos_id);
    for (uint32_t i = 0; i < mt->n_mem; i++) put_u32(c, (uint32_t)mt->mem_ids[i]);
    put_tokenizer(c, m);
    put_adapter(c, m->encoder);
    put_adapter(c, m->query);
    put_u64(c, n_tensors);
}

static void put_tensor(clara_sha256_ctx *c, const fp_tensor *ft) {
    const gguf_tensor *t = ft->t;
    put_str(c, t->name);
    put_u32(c, (uint32_t)t->type);
    put_u32(c, t->n_dims);
    for (uint32_t d = 0; d < t->n_dims; d++) put_u64(c, t->ne[d]);
    put_u64(c, t->nbytes);
    clara_sha256_update(c, ft->digest, sizeof ft->digest);
}

clara_status clara_model_fingerprint(const clara_model *m, char out[CLARA_FINGERPRINT_LEN + 1]) {
    if (!m || !out) return clara_fail(CLARA_ERR_INVALID_ARG, "fingerprint: NULL argument");
    fp_tensor *ft = NULL;
    size_t n = 0;
    clara_status s = collect(m, &ft, &n);
    if (s != CLARA_OK) return s;
    int threads = clara_physical_cores();
    if (threads > FP_MAX_THREADS) threads = FP_MAX_THREADS;
    clara_pool *pool = NULL;
    if (threads > 1 && clara_pool_create(threads, &pool) != CLARA_OK) pool = NULL;
    if (pool)
        clara_pool_run(pool, n, tensor_digest, ft);
    else /* one thread, or no pool to be had: the same digests, serially */
        for (size_t i = 0; i < n; i++) tensor_digest(ft, i, 0);
    clara_pool_free(pool);
    clara_sha256_ctx c;
    clara_sha256_init(&c);
    put_header(&c, m, n);
    for (size_t i = 0; i < n; i++) put_tensor(&c, &ft[i]);
    uint8_t d[CLARA_SHA256_LEN];
    clara_sha256_final(&c, d);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < CLARA_SHA256_LEN; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[CLARA_FINGERPRINT_LEN] = '\0';
    free(ft);
    return CLARA_OK;
}
