/* hf_tokenizer.c - the parts of the Hugging Face tokenizer readers shared by tokenizer.json and
 * tokenizer.model (initialisation, freeing, the piece map, UTF-8 checks, added tokens), the
 * tokenizer_config.json reader and hf_tokenizer_load_dir(). The two model readers live in
 * hf_tokenizer_json.c and spm_model.c. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/mapfile.h"
#include "base/status.h"
#include "convert/hf_tokenizer_internal.h"

void hftok_init(clara_hf_tokenizer *t) {
    memset(t, 0, sizeof *t);
    t->unk_id = t->bos_id = t->eos_id = t->pad_id = -1;
    t->add_bos = true; /* LlamaTokenizer's defaults when tokenizer_config.json says nothing */
    t->add_eos = false;
    t->legacy = t->add_prefix_space = -1;
}

char *hftok_strndup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* Length of the well-formed UTF-8 sequence at s, or 0 if it is not one. */
static size_t utf8_seq(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    if (len == 0 || c > 0xf4 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (c == 0xe0 && s[1] < 0xa0) return 0; /* overlong */
    if (c == 0xed && s[1] > 0x9f) return 0; /* surrogates */
    if (c == 0xf0 && s[1] < 0x90) return 0; /* overlong */
    if (c == 0xf4 && s[1] > 0x8f) return 0; /* > U+10FFFF */
    return len;
}

bool hftok_utf8_valid(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(s + i, n - i);
        if (k == 0) return false;
        i += k;
    }
    return true;
}

size_t hftok_utf8_char_len(const uint8_t *s, size_t n) {
    size_t k = utf8_seq(s, n);
    return k ? k : 1;
}

const char *hftok_quote(const char *s, char *buf, size_t cap) {
    size_t o = 0;
    if (cap < 8) return "";
    for (size_t i = 0; s && s[i] && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= 40) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02X", c);
        else
            buf[o++] = (char)c;
    }
    buf[o] = '\0';
    return buf;
}

const char *hftok_piece_problem(const char *s, size_t n) {
    if (n == 0) return "is empty";
    if (n > CLARA_TOK_MAX_PIECE) return "is longer than 4096 bytes";
    if (memchr(s, '\0', n)) return "contains a NUL byte";
    if (!hftok_utf8_valid((const uint8_t *)s, n)) return "is not valid UTF-8";
    return NULL;
}

/* ---- piece map (FNV-1a, linear probing) ---- */

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

bool hftok_map_init(hftok_map *m, char *const *keys, uint32_t n_max) {
    size_t cap = 16;
    while (cap < (size_t)n_max * 2) cap *= 2;
    m->slot = malloc(cap * sizeof *m->slot);
    m->mask = cap - 1;
    m->keys = keys;
    if (!m->slot) return false;
    memset(m->slot, 0xff, cap * sizeof *m->slot);
    return true;
}

static bool key_eq(const char *key, const char *s, size_t n) {
    return strncmp(key, s, n) == 0 && key[n] == '\0';
}

int64_t hftok_map_insert(hftok_map *m, uint32_t id) {
    const char *k = m->keys[id];
    size_t n = strlen(k);
    for (size_t i = fnv1a(k, n) & m->mask;; i = (i + 1) & m->mask) {
        if (m->slot[i] == UINT32_MAX) {
            m->slot[i] = id;
            return -1;
        }
        if (key_eq(m->keys[m->slot[i]], k, n)) return m->slot[i];
    }
}

int64_t hftok_map_find(const hftok_map *m, const char *s, size_t n) {
    for (size_t i = fnv1a(s, n) & m->mask;; i = (i + 1) & m->mask) {
        if (m->slot[i] == UINT32_MAX) return -1;
        if (key_eq(m->keys[m->slot[i]], s, n)) return m->slot[i];
    }
}

void hftok_map_free(hftok_map *m) {
    free(m->slot);
    m->slot = NULL;
}

/* ---- added tokens ---- */

void hftok_free_added(clara_added_token *a, size_t n) {
    for (size_t i = 0; a && i < n; i++) free(a[i].content);
    free(a);
}

/* First pass of hftok_apply_added: checks ids and texts, marks ids (1 known, 2 this list),
 * counts the tokens past the vocabulary. */
