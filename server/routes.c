/* routes.c - what each endpoint does: strict validation of JSON bodies into tasks (the Python
 * server's /compress contract plus the /v1 endpoints), waiting for the scheduler while watching
 * the client and the per-request deadline, and the JSON replies; also /health, /status,
 * /metrics and /openapi.json, none of which touch the model. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/fp16.h"
#include "base/json_keys.h"
#include "base/json_scan.h"
#include "base/json_text.h"
#include "base/threadpool.h"
#include "base/base64.h"
#include "doccache.h"
#include "openai.h"
#include "server.h"
#include "store/store.h"
#include "stream.h"

static char *print_json(cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return s;
}

void srv_reply_error(srv_reply *r, int status, const char *type, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "success", 0);
    cJSON_AddStringToObject(j, "error", msg);
    cJSON_AddStringToObject(j, "error_type", type);
    r->status = status;
    r->content_type = "application/json";
    r->body = print_json(j);
    snprintf(r->note, sizeof r->note, "%.*s", (int)sizeof r->note - 1, msg);
}

static double round_to(double v, double unit) {
    return round(v / unit) * unit;
}

/* ---- validation ------------------------------------------------------------------------------ */

/* Scans the body before cJSON sees it: cJSON spends ~100 bytes a value, so 4 MB of "1," would
 * cost ~200 MB. Texts within SRV_JSON_MAX_VALUES / SRV_JSON_MAX_DEPTH (every valid request is)
 * build a tree about the size of the body. Returns 0, or -1 after filling *r. */
static int scan_body(const char *body, size_t len, srv_reply *r) {
    clara_json_scan_result sr;
    switch (clara_json_scan(body, len, SRV_JSON_MAX_VALUES, SRV_JSON_MAX_DEPTH, &sr)) {
    case CLARA_JSON_OK:
        break;
    case CLARA_JSON_SYNTAX:
        srv_reply_error(r, 400, "invalid_json", "malformed JSON near byte %zu", sr.offset);
        return -1;
    case CLARA_JSON_TOO_MANY:
        srv_reply_error(r, 422, "validation_error",
                        "the request body holds more than %d JSON values (byte %zu); a request "
                        "needs at most %d documents and a few fields",
                        SRV_JSON_MAX_VALUES, sr.offset, SRV_MAX_MEMORIES);
        return -1;
    case CLARA_JSON_TOO_DEEP:
        srv_reply_error(r, 422, "validation_error",
                        "the request body nests arrays and objects more than %d deep (byte %zu)",
                        SRV_JSON_MAX_DEPTH, sr.offset);
        return -1;
    }
    if (sr.root != '{') {
        srv_reply_error(r, 422, "validation_error", "the request body must be a JSON object");
        return -1;
    }
    return 0;
}

/* Everything about the body that needs no allocation: UTF-8, NUL bytes, the JSON scan. Returns 0,
 * or -1 after filling *r. */
static int check_body(const char *body, size_t len, srv_reply *r) {
    if (len == 0) {
        srv_reply_error(r, 400, "invalid_json", "the request body is empty; send a JSON object");
        return -1;
    }
    if (!srv_utf8_valid(body, len)) {
        srv_reply_error(r, 400, "invalid_utf8", "the request body is not valid UTF-8");
        return -1;
    }
    if (memchr(body, '\0', len)) {
        srv_reply_error(r, 400, "invalid_json", "the request body contains a NUL byte");
        return -1;
    }
    if (scan_body(body, len, r) != 0) return -1;
    if (srv_json_has_nul_escape(body, len)) {
        srv_reply_error(r, 422, "validation_error", "text must not contain NUL (\\u0000)");
        return -1;
    }
    return 0;
}

/* Parses a body check_body accepted: exactly one object, never a text cJSON refuses
 * (fuzz_jsonscan), so a failure here is an allocation failing, or a name given twice in one
 * object (json_keys.h). NULL after filling *r. */
static cJSON *parse_body(const char *body, size_t len, srv_reply *r) {
    cJSON *root = cJSON_ParseWithLength(body, len);
    const char *dup = NULL;
    json_keys_code rc = root ? json_duplicate_key(root, &dup) : JSON_KEYS_NOMEM;
    if (rc == JSON_KEYS_DUPLICATE)
        srv_reply_error(r, 422, "validation_error",
                        "the body has the key '%.64s' twice in one object (JSON readers disagree "
                        "on which one counts)",
                        dup);
    else if (rc == JSON_KEYS_NOMEM)
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
    if (rc == JSON_KEYS_OK) return root;
    cJSON_Delete(root);
    return NULL;
}

/* An optional integer field in [lo, hi]; a JSON null counts as absent. 1 = set, 0 = absent,
 * -1 = invalid (reply filled). */
static int get_int(cJSON *root, const char *key, long lo, long hi, long *out, srv_reply *r) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) ||
        v->valuedouble != floor(v->valuedouble)) {
        srv_reply_error(r, 422, "validation_error", "'%s' must be an integer", key);
        return -1;
    }
    if (v->valuedouble < (double)lo || v->valuedouble > (double)hi) {
        srv_reply_error(r, 422, "validation_error", "'%s' must be between %ld and %ld", key, lo,
                        hi);
        return -1;
    }
    *out = (long)v->valuedouble;
    return 1;
}

