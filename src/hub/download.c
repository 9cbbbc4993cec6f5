/* download.c - resumable, verified downloads of a list of files, a few at a time. Bytes go to
 * NAME.part beside the final path, never to the final path itself; an interrupted download
 * resumes with an HTTP Range request from the part's length (a server that ignores Range starts
 * it over); a complete part is checked (its size, and the sha256 the Hub gave for LFS files)
 * before it is renamed into place, and a part that fails the check is deleted. Transient failures
 * (dropped connections, stalls, 5xx) are retried with backoff; a try that moved bytes forward
 * does not count against the limit. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/status.h"
#include "hub/hub_internal.h"

typedef struct {
    const hub_client *c;
    const char *rev;
    hub_files *f;
    pthread_mutex_t mu;
    size_t next;      /* next file to start */
    int running;      /* workers still running */
    bool failed;      /* a worker failed: the others stop */
    clara_status err; /* its status and message */
    char msg[1024];
    atomic_int stop; /* set on failure so that the others' transfers end */
} dl_shared;

/* One file's transfer state. */
typedef struct {
    dl_shared *sh;
    hub_file *file;
    FILE *fp;
    EVP_MD_CTX *md;    /* sha256 of the part's bytes so far (NULL when no sha256 is expected) */
    uint64_t have;     /* bytes in the part */
    uint64_t start;    /* offset this try asked for */
    bool checked;      /* the response code of this try was looked at */
    bool body_is_file; /* 200 or 206: the body goes into the part */
    bool too_long;     /* more bytes than the Hub listed */
    bool bad_range;    /* a 206 that does not start where the part ends */
    bool restart;      /* the server ignored Range: the part was emptied */
    bool write_failed;
    int write_errno;
} dl_file;

static bool stopping(const dl_shared *sh) {
    return hub_cancelled(sh->c) || atomic_load(&sh->stop);
}

/* Hashes the first n bytes of the part (a resumed download's earlier bytes). */
static clara_status hash_prefix(dl_file *d, const char *part, uint64_t n) {
    if (EVP_DigestInit_ex(d->md, EVP_sha256(), NULL) != 1)
        return clara_fail(CLARA_ERR_IO, "sha256: OpenSSL failed");
    if (n == 0) return CLARA_OK;
    FILE *in = fopen(part, "rb");
    if (!in) return clara_fail(CLARA_ERR_IO, "%s: %s", part, strerror(errno));
    static const size_t chunk = 1 << 20;
    unsigned char *buf = malloc(chunk);
    uint64_t left = n;
    while (buf && left > 0) {
        size_t want = left < chunk ? (size_t)left : chunk;
        size_t got = fread(buf, 1, want, in);
        if (got == 0) break;
        EVP_DigestUpdate(d->md, buf, got);
        left -= got;
    }
    free(buf);
    fclose(in);
    if (left) return clara_fail(CLARA_ERR_IO, "%s: could not read back its first bytes", part);
    return CLARA_OK;
}

static size_t on_data(char *data, size_t size, size_t nmemb, void *arg) {
    dl_file *d = arg;
    size_t n = size * nmemb;
    if (stopping(d->sh)) return 0;
    if (d->restart) {
        /* the server sent the whole file: start the part over */
        d->restart = false;
        if (fflush(d->fp) || ftruncate(fileno(d->fp), 0) || fseeko(d->fp, 0, SEEK_SET)) {
            d->write_failed = true, d->write_errno = errno;
            return 0;
        }
        d->have = 0;
        if (d->md) EVP_DigestInit_ex(d->md, EVP_sha256(), NULL);
    }
    if (d->have + n > d->file->size) {
        d->too_long = true;
        return 0;
    }
    if (fwrite(data, 1, n, d->fp) != n) {
        d->write_failed = true, d->write_errno = errno ? errno : EIO;
        return 0;
    }
    if (d->md) EVP_DigestUpdate(d->md, data, n);
    d->have += n;
    atomic_store(&d->file->done, d->have);
    return n;
}

typedef struct {
    CURLcode rc;
    hub_response r;
} try_result;

/* Decides, once the headers are in, whether the body goes into the part: 206 from where the part
 * ends, or 200 (a server that ignored Range) which starts the part over; anything else is not
 * the file. Runs from the first body byte through CURLINFO_RESPONSE_CODE. */
typedef struct {
    dl_file *d;
    CURL *h;
    const hub_response *r;
} body_gate;

