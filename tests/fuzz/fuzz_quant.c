/* fuzz_quant.c - libFuzzer target for the block-type code: the first byte picks a type, the rest
 * is taken as blocks of that type (any bytes: f16 scales may be inf/NaN) and fed to the
 * dequantizer and both reference dot products; the dequantized values, when finite, are then
 * quantized again. Nothing may crash or trip UBSan. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/kernels_ref.h"
#include "dtype.h"
#include "quant.h"

static const clara_type k_types[] = {CLARA_TYPE_Q4_0, CLARA_TYPE_Q4_1, CLARA_TYPE_Q5_0,
                                     CLARA_TYPE_Q5_1, CLARA_TYPE_Q8_0, CLARA_TYPE_Q8_1,
                                     CLARA_TYPE_Q4_K, CLARA_TYPE_Q5_K, CLARA_TYPE_Q6_K,
                                     CLARA_TYPE_Q8_K, CLARA_TYPE_F16,  CLARA_TYPE_BF16};
static volatile float g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    clara_type t = k_types[data[0] % (sizeof k_types / sizeof k_types[0])];
    const clara_type_info *ti = clara_type_get((uint32_t)t);
    size_t nb = (size - 1) / ti->type_size;
    if (nb == 0 || nb > 64) return 0;
    uint64_t n = nb * ti->block_size;
    float *y = malloc(n * sizeof *y), *x = malloc(n * sizeof *x);
    uint8_t *w = malloc(nb * ti->type_size), *a = malloc(nb * 292 + 64), *q = malloc(nb * 292);
    memcpy(w, data + 1, nb * ti->type_size); /* aligned copy */
    if (clara_dequantize_row(t, w, n, y) == CLARA_OK) {
        for (uint64_t i = 0; i < n; i++) x[i] = isfinite(y[i]) ? y[i] : 0.5f;
        g_sink = clara_vec_dot_f_ref(t, w, x, n);
        int at = clara_vec_dot_type(t);
        if (at >= 0) {
            memcpy(a, w,
                   nb * ti->type_size); /* the same bytes as activations of the partner type */
            const clara_type_info *ai = clara_type_get((uint32_t)at);
            if (nb * ai->type_size <= nb * ti->type_size) g_sink = clara_vec_dot_q_ref(t, w, a, n);
            float r;
            if (clara_vec_dot_ref(t, w, x, n, &r) == CLARA_OK) g_sink = r;
        }
        (void)clara_quantize_row(t, y, n, q, "fuzz"); /* may reject non-finite values */
        (void)clara_quantize_row(t, x, n, q, "fuzz");
    }
    free(y);
    free(x);
    free(w);
    free(a);
    free(q);
    return 0;
}
