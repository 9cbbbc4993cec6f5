/* server.h - clara-server internals shared by its modules: configuration (config.c), the task
 * queue (queue.c), the scheduler that owns the engine (sched.c), request handling (routes.c), the
 * libmicrohttpd glue (http.c), counters (metrics.c) and small helpers (util.c).
 *
 * Threads: libmicrohttpd runs one thread per connection; a handler parses and validates the body,
 * turns it into a srv_task, pushes it onto the bounded queue and waits. One scheduler thread owns
 * the model and the clara_ctx, loads the model on demand, runs tasks (generation tasks as a
 * continuous batch they join and leave step by step) and unloads the model after the keep-alive
 * period. */
#ifndef CLARA_SERVER_H
#define CLARA_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "base/mapfile.h"
#include "clara.h"
#include "hub/hub.h"

/* ---- configuration (config.c) ---------------------------------------------------------------- */

#define SRV_DEFAULT_PORT         8765
#define SRV_DEFAULT_MAX_BODY     (4u << 20)
#define SRV_MAX_MEMORIES         1024         /* documents per request */
#define SRV_MAX_MEMORY_BYTES     (256u << 10) /* bytes per document */
#define SRV_MAX_QUERY_BYTES      (16u << 10)
#define SRV_MAX_NEW_TOKENS_LIMIT 512
#define SRV_MAX_HEADER_BYTES     (8u << 10) /* total request header bytes we accept */
#define SRV_MAX_CHUNKS           4096       /* chunks of one document or memory (~1M tokens) */
/* Bodies are scanned (base/json_scan.h) before cJSON builds a tree, which costs ~100 bytes a value:
 * these bound that tree. The largest valid request holds 1,024 documents and a dozen other
 * values, 3 levels deep; unknown fields (ignored) get the rest. */
#define SRV_JSON_MAX_VALUES 4096
#define SRV_JSON_MAX_DEPTH  16

typedef struct {
    char *model;                  /* GGUF path (owned); in two-file mode the CLaRa add-on */
    char *base;                   /* two-file mode: the base model GGUF (owned), else NULL */
    char *host;                   /* bind address */
    int port;                     /* 0 = any free port */
    int threads;                  /* engine threads, 0 = physical cores */
    int backend;                  /* clara_backend_choice (--backend) */
    int gpu_layers;               /* --gpu-layers: -1 as many as fit, 0 none */
    int parallel;                 /* most tasks the scheduler takes together */
    int keep_alive;               /* seconds; 0 = unload after each request; -1 = never */
    char *api_key;                /* NULL = no authentication */
    bool api_key_empty;           /* an empty key was given: no authentication (said at startup) */
    bool api_key_on_command_line; /* visible in the process list: warned at startup */
    char **cors;        /* allowed origins ("*" allowed); NULL-terminated, NULL = CORS off */
    int max_new_tokens; /* default for requests that do not say */
    int max_queue;
    size_t max_body;
    size_t max_body_memory; /* bytes of bodies held while they arrive (at least one max_body) */
    int log_level;
    char *cache_dir;          /* accepted for compatibility; unused (models are local files) */
    int request_timeout;      /* seconds a request may wait and run */
    int conn_timeout;         /* seconds an idle/slow connection may stay open */
    int grace;                /* seconds to finish in-flight work on SIGTERM, then cancel it */
    int max_request_tokens;   /* documents + query + max_new_tokens of one request */
    int read_timeout;         /* seconds to receive a request's headers and body in full */
    int max_connections;      /* open connections at most */
    int max_conns_per_client; /* open connections from one client address at most */
    char **allowed_hosts;     /* Host names accepted ("*" = any); NULL = default for the bind */
    bool demo;                /* serving the bundled demo model */
    char *db;                 /* memory store: SQLite file or postgresql:// URL; NULL = none */
    size_t vector_cache;      /* bytes of the store's in-memory vector cache */
    int db_timeout;           /* seconds one store statement may take (PostgreSQL) */
    bool vectors_f32;         /* store vectors as f32 (default f16) */
    bool compress_cut;        /* /compress cuts long memories as the reference does */
    char *subfolder;  /* --subfolder as given (the Python server's compression choice), or NULL */
    size_t doc_cache; /* bytes of the OpenAI endpoints' document-vector cache; 0 = off */
    char *model_name; /* --model named a cached model: the name as given; else NULL */
    char *pull_name;  /* --model named a model not cached yet: pulled on first start */
    char *pull_type;  /* its type (NULL = the default), and the route */
    bool pull_full;
    bool ui; /* serve the web page at / and /ui/ (ui.c); off: / redirects to /docs */
} srv_config;

