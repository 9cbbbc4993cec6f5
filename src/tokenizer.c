/* tokenizer.c - loading and validating CLaRa's tokenizer from a converted GGUF file
 * (docs/FORMAT.md: tokenizer.ggml.tokens/token_type/merges/unknown_token_id and the
 * clara.tokenizer.* keys), the lookup tables encoding needs, and decoding (spec §3.3).
 * Encoding itself is in tokenizer_encode.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/status.h"
#include "base/utf8.h"
#include "tokenizer_internal.h"

#define SPIECE     "\xe2\x96\x81" /* U+2581, "▁" */
#define SPIECE_LEN 3

/* ---- small helpers ------------------------------------------------------------------------- */

size_t tok_utf8_len(const uint8_t *s, size_t n) {
    return clara_utf8_len(s, n);
}

size_t tok_utf8_check(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = tok_utf8_len(s + i, n - i);
        if (!l) return i;
        i += l;
    }
    return n;
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t key) { /* murmur3's fmix64 */
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    key *= 0xc4ceb9fe1a85ec53ull;
    return key ^ (key >> 33);
}

/* Smallest power of two >= 2n (at least 16), so tables stay at most half full. */
static uint64_t table_size(uint64_t n) {
    uint64_t s = 16;
    while (s < 2 * n) s <<= 1;
    return s;
}

int32_t tok_lookup(const clara_tokenizer *t, const char *s, size_t n) {
    uint64_t h = hash_bytes(s, n);
    for (uint32_t i = (uint32_t)h & t->pmap_mask;; i = (i + 1) & t->pmap_mask) {
        int32_t id = t->pmap[i];
        if (id < 0) return -1;
        if (t->piece_len[id] == n && memcmp(tok_piece(t, id), s, n) == 0) return id;
    }
}

bool tok_merge_find(const clara_tokenizer *t, int32_t left, int32_t right, uint32_t *rank,
                    int32_t *merged) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (uint64_t i = hash_pair(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const tok_merge *m = &t->merges[i];
        if (m->key == MERGE_EMPTY) return false;
        if (m->key == key) {
            *rank = m->rank;
            *merged = m->merged;
            return true;
        }
    }
}

/* ---- pieces -------------------------------------------------------------------------------- */

/* Copies every piece into one arena and checks it (non-NUL, valid UTF-8, bounded length). */
static clara_status load_pieces(clara_tokenizer *t, const gguf_ctx *g, int64_t kv) {
    const char *name = gguf_name(g);
    uint64_t total = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        const char *p = gguf_kv_arr_str(g, (size_t)kv, i);
        size_t n = strlen(p);
        if (n > TOK_MAX_PIECE)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: tokenizer.ggml.tokens: token %u is %zu bytes long (limit %u)",
                              name, i, n, TOK_MAX_PIECE);
        size_t bad = tok_utf8_check((const uint8_t *)p, n);
        if (bad != n)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: tokenizer.ggml.tokens: token %u is not valid UTF-8 (byte %zu)",
                              name, i, bad);
        total += n + 1;
    }
    if (total > UINT32_MAX)
        return clara_fail(CLARA_ERR_NOMEM, "%s: tokenizer.ggml.tokens: too much text", name);
    t->arena = malloc(total);
    t->piece_off = malloc(sizeof *t->piece_off * t->n_vocab);
    t->piece_len = malloc(sizeof *t->piece_len * t->n_vocab);
    t->flags = calloc(t->n_vocab, 1);
    if (!t->arena || !t->piece_off || !t->piece_len || !t->flags)
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    uint32_t off = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        const char *p = gguf_kv_arr_str(g, (size_t)kv, i);
        uint32_t n = (uint32_t)strlen(p);
        memcpy(t->arena + off, p, (size_t)n + 1);
        t->piece_off[i] = off;
        t->piece_len[i] = n;
        off += n + 1;
    }
    return CLARA_OK;
}

