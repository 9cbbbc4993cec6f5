/* test_quant.c - the GGUF block types (src/quant.c) and the scalar dot products
 * (src/cpu/kernels_ref.c):
 *  - hand-built blocks decode to hand-computed values; hand-computed quantizer bytes;
 *  - round trips on gaussian and adversarial inputs: every element within its type's derived
 *    error bound (see bound_* below) AND each code the nearest one the stored scales allow;
 *  - integer dot products equal dequantize-then-dot (double) within 1e-5 relative;
 *  - non-finite inputs and f16-scale overflows are rejected; random bytes (including inf/NaN
 *    scales) never crash the dequantizers or kernels (run under UBSan by `make SANITIZER=...`).
 * With `--dump DIR` it instead writes blocks and their C dequantization for
 * tests/e2e/test_quant_ref.py, which dequantizes them again with numpy and compares bits. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fp16.h"
#include "cpu/kernels_ref.h"
#include "dtype.h"
#include "quant.h"
#include "t.h"

static const clara_type k_types[] = {
    CLARA_TYPE_Q4_0, CLARA_TYPE_Q4_1, CLARA_TYPE_Q5_0, CLARA_TYPE_Q5_1, CLARA_TYPE_Q8_0,
    CLARA_TYPE_Q8_1, CLARA_TYPE_Q4_K, CLARA_TYPE_Q5_K, CLARA_TYPE_Q6_K, CLARA_TYPE_Q8_K};
#define N_TYPES (sizeof k_types / sizeof k_types[0])
#define N       1024 /* elements per test row: 32 blocks of 32 or 4 super-blocks */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545f4914f6cdd1dull;
}
static double unif(void) {
    return ((double)(rnd() >> 11) + 0.5) / 9007199254740992.0;
}
static float gauss(void) {
    return (float)(sqrt(-2 * log(unif())) * cos(6.283185307179586 * unif()));
}

static float h2f(const uint8_t *p) {
    return clara_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}
static float f32le(const uint8_t *p) {
    return clara_bits_f32((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                          (uint32_t)p[3] << 24);
}
/* Largest |v32 - v16| for an f32 v32 that rounds to the f16 value v16 (normal or subnormal). */
static double f16_err(double v16) {
    double e = fabs(v16) * ldexp(1, -11);
    return e > ldexp(1, -25) ? e : ldexp(1, -25);
}

static const clara_type_info *ti(clara_type t) {
    return clara_type_get((uint32_t)t);
}

/* ---- hand-computed blocks ------------------------------------------------------------------- */

static void test_hand_q8_0_q4_0(void) {
    float x[32];
    uint8_t b[34];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16); /* amax 16: d = 16/127, 1/d = 7.9375 */
    T_EQ_INT(clara_quantize_row(CLARA_TYPE_Q8_0, x, 32, b, "t"), CLARA_OK);
    T_EQ_INT(b[0] | b[1] << 8, 0x3008); /* f16(0.12598) = 2^-3 * (1 + 8/1024) */
    T_EQ_INT((int8_t)b[2 + 0], -127);   /* -16 * 7.9375 */
    T_EQ_INT((int8_t)b[2 + 17], 8);     /* 1 * 7.9375 */
    T_EQ_INT((int8_t)b[2 + 19], 24);    /* 3 * 7.9375 = 23.81 */
    T_EQ_INT((int8_t)b[2 + 31], 119);   /* 15 * 7.9375 = 119.06 */
    /* q4_0: x = (j-8)/4 twice; max = -2 (first of largest magnitude) so d = 0.25, codes j */
    uint8_t q[18];
    for (int j = 0; j < 16; j++) x[j] = x[j + 16] = (float)(j - 8) * 0.25f;
    T_EQ_INT(clara_quantize_row(CLARA_TYPE_Q4_0, x, 32, q, "t"), CLARA_OK);
    T_EQ_INT(q[0] | q[1] << 8, 0x3400);
    int ok = 1;
    for (int j = 0; j < 16; j++) ok &= q[2 + j] == (uint8_t)(j | j << 4);
    T_CHECK(ok);
}

