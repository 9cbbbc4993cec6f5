/* chunk.c - token counts and word-aligned chunking for the memory store: a long memory is split
 * into chunks that the encoder compresses whole (at most doc_max_length text tokens each, so
 * nothing is cut, MODEL.md: Compressing a document).
 *
 * Tokenization depends on context (BPE merges across spaces, and every document gets its own
 * leading "▁"), so a chunk's count is only known by encoding the chunk on its own; slicing the
 * ids of the whole text would be wrong. Each chunk is therefore found by trying candidate ends
 * and encoding each candidate as a document, and the work stays linear in the text:
 *   - a chunk of n tokens covers at most n * clara_tokenizer_max_token_bytes() bytes, so the
 *     candidates lie in a window of that many bytes after the chunk's start;
 *   - the candidates are searched by interpolation from the bytes per token of the last
 *     attempt (a few encodes of about one chunk each), then by bisection. */
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "base/utf8.h"
#include "model.h"
#include "pipeline.h"

/* Window (bytes per token) when the tokenizer gives no bound (fused <unk>): generous for any
 * real text; a chunk could then be shorter than the largest that fits, never too long. */
#define UNBOUNDED_TOKEN_BYTES 64

/* Interpolated attempts before the search falls back to bisection (which bounds the worst
 * case at log2 of the candidates). */
#define INTERP_PROBES 4

uint32_t clara_model_doc_max_length(const clara_model *m) {
    return m->meta.doc_max_length;
}

clara_status clara_count_tokens(const clara_model *m, const char *text, size_t len,
                                uint32_t *n_tokens) {
    if (!m || !n_tokens || (len && !text))
        return clara_fail(CLARA_ERR_INVALID_ARG, "count_tokens: NULL argument");
    clara_status s = clara_check_text(m, "text", 0, text, len);
    if (s != CLARA_OK) return s;
    clara_ids ids = {0};
    s = clara_tokenizer_encode(m->tok, text, len, &ids);
    if (s == CLARA_OK && ids.n > UINT32_MAX)
        s = clara_fail(CLARA_ERR_INVALID_ARG, "count_tokens: more than 2^32 tokens");
    if (s == CLARA_OK) *n_tokens = (uint32_t)ids.n;
    clara_ids_free(&ids);
    return s;
}

/* The whitespace chunks break after: ASCII space, tab, newline, vertical tab, form feed, CR. */
static bool is_ws(char c) {
    return c == ' ' || (c >= '\t' && c <= '\r');
}

typedef struct {
    const clara_model *m;
    const char *text;
    size_t len;
    uint32_t limit; /* max tokens per chunk */
    size_t window;  /* bytes a chunk of `limit` tokens can cover at most */
    size_t *cand;   /* candidate chunk ends of the current search, ascending */
    size_t n_cand, cap_cand;
    clara_ids ids;          /* encode scratch */
    double bytes_per_token; /* of the last attempt: where the next search starts */
} splitter;

static clara_status push_cand(splitter *sp, size_t end) {
    if (sp->n_cand == sp->cap_cand) {
        size_t cap = sp->cap_cand ? sp->cap_cand * 2 : 256;
        size_t *c = realloc(sp->cand, cap * sizeof *c);
        if (!c) return clara_fail(CLARA_ERR_NOMEM, "split_text: out of memory");
        sp->cand = c;
        sp->cap_cand = cap;
    }
    sp->cand[sp->n_cand++] = end;
    return CLARA_OK;
}

/* Ends after a whitespace run, in (start, stop]: p where text[p-1] is whitespace and text[p] is
 * not, and the end of the text. A chunk must hold a non-whitespace character, so leading
 * whitespace (only possible at the start of the text) joins the first word's chunk. */
static clara_status word_ends(splitter *sp, size_t start, size_t stop) {
    const char *t = sp->text;
    size_t p = start;
    while (p < stop && is_ws(t[p])) p++; /* leading whitespace */
    sp->n_cand = 0;
    clara_status s = CLARA_OK;
    for (p++; p <= stop && s == CLARA_OK; p++)
        if (p == sp->len || (is_ws(t[p - 1]) && !is_ws(t[p]))) s = push_cand(sp, p);
    return s;
}

/* Every UTF-8 character boundary in (start, stop] (the text is valid UTF-8). */
static clara_status char_ends(splitter *sp, size_t start, size_t stop) {
    const uint8_t *t = (const uint8_t *)sp->text;
    sp->n_cand = 0;
    clara_status s = CLARA_OK;
    for (size_t p = start + 1; p <= stop && s == CLARA_OK; p++)
        if (p == sp->len || (t[p] & 0xC0) != 0x80) s = push_cand(sp, p);
    return s;
}

/* Tokens of text[start, end) encoded as a document of its own. */
static clara_status count_range(splitter *sp, size_t start, size_t end, size_t *n) {
    sp->ids.n = 0;
    clara_status s = clara_tokenizer_encode(sp->m->tok, sp->text + start, end - start, &sp->ids);
    *n = sp->ids.n;
    if (s == CLARA_OK && *n) sp->bytes_per_token = (double)(end - start) / (double)*n;
    return s;
}