/* piece → id map; the lowest id wins when a piece repeats (first inserted). */
static clara_status build_piece_map(clara_tokenizer *t) {
    uint64_t size = table_size(t->n_vocab);
    t->pmap = malloc(sizeof *t->pmap * size);
    if (!t->pmap) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    memset(t->pmap, 0xFF, sizeof *t->pmap * size);
    t->pmap_mask = (uint32_t)(size - 1);
    for (uint32_t id = 0; id < t->n_vocab; id++) {
        const char *p = tok_piece(t, (int32_t)id);
        uint32_t n = t->piece_len[id];
        uint32_t i = (uint32_t)hash_bytes(p, n) & t->pmap_mask;
        for (;; i = (i + 1) & t->pmap_mask) {
            int32_t o = t->pmap[i];
            if (o < 0) {
                t->pmap[i] = (int32_t)id;
                break;
            }
            if (t->piece_len[o] == n && memcmp(tok_piece(t, o), p, n) == 0) break;
        }
    }
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        t->ascii_id[c] = tok_lookup(t, &ch, 1);
    }
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        t->byte_id[b] = tok_lookup(t, buf, 6);
    }
    return CLARA_OK;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The byte a decoded piece stands for under the ByteFallback decoder: exactly "<0x" two hex
 * digits ">" (tokenizers parses the two characters as a base-16 u8, which also takes "+F"). */
static int byte_of_piece(const char *p, size_t n) {
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>') return -1;
    int hi = hex_digit(p[3]), lo = hex_digit(p[4]);
    if (p[3] == '+' && lo >= 0) return lo;
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* Decode text of each piece: the Replace("▁" → " ") decoder step, then the byte it denotes. */
static clara_status build_decode_table(clara_tokenizer *t) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++) total += t->piece_len[i] + 1;
    t->dec_arena = malloc(total);
    t->dec_off = malloc(sizeof *t->dec_off * t->n_vocab);
    t->dec_len = malloc(sizeof *t->dec_len * t->n_vocab);
    t->byte_val = malloc(sizeof *t->byte_val * t->n_vocab);
    if (!t->dec_arena || !t->dec_off || !t->dec_len || !t->byte_val)
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    uint32_t off = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        const char *p = tok_piece(t, (int32_t)i);
        uint32_t n = t->piece_len[i], o = off;
        for (uint32_t j = 0; j < n;) {
            if (j + SPIECE_LEN <= n && memcmp(p + j, SPIECE, SPIECE_LEN) == 0) {
                t->dec_arena[o++] = ' ';
                j += SPIECE_LEN;
            } else {
                t->dec_arena[o++] = p[j++];
            }
        }
        t->dec_arena[o] = '\0';
        t->dec_off[i] = off;
        t->dec_len[i] = o - off;
        t->byte_val[i] = (int16_t)byte_of_piece(t->dec_arena + off, o - off);
        off = o + 1;
    }
    return CLARA_OK;
}

/* ---- merges -------------------------------------------------------------------------------- */

/* Parses merge `rank` ("left right", exactly one space) into ids, requiring left, right and
 * their concatenation to be pieces (the fast tokenizer refuses to build otherwise). */
static clara_status parse_merge(const clara_tokenizer *t, const char *name, uint64_t rank,
                                const char *m, char *buf, int32_t ids[3]) {
    size_t n = strlen(m);
    const char *sp = memchr(m, ' ', n);
    if (!sp || sp == m || sp == m + n - 1 || memchr(sp + 1, ' ', (size_t)(m + n - sp - 1)))
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: tokenizer.ggml.merges[%llu] is not \"left right\" with one space",
                          name, (unsigned long long)rank);
    size_t ln = (size_t)(sp - m), rn = n - ln - 1;
    if (ln > TOK_MAX_PIECE || rn > TOK_MAX_PIECE)
        return clara_fail(CLARA_ERR_FORMAT, "%s: tokenizer.ggml.merges[%llu] is too long", name,
                          (unsigned long long)rank);
    memcpy(buf, m, ln);
    memcpy(buf + ln, sp + 1, rn);
    ids[0] = tok_lookup(t, m, ln);
    ids[1] = tok_lookup(t, sp + 1, rn);
    ids[2] = tok_lookup(t, buf, ln + rn);
    for (int k = 0; k < 3; k++)
        if (ids[k] < 0)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: tokenizer.ggml.merges[%llu]: %s piece of \"%s\" is not in the "
                              "vocabulary",
                              name, (unsigned long long)rank,
                              (const char *[]){"left", "right", "merged"}[k], m);
    return CLARA_OK;
}

