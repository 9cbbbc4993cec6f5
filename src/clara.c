/* clara.c - the CLaRa pipeline (spec §7-§11): compress documents into memory vectors, answer a
 * question from vectors (QA prompt, greedy decoding), E2E retrieval by cosine similarity of query
 * and document vectors, and paraphrase. Deterministic eval-mode semantics (no dropout). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/status.h"
#include "ctx.h"
#include "forward.h"
#include "prompt.h"

/* The reference truncates prompts at 1024 tokens (cutting the question); we do not (spec §8.3). */
#define CLARA_REFERENCE_PROMPT_LIMIT 1024

clara_gen_params clara_gen_default_params(void) {
    clara_gen_params p;
    memset(&p, 0, sizeof p);
    p.max_new_tokens = 128;
    return p;
}

void clara_gen_result_free(clara_gen_result *r) {
    free(r->text);
    free(r->ids);
    free(r->top2_gaps);
    free(r->top_k);
    free(r->scores);
    memset(r, 0, sizeof *r);
}

static clara_adapter_set one_adapter(const clara_adapter *a) {
    clara_adapter_set s = {{a}, 1};
    return s;
}

/* Spec §14.4: literal special-token strings in user text would become special ids. */
static clara_status check_text(const clara_model *m, const char *what, size_t index,
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

/* Encoder row of spec §7: <ENC><s>text</s> truncated to doc_max_length+3, then the memory ids.
 * Left padding is not materialised: pads are masked keys and contribute nothing; the real
 * tokens keep the reference's absolute positions (column index in the padded row). */
typedef struct {
    clara_ids ids;
    uint32_t len; /* real tokens before the memory ids */
    uint32_t pad; /* pad columns the reference puts in front */
} enc_row;

static clara_status encoder_row(const clara_model *m, const clara_text *doc, size_t index,
                                enc_row *row) {
    uint32_t M = m->meta.doc_max_length + 3;
    clara_ids *ids = &row->ids;
    clara_status s = check_text(m, "document", index, doc->text, doc->len);
    if (s == CLARA_OK) s = clara_ids_push(ids, m->meta.enc_id);
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
 * is read once per batch while activations stay bounded. */
#define CLARA_MAX_BATCH_ROWS 1100

/* Runs rows[i0, i1) as one batch of one-pass sequences; copies their memory-token states. */
static clara_status compress_group(clara_ctx *ctx, const enc_row *rows, size_t i0, size_t i1,
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
    clara_adapter_set set = one_adapter(ad);
    for (size_t i = i0, off = 0; s == CLARA_OK && i < i1; i++) {
        uint32_t n = (uint32_t)rows[i].ids.n;
        clara_embed_tokens(m, rows[i].ids.ids, n, emb + off * H);
        for (uint32_t t = 0; t < n; t++) pos[off + t] = (int32_t)(rows[i].pad + t);
        seqs[i - i0] = (clara_seq){n, emb + off * H, pos + off, -1, &set, hidden + off * H, NULL};
        off += n;
    }
    if (s == CLARA_OK) s = clara_forward_batch(ctx, seqs, (uint32_t)(i1 - i0));
    for (size_t i = i0, off = 0; s == CLARA_OK && i < i1; off += rows[i].ids.n, i++)
        memcpy(vectors + i * n_mem * H, hidden + (off + rows[i].len) * H,
               n_mem * H * sizeof(float));
    free(emb);
    free(hidden);
    free(pos);
    free(seqs);
    return s;
}

static clara_status compress_with(clara_ctx *ctx, const clara_text *docs, size_t n_docs,
                                  const clara_adapter *ad, float *vectors, uint32_t *n_tokens) {
    enc_row *rows = calloc(n_docs ? n_docs : 1, sizeof *rows);
    if (!rows) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    clara_status s = CLARA_OK;
    /* every document is tokenized and checked before any compute */
    for (size_t i = 0; i < n_docs && s == CLARA_OK; i++) s = encoder_row(ctx->m, &docs[i], i, &rows[i]);
    for (size_t i0 = 0; i0 < n_docs && s == CLARA_OK;) {
        size_t i1 = i0 + 1, total = rows[i0].ids.n;
        while (i1 < n_docs && total + rows[i1].ids.n <= CLARA_MAX_BATCH_ROWS) total += rows[i1++].ids.n;
        s = compress_group(ctx, rows, i0, i1, ad, vectors);
        i0 = i1;
    }
    for (size_t i = 0; i < n_docs; i++) {
        if (n_tokens && s == CLARA_OK) n_tokens[i] = rows[i].len;
        clara_ids_free(&rows[i].ids);
    }
    free(rows);
    return s;
}

clara_status clara_compress(clara_ctx *ctx, const clara_text *docs, size_t n_docs, float *vectors,
                            uint32_t *n_tokens) {
    if (!ctx->m->encoder)
        return clara_fail(CLARA_ERR_INVALID_ARG, "this model has no encoder_adapter to compress with");
    return compress_with(ctx, docs, n_docs, ctx->m->encoder, vectors, n_tokens);
}

/* Index of the largest value, lowest index on ties (torch.argmax on f32), and the top-2 gap. */
static int32_t argmax(const float *v, uint32_t n, float *gap) {
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    float second = -INFINITY;
    for (uint32_t i = 0; i < n; i++)
        if (i != best && v[i] > second) second = v[i];
    *gap = v[best] - second;
    return (int32_t)best;
}

/* Greedy decoding from prompt embeddings (spec §9); stops after </s> or max_new_tokens. */
static clara_status decode_greedy(clara_ctx *ctx, const float *emb, uint32_t n_prompt,
                                  const clara_adapter_set *set, const clara_gen_params *p,
                                  clara_gen_result *r) {
    const clara_model *m = ctx->m;
    uint32_t V = m->hp.n_vocab, H = m->hp.n_embd, max_new = p->max_new_tokens;
    clara_status s = clara_ctx_reserve_slot(ctx, 0, n_prompt + max_new);
    float *logits = malloc(V * sizeof(float));
    int32_t *pos = malloc(n_prompt * sizeof(int32_t));
    float *row = malloc(H * sizeof(float));
    r->ids = malloc((max_new ? max_new : 1) * sizeof(int32_t));
    r->top2_gaps = malloc((max_new ? max_new : 1) * sizeof(float));
    if (s == CLARA_OK && (!logits || !pos || !row || !r->ids || !r->top2_gaps))
        s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    if (s == CLARA_OK && max_new > 0) {
        for (uint32_t i = 0; i < n_prompt; i++) pos[i] = (int32_t)i;
        clara_kv_clear(ctx, 0);
        clara_seq sq = {n_prompt, emb, pos, 0, set, NULL, logits};
        s = clara_forward_batch(ctx, &sq, 1);
        if (s == CLARA_OK && p->first_logits) memcpy(p->first_logits, logits, V * sizeof(float));
    }
    while (s == CLARA_OK && r->n_ids < max_new) {
        int32_t id = argmax(logits, V, &r->top2_gaps[r->n_ids]);
        r->ids[r->n_ids++] = id;
        if (id == m->meta.eos_id || r->n_ids == max_new) break;
        int32_t step_pos = (int32_t)(n_prompt + r->n_ids - 1);
        clara_embed_tokens(m, &id, 1, row);
        clara_seq sq = {1, row, &step_pos, 0, set, NULL, logits};
        s = clara_forward_batch(ctx, &sq, 1);
    }
    if (s == CLARA_OK) s = clara_tokenizer_decode(m->tok, r->ids, r->n_ids, &r->text);
    free(logits);
    free(pos);
    free(row);
    return s;
}

/* Builds the prompt, writes the document vectors into its memory slots and decodes. */
static clara_status answer_from_vectors(clara_ctx *ctx, const clara_gen_params *p,
                                        const float *vectors, size_t k,
                                        const clara_adapter_set *set, clara_gen_result *r) {
    const clara_model *m = ctx->m;
    uint32_t H = m->hp.n_embd, n_mem = m->meta.n_mem;
    clara_prompt pr;
    clara_status s = clara_prompt_build(m, p->task == CLARA_TASK_PARAPHRASE ? NULL : p->query,
                                        p->query_len, p->paraphrase_template, k, &pr);
    if (s != CLARA_OK) return s;
    uint32_t n = (uint32_t)pr.ids.n;
    r->prompt_tokens = n;
    if (n > CLARA_REFERENCE_PROMPT_LIMIT)
        CLARA_LOGW("prompt has %u tokens; the reference implementation would truncate it at %d "
                   "(cutting the question); this engine keeps it whole",
                   n, CLARA_REFERENCE_PROMPT_LIMIT);
    float *emb = malloc((size_t)n * H * sizeof(float));
    if (!emb) s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    if (s == CLARA_OK) {
        clara_embed_tokens(m, pr.ids.ids, n, emb);
        for (size_t j = 0; j < k; j++)
            for (uint32_t i = 0; i < n_mem; i++)
                memcpy(emb + (size_t)clara_prompt_slot_row(m, &pr, j, i) * H,
                       vectors + (j * n_mem + i) * H, H * sizeof(float));
        s = decode_greedy(ctx, emb, n, set, p, r);
    }
    free(emb);
    clara_ids_free(&pr.ids);
    return s;
}

clara_status clara_retrieve_rank(clara_ctx *ctx, const clara_gen_params *p, const float *vectors,
                                 clara_gen_result *r, float **selected);

/* The adapter(s) generation runs with (spec §5): decoder_adapter when loaded; otherwise the one
 * active before — the encoder after compressing in this call, or all loaded adapters summed. */
static clara_adapter_set generation_set(const clara_model *m, bool compressed_here) {
    if (m->decoder) return one_adapter(m->decoder);
    if (compressed_here) return one_adapter(m->encoder);
    clara_adapter_set s = {{0}, 0};
    for (int i = 0; i < m->n_loaded && s.n < CLARA_MAX_ACTIVE; i++) s.a[s.n++] = m->loaded[i];
    return s;
}

static clara_status validate(const clara_model *m, const clara_gen_params *p) {
    if (p->task != CLARA_TASK_PARAPHRASE) {
        if (!p->query || p->query_len == 0)
            return clara_fail(CLARA_ERR_INVALID_ARG, "the query is empty");
        clara_status s = check_text(m, "query", 0, p->query, p->query_len);
        if (s != CLARA_OK) return s;
    }
    if (p->task == CLARA_TASK_PARAPHRASE && (p->paraphrase_template < 0 || p->paraphrase_template > 12))
        return clara_fail(CLARA_ERR_INVALID_ARG, "paraphrase template %d is not in 0..12",
                          p->paraphrase_template);
    if (p->n_docs && !p->docs && !p->vectors)
        return clara_fail(CLARA_ERR_INVALID_ARG, "n_docs is set but no documents were given");
    if (!p->vectors && !m->encoder)
        return clara_fail(CLARA_ERR_INVALID_ARG, "this model has no encoder_adapter to compress with");
    if (p->task == CLARA_TASK_RETRIEVE && !m->query)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "this model has no query_reasoner_adapter (retrieval needs a CLaRa E2E "
                          "checkpoint)");
    return CLARA_OK;
}

/* Builds the prompt once up front so that a request that cannot fit the context fails before
 * any document is compressed. */
static clara_status check_prompt_fits(const clara_model *m, const clara_gen_params *p) {
    size_t k = p->task == CLARA_TASK_RETRIEVE ? (p->top_k ? p->top_k : m->meta.generation_top_k)
                                              : p->n_docs;
    clara_prompt pr;
    clara_status s = clara_prompt_build(m, p->task == CLARA_TASK_PARAPHRASE ? NULL : p->query,
                                        p->query_len, p->paraphrase_template, k, &pr);
    if (s != CLARA_OK) return s;
    uint64_t n = pr.ids.n;
    clara_ids_free(&pr.ids);
    if (n + p->max_new_tokens > m->hp.n_ctx)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "the prompt (%llu tokens for %zu documents) plus %u new tokens exceeds "
                          "the model's context of %u tokens",
                          (unsigned long long)n, k, p->max_new_tokens, m->hp.n_ctx);
    return CLARA_OK;
}

