/* hf_tokenizer_json.c - reader for Hugging Face tokenizer.json (the "fast" tokenizer) with a BPE
 * model, as Mistral-7B-Instruct-v0.2 ships it (spec §3.2): model.vocab {piece: id},
 * model.merges ("left right" strings, or [left, right] pairs in newer files), byte_fallback,
 * fuse_unk, unk_token, added_tokens, and the two known ways of marking word starts with "▁":
 * the legacy normalizer Sequence[Prepend("▁"), Replace(" " -> "▁")] or a Metaspace
 * pre-tokenizer. Anything else that would change tokenization is rejected, not guessed.
 *
 * tokenizer.json has no scores, but llama.cpp's "llama" (SentencePiece) tokenizer needs them.
 * llama.cpp's own converter (gguf-py LlamaHfVocab) writes a placeholder -1000.0 for every token,
 * which loses the merge order. We instead give the k-th NORMAL token (in id order) the score -k
 * and every other in-vocabulary token 0, which is exactly what SentencePiece's BPE trainer stores
 * in tokenizer.model (pieces are ranked by id; control, unknown, byte and user-defined pieces
 * score 0), so a tokenizer.json converted from a .model yields the same scores as the .model
 * itself (tested on the fixture). Added tokens past the model vocabulary get -1000.0 like
 * llama.cpp's converter. Types: unk_token -> UNKNOWN, special added tokens -> CONTROL, other
 * added tokens -> USER_DEFINED, "<0xXX>" -> BYTE, the rest NORMAL. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "convert/hf_tokenizer_internal.h"

#define SPIECE "\xe2\x96\x81" /* U+2581, the SentencePiece word marker */

/* ---- JSON helpers shared with the tokenizer_config.json reader ---- */

clara_status hftok_json_parse(const char *text, size_t len, const char *name, cJSON **out) {
    const char *end = NULL;
    *out = NULL;
    if (len == 0) return clara_fail(CLARA_ERR_FORMAT, "%s: empty file", name);
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    size_t off = (end && end >= text && end <= text + len) ? (size_t)(end - text) : 0;
    if (!root) return clara_fail(CLARA_ERR_FORMAT, "%s: not valid JSON (near byte %zu)", name, off);
    while (off < len && (text[off] == ' ' || text[off] == '\t' || text[off] == '\n' ||
                         text[off] == '\r' || text[off] == '\0'))
        off++;
    if (off < len) {
        cJSON_Delete(root);
        return clara_fail(CLARA_ERR_FORMAT, "%s: unexpected data after the JSON value (byte %zu)",
                          name, off);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return clara_fail(CLARA_ERR_FORMAT, "%s: the top level is not a JSON object", name);
    }
    *out = root;
    return CLARA_OK;
}

static const char *dot(const char *where) {
    return where[0] ? "." : "";
}

clara_status hftok_json_bool(const cJSON *obj, const char *key, bool *out, const char *name,
                             const char *where) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return CLARA_OK;
    if (!cJSON_IsBool(v))
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s%s%s is not a boolean", name, where, dot(where),
                          key);
    *out = cJSON_IsTrue(v);
    return CLARA_OK;
}

clara_status hftok_json_str(const cJSON *obj, const char *key, const char **out, const char *name,
                            const char *where) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return CLARA_OK;
    if (!cJSON_IsString(v))
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s%s%s is not a string", name, where, dot(where),
                          key);
    *out = v->valuestring;
    return CLARA_OK;
}

bool hftok_json_index(const cJSON *v, uint32_t max, uint32_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d < (double)max) || d != floor(d)) return false;
    *out = (uint32_t)d;
    return true;
}

