/* spm_model.c - reader for SentencePiece's tokenizer.model (a serialized ModelProto, protobuf
 * wire format) with a minimal bounded protobuf decoder, and the derivation of BPE merges from
 * the vocabulary the way Hugging Face's converter does it.
 *
 * Fields used (sentencepiece_model.proto): ModelProto { 1 repeated SentencePiece pieces,
 * 2 TrainerSpec trainer_spec, 3 NormalizerSpec normalizer_spec }; SentencePiece { 1 piece
 * string, 2 score float (fixed32), 3 type enum NORMAL=1 UNKNOWN=2 CONTROL=3 USER_DEFINED=4
 * UNUSED=5 BYTE=6 (default NORMAL) }; TrainerSpec { 3 model_type (UNIGRAM=1 default, BPE=2,
 * WORD=3, CHAR=4), 35 byte_fallback, 40 unk_id (default 0), 41 bos_id (1), 42 eos_id (2),
 * 43 pad_id (-1) }; NormalizerSpec { 1 name, 3 add_dummy_prefix, 4 remove_extra_whitespaces,
 * 5 escape_whitespaces (all default true) }. Unknown fields of any wire type are skipped; groups
 * (wire types 3, 4) and wire types 6, 7 are rejected; a message that appears twice is merged
 * (later scalar fields win), as protobuf does. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fp16.h"
#include "base/status.h"
#include "convert/hf_tokenizer_internal.h"

typedef struct {
    const uint8_t *p, *end, *base; /* base: start of the file, for offsets in messages */
    const char *name;
} pb_buf;

typedef struct {
    uint64_t model_type;
    bool byte_fallback;
    int64_t ids[4]; /* unk, bos, eos, pad */
} spm_trainer;

typedef struct {
    const uint8_t *name;
    size_t name_len;
    bool add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
} spm_normalizer;

static size_t pb_off(const pb_buf *b) {
    return (size_t)(b->p - b->base);
}

static clara_status pb_varint(pb_buf *b, uint64_t *v) {
    uint64_t r = 0;
    size_t start = pb_off(b);
    for (int i = 0; i < 10; i++) {
        if (b->p >= b->end)
            return clara_fail(CLARA_ERR_FORMAT, "%s: truncated varint at byte %zu", b->name, start);
        uint8_t c = *b->p++;
        if (i == 9 && c > 1)
            return clara_fail(CLARA_ERR_FORMAT, "%s: varint longer than 64 bits at byte %zu",
                              b->name, start);
        r |= (uint64_t)(c & 0x7f) << (7 * i);
        if (!(c & 0x80)) {
            *v = r;
            return CLARA_OK;
        }
    }
    return CLARA_ERR_FORMAT; /* not reached: the tenth byte either ends or fails above */
}

static clara_status pb_key(pb_buf *b, uint32_t *field, int *wire) {
    uint64_t k;
    size_t at = pb_off(b);
    clara_status s = pb_varint(b, &k);
    if (s != CLARA_OK) return s;
    *wire = (int)(k & 7);
    if ((k >> 3) == 0 || (k >> 3) > 536870911u)
        return clara_fail(CLARA_ERR_FORMAT, "%s: invalid field number at byte %zu", b->name, at);
    *field = (uint32_t)(k >> 3);
    if (*wire == 3 || *wire == 4)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: field %u at byte %zu is a group (wire type %d), not supported",
                          b->name, *field, at, *wire);
    if (*wire > 5)
        return clara_fail(CLARA_ERR_FORMAT, "%s: field %u at byte %zu has invalid wire type %d",
                          b->name, *field, at, *wire);
    return CLARA_OK;
}

/* Length-delimited payload: *sub covers it and b moves past it. */
static clara_status pb_len(pb_buf *b, uint32_t field, pb_buf *sub) {
    uint64_t n;
    clara_status s = pb_varint(b, &n);
    if (s != CLARA_OK) return s;
    if (n > (uint64_t)(b->end - b->p))
        return clara_fail(
            CLARA_ERR_FORMAT, "%s: field %u: length %llu at byte %zu runs past the end (%zu left)",
            b->name, field, (unsigned long long)n, pb_off(b), (size_t)(b->end - b->p));
    *sub = *b;
    sub->end = b->p + n;
    b->p += n;
    return CLARA_OK;
}

