/* sqlite.c - the SQLite backend of the store's database seam (db.h).
 *
 * Opening is careful not to harm a file that is not ours: the first 16 bytes must be SQLite's
 * magic, and a SQLite database must carry clara's application_id (or be empty) before anything
 * is written to it, the switch to WAL included. Then: WAL (readers never block the writer),
 * synchronous=FULL (a commit returns after the WAL is fsynced: acknowledged means durable),
 * foreign keys on, a busy timeout for other processes holding the write lock.
 *
 * Threads: the connection is opened SQLITE_OPEN_NOMUTEX. A db handle is used by one thread at a
 * time (the store holds its own mutex around every call, and this file's statement cache is not
 * locked either), so SQLite's per-connection mutex would only take a second, uncontended lock on
 * every call. */
#include "store/db.h"
#include "store/sqlcache.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    db base;
    sqlite3 *h;
    sql_cache stmts; /* SQL text -> sqlite3_stmt */
} sqlite_db;

struct db_row {
    sqlite3_stmt *st;
};

static const db_ops sqlite_ops;

/* SQLite's result code (extended) -> store_code. */
static store_code code_of(int rc) {
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        return rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY ? STORE_CONFLICT
                                                                                    : STORE_IO;
    case SQLITE_READONLY:
    case SQLITE_PERM:
        return STORE_READONLY;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return STORE_CORRUPT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return STORE_UNAVAILABLE; /* another process held the write lock past the timeout */
    case SQLITE_NOMEM:
        return STORE_NOMEM;
    case SQLITE_IOERR:
        return rc == SQLITE_IOERR_NOMEM ? STORE_NOMEM : STORE_IO;
    default:
        return STORE_IO;
    }
}

/* Records SQLite's error for the statement `sql` (its first words name it in the message). */
static store_code fail_sql(sqlite_db *s, int rc, const char *sql, store_err *err) {
    return store_fail(err, code_of(rc), "%s: %s (in \"%.48s\")", s->base.where,
                      sqlite3_errmsg(s->h), sql);
}

/* ---- statements ---- */

static void finalize_stmt(void *st) {
    sqlite3_finalize(st);
}

/* The prepared statement for sql, from the cache or prepared now (*cached says which). */
static store_code statement(sqlite_db *s, const char *sql, sqlite3_stmt **st, bool *cached,
                            store_err *err) {
    *st = sql_cache_get(&s->stmts, sql);
    *cached = *st != NULL;
    if (*cached) return STORE_OK;
    int rc = sqlite3_prepare_v3(s->h, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    if (rc != SQLITE_OK) return fail_sql(s, rc, sql, err);
    *cached = sql_cache_put(&s->stmts, sql, *st);
    return STORE_OK;
}

static int bind_one(sqlite3_stmt *st, int i, const db_val *v) {
    switch (v->type) {
    case DB_INT:
        return sqlite3_bind_int64(st, i, v->i);
    case DB_REAL:
        return sqlite3_bind_double(st, i, v->r);
    case DB_TEXT: /* a NULL pointer would bind SQL NULL: empty text is "" */
        return sqlite3_bind_text64(st, i, v->p ? v->p : "", v->n, SQLITE_STATIC, SQLITE_UTF8);
    case DB_BLOB: /* likewise, an empty blob is a zero-length blob, not NULL */
        return v->n ? sqlite3_bind_blob64(st, i, v->p, v->n, SQLITE_STATIC)
                    : sqlite3_bind_zeroblob(st, i, 0);
    default:
        return sqlite3_bind_null(st, i);
    }
}

static store_code bind_all(sqlite_db *s, sqlite3_stmt *st, const char *sql, const db_val *args,
                           int n, store_err *err) {
    if (n != sqlite3_bind_parameter_count(st))
        return store_fail(err, STORE_IO, "%s: %d arguments for %d placeholders in \"%.48s\"",
                          s->base.where, n, sqlite3_bind_parameter_count(st), sql);
    for (int i = 0; i < n; i++) {
        int rc = bind_one(st, i + 1, &args[i]);
        if (rc != SQLITE_OK) return fail_sql(s, rc, sql, err);
    }
    return STORE_OK;
}

static store_code step_all(sqlite_db *s, sqlite3_stmt *st, const char *sql, db_row_fn fn, void *arg,
                           store_err *err) {
    for (;;) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) return STORE_OK;
        if (rc != SQLITE_ROW) return fail_sql(s, rc, sql, err);
        struct db_row row = {st};
        if (fn && fn(arg, &row)) return STORE_OK; /* the caller has what it wanted */
    }
}

