/* config.c - clara-server settings: every option is a command-line flag and a CLARA_* environment
 * variable (the Python server's names where it has them); the command line wins, then the
 * environment, then a .env file in the working directory (dotenv.c), as the Python server's
 * pydantic-settings had it. Values are gathered as strings first and parsed once, so an error
 * names where the bad value came from. The Python server's settings that mean nothing here are
 * accepted with a one-line note; a CLARA_* variable nobody reads gets a warning naming it. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/mapfile.h"
#include "hub/hub.h"
#include "server.h"
#include "store/store.h"

enum {
    O_MODEL,
    O_BASE,
    O_CLARA,
    O_HOST,
    O_PORT,
    O_BACKEND,
    O_GPU_LAYERS,
    O_THREADS,
    O_PARALLEL,
    O_KEEP_ALIVE,
    O_API_KEY,
    O_API_KEY_FILE,
    O_CORS,
    O_MAX_NEW_TOKENS,
    O_MAX_QUEUE,
    O_MAX_BODY,
    O_MAX_BODY_MEMORY,
    O_LOG_LEVEL,
    O_CACHE_DIR,
    O_REQUEST_TIMEOUT,
    O_CONN_TIMEOUT,
    O_GRACE,
    O_MAX_REQUEST_TOKENS,
    O_READ_TIMEOUT,
    O_MAX_CONNECTIONS,
    O_MAX_CONNS_PER_CLIENT,
    O_ALLOWED_HOSTS,
    O_DB,
    O_DB_TIMEOUT,
    O_VECTOR_CACHE,
    O_VECTOR_DTYPE,
    O_COMPRESS_CUT,
    /* the Python server's, accepted for compatibility */
    O_SUBFOLDER,
    O_WORKERS,
    O_RELOAD,
    O_DEVICE_ID,
    O_RATE_LIMIT,
    O_BATCH_SIZE,
    O_DOC_CACHE,
    O_PULL_TYPE,
    O_PULL_FULL,
    O_UI,
    O_COUNT
};

/* flag NULL: a variable only; arg NULL: a flag without a value (it means true, but --no-ui means
 * CLARA_UI=0) */