clara_status hftok_json_added_token(const cJSON *o, bool need_id, clara_added_token *a,
                                    const char *name, const char *where) {
    memset(a, 0, sizeof *a);
    if (!cJSON_IsObject(o))
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s is not an object", name, where);
    if (need_id &&
        !hftok_json_index(cJSON_GetObjectItemCaseSensitive(o, "id"), CLARA_TOK_MAX_VOCAB, &a->id))
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s.id is missing or not a valid token id", name,
                          where);
    const char *content = NULL;
    clara_status s = hftok_json_str(o, "content", &content, name, where);
    if (s != CLARA_OK) return s;
    if (!content) return clara_fail(CLARA_ERR_FORMAT, "%s: %s.content is missing", name, where);
    if ((s = hftok_json_bool(o, "special", &a->special, name, where)) != CLARA_OK) return s;
    a->normalized = !a->special; /* AddedToken's default */
    if ((s = hftok_json_bool(o, "normalized", &a->normalized, name, where)) != CLARA_OK ||
        (s = hftok_json_bool(o, "lstrip", &a->lstrip, name, where)) != CLARA_OK ||
        (s = hftok_json_bool(o, "rstrip", &a->rstrip, name, where)) != CLARA_OK ||
        (s = hftok_json_bool(o, "single_word", &a->single_word, name, where)) != CLARA_OK)
        return s;
    a->content = hftok_strndup(content, strlen(content));
    return a->content ? CLARA_OK : clara_fail(CLARA_ERR_NOMEM, "out of memory");
}

/* ---- model.vocab and model.merges ---- */

static clara_status parse_vocab(const cJSON *model, const char *name, clara_hf_tokenizer *t,
                                hftok_map *map) {
    char q1[64], q2[64];
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab))
        return clara_fail(CLARA_ERR_FORMAT, "%s: model.vocab is missing or not an object", name);
    int n = cJSON_GetArraySize(vocab);
    if (n <= 0) return clara_fail(CLARA_ERR_FORMAT, "%s: model.vocab is empty", name);
    if ((uint32_t)n > CLARA_TOK_MAX_VOCAB)
        return clara_fail(CLARA_ERR_NOMEM, "%s: model.vocab has more than %u tokens", name,
                          CLARA_TOK_MAX_VOCAB);
    t->tokens = calloc((size_t)n, sizeof *t->tokens);
    t->scores = calloc((size_t)n, sizeof *t->scores);
    t->token_types = calloc((size_t)n, sizeof *t->token_types);
    if (!t->tokens || !t->scores || !t->token_types)
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    t->n_vocab = (uint32_t)n; /* NULL entries are fine to free */
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        uint32_t id;
        const char *key = e->string ? e->string : "";
        if (!hftok_json_index(e, (uint32_t)n, &id)) {
            if (hftok_json_index(e, UINT32_MAX, &id))
                return clara_fail(CLARA_ERR_FORMAT,
                                  "%s: model.vocab: ids are not dense: '%s' has id %u but there "
                                  "are %d tokens",
                                  name, hftok_quote(key, q1, sizeof q1), id, n);
            return clara_fail(CLARA_ERR_FORMAT, "%s: model.vocab: '%s' has no valid id", name,
                              hftok_quote(key, q1, sizeof q1));
        }
        if (t->tokens[id])
            return clara_fail(
                CLARA_ERR_FORMAT, "%s: model.vocab: id %u is given to both '%s' and '%s'", name, id,
                hftok_quote(t->tokens[id], q1, sizeof q1), hftok_quote(key, q2, sizeof q2));
        const char *p = hftok_piece_problem(key, strlen(key));
        if (p) return clara_fail(CLARA_ERR_FORMAT, "%s: model.vocab: token id %u %s", name, id, p);
        if (!(t->tokens[id] = hftok_strndup(key, strlen(key))))
            return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    /* n members with distinct ids below n: every id is taken */
    if (!hftok_map_init(map, t->tokens, t->n_vocab))
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    for (uint32_t id = 0; id < t->n_vocab; id++) {
        int64_t dup = hftok_map_insert(map, id);
        if (dup >= 0)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: model.vocab: '%s' appears twice (ids %lld, %u)", name,
                              hftok_quote(t->tokens[id], q1, sizeof q1), (long long)dup, id);
    }
    return CLARA_OK;
}

/* Splits one merges entry into left and right; kind 1 = "left right" string, 2 = pair. */
static clara_status merge_sides(const cJSON *e, size_t i, const char *name, const char **l,
                                size_t *ln, const char **r, int *kind) {
    if (cJSON_IsString(e)) {
        const char *s = e->valuestring, *sp = strchr(s, ' ');
        if (!sp || sp == s || !sp[1] || strchr(sp + 1, ' '))
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: model.merges[%zu] is not a \"left right\" string", name, i);
        *l = s;
        *ln = (size_t)(sp - s);
        *r = sp + 1;
        *kind = 1;
        return CLARA_OK;
    }
    if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
        cJSON_IsString(e->child->next)) {
        *l = e->child->valuestring;
        *ln = strlen(*l);
        *r = e->child->next->valuestring;
        if (strchr(*l, ' ') || strchr(*r, ' '))
            return clara_fail(CLARA_ERR_UNSUPPORTED,
                              "%s: model.merges[%zu]: a token with a space cannot be stored as "
                              "llama.cpp's \"left right\"",
                              name, i);
        *kind = 2;
        return CLARA_OK;
    }
    return clara_fail(CLARA_ERR_FORMAT,
                      "%s: model.merges[%zu] is neither a \"left right\" string nor a [left, "
                      "right] pair",
                      name, i);
}

