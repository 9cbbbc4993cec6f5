/* test_cpu_params.c - the per-CPU kernel parameters (src/cpu/params.h) and the backend description
 * (clara.h: clara_backend_describe):
 *  - detection fills what it should on x86 (vendor, name, family, L1d and L2 sizes > 0, a kind
 *    consistent with the vendor and the instruction sets), and the public description agrees;
 *  - an override is accepted only as a decimal integer within bounds and a multiple of its step;
 *  - the parameters change only splits and prefetch distances: every matmul path (float GEMV and
 *    GEMM, the decode GEMV incl. AMX rows, the general integer kernels, the packed GEMM, grouped
 *    products) gives the same output bits under very different parameter sets, at every level. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/dispatch.h"
#include "cpu/kctx.h"
#include "cpu/matmul.h"
#include "cpu/params.h"
#include "dtype.h"
#include "quant.h"
#include "t.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 4503599627370496.0 - 1.0);
}

static void test_detect(void) {
    const cpu_info *c = cpu_info_get();
    const char *kind = cpu_kind_name(c->kind);
    T_CHECK(kind && *kind);
    T_CHECK(c->cores >= 1);
    T_CHECK(c->kind_why && *c->kind_why);
#if defined(__x86_64__) || defined(__i386__)
    T_CHECK(strlen(c->vendor) == 12);
    T_CHECK(c->name[0] != 0 && c->name[0] != ' ');
    T_CHECK(c->family >= 6);
    T_CHECK_MSG(c->l1d_kib >= 16 && c->l1d_kib <= 1024, "L1d %u KiB", c->l1d_kib);
    T_CHECK_MSG(c->l2_kib >= 128 && c->l2_kib <= 65536, "L2 %u KiB", c->l2_kib);
    bool intel = strcmp(c->vendor, "GenuineIntel") == 0;
    if (intel && clara_isa_supported(CLARA_ISA_AVX512)) T_EQ_INT(c->kind, CPU_KIND_INTEL_AVX512);
    if (intel && !clara_isa_supported(CLARA_ISA_AVX512) && clara_isa_supported(CLARA_ISA_AVX2))
        T_EQ_INT(c->kind, CPU_KIND_INTEL_AVX2);
    if (c->kind == CPU_KIND_ZEN4) T_CHECK(c->family == 25 && c->avx512_256bit_units && !intel);
#endif
    clara_backend_info b;
    clara_backend_describe(&b);
    T_EQ_STR(b.backend, "cpu");
    T_EQ_STR(b.kind, kind);
    T_EQ_STR(b.isa, clara_isa_name(clara_isa_active()));
    T_EQ_STR(clara_backend_isa(), b.isa);
    T_EQ_INT(b.n_params, CPU_PARAM_COUNT);
    T_EQ_INT((int)b.family, (int)c->family);
    T_EQ_INT((int)b.l2_kib, (int)c->l2_kib);
    const cpu_params *p = cpu_params_get();
    for (int i = 0; i < b.n_params; i++) {
        T_EQ_STR(b.params[i].name, cpu_param_table[i].name);
        T_CHECK(b.params[i].value == (long long)cpu_param_value(p, i));
        T_CHECK(strncmp(b.params[i].env, "CLARA_", 6) == 0 && b.params[i].source[0]);
    }
    fprintf(stderr, "cpu_params: %s, %s family %u model %u, kind %s, L1d %u L2 %u L3 %u KiB\n",
            c->name, c->vendor, c->family, c->model, kind, c->l1d_kib, c->l2_kib, c->l3_kib);
}

/* The kinds' tables as measured (params.c gives the figures): Zen 4 prefetches 4 KB ahead on
 * both decode streams (16 KB into L2 on the k-quants' wide rows) and tiles the packed GEMM by 6
 * tokens, every other kind 24 KB along a row, 8 KB along a repacked group, 5 tokens. */
static void test_kind_defaults(void) {
    for (int k = 0; k < CPU_KIND_COUNT; k++) {
        cpu_params p = cpu_params_default((cpu_kind)k);
        bool zen4 = k == CPU_KIND_ZEN4;
        T_CHECK_MSG(p.pf_bytes == (zen4 ? 4096u : 24576u), "%s pf_bytes %u",
                    cpu_kind_name((cpu_kind)k), p.pf_bytes);
        T_CHECK_MSG(p.pf_lanes == (zen4 ? 4096u : 8192u), "%s pf_lanes %u",
                    cpu_kind_name((cpu_kind)k), p.pf_lanes);
        T_CHECK(p.pf_groups == 1 && p.tasks_per_thread == 8 && p.rows_per_task == 0);
        T_CHECK(p.qg_panels == 4 && p.qg_task_kib == 512);
        T_CHECK(p.qg_tile_tokens == (zen4 ? 6u : 5u));
        T_CHECK_MSG(p.pf_kq == (zen4 ? 16384u : 0u), "%s pf_kq %u", cpu_kind_name((cpu_kind)k),
                    p.pf_kq);
    }
}

