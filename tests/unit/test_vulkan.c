/* test_vulkan.c - each Vulkan compute shader (src/vulkan/) against its CPU reference on random
 * inputs, on whatever Vulkan device the machine has (in CI: Mesa's lavapipe, a CPU device, which
 * .ci/install-deps installs). Built only where the Vulkan backend is built; there, no device is a
 * failure, never a skip.
 *  - matmul (f32, f16, bf16 and the block types we ship: q8_0, q4_0, q4_1, q5_0, q5_1, q8_z,
 *    q4_k, q5_k, q6_k; 1 to 8 activation rows; odd shapes, rows and columns not multiples of the
 *    64-wide workgroup, rows whose bytes are not whole words): within 1e-5 of sum|w*x| of a
 *    double-precision dot of the CPU's dequantized weights (test_kernels.c's bound for float
 *    types; the shader dequantizes exactly, so that bound holds for block types too), and for
 *    block types within the activation quantization bound of kernels_ref.c's integer dot, which
 *    the CPU engine computes; accumulate mode; a token's result bit-identical alone and in a
 *    batch; unit vectors x = e_j giving column j of the CPU's dequantized matrix exactly (the
 *    shader's dequantization is the CPU's, bit for bit); uploads through a staging buffer;
 *  - RMSNorm, SwiGLU within bounds derived from Vulkan's precision rules (at each check), RoPE
 *    bit-identical to forward.c's arithmetic;
 *  - device choice (CLARA_VK_DEVICE, `auto` never picking a CPU device) and the errors: unsupported
 *    type, out-of-range copies, a lost device;
 *  - libvulkan loaded at run time, not linked: no libvulkan among the objects loaded at start and
 *    none in the DT_NEEDED entries (readelf -d) of this binary, build/clara and build/clara-server;
 *    this binary run again as a child with CLARA_VK_LOADER naming a file that is not there (or a
 *    library that is not a loader) fails every Vulkan call with the message saying what to
 *    install, and still does CPU work and exits normally. */
#define _GNU_SOURCE /* dl_iterate_phdr */
#include <link.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fp16.h"
#include "cpu/kernels_ref.h"
#include "dtype.h"
#include "quant.h"
#include "t.h"
#include "t_vk.h"
#include "vulkan/device.h"
#include "vulkan/ops.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 4503599627370496.0 - 1.0;
}

static float *rand_vec(size_t n, double scale) {
    float *v = malloc(n * sizeof(float) + 4);
    for (size_t i = 0; v && i < n; i++) v[i] = (float)(frand() * scale);
    return v;
}

static clvk_dev *g_dev;

static int download(const clvk_buf *b, void *host, size_t bytes) {
    clara_status st = clvk_download(g_dev, b, 0, host, bytes);
    T_CHECK_MSG(st == CLARA_OK, "download: %s", clara_last_error());
    return st == CLARA_OK ? 0 : -1;
}

/* Random weights of type t: the blocks and the CPU's dequantization of them. */
typedef struct {
    clara_type t;
    uint64_t rows, cols;
    size_t row_bytes;
    uint8_t *data;
    float *deq;
} wmat;

/* q8_z has no quantizer (only the GPTQ converter writes it): random blocks of f16 d, a u16 zero
 * point and 32 codes, d small enough that values stay near [-1, 1]. */
static void q8_z_random(uint8_t *data, size_t bytes) {
    for (size_t b = 0; b + 36 <= bytes; b += 36) {
        uint16_t d = clara_f32_to_f16((float)(frand() * 0.008)),
                 zero = (uint16_t)(128 + 64 * frand());
        data[b] = (uint8_t)d, data[b + 1] = (uint8_t)(d >> 8);
        data[b + 2] = (uint8_t)zero, data[b + 3] = (uint8_t)(zero >> 8);
        for (int k = 0; k < 32; k++) data[b + 4 + k] = (uint8_t)(128 + 127.99 * frand());
    }
}