static const struct {
    const char *flag, *env, *arg, *help;
} g_opts[O_COUNT] = {
    {"model", "CLARA_MODEL", "FILE|NAME",
     "GGUF model, or a Hugging Face model name (apple/CLaRa-7B-Instruct[:SUB]):\n"
     "                               served from the cache, pulled on first start when not\n"
     "                               there (default: the bundled demo model)"},
    {"base", "CLARA_BASE", "FILE",
     "two-file mode: base model GGUF (any Mistral-7B-Instruct-v0.2 GGUF)"},
    {"clara", "CLARA_CLARA", "FILE",
     "two-file mode: CLaRa add-on GGUF (clara convert --addon-only)"},
    {"host", "CLARA_HOST", "ADDR", "bind address (default 127.0.0.1)"},
    {"port", "CLARA_PORT", "N", "port (default 8765; 0 = any free port)"},
    {"backend", "CLARA_BACKEND", "B",
     "auto (a GPU through Vulkan if there is one, else the CPU), cpu, or\n"
     "                               vulkan (any Vulkan device, lavapipe included); cuda, mps\n"
     "                               and gpu mean a GPU, an error without one (default auto)"},
    {"gpu-layers", "CLARA_GPU_LAYERS", "N",
     "layers on the GPU: -1 as many as fit (default), 0 none (the CPU only)"},
    {"threads", "CLARA_THREADS", "N", "engine threads (default: physical cores)"},
    {"parallel", "CLARA_PARALLEL", "N", "most queued requests run together (default 8)"},
    {"keep-alive", "CLARA_KEEP_ALIVE", "SECONDS",
     "unload the model after this idle time (default 300; 0 = after each request; -1 = never)"},
    {"api-key", "CLARA_API_KEY", "KEY", "require Authorization: Bearer KEY"},
    {"api-key-file", "CLARA_API_KEY_FILE", "FILE", "read the API key from FILE (first line)"},
    {"cors-origins", "CLARA_CORS_ORIGINS", "LIST", "allowed CORS origins, comma-separated or *"},
    {"max-new-tokens", "CLARA_MAX_NEW_TOKENS", "N", "default max_new_tokens (default 128)"},
    {"max-queue", "CLARA_MAX_QUEUE", "N", "queued requests before 503 (default 64)"},
    {"max-body", "CLARA_MAX_BODY", "BYTES", "largest request body (default 4194304)"},
    {"max-body-memory", "CLARA_MAX_BODY_MEMORY", "MB",
     "request bodies held at once as they arrive (at least one\n"
     "                               --max-body); beyond it 503 (default 256)"},
    {"log-level", "CLARA_LOG_LEVEL", "L", "debug, info, warn, error or quiet (default info)"},
    {"cache-dir", "CLARA_CACHE_DIR", "DIR",
     "the model cache of `clara pull` (default ~/.cache/clara-server)"},
    {"request-timeout", "CLARA_REQUEST_TIMEOUT", "SECONDS", "per-request limit (default 300)"},
    {"conn-timeout", "CLARA_CONN_TIMEOUT", "SECONDS", "idle connection limit (default 30)"},
    {"grace", "CLARA_GRACE", "SECONDS",
     "time to finish in-flight work on SIGTERM, then cancel it (default 10)"},
    {"max-request-tokens", "CLARA_MAX_REQUEST_TOKENS", "N",
     "token cost limit of a request: documents+query+new (default 16384)"},
    {"read-timeout", "CLARA_READ_TIMEOUT", "SECONDS",
     "time a client has to send a request's headers and body (default 30)"},
    {"max-connections", "CLARA_MAX_CONNECTIONS", "N", "open connections at most (default 512)"},
    {"max-conns-per-client", "CLARA_MAX_CONNS_PER_CLIENT", "N",
     "open connections from one client address at most (default 32)"},
    {"allowed-hosts", "CLARA_ALLOWED_HOSTS", "LIST",
     "Host names accepted, comma-separated or * (default: loopback names\n"
     "                               on a loopback bind, else any)"},
    {"db", "CLARA_DB", "FILE|URL",
     "memory store: a SQLite file, postgresql://... (replicas share one),\n"
     "                               or none (default $XDG_DATA_HOME/clara-server/memories.db)"},
    {"db-timeout", "CLARA_DB_TIMEOUT", "SECONDS",
     "PostgreSQL: longest wait for one statement, locks included, before\n"
     "                               the request gets 503 (default 30)"},
    {"vector-cache", "CLARA_VECTOR_CACHE", "MB", "memory for cached stored vectors (default 512)"},
    {"vector-dtype", "CLARA_VECTOR_DTYPE", "T", "stored vectors: f16 (default) or f32"},
    {"compress-cut", "CLARA_COMPRESS_CUT", "0|1",
     "/compress: 1 cuts memories longer than doc_max_length tokens as the\n"
     "                               reference does (default 0: read them in chunks)"},
    {"subfolder", "CLARA_SUBFOLDER", "NAME",
     "compression-16 or compression-128 (the Python server's): the sub-folder\n"
     "                               of a model NAME without one; for a model file, a\n"
     "                               different one is warned about"},
    {"workers", "CLARA_WORKERS", "N",
     "accepted; one process serves (--parallel requests run together)"},
    {"reload", "CLARA_RELOAD", NULL, "accepted; a compiled server does not reload itself"},
    {NULL, "CLARA_DEVICE_ID", "N", "accepted; the Vulkan device is chosen by CLARA_VK_DEVICE=N"},
    {NULL, "CLARA_RATE_LIMIT", "N",
     "accepted, not enforced (nor was it by the Python server);\n"
     "                               see --max-conns-per-client"},
    {NULL, "CLARA_BATCH_SIZE", "N", "accepted; requests are batched by --parallel"},
    {"doc-cache", "CLARA_DOC_CACHE", "MB",
     "memory for the vectors of documents sent to /v1/chat/completions and\n"
     "                               /v1/completions, reused when sent again (default 256; 0 = "
     "off)"},
    {"pull-type", "CLARA_PULL_TYPE", "T",
     "the type a model NAME is pulled in on first start (default q4_k_m)"},
    {"pull-full", "CLARA_PULL_FULL", NULL,
     "pull a model NAME by the full route (base safetensors converted here)"},
    {"no-ui", "CLARA_UI", NULL,
     "do not serve the web page at / and /ui/ (env: CLARA_UI=0); / then\n"
     "                               redirects to /docs, as the Python server's root did"},
};

/* Variables read elsewhere in this project (the engine, the tools, the tests) and ones planned:
 * not warned about. */
