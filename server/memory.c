/* memory.c - the memory store's HTTP endpoints (docs/API.md): collections and memories. Texts are
 * split into chunks and compressed by the scheduler (like any other request), then written to the
 * store in one transaction; the reply comes after the write is durable. Queries are in
 * memory_query.c. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "memory.h"
#include "store/store.h"

/* ---- opening the store ---------------------------------------------------------------------- */

int srv_store_open(srv_server *s) {
    pthread_mutex_init(&s->store_mu, NULL);
    if (!s->cfg.db) {
        CLARA_LOGI("memory store: off (--db none)");
        return 0;
    }
    store_options o = {s->cfg.db, s->cfg.vector_cache, true, s->cfg.db_timeout * 1000};
    store_err err = {0};
    store_code rc = store_open(&o, &s->store, &err);
    if (rc == STORE_UNAVAILABLE) { /* a database server that is not up yet: requests retry */
        CLARA_LOGW("memory store: %s; store requests get 503 until it can be reached", err.msg);
        return 0;
    }
    if (rc != STORE_OK) {
        fprintf(stderr,
                "clara-server: error: memory store: %s\n"
                "  (--db FILE or postgresql://... chooses another store, --db none runs without "
                "one)\n",
                err.msg);
        return -1;
    }
    CLARA_LOGI("memory store: %s %s", store_backend_name(s->store), store_where(s->store));
    return 0;
}

void srv_store_close(srv_server *s) {
    store_close(s->store);
    s->store = NULL;
}

/* The open store, opening it now if the database server was unreachable so far; NULL with *r
 * filled (404 when the server runs without a store, 503 while it cannot be reached). */
store *srv_mem_store(srv_server *s, srv_reply *r) {
    if (!s->cfg.db) {
        srv_reply_error(r, 404, "store_disabled",
                        "this server runs without a memory store (--db none)");
        return NULL;
    }
    pthread_mutex_lock(&s->store_mu);
    if (!s->store) {
        store_options o = {s->cfg.db, s->cfg.vector_cache, true, s->cfg.db_timeout * 1000};
        store_err err = {0};
        if (store_open(&o, &s->store, &err) != STORE_OK) {
            s->store = NULL;
            srv_mem_store_error(r, &err);
        } else {
            CLARA_LOGI("memory store: %s %s", store_backend_name(s->store), store_where(s->store));
        }
    }
    store *st = s->store;
    pthread_mutex_unlock(&s->store_mu);
    return st;
}

void srv_mem_store_error(srv_reply *r, const store_err *e) {
    static const struct {
        int status;
        const char *type;
    } map[] = {
        [STORE_OK] = {500, "store_error"},
        [STORE_NOT_FOUND] = {404, "not_found"},
        [STORE_CONFLICT] = {409, "conflict"},
        [STORE_INVALID] = {422, "validation_error"},
        [STORE_TOO_LARGE] = {413, "too_large"},
        [STORE_UNAVAILABLE] = {503, "store_unavailable"},
        [STORE_READONLY] = {503, "store_read_only"},
        [STORE_CORRUPT] = {500, "store_corrupt"},
        [STORE_IO] = {500, "store_error"},
        [STORE_NOMEM] = {500, "out_of_memory"},
        [STORE_CHANGED] = {503, "store_unavailable"},
    };
    int c = e->code >= STORE_OK && e->code <= STORE_CHANGED ? e->code : STORE_IO;
    srv_reply_error(r, map[c].status, map[c].type, "%s", e->msg[0] ? e->msg : "store error");
    if (map[c].status == 503) r->retry_after = 1;
}

/* ---- routing ----------------------------------------------------------------------------------
 */

#define PREFIX "/v1/collections"

/* Splits a store path into its collection and memory id (either may stay NULL). The names are
 * checked by the handlers (422), so a name with a '/' in it (a decoded %2F) still reaches one. */
