/* qgemm.c - the packed int8 GEMM for quantized weights (qgemm.h): the per-type unpacking of
 * weight rows into codes + block scales, the re-arrangement of the quantized activations, and
 * the driver that splits the weight rows into panels over the thread pool. The inner kernels
 * are per ISA level (qgemm_kernel.inc). */
#include "cpu/qgemm.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/fp16.h"
#include "cpu/dispatch.h"
#include "cpu/kernels.h"
#include "cpu/matmul.h"
#include "cpu/params.h"
#include "cpu/repack.h"
#include "dtype.h"
#include "quant.h"

/* The most panels a task takes (its panel array's size); cpu/params.h's qg_panels may lower it. */
#define QG_TASK_PANELS 4

static size_t align64(size_t n) {
    return (n + 63) & ~(size_t)63;
}

bool clara_qg_type_get(clara_type t, clara_qg_type *o) {
    switch (t) {
    case CLARA_TYPE_Q4_0:
        *o = (clara_qg_type){32, 8, false, CLARA_TYPE_Q8_0, 4, 0};
        break;
    case CLARA_TYPE_Q5_0:
        *o = (clara_qg_type){32, 16, false, CLARA_TYPE_Q8_0, 5, 0};
        break;
    case CLARA_TYPE_Q8_0:
        *o = (clara_qg_type){32, 128, false, CLARA_TYPE_Q8_0, 8, 0};
        break;
    case CLARA_TYPE_Q4_1:
        *o = (clara_qg_type){32, 0, true, CLARA_TYPE_Q8_1, 4, 0};
        break;
    case CLARA_TYPE_Q5_1:
        *o = (clara_qg_type){32, 0, true, CLARA_TYPE_Q8_1, 5, 0};
        break;
    case CLARA_TYPE_Q4_K:
        *o = (clara_qg_type){32, 0, true, CLARA_TYPE_Q8_K, 4, 0};
        break;
    case CLARA_TYPE_Q5_K:
        *o = (clara_qg_type){32, 0, true, CLARA_TYPE_Q8_K, 5, 0};
        break;
    case CLARA_TYPE_Q6_K:
        *o = (clara_qg_type){16, 32, false, CLARA_TYPE_Q8_K, 6, 0};
        break;
    case CLARA_TYPE_Q8_K:
        *o = (clara_qg_type){32, 128, false, CLARA_TYPE_Q8_K, 8, 0};
        break;
    default:
        return false;
    }
    /* q8_k's one scale per 256 codes is applied per super-block of 256 / B blocks (qgemm.h) */
    o->sb = o->act_type == CLARA_TYPE_Q8_K ? 256 / o->B : 0;
    return true;
}

/* Sum of B codes, B a constant at each call so the loop vectorizes. */
static inline int32_t code_sum(const int8_t *q, uint32_t B) {
    int32_t sum = 0;
    for (uint32_t l = 0; l < B; l++) sum += q[l];
    return sum;
}

static int32_t code_sum16(const int8_t *q) {
    return code_sum(q, 16);
}

static int32_t code_sum32(const int8_t *q) {
    return code_sum(q, 32);
}

void clara_qg_pack_act(const clara_qg_type *qt, const uint8_t *xq, size_t K, int8_t *aq,
                       size_t block_stride, float *dx, int32_t *aoff, float *dxa) {
    const clara_type_info *ai = clara_type_get((uint32_t)qt->act_type);
    size_t nab = K / ai->block_size, per = ai->block_size / qt->B;
    size_t qoff = qt->act_type == CLARA_TYPE_Q8_1 ? 4 : qt->act_type == CLARA_TYPE_Q8_K ? 4 : 2;
    for (size_t i = 0; i < nab; i++) {
        const uint8_t *ab = xq + i * ai->type_size;
        float d = qt->act_type == CLARA_TYPE_Q8_K ? clara_f32_le(ab) : clara_f16_le(ab);
        const int8_t *q = (const int8_t *)(ab + qoff);
        for (size_t j = 0; j < per; j++) {
            size_t b = i * per + j;
            memcpy(aq + b * block_stride, q + j * qt->B, qt->B);
            int32_t sum = qt->B == 32 ? code_sum32(q + j * 32) : code_sum16(q + j * 16);
            dx[b] = d;
            aoff[b] = -qt->off * sum;
            dxa[b] = qt->sb ? (float)sum : d * (float)sum; /* sb: dx comes per super-block */
        }
    }
}

/* ---- driver ---- */

