/* cache.c - the model cache's layout, its manifests, `clara list` / `clara rm`, the per-model
 * lock, and name resolution. Layout (docs/PULL.md):
 *   CACHE/models--OWNER--REPO--SUB/            a complete model: manifest.json + its GGUF file(s)
 *   CACHE/.pull/models--OWNER--REPO--SUB.lock  held by the pull of that model (flock)
 *   CACHE/.pull/models--OWNER--REPO--SUB/      that pull's downloads (NAME.part while partial)
 *                                              and the model being built (new/)
 * A model directory appears (one rename) only once its files loaded; its manifest is inside. */
#define _GNU_SOURCE /* renameat2 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/status.h"
#include "hub/hub_internal.h"

char *hub_cache_dir(void) {
    const char *d = getenv("CLARA_CACHE_DIR");
    char buf[4096];
    if (d && *d)
        snprintf(buf, sizeof buf, "%s", d);
    else if (getenv("XDG_CACHE_HOME") && *getenv("XDG_CACHE_HOME"))
        snprintf(buf, sizeof buf, "%s/clara-server", getenv("XDG_CACHE_HOME"));
    else if (getenv("HOME") && *getenv("HOME"))
        snprintf(buf, sizeof buf, "%s/.cache/clara-server", getenv("HOME"));
    else
        return NULL;
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = '\0';
    return strdup(buf);
}

static bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

/* One segment of a name: name characters, not starting with '.' or '-'; returns its length. */
static size_t segment(const char *s) {
    size_t n = 0;
    if (!name_char(s[0]) || s[0] == '.' || s[0] == '-') return 0;
    while (name_char(s[n])) n++;
    return n;
}

bool hub_is_model_name(const char *s) {
    size_t a = segment(s);
    if (!a || s[a] != '/') return false;
    const char *r = s + a + 1;
    size_t b = segment(r);
    if (!b) return false;
    const char *rest = r + b;
    size_t len = strlen(s);
    if (len > 5 && strcmp(s + len - 5, ".gguf") == 0) return false; /* a file name */
    if (*rest == '\0') return true;
    return *rest == ':' && segment(rest + 1) && rest[1 + segment(rest + 1)] == '\0';
}

clara_status hub_parse_name(const char *name, const char *default_sub, char repo[160],
                            char sub[96]) {
    if (!hub_is_model_name(name))
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "'%s' is not a model name: use OWNER/REPO or OWNER/REPO:SUBFOLDER, "
                          "e.g. apple/CLaRa-7B-Instruct:compression-16",
                          name);
    const char *colon = strchr(name, ':');
    size_t rl = colon ? (size_t)(colon - name) : strlen(name);
    if (rl >= 160 || (colon && strlen(colon + 1) >= 96))
        return clara_fail(CLARA_ERR_INVALID_ARG, "model name '%s' is too long", name);
    memcpy(repo, name, rl);
    repo[rl] = '\0';
    snprintf(sub, 96, "%s", colon ? colon + 1 : default_sub ? default_sub : HUB_DEFAULT_SUBFOLDER);
    if (!segment(sub) || sub[segment(sub)] != '\0')
        return clara_fail(CLARA_ERR_INVALID_ARG, "sub-folder '%s' is not a folder name", sub);
    return CLARA_OK;
}

