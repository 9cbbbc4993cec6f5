/* gptq_awq.h - import of pre-quantized base checkpoints (GPTQ v1/v2 and AWQ GEMM, safetensors) into
 * GGUF block types without re-quantizing: every linear layer's integer codes, f16 scales and zero
 * points are repacked into the block type that holds them exactly (docs/FORMAT.md, "Quantized
 * bases"):
 *
 *   4-bit, every zero point = 8      -> q4_0  d = scale, codes unchanged           (exact)
 *   4-bit, other zero points         -> q4_1  d = scale, m = f16(-scale * zero)      (m rounded)
 *   8-bit, every zero point = 128    -> q8_0  d = scale, q - 128 as int8             (exact)
 *   8-bit, other zero points         -> q8_z  d = scale, z = zero, codes unchanged   (exact; a
 *                                       CLaRa type, id 64: f16 d, u16 z, u8 qs[32], w = d(q - z))
 *
 * Act-order checkpoints (desc_act, g_idx not ascending) have groups that are not contiguous along
 * the input dimension; their input columns are stored sorted by group (stable), which makes every
 * group contiguous again, and the permutation is written beside the weight as
 * `clara.blk.N.<linear>.in_perm` (i32 [in]): stored column j holds input feature in_perm[j], so
 * y = W x is computed as W_stored . x[in_perm]. The q/k output-row permutation of convert_write.c
 * is applied to whole rows of blocks, which is exact.
 *
 * Formats (public sources, facts only; cited where used in gptq_awq.c):
 *   GPTQ  qweight i32 [in / (32/bits), out]: code of (i, o) in bits bits*(i % pack) of
 *         qweight[i / pack][o] (packed along the input dimension, low bits first);
 *         qzeros i32 [n_groups, out / pack]: zero of (g, o) in bits bits*(o % pack) of
 *         qzeros[g][o / pack]; scales f16 [n_groups, out]; g_idx i32 [in] (group of each input
 *         column; i / group_size when absent); n_groups = ceil(in / group_size).
 *         v1 ("gptq") stores zero - 1, so zero = stored + 1; v2 ("gptq_v2") stores the zero.
 *         w[o][i] = scales[g][o] * (q[i][o] - zero[g][o]), g = g_idx[i].
 *   AWQ   (version "gemm") qweight i32 [in, out / 8], qzeros i32 [n_groups, out / 8], both packed
 *         along the OUTPUT dimension with nibble k of word c holding column 8c + order[k],
 *         order = {0, 2, 4, 6, 1, 3, 5, 7}; scales f16 [n_groups, out]; w = scales * (q - zero). */
#ifndef CLARA_CONVERT_GPTQ_AWQ_H
#define CLARA_CONVERT_GPTQ_AWQ_H

#include <stdbool.h>
#include <stdint.h>

#include "convert/convert_internal.h"

/* True when the base checkpoint stores linear layer `hf_module` (e.g. "self_attn.q_proj") of
 * layer `layer` as packed integers (a `.qweight` tensor exists). */
bool gq_is_quantized(const conv_ctx *c, uint32_t layer, const char *hf_module);

/* Validates the quantized tensors of one linear layer ([rows = out, cols = in] in HF order)
 * against config.json's quantization_config and the base config, and plans the GGUF weight
 * `gguf_name` (plus its in_perm tensor for act-order). Errors name the file and tensor. */
clara_status gq_plan_linear(conv_ctx *c, uint32_t layer, const char *hf_module,
                            const char *gguf_name, uint64_t rows, uint64_t cols,
                            uint32_t permute_heads);

/* Streams one planned entry (e->gq set) into c->w. */
clara_status gq_write_entry(conv_ctx *c, const conv_entry *e);

/* After conv_write_metadata: general.file_type from the block types used, and the
 * clara.quantization.* keys (docs/FORMAT.md). No-op for a float base. */
clara_status gq_write_metadata(conv_ctx *c);

void gq_free(struct gq_state *g);

/* Dequantizes n (a multiple of 32) elements of CLARA_TYPE_Q8_Z blocks: y = d * (q - z). */
void gq_dequantize_q8_z(const void *src, uint64_t n, float *y);

#endif