/* Blocks put together byte by byte; expected values from the layout description in quant.h. */
static void test_hand_decode(void) {
    float y[256];
    uint8_t k4[144] = {0};
    k4[0] = 0x00, k4[1] = 0x3c; /* d = 1 */
    k4[2] = 0x00, k4[3] = 0x38; /* dmin = 0.5 */
    uint8_t *s = k4 + 4;
    s[0] = 1, s[4] = 2;                      /* sub 0: sc 1, m 2 */
    s[9] = 0x18, s[1] |= 0x80, s[5] |= 0x80; /* sub 5: sc 8|2<<4 = 40, m 1|2<<4 = 33 */
    k4[16 + 0] = 0x09;                       /* element 0: code 9 */
    k4[16 + 64 + 3] = 0x70;                  /* element 2*64+32+3 = 163: code 7 */
    T_EQ_INT(clara_dequantize_row(CLARA_TYPE_Q4_K, k4, 256, y), CLARA_OK);
    T_CHECK(y[0] == 8.0f);     /* 1*1*9 - 0.5*2 */
    T_CHECK(y[1] == -1.0f);    /* code 0 */
    T_CHECK(y[163] == 263.5f); /* 40*7 - 0.5*33 */
    T_CHECK(y[160] == -16.5f);
    T_CHECK(y[32] == 0.0f); /* sub 1: sc = s[1]&63 = 0, m = s[5]&63 = 0 */

    uint8_t k5[176] = {0};
    memcpy(k5, k4, 16);
    k5[16 + 3] = 1 << 5;    /* qh[3] bit 2c+1 with c = 2: element 163 gets +16 */
    k5[48 + 64 + 3] = 0x70; /* its low nibble 7 */
    T_EQ_INT(clara_dequantize_row(CLARA_TYPE_Q5_K, k5, 256, y), CLARA_OK);
    T_CHECK(y[163] == 40.0f * 23 - 16.5f);
    T_CHECK(y[3] == -1.0f);

    uint8_t k6[210] = {0};
    k6[208] = 0x00, k6[209] = 0x40; /* d = 2 */
    k6[192 + 9] = (uint8_t)-3;      /* sub-block 9 = elements 144..159, scale -3 */
    /* element 128+16+5 = 149: half 1, quarter 0, l = 21: ql[64+21] low, qh[32+21] bits 0-1 */
    k6[64 + 21] = 0x05, k6[128 + 32 + 21] = 0x02; /* code 5 | 2<<4 = 37 -> q = 5 */
    T_EQ_INT(clara_dequantize_row(CLARA_TYPE_Q6_K, k6, 256, y), CLARA_OK);
    T_CHECK(y[149] == -30.0f); /* 2 * -3 * 5 */
    T_CHECK(y[150] == 2.0f * -3 * -32);

    uint8_t q5[22] = {0};
    q5[0] = 0x00, q5[1] = 0x3c; /* d = 1 */
    q5[2 + 2] = 0x01;           /* qh bit 16: element 16 gets bit 4 */
    q5[6 + 0] = 0x3f;           /* element 0 code 15, element 16 code 3 | 16 */
    T_EQ_INT(clara_dequantize_row(CLARA_TYPE_Q5_0, q5, 32, y), CLARA_OK);
    T_CHECK(y[0] == -1.0f && y[16] == 3.0f && y[1] == -16.0f);
}

/* ---- round-trip bounds ---------------------------------------------------------------------- */

typedef struct {
    double max_err, sum_err, max_rel; /* rel: error / block amax */
    uint64_t count;
} err_stats;

/* The representable grid of element i of block b: values scale*l + off, l in [lo, hi]. */
typedef struct {
    double scale, off;
    int lo, hi;
} grid;

