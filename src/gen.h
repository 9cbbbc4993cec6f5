/* gen.h - one generation request inside the engine (generate.c) and the continuous batch that
 * runs many of them (batch.c). A request goes through its phases in order, each done in passes
 * shared with other requests: its documents compressed (when given as text), its query compressed
 * and the documents ranked (E2E retrieval), its prompt prefilled, then one decoding step at a time
 * until </s>, its limit, its caller or a cancellation ends it. */
#ifndef CLARA_GEN_H
#define CLARA_GEN_H

#include "forward.h"
#include "pipeline.h"
#include "prompt.h"
#include "sample.h"

typedef enum { GEN_COMPRESS, GEN_QUERY, GEN_PREFILL, GEN_DECODE, GEN_DONE } gen_phase;

typedef struct {
    const clara_gen_params *p;
    clara_gen_result *r;
    void *user;
    clara_status st; /* CLARA_OK while the request is alive */
    gen_phase ph;
    clara_enc_row
        *rows; /* the documents' encoder rows (documents given as text), then the query's */
    size_t n_rows, next_row; /* rows built, rows compressed so far */
    float *owned;            /* vectors compressed here, then the ranked selection */
    const float *vectors;    /* the k document vectors in prompt order */
    size_t k;
    clara_adapter_set set; /* generation adapters (spec §5) */
    clara_prompt prompt;   /* its ids (the constant head's before first_mem: prefix.h) */
    float *emb;            /* prompt embeddings with the vectors written in */
    uint32_t n_prompt;
    float *logits; /* [n_vocab] of the latest step */
    int slot;      /* KV slot while prefilling and decoding, else -1 */
    clara_cancel cancel;
    clara_rng rng;
    clara_cand *cand; /* [n_vocab] sampling scratch */
    double t_phase;   /* time the current phase's work started (for the result's times) */
} gen_req;

/* Validates the request and prepares its first phase (documents as encoder rows). On failure the
 * request is done with its error recorded. */
void gen_req_start(const clara_model *m, gen_req *q, const clara_gen_params *p, clara_gen_result *r,
                   void *user);
/* Marks q failed with the current error message (once). */
void gen_req_fail(gen_req *q, clara_status s);
/* Fails q as cancelled when its caller says so; true when it is (now or before). */
bool gen_req_cancelled(gen_req *q);
/* The phase after documents: the query's row (E2E), or the prompt. */
void gen_req_documents_done(const clara_model *m, gen_req *q);
/* E2E: ranks the documents by the query vector, then builds the prompt. */
void gen_req_query_done(const clara_model *m, gen_req *q, const float *qv);
/* After a prefill or decoding step: takes the next id from the logits. */
void gen_req_pick(const clara_model *m, gen_req *q);
/* Ends q: text decoded on success; everything but the result freed. */
void gen_req_finish(const clara_model *m, gen_req *q);

/* Milliseconds on a monotonic clock. */
double gen_now_ms(void);

#endif