static int wmat_make(wmat *m, clara_type t, uint64_t rows, uint64_t cols) {
    const clara_type_info *ti = clara_type_get((uint32_t)t);
    *m = (wmat){t, rows, cols, (size_t)(cols / ti->block_size) * ti->type_size, NULL, NULL};
    float *src = rand_vec(rows * cols, 1.0);
    m->data = malloc(rows * m->row_bytes);
    m->deq = malloc(rows * cols * sizeof(float));
    int rc = src && m->data && m->deq ? 0 : -1;
    if (rc == 0 && t == CLARA_TYPE_Q8_Z) q8_z_random(m->data, rows * m->row_bytes);
    for (uint64_t r = 0; rc == 0 && r < rows; r++)
        if ((t != CLARA_TYPE_Q8_Z &&
             clara_quantize_row(t, src + r * cols, cols, m->data + r * m->row_bytes, "w") !=
                 CLARA_OK) ||
            clara_dequantize_row(t, m->data + r * m->row_bytes, cols, m->deq + r * cols) !=
                CLARA_OK)
            rc = -1;
    free(src);
    return rc;
}

static void wmat_free(wmat *m) {
    free(m->data);
    free(m->deq);
}

static bool is_float(clara_type t) {
    return t == CLARA_TYPE_F32 || t == CLARA_TYPE_F16 || t == CLARA_TYPE_BF16;
}

/* Truth and bounds for element (token tk, row r):
 *  - truth: the double-precision dot of the CPU's dequantized row with x;
 *  - bound: 1e-5 * sum|w*x|. The shader's f32 sum has at most cols/64 + 6 roundings per term
 *    (each invocation's chain, then the 6-level tree; for block types 32 + 1 within a block and
 *    cols/2048 + 6 after), under 1e-5 relative to sum|w*x| for every shape here (cols <= 4096);
 *  - qbound (block types): the distance to kernels_ref.c's integer dot, which takes x quantized to
 *    q8_0 or q8_1 (32-element blocks) or q8_k (256): each x moves by at most half a step. q8_0 and
 *    q8_1: d/2 with d = amax/127 stored as f16 (relative error 2^-11, times up to 127 codes:
 *    0.062 d), so 0.57 d = amax/223 < amax/200 per element; q8_k: d = amax/127 in f32, so
 *    amax/254 (+ f32 rounding) < amax/250; times sum|w| over the activation block; plus the bound
 *    above for the rest. The integer dot's f32 scale products (d * da * isum - dmin * da * msum
 *    for the K-quants) add a few 2^-24 of terms within a small multiple of sum|w*x|. */
static void elem_truth(const wmat *m, const float *x, uint32_t tk, uint64_t r, double *truth,
                       double *bound, double *qbound) {
    const float *w = m->deq + r * m->cols, *xr = x + (size_t)tk * m->cols;
    bool k_quant = clara_vec_dot_type(m->t) == CLARA_TYPE_Q8_K;
    uint64_t ablock = k_quant ? 256 : 32;
    double s = 0, sa = 0, qb = 0, per_amax = k_quant ? 250 : 200;
    for (uint64_t b = 0; b < m->cols; b += ablock) {
        double amax = 0, wsum = 0;
        for (uint64_t k = b; k < m->cols && k < b + ablock; k++) {
            s += (double)w[k] * xr[k];
            sa += fabs((double)w[k] * xr[k]);
            amax = fmax(amax, fabs(xr[k]));
            wsum += fabs(w[k]);
        }
        qb += amax / per_amax * wsum;
    }
    *truth = s;
    *bound = 1e-5 * sa + 1e-30;
    *qbound = qb + 1.01e-5 * sa;
}

