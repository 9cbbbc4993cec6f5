/* ops.h - the compute operations of the Vulkan backend, each the device twin of a CPU kernel
 * (its reference): matmul (clara_matmul / kernels_ref.c's float dot), RMSNorm, SwiGLU and RoPE
 * (forward.c's). Operands are device buffers (device.h) laid out as the CPU kernels lay out their
 * arrays; each call runs and waits. Shapes the shaders do not take are CLARA_ERR_INVALID_ARG or
 * CLARA_ERR_UNSUPPORTED, never a wrong answer. */
#ifndef CLARA_VULKAN_OPS_H
#define CLARA_VULKAN_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "clara.h"
#include "vulkan/device.h"

/* Weight types the matmul shader takes: f32, f16, bf16 and the block types the converters and
 * `clara quantize` write (q8_0, q4_0, q4_1, q5_0, q5_1, q8_z, q4_k, q5_k, q6_k). */
bool clvk_matmul_supports(clara_type t);

/* y[t][r] = dot(W row r, x row t) for r < rows, t < n (or y += alpha * dot when accumulate):
 * W holds rows x cols of type t (rows of whole blocks), x is f32 [n][cols], y f32 [n][rows].
 * Quantized rows are dequantized exactly (as clara_dequantize_row does) and multiplied with the
 * f32 activations (no activation quantization, unlike the CPU's integer kernels). */
clara_status clvk_matmul(clvk_dev *d, clvk_buf *W, clara_type t, uint64_t rows, uint64_t cols,
                         clvk_buf *x, uint32_t n, clvk_buf *y, bool accumulate, float alpha);

/* out[r] = w * x[r] / sqrt(mean(x[r]^2) + eps) for rows of width n (x, out [rows][n], w [n]). */
clara_status clvk_rmsnorm(clvk_dev *d, clvk_buf *x, clvk_buf *w, clvk_buf *out, uint32_t rows,
                          uint32_t n, float eps);

/* gate[i] = silu(gate[i]) * up[i] for i < n, in place. */
clara_status clvk_swiglu(clvk_dev *d, clvk_buf *gate, clvk_buf *up, uint64_t n);

/* Rotates v [rows][n_heads][head_dim] in place: pairs (2i, 2i+1) of each head of row r by the
 * angle whose (cos, sin) is cs[r][i] (cs: f32 [rows][head_dim / 2][2], made by the host). */
clara_status clvk_rope(clvk_dev *d, clvk_buf *v, clvk_buf *cs, uint32_t rows, uint32_t n_heads,
                       uint32_t head_dim);

#endif
