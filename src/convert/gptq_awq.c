/* gptq_awq.c - GPTQ (v1/v2) and AWQ (GEMM) linear layers repacked into GGUF blocks without
 * re-quantization (the mapping and its reasons are in gptq_awq.h and docs/FORMAT.md).
 *
 * Facts used, from public code (facts only, nothing copied):
 * - GPTQ packing: AutoGPTQ/GPTQModel QuantLinear.pack() ORs code j of each run of 32/bits input
 *   rows into bits bits*(j - i) of one int32 (low bits first); zeros likewise along the output
 *   dimension. Their torch dequantizers shift by wf = range(0, 32, bits) and mask 2^bits - 1.
 * - GPTQ v1 zero offset: v1 checkpoints store zero - 1; vLLM's gptq kernels add the offset back
 *   as `zeros[i] + 1` (`zero_offset = use_v2_format ? 0 : 1`), GPTQModel converts v1 to v2 by
 *   adding 1 to every packed zero. We use zero = stored + 1 without masking, as those kernels do
 *   (AutoGPTQ's old torch path masks (stored + 1) to `bits` bits; the two differ only for a
 *   stored all-ones field, which AutoGPTQ's own packer cannot write correctly).
 * - g_idx: i // group_size without act-order; with desc_act the quantization order's group of
 *   each input column. n_groups = ceil(in / group_size) (QuantLinear allocates math.ceil).
 * - AWQ GEMM: WQLinear_GEMM.from_linear packs intweight[in, out] along the output dimension with
 *   order_map [0, 2, 4, 6, 1, 3, 5, 7] (nibble k of word c is column 8c + order_map[k]; unpacking
 *   uses the inverse [0, 4, 1, 5, 2, 6, 3, 7]); qzeros the same; w = (q - zero) * scale. */
#include "base/mapfile.h"
#include "convert/gptq_awq.h"
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/fp16.h"
#include "base/log.h"
#include "base/status.h"
#include "dtype.h"

#define QK 32

typedef struct gq_linear {
    char name[128]; /* "model.layers.N.self_attn.q_proj" */
    const st_tensor *qweight, *qzeros, *scales;
    uint32_t in, out, bits, pack, n_groups;
    bool awq, v1;
    clara_type type;
    uint32_t *perm;        /* stored column j holds input perm[j]; NULL = identity */
    uint32_t *block_group; /* group of each 32-column block, in stored order */
    struct gq_linear *next;
} gq_linear;

struct gq_state {
    char cfg[4200]; /* "<dir>/config.json: quantization_config" for messages */
    bool awq, v1;
    uint32_t bits;
    int32_t group_size;
    bool desc_act;
    gq_linear *list;
    size_t n_q4_0, n_q4_1, n_q8_0, n_q8_z;
};

/* AWQ: nibble holding output column 8c + k (inverse of the packing order_map) */
static const uint8_t AWQ_POS[8] = {0, 4, 1, 5, 2, 6, 3, 7};

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* ---- configuration ------------------------------------------------------------------------ */

static clara_status check_config(const clara_quant_config *q, const char *cfg) {
    bool awq = strcmp(q->method, "awq") == 0;
    if (awq ? q->bits != 4 : (q->bits != 4 && q->bits != 8))
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: bits %u is not supported (%s)", cfg, q->bits,
                          awq ? "AWQ: 4" : "GPTQ: 4 or 8");
    if (q->group_size != -1 && q->group_size % QK != 0)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: group_size %d is not supported: groups must be whole 32-element "
                          "blocks (a multiple of 32, or -1)",
                          cfg, q->group_size);
    if (q->has_dynamic)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: per-module 'dynamic' overrides are not supported", cfg);
    if (awq) {
        if (strcasecmp(q->format, "gemm") != 0)
            return clara_fail(CLARA_ERR_UNSUPPORTED,
                              "%s: AWQ version '%s' is not supported (only GEMM packing)", cfg,
                              q->format);
        if (!q->zero_point)
            return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: AWQ zero_point=false is not supported",
                              cfg);
        return CLARA_OK;
    }
    if (strcmp(q->format, "gptq") != 0 && strcmp(q->format, "gptq_v2") != 0)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: checkpoint_format '%s' is not supported (gptq or gptq_v2)", cfg,
                          q->format);
    if (q->pack_dtype[0] && strcmp(q->pack_dtype, "int32") != 0)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: pack_dtype '%s' is not supported (int32)",
                          cfg, q->pack_dtype);
    return CLARA_OK;
}

