/* gguf_base.c - reads what a CLaRa add-on takes from the base model out of a base GGUF in
 * llama.cpp's layout instead of the Hugging Face directory: the transformer settings (llama.*
 * keys, in place of config.json) and the vocabulary (tokenizer.ggml.*, in place of
 * tokenizer.json / tokenizer.model / tokenizer_config.json). llama.cpp builds a "llama" vocabulary
 * from SentencePiece's tokenizer.model, so the flavour settings the GGUF does not record are
 * those of that route (spm_model.c, as Hugging Face's LlamaConverter sets them); a GGUF without
 * merges (llama.cpp writes none for SentencePiece vocabularies) gets them derived from the
 * scores the same way. Every array's type and length is checked before use: the file is
 * untrusted. */
#include "convert/gguf_base.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/log.h"
#include "base/mapfile.h"
#include "base/status.h"
#include "convert/hf_tokenizer_internal.h"

bool gguf_base_is_gguf(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return false;
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char magic[4];
    bool yes = fread(magic, 1, 4, f) == 4 && memcmp(magic, "GGUF", 4) == 0;
    fclose(f);
    return yes;
}

/* ---- settings (llama.* keys) --------------------------------------------------------------- */

static clara_status missing(const gguf_ctx *g, const char *key, const char *what) {
    return clara_fail(CLARA_ERR_FORMAT, "%s: key '%s' is missing: %s", gguf_name(g), key, what);
}

/* An integer key in [lo, hi]; an absent optional key leaves *out as it is. */
static clara_status get_u32(const gguf_ctx *g, const char *key, bool required, uint32_t lo,
                            uint32_t hi, uint32_t *out) {
    if (gguf_find_key(g, key) < 0)
        return required ? missing(g, key, "not a llama base model GGUF") : CLARA_OK;
    uint64_t v;
    clara_status s = gguf_get_uint(g, key, &v);
    if (s != CLARA_OK) return s;
    if (v < lo || v > hi)
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s is %llu (must be in [%u, %u])", gguf_name(g),
                          key, (unsigned long long)v, lo, hi);
    *out = (uint32_t)v;
    return CLARA_OK;
}

static clara_status get_positive_f32(const gguf_ctx *g, const char *key, bool required,
                                     float *out) {
    if (gguf_find_key(g, key) < 0)
        return required ? missing(g, key, "not a llama base model GGUF") : CLARA_OK;
    clara_status s = gguf_get_f32(g, key, out);
    if (s == CLARA_OK && !(isfinite(*out) && *out > 0))
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s is %g (must be a positive number)",
                          gguf_name(g), key, (double)*out);
    return s;
}

/* A CLaRa file is not a base model: its tables and vocabulary already hold CLaRa's tokens. */
static clara_status check_not_clara(const gguf_ctx *g) {
    for (size_t i = 0; i < gguf_n_kv(g); i++)
        if (strncmp(gguf_kv_key(g, i), "clara.", 6) == 0)
            return clara_fail(CLARA_ERR_INVALID_ARG,
                              "%s is a CLaRa model file (it has the key '%s'), not a base model "
                              "GGUF",
                              gguf_name(g), gguf_kv_key(g, i));
    return CLARA_OK;
}

/* The string key must be there and be "llama": the base `noun` (`what` it names). */
static clara_status require_llama(const gguf_ctx *g, const char *key, const char *if_missing,
                                  const char *noun, const char *what) {
    const char *v;
    if (gguf_find_key(g, key) < 0) return missing(g, key, if_missing);
    clara_status s = gguf_get_str(g, key, &v);
    if (s != CLARA_OK || strcmp(v, "llama") == 0) return s;
    char q[64];
    return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: %s is '%s'; the base %s must be 'llama' (%s)",
                      gguf_name(g), key, hftok_quote(v, q, sizeof q), noun, what);
}

static clara_status check_architecture(const gguf_ctx *g) {
    return require_llama(g, "general.architecture", "not a llama.cpp model file", "model",
                         "Mistral-7B-Instruct-v0.2");
}

/* head_dim: llama.attention.key_length when recorded (llama.cpp writes it only when it is not
 * hidden / heads), else hidden / heads; RoPE must rotate the whole head (as Mistral does). */