/* Checks that left, right and left+right are tokens (as `tokenizers` does); buf holds
 * CLARA_TOK_MAX_PIECE + 2 bytes. Returns the "left right" string in *out. */
static clara_status merge_check(const hftok_map *map, const char *l, size_t ln, const char *r,
                                size_t i, const char *name, char *buf, char **out) {
    char q[64];
    size_t rn = strlen(r);
    const char *missing = NULL;
    if (ln > CLARA_TOK_MAX_PIECE || hftok_map_find(map, l, ln) < 0)
        missing = "left";
    else if (hftok_map_find(map, r, rn) < 0)
        missing = "right";
    else if (ln + rn > CLARA_TOK_MAX_PIECE)
        missing = "merged";
    if (!missing) {
        memcpy(buf, l, ln);
        memcpy(buf + ln, r, rn);
        buf[ln + rn] = '\0';
        if (hftok_map_find(map, buf, ln + rn) < 0) missing = "merged";
    }
    if (missing) {
        size_t lq = ln < 100 ? ln : 100, rq = rn < 100 ? rn : 100;
        if (missing[0] == 'r') lq = 0;
        if (missing[0] == 'l') rq = 0;
        memcpy(buf, l, lq); /* show the side that is missing, or both for the merged token */
        memcpy(buf + lq, r, rq);
        buf[lq + rq] = '\0';
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: model.merges[%zu]: %s token '%s' is not in the vocabulary", name, i,
                          missing, hftok_quote(buf, q, sizeof q));
    }
    if (!(*out = malloc(ln + rn + 2))) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    memcpy(*out, l, ln);
    (*out)[ln] = ' ';
    memcpy(*out + ln + 1, r, rn + 1);
    return CLARA_OK;
}

static clara_status parse_merges(const cJSON *model, const char *name, clara_hf_tokenizer *t,
                                 const hftok_map *map) {
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!merges || cJSON_IsNull(merges)) return CLARA_OK;
    if (!cJSON_IsArray(merges))
        return clara_fail(CLARA_ERR_FORMAT, "%s: model.merges is not an array", name);
    int m = cJSON_GetArraySize(merges);
    if ((uint32_t)m > CLARA_TOK_MAX_MERGES)
        return clara_fail(CLARA_ERR_NOMEM, "%s: model.merges has more than %u entries", name,
                          CLARA_TOK_MAX_MERGES);
    if (m == 0) return CLARA_OK;
    char *buf = malloc(CLARA_TOK_MAX_PIECE + 2);
    t->merges = calloc((size_t)m, sizeof *t->merges);
    clara_status s = (buf && t->merges) ? CLARA_OK : clara_fail(CLARA_ERR_NOMEM, "out of memory");
    int shape = 0;
    const cJSON *e;
    size_t i = 0;
    cJSON_ArrayForEach(e, merges) {
        const char *l = "", *r = "";
        size_t ln = 0;
        int kind = 0;
        if (s != CLARA_OK) break;
        s = merge_sides(e, i, name, &l, &ln, &r, &kind);
        if (s == CLARA_OK && shape && kind != shape)
            s = clara_fail(CLARA_ERR_FORMAT, "%s: model.merges mixes strings and pairs (entry %zu)",
                           name, i);
        shape = kind;
        if (s == CLARA_OK) s = merge_check(map, l, ln, r, i, name, buf, &t->merges[t->n_merges]);
        if (s == CLARA_OK) t->n_merges++;
        i++;
    }
    free(buf);
    return s;
}

/* ---- normalizer, pre-tokenizer, decoder ---- */

static clara_status type_of(const cJSON *o, const char *name, const char *where,
                            const char **type) {
    *type = NULL;
    if (!cJSON_IsObject(o))
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s is not an object", name, where);
    clara_status s = hftok_json_str(o, "type", type, name, where);
    if (s == CLARA_OK && !*type)
        s = clara_fail(CLARA_ERR_FORMAT, "%s: %s has no type", name, where);
    return s;
}

