/* engine.c - the device side of a context (engine.h): placing layers against the device's
 * memory, uploading their weights and LoRA modules once, the slots' mirrors and the passes'
 * buffers. The layer's computation is in layer.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/status.h"
#include "dtype.h"
#include "vulkan/engine_internal.h"
#include "vulkan/ops.h"

#define MIB (1024.0 * 1024.0)
/* The attention scores' scratch holds at most this many bytes (rows are dispatched in turn). */
#define SCORES_MAX_BYTES (64ull << 20)

static uint64_t mat_bytes(const clara_mat *w) {
    uint64_t row = 0;
    clara_type_row_bytes(w->type, w->cols, &row);
    return row * w->rows;
}

uint32_t clvk_engine_max_rank(const clara_model *m) {
    uint32_t r = 1;
    for (int i = 0; i < m->n_file_adapters; i++)
        if (m->file_adapters[i].rank > r) r = m->file_adapters[i].rank;
    return r;
}

/* Why layer l cannot run on the device (NULL when it can). */
static const char *layer_unsupported(const clara_model *m, uint32_t l, char *why, size_t cap) {
    const clara_layer *L = &m->layers[l];
    for (int i = 0; i < CLARA_N_LIN; i++) {
        if (L->in_perm[i]) {
            snprintf(why, cap, "layer %u has permuted inputs (an act-order GPTQ import)", l);
            return why;
        }
        if (!clvk_matmul_supports(L->w[i].type)) {
            snprintf(why, cap, "layer %u's weights are %s, which the Vulkan backend does not take",
                     l, clara_type_name(L->w[i].type));
            return why;
        }
    }
    for (int a = 0; a < m->n_file_adapters; a++) {
        const clara_adapter *ad = &m->file_adapters[a];
        for (int i = 0; ad->mods && i < CLARA_N_LIN; i++) {
            const clara_lora *lo = &ad->mods[l * CLARA_N_LIN + i];
            if (lo->a.data &&
                (!clvk_matmul_supports(lo->a.type) || !clvk_matmul_supports(lo->b.type))) {
                snprintf(why, cap, "adapter %s's layer %u modules are %s", ad->name, l,
                         clara_type_name(lo->a.type));
                return why;
            }
        }
    }
    return NULL;
}

/* Device bytes of layer l: weights, norms, LoRA modules. */
static uint64_t layer_bytes(const clara_model *m, uint32_t l) {
    const clara_layer *L = &m->layers[l];
    uint64_t b = 2ull * m->hp.n_embd * 4;
    for (int i = 0; i < CLARA_N_LIN; i++) b += mat_bytes(&L->w[i]);
    for (int a = 0; a < m->n_file_adapters; a++) {
        const clara_adapter *ad = &m->file_adapters[a];
        for (int i = 0; ad->mods && i < CLARA_N_LIN; i++) {
            const clara_lora *lo = &ad->mods[l * CLARA_N_LIN + i];
            if (lo->a.data) b += mat_bytes(&lo->a) + mat_bytes(&lo->b);
        }
    }
    return b;
}

/* A layer's KV mirror for one sequence of the model's whole context. */
static uint64_t kv_layer_bytes(const clara_hparams *hp) {
    return 2ull * hp->n_ctx * hp->n_head_kv * hp->head_dim * 4;
}

/* Scratch for a batch of the feed-forward chunk's rows (a compression pass) over the context. */
static uint64_t scratch_bytes(const clara_model *m) {
    const clara_hparams *hp = &m->hp;
    uint64_t R = hp->n_ctx < CLARA_FFN_CHUNK_ROWS ? hp->n_ctx : CLARA_FFN_CHUNK_ROWS;
    uint64_t H = hp->n_embd, q = (uint64_t)hp->n_head * hp->head_dim, F = hp->n_ff;
    uint64_t kv = (uint64_t)hp->n_head_kv * hp->head_dim, hq = H > q ? H : q;
    uint64_t per_row = 3 * H + 2 * hq + q + 2 * kv + 2 * (hq > F ? hq : F) +
                       clvk_engine_max_rank(m) * CLARA_MAX_ACTIVE + 2 * F + hp->head_dim * 2;
    uint64_t scores = (uint64_t)hp->n_head * hp->n_ctx * 4 * R;
    return R * per_row * 4 + (scores < SCORES_MAX_BYTES ? scores : SCORES_MAX_BYTES);
}

static uint64_t need_bytes(const clara_model *m, uint32_t first) {
    uint64_t b = scratch_bytes(m);
    for (uint32_t l = first; l < m->hp.n_layer; l++)
        b += layer_bytes(m, l) + kv_layer_bytes(&m->hp);
    return b;
}