static srv_endpoint classify(const char *path, char *coll, size_t cap, char *id, const char **allow,
                             const char *method) {
    coll[0] = id[0] = '\0';
    if (strncmp(path, PREFIX, strlen(PREFIX)) != 0) return SRV_EP_OTHER;
    const char *rest = path + strlen(PREFIX);
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    bool put = strcmp(method, "PUT") == 0, del = strcmp(method, "DELETE") == 0;
    if (*rest == '\0' || strcmp(rest, "/") == 0) {
        *allow = "GET, HEAD";
        return get ? SRV_EP_COLL_LIST : SRV_EP_OTHER;
    }
    if (*rest != '/') return SRV_EP_OTHER;
    rest++;
    const char *m = strstr(rest, "/memories");
    while (m && m[9] != '\0' && m[9] != '/') m = strstr(m + 1, "/memories");
    size_t rl = strlen(rest);
    bool query = rl > 6 && strcmp(rest + rl - 6, "/query") == 0 && (!m || m > rest + rl - 6);
    const char *end = query ? rest + rl - 6 : m ? m : rest + rl;
    snprintf(coll, cap, "%.*s", (int)(end - rest), rest);
    if (query) {
        *allow = "POST";
        return post ? SRV_EP_MEM_QUERY : SRV_EP_OTHER;
    }
    if (!m) {
        *allow = "GET, HEAD, DELETE";
        return get ? SRV_EP_COLL_GET : del ? SRV_EP_COLL_DELETE : SRV_EP_OTHER;
    }
    if (m[9] == '\0' || strcmp(m + 9, "/") == 0) {
        *allow = "GET, HEAD, POST";
        return get ? SRV_EP_MEM_LIST : post ? SRV_EP_MEM_ADD : SRV_EP_OTHER;
    }
    snprintf(id, cap, "%s", m + 10);
    *allow = "GET, HEAD, PUT, DELETE";
    return get ? SRV_EP_MEM_GET : put ? SRV_EP_MEM_PUT : del ? SRV_EP_MEM_DELETE : SRV_EP_OTHER;
}

srv_endpoint srv_store_match(const char *path, const char *method, const char **allow) {
    char coll[SRV_PATH_NAME_MAX], id[SRV_PATH_NAME_MAX];
    *allow = NULL;
    return classify(path, coll, sizeof coll, id, allow, method);
}

static int hex_digit(char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Decodes a path segment's %XX escapes in place (clients escape ':' and the like); false for a
 * '%' not followed by two hex digits, and for %00. A decoded '/' or control byte is refused by the
 * name check afterwards, never taken as structure: the path was split before decoding. */
static bool percent_decode(char *s) {
    char *o = s;
    for (const char *p = s; *p; p++) {
        if (*p != '%') {
            *o++ = *p;
            continue;
        }
        int hi = hex_digit(p[1]), lo = hi < 0 ? -1 : hex_digit(p[2]);
        if (lo < 0 || (hi | lo) == 0) return false; /* %00 would end the name early */
        *o++ = (char)(hi * 16 + lo);
        p += 2;
    }
    *o = '\0';
    return true;
}

/* The collection (and memory id) of a request, decoded and checked; -1 with *r filled (422). */
static int names_of(const srv_target *tg, srv_endpoint ep, char *coll, char *id, srv_reply *r) {
    const char *allow;
    static const char *const methods[] = {
        [SRV_EP_COLL_GET] = "GET",      [SRV_EP_COLL_DELETE] = "DELETE", [SRV_EP_MEM_ADD] = "POST",
        [SRV_EP_MEM_LIST] = "GET",      [SRV_EP_MEM_GET] = "GET",        [SRV_EP_MEM_PUT] = "PUT",
        [SRV_EP_MEM_DELETE] = "DELETE", [SRV_EP_MEM_QUERY] = "POST"};
    classify(tg->path, coll, SRV_PATH_NAME_MAX, id, &allow, methods[ep]);
    if (!percent_decode(coll) || !percent_decode(id)) {
        srv_reply_error(r, 422, "invalid_name",
                        "malformed percent-encoding in the path (%%XX with two hex digits, not "
                        "%%00)");
        return -1;
    }
    store_err err = {0}; /* a name cut by the buffer is longer than any valid one anyway */
    if (store_check_name("collection name", coll, strlen(coll), &err) != STORE_OK ||
        ((ep == SRV_EP_MEM_GET || ep == SRV_EP_MEM_PUT || ep == SRV_EP_MEM_DELETE) &&
         store_check_name("memory id", id, strlen(id), &err) != STORE_OK)) {
        srv_reply_error(r, 422, "invalid_name", "%s", err.msg);
        return -1;
    }
    return 0;
}

/* ---- JSON of memories and collections ----------------------------------------------------- */

static cJSON *ok_json(void) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "success", 1);
    return j;
}