/* One (type, shape, n) matmul on the device, checked element by element. */
static void check_matmul(clara_type t, uint64_t rows, uint64_t cols, uint32_t n) {
    wmat m;
    const char *tn = clara_type_name(t);
    if (wmat_make(&m, t, rows, cols) != 0) {
        T_CHECK_MSG(0, "setup %s %llux%llu", tn, (unsigned long long)rows,
                    (unsigned long long)cols);
        wmat_free(&m);
        return;
    }
    size_t ny = (size_t)n * rows;
    float *x = rand_vec((size_t)n * cols, 1.0), *y = malloc(ny * 4), *ya = rand_vec(ny, 1.0),
          *ya0 = malloc(ny * 4), *y1 = malloc(rows * 4);
    memcpy(ya0, ya, ny * 4);
    clvk_buf *bw = t_vk_buf(g_dev, m.data, rows * m.row_bytes),
             *bx = t_vk_buf(g_dev, x, (size_t)n * cols * 4), *by = t_vk_buf(g_dev, ya, ny * 4);
    int bad = 0, badq = 0, bad_acc = 0, alone = 0;
    size_t worst = 0;
    double wt = 0, wb = 0;
    clara_status st = CLARA_ERR_IO;
    if (bw && bx && by &&
        (st = clvk_matmul(g_dev, bw, t, rows, cols, bx, n, by, false, 1)) == CLARA_OK &&
        download(by, y, ny * 4) == 0) {
        for (uint32_t tk = 0; tk < n; tk++)
            for (uint64_t r = 0; r < rows; r++) {
                double truth, bound, qbound;
                size_t i = (size_t)tk * rows + r;
                elem_truth(&m, x, tk, r, &truth, &bound, &qbound);
                if (!(fabs(y[i] - truth) <= bound)) bad++, worst = i, wt = truth, wb = bound;
                if (clara_vec_dot_type(t) >= 0) { /* q8_z has no integer kernel */
                    float q = NAN;
                    clara_vec_dot_ref(t, m.data + r * m.row_bytes, x + (size_t)tk * cols, cols, &q);
                    if (!(fabs(y[i] - q) <= qbound)) badq++;
                }
            }
        /* accumulate: y = ya0 + 0.5 * d */
        if (clvk_upload(g_dev, by, 0, ya0, ny * 4) == CLARA_OK &&
            clvk_matmul(g_dev, bw, t, rows, cols, bx, n, by, true, 0.5f) == CLARA_OK &&
            download(by, ya, ny * 4) == 0)
            for (size_t i = 0; i < ny; i++)
                if (!(fabs(ya[i] - (ya0[i] + 0.5f * y[i])) <= 1e-6 * (1 + fabs(ya[i])))) bad_acc++;
        /* the last token alone: the same bits as in the batch */
        if (clvk_matmul(g_dev, bw, t, rows, cols, bx, 1, by, false, 1) == CLARA_OK &&
            download(by, y1, rows * 4) == 0)
            alone = memcmp(y1, y, rows * 4) != 0;
    }
    T_CHECK_MSG(st == CLARA_OK, "%s matmul: %s", tn, clara_last_error());
    T_CHECK_MSG(bad == 0, "%s %llux%llu n=%u: %d off, e.g. [%zu] %.9g vs %.9g (bound %g)", tn,
                (unsigned long long)rows, (unsigned long long)cols, n, bad, worst,
                bad ? (double)y[worst] : 0.0, wt, wb);
    T_CHECK_MSG(badq == 0, "%s %llux%llu n=%u: %d off the integer reference", tn,
                (unsigned long long)rows, (unsigned long long)cols, n, badq);
    T_CHECK_MSG(bad_acc == 0, "%s n=%u: accumulate off in %d", tn, n, bad_acc);
    T_CHECK_MSG(!alone, "%s n=%u: token 0 alone differs from the batch", tn, n);
    clvk_buf_free(g_dev, bw), clvk_buf_free(g_dev, bx), clvk_buf_free(g_dev, by);
    free(x), free(y), free(ya), free(ya0), free(y1);
    wmat_free(&m);
}

static const clara_type all_types[] = {CLARA_TYPE_F32,  CLARA_TYPE_F16,  CLARA_TYPE_BF16,
                                       CLARA_TYPE_Q8_0, CLARA_TYPE_Q4_0, CLARA_TYPE_Q4_1,
                                       CLARA_TYPE_Q5_0, CLARA_TYPE_Q5_1, CLARA_TYPE_Q8_Z,
                                       CLARA_TYPE_Q4_K, CLARA_TYPE_Q5_K, CLARA_TYPE_Q6_K};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

static void test_matmul(void) {
    static const clara_type *types = all_types;
    static const uint64_t fshapes[][2] = {{1, 1}, {5, 7}, {13, 33}, {70, 257}, {9, 1029}};
    static const uint64_t qshapes[][2] = {{1, 32}, {5, 64}, {67, 96}, {13, 2080}, {3, 4096}};
    /* K-quant rows are whole 256-element super-blocks; a q6_k row of 256 is 210 bytes, so rows
     * after the first start off a word boundary */
    static const uint64_t kshapes[][2] = {{1, 256}, {5, 512}, {67, 768}, {13, 2304}, {3, 4096}};
    static const uint32_t ns[] = {1, 3, 8};
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const clara_type_info *info = clara_type_get((uint32_t)types[ti]);
        const uint64_t(*shapes)[2] = is_float(types[ti])       ? fshapes
                                     : info->block_size == 256 ? kshapes
                                                               : qshapes;
        for (size_t s = 0; s < 5; s++)
            for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
                check_matmul(types[ti], shapes[s][0], shapes[s][1], ns[k]);
    }
    /* shapes all types take, on top */
    for (size_t ti = 0; ti < N_TYPES; ti++) check_matmul(types[ti], 130, 256, 2);
    /* more rows than one dispatch takes (65535 workgroups of 4 rows), the last group short */
    check_matmul(CLARA_TYPE_F32, 262147, 1, 2);
    check_matmul(CLARA_TYPE_Q4_0, 262147, 32, 1);
}

