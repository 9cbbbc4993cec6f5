/* hf_config.c - reading config.json of the base model and of a CLaRa subfolder with cJSON. Every
 * value is type- and range-checked; a missing required key or a wrong type is an error naming the
 * file and the key. */
#include "convert/hf_config.h"

#include <cJSON.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "base/mapfile.h"
#include "base/status.h"

#define CONFIG_MAX_BYTES (16u << 20)

/* Reads an integer key in [lo, hi]. A missing key is an error when `required`, else *out keeps
 * its default. */
static clara_status get_u32(const cJSON *root, const char *name, const char *key, bool required,
                            uint32_t lo, uint32_t hi, uint32_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (!required) return CLARA_OK;
        return clara_fail(CLARA_ERR_FORMAT, "%s: missing key '%s'", name, key);
    }
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != floor(d) || d < lo || d > hi)
        return clara_fail(CLARA_ERR_FORMAT, "%s: '%s' must be an integer in [%u, %u]", name, key,
                          lo, hi);
    *out = (uint32_t)d;
    return CLARA_OK;
}

static clara_status get_f32(const cJSON *root, const char *name, const char *key, bool required,
                            float *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (!required) return CLARA_OK;
        return clara_fail(CLARA_ERR_FORMAT, "%s: missing key '%s'", name, key);
    }
    /* checked as the float it becomes: 1e-50 would be 0, 1e39 infinite */
    float f = cJSON_IsNumber(v) ? (float)v->valuedouble : 0.0f;
    if (!isfinite(f) || f <= 0)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: '%s' must be a positive number within float range (%g to %g)", name,
                          key, (double)FLT_TRUE_MIN, (double)FLT_MAX);
    *out = f;
    return CLARA_OK;
}

static clara_status get_bool(const cJSON *root, const char *name, const char *key, bool required,
                             bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (!required) return CLARA_OK;
        return clara_fail(CLARA_ERR_FORMAT, "%s: missing key '%s'", name, key);
    }
    if (!cJSON_IsBool(v))
        return clara_fail(CLARA_ERR_FORMAT, "%s: '%s' must be true or false", name, key);
    *out = cJSON_IsTrue(v);
    return CLARA_OK;
}

static clara_status get_str(const cJSON *root, const char *name, const char *key, bool required,
                            char *out, size_t cap) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (!required) return CLARA_OK;
        return clara_fail(CLARA_ERR_FORMAT, "%s: missing key '%s'", name, key);
    }
    if (!cJSON_IsString(v))
        return clara_fail(CLARA_ERR_FORMAT, "%s: '%s' must be a string", name, key);
    if (strlen(v->valuestring) >= cap)
        return clara_fail(CLARA_ERR_FORMAT, "%s: '%s' is longer than %zu bytes", name, key,
                          cap - 1);
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return CLARA_OK;
}

static clara_status parse_root(const char *text, size_t len, const char *name, cJSON **root) {
    *root = cJSON_ParseWithLength(text, len);
    if (!*root) return clara_fail(CLARA_ERR_FORMAT, "%s: not valid JSON", name);
    if (!cJSON_IsObject(*root)) {
        cJSON_Delete(*root);
        return clara_fail(CLARA_ERR_FORMAT, "%s: top level is not a JSON object", name);
    }
    return CLARA_OK;
}

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        clara_status s_ = (expr);                                                                  \
        if (s_ != CLARA_OK) {                                                                      \
            cJSON_Delete(root);                                                                    \
            return s_;                                                                             \
        }                                                                                          \
    } while (0)

/* quantization_config (transformers' GPTQConfig / AwqConfig as saved into config.json by
 * AutoGPTQ, GPTQModel and AutoAWQ). Only its shape is checked here; gptq_awq.c checks the values
 * against the tensors and says which combinations are supported. */