clara_status clara_generate(clara_ctx *ctx, const clara_gen_params *p, clara_gen_result *r) {
    const clara_model *m = ctx->m;
    memset(r, 0, sizeof *r);
    clara_status s = validate(m, p);
    if (s == CLARA_OK) s = check_prompt_fits(m, p);
    if (s != CLARA_OK) return s;
    size_t per = (size_t)m->meta.n_mem * m->hp.n_embd;
    float *owned = NULL;
    const float *vectors = p->vectors;
    bool from_docs = p->vectors == NULL; /* documents given as text (possibly none) */
    if (from_docs) {
        owned = malloc(p->n_docs * per * sizeof(float) + 1);
        if (!owned) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        s = compress_with(ctx, p->docs, p->n_docs, m->encoder, owned, NULL);
        vectors = owned;
    }
    clara_adapter_set set = generation_set(m, from_docs);
    if (s == CLARA_OK && p->task == CLARA_TASK_RETRIEVE) {
        float *selected = NULL;
        s = clara_retrieve_rank(ctx, p, vectors, r, &selected);
        if (s == CLARA_OK) s = answer_from_vectors(ctx, p, selected, r->k, &set, r);
        free(selected);
    } else if (s == CLARA_OK) {
        s = answer_from_vectors(ctx, p, vectors, p->n_docs, &set, r);
    }
    free(owned);
    if (s != CLARA_OK) clara_gen_result_free(r);
    return s;
}

