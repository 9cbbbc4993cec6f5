/* main.c - clara-server's lifetime: configuration, the startup check of the model and the banner,
 * the scheduler and HTTP threads, and a graceful stop on SIGTERM/SIGINT (new requests get 503,
 * in-flight requests finish within the grace period, cancel what is left, exit 0; a second
 * signal exits at once). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/mapguard.h"
#include "base/threadpool.h"
#include "doccache.h"
#include "server.h"
#include "store/store.h"

static srv_server g_srv;

static void banner(srv_server *s, int port) {
    const srv_model_info *m = &s->info;
    if (s->cfg.demo) {
        fprintf(stderr,
                "\n"
                "**************************************************************************\n"
                "** WARNING: no model configured: serving the bundled DEMO model.\n"
                "** Its weights are synthetic, so every answer is MEANINGLESS.\n"
                "** To serve real CLaRa, name it (downloaded once from the Hugging Face Hub):\n"
                "**   clara-server --model apple/CLaRa-7B-Instruct   (or CLARA_MODEL=...)\n"
                "** or a GGUF you made with `clara convert` or `clara pull`:\n"
                "**   clara-server --model clara.gguf\n"
                "**************************************************************************\n\n");
    }
    fprintf(stderr, "clara-server %s\n", CLARA_VERSION);
    if (s->cfg.base)
        fprintf(stderr, "  model:      %s (%s) on base %s\n", s->cfg.model, m->name, s->cfg.base);
    else
        fprintf(stderr, "  model:      %s (%s)\n", s->cfg.model, m->name);
    fprintf(stderr, "  type:       %s, %u memory tokens x %u, vocabulary %u, retrieval %s\n",
            m->type, m->n_mem, m->n_embd, m->n_vocab, m->can_retrieve ? "yes" : "no");
    if (s->cfg.base)
        fprintf(stderr,
                "  memory:     base %.1f MiB + add-on %.1f MiB (mapped when loaded), resident now "
                "%.1f MiB\n",
                (double)m->base_file_bytes / 1048576.0, (double)m->file_bytes / 1048576.0,
                (double)srv_rss_bytes() / 1048576.0);
    else
        fprintf(stderr,
                "  memory:     model file %.1f MiB (mapped when loaded), resident now %.1f MiB\n",
                (double)m->file_bytes / 1048576.0, (double)srv_rss_bytes() / 1048576.0);
    char gpu[320] = "";
    if (s->cfg.gpu_layers != 0)
        clara_backend_probe((clara_backend_choice)s->cfg.backend, gpu, sizeof gpu); /* checked */
    if (gpu[0])
        fprintf(stderr,
                "  engine:     vulkan backend on %s, %s layers there (the rest: %s, %d threads)\n",
                gpu, s->cfg.gpu_layers < 0 ? "as many" : "up to --gpu-layers", srv_isa(),
                s->cfg.threads > 0 ? s->cfg.threads : clara_physical_cores());
    fprintf(stderr, "  engine:     %s backend, %s, %d threads, up to %d requests per pass\n",
            gpu[0] ? "and cpu" : "cpu", srv_isa(),
            s->cfg.threads > 0 ? s->cfg.threads : clara_physical_cores(), s->cfg.parallel);
    if (s->cfg.keep_alive < 0)
        fprintf(stderr, "  keep-alive: never unload (model loads on the first request)\n");
    else
        fprintf(stderr, "  keep-alive: %d s (model loads on the first request)\n",
                s->cfg.keep_alive);
    pthread_mutex_lock(&s->store_mu); /* a first request may be opening it (PostgreSQL later) */
    store *st = s->store;
    pthread_mutex_unlock(&s->store_mu);
    if (st)
        fprintf(stderr, "  memories:   %s %s (vectors %s, cache %zu MiB)\n", store_backend_name(st),
                store_where(st), s->cfg.vectors_f32 ? "f32" : "f16",
                (s->cfg.vector_cache ? s->cfg.vector_cache : STORE_DEFAULT_CACHE) >> 20);
    else
        fprintf(stderr, "  memories:   %s\n",
                s->cfg.db ? "store not reachable yet (requests retry)" : "no store (--db none)");
    fprintf(stderr, "  auth:       %s; CORS %s\n",
            s->cfg.api_key         ? "API key required"
            : s->cfg.api_key_empty ? "none (the API key given is empty, which means no key)"
                                   : "none",
            s->cfg.cors ? "on" : "off");
    if (s->cfg.api_key_on_command_line)
        fprintf(stderr, "clara-server: WARNING: --api-key on the command line is visible to other "
                        "local users in the process list until startup blanks it; use "
                        "--api-key-file FILE or CLARA_API_KEY instead\n");
    bool any_origin = srv_cors_origin(s, NULL) != NULL; /* --cors-origins '*' */
    if (any_origin && !s->cfg.api_key)
        fprintf(stderr,
                "clara-server: WARNING: --cors-origins '*' without an API key: any web page "
                "a user of this machine opens can read, write and delete its memories "
                "(set CLARA_API_KEY, or list the origins that may)\n");
    if (!srv_host_is_loopback(s->cfg.host) && !s->cfg.api_key)
        fprintf(stderr,
                "clara-server: WARNING: listening on %s without an API key: anyone who "
                "can reach this address can use the server (set CLARA_API_KEY)\n",
                s->cfg.host);
    bool v6 = strchr(s->cfg.host, ':') != NULL;
    fprintf(stderr, "listening on http://%s%s%s:%d\n", v6 ? "[" : "", s->cfg.host, v6 ? "]" : "",
            port);
    fflush(stderr);
}

