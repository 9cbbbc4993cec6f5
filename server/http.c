/* http.c - the libmicrohttpd glue: one thread per connection, each fed by the connection guard
 * (guard.c), which has already checked the request's framing. Here: routing (404/405), the Host
 * check against DNS rebinding (403), header-size limit (431), API key (401/403, constant time,
 * /health exempt), JSON-only POST bodies (415: a web page cannot send those without CORS),
 * body-size limit (413, from Content-Length before reading - also under Expect: 100-continue -
 * and while reading), the bound on bodies held at once (503), 503 while shutting down, CORS when
 * origins are configured, one log line (control bytes escaped) and the metrics per request.
 * Everything else is routes.c. */
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <arpa/inet.h>
#include <strings.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/log.h"
#include "openai.h"
#include "server.h"
#include "stream.h"

/* Bodies up to this many times --max-body are read and dropped before the 413 is sent. */
#define DISCARD_FACTOR 16

typedef struct {
    srv_endpoint ep;
    char method[40]; /* as sent, control bytes escaped for the log */
    char path[160];
    char note[200]; /* an error's message, for the log */
    int guard_fd;   /* libmicrohttpd's socket, known to the guard (-1: none) */
    char *body;
    size_t len, cap;
    size_t held; /* bytes of s->body_bytes this body holds */
    int refused; /* 413 (too large) or 503 (no room): the rest of the body is dropped */
    size_t discarded;
    double t0;
    int status;      /* what was answered (0 = nothing yet) */
    bool streamed;   /* the answer is an event stream */
    uint64_t tokens; /* generated tokens, for the log line */
} conn_ctx;

static const struct {
    const char *path, *method;
    srv_endpoint ep;
} g_routes[] = {
    {"/compress", "POST", SRV_EP_COMPRESS},
    {"/v1/compress", "POST", SRV_EP_V1_COMPRESS},
    {"/v1/answer", "POST", SRV_EP_V1_ANSWER},
    {"/v1/retrieve", "POST", SRV_EP_V1_RETRIEVE},
    {"/health", "GET", SRV_EP_HEALTH},
    {"/status", "GET", SRV_EP_STATUS},
    {"/metrics", "GET", SRV_EP_METRICS},
    {"/openapi.json", "GET", SRV_EP_OPENAPI},
    {"/v1/models", "GET", SRV_EP_OAI_MODELS},
    {"/v1/chat/completions", "POST", SRV_EP_OAI_CHAT},
    {"/v1/completions", "POST", SRV_EP_OAI_COMPLETIONS},
    /* the API description as a page, and the root that leads there (the Python server's) */
    {"/docs", "GET", SRV_EP_OPENAPI},
    {"/", "GET", SRV_EP_OPENAPI},
};
#define N_ROUTES (sizeof g_routes / sizeof g_routes[0])

static int find_route(const char *url) {
    for (size_t i = 0; i < N_ROUTES; i++)
        if (strcmp(url, g_routes[i].path) == 0) return (int)i;
    return -1;
}

const char *srv_cors_origin(const srv_server *s, const char *origin) {
    if (!s->cfg.cors || (origin && !*origin)) return NULL;
    for (char **o = s->cfg.cors; *o; o++) {
        if (strcmp(*o, "*") == 0) return origin ? origin : "*";
        if (origin && strcmp(*o, origin) == 0) return origin;
    }
    return NULL;
}

/* With CORS on, every reply varies by Origin (a cache must not serve one origin's reply to
 * another), and an allowed origin may read it, with the headers a client acts on. */
static void add_cors(srv_server *s, struct MHD_Connection *c, struct MHD_Response *resp) {
    if (!s->cfg.cors) return;
    MHD_add_response_header(resp, "Vary", "Origin");
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    const char *allow = srv_cors_origin(s, origin ? origin : "");
    if (!allow) return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", allow);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", "Retry-After, ETag, Location");
}

/* The web page runs only its own files: no inline script or style, nothing from elsewhere, no
 * plugins, no framing by other sites; its API calls go to this server. /docs is one static page
 * with its style inline and no script at all. */
