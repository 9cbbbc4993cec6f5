/* pull.c - `clara pull`: from a model name to a cached, loadable model. The light route (default)
 * downloads the CLaRa sub-folder and a community GGUF of the base model and writes a CLaRa
 * add-on for it (two-file mode); the full route (--full) downloads the base safetensors and
 * converts and quantizes everything into one file. Either way the model is loaded once before it
 * becomes visible in the cache, so the cache never holds a model that fails to load. */
#define _GNU_SOURCE /* renameat2 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "base/status.h"
#include "convert/convert.h"
#include "dtype.h"
#include "hub/hub_internal.h"
#include "quantize.h"

#define MISTRAL_REPO "mistralai/Mistral-7B-Instruct-v0.2"
#define GGUF_REPO    "TheBloke/Mistral-7B-Instruct-v0.2-GGUF"

hub_pull_params hub_pull_default_params(void) {
    hub_pull_params p;
    memset(&p, 0, sizeof p);
    return p;
}

const char *hub_phase_name(hub_phase p) {
    static const char *const names[] = {"resolving", "downloading", "converting", "verifying",
                                        "done"};
    return (unsigned)p <= HUB_PHASE_DONE ? names[p] : "?";
}

/* The community GGUF files of the base model (TheBloke's names), by our type name. */
static const struct {
    const char *type, *suffix;
} g_gguf_types[] = {
    {"q4_0", "Q4_0"},     {"q4_k_m", "Q4_K_M"}, {"q5_0", "Q5_0"},
    {"q5_k_m", "Q5_K_M"}, {"q6_k", "Q6_K"},     {"q8_0", "Q8_0"},
};

/* Bytes of a converted model per byte of bf16 weights, a little above the real figure so the
 * disk check errs on the safe side. */
static double type_ratio(const char *type) {
    static const struct {
        const char *t;
        double r;
    } r[] = {{"f32", 2.0},     {"f16", 1.0},    {"bf16", 1.0},  {"q8_0", 0.56},
             {"q6_k", 0.45},   {"q5_k_m", 0.4}, {"q5_0", 0.38}, {"q5_1", 0.4},
             {"q4_k_m", 0.34}, {"q4_0", 0.32},  {"q4_1", 0.34}};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (strcmp(type, r[i].t) == 0) return r[i].r;
    return 2.0;
}

typedef struct {
    const hub_pull_params *p;
    hub_client c;
    char repo[160], sub[96], dirname[300], name[300];
    const char *type;
    char *cache;
    char work[4400], entry[4400], downloads[4500];
    char base_repo[160], base_file[512]; /* light: the GGUF; full: base_file unused */
    char commit[64], base_commit[64];
    hub_files files; /* CLaRa files first (n_clara), then the base's */
    size_t n_clara;
    uint64_t to_download;
    double started;
} pull_job;

static void say(const pull_job *j, const char *fmt, ...) CLARA_PRINTF(2, 3);
static void say(const pull_job *j, const char *fmt, ...) {
    if (!j->p->log) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("clara: ", j->p->log);
    vfprintf(j->p->log, fmt, ap);
    fputc('\n', j->p->log);
    va_end(ap);
    fflush(j->p->log);
}

static void phase(const pull_job *j, hub_phase ph) {
    if (!j->p->progress) return;
    hub_progress pr;
    memset(&pr, 0, sizeof pr);
    pr.phase = ph;
    pr.eta_s = -1;
    pr.elapsed_s = hub_now() - j->started;
    pr.total = pr.done = j->to_download;
    pr.files_total = pr.files_done = (int)j->files.n;
    j->p->progress(&pr, j->p->progress_arg);
}

static bool is_float_type(const char *t) {
    return strcmp(t, "f32") == 0 || strcmp(t, "f16") == 0 || strcmp(t, "bf16") == 0;
}

