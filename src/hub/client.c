/* client.c - the Hugging Face Hub's HTTP side over libcurl: the endpoint (HF_ENDPOINT), the token
 * (HF_TOKEN, else the file the Hugging Face CLI writes), offline mode (HF_HUB_OFFLINE), requests
 * with retries and backoff, and the Hub's error answers turned into messages that say what to
 * do (X-Error-Code: GatedRepo, RepoNotFound, RevisionNotFound, EntryNotFound). */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/status.h"
#include "hub/hub_internal.h"

double hub_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool env_true(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) return false;
    return strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0 ||
           strcasecmp(v, "on") == 0;
}

bool hub_offline(void) {
    return env_true("HF_HUB_OFFLINE");
}

static long env_long(const char *name, long def, long lo, long hi) {
    const char *v = getenv(name);
    if (!v || !*v) return def;
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || *end || d < (double)lo || d > (double)hi) return def;
    return (long)(d + 0.999); /* HF_HUB_DOWNLOAD_TIMEOUT may be fractional: round up */
}

/* The first line of a file, trimmed; NULL when it cannot be read or is empty. */
static char *read_token_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char buf[512];
    char *line = fgets(buf, sizeof buf, f);
    fclose(f);
    if (!line) return NULL;
    size_t n = strlen(buf);
    while (n && isspace((unsigned char)buf[n - 1])) buf[--n] = '\0';
    char *s = buf;
    while (isspace((unsigned char)*s)) s++;
    return *s ? strdup(s) : NULL;
}

/* HF_TOKEN; else $HF_TOKEN_PATH; else $HF_HOME/token; else $XDG_CACHE_HOME/huggingface/token or
 * ~/.cache/huggingface/token (where `huggingface-cli login` writes it). */
static void find_token(hub_client *c) {
    const char *t = getenv("HF_TOKEN");
    if (t && *t) {
        c->token = strdup(t);
        snprintf(c->token_src, sizeof c->token_src, "HF_TOKEN");
        return;
    }
    char path[4096];
    const char *p = getenv("HF_TOKEN_PATH"), *home = getenv("HF_HOME");
    const char *xdg = getenv("XDG_CACHE_HOME"), *user = getenv("HOME");
    if (p && *p)
        snprintf(path, sizeof path, "%s", p);
    else if (home && *home)
        snprintf(path, sizeof path, "%s/token", home);
    else if (xdg && *xdg)
        snprintf(path, sizeof path, "%s/huggingface/token", xdg);
    else if (user && *user)
        snprintf(path, sizeof path, "%s/.cache/huggingface/token", user);
    else
        return;
    c->token = read_token_file(path);
    if (c->token) snprintf(c->token_src, sizeof c->token_src, "the token file");
}

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_init_rc;
static void curl_init_once(void) {
    g_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

clara_status hub_client_init(hub_client *c, atomic_int *cancel) {
    memset(c, 0, sizeof *c);
    pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_init_rc != CURLE_OK)
        return clara_fail(CLARA_ERR_IO, "libcurl: %s", curl_easy_strerror(g_curl_init_rc));
    const char *ep = getenv("HF_ENDPOINT");
    c->endpoint = strdup(ep && *ep ? ep : HUB_DEFAULT_ENDPOINT);
    if (!c->endpoint) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    size_t n = strlen(c->endpoint);
    while (n > 0 && c->endpoint[n - 1] == '/') c->endpoint[--n] = '\0';
    c->offline = hub_offline();
    c->timeout_s = env_long("HF_HUB_DOWNLOAD_TIMEOUT", 10, 1, 3600);
    c->attempts = (int)env_long("CLARA_PULL_RETRIES", 6, 1, 100);
    c->cancel = cancel;
    find_token(c);
    return CLARA_OK;
}

void hub_client_free(hub_client *c) {
    free(c->endpoint);
    if (c->token) memset(c->token, 0, strlen(c->token));
    free(c->token);
    memset(c, 0, sizeof *c);
}

bool hub_cancelled(const hub_client *c) {
    return c->cancel && atomic_load(c->cancel) != 0;
}