static clara_status pb_fixed(pb_buf *b, uint32_t field, size_t n, uint32_t *v32) {
    if ((size_t)(b->end - b->p) < n)
        return clara_fail(CLARA_ERR_FORMAT, "%s: field %u: truncated fixed%zu at byte %zu", b->name,
                          field, n * 8, pb_off(b));
    if (v32)
        *v32 = (uint32_t)b->p[0] | (uint32_t)b->p[1] << 8 | (uint32_t)b->p[2] << 16 |
               (uint32_t)b->p[3] << 24;
    b->p += n;
    return CLARA_OK;
}

static clara_status pb_skip(pb_buf *b, uint32_t field, int wire) {
    uint64_t v;
    pb_buf sub;
    switch (wire) {
    case 0:
        return pb_varint(b, &v);
    case 1:
        return pb_fixed(b, field, 8, NULL);
    case 2:
        return pb_len(b, field, &sub);
    default:
        return pb_fixed(b, field, 4, NULL);
    }
}

static clara_status pb_want(const pb_buf *b, uint32_t field, int wire, int want, const char *msg) {
    if (wire == want) return CLARA_OK;
    return clara_fail(CLARA_ERR_FORMAT, "%s: %s field %u has wire type %d, expected %d (byte %zu)",
                      b->name, msg, field, wire, want, pb_off(b));
}

/* ---- messages ---- */

typedef struct {
    const uint8_t *text;
    size_t len;
    float score;
    uint64_t type;
} spm_piece;

static clara_status parse_piece(pb_buf *b, spm_piece *pc) {
    pc->text = NULL;
    pc->len = 0;
    pc->score = 0;
    pc->type = CLARA_TOKTYPE_NORMAL;
    while (b->p < b->end) {
        uint32_t f, bits = 0;
        int w;
        pb_buf sub;
        clara_status s = pb_key(b, &f, &w);
        if (s == CLARA_OK && f >= 1 && f <= 3)
            s = pb_want(b, f, w, f == 1 ? 2 : f == 2 ? 5 : 0, "SentencePiece");
        if (s != CLARA_OK) return s;
        if (f == 1) {
            if ((s = pb_len(b, f, &sub)) != CLARA_OK) return s;
            pc->text = sub.p;
            pc->len = (size_t)(sub.end - sub.p);
        } else if (f == 2) {
            if ((s = pb_fixed(b, f, 4, &bits)) != CLARA_OK) return s;
            pc->score = clara_bits_f32(bits);
        } else if (f == 3) {
            if ((s = pb_varint(b, &pc->type)) != CLARA_OK) return s;
        } else if ((s = pb_skip(b, f, w)) != CLARA_OK) {
            return s;
        }
    }
    return CLARA_OK;
}

static clara_status parse_trainer(pb_buf *b, spm_trainer *tr) {
    while (b->p < b->end) {
        uint32_t f;
        int w;
        uint64_t v;
        clara_status s = pb_key(b, &f, &w);
        bool known = f == 3 || f == 35 || (f >= 40 && f <= 43);
        if (s == CLARA_OK && known) s = pb_want(b, f, w, 0, "TrainerSpec");
        if (s != CLARA_OK) return s;
        if (!known) {
            if ((s = pb_skip(b, f, w)) != CLARA_OK) return s;
            continue;
        }
        if ((s = pb_varint(b, &v)) != CLARA_OK) return s;
        if (f == 3)
            tr->model_type = v;
        else if (f == 35)
            tr->byte_fallback = v != 0;
        else if ((int64_t)v < INT32_MIN || (int64_t)v > INT32_MAX) /* int32: sign-extended */
            return clara_fail(CLARA_ERR_FORMAT, "%s: TrainerSpec field %u: %lld is not an int32",
                              b->name, f, (long long)(int64_t)v);
        else
            tr->ids[f - 40] = (int64_t)v;
    }
    return CLARA_OK;
}

