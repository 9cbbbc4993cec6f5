/* store.c - collections and memories over the db.h seam: opening, names, writes (one
 * transaction each), reads, listing and the vector encoding. Selection is in select.c, export
 * and import in export.c. */
#include "store/store_internal.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "base/fp16.h"
#include "base/json_keys.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the store writes vectors little-endian as they are in memory"
#endif

int64_t store_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool store_grow(void **p, size_t *cap, size_t n, size_t size) {
    if (n < *cap) return true;
    size_t c = *cap ? *cap * 2 : 16;
    void *q = realloc(*p, c * size);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

bool store_url_is_postgres(const char *url) {
    return url && (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0);
}

store_code store_open(const store_options *o, store **out, store_err *err) {
    *out = NULL;
    if (!o->url || !*o->url) return store_fail(err, STORE_INVALID, "no database given");
    store *s = calloc(1, sizeof *s);
    if (!s) return store_fail(err, STORE_NOMEM, "out of memory");
    db_open_opts dopt = {o->create, 5000, o->timeout_ms > 0 ? o->timeout_ms : 30000};
    store_code rc = store_url_is_postgres(o->url) ? db_pg_open(o->url, &dopt, &s->d, err)
                                                  : db_sqlite_open(o->url, &dopt, &s->d, err);
    if (rc == STORE_OK) rc = store_schema_migrate(s->d, err);
    s->cache = rc == STORE_OK
                   ? store_cache_new(o->cache_bytes ? o->cache_bytes : STORE_DEFAULT_CACHE)
                   : NULL;
    if (rc == STORE_OK && !s->cache) rc = store_fail(err, STORE_NOMEM, "out of memory");
    if (rc != STORE_OK) {
        if (s->d) s->d->ops->close(s->d);
        free(s);
        return rc;
    }
    pthread_mutex_init(&s->mu, NULL);
    *out = s;
    return STORE_OK;
}

void store_close(store *s) {
    if (!s) return;
    s->d->ops->close(s->d);
    store_cache_free(s->cache);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

const char *store_backend_name(const store *s) {
    return s->d->ops->name;
}
const char *store_where(const store *s) {
    return s->d->where;
}

void store_cache_stats_get(store *s, store_cache_stats *o) {
    store_cache_stats_read(s->cache, &o->bytes, &o->limit, &o->hits, &o->misses, &o->entries);
}

store_code store_check_name(const char *what, const char *name, size_t len, store_err *err) {
    if (!name || len == 0) return store_fail(err, STORE_INVALID, "the %s is empty", what);
    if (len > STORE_NAME_MAX)
        return store_fail(err, STORE_INVALID, "the %s is %zu bytes long; at most %d are allowed",
                          what, len, STORE_NAME_MAX);
    if (name[0] == '.' || name[0] == '-')
        return store_fail(err, STORE_INVALID, "the %s must not start with '%c'", what, name[0]);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '_' && c != '-' && c != '.' && c != ':')
            return store_fail(err, STORE_INVALID,
                              "the %s may hold only letters, digits and _ - . : (byte %zu is "
                              "0x%02x)",
                              what, i, c);
    }
    return STORE_OK;
}

/* ---- small query helpers ----------------------------------------------------------------- */

static int row_int(void *arg, db_row *r) {
    store_q1 *q = arg;
    q->found = true;
    q->i = q->d->ops->col_int(r, 0);
    q->i2 = q->d->ops->col_int(r, 1);
    return 1;
}

store_code store_q_int(store *s, const char *sql, const db_val *args, int n, store_q1 *q,
                       store_err *err) {
    q->d = s->d;
    q->found = false;
    q->i = q->i2 = 0;
    return s->d->ops->query(s->d, sql, args, n, row_int, q, NULL, err);
}

store_code store_exec(store *s, const char *sql, const db_val *args, int n, int64_t *changes,
                      store_err *err) {
    return s->d->ops->query(s->d, sql, args, n, NULL, NULL, changes, err);
}

