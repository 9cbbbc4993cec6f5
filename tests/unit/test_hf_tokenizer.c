/* test_hf_tokenizer.c - the tokenizer.json / tokenizer.model / tokenizer_config.json readers
 * against Python's sentencepiece (expected.json, written by tests/unit/data/tokenizer/
 * gen_tokenizer.py next to a tiny trained BPE model), hand-built protobuf and JSON inputs with
 * hand-computed results, and malformed inputs that must fail with a message naming the problem. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fp16.h"
#include "base/mapfile.h"
#include "base/status.h"
#include "convert/hf_tokenizer.h"
#include "t.h"

#define DATA "tests/unit/data/tokenizer/"

static char *slurp(const char *path, size_t *len) {
    char *buf = NULL;
    if (clara_read_file(path, 1 << 26, &buf, len) != CLARA_OK) {
        fprintf(stderr, "cannot read %s: %s\n", path, clara_last_error());
        return NULL;
    }
    return buf;
}

static cJSON *expected(void) {
    size_t len;
    char *text = slurp(DATA "expected.json", &len);
    cJSON *e = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    return e;
}

static clara_status parse_file_json(const char *file, clara_hf_tokenizer *t) {
    size_t len;
    char *text = slurp(file, &len);
    if (!text) return CLARA_ERR_IO;
    clara_status s = hf_tokenizer_parse_json(text, len, file, t);
    free(text);
    return s;
}

static clara_status parse_file_config(const char *file, clara_hf_tokenizer *t) {
    size_t len;
    char *text = slurp(file, &len);
    if (!text) return CLARA_ERR_IO;
    clara_status s = hf_tokenizer_parse_config(text, len, file, t);
    free(text);
    return s;
}

static clara_status parse_file_spm(const char *file, clara_hf_tokenizer *t) {
    size_t len;
    char *data = slurp(file, &len);
    if (!data) return CLARA_ERR_IO;
    clara_status s = hf_tokenizer_parse_spm((const uint8_t *)data, len, file, t);
    free(data);
    return s;
}

/* Vocabulary, types and ids as Python's sentencepiece reports them. Scores bit-exact when
 * `bit_exact`, else by value (-0.0 == 0.0). */
static void check_vocab(const clara_hf_tokenizer *t, const cJSON *e, bool bit_exact) {
    const cJSON *pieces = cJSON_GetObjectItem(e, "pieces"),
                *scores = cJSON_GetObjectItem(e, "scores"),
                *types = cJSON_GetObjectItem(e, "types");
    uint32_t n = (uint32_t)cJSON_GetArraySize(pieces);
    T_EQ_INT(n, 1000);
    T_CHECK(t->n_vocab >= n);
    int bad_piece = 0, bad_score = 0, bad_type = 0;
    for (uint32_t i = 0; i < n && i < t->n_vocab; i++) {
        if (strcmp(t->tokens[i], cJSON_GetArrayItem(pieces, (int)i)->valuestring) != 0) bad_piece++;
        float want = (float)cJSON_GetArrayItem(scores, (int)i)->valuedouble;
        if (bit_exact ? clara_f32_bits(want) != clara_f32_bits(t->scores[i]) : want != t->scores[i])
            bad_score++;
        if (t->token_types[i] != cJSON_GetArrayItem(types, (int)i)->valueint) bad_type++;
    }
    T_EQ_INT(bad_piece, 0);
    T_EQ_INT(bad_score, 0);
    T_EQ_INT(bad_type, 0);
    T_EQ_INT(t->unk_id, cJSON_GetObjectItem(e, "unk_id")->valueint);
    T_EQ_INT(t->bos_id, cJSON_GetObjectItem(e, "bos_id")->valueint);
    T_EQ_INT(t->eos_id, cJSON_GetObjectItem(e, "eos_id")->valueint);
}

