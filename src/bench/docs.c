/* docs.c - documents of an exact token length for `clara bench` (docs.h). Token counts come from
 * the model's tokenizer (the one `clara tokenize` uses, read from the GGUF), so fitting a document
 * costs a few encodes instead of forward passes; the benchmark then checks them against the
 * n_tokens clara_compress reports. With the legacy normalizer no piece spans a word boundary, so
 * the count grows with every word and a binary search over the number of words finds the longest
 * prefix that fits. */
#include "bench/docs.h"

#include <cJSON.h>
#include <stdbool.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/mapfile.h"
#include "base/outfile.h"
#include "base/status.h"
#include "gguf.h"
#include "tokenizer.h"

#define MAX_TEXT_FILE ((size_t)1 << 30)

typedef struct {
    char **w;
    size_t n, cap;
    char *query;
} word_list;

static clara_status add_word(word_list *wl, const char *s, size_t len) {
    if (wl->n == wl->cap) {
        size_t cap = wl->cap ? wl->cap * 2 : 4096;
        char **w = realloc(wl->w, cap * sizeof *w);
        if (!w) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        wl->w = w;
        wl->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    memcpy(c, s, len);
    c[len] = '\0';
    wl->w[wl->n++] = c;
    return CLARA_OK;
}

/* Splits text on white space. Words with '<' or '>' are dropped: every special token (<s>,
 * <MEM0>, ...) is spelled with them, and documents containing one are refused. */
static clara_status add_words(word_list *wl, const char *text) {
    clara_status s = CLARA_OK;
    const char *p = text;
    while (*p && s == CLARA_OK) {
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        size_t n = strcspn(p, " \n\t\r");
        if (n && !memchr(p, '<', n) && !memchr(p, '>', n)) s = add_word(wl, p, n);
        p += n;
    }
    return s;
}

static void free_words(word_list *wl) {
    for (size_t i = 0; i < wl->n; i++) free(wl->w[i]);
    free(wl->w);
    free(wl->query);
    memset(wl, 0, sizeof *wl);
}

/* One JSONL line: the passages (or text) and, once, a question. */
static clara_status read_line(word_list *wl, const cJSON *j, const char *path, size_t line) {
    if (cJSON_IsString(j)) return add_words(wl, j->valuestring);
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
    const cJSON *docs = cJSON_GetObjectItemCaseSensitive(j, "docs");
    const cJSON *q0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "question"), 0);
    if (!wl->query && cJSON_IsString(q0) && !strchr(q0->valuestring, '<') &&
        !(wl->query = strdup(q0->valuestring)))
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    if (cJSON_IsString(text)) return add_words(wl, text->valuestring);
    clara_status s = CLARA_OK;
    if (cJSON_IsArray(docs)) {
        for (const cJSON *d = docs->child; d && s == CLARA_OK; d = d->next)
            if (cJSON_IsString(d)) s = add_words(wl, d->valuestring);
        return s;
    }
    return clara_fail(CLARA_ERR_FORMAT,
                      "%s:%zu: expected a JSON string or an object with \"text\" or \"docs\"", path,
                      line);
}

static clara_status read_text_file(const char *path, word_list *wl) {
    char *buf;
    size_t len;
    clara_status s = clara_read_file(path, MAX_TEXT_FILE, &buf, &len);
    if (s != CLARA_OK) return s;
    char *p = buf;
    for (size_t line = 1; p && *p && s == CLARA_OK; line++) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        if (strspn(p, " \t\r") != strlen(p)) {
            cJSON *j = cJSON_Parse(p);
            s = j ? read_line(wl, j, path, line)
                  : clara_fail(CLARA_ERR_FORMAT, "%s:%zu: not valid JSON", path, line);
            cJSON_Delete(j);
        }
        p = nl ? nl + 1 : NULL;
    }
    free(buf);
    if (s == CLARA_OK && wl->n == 0)
        s = clara_fail(CLARA_ERR_FORMAT, "%s: no text in the file", path);
    return s;
}

