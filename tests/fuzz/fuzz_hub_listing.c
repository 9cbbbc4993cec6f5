/* fuzz_hub_listing.c - libFuzzer target for the Hub's revision listing as `clara pull` reads it
 * (hub_repo_files, hub/repo.c): the JSON that GET /api/models/{repo}/revision/{rev}?blobs=true
 * answers, which names the commit and the files to download, i.e. the paths written under the
 * downloads folder. hub_get is replaced by one that answers the input (the rest of the input after
 * its first byte, which picks the sub-folder prefix and whether the base filter is used), so the
 * whole reader runs as in a pull. Checked, against cJSON's reading of the same text:
 *   - an accepted listing gives the JSON's commit, and both the commit and every file path are
 *     safe to join as pull.c does (DOWNLOADS/COMMIT/OWNER/REPO/PATH): the commit a git commit id
 *     (40 lowercase hex digits), a path relative, without empty, "." or ".." segments or control
 *     characters, so that nothing lands outside DOWNLOADS/COMMIT/OWNER/REPO, and no path twice
 *     (two downloads would share one temporary file);
 *   - exactly the siblings the prefix and filter keep are listed, in order, each with the JSON's
 *     size (lfs.size first) within [0, 1e15] and a sha256 that is "" or 64 lowercase hex digits;
 *   - a second repository's listing appends to the first (the base after the CLaRa folder in a
 *     pull). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "base/status.h"
#include "hub/hub_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

static const char *g_body;
static size_t g_len;

/* The Hub's answer is the fuzz input (NUL-terminated, as hub_get's buffer is). */
clara_status hub_get(const hub_client *c, const char *url, const char *repo, const char *path,
                     size_t max, char **body, hub_response *r) {
    (void)c, (void)url, (void)repo, (void)path;
    memset(r, 0, sizeof *r);
    r->status = 200;
    if (g_len > max) return clara_fail(CLARA_ERR_FORMAT, "answer too long");
    *body = malloc(g_len + 1);
    if (!*body) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    memcpy(*body, g_body, g_len);
    (*body)[g_len] = '\0';
    return CLARA_OK;
}

/* pull.c's filter of a base repository's files (keep_base). */
static bool keep_base(const char *path) {
    static const char *const names[] = {"config.json", "tokenizer.json", "tokenizer.model",
                                        "tokenizer_config.json", "model.safetensors.index.json"};
    if (strchr(path, '/')) return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(path, names[i]) == 0) return true;
    size_t n = strlen(path);
    return strncmp(path, "model", 5) == 0 && n > 12 && strcmp(path + n - 12, ".safetensors") == 0;
}

/* One path segment pull.c may join: non-empty, not "." or "..", no '/' or control characters. */
static bool safe_segment(const char *s, size_t n) {
    if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '/' || (unsigned char)s[i] < 0x20) return false;
    return true;
}

static bool safe_relative_path(const char *p) {
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (!safe_segment(p, n)) return false;
        if (!slash) return true;
        p = slash + 1;
    }
}

static bool lower_hex(const char *s, size_t n) {
    if (strlen(s) != n) return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))) return false;
    return true;
}

static bool kept(const char *p, const char *prefix, bool (*keep)(const char *)) {
    size_t pl = prefix ? strlen(prefix) : 0;
    if (pl && (strncmp(p, prefix, pl) != 0 || (p[pl] != '/' && p[pl] != '\0'))) return false;
    return !keep || keep(p);
}

/* The listing as cJSON reads it agrees with files[from..]. */
static void agrees(const cJSON *j, const char *commit, const hub_files *f, size_t from,
                   const char *repo, const char *prefix, bool (*keep)(const char *)) {
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(j, "sha");
    CHECK(cJSON_IsString(sha) && strcmp(sha->valuestring, commit) == 0);
    CHECK(lower_hex(commit, 40) && safe_segment(commit, strlen(commit)));
    const cJSON *sib = cJSON_GetObjectItemCaseSensitive(j, "siblings"), *it;
    size_t i = from;
    cJSON_ArrayForEach(it, sib) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "rfilename");
        CHECK(cJSON_IsString(name));
        if (!kept(name->valuestring, prefix, keep)) continue;
        CHECK(i < f->n);
        const hub_file *e = &f->v[i++];
        CHECK(strcmp(e->path, name->valuestring) == 0 && strcmp(e->repo, repo) == 0);
        for (size_t k = from; k + 1 < i; k++) CHECK(strcmp(f->v[k].path, e->path) != 0);
        CHECK(safe_relative_path(e->path) && !e->local);
        const cJSON *lfs = cJSON_GetObjectItemCaseSensitive(it, "lfs");
        const cJSON *size = cJSON_GetObjectItemCaseSensitive(lfs, "size");
        if (!cJSON_IsNumber(size)) size = cJSON_GetObjectItemCaseSensitive(it, "size");
        CHECK(cJSON_IsNumber(size) && size->valuedouble >= 0 && size->valuedouble <= 1e15);
        CHECK(e->size == (uint64_t)size->valuedouble);
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(lfs, "sha256");
        CHECK(h ? cJSON_IsString(h) && strcmp(h->valuestring, e->sha256) == 0 &&
                      lower_hex(e->sha256, 64)
                : e->sha256[0] == '\0');
    }
    CHECK(i == f->n && f->n > from);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const prefixes[] = {NULL, "", "compression-16", "model.safetensors"};
    if (size < 1) return 0;
    const char *prefix = prefixes[data[0] & 3];
    bool (*keep)(const char *) = data[0] & 4 ? keep_base : NULL;
    g_body = (const char *)data + 1;
    g_len = size - 1;

    hub_client c = {.endpoint = "https://huggingface.co", .attempts = 1};
    hub_files f = {0};
    char commit[64];
    memset(commit, 0x55, sizeof commit);
    clara_status s = hub_repo_files(&c, "owner/repo", "main", prefix, keep, &f, commit);
    if (s == CLARA_OK) {
        /* cJSON_Parse stops at the first NUL, as hub_repo_files' call does */
        char *z = strndup(g_body, g_len);
        cJSON *j = z ? cJSON_Parse(z) : NULL;
        CHECK(!z || j);
        if (j) agrees(j, commit, &f, 0, "owner/repo", prefix, keep);
        /* a second repository's listing is appended after the first */
        size_t first = f.n;
        char commit2[64];
        CHECK(hub_repo_files(&c, "owner/base", "main", prefix, keep, &f, commit2) == CLARA_OK);
        CHECK(f.n == 2 * first && strcmp(commit, commit2) == 0);
        if (j) agrees(j, commit2, &f, first, "owner/base", prefix, keep);
        cJSON_Delete(j);
        free(z);
    } else {
        CHECK(clara_last_error()[0] != '\0');
    }
    hub_files_free(&f);
    return 0;
}