static void check_merges(const clara_hf_tokenizer *t, const cJSON *e) {
    const cJSON *m = cJSON_GetObjectItem(e, "merges");
    T_EQ_INT(t->n_merges, cJSON_GetArraySize(m));
    int bad = 0;
    for (uint64_t i = 0; i < t->n_merges && i < (uint64_t)cJSON_GetArraySize(m); i++)
        if (strcmp(t->merges[i], cJSON_GetArrayItem(m, (int)i)->valuestring) != 0) {
            if (!bad)
                fprintf(stderr, "merge %llu: '%s' vs '%s'\n", (unsigned long long)i, t->merges[i],
                        cJSON_GetArrayItem(m, (int)i)->valuestring);
            bad++;
        }
    T_EQ_INT(bad, 0);
}

static void test_spm_matches_sentencepiece(void) {
    cJSON *e = expected();
    clara_hf_tokenizer t;
    T_CHECK(e != NULL);
    if (!e) return;
    T_EQ_INT(parse_file_spm(DATA "tokenizer.model", &t), CLARA_OK);
    check_vocab(&t, e, true);
    T_EQ_INT(t.n_vocab, 1000);
    T_EQ_INT(t.pad_id, cJSON_GetObjectItem(e, "pad_id")->valueint);
    T_CHECK(t.byte_fallback);
    T_EQ_INT(t.norm, CLARA_NORM_LEGACY);
    T_EQ_INT(t.prepend_scheme, CLARA_PREPEND_ALWAYS);
    T_CHECK(!t.remove_extra_whitespaces); /* trained with remove_extra_whitespaces=False */
    T_EQ_STR(t.source, "tokenizer.model");
    /* HF's converter: <unk>, <s>, </s> become special added tokens */
    T_EQ_INT(t.n_added, 3);
    if (t.n_added == 3) {
        T_EQ_STR(t.added[1].content, "<s>");
        T_EQ_INT(t.added[1].id, 1);
        T_CHECK(t.added[1].special && !t.added[1].normalized);
    }
    check_merges(&t, e); /* derived merges == the generator's tokenizer.json merges */
    hf_tokenizer_free(&t);
    T_CHECK(t.tokens == NULL && t.n_vocab == 0);
    hf_tokenizer_free(&t); /* twice is fine */
    cJSON_Delete(e);
}

static void test_json_legacy(void) {
    cJSON *e = expected();
    clara_hf_tokenizer t;
    if (!e) return;
    T_EQ_INT(parse_file_json(DATA "tokenizer.json", &t), CLARA_OK);
    /* the derived scores and types equal what tokenizer.model stores */
    check_vocab(&t, e, false);
    T_EQ_INT(t.n_vocab, 1000);
    check_merges(&t, e);
    T_CHECK(t.byte_fallback && t.fuse_unk && !t.ignore_merges);
    T_EQ_INT(t.pad_id, -1);
    T_EQ_INT(t.norm, CLARA_NORM_LEGACY);
    T_EQ_INT(t.prepend_scheme, CLARA_PREPEND_ALWAYS);
    T_EQ_STR(t.decoder, "Sequence[Replace,ByteFallback,Fuse,Strip]");
    T_EQ_STR(t.source, "tokenizer.json");
    T_EQ_INT(t.n_added, 3);
    if (t.n_added == 3) {
        T_EQ_STR(t.added[0].content, "<unk>");
        T_EQ_STR(t.added[2].content, "</s>");
        T_EQ_INT(t.added[2].id, 2);
        T_CHECK(t.added[2].special && !t.added[2].normalized && !t.added[2].lstrip);
    }
    T_CHECK(t.chat_template == NULL && t.add_bos && !t.add_eos);
    hf_tokenizer_free(&t);
    cJSON_Delete(e);
}

static void test_json_metaspace(void) {
    cJSON *e = expected();
    clara_hf_tokenizer t;
    if (!e) return;
    T_EQ_INT(parse_file_json(DATA "tokenizer_metaspace.json", &t), CLARA_OK);
    T_EQ_INT(t.norm, CLARA_NORM_METASPACE);
    T_EQ_INT(t.prepend_scheme, CLARA_PREPEND_FIRST);
    T_CHECK(!t.metaspace_split);
    check_merges(&t, e); /* [left, right] pairs read as "left right" */
    T_EQ_STR(t.decoder, "Metaspace");
    hf_tokenizer_free(&t);
    cJSON_Delete(e);
}

