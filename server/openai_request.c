/* openai_request.c - reading an OpenAI chat or completion request into a task: the messages
 * (system text, earlier turns, the question), the sampling and length options, stop sequences,
 * and the context (documents through the document cache, a collection of the memory store, or
 * none). Validation errors are 400 invalid_request_error naming the field, as OpenAI's are. */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doccache.h"
#include "memory.h"
#include "openai.h"
#include "stream.h"

#define OAI_MAX_MESSAGES   256
#define OAI_MAX_CHAT_BYTES (64u << 10) /* all messages together */

static cJSON *field(cJSON *o, const char *key) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNull(v) ? NULL : v;
}

/* A number field in [lo, hi] (integer if asked). 1 = set, 0 = absent or null, -1 = invalid. */
static int get_number(cJSON *root, const char *key, double lo, double hi, bool integer, double *out,
                      srv_reply *r) {
    cJSON *v = field(root, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) ||
        (integer && v->valuedouble != floor(v->valuedouble)) || v->valuedouble < lo ||
        v->valuedouble > hi) {
        if (integer && lo == hi)
            srv_openai_error(r, 400, key, "invalid_value", "'%s' can only be %.0f here", key, lo);
        else if (integer) /* the bounds in full: %g would print 2^53 as 9.0072e+15 */
            srv_openai_error(r, 400, key, "invalid_value",
                             "'%s' must be an integer from %.0f to %.0f", key, lo, hi);
        else
            srv_openai_error(r, 400, key, "invalid_value", "'%s' must be a number from %g to %g",
                             key, lo, hi);
        return -1;
    }
    *out = v->valuedouble;
    return 1;
}

static int get_bool(cJSON *root, const char *key, bool *out, srv_reply *r) {
    cJSON *v = field(root, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) {
        srv_openai_error(r, 400, key, "invalid_type", "'%s' must be true or false", key);
        return -1;
    }
    *out = cJSON_IsTrue(v);
    return 1;
}

/* ---- messages ------------------------------------------------------------------------------- */

/* Joins the text parts of an array content into one string that replaces it in msg (the tree
 * owns it, so the task's texts all live in its root). */
static cJSON *join_parts(cJSON *msg, cJSON *parts, int i, srv_reply *r) {
    size_t total = 0;
    for (cJSON *p = parts->child; p; p = p->next) {
        cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
        cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsObject(p) || !cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 ||
            !cJSON_IsString(text)) {
            srv_openai_error(r, 400, "messages", "invalid_content",
                             "messages[%d].content: only parts {\"type\": \"text\", \"text\": "
                             "...} are supported",
                             i);
            return NULL;
        }
        total += strlen(text->valuestring) + 1;
    }
    char *joined = malloc(total + 1), *at = joined;
    if (!joined) return NULL;
    for (cJSON *p = parts->child; p; p = p->next) {
        const char *text = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        if (at != joined) *at++ = '\n'; /* parts are lines of one message */
        size_t n = strlen(text);
        memcpy(at, text, n);
        at += n;
    }
    *at = '\0';
    cJSON *s = cJSON_CreateString(joined);
    free(joined);
    if (s) cJSON_ReplaceItemInObjectCaseSensitive(msg, "content", s);
    return s;
}

/* A message's text (a string, or text parts joined by newlines). */
static int message_text(cJSON *msg, int i, clara_text *out, srv_reply *r) {
    cJSON *c = cJSON_GetObjectItemCaseSensitive(msg, "content");
    if (cJSON_IsArray(c)) {
        c = join_parts(msg, c, i, r);
        if (!c && !r->body) srv_openai_error(r, 500, NULL, "out_of_memory", "out of memory");
        if (!c) return -1;
    }
    if (!cJSON_IsString(c)) {
        srv_openai_error(r, 400, "messages", "invalid_content",
                         "messages[%d].content must be a string or an array of text parts", i);
        return -1;
    }
    *out = (clara_text){c->valuestring, strlen(c->valuestring)};
    return 0;
}

static const char *message_role(cJSON *msg, int i, srv_reply *r) {
    cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
    if (!cJSON_IsObject(msg) || !cJSON_IsString(role)) {
        srv_openai_error(r, 400, "messages", "invalid_message",
                         "messages[%d] must be an object with a string 'role'", i);
        return NULL;
    }
    const char *s = role->valuestring;
    if (strcmp(s, "system") == 0 || strcmp(s, "developer") == 0) return "system";
    if (strcmp(s, "user") == 0 || strcmp(s, "assistant") == 0) return s;
    if (strcmp(s, "tool") == 0 || strcmp(s, "function") == 0)
        srv_openai_error(r, 400, "messages", "unsupported_role",
                         "messages[%d]: role '%s' is not supported (this server has no tool "
                         "calling)",
                         i, s);
    else
        srv_openai_error(r, 400, "messages", "invalid_role",
                         "messages[%d].role must be system, developer, user or assistant", i);
    return NULL;
}

