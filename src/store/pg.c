/* pg.c - the PostgreSQL backend of the store's database seam (db.h), over libpq.
 *
 * Statements: the store's `?` placeholders become $1..$n (rewritten once per statement text and
 * cached). Numbers and text are sent in text format and typed by the server from their context;
 * blobs are sent as binary bytea. Results come back in binary format, so a vector's bytes
 * arrive as they are (text format would double them into hex); the column accessors read the
 * column's type OID to convert (integers, floats, numeric such as sum(), text).
 *
 * Connections: one per db handle, used by one thread at a time (the store's mutex). After a
 * PostgreSQL restart the socket is dead but libpq only learns so when it is next used: that
 * statement fails with STORE_UNAVAILABLE and the connection is reset before the next one. A
 * begin() that finds the connection lost retries once on a fresh one, since nothing has been
 * done yet; a connection lost inside a transaction is STORE_UNAVAILABLE and the caller redoes
 * the whole transaction. Transactions are READ COMMITTED (PostgreSQL's default): the store's
 * writes update rows in place (version = version + 1) and rely on unique constraints, which are
 * correct at that level. synchronous_commit is set on for the session, so a COMMIT returns after
 * the WAL is flushed whatever the server's default: acknowledged means durable.
 *
 * Waiting: a server that stops answering (stopped, a network that drops packets) would hold the
 * store's mutex, and every store request behind it, forever. So every statement is sent and its
 * answer awaited with a deadline: PostgreSQL's own statement_timeout (set for the session to the
 * store's timeout) ends a statement that runs or waits for a lock too long, and a server that
 * does not answer even that within a few seconds more has the connection dropped; both fail
 * STORE_UNAVAILABLE (503, retry). A connection the server closed while it was idle (a restart,
 * pg_terminate_backend, idle_session_timeout) is seen before it is used, and reset.
 *
 * Ids: write transactions take one advisory lock, so that replicas sharing the database write
 * one at a time, as SQLite's writers do: ids are then handed out in the order the writes commit,
 * and a reader paging with `after` cursors never passes an id whose row commits later. */
#include "store/db.h"
#include "store/sqlcache.h"

#include <libpq-fe.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* type OIDs (catalog/pg_type_d.h is in the server's development package, not libpq's) */
enum {
    OID_BOOL = 16,
    OID_BYTEA = 17,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_OID = 26,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_NUMERIC = 1700,
    OID_JSONB = 3802,
};

typedef struct {
    db base;
    PGconn *c;
    bool in_tx;
    int timeout_ms; /* a statement's answer, lock waits included (db_open_opts) */
    sql_cache sql;  /* store SQL -> the same with $n placeholders */
} pg_db;

/* What the client waits beyond the session's statement_timeout before it drops the connection:
 * time for the server's own cancellation to come back. */
#define PG_ANSWER_GRACE_MS 5000

/* The advisory lock every write transaction takes (pg_advisory_xact_lock's key: "ClaR"). */
#define PG_WRITE_LOCK "SELECT pg_advisory_xact_lock(1131176274)"

struct db_row {
    PGresult *res;
    int row;
    char (*scratch)[32]; /* per column: col_text of a number */
};

static const db_ops pg_ops;

/* ---- errors ---- */

static store_code code_of_state(pg_db *p, const char *state) {
    if (PQstatus(p->c) == CONNECTION_BAD) return STORE_UNAVAILABLE;
    if (!state) return STORE_IO;
    if (strcmp(state, "23505") == 0) return STORE_CONFLICT;     /* unique_violation */
    if (strncmp(state, "08", 2) == 0) return STORE_UNAVAILABLE; /* connection exceptions */
    if (strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 ||
        strcmp(state, "57P03") == 0) /* shutting down, crashed, cannot connect now */
        return STORE_UNAVAILABLE;
    /* serialization failure, deadlock: the transaction was rolled back and may simply be
     * retried, which is what STORE_UNAVAILABLE (503) tells the caller */
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) return STORE_UNAVAILABLE;
    if (strcmp(state, "25006") == 0) return STORE_READONLY; /* read_only_sql_transaction */
    /* statement_timeout (query_canceled), lock_timeout: the server was too busy; retry */
    if (strcmp(state, "57014") == 0 || strcmp(state, "55P03") == 0) return STORE_UNAVAILABLE;
    return STORE_IO;
}