static store_code sq_query(db *d, const char *sql, const db_val *args, int n_args, db_row_fn fn,
                           void *arg, int64_t *changes, store_err *err) {
    sqlite_db *s = (sqlite_db *)d;
    if (changes) *changes = 0;
    sqlite3_stmt *st;
    bool cached;
    store_code rc = statement(s, sql, &st, &cached, err);
    if (rc != STORE_OK) return rc;
    rc = bind_all(s, st, sql, args, n_args, err);
    if (rc == STORE_OK) rc = step_all(s, st, sql, fn, arg, err);
    /* reset completes a statement stopped early (an INSERT ... RETURNING has made all its
     * changes at its first step) and clear_bindings drops the caller's pointers */
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == STORE_OK && changes && !sqlite3_stmt_readonly(st)) *changes = sqlite3_changes64(s->h);
    if (!cached) sqlite3_finalize(st);
    return rc;
}

/* ---- rows ---- */

static int64_t sq_col_int(db_row *r, int col) {
    return sqlite3_column_int64(r->st, col);
}
static double sq_col_real(db_row *r, int col) {
    return sqlite3_column_double(r->st, col);
}

static const char *sq_col_text(db_row *r, int col, size_t *len) {
    const unsigned char *t = sqlite3_column_text(r->st, col);
    size_t n = t ? (size_t)sqlite3_column_bytes(r->st, col) : 0;
    if (len) *len = n;
    return t ? (const char *)t : "";
}

static const void *sq_col_blob(db_row *r, int col, size_t *len) {
    const void *p = sqlite3_column_blob(r->st, col);
    size_t n = p ? (size_t)sqlite3_column_bytes(r->st, col) : 0;
    if (len) *len = n;
    return p ? p : "";
}

static bool sq_col_null(db_row *r, int col) {
    return sqlite3_column_type(r->st, col) == SQLITE_NULL;
}

/* ---- transactions ---- */

static store_code sq_begin(db *d, bool write, store_err *err) {
    return sq_query(d, write ? "BEGIN IMMEDIATE" : "BEGIN", NULL, 0, NULL, NULL, NULL, err);
}

static void sq_rollback(db *d) {
    sqlite_db *s = (sqlite_db *)d;
    /* SQLite has already rolled back after some errors (I/O, full disk): nothing to undo then */
    if (!sqlite3_get_autocommit(s->h)) sq_query(d, "ROLLBACK", NULL, 0, NULL, NULL, NULL, NULL);
}

static store_code sq_commit(db *d, store_err *err) {
    store_code rc = sq_query(d, "COMMIT", NULL, 0, NULL, NULL, NULL, err);
    if (rc != STORE_OK) sq_rollback(d); /* the caller does not roll back a failed commit */
    return rc;
}

static void sq_close(db *d) {
    sqlite_db *s = (sqlite_db *)d;
    if (!s) return;
    sql_cache_clear(&s->stmts, finalize_stmt);
    sqlite3_close(s->h);
    free(s);
}

/* ---- opening ---- */

/* Whether path exists; refuses a non-empty file without SQLite's magic, reading only. */
static store_code check_header(const char *path, bool *exists, store_err *err) {
    static const char magic[16] = "SQLite format 3"; /* with its NUL */
    struct stat stt;
    *exists = false;
    if (stat(path, &stt) != 0) {
        if (errno == ENOENT) return STORE_OK;
        return store_fail(err, errno == EACCES ? STORE_READONLY : STORE_IO, "%s: %s", path,
                          strerror(errno));
    }
    *exists = true;
    if (!S_ISREG(stt.st_mode)) return store_fail(err, STORE_IO, "%s is not a regular file", path);
    if (stt.st_size == 0) return STORE_OK; /* an empty file is a new database to SQLite */
    char head[16] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return store_fail(err, errno == EACCES ? STORE_READONLY : STORE_IO, "%s: %s", path,
                          strerror(errno));
    ssize_t got = read(fd, head, sizeof head);
    close(fd);
    if (got != (ssize_t)sizeof head || memcmp(head, magic, sizeof magic) != 0)
        return store_fail(err, STORE_CORRUPT,
                          "%s is not a SQLite database (its first bytes are not \"SQLite "
                          "format 3\"): refusing to touch it",
                          path);
    return STORE_OK;
}

