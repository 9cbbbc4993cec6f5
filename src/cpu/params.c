/* params.c - CPU identification (cpuid: vendor, family/model, brand string, cache sizes from leaf 4
 * on Intel and 0x8000001D on AMD) and the per-process kernel parameters of params.h: the kind's
 * defaults, then the CLARA_* overrides from the environment, once. */
#include "cpu/params.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/threadpool.h"
#include "cpu/dispatch.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define CLARA_X86 1
#endif

/* Field i of cpu_params, in table order. */
static const size_t field_offset[CPU_PARAM_COUNT] = {offsetof(cpu_params, pf_bytes),
                                                     offsetof(cpu_params, pf_groups),
                                                     offsetof(cpu_params, tasks_per_thread),
                                                     offsetof(cpu_params, rows_per_task),
                                                     offsetof(cpu_params, qg_panels),
                                                     offsetof(cpu_params, qg_task_kib),
                                                     offsetof(cpu_params, pf_lanes),
                                                     offsetof(cpu_params, qg_tile_tokens),
                                                     offsetof(cpu_params, pf_kq)};
#define FIELD(p, i)  (*(uint32_t *)((char *)(p) + field_offset[i]))
#define CFIELD(p, i) (*(const uint32_t *)((const char *)(p) + field_offset[i]))

const cpu_param_desc cpu_param_table[CPU_PARAM_COUNT] = {
    {"pf_bytes", "CLARA_PF_BYTES", 0, 1u << 20, 64,
     "decode prefetch distance along a weight row stream (bytes)"},
    {"pf_groups", "CLARA_PF_GROUPS", 1, 8, 1,
     "q4_0/q8_0 decode GEMV: groups of 16 weight rows prefetched ahead"},
    {"tasks_per_thread", "CLARA_TASKS_PER_THREAD", 1, 64, 1,
     "matmul/GEMV weight-row tasks per pool thread"},
    {"rows_per_task", "CLARA_ROWS_PER_TASK", 0, 1u << 20, 8,
     "matmul/GEMV weight rows per task (0: rows / (threads x tasks_per_thread))"},
    {"qg_panels", "CLARA_QG_PANELS", 1, 4, 1, "packed GEMM: most weight panels per task"},
    {"qg_task_kib", "CLARA_QG_TASK_KIB", 16, 1u << 16, 1,
     "packed GEMM: unpacked weight codes per task (KiB, a share of L2)"},
    {"pf_lanes", "CLARA_PF_LANES", 0, 1u << 20, 64,
     "q4_0/q8_0 decode GEMV on repacked weights: prefetch distance (bytes)"},
    {"qg_tile_tokens", "CLARA_QG_TILE_TOKENS", 5, 6, 1,
     "packed GEMM (AVX-512): tokens per register tile (AVX2: always 5)"},
    {"pf_kq", "CLARA_PF_KQ", 0, 1u << 20, 64,
     "q4_k/q6_k decode GEMV (AVX-512): prefetch distance into L2 only (bytes; 0: pf_bytes, L1)"},
};

static cpu_info g_info;
static cpu_params g_params;
static char g_source[CPU_PARAM_COUNT][96];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

#ifdef CLARA_X86
static void trim_copy(char *dst, size_t cap, const char *src) {
    while (*src == ' ') src++;
    snprintf(dst, cap, "%s", src);
    for (size_t n = strlen(dst); n > 0 && dst[n - 1] == ' '; n--) dst[n - 1] = 0;
}

/* Sizes from a deterministic cache leaf (Intel 4, AMD 0x8000001D: the same layout): per level,
 * ways x partitions x line size x sets; data or unified caches only. */
static void caches_from_leaf(cpu_info *c, unsigned leaf) {
    for (unsigned i = 0; i < 16; i++) {
        unsigned a, b, cc, d;
        __cpuid_count(leaf, i, a, b, cc, d);
        unsigned type = a & 0x1f, level = a >> 5 & 7;
        if (type == 0) break;
        if (type == 2) continue; /* instruction cache */
        unsigned long long bytes = (unsigned long long)((b >> 22) + 1) * (((b >> 12) & 0x3ff) + 1) *
                                   ((b & 0xfff) + 1) * ((unsigned long long)cc + 1);
        uint32_t kib = (uint32_t)(bytes >> 10);
        if (level == 1) c->l1d_kib = kib;
        if (level == 2) c->l2_kib = kib;
        if (level == 3) c->l3_kib = kib;
    }
}