static clara_status added_check(const clara_hf_tokenizer *t, const clara_added_token *add, size_t n,
                                bool skip_known, uint8_t *mark, uint32_t *n_ext, const char *name,
                                const char *what) {
    char q1[64], q2[64];
    uint64_t limit = (uint64_t)t->n_vocab + n;
    for (size_t i = 0; i < t->n_added; i++) mark[t->added[i].id] = 1;
    for (size_t i = 0; i < n; i++) {
        const clara_added_token *a = &add[i];
        const char *p = hftok_piece_problem(a->content, strlen(a->content));
        if (p) return clara_fail(CLARA_ERR_FORMAT, "%s: %s: token id %u %s", name, what, a->id, p);
        if (a->id >= limit)
            return clara_fail(CLARA_ERR_FORMAT, "%s: %s: ids are not dense: id %u with %llu tokens",
                              name, what, a->id, (unsigned long long)limit);
        if (a->id < t->n_vocab && strcmp(a->content, t->tokens[a->id]) != 0)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: %s: id %u is '%s' here but '%s' in the vocabulary", name, what,
                              a->id, hftok_quote(a->content, q1, sizeof q1),
                              hftok_quote(t->tokens[a->id], q2, sizeof q2));
        if (mark[a->id] == 1 && skip_known) continue;
        if (mark[a->id])
            return clara_fail(CLARA_ERR_FORMAT, "%s: %s: id %u is given twice", name, what, a->id);
        mark[a->id] = 2;
        if (a->id >= t->n_vocab) (*n_ext)++;
    }
    for (uint32_t j = t->n_vocab; j < t->n_vocab + *n_ext; j++)
        if (mark[j] != 2)
            return clara_fail(CLARA_ERR_FORMAT, "%s: %s: ids are not dense: id %u is missing", name,
                              what, j);
    if ((uint64_t)t->n_vocab + *n_ext > CLARA_TOK_MAX_VOCAB)
        return clara_fail(CLARA_ERR_NOMEM, "%s: %s: more than %u tokens", name, what,
                          CLARA_TOK_MAX_VOCAB);
    return CLARA_OK;
}

/* Checks that the texts of the new ids are not already tokens. keys has room for all ids. */
static clara_status added_check_new_texts(const clara_hf_tokenizer *t, const clara_added_token *add,
                                          size_t n, uint32_t n_total, char **keys, const char *name,
                                          const char *what) {
    char q[64];
    hftok_map m;
    memcpy(keys, t->tokens, t->n_vocab * sizeof *keys);
    for (size_t i = 0; i < n; i++)
        if (add[i].id >= t->n_vocab) keys[add[i].id] = add[i].content;
    if (!hftok_map_init(&m, keys, n_total)) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    clara_status s = CLARA_OK;
    for (uint32_t id = 0; id < n_total && s == CLARA_OK; id++) {
        int64_t dup = hftok_map_insert(&m, id);
        if (dup >= 0 && id >= t->n_vocab)
            s = clara_fail(CLARA_ERR_FORMAT, "%s: %s: id %u '%s' repeats the text of id %lld", name,
                           what, id, hftok_quote(keys[id], q, sizeof q), (long long)dup);
    }
    hftok_map_free(&m);
    return s;
}

/* Grows the per-id arrays to n_total; new slots are zeroed. */
static bool grow_vocab(clara_hf_tokenizer *t, uint32_t n_total) {
    char **tok = realloc(t->tokens, (size_t)n_total * sizeof *tok);
    if (tok) t->tokens = tok;
    float *sc = realloc(t->scores, (size_t)n_total * sizeof *sc);
    if (sc) t->scores = sc;
    int32_t *ty = realloc(t->token_types, (size_t)n_total * sizeof *ty);
    if (ty) t->token_types = ty;
    if (!tok || !sc || !ty) return false;
    for (uint32_t i = t->n_vocab; i < n_total; i++) {
        tok[i] = NULL;
        sc[i] = HFTOK_ADDED_SCORE;
        ty[i] = 0;
    }
    return true;
}

