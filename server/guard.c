/* guard.c - the connection guard between the network and libmicrohttpd.
 *
 * Why: libmicrohttpd 0.9.75 (Debian 12's) is lenient where leniency is dangerous behind a proxy
 * (it accepts "Transfer-Encoding : chunked", two Content-Lengths, Content-Length with chunked),
 * answers many malformed requests with its own HTML pages or not at all, and only knows an idle
 * timeout, which a client sending one byte every few seconds resets forever (slowloris). So the
 * guard accepts every connection itself and relays it to libmicrohttpd over a socketpair. On the
 * way in, every request passes the strict framer (src/http/frame.c): a request libmicrohttpd sees
 * is well-formed, and anything else is answered here with the documented JSON error and the
 * connection closed. The guard also gives each request's head and body a total deadline
 * (--read-timeout), limits connections per client address (--max-conns-per-client) and in all
 * (--max-connections), and when full makes room for a new client by closing the oldest
 * connection that is not being served (still sending its request, or idle).
 *
 * Threads: one accept thread; one relay thread per connection (libmicrohttpd has its own thread
 * per connection on the other end). The registry of connections is under one mutex. */
#define _GNU_SOURCE /* accept4, pipe2 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "base/log.h"
#include "http/frame.h"
#include "server.h"

#define RELAY_BUF   (64u << 10)
#define GUARD_STACK (256u << 10)
/* Seconds the relays get at shutdown to pass on answers libmicrohttpd has written. */
#define GUARD_PASS_ON_S 1.0

typedef struct guard_conn {
    int cfd, mfd, mhd_fd; /* client socket; our end of the pair; libmicrohttpd's end */
    char ip[INET6_ADDRSTRLEN];
    double req_started, last_io;
    bool reading;      /* part of a request has arrived, not all of it */
    int busy;          /* requests libmicrohttpd is handling (under G.mu) */
    uint64_t answered; /* requests libmicrohttpd has finished (under G.mu) */
    bool evicted;      /* closed by the accept thread to make room */
    bool passed_on;    /* the relay has passed on every answer it will (under G.mu) */
    http_frame *fr;    /* the framer state (large: heap) */
    struct guard_conn *prev, *next;
} guard_conn;

static struct {
    pthread_mutex_t mu;
    guard_conn *head;
    int n;
    int listen_fd, wake[2];
    int cancel[2]; /* written once the grace period is over: wakes every relay (never read) */
    pthread_t accept_thread;
    bool started;
    srv_server *s;
    struct MHD_Daemon *mhd;
} G = {.mu = PTHREAD_MUTEX_INITIALIZER, .listen_fd = -1, .wake = {-1, -1}, .cancel = {-1, -1}};

/* ---- replies written by the guard itself ---------------------------------------------------- */

static const char *reason(int status) {
    switch (status) {
    case 400:
        return "Bad Request";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Error";
    }
}

/* Sends what is pending from buf[*off, *len) to fd; returns -1 when the peer is gone. */
static int flush(int fd, const char *buf, size_t *off, size_t *len) {
    while (*off < *len) {
        ssize_t k = send(fd, buf + *off, *len - *off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k > 0) {
            *off += (size_t)k;
        } else if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
            return 0;
        } else {
            return -1;
        }
    }
    *off = *len = 0;
    return 0;
}

/* Sends buf[0, n) to fd, waiting for room until `until`; -1 when the peer is gone or time ran
 * out. For the guard's own short answers and the last bytes before them. */
static int send_until(int fd, const char *buf, size_t n, double until) {
    size_t off = 0, len = n;
    while (flush(fd, buf, &off, &len) == 0 && len) {
        struct pollfd p = {fd, POLLOUT, 0};
        if (srv_mono() > until || poll(&p, 1, 50) < 0) return -1;
    }
    return len ? -1 : 0;
}

/* Writes a JSON error and gives the client up to a second to take it (the reply is small; a
 * client that does not read it loses it). origin: the request's Origin field, "" for none, NULL
 * where it is not known (no complete head was read); with --cors-origins, a web page allowed to
 * call the server can read the error (a browser hides a reply without the header, even its
 * status). */