/* Fills cfg from CLARA_* variables then argv. Returns 0 to serve, 1 after printing help/version,
 * 2 on a usage or configuration error (message printed). */
int srv_config_load(srv_config *cfg, int argc, char **argv);
void srv_config_free(srv_config *cfg);

/* The .env file (dotenv.c), read as python-dotenv reads it. Loads path (absent: nothing); returns
 * 0, or -1 on an error (printed). */
int srv_dotenv_load(const char *path);
/* The value the file gives name (matched without regard to case), or NULL. */
const char *srv_dotenv_get(const char *name);
size_t srv_dotenv_count(void);
const char *srv_dotenv_key(size_t i); /* upper-cased */
void srv_dotenv_free(void);

/* ---- tasks and the queue (queue.c) ----------------------------------------------------------- */

typedef enum {
    SRV_EP_COMPRESS,    /* POST /compress */
    SRV_EP_V1_COMPRESS, /* POST /v1/compress */
    SRV_EP_V1_ANSWER,   /* POST /v1/answer */
    SRV_EP_V1_RETRIEVE, /* POST /v1/retrieve */
    SRV_EP_COLL_LIST,   /* GET /v1/collections */
    SRV_EP_COLL_GET,    /* GET /v1/collections/{c} */
    SRV_EP_COLL_DELETE, /* DELETE /v1/collections/{c} */
    SRV_EP_MEM_ADD,     /* POST /v1/collections/{c}/memories */
    SRV_EP_MEM_LIST,    /* GET /v1/collections/{c}/memories */
    SRV_EP_MEM_GET,     /* GET /v1/collections/{c}/memories/{id} */
    SRV_EP_MEM_PUT,     /* PUT /v1/collections/{c}/memories/{id} */
    SRV_EP_MEM_DELETE,  /* DELETE /v1/collections/{c}/memories/{id} */
    SRV_EP_MEM_QUERY,   /* POST /v1/collections/{c}/query */
    SRV_EP_QUERY_VEC,   /* (internal task) query-reasoner vectors of a query */
    SRV_EP_HEALTH,
    SRV_EP_STATUS,
    SRV_EP_METRICS,
    SRV_EP_OPENAPI,
    SRV_EP_OAI_MODELS,      /* GET /v1/models */
    SRV_EP_OAI_CHAT,        /* POST /v1/chat/completions */
    SRV_EP_OAI_COMPLETIONS, /* POST /v1/completions */
    SRV_EP_UI,              /* GET / and /ui/...: the web page (ui.c) */
    SRV_EP_OTHER,
    SRV_EP_COUNT,
} srv_endpoint;

