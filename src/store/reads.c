/* reads.c - reading memories and collections, and the vectors still to be made for a model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

void store_memory_free(store_memory *m) {
    if (!m) return;
    free(m->id);
    free(m->text);
    free(m->metadata);
    memset(m, 0, sizeof *m);
}

static char *dup_col(const db_ops *o, db_row *r, int col, size_t *len) {
    size_t n = 0;
    const char *t = o->col_text(r, col, &n);
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, t, n);
        c[n] = 0;
    }
    if (len) *len = n;
    return c;
}

#define MEMORY_COLUMNS                                                                             \
    "m.ext_id, m.text, m.metadata, m.created_ms, m.updated_ms, m.n_chunks, "                       \
    "(SELECT COALESCE(SUM(c.n_tokens), 0) FROM chunks c WHERE c.memory_id = m.id), m.id"

typedef struct {
    store *s;
    store_memory *out;
    size_t n, cap;
    int64_t cursor; /* the internal id of the last row read (store_list's cursor) */
    bool nomem;
} memory_rows;

static int read_memory(void *arg, db_row *r) {
    memory_rows *mr = arg;
    const db_ops *o = mr->s->d->ops;
    if (!store_grow((void **)&mr->out, &mr->cap, mr->n, sizeof *mr->out)) return mr->nomem = true;
    store_memory *m = &mr->out[mr->n++];
    memset(m, 0, sizeof *m);
    m->id = dup_col(o, r, 0, NULL);
    m->text = dup_col(o, r, 1, &m->text_len);
    m->metadata = o->col_null(r, 2) ? NULL : dup_col(o, r, 2, NULL);
    m->created_ms = o->col_int(r, 3);
    m->updated_ms = o->col_int(r, 4);
    m->n_chunks = (uint32_t)o->col_int(r, 5);
    m->n_tokens = (uint32_t)o->col_int(r, 6);
    mr->cursor = o->col_int(r, 7);
    if (!m->id || !m->text || (!o->col_null(r, 2) && !m->metadata)) return mr->nomem = true;
    return 0;
}

static void free_rows(memory_rows *mr) {
    for (size_t i = 0; i < mr->n; i++) store_memory_free(&mr->out[i]);
    free(mr->out);
}

store_code store_get(store *s, const char *collection, const char *id, store_memory *out,
                     store_err *err) {
    memset(out, 0, sizeof *out);
    memory_rows mr = {s, NULL, 0, 0, 0, false};
    pthread_mutex_lock(&s->mu);
    int64_t coll_id = 0, mem_id = 0;
    store_code rc = store_coll_find(s, collection, false, &coll_id, NULL, err);
    if (rc == STORE_OK) rc = store_mem_find(s, coll_id, collection, id, &mem_id, err);
    db_val a[] = {db_int(mem_id)};
    if (rc == STORE_OK)
        rc = s->d->ops->query(s->d, "SELECT " MEMORY_COLUMNS " FROM memories m WHERE m.id = ?", a,
                              1, read_memory, &mr, NULL, err);
    pthread_mutex_unlock(&s->mu);
    if (rc == STORE_OK && mr.nomem) rc = store_fail(err, STORE_NOMEM, "out of memory");
    if (rc == STORE_OK && mr.n != 1)
        rc = store_fail(err, STORE_NOT_FOUND, "no memory '%s' in collection '%s'", id, collection);
    if (rc == STORE_OK) {
        *out = mr.out[0];
        mr.n = 0;
    }
    free_rows(&mr);
    return rc;
}

/* A page's rows counted against STORE_LIST_BYTES: rows `fit` fit (one at least), `rows` came. */
typedef struct {
    const db_ops *o;
    uint64_t bytes;
    size_t rows, fit;
} page_sizes;

static int read_size(void *arg, db_row *r) {
    page_sizes *ps = arg;
    ps->bytes += (uint64_t)ps->o->col_int(r, 0);
    ps->rows++;
    if (ps->rows == 1 || ps->bytes <= STORE_LIST_BYTES) ps->fit = ps->rows;
    return 0;
}

/* How many of the next `limit` memories after `after` a page holds: a page of 1,000 memories of
 * a few MB each would be gigabytes, built whole in memory. The sizes are read first (the
 * database's own byte counts, no text sent), then the page; *more says whether rows remain. */
