/* hf_tokenizer_internal.h - helpers shared by the tokenizer.json, tokenizer.model and
 * tokenizer_config.json readers (hf_tokenizer*.c, spm_model.c): a piece -> id hash map, UTF-8
 * checks, quoting of untrusted strings for one-line messages, and applying added tokens. */
#ifndef CLARA_CONVERT_HF_TOKENIZER_INTERNAL_H
#define CLARA_CONVERT_HF_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "convert/hf_tokenizer.h"

/* Score llama.cpp's converter gives tokens added beyond the model vocabulary. */
#define HFTOK_ADDED_SCORE (-1000.0f)

/* Zeroes *t and sets the "absent" defaults (ids -1, add_bos true, legacy -1, ...). */
void hftok_init(clara_hf_tokenizer *t);

/* malloc'd NUL-terminated copy of s[0..n); NULL when out of memory. */
char *hftok_strndup(const char *s, size_t n);

/* True if s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF). */
bool hftok_utf8_valid(const uint8_t *s, size_t n);

/* Byte length of the UTF-8 character starting at s (1 for a stray byte); s must be non-empty. */
size_t hftok_utf8_char_len(const uint8_t *s, size_t n);

/* Writes a printable, shortened copy of s (non-printable bytes as \xNN) for error messages. */
const char *hftok_quote(const char *s, char *buf, size_t cap);

/* Checks a token's text: non-empty, at most CLARA_TOK_MAX_PIECE bytes, no NUL, valid UTF-8.
 * Returns NULL if fine, else a short description of the problem. */
const char *hftok_piece_problem(const char *s, size_t n);

/* Open-addressing map from token text to id; the texts live in a caller-owned array. */
typedef struct {
    uint32_t *slot; /* id, or UINT32_MAX for an empty slot */
    size_t mask;
    char *const *keys;
} hftok_map;

bool hftok_map_init(hftok_map *m, char *const *keys, uint32_t n_max);
/* Inserts keys[id]; returns -1 if inserted, else the id already holding the same text. */
int64_t hftok_map_insert(hftok_map *m, uint32_t id);
/* Returns the id of s[0..n), or -1. */
int64_t hftok_map_find(const hftok_map *m, const char *s, size_t n);
void hftok_map_free(hftok_map *m);

/* Applies added tokens to t (which has n_vocab tokens with types set, 0 = not yet decided):
 * one with an id in the vocabulary must have the same text; ids past it must continue the id
 * space densely and be new texts (score HFTOK_ADDED_SCORE). Types: special -> CONTROL (an
 * UNKNOWN token stays UNKNOWN), otherwise USER_DEFINED. Tokens whose id is already in t->added
 * are skipped when skip_known, an error otherwise. Copies what it keeps; `what` names the list
 * in messages ("added_tokens"). */
clara_status hftok_apply_added(clara_hf_tokenizer *t, const clara_added_token *add, size_t n,
                               bool skip_known, const char *name, const char *what);

/* Frees an array of added tokens and their contents. */
void hftok_free_added(clara_added_token *a, size_t n);

/* JSON helpers (hf_tokenizer_json.c). Each member reader fails with "NAME: WHERE.KEY ..." when
 * the member has the wrong type; an absent or null member leaves *out unchanged. */
clara_status hftok_json_parse(const char *text, size_t len, const char *name, cJSON **out);
clara_status hftok_json_bool(const cJSON *obj, const char *key, bool *out, const char *name,
                             const char *where);
/* *out points into the cJSON tree. */
clara_status hftok_json_str(const cJSON *obj, const char *key, const char **out, const char *name,
                            const char *where);
/* True if v is a number that is an integer in [0, max). */
bool hftok_json_index(const cJSON *v, uint32_t max, uint32_t *out);
/* Reads one added-token object {id?, content, special, lstrip, rstrip, normalized,
 * single_word}; the id is read only when need_id. a->content is malloc'd. */
clara_status hftok_json_added_token(const cJSON *o, bool need_id, clara_added_token *a,
                                    const char *name, const char *where);

/* Refuses a vocabulary with a token twice ("NAME: WHAT 'x' appears twice (ids a, b)"). */
clara_status hftok_check_unique(const clara_hf_tokenizer *t, const char *name, const char *what);

/* The added tokens of a SentencePiece-style vocabulary, from its token types (as HF's converter
 * makes them): UNKNOWN and CONTROL pieces special, USER_DEFINED ones not (spm_model.c; also the
 * base GGUF reader, convert/gguf_base.c). t->added must be empty. */
clara_status hftok_added_from_types(clara_hf_tokenizer *t);

/* Internal: the tokenizer.model merge derivation, also used by the tests (and the base GGUF
 * reader, whose llama.cpp-written vocabulary usually has scores but no merges). */
clara_status hftok_spm_derive_merges(clara_hf_tokenizer *t, const char *name);

#endif