/* Sentences of words from a fixed list, from a fixed seed: the same text on every run. */
static clara_status generate_words(word_list *wl, size_t n_words) {
    static const char *const k[] = {
        "the",     "river",   "city",    "museum", "was",    "built",    "in",      "century",
        "people",  "known",   "north",   "early",  "king",   "music",    "station", "school",
        "island",  "famous",  "winter",  "of",     "bridge", "and",      "a",       "small",
        "village", "church",  "during",  "war",    "train",  "painter",  "library", "first",
        "later",   "moved",   "to",      "where",  "he",     "she",      "worked",  "as",
        "teacher", "company", "founded", "by",     "two",    "brothers", "market",  "square",
        "near",    "old",     "castle",  "after",  "years",  "team",     "won",     "national",
        "title",   "with",    "new",     "players"};
    uint64_t x = 0x2545f4914f6cdd1dull;
    clara_status s = CLARA_OK;
    for (size_t i = 0, left = 0; i < n_words && s == CLARA_OK; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (left == 0) left = 6 + x % 9; /* words in this sentence */
        char w[32];
        snprintf(w, sizeof w, "%s%s", k[(x >> 8) % (sizeof k / sizeof k[0])],
                 --left == 0 ? "." : "");
        s = add_word(wl, w, strlen(w));
    }
    return s;
}

typedef struct {
    const clara_tokenizer *tok;
    clara_ids ids;
    char *buf;
    size_t cap;
} counter;

/* Tokens of `text`, or -1 on failure (message recorded). */
static long count_tokens(counter *c, const char *text) {
    c->ids.n = 0;
    if (clara_tokenizer_encode(c->tok, text, strlen(text), &c->ids) != CLARA_OK) return -1;
    return (long)c->ids.n;
}

/* Joins words[start .. start+k) (circularly) with single spaces into c->buf. */
static clara_status join(counter *c, const word_list *wl, size_t start, size_t k) {
    size_t len = 0;
    for (size_t i = 0; i < k; i++) len += strlen(wl->w[(start + i) % wl->n]) + 1;
    if (len + 128 > c->cap) {
        char *b = realloc(c->buf, len + 128);
        if (!b) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        c->buf = b;
        c->cap = len + 128;
    }
    len = 0;
    for (size_t i = 0; i < k; i++) {
        const char *w = wl->w[(start + i) % wl->n];
        if (i) c->buf[len++] = ' ';
        memcpy(c->buf + len, w, strlen(w));
        len += strlen(w);
    }
    c->buf[len] = '\0';
    return CLARA_OK;
}

/* Appends one-token words until the text has `need` tokens (or none fits); returns the count. */
static long top_up(counter *c, long have, long need) {
    static const char *const fill[] = {" a", " I", ".", ",", " the", " of", " in"};
    for (int round = 0; have >= 0 && have < need && round < 16; round++) {
        size_t len = strlen(c->buf);
        long got = -1;
        for (size_t f = 0; f < sizeof fill / sizeof fill[0] && got != have + 1; f++) {
            strcpy(c->buf + len, fill[f]);
            got = count_tokens(c, c->buf);
            if (got < 0) return -1;
        }
        if (got != have + 1) {
            c->buf[len] = '\0';
            break;
        }
        have = got;
    }
    return have;
}

/* The longest run of words from `start` with at most `need` tokens, topped up to `need`. Sets
 * *used to the words taken and *got to the final count. */
static clara_status fit_doc(counter *c, const word_list *wl, size_t start, long need, size_t *used,
                            long *got) {
    size_t lo = 0, hi = (size_t)need; /* every word is at least one token */
    while (lo < hi) {
        size_t mid = (lo + hi + 1) / 2;
        clara_status s = join(c, wl, start, mid);
        long n = s == CLARA_OK ? count_tokens(c, c->buf) : -1;
        if (n < 0) return s == CLARA_OK ? CLARA_ERR_INVALID_ARG : s;
        if (n <= need)
            lo = mid;
        else
            hi = mid - 1;
    }
    clara_status s = join(c, wl, start, lo);
    long n = s == CLARA_OK ? count_tokens(c, c->buf) : -1;
    if (n >= 0) n = top_up(c, n, need);
    if (n < 0) return s == CLARA_OK ? CLARA_ERR_INVALID_ARG : s;
    *used = lo;
    *got = n;
    return CLARA_OK;
}

