/* ops_layer.h - the operations a transformer layer needs on the device beside ops.h's: attention
 * over a sequence's keys and values (forward.c's attention, attention.comp) and strided row copies
 * and adds (the residual, gathering rows, writing new key/value rows into a slot's cache:
 * rows.comp). Offsets, strides and sizes count floats. Each call runs and waits. */
#ifndef CLARA_VULKAN_OPS_LAYER_H
#define CLARA_VULKAN_OPS_LAYER_H

#include <stdint.h>

#include "clara.h"
#include "vulkan/device.h"

/* Where a sequence's query rows, keys/values and outputs are, and its shape. Query row t (t <
 * n_q) has head h at q[q_off + t*q_stride + h*head_dim] and attends to the keys [0, keys0 + t)
 * of key/value head h / (n_head / n_head_kv): key row k of head j at K[k_off + j*head_step +
 * k*kv_stride], value rows the same way in V from v_off; its output goes like its query, in out
 * from out_off by out_stride. scale: 1/sqrt(head_dim). */
typedef struct {
    uint32_t n_head, n_head_kv, head_dim;
    uint32_t n_q, keys0;
    uint32_t q_off, q_stride, k_off, v_off, head_step, kv_stride, out_off, out_stride;
    float scale;
} clvk_attn_shape;

/* Attention of the rows [t0, t1) of shape s. scratch holds the scores: at least
 * clvk_attn_scratch_floats(s, rows) floats for `rows` query rows per dispatch (the call takes as
 * many rows per dispatch as the scratch holds, at least one). */
clara_status clvk_attention(clvk_dev *d, const clvk_attn_shape *s, uint32_t t0, uint32_t t1,
                            clvk_buf *q, clvk_buf *K, clvk_buf *V, clvk_buf *out,
                            clvk_buf *scratch);
/* Floats of scratch that `rows` query rows of s need at once. */
uint64_t clvk_attn_scratch_floats(const clvk_attn_shape *s, uint32_t rows);

/* A block of rows in a buffer: plane p, row r, element i at off + p*plane + r*row + i. */
typedef struct {
    uint64_t off, plane, row;
} clvk_rows_at;

typedef enum { CLVK_ROWS_COPY = 0, CLVK_ROWS_ADD = 1 } clvk_rows_mode;

/* dst = src (or dst += src) over planes x rows x width floats laid out as the two clvk_rows_at
 * say. src and dst may be one buffer when the ranges do not overlap. */
clara_status clvk_rows(clvk_dev *d, clvk_rows_mode mode, clvk_buf *src, clvk_rows_at s,
                       clvk_buf *dst, clvk_rows_at t, uint32_t planes, uint32_t rows,
                       uint32_t width);

#endif