static void write_error(int fd, const char *ip, const char *origin, int status, const char *type,
                        const char *msg) {
    srv_reply r = {0};
    srv_reply_error(&r, status, type, "%s", msg);
    char cors[HTTP_ORIGIN_MAX + 64] = "";
    const char *allow = srv_cors_origin(G.s, origin);
    if (allow)
        snprintf(cors, sizeof cors, "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n", allow);
    else if (G.s->cfg.cors)
        snprintf(cors, sizeof cors, "Vary: Origin\r\n");
    char head[sizeof cors + 256];
    size_t blen = r.body ? strlen(r.body) : 0;
    int hl =
        snprintf(head, sizeof head,
                 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                 "X-Content-Type-Options: nosniff\r\nConnection: close\r\n%s%s\r\n",
                 status, reason(status), blen, status == 503 ? "Retry-After: 1\r\n" : "", cors);
    double until = srv_mono() + 1.0;
    if (send_until(fd, head, (size_t)hl, until) == 0 && r.body) send_until(fd, r.body, blen, until);
    free(r.body);
    srv_metrics_request(SRV_EP_OTHER, status, 0);
    clara_log(CLARA_LOG_INFO, "%s: %d %s (%s)", ip, status, type, msg);
}

/* ---- the registry ---------------------------------------------------------------------------- */

static void link_conn(guard_conn *c) {
    c->next = G.head;
    if (G.head) G.head->prev = c;
    G.head = c;
    G.n++;
}

static void unlink_conn(guard_conn *c) {
    if (c->prev) c->prev->next = c->next;
    if (c->next) c->next->prev = c->prev;
    if (G.head == c) G.head = c->next;
    G.n--;
}

static int count_ip(const char *ip) {
    int k = 0;
    for (guard_conn *c = G.head; c; c = c->next) k += strcmp(c->ip, ip) == 0;
    return k;
}

/* The connection to close for a new client: the one that has been sending its request longest,
 * else the longest idle one; never one being served (a request whose body is still coming counts
 * as being sent, even though libmicrohttpd has seen its head). Under G.mu. */
static guard_conn *pick_victim(void) {
    guard_conn *best = NULL;
    for (guard_conn *c = G.head; c; c = c->next) {
        if ((c->busy && !c->reading) || c->evicted) continue;
        double key = c->reading ? c->req_started - 1e9 : c->last_io;
        double bkey = !best ? 0 : best->reading ? best->req_started - 1e9 : best->last_io;
        if (!best || key < bkey) best = c;
    }
    return best;
}

/* Called by the HTTP handlers: a request on libmicrohttpd's socket `fd` starts (+1) or ends
 * (-1). A connection being served is never evicted. A closed connection's descriptor number can
 * be reused while its relay is still registered; new connections are linked first, so the first
 * match is the live one. */
void srv_guard_busy(int fd, int delta) {
    pthread_mutex_lock(&G.mu);
    for (guard_conn *c = G.head; c; c = c->next) {
        if (c->mhd_fd == fd) {
            c->busy += delta;
            if (delta < 0) c->answered++;
            break;
        }
    }
    pthread_mutex_unlock(&G.mu);
}

/* How many requests libmicrohttpd has answered on c. */
static uint64_t answered(guard_conn *c) {
    pthread_mutex_lock(&G.mu);
    uint64_t n = c->answered;
    pthread_mutex_unlock(&G.mu);
    return n;
}

/* ---- one connection's relay ------------------------------------------------------------------ */

typedef struct {
    char in[RELAY_BUF];
    char c2m[RELAY_BUF + HTTP_HEAD_MAX]; /* checked bytes for libmicrohttpd */
    size_t c2m_off, c2m_len;
    char m2c[RELAY_BUF]; /* libmicrohttpd's answers for the client */
    size_t m2c_off, m2c_len;
    bool client_eof, mhd_eof;
    /* An error to answer (the framer's, or the read deadline's): nothing more is passed on, and
     * the answer goes out once libmicrohttpd has answered the complete requests before it. */
    bool failing;
    double fail_at;
    int fail_status;
    const char *fail_type;
    char fail_msg[160];
    double write_stall; /* since when the client has not taken pending bytes (0: not stalled) */
    bool cancel_seen;   /* the grace period is over and this relay has acted on it */
} relay;

