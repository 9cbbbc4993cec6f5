/* ops_layer.c - attention and row copies on the device (ops_layer.h): shape checks, push
 * constants and dispatch sizes for attention.comp and rows.comp. */
#include "vulkan/ops_layer.h"

#include "base/status.h"

#define MAX_GROUPS  65535u
#define GRID_GROUPS 4096u

/* The last float index a block of rows touches, plus one (0 for an empty block). */
static uint64_t rows_end(clvk_rows_at a, uint32_t planes, uint32_t rows, uint32_t width) {
    if (!planes || !rows || !width) return 0;
    return a.off + (planes - 1) * a.plane + (rows - 1) * a.row + width;
}

static clara_status fits(const clvk_buf *b, uint64_t floats, const char *what) {
    if (floats > UINT32_MAX / 4 + 1ull || floats * 4 > clvk_buf_size(b))
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "vulkan: %s reaches float %llu, its buffer holds %zu bytes", what,
                          (unsigned long long)floats, clvk_buf_size(b));
    return CLARA_OK;
}

clara_status clvk_rows(clvk_dev *d, clvk_rows_mode mode, clvk_buf *src, clvk_rows_at s,
                       clvk_buf *dst, clvk_rows_at t, uint32_t planes, uint32_t rows,
                       uint32_t width) {
    uint64_t total = (uint64_t)planes * rows * width;
    if (total == 0) return CLARA_OK;
    clara_status st = fits(src, rows_end(s, planes, rows, width), "row copy source");
    if (st == CLARA_OK) st = fits(dst, rows_end(t, planes, rows, width), "row copy target");
    if (st != CLARA_OK) return st;
    if (total > UINT32_MAX)
        return clara_fail(CLARA_ERR_INVALID_ARG, "vulkan: row copy of %llu floats",
                          (unsigned long long)total);
    uint32_t pc[10] = {planes,
                       rows,
                       width,
                       (uint32_t)s.off,
                       (uint32_t)s.plane,
                       (uint32_t)s.row,
                       (uint32_t)t.off,
                       (uint32_t)t.plane,
                       (uint32_t)t.row,
                       (uint32_t)mode};
    uint64_t g = (total + 63) / 64;
    clvk_buf *bufs[2] = {src, dst};
    return clvk_dispatch(d, CLVK_K_ROWS, 0, bufs, 2, pc, sizeof pc,
                         g > GRID_GROUPS ? GRID_GROUPS : (uint32_t)g, 1);
}

uint64_t clvk_attn_scratch_floats(const clvk_attn_shape *s, uint32_t rows) {
    return (uint64_t)rows * s->n_head * (s->keys0 + s->n_q - 1);
}

/* Checks what the shape's rows reach in each buffer. */
static clara_status attn_check(const clvk_attn_shape *s, clvk_buf *q, clvk_buf *K, clvk_buf *V,
                               clvk_buf *out) {
    if (!s->n_head || !s->n_head_kv || s->n_head % s->n_head_kv || !s->head_dim || !s->keys0)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "vulkan: attention of %u query heads over %u key/value heads of %u "
                          "(keys before the first query row: %u)",
                          s->n_head, s->n_head_kv, s->head_dim, s->keys0);
    uint32_t last = s->n_q - 1, keys = s->keys0 + last, d = s->head_dim;
    clvk_rows_at qa = {s->q_off, 0, s->q_stride}, oa = {s->out_off, 0, s->out_stride};
    clvk_rows_at ka = {s->k_off, s->head_step, s->kv_stride};
    clvk_rows_at va = {s->v_off, s->head_step, s->kv_stride};
    clara_status st = fits(q, rows_end(qa, 1, s->n_q, s->n_head * d), "attention queries");
    if (st == CLARA_OK) st = fits(out, rows_end(oa, 1, s->n_q, s->n_head * d), "attention output");
    if (st == CLARA_OK) st = fits(K, rows_end(ka, s->n_head_kv, keys, d), "attention keys");
    if (st == CLARA_OK) st = fits(V, rows_end(va, s->n_head_kv, keys, d), "attention values");
    return st;
}

clara_status clvk_attention(clvk_dev *d, const clvk_attn_shape *s, uint32_t t0, uint32_t t1,
                            clvk_buf *q, clvk_buf *K, clvk_buf *V, clvk_buf *out,
                            clvk_buf *scratch) {
    if (t1 > s->n_q) t1 = s->n_q;
    if (t0 >= t1) return CLARA_OK;
    clara_status st = attn_check(s, q, K, V, out);
    if (st != CLARA_OK) return st;
    uint64_t keys_cap = (uint64_t)s->keys0 + s->n_q - 1; /* the last row's keys */
    uint64_t per_row = clvk_attn_scratch_floats(s, 1);
    uint64_t rows = clvk_buf_size(scratch) / 4 / per_row;
    if (rows == 0)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "vulkan: attention scratch of %zu bytes holds no row of %llu scores",
                          clvk_buf_size(scratch), (unsigned long long)per_row);
    if (rows > MAX_GROUPS) rows = MAX_GROUPS;
    struct {
        uint32_t q_off, q_stride, k_off, v_off, head_step, kv_stride, out_off, out_stride;
        uint32_t group, d, keys0, t0, keys_cap;
        float scale;
    } pc = {s->q_off,           s->q_stride,   s->k_off,
            s->v_off,           s->head_step,  s->kv_stride,
            s->out_off,         s->out_stride, s->n_head / s->n_head_kv,
            s->head_dim,        s->keys0,      0,
            (uint32_t)keys_cap, s->scale};
    clvk_buf *bufs[5] = {q, K, V, out, scratch};
    for (uint32_t t = t0; st == CLARA_OK && t < t1; t += (uint32_t)rows) {
        uint32_t n = t1 - t < rows ? t1 - t : (uint32_t)rows;
        pc.t0 = t;
        st = clvk_dispatch(d, CLVK_K_ATTENTION, 0, bufs, 5, &pc, sizeof pc, s->n_head, n);
    }
    return st;
}
