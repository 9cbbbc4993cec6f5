/* engine.h - the transformer's layers on a Vulkan device (docs/VULKAN.md): which layers go there
 * (the last ones, as many as the request and the device's memory allow), their weights uploaded
 * once when the context is made, device mirrors of the KV slots, and one layer's forward pass on
 * the device (layer.c) with forward.c's batch semantics. forward.c decides where each layer runs
 * and moves the residual rows x across only where the placement changes.
 *
 * KV cache: the host slot (ctx.h) stays the truth for every layer. For the device's layers the
 * device holds a mirror of each slot's keys and values; slot->dev_valid says up to which position
 * the mirror equals the host. New rows computed on the device go to the mirror AND back to the
 * host slot. Whatever writes or truncates a host slot otherwise (prefix.c's copy of a cached
 * prompt head, clara_kv_clear) lowers dev_valid, and before a pass the rows [dev_valid, n_past)
 * are uploaded (clvk_pass_begin). */
#ifndef CLARA_VULKAN_ENGINE_H
#define CLARA_VULKAN_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "forward.h"
#include "vulkan/device.h"

typedef struct clvk_engine clvk_engine;

/* Opens the device the pick chooses and places layers: gpu_layers < 0 as many as fit (the last
 * layers first, as llama.cpp does), else min(gpu_layers, n_layer) of them, failing with a message
 * naming the need and the device's heap when they do not fit. Logs one line: device, type,
 * layers placed, bytes. */
clara_status clvk_engine_create(const clara_model *m, clvk_pick pick, int gpu_layers,
                                clvk_engine **out);
void clvk_engine_free(clvk_engine *e);

typedef struct {
    clvk_device_desc desc;
    uint32_t first_layer, n_layers; /* layers [first_layer, first_layer + n_layers) */
    uint64_t bytes;                 /* device memory in use: weights, KV mirrors, scratch */
    uint64_t weight_bytes;
} clvk_engine_info;
void clvk_engine_describe(const clvk_engine *e, clvk_engine_info *out);
bool clvk_engine_has_layer(const clvk_engine *e, uint32_t layer);

/* A batch as forward.c holds it: sequence s's rows are [row0[s], row0[s + 1]). */
typedef struct {
    const clara_seq *seqs;
    uint32_t n_seqs, n_rows;
    const uint32_t *row0;
} clvk_rowset;

/* Before a pass's first device layer: sizes the scratch for b (attending over up to max_keys
 * positions), uploads its rotation table and brings the mirrors of its slots up to n_past. The
 * pass's buffers (x, the table) are per nesting level (ctx->in_between): a pass run between the
 * layers of another leaves that one's alone. */
clara_status clvk_pass_begin(clara_ctx *ctx, const clvk_rowset *b, uint32_t max_keys);
/* Before the last layer when its query rows are a subset of b's: their rotation table. */
clara_status clvk_pass_rope_q(clara_ctx *ctx, const clvk_rowset *qb);
/* The residual rows x [rows][n_embd] to and from the device. */
clara_status clvk_x_up(clara_ctx *ctx, const float *x, uint32_t rows);
clara_status clvk_x_down(clara_ctx *ctx, float *x, uint32_t rows);

/* One layer on the device (forward.c's attention_block + mlp_block): keys and values from every
 * row of b, queries, outputs and the residual from qb's (b itself, or the last layer's rows whose
 * outputs are wanted, moved to qb's compact positions). Its dispatches go as one batch
 * (device.h), submitted at its end and before each cancellation poll between rounds. *left = false
 * when every sequence was cancelled on the way (the layer is abandoned). */
clara_status clvk_layer(clara_ctx *ctx, const clvk_rowset *b, const clvk_rowset *qb, uint32_t layer,
                        bool *left);

#endif
