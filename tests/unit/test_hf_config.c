/* test_hf_config.c - the config.json readers (hf_config.c): values of a Mistral-like base config
 * and a CLaRa config as written in the files, defaults for absent keys, and one-line errors
 * naming the file and the key for missing keys, wrong types and inconsistent values. */
#include <stdbool.h>
#include <string.h>

#include "convert/hf_config.h"
#include "t.h"

static clara_status base(const char *json, clara_base_config *c) {
    return clara_base_config_parse(json, strlen(json), "base/config.json", c);
}

static clara_status clara_cfg(const char *json, clara_clara_config *c) {
    return clara_clara_config_parse(json, strlen(json), "clara/config.json", c);
}

#define BASE_KEYS                                                                                  \
    "\"model_type\":\"mistral\",\"intermediate_size\":14336,\"num_hidden_layers\":32,"             \
    "\"vocab_size\":32000,\"rms_norm_eps\":1e-05,"                                                 \
    "\"rope_theta\":1000000.0,\"sliding_window\":null,\"tie_word_embeddings\":false"

static void test_base_values(void) {
    clara_base_config c;
    T_EQ_INT(base("{" BASE_KEYS ",\"hidden_size\":4096,\"num_attention_heads\":32,"
                  "\"num_key_value_heads\":8}",
                  &c),
             CLARA_OK);
    T_EQ_STR(c.model_type, "mistral");
    T_EQ_INT(c.hidden_size, 4096);
    T_EQ_INT(c.intermediate_size, 14336);
    T_EQ_INT(c.n_layers, 32);
    T_EQ_INT(c.n_heads, 32);
    T_EQ_INT(c.n_kv_heads, 8);
    T_EQ_INT(c.head_dim, 128); /* 4096 / 32 */
    T_EQ_INT(c.vocab_size, 32000);
    T_EQ_INT(c.max_position_embeddings, 4096); /* absent: the default */
    T_EQ_INT(c.bos_token_id, -1);
    T_NEAR(c.rms_norm_eps, 1e-5, 1e-12);
    T_NEAR(c.rope_theta, 1e6, 0);
    T_EQ_INT(c.sliding_window, 0);
    /* an explicit head_dim need not divide hidden_size */
    T_EQ_INT(
        base("{" BASE_KEYS ",\"hidden_size\":66,\"num_attention_heads\":4,\"head_dim\":16}", &c),
        CLARA_OK);
    T_EQ_INT(c.head_dim, 16);
}

static void test_base_errors(void) {
    clara_base_config c;
    T_EQ_INT(base("{" BASE_KEYS ",\"num_attention_heads\":32}", &c), CLARA_ERR_FORMAT);
    T_CHECK(err_has("base/config.json: missing key 'hidden_size'"));
    T_EQ_INT(base("{" BASE_KEYS ",\"hidden_size\":4096,\"num_attention_heads\":\"32\"}", &c),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("base/config.json: 'num_attention_heads' must be an integer"));
    /* regression: without head_dim, hidden_size must be a multiple of the heads (the check
     * used to run after head_dim had been defaulted, so it never fired) */
    T_EQ_INT(base("{" BASE_KEYS ",\"hidden_size\":66,\"num_attention_heads\":4}", &c),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("base/config.json: hidden_size 66 is not a multiple of 4 heads"));
    T_EQ_INT(base("{" BASE_KEYS ",\"hidden_size\":4,\"num_attention_heads\":8}", &c),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("not a multiple of 8 heads"));
    T_EQ_INT(base("{" BASE_KEYS ",\"hidden_size\":96,\"num_attention_heads\":32}", &c),
             CLARA_ERR_FORMAT); /* head dimension 3 */
    T_CHECK(err_has("head dimension 3 is odd"));
    /* floats checked as the floats they become (fuzz_hf_config): 1e-50 is 0, 1e39 infinite */
#define MIN_KEYS                                                                                   \
    "{\"model_type\":\"mistral\",\"intermediate_size\":14336,\"num_hidden_layers\":32,"            \
    "\"vocab_size\":32000,\"hidden_size\":4096,\"num_attention_heads\":32,"
    T_EQ_INT(base(MIN_KEYS "\"rms_norm_eps\":1e-50}", &c), CLARA_ERR_FORMAT);
    T_CHECK(err_has("'rms_norm_eps' must be a positive number within float range"));
    T_EQ_INT(base(MIN_KEYS "\"rope_theta\":1e39}", &c), CLARA_ERR_FORMAT);
    T_CHECK(err_has("'rope_theta' must be a positive number within float range"));
    /* token ids given as null are absent (-1), not 0 */
    T_EQ_INT(base(MIN_KEYS "\"bos_token_id\":null,\"eos_token_id\":null}", &c), CLARA_OK);
    T_EQ_INT(c.bos_token_id, -1);
    T_EQ_INT(c.eos_token_id, -1);
#undef MIN_KEYS
    T_EQ_INT(base("[1]", &c), CLARA_ERR_FORMAT);
    T_CHECK(err_has("top level is not a JSON object"));
    T_EQ_INT(base("{\"hidden_size\":", &c), CLARA_ERR_FORMAT);
    T_CHECK(err_has("base/config.json: not valid JSON"));
}

#define CLARA_KEYS                                                                                 \
    "\"doc_max_length\":256,\"different_mem_tokens\":true,\"lora_r\":16,"                          \
    "\"training_stage\":\"stage1_2\",\"generation_top_k\":5"

static void test_clara_config(void) {
    clara_clara_config c;
    T_EQ_INT(clara_cfg("{" CLARA_KEYS ",\"compr_rate\":16,\"sep\":true}", &c), CLARA_OK);
    T_EQ_INT(c.compr_rate, 16);
    T_EQ_INT(c.n_mem, 16); /* 256 / 16 */
    T_EQ_INT(c.lora_r, 16);
    T_CHECK(c.sep && c.different_mem_tokens && c.lora);
    T_EQ_STR(c.training_stage, "stage1_2");
    T_EQ_INT(clara_cfg("{" CLARA_KEYS ",\"compr_rate\":128,\"sep\":false}", &c), CLARA_OK);
    T_EQ_INT(c.n_mem, 2);
    T_EQ_INT(clara_cfg("{" CLARA_KEYS ",\"compr_rate\":512,\"sep\":true}", &c), CLARA_ERR_FORMAT);
    T_CHECK(err_has("clara/config.json: doc_max_length 256 / compr_rate 512 gives no memory"));
    T_EQ_INT(clara_cfg("{" CLARA_KEYS ",\"sep\":true}", &c), CLARA_ERR_FORMAT);
    T_CHECK(err_has("clara/config.json: missing key 'compr_rate'"));
    T_EQ_INT(clara_cfg("{" CLARA_KEYS ",\"compr_rate\":16,\"sep\":\"yes\"}", &c), CLARA_ERR_FORMAT);
    T_CHECK(err_has("'sep' must be true or false"));
    T_EQ_INT(
        clara_cfg("{" CLARA_KEYS ",\"compr_rate\":16,\"sep\":true,\"quantization\":\"int4\"}", &c),
        CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("quantization 'int4' is not supported"));
}

int main(void) {
    T_RUN(test_base_values);
    T_RUN(test_base_errors);
    T_RUN(test_clara_config);
    return t_report("hf_config");
}