/* The first byte of "bytes FIRST-LAST/SIZE"; -1 when unreadable. */
static long long range_start(const char *cr) {
    unsigned long long v;
    return sscanf(cr, "bytes %llu-", &v) == 1 ? (long long)v : -1;
}

static size_t gated_data(char *data, size_t size, size_t nmemb, void *arg) {
    body_gate *g = arg;
    dl_file *d = g->d;
    if (!d->checked) {
        long code = 0;
        curl_easy_getinfo(g->h, CURLINFO_RESPONSE_CODE, &code);
        d->checked = true;
        d->body_is_file = code == 200 || code == 206;
        if (code == 200 && d->start > 0) d->restart = true;
        if (code == 206 && range_start(g->r->content_range) != (long long)d->start) {
            d->bad_range = true;
            return 0;
        }
    }
    if (!d->body_is_file) return size * nmemb; /* an error page: not written */
    return on_data(data, size, nmemb, d);
}

static try_result one_try(dl_file *d, const char *url) {
    try_result t;
    struct curl_slist *hdrs;
    CURL *h = hub_curl_new(d->sh->c, url, &hdrs, &t.r);
    if (!h) {
        t.rc = CURLE_OUT_OF_MEMORY;
        return t;
    }
    body_gate g = {d, h, &t.r};
    char range[64];
    d->start = d->have;
    d->checked = d->restart = d->too_long = d->bad_range = false;
    if (d->have > 0) {
        snprintf(range, sizeof range, "%llu-", (unsigned long long)d->have);
        curl_easy_setopt(h, CURLOPT_RANGE, range);
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, gated_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &g);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)d->sh->c);
    t.rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &t.r.status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    if (fflush(d->fp) != 0 && !d->write_failed) d->write_failed = true, d->write_errno = errno;
    return t;
}

static void hex(const unsigned char *md, unsigned n, char *out) {
    for (unsigned i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* The part is complete: check it and rename it into place (or delete it). */
static clara_status finish(dl_file *d, const char *part, const char *url) {
    hub_file *f = d->file;
    if (d->have != f->size) {
        unlink(part);
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: %s is %llu bytes, the Hub says %llu: deleted; run the pull again",
                          f->repo, f->path, (unsigned long long)d->have,
                          (unsigned long long)f->size);
    }
    if (d->md) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned n = 0;
        char got[2 * EVP_MAX_MD_SIZE + 1];
        EVP_DigestFinal_ex(d->md, md, &n);
        hex(md, n, got);
        if (strcmp(got, f->sha256) != 0) {
            unlink(part);
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: %s (%s) has sha256 %s, the Hub says %s: the download is "
                              "corrupt and was deleted; run the pull again",
                              f->repo, f->path, url, got, f->sha256);
        }
    }
    if (fsync(fileno(d->fp)) != 0) return clara_fail(CLARA_ERR_IO, "%s: %s", part, strerror(errno));
    if (rename(part, f->local) != 0)
        return clara_fail(CLARA_ERR_IO, "%s: %s", f->local, strerror(errno));
    return CLARA_OK;
}

/* Why a try failed, as the final error once tries run out (or at once when not transient). */
static clara_status try_error(dl_file *d, const try_result *t, const char *url, int attempt) {
    const hub_client *c = d->sh->c;
    if (d->write_failed)
        return clara_fail(CLARA_ERR_IO, "writing %s: %s", d->file->local, strerror(d->write_errno));
    if (t->rc == CURLE_OK && t->r.status >= 400 && !hub_transient(CURLE_OK, t->r.status))
        return hub_http_error(c, &t->r, url, d->file->repo, d->file->path);
    if (t->rc == CURLE_OPERATION_TIMEDOUT)
        return clara_fail(CLARA_ERR_IO,
                          "%s: no data for %ld s (HF_HUB_DOWNLOAD_TIMEOUT), %d tries: the server "
                          "stalls; run the pull again later (it resumes)",
                          url, c->timeout_s, attempt);
    if (t->rc != CURLE_OK)
        return clara_fail(CLARA_ERR_IO, "%s: %s (%d tries); run the pull again (it resumes)", url,
                          curl_easy_strerror(t->rc), attempt);
    return clara_fail(CLARA_ERR_IO, "%s: HTTP %ld (%d tries); run the pull again (it resumes)", url,
                      t->r.status, attempt);
}

