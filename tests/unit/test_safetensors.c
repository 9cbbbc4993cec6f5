/* test_safetensors.c - the safetensors reader against files written by tests/unit/gen_unit_data.py
 * (expected values in tests/unit/data/expected.json, computed by Python/numpy), sharded model
 * directories, and hand-made broken headers that must each be rejected with a message naming the
 * problem. */
#include <cjson/cJSON.h>
#include <stdlib.h>

#include "base/mapfile.h"
#include "base/status.h"
#include "convert/safetensors.h"
#include "t.h"

#define DATA "tests/unit/data/"

static cJSON *g_expected;

static void test_small_file(void) {
    st_file *f = NULL;
    T_EQ_INT(st_open(DATA "small.safetensors", &f), CLARA_OK);
    if (!f) return;
    const cJSON *exp = cJSON_GetObjectItem(g_expected, "small.safetensors");
    T_EQ_INT(st_n_tensors(f), cJSON_GetArraySize(exp));
    size_t i = 0;
    for (const cJSON *e = exp->child; e; e = e->next, i++) {
        const st_tensor *t = st_tensor_at(f, i);
        T_EQ_STR(t->name, cJSON_GetObjectItem(e, "name")->valuestring);
        T_EQ_STR(st_dtype_name(t->dtype), cJSON_GetObjectItem(e, "dtype")->valuestring);
        const cJSON *shape = cJSON_GetObjectItem(e, "shape");
        T_EQ_INT(t->n_dims, cJSON_GetArraySize(shape));
        uint64_t numel = 1;
        for (int d = 0; d < cJSON_GetArraySize(shape); d++) {
            T_EQ_INT(t->shape[d], cJSON_GetArrayItem(shape, d)->valueint);
            numel *= t->shape[d];
        }
        T_EQ_INT(t->numel, numel);
        T_CHECK(hex_eq(t->data, t->nbytes, cJSON_GetObjectItem(e, "hex")->valuestring));
        T_CHECK(st_find(f, t->name) == t);
        T_EQ_STR(t->file, DATA "small.safetensors");
    }
    T_EQ_INT(st_find(f, "b")->type, CLARA_TYPE_BF16);
    T_EQ_INT(st_find(f, "c")->type, CLARA_TYPE_I64);
    T_EQ_INT(st_find(f, "d")->type, -1); /* U8 has no clara_type */
    T_EQ_INT(st_find(f, "e")->n_dims, 0);
    T_EQ_INT(st_find(f, "e")->numel, 1);
    T_EQ_INT(st_find(f, "z")->numel, 0);
    T_CHECK(st_find(f, "nope") == NULL);
    T_EQ_STR(st_metadata(f, "format"), "pt");
    T_EQ_STR(st_metadata(f, "k"), "v");
    T_CHECK(st_metadata(f, "missing") == NULL);
    st_free(f);
}

/* Every proper prefix of a valid file is rejected, without crashing. */
static void test_truncations(void) {
    clara_mapped m;
    if (clara_map_file(DATA "small.safetensors", &m) != CLARA_OK) {
        T_CHECK(0);
        return;
    }
    int accepted = 0;
    for (size_t n = 0; n < m.size; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, m.data, n);
        st_file *f = NULL;
        if (st_parse(copy, n, "cut", &f) == CLARA_OK) accepted++;
        st_free(f);
        free(copy);
    }
    T_EQ_INT(accepted, 0);
    clara_unmap_file(&m);
}

/* Builds "u64 len | header | data_size zero bytes" and parses it. */
static clara_status parse_hdr(const char *header, size_t data_size) {
    size_t hl = strlen(header), len = 8 + hl + data_size;
    uint8_t *buf = calloc(1, len);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    st_file *f = NULL;
    clara_status s = st_parse(buf, len, "bad.safetensors", &f);
    st_free(f);
    free(buf);
    return s;
}

static void test_bad_headers(void) {
    uint8_t tiny[5] = {1, 0, 0, 0, 0};
    st_file *f = NULL;
    T_EQ_INT(st_parse(tiny, sizeof tiny, "bad.safetensors", &f), CLARA_ERR_FORMAT);
    T_CHECK(err_has("bad.safetensors: 5 bytes is too short"));
    uint8_t past[16] = {0xe8, 0x03}; /* header length 1000 in a 16-byte file */
    T_EQ_INT(st_parse(past, sizeof past, "bad.safetensors", &f), CLARA_ERR_FORMAT);
    T_CHECK(err_has("header length 1000 exceeds the file size (16 bytes; truncated?)"));
    T_EQ_INT(parse_hdr("{\"a\": {\"dtype\": \"F32\",", 0), CLARA_ERR_FORMAT);
    T_CHECK(err_has("not valid JSON"));
    T_EQ_INT(parse_hdr("[1, 2]", 0), CLARA_ERR_FORMAT);
    T_CHECK(err_has("not a JSON object"));
    T_EQ_INT(parse_hdr("{} x", 0), CLARA_ERR_FORMAT);
    T_CHECK(err_has("junk after"));
    T_EQ_INT(parse_hdr("{\"a\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
             CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("tensor 'a': unknown dtype 'Q7'"));
    T_EQ_INT(parse_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("span 4 bytes but shape and dtype need 8"));
    T_EQ_INT(parse_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("data_offsets [0, 8] outside the 4-byte data block"));
    T_EQ_INT(parse_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]}}",
                       10),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("tensors 'a' and 'b' overlap"));
    T_EQ_INT(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                       "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                       2),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("duplicate tensor name 'a'"));
    /* the same entry twice (same range) is a duplicate, not "'a' and 'a' overlap" */
    T_EQ_INT(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                       "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                       1),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("duplicate tensor name 'a'"));
    T_EQ_INT(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("shape[0] is not a non-negative integer"));
    T_EQ_INT(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                       "\"data_offsets\":[0,1]}}",
                       1),
             CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("9 dimensions"));
    T_EQ_INT(parse_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                       "\"data_offsets\":[0,0]}}",
                       0),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("element count overflows"));
    T_EQ_INT(parse_hdr("{\"__metadata__\":{\"x\":1}}", 0), CLARA_ERR_FORMAT);
    T_CHECK(err_has("__metadata__ value 'x' is not a string"));
    T_EQ_INT(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1), CLARA_ERR_FORMAT);
    T_CHECK(err_has("data_offsets is not [begin, end]"));
    /* a header that is valid apart from being all there is */
    T_EQ_INT(parse_hdr("{}   ", 0), CLARA_OK);
}