static clara_status parse_normalizer(pb_buf *b, spm_normalizer *nm) {
    while (b->p < b->end) {
        uint32_t f;
        int w;
        uint64_t v;
        pb_buf sub;
        clara_status s = pb_key(b, &f, &w);
        bool known = f == 1 || (f >= 3 && f <= 5);
        if (s == CLARA_OK && known) s = pb_want(b, f, w, f == 1 ? 2 : 0, "NormalizerSpec");
        if (s != CLARA_OK) return s;
        if (!known) {
            if ((s = pb_skip(b, f, w)) != CLARA_OK) return s;
        } else if (f == 1) {
            if ((s = pb_len(b, f, &sub)) != CLARA_OK) return s;
            nm->name = sub.p;
            nm->name_len = (size_t)(sub.end - sub.p);
        } else {
            if ((s = pb_varint(b, &v)) != CLARA_OK) return s;
            bool *dst[] = {&nm->add_dummy_prefix, &nm->remove_extra_whitespaces,
                           &nm->escape_whitespaces};
            *dst[f - 3] = v != 0;
        }
    }
    return CLARA_OK;
}

/* Appends one piece to t (arrays grow by doubling; *cap is their capacity). */
static clara_status add_piece(clara_hf_tokenizer *t, uint32_t *cap, const spm_piece *pc,
                              const char *name) {
    uint32_t id = t->n_vocab;
    const char *p = pc->text ? hftok_piece_problem((const char *)pc->text, pc->len) : "is missing";
    if (p) return clara_fail(CLARA_ERR_FORMAT, "%s: piece %u %s", name, id, p);
    if (pc->type < 1 || pc->type > 6)
        return clara_fail(CLARA_ERR_FORMAT, "%s: piece %u has unknown type %llu", name, id,
                          (unsigned long long)pc->type);
    if (isnan(pc->score))
        return clara_fail(CLARA_ERR_FORMAT, "%s: piece %u has a NaN score", name, id);
    if (id >= CLARA_TOK_MAX_VOCAB)
        return clara_fail(CLARA_ERR_NOMEM, "%s: more than %u pieces", name, CLARA_TOK_MAX_VOCAB);
    if (id == *cap) {
        uint32_t nc = *cap ? *cap * 2 : 256;
        char **tok = realloc(t->tokens, nc * sizeof *tok);
        if (tok) t->tokens = tok;
        float *sc = realloc(t->scores, nc * sizeof *sc);
        if (sc) t->scores = sc;
        int32_t *ty = realloc(t->token_types, nc * sizeof *ty);
        if (ty) t->token_types = ty;
        if (!tok || !sc || !ty) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        *cap = nc;
    }
    if (!(t->tokens[id] = hftok_strndup((const char *)pc->text, pc->len)))
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    t->scores[id] = pc->score;
    t->token_types[id] = (int32_t)pc->type;
    t->n_vocab++;
    return CLARA_OK;
}

static clara_status parse_model(pb_buf *b, clara_hf_tokenizer *t, spm_trainer *tr,
                                spm_normalizer *nm) {
    uint32_t cap = 0;
    while (b->p < b->end) {
        uint32_t f;
        int w;
        pb_buf sub;
        spm_piece pc;
        clara_status s = pb_key(b, &f, &w);
        if (s == CLARA_OK && f >= 1 && f <= 3) s = pb_want(b, f, w, 2, "ModelProto");
        if (s != CLARA_OK) return s;
        if (f < 1 || f > 3) {
            if ((s = pb_skip(b, f, w)) != CLARA_OK) return s;
            continue;
        }
        if ((s = pb_len(b, f, &sub)) != CLARA_OK) return s;
        if (f == 1) {
            if ((s = parse_piece(&sub, &pc)) != CLARA_OK ||
                (s = add_piece(t, &cap, &pc, b->name)) != CLARA_OK)
                return s;
        } else if (f == 2) {
            if ((s = parse_trainer(&sub, tr)) != CLARA_OK) return s;
        } else if ((s = parse_normalizer(&sub, nm)) != CLARA_OK) {
            return s;
        }
    }
    return CLARA_OK;
}

/* ---- checks and derived fields ---- */

