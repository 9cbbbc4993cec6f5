/* catchup.c - vectors for chunks that have none under the current model: written under another
 * model (its fingerprint differs: other weights, another quantization), or imported without
 * vectors. The server does this lazily on a collection's first query, `clara memory reindex`
 * all at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

store_code store_catch_up(store *s, const char *collection, const store_model *m, store_dtype dtype,
                          size_t batch, store_compress_fn compress, void *arg,
                          void (*progress)(void *arg, int64_t done, int64_t total), int64_t *done,
                          store_err *err) {
    size_t per = (size_t)m->n_mem * m->n_embd;
    int64_t total = -1;
    *done = 0;
    for (;;) {
        store_pending *p = NULL;
        size_t n = 0;
        int64_t left = 0;
        store_code rc = store_pending_chunks(s, collection, m, batch, &p, &n, &left, err);
        if (rc != STORE_OK || n == 0) return rc;
        if (total < 0) total = left;
        clara_text *texts = malloc(n * sizeof *texts);
        int64_t *ids = malloc(n * sizeof *ids);
        float *v = malloc(n * per * sizeof *v);
        rc = texts && ids && v ? STORE_OK : store_fail(err, STORE_NOMEM, "out of memory");
        for (size_t i = 0; rc == STORE_OK && i < n; i++) {
            texts[i] = (clara_text){p[i].text, p[i].len};
            ids[i] = p[i].chunk_id;
        }
        if (rc == STORE_OK) rc = compress(arg, texts, n, v, err);
        if (rc == STORE_OK) rc = store_put_vectors(s, m, dtype, ids, v, n, err);
        free(texts);
        free(ids);
        free(v);
        store_pending_free(p, n);
        if (rc != STORE_OK) return rc;
        *done += (int64_t)n;
        if (progress) progress(arg, *done, total);
    }
}

char *store_default_path(void) {
    const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    char buf[4096];
    if (xdg && *xdg == '/')
        snprintf(buf, sizeof buf, "%s/clara-server/memories.db", xdg);
    else if (home && *home)
        snprintf(buf, sizeof buf, "%s/.local/share/clara-server/memories.db", home);
    else
        return NULL;
    char *out = malloc(strlen(buf) + 1);
    if (out) strcpy(out, buf);
    return out;
}
