/* fp16.h - exact conversions between f32 and the 16-bit float formats (IEEE half, bfloat16).
 * Rounding is to nearest, ties to even, as numpy and PyTorch do; NaN stays NaN. */
#ifndef CLARA_BASE_FP16_H
#define CLARA_BASE_FP16_H

#include <stdint.h>
#include <string.h>

static inline uint32_t clara_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float clara_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float clara_bf16_to_f32(uint16_t h) {
    return clara_bits_f32((uint32_t)h << 16);
}

static inline uint16_t clara_f32_to_bf16(float f) {
    uint32_t u = clara_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float clara_f16_to_f32(uint16_t h);
uint16_t clara_f32_to_f16(float f);

/* An f16 / f32 stored little-endian at p (the block formats of quant.h, GGUF data). */
static inline float clara_f16_le(const uint8_t *p) {
    return clara_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

static inline float clara_f32_le(const uint8_t *p) {
    return clara_bits_f32((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                          (uint32_t)p[3] << 24);
}

#endif