/* Fills the (left, right) → (rank, merged) table. A repeated pair keeps its first (lowest)
 * rank, as spec §3.2 ("the lowest rank") reads. */
static clara_status load_merges(clara_tokenizer *t, const gguf_ctx *g) {
    const char *name = gguf_name(g);
    int64_t kv = gguf_find_key(g, "tokenizer.ggml.merges");
    uint64_t n = 0;
    if (kv >= 0) {
        gguf_vtype et;
        clara_status s = gguf_kv_arr(g, (size_t)kv, &et, &n);
        if (s != CLARA_OK || et != GGUF_VT_STR)
            return clara_fail(CLARA_ERR_FORMAT, "%s: tokenizer.ggml.merges is not a string array",
                              name);
        if (n > TOK_MAX_MERGES)
            return clara_fail(CLARA_ERR_NOMEM,
                              "%s: tokenizer.ggml.merges has %llu entries (limit %u)", name,
                              (unsigned long long)n, TOK_MAX_MERGES);
    }
    uint64_t size = table_size(n);
    t->merges = malloc(sizeof *t->merges * size);
    char *buf = malloc(2 * TOK_MAX_PIECE);
    if (!t->merges || !buf) {
        free(buf);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    for (uint64_t i = 0; i < size; i++) t->merges[i].key = MERGE_EMPTY;
    t->merge_mask = size - 1;
    t->n_merges = n;
    clara_status s = CLARA_OK;
    for (uint64_t r = 0; r < n && s == CLARA_OK; r++) {
        int32_t ids[3] = {-1, -1, -1};
        s = parse_merge(t, name, r, gguf_kv_arr_str(g, (size_t)kv, r), buf, ids);
        if (s != CLARA_OK) break;
        uint64_t key = (uint64_t)(uint32_t)ids[0] << 32 | (uint32_t)ids[1];
        uint64_t i = hash_pair(key) & t->merge_mask;
        while (t->merges[i].key != MERGE_EMPTY && t->merges[i].key != key)
            i = (i + 1) & t->merge_mask;
        if (t->merges[i].key == MERGE_EMPTY)
            t->merges[i] = (tok_merge){.key = key, .rank = (uint32_t)r, .merged = ids[2]};
    }
    free(buf);
    return s;
}

/* ---- added tokens -------------------------------------------------------------------------- */

static clara_status trie_node(clara_tokenizer *t, uint8_t byte, int32_t *out) {
    if (t->n_trie >= INT32_MAX) return clara_fail(CLARA_ERR_NOMEM, "added-token trie too large");
    if (t->n_trie == t->trie_cap) {
        size_t nc = t->trie_cap ? t->trie_cap * 2 : 64;
        tok_trie_node *p = realloc(t->trie, nc * sizeof *p);
        if (!p) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        t->trie = p;
        t->trie_cap = nc;
    }
    t->trie[t->n_trie] = (tok_trie_node){.child = -1, .sibling = -1, .id = -1, .byte = byte};
    *out = (int32_t)t->n_trie++;
    return CLARA_OK;
}

/* Child of `node` for `byte`, created when `create` (node 0 is the root, with a byte table). */
static clara_status trie_child(clara_tokenizer *t, int32_t node, uint8_t byte, int32_t *out) {
    int32_t c = node == 0 ? t->root_child[byte] : t->trie[node].child;
    if (node != 0)
        while (c >= 0 && t->trie[c].byte != byte) c = t->trie[c].sibling;
    if (c >= 0) {
        *out = c;
        return CLARA_OK;
    }
    clara_status s = trie_node(t, byte, &c);
    if (s != CLARA_OK) return s;
    if (node == 0) {
        t->root_child[byte] = c;
    } else {
        t->trie[c].sibling = t->trie[node].child;
        t->trie[node].child = c;
    }
    *out = c;
    return CLARA_OK;
}

static clara_status trie_insert(clara_tokenizer *t, const char *name, int32_t id) {
    const uint8_t *p = (const uint8_t *)tok_piece(t, id);
    int32_t node = 0;
    for (uint32_t i = 0; i < t->piece_len[id]; i++) {
        clara_status s = trie_child(t, node, p[i], &node);
        if (s != CLARA_OK) return s;
    }
    if (t->trie[node].id >= 0)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: clara.tokenizer.added_token_ids: ids %d and %d have the same text "
                          "'%s'",
                          name, t->trie[node].id, id, (const char *)p);
    t->trie[node].id = id;
    return CLARA_OK;
}