static store_code page_rows(store *s, int64_t coll_id, int64_t after, size_t *limit, bool *more,
                            store_err *err) {
    const char *sql = s->d->dialect == DB_DIALECT_POSTGRES
                          ? "SELECT octet_length(m.text) + COALESCE(octet_length(m.metadata), 0) "
                            "FROM memories m WHERE m.collection_id = ? AND m.id > ? ORDER BY m.id "
                            "LIMIT ?"
                          : "SELECT length(CAST(m.text AS BLOB)) + "
                            "COALESCE(length(CAST(m.metadata AS BLOB)), 0) FROM memories m WHERE "
                            "m.collection_id = ? AND m.id > ? ORDER BY m.id LIMIT ?";
    page_sizes ps = {s->d->ops, 0, 0, 0};
    db_val a[] = {db_int(coll_id), db_int(after), db_int((int64_t)*limit + 1)};
    store_code rc = s->d->ops->query(s->d, sql, a, 3, read_size, &ps, NULL, err);
    if (ps.fit < *limit) *limit = ps.fit;
    *more = ps.rows > *limit;
    return rc;
}

store_code store_list(store *s, const char *collection, int64_t after, size_t limit,
                      store_memory **out, size_t *n, int64_t *next, store_err *err) {
    *out = NULL;
    *n = 0;
    *next = 0;
    if (limit == 0 || limit > STORE_LIST_MAX) limit = STORE_LIST_MAX;
    pthread_mutex_lock(&s->mu);
    int64_t coll_id = 0;
    bool more = false;
    store_code rc = store_coll_find(s, collection, false, &coll_id, NULL, err);
    if (rc == STORE_OK) rc = page_rows(s, coll_id, after, &limit, &more, err);
    memory_rows mr = {s, NULL, 0, 0, 0, false};
    db_val a[] = {db_int(coll_id), db_int(after), db_int((int64_t)limit)};
    if (rc == STORE_OK && limit > 0)
        rc = s->d->ops->query(s->d,
                              "SELECT " MEMORY_COLUMNS " FROM memories m WHERE m.collection_id = ? "
                              "AND m.id > ? ORDER BY m.id LIMIT ?",
                              a, 3, read_memory, &mr, NULL, err);
    pthread_mutex_unlock(&s->mu);
    if (rc == STORE_OK && mr.nomem) rc = store_fail(err, STORE_NOMEM, "out of memory");
    if (rc != STORE_OK) {
        free_rows(&mr);
        return rc;
    }
    /* the cursor is the internal id of the last row returned, read with it (rows deleted between
     * the two reads: the same cursor again) */
    if (more) *next = mr.n ? mr.cursor : after;
    *out = mr.out;
    *n = mr.n;
    return rc;
}

typedef struct {
    store *s;
    store_collection *out;
    size_t n, cap;
    bool nomem;
} coll_rows;

static int read_coll(void *arg, db_row *r) {
    coll_rows *cr = arg;
    const db_ops *o = cr->s->d->ops;
    if (!store_grow((void **)&cr->out, &cr->cap, cr->n, sizeof *cr->out)) return cr->nomem = true;
    store_collection *c = &cr->out[cr->n++];
    c->name = dup_col(o, r, 0, NULL);
    c->created_ms = o->col_int(r, 1);
    c->n_memories = o->col_int(r, 2);
    c->n_chunks = o->col_int(r, 3);
    if (!c->name) return cr->nomem = true;
    return 0;
}

void store_collections_free(store_collection *c, size_t n) {
    for (size_t i = 0; c && i < n; i++) free(c[i].name);
    free(c);
}

store_code store_collections(store *s, store_collection **out, size_t *n, store_err *err) {
    coll_rows cr = {s, NULL, 0, 0, false};
    pthread_mutex_lock(&s->mu);
    store_code rc = s->d->ops->query(
        s->d,
        "SELECT c.name, c.created_ms, "
        "(SELECT count(*) FROM memories m WHERE m.collection_id = c.id), "
        "(SELECT COALESCE(SUM(m.n_chunks), 0) FROM memories m WHERE m.collection_id = c.id) "
        "FROM collections c ORDER BY c.name",
        NULL, 0, read_coll, &cr, NULL, err);
    pthread_mutex_unlock(&s->mu);
    if (rc == STORE_OK && cr.nomem) rc = store_fail(err, STORE_NOMEM, "out of memory");
    if (rc != STORE_OK) {
        store_collections_free(cr.out, cr.n);
        cr.out = NULL;
        cr.n = 0;
    }
    *out = cr.out;
    *n = cr.n;
    return rc;
}

