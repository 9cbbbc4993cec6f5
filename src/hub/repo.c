/* repo.c - a repository's files at a revision, from the Hub's revision API:
 * GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true answers the commit ("sha") and
 * "siblings" with each file's "rfilename", "size" and, for LFS files, "lfs": {"sha256", "size"}. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "hub/hub_internal.h"

#define LISTING_MAX (64u << 20) /* a revision listing of many thousand files stays far below */

void hub_files_free(hub_files *f) {
    for (size_t i = 0; i < f->n; i++) {
        free(f->v[i].repo);
        free(f->v[i].path);
        free(f->v[i].local);
    }
    free(f->v);
    memset(f, 0, sizeof *f);
}

static clara_status add_file(hub_files *f, const char *repo, const char *path, uint64_t size,
                             const char *sha) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        hub_file *v = realloc(f->v, cap * sizeof *v);
        if (!v) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        f->v = v, f->cap = cap;
    }
    hub_file *e = &f->v[f->n];
    memset(e, 0, sizeof *e);
    e->repo = strdup(repo);
    e->path = strdup(path);
    e->size = size;
    if (sha) snprintf(e->sha256, sizeof e->sha256, "%s", sha);
    f->n++;
    if (!e->repo || !e->path) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    return CLARA_OK;
}

static bool is_hex(const char *s, size_t n) {
    if (strlen(s) != n) return false;
    for (; *s; s++)
        if (!strchr("0123456789abcdef", *s)) return false;
    return true;
}

/* A path the cache can hold: relative, no "..", no empty segments (a trailing '/' included), no
 * control characters. */
static bool safe_path(const char *p) {
    for (const char *s = p; *s; s++)
        if ((unsigned char)*s < 0x20) return false;
    for (const char *seg = p;;) {
        const char *end = strchr(seg, '/');
        size_t n = end ? (size_t)(end - seg) : strlen(seg);
        if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        if (!end) return true;
        seg = end + 1;
    }
}

/* Whether f already lists repo's file p: two downloads would share one temporary file. */
static bool listed(const hub_files *f, const char *repo, const char *p) {
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->v[i].path, p) == 0 && strcmp(f->v[i].repo, repo) == 0) return true;
    return false;
}

static clara_status parse_siblings(const cJSON *sib, const char *repo, const char *prefix,
                                   bool (*keep)(const char *), hub_files *out) {
    size_t plen = prefix ? strlen(prefix) : 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, sib) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "rfilename");
        const cJSON *size = cJSON_GetObjectItemCaseSensitive(it, "size");
        const cJSON *lfs = cJSON_GetObjectItemCaseSensitive(it, "lfs");
        if (!cJSON_IsString(name))
            return clara_fail(CLARA_ERR_FORMAT, "%s: a file without a name", repo);
        const char *p = name->valuestring;
        /* prefix: a folder (its files) or one file */
        if (plen && (strncmp(p, prefix, plen) != 0 || (p[plen] != '/' && p[plen] != '\0')))
            continue;
        if (keep && !keep(p)) continue;
        if (!safe_path(p))
            return clara_fail(CLARA_ERR_FORMAT, "%s: unsafe file name '%s'", repo, p);
        if (listed(out, repo, p))
            return clara_fail(CLARA_ERR_FORMAT, "%s: the listing names '%s' twice", repo, p);
        const cJSON *sha = lfs ? cJSON_GetObjectItemCaseSensitive(lfs, "sha256") : NULL;
        const cJSON *lsize = lfs ? cJSON_GetObjectItemCaseSensitive(lfs, "size") : NULL;
        if (cJSON_IsNumber(lsize)) size = lsize;
        if (!cJSON_IsNumber(size) || size->valuedouble < 0 || size->valuedouble > 1e15)
            return clara_fail(CLARA_ERR_FORMAT, "%s: file %s has no size in the listing", repo, p);
        if (sha && (!cJSON_IsString(sha) || !is_hex(sha->valuestring, 64)))
            return clara_fail(CLARA_ERR_FORMAT, "%s: file %s has a malformed sha256", repo, p);
        clara_status s =
            add_file(out, repo, p, (uint64_t)size->valuedouble, sha ? sha->valuestring : NULL);
        if (s != CLARA_OK) return s;
    }
    return CLARA_OK;
}

clara_status hub_repo_files(const hub_client *c, const char *repo, const char *rev,
                            const char *prefix, bool (*keep)(const char *path), hub_files *out,
                            char commit[64]) {
    char url[1024];
    snprintf(url, sizeof url, "%s/api/models/%s/revision/%s?blobs=true", c->endpoint, repo, rev);
    char *body = NULL;
    hub_response r;
    clara_status s = hub_get(c, url, repo, NULL, LISTING_MAX, &body, &r);
    if (s != CLARA_OK) return s;
    cJSON *j = cJSON_Parse(body);
    free(body);
    if (!j) return clara_fail(CLARA_ERR_FORMAT, "%s: the revision listing is not JSON", url);
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(j, "sha");
    const cJSON *sib = cJSON_GetObjectItemCaseSensitive(j, "siblings");
    /* the commit names a folder of the cache: a git commit id (40 hex digits) and nothing else */
    if (!cJSON_IsString(sha) || !is_hex(sha->valuestring, 40) || !cJSON_IsArray(sib)) {
        cJSON_Delete(j);
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: the listing has no commit id (40 hex digits) or no file list", url);
    }
    snprintf(commit, 64, "%s", sha->valuestring);
    size_t before = out->n;
    s = parse_siblings(sib, repo, prefix, keep, out);
    cJSON_Delete(j);
    if (s == CLARA_OK && out->n == before) {
        if (prefix && *prefix)
            return clara_fail(CLARA_ERR_NOT_FOUND,
                              "%s/%s: sub-folder '%s' not found at revision %s (its folders are "
                              "listed at %s/%s/tree/%s)",
                              c->endpoint, repo, prefix, rev, c->endpoint, repo, rev);
        return clara_fail(CLARA_ERR_NOT_FOUND, "%s/%s: no files to download at revision %s",
                          c->endpoint, repo, rev);
    }
    return s;
}
