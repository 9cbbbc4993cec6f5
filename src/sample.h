/* sample.h - drawing the next id from a step's logits when a request asks for sampling
 * (temperature > 0; greedy decoding, the reference's, is generate.c's argmax): temperature, top-k,
 * top-p, and a seeded generator so that a seed gives the same ids every time. */
#ifndef CLARA_SAMPLE_H
#define CLARA_SAMPLE_H

#include <stdint.h>

/* xoshiro256** state, seeded through splitmix64 (the generator's authors' recommendation). */
typedef struct {
    uint64_t s[4];
} clara_rng;

void clara_rng_seed(clara_rng *r, uint64_t seed);
/* Uniform in [0, 1) with 53 random bits. */
double clara_rng_uniform(clara_rng *r);

typedef struct {
    float logit;
    int32_t id;
} clara_cand;

/* One id drawn from softmax(logits / temperature) over the sample_top_k largest logits (0 = all)
 * and, of those, the fewest whose probability reaches top_p (top_p <= 0 or >= 1: all), ties
 * broken by the lower id. scratch holds n entries. temperature must be > 0. */
int32_t clara_sample(const float *logits, uint32_t n, float temperature, float top_p,
                     uint32_t sample_top_k, clara_rng *rng, clara_cand *scratch);

#endif
