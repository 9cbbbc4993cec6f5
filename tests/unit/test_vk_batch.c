/* test_vk_batch.c - batches of dispatches on the Vulkan device (device.h: clvk_batch_*), on
 * whatever Vulkan device the machine has (CI: lavapipe); no device is a failure.
 *  - a chain of dependent dispatches (matmul by a signed permutation, a row add, a row copy back:
 *    every step reads what the previous wrote), longer than CLVK_BATCH_MAX so that the batch is
 *    submitted transparently on the way: byte-identical to the same dispatches submitted one by
 *    one and to the host's exact integer computation (odd integers: never a zero, so no -0 either),
 *    in ceil(dispatches / CLVK_BATCH_MAX) submits instead of one per dispatch;
 *  - a chain of every kernel on random floats (RMSNorm, matmul and accumulate, SwiGLU, RoPE, row
 *    adds) batched and unbatched: byte-identical;
 *  - uploads, downloads and frees inside an open batch, mapped and through staging buffers: a
 *    download sees the recorded writes, an upload after a recorded read does not change what it
 *    read, a buffer freed after a recorded copy from it was copied first; flush keeps the batch
 *    open; an empty batch submits nothing; a refused dispatch leaves the batch usable;
 *  - a device lost during an open batch: the dispatch, flush and end fail with the lost message,
 *    and every later call at once; nothing crashes or leaks (AddressSanitizer). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "t_vk.h"
#include "vulkan/ops.h"
#include "vulkan/ops_layer.h"

static clvk_dev *g_dev;

static clara_status copy_all(clvk_dev *d, clvk_rows_mode mode, clvk_buf *src, clvk_buf *dst,
                             uint32_t n) {
    clvk_rows_at at = {0, 0, n};
    return clvk_rows(d, mode, src, at, dst, at, 1, 1, n);
}

#define N     64  /* the chain's width */
#define R     3   /* its rows */
#define STEPS 150 /* 3 dispatches each: 450 > CLVK_BATCH_MAX */

/* The exact chain's operands: W a signed permutation (row r: sign[r] at column perm[r]), x0 odd
 * integers, c even ones, so every value stays an odd integer far below 2^24. */
typedef struct {
    float W[N * N], x0[R * N], c[R * N];
    int perm[N], sign[N];
} exact_chain;

static void exact_init(exact_chain *e) {
    memset(e->W, 0, sizeof e->W);
    for (int r = 0; r < N; r++) e->perm[r] = r;
    for (int r = N - 1; r > 0; r--) { /* a random permutation */
        int j = (int)((t_frand() + 1) / 2 * (r + 1)) % (r + 1), t = e->perm[r];
        e->perm[r] = e->perm[j], e->perm[j] = t;
    }
    for (int r = 0; r < N; r++) {
        e->sign[r] = t_frand() < 0 ? -1 : 1;
        e->W[r * N + e->perm[r]] = (float)e->sign[r];
    }
    for (int i = 0; i < R * N; i++) {
        e->x0[i] = (float)(2 * (int)(t_frand() * 4) + 1); /* odd, -7 .. 9 */
        e->c[i] = (float)(2 * (int)(t_frand() * 2));      /* even, -2 .. 2 */
    }
}

/* The host's truth: x <- x·Wᵀ + c, STEPS times, in integers. */
static void exact_host(const exact_chain *e, float *out) {
    long x[R * N], y[R * N];
    for (int i = 0; i < R * N; i++) x[i] = (long)e->x0[i];
    for (int s = 0; s < STEPS; s++) {
        for (int t = 0; t < R; t++)
            for (int r = 0; r < N; r++)
                y[t * N + r] = e->sign[r] * x[t * N + e->perm[r]] + (long)e->c[t * N + r];
        memcpy(x, y, sizeof x);
    }
    for (int i = 0; i < R * N; i++) out[i] = (float)x[i];
}

/* The chain on the device, in one batch or one submit per dispatch; x after it into out, the
 * submits it took (from the first dispatch to the last's end) into *submits. */