static int get_query(srv_task *t, srv_reply *r) {
    cJSON *q = cJSON_GetObjectItemCaseSensitive(t->root, "query");
    if (!q) {
        srv_reply_error(r, 422, "validation_error", "'query' is required");
        return -1;
    }
    if (!cJSON_IsString(q)) {
        srv_reply_error(r, 422, "validation_error", "'query' must be a string");
        return -1;
    }
    size_t n = strlen(q->valuestring);
    if (n == 0 || n > SRV_MAX_QUERY_BYTES) {
        srv_reply_error(r, 422, "validation_error", "'query' must be 1 to %u bytes long (got %zu)",
                        SRV_MAX_QUERY_BYTES, n);
        return -1;
    }
    t->query = q->valuestring;
    t->query_len = n;
    return 0;
}

/* The documents: `key` (memories or documents) as a non-empty array of strings. */
static int get_docs(srv_task *t, const char *key, srv_reply *r) {
    cJSON *a = cJSON_GetObjectItemCaseSensitive(t->root, key);
    if (!cJSON_IsArray(a)) {
        srv_reply_error(r, 422, "validation_error",
                        a ? "'%s' must be an array of strings" : "'%s' is required", key);
        return -1;
    }
    int n = cJSON_GetArraySize(a);
    if (n < 1 || n > SRV_MAX_MEMORIES) {
        srv_reply_error(r, 422, "validation_error", "'%s' must hold 1 to %d items (got %d)", key,
                        SRV_MAX_MEMORIES, n);
        return -1;
    }
    t->docs = calloc((size_t)n, sizeof *t->docs);
    if (!t->docs) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return -1;
    }
    int i = 0;
    for (cJSON *e = a->child; e; e = e->next, i++) {
        if (!cJSON_IsString(e)) {
            srv_reply_error(r, 422, "validation_error", "'%s[%d]' must be a string", key, i);
            return -1;
        }
        size_t len = strlen(e->valuestring);
        if (len > SRV_MAX_MEMORY_BYTES) {
            srv_reply_error(r, 422, "validation_error", "'%s[%d]' is %zu bytes; the limit is %u",
                            key, i, len, SRV_MAX_MEMORY_BYTES);
            return -1;
        }
        t->docs[i] = (clara_text){e->valuestring, len};
    }
    t->n_docs = (size_t)n;
    return 0;
}

static int dims_check(cJSON *shape, const srv_model_info *info, size_t *n_docs, srv_reply *r) {
    if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) != 3) {
        srv_reply_error(r, 422, "validation_error", "'vectors.shape' must be [documents, %u, %u]",
                        info->n_mem, info->n_embd);
        return -1;
    }
    double d[3];
    for (int i = 0; i < 3; i++) {
        cJSON *e = cJSON_GetArrayItem(shape, i);
        d[i] = cJSON_IsNumber(e) ? e->valuedouble : -1;
    }
    if (d[0] < 1 || d[0] > SRV_MAX_MEMORIES || d[0] != floor(d[0]) || d[1] != info->n_mem ||
        d[2] != info->n_embd) {
        srv_reply_error(r, 422, "validation_error",
                        "'vectors.shape' must be [1..%d, %u, %u] for this model", SRV_MAX_MEMORIES,
                        info->n_mem, info->n_embd);
        return -1;
    }
    *n_docs = (size_t)d[0];
    return 0;
}

/* vectors: {"dtype": "f32"|"f16", "shape": [n, n_mem, n_embd], "data": base64 little-endian,
 * "encoding": "base64-le" (optional: the only one)}. */
static int get_vectors(srv_task *t, cJSON *v, const srv_model_info *info, srv_reply *r) {
    cJSON *dt = cJSON_GetObjectItemCaseSensitive(v, "dtype");
    cJSON *data = cJSON_GetObjectItemCaseSensitive(v, "data");
    cJSON *enc = cJSON_GetObjectItemCaseSensitive(v, "encoding");
    const char *dtype = cJSON_IsString(dt) ? dt->valuestring : dt ? "" : "f32";
    bool f16 = strcmp(dtype, "f16") == 0;
    bool enc_ok = !enc || cJSON_IsNull(enc) ||
                  (cJSON_IsString(enc) && strcmp(enc->valuestring, "base64-le") == 0);
    if (!cJSON_IsObject(v) || (!f16 && strcmp(dtype, "f32") != 0) || !cJSON_IsString(data) ||
        !enc_ok) {
        srv_reply_error(r, 422, "validation_error",
                        "'vectors' must be {\"dtype\": \"f32\"|\"f16\", "
                        "\"shape\": [...], \"data\": base64, \"encoding\": \"base64-le\"} as "
                        "/v1/compress returns it");
        return -1;
    }
    size_t n;
    if (dims_check(cJSON_GetObjectItemCaseSensitive(v, "shape"), info, &n, r)) return -1;
    size_t count = n * info->n_mem * info->n_embd, raw_len = 0;
    unsigned char *raw =
        clara_base64_decode(data->valuestring, strlen(data->valuestring), &raw_len);
    if (!raw || raw_len != count * (f16 ? 2 : 4)) {
        free(raw);
        srv_reply_error(r, 422, "validation_error",
                        "'vectors.data' must be base64 of %zu %s values", count, dtype);
        return -1;
    }
    t->in_vectors = malloc(count * sizeof(float) + 1);
    for (size_t i = 0; t->in_vectors && i < count; i++) {
        const unsigned char *p = raw + i * (f16 ? 2 : 4);
        uint32_t u = f16 ? (uint32_t)(p[0] | p[1] << 8)
                         : (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                               (uint32_t)p[3] << 24;
        t->in_vectors[i] = f16 ? clara_f16_to_f32((uint16_t)u) : clara_bits_f32(u);
        if (!isfinite(t->in_vectors[i])) {
            free(raw);
            srv_reply_error(r, 422, "validation_error", "'vectors.data' holds a non-finite value");
            return -1;
        }
    }
    free(raw);
    if (!t->in_vectors) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return -1;
    }
    /* the base64 (most of the body) is not needed while the task waits and runs */
    cJSON_DeleteItemFromObjectCaseSensitive(v, "data");
    t->n_docs = n;
    return 0;
}

