/* genmodel.c - random-weight CLaRa models for benchmarking (genmodel.h). The files are written by
 * the converter's own metadata code (convert_meta.c: llama.cpp's keys, the tokenizer arrays,
 * CLaRa's settings) over an in-memory description of a checkpoint, the same GGUF writer, and for
 * quantized types the same quantizer as `clara convert --type MIX`. The vocabulary is the
 * project's small trained tokenizer (tests/fixtures/tokenizer, embedded at build time), padded with
 * placeholder pieces to Mistral's 32000 tokens for the real shapes. */
#include "bench/genmodel.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/status.h"
#include "bench/roofline.h"
#include "convert/convert_internal.h"
#include "convert/elemconv.h"
#include "dtype.h"
#include "quantize.h"

extern const unsigned char bench_tokenizer_model[];
extern const size_t bench_tokenizer_model_len;

typedef struct {
    const char *name;
    uint32_t hidden, ffn, layers, heads, kv_heads, lora_r;
    uint32_t vocab; /* base vocabulary; 0 = the embedded tokenizer's own (1000) */
} gen_shape;

/* 7b: Mistral-7B-Instruct-v0.2; 1b: the ~0.85 B shape of the perf anchors; tiny: for tests. */
static const gen_shape k_shapes[] = {
    {"7b", 4096, 14336, 32, 32, 8, 16, 32000},
    {"1b", 2048, 5632, 16, 16, 4, 16, 32000},
    {"tiny", 256, 768, 2, 4, 2, 8, 0},
};

#define CHUNK_BYTES ((size_t)4 << 20)
#define WEIGHT_STD  0.02f

typedef enum { T_MAT, T_NORM } tensor_kind;

typedef struct {
    char name[96];
    uint64_t ne[2]; /* GGUF order: ne[0] columns, ne[1] rows (1 for norms) */
    tensor_kind kind;
} gen_tensor;

typedef struct {
    gen_tensor *t;
    size_t n, cap;
} gen_plan;

static const gen_shape *find_shape(const char *name) {
    for (size_t i = 0; i < sizeof k_shapes / sizeof k_shapes[0]; i++)
        if (name && strcmp(k_shapes[i].name, name) == 0) return &k_shapes[i];
    return NULL;
}

bool bench_gen_shape_known(const char *shape) {
    return find_shape(shape) != NULL;
}

/* ---- random values: one splitmix64 stream per (seed, tensor, row) ---- */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_hash(const char *s) { /* FNV-1a */
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* Matrices: an Irwin-Hall sum of four 16-bit uniforms, scaled to mean 0 and std 0.02 (close to
 * normal, and cheap enough for 7 billion values). Norms: 1 + U(-0.1, 0.1). */
static void fill_row(uint64_t seed, uint64_t tensor, uint64_t row, tensor_kind kind, float *out,
                     uint64_t n) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ull ^ tensor ^ (row + 1) * 0xd1b54a32d192ed03ull;
    const float scale = WEIGHT_STD * 1.7320508f / 65536.0f; /* sqrt(3): 4 uniforms have var 1/3 */
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = splitmix64(&s);
        if (kind == T_NORM) {
            out[i] = 1.0f + ((float)(r >> 40) / 16777216.0f - 0.5f) * 0.2f;
            continue;
        }
        uint32_t sum = (uint32_t)(r & 0xffff) + (uint32_t)(r >> 16 & 0xffff) +
                       (uint32_t)(r >> 32 & 0xffff) + (uint32_t)(r >> 48);
        out[i] = ((float)sum + 2.0f - 131072.0f) * scale;
    }
}

/* ---- the tokenizer ---- */

static size_t put_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

/* The embedded tokenizer.model with NORMAL placeholder pieces "<ph_NNNNN>" (scores below every
 * real piece) appended up to `target` pieces: repeated field 1 of the ModelProto may continue
 * anywhere, so appended records extend the piece list in order. No placeholder splits into two
 * pieces of the vocabulary, so they add no merges and are never produced by encoding. */