/* E2E (spec §10): the query compressed with the query reasoner, cosine similarity of flattened
 * vectors (norms floored at 1e-12), top-k in descending score order, lowest index on ties. */
clara_status clara_retrieve_rank(clara_ctx *ctx, const clara_gen_params *p, const float *vectors,
                                 clara_gen_result *r, float **selected) {
    const clara_model *m = ctx->m;
    size_t per = (size_t)m->meta.n_mem * m->hp.n_embd, N = p->n_docs;
    uint32_t K = p->top_k ? p->top_k : m->meta.generation_top_k;
    if (K > N)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "retrieval needs at least top_k = %u candidate documents, got %zu", K, N);
    float *q = malloc(per * sizeof(float));
    r->scores = malloc(N * sizeof(float));
    r->top_k = malloc(K * sizeof(uint32_t));
    *selected = malloc(K * per * sizeof(float));
    if (!q || !r->scores || !r->top_k || !*selected) {
        free(q);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    clara_text qt = {p->query, p->query_len};
    clara_status s = compress_with(ctx, &qt, 1, m->query, q, NULL);
    double qn = 0;
    for (size_t i = 0; i < per; i++) qn += (double)q[i] * q[i];
    qn = fmax(sqrt(qn), 1e-12);
    for (size_t n = 0; s == CLARA_OK && n < N; n++) {
        const float *d = vectors + n * per;
        double dn = 0, dot = 0;
        for (size_t i = 0; i < per; i++) {
            dn += (double)d[i] * d[i];
            dot += (double)q[i] * d[i];
        }
        r->scores[n] = (float)(dot / (qn * fmax(sqrt(dn), 1e-12)));
    }
    r->n_scores = N;
    bool *taken = calloc(N, sizeof *taken);
    for (uint32_t k = 0; s == CLARA_OK && taken && k < K; k++) {
        size_t best = N;
        for (size_t n = 0; n < N; n++)
            if (!taken[n] && (best == N || r->scores[n] > r->scores[best])) best = n;
        taken[best] = true;
        r->top_k[k] = (uint32_t)best;
        memcpy(*selected + k * per, vectors + best * per, per * sizeof(float));
    }
    r->k = K;
    free(taken);
    free(q);
    return s;
}