/* Documents as text under "documents" (or "memories"), or "vectors" from /v1/compress. */
static int get_docs_or_vectors(srv_task *t, const srv_model_info *info, bool allow_vectors,
                               srv_reply *r) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(t->root, "vectors");
    bool has_docs = cJSON_GetObjectItemCaseSensitive(t->root, "documents") != NULL;
    bool has_mem = cJSON_GetObjectItemCaseSensitive(t->root, "memories") != NULL;
    if (allow_vectors && v && !cJSON_IsNull(v)) {
        if (has_docs || has_mem) {
            srv_reply_error(r, 422, "validation_error",
                            "give either 'documents' or 'vectors', not both");
            return -1;
        }
        return get_vectors(t, v, info, r);
    }
    return get_docs(t, has_docs || !has_mem ? "documents" : "memories", r);
}

static int get_common(srv_server *s, srv_task *t, srv_reply *r) {
    long v;
    int rc = get_int(t->root, "max_new_tokens", 1, SRV_MAX_NEW_TOKENS_LIMIT, &v, r);
    if (rc < 0) return -1;
    t->max_new_tokens = rc ? (uint32_t)v : (uint32_t)s->cfg.max_new_tokens;
    rc = get_int(t->root, "keep_alive", -2147483648L, 2147483647L, &v, r);
    if (rc < 0) return -1;
    t->has_keep_alive = rc == 1;
    t->keep_alive = rc && v < 0 ? -1 : (int)v;
    return 0;
}

/* "chunk": true asks a /v1 endpoint to split long documents into chunks instead of cutting them
 * (the reference's behaviour, the default there); /compress chunks unless --compress-cut. */
static int get_chunking(srv_server *s, srv_task *t, srv_reply *r) {
    cJSON *c = cJSON_GetObjectItemCaseSensitive(t->root, "chunk");
    t->split = t->ep == SRV_EP_COMPRESS && !s->cfg.compress_cut;
    if (!c || cJSON_IsNull(c)) return 0;
    if (!cJSON_IsBool(c)) {
        srv_reply_error(r, 422, "validation_error", "'chunk' must be true or false");
        return -1;
    }
    t->split = cJSON_IsTrue(c);
    return 0;
}

/* How many documents /v1/retrieve was asked to pick: top_k, else the model's generation_top_k. */
static uint32_t retrieve_top_k(const srv_server *s, const srv_task *t) {
    cJSON *k = cJSON_GetObjectItemCaseSensitive(t->root, "top_k");
    return cJSON_IsNumber(k) ? (uint32_t)k->valuedouble : s->info.generation_top_k;
}

static int build_task(srv_server *s, srv_task *t, srv_reply *r) {
    if (get_common(s, t, r) || get_chunking(s, t, r)) return -1;
    switch (t->ep) {
    case SRV_EP_COMPRESS:
        return get_docs(t, "memories", r) || get_query(t, r) ? -1 : 0;
    case SRV_EP_V1_COMPRESS: {
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(t->root, "dtype");
        if (dt && !cJSON_IsNull(dt)) {
            if (!cJSON_IsString(dt) ||
                (strcmp(dt->valuestring, "f32") != 0 && strcmp(dt->valuestring, "f16") != 0)) {
                srv_reply_error(r, 422, "validation_error", "'dtype' must be \"f32\" or \"f16\"");
                return -1;
            }
            t->out_f16 = strcmp(dt->valuestring, "f16") == 0;
        }
        return get_docs_or_vectors(t, &s->info, false, r);
    }
    case SRV_EP_V1_ANSWER:
        return get_query(t, r) || get_docs_or_vectors(t, &s->info, true, r) ? -1 : 0;
    case SRV_EP_V1_RETRIEVE: {
        if (!s->info.can_retrieve) {
            srv_reply_error(r, 422, "retrieval_unsupported",
                            "the loaded model has no query-reasoner adapter; /v1/retrieve needs a "
                            "CLaRa E2E checkpoint");
            return -1;
        }
        long k;
        int rc = get_int(t->root, "top_k", 1, SRV_MAX_MEMORIES, &k, r);
        if (rc < 0) return -1;
        t->top_k = rc ? (uint32_t)k : 0;
        if (get_query(t, r) || get_docs_or_vectors(t, &s->info, true, r)) return -1;
        /* fewer documents than the model picks: all of them are used (the reply says so) */
        if (retrieve_top_k(s, t) > t->n_docs) t->top_k = (uint32_t)t->n_docs;
        return 0;
    }
    default:
        return -1;
    }
}

/* ---- waiting ------------------------------------------------------------------------------- */

/* Waits for the scheduler, polling the client every 50 ms. Returns 0 when done, 1 when the client
 * left, 2 on timeout (the task is then marked cancelled: dropped if it has not started). */
static int wait_task(srv_server *s, srv_task *t, bool (*alive)(void *), void *arg) {
    srv_queue *q = &s->queue;
    double deadline = t->deadline;
    int why = 0;
    pthread_mutex_lock(&q->mu);
    while (!t->done) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&t->cv, &q->mu, &ts);
        if (t->done) break;
        pthread_mutex_unlock(&q->mu);
        why = alive && !alive(arg) ? 1 : srv_mono() > deadline ? 2 : 0;
        pthread_mutex_lock(&q->mu);
        if (why && !t->done) {
            atomic_store(&t->cancelled, true);
            break;
        }
        why = 0;
    }
    pthread_mutex_unlock(&q->mu);
    return why;
}