static uint8_t *padded_model(uint32_t have, float low, uint32_t target, size_t *len) {
    size_t cap = bench_tokenizer_model_len + (size_t)(target - have) * 32;
    uint8_t *b = malloc(cap), *p;
    if (!b) return NULL;
    memcpy(b, bench_tokenizer_model, bench_tokenizer_model_len);
    p = b + bench_tokenizer_model_len;
    for (uint32_t i = have; i < target; i++) {
        char piece[16];
        int pl = snprintf(piece, sizeof piece, "<ph_%05u>", i);
        float score = low - 1.0f - (float)(i - have);
        uint8_t body[32];
        size_t n = 0;
        body[n++] = 0x0a; /* piece: string */
        n += put_varint(body + n, (uint64_t)pl);
        memcpy(body + n, piece, (size_t)pl);
        n += (size_t)pl;
        body[n++] = 0x15; /* score: fixed32 float */
        memcpy(body + n, &score, 4);
        n += 4;
        body[n++] = 0x18; /* type: NORMAL */
        body[n++] = 0x01;
        *p++ = 0x0a; /* ModelProto.pieces */
        p += put_varint(p, n);
        memcpy(p, body, n);
        p += n;
    }
    *len = (size_t)(p - b);
    return b;
}

static const char k_tokenizer_config[] =
    "{\"add_bos_token\": true, \"add_eos_token\": false, \"bos_token\": \"<s>\", "
    "\"eos_token\": \"</s>\", \"unk_token\": \"<unk>\", \"pad_token\": null, \"legacy\": true}";

static clara_status load_tokenizer(uint32_t vocab, clara_hf_tokenizer *tok) {
    const char *name = "embedded tokenizer.model";
    clara_status s =
        hf_tokenizer_parse_spm(bench_tokenizer_model, bench_tokenizer_model_len, name, tok);
    if (s == CLARA_OK && vocab > tok->n_vocab) {
        float low = 0;
        for (uint32_t i = 0; i < tok->n_vocab; i++)
            if (tok->scores[i] < low) low = tok->scores[i];
        size_t len = 0;
        uint8_t *b = padded_model(tok->n_vocab, low, vocab, &len);
        hf_tokenizer_free(tok);
        if (!b) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        s = hf_tokenizer_parse_spm(b, len, name, tok);
        free(b);
    }
    if (s == CLARA_OK)
        s = hf_tokenizer_parse_config(k_tokenizer_config, strlen(k_tokenizer_config),
                                      "embedded tokenizer_config.json", tok);
    return s;
}

/* ---- the checkpoint description the converter's metadata writer reads ---- */

static void describe(conv_ctx *c, const gen_shape *sh, char *base_dir, char *clara_dir) {
    clara_base_config *b = &c->base;
    snprintf(b->model_type, sizeof b->model_type, "mistral");
    b->hidden_size = sh->hidden;
    b->intermediate_size = sh->ffn;
    b->n_layers = sh->layers;
    b->n_heads = sh->heads;
    b->n_kv_heads = sh->kv_heads;
    b->head_dim = sh->hidden / sh->heads;
    b->vocab_size = c->tok.n_vocab;
    b->max_position_embeddings = 32768;
    b->bos_token_id = 1;
    b->eos_token_id = 2;
    b->rms_norm_eps = 1e-5f;
    b->rope_theta = 1e6f;
    clara_clara_config *cc = &c->cc; /* apple/CLaRa-7B-Instruct compression-16 (spec §2.3) */
    cc->compr_rate = 16;
    cc->doc_max_length = 256;
    cc->n_mem = 16;
    cc->generation_top_k = 5;
    cc->max_new_tokens = 128;
    cc->lora_r = sh->lora_r;
    cc->sep = cc->different_mem_tokens = cc->lora = true;
    snprintf(cc->training_stage, sizeof cc->training_stage, "stage1_2");
    snprintf(cc->decoder_model_name, sizeof cc->decoder_model_name,
             "mistralai/Mistral-7B-Instruct-v0.2");
    snprintf(cc->quantization, sizeof cc->quantization, "no");
    c->n_base_vocab = c->tok.n_vocab;
    const char *ads[2] = {"encoder_adapter", "decoder_adapter"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(c->adapter[i].name, sizeof c->adapter[i].name, "%s", ads[i]);
        c->adapter[i].rank = sh->lora_r;
        c->adapter[i].n_modules_present = sh->layers * CLARA_N_LINEAR;
    }
    c->n_adapters = 2;
    /* general.name comes from these, as from a real checkpoint's folders */
    sprintf(base_dir, "random-%s", sh->name);
    sprintf(clara_dir, "random-%s/compression-16", sh->name);
    c->p.base_dir = base_dir;
    c->p.clara_dir = clara_dir;
}

