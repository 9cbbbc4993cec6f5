/* convert.c - `clara convert`: reads the base Mistral repository and a CLaRa subfolder, checks
 * every shape against the configs, plans the output tensors (llama.cpp names, q/k rows permuted
 * to llama.cpp's RoPE layout, CLaRa's resized tables, the LoRA adapters) and streams them into one
 * GGUF file (convert_write.c) with the metadata of convert_meta.c. */
#include "convert/convert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/status.h"
#include "convert/convert_internal.h"
#include "convert/elemconv.h"
#include "convert/gguf_base.h"
#include "convert/gptq_awq.h"
#include "dtype.h"

clara_convert_params clara_convert_default_params(void) {
    clara_convert_params p;
    memset(&p, 0, sizeof p);
    p.type = CLARA_TYPE_F16;
    p.progress = true;
    return p;
}

clara_status conv_add_entry(conv_ctx *c, const conv_entry *e) {
    if (c->n_entries == c->cap_entries) {
        size_t cap = c->cap_entries ? c->cap_entries * 2 : 512;
        conv_entry *n = realloc(c->entries, cap * sizeof *n);
        if (!n) return clara_fail(CLARA_ERR_NOMEM, "out of memory planning tensors");
        c->entries = n;
        c->cap_entries = cap;
    }
    c->entries[c->n_entries++] = *e;
    return CLARA_OK;
}

uint32_t conv_file_type(clara_type t) {
    switch (t) {
    case CLARA_TYPE_F32:
        return 0; /* LLAMA_FTYPE_ALL_F32 */
    case CLARA_TYPE_BF16:
        return 32; /* LLAMA_FTYPE_MOSTLY_BF16 */
    default:
        return 1; /* LLAMA_FTYPE_MOSTLY_F16 */
    }
}

/* Checks a source tensor's element type and 2-D/1-D shape (HF order: [rows, cols]). `type` is
 * the clara_type or -1; `dtype` the file's own spelling of it, for the message. */
static clara_status check_shape(const char *file, const char *name, int type, const char *dtype,
                                uint32_t n_dims, const uint64_t *shape, uint64_t rows,
                                uint64_t cols) {
    if (type < 0 || !clara_elemconv_supported((clara_type)type))
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (need F32/F16/BF16)",
                          file, name, dtype);
    bool ok = rows == 0 ? (n_dims == 1 && shape[0] == cols)
                        : (n_dims == 2 && shape[0] == rows && shape[1] == cols);
    if (ok) return CLARA_OK;
    char got[96], want[64];
    if (n_dims == 1)
        snprintf(got, sizeof got, "shape [%llu]", (unsigned long long)shape[0]);
    else if (n_dims == 2)
        snprintf(got, sizeof got, "shape [%llu, %llu]", (unsigned long long)shape[0],
                 (unsigned long long)shape[1]);
    else
        snprintf(got, sizeof got, "%u dimensions", n_dims);
    if (rows == 0)
        snprintf(want, sizeof want, "[%llu]", (unsigned long long)cols);
    else
        snprintf(want, sizeof want, "[%llu, %llu]", (unsigned long long)rows,
                 (unsigned long long)cols);
    return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s' has %s, expected shape %s", file, name,
                      got, want);
}

/* Plans one base-model tensor from the safetensors shards. rows == 0 means a 1-D tensor. */
static clara_status plan_st(conv_ctx *c, const char *hf_name, const char *gguf_name, uint64_t rows,
                            uint64_t cols, uint32_t permute_heads) {
    const st_tensor *t = st_model_find(c->st, hf_name);
    if (!t)
        return clara_fail(CLARA_ERR_NOT_FOUND, "%s: tensor '%s' is missing from the base model",
                          c->st_source, hf_name);
    clara_status s = check_shape(t->file, hf_name, t->type, st_dtype_name(t->dtype), t->n_dims,
                                 t->shape, rows, cols);
    if (s != CLARA_OK) return s;
    conv_entry e;
    memset(&e, 0, sizeof e);
    snprintf(e.name, sizeof e.name, "%s", gguf_name);
    /* norms stay f32 whatever the requested type (as llama.cpp does): they are tiny and exact */
    e.out_type = rows == 0 ? CLARA_TYPE_F32 : c->p.type;
    e.n_dims = rows == 0 ? 1 : 2;
    e.ne[0] = cols;
    e.ne[1] = rows == 0 ? 1 : rows;
    e.src_type = t->type;
    e.src = t->data;
    e.src_desc = t->name;
    e.permute_heads = permute_heads;
    return conv_add_entry(c, &e);
}