typedef struct srv_task {
    srv_endpoint ep;
    cJSON *root; /* the parsed request; docs/query point into it */
    const char *query;
    size_t query_len;
    clara_text *docs; /* NULL when vectors are given */
    size_t n_docs;
    float *in_vectors; /* [n_docs][n_mem][n_embd] decoded from the request, or NULL */
    uint32_t max_new_tokens, top_k;
    bool has_keep_alive;
    int keep_alive;
    bool out_f16; /* /v1/compress: return f16 vectors */
    /* long documents: split each into chunks of at most doc_max_length tokens (the chunks
     * replace docs: docs[i] is chunk i of document chunk_of[i]); otherwise documents longer than
     * that are cut and listed in cut[] */
    bool split;
    clara_text *texts;   /* split: the documents as given (docs then holds the chunks) */
    clara_chunk *chunks; /* split: [n_docs] spans into texts[chunk_of[i]] */
    uint32_t *chunk_of;  /* split: [n_docs] */
    uint32_t *cut;       /* not split: indices of documents that were cut */
    size_t n_cut;
    char fingerprint[CLARA_FINGERPRINT_LEN + 1];        /* of the model that ran the task */
    char expect_fingerprint[CLARA_FINGERPRINT_LEN + 1]; /* given vectors belong to this model */
    float *query_vectors;                               /* SRV_EP_QUERY_VEC: [n_mem][n_embd] */
    /* generation options of the OpenAI endpoints (openai.c), given to the engine by set_params */
    bool chat;         /* CLARA_TASK_CHAT: the conversation alone, no documents */
    clara_text *turns; /* earlier turns user, assistant, ... (owned; the texts are in root) */
    size_t n_turns;
    const char *system; /* in root, or NULL */
    size_t system_len;
    float temperature, top_p; /* top_p 0 = the engine's default */
    uint32_t sample_top_k;
    uint64_t seed;
    bool ignore_eos;
    struct srv_stream *stream; /* text as it is generated, stop sequences (stream.c); or NULL */

    /* results, written by the scheduler before `done` */
    int status; /* HTTP status; 200 on success */
    char error[512];
    const char *error_type;
    clara_gen_result gen;
    bool has_gen;
    /* generation: the engine's parameters (they live as long as the task is in the batch) */
    clara_gen_params params;
    bool in_batch;
    double last_token_at; /* srv_mono() of the latest token (inter-token latency) */
    float *out_vectors;   /* /v1/compress */
    uint32_t *enc_tokens; /* encoder row length per document */
    uint64_t original_tokens;
    uint32_t n_mem, n_embd;
    double queue_ms, load_ms, compress_ms, generate_ms;
    int batch_size;

    /* synchronisation (the queue's mutex) */
    double enqueued_at;
    /* srv_mono() by which the request this task serves must be answered (504 after): set from
     * the request's start, so that a request taking several tasks (documents compressed, then
     * the answer) has one --request-timeout in all; 0 = from enqueued_at */
    double deadline;
    bool done;
    atomic_bool cancelled; /* the client left or timed out: skip it, or stop it if running */
    int refs;              /* handler + queue/scheduler */
    pthread_cond_t cv;
} srv_task;

srv_task *srv_task_new(srv_endpoint ep);
/* Drops one reference (under the queue lock); frees the task with the last one. */
void srv_task_release(srv_task *t);

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled when a task arrives or on shutdown */
    srv_task **ring;
    int cap, head, n;
    bool stop;
} srv_queue;

int srv_queue_init(srv_queue *q, int cap);
void srv_queue_destroy(srv_queue *q);
/* Adds t (taking a reference). Returns 0, or -1 when the queue is full or stopping. */
int srv_queue_push(srv_queue *q, srv_task *t);
/* Under q->mu: removes up to max tasks into out; returns how many. */
int srv_queue_pop_locked(srv_queue *q, srv_task **out, int max);
int srv_queue_depth(srv_queue *q);
/* Marks t finished and wakes its waiter (takes the lock). */
void srv_task_complete(srv_queue *q, srv_task *t);

/* ---- the scheduler (sched.c) ----------------------------------------------------------------- */

/* What the startup probe learned about the model (fixed for the server's life: requests are
 * validated and buffers sized by its shape, so every later load must have the same one). */
