/* test_store_db.c - the database seam (src/store/db.h) against SQLite (a real file in a temp
 * directory) and, when CLARA_TEST_PG holds a connection string (tests/e2e/test_store_db.py
 * starts a PostgreSQL server and sets it), against PostgreSQL: the same battery on both.
 *
 * Two modes for tests/e2e/test_store_db.py, which cannot be arranged from inside one process:
 *   --readonly PATH  opening PATH must fail with STORE_READONLY (run as a user who cannot write)
 *   --pg-restart     connect, then after each line on stdin (the server restarted meanwhile)
 *                    the next statement may fail once with STORE_UNAVAILABLE, never twice */
#define _XOPEN_SOURCE 700 /* nftw */
#include "t.h"

#include "store/db.h"
#include "store/schema.h"

#include <ftw.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

static db *D;
static store_err E;
static char TMP[256];

static const char *dialect(const char *sqlite, const char *pg) {
    return D->dialect == DB_DIALECT_SQLITE ? sqlite : pg;
}

static store_code q(const char *sql, const db_val *args, int n, db_row_fn fn, void *arg,
                    int64_t *changes) {
    E = (store_err){0};
    return D->ops->query(D, sql, args, n, fn, arg, changes, &E);
}

static int read_int(void *arg, db_row *r) {
    *(int64_t *)arg = D->ops->col_int(r, 0);
    return 1;
}

/* The first column of the first row as an integer (-1 when the statement failed). */
static int64_t scalar(const char *sql, const db_val *args, int n) {
    int64_t v = -1;
    store_code rc = q(sql, args, n, read_int, &v, NULL);
    if (rc != STORE_OK) fprintf(stderr, "  %s: %s\n", sql, E.msg);
    return rc == STORE_OK ? v : -1;
}

static bool ok(store_code rc) {
    if (rc != STORE_OK) fprintf(stderr, "  unexpected failure %d: %s\n", rc, E.msg);
    return rc == STORE_OK;
}