static clara_status check_spec(const clara_hf_tokenizer *t, const spm_trainer *tr,
                               const spm_normalizer *nm, const char *name) {
    static const char *const types[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
    static const char *const id_names[] = {"unk_id", "bos_id", "eos_id", "pad_id"};
    char q[64];
    if (t->n_vocab == 0) return clara_fail(CLARA_ERR_FORMAT, "%s: the model has no pieces", name);
    if (tr->model_type != 2)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: model_type %s is not supported (only BPE)",
                          name, tr->model_type <= 4 ? types[tr->model_type] : "unknown");
    if (nm->name && !(nm->name_len == 8 && memcmp(nm->name, "identity", 8) == 0)) {
        char buf[48];
        snprintf(buf, sizeof buf, "%.*s", (int)(nm->name_len < 40 ? nm->name_len : 40), nm->name);
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: normalizer_spec.name '%s' is not supported (only identity)", name,
                          hftok_quote(buf, q, sizeof q));
    }
    if (!nm->escape_whitespaces)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: escape_whitespaces=false is not supported",
                          name);
    for (int i = 0; i < 4; i++) {
        int64_t id = tr->ids[i];
        if ((id < 0 && (i == 0 || id != -1)) || id >= (int64_t)t->n_vocab)
            return clara_fail(CLARA_ERR_FORMAT, "%s: trainer_spec.%s %lld is not a piece id", name,
                              id_names[i], (long long)id);
    }
    return CLARA_OK;
}

clara_status hftok_check_unique(const clara_hf_tokenizer *t, const char *name, const char *what) {
    hftok_map m;
    char q[64];
    if (!hftok_map_init(&m, t->tokens, t->n_vocab))
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    clara_status s = CLARA_OK;
    for (uint32_t id = 0; id < t->n_vocab && s == CLARA_OK; id++) {
        int64_t dup = hftok_map_insert(&m, id);
        if (dup >= 0)
            s = clara_fail(CLARA_ERR_FORMAT, "%s: %s '%s' appears twice (ids %lld, %u)", name, what,
                           hftok_quote(t->tokens[id], q, sizeof q), (long long)dup, id);
    }
    hftok_map_free(&m);
    return s;
}

/* HF's converter makes unknown/control pieces special added tokens and user-defined ones
 * non-special added tokens (normalized=false for both). */
clara_status hftok_added_from_types(clara_hf_tokenizer *t) {
    size_t n = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        int32_t ty = t->token_types[i];
        n += ty == CLARA_TOKTYPE_UNKNOWN || ty == CLARA_TOKTYPE_CONTROL ||
             ty == CLARA_TOKTYPE_USER_DEFINED;
    }
    t->added = calloc(n + 1, sizeof *t->added);
    if (!t->added) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        int32_t ty = t->token_types[i];
        if (ty != CLARA_TOKTYPE_UNKNOWN && ty != CLARA_TOKTYPE_CONTROL &&
            ty != CLARA_TOKTYPE_USER_DEFINED)
            continue;
        clara_added_token *a = &t->added[t->n_added];
        if (!(a->content = hftok_strndup(t->tokens[i], strlen(t->tokens[i]))))
            return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        a->id = i;
        a->special = ty != CLARA_TOKTYPE_USER_DEFINED;
        t->n_added++;
    }
    return CLARA_OK;
}

clara_status hf_tokenizer_parse_spm(const uint8_t *data, size_t len, const char *name,
                                    clara_hf_tokenizer *out) {
    pb_buf b = {data, data + len, data, name};
    spm_trainer tr = {.model_type = 1, .ids = {0, 1, 2, -1}};
    spm_normalizer nm = {NULL, 0, true, true, true};
    hftok_init(out);
    if (len == 0 || !data) return clara_fail(CLARA_ERR_FORMAT, "%s: empty file", name);
    clara_status s = parse_model(&b, out, &tr, &nm);
    if (s == CLARA_OK) s = check_spec(out, &tr, &nm, name);
    if (s == CLARA_OK) s = hftok_check_unique(out, name, "piece");
    if (s == CLARA_OK) {
        out->byte_fallback = tr.byte_fallback;
        out->fuse_unk = true; /* what HF's LlamaConverter writes for BPE models */
        out->unk_id = (int32_t)tr.ids[0];
        out->bos_id = (int32_t)tr.ids[1];
        out->eos_id = (int32_t)tr.ids[2];
        out->pad_id = (int32_t)tr.ids[3];
        out->norm = CLARA_NORM_LEGACY;
        out->prepend_scheme = nm.add_dummy_prefix ? CLARA_PREPEND_ALWAYS : CLARA_PREPEND_NEVER;
        out->remove_extra_whitespaces = nm.remove_extra_whitespaces;
        s = hftok_added_from_types(out);
    }
    if (s == CLARA_OK) s = hftok_spm_derive_merges(out, name);
    if (s == CLARA_OK && !(out->source = hftok_strndup("tokenizer.model", 15)))
        s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    if (s != CLARA_OK) hf_tokenizer_free(out);
    return s;
}