static void exact_device(const exact_chain *e, bool batched, float *out, uint64_t *submits) {
    clvk_buf *W = t_vk_floats(g_dev, e->W, N * N), *x = t_vk_floats(g_dev, e->x0, R * N);
    clvk_buf *c = t_vk_floats(g_dev, e->c, R * N), *y = t_vk_floats(g_dev, NULL, R * N);
    clara_status st = W && x && c && y ? CLARA_OK : CLARA_ERR_NOMEM;
    uint64_t s0 = clvk_submits(g_dev), d0 = clvk_dispatches(g_dev);
    if (st == CLARA_OK && batched) st = clvk_batch_begin(g_dev);
    clvk_rows_at all = {0, 0, N};
    for (int s = 0; s < STEPS && st == CLARA_OK; s++) {
        st = clvk_matmul(g_dev, W, CLARA_TYPE_F32, N, N, x, R, y, false, 1.0f);
        if (st == CLARA_OK) st = clvk_rows(g_dev, CLVK_ROWS_ADD, c, all, y, all, 1, R, N);
        if (st == CLARA_OK) st = clvk_rows(g_dev, CLVK_ROWS_COPY, y, all, x, all, 1, R, N);
    }
    if (st == CLARA_OK && batched) st = clvk_batch_end(g_dev);
    *submits = clvk_submits(g_dev) - s0;
    T_CHECK_MSG(st == CLARA_OK, "chain (%s): %s", batched ? "batched" : "alone",
                clara_last_error());
    T_EQ_INT(clvk_dispatches(g_dev) - d0, 3 * STEPS);
    if (st == CLARA_OK) st = clvk_download(g_dev, x, 0, out, R * N * 4);
    T_CHECK(st == CLARA_OK);
    clvk_buf_free(g_dev, W), clvk_buf_free(g_dev, x), clvk_buf_free(g_dev, c);
    clvk_buf_free(g_dev, y);
}

static void test_exact_chain(void) {
    static exact_chain e;
    exact_init(&e);
    float host[R * N], alone[R * N], batch[R * N];
    uint64_t s_alone = 0, s_batch = 0;
    exact_host(&e, host);
    exact_device(&e, false, alone, &s_alone);
    exact_device(&e, true, batch, &s_batch);
    T_CHECK_MSG(memcmp(alone, host, sizeof host) == 0, "unbatched chain differs from the host");
    T_CHECK_MSG(memcmp(batch, host, sizeof host) == 0, "batched chain differs from the host");
    T_EQ_INT(s_alone, 3 * STEPS);
    T_EQ_INT(s_batch, (3 * STEPS + CLVK_BATCH_MAX - 1) / CLVK_BATCH_MAX);
    printf("a chain of %d dependent dispatches: %llu submits alone, %llu batched\n", 3 * STEPS,
           (unsigned long long)s_alone, (unsigned long long)s_batch);
}

#define HEADS   4
#define HD      16 /* HEADS x HD = N */
#define STEPS_F 50 /* 7 dispatches each: 350 > CLVK_BATCH_MAX */

/* Every kernel in a dependent chain on random floats; x after it into out. */
static void float_chain(bool batched, const float *host_x, const float *host_w, const float *W1,
                        const float *W2, const float *cs, float *out) {
    clvk_buf *x = t_vk_floats(g_dev, host_x, R * N), *w = t_vk_floats(g_dev, host_w, N);
    clvk_buf *a = t_vk_floats(g_dev, W1, N * N), *b = t_vk_floats(g_dev, W2, N * N);
    clvk_buf *rc = t_vk_floats(g_dev, cs, R * HD), *xn = t_vk_floats(g_dev, NULL, R * N);
    clvk_buf *g = t_vk_floats(g_dev, NULL, R * N), *u = t_vk_floats(g_dev, NULL, R * N);
    clara_status st = x && w && a && b && rc && xn && g && u ? CLARA_OK : CLARA_ERR_NOMEM;
    if (st == CLARA_OK && batched) st = clvk_batch_begin(g_dev);
    clvk_rows_at all = {0, 0, N};
    for (int s = 0; s < STEPS_F && st == CLARA_OK; s++) {
        st = clvk_rmsnorm(g_dev, x, w, xn, R, N, 1e-5f);
        if (st == CLARA_OK) st = clvk_matmul(g_dev, a, CLARA_TYPE_F32, N, N, xn, R, g, false, 1);
        if (st == CLARA_OK) st = clvk_matmul(g_dev, b, CLARA_TYPE_F32, N, N, xn, R, u, false, 1);
        if (st == CLARA_OK) st = clvk_matmul(g_dev, a, CLARA_TYPE_F32, N, N, g, R, u, true, 0.5f);
        if (st == CLARA_OK) st = clvk_swiglu(g_dev, g, u, R * N);
        if (st == CLARA_OK) st = clvk_rope(g_dev, g, rc, R, HEADS, HD);
        if (st == CLARA_OK) st = clvk_rows(g_dev, CLVK_ROWS_ADD, g, all, x, all, 1, R, N);
    }
    if (st == CLARA_OK && batched) st = clvk_batch_end(g_dev);
    if (st == CLARA_OK) st = clvk_download(g_dev, x, 0, out, R * N * 4);
    T_CHECK_MSG(st == CLARA_OK, "float chain (%s): %s", batched ? "batched" : "alone",
                clara_last_error());
    clvk_buf *all_bufs[] = {x, w, a, b, rc, xn, g, u};
    for (size_t i = 0; i < sizeof all_bufs / sizeof all_bufs[0]; i++)
        clvk_buf_free(g_dev, all_bufs[i]);
}