static void test_json_clara_added(void) {
    cJSON *e = expected();
    clara_hf_tokenizer t;
    if (!e) return;
    T_EQ_INT(parse_file_json(DATA "tokenizer_clara.json", &t), CLARA_OK);
    T_EQ_INT(t.n_vocab, 1006);
    T_EQ_INT(t.n_added, 9);
    const cJSON *extra = cJSON_GetObjectItem(e, "clara_extra");
    for (int i = 0; i < 5 && t.n_vocab == 1006; i++) {
        T_EQ_STR(t.tokens[1000 + i], cJSON_GetArrayItem(extra, i)->valuestring);
        T_EQ_INT(t.token_types[1000 + i], CLARA_TOKTYPE_CONTROL);
        T_NEAR(t.scores[1000 + i], -1000.0, 0);
    }
    if (t.n_vocab == 1006) {
        T_EQ_STR(t.tokens[1005], "[user tok]");
        T_EQ_INT(t.token_types[1005], CLARA_TOKTYPE_USER_DEFINED);
        T_EQ_STR(t.tokens[1003], "<ENC>");
    }
    hf_tokenizer_free(&t);
    cJSON_Delete(e);
}

static void test_config(void) {
    cJSON *e = expected();
    clara_hf_tokenizer t;
    if (!e) return;
    T_EQ_INT(parse_file_json(DATA "tokenizer.json", &t), CLARA_OK);
    T_EQ_INT(parse_file_config(DATA "tokenizer_config.json", &t), CLARA_OK);
    T_EQ_STR(t.chat_template, cJSON_GetObjectItem(e, "chat_template")->valuestring);
    T_CHECK(t.add_bos && !t.add_eos);
    T_EQ_STR(t.bos_token, "<s>");
    T_EQ_STR(t.eos_token, "</s>");
    T_EQ_STR(t.unk_token, "<unk>");
    T_CHECK(t.pad_token == NULL);
    T_EQ_INT(t.pad_id, -1);
    T_EQ_INT(t.bos_id, 1);
    T_EQ_INT(t.legacy, 1);
    T_EQ_INT(t.add_prefix_space, -1);
    /* token objects, a template list, pad "</s>" */
    T_EQ_INT(parse_file_config(DATA "tokenizer_config_objects.json", &t), CLARA_OK);
    T_EQ_STR(t.chat_template, cJSON_GetObjectItem(e, "chat_template")->valuestring);
    T_CHECK(!t.add_bos && t.add_eos);
    T_EQ_STR(t.bos_token, "<s>");
    T_EQ_STR(t.pad_token, "</s>");
    T_EQ_INT(t.pad_id, 2);
    T_EQ_INT(t.eos_id, 2);
    T_EQ_INT(t.legacy, 0);
    T_EQ_INT(t.add_prefix_space, 1);
    hf_tokenizer_free(&t);
    cJSON_Delete(e);
}