/* Copies the added tokens that were not skipped onto t->added and sets their types. */
static clara_status added_commit(clara_hf_tokenizer *t, const clara_added_token *add, size_t n,
                                 const uint8_t *mark) {
    clara_added_token *all = realloc(t->added, (t->n_added + n + 1) * sizeof *all);
    if (!all) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    t->added = all;
    for (size_t i = 0; i < n; i++) {
        const clara_added_token *a = &add[i];
        if (mark[a->id] != 2) continue;
        char *c = hftok_strndup(a->content, strlen(a->content));
        char *c2 = a->id >= t->n_vocab ? hftok_strndup(a->content, strlen(a->content)) : NULL;
        if (!c || (a->id >= t->n_vocab && !c2)) {
            free(c);
            free(c2);
            return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        }
        if (c2) t->tokens[a->id] = c2;
        all[t->n_added] = *a;
        all[t->n_added++].content = c;
        int32_t *ty = &t->token_types[a->id];
        if (a->special && *ty != CLARA_TOKTYPE_UNKNOWN)
            *ty = CLARA_TOKTYPE_CONTROL;
        else if (!a->special)
            *ty = CLARA_TOKTYPE_USER_DEFINED;
    }
    return CLARA_OK;
}

clara_status hftok_apply_added(clara_hf_tokenizer *t, const clara_added_token *add, size_t n,
                               bool skip_known, const char *name, const char *what) {
    uint32_t n_ext = 0;
    uint8_t *mark = calloc((size_t)t->n_vocab + n + 1, 1);
    if (!mark) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    clara_status s = added_check(t, add, n, skip_known, mark, &n_ext, name, what);
    uint32_t n_total = t->n_vocab + n_ext;
    char **keys = NULL;
    if (s == CLARA_OK && n_ext > 0) {
        keys = malloc((size_t)n_total * sizeof *keys);
        s = keys ? added_check_new_texts(t, add, n, n_total, keys, name, what)
                 : clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    free(keys);
    bool grown = false;
    if (s == CLARA_OK && n_ext > 0 && !(grown = grow_vocab(t, n_total)))
        s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    if (s == CLARA_OK) s = added_commit(t, add, n, mark);
    /* the new ids count only once all their texts are in place (the dense check above
     * guarantees that each of them was filled) */
    for (uint32_t j = t->n_vocab; s != CLARA_OK && grown && j < n_total; j++) {
        free(t->tokens[j]);
        t->tokens[j] = NULL;
    }
    if (s == CLARA_OK) t->n_vocab = n_total;
    free(mark);
    return s;
}

void hf_tokenizer_free(clara_hf_tokenizer *t) {
    if (!t) return;
    for (uint32_t i = 0; t->tokens && i < t->n_vocab; i++) free(t->tokens[i]);
    free(t->tokens);
    free(t->scores);
    free(t->token_types);
    for (uint64_t i = 0; t->merges && i < t->n_merges; i++) free(t->merges[i]);
    free(t->merges);
    hftok_free_added(t->added, t->n_added);
    free(t->decoder);
    free(t->chat_template);
    free(t->bos_token);
    free(t->eos_token);
    free(t->unk_token);
    free(t->pad_token);
    free(t->source);
    memset(t, 0, sizeof *t);
}

/* ---- tokenizer_config.json ---- */

typedef struct {
    char *tmpl, *tok[4]; /* bos, eos, unk, pad */
    bool add_bos, add_eos, legacy, add_prefix_space, has_legacy, has_add_prefix_space;
} cfg_values;

static const char *const cfg_token_keys[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};

/* A special token given as "text", {"content": "text", ...} or null. */
static clara_status cfg_token(const cJSON *root, const char *key, char **out, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    const char *text = NULL;
    if (!v || cJSON_IsNull(v)) return CLARA_OK;
    if (cJSON_IsString(v)) {
        text = v->valuestring;
    } else if (cJSON_IsObject(v)) {
        clara_status s = hftok_json_str(v, "content", &text, name, key);
        if (s != CLARA_OK) return s;
    }
    if (!text)
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s is neither a string nor a token object", name,
                          key);
    *out = hftok_strndup(text, strlen(text));
    return *out ? CLARA_OK : clara_fail(CLARA_ERR_NOMEM, "out of memory");
}

