/* select.c - store_select: which chunks of a collection answer a query (store.h), through the
 * collection index of cache.h. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/store_internal.h"

/* Cosine mode scores at least this many candidates exactly (all of a smaller collection) and
 * 16 per requested chunk: a code distance that puts a true top-k chunk below the 256th place is
 * what it takes to miss one (bench/store.sh measures how often that happens). */
#define EXACT_MIN      256
#define EXACT_PER_TOPK 16

static double mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- loading a collection's index --------------------------------------------------------- */

typedef struct {
    store *s;
    store_index *ix;
    size_t cap, mcap;
    bool nomem;
    size_t meta_bytes; /* what the parsed metadata occupies */
} index_load;

/* The index's chunk arrays resized to cap entries; false (nothing lost) when memory runs out. */
static bool resize_chunks(index_load *l, size_t cap) {
    store_index *ix = l->ix;
    int64_t *c = realloc(ix->chunk_ids, cap * sizeof *c);
    if (c) ix->chunk_ids = c;
    int64_t *m = realloc(ix->mem_rowids, cap * sizeof *m);
    if (m) ix->mem_rowids = m;
    uint64_t *k = realloc(ix->codes, cap * ix->words * sizeof *k);
    if (k) ix->codes = k;
    bool *h = realloc(ix->has_vectors, cap * sizeof *h);
    if (h) ix->has_vectors = h;
    if (!c || !m || !k || !h) return false;
    l->cap = cap;
    return true;
}

static int read_chunk(void *arg, db_row *r) {
    index_load *l = arg;
    store_index *ix = l->ix;
    const db_ops *o = l->s->d->ops;
    if (ix->n == l->cap && !resize_chunks(l, l->cap ? l->cap * 2 : 256)) return l->nomem = true;
    size_t i = ix->n++, len = 0;
    ix->chunk_ids[i] = o->col_int(r, 0);
    ix->mem_rowids[i] = o->col_int(r, 1);
    const void *code = o->col_null(r, 2) ? NULL : o->col_blob(r, 2, &len);
    size_t bytes = ix->words * sizeof(uint64_t);
    ix->has_vectors[i] = code && len == bytes;
    if (ix->has_vectors[i])
        memcpy(ix->codes + i * ix->words, code, bytes);
    else
        memset(ix->codes + i * ix->words, 0, bytes);
    return 0;
}

/* The heap a parsed JSON value occupies: a node, its key and string, each allocation with
 * malloc's overhead. Metadata of 64 KiB can parse into ten times that (a node per value), so the
 * index accounts it: a cache of many such indexes is otherwise bounded by nothing. */
static size_t json_bytes(const cJSON *j) {
    size_t b = 0;
    for (; j; j = j->next) {
        b += sizeof *j + 16;
        if (j->string) b += strlen(j->string) + 1 + 16;
        if (j->valuestring) b += strlen(j->valuestring) + 1 + 16;
        b += json_bytes(j->child);
    }
    return b;
}

static int read_meta(void *arg, db_row *r) {
    index_load *l = arg;
    store_index *ix = l->ix;
    const db_ops *o = l->s->d->ops;
    if (ix->n_mems == l->mcap) {
        size_t cap = l->mcap ? l->mcap * 2 : 64;
        int64_t *id = realloc(ix->meta_rowids, cap * sizeof *id);
        if (id) ix->meta_rowids = id;
        cJSON **j = realloc(ix->metas, cap * sizeof *j);
        if (j) ix->metas = j;
        if (!id || !j) return l->nomem = true;
        l->mcap = cap;
    }
    size_t len = 0;
    const char *t = o->col_text(r, 1, &len);
    cJSON *j = cJSON_ParseWithLength(t, len);
    if (!j) return 0; /* unreadable metadata matches no filter */
    l->meta_bytes += json_bytes(j);
    ix->meta_rowids[ix->n_mems] = o->col_int(r, 0);
    ix->metas[ix->n_mems++] = j;
    return 0;
}

