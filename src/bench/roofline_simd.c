/* roofline_simd.c - the loops that measure the machine's limits (roofline_simd.h). Each function
 * carries its own target attribute, so this file builds with the project's common flags and the
 * instructions run only where the caller found them. Accumulators are named registers (not an
 * array, which -O2 might keep in memory); empty asm statements make inputs opaque so the compiler
 * can neither hoist nor merge the work being timed. */
#include "bench/roofline_simd.h"

#include <immintrin.h>

#define TARGET(s) __attribute__((target(s)))

/* X(0) ... X(n-1) */
#define REP6(X)  X(0) X(1) X(2) X(3) X(4) X(5)
#define REP12(X) REP6(X) X(6) X(7) X(8) X(9) X(10) X(11)
#define REP16(X) REP12(X) X(12) X(13) X(14) X(15)

TARGET("avx512f,fma") float rf_fma_avx512(uint64_t iters) {
    __m512 a = _mm512_set1_ps(0.9999999f), b = _mm512_set1_ps(1e-7f);
#define DECL(i) __m512 c##i = _mm512_set1_ps((float)(i));
#define STEP(i) c##i = _mm512_fmadd_ps(c##i, a, b);
#define SUM(i)  s = _mm512_add_ps(s, c##i);
    REP16(DECL)
    for (uint64_t k = 0; k < iters; k++) {
        __asm__("" : "+v"(a), "+v"(b));
        REP16(STEP)
    }
    __m512 s = _mm512_setzero_ps();
    REP16(SUM)
    return _mm512_reduce_add_ps(s);
#undef DECL
#undef STEP
#undef SUM
}

TARGET("avx2,fma") float rf_fma_avx2(uint64_t iters) {
    __m256 a = _mm256_set1_ps(0.9999999f), b = _mm256_set1_ps(1e-7f);
#define DECL(i) __m256 c##i = _mm256_set1_ps((float)(i));
#define STEP(i) c##i = _mm256_fmadd_ps(c##i, a, b);
#define SUM(i)  s = _mm256_add_ps(s, c##i);
    REP12(DECL)
    for (uint64_t k = 0; k < iters; k++) {
        __asm__("" : "+x"(a), "+x"(b));
        REP12(STEP)
    }
    __m256 s = _mm256_setzero_ps();
    REP12(SUM)
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
#undef DECL
#undef STEP
#undef SUM
}

TARGET("avx512f,avx512vnni") int32_t rf_dot_avx512vnni(uint64_t iters) {
    __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
#define DECL(i) __m512i c##i = _mm512_set1_epi32(i);
#define STEP(i) c##i = _mm512_dpbusd_epi32(c##i, a, b);
#define SUM(i)  s = _mm512_add_epi32(s, c##i);
    REP16(DECL)
    for (uint64_t k = 0; k < iters; k++) {
        __asm__("" : "+v"(a), "+v"(b));
        REP16(STEP)
    }
    __m512i s = _mm512_setzero_si512();
    REP16(SUM)
    return _mm512_reduce_add_epi32(s);
#undef DECL
#undef STEP
#undef SUM
}

TARGET("avx2") static int32_t hsum256_epi32(__m256i v) {
    int32_t out[8];
    _mm256_storeu_si256((__m256i *)out, v);
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}

TARGET("avx2,avxvnni") int32_t rf_dot_avxvnni(uint64_t iters) {
    __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
#define DECL(i) __m256i c##i = _mm256_set1_epi32(i);
#define STEP(i) c##i = _mm256_dpbusd_avx_epi32(c##i, a, b);
#define SUM(i)  s = _mm256_add_epi32(s, c##i);
    REP12(DECL)
    for (uint64_t k = 0; k < iters; k++) {
        __asm__("" : "+x"(a), "+x"(b));
        REP12(STEP)
    }
    __m256i s = _mm256_setzero_si256();
    REP12(SUM)
    return hsum256_epi32(s);
#undef DECL
#undef STEP
#undef SUM
}

/* The AVX2 int8 dot as integer kernels do it without VNNI: u8 x s8 pairs summed to i16
 * (vpmaddubsw), widened to i32 by a multiply-add with ones (vpmaddwd), accumulated (vpaddd). The
 * asm before each chain makes `a` look new, so the products are not shared between chains. */
TARGET("avx2") int32_t rf_dot_avx2(uint64_t iters) {
    __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
#define DECL(i) __m256i c##i = _mm256_set1_epi32(i);
#define STEP(i)                                                                                    \
    __asm__("" : "+x"(a));                                                                         \
    c##i = _mm256_add_epi32(c##i, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
#define SUM(i) s = _mm256_add_epi32(s, c##i);
    REP6(DECL)
    for (uint64_t k = 0; k < iters; k++) {
        __asm__("" : "+x"(b), "+x"(ones));
        REP6(STEP)
    }
    __m256i s = _mm256_setzero_si256();
    REP6(SUM)
    return hsum256_epi32(s);
#undef DECL
#undef STEP
#undef SUM
}

TARGET("avx512f") float rf_sum_avx512(const float *p, size_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < n; i += 64) {
        s0 = _mm512_add_ps(s0, _mm512_load_ps(p + i));
        s1 = _mm512_add_ps(s1, _mm512_load_ps(p + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_load_ps(p + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_load_ps(p + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

TARGET("avx2") float rf_sum_avx2(const float *p, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_load_ps(p + i));
        s1 = _mm256_add_ps(s1, _mm256_load_ps(p + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_load_ps(p + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_load_ps(p + i + 24));
    }
    float out[8];
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}

float rf_sum_scalar(const float *p, size_t n) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i < n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    return (s0 + s1) + (s2 + s3);
}