static grid block_grid(clara_type t, const uint8_t *b, int i) {
    grid g = {0, 0, 0, 0};
    switch (t) {
    case CLARA_TYPE_Q4_0:
        return (grid){h2f(b), 0, -8, 7};
    case CLARA_TYPE_Q5_0:
        return (grid){h2f(b), 0, -16, 15};
    case CLARA_TYPE_Q4_1:
        return (grid){h2f(b), h2f(b + 2), 0, 15};
    case CLARA_TYPE_Q5_1:
        return (grid){h2f(b), h2f(b + 2), 0, 31};
    case CLARA_TYPE_Q8_0:
    case CLARA_TYPE_Q8_1:
        return (grid){h2f(b), 0, -127, 127};
    case CLARA_TYPE_Q8_K:
        return (grid){f32le(b), 0, -128, 127};
    case CLARA_TYPE_Q6_K:
        return (grid){(float)(h2f(b + 208) * (float)(int8_t)b[192 + i / 16]), 0, -32, 31};
    default: { /* q4_k, q5_k */
        int j = i / 32;
        const uint8_t *s = b + 4;
        int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
        int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | (s[j] >> 6) << 4;
        g.scale = (float)(h2f(b) * (float)sc);
        g.off = -(double)(float)(h2f(b + 2) * (float)m);
        g.hi = t == CLARA_TYPE_Q4_K ? 15 : 31;
        return g;
    }
    }
}

static double nearest_dist(grid g, double x) {
    if (g.scale == 0) return fabs(x - g.off);
    double l = nearbyint((x - g.off) / g.scale), best = INFINITY;
    for (int k = -1; k <= 1; k++) {
        double c = l + k;
        if (c < g.lo) c = g.lo;
        if (c > g.hi) c = g.hi;
        double dd = fabs(x - (g.scale * c + g.off));
        if (dd < best) best = dd;
    }
    return best;
}

/* Per-element bound for the 32-blocks. The quantizer divides by the f32 scale d32 and stores
 * f16(d32), |d32 - d16| <= fe. q8: round(x/d32) -> |x - q d16| <= d32/2 + 127 fe. q4_0/q5_0 (d =
 * max/-off): trunc(x/d + off + .5) is round-half-up except that x/d in [off-.5, off] (elements of
 * the sign opposite to max, |x| >= amax (off-.5)/off) clamps to off-1, one full step. q4_1/q5_1:
 * d/2 + top fe_d + fe_m. */
static double bound32(clara_type t, const float *x, const uint8_t *b, int i) {
    double d16 = fabs((double)h2f(b)), fe = f16_err(d16), amax = 0, max = 0;
    for (int j = 0; j < 32; j++)
        if (fabs(x[j]) > amax) amax = fabs(x[j]), max = x[j];
    double slack = 1e-6 * amax;
    switch (t) {
    case CLARA_TYPE_Q8_0:
    case CLARA_TYPE_Q8_1:
        return d16 / 2 + 128 * fe + slack;
    case CLARA_TYPE_Q4_0:
    case CLARA_TYPE_Q5_0: {
        double off = t == CLARA_TYPE_Q4_0 ? 8 : 16;
        int edge = x[i] * max < 0 && fabs(x[i]) >= amax * (off - 0.5) / off * (1 - 1e-6);
        return (edge ? 1.0 : 0.5) * (d16 + fe) + off * fe + slack;
    }
    default: {
        double top = t == CLARA_TYPE_Q4_1 ? 15 : 31;
        return d16 / 2 + (top + 1) * fe + f16_err(h2f(b + 2)) + slack;
    }
    }
}

/* Per-element bound for q4_k/q5_k (sub-block j of 32, codes 0..nmax). Before the scales are
 * rounded to 6 bits, the search keeps the candidate of least weighted squared error, never worse
 * than the full-range scale whose error is <= r/(2 nmax) per element (r = max - min(0, min)); so
 * w_i e_i^2 <= sum w (r/2nmax)^2 with w = av + |x|. Rounding the scale to a multiple of D =
 * max_scale/63 (stored as f16 d) moves it by <= D/2 + 63 |D - d|; likewise the min; requantizing
 * with the stored scales picks codes at least as good as the old ones. Hence e_i <= r/(2 nmax)
 * sqrt(sum w / w_i) + nmax ds + dm. */
