/* kctx.h - the kernel layer's own types: a matrix view (cpu_mat: an array of rows of one block
 * type) and a kernel context (cpu_kctx: the thread pool the kernels split work over, per-thread
 * row buffers, a grow-only scratch arena and what the packed GEMM's cached activations were made
 * from). src/cpu/ knows these, arrays and block types; not the transformer that uses them. The
 * engine's weight matrix (clara_mat, model.h) is a cpu_mat and its context (clara_ctx, ctx.h)
 * embeds a cpu_kctx, so a call passes them without copying; another backend plugs in at this
 * seam. */
#ifndef CLARA_CPU_KCTX_H
#define CLARA_CPU_KCTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/threadpool.h"
#include "clara.h"

/* A row-major matrix [rows][cols] of any supported type (f32, f16, bf16 or a block type); each
 * row is cols / block_size blocks (dtype.h). data may point into a mapped file. lanes, when not
 * NULL, is the same matrix repacked for the AVX-512 q4_0 / q8_0 / q4_k / q6_k kernels
 * (cpu/repack.h): the kernels that know that layout read it, every other reader reads data. */
typedef struct {
    const void *data;
    clara_type type;
    uint64_t rows, cols;
    const uint8_t *lanes;
} cpu_mat;

/* The input the packed GEMM's quantized activations (at the start of the scratch) were made from,
 * so a matmul on the same input can reuse them (qgemm.c); valid is cleared by any other use of
 * the scratch. */
typedef struct {
    const float *x;
    uint32_t n, B;
    uint64_t K;
    int act_type;
    int32_t off;
    uint32_t tile; /* clara_qg_acts.tile */
    bool valid;
} cpu_acts_key;

typedef struct {
    clara_pool *pool; /* the caller's: not created or freed here */
    float *rowbuf;    /* [threads][row_cap]: a weight row as f32, or decode rows quantized */
    size_t row_cap;
    uint8_t *scratch; /* cpu_kctx_scratch: packed GEMM activations and panels, GEMV's rows */
    size_t scratch_cap;
    cpu_acts_key acts; /* what the activations at the start of scratch were made from */
} cpu_kctx;

/* A context for matrices of up to max_cols columns over `pool`: row buffers sized so a decode step
 * (up to CLARA_GEMV_MAX_ROWS rows quantized) allocates nothing. CLARA_ERR_NOMEM on failure (k is
 * then safe to cpu_kctx_free). */
clara_status cpu_kctx_init(cpu_kctx *k, clara_pool *pool, size_t max_cols);

/* Frees the buffers (not the pool); k is zeroed. */
void cpu_kctx_free(cpu_kctx *k);

/* The scratch grown to at least `need` bytes (64-byte aligned, contents not kept); NULL when out
 * of memory. One user at a time: the matmul that asks owns it until it returns. */
uint8_t *cpu_kctx_scratch(cpu_kctx *k, size_t need);

/* Forgets the cached activations (the scratch served other inputs meanwhile). */
static inline void cpu_kctx_forget_acts(cpu_kctx *k) {
    k->acts.valid = false;
}

#endif