typedef struct {
    uint32_t n_mem, n_embd, n_vocab, n_ctx;
    bool can_retrieve;
    uint32_t doc_max_length, generation_top_k;
    char fingerprint[CLARA_FINGERPRINT_LEN + 1]; /* at startup (srv_state has the current one) */
    char type[32];                               /* weight type of the file, e.g. "f32" */
    char name[128];                              /* general.name or the file name */
    uint64_t file_bytes;                         /* the model file; in two-file mode the add-on */
    uint64_t base_file_bytes;                    /* two-file mode: the base model file; else 0 */
    clara_file_id file_id, base_id; /* the files as validated (base_id zero in one-file mode) */
} srv_model_info;

typedef struct {
    pthread_mutex_t mu; /* guards everything below */
    bool loaded, loading, load_failed;
    char load_error[512];
    double load_time_s;
    char fingerprint[CLARA_FINGERPRINT_LEN + 1]; /* of the model (last loaded, else probed) */
    double last_activity;                        /* wall clock, 0 = never */
    double unload_at;                            /* wall clock; < 0 = never / not loaded */
    int keep_alive; /* in force: the last batch's last keep_alive, else cfg.keep_alive */
    uint64_t requests_served, errors, loads, unloads;
    double latency_sum_ms;
    clara_ctx_backend_info backend; /* where the loaded model's layers run */
} srv_state;

int srv_sched_start(const srv_config *cfg, const srv_model_info *info, srv_queue *q, srv_state *st);
/* Cancels every task: what is running stops within a transformer layer or a decoding step, what
 * is queued never starts; their clients get 503 shutting_down (the end of the grace period). */
void srv_sched_cancel_all(void);
/* Stops the scheduler thread after the queue drains (or fails what is left), frees the model. */
void srv_sched_stop(void);
/* Loads the model once to check it and fill info, then frees it. */
int srv_probe_model(const srv_config *cfg, srv_model_info *info);

/* ---- streaming (stream.c; the rest of its interface is in stream.h) ---------------------------
 */

struct srv_stream;
/* The scheduler hands the loaded model to a task's stream before generating (set_params). */
void srv_stream_bind(struct srv_stream *st, const clara_model *m);
/* clara_gen_params.on_token of a task with a stream (token_arg = the stream). */
bool srv_stream_on_token(void *arg, const int32_t *ids, size_t n_ids);

/* ---- metrics (metrics.c) --------------------------------------------------------------------- */

void srv_metrics_request(srv_endpoint ep, int status, double ms);
void srv_metrics_batch(int tasks, int docs);
void srv_metrics_tokens(uint64_t prompt, uint64_t generated);
void srv_metrics_load(bool loaded);
void srv_metrics_ttft(double ms); /* a task's first token, from its arrival */
void srv_metrics_itl(double ms);  /* between two tokens of a task */
void srv_metrics_running(int n);  /* tasks in the running batch */
/* Prometheus text exposition; malloc'd. */
char *srv_metrics_render(srv_queue *q, srv_state *st);
const char *srv_endpoint_name(srv_endpoint ep);

/* ---- request handling (routes.c) ------------------------------------------------------------- */

typedef struct {
    int status;
    char *body; /* malloc'd */
    const char *content_type;
    int retry_after;      /* > 0: add Retry-After */
    uint64_t tokens;      /* for the log line */
    char note[200];       /* an error's message, for the log line */
    const char *location; /* a redirect's Location header (static), or NULL */
    struct srv_sse *sse;  /* a streamed reply (stream.c): the body is its events, not body */
    /* the web page's files (ui.c): their tag and caching, and for an HTML page the headers that
     * keep a browser from running anything but it (Content-Security-Policy, no framing) */
    const char *etag, *cache_control; /* static, or NULL */
    enum { SRV_PAGE_NONE, SRV_PAGE_UI, SRV_PAGE_DOCS } page;
} srv_reply;

typedef struct srv_server srv_server;

/* Where a request went: its path (decoded) and the query arguments the store endpoints read. */
typedef struct {
    const char *path;
    const char *limit, *after; /* ?limit=N&after=CURSOR, or NULL */
    const char *if_none_match; /* the request's If-None-Match header (the web page), or NULL */
} srv_target;