static void add_page_headers(struct MHD_Response *resp, int page) {
    MHD_add_response_header(resp, "Content-Security-Policy",
                            page == SRV_PAGE_UI
                                ? "default-src 'self'; script-src 'self'; style-src 'self'; "
                                  "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                                  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
                                : "default-src 'none'; style-src 'unsafe-inline'; "
                                  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
}

/* A streamed reply's body: its events as they come (the reader blocks in this connection's own
 * thread, polling the client). */
static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    ssize_t n = srv_sse_read(cls, buf, max);
    return n > 0    ? n
           : n == 0 ? MHD_CONTENT_READER_END_OF_STREAM
                    : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void sse_free(void *cls) {
    srv_sse_free(cls);
}

static enum MHD_Result send_stream(srv_server *s, struct MHD_Connection *c, conn_ctx *cx,
                                   srv_reply *r) {
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_reader, r->sse, sse_free);
    if (!resp) {
        srv_sse_free(r->sse);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* nginx: pass events at once */
    add_cors(s, c, resp);
    srv_sse_count_into(r->sse, &cx->tokens);
    enum MHD_Result ok = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    cx->status = 200;
    cx->streamed = true;
    return ok;
}

/* Queues r (taking its body) and records the status for the completion callback. */
static enum MHD_Result send_reply(srv_server *s, struct MHD_Connection *c, conn_ctx *cx,
                                  srv_reply *r, const char *allow, bool early) {
    if (r->sse) return send_stream(s, c, cx, r);
    if (srv_openai_endpoint(cx->ep)) srv_openai_error_shape(r); /* OpenAI's SDKs read theirs */
    if (r->status == 499) {
        /* the client left: 499 is the log's word for that, never an answer; just close */
        free(r->body);
        cx->status = 499;
        snprintf(cx->note, sizeof cx->note, "%s", r->note);
        return MHD_NO;
    }
    /* /compress errors carry FastAPI's "detail" too, whichever layer refused the request */
    if (cx->ep == SRV_EP_COMPRESS && r->status >= 400) srv_compress_error_detail(r);
    const char *body = r->body ? r->body : "";
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), r->body ? (void *)r->body : (void *)"",
                                        r->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(r->body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type",
                            r->content_type ? r->content_type : "application/json");
    if (r->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->retry_after);
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    if (allow) MHD_add_response_header(resp, "Allow", allow);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (r->location) MHD_add_response_header(resp, "Location", r->location);
    if (r->etag) MHD_add_response_header(resp, "ETag", r->etag);
    if (r->cache_control) MHD_add_response_header(resp, "Cache-Control", r->cache_control);
    if (r->page) add_page_headers(resp, r->page);
    /* an answer before the body is read: the rest of it will not be parsed as a next request */
    if (early) MHD_add_response_header(resp, "Connection", "close");
    add_cors(s, c, resp);
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    cx->status = r->status;
    cx->tokens = r->tokens;
    snprintf(cx->note, sizeof cx->note, "%s", r->status >= 400 ? r->note : "");
    return ok;
}

static enum MHD_Result send_error(srv_server *s, struct MHD_Connection *c, conn_ctx *cx, int status,
                                  const char *type, const char *msg, const char *allow) {
    srv_reply r = {0};
    srv_reply_error(&r, status, type, "%s", msg);
    if (status == 503) r.retry_after = 1;
    return send_reply(s, c, cx, &r, allow, true);
}

static enum MHD_Result send_too_large(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    char msg[96];
    snprintf(msg, sizeof msg, "the request body is larger than %zu bytes", s->cfg.max_body);
    return send_error(s, c, cx, 413, "payload_too_large", msg, NULL);
}

static enum MHD_Result send_busy(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    return send_error(s, c, cx, 503, "overloaded",
                      "too many request bodies are arriving at once (--max-body-memory); retry "
                      "later",
                      NULL);
}

