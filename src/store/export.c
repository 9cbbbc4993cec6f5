/* export.c - a store as JSON lines (one memory each, with its chunks and the vectors of every
 * model that has them), for backups and for moving between SQLite and PostgreSQL:
 *
 *   {"collection": "c", "id": "m1", "text": "...", "metadata": {...} | null,
 *    "created_ms": 1700000000000, "updated_ms": ...,
 *    "chunks": [{"start": 0, "len": 812, "n_tokens": 190}, ...],
 *    "vectors": [{"fingerprint": "9f...", "model": "name", "n_mem": 16, "n_embd": 4096,
 *                 "dtype": "f16", "data": ["<base64 of chunk 0, little-endian>", ...]}]}
 *
 * Import writes a line back as it was exported (ids, times, vectors): nothing is recompressed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base64.h"
#include "store/store_internal.h"

typedef struct {
    store *s;
    cJSON *line; /* the memory being written */
    cJSON *chunks;
    int64_t mem_id;
    bool nomem;
} export_state;

static int add_chunk(void *arg, db_row *r) {
    export_state *e = arg;
    const db_ops *o = e->s->d->ops;
    cJSON *c = cJSON_CreateObject();
    if (!c) return e->nomem = true;
    cJSON_AddNumberToObject(c, "start", (double)o->col_int(r, 0));
    cJSON_AddNumberToObject(c, "len", (double)o->col_int(r, 1));
    cJSON_AddNumberToObject(c, "n_tokens", (double)o->col_int(r, 2));
    cJSON_AddItemToArray(e->chunks, c);
    return 0;
}

typedef struct {
    const db_ops *o;
    cJSON *models; /* fingerprint -> vectors object */
    bool nomem;
} vec_state;

static int add_vector(void *arg, db_row *r) {
    vec_state *v = arg;
    size_t n = 0, len = 0;
    const char *fp = v->o->col_text(r, 0, &n);
    cJSON *m = cJSON_GetObjectItemCaseSensitive(v->models, fp);
    if (!m) {
        m = cJSON_AddObjectToObject(v->models, fp);
        if (!m) return v->nomem = true;
        cJSON_AddStringToObject(m, "fingerprint", fp);
        cJSON_AddStringToObject(m, "model", v->o->col_text(r, 1, &n));
        cJSON_AddNumberToObject(m, "n_mem", (double)v->o->col_int(r, 2));
        cJSON_AddNumberToObject(m, "n_embd", (double)v->o->col_int(r, 3));
        cJSON_AddStringToObject(m, "dtype", v->o->col_int(r, 4) == STORE_F16 ? "f16" : "f32");
        cJSON_AddArrayToObject(m, "data");
    }
    const void *p = v->o->col_blob(r, 5, &len);
    char *b = clara_base64_encode(p, len);
    if (!b) return v->nomem = true;
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(m, "data"), cJSON_CreateString(b));
    free(b);
    return 0;
}

/* Chunks and vectors of one memory, into its line. */
static store_code complete_line(store *s, export_state *e, store_err *err) {
    db_val a[] = {db_int(e->mem_id)};
    e->chunks = cJSON_AddArrayToObject(e->line, "chunks");
    store_code rc = s->d->ops->query(
        s->d, "SELECT byte_start, byte_len, n_tokens FROM chunks WHERE memory_id = ? ORDER BY seq",
        a, 1, add_chunk, e, NULL, err);
    vec_state v = {s->d->ops, cJSON_CreateObject(), false};
    /* a model's vectors are exported only when every chunk has them (a reindex in progress
     * leaves some without: those are remade on import) */
    if (rc == STORE_OK && v.models)
        rc = s->d->ops->query(
            s->d,
            "SELECT md.fingerprint, md.name, md.n_mem, md.n_embd, v.dtype, v.data FROM chunks c "
            "JOIN vectors v ON v.chunk_id = c.id JOIN models md ON md.id = v.model_id WHERE "
            "c.memory_id = ? AND (SELECT count(*) FROM vectors v2 JOIN chunks c2 ON c2.id = "
            "v2.chunk_id WHERE c2.memory_id = c.memory_id AND v2.model_id = v.model_id) = "
            "(SELECT count(*) FROM chunks c3 WHERE c3.memory_id = c.memory_id) "
            "ORDER BY v.model_id, c.seq",
            a, 1, add_vector, &v, NULL, err);
    cJSON *arr = cJSON_AddArrayToObject(e->line, "vectors");
    while (v.models && v.models->child) {
        cJSON *m = cJSON_DetachItemViaPointer(v.models, v.models->child);
        cJSON_AddItemToArray(arr, m);
    }
    cJSON_Delete(v.models);
    if (rc == STORE_OK && (v.nomem || e->nomem || !arr))
        rc = store_fail(err, STORE_NOMEM, "out of memory");
    return rc;
}