int32_t tok_added_at(const clara_tokenizer *t, const uint8_t *text, size_t len, size_t i,
                     size_t *match_len) {
    int32_t node = t->root_child[text[i]], best = -1;
    size_t j = i + 1;
    while (node >= 0) {
        if (t->trie[node].id >= 0) {
            best = t->trie[node].id;
            *match_len = j - i;
        }
        if (j >= len) break;
        int32_t c = t->trie[node].child;
        while (c >= 0 && t->trie[c].byte != text[j]) c = t->trie[c].sibling;
        node = c;
        j++;
    }
    return best;
}

/* Flags we reproduce: special (decode drops it). lstrip/rstrip/single_word and normalized
 * matching change how text is split and are not used by Mistral or CLaRa (spec §3.1): refused. */
static clara_status check_added_flags(const clara_tokenizer *t, const char *name, int32_t id,
                                      uint8_t f) {
    if (f & ~(uint8_t)1) {
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: clara.tokenizer.added_token_flags: added token '%s' (id %d) uses "
                          "%s%s%s%s which this tokenizer does not implement",
                          name, tok_piece(t, id), id, f & 2 ? "lstrip " : "",
                          f & 4 ? "rstrip " : "", f & 8 ? "normalized " : "",
                          f & 16 ? "single_word " : "");
    }
    return CLARA_OK;
}

static clara_status load_added(clara_tokenizer *t, const gguf_ctx *g) {
    const char *name = gguf_name(g);
    const void *idp, *flp;
    uint64_t n, nf;
    clara_status s = gguf_get_arr_data(g, "clara.tokenizer.added_token_ids", GGUF_VT_I32, &idp, &n);
    if (s == CLARA_OK)
        s = gguf_get_arr_data(g, "clara.tokenizer.added_token_flags", GGUF_VT_U8, &flp, &nf);
    if (s != CLARA_OK) return s;
    if (n != nf)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: clara.tokenizer.added_token_ids has %llu entries but "
                          "added_token_flags %llu",
                          name, (unsigned long long)n, (unsigned long long)nf);
    for (int b = 0; b < 256; b++) t->root_child[b] = -1;
    int32_t root;
    if ((s = trie_node(t, 0, &root)) != CLARA_OK) return s;
    for (uint64_t i = 0; i < n; i++) {
        int32_t id;
        uint8_t f = ((const uint8_t *)flp)[i];
        memcpy(&id, (const char *)idp + 4 * i, 4);
        if (id < 0 || (uint32_t)id >= t->n_vocab)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: clara.tokenizer.added_token_ids[%llu] = %d is not a token id "
                              "(vocabulary %u)",
                              name, (unsigned long long)i, id, t->n_vocab);
        if (t->flags[id] & TOKF_ADDED)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: clara.tokenizer.added_token_ids lists %d twice", name, id);
        if (t->piece_len[id] == 0)
            return clara_fail(CLARA_ERR_FORMAT, "%s: added token %d has empty text", name, id);
        if ((s = check_added_flags(t, name, id, f)) != CLARA_OK) return s;
        t->flags[id] |= TOKF_ADDED | (f & 1 ? TOKF_SPECIAL : 0);
        if ((s = trie_insert(t, name, id)) != CLARA_OK) return s;
    }
    return CLARA_OK;
}