static clara_status read_head_dim(const gguf_ctx *g, clara_base_config *c) {
    const char *name = gguf_name(g);
    clara_status s = get_u32(g, "llama.attention.key_length", false, 2, 1u << 12, &c->head_dim);
    if (s != CLARA_OK) return s;
    if (c->head_dim == 0) {
        if (c->hidden_size % c->n_heads != 0)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: llama.embedding_length %u is not a multiple of %u heads", name,
                              c->hidden_size, c->n_heads);
        c->head_dim = c->hidden_size / c->n_heads;
    }
    uint32_t v = c->head_dim, rot = c->head_dim;
    if ((s = get_u32(g, "llama.attention.value_length", false, 1, 1u << 12, &v)) != CLARA_OK ||
        (s = get_u32(g, "llama.rope.dimension_count", false, 1, 1u << 12, &rot)) != CLARA_OK)
        return s;
    if (v != c->head_dim || rot != c->head_dim)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: head size %u with value length %u and RoPE dimension %u is not "
                          "supported (all three must be equal)",
                          name, c->head_dim, v, rot);
    if (c->head_dim % 2 != 0)
        return clara_fail(CLARA_ERR_FORMAT, "%s: head dimension %u is odd (RoPE needs pairs)", name,
                          c->head_dim);
    return CLARA_OK;
}

static clara_status read_config(const gguf_ctx *g, uint32_t n_tokens, clara_base_config *c) {
    const char *name = gguf_name(g);
    clara_status s;
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "llama");
    c->rope_theta = 10000.0f; /* llama.cpp's default when llama.rope.freq_base is absent */
    c->vocab_size = n_tokens; /* llama.cpp's n_vocab is the token count */
    c->bos_token_id = c->eos_token_id = -1;
    if ((s = get_u32(g, "llama.embedding_length", true, 1, 1u << 16, &c->hidden_size)) ||
        (s = get_u32(g, "llama.feed_forward_length", true, 1, 1u << 20, &c->intermediate_size)) ||
        (s = get_u32(g, "llama.block_count", true, 1, 1024, &c->n_layers)) ||
        (s = get_u32(g, "llama.attention.head_count", true, 1, 1024, &c->n_heads)))
        return s;
    c->n_kv_heads = c->n_heads;
    if ((s = get_u32(g, "llama.attention.head_count_kv", false, 1, 1024, &c->n_kv_heads)) ||
        (s = get_u32(g, "llama.context_length", true, 1, 1u << 24, &c->max_position_embeddings)) ||
        (s = get_u32(g, "llama.vocab_size", false, 1, 1u << 24, &c->vocab_size)) ||
        (s = get_positive_f32(g, "llama.attention.layer_norm_rms_epsilon", true,
                              &c->rms_norm_eps)) ||
        (s = get_positive_f32(g, "llama.rope.freq_base", false, &c->rope_theta)))
        return s;
    if (c->n_heads % c->n_kv_heads != 0)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: llama.attention.head_count %u is not a multiple of "
                          "llama.attention.head_count_kv %u",
                          name, c->n_heads, c->n_kv_heads);
    if (c->vocab_size != n_tokens)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: llama.vocab_size is %u but tokenizer.ggml.tokens has %u tokens",
                          name, c->vocab_size, n_tokens);
    /* as config.json's rope_scaling: only none (llama.cpp may record "none" explicitly) */
    const char *scaling = "none";
    if (gguf_find_key(g, "llama.rope.scaling.type") >= 0 &&
        (s = gguf_get_str(g, "llama.rope.scaling.type", &scaling)) != CLARA_OK)
        return s;
    if (strcmp(scaling, "none") != 0) {
        char q[64];
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: llama.rope.scaling.type '%s' is not supported (only none)", name,
                          hftok_quote(scaling, q, sizeof q));
    }
    return read_head_dim(g, c);
}

/* ---- vocabulary (tokenizer.ggml.* keys) ---------------------------------------------------- */