typedef struct {
    const db_ops *o;
    int64_t *ids;
    size_t n, cap;
} id_rows;

static int read_id(void *arg, db_row *r) {
    id_rows *ir = arg;
    if (!store_grow((void **)&ir->ids, &ir->cap, ir->n, sizeof *ir->ids)) return 1;
    ir->ids[ir->n++] = ir->o->col_int(r, 0);
    return 0;
}

static int fill_memory(void *arg, db_row *r) {
    export_state *e = arg;
    const db_ops *o = e->s->d->ops;
    size_t n;
    cJSON_AddStringToObject(e->line, "collection", o->col_text(r, 0, &n));
    cJSON_AddStringToObject(e->line, "id", o->col_text(r, 1, &n));
    cJSON_AddStringToObject(e->line, "text", o->col_text(r, 2, &n));
    cJSON *meta = o->col_null(r, 3) ? NULL : cJSON_Parse(o->col_text(r, 3, &n));
    cJSON_AddItemToObject(e->line, "metadata", meta ? meta : cJSON_CreateNull());
    cJSON_AddNumberToObject(e->line, "created_ms", (double)o->col_int(r, 4));
    cJSON_AddNumberToObject(e->line, "updated_ms", (double)o->col_int(r, 5));
    return 1;
}

store_code store_export(store *s, const char *collection, int (*fn)(void *arg, const char *line),
                        void *arg, size_t *n_out, store_err *err) {
    id_rows ir = {s->d->ops, NULL, 0, 0};
    int64_t coll_id = 0;
    *n_out = 0;
    pthread_mutex_lock(&s->mu);
    /* one read transaction: the export is a consistent snapshot */
    store_code rc = s->d->ops->begin(s->d, false, err);
    if (rc == STORE_OK && collection)
        rc = store_coll_find(s, collection, false, &coll_id, NULL, err);
    db_val a[] = {db_int(coll_id), db_int(coll_id)};
    if (rc == STORE_OK)
        rc = s->d->ops->query(
            s->d, "SELECT id FROM memories WHERE ? = 0 OR collection_id = ? ORDER BY id", a, 2,
            read_id, &ir, NULL, err);
    for (size_t i = 0; rc == STORE_OK && i < ir.n; i++) {
        export_state e = {s, cJSON_CreateObject(), NULL, ir.ids[i], false};
        db_val b[] = {db_int(ir.ids[i])};
        if (!e.line) rc = store_fail(err, STORE_NOMEM, "out of memory");
        if (rc == STORE_OK)
            rc = s->d->ops->query(s->d,
                                  "SELECT c.name, m.ext_id, m.text, m.metadata, m.created_ms, "
                                  "m.updated_ms FROM memories m JOIN collections c ON c.id = "
                                  "m.collection_id WHERE m.id = ?",
                                  b, 1, fill_memory, &e, NULL, err);
        if (rc == STORE_OK) rc = complete_line(s, &e, err);
        char *text = rc == STORE_OK ? cJSON_PrintUnformatted(e.line) : NULL;
        if (rc == STORE_OK && !text) rc = store_fail(err, STORE_NOMEM, "out of memory");
        if (rc == STORE_OK && fn(arg, text) != 0)
            rc = store_fail(err, STORE_IO, "the export could not be written");
        if (rc == STORE_OK) (*n_out)++;
        free(text);
        cJSON_Delete(e.line);
    }
    if (s->d->ops->commit(s->d, NULL) != STORE_OK) s->d->ops->rollback(s->d);
    pthread_mutex_unlock(&s->mu);
    free(ir.ids);
    return rc;
}

/* ---- import -------------------------------------------------------------------------------- */