/* Bytes moved at `now`; whether part of a request has arrived but not all of it. */
static void note_io(guard_conn *c, bool reading, double now) {
    pthread_mutex_lock(&G.mu);
    if (reading && !c->reading) c->req_started = now;
    c->reading = reading;
    c->last_io = now;
    pthread_mutex_unlock(&G.mu);
}

static void start_failing(relay *r, int status, const char *type, const char *msg) {
    r->failing = true;
    r->fail_at = srv_mono();
    r->fail_status = status;
    r->fail_type = type;
    snprintf(r->fail_msg, sizeof r->fail_msg, "%s", msg);
}

static void pause_deadline(guard_conn *c, double seconds) {
    pthread_mutex_lock(&G.mu);
    c->req_started += seconds;
    pthread_mutex_unlock(&G.mu);
}

/* Client bytes: through the framer into c2m. Returns -1 to stop reading (EOF or an error). */
static int from_client(guard_conn *c, relay *r) {
    ssize_t k = recv(c->cfd, r->in, sizeof r->in, MSG_DONTWAIT);
    if (k < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (k <= 0) {
        /* A client that closes (or half-closes) its side is taken as gone: libmicrohttpd sees
         * the end of input, and a request still running is cancelled. */
        r->client_eof = true;
        shutdown(c->mfd, SHUT_WR);
        return -1;
    }
    size_t out = 0;
    http_frame_feed(c->fr, r->in, (size_t)k, r->c2m, &out);
    r->c2m_off = 0;
    r->c2m_len = out;
    note_io(c, !http_frame_idle(c->fr), srv_mono());
    if (c->fr->state == HTTP_FRAME_ERROR) start_failing(r, c->fr->status, c->fr->type, c->fr->msg);
    return 0;
}

/* The next moment something must happen without I/O: a request's read deadline, a client that
 * stopped reading its answer, libmicrohttpd finishing before an error reply. Returns the poll
 * timeout in ms (-1: none). */
static int next_timeout(const guard_conn *c, const relay *r, double now) {
    const srv_config *cfg = &G.s->cfg;
    double at = -1;
    if (c->reading && !r->failing && !r->c2m_len) at = c->req_started + cfg->read_timeout;
    if (r->failing) at = now + 0.05; /* libmicrohttpd's "answered" is polled */
    if (r->write_stall > 0) {
        double w = r->write_stall + cfg->conn_timeout;
        at = at < 0 || w < at ? w : at;
    }
    if (at < 0) return -1;
    double ms = (at - now) * 1e3;
    return ms < 0 ? 0 : ms > 1e6 ? 1000000 : (int)ms + 1;
}

/* Checked on every turn of the loop: 1 when the connection is over. A request whose head and
 * body did not arrive within --read-timeout turns into a 408 to answer. */
static int timed_out(guard_conn *c, relay *r, double now) {
    const srv_config *cfg = &G.s->cfg;
    if (r->write_stall > 0 && now - r->write_stall >= cfg->conn_timeout) return 1;
    /* answers to what came before the error that never come: give up */
    if (r->failing && now - r->fail_at >= cfg->request_timeout + 2.0) return 1;
    if (c->reading && !r->failing && !r->c2m_len && now - c->req_started >= cfg->read_timeout) {
        char msg[96];
        snprintf(msg, sizeof msg, "the request was not received in full within %d s",
                 cfg->read_timeout);
        start_failing(r, 408, "request_timeout", msg);
    }
    return 0;
}

/* Once libmicrohttpd has answered every complete request, what it wrote is in the socketpair:
 * pass it all on before the error answer. */
static void drain_to_client(guard_conn *c, relay *r) {
    double until = srv_mono() + 1.0;
    for (;;) {
        if (r->m2c_len &&
            send_until(c->cfd, r->m2c + r->m2c_off, r->m2c_len - r->m2c_off, until) != 0)
            return;
        ssize_t k = recv(c->mfd, r->m2c, sizeof r->m2c, MSG_DONTWAIT);
        r->m2c_off = 0;
        r->m2c_len = k > 0 ? (size_t)k : 0;
        if (k <= 0) return;
    }
}

/* Closing a socket with unread input makes the kernel send a reset, which can destroy the answer
 * before the client reads it (a client still sending a body we refused). So: end our side, read
 * and drop what still comes for up to a second, then close. */
static void linger_close(guard_conn *c, relay *r) {
    shutdown(c->cfd, SHUT_WR);
    double until = srv_mono() + 1.0;
    while (!r->client_eof) {
        double left = until - srv_mono();
        struct pollfd p = {c->cfd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)(left * 1e3) + 1) <= 0) break;
        ssize_t k = recv(c->cfd, r->in, sizeof r->in, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) break;
    }
}