/* --subfolder chose a checkpoint in the Python server; here the model file is the checkpoint, and
 * a different compression asked for is most likely the wrong file. */
static void warn_subfolder(const srv_server *s) {
    const srv_model_info *m = &s->info;
    if (!s->cfg.subfolder || !m->n_mem) return;
    char have[48];
    snprintf(have, sizeof have, "compression-%u", m->doc_max_length / m->n_mem);
    if (strcmp(have, s->cfg.subfolder) != 0)
        fprintf(stderr,
                "clara-server: WARNING: subfolder %s was asked for, but the model file is %s "
                "(%u memory vectors per %u-token document); serving the model file\n",
                s->cfg.subfolder, have, m->n_mem, m->doc_max_length);
}

/* Seconds the answers of cancelled requests get to go out before the HTTP threads stop (they
 * are written as soon as the scheduler lets go of the tasks, within milliseconds). */
#define SHUTDOWN_REPLY_S 0.5

/* Waits up to `seconds` for the requests being handled to finish; returns how many are left. */
static int wait_inflight(srv_server *s, double seconds) {
    double until = srv_mono() + seconds;
    while (atomic_load(&s->inflight) > 0 && srv_mono() < until) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(&s->inflight);
}

/* Answer new requests 503, give in-flight requests up to the grace period, then cancel what is left
 * (the engine drops it within a layer or a decoding step; its clients get 503, and so do requests
 * whose body is still arriving, from the connection guard), stop the scheduler and, once those
 * answers are written, the HTTP threads (the guard passes on what they wrote before it closes the
 * connections): the whole takes the grace period plus about a second at most. */
static void shutdown_server(srv_server *s, void *daemon) {
    /* connections are still accepted, so clients get a clear answer rather than a refusal */
    atomic_store(&s->draining, true);
    int left = wait_inflight(s, s->cfg.grace);
    if (left > 0)
        CLARA_LOGW("grace period of %d s over: cancelling %d request(s) still in flight",
                   s->cfg.grace, left);
    srv_sched_cancel_all();
    srv_guard_cancel_partial();
    srv_sched_stop();
    wait_inflight(s, SHUTDOWN_REPLY_S);
    srv_http_stop(daemon);
}

/* Runs once the first SIGINT/SIGTERM is taken: a second one ends the process at once, without
 * waiting for the grace period (status 128 + the signal, as a shell reports a process killed by
 * it: 130 for SIGINT, 143 for SIGTERM). */
static void *second_signal(void *arg) {
    const sigset_t *set = arg;
    int sig = 0;
    if (sigwait(set, &sig) != 0) return NULL;
    CLARA_LOGW("second %s: exiting now without finishing in-flight requests",
               sig == SIGINT ? "SIGINT" : "SIGTERM");
    _exit(128 + sig);
}

static int g_port;