static const char *str_of(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Decodes one model's vectors for n chunks into f32 [n][per]. */
static store_code import_vectors(const cJSON *vm, size_t n, store_model *m, store_dtype *dtype,
                                 float **out, store_err *err) {
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(vm, "n_mem");
    const cJSON *ne = cJSON_GetObjectItemCaseSensitive(vm, "n_embd");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(vm, "data");
    const char *dt = str_of(vm, "dtype");
    m->fingerprint = str_of(vm, "fingerprint");
    m->name = str_of(vm, "model");
    if (!m->fingerprint || strlen(m->fingerprint) != CLARA_FINGERPRINT_LEN || !cJSON_IsNumber(nm) ||
        !cJSON_IsNumber(ne) || nm->valuedouble < 1 || nm->valuedouble > 4096 ||
        ne->valuedouble < 1 || ne->valuedouble > 65536 || !dt ||
        (strcmp(dt, "f16") && strcmp(dt, "f32")) || !cJSON_IsArray(data) ||
        (size_t)cJSON_GetArraySize(data) != n)
        return store_fail(err, STORE_INVALID,
                          "'vectors' entries need fingerprint, model, n_mem, n_embd, dtype "
                          "(f16|f32) and one base64 'data' string per chunk");
    m->n_mem = (uint32_t)nm->valuedouble;
    m->n_embd = (uint32_t)ne->valuedouble;
    *dtype = strcmp(dt, "f16") == 0 ? STORE_F16 : STORE_F32;
    size_t per = (size_t)m->n_mem * m->n_embd;
    *out = malloc(n * per * sizeof(float) + 1);
    if (!*out) return store_fail(err, STORE_NOMEM, "out of memory");
    size_t i = 0;
    for (const cJSON *d = data->child; d; d = d->next, i++) {
        size_t len = 0;
        unsigned char *raw = cJSON_IsString(d)
                                 ? clara_base64_decode(d->valuestring, strlen(d->valuestring), &len)
                                 : NULL;
        bool ok = raw && store_decode_vectors(raw, len, *dtype, *out + i * per, per);
        free(raw);
        if (!ok)
            return store_fail(err, STORE_INVALID,
                              "chunk %zu's vectors are not base64 of %zu %s "
                              "values",
                              i, per, dt);
    }
    return STORE_OK;
}

/* The chunk ids of a memory, in order (exactly n of them). */
static store_code chunk_ids_of(store *s, const char *coll, const char *id, size_t n, int64_t **out,
                               store_err *err) {
    id_rows ir = {s->d->ops, NULL, 0, 0};
    db_val a[] = {db_text(coll, strlen(coll)), db_text(id, strlen(id))};
    pthread_mutex_lock(&s->mu);
    store_code rc = s->d->ops->query(s->d,
                                     "SELECT c.id FROM chunks c JOIN memories m ON m.id = "
                                     "c.memory_id JOIN collections k ON k.id = m.collection_id "
                                     "WHERE k.name = ? AND m.ext_id = ? ORDER BY c.seq",
                                     a, 2, read_id, &ir, NULL, err);
    pthread_mutex_unlock(&s->mu);
    if (rc == STORE_OK && ir.n != n) rc = store_fail(err, STORE_IO, "the memory changed meanwhile");
    if (rc != STORE_OK)
        free(ir.ids);
    else
        *out = ir.ids;
    return rc;
}

static store_code import_chunks(const cJSON *arr, size_t text_len, clara_chunk **out, size_t *n,
                                store_err *err) {
    *n = cJSON_IsArray(arr) ? (size_t)cJSON_GetArraySize(arr) : 0;
    if (*n == 0 || *n > STORE_MAX_CHUNKS)
        return store_fail(err, STORE_INVALID, "'chunks' must be a non-empty array");
    *out = calloc(*n, sizeof **out);
    if (!*out) return store_fail(err, STORE_NOMEM, "out of memory");
    size_t i = 0, at = 0;
    for (const cJSON *c = arr->child; c; c = c->next, i++) {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(c, "start");
        const cJSON *ln = cJSON_GetObjectItemCaseSensitive(c, "len");
        const cJSON *nt = cJSON_GetObjectItemCaseSensitive(c, "n_tokens");
        if (!cJSON_IsNumber(st) || !cJSON_IsNumber(ln) || !cJSON_IsNumber(nt) ||
            st->valuedouble != (double)at || ln->valuedouble < 0 ||
            ln->valuedouble > (double)(text_len - at) || nt->valuedouble < 0 ||
            nt->valuedouble > 1e6)
            return store_fail(err, STORE_INVALID,
                              "chunk %zu: start, len and n_tokens must cover the text in order", i);
        (*out)[i] = (clara_chunk){at, (size_t)ln->valuedouble, (uint32_t)nt->valuedouble};
        at += (*out)[i].len;
    }
    if (at != text_len)
        return store_fail(err, STORE_INVALID, "the chunks cover %zu of the text's %zu bytes", at,
                          text_len);
    return STORE_OK;
}

/* A time in milliseconds as exported, or 0 (= now) when absent or out of range (refused
 * before it is used; converting it unchecked would be undefined). */
static int64_t ms_of(const cJSON *v) {
    return cJSON_IsNumber(v) && fabs(v->valuedouble) <= 9007199254740992.0 ? (int64_t)v->valuedouble
                                                                           : 0;
}

store_code store_import_line(store *s, const char *line, size_t len, bool skip_existing,
                             bool *skipped, store_err *err) {
    *skipped = false;
    cJSON *j = cJSON_ParseWithLength(line, len);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return store_fail(err, STORE_INVALID, "not a JSON object");
    }
    const char *coll = str_of(j, "collection"), *text = str_of(j, "text"), *id = str_of(j, "id");
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(j, "metadata");
    const cJSON *vecs = cJSON_GetObjectItemCaseSensitive(j, "vectors");
    clara_chunk *chunks = NULL;
    size_t n = 0;
    float *v = NULL;
    char *meta_text = NULL;
    store_model m = {0};
    store_dtype dtype = STORE_F16;
    store_code rc = coll && text && id ? STORE_OK
                                       : store_fail(err, STORE_INVALID,
                                                    "a line needs 'collection', 'id' and 'text'");
    /* an empty id would make store_add generate one: an export always names its memories */
    if (rc == STORE_OK) rc = store_check_name("memory id", id, strlen(id), err);
    if (rc == STORE_OK && meta && !cJSON_IsNull(meta) && !cJSON_IsObject(meta))
        rc = store_fail(err, STORE_INVALID, "'metadata' must be an object or null");
    if (rc == STORE_OK && vecs && !cJSON_IsArray(vecs))
        rc = store_fail(err, STORE_INVALID, "'vectors' must be an array");
    if (rc == STORE_OK)
        rc = import_chunks(cJSON_GetObjectItemCaseSensitive(j, "chunks"), strlen(text), &chunks, &n,
                           err);
    if (rc == STORE_OK && meta && cJSON_IsObject(meta) &&
        !(meta_text = cJSON_PrintUnformatted(meta)))
        rc = store_fail(err, STORE_NOMEM, "out of memory");
    /* every further model's vectors are checked before anything is written: a line is imported
     * whole or not at all (a half-imported memory would be skipped by a retry with
     * --skip-existing, losing those vectors for good) */
    for (int i = 1; rc == STORE_OK && i < cJSON_GetArraySize(vecs); i++) {
        rc = import_vectors(cJSON_GetArrayItem(vecs, i), n, &m, &dtype, &v, err);
        free(v);
        v = NULL;
    }
    if (rc == STORE_OK && vecs && cJSON_GetArraySize(vecs) > 0)
        rc = import_vectors(cJSON_GetArrayItem(vecs, 0), n, &m, &dtype, &v, err);
    const cJSON *cr = cJSON_GetObjectItemCaseSensitive(j, "created_ms");
    const cJSON *up = cJSON_GetObjectItemCaseSensitive(j, "updated_ms");
    const double ms_max = 9007199254740992.0; /* 2^53: exact in JSON numbers and int64 */
    if (rc == STORE_OK && ((cr && !(cJSON_IsNumber(cr) && fabs(cr->valuedouble) <= ms_max)) ||
                           (up && !(cJSON_IsNumber(up) && fabs(up->valuedouble) <= ms_max))))
        rc = store_fail(err, STORE_INVALID, "'created_ms' and 'updated_ms' must be milliseconds");
    size_t text_len = text ? strlen(text) : 0;
    store_memory_in in = {id, text, text_len, meta_text, chunks, n, v, ms_of(cr), ms_of(up)};
    if (rc == STORE_OK) rc = store_add(s, coll, true, v ? &m : NULL, dtype, &in, 1, NULL, err);
    /* further models' vectors of the same memory, onto the chunks just written */
    int64_t *ids = NULL;
    for (int i = 1; rc == STORE_OK && i < cJSON_GetArraySize(vecs); i++) {
        free(v);
        v = NULL;
        rc = import_vectors(cJSON_GetArrayItem(vecs, i), n, &m, &dtype, &v, err);
        if (rc == STORE_OK && !ids) rc = chunk_ids_of(s, coll, id, n, &ids, err);
        if (rc == STORE_OK) rc = store_put_vectors(s, &m, dtype, ids, v, n, err);
    }
    free(ids);
    if (rc == STORE_CONFLICT && skip_existing) {
        *skipped = true;
        rc = STORE_OK;
    }
    free(v);
    free(chunks);
    free(meta_text);
    cJSON_Delete(j);
    return rc;
}
