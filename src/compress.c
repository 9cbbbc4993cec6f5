/* compress.c - document compression (spec §7): encoder rows, run in batches of sequences with
 * the encoder (or query-reasoner) adapter; the final-norm states at the memory positions are the
 * document's vectors. */
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "forward.h"
#include "pipeline.h"

/* Spec §14.4: literal special-token strings in user text would become special ids. */
clara_status clara_check_text(const clara_model *m, const char *what, size_t index,
                              const char *text, size_t len) {
    size_t off;
    int32_t id = clara_tokenizer_find_added(m->tok, text, len, &off);
    if (id >= 0)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "%s %zu contains the special token '%s' at byte %zu; special-token "
                          "strings are not allowed in input text",
                          what, index, clara_tokenizer_piece(m->tok, id), off);
    return CLARA_OK;
}

clara_status clara_enc_row_build(const clara_model *m, const clara_text *doc, size_t index,
                                 clara_enc_row *row) {
    uint32_t M = m->meta.doc_max_length + 3;
    clara_ids *ids = &row->ids;
    clara_status s = clara_check_text(m, "document", index, doc->text, doc->len);
    if (s != CLARA_OK) return s; /* its message names the document already */
    s = clara_ids_push(ids, m->meta.enc_id);
    if (s == CLARA_OK) s = clara_ids_push(ids, m->meta.bos_id);
    if (s == CLARA_OK) s = clara_tokenizer_encode(m->tok, doc->text, doc->len, ids);
    if (s == CLARA_OK) s = clara_ids_push(ids, m->meta.eos_id);
    if (s != CLARA_OK) return clara_fail_context(s, "document %zu", index);
    if (ids->n > M) ids->n = M; /* keeps the first M ids: the tail and </s> are lost */
    row->len = (uint32_t)ids->n;
    row->pad = M - row->len;
    for (uint32_t i = 0; i < m->meta.n_mem && s == CLARA_OK; i++)
        s = clara_ids_push(ids, m->meta.mem_ids[i]);
    return s;
}

/* Rows of one compression pass: documents are batched up to this many rows so that every weight
 * is read (and, quantized, unpacked) once per batch while activations stay bounded: 8 documents
 * of ~275 rows, ~430 MB of activations at 7B (1100 rows: ~210 MB, and ~1.5% slower). */
#define CLARA_MAX_BATCH_ROWS 2200

/* Runs rows[i0, i1) as one batch of one-pass sequences; copies their memory-token states. */
static clara_status compress_group(clara_ctx *ctx, const clara_enc_row *rows, size_t i0, size_t i1,
                                   const clara_adapter *ad, float *vectors) {
    const clara_model *m = ctx->m;
    size_t H = m->hp.n_embd, n_mem = m->meta.n_mem, total = 0;
    for (size_t i = i0; i < i1; i++) total += rows[i].ids.n;
    float *emb = malloc(total * H * sizeof(float));
    float *hidden = malloc(total * H * sizeof(float));
    int32_t *pos = malloc(total * sizeof(int32_t));
    clara_seq *seqs = calloc(i1 - i0, sizeof *seqs);
    clara_status s = CLARA_OK;
    if (!emb || !hidden || !pos || !seqs) s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    clara_adapter_set set = clara_one_adapter(ad);
    for (size_t i = i0, off = 0; s == CLARA_OK && i < i1; i++) {
        uint32_t n = (uint32_t)rows[i].ids.n;
        clara_embed_tokens(m, rows[i].ids.ids, n, emb + off * H);
        for (uint32_t t = 0; t < n; t++) pos[off + t] = (int32_t)(rows[i].pad + t);
        /* only the memory rows' states are wanted: the last layer skips the document rows */
        seqs[i - i0] = (clara_seq){n,    emb + off * H, pos + off,     -1, &set, hidden + off * H,
                                   NULL, rows[i].len,   rows[i].cancel};
        off += n;
    }
    if (s == CLARA_OK) s = clara_forward_batch(ctx, seqs, (uint32_t)(i1 - i0));
    for (size_t i = i0, off = 0; s == CLARA_OK && i < i1; off += rows[i].ids.n, i++)
        if (!rows[i].cancel || !rows[i].cancel->hit)
            memcpy(vectors + i * n_mem * H, hidden + (off + rows[i].len) * H, /* rows [len, n) */
                   n_mem * H * sizeof(float));
    free(emb);
    free(hidden);
    free(pos);
    free(seqs);
    return s;
}

clara_status clara_enc_rows_run(clara_ctx *ctx, const clara_enc_row *rows, size_t n,
                                const clara_adapter *ad, float *vectors) {
    return clara_enc_rows_run_max(ctx, rows, n, ad, vectors, CLARA_MAX_BATCH_ROWS);
}