static void test_parse(void) {
    uint32_t v = 77;
    T_CHECK(cpu_param_parse(0, "12288", &v) && v == 12288); /* pf_bytes: multiple of 64 */
    T_CHECK(cpu_param_parse(0, "0", &v) && v == 0);
    v = 77;
    T_CHECK(!cpu_param_parse(0, "100", &v) && v == 77); /* not a multiple of 64 */
    T_CHECK(!cpu_param_parse(0, "", &v));
    T_CHECK(!cpu_param_parse(0, "-64", &v));
    T_CHECK(!cpu_param_parse(0, " 64", &v));
    T_CHECK(!cpu_param_parse(0, "64k", &v));
    T_CHECK(!cpu_param_parse(0, "99999999999999999999999", &v));
    T_CHECK(!cpu_param_parse(0, "2097152", &v)); /* above 1 MiB */
    T_CHECK(!cpu_param_parse(4, "5", &v) && cpu_param_parse(4, "4", &v) && v == 4);    /* panels */
    T_CHECK(!cpu_param_parse(2, "0", &v));                                             /* tasks */
    T_CHECK(!cpu_param_parse(3, "12", &v) && cpu_param_parse(3, "16", &v) && v == 16); /* rows */
    T_CHECK(!cpu_param_parse(CPU_PARAM_COUNT, "1", &v) && !cpu_param_parse(-1, "1", &v));
    cpu_params bad = *cpu_params_get(), before = bad;
    bad.qg_panels = 0;
    T_CHECK(!cpu_params_force(&bad));
    T_CHECK(memcmp(cpu_params_get(), &before, sizeof before) == 0);
}

typedef struct {
    cpu_mat W;
    void *data;
} pmat;

static int pmat_make(pmat *m, clara_type t, uint64_t rows, uint64_t cols) {
    uint64_t row_bytes = 0;
    if (clara_type_row_bytes(t, cols, &row_bytes) != CLARA_OK) return -1;
    float *src = malloc(cols * sizeof(float));
    m->data = malloc(rows * row_bytes);
    if (!src || !m->data) return -1;
    for (uint64_t r = 0; r < rows; r++) {
        for (uint64_t k = 0; k < cols; k++) src[k] = frand();
        if (clara_quantize_row(t, src, cols, (uint8_t *)m->data + r * row_bytes, "w") != CLARA_OK)
            return -1;
    }
    free(src);
    m->W = (cpu_mat){m->data, t, rows, cols, NULL};
    return 0;
}

#define N_SETS 4

/* Parameter sets far from the defaults (set 0 is the defaults themselves). */
static void param_sets(cpu_params sets[N_SETS]) {
    sets[0] = cpu_params_default(cpu_info_get()->kind);
    sets[1] = (cpu_params){.pf_bytes = 0,
                           .pf_groups = 3,
                           .tasks_per_thread = 1,
                           .rows_per_task = 0,
                           .qg_panels = 1,
                           .qg_task_kib = 16,
                           .pf_lanes = 0,
                           .qg_tile_tokens = 5,
                           .pf_kq = 0};
    sets[2] = (cpu_params){.pf_bytes = 1u << 20,
                           .pf_groups = 8,
                           .tasks_per_thread = 64,
                           .rows_per_task = 8,
                           .qg_panels = 2,
                           .qg_task_kib = 1u << 16,
                           .pf_lanes = 1u << 20,
                           .qg_tile_tokens = 6,
                           .pf_kq = 1u << 20};
    sets[3] = (cpu_params){.pf_bytes = 4096,
                           .pf_groups = 1,
                           .tasks_per_thread = 3,
                           .rows_per_task = 200,
                           .qg_panels = 3,
                           .qg_task_kib = 48,
                           .pf_lanes = 4096,
                           .qg_tile_tokens = 6,
                           .pf_kq = 4096};
}

/* y for every n under each parameter set, compared bit for bit with set 0's: rows x cols
 * weights (and a 40-row matrix of the same width). */
