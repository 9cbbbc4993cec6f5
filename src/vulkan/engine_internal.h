/* engine_internal.h - what engine.c (placement, uploads, mirrors, pass state) and layer.c (a
 * layer's computation) share: the engine's buffers. */
#ifndef CLARA_VULKAN_ENGINE_INTERNAL_H
#define CLARA_VULKAN_ENGINE_INTERNAL_H

#include "vulkan/engine.h"

/* One layer's weights on the device. */
typedef struct {
    clvk_buf *w[CLARA_N_LIN];
    clvk_buf *attn_norm, *ffn_norm;
} clvk_dev_layer;

/* A slot's mirror: keys, values [device layer][n_head_kv][cap][head_dim]. */
typedef struct {
    clvk_buf *k, *v;
    uint32_t cap;
} clvk_dev_slot;

/* A pass's own buffers: its residual rows and its rotation tables (cos, sin per row and pair) for
 * all rows and for the last layer's query rows. */
typedef struct {
    clvk_buf *x, *cs, *cs_q;
} clvk_dev_pass;

struct clvk_engine {
    clvk_dev *dev;
    const clara_model *m;
    uint32_t first, n_dev; /* device layers [first, first + n_dev) */
    clvk_dev_layer *layers;
    clvk_buf **lora; /* [file adapter][device layer][lin][2]: A, B (NULL when absent) */
    clvk_dev_slot *slots;
    uint32_t n_slots;
    clvk_dev_pass pass[2]; /* by nesting level (ctx->in_between) */
    /* scratch, for rows_cap rows (ff_*: ff_rows rows), shared by the passes: nothing in it lives
     * across a layer boundary */
    clvk_buf *xn, *q, *k, *v, *att, *tmp, *ff_gate, *ff_up, *lora_in, *lora_t, *lora_y, *scores;
    uint32_t rows_cap, ff_rows;
    float *host_cs; /* the rotation table as it is formed on the host */
    size_t host_cs_cap;
    uint64_t bytes, weight_bytes, heap;
};

/* Grow-only scratch buffer: *b holds at least `bytes` afterwards (contents not kept). */
clara_status clvk_engine_ensure(clvk_engine *e, clvk_buf **b, uint64_t bytes);
/* Device buffers of one LoRA module of file adapter `ad` (NULL, NULL if it has none). */
void clvk_engine_lora(const clvk_engine *e, const clara_adapter *ad, uint32_t layer, int lin,
                      clvk_buf **a, clvk_buf **b);

/* Where a layer's weights of the largest LoRA rank of the model go. */
uint32_t clvk_engine_max_rank(const clara_model *m);

#endif