/* ---- files ---- */

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void rm_rf(const char *path) {
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n + 1);
    if (b && fread(b, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return b;
}

static void spit(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(p, 1, n, f);
    fclose(f);
}

static bool same_bytes(const char *path, const uint8_t *before, size_t n) {
    size_t m = 0;
    uint8_t *now = slurp(path, &m);
    bool same = now && m == n && memcmp(now, before, n) == 0;
    free(now);
    return same;
}

static bool exists(const char *path) {
    return access(path, F_OK) == 0;
}

/* ---- the battery ---- */

static const char *const TABLES[] = {"clara_meta", "collections", "memories",
                                     "chunks",     "models",      "vectors"};

/* Leaves a PostgreSQL database as the harness created it, so each run starts from nothing. */
static void pg_drop_all(void) {
    q("DROP TABLE IF EXISTS vectors, models, chunks, memories, collections, clara_meta, t_types "
      "CASCADE",
      NULL, 0, NULL, NULL, NULL);
}

static void test_migrate(void) {
    int version = -1;
    T_CHECK(ok(store_schema_version(D, &version, &E)));
    T_EQ_INT(version, 0);
    T_CHECK(ok(store_schema_migrate(D, &E)));
    T_CHECK(ok(store_schema_version(D, &version, &E)));
    T_EQ_INT(version, 1);
    const char *sql = dialect("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                              "name = ?",
                              "SELECT count(*) FROM pg_tables WHERE schemaname = "
                              "current_schema() AND tablename = ?");
    for (size_t i = 0; i < sizeof TABLES / sizeof *TABLES; i++) {
        db_val a[] = {db_text(TABLES[i], strlen(TABLES[i]))};
        T_CHECK_MSG(scalar(sql, a, 1) == 1, "table %s", TABLES[i]);
    }
    /* a second migration finds version 1 and does nothing */
    T_CHECK(ok(store_schema_migrate(D, &E)));
    T_CHECK(ok(store_schema_version(D, &version, &E)));
    T_EQ_INT(version, 1);
    T_EQ_INT(scalar("SELECT count(*) FROM clara_meta", NULL, 0), 1);
}

#define BIG_BLOB (1u << 20)
static const char UTF8_TEXT[] =
    "na\xc3\xafve it's \"quoted\" \xe2\x80\x94 \xe6\x9d\xb1\xe4\xba\xac "
    "\xf0\x9f\x99\x82";

typedef struct {
    int64_t i;
    double r;
    char *s;
    uint8_t *b;
    size_t s_len, b_len;
    bool nulls[5];
    int64_t null_int;
    size_t null_text_len, null_blob_len;
} types_row;

static int read_types(void *arg, db_row *r) {
    types_row *t = arg;
    const db_ops *o = D->ops;
    t->i = o->col_int(r, 0);
    t->r = o->col_real(r, 1);
    const char *s = o->col_text(r, 2, &t->s_len);
    t->s = strndup(s, t->s_len);
    const void *b = o->col_blob(r, 3, &t->b_len);
    t->b = malloc(t->b_len + 1);
    if (t->b_len) memcpy(t->b, b, t->b_len);
    for (int c = 0; c < 5; c++) t->nulls[c] = o->col_null(r, c);
    t->null_int = o->col_int(r, 4);
    o->col_text(r, 4, &t->null_text_len);
    o->col_blob(r, 4, &t->null_blob_len);
    return 0;
}

static types_row select_types(int64_t id) {
    types_row t = {0};
    db_val a[] = {db_int(id)};
    T_CHECK(ok(q("SELECT i, r, s, b, n FROM t_types WHERE id = ?", a, 1, read_types, &t, NULL)));
    return t;
}

static int64_t insert_types(db_val i, db_val r, db_val s, db_val b) {
    db_val a[] = {i, r, s, b, db_null()};
    int64_t id = -1;
    T_CHECK(ok(q("INSERT INTO t_types (i, r, s, b, n) VALUES (?, ?, ?, ?, ?) RETURNING id", a, 5,
                 read_int, &id, NULL)));
    return id;
}

static void test_types(void) {
    T_CHECK(ok(q(dialect("CREATE TABLE t_types (id INTEGER PRIMARY KEY, i INTEGER, r REAL, "
                         "s TEXT, b BLOB, n TEXT)",
                         "CREATE TABLE t_types (id BIGINT GENERATED BY DEFAULT AS IDENTITY "
                         "PRIMARY KEY, i BIGINT, r DOUBLE PRECISION, s TEXT, b BYTEA, n TEXT)"),
                 NULL, 0, NULL, NULL, NULL)));
    uint8_t *big = malloc(BIG_BLOB);
    for (size_t k = 0; k < BIG_BLOB; k++) big[k] = (uint8_t)(k * 7 + k / 256); /* every value */
    int64_t id1 = insert_types(db_int(-9007199254740993), db_real(3.141592653589793),
                               db_text(UTF8_TEXT, strlen(UTF8_TEXT)), db_blob(big, BIG_BLOB));
    int64_t id2 = insert_types(db_int(INT64_MAX), db_real(-1e300), db_text("", 0), db_blob("", 0));
    T_CHECK(id1 > 0 && id2 > id1); /* RETURNING id */

    types_row t = select_types(id1);
    T_EQ_INT(t.i, -9007199254740993);
    T_CHECK(t.r == 3.141592653589793);
    T_CHECK(t.s && t.s_len == strlen(UTF8_TEXT) && strcmp(t.s, UTF8_TEXT) == 0);
    T_CHECK(t.b_len == BIG_BLOB && t.b && memcmp(t.b, big, BIG_BLOB) == 0);
    T_CHECK(!t.nulls[0] && !t.nulls[3] && t.nulls[4]);
    T_CHECK(t.null_int == 0 && t.null_text_len == 0 && t.null_blob_len == 0);
    free(t.s), free(t.b);

    t = select_types(id2);
    T_EQ_INT(t.i, INT64_MAX);
    T_CHECK(t.r == -1e300);
    T_CHECK(t.s_len == 0 && t.b_len == 0 && !t.nulls[2] && !t.nulls[3]); /* empty, not NULL */
    free(t.s), free(t.b);
    free(big);
}

static int read_aggregates(void *arg, db_row *r) {
    int64_t *v = arg;
    v[0] = D->ops->col_int(r, 0);
    v[1] = D->ops->col_int(r, 1);
    size_t n;
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)(INT64_MAX - 9007199254740993));
    v[2] = strcmp(D->ops->col_text(r, 1, &n), want) == 0 && n == strlen(want);
    v[3] = D->ops->col_real(r, 2) == 2.5 && strcmp(D->ops->col_text(r, 2, NULL), "2.5") == 0;
    v[4] = D->ops->col_int(r, 3);
    return 1;
}