static clara_status parse_quant(const cJSON *root, const char *name, clara_quant_config *q) {
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (!qc || cJSON_IsNull(qc)) return CLARA_OK;
    if (!cJSON_IsObject(qc))
        return clara_fail(CLARA_ERR_FORMAT, "%s: 'quantization_config' must be an object", name);
    char qname[4200];
    snprintf(qname, sizeof qname, "%s: quantization_config", name);
    clara_status s = get_str(qc, qname, "quant_method", true, q->method, sizeof q->method);
    if (s != CLARA_OK) return s;
    if (strcmp(q->method, "gptq") != 0 && strcmp(q->method, "awq") != 0)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: quant_method '%s' is not supported (gptq or awq)", qname, q->method);
    bool awq = strcmp(q->method, "awq") == 0;
    q->sym = true;
    q->zero_point = true;
    snprintf(q->format, sizeof q->format, "%s", awq ? "gemm" : "gptq");
    /* AutoAWQ's own quant_config.json spells bits/group_size w_bit/q_group_size */
    const char *kb = awq && !cJSON_GetObjectItemCaseSensitive(qc, "bits") ? "w_bit" : "bits";
    const char *kg =
        awq && !cJSON_GetObjectItemCaseSensitive(qc, "group_size") ? "q_group_size" : "group_size";
    if ((s = get_u32(qc, qname, kb, true, 1, 64, &q->bits)) != CLARA_OK) return s;
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(qc, kg);
    double gd = g && cJSON_IsNumber(g) ? g->valuedouble : 0;
    if (!g || !cJSON_IsNumber(g) || gd != floor(gd) || (gd != -1 && (gd < 1 || gd > (1u << 24))))
        return clara_fail(CLARA_ERR_FORMAT, "%s: '%s' must be -1 or an integer in [1, %u]", qname,
                          kg, 1u << 24);
    q->group_size = (int32_t)gd;
    if ((s = get_bool(qc, qname, "desc_act", false, &q->desc_act)) != CLARA_OK) return s;
    if ((s = get_bool(qc, qname, "sym", false, &q->sym)) != CLARA_OK) return s;
    if ((s = get_bool(qc, qname, "zero_point", false, &q->zero_point)) != CLARA_OK) return s;
    /* GPTQ: checkpoint_format (newer GPTQModel also writes "format"); AWQ: version */
    const char *kf = awq ? "version"
                     : cJSON_GetObjectItemCaseSensitive(qc, "checkpoint_format")
                         ? "checkpoint_format"
                         : "format";
    if ((s = get_str(qc, qname, kf, false, q->format, sizeof q->format)) != CLARA_OK) return s;
    if ((s = get_str(qc, qname, "pack_dtype", false, q->pack_dtype, sizeof q->pack_dtype)) !=
        CLARA_OK)
        return s;
    bool marlin = false; /* older AutoGPTQ flags Marlin-repacked tensors this way */
    if ((s = get_bool(qc, qname, "is_marlin_format", false, &marlin)) != CLARA_OK) return s;
    if (marlin) snprintf(q->format, sizeof q->format, "marlin");
    const cJSON *dyn = cJSON_GetObjectItemCaseSensitive(qc, "dynamic");
    q->has_dynamic = dyn && cJSON_IsObject(dyn) && dyn->child != NULL;
    return CLARA_OK;
}

static clara_status check_base(const clara_base_config *c, const char *name) {
    if (strcmp(c->model_type, "mistral") != 0 && strcmp(c->model_type, "llama") != 0)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: model_type '%s' is not supported (expected mistral or llama)", name,
                          c->model_type);
    if (c->n_heads % c->n_kv_heads != 0)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: num_attention_heads %u is not a multiple of num_key_value_heads %u",
                          name, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0)
        return clara_fail(CLARA_ERR_FORMAT, "%s: head dimension %u is odd (RoPE needs pairs)", name,
                          c->head_dim);
    if (c->tie_word_embeddings)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: tie_word_embeddings=true is not supported",
                          name);
    return CLARA_OK;
}

clara_status clara_base_config_parse(const char *text, size_t len, const char *name,
                                     clara_base_config *c) {
    cJSON *root;
    clara_status s = parse_root(text, len, name, &root);
    if (s != CLARA_OK) return s;
    memset(c, 0, sizeof *c);
    c->bos_token_id = c->eos_token_id = -1;
    c->rms_norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->max_position_embeddings = 4096;
    TRY(get_str(root, name, "model_type", true, c->model_type, sizeof c->model_type));
    TRY(get_u32(root, name, "hidden_size", true, 1, 1u << 16, &c->hidden_size));
    TRY(get_u32(root, name, "intermediate_size", true, 1, 1u << 20, &c->intermediate_size));
    TRY(get_u32(root, name, "num_hidden_layers", true, 1, 1024, &c->n_layers));
    TRY(get_u32(root, name, "num_attention_heads", true, 1, 1024, &c->n_heads));
    c->n_kv_heads = c->n_heads;
    TRY(get_u32(root, name, "num_key_value_heads", false, 1, 1024, &c->n_kv_heads));
    TRY(get_u32(root, name, "head_dim", false, 2, 1u << 12, &c->head_dim));
    if (c->head_dim == 0) { /* absent: hidden_size / heads, which must divide evenly */
        if (c->hidden_size % c->n_heads != 0) {
            cJSON_Delete(root);
            return clara_fail(CLARA_ERR_FORMAT, "%s: hidden_size %u is not a multiple of %u heads",
                              name, c->hidden_size, c->n_heads);
        }
        c->head_dim = c->hidden_size / c->n_heads;
    }
    TRY(get_u32(root, name, "vocab_size", true, 1, 1u << 24, &c->vocab_size));
    TRY(get_u32(root, name, "max_position_embeddings", false, 1, 1u << 24,
                &c->max_position_embeddings));
    uint32_t u = 0;
    /* absent or null: -1 */
    const cJSON *bos = cJSON_GetObjectItemCaseSensitive(root, "bos_token_id");
    if (bos && !cJSON_IsNull(bos)) {
        TRY(get_u32(root, name, "bos_token_id", false, 0, 1u << 24, &u));
        c->bos_token_id = (int32_t)u;
    }
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (eos && !cJSON_IsNull(eos)) {
        TRY(get_u32(root, name, "eos_token_id", false, 0, 1u << 24, &u));
        c->eos_token_id = (int32_t)u;
    }
    TRY(get_f32(root, name, "rms_norm_eps", false, &c->rms_norm_eps));
    TRY(get_f32(root, name, "rope_theta", false, &c->rope_theta));
    TRY(get_bool(root, name, "tie_word_embeddings", false, &c->tie_word_embeddings));
    uint32_t sw = 0;
    TRY(get_u32(root, name, "sliding_window", false, 0, 1u << 30, &sw));
    c->sliding_window = sw;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) {
        cJSON_Delete(root);
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: rope_scaling is not supported", name);
    }
    TRY(parse_quant(root, name, &c->quant));
    cJSON_Delete(root);
    return check_base(c, name);
}

