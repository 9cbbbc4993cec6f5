/* dispatch.c - instruction-set detection (cpuid leaves 1 and 7, XGETBV for the OS-enabled
 * register state) and the process-wide kernel level, including the CLARA_ISA override; AMX
 * (which Linux hands out per process, on request) and its CLARA_AMX override. */
#include "cpu/dispatch.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define CLARA_X86 1
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define CLARA_AMX_LINUX 1
#endif

static clara_cpu_features g_feat;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static _Atomic int g_level = -1;
static _Atomic int g_amx = -1; /* AMX in use: -1 not decided yet, then 0 or 1 */

#ifdef CLARA_X86
/* XCR0 through XGETBV, encoded as bytes so no -mxsave flag is needed for this file. */
static unsigned long long read_xcr0(void) {
    unsigned int lo, hi;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static void detect_x86(clara_cpu_features *f) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    bool osxsave = c >> 27 & 1, fma = c >> 12 & 1, f16c = c >> 29 & 1, avx = c >> 28 & 1;
    if (!osxsave || !avx) return;
    unsigned long long xcr0 = read_xcr0();
    bool ymm_os = (xcr0 & 0x6) == 0x6;   /* SSE + AVX state */
    bool zmm_os = (xcr0 & 0xe6) == 0xe6; /* + opmask, ZMM_Hi256, Hi16_ZMM */
    if (!ymm_os) return;
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    f->avx2 = b >> 5 & 1;
    f->fma = fma;
    f->f16c = f16c;
    if (zmm_os) {
        f->avx512f = b >> 16 & 1;
        f->avx512bw = b >> 30 & 1;
        f->avx512vl = b >> 31 & 1;
        f->avx512vnni = c >> 11 & 1;
    }
    unsigned int a1, b1, c1, d1;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    (void)b1, (void)c1, (void)d1;
    f->avx_vnni = a1 >> 4 & 1;
    f->avx512bf16 = zmm_os && (a1 >> 5 & 1);
    /* AMX: the tiles (EDX bit 24) and their int8 products (bit 25), with the OS saving the tile
     * configuration and data (XCR0 bits 17 and 18) */
    f->amx_int8 = zmm_os && (d >> 24 & 1) && (d >> 25 & 1) && (xcr0 & 0x60000) == 0x60000;
}
#endif

/* Linux gives a process the (8 KB) tile data state only when it asks (arch_prctl
 * ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); a tile instruction without it faults. */
static bool amx_permitted(void) {
#ifdef CLARA_AMX_LINUX
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
#else
    return false;
#endif
}

/* Works on g_feat directly: also called from init_once, inside the pthread_once. */
static bool supported(clara_isa isa) {
    const clara_cpu_features *f = &g_feat;
    switch (isa) {
    case CLARA_ISA_REF:
        return true;
    case CLARA_ISA_AVX2:
        return f->avx2 && f->fma && f->f16c;
    case CLARA_ISA_AVX512:
        return f->avx512f && f->avx512bw && f->avx512vl && f->fma && f->f16c;
    default:
        return false;
    }
}

/* The highest supported level not above `want`. */
static clara_isa clamp_level(clara_isa want) {
    for (int l = want; l > 0; l--)
        if (supported((clara_isa)l)) return (clara_isa)l;
    return CLARA_ISA_REF;
}

static void init_once(void) {
#ifdef CLARA_X86
    detect_x86(&g_feat);
#endif
    clara_isa level = clamp_level(CLARA_ISA_AVX512);
    const char *env = getenv("CLARA_ISA");
    if (env && *env) {
        int want = clara_isa_parse(env);
        if (want < 0) {
            CLARA_LOGW("CLARA_ISA=%s is not one of ref, avx2, avx512; using %s", env,
                       clara_isa_name(level));
        } else if (!supported((clara_isa)want)) {
            level = clamp_level((clara_isa)want);
            CLARA_LOGW("CLARA_ISA=%s: this CPU lacks it; falling back to %s", env,
                       clara_isa_name(level));
        } else {
            level = (clara_isa)want;
        }
    }
    atomic_store(&g_level, (int)level);
    if (g_feat.amx_int8 && !amx_permitted()) {
        g_feat.amx_int8 = false;
        CLARA_LOGI("this CPU has AMX but the kernel did not grant its state; not using it");
    }
    const char *amx = getenv("CLARA_AMX");
    bool want = !amx || !*amx || strcmp(amx, "0") != 0;
    if (amx && *amx && strcmp(amx, "0") != 0 && strcmp(amx, "1") != 0)
        CLARA_LOGW("CLARA_AMX=%s is not 0 or 1; using %d", amx, g_feat.amx_int8);
    else if (want && amx && *amx && !g_feat.amx_int8)
        CLARA_LOGW("CLARA_AMX=1: this CPU (or its kernel) lacks AMX; not using it");
    atomic_store(&g_amx, want && g_feat.amx_int8);
}

const clara_cpu_features *clara_cpu_get_features(void) {
    pthread_once(&g_once, init_once);
    return &g_feat;
}

bool clara_isa_supported(clara_isa isa) {
    pthread_once(&g_once, init_once);
    return supported(isa);
}

clara_isa clara_isa_best(void) {
    pthread_once(&g_once, init_once);
    return clamp_level(CLARA_ISA_AVX512);
}

clara_isa clara_isa_active(void) {
    int l = atomic_load_explicit(&g_level, memory_order_relaxed);
    if (l >= 0) return (clara_isa)l;
    pthread_once(&g_once, init_once);
    return (clara_isa)atomic_load(&g_level);
}

clara_isa clara_isa_force(clara_isa isa) {
    pthread_once(&g_once, init_once);
    clara_isa l = clamp_level(isa < CLARA_ISA_COUNT ? isa : CLARA_ISA_REF);
    atomic_store(&g_level, (int)l);
    return l;
}

const char *clara_isa_name(clara_isa isa) {
    static const char *const names[] = {"ref", "avx2", "avx512"};
    return (unsigned)isa < CLARA_ISA_COUNT ? names[isa] : "?";
}

int clara_isa_parse(const char *s) {
    for (int l = 0; l < CLARA_ISA_COUNT; l++)
        if (strcasecmp(s, clara_isa_name((clara_isa)l)) == 0) return l;
    return -1;
}

bool clara_amx_active(void) {
    int a = atomic_load_explicit(&g_amx, memory_order_relaxed);
    if (a >= 0) return a && clara_isa_active() == CLARA_ISA_AVX512;
    pthread_once(&g_once, init_once);
    return atomic_load(&g_amx) && clara_isa_active() == CLARA_ISA_AVX512;
}

bool clara_amx_force(bool on) {
    pthread_once(&g_once, init_once);
    atomic_store(&g_amx, on && g_feat.amx_int8);
    return on && g_feat.amx_int8;
}