static bool copy_file(const char *from, const char *to) {
    size_t len;
    char *d = slurp(from, &len);
    FILE *f = d ? fopen(to, "wb") : NULL;
    bool ok = f && fwrite(d, 1, len, f) == len;
    if (f) fclose(f);
    free(d);
    return ok;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_load_dir(void) {
    clara_hf_tokenizer t;
    T_EQ_INT(hf_tokenizer_load_dir(DATA, &t), CLARA_OK);
    T_EQ_STR(t.source, "tokenizer.json");
    T_CHECK(t.chat_template != NULL);
    hf_tokenizer_free(&t);

    char dir[] = "/tmp/clara_tok_XXXXXX", p1[256], p2[256];
    T_CHECK(mkdtemp(dir) != NULL);
    T_EQ_INT(hf_tokenizer_load_dir(dir, &t), CLARA_ERR_NOT_FOUND);
    T_CHECK(strstr(clara_last_error(), dir) && strstr(clara_last_error(), "tokenizer.model"));
    snprintf(p1, sizeof p1, "%s/tokenizer.model", dir);
    snprintf(p2, sizeof p2, "%s/tokenizer_config.json", dir);
    T_CHECK(copy_file(DATA "tokenizer.model", p1));
    /* tokenizer.model + a config whose added_tokens_decoder extends the vocabulary */
    write_text(p2, "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"add_bos_token\": true,"
                   " \"chat_template\": \"T\", \"added_tokens_decoder\": {"
                   "\"1\": {\"content\": \"<s>\", \"special\": true},"
                   "\"1000\": {\"content\": \"<MEM0>\", \"special\": true},"
                   "\"1001\": {\"content\": \"<x y>\", \"special\": false}}}");
    T_EQ_INT(hf_tokenizer_load_dir(dir, &t), CLARA_OK);
    T_EQ_STR(t.source, "tokenizer.model");
    T_EQ_STR(t.chat_template, "T");
    T_EQ_INT(t.n_vocab, 1002);
    if (t.n_vocab == 1002) {
        T_EQ_STR(t.tokens[1000], "<MEM0>");
        T_EQ_INT(t.token_types[1000], CLARA_TOKTYPE_CONTROL);
        T_EQ_INT(t.token_types[1001], CLARA_TOKTYPE_USER_DEFINED);
        T_NEAR(t.scores[1001], -1000.0, 0);
    }
    T_EQ_INT(t.n_added, 5); /* <unk>, <s>, </s> from the model, then the two new ones */
    hf_tokenizer_free(&t);
    /* a gap in the added ids is refused, naming the config file */
    write_text(p2, "{\"added_tokens_decoder\": {\"1001\": {\"content\": \"<M>\"}}}");
    T_CHECK(hf_tokenizer_load_dir(dir, &t) != CLARA_OK);
    T_CHECK(strstr(clara_last_error(), "tokenizer_config.json: added_tokens_decoder: ids are "
                                       "not dense") != NULL);
    T_CHECK(t.n_vocab == 0 && t.tokens == NULL);
    unlink(p1);
    unlink(p2);
    rmdir(dir);
}

/* ---- hand-made tokenizer.json inputs ---- */

#define LEGACY_NORM                                                                                \
    "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"      \
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]}"

/* A small tokenizer.json with parts replaced. */
static clara_status json_case(const char *model, const char *normalizer, const char *pre,
                              const char *added) {
    char buf[4096];
    snprintf(buf, sizeof buf,
             "{\"added_tokens\": %s, \"normalizer\": %s, \"pre_tokenizer\": %s, \"model\": %s}",
             added, normalizer, pre, model);
    clara_hf_tokenizer t;
    clara_status s = hf_tokenizer_parse_json(buf, strlen(buf), "t.json", &t);
    hf_tokenizer_free(&t);
    return s;
}

#define VOCAB      "\"vocab\":{\"<unk>\":0,\"a\":1,\"b\":2,\"ab\":3}"
#define GOOD_MODEL "{\"type\":\"BPE\"," VOCAB ",\"merges\":[\"a b\"],\"unk_token\":\"<unk>\"}"
#define GOOD_ADDED "[{\"id\":0,\"content\":\"<unk>\",\"special\":true}]"

static void expect_fail(clara_status s, const char *needle) {
    const char *msg = clara_last_error();
    T_CHECK_MSG(s != CLARA_OK && strncmp(msg, "t.json: ", 8) == 0 && strstr(msg, needle) &&
                    !strchr(msg, '\n'),
                "status %d, message '%s', wanted '%s'", s, msg, needle);
}

static void test_json_small_valid(void) {
    const char *text = "{\"added_tokens\": " GOOD_ADDED ", \"normalizer\": " LEGACY_NORM
                       ", \"pre_tokenizer\": null, \"model\": " GOOD_MODEL "}";
    clara_hf_tokenizer t;
    T_EQ_INT(hf_tokenizer_parse_json(text, strlen(text), "t.json", &t), CLARA_OK);
    T_EQ_INT(t.n_vocab, 4);
    T_EQ_INT(t.n_merges, 1);
    if (t.n_vocab == 4 && t.n_merges == 1) {
        T_EQ_STR(t.merges[0], "a b");
        T_EQ_INT(t.token_types[0], CLARA_TOKTYPE_UNKNOWN);
        T_EQ_INT(t.token_types[3], CLARA_TOKTYPE_NORMAL);
        T_NEAR(t.scores[0], 0, 0);
        T_NEAR(t.scores[1], 0, 0);
        T_NEAR(t.scores[2], -1, 0);
        T_NEAR(t.scores[3], -2, 0);
    }
    T_EQ_INT(t.bos_id, -1); /* no <s> in this vocabulary */
    hf_tokenizer_free(&t);
    /* the harness itself accepts the good parts */
    T_EQ_INT(json_case(GOOD_MODEL, LEGACY_NORM, "null", GOOD_ADDED), CLARA_OK);
    T_EQ_INT(
        json_case(GOOD_MODEL, "null",
                  "{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"add_prefix_space\":true}",
                  "[]"),
        CLARA_OK);
}