/* ---- vectors still to make ----------------------------------------------------------------- */

typedef struct {
    store *s;
    store_pending *out;
    size_t n, cap;
    bool nomem;
} pending_rows;

static int read_pending(void *arg, db_row *r) {
    pending_rows *pr = arg;
    const db_ops *o = pr->s->d->ops;
    if (!store_grow((void **)&pr->out, &pr->cap, pr->n, sizeof *pr->out)) return pr->nomem = true;
    store_pending *p = &pr->out[pr->n++];
    p->chunk_id = o->col_int(r, 0);
    p->text = dup_col(o, r, 1, &p->len);
    if (!p->text) return pr->nomem = true;
    return 0;
}

void store_pending_free(store_pending *p, size_t n) {
    for (size_t i = 0; p && i < n; i++) free(p[i].text);
    free(p);
}

store_code store_pending_chunks(store *s, const char *collection, const store_model *m,
                                size_t limit, store_pending **out, size_t *n, int64_t *total,
                                store_err *err) {
    *out = NULL;
    *n = 0;
    pending_rows pr = {s, NULL, 0, 0, false};
    pthread_mutex_lock(&s->mu);
    int64_t coll_id = 0, model_id = 0;
    store_code rc =
        collection ? store_coll_find(s, collection, false, &coll_id, NULL, err) : STORE_OK;
    if (rc == STORE_OK) rc = store_model_find(s, m, false, &model_id, err);
    const char *where = " FROM chunks c JOIN memories m ON m.id = c.memory_id WHERE (? = 0 OR "
                        "m.collection_id = ?) AND NOT EXISTS (SELECT 1 FROM vectors v WHERE "
                        "v.chunk_id = c.id AND v.model_id = ?)";
    char sql[512];
    db_val a[] = {db_int(coll_id), db_int(coll_id), db_int(model_id), db_int((int64_t)limit)};
    if (rc == STORE_OK && total) {
        snprintf(sql, sizeof sql, "SELECT count(*)%s", where);
        store_q1 q;
        rc = store_q_int(s, sql, a, 3, &q, err);
        *total = q.i;
    }
    if (rc == STORE_OK && limit) {
        snprintf(sql, sizeof sql, "SELECT c.id, c.text%s ORDER BY c.id LIMIT ?", where);
        rc = s->d->ops->query(s->d, sql, a, 4, read_pending, &pr, NULL, err);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc == STORE_OK && pr.nomem) rc = store_fail(err, STORE_NOMEM, "out of memory");
    if (rc != STORE_OK) {
        store_pending_free(pr.out, pr.n);
        return rc;
    }
    *out = pr.out;
    *n = pr.n;
    return STORE_OK;
}

store_code store_put_vectors(store *s, const store_model *m, store_dtype dtype,
                             const int64_t *chunk_ids, const float *vectors, size_t n,
                             store_err *err) {
    if (n == 0) return STORE_OK;
    size_t per = (size_t)m->n_mem * m->n_embd;
    pthread_mutex_lock(&s->mu);
    store_code rc = s->d->ops->begin(s->d, true, err);
    if (rc != STORE_OK) {
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    int64_t model_id = 0;
    rc = store_model_find(s, m, true, &model_id, err);
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        db_val a[] = {db_int(chunk_ids[i])};
        store_q1 q; /* the chunk's collection, or nothing when it was deleted meanwhile */
        rc = store_q_int(s,
                         "SELECT m.collection_id FROM chunks c JOIN memories m ON m.id = "
                         "c.memory_id WHERE c.id = ?",
                         a, 1, &q, err);
        if (rc == STORE_OK && q.found)
            rc = store_write_vectors(s, chunk_ids[i], model_id, vectors + i * per, per, dtype, err);
        if (rc == STORE_OK && q.found) rc = store_coll_bump(s, q.i, err);
    }
    rc = store_txn_end(s, rc, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}