static const char *const g_known_env[] = {
    "CLARA_CACHE",        /* the Python server's README name of CLARA_CACHE_DIR */
    "CLARA_PULL_RETRIES", /* read by the model pull (src/hub) */
    "CLARA_VK_DEVICE",    /* the Vulkan device's number (src/vulkan/device.h) */
    "CLARA_VK_MEMORY_MB", /* the most device memory the engine uses (src/vulkan/engine.c) */
    "CLARA_TEST_BACKEND", "CLARA_TEST_GPU_LAYERS", /* the tests' backend (tests/run_tests.sh) */
    "CLARA_ISA",          "CLARA_PREFIX_CACHE",     "CLARA_TEST_PG",         "CLARA_TEST_PG2",
    "CLARA_BENCH_ARGS",   "CLARA_DURABILITY_KILLS", "CLARA_DURABILITY_SEED",
};

static void usage(FILE *out) {
    fprintf(out, "usage: clara-server [options]   (also: clara serve [options])\n\n");
    for (int i = 0; i < O_COUNT; i++) {
        char left[64];
        if (!g_opts[i].flag) continue;
        snprintf(left, sizeof left, "--%s %s", g_opts[i].flag, g_opts[i].arg ? g_opts[i].arg : "");
        fprintf(out, "  %-26s %s\n  %-26s   env %s\n", left, g_opts[i].help, "", g_opts[i].env);
    }
    fprintf(out, "\nvariables without a flag:\n");
    for (int i = 0; i < O_COUNT; i++)
        if (!g_opts[i].flag) fprintf(out, "  %-26s %s\n", g_opts[i].env, g_opts[i].help);
    fprintf(out, "  %-26s the same as CLARA_CACHE_DIR\n", "CLARA_CACHE");
    fprintf(out, "\nA .env file in the working directory may set the variables (CLARA_PORT=9000,\n"
                 "comments, quotes and `export ` as python-dotenv reads them); the environment\n"
                 "and the command line win over it.\n\n");
    fprintf(out, "  %-26s this help\n  %-26s print the version\n", "--help", "--version");
}

static int parse_long(const char *what, const char *src, const char *s, long lo, long hi,
                      long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno || v < lo || v > hi) {
        fprintf(stderr, "clara-server: error: %s (%s) must be an integer in [%ld, %ld], not '%s'\n",
                what, src, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Seconds with an optional s/m/h suffix ("300", "5m"); negative means never. */
static int parse_duration(const char *what, const char *src, const char *s, int *out) {
    char tmp[32];
    size_t n = strlen(s);
    long mul = 1;
    if (n > 0 && n < sizeof tmp && strchr("smh", s[n - 1])) {
        mul = s[n - 1] == 'h' ? 3600 : s[n - 1] == 'm' ? 60 : 1;
        memcpy(tmp, s, n - 1);
        tmp[n - 1] = '\0';
        s = tmp;
    }
    long v;
    if (parse_long(what, src, s, -1, INT_MAX / 3600, &v) != 0) return -1;
    *out = (int)(v < 0 ? -1 : v * mul);
    return 0;
}

/* "a,b" or the Python server's JSON list form '["a","b"]'. */
static char **parse_origins(const char *s) {
    size_t n = 1;
    for (const char *p = s; *p; p++) n += *p == ',';
    char **list = calloc(n + 1, sizeof *list);
    if (!list) return NULL;
    size_t k = 0;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        const char *a = p, *b = e;
        while (a < b && (isspace((unsigned char)*a) || *a == '[' || *a == '"')) a++;
        while (b > a && (isspace((unsigned char)b[-1]) || b[-1] == ']' || b[-1] == '"')) b--;
        if (b > a) list[k++] = strndup(a, (size_t)(b - a));
        p = *e ? e + 1 : e;
    }
    if (k == 0) {
        free(list);
        return NULL;
    }
    return list;
}

static char *read_key_file(const char *path) {
    char *text;
    size_t len;
    if (clara_read_file(path, 1 << 16, &text, &len) != CLARA_OK) {
        fprintf(stderr, "clara-server: error: API key file: %s\n", clara_last_error());
        return NULL;
    }
    size_t n = strcspn(text, "\r\n");
    while (n > 0 && isspace((unsigned char)text[n - 1])) n--;
    text[n] = '\0';
    if (n == 0 || strlen(text) != n) {
        fprintf(stderr, "clara-server: error: API key file %s has no key on its first line\n",
                path);
        free(text);
        return NULL;
    }
    return text;
}

/* The demo model lives next to the executable: <dir of /proc/self/exe>/demo/clara-demo.gguf. */
static char *demo_model_path(void) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash) return NULL;
    *slash = '\0';
    size_t need = strlen(exe) + sizeof "/demo/clara-demo.gguf";
    char *p = malloc(need);
    if (p) snprintf(p, need, "%s/demo/clara-demo.gguf", exe);
    return p;
}