static double bound_qk(clara_type t, const float *x, const uint8_t *b, int i) {
    int nmax = t == CLARA_TYPE_Q4_K ? 15 : 31;
    const float *xs = x + (i / 32) * 32;
    double mn = 0, mx = xs[0], sx2 = 0, sw = 0, amax = 0;
    for (int l = 0; l < 32; l++) {
        if (xs[l] < mn) mn = xs[l];
        if (xs[l] > mx) mx = xs[l];
        sx2 += (double)xs[l] * xs[l];
    }
    for (int l = 0; l < 256; l++) amax = fmax(amax, fabs(x[(i / 256) * 256 + l]));
    double av = sqrt(sx2 / 32);
    for (int l = 0; l < 32; l++) sw += av + fabs(xs[l]);
    double wi = av + fabs(x[i]);
    double eopt = sw == 0 ? 0 : (mx - mn) / (2.0 * nmax) * sqrt(sw / wi);
    double d = fabs((double)h2f(b)), dm = fabs((double)h2f(b + 2));
    double ds = d / 2 + 64 * f16_err(d), dmn = dm / 2 + 64 * f16_err(dm);
    return eopt + nmax * ds + dmn + 1e-5 * amax + 1e-30;
}

/* q6_k (sub-blocks of 16, codes -32..31, x^2 weights): the first candidate, scale max/-32, has
 * error <= amax/32 per element, so x_i^2 e_i^2 <= sum x^2 (amax/32)^2; the 8-bit scale against
 * D = max_scale/-128 (f16 d) moves it by <= |D| + 128 |D - d|, times |code| <= 32. */
static double bound_q6k(const float *x, const uint8_t *b, int i) {
    const float *xs = x + (i / 16) * 16;
    double amax = 0, sx2 = 0, bmax = 0;
    for (int l = 0; l < 16; l++) amax = fmax(amax, fabs(xs[l])), sx2 += (double)xs[l] * xs[l];
    for (int l = 0; l < 256; l++) bmax = fmax(bmax, fabs(x[(i / 256) * 256 + l]));
    double eopt = x[i] == 0 ? 0 : amax / 32 * sqrt(sx2) / fabs(x[i]);
    double d = fabs((double)h2f(b + 208));
    return eopt + 32 * (d + 129 * f16_err(d)) + 1e-5 * bmax + 1e-12;
}

static double bound_for(clara_type t, const float *x, const uint8_t *b, int i) {
    switch (t) {
    case CLARA_TYPE_Q4_K:
    case CLARA_TYPE_Q5_K:
        return bound_qk(t, x, b, i);
    case CLARA_TYPE_Q6_K:
        return bound_q6k(x, b, i);
    case CLARA_TYPE_Q8_K: {
        double amax = 0, d = fabs((double)f32le(b));
        for (int l = 0; l < 256; l++) amax = fmax(amax, fabs(x[l]));
        return d == 0 ? (amax < 1e-36 ? amax : 0) : d / 2 + 1e-6 * amax;
    }
    default:
        return bound32(t, x, b, i);
    }
}

/* Slack of the nearest-code check: the 32-block quantizers divide by the f32 scale, not the
 * stored f16 one; the code nearest on the d32 grid is within 2 |code| |d32 - d16| (+ the f16
 * min's error) of the nearest on the stored grid. */
static double nearest_slack(clara_type t, const uint8_t *b, const float *x) {
    double amax = 0;
    for (int j = 0; j < (int)ti(t)->block_size; j++) amax = fmax(amax, fabs(x[j]));
    switch (t) {
    case CLARA_TYPE_Q4_K:
    case CLARA_TYPE_Q5_K:
    case CLARA_TYPE_Q6_K:
    case CLARA_TYPE_Q8_K:
        return 1e-5 * amax + 1e-30;
    case CLARA_TYPE_Q4_1:
    case CLARA_TYPE_Q5_1:
        return 64 * f16_err(h2f(b)) + f16_err(h2f(b + 2)) + 1e-6 * amax;
    default:
        return 256 * f16_err(h2f(b)) + 1e-6 * amax;
    }
}

