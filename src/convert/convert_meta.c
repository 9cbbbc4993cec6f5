/* convert_meta.c - the GGUF metadata of a converted model: llama.cpp's keys for the base
 * transformer and tokenizer (so GGUF tools read it), and CLaRa's settings under `clara.`
 * (docs/FORMAT.md). */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "convert/convert_internal.h"
#include "prompts.h"

#define CLARA_FORMAT_VERSION 1
#define TOKEN_TYPE_CONTROL   3

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        clara_status s_ = (expr);                                                                  \
        if (s_ != CLARA_OK) return s_;                                                             \
    } while (0)

static clara_status write_general(conv_ctx *c) {
    gguf_writer *w = c->w;
    char name[512], dir[4096], parent[4096];
    const char *src = c->p.mode == CLARA_CONVERT_BASE ? c->p.base_dir : c->p.clara_dir;
    snprintf(dir, sizeof dir, "%s", src);
    snprintf(parent, sizeof parent, "%s", src);
    if (c->p.mode == CLARA_CONVERT_BASE)
        snprintf(name, sizeof name, "%s", basename(dir));
    else
        snprintf(name, sizeof name, "CLaRa %s/%s%s", basename(dirname(parent)), basename(dir),
                 c->p.mode == CLARA_CONVERT_ADDON ? " (add-on)" : "");
    TRY(gguf_writer_set_str(w, "general.architecture", "llama"));
    TRY(gguf_writer_set_str(w, "general.name", name));
    TRY(gguf_writer_set_u32(w, "general.file_type", conv_file_type(c->p.type)));
    return CLARA_OK;
}

static clara_status write_llama(conv_ctx *c) {
    gguf_writer *w = c->w;
    const clara_base_config *b = &c->base;
    TRY(gguf_writer_set_u32(w, "llama.context_length", b->max_position_embeddings));
    TRY(gguf_writer_set_u32(w, "llama.embedding_length", b->hidden_size));
    TRY(gguf_writer_set_u32(w, "llama.block_count", b->n_layers));
    TRY(gguf_writer_set_u32(w, "llama.feed_forward_length", b->intermediate_size));
    TRY(gguf_writer_set_u32(w, "llama.attention.head_count", b->n_heads));
    TRY(gguf_writer_set_u32(w, "llama.attention.head_count_kv", b->n_kv_heads));
    TRY(gguf_writer_set_f32(w, "llama.rope.freq_base", b->rope_theta));
    TRY(gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", b->rms_norm_eps));
    TRY(gguf_writer_set_u32(w, "llama.rope.dimension_count", b->head_dim));
    if (b->head_dim * b->n_heads != b->hidden_size) {
        TRY(gguf_writer_set_u32(w, "llama.attention.key_length", b->head_dim));
        TRY(gguf_writer_set_u32(w, "llama.attention.value_length", b->head_dim));
    }
    TRY(gguf_writer_set_u32(w, "llama.vocab_size", c->n_base_vocab + c->n_clara_added));
    return CLARA_OK;
}

/* CLaRa's added tokens (spec §3.1): <MEM0>..<MEM{n-1}>, <AE>, <ENC>, <SEP>, or with
 * different_mem_tokens=false the four strings <MEM>, <AE>, <ENC>, <SEP>. */
static void clara_token_text(const conv_ctx *c, uint32_t i, char *buf, size_t cap) {
    uint32_t n_mem_tokens = c->cc.different_mem_tokens ? c->cc.n_mem : 1;
    if (i < n_mem_tokens && c->cc.different_mem_tokens)
        snprintf(buf, cap, "<MEM%u>", i);
    else if (i < n_mem_tokens)
        snprintf(buf, cap, "<MEM>");
    else
        snprintf(buf, cap, "%s", (const char *[]){"<AE>", "<ENC>", "<SEP>"}[i - n_mem_tokens]);
}

static clara_status check_no_collision(const conv_ctx *c, const char *text) {
    for (uint32_t i = 0; i < c->tok.n_vocab; i++)
        if (strcmp(c->tok.tokens[i], text) == 0)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: the base tokenizer already has a token '%s' (id %u); CLaRa's "
                              "added tokens must be new",
                              c->p.base_dir, text, i);
    return CLARA_OK;
}

