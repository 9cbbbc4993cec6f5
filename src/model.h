/* model.h - the loaded model (internal view): hyperparameters, weight matrices bound to the
 * mmapped GGUF, LoRA adapters resolved by the adapter-loading policy, tokenizer, CLaRa settings. */
#ifndef CLARA_MODEL_H
#define CLARA_MODEL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "clara.h"
#include "base/threadpool.h"
#include "cpu/kctx.h"
#include "gguf.h"
#include "tokenizer.h"

/* A row-major matrix [rows][cols] of any supported type, pointing into the mapped file: the kernel
 * layer's matrix view itself, so the kernels take the engine's weights without a copy (and, for
 * q4_0 / q8_0 / q4_k / q6_k on AVX-512, a repacked copy: clara_model_repack). */
typedef cpu_mat clara_mat;

enum {
    CLARA_LIN_Q,
    CLARA_LIN_K,
    CLARA_LIN_V,
    CLARA_LIN_O,
    CLARA_LIN_GATE,
    CLARA_LIN_UP,
    CLARA_LIN_DOWN,
    CLARA_N_LIN
};

typedef struct {
    const float *attn_norm, *ffn_norm;
    clara_mat w[CLARA_N_LIN];
    /* GPTQ act-order imports: stored column j of w[l] holds input feature in_perm[l][j], so the
     * layer computes w · x[in_perm] (docs/FORMAT.md); NULL when the columns are in order. Owned
     * copies (indices must not change if the file does) */
    const int32_t *in_perm[CLARA_N_LIN];
} clara_layer;

/* One LoRA module: a [r][in], b [out][r]; absent modules have data == NULL (contribute 0). */
typedef struct {
    clara_mat a, b;
} clara_lora;

typedef struct {
    char name[64];
    uint32_t rank;
    float scale;      /* alpha / r */
    clara_lora *mods; /* [n_layer][CLARA_N_LIN]; NULL for a fresh (zero) adapter */
} clara_adapter;

/* The adapters active in one forward pass; their deltas are summed (PEFT with several active). */
#define CLARA_MAX_ACTIVE 4
typedef struct {
    const clara_adapter *a[CLARA_MAX_ACTIVE];
    int n;
} clara_adapter_set;

/* The same adapters in the same order (deltas are summed in list order: the order is in the
 * bits); NULL is the empty set. */
static inline bool clara_adapter_sets_equal(const clara_adapter_set *a,
                                            const clara_adapter_set *b) {
    int na = a ? a->n : 0, nb = b ? b->n : 0;
    if (na != nb) return false;
    for (int i = 0; i < na; i++)
        if (a->a[i] != b->a[i]) return false;
    return true;
}

typedef struct {
    uint32_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx;
    float rope_theta, rms_eps;
} clara_hparams;

typedef struct {
    uint32_t n_mem, doc_max_length, compr_rate, generation_top_k;
    bool sep, different_mem_tokens, pure_inference;
    char training_stage[32];
    int32_t *mem_ids; /* [n_mem] */
    int32_t enc_id, sep_id, ae_id, pad_id, bos_id, eos_id;
    const char *qa_system, *qa_user, *para_system;
    const char *para_templates[13];
} clara_meta;

#define CLARA_MAX_ADAPTERS 8

struct clara_model {
    gguf_ctx *gguf; /* the model file, or in two-file mode the CLaRa add-on */
    gguf_ctx *base; /* two-file mode: the base transformer GGUF (llama.cpp layout); else NULL */
    clara_hparams hp;
    clara_meta meta;
    clara_mat tok_embd, output;
    const float *output_norm;
    clara_layer *layers;
    bool has_in_perm; /* some layer has an input permutation (GPTQ act-order import) */
    clara_tokenizer *tok;
    clara_adapter file_adapters[CLARA_MAX_ADAPTERS]; /* as stored, file order */
    int n_file_adapters;
    clara_adapter fresh_decoder; /* zero adapter the hf policy adds for stage1_2 (spec §6) */
    /* the loaded set after the policy (pointers into file_adapters / fresh_decoder) */
    const clara_adapter *loaded[CLARA_MAX_ADAPTERS];
    int n_loaded;
    const clara_adapter *encoder, *decoder, *query; /* roles; NULL when absent */
    clara_adapter_policy policy;
    /* the q4_0 / q8_0 matrices repacked so far (model_repack.c): one arena per call that
     * repacked some, their total size, and the lock that makes contexts repack one at a time */
    uint8_t **lanes_arenas;
    size_t n_lanes_arenas, lanes_bytes;
    pthread_mutex_t repack_mu;
};

/* Repacks the q4_0 / q8_0 matrices of layers [0, cpu_layers) and the output matrix for the
 * AVX-512 kernels (cpu/repack.h), those not repacked yet, over pool, when those kernels are the
 * ones in use and CLARA_REPACK is not 0, and drops the file's pages they came from. A context calls
 * it for the layers it runs on the CPU, so layers only a GPU runs stay in the file alone. Out of
 * memory is not an error: the kernels then read the file's rows. A matrix a running context reads
 * on the CPU was repacked before that context existed, so no matrix changes under a reader. */
void clara_model_repack(clara_model *m, uint32_t cpu_layers, clara_pool *pool);
/* Bytes repacked so far (under the lock: another context may be repacking). */
uint64_t clara_model_repacked_bytes(clara_model *m);

/* Element size in bytes of the plain types a clara_mat may hold. */
size_t clara_mat_elem_size(clara_type t);

/* Whether the files the model maps are unchanged on disk since it was loaded (gguf_check_file on
 * each): a truncation or an in-place rewrite is CLARA_ERR_IO naming the file. Weights read since
 * then may be garbage; a caller that gets an error throws its results away and frees the model. */
clara_status clara_model_check_files(const clara_model *m);

#endif
