/* batch.c - continuous batching (clara.h: clara_batch). Requests join at any time and leave as
 * soon as they finish; each step does a piece of preparatory work — a compression pass over the
 * next documents (or E2E queries) of the waiting requests, then a prefill pass over the prompts
 * ready — and one decoding step for every decoding request, all of them in one forward pass (one
 * weight read per step for all). A long pass lets the decoding requests take a step between its
 * layers when yield_ms have passed since their last one. Rows of a pass never see each other, so
 * each request gets exactly the ids it gets alone, whatever joins or leaves around it. */
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "cpu/matmul.h"
#include "gen.h"
#include "prefix.h"

/* Rows of one pass when the caller does not say: compress.c's batch size. */
#define BATCH_PIECE_ROWS 2200
/* The fewest rows a piece is cut to (below, a pass no longer pays for reading the weights). */
#define BATCH_MIN_PIECE 64

struct clara_batch {
    clara_ctx *ctx;
    clara_batch_params bp;
    gen_req **req; /* in arrival order */
    size_t n, cap;
    /* the requests taking part in a decoding step, and in a compression or prefill pass (a step
     * may run inside a pass, between its layers) */
    gen_req **step_in, **piece_in;
    bool *slot_used; /* KV slots of the context held by a request */
    uint32_t n_slots;
    double last_step;    /* when the last decoding step ended */
    double last_hook;    /* when the between-layers hook last ran in this pass (0: not yet) */
    double layer_ms;     /* how long the latest layer of a long pass took */
    uint32_t layer_rows; /* the rows of the pass that layer belonged to */
    uint32_t pass_rows;  /* rows of the passes now running (at most) */
    double fit_rows;     /* rows whose layer takes yield_ms, from the latest layer (0: unknown) */
    /* decoding step scratch, grown with the batch */
    clara_seq *seqs;
    float *rows;
    int32_t *pos;
    size_t step_cap;
};

clara_batch_params clara_batch_default_params(void) {
    return (clara_batch_params){BATCH_PIECE_ROWS, 0};
}

clara_status clara_batch_create(clara_ctx *ctx, const clara_batch_params *params,
                                clara_batch **out) {
    clara_batch *b = calloc(1, sizeof *b);
    if (!b) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    b->ctx = ctx;
    b->bp = params ? *params : clara_batch_default_params();
    if (!b->bp.piece_rows) b->bp.piece_rows = BATCH_PIECE_ROWS;
    *out = b;
    return CLARA_OK;
}

static clara_status take_slot(clara_batch *b, gen_req *q);

static void release_slot(clara_batch *b, gen_req *q) {
    if (q->slot >= 0) b->slot_used[q->slot] = false;
    q->slot = -1;
}

void clara_batch_free(clara_batch *b) {
    if (!b) return;
    for (size_t i = 0; i < b->n; i++) {
        gen_req_fail(b->req[i], clara_fail(CLARA_ERR_CANCELLED, "the batch was freed"));
        gen_req_finish(b->ctx->m, b->req[i]);
        free(b->req[i]);
    }
    b->ctx->between_layers = NULL;
    free(b->req);
    free(b->step_in);
    free(b->piece_in);
    free(b->slot_used);
    free(b->seqs);
    free(b->rows);
    free(b->pos);
    free(b);
}

size_t clara_batch_size(const clara_batch *b) {
    return b->n;
}

size_t clara_batch_decoding(const clara_batch *b) {
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) k += b->req[i]->ph == GEN_DECODE;
    return k;
}

clara_status clara_batch_add(clara_batch *b, const clara_gen_params *params,
                             clara_gen_result *result, void *user) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8;
        gen_req **r = realloc(b->req, cap * sizeof *r);
        if (r) b->req = r;
        gen_req **si = realloc(b->step_in, cap * sizeof *si);
        if (si) b->step_in = si;
        gen_req **pi = realloc(b->piece_in, cap * sizeof *pi);
        if (pi) b->piece_in = pi;
        if (!r || !si || !pi) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        b->cap = cap;
    }
    gen_req *q = malloc(sizeof *q);
    if (!q) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    gen_req_start(b->ctx->m, q, params, result, user);
    clara_status s = q->ph != GEN_DONE ? take_slot(b, q) : CLARA_OK;
    if (s != CLARA_OK) gen_req_fail(q, s);
    b->req[b->n++] = q;
    return CLARA_OK;
}