/* A numeric array of exactly `type` and `n` entries; *data is NULL when the key is absent. */
static clara_status get_array(const gguf_ctx *g, const char *key, gguf_vtype type, uint64_t n,
                              const void **data) {
    *data = NULL;
    if (gguf_find_key(g, key) < 0) return CLARA_OK;
    uint64_t count;
    clara_status s = gguf_get_arr_data(g, key, type, data, &count);
    if (s != CLARA_OK) return s;
    if (count != n)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: %s has %llu entries but tokenizer.ggml.tokens %llu", gguf_name(g),
                          key, (unsigned long long)count, (unsigned long long)n);
    return CLARA_OK;
}

static clara_status read_pieces(const gguf_ctx *g, clara_hf_tokenizer *t) {
    const char *name = gguf_name(g), *key = "tokenizer.ggml.tokens";
    gguf_vtype et;
    uint64_t n;
    if (gguf_find_key(g, key) < 0) return missing(g, key, "the base GGUF has no vocabulary");
    clara_status s = gguf_get_arr(g, key, &et, &n);
    if (s != CLARA_OK) return s;
    if (et != GGUF_VT_STR)
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s is an array of %s, not of strings", name, key,
                          gguf_vtype_name(et));
    if (n == 0 || n > CLARA_TOK_MAX_VOCAB)
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s has %llu entries (1..%u)", name, key,
                          (unsigned long long)n, CLARA_TOK_MAX_VOCAB);
    t->tokens = calloc(n, sizeof *t->tokens);
    t->scores = calloc(n, sizeof *t->scores);
    t->token_types = calloc(n, sizeof *t->token_types);
    if (!t->tokens || !t->scores || !t->token_types)
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    t->n_vocab = (uint32_t)n;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        const char *p = gguf_get_arr_str(g, key, i), *bad;
        char q[64];
        if (!p) return clara_fail(CLARA_ERR_FORMAT, "%s: %s[%u] cannot be read", name, key, i);
        if ((bad = hftok_piece_problem(p, strlen(p))) != NULL)
            return clara_fail(CLARA_ERR_FORMAT, "%s: %s[%u] '%s' %s", name, key, i,
                              hftok_quote(p, q, sizeof q), bad);
        if (!(t->tokens[i] = hftok_strndup(p, strlen(p))))
            return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    return CLARA_OK;
}

/* Scores (optional: only the merge derivation uses them) and token types (required: they say
 * which tokens are special). */
static clara_status read_scores_types(const gguf_ctx *g, clara_hf_tokenizer *t, bool *has_scores) {
    const char *name = gguf_name(g);
    const void *sc, *ty;
    clara_status s = get_array(g, "tokenizer.ggml.scores", GGUF_VT_F32, t->n_vocab, &sc);
    if (s == CLARA_OK) s = get_array(g, "tokenizer.ggml.token_type", GGUF_VT_I32, t->n_vocab, &ty);
    if (s != CLARA_OK) return s;
    if (!ty)
        return missing(g, "tokenizer.ggml.token_type", "the base GGUF's vocabulary has no types");
    *has_scores = sc != NULL;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        int32_t type;
        memcpy(&type, (const char *)ty + 4 * (size_t)i, 4);
        if (type < CLARA_TOKTYPE_NORMAL || type > CLARA_TOKTYPE_BYTE)
            return clara_fail(CLARA_ERR_FORMAT, "%s: tokenizer.ggml.token_type[%u] is %d (1..6)",
                              name, i, (int)type);
        t->token_types[i] = type;
        if (sc) memcpy(&t->scores[i], (const char *)sc + 4 * (size_t)i, 4);
        if (isnan(t->scores[i]))
            return clara_fail(CLARA_ERR_FORMAT, "%s: tokenizer.ggml.scores[%u] is NaN", name, i);
    }
    return CLARA_OK;
}

/* Stored merges are copied (the engine checks each against the vocabulary when it loads the
 * add-on); absent ones are derived from the scores as for tokenizer.model. */