static int check_backend(srv_config *c, const char *b, const char *src) {
    if (strcasecmp(b, "mlx") == 0) {
        fprintf(stderr,
                "clara-server: error: backend 'mlx' (%s) is not built into this binary; "
                "available: auto, cpu, vulkan (cuda, mps and gpu mean a GPU)\n",
                src);
        return -1;
    }
    clara_backend_choice choice;
    if (clara_backend_parse(b, &choice) != CLARA_OK) {
        fprintf(stderr, "clara-server: error: %s (%s)\n", clara_last_error(), src);
        return -1;
    }
    c->backend = (int)choice;
    return 0;
}

/* name's value: the environment's (an empty variable counts as unset), else the .env file's. */
static void env_value(const char *name, const char **val, const char **src) {
    const char *v = getenv(name);
    *src = name;
    if (v && *v) {
        *val = v;
        return;
    }
    v = srv_dotenv_get(name);
    *val = v && *v ? v : NULL;
    if (*val) *src = ".env";
}

static bool known_env(const char *name) {
    for (int i = 0; i < O_COUNT; i++)
        if (strcasecmp(name, g_opts[i].env) == 0) return true;
    for (size_t i = 0; i < sizeof g_known_env / sizeof g_known_env[0]; i++)
        if (strcasecmp(name, g_known_env[i]) == 0) return true;
    return false;
}

/* A CLARA_* variable that nothing reads is most likely a typo or a setting this server does not
 * have: say so rather than ignore it silently. */
static void warn_unknown_env(void) {
    extern char **environ;
    for (char **e = environ; e && *e; e++) {
        size_t n = strcspn(*e, "=");
        if (n < 6 || n > 64 || strncmp(*e, "CLARA_", 6) != 0) continue;
        char name[65];
        memcpy(name, *e, n);
        name[n] = '\0';
        if (!known_env(name)) {
            char shown[200];
            srv_log_escape(shown, sizeof shown, name);
            fprintf(stderr,
                    "clara-server: warning: unknown variable %s in the environment is "
                    "ignored (clara-server --help lists the variables)\n",
                    shown);
        }
    }
    for (size_t i = 0; i < srv_dotenv_count(); i++) {
        const char *k = srv_dotenv_key(i);
        if (strncmp(k, "CLARA_", 6) != 0 || known_env(k)) continue;
        char shown[200];
        srv_log_escape(shown, sizeof shown, k);
        fprintf(stderr,
                "clara-server: warning: unknown variable %s in .env is ignored "
                "(clara-server --help lists the variables)\n",
                shown);
    }
}

