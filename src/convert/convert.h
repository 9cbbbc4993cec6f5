/* convert.h - `clara convert`: a Hugging Face CLaRa checkpoint (base Mistral repository + CLaRa
 * subfolder) to one self-contained GGUF file. docs/FORMAT.md lists every key and tensor. */
#ifndef CLARA_CONVERT_CONVERT_H
#define CLARA_CONVERT_CONVERT_H

#include <stdbool.h>

#include "clara.h"

/* What goes into the output file. */
typedef enum {
    CLARA_CONVERT_FULL = 0,  /* one self-contained model file (the default) */
    CLARA_CONVERT_ADDON = 1, /* CLaRa's parts only: adapters, resized tables, vocabulary, settings;
                                pairs with any GGUF of the base model (two-file mode) */
    CLARA_CONVERT_BASE = 2,  /* the base model alone in llama.cpp's layout (no CLaRa parts) */
} clara_convert_mode;

typedef struct {
    /* Mistral-7B-Instruct-v0.2 repository (config, safetensors, tokenizer). With
     * mode == CLARA_CONVERT_ADDON it may instead name a base model GGUF file in llama.cpp's layout
     * (magic "GGUF"; general.architecture "llama", llama.*, tokenizer.ggml.* keys; any tensor
     * types): the settings and vocabulary are read from its metadata (convert/gguf_base.c) and the
     * add-on equals the one converted from the directory (but for clara.tokenizer.source). A GGUF
     * base with any other mode is an error. */
    const char *base_dir;
    const char
        *clara_dir; /* CLaRa subfolder (config.json, adapters.pth, decoder_first_last_layers.pth) */
    const char *out_path;
    clara_type type; /* f32, f16 or bf16 for the matrices; norms are always f32 */
    bool progress;   /* per-tensor progress on stderr */
    clara_convert_mode mode;
} clara_convert_params;

clara_convert_params clara_convert_default_params(void);
clara_status clara_convert(const clara_convert_params *p);

#endif