/* libmicrohttpd's answers go to the client as they come. Returns -1 when the client is gone. */
static int to_client(guard_conn *c, relay *r, short revents, double now) {
    if (revents & (POLLIN | POLLHUP | POLLERR) && !r->m2c_len && !r->mhd_eof) {
        ssize_t k = recv(c->mfd, r->m2c, sizeof r->m2c, MSG_DONTWAIT);
        if (k > 0) r->m2c_off = 0, r->m2c_len = (size_t)k;
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) r->mhd_eof = true;
    }
    if (!r->m2c_len) return 0;
    if (flush(c->cfd, r->m2c, &r->m2c_off, &r->m2c_len) < 0) return -1;
    r->write_stall = r->m2c_len ? (r->write_stall > 0 ? r->write_stall : now) : 0;
    note_io(c, c->reading, now);
    return 0;
}

/* The grace period is over: a request that has not arrived in full will not be served, so it is
 * answered 503 here rather than cut off when libmicrohttpd stops. */
static void on_cancel(guard_conn *c, relay *r) {
    r->cancel_seen = true;
    if (c->reading && !r->failing)
        start_failing(r, 503, "shutting_down",
                      "the server is shutting down: the request had not arrived in full when the "
                      "grace period ended");
}

static void relay_loop(guard_conn *c, relay *r) {
    for (;;) {
        bool want_in = !r->client_eof && !r->failing && r->c2m_len == 0;
        short ev0 = (short)((want_in ? POLLIN : 0) | (r->m2c_len ? POLLOUT : 0));
        short ev1 = (short)((!r->mhd_eof && !r->m2c_len ? POLLIN : 0) | (r->c2m_len ? POLLOUT : 0));
        struct pollfd p[3] = {
            {c->cfd, ev0, 0}, {c->mfd, ev1, 0}, {r->cancel_seen ? -1 : G.cancel[0], POLLIN, 0}};
        double before = srv_mono();
        bool held_back = r->c2m_len > 0;
        int rc = poll(p, 3, next_timeout(c, r, before));
        if (rc < 0 && errno != EINTR) return;
        if (p[2].revents) on_cancel(c, r);
        double now = srv_mono();
        /* time spent waiting for libmicrohttpd to take bytes (it reads a pipelined request only
         * after answering the one before) is the server's, not the client's: the read deadline
         * does not count it */
        if (held_back && c->reading) pause_deadline(c, now - before);
        if (timed_out(c, r, now)) return;
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR) && want_in) from_client(c, r);
        /* libmicrohttpd may close its input after an early answer (413, 415, ...): the rest of
         * the client's request is then dropped, and the answer still read and passed on */
        if (r->c2m_len && flush(c->mfd, r->c2m, &r->c2m_off, &r->c2m_len) < 0)
            r->c2m_off = r->c2m_len = 0;
        if (to_client(c, r, p[1].revents, now) < 0) return;
        if (r->mhd_eof && !r->m2c_len) break;
        if (r->client_eof && r->failing) return;
        if (r->failing && !r->m2c_len && answered(c) >= c->fr->requests) {
            drain_to_client(c, r);
            break;
        }
    }
    /* libmicrohttpd answered what came before the error; it may also have answered the request
     * in error itself (an early 413, 415, ... before its body was read): then that is the answer */
    if (r->failing && answered(c) <= c->fr->requests)
        write_error(c->cfd, c->ip, c->fr->have_head ? c->fr->origin : NULL, r->fail_status,
                    r->fail_type, r->fail_msg);
    pthread_mutex_lock(&G.mu);
    c->passed_on = true;
    pthread_mutex_unlock(&G.mu);
    linger_close(c, r);
}