static void test_json_negative(void) {
    clara_hf_tokenizer t;
    const char *bad = "{\"model\": {";
    expect_fail(hf_tokenizer_parse_json(bad, strlen(bad), "t.json", &t), "not valid JSON");
    T_CHECK(t.tokens == NULL && t.n_vocab == 0);
    expect_fail(hf_tokenizer_parse_json("{} x", 4, "t.json", &t), "unexpected data after");
    expect_fail(hf_tokenizer_parse_json("[1]", 3, "t.json", &t), "not a JSON object");
    expect_fail(hf_tokenizer_parse_json("", 0, "t.json", &t), "empty file");
    expect_fail(json_case("{\"type\":\"WordPiece\"," VOCAB "}", LEGACY_NORM, "null", "[]"),
                "model.type 'WordPiece' is not supported");
    expect_fail(json_case("{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}",
                          LEGACY_NORM, "null", "[]"),
                "id 0 is given to both 'a' and 'b'");
    expect_fail(json_case("{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":2},\"merges\":[]}",
                          LEGACY_NORM, "null", "[]"),
                "ids are not dense: 'b' has id 2");
    expect_fail(json_case("{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"a\":1},\"merges\":[]}",
                          LEGACY_NORM, "null", "[]"),
                "'a' appears twice");
    expect_fail(json_case("{\"type\":\"BPE\",\"vocab\":{\"a\":0.5}}", LEGACY_NORM, "null", "[]"),
                "'a' has no valid id");
    expect_fail(json_case("{\"type\":\"BPE\"," VOCAB ",\"merges\":[1]}", LEGACY_NORM, "null", "[]"),
                "model.merges[0] is neither");
    expect_fail(json_case("{\"type\":\"BPE\"," VOCAB ",\"merges\":[[\"a\",\"b\",\"c\"]]}",
                          LEGACY_NORM, "null", "[]"),
                "model.merges[0] is neither");
    expect_fail(json_case("{\"type\":\"BPE\"," VOCAB ",\"merges\":[\"a b\",[\"a\",\"b\"]]}",
                          LEGACY_NORM, "null", "[]"),
                "mixes strings and pairs");
    expect_fail(
        json_case("{\"type\":\"BPE\"," VOCAB ",\"merges\":[\"ab\"]}", LEGACY_NORM, "null", "[]"),
        "is not a \"left right\" string");
    expect_fail(
        json_case("{\"type\":\"BPE\"," VOCAB ",\"merges\":[\"a x\"]}", LEGACY_NORM, "null", "[]"),
        "right token 'x' is not in the vocabulary");
    expect_fail(
        json_case("{\"type\":\"BPE\"," VOCAB ",\"merges\":[\"b a\"]}", LEGACY_NORM, "null", "[]"),
        "merged token 'ba' is not in the vocabulary");
    expect_fail(json_case(GOOD_MODEL, "{\"type\":\"NFKC\"}", "null", "[]"),
                "normalizer 'NFKC' is not supported");
    expect_fail(json_case(GOOD_MODEL,
                          "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\","
                          "\"prepend\":\"\\u2581\"},{\"type\":\"Lowercase\"}]}",
                          "null", "[]"),
                "normalizer 'Lowercase' is not supported");
    expect_fail(json_case(GOOD_MODEL, "null", "null", "[]"), "unsupported layout");
    expect_fail(json_case(GOOD_MODEL, "null", "{\"type\":\"ByteLevel\"}", "[]"),
                "pre_tokenizer 'ByteLevel' is not supported");
    expect_fail(json_case(GOOD_MODEL, "null",
                          "{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\","
                          "\"prepend_scheme\":\"sometimes\"}",
                          "[]"),
                "prepend_scheme 'sometimes' is unknown");
    expect_fail(json_case(GOOD_MODEL, LEGACY_NORM, "null",
                          "[{\"id\":5,\"content\":\"<x>\",\"special\":true}]"),
                "added_tokens: ids are not dense: id 5");
    expect_fail(json_case(GOOD_MODEL, LEGACY_NORM, "null",
                          "[{\"id\":1,\"content\":\"<x>\",\"special\":true}]"),
                "id 1 is '<x>' here but 'a' in the vocabulary");
    expect_fail(json_case(GOOD_MODEL, LEGACY_NORM, "null",
                          "[{\"id\":4,\"content\":\"ab\",\"special\":true}]"),
                "id 4 'ab' repeats the text of id 3");
    expect_fail(json_case(GOOD_MODEL, LEGACY_NORM, "null", "[{\"id\":4}]"),
                "added_tokens[0].content is missing");
    expect_fail(
        json_case("{\"type\":\"BPE\"," VOCAB ",\"unk_token\":\"<zz>\"}", LEGACY_NORM, "null", "[]"),
        "model.unk_token '<zz>' is not in the vocabulary");
    expect_fail(
        json_case("{\"type\":\"BPE\"," VOCAB ",\"dropout\":0.1}", LEGACY_NORM, "null", "[]"),
        "dropout");
    expect_fail(
        json_case("{\"type\":\"BPE\"," VOCAB ",\"byte_fallback\":1}", LEGACY_NORM, "null", "[]"),
        "model.byte_fallback is not a boolean");
    expect_fail(json_case("{\"type\":\"BPE\",\"vocab\":{\"\\u00e9\":0,\"\xff\":1}}", LEGACY_NORM,
                          "null", "[]"),
                "token id 1 is not valid UTF-8");
    expect_fail(json_case("{\"type\":\"BPE\",\"vocab\":{\"\":0}}", LEGACY_NORM, "null", "[]"),
                "token id 0 is empty");
}

