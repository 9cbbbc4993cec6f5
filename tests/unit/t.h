/* t.h - the tiny unit-test helper: CHECK-style macros that count and report, and a main that
 * prints "N passed, N failed" (the line the test runner and CI read). */
#ifndef CLARA_TEST_T_H
#define CLARA_TEST_T_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clara.h"

static int t_passed, t_failed;

#define T_CHECK(cond)                                                                              \
    do {                                                                                           \
        if (cond) {                                                                                \
            t_passed++;                                                                            \
        } else {                                                                                   \
            t_failed++;                                                                            \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                        \
        }                                                                                          \
    } while (0)

#define T_CHECK_MSG(cond, ...)                                                                     \
    do {                                                                                           \
        if (cond) {                                                                                \
            t_passed++;                                                                            \
        } else {                                                                                   \
            t_failed++;                                                                            \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#define T_EQ_INT(a, b)                                                                             \
    T_CHECK_MSG((long long)(a) == (long long)(b), "%lld != %lld", (long long)(a), (long long)(b))
#define T_EQ_STR(a, b)                                                                             \
    T_CHECK_MSG((a) && (b) && strcmp((a), (b)) == 0, "'%s' != '%s'", (a) ? (a) : "(null)",         \
                (b) ? (b) : "(null)")
#define T_NEAR(a, b, tol)                                                                          \
    T_CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%.9g vs %.9g (tol %g)", (double)(a),    \
                (double)(b), (double)(tol))

/* Runs one named test function. */
#define T_RUN(fn)                                                                                  \
    do {                                                                                           \
        int f0 = t_failed;                                                                         \
        fn();                                                                                      \
        if (t_failed != f0) fprintf(stderr, "  in %s\n", #fn);                                     \
    } while (0)

/* Uniform in [-1, 1): a xorshift64 generator, one sequence per test binary. */
static inline double t_frand(void) {
    static uint64_t s = 0x2545f4914f6cdd1dull;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return (double)(s >> 11) / 4503599627370496.0 - 1.0;
}

/* The last error message contains `needle` and is one line (errors are one-line by contract). */
static inline bool err_has(const char *needle) {
    const char *e = clara_last_error();
    bool ok = strstr(e, needle) != NULL && !strchr(e, '\n');
    if (!ok) fprintf(stderr, "  error '%s' lacks '%s'\n", e, needle);
    return ok;
}

/* n bytes at p equal the lowercase or uppercase hex string `hex`. */
static inline bool hex_eq(const uint8_t *p, size_t n, const char *hex) {
    if (strlen(hex) != 2 * n) return false;
    for (size_t i = 0; i < n; i++) {
        char b[3] = {hex[2 * i], hex[2 * i + 1], 0};
        if ((uint8_t)strtoul(b, NULL, 16) != p[i]) return false;
    }
    return true;
}

static inline int t_report(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, t_passed, t_failed);
    return t_failed ? 1 : 0;
}

/* Documents the generation tests ask the demo model about (t_docs + i, n of them). */
static const clara_text t_docs[] = {
    {"Paris is the capital of France.", 31},
    {"The Rhine flows through Basel, Strasbourg and Cologne.", 54},
    {"Mount Everest is the highest mountain above sea level.", 54},
    {"Honey never spoils; jars from ancient tombs were still edible.", 62},
    {"Octopuses have three hearts and blue blood.", 43},
    {"The Great Wall of China is thousands of kilometres long.", 56},
};

/* A 2-thread context's parameters, on the backend CLARA_TEST_BACKEND names (default: auto) with
 * CLARA_TEST_GPU_LAYERS layers on the device (default: as many as fit), so that the engine's unit
 * tests also run on the Vulkan backend (tests/run_tests.sh). */
static inline clara_ctx_params t_ctx_params(void) {
    clara_ctx_params cp = clara_ctx_default_params();
    cp.n_threads = 2;
    const char *b = getenv("CLARA_TEST_BACKEND"), *l = getenv("CLARA_TEST_GPU_LAYERS");
    if (b && *b && clara_backend_parse(b, &cp.backend) != CLARA_OK) {
        fprintf(stderr, "CLARA_TEST_BACKEND: %s\n", clara_last_error());
        exit(2);
    }
    if (l && *l) cp.gpu_layers = atoi(l);
    return cp;
}

/* The demo model that `make` builds ($BUILD/demo/clara-demo.gguf, BUILD defaulting to build) and
 * a 2-thread context on it; path (may be NULL) receives its path. 0, or -1 with the reason on
 * stderr. */
static inline int t_load_demo(clara_model **m, clara_ctx **ctx, char *path, size_t cap) {
    const char *build = getenv("BUILD");
    char buf[1024];
    if (!path) path = buf, cap = sizeof buf;
    snprintf(path, cap, "%s/demo/clara-demo.gguf", build && *build ? build : "build");
    clara_model_params mp = clara_model_default_params();
    clara_ctx_params cp = t_ctx_params();
    if (clara_model_load(path, &mp, m) != CLARA_OK || clara_ctx_create(*m, &cp, ctx) != CLARA_OK) {
        fprintf(stderr, "cannot load %s: %s\n", path, clara_last_error());
        return -1;
    }
    return 0;
}

#endif