/* ---- settings ------------------------------------------------------------------------------ */

static clara_status opt_bool(const gguf_ctx *g, const char *key, bool dflt, bool *out) {
    *out = dflt;
    return gguf_find_key(g, key) < 0 ? CLARA_OK : gguf_get_bool(g, key, out);
}

/* An optional token-id key must name a token. */
static clara_status opt_id(const gguf_ctx *g, const char *key, uint32_t n_vocab, int32_t *out) {
    *out = -1;
    if (gguf_find_key(g, key) < 0) return CLARA_OK;
    uint64_t v;
    clara_status s = gguf_get_uint(g, key, &v);
    if (s != CLARA_OK) return s;
    if (v >= n_vocab)
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s = %llu is not a token id (vocabulary %u)",
                          gguf_name(g), key, (unsigned long long)v, n_vocab);
    *out = (int32_t)v;
    return CLARA_OK;
}

static clara_status load_flavour(clara_tokenizer *t, const gguf_ctx *g) {
    const char *name = gguf_name(g), *norm, *scheme;
    clara_status s = gguf_get_str(g, "clara.tokenizer.normalizer", &norm);
    if (s == CLARA_OK) s = gguf_get_str(g, "clara.tokenizer.prepend_scheme", &scheme);
    if (s != CLARA_OK) return s;
    if (strcmp(norm, "legacy") == 0)
        t->norm = TOK_NORM_LEGACY;
    else if (strcmp(norm, "metaspace") == 0)
        t->norm = TOK_NORM_METASPACE;
    else
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: clara.tokenizer.normalizer '%s' is unknown",
                          name, norm);
    if (strcmp(scheme, "always") == 0)
        t->prepend = TOK_PREPEND_ALWAYS;
    else if (strcmp(scheme, "first") == 0)
        t->prepend = TOK_PREPEND_FIRST;
    else if (strcmp(scheme, "never") == 0)
        t->prepend = TOK_PREPEND_NEVER;
    else
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: clara.tokenizer.prepend_scheme '%s' is unknown", name, scheme);
    /* the legacy normalizer either has Prepend("▁") (every segment) or not */
    if (t->norm == TOK_NORM_LEGACY && t->prepend == TOK_PREPEND_FIRST)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: the legacy normalizer with prepend_scheme 'first' does not exist",
                          name);
    if ((s = opt_bool(g, "clara.tokenizer.metaspace_split", false, &t->ms_split)) != CLARA_OK ||
        (s = opt_bool(g, "clara.tokenizer.byte_fallback", false, &t->byte_fallback)) != CLARA_OK ||
        (s = opt_bool(g, "clara.tokenizer.fuse_unk", false, &t->fuse_unk)) != CLARA_OK ||
        (s = opt_bool(g, "clara.tokenizer.ignore_merges", false, &t->ignore_merges)) != CLARA_OK)
        return s;
    int32_t unused;
    if ((s = opt_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk_id)) != CLARA_OK ||
        (s = opt_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &unused)) != CLARA_OK ||
        (s = opt_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &unused)) != CLARA_OK)
        return s;
    return CLARA_OK;
}

