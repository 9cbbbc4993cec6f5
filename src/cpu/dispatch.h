/* dispatch.h - the CPU instruction-set level the kernels use, chosen once at start from cpuid and
 * XGETBV (the OS must save the wide registers, not just the CPU have them), and overridable with
 * the environment variable CLARA_ISA=ref|avx2|avx512 (a level the machine lacks falls back to the
 * best one it has, with a warning) or, for tests and benchmarks, with clara_isa_force(). */
#ifndef CLARA_CPU_DISPATCH_H
#define CLARA_CPU_DISPATCH_H

#include <stdbool.h>

typedef enum {
    CLARA_ISA_REF = 0,    /* portable scalar C: the reference every SIMD path is tested against */
    CLARA_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    CLARA_ISA_AVX512 = 2, /* AVX-512 F + BW + VL (+ F16C, FMA) */
    CLARA_ISA_COUNT = 3,
} clara_isa;

/* Feature flags found at start (independent of any forced level). */
typedef struct {
    bool avx2, fma, f16c;                  /* with OS support for the ymm state */
    bool avx512f, avx512bw, avx512vl;      /* with OS support for the zmm/opmask state */
    bool avx512vnni, avx512bf16, avx_vnni; /* recorded; VNNI is used by the integer kernels */
    bool amx_int8;                         /* AMX tiles with int8 products, granted by the OS */
} clara_cpu_features;

const clara_cpu_features *clara_cpu_get_features(void);

/* True if this machine can run kernels of level `isa`. */
bool clara_isa_supported(clara_isa isa);

/* The best level this machine supports. */
clara_isa clara_isa_best(void);

/* The level in use: CLARA_ISA from the environment (read once, on the first call) or the best. */
clara_isa clara_isa_active(void);

/* Forces the level for the rest of the process (tests, benchmarks); a level the machine lacks is
 * lowered to the best supported one. Returns the level now in use. Not for use while a matmul is
 * running on another thread. */
clara_isa clara_isa_force(clara_isa isa);

/* Whether the q4_0 / q8_0 decode GEMV runs on AMX tiles: at the avx512 level, on a CPU with
 * AMX-INT8 that the OS lets this process use, unless CLARA_AMX=0 (read once). The outputs have
 * the same bits either way; only the speed differs. */
bool clara_amx_active(void);

/* Turns AMX on or off for the rest of the process (tests, benchmarks); on is refused (false
 * returned) where the CPU or the OS lacks it. Not while a matmul runs on another thread. */
bool clara_amx_force(bool on);

/* "ref", "avx2", "avx512" (what the server reports); "?" for an invalid value. */
const char *clara_isa_name(clara_isa isa);

/* Parses a level name (case-insensitive); -1 if unknown. */
int clara_isa_parse(const char *s);

#endif
