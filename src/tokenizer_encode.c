/* tokenizer_encode.c - encoding (spec §3.2): split the raw text on added tokens (leftmost, then
 * longest match), normalize each text segment on its own (legacy Prepend("▁") + Replace(" " →
 * "▁"), or Metaspace with prepend scheme first/always/never and optional split before each
 * "▁"), then BPE each word: one symbol per character (byte fallback to <0xXX>, else <unk>,
 * consecutive unknowns fused when fuse_unk), then repeatedly merge the adjacent pair with the
 * lowest merge rank, the leftmost one on ties.
 *
 * BPE runs over whole segments (a 2 KB passage is one word), so it is O(n log n): symbols form
 * a doubly linked list over an array, candidate pairs sit in a binary min-heap keyed
 * (rank << 32 | position of the left symbol), and stale heap entries are recognised by
 * re-checking the two symbol ids when popped. A merged symbol keeps its left position, so
 * positions order candidates left to right, which gives the leftmost-on-ties rule. */
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "tokenizer_internal.h"

#define SPIECE     "\xe2\x96\x81" /* U+2581, "▁" */
#define SPIECE_LEN 3
#define SYM_UNK    (-1) /* an unknown character (never merged; emitted as unk_id) */
#define SYM_DEAD   (-2) /* merged into its left neighbour */

typedef struct {
    uint64_t key; /* rank << 32 | left position */
    int32_t left, right, merged;
} heap_ent;

/* Scratch memory of one encode call, grown to the largest word. */
typedef struct {
    char *norm;
    size_t norm_cap;
    int32_t *sym, *prev, *next;
    size_t sym_cap;
    heap_ent *heap;
    size_t heap_n, heap_cap;
    int32_t spiece_id; /* id of "▁" (the most frequent character), -1 */
} enc_ctx;

static void enc_free(enc_ctx *e) {
    free(e->norm);
    free(e->sym);
    free(e->prev);
    free(e->next);
    free(e->heap);
}

static clara_status grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return CLARA_OK;
    size_t nc = *cap ? *cap : 256;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / elem) return clara_fail(CLARA_ERR_NOMEM, "encode: out of memory");
        nc *= 2;
    }
    void *q = realloc(*p, nc * elem);
    if (!q) return clara_fail(CLARA_ERR_NOMEM, "encode: out of memory");
    *p = q;
    *cap = nc;
    return CLARA_OK;
}

/* Symbol arrays for a word of n bytes (at most one symbol per byte). */
static clara_status reserve_syms(enc_ctx *e, size_t n) {
    if (n <= e->sym_cap) return CLARA_OK;
    size_t cap = e->sym_cap, c2 = cap, c3 = cap;
    clara_status s = grow((void **)&e->sym, &cap, n, sizeof(int32_t));
    if (s == CLARA_OK) s = grow((void **)&e->prev, &c2, n, sizeof(int32_t));
    if (s == CLARA_OK) s = grow((void **)&e->next, &c3, n, sizeof(int32_t));
    if (s == CLARA_OK) e->sym_cap = cap;
    return s;
}

/* ---- binary min-heap of candidate pairs ---------------------------------------------------- */

static clara_status heap_push(enc_ctx *e, heap_ent x) {
    if (e->heap_n == e->heap_cap) {
        clara_status s = grow((void **)&e->heap, &e->heap_cap, e->heap_n + 1, sizeof x);
        if (s != CLARA_OK) return s;
    }
    size_t i = e->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (e->heap[p].key <= x.key) break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = x;
    return CLARA_OK;
}

static heap_ent heap_pop(enc_ctx *e) {
    heap_ent top = e->heap[0], x = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && e->heap[c + 1].key < e->heap[c].key) c++;
        if (x.key <= e->heap[c].key) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = x;
    return top;
}

/* ---- BPE ----------------------------------------------------------------------------------- */

