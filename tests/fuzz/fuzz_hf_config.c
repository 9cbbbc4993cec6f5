/* fuzz_hf_config.c - libFuzzer target for the config.json readers (convert/hf_config.c): the base
 * model's and the CLaRa subfolder's, both run on every input (a config.json comes from a Hub
 * repository that `clara pull` downloads). Checked, against cJSON's reading of the same text:
 *   - an accepted base config holds exactly the JSON's values (or the documented defaults when a
 *     key is absent or null), every one within its documented range, the head layout consistent
 *     (heads a multiple of KV heads, an even head dimension, hidden_size = heads * head_dim when
 *     head_dim is derived), and rms_norm_eps and rope_theta finite and positive as the floats the
 *     model uses; a quantization_config, when present, gives gptq or awq with bits in [1, 64] and
 *     a group size of -1 or in [1, 2^24];
 *   - an accepted CLaRa config holds the JSON's values, n_mem = doc_max_length / compr_rate > 0,
 *     and lora_r >= 1 when lora is on;
 *   - strings are NUL-terminated within their fields, and a rejected text leaves an error. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "base/status.h"
#include "convert/hf_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

static const cJSON *item(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNull(v) ? NULL : v;
}

/* An integer field: the JSON's value, or def when absent. */
static void same_u32(const cJSON *o, const char *key, uint32_t got, uint32_t def, uint32_t lo,
                     uint32_t hi) {
    const cJSON *v = item(o, key);
    CHECK(got >= lo && got <= hi);
    if (!v) {
        CHECK(got == def);
        return;
    }
    CHECK(cJSON_IsNumber(v) && v->valuedouble == (double)got);
}

static void same_bool(const cJSON *o, const char *key, bool got, bool def) {
    const cJSON *v = item(o, key);
    CHECK(v ? cJSON_IsBool(v) && cJSON_IsTrue(v) == got : got == def);
}

static void same_str(const cJSON *o, const char *key, const char *got, size_t cap,
                     const char *def) {
    CHECK(memchr(got, '\0', cap) != NULL);
    const cJSON *v = item(o, key);
    CHECK(strcmp(got, v ? v->valuestring : def) == 0);
}

static void positive_float(const cJSON *o, const char *key, float got, float def) {
    CHECK(isfinite(got) && got > 0);
    const cJSON *v = item(o, key);
    CHECK(v ? cJSON_IsNumber(v) && got == (float)v->valuedouble : got == def);
}

static void check_quant(const cJSON *root, const clara_quant_config *q) {
    const cJSON *qc = item(root, "quantization_config");
    CHECK(memchr(q->method, '\0', sizeof q->method) && memchr(q->format, '\0', sizeof q->format) &&
          memchr(q->pack_dtype, '\0', sizeof q->pack_dtype));
    if (!qc) {
        CHECK(q->method[0] == '\0');
        return;
    }
    bool awq = strcmp(q->method, "awq") == 0;
    CHECK(awq || strcmp(q->method, "gptq") == 0);
    CHECK(q->bits >= 1 && q->bits <= 64);
    CHECK(q->group_size == -1 || (q->group_size >= 1 && q->group_size <= (1 << 24)));
    const char *kb = awq && !cJSON_GetObjectItemCaseSensitive(qc, "bits") ? "w_bit" : "bits";
    const cJSON *b = item(qc, kb);
    CHECK(cJSON_IsNumber(b) && b->valuedouble == q->bits);
    same_bool(qc, "desc_act", q->desc_act, false);
    same_bool(qc, "sym", q->sym, true);
    same_bool(qc, "zero_point", q->zero_point, true);
}