/* Records the failure of res (NULL when libpq returned none) for the statement sql. */
static store_code fail_res(pg_db *p, const PGresult *res, const char *sql, store_err *err) {
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg) msg = PQerrorMessage(p->c);
    return store_fail(err, code_of_state(p, state), "%s: %s (SQLSTATE %s, in \"%.48s\")",
                      p->base.where, msg, state ? state : "none", sql);
}

/* ---- the connection ---- */

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Drops the connection (the server ends its side, and rolls back what it held, when it next
 * looks); the next statement outside a transaction reconnects. */
static void drop_connection(pg_db *p) {
    int fd = PQsocket(p->c);
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
    PQconsumeInput(p->c); /* libpq sees the end: the connection is CONNECTION_BAD from now on */
}

/* The answer to the statement just sent (its last result, as PQexec returns), or NULL with
 * *timed_out set when none came within the statement timeout and its grace, or when the
 * connection failed (libpq's message is then in PQerrorMessage). */
static PGresult *await_answer(pg_db *p, bool *timed_out) {
    *timed_out = false;
    double end = now_ms() + p->timeout_ms + PG_ANSWER_GRACE_MS;
    PGresult *last = NULL;
    for (;;) {
        while (PQisBusy(p->c)) {
            double left = end - now_ms();
            if (left <= 0) {
                *timed_out = true;
                PQclear(last);
                drop_connection(p);
                return NULL;
            }
            struct pollfd fd = {PQsocket(p->c), POLLIN, 0};
            if (poll(&fd, 1, (int)left + 1) < 0) continue; /* EINTR */
            if (!PQconsumeInput(p->c)) {
                PQclear(last);
                return NULL;
            }
        }
        PGresult *r = PQgetResult(p->c);
        if (!r) return last;
        PQclear(last);
        last = r;
    }
}

/* A failure to answer, as a store error. */
static store_code fail_unanswered(pg_db *p, bool timed_out, const char *sql, store_err *err) {
    if (timed_out)
        return store_fail(err, STORE_UNAVAILABLE,
                          "%s: PostgreSQL did not answer within %d s (in \"%.48s\"); the "
                          "connection was dropped",
                          p->base.where, (p->timeout_ms + PG_ANSWER_GRACE_MS) / 1000, sql);
    return fail_res(p, NULL, sql, err);
}

/* PQexec with the answer awaited under the deadline; NULL on a failure to answer. */
static PGresult *exec_timed(pg_db *p, const char *sql, bool *timed_out) {
    *timed_out = false;
    if (!PQsendQuery(p->c, sql)) return NULL;
    return await_answer(p, timed_out);
}

/* One statement with no rows to read (or rows ignored), its status checked; want_tag: the
 * command tag it must answer, or NULL. */
static store_code exec_simple(pg_db *p, const char *sql, const char *want_tag, store_err *err) {
    bool timed_out;
    PGresult *res = exec_timed(p, sql, &timed_out);
    store_code rc = STORE_OK;
    ExecStatusType st = PQresultStatus(res);
    if (!res)
        rc = fail_unanswered(p, timed_out, sql, err);
    else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = fail_res(p, res, sql, err);
    else if (want_tag && strcmp(PQcmdStatus(res), want_tag) != 0)
        /* COMMIT of a transaction where a statement failed answers ROLLBACK, not an error */
        rc = store_fail(err, STORE_IO, "%s: the transaction was rolled back by PostgreSQL",
                        p->base.where);
    PQclear(res);
    return rc;
}

