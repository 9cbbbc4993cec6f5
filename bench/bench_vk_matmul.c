/* bench_vk_matmul.c - time of the Vulkan matmul shader (src/vulkan/ops.h) per weight type on the
 * first Vulkan device (CLARA_VK_DEVICE=N picks another): a matvec (1 activation row, decode) and
 * a small batch, over a ROWS x COLS weight matrix, each call one submit and wait as the backend
 * does now. Prints microseconds per call and GB/s of weight bytes. On lavapipe (a CPU device)
 * the figures say how the shader runs on llvmpipe's threads, not how it runs on a GPU.
 *
 *   bench_vk_matmul [SECONDS_PER_CASE] [ROWS COLS] [TYPES...]   (default 1, 4096 4096, f16 q8_0
 *                                                              q4_0 q4_k q5_k q6_k)
 * Each case runs at least 3 times and until SECONDS_PER_CASE have passed; the best call counts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtype.h"
#include "quant.h"
#include "vulkan/device.h"
#include "vulkan/ops.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static clvk_buf *upload_new(clvk_dev *d, const void *src, size_t bytes) {
    clvk_buf *b = NULL;
    if (clvk_buf_create(d, bytes, &b) != CLARA_OK ||
        (src && clvk_upload(d, b, 0, src, bytes) != CLARA_OK)) {
        fprintf(stderr, "bench_vk_matmul: %s\n", clara_last_error());
        exit(1);
    }
    return b;
}

/* Best seconds per call of the matmul of W (rows x cols of type t) by n rows. */
static double time_case(clvk_dev *d, clvk_buf *w, clara_type t, uint64_t rows, uint64_t cols,
                        clvk_buf *x, uint32_t n, clvk_buf *y, double secs) {
    double best = 1e30, t0 = now_s();
    for (int it = 0; it < 3 || now_s() - t0 < secs; it++) {
        double a = now_s();
        if (clvk_matmul(d, w, t, rows, cols, x, n, y, false, 1) != CLARA_OK) {
            fprintf(stderr, "bench_vk_matmul: %s\n", clara_last_error());
            exit(1);
        }
        double e = now_s() - a;
        if (e < best) best = e;
    }
    return best;
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 1.0;
    uint64_t rows = argc > 3 ? strtoull(argv[2], NULL, 10) : 4096;
    uint64_t cols = argc > 3 ? strtoull(argv[3], NULL, 10) : 4096;
    static const char *def_types[] = {"f16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"};
    const char **types = argc > 4 ? (const char **)argv + 4 : def_types;
    int n_types = argc > 4 ? argc - 4 : 6;
    clvk_dev *d = NULL;
    if (clvk_open(CLVK_PICK_ANY, &d) != CLARA_OK) {
        fprintf(stderr, "bench_vk_matmul: %s\n", clara_last_error());
        return 1;
    }
    printf("device: %s (%s); weights %llu x %llu\n", clvk_desc(d)->name, clvk_desc(d)->type,
           (unsigned long long)rows, (unsigned long long)cols);
    const uint32_t max_n = 8;
    float *src = malloc(rows * cols * sizeof(float)), *xs = malloc(max_n * cols * sizeof(float));
    for (uint64_t i = 0; i < rows * cols; i++)
        src[i] = (float)((int64_t)(i * 2654435761u % 2001) - 1000) / 1000;
    for (uint64_t i = 0; i < max_n * cols; i++)
        xs[i] = (float)((int64_t)(i * 40503u % 201) - 100) / 100;
    clvk_buf *x = upload_new(d, xs, max_n * cols * 4), *y = upload_new(d, NULL, max_n * rows * 4);
    for (int ti = 0; ti < n_types; ti++) {
        int t = clara_type_from_name(types[ti]);
        const clara_type_info *info = t < 0 ? NULL : clara_type_get((uint32_t)t);
        if (!info || !clvk_matmul_supports((clara_type)t) || cols % info->block_size) {
            fprintf(stderr, "bench_vk_matmul: cannot bench %s\n", types[ti]);
            continue;
        }
        size_t row_bytes = cols / info->block_size * info->type_size;
        uint8_t *wq = malloc(rows * row_bytes);
        for (uint64_t r = 0; r < rows; r++)
            if (clara_quantize_row((clara_type)t, src + r * cols, cols, wq + r * row_bytes, "w") !=
                CLARA_OK) {
                fprintf(stderr, "bench_vk_matmul: %s\n", clara_last_error());
                return 1;
            }
        clvk_buf *w = upload_new(d, wq, rows * row_bytes);
        free(wq);
        double bytes = (double)rows * (double)row_bytes;
        double t1 = time_case(d, w, (clara_type)t, rows, cols, x, 1, y, secs);
        double t8 = time_case(d, w, (clara_type)t, rows, cols, x, max_n, y, secs);
        printf("%-5s n=1 %9.0f us %7.2f GB/s   n=%u %9.0f us %7.2f GB/s of weights\n", info->name,
               t1 * 1e6, bytes / t1 * 1e-9, max_n, t8 * 1e6, bytes / t8 * 1e-9);
        clvk_buf_free(d, w);
    }
    clvk_buf_free(d, x);
    clvk_buf_free(d, y);
    clvk_close(d);
    free(src);
    free(xs);
    return 0;
}