static void conn_free(guard_conn *c) {
    pthread_mutex_lock(&G.mu);
    unlink_conn(c);
    pthread_mutex_unlock(&G.mu);
    close(c->cfd);
    close(c->mfd);
    free(c->fr);
    free(c);
}

static void *relay_main(void *arg) {
    guard_conn *c = arg;
    relay *r = calloc(1, sizeof *r);
    if (r) relay_loop(c, r);
    free(r);
    conn_free(c);
    return NULL;
}

/* ---- accepting ------------------------------------------------------------------------------- */

static void client_ip(const struct sockaddr_storage *a, char *ip) {
    const void *src = a->ss_family == AF_INET6
                          ? (const void *)&((struct sockaddr_in6 *)a)->sin6_addr
                          : (const void *)&((struct sockaddr_in *)a)->sin_addr;
    if (!inet_ntop(a->ss_family, src, ip, INET6_ADDRSTRLEN)) snprintf(ip, INET6_ADDRSTRLEN, "?");
}

/* Room for one more connection from ip: 0, or the status to refuse it with. */
static int admit(const char *ip) {
    const srv_config *cfg = &G.s->cfg;
    pthread_mutex_lock(&G.mu);
    int st = 0;
    if (count_ip(ip) >= cfg->max_conns_per_client) {
        st = 429;
    } else if (G.n >= cfg->max_connections) {
        guard_conn *v = pick_victim();
        if (v) {
            v->evicted = true;
            shutdown(v->cfd, SHUT_RDWR);
            shutdown(v->mfd, SHUT_RDWR);
            clara_log(CLARA_LOG_INFO, "%s: connection closed to make room for a new client", v->ip);
        } else {
            st = 503;
        }
    }
    pthread_mutex_unlock(&G.mu);
    return st;
}

static void refuse(int fd, const char *ip, int st) {
    char msg[128];
    if (st == 429)
        snprintf(msg, sizeof msg, "too many connections from %s (at most %d)", ip,
                 G.s->cfg.max_conns_per_client);
    else
        snprintf(msg, sizeof msg, "too many connections (at most %d)", G.s->cfg.max_connections);
    write_error(fd, ip, NULL, st, "too_many_connections", msg);
    close(fd);
}

static void start_conn(int fd, struct sockaddr_storage *addr, socklen_t alen, const char *ip) {
    int sp[2];
    guard_conn *c = calloc(1, sizeof *c);
    http_frame *fr = malloc(sizeof *fr);
    if (!c || !fr || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) {
        free(c);
        free(fr);
        write_error(fd, ip, NULL, 503, "overloaded", "the server cannot take a connection now");
        close(fd);
        return;
    }
    http_frame_init(fr);
    *c = (guard_conn){.cfd = fd, .mfd = sp[0], .mhd_fd = sp[1], .fr = fr};
    snprintf(c->ip, sizeof c->ip, "%s", ip);
    c->last_io = srv_mono();
    pthread_mutex_lock(&G.mu);
    link_conn(c);
    pthread_mutex_unlock(&G.mu);
    /* libmicrohttpd takes its end (and closes it itself, also on failure) */
    if (MHD_add_connection(G.mhd, sp[1], (struct sockaddr *)addr, alen) != MHD_YES) {
        write_error(fd, ip, NULL, 503, "overloaded", "the server cannot take a connection now");
        conn_free(c);
        return;
    }
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, GUARD_STACK);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_t th;
    if (pthread_create(&th, &at, relay_main, c) != 0) conn_free(c);
    pthread_attr_destroy(&at);
}

