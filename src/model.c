/* model.c - clara_model_load: maps a GGUF written by `clara convert`, reads the hyperparameters
 * (llama.* keys) and CLaRa settings (clara.* keys), binds every weight by name with its shape
 * checked, and resolves the LoRA adapters with the adapter-loading policy of spec §6. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/status.h"
#include "convert/lora_map.h"
#include "dtype.h"
#include "quant.h"

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        clara_status s_ = (expr);                                                                  \
        if (s_ != CLARA_OK) return s_;                                                             \
    } while (0)

size_t clara_mat_elem_size(clara_type t) {
    return t == CLARA_TYPE_F32 ? 4 : 2;
}

clara_model_params clara_model_default_params(void) {
    clara_model_params p = {CLARA_ADAPTER_POLICY_HF};
    return p;
}

static clara_status get_u32(const gguf_ctx *g, const char *key, uint32_t lo, uint32_t hi,
                            uint32_t *out) {
    uint64_t v;
    TRY(gguf_get_uint(g, key, &v));
    if (v < lo || v > hi)
        return clara_fail(CLARA_ERR_FORMAT, "%s: '%s' = %llu is out of range [%u, %u]",
                          gguf_name(g), key, (unsigned long long)v, lo, hi);
    *out = (uint32_t)v;
    return CLARA_OK;
}

static clara_status load_hparams(clara_model *m) {
    const gguf_ctx *g = m->base ? m->base : m->gguf;
    clara_hparams *hp = &m->hp;
    const char *arch;
    TRY(gguf_get_str(g, "general.architecture", &arch));
    if (strcmp(arch, "llama") != 0)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: architecture '%s' (expected llama)",
                          gguf_name(g), arch);
    TRY(get_u32(g, "llama.embedding_length", 1, 1u << 16, &hp->n_embd));
    TRY(get_u32(g, "llama.block_count", 1, 1024, &hp->n_layer));
    TRY(get_u32(g, "llama.feed_forward_length", 1, 1u << 20, &hp->n_ff));
    TRY(get_u32(g, "llama.attention.head_count", 1, 1024, &hp->n_head));
    hp->n_head_kv = hp->n_head;
    if (gguf_find_key(g, "llama.attention.head_count_kv") >= 0)
        TRY(get_u32(g, "llama.attention.head_count_kv", 1, hp->n_head, &hp->n_head_kv));
    TRY(get_u32(g, "llama.context_length", 1, 1u << 24, &hp->n_ctx));
    hp->head_dim = hp->n_embd / hp->n_head;
    if (gguf_find_key(g, "llama.attention.key_length") >= 0)
        TRY(get_u32(g, "llama.attention.key_length", 2, 1u << 12, &hp->head_dim));
    TRY(gguf_get_f32(g, "llama.rope.freq_base", &hp->rope_theta));
    TRY(gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &hp->rms_eps));
    if (hp->n_head % hp->n_head_kv || hp->head_dim % 2 || !(hp->rope_theta > 0) ||
        !(hp->rms_eps > 0))
        return clara_fail(CLARA_ERR_FORMAT, "%s: inconsistent attention hyperparameters",
                          gguf_name(g));
    return CLARA_OK;
}

/* Finds a tensor in the model file, then (two-file mode) in the base; *from names the file. */
static const gguf_tensor *find_tensor(const clara_model *m, const char *name,
                                      const gguf_ctx **from) {
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    *from = m->gguf;
    if (!t && m->base) {
        t = gguf_find_tensor(m->base, name);
        *from = m->base;
    }
    return t;
}

/* Binds a tensor as a [rows][cols] matrix (GGUF ne = {cols, rows}). */
static clara_status bind_mat(const clara_model *m, const char *name, uint64_t rows, uint64_t cols,
                             bool required, clara_mat *out) {
    const gguf_ctx *g;
    const gguf_tensor *t = find_tensor(m, name, &g);
    memset(out, 0, sizeof *out);
    if (!t) {
        if (!required) return CLARA_OK;
        return clara_fail(CLARA_ERR_NOT_FOUND, "%s: tensor '%s' is missing", gguf_name(g), name);
    }
    if (!clara_dequant_supported(t->type))
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: tensor '%s' has type %s, which this build cannot compute with",
                          gguf_name(g), name, clara_type_name(t->type));
    uint64_t r = t->n_dims >= 2 ? t->ne[1] : 1;
    if (t->ne[0] != cols || r != rows || t->n_dims > 2)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: tensor '%s' has shape [%llu, %llu], expected [%llu, %llu]",
                          gguf_name(g), name, (unsigned long long)t->ne[0], (unsigned long long)r,
                          (unsigned long long)cols, (unsigned long long)rows);
    out->data = t->data;
    out->type = t->type;
    out->rows = rows;
    out->cols = cols;
    return CLARA_OK;
}