/* Adds the time since t0 to field `off` of the results of requests[0, n). */
static void charge(gen_req **r, size_t n, size_t off, double t0) {
    double t = gen_now_ms() - t0;
    for (size_t i = 0; i < n; i++) *(double *)((char *)r[i]->r + off) += t;
}

/* Grows the decoding step's scratch to n rows. */
static clara_status step_room(clara_batch *b, size_t n) {
    if (n <= b->step_cap) return CLARA_OK;
    size_t H = b->ctx->m->hp.n_embd, cap = n * 2;
    clara_seq *s = realloc(b->seqs, cap * sizeof *s);
    if (s) b->seqs = s;
    float *r = realloc(b->rows, cap * H * sizeof(float));
    if (r) b->rows = r;
    int32_t *p = realloc(b->pos, cap * sizeof(int32_t));
    if (p) b->pos = p;
    if (!s || !r || !p) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    b->step_cap = cap;
    return CLARA_OK;
}

/* One decoding step: every decoding request's last id at its next position, one pass for all. */
static clara_status decode_step(clara_batch *b) {
    const clara_model *m = b->ctx->m;
    size_t H = m->hp.n_embd, ns = 0;
    gen_req **in = b->step_in;
    for (size_t i = 0; i < b->n; i++)
        if (b->req[i]->ph == GEN_DECODE && !gen_req_cancelled(b->req[i])) in[ns++] = b->req[i];
    if (!ns) return CLARA_OK;
    clara_status s = step_room(b, ns);
    if (s != CLARA_OK) return s;
    double t0 = gen_now_ms();
    for (size_t i = 0; i < ns; i++) {
        gen_req *q = in[i];
        clara_gen_result *r = q->r;
        clara_embed_tokens(m, &r->ids[r->n_ids - 1], 1, b->rows + i * H);
        b->pos[i] = (int32_t)(q->n_prompt + r->n_ids - 1);
        b->seqs[i] = (clara_seq){1,
                                 b->rows + i * H,
                                 &b->pos[i],
                                 q->slot,
                                 &q->set,
                                 NULL,
                                 q->logits,
                                 0,
                                 q->cancel.fn ? &q->cancel : NULL};
    }
    /* A pass of up to CLARA_MATMUL_GROUP_ROWS rows computes each row's outputs with the bits of
     * that row alone (cpu/matmul.h); more rows would go through the packed GEMM, whose sums
     * differ in their last bits, and a request's ids would depend on how many others decode. */
    for (size_t i0 = 0; s == CLARA_OK && i0 < ns; i0 += CLARA_MATMUL_GROUP_ROWS) {
        size_t n = ns - i0 < CLARA_MATMUL_GROUP_ROWS ? ns - i0 : CLARA_MATMUL_GROUP_ROWS;
        s = clara_forward_batch(b->ctx, b->seqs + i0, (uint32_t)n);
    }
    for (size_t i = 0; s == CLARA_OK && i < ns; i++)
        if (!gen_req_cancelled(in[i])) gen_req_pick(m, in[i]);
    charge(in, ns, offsetof(clara_gen_result, decode_ms), t0);
    b->last_step = gen_now_ms();
    return s;
}

/* Between the layers of a long pass (ctx.h): the decoding requests' step, when waiting for the
 * end of one more layer (as long as the last one) would leave them without a step for more than
 * yield_ms. */
static void between_layers(void *arg) {
    clara_batch *b = arg;
    double now = gen_now_ms(), next_ms = b->layer_ms;
    if (b->last_hook > 0) { /* a layer's time is not proportional to its rows (the weights are
                               read once per pass): the estimate follows the sizes run */
        b->layer_ms = next_ms = now - b->last_hook;
        b->layer_rows = b->pass_rows;
        if (b->layer_ms > 0) b->fit_rows = b->pass_rows * b->bp.yield_ms / b->layer_ms;
    } else if (b->layer_rows && b->pass_rows > b->layer_rows) {
        /* a pass's first layer, larger than the one measured last (a prefill's, say): at most
         * proportionally longer. Taking the small layer's time left the running streams waiting
         * for yield_ms and then this whole layer (+200 ms over yield_ms: 16 documents
         * compressed after short prefills, 1B q4_0) */
        next_ms = b->layer_ms * b->pass_rows / b->layer_rows;
    }
    b->last_hook = now;
    if (!clara_batch_decoding(b)) return; /* the pace measured for later pieces, no step */
    if (now - b->last_step + next_ms < b->bp.yield_ms) return;
    clara_status s = decode_step(b);
    if (s != CLARA_OK) { /* the pass goes on; the step's requests fail */
        for (size_t i = 0; i < b->n; i++)
            if (b->req[i]->ph == GEN_DECODE) gen_req_fail(b->req[i], s);
    }
    b->last_hook = gen_now_ms(); /* the next layer's time without the step's */
}

