/* roofline_simd.h - the microbenchmark loops behind `clara bench`'s machine limits, one per
 * instruction set (roofline_simd.c compiles each with its own target attribute, so the rest of
 * the program builds without -m flags; callers check clara_cpu_get_features() first). */
#ifndef CLARA_BENCH_ROOFLINE_SIMD_H
#define CLARA_BENCH_ROOFLINE_SIMD_H

#include <stddef.h>
#include <stdint.h>

/* Independent FMA chains held in registers: `iters` rounds of RF_FMA512_CHAINS (RF_FMA256_CHAINS)
 * vector FMAs of 16 (8) f32 lanes. Each returns a value derived from every chain so none is
 * optimised away. FLOPs done = iters * chains * lanes * 2. */
#define RF_FMA512_CHAINS 16
#define RF_FMA256_CHAINS 12
float rf_fma_avx512(uint64_t iters);
float rf_fma_avx2(uint64_t iters);

/* Independent int8 dot chains: vpdpbusd on zmm (64 u8 x s8 products per instruction, AVX-512
 * VNNI), vpdpbusd on ymm (32, AVX-VNNI), and vpmaddubsw + vpmaddwd + vpaddd on ymm (32, AVX2).
 * Ops done = iters * chains * products * 2. */
#define RF_VNNI512_CHAINS 16
#define RF_VNNI256_CHAINS 12
#define RF_MADDUBS_CHAINS 6
int32_t rf_dot_avx512vnni(uint64_t iters);
int32_t rf_dot_avxvnni(uint64_t iters);
int32_t rf_dot_avx2(uint64_t iters);

/* Sum of n floats (p 64-byte aligned, n a multiple of 64) with streaming SIMD loads. */
float rf_sum_avx512(const float *p, size_t n);
float rf_sum_avx2(const float *p, size_t n);
float rf_sum_scalar(const float *p, size_t n);

#endif
