/* store.h - the memory store: collections of memories (text, metadata and their compressed
 * vectors) in SQLite or PostgreSQL, and the selection of the memories that answer a query.
 *
 * No HTTP and no model here: callers chunk and compress with the engine (clara.h) and hand the
 * vectors in, tagged with the fingerprint of the model that made them. A store is safe to use
 * from several threads (one database connection behind a mutex; the vector cache has its own).
 * Every write is one transaction: all of it is durable when the call returns STORE_OK, or none
 * of it is there. docs/STORE.md describes the schema, the fingerprint and the ranking. */
#ifndef CLARA_STORE_H
#define CLARA_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "clara.h"
#include "store/db.h"

#define STORE_NAME_MAX      128  /* bytes of a collection name or memory id */
#define STORE_MAX_CHUNKS    4096 /* chunks of one memory (~1M tokens) */
#define STORE_METADATA_MAX  (64 << 10)
#define STORE_LIST_MAX      1000       /* memories per page */
#define STORE_LIST_BYTES    (8u << 20) /* text and metadata per page (one memory at least) */
#define STORE_DEFAULT_CACHE (512u << 20)

typedef struct store store;

typedef struct {
    const char *url;    /* a SQLite file path, or postgresql://... / postgres://... */
    size_t cache_bytes; /* bound of the in-memory vector cache; 0 = STORE_DEFAULT_CACHE */
    bool create;        /* SQLite: create the file (and its directory) when missing */
    int timeout_ms;     /* PostgreSQL: longest wait for one statement's answer, lock waits
                         * included, before it fails STORE_UNAVAILABLE; 0 = 30 s */
} store_options;

store_code store_open(const store_options *o, store **out, store_err *err);
void store_close(store *s);
const char *store_backend_name(const store *s); /* "sqlite" or "postgresql" */
const char *store_where(const store *s);        /* the file, or the server without password */

/* True if url names a PostgreSQL server rather than a SQLite file. */
bool store_url_is_postgres(const char *url);

/* Collection names and memory ids: 1..128 bytes of [A-Za-z0-9_.:-], not starting with '.' or
 * '-' (no path tricks, nothing to escape in a URL). what = "collection name" / "memory id". */
store_code store_check_name(const char *what, const char *name, size_t len, store_err *err);

/* The model vectors are made by: they are stored and looked up under its fingerprint. */
typedef struct {
    const char *fingerprint; /* CLARA_FINGERPRINT_LEN hex digits */
    const char *name;        /* for people (the model file's general.name) */
    uint32_t n_mem, n_embd;
} store_model;

/* One memory to write. vectors are [n_chunks][n_mem][n_embd] f32; NULL stores the memory
 * without vectors (they are made later, e.g. by `clara memory import` of a text-only export). */
typedef struct {
    const char *id; /* NULL or "": a new id is generated */
    const char *text;
    size_t text_len;
    const char *metadata; /* JSON object text, or NULL */
    const clara_chunk *chunks;
    size_t n_chunks;
    const float *vectors;
    int64_t created_ms, updated_ms; /* 0 = now (import keeps the exported times) */
} store_memory_in;

/* The ids given in one add are distinct (STORE_CONFLICT naming both memories otherwise; memories
 * without an id get distinct new ones). store_add checks it; the server checks it before it
 * compresses anything. */
store_code store_check_unique_ids(const store_memory_in *mems, size_t n, store_err *err);

typedef enum { STORE_F16 = 1, STORE_F32 = 0 } store_dtype; /* GGUF type ids */

/* Adds memories to a collection (created if missing when create_collection), all or none.
 * ids_out[i] (optional, STORE_NAME_MAX + 1 bytes each) receives each memory's id. A duplicate
 * id is STORE_CONFLICT naming it. */
store_code store_add(store *s, const char *collection, bool create_collection, const store_model *m,
                     store_dtype dtype, const store_memory_in *mems, size_t n,
                     char (*ids_out)[STORE_NAME_MAX + 1], store_err *err);

/* Replaces a memory's text (and metadata when given; keep_metadata keeps the old) and chunks;
 * vectors of other models for the old text are dropped. */
store_code store_replace(store *s, const char *collection, const store_model *m, store_dtype dtype,
                         const store_memory_in *mem, bool keep_metadata, store_err *err);

store_code store_delete_memory(store *s, const char *collection, const char *id, store_err *err);
store_code store_delete_collection(store *s, const char *collection, int64_t *n_deleted,
                                   store_err *err);

typedef struct {
    char *id, *text, *metadata; /* metadata NULL when none */
    size_t text_len;
    int64_t created_ms, updated_ms;
    uint32_t n_chunks, n_tokens;
} store_memory;

void store_memory_free(store_memory *m);

store_code store_get(store *s, const char *collection, const char *id, store_memory *out,
                     store_err *err);
/* A page of memories in the order they were added, after the one with cursor `after` (0 = from
 * the start). *next is the cursor of the next page, 0 when this is the last. */
store_code store_list(store *s, const char *collection, int64_t after, size_t limit,
                      store_memory **out, size_t *n, int64_t *next, store_err *err);

typedef struct {
    char *name;
    int64_t n_memories, n_chunks, created_ms;
} store_collection;

store_code store_collections(store *s, store_collection **out, size_t *n, store_err *err);
void store_collections_free(store_collection *c, size_t n);

/* Chunks that have no vectors under model m (collection NULL = every collection), at most
 * limit, oldest first: what a reindex or a query's lazy recompression compresses. */