/* Whether passes are cut for the decoding requests' sake (else as large as fits: throughput). */
static bool paced(const clara_batch *b) {
    return b->bp.yield_ms > 0 && clara_batch_decoding(b);
}

/* While paced: the rows whose layer takes about yield_ms at the pace measured so far (b->fit_rows:
 * the decoding requests wait for the end of a layer for their step), at most BATCH_PIECE_ROWS,
 * or piece_rows while that pace is not known yet. Otherwise BATCH_PIECE_ROWS. */
static uint32_t pace_rows(const clara_batch *b) {
    if (!paced(b)) return BATCH_PIECE_ROWS;
    if (!(b->fit_rows > 0)) return b->bp.piece_rows;
    if (b->fit_rows >= BATCH_PIECE_ROWS) return BATCH_PIECE_ROWS;
    return b->fit_rows > BATCH_MIN_PIECE ? (uint32_t)b->fit_rows : BATCH_MIN_PIECE;
}

/* Rows of the next pass: while paced, at most piece_rows and pace_rows; otherwise as large as
 * fits. */
static uint32_t piece_rows(const clara_batch *b) {
    uint32_t pace = pace_rows(b);
    return paced(b) && b->bp.piece_rows < pace ? b->bp.piece_rows : pace;
}

/* Allows (or stops) the decoding step between the layers of the passes that follow. */
static void allow_steps(clara_batch *b, bool on) {
    /* also without decoding requests: the hook measures the pace of passes for piece_rows */
    bool any = on && b->bp.yield_ms > 0;
    b->ctx->between_layers = any ? between_layers : NULL;
    b->last_hook = 0; /* a layer's time is measured within a pass */
    b->ctx->between_arg = b;
}

/* The requests in `phase` whose next rows go in the next compression pass: piece_in[j] gives
 * took[j] rows (from its next_row on); returns how many requests, with the rows and their tokens
 * in n_rows, n_tok. The first one's rows stay in one pass as long as a layer of it keeps the pace
 * (pace_rows: a decoding step between two pieces of them would delay its first token by a step);
 * the others' join up to piece_rows. */
static size_t pick_rows(clara_batch *b, gen_phase phase, size_t *took, size_t *n_rows,
                        size_t *n_tok) {
    size_t total = 0, nr = 0, nq = 0;
    uint32_t most = piece_rows(b), first = pace_rows(b);
    for (size_t i = 0; i < b->n && total < most; i++) {
        gen_req *q = b->req[i];
        if (q->ph != phase || gen_req_cancelled(q)) continue;
        uint32_t cap = nq ? most : first; /* first >= most */
        size_t k = 0;
        for (size_t d = q->next_row; d < q->n_rows; d++, k++) {
            if (nr && total + q->rows[d].ids.n > cap) break;
            total += q->rows[d].ids.n, nr++;
        }
        if (k) took[nq] = k, b->piece_in[nq++] = q;
    }
    *n_rows = nr;
    *n_tok = total;
    return nq;
}

/* A compression pass over the next rows of the requests in `phase` (their documents, or their
 * E2E queries), at most piece_rows rows (at least one row; pick_rows). */
