/* repack.h - q4_0 / q8_0 weights repacked once, at load, into the order the AVX-512 decode kernels
 * read them (gemv_lanes.inc): groups of CPU_LANES_ROWS rows, and per group and block of 32 the
 * rows' f16 scales (32 bytes) then their codes transposed so that each 64-byte vector holds 4
 * consecutive codes of each of the 16 rows. A group's blocks are one contiguous stream: decode
 * reads it front to back with no gather and no in-register transpose, where the file's row-major
 * order makes each thread read 16 row streams at once. The packed GEMM (qgemm.c) takes its panels
 * from it too, so the file's pages need not stay resident.
 *
 * Per group g (rows 16g..16g+15; past the last row, the last row repeated), blocks of 32 go in
 * pairs (2p, 2p+1; a missing last one zero) so that every vector is 64-byte aligned: at
 * lanes + g * cpu_lanes_group_bytes + p * cpu_lanes_pair_bytes,
 *   64 bytes: block 2p's 16 f16 scales (row i at 2i), then block 2p+1's;
 *   block 2p's code vectors, then block 2p+1's, 64 bytes each:
 *   q8_0: 8 vectors v, byte 4i+j = code 4v+j of row i plus 128 (unsigned);
 *   q4_0: 4 vectors m, byte 4i+j = byte 4m+j of row i's 16 code bytes (low nibble: code 4m+j,
 *         high nibble: code 16+4m+j).
 * The same values as the file's, so every kernel's sums and outputs are the same bits. */
#ifndef CLARA_CPU_REPACK_H
#define CLARA_CPU_REPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/threadpool.h"
#include "cpu/kctx.h"

#define CPU_LANES_ROWS 16

/* Whether matrices of type t can be repacked (q4_0, q8_0). */
bool cpu_lanes_type(clara_type t);

/* The layout's arithmetic, the one place every reader and the packer take it from (inline: the
 * kernels call it per block, with t a constant there). */

/* Code bytes of one group's block: 512 (q8_0) or 256 (q4_0); 0 for other types. */
static inline size_t cpu_lanes_code_bytes(clara_type t) {
    return t == CLARA_TYPE_Q8_0 ? 16 * 32 : t == CLARA_TYPE_Q4_0 ? 16 * 16 : 0;
}

/* Bytes of a pair of blocks: 64 of scales, then twice the code bytes. */
static inline size_t cpu_lanes_pair_bytes(clara_type t) {
    return 64 + 2 * cpu_lanes_code_bytes(t);
}

/* Offsets in a group of block b's 16 f16 scales and of its code vectors. */
static inline size_t cpu_lanes_scales_off(clara_type t, size_t b) {
    return b / 2 * cpu_lanes_pair_bytes(t) + 32 * (b & 1);
}
static inline size_t cpu_lanes_codes_off(clara_type t, size_t b) {
    return b / 2 * cpu_lanes_pair_bytes(t) + 64 + (b & 1) * cpu_lanes_code_bytes(t);
}

/* Bytes of a group of W. */
size_t cpu_lanes_group_bytes(const cpu_mat *W);

/* Bytes of W repacked (rows rounded up to whole groups); 0 when W's type cannot be. */
size_t cpu_lanes_bytes(const cpu_mat *W);

/* Repacks W (its data in the file's layout) into dst (cpu_lanes_bytes(W) bytes), over pool's
 * threads (pool may be NULL: this thread). */
void cpu_lanes_pack(const cpu_mat *W, uint8_t *dst, clara_pool *pool);

#endif