/* Reads the index of collection coll_id with the codes of model_id (under the caller's lock). */
static store_code load_index(store *s, int64_t coll_id, int64_t version, int64_t model_id,
                             size_t words, store_index **out, store_err *err) {
    index_load l = {s, calloc(1, sizeof(store_index)), 0, 0, false, 0};
    if (!l.ix) return store_fail(err, STORE_NOMEM, "out of memory");
    l.ix->coll_id = coll_id;
    l.ix->version = version;
    l.ix->model_id = model_id;
    l.ix->words = words;
    db_val a[] = {db_int(model_id), db_int(coll_id)};
    store_code rc = s->d->ops->query(s->d,
                                     "SELECT c.id, c.memory_id, v.code FROM chunks c JOIN "
                                     "memories m ON m.id = c.memory_id LEFT JOIN vectors v ON "
                                     "v.chunk_id = c.id AND v.model_id = ? WHERE "
                                     "m.collection_id = ? ORDER BY c.id",
                                     a, 2, read_chunk, &l, NULL, err);
    if (rc == STORE_OK && !l.nomem)
        rc = s->d->ops->query(s->d,
                              "SELECT id, metadata FROM memories WHERE collection_id = ? AND "
                              "metadata IS NOT NULL ORDER BY id",
                              &a[1], 1, read_meta, &l, NULL, err);
    if (rc == STORE_OK && l.nomem) rc = store_fail(err, STORE_NOMEM, "out of memory");
    if (rc != STORE_OK) {
        store_index_free(l.ix);
        return rc;
    }
    resize_chunks(&l, l.ix->n ? l.ix->n : 1); /* give back the doubling's slack (hundreds of MB) */
    l.ix->bytes = l.ix->n * (2 * sizeof(int64_t) + words * sizeof(uint64_t) + 1) +
                  l.ix->n_mems * (sizeof(int64_t) + sizeof(cJSON *)) + l.meta_bytes;
    *out = l.ix;
    return STORE_OK;
}

/* ---- filters -------------------------------------------------------------------------------- */

static const cJSON *meta_of(const store_index *ix, int64_t rowid) {
    size_t lo = 0, hi = ix->n_mems;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ix->meta_rowids[mid] < rowid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ix->n_mems && ix->meta_rowids[lo] == rowid ? ix->metas[lo] : NULL;
}

static bool matches(const cJSON *filter, const cJSON *meta) {
    if (!filter) return true;
    for (const cJSON *f = filter->child; f; f = f->next) {
        const cJSON *v = meta ? cJSON_GetObjectItemCaseSensitive(meta, f->string) : NULL;
        if (!v || !cJSON_Compare(v, f, true)) return false;
    }
    return true;
}

/* Positions in the index of the chunks whose memory matches the filter. */
static size_t *allowed_chunks(const store_index *ix, const cJSON *filter, size_t *n) {
    size_t *pos = malloc((ix->n + 1) * sizeof *pos), k = 0;
    if (!pos) return NULL;
    for (size_t i = 0; i < ix->n; i++)
        if (matches(filter, filter ? meta_of(ix, ix->mem_rowids[i]) : NULL)) pos[k++] = i;
    *n = k;
    return pos;
}

/* ---- vectors of chosen chunks ----------------------------------------------------------- */

typedef struct {
    float *out;
    size_t per;
    bool ok;
    const db_ops *o;
} vec_read;

static int read_vec(void *arg, db_row *r) {
    vec_read *v = arg;
    size_t len = 0;
    const void *p = v->o->col_blob(r, 1, &len);
    v->ok = store_decode_vectors(p, len, (int)v->o->col_int(r, 0), v->out, v->per);
    return 1;
}

/* Vectors of one chunk into out[per]: from the cache, else the database (then cached). */
static store_code chunk_vectors(store *s, int64_t chunk_id, int64_t model_id, size_t per,
                                float *out, store_err *err) {
    if (store_cache_get_vectors(s->cache, chunk_id, model_id, out, per)) return STORE_OK;
    vec_read v = {out, per, false, s->d->ops};
    db_val a[] = {db_int(chunk_id), db_int(model_id)};
    pthread_mutex_lock(&s->mu);
    store_code rc = s->d->ops->query(
        s->d, "SELECT dtype, data FROM vectors WHERE chunk_id = ? AND model_id = ?", a, 2, read_vec,
        &v, NULL, err);
    pthread_mutex_unlock(&s->mu);
    if (rc != STORE_OK) return rc;
    if (!v.ok)
        return store_fail(err, STORE_CHANGED,
                          "chunk %lld has no vectors under this model (deleted or replaced "
                          "meanwhile)",
                          (long long)chunk_id);
    store_cache_put_vectors(s->cache, chunk_id, model_id, out, per);
    return STORE_OK;
}

/* ---- the two rankings -------------------------------------------------------------------- */

typedef struct {
    size_t cand;
    float score;
} cand_score;