/* ---- reads and deletes ---------------------------------------------------------------------- */

static void list_collections(store *st, srv_reply *r) {
    store_collection *c = NULL;
    size_t n = 0;
    store_err err = {0};
    if (store_collections(st, &c, &n, &err) != STORE_OK) {
        srv_mem_store_error(r, &err);
        return;
    }
    cJSON *j = ok_json();
    cJSON *arr = cJSON_AddArrayToObject(j, "collections");
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(arr, store_collection_json(&c[i]));
    store_collections_free(c, n);
    srv_reply_json(r, 200, j);
}

static void get_collection(store *st, const char *name, srv_reply *r) {
    store_collection *c = NULL;
    size_t n = 0;
    store_err err = {0};
    if (store_collections(st, &c, &n, &err) != STORE_OK) {
        srv_mem_store_error(r, &err);
        return;
    }
    size_t i = 0;
    while (i < n && strcmp(c[i].name, name) != 0) i++;
    if (i == n) {
        srv_reply_error(r, 404, "not_found", "no collection named '%s'", name);
    } else {
        cJSON *j = ok_json();
        cJSON_AddItemToObject(j, "collection", store_collection_json(&c[i]));
        srv_reply_json(r, 200, j);
    }
    store_collections_free(c, n);
}

static void delete_collection(store *st, const char *name, srv_reply *r) {
    int64_t n = 0;
    store_err err = {0};
    if (store_delete_collection(st, name, &n, &err) != STORE_OK) {
        srv_mem_store_error(r, &err);
        return;
    }
    cJSON *j = ok_json();
    cJSON_AddNumberToObject(j, "deleted_memories", (double)n);
    srv_reply_json(r, 200, j);
}

/* A non-negative integer query argument (NULL = absent), percent-decoded as clients may send it
 * (?limit=%32 is 2: the server passes arguments on undecoded); -1 when malformed. */
static long long query_number(const char *v, long long dflt) {
    if (!v) return dflt;
    char buf[32];
    if (strlen(v) >= sizeof buf) return -1;
    memcpy(buf, v, strlen(v) + 1);
    if (!percent_decode(buf) || !isdigit((unsigned char)buf[0])) return -1;
    char *end;
    errno = 0;
    long long n = strtoll(buf, &end, 10);
    return !*end && errno == 0 ? n : -1;
}

static void list_memories(store *st, const char *coll, const srv_target *tg, srv_reply *r) {
    long long limit = query_number(tg->limit, 100), after = query_number(tg->after, 0);
    if (limit < 1 || limit > STORE_LIST_MAX || after < 0) {
        srv_reply_error(r, 422, "validation_error",
                        "?limit must be 1 to %d and ?after a cursor from 'next'", STORE_LIST_MAX);
        return;
    }
    store_memory *m = NULL;
    size_t n = 0;
    int64_t next = 0;
    store_err err = {0};
    if (store_list(st, coll, after, (size_t)limit, &m, &n, &next, &err) != STORE_OK) {
        srv_mem_store_error(r, &err);
        return;
    }
    cJSON *j = ok_json();
    cJSON *arr = cJSON_AddArrayToObject(j, "memories");
    for (size_t i = 0; i < n; i++) {
        cJSON_AddItemToArray(arr, store_memory_json(&m[i]));
        store_memory_free(&m[i]);
    }
    free(m);
    char cursor[24];
    snprintf(cursor, sizeof cursor, "%lld", (long long)next);
    cJSON_AddItemToObject(j, "next", next ? cJSON_CreateString(cursor) : cJSON_CreateNull());
    srv_reply_json(r, 200, j);
}

static void get_memory(store *st, const char *coll, const char *id, srv_reply *r) {
    store_memory m;
    store_err err = {0};
    if (store_get(st, coll, id, &m, &err) != STORE_OK) {
        srv_mem_store_error(r, &err);
        return;
    }
    cJSON *j = ok_json();
    cJSON_AddItemToObject(j, "memory", store_memory_json(&m));
    store_memory_free(&m);
    srv_reply_json(r, 200, j);
}

