/* fp16.c - IEEE 754 binary16 <-> binary32, bit-exact with round-to-nearest-even, including
 * subnormals, infinities and NaN (the conversion numpy's astype(float16) performs). */
#include "base/fp16.h"

float clara_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return clara_bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / NaN */
    if (exp == 0) {
        if (man == 0) return clara_bits_f32(sign); /* signed zero */
        /* subnormal: value = man * 2^-24, exact in f32 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return clara_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t clara_f32_to_f16(float f) {
    uint32_t u = clara_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t au = u & 0x7fffffffu;
    if (au > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((au >> 13) & 0x3ffu)); /* NaN */
    if (au >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (au < 0x38800000u) {
        /* result is subnormal or zero: value / 2^-24 rounded to nearest even integer */
        if (au < 0x33000000u) return sign; /* below half the smallest subnormal */
        uint32_t exp = au >> 23;
        uint32_t man = (au & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - exp; /* 14..24 bits to drop, result = man >> shift */
        uint32_t q = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    /* normal: rebias exponent, round mantissa from 23 to 10 bits (carry may bump exponent) */
    uint32_t r = au - 0x38000000u; /* exponent - 112 */
    uint32_t lsb = (r >> 13) & 1u;
    r += 0xfffu + lsb;
    return (uint16_t)(sign | (r >> 13));
}