/* The route's settings: the type's validity and, for the light route, the base GGUF. */
static clara_status plan(pull_job *j) {
    const hub_pull_params *p = j->p;
    j->type = p->type ? p->type : HUB_DEFAULT_TYPE;
    if (!is_float_type(j->type) && clara_quantize_ftype(j->type) < 0)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "--type '%s' is not one of f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k_m "
                          "q5_k_m q6_k",
                          j->type);
    if (p->full) {
        snprintf(j->base_repo, sizeof j->base_repo, "%s",
                 p->base_repo ? p->base_repo : MISTRAL_REPO);
        return CLARA_OK;
    }
    if (p->base_gguf) {
        const char *slash = strchr(p->base_gguf, '/');
        const char *file = slash ? strchr(slash + 1, '/') : NULL;
        if (!file || (size_t)(file - p->base_gguf) >= sizeof j->base_repo || !file[1])
            return clara_fail(CLARA_ERR_INVALID_ARG, "--base-gguf '%s': give OWNER/REPO/FILE.gguf",
                              p->base_gguf);
        memcpy(j->base_repo, p->base_gguf, (size_t)(file - p->base_gguf));
        j->base_repo[file - p->base_gguf] = '\0';
        snprintf(j->base_file, sizeof j->base_file, "%s", file + 1);
        return CLARA_OK;
    }
    for (size_t i = 0; i < sizeof g_gguf_types / sizeof g_gguf_types[0]; i++) {
        if (strcmp(j->type, g_gguf_types[i].type) != 0) continue;
        snprintf(j->base_repo, sizeof j->base_repo, "%s", GGUF_REPO);
        snprintf(j->base_file, sizeof j->base_file, "mistral-7b-instruct-v0.2.%s.gguf",
                 g_gguf_types[i].suffix);
        return CLARA_OK;
    }
    return clara_fail(CLARA_ERR_UNSUPPORTED,
                      "%s has no %s file (it has q4_0 q4_k_m q5_0 q5_k_m q6_k q8_0): pull with "
                      "--full to convert the base model yourself, or name a GGUF with "
                      "--base-gguf OWNER/REPO/FILE.gguf",
                      GGUF_REPO, j->type);
}

/* The base repository's files the converter reads: configs, the tokenizer, the sharded
 * safetensors (model*.safetensors: not consolidated.safetensors nor the *.bin copies). */
static bool keep_base(const char *path) {
    static const char *const names[] = {"config.json",
                                        "generation_config.json",
                                        "model.safetensors.index.json",
                                        "tokenizer.json",
                                        "tokenizer.model",
                                        "tokenizer_config.json",
                                        "special_tokens_map.json"};
    if (strchr(path, '/')) return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(path, names[i]) == 0) return true;
    size_t n = strlen(path);
    return strncmp(path, "model", 5) == 0 && n > 12 && strcmp(path + n - 12, ".safetensors") == 0;
}

static clara_status set_local(pull_job *j, size_t from, const char *commit) {
    for (size_t i = from; i < j->files.n; i++) {
        hub_file *f = &j->files.v[i];
        size_t n = strlen(j->downloads) + strlen(f->repo) + strlen(commit) + strlen(f->path) + 4;
        f->local = malloc(n);
        if (!f->local) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        /* DOWNLOADS/COMMIT/OWNER/REPO/PATH: the converter names the model after the folders */
        snprintf(f->local, n, "%s/%s/%s/%s", j->downloads, commit, f->repo, f->path);
    }
    return CLARA_OK;
}

/* Asks the Hub for the files of both repositories. */
static clara_status resolve(pull_job *j) {
    const char *rev = "main";
    clara_status s = hub_repo_files(&j->c, j->repo, rev, j->sub, NULL, &j->files, j->commit);
    if (s != CLARA_OK) return s;
    j->n_clara = j->files.n;
    if ((s = set_local(j, 0, j->commit)) != CLARA_OK) return s;
    if (j->p->full)
        s = hub_repo_files(&j->c, j->base_repo, rev, NULL, keep_base, &j->files, j->base_commit);
    else
        s = hub_repo_files(&j->c, j->base_repo, rev, j->base_file, NULL, &j->files, j->base_commit);
    if (s == CLARA_ERR_NOT_FOUND && !j->p->full && strstr(clara_last_error(), "not found at"))
        return clara_fail(CLARA_ERR_NOT_FOUND,
                          "%s/%s: file %s not found: check the name (--base-gguf OWNER/REPO/FILE)",
                          j->c.endpoint, j->base_repo, j->base_file);
    if (s != CLARA_OK) return s;
    return set_local(j, j->n_clara, j->base_commit);
}