/* Leading system messages become the system text (several are joined by a blank line). */
static int system_text(srv_task *t, cJSON *a, int n_system, srv_reply *r) {
    if (n_system == 0) return 0;
    clara_text parts[OAI_MAX_MESSAGES];
    size_t total = 0;
    int i = 0;
    for (cJSON *m = a->child; i < n_system; m = m->next, i++) {
        if (message_text(m, i, &parts[i], r) != 0) return -1;
        total += parts[i].len + 2;
    }
    if (n_system == 1) {
        t->system = parts[0].text;
        t->system_len = parts[0].len;
        return 0;
    }
    char *joined = malloc(total + 1);
    size_t at = 0;
    for (i = 0; joined && i < n_system; i++) {
        if (i) memcpy(joined + at, "\n\n", 2), at += 2;
        memcpy(joined + at, parts[i].text, parts[i].len);
        at += parts[i].len;
    }
    cJSON *s = joined ? (joined[at] = '\0', cJSON_CreateString(joined)) : NULL;
    free(joined);
    if (!s) {
        srv_openai_error(r, 500, NULL, "out_of_memory", "out of memory");
        return -1;
    }
    cJSON_ReplaceItemInObjectCaseSensitive(a->child, "content", s);
    t->system = s->valuestring;
    t->system_len = at;
    return 0;
}

/* The conversation after the system messages: user, assistant, ..., user, as Mistral's chat
 * template requires; the last user message is the question. */
static int conversation(srv_task *t, cJSON *a, int n, int n_system, srv_reply *r) {
    int n_turns = n - n_system - 1;
    if (n_turns < 0) {
        srv_openai_error(r, 400, "messages", "invalid_messages",
                         "'messages' needs a user message after the system messages");
        return -1;
    }
    t->turns = n_turns ? malloc((size_t)n_turns * sizeof *t->turns) : NULL;
    if (n_turns && !t->turns) {
        srv_openai_error(r, 500, NULL, "out_of_memory", "out of memory");
        return -1;
    }
    size_t total = t->system_len;
    int i = 0;
    for (cJSON *m = a->child; m; m = m->next, i++) {
        if (i < n_system) continue;
        const char *role = message_role(m, i, r);
        if (!role) return -1;
        const char *want = (i - n_system) % 2 ? "assistant" : "user";
        /* the last message is the question: a user's */
        if (strcmp(role, want) != 0 || (i == n - 1 && strcmp(role, "user") != 0)) {
            srv_openai_error(r, 400, "messages", "invalid_messages",
                             strcmp(role, "system") == 0
                                 ? "messages[%d]: system messages must come before the "
                                   "conversation"
                                 : "messages[%d]: roles must alternate user/assistant/user/... "
                                   "and end with a user message (Mistral's chat template)",
                             i);
            return -1;
        }
        clara_text text;
        if (message_text(m, i, &text, r) != 0) return -1;
        total += text.len;
        if (i - n_system < n_turns) {
            t->turns[i - n_system] = text;
        } else {
            t->query = text.text;
            t->query_len = text.len;
        }
    }
    t->n_turns = (size_t)n_turns;
    if (total > OAI_MAX_CHAT_BYTES) {
        srv_openai_error(r, 400, "messages", "too_long",
                         "the messages hold %zu bytes of text; the limit is %u", total,
                         OAI_MAX_CHAT_BYTES);
        return -1;
    }
    return 0;
}

static int get_messages(srv_task *t, srv_reply *r) {
    cJSON *a = cJSON_GetObjectItemCaseSensitive(t->root, "messages");
    int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : -1;
    if (n < 1 || n > OAI_MAX_MESSAGES) {
        srv_openai_error(r, 400, "messages", a ? "invalid_value" : "missing_required_parameter",
                         "'messages' must be an array of 1 to %d messages", OAI_MAX_MESSAGES);
        return -1;
    }
    int n_system = 0;
    for (cJSON *m = a->child; m; m = m->next) {
        const char *role = message_role(m, n_system, r);
        if (!role) return -1;
        if (strcmp(role, "system") != 0) break;
        n_system++;
    }
    return system_text(t, a, n_system, r) || conversation(t, a, n, n_system, r) ? -1 : 0;
}