/* chat_template: a string, or a list of {name, template} of which "default" is taken. */
static clara_status cfg_template(const cJSON *root, const char *name, char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "chat_template"), *e;
    const char *text = NULL;
    if (!v || cJSON_IsNull(v)) return CLARA_OK;
    if (cJSON_IsString(v)) {
        text = v->valuestring;
    } else if (cJSON_IsArray(v)) {
        size_t i = 0;
        cJSON_ArrayForEach(e, v) {
            const char *n = NULL, *tpl = NULL;
            char where[48];
            snprintf(where, sizeof where, "chat_template[%zu]", i++);
            if (!cJSON_IsObject(e))
                return clara_fail(CLARA_ERR_FORMAT, "%s: %s is not an object", name, where);
            clara_status s = hftok_json_str(e, "name", &n, name, where);
            if (s == CLARA_OK) s = hftok_json_str(e, "template", &tpl, name, where);
            if (s != CLARA_OK) return s;
            if (!n || !tpl)
                return clara_fail(CLARA_ERR_FORMAT, "%s: %s needs a name and a template", name,
                                  where);
            if (strcmp(n, "default") == 0) text = tpl;
        }
        if (!text) return CLARA_OK; /* only named templates: none is the default */
    } else {
        return clara_fail(CLARA_ERR_FORMAT, "%s: chat_template is neither a string nor a list",
                          name);
    }
    *out = hftok_strndup(text, strlen(text));
    return *out ? CLARA_OK : clara_fail(CLARA_ERR_NOMEM, "out of memory");
}

static clara_status cfg_flag(const cJSON *root, const char *key, bool *val, bool *has,
                             const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (has) *has = cJSON_IsBool(v);
    return hftok_json_bool(root, key, val, name, "");
}

static clara_status cfg_read(const cJSON *root, const char *name, cfg_values *c) {
    clara_status s = cfg_template(root, name, &c->tmpl);
    for (int i = 0; i < 4 && s == CLARA_OK; i++)
        s = cfg_token(root, cfg_token_keys[i], &c->tok[i], name);
    if (s == CLARA_OK) s = cfg_flag(root, "add_bos_token", &c->add_bos, NULL, name);
    if (s == CLARA_OK) s = cfg_flag(root, "add_eos_token", &c->add_eos, NULL, name);
    if (s == CLARA_OK) s = cfg_flag(root, "legacy", &c->legacy, &c->has_legacy, name);
    if (s == CLARA_OK)
        s = cfg_flag(root, "add_prefix_space", &c->add_prefix_space, &c->has_add_prefix_space,
                     name);
    return s;
}

/* added_tokens_decoder {"id": {content, special, ...}}: applied to a tokenizer.model vocabulary
 * (tokenizer.json lists its added tokens itself). */
static clara_status cfg_added(const cJSON *root, const char *name, clara_hf_tokenizer *io) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "added_tokens_decoder"), *e;
    if (!v || cJSON_IsNull(v)) return CLARA_OK;
    if (!cJSON_IsObject(v))
        return clara_fail(CLARA_ERR_FORMAT, "%s: added_tokens_decoder is not an object", name);
    if (!io->source || strcmp(io->source, "tokenizer.model") != 0 || io->n_vocab == 0)
        return CLARA_OK;
    int n = cJSON_GetArraySize(v);
    if ((uint32_t)n > CLARA_TOK_MAX_VOCAB)
        return clara_fail(CLARA_ERR_NOMEM, "%s: too many added_tokens_decoder entries", name);
    clara_added_token *a = calloc((size_t)n + 1, sizeof *a);
    if (!a) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    clara_status s = CLARA_OK;
    size_t i = 0;
    cJSON_ArrayForEach(e, v) {
        const char *key = e->string ? e->string : "";
        char where[64], q[32];
        size_t kl = strlen(key);
        snprintf(where, sizeof where, "added_tokens_decoder.%s", hftok_quote(key, q, sizeof q));
        if (kl == 0 || kl > 9 || strspn(key, "0123456789") != kl) {
            s = clara_fail(CLARA_ERR_FORMAT, "%s: %s: the key is not a token id", name, where);
            break;
        }
        if ((s = hftok_json_added_token(e, false, &a[i], name, where)) != CLARA_OK) break;
        a[i++].id = (uint32_t)strtoul(key, NULL, 10);
    }
    if (s == CLARA_OK) s = hftok_apply_added(io, a, i, true, name, "added_tokens_decoder");
    hftok_free_added(a, i + 1);
    return s;
}