/* Collects the raw value of every option: .env, then the environment, then the command line. */
static int collect(int argc, char **argv, const char *val[O_COUNT], const char *src[O_COUNT],
                   char **api_key_arg) {
    struct option lo[O_COUNT + 3];
    int nl = 0;
    for (int i = 0; i < O_COUNT; i++) {
        env_value(g_opts[i].env, &val[i], &src[i]);
        if (i == O_CACHE_DIR && !val[i]) env_value("CLARA_CACHE", &val[i], &src[i]);
        if (g_opts[i].flag)
            lo[nl++] = (struct option){g_opts[i].flag,
                                       g_opts[i].arg ? required_argument : no_argument, 0, i};
    }
    lo[nl++] = (struct option){"help", no_argument, 0, 'h'};
    lo[nl++] = (struct option){"version", no_argument, 0, 'V'};
    lo[nl] = (struct option){0, 0, 0, 0};
    int ch;
    optind = 1;
    opterr = 1;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if (ch == 'h') {
            usage(stdout);
            return 1;
        }
        if (ch == 'V') {
            printf("clara-server %s\n", CLARA_VERSION);
            return 1;
        }
        if (ch < 0 || ch >= O_COUNT) {
            usage(stderr);
            return 2;
        }
        val[ch] = g_opts[ch].arg ? optarg : ch == O_UI ? "0" : "1";
        static char dashed[O_COUNT][40]; /* "--flag": where a value came from, in messages */
        snprintf(dashed[ch], sizeof dashed[ch], "--%s", g_opts[ch].flag);
        src[ch] = dashed[ch];
        if (ch == O_API_KEY) *api_key_arg = optarg;
    }
    if (optind < argc) {
        fprintf(stderr, "clara-server: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    return 0;
}

static int apply_numbers(srv_config *c, const char *val[O_COUNT], const char *src[O_COUNT]) {
    long v;
    struct {
        int opt;
        long lo, hi;
        int *dst;
    } ints[] = {
        {O_PORT, 0, 65535, &c->port},
        {O_THREADS, 0, 1024, &c->threads},
        {O_GPU_LAYERS, -1, 100000, &c->gpu_layers},
        {O_PARALLEL, 1, 64, &c->parallel},
        {O_MAX_NEW_TOKENS, 1, SRV_MAX_NEW_TOKENS_LIMIT, &c->max_new_tokens},
        {O_MAX_QUEUE, 1, 100000, &c->max_queue},
        {O_REQUEST_TIMEOUT, 1, 86400, &c->request_timeout},
        {O_DB_TIMEOUT, 1, 3600, &c->db_timeout},
        {O_CONN_TIMEOUT, 1, 86400, &c->conn_timeout},
        {O_GRACE, 0, 3600, &c->grace},
        {O_MAX_REQUEST_TOKENS, 1, 1 << 30, &c->max_request_tokens},
        {O_READ_TIMEOUT, 1, 86400, &c->read_timeout},
        {O_MAX_CONNECTIONS, 4, 100000, &c->max_connections},
        {O_MAX_CONNS_PER_CLIENT, 1, 100000, &c->max_conns_per_client},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int o = ints[i].opt;
        if (!val[o]) continue;
        if (parse_long(g_opts[o].flag, src[o], val[o], ints[i].lo, ints[i].hi, &v)) return -1;
        *ints[i].dst = (int)v;
    }
    if (val[O_MAX_BODY]) {
        if (parse_long("max-body", src[O_MAX_BODY], val[O_MAX_BODY], 1024, 1L << 30, &v)) return -1;
        c->max_body = (size_t)v;
    }
    if (val[O_MAX_BODY_MEMORY]) {
        if (parse_long("max-body-memory", src[O_MAX_BODY_MEMORY], val[O_MAX_BODY_MEMORY], 1,
                       1L << 20, &v))
            return -1;
        c->max_body_memory = (size_t)v << 20;
    }
    if (val[O_VECTOR_CACHE]) {
        if (parse_long("vector-cache", src[O_VECTOR_CACHE], val[O_VECTOR_CACHE], 1, 1L << 20, &v))
            return -1;
        c->vector_cache = (size_t)v << 20;
    }
    if (val[O_COMPRESS_CUT]) {
        if (parse_long("compress-cut", src[O_COMPRESS_CUT], val[O_COMPRESS_CUT], 0, 1, &v))
            return -1;
        c->compress_cut = v == 1;
    }
    if (val[O_DOC_CACHE]) {
        if (parse_long("doc-cache", src[O_DOC_CACHE], val[O_DOC_CACHE], 0, 1L << 20, &v)) return -1;
        c->doc_cache = (size_t)v << 20;
    }
    if (val[O_KEEP_ALIVE] &&
        parse_duration("keep-alive", src[O_KEEP_ALIVE], val[O_KEEP_ALIVE], &c->keep_alive))
        return -1;
    return 0;
}

/* A model path that is not a regular file is a configuration error now: a FIFO would block the
 * startup load forever, a directory would fail later and less clearly. */
static bool regular_file(const char *what, const char *path, const char *src) {
    if (clara_file_check(path) == CLARA_OK) return true;
    fprintf(stderr, "clara-server: error: %s (%s): %s\n", what, src, clara_last_error());
    return false;
}

static int apply_store(srv_config *c, const char *val[O_COUNT], const char *src[O_COUNT]) {
    if (val[O_VECTOR_DTYPE]) {
        if (strcmp(val[O_VECTOR_DTYPE], "f16") && strcmp(val[O_VECTOR_DTYPE], "f32")) {
            fprintf(stderr, "clara-server: error: vector-dtype (%s) must be f16 or f32, not '%s'\n",
                    src[O_VECTOR_DTYPE], val[O_VECTOR_DTYPE]);
            return -1;
        }
        c->vectors_f32 = strcmp(val[O_VECTOR_DTYPE], "f32") == 0;
    }
    if (val[O_DB] && strcmp(val[O_DB], "none") == 0) return 0;
    c->db = val[O_DB] && *val[O_DB] ? strdup(val[O_DB]) : store_default_path();
    if (!c->db) {
        fprintf(stderr, "clara-server: error: no --db given and neither XDG_DATA_HOME nor HOME "
                        "is set: pass --db FILE (or --db none)\n");
        return -1;
    }
    return 0;
}

/* pydantic's reading of a bool setting (CLARA_RELOAD). -1 when it is none of its words. */
static int parse_bool(const char *s) {
    static const char *const yes[] = {"1", "true", "yes", "on", "t", "y"};
    static const char *const no[] = {"0", "false", "no", "off", "f", "n"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) return 1;
        if (strcasecmp(s, no[i]) == 0) return 0;
    }
    return -1;
}

