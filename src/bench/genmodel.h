/* genmodel.h - `clara bench --generate`: random-weight models of Mistral-7B's shape (or a ~1B or
 * tiny one) as the converter's two files: DIR/base.gguf (the transformer alone in llama.cpp's
 * layout, as `clara convert --base-only` writes it) and DIR/clara.gguf (the CLaRa add-on of an
 * Instruct compression-16 checkpoint, as `clara convert --addon-only` writes it). */
#ifndef CLARA_BENCH_GENMODEL_H
#define CLARA_BENCH_GENMODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "clara.h"

typedef struct {
    const char *shape;   /* "7b", "1b" or "tiny" */
    const char *type;    /* f32 f16 bf16, or a quantization mix (q4_0, q4_k_m, ...) */
    const char *out_dir; /* created if missing */
    uint64_t seed;
    bool progress; /* per-tensor progress on stderr */
} bench_gen_params;

/* True if `shape` names a known shape. */
bool bench_gen_shape_known(const char *shape);

/* Writes DIR/base.gguf and DIR/clara.gguf (each under a temporary name, renamed when complete).
 * Matrices, tables and LoRA A/B are ~N(0, 0.02), norms 1 + U(-0.1, 0.1), all from `seed`. A
 * quantization mix goes through a temporary bf16 file and `clara quantize`'s rules, as
 * `clara convert --type MIX` does. */
clara_status bench_generate(const bench_gen_params *p);

#endif
