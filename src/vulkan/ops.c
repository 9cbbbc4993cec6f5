/* ops.c - the Vulkan compute operations (ops.h): shape checks, push constants and dispatch sizes
 * for each shader in src/vulkan/shaders/. */
#include "vulkan/ops.h"

#include "base/status.h"
#include "dtype.h"

#define MAX_GROUPS 65535u
/* Rows of W one matmul workgroup computes (matmul.comp's NR). */
#define MATMUL_ROWS 4u
/* Element-wise shaders loop over what one dispatch of this many workgroups does not cover. */
#define GRID_GROUPS 4096u

bool clvk_matmul_supports(clara_type t) {
    switch (t) {
    case CLARA_TYPE_F32:
    case CLARA_TYPE_F16:
    case CLARA_TYPE_BF16:
    case CLARA_TYPE_Q8_0:
    case CLARA_TYPE_Q4_0:
    case CLARA_TYPE_Q4_1:
    case CLARA_TYPE_Q5_0:
    case CLARA_TYPE_Q5_1:
    case CLARA_TYPE_Q8_Z:
    case CLARA_TYPE_Q4_K:
    case CLARA_TYPE_Q5_K:
    case CLARA_TYPE_Q6_K:
        return true;
    default:
        return false;
    }
}

static clara_status need_bytes(const clvk_buf *b, uint64_t bytes, const char *what) {
    if (clvk_buf_size(b) < bytes)
        return clara_fail(CLARA_ERR_INVALID_ARG, "vulkan: %s needs %llu bytes, its buffer has %zu",
                          what, (unsigned long long)bytes, clvk_buf_size(b));
    return CLARA_OK;
}

static uint32_t grid_for(uint64_t n) {
    uint64_t g = (n + 63) / 64;
    return g == 0 ? 1 : g > GRID_GROUPS ? GRID_GROUPS : (uint32_t)g;
}

clara_status clvk_matmul(clvk_dev *d, clvk_buf *W, clara_type t, uint64_t rows, uint64_t cols,
                         clvk_buf *x, uint32_t n, clvk_buf *y, bool accumulate, float alpha) {
    if (!clvk_matmul_supports(t))
        return clara_fail(CLARA_ERR_UNSUPPORTED, "vulkan: no matmul shader for %s weights yet",
                          clara_type_name(t));
    const clara_type_info *ti = clara_type_get((uint32_t)t);
    if (rows == 0 || cols == 0 || cols % ti->block_size != 0)
        return clara_fail(CLARA_ERR_INVALID_ARG, "vulkan: matmul of %llu x %llu %s weights",
                          (unsigned long long)rows, (unsigned long long)cols, ti->name);
    uint64_t row_bytes = cols / ti->block_size * ti->type_size;
    /* the shader indexes bytes with 32-bit integers */
    if (rows * row_bytes > UINT32_MAX || (uint64_t)n * cols > UINT32_MAX / 4 ||
        (uint64_t)n * rows > UINT32_MAX / 4 || n > MAX_GROUPS)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "vulkan: matmul of %llu x %llu %s weights by %u rows is too large for "
                          "one dispatch",
                          (unsigned long long)rows, (unsigned long long)cols, ti->name, n);
    clara_status st = need_bytes(W, rows * row_bytes, "matmul weights");
    if (st == CLARA_OK) st = need_bytes(x, (uint64_t)n * cols * 4, "matmul input");
    if (st == CLARA_OK) st = need_bytes(y, (uint64_t)n * rows * 4, "matmul output");
    struct {
        uint32_t rows, cols, row0, row_bytes, accumulate;
        float alpha;
    } pc = {(uint32_t)rows, (uint32_t)cols, 0, (uint32_t)row_bytes, accumulate, alpha};
    clvk_buf *bufs[3] = {W, x, y};
    for (uint64_t r0 = 0; st == CLARA_OK && r0 < rows; r0 += (uint64_t)MAX_GROUPS * MATMUL_ROWS) {
        pc.row0 = (uint32_t)r0;
        uint64_t gx = (rows - r0 + MATMUL_ROWS - 1) / MATMUL_ROWS;
        if (gx > MAX_GROUPS) gx = MAX_GROUPS;
        st = clvk_dispatch(d, CLVK_K_MATMUL, (uint32_t)t, bufs, 3, &pc, sizeof pc, (uint32_t)gx, n);
    }
    return st;
}

clara_status clvk_rmsnorm(clvk_dev *d, clvk_buf *x, clvk_buf *w, clvk_buf *out, uint32_t rows,
                          uint32_t n, float eps) {
    if (n == 0 || rows > MAX_GROUPS || (uint64_t)rows * n > UINT32_MAX / 4)
        return clara_fail(CLARA_ERR_INVALID_ARG, "vulkan: rmsnorm of %u rows of %u", rows, n);
    clara_status st = need_bytes(x, (uint64_t)rows * n * 4, "rmsnorm input");
    if (st == CLARA_OK) st = need_bytes(w, (uint64_t)n * 4, "rmsnorm weight");
    if (st == CLARA_OK) st = need_bytes(out, (uint64_t)rows * n * 4, "rmsnorm output");
    struct {
        uint32_t n;
        float eps;
    } pc = {n, eps};
    clvk_buf *bufs[3] = {x, w, out};
    if (st == CLARA_OK) st = clvk_dispatch(d, CLVK_K_RMSNORM, 0, bufs, 3, &pc, sizeof pc, rows, 1);
    return st;
}

clara_status clvk_swiglu(clvk_dev *d, clvk_buf *gate, clvk_buf *up, uint64_t n) {
    if (n > UINT32_MAX / 4)
        return clara_fail(CLARA_ERR_INVALID_ARG, "vulkan: swiglu of %llu elements",
                          (unsigned long long)n);
    clara_status st = need_bytes(gate, n * 4, "swiglu gate");
    if (st == CLARA_OK) st = need_bytes(up, n * 4, "swiglu up");
    uint32_t pc = (uint32_t)n;
    clvk_buf *bufs[2] = {gate, up};
    if (st == CLARA_OK && n)
        st = clvk_dispatch(d, CLVK_K_SWIGLU, 0, bufs, 2, &pc, sizeof pc, grid_for(n), 1);
    return st;
}

clara_status clvk_rope(clvk_dev *d, clvk_buf *v, clvk_buf *cs, uint32_t rows, uint32_t n_heads,
                       uint32_t head_dim) {
    uint64_t total = (uint64_t)rows * n_heads * head_dim;
    if (head_dim % 2 != 0 || total > UINT32_MAX / 4)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "vulkan: rope of %u rows of %u heads of %u (head_dim must be even)", rows,
                          n_heads, head_dim);
    clara_status st = need_bytes(v, total * 4, "rope vectors");
    if (st == CLARA_OK) st = need_bytes(cs, (uint64_t)rows * head_dim * 4, "rope cos/sin");
    struct {
        uint32_t rows, n_heads, head_dim;
    } pc = {rows, n_heads, head_dim};
    clvk_buf *bufs[2] = {v, cs};
    if (st == CLARA_OK && total)
        st = clvk_dispatch(d, CLVK_K_ROPE, 0, bufs, 2, &pc, sizeof pc, grid_for(total / 2), 1);
    return st;
}
