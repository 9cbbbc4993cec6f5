/* hf_tokenizer.h - readers for the Hugging Face tokenizer files of Mistral-7B-Instruct-v0.2
 * (spec §3, §8.2): tokenizer.json (the "fast" tokenizer, BPE model), tokenizer.model (the
 * SentencePiece ModelProto, used when tokenizer.json is absent) and tokenizer_config.json (chat
 * template, special tokens, add_bos/add_eos).
 *
 * The result is what the GGUF converter needs for llama.cpp's tokenizer keys
 * (tokenizer.ggml.model "llama", .tokens, .scores, .token_type, .merges, .bos_token_id, ...,
 * .add_bos_token, .add_eos_token, tokenizer.chat_template). This is a reader only: encoding is
 * done by src/tokenizer.c from the GGUF. Every parser works on a (pointer, length) pair and fails
 * with a one-line message naming the file and the problem. */
#ifndef CLARA_CONVERT_HF_TOKENIZER_H
#define CLARA_CONVERT_HF_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clara.h"

/* llama.cpp's token types (gguf-py TokenType, llama_token_type), stored in
 * tokenizer.ggml.token_type; the values equal SentencePiece's ModelProto.SentencePiece.Type. */
enum {
    CLARA_TOKTYPE_NORMAL = 1,
    CLARA_TOKTYPE_UNKNOWN = 2,
    CLARA_TOKTYPE_CONTROL = 3,
    CLARA_TOKTYPE_USER_DEFINED = 4,
    CLARA_TOKTYPE_UNUSED = 5,
    CLARA_TOKTYPE_BYTE = 6,
};

/* Safety limits for untrusted files (Mistral: 32000 tokens, 58980 merges, 1.8 MB json). */
#define CLARA_TOK_MAX_VOCAB      (1u << 22)
#define CLARA_TOK_MAX_PIECE      4096u /* bytes of one token */
#define CLARA_TOK_MAX_MERGES     (1u << 24)
#define CLARA_TOK_MAX_JSON_BYTES ((size_t)64 << 20)
#define CLARA_TOK_MAX_SPM_BYTES  ((size_t)64 << 20)
#define CLARA_TOK_MAX_CFG_BYTES  ((size_t)16 << 20)

/* Where the "▁" word-boundary marker comes from. */
typedef enum {
    /* normalizer Sequence[Prepend("▁"), Replace(" " -> "▁")], no pre-tokenizer: the Mistral v0.2
     * layout (spec §3.2); also every tokenizer.model (SentencePiece add_dummy_prefix). */
    CLARA_NORM_LEGACY = 0,
    /* no normalizer; pre_tokenizer Metaspace(replacement "▁", prepend_scheme, split) */
    CLARA_NORM_METASPACE = 1,
} clara_norm_flavour;

/* When "▁" is prepended. LEGACY: ALWAYS (to every segment between added tokens) or NEVER (no
 * Prepend normalizer / add_dummy_prefix false). METASPACE: as its prepend_scheme says. */
typedef enum {
    CLARA_PREPEND_NEVER = 0,
    CLARA_PREPEND_FIRST = 1,
    CLARA_PREPEND_ALWAYS = 2,
} clara_prepend_scheme;

typedef struct {
    char *content;
    uint32_t id;
    bool special, lstrip, rstrip, normalized, single_word;
} clara_added_token;

typedef struct {
    /* indexed by id, dense 0..n_vocab-1 (model vocabulary plus added tokens that extend it) */
    uint32_t n_vocab;
    char **tokens;
    float *scores;
    int32_t *token_types; /* CLARA_TOKTYPE_* */
    /* "left right" as llama.cpp stores them, rank 0 first. tokenizer.json: model.merges;
     * tokenizer.model: derived like transformers' SentencePieceExtractor (see spm_model.c). */
    uint64_t n_merges;
    char **merges;
    bool byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id, bos_id, eos_id, pad_id; /* -1 when absent */
    clara_norm_flavour norm;
    int prepend_scheme; /* clara_prepend_scheme */
    bool metaspace_split;
    /* tokenizer.model's normalizer_spec (defaults true); tokenizer.json: false */
    bool remove_extra_whitespaces;
    char *decoder; /* tokenizer.json's decoder, recorded, e.g. "Sequence[Replace,ByteFallback,
                      Fuse,Strip]"; NULL if null or absent */
    size_t n_added;
    clara_added_token *added; /* in file order; tokenizer.model: its CONTROL/UNKNOWN (special)
                                 and USER_DEFINED (not special) pieces, as HF's converter does */
    /* from tokenizer_config.json; NULL / defaults (add_bos true, add_eos false: LlamaTokenizer's
     * defaults) if absent */
    char *chat_template;
    bool add_bos, add_eos;
    char *bos_token, *eos_token, *unk_token, *pad_token;
    int legacy, add_prefix_space; /* -1 absent, else 0/1 */
    char *source;                 /* "tokenizer.json" or "tokenizer.model" */
} clara_hf_tokenizer;

/* tokenizer.json. Only BPE models; the normalizer / pre-tokenizer must be one of the two
 * flavours above. bos_id/eos_id are the ids of "<s>"/"</s>" if present (tokenizer_config.json
 * may override them). On failure *out is left zeroed (freeing it is a no-op). */
clara_status hf_tokenizer_parse_json(const char *text, size_t len, const char *name,
                                     clara_hf_tokenizer *out);

/* tokenizer.model (SentencePiece ModelProto, BPE models only). */
clara_status hf_tokenizer_parse_spm(const uint8_t *data, size_t len, const char *name,
                                    clara_hf_tokenizer *out);

/* tokenizer_config.json: fills the config fields of an already parsed tokenizer (or of a zeroed
 * struct, then no ids are resolved). bos/eos/unk/pad_token strings that are in the vocabulary
 * set bos_id/eos_id/unk_id/pad_id; one that is not is an error. added_tokens_decoder entries
 * beyond the vocabulary extend it (tokenizer.model source only; tokenizer.json already has
 * them). On failure *io stays valid to free (the added tokens may already be applied). */
clara_status hf_tokenizer_parse_config(const char *text, size_t len, const char *name,
                                       clara_hf_tokenizer *io);

/* Reads DIR/tokenizer.json if present, else DIR/tokenizer.model; then DIR/tokenizer_config.json
 * if present. Errors name the file; if neither model file exists, the directory. */
clara_status hf_tokenizer_load_dir(const char *dir, clara_hf_tokenizer *out);

/* Releases everything; leaves *t zeroed. Safe on a zeroed struct and twice. */
void hf_tokenizer_free(clara_hf_tokenizer *t);

#endif
