/* test_jsonscan.c - the JSON pre-scanner (base/json_scan.h) on hand-made texts: what it accepts
 * (and that cJSON builds a tree of exactly the values and depth it counted), where it stops on
 * each kind of syntax error, and its limits on texts built to amplify a tree parser (1e6-element
 * arrays, deep nesting), with the server's own limits on the largest valid request. */
#include <cJSON.h>

#include "../../server/server.h"
#include "base/json_scan.h"
#include "t.h"

#define NO_LIMIT ((size_t)-1)

static clara_json_scan_result scan(const char *s, size_t max_values, size_t max_depth) {
    clara_json_scan_result r;
    clara_json_verdict v = clara_json_scan(s, strlen(s), max_values, max_depth, &r);
    T_CHECK(v == r.verdict);
    return r;
}

static size_t tree_values(const cJSON *j, size_t level, size_t *deepest) {
    bool container = cJSON_IsArray(j) || cJSON_IsObject(j);
    if (container && level + 1 > *deepest) *deepest = level + 1;
    size_t n = 1;
    for (const cJSON *c = container ? j->child : NULL; c; c = c->next)
        n += tree_values(c, level + 1, deepest);
    return n;
}

/* Accepted with these counts, and cJSON agrees on both. */
static void accepts(const char *s, size_t values, size_t depth, char root) {
    clara_json_scan_result r = scan(s, NO_LIMIT, CLARA_JSON_DEPTH_CAP);
    T_CHECK_MSG(r.verdict == CLARA_JSON_OK, "%.60s: verdict %d at %zu", s, r.verdict, r.offset);
    T_CHECK_MSG(r.values == values && r.depth == depth && r.root == root,
                "%.60s: %zu values, depth %zu, root %c", s, r.values, r.depth, r.root);
    T_EQ_INT(r.offset, strlen(s));
    cJSON *j = cJSON_ParseWithLength(s, strlen(s));
    T_CHECK_MSG(j != NULL, "cJSON refuses %.60s", s);
    size_t deepest = 0;
    if (j) T_EQ_INT(tree_values(j, 0, &deepest), values);
    if (j) T_EQ_INT(deepest, depth);
    cJSON_Delete(j);
}

static void refuses(const char *s, size_t offset) {
    clara_json_scan_result r = scan(s, NO_LIMIT, CLARA_JSON_DEPTH_CAP);
    T_CHECK_MSG(r.verdict == CLARA_JSON_SYNTAX && r.offset == offset,
                "%.60s: verdict %d at %zu, want a syntax error at %zu", s, r.verdict, r.offset,
                offset);
}

static void test_accepts(void) {
    accepts("{}", 1, 1, '{');
    accepts("[]", 1, 1, '[');
    accepts(" \t\r\n\"a\" \n", 1, 0, '"');
    accepts("0", 1, 0, '0');
    accepts("-0.5e+10", 1, 0, '-');
    accepts("1E-7", 1, 0, '1');
    accepts("true", 1, 0, 't');
    accepts("false", 1, 0, 'f');
    accepts("null", 1, 0, 'n');
    accepts("{\"a\" : [1, 2, {\"b\": null}], \"c\": {}}", 7, 3, '{');
    accepts("[[[[]]], [[]], []]", 7, 4, '[');
    accepts("{\"a\":1,\"a\":2}", 3, 1, '{'); /* duplicate keys: two values for cJSON too */
    accepts("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uD83D\\uDE00\"", 1, 0, '"');
    accepts("\"caf\xc3\xa9 \xe6\x97\xa5\"", 1, 0, '"');
    accepts("\xEF\xBB\xBF {\"bom\": true}", 2, 1, '{');
    accepts("123456789012345678901234567890123456789012345678901234567890123", 1, 0, '1');
}