/* The Python server's settings that change nothing here: checked as it checked them, then a note
 * where the value asks for something this server does differently. */
static int apply_compat(srv_config *c, const char *val[O_COUNT], const char *src[O_COUNT]) {
    long v;
    if (val[O_SUBFOLDER]) {
        if (strcmp(val[O_SUBFOLDER], "compression-16") &&
            strcmp(val[O_SUBFOLDER], "compression-128")) {
            fprintf(stderr,
                    "clara-server: error: subfolder (%s) must be compression-16 or "
                    "compression-128, not '%s'\n",
                    src[O_SUBFOLDER], val[O_SUBFOLDER]);
            return -1;
        }
        c->subfolder = strdup(val[O_SUBFOLDER]);
    }
    if (val[O_WORKERS]) {
        if (parse_long("workers", src[O_WORKERS], val[O_WORKERS], 1, 1024, &v)) return -1;
        if (v > 1)
            fprintf(stderr,
                    "clara-server: note: workers %ld (%s): one process serves here; up to "
                    "--parallel requests run together\n",
                    v, src[O_WORKERS]);
    }
    if (val[O_RELOAD]) {
        int b = parse_bool(val[O_RELOAD]);
        if (b < 0) {
            fprintf(stderr, "clara-server: error: reload (%s) must be true or false, not '%s'\n",
                    src[O_RELOAD], val[O_RELOAD]);
            return -1;
        }
        if (b)
            fprintf(stderr,
                    "clara-server: note: reload (%s): a compiled server does not reload "
                    "itself; restart it after a change\n",
                    src[O_RELOAD]);
    }
    if (val[O_DEVICE_ID]) {
        if (parse_long("device id", src[O_DEVICE_ID], val[O_DEVICE_ID], 0, INT_MAX, &v)) return -1;
        fprintf(stderr,
                "clara-server: note: %s is ignored: choose the Vulkan device with "
                "CLARA_VK_DEVICE=N\n",
                src[O_DEVICE_ID]);
    }
    if (val[O_RATE_LIMIT]) {
        if (parse_long("rate limit", src[O_RATE_LIMIT], val[O_RATE_LIMIT], 0, INT_MAX, &v))
            return -1;
        fprintf(stderr,
                "clara-server: note: %s is not enforced (nor was it by the Python "
                "server); --max-conns-per-client bounds each client's connections\n",
                src[O_RATE_LIMIT]);
    }
    if (val[O_BATCH_SIZE]) {
        if (parse_long("batch size", src[O_BATCH_SIZE], val[O_BATCH_SIZE], 1, INT_MAX, &v))
            return -1;
        if (v > 1)
            fprintf(stderr,
                    "clara-server: note: %s: requests are batched as they queue up, "
                    "up to --parallel at once\n",
                    src[O_BATCH_SIZE]);
    }
    return 0;
}

/* --model NAME: the cached model's file(s), or, when it is not cached, the pull to make on first
 * start (the Python server downloaded on first start too). A path stays a path. */