static clara_status compress_piece(clara_batch *b, gen_phase phase) {
    const clara_model *m = b->ctx->m;
    size_t per = (size_t)m->meta.n_mem * m->hp.n_embd, total = 0, nr = 0;
    gen_req **in = b->piece_in;
    size_t *took = malloc((b->n + 1) * sizeof *took);
    if (!took) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    size_t nq = pick_rows(b, phase, took, &nr, &total);
    if (!nr) {
        free(took);
        return CLARA_OK;
    }
    clara_enc_row *rows = malloc(nr * sizeof *rows);
    float *vec = malloc(nr * per * sizeof(float));
    if (!rows || !vec) {
        free(rows), free(vec), free(took);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    size_t at = 0;
    for (size_t j = 0; j < nq; j++)
        for (size_t d = 0; d < took[j]; d++) rows[at++] = in[j]->rows[in[j]->next_row + d];
    double t0 = gen_now_ms();
    b->pass_rows = (uint32_t)total;
    allow_steps(b, true);
    clara_status s =
        clara_enc_rows_run(b->ctx, rows, nr, phase == GEN_QUERY ? m->query : m->encoder, vec);
    allow_steps(b, false);
    at = 0;
    for (size_t j = 0; j < nq; j++) {
        gen_req *q = in[j];
        charge(&q, 1, offsetof(clara_gen_result, compress_ms), t0);
        const float *v = vec + at * per;
        at += took[j];
        if (s != CLARA_OK) {
            gen_req_fail(q, s);
            continue;
        }
        if (gen_req_cancelled(q)) continue; /* its rows were dropped from the pass */
        if (phase == GEN_QUERY) {
            gen_req_query_done(m, q, v);
            continue;
        }
        memcpy(q->owned + q->next_row * per, v, took[j] * per * sizeof(float));
        q->next_row += took[j];
        if (q->next_row == q->n_rows) gen_req_documents_done(m, q);
    }
    free(rows);
    free(vec);
    free(took);
    return CLARA_OK; /* a failed pass fails its requests, not the batch */
}

/* The lowest KV slot no request holds, taken when the request arrives (so that requests added
 * together hold slots in their order) and given back when it leaves. */
static clara_status take_slot(clara_batch *b, gen_req *q) {
    uint32_t i = 0;
    while (i < b->n_slots && b->slot_used[i]) i++;
    if (i == b->n_slots) {
        bool *u = realloc(b->slot_used, (b->n_slots + 8) * sizeof *u);
        if (!u) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        memset(u + b->n_slots, 0, 8 * sizeof *u);
        b->slot_used = u;
        b->n_slots += 8;
    }
    b->slot_used[i] = true;
    q->slot = (int)i;
    return CLARA_OK;
}

/* q's slot made to hold its prompt and answer, emptied. */
static clara_status ready_slot(clara_batch *b, gen_req *q) {
    clara_status s =
        clara_ctx_reserve_slot(b->ctx, (uint32_t)q->slot, q->n_prompt + q->p->max_new_tokens);
    if (s == CLARA_OK) clara_kv_clear(b->ctx, (uint32_t)q->slot);
    return s;
}

/* Each prefill sequence starts after its prompt's constant head when the context's cache has it
 * (prefix.h); without memory for the lists, every prompt is computed whole. */
static clara_status start_after_heads(clara_ctx *ctx, gen_req **in, clara_seq *seqs, size_t n) {
    const clara_ids **ids = malloc((n + 1) * sizeof *ids);
    uint32_t *head = malloc((n + 1) * sizeof *head);
    clara_status s = CLARA_OK;
    for (size_t j = 0; ids && head && j < n; j++) {
        ids[j] = &in[j]->prompt.ids;
        head[j] = in[j]->k ? in[j]->prompt.first_mem : 0;
    }
    if (ids && head) s = clara_prefix_apply(ctx, seqs, (uint32_t)n, ids, head);
    free(ids);
    free(head);
    return s;
}

/* A prefill pass over the next prompts waiting (at most piece_rows rows, at least one prompt);
 * each request then takes its first id and decodes from the next step on. */
static clara_status prefill_piece(clara_batch *b) {
    const clara_model *m = b->ctx->m;
    size_t total = 0, ns = 0;
    gen_req **in = b->piece_in;
    clara_seq *seqs = malloc((b->n + 1) * sizeof *seqs);
    uint32_t max_prompt = 0, most = piece_rows(b);
    for (size_t i = 0; i < b->n; i++) {
        gen_req *q = b->req[i];
        if (q->ph != GEN_PREFILL || gen_req_cancelled(q)) continue;
        if (ns && total + q->n_prompt > most) break;
        total += q->n_prompt;
        in[ns++] = q;
        if (q->n_prompt > max_prompt) max_prompt = q->n_prompt;
    }
    int32_t *pos = malloc((max_prompt + 1) * sizeof *pos);
    if (!seqs || !pos) {
        free(seqs), free(pos);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    for (uint32_t t = 0; t < max_prompt; t++) pos[t] = (int32_t)t;
    size_t k = 0;
    for (size_t i = 0; i < ns; i++) {
        gen_req *q = in[i];
        clara_status s = ready_slot(b, q);
        if (s != CLARA_OK) {
            gen_req_fail(q, s);
            continue;
        }
        /* only the last row's logits are wanted: the last layer skips the other rows */
        in[k] = q;
        seqs[k++] = (clara_seq){q->n_prompt, q->emb,          pos,
                                q->slot,     &q->set,         NULL,
                                q->logits,   q->n_prompt - 1, q->cancel.fn ? &q->cancel : NULL};
    }
    double t0 = gen_now_ms();
    clara_status s = k ? start_after_heads(b->ctx, in, seqs, k) : CLARA_OK;
    b->pass_rows = 0; /* the rows left after the heads */
    for (size_t i = 0; i < k; i++) b->pass_rows += seqs[i].n;
    allow_steps(b, true);
    if (s == CLARA_OK && k) s = clara_forward_batch(b->ctx, seqs, (uint32_t)k);
    allow_steps(b, false);
    clara_prefix_keep(b->ctx); /* the heads the cache lacked, from the slots that computed them */
    charge(in, k, offsetof(clara_gen_result, prefill_ms), t0);
    for (size_t i = 0; i < k; i++) {
        gen_req *q = in[i];
        if (s != CLARA_OK) gen_req_fail(q, s);
        if (gen_req_cancelled(q) || q->st != CLARA_OK) continue;
        free(q->emb);
        q->emb = NULL;
        if (q->p->first_logits)
            memcpy(q->p->first_logits, q->logits, m->hp.n_vocab * sizeof(float));
        q->ph = GEN_DECODE;
        gen_req_pick(m, q);
    }
    free(seqs);
    free(pos);
    return CLARA_OK;
}

/* Moves finished requests (in arrival order) to done, up to max_done. */
static size_t collect(clara_batch *b, clara_batch_done *done, size_t max_done) {
    size_t k = 0, w = 0;
    for (size_t i = 0; i < b->n; i++) {
        gen_req *q = b->req[i];
        if (q->ph == GEN_DONE && k < max_done) {
            release_slot(b, q);
            gen_req_finish(b->ctx->m, q);
            done[k++] = (clara_batch_done){q->user, q->st};
            free(q);
            continue;
        }
        b->req[w++] = q;
    }
    b->n = w;
    return k;
}

static bool any_in(const clara_batch *b, gen_phase ph) {
    for (size_t i = 0; i < b->n; i++)
        if (b->req[i]->ph == ph) return true;
    return false;
}

clara_status clara_batch_step(clara_batch *b, clara_batch_done *done, size_t max_done,
                              size_t *n_done) {
    clara_status s = CLARA_OK;
    for (size_t i = 0; i < b->n; i++) gen_req_cancelled(b->req[i]);
    /* a compression piece, and the prefill of the prompts ready (those it just finished too: a
     * request's first token does not wait a decoding step between its phases, while the
     * decoding requests still step between the layers of long passes) */
    if (any_in(b, GEN_COMPRESS))
        s = compress_piece(b, GEN_COMPRESS);
    else if (any_in(b, GEN_QUERY))
        s = compress_piece(b, GEN_QUERY);
    if (s == CLARA_OK && any_in(b, GEN_QUERY) && !any_in(b, GEN_COMPRESS))
        s = compress_piece(b, GEN_QUERY);
    if (s == CLARA_OK && any_in(b, GEN_PREFILL)) s = prefill_piece(b);
    if (s == CLARA_OK) s = decode_step(b);
    if (s != CLARA_OK) { /* out of memory for the step: its requests fail, the batch goes on */
        for (size_t i = 0; i < b->n; i++)
            if (b->req[i]->ph != GEN_DONE) gen_req_fail(b->req[i], s);
        s = CLARA_OK;
    }
    *n_done = collect(b, done, max_done);
    return s;
}

clara_status clara_batch_compress(clara_batch *b, const clara_text *docs, size_t n_docs,
                                  float *vectors, uint32_t *n_tokens,
                                  const clara_compress_params *params) {
    allow_steps(b, true);
    clara_status s = clara_compress_rows(b->ctx, docs, n_docs, vectors, n_tokens, params,
                                         b->pass_rows = piece_rows(b));
    allow_steps(b, false);
    return s;
}