static void test_syntax_errors(void) {
    refuses("", 0);
    refuses(" \n ", 3);
    refuses("{", 1);
    refuses("{\"a\":1,}", 7);
    refuses("[1,]", 3);
    refuses("[1,2", 4);
    refuses("[1 2]", 3);
    refuses("{\"a\" 1}", 5);
    refuses("{1:2}", 1);
    refuses("{'a':1}", 1);
    refuses("{\"a\":1} x", 8);
    refuses("{\"a\":1}{\"b\":2}", 7);
    refuses("01", 1);
    refuses("1.", 2);
    refuses(".5", 0);
    refuses("+1", 0);
    refuses("1e", 2);
    refuses("1e+", 3);
    refuses("-", 1);
    refuses("0x1F", 1);
    refuses("NaN", 0);
    refuses("tru", 0);
    refuses("nulL", 0);
    refuses("\"abc", 4);
    refuses("\"a\x01\"", 2);    /* raw control character (cJSON would take it) */
    refuses("\"a\tb\"", 2);     /* raw tab inside a string */
    refuses("\"\\x\"", 2);      /* unknown escape */
    refuses("\"\\u12G4\"", 5);  /* bad hex digit */
    refuses("\"\\ud800\"", 1);  /* lone high surrogate */
    refuses("\"\\udc00x\"", 1); /* lone low surrogate */
    refuses("\"\\ud800\\u0041\"", 1);
    refuses("\"\\ud800\\", 1);
    refuses("\f{}", 0); /* form feed is not JSON whitespace (cJSON skips it) */
    refuses("1234567890123456789012345678901234567890123456789012345678901234", 63);
    refuses("[\"a\\", 4);           /* a backslash at the very end */
    refuses("\xEF\xBB\xBF\x33", 0); /* cJSON skips the mark only before 2 or more bytes */
}

/* A text of prefix, count copies of unit (the last without its trailing comma) and suffix. */
static char *repeat(const char *prefix, const char *unit, size_t count, const char *suffix) {
    size_t pl = strlen(prefix), ul = strlen(unit), sl = strlen(suffix);
    char *s = malloc(pl + ul * count + sl + 1), *p = s;
    if (!s) return NULL;
    memcpy(p, prefix, pl), p += pl;
    for (size_t i = 0; i < count; i++, p += ul) memcpy(p, unit, ul);
    if (count && unit[ul - 1] == ',') p--;
    memcpy(p, suffix, sl + 1);
    return s;
}

/* A million-element array is refused at the element past the limit, having looked at no more of
 * the text than that; without a limit it is accepted whole. */
static void amplifier(const char *unit, size_t elem_bytes) {
    char *s = repeat("{\"memories\":[", unit, 1000000, "]}");
    if (!s) return;
    clara_json_scan_result r = scan(s, SRV_JSON_MAX_VALUES, SRV_JSON_MAX_DEPTH);
    T_CHECK_MSG(r.verdict == CLARA_JSON_TOO_MANY, "%s: verdict %d", unit, r.verdict);
    T_EQ_INT(r.values, SRV_JSON_MAX_VALUES);
    /* root object + array = 2 values, so element number 4094 (0-based) is the first extra */
    T_EQ_INT(r.offset, 13 + (SRV_JSON_MAX_VALUES - 2) * elem_bytes);
    r = scan(s, NO_LIMIT, CLARA_JSON_DEPTH_CAP);
    T_CHECK(r.verdict == CLARA_JSON_OK && r.values == 1000002);
    free(s);
}

static void test_amplifiers(void) {
    amplifier("1,", 2);
    amplifier("\"\",", 3);
    amplifier("{},", 3);
    amplifier("[],", 3);
    amplifier("\"abc\\u00e9\",", 12);
}

