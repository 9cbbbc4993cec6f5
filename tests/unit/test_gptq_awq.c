/* test_gptq_awq.c - the GPTQ/AWQ import's pieces that have no end-to-end path of their own:
 * quantization_config parsing in hf_config.c (values, defaults, AWQ's alternative key names,
 * one-line errors naming the file and key) and the q8_z dequantizer against hand-computed values
 * (w = d * (q - z), docs/FORMAT.md). The repacking itself is tested end to end by
 * tests/e2e/test_gptq_awq.py against the published formulas. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "convert/gptq_awq.h"
#include "convert/hf_config.h"
#include "dtype.h"
#include "t.h"

#define BASE_KEYS                                                                                  \
    "\"model_type\":\"mistral\",\"hidden_size\":4096,\"intermediate_size\":14336,"                 \
    "\"num_hidden_layers\":32,\"num_attention_heads\":32,\"num_key_value_heads\":8,"               \
    "\"vocab_size\":32000"

static clara_status parse(const char *qc, clara_base_config *c) {
    char json[1024];
    snprintf(json, sizeof json, "{" BASE_KEYS "%s%s}", qc ? ",\"quantization_config\":" : "",
             qc ? qc : "");
    return clara_base_config_parse(json, strlen(json), "q/config.json", c);
}

static void test_gptq_config(void) {
    clara_base_config c;
    T_EQ_INT(parse(NULL, &c), CLARA_OK);
    T_EQ_STR(c.quant.method, "");
    T_EQ_INT(parse("{\"quant_method\":\"gptq\",\"bits\":4,\"group_size\":128,\"desc_act\":true,"
                   "\"sym\":false,\"checkpoint_format\":\"gptq_v2\",\"pack_dtype\":\"int32\"}",
                   &c),
             CLARA_OK);
    T_EQ_STR(c.quant.method, "gptq");
    T_EQ_INT(c.quant.bits, 4);
    T_EQ_INT(c.quant.group_size, 128);
    T_CHECK(c.quant.desc_act && !c.quant.sym && !c.quant.has_dynamic);
    T_EQ_STR(c.quant.format, "gptq_v2");
    T_EQ_STR(c.quant.pack_dtype, "int32");
    /* defaults: sym true, desc_act false, format "gptq" (v1); newer GPTQModel's "format" key */
    T_EQ_INT(parse("{\"quant_method\":\"gptq\",\"bits\":8,\"group_size\":-1}", &c), CLARA_OK);
    T_EQ_INT(c.quant.group_size, -1);
    T_CHECK(!c.quant.desc_act && c.quant.sym);
    T_EQ_STR(c.quant.format, "gptq");
    T_EQ_INT(parse("{\"quant_method\":\"gptq\",\"bits\":4,\"group_size\":32,\"format\":\"gptq_v2\","
                   "\"dynamic\":{\"x\":{}}}",
                   &c),
             CLARA_OK);
    T_EQ_STR(c.quant.format, "gptq_v2");
    T_CHECK(c.quant.has_dynamic);
    T_EQ_INT(parse("{\"quant_method\":\"gptq\",\"bits\":4,\"group_size\":128,"
                   "\"is_marlin_format\":true}",
                   &c),
             CLARA_OK);
    T_EQ_STR(c.quant.format, "marlin"); /* rejected by gptq_awq.c as an unsupported format */
}

static void test_awq_config(void) {
    clara_base_config c;
    T_EQ_INT(parse("{\"quant_method\":\"awq\",\"bits\":4,\"group_size\":128,\"zero_point\":true,"
                   "\"version\":\"gemm\"}",
                   &c),
             CLARA_OK);
    T_EQ_STR(c.quant.method, "awq");
    T_EQ_STR(c.quant.format, "gemm");
    T_CHECK(c.quant.zero_point);
    /* AutoAWQ's own spelling */
    T_EQ_INT(
        parse("{\"quant_method\":\"awq\",\"w_bit\":4,\"q_group_size\":64,\"version\":\"GEMM\"}",
              &c),
        CLARA_OK);
    T_EQ_INT(c.quant.bits, 4);
    T_EQ_INT(c.quant.group_size, 64);
    T_EQ_STR(c.quant.format, "GEMM");
}

static void test_config_errors(void) {
    clara_base_config c;
    T_EQ_INT(parse("[1]", &c), CLARA_ERR_FORMAT);
    T_CHECK(err_has("q/config.json: 'quantization_config' must be an object"));
    T_EQ_INT(parse("{\"bits\":4}", &c), CLARA_ERR_FORMAT);
    T_CHECK(err_has("q/config.json: quantization_config: missing key 'quant_method'"));
    T_EQ_INT(parse("{\"quant_method\":\"bitsandbytes\"}", &c), CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("quant_method 'bitsandbytes' is not supported"));
    T_EQ_INT(parse("{\"quant_method\":\"gptq\",\"bits\":4,\"group_size\":0}", &c),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("'group_size' must be -1 or an integer"));
    T_EQ_INT(parse("{\"quant_method\":\"gptq\",\"bits\":4,\"group_size\":-2}", &c),
             CLARA_ERR_FORMAT);
    T_EQ_INT(parse("{\"quant_method\":\"gptq\",\"group_size\":32}", &c), CLARA_ERR_FORMAT);
    T_CHECK(err_has("quantization_config: missing key 'bits'"));
    T_EQ_INT(parse("{\"quant_method\":\"gptq\",\"bits\":4.5,\"group_size\":32}", &c),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("'bits' must be an integer"));
    T_EQ_INT(parse("{\"quant_method\":\"gptq\",\"bits\":4,\"group_size\":32,\"desc_act\":1}", &c),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("'desc_act' must be true or false"));
}

/* q8_z block: f16 d = 0.5 (0x3800), u16 z = 200 (0xc8 0x00), codes 0, 1, ..., 255 - 31k */
static void test_q8_z(void) {
    const clara_type_info *ti = clara_type_get(CLARA_TYPE_Q8_Z);
    T_CHECK(ti && strcmp(ti->name, "q8_z") == 0 && ti->block_size == 32 && ti->type_size == 36);
    T_EQ_INT(clara_type_from_name("q8_z"), CLARA_TYPE_Q8_Z);
    uint8_t blk[72] = {0x00, 0x38, 0xc8, 0x00};
    for (int t = 0; t < 32; t++) blk[4 + t] = (uint8_t)(t * 8);
    blk[36] = 0x00; /* second block: d = -2 (0xc000), z = 256 (v1's largest zero) */
    blk[37] = 0xc0;
    blk[38] = 0x00;
    blk[39] = 0x01;
    for (int t = 0; t < 32; t++) blk[40 + t] = (uint8_t)(255 - t);
    float y[64];
    gq_dequantize_q8_z(blk, 64, y);
    bool ok = true;
    for (int t = 0; t < 32; t++) ok &= y[t] == 0.5f * (float)(t * 8 - 200);
    for (int t = 0; t < 32; t++) ok &= y[32 + t] == -2.0f * (float)(255 - t - 256);
    T_CHECK(ok);
    T_CHECK(y[0] == -100.0f && y[31] == 24.0f && y[32] == 2.0f && y[63] == 64.0f);
}

int main(void) {
    T_RUN(test_gptq_config);
    T_RUN(test_awq_config);
    T_RUN(test_config_errors);
    T_RUN(test_q8_z);
    return t_report("gptq_awq");
}