static enum MHD_Result sum_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value) {
    (void)kind;
    *(size_t *)cls += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

/* 0 = authorised; otherwise the HTTP status to answer. The scheme is case-insensitive (RFC
 * 9110 11.1); the whole value counts, so bytes after a NUL cannot ride along. */
static int check_auth(srv_server *s, struct MHD_Connection *c) {
    if (!s->cfg.api_key) return 0;
    const char *h = NULL;
    size_t n = 0;
    if (MHD_lookup_connection_value_n(c, MHD_HEADER_KIND, "Authorization", 13, &h, &n) != MHD_YES ||
        !h || n < 7 || strncasecmp(h, "Bearer ", 7) != 0)
        return 401;
    size_t at = 7;
    while (at < n && h[at] == ' ') at++;
    if (at == n) return 401;
    return srv_ct_equal(h + at, n - at, s->cfg.api_key, strlen(s->cfg.api_key)) ? 0 : 403;
}

static enum MHD_Result send_auth_error(srv_server *s, struct MHD_Connection *c, conn_ctx *cx,
                                       int status) {
    return status == 401 ? send_error(s, c, cx, 401, "unauthorized",
                                      "missing API key: send Authorization: Bearer <key>", NULL)
                         : send_error(s, c, cx, 403, "forbidden", "invalid API key", NULL);
}

static bool ieq_n(const char *a, size_t n, const char *lit) {
    return strlen(lit) == n && strncasecmp(a, lit, n) == 0;
}

/* The name part of a Host value: "[::1]:8765" -> "[::1]", "Example.com:80" -> "Example.com".
 * Returns false unless what follows the name is nothing or ":" and a port number, so that
 * "localhost:80@evil.example" or "[::1].evil.example" are no loopback names. */
static bool host_name(const char *h, size_t *n) {
    const char *e = h[0] == '[' ? strchr(h, ']') : h + strcspn(h, ":");
    if (!e) return false;
    if (h[0] == '[') e++;
    *n = (size_t)(e - h);
    if (*e == '\0') return true;
    if (*e != ':' || !e[1] || strlen(e + 1) > 5) return false;
    return strspn(e + 1, "0123456789") == strlen(e + 1);
}

static bool loopback_name(const char *h, size_t n) {
    if (ieq_n(h, n, "localhost") || ieq_n(h, n, "[::1]")) return true;
    if (n > 10 && strncasecmp(h + n - 10, ".localhost", 10) == 0) return true; /* RFC 6761 */
    struct in_addr a;
    char ip[16];
    if (n >= sizeof ip) return false;
    memcpy(ip, h, n);
    ip[n] = '\0';
    return inet_pton(AF_INET, ip, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

/* DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 reaches a loopback
 * server with Host: evil.example. A loopback server accepts only loopback names unless
 * --allowed-hosts says otherwise; a server bound elsewhere accepts any unless configured. */
static bool host_allowed(srv_server *s, struct MHD_Connection *c) {
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    if (!h) return true; /* HTTP/1.0 without Host; the guard requires it in HTTP/1.1 */
    size_t n;
    if (!host_name(h, &n)) return false;
    if (s->cfg.allowed_hosts) {
        for (char **a = s->cfg.allowed_hosts; *a; a++)
            if (strcmp(*a, "*") == 0 || ieq_n(h, n, *a)) return true;
        return false;
    }
    return !srv_host_is_loopback(s->cfg.host) || loopback_name(h, n);
}

/* POST bodies must say they are JSON: a web page can send text/plain, form data or no type at
 * all to any server without asking (a CORS "simple request"), but not application/json. */
static bool json_content_type(struct MHD_Connection *c) {
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!ct) return false;
    size_t n = strcspn(ct, "; \t");
    return ieq_n(ct, n, "application/json");
}

/* Whether v is a list of header names as a preflight's Access-Control-Request-Headers gives
 * them: tokens, commas and spaces, and not long. */
static bool header_names(const char *v) {
    size_t n = strlen(v);
    if (n == 0 || n > 1024) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (!isalnum(ch) && !strchr("!#$%&'*+-.^_`|~, \t", ch)) return false;
    }
    return true;
}

static enum MHD_Result preflight(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Access-Control-Allow-Methods",
                            "GET, POST, PUT, DELETE, OPTIONS");
    /* the headers the page asks to send are allowed (the OpenAI SDK sends its X-Stainless-*
     * ones from a browser too): they carry no authority here, only the API key does */
    const char *asked =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    char allow[1100] = "Authorization, Content-Type";
    if (asked && header_names(asked))
        snprintf(allow + strlen(allow), sizeof allow - strlen(allow), ", %s", asked);
    MHD_add_response_header(resp, "Access-Control-Allow-Headers", allow);
    MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    add_cors(s, c, resp);
    enum MHD_Result ok = MHD_queue_response(c, 204, resp);
    MHD_destroy_response(resp);
    cx->status = 204;
    return ok;
}

/* A body is held in full from its first byte until it is routed: without a bound, clients that
 * each send all but the last byte of a --max-body body would make the server hold
 * --max-connections of them (2 GB at the defaults). Bytes are taken from the budget
 * (--max-body-memory, at least one --max-body) as a body's buffer is allocated or grows. */
static bool hold_body_bytes(srv_server *s, conn_ctx *cx, size_t n) {
    size_t budget =
        s->cfg.max_body_memory > s->cfg.max_body ? s->cfg.max_body_memory : s->cfg.max_body;
    size_t cur = atomic_load(&s->body_bytes);
    do {
        if (n > budget || cur > budget - n) return false;
    } while (!atomic_compare_exchange_weak(&s->body_bytes, &cur, cur + n));
    cx->held += n;
    return true;
}