static int by_cand(const void *a, const void *b) {
    size_t x = ((const cand_score *)a)->cand, y = ((const cand_score *)b)->cand;
    return x < y ? -1 : x > y;
}

/* Sorts the candidates (and their scores) by position. */
static void sort_by_position(size_t *cand, float *sc, size_t n) {
    cand_score *p = malloc((n + 1) * sizeof *p);
    if (!p) { /* insertion sort in place: slow for many candidates, still right */
        for (size_t i = 1; i < n; i++)
            for (size_t j = i; j > 0 && cand[j - 1] > cand[j]; j--) {
                size_t t = cand[j];
                float f = sc[j];
                cand[j] = cand[j - 1], sc[j] = sc[j - 1];
                cand[j - 1] = t, sc[j - 1] = f;
            }
        return;
    }
    for (size_t i = 0; i < n; i++) p[i] = (cand_score){cand[i], sc[i]};
    qsort(p, n, sizeof *p, by_cand);
    for (size_t i = 0; i < n; i++) cand[i] = p[i].cand, sc[i] = p[i].score;
    free(p);
}

/* The C allowed chunks whose codes are nearest the query's (ties: the older first) into cand[];
 * sc[] is scratch. */
static store_code nearest_codes(const store_query *q, const store_index *ix, const size_t *allowed,
                                size_t n_allowed, size_t C, size_t *cand, float *sc,
                                store_err *err) {
    size_t per = (size_t)q->m->n_mem * q->m->n_embd, W = ix->words;
    uint64_t *qc = malloc(W * sizeof *qc);
    uint32_t *d = malloc(n_allowed * sizeof *d);
    uint64_t *packed = NULL;
    bool all = n_allowed == ix->n; /* no filter: the codes are contiguous already */
    if (!all) packed = malloc(n_allowed * W * sizeof *packed);
    if (!qc || !d || (!all && !packed)) {
        free(qc);
        free(d);
        free(packed);
        return store_fail(err, STORE_NOMEM, "out of memory");
    }
    store_sign_code(q->query_vectors, per, qc);
    for (size_t i = 0; !all && i < n_allowed; i++)
        memcpy(packed + i * W, ix->codes + allowed[i] * W, W * sizeof *packed);
    store_hamming(qc, all ? ix->codes : packed, n_allowed, W, d);
    for (size_t i = 0; i < n_allowed; i++) sc[i] = -(float)d[i]; /* exact: d < 2^24 */
    store_top_k(sc, n_allowed, C, cand);
    free(qc);
    free(d);
    free(packed);
    return STORE_OK;
}

/* Cosine: exact over all allowed chunks when few, else exact over the candidates nearest by code.
 * Fills pick[k] (index positions) and score[k]; *k_out may be below k for a small collection. */
static store_code rank_cosine(store *s, const store_query *q, const store_index *ix,
                              const size_t *allowed, size_t n_allowed, size_t *pick, float *score,
                              float *vecs, size_t *k_out, store_selection *out, store_err *err) {
    size_t per = (size_t)q->m->n_mem * q->m->n_embd;
    size_t k = q->top_k < n_allowed ? q->top_k : n_allowed;
    size_t C = EXACT_MIN > EXACT_PER_TOPK * k ? EXACT_MIN : EXACT_PER_TOPK * k;
    size_t *cand = malloc((n_allowed + 1) * sizeof *cand), nc = n_allowed;
    float *sc = malloc((n_allowed + 1) * sizeof *sc);
    float *v = malloc(per * sizeof *v);
    store_code rc = cand && sc && v ? STORE_OK : store_fail(err, STORE_NOMEM, "out of memory");
    if (rc == STORE_OK && n_allowed > C) /* pre-select by code */
        rc = nearest_codes(q, ix, allowed, n_allowed, C, cand, sc, err);
    if (rc == STORE_OK && n_allowed > C) {
        nc = C;
        out->exact = false;
    } else {
        for (size_t i = 0; i < n_allowed; i++) cand[i] = i;
        out->exact = true;
    }
    for (size_t i = 0; rc == STORE_OK && i < nc; i++) { /* exact scores, in index order */
        size_t pos = allowed[cand[i]];
        rc = chunk_vectors(s, ix->chunk_ids[pos], ix->model_id, per, v, err);
        if (rc == STORE_OK) sc[i] = store_cosine(q->query_vectors, v, per);
    }
    if (rc == STORE_OK && !out->exact) /* back into added order: exact ties go to the older */
        sort_by_position(cand, sc, nc);
    size_t *best = rc == STORE_OK ? malloc((k + 1) * sizeof *best) : NULL;
    if (rc == STORE_OK && !best) rc = store_fail(err, STORE_NOMEM, "out of memory");
    if (rc == STORE_OK) store_top_k(sc, nc, k, best);
    for (size_t i = 0; rc == STORE_OK && i < k; i++) {
        pick[i] = allowed[cand[best[i]]];
        score[i] = sc[best[i]];
        rc = chunk_vectors(s, ix->chunk_ids[pick[i]], ix->model_id, per, vecs + i * per, err);
    }
    out->candidates = nc;
    *k_out = rc == STORE_OK ? k : 0;
    free(best);
    free(cand);
    free(sc);
    free(v);
    return rc;
}