clara_status clara_clara_config_parse(const char *text, size_t len, const char *name,
                                      clara_clara_config *c) {
    cJSON *root;
    clara_status s = parse_root(text, len, name, &root);
    if (s != CLARA_OK) return s;
    memset(c, 0, sizeof *c);
    c->generation_top_k = 5;
    c->max_new_tokens = 128;
    c->lora = true;
    snprintf(c->quantization, sizeof c->quantization, "no");
    TRY(get_u32(root, name, "compr_rate", true, 1, 1u << 16, &c->compr_rate));
    TRY(get_u32(root, name, "doc_max_length", true, 1, 1u << 16, &c->doc_max_length));
    TRY(get_bool(root, name, "sep", true, &c->sep));
    TRY(get_bool(root, name, "different_mem_tokens", true, &c->different_mem_tokens));
    TRY(get_u32(root, name, "generation_top_k", false, 1, 4096, &c->generation_top_k));
    TRY(get_u32(root, name, "max_new_tokens", false, 0, 1u << 20, &c->max_new_tokens));
    TRY(get_bool(root, name, "lora", false, &c->lora));
    TRY(get_u32(root, name, "lora_r", c->lora, 1, 4096, &c->lora_r));
    TRY(get_bool(root, name, "pure_inference", false, &c->pure_inference));
    TRY(get_str(root, name, "training_stage", true, c->training_stage, sizeof c->training_stage));
    TRY(get_str(root, name, "decoder_model_name", false, c->decoder_model_name,
                sizeof c->decoder_model_name));
    TRY(get_str(root, name, "quantization", false, c->quantization, sizeof c->quantization));
    const cJSON *cm = cJSON_GetObjectItemCaseSensitive(root, "compr_model_name");
    if (cm && !cJSON_IsNull(cm)) {
        cJSON_Delete(root);
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: a separate compressor model (compr_model_name) is not supported",
                          name);
    }
    cJSON_Delete(root);
    /* spec §2.3: n_mem = doc_max_length // compr_rate */
    c->n_mem = c->doc_max_length / c->compr_rate;
    if (c->n_mem == 0)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: doc_max_length %u / compr_rate %u gives no memory tokens", name,
                          c->doc_max_length, c->compr_rate);
    if (strcmp(c->quantization, "no") != 0)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: quantization '%s' is not supported", name,
                          c->quantization);
    return CLARA_OK;
}

static clara_status load_json(const char *dir, char *path, size_t cap, char **text, size_t *len) {
    snprintf(path, cap, "%s/config.json", dir);
    return clara_read_file(path, CONFIG_MAX_BYTES, text, len);
}

clara_status clara_base_config_load(const char *dir, clara_base_config *out) {
    char path[4096], *text;
    size_t len;
    clara_status s = load_json(dir, path, sizeof path, &text, &len);
    if (s != CLARA_OK) return s;
    s = clara_base_config_parse(text, len, path, out);
    free(text);
    return s;
}

clara_status clara_clara_config_load(const char *dir, clara_clara_config *out) {
    char path[4096], *text;
    size_t len;
    clara_status s = load_json(dir, path, sizeof path, &text, &len);
    if (s != CLARA_OK) return s;
    s = clara_clara_config_parse(text, len, path, out);
    free(text);
    return s;
}
