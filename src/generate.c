/* generate.c - answering, E2E retrieval and paraphrase (spec §8-§11) for one request or several
 * at once. Requests of a batch share their compression passes and run every decoding step
 * together (one forward pass, one weight read, per step for all); each request's result is what
 * it gets alone, since rows of a batch never see each other. A request that fails (bad input,
 * prompt too long) fails alone with its own message. Deterministic: greedy, eval mode. */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/status.h"
#include "forward.h"
#include "pipeline.h"
#include "prefix.h"
#include "prompt.h"

/* The reference truncates prompts at 1024 tokens (cutting the question); we do not (spec §8.3). */
#define CLARA_REFERENCE_PROMPT_LIMIT 1024

typedef struct {
    const clara_gen_params *p;
    clara_gen_result *r;
    clara_status st;      /* CLARA_OK while the request is alive */
    float *owned;         /* vectors compressed here (documents given as text) */
    const float *vectors; /* the k document vectors in prompt order */
    size_t k;
    clara_adapter_set set; /* generation adapters (spec §5) */
    clara_prompt prompt;   /* its ids (the constant head's before first_mem: prefix.h) */
    float *emb;            /* prompt embeddings with the vectors written in */
    uint32_t n_prompt;
    float *logits; /* [n_vocab] of the latest step */
    bool done;
    clara_cancel cancel; /* the caller's callback (p->cancelled), latched */
} gen_req;

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
    free(r->error);
    memset(r, 0, sizeof *r);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* Adds the time since *t0 to field `off` of every live request's result and restarts *t0. */
static void charge(gen_req *q, size_t n, size_t off, double *t0) {
    double t = now_ms();
    for (size_t i = 0; i < n; i++)
        if (q[i].st == CLARA_OK) *(double *)((char *)q[i].r + off) += t - *t0;
    *t0 = t;
}

/* Marks a request failed with the current error message. */
static void fail(gen_req *q, clara_status s) {
    if (q->st != CLARA_OK) return;
    q->st = s;
    const char *msg = clara_last_error();
    q->r->error = strdup(msg && *msg ? msg : clara_status_name(s));
}

/* Fails every request still running whose caller has cancelled it since the last look (between
 * phases and decoding steps; passes in between drop them themselves). One that has its answer
 * already keeps it. */
static void check_cancelled(gen_req *q, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (q[i].st == CLARA_OK && !q[i].done && clara_cancel_poll(&q[i].cancel)) {
            fail(&q[i], clara_fail(CLARA_ERR_CANCELLED, "the request was cancelled"));
            q[i].done = true;
        }
}

/* What the passes poll for request q: nothing when its caller gave no callback (a long prompt's
 * attention then goes in one round). */
static clara_cancel *cancel_of(gen_req *q) {
    return q->cancel.fn ? &q->cancel : NULL;
}

static size_t docs_k(const clara_model *m, const clara_gen_params *p) {
    if (p->task != CLARA_TASK_RETRIEVE) return p->n_docs;
    return p->top_k ? p->top_k : m->meta.generation_top_k;
}