static clara_status bind_norm(const clara_model *m, const char *name, const float **out) {
    const gguf_ctx *g;
    const gguf_tensor *t = find_tensor(m, name, &g);
    if (!t)
        return clara_fail(CLARA_ERR_NOT_FOUND, "%s: tensor '%s' is missing", gguf_name(g), name);
    if (t->type != CLARA_TYPE_F32 || t->ne[0] != m->hp.n_embd || t->n_dims != 1)
        return clara_fail(CLARA_ERR_FORMAT, "%s: norm '%s' must be f32 [%u]", gguf_name(g), name,
                          m->hp.n_embd);
    if (((uintptr_t)t->data & 3) != 0)
        return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s' is not 4-byte aligned", gguf_name(g),
                          name);
    *out = (const float *)t->data;
    return CLARA_OK;
}

/* Input and output sizes of each linear layer. */
static void lin_dims(const clara_hparams *hp, int l, uint64_t *in, uint64_t *out) {
    uint64_t H = hp->n_embd, q = (uint64_t)hp->n_head * hp->head_dim,
             kv = (uint64_t)hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    const uint64_t ins[CLARA_N_LIN] = {H, H, H, q, H, H, F};
    const uint64_t outs[CLARA_N_LIN] = {q, kv, kv, H, F, F, H};
    *in = ins[l];
    *out = outs[l];
}

/* clara.blk.N.<linear>.in_perm (GPTQ act-order): an i32 permutation of the layer's inputs. */
static clara_status bind_perm(const clara_model *m, uint32_t layer, int l, uint64_t in,
                              const int32_t **out) {
    char name[96];
    snprintf(name, sizeof name, "clara.blk.%u.%s.in_perm", layer, clara_linear_names[l].gguf);
    const gguf_ctx *g;
    const gguf_tensor *t = find_tensor(m, name, &g);
    *out = NULL;
    if (!t) return CLARA_OK;
    if (t->type != CLARA_TYPE_I32 || t->n_dims != 1 || t->ne[0] != in ||
        ((uintptr_t)t->data & 3) != 0)
        return clara_fail(CLARA_ERR_FORMAT, "%s: '%s' must be an aligned i32 vector of %llu",
                          gguf_name(g), name, (unsigned long long)in);
    /* A copy, checked once: these are indices, and the mapped file could be rewritten in place
     * under a loaded model (garbage weights are thrown away, an index out of range would not
     * be). */
    int32_t *p = malloc(in * sizeof *p);
    uint8_t *seen = calloc(in, 1);
    if (!p || !seen) {
        free(p);
        free(seen);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    memcpy(p, t->data, in * sizeof *p);
    for (uint64_t j = 0; j < in; j++) {
        if (p[j] < 0 || (uint64_t)p[j] >= in || seen[p[j]]) {
            free(p);
            free(seen);
            return clara_fail(CLARA_ERR_FORMAT, "%s: '%s' is not a permutation of 0..%llu",
                              gguf_name(g), name, (unsigned long long)in - 1);
        }
        seen[p[j]] = 1;
    }
    free(seen);
    *out = p;
    return CLARA_OK;
}

static clara_status bind_weights(clara_model *m) {
    const clara_hparams *hp = &m->hp;
    TRY(bind_mat(m, "token_embd.weight", hp->n_vocab, hp->n_embd, true, &m->tok_embd));
    TRY(bind_mat(m, "output.weight", hp->n_vocab, hp->n_embd, true, &m->output));
    TRY(bind_norm(m, "output_norm.weight", &m->output_norm));
    m->layers = calloc(hp->n_layer, sizeof *m->layers);
    if (!m->layers) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    char name[96];
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        clara_layer *L = &m->layers[i];
        snprintf(name, sizeof name, "blk.%u.attn_norm.weight", i);
        TRY(bind_norm(m, name, &L->attn_norm));
        snprintf(name, sizeof name, "blk.%u.ffn_norm.weight", i);
        TRY(bind_norm(m, name, &L->ffn_norm));
        for (int l = 0; l < CLARA_N_LIN; l++) {
            uint64_t in, out;
            lin_dims(hp, l, &in, &out);
            snprintf(name, sizeof name, "blk.%u.%s.weight", i, clara_linear_names[l].gguf);
            TRY(bind_mat(m, name, out, in, true, &L->w[l]));
            TRY(bind_perm(m, i, l, in, &L->in_perm[l]));
            m->has_in_perm |= L->in_perm[l] != NULL;
        }
    }
    return CLARA_OK;
}

