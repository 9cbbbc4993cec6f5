/* fuzz_jsonscan.c - libFuzzer target for the JSON pre-scanner (base/json_scan.h), checked against
 * itself and against cJSON, which the server runs on what the scanner lets through:
 *   - a text the scanner accepts is one cJSON accepts too, with exactly the values and depth the
 *     scanner counted (so the tree's size is what the limits bound); the scanner may be stricter;
 *   - with limits, the verdict follows from the unlimited scan: OK within them, else TOO_MANY or
 *     TOO_DEEP at or before where the unlimited scan stopped, never a different syntax verdict;
 *   - offsets stay within the text, and OK ends at its end. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "base/json_scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

static size_t tree_values(const cJSON *j, size_t level, size_t *deepest) {
    int container = cJSON_IsArray(j) || cJSON_IsObject(j);
    if (container && level + 1 > *deepest) *deepest = level + 1;
    size_t n = 1;
    for (const cJSON *c = container ? j->child : NULL; c; c = c->next)
        n += tree_values(c, level + 1, deepest);
    return n;
}

/* cJSON (as the server calls it) takes the whole text, and builds the tree the scan described. */
static void agrees_with_cjson(const char *s, size_t n, const clara_json_scan_result *r) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    CHECK(j != NULL);
    while (end < s + n && memchr(" \t\r\n", *end, 4)) end++;
    CHECK(end == s + n);
    size_t deepest = 0;
    CHECK(tree_values(j, 0, &deepest) == r->values);
    CHECK(deepest == r->depth);
    CHECK(cJSON_IsObject(j) == (r->root == '{'));
    cJSON_Delete(j);
}

static void limited_agrees(const char *s, size_t n, const clara_json_scan_result *full,
                           size_t max_values, size_t max_depth) {
    clara_json_scan_result r;
    clara_json_scan(s, n, max_values, max_depth, &r);
    CHECK(r.offset <= n && r.values <= max_values && r.depth <= max_depth);
    bool within =
        full->verdict == CLARA_JSON_OK && full->values <= max_values && full->depth <= max_depth;
    if (within) {
        CHECK(r.verdict == CLARA_JSON_OK && r.values == full->values && r.depth == full->depth);
    } else if (r.verdict == CLARA_JSON_SYNTAX) {
        /* the limits never hid an error the unlimited scan did not see at the same place */
        CHECK(full->verdict == CLARA_JSON_SYNTAX && r.offset == full->offset);
    } else {
        CHECK(r.verdict == CLARA_JSON_TOO_MANY || r.verdict == CLARA_JSON_TOO_DEEP);
        CHECK(r.offset <= full->offset);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* an exact-size copy without a terminator, as the server's body buffer may be */
    char *s = malloc(size ? size : 1);
    if (!s) return 0;
    memcpy(s, data, size);
    clara_json_scan_result full;
    clara_json_scan(s, size, (size_t)-1, CLARA_JSON_DEPTH_CAP, &full);
    CHECK(full.offset <= size);
    CHECK(full.verdict == CLARA_JSON_OK || full.verdict == CLARA_JSON_SYNTAX ||
          full.verdict == CLARA_JSON_TOO_DEEP);
    if (full.verdict == CLARA_JSON_OK) {
        CHECK(full.offset == size && full.values >= 1 && full.root != 0);
        agrees_with_cjson(s, size, &full);
    }
    limited_agrees(s, size, &full, 4096, 16);
    limited_agrees(s, size, &full, 8, 3);
    limited_agrees(s, size, &full, 1, 0);
    free(s);
    return 0;
}