/* ---- replies ------------------------------------------------------------------------------- */

static void add_timings(cJSON *j, const srv_task *t) {
    cJSON *tm = cJSON_AddObjectToObject(j, "timings");
    cJSON_AddNumberToObject(tm, "queue_ms", round_to(t->queue_ms, 0.01));
    cJSON_AddNumberToObject(tm, "load_ms", round_to(t->load_ms, 0.01));
    cJSON_AddNumberToObject(tm, "compress_ms", round_to(t->compress_ms, 0.01));
    cJSON_AddNumberToObject(tm, "generate_ms", round_to(t->generate_ms, 0.01));
    if (t->has_gen) { /* generate_ms in its two phases */
        cJSON_AddNumberToObject(tm, "prefill_ms", round_to(t->gen.prefill_ms, 0.01));
        cJSON_AddNumberToObject(tm, "decode_ms", round_to(t->gen.decode_ms, 0.01));
    }
    cJSON_AddNumberToObject(tm, "batch_size", t->batch_size);
}

static void add_counts(cJSON *j, const srv_task *t) {
    double compressed = (double)t->n_mem * (double)t->n_docs;
    if (t->docs) cJSON_AddNumberToObject(j, "original_tokens", (double)t->original_tokens);
    cJSON_AddNumberToObject(j, "compressed_tokens", compressed);
    if (t->docs)
        cJSON_AddNumberToObject(
            j, "compression_ratio",
            compressed > 0 ? round_to((double)t->original_tokens / compressed, 0.01) : 0);
}

/* How long documents were read: split into chunks (chunks_read, and for each chunk the document
 * it came from), or cut at doc_max_length tokens (the documents that were). */
static void add_chunking(cJSON *j, const srv_task *t) {
    if (!t->docs) return;
    if (t->split) {
        cJSON_AddNumberToObject(j, "chunks_read", (double)t->n_docs);
        cJSON *of = cJSON_AddArrayToObject(j, "chunk_of");
        for (size_t i = 0; of && i < t->n_docs; i++)
            cJSON_AddItemToArray(of, cJSON_CreateNumber(t->chunk_of[i]));
        return;
    }
    cJSON *cut = cJSON_AddArrayToObject(j, "cut_documents");
    for (size_t i = 0; cut && i < t->n_cut; i++)
        cJSON_AddItemToArray(cut, cJSON_CreateNumber(t->cut[i]));
}

static cJSON *vectors_json(const srv_task *t) {
    size_t count = t->n_docs * t->n_mem * t->n_embd;
    size_t esz = t->out_f16 ? 2 : 4;
    unsigned char *raw = malloc(count * esz + 1);
    if (!raw) return NULL;
    for (size_t i = 0; i < count; i++) {
        uint32_t u =
            t->out_f16 ? clara_f32_to_f16(t->out_vectors[i]) : clara_f32_bits(t->out_vectors[i]);
        for (size_t b = 0; b < esz; b++) raw[i * esz + b] = (unsigned char)(u >> (8 * b));
    }
    char *b64 = clara_base64_encode(raw, count * esz);
    free(raw);
    if (!b64) return NULL;
    cJSON *v = cJSON_CreateObject();
    cJSON_AddStringToObject(v, "dtype", t->out_f16 ? "f16" : "f32");
    cJSON_AddStringToObject(v, "encoding", "base64-le");
    cJSON *shape = cJSON_AddArrayToObject(v, "shape");
    cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->n_docs));
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(t->n_mem));
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(t->n_embd));
    cJSON_AddStringToObject(v, "data", b64);
    free(b64);
    return v;
}

/* /v1/retrieve: how many documents were picked; a note when fewer were given than asked for. */
static void add_top_k_used(cJSON *j, const srv_server *s, const srv_task *t) {
    cJSON_AddNumberToObject(j, "top_k_used", (double)t->gen.k);
    uint32_t asked = retrieve_top_k(s, t);
    if (t->gen.k >= asked) return;
    char note[160];
    snprintf(note, sizeof note,
             "top_k is %u but only %zu documents were given: all of them were used", asked,
             t->n_docs);
    cJSON_AddStringToObject(j, "note", note);
}

static void success_reply(const srv_server *s, const srv_task *t, double latency_ms, srv_reply *r) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "success", 1);
    if (t->ep == SRV_EP_COMPRESS) cJSON_AddNullToObject(j, "error"); /* as the Python server */
    if (t->ep == SRV_EP_V1_COMPRESS) {
        cJSON *v = vectors_json(t);
        if (!v) {
            cJSON_Delete(j);
            srv_reply_error(r, 500, "out_of_memory", "out of memory");
            return;
        }
        cJSON_AddItemToObject(j, "vectors", v);
        cJSON *nt = cJSON_AddArrayToObject(j, "n_tokens");
        for (size_t i = 0; i < t->n_docs; i++)
            cJSON_AddItemToArray(nt, cJSON_CreateNumber(t->enc_tokens[i]));
    } else {
        json_add_text(j, "answer", t->gen.text, t->gen.text_len);
        r->tokens = t->gen.n_ids;
    }
    add_counts(j, t);
    add_chunking(j, t);
    cJSON_AddNumberToObject(j, "latency_ms", round_to(latency_ms, 0.1));
    if (t->has_gen) {
        cJSON_AddNumberToObject(j, "prompt_tokens", t->gen.prompt_tokens);
        cJSON_AddNumberToObject(j, "generated_tokens", (double)t->gen.n_ids);
    }
    if (t->ep == SRV_EP_V1_RETRIEVE && t->has_gen) {
        cJSON *tk = cJSON_AddArrayToObject(j, "top_k");
        for (size_t i = 0; i < t->gen.k; i++)
            cJSON_AddItemToArray(tk, cJSON_CreateNumber(t->gen.top_k[i]));
        cJSON *sc = cJSON_AddArrayToObject(j, "scores");
        for (size_t i = 0; i < t->gen.n_scores; i++)
            cJSON_AddItemToArray(sc, cJSON_CreateNumber(t->gen.scores[i]));
        add_top_k_used(j, s, t);
    }
    add_timings(j, t);
    r->status = 200;
    r->content_type = "application/json";
    r->body = print_json(j);
    if (!r->body) srv_reply_error(r, 500, "out_of_memory", "out of memory");
}