/* Creates the missing directories above path (mode 0700: a store is private to its server). */
static store_code make_parents(const char *path, store_err *err) {
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return store_fail(err, STORE_IO, "%s: path too long", path);
    for (char *p = dir + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = 0;
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return store_fail(err, errno == EACCES || errno == EROFS ? STORE_READONLY : STORE_IO,
                              "cannot create the directory %s for %s: %s", dir, path,
                              strerror(errno));
        *p = '/';
    }
    return STORE_OK;
}

/* Whether this process may write the file (when it exists) and create files next to it (WAL
 * needs -wal and -shm there). access() is a hint only (root passes it), see probe_write(). */
static bool may_write(const char *path) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    if (access(path, F_OK) == 0 && access(path, W_OK) != 0) return false;
    return access(dir, W_OK) == 0;
}

static store_code fail_readonly(const char *path, const char *why, store_err *err) {
    return store_fail(err, STORE_READONLY,
                      "%s cannot be written (%s): the store needs write access to the file and "
                      "its directory",
                      path, why);
}

/* Runs sql (a PRAGMA or a probe) directly; the first column of its first row, as int64 or
 * text, goes to *i / text when given. */
static int run_simple(sqlite_db *s, const char *sql, int64_t *i, char *text, size_t n) {
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->h, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (i) *i = sqlite3_column_int64(st, 0);
        const unsigned char *t = sqlite3_column_text(st, 0);
        if (text) snprintf(text, n, "%s", t ? (const char *)t : "");
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Refuses a SQLite database of another application: one with a foreign application_id, or
 * none and tables already. Only reads. *fresh: no tables and no id yet (ours to stamp). */
static store_code check_owner(sqlite_db *s, bool *fresh, store_err *err) {
    int64_t app = 0, tables = 0;
    int rc = run_simple(s, "PRAGMA application_id", &app, NULL, 0);
    if (rc == SQLITE_OK) rc = run_simple(s, "SELECT count(*) FROM sqlite_master", &tables, NULL, 0);
    if (rc != SQLITE_OK) return fail_sql(s, rc, "reading its header and schema", err);
    if (app != DB_APPLICATION_ID && (app != 0 || tables > 0))
        return store_fail(err, STORE_CORRUPT,
                          "%s is a SQLite database of another application (application_id "
                          "0x%llx, %lld schema objects), not a clara store: refusing to touch it",
                          s->base.where, (unsigned long long)(uint32_t)app, (long long)tables);
    *fresh = app == 0;
    return STORE_OK;
}

/* The failure of a statement that writes during open: a permission problem (the file, or the
 * directory where -wal must be created) is READONLY with a message naming the file. */
static store_code fail_write(sqlite_db *s, int rc, const char *sql, store_err *err) {
    if ((rc & 0xff) == SQLITE_CANTOPEN || code_of(rc) == STORE_READONLY)
        return fail_readonly(s->base.where, sqlite3_errmsg(s->h), err);
    return fail_sql(s, rc, sql, err);
}

static store_code set_pragma(sqlite_db *s, const char *sql, store_err *err) {
    int rc = run_simple(s, sql, NULL, NULL, 0);
    return rc == SQLITE_OK ? STORE_OK : fail_write(s, rc, sql, err);
}

static store_code configure(sqlite_db *s, bool fresh, store_err *err) {
    char mode[16] = "";
    int rc = run_simple(s, "PRAGMA journal_mode=WAL", NULL, mode, sizeof mode);
    if (rc != SQLITE_OK) return fail_write(s, rc, "PRAGMA journal_mode=WAL", err);
    if (strcmp(mode, "wal") != 0)
        return store_fail(err, STORE_IO, "%s: cannot switch to WAL mode (journal mode is %s)",
                          s->base.where, mode);
    store_code c = set_pragma(s, "PRAGMA synchronous=FULL", err);
    if (c == STORE_OK) c = set_pragma(s, "PRAGMA foreign_keys=ON", err);
    if (c == STORE_OK && fresh) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA application_id=%d", DB_APPLICATION_ID);
        c = set_pragma(s, sql, err);
    }
    return c;
}