/* Plans a [rows, cols] tensor from a .pth file (the resized tables and the LoRA matrices). */
clara_status conv_plan_pth(conv_ctx *c, const pth_tensor *t, const char *file,
                           const char *gguf_name, uint64_t rows, uint64_t cols,
                           uint32_t permute_heads);
clara_status conv_plan_pth(conv_ctx *c, const pth_tensor *t, const char *file,
                           const char *gguf_name, uint64_t rows, uint64_t cols,
                           uint32_t permute_heads) {
    uint64_t shape[8];
    for (uint32_t i = 0; i < t->n_dims && i < 8; i++) shape[i] = (uint64_t)t->shape[i];
    clara_status s =
        check_shape(file, t->name, t->type, st_dtype_name(t->dtype), t->n_dims, shape, rows, cols);
    if (s != CLARA_OK) return s;
    conv_entry e;
    memset(&e, 0, sizeof e);
    snprintf(e.name, sizeof e.name, "%s", gguf_name);
    e.out_type = c->p.type;
    e.n_dims = 2;
    e.ne[0] = cols;
    e.ne[1] = rows;
    e.src_type = t->type;
    e.src = t->contiguous ? t->data : NULL;
    e.pth = t->contiguous ? NULL : t;
    e.src_desc = t->name;
    e.permute_heads = permute_heads;
    return conv_add_entry(c, &e);
}

static clara_status plan_base(conv_ctx *c) {
    const clara_base_config *b = &c->base;
    uint64_t H = b->hidden_size, F = b->intermediate_size, d = b->head_dim;
    uint64_t q_rows = (uint64_t)b->n_heads * d, kv_rows = (uint64_t)b->n_kv_heads * d;
    char hf[160], gg[96];
    clara_status s;
    for (uint32_t i = 0; i < b->n_layers; i++) {
        const struct {
            const char *hf, *gg;
            uint64_t rows, cols;
            uint32_t permute;
        } t[] = {
            {"input_layernorm", "attn_norm", 0, H, 0},
            {"self_attn.q_proj", "attn_q", q_rows, H, b->n_heads},
            {"self_attn.k_proj", "attn_k", kv_rows, H, b->n_kv_heads},
            {"self_attn.v_proj", "attn_v", kv_rows, H, 0},
            {"self_attn.o_proj", "attn_output", H, q_rows, 0},
            {"post_attention_layernorm", "ffn_norm", 0, H, 0},
            {"mlp.gate_proj", "ffn_gate", F, H, 0},
            {"mlp.up_proj", "ffn_up", F, H, 0},
            {"mlp.down_proj", "ffn_down", H, F, 0},
        };
        for (size_t j = 0; j < sizeof t / sizeof t[0]; j++) {
            snprintf(hf, sizeof hf, "model.layers.%u.%s.weight", i, t[j].hf);
            snprintf(gg, sizeof gg, "blk.%u.%s.weight", i, t[j].gg);
            /* GPTQ/AWQ layers are repacked into blocks by gptq_awq.c */
            if (t[j].rows && gq_is_quantized(c, i, t[j].hf))
                s = gq_plan_linear(c, i, t[j].hf, gg, t[j].rows, t[j].cols, t[j].permute);
            else
                s = plan_st(c, hf, gg, t[j].rows, t[j].cols, t[j].permute);
            if (s != CLARA_OK) return s;
        }
    }
    return plan_st(c, "model.norm.weight", "output_norm.weight", 0, H, 0);
}

/* The base model's own tables are replaced by CLaRa's resized ones (spec §2.5); they are only
 * checked, not written. */
static clara_status check_base_tables(conv_ctx *c) {
    if (c->base_gguf) return gguf_base_check_tables(c->base_gguf, &c->base);
    const char *names[] = {"model.embed_tokens.weight", "lm_head.weight"};
    for (size_t i = 0; i < 2; i++) {
        const st_tensor *t = st_model_find(c->st, names[i]);
        if (!t)
            return clara_fail(CLARA_ERR_NOT_FOUND, "%s: tensor '%s' is missing from the base model",
                              c->st_source, names[i]);
        clara_status s = check_shape(t->file, names[i], t->type, st_dtype_name(t->dtype), t->n_dims,
                                     t->shape, c->base.vocab_size, c->base.hidden_size);
        if (s != CLARA_OK) return s;
    }
    return CLARA_OK;
}