/* ---- the tensors of each file, in the converter's order ---- */

static clara_status plan_add(gen_plan *pl, tensor_kind kind, uint64_t cols, uint64_t rows,
                             const char *fmt, ...) CLARA_PRINTF(5, 6);

static clara_status plan_add(gen_plan *pl, tensor_kind kind, uint64_t cols, uint64_t rows,
                             const char *fmt, ...) {
    if (pl->n == pl->cap) {
        size_t cap = pl->cap ? pl->cap * 2 : 256;
        gen_tensor *t = realloc(pl->t, cap * sizeof *t);
        if (!t) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        pl->t = t;
        pl->cap = cap;
    }
    gen_tensor *t = &pl->t[pl->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ne[0] = cols;
    t->ne[1] = rows;
    t->kind = kind;
    return CLARA_OK;
}

static void linear_dims(const clara_base_config *b, int m, uint64_t *in, uint64_t *out) {
    uint64_t H = b->hidden_size, F = b->intermediate_size, q = (uint64_t)b->n_heads * b->head_dim,
             kv = (uint64_t)b->n_kv_heads * b->head_dim;
    const uint64_t ins[CLARA_N_LINEAR] = {H, H, H, q, H, H, F};
    const uint64_t outs[CLARA_N_LINEAR] = {q, kv, kv, H, F, F, H};
    *in = ins[m];
    *out = outs[m];
}

static clara_status plan_base(const conv_ctx *c, gen_plan *pl) {
    const clara_base_config *b = &c->base;
    uint64_t H = b->hidden_size, V = c->n_base_vocab;
    clara_status s = plan_add(pl, T_MAT, H, V, "token_embd.weight");
    if (s == CLARA_OK) s = plan_add(pl, T_MAT, H, V, "output.weight");
    for (uint32_t i = 0; i < b->n_layers && s == CLARA_OK; i++) {
        s = plan_add(pl, T_NORM, H, 1, "blk.%u.attn_norm.weight", i);
        for (int m = 0; m < CLARA_N_LINEAR && s == CLARA_OK; m++) {
            uint64_t in, out;
            linear_dims(b, m, &in, &out);
            if (m == 4) s = plan_add(pl, T_NORM, H, 1, "blk.%u.ffn_norm.weight", i);
            if (s == CLARA_OK)
                s = plan_add(pl, T_MAT, in, out, "blk.%u.%s.weight", i, clara_linear_names[m].gguf);
        }
    }
    return s == CLARA_OK ? plan_add(pl, T_NORM, H, 1, "output_norm.weight") : s;
}

static clara_status plan_addon(const conv_ctx *c, gen_plan *pl) {
    const clara_base_config *b = &c->base;
    uint64_t H = b->hidden_size, V = (uint64_t)c->n_base_vocab + c->n_clara_added;
    clara_status s = plan_add(pl, T_MAT, H, V, "token_embd.weight");
    if (s == CLARA_OK) s = plan_add(pl, T_MAT, H, V, "output.weight");
    for (size_t a = 0; a < c->n_adapters && s == CLARA_OK; a++)
        for (uint32_t i = 0; i < b->n_layers && s == CLARA_OK; i++)
            for (int m = 0; m < CLARA_N_LINEAR && s == CLARA_OK; m++) {
                uint64_t in, out, r = c->adapter[a].rank;
                const char *ad = c->adapter[a].name, *lin = clara_linear_names[m].gguf;
                linear_dims(b, m, &in, &out);
                s = plan_add(pl, T_MAT, in, r, "clara.%s.blk.%u.%s.lora_a", ad, i, lin);
                if (s == CLARA_OK)
                    s = plan_add(pl, T_MAT, r, out, "clara.%s.blk.%u.%s.lora_b", ad, i, lin);
            }
    return s;
}

/* ---- writing ---- */

typedef struct {
    uint64_t seed;
    bool progress;
    double t0;
    uint64_t done, total;
} gen_write;

static void progress(const gen_write *gw, size_t i, size_t n, const gen_tensor *t) {
    bool tty = isatty(2);
    if (!gw->progress || !(tty || i + 1 == n || i % (n / 40 + 1) == 0)) return;
    double dt = bench_now() - gw->t0, mb = (double)gw->done / 1e6;
    fprintf(stderr, "\rclara bench: [%4zu/%4zu] %-48s %9.1f / %.1f MB  %7.1f MB/s", i + 1, n,
            t->name, mb, (double)gw->total / 1e6, dt > 0 ? mb / dt : 0.0);
    if (i + 1 == n || !tty) fputc('\n', stderr);
}

static clara_status write_tensor(conv_ctx *c, gen_write *gw, const gen_tensor *t, clara_type type,
                                 float *row, uint8_t *buf) {
    uint64_t row_bytes;
    clara_status s = clara_type_row_bytes(type, t->ne[0], &row_bytes);
    size_t per_chunk = row_bytes >= CHUNK_BYTES ? 1 : CHUNK_BYTES / row_bytes, in_buf = 0;
    uint64_t h = name_hash(t->name);
    for (uint64_t r = 0; r < t->ne[1] && s == CLARA_OK; r++) {
        fill_row(gw->seed, h, r, t->kind, row, t->ne[0]);
        clara_convert_elems(CLARA_TYPE_F32, row, type, buf + in_buf * row_bytes, t->ne[0]);
        if (++in_buf == per_chunk || r + 1 == t->ne[1]) {
            s = gguf_writer_write(c->w, buf, in_buf * row_bytes);
            in_buf = 0;
        }
    }
    gw->done += t->ne[1] * row_bytes;
    return s;
}

/* Declares the plan's tensors after the metadata and streams them into `path`. */
static clara_status write_file(conv_ctx *c, const gen_plan *pl, const char *path, gen_write *gw) {
    clara_status s = CLARA_OK;
    uint64_t max_cols = 1, total = 0;
    for (size_t i = 0; i < pl->n && s == CLARA_OK; i++) {
        const gen_tensor *t = &pl->t[i];
        clara_type type = t->kind == T_NORM ? CLARA_TYPE_F32 : c->p.type;
        uint64_t bytes;
        s = gguf_writer_add_tensor(c->w, t->name, type, t->kind == T_NORM ? 1 : 2, t->ne);
        if (s == CLARA_OK) s = clara_tensor_bytes(type, t->ne, t->kind == T_NORM ? 1 : 2, &bytes);
        total += bytes;
        if (t->ne[0] > max_cols) max_cols = t->ne[0];
    }
    float *row = malloc(max_cols * sizeof *row);
    uint8_t *buf = malloc(CHUNK_BYTES + max_cols * sizeof(float));
    if (s == CLARA_OK && (!row || !buf)) s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    if (s == CLARA_OK) s = gguf_writer_begin(c->w, path);
    gw->t0 = bench_now();
    gw->done = 0;
    gw->total = total;
    for (size_t i = 0; i < pl->n && s == CLARA_OK; i++) {
        const gen_tensor *t = &pl->t[i];
        s = write_tensor(c, gw, t, t->kind == T_NORM ? CLARA_TYPE_F32 : c->p.type, row, buf);
        if (s == CLARA_OK) progress(gw, i, pl->n, t);
    }
    if (s == CLARA_OK) s = gguf_writer_finish(c->w);
    free(row);
    free(buf);
    return s;
}

/* One file: the converter's metadata for `mode`, then the random tensors; a mix is written to
 * a temporary bf16 file first and quantized into place. */
static clara_status generate_file(conv_ctx *c, clara_convert_mode mode, const char *path,
                                  const char *mix, gen_write *gw) {
    char tmp[4200];
    gen_plan pl = {0};
    c->p.mode = mode;
    c->n_clara_added = mode == CLARA_CONVERT_BASE ? 0 : c->cc.n_mem + 3;
    snprintf(tmp, sizeof tmp, "%s.tmp.bf16.gguf", path);
    if (gw->progress) fprintf(stderr, "clara bench: writing %s\n", path);
    if (c->w) gguf_writer_free(c->w);
    c->w = NULL;
    clara_status s = conv_write_metadata(c);
    if (s == CLARA_OK) s = mode == CLARA_CONVERT_BASE ? plan_base(c, &pl) : plan_addon(c, &pl);
    if (s == CLARA_OK) s = write_file(c, &pl, mix ? tmp : path, gw);
    if (s == CLARA_OK && mix) {
        if (gw->progress) fprintf(stderr, "clara bench: quantizing to %s\n", mix);
        /* per-tensor lines for the base; the add-on's LoRA tensors are copied as they are */
        clara_quantize_opts qo = {false, gw->progress ? stderr : NULL};
        if (mode == CLARA_CONVERT_ADDON) qo.progress = NULL;
        s = clara_quantize_file(tmp, path, mix, &qo);
    }
    if (mix) unlink(tmp);
    free(pl.t);
    return s;
}

static clara_status parse_type(const char *type, clara_type *float_type, const char **mix) {
    int t = type ? clara_type_from_name(type) : -1;
    *mix = NULL;
    if (type && clara_quantize_ftype(type) >= 0) {
        *mix = type;
        *float_type = CLARA_TYPE_BF16;
    } else if (t == CLARA_TYPE_F32 || t == CLARA_TYPE_F16 || t == CLARA_TYPE_BF16) {
        *float_type = (clara_type)t;
    } else {
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "--type '%s' is not one of f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 "
                          "q4_k_m q5_k_m q6_k",
                          type ? type : "");
    }
    return CLARA_OK;
}