static clara_status state_init(conv_ctx *c) {
    const clara_quant_config *q = &c->base.quant;
    if (!q->method[0])
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s/config.json: the checkpoint has quantized tensors (.qweight) but no "
                          "quantization_config",
                          c->p.base_dir);
    struct gq_state *g = calloc(1, sizeof *g);
    if (!g) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    snprintf(g->cfg, sizeof g->cfg, "%s/config.json: quantization_config", c->p.base_dir);
    clara_status s = check_config(q, g->cfg);
    if (s != CLARA_OK) {
        free(g);
        return s;
    }
    g->awq = strcmp(q->method, "awq") == 0;
    g->v1 = !g->awq && strcmp(q->format, "gptq") == 0;
    g->bits = q->bits;
    g->group_size = q->group_size;
    g->desc_act = q->desc_act;
    c->gq = g;
    return CLARA_OK;
}

void gq_free(struct gq_state *g) {
    if (!g) return;
    for (gq_linear *l = g->list, *n; l; l = n) {
        n = l->next;
        free(l->perm);
        free(l->block_group);
        free(l);
    }
    free(g);
}

/* ---- tensors -------------------------------------------------------------------------------- */

static const st_tensor *find(const conv_ctx *c, const char *prefix, const char *suffix) {
    char name[192];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    return st_model_find(c->st, name);
}

bool gq_is_quantized(const conv_ctx *c, uint32_t layer, const char *hf_module) {
    char prefix[160];
    snprintf(prefix, sizeof prefix, "model.layers.%u.%s", layer, hf_module);
    return find(c, prefix, "qweight") != NULL;
}

/* Looks up prefix.suffix and checks its dtype and 2-D (or 1-D when rows == 0) shape; `why`
 * explains the expected shape in the message. */
static clara_status need(const conv_ctx *c, const char *prefix, const char *suffix, st_dtype dt,
                         uint64_t rows, uint64_t cols, const char *why, const st_tensor **out) {
    const st_tensor *t = find(c, prefix, suffix);
    if (!t)
        return clara_fail(CLARA_ERR_NOT_FOUND, "%s: tensor '%s.%s' is missing (%s)", c->st_source,
                          prefix, suffix, why);
    if (t->dtype != dt)
        return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected %s", t->file,
                          t->name, st_dtype_name(t->dtype), st_dtype_name(dt));
    bool ok = rows == 0 ? t->n_dims == 1 && t->shape[0] == cols
                        : t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols;
    if (!ok) {
        char got[64] = "";
        for (uint32_t i = 0; i < t->n_dims && i < 3; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", i ? ", " : "",
                     (unsigned long long)t->shape[i]);
        if (rows == 0)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: tensor '%s' has shape [%s], expected [%llu] (%s)", t->file,
                              t->name, got, (unsigned long long)cols, why);
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: tensor '%s' has shape [%s], expected [%llu, %llu] (%s)", t->file,
                          t->name, got, (unsigned long long)rows, (unsigned long long)cols, why);
    }
    *out = t;
    return CLARA_OK;
}

/* A bias would be added after the product; Mistral has none, and an all-zero one (some GPTQ
 * writers save it) changes nothing. */
static clara_status check_bias(const conv_ctx *c, const char *prefix) {
    const st_tensor *b = find(c, prefix, "bias");
    if (!b) return CLARA_OK;
    uint32_t es = st_dtype_size(b->dtype);
    bool flt = b->dtype == ST_F16 || b->dtype == ST_BF16 || b->dtype == ST_F32;
    for (uint64_t i = 0; flt && i < b->nbytes; i++) /* +-0 only: all bits but the sign clear */
        if (b->data[i] & ((i % es == es - 1) ? 0x7f : 0xff)) flt = false;
    clara_release_pages(b->data, b->nbytes);
    if (!flt)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: tensor '%s' is a non-zero bias (not supported)", b->file, b->name);
    return CLARA_OK;
}