static void *accept_main(void *arg) {
    (void)arg;
    for (;;) {
        struct pollfd p[2] = {{G.listen_fd, POLLIN, 0}, {G.wake[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0 && errno != EINTR) break;
        if (p[1].revents) break;
        if (!(p[0].revents & POLLIN)) continue;
        struct sockaddr_storage addr;
        socklen_t alen = sizeof addr;
        int fd = accept4(G.listen_fd, (struct sockaddr *)&addr, &alen, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                struct timespec ts = {0, 50 * 1000 * 1000}; /* out of descriptors: back off */
                nanosleep(&ts, NULL);
            }
            continue;
        }
        char ip[INET6_ADDRSTRLEN];
        client_ip(&addr, ip);
        int st = admit(ip);
        if (st)
            refuse(fd, ip, st);
        else
            start_conn(fd, &addr, alen, ip);
    }
    return NULL;
}

/* ---- lifetime -------------------------------------------------------------------------------- */

static int listen_on(const char *host, int port, int *bound_port) {
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int gai = getaddrinfo(host, ps, &hints, &ai);
    if (gai != 0 || !ai) {
        fprintf(stderr, "clara-server: error: cannot resolve host '%s': %s\n", host,
                gai_strerror(gai));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 511) != 0) {
        int e = errno;
        fprintf(stderr, "clara-server: error: cannot listen on %s:%d (%s)%s\n", host, port,
                strerror(e),
                e == EADDRINUSE ? ": another server has that port; choose one with --port N "
                                  "(CLARA_PORT)"
                                : "");
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage a;
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    *bound_port = ntohs(a.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&a)->sin6_port
                                                : ((struct sockaddr_in *)&a)->sin_port);
    return fd;
}

int srv_guard_start(srv_server *s, struct MHD_Daemon *mhd, int *port_out) {
    G.s = s;
    G.mhd = mhd;
    G.listen_fd = listen_on(s->cfg.host, s->cfg.port, port_out);
    if (G.listen_fd < 0) return -1;
    if (pipe2(G.wake, O_CLOEXEC) != 0 || pipe2(G.cancel, O_CLOEXEC) != 0 ||
        pthread_create(&G.accept_thread, NULL, accept_main, NULL)) {
        fprintf(stderr, "clara-server: error: cannot start the accept thread: %s\n",
                strerror(errno));
        close(G.listen_fd);
        return -1;
    }
    G.started = true;
    return 0;
}

/* Stops accepting: the listening socket closes (new clients are refused), and libmicrohttpd gets
 * no more connections, so it can be stopped. */
void srv_guard_stop_accepting(void) {
    if (!G.started) return;
    G.started = false;
    if (write(G.wake[1], "x", 1) < 0) { /* the accept thread polls this pipe */
    }
    pthread_join(G.accept_thread, NULL);
    close(G.listen_fd);
    close(G.wake[0]);
    close(G.wake[1]);
    G.listen_fd = -1;
}

/* Waits up to `seconds` until no connection is left, or (all_passed_on) until every relay left
 * has passed on its answers. Returns whether that happened. */
static bool wait_relays(double seconds, bool all_passed_on) {
    double until = srv_mono() + seconds;
    for (;;) {
        pthread_mutex_lock(&G.mu);
        bool done = true;
        for (guard_conn *c = G.head; c && done; c = c->next) done = all_passed_on && c->passed_on;
        pthread_mutex_unlock(&G.mu);
        if (done) return true;
        if (srv_mono() > until) return false;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Called once libmicrohttpd is stopped. What it wrote before it stopped may still be in the
 * socketpairs or in a relay's buffer (a relay is a thread of its own, and on a busy machine it
 * can be scheduled well after libmicrohttpd's handler finished): closing the client sockets at
 * once lost such answers (a 503 shutting_down arrived as a connection closed without a
 * response). So every relay first gets up to a second to pass on what is there (libmicrohttpd's
 * ends are closed, so each sees the end after the last answer); then every connection left is
 * closed, and the relays get a bounded time to end. */
void srv_guard_stop(void) {
    srv_guard_stop_accepting();
    wait_relays(GUARD_PASS_ON_S, true);
    pthread_mutex_lock(&G.mu);
    for (guard_conn *c = G.head; c; c = c->next) {
        shutdown(c->cfd, SHUT_RDWR);
        shutdown(c->mfd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&G.mu);
    /* a relay still running polls the cancel pipe: it stays open for the process's rest */
    if (wait_relays(2.0, false) && G.cancel[0] >= 0) {
        close(G.cancel[0]);
        close(G.cancel[1]);
        G.cancel[0] = G.cancel[1] = -1;
    }
}

void srv_guard_cancel_partial(void) {
    if (G.cancel[1] >= 0 && write(G.cancel[1], "x", 1) < 0) { /* the relays poll this pipe */
    }
}