static clara_status write_vocab_arrays(conv_ctx *c) {
    uint32_t V = c->n_base_vocab + c->n_clara_added;
    const char **tokens = calloc(V, sizeof *tokens);
    float *scores = calloc(V, sizeof *scores);
    int32_t *types = calloc(V, sizeof *types);
    char(*extra)[32] = calloc(c->n_clara_added, sizeof *extra);
    clara_status s = CLARA_OK;
    if (!tokens || !scores || !types || !extra) s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    for (uint32_t i = 0; s == CLARA_OK && i < V; i++) {
        if (i < c->n_base_vocab) {
            tokens[i] = c->tok.tokens[i];
            scores[i] = c->tok.scores[i];
            types[i] = c->tok.token_types[i];
            continue;
        }
        clara_token_text(c, i - c->n_base_vocab, extra[i - c->n_base_vocab], sizeof extra[0]);
        tokens[i] = extra[i - c->n_base_vocab];
        types[i] = TOKEN_TYPE_CONTROL;
        s = check_no_collision(c, tokens[i]);
    }
    if (s == CLARA_OK) s = gguf_writer_set_arr_str(c->w, "tokenizer.ggml.tokens", tokens, V);
    if (s == CLARA_OK)
        s = gguf_writer_set_arr(c->w, "tokenizer.ggml.scores", GGUF_VT_F32, scores, V);
    if (s == CLARA_OK)
        s = gguf_writer_set_arr(c->w, "tokenizer.ggml.token_type", GGUF_VT_I32, types, V);
    free(tokens);
    free(scores);
    free(types);
    free(extra);
    return s;
}

/* Every added token of the final vocabulary (the base tokenizer's and CLaRa's), with flags, so
 * the engine splits them out of text first (spec §3.2 step 1). */
static clara_status write_added_tokens(conv_ctx *c) {
    size_t n = c->tok.n_added + c->n_clara_added;
    int32_t *ids = calloc(n, sizeof *ids);
    uint8_t *flags = calloc(n, 1);
    if (!ids || !flags) {
        free(ids);
        free(flags);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < c->tok.n_added; i++) {
        const clara_added_token *a = &c->tok.added[i];
        ids[i] = (int32_t)a->id;
        flags[i] = (uint8_t)((a->special ? 1 : 0) | (a->lstrip ? 2 : 0) | (a->rstrip ? 4 : 0) |
                             (a->normalized ? 8 : 0) | (a->single_word ? 16 : 0));
    }
    for (uint32_t i = 0; i < c->n_clara_added; i++) {
        ids[c->tok.n_added + i] = (int32_t)(c->n_base_vocab + i);
        flags[c->tok.n_added + i] = 1; /* special, not normalized, no strip (spec §3.1) */
    }
    clara_status s =
        gguf_writer_set_arr(c->w, "clara.tokenizer.added_token_ids", GGUF_VT_I32, ids, n);
    if (s == CLARA_OK)
        s = gguf_writer_set_arr(c->w, "clara.tokenizer.added_token_flags", GGUF_VT_U8, flags, n);
    free(ids);
    free(flags);
    return s;
}

static clara_status write_tokenizer(conv_ctx *c) {
    gguf_writer *w = c->w;
    const clara_hf_tokenizer *t = &c->tok;
    TRY(gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"));
    TRY(write_vocab_arrays(c));
    if (t->n_merges)
        TRY(gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)t->merges,
                                    t->n_merges));
    int32_t bos = t->bos_id >= 0 ? t->bos_id : c->base.bos_token_id;
    int32_t eos = t->eos_id >= 0 ? t->eos_id : c->base.eos_token_id;
    if (bos < 0 || eos < 0)
        return clara_fail(CLARA_ERR_FORMAT, "%s: the tokenizer defines no <s>/</s> ids",
                          c->p.base_dir);
    TRY(gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos));
    TRY(gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos));
    if (t->unk_id >= 0)
        TRY(gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)t->unk_id));
    /* CLaRa pads with <s> (spec §3.1), whatever the base tokenizer says */
    TRY(gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)bos));
    TRY(gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos));
    TRY(gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", t->add_eos));
    TRY(gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix",
                             t->prepend_scheme != CLARA_PREPEND_NEVER));
    if (t->chat_template) TRY(gguf_writer_set_str(w, "tokenizer.chat_template", t->chat_template));
    if (c->p.mode == CLARA_CONVERT_BASE) return CLARA_OK; /* llama.cpp's keys only */
    static const char *const schemes[] = {"never", "first", "always"};
    TRY(gguf_writer_set_str(w, "clara.tokenizer.normalizer",
                            t->norm == CLARA_NORM_LEGACY ? "legacy" : "metaspace"));
    TRY(gguf_writer_set_str(
        w, "clara.tokenizer.prepend_scheme",
        schemes[t->prepend_scheme >= 0 && t->prepend_scheme < 3 ? t->prepend_scheme : 2]));
    TRY(gguf_writer_set_bool(w, "clara.tokenizer.metaspace_split", t->metaspace_split));
    TRY(gguf_writer_set_bool(w, "clara.tokenizer.byte_fallback", t->byte_fallback));
    TRY(gguf_writer_set_bool(w, "clara.tokenizer.fuse_unk", t->fuse_unk));
    TRY(gguf_writer_set_bool(w, "clara.tokenizer.ignore_merges", t->ignore_merges));
    TRY(gguf_writer_set_str(w, "clara.tokenizer.source", t->source ? t->source : ""));
    return write_added_tokens(c);
}

