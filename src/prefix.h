/* prefix.h - the prompt's constant head computed once. Every answer's prompt starts with the same
 * tokens ("<s> [INST] " + system prompt + "\n\nBackground:\n", spec §8) before its first memory
 * slot; their keys and values depend only on those ids, their positions 0.. and the adapters, so
 * a context keeps them per (adapter set, head ids), taken from the first prefill that computes
 * them, and later prefills start after them.
 *
 * The outputs are the same bits as a prefill over the whole prompt: rows are computed
 * independently of each other (RMSNorm, RoPE, SwiGLU per row; attention reads the slot's keys
 * whether this pass or an earlier one wrote them, each score and value sum one FMA chain in key
 * order whatever the grouping of query rows), and a matmul's bits for a row do not depend on the
 * rows beside it once it takes its batch path (cpu/matmul.h: CLARA_MATMUL_BATCH_ROWS). So the
 * head is used only when it and the rest of the sequence both have at least that many rows: the
 * pass over the whole prompt took the batch path too. */
#ifndef CLARA_PREFIX_H
#define CLARA_PREFIX_H

#include "forward.h"
#include "tokenizer.h"

/* Heads a context keeps (least recently used replaced): the QA head and a few paraphrase
 * templates' per adapter set. One is ~10 MB at 7B (38 rows x 32 layers x 2 x 4 KB). */
#define CLARA_PREFIX_ENTRIES 8

typedef struct {
    uint64_t hits;        /* sequences that started after a cached head */
    uint64_t kept;        /* heads taken into the cache from a prefill of a whole prompt */
    uint64_t rows_reused; /* head rows not computed again, over the hits */
} clara_prefix_stats;

/* For each prefill sequence seqs[i] (a fresh KV slot: n_past 0; positions 0..; rows whose
 * embeddings are those of prompt_ids[i]), whose first head_len[i] ids are the constant head (0
 * when the prompt has no memory slot: the longest cached head the prompt starts with is then
 * taken, if any): when the head's keys and values are cached, copies them into the sequence's
 * slot (n_past = head) and advances the sequence past the head (embd, pos, n, out_from, hidden),
 * so that clara_forward_batch computes only the rest. When it is not, the sequence is left whole
 * and the head noted: clara_prefix_keep, called right after that forward pass, takes it from the
 * slot (a miss costs nothing but that copy). Sequences that do not qualify (no slot, head or
 * rest shorter than CLARA_MATMUL_BATCH_ROWS, an output wanted from a head row, head rows that
 * are not their ids' embeddings) are left as they are. Environment CLARA_PREFIX_CACHE=0 turns
 * it off. Never fails: without memory, prompts are computed whole. */
clara_status clara_prefix_apply(clara_ctx *ctx, clara_seq *seqs, uint32_t n,
                                const clara_ids *const *prompt_ids, const uint32_t *head_len);

/* After the forward pass over the sequences of the last clara_prefix_apply: the heads it found
 * missing, from the slots of the sequences that computed them (not from one cancelled in the
 * pass, or from a pass that failed). */
void clara_prefix_keep(clara_ctx *ctx);

/* What the cache of ctx has done since it was created. */
clara_prefix_stats clara_prefix_stats_of(const clara_ctx *ctx);

/* Frees the cache (clara_ctx_free). */
void clara_prefix_free(struct clara_prefix_cache *c);

#endif