/* One member of the legacy normalizer: Prepend("▁") or Replace(String " " -> "▁"). */
static clara_status legacy_item(const cJSON *it, const char *name, int *n_prepend, int *n_replace) {
    const char *type, *str = NULL, *content = NULL;
    char q[64];
    clara_status s = type_of(it, name, "normalizer", &type);
    if (s != CLARA_OK) return s;
    if (strcmp(type, "Prepend") == 0) {
        if ((s = hftok_json_str(it, "prepend", &str, name, "normalizer")) != CLARA_OK) return s;
        if (!str || strcmp(str, SPIECE) != 0)
            return clara_fail(CLARA_ERR_UNSUPPORTED,
                              "%s: normalizer Prepend('%s') is not supported (only U+2581)", name,
                              hftok_quote(str ? str : "", q, sizeof q));
        (*n_prepend)++;
        return CLARA_OK;
    }
    if (strcmp(type, "Replace") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(it, "pattern");
        if (cJSON_IsObject(pat))
            s = hftok_json_str(pat, "String", &str, name, "normalizer.pattern");
        if (s == CLARA_OK) s = hftok_json_str(it, "content", &content, name, "normalizer");
        if (s != CLARA_OK) return s;
        if (!str || strcmp(str, " ") != 0 || !content || strcmp(content, SPIECE) != 0)
            return clara_fail(CLARA_ERR_UNSUPPORTED,
                              "%s: normalizer Replace is not the legacy ' ' -> U+2581", name);
        (*n_replace)++;
        return CLARA_OK;
    }
    return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: normalizer '%s' is not supported", name,
                      hftok_quote(type, q, sizeof q));
}

static clara_status parse_normalizer(const cJSON *root, const char *name, bool *legacy,
                                     int *prepend) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const char *type;
    int n_prepend = 0, n_replace = 0;
    *legacy = false;
    if (!n || cJSON_IsNull(n)) return CLARA_OK;
    clara_status s = type_of(n, name, "normalizer", &type);
    if (s != CLARA_OK) return s;
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(n, "normalizers"), *it;
        if (!cJSON_IsArray(items))
            return clara_fail(CLARA_ERR_FORMAT, "%s: normalizer.normalizers is not an array", name);
        cJSON_ArrayForEach(it, items) {
            if ((s = legacy_item(it, name, &n_prepend, &n_replace)) != CLARA_OK) return s;
        }
    } else if ((s = legacy_item(n, name, &n_prepend, &n_replace)) != CLARA_OK) {
        return s;
    }
    if (n_replace != 1 || n_prepend > 1)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: normalizer is not the legacy Prepend(U+2581) + Replace(' ', U+2581)",
                          name);
    *legacy = true;
    *prepend = n_prepend ? CLARA_PREPEND_ALWAYS : CLARA_PREPEND_NEVER;
    return CLARA_OK;
}

static clara_status parse_metaspace(const cJSON *p, const char *name, clara_hf_tokenizer *t) {
    const char *rep = NULL, *scheme = NULL;
    char q[64];
    bool add_prefix = true, split = true; /* tokenizers' defaults */
    clara_status s = hftok_json_str(p, "replacement", &rep, name, "pre_tokenizer");
    if (s == CLARA_OK) s = hftok_json_str(p, "prepend_scheme", &scheme, name, "pre_tokenizer");
    if (s == CLARA_OK)
        s = hftok_json_bool(p, "add_prefix_space", &add_prefix, name, "pre_tokenizer");
    if (s == CLARA_OK) s = hftok_json_bool(p, "split", &split, name, "pre_tokenizer");
    if (s != CLARA_OK) return s;
    if (rep && strcmp(rep, SPIECE) != 0)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: pre_tokenizer Metaspace replacement '%s' is not supported", name,
                          hftok_quote(rep, q, sizeof q));
    if (!scheme)
        t->prepend_scheme = add_prefix ? CLARA_PREPEND_ALWAYS : CLARA_PREPEND_NEVER;
    else if (strcmp(scheme, "first") == 0)
        t->prepend_scheme = CLARA_PREPEND_FIRST;
    else if (strcmp(scheme, "always") == 0)
        t->prepend_scheme = CLARA_PREPEND_ALWAYS;
    else if (strcmp(scheme, "never") == 0)
        t->prepend_scheme = CLARA_PREPEND_NEVER;
    else
        return clara_fail(CLARA_ERR_FORMAT, "%s: pre_tokenizer prepend_scheme '%s' is unknown",
                          name, hftok_quote(scheme, q, sizeof q));
    t->metaspace_split = split;
    return CLARA_OK;
}