/* Copies url to out with any password replaced by ***: the user:password@ of a URI and the
 * value of a password keyword (URI query parameter or key=value pair). */
static void redact(const char *url, char *out, size_t n) {
    size_t o = 0;
    const char *auth_end = NULL, *colon = NULL;
    bool uri = strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0;
    if (uri) {
        const char *host = strstr(url, "://") + 3;
        auth_end = strchr(host, '@');
        const char *end = host + strcspn(host, "/?");
        if (auth_end && auth_end < end)
            colon = memchr(host, ':', (size_t)(auth_end - host));
        else
            auth_end = NULL;
    }
    for (const char *s = url; *s && o + 4 < n;) {
        if (s == colon) { /* keep the ':', hide up to the '@' */
            o += (size_t)snprintf(out + o, n - o, ":***");
            s = auth_end;
            continue;
        }
        bool starts_key = s == url || s[-1] == ' ' || s[-1] == '?' || s[-1] == '&';
        if (starts_key && strncmp(s, "password", 8) == 0 && s[8 + strspn(s + 8, " ")] == '=') {
            s += 8 + strspn(s + 8, " ") + 1;
            s += strspn(s, " ");
            if (*s == '\'') { /* quoted, with \' escapes */
                for (s++; *s && *s != '\''; s++)
                    if (*s == '\\' && s[1]) s++;
                if (*s) s++;
            } else {
                s += strcspn(s, " &");
            }
            o += (size_t)snprintf(out + o, n - o, "password=***");
            continue;
        }
        out[o++] = *s++;
    }
    out[o < n ? o : n - 1] = 0;
}

static void ignore_notice(void *arg, const char *message) {
    (void)arg, (void)message; /* "relation exists, skipping" and the like: not for stderr */
}

/* What every session needs, after each (re)connect. */
static store_code setup_session(pg_db *p, store_err *err) {
    if (PQserverVersion(p->c) < 120000)
        return store_fail(err, STORE_IO,
                          "%s: PostgreSQL %d is too old: the store needs 12 or newer",
                          p->base.where, PQserverVersion(p->c) / 10000);
    /* a statement past the store's timeout is ended by the server itself; a transaction left
     * open by a client that stopped is ended too, with its locks */
    char sql[200];
    snprintf(sql, sizeof sql,
             "SET synchronous_commit TO on; SET statement_timeout TO %d; "
             "SET idle_in_transaction_session_timeout TO %d",
             p->timeout_ms, p->timeout_ms > 30000 ? 2 * p->timeout_ms : 60000);
    return exec_simple(p, sql, NULL, err);
}

static store_code connect_now(pg_db *p, const char *url, store_err *err) {
    /* defaults placed before dbname, so the URL's own values win; a server that accepts
     * connections and then does not answer holds a connect at most this long */
    char connect_s[16];
    int cs = p->timeout_ms / 1000;
    snprintf(connect_s, sizeof connect_s, "%d", cs < 2 ? 2 : cs > 10 ? 10 : cs);
    const char *keys[] = {"connect_timeout", "client_encoding", "application_name", "dbname", NULL};
    const char *vals[] = {connect_s, "UTF8", "clara-server", url, NULL};
    p->c = PQconnectdbParams(keys, vals, 1);
    if (!p->c) return store_fail(err, STORE_NOMEM, "out of memory connecting to %s", p->base.where);
    if (PQstatus(p->c) != CONNECTION_OK)
        return store_fail(err, STORE_UNAVAILABLE, "cannot connect to PostgreSQL at %s: %s",
                          p->base.where, PQerrorMessage(p->c));
    PQsetNoticeProcessor(p->c, ignore_notice, NULL);
    return setup_session(p, err);
}

/* Whether the server is closing the idle connection: it says why, then closes (a restart,
 * pg_terminate_backend, idle_session_timeout), so the socket is readable while no statement is
 * out; libpq would only learn of it by failing the next statement. Such a connection is
 * dropped, to be reset. */
