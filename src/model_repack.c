/* model_repack.c - clara_model_repack (model.h): the q4_0 / q8_0 / q4_k / q6_k matrices a context
 * runs on the CPU copied once into the AVX-512 kernels' group order (cpu/repack.h), in 2
 * MiB-aligned arenas (transparent huge pages where the kernel allows: fewer TLB misses on a stream
 * of gigabytes), and the file's pages they came from dropped, so the model is resident once. Every
 * other reader (other instruction-set levels, the Vulkan upload, the fingerprint) still reads the
 * mapped file, faulting pages in again if it needs them. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base/mapfile.h"
#include "base/threadpool.h"
#include "cpu/dispatch.h"
#include "cpu/repack.h"
#include "dtype.h"
#include "model.h"

#define ARENA_ALIGN (2u << 20)

/* Whether repacking serves the kernels in use: AVX-512 (the only level with the group kernels),
 * unless CLARA_REPACK=0 asks for the file's layout (comparisons, memory-tight machines). */
static bool repack_wanted(void) {
    const char *e = getenv("CLARA_REPACK");
    if (e && strcmp(e, "0") == 0) return false;
    return clara_isa_active() == CLARA_ISA_AVX512;
}

/* Whether [p, p + n) lies in a file g maps (not a parsed buffer, whose pages must stay). */
static bool in_mapped_file(const gguf_ctx *g, const void *p, size_t n) {
    clara_file_id id;
    if (!g || !gguf_file_id(g, &id)) return false;
    const uint8_t *d = gguf_file_data(g), *q = p;
    return q >= d && n <= gguf_file_size(g) && q - d <= (ptrdiff_t)(gguf_file_size(g) - n);
}

/* Drops the file pages W's rows were read from, where they are a file's. */
static void release_rows(const clara_model *m, const clara_mat *W) {
    uint64_t row_bytes = 0;
    if (clara_type_row_bytes(W->type, W->cols, &row_bytes) != CLARA_OK) return;
    size_t n = (size_t)(W->rows * row_bytes);
    if (in_mapped_file(m->gguf, W->data, n) || in_mapped_file(m->base, W->data, n))
        clara_release_pages(W->data, n);
}

/* The matrices of layers [0, cpu_layers) and the output matrix not repacked yet. */
static size_t pending(clara_model *m, uint32_t cpu_layers, clara_mat **out) {
    size_t n = 0;
    for (uint32_t i = 0; i < cpu_layers && i < m->hp.n_layer; i++)
        for (int l = 0; l < CLARA_N_LIN; l++)
            if (!m->layers[i].w[l].lanes && cpu_lanes_bytes(&m->layers[i].w[l]))
                out[n++] = &m->layers[i].w[l];
    if (!m->output.lanes && cpu_lanes_bytes(&m->output)) out[n++] = &m->output;
    return n;
}

/* Repacks the n matrices into one new arena, kept by the model. */
static void repack_into_arena(clara_model *m, clara_mat **mats, size_t n, clara_pool *pool) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += cpu_lanes_bytes(mats[i]);
    uint8_t **list = realloc(m->lanes_arenas, (m->n_lanes_arenas + 1) * sizeof *list);
    if (!list) return;
    m->lanes_arenas = list;
    void *arena = NULL;
    if (posix_memalign(&arena, ARENA_ALIGN, total) != 0) return;
#ifdef MADV_HUGEPAGE
    madvise(arena, total, MADV_HUGEPAGE);
#endif
    uint8_t *dst = arena;
    for (size_t i = 0; i < n; i++) {
        cpu_lanes_pack(mats[i], dst, pool);
        mats[i]->lanes = dst;
        release_rows(m, mats[i]);
        dst += cpu_lanes_bytes(mats[i]);
    }
    m->lanes_arenas[m->n_lanes_arenas++] = arena;
    m->lanes_bytes += total;
}

void clara_model_repack(clara_model *m, uint32_t cpu_layers, clara_pool *pool) {
    if (!repack_wanted()) return;
    clara_mat **mats = malloc(((size_t)m->hp.n_layer * CLARA_N_LIN + 1) * sizeof *mats);
    if (!mats) return;
    pthread_mutex_lock(&m->repack_mu);
    size_t n = pending(m, cpu_layers, mats);
    if (n) repack_into_arena(m, mats, n, pool);
    pthread_mutex_unlock(&m->repack_mu);
    free(mats);
}

uint64_t clara_model_repacked_bytes(clara_model *m) {
    pthread_mutex_lock(&m->repack_mu);
    uint64_t n = m->lanes_bytes;
    pthread_mutex_unlock(&m->repack_mu);
    return n;
}
