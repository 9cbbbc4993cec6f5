/* db.h - the little a database must do for the memory store: run one SQL statement with bound
 * parameters and hand back its rows, inside transactions. The store (store.c) writes its SQL once
 * with `?` placeholders; each backend (sqlite.c, pg.c) runs it on its engine and maps its errors
 * to store_code, so both databases hold the same schema (schema.c) and the same data. */
#ifndef CLARA_STORE_DB_H
#define CLARA_STORE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Why a store call failed; each maps to one HTTP status (docs/STORE.md). */
typedef enum {
    STORE_OK = 0,
    STORE_NOT_FOUND,   /* no such collection or memory (404) */
    STORE_CONFLICT,    /* a memory with this id exists (409) */
    STORE_INVALID,     /* bad name, id, metadata or size (422) */
    STORE_TOO_LARGE,   /* over a documented limit (413) */
    STORE_UNAVAILABLE, /* the database server cannot be reached now; retry (503) */
    STORE_READONLY,    /* the database cannot be written (503) */
    STORE_CORRUPT,     /* not a clara store, damaged, or a schema newer than this binary */
    STORE_IO,          /* any other database or file error */
    STORE_NOMEM,
    STORE_CHANGED, /* what was being read changed under it (another writer): read it again (503) */
} store_code;

/* A failure: its kind and a message naming what failed (the database's own words appended). */
typedef struct {
    store_code code;
    char msg[512];
} store_err;

/* Records a failure in err (which may be NULL) and returns code. */
store_code store_fail(store_err *err, store_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

typedef enum { DB_NULL, DB_INT, DB_REAL, DB_TEXT, DB_BLOB } db_type;

/* A bound parameter: DB_TEXT and DB_BLOB point at n bytes owned by the caller. */
typedef struct {
    db_type type;
    int64_t i;
    double r;
    const void *p;
    size_t n;
} db_val;

static inline db_val db_int(int64_t i) {
    return (db_val){DB_INT, i, 0, 0, 0};
}
static inline db_val db_real(double r) {
    return (db_val){DB_REAL, 0, r, 0, 0};
}
static inline db_val db_text(const char *s, size_t n) {
    return (db_val){DB_TEXT, 0, 0, s, n};
}
static inline db_val db_blob(const void *p, size_t n) {
    return (db_val){DB_BLOB, 0, 0, p, n};
}
static inline db_val db_null(void) {
    return (db_val){DB_NULL, 0, 0, 0, 0};
}

typedef struct db db;         /* one connection (backend-defined) */
typedef struct db_row db_row; /* the current row of a result (backend-defined) */

/* Called for each result row; returns 0 to go on, non-zero to stop (that value is returned by
 * db_query as STORE_OK: stopping early is not an error). Column values stay valid until the
 * callback returns. */
typedef int (*db_row_fn)(void *arg, db_row *row);

typedef struct db_ops {
    const char *name; /* "sqlite" or "postgresql" */
    /* Runs one statement. SQL uses `?` placeholders (a backend with another syntax rewrites
     * them); fn may be NULL. *changes (optional) receives the rows changed by an INSERT, UPDATE
     * or DELETE. */
    store_code (*query)(db *d, const char *sql, const db_val *args, int n_args, db_row_fn fn,
                        void *arg, int64_t *changes, store_err *err);
    /* Column accessors for the current row (index from 0). NULL reads as 0 / "" / empty. */
    int64_t (*col_int)(db_row *r, int col);
    double (*col_real)(db_row *r, int col);
    const char *(*col_text)(db_row *r, int col, size_t *len); /* NUL-terminated */
    const void *(*col_blob)(db_row *r, int col, size_t *len);
    bool (*col_null)(db_row *r, int col);
    /* write = the transaction will write: it takes the write lock at once (SQLite's BEGIN
     * IMMEDIATE), so two writers never deadlock upgrading a read lock. */
    store_code (*begin)(db *d, bool write, store_err *err);
    store_code (*commit)(db *d, store_err *err); /* durable when it returns STORE_OK */
    void (*rollback)(db *d);
    void (*close)(db *d);
} db_ops;

/* Which dialect a statement is written for, where the two differ (schema, full-text search). */
typedef enum { DB_DIALECT_SQLITE, DB_DIALECT_POSTGRES } db_dialect;

struct db {
    const db_ops *ops;
    db_dialect dialect;
    char where[256]; /* the file or server, for messages (no password) */
};

/* Options every backend takes. */
typedef struct {
    bool create; /* create the database file when missing (SQLite) */
    int busy_timeout_ms;
    int statement_timeout_ms; /* PostgreSQL: a statement's answer, lock waits included */
} db_open_opts;

/* SQLite: `path` is a file name. Refuses a file that is not a SQLite database, or a SQLite
 * database that is not a clara store (its application_id), without writing to it. */
store_code db_sqlite_open(const char *path, const db_open_opts *o, db **out, store_err *err);
/* PostgreSQL: `url` is a libpq connection URI (postgresql://...) or key=value string. */
store_code db_pg_open(const char *url, const db_open_opts *o, db **out, store_err *err);

#define DB_APPLICATION_ID 0x436c6152 /* "ClaR": PRAGMA application_id of a clara SQLite store */

#endif