static clara_status parse_flavour(const cJSON *root, const char *name, clara_hf_tokenizer *t) {
    bool legacy;
    int prepend = CLARA_PREPEND_NEVER;
    char q[64];
    clara_status s = parse_normalizer(root, name, &legacy, &prepend);
    if (s != CLARA_OK) return s;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    bool meta = p && !cJSON_IsNull(p);
    if (meta) {
        const char *type;
        if ((s = type_of(p, name, "pre_tokenizer", &type)) != CLARA_OK) return s;
        if (strcmp(type, "Metaspace") != 0)
            return clara_fail(CLARA_ERR_UNSUPPORTED,
                              "%s: pre_tokenizer '%s' is not supported (only Metaspace)", name,
                              hftok_quote(type, q, sizeof q));
        if ((s = parse_metaspace(p, name, t)) != CLARA_OK) return s;
    }
    if (legacy && meta)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: both the legacy normalizer and a Metaspace pre_tokenizer", name);
    if (!legacy && !meta)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: neither the legacy normalizer nor a Metaspace pre_tokenizer: "
                          "unsupported layout",
                          name);
    t->norm = legacy ? CLARA_NORM_LEGACY : CLARA_NORM_METASPACE;
    if (legacy) t->prepend_scheme = prepend;
    return CLARA_OK;
}

/* Records the decoder as "Type" or "Sequence[Type,Type,...]" (informational only). */
static clara_status record_decoder(const cJSON *root, clara_hf_tokenizer *t) {
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    char buf[256];
    size_t o = 0;
    if (!cJSON_IsObject(d)) return CLARA_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(d, "type");
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(d, "decoders"), *it;
    o += (size_t)snprintf(buf, sizeof buf, "%s", cJSON_IsString(type) ? type->valuestring : "?");
    if (cJSON_IsArray(items)) {
        char sep = '[';
        cJSON_ArrayForEach(it, items) {
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(it, "type");
            if (o < sizeof buf)
                o += (size_t)snprintf(buf + o, sizeof buf - o, "%c%s", sep,
                                      cJSON_IsString(ty) ? ty->valuestring : "?");
            sep = ',';
        }
        if (sep == ',' && o < sizeof buf) o += (size_t)snprintf(buf + o, sizeof buf - o, "]");
    }
    for (char *c = buf; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?'; /* keep messages on one line */
    t->decoder = hftok_strndup(buf, strlen(buf));
    return t->decoder ? CLARA_OK : clara_fail(CLARA_ERR_NOMEM, "out of memory");
}

/* ---- model section ---- */

static clara_status model_options(const cJSON *model, const char *name, clara_hf_tokenizer *t) {
    const char *type = NULL, *pre = NULL, *suf = NULL;
    char q[64];
    clara_status s = hftok_json_str(model, "type", &type, name, "model");
    if (s != CLARA_OK) return s;
    if (type && strcmp(type, "BPE") != 0)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: model.type '%s' is not supported (only BPE)",
                          name, hftok_quote(type, q, sizeof q));
    if (!type && !cJSON_GetObjectItemCaseSensitive(model, "merges"))
        return clara_fail(CLARA_ERR_FORMAT, "%s: model.type is missing", name);
    if ((s = hftok_json_bool(model, "byte_fallback", &t->byte_fallback, name, "model")) ||
        (s = hftok_json_bool(model, "fuse_unk", &t->fuse_unk, name, "model")) ||
        (s = hftok_json_bool(model, "ignore_merges", &t->ignore_merges, name, "model")) ||
        (s = hftok_json_str(model, "continuing_subword_prefix", &pre, name, "model")) ||
        (s = hftok_json_str(model, "end_of_word_suffix", &suf, name, "model")))
        return s;
    if ((pre && pre[0]) || (suf && suf[0]))
        return clara_fail(
            CLARA_ERR_UNSUPPORTED,
            "%s: model.continuing_subword_prefix/end_of_word_suffix are not supported", name);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (dropout && !cJSON_IsNull(dropout) &&
        !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: model.dropout (BPE dropout) is not supported",
                          name);
    return CLARA_OK;
}