static clara_status plan_tables(conv_ctx *c) {
    uint64_t V = (uint64_t)c->n_base_vocab + c->n_clara_added;
    const char *hf[] = {"model.embed_tokens.weight", "lm_head.weight"};
    const char *gg[] = {"token_embd.weight", "output.weight"};
    for (size_t i = 0; i < 2; i++) {
        const pth_tensor *t = pth_find(c->tables, hf[i]);
        if (!t)
            return clara_fail(CLARA_ERR_NOT_FOUND, "%s: tensor '%s' is missing", c->tables_path,
                              hf[i]);
        if (t->n_dims == 2 && (uint64_t)t->shape[0] != V &&
            (uint64_t)t->shape[1] == c->base.hidden_size)
            return clara_fail(
                CLARA_ERR_FORMAT,
                "%s: '%s' has %llu rows but the vocabulary has %llu tokens (%u base + "
                "%u CLaRa tokens for n_mem %u)",
                c->tables_path, hf[i], (unsigned long long)t->shape[0], (unsigned long long)V,
                c->n_base_vocab, c->n_clara_added, c->cc.n_mem);
        clara_status s = conv_plan_pth(c, t, c->tables_path, gg[i], V, c->base.hidden_size, 0);
        if (s != CLARA_OK) return s;
    }
    return CLARA_OK;
}

/* --base-only: the base model's own tables, as llama.cpp's converter writes them. */
static clara_status plan_base_tables(conv_ctx *c) {
    clara_status s = plan_st(c, "model.embed_tokens.weight", "token_embd.weight",
                             c->base.vocab_size, c->base.hidden_size, 0);
    if (s == CLARA_OK)
        s = plan_st(c, "lm_head.weight", "output.weight", c->base.vocab_size, c->base.hidden_size,
                    0);
    return s;
}

/* --addon-only takes the base settings and vocabulary from a base GGUF as well (gguf_base.c):
 * an add-on needs no base weights. The other modes write base weights, read from safetensors. */
static clara_status open_base_gguf(conv_ctx *c) {
    if (c->p.mode != CLARA_CONVERT_ADDON)
        return clara_fail(
            CLARA_ERR_INVALID_ARG,
            "--base %s is a GGUF file: only --addon-only can take a base GGUF (a full "
            "or --base-only conversion reads the Hugging Face base directory)",
            c->p.base_dir);
    clara_status s = gguf_open(c->p.base_dir, &c->base_gguf);
    if (s == CLARA_OK) s = gguf_base_read(c->base_gguf, &c->base, &c->tok);
    if (s == CLARA_OK) c->n_base_vocab = c->tok.n_vocab;
    return s;
}

static clara_status open_base(conv_ctx *c) {
    clara_status s;
    if (gguf_base_is_gguf(c->p.base_dir)) return open_base_gguf(c);
    struct stat st;
    if (stat(c->p.base_dir, &st) == 0 && S_ISREG(st.st_mode))
        return clara_fail(CLARA_ERR_FORMAT,
                          "--base %s is a file but not a GGUF file (no \"GGUF\" magic): --base "
                          "takes the Hugging Face base directory, or with --addon-only a base GGUF",
                          c->p.base_dir);
    if ((s = clara_base_config_load(c->p.base_dir, &c->base)) != CLARA_OK) return s;
    if ((s = hf_tokenizer_load_dir(c->p.base_dir, &c->tok)) != CLARA_OK) return s;
    c->n_base_vocab = c->tok.n_vocab;
    if (c->n_base_vocab != c->base.vocab_size)
        CLARA_LOGW("%s: tokenizer has %u tokens but config.json says vocab_size %u", c->p.base_dir,
                   c->n_base_vocab, c->base.vocab_size);
    if ((s = st_model_open(c->p.base_dir, &c->st)) != CLARA_OK) return s;
    /* a tensor absent from the base model is reported against the file that lists the tensors */
    snprintf(c->st_source, sizeof c->st_source, "%s/model.safetensors.index.json", c->p.base_dir);
    if (access(c->st_source, F_OK) != 0)
        snprintf(c->st_source, sizeof c->st_source, "%s/model.safetensors", c->p.base_dir);
    return CLARA_OK;
}