static clara_status make_dir(const char *dir) {
    struct stat st;
    if (mkdir(dir, 0777) == 0 || (errno == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode)))
        return CLARA_OK;
    return clara_fail(CLARA_ERR_IO, "cannot create directory %s: %s", dir,
                      errno == EEXIST ? "a file has that name" : strerror(errno));
}

clara_status bench_generate(const bench_gen_params *p) {
    const gen_shape *sh = find_shape(p->shape);
    if (!sh)
        return clara_fail(CLARA_ERR_INVALID_ARG, "unknown shape '%s' (7b, 1b, tiny)",
                          p->shape ? p->shape : "");
    const char *mix;
    clara_type ft = CLARA_TYPE_BF16;
    clara_status s = parse_type(p->type, &ft, &mix);
    if (s == CLARA_OK && strlen(p->out_dir) > 4000)
        s = clara_fail(CLARA_ERR_INVALID_ARG, "output directory name is too long");
    if (s == CLARA_OK) s = make_dir(p->out_dir);
    conv_ctx *c = s == CLARA_OK ? calloc(1, sizeof *c) : NULL;
    if (s == CLARA_OK && !c) s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    if (s != CLARA_OK) return s;
    char base_dir[32], clara_dir[48], path[4100];
    c->p.type = ft;
    s = load_tokenizer(sh->vocab, &c->tok);
    gen_write gw = {p->seed, p->progress, 0, 0, 0};
    if (s == CLARA_OK) {
        describe(c, sh, base_dir, clara_dir);
        snprintf(path, sizeof path, "%s/base.gguf", p->out_dir);
        s = generate_file(c, CLARA_CONVERT_BASE, path, mix, &gw);
    }
    if (s == CLARA_OK) {
        snprintf(path, sizeof path, "%s/clara.gguf", p->out_dir);
        s = generate_file(c, CLARA_CONVERT_ADDON, path, mix, &gw);
    }
    if (c->w) gguf_writer_free(c->w);
    hf_tokenizer_free(&c->tok);
    free(c);
    return s;
}