void srv_count_request(srv_server *s, bool ok, double ms) {
    pthread_mutex_lock(&s->state.mu);
    if (ok) {
        s->state.requests_served++;
        s->state.latency_sum_ms += ms;
    } else {
        s->state.errors++;
    }
    pthread_mutex_unlock(&s->state.mu);
}

/* ---- the parse budget ------------------------------------------------------------------------ */

/* Bytes of bodies parsed and validated at once. Meanwhile a request holds up to ~3 times its body
 * (the tree's strings, the base64 of vectors decoded and widened to f32), and parsing is CPU work
 * that more threads would not finish sooner on a few cores: without a bound, 64 bodies of 4 MB
 * would hold ~1 GB at once. A body over the whole budget (a --max-body above it) waits until it
 * is parsed alone. */
#define PARSE_BUDGET (16u << 20)

static pthread_mutex_t g_parse_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_parse_cv = PTHREAD_COND_INITIALIZER;
static size_t g_parse_bytes; /* under g_parse_mu */

/* Takes len bytes of the budget, waiting for it. Returns 0; 1 if the client left or 2 at the
 * deadline first (nothing taken). */
static int parse_acquire(size_t len, double deadline, bool (*alive)(void *), void *arg) {
    int why = 0;
    pthread_mutex_lock(&g_parse_mu);
    while (!why && g_parse_bytes > 0 && g_parse_bytes + len > PARSE_BUDGET) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&g_parse_cv, &g_parse_mu, &ts);
        pthread_mutex_unlock(&g_parse_mu); /* alive() is a syscall: not under the lock */
        why = alive && !alive(arg) ? 1 : srv_mono() > deadline ? 2 : 0;
        pthread_mutex_lock(&g_parse_mu);
    }
    if (!why) g_parse_bytes += len;
    pthread_mutex_unlock(&g_parse_mu);
    return why;
}

static void parse_release(size_t len) {
    pthread_mutex_lock(&g_parse_mu);
    g_parse_bytes -= len;
    pthread_cond_broadcast(&g_parse_cv);
    pthread_mutex_unlock(&g_parse_mu);
}

int srv_parse_body(srv_server *s, const char *body, size_t len, double t0, bool (*alive)(void *),
                   void *arg, cJSON **root, srv_reply *r) {
    *root = NULL;
    if (check_body(body, len, r) != 0) return -1;
    int why = parse_acquire(len, t0 + s->cfg.request_timeout, alive, arg);
    if (why == 1) {
        srv_reply_error(r, 499, "client_closed", "the client went away");
        return -1;
    }
    if (why == 2) {
        srv_reply_error(r, 503, "overloaded",
                        "too many large requests are being read; retry later");
        r->retry_after = 1;
        return -1;
    }
    *root = parse_body(body, len, r);
    parse_release(len);
    return *root ? 0 : -1;
}

/* Checks the body, then parses and validates it into t within the parse budget. Returns 0, or -1
 * with *r filled. */
static int parse_task(srv_server *s, srv_task *t, const char *body, size_t len, double t0,
                      bool (*alive)(void *), void *arg, srv_reply *r) {
    if (srv_parse_body(s, body, len, t0, alive, arg, &t->root, r) != 0) return -1;
    return build_task(s, t, r) == 0 ? 0 : -1;
}

/* Parsed requests at least this large hand their freed memory back at once (malloc_trim): their
 * trees are up to thousands of small blocks that the heaps would otherwise keep. */
#define TRIM_AFTER_BYTES (1u << 20)

/* Frees the task; after a large parsed body, returns the heaps' free pages too. */
static void finish_task(srv_task *t, size_t len) {
    bool trim = len >= TRIM_AFTER_BYTES && t->root;
    srv_task_release(t);
    if (trim) srv_memory_trim();
}

int srv_submit(srv_server *s, srv_task *t, srv_reply *r) {
    t->enqueued_at = srv_mono();
    if (t->deadline <= 0) t->deadline = t->enqueued_at + s->cfg.request_timeout;
    if (atomic_load(&s->draining)) {
        srv_reply_error(r, 503, "shutting_down", "the server is shutting down");
        return -2;
    }
    if (srv_queue_push(&s->queue, t) != 0) {
        srv_reply_error(r, 503, "overloaded", "the request queue is full (%d); retry later",
                        s->cfg.max_queue);
        r->retry_after = 1;
        return -2;
    }
    return 0;
}

int srv_run_task(srv_server *s, srv_task *t, bool (*alive)(void *), void *arg, srv_reply *r) {
    if (srv_submit(s, t, r) != 0) return -2;
    int why = wait_task(s, t, alive, arg);
    if (why == 1) {
        srv_reply_error(r, 499, "client_closed", "the client went away");
    } else if (why == 2) {
        srv_reply_error(r, 504, "timeout", "the request did not finish within %d s",
                        s->cfg.request_timeout);
    } else if (t->status != 200) {
        srv_reply_error(r, t->status, t->error_type ? t->error_type : "error", "%s", t->error);
        if (t->status == 503) r->retry_after = 1;
    }
    return why == 0 && t->status == 200 ? 0 : -1;
}