/* The base model's inputs, then (unless --base-only) the CLaRa subfolder's. */
static clara_status open_inputs(conv_ctx *c) {
    clara_status s;
    if ((s = open_base(c)) != CLARA_OK || c->p.mode == CLARA_CONVERT_BASE) return s;
    if ((s = clara_clara_config_load(c->p.clara_dir, &c->cc)) != CLARA_OK) return s;
    if (c->base_gguf &&
        (s = gguf_base_cross_check(&c->tok, c->p.base_dir, c->p.clara_dir)) != CLARA_OK)
        return s;
    if (!c->cc.lora)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s/config.json: lora=false is not supported",
                          c->p.clara_dir);
    c->n_clara_added = c->cc.different_mem_tokens ? c->cc.n_mem + 3 : 4;
    snprintf(c->tables_path, sizeof c->tables_path, "%s/decoder_first_last_layers.pth",
             c->p.clara_dir);
    snprintf(c->adapters_path, sizeof c->adapters_path, "%s/adapters.pth", c->p.clara_dir);
    if ((s = pth_open(c->tables_path, &c->tables)) != CLARA_OK) return s;
    return pth_open(c->adapters_path, &c->adapters);
}

const char *conv_printable(const char *s, char *buf, size_t cap) {
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && n + 5 < cap; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            buf[n++] = '\\';
            buf[n++] = 'x';
            buf[n++] = hex[*p >> 4];
            buf[n++] = hex[*p & 15];
        } else {
            buf[n++] = (char)*p;
        }
    }
    buf[n] = '\0';
    return buf;
}

/* Messages quote names taken from the files (tensor names, dtype strings, dict keys); a control
 * character in one must not split the one-line error the CLI prints, so they are escaped here,
 * at the single exit every reader's error passes through. */
static clara_status one_line(clara_status s) {
    char msg[1024], esc[1024];
    snprintf(msg, sizeof msg, "%s", clara_last_error());
    for (const char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return clara_fail(s, "%s", conv_printable(msg, esc, sizeof esc));
    return s;
}

static void conv_free(conv_ctx *c) {
    if (c->w) gguf_writer_free(c->w);
    if (c->adapters) pth_free(c->adapters);
    if (c->tables) pth_free(c->tables);
    if (c->st) st_model_free(c->st);
    if (c->base_gguf) gguf_free(c->base_gguf);
    hf_tokenizer_free(&c->tok);
    gq_free(c->gq);
    free(c->entries);
}

/* The tensors of each mode (docs/FORMAT.md). */
static clara_status plan(conv_ctx *c) {
    clara_status s = CLARA_OK;
    if (c->p.mode == CLARA_CONVERT_BASE) {
        s = plan_base_tables(c);
        return s == CLARA_OK ? plan_base(c) : s;
    }
    s = check_base_tables(c);
    if (s == CLARA_OK) s = plan_tables(c);
    if (s == CLARA_OK && c->p.mode == CLARA_CONVERT_FULL) s = plan_base(c);
    if (s == CLARA_OK) s = conv_plan_adapters(c);
    return s;
}

clara_status clara_convert(const clara_convert_params *p) {
    if (!p->base_dir || !p->out_path || (!p->clara_dir && p->mode != CLARA_CONVERT_BASE))
        return clara_fail(CLARA_ERR_INVALID_ARG, "convert needs --base, --clara and --out");
    if (p->type != CLARA_TYPE_F32 && p->type != CLARA_TYPE_F16 && p->type != CLARA_TYPE_BF16)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "convert: type %s is not supported (f32, f16, bf16)",
                          clara_type_name(p->type));
    conv_ctx *c = calloc(1, sizeof *c);
    if (!c) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    c->p = *p;
    clara_status s = open_inputs(c);
    if (s == CLARA_OK) s = plan(c);
    if (s == CLARA_OK) s = conv_write_metadata(c);
    if (s == CLARA_OK) s = gq_write_metadata(c);
    if (s == CLARA_OK) s = conv_write_tensors(c);
    conv_free(c);
    free(c);
    return s == CLARA_OK ? s : one_line(s);
}