static void check_type(cpu_kctx *kc, clara_type t, int lv, uint64_t rows, uint64_t cols) {
    static const uint32_t ns[] = {1, 3, 8, 12, 16, 17, 40};
    pmat m, m2;
    if (pmat_make(&m, t, rows, cols) != 0 || pmat_make(&m2, t, 40, cols) != 0) {
        T_CHECK_MSG(0, "setup %s", clara_type_name(t));
        return;
    }
    float *x = malloc(40 * cols * sizeof(float)), *y0 = malloc(40 * rows * sizeof(float)),
          *y = malloc(40 * rows * sizeof(float)), *g0[2], *g[2];
    for (size_t i = 0; i < 40 * cols; i++) x[i] = frand();
    for (int i = 0; i < 2; i++) g0[i] = malloc(16 * rows * 4), g[i] = malloc(16 * rows * 4);
    cpu_params sets[N_SETS], saved = *cpu_params_get();
    param_sets(sets);
    int differ = 0, group_differ = 0;
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
        uint32_t n = ns[ni];
        const cpu_mat *W[2] = {&m.W, &m.W};
        bool grouped0 = false;
        for (int s = 0; s < N_SETS; s++) {
            T_CHECK(cpu_params_force(&sets[s]));
            float *out = s ? y : y0;
            clara_matmul(kc, &m.W, x, n, out, false, 1.0f);
            clara_matmul(kc, &m2.W, x, n, out, true, 0.5f); /* a small matrix: one task */
            if (s && memcmp(y, y0, (size_t)n * rows * sizeof(float)) != 0) differ++;
            if (n <= CLARA_MATMUL_GROUP_ROWS) {
                bool ran = clara_matmul_group(kc, W, 2, x, n, s ? g : g0);
                if (!s) grouped0 = ran;
                T_CHECK(ran == grouped0);
                if (s && ran)
                    for (int i = 0; i < 2; i++)
                        group_differ += memcmp(g[i], g0[i], (size_t)n * rows * 4) != 0;
            }
        }
    }
    T_CHECK(cpu_params_force(&saved));
    T_CHECK_MSG(differ == 0, "%s %s: %d (n, set) products differ from the defaults' bits",
                clara_isa_name((clara_isa)lv), clara_type_name(t), differ);
    T_CHECK_MSG(group_differ == 0, "%s %s: %d grouped products differ",
                clara_isa_name((clara_isa)lv), clara_type_name(t), group_differ);
    free(x), free(y0), free(y), free(m.data), free(m2.data);
    for (int i = 0; i < 2; i++) free(g0[i]), free(g[i]);
}

/* Wider than the k-quant GEMV's KQ_WIDE_BLOCKS (32) super-blocks. */
#define WIDE_COLS (33 * 256)

static void test_bits_unchanged(void) {
    static const clara_type types[] = {CLARA_TYPE_F32,  CLARA_TYPE_F16,  CLARA_TYPE_BF16,
                                       CLARA_TYPE_Q4_0, CLARA_TYPE_Q8_0, CLARA_TYPE_Q4_K,
                                       CLARA_TYPE_Q6_K, CLARA_TYPE_Q5_0, CLARA_TYPE_Q5_K};
    clara_pool *pool = NULL;
    cpu_kctx kc;
    if (clara_pool_create(2, &pool) != CLARA_OK ||
        cpu_kctx_init(&kc, pool, WIDE_COLS) != CLARA_OK) {
        T_CHECK_MSG(0, "kernel context");
        return;
    }
    /* the parameters reach the split (1100 rows, 2 threads): rows / (2 x tasks) in multiples of 8,
     * or the fixed count */
    cpu_params sets[N_SETS], saved = *cpu_params_get();
    param_sets(sets);
    const cpu_mat big = {NULL, CLARA_TYPE_F32, 1100, 512, NULL};
    static const uint64_t want[N_SETS] = {72, 552, 8, 200};
    for (int s = 0; s < N_SETS; s++) {
        T_CHECK(cpu_params_force(&sets[s]));
        T_CHECK_MSG(clara_matmul_rows_per_task(&kc, &big, 1) == want[s], "set %d: %llu rows", s,
                    (unsigned long long)clara_matmul_rows_per_task(&kc, &big, 1));
    }
    T_CHECK(cpu_params_force(&saved));
    clara_isa best = clara_isa_best();
    for (int lv = 0; lv < CLARA_ISA_COUNT; lv++) {
        if (!clara_isa_supported((clara_isa)lv)) continue;
        clara_isa_force((clara_isa)lv);
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            /* 1100 rows: 9+ packed-GEMM tasks of 4 panels at 2 threads */
            check_type(&kc, types[ti], lv, 1100, 512);
            if (types[ti] == CLARA_TYPE_Q4_K || types[ti] == CLARA_TYPE_Q6_K)
                check_type(&kc, types[ti], lv, 300, WIDE_COLS); /* rows that prefetch into L2 */
        }
    }
    clara_isa_force(best);
    cpu_kctx_free(&kc);
    clara_pool_free(pool);
}

int main(void) {
    T_RUN(test_detect);
    T_RUN(test_kind_defaults);
    T_RUN(test_parse);
    T_RUN(test_bits_unchanged);
    return t_report("cpu_params");
}