/* count(*), sum(), 2.5 and the cast are bigint, numeric, numeric and integer in PostgreSQL:
 * col_int, col_real and col_text read them all. */
static void test_aggregates(void) {
    int64_t v[5] = {0};
    T_CHECK(ok(q("SELECT count(*), sum(i), 2.5, CAST(-7 AS INTEGER) FROM t_types", NULL, 0,
                 read_aggregates, v, NULL)));
    T_EQ_INT(v[0], 2);
    T_EQ_INT(v[1], INT64_MAX - 9007199254740993);
    T_CHECK(v[2] == 1);
    T_CHECK(v[3] == 1);
    T_EQ_INT(v[4], -7);
}

static int64_t add_collection(const char *name, store_code *rc) {
    db_val a[] = {db_text(name, strlen(name)), db_int(1)};
    int64_t id = -1;
    *rc = q("INSERT INTO collections (name, created_ms) VALUES (?, ?) RETURNING id", a, 2, read_int,
            &id, NULL);
    return id;
}

static int64_t count_named(const char *name) {
    db_val a[] = {db_text(name, strlen(name))};
    return scalar("SELECT count(*) FROM collections WHERE name = ?", a, 1);
}

static void test_conflict(void) {
    store_code rc;
    T_CHECK(add_collection("alpha", &rc) > 0 && ok(rc));
    add_collection("alpha", &rc);
    T_EQ_INT(rc, STORE_CONFLICT);
    T_CHECK_MSG(strstr(E.msg, D->where) != NULL, "%s", E.msg);
    T_EQ_INT(count_named("alpha"), 1);
}

static void test_transactions(void) {
    store_code rc;
    T_CHECK(ok(D->ops->begin(D, true, &E)));
    add_collection("discarded", &rc);
    T_CHECK(ok(rc));
    T_EQ_INT(count_named("discarded"), 1); /* visible inside */
    D->ops->rollback(D);
    T_EQ_INT(count_named("discarded"), 0);

    T_CHECK(ok(D->ops->begin(D, true, &E)));
    add_collection("kept", &rc);
    T_CHECK(ok(D->ops->commit(D, &E)));
    T_EQ_INT(count_named("kept"), 1);

    T_CHECK(ok(D->ops->begin(D, false, &E)));
    T_EQ_INT(count_named("kept"), 1);
    T_CHECK(ok(D->ops->commit(D, &E)));
}

typedef struct {
    int calls;
    char first[32];
} stop_state;

static int stop_after_one(void *arg, db_row *r) {
    stop_state *s = arg;
    s->calls++;
    snprintf(s->first, sizeof s->first, "%s", D->ops->col_text(r, 0, NULL));
    return 7;
}

static int count_rows(void *arg, db_row *r) {
    (void)r;
    (*(int *)arg)++;
    return 0;
}

static void test_early_stop(void) {
    const char *sql = "SELECT name FROM collections ORDER BY id";
    stop_state s = {0};
    T_EQ_INT(q(sql, NULL, 0, stop_after_one, &s, NULL), STORE_OK);
    T_EQ_INT(s.calls, 1);
    T_EQ_STR(s.first, "alpha");
    int all = 0; /* the same statement again runs from the start */
    T_CHECK(ok(q(sql, NULL, 0, count_rows, &all, NULL)));
    T_EQ_INT(all, 2);
}

static void test_changes(void) {
    store_code rc;
    add_collection("third", &rc);
    int64_t n = -1;
    T_CHECK(ok(q("UPDATE collections SET version = version + 1", NULL, 0, NULL, NULL, &n)));
    T_EQ_INT(n, 3);
    db_val a[] = {db_text("third", 5)};
    T_CHECK(ok(q("DELETE FROM collections WHERE name = ?", a, 1, NULL, NULL, &n)));
    T_EQ_INT(n, 1);
    T_CHECK(ok(q("SELECT count(*) FROM collections", NULL, 0, NULL, NULL, &n)));
    T_EQ_INT(n, 0);
}

