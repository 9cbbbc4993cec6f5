/* quant.c - reference scalar quantizers and dequantizers of the GGUF block types (the
 * specification of each type; layouts and algorithms are described in quant.h). Written from the
 * public format description; the quantizers reproduce llama.cpp's reference algorithms so files
 * are byte-identical for ordinary inputs. Everything here is plain scalar C: the dequantizers'
 * arithmetic (the order and rounding of each f32 operation) is part of the contract, mirrored by
 * tests/reference/quant_ref.py, so no expression may be contracted into an FMA. */
#include "quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "base/fp16.h"
#include "base/status.h"
#include "dtype.h"

/* GCC never contracts in ISO C mode (-std=c11); clang does unless told not to. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define QK  CLARA_QK
#define QKK CLARA_QK_K

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}
static void wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* f16 for a block scale; flags a finite value that overflows (the block would be unusable). */
static uint16_t scale_f16(float v, bool *bad) {
    uint16_t h = clara_f32_to_f16(v);
    if ((h & 0x7c00u) == 0x7c00u) *bad = true;
    return h;
}

int clara_nearest_int(float v) {
    /* Adding 1.5*2^23 puts the rounded integer in the low mantissa bits (exact for |v| < 2^22),
     * the trick llama.cpp uses; clamping first makes it total. */
    if (v != v) return 0;
    if (v > 4194303.f) v = 4194303.f;
    if (v < -4194303.f) v = -4194303.f;
    uint32_t i = clara_f32_bits(v + 12582912.f);
    return (int)(i & 0x007fffffu) - 0x00400000;
}

/* Integer conversion of an already rounded/truncated value, clamped to [lo, hi] (NaN -> 0, which
 * only happens for blocks whose scale underflowed f16 to zero, where codes are irrelevant). */
static int clamp_int(float r, int lo, int hi) {
    if (r != r) return 0;
    if (r < (float)lo) return lo;
    if (r > (float)hi) return hi;
    return (int)r;
}

/* ---- 32-element blocks ---------------------------------------------------------------------- */

