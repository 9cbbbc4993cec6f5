/* store_internal.h - what store.c, select.c and export.c share (not for callers). */
#ifndef CLARA_STORE_INTERNAL_H
#define CLARA_STORE_INTERNAL_H

#include <pthread.h>

#include <cJSON.h>

#include "store/cache.h"
#include "store/rank.h"
#include "store/schema.h"
#include "store/store.h"

struct store {
    db *d;
    pthread_mutex_t mu; /* the connection: one statement or transaction at a time */
    store_cache *cache;
};

/* First row's first two integer columns. */
typedef struct {
    db *d;
    bool found;
    int64_t i, i2;
} store_q1;

int64_t store_now_ms(void);
/* Room for element n of the array *p (of *cap elements of `size` bytes), doubling it as rows
 * arrive; false when memory runs out (the array is left as it was). */
bool store_grow(void **p, size_t *cap, size_t n, size_t size);
store_code store_q_int(store *s, const char *sql, const db_val *args, int n, store_q1 *q,
                       store_err *err);
store_code store_exec(store *s, const char *sql, const db_val *args, int n, int64_t *changes,
                      store_err *err);
/* Commits when rc is STORE_OK, else rolls back; returns the outcome. */
store_code store_txn_end(store *s, store_code rc, store_err *err);

store_code store_coll_find(store *s, const char *name, bool create, int64_t *id, int64_t *version,
                           store_err *err);
store_code store_coll_bump(store *s, int64_t coll_id, store_err *err);
store_code store_mem_find(store *s, int64_t coll_id, const char *coll, const char *id,
                          int64_t *mem_id, store_err *err);
store_code store_check_memory(const store_memory_in *m, store_err *err);

/* The model's row id, created when missing if `create`; *id = 0 when missing. */
store_code store_model_find(store *s, const store_model *m, bool create, int64_t *id,
                            store_err *err);
store_code store_write_vectors(store *s, int64_t chunk_id, int64_t model_id, const float *v,
                               size_t per, store_dtype dtype, store_err *err);
void *store_encode_vectors(const float *v, size_t n, store_dtype dtype, size_t *bytes);
bool store_decode_vectors(const void *p, size_t bytes, int dtype, float *out, size_t n);

#endif