/* Opens the part for appending and makes the sha256 state cover what it holds. */
static clara_status open_part(dl_file *d, const char *part) {
    d->fp = fopen(part, "ab");
    if (!d->fp) return clara_fail(CLARA_ERR_IO, "%s: %s", part, strerror(errno));
    struct stat st;
    if (fstat(fileno(d->fp), &st) != 0)
        return clara_fail(CLARA_ERR_IO, "%s: %s", part, strerror(errno));
    d->have = (uint64_t)st.st_size;
    if (d->have > d->file->size) { /* not this file: start over */
        if (ftruncate(fileno(d->fp), 0) != 0)
            return clara_fail(CLARA_ERR_IO, "%s: %s", part, strerror(errno));
        d->have = 0;
    }
    atomic_store(&d->file->done, d->have);
    if (d->file->sha256[0]) {
        d->md = EVP_MD_CTX_new();
        if (!d->md) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        return hash_prefix(d, part, d->have);
    }
    return CLARA_OK;
}

static clara_status transfer(dl_file *d, const char *part, const char *url) {
    clara_status s = open_part(d, part);
    int attempt = 0;
    while (s == CLARA_OK) {
        if (d->have == d->file->size) return finish(d, part, url);
        uint64_t before = d->have;
        attempt++;
        try_result t = one_try(d, url);
        if (stopping(d->sh)) return clara_fail(CLARA_ERR_CANCELLED, "cancelled");
        if (d->write_failed) return try_error(d, &t, url, attempt);
        if (d->too_long || d->bad_range) {
            unlink(part);
            return clara_fail(CLARA_ERR_FORMAT, "%s: %s (%s): %s: deleted; run the pull again",
                              d->file->repo, d->file->path, url,
                              d->too_long ? "the server sent more bytes than the Hub lists"
                                          : "the server answered a different byte range");
        }
        if (t.rc == CURLE_OK && (t.r.status == 200 || t.r.status == 206)) {
            if (t.r.has_linked_size && t.r.linked_size != d->file->size)
                return clara_fail(CLARA_ERR_FORMAT,
                                  "%s: the Hub lists %s as %llu bytes, its download as %llu",
                                  d->file->repo, d->file->path, (unsigned long long)d->file->size,
                                  (unsigned long long)t.r.linked_size);
            if (d->have >= d->file->size) return finish(d, part, url);
            /* the connection ended early without an error: resume like a drop */
        } else if (t.rc == CURLE_OK && t.r.status == 416) {
            d->have = 0; /* the part is not a prefix the server knows: start over */
            if (ftruncate(fileno(d->fp), 0) != 0)
                return clara_fail(CLARA_ERR_IO, "%s: %s", part, strerror(errno));
            if (d->md) hash_prefix(d, part, 0);
        } else if (!hub_transient(t.rc, t.r.status)) {
            return try_error(d, &t, url, attempt);
        }
        if (d->have > before) attempt = 0; /* progress: a fresh set of tries */
        if (attempt >= d->sh->c->attempts) return try_error(d, &t, url, attempt);
        if (attempt > 0 && !hub_backoff(d->sh->c, attempt))
            return clara_fail(CLARA_ERR_CANCELLED, "cancelled");
    }
    return s;
}

static clara_status download_one(dl_shared *sh, hub_file *f) {
    struct stat st;
    if (stat(f->local, &st) == 0 && (uint64_t)st.st_size == f->size) {
        atomic_store(&f->done, f->size); /* verified by an earlier pull before its rename */
        return CLARA_OK;
    }
    char *slash = strrchr(f->local, '/');
    if (slash) {
        *slash = '\0';
        clara_status s = hub_mkdirs(f->local);
        *slash = '/';
        if (s != CLARA_OK) return s;
    }
    size_t n = strlen(f->local) + 6;
    char *part = malloc(n);
    char *url = hub_resolve_url(sh->c, f->repo, sh->rev, f->path);
    clara_status s = CLARA_OK;
    if (!part || !url) {
        s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    } else {
        snprintf(part, n, "%s.part", f->local);
        dl_file d = {.sh = sh, .file = f};
        s = transfer(&d, part, url);
        if (d.fp) fclose(d.fp);
        EVP_MD_CTX_free(d.md);
    }
    free(part);
    free(url);
    return s;
}

