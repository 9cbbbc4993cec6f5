/* doccache.h - the vectors of documents sent to the OpenAI endpoints, kept in memory so that a
 * document sent again is not compressed again (doccache.c). */
#ifndef CLARA_SERVER_DOCCACHE_H
#define CLARA_SERVER_DOCCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "base/sha256.h"
#include "clara.h"

/* What identifies a document's vectors: SHA-256 of its text and the model's fingerprint. */
typedef struct {
    uint8_t sha[CLARA_SHA256_LEN];
    char fingerprint[CLARA_FINGERPRINT_LEN + 1];
} srv_doc_key;

void srv_doc_key_make(srv_doc_key *k, const char *text, size_t len, const char *fingerprint);
/* Copies the n_floats vectors cached under k into out (a hit makes it the most recent entry). */
bool srv_doccache_get(const srv_doc_key *k, float *out, size_t n_floats);
/* Caches a copy, dropping the least recently used entries to stay within limit bytes (entry
 * overhead included); an entry larger than limit is not kept. */
void srv_doccache_put(const srv_doc_key *k, const float *v, size_t n_floats, size_t limit);
/* Figures for /status: bytes, limit_bytes, entries, hits, misses, evictions. */
void srv_doccache_status(cJSON *j, size_t limit);
/* Frees every entry (at shutdown). */
void srv_doccache_clear(void);

#endif
