/* amx.c - which tile configuration each thread's AMX tiles hold (amx.h). Compiled for AMX
 * (Makefile flags; the pragma covers builds with common flags). */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("amx-tile"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("amx-tile")
#endif

#include <immintrin.h>

#include "cpu/amx.h"

static _Thread_local uint32_t g_tiles; /* the key of what this thread's tiles hold; 0: nothing */

bool cpu_amx_tiles_hold(uint32_t key) {
    return g_tiles == key;
}

void cpu_amx_tiles_use(const cpu_tile_config *c, uint32_t key) {
    if (g_tiles == key) return;
    /* GCC does not count the whole struct as read by the ldtilecfg builtin and drops stores to
     * it; an empty asm that reads it keeps them */
    __asm__ volatile("" : : "m"(*c));
    _tile_loadconfig(c);
    g_tiles = key;
}

#if defined(__clang__)
#pragma clang attribute pop
#endif