static bool closed_while_idle(pg_db *p) {
    struct pollfd fd = {PQsocket(p->c), POLLIN, 0};
    if (fd.fd < 0 || poll(&fd, 1, 0) <= 0) return false;
    drop_connection(p);
    return true;
}

/* Outside a transaction, a lost connection is reset (once per call) before it is used. */
static store_code ensure_connected(pg_db *p, store_err *err) {
    if (PQstatus(p->c) == CONNECTION_OK && (p->in_tx || !closed_while_idle(p))) return STORE_OK;
    if (p->in_tx)
        return store_fail(err, STORE_UNAVAILABLE,
                          "%s: the connection to PostgreSQL was lost in a transaction",
                          p->base.where);
    PQreset(p->c);
    if (PQstatus(p->c) != CONNECTION_OK)
        return store_fail(err, STORE_UNAVAILABLE, "cannot reconnect to PostgreSQL at %s: %s",
                          p->base.where, PQerrorMessage(p->c));
    return setup_session(p, err);
}

/* ---- statements ---- */

/* sql with each `?` outside quotes replaced by $1, $2, ... (malloc'd). */
static char *rewrite(const char *sql) {
    size_t n = strlen(sql), q = 0;
    for (size_t i = 0; i < n; i++) q += sql[i] == '?';
    char *out = malloc(n + q * 6 + 1); /* "$65535" at most for "?" */
    if (!out) return NULL;
    size_t o = 0;
    int arg = 0;
    char quote = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = sql[i];
        if (quote) {
            if (ch == quote) quote = 0; /* a doubled '' reopens at once: same result */
        } else if (ch == '\'' || ch == '"') {
            quote = ch;
        } else if (ch == '?') {
            o += (size_t)sprintf(out + o, "$%d", ++arg);
            continue;
        }
        out[o++] = ch;
    }
    out[o] = 0;
    return out;
}

static store_code rewritten(pg_db *p, const char *sql, const char **out, char **owned,
                            store_err *err) {
    *owned = NULL;
    *out = sql_cache_get(&p->sql, sql);
    if (*out) return STORE_OK;
    char *r = rewrite(sql);
    if (!r) return store_fail(err, STORE_NOMEM, "out of memory preparing a statement");
    if (!sql_cache_put(&p->sql, sql, r)) *owned = r;
    *out = r;
    return STORE_OK;
}

/* The parameter arrays PQexecParams takes, and the text it points into. */
typedef struct {
    const char **values;
    int *lengths, *formats;
    Oid *types;
    char *text; /* numbers as text, and NUL-terminated copies of the text values */
} pg_params;

static void params_free(pg_params *pp) {
    free(pp->values);
    free(pp->lengths);
    free(pp->formats);
    free(pp->types);
    free(pp->text);
}

static store_code params_build(pg_params *pp, const db_val *args, int n, store_err *err) {
    size_t need = 0;
    for (int i = 0; i < n; i++) need += args[i].type == DB_TEXT ? args[i].n + 1 : 32;
    pp->values = calloc((size_t)n + 1, sizeof *pp->values);
    pp->lengths = calloc((size_t)n + 1, sizeof *pp->lengths);
    pp->formats = calloc((size_t)n + 1, sizeof *pp->formats);
    pp->types = calloc((size_t)n + 1, sizeof *pp->types);
    pp->text = malloc(need + 1);
    if (!pp->values || !pp->lengths || !pp->formats || !pp->types || !pp->text)
        return store_fail(err, STORE_NOMEM, "out of memory binding %d values", n);
    char *t = pp->text;
    for (int i = 0; i < n; i++) {
        const db_val *v = &args[i];
        if (v->type == DB_INT || v->type == DB_REAL) {
            if (v->type == DB_INT)
                snprintf(t, 32, "%lld", (long long)v->i);
            else
                snprintf(t, 32, "%.17g", v->r);
            pp->values[i] = t;
            t += 32;
        } else if (v->type == DB_TEXT) {
            if (v->n > 0x7fffffff || (v->n && memchr(v->p, 0, v->n)))
                return store_fail(err, STORE_INVALID,
                                  "text for PostgreSQL cannot hold a NUL byte or exceed 2 GiB");
            if (v->n) memcpy(t, v->p, v->n);
            t[v->n] = 0;
            pp->values[i] = t;
            t += v->n + 1;
        } else if (v->type == DB_BLOB) {
            if (v->n > 0x7fffffff)
                return store_fail(err, STORE_TOO_LARGE, "a blob over 2 GiB for PostgreSQL");
            pp->values[i] = v->n ? v->p : ""; /* NULL would be SQL NULL */
            pp->lengths[i] = (int)v->n;
            pp->formats[i] = 1;
            pp->types[i] = OID_BYTEA;
        } /* DB_NULL: values[i] stays NULL */
    }
    return STORE_OK;
}

