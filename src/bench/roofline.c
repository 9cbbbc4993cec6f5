/* roofline.c - runs the loops of roofline_simd.c over the thread pool and turns times into
 * GB/s, GFLOP/s and GOP/s. Work is split into more tasks than threads so that a thread that
 * starts late (the pool wakes its workers) or runs slow does not leave the others idle. */
#include "bench/roofline.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/status.h"
#include "base/threadpool.h"
#include "bench/roofline_simd.h"
#include "cpu/dispatch.h"

#define REPS            5
#define TASKS_PER_THR   4
#define CALIBRATE_SEC   0.004 /* each compute task runs about this long */
#define MIN_BUFFER      ((size_t)256 << 20)
#define BW_CHUNK_FLOATS ((size_t)1 << 19) /* 2 MiB per task */

const char *const bench_f32_names[BENCH_F32_N] = {"avx512", "avx2"};
const char *const bench_int8_names[BENCH_INT8_N] = {"avx512_vnni", "avx_vnni", "avx2_maddubs"};

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, size_t n) {
    if (n == 0) return 0;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* One compute loop: which one, its iterations per task, and the ops one iteration does. */
typedef struct {
    int kind; /* 0..BENCH_F32_N-1 f32, then BENCH_F32_N + int8 variant */
    uint64_t iters;
    double *sink; /* one per task, so the results are used */
} compute_job;

static double ops_per_iter(int kind) {
    switch (kind) {
    case BENCH_F32_AVX512:
        return RF_FMA512_CHAINS * 16.0 * 2;
    case BENCH_F32_AVX2:
        return RF_FMA256_CHAINS * 8.0 * 2;
    case BENCH_F32_N + BENCH_INT8_AVX512_VNNI:
        return RF_VNNI512_CHAINS * 64.0 * 2;
    case BENCH_F32_N + BENCH_INT8_AVX_VNNI:
        return RF_VNNI256_CHAINS * 32.0 * 2;
    default:
        return RF_MADDUBS_CHAINS * 32.0 * 2;
    }
}

static bool kind_supported(int kind) {
    const clara_cpu_features *f = clara_cpu_get_features();
    switch (kind) {
    case BENCH_F32_AVX512:
        return f->avx512f && f->fma;
    case BENCH_F32_AVX2:
        return f->avx2 && f->fma;
    case BENCH_F32_N + BENCH_INT8_AVX512_VNNI:
        return f->avx512f && f->avx512vnni;
    case BENCH_F32_N + BENCH_INT8_AVX_VNNI:
        return f->avx2 && f->avx_vnni;
    default:
        return f->avx2;
    }
}

static double run_kind(int kind, uint64_t iters) {
    switch (kind) {
    case BENCH_F32_AVX512:
        return rf_fma_avx512(iters);
    case BENCH_F32_AVX2:
        return rf_fma_avx2(iters);
    case BENCH_F32_N + BENCH_INT8_AVX512_VNNI:
        return rf_dot_avx512vnni(iters);
    case BENCH_F32_N + BENCH_INT8_AVX_VNNI:
        return rf_dot_avxvnni(iters);
    default:
        return rf_dot_avx2(iters);
    }
}

static void compute_task(void *arg, size_t task, int thread) {
    (void)thread;
    compute_job *j = arg;
    j->sink[task] = run_kind(j->kind, j->iters);
}

/* Iterations for one task of about CALIBRATE_SEC on one thread. */
static uint64_t calibrate(int kind) {
    uint64_t iters = 1024;
    for (;;) {
        double t0 = bench_now();
        volatile double sink = run_kind(kind, iters);
        (void)sink;
        double dt = bench_now() - t0;
        if (dt >= CALIBRATE_SEC || iters >= ((uint64_t)1 << 40)) return iters;
        iters = dt > CALIBRATE_SEC / 64 ? (uint64_t)((double)iters * CALIBRATE_SEC / dt) + 1
                                        : iters * 16;
    }
}

/* Median ops/s of `kind` over the pool's threads. */
static double measure_compute(clara_pool *pool, int kind, uint64_t iters) {
    size_t tasks = (size_t)clara_pool_threads(pool) * TASKS_PER_THR;
    compute_job job = {kind, iters, calloc(tasks, sizeof(double))};
    double rate[REPS];
    if (!job.sink) return 0;
    clara_pool_run(pool, tasks, compute_task, &job); /* warm-up: wakes workers, clocks up */
    for (int r = 0; r < REPS; r++) {
        double t0 = bench_now();
        clara_pool_run(pool, tasks, compute_task, &job);
        rate[r] = ops_per_iter(kind) * (double)iters * (double)tasks / (bench_now() - t0);
    }
    free(job.sink);
    return bench_median(rate, REPS);
}

typedef struct {
    const float *buf;
    float (*sum)(const float *, size_t);
    float *partial; /* one per task, so the sums are used */
} bw_job;

static void bw_task(void *arg, size_t task, int thread) {
    (void)thread;
    bw_job *j = arg;
    j->partial[task] = j->sum(j->buf + task * BW_CHUNK_FLOATS, BW_CHUNK_FLOATS);
}

static double measure_bandwidth(clara_pool *pool, const float *buf, size_t n_floats) {
    const clara_cpu_features *f = clara_cpu_get_features();
    size_t tasks = n_floats / BW_CHUNK_FLOATS;
    bw_job job = {buf,
                  f->avx512f ? rf_sum_avx512
                  : f->avx2  ? rf_sum_avx2
                             : rf_sum_scalar,
                  calloc(tasks, sizeof(float))};
    if (!job.partial) return 0;
    double rate[REPS];
    clara_pool_run(pool, tasks, bw_task, &job);
    for (int r = 0; r < REPS; r++) {
        double t0 = bench_now();
        clara_pool_run(pool, tasks, bw_task, &job);
        rate[r] = (double)(tasks * BW_CHUNK_FLOATS * sizeof(float)) / (bench_now() - t0) / 1e9;
    }
    free(job.partial);
    return bench_median(rate, REPS);
}

static size_t buffer_bytes(void) {
    size_t n = MIN_BUFFER;
#ifdef _SC_LEVEL3_CACHE_SIZE
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (l3 > 0 && (size_t)l3 * 4 > n) n = (size_t)l3 * 4;
#endif
    size_t chunk = BW_CHUNK_FLOATS * sizeof(float);
    return (n + chunk - 1) / chunk * chunk;
}

static void measure_one(clara_pool *pool, const float *buf, size_t n_floats, const uint64_t *iters,
                        bench_roofline *o) {
    o->mem_read_gbs = measure_bandwidth(pool, buf, n_floats);
    for (int k = 0; k < BENCH_F32_N + BENCH_INT8_N; k++) {
        double v = iters[k] ? measure_compute(pool, k, iters[k]) / 1e9 : 0;
        if (k < BENCH_F32_N) {
            o->f32_gflops[k] = v;
            if (v > o->f32_peak) o->f32_peak = v;
        } else {
            o->int8_gops[k - BENCH_F32_N] = v;
            if (v > o->int8_peak) o->int8_peak = v;
        }
    }
}

clara_status bench_roofline_measure(const int *threads, size_t n, bench_roofline *out) {
    size_t bytes = buffer_bytes(), n_floats = bytes / sizeof(float);
    float *buf = aligned_alloc(64, bytes);
    if (!buf)
        return clara_fail(CLARA_ERR_NOMEM, "cannot allocate the %zu MiB bandwidth buffer",
                          bytes >> 20);
    /* real pages with distinct non-zero data: untouched pages would all map the one zero page,
     * and identical pages can be merged by the host (KSM), either way the reads would come from
     * a cache (a periodic fill measured 78 GB/s here against 41 GB/s) */
    for (size_t i = 0; i < n_floats; i++)
        buf[i] = (float)((uint32_t)(i * 2654435761u) >> 8) * 1e-6f;
    uint64_t iters[BENCH_F32_N + BENCH_INT8_N];
    for (int k = 0; k < BENCH_F32_N + BENCH_INT8_N; k++)
        iters[k] = kind_supported(k) ? calibrate(k) : 0;
    clara_status s = CLARA_OK;
    for (size_t i = 0; i < n && s == CLARA_OK; i++) {
        clara_pool *pool = NULL;
        s = clara_pool_create(threads[i], &pool);
        if (s != CLARA_OK) break;
        memset(&out[i], 0, sizeof out[i]);
        out[i].threads = threads[i];
        measure_one(pool, buf, n_floats, iters, &out[i]);
        clara_pool_free(pool);
    }
    free(buf);
    return s;
}