/* Queues the pair starting at symbol i, if it has a merge. */
static clara_status push_pair(const clara_tokenizer *t, enc_ctx *e, int32_t i) {
    if (i < 0) return CLARA_OK; /* no left neighbour */
    int32_t j = e->next[i];
    if (j < 0) return CLARA_OK;
    int32_t a = e->sym[i], b = e->sym[j];
    uint32_t rank;
    int32_t merged;
    if (a < 0 || b < 0 || !tok_merge_find(t, a, b, &rank, &merged)) return CLARA_OK;
    return heap_push(
        e, (heap_ent){
               .key = (uint64_t)rank << 32 | (uint32_t)i, .left = a, .right = b, .merged = merged});
}

/* Initial symbols: one per character; characters not in the vocabulary become their <0xXX>
 * byte pieces (byte_fallback, all of them present) or <unk>. Returns the symbol count. */
static clara_status initial_symbols(const clara_tokenizer *t, enc_ctx *e, const uint8_t *w,
                                    size_t n, size_t *count) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t l = w[i] < 0x80 ? 1 : tok_utf8_len(w + i, n - i);
        int32_t id;
        if (l == 1)
            id = t->ascii_id[w[i]];
        else if (l == SPIECE_LEN && memcmp(w + i, SPIECE, SPIECE_LEN) == 0)
            id = e->spiece_id;
        else
            id = tok_lookup(t, (const char *)w + i, l);
        if (id >= 0) {
            e->sym[k++] = id;
        } else {
            bool bytes = t->byte_fallback;
            for (size_t b = 0; bytes && b < l; b++) bytes = t->byte_id[w[i + b]] >= 0;
            if (bytes) {
                for (size_t b = 0; b < l; b++) e->sym[k++] = t->byte_id[w[i + b]];
            } else if (t->unk_id < 0) {
                return clara_fail(CLARA_ERR_INVALID_ARG,
                                  "encode: a character is not in the vocabulary and the "
                                  "tokenizer has no unknown token");
            } else if (!(t->fuse_unk && k > 0 && e->sym[k - 1] == SYM_UNK)) {
                e->sym[k++] = SYM_UNK;
            }
        }
        i += l;
    }
    *count = k;
    return CLARA_OK;
}

static clara_status bpe_word(const clara_tokenizer *t, enc_ctx *e, const uint8_t *w, size_t n,
                             clara_ids *out) {
    if (t->ignore_merges) {
        int32_t id = tok_lookup(t, (const char *)w, n);
        if (id >= 0) return clara_ids_push(out, id);
    }
    size_t k = 0;
    clara_status s = reserve_syms(e, n);
    if (s == CLARA_OK) s = initial_symbols(t, e, w, n, &k);
    if (s != CLARA_OK) return s;
    for (size_t i = 0; i < k; i++) {
        e->prev[i] = (int32_t)i - 1;
        e->next[i] = i + 1 < k ? (int32_t)i + 1 : -1;
    }
    e->heap_n = 0;
    for (size_t i = 0; i + 1 < k && s == CLARA_OK; i++) s = push_pair(t, e, (int32_t)i);
    while (s == CLARA_OK && e->heap_n > 0) {
        heap_ent h = heap_pop(e);
        int32_t i = (int32_t)(uint32_t)h.key, j = e->next[i];
        /* stale: the left symbol was merged away or changed, or its right neighbour did */
        if (e->sym[i] != h.left || j < 0 || e->sym[j] != h.right) continue;
        e->sym[i] = h.merged;
        e->sym[j] = SYM_DEAD;
        e->next[i] = e->next[j];
        if (e->next[j] >= 0) e->prev[e->next[j]] = i;
        s = push_pair(t, e, e->prev[i]);
        if (s == CLARA_OK) s = push_pair(t, e, i);
    }
    for (int32_t i = k ? 0 : -1; i >= 0 && s == CLARA_OK; i = e->next[i])
        s = clara_ids_push(out, e->sym[i] == SYM_UNK ? t->unk_id : e->sym[i]);
    return s;
}