static clara_status read_merges(const gguf_ctx *g, clara_hf_tokenizer *t, bool has_scores) {
    const char *name = gguf_name(g), *key = "tokenizer.ggml.merges";
    if (gguf_find_key(g, key) < 0) {
        if (!has_scores)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: key 'tokenizer.ggml.merges' is missing and so is "
                              "'tokenizer.ggml.scores' to derive them from",
                              name);
        return hftok_spm_derive_merges(t, name);
    }
    gguf_vtype et;
    uint64_t n;
    clara_status s = gguf_get_arr(g, key, &et, &n);
    if (s != CLARA_OK) return s;
    if (et != GGUF_VT_STR || n > CLARA_TOK_MAX_MERGES)
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s must be an array of at most %u strings", name,
                          key, CLARA_TOK_MAX_MERGES);
    t->merges = calloc(n + 1, sizeof *t->merges);
    if (!t->merges) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < n; i++) {
        const char *m = gguf_get_arr_str(g, key, i);
        size_t len = m ? strlen(m) : 0;
        if (!m || len > 2 * CLARA_TOK_MAX_PIECE + 1 || !strchr(m, ' '))
            return clara_fail(CLARA_ERR_FORMAT, "%s: %s[%llu] is not \"left right\"", name, key,
                              (unsigned long long)i);
        if (!(t->merges[i] = hftok_strndup(m, len)))
            return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        t->n_merges = i + 1;
    }
    return CLARA_OK;
}

static clara_status opt_id(const gguf_ctx *g, const char *key, uint32_t n_vocab, int32_t *out) {
    uint32_t v = 0;
    if (gguf_find_key(g, key) < 0) return CLARA_OK;
    clara_status s = get_u32(g, key, true, 0, n_vocab - 1, &v);
    if (s == CLARA_OK) *out = (int32_t)v;
    return s;
}

static clara_status opt_bool(const gguf_ctx *g, const char *key, bool *out) {
    return gguf_find_key(g, key) < 0 ? CLARA_OK : gguf_get_bool(g, key, out);
}

/* Special ids, the flags tokenizer_config.json would give, and the chat template. */
static clara_status read_settings(const gguf_ctx *g, clara_hf_tokenizer *t) {
    const char *tmpl = NULL;
    bool space_prefix = true; /* llama.cpp's default for a "llama" vocabulary */
    clara_status s;
    if ((s = require_llama(g, "tokenizer.ggml.model", "the base GGUF has no tokenizer", "tokenizer",
                           "SentencePiece BPE")) != CLARA_OK)
        return s;
    if ((s = opt_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos_id)) ||
        (s = opt_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos_id)) ||
        (s = opt_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk_id)) ||
        (s = opt_id(g, "tokenizer.ggml.padding_token_id", t->n_vocab, &t->pad_id)) ||
        (s = opt_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos)) ||
        (s = opt_bool(g, "tokenizer.ggml.add_eos_token", &t->add_eos)) ||
        (s = opt_bool(g, "tokenizer.ggml.add_space_prefix", &space_prefix)))
        return s;
    if (gguf_find_key(g, "tokenizer.chat_template") >= 0 &&
        (s = gguf_get_str(g, "tokenizer.chat_template", &tmpl)) != CLARA_OK)
        return s;
    if (tmpl && !(t->chat_template = hftok_strndup(tmpl, strlen(tmpl))))
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    t->norm = CLARA_NORM_LEGACY;
    t->prepend_scheme = space_prefix ? CLARA_PREPEND_ALWAYS : CLARA_PREPEND_NEVER;
    /* llama.cpp's SentencePiece tokenizer falls back to the <0xXX> pieces whenever they exist;
     * Hugging Face's LlamaConverter fuses unknowns */
    for (uint32_t i = 0; i < t->n_vocab && !t->byte_fallback; i++)
        t->byte_fallback = t->token_types[i] == CLARA_TOKTYPE_BYTE;
    t->fuse_unk = true;
    /* clara.tokenizer.source says where the vocabulary came from: here the base GGUF's keys,
     * the one value that differs from an add-on converted from the Hugging Face directory */
    if (!(t->source = hftok_strndup("tokenizer.ggml", 14)))
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    return CLARA_OK;
}