static int resolve_name(srv_config *c, const char *val[O_COUNT], const char *src[O_COUNT]) {
    const char *v = val[O_MODEL];
    struct stat st;
    if (stat(v, &st) == 0 || !hub_is_model_name(v)) {
        c->model = strdup(v);
        return 0;
    }
    char *model = NULL, *base = NULL;
    clara_status s = hub_resolve(v, c->subfolder, &model, &base);
    if (s == CLARA_OK) {
        c->model = model;
        c->base = base;
        c->model_name = strdup(v);
        return 0;
    }
    if (s != CLARA_ERR_NOT_FOUND || hub_offline()) {
        fprintf(stderr, "clara-server: error: model %s (%s): %s%s\n", v, src[O_MODEL],
                clara_last_error(),
                s == CLARA_ERR_NOT_FOUND ? " (HF_HUB_OFFLINE is set: nothing is downloaded; "
                                           "--model also takes a GGUF file)"
                                         : "");
        return -1;
    }
    c->pull_name = strdup(v);
    c->model = strdup(v);
    c->pull_type = val[O_PULL_TYPE] ? strdup(val[O_PULL_TYPE]) : NULL;
    if (val[O_PULL_FULL]) {
        int b = parse_bool(val[O_PULL_FULL]);
        if (b < 0) {
            fprintf(stderr, "clara-server: error: pull full (%s) must be true or false, not '%s'\n",
                    src[O_PULL_FULL], val[O_PULL_FULL]);
            return -1;
        }
        c->pull_full = b == 1;
    }
    return 0;
}