/* ---- normalization ------------------------------------------------------------------------- */

/* Whether the segment starting at byte `start` of the input gets a leading "▁". */
static bool prepends(const clara_tokenizer *t, const uint8_t *seg, size_t n, size_t start) {
    if (t->prepend == TOK_PREPEND_NEVER) return false;
    if (t->norm == TOK_NORM_LEGACY) return true; /* Prepend("▁"), unconditionally */
    /* Metaspace: never on a segment already starting with "▁" (or a space, which becomes one);
     * "first" only on the segment at the very start of the input */
    if (seg[0] == ' ' || (n >= SPIECE_LEN && memcmp(seg, SPIECE, SPIECE_LEN) == 0)) return false;
    return t->prepend == TOK_PREPEND_ALWAYS || start == 0;
}

static clara_status encode_segment(const clara_tokenizer *t, enc_ctx *e, const uint8_t *seg,
                                   size_t n, size_t start, clara_ids *out) {
    if (n == 0) return CLARA_OK;
    if (n > (SIZE_MAX - SPIECE_LEN) / SPIECE_LEN)
        return clara_fail(CLARA_ERR_NOMEM, "encode: text too long");
    clara_status s = grow((void **)&e->norm, &e->norm_cap, SPIECE_LEN * (n + 1), 1);
    if (s != CLARA_OK) return s;
    size_t m = 0;
    if (prepends(t, seg, n, start)) memcpy(e->norm, SPIECE, SPIECE_LEN), m = SPIECE_LEN;
    for (size_t i = 0; i < n; i++) {
        if (seg[i] == ' ')
            memcpy(e->norm + m, SPIECE, SPIECE_LEN), m += SPIECE_LEN;
        else
            e->norm[m++] = (char)seg[i];
    }
    const uint8_t *w = (const uint8_t *)e->norm;
    if (!(t->norm == TOK_NORM_METASPACE && t->ms_split)) return bpe_word(t, e, w, m, out);
    /* Metaspace split: a new word before every "▁" that does not start the current one */
    size_t ws = 0;
    for (size_t i = 1; i + SPIECE_LEN <= m && s == CLARA_OK; i++) {
        if (memcmp(w + i, SPIECE, SPIECE_LEN) != 0 || i == ws) continue;
        s = bpe_word(t, e, w + ws, i - ws, out);
        ws = i;
    }
    return s == CLARA_OK ? bpe_word(t, e, w + ws, m - ws, out) : s;
}

clara_status clara_tokenizer_encode(const clara_tokenizer *t, const char *text, size_t len,
                                    clara_ids *out) {
    const uint8_t *p = (const uint8_t *)text;
    if (len && !text) return clara_fail(CLARA_ERR_INVALID_ARG, "encode: NULL text");
    size_t bad = len ? tok_utf8_check(p, len) : 0;
    if (bad != len)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "encode: text is not valid UTF-8 at byte offset %zu", bad);
    enc_ctx e = {0};
    e.spiece_id = tok_lookup(t, SPIECE, SPIECE_LEN);
    size_t n0 = out->n, seg = 0;
    clara_status s = CLARA_OK;
    for (size_t i = 0; i < len && s == CLARA_OK;) {
        size_t ml;
        int32_t id = t->root_child[p[i]] < 0 ? -1 : tok_added_at(t, p, len, i, &ml);
        if (id < 0) {
            i++;
            continue;
        }
        s = encode_segment(t, &e, p + seg, i - seg, seg, out);
        if (s == CLARA_OK) s = clara_ids_push(out, id);
        i += ml;
        seg = i;
    }
    if (s == CLARA_OK) s = encode_segment(t, &e, p + seg, len - seg, seg, out);
    enc_free(&e);
    if (s != CLARA_OK) out->n = n0;
    return s;
}