static clara_status build_prompt(const clara_model *m, const clara_gen_params *p, size_t k,
                                 clara_prompt *pr) {
    return clara_prompt_build(m, p->task == CLARA_TASK_PARAPHRASE ? NULL : p->query, p->query_len,
                              p->paraphrase_template, k, pr);
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

/* Whether live request q takes part in the pass over documents given as text, or (queries) in
 * the E2E query pass. */
static bool takes_part(const gen_req *q, bool queries) {
    if (q->st != CLARA_OK) return false;
    return queries ? q->p->task == CLARA_TASK_RETRIEVE : q->p->vectors == NULL;
}

/* Encoder rows of the texts of the requests taking part (documents, or queries), run together
 * with adapter `ad`; out[i] receives request i's vectors. A text that cannot be encoded fails its
 * request only. */
static void compress_requests(clara_ctx *ctx, gen_req *q, size_t n, bool queries,
                              const clara_adapter *ad, float **out) {
    const clara_model *m = ctx->m;
    size_t per = (size_t)m->meta.n_mem * m->hp.n_embd, total = 0;
    for (size_t i = 0; i < n; i++)
        if (takes_part(&q[i], queries)) total += queries ? 1 : q[i].p->n_docs;
    clara_enc_row *rows = calloc(total + 1, sizeof *rows);
    size_t *first = calloc(n, sizeof *first), at = 0;
    for (size_t i = 0; rows && first && i < n; i++) {
        if (!takes_part(&q[i], queries)) continue;
        first[i] = at;
        size_t cnt = queries ? 1 : q[i].p->n_docs;
        for (size_t d = 0; d < cnt && q[i].st == CLARA_OK; d++) {
            clara_text t =
                queries ? (clara_text){q[i].p->query, q[i].p->query_len} : q[i].p->docs[d];
            clara_status s = clara_enc_row_build(m, &t, d, &rows[at + d]);
            rows[at + d].cancel = cancel_of(&q[i]);
            if (s != CLARA_OK) fail(&q[i], s);
        }
        if (q[i].st != CLARA_OK) /* this request is out: its rows go now */
            for (size_t d = 0; d < cnt; d++) clara_ids_free(&rows[at + d].ids);
        at += cnt;
    }
    /* compact the rows of requests still taking part, then run them (rows of requests that
     * failed meanwhile are freed below: the compaction only moves the live ones down) */
    size_t live = 0;
    for (size_t i = 0; rows && first && i < n; i++) {
        size_t cnt = queries ? 1 : q[i].p->n_docs;
        if (!takes_part(&q[i], queries)) continue;
        memmove(&rows[live], &rows[first[i]], cnt * sizeof *rows);
        first[i] = live;
        live += cnt;
    }
    float *vec = rows && first ? malloc(live * per * sizeof(float) + 1) : NULL;
    clara_status s = vec ? clara_enc_rows_run(ctx, rows, live, ad, vec)
                         : clara_fail(CLARA_ERR_NOMEM, "out of memory compressing documents");
    check_cancelled(q, n); /* requests cancelled in the passes have no vectors */
    for (size_t i = 0; i < n; i++) {
        if (!takes_part(&q[i], queries)) continue;
        size_t cnt = queries ? 1 : q[i].p->n_docs;
        out[i] = s == CLARA_OK ? malloc(cnt * per * sizeof(float) + 1) : NULL;
        if (s != CLARA_OK)
            fail(&q[i], s);
        else if (!out[i])
            fail(&q[i], clara_fail(CLARA_ERR_NOMEM, "out of memory"));
        else
            memcpy(out[i], vec + first[i] * per, cnt * per * sizeof(float));
    }
    for (size_t i = 0; rows && first && i < live; i++) clara_ids_free(&rows[i].ids);
    free(rows);
    free(first);
    free(vec);
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

/* Takes each live request's next greedy id from its logits; stops it after </s> or its limit. */
static void pick(const clara_model *m, gen_req *q, size_t n) {
    for (size_t i = 0; i < n; i++) {
        clara_gen_result *r = q[i].r;
        if (q[i].st != CLARA_OK || q[i].done) continue;
        int32_t id = argmax(q[i].logits, m->hp.n_vocab, &r->top2_gaps[r->n_ids]);
        r->ids[r->n_ids++] = id;
        q[i].done =
            (id == m->meta.eos_id && !q[i].p->ignore_eos) || r->n_ids == q[i].p->max_new_tokens;
    }
}

/* Each prefill sequence (slot i is request i) starts after its prompt's constant head, from the
 * context's cache (prefix.h); without memory for the lists, every prompt is computed whole. */
static clara_status start_after_heads(clara_ctx *ctx, const gen_req *q, clara_seq *seqs,
                                      uint32_t ns) {
    const clara_ids **ids = malloc(ns * sizeof *ids);
    uint32_t *head = malloc(ns * sizeof *head);
    clara_status s = CLARA_OK;
    for (uint32_t j = 0; ids && head && j < ns; j++) {
        const gen_req *g = &q[seqs[j].slot];
        ids[j] = &g->prompt.ids;
        head[j] = g->k ? g->prompt.first_mem : 0;
    }
    if (ids && head) s = clara_prefix_apply(ctx, seqs, ns, ids, head);
    free(ids);
    free(head);
    return s;
}

/* Greedy decoding of all live requests together (spec §9): one prefill pass over every prompt
 * (each in its own KV slot), then one pass per step over the requests still running. */
static clara_status decode(clara_ctx *ctx, gen_req *q, size_t n) {
    const clara_model *m = ctx->m;
    uint32_t V = m->hp.n_vocab, H = m->hp.n_embd, max_prompt = 0;
    clara_seq *seqs = calloc(n + 1, sizeof *seqs);
    int32_t *pos = NULL, *step_pos = calloc(n + 1, sizeof *step_pos);
    float *rows = malloc((n + 1) * H * sizeof(float));
    clara_status s =
        seqs && step_pos && rows ? CLARA_OK : clara_fail(CLARA_ERR_NOMEM, "out of memory");
    uint32_t ns = 0;
    for (size_t i = 0; s == CLARA_OK && i < n; i++) {
        gen_req *g = &q[i];
        uint32_t mx = g->p->max_new_tokens;
        g->done = g->st != CLARA_OK || mx == 0;
        g->r->ids = malloc((mx ? mx : 1) * sizeof(int32_t));
        g->r->top2_gaps = malloc((mx ? mx : 1) * sizeof(float));
        g->logits = malloc(V * sizeof(float));
        if (!g->r->ids || !g->r->top2_gaps || !g->logits)
            s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
        if (s == CLARA_OK && !g->done)
            s = clara_ctx_reserve_slot(ctx, (uint32_t)i, g->n_prompt + mx);
        if (g->n_prompt > max_prompt) max_prompt = g->n_prompt;
    }
    if (s == CLARA_OK) pos = malloc((max_prompt + 1) * sizeof(int32_t));
    if (s == CLARA_OK && !pos) s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    for (uint32_t t = 0; s == CLARA_OK && t < max_prompt; t++) pos[t] = (int32_t)t;
    for (size_t i = 0; s == CLARA_OK && i < n; i++) {
        if (q[i].done) continue;
        clara_kv_clear(ctx, (uint32_t)i);
        /* only the last row's logits are wanted: the last layer skips the other rows */
        seqs[ns++] = (clara_seq){q[i].n_prompt, q[i].emb,          pos,
                                 (int)i,        &q[i].set,         NULL,
                                 q[i].logits,   q[i].n_prompt - 1, cancel_of(&q[i])};
    }
    double t0 = now_ms();
    if (s == CLARA_OK && ns) s = start_after_heads(ctx, q, seqs, ns);
    if (s == CLARA_OK && ns) s = clara_forward_batch(ctx, seqs, ns);
    clara_prefix_keep(ctx); /* the heads the cache lacked, from the slots that computed them */
    charge(q, n, offsetof(clara_gen_result, prefill_ms), &t0);
    check_cancelled(q, n); /* those dropped from the prefill have no logits */
    for (size_t i = 0; s == CLARA_OK && i < n; i++)
        if (!q[i].done && q[i].p->first_logits)
            memcpy(q[i].p->first_logits, q[i].logits, V * sizeof(float));
    while (s == CLARA_OK) {
        pick(m, q, n);
        ns = 0;
        for (size_t i = 0; i < n; i++) {
            if (q[i].done) continue;
            clara_gen_result *r = q[i].r;
            clara_embed_tokens(m, &r->ids[r->n_ids - 1], 1, rows + (size_t)ns * H);
            step_pos[ns] = (int32_t)(q[i].n_prompt + r->n_ids - 1);
            seqs[ns] = (clara_seq){
                1, rows + (size_t)ns * H, &step_pos[ns], (int)i, &q[i].set, NULL, q[i].logits,
                0, cancel_of(&q[i])};
            ns++;
        }
        if (!ns) break;
        s = clara_forward_batch(ctx, seqs, ns);
        check_cancelled(q, n); /* between steps; those dropped from this one have no logits */
    }
    charge(q, n, offsetof(clara_gen_result, decode_ms), &t0);
    for (size_t i = 0; s == CLARA_OK && i < n; i++)
        if (q[i].st == CLARA_OK) {
            clara_status d =
                clara_tokenizer_decode(m->tok, q[i].r->ids, q[i].r->n_ids, &q[i].r->text);
            if (d != CLARA_OK) fail(&q[i], d);
        }
    free(seqs);
    free(pos);
    free(step_pos);
    free(rows);
    return s;
}

/* Compression, retrieval ranking and prompts of every live request. */
static void prepare(clara_ctx *ctx, gen_req *q, size_t n) {
    const clara_model *m = ctx->m;
    float **out = calloc(n + 1, sizeof *out);
    if (!out) {
        for (size_t i = 0; i < n; i++) fail(&q[i], clara_fail(CLARA_ERR_NOMEM, "out of memory"));
        return;
    }
    check_cancelled(q, n);
    for (size_t i = 0; i < n; i++) {
        bool from_docs = q[i].p->vectors == NULL;
        q[i].set = generation_set(m, from_docs);
        q[i].vectors = q[i].p->vectors;
        q[i].k = docs_k(m, q[i].p);
    }
    /* documents given as text, of all requests in shared passes */
    double t0 = now_ms();
    compress_requests(ctx, q, n, false, m->encoder, out);
    for (size_t i = 0; i < n; i++)
        if (takes_part(&q[i], false)) q[i].vectors = q[i].owned = out[i];
    /* E2E: the queries with the query reasoner, then the ranking */
    memset(out, 0, n * sizeof *out);
    compress_requests(ctx, q, n, true, m->query, out);
    for (size_t i = 0; i < n; i++) {
        if (takes_part(&q[i], true)) {
            clara_status s = rank(m, &q[i], out[i]);
            if (s != CLARA_OK) fail(&q[i], s);
        }
        free(out[i]);
    }
    free(out);
    charge(q, n, offsetof(clara_gen_result, compress_ms), &t0);
    check_cancelled(q, n);
    for (size_t i = 0; i < n; i++)
        if (q[i].st == CLARA_OK) {
            clara_status s = prompt_embeddings(m, &q[i]);
            if (s != CLARA_OK) fail(&q[i], s);
        }
}

clara_status clara_generate_batch(clara_ctx *ctx, const clara_gen_params *params, size_t n,
                                  clara_gen_result *results, clara_status *statuses) {
    gen_req *q = calloc(n + 1, sizeof *q);
    if (!q) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        memset(&results[i], 0, sizeof results[i]);
        q[i] = (gen_req){.p = &params[i],
                         .r = &results[i],
                         .st = CLARA_OK,
                         .cancel = {params[i].cancelled, params[i].cancel_arg, false}};
        clara_status s = validate(ctx->m, &params[i]);
        if (s != CLARA_OK) fail(&q[i], s);
    }
    prepare(ctx, q, n);
    clara_status s = decode(ctx, q, n);
    for (size_t i = 0; i < n; i++) {
        if (s != CLARA_OK) fail(&q[i], s);
        statuses[i] = q[i].st;
        if (q[i].st != CLARA_OK) {
            char *err = results[i].error;
            results[i].error = NULL;
            clara_gen_result_free(&results[i]);
            results[i].error = err;
        }
        free(q[i].owned);
        clara_ids_free(&q[i].prompt.ids);
        free(q[i].emb);
        free(q[i].logits);
    }
    free(q);
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
