/* forward.h - the transformer forward pass (Mistral/Llama: RMSNorm, GQA attention with RoPE,
 * SwiGLU) over a batch of sequences: every linear layer runs once over all rows of the batch
 * (one weight read per batch), attention is per sequence (block-diagonal), LoRA per sequence. */
#ifndef CLARA_FORWARD_H
#define CLARA_FORWARD_H

#include "ctx.h"

/* A sequence's cancellation check: the caller's callback and the answer once it said yes (the
 * callback is not asked again, and every sequence sharing the check sees the same answer).
 * Polled on the calling thread only. */
typedef struct {
    bool (*fn)(void *arg);
    void *arg;
    bool hit;
} clara_cancel;

/* Whether c (may be NULL) asks to stop, latching the answer. */
static inline bool clara_cancel_poll(clara_cancel *c) {
    if (c && !c->hit && c->fn && c->fn(c->arg)) c->hit = true;
    return c && c->hit;
}

typedef struct {
    uint32_t n;         /* rows of this sequence in the batch */
    const float *embd;  /* [n][n_embd] input embeddings (token rows or injected vectors) */
    const int32_t *pos; /* [n] absolute RoPE positions */
    int slot;           /* KV slot continued and extended by these rows; -1 = a one-pass
                           sequence with no past and nothing cached (compression) */
    const clara_adapter_set *adapters; /* LoRA deltas summed over these (may be NULL/empty) */
    float *hidden;                     /* optional [n][n_embd]: final-norm states of every row */
    float *logits;                     /* optional [n_vocab]: logits of the last row */
    /* Rows [out_from, n) are the ones whose outputs are wanted (hidden is then written from row
     * out_from on; out_from < n). The last layer computes queries, attention, projections and
     * feed-forward only for them: earlier rows give their keys and values, as every row does
     * in every layer. 0: all rows (the outputs are the same either way). */
    uint32_t out_from;
    /* Optional: polled before every layer and between rounds of a long attention. Once it fires,
     * the sequence leaves the batch: its rows are no longer computed, its outputs are not written
     * and its slot is not extended (the rest of the batch gives the same bits as without it). */
    clara_cancel *cancel;
} clara_seq;

/* Rows attend causally to each other and to their slot's cached positions; with a slot they are
 * appended to it. Sequences cancelled on the way are dropped (their outputs left as they were);
 * that is no error, even when every sequence is dropped. */
clara_status clara_forward_batch(clara_ctx *ctx, const clara_seq *seqs, uint32_t n_seqs);
void clara_kv_clear(clara_ctx *ctx, uint32_t slot);

/* Query rows per sequence in one round of a layer's attention (query rows qseqs[s] of
 * sequence seqs[s]): the longest sequence's (*most: one round), or where a sequence can be
 * cancelled a fixed round, so that the batch is asked again between rounds. Shared by the
 * backends so that they poll at the same points. */
uint32_t clara_attn_round_rows(const clara_seq *seqs, const clara_seq *qseqs, uint32_t n_seqs,
                               uint32_t *most);

/* out[i] = token_embd[ids[i]] as f32. */
void clara_embed_tokens(const clara_model *m, const int32_t *ids, uint32_t n, float *out);

#endif
