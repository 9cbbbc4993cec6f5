/* modelinfo.h - what `clara bench` needs to turn times into fractions of the machine's limits,
 * read from the GGUF file(s) themselves: the weight type, the multiply-adds per token of the
 * linear layers and of the encoder's LoRA, the attention width, and the bytes decoding reads per
 * token. Formulas: docs/PERFORMANCE.md. */
#ifndef CLARA_BENCH_MODELINFO_H
#define CLARA_BENCH_MODELINFO_H

#include <stdbool.h>
#include <stdint.h>

#include "clara.h"

typedef struct {
    char weight_type[16]; /* llama.cpp file type name ("q4_0", "q4_k_m", "f16", ...) */
    bool quantized;       /* the linear weights are mostly a block type */
    uint32_t n_layer;     /* layers (blk.N.attn_q tensors) */
    uint32_t q_out;       /* query width: heads x head dimension */
    uint32_t n_mem;       /* memory tokens per document (clara.n_mem) */
    uint32_t doc_max_len; /* document token budget (clara.doc_max_length) */
    double linear_params; /* elements of the blk.N.* weight matrices */
    double lora_params;   /* elements of the encoder_adapter's LoRA matrices */
    double decode_bytes;  /* bytes of the blk.N.* weight matrices plus output.weight */
} bench_model_info;

/* `primary` is the model file (or the add-on in two-file mode), `base` the base GGUF or NULL. */
clara_status bench_model_info_read(const char *primary, const char *base, bench_model_info *out);

/* FLOPs of compressing one document whose encoder row has n_tokens tokens: its n_tokens + n_mem
 * rows through every linear layer and the encoder LoRA, plus causal attention over the row. */
double bench_compress_flops(const bench_model_info *mi, uint32_t n_tokens);

#endif