static void detect_x86(cpu_info *c) {
    unsigned a, b, cc, d, max_ext;
    __cpuid(0, a, b, cc, d);
    unsigned max_leaf = a;
    memcpy(c->vendor, &b, 4), memcpy(c->vendor + 4, &d, 4), memcpy(c->vendor + 8, &cc, 4);
    c->vendor[12] = 0;
    __cpuid(1, a, b, cc, d);
    uint32_t fam = a >> 8 & 0xf, mod = a >> 4 & 0xf;
    c->family = fam == 0xf ? fam + (a >> 20 & 0xff) : fam;
    c->model = fam == 0x6 || fam == 0xf ? mod | (a >> 16 & 0xf) << 4 : mod;
    c->stepping = a & 0xf;
    __cpuid(0x80000000, max_ext, b, cc, d);
    if (max_ext >= 0x80000004) {
        unsigned r[12];
        for (unsigned i = 0; i < 3; i++)
            __cpuid(0x80000002 + i, r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]);
        char raw[49];
        memcpy(raw, r, 48);
        raw[48] = 0;
        trim_copy(c->name, sizeof c->name, raw);
    }
    bool amd = strcmp(c->vendor, "AuthenticAMD") == 0 || strcmp(c->vendor, "HygonGenuine") == 0;
    bool topo_ext = false;
    if (max_ext >= 0x80000001) {
        __cpuid(0x80000001, a, b, cc, d);
        topo_ext = cc >> 22 & 1;
    }
    if (amd && topo_ext && max_ext >= 0x8000001d)
        caches_from_leaf(c, 0x8000001d);
    else if (!amd && max_leaf >= 4)
        caches_from_leaf(c, 4);
    if (amd && c->l2_kib == 0 && max_ext >= 0x80000006) { /* the older AMD leaves */
        __cpuid(0x80000005, a, b, cc, d);
        c->l1d_kib = cc >> 24;
        __cpuid(0x80000006, a, b, cc, d);
        c->l2_kib = cc >> 16, c->l3_kib = (d >> 18) * 512;
    }
}
#endif

/* The kind from vendor, family and the instruction sets. Zen 4 is the family-25 part with
 * AVX-512 (Zen 3, also family 25, has none): models 0x10-0x1f, 0x60-0x7f, 0xa0-0xaf. */
static cpu_kind classify(const cpu_info *c, const char **why) {
    bool amd = strcmp(c->vendor, "AuthenticAMD") == 0;
    bool avx512 = clara_isa_supported(CLARA_ISA_AVX512);
    if (amd && c->family == 25 && avx512) {
        *why = "AMD family 25 with AVX-512";
        return CPU_KIND_ZEN4;
    }
    if (amd && c->family == 26) {
        *why = "AMD family 26";
        return CPU_KIND_ZEN5;
    }
    if (strcmp(c->vendor, "GenuineIntel") == 0 && avx512) {
        *why = "Intel with AVX-512 F/BW/VL";
        return CPU_KIND_INTEL_AVX512;
    }
    if (strcmp(c->vendor, "GenuineIntel") == 0 && clara_isa_supported(CLARA_ISA_AVX2)) {
        *why = "Intel with AVX2, no AVX-512";
        return CPU_KIND_INTEL_AVX2;
    }
    *why = "no kind of its own (vendor, family or instruction sets)";
    return CPU_KIND_OTHER;
}

const char *cpu_kind_name(cpu_kind k) {
    static const char *const names[CPU_KIND_COUNT] = {"other", "zen4", "zen5", "intel-avx512",
                                                      "intel-avx2"};
    return (unsigned)k < CPU_KIND_COUNT ? names[k] : "other";
}