void hub_entry_dirname(const char *repo, const char *sub, char *out, size_t len) {
    size_t o = (size_t)snprintf(out, len, "models--");
    for (const char *p = repo; *p && o + 3 < len; p++) {
        if (*p == '/') {
            out[o++] = '-';
            out[o++] = '-';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    snprintf(out + o, len - o, "--%s", sub);
}

clara_status hub_mkdirs(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return clara_fail(CLARA_ERR_INVALID_ARG, "path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return clara_fail(CLARA_ERR_IO, "%s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return clara_fail(CLARA_ERR_IO, "%s: %s", buf, strerror(errno));
    return CLARA_OK;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)ftw;
    int rc = flag == FTW_DP ? rmdir(path) : unlink(path);
    return rc != 0 && errno != ENOENT ? -1 : 0;
}

clara_status hub_rmtree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return CLARA_OK;
    if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return clara_fail(CLARA_ERR_IO, "removing %s: %s", path, strerror(errno));
    return CLARA_OK;
}

static const char *jstr(const cJSON *j, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* DIR/NAME when NAME is a plain file name (a manifest never points outside its directory). */
static char *entry_file(const char *dir, const char *name) {
    if (!name || !*name || strchr(name, '/') || strcmp(name, "..") == 0) return NULL;
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

clara_status hub_manifest_read(const char *dir, hub_entry *e) {
    memset(e, 0, sizeof *e);
    char path[4200];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return clara_fail(CLARA_ERR_NOT_FOUND, "%s: %s", path, strerror(errno));
    char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    const char *name = j ? jstr(j, "name") : NULL, *model = j ? jstr(j, "model") : NULL;
    if (!name || !model) {
        cJSON_Delete(j);
        return clara_fail(CLARA_ERR_FORMAT, "%s: not a clara model manifest", path);
    }
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->route, sizeof e->route, "%s", jstr(j, "route") ? jstr(j, "route") : "?");
    snprintf(e->type, sizeof e->type, "%s", jstr(j, "type") ? jstr(j, "type") : "?");
    snprintf(e->revision, sizeof e->revision, "%s", jstr(j, "revision") ? jstr(j, "revision") : "");
    snprintf(e->pulled_at, sizeof e->pulled_at, "%s",
             jstr(j, "pulled_at") ? jstr(j, "pulled_at") : "");
    e->model_path = entry_file(dir, model);
    if (jstr(j, "base")) e->base_path = entry_file(dir, jstr(j, "base"));
    bool bad = !e->model_path || (jstr(j, "base") && !e->base_path);
    cJSON_Delete(j);
    if (bad) {
        hub_entry_free(e);
        return clara_fail(CLARA_ERR_FORMAT, "%s: bad file names", path);
    }
    struct stat st;
    if (stat(e->model_path, &st) == 0) e->bytes += (uint64_t)st.st_size;
    if (e->base_path && stat(e->base_path, &st) == 0) e->bytes += (uint64_t)st.st_size;
    return CLARA_OK;
}

void hub_entry_free(hub_entry *e) {
    free(e->model_path);
    free(e->base_path);
    e->model_path = e->base_path = NULL;
}

void hub_entries_free(hub_entry *e, size_t n) {
    for (size_t i = 0; i < n; i++) hub_entry_free(&e[i]);
    free(e);
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const hub_entry *)a)->name, ((const hub_entry *)b)->name);
}

clara_status hub_list(hub_entry **out, size_t *n) {
    *out = NULL;
    *n = 0;
    char *cache = hub_cache_dir();
    if (!cache) return clara_fail(CLARA_ERR_INVALID_ARG, "set CLARA_CACHE_DIR (no HOME)");
    DIR *d = opendir(cache);
    if (!d) {
        free(cache);
        return CLARA_OK; /* no cache yet: nothing pulled */
    }
    size_t cap = 0;
    struct dirent *de;
    clara_status s = CLARA_OK;
    while (s == CLARA_OK && (de = readdir(d))) {
        if (strncmp(de->d_name, "models--", 8) != 0) continue;
        char dir[4400];
        snprintf(dir, sizeof dir, "%s/%s", cache, de->d_name);
        hub_entry e;
        if (hub_manifest_read(dir, &e) != CLARA_OK) continue; /* not a model directory */
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            hub_entry *v = realloc(*out, cap * sizeof *v);
            if (!v) {
                hub_entry_free(&e);
                s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
                break;
            }
            *out = v;
        }
        (*out)[(*n)++] = e;
    }
    closedir(d);
    free(cache);
    if (s != CLARA_OK) {
        hub_entries_free(*out, *n);
        *out = NULL, *n = 0;
        return s;
    }
    if (*n) qsort(*out, *n, sizeof **out, by_name);
    return CLARA_OK;
}

