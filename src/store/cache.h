/* cache.h - the store's bounded in-memory cache (one byte budget, least recently used first out):
 *
 * - a chunk's vectors under a model, keyed by (chunk id, model id). Chunk rows are never updated
 *   (a replaced memory gets new chunks with new ids), so these entries never go stale.
 * - a collection's index: its chunks in the order they were added, the memory of each, the
 *   memories' metadata (for filters) and, for one model, the chunks' sign-bit codes. It is valid
 *   for one value of the collection's `version`, which every write bumps: a replica that finds
 *   another version in the database (another replica wrote) loads it again. */
#ifndef CLARA_STORE_CACHE_H
#define CLARA_STORE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

typedef struct store_cache store_cache;

typedef struct {
    int64_t coll_id, version, model_id; /* model_id 0: no codes */
    size_t n;                           /* chunks */
    int64_t *chunk_ids, *mem_rowids;    /* [n], added order */
    size_t words;                       /* 64-bit words of a code (rank.h) */
    uint64_t *codes;                    /* [n][words]: the chunks' sign-bit codes */
    bool *has_vectors;                  /* [n]: the chunk has vectors under model_id */
    size_t n_mems;
    int64_t *meta_rowids; /* [n_mems] sorted: memories that have metadata */
    cJSON **metas;        /* [n_mems] */
    size_t bytes;
    int refs; /* users + 1 while cached */
} store_index;

store_cache *store_cache_new(size_t limit);
void store_cache_free(store_cache *c);

/* Vectors of a chunk as stored (f16 or f32 bytes); copies into out (n_floats f32) if present. */
bool store_cache_get_vectors(store_cache *c, int64_t chunk_id, int64_t model_id, float *out,
                             size_t n_floats);
void store_cache_put_vectors(store_cache *c, int64_t chunk_id, int64_t model_id, const float *v,
                             size_t n_floats);

/* The cached index of a collection at `version` with the codes of model_id (0: a model with
 * no vectors stored), or NULL.
 * A returned index is referenced: give it back with store_index_release. */
store_index *store_cache_get_index(store_cache *c, int64_t coll_id, int64_t version,
                                   int64_t model_id);
/* Caches ix (when it fits the budget) and returns it referenced for the caller either way. */
store_index *store_cache_put_index(store_cache *c, store_index *ix);
void store_index_release(store_cache *c, store_index *ix);
/* Frees an index nobody holds (one that was never cached). */
void store_index_free(store_index *ix);

void store_cache_stats_read(store_cache *c, size_t *bytes, size_t *limit, size_t *hits,
                            size_t *misses, size_t *entries);

#endif
