/* tokenizer.h - CLaRa's tokenizer (spec §3): the Hugging Face fast Llama/Mistral tokenizer
 * rebuilt from a converted GGUF file (docs/FORMAT.md, tokenizer.ggml.* and clara.tokenizer.*).
 *
 * Encoding is HF `tokenizer(text, add_special_tokens=False)`: added tokens (every id of
 * clara.tokenizer.added_token_ids: <unk>, <s>, </s> and CLaRa's <MEMi>/<AE>/<ENC>/<SEP>) are split
 * out of the raw text first (leftmost, then longest match); each text segment between them is
 * normalized on its own (legacy Prepend("▁") + Replace(" " → "▁"), or Metaspace with prepend
 * scheme first/always/never) and BPE-encoded as one word (lowest merge rank first, leftmost on
 * ties) with byte fallback to <0xXX> pieces and <unk>. Decoding is batch_decode with
 * skip_special_tokens=True (spec §3.3).
 *
 * A loaded tokenizer is immutable: every function taking a const pointer is thread-safe. */
#ifndef CLARA_TOKENIZER_H
#define CLARA_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clara.h"
#include "gguf.h"

typedef struct clara_tokenizer clara_tokenizer;

/* A caller-owned growable id vector. Zero-initialise it ({0}); clara_ids_free releases it. */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} clara_ids;

clara_status clara_ids_push(clara_ids *v, int32_t id);
void clara_ids_free(clara_ids *v);

/* Reads and validates tokenizer.ggml.tokens / token_type / merges / unknown_token_id and the
 * clara.tokenizer.* keys (ids in range, merges naming existing pieces whose concatenation is a
 * piece, supported flavour and added-token flags, valid UTF-8 pieces, ...). The tokenizer copies
 * what it needs: the GGUF context may be freed afterwards. Errors name the file and the key. */
clara_status clara_tokenizer_load(const gguf_ctx *g, clara_tokenizer **out);
void clara_tokenizer_free(clara_tokenizer *t);

/* Appends the ids of UTF-8 `text` (len bytes, NUL bytes allowed) to *out. Invalid UTF-8 is
 * CLARA_ERR_INVALID_ARG with the byte offset in the message; *out then keeps what it had. */
clara_status clara_tokenizer_encode(const clara_tokenizer *t, const char *text, size_t len,
                                    clara_ids *out);

/* Decodes like batch_decode(skip_special_tokens=True): special ids dropped, "▁" → " ", <0xXX>
 * runs decoded as UTF-8 (or one U+FFFD per byte when invalid), one leading space removed.
 * *text is a malloc'd NUL-terminated string. An id outside the vocabulary is
 * CLARA_ERR_INVALID_ARG. */
clara_status clara_tokenizer_decode(const clara_tokenizer *t, const int32_t *ids, size_t n,
                                    char **text);
/* The same with the byte length: the text contains a NUL byte where an id decodes to U+0000
 * (e.g. <0x00>), which the NUL-terminated form cannot show. */
clara_status clara_tokenizer_decode_len(const clara_tokenizer *t, const int32_t *ids, size_t n,
                                        char **text, size_t *len);

/* How many of ids decode to text that later ids cannot change: up to and including the last id
 * that is an ordinary piece (a byte-fallback run, which special ids do not end, decodes as a
 * whole when it ends; flush_bytes in tokenizer.c). Ids outside the vocabulary count as ordinary
 * (decoding refuses them anyway). */
size_t clara_tokenizer_final_ids(const clara_tokenizer *t, const int32_t *ids, size_t n);

uint32_t clara_tokenizer_n_vocab(const clara_tokenizer *t);
/* An upper bound on the input bytes one encoded token stands for (the longest piece, at least
 * the 4 bytes of one character), so n tokens never cover more than n times this many bytes of
 * text; 0 when there is no bound (<unk> fuses runs of unknown characters of any length). */
size_t clara_tokenizer_max_token_bytes(const clara_tokenizer *t);
/* The piece of an id (NUL-terminated), or NULL when out of range. */
const char *clara_tokenizer_piece(const clara_tokenizer *t, int32_t id);
/* True for added tokens flagged special (<unk>, <s>, </s>, CLaRa's tokens). */
bool clara_tokenizer_is_special(const clara_tokenizer *t, int32_t id);
/* Exact piece → id (the lowest id if a piece repeats), or -1. */
int32_t clara_tokenizer_find_token(const clara_tokenizer *t, const char *piece);

/* The first added-token string occurring in text (leftmost, then longest), as encode would split
 * it: returns its id and sets *offset (may be NULL) to its byte offset; -1 if none. For spec §14.4
 * (rejecting documents that contain <MEM0>, <SEP>, </s>, ...). */
int32_t clara_tokenizer_find_added(const clara_tokenizer *t, const char *text, size_t len,
                                   size_t *offset);

#endif
