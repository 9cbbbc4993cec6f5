/* generate.c - one request of answering, E2E retrieval, paraphrase or chat (spec §8-§11): its
 * checks, ranking, prompt, the choice of each next id (greedy as the reference, or seeded
 * sampling) and its end; batch.c runs many together. clara_generate_batch is a batch run to the
 * end. A request that fails (bad input, prompt too long) fails alone with its own message. */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/status.h"
#include "gen.h"
#include "prefix.h"
#include "prompt.h"

/* The reference truncates prompts at 1024 tokens (cutting the question); we do not (spec §8.3). */
#define CLARA_REFERENCE_PROMPT_LIMIT 1024

clara_status clara_detokenize(const clara_model *model, const int32_t *ids, size_t n, char **text,
                              size_t *len) {
    size_t l = 0;
    clara_status s = clara_tokenizer_decode_len(model->tok, ids, n, text, &l);
    if (len) *len = s == CLARA_OK ? l : 0;
    return s;
}

clara_status clara_detokenize_stable(const clara_model *model, const int32_t *ids, size_t n,
                                     char **text, size_t *len) {
    return clara_detokenize(model, ids, clara_tokenizer_final_ids(model->tok, ids, n), text, len);
}

clara_gen_params clara_gen_default_params(void) {
    clara_gen_params p;
    memset(&p, 0, sizeof p);
    p.max_new_tokens = 128;
    p.top_p = 1.0f;
    return p;
}

void clara_gen_result_free(clara_gen_result *r) {
    free(r->text);
    free(r->ids);
    free(r->top2_gaps);
    free(r->top_k);
    free(r->scores);
    free(r->error);
    memset(r, 0, sizeof *r);
}

static size_t docs_k(const clara_model *m, const clara_gen_params *p) {
    if (p->task != CLARA_TASK_RETRIEVE) return p->n_docs;
    return p->top_k ? p->top_k : m->meta.generation_top_k;
}

static clara_status build_prompt(const clara_model *m, const clara_gen_params *p, size_t k,
                                 clara_prompt *pr) {
    clara_chat chat = {p->system, p->system_len, p->turns, p->n_turns, p->task == CLARA_TASK_CHAT};
    return clara_prompt_build(m, p->task == CLARA_TASK_PARAPHRASE ? NULL : p->query, p->query_len,
                              p->paraphrase_template, k, &chat, pr);
}

/* The conversation's texts: no special-token strings (spec §14.4), turns in pairs, and a plain
 * chat has no documents. */
static clara_status validate_chat(const clara_model *m, const clara_gen_params *p) {
    if (p->task == CLARA_TASK_CHAT && p->n_docs)
        return clara_fail(CLARA_ERR_INVALID_ARG, "a plain chat takes no documents");
    if (p->n_turns % 2)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "chat turns must alternate user/assistant and end with an assistant "
                          "turn before the question (got %zu)",
                          p->n_turns);
    if (p->n_turns && !p->turns)
        return clara_fail(CLARA_ERR_INVALID_ARG, "n_turns is set but no turns were given");
    clara_status s =
        p->system ? clara_check_text(m, "system text", 0, p->system, p->system_len) : CLARA_OK;
    for (size_t i = 0; i < p->n_turns && s == CLARA_OK; i++)
        s = clara_check_text(m, "chat turn", i, p->turns[i].text, p->turns[i].len);
    return s;
}

/* Input checks, and the prompt length against the context before any compute (the prompt is
 * tokenized here once only to measure it). */
static clara_status validate(const clara_model *m, const clara_gen_params *p) {
    if (p->task != CLARA_TASK_PARAPHRASE) {
        if (!p->query || p->query_len == 0)
            return clara_fail(CLARA_ERR_INVALID_ARG, "the query is empty");
        clara_status s = clara_check_text(m, "query", 0, p->query, p->query_len);
        if (s != CLARA_OK) return s;
    }
    if (p->task == CLARA_TASK_PARAPHRASE &&
        (p->paraphrase_template < 0 || p->paraphrase_template > 12))
        return clara_fail(CLARA_ERR_INVALID_ARG, "paraphrase template %d is not in 0..12",
                          p->paraphrase_template);
    clara_status cs = validate_chat(m, p);
    if (cs != CLARA_OK) return cs;
    if (p->n_docs && !p->docs && !p->vectors)
        return clara_fail(CLARA_ERR_INVALID_ARG, "n_docs is set but no documents were given");
    if (!p->vectors && !m->encoder)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "this model has no encoder_adapter to compress with");
    if (p->task == CLARA_TASK_RETRIEVE && !m->query)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "this model has no query_reasoner_adapter (retrieval needs a CLaRa E2E "
                          "checkpoint)");
    size_t k = docs_k(m, p);
    if (p->task == CLARA_TASK_RETRIEVE && k > p->n_docs)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "retrieval needs at least top_k = %zu candidate documents, got %zu", k,
                          p->n_docs);
    clara_prompt pr;
    clara_status s = build_prompt(m, p, k, &pr);
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