typedef struct {
    cpu_kctx *kc;
    const cpu_mat *W;
    clara_qg_type qt;
    const float *x;
    uint32_t n;
    float *y;
    bool accumulate;
    float alpha;
    uint32_t RG, G;
    clara_qg_level lv;
    clara_isa isa;
    clara_qg_acts acts;
    int8_t *aq;
    float *dx, *dxa;
    int32_t *aoff;
    uint8_t *xq_tmp; /* [threads][partner row bytes] */
    size_t xq_bytes;
    uint8_t *panels; /* [threads][np][panel_bytes]: each unpacked panel, then its LoRA deltas */
    size_t panel_bytes, unpack_bytes;
    int np; /* panels per task */
    uint32_t tokens_per_task;
    const clara_lora_delta *deltas;
    int n_deltas;
    _Atomic bool failed; /* an activation row could not be quantized (non-finite) */
} qg_job;

/* Where token t's codes start in the layout of a (clara_qg_acts), and how far apart its blocks
 * are. */
static int8_t *act_codes(const clara_qg_acts *a, uint32_t t) {
    int8_t *aq = (int8_t *)a->aq;
    if (!a->tile) return aq + (size_t)t * a->K;
    return aq + (size_t)(t / a->tile) * a->tile * a->K + (size_t)(t % a->tile) * (a->K / a->nb);
}

static size_t act_block_stride(const clara_qg_acts *a) {
    return a->tile ? (size_t)a->tile * (a->K / a->nb) : a->K / a->nb;
}

static void act_task(void *arg, size_t task, int thread) {
    qg_job *j = arg;
    size_t K = (size_t)j->W->cols, nb = j->acts.nb;
    uint32_t t0 = (uint32_t)task * j->tokens_per_task;
    uint32_t t1 = t0 + j->tokens_per_task < j->n ? t0 + j->tokens_per_task : j->n;
    uint8_t *tmp = j->xq_tmp + (size_t)thread * j->xq_bytes;
    for (uint32_t t = t0; t < t1; t++) {
        if (!clara_quantize_act(j->isa, (clara_type)j->qt.act_type, j->x + (size_t)t * K, K, tmp)) {
            atomic_store(&j->failed, true);
            return;
        }
        clara_qg_pack_act(&j->qt, tmp, K, act_codes(&j->acts, t), act_block_stride(&j->acts),
                          j->dx + (size_t)t * nb, j->aoff + (size_t)t * nb,
                          j->dxa + (size_t)t * nb);
    }
}

/* Unpacks rows [r0, r0 + G*RG) into the thread's panel: each row's codes contiguous (the level's
 * SIMD unpacker), then interleaved into the panel layout. */
static void unpack_panel(const qg_job *j, uint64_t r0, uint8_t *buf, clara_qg_panel *p) {
    size_t K = (size_t)j->W->cols, nb = j->acts.nb, R = (size_t)j->G * j->RG;
    uint64_t row_bytes = 0;
    clara_type_row_bytes(j->W->type, j->W->cols, &row_bytes);
    uint8_t *codes = buf, *rows = buf + R * K;
    float *s = (float *)(rows + R * K), *m = s + nb * R;
    float *rs = m + nb * R, *rm = rs + nb;
    for (size_t i = 0; i < R; i++) {
        uint64_t r = r0 + i;
        uint8_t *rc = rows + i * K;
        if (r >= j->W->rows) {
            memset(rc, 0, K);
            memset(rs, 0, nb * sizeof(float));
            memset(rm, 0, nb * sizeof(float));
        } else {
            j->lv.unpack(j->W->type, (const uint8_t *)j->W->data + r * row_bytes, K, rc, rs, rm);
        }
        for (size_t b = 0; b < nb; b++) s[b * R + i] = rs[b], m[b * R + i] = rm[b];
    }
    j->lv.interleave(rows, K, codes);
    *p = (clara_qg_panel){codes, s, m, j->G, j->RG, NULL, 0};
}

/* Rows [r0, r0 + 32) from the repacked copy (r0: a whole group) into the thread's panel, by the
 * level's lanes function; groups past the matrix zero, scales of rows past it zero. */
static void lanes_panel(const qg_job *j, uint64_t r0, uint8_t *buf, clara_qg_panel *p) {
    const size_t K = (size_t)j->W->cols, nb = K / j->qt.B, R = (size_t)j->G * j->RG;
    uint8_t *codes = buf;
    float *s = (float *)(buf + 2 * R * K), *m = s + nb * R;
    if (!j->qt.has_min) memset(m, 0, nb * R * sizeof(float));
    for (uint32_t gi = 0; gi < j->G; gi++) {
        uint64_t g = r0 / 16 + gi;
        if (g * 16 < j->W->rows)
            j->lv.lanes(j->W->type, j->W->lanes + g * cpu_lanes_group_bytes(j->W), K, gi, codes, s,
                        m);
        for (size_t i = 0; i < 16; i++) {
            if (g * 16 + i < j->W->rows) continue;
            for (size_t b = 0; b < nb; b++) s[b * R + gi * 16 + i] = m[b * R + gi * 16 + i] = 0.f;
            for (size_t k4 = 0; k4 < K / 4; k4++)
                memset(codes + ((k4 * j->G + gi) * 16 + i) * 4, 0, 4);
        }
    }
    *p = (clara_qg_panel){codes, s, m, j->G, j->RG, NULL, 0};
}