static void free_body(srv_server *s, conn_ctx *cx) {
    free(cx->body);
    cx->body = NULL;
    cx->len = cx->cap = 0;
    atomic_fetch_sub(&s->body_bytes, cx->held);
    cx->held = 0;
}

/* The checks made as soon as the headers are in, before any body is read. Returns MHD_YES with
 * cx->status still 0 to go on reading the body. */
static enum MHD_Result first_call(srv_server *s, struct MHD_Connection *c, conn_ctx *cx,
                                  const char *url, const char *method) {
    int ri = find_route(url);
    bool is_head = strcmp(method, "HEAD") == 0;
    bool has_body;                       /* POST and PUT carry a JSON body */
    if (s->cfg.ui && srv_ui_path(url)) { /* the web page (/ is the API description's without it) */
        cx->ep = SRV_EP_UI;
        if (strcmp(method, "GET") != 0 && !is_head)
            return send_error(s, c, cx, 405, "method_not_allowed", "method not allowed here",
                              "GET, HEAD");
        has_body = false;
    } else if (ri >= 0) {
        cx->ep = g_routes[ri].ep;
        bool is_get = strcmp(g_routes[ri].method, "GET") == 0;
        if (strcmp(method, "OPTIONS") == 0 && s->cfg.cors) return preflight(s, c, cx);
        if (strcmp(method, g_routes[ri].method) != 0 && !(is_get && is_head))
            return send_error(s, c, cx, 405, "method_not_allowed", "method not allowed here",
                              is_get ? "GET, HEAD" : "POST");
        has_body = !is_get;
    } else {
        const char *allow = NULL;
        cx->ep = srv_store_match(url, is_head ? "GET" : method, &allow);
        if (cx->ep == SRV_EP_OTHER) {
            /* with a key, which paths exist is told only to those who have it */
            int auth = allow ? 0 : check_auth(s, c);
            if (auth) return send_auth_error(s, c, cx, auth);
            if (!allow) return send_error(s, c, cx, 404, "not_found", "no such endpoint", NULL);
            if (strcmp(method, "OPTIONS") == 0 && s->cfg.cors) return preflight(s, c, cx);
            return send_error(s, c, cx, 405, "method_not_allowed", "method not allowed here",
                              allow);
        }
        has_body = strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0;
    }
    size_t hdr = 0;
    MHD_get_connection_values(c, MHD_HEADER_KIND, sum_header, &hdr);
    if (hdr > SRV_MAX_HEADER_BYTES)
        return send_error(s, c, cx, 431, "headers_too_large", "request headers are too large",
                          NULL);
    if (!host_allowed(s, c))
        return send_error(s, c, cx, 403, "host_not_allowed",
                          "this Host is not allowed (DNS rebinding protection); the server "
                          "accepts the names given with --allowed-hosts",
                          NULL);
    /* the page's files need no key (the page asks for it when an API call answers 401) */
    int auth = cx->ep == SRV_EP_HEALTH || cx->ep == SRV_EP_UI ? 0 : check_auth(s, c);
    if (auth) return send_auth_error(s, c, cx, auth);
    if (has_body && !json_content_type(c))
        return send_error(s, c, cx, 415, "unsupported_media_type",
                          "send the body as JSON with Content-Type: application/json", NULL);
    if (atomic_load(&s->draining) && cx->ep != SRV_EP_HEALTH)
        return send_error(s, c, cx, 503, "shutting_down", "the server is shutting down", NULL);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    unsigned long long announced = cl ? strtoull(cl, NULL, 10) : 0;
    /* answered before any of it is read (so also before a 100 Continue); the guard drains what
     * the client still sends so that it sees the answer */
    if (announced > s->cfg.max_body) return send_too_large(s, c, cx);
    if (announced > 0) {
        if (!hold_body_bytes(s, cx, (size_t)announced)) return send_busy(s, c, cx);
        cx->body = malloc((size_t)announced); /* exactly: no doubling growth for big bodies */
        if (cx->body)
            cx->cap = (size_t)announced;
        else
            free_body(s, cx);
    }
    return MHD_YES;
}