static store_code deliver_rows(PGresult *res, db_row_fn fn, void *arg) {
    int rows = PQntuples(res), cols = PQnfields(res);
    if (!fn || rows == 0) return STORE_OK;
    struct db_row row = {res, 0, calloc((size_t)cols + 1, sizeof *row.scratch)};
    if (!row.scratch) return STORE_NOMEM;
    for (row.row = 0; row.row < rows; row.row++)
        if (fn(arg, &row)) break;
    free(row.scratch);
    return STORE_OK;
}

static store_code run(pg_db *p, const char *sql, const char *q, const pg_params *pp, int n,
                      db_row_fn fn, void *arg, int64_t *changes, store_err *err) {
    bool timed_out = false;
    PGresult *res =
        PQsendQueryParams(p->c, q, n, pp->types, pp->values, pp->lengths, pp->formats, 1)
            ? await_answer(p, &timed_out)
            : NULL;
    if (!res) return fail_unanswered(p, timed_out, sql, err);
    ExecStatusType st = PQresultStatus(res);
    store_code rc;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        rc = deliver_rows(res, fn, arg);
        if (rc != STORE_OK) store_fail(err, rc, "out of memory reading rows");
        /* PQcmdTuples counts a SELECT's rows too; changes are writes only */
        if (changes && strncmp(PQcmdStatus(res), "SELECT", 6) != 0)
            *changes = strtoll(PQcmdTuples(res), NULL, 10);
    } else {
        rc = fail_res(p, res, sql, err);
    }
    PQclear(res);
    return rc;
}

static store_code pg_query(db *d, const char *sql, const db_val *args, int n_args, db_row_fn fn,
                           void *arg, int64_t *changes, store_err *err) {
    pg_db *p = (pg_db *)d;
    if (changes) *changes = 0;
    store_code rc = ensure_connected(p, err);
    const char *q = NULL;
    char *owned = NULL;
    if (rc == STORE_OK) rc = rewritten(p, sql, &q, &owned, err);
    pg_params pp = {0};
    if (rc == STORE_OK) rc = params_build(&pp, args, n_args, err);
    if (rc == STORE_OK) rc = run(p, sql, q, &pp, n_args, fn, arg, changes, err);
    params_free(&pp);
    free(owned);
    return rc;
}

/* ---- rows ---- */

static const unsigned char *cell(db_row *r, int col, int *len, Oid *type) {
    *len = PQgetlength(r->res, r->row, col);
    *type = PQftype(r->res, col);
    return (const unsigned char *)PQgetvalue(r->res, r->row, col);
}

static uint64_t be(const unsigned char *v, int n) {
    uint64_t x = 0;
    for (int i = 0; i < n; i++) x = x << 8 | v[i];
    return x;
}

/* PostgreSQL's binary numeric: digit count, weight, sign, display scale (16 bits each), then
 * base-10000 digits, the first worth 10000^weight. *i gets the integer part (saturated). */