static void check_round_trip(clara_type t, const float *x, int n, const char *what, err_stats *st) {
    const clara_type_info *info = ti(t);
    uint8_t *q = malloc((size_t)n / info->block_size * info->type_size);
    float *y = malloc((size_t)n * sizeof *y);
    T_EQ_INT(clara_quantize_row(t, x, (uint64_t)n, q, what), CLARA_OK);
    T_EQ_INT(clara_dequantize_row(t, q, (uint64_t)n, y), CLARA_OK);
    int bad_bound = 0, bad_near = 0, first = -1;
    for (int i = 0; i < n; i++) {
        int blk = i / (int)info->block_size;
        const uint8_t *b = q + (size_t)blk * info->type_size;
        const float *xb = x + (size_t)blk * info->block_size;
        int ib = i % (int)info->block_size;
        double err = fabs((double)y[i] - x[i]);
        double bnd = bound_for(t, xb, b, ib);
        double nd = nearest_dist(block_grid(t, b, ib), x[i]);
        if (!(err <= bnd)) bad_bound++, first = first < 0 ? i : first;
        if (!(err <= nd + nearest_slack(t, b, xb))) {
            bad_near++, first = first < 0 ? i : first;
            if (getenv("QDEBUG"))
                fprintf(stderr, "near: err %g nd %g slack %g d %g\n", err, nd,
                        nearest_slack(t, b, xb), (double)h2f(b));
        }
        double amax = 0;
        for (uint32_t j = 0; j < info->block_size; j++) amax = fmax(amax, fabs(xb[j]));
        st->max_err = fmax(st->max_err, err);
        st->sum_err += err;
        if (amax > 0) st->max_rel = fmax(st->max_rel, err / amax);
        if (getenv("QDEBUG") && amax > 0 && err / amax > 1)
            fprintf(stderr, "%s %s: i %d x %g y %g amax %g\n", info->name, what, i, x[i], y[i],
                    amax);
        st->count++;
    }
    T_CHECK_MSG(bad_bound == 0 && bad_near == 0,
                "%s %s: %d elements beyond the bound, %d not the nearest code (first %d: x %g y %g "
                "bound %g)",
                info->name, what, bad_bound, bad_near, first, first >= 0 ? x[first] : 0.0,
                first >= 0 ? y[first] : 0.0,
                first >= 0 ? bound_for(t, x + first / info->block_size * info->block_size,
                                       q + first / info->block_size * info->type_size,
                                       first % (int)info->block_size)
                           : 0.0);
    free(q);
    free(y);
}

typedef void (*gen_fn)(float *x, int n);
static void gen_gauss(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = gauss();
}
static void gen_weights(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = 0.02f * gauss();
}
static void gen_zeros(float *x, int n) {
    memset(x, 0, (size_t)n * sizeof *x);
}
static void gen_const(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = (i / 256) % 2 ? -0.3f : 0.7f;
}
static void gen_outlier(float *x, int n) {
    gen_gauss(x, n);
    for (int i = 5; i < n; i += 300) x[i] = i % 2 ? -1000.f : 1000.f;
}
static void gen_denormal(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = (float)(gauss() * 1e-40);
}
static void gen_tiny(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = (float)(gauss() * 1e-6);
}
static void gen_half_zero(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = (i / 32) % 2 ? 0.f : gauss();
}
static void gen_ties(float *x, int n) { /* +-amax pairs and exact grid points */
    for (int i = 0; i < n; i++) x[i] = (float)((i % 17) - 8) * (i % 3 ? 0.125f : -0.125f);
}
static void gen_large(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = 3000.f * gauss();
}
static void gen_positive(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = 5.f + fabsf(gauss());
}

