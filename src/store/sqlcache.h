/* sqlcache.h - a small map from SQL text to what a backend made of it (a prepared statement, a
 * rewritten string). The store runs the same few dozen statements over and over; keying by the
 * text rather than the pointer keeps a statement built at run time from being mistaken for
 * another that happened to live at the same address. */
#ifndef CLARA_STORE_SQLCACHE_H
#define CLARA_STORE_SQLCACHE_H

#include <stdbool.h>
#include <stdint.h>

/* At most this many statements are kept: SQL generated with a varying shape (IN lists of any
 * length) would otherwise grow the cache without bound. Beyond it the backend does the work
 * each time. */
#define SQL_CACHE_MAX     256
#define SQL_CACHE_BUCKETS 128

typedef struct sql_cache_entry {
    struct sql_cache_entry *next;
    uint64_t hash;
    void *value;
    char sql[]; /* the key, copied */
} sql_cache_entry;

typedef struct {
    sql_cache_entry *bucket[SQL_CACHE_BUCKETS];
    int count;
} sql_cache;

/* The value stored for sql, or NULL. */
void *sql_cache_get(const sql_cache *c, const char *sql);
/* Stores value under sql. False when the cache is full or out of memory: the caller still owns
 * value then. */
bool sql_cache_put(sql_cache *c, const char *sql, void *value);
/* Frees every entry, handing each value to free_value. */
void sql_cache_clear(sql_cache *c, void (*free_value)(void *));

#endif