/* /v1/completions: "prompt" (a string, or an array of one string) is the question. */
static int get_prompt(srv_task *t, srv_reply *r) {
    cJSON *p = cJSON_GetObjectItemCaseSensitive(t->root, "prompt");
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1) p = p->child;
    if (!cJSON_IsString(p)) {
        srv_openai_error(r, 400, "prompt", p ? "invalid_value" : "missing_required_parameter",
                         "'prompt' must be a string (or an array of one string)");
        return -1;
    }
    t->query = p->valuestring;
    t->query_len = strlen(p->valuestring);
    return 0;
}

static int check_question(const srv_task *t, bool chat, srv_reply *r) {
    if (t->query_len == 0 || t->query_len > SRV_MAX_QUERY_BYTES) {
        srv_openai_error(r, 400, chat ? "messages" : "prompt", "invalid_value",
                         "the %s must be 1 to %u bytes long (got %zu)",
                         chat ? "last user message" : "prompt", SRV_MAX_QUERY_BYTES, t->query_len);
        return -1;
    }
    return 0;
}

/* ---- options -------------------------------------------------------------------------------- */

static int get_stops(srv_server *s, srv_task *t, srv_reply *r) {
    cJSON *v = field(t->root, "stop");
    if (srv_stream_attach(s, t) != 0) {
        srv_openai_error(r, 500, NULL, "out_of_memory", "out of memory");
        return -1;
    }
    if (!v) return 0;
    int n = cJSON_IsString(v) ? 1 : cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
    cJSON *e = cJSON_IsString(v) ? v : cJSON_IsArray(v) ? v->child : NULL;
    if (n < 0 || n > SRV_STREAM_MAX_STOPS) {
        srv_openai_error(r, 400, "stop", "invalid_value",
                         "'stop' must be a string or an array of at most %d strings",
                         SRV_STREAM_MAX_STOPS);
        return -1;
    }
    for (; e; e = cJSON_IsArray(v) ? e->next : NULL) {
        size_t len = cJSON_IsString(e) ? strlen(e->valuestring) : 0;
        if (!cJSON_IsString(e) || len > SRV_STREAM_MAX_STOP_BYTES) {
            srv_openai_error(r, 400, "stop", "invalid_value",
                             "each stop sequence must be a string of at most %d bytes",
                             SRV_STREAM_MAX_STOP_BYTES);
            return -1;
        }
        /* an empty stop sequence would end every answer before it began: it means none */
        if (len && srv_stream_add_stop(t->stream, e->valuestring, len) != 0) {
            srv_openai_error(r, 500, NULL, "out_of_memory", "out of memory");
            return -1;
        }
    }
    return 0;
}

/* A seed for a sampled request that gave none: differs between requests (reported back). */
static uint64_t fresh_seed(void) {
    static atomic_uint_fast64_t counter;
    uint64_t x = (uint64_t)(srv_now() * 1e6) ^ (atomic_fetch_add(&counter, 1) << 40);
    x += 0x9E3779B97F4A7C15ull; /* splitmix64's finaliser */
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return (x ^ (x >> 31)) & 0xffffffffull; /* short enough to read and retype */
}

static int get_sampling(srv_task *t, srv_reply *r) {
    double v;
    int rc;
    if ((rc = get_number(t->root, "temperature", 0, 2, false, &v, r)) < 0) return -1;
    t->temperature = rc ? (float)v : 0.0f;
    if ((rc = get_number(t->root, "top_p", 0, 1, false, &v, r)) < 0) return -1;
    if (rc) t->top_p = v > 0 ? (float)v : FLT_MIN; /* 0: the most likely id alone */
    if ((rc = get_number(t->root, "top_k", 0, 1 << 20, true, &v, r)) < 0) return -1;
    t->sample_top_k = rc ? (uint32_t)v : 0;
    /* integers a double holds exactly; negative ones as their two's complement */
    if ((rc = get_number(t->root, "seed", -9007199254740992.0, 9007199254740992.0, true, &v, r)) <
        0)
        return -1;
    t->seed = rc ? (uint64_t)(int64_t)v : fresh_seed();
    return 0;
}

