/* cache.c - see cache.h. One mutex; a chained hash table over (kind, a, b) keys and one
 * least-recently-used list across both kinds of entry, evicted from the cold end until the bytes
 * fit the budget. An index still in use by a query (refs > 1) is unlinked but freed by its last
 * user. */
#include "store/cache.h"

#include <pthread.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>

enum { KIND_VECTORS = 1, KIND_INDEX = 2 };

typedef struct entry {
    int kind;
    int64_t a, b; /* vectors: chunk id, model id; index: collection id, 0 */
    size_t bytes;
    float *vectors;
    size_t n_floats;
    store_index *ix;
    struct entry *hnext, *prev, *next; /* hash chain; LRU list (head = most recent) */
} entry;

struct store_cache {
    pthread_mutex_t mu;
    entry **buckets;
    size_t n_buckets, n_entries, bytes, limit, hits, misses;
    entry *head, *tail;
};

static size_t hash_key(int kind, int64_t a, int64_t b) {
    uint64_t h = (uint64_t)a * 0x9e3779b97f4a7c15ull ^ (uint64_t)b * 0xc2b2ae3d27d4eb4full;
    h ^= (uint64_t)kind << 61;
    h ^= h >> 29;
    return (size_t)(h * 0xbf58476d1ce4e5b9ull >> 7);
}