static clara_status find_tensors(const conv_ctx *c, gq_linear *L) {
    char why[160];
    clara_status s;
    uint64_t ng = L->n_groups;
    if (L->awq) {
        snprintf(why, sizeof why, "AWQ packs 8 codes per int32 along out_features %u", L->out);
        s = need(c, L->name, "qweight", ST_I32, L->in, L->out / 8, why, &L->qweight);
        if (s == CLARA_OK) s = need(c, L->name, "qzeros", ST_I32, ng, L->out / 8, why, &L->qzeros);
    } else {
        snprintf(why, sizeof why, "GPTQ %u-bit packs %u codes per int32 along in_features %u",
                 L->bits, L->pack, L->in);
        s = need(c, L->name, "qweight", ST_I32, L->in / L->pack, L->out, why, &L->qweight);
        snprintf(why, sizeof why, "%llu group(s); %u zeros per int32 along out_features %u",
                 (unsigned long long)ng, L->pack, L->out);
        if (s == CLARA_OK)
            s = need(c, L->name, "qzeros", ST_I32, ng, L->out / L->pack, why, &L->qzeros);
    }
    snprintf(why, sizeof why, "%llu group(s) of in_features %u, out_features %u",
             (unsigned long long)ng, L->in, L->out);
    if (s == CLARA_OK) s = need(c, L->name, "scales", ST_F16, ng, L->out, why, &L->scales);
    if (s == CLARA_OK && find(c, L->name, "weight"))
        return clara_fail(CLARA_ERR_FORMAT, "%s: '%s' has both .weight and .qweight", c->st_source,
                          L->name);
    return s == CLARA_OK ? check_bias(c, L->name) : s;
}

/* ---- groups and the act-order permutation ------------------------------------------------ */

/* Fills grp[in] from g_idx (or i / group_size) and checks it. */
static clara_status read_groups(const conv_ctx *c, const gq_linear *L, uint32_t gs, uint32_t *grp) {
    const struct gq_state *g = c->gq;
    const st_tensor *gi = L->awq ? NULL : find(c, L->name, "g_idx");
    if (!gi && g->desc_act)
        return clara_fail(
            CLARA_ERR_NOT_FOUND,
            "%s: tensor '%s.g_idx' is missing (quantization_config has desc_act=true)",
            c->st_source, L->name);
    if (gi) {
        const st_tensor *t;
        clara_status s = need(c, L->name, "g_idx", ST_I32, 0, L->in, "one group per input", &t);
        if (s != CLARA_OK) return s;
    }
    for (uint32_t i = 0; i < L->in; i++) {
        uint32_t v = gi ? rd32(gi->data + 4 * (uint64_t)i) : i / gs;
        if (v >= L->n_groups) /* also catches negative values (as unsigned) */
            return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s': g_idx[%u] = %d is not in [0, %u)",
                              gi->file, gi->name, i, (int32_t)v, L->n_groups);
        if (gi && !g->desc_act && v != i / gs)
            return clara_fail(CLARA_ERR_FORMAT,
                              "%s: tensor '%s': g_idx[%u] = %u but desc_act=false means %u "
                              "(i / group_size)",
                              gi->file, gi->name, i, v, i / gs);
        grp[i] = v;
    }
    return CLARA_OK;
}

/* Sorts the input columns by group (stable counting sort) and records each 32-column block's
 * group; every block must lie in one group. The permutation is dropped when it is the identity
 * (always so without act-order). */
static clara_status plan_groups(const conv_ctx *c, gq_linear *L, const uint32_t *grp) {
    uint32_t *start = calloc((size_t)L->n_groups + 1, sizeof *start);
    L->perm = malloc((size_t)L->in * sizeof *L->perm);
    L->block_group = malloc((size_t)(L->in / QK) * sizeof *L->block_group);
    if (!start || !L->perm || !L->block_group) {
        free(start);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < L->in; i++) start[grp[i] + 1]++;
    for (uint32_t g = 0; g < L->n_groups; g++) start[g + 1] += start[g];
    bool identity = true;
    for (uint32_t i = 0; i < L->in; i++) {
        uint32_t j = start[grp[i]]++;
        L->perm[j] = i;
        identity &= j == i;
    }
    free(start);
    for (uint32_t b = 0; b < L->in / QK; b++) {
        uint32_t g = grp[L->perm[b * QK]];
        for (uint32_t t = 1; t < QK; t++)
            if (grp[L->perm[b * QK + t]] != g) {
                uint32_t n = 0;
                for (uint32_t i = 0; i < L->in; i++) n += grp[i] == g;
                return clara_fail(CLARA_ERR_UNSUPPORTED,
                                  "%s: '%s': group %u has %u input columns, not a multiple of 32 "
                                  "(the block size)",
                                  c->st_source, L->name, g, n);
            }
        L->block_group[b] = g;
    }
    if (identity) {
        free(L->perm);
        L->perm = NULL;
    }
    return CLARA_OK;
}

