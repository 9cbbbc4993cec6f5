/* convert_write.c - streams the planned tensors into the GGUF file: rows are converted to the
 * output type in chunks (memory stays far below the model size), q/k rows are reordered for
 * llama.cpp's RoPE layout, source pages are released after use, and progress goes to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "base/mapfile.h"
#include "base/status.h"
#include "convert/convert_internal.h"
#include "convert/elemconv.h"
#include "convert/gptq_awq.h"
#include "dtype.h"

#define CHUNK_BYTES (4u << 20)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t elem_bytes(clara_type t) {
    return t == CLARA_TYPE_F32 ? 4 : 2;
}

/* Row of the source that becomes output row r. Hugging Face stores each head's rotary pairs as
 * (m, m + d/2); llama.cpp's RoPE rotates adjacent elements (2i, 2i+1), so within each head of d
 * rows, output row 2i + j takes source row j * d/2 + i (spec §2.1). */
static uint64_t source_row(uint64_t r, uint64_t rows, uint32_t n_heads) {
    if (!n_heads) return r;
    uint64_t d = rows / n_heads, h = r / d, w = r % d;
    return h * d + (w % 2) * (d / 2) + w / 2;
}

/* Bytes of one row of the output type (block types included). */
static size_t out_row_bytes(const conv_entry *e) {
    uint64_t b = 0;
    if (clara_type_row_bytes(e->out_type, e->ne[0], &b) != CLARA_OK) return 0;
    return (size_t)b;
}

static clara_status write_entry(conv_ctx *c, const conv_entry *e, uint8_t *buf) {
    if (e->gq) return gq_write_entry(c, e); /* pre-quantized GPTQ/AWQ rows */
    uint64_t rows = e->ne[1], cols = e->ne[0];
    size_t src_row = (size_t)cols * elem_bytes(e->src_type);
    size_t dst_row = (size_t)cols * elem_bytes(e->out_type);
    const uint8_t *src = e->src;
    void *owned = NULL;
    if (!src) { /* strided .pth tensor: materialise it row-major first (LoRA-sized) */
        owned = malloc(rows * src_row);
        if (!owned) return clara_fail(CLARA_ERR_NOMEM, "out of memory copying %s", e->src_desc);
        clara_status s = pth_tensor_copy(e->pth, owned, rows * src_row);
        if (s != CLARA_OK) {
            free(owned);
            return s;
        }
        src = owned;
    }
    size_t rows_per_chunk = dst_row >= CHUNK_BYTES ? 1 : CHUNK_BYTES / dst_row;
    clara_status s = CLARA_OK;
    for (uint64_t r0 = 0; r0 < rows && s == CLARA_OK; r0 += rows_per_chunk) {
        uint64_t n = rows - r0 < rows_per_chunk ? rows - r0 : rows_per_chunk;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t sr = source_row(r0 + i, rows, e->permute_heads);
            clara_convert_elems(e->src_type, src + sr * src_row, e->out_type, buf + i * dst_row,
                                (size_t)cols);
        }
        s = gguf_writer_write(c->w, buf, (size_t)(n * dst_row));
        /* rows are read in order unless permuted: release them chunk by chunk, so even the
         * largest tensor (token_embd, 262 MB in bf16 at 7B) is never resident as a whole */
        if (!owned && !e->permute_heads) clara_release_pages(src + r0 * src_row, n * src_row);
    }
    if (!owned && e->permute_heads) clara_release_pages(src, rows * src_row);
    free(owned);
    return s;
}

static void progress(size_t i, size_t n, const conv_entry *e, uint64_t done, double t0) {
    double dt = now_s() - t0;
    double mb = (double)done / 1e6;
    fprintf(stderr, "\rclara: [%4zu/%4zu] %-44s %5s -> %-4s %9.1f MB  %7.1f MB/s", i + 1, n,
            e->name, clara_type_name(e->src_type), clara_type_name(e->out_type), mb,
            dt > 0 ? mb / dt : 0.0);
    if (i + 1 == n || !isatty(2)) fputc('\n', stderr);
}

clara_status conv_write_tensors(conv_ctx *c) {
    clara_status s;
    size_t max_row = 0;
    for (size_t i = 0; i < c->n_entries; i++) {
        const conv_entry *e = &c->entries[i];
        s = gguf_writer_add_tensor(c->w, e->name, e->out_type, e->n_dims, e->ne);
        if (s != CLARA_OK) return s;
        size_t row = out_row_bytes(e);
        if (row > max_row) max_row = row;
    }
    if ((s = gguf_writer_begin(c->w, c->p.out_path)) != CLARA_OK) return s;
    uint8_t *buf = malloc(max_row > CHUNK_BYTES ? max_row : CHUNK_BYTES);
    if (!buf) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    double t0 = now_s();
    uint64_t done = 0;
    bool tty = isatty(2);
    for (size_t i = 0; i < c->n_entries && (s = write_entry(c, &c->entries[i], buf)) == CLARA_OK;
         i++) {
        const conv_entry *e = &c->entries[i];
        done += e->ne[1] * out_row_bytes(e);
        /* on a terminal every tensor; in logs about 40 lines in all */
        if (c->p.progress && (tty || i + 1 == c->n_entries || i % (c->n_entries / 40 + 1) == 0))
            progress(i, c->n_entries, e, done, t0);
    }
    free(buf);
    if (s != CLARA_OK) return s;
    return gguf_writer_finish(c->w);
}
