/* hf_config.h - the two config.json files a conversion reads: the base model's (Mistral) and the
 * CLaRa subfolder's (spec §2.1, §2.3). Values are read from the files, never assumed. */
#ifndef CLARA_CONVERT_HF_CONFIG_H
#define CLARA_CONVERT_HF_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "clara.h"

typedef struct {
    char model_type[32]; /* "mistral" or "llama" */
    uint32_t hidden_size, intermediate_size, n_layers, n_heads, n_kv_heads, head_dim;
    uint32_t vocab_size, max_position_embeddings;
    int32_t bos_token_id, eos_token_id; /* -1 when absent */
    float rms_norm_eps, rope_theta;
    bool tie_word_embeddings;
    int64_t sliding_window; /* 0 when null/absent */
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
