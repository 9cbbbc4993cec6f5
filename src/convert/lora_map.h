/* lora_map.h - the naming shared by the converter and the loader: Hugging Face module names of
 * the seven LoRA-targeted linear layers and their GGUF (llama.cpp) tensor names. */
#ifndef CLARA_CONVERT_LORA_MAP_H
#define CLARA_CONVERT_LORA_MAP_H

#include <stdint.h>

enum { CLARA_N_LINEAR = 7 };

typedef struct {
    const char *hf;   /* "self_attn.q_proj" */
    const char *gguf; /* "attn_q" */
} clara_linear_name;

extern const clara_linear_name clara_linear_names[CLARA_N_LINEAR];

/* The adapters CLaRa defines (spec §2.4), in the order the converter writes them. */
enum { CLARA_N_ADAPTER_KINDS = 3 };
extern const char *const clara_adapter_names[CLARA_N_ADAPTER_KINDS];

#endif
