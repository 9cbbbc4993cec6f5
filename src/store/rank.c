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

void store_unit(const float *a, size_t n, float *out) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * a[i];
    float inv = (float)(1.0 / fmax(sqrt(s), 1e-12));
    for (size_t i = 0; i < n; i++) out[i] = a[i] * inv;
}

/* splitmix64: 64 signs of row-block w of input i. Changing it changes every stored sketch, so it
 * is part of the store's format (docs/STORE.md). */
static uint64_t sign_bits(uint64_t i, uint64_t w) {
    uint64_t z = (i * (STORE_SKETCH_DIM / 64) + w + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void store_sketch(const float *v, const float *anchor, size_t n, float *out) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    float inv = (float)(1.0 / fmax(sqrt(s), 1e-12));
    float acc[STORE_SKETCH_DIM] = {0};
    for (size_t i = 0; i < n; i++) {
        float x = v[i] * inv - (anchor ? anchor[i] : 0.0f);
        uint32_t xb;
        memcpy(&xb, &x, 4);
        for (int w = 0; w < STORE_SKETCH_DIM / 64; w++) {
            uint64_t bits = sign_bits(i, (uint64_t)w);
            float *a = acc + w * 64;
            for (int b = 0; b < 64; b++) {
                uint32_t y = xb ^ (uint32_t)((bits >> b) & 1u) << 31; /* -x where the bit is set */
                float f;
                memcpy(&f, &y, 4);
                a[b] += f;
            }
        }
    }
    memcpy(out, acc, sizeof acc);
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