static clara_status load_vocab(clara_tokenizer *t, const gguf_ctx *g) {
    const char *name = gguf_name(g);
    int64_t kv = gguf_find_key(g, "tokenizer.ggml.tokens");
    if (kv < 0)
        return clara_fail(CLARA_ERR_NOT_FOUND, "%s: no tokenizer.ggml.tokens (not a model file?)",
                          name);
    gguf_vtype et;
    uint64_t n;
    clara_status s = gguf_kv_arr(g, (size_t)kv, &et, &n);
    if (s != CLARA_OK || et != GGUF_VT_STR)
        return clara_fail(CLARA_ERR_FORMAT, "%s: tokenizer.ggml.tokens is not a string array",
                          name);
    if (n == 0 || n > TOK_MAX_VOCAB)
        return clara_fail(CLARA_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries (1..%u)",
                          name, (unsigned long long)n, TOK_MAX_VOCAB);
    t->n_vocab = (uint32_t)n;
    if (gguf_find_key(g, "tokenizer.ggml.token_type") >= 0) {
        const void *d;
        uint64_t nt;
        if ((s = gguf_get_arr_data(g, "tokenizer.ggml.token_type", GGUF_VT_I32, &d, &nt)) !=
            CLARA_OK)
            return s;
        if (nt != n)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: tokenizer.ggml.token_type has %llu entries, tokens %llu", name,
                              (unsigned long long)nt, (unsigned long long)n);
    }
    if ((s = load_pieces(t, g, kv)) != CLARA_OK) return s;
    if ((s = build_piece_map(t)) != CLARA_OK) return s;
    return build_decode_table(t);
}

clara_status clara_tokenizer_load(const gguf_ctx *g, clara_tokenizer **out) {
    *out = NULL;
    clara_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    clara_status s = load_vocab(t, g);
    if (s == CLARA_OK) s = load_flavour(t, g);
    if (s == CLARA_OK) s = load_merges(t, g);
    if (s == CLARA_OK) s = load_added(t, g);
    if (s != CLARA_OK) {
        clara_tokenizer_free(t);
        return s;
    }
    *out = t;
    return CLARA_OK;
}

void clara_tokenizer_free(clara_tokenizer *t) {
    if (!t) return;
    free(t->arena);
    free(t->piece_off);
    free(t->piece_len);
    free(t->flags);
    free(t->byte_val);
    free(t->dec_arena);
    free(t->dec_off);
    free(t->dec_len);
    free(t->pmap);
    free(t->merges);
    free(t->trie);
    free(t);
}

/* ---- queries ------------------------------------------------------------------------------- */

uint32_t clara_tokenizer_n_vocab(const clara_tokenizer *t) {
    return t->n_vocab;
}

size_t clara_tokenizer_max_token_bytes(const clara_tokenizer *t) {
    /* a fused <unk> can stand for any run of characters that have no piece of their own; with
     * every <0xXX> piece present, byte fallback leaves <unk> unused */
    bool all_bytes = t->byte_fallback;
    for (int b = 0; all_bytes && b < 256; b++) all_bytes = t->byte_id[b] >= 0;
    if (t->unk_id >= 0 && t->fuse_unk && !all_bytes) return 0;
    /* a piece's bytes bound the input it covers: its "▁" (3 bytes) stands for one space or for
     * nothing (the prepended one), and a <0xXX> piece or <unk> for at most one character */
    size_t most = 4;
    for (uint32_t id = 0; id < t->n_vocab; id++)
        if (!(t->flags[id] & TOKF_ADDED) && t->piece_len[id] > most) most = t->piece_len[id];
    return most;
}

const char *clara_tokenizer_piece(const clara_tokenizer *t, int32_t id) {
    return id >= 0 && (uint32_t)id < t->n_vocab ? tok_piece(t, id) : NULL;
}

bool clara_tokenizer_is_special(const clara_tokenizer *t, int32_t id) {
    return id >= 0 && (uint32_t)id < t->n_vocab && (t->flags[id] & TOKF_SPECIAL);
}

int32_t clara_tokenizer_find_token(const clara_tokenizer *t, const char *piece) {
    return piece ? tok_lookup(t, piece, strlen(piece)) : -1;
}

