/* pull.c - a model named by --model/CLARA_MODEL that is not in the cache yet is pulled when the
 * server starts (as the Python server downloaded on first start): on its own thread while the
 * HTTP side answers /health 503 {"status": "downloading", "progress": {...}} and /status with
 * the figures, progress in the log every few seconds; once the model is in the cache the
 * server probes it and starts serving. A failed pull stops the server (exit status 1). */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "server.h"

static int (*g_ready)(srv_server *s);

static void on_progress(const hub_progress *p, void *arg) {
    srv_server *s = arg;
    pthread_mutex_lock(&s->pull.mu);
    s->pull.p = *p;
    pthread_mutex_unlock(&s->pull.mu);
    if (clara_log_get_level() <= CLARA_LOG_INFO)
        hub_progress_render(stderr, false, 5.0, p, &s->pull.render);
}

static void *pull_main(void *arg) {
    srv_server *s = arg;
    const srv_config *c = &s->cfg;
    hub_pull_params p = hub_pull_default_params();
    p.name = c->pull_name;
    p.subfolder = c->subfolder;
    p.type = c->pull_type;
    p.full = c->pull_full;
    p.cancel = &s->pull.cancel;
    p.progress = on_progress;
    p.progress_arg = s;
    p.log = clara_log_get_level() <= CLARA_LOG_INFO ? stderr : NULL;
    clara_status st = hub_pull(&p);
    char *model = NULL, *base = NULL;
    if (st == CLARA_OK) st = hub_resolve(c->pull_name, c->subfolder, &model, &base);
    if (st == CLARA_OK) {
        free(s->cfg.model); /* the name, read by nobody while downloading */
        s->cfg.model = model;
        s->cfg.base = base;
        if (g_ready(s) != 0) st = CLARA_ERR_FORMAT;
    }
    if (st == CLARA_OK) return NULL;
    pthread_mutex_lock(&s->pull.mu);
    s->pull.failed = true;
    snprintf(s->pull.error, sizeof s->pull.error, "%s",
             st == CLARA_ERR_FORMAT && !*clara_last_error() ? "the model does not load"
                                                            : clara_last_error());
    pthread_mutex_unlock(&s->pull.mu);
    if (st != CLARA_ERR_CANCELLED) {
        CLARA_LOGE("pulling %s failed: %s", c->pull_name, s->pull.error);
        kill(getpid(), SIGTERM); /* main's sigwait: the server stops, exit status 1 */
    }
    return NULL;
}

int srv_pull_start(srv_server *s, int (*ready)(srv_server *s)) {
    g_ready = ready;
    pthread_mutex_init(&s->pull.mu, NULL);
    atomic_init(&s->pull.cancel, 0);
    atomic_store(&s->downloading, true);
    if (pthread_create(&s->pull.thread, NULL, pull_main, s) != 0) {
        CLARA_LOGE("cannot start the pull of %s", s->cfg.pull_name);
        return -1;
    }
    s->pull.started = true;
    return 0;
}

bool srv_pull_stop(srv_server *s) {
    if (!s->pull.started) return true;
    atomic_store(&s->pull.cancel, 1);
    pthread_join(s->pull.thread, NULL);
    s->pull.started = false;
    pthread_mutex_lock(&s->pull.mu);
    bool ok = !s->pull.failed;
    pthread_mutex_unlock(&s->pull.mu);
    return ok;
}

void srv_pull_json(srv_server *s, cJSON *o) {
    pthread_mutex_lock(&s->pull.mu);
    hub_progress p = s->pull.p;
    bool failed = s->pull.failed;
    char error[sizeof s->pull.error];
    memcpy(error, s->pull.error, sizeof error);
    pthread_mutex_unlock(&s->pull.mu);
    cJSON_AddStringToObject(o, "model", s->cfg.pull_name);
    cJSON_AddStringToObject(o, "phase", failed ? "failed" : hub_phase_name(p.phase));
    cJSON_AddNumberToObject(o, "bytes_done", (double)p.done);
    cJSON_AddNumberToObject(o, "bytes_total", (double)p.total);
    cJSON_AddNumberToObject(o, "percent",
                            p.total ? floor(1000.0 * (double)p.done / (double)p.total) / 10 : 0);
    cJSON_AddNumberToObject(o, "rate_bytes_per_second", floor(p.rate));
    if (p.eta_s >= 0)
        cJSON_AddNumberToObject(o, "eta_seconds", ceil(p.eta_s));
    else
        cJSON_AddNullToObject(o, "eta_seconds");
    cJSON_AddNumberToObject(o, "files_done", p.files_done);
    cJSON_AddNumberToObject(o, "files_total", p.files_total);
    cJSON_AddNumberToObject(o, "elapsed_seconds", floor(p.elapsed_s));
    if (failed) cJSON_AddStringToObject(o, "error", error);
}