/* How many of the last layers go to the device. */
static clara_status place(const clara_model *m, uint64_t heap, int want, uint32_t *n_out) {
    uint32_t L = m->hp.n_layer, ok = 0;
    char why[160] = "";
    while (ok < L && !layer_unsupported(m, L - 1 - ok, why, sizeof why)) ok++;
    uint32_t n = want < 0 || (uint32_t)want > L ? L : (uint32_t)want;
    if (want >= 0 && n > ok)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "vulkan: %u layers were asked for, but %s", n,
                          why);
    if (want < 0) {
        n = ok;
        while (n > 0 && need_bytes(m, L - n) > heap) n--;
        if (n == 0)
            return clara_fail(CLARA_ERR_NOMEM,
                              "vulkan: no layer fits on the device: one needs %.0f MiB (weights, "
                              "a KV cache of %u positions, scratch), the heap has %.0f MiB%s%s",
                              need_bytes(m, L - 1) / MIB, m->hp.n_ctx, heap / MIB,
                              ok == 0 ? "; " : "", ok == 0 ? why : "");
    } else if (n > 0 && need_bytes(m, L - n) > heap) {
        return clara_fail(CLARA_ERR_NOMEM,
                          "vulkan: %u layers need %.0f MiB (weights, a KV cache of %u positions, "
                          "scratch) but the device's memory heap has %.0f MiB; ask for fewer "
                          "with --gpu-layers",
                          n, need_bytes(m, L - n) / MIB, m->hp.n_ctx, heap / MIB);
    }
    *n_out = n;
    return CLARA_OK;
}

static clara_status buf_new(clvk_engine *e, uint64_t bytes, clvk_buf **out) {
    clara_status st = clvk_buf_create(e->dev, bytes ? bytes : 4, out);
    if (st == CLARA_OK) e->bytes += clvk_buf_size(*out);
    return st;
}

static void buf_drop(clvk_engine *e, clvk_buf **b) {
    if (!*b) return;
    e->bytes -= clvk_buf_size(*b);
    clvk_buf_free(e->dev, *b);
    *b = NULL;
}

clara_status clvk_engine_ensure(clvk_engine *e, clvk_buf **b, uint64_t bytes) {
    if (*b && clvk_buf_size(*b) >= bytes) return CLARA_OK;
    buf_drop(e, b);
    return buf_new(e, bytes, b);
}

static clara_status upload_new(clvk_engine *e, const void *src, uint64_t bytes, clvk_buf **out) {
    clara_status st = buf_new(e, bytes, out);
    if (st == CLARA_OK) st = clvk_upload(e->dev, *out, 0, src, bytes);
    if (st == CLARA_OK) e->weight_bytes += bytes;
    return st;
}

static clvk_buf **lora_at(const clvk_engine *e, int ad, uint32_t dl, int lin) {
    return &e->lora[(((size_t)ad * e->n_dev + dl) * CLARA_N_LIN + lin) * 2];
}

static clara_status upload_layers(clvk_engine *e) {
    const clara_model *m = e->m;
    size_t n_lora = (size_t)m->n_file_adapters * e->n_dev * CLARA_N_LIN * 2;
    e->layers = calloc(e->n_dev ? e->n_dev : 1, sizeof *e->layers);
    e->lora = calloc(n_lora ? n_lora : 1, sizeof *e->lora);
    if (!e->layers || !e->lora) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    clara_status st = CLARA_OK;
    for (uint32_t dl = 0; dl < e->n_dev && st == CLARA_OK; dl++) {
        const clara_layer *L = &m->layers[e->first + dl];
        clvk_dev_layer *D = &e->layers[dl];
        for (int i = 0; i < CLARA_N_LIN && st == CLARA_OK; i++)
            st = upload_new(e, L->w[i].data, mat_bytes(&L->w[i]), &D->w[i]);
        if (st == CLARA_OK) st = upload_new(e, L->attn_norm, m->hp.n_embd * 4ull, &D->attn_norm);
        if (st == CLARA_OK) st = upload_new(e, L->ffn_norm, m->hp.n_embd * 4ull, &D->ffn_norm);
        for (int a = 0; a < m->n_file_adapters && st == CLARA_OK; a++) {
            const clara_adapter *ad = &m->file_adapters[a];
            for (int i = 0; ad->mods && i < CLARA_N_LIN && st == CLARA_OK; i++) {
                const clara_lora *lo = &ad->mods[(e->first + dl) * CLARA_N_LIN + i];
                if (!lo->a.data) continue;
                clvk_buf **ab = lora_at(e, a, dl, i);
                st = upload_new(e, lo->a.data, mat_bytes(&lo->a), &ab[0]);
                if (st == CLARA_OK) st = upload_new(e, lo->b.data, mat_bytes(&lo->b), &ab[1]);
            }
        }
    }
    return st;
}

