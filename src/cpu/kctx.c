/* kctx.c - the kernel context's buffers (kctx.h): per-thread row buffers sized at creation and the
 * grow-only scratch arena. */
#include "cpu/kctx.h"

#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "cpu/gemv.h"

clara_status cpu_kctx_init(cpu_kctx *k, clara_pool *pool, size_t max_cols) {
    memset(k, 0, sizeof *k);
    k->pool = pool;
    size_t n = (size_t)clara_pool_threads(pool), cap = max_cols ? max_cols : 1;
    /* matmul quantizes up to CLARA_GEMV_MAX_ROWS decode rows into rowbuf (at most 292 bytes per
     * 256 values: q8_k), so that a decode step allocates nothing */
    size_t quant_rows = (size_t)CLARA_GEMV_MAX_ROWS * (cap / 256 + 1) * 292;
    if (n * cap * sizeof(float) < quant_rows)
        cap = (quant_rows + n * sizeof(float) - 1) / (n * sizeof(float));
    k->row_cap = cap;
    k->rowbuf = malloc(n * cap * sizeof(float));
    if (!k->rowbuf) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    return CLARA_OK;
}

void cpu_kctx_free(cpu_kctx *k) {
    free(k->rowbuf);
    free(k->scratch);
    memset(k, 0, sizeof *k);
}

uint8_t *cpu_kctx_scratch(cpu_kctx *k, size_t need) {
    if (k->scratch_cap >= need) return k->scratch;
    free(k->scratch);
    k->acts.valid = false;
    k->scratch = aligned_alloc(64, (need + 63) & ~(size_t)63);
    k->scratch_cap = k->scratch ? need : 0;
    return k->scratch;
}
