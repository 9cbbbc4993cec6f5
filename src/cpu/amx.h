/* amx.h - the tile configuration shared by the AMX kernels (gemv_amx.c, qgemm_amx.c). A thread's
 * tiles hold one configuration at a time; each kernel names its own with a key and reloads it
 * only when the thread's tiles hold another (ldtilecfg is not free, and kernels of both kinds run
 * on the same pool threads). Only files compiled for AMX call these. */
#ifndef CLARA_CPU_AMX_H
#define CLARA_CPU_AMX_H

#include <stdbool.h>
#include <stdint.h>

/* ldtilecfg's 64-byte operand (palette 1: up to 16 rows of up to 64 bytes per tile). */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} cpu_tile_config;

/* Keys: the decode GEMV's configuration for n activation rows is n (1..16). */
#define CPU_AMX_TILES_QGEMM 0x100u

/* Loads c into the calling thread's tiles unless they hold key's configuration already. */
void cpu_amx_tiles_use(const cpu_tile_config *c, uint32_t key);

/* Whether the calling thread's tiles hold key's configuration (to skip building it). */
bool cpu_amx_tiles_hold(uint32_t key);

#endif