/* Index of the last candidate at or before byte `at` (-1 when none). */
static long cand_at_or_before(const splitter *sp, double at) {
    long lo = -1, hi = (long)sp->n_cand; /* cand[lo] <= at < cand[hi] */
    while (hi - lo > 1) {
        long mid = lo + (hi - lo) / 2;
        if ((double)sp->cand[mid] <= at)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* The last candidate end whose chunk fits `limit` tokens (token counts grow with the end, so
 * the fitting candidates are a prefix): *best = its index (-1 when none fits), *best_n its
 * tokens. Keeps lo < probe < hi, lo fitting and hi not, until they meet. */
static clara_status search(splitter *sp, size_t start, long *best, uint32_t *best_n) {
    long lo = -1, hi = (long)sp->n_cand;
    size_t n, lo_n = 0;
    clara_status s = CLARA_OK;
    for (int probes = 0; hi - lo > 1 && s == CLARA_OK; probes++) {
        long g = lo + (hi - lo) / 2;
        if (probes < INTERP_PROBES) /* where `limit` tokens end at the last rate */
            g = cand_at_or_before(sp, (double)start + sp->bytes_per_token * sp->limit);
        if (g <= lo) g = lo + 1;
        if (g >= hi) g = hi - 1;
        s = count_range(sp, start, sp->cand[g], &n);
        if (s != CLARA_OK) break;
        if (n <= sp->limit)
            lo = g, lo_n = n;
        else
            hi = g;
    }
    *best = lo;
    *best_n = (uint32_t)lo_n;
    return s;
}

/* The longest chunk starting at `start`: up to a whitespace run's end when one fits, else (a
 * word or a whitespace run alone over the limit) up to a character boundary. */
static clara_status next_chunk(splitter *sp, size_t start, clara_chunk *out) {
    size_t stop = sp->len - start < sp->window ? sp->len : start + sp->window;
    long best;
    uint32_t n;
    clara_status s = word_ends(sp, start, stop);
    if (s == CLARA_OK) s = search(sp, start, &best, &n);
    if (s == CLARA_OK && best < 0) {
        s = char_ends(sp, start, stop);
        if (s == CLARA_OK) s = search(sp, start, &best, &n);
        if (s == CLARA_OK && best < 0)
            return clara_fail(CLARA_ERR_INVALID_ARG,
                              "split_text: the character at byte %zu alone is more than %u "
                              "tokens",
                              start, sp->limit);
    }
    if (s != CLARA_OK) return s;
    *out = (clara_chunk){start, sp->cand[best] - start, n};
    return CLARA_OK;
}

/* Refuses what no chunking can serve: bad arguments, a limit the encoder would cut, text that
 * is not valid UTF-8 or holds special-token strings (the encoder refuses those). */
static clara_status split_check(const clara_model *m, const char *text, size_t len, uint32_t *limit,
                                clara_chunk **chunks, size_t *n_chunks) {
    if (!m || !chunks || !n_chunks || (len && !text))
        return clara_fail(CLARA_ERR_INVALID_ARG, "split_text: NULL argument");
    uint32_t dml = m->meta.doc_max_length;
    if (*limit == 0) *limit = dml;
    if (*limit > dml)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "split_text: max_tokens %u is more than the model's doc_max_length %u "
                          "(longer chunks would be cut when compressed)",
                          *limit, dml);
    size_t bad;
    if (!clara_utf8_valid(text, len, &bad))
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "split_text: the text is not valid UTF-8 at byte offset %zu", bad);
    return clara_check_text(m, "text", 0, text, len);
}

clara_status clara_split_text(const clara_model *m, const char *text, size_t len,
                              uint32_t max_tokens, size_t max_chunks, clara_chunk **chunks,
                              size_t *n_chunks) {
    uint32_t limit = max_tokens;
    clara_status s = split_check(m, text, len, &limit, chunks, n_chunks);
    if (s != CLARA_OK) return s;
    *chunks = NULL;
    *n_chunks = 0;
    size_t per = clara_tokenizer_max_token_bytes(m->tok);
    if (!per) per = UNBOUNDED_TOKEN_BYTES;
    splitter sp = {m, text, len, limit, (size_t)limit * per, NULL, 0, 0, {0}, 4.0};
    size_t first = 0, n = 0, cap = 0;
    while (first < len && is_ws(text[first])) first++;
    clara_chunk *out = NULL;
    for (size_t start = 0; first < len && start < len && s == CLARA_OK;) {
        if (max_chunks && n == max_chunks) {
            s = clara_fail(CLARA_ERR_NOMEM,
                           "split_text: the text needs more than the limit of %zu chunks of %u "
                           "tokens",
                           max_chunks, limit);
            break;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            clara_chunk *c = realloc(out, nc * sizeof *c);
            if (!c) {
                s = clara_fail(CLARA_ERR_NOMEM, "split_text: out of memory");
                break;
            }
            out = c;
            cap = nc;
        }
        s = next_chunk(&sp, start, &out[n]);
        if (s == CLARA_OK) start += out[n++].len;
    }
    free(sp.cand);
    clara_ids_free(&sp.ids);
    if (s != CLARA_OK) {
        free(out);
        return s;
    }
    *chunks = out;
    *n_chunks = n;
    return CLARA_OK;
}