store_code store_coll_find(store *s, const char *name, bool create, int64_t *id, int64_t *version,
                           store_err *err) {
    store_code rc = store_check_name("collection name", name, strlen(name), err);
    if (rc != STORE_OK) return rc;
    db_val a[] = {db_text(name, strlen(name)), db_int(store_now_ms())};
    store_q1 q;
    rc = store_q_int(s, "SELECT id, version FROM collections WHERE name = ?", a, 1, &q, err);
    if (rc == STORE_OK && !q.found && create) {
        rc = store_exec(s,
                        "INSERT INTO collections (name, created_ms) VALUES (?, ?) "
                        "ON CONFLICT (name) DO NOTHING",
                        a, 2, NULL, err);
        if (rc == STORE_OK)
            rc =
                store_q_int(s, "SELECT id, version FROM collections WHERE name = ?", a, 1, &q, err);
    }
    if (rc != STORE_OK) return rc;
    if (!q.found) return store_fail(err, STORE_NOT_FOUND, "no collection named '%s'", name);
    *id = q.i;
    if (version) *version = q.i2;
    return STORE_OK;
}

store_code store_coll_bump(store *s, int64_t coll_id, store_err *err) {
    db_val a[] = {db_int(coll_id)};
    return store_exec(s, "UPDATE collections SET version = version + 1 WHERE id = ?", a, 1, NULL,
                      err);
}

/* ---- models and vectors ---------------------------------------------------------------- */

typedef struct {
    store *s;
    int64_t id;
    bool found;
} model_read;

static int read_model(void *arg, db_row *r) {
    model_read *m = arg;
    m->found = true;
    m->id = m->s->d->ops->col_int(r, 0);
    return 1;
}

store_code store_model_find(store *s, const store_model *m, bool create, int64_t *id,
                            store_err *err) {
    model_read r = {s, 0, false};
    db_val a[] = {db_text(m->fingerprint, strlen(m->fingerprint))};
    const char *find = "SELECT id FROM models WHERE fingerprint = ?";
    store_code rc = s->d->ops->query(s->d, find, a, 1, read_model, &r, NULL, err);
    if (rc == STORE_OK && !r.found && create) {
        const char *name = m->name ? m->name : "";
        db_val ins[] = {a[0], db_int(m->n_mem), db_int(m->n_embd), db_text(name, strlen(name)),
                        db_int(store_now_ms())};
        rc = store_exec(s,
                        "INSERT INTO models (fingerprint, n_mem, n_embd, name, created_ms) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (fingerprint) DO NOTHING",
                        ins, 5, NULL, err);
        if (rc == STORE_OK) rc = s->d->ops->query(s->d, find, a, 1, read_model, &r, NULL, err);
    }
    *id = rc == STORE_OK && r.found ? r.id : 0;
    return rc;
}

void *store_encode_vectors(const float *v, size_t n, store_dtype dtype, size_t *bytes) {
    *bytes = n * (dtype == STORE_F16 ? 2 : 4);
    void *out = malloc(*bytes + 1);
    if (!out) return NULL;
    if (dtype == STORE_F32) {
        memcpy(out, v, n * 4);
    } else {
        uint16_t *h = out;
        for (size_t i = 0; i < n; i++) h[i] = clara_f32_to_f16(v[i]);
    }
    return out;
}

bool store_decode_vectors(const void *p, size_t bytes, int dtype, float *out, size_t n) {
    if (dtype == STORE_F32 && bytes == n * 4) {
        memcpy(out, p, bytes);
        return true;
    }
    if (dtype == STORE_F16 && bytes == n * 2) {
        const uint16_t *h = p;
        for (size_t i = 0; i < n; i++) out[i] = clara_f16_to_f32(h[i]);
        return true;
    }
    return false;
}

/* Writes one chunk's vectors and code. The code is taken of the vectors as stored (f16 rounding
 * included), so that it describes exactly what ranking reads back. */