static int32_t find_text(const clara_hf_tokenizer *t, const char *s) {
    for (uint32_t i = 0; i < t->n_vocab; i++)
        if (strcmp(t->tokens[i], s) == 0) return (int32_t)i;
    return -1;
}

clara_status hf_tokenizer_parse_config(const char *text, size_t len, const char *name,
                                       clara_hf_tokenizer *io) {
    cJSON *root;
    cfg_values c = {.add_bos = io->add_bos, .add_eos = io->add_eos};
    int32_t ids[4] = {io->bos_id, io->eos_id, io->unk_id, io->pad_id};
    clara_status s = hftok_json_parse(text, len, name, &root);
    if (s != CLARA_OK) return s;
    s = cfg_read(root, name, &c);
    if (s == CLARA_OK) s = cfg_added(root, name, io);
    cJSON_Delete(root);
    for (int i = 0; i < 4 && s == CLARA_OK; i++) {
        char q[64];
        if (!c.tok[i] || io->n_vocab == 0) continue;
        if ((ids[i] = find_text(io, c.tok[i])) < 0)
            s = clara_fail(CLARA_ERR_FORMAT, "%s: %s '%s' is not in the vocabulary", name,
                           cfg_token_keys[i], hftok_quote(c.tok[i], q, sizeof q));
    }
    if (s != CLARA_OK) {
        free(c.tmpl);
        for (int i = 0; i < 4; i++) free(c.tok[i]);
        return s;
    }
    char **dst[4] = {&io->bos_token, &io->eos_token, &io->unk_token, &io->pad_token};
    for (int i = 0; i < 4; i++) {
        free(*dst[i]);
        *dst[i] = c.tok[i];
    }
    free(io->chat_template);
    io->chat_template = c.tmpl;
    io->bos_id = ids[0];
    io->eos_id = ids[1];
    io->unk_id = ids[2];
    io->pad_id = ids[3];
    io->add_bos = c.add_bos;
    io->add_eos = c.add_eos;
    if (c.has_legacy) io->legacy = c.legacy;
    if (c.has_add_prefix_space) io->add_prefix_space = c.add_prefix_space;
    return CLARA_OK;
}

/* ---- directory loading ---- */

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static clara_status load_model_file(const char *dir, clara_hf_tokenizer *out) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (file_exists(path)) {
        char *text;
        size_t len;
        clara_status s = clara_read_file(path, CLARA_TOK_MAX_JSON_BYTES, &text, &len);
        if (s != CLARA_OK) return s;
        s = hf_tokenizer_parse_json(text, len, path, out);
        free(text);
        return s;
    }
    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    if (!file_exists(path))
        return clara_fail(CLARA_ERR_NOT_FOUND, "%s: no tokenizer.json or tokenizer.model here",
                          dir);
    clara_mapped m;
    clara_status s = clara_map_file(path, &m);
    if (s != CLARA_OK) return s;
    if (m.size > CLARA_TOK_MAX_SPM_BYTES)
        s = clara_fail(CLARA_ERR_NOMEM, "%s: file is %zu bytes, more than the %zu allowed", path,
                       m.size, CLARA_TOK_MAX_SPM_BYTES);
    else
        s = hf_tokenizer_parse_spm(m.data, m.size, path, out);
    clara_unmap_file(&m);
    return s;
}

clara_status hf_tokenizer_load_dir(const char *dir, clara_hf_tokenizer *out) {
    hftok_init(out);
    clara_status s = load_model_file(dir, out);
    if (s != CLARA_OK) return s;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (!file_exists(path)) return CLARA_OK;
    char *text;
    size_t len;
    s = clara_read_file(path, CLARA_TOK_MAX_CFG_BYTES, &text, &len);
    if (s == CLARA_OK) s = hf_tokenizer_parse_config(text, len, path, out);
    free(text);
    if (s != CLARA_OK) hf_tokenizer_free(out);
    return s;
}