static clara_status build_docs(const clara_tokenizer *tok, const word_list *wl,
                               const bench_docs_params *p, bench_docs *out) {
    counter c = {tok, {0}, NULL, 0};
    clara_status s = CLARA_OK;
    out->docs = calloc(p->n_docs, sizeof *out->docs);
    out->tokens = calloc(p->n_docs, sizeof *out->tokens);
    if (!out->docs || !out->tokens) s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    size_t start = 0;
    for (size_t i = 0; i < p->n_docs && s == CLARA_OK; i++) {
        size_t used = 0;
        long got = 0;
        s = fit_doc(&c, wl, start, (long)p->target - 3, &used, &got);
        if (s == CLARA_OK && !(out->docs[i].text = strdup(c.buf)))
            s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
        if (s == CLARA_OK && clara_tokenizer_find_added(tok, c.buf, strlen(c.buf), NULL) >= 0)
            s = clara_fail(CLARA_ERR_FORMAT, "%s: document %zu contains a special token",
                           out->source, i);
        if (s != CLARA_OK) break;
        out->docs[i].len = strlen(c.buf);
        out->tokens[i] = (uint32_t)got + 3;
        out->n = i + 1;
        start = (start + used) % wl->n;
    }
    clara_ids_free(&c.ids);
    free(c.buf);
    return s;
}

static clara_status load_tokenizer(const char *path, clara_tokenizer **tok) {
    gguf_ctx *g;
    clara_status s = gguf_open(path, &g);
    if (s != CLARA_OK) return s;
    s = clara_tokenizer_load(g, tok);
    gguf_free(g);
    return s;
}

const char *bench_default_text(void) {
    static char path[PATH_MAX];
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return NULL;
    exe[n] = '\0';
    /* the repository root is one or two levels above the build directory */
    for (int up = 0; up < 3; up++) {
        char *slash = strrchr(exe, '/');
        if (!slash) return NULL;
        *slash = '\0';
        if (up == 0) continue;
        int k = snprintf(path, sizeof path, "%s/%s", exe, BENCH_DEFAULT_TEXT_REL);
        if (k > 0 && (size_t)k < sizeof path && access(path, R_OK) == 0) return path;
    }
    return NULL;
}

clara_status bench_docs_build(const bench_docs_params *p, bench_docs *out) {
    memset(out, 0, sizeof *out);
    if (p->target < 4) return clara_fail(CLARA_ERR_INVALID_ARG, "documents need at least 4 tokens");
    const char *file = p->text_file;
    if (!file && !p->generated) file = bench_default_text();
    snprintf(out->source, sizeof out->source, "%s", file ? file : "generated");
    word_list wl = {0};
    clara_tokenizer *tok = NULL;
    clara_status s = file ? read_text_file(file, &wl) : generate_words(&wl, p->n_docs * 600 + 64);
    if (s == CLARA_OK) s = load_tokenizer(p->tokenizer_gguf, &tok);
    if (s == CLARA_OK) s = build_docs(tok, &wl, p, out);
    const char *q = wl.query ? wl.query : "What are these documents about?";
    if (s == CLARA_OK && !(out->query = strdup(q)))
        s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    clara_tokenizer_free(tok);
    free_words(&wl);
    if (s != CLARA_OK) bench_docs_free(out);
    return s;
}

void bench_docs_free(bench_docs *d) {
    for (size_t i = 0; d->docs && i < d->n; i++) free((char *)d->docs[i].text);
    free(d->docs);
    free(d->tokens);
    free(d->query);
    memset(d, 0, sizeof *d);
}

clara_status bench_docs_save(const bench_docs *d, const char *path) {
    clara_outfile f;
    clara_status s = clara_outfile_open(&f, path);
    if (s != CLARA_OK) return s;
    for (size_t i = 0; i < d->n && s == CLARA_OK; i++) {
        cJSON *j = cJSON_CreateString(d->docs[i].text);
        char *line = j ? cJSON_PrintUnformatted(j) : NULL;
        s = line ? clara_outfile_write(&f, line, strlen(line))
                 : clara_fail(CLARA_ERR_NOMEM, "out of memory");
        if (s == CLARA_OK) s = clara_outfile_write(&f, "\n", 1);
        cJSON_free(line);
        cJSON_Delete(j);
    }
    if (s != CLARA_OK) {
        clara_outfile_abort(&f);
        return s;
    }
    return clara_outfile_commit(&f);
}