static int append_body(srv_server *s, conn_ctx *cx, const char *data, size_t n) {
    if (!cx->refused && cx->len + n > s->cfg.max_body) cx->refused = 413;
    if (!cx->refused && cx->len + n > cx->cap) {
        size_t cap = cx->cap ? cx->cap : 4096;
        while (cap < cx->len + n) cap *= 2;
        char *p = hold_body_bytes(s, cx, cap - cx->cap) ? realloc(cx->body, cap) : NULL;
        if (p) {
            cx->body = p;
            cx->cap = cap;
        } else {
            cx->refused = 503;
        }
    }
    if (cx->refused) {
        /* keep reading (and dropping) so the error can still be sent, but not forever */
        free_body(s, cx);
        cx->discarded += n;
        return cx->discarded / DISCARD_FACTOR > s->cfg.max_body ? -1 : 0;
    }
    memcpy(cx->body + cx->len, data, n);
    cx->len += n;
    return 0;
}

/* Whether the client is still connected: a peek that reads 0 bytes means it closed. The handler
 * thread owns the connection while it waits, so nothing else reads the socket. */
static bool client_alive(void *arg) {
    struct MHD_Connection *c = arg;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return true;
    char b;
    ssize_t k = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (k > 0) return true;
    if (k == 0) return false;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)version;
    srv_server *s = cls;
    conn_ctx *cx = *con_cls;
    if (!cx) {
        cx = calloc(1, sizeof *cx);
        if (!cx) return MHD_NO;
        *con_cls = cx;
        cx->t0 = srv_mono();
        cx->ep = SRV_EP_OTHER;
        srv_log_escape(cx->method, sizeof cx->method, method);
        srv_log_escape(cx->path, sizeof cx->path, url);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        cx->guard_fd = ci ? ci->connect_fd : -1;
        if (cx->guard_fd >= 0) srv_guard_busy(cx->guard_fd, +1);
        atomic_fetch_add(&s->inflight, 1);
        return first_call(s, c, cx, url, method);
    }
    if (cx->status) { /* answered early: drop whatever body follows */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        int rc = append_body(s, cx, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return rc == 0 ? MHD_YES : MHD_NO;
    }
    if (cx->refused == 413) return send_too_large(s, c, cx);
    if (cx->refused == 503) return send_busy(s, c, cx);
    srv_reply r = {0};
    srv_target target = {url, MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit"),
                         MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after"),
                         MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match")};
    srv_route(s, cx->ep, &target, cx->body ? cx->body : "", cx->len, client_alive, c, &r);
    free_body(s, cx);
    return send_reply(s, c, cx, &r, NULL, false);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)c;
    srv_server *s = cls;
    conn_ctx *cx = *con_cls;
    if (!cx) return;
    int status = cx->status;
    if (!status) status = toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? 408 : 499;
    /* a stream whose client left before its end was cancelled (stream.c): 499, as for a reply
     * not begun */
    if (cx->streamed && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) status = 499;
    double ms = (srv_mono() - cx->t0) * 1e3;
    srv_metrics_request(cx->ep, status, ms);
    clara_log(CLARA_LOG_INFO, "%s %s %d %.1f ms tokens=%llu%s%s%s%s", cx->method, cx->path, status,
              ms, (unsigned long long)cx->tokens,
              toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed)",
              cx->note[0] ? " error=\"" : "", cx->note, cx->note[0] ? "\"" : "");
    if (cx->guard_fd >= 0) srv_guard_busy(cx->guard_fd, -1);
    free_body(s, cx);
    free(cx);
    *con_cls = NULL;
    atomic_fetch_sub(&s->inflight, 1);
}

/* Paths are matched exactly as sent: nothing to unescape, and "/compress%00" is not
 * "/compress". */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls;
    (void)c;
    return strlen(s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    clara_log(CLARA_LOG_DEBUG, "http: %s", line);
}

void *srv_http_start(srv_server *s, int *port_out) {
    /* The guard owns the listening socket and hands over checked connections. */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->cfg.conn_timeout, MHD_OPTION_CONNECTION_LIMIT,
        /* the guard enforces the limit; connections it closed are counted here until their
         * threads notice, so libmicrohttpd's own limit is far above it */
        (unsigned)s->cfg.max_connections * 4 + 64, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(64 << 10), MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_UNESCAPE_CALLBACK,
        no_unescape, NULL, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "clara-server: error: libmicrohttpd refused to start\n");
        return NULL;
    }
    if (srv_guard_start(s, d, port_out) != 0) {
        MHD_stop_daemon(d);
        return NULL;
    }
    return d;
}

void srv_http_stop(void *daemon) {
    srv_guard_stop_accepting();
    MHD_stop_daemon(daemon);
    srv_guard_stop();
}
