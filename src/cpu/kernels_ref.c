/* kernels_ref.c - scalar reference dot products for the quantized weight types (see
 * kernels_ref.h): integer block dot products against q8_0/q8_1/q8_k activations, as ggml
 * computes them, and a dequantize-then-f32 version. Codes are unpacked per block into small
 * integer arrays, so the layouts are decoded here independently of quant.c's dequantizers. */
#include "cpu/kernels_ref.h"

#include <stdlib.h>

#include "base/fp16.h"
#include "base/status.h"
#include "dtype.h"
#include "quant.h"

static uint32_t u32at(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int clara_vec_dot_type(clara_type t) {
    switch (t) {
    case CLARA_TYPE_Q4_0:
    case CLARA_TYPE_Q5_0:
    case CLARA_TYPE_Q8_0:
        return CLARA_TYPE_Q8_0;
    case CLARA_TYPE_Q4_1:
    case CLARA_TYPE_Q5_1:
        return CLARA_TYPE_Q8_1;
    case CLARA_TYPE_Q4_K:
    case CLARA_TYPE_Q5_K:
    case CLARA_TYPE_Q6_K:
    case CLARA_TYPE_Q8_K:
        return CLARA_TYPE_Q8_K;
    default:
        return -1;
    }
}

/* Codes of a 32-element block of q4_0/q4_1/q5_0/q5_1 (unsigned, before any offset). */
static void unpack32(const uint8_t *qs, uint32_t qh, int c[32]) {
    for (int j = 0; j < 16; j++) {
        c[j] = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        c[j + 16] = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
    }
}

/* One 32-block of a q4_0..q8_0 weight against a q8_0/q8_1 block: |sum| <= 32*31*128, no
 * overflow. Returns the block's contribution in f32. */
static float dot_block32(clara_type t, const uint8_t *w, const uint8_t *a) {
    const int8_t *aq = (const int8_t *)(a + (t == CLARA_TYPE_Q4_1 || t == CLARA_TYPE_Q5_1 ? 4 : 2));
    int c[32], sumi = 0;
    switch (t) {
    case CLARA_TYPE_Q4_0:
        unpack32(w + 2, 0, c);
        break;
    case CLARA_TYPE_Q5_0:
        unpack32(w + 6, u32at(w + 2), c);
        break;
    case CLARA_TYPE_Q4_1:
        unpack32(w + 4, 0, c);
        break;
    case CLARA_TYPE_Q5_1:
        unpack32(w + 8, u32at(w + 4), c);
        break;
    default: /* q8_0 */
        for (int j = 0; j < 32; j++) c[j] = ((const int8_t *)(w + 2))[j];
    }
    int off = t == CLARA_TYPE_Q4_0 ? 8 : t == CLARA_TYPE_Q5_0 ? 16 : 0;
    for (int j = 0; j < 32; j++) sumi += (c[j] - off) * aq[j];
    float dw = clara_f16_le(w), da = clara_f16_le(a);
    if (t == CLARA_TYPE_Q4_1 || t == CLARA_TYPE_Q5_1) {
        /* The min term m * da * sum(a codes). ggml reads sum(a) from q8_1's f16 s field; that
         * rounding costs up to 2^-11 relative, so the exact integer sum is used instead. */
        int suma = 0;
        for (int j = 0; j < 32; j++) suma += aq[j];
        return dw * da * (float)sumi + clara_f16_le(w + 2) * da * (float)suma;
    }
    return (float)sumi * (dw * da);
}

/* q4_k / q5_k super-block against q8_k: sum_j sc_j*sum(q*a) - m_j*(bsums): |each| < 2^27. */
static float dot_qk(const uint8_t *w, const uint8_t *a, int bits) {
    const uint8_t *s = w + 4, *qh = w + 16, *qs = w + (bits == 5 ? 48 : 16);
    const int8_t *aq = (const int8_t *)(a + 4);
    int isum = 0, msum = 0;
    for (int j = 0; j < 8; j++) {
        int sc, m;
        if (j < 4) {
            sc = s[j] & 63;
            m = s[j + 4] & 63;
        } else {
            sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
            m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
        }
        int c = j / 2, hi = j % 2, sub = 0;
        for (int l = 0; l < 32; l++) {
            int q = hi ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 15;
            if (bits == 5) q |= (qh[l] >> j & 1) << 4;
            sub += q * aq[32 * j + l];
        }
        isum += sc * sub;
        int16_t b0 = (int16_t)(a[260 + 4 * j] | a[261 + 4 * j] << 8);
        int16_t b1 = (int16_t)(a[262 + 4 * j] | a[263 + 4 * j] << 8);
        msum += m * (b0 + b1);
    }
    float da = clara_f32_le(a);
    return clara_f16_le(w) * da * (float)isum - clara_f16_le(w + 2) * da * (float)msum;
}

/* q6_k super-block against q8_k: 16 sub-blocks of 16, |sum| <= 16*128*16*32*128 < 2^31. */
static float dot_q6k(const uint8_t *w, const uint8_t *a) {
    const uint8_t *ql = w, *qh = w + 128;
    const int8_t *sc = (const int8_t *)(w + 192), *aq = (const int8_t *)(a + 4);
    int isum = 0;
    for (int j = 0; j < 16; j++) {
        int sub = 0;
        for (int i = 0; i < 16; i++) {
            int e = 16 * j + i, h = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
            int lo = ql[64 * h + l + (quarter & 1) * 32];
            lo = quarter >= 2 ? lo >> 4 : lo & 15;
            int hb = qh[32 * h + l] >> (2 * quarter) & 3;
            sub += ((lo | hb << 4) - 32) * aq[e];
        }
        isum += sc[j] * sub;
    }
    return clara_f16_le(w + 208) * clara_f32_le(a) * (float)isum;
}

static float dot_q8k(const uint8_t *w, const uint8_t *a) {
    const int8_t *wq = (const int8_t *)(w + 4), *aq = (const int8_t *)(a + 4);
    int isum = 0;
    for (int j = 0; j < 256; j++) isum += wq[j] * aq[j];
    return clara_f32_le(w) * clara_f32_le(a) * (float)isum;
}

float clara_vec_dot_q_ref(clara_type t, const void *w, const void *a, uint64_t n) {
    int at = clara_vec_dot_type(t);
    CLARA_ASSERT(at >= 0);
    const clara_type_info *wi = clara_type_get((uint32_t)t);
    const clara_type_info *ai = clara_type_get((uint32_t)at);
    CLARA_ASSERT(n % wi->block_size == 0 && wi->block_size == ai->block_size);
    const uint8_t *wb = w, *ab = a;
    float sum = 0.f;
    for (uint64_t i = 0; i < n / wi->block_size; i++) {
        const uint8_t *wk = wb + i * wi->type_size, *ak = ab + i * ai->type_size;
        switch (t) {
        case CLARA_TYPE_Q4_K:
            sum += dot_qk(wk, ak, 4);
            break;
        case CLARA_TYPE_Q5_K:
            sum += dot_qk(wk, ak, 5);
            break;
        case CLARA_TYPE_Q6_K:
            sum += dot_q6k(wk, ak);
            break;
        case CLARA_TYPE_Q8_K:
            sum += dot_q8k(wk, ak);
            break;
        default:
            sum += dot_block32(t, wk, ak);
        }
    }
    return sum;
}

float clara_vec_dot_f_ref(clara_type t, const void *w, const float *x, uint64_t n) {
    const clara_type_info *wi = clara_type_get((uint32_t)t);
    CLARA_ASSERT(wi && clara_quant_supported(t) && n % wi->block_size == 0);
    const uint8_t *wb = w;
    float buf[CLARA_QK_K], sum = 0.f;
    for (uint64_t i = 0; i < n / wi->block_size; i++) {
        (void)clara_dequantize_row(t, wb + i * wi->type_size, wi->block_size, buf);
        float part = 0.f; /* per-block partial sums keep the f32 error near sqrt(n) eps */
        for (uint32_t j = 0; j < wi->block_size; j++) part += buf[j] * x[i * wi->block_size + j];
        sum += part;
    }
    return sum;
}

clara_status clara_vec_dot_ref(clara_type t, const void *w, const float *x, uint64_t n,
                               float *out) {
    int at = clara_vec_dot_type(t);
    if (at < 0)
        return clara_fail(CLARA_ERR_INVALID_ARG, "no integer dot product for type %s",
                          clara_type_name(t));
    uint64_t bytes;
    clara_status s = clara_type_row_bytes((clara_type)at, n, &bytes);
    if (s != CLARA_OK) return s;
    void *aq = malloc(bytes ? bytes : 1);
    if (!aq)
        return clara_fail(CLARA_ERR_NOMEM, "out of memory for %llu bytes",
                          (unsigned long long)bytes);
    s = clara_quantize_row((clara_type)at, x, n, aq, "activations");
    if (s == CLARA_OK) *out = clara_vec_dot_q_ref(t, w, aq, n);
    free(aq);
    return s;
}