static uint64_t file_size_or0(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Refuses before downloading when the downloads plus the conversion would not fit. */
static clara_status check_space(pull_job *j) {
    uint64_t left = 0, clara_bytes = 0, base_bytes = 0;
    for (size_t i = 0; i < j->files.n; i++) {
        hub_file *f = &j->files.v[i];
        char part[4700];
        snprintf(part, sizeof part, "%s.part", f->local);
        uint64_t have = file_size_or0(f->local) == f->size ? f->size : file_size_or0(part);
        if (have > f->size) have = 0;
        left += f->size - have;
        if (i < j->n_clara)
            clara_bytes += f->size;
        else if (strstr(f->path, ".safetensors"))
            base_bytes += f->size;
    }
    j->to_download = 0;
    for (size_t i = 0; i < j->files.n; i++) j->to_download += j->files.v[i].size;
    bool quant = !is_float_type(j->type);
    double r = type_ratio(j->type);
    /* the full route writes a bf16 model first when it quantizes, then the quantized one */
    double convert =
        j->p->full ? (double)base_bytes * ((quant ? 1.0 : 0.0) + r) + (double)clara_bytes * 2.0
                   : (double)clara_bytes * (quant ? 1.0 + r : 2.0);
    uint64_t need = left + (uint64_t)(convert * 1.02) + (64u << 20);
    struct statvfs vs;
    if (statvfs(j->work, &vs) != 0)
        return clara_fail(CLARA_ERR_IO, "%s: %s", j->work, strerror(errno));
    uint64_t avail = (uint64_t)vs.f_bavail * (uint64_t)vs.f_frsize;
    char a[32], b[32], c[32];
    hub_format_bytes(need, a, sizeof a);
    hub_format_bytes(avail, b, sizeof b);
    hub_format_bytes(left, c, sizeof c);
    if (avail < need)
        return clara_fail(CLARA_ERR_NOMEM,
                          "not enough disk space in %s: this pull needs %s (%s to download, the "
                          "rest for the conversion) and %s is free; free some space or point "
                          "CLARA_CACHE_DIR at a larger disk",
                          j->cache, a, c, b);
    say(j, "%zu files, %s to download, %s needed on disk, %s free", j->files.n, c, a, b);
    return CLARA_OK;
}

/* A formatted path (freed by the caller), NULL when out of memory. */
static char *pathf(const char *fmt, ...) CLARA_PRINTF(1, 2);
static char *pathf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *p = NULL;
    if (vasprintf(&p, fmt, ap) < 0) p = NULL;
    va_end(ap);
    return p;
}

/* clara_convert, then clara_quantize_file for a block-type mix (converted to bf16 first: exactly
 * the checkpoint's values), as `clara convert --type` does. */
static clara_status convert_as(const pull_job *j, clara_convert_params *cp, const char *out) {
    bool quant = !is_float_type(j->type);
    cp->type = quant ? CLARA_TYPE_BF16 : (clara_type)clara_type_from_name(j->type);
    char *tmp = pathf("%s.bf16.tmp", out);
    if (!tmp) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    cp->out_path = quant ? tmp : out;
    clara_status s = clara_convert(cp);
    if (s == CLARA_OK && quant) {
        clara_quantize_opts qo = {false, NULL};
        s = clara_quantize_file(tmp, out, j->type, &qo);
    }
    unlink(tmp);
    free(tmp);
    return s;
}

/* Converts into new/: the full route one model.gguf, the light route clara.gguf beside a link
 * to the downloaded base GGUF. */
static clara_status convert(pull_job *j, const char *newdir) {
    clara_convert_params cp = clara_convert_default_params();
    cp.progress = false;
    char *clara_dir = pathf("%s/%s/%s/%s", j->downloads, j->commit, j->repo, j->sub);
    char *base = j->p->full ? pathf("%s/%s/%s", j->downloads, j->base_commit, j->base_repo)
                            : strdup(j->files.v[j->n_clara].local);
    char *out = pathf("%s/%s", newdir, j->p->full ? "model.gguf" : "clara.gguf");
    char *link_to = pathf("%s/base.gguf", newdir);
    clara_status s = CLARA_OK;
    if (!clara_dir || !base || !out || !link_to) s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    if (s == CLARA_OK) {
        cp.clara_dir = clara_dir;
        cp.base_dir = base;
        cp.mode = j->p->full ? CLARA_CONVERT_FULL : CLARA_CONVERT_ADDON;
        s = convert_as(j, &cp, out);
        if (s != CLARA_OK) s = clara_fail_context(s, "converting %s", j->name);
    }
    /* the same filesystem: a link, not a copy of gigabytes */
    if (s == CLARA_OK && !j->p->full && link(base, link_to) != 0 && rename(base, link_to) != 0)
        s = clara_fail(CLARA_ERR_IO, "%s: %s", link_to, strerror(errno));
    free(clara_dir);
    free(base);
    free(out);
    free(link_to);
    return s;
}

