/* sqlcache.c - see sqlcache.h. */
#include "store/sqlcache.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash_sql(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

void *sql_cache_get(const sql_cache *c, const char *sql) {
    uint64_t h = hash_sql(sql);
    for (sql_cache_entry *e = c->bucket[h % SQL_CACHE_BUCKETS]; e; e = e->next)
        if (e->hash == h && strcmp(e->sql, sql) == 0) return e->value;
    return NULL;
}

bool sql_cache_put(sql_cache *c, const char *sql, void *value) {
    if (c->count >= SQL_CACHE_MAX) return false;
    size_t n = strlen(sql) + 1;
    sql_cache_entry *e = malloc(sizeof *e + n);
    if (!e) return false;
    e->hash = hash_sql(sql);
    e->value = value;
    memcpy(e->sql, sql, n);
    e->next = c->bucket[e->hash % SQL_CACHE_BUCKETS];
    c->bucket[e->hash % SQL_CACHE_BUCKETS] = e;
    c->count++;
    return true;
}

void sql_cache_clear(sql_cache *c, void (*free_value)(void *)) {
    for (int b = 0; b < SQL_CACHE_BUCKETS; b++) {
        for (sql_cache_entry *e = c->bucket[b], *next; e; e = next) {
            next = e->next;
            if (free_value) free_value(e->value);
            free(e);
        }
        c->bucket[b] = NULL;
    }
    c->count = 0;
}
