/* rank.h - the arithmetic of selection: the exact cosine score (the engine's own formula, so the
 * store ranks exactly as /v1/retrieve does) and the sign-bit codes that pre-select candidates in
 * large collections.
 *
 * Code. A chunk's code is the sign bit of each of its n_mem x n_embd values (1 = negative), one
 * bit a value: 1/16 of its f16 vectors. The Hamming distance h between two codes estimates the
 * angle between the vectors, pi * h / n (SimHash), so the chunks nearest the query's code are the
 * likely best by cosine; those candidates are then scored exactly. Every value takes part, so the
 * estimate's error is about 1/sqrt(n) radians (n = 65,536 for the 7B models): measured, the true
 * top 5 of 10,000 chunks were among the 128 nearest codes on every query, where a 256-dimension
 * random projection found them among the 256 best on 4% (docs/PERFORMANCE.md). */
#ifndef CLARA_STORE_RANK_H
#define CLARA_STORE_RANK_H

#include <stddef.h>
#include <stdint.h>

/* The engine's cosine: sums in double in index order, norms floored at 1e-12. */
float store_cosine(const float *q, const float *a, size_t n);

/* 64-bit words of the code of n values. */
static inline size_t store_code_words(size_t n) {
    return (n + 63) / 64;
}

/* The code of v[n]: bit i of out (word i / 64, bit i % 64) is set when v[i] < 0 (or is -0.0). */
void store_sign_code(const float *v, size_t n, uint64_t *out);

/* Hamming distances of q's code to each of n codes of `words` words: out[i]. */
void store_hamming(const uint64_t *q, const uint64_t *codes, size_t n, size_t words, uint32_t *out);

/* Indices of the `k` largest scores (ties: lower index first), in that order; k <= n. */
void store_top_k(const float *scores, size_t n, size_t k, size_t *out);

#endif
