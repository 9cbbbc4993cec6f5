/* model_meta.c - the CLaRa settings of a model file (clara.* keys, docs/FORMAT.md): memory
 * tokens, special ids, prompts. Every id is checked against the vocabulary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "model.h"

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        clara_status s_ = (expr);                                                                  \
        if (s_ != CLARA_OK) return s_;                                                             \
    } while (0)

static clara_status get_id(const clara_model *m, const char *key, int32_t *out) {
    uint64_t v;
    TRY(gguf_get_uint(m->gguf, key, &v));
    if (v >= m->hp.n_vocab)
        return clara_fail(CLARA_ERR_FORMAT, "%s: '%s' = %llu is not a token id (vocabulary %u)",
                          gguf_name(m->gguf), key, (unsigned long long)v, m->hp.n_vocab);
    *out = (int32_t)v;
    return CLARA_OK;
}

static clara_status get_small(const clara_model *m, const char *key, uint32_t *out) {
    uint64_t v;
    TRY(gguf_get_uint(m->gguf, key, &v));
    if (v == 0 || v > (1u << 16))
        return clara_fail(CLARA_ERR_FORMAT, "%s: '%s' = %llu is out of range", gguf_name(m->gguf),
                          key, (unsigned long long)v);
    *out = (uint32_t)v;
    return CLARA_OK;
}

static clara_status load_mem_ids(clara_model *m) {
    const void *data;
    uint64_t n;
    TRY(gguf_get_arr_data(m->gguf, "clara.mem_token_ids", GGUF_VT_I32, &data, &n));
    if (n != m->meta.n_mem)
        return clara_fail(CLARA_ERR_FORMAT, "%s: clara.mem_token_ids has %llu ids, n_mem is %u",
                          gguf_name(m->gguf), (unsigned long long)n, m->meta.n_mem);
    m->meta.mem_ids = malloc(n * sizeof(int32_t));
    if (!m->meta.mem_ids) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    memcpy(m->meta.mem_ids, data, n * sizeof(int32_t));
    for (uint64_t i = 0; i < n; i++)
        if (m->meta.mem_ids[i] < 0 || (uint32_t)m->meta.mem_ids[i] >= m->hp.n_vocab)
            return clara_fail(CLARA_ERR_FORMAT, "%s: memory token id %d is out of range",
                              gguf_name(m->gguf), m->meta.mem_ids[i]);
    return CLARA_OK;
}

static clara_status load_prompts(clara_model *m) {
    clara_meta *mt = &m->meta;
    TRY(gguf_get_str(m->gguf, "clara.prompt.qa_system", &mt->qa_system));
    TRY(gguf_get_str(m->gguf, "clara.prompt.qa_user", &mt->qa_user));
    TRY(gguf_get_str(m->gguf, "clara.prompt.paraphrase_system", &mt->para_system));
    for (uint64_t i = 0; i < 13; i++) {
        mt->para_templates[i] = gguf_get_arr_str(m->gguf, "clara.prompt.paraphrase_templates", i);
        if (!mt->para_templates[i])
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: clara.prompt.paraphrase_templates needs 13 "
                              "strings",
                              gguf_name(m->gguf));
    }
    if (!strstr(mt->qa_user, "{docs}") || !strstr(mt->qa_user, "{question}"))
        return clara_fail(CLARA_ERR_FORMAT, "%s: clara.prompt.qa_user lacks {docs}/{question}",
                          gguf_name(m->gguf));
    return CLARA_OK;
}

clara_status clara_meta_load(clara_model *m);
clara_status clara_meta_load(clara_model *m) {
    clara_meta *mt = &m->meta;
    const char *stage;
    TRY(get_small(m, "clara.n_mem", &mt->n_mem));
    TRY(get_small(m, "clara.doc_max_length", &mt->doc_max_length));
    TRY(get_small(m, "clara.compr_rate", &mt->compr_rate));
    TRY(get_small(m, "clara.generation_top_k", &mt->generation_top_k));
    TRY(gguf_get_bool(m->gguf, "clara.sep", &mt->sep));
    TRY(gguf_get_bool(m->gguf, "clara.different_mem_tokens", &mt->different_mem_tokens));
    TRY(gguf_get_bool(m->gguf, "clara.pure_inference", &mt->pure_inference));
    TRY(gguf_get_str(m->gguf, "clara.training_stage", &stage));
    snprintf(mt->training_stage, sizeof mt->training_stage, "%s", stage);
    TRY(get_id(m, "clara.enc_token_id", &mt->enc_id));
    TRY(get_id(m, "clara.sep_token_id", &mt->sep_id));
    TRY(get_id(m, "clara.ae_token_id", &mt->ae_id));
    TRY(get_id(m, "clara.pad_token_id", &mt->pad_id));
    TRY(get_id(m, "tokenizer.ggml.bos_token_id", &mt->bos_id));
    TRY(get_id(m, "tokenizer.ggml.eos_token_id", &mt->eos_id));
    TRY(load_mem_ids(m));
    return load_prompts(m);
}