static void test_newer_schema(void) {
    T_CHECK(ok(q("UPDATE clara_meta SET value = '99' WHERE key = 'schema_version'", NULL, 0, NULL,
                 NULL, NULL)));
    T_EQ_INT(store_schema_migrate(D, &E), STORE_CORRUPT);
    T_CHECK_MSG(strstr(E.msg, "schema version 99") && strstr(E.msg, "upgrade clara-server"), "%s",
                E.msg);
    T_CHECK(ok(q("UPDATE clara_meta SET value = '1' WHERE key = 'schema_version'", NULL, 0, NULL,
                 NULL, NULL)));
    T_CHECK(ok(store_schema_migrate(D, &E)));
}

static int64_t add_chunk(int64_t memory, int seq, const char *text) {
    db_val a[] = {db_int(memory), db_int(seq),
                  db_int(0),      db_int((int64_t)strlen(text)),
                  db_int(3),      db_text(text, strlen(text))};
    int64_t id = -1;
    T_CHECK(ok(q("INSERT INTO chunks (memory_id, seq, byte_start, byte_len, n_tokens, text) "
                 "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                 a, 6, read_int, &id, NULL)));
    return id;
}

static int64_t fts_find(const char *word) {
    db_val a[] = {db_text(word, strlen(word))};
    return scalar(dialect("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?",
                          "SELECT count(*) FROM chunks WHERE tsv @@ plainto_tsquery('simple', ?)"),
                  a, 1);
}

static int64_t fts_first(const char *word) {
    db_val a[] = {db_text(word, strlen(word))};
    return scalar(dialect("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?",
                          "SELECT id FROM chunks WHERE tsv @@ plainto_tsquery('simple', ?)"),
                  a, 1);
}

static void test_fts(void) {
    store_code rc;
    int64_t coll = add_collection("fts", &rc);
    db_val m[] = {db_int(coll), db_text("m1", 2), db_text("whole", 5),
                  db_int(1),    db_int(1),        db_int(3)};
    int64_t mem = -1;
    T_CHECK(ok(q("INSERT INTO memories (collection_id, ext_id, text, created_ms, updated_ms, "
                 "n_chunks) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                 m, 6, read_int, &mem, NULL)));
    add_chunk(mem, 0, "the quick brown fox");
    int64_t zebra = add_chunk(mem, 1, "a zebra crossed the road");
    add_chunk(mem, 2, "brown bears sleep");
    T_EQ_INT(fts_find("zebra"), 1);
    T_EQ_INT(fts_first("zebra"), zebra);
    T_EQ_INT(fts_find("brown"), 2);
    T_EQ_INT(fts_find("giraffe"), 0);
    db_val a[] = {db_int(zebra)};
    int64_t n = 0;
    T_CHECK(ok(q("DELETE FROM chunks WHERE id = ?", a, 1, NULL, NULL, &n)));
    T_EQ_INT(n, 1);
    T_EQ_INT(fts_find("zebra"), 0);
    T_EQ_INT(fts_find("brown"), 2);
    /* the foreign key holds: a chunk of a memory that does not exist is refused */
    db_val bad[] = {db_int(mem + 1000), db_int(0), db_int(0),
                    db_int(1),          db_int(1), db_text("x", 1)};
    T_CHECK(q("INSERT INTO chunks (memory_id, seq, byte_start, byte_len, n_tokens, text) VALUES "
              "(?, ?, ?, ?, ?, ?)",
              bad, 6, NULL, NULL, NULL) != STORE_OK);
}

static void battery(void) {
    if (D->dialect == DB_DIALECT_POSTGRES) pg_drop_all();
    T_RUN(test_migrate);
    T_RUN(test_types);
    T_RUN(test_aggregates);
    T_RUN(test_conflict);
    T_RUN(test_transactions);
    T_RUN(test_early_stop);
    T_RUN(test_changes);
    T_RUN(test_newer_schema);
    T_RUN(test_fts);
}

/* ---- SQLite's files ---- */

static store_code open_sqlite(const char *path, bool create, db **d) {
    db_open_opts o = {.create = create};
    E = (store_err){0};
    return db_sqlite_open(path, &o, d, &E);
}

/* Opening path fails with `want`, a message containing `needle`, and the file as it was. */
static void refused(const char *path, store_code want, const char *needle) {
    size_t n = 0;
    uint8_t *before = slurp(path, &n);
    db *d = NULL;
    store_code rc = open_sqlite(path, true, &d);
    T_CHECK_MSG(rc == want && d == NULL, "%s: code %d, want %d: %s", path, rc, want, E.msg);
    T_CHECK_MSG(strstr(E.msg, needle) && strstr(E.msg, path), "%s", E.msg);
    T_CHECK_MSG(before && same_bytes(path, before, n), "%s was modified", path);
    char wal[300];
    snprintf(wal, sizeof wal, "%s-wal", path);
    T_CHECK(!exists(wal));
    free(before);
}

static void make_foreign(const char *path, const char *sql) {
    sqlite3 *h;
    if (sqlite3_open(path, &h) == SQLITE_OK) sqlite3_exec(h, sql, NULL, NULL, NULL);
    sqlite3_close(h);
}

static void test_foreign_files(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/notes.txt", TMP);
    const char text[] = "these are my notes, not a database\n";
    spit(path, text, sizeof text - 1);
    refused(path, STORE_CORRUPT, "is not a SQLite database");

    snprintf(path, sizeof path, "%s/short.db", TMP);
    spit(path, "SQLite", 6);
    refused(path, STORE_CORRUPT, "is not a SQLite database");

    snprintf(path, sizeof path, "%s/other-app.db", TMP);
    make_foreign(path, "CREATE TABLE recipes (name TEXT); INSERT INTO recipes VALUES ('soup')");
    refused(path, STORE_CORRUPT, "SQLite database of another application");

    snprintf(path, sizeof path, "%s/other-id.db", TMP);
    make_foreign(path, "PRAGMA application_id = 7; CREATE TABLE x (y); DROP TABLE x");
    refused(path, STORE_CORRUPT, "SQLite database of another application");
}

/* A clara store whose pages after the first are overwritten: an error (CORRUPT), never a
 * write to the file. */
static void test_corrupt_store(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/corrupt.db", TMP);
    db *d = NULL;
    T_CHECK(ok(open_sqlite(path, true, &d)));
    if (!d) return;
    D = d;
    T_CHECK(ok(store_schema_migrate(d, &E)));
    store_code rc;
    add_collection("c", &rc);
    d->ops->close(d);
    size_t n = 0;
    uint8_t *b = slurp(path, &n);
    T_CHECK(b && n > 8192);
    if (!b || n <= 8192) {
        free(b);
        return;
    }
    for (size_t i = 4096; i < n; i++) b[i] = (uint8_t)(0xA5 ^ i);
    spit(path, b, n);

    rc = open_sqlite(path, false, &d);
    if (rc == STORE_OK) {
        D = d;
        rc = store_schema_migrate(d, &E);
        if (rc == STORE_OK && scalar("SELECT count(*) FROM collections", NULL, 0) < 0) rc = E.code;
        d->ops->close(d);
    }
    T_CHECK_MSG(rc == STORE_CORRUPT, "code %d: %s", rc, E.msg);
    T_CHECK(strstr(E.msg, path) != NULL);
    T_CHECK_MSG(same_bytes(path, b, n), "the corrupt store was modified");
    free(b);
}

static void test_open_paths(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/missing.db", TMP);
    db *d = NULL;
    T_CHECK(open_sqlite(path, false, &d) != STORE_OK && d == NULL);
    T_CHECK(!exists(path));

    snprintf(path, sizeof path, "%s/a/b/store.db", TMP);
    T_CHECK(ok(open_sqlite(path, true, &d)));
    struct stat st;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/a/b", TMP);
    T_CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700);
    if (d) {
        D = d;
        T_EQ_INT(scalar("PRAGMA application_id", NULL, 0), DB_APPLICATION_ID);
        T_CHECK(scalar("PRAGMA foreign_keys", NULL, 0) == 1);
        T_CHECK(scalar("PRAGMA synchronous", NULL, 0) == 2); /* FULL */
        d->ops->close(d);
    }
    /* an empty file is a new database: stamped as a clara store */
    snprintf(path, sizeof path, "%s/empty.db", TMP);
    spit(path, "", 0);
    T_CHECK(ok(open_sqlite(path, false, &d)));
    if (d) d->ops->close(d);

    if (geteuid() != 0) { /* root writes anything; tests/e2e/test_store_db.py covers it then */
        snprintf(path, sizeof path, "%s/a/b/store.db", TMP);
        chmod(path, 0444);
        T_EQ_INT(open_sqlite(path, false, &d), STORE_READONLY);
        T_CHECK(strstr(E.msg, path) != NULL);
        chmod(path, 0600);
    }
}

static void run_sqlite(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/store.db", TMP);
    db *d = NULL;
    T_CHECK(ok(open_sqlite(path, true, &d)));
    if (!d) return;
    D = d;
    T_EQ_STR(d->ops->name, "sqlite");
    battery();
    d->ops->close(d);
    T_RUN(test_foreign_files);
    T_RUN(test_corrupt_store);
    T_RUN(test_open_paths);
}

/* ---- PostgreSQL ---- */

static void test_pg_unreachable(void) {
    const char *urls[] = {
        "postgresql://clara:s3cret@127.0.0.1:1/clara?password=s3cret&connect_timeout=5",
        "host=127.0.0.1 port=1 user=clara password='s3 cret' dbname=clara",
    };
    for (int i = 0; i < 2; i++) {
        db *d = NULL;
        E = (store_err){0};
        store_code rc = db_pg_open(urls[i], NULL, &d, &E);
        T_CHECK_MSG(rc == STORE_UNAVAILABLE && !d, "code %d: %s", rc, E.msg);
        T_CHECK_MSG(!strstr(E.msg, "s3") && strstr(E.msg, "***"), "%s", E.msg);
    }
}

static void run_pg(const char *url) {
    db *d = NULL;
    E = (store_err){0};
    T_CHECK(ok(db_pg_open(url, NULL, &d, &E)));
    if (!d) return;
    D = d;
    T_EQ_STR(d->ops->name, "postgresql");
    battery();
    pg_drop_all();
    d->ops->close(d);
    T_RUN(test_pg_unreachable);
}

/* ---- the modes for the Python suite ---- */

static int expect_readonly(const char *path) {
    db *d = NULL;
    store_code rc = open_sqlite(path, false, &d);
    T_CHECK_MSG(rc == STORE_READONLY, "code %d: %s", rc, E.msg);
    T_CHECK_MSG(strstr(E.msg, path) != NULL, "%s", E.msg);
    printf("message: %s\n", E.msg);
    if (d) d->ops->close(d);
    return t_report("readonly");
}

/* Runs "SELECT 1" until it works, at most 3 times; returns how many failed on the way. */
static int select_after_restart(void) {
    int failures = 0;
    for (int i = 0; i < 3; i++) {
        if (scalar("SELECT 1", NULL, 0) == 1) break;
        T_CHECK_MSG(E.code == STORE_UNAVAILABLE, "code %d: %s", E.code, E.msg);
        failures++;
    }
    return failures;
}

static int pg_restart(const char *url) {
    char line[64];
    E = (store_err){0};
    T_CHECK(ok(db_pg_open(url, NULL, &D, &E)));
    if (!D) return t_report("pg-restart");
    T_EQ_INT(scalar("SELECT 1", NULL, 0), 1);
    printf("ready\n");
    fflush(stdout);
    /* the harness restarts PostgreSQL, then writes a line */
    if (!fgets(line, sizeof line, stdin)) return t_report("pg-restart");
    int failures = select_after_restart();
    T_CHECK_MSG(failures <= 1, "%d failures after the restart", failures);
    T_EQ_INT(scalar("SELECT 2", NULL, 0), 2);
    printf("ready\n");
    fflush(stdout);
    /* restarted again: a transaction's begin() finds out and reconnects on its own */
    if (!fgets(line, sizeof line, stdin)) return t_report("pg-restart");
    T_CHECK(ok(D->ops->begin(D, true, &E)));
    T_EQ_INT(scalar("SELECT 3", NULL, 0), 3);
    T_CHECK(ok(D->ops->commit(D, &E)));
    D->ops->close(D);
    return t_report("pg-restart");
}

int main(int argc, char **argv) {
    const char *pg = getenv("CLARA_TEST_PG");
    if (argc == 3 && strcmp(argv[1], "--readonly") == 0) return expect_readonly(argv[2]);
    if (argc == 2 && strcmp(argv[1], "--pg-restart") == 0 && pg) return pg_restart(pg);
    const char *tmp = getenv("TMPDIR");
    snprintf(TMP, sizeof TMP, "%s/clara-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(TMP)) {
        perror("mkdtemp");
        return 1;
    }
    run_sqlite();
    if (pg && *pg)
        run_pg(pg);
    else
        printf("CLARA_TEST_PG is not set: PostgreSQL is tested by tests/e2e/test_store_db.py\n");
    rm_rf(TMP);
    return t_report(pg && *pg ? "store_db (sqlite, postgresql)" : "store_db (sqlite)");
}
