/* doccache.c - an LRU of document vectors, bounded by bytes: a hash table of chains for lookups
 * and a doubly linked list from most to least recently used. The vectors are kept as the engine
 * made them (f32), so an answer from cached vectors is the answer from compressing again. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "doccache.h"

#define N_BUCKETS 16384 /* a power of two; chains stay short up to ~100k entries */

typedef struct entry {
    srv_doc_key key;
    struct entry *chain; /* next in the bucket */
    struct entry *newer, *older;
    size_t n_floats;
    float v[];
} entry;

static struct {
    pthread_mutex_t mu;
    entry *buckets[N_BUCKETS];
    entry *newest, *oldest;
    size_t bytes, entries;
    uint64_t hits, misses, evictions;
} C = {.mu = PTHREAD_MUTEX_INITIALIZER};

void srv_doc_key_make(srv_doc_key *k, const char *text, size_t len, const char *fingerprint) {
    memset(k, 0, sizeof *k);
    clara_sha256(text, len, k->sha);
    memcpy(k->fingerprint, fingerprint, CLARA_FINGERPRINT_LEN);
}

static size_t entry_bytes(size_t n_floats) {
    return sizeof(entry) + n_floats * sizeof(float);
}

static entry **bucket_of(const srv_doc_key *k) {
    /* the digest is uniform: its first bytes are as good a hash as any */
    uint32_t h = (uint32_t)k->sha[0] | (uint32_t)k->sha[1] << 8 | (uint32_t)k->sha[2] << 16;
    return &C.buckets[h & (N_BUCKETS - 1)];
}

static bool same_key(const srv_doc_key *a, const srv_doc_key *b) {
    return memcmp(a->sha, b->sha, sizeof a->sha) == 0 &&
           strcmp(a->fingerprint, b->fingerprint) == 0;
}

static entry *find(const srv_doc_key *k) {
    for (entry *e = *bucket_of(k); e; e = e->chain)
        if (same_key(&e->key, k)) return e;
    return NULL;
}

static void unlink_lru(entry *e) {
    if (e->newer)
        e->newer->older = e->older;
    else
        C.newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        C.oldest = e->newer;
    e->newer = e->older = NULL;
}

static void push_newest(entry *e) {
    e->older = C.newest;
    e->newer = NULL;
    if (C.newest) C.newest->newer = e;
    C.newest = e;
    if (!C.oldest) C.oldest = e;
}

static void drop(entry *e) {
    entry **p = bucket_of(&e->key);
    while (*p != e) p = &(*p)->chain;
    *p = e->chain;
    unlink_lru(e);
    C.bytes -= entry_bytes(e->n_floats);
    C.entries--;
    free(e);
}

bool srv_doccache_get(const srv_doc_key *k, float *out, size_t n_floats) {
    pthread_mutex_lock(&C.mu);
    entry *e = find(k);
    bool hit = e && e->n_floats == n_floats;
    if (hit) {
        memcpy(out, e->v, n_floats * sizeof(float));
        unlink_lru(e);
        push_newest(e);
        C.hits++;
    } else {
        C.misses++;
    }
    pthread_mutex_unlock(&C.mu);
    return hit;
}

void srv_doccache_put(const srv_doc_key *k, const float *v, size_t n_floats, size_t limit) {
    size_t need = entry_bytes(n_floats);
    if (need > limit) return;
    entry *e = malloc(need);
    if (!e) return; /* a cache: the document is compressed again next time */
    memset(e, 0, sizeof *e);
    e->key = *k;
    e->n_floats = n_floats;
    memcpy(e->v, v, n_floats * sizeof(float));
    pthread_mutex_lock(&C.mu);
    entry *old = find(k); /* two requests compressed the same document at once */
    if (old) drop(old);
    while (C.oldest && C.bytes + need > limit) {
        drop(C.oldest);
        C.evictions++;
    }
    entry **b = bucket_of(k);
    e->chain = *b;
    *b = e;
    push_newest(e);
    C.bytes += need;
    C.entries++;
    pthread_mutex_unlock(&C.mu);
}

void srv_doccache_status(cJSON *j, size_t limit) {
    pthread_mutex_lock(&C.mu);
    cJSON *o = cJSON_AddObjectToObject(j, "document_cache");
    cJSON_AddNumberToObject(o, "bytes", (double)C.bytes);
    cJSON_AddNumberToObject(o, "limit_bytes", (double)limit);
    cJSON_AddNumberToObject(o, "entries", (double)C.entries);
    cJSON_AddNumberToObject(o, "hits", (double)C.hits);
    cJSON_AddNumberToObject(o, "misses", (double)C.misses);
    cJSON_AddNumberToObject(o, "evictions", (double)C.evictions);
    pthread_mutex_unlock(&C.mu);
}

void srv_doccache_clear(void) {
    pthread_mutex_lock(&C.mu);
    while (C.oldest) drop(C.oldest);
    pthread_mutex_unlock(&C.mu);
}