/* Handles a routed, authorised request whose whole body is in (body, len). `alive` tells whether
 * the client is still connected (polled while waiting). */
void srv_route(srv_server *s, srv_endpoint ep, const srv_target *target, const char *body,
               size_t len, bool (*alive)(void *), void *alive_arg, srv_reply *out);
/* An error reply {success:false, error, error_type}. */
void srv_reply_error(srv_reply *r, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

struct store;

/* The pull of a model not yet cached, made on first start (pull.c). */
typedef struct {
    pthread_mutex_t mu; /* guards p, failed, error */
    hub_progress p;
    bool failed;
    char error[512];
    atomic_int cancel;
    pthread_t thread;
    bool started;
    hub_render_state render; /* the log's progress lines (the pull thread's only) */
} srv_pull;

struct srv_server {
    srv_config cfg;
    srv_pull pull;
    atomic_bool downloading;  /* pulling the model: model requests get 503 */
    struct store *store;      /* NULL until opened (a PostgreSQL server may come up later) */
    pthread_mutex_t store_mu; /* opening the store */
    srv_model_info info;
    srv_queue queue;
    srv_state state;
    double started_at;
    atomic_int inflight;
    atomic_size_t body_bytes; /* request bodies held while they arrive (http.c) */
    atomic_bool draining;
};

/* ---- the memory store's endpoints (memory.c, memory_query.c) ----------------------------------
 */

/* Opens the configured store at startup. 0 = open (or none configured, or a PostgreSQL server
 * not reachable yet: retried by requests), -1 = a configuration error to stop on (printed). */
/* Starts the pull of cfg.pull_name; ready(s) runs on its thread once the model is cached
 * (it probes the model and starts the scheduler), then model requests are served. */
int srv_pull_start(srv_server *s, int (*ready)(srv_server *s));
/* Stops a pull in progress (partial files are kept) and joins it; false when the pull failed. */
bool srv_pull_stop(srv_server *s);
/* The pull's figures into o (for /health and /status). */
void srv_pull_json(srv_server *s, cJSON *o);

int srv_store_open(srv_server *s);
void srv_store_close(srv_server *s);
/* Which store endpoint a path and method name: the endpoint, or SRV_EP_OTHER with *allow set to
 * the methods the path takes (405), or with *allow NULL when no such path (404). */
srv_endpoint srv_store_match(const char *path, const char *method, const char **allow);
void srv_store_route(srv_server *s, srv_endpoint ep, const srv_target *target, const char *body,
                     size_t len, bool (*alive)(void *), void *alive_arg, srv_reply *r);

/* Shared by routes.c and memory.c: body checks, parse budget, waiting for the scheduler. */
int srv_parse_body(srv_server *s, const char *body, size_t len, double t0, bool (*alive)(void *),
                   void *arg, cJSON **root, srv_reply *r);
/* Queues t (its arrival time set); -2 with *r the 503 when the server is stopping or the queue
 * is full, else 0. */
int srv_submit(srv_server *s, srv_task *t, srv_reply *r);
/* Queues t and waits for it; fills *r with the error when it did not succeed. Returns 0 when t
 * ran with status 200, -2 when it was refused before queueing (shutting down, queue full), -1
 * otherwise. */
int srv_run_task(srv_server *s, srv_task *t, bool (*alive)(void *), void *arg, srv_reply *r);
void srv_reply_json(srv_reply *r, int status, cJSON *j);
void srv_count_request(srv_server *s, bool ok, double ms);

/* ---- the Python server's /compress contract, FastAPI's error shapes (compat.c) ------------------
 */

/* What FastAPI answers before validating a /compress body: 422 "missing" for an empty body or
 * JSON null, 400 for bytes that are not UTF-8, 422 "json_invalid" (located as Python's json module
 * locates it) for malformed JSON, 422 "model_attributes_type" for a value that is not an object.
 * Returns 0 to go on (the body is a JSON object), -1 after filling *r. */
int srv_compress_precheck(const char *body, size_t len, srv_reply *r);
/* Validates root as pydantic validates the Python server's CompressRequest (every error, lax
 * integers: "256", 256.0 and true are integers there) and rewrites those integers as numbers.
 * Returns 0, or -1 after filling *r with a 422 whose detail lists the errors. */
int srv_compress_validate(cJSON *root, srv_reply *r);
/* Gives a /compress error reply the FastAPI "detail" beside our fields: the error list of a 422
 * that has none yet, otherwise HTTPException's string. */
void srv_compress_error_detail(srv_reply *r);
/* GET /docs: the embedded OpenAPI description as a self-contained HTML page (malloc'd). */
char *srv_docs_html(void);

/* ---- the web page (ui.c) ------------------------------------------------------------------- */

/* Whether path is one of the page's files (/, /ui/, /ui/ui.css, ...). */
bool srv_ui_path(const char *path);
/* The file at path, or 304 when if_none_match (may be NULL) names its current ETag. */
void srv_ui_serve(const char *path, const char *if_none_match, srv_reply *r);

/* ---- HTTP (http.c) --------------------------------------------------------------------------- */

/* Starts the daemon behind the connection guard; *port_out receives the bound port. Returns NULL
 * on failure (message printed). */
void *srv_http_start(srv_server *s, int *port_out);
void srv_http_stop(void *daemon);
/* The Access-Control-Allow-Origin value for a request from origin under --cors-origins, or NULL
 * for none: origin itself where it is allowed; "" (no Origin field) gets none; NULL (not known:
 * the guard answering before it has a complete request head) gets "*" where every origin is
 * allowed. */
const char *srv_cors_origin(const srv_server *s, const char *origin);

/* ---- the connection guard (guard.c) ---------------------------------------------------------- */

struct MHD_Daemon;
/* Listens on cfg.host:cfg.port and relays every connection to the daemon through the strict
 * request framer, with the read deadline and the connection limits. */
int srv_guard_start(srv_server *s, struct MHD_Daemon *mhd, int *port_out);
/* Shutdown, in this order: srv_guard_stop_accepting, MHD_stop_daemon, srv_guard_stop (which
 * passes on the answers libmicrohttpd wrote, then closes every connection). */
void srv_guard_stop_accepting(void);
void srv_guard_stop(void);
/* The grace period is over: requests still arriving are answered 503 shutting_down by the guard
 * (libmicrohttpd would only close them when it stops). */
void srv_guard_cancel_partial(void);
/* A request on libmicrohttpd's socket fd starts (+1) or ends (-1): such a connection is never
 * closed to make room for another. */
void srv_guard_busy(int fd, int delta);

/* ---- helpers (util.c) ------------------------------------------------------------------------ */

double srv_now(void);  /* wall clock seconds */
double srv_mono(void); /* monotonic seconds */
bool srv_host_is_loopback(const char *host);
/* Copies src into dst[cap] with control bytes, quotes, backslashes and non-ASCII as \xNN. */
void srv_log_escape(char *dst, size_t cap, const char *src);
bool srv_utf8_valid(const char *s, size_t n);
/* True if a JSON text contains a \u0000 escape (cJSON would cut the string there). */
bool srv_json_has_nul_escape(const char *s, size_t n);
bool srv_ct_equal(const char *a, size_t alen, const char *b, size_t blen);
uint64_t srv_rss_bytes(void);
/* At start: large blocks always get their own mapping, so freeing them returns the memory. */
void srv_memory_init(void);
/* Returns the heaps' free pages to the kernel (after a large request: its tree's small blocks). */
void srv_memory_trim(void);
const char *srv_isa(void);
/* t (wall clock seconds) as Python's datetime.fromtimestamp(t, timezone.utc).isoformat() writes
 * it: "2024-01-15T10:30:00.250000+00:00", the fraction left out when it is zero. */
void srv_iso8601(double t, char *buf, size_t cap);

extern const char srv_openapi_json[];

int srv_main(int argc, char **argv);

#endif