/* ---- codes, zeros, scales ----------------------------------------------------------------- */

static uint32_t zero_at(const gq_linear *L, uint32_t g, uint32_t o) {
    if (L->awq) {
        uint32_t w = rd32(L->qzeros->data + 4 * ((uint64_t)g * (L->out / 8) + o / 8));
        return (w >> (4 * AWQ_POS[o % 8])) & 15;
    }
    uint32_t w = rd32(L->qzeros->data + 4 * ((uint64_t)g * (L->out / L->pack) + o / L->pack));
    return ((w >> (L->bits * (o % L->pack))) & ((1u << L->bits) - 1)) + (L->v1 ? 1 : 0);
}

static uint16_t scale_at(const gq_linear *L, uint32_t g, uint32_t o) {
    return rd16(L->scales->data + 2 * ((uint64_t)g * L->out + o));
}

/* Chooses the block type from the stored zeros (the symmetric types need every zero at the
 * midpoint, whatever `sym` says) and checks the scales. */
static clara_status choose_type(gq_linear *L) {
    uint32_t mid = 1u << (L->bits - 1);
    bool all_mid = true;
    double max_m = 0;
    for (uint32_t g = 0; g < L->n_groups; g++)
        for (uint32_t o = 0; o < L->out; o++) {
            uint32_t z = zero_at(L, g, o);
            float s = clara_f16_to_f32(scale_at(L, g, o));
            if (!isfinite(s))
                return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s': scales[%u][%u] is not finite",
                                  L->scales->file, L->scales->name, g, o);
            all_mid &= z == mid;
            if (fabs((double)s * z) > max_m) max_m = fabs((double)s * z);
        }
    if (L->bits == 8) {
        L->type = all_mid ? CLARA_TYPE_Q8_0 : CLARA_TYPE_Q8_Z;
        return CLARA_OK;
    }
    L->type = all_mid ? CLARA_TYPE_Q4_0 : CLARA_TYPE_Q4_1;
    if (!all_mid && max_m > 65504.0) /* q4_1's min -scale*zero must fit an f16 */
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: tensor '%s': scale * zero = %g overflows the f16 min of q4_1",
                          L->scales->file, L->scales->name, max_m);
    return CLARA_OK;
}

/* Codes of source output columns [o0, o0 + n) for every input, into codes[(o - o0) * in + i]. */
static void unpack(const gq_linear *L, uint32_t o0, uint32_t n, uint8_t *codes) {
    const uint8_t *qw = L->qweight->data;
    if (L->awq) {
        for (uint32_t i = 0; i < L->in; i++) {
            const uint8_t *row = qw + 4 * (uint64_t)i * (L->out / 8);
            for (uint32_t k = 0; k < n; k++) {
                uint32_t o = o0 + k;
                codes[(size_t)k * L->in + i] =
                    (uint8_t)((rd32(row + 4 * (o / 8)) >> (4 * AWQ_POS[o % 8])) & 15);
            }
        }
        return;
    }
    uint32_t mask = (1u << L->bits) - 1;
    for (uint32_t pr = 0; pr < L->in / L->pack; pr++) {
        const uint8_t *row = qw + 4 * (uint64_t)pr * L->out;
        for (uint32_t k = 0; k < n; k++) {
            uint32_t w = rd32(row + 4 * (uint64_t)(o0 + k));
            uint8_t *dst = codes + (size_t)k * L->in + (size_t)pr * L->pack;
            for (uint32_t b = 0; b < L->pack; b++) dst[b] = (uint8_t)((w >> (L->bits * b)) & mask);
        }
    }
}

/* One GGUF row (output feature o) from that feature's codes (source input order). */
static void build_row(const gq_linear *L, uint32_t o, const uint8_t *codes, uint8_t *dst) {
    uint8_t q[QK];
    for (uint32_t b = 0; b < L->in / QK; b++) {
        uint32_t g = L->block_group[b];
        uint16_t d = scale_at(L, g, o);
        uint32_t z = zero_at(L, g, o);
        for (uint32_t t = 0; t < QK; t++) {
            uint32_t j = b * QK + t;
            q[t] = codes[L->perm ? L->perm[j] : j];
        }
        put16(dst, d);
        switch (L->type) {
        case CLARA_TYPE_Q4_0: /* w = d * (q - 8): the zero is 8 */
            for (int t = 0; t < 16; t++) dst[2 + t] = (uint8_t)(q[t] | q[t + 16] << 4);
            dst += 18;
            break;
        case CLARA_TYPE_Q4_1: /* w = d * q + m, m = -d * zero (f32 product exact, one rounding) */
            put16(dst + 2, clara_f32_to_f16(-(clara_f16_to_f32(d) * (float)z)));
            for (int t = 0; t < 16; t++) dst[4 + t] = (uint8_t)(q[t] | q[t + 16] << 4);
            dst += 20;
            break;
        case CLARA_TYPE_Q8_0: /* w = d * (q - 128): the zero is 128 */
            for (int t = 0; t < QK; t++) dst[2 + t] = (uint8_t)((int)q[t] - 128);
            dst += 34;
            break;
        default: /* CLARA_TYPE_Q8_Z: w = d * (q - z) */
            put16(dst + 2, (uint16_t)z);
            memcpy(dst + 4, q, QK);
            dst += 36;
            break;
        }
    }
}