/* Activation rows that are unit vectors e_j, one per column j: y[j][r] has one nonzero product
 * w[r][j] * 1, exact, so it must equal the CPU's dequantized weight bit for bit (-0 and +0 alike):
 * the shader dequantizes every type exactly as clara_dequantize_row does. */
static void check_unit_columns(clara_type t, uint64_t rows, uint64_t cols) {
    wmat m;
    const char *tn = clara_type_name(t);
    float *x = calloc(cols * cols, sizeof(float)), *y = malloc(cols * rows * sizeof(float));
    int setup = wmat_make(&m, t, rows, cols) == 0 && x && y;
    T_CHECK_MSG(setup, "setup %s unit columns", tn);
    for (uint64_t j = 0; setup && j < cols; j++) x[j * cols + j] = 1.0f;
    clvk_buf *bw = setup ? t_vk_buf(g_dev, m.data, rows * m.row_bytes) : NULL,
             *bx = setup ? t_vk_buf(g_dev, x, cols * cols * 4) : NULL,
             *by = setup ? t_vk_buf(g_dev, NULL, cols * rows * 4) : NULL;
    int bad = 0;
    uint64_t br = 0, bj = 0;
    clara_status st = CLARA_ERR_IO;
    if (bw && bx && by &&
        (st = clvk_matmul(g_dev, bw, t, rows, cols, bx, (uint32_t)cols, by, false, 1)) ==
            CLARA_OK &&
        download(by, y, cols * rows * 4) == 0)
        for (uint64_t j = 0; j < cols; j++)
            for (uint64_t r = 0; r < rows; r++)
                if (!(y[j * rows + r] == m.deq[r * cols + j])) bad++, br = r, bj = j;
    T_CHECK_MSG(st == CLARA_OK, "%s unit columns: %s", tn, clara_last_error());
    T_CHECK_MSG(bad == 0,
                "%s %llux%llu: %d weights differ from the CPU's, e.g. [%llu][%llu] %.9g vs %.9g",
                tn, (unsigned long long)rows, (unsigned long long)cols, bad, (unsigned long long)br,
                (unsigned long long)bj, bad ? (double)y[bj * rows + br] : 0.0,
                bad ? (double)m.deq[br * cols + bj] : 0.0);
    clvk_buf_free(g_dev, bw), clvk_buf_free(g_dev, bx), clvk_buf_free(g_dev, by);
    free(x), free(y);
    if (setup) wmat_free(&m);
}

static void test_dequant_exact(void) {
    for (size_t ti = 0; ti < N_TYPES; ti++) check_unit_columns(all_types[ti], 7, 512);
}

/* Uploads and downloads through a staging buffer and a queue copy (a discrete GPU's path). */
static void test_staging(void) {
    clvk_force_staging(g_dev, true);
    check_matmul(CLARA_TYPE_Q4_0, 7, 96, 2);
    check_matmul(CLARA_TYPE_F32, 9, 33, 3);
    clvk_buf *b = NULL;
    uint8_t in[37], out[37] = {0};
    for (int i = 0; i < 37; i++) in[i] = (uint8_t)(i * 7 + 1);
    T_CHECK(clvk_buf_create(g_dev, 37, &b) == CLARA_OK);
    T_CHECK(clvk_upload(g_dev, b, 0, in, 37) == CLARA_OK);
    T_CHECK(clvk_download(g_dev, b, 5, out, 32) == CLARA_OK && memcmp(out, in + 5, 32) == 0);
    clvk_buf_free(g_dev, b);
    clvk_force_staging(g_dev, false);
}

/* forward.c's RMSNorm (static there): squares summed in double, the scale in f32. */
static void rmsnorm_ref(float *out, const float *x, const float *w, size_t n, float eps) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    float inv = 1.0f / sqrtf((float)(s / (double)n) + eps);
    for (size_t i = 0; i < n; i++) out[i] = w[i] * (x[i] * inv);
}

