/* model_pair.c - two-file mode: checks that a base GGUF (llama.cpp layout, from any tool) is the
 * model a CLaRa add-on was converted for — architecture, every shape hyperparameter, RoPE and
 * norm constants, and the base vocabulary as a prefix of the add-on's — and says precisely what
 * differs. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "model.h"

static clara_status compare_uint(const clara_model *m, const char *key, uint64_t base_value) {
    uint64_t v;
    if (gguf_find_key(m->gguf, key) < 0) return CLARA_OK; /* the add-on does not record it */
    clara_status s = gguf_get_uint(m->gguf, key, &v);
    if (s != CLARA_OK) return s;
    if (v != base_value)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "base %s does not match add-on %s: %s is %llu in the base, %llu in the "
                          "add-on",
                          gguf_name(m->base), gguf_name(m->gguf), key,
                          (unsigned long long)base_value, (unsigned long long)v);
    return CLARA_OK;
}

static clara_status compare_f32(const clara_model *m, const char *key, float base_value) {
    float v;
    if (gguf_find_key(m->gguf, key) < 0) return CLARA_OK;
    clara_status s = gguf_get_f32(m->gguf, key, &v);
    if (s != CLARA_OK) return s;
    if (fabsf(v - base_value) > 1e-6f * fabsf(base_value))
        return clara_fail(
            CLARA_ERR_INVALID_ARG,
            "base %s does not match add-on %s: %s is %g in the base, %g in the add-on",
            gguf_name(m->base), gguf_name(m->gguf), key, (double)base_value, (double)v);
    return CLARA_OK;
}

/* The base's tokens must be the first tokens of the add-on's vocabulary (CLaRa appends its own). */
static clara_status compare_vocab(const clara_model *m) {
    const char *key = "tokenizer.ggml.tokens";
    uint64_t nb, na;
    gguf_vtype et;
    clara_status s = gguf_get_arr(m->base, key, &et, &nb);
    if (s == CLARA_OK) s = gguf_get_arr(m->gguf, key, &et, &na);
    if (s != CLARA_OK) return s;
    if (nb > na)
        return clara_fail(
            CLARA_ERR_INVALID_ARG, "base %s has %llu tokens, more than the add-on %s (%llu)",
            gguf_name(m->base), (unsigned long long)nb, gguf_name(m->gguf), (unsigned long long)na);
    uint64_t base_vocab = 0;
    if (gguf_find_key(m->gguf, "clara.base_vocab_size") >= 0 &&
        gguf_get_uint(m->gguf, "clara.base_vocab_size", &base_vocab) == CLARA_OK &&
        base_vocab != nb)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "base %s has %llu tokens but the add-on %s was converted for a base "
                          "vocabulary of %llu",
                          gguf_name(m->base), (unsigned long long)nb, gguf_name(m->gguf),
                          (unsigned long long)base_vocab);
    for (uint64_t i = 0; i < nb; i++) {
        const char *a = gguf_get_arr_str(m->base, key, i), *b = gguf_get_arr_str(m->gguf, key, i);
        if (!a || !b || strcmp(a, b) != 0)
            return clara_fail(CLARA_ERR_INVALID_ARG,
                              "base %s and add-on %s have different vocabularies: token %llu is "
                              "'%.40s' in the base, '%.40s' in the add-on",
                              gguf_name(m->base), gguf_name(m->gguf), (unsigned long long)i,
                              a ? a : "?", b ? b : "?");
    }
    return CLARA_OK;
}

clara_status clara_pair_check(const clara_model *m);
clara_status clara_pair_check(const clara_model *m) {
    const clara_hparams *hp = &m->hp;
    const struct {
        const char *key;
        uint64_t value;
    } u[] = {
        {"llama.embedding_length", hp->n_embd},
        {"llama.block_count", hp->n_layer},
        {"llama.feed_forward_length", hp->n_ff},
        {"llama.attention.head_count", hp->n_head},
        {"llama.attention.head_count_kv", hp->n_head_kv},
        {"llama.rope.dimension_count", hp->head_dim},
    };
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) {
        clara_status s = compare_uint(m, u[i].key, u[i].value);
        if (s != CLARA_OK) return s;
    }
    clara_status s = compare_f32(m, "llama.rope.freq_base", hp->rope_theta);
    if (s == CLARA_OK) s = compare_f32(m, "llama.attention.layer_norm_rms_epsilon", hp->rms_eps);
    if (s == CLARA_OK) s = compare_vocab(m);
    return s;
}