/* Loads the new model once through the public API: the cache only ever shows loadable models. */
static clara_status verify(pull_job *j, const char *newdir) {
    char *model = pathf("%s/%s", newdir, j->p->full ? "model.gguf" : "clara.gguf");
    char *base = pathf("%s/base.gguf", newdir);
    clara_model_params mp = clara_model_default_params();
    clara_model *m = NULL;
    clara_status s;
    if (!model || !base)
        s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    else if (j->p->full)
        s = clara_model_load(model, &mp, &m);
    else
        s = clara_model_load_pair(base, model, &mp, &m);
    free(model);
    free(base);
    if (s != CLARA_OK) return clara_fail_context(s, "the converted %s does not load", j->name);
    clara_model_free(m);
    return CLARA_OK;
}

static clara_status write_manifest(pull_job *j, const char *newdir) {
    cJSON *m = cJSON_CreateObject();
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON_AddStringToObject(m, "name", j->name);
    cJSON_AddStringToObject(m, "repo", j->repo);
    cJSON_AddStringToObject(m, "subfolder", j->sub);
    cJSON_AddStringToObject(m, "revision", j->commit);
    cJSON_AddStringToObject(m, "route", j->p->full ? "full" : "light");
    cJSON_AddStringToObject(m, "type", j->type);
    cJSON_AddStringToObject(m, "model", j->p->full ? "model.gguf" : "clara.gguf");
    if (!j->p->full) cJSON_AddStringToObject(m, "base", "base.gguf");
    cJSON_AddStringToObject(m, "base_repo", j->base_repo);
    if (!j->p->full) cJSON_AddStringToObject(m, "base_file", j->base_file);
    cJSON_AddStringToObject(m, "base_revision", j->base_commit);
    cJSON_AddStringToObject(m, "endpoint", j->c.endpoint);
    cJSON_AddNumberToObject(m, "downloaded_bytes", (double)j->to_download);
    cJSON_AddStringToObject(m, "pulled_at", when);
    char *text = cJSON_Print(m);
    cJSON_Delete(m);
    if (!text) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    char path[4600], tmp[4700];
    snprintf(path, sizeof path, "%s/manifest.json", newdir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    bool ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF && fflush(f) == 0 &&
              fsync(fileno(f)) == 0;
    if (f && fclose(f) != 0) ok = false;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return clara_fail(CLARA_ERR_IO, "writing %s: %s", path, strerror(errno));
    }
    return CLARA_OK;
}

/* new/ becomes the model directory in one step; a previous pull's directory is swapped out and
 * removed afterwards. */