static void delete_memory(store *st, const char *coll, const char *id, srv_reply *r) {
    store_err err = {0};
    if (store_delete_memory(st, coll, id, &err) != STORE_OK) {
        srv_mem_store_error(r, &err);
        return;
    }
    srv_reply_json(r, 200, ok_json());
}

/* ---- writes --------------------------------------------------------------------------------- */

/* One memory of a request body: {"text", "id"?, "metadata"?} or just a string. */
static int memory_item(const cJSON *e, int i, store_memory_in *m, char **meta, srv_reply *r) {
    const cJSON *text = cJSON_IsString(e) ? e : cJSON_GetObjectItemCaseSensitive(e, "text");
    const cJSON *id = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "id") : NULL;
    const cJSON *md = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "metadata") : NULL;
    /* white space alone is no memory: it would be stored as 0 tokens and answer nothing */
    if (!cJSON_IsString(text) || !text->valuestring[strspn(text->valuestring, " \t\r\n\f\v")]) {
        srv_reply_error(r, 422, "validation_error",
                        "memory %d needs a 'text' string with more than white space", i);
        return -1;
    }
    if (id && !cJSON_IsNull(id)) {
        store_err err = {0};
        if (!cJSON_IsString(id)) {
            srv_reply_error(r, 422, "validation_error", "memory %d: 'id' must be a string", i);
            return -1;
        }
        if (store_check_name("memory id", id->valuestring, strlen(id->valuestring), &err)) {
            srv_reply_error(r, 422, "invalid_name", "memory %d: %s", i, err.msg);
            return -1;
        }
        m->id = id->valuestring;
    }
    if (md && !cJSON_IsNull(md)) {
        if (!cJSON_IsObject(md)) {
            srv_reply_error(r, 422, "validation_error",
                            "memory %d: 'metadata' must be a JSON object", i);
            return -1;
        }
        char why[128];
        if (!store_json_plain(md, why, sizeof why)) {
            srv_reply_error(r, 422, "validation_error", "memory %d: 'metadata' %s", i, why);
            return -1;
        }
        *meta = cJSON_PrintUnformatted(md);
        if (!*meta) {
            srv_reply_error(r, 500, "out_of_memory", "out of memory");
            return -1;
        }
        if (strlen(*meta) > STORE_METADATA_MAX) {
            srv_reply_error(r, 413, "too_large", "memory %d: metadata is over %d bytes", i,
                            STORE_METADATA_MAX);
            return -1;
        }
        m->metadata = *meta;
    }
    m->text = text->valuestring;
    m->text_len = strlen(text->valuestring);
    return 0;
}

/* The memories of an add (POST: "memories": [...], or one memory's fields at the top level) or
 * a replace (PUT: one memory's fields). */
static int memory_items(cJSON *root, bool one, store_memory_in **out, char ***metas, size_t *n,
                        srv_reply *r) {
    cJSON *arr = one ? NULL : cJSON_GetObjectItemCaseSensitive(root, "memories");
    if (arr && (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) < 1 ||
                cJSON_GetArraySize(arr) > SRV_MAX_MEMORIES)) {
        srv_reply_error(r, 422, "validation_error", "'memories' must be an array of 1 to %d items",
                        SRV_MAX_MEMORIES);
        return -1;
    }
    if (arr && (cJSON_GetObjectItemCaseSensitive(root, "text") ||
                cJSON_GetObjectItemCaseSensitive(root, "id") ||
                cJSON_GetObjectItemCaseSensitive(root, "metadata"))) {
        srv_reply_error(r, 422, "validation_error",
                        "give either 'memories' or one memory's 'text' (with 'id', 'metadata'), "
                        "not both");
        return -1;
    }
    *n = arr ? (size_t)cJSON_GetArraySize(arr) : 1;
    *out = calloc(*n, sizeof **out);
    *metas = calloc(*n, sizeof **metas);
    if (!*out || !*metas) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return -1;
    }
    if (!arr) return memory_item(root, 0, &(*out)[0], &(*metas)[0], r);
    int i = 0;
    for (cJSON *e = arr->child; e; e = e->next, i++)
        if (memory_item(e, i, &(*out)[i], &(*metas)[i], r) != 0) return -1;
    store_err err = {0}; /* refused before anything is compressed */
    if (store_check_unique_ids(*out, *n, &err) != STORE_OK) {
        srv_mem_store_error(r, &err);
        return -1;
    }
    return 0;
}

