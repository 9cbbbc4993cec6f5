/* params.h - the CPU this process runs on (vendor, family, model, name, cache sizes, cores, and a
 * named kind) and the kernel parameters chosen for it once at start: what used to be constants
 * tuned on one machine (prefetch distances, rows per task, the packed GEMM's panels per task).
 * Every parameter can be forced for testing with an environment variable (read once; a bad value
 * is warned about and ignored). The parameters only change how work is split, how far ahead
 * weights are prefetched and how many tokens a register tile holds: no output bit depends on them
 * (tests/unit/test_cpu_params.c checks). */
#ifndef CLARA_CPU_PARAMS_H
#define CLARA_CPU_PARAMS_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    CPU_KIND_OTHER = 0,
    CPU_KIND_ZEN4,         /* AMD family 25 with AVX-512 (executed on 256-bit units) */
    CPU_KIND_ZEN5,         /* AMD family 26 */
    CPU_KIND_INTEL_AVX512, /* Intel with AVX-512 F/BW/VL (AMX-INT8 recorded separately) */
    CPU_KIND_INTEL_AVX2,   /* Intel with AVX2 + FMA + F16C, no AVX-512 */
    CPU_KIND_COUNT
} cpu_kind;

typedef struct {
    char vendor[13];                  /* "GenuineIntel", "AuthenticAMD", ...; "" off x86 */
    char name[49];                    /* the brand string, trimmed */
    uint32_t family, model, stepping; /* display family / model (base + extended) */
    uint32_t l1d_kib, l2_kib, l3_kib; /* per instance as cpuid reports them; 0 where unknown */
    int cores;                        /* physical cores (clara_physical_cores) */
    cpu_kind kind;
    const char *kind_why;     /* the facts the kind was chosen from, one phrase */
    bool avx512_256bit_units; /* Zen 4: a 512-bit operation issues as two 256-bit halves */
} cpu_info;

/* The parameters. Field order is the order of cpu_param_table. */
typedef struct {
    uint32_t pf_bytes;         /* decode kernels' prefetch distance along a weight row stream */
    uint32_t pf_groups;        /* q4_0/q8_0 decode GEMV: groups of 16 rows prefetched ahead */
    uint32_t tasks_per_thread; /* matmul / GEMV: weight-row tasks per pool thread */
    uint32_t rows_per_task;    /* matmul / GEMV: fixed weight rows per task (0: from the above) */
    uint32_t qg_panels;        /* packed GEMM: at most this many panels per task */
    uint32_t qg_task_kib;      /* packed GEMM: unpacked codes per task (a share of L2) */
    uint32_t pf_lanes;         /* q4_0/q8_0 decode GEMV on repacked weights: prefetch distance */
    uint32_t qg_tile_tokens;   /* packed GEMM (AVX-512): tokens per register tile, 5 or 6 */
    uint32_t pf_kq;            /* q4_k/q6_k decode GEMV: prefetch distance into L2 (0: pf_bytes) */
} cpu_params;

#define CPU_PARAM_COUNT 9

/* One parameter: its name, the environment variable forcing it, its bounds. */
typedef struct {
    const char *name, *env;
    uint32_t min, max, multiple;
    const char *what; /* one line for `clara bench` and the docs */
} cpu_param_desc;

extern const cpu_param_desc cpu_param_table[CPU_PARAM_COUNT];

/* Detected once (cpuid; on other architectures only the core count). */
const cpu_info *cpu_info_get(void);

/* "zen4", "zen5", "intel-avx512", "intel-avx2", "other". */
const char *cpu_kind_name(cpu_kind k);

/* The parameters in use: the detected kind's defaults, then the environment (once). */
const cpu_params *cpu_params_get(void);

/* Parameter i's value in p, and where the value in use came from: "default for <kind>" or
 * "environment (NAME=value)" (static text, valid for the process). */
uint32_t cpu_param_value(const cpu_params *p, int i);
const char *cpu_param_source(int i);

/* The defaults of a kind (what cpu_params_get starts from). */
cpu_params cpu_params_default(cpu_kind k);

/* Parses an override of parameter i: a decimal integer within its bounds and a multiple of its
 * step. false (out untouched) otherwise. */
bool cpu_param_parse(int i, const char *s, uint32_t *out);

/* Replaces the parameters for the rest of the process (tests, benchmarks); false (nothing changed)
 * if a value is out of bounds. Not while a matmul runs on another thread. */
bool cpu_params_force(const cpu_params *p);

#endif