static clara_status load_adapter(clara_model *m, const char *name, clara_adapter *ad) {
    char key[160];
    snprintf(ad->name, sizeof ad->name, "%s", name);
    snprintf(key, sizeof key, "clara.adapter.%s.rank", name);
    TRY(get_u32(m->gguf, key, 1, 1u << 12, &ad->rank));
    float alpha;
    snprintf(key, sizeof key, "clara.adapter.%s.alpha", name);
    TRY(gguf_get_f32(m->gguf, key, &alpha));
    ad->scale = alpha / (float)ad->rank;
    ad->mods = calloc((size_t)m->hp.n_layer * CLARA_N_LIN, sizeof *ad->mods);
    if (!ad->mods) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    for (uint32_t i = 0; i < m->hp.n_layer; i++)
        for (int l = 0; l < CLARA_N_LIN; l++) {
            clara_lora *mod = &ad->mods[i * CLARA_N_LIN + l];
            uint64_t in, out;
            lin_dims(&m->hp, l, &in, &out);
            const char *lin = clara_linear_names[l].gguf;
            snprintf(key, sizeof key, "clara.%s.blk.%u.%s.lora_a", name, i, lin);
            TRY(bind_mat(m, key, ad->rank, in, false, &mod->a));
            snprintf(key, sizeof key, "clara.%s.blk.%u.%s.lora_b", name, i, lin);
            TRY(bind_mat(m, key, out, ad->rank, false, &mod->b));
            if (!mod->a.data != !mod->b.data)
                return clara_fail(CLARA_ERR_FORMAT, "%s: %s has only one of lora_a/lora_b",
                                  gguf_name(m->gguf), key);
        }
    return CLARA_OK;
}

static const clara_adapter *find_file_adapter(const clara_model *m, const char *name) {
    for (int i = 0; i < m->n_file_adapters; i++)
        if (strcmp(m->file_adapters[i].name, name) == 0) return &m->file_adapters[i];
    return NULL;
}

static void add_loaded(clara_model *m, const clara_adapter *a) {
    if (m->n_loaded < CLARA_MAX_ADAPTERS) m->loaded[m->n_loaded++] = a;
}

/* Spec §6: which adapters CLaRa.from_pretrained ends up with, and their roles (§5). */
static void apply_policy(clara_model *m) {
    const char *stage = m->meta.training_stage;
    bool all = m->policy == CLARA_ADAPTER_POLICY_ALL || m->meta.pure_inference;
    bool fresh_dec =
        !all && (strcmp(stage, "stage1_2") == 0 || strcmp(stage, "stage2_reasoning") == 0);
    snprintf(m->fresh_decoder.name, sizeof m->fresh_decoder.name, "decoder_adapter");
    if (fresh_dec) { /* PEFT init: B = 0, so the fresh adapter contributes exactly zero */
        add_loaded(m, &m->fresh_decoder);
        m->decoder = &m->fresh_decoder;
    }
    for (int i = 0; i < m->n_file_adapters; i++) {
        const clara_adapter *a = &m->file_adapters[i];
        bool is_qr = strcmp(a->name, "query_reasoner_adapter") == 0;
        bool is_dec = strcmp(a->name, "decoder_adapter") == 0;
        if (!all && is_qr && (strcmp(stage, "stage1") == 0 || strcmp(stage, "stage1_2") == 0))
            continue;
        if (!all && is_dec &&
            (strcmp(stage, "stage1_2") == 0 || strcmp(stage, "stage2_reasoning") == 0))
            continue;
        add_loaded(m, a);
        if (is_dec) m->decoder = a;
        if (is_qr) m->query = a;
        if (strcmp(a->name, "encoder_adapter") == 0) m->encoder = a;
    }
    /* stage2 without a query reasoner: a copy of the encoder is registered under that name */
    if (strcmp(stage, "stage2") == 0 && !find_file_adapter(m, "query_reasoner_adapter") &&
        m->encoder) {
        add_loaded(m, m->encoder);
        m->query = m->encoder;
    }
}