static const struct {
    const char *name;
    gen_fn fn;
} k_gens[] = {{"gaussian", gen_gauss}, {"weights", gen_weights},     {"zeros", gen_zeros},
              {"constant", gen_const}, {"outliers", gen_outlier},    {"denormals", gen_denormal},
              {"tiny", gen_tiny},      {"half-zero", gen_half_zero}, {"ties", gen_ties},
              {"large", gen_large},    {"positive", gen_positive}};

static void test_round_trips(void) {
    static float x[N];
    for (size_t k = 0; k < N_TYPES; k++) {
        err_stats st = {0, 0, 0, 0}, gs = {0, 0, 0, 0}, tiny = {0, 0, 0, 0};
        for (size_t g = 0; g < sizeof k_gens / sizeof k_gens[0]; g++)
            for (int rep = 0; rep < 3; rep++) {
                k_gens[g].fn(x, N);
                check_round_trip(k_types[k], x, N, k_gens[g].name,
                                 g == 0 ? &gs
                                 : k_gens[g].fn == gen_tiny || k_gens[g].fn == gen_denormal ||
                                         k_gens[g].fn == gen_zeros
                                     ? &tiny
                                     : &st);
            }
        const clara_type_info *info = ti(k_types[k]);
        printf("%-5s %.4f bits/weight; gaussian(0,1): max |err| %.5f, mean |err| %.5f, max "
               "err/amax %.4f; other inputs (not tiny/denormal): max err/amax %.4f\n",
               info->name, 8.0 * info->type_size / info->block_size, gs.max_err,
               gs.sum_err / (double)gs.count, gs.max_rel, fmax(st.max_rel, gs.max_rel));
    }
}

/* The bounds are not vacuous: corrupting one code of a quantized block breaks them. */
static void test_bound_catches_corruption(void) {
    static float x[N], y[N];
    static uint8_t q[N * 2];
    gen_gauss(x, N);
    for (size_t k = 0; k < N_TYPES; k++) {
        clara_type t = k_types[k];
        const clara_type_info *info = ti(t);
        T_EQ_INT(clara_quantize_row(t, x, N, q, "x"), CLARA_OK);
        /* flip the top bit of the code byte that holds element 0 of the 2nd block */
        static const int code_at[] = {2, 4, 6, 8, 2, 4, 16, 48, 0, 4}; /* in k_types order */
        size_t off = info->type_size + (size_t)code_at[k];
        q[off] ^= 0x80;
        clara_dequantize_row(t, q, N, y);
        int fails = 0;
        for (uint32_t i = 0; i < info->block_size; i++) {
            size_t e = info->block_size + i;
            if (!(fabs((double)y[e] - x[e]) <=
                  fmin(bound_for(t, x + info->block_size, q + info->type_size, (int)i),
                       nearest_dist(block_grid(t, q + info->type_size, (int)i), x[e]) +
                           nearest_slack(t, q + info->type_size, x + info->block_size))))
                fails++;
        }
        T_CHECK_MSG(fails > 0, "%s: a corrupted code went unnoticed", info->name);
    }
}

/* ---- rejection and robustness --------------------------------------------------------------- */