/* Query words for full-text search: runs of letters and digits (any non-ASCII byte counts as a
 * letter), lower-cased, at most 32 distinct. Joined as FTS5 `"a" OR "b"` or tsquery `a | b`. */
static char *fts_query(const char *t, size_t n, db_dialect dialect) {
    char *out = malloc(32 * 72 + 1);
    if (!out) return NULL;
    size_t o = 0;
    int words = 0;
    for (size_t i = 0; i < n && words < 32;) {
        while (i < n && !(isalnum((unsigned char)t[i]) || (unsigned char)t[i] >= 0x80)) i++;
        size_t b = i;
        while (i < n && (isalnum((unsigned char)t[i]) || (unsigned char)t[i] >= 0x80)) i++;
        size_t len = i - b > 64 ? 64 : i - b;
        /* a cut word ends on a whole UTF-8 character (PostgreSQL refuses a split one) */
        while (len < i - b && len > 0 && ((unsigned char)t[b + len] & 0xc0) == 0x80) len--;
        if (len == 0) continue;
        char w[65];
        for (size_t j = 0; j < len; j++) w[j] = (char)tolower((unsigned char)t[b + j]);
        w[len] = 0;
        const char *sep = words ? (dialect == DB_DIALECT_SQLITE ? " OR " : " | ") : "";
        o += (size_t)sprintf(out + o, dialect == DB_DIALECT_SQLITE ? "%s\"%s\"" : "%s%s", sep, w);
        words++;
    }
    out[o] = 0;
    return out;
}

typedef struct {
    const db_ops *o;
    int64_t *ids;
    float *scores;
    size_t n, cap;
} fts_rows;

static int read_fts(void *arg, db_row *r) {
    fts_rows *f = arg;
    if (f->n == f->cap) return 1;
    f->ids[f->n] = f->o->col_int(r, 0);
    f->scores[f->n++] = (float)f->o->col_real(r, 1);
    return 0;
}

static size_t position_of(const store_index *ix, int64_t chunk_id) {
    size_t lo = 0, hi = ix->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ix->chunk_ids[mid] < chunk_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ix->n && ix->chunk_ids[lo] == chunk_id ? lo : SIZE_MAX;
}