typedef struct {
    int64_t chunk_id;
    char *text;
    size_t len;
} store_pending;

store_code store_pending_chunks(store *s, const char *collection, const store_model *m,
                                size_t limit, store_pending **out, size_t *n, int64_t *total,
                                store_err *err);
void store_pending_free(store_pending *p, size_t n);
/* Stores vectors [n][n_mem][n_embd] of chunks under model m (a chunk deleted meanwhile is
 * skipped). */
store_code store_put_vectors(store *s, const store_model *m, store_dtype dtype,
                             const int64_t *chunk_ids, const float *vectors, size_t n,
                             store_err *err);

/* Makes vectors for chunks that have none under model m: `compress` turns texts (each at most
 * doc_max_length tokens) into vectors [n][n_mem][n_embd] with the model whose fingerprint is
 * m->fingerprint (returning anything but STORE_OK stops the catch-up with that code). Batches of
 * `batch` chunks, each stored as soon as it is made, so an interrupted catch-up keeps its work.
 * collection NULL = every collection (`clara memory reindex`). *done counts the chunks made;
 * progress (optional) is called after each batch with (done, total). */
typedef store_code (*store_compress_fn)(void *arg, const clara_text *texts, size_t n,
                                        float *vectors, store_err *err);
store_code store_catch_up(store *s, const char *collection, const store_model *m, store_dtype dtype,
                          size_t batch, store_compress_fn compress, void *arg,
                          void (*progress)(void *arg, int64_t done, int64_t total), int64_t *done,
                          store_err *err);

/* The default store: $XDG_DATA_HOME/clara-server/memories.db, else
 * ~/.local/share/clara-server/memories.db (memories are data, not a cache). malloc'd; NULL when
 * neither variable is set. */
char *store_default_path(void);

/* How store_select picks chunks. */
typedef enum {
    STORE_SELECT_COSINE,   /* by cosine with query_vectors (E2E query reasoner) */
    STORE_SELECT_FULLTEXT, /* by full-text relevance of query_text */
} store_select_mode;

typedef struct {
    const char *collection;
    const store_model *m;
    store_select_mode mode;
    const float *query_vectors; /* COSINE: [n_mem][n_embd] */
    const char *query_text;     /* FULLTEXT */
    size_t query_len;
    size_t top_k;
    /* FULLTEXT: when the collection (after the filter) has at most this many chunks, all are
     * used in the order they were added (what /v1/answer does with the same texts). */
    size_t all_if_at_most;
    const char *filter; /* JSON object: memories whose metadata has these keys equal; or NULL */
    /* The caller caught up (store_catch_up) just before: a chunk without this model's vectors
     * was written since, by a writer with another model, and is left out (the query sees the
     * collection as the catch-up did). Otherwise such a chunk is STORE_CHANGED. */
    bool after_catch_up;
} store_query;

typedef struct {
    size_t n;       /* selected chunks, best first (or in added order for "all") */
    float *vectors; /* [n][n_mem][n_embd] f32 */
    float *scores;  /* cosine; full-text: the database's relevance (higher is better) */
    int64_t *chunk_ids;
    char **memory_ids;   /* the memory each chunk belongs to */
    char **texts;        /* each chunk's text */
    uint32_t *chunk_seq; /* its position in its memory */
    const char *method;  /* "cosine", "fulltext", "all" */
    bool exact;          /* cosine: every chunk scored exactly (no pre-selection by code) */
    size_t candidates;   /* chunks scored exactly */
    size_t considered;   /* chunks in the collection that matched the filter */
    double rank_ms;
} store_selection;

/* Selects the chunks to answer from. Every selected chunk has vectors under q->m (callers run
 * store_pending_chunks and store_put_vectors first; a chunk still without them is
 * STORE_NOT_FOUND). */
store_code store_select(store *s, const store_query *q, store_selection *out, store_err *err);
void store_selection_free(store_selection *sel);

/* Export: every memory of a collection (NULL = all) with its vectors under every model, one
 * call of fn per memory, as JSON text (docs/STORE.md, one JSONL line). */
store_code store_export(store *s, const char *collection, int (*fn)(void *arg, const char *line),
                        void *arg, size_t *n_out, store_err *err);
/* Import one exported line (memories and their vectors, kept as exported). */
store_code store_import_line(store *s, const char *line, size_t len, bool skip_existing,
                             bool *skipped, store_err *err);

/* The JSON of a memory ({id, text, metadata, created_ms, updated_ms, chunks, tokens}), of a
 * collection ({name, memories, chunks, created_ms}), and a selection's "memories" (the chunks
 * used: id, chunk, text, score) and "selection" ({method, exact, considered, scored_exactly})
 * added to an answer: the shapes of docs/API.md, for the server and `clara memory --json`. */
/* Whether a JSON value (metadata, a filter) means one thing: every number finite (cJSON reads
 * 1e999 as infinity, which prints as null) and no key twice in an object (a filter matched the
 * first, most clients read the last). False with why filled ("holds ...", "has ..."); metadata
 * that is not plain is STORE_INVALID, the server refuses such a filter (422). */
bool store_json_plain(const cJSON *v, char *why, size_t cap);
cJSON *store_memory_json(const store_memory *m);
cJSON *store_collection_json(const store_collection *c);
void store_selection_add_json(cJSON *j, const store_selection *sel);

/* Cache figures for /status and /metrics. */
typedef struct {
    size_t bytes, limit, hits, misses, entries;
} store_cache_stats;
void store_cache_stats_get(store *s, store_cache_stats *out);

#endif