static clara_status parse_added(const cJSON *root, const char *name, clara_hf_tokenizer *t) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), *e;
    if (!arr || cJSON_IsNull(arr)) return CLARA_OK;
    if (!cJSON_IsArray(arr))
        return clara_fail(CLARA_ERR_FORMAT, "%s: added_tokens is not an array", name);
    int n = cJSON_GetArraySize(arr);
    if ((uint32_t)n > CLARA_TOK_MAX_VOCAB)
        return clara_fail(CLARA_ERR_NOMEM, "%s: too many added_tokens", name);
    clara_added_token *a = calloc((size_t)n + 1, sizeof *a);
    if (!a) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    clara_status s = CLARA_OK;
    size_t i = 0;
    cJSON_ArrayForEach(e, arr) {
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        if ((s = hftok_json_added_token(e, true, &a[i], name, where)) != CLARA_OK) break;
        i++;
    }
    if (s == CLARA_OK) s = hftok_apply_added(t, a, i, false, name, "added_tokens");
    hftok_free_added(a, i + 1);
    return s;
}

static bool is_byte_piece(const char *s) {
    static const char hex[] = "0123456789ABCDEFabcdef";
    return strlen(s) == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' && s[3] && s[4] &&
           strchr(hex, s[3]) && strchr(hex, s[4]);
}

static int32_t find_token(const clara_hf_tokenizer *t, const char *s) {
    for (uint32_t i = 0; i < t->n_vocab; i++)
        if (strcmp(t->tokens[i], s) == 0) return (int32_t)i;
    return -1;
}

static clara_status parse_body(const cJSON *root, const char *name, clara_hf_tokenizer *t) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *unk = NULL;
    char q[64];
    hftok_map map = {0};
    if (!cJSON_IsObject(model))
        return clara_fail(CLARA_ERR_FORMAT, "%s: model is missing or not an object", name);
    clara_status s = model_options(model, name, t);
    if (s == CLARA_OK) s = hftok_json_str(model, "unk_token", &unk, name, "model");
    if (s == CLARA_OK) s = parse_vocab(model, name, t, &map);
    if (s == CLARA_OK) s = parse_merges(model, name, t, &map);
    if (s == CLARA_OK && unk && (t->unk_id = (int32_t)hftok_map_find(&map, unk, strlen(unk))) < 0)
        s = clara_fail(CLARA_ERR_FORMAT, "%s: model.unk_token '%s' is not in the vocabulary", name,
                       hftok_quote(unk, q, sizeof q));
    hftok_map_free(&map);
    if (s == CLARA_OK) s = parse_flavour(root, name, t);
    if (s == CLARA_OK) s = record_decoder(root, t);
    if (s != CLARA_OK) return s;
    uint32_t n_model = t->n_vocab;
    if (t->unk_id >= 0) t->token_types[t->unk_id] = CLARA_TOKTYPE_UNKNOWN;
    if ((s = parse_added(root, name, t)) != CLARA_OK) return s;
    float k = 0;
    for (uint32_t id = 0; id < n_model; id++) {
        int32_t *ty = &t->token_types[id];
        if (*ty == 0)
            *ty = is_byte_piece(t->tokens[id]) ? CLARA_TOKTYPE_BYTE : CLARA_TOKTYPE_NORMAL;
        t->scores[id] = *ty == CLARA_TOKTYPE_NORMAL ? -(k++) : 0.0f;
    }
    t->bos_id = find_token(t, "<s>");
    t->eos_id = find_token(t, "</s>");
    t->source = hftok_strndup("tokenizer.json", 14);
    return t->source ? CLARA_OK : clara_fail(CLARA_ERR_NOMEM, "out of memory");
}

clara_status hf_tokenizer_parse_json(const char *text, size_t len, const char *name,
                                     clara_hf_tokenizer *out) {
    cJSON *root;
    hftok_init(out);
    clara_status s = hftok_json_parse(text, len, name, &root);
    if (s != CLARA_OK) {
        memset(out, 0, sizeof *out);
        return s;
    }
    s = parse_body(root, name, out);
    cJSON_Delete(root);
    if (s != CLARA_OK) hf_tokenizer_free(out);
    return s;
}