static void copy_value(char *dst, size_t cap, const char *v, size_t n) {
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ')) n--;
    while (n && *v == ' ') v++, n--;
    if (n >= cap) n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

/* One header line. A status line starts a new response: its error fields are reset, the
 * X-Linked-* and X-Repo-Commit values of a redirect before it are kept. */
static size_t on_header(char *buf, size_t size, size_t nitems, void *arg) {
    hub_response *r = arg;
    size_t n = size * nitems;
    if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        r->error_code[0] = r->error_message[0] = r->content_range[0] = '\0';
        return n;
    }
    const char *colon = memchr(buf, ':', n);
    if (!colon) return n;
    size_t kl = (size_t)(colon - buf);
    const char *v = colon + 1;
    size_t vl = n - kl - 1;
    char tmp[32];
#define IS(k) (kl == strlen(k) && strncasecmp(buf, k, kl) == 0)
    if (IS("x-error-code"))
        copy_value(r->error_code, sizeof r->error_code, v, vl);
    else if (IS("x-error-message"))
        copy_value(r->error_message, sizeof r->error_message, v, vl);
    else if (IS("x-repo-commit"))
        copy_value(r->repo_commit, sizeof r->repo_commit, v, vl);
    else if (IS("x-linked-etag"))
        copy_value(r->linked_etag, sizeof r->linked_etag, v, vl);
    else if (IS("content-range"))
        copy_value(r->content_range, sizeof r->content_range, v, vl);
    else if (IS("x-linked-size")) {
        copy_value(tmp, sizeof tmp, v, vl);
        char *end;
        errno = 0;
        unsigned long long s = strtoull(tmp, &end, 10);
        /* digits only: strtoull would take "-1" as the largest value */
        if (isdigit((unsigned char)tmp[0]) && !*end && errno == 0)
            r->linked_size = s, r->has_linked_size = true;
    }
#undef IS
    return n;
}

/* libcurl calls this about once a second even while nothing arrives: the place to stop. */
static int on_xfer(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    (void)dt, (void)dn, (void)ut, (void)un;
    const hub_client *c = arg;
    return hub_cancelled(c) ? 1 : 0;
}

CURL *hub_curl_new(const hub_client *c, const char *url, struct curl_slist **hdrs,
                   hub_response *r) {
    CURL *h = curl_easy_init();
    if (!h) return NULL;
    memset(r, 0, sizeof *r);
    *hdrs = NULL;
    if (c->token) {
        char auth[600];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
        *hdrs = curl_slist_append(*hdrs, auth);
        memset(auth, 0, sizeof auth);
    }
    *hdrs = curl_slist_append(*hdrs, "User-Agent: clara-server/" CLARA_VERSION);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hdrs);
    /* libcurl sends the Authorization header to the first host only: the Hub's redirects go to
     * a CDN whose signed URLs need none */
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, c->timeout_s);
    /* a stall: less than 1 byte a second for timeout_s seconds */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->timeout_s);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xfer);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)c);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    return h;
}

static char *escape_path(CURL *h, const char *path) {
    size_t cap = strlen(path) * 3 + 1, len = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    const char *p = path;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        char *e = curl_easy_escape(h, p, (int)n);
        if (!e) {
            free(out);
            return NULL;
        }
        len += (size_t)snprintf(out + len, cap - len, "%s%s", e, slash ? "/" : "");
        curl_free(e);
        p += n + (slash ? 1 : 0);
    }
    out[len] = '\0';
    return out;
}

char *hub_resolve_url(const hub_client *c, const char *repo, const char *rev, const char *path) {
    CURL *h = curl_easy_init();
    if (!h) return NULL;
    char *ep = escape_path(h, path), *er = escape_path(h, rev);
    curl_easy_cleanup(h);
    char *url = NULL;
    if (ep && er) {
        size_t n = strlen(c->endpoint) + strlen(repo) + strlen(er) + strlen(ep) + 16;
        url = malloc(n);
        if (url) snprintf(url, n, "%s/%s/resolve/%s/%s", c->endpoint, repo, er, ep);
    }
    free(ep);
    free(er);
    return url;
}