/* ---- merges ----
 * tokenizer.model stores no merges. transformers' SentencePieceExtractor.extract(vocab_scores),
 * as used by LlamaConverter when Mistral's tokenizer.json was written, derives them: for every
 * piece (in id order), every split into two pieces of the vocabulary (split between code points)
 * is a merge; the splits of one piece are ordered by (left id, right id); then all merges are
 * stably sorted by the piece's score, highest first. (LlamaConverter also forces the scores of
 * ids 0-2 to 0, which SentencePiece already stores for <unk>, <s>, </s>. Newer transformers
 * versions break score ties by the lengths of the two sides instead.) */

typedef struct {
    float score;
    uint32_t seq, l, r;
} merge_cand;

static int cmp_local(const void *a, const void *b) {
    const merge_cand *x = a, *y = b;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    return x->r < y->r ? -1 : x->r > y->r;
}

static int cmp_rank(const void *a, const void *b) {
    const merge_cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Appends the splits of piece p to *c (growing it); sorted by (left id, right id). */
static clara_status piece_splits(const clara_hf_tokenizer *t, const hftok_map *m, uint32_t p,
                                 merge_cand **c, size_t *n, size_t *cap, const char *name) {
    const char *s = t->tokens[p];
    size_t len = strlen(s), start = *n;
    for (size_t k = hftok_utf8_char_len((const uint8_t *)s, len); k < len;
         k += hftok_utf8_char_len((const uint8_t *)s + k, len - k)) {
        int64_t l = hftok_map_find(m, s, k), r = l < 0 ? -1 : hftok_map_find(m, s + k, len - k);
        if (r < 0) continue;
        if (*n >= CLARA_TOK_MAX_MERGES)
            return clara_fail(CLARA_ERR_NOMEM, "%s: more than %u merges", name,
                              CLARA_TOK_MAX_MERGES);
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 1024;
            merge_cand *g = realloc(*c, nc * sizeof *g);
            if (!g) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
            *c = g;
            *cap = nc;
        }
        (*c)[(*n)++] = (merge_cand){t->scores[p], 0, (uint32_t)l, (uint32_t)r};
    }
    if (*n - start > 1) qsort(*c + start, *n - start, sizeof **c, cmp_local);
    return CLARA_OK;
}

static clara_status merge_strings(clara_hf_tokenizer *t, const merge_cand *c, size_t n,
                                  const char *name) {
    t->merges = calloc(n + 1, sizeof *t->merges);
    if (!t->merges) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const char *l = t->tokens[c[i].l], *r = t->tokens[c[i].r];
        size_t ln = strlen(l), rn = strlen(r);
        if (strchr(l, ' ') || strchr(r, ' '))
            return clara_fail(CLARA_ERR_UNSUPPORTED,
                              "%s: merge %zu: a piece with a space cannot be stored as llama.cpp's "
                              "\"left right\"",
                              name, i);
        char *m = malloc(ln + rn + 2);
        if (!m) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        memcpy(m, l, ln);
        m[ln] = ' ';
        memcpy(m + ln + 1, r, rn + 1);
        t->merges[t->n_merges++] = m;
    }
    return CLARA_OK;
}

clara_status hftok_spm_derive_merges(clara_hf_tokenizer *t, const char *name) {
    hftok_map m;
    merge_cand *c = NULL;
    size_t n = 0, cap = 0;
    if (!hftok_map_init(&m, t->tokens, t->n_vocab))
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    for (uint32_t id = 0; id < t->n_vocab; id++) hftok_map_insert(&m, id);
    clara_status s = CLARA_OK;
    for (uint32_t p = 0; p < t->n_vocab && s == CLARA_OK; p++)
        s = piece_splits(t, &m, p, &c, &n, &cap, name);
    hftok_map_free(&m);
    if (s == CLARA_OK) {
        for (size_t i = 0; i < n; i++) c[i].seq = (uint32_t)i;
        if (n) qsort(c, n, sizeof *c, cmp_rank);
        s = merge_strings(t, c, n, name);
    }
    free(c);
    return s;
}