/* Bound 5e-6 relative: the shader's f32 sum of squares (positive terms) is off by at most
 * (n/64 + 6) roundings, 70 * 2^-24 = 4.2e-6 relative for n <= 4096, halved by the square root;
 * Vulkan's 1/sqrt costs up to 2 + 2.5 + 2.5 ulp (inversesqrt, the division it is defined by, our
 * division) and the two products 1 ulp: about 2.1e-6 + 0.7e-6 in all. */
static void test_rmsnorm(void) {
    static const uint32_t widths[] = {1, 7, 64, 100, 4096};
    static const uint32_t nrows[] = {1, 3, 7};
    for (size_t wi = 0; wi < 5; wi++)
        for (size_t ri = 0; ri < 3; ri++) {
            uint32_t n = widths[wi], rows = nrows[ri];
            float *x = rand_vec((size_t)rows * n, 3.0), *w = rand_vec(n, 2.0),
                  *o = malloc((size_t)rows * n * 4), *ref = malloc((size_t)rows * n * 4);
            for (uint32_t r = 0; r < rows; r++)
                rmsnorm_ref(ref + (size_t)r * n, x + (size_t)r * n, w, n, 1e-6f);
            clvk_buf *bx = t_vk_buf(g_dev, x, (size_t)rows * n * 4),
                     *bw = t_vk_buf(g_dev, w, n * 4),
                     *bo = t_vk_buf(g_dev, NULL, (size_t)rows * n * 4);
            int bad = 0;
            clara_status st = CLARA_ERR_IO;
            if (bx && bw && bo &&
                (st = clvk_rmsnorm(g_dev, bx, bw, bo, rows, n, 1e-6f)) == CLARA_OK &&
                download(bo, o, (size_t)rows * n * 4) == 0)
                for (size_t i = 0; i < (size_t)rows * n; i++)
                    if (!(fabs(o[i] - ref[i]) <= 5e-6 * fabs(ref[i]) + 1e-37)) bad++;
            T_CHECK_MSG(st == CLARA_OK, "rmsnorm: %s", clara_last_error());
            T_CHECK_MSG(bad == 0, "rmsnorm %u rows of %u: %d off", rows, n, bad);
            clvk_buf_free(g_dev, bx), clvk_buf_free(g_dev, bw), clvk_buf_free(g_dev, bo);
            free(x), free(w), free(o), free(ref);
        }
}

/* Bound (8 + 2|g|) ulp relative: Vulkan allows exp 3 + 2|x| ulp, the add 0.5, the division 2.5,
 * the product 0.5; the CPU reference (libm expf, f32 arithmetic) is within 1.5 more. */
static void test_swiglu(void) {
    static const uint64_t sizes[] = {1, 63, 64, 65, 1000, 300000}; /* 300000: > one grid pass */
    for (size_t si = 0; si < 6; si++) {
        uint64_t n = sizes[si];
        float *g = rand_vec(n, 8.0), *u = rand_vec(n, 2.0), *o = malloc(n * 4);
        clvk_buf *bg = t_vk_buf(g_dev, g, n * 4), *bu = t_vk_buf(g_dev, u, n * 4);
        int bad = 0;
        size_t worst = 0;
        clara_status st = CLARA_ERR_IO;
        if (bg && bu && (st = clvk_swiglu(g_dev, bg, bu, n)) == CLARA_OK &&
            download(bg, o, n * 4) == 0)
            for (size_t i = 0; i < n; i++) {
                float ref = g[i] / (1.0f + expf(-g[i])) * u[i];
                double ulps = 8 + 2 * fabs(g[i]);
                if (!(fabs(o[i] - ref) <= ulps * ldexp(fabs(ref), -23) + 1e-37)) bad++, worst = i;
            }
        T_CHECK_MSG(st == CLARA_OK, "swiglu: %s", clara_last_error());
        T_CHECK_MSG(bad == 0, "swiglu n=%llu: %d off, e.g. g=%g u=%g: %.9g", (unsigned long long)n,
                    bad, (double)g[worst], (double)u[worst], (double)o[worst]);
        clvk_buf_free(g_dev, bg), clvk_buf_free(g_dev, bu);
        free(g), free(u), free(o);
    }
}

/* RoPE: bit-identical to forward.c's rope() (static there; its arithmetic repeated here), with
 * the (cos, sin) table formed as forward.c forms the angles. */