static int vector_dtype(srv_server *s, cJSON *root, store_dtype *dt, srv_reply *r) {
    cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "dtype");
    *dt = s->cfg.vectors_f32 ? STORE_F32 : STORE_F16;
    if (!d || cJSON_IsNull(d)) return 0;
    if (!cJSON_IsString(d) || (strcmp(d->valuestring, "f16") && strcmp(d->valuestring, "f32"))) {
        srv_reply_error(r, 422, "validation_error", "'dtype' must be \"f16\" or \"f32\"");
        return -1;
    }
    *dt = strcmp(d->valuestring, "f32") == 0 ? STORE_F32 : STORE_F16;
    return 0;
}

/* Splits and compresses the texts of mems through the scheduler; then mems[i].chunks and
 * .vectors point into t. Returns 0, or -1 with *r filled. */
static int compress_memories(srv_server *s, srv_task *t, store_memory_in *mems, size_t n,
                             bool (*alive)(void *), void *arg, srv_reply *r) {
    t->docs = calloc(n, sizeof *t->docs);
    if (!t->docs) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) t->docs[i] = (clara_text){mems[i].text, mems[i].text_len};
    t->n_docs = n;
    t->split = true;
    if (srv_run_task(s, t, alive, arg, r) != 0) return -1;
    size_t per = (size_t)t->n_mem * t->n_embd, at = 0;
    for (size_t i = 0; i < n; i++) {
        size_t first = at;
        while (at < t->n_docs && t->chunk_of[at] == i) at++;
        mems[i].chunks = t->chunks + first;
        mems[i].n_chunks = at - first;
        mems[i].vectors = t->out_vectors + first * per;
    }
    return 0;
}

void srv_mem_model(srv_server *s, const char *fingerprint, store_model *m) {
    m->fingerprint = fingerprint;
    m->name = s->info.name;
    m->n_mem = s->info.n_mem;
    m->n_embd = s->info.n_embd;
}

static cJSON *timings_json(const srv_task *t, double store_ms) {
    cJSON *tm = cJSON_CreateObject();
    cJSON_AddNumberToObject(tm, "queue_ms", round(t->queue_ms * 100) / 100);
    cJSON_AddNumberToObject(tm, "load_ms", round(t->load_ms * 100) / 100);
    cJSON_AddNumberToObject(tm, "compress_ms", round(t->compress_ms * 100) / 100);
    cJSON_AddNumberToObject(tm, "store_ms", round(store_ms * 100) / 100);
    return tm;
}

/* The reply to a write: each memory's id, chunks and tokens. */
static void written_reply(const srv_task *t, const char *coll, const store_memory_in *mems,
                          char (*ids)[STORE_NAME_MAX + 1], size_t n, int status, double store_ms,
                          srv_reply *r) {
    cJSON *j = ok_json();
    cJSON_AddStringToObject(j, "collection", coll);
    cJSON *arr = cJSON_AddArrayToObject(j, "memories");
    for (size_t i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "id", ids[i]);
        cJSON_AddNumberToObject(e, "chunks", (double)mems[i].n_chunks);
        uint32_t tokens = 0;
        for (size_t c = 0; c < mems[i].n_chunks; c++) tokens += mems[i].chunks[c].n_tokens;
        cJSON_AddNumberToObject(e, "tokens", tokens);
        cJSON_AddItemToArray(arr, e);
    }
    cJSON_AddStringToObject(j, "model", t->fingerprint);
    cJSON_AddItemToObject(j, "timings", timings_json(t, store_ms));
    srv_reply_json(r, status, j);
}

/* Stores memories compressed by t: an add (ids generated where none was given), or the replace
 * of memory `id` (PUT; its metadata kept unless the body gives one). */