static void test_float_chain(void) {
    float x[R * N], w[N], W1[N * N], W2[N * N], cs[R * HD], alone[R * N], batch[R * N];
    for (int i = 0; i < R * N; i++) x[i] = (float)t_frand();
    for (int i = 0; i < N; i++) w[i] = (float)(1 + 0.1 * t_frand());
    for (int i = 0; i < N * N; i++) W1[i] = (float)(t_frand() / 8), W2[i] = (float)(t_frand() / 8);
    for (int i = 0; i < R * HD / 2; i++) {
        double angle = 3.14159 * t_frand();
        cs[2 * i] = (float)cos(angle), cs[2 * i + 1] = (float)sin(angle);
    }
    float_chain(false, x, w, W1, W2, cs, alone);
    float_chain(true, x, w, W1, W2, cs, batch);
    T_CHECK_MSG(memcmp(alone, batch, sizeof alone) == 0, "batched float chain differs");
    bool finite = true, moved = false;
    for (int i = 0; i < R * N; i++) finite &= isfinite(batch[i]), moved |= batch[i] != x[i];
    T_CHECK(finite && moved);
}

/* Uploads, downloads and frees with a batch open (mapped memory, or staging buffers). */
static void transfers(bool staging) {
    enum { M = 1000 };
    float va[M], vb[M], got[M], zero[M] = {0};
    for (int i = 0; i < M; i++) va[i] = (float)(i + 1), vb[i] = (float)(-3 * i);
    clvk_force_staging(g_dev, staging);
    clvk_buf *a = t_vk_floats(g_dev, va, M), *b = t_vk_floats(g_dev, zero, M);
    clvk_force_staging(g_dev, false);
    if (!a || !b) goto done;
    /* a download sees the recorded copy */
    T_CHECK(clvk_batch_begin(g_dev) == CLARA_OK);
    T_CHECK(copy_all(g_dev, CLVK_ROWS_COPY, a, b, M) == CLARA_OK);
    uint64_t s0 = clvk_submits(g_dev);
    T_CHECK(clvk_download(g_dev, b, 0, got, sizeof got) == CLARA_OK);
    T_CHECK_MSG(memcmp(got, va, sizeof va) == 0, "download in a batch missed the copy");
    T_CHECK(clvk_submits(g_dev) > s0);
    /* an upload after a recorded read of a: the read sees the old a (b = va + va) */
    T_CHECK(copy_all(g_dev, CLVK_ROWS_ADD, a, b, M) == CLARA_OK);
    T_CHECK(clvk_upload(g_dev, a, 0, vb, sizeof vb) == CLARA_OK);
    T_CHECK(clvk_batch_end(g_dev) == CLARA_OK);
    T_CHECK(clvk_download(g_dev, b, 0, got, sizeof got) == CLARA_OK);
    bool doubled = true;
    for (int i = 0; i < M; i++) doubled &= got[i] == 2 * va[i];
    T_CHECK_MSG(doubled, "an upload changed what a recorded dispatch read");
    T_CHECK(clvk_download(g_dev, a, 0, got, sizeof got) == CLARA_OK && !memcmp(got, vb, sizeof vb));
    /* a buffer freed after a recorded copy from it: the copy runs first */
    T_CHECK(clvk_batch_begin(g_dev) == CLARA_OK);
    T_CHECK(copy_all(g_dev, CLVK_ROWS_COPY, a, b, M) == CLARA_OK);
    clvk_buf_free(g_dev, a);
    a = NULL;
    T_CHECK(clvk_batch_end(g_dev) == CLARA_OK);
    T_CHECK(clvk_download(g_dev, b, 0, got, sizeof got) == CLARA_OK && !memcmp(got, vb, sizeof vb));
done:
    clvk_buf_free(g_dev, a), clvk_buf_free(g_dev, b);
}

static void test_transfers(void) {
    transfers(false);
    transfers(true);
}

/* flush keeps the batch open; an empty batch submits nothing; a refused dispatch (too many
 * workgroups) is not recorded and the batch goes on. */
