/* convert_lora.c - the adapters of adapters.pth (spec §2.4): one dict per adapter of PEFT keys
 * `model.layers.{i}.{module}.lora_{A,B}.weight`. Each LoRA pair is checked (shapes, one rank per
 * adapter, A and B both present) and planned as GGUF tensors
 * `clara.<adapter>.blk.<i>.<linear>.lora_{a,b}`. q/k lora_B rows are permuted like the base q/k
 * weights (their rows are output features). A module with no tensors at all contributes zero
 * (PEFT leaves B = 0, spec §6) and is reported; the embedding copies PEFT saves beside the LoRA
 * keys are compared with decoder_first_last_layers.pth and otherwise ignored. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mapfile.h"
#include "base/log.h"
#include "base/status.h"
#include "convert/convert_internal.h"
#include "dtype.h"

clara_status conv_plan_pth(conv_ctx *c, const pth_tensor *t, const char *file,
                           const char *gguf_name, uint64_t rows, uint64_t cols,
                           uint32_t permute_heads);

typedef struct {
    const pth_tensor *a, *b;
} lora_pair;

/* Parses "model.layers.{i}.{module}.lora_{A,B}.weight" into layer, linear index and A/B. */
static bool parse_lora_key(const char *key, uint32_t n_layers, uint32_t *layer, int *linear,
                           int *is_b) {
    const char *prefix = "model.layers.";
    if (strncmp(key, prefix, strlen(prefix)) != 0) return false;
    const char *p = key + strlen(prefix);
    char *end;
    unsigned long li = strtoul(p, &end, 10);
    if (end == p || *end != '.' || li >= n_layers || (p[0] == '0' && end - p > 1)) return false;
    p = end + 1;
    for (int m = 0; m < CLARA_N_LINEAR; m++) {
        size_t n = strlen(clara_linear_names[m].hf);
        if (strncmp(p, clara_linear_names[m].hf, n) != 0) continue;
        const char *rest = p + n;
        if (strcmp(rest, ".lora_A.weight") == 0 || strcmp(rest, ".lora_B.weight") == 0) {
            *layer = (uint32_t)li;
            *linear = m;
            *is_b = rest[6] == 'B';
            return true;
        }
    }
    return false;
}

/* Input and output sizes of linear layer m (spec §2.4 shapes). */
static void linear_dims(const clara_base_config *b, int m, uint64_t *in, uint64_t *out) {
    uint64_t H = b->hidden_size, F = b->intermediate_size, q = (uint64_t)b->n_heads * b->head_dim,
             kv = (uint64_t)b->n_kv_heads * b->head_dim;
    const uint64_t ins[CLARA_N_LINEAR] = {H, H, H, q, H, H, F};
    const uint64_t outs[CLARA_N_LINEAR] = {q, kv, kv, H, F, F, H};
    *in = ins[m];
    *out = outs[m];
}

/* The embedding copies must equal decoder_first_last_layers.pth's tables (spec §2.4). */
static void compare_copy(conv_ctx *c, const char *adapter, const char *key, const pth_tensor *t) {
    const pth_tensor *ref = pth_find(c->tables, key);
    bool same = ref && ref->type == t->type && ref->n_dims == t->n_dims && ref->contiguous &&
                t->contiguous && ref->nbytes == t->nbytes;
    for (uint32_t i = 0; same && i < t->n_dims; i++) same = ref->shape[i] == t->shape[i];
    /* compared in chunks whose pages are released at once: the copies are as large as the
     * tables (2 x 262 MB per adapter at 7B) and would otherwise stay resident */
    const size_t chunk = (size_t)16 << 20;
    for (uint64_t off = 0; same && off < t->nbytes; off += chunk) {
        size_t n = t->nbytes - off < chunk ? (size_t)(t->nbytes - off) : chunk;
        same = memcmp(ref->data + off, t->data + off, n) == 0;
        clara_release_pages(ref->data + off, n);
        clara_release_pages(t->data + off, n);
    }
    if (!same)
        CLARA_LOGW("%s: %s/%s differs from %s in decoder_first_last_layers.pth; using the latter "
                   "(spec §2.4)",
                   c->adapters_path, adapter, key, key);
}