static void *worker(void *arg) {
    dl_shared *sh = arg;
    for (;;) {
        pthread_mutex_lock(&sh->mu);
        hub_file *f = sh->failed || sh->next >= sh->f->n ? NULL : &sh->f->v[sh->next++];
        if (f) f->active = true;
        pthread_mutex_unlock(&sh->mu);
        if (!f || stopping(sh)) break;
        clara_status s = download_one(sh, f);
        pthread_mutex_lock(&sh->mu);
        f->active = false;
        /* the first real failure is the one reported, not the others' "cancelled" */
        if (s != CLARA_OK && (!sh->failed || sh->err == CLARA_ERR_CANCELLED) &&
            !(s == CLARA_ERR_CANCELLED && sh->failed)) {
            sh->failed = true;
            sh->err = s;
            snprintf(sh->msg, sizeof sh->msg, "%s", clara_last_error());
            if (s != CLARA_ERR_CANCELLED) atomic_store(&sh->stop, 1);
        }
        pthread_mutex_unlock(&sh->mu);
        if (s != CLARA_OK) break;
    }
    pthread_mutex_lock(&sh->mu);
    sh->running--;
    pthread_mutex_unlock(&sh->mu);
    return NULL;
}

/* Fills a progress snapshot from the files' counters (under sh->mu). */
static void snapshot(dl_shared *sh, hub_progress *p) {
    memset(p, 0, sizeof *p);
    p->phase = HUB_PHASE_DOWNLOADING;
    p->files_total = (int)sh->f->n;
    for (size_t i = 0; i < sh->f->n; i++) {
        hub_file *f = &sh->f->v[i];
        uint64_t done = atomic_load(&f->done);
        p->done += done;
        p->total += f->size;
        if (done == f->size && !f->active) p->files_done++;
        if (f->active && p->n_active < HUB_MAX_SHOWN_FILES) {
            hub_file_progress *a = &p->active[p->n_active++];
            snprintf(a->name, sizeof a->name, "%s", f->path);
            a->done = done, a->total = f->size;
        }
    }
}

/* Rate over a window of recent samples (bytes moved now, not resumed ones). */
typedef struct {
    double t[16];
    uint64_t b[16];
    int n;
} rate_window;

static double rate_update(rate_window *w, double t, uint64_t b) {
    if (w->n == 16) {
        memmove(w->t, w->t + 1, 15 * sizeof w->t[0]);
        memmove(w->b, w->b + 1, 15 * sizeof w->b[0]);
        w->n = 15;
    }
    w->t[w->n] = t, w->b[w->n] = b, w->n++;
    double dt = w->t[w->n - 1] - w->t[0];
    if (w->n < 2 || dt < 0.5) return 0;
    uint64_t db = w->b[w->n - 1] >= w->b[0] ? w->b[w->n - 1] - w->b[0] : 0;
    return (double)db / dt;
}

static void report(dl_shared *sh, hub_progress_fn progress, void *arg, double started,
                   rate_window *w) {
    hub_progress p;
    pthread_mutex_lock(&sh->mu);
    snapshot(sh, &p);
    pthread_mutex_unlock(&sh->mu);
    double now = hub_now();
    p.elapsed_s = now - started;
    p.rate = rate_update(w, now, p.done);
    p.eta_s = p.rate > 0 ? (double)(p.total - p.done) / p.rate : -1;
    if (progress) progress(&p, arg);
}

clara_status hub_download_all(const hub_client *c, const char *rev, hub_files *f, int jobs,
                              hub_progress_fn progress, void *arg, double started) {
    dl_shared sh = {.c = c, .rev = rev, .f = f};
    pthread_mutex_init(&sh.mu, NULL);
    atomic_init(&sh.stop, 0);
    if (jobs <= 0) jobs = 4;
    if ((size_t)jobs > f->n) jobs = (int)f->n;
    pthread_t th[16];
    if (jobs > 16) jobs = 16;
    int started_n = 0;
    for (int i = 0; i < jobs; i++) {
        pthread_mutex_lock(&sh.mu);
        sh.running++;
        pthread_mutex_unlock(&sh.mu);
        if (pthread_create(&th[i], NULL, worker, &sh) != 0) {
            pthread_mutex_lock(&sh.mu);
            sh.running--;
            pthread_mutex_unlock(&sh.mu);
            break;
        }
        started_n++;
    }
    if (started_n == 0) worker(&sh); /* no thread could start: download here */
    rate_window w = {.n = 0};
    for (;;) {
        pthread_mutex_lock(&sh.mu);
        int running = sh.running;
        pthread_mutex_unlock(&sh.mu);
        report(&sh, progress, arg, started, &w);
        if (running == 0) break;
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < started_n; i++) pthread_join(th[i], NULL);
    pthread_mutex_destroy(&sh.mu);
    if (sh.failed) return clara_fail(sh.err, "%s", sh.msg);
    if (hub_cancelled(c)) return clara_fail(CLARA_ERR_CANCELLED, "cancelled");
    return CLARA_OK;
}
