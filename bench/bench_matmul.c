/* bench_matmul.c - throughput of clara_matmul per weight type, instruction-set level and thread
 * count: GEMM (4096 x 4096 weights x 256 activation rows, GFLOP/s = 2*rows*cols*n / s) and GEMV
 * (matrices of 14336 x 4096 weights taken in turn, at least 4 and together at least twice the
 * last-level cache as a decoder's layers are (some server CPUs have 480 MiB of L3), x 1 row: GB/s
 * of weight bytes read).
 *
 *   bench_matmul [SECONDS_PER_CASE] [TYPES...]     (types: f32 f16 bf16 q8_0 q4_0 q4_k ...)
 * Environment: BENCH_CASES=gemm or gemv runs only that case (default both); BENCH_GEMV_ROWS=N
 * gives the GEMV N activation rows (default 1; at most 256: decoding N streams at once);
 * BENCH_REPACK=1 gives q4_0 / q8_0 matrices the repacked copy the engine makes (cpu/repack.h);
 * BENCH_GEMV_SHAPE=ROWSxCOLS another GEMV shape (e.g. 4096x14336: a 7B down projection).
 * Each case runs at least once and repeats until SECONDS_PER_CASE (default 1) have passed; the
 * best repetition is reported. The machine limits to compare with are in
 * the project's performance anchors (re-measure them in the same run before claiming ratios). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpu/dispatch.h"
#include "cpu/matmul.h"
#include "cpu/kctx.h"
#include "cpu/repack.h"
#include "dtype.h"
#include "quant.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t g_rng = 88172645463325252ull;
static float frand(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 4503599627370496.0 - 1.0);
}

/* A random rows x cols matrix of type t (quantized row by row from random floats). */
static int make_mat(cpu_mat *W, clara_type t, uint64_t rows, uint64_t cols, uint64_t *bytes) {
    uint64_t row_bytes;
    if (clara_type_row_bytes(t, cols, &row_bytes) != CLARA_OK) return -1;
    uint8_t *data = malloc(rows * row_bytes);
    float *src = malloc(cols * sizeof(float));
    if (!data || !src) return -1;
    for (uint64_t r = 0; r < rows; r++) {
        for (uint64_t k = 0; k < cols; k++) src[k] = frand();
        if (clara_quantize_row(t, src, cols, data + r * row_bytes, "w") != CLARA_OK) return -1;
    }
    free(src);
    *W = (cpu_mat){data, t, rows, cols, NULL};
    *bytes = rows * row_bytes;
    return 0;
}

/* Best seconds per call over repetitions filling `secs`, taking the n_w matrices in turn. */
static double time_case(cpu_kctx *ctx, const cpu_mat *W, int n_w, const float *x, uint32_t n,
                        float *y, double secs) {
    double best = 1e30, start = now();
    int i = 0;
    do {
        double t0 = now();
        clara_matmul(ctx, &W[i], x, n, y, false, 1.0f);
        double dt = now() - t0;
        if (dt < best) best = dt;
        i = (i + 1) % n_w;
    } while (now() - start < secs || i != 0);
    return best;
}

#define GEMV_MIN_MATS 4
#define GEMV_MAX_MATS 64

/* How many GEMV matrices of `bytes` make at least twice the last-level cache (sysconf's L3 size;
 * 32 MiB where it does not say), at least GEMV_MIN_MATS. */
static int gemv_mats(uint64_t bytes) {
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    uint64_t want = 2 * (uint64_t)(l3 > 0 ? l3 : 32l << 20);
    uint64_t n = (want + bytes - 1) / bytes;
    return n < GEMV_MIN_MATS ? GEMV_MIN_MATS : n > GEMV_MAX_MATS ? GEMV_MAX_MATS : (int)n;
}

/* With BENCH_REPACK=1, each q4_0 / q8_0 matrix's repacked copy (cpu/repack.h), as the engine
 * makes it for the CPU's layers. */
static int repack_mats(cpu_mat *W, int n, clara_pool *pool) {
    const char *e = getenv("BENCH_REPACK");
    if (!e || strcmp(e, "1") != 0 || !cpu_lanes_bytes(&W[0])) return 0;
    size_t bytes = cpu_lanes_bytes(&W[0]);
    for (int m = 0; m < n; m++) {
        uint8_t *d = aligned_alloc(64, bytes);
        if (!d) return -1;
        cpu_lanes_pack(&W[m], d, pool);
        W[m].lanes = d;
    }
    return 0;
}

/* W[1..n) as copies of W[0] (the same bytes at other addresses: only the cache footprint counts).
 */