/* A failure of the model itself (it cannot load, changed under the pass, the engine failed), not
 * of the request or of the server's capacity. */
static bool model_failure(const srv_task *t) {
    static const char *const types[] = {"model_unavailable", "model_changed", "engine_error",
                                        "out_of_memory"};
    for (size_t i = 0; t->error_type && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(t->error_type, types[i]) == 0) return true;
    return false;
}

/* The Python server answers a model failure on /compress with 200 {success: false, error} and
 * the counts at zero (ClaraModel.compress catches it); ours keeps error_type beside. */
static void compress_failure_reply(const srv_task *t, double latency_ms, srv_reply *r) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "success", 0);
    cJSON_AddNullToObject(j, "answer");
    cJSON_AddStringToObject(j, "error", t->error);
    cJSON_AddStringToObject(j, "error_type", t->error_type);
    cJSON_AddNumberToObject(j, "original_tokens", 0);
    cJSON_AddNumberToObject(j, "compressed_tokens", 0);
    cJSON_AddNumberToObject(j, "compression_ratio", 0);
    cJSON_AddNumberToObject(j, "latency_ms", round_to(latency_ms, 0.1));
    free(r->body);
    r->body = NULL;
    r->retry_after = 0;
    srv_reply_json(r, 200, j);
    snprintf(r->note, sizeof r->note, "%.*s", (int)sizeof r->note - 1, t->error);
}

/* Parses and validates the body into t: /compress first as FastAPI and pydantic would. */
static int parse_model_request(srv_server *s, srv_task *t, const char *body, size_t len, double t0,
                               bool (*alive)(void *), void *arg, srv_reply *r) {
    if (t->ep != SRV_EP_COMPRESS) return parse_task(s, t, body, len, t0, alive, arg, r);
    if (srv_compress_precheck(body, len, r) != 0) return -1;
    if (srv_parse_body(s, body, len, t0, alive, arg, &t->root, r) != 0) return -1;
    if (srv_compress_validate(t->root, r) != 0) return -1;
    return build_task(s, t, r) == 0 ? 0 : -1;
}

static void run_model_request(srv_server *s, srv_endpoint ep, const char *body, size_t len,
                              bool (*alive)(void *), void *arg, srv_reply *r) {
    double t0 = srv_mono();
    srv_task *t = srv_task_new(ep);
    if (!t) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return;
    }
    t->deadline = t0 + s->cfg.request_timeout;
    if (parse_model_request(s, t, body, len, t0, alive, arg, r) != 0) {
        finish_task(t, len);
        return;
    }
    /* "stream": true on /v1/answer and /v1/retrieve: Server-Sent Events (stream.c) */
    bool can_stream = ep == SRV_EP_V1_ANSWER || ep == SRV_EP_V1_RETRIEVE;
    int stream = can_stream ? srv_stream_wanted(t->root, r) : 0;
    if (stream < 0) {
        finish_task(t, len);
        return;
    }
    int rc = stream ? srv_stream_ours(s, t, t0, alive, arg, success_reply, r)
                    : srv_run_task(s, t, alive, arg, r);
    double ms = (srv_mono() - t0) * 1e3;
    /* refused before queueing (shutting down, queue full) is not counted as served or failed;
     * a stream that began is counted when it ends */
    if (rc != -2 && !(stream && rc == 0)) srv_count_request(s, rc == 0, ms);
    if (rc == 0 && !stream)
        success_reply(s, t, ms, r);
    else if (ep == SRV_EP_COMPRESS && r->status != 499 && r->status != 504 && model_failure(t))
        compress_failure_reply(t, ms,
                               r); /* (not left nor timed out: the task's fields are final) */
    finish_task(t, len);
}

/* ---- endpoints that never touch the model ------------------------------------------------------
 */

static void health(srv_server *s, srv_reply *r) {
    cJSON *j = cJSON_CreateObject();
    if (atomic_load(&s->downloading)) { /* the model is being pulled on first start */
        cJSON_AddStringToObject(j, "status", "downloading");
        cJSON_AddBoolToObject(j, "model_loaded", false);
        srv_pull_json(s, cJSON_AddObjectToObject(j, "progress"));
        r->status = 503;
        r->content_type = "application/json";
        r->body = print_json(j);
        return;
    }
    pthread_mutex_lock(&s->state.mu);
    bool failed = s->state.load_failed, loaded = s->state.loaded;
    pthread_mutex_unlock(&s->state.mu);
    bool draining = atomic_load(&s->draining);
    cJSON_AddStringToObject(j, "status", draining ? "shutting_down" : failed ? "error" : "ok");
    cJSON_AddBoolToObject(j, "model_loaded", loaded);
    /* /health needs no key: it says that loading failed, not why (the reason names files; it
     * is in /status and the log) */
    if (failed)
        cJSON_AddStringToObject(j, "error", "the model cannot be loaded (details in /status)");
    r->status = draining || failed ? 503 : 200;
    r->content_type = "application/json";
    r->body = print_json(j);
}

/* An ISO-8601 UTC time as the Python server writes it, or null for none. */
static cJSON *time_or_null(double t) {
    char iso[48];
    if (t <= 0) return cJSON_CreateNull();
    srv_iso8601(t, iso, sizeof iso);
    return cJSON_CreateString(iso);
}

/* The Python server's subfolder names the checkpoint's compression: compression-16 keeps 16
 * memory vectors of a 256-token document, compression-128 keeps 2. */