store_cache *store_cache_new(size_t limit) {
    store_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->n_buckets = 1024;
    c->buckets = calloc(c->n_buckets, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->limit = limit;
    return c;
}

void store_index_free(store_index *ix) {
    if (!ix) return;
    for (size_t i = 0; i < ix->n_mems; i++) cJSON_Delete(ix->metas[i]);
    free(ix->chunk_ids);
    free(ix->mem_rowids);
    free(ix->codes);
    free(ix->has_vectors);
    free(ix->meta_rowids);
    free(ix->metas);
    bool big = ix->bytes >= (8u << 20);
    free(ix);
#ifdef __GLIBC__
    /* an index too big for the cache is read for each query and freed after it, often by another
     * worker thread's arena: without a trim each arena keeps its peak and the process grows to
     * (largest index) x (threads), whatever --vector-cache says */
    if (big) malloc_trim(0);
#else
    (void)big;
#endif
}

static void lru_unlink(store_cache *c, entry *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(store_cache *c, entry *e) {
    e->next = c->head;
    e->prev = NULL;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

/* A hit: e becomes the most recently used. */
static void touch(store_cache *c, entry *e) {
    lru_unlink(c, e);
    lru_push_front(c, e);
    c->hits++;
}

static entry **find_slot(store_cache *c, int kind, int64_t a, int64_t b) {
    entry **p = &c->buckets[hash_key(kind, a, b) & (c->n_buckets - 1)];
    while (*p && !((*p)->kind == kind && (*p)->a == a && (*p)->b == b)) p = &(*p)->hnext;
    return p;
}

/* Drops an entry from the table and the list; an index in use is freed by its last user. */
static void drop(store_cache *c, entry *e) {
    entry **p = find_slot(c, e->kind, e->a, e->b);
    if (*p == e) *p = e->hnext;
    lru_unlink(c, e);
    c->bytes -= e->bytes;
    c->n_entries--;
    if (e->ix && --e->ix->refs == 0) store_index_free(e->ix);
    free(e->vectors);
    free(e);
}

static void grow(store_cache *c) {
    size_t nb = c->n_buckets * 2;
    entry **b = calloc(nb, sizeof *b);
    if (!b) return; /* longer chains, still correct */
    for (size_t i = 0; i < c->n_buckets; i++)
        for (entry *e = c->buckets[i], *next; e; e = next) {
            next = e->hnext;
            size_t h = hash_key(e->kind, e->a, e->b) & (nb - 1);
            e->hnext = b[h];
            b[h] = e;
        }
    free(c->buckets);
    c->buckets = b;
    c->n_buckets = nb;
}

/* Makes room for `bytes` more; false when they can never fit. */
static bool make_room(store_cache *c, size_t bytes) {
    if (bytes > c->limit) return false;
    while (c->tail && c->bytes + bytes > c->limit) drop(c, c->tail);
    return true;
}

static void insert(store_cache *c, entry *e) {
    entry **p = find_slot(c, e->kind, e->a, e->b);
    if (*p) drop(c, *p);
    p = find_slot(c, e->kind, e->a, e->b);
    e->hnext = NULL;
    *p = e;
    lru_push_front(c, e);
    c->bytes += e->bytes;
    if (++c->n_entries > c->n_buckets) grow(c);
}

void store_cache_free(store_cache *c) {
    if (!c) return;
    while (c->head) drop(c, c->head);
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

bool store_cache_get_vectors(store_cache *c, int64_t chunk_id, int64_t model_id, float *out,
                             size_t n_floats) {
    pthread_mutex_lock(&c->mu);
    entry *e = *find_slot(c, KIND_VECTORS, chunk_id, model_id);
    bool hit = e && e->n_floats == n_floats;
    if (hit) {
        memcpy(out, e->vectors, n_floats * sizeof(float));
        touch(c, e);
    } else {
        c->misses++;
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void store_cache_put_vectors(store_cache *c, int64_t chunk_id, int64_t model_id, const float *v,
                             size_t n_floats) {
    size_t bytes = n_floats * sizeof(float) + sizeof(entry);
    entry *e = calloc(1, sizeof *e);
    float *copy = malloc(n_floats * sizeof(float));
    if (!e || !copy) {
        free(e);
        free(copy);
        return; /* a cache that cannot grow just misses */
    }
    memcpy(copy, v, n_floats * sizeof(float));
    *e = (entry){.kind = KIND_VECTORS,
                 .a = chunk_id,
                 .b = model_id,
                 .bytes = bytes,
                 .vectors = copy,
                 .n_floats = n_floats};
    pthread_mutex_lock(&c->mu);
    if (make_room(c, bytes)) {
        insert(c, e);
        e = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (e) {
        free(e->vectors);
        free(e);
    }
}

store_index *store_cache_get_index(store_cache *c, int64_t coll_id, int64_t version,
                                   int64_t model_id) {
    pthread_mutex_lock(&c->mu);
    entry *e = *find_slot(c, KIND_INDEX, coll_id, 0);
    store_index *ix = NULL;
    if (e && e->ix->version == version && e->ix->model_id == model_id) {
        ix = e->ix;
        ix->refs++;
        touch(c, e);
    } else {
        c->misses++;
    }
    pthread_mutex_unlock(&c->mu);
    return ix;
}

store_index *store_cache_put_index(store_cache *c, store_index *ix) {
    ix->refs = 1; /* the caller's */
    entry *e = calloc(1, sizeof *e);
    if (!e) return ix;
    *e = (entry){
        .kind = KIND_INDEX, .a = ix->coll_id, .b = 0, .bytes = ix->bytes + sizeof *e, .ix = ix};
    pthread_mutex_lock(&c->mu);
    /* an older index of the collection goes first, whether or not the new one fits */
    entry *old = *find_slot(c, KIND_INDEX, ix->coll_id, 0);
    if (old) drop(c, old);
    if (make_room(c, e->bytes)) {
        ix->refs++;
        insert(c, e);
        e = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    free(e);
    return ix;
}

void store_index_release(store_cache *c, store_index *ix) {
    if (!ix) return;
    pthread_mutex_lock(&c->mu);
    bool last = --ix->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last) store_index_free(ix);
}

void store_cache_stats_read(store_cache *c, size_t *bytes, size_t *limit, size_t *hits,
                            size_t *misses, size_t *entries) {
    pthread_mutex_lock(&c->mu);
    *bytes = c->bytes;
    *limit = c->limit;
    *hits = c->hits;
    *misses = c->misses;
    *entries = c->n_entries;
    pthread_mutex_unlock(&c->mu);
}
