/* tokenizer_internal.h - the in-memory layout shared by tokenizer.c (loading, validation,
 * decoding) and tokenizer_encode.c (added-token split, normalization, BPE). Not a public API. */
#ifndef CLARA_TOKENIZER_INTERNAL_H
#define CLARA_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

#define TOK_MAX_VOCAB  (1u << 22)
#define TOK_MAX_MERGES (1u << 24)
#define TOK_MAX_PIECE  4096u

/* per-id flags */
#define TOKF_ADDED   1u /* split out of raw text before normalization */
#define TOKF_SPECIAL 2u /* dropped by decode (skip_special_tokens) */

typedef enum { TOK_NORM_LEGACY = 0, TOK_NORM_METASPACE = 1 } tok_norm;
typedef enum { TOK_PREPEND_NEVER = 0, TOK_PREPEND_FIRST = 1, TOK_PREPEND_ALWAYS = 2 } tok_prepend;

/* One slot of the merge table: open addressing keyed by (left id, right id). */
typedef struct {
    uint64_t key; /* (uint64)left << 32 | right; MERGE_EMPTY when free */
    uint32_t rank;
    int32_t merged;
} tok_merge;
#define MERGE_EMPTY UINT64_MAX

/* Added-token trie over raw bytes: children as sibling lists, the root's as a 256-entry table. */
typedef struct {
    int32_t child, sibling;
    int32_t id; /* token ending here, or -1 */
    uint8_t byte;
} tok_trie_node;

struct clara_tokenizer {
    uint32_t n_vocab;
    char *arena;         /* every piece, NUL-terminated, back to back */
    uint32_t *piece_off; /* [n_vocab] offset into arena */
    uint32_t *piece_len; /* [n_vocab] bytes */
    uint8_t *flags;      /* [n_vocab] TOKF_* */
    int16_t *byte_val;   /* [n_vocab] byte of a <0xXX> piece (decode's ByteFallback), else -1 */
    char *dec_arena;     /* decode text of every piece ("▁" → " "), NUL-terminated */
    uint32_t *dec_off, *dec_len;

    int32_t *pmap; /* piece → id, open addressing, -1 empty */
    uint32_t pmap_mask;
    int32_t ascii_id[128]; /* id of each one-byte piece (fast path), -1 */
    int32_t byte_id[256];  /* id of "<0xXX>", -1 */

    tok_merge *merges;
    uint64_t merge_mask;
    uint64_t n_merges;

    int32_t unk_id; /* -1 when absent */
    bool byte_fallback, fuse_unk, ignore_merges, ms_split;
    tok_norm norm;
    tok_prepend prepend;

    tok_trie_node *trie; /* node 0 is the root */
    size_t n_trie, trie_cap;
    int32_t root_child[256]; /* first-byte table of the root, -1 */
};

static inline const char *tok_piece(const clara_tokenizer *t, int32_t id) {
    return t->arena + t->piece_off[id];
}

/* piece bytes → id (lowest id on duplicates), -1 if absent */
int32_t tok_lookup(const clara_tokenizer *t, const char *s, size_t n);

/* (rank, merged id) of a pair; false if the pair has no merge */
bool tok_merge_find(const clara_tokenizer *t, int32_t left, int32_t right, uint32_t *rank,
                    int32_t *merged);

/* Longest added token starting at text[i]: its id and byte length, or -1. */
int32_t tok_added_at(const clara_tokenizer *t, const uint8_t *text, size_t len, size_t i,
                     size_t *match_len);

/* Strict UTF-8 (RFC 3629: no overlong forms, no surrogates, <= U+10FFFF): byte length of the
 * character at s[0] (1-4), or 0 if invalid or truncated. */
size_t tok_utf8_len(const uint8_t *s, size_t n);
/* Offset of the first invalid byte, or n when all of s is valid UTF-8. */
size_t tok_utf8_check(const uint8_t *s, size_t n);

#endif