static cJSON *subfolder(const srv_model_info *m) {
    char name[48] = "";
    if (m->n_mem && m->doc_max_length % m->n_mem == 0)
        snprintf(name, sizeof name, "compression-%u", m->doc_max_length / m->n_mem);
    return cJSON_CreateString(name);
}

static cJSON *string_if(bool cond, const char *s) {
    return cond ? cJSON_CreateString(s) : cJSON_CreateNull();
}

/* When the model goes: will_unload_at and seconds_until_unload (whole seconds), null when it is
 * not loaded or never unloads. */
/* The CPU the kernels run on and the kind their parameters were chosen for (clara.h). */
static void add_cpu(cJSON *j) {
    clara_backend_info b;
    clara_backend_describe(&b);
    cJSON *c = cJSON_AddObjectToObject(j, "cpu");
    cJSON_AddStringToObject(c, "name", b.device);
    cJSON_AddStringToObject(c, "vendor", b.vendor);
    cJSON_AddNumberToObject(c, "family", b.family);
    cJSON_AddNumberToObject(c, "model", b.model);
    cJSON_AddStringToObject(c, "kind", b.kind);
    cJSON_AddBoolToObject(c, "amx", b.amx);
}

/* The GPU the layers run on (null on the CPU): its memory, the layers placed, the bytes used;
 * backend_note says why the layers run on the CPU when they do. */
static void add_gpu(cJSON *j, const clara_ctx_backend_info *b, bool gpu, int asked) {
    if (b->note[0]) cJSON_AddStringToObject(j, "backend_note", b->note);
    if (!gpu) {
        cJSON_AddNullToObject(j, "gpu");
        return;
    }
    cJSON *g = cJSON_AddObjectToObject(j, "gpu");
    cJSON_AddStringToObject(g, "name", b->device);
    cJSON_AddStringToObject(g, "type", b->device_type);
    cJSON_AddNumberToObject(g, "memory_bytes", (double)b->device_memory);
    cJSON_AddNumberToObject(g, "layers", b->gpu_layers);
    cJSON_AddNumberToObject(g, "n_layer", b->n_layer);
    cJSON_AddNumberToObject(g, "layers_asked", asked);
    cJSON_AddNumberToObject(g, "bytes_used", (double)b->bytes_used);
}

static void add_unload(cJSON *j, const srv_state *st, double now) {
    bool will = st->loaded && st->unload_at >= 0;
    cJSON_AddItemToObject(j, "will_unload_at", time_or_null(will ? st->unload_at : 0));
    cJSON_AddItemToObject(j, "seconds_until_unload",
                          will ? cJSON_CreateNumber(floor(fmax(0, st->unload_at - now)))
                               : cJSON_CreateNull());
}

/* The memory store: where, and its cache's figures (null without a store). */
static void add_store_status(srv_server *s, cJSON *j) {
    pthread_mutex_lock(&s->store_mu);
    store *st = s->store;
    pthread_mutex_unlock(&s->store_mu);
    if (!s->cfg.db) {
        cJSON_AddNullToObject(j, "store");
        return;
    }
    cJSON *o = cJSON_AddObjectToObject(j, "store");
    cJSON_AddBoolToObject(o, "connected", st != NULL);
    if (!st) return;
    cJSON_AddStringToObject(o, "backend", store_backend_name(st));
    cJSON_AddStringToObject(o, "location", store_where(st));
    cJSON_AddStringToObject(o, "vector_dtype", s->cfg.vectors_f32 ? "f32" : "f16");
    store_cache_stats cs;
    store_cache_stats_get(st, &cs);
    cJSON *c = cJSON_AddObjectToObject(o, "cache");
    cJSON_AddNumberToObject(c, "bytes", (double)cs.bytes);
    cJSON_AddNumberToObject(c, "limit_bytes", (double)cs.limit);
    cJSON_AddNumberToObject(c, "entries", (double)cs.entries);
    cJSON_AddNumberToObject(c, "hits", (double)cs.hits);
    cJSON_AddNumberToObject(c, "misses", (double)cs.misses);
}