/* The element of largest magnitude, signed (the first one on ties, as llama.cpp). */
static float signed_absmax(const float *x, int n, float *amax_out) {
    float amax = 0.f, max = 0.f;
    for (int j = 0; j < n; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    *amax_out = amax;
    return max;
}

static void min_max(const float *x, int n, float *mn, float *mx) {
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

/* q4_0 (bits 4, offset 8) and q5_0 (bits 5, offset 16): d = max/-offset, code =
 * min(2*offset-1, trunc(x/d + offset + 0.5)). */
static void q_0_block(const float *x, uint8_t *b, int bits, bool *bad) {
    const int off = 1 << (bits - 1);
    float amax, max = signed_absmax(x, QK, &amax);
    float d = max / (float)-off, id = d != 0.f ? 1.f / d : 0.f;
    wr16(b, scale_f16(d, bad));
    uint8_t *qs = b + 2;
    uint32_t qh = 0;
    if (bits == 5) qs += 4;
    for (int j = 0; j < QK / 2; j++) {
        int c0 = clamp_int(truncf(x[j] * id + ((float)off + 0.5f)), 0, 2 * off - 1);
        int c1 = clamp_int(truncf(x[j + QK / 2] * id + ((float)off + 0.5f)), 0, 2 * off - 1);
        qs[j] = (uint8_t)((c0 & 15) | (c1 & 15) << 4);
        qh |= (uint32_t)(c0 >> 4 & 1) << j | (uint32_t)(c1 >> 4 & 1) << (j + QK / 2);
    }
    if (bits == 5) wr32(b + 2, qh);
}

/* q4_1 / q5_1: d = (max-min)/(2^bits-1), m = min, code = min(2^bits-1, trunc((x-min)/d + 0.5)). */
static void q_1_block(const float *x, uint8_t *b, int bits, bool *bad) {
    const int top = (1 << bits) - 1;
    float mn, mx;
    min_max(x, QK, &mn, &mx);
    float d = (mx - mn) / (float)top, id = d != 0.f ? 1.f / d : 0.f;
    wr16(b, scale_f16(d, bad));
    wr16(b + 2, scale_f16(mn, bad));
    uint8_t *qs = b + 4;
    uint32_t qh = 0;
    if (bits == 5) qs += 4;
    for (int j = 0; j < QK / 2; j++) {
        int c0 = clamp_int(truncf((x[j] - mn) * id + 0.5f), 0, top);
        int c1 = clamp_int(truncf((x[j + QK / 2] - mn) * id + 0.5f), 0, top);
        qs[j] = (uint8_t)((c0 & 15) | (c1 & 15) << 4);
        qh |= (uint32_t)(c0 >> 4 & 1) << j | (uint32_t)(c1 >> 4 & 1) << (j + QK / 2);
    }
    if (bits == 5) wr32(b + 4, qh);
}

/* q8_0 / q8_1: d = amax/127, q = round(x/d) half away from zero; q8_1 also stores d*sum(q). */
static void q8_block(const float *x, uint8_t *b, bool with_sum, bool *bad) {
    float amax;
    (void)signed_absmax(x, QK, &amax);
    float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    wr16(b, scale_f16(d, bad));
    int8_t *qs = (int8_t *)(b + (with_sum ? 4 : 2));
    int sum = 0;
    for (int j = 0; j < QK; j++) {
        qs[j] = (int8_t)clamp_int(roundf(x[j] * id), -127, 127);
        sum += qs[j];
    }
    if (with_sum) wr16(b + 2, scale_f16((float)sum * d, bad));
}

/* ---- K-quant helpers ------------------------------------------------------------------------ */

/* Scale and min for n values with codes 0..nmax (x ~ scale*L - the_min), minimizing the
 * weighted squared error over the full-range scale and nstep+1 candidates
 * iscale = (nmax + rmin + rdelta*is)/(max-min), each refitted by weighted least squares
 * (llama.cpp's make_qkx2_quants with use_mad = false). Returns the scale. */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                           float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float mn = x[0], mx = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (mn > 0) mn = 0; /* the min is subtracted as a non-negative offset */
    if (mx == mn) {
        memset(L, 0, (size_t)n);
        *the_min = -mn;
        return 0.f;
    }
    float iscale = (float)nmax / (mx - mn), scale = 1.f / iscale, best = 0.f;
    for (int i = 0; i < n; i++) {
        int l = clara_nearest_int(iscale * (x[i] - mn));
        L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        float diff = scale * L[i] + mn - x[i];
        best += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (mx - mn);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = clara_nearest_int(iscale * (x[i] - mn));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * Laux[i] + this_min - x[i];
            err += w[i] * (diff * diff);
        }
        if (err < best) {
            memcpy(L, Laux, (size_t)n);
            best = err;
            scale = this_scale;
            mn = this_min;
        }
    }
    *the_min = -mn;
    return scale;
}

/* Symmetric scale for n values with codes -nmax..nmax-1 (x ~ scale*(L-nmax)), maximizing the
 * x^2-weighted fit over 19 candidates iscale = -(nmax + 0.1*is)/max (llama.cpp's
 * make_qx_quants with rmse_type 1). Returns the scale. */