/* The panel's rows of each LoRA delta's B, as f32 transposed (bt[k][R]; rows past B are 0), in
 * the thread's delta area, and the panel's delta list pointing at them. */
static void panel_deltas(const qg_job *j, uint64_t r0, uint8_t *area, clara_qg_panel *p) {
    size_t R = (size_t)j->G * j->RG;
    clara_qg_delta *pd = (clara_qg_delta *)area;
    float *bt = (float *)(area + align64((size_t)j->n_deltas * sizeof *pd));
    for (int i = 0; i < j->n_deltas; i++) {
        const clara_lora_delta *d = &j->deltas[i];
        uint32_t k = (uint32_t)d->B->cols;
        float row[QG_DELTA_MAX_K];
        for (size_t r = 0; r < R; r++) {
            const float *br = r0 + r < d->B->rows ? clara_mat_row_f32(d->B, r0 + r, row) : NULL;
            for (uint32_t c = 0; c < k; c++) bt[c * R + r] = br ? br[c] : 0.0f;
        }
        pd[i] = (clara_qg_delta){d->t0, d->n, k, d->t, bt, d->scale};
        bt += (size_t)k * R;
    }
    p->deltas = pd;
    p->n_deltas = j->n_deltas;
}

static void gemm_task(void *arg, size_t task, int thread) {
    const qg_job *j = arg;
    const uint64_t R = (uint64_t)j->G * j->RG, r0 = (uint64_t)task * j->np * R;
    const uint64_t left = j->W->rows - r0, span = (uint64_t)j->np * R;
    const uint32_t valid = (uint32_t)(left < span ? left : span);
    const int np = (int)((valid + R - 1) / R);
    clara_qg_panel p[QG_TASK_PANELS];
    for (int i = 0; i < np; i++) {
        uint8_t *area = j->panels + ((size_t)thread * j->np + (size_t)i) * j->panel_bytes;
        if (j->W->lanes && j->lv.lanes && j->G == 2)
            lanes_panel(j, r0 + (uint64_t)i * R, area, &p[i]);
        else
            unpack_panel(j, r0 + (uint64_t)i * R, area, &p[i]);
        if (j->lv.sign_codes && j->qt.off)
            j->lv.sign_codes(area, R * (size_t)j->W->cols, j->qt.off);
        if (j->n_deltas) panel_deltas(j, r0 + (uint64_t)i * R, area + j->unpack_bytes, &p[i]);
    }
    j->lv.kernel(&j->qt, p, np, &j->acts, j->n, j->y + r0, (size_t)j->W->rows, valid, j->accumulate,
                 j->alpha);
}

/* Panels per task: as many as fit qg_task_kib of unpacked codes (a share of the L2 cache, so
 * that each tile's activations, read once from memory, serve all of them), up to qg_panels
 * (cpu/params.h; at most QG_TASK_PANELS), while there are at least 4 tasks per thread to
 * balance. */
static int panels_per_task(uint64_t rows, size_t R, size_t K, int threads) {
    const cpu_params *P = cpu_params_get();
    int most = P->qg_panels < QG_TASK_PANELS ? (int)P->qg_panels : QG_TASK_PANELS;
    int np = (int)(((size_t)P->qg_task_kib << 10) / (R * K));
    np = np < 1 ? 1 : np > most ? most : np;
    while (np > 1 && (rows + (uint64_t)np * R - 1) / ((uint64_t)np * R) < 4 * (uint64_t)threads)
        np--;
    return np;
}

/* The activation rows [n, n_pad) as zero rows (clara_qg_acts); every call, as the rows a reused
 * quantization left there are not its own. */
static void zero_padding(const qg_job *j, size_t n_pad) {
    const size_t pad = n_pad - j->n, K = j->acts.K, nb = j->acts.nb, B = K / nb;
    if (!pad) return;
    for (uint32_t t = j->n; t < n_pad; t++)
        for (size_t b = 0; b < nb; b++)
            memset(act_codes(&j->acts, t) + b * act_block_stride(&j->acts), 0, B);
    memset(j->dx + (size_t)j->n * nb, 0, pad * nb * sizeof(float));
    memset(j->aoff + (size_t)j->n * nb, 0, pad * nb * sizeof(int32_t));
    memset(j->dxa + (size_t)j->n * nb, 0, pad * nb * sizeof(float));
}

