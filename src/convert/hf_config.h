/* hf_config.h - the two config.json files a conversion reads: the base model's (Mistral) and the
 * CLaRa subfolder's (spec §2.1, §2.3). Values are read from the files, never assumed. */
#ifndef CLARA_CONVERT_HF_CONFIG_H
#define CLARA_CONVERT_HF_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "clara.h"

/* quantization_config of a pre-quantized base checkpoint (GPTQ or AWQ; gptq_awq.c validates the
 * values against the tensors). method is "" for an ordinary float checkpoint. */
typedef struct {
    char method[16];     /* quant_method: "gptq" or "awq" */
    uint32_t bits;       /* bits (AWQ also w_bit) */
    int32_t group_size;  /* group_size (AWQ also q_group_size); -1 = one group per row */
    bool desc_act;       /* GPTQ act-order (g_idx permutes the groups) */
    bool sym;            /* GPTQ symmetric (informative: the stored zeros decide) */
    bool zero_point;     /* AWQ zero_point */
    bool has_dynamic;    /* GPTQModel per-module "dynamic" overrides present (unsupported) */
    char format[16];     /* GPTQ checkpoint_format ("gptq" = v1, "gptq_v2"); AWQ version ("gemm") */
    char pack_dtype[16]; /* GPTQModel pack_dtype ("int32" when present) */
} clara_quant_config;

typedef struct {
    char model_type[32]; /* "mistral" or "llama" */
    uint32_t hidden_size, intermediate_size, n_layers, n_heads, n_kv_heads, head_dim;
    uint32_t vocab_size, max_position_embeddings;
    int32_t bos_token_id, eos_token_id; /* -1 when absent */
    float rms_norm_eps, rope_theta;
    bool tie_word_embeddings;
    int64_t sliding_window;   /* 0 when null/absent */
    clara_quant_config quant; /* quantization_config; quant.method[0] == 0 when absent */
} clara_base_config;

typedef struct {
    uint32_t compr_rate, doc_max_length, n_mem, generation_top_k, max_new_tokens, lora_r;
    bool sep, different_mem_tokens, lora, pure_inference;
    char training_stage[32];
    char decoder_model_name[256];
    char quantization[32];
} clara_clara_config;

/* Parse from text (for tests/fuzzing) or load DIR/config.json. Errors name the file and key. */
clara_status clara_base_config_parse(const char *text, size_t len, const char *name,
                                     clara_base_config *out);
clara_status clara_clara_config_parse(const char *text, size_t len, const char *name,
                                      clara_clara_config *out);
clara_status clara_base_config_load(const char *dir, clara_base_config *out);
clara_status clara_clara_config_load(const char *dir, clara_clara_config *out);

#endif