/* The defaults were measured on a Zen 5 VM (prefetch distance: 7B q4_0 decode at 1.5-48 KB,
 * docs/PERFORMANCE.md) and kept on an Intel Xeon (Sapphire/Emerald Rapids class) where they held.
 * pf_lanes 8 KB (intel-avx512, bench_decode, 2 threads, step ms at 1 / 8 rows): 1B q4_0 pair
 * none 30.4 / 53.0, 8 KB 28.0 / 40.5, 24 KB 27.2-28.6 / 41.7-43.2, 48 KB 29.0 / 43.5; 7B q8_0
 * none 350 / 435, 8 KB 325 / 446, 24 KB 329 / 452. (bench_matmul's back-to-back GEMV, where
 * the hardware prefetcher alone follows the one stream, read 5-8% faster with none: the decode
 * step, with other work between the matrices, is the measure that counts.)
 * Zen 4 (EPYC family 25 model 17 VM, 2 threads, 7B pairs, decode steps with the values
 * alternating in one process, median of 7-9 rounds, ms): its prefetchers want the software
 * prefetch short. q4_k_m, pf_bytes 2 / 4 / 8 / 16 / 24 KB: 163-169 / 164-169 / 178 / 186 /
 * 184 at 1 row (none: 204), 474 against 483 (4 / 24 KB) at 8 rows. q4_0, pf_lanes none / 4 /
 * 8 / 16 KB: 163 / 164 / 171 / 178 at 1 row, 383 / 261 / 266 at 8 rows (without it the 8-row
 * step reads too little at once). The packed GEMM's panels (1-16) and task sizes (128-1024
 * KiB) changed nothing measurable on Zen 4 (4096 x 4096 q4_0 x 256 rows within 3%); its tiles of
 * 6 tokens instead of 5 did: 7B q4_0 compression at batch 4 41.0-41.3 tok/s against 38.5-40.1
 * (the same 4096 x 4096 x 256 GEMM +2-10%). Elsewhere the tile stays at 5 tokens: an earlier
 * build measured 6 5% slower (the compiler then spilled around the 24 accumulators;
 * docs/PERFORMANCE.md). The k-quant GEMV's wide rows (the 7B down projection) prefetch 16 KB
 * ahead into L2 on Zen 4 (gemv_avx512.c: its down projections took 34-42% less time in a 7B
 * q4_k_m decode step); not measured on the other kinds, which keep pf_bytes into L1.
 * CLARA_PF_BYTES, CLARA_PF_GROUPS, CLARA_TASKS_PER_THREAD, CLARA_ROWS_PER_TASK, CLARA_QG_PANELS,
 * CLARA_QG_TASK_KIB, CLARA_PF_LANES, CLARA_QG_TILE_TOKENS and CLARA_PF_KQ sweep them. */
cpu_params cpu_params_default(cpu_kind k) {
    cpu_params p = {.pf_bytes = 24576,
                    .pf_groups = 1,
                    .tasks_per_thread = 8,
                    .rows_per_task = 0,
                    .qg_panels = 4,
                    .qg_task_kib = 512,
                    .pf_lanes = 8192,
                    .qg_tile_tokens = 5,
                    .pf_kq = 0};
    if (k == CPU_KIND_ZEN4)
        p.pf_bytes = 4096, p.pf_lanes = 4096, p.qg_tile_tokens = 6, p.pf_kq = 16384;
    return p;
}

bool cpu_param_parse(int i, const char *s, uint32_t *out) {
    if (i < 0 || i >= CPU_PARAM_COUNT || !s || *s < '0' || *s > '9') return false;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    const cpu_param_desc *d = &cpu_param_table[i];
    if (*end || v < d->min || v > d->max || v % d->multiple) return false;
    *out = (uint32_t)v;
    return true;
}

static void init_once(void) {
#ifdef CLARA_X86
    detect_x86(&g_info);
#endif
    g_info.cores = clara_physical_cores();
    g_info.kind = classify(&g_info, &g_info.kind_why);
    g_info.avx512_256bit_units = g_info.kind == CPU_KIND_ZEN4;
    g_params = cpu_params_default(g_info.kind);
    for (int i = 0; i < CPU_PARAM_COUNT; i++) {
        const cpu_param_desc *d = &cpu_param_table[i];
        const char *env = getenv(d->env);
        snprintf(g_source[i], sizeof g_source[i], "default for %s", cpu_kind_name(g_info.kind));
        if (!env || !*env) continue;
        if (cpu_param_parse(i, env, &FIELD(&g_params, i)))
            snprintf(g_source[i], sizeof g_source[i], "environment (%s=%.40s)", d->env, env);
        else
            CLARA_LOGW("%s=%s is not an integer in [%u, %u] (a multiple of %u); using %u", d->env,
                       env, d->min, d->max, d->multiple, FIELD(&g_params, i));
    }
}

const cpu_info *cpu_info_get(void) {
    pthread_once(&g_once, init_once);
    return &g_info;
}

const cpu_params *cpu_params_get(void) {
    pthread_once(&g_once, init_once);
    return &g_params;
}

uint32_t cpu_param_value(const cpu_params *p, int i) {
    return i >= 0 && i < CPU_PARAM_COUNT ? CFIELD(p, i) : 0;
}

const char *cpu_param_source(int i) {
    pthread_once(&g_once, init_once);
    return i >= 0 && i < CPU_PARAM_COUNT ? g_source[i] : "";
}

bool cpu_params_force(const cpu_params *p) {
    pthread_once(&g_once, init_once);
    for (int i = 0; i < CPU_PARAM_COUNT; i++) {
        const cpu_param_desc *d = &cpu_param_table[i];
        uint32_t v = CFIELD(p, i);
        if (v < d->min || v > d->max || v % d->multiple) return false;
    }
    for (int i = 0; i < CPU_PARAM_COUNT; i++)
        if (CFIELD(p, i) != FIELD(&g_params, i))
            snprintf(g_source[i], sizeof g_source[i], "forced by the program");
    g_params = *p;
    return true;
}