static int get_lengths(srv_server *s, srv_task *t, srv_reply *r) {
    double v;
    int rc = get_number(t->root, "max_completion_tokens", 1, SRV_MAX_NEW_TOKENS_LIMIT, true, &v, r);
    if (rc == 0) rc = get_number(t->root, "max_tokens", 1, SRV_MAX_NEW_TOKENS_LIMIT, true, &v, r);
    if (rc < 0) return -1;
    t->max_new_tokens = rc ? (uint32_t)v : (uint32_t)s->cfg.max_new_tokens;
    if ((rc = get_number(t->root, "n", 1, 1, true, &v, r)) < 0) return -1;
    return get_bool(t->root, "ignore_eos", &t->ignore_eos, r) < 0 ? -1 : 0;
}

static int get_streaming(srv_task *t, oai_req *q, srv_reply *r) {
    if (get_bool(t->root, "stream", &q->stream, r) < 0) return -1;
    cJSON *o = field(t->root, "stream_options");
    if (!o) return 0;
    if (!cJSON_IsObject(o)) {
        srv_openai_error(r, 400, "stream_options", "invalid_type",
                         "'stream_options' must be an object");
        return -1;
    }
    return get_bool(o, "include_usage", &q->include_usage, r) < 0 ? -1 : 0;
}

int srv_openai_parse(srv_server *s, srv_task *t, oai_req *q, srv_reply *r) {
    cJSON *model = field(t->root, "model");
    if (model && !cJSON_IsString(model)) {
        srv_openai_error(r, 400, "model", "invalid_type", "'model' must be a string");
        return -1;
    }
    if ((q->chat ? get_messages(t, r) : get_prompt(t, r)) != 0 || check_question(t, q->chat, r))
        return -1;
    if (get_sampling(t, r) || get_lengths(s, t, r) || get_streaming(t, q, r)) return -1;
    return get_stops(s, t, r);
}

/* ---- context -------------------------------------------------------------------------------- */

static void current_fingerprint(srv_server *s, char fp[CLARA_FINGERPRINT_LEN + 1]) {
    pthread_mutex_lock(&s->state.mu);
    memcpy(fp, s->state.fingerprint, CLARA_FINGERPRINT_LEN + 1);
    pthread_mutex_unlock(&s->state.mu);
}

/* Compresses the documents that missed the cache (miss[i]: index into the request's list) in one
 * task, whose root becomes the request's "documents" array, and caches their vectors. */
static int compress_misses(srv_server *s, srv_task *t, const srv_doc_key *keys, const size_t *miss,
                           size_t m, float *vectors, double *ms, bool (*alive)(void *), void *arg,
                           srv_reply *r) {
    size_t per = (size_t)s->info.n_mem * s->info.n_embd;
    srv_task *c = srv_task_new(SRV_EP_MEM_ADD);
    if (!c || !(c->docs = malloc(m * sizeof *c->docs))) {
        if (c) srv_task_release(c);
        srv_openai_error(r, 500, NULL, "out_of_memory", "out of memory");
        return -1;
    }
    /* the texts stay with the compression task, which may outlive this handler */
    c->root = cJSON_DetachItemFromObjectCaseSensitive(t->root, "documents");
    for (size_t j = 0; j < m; j++) {
        cJSON *e = cJSON_GetArrayItem(c->root, (int)miss[j]);
        c->docs[j] = (clara_text){e->valuestring, strlen(e->valuestring)};
    }
    c->n_docs = m;
    c->deadline = t->deadline; /* the request's */
    memcpy(c->expect_fingerprint, keys[0].fingerprint, sizeof c->expect_fingerprint);
    int rc = srv_run_task(s, c, alive, arg, r);
    *ms = c->compress_ms;
    for (size_t j = 0; rc == 0 && j < m; j++) {
        memcpy(vectors + miss[j] * per, c->out_vectors + j * per, per * sizeof(float));
        srv_doccache_put(&keys[miss[j]], vectors + miss[j] * per, per, s->cfg.doc_cache);
    }
    srv_task_release(c);
    return rc;
}

/* Documents: those in the cache are not compressed again; the task gets every document's
 * vectors. Without a cache the documents go to the engine as text. 0, -1 with *r filled, -2 for
 * an invalid document (or the compression refused before queueing). */
