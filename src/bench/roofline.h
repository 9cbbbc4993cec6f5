/* roofline.h - the machine limits `clara bench` compares its figures with, measured at start:
 * streaming memory read bandwidth, peak f32 FMA throughput and peak int8 dot throughput, for
 * each thread count, on the project's thread pool. docs/PERFORMANCE.md describes the method. */
#ifndef CLARA_BENCH_ROOFLINE_H
#define CLARA_BENCH_ROOFLINE_H

#include <stddef.h>

#include "clara.h"

enum { BENCH_F32_AVX512, BENCH_F32_AVX2, BENCH_F32_N };
enum { BENCH_INT8_AVX512_VNNI, BENCH_INT8_AVX_VNNI, BENCH_INT8_AVX2, BENCH_INT8_N };

/* "avx512", "avx2" / "avx512_vnni", "avx_vnni", "avx2_maddubs" */
extern const char *const bench_f32_names[BENCH_F32_N];
extern const char *const bench_int8_names[BENCH_INT8_N];

typedef struct {
    int threads;
    double mem_read_gbs;            /* GB/s (1e9 bytes) */
    double f32_gflops[BENCH_F32_N]; /* GFLOP/s per variant; 0 where the CPU lacks it */
    double int8_gops[BENCH_INT8_N]; /* GOP/s per variant (multiply-add = 2 ops); 0 likewise */
    double f32_peak, int8_peak;     /* the best variant of each (0 if none ran) */
} bench_roofline;

/* Measures every limit for each of the n thread counts (medians of several repetitions). The
 * bandwidth buffer is max(256 MiB, 4 x the L3 cache), allocated once. */
clara_status bench_roofline_measure(const int *threads, size_t n, bench_roofline *out);

/* Median of n values (sorts v in place); 0 for n == 0. */
double bench_median(double *v, size_t n);

/* Monotonic wall clock in seconds. */
double bench_now(void);

#endif