static void status(srv_server *s, srv_reply *r) {
    srv_state st;
    pthread_mutex_lock(&s->state.mu);
    memcpy(&st, &s->state, sizeof st); /* a snapshot; its mutex copy is never used */
    int keep_alive = st.keep_alive;
    pthread_mutex_unlock(&s->state.mu);
    double now = srv_now();
    cJSON *j = cJSON_CreateObject();
    /* while a pull runs, cfg.model and info are not the model's yet */
    bool downloading = atomic_load(&s->downloading);
    if (downloading) {
        cJSON_AddStringToObject(j, "model", s->cfg.pull_name);
        cJSON_AddStringToObject(j, "model_name", s->cfg.pull_name);
        cJSON_AddNullToObject(j, "subfolder");
    } else {
        cJSON_AddStringToObject(j, "model", s->cfg.model);
        cJSON_AddStringToObject(j, "model_name", s->info.name);
        cJSON_AddItemToObject(j, "subfolder", subfolder(&s->info));
    }
    if (s->cfg.pull_name)
        srv_pull_json(s, cJSON_AddObjectToObject(j, "download"));
    else
        cJSON_AddNullToObject(j, "download");
    cJSON_AddBoolToObject(j, "demo", s->cfg.demo);
    /* what the startup probe found, known whether or not the model is loaded now */
    cJSON_AddStringToObject(j, "model_type", s->info.type);
    cJSON_AddBoolToObject(j, "can_retrieve", s->info.can_retrieve);
    cJSON_AddBoolToObject(j, "initialized", st.loaded);
    cJSON_AddBoolToObject(j, "loading", st.loading);
    if (st.load_failed) cJSON_AddStringToObject(j, "load_error", st.load_error);
    /* what runs the model, null while none does (the Python server's backend info) */
    bool gpu = st.loaded && strcmp(st.backend.backend, "vulkan") == 0;
    cJSON_AddItemToObject(j, "backend", string_if(st.loaded, st.backend.backend));
    cJSON_AddItemToObject(j, "device", string_if(st.loaded, gpu ? st.backend.device : "cpu"));
    add_gpu(j, &st.backend, gpu, s->cfg.gpu_layers);
    cJSON_AddItemToObject(j, "dtype", string_if(st.loaded, s->info.type));
    cJSON_AddItemToObject(j, "load_time_seconds",
                          st.loaded ? cJSON_CreateNumber(round_to(st.load_time_s, 0.001))
                                    : cJSON_CreateNull());
    cJSON_AddNumberToObject(j, "requests_served", (double)st.requests_served);
    cJSON_AddNumberToObject(j, "errors", (double)st.errors);
    cJSON_AddNumberToObject(
        j, "avg_latency_ms",
        st.requests_served ? round_to(st.latency_sum_ms / (double)st.requests_served, 0.01) : 0);
    cJSON_AddNumberToObject(j, "uptime_seconds", floor(now - s->started_at));
    cJSON_AddNumberToObject(j, "keep_alive_seconds", keep_alive);
    cJSON_AddItemToObject(j, "last_activity", time_or_null(st.last_activity));
    add_unload(j, &st, now);
    cJSON_AddNumberToObject(j, "threads",
                            s->cfg.threads > 0 ? s->cfg.threads : clara_physical_cores());
    cJSON_AddStringToObject(j, "isa", srv_isa());
    add_cpu(j);
    cJSON *mem = cJSON_AddObjectToObject(j, "memory");
    cJSON_AddNumberToObject(mem, "rss_bytes", (double)srv_rss_bytes());
    /* everything mapped when loaded: in two-file mode the base and the add-on */
    cJSON_AddNumberToObject(mem, "model_file_bytes",
                            downloading ? 0
                                        : (double)(s->info.file_bytes + s->info.base_file_bytes));
    if (!downloading && s->cfg.base)
        cJSON_AddNumberToObject(mem, "base_file_bytes", (double)s->info.base_file_bytes);
    /* q4_0 / q8_0 weights copied at load into the CPU kernels' order (their file pages dropped) */
    cJSON_AddNumberToObject(mem, "cpu_repacked_bytes", (double)st.backend.cpu_repacked);
    cJSON_AddNumberToObject(j, "queue_depth", srv_queue_depth(&s->queue));
    add_store_status(s, j);
    srv_doccache_status(j, s->cfg.doc_cache);
    cJSON_AddNumberToObject(j, "model_loads", (double)st.loads);
    cJSON_AddNumberToObject(j, "model_unloads", (double)st.unloads);
    cJSON_AddStringToObject(j, "version", CLARA_VERSION);
    r->status = 200;
    r->content_type = "application/json";
    r->body = print_json(j);
}

void srv_reply_json(srv_reply *r, int status, cJSON *j) {
    r->status = status;
    r->content_type = "application/json";
    r->body = print_json(j);
    if (!r->body) srv_reply_error(r, 500, "out_of_memory", "out of memory");
}

/* /openapi.json, its readable page /docs, and / which leads there (as FastAPI's root did). */
static void api_description(const char *path, srv_reply *r) {
    r->status = 200;
    if (strcmp(path, "/") == 0) {
        r->status = 307;
        r->location = "/docs";
        r->body = strdup("");
    } else if (strcmp(path, "/docs") == 0) {
        r->content_type = "text/html; charset=utf-8";
        r->page = SRV_PAGE_DOCS;
        r->body = srv_docs_html();
    } else {
        r->body = strdup(srv_openapi_json);
    }
}

void srv_route(srv_server *s, srv_endpoint ep, const srv_target *target, const char *body,
               size_t len, bool (*alive)(void *), void *alive_arg, srv_reply *r) {
    r->content_type = "application/json";
    if (atomic_load(&s->downloading) && ep != SRV_EP_HEALTH && ep != SRV_EP_STATUS &&
        ep != SRV_EP_METRICS && ep != SRV_EP_OPENAPI) {
        srv_reply_error(r, 503, "model_downloading",
                        "the model %s is being downloaded; GET /health shows the progress",
                        s->cfg.pull_name);
        return;
    }
    switch (ep) {
    case SRV_EP_HEALTH:
        health(s, r);
        break;
    case SRV_EP_STATUS:
        status(s, r);
        break;
    case SRV_EP_METRICS:
        r->status = 200;
        r->content_type = "text/plain; version=0.0.4; charset=utf-8";
        r->body = srv_metrics_render(&s->queue, &s->state);
        break;
    case SRV_EP_OPENAPI:
        api_description(target->path, r);
        break;
    case SRV_EP_UI:
        srv_ui_serve(target->path, target->if_none_match, r);
        break;
    case SRV_EP_COMPRESS:
    case SRV_EP_V1_COMPRESS:
    case SRV_EP_V1_ANSWER:
    case SRV_EP_V1_RETRIEVE:
        run_model_request(s, ep, body, len, alive, alive_arg, r);
        break;
    case SRV_EP_OAI_MODELS:
    case SRV_EP_OAI_CHAT:
    case SRV_EP_OAI_COMPLETIONS:
        srv_openai_route(s, ep, body, len, alive, alive_arg, r);
        break;
    default:
        srv_store_route(s, ep, target, body, len, alive, alive_arg, r);
        break;
    }
    if (!r->body && !r->sse) srv_reply_error(r, 500, "out_of_memory", "out of memory");
}
