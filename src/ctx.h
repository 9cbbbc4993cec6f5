/* ctx.h - a context: the thread pool, KV-cache slots (one per sequence being generated) and
 * scratch buffers, sized once per request (grow-only), never in the per-token loop. */
#ifndef CLARA_CTX_H
#define CLARA_CTX_H

#include "base/threadpool.h"
#include "cpu/kctx.h"
#include "model.h"

/* The KV cache of one sequence: keys and values [n_layer][n_head_kv][cap][head_dim]. Head-major,
 * so that one head's keys (and values) are consecutive rows of head_dim floats: decoding reads
 * them as one stream, where position-major rows kv_dim floats (4 KB at 7B) apart put every key
 * in its own page and the same L1 set. */
typedef struct {
    float *k, *v;
    uint32_t cap, n_past;
    /* Positions [0, dev_valid) of the Vulkan device's mirror of this slot equal these rows (for
     * the layers on the device; vulkan/engine.h). Whatever rewrites or truncates the rows
     * otherwise than a forward pass (prefix.c, clara_kv_clear) sets it to 0. */
    uint32_t dev_valid;
} clara_kv_slot;

/* Rows of the feed-forward block processed at once: bounds the two [rows][n_ff] buffers (the
 * largest activations: 2 x 126 MB at 7B for a batch this large, sized to the batch below that),
 * and covers a whole compression pass (compress.c, 2,200 rows) so the gate and up weights are
 * unpacked (cpu/qgemm.h) once per pass. */
#define CLARA_FFN_CHUNK_ROWS 2200

/* The down projection goes in parts of at most this many rows: its K is n_ff, and the quantized
 * activations of a part are read once per weight panel, so they should stay in the last-level
 * cache (1,100 x 14,336 bytes: 15.8 MB of the 32 MB L3 here). Measured on 16 documents of the
 * 7B q4_0, alternating with the FFN in 2 chunks of 1,088 rows: one chunk of 2,176 rows (31 MB
 * of down activations) 1-4% slower; gate/up whole and the down projection in 2 parts 0.4-1.5%
 * faster. */
#define CLARA_DOWN_ROWS 1100

struct clara_ctx {
    clara_model *m;
    cpu_kctx kc; /* what the kernels use: the thread pool (owned by the context), row buffers,
                    the kernel scratch and its cached activations */
    clara_kv_slot *slots;
    uint32_t n_slots;
    /* activations for up to cap_tokens rows of a batch */
    uint32_t cap_tokens;
    float *x, *xn, *q, *k, *v, *att, *lora_t;
    float *ff_gate, *ff_up; /* [min(cap_tokens, CLARA_FFN_CHUNK_ROWS)][n_ff] */
    float *scores;          /* [n_threads][CLARA_ATTN_ROWS][scores_cap] attention scores */
    uint32_t scores_cap;
    float *attn_kv; /* [n_threads][2][attn_kv_cap][head_dim]: one head's keys, values (forward.c) */
    uint32_t attn_kv_cap;
    float *rope_inv_freq; /* [head_dim / 2] */
    float *xperm; /* inputs gathered for layers with an input permutation (GPTQ act-order) */
    size_t xperm_cap;
    float *out_rows, *out_logits; /* [out_cap][n_embd], [out_cap][n_vocab]: last rows, logits */
    uint32_t out_cap;
    /* Optional: called on the calling thread between the layers of a forward pass (not of a pass
     * made from inside it), so that a long pass can let other work run — the continuous batch
     * runs its decoding step there (generate.c). That work may run forward passes of its own:
     * the paused pass's residual rows are kept aside in x meanwhile (x_aside holds the inner
     * passes' rows), and nothing else of the scratch lives across a layer boundary. */
    void (*between_layers)(void *arg);
    void *between_arg;
    bool in_between;
    float *x_aside;
    uint32_t x_aside_cap;
    struct clara_prefix_cache *prefix; /* prompt heads' keys and values (prefix.h); NULL at first */
    /* The layers placed on a Vulkan device (vulkan/engine.h); NULL: all on the CPU. vk_broken: a
     * device call failed; the next outermost pass drops the device and runs on the CPU. */
    struct clvk_engine *vk;
    bool vk_broken;
    char backend_note[160]; /* why the context runs where it does, for reports */
};

/* Query rows that attention scores together (forward.c, cpu/kernels_attn.inc). */
#define CLARA_ATTN_ROWS 4

/* Attention copies one head's keys and values to contiguous rows for sequences of up to this
 * many positions (forward.c); longer ones read them in place. */
#define CLARA_ATTN_COPY_KEYS 4096

/* Places the context's layers as params ask (ctx_device.c); frees what that took. */
clara_status clara_ctx_device_init(clara_ctx *ctx, const clara_ctx_params *params);
void clara_ctx_device_free(clara_ctx *ctx);

/* Makes slot `slot` hold at least n_ctx positions (keeping its contents). */
clara_status clara_ctx_reserve_slot(clara_ctx *ctx, uint32_t slot, uint32_t n_ctx);
/* Makes room for a batch of n_tokens rows attending over up to n_keys positions. */
clara_status clara_ctx_reserve_rows(clara_ctx *ctx, uint32_t n_tokens, uint32_t n_keys);

#endif