static void test_rejects(void) {
    float x[256];
    static uint8_t q[512];
    for (size_t k = 0; k < N_TYPES; k++) {
        clara_type t = k_types[k];
        uint32_t bs = ti(t)->block_size;
        for (int v = 0; v < 3; v++) {
            gen_gauss(x, 256);
            x[7] = v == 0 ? NAN : v == 1 ? INFINITY : -INFINITY;
            T_EQ_INT(clara_quantize_row(t, x, bs, q, "w"), CLARA_ERR_INVALID_ARG);
        }
        gen_gauss(x, 256);
        x[3] = 1e7f; /* a q8_0 scale of 1e7/127 > 65504 overflows f16 */
        clara_status s = clara_quantize_row(t, x, bs, q, "w");
        if (t == CLARA_TYPE_Q8_K)
            T_EQ_INT(s, CLARA_OK); /* f32 scale */
        else if (t == CLARA_TYPE_Q4_K || t == CLARA_TYPE_Q5_K || t == CLARA_TYPE_Q6_K)
            T_CHECK(s == CLARA_OK || s == CLARA_ERR_INVALID_ARG);
        else
            T_EQ_INT(s, CLARA_ERR_INVALID_ARG);
        T_EQ_INT(clara_quantize_row(t, x, bs + 1, q, "w"), CLARA_ERR_INVALID_ARG);
        T_EQ_INT(clara_dequantize_row(t, q, bs - 1, x), CLARA_ERR_INVALID_ARG);
    }
    T_EQ_INT(clara_quantize_row(CLARA_TYPE_Q2_K, x, 256, q, "w"), CLARA_ERR_INVALID_ARG);
    T_EQ_INT(clara_dequantize_row(CLARA_TYPE_I32, q, 4, x), CLARA_ERR_INVALID_ARG);
    T_EQ_INT(clara_nearest_int(2.5f), 2);
    T_EQ_INT(clara_nearest_int(-3.5f), -4);
    T_EQ_INT(clara_nearest_int(NAN), 0);
    T_EQ_INT(clara_nearest_int(1e30f), 4194303);
}

/* Whether block b of type t has finite f16 scales (then every output must be finite). */
static int scales_finite(clara_type t, const uint8_t *b) {
    switch (t) {
    case CLARA_TYPE_Q4_1:
    case CLARA_TYPE_Q5_1:
    case CLARA_TYPE_Q4_K:
    case CLARA_TYPE_Q5_K:
        return isfinite(h2f(b)) && isfinite(h2f(b + 2));
    case CLARA_TYPE_Q6_K:
        return isfinite(h2f(b + 208));
    case CLARA_TYPE_Q8_K:
        return 0; /* f32 d: d*q may overflow */
    default:
        return isfinite(h2f(b));
    }
}

static void test_random_bytes(void) {
    static uint8_t w[N * 2], a[N * 2];
    static float y[N], x[N];
    int bad = 0;
    for (int it = 0; it < 300; it++)
        for (size_t k = 0; k < N_TYPES; k++) {
            clara_type t = k_types[k];
            const clara_type_info *info = ti(t);
            size_t bytes = N / info->block_size * info->type_size;
            for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)rnd();
            if (it % 3 == 0) /* force inf/NaN scales into the first bytes of some blocks */
                for (size_t i = 0; i < bytes; i += info->type_size) w[i + 1] |= 0x7c;
            T_CHECK(clara_dequantize_row(t, w, N, y) == CLARA_OK);
            for (int i = 0; i < N; i++) {
                const uint8_t *b = w + i / info->block_size * info->type_size;
                if (scales_finite(t, b) && !isfinite(y[i])) bad++;
            }
            int at = clara_vec_dot_type(t);
            if (at < 0) continue;
            const clara_type_info *ai = ti((clara_type)at);
            for (size_t i = 0; i < N / ai->block_size * ai->type_size; i++) a[i] = (uint8_t)rnd();
            volatile float r = clara_vec_dot_q_ref(t, w, a, N);
            for (int i = 0; i < N; i++) x[i] = gauss();
            r = clara_vec_dot_f_ref(t, w, x, N);
            (void)r;
        }
    T_EQ_INT(bad, 0);
}

/* ---- dot products --------------------------------------------------------------------------- */