void gq_dequantize_q8_z(const void *src, uint64_t n, float *y) {
    clara_dequantize_row(CLARA_TYPE_Q8_Z, src, n, y); /* the one definition lives in quant.c */
}

/* ---- planning ------------------------------------------------------------------------------ */

static clara_status add_entries(conv_ctx *c, gq_linear *L, const char *gguf_name,
                                uint32_t permute_heads) {
    conv_entry e;
    memset(&e, 0, sizeof e);
    snprintf(e.name, sizeof e.name, "%s", gguf_name);
    e.out_type = L->type;
    e.n_dims = 2;
    e.ne[0] = L->in;
    e.ne[1] = L->out;
    e.src_type = CLARA_TYPE_I32;
    e.src_desc = L->qweight->name;
    e.permute_heads = permute_heads;
    e.gq = L;
    clara_status s = conv_add_entry(c, &e);
    if (s != CLARA_OK || !L->perm) return s;
    /* "blk.N.attn_q.weight" -> "clara.blk.N.attn_q.in_perm" */
    size_t len = strlen(gguf_name);
    const char *dot = strrchr(gguf_name, '.');
    if (dot) len = (size_t)(dot - gguf_name);
    if (len > 64) len = 64; /* "blk.NNN.attn_output" is far shorter */
    snprintf(e.name, sizeof e.name, "clara.%.*s.in_perm", (int)len, gguf_name);
    e.out_type = CLARA_TYPE_I32;
    e.n_dims = 1;
    e.ne[1] = 1;
    e.permute_heads = 0;
    return conv_add_entry(c, &e);
}

static clara_status plan_linear(conv_ctx *c, gq_linear *L, const char *gguf_name, uint32_t perm) {
    const struct gq_state *g = c->gq;
    uint32_t gs = g->group_size == -1 ? L->in : (uint32_t)g->group_size;
    L->n_groups = (L->in + gs - 1) / gs;
    uint32_t out_pack = L->awq ? 8 : L->pack;
    if (L->in % QK != 0 || L->out % out_pack != 0)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: '%s': in_features %u must be a multiple of 32 and out_features %u "
                          "of %u",
                          c->st_source, L->name, L->in, L->out, out_pack);
    clara_status s = find_tensors(c, L);
    if (s != CLARA_OK) return s;
    uint32_t *grp = malloc((size_t)L->in * sizeof *grp);
    if (!grp) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    s = read_groups(c, L, gs, grp);
    if (s == CLARA_OK) s = plan_groups(c, L, grp);
    free(grp);
    if (s == CLARA_OK) s = choose_type(L);
    if (s == CLARA_OK) s = add_entries(c, L, gguf_name, perm);
    return s;
}

clara_status gq_plan_linear(conv_ctx *c, uint32_t layer, const char *hf_module,
                            const char *gguf_name, uint64_t rows, uint64_t cols,
                            uint32_t permute_heads) {
    clara_status s;
    if (!c->gq && (s = state_init(c)) != CLARA_OK) return s;
    struct gq_state *g = c->gq;
    gq_linear *L = calloc(1, sizeof *L);
    if (!L) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    L->next = g->list; /* owned by the state from here on, whatever happens */
    g->list = L;
    snprintf(L->name, sizeof L->name, "model.layers.%u.%s", layer, hf_module);
    L->in = (uint32_t)cols;
    L->out = (uint32_t)rows;
    L->bits = g->bits;
    L->pack = 32 / g->bits;
    L->awq = g->awq;
    L->v1 = g->v1;
    if ((s = plan_linear(c, L, gguf_name, permute_heads)) != CLARA_OK) return s;
    g->n_q4_0 += L->type == CLARA_TYPE_Q4_0;
    g->n_q4_1 += L->type == CLARA_TYPE_Q4_1;
    g->n_q8_0 += L->type == CLARA_TYPE_Q8_0;
    g->n_q8_z += L->type == CLARA_TYPE_Q8_Z;
    return CLARA_OK;
}