static conv_adapter *find_or_add_adapter(conv_ctx *c, const char *name, size_t len) {
    for (size_t i = 0; i < c->n_adapters; i++)
        if (strlen(c->adapter[i].name) == len && memcmp(c->adapter[i].name, name, len) == 0)
            return &c->adapter[i];
    if (c->n_adapters == CONV_MAX_ADAPTERS || len >= sizeof c->adapter[0].name) return NULL;
    conv_adapter *a = &c->adapter[c->n_adapters++];
    memset(a, 0, sizeof *a);
    memcpy(a->name, name, len);
    a->name[len] = '\0';
    return a;
}

static bool known_adapter(const char *name) {
    for (int i = 0; i < CLARA_N_ADAPTER_KINDS; i++)
        if (strcmp(name, clara_adapter_names[i]) == 0) return true;
    return false;
}

/* Sorts the tensors of adapter `ai` into pairs[layer * 7 + linear]. */
static clara_status collect_pairs(conv_ctx *c, size_t ai, lora_pair *pairs) {
    const conv_adapter *ad = &c->adapter[ai];
    size_t alen = strlen(ad->name);
    for (size_t i = 0; i < pth_n_tensors(c->adapters); i++) {
        const pth_tensor *t = pth_tensor_at(c->adapters, i);
        if (strncmp(t->name, ad->name, alen) != 0 || t->name[alen] != '/') continue;
        const char *key = t->name + alen + 1;
        uint32_t layer;
        int linear, is_b;
        if (parse_lora_key(key, c->base.n_layers, &layer, &linear, &is_b)) {
            lora_pair *pr = &pairs[layer * CLARA_N_LINEAR + linear];
            if ((is_b ? pr->b : pr->a) != NULL)
                return clara_fail(CLARA_ERR_FORMAT, "%s: %s: duplicate tensor '%s'",
                                  c->adapters_path, ad->name, key);
            if (is_b)
                pr->b = t;
            else
                pr->a = t;
        } else if (strcmp(key, "model.embed_tokens.weight") == 0 ||
                   strcmp(key, "lm_head.weight") == 0) {
            compare_copy(c, ad->name, key, t);
        } else if (strstr(key, "lora_")) {
            return clara_fail(CLARA_ERR_FORMAT, "%s: %s: unexpected LoRA tensor '%s'",
                              c->adapters_path, ad->name, key);
        } else {
            char q[256];
            CLARA_LOGW("%s: %s: ignoring tensor '%s'", c->adapters_path, ad->name,
                       conv_printable(key, q, sizeof q));
        }
    }
    return CLARA_OK;
}

/* Checks one present LoRA pair and fixes the adapter's rank from the first pair. */
static clara_status check_pair(conv_ctx *c, conv_adapter *ad, uint32_t layer, int m,
                               const lora_pair *pr) {
    const char *hf = clara_linear_names[m].hf;
    if (!pr->a || !pr->b)
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s: model.layers.%u.%s has lora_%s but no lora_%s",
                          c->adapters_path, ad->name, layer, hf, pr->a ? "A" : "B",
                          pr->a ? "B" : "A");
    if (pr->a->n_dims != 2 || pr->b->n_dims != 2 || pr->a->shape[0] <= 0)
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s: model.layers.%u.%s LoRA tensors are not 2-D",
                          c->adapters_path, ad->name, layer, hf);
    uint32_t r = (uint32_t)pr->a->shape[0];
    if (ad->rank == 0) ad->rank = r;
    if (r != ad->rank)
        return clara_fail(CLARA_ERR_FORMAT, "%s: %s: model.layers.%u.%s has rank %u, others %u",
                          c->adapters_path, ad->name, layer, hf, r, ad->rank);
    if (r != c->cc.lora_r)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: %s: LoRA rank %u differs from lora_r %u in config.json",
                          c->adapters_path, ad->name, r, c->cc.lora_r);
    return CLARA_OK;
}