bool hub_transient(CURLcode rc, long status) {
    switch (rc) {
    case CURLE_OK:
        return status >= 500 || status == 429 || status == 408;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

bool hub_backoff(const hub_client *c, int attempt) {
    double s = 0.5;
    for (int i = 1; i < attempt && s < 8; i++) s *= 2;
    if (s > 8) s = 8;
    double until = hub_now() + s;
    while (hub_now() < until) {
        if (hub_cancelled(c)) return false;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return !hub_cancelled(c);
}

clara_status hub_http_error(const hub_client *c, const hub_response *r, const char *url,
                            const char *repo, const char *path) {
    const char *code = r->error_code;
    const char *msg = r->error_message[0] ? r->error_message : "";
    if (strcmp(code, "GatedRepo") == 0 || r->status == 403 ||
        (r->status == 401 && c->token && strcmp(code, "RepoNotFound") != 0))
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "%s/%s is gated (HTTP %ld%s%s): open it on the Hub, accept its "
                          "license while logged in, create a read token at "
                          "%s/settings/tokens and set HF_TOKEN to it (or run "
                          "`huggingface-cli login`)%s%s%s",
                          c->endpoint, repo, r->status, *msg ? ": " : "", msg, c->endpoint,
                          c->token ? "; the token from " : "", c->token ? c->token_src : "",
                          c->token ? " has no access to it" : "");
    if (r->status == 401)
        return clara_fail(CLARA_ERR_NOT_FOUND,
                          "%s/%s: HTTP 401%s%s: the repository does not exist, or it is private "
                          "or gated and needs a token: set HF_TOKEN (no token was given)",
                          c->endpoint, repo, *msg ? ": " : "", msg);
    if (r->status == 404) {
        if (strcmp(code, "RevisionNotFound") == 0)
            return clara_fail(CLARA_ERR_NOT_FOUND, "%s/%s: revision not found (%s)", c->endpoint,
                              repo, url);
        if (path && strcmp(code, "RepoNotFound") != 0)
            return clara_fail(CLARA_ERR_NOT_FOUND, "%s/%s: file %s not found (%s)", c->endpoint,
                              repo, path, url);
        return clara_fail(CLARA_ERR_NOT_FOUND,
                          "%s/%s: repository not found (check the name; a private repository "
                          "needs HF_TOKEN)",
                          c->endpoint, repo);
    }
    return clara_fail(CLARA_ERR_IO, "%s: HTTP %ld%s%s", url, r->status, *msg ? ": " : "", msg);
}

typedef struct {
    char *buf;
    size_t len, max;
    bool over;
} membuf;

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg) {
    membuf *m = arg;
    size_t n = size * nmemb;
    if (m->len + n > m->max) {
        m->over = true;
        return 0;
    }
    char *nb = realloc(m->buf, m->len + n + 1);
    if (!nb) return 0;
    m->buf = nb;
    memcpy(m->buf + m->len, data, n);
    m->len += n;
    m->buf[m->len] = '\0';
    return n;
}

/* One GET; *rc and r->status say how it went. */
static CURLcode get_once(const hub_client *c, const char *url, membuf *m, hub_response *r) {
    struct curl_slist *hdrs;
    CURL *h = hub_curl_new(c, url, &hdrs, r);
    if (!h) return CURLE_OUT_OF_MEMORY;
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, m);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    return rc;
}

clara_status hub_get(const hub_client *c, const char *url, const char *repo, const char *path,
                     size_t max, char **body, hub_response *r) {
    *body = NULL;
    for (int attempt = 1;; attempt++) {
        membuf m = {NULL, 0, max, false};
        CURLcode rc = get_once(c, url, &m, r);
        if (rc == CURLE_OK && r->status >= 200 && r->status < 300) {
            if (!m.buf) m.buf = strdup("");
            *body = m.buf;
            return *body ? CLARA_OK : clara_fail(CLARA_ERR_NOMEM, "out of memory");
        }
        free(m.buf);
        if (hub_cancelled(c)) return clara_fail(CLARA_ERR_CANCELLED, "cancelled");
        if (m.over)
            return clara_fail(CLARA_ERR_FORMAT, "%s: answer longer than %zu bytes", url, max);
        if (!hub_transient(rc, r->status)) {
            if (rc != CURLE_OK)
                return clara_fail(CLARA_ERR_IO, "%s: %s", url, curl_easy_strerror(rc));
            return hub_http_error(c, r, url, repo, path);
        }
        if (attempt >= c->attempts) {
            if (rc != CURLE_OK)
                return clara_fail(CLARA_ERR_IO, "%s: %s (gave up after %d tries)", url,
                                  curl_easy_strerror(rc), attempt);
            return clara_fail(CLARA_ERR_IO, "%s: HTTP %ld (gave up after %d tries)", url, r->status,
                              attempt);
        }
        if (!hub_backoff(c, attempt)) return clara_fail(CLARA_ERR_CANCELLED, "cancelled");
    }
}