/* The model pulled on first start is in the cache (pull.c's thread): probe it and serve it. */
static int on_pulled(srv_server *s) {
    if (srv_probe_model(&s->cfg, &s->info) != 0) return -1;
    warn_subfolder(s);
    pthread_mutex_lock(&s->state.mu);
    memcpy(s->state.fingerprint, s->info.fingerprint, sizeof s->state.fingerprint);
    pthread_mutex_unlock(&s->state.mu);
    if (srv_sched_start(&s->cfg, &s->info, &s->queue, &s->state) != 0) return -1;
    atomic_store(&s->downloading, false);
    banner(s, g_port);
    return 0;
}

static void pull_banner(const srv_server *s, int port) {
    bool v6 = strchr(s->cfg.host, ':') != NULL;
    fprintf(stderr,
            "clara-server %s\n"
            "  model:      %s is not in the cache: pulling it now (progress below, in /health "
            "and /status;\n"
            "              model requests get 503 until it is ready)\n"
            "listening on http://%s%s%s:%d\n",
            CLARA_VERSION, s->cfg.pull_name, v6 ? "[" : "", s->cfg.host, v6 ? "]" : "", port);
    fflush(stderr);
}

/* Serves until SIGINT/SIGTERM; a model not yet cached is pulled meanwhile. Returns the exit
 * status. */
static int serve(srv_server *s, sigset_t *set) {
    int port = 0;
    void *daemon = NULL;
    bool pulling = s->cfg.pull_name != NULL;
    if (pulling) atomic_store(&s->downloading, true);
    if ((!pulling && srv_sched_start(&s->cfg, &s->info, &s->queue, &s->state) != 0) ||
        !(daemon = srv_http_start(s, &port))) {
        srv_sched_stop();
        return 1;
    }
    g_port = port;
    if (pulling) {
        pull_banner(s, port);
        if (srv_pull_start(s, on_pulled) != 0) {
            shutdown_server(s, daemon);
            return 1;
        }
    } else {
        banner(s, port);
    }
    int sig = 0;
    sigwait(set, &sig);
    /* from here a second signal exits at once (a pull's conversion in progress included) */
    pthread_t watcher;
    if (pthread_create(&watcher, NULL, second_signal, set) == 0) pthread_detach(watcher);
    bool pull_ok = srv_pull_stop(s);
    if (pull_ok)
        CLARA_LOGI("%s: finishing in-flight requests (grace %d s; a second signal exits at once)",
                   sig == SIGINT ? "SIGINT" : "SIGTERM", s->cfg.grace);
    shutdown_server(s, daemon);
    CLARA_LOGI("stopped");
    return pull_ok ? 0 : 1;
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
    /* A model file truncated or overwritten in place while mapped must fail requests, not kill
     * the server: faults in model mappings read zeros and the scheduler discards those results
     * (base/mapguard.h). Installed before the probe, which maps the files too. */
    if (clara_mapguard_install() != CLARA_OK) {
        fprintf(stderr, "clara-server: error: %s\n", clara_last_error());
        srv_config_free(&s->cfg);
        return 1;
    }
    if (!s->cfg.pull_name && srv_probe_model(&s->cfg, &s->info) != 0) {
        srv_config_free(&s->cfg);
        return 1;
    }
    if (!s->cfg.pull_name) warn_subfolder(s);
    if (srv_store_open(s) != 0) {
        srv_config_free(&s->cfg);
        return 1;
    }
    if (srv_queue_init(&s->queue, s->cfg.max_queue) != 0) return 1;
    pthread_mutex_init(&s->state.mu, NULL);
    s->state.unload_at = -1;
    memcpy(s->state.fingerprint, s->info.fingerprint, sizeof s->state.fingerprint);
    s->started_at = srv_now();
    s->state.keep_alive = s->cfg.keep_alive;
    atomic_init(&s->inflight, 0);
    atomic_init(&s->draining, false);
    atomic_init(&s->downloading, false);

    /* Every thread started from here on inherits the blocked set; only sigwait sees them. */
    static sigset_t set; /* second_signal's, which may outlive this frame */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = serve(s, &set);
    srv_queue_destroy(&s->queue);
    srv_store_close(s);
    srv_doccache_clear();
    pthread_mutex_destroy(&s->state.mu);
    srv_config_free(&s->cfg);
    return rc;
}