void clvk_engine_lora(const clvk_engine *e, const clara_adapter *ad, uint32_t layer, int lin,
                      clvk_buf **a, clvk_buf **b) {
    *a = *b = NULL;
    for (int i = 0; i < e->m->n_file_adapters; i++)
        if (&e->m->file_adapters[i] == ad) {
            clvk_buf **ab = lora_at(e, i, layer - e->first, lin);
            *a = ab[0], *b = ab[1];
        }
}

clara_status clvk_engine_create(const clara_model *m, clvk_pick pick, int gpu_layers,
                                clvk_engine **out) {
    *out = NULL;
    clvk_engine *e = calloc(1, sizeof *e);
    if (!e) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    e->m = m;
    clara_status st = clvk_open(pick, &e->dev);
    if (st == CLARA_OK) {
        e->heap = clvk_desc(e->dev)->mem_bytes;
        /* CLARA_VK_MEMORY_MB: use at most this much of the device (another program's share, or
         * the tests' small device) */
        const char *cap = getenv("CLARA_VK_MEMORY_MB");
        if (cap && *cap && strtoull(cap, NULL, 10) > 0 &&
            strtoull(cap, NULL, 10) * 1048576ull < e->heap)
            e->heap = strtoull(cap, NULL, 10) * 1048576ull;
        st = place(m, e->heap, gpu_layers, &e->n_dev);
    }
    if (st == CLARA_OK) {
        e->first = m->hp.n_layer - e->n_dev;
        st = upload_layers(e);
    }
    if (st != CLARA_OK) {
        clvk_engine_free(e);
        return st;
    }
    const clvk_device_desc *d = clvk_desc(e->dev);
    CLARA_LOGI("vulkan: %s (%s device), %u/%u layers, %.0f MiB of weights (heap %.0f MiB)", d->name,
               d->type, e->n_dev, m->hp.n_layer, e->weight_bytes / MIB, e->heap / MIB);
    *out = e;
    return CLARA_OK;
}

void clvk_engine_free(clvk_engine *e) {
    if (!e) return;
    if (e->dev) {
        for (uint32_t dl = 0; e->layers && dl < e->n_dev; dl++) {
            for (int i = 0; i < CLARA_N_LIN; i++) buf_drop(e, &e->layers[dl].w[i]);
            buf_drop(e, &e->layers[dl].attn_norm);
            buf_drop(e, &e->layers[dl].ffn_norm);
        }
        size_t n_lora = (size_t)e->m->n_file_adapters * e->n_dev * CLARA_N_LIN * 2;
        for (size_t i = 0; e->lora && i < n_lora; i++) buf_drop(e, &e->lora[i]);
        for (uint32_t s = 0; s < e->n_slots; s++) {
            buf_drop(e, &e->slots[s].k);
            buf_drop(e, &e->slots[s].v);
        }
        for (int p = 0; p < 2; p++) {
            buf_drop(e, &e->pass[p].x);
            buf_drop(e, &e->pass[p].cs);
            buf_drop(e, &e->pass[p].cs_q);
        }
        clvk_buf **scratch[] = {&e->xn,      &e->q,      &e->k,       &e->v,
                                &e->att,     &e->tmp,    &e->ff_gate, &e->ff_up,
                                &e->lora_in, &e->lora_t, &e->lora_y,  &e->scores};
        for (size_t i = 0; i < sizeof scratch / sizeof scratch[0]; i++) buf_drop(e, scratch[i]);
        clvk_close(e->dev);
    }
    free(e->layers);
    free(e->lora);
    free(e->slots);
    free(e->host_cs);
    free(e);
}

void clvk_engine_describe(const clvk_engine *e, clvk_engine_info *out) {
    memset(out, 0, sizeof *out);
    out->desc = *clvk_desc(e->dev);
    out->first_layer = e->first, out->n_layers = e->n_dev;
    out->bytes = e->bytes, out->weight_bytes = e->weight_bytes;
}

bool clvk_engine_has_layer(const clvk_engine *e, uint32_t layer) {
    return e && layer >= e->first && layer < e->first + e->n_dev;
}