/* Full text: matches by relevance, then the most recent allowed chunks to fill top_k. */
static store_code rank_fulltext(store *s, const store_query *q, const store_index *ix,
                                const bool *is_allowed, size_t n_allowed, size_t *pick,
                                float *score, size_t *k_out, store_err *err) {
    size_t k = q->top_k < n_allowed ? q->top_k : n_allowed, got = 0;
    char *words = fts_query(q->query_text, q->query_len, s->d->dialect);
    fts_rows f = {s->d->ops, NULL, NULL, 0, 4 * k + 64};
    f.ids = malloc(f.cap * sizeof *f.ids);
    f.scores = malloc(f.cap * sizeof *f.scores);
    store_code rc =
        words && f.ids && f.scores ? STORE_OK : store_fail(err, STORE_NOMEM, "out of memory");
    if (rc == STORE_OK && *words) {
        bool lite = s->d->dialect == DB_DIALECT_SQLITE;
        db_val lw = db_text(words, strlen(words)), lc = db_int(ix->coll_id),
               ll = db_int((int64_t)f.cap);
        db_val a_lite[] = {lw, lc, ll}, a_pg[] = {lw, lc, lw, ll};
        pthread_mutex_lock(&s->mu);
        rc = s->d->ops->query(
            s->d,
            lite ? "SELECT c.id, -bm25(chunks_fts) FROM chunks_fts JOIN chunks c ON c.id = "
                   "chunks_fts.rowid JOIN memories m ON m.id = c.memory_id WHERE chunks_fts "
                   "MATCH ? AND m.collection_id = ? ORDER BY bm25(chunks_fts), c.id LIMIT ?"
                 : "SELECT c.id, ts_rank(c.tsv, to_tsquery('simple', ?))::float8 AS r FROM "
                   "chunks c JOIN memories m ON m.id = c.memory_id WHERE m.collection_id = ? AND "
                   "c.tsv @@ to_tsquery('simple', ?) ORDER BY r DESC, c.id LIMIT ?",
            lite ? a_lite : a_pg, lite ? 3 : 4, read_fts, &f, NULL, err);
        pthread_mutex_unlock(&s->mu);
    }
    bool *taken = rc == STORE_OK ? calloc(ix->n + 1, 1) : NULL;
    if (rc == STORE_OK && !taken) rc = store_fail(err, STORE_NOMEM, "out of memory");
    for (size_t i = 0; rc == STORE_OK && i < f.n && got < k; i++) {
        size_t pos = position_of(ix, f.ids[i]);
        if (pos == SIZE_MAX || !is_allowed[pos] || taken[pos]) continue;
        taken[pos] = true;
        pick[got] = pos;
        score[got++] = f.scores[i];
    }
    for (size_t i = ix->n; rc == STORE_OK && i-- > 0 && got < k;) /* fill: most recent */
        if (is_allowed[i] && !taken[i]) {
            taken[i] = true;
            pick[got] = i;
            score[got++] = 0;
        }
    *k_out = got;
    free(taken);
    free(words);
    free(f.ids);
    free(f.scores);
    return rc;
}

/* ---- the selection ---------------------------------------------------------------------- */

typedef struct {
    const db_ops *o;
    char *mem, *text;
    uint32_t seq;
} chunk_info;

static int read_info(void *arg, db_row *r) {
    chunk_info *c = arg;
    size_t n;
    const char *t = c->o->col_text(r, 0, &n);
    c->mem = strndup(t, n);
    t = c->o->col_text(r, 1, &n);
    c->text = strndup(t, n);
    c->seq = (uint32_t)c->o->col_int(r, 2);
    return 1;
}

void store_selection_free(store_selection *sel) {
    for (size_t i = 0; i < sel->n; i++) {
        if (sel->memory_ids) free(sel->memory_ids[i]);
        if (sel->texts) free(sel->texts[i]);
    }
    free(sel->memory_ids);
    free(sel->texts);
    free(sel->vectors);
    free(sel->scores);
    free(sel->chunk_ids);
    free(sel->chunk_seq);
    memset(sel, 0, sizeof *sel);
}