/* The adapter(s) generation runs with (spec §5): decoder_adapter when loaded; otherwise the one
 * active before — the encoder after compressing in this call, or all loaded adapters summed. */
static clara_adapter_set generation_set(const clara_model *m, bool compressed_here) {
    if (m->decoder) return clara_one_adapter(m->decoder);
    if (compressed_here) return clara_one_adapter(m->encoder);
    clara_adapter_set s = {{0}, 0};
    for (int i = 0; i < m->n_loaded && s.n < CLARA_MAX_ACTIVE; i++) s.a[s.n++] = m->loaded[i];
    return s;
}

/* E2E (spec §10): cosine similarity of the flattened query and document vectors (norms floored
 * at 1e-12), top-k in descending score order, lowest index on ties; vectors of the chosen
 * documents in rank order. */
static clara_status rank(const clara_model *m, gen_req *q, const float *qv) {
    const clara_gen_params *p = q->p;
    size_t per = (size_t)m->meta.n_mem * m->hp.n_embd, N = p->n_docs, K = docs_k(m, p);
    clara_gen_result *r = q->r;
    r->scores = malloc(N * sizeof(float) + 1);
    r->top_k = malloc(K * sizeof(uint32_t) + 1);
    float *sel = malloc(K * per * sizeof(float) + 1);
    bool *taken = calloc(N + 1, sizeof *taken);
    if (!r->scores || !r->top_k || !sel || !taken) {
        free(sel);
        free(taken);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    double qn = 0;
    for (size_t i = 0; i < per; i++) qn += (double)qv[i] * qv[i];
    qn = fmax(sqrt(qn), 1e-12);
    for (size_t n = 0; n < N; n++) {
        const float *d = q->vectors + n * per;
        double dn = 0, dot = 0;
        for (size_t i = 0; i < per; i++) {
            dn += (double)d[i] * d[i];
            dot += (double)qv[i] * d[i];
        }
        r->scores[n] = (float)(dot / (qn * fmax(sqrt(dn), 1e-12)));
    }
    r->n_scores = N;
    for (size_t k = 0; k < K; k++) {
        size_t best = N;
        for (size_t n = 0; n < N; n++)
            if (!taken[n] && (best == N || r->scores[n] > r->scores[best])) best = n;
        taken[best] = true;
        r->top_k[k] = (uint32_t)best;
        memcpy(sel + k * per, q->vectors + best * per, per * sizeof(float));
    }
    r->k = K;
    free(taken);
    free(q->owned);
    q->owned = sel; /* the prompt takes the selected vectors */
    q->vectors = sel;
    q->k = K;
    return CLARA_OK;
}

/* Prompt ids -> embeddings with the document vectors written into the memory slots (§8.4). */
static clara_status prompt_embeddings(const clara_model *m, gen_req *q) {
    uint32_t H = m->hp.n_embd, n_mem = m->meta.n_mem;
    clara_prompt pr;
    clara_status s = build_prompt(m, q->p, q->k, &pr);
    if (s != CLARA_OK) return s;
    uint32_t n = (uint32_t)pr.ids.n;
    q->n_prompt = q->r->prompt_tokens = n;
    if (n > CLARA_REFERENCE_PROMPT_LIMIT)
        CLARA_LOGW("prompt has %u tokens; the reference implementation would truncate it at %d "
                   "(cutting the question); this engine keeps it whole",
                   n, CLARA_REFERENCE_PROMPT_LIMIT);
    q->emb = malloc((size_t)n * H * sizeof(float));
    if (!q->emb) s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    if (s == CLARA_OK) {
        clara_embed_tokens(m, pr.ids.ids, n, q->emb);
        for (size_t j = 0; j < q->k; j++)
            for (uint32_t i = 0; i < n_mem; i++)
                memcpy(q->emb + (size_t)clara_prompt_slot_row(m, &pr, j, i) * H,
                       q->vectors + (j * n_mem + i) * H, H * sizeof(float));
    }
    q->prompt = pr;
    return s;
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

/* Takes q's next id from its logits (greedy, or sampled when it asks); ends it after </s>, at
 * its limit, or when its on_token callback says so. */
void gen_req_pick(const clara_model *m, gen_req *q) {
    clara_gen_result *r = q->r;
    const clara_gen_params *p = q->p;
    if (q->st != CLARA_OK || q->ph != GEN_DECODE) return;
    int32_t id = argmax(q->logits, m->hp.n_vocab, &r->top2_gaps[r->n_ids]);
    if (p->temperature > 0)
        id = clara_sample(q->logits, m->hp.n_vocab, p->temperature, p->top_p, p->sample_top_k,
                          &q->rng, q->cand);
    r->ids[r->n_ids++] = id;
    bool done = true;
    if (id == m->meta.eos_id && !p->ignore_eos)
        r->finish = CLARA_FINISH_EOS;
    else if (r->n_ids == p->max_new_tokens)
        r->finish = CLARA_FINISH_LENGTH;
    else
        done = false;
    if (p->on_token && !p->on_token(p->token_arg, r->ids, r->n_ids)) {
        r->finish = CLARA_FINISH_CALLER;
        done = true;
    }
    if (done) q->ph = GEN_DONE;
}

double gen_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

void gen_req_fail(gen_req *q, clara_status s) {
    if (q->st != CLARA_OK) return;
    q->st = s;
    q->ph = GEN_DONE;
    const char *msg = clara_last_error();
    q->r->error = strdup(msg && *msg ? msg : clara_status_name(s));
}

bool gen_req_cancelled(gen_req *q) {
    if (q->st == CLARA_OK && q->ph != GEN_DONE && clara_cancel_poll(&q->cancel))
        gen_req_fail(q, clara_fail(CLARA_ERR_CANCELLED, "the request was cancelled"));
    return q->st == CLARA_ERR_CANCELLED;
}

/* q's encoder rows: its documents (given as text), or (queries) its question for E2E. */
static clara_status build_rows(const clara_model *m, gen_req *q, bool query) {
    size_t n = query ? 1 : q->p->n_docs;
    q->rows = calloc(n + 1, sizeof *q->rows);
    if (!q->rows) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    q->n_rows = n;
    q->next_row = 0;
    clara_cancel *c = q->cancel.fn ? &q->cancel : NULL; /* NULL: long passes go in one round */
    for (size_t d = 0; d < n; d++) {
        clara_text t = query ? (clara_text){q->p->query, q->p->query_len} : q->p->docs[d];
        q->rows[d].cancel = c;
        clara_status s = clara_enc_row_build(m, &t, d, &q->rows[d]);
        if (s != CLARA_OK) return s;
    }
    return CLARA_OK;
}

static void free_rows(gen_req *q) {
    for (size_t i = 0; q->rows && i < q->n_rows; i++) clara_ids_free(&q->rows[i].ids);
    free(q->rows);
    q->rows = NULL;
    q->n_rows = q->next_row = 0;
}

/* The buffers of decoding: ids, gaps, logits, sampling scratch and generator. */
static clara_status alloc_decode(const clara_model *m, gen_req *q) {
    uint32_t mx = q->p->max_new_tokens ? q->p->max_new_tokens : 1, V = m->hp.n_vocab;
    q->r->ids = malloc(mx * sizeof(int32_t));
    q->r->top2_gaps = malloc(mx * sizeof(float));
    q->logits = malloc(V * sizeof(float));
    if (q->p->temperature > 0) q->cand = malloc(V * sizeof *q->cand);
    clara_rng_seed(&q->rng, q->p->seed);
    if (!q->r->ids || !q->r->top2_gaps || !q->logits || (q->p->temperature > 0 && !q->cand))
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    return CLARA_OK;
}

/* The prompt with the vectors written in; the request then waits for its prefill (or, asking for
 * no new token, is done). */
static void to_prefill(const clara_model *m, gen_req *q) {
    clara_status s = prompt_embeddings(m, q);
    if (s == CLARA_OK) s = alloc_decode(m, q);
    if (s != CLARA_OK) {
        gen_req_fail(q, s);
        return;
    }
    q->ph = q->p->max_new_tokens ? GEN_PREFILL : GEN_DONE;
}

void gen_req_documents_done(const clara_model *m, gen_req *q) {
    free_rows(q);
    if (q->p->task != CLARA_TASK_RETRIEVE) {
        to_prefill(m, q);
        return;
    }
    clara_status s = build_rows(m, q, true);
    if (s != CLARA_OK) {
        gen_req_fail(q, s);
        return;
    }
    q->ph = GEN_QUERY;
}

void gen_req_query_done(const clara_model *m, gen_req *q, const float *qv) {
    free_rows(q);
    clara_status s = rank(m, q, qv);
    if (s != CLARA_OK) {
        gen_req_fail(q, s);
        return;
    }
    to_prefill(m, q);
}

void gen_req_start(const clara_model *m, gen_req *q, const clara_gen_params *p, clara_gen_result *r,
                   void *user) {
    memset(r, 0, sizeof *r);
    *q = (gen_req){.p = p,
                   .r = r,
                   .user = user,
                   .st = CLARA_OK,
                   .slot = -1,
                   .cancel = {p->cancelled, p->cancel_arg, false}};
    clara_status s = validate(m, p);
    if (s != CLARA_OK) {
        gen_req_fail(q, s);
        return;
    }
    bool from_text = p->vectors == NULL;
    q->set = generation_set(m, from_text);
    q->vectors = p->vectors;
    q->k = docs_k(m, p);
    size_t per = (size_t)m->meta.n_mem * m->hp.n_embd;
    if (!from_text || p->n_docs == 0) {
        gen_req_documents_done(m, q);
        return;
    }
    q->owned = malloc(p->n_docs * per * sizeof(float) + 1);
    s = q->owned ? build_rows(m, q, false) : clara_fail(CLARA_ERR_NOMEM, "out of memory");
    if (s != CLARA_OK) {
        gen_req_fail(q, s);
        return;
    }
    q->vectors = q->owned;
    q->ph = GEN_COMPRESS;
}

void gen_req_finish(const clara_model *m, gen_req *q) {
    if (q->st == CLARA_OK) {
        clara_status d = clara_tokenizer_decode_len(m->tok, q->r->ids, q->r->n_ids, &q->r->text,
                                                    &q->r->text_len);
        if (d != CLARA_OK) gen_req_fail(q, d);
    }
    if (q->st != CLARA_OK) { /* a failed request keeps only its error */
        char *err = q->r->error;
        q->r->error = NULL;
        clara_gen_result_free(q->r);
        q->r->error = err;
    }
    free_rows(q);
    clara_ids_free(&q->prompt.ids);
    free(q->owned);
    free(q->emb);
    free(q->logits);
    free(q->cand);
    q->owned = q->emb = q->logits = NULL;
    q->cand = NULL;
    q->ph = GEN_DONE;
}

clara_status clara_generate_batch(clara_ctx *ctx, const clara_gen_params *params, size_t n,
                                  clara_gen_result *results, clara_status *statuses) {
    clara_batch *b = NULL;
    clara_batch_params bp = clara_batch_default_params();
    bp.yield_ms = 0; /* every request waits for all: nothing to interleave */
    clara_status s = clara_batch_create(ctx, &bp, &b);
    for (size_t i = 0; i < n; i++) statuses[i] = (clara_status)-1; /* not returned yet */
    for (size_t i = 0; s == CLARA_OK && i < n; i++)
        s = clara_batch_add(b, &params[i], &results[i], &statuses[i]);
    clara_batch_done done[16];
    size_t left = n;
    while (s == CLARA_OK && left > 0) {
        size_t k = 0;
        s = clara_batch_step(b, done, 16, &k);
        for (size_t j = 0; j < k; j++) *(clara_status *)done[j].user = done[j].status;
        left -= k;
    }
    clara_batch_free(b); /* after a failure: the requests left get its error */
    for (size_t i = 0; i < n; i++)
        if (statuses[i] == (clara_status)-1) statuses[i] = s;
    return s;
}

clara_status clara_generate(clara_ctx *ctx, const clara_gen_params *p, clara_gen_result *r) {
    clara_status st;
    clara_status s = clara_generate_batch(ctx, p, 1, r, &st);
    if (s == CLARA_OK && st != CLARA_OK) {
        s = clara_fail(st, "%s", r->error ? r->error : clara_status_name(st));
        clara_gen_result_free(r);
    }
    return s;
}