static int copy_mats(cpu_mat *W, int n, uint64_t bytes) {
    for (int m = 1; m < n; m++) {
        uint8_t *d = malloc(bytes);
        if (!d) return -1;
        memcpy(d, W[0].data, bytes);
        W[m] = W[0];
        W[m].data = d;
    }
    return 0;
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 1.0;
    const char *def[] = {"f32", "f16", "bf16"};
    int n_types = argc > 2 ? argc - 2 : 3;
    const char **names = argc > 2 ? (const char **)argv + 2 : def;
    const uint64_t K = 4096, M_GEMM = 4096;
    uint64_t M_GEMV = 14336, K_GEMV = 4096;
    const uint32_t N_GEMM = 256;
    const char *shape = getenv("BENCH_GEMV_SHAPE");
    unsigned long long sr = 0, sc = 0;
    if (shape && (sscanf(shape, "%llux%llu", &sr, &sc) != 2 || sr < 16 || sc < 256 || sr > 65536 ||
                  sc > 65536 || sc % 256)) {
        fprintf(stderr, "bench_matmul: BENCH_GEMV_SHAPE must be ROWSxCOLS (COLS a multiple of "
                        "256, at most 65536)\n");
        return 2;
    }
    if (shape) M_GEMV = sr, K_GEMV = sc;
    const uint64_t K_MAX = K_GEMV > K ? K_GEMV : K;
    const char *cases = getenv("BENCH_CASES");
    const char *gr = getenv("BENCH_GEMV_ROWS");
    uint32_t gemv_rows = gr ? (uint32_t)atoi(gr) : 1;
    if (gemv_rows < 1 || gemv_rows > N_GEMM) {
        fprintf(stderr, "bench_matmul: BENCH_GEMV_ROWS must be 1 to %u\n", N_GEMM);
        return 2;
    }
    bool gemm = !cases || strcmp(cases, "gemv") != 0, gemv = !cases || strcmp(cases, "gemm") != 0;
    cpu_kctx ctx[2];
    for (int i = 0; i < 2; i++) {
        clara_pool *pool = NULL;
        if (clara_pool_create(i + 1, &pool) != CLARA_OK ||
            cpu_kctx_init(&ctx[i], pool, K_MAX) != CLARA_OK)
            return 1;
    }
    float *x = malloc(N_GEMM * K_MAX * sizeof(float));
    float *y = malloc(N_GEMM * (M_GEMV > M_GEMM ? M_GEMV : M_GEMM) * sizeof(float));
    for (size_t i = 0; i < N_GEMM * K_MAX; i++) x[i] = frand();
    /* ANCHORS.md was measured on an Emerald Rapids VM; other CPUs (e.g. AMD Zen 5) differ. */
    printf("machine best level: %s; ANCHORS.md limits (Emerald Rapids VM; re-measure on other "
           "CPUs): f32 FMA 179/358 GFLOP/s (1/2 thr, AVX-512), read 15.6/30.9 GB/s\n",
           clara_isa_name(clara_isa_best()));
    printf("%-6s %-7s %3s %14s %14s (GEMV: %u activation rows)\n", "type", "level", "thr",
           "GEMM GFLOP/s", "GEMV GB/s", gemv_rows);
    for (int ti = 0; ti < n_types; ti++) {
        int t = clara_type_from_name(names[ti]);
        cpu_mat Wg, Wv[GEMV_MAX_MATS];
        uint64_t bg, bv;
        bool ok = t >= 0 && make_mat(&Wg, (clara_type)t, M_GEMM, K, &bg) == 0;
        ok = ok && make_mat(&Wv[0], (clara_type)t, M_GEMV, K_GEMV, &bv) == 0;
        int n_mats = ok ? gemv_mats(bv) : 0;
        ok = ok && copy_mats(Wv, n_mats, bv) == 0;
        ok = ok && repack_mats(&Wg, 1, ctx[1].pool) == 0 &&
             repack_mats(Wv, n_mats, ctx[1].pool) == 0;
        if (ok && gemv)
            printf("%s GEMV set: %d matrices, %.0f MiB (L3: %ld MiB)\n", names[ti], n_mats,
                   (double)n_mats * bv / 1048576.0, sysconf(_SC_LEVEL3_CACHE_SIZE) >> 20);
        if (!ok) {
            fprintf(stderr, "bench_matmul: cannot make %s weights\n", names[ti]);
            return 1;
        }
        for (int lv = CLARA_ISA_COUNT - 1; lv >= 0; lv--) {
            if (!clara_isa_supported((clara_isa)lv)) continue;
            clara_isa_force((clara_isa)lv);
            for (int th = 1; th <= 2; th++) {
                double tg = gemm ? time_case(&ctx[th - 1], &Wg, 1, x, N_GEMM, y, secs) : 0;
                double tv = gemv ? time_case(&ctx[th - 1], Wv, n_mats, x, gemv_rows, y, secs) : 0;
                printf("%-6s %-7s %3d %14.1f %14.2f\n", names[ti], clara_isa_name((clara_isa)lv),
                       th, gemm ? 2.0 * M_GEMM * K * N_GEMM / tg * 1e-9 : 0.0,
                       gemv ? (double)bv / tv * 1e-9 : 0.0);
                fflush(stdout);
            }
        }
        free((void *)Wg.data), free((void *)Wg.lanes);
        for (int m = 0; m < n_mats; m++) free((void *)Wv[m].data), free((void *)Wv[m].lanes);
    }
    for (int i = 0; i < 2; i++) {
        clara_pool_free(ctx[i].pool);
        cpu_kctx_free(&ctx[i]);
    }
    free(x);
    free(y);
    return 0;
}
