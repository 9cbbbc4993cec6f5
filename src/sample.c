/* sample.c - seeded sampling of the next id (sample.h). Everything is computed in a fixed order in
 * double precision, so that the same logits and seed give the same id on every run and machine. */
#include "sample.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void clara_rng_seed(clara_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t next(clara_rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double clara_rng_uniform(clara_rng *r) {
    return (double)(next(r) >> 11) * 0x1.0p-53;
}

/* Larger logit first, then the lower id: a total order, so the sort's result is unique. */
static int by_logit(const void *a, const void *b) {
    const clara_cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

int32_t clara_sample(const float *logits, uint32_t n, float temperature, float top_p,
                     uint32_t sample_top_k, clara_rng *rng, clara_cand *c) {
    for (uint32_t i = 0; i < n; i++) c[i] = (clara_cand){logits[i], (int32_t)i};
    uint32_t keep = sample_top_k && sample_top_k < n ? sample_top_k : n;
    bool nucleus = top_p > 0 && top_p < 1;
    if (keep < n || nucleus) qsort(c, n, sizeof *c, by_logit);
    float best = c[0].logit;
    for (uint32_t i = 1; i < keep; i++)
        if (c[i].logit > best) best = c[i].logit;
    double total = 0;
    for (uint32_t i = 0; i < keep; i++) total += exp(((double)c[i].logit - best) / temperature);
    if (nucleus) { /* the fewest most likely ids reaching top_p of the mass */
        double cum = 0;
        uint32_t k = 0;
        while (k < keep && cum < top_p * total)
            cum += exp(((double)c[k++].logit - best) / temperature);
        keep = k ? k : 1;
        total = cum > 0 ? cum : total;
    }
    double u = clara_rng_uniform(rng) * total, acc = 0;
    for (uint32_t i = 0; i < keep; i++) {
        acc += exp(((double)c[i].logit - best) / temperature);
        if (u < acc) return c[i].id;
    }
    return c[keep - 1].id; /* rounding left u at the very top */
}
