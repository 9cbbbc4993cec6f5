/* hub_internal.h - what the files of src/hub/ share: the HTTP client over libcurl (client.c), the
 * repository listing (repo.c), the downloader (download.c) and the cache's layout (cache.c). */
#ifndef CLARA_HUB_INTERNAL_H
#define CLARA_HUB_INTERNAL_H

#include <curl/curl.h>

#include "hub/hub.h"

/* ---- client.c: endpoint, token, requests with retries ------------------------------------ */

typedef struct {
    char *endpoint;     /* HF_ENDPOINT without a trailing slash */
    char *token;        /* HF_TOKEN or the token file; NULL = anonymous */
    char token_src[64]; /* where the token came from, for messages */
    bool offline;       /* HF_HUB_OFFLINE */
    long timeout_s;     /* HF_HUB_DOWNLOAD_TIMEOUT: connect limit and longest stall */
    int attempts;       /* CLARA_PULL_RETRIES: tries of one request before giving up */
    atomic_int *cancel;
} hub_client;

/* What a response's headers said (of the last response; the X-Linked-* and X-Repo-Commit
 * headers of a redirect are kept across it). */
typedef struct {
    long status;
    char error_code[64];
    char error_message[256];
    char repo_commit[64];
    char linked_etag[80];
    char content_range[96];
    uint64_t linked_size;
    bool has_linked_size;
} hub_response;

clara_status hub_client_init(hub_client *c, atomic_int *cancel);
void hub_client_free(hub_client *c);
bool hub_cancelled(const hub_client *c);

/* A curl handle with the client's settings (token, redirects, timeouts, cancellation, header
 * capture into *r). *hdrs is freed by the caller after the transfer. */
CURL *hub_curl_new(const hub_client *c, const char *url, struct curl_slist **hdrs, hub_response *r);

/* {endpoint}/{repo}/resolve/{rev}/{path} with each path segment escaped. Caller frees. */
char *hub_resolve_url(const hub_client *c, const char *repo, const char *rev, const char *path);

/* GET url into a NUL-terminated buffer (at most max bytes), retrying transient failures.
 * Non-2xx answers become errors naming repo (and path when not NULL). */
clara_status hub_get(const hub_client *c, const char *url, const char *repo, const char *path,
                     size_t max, char **body, hub_response *r);

/* Records the error of a non-2xx answer to a request for repo/path. */
clara_status hub_http_error(const hub_client *c, const hub_response *r, const char *url,
                            const char *repo, const char *path);

/* Whether a failed transfer is worth another try: dropped or refused connections, timeouts,
 * 5xx, 429, 408. */
bool hub_transient(CURLcode rc, long status);

/* Sleeps before try number `attempt` (1-based: 0.5 s, 1 s, 2 s, ... at most 8 s); false when
 * cancelled meanwhile. */
bool hub_backoff(const hub_client *c, int attempt);

double hub_now(void);

/* ---- repo.c: the files of a repository at a revision -------------------------------------- */

typedef struct {
    char *repo;
    char *path;  /* in the repository */
    char *local; /* where the verified file goes */
    uint64_t size;
    char sha256[65];       /* "" when the Hub gives none (small, non-LFS files) */
    _Atomic uint64_t done; /* bytes on disk, for progress */
    bool active;
} hub_file;

typedef struct {
    hub_file *v;
    size_t n, cap;
} hub_files;

/* Lists repo's files at rev whose path starts with prefix (NULL or "" = all) through the
 * revision API; *commit gets the revision's commit id (41 bytes). keep(path) filters. */
clara_status hub_repo_files(const hub_client *c, const char *repo, const char *rev,
                            const char *prefix, bool (*keep)(const char *path), hub_files *out,
                            char commit[64]);
void hub_files_free(hub_files *f);

/* ---- download.c --------------------------------------------------------------------------- */

/* Downloads every file of f that is not already complete at its local path: NAME.part beside
 * it, resumed with Range, verified (size, sha256) and renamed into place. jobs files at once;
 * progress as in hub.h. */
clara_status hub_download_all(const hub_client *c, const char *rev, hub_files *f, int jobs,
                              hub_progress_fn progress, void *arg, double started);

/* ---- cache.c ------------------------------------------------------------------------------ */

/* "owner/repo:sub" -> its pieces (a name without ':' takes default_sub). */
clara_status hub_parse_name(const char *name, const char *default_sub, char repo[160],
                            char sub[96]);
/* The directory names of a model: "models--owner--repo--sub". */
void hub_entry_dirname(const char *repo, const char *sub, char *out, size_t len);
/* Reads DIR/manifest.json of an entry directory. */
clara_status hub_manifest_read(const char *dir, hub_entry *e);
/* mkdir -p */
clara_status hub_mkdirs(const char *path);
/* rm -r (no error when absent) */
clara_status hub_rmtree(const char *path);
/* Takes the lock of an entry (waits for another pull; says so on log). Returns the fd. */
clara_status hub_lock(const char *cache, const char *dirname, FILE *log, atomic_int *cancel,
                      int *fd);
void hub_unlock(int fd);

#endif
