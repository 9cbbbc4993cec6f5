/* quant.h - reference (scalar) quantization and dequantization of GGUF's standard block types,
 * bit-compatible with the blocks ggml/llama.cpp write: q4_0, q4_1, q5_0, q5_1, q8_0, q8_1 (32
 * elements per block) and the K-quants q4_k, q5_k, q6_k, q8_k (256-element super-blocks).
 *
 * The block layouts (all multi-byte fields little-endian; "f16" is an IEEE half):
 *   q4_0  f16 d; u8 qs[16]            x[j] = d*((qs[j]&15)-8), x[j+16] = d*((qs[j]>>4)-8)
 *   q4_1  f16 d, m; u8 qs[16]         x = d*q + m, nibbles as q4_0
 *   q5_0  f16 d; u8 qh[4]; u8 qs[16]  qh is a u32: bit j is bit 4 of element j (j < 32)
 *                                      x = d*(q-16)
 *   q5_1  f16 d, m; u8 qh[4]; qs[16]  x = d*q + m
 *   q8_0  f16 d; i8 qs[32]            x = d*q
 *   q8_1  f16 d, s; i8 qs[32]         s = d*sum(q) (used by the q4_1/q5_1 dot products)
 *   q4_k  f16 d, dmin; u8 scales[12]; u8 qs[128]
 *         8 sub-blocks of 32, each with a 6-bit scale sc and min m: x = d*sc*q - dmin*m.
 *         scales packing, j = sub-block: j < 4: sc = s[j]&63, m = s[j+4]&63; j >= 4:
 *         sc = (s[j+4]&15) | (s[j-4]>>6)<<4, m = (s[j+4]>>4) | (s[j]>>6)<<4.
 *         qs: each 64-element chunk c uses 32 bytes: low nibbles are elements 64c..64c+31, high
 *         nibbles 64c+32..64c+63.
 *   q5_k  f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]: as q4_k plus a 5th bit: element
 *         64c+l (l < 32) takes bit 2c of qh[l], element 64c+32+l bit 2c+1.
 *   q6_k  u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d. 16 sub-blocks of 16: x = d*sc*(q-32).
 *         Each 128-element half h uses ql[64h..], qh[32h..]: for l < 32, element 128h+l is
 *         ql[l]&15 | (qh[l]&3)<<4, +32: ql[l+32]&15 | ((qh[l]>>2)&3)<<4, +64: ql[l]>>4 |
 *         ((qh[l]>>4)&3)<<4, +96: ql[l+32]>>4 | (qh[l]>>6)<<4.
 *   q8_k  f32 d; i8 qs[256]; i16 bsums[16] (sums of 16 consecutive qs): x = d*q.
 *
 * The quantizers follow llama.cpp's reference algorithms (ggml-quants.c, "_ref" functions), so
 * they give the same bytes for ordinary inputs: q8_0 d = amax/127, q = round(x/d) (half away from
 * zero); q4_0/q5_0 d = m/-8 (m/-16) where m is the signed value of largest magnitude; q4_1/q5_1
 * d = (max-min)/15 (/31) with min stored; q4_k/q5_k choose each sub-block's scale and min by a
 * weighted least-squares search over 21 (16) candidate scales (llama.cpp's make_qkx2_quants,
 * weights av|x| + |x_i|), quantize them to 6 bits against the super-block maxima and requantize
 * with the stored scales; q6_k searches 19 candidate scales per 16 elements with x^2 weights
 * (make_qx_quants), stores 8-bit scales against d = max_scale/-128 and requantizes.
 * Non-finite inputs are rejected; so are inputs whose f16 block scale would overflow. */
#ifndef CLARA_QUANT_H
#define CLARA_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "clara.h"

#define CLARA_QK   32  /* elements per block of the q4_0 .. q8_1 types */
#define CLARA_QK_K 256 /* elements per K-quant super-block */

/* True for the types clara_quantize_row/clara_dequantize_row handle: f32, f16, bf16 and the
 * block types listed above. */
bool clara_quant_supported(clara_type t);
/* Types clara_dequantize_row reads: the above plus q8_z (GPTQ 8-bit asymmetric imports, which
 * are never produced by quantizing). */
bool clara_dequant_supported(clara_type t);

/* Converts n floats to type t into dst (exactly clara_type_row_bytes(t, n) bytes). Fails with
 * CLARA_ERR_INVALID_ARG (message names `name`) if the type is not supported, n is not a multiple
 * of its block size, an input is NaN or infinite, or a block's f16 scale would overflow. */
clara_status clara_quantize_row(clara_type t, const float *x, uint64_t n, void *dst,
                                const char *name);

/* Converts n elements of type t at src to f32. Any bytes are accepted: f16 scales that are
 * inf/NaN just give inf/NaN outputs. Fails only for an unsupported type or a bad n. */
clara_status clara_dequantize_row(clara_type t, const void *src, uint64_t n, float *y);

/* llama.cpp's nearest_int: round to nearest, ties to even; here also total (values beyond
 * +-4194303, and NaN, are clamped) so that no float-to-int conversion is ever undefined. */
int clara_nearest_int(float v);

#endif