clara_status clara_enc_rows_run_max(clara_ctx *ctx, const clara_enc_row *rows, size_t n,
                                    const clara_adapter *ad, float *vectors, uint32_t max_rows) {
    clara_status s = CLARA_OK;
    for (size_t i0 = 0; i0 < n && s == CLARA_OK;) {
        size_t i1 = i0 + 1, total = rows[i0].ids.n;
        while (i1 < n && total + rows[i1].ids.n <= max_rows) total += rows[i1++].ids.n;
        s = compress_group(ctx, rows, i0, i1, ad, vectors);
        i0 = i1;
    }
    return s;
}

/* A document's cancellation: the caller's per-document callback bound to the document. */
typedef struct {
    clara_cancel c;
    const clara_compress_params *p;
    size_t doc;
} doc_cancel;

static bool doc_cancelled(void *arg) {
    const doc_cancel *d = arg;
    return d->p->cancelled(d->p->cancel_arg, d->doc);
}

/* Binds each row to its document's cancellation (nothing when the caller gave no callback). */
static void bind_cancel(clara_enc_row *rows, doc_cancel *dc, size_t n_docs,
                        const clara_compress_params *p) {
    for (size_t i = 0; dc && i < n_docs; i++) {
        dc[i] = (doc_cancel){{doc_cancelled, &dc[i], false}, p, i};
        rows[i].cancel = &dc[i].c;
    }
}

static clara_status compress_with(clara_ctx *ctx, const clara_text *docs, size_t n_docs,
                                  const clara_adapter *ad, float *vectors, uint32_t *n_tokens,
                                  const clara_compress_params *p, uint32_t max_rows) {
    clara_enc_row *rows = calloc(n_docs ? n_docs : 1, sizeof *rows);
    doc_cancel *dc = p && p->cancelled ? calloc(n_docs ? n_docs : 1, sizeof *dc) : NULL;
    if (!rows || (p && p->cancelled && !dc)) {
        free(rows);
        free(dc);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    clara_status s = CLARA_OK;
    /* every document is tokenized and checked before any compute */
    for (size_t i = 0; i < n_docs && s == CLARA_OK; i++)
        s = clara_enc_row_build(ctx->m, &docs[i], i, &rows[i]);
    bind_cancel(rows, dc, n_docs, p);
    if (s == CLARA_OK) s = clara_enc_rows_run_max(ctx, rows, n_docs, ad, vectors, max_rows);
    size_t dropped = 0;
    for (size_t i = 0; i < n_docs; i++) {
        if (n_tokens && s == CLARA_OK) n_tokens[i] = rows[i].len;
        dropped += dc && dc[i].c.hit;
        clara_ids_free(&rows[i].ids);
    }
    if (s == CLARA_OK && dropped)
        s = clara_fail(CLARA_ERR_CANCELLED, "%zu of %zu documents were cancelled", dropped, n_docs);
    free(rows);
    free(dc);
    return s;
}

clara_status clara_compress_ex(clara_ctx *ctx, const clara_text *docs, size_t n_docs,
                               float *vectors, uint32_t *n_tokens,
                               const clara_compress_params *params) {
    if (!ctx->m->encoder)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "this model has no encoder_adapter to compress with");
    return compress_with(ctx, docs, n_docs, ctx->m->encoder, vectors, n_tokens, params,
                         CLARA_MAX_BATCH_ROWS);
}

clara_status clara_compress_rows(clara_ctx *ctx, const clara_text *docs, size_t n_docs,
                                 float *vectors, uint32_t *n_tokens,
                                 const clara_compress_params *params, uint32_t max_rows) {
    if (!ctx->m->encoder)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "this model has no encoder_adapter to compress with");
    return compress_with(ctx, docs, n_docs, ctx->m->encoder, vectors, n_tokens, params,
                         max_rows ? max_rows : CLARA_MAX_BATCH_ROWS);
}

clara_status clara_compress(clara_ctx *ctx, const clara_text *docs, size_t n_docs, float *vectors,
                            uint32_t *n_tokens) {
    return clara_compress_ex(ctx, docs, n_docs, vectors, n_tokens, NULL);
}

/* E2E retrieval's query vectors (generate.c compresses the question the same way: one encoder
 * row per query, run with the query reasoner), so that a store can rank its own documents with
 * exactly the scores CLARA_TASK_RETRIEVE would give. Retrieval refuses an empty question, and
 * so does this. */
clara_status clara_compress_queries(clara_ctx *ctx, const clara_text *queries, size_t n,
                                    float *vectors) {
    const clara_model *m = ctx->m;
    if (!m->query)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "this model has no query_reasoner_adapter (query vectors need a CLaRa "
                          "E2E checkpoint)");
    for (size_t i = 0; i < n; i++) {
        if (!queries[i].text || queries[i].len == 0)
            return clara_fail(CLARA_ERR_INVALID_ARG, "query %zu is empty", i);
        clara_status s = clara_check_text(m, "query", i, queries[i].text, queries[i].len);
        if (s != CLARA_OK) return s;
    }
    return compress_with(ctx, queries, n, m->query, vectors, NULL, NULL, CLARA_MAX_BATCH_ROWS);
}
