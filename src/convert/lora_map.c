/* lora_map.c - HF <-> GGUF names of the linear layers LoRA targets. */
#include "convert/lora_map.h"

const clara_linear_name clara_linear_names[CLARA_N_LINEAR] = {
    {"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"}, {"self_attn.o_proj", "attn_output"},
    {"mlp.gate_proj", "ffn_gate"},  {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},
};

const char *const clara_adapter_names[CLARA_N_ADAPTER_KINDS] = {
    "encoder_adapter", "decoder_adapter", "query_reasoner_adapter"};