static void test_sharded(void) {
    st_model *m = NULL;
    T_EQ_INT(st_model_open(DATA "st_sharded", &m), CLARA_OK);
    if (!m) return;
    const cJSON *exp = cJSON_GetObjectItem(g_expected, "st_sharded");
    const cJSON *names = cJSON_GetObjectItem(exp, "names");
    T_EQ_INT(st_model_n_tensors(m), cJSON_GetArraySize(names));
    for (int i = 0; i < cJSON_GetArraySize(names); i++)
        T_EQ_STR(st_model_tensor_at(m, (size_t)i)->name, cJSON_GetArrayItem(names, i)->valuestring);
    T_EQ_INT(st_model_total_bytes(m), cJSON_GetObjectItem(exp, "total_bytes")->valueint);
    T_EQ_INT(st_model_n_shards(m), 2);
    const st_tensor *t = st_model_find(m, "lm_head.weight");
    T_CHECK(t && t->dtype == ST_BF16 && t->n_dims == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    T_CHECK(t && strstr(t->file, "model-00002-of-00002.safetensors"));
    T_CHECK(t && t->data[0] == 0x00 && t->data[1] == 0x3f); /* 0.5 in bf16 = 0x3f00 */
    T_CHECK(st_model_find(m, "unlisted") == NULL);          /* in a shard, not in the index */
    st_model_free(m);

    T_EQ_INT(st_model_open(DATA "st_single", &m), CLARA_OK);
    if (m) {
        T_EQ_INT(st_model_n_tensors(m), 2);
        T_EQ_STR(st_model_tensor_at(m, 0)->name, "model.layers.0.w");
        T_EQ_INT(st_model_total_bytes(m), 8 + 12);
        st_model_free(m);
    }
}

static void test_bad_models(void) {
    st_model *m = NULL;
    T_CHECK(st_model_open(DATA "st_missing_shard", &m) != CLARA_OK && !m);
    T_CHECK(err_has("shard 'model-00003-of-00003.safetensors'"));
    T_EQ_INT(st_model_open(DATA "st_traversal", &m), CLARA_ERR_FORMAT);
    T_CHECK(err_has("tensor 'extra': shard name '../small.safetensors' is not allowed"));
    T_EQ_INT(st_model_open(DATA "st_absent_tensor", &m), CLARA_ERR_NOT_FOUND);
    T_CHECK(err_has("tensor 'ghost' is listed in shard 'model-00001-of-00002.safetensors' but that "
                    "shard does not contain it"));
    T_EQ_INT(st_model_open(DATA "st_empty_dir", &m), CLARA_ERR_NOT_FOUND);
    T_CHECK(err_has("neither model.safetensors.index.json nor model.safetensors"));
    T_CHECK(st_model_open(DATA "no_such_dir", &m) != CLARA_OK && !m);
}

static void test_dtype_table(void) {
    T_EQ_INT(st_dtype_parse("BF16"), ST_BF16);
    T_EQ_INT(st_dtype_parse("bf16"), -1);
    T_EQ_INT(st_dtype_size(ST_F64), 8);
    T_EQ_INT(st_dtype_size(ST_BOOL), 1);
    T_EQ_INT(st_dtype_to_clara(ST_F16), CLARA_TYPE_F16);
    T_EQ_INT(st_dtype_to_clara(ST_I32), CLARA_TYPE_I32);
    T_EQ_INT(st_dtype_to_clara(ST_U32), -1);
}

int main(void) {
    char *text = NULL;
    size_t len;
    if (clara_read_file(DATA "expected.json", 1 << 20, &text, &len) != CLARA_OK ||
        !(g_expected = cJSON_Parse(text))) {
        fprintf(stderr, "cannot load %sexpected.json: %s\n", DATA, clara_last_error());
        return 1;
    }
    free(text);
    T_RUN(test_small_file);
    T_RUN(test_truncations);
    T_RUN(test_bad_headers);
    T_RUN(test_sharded);
    T_RUN(test_bad_models);
    T_RUN(test_dtype_table);
    cJSON_Delete(g_expected);
    return t_report("safetensors");
}