/* Takes the write lock and lets it go: a file SQLite opened read-only, a read-only mount or a
 * directory where -wal cannot be created fails here, at open, instead of at the first write.
 * Another writer holding the lock past the timeout says nothing about permissions: not an
 * error here. */
static store_code probe_write(sqlite_db *s, store_err *err) {
    if (sqlite3_db_readonly(s->h, "main") == 1)
        return fail_readonly(s->base.where, "SQLite opened it read-only", err);
    int rc = sqlite3_exec(s->h, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_exec(s->h, "ROLLBACK", NULL, NULL, NULL);
        return STORE_OK;
    }
    return (rc & 0xff) == SQLITE_BUSY ? STORE_OK : fail_write(s, rc, "BEGIN IMMEDIATE", err);
}

static store_code open_handle(sqlite_db *s, const char *path, bool create, bool writable,
                              int busy_ms, store_err *err) {
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
    if (create) flags |= SQLITE_OPEN_CREATE;
    int rc = sqlite3_open_v2(path, &s->h, flags, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(s->h, 1);
        sqlite3_busy_timeout(s->h, busy_ms > 0 ? busy_ms : 5000);
        return STORE_OK;
    }
    if (!writable || code_of(rc) == STORE_READONLY)
        return fail_readonly(path, s->h ? sqlite3_errmsg(s->h) : "cannot open it", err);
    return store_fail(err, code_of(rc), "%s: cannot open: %s", path,
                      s->h ? sqlite3_errmsg(s->h) : sqlite3_errstr(rc));
}

static store_code open_checked(sqlite_db *s, const char *path, const db_open_opts *o,
                               store_err *err) {
    bool exists, fresh = false;
    store_code rc = check_header(path, &exists, err);
    if (rc != STORE_OK) return rc;
    if (!exists && !o->create)
        return store_fail(err, STORE_IO, "%s does not exist (and creating it was not asked)", path);
    if (!exists && (rc = make_parents(path, err)) != STORE_OK) return rc;
    bool writable = may_write(path);
    rc = open_handle(s, path, o->create, writable, o->busy_timeout_ms, err);
    if (rc != STORE_OK) return rc;
    rc = check_owner(s, &fresh, err);
    /* a clara WAL store in a directory we cannot write cannot even be read (no -shm) */
    if (rc != STORE_OK && rc != STORE_CORRUPT && !writable)
        return fail_readonly(path, "no write permission", err);
    if (rc != STORE_OK) return rc;
    if (!writable) return fail_readonly(path, "no write permission", err);
    rc = configure(s, fresh, err);
    if (rc == STORE_OK) rc = probe_write(s, err);
    return rc;
}

store_code db_sqlite_open(const char *path, const db_open_opts *o, db **out, store_err *err) {
    *out = NULL;
    db_open_opts dflt = {0};
    if (!o) o = &dflt;
    sqlite_db *s = calloc(1, sizeof *s);
    if (!s) return store_fail(err, STORE_NOMEM, "out of memory opening %s", path);
    s->base.ops = &sqlite_ops;
    s->base.dialect = DB_DIALECT_SQLITE;
    snprintf(s->base.where, sizeof s->base.where, "%s", path);
    store_code rc = open_checked(s, path, o, err);
    if (rc != STORE_OK) {
        sq_close(&s->base);
        return rc;
    }
    *out = &s->base;
    return STORE_OK;
}

static const db_ops sqlite_ops = {
    .name = "sqlite",
    .query = sq_query,
    .col_int = sq_col_int,
    .col_real = sq_col_real,
    .col_text = sq_col_text,
    .col_blob = sq_col_blob,
    .col_null = sq_col_null,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .close = sq_close,
};