static void test_rope(void) {
    static const uint32_t dims[][2] = {{1, 2}, {3, 64}, {2, 128}}; /* heads, head_dim */
    const uint32_t rows = 5;
    for (size_t di = 0; di < 3; di++) {
        uint32_t nh = dims[di][0], hd = dims[di][1];
        size_t nv = (size_t)rows * nh * hd;
        float *v = rand_vec(nv, 4.0), *ref = malloc(nv * 4), *o = malloc(nv * 4),
              *cs = malloc((size_t)rows * hd * 4);
        memcpy(ref, v, nv * 4);
        for (uint32_t r = 0; r < rows; r++) {
            int32_t pos = (int32_t)(r * 977 + 3);
            for (uint32_t i = 0; i < hd / 2; i++) {
                float inv_freq = 1.0f / powf(10000.0f, (float)(2 * i) / (float)hd);
                float angle = (float)pos * inv_freq;
                float c = (float)cos((double)angle), s = (float)sin((double)angle);
                cs[((size_t)r * hd / 2 + i) * 2] = c, cs[((size_t)r * hd / 2 + i) * 2 + 1] = s;
                for (uint32_t h = 0; h < nh; h++) {
                    float *p = ref + ((size_t)r * nh + h) * hd + 2 * i;
                    float a = p[0], b = p[1];
                    p[0] = a * c - b * s;
                    p[1] = b * c + a * s;
                }
            }
        }
        clvk_buf *bv = t_vk_buf(g_dev, v, nv * 4), *bc = t_vk_buf(g_dev, cs, (size_t)rows * hd * 4);
        clara_status st = CLARA_ERR_IO;
        int same = 0;
        if (bv && bc && (st = clvk_rope(g_dev, bv, bc, rows, nh, hd)) == CLARA_OK &&
            download(bv, o, nv * 4) == 0)
            same = memcmp(o, ref, nv * 4) == 0;
        T_CHECK_MSG(st == CLARA_OK, "rope: %s", clara_last_error());
        T_CHECK_MSG(same, "rope %u heads of %u: not bit-identical to the CPU", nh, hd);
        clvk_buf_free(g_dev, bv), clvk_buf_free(g_dev, bc);
        free(v), free(ref), free(o), free(cs);
    }
}

/* Device enumeration and the choice rules. */
static void test_choice(void) {
    clvk_device_desc d[CLVK_MAX_DEVICES];
    uint32_t n = 0;
    T_CHECK(clvk_enumerate(d, CLVK_MAX_DEVICES, &n) == CLARA_OK);
    T_CHECK_MSG(n >= 1, "no Vulkan device (CI installs lavapipe: mesa-vulkan-drivers)");
    bool gpu = false;
    for (uint32_t i = 0; i < n; i++) {
        printf("vulkan device %u: %s (%s, %.1f GiB)\n", d[i].index, d[i].name, d[i].type,
               (double)d[i].mem_bytes / (1u << 30));
        T_CHECK(d[i].index == i && d[i].name[0] && d[i].mem_bytes > 0);
        if (strcmp(d[i].type, "cpu") != 0 && d[i].has_compute) gpu = true;
    }
    clvk_dev *x = NULL;
    clara_status st = clvk_open(CLVK_PICK_GPU, &x);
    if (gpu) { /* auto takes a GPU, never the CPU device */
        T_CHECK(st == CLARA_OK && strcmp(clvk_desc(x)->type, "cpu") != 0);
    } else { /* only CPU devices (lavapipe): auto finds none, and says so */
        T_CHECK(st == CLARA_ERR_NOT_FOUND && err_has("no Vulkan GPU found") && x == NULL);
    }
    clvk_close(x);
    x = NULL;
    setenv("CLARA_VK_DEVICE", "99", 1);
    T_CHECK(clvk_open(CLVK_PICK_ANY, &x) == CLARA_ERR_INVALID_ARG && err_has("CLARA_VK_DEVICE=99"));
    setenv("CLARA_VK_DEVICE", "0", 1);
    T_CHECK(clvk_open(CLVK_PICK_GPU, &x) == CLARA_OK && clvk_desc(x)->index == 0);
    unsetenv("CLARA_VK_DEVICE");
    clvk_close(x);
}