store_code store_write_vectors(store *s, int64_t chunk_id, int64_t model_id, const float *v,
                               size_t per, store_dtype dtype, store_err *err) {
    size_t bytes, words = store_code_words(per);
    void *data = store_encode_vectors(v, per, dtype, &bytes);
    float *back = malloc(per * sizeof(float));
    uint64_t *code = malloc(words * sizeof *code);
    if (!data || !back || !code) {
        free(data);
        free(back);
        free(code);
        return store_fail(err, STORE_NOMEM, "out of memory");
    }
    store_decode_vectors(data, bytes, dtype, back, per);
    store_sign_code(back, per, code);
    free(back);
    db_val a[] = {db_int(chunk_id), db_int(model_id), db_int(dtype), db_blob(data, bytes),
                  db_blob(code, words * sizeof *code)};
    store_code rc = store_exec(s,
                               "INSERT INTO vectors (chunk_id, model_id, dtype, data, code) "
                               "VALUES (?, ?, ?, ?, ?) ON CONFLICT (chunk_id, model_id) DO "
                               "UPDATE SET dtype = excluded.dtype, data = excluded.data, "
                               "code = excluded.code",
                               a, 5, NULL, err);
    free(data);
    free(code);
    return rc;
}

/* ---- writes -------------------------------------------------------------------------------- */

static void new_id(char out[33]) {
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        struct timespec ts; /* no entropy source: time and address, still unique enough */
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30 ^ (uintptr_t)out;
        for (int i = 0; i < 16; i++) b[i] = (unsigned char)(x >> (i % 8 * 8)) ^ (unsigned char)i;
    }
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* Whether every number in v is finite (a cJSON number over ~1.8e308 prints as null). */
static bool numbers_finite(const cJSON *v) {
    if (cJSON_IsNumber(v) && !isfinite(v->valuedouble)) return false;
    for (const cJSON *c = v->child; c; c = c->next)
        if (!numbers_finite(c)) return false;
    return true;
}

bool store_json_plain(const cJSON *v, char *why, size_t cap) {
    if (!numbers_finite(v)) {
        snprintf(why, cap,
                 "holds a number out of range (over about 1.8e308: it would read as null)");
        return false;
    }
    const char *dup = NULL;
    switch (json_duplicate_key(v, &dup)) {
    case JSON_KEYS_OK:
        return true;
    case JSON_KEYS_DUPLICATE:
        snprintf(why, cap, "has the key '%.64s' twice in one object", dup);
        return false;
    default:
        snprintf(why, cap, "is too large (out of memory)");
        return false;
    }
}

static store_code check_metadata(const char *meta, store_err *err) {
    if (!meta) return STORE_OK;
    size_t len = strlen(meta);
    if (len > STORE_METADATA_MAX)
        return store_fail(err, STORE_TOO_LARGE, "metadata is %zu bytes; at most %d are allowed",
                          len, STORE_METADATA_MAX);
    cJSON *j = cJSON_ParseWithLength(meta, len);
    bool ok = j && cJSON_IsObject(j);
    char why[128];
    bool plain = !ok || store_json_plain(j, why, sizeof why);
    cJSON_Delete(j);
    if (!ok) return store_fail(err, STORE_INVALID, "metadata must be a JSON object");
    return plain ? STORE_OK : store_fail(err, STORE_INVALID, "metadata %s", why);
}

store_code store_check_memory(const store_memory_in *m, store_err *err) {
    if (m->id && *m->id) {
        store_code rc = store_check_name("memory id", m->id, strlen(m->id), err);
        if (rc != STORE_OK) return rc;
    }
    if (m->n_chunks == 0)
        return store_fail(err, STORE_INVALID, "the memory's text is empty (or only whitespace)");
    if (m->n_chunks > STORE_MAX_CHUNKS)
        return store_fail(err, STORE_TOO_LARGE,
                          "the memory's text makes %zu chunks; at most %d are allowed", m->n_chunks,
                          STORE_MAX_CHUNKS);
    for (size_t i = 0; i < m->n_chunks; i++)
        if (m->chunks[i].start > m->text_len || m->chunks[i].len > m->text_len - m->chunks[i].start)
            return store_fail(err, STORE_INVALID, "chunk %zu lies outside the text", i);
    return check_metadata(m->metadata, err);
}