static int apply_strings(srv_config *c, const char *val[O_COUNT], const char *src[O_COUNT]) {
    if (apply_store(c, val, src) != 0) return -1;
    if (val[O_UI]) {
        int b = parse_bool(val[O_UI]);
        if (b < 0) {
            fprintf(stderr,
                    "clara-server: error: ui (%s) must be 1 or 0 (true or false), not '%s'\n",
                    src[O_UI], val[O_UI]);
            return -1;
        }
        c->ui = b == 1;
    }
    if (!val[O_BASE] != !val[O_CLARA] || (val[O_BASE] && val[O_MODEL])) {
        fprintf(stderr, "clara-server: error: give --model FILE, or --base FILE with --clara FILE "
                        "(two-file mode)\n");
        return -1;
    }
    if (val[O_BACKEND] && check_backend(c, val[O_BACKEND], src[O_BACKEND])) return -1;
    if (val[O_LOG_LEVEL]) {
        c->log_level = clara_log_parse_level(val[O_LOG_LEVEL]);
        if (c->log_level < 0) {
            fprintf(stderr,
                    "clara-server: error: log level '%s' (%s): use debug, info, warn, "
                    "error or quiet\n",
                    val[O_LOG_LEVEL], src[O_LOG_LEVEL]);
            return -1;
        }
    }
    c->host = strdup(val[O_HOST] ? val[O_HOST] : "127.0.0.1");
    if (val[O_CACHE_DIR]) {
        c->cache_dir = strdup(val[O_CACHE_DIR]);
        setenv("CLARA_CACHE_DIR", val[O_CACHE_DIR], 1); /* where the model cache is read */
    }
    if (val[O_API_KEY_FILE] && !val[O_API_KEY]) {
        c->api_key = read_key_file(val[O_API_KEY_FILE]);
        if (!c->api_key) return -1;
    } else if (val[O_API_KEY] && *val[O_API_KEY]) {
        c->api_key = strdup(val[O_API_KEY]);
        c->api_key_on_command_line = strcmp(src[O_API_KEY], "--api-key") == 0;
    } else if (val[O_API_KEY]) {
        c->api_key_empty = true; /* --api-key '' means no key, as CLARA_API_KEY='' does */
    }
    if (val[O_CORS]) c->cors = parse_origins(val[O_CORS]);
    if (val[O_ALLOWED_HOSTS]) c->allowed_hosts = parse_origins(val[O_ALLOWED_HOSTS]);
    if (val[O_BASE]) {
        c->base = strdup(val[O_BASE]);
        c->model = strdup(val[O_CLARA]);
    } else if (val[O_MODEL]) {
        if (resolve_name(c, val, src) != 0) return -1;
        if (c->pull_name) return 0; /* pulled on first start (main.c) */
    } else {
        c->model = demo_model_path();
        c->demo = true;
    }
    if (!c->model || !c->host || (val[O_BASE] && !c->base)) {
        fprintf(stderr, "clara-server: error: out of memory\n");
        return -1;
    }
    if (c->base && access(c->base, R_OK) != 0) {
        fprintf(stderr, "clara-server: error: base model %s (%s): %s\n", c->base, src[O_BASE],
                strerror(errno));
        return -1;
    }
    if (c->base && !regular_file("base model", c->base, src[O_BASE])) return -1;
    const char *msrc = src[c->base ? O_CLARA : O_MODEL]; /* where the model's path came from */
    if (access(c->model, R_OK) != 0) {
        if (c->demo)
            fprintf(stderr,
                    "clara-server: error: no model configured and the demo model %s is "
                    "missing (run `make`); pass --model FILE.gguf\n",
                    c->model);
        else
            fprintf(stderr,
                    "clara-server: error: model %s (%s): %s; --model/CLARA_MODEL names a "
                    "GGUF file (from `clara convert`) or a model to pull from the Hugging Face "
                    "Hub (apple/CLaRa-7B-Instruct)\n",
                    c->model, msrc, strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(c->model, &st) == 0 && S_ISDIR(st.st_mode)) { /* a Hugging Face checkout, say */
        fprintf(stderr,
                "clara-server: error: model %s (%s) is a directory: --model names one GGUF "
                "file; make one from a Hugging Face checkout with `clara convert`, or give the "
                "repo's name (apple/CLaRa-7B-Instruct) to pull it\n",
                c->model, msrc);
        return -1;
    }
    return regular_file(c->base ? "add-on" : "model", c->model, msrc) ? 0 : -1;
}

int srv_config_load(srv_config *c, int argc, char **argv) {
    memset(c, 0, sizeof *c);
    c->port = SRV_DEFAULT_PORT;
    c->gpu_layers = -1; /* as many as fit */
    c->parallel = 8;
    c->keep_alive = 300;
    c->max_new_tokens = 128;
    c->max_queue = 64;
    c->max_body = SRV_DEFAULT_MAX_BODY;
    c->max_body_memory = (size_t)256 << 20;
    c->log_level = CLARA_LOG_INFO;
    c->request_timeout = 300;
    c->db_timeout = 30;
    c->conn_timeout = 30;
    c->grace = 10;
    c->max_request_tokens = 16384;
    c->read_timeout = 30;
    c->max_connections = 512;
    c->max_conns_per_client = 32;
    c->doc_cache = (size_t)256 << 20;
    c->ui = true;
    const char *val[O_COUNT], *src[O_COUNT];
    char *key_arg = NULL;
    if (srv_dotenv_load(".env") != 0) return 2;
    int rc = collect(argc, argv, val, src, &key_arg);
    if (rc != 0) {
        srv_dotenv_free();
        return rc;
    }
    warn_unknown_env();
    const char *env_key = getenv("CLARA_API_KEY");
    if (!env_key) env_key = srv_dotenv_get("CLARA_API_KEY");
    if (!val[O_API_KEY] && env_key && !*env_key) c->api_key_empty = true;
    rc = apply_numbers(c, val, src) || apply_compat(c, val, src) || apply_strings(c, val, src);
    srv_dotenv_free(); /* every value is copied or parsed by now */
    if (rc) return 2;
    char dev[320];
    bool device_asked = c->backend == CLARA_BACKEND_VULKAN || c->backend == CLARA_BACKEND_GPU;
    if (device_asked && c->gpu_layers != 0 &&
        clara_backend_probe((clara_backend_choice)c->backend, dev, sizeof dev) != CLARA_OK) {
        fprintf(stderr, "clara-server: error: backend %s: %s%s\n",
                c->backend == CLARA_BACKEND_GPU ? "gpu (cuda, mps)" : "vulkan", clara_last_error(),
                c->backend == CLARA_BACKEND_GPU ? "; --backend cpu runs on the CPU, --backend "
                                                  "vulkan on any Vulkan device"
                                                : "");
        return 2;
    }
    /* Other local users can read a process's arguments (ps, /proc/PID/cmdline): blank the key
     * there now that it is copied (a window remains from exec to here: prefer the key file). */
    if (key_arg) memset(key_arg, 'x', strlen(key_arg));
    return 0;
}

void srv_config_free(srv_config *c) {
    free(c->model);
    free(c->base);
    free(c->host);
    free(c->api_key);
    free(c->cache_dir);
    free(c->db);
    free(c->subfolder);
    free(c->model_name);
    free(c->pull_name);
    free(c->pull_type);
    for (char **p = c->cors; p && *p; p++) free(*p);
    free(c->cors);
    for (char **p = c->allowed_hosts; p && *p; p++) free(*p);
    free(c->allowed_hosts);
    memset(c, 0, sizeof *c);
}