static clara_status write_clara_tokens(conv_ctx *c) {
    gguf_writer *w = c->w;
    const clara_clara_config *cc = &c->cc;
    uint32_t base = c->n_base_vocab, n_mem_tokens = cc->different_mem_tokens ? cc->n_mem : 1;
    int32_t *mem = calloc(cc->n_mem, sizeof *mem);
    if (!mem) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    for (uint32_t i = 0; i < cc->n_mem; i++)
        mem[i] = (int32_t)(base + (cc->different_mem_tokens ? i : 0));
    clara_status s = gguf_writer_set_arr(w, "clara.mem_token_ids", GGUF_VT_I32, mem, cc->n_mem);
    free(mem);
    TRY(s);
    TRY(gguf_writer_set_u32(w, "clara.ae_token_id", base + n_mem_tokens));
    TRY(gguf_writer_set_u32(w, "clara.enc_token_id", base + n_mem_tokens + 1));
    TRY(gguf_writer_set_u32(w, "clara.sep_token_id", base + n_mem_tokens + 2));
    return CLARA_OK;
}

static clara_status write_adapters(conv_ctx *c) {
    const char *names[CONV_MAX_ADAPTERS];
    for (size_t i = 0; i < c->n_adapters; i++) {
        names[i] = c->adapter[i].name;
        char key[128];
        snprintf(key, sizeof key, "clara.adapter.%s.rank", c->adapter[i].name);
        TRY(gguf_writer_set_u32(c->w, key, c->adapter[i].rank));
        /* spec §2.4: lora_alpha = 2 * lora_r, so the scale alpha / r is 2 */
        snprintf(key, sizeof key, "clara.adapter.%s.alpha", c->adapter[i].name);
        TRY(gguf_writer_set_f32(c->w, key, 2.0f * (float)c->cc.lora_r));
    }
    return gguf_writer_set_arr_str(c->w, "clara.adapters", names, c->n_adapters);
}

static clara_status write_prompts(conv_ctx *c) {
    gguf_writer *w = c->w;
    TRY(gguf_writer_set_str(w, "clara.prompt.qa_system", CLARA_PROMPT_QA_SYSTEM));
    TRY(gguf_writer_set_str(w, "clara.prompt.qa_user", CLARA_PROMPT_QA_USER));
    TRY(gguf_writer_set_str(w, "clara.prompt.paraphrase_system", CLARA_PROMPT_PARAPHRASE_SYSTEM));
    return gguf_writer_set_arr_str(w, "clara.prompt.paraphrase_templates",
                                   clara_paraphrase_templates, CLARA_N_PARAPHRASE_TEMPLATES);
}

static clara_status write_clara(conv_ctx *c) {
    gguf_writer *w = c->w;
    const clara_clara_config *cc = &c->cc;
    TRY(gguf_writer_set_u32(w, "clara.format_version", CLARA_FORMAT_VERSION));
    TRY(gguf_writer_set_u32(w, "clara.compr_rate", cc->compr_rate));
    TRY(gguf_writer_set_u32(w, "clara.doc_max_length", cc->doc_max_length));
    TRY(gguf_writer_set_u32(w, "clara.n_mem", cc->n_mem));
    TRY(gguf_writer_set_bool(w, "clara.sep", cc->sep));
    TRY(gguf_writer_set_bool(w, "clara.different_mem_tokens", cc->different_mem_tokens));
    TRY(gguf_writer_set_u32(w, "clara.generation_top_k", cc->generation_top_k));
    TRY(gguf_writer_set_u32(w, "clara.max_new_tokens", cc->max_new_tokens));
    TRY(gguf_writer_set_str(w, "clara.training_stage", cc->training_stage));
    TRY(gguf_writer_set_bool(w, "clara.pure_inference", cc->pure_inference));
    TRY(gguf_writer_set_u32(w, "clara.lora_r", cc->lora_r));
    TRY(gguf_writer_set_str(w, "clara.decoder_model_name", cc->decoder_model_name));
    TRY(gguf_writer_set_u32(w, "clara.base_vocab_size", c->n_base_vocab));
    TRY(gguf_writer_set_u32(w, "clara.pad_token_id",
                            (uint32_t)(c->tok.bos_id >= 0 ? c->tok.bos_id : 1)));
    TRY(write_clara_tokens(c));
    TRY(write_adapters(c));
    return write_prompts(c);
}

clara_status conv_write_metadata(conv_ctx *c) {
    c->w = gguf_writer_new();
    if (!c->w) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    TRY(write_general(c));
    TRY(write_llama(c));
    TRY(write_tokenizer(c));
    if (c->p.mode == CLARA_CONVERT_BASE) return CLARA_OK;
    /* an add-on holds no base blocks: the loader needs --base beside it (two-file mode) */
    if (c->p.mode == CLARA_CONVERT_ADDON) TRY(gguf_writer_set_bool(c->w, "clara.addon", true));
    return write_clara(c);
}