static double numeric_value(const unsigned char *v, int len, int64_t *i) {
    *i = 0;
    if (len < 8) return 0;
    int nd = (int)be(v, 2), weight = (int16_t)be(v + 2, 2);
    unsigned sign = (unsigned)be(v + 4, 2);
    if (len < 8 + 2 * nd) return 0;
    if (sign == 0xC000) return NAN;
    if (sign == 0xD000 || sign == 0xF000) {
        *i = sign == 0xD000 ? INT64_MAX : -INT64_MAX;
        return sign == 0xD000 ? INFINITY : -INFINITY;
    }
    double r = 0;
    for (int k = 0; k < nd; k++) r += (double)be(v + 8 + 2 * k, 2) * pow(10000, weight - k);
    uint64_t whole = 0;
    for (int k = 0; k <= weight; k++) {
        uint64_t digit = k < nd ? be(v + 8 + 2 * k, 2) : 0;
        whole = whole > (UINT64_C(1) << 63) / 10000 ? UINT64_C(1) << 63 : whole * 10000 + digit;
    }
    if (whole > (uint64_t)INT64_MAX) whole = (uint64_t)INT64_MAX;
    *i = sign == 0x4000 ? -(int64_t)whole : (int64_t)whole;
    return sign == 0x4000 ? -r : r;
}

/* The column as a number, whatever its type; *is_int: exact integer in *i. */
static double number(db_row *r, int col, int64_t *i, bool *is_int) {
    int len;
    Oid t;
    const unsigned char *v = cell(r, col, &len, &t);
    *is_int = true;
    *i = 0;
    if (PQgetisnull(r->res, r->row, col)) return 0;
    if (t == OID_INT8 && len == 8)
        *i = (int64_t)be(v, 8);
    else if (t == OID_INT4 && len == 4)
        *i = (int32_t)be(v, 4);
    else if (t == OID_INT2 && len == 2)
        *i = (int16_t)be(v, 2);
    else if (t == OID_OID && len == 4)
        *i = (int64_t)be(v, 4);
    else if (t == OID_BOOL && len == 1)
        *i = v[0] != 0;
    else {
        *is_int = false;
        double x;
        if (t == OID_FLOAT8 && len == 8) {
            uint64_t b = be(v, 8);
            memcpy(&x, &b, 8);
        } else if (t == OID_FLOAT4 && len == 4) {
            uint32_t b = (uint32_t)be(v, 4);
            float f;
            memcpy(&f, &b, 4);
            x = f;
        } else if (t == OID_NUMERIC) {
            return numeric_value(v, len, i);
        } else { /* text and the like: what it says */
            *i = strtoll((const char *)v, NULL, 10);
            return strtod((const char *)v, NULL);
        }
        *i = isfinite(x) && fabs(x) < 9.2e18 ? (int64_t)x : 0;
        return x;
    }
    return (double)*i;
}

static int64_t pg_col_int(db_row *r, int col) {
    int64_t i;
    bool is_int;
    number(r, col, &i, &is_int);
    return i;
}

static double pg_col_real(db_row *r, int col) {
    int64_t i;
    bool is_int;
    return number(r, col, &i, &is_int);
}

static bool is_numeric_type(Oid t) {
    return t == OID_INT8 || t == OID_INT4 || t == OID_INT2 || t == OID_OID || t == OID_FLOAT4 ||
           t == OID_FLOAT8 || t == OID_NUMERIC;
}