static clara_status read_tokenizer(const gguf_ctx *g, clara_hf_tokenizer *t) {
    bool has_scores = false;
    clara_status s = read_pieces(g, t);
    if (s == CLARA_OK) s = hftok_check_unique(t, gguf_name(g), "tokenizer.ggml.tokens:");
    if (s == CLARA_OK) s = read_scores_types(g, t, &has_scores);
    if (s == CLARA_OK) s = read_settings(g, t);
    if (s == CLARA_OK) s = hftok_added_from_types(t);
    if (s == CLARA_OK) s = read_merges(g, t, has_scores);
    return s;
}

clara_status gguf_base_read(const gguf_ctx *g, clara_base_config *cfg, clara_hf_tokenizer *tok) {
    hftok_init(tok);
    clara_status s = check_not_clara(g);
    if (s == CLARA_OK) s = check_architecture(g);
    if (s == CLARA_OK) s = read_tokenizer(g, tok);
    if (s == CLARA_OK) s = read_config(g, tok->n_vocab, cfg);
    if (s == CLARA_OK) {
        cfg->bos_token_id = tok->bos_id;
        cfg->eos_token_id = tok->eos_id;
    } else {
        hf_tokenizer_free(tok);
    }
    return s;
}

/* ---- checks against the tensors and CLaRa's tokenizer -------------------------------------- */

clara_status gguf_base_check_tables(const gguf_ctx *g, const clara_base_config *cfg) {
    const char *names[] = {"token_embd.weight", "output.weight"};
    for (size_t i = 0; i < 2; i++) {
        const gguf_tensor *t = gguf_find_tensor(g, names[i]);
        /* llama.cpp leaves output.weight out when the model ties it to the embeddings */
        if (!t && i == 1) continue;
        if (!t)
            return clara_fail(CLARA_ERR_NOT_FOUND,
                              "%s: tensor '%s' is missing: not a base model GGUF", gguf_name(g),
                              names[i]);
        if (t->n_dims != 2 || t->ne[0] != cfg->hidden_size || t->ne[1] != cfg->vocab_size)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: tensor '%s' is [%llu, %llu] (%u dims), expected [%u, %u] "
                              "(llama.embedding_length, vocabulary)",
                              gguf_name(g), names[i], (unsigned long long)t->ne[0],
                              (unsigned long long)t->ne[1], t->n_dims, cfg->hidden_size,
                              cfg->vocab_size);
    }
    return CLARA_OK;
}

static clara_status compare_vocab(const clara_hf_tokenizer *base, const clara_hf_tokenizer *cl,
                                  const char *gguf_path, const char *path) {
    char q1[64], q2[64];
    if (cl->n_vocab < base->n_vocab)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "%s has %u tokens, fewer than the %u of the base GGUF %s: the base is "
                          "not the model this CLaRa checkpoint was trained on",
                          path, cl->n_vocab, base->n_vocab, gguf_path);
    for (uint32_t i = 0; i < base->n_vocab; i++)
        if (strcmp(base->tokens[i], cl->tokens[i]) != 0)
            return clara_fail(CLARA_ERR_INVALID_ARG,
                              "%s: token %u is '%s' but '%s' in the base GGUF %s: the base is not "
                              "the model this CLaRa checkpoint was trained on",
                              path, i, hftok_quote(cl->tokens[i], q1, sizeof q1),
                              hftok_quote(base->tokens[i], q2, sizeof q2), gguf_path);
    return CLARA_OK;
}

clara_status gguf_base_cross_check(const clara_hf_tokenizer *tok, const char *gguf_path,
                                   const char *clara_dir) {
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/tokenizer.json", clara_dir);
    if (stat(path, &st) != 0) return CLARA_OK; /* optional */
    char *text = NULL;
    size_t len = 0;
    clara_hf_tokenizer cl;
    clara_status s = clara_read_file(path, CLARA_TOK_MAX_JSON_BYTES, &text, &len);
    if (s == CLARA_OK) s = hf_tokenizer_parse_json(text, len, path, &cl);
    free(text);
    if (s != CLARA_OK) {
        CLARA_LOGW("not cross-checking the base vocabulary: %s", clara_last_error());
        clara_clear_error();
        return CLARA_OK;
    }
    s = compare_vocab(tok, &cl, gguf_path, path);
    hf_tokenizer_free(&cl);
    return s;
}
