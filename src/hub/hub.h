/* hub.h - getting CLaRa models from the Hugging Face Hub into a local model cache (`clara pull`,
 * `clara list`, `clara rm`) and resolving model names (apple/CLaRa-7B-Instruct:compression-16)
 * to the cached files, for the CLI and the server alike. docs/PULL.md describes the behaviour. */
#ifndef CLARA_HUB_HUB_H
#define CLARA_HUB_HUB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "clara.h"

#define HUB_DEFAULT_SUBFOLDER "compression-16"
#define HUB_DEFAULT_TYPE      "q4_k_m"
#define HUB_DEFAULT_ENDPOINT  "https://huggingface.co"
#define HUB_MAX_SHOWN_FILES   4 /* files in flight a progress report lists */

/* What a pull is doing, for progress reports. */
typedef enum {
    HUB_PHASE_RESOLVING = 0, /* asking the Hub which files a model has */
    HUB_PHASE_DOWNLOADING,
    HUB_PHASE_CONVERTING,
    HUB_PHASE_VERIFYING, /* loading the converted model once */
    HUB_PHASE_DONE,
} hub_phase;

const char *hub_phase_name(hub_phase p);

typedef struct {
    char name[160]; /* path in its repository */
    uint64_t done, total;
} hub_file_progress;

/* A snapshot of a pull's figures (bytes are of this pull's downloads; resumed bytes count as
 * done from the start, so the rate is of what is transferred now). */
typedef struct {
    hub_phase phase;
    uint64_t done, total;
    double rate;  /* bytes per second over the last seconds; 0 while unknown */
    double eta_s; /* seconds left at that rate; < 0 while unknown */
    double elapsed_s;
    int files_done, files_total;
    int n_active; /* entries of active[] in use */
    hub_file_progress active[HUB_MAX_SHOWN_FILES];
} hub_progress;

typedef void (*hub_progress_fn)(const hub_progress *p, void *arg);

typedef struct {
    const char *name;         /* "owner/repo" or "owner/repo:subfolder" */
    const char *subfolder;    /* when name has none; NULL = HUB_DEFAULT_SUBFOLDER */
    const char *type;         /* NULL = HUB_DEFAULT_TYPE */
    bool full;                /* convert the base safetensors ourselves (exact route) */
    const char *base_gguf;    /* light route: "REPO/FILE" of the base GGUF; NULL = the default */
    const char *base_repo;    /* full route: the base safetensors repository; NULL = Mistral's */
    bool force;               /* pull again even when the model is cached as asked */
    int jobs;                 /* files downloaded at once; 0 = 4 */
    atomic_int *cancel;       /* set non-zero (e.g. from a SIGINT handler) to stop; may be NULL */
    hub_progress_fn progress; /* called about 5 times a second while pulling; may be NULL */
    void *progress_arg;
    FILE *log; /* one line per step ("resolving ...", "converting ..."); NULL = none */
} hub_pull_params;

hub_pull_params hub_pull_default_params(void);

/* Pulls a model into the cache: downloads (resumable, verified), converts, loads the result once,
 * and only then makes it visible under its name, replacing a previous pull of that name. Two
 * pulls of one name at once take turns (the second finds the first's result). On any failure
 * the cache keeps its previous state; verified downloads and partial files stay for the next
 * try. CLARA_ERR_CANCELLED when *cancel was set. */
clara_status hub_pull(const hub_pull_params *p);

/* ---- the model cache --------------------------------------------------------------------- */

/* $CLARA_CACHE_DIR, else ~/.cache/clara-server ($XDG_CACHE_HOME/clara-server). Caller frees. */
char *hub_cache_dir(void);

/* A cached model as its manifest describes it. */
typedef struct {
    char name[256];     /* "owner/repo:subfolder" */
    char route[8];      /* "light" or "full" */
    char type[16];      /* e.g. "q4_k_m" */
    char revision[64];  /* the CLaRa repository's commit */
    char pulled_at[32]; /* ISO-8601 UTC */
    uint64_t bytes;     /* of the model's files */
    char *model_path;   /* one-file model, or the add-on in two-file mode */
    char *base_path;    /* two-file mode: the base GGUF; else NULL */
} hub_entry;

void hub_entry_free(hub_entry *e);

/* Every cached model, sorted by name. Caller frees with hub_entries_free. */
clara_status hub_list(hub_entry **out, size_t *n);
void hub_entries_free(hub_entry *e, size_t n);

/* Removes a cached model and everything pulled for it (downloads and partial files).
 * CLARA_ERR_NOT_FOUND when the cache holds nothing of that name. */
clara_status hub_rm(const char *name, const char *default_subfolder);

/* HF_HUB_OFFLINE is set (1, true, yes, on): nothing is downloaded, only the cache is used. */
bool hub_offline(void);

/* True when `s` reads as a model name (owner/repo[:subfolder]) rather than a file path. */
bool hub_is_model_name(const char *s);

/* Resolves what a --model option names: an existing file stays that file (*model = a copy,
 * *base = NULL); a model name gives the cached files. CLARA_ERR_NOT_FOUND when a name is not
 * cached (the message says to run `clara pull NAME`). Caller frees *model and *base. */
clara_status hub_resolve(const char *name_or_path, const char *default_subfolder, char **model,
                         char **base);

/* ---- progress display -------------------------------------------------------------------- */

/* Draws p on a terminal (the lines it drew last time are redrawn in place) or, when tty is
 * false, writes one plain line when at least every_s seconds passed since the last one (and at
 * phase changes). State between calls lives in *st (zero it first). */
typedef struct {
    int lines_drawn;
    double last_line_s;
    hub_phase last_phase;
    bool started;
} hub_render_state;

void hub_progress_render(FILE *out, bool tty, double every_s, const hub_progress *p,
                         hub_render_state *st);
/* "1.5 GiB", "340.2 MiB", "12 B" */
void hub_format_bytes(uint64_t n, char *buf, size_t len);

#endif
