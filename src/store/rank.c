/* rank.c - see rank.h. */
#include "store/rank.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

float store_cosine(const float *q, const float *a, size_t n) {
    double qn = 0, an = 0, dot = 0;
    for (size_t i = 0; i < n; i++) qn += (double)q[i] * q[i];
    for (size_t i = 0; i < n; i++) {
        an += (double)a[i] * a[i];
        dot += (double)q[i] * a[i];
    }
    return (float)(dot / (fmax(sqrt(qn), 1e-12) * fmax(sqrt(an), 1e-12)));
}

void store_sign_code(const float *v, size_t n, uint64_t *out) {
    memset(out, 0, store_code_words(n) * sizeof *out);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        out[i / 64] |= (uint64_t)(u >> 31) << (i % 64);
    }
}

/* The same sum two ways: with the POPCNT instruction (every x86-64 CPU these machines come as
 * has it; the compiler's portable popcount is a slow call), or with shifts and masks. */
__attribute__((target("popcnt"))) static void
hamming_popcnt(const uint64_t *q, const uint64_t *codes, size_t n, size_t words, uint32_t *out) {
    for (size_t i = 0; i < n; i++) {
        const uint64_t *c = codes + i * words;
        uint64_t d = 0;
        for (size_t w = 0; w < words; w++) d += (uint64_t)__builtin_popcountll(q[w] ^ c[w]);
        out[i] = (uint32_t)d;
    }
}

static uint64_t bits_set(uint64_t x) {
    x -= (x >> 1) & 0x5555555555555555ull;
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (x * 0x0101010101010101ull) >> 56;
}

static void hamming_portable(const uint64_t *q, const uint64_t *codes, size_t n, size_t words,
                             uint32_t *out) {
    for (size_t i = 0; i < n; i++) {
        const uint64_t *c = codes + i * words;
        uint64_t d = 0;
        for (size_t w = 0; w < words; w++) d += bits_set(q[w] ^ c[w]);
        out[i] = (uint32_t)d;
    }
}

void store_hamming(const uint64_t *q, const uint64_t *codes, size_t n, size_t words,
                   uint32_t *out) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("popcnt")) {
        hamming_popcnt(q, codes, n, words, out);
        return;
    }
#endif
    hamming_portable(q, codes, n, words, out);
}

typedef struct {
    float score;
    size_t index;
} scored;

/* Better first: higher score, then lower index. */
static int better(const scored *a, const scored *b) {
    if (a->score != b->score) return a->score > b->score;
    return a->index < b->index;
}

static void sift_down(scored *h, size_t n, size_t i) {
    for (;;) { /* min-heap by `better`: the worst kept candidate on top */
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && better(&h[w], &h[l])) w = l;
        if (r < n && better(&h[w], &h[r])) w = r;
        if (w == i) return;
        scored t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static int cmp_better(const void *a, const void *b) {
    return better(a, b) ? -1 : better(b, a) ? 1 : 0;
}

void store_top_k(const float *scores, size_t n, size_t k, size_t *out) {
    if (k == 0) return;
    scored *h = malloc(k * sizeof *h);
    if (!h) { /* fall back to repeated scans: slow, still exact */
        for (size_t j = 0; j < k; j++) {
            size_t best = n;
            for (size_t i = 0; i < n; i++) {
                bool taken = false;
                for (size_t t = 0; t < j; t++) taken |= out[t] == i;
                if (!taken && (best == n || scores[i] > scores[best])) best = i;
            }
            out[j] = best;
        }
        return;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        scored s = {scores[i], i};
        if (m < k) {
            h[m++] = s;
            if (m == k)
                for (size_t j = k / 2 + 1; j-- > 0;) sift_down(h, k, j);
        } else if (better(&s, &h[0])) {
            h[0] = s;
            sift_down(h, k, 0);
        }
    }
    qsort(h, m, sizeof *h, cmp_better);
    for (size_t i = 0; i < m; i++) out[i] = h[i].index;
    free(h);
}