static clara_status load_adapters(clara_model *m) {
    uint64_t n;
    gguf_vtype et;
    TRY(gguf_get_arr(m->gguf, "clara.adapters", &et, &n));
    if (et != GGUF_VT_STR || n > CLARA_MAX_ADAPTERS)
        return clara_fail(CLARA_ERR_FORMAT, "%s: clara.adapters must list at most %d names",
                          gguf_name(m->gguf), CLARA_MAX_ADAPTERS);
    for (uint64_t i = 0; i < n; i++) {
        const char *name = gguf_get_arr_str(m->gguf, "clara.adapters", i);
        if (!name || strlen(name) >= sizeof m->file_adapters[0].name)
            return clara_fail(CLARA_ERR_FORMAT, "%s: bad adapter name", gguf_name(m->gguf));
        TRY(load_adapter(m, name, &m->file_adapters[m->n_file_adapters++]));
    }
    apply_policy(m);
    return CLARA_OK;
}

clara_status clara_meta_load(clara_model *m);        /* model_meta.c */
clara_status clara_pair_check(const clara_model *m); /* model_pair.c */

static clara_status load(clara_model *m) {
    bool addon = false;
    if (gguf_find_key(m->gguf, "clara.addon") >= 0)
        TRY(gguf_get_bool(m->gguf, "clara.addon", &addon));
    if (addon && !m->base)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "%s is a CLaRa add-on file: give it with --clara and the base model "
                          "GGUF with --base",
                          gguf_name(m->gguf));
    if (!addon && m->base)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "%s is not a CLaRa add-on file (convert one with `clara convert "
                          "--addon-only`), or use it alone with --model",
                          gguf_name(m->gguf));
    if (gguf_find_key(m->gguf, "clara.n_mem") < 0)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s has no CLaRa metadata (clara.*): convert the checkpoint with "
                          "`clara convert`",
                          gguf_name(m->gguf));
    TRY(load_hparams(m));
    if (m->base) TRY(clara_pair_check(m));
    return CLARA_OK;
}

static clara_status load_files(const char *base_path, const char *path,
                               const clara_model_params *params, clara_model **out) {
    clara_model *m = calloc(1, sizeof *m);
    if (!m) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&m->repack_mu, NULL);
    m->policy = params ? params->adapter_policy : CLARA_ADAPTER_POLICY_HF;
    clara_status s = base_path ? gguf_open(base_path, &m->base) : CLARA_OK;
    if (s == CLARA_OK) s = gguf_open(path, &m->gguf);
    if (s == CLARA_OK) s = load(m);
    if (s == CLARA_OK) s = clara_tokenizer_load(m->gguf, &m->tok);
    if (s == CLARA_OK) {
        m->hp.n_vocab = clara_tokenizer_n_vocab(m->tok);
        s = clara_meta_load(m);
    }
    if (s == CLARA_OK) s = bind_weights(m);
    if (s == CLARA_OK) s = load_adapters(m);
    if (s != CLARA_OK) {
        clara_model_free(m);
        return s;
    }
    *out = m;
    return CLARA_OK;
}

clara_status clara_model_load(const char *path, const clara_model_params *params,
                              clara_model **out) {
    return load_files(NULL, path, params, out);
}

clara_status clara_model_load_pair(const char *base_path, const char *clara_path,
                                   const clara_model_params *params, clara_model **out) {
    return load_files(base_path, clara_path, params, out);
}

void clara_model_free(clara_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_file_adapters; i++) free(m->file_adapters[i].mods);
    for (uint32_t i = 0; m->layers && i < m->hp.n_layer; i++)
        for (int l = 0; l < CLARA_N_LIN; l++) free((void *)m->layers[i].in_perm[l]);
    free(m->layers);
    for (size_t i = 0; i < m->n_lanes_arenas; i++) free(m->lanes_arenas[i]);
    free(m->lanes_arenas);
    pthread_mutex_destroy(&m->repack_mu);
    free(m->meta.mem_ids);
    if (m->tok) clara_tokenizer_free(m->tok);
    if (m->gguf) gguf_free(m->gguf);
    if (m->base) gguf_free(m->base);
    free(m);
}

clara_status clara_model_check_files(const clara_model *m) {
    clara_status s = m->base ? gguf_check_file(m->base) : CLARA_OK;
    return s == CLARA_OK ? gguf_check_file(m->gguf) : s;
}

uint32_t clara_model_n_embd(const clara_model *m) {
    return m->hp.n_embd;
}
uint32_t clara_model_n_mem(const clara_model *m) {
    return m->meta.n_mem;
}
uint32_t clara_model_n_vocab(const clara_model *m) {
    return m->hp.n_vocab;
}
uint32_t clara_model_n_ctx(const clara_model *m) {
    return m->hp.n_ctx;
}
uint32_t clara_model_generation_top_k(const clara_model *m) {
    return m->meta.generation_top_k;
}
int clara_model_can_retrieve(const clara_model *m) {
    return m->query != NULL && m->encoder != NULL;
}
