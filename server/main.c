/* main.c - clara-server's lifetime: configuration, the startup check of the model and the banner,
 * the scheduler and HTTP threads, and a graceful stop on SIGTERM/SIGINT (stop accepting, let
 * in-flight requests finish within the grace period, exit 0). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/threadpool.h"
#include "server.h"

static srv_server g_srv;

static bool is_loopback(const char *host) {
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 ||
           strcmp(host, "localhost") == 0;
}

static void banner(const srv_server *s, int port) {
    const srv_model_info *m = &s->info;
    if (s->cfg.demo) {
        fprintf(stderr,
                "\n"
                "**************************************************************************\n"
                "** WARNING: no model configured: serving the bundled DEMO model.\n"
                "** Its weights are synthetic, so every answer is MEANINGLESS.\n"
                "** To serve real CLaRa, convert a checkpoint and pass it with --model:\n"
                "**   clara convert --base Mistral-7B-Instruct-v0.2 \\\n"
                "**       --clara CLaRa-7B-Instruct/compression-16 --out clara.gguf --type f16\n"
                "**   clara-server --model clara.gguf        (or CLARA_MODEL=clara.gguf)\n"
                "**************************************************************************\n\n");
    }
    fprintf(stderr, "clara-server %s\n", CLARA_VERSION);
    fprintf(stderr, "  model:      %s (%s)\n", s->cfg.model, m->name);
    fprintf(stderr, "  type:       %s, %u memory tokens x %u, vocabulary %u, retrieval %s\n",
            m->type, m->n_mem, m->n_embd, m->n_vocab, m->can_retrieve ? "yes" : "no");
    fprintf(stderr,
            "  memory:     model file %.1f MiB (mapped when loaded), resident now %.1f MiB\n",
            (double)m->file_bytes / 1048576.0, (double)srv_rss_bytes() / 1048576.0);
    fprintf(stderr, "  engine:     cpu backend, %s, %d threads, up to %d requests per pass\n",
            srv_isa(), s->cfg.threads > 0 ? s->cfg.threads : clara_physical_cores(),
            s->cfg.parallel);
    if (s->cfg.keep_alive < 0)
        fprintf(stderr, "  keep-alive: never unload (model loads on the first request)\n");
    else
        fprintf(stderr, "  keep-alive: %d s (model loads on the first request)\n",
                s->cfg.keep_alive);
    fprintf(stderr, "  auth:       %s; CORS %s\n", s->cfg.api_key ? "API key required" : "none",
            s->cfg.cors ? "on" : "off");
    if (!is_loopback(s->cfg.host) && !s->cfg.api_key)
        fprintf(stderr,
                "clara-server: WARNING: listening on %s without an API key: anyone who "
                "can reach this address can use the server (set CLARA_API_KEY)\n",
                s->cfg.host);
    bool v6 = strchr(s->cfg.host, ':') != NULL;
    fprintf(stderr, "listening on http://%s%s%s:%d\n", v6 ? "[" : "", s->cfg.host, v6 ? "]" : "",
            port);
    fflush(stderr);
}

/* Stop accepting, give in-flight requests up to the grace period, then stop the scheduler
 * (queued tasks still waiting get 503) and the HTTP threads. */
static void shutdown_server(srv_server *s, void *daemon) {
    atomic_store(&s->draining, true);
    srv_http_quiesce(daemon);
    double until = srv_mono() + s->cfg.grace;
    while (atomic_load(&s->inflight) > 0 && srv_mono() < until) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    srv_sched_stop();
    srv_http_stop(daemon);
}

int srv_main(int argc, char **argv) {
    srv_server *s = &g_srv;
    int rc = srv_config_load(&s->cfg, argc, argv);
    if (rc != 0) {
        srv_config_free(&s->cfg);
        return rc == 1 ? 0 : 2;
    }
    clara_log_set_level((clara_log_level)s->cfg.log_level);
    srv_memory_init();
    if (srv_probe_model(&s->cfg, &s->info) != 0) {
        srv_config_free(&s->cfg);
        return 1;
    }
    if (srv_queue_init(&s->queue, s->cfg.max_queue) != 0) return 1;
    pthread_mutex_init(&s->state.mu, NULL);
    s->state.unload_at = -1;
    s->started_at = srv_now();
    atomic_init(&s->inflight, 0);
    atomic_init(&s->draining, false);

    /* Every thread started from here on inherits the blocked set; only sigwait sees them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int port = 0;
    void *daemon = NULL;
    if (srv_sched_start(&s->cfg, &s->info, &s->queue, &s->state) != 0 ||
        !(daemon = srv_http_start(s, &port))) {
        srv_sched_stop();
        rc = 1;
    } else {
        banner(s, port);
        int sig = 0;
        sigwait(&set, &sig);
        CLARA_LOGI("%s: finishing in-flight requests (grace %d s)",
                   sig == SIGINT ? "SIGINT" : "SIGTERM", s->cfg.grace);
        shutdown_server(s, daemon);
        CLARA_LOGI("stopped");
        rc = 0;
    }
    srv_queue_destroy(&s->queue);
    pthread_mutex_destroy(&s->state.mu);
    srv_config_free(&s->cfg);
    return rc;
}