static void test_depth(void) {
    char *s = repeat("", "[", 1000000, "");
    if (!s) return;
    clara_json_scan_result r = scan(s, SRV_JSON_MAX_VALUES, SRV_JSON_MAX_DEPTH);
    T_CHECK(r.verdict == CLARA_JSON_TOO_DEEP && r.offset == SRV_JSON_MAX_DEPTH &&
            r.depth == SRV_JSON_MAX_DEPTH && r.values == SRV_JSON_MAX_DEPTH);
    r = scan(s, NO_LIMIT, (size_t)-1); /* clamped to the cap */
    T_CHECK(r.verdict == CLARA_JSON_TOO_DEEP && r.offset == CLARA_JSON_DEPTH_CAP);
    free(s);
    /* exactly at the limit is fine, one more is not; objects count like arrays */
    char buf[200] = "";
    for (int i = 0; i < SRV_JSON_MAX_DEPTH - 1; i++) strcat(buf, "{\"a\":");
    strcat(buf, "[]");
    for (int i = 0; i < SRV_JSON_MAX_DEPTH - 1; i++) strcat(buf, "}");
    r = scan(buf, SRV_JSON_MAX_VALUES, SRV_JSON_MAX_DEPTH);
    T_CHECK(r.verdict == CLARA_JSON_OK && r.depth == SRV_JSON_MAX_DEPTH);
    char deeper[220] = "[";
    strcat(deeper, buf);
    strcat(deeper, "]");
    r = scan(deeper, SRV_JSON_MAX_VALUES, SRV_JSON_MAX_DEPTH);
    T_CHECK(r.verdict == CLARA_JSON_TOO_DEEP && r.offset == 1 + 5 * (SRV_JSON_MAX_DEPTH - 1));
    /* a scalar needs no depth; a container needs one level */
    T_CHECK(scan("7", 1, 0).verdict == CLARA_JSON_OK);
    T_CHECK(scan("[]", 1, 0).verdict == CLARA_JSON_TOO_DEEP);
    T_CHECK(scan("[7]", 1, 1).verdict == CLARA_JSON_TOO_MANY);
    T_CHECK(scan("[7]", 2, 1).verdict == CLARA_JSON_OK);
}

/* The largest requests the server takes (a body of up to --max-body's default) are within its
 * limits. */
static void test_maximal_requests(void) {
    char doc[4000];
    memset(doc, 'x', sizeof doc);
    memcpy(doc, "\"Paris \\u00e9 \\n", 16);
    doc[sizeof doc - 2] = '"', doc[sizeof doc - 1] = ',';
    char unit[sizeof doc + 1];
    memcpy(unit, doc, sizeof doc), unit[sizeof doc] = '\0';
    char *s = repeat("{\"memories\": [", unit, SRV_MAX_MEMORIES,
                     "], \"query\": \"Where?\", \"max_new_tokens\": 512, \"keep_alive\": -1, "
                     "\"top_k\": 3, \"dtype\": \"f16\", \"unknown\": {\"x\": [1, 2, [true]]}}");
    if (!s) return;
    clara_json_scan_result r = scan(s, SRV_JSON_MAX_VALUES, SRV_JSON_MAX_DEPTH);
    T_CHECK_MSG(r.verdict == CLARA_JSON_OK && r.values == 1 + 1 + SRV_MAX_MEMORIES + 5 + 6,
                "verdict %d at %zu, %zu values", r.verdict, r.offset, r.values);
    T_CHECK(strlen(s) > 4000000 && strlen(s) <= SRV_DEFAULT_MAX_BODY);
    free(s);
    const char *vec = "{\"query\": \"q\", \"vectors\": {\"dtype\": \"f32\", \"shape\": [1024, 16, "
                      "4096], \"data\": \"AAAA\"}, \"max_new_tokens\": 1}";
    r = scan(vec, SRV_JSON_MAX_VALUES, SRV_JSON_MAX_DEPTH);
    T_CHECK(r.verdict == CLARA_JSON_OK && r.values == 10 && r.depth == 3);
}

int main(void) {
    T_RUN(test_accepts);
    T_RUN(test_syntax_errors);
    T_RUN(test_amplifiers);
    T_RUN(test_depth);
    T_RUN(test_maximal_requests);
    return t_report("test_jsonscan");
}