/* ---- hand-made protobuf inputs ---- */

typedef struct {
    uint8_t b[512];
    size_t n;
} pb;

static void pb_varint(pb *p, uint64_t v) {
    do {
        p->b[p->n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
}
static void pb_key(pb *p, uint32_t field, int wire) {
    pb_varint(p, (uint64_t)field << 3 | (uint64_t)wire);
}
static void pb_bytes(pb *p, uint32_t field, const void *d, size_t n) {
    pb_key(p, field, 2);
    pb_varint(p, n);
    memcpy(p->b + p->n, d, n);
    p->n += n;
}
static void pb_f32(pb *p, uint32_t field, float f) {
    uint32_t u = clara_f32_bits(f);
    pb_key(p, field, 5);
    for (int i = 0; i < 4; i++) p->b[p->n++] = (uint8_t)(u >> (8 * i));
}
static void pb_piece(pb *p, const char *text, float score, int type) {
    pb sp = {.n = 0};
    pb_bytes(&sp, 1, text, strlen(text));
    pb_f32(&sp, 2, score);
    if (type) {
        pb_key(&sp, 3, 0);
        pb_varint(&sp, (uint64_t)type);
    }
    pb_bytes(p, 1, sp.b, sp.n);
}
/* trainer_spec with model_type, unk_id and bos_id (negative ids as sign-extended varints). */
static void pb_trainer(pb *p, int model_type, int64_t unk, int64_t bos) {
    pb tr = {.n = 0};
    pb_key(&tr, 3, 0);
    pb_varint(&tr, (uint64_t)model_type);
    pb_key(&tr, 35, 0);
    pb_varint(&tr, 1);
    pb_key(&tr, 40, 0);
    pb_varint(&tr, (uint64_t)unk);
    pb_key(&tr, 41, 0);
    pb_varint(&tr, (uint64_t)bos);
    pb_bytes(p, 2, tr.b, tr.n);
}

static clara_status spm_case(const pb *p, clara_hf_tokenizer *t) {
    return hf_tokenizer_parse_spm(p->b, p->n, "t.json", t); /* same name as the json cases */
}

/* Five pieces, unknown fields of every wire type, bos_id -1 as a 10-byte varint; merges
 * hand-derived: "abc" (score -0.5) splits as a|bc (ids 1,5) and ab|c (ids 4,3), then "ab" (-1),
 * then "bc" (-2). */
static void test_spm_small_valid(void) {
    pb p = {.n = 0};
    clara_hf_tokenizer t;
    pb_piece(&p, "<unk>", 0, 2);
    pb_piece(&p, "a", -3, 0);
    pb_piece(&p, "b", -4, 1);
    pb_key(&p, 99, 0); /* unknown varint */
    pb_varint(&p, 300);
    pb_key(&p, 98, 1); /* unknown fixed64 */
    memset(p.b + p.n, 7, 8);
    p.n += 8;
    pb_bytes(&p, 97, "zz", 2); /* unknown bytes */
    pb_f32(&p, 96, 1.5f);      /* unknown fixed32 */
    pb_piece(&p, "c", -5, 0);
    pb_piece(&p, "ab", -1, 0);
    pb_piece(&p, "bc", -2, 0);
    pb_piece(&p, "abc", -0.5f, 0);
    pb_piece(&p, "\xc3\xa9", -6, 0); /* é: never split inside a character */
    pb_trainer(&p, 2, 0, -1);
    T_EQ_INT(spm_case(&p, &t), CLARA_OK);
    T_EQ_INT(t.n_vocab, 8);
    T_EQ_INT(t.bos_id, -1);
    T_EQ_INT(t.eos_id, 2); /* default */
    T_EQ_INT(t.pad_id, -1);
    T_CHECK(t.byte_fallback);
    T_EQ_INT(t.n_merges, 4);
    if (t.n_merges == 4) {
        T_EQ_STR(t.merges[0], "a bc");
        T_EQ_STR(t.merges[1], "ab c");
        T_EQ_STR(t.merges[2], "a b");
        T_EQ_STR(t.merges[3], "b c");
    }
    T_NEAR(t.scores[6], -0.5, 0);
    T_EQ_INT(t.token_types[0], CLARA_TOKTYPE_UNKNOWN);
    T_EQ_INT(t.token_types[1], CLARA_TOKTYPE_NORMAL);
    hf_tokenizer_free(&t);
}

static void test_spm_negative(void) {
    clara_hf_tokenizer t;
    size_t len;
    char *model = slurp(DATA "tokenizer.model", &len);
    if (!model) return;
    const uint8_t *m = (const uint8_t *)model;
    /* truncations inside the pieces, and one byte short of the end */
    size_t cuts[] = {1, 2, 3, 17, 100, len / 2, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        clara_status s = hf_tokenizer_parse_spm(m, cuts[i], "t.json", &t);
        const char *msg = clara_last_error();
        T_CHECK_MSG(s == CLARA_ERR_FORMAT && (strstr(msg, "truncated") || strstr(msg, "runs past")),
                    "cut %zu: %s", cuts[i], msg);
        T_CHECK(t.n_vocab == 0 && t.tokens == NULL);
    }
    expect_fail(hf_tokenizer_parse_spm(m, len - 1, "t.json", &t), "runs past the end");
    expect_fail(hf_tokenizer_parse_spm(m, 0, "t.json", &t), "empty file");
    free(model);

    static const uint8_t long_varint[] = {0x50, 0xff, 0xff, 0xff, 0xff, 0xff,
                                          0xff, 0xff, 0xff, 0xff, 0x7f};
    expect_fail(hf_tokenizer_parse_spm(long_varint, sizeof long_varint, "t.json", &t),
                "varint longer than 64 bits");
    static const uint8_t group[] = {0x0b, 0x0c};
    expect_fail(hf_tokenizer_parse_spm(group, sizeof group, "t.json", &t), "group (wire type 3)");
    static const uint8_t wire7[] = {0x0f};
    expect_fail(hf_tokenizer_parse_spm(wire7, sizeof wire7, "t.json", &t), "invalid wire type 7");
    static const uint8_t field0[] = {0x00};
    expect_fail(hf_tokenizer_parse_spm(field0, sizeof field0, "t.json", &t),
                "invalid field number");
    static const uint8_t piece_past_end[] = {0x0a, 0x03, 0x0a, 0x10, 'a'};
    expect_fail(hf_tokenizer_parse_spm(piece_past_end, sizeof piece_past_end, "t.json", &t),
                "length 16 at byte 4 runs past the end");
    static const uint8_t wrong_wire[] = {0x0a, 0x05, 0x0a, 0x01, 'a', 0x10, 0x01};
    expect_fail(hf_tokenizer_parse_spm(wrong_wire, sizeof wrong_wire, "t.json", &t),
                "SentencePiece field 2 has wire type 0, expected 5");

    pb p = {.n = 0};
    pb_piece(&p, "<unk>", 0, 2);
    pb_piece(&p, "a", -1, 0);
    pb_piece(&p, "</s>", 0, 3); /* eos_id defaults to 2 */
    pb q = p;
    pb_trainer(&q, 1, 0, -1);
    expect_fail(spm_case(&q, &t), "model_type UNIGRAM is not supported");
    q = p;
    pb_trainer(&q, 2, 7, -1);
    expect_fail(spm_case(&q, &t), "trainer_spec.unk_id 7 is not a piece id");
    q = p;
    pb_trainer(&q, 2, 0, 5000000000ll);
    expect_fail(spm_case(&q, &t), "is not an int32");
    q = p;
    pb_piece(&q, "a", -2, 0);
    pb_trainer(&q, 2, 0, -1);
    expect_fail(spm_case(&q, &t), "piece 'a' appears twice (ids 1, 3)");
    q = p;
    pb_piece(&q, "b", -2, 9);
    expect_fail(spm_case(&q, &t), "piece 3 has unknown type 9");
    q = p;
    pb_piece(&q, "b", NAN, 0);
    expect_fail(spm_case(&q, &t), "piece 3 has a NaN score");
    q = p;
    pb_piece(&q, "", -2, 0);
    expect_fail(spm_case(&q, &t), "piece 3 is empty");
    q = p;
    pb_trainer(&q, 2, 0, -1);
    pb_bytes(&q, 3, "\x0a\x08nmt_nfkc", 10);
    expect_fail(spm_case(&q, &t), "normalizer_spec.name 'nmt_nfkc' is not supported");
    q = p;
    pb_trainer(&q, 2, 0, -1);
    T_EQ_INT(spm_case(&q, &t), CLARA_OK); /* the base of these cases is itself fine */
    hf_tokenizer_free(&t);
}

static void test_config_negative(void) {
    clara_hf_tokenizer t;
    T_EQ_INT(parse_file_json(DATA "tokenizer.json", &t), CLARA_OK);
    const char *cases[][2] = {
        {"{\"chat_template\": 5}", "chat_template is neither a string nor a list"},
        {"{\"chat_template\": [{\"name\": \"default\"}]}", "chat_template[0] needs a name"},
        {"{\"bos_token\": 5}", "bos_token is neither a string nor a token object"},
        {"{\"add_bos_token\": \"yes\"}", "add_bos_token is not a boolean"},
        {"{\"eos_token\": \"<eos>\"}", "eos_token '<eos>' is not in the vocabulary"},
        {"[]", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_fail(hf_tokenizer_parse_config(cases[i][0], strlen(cases[i][0]), "t.json", &t),
                    cases[i][1]);
    T_EQ_INT(t.n_vocab, 1000); /* still intact */
    T_CHECK(t.eos_token == NULL && t.eos_id == 2);
    hf_tokenizer_free(&t);
}

int main(void) {
    T_RUN(test_spm_matches_sentencepiece);
    T_RUN(test_json_legacy);
    T_RUN(test_json_metaspace);
    T_RUN(test_json_clara_added);
    T_RUN(test_config);
    T_RUN(test_load_dir);
    T_RUN(test_json_small_valid);
    T_RUN(test_json_negative);
    T_RUN(test_spm_small_valid);
    T_RUN(test_spm_negative);
    T_RUN(test_config_negative);
    return t_report("test_hf_tokenizer");
}