static void test_flush_and_refusal(void) {
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8}, got[8];
    clvk_buf *a = t_vk_floats(g_dev, v, 8), *b = t_vk_floats(g_dev, NULL, 8);
    if (!a || !b) goto done;
    uint64_t s0 = clvk_submits(g_dev);
    T_CHECK(clvk_batch_begin(g_dev) == CLARA_OK && clvk_batch_end(g_dev) == CLARA_OK);
    T_EQ_INT(clvk_submits(g_dev) - s0, 0);
    T_CHECK(clvk_batch_begin(g_dev) == CLARA_OK);
    T_CHECK(copy_all(g_dev, CLVK_ROWS_COPY, a, b, 8) == CLARA_OK);
    T_CHECK(clvk_batch_flush(g_dev) == CLARA_OK);
    T_EQ_INT(clvk_submits(g_dev) - s0, 1);
    T_CHECK(copy_all(g_dev, CLVK_ROWS_ADD, a, b, 8) == CLARA_OK); /* b = 2v */
    uint32_t pc[10] = {1, 1, 8, 0, 0, 8, 0, 0, 8, CLVK_ROWS_ADD};
    clvk_buf *bufs[2] = {a, b};
    T_CHECK(clvk_dispatch(g_dev, CLVK_K_ROWS, 0, bufs, 2, pc, sizeof pc, 70000, 1) ==
                CLARA_ERR_INVALID_ARG &&
            err_has("at most 65535"));
    T_CHECK(clvk_batch_end(g_dev) == CLARA_OK);
    T_EQ_INT(clvk_submits(g_dev) - s0, 2);
    T_CHECK(clvk_download(g_dev, b, 0, got, sizeof got) == CLARA_OK);
    bool ok = true;
    for (int i = 0; i < 8; i++) ok &= got[i] == 2 * v[i];
    T_CHECK(ok);
done:
    clvk_buf_free(g_dev, a), clvk_buf_free(g_dev, b);
}

/* A device lost with `recorded` dispatches in its open batch (more than CLVK_BATCH_MAX: some
 * were already submitted); free_first frees a buffer before the end (its flush fails then). */
static void lost_in_batch(int recorded, bool free_first) {
    clvk_dev *d = NULL;
    clvk_buf *a = NULL, *b = NULL;
    float v[16] = {0};
    T_CHECK(clvk_open(CLVK_PICK_ANY, &d) == CLARA_OK);
    if (!d) return;
    a = t_vk_floats(d, v, 16), b = t_vk_floats(d, v, 16);
    if (!a || !b) goto done;
    T_CHECK(clvk_batch_begin(d) == CLARA_OK);
    for (int i = 0; i < recorded; i++) T_CHECK(copy_all(d, CLVK_ROWS_ADD, a, b, 16) == CLARA_OK);
    clvk_mark_lost(d);
    T_CHECK(copy_all(d, CLVK_ROWS_ADD, a, b, 16) == CLARA_ERR_IO && err_has("device was lost"));
    if (free_first) {
        clvk_buf_free(d, a);
        a = NULL;
    } else {
        T_CHECK(clvk_batch_flush(d) == CLARA_ERR_IO && err_has("device was lost"));
    }
    T_CHECK(clvk_batch_end(d) == CLARA_ERR_IO && err_has("device was lost"));
    /* and every later call at once */
    uint64_t s0 = clvk_submits(d);
    T_CHECK(clvk_batch_begin(d) == CLARA_ERR_IO && err_has("device was lost"));
    T_CHECK(clvk_download(d, b, 0, v, 16) == CLARA_ERR_IO && err_has("device was lost"));
    T_CHECK(clvk_upload(d, b, 0, v, 16) == CLARA_ERR_IO && err_has("device was lost"));
    T_CHECK(clvk_swiglu(d, b, b, 4) == CLARA_ERR_IO && err_has("device was lost"));
    T_CHECK(clvk_batch_end(d) == CLARA_ERR_IO && err_has("device was lost"));
    T_EQ_INT(clvk_submits(d) - s0, 0);
done:
    clvk_buf_free(d, a), clvk_buf_free(d, b);
    clvk_close(d);
}

static void test_lost_device(void) {
    lost_in_batch(5, false);
    lost_in_batch(CLVK_BATCH_MAX + 20, false);
    lost_in_batch(7, true);
}

int main(void) {
    if (!(g_dev = t_vk_open())) return 1;
    T_RUN(test_exact_chain);
    T_RUN(test_float_chain);
    T_RUN(test_transfers);
    T_RUN(test_flush_and_refusal);
    T_RUN(test_lost_device);
    clvk_close(g_dev);
    return t_report("test_vk_batch");
}