/* Bad requests fail with a clear error; a lost device fails every later call. */
static void test_errors(void) {
    clvk_buf *b = NULL, *x = NULL, *y = NULL;
    float v[8] = {0};
    T_CHECK(clvk_buf_create(g_dev, 0, &b) == CLARA_ERR_INVALID_ARG && b == NULL);
    T_CHECK(clvk_buf_create(g_dev, 32, &b) == CLARA_OK);
    T_CHECK(clvk_upload(g_dev, b, 8, v, 32) == CLARA_ERR_INVALID_ARG && err_has("outside"));
    T_CHECK(clvk_download(g_dev, b, 33, v, 0) == CLARA_ERR_INVALID_ARG);
    T_CHECK(clvk_buf_create(g_dev, 32, &x) == CLARA_OK &&
            clvk_buf_create(g_dev, 32, &y) == CLARA_OK);
    T_CHECK(clvk_matmul(g_dev, b, CLARA_TYPE_Q2_K, 1, 256, x, 1, y, false, 1) ==
                CLARA_ERR_UNSUPPORTED &&
            err_has("no matmul shader for q2_k"));
    T_CHECK(clvk_matmul(g_dev, b, CLARA_TYPE_Q6_K, 1, 128, x, 1, y, false, 1) ==
            CLARA_ERR_INVALID_ARG);
    T_CHECK(clvk_matmul(g_dev, b, CLARA_TYPE_Q8_0, 1, 33, x, 1, y, false, 1) ==
            CLARA_ERR_INVALID_ARG);
    T_CHECK(clvk_matmul(g_dev, b, CLARA_TYPE_F32, 4, 8, x, 1, y, false, 1) ==
                CLARA_ERR_INVALID_ARG &&
            err_has("needs 128 bytes"));
    /* a lost device (what VK_ERROR_DEVICE_LOST from the driver records) */
    clvk_dev *d = NULL;
    clvk_buf *c = NULL;
    T_CHECK(clvk_open(CLVK_PICK_ANY, &d) == CLARA_OK);
    if (d) {
        T_CHECK(clvk_buf_create(d, 16, &c) == CLARA_OK);
        clvk_mark_lost(d);
        T_CHECK(clvk_upload(d, c, 0, v, 16) == CLARA_ERR_IO && err_has("device was lost"));
        T_CHECK(clvk_swiglu(d, c, c, 4) == CLARA_ERR_IO && err_has("device was lost"));
        clvk_buf_free(d, c);
        clvk_close(d);
    }
    clvk_buf_free(g_dev, b), clvk_buf_free(g_dev, x), clvk_buf_free(g_dev, y);
}

/* ---- the loader: opened at run time, never linked ------------------------------------------ */

static int find_vulkan(struct dl_phdr_info *info, size_t size, void *found) {
    (void)size;
    if (info->dlpi_name && strstr(info->dlpi_name, "libvulkan.so")) *(bool *)found = true;
    return 0;
}

/* Whether a libvulkan is among the objects loaded in this process. */
static bool vulkan_loaded(void) {
    bool found = false;
    dl_iterate_phdr(find_vulkan, &found);
    return found;
}

/* Runs `cmd` (through the shell) into out (at most cap - 1 bytes); its exit status, -1 if it did
 * not run or did not exit. */
static int run_capture(const char *cmd, char *out, size_t cap) {
    FILE *f = popen(cmd, "r");
    size_t n = 0;
    if (!f) return -1;
    for (size_t r; n + 1 < cap && (r = fread(out + n, 1, cap - 1 - n, f)) > 0;) n += r;
    out[n] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char g_exe[4096]; /* this binary; its directory is BUILD/tests */

/* readelf -d of path: its DT_NEEDED entries include libc and no libvulkan. */
static void check_not_needed(const char *path) {
    char cmd[4200], out[16384];
    snprintf(cmd, sizeof cmd, "readelf -d '%s' 2>&1", path);
    int rc = run_capture(cmd, out, sizeof out);
    T_CHECK_MSG(rc == 0 && strstr(out, "(NEEDED)") && strstr(out, "libc.so"),
                "readelf -d %s: exit %d: %.200s", path, rc, out);
    T_CHECK_MSG(!strstr(out, "libvulkan"), "%s is linked to libvulkan:\n%s", path, out);
}

static void test_loader_not_linked(void) {
    T_CHECK_MSG(!vulkan_loaded(), "libvulkan was loaded before any Vulkan call (linked?)");
    check_not_needed(g_exe);
    /* the binaries beside tests/: built by `make all`, which `make test` runs first */
    char path[4200], dir[4096];
    snprintf(dir, sizeof dir, "%s", g_exe);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    static const char *bins[] = {"clara", "clara-server"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, bins[i]);
        if (access(path, X_OK) == 0)
            check_not_needed(path);
        else
            printf("note: %s is not built (make all), its DT_NEEDED not checked\n", path);
    }
}