static float fit_scale_sym(int n, int nmax, const float *x, uint8_t *L) {
    float amax;
    float max = signed_absmax(x, n, &amax);
    if (amax < 1e-15f) { /* GROUP_MAX_EPS: treat as all zero */
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)-nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clara_nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (uint8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 != 0 ? sumlx / suml2 : 0.f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clara_nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = clara_nearest_int(iscale * x[i]);
                L[i] = (uint8_t)(nmax + (l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* The 6-bit scale and min of sub-block j from the 12 packed bytes. */
static void get_scale_min(int j, const uint8_t *s, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
        *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

static void put_scale_min(int j, uint8_t *s, int sc, int m) {
    if (j < 4) {
        s[j] = (uint8_t)sc;
        s[j + 4] = (uint8_t)m;
    } else {
        s[j + 4] = (uint8_t)((sc & 15) | (m & 15) << 4);
        s[j - 4] |= (uint8_t)((sc >> 4) << 6);
        s[j] |= (uint8_t)((m >> 4) << 6);
    }
}

static int clamp6(int v) {
    return v < 0 ? 0 : v > 63 ? 63 : v;
}

/* q4_k (bits 4) and q5_k (bits 5): codes L[256] and the header (d, dmin, scales) of b. */
static void qk_scales_codes(const float *x, uint8_t *b, int bits, uint8_t *L, bool *bad) {
    const int nmax = (1 << bits) - 1;
    float scales[8], mins[8], w[32], max_scale = 0, max_min = 0;
    uint8_t Laux[32];
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += xs[l] * xs[l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(xs[l]);
        scales[j] =
            bits == 4 ? fit_scale_min(32, nmax, xs, w, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20)
                      : fit_scale_min(32, nmax, xs, w, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t *s = b + 4;
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++)
        put_scale_min(j, s, clamp6(clara_nearest_int(inv_scale * scales[j])),
                      clamp6(clara_nearest_int(inv_min * mins[j])));
    wr16(b, scale_f16(max_scale / 63.f, bad));
    wr16(b + 2, scale_f16(max_min / 63.f, bad));
    /* requantize with the scales as stored, so each code is the nearest one the file can hold */
    float d = clara_f16_le(b), dmin = clara_f16_le(b + 2);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        get_scale_min(j, s, &sc, &m);
        float dj = d * (float)sc;
        if (dj == 0.f) continue;
        float dm = dmin * (float)m;
        for (int i = 0; i < 32; i++) {
            int l = clara_nearest_int((x[32 * j + i] + dm) / dj);
            L[32 * j + i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        }
    }
}

static void q4_k_block(const float *x, uint8_t *b, bool *bad) {
    uint8_t L[QKK];
    qk_scales_codes(x, b, 4, L, bad);
    uint8_t *qs = b + 16;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            qs[32 * c + l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
}

static void q5_k_block(const float *x, uint8_t *b, bool *bad) {
    uint8_t L[QKK];
    qk_scales_codes(x, b, 5, L, bad);
    uint8_t *qh = b + 16, *qs = b + 48;
    memset(qh, 0, 32);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            int l1 = L[64 * c + l], l2 = L[64 * c + 32 + l];
            qh[l] |= (uint8_t)((l1 >> 4) << (2 * c) | (l2 >> 4) << (2 * c + 1));
            qs[32 * c + l] = (uint8_t)((l1 & 15) | (l2 & 15) << 4);
        }
}

static void q6_k_pack(const uint8_t *L, uint8_t *b) {
    uint8_t *ql = b, *qh = b + 128;
    for (int h = 0; h < 2; h++) {
        const uint8_t *Lh = L + 128 * h;
        for (int l = 0; l < 32; l++) {
            ql[64 * h + l] = (uint8_t)((Lh[l] & 15) | (Lh[l + 64] & 15) << 4);
            ql[64 * h + l + 32] = (uint8_t)((Lh[l + 32] & 15) | (Lh[l + 96] & 15) << 4);
            qh[32 * h + l] = (uint8_t)(Lh[l] >> 4 | (Lh[l + 32] >> 4) << 2 |
                                       (Lh[l + 64] >> 4) << 4 | (Lh[l + 96] >> 4) << 6);
        }
    }
}

static void q6_k_block(const float *x, uint8_t *b, bool *bad) {
    uint8_t L[QKK];
    float scales[16], max_scale = 0, max_abs = 0;
    for (int ib = 0; ib < 16; ib++) {
        scales[ib] = fit_scale_sym(16, 32, x + 16 * ib, L + 16 * ib);
        if (fabsf(scales[ib]) > max_abs) {
            max_abs = fabsf(scales[ib]);
            max_scale = scales[ib];
        }
    }
    memset(b, 0, 210);
    if (max_abs < 1e-15f) return; /* all (nearly) zero: a zero block */
    float iscale = -128.f / max_scale;
    wr16(b + 208, scale_f16(1.f / iscale, bad));
    int8_t *sc = (int8_t *)(b + 192);
    for (int ib = 0; ib < 16; ib++) {
        int v = clara_nearest_int(iscale * scales[ib]);
        sc[ib] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
    }
    float d16 = clara_f16_le(b + 208);
    for (int j = 0; j < 16; j++) {
        float d = d16 * (float)sc[j];
        if (d == 0.f) continue;
        for (int i = 0; i < 16; i++) {
            int l = clara_nearest_int(x[16 * j + i] / d);
            L[16 * j + i] = (uint8_t)((l < -32 ? -32 : l > 31 ? 31 : l) + 32);
        }
    }
    q6_k_pack(L, b);
}

/* q8_k: d = max/-127 in f32 (the activation format of the K-quant dot products). */
static void q8_k_block(const float *x, uint8_t *b) {
    float amax, max = signed_absmax(x, QKK, &amax);
    memset(b, 0, 292);
    float iscale = amax != 0.f ? -127.f / max : 0.f;
    if (!isfinite(iscale) || iscale == 0.f) return; /* zero, or too tiny for an f32 scale */
    int8_t *qs = (int8_t *)(b + 4);
    for (int j = 0; j < QKK; j++) {
        int v = clara_nearest_int(iscale * x[j]);
        qs[j] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
    }
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int j = 0; j < 16; j++) s += qs[16 * g + j];
        wr16(b + 260 + 2 * g, (uint16_t)(int16_t)s);
    }
    wr32(b, clara_f32_bits(1.f / iscale));
}

/* ---- dequantizers --------------------------------------------------------------------------- */

static void dq_q_0(const uint8_t *b, float *y, int bits) {
    const int off = 1 << (bits - 1);
    float d = clara_f16_le(b);
    const uint8_t *qs = b + (bits == 5 ? 6 : 2);
    uint32_t qh = bits == 5 ? (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 |
                                  (uint32_t)b[5] << 24
                            : 0;
    for (int j = 0; j < QK / 2; j++) {
        int c0 = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        int c1 = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)(c0 - off) * d;
        y[j + QK / 2] = (float)(c1 - off) * d;
    }
}

static void dq_q_1(const uint8_t *b, float *y, int bits) {
    float d = clara_f16_le(b), m = clara_f16_le(b + 2);
    const uint8_t *qs = b + (bits == 5 ? 8 : 4);
    uint32_t qh = bits == 5 ? (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 |
                                  (uint32_t)b[7] << 24
                            : 0;
    for (int j = 0; j < QK / 2; j++) {
        int c0 = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        int c1 = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)c0 * d + m;
        y[j + QK / 2] = (float)c1 * d + m;
    }
}

static void dq_q8(const uint8_t *b, float *y, int hdr) {
    float d = clara_f16_le(b);
    const int8_t *qs = (const int8_t *)(b + hdr);
    for (int j = 0; j < QK; j++) y[j] = (float)qs[j] * d;
}

static void dq_qk(const uint8_t *b, float *y, int bits) {
    float d = clara_f16_le(b), dmin = clara_f16_le(b + 2);
    const uint8_t *s = b + 4, *qh = b + 16, *qs = b + (bits == 5 ? 48 : 16);
    for (int c = 0; c < 4; c++) {
        int sc0, m0, sc1, m1;
        get_scale_min(2 * c, s, &sc0, &m0);
        get_scale_min(2 * c + 1, s, &sc1, &m1);
        float d0 = d * (float)sc0, mm0 = dmin * (float)m0;
        float d1 = d * (float)sc1, mm1 = dmin * (float)m1;
        for (int l = 0; l < 32; l++) {
            int lo = qs[32 * c + l] & 15, hi = qs[32 * c + l] >> 4;
            if (bits == 5) {
                lo |= (qh[l] >> (2 * c) & 1) << 4;
                hi |= (qh[l] >> (2 * c + 1) & 1) << 4;
            }
            y[64 * c + l] = d0 * (float)lo - mm0;
            y[64 * c + 32 + l] = d1 * (float)hi - mm1;
        }
    }
}

static void dq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = clara_f16_le(b + 208);
    for (int h = 0; h < 2; h++) {
        const uint8_t *l0 = ql + 64 * h, *h0 = qh + 32 * h;
        const int8_t *s = sc + 8 * h;
        float *yh = y + 128 * h;
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((l0[l] & 15) | (h0[l] & 3) << 4) - 32;
            int q2 = ((l0[l + 32] & 15) | (h0[l] >> 2 & 3) << 4) - 32;
            int q3 = ((l0[l] >> 4) | (h0[l] >> 4 & 3) << 4) - 32;
            int q4 = ((l0[l + 32] >> 4) | (h0[l] >> 6 & 3) << 4) - 32;
            yh[l] = d * (float)s[is] * (float)q1;
            yh[l + 32] = d * (float)s[is + 2] * (float)q2;
            yh[l + 64] = d * (float)s[is + 4] * (float)q3;
            yh[l + 96] = d * (float)s[is + 6] * (float)q4;
        }
    }
}

static void dq_q8_k(const uint8_t *b, float *y) {
    float d = clara_f32_le(b);
    const int8_t *qs = (const int8_t *)(b + 4);
    for (int j = 0; j < QKK; j++) y[j] = d * (float)qs[j];
}

/* ---- dispatch ------------------------------------------------------------------------------- */

bool clara_quant_supported(clara_type t) {
    switch (t) {
    case CLARA_TYPE_F32:
    case CLARA_TYPE_F16:
    case CLARA_TYPE_BF16:
    case CLARA_TYPE_Q4_0:
    case CLARA_TYPE_Q4_1:
    case CLARA_TYPE_Q5_0:
    case CLARA_TYPE_Q5_1:
    case CLARA_TYPE_Q8_0:
    case CLARA_TYPE_Q8_1:
    case CLARA_TYPE_Q4_K:
    case CLARA_TYPE_Q5_K:
    case CLARA_TYPE_Q6_K:
    case CLARA_TYPE_Q8_K:
        return true;
    default:
        return false;
    }
}

bool clara_dequant_supported(clara_type t) {
    return clara_quant_supported(t) || t == CLARA_TYPE_Q8_Z;
}

static clara_status check_args(clara_type t, uint64_t n, const char *name, bool reading,
                               const clara_type_info **ti) {
    *ti = clara_type_get((uint32_t)t);
    if (!*ti || !(reading ? clara_dequant_supported(t) : clara_quant_supported(t)))
        return clara_fail(CLARA_ERR_INVALID_ARG, "%s: cannot convert to or from type %s",
                          name ? name : "row", clara_type_name(t));
    if (n % (*ti)->block_size != 0)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "%s: row of %llu elements is not a multiple of the %s block size %u",
                          name ? name : "row", (unsigned long long)n, (*ti)->name,
                          (unsigned)(*ti)->block_size);
    return CLARA_OK;
}

static void quantize_block(clara_type t, const float *x, uint8_t *b, bool *bad) {
    switch (t) {
    case CLARA_TYPE_Q4_0:
        q_0_block(x, b, 4, bad);
        break;
    case CLARA_TYPE_Q5_0:
        q_0_block(x, b, 5, bad);
        break;
    case CLARA_TYPE_Q4_1:
        q_1_block(x, b, 4, bad);
        break;
    case CLARA_TYPE_Q5_1:
        q_1_block(x, b, 5, bad);
        break;
    case CLARA_TYPE_Q8_0:
        q8_block(x, b, false, bad);
        break;
    case CLARA_TYPE_Q8_1:
        q8_block(x, b, true, bad);
        break;
    case CLARA_TYPE_Q4_K:
        q4_k_block(x, b, bad);
        break;
    case CLARA_TYPE_Q5_K:
        q5_k_block(x, b, bad);
        break;
    case CLARA_TYPE_Q6_K:
        q6_k_block(x, b, bad);
        break;
    case CLARA_TYPE_Q8_K:
        q8_k_block(x, b);
        break;
    case CLARA_TYPE_F32:
        wr32(b, clara_f32_bits(x[0]));
        break;
    case CLARA_TYPE_F16:
        wr16(b, clara_f32_to_f16(x[0]));
        break;
    case CLARA_TYPE_BF16:
        wr16(b, clara_f32_to_bf16(x[0]));
        break;
    default:
        break; /* excluded by check_args */
    }
}

clara_status clara_quantize_row(clara_type t, const float *x, uint64_t n, void *dst,
                                const char *name) {
    const clara_type_info *ti;
    clara_status s = check_args(t, n, name, false, &ti);
    if (s != CLARA_OK) return s;
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return clara_fail(CLARA_ERR_INVALID_ARG, "%s: element %llu is %s; cannot quantize",
                              name ? name : "row", (unsigned long long)i,
                              isnan(x[i]) ? "NaN" : "infinite");
    uint8_t *out = dst;
    bool bad = false;
    for (uint64_t i = 0; i < n / ti->block_size; i++) {
        quantize_block(t, x + i * ti->block_size, out + i * ti->type_size, &bad);
        if (bad && t != CLARA_TYPE_F16 && t != CLARA_TYPE_BF16)
            return clara_fail(CLARA_ERR_INVALID_ARG,
                              "%s: block %llu: values too large for %s (its f16 scale overflows)",
                              name ? name : "row", (unsigned long long)i, ti->name);
    }
    return CLARA_OK;
}

clara_status clara_dequantize_row(clara_type t, const void *src, uint64_t n, float *y) {
    const clara_type_info *ti;
    clara_status s = check_args(t, n, NULL, true, &ti);
    if (s != CLARA_OK) return s;
    const uint8_t *in = src;
    for (uint64_t i = 0; i < n / ti->block_size; i++) {
        const uint8_t *b = in + i * ti->type_size;
        float *yb = y + i * ti->block_size;
        switch (t) {
        case CLARA_TYPE_Q4_0:
            dq_q_0(b, yb, 4);
            break;
        case CLARA_TYPE_Q5_0:
            dq_q_0(b, yb, 5);
            break;
        case CLARA_TYPE_Q4_1:
            dq_q_1(b, yb, 4);
            break;
        case CLARA_TYPE_Q5_1:
            dq_q_1(b, yb, 5);
            break;
        case CLARA_TYPE_Q8_0:
            dq_q8(b, yb, 2);
            break;
        case CLARA_TYPE_Q8_1:
            dq_q8(b, yb, 4);
            break;
        case CLARA_TYPE_Q4_K:
            dq_qk(b, yb, 4);
            break;
        case CLARA_TYPE_Q5_K:
            dq_qk(b, yb, 5);
            break;
        case CLARA_TYPE_Q6_K:
            dq_q6_k(b, yb);
            break;
        case CLARA_TYPE_Q8_K:
            dq_q8_k(b, yb);
            break;
        case CLARA_TYPE_Q8_Z: /* GPTQ 8-bit asymmetric (docs/FORMAT.md): f16 d, u16 zero, 32 u8 */
            for (int k = 0; k < 32; k++)
                yb[k] = clara_f16_to_f32(rd16(b)) * (float)((int)b[4 + k] - (int)rd16(b + 2));
            break;
        case CLARA_TYPE_F32:
            yb[0] = clara_f32_le(b);
            break;
        case CLARA_TYPE_F16:
            yb[0] = clara_f16_le(b);
            break;
        case CLARA_TYPE_BF16:
            yb[0] = clara_bf16_to_f32(rd16(b));
            break;
        default:
            break;
        }
    }
    return CLARA_OK;
}
