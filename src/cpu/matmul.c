/* matmul.c - scalar reference matmul over f32/f16/bf16 weights. */
#include "cpu/matmul.h"

#include <string.h>

#include "base/fp16.h"

float clara_dot_f32(const float *a, const float *b, size_t n) {
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float tail = 0;
    for (; i < n; i++) tail += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) +
           tail;
}

const float *clara_mat_row_f32(const clara_mat *W, uint64_t r, float *buf) {
    size_t cols = (size_t)W->cols;
    const unsigned char *base = W->data;
    if (W->type == CLARA_TYPE_F32) {
        const unsigned char *row = base + r * cols * 4;
        if (((uintptr_t)row & 3) == 0) return (const float *)row;
        memcpy(buf, row, cols * 4);
        return buf;
    }
    const unsigned char *row = base + r * cols * 2;
    for (size_t i = 0; i < cols; i++) {
        uint16_t h;
        memcpy(&h, row + 2 * i, 2);
        buf[i] = W->type == CLARA_TYPE_F16 ? clara_f16_to_f32(h) : clara_bf16_to_f32(h);
    }
    return buf;
}

typedef struct {
    clara_ctx *ctx;
    const clara_mat *W;
    const float *x;
    float *y;
    uint32_t n;
    uint64_t rows_per_task;
    bool accumulate;
    float alpha;
} matmul_job;

static void matmul_task(void *arg, size_t task, int thread) {
    const matmul_job *j = arg;
    const clara_mat *W = j->W;
    float *buf = j->ctx->rowbuf + (size_t)thread * j->ctx->row_cap;
    uint64_t r0 = task * j->rows_per_task;
    uint64_t r1 = r0 + j->rows_per_task < W->rows ? r0 + j->rows_per_task : W->rows;
    size_t cols = (size_t)W->cols, ldy = (size_t)W->rows;
    for (uint64_t r = r0; r < r1; r++) {
        const float *w = clara_mat_row_f32(W, r, buf);
        for (uint32_t t = 0; t < j->n; t++) {
            float d = clara_dot_f32(j->x + (size_t)t * cols, w, cols);
            float *out = &j->y[(size_t)t * ldy + r];
            if (j->accumulate) *out += j->alpha * d;
            else *out = d;
        }
    }
}

void clara_matmul(clara_ctx *ctx, const clara_mat *W, const float *x, uint32_t n, float *y,
                  bool accumulate, float alpha) {
    int threads = clara_pool_threads(ctx->pool);
    uint64_t per = W->rows / ((uint64_t)threads * 8);
    if (per < 1) per = 1;
    matmul_job j = {ctx, W, x, y, n, per, accumulate, alpha};
    size_t n_tasks = (size_t)((W->rows + per - 1) / per);
    clara_pool_run(ctx->pool, n_tasks, matmul_task, &j);
}