static int documents(srv_server *s, srv_task *t, oai_req *q, cJSON *a, bool (*alive)(void *),
                     void *arg, srv_reply *r) {
    size_t n = (size_t)cJSON_GetArraySize(a), i = 0;
    clara_text *docs = calloc(n, sizeof *docs);
    for (cJSON *e = a->child; docs && e; e = e->next, i++) {
        size_t len = cJSON_IsString(e) ? strlen(e->valuestring) : SIZE_MAX;
        if (len > SRV_MAX_MEMORY_BYTES) {
            free(docs);
            srv_openai_error(r, 400, "documents", "invalid_value",
                             "documents[%zu] must be a string of at most %u bytes", i,
                             SRV_MAX_MEMORY_BYTES);
            return -2;
        }
        docs[i] = (clara_text){e->valuestring, len};
    }
    if (!docs) {
        srv_openai_error(r, 500, NULL, "out_of_memory", "out of memory");
        return -1;
    }
    q->n_docs = n;
    if (s->cfg.doc_cache == 0) {
        t->docs = docs;
        t->n_docs = n;
        return 0;
    }
    size_t per = (size_t)s->info.n_mem * s->info.n_embd, m = 0;
    char fp[CLARA_FINGERPRINT_LEN + 1];
    current_fingerprint(s, fp);
    srv_doc_key *keys = malloc(n * sizeof *keys);
    size_t *miss = malloc(n * sizeof *miss);
    t->in_vectors = malloc(n * per * sizeof(float));
    if (!keys || !miss || !t->in_vectors) {
        free(docs), free(keys), free(miss);
        srv_openai_error(r, 500, NULL, "out_of_memory", "out of memory");
        return -1;
    }
    for (i = 0; i < n; i++) {
        srv_doc_key_make(&keys[i], docs[i].text, docs[i].len, fp);
        if (!srv_doccache_get(&keys[i], t->in_vectors + i * per, per)) miss[m++] = i;
    }
    free(docs);
    int rc =
        m ? compress_misses(s, t, keys, miss, m, t->in_vectors, &q->docs_compress_ms, alive, arg, r)
          : 0;
    free(keys);
    free(miss);
    t->n_docs = n;
    q->n_cached = n - m;
    memcpy(t->expect_fingerprint, fp, sizeof fp); /* the vectors are this model's */
    return rc;
}

/* A collection: the memories POST /v1/collections/{c}/query would answer the question from. */
static int collection(srv_server *s, srv_task *t, oai_req *q, bool (*alive)(void *), void *arg,
                      srv_reply *r) {
    store *st = srv_mem_store(s, r);
    if (!st) return -1;
    srv_mem_selector sel_q = {q->collection, t->query, t->query_len, 0, NULL, t->deadline};
    store_selection sel;
    char fp[CLARA_FINGERPRINT_LEN + 1];
    if (srv_mem_select(s, st, &sel_q, alive, arg, fp, &sel, q->select_ms, r) != 0) return -1;
    t->in_vectors = sel.vectors; /* the task frees them */
    sel.vectors = NULL;
    t->n_docs = sel.n;
    memcpy(t->expect_fingerprint, fp, sizeof fp);
    q->memories = cJSON_CreateObject();
    if (q->memories) store_selection_add_json(q->memories, &sel);
    store_selection_free(&sel);
    return 0;
}

int srv_openai_context(srv_server *s, srv_task *t, oai_req *q, bool (*alive)(void *), void *arg,
                       srv_reply *r) {
    cJSON *docs = field(t->root, "documents");
    cJSON *coll = field(t->root, "collection");
    if (docs && (!cJSON_IsArray(docs) || cJSON_GetArraySize(docs) > SRV_MAX_MEMORIES)) {
        srv_openai_error(r, 400, "documents", "invalid_value",
                         "'documents' must be an array of at most %d strings", SRV_MAX_MEMORIES);
        return -2;
    }
    store_err err = {0};
    if (coll &&
        (!cJSON_IsString(coll) || store_check_name("collection name", coll->valuestring,
                                                   strlen(coll->valuestring), &err) != STORE_OK)) {
        srv_openai_error(r, 400, "collection", "invalid_value", "'collection': %s",
                         cJSON_IsString(coll) ? err.msg : "must be a string");
        return -2;
    }
    bool has_docs = docs && cJSON_GetArraySize(docs) > 0;
    if (has_docs && coll) {
        srv_openai_error(r, 400, "collection", "invalid_value",
                         "give either 'documents' or 'collection', not both");
        return -2;
    }
    if (has_docs) return documents(s, t, q, docs, alive, arg, r);
    if (coll) {
        q->collection = coll->valuestring;
        return collection(s, t, q, alive, arg, r);
    }
    t->chat = true; /* no context: the conversation alone */
    return 0;
}
