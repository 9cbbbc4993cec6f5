/* convert_internal.h - state shared by the converter's parts (convert.c: inputs and plan,
 * convert_meta.c: GGUF metadata, convert_lora.c: adapters, convert_write.c: streaming). */
#ifndef CLARA_CONVERT_INTERNAL_H
#define CLARA_CONVERT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "convert/convert.h"
#include "convert/hf_config.h"
#include "convert/hf_tokenizer.h"
#include "convert/lora_map.h"
#include "convert/safetensors.h"
#include "convert/torch_pickle.h"
#include "gguf.h"

/* One tensor to write: where its values come from and how they are transformed. */
typedef struct {
    char name[96];         /* GGUF tensor name */
    clara_type out_type;   /* type written */
    uint32_t n_dims;       /* 1 or 2 */
    uint64_t ne[2];        /* GGUF order: ne[0] = columns (contiguous), ne[1] = rows */
    clara_type src_type;   /* f32, f16 or bf16 */
    const uint8_t *src;    /* row-major rows x cols; NULL for a strided .pth tensor (see pth) */
    const pth_tensor *pth; /* set when the source must be materialised with pth_tensor_copy */
    const char *src_desc;  /* "<file>: <tensor>" for messages */
    uint32_t
        permute_heads; /* >0: rows are HF q/k order for that many heads; write llama.cpp order */
    const struct gq_linear *gq; /* set: pre-quantized GPTQ/AWQ source, written by gptq_awq.c */
} conv_entry;

typedef struct {
    char name[64]; /* adapter name as in adapters.pth */
    uint32_t rank; /* LoRA r, from the tensor shapes */
    uint32_t n_modules_present, n_modules_missing;
} conv_adapter;

#define CONV_MAX_ADAPTERS 8

typedef struct {
    clara_convert_params p;
    clara_base_config base;
    clara_clara_config cc;
    clara_hf_tokenizer tok;
    st_model *st;
    gguf_ctx *base_gguf; /* --addon-only from a base GGUF (gguf_base.c) instead of st */
    pth_file *tables;    /* decoder_first_last_layers.pth */
    pth_file *adapters;  /* adapters.pth */
    char tables_path[4096], adapters_path[4096];
    char st_source[4200];   /* the index (or model.safetensors) naming the base tensors */
    uint32_t n_base_vocab;  /* tokens in the base tokenizer (len(tokenizer)) */
    uint32_t n_clara_added; /* CLaRa's added tokens (spec §3.1) */
    conv_entry *entries;
    size_t n_entries, cap_entries;
    conv_adapter adapter[CONV_MAX_ADAPTERS];
    size_t n_adapters;
    gguf_writer *w;
    struct gq_state *gq; /* GPTQ/AWQ import state (gptq_awq.c); NULL for a float base */
} conv_ctx;

clara_status conv_add_entry(conv_ctx *c, const conv_entry *e);
clara_status conv_plan_adapters(conv_ctx *c);
clara_status conv_write_metadata(conv_ctx *c);
clara_status conv_write_tensors(conv_ctx *c);

/* Copies s into buf with control characters escaped as \xNN (truncating to cap), for names read
 * from the input files that go into one-line messages; returns buf. */
const char *conv_printable(const char *s, char *buf, size_t cap);

/* GGUF file type (llama_ftype) for a conversion type, as llama.cpp records it. */
uint32_t conv_file_type(clara_type t);

#endif