static clara_status plan_adapter(conv_ctx *c, size_t ai) {
    conv_adapter *ad = &c->adapter[ai];
    size_t n = (size_t)c->base.n_layers * CLARA_N_LINEAR;
    lora_pair *pairs = calloc(n, sizeof *pairs);
    if (!pairs) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    clara_status s = collect_pairs(c, ai, pairs);
    for (size_t k = 0; s == CLARA_OK && k < n; k++) {
        uint32_t layer = (uint32_t)(k / CLARA_N_LINEAR);
        int m = (int)(k % CLARA_N_LINEAR);
        if (!pairs[k].a && !pairs[k].b) {
            ad->n_modules_missing++;
            continue;
        }
        if ((s = check_pair(c, ad, layer, m, &pairs[k])) != CLARA_OK) break;
        uint64_t in, out;
        linear_dims(&c->base, m, &in, &out);
        uint32_t perm = m == 0 ? c->base.n_heads : m == 1 ? c->base.n_kv_heads : 0;
        char name[96];
        snprintf(name, sizeof name, "clara.%s.blk.%u.%s.lora_a", ad->name, layer,
                 clara_linear_names[m].gguf);
        s = conv_plan_pth(c, pairs[k].a, c->adapters_path, name, ad->rank, in, 0);
        if (s != CLARA_OK) break;
        snprintf(name, sizeof name, "clara.%s.blk.%u.%s.lora_b", ad->name, layer,
                 clara_linear_names[m].gguf);
        s = conv_plan_pth(c, pairs[k].b, c->adapters_path, name, out, ad->rank, perm);
        ad->n_modules_present++;
    }
    free(pairs);
    if (s == CLARA_OK && ad->n_modules_present == 0)
        return clara_fail(CLARA_ERR_FORMAT, "%s: adapter '%s' has no LoRA tensors",
                          c->adapters_path, ad->name);
    if (s == CLARA_OK && ad->n_modules_missing)
        CLARA_LOGW("%s: %s: %u of %zu LoRA modules are missing; they contribute zero (spec §6)",
                   c->adapters_path, ad->name, ad->n_modules_missing, n);
    return s;
}

clara_status conv_plan_adapters(conv_ctx *c) {
    /* adapters in file order: the first '/'-component of each tensor name */
    for (size_t i = 0; i < pth_n_tensors(c->adapters); i++) {
        const char *name = pth_tensor_at(c->adapters, i)->name;
        const char *slash = strchr(name, '/');
        if (!slash)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: expected a dict of adapters, found top-level tensor '%s'",
                              c->adapters_path, name);
        size_t len = (size_t)(slash - name);
        char tmp[64];
        if (len >= sizeof tmp)
            return clara_fail(CLARA_ERR_FORMAT, "%s: adapter name too long", c->adapters_path);
        memcpy(tmp, name, len);
        tmp[len] = '\0';
        if (!known_adapter(tmp)) {
            char q1[128], q2[256];
            CLARA_LOGW("%s: ignoring unknown adapter '%s' (tensor '%s')", c->adapters_path,
                       conv_printable(tmp, q1, sizeof q1), conv_printable(name, q2, sizeof q2));
            continue;
        }
        if (!find_or_add_adapter(c, name, len))
            return clara_fail(CLARA_ERR_FORMAT, "%s: too many adapters", c->adapters_path);
    }
    bool has_encoder = false;
    for (size_t i = 0; i < c->n_adapters; i++) {
        has_encoder |= strcmp(c->adapter[i].name, "encoder_adapter") == 0;
        clara_status s = plan_adapter(c, i);
        if (s != CLARA_OK) return s;
    }
    if (!has_encoder)
        return clara_fail(CLARA_ERR_NOT_FOUND,
                          "%s: no encoder_adapter (every CLaRa model compresses with it)",
                          c->adapters_path);
    return CLARA_OK;
}