/* Whether the activations at the start of the scratch are x's, quantized as qt needs. */
static bool acts_match(const cpu_kctx *kc, const float *x, uint32_t n, uint64_t K,
                       const clara_qg_type *qt, uint32_t tile) {
    const cpu_acts_key *a = &kc->acts;
    return a->valid && a->x == x && a->n == n && a->K == K && a->act_type == qt->act_type &&
           a->B == qt->B && a->off == qt->off && a->tile == tile;
}

bool clara_qgemm(cpu_kctx *kc, clara_isa isa, const cpu_mat *W, const float *x, uint32_t n,
                 float *y, bool accumulate, float alpha, const clara_lora_delta *d, int n_d,
                 bool same_x) {
    qg_job j = {.kc = kc,
                .W = W,
                .x = x,
                .n = n,
                .y = y,
                .accumulate = accumulate,
                .alpha = alpha,
                .G = 2,
                .isa = isa,
                .deltas = d,
                .n_deltas = n_d};
    if (!clara_qg_type_get(W->type, &j.qt)) return false;
    bool have = isa == CLARA_ISA_AVX512 ? clara_qg_level_avx512(&j.qt, &j.lv)
                : isa == CLARA_ISA_AVX2 ? clara_qg_level_avx2(&j.qt, &j.lv)
                                        : false;
    if (!have) return false;
    if (isa == CLARA_ISA_AVX512 && j.qt.B == 32 && j.lv.group_rows == 16 && clara_amx_active()) {
        j.lv.kernel = clara_qg_amx_kernel; /* the same bits as the level's VNNI kernel */
        j.lv.sign_codes = clara_qg_amx_sign_codes;
        j.lv.act_tile = QG_TOKEN_PAD;
    }
    j.RG = j.lv.group_rows;
    size_t K = (size_t)W->cols, nb = K / j.qt.B, R = (size_t)j.G * j.RG;
    int threads = clara_pool_threads(kc->pool);
    uint64_t xq_bytes = 0;
    clara_type_row_bytes((clara_type)j.qt.act_type, W->cols, &xq_bytes);
    j.xq_bytes = align64((size_t)xq_bytes);
    j.unpack_bytes = align64(2 * R * K + 2 * nb * R * 4 + 2 * nb * 4);
    j.panel_bytes = j.unpack_bytes;
    for (int i = 0; i < n_d; i++) {
        if (d[i].B->cols > QG_DELTA_MAX_K) return false;
        j.panel_bytes += align64(sizeof(clara_qg_delta)) + (size_t)d[i].B->cols * R * 4;
    }
    const size_t n_pad = ((size_t)n + QG_TOKEN_PAD - 1) / QG_TOKEN_PAD * QG_TOKEN_PAD;
    size_t aq_b = align64(n_pad * K), blk_b = align64(n_pad * nb * 4);
    j.np = panels_per_task(W->rows, R, K, threads);
    size_t need = aq_b + 3 * blk_b + (size_t)threads * (j.xq_bytes + (size_t)j.np * j.panel_bytes);
    uint8_t *p = cpu_kctx_scratch(kc, need);
    if (!p) return false;
    j.aq = (int8_t *)p, p += aq_b;
    j.dx = (float *)p, p += blk_b;
    j.aoff = (int32_t *)p, p += blk_b;
    j.dxa = (float *)p, p += blk_b;
    j.xq_tmp = p, p += (size_t)threads * j.xq_bytes;
    j.panels = p;
    j.acts = (clara_qg_acts){j.aq, j.dx, j.aoff, j.dxa, K, nb, j.lv.act_tile};
    if (!same_x || !acts_match(kc, x, n, W->cols, &j.qt, j.lv.act_tile)) {
        kc->acts.valid = false;
        j.tokens_per_task = n / ((uint32_t)threads * 4) + 1;
        clara_pool_run(kc->pool, (n + j.tokens_per_task - 1) / j.tokens_per_task, act_task, &j);
        if (atomic_load(&j.failed)) return false; /* the caller's float fallback handles it */
        kc->acts.x = x, kc->acts.n = n, kc->acts.K = W->cols;
        kc->acts.act_type = j.qt.act_type, kc->acts.B = j.qt.B, kc->acts.off = j.qt.off;
        kc->acts.tile = j.lv.act_tile;
        kc->acts.valid = true;
    }
    zero_padding(&j, n_pad);
    clara_pool_run(kc->pool, (size_t)((W->rows + (uint64_t)j.np * R - 1) / ((uint64_t)j.np * R)),
                   gemm_task, &j);
    return true;
}
