/* quantize.h - `clara quantize`: rewrites a GGUF file with its 2-D weight matrices in a block
 * type, choosing per-tensor types the way llama.cpp's quantizer does for the same file type. */
#ifndef CLARA_QUANTIZE_H
#define CLARA_QUANTIZE_H

#include <stdbool.h>
#include <stdio.h>

#include "clara.h"

typedef struct {
    bool keep_embeddings_f16; /* token_embd.weight stored as f16 instead of the mix's type */
    FILE *progress;           /* per-tensor lines and the summary; NULL for none */
} clara_quantize_opts;

/* llama.cpp's general.file_type for a mix name ("q4_k_m" -> 15), or -1 if unknown. Mixes:
 * q4_0 q4_1 q5_0 q5_1 q8_0 q4_k_m q5_k_m q6_k. */
int clara_quantize_ftype(const char *mix);

/* Reads in_path, writes out_path (atomically) with the mix applied:
 *  - kept as they are: tensors whose name starts with "clara." (LoRA adapters and CLaRa's own
 *    tables), 1-D tensors (norms), names not ending in "weight", tensors not f32/f16/bf16;
 *  - output.weight: q6_k (q8_0 if its rows are not a multiple of 256, or for the q8_0 mix);
 *  - for q4_k_m/q5_k_m, attn_v.weight and ffn_down.weight in the layers picked by llama.cpp's
 *    use_more_bits (first and last eighth, and every third in between): q6_k;
 *  - everything else: the mix's base type; token_embd.weight too unless keep_embeddings_f16;
 *  - rows not a multiple of 256 fall back as llama.cpp does (q4_k -> q5_0, q5_k -> q5_1,
 *    q6_k -> q8_0, then f16 if still incompatible); rows not a multiple of 32 for a 32-block
 *    type stay in their type (llama.cpp refuses those files).
 * All metadata is copied, with general.file_type and general.quantization_version = 2 set. */
clara_status clara_quantize_file(const char *in_path, const char *out_path, const char *mix,
                                 const clara_quantize_opts *opts);

#endif