/* ---- writing ------------------------------------------------------------------------------- */

/* Same mapping as convert_write.c: output row 2i + j of each head takes source row j*d/2 + i. */
static uint32_t source_row(uint32_t r, uint32_t rows, uint32_t n_heads) {
    if (!n_heads) return r;
    uint32_t d = rows / n_heads, h = r / d, w = r % d;
    return h * d + (w % 2) * (d / 2) + w / 2;
}

static clara_status write_perm(conv_ctx *c, const gq_linear *L) {
    uint8_t *buf = malloc((size_t)L->in * 4);
    if (!buf) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    for (uint32_t j = 0; j < L->in; j++) {
        uint32_t v = L->perm[j];
        for (int k = 0; k < 4; k++) buf[4 * (size_t)j + k] = (uint8_t)(v >> (8 * k));
    }
    clara_status s = gguf_writer_write(c->w, buf, (size_t)L->in * 4);
    free(buf);
    return s;
}

clara_status gq_write_entry(conv_ctx *c, const conv_entry *e) {
    const gq_linear *L = e->gq;
    if (e->out_type == CLARA_TYPE_I32) return write_perm(c, L);
    uint64_t row_bytes;
    clara_status s = clara_type_row_bytes(L->type, L->in, &row_bytes);
    if (s != CLARA_OK) return s;
    /* chunks of whole heads when rows are permuted, so a chunk's source rows are its own */
    uint32_t unit = e->permute_heads ? L->out / e->permute_heads : 1;
    uint32_t n = (uint32_t)((2u << 20) / L->in) / unit * unit;
    if (n < unit) n = unit;
    if (n > L->out) n = L->out;
    uint8_t *codes = malloc((size_t)n * L->in), *rows = malloc((size_t)n * row_bytes);
    if (!codes || !rows) s = clara_fail(CLARA_ERR_NOMEM, "out of memory writing %s", e->name);
    for (uint32_t r0 = 0; s == CLARA_OK && r0 < L->out; r0 += n) {
        uint32_t m = L->out - r0 < n ? L->out - r0 : n;
        unpack(L, r0, m, codes);
        for (uint32_t i = 0; i < m; i++) {
            uint32_t o = source_row(r0 + i, L->out, e->permute_heads);
            build_row(L, o, codes + (size_t)(o - r0) * L->in, rows + i * row_bytes);
        }
        s = gguf_writer_write(c->w, rows, (size_t)(m * row_bytes));
    }
    free(codes);
    free(rows);
    clara_release_pages(L->qweight->data, L->qweight->nbytes);
    clara_release_pages(L->qzeros->data, L->qzeros->nbytes);
    clara_release_pages(L->scales->data, L->scales->nbytes);
    return s;
}

clara_status gq_write_metadata(conv_ctx *c) {
    const struct gq_state *g = c->gq;
    if (!g) return CLARA_OK;
    /* llama_ftype of the most common block type (q8_z has none: the float type's stays) */
    size_t best = g->n_q8_z;
    uint32_t ftype = conv_file_type(c->p.type);
    const struct {
        size_t n;
        uint32_t ftype;
    } k[] = {{g->n_q4_0, 2}, {g->n_q4_1, 3}, {g->n_q8_0, 7}};
    for (size_t i = 0; i < 3; i++)
        if (k[i].n > best) best = k[i].n, ftype = k[i].ftype;
    clara_status s = gguf_writer_set_u32(c->w, "general.file_type", ftype);
    if (s == CLARA_OK)
        s = gguf_writer_set_str(c->w, "clara.quantization.method", g->awq ? "awq" : "gptq");
    if (s == CLARA_OK)
        s = gguf_writer_set_str(c->w, "clara.quantization.format",
                                g->awq  ? "gemm"
                                : g->v1 ? "gptq"
                                        : "gptq_v2");
    if (s == CLARA_OK) s = gguf_writer_set_u32(c->w, "clara.quantization.bits", g->bits);
    if (s == CLARA_OK)
        s = gguf_writer_set_i32(c->w, "clara.quantization.group_size", g->group_size);
    return s;
}