static store_code describe(store *s, const store_index *ix, const size_t *pick, size_t k,
                           store_selection *out, store_err *err) {
    out->chunk_ids = malloc((k + 1) * sizeof *out->chunk_ids);
    out->memory_ids = calloc(k + 1, sizeof *out->memory_ids);
    out->texts = calloc(k + 1, sizeof *out->texts);
    out->chunk_seq = malloc((k + 1) * sizeof *out->chunk_seq);
    out->n = k;
    if (!out->chunk_ids || !out->memory_ids || !out->texts || !out->chunk_seq)
        return store_fail(err, STORE_NOMEM, "out of memory");
    store_code rc = STORE_OK;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; rc == STORE_OK && i < k; i++) {
        chunk_info c = {s->d->ops, NULL, NULL, 0};
        out->chunk_ids[i] = ix->chunk_ids[pick[i]];
        db_val a[] = {db_int(out->chunk_ids[i])};
        rc = s->d->ops->query(s->d,
                              "SELECT m.ext_id, c.text, c.seq FROM chunks c JOIN memories m ON "
                              "m.id = c.memory_id WHERE c.id = ?",
                              a, 1, read_info, &c, NULL, err);
        out->memory_ids[i] = c.mem;
        out->texts[i] = c.text;
        out->chunk_seq[i] = c.seq;
        if (rc == STORE_OK && (!c.mem || !c.text))
            rc = store_fail(err, STORE_CHANGED, "a selected chunk was deleted meanwhile");
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* The collection's index, from the cache or the database. */
static store_code get_index(store *s, const store_query *q, store_index **ix, store_err *err) {
    int64_t coll_id = 0, version = 0, model_id = 0;
    pthread_mutex_lock(&s->mu);
    store_code rc = store_coll_find(s, q->collection, false, &coll_id, &version, err);
    if (rc == STORE_OK) rc = store_model_find(s, q->m, false, &model_id, err);
    *ix = rc == STORE_OK ? store_cache_get_index(s->cache, coll_id, version, model_id) : NULL;
    if (rc == STORE_OK && !*ix) {
        size_t words = store_code_words((size_t)q->m->n_mem * q->m->n_embd);
        rc = load_index(s, coll_id, version, model_id, words, ix, err);
        if (rc == STORE_OK) *ix = store_cache_put_index(s->cache, *ix);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

store_code store_select(store *s, const store_query *q, store_selection *out, store_err *err) {
    memset(out, 0, sizeof *out);
    double t0 = mono_ms();
    cJSON *filter = NULL;
    if (q->filter) {
        filter = cJSON_Parse(q->filter);
        if (!filter || !cJSON_IsObject(filter)) {
            cJSON_Delete(filter);
            return store_fail(err, STORE_INVALID, "the filter must be a JSON object");
        }
    }
    store_index *ix = NULL;
    store_code rc = get_index(s, q, &ix, err);
    size_t n_allowed = 0, k = 0, per = (size_t)q->m->n_mem * q->m->n_embd;
    size_t *allowed = rc == STORE_OK ? allowed_chunks(ix, filter, &n_allowed) : NULL;
    if (rc == STORE_OK && !allowed) rc = store_fail(err, STORE_NOMEM, "out of memory");
    size_t kept = 0;
    for (size_t i = 0; rc == STORE_OK && i < n_allowed; i++) {
        if (ix->has_vectors[allowed[i]])
            allowed[kept++] = allowed[i];
        else if (!q->after_catch_up)
            rc = store_fail(err, STORE_CHANGED,
                            "chunk %lld of collection '%s' has no vectors under this model yet",
                            (long long)ix->chunk_ids[allowed[i]], q->collection);
    }
    n_allowed = kept; /* after a catch-up, the chunks written since by another model are out */
    /* at most top_k chunks are picked (all allowed ones for "all"): room for their vectors only,
     * not for the whole collection's */
    size_t cap = q->top_k < n_allowed ? q->top_k : n_allowed;
    bool all = q->mode == STORE_SELECT_FULLTEXT && n_allowed <= q->all_if_at_most;
    if (all) cap = n_allowed;
    size_t *pick = malloc((cap + 1) * sizeof *pick);
    out->scores = malloc((cap + 1) * sizeof *out->scores);
    out->vectors = malloc((cap + 1) * per * sizeof *out->vectors);
    if (rc == STORE_OK && (!pick || !out->scores || !out->vectors))
        rc = store_fail(err, STORE_NOMEM, "out of memory");
    out->considered = n_allowed;
    if (rc == STORE_OK && all) {
        out->method = "all";
        for (k = 0; k < n_allowed; k++) {
            pick[k] = allowed[k];
            out->scores[k] = 0;
        }
    } else if (rc == STORE_OK && q->mode == STORE_SELECT_COSINE) {
        out->method = "cosine";
        rc = rank_cosine(s, q, ix, allowed, n_allowed, pick, out->scores, out->vectors, &k, out,
                         err);
    } else if (rc == STORE_OK) {
        out->method = "fulltext";
        bool *is_allowed = calloc(ix->n + 1, 1);
        if (!is_allowed) rc = store_fail(err, STORE_NOMEM, "out of memory");
        for (size_t i = 0; is_allowed && i < n_allowed; i++) is_allowed[allowed[i]] = true;
        if (rc == STORE_OK)
            rc = rank_fulltext(s, q, ix, is_allowed, n_allowed, pick, out->scores, &k, err);
        free(is_allowed);
    }
    if (rc == STORE_OK && q->mode != STORE_SELECT_COSINE)
        for (size_t i = 0; rc == STORE_OK && i < k; i++)
            rc = chunk_vectors(s, ix->chunk_ids[pick[i]], ix->model_id, per, out->vectors + i * per,
                               err);
    if (rc == STORE_OK) rc = describe(s, ix, pick, k, out, err);
    if (ix) store_index_release(s->cache, ix);
    free(allowed);
    free(pick);
    cJSON_Delete(filter);
    out->rank_ms = mono_ms() - t0;
    if (rc != STORE_OK) store_selection_free(out);
    return rc;
}