clara_status hub_lock(const char *cache, const char *dirname, FILE *log, atomic_int *cancel,
                      int *fd) {
    char path[4400];
    snprintf(path, sizeof path, "%s/.pull", cache);
    clara_status s = hub_mkdirs(path);
    if (s != CLARA_OK) return s;
    snprintf(path, sizeof path, "%s/.pull/%s.lock", cache, dirname);
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (*fd < 0) return clara_fail(CLARA_ERR_IO, "%s: %s", path, strerror(errno));
    bool said = false;
    /* polled, so that Ctrl-C stops the wait */
    while (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e != EWOULDBLOCK && e != EINTR) {
            close(*fd);
            return clara_fail(CLARA_ERR_IO, "%s: %s", path, strerror(e));
        }
        if (cancel && atomic_load(cancel)) {
            close(*fd);
            return clara_fail(CLARA_ERR_CANCELLED, "cancelled");
        }
        if (!said && log) {
            fprintf(log, "clara: another pull of this model is running; waiting for it\n");
            fflush(log);
        }
        said = true;
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return CLARA_OK;
}

void hub_unlock(int fd) {
    if (fd >= 0) {
        flock(fd, LOCK_UN);
        close(fd);
    }
}

/* Where a name's model lives in the cache: its repository and sub-folder, the cache directory
 * (malloc'd) and the entry's directory name in it. */
typedef struct {
    char repo[160], sub[96], dirname[300];
    char *cache;
} entry_place;

static clara_status place_of(const char *name, const char *default_sub, entry_place *p) {
    p->cache = NULL;
    clara_status s = hub_parse_name(name, default_sub, p->repo, p->sub);
    if (s != CLARA_OK) return s;
    if (!(p->cache = hub_cache_dir()))
        return clara_fail(CLARA_ERR_INVALID_ARG, "set CLARA_CACHE_DIR (no HOME)");
    hub_entry_dirname(p->repo, p->sub, p->dirname, sizeof p->dirname);
    return CLARA_OK;
}

/* The entry directory of a name, if it holds a manifest. */
static clara_status find_entry(const char *name, const char *default_sub, hub_entry *e) {
    entry_place pl;
    clara_status s = place_of(name, default_sub, &pl);
    if (s != CLARA_OK) return s;
    const char *repo = pl.repo, *sub = pl.sub, *cache = pl.cache;
    char dir[4400];
    snprintf(dir, sizeof dir, "%s/%s", cache, pl.dirname);
    s = hub_manifest_read(dir, e);
    if (s == CLARA_ERR_NOT_FOUND)
        s = clara_fail(CLARA_ERR_NOT_FOUND,
                       "model %s:%s is not in the cache (%s): run `clara pull %s:%s` first", repo,
                       sub, cache, repo, sub);
    free(pl.cache);
    return s;
}

clara_status hub_resolve(const char *name_or_path, const char *default_subfolder, char **model,
                         char **base) {
    *model = *base = NULL;
    struct stat st;
    if (stat(name_or_path, &st) == 0 || !hub_is_model_name(name_or_path)) {
        *model = strdup(name_or_path); /* a path (the loader reports what is wrong with it) */
        return *model ? CLARA_OK : clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    hub_entry e;
    clara_status s = find_entry(name_or_path, default_subfolder, &e);
    if (s != CLARA_OK) return s;
    *model = e.model_path;
    *base = e.base_path;
    return CLARA_OK;
}

clara_status hub_rm(const char *name, const char *default_sub) {
    entry_place pl;
    clara_status s = place_of(name, default_sub, &pl);
    if (s != CLARA_OK) return s;
    const char *repo = pl.repo, *sub = pl.sub, *dirname = pl.dirname;
    char *cache = pl.cache;
    char dir[4400], work[4400], lock[4400];
    snprintf(dir, sizeof dir, "%s/%s", cache, dirname);
    snprintf(work, sizeof work, "%s/.pull/%s", cache, dirname);
    snprintf(lock, sizeof lock, "%s/.pull/%s.lock", cache, dirname);
    free(cache);
    struct stat st;
    bool have = stat(dir, &st) == 0 || stat(work, &st) == 0;
    if (!have) return clara_fail(CLARA_ERR_NOT_FOUND, "model %s:%s is not in the cache", repo, sub);
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "a pull of %s:%s is running: stop it first (Ctrl-C), then remove", repo,
                          sub);
    }
    s = hub_rmtree(dir);
    if (s == CLARA_OK) s = hub_rmtree(work);
    if (s == CLARA_OK) unlink(lock);
    hub_unlock(fd);
    return s;
}