static void store_memories(srv_server *s, store *st, const srv_task *t, const char *coll,
                           const char *id, store_memory_in *mems, size_t n, store_dtype dt,
                           srv_reply *r) {
    store_model m;
    srv_mem_model(s, t->fingerprint, &m);
    store_err err = {0};
    char(*ids)[STORE_NAME_MAX + 1] = calloc(n, sizeof *ids);
    if (!ids) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return;
    }
    double t0 = srv_mono();
    store_code rc;
    if (id) {
        mems[0].id = id;
        snprintf(ids[0], sizeof ids[0], "%s", id);
        rc = store_replace(st, coll, &m, dt, &mems[0], mems[0].metadata == NULL, &err);
    } else {
        rc = store_add(st, coll, true, &m, dt, mems, n, ids, &err);
    }
    double store_ms = (srv_mono() - t0) * 1e3;
    if (rc != STORE_OK)
        srv_mem_store_error(r, &err);
    else
        written_reply(t, coll, mems, ids, n, id ? 200 : 201, store_ms, r);
    free(ids);
}

/* POST .../memories (id NULL) and PUT .../memories/{id}. */
static void write_memories(srv_server *s, store *st, const char *coll, const char *id, cJSON *root,
                           double deadline, bool (*alive)(void *), void *arg, srv_reply *r) {
    store_memory_in *mems = NULL;
    char **metas = NULL;
    size_t n = 0;
    store_dtype dt;
    srv_task *t = srv_task_new(SRV_EP_MEM_ADD);
    if (!t) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return;
    }
    t->deadline = deadline;
    if (memory_items(root, id != NULL, &mems, &metas, &n, r) == 0 &&
        vector_dtype(s, root, &dt, r) == 0 && compress_memories(s, t, mems, n, alive, arg, r) == 0)
        store_memories(s, st, t, coll, id, mems, n, dt, r);
    for (size_t i = 0; metas && i < n; i++) free(metas[i]);
    free(metas);
    free(mems);
    srv_task_release(t);
}

/* ---- dispatch -------------------------------------------------------------------------------- */

void srv_store_route(srv_server *s, srv_endpoint ep, const srv_target *tg, const char *body,
                     size_t len, bool (*alive)(void *), void *arg, srv_reply *r) {
    double t0 = srv_mono();
    /* one --request-timeout for the whole request: parsing, and every task it queues */
    double deadline = t0 + s->cfg.request_timeout;
    char coll[SRV_PATH_NAME_MAX] = "", id[SRV_PATH_NAME_MAX] = "";
    if (ep != SRV_EP_COLL_LIST && names_of(tg, ep, coll, id, r) != 0) return;
    store *st = srv_mem_store(s, r);
    if (!st) return;
    cJSON *root = NULL;
    bool has_body = ep == SRV_EP_MEM_ADD || ep == SRV_EP_MEM_PUT || ep == SRV_EP_MEM_QUERY;
    if (has_body && srv_parse_body(s, body, len, t0, alive, arg, &root, r) != 0) return;
    switch (ep) {
    case SRV_EP_COLL_LIST:
        list_collections(st, r);
        break;
    case SRV_EP_COLL_GET:
        get_collection(st, coll, r);
        break;
    case SRV_EP_COLL_DELETE:
        delete_collection(st, coll, r);
        break;
    case SRV_EP_MEM_LIST:
        list_memories(st, coll, tg, r);
        break;
    case SRV_EP_MEM_GET:
        get_memory(st, coll, id, r);
        break;
    case SRV_EP_MEM_DELETE:
        delete_memory(st, coll, id, r);
        break;
    case SRV_EP_MEM_ADD:
        write_memories(s, st, coll, NULL, root, deadline, alive, arg, r);
        break;
    case SRV_EP_MEM_PUT:
        write_memories(s, st, coll, id, root, deadline, alive, arg, r);
        break;
    case SRV_EP_MEM_QUERY:
        srv_mem_query(s, st, coll, root, deadline, alive, arg, r);
        break;
    default:
        srv_reply_error(r, 404, "not_found", "no such endpoint");
        break;
    }
    cJSON_Delete(root);
    /* a stream that began is counted when it ends (stream.c); a refusal (4xx: the request was
     * wrong, as the model endpoints' validation failures) counts as neither served nor failed */
    bool refused = r->status >= 400 && r->status < 500;
    if (!refused && !r->sse) srv_count_request(s, r->status < 400, (srv_mono() - t0) * 1e3);
}