static clara_status publish(pull_job *j, const char *newdir) {
    struct stat st;
    if (stat(j->entry, &st) == 0) {
        if (renameat2(AT_FDCWD, newdir, AT_FDCWD, j->entry, RENAME_EXCHANGE) != 0)
            return clara_fail(CLARA_ERR_IO, "%s: %s", j->entry, strerror(errno));
        return hub_rmtree(newdir); /* now the previous model */
    }
    if (rename(newdir, j->entry) != 0)
        return clara_fail(CLARA_ERR_IO, "%s: %s", j->entry, strerror(errno));
    int fd = open(j->cache, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    return CLARA_OK;
}

/* True (and says so) when the cache already holds the model as asked. */
static bool already_cached(pull_job *j) {
    hub_entry e;
    if (hub_manifest_read(j->entry, &e) != CLARA_OK) return false;
    bool same = strcmp(e.route, j->p->full ? "full" : "light") == 0 && strcmp(e.type, j->type) == 0;
    hub_entry_free(&e);
    if (same) say(j, "%s is in the cache (%s route, %s): %s", j->name, e.route, e.type, j->entry);
    return same;
}

static clara_status fetch_and_build(pull_job *j) {
    phase(j, HUB_PHASE_RESOLVING);
    say(j, "resolving %s (%s route, %s) at %s", j->name, j->p->full ? "full" : "light", j->type,
        j->c.endpoint);
    clara_status s = resolve(j);
    if (s == CLARA_OK) s = hub_mkdirs(j->downloads);
    if (s == CLARA_OK) s = check_space(j);
    if (s != CLARA_OK) return s;
    double t0 = hub_now();
    s = hub_download_all(&j->c, "main", &j->files, j->p->jobs, j->p->progress, j->p->progress_arg,
                         j->started);
    if (s != CLARA_OK) return s;
    double dt = hub_now() - t0;
    say(j, "downloads complete and verified in %.1f s", dt);
    if (hub_cancelled(&j->c)) return clara_fail(CLARA_ERR_CANCELLED, "cancelled");
    char newdir[4500];
    snprintf(newdir, sizeof newdir, "%s/new", j->work);
    if ((s = hub_rmtree(newdir)) != CLARA_OK || (s = hub_mkdirs(newdir)) != CLARA_OK) return s;
    phase(j, HUB_PHASE_CONVERTING);
    say(j, "converting to %s (%s)", j->type, j->p->full ? "one file" : "add-on for the base GGUF");
    t0 = hub_now();
    s = convert(j, newdir);
    if (s == CLARA_OK) {
        say(j, "converted in %.1f s; loading it once to check it", hub_now() - t0);
        phase(j, HUB_PHASE_VERIFYING);
        s = verify(j, newdir);
    }
    if (s == CLARA_OK) s = write_manifest(j, newdir);
    if (s == CLARA_OK) s = publish(j, newdir);
    if (s != CLARA_OK) {
        hub_rmtree(newdir);
        return s;
    }
    /* the raw downloads are not needed any more (docs/PULL.md) */
    hub_rmtree(j->downloads);
    phase(j, HUB_PHASE_DONE);
    return CLARA_OK;
}

static clara_status pull_locked(pull_job *j) {
    if (!j->p->force && already_cached(j)) return CLARA_OK;
    if (j->c.offline)
        return clara_fail(CLARA_ERR_NOT_FOUND,
                          "HF_HUB_OFFLINE is set and %s (%s route, %s) is not in the cache %s",
                          j->name, j->p->full ? "full" : "light", j->type, j->cache);
    clara_status s = fetch_and_build(j);
    if (s == CLARA_OK) {
        char sz[32];
        hub_entry e;
        if (hub_manifest_read(j->entry, &e) == CLARA_OK) {
            hub_format_bytes(e.bytes, sz, sizeof sz);
            say(j, "pulled %s (%s route, %s, %s) in %.1f s", j->name, e.route, e.type, sz,
                hub_now() - j->started);
            hub_entry_free(&e);
        }
    }
    return s;
}

clara_status hub_pull(const hub_pull_params *p) {
    pull_job *j = calloc(1, sizeof *j);
    if (!j) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    j->p = p;
    j->started = hub_now();
    clara_status s = hub_parse_name(p->name, p->subfolder, j->repo, j->sub);
    if (s == CLARA_OK) s = plan(j);
    if (s == CLARA_OK) s = hub_client_init(&j->c, p->cancel);
    j->cache = s == CLARA_OK ? hub_cache_dir() : NULL;
    if (s == CLARA_OK && !j->cache)
        s = clara_fail(CLARA_ERR_INVALID_ARG, "set CLARA_CACHE_DIR (HOME is not set)");
    int fd = -1;
    if (s == CLARA_OK) {
        snprintf(j->name, sizeof j->name, "%s:%s", j->repo, j->sub);
        hub_entry_dirname(j->repo, j->sub, j->dirname, sizeof j->dirname);
        snprintf(j->entry, sizeof j->entry, "%s/%s", j->cache, j->dirname);
        snprintf(j->work, sizeof j->work, "%s/.pull/%s", j->cache, j->dirname);
        snprintf(j->downloads, sizeof j->downloads, "%s/downloads", j->work);
        s = hub_mkdirs(j->work);
    }
    if (s == CLARA_OK) s = hub_lock(j->cache, j->dirname, p->log, p->cancel, &fd);
    if (s == CLARA_OK) {
        s = pull_locked(j);
        hub_unlock(fd);
    }
    hub_files_free(&j->files);
    hub_client_free(&j->c);
    free(j->cache);
    free(j);
    return s;
}