/* This binary again, as a child, with CLARA_VK_LOADER=loader and `--loader-child expect`; its
 * exit status and output (stdout and stderr together). */
static int run_child(const char *loader, const char *expect, char *out, size_t cap) {
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "CLARA_VK_LOADER='%s' '%s' --loader-child %s 2>&1", loader, g_exe,
             expect);
    return run_capture(cmd, out, cap);
}

static void test_loader_missing(void) {
    char out[8192];
    int rc = run_child("/nonexistent/libvulkan.so.1", "missing", out, sizeof out);
    T_CHECK_MSG(rc == 0, "child without a loader: exit %d:\n%s", rc, out);
    T_CHECK_MSG(strstr(out, "the Vulkan loader (libvulkan.so.1) was not found") &&
                    strstr(out, "CLARA_VK_LOADER=/nonexistent/libvulkan.so.1") &&
                    strstr(out, "install the package libvulkan1") && strstr(out, "cpu ok"),
                "child without a loader said:\n%s", out);
    rc = run_child("libm.so.6", "notloader", out, sizeof out);
    T_CHECK_MSG(rc == 0 && strstr(out, "libm.so.6 is not a Vulkan loader") && strstr(out, "cpu ok"),
                "child with libm as the loader: exit %d:\n%s", rc, out);
    rc = run_child("libvulkan.so.1", "ok", out, sizeof out);
    T_CHECK_MSG(rc == 0 && strstr(out, "devices: ") && !strstr(out, "devices: 0"),
                "child with CLARA_VK_LOADER=libvulkan.so.1: exit %d:\n%s", rc, out);
}

/* The child's side: every Vulkan entry point fails as `expect` says (or works, "ok"), and the
 * CPU still works (a q4_k row quantized, dequantized and dotted). Exit 0 when all held. */
static int loader_child(const char *expect) {
    clvk_device_desc d[CLVK_MAX_DEVICES];
    uint32_t n = 99;
    clvk_dev *dev = NULL;
    bool ok_expected = strcmp(expect, "ok") == 0;
    clara_status want = ok_expected ? CLARA_OK : CLARA_ERR_NOT_FOUND;
    clara_status e = clvk_enumerate(d, CLVK_MAX_DEVICES, &n);
    printf("enumerate: %d %s; devices: %u\n", (int)e, e ? clara_last_error() : "", n);
    clara_status o = clvk_open(CLVK_PICK_ANY, &dev);
    printf("open: %d %s\n", (int)o, o ? clara_last_error() : "");
    clvk_close(dev);
    dev = NULL;
    clara_status g = clvk_open(CLVK_PICK_GPU, &dev);
    printf("open a GPU: %d %s\n", (int)g, g ? clara_last_error() : "");
    clvk_close(dev);
    bool vk_ok = e == want && o == want &&
                 (ok_expected || (g == want && n == 0 && dev == NULL && !vulkan_loaded()));
    float x[256], y[256], dot = NAN;
    uint8_t q[144];
    for (int i = 0; i < 256; i++) x[i] = (float)sin(i * 0.37);
    bool cpu = clara_quantize_row(CLARA_TYPE_Q4_K, x, 256, q, "x") == CLARA_OK &&
               clara_dequantize_row(CLARA_TYPE_Q4_K, q, 256, y) == CLARA_OK &&
               clara_vec_dot_ref(CLARA_TYPE_Q4_K, q, x, 256, &dot) == CLARA_OK && dot > 100;
    printf("%s\n", cpu ? "cpu ok" : "cpu FAILED");
    return vk_ok && cpu ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--loader-child") == 0) return loader_child(argv[2]);
    ssize_t len = readlink("/proc/self/exe", g_exe, sizeof g_exe - 1);
    g_exe[len > 0 ? len : 0] = '\0';
    T_RUN(test_loader_not_linked);
    T_RUN(test_loader_missing);
    T_RUN(test_choice);
    T_CHECK_MSG(vulkan_loaded(), "libvulkan not loaded after opening a device");
    if (!(g_dev = t_vk_open())) return 1;
    T_RUN(test_matmul);
    T_RUN(test_dequant_exact);
    T_RUN(test_staging);
    T_RUN(test_rmsnorm);
    T_RUN(test_swiglu);
    T_RUN(test_rope);
    T_RUN(test_errors);
    clvk_close(g_dev);
    return t_report("test_vulkan");
}