/* Inserts a memory's chunks and their vectors (inside the caller's transaction). */
static store_code insert_chunks(store *s, int64_t mem_id, int64_t model_id, size_t per,
                                store_dtype dtype, const store_memory_in *m, store_err *err) {
    store_code rc = STORE_OK;
    for (size_t c = 0; rc == STORE_OK && c < m->n_chunks; c++) {
        const clara_chunk *ch = &m->chunks[c];
        db_val b[] = {
            db_int(mem_id),           db_int((int64_t)c),   db_int((int64_t)ch->start),
            db_int((int64_t)ch->len), db_int(ch->n_tokens), db_text(m->text + ch->start, ch->len)};
        store_q1 q;
        rc = store_q_int(s,
                         "INSERT INTO chunks (memory_id, seq, byte_start, byte_len, n_tokens, "
                         "text) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                         b, 6, &q, err);
        if (rc == STORE_OK && m->vectors)
            rc = store_write_vectors(s, q.i, model_id, m->vectors + c * per, per, dtype, err);
    }
    return rc;
}

static int cmp_id_at(const void *a, const void *b) {
    const char *const *x = a, *const *y = b;
    int c = strcmp(x[0], y[0]);
    return c ? c : (x[1] > y[1]) - (x[1] < y[1]); /* x[1]: the memory's index, as a pointer */
}

store_code store_check_unique_ids(const store_memory_in *mems, size_t n, store_err *err) {
    /* (id, index) pairs sorted by id, then index: a repeated id lies next to its first use */
    const char *(*v)[2] = malloc((n ? n : 1) * sizeof *v);
    if (!v) return store_fail(err, STORE_NOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (mems[i].id && *mems[i].id) {
            v[k][0] = mems[i].id;
            v[k][1] = (const char *)(uintptr_t)i;
            k++;
        }
    qsort(v, k, sizeof *v, cmp_id_at);
    store_code rc = STORE_OK;
    for (size_t i = 1; i < k && rc == STORE_OK; i++)
        if (strcmp(v[i - 1][0], v[i][0]) == 0)
            rc = store_fail(err, STORE_CONFLICT,
                            "memories %zu and %zu of the request both have id '%s'",
                            (size_t)(uintptr_t)v[i - 1][1], (size_t)(uintptr_t)v[i][1], v[i][0]);
    free(v);
    return rc;
}

/* Inserts one memory's row, chunks and vectors (inside the caller's transaction). */
static store_code insert_memory(store *s, int64_t coll_id, int64_t model_id, size_t per,
                                store_dtype dtype, const store_memory_in *m, const char *id,
                                const char *coll_name, store_err *err) {
    int64_t now = store_now_ms();
    int64_t created = m->created_ms ? m->created_ms : now;
    int64_t updated = m->updated_ms ? m->updated_ms : created;
    db_val a[] = {db_int(coll_id),
                  db_text(id, strlen(id)),
                  db_text(m->text, m->text_len),
                  m->metadata ? db_text(m->metadata, strlen(m->metadata)) : db_null(),
                  db_int(created),
                  db_int(updated),
                  db_int((int64_t)m->n_chunks)};
    store_q1 q;
    store_code rc = store_q_int(s,
                                "INSERT INTO memories (collection_id, ext_id, text, metadata, "
                                "created_ms, updated_ms, n_chunks) VALUES (?, ?, ?, ?, ?, ?, ?) "
                                "RETURNING id",
                                a, 7, &q, err);
    if (rc == STORE_CONFLICT)
        return store_fail(err, STORE_CONFLICT, "a memory with id '%s' exists in collection '%s'",
                          id, coll_name);
    return rc == STORE_OK ? insert_chunks(s, q.i, model_id, per, dtype, m, err) : rc;
}

store_code store_txn_end(store *s, store_code rc, store_err *err) {
    if (rc == STORE_OK) return s->d->ops->commit(s->d, err);
    s->d->ops->rollback(s->d);
    return rc;
}

store_code store_add(store *s, const char *collection, bool create_collection, const store_model *m,
                     store_dtype dtype, const store_memory_in *mems, size_t n,
                     char (*ids_out)[STORE_NAME_MAX + 1], store_err *err) {
    for (size_t i = 0; i < n; i++) {
        store_code rc = store_check_memory(&mems[i], err);
        if (rc != STORE_OK) return rc;
    }
    store_code urc = store_check_unique_ids(mems, n, err);
    if (urc != STORE_OK) return urc;
    size_t per = m ? (size_t)m->n_mem * m->n_embd : 0;
    bool vectors = false;
    for (size_t i = 0; i < n; i++) vectors |= mems[i].vectors != NULL;
    pthread_mutex_lock(&s->mu);
    store_code rc = s->d->ops->begin(s->d, true, err);
    if (rc != STORE_OK) {
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    int64_t coll_id = 0, model_id = 0;
    rc = store_coll_find(s, collection, create_collection, &coll_id, NULL, err);
    if (rc == STORE_OK && vectors) rc = store_model_find(s, m, true, &model_id, err);
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        char gen[33];
        const char *id = mems[i].id && *mems[i].id ? mems[i].id : (new_id(gen), gen);
        rc = insert_memory(s, coll_id, model_id, per, dtype, &mems[i], id, collection, err);
        if (rc == STORE_OK && ids_out) snprintf(ids_out[i], STORE_NAME_MAX + 1, "%s", id);
    }
    if (rc == STORE_OK) rc = store_coll_bump(s, coll_id, err);
    rc = store_txn_end(s, rc, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

store_code store_mem_find(store *s, int64_t coll_id, const char *coll, const char *id,
                          int64_t *mem_id, store_err *err) {
    store_code rc = store_check_name("memory id", id, strlen(id), err);
    if (rc != STORE_OK) return rc;
    db_val a[] = {db_int(coll_id), db_text(id, strlen(id))};
    store_q1 q;
    rc = store_q_int(s, "SELECT id FROM memories WHERE collection_id = ? AND ext_id = ?", a, 2, &q,
                     err);
    if (rc == STORE_OK && !q.found)
        rc = store_fail(err, STORE_NOT_FOUND, "no memory '%s' in collection '%s'", id, coll);
    *mem_id = q.i;
    return rc;
}

/* Deletes a memory's vectors and chunks (the FTS index follows by trigger / generated column). */
static store_code delete_chunks(store *s, int64_t mem_id, store_err *err) {
    db_val a[] = {db_int(mem_id)};
    store_code rc = store_exec(
        s, "DELETE FROM vectors WHERE chunk_id IN (SELECT id FROM chunks WHERE memory_id = ?)", a,
        1, NULL, err);
    if (rc == STORE_OK)
        rc = store_exec(s, "DELETE FROM chunks WHERE memory_id = ?", a, 1, NULL, err);
    return rc;
}

store_code store_replace(store *s, const char *collection, const store_model *m, store_dtype dtype,
                         const store_memory_in *mem, bool keep_metadata, store_err *err) {
    store_code rc = store_check_memory(mem, err);
    if (rc != STORE_OK) return rc;
    if (!mem->id || !*mem->id) return store_fail(err, STORE_INVALID, "which memory? (no id)");
    size_t per = m ? (size_t)m->n_mem * m->n_embd : 0;
    pthread_mutex_lock(&s->mu);
    rc = s->d->ops->begin(s->d, true, err);
    if (rc != STORE_OK) {
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    int64_t coll_id = 0, mem_id = 0, model_id = 0;
    rc = store_coll_find(s, collection, false, &coll_id, NULL, err);
    if (rc == STORE_OK) rc = store_mem_find(s, coll_id, collection, mem->id, &mem_id, err);
    if (rc == STORE_OK && mem->vectors) rc = store_model_find(s, m, true, &model_id, err);
    if (rc == STORE_OK) rc = delete_chunks(s, mem_id, err);
    if (rc == STORE_OK) {
        bool keep = keep_metadata && !mem->metadata;
        db_val a[] = {db_text(mem->text, mem->text_len), db_int(store_now_ms()),
                      db_int((int64_t)mem->n_chunks), db_int(mem_id),
                      mem->metadata ? db_text(mem->metadata, strlen(mem->metadata)) : db_null()};
        rc = store_exec(s,
                        keep ? "UPDATE memories SET text = ?, updated_ms = ?, n_chunks = ? "
                               "WHERE id = ?"
                             : "UPDATE memories SET text = ?, updated_ms = ?, n_chunks = ?, "
                               "metadata = ? WHERE id = ?",
                        keep ? a : (db_val[]){a[0], a[1], a[2], a[4], a[3]}, keep ? 4 : 5, NULL,
                        err);
    }
    if (rc == STORE_OK) rc = insert_chunks(s, mem_id, model_id, per, dtype, mem, err);
    if (rc == STORE_OK) rc = store_coll_bump(s, coll_id, err);
    rc = store_txn_end(s, rc, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

store_code store_delete_memory(store *s, const char *collection, const char *id, store_err *err) {
    pthread_mutex_lock(&s->mu);
    store_code rc = s->d->ops->begin(s->d, true, err);
    int64_t coll_id = 0, mem_id = 0;
    if (rc == STORE_OK) {
        rc = store_coll_find(s, collection, false, &coll_id, NULL, err);
        if (rc == STORE_OK) rc = store_mem_find(s, coll_id, collection, id, &mem_id, err);
        if (rc == STORE_OK) rc = delete_chunks(s, mem_id, err);
        db_val a[] = {db_int(mem_id)};
        if (rc == STORE_OK)
            rc = store_exec(s, "DELETE FROM memories WHERE id = ?", a, 1, NULL, err);
        if (rc == STORE_OK) rc = store_coll_bump(s, coll_id, err);
        rc = store_txn_end(s, rc, err);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

store_code store_delete_collection(store *s, const char *collection, int64_t *n_deleted,
                                   store_err *err) {
    pthread_mutex_lock(&s->mu);
    store_code rc = s->d->ops->begin(s->d, true, err);
    int64_t coll_id = 0, n = 0;
    if (rc == STORE_OK) {
        rc = store_coll_find(s, collection, false, &coll_id, NULL, err);
        db_val a[] = {db_int(coll_id)};
        if (rc == STORE_OK)
            rc = store_exec(s,
                            "DELETE FROM vectors WHERE chunk_id IN (SELECT c.id FROM chunks c "
                            "JOIN memories m ON m.id = c.memory_id WHERE m.collection_id = ?)",
                            a, 1, NULL, err);
        if (rc == STORE_OK)
            rc = store_exec(s,
                            "DELETE FROM chunks WHERE memory_id IN (SELECT id FROM memories "
                            "WHERE collection_id = ?)",
                            a, 1, NULL, err);
        if (rc == STORE_OK)
            rc = store_exec(s, "DELETE FROM memories WHERE collection_id = ?", a, 1, &n, err);
        if (rc == STORE_OK)
            rc = store_exec(s, "DELETE FROM collections WHERE id = ?", a, 1, NULL, err);
        rc = store_txn_end(s, rc, err);
    }
    pthread_mutex_unlock(&s->mu);
    if (n_deleted) *n_deleted = n;
    return rc;
}