static void test_dots(void) {
    static float x[N], wf[N], wd[N], ad[N];
    static uint8_t w[N * 2], a[N * 2];
    for (size_t k = 0; k < N_TYPES; k++) {
        clara_type t = k_types[k];
        int at = clara_vec_dot_type(t);
        if (at < 0) continue;
        for (int rep = 0; rep < 20; rep++) {
            for (int i = 0; i < N; i++) wf[i] = rep % 2 ? 0.02f * gauss() : gauss() + 0.3f;
            for (int i = 0; i < N; i++) x[i] = rep % 4 == 3 ? 5.f * gauss() : gauss();
            T_EQ_INT(clara_quantize_row(t, wf, N, w, "w"), CLARA_OK);
            T_EQ_INT(clara_quantize_row((clara_type)at, x, N, a, "x"), CLARA_OK);
            clara_dequantize_row(t, w, N, wd);
            clara_dequantize_row((clara_type)at, a, N, ad);
            double ref = 0, mag = 0, reff = 0, magf = 0, aerr = 0;
            for (int i = 0; i < N; i++) {
                ref += (double)wd[i] * ad[i], mag += fabs((double)wd[i] * ad[i]);
                reff += (double)wd[i] * x[i], magf += fabs((double)wd[i] * x[i]);
                aerr += fabs((double)wd[i]) * fabs((double)x[i] - ad[i]);
            }
            float qi = clara_vec_dot_q_ref(t, w, a, N);
            float fl = clara_vec_dot_f_ref(t, w, x, N);
            T_CHECK_MSG(fabs(qi - ref) <= 1e-5 * mag, "%s int dot %.9g vs %.9g", ti(t)->name, qi,
                        ref);
            T_CHECK_MSG(fabs(fl - reff) <= 1e-5 * magf, "%s f32 dot %.9g vs %.9g", ti(t)->name, fl,
                        reff);
            /* the two differ only by the activations' quantization error */
            T_CHECK(fabs((double)qi - fl) <= aerr + 2e-5 * (mag + magf));
            float conv;
            T_EQ_INT(clara_vec_dot_ref(t, w, x, N, &conv), CLARA_OK);
            T_CHECK(conv == qi);
        }
    }
    float conv;
    T_EQ_INT(clara_vec_dot_ref(CLARA_TYPE_F32, w, x, 4, &conv), CLARA_ERR_INVALID_ARG);
}

/* ---- dump for the numpy comparison ---------------------------------------------------------- */

static int write_file(const char *dir, const char *name, const char *ext, const void *p, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    size_t w = fwrite(p, 1, n, f);
    return (fclose(f) != 0) | (w != n);
}

/* Per type: 64 blocks of random bytes (every 4th with an inf/NaN scale pattern), then the
 * blocks of every input generator, and their C dequantization. */
static int dump(const char *dir) {
    enum { NB = 64 };
    static float x[N];
    for (size_t k = 0; k < N_TYPES; k++) {
        const clara_type_info *info = ti(k_types[k]);
        size_t row = N / info->block_size * info->type_size, ng = sizeof k_gens / sizeof k_gens[0];
        size_t nbytes = NB * info->type_size + ng * row,
               nel = nbytes / info->type_size * info->block_size;
        uint8_t *q = malloc(nbytes);
        float *y = malloc(nel * sizeof *y);
        for (size_t i = 0; i < NB * info->type_size; i++) q[i] = (uint8_t)rnd();
        for (size_t i = 0; i < NB; i += 4) q[i * info->type_size + 1] |= 0x7c;
        for (size_t g = 0; g < ng; g++) {
            k_gens[g].fn(x, N);
            if (clara_quantize_row(k_types[k], x, N, q + NB * info->type_size + g * row, "x"))
                return 1;
        }
        clara_dequantize_row(k_types[k], q, nel, y);
        if (write_file(dir, info->name, "bin", q, nbytes) ||
            write_file(dir, info->name, "f32", y, nel * sizeof *y))
            return 1;
        free(q);
        free(y);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--dump") == 0) return dump(argv[2]);
    T_RUN(test_hand_q8_0_q4_0);
    T_RUN(test_hand_decode);
    T_RUN(test_round_trips);
    T_RUN(test_bound_catches_corruption);
    T_RUN(test_rejects);
    T_RUN(test_random_bytes);
    T_RUN(test_dots);
    return t_report("test_quant");
}
