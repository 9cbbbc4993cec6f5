/* rank.h - the arithmetic of selection: the exact cosine score (the engine's own formula, so the
 * store ranks exactly as /v1/retrieve does) and the ranking sketch that pre-selects candidates in
 * large collections.
 *
 * Sketch. Cosine similarity of flattened vector blocks is <q^, a^> with q^, a^ the unit vectors.
 * For any fixed unit vector u (the model's *anchor*: the unit vector of the first chunk stored
 * under the model) <q^, a^> = <q^, u> + <q^, a^ - u>, and the first term is the same for every
 * chunk, so ranking by <q^, a^ - u> is ranking by cosine. A chunk's sketch is a fixed random
 * projection P (STORE_SKETCH_DIM rows of independent +-1 signs from a counter hash) of a^ - u;
 * <P q^, P (a^ - u)> / STORE_SKETCH_DIM estimates <q^, a^ - u> without bias, with an error that
 * scales with |a^ - u| — small, because hidden states share a large common direction that the
 * anchor takes out. The best candidates by sketch are then scored exactly. */
#ifndef CLARA_STORE_RANK_H
#define CLARA_STORE_RANK_H

#include <stddef.h>
#include <stdint.h>

/* The engine's cosine: sums in double in index order, norms floored at 1e-12. */
float store_cosine(const float *q, const float *a, size_t n);

/* a / |a| (|a| floored at 1e-12) into out[n]. */
void store_unit(const float *a, size_t n, float *out);

/* out[STORE_SKETCH_DIM] = P (unit(v) - anchor); anchor NULL = no centring (the query side). */
void store_sketch(const float *v, const float *anchor, size_t n, float *out);

/* Indices of the `k` largest scores (ties: lower index first), in that order; k <= n. */
void store_top_k(const float *scores, size_t n, size_t k, size_t *out);

#endif