static void check_base(const cJSON *root, const clara_base_config *c) {
    CHECK(strcmp(c->model_type, "mistral") == 0 || strcmp(c->model_type, "llama") == 0);
    same_str(root, "model_type", c->model_type, sizeof c->model_type, "");
    same_u32(root, "hidden_size", c->hidden_size, 0, 1, 1u << 16);
    same_u32(root, "intermediate_size", c->intermediate_size, 0, 1, 1u << 20);
    same_u32(root, "num_hidden_layers", c->n_layers, 0, 1, 1024);
    same_u32(root, "num_attention_heads", c->n_heads, 0, 1, 1024);
    same_u32(root, "num_key_value_heads", c->n_kv_heads, c->n_heads, 1, 1024);
    same_u32(root, "vocab_size", c->vocab_size, 0, 1, 1u << 24);
    same_u32(root, "max_position_embeddings", c->max_position_embeddings, 4096, 1, 1u << 24);
    CHECK(c->n_heads % c->n_kv_heads == 0);
    CHECK(c->head_dim >= 2 && c->head_dim % 2 == 0 && c->head_dim <= (1u << 16));
    if (item(root, "head_dim"))
        same_u32(root, "head_dim", c->head_dim, 0, 2, 1u << 12);
    else
        CHECK((uint64_t)c->head_dim * c->n_heads == c->hidden_size);
    const cJSON *bos = cJSON_GetObjectItemCaseSensitive(root, "bos_token_id");
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    CHECK(c->bos_token_id >= -1 && c->bos_token_id <= (1 << 24));
    CHECK(c->eos_token_id >= -1 && c->eos_token_id <= (1 << 24));
    /* absent or null: -1 */
    CHECK(cJSON_IsNumber(bos) ? bos->valuedouble == c->bos_token_id : c->bos_token_id == -1);
    CHECK(cJSON_IsNumber(eos) ? eos->valuedouble == c->eos_token_id : c->eos_token_id == -1);
    positive_float(root, "rms_norm_eps", c->rms_norm_eps, 1e-5f);
    positive_float(root, "rope_theta", c->rope_theta, 10000.0f);
    CHECK(!c->tie_word_embeddings);
    const cJSON *sw = item(root, "sliding_window");
    CHECK(sw ? cJSON_IsNumber(sw) && sw->valuedouble == (double)c->sliding_window
             : c->sliding_window == 0);
    CHECK(c->sliding_window >= 0 && c->sliding_window <= (1 << 30));
    CHECK(!item(root, "rope_scaling"));
    check_quant(root, &c->quant);
}

static void check_clara(const cJSON *root, const clara_clara_config *c) {
    same_u32(root, "compr_rate", c->compr_rate, 0, 1, 1u << 16);
    same_u32(root, "doc_max_length", c->doc_max_length, 0, 1, 1u << 16);
    same_u32(root, "generation_top_k", c->generation_top_k, 5, 1, 4096);
    same_u32(root, "max_new_tokens", c->max_new_tokens, 128, 0, 1u << 20);
    same_bool(root, "sep", c->sep, false);
    same_bool(root, "different_mem_tokens", c->different_mem_tokens, false);
    same_bool(root, "lora", c->lora, true);
    same_bool(root, "pure_inference", c->pure_inference, false);
    CHECK(c->n_mem == c->doc_max_length / c->compr_rate && c->n_mem > 0);
    if (c->lora) same_u32(root, "lora_r", c->lora_r, 0, 1, 4096);
    same_str(root, "training_stage", c->training_stage, sizeof c->training_stage, "");
    same_str(root, "decoder_model_name", c->decoder_model_name, sizeof c->decoder_model_name, "");
    same_str(root, "quantization", c->quantization, sizeof c->quantization, "no");
    CHECK(strcmp(c->quantization, "no") == 0);
    CHECK(!item(root, "compr_model_name"));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* an exact-size copy without a terminator, as a file read into memory may be */
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    memcpy(text, data, size);
    cJSON *root = cJSON_ParseWithLength(text, size);

    clara_base_config b;
    if (clara_base_config_parse(text, size, "fuzz/config.json", &b) == CLARA_OK) {
        CHECK(cJSON_IsObject(root));
        check_base(root, &b);
    } else {
        CHECK(clara_last_error()[0] != '\0');
    }
    clara_clara_config c;
    if (clara_clara_config_parse(text, size, "fuzz/config.json", &c) == CLARA_OK) {
        CHECK(cJSON_IsObject(root));
        check_clara(root, &c);
    } else {
        CHECK(clara_last_error()[0] != '\0');
    }
    cJSON_Delete(root);
    free(text);
    return 0;
}