int32_t clara_tokenizer_find_added(const clara_tokenizer *t, const char *text, size_t len,
                                   size_t *offset) {
    const uint8_t *p = (const uint8_t *)text;
    for (size_t i = 0; i < len; i++) {
        if (t->root_child[p[i]] < 0) continue;
        size_t ml;
        int32_t id = tok_added_at(t, p, len, i, &ml);
        if (id >= 0) {
            if (offset) *offset = i;
            return id;
        }
    }
    return -1;
}

/* ---- id vectors ---------------------------------------------------------------------------- */

clara_status clara_ids_push(clara_ids *v, int32_t id) {
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 64;
        if (nc > SIZE_MAX / sizeof *v->ids) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        int32_t *p = realloc(v->ids, nc * sizeof *p);
        if (!p) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        v->ids = p;
        v->cap = nc;
    }
    v->ids[v->n++] = id;
    return CLARA_OK;
}

void clara_ids_free(clara_ids *v) {
    if (!v) return;
    free(v->ids);
    v->ids = NULL;
    v->n = v->cap = 0;
}

/* ---- decoding (spec §3.3) ------------------------------------------------------------------ */

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} dec_buf;

static void buf_put(dec_buf *b, const void *s, size_t n) {
    if (b->oom) return;
    if (b->p && n == 0) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1) {
            if (nc > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            nc *= 2;
        }
        char *q = realloc(b->p, nc);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
}

/* ByteFallback: a run of byte pieces is its bytes if they form valid UTF-8, else one U+FFFD
 * per byte piece. */
static void flush_bytes(dec_buf *b, const uint8_t *run, size_t n) {
    if (n == 0) return;
    if (tok_utf8_check(run, n) == n) {
        buf_put(b, run, n);
        return;
    }
    for (size_t i = 0; i < n; i++) buf_put(b, "\xef\xbf\xbd", 3);
}

size_t clara_tokenizer_final_ids(const clara_tokenizer *t, const int32_t *ids, size_t n) {
    while (n > 0) {
        int32_t id = ids[n - 1];
        if (id < 0 || (uint32_t)id >= t->n_vocab ||
            (!(t->flags[id] & TOKF_SPECIAL) && t->byte_val[id] < 0))
            break;
        n--;
    }
    return n;
}

clara_status clara_tokenizer_decode(const clara_tokenizer *t, const int32_t *ids, size_t n,
                                    char **text) {
    size_t len;
    return clara_tokenizer_decode_len(t, ids, n, text, &len);
}

clara_status clara_tokenizer_decode_len(const clara_tokenizer *t, const int32_t *ids, size_t n,
                                        char **text, size_t *len) {
    *text = NULL;
    *len = 0;
    dec_buf b = {0}, run = {0};
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || (uint32_t)id >= t->n_vocab) {
            free(b.p);
            free(run.p);
            return clara_fail(CLARA_ERR_INVALID_ARG,
                              "decode: token id %d at index %zu is outside the vocabulary (%u)", id,
                              i, t->n_vocab);
        }
        if (t->flags[id] & TOKF_SPECIAL) continue;
        if (t->byte_val[id] >= 0) {
            uint8_t byte = (uint8_t)t->byte_val[id];
            buf_put(&run, &byte, 1);
            continue;
        }
        flush_bytes(&b, (const uint8_t *)run.p, run.n);
        run.n = 0;
        buf_put(&b, t->dec_arena + t->dec_off[id], t->dec_len[id]);
    }
    flush_bytes(&b, (const uint8_t *)run.p, run.n);
    buf_put(&b, "", 0); /* makes sure a buffer exists */
    free(run.p);
    if (b.oom || run.oom) {
        free(b.p);
        return clara_fail(CLARA_ERR_NOMEM, "decode: out of memory");
    }
    size_t skip = b.n > 0 && b.p[0] == ' ' ? 1 : 0; /* Strip(" ", start=1) */
    memmove(b.p, b.p + skip, b.n - skip);
    b.p[b.n - skip] = '\0';
    *text = b.p;
    *len = b.n - skip;
    return CLARA_OK;
}