static const char *pg_col_text(db_row *r, int col, size_t *len) {
    int n;
    Oid t;
    const char *v = (const char *)cell(r, col, &n, &t);
    if (PQgetisnull(r->res, r->row, col)) {
        n = 0;
    } else if (t == OID_JSONB && n > 0) { /* its binary form is a version byte + the text */
        n--;
        v++;
    } else if (t == OID_BOOL) {
        v = v[0] ? "t" : "f";
        n = 1;
    } else if (is_numeric_type(t)) {
        int64_t i;
        bool is_int;
        double x = number(r, col, &i, &is_int);
        char *s = r->scratch[col];
        n = is_int || (t == OID_NUMERIC && x == (double)i) ? snprintf(s, 32, "%lld", (long long)i)
                                                           : snprintf(s, 32, "%.17g", x);
        v = s;
    }
    if (len) *len = (size_t)n;
    return v; /* libpq ends every value, binary ones too, with a NUL */
}

static const void *pg_col_blob(db_row *r, int col, size_t *len) {
    if (len) *len = (size_t)PQgetlength(r->res, r->row, col);
    return PQgetvalue(r->res, r->row, col); /* "" for NULL */
}

static bool pg_col_null(db_row *r, int col) {
    return PQgetisnull(r->res, r->row, col);
}

/* ---- transactions ---- */

static void pg_rollback(db *d);

static store_code pg_begin(db *d, bool write, store_err *err) {
    pg_db *p = (pg_db *)d;
    if (p->in_tx) return store_fail(err, STORE_IO, "%s: begin inside a transaction", p->base.where);
    for (int attempt = 0;; attempt++) {
        store_code rc = ensure_connected(p, err);
        if (rc == STORE_OK) rc = exec_simple(p, "BEGIN", NULL, err);
        if (rc == STORE_OK) {
            p->in_tx = true;
            /* writers one at a time across replicas (see the top): held until COMMIT */
            if (write) rc = exec_simple(p, PG_WRITE_LOCK, NULL, err);
            if (rc != STORE_OK) pg_rollback(d);
            return rc;
        }
        /* the server restarted since the last call: nothing was done, so try once more */
        if (attempt > 0 || PQstatus(p->c) != CONNECTION_BAD) return rc;
    }
}

static store_code pg_commit(db *d, store_err *err) {
    pg_db *p = (pg_db *)d;
    store_code rc = ensure_connected(p, err);
    /* committed, rolled back, or gone with the connection. A connection lost during COMMIT
     * leaves the outcome unknown: STORE_UNAVAILABLE, and the caller's retry must cope with
     * finding its write done (its unique ids make that a conflict, not a duplicate). */
    p->in_tx = false;
    return rc == STORE_OK ? exec_simple(p, "COMMIT", "COMMIT", err) : rc;
}

static void pg_rollback(db *d) {
    pg_db *p = (pg_db *)d;
    bool timed_out;
    if (p->in_tx && PQstatus(p->c) == CONNECTION_OK) PQclear(exec_timed(p, "ROLLBACK", &timed_out));
    p->in_tx = false;
}

static void pg_close(db *d) {
    pg_db *p = (pg_db *)d;
    if (!p) return;
    sql_cache_clear(&p->sql, free);
    PQfinish(p->c);
    free(p);
}

store_code db_pg_open(const char *url, const db_open_opts *o, db **out, store_err *err) {
    *out = NULL;
    pg_db *p = calloc(1, sizeof *p);
    if (!p) return store_fail(err, STORE_NOMEM, "out of memory opening PostgreSQL");
    p->timeout_ms = o && o->statement_timeout_ms > 0 ? o->statement_timeout_ms : 30000;
    p->base.ops = &pg_ops;
    p->base.dialect = DB_DIALECT_POSTGRES;
    redact(url, p->base.where, sizeof p->base.where);
    store_code rc = connect_now(p, url, err);
    if (rc != STORE_OK) {
        pg_close(&p->base);
        return rc;
    }
    *out = &p->base;
    return STORE_OK;
}

static const db_ops pg_ops = {
    .name = "postgresql",
    .query = pg_query,
    .col_int = pg_col_int,
    .col_real = pg_col_real,
    .col_text = pg_col_text,
    .col_blob = pg_col_blob,
    .col_null = pg_col_null,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .close = pg_close,
};
