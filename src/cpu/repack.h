/* repack.h - q4_0 / q8_0 / q4_k / q6_k weights repacked once, at load, into the order the AVX-512
 * decode kernels read them (gemv_lanes.inc): groups of CPU_LANES_ROWS rows, and per group and block
 * of 32 the rows' f16 scales (32 bytes) then their codes transposed so that each 64-byte vector
 * holds 4 consecutive codes of each of the 16 rows. A group's blocks are one contiguous stream:
 * decode reads it front to back with no gather and no in-register transpose, where the file's
 * row-major order makes each thread read 16 row streams at once. The packed GEMM (qgemm.c) takes
 * its panels from it too, so the file's pages need not stay resident.
 *
 * Per group g (rows 16g..16g+15; past the last row, the last row repeated), blocks of 32 go in
 * pairs (2p, 2p+1; a missing last one zero) so that every vector is 64-byte aligned: at
 * lanes + g * cpu_lanes_group_bytes + p * cpu_lanes_pair_bytes,
 *   64 bytes: block 2p's 16 f16 scales (row i at 2i), then block 2p+1's;
 *   block 2p's code vectors, then block 2p+1's, 64 bytes each:
 *   q8_0: 8 vectors v, byte 4i+j = code 4v+j of row i plus 128 (unsigned);
 *   q4_0: 4 vectors m, byte 4i+j = byte 4m+j of row i's 16 code bytes (low nibble: code 4m+j,
 *         high nibble: code 16+4m+j).
 * The same values as the file's, so every kernel's sums and outputs are the same bits.
 *
 * q4_k: per group g, super-block after super-block (CPU_LANES_KQ_SB_BYTES each, 64-byte
 * multiples), at lanes + g * cpu_lanes_group_bytes + sb * CPU_LANES_KQ_SB_BYTES:
 *   64 bytes: the 16 rows' f16 d (row i at 2i), then their f16 dmin;
 *   3 x 64 bytes: the rows' 12 bytes of packed scales and mins as they are in the file, bytes
 *         4k..4k+3 of row i at 4i of vector k;
 *   8 x 256 bytes: per sub-block j (32 codes) the q4_0 layout above: 4 vectors m, byte 4i+c =
 *         code 4m+c of row i (low nibble) and code 16+4m+c (high nibble).
 * 144 bytes per row and super-block, as in the file.
 *
 * q6_k: per group, super-block after super-block (CPU_LANES_Q6_SB_BYTES each):
 *   64 bytes: the 16 rows' f16 d, then 32 zero bytes;
 *   16 x 16 bytes: per block j of 16 codes the 16 rows' int8 scales;
 *   8 x 384 bytes: per pair of blocks (2p, 2p+1: the super-block's codes 32p..32p+31) the low 4
 *         bits of the codes as q4_0's 4 vectors above, then 2 vectors h: byte 4i+c holds the top
 *         2 bits of code 16h+4k+c of row i in its bits 2k..2k+1, k = 0..3.
 * 212 bytes per row and super-block against the file's 210.
 *
 * The kernels compute the k-quants' scales (d * sc) and mins (dmin * m) in f32 as the packed
 * GEMM's unpacking does (exact products), so decode and prefill give the same bits
 * (gemv_avx512.c). */
#ifndef CLARA_CPU_REPACK_H
#define CLARA_CPU_REPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/threadpool.h"
#include "cpu/kctx.h"

#define CPU_LANES_ROWS 16

/* Whether matrices of type t can be repacked (q4_0, q8_0, q4_k, q6_k). */
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

/* q4_k: bytes of one super-block of a group (d, dmin: 64; scales and mins: 192; codes: 2048),
 * and the offset in a group of sub-block b's codes (b counts blocks of 32 over the row). */
#define CPU_LANES_KQ_SB_BYTES (64 + 3 * 64 + 8 * 256)
static inline size_t cpu_lanes_kq_codes_off(size_t b) {
    return b / 8 * CPU_LANES_KQ_SB_BYTES + 64 + 3 * 64 + 256 * (b % 8);
}

/* q6_k: bytes of one super-block of a group (d: 64, scales: 256, codes: 3072), and the offsets
 * in a group of block b's (b counts blocks of 16 over the row) scales, and of the pair p's (p
 * counts pairs of blocks over the row) codes. */
#define CPU_LANES_Q6_SB_BYTES (64 + 256 + 8 * 384)
static inline size_t cpu_lanes_q6_scales_off(size_t b) {
    return b / 16 * CPU_LANES_Q6_SB_BYTES + 64 + 16 * (b % 16);
}
static inline size_t cpu_lanes_q6_codes_off(size_t p) {
    return p / 8 * CPU_LANES_Q6_SB_BYTES + 64 + 256 + 384 * (p % 8);
}

/* Bytes of a group of W. */
size_t cpu_lanes_group_bytes(const cpu_mat *W);

/* Bytes of W repacked (rows rounded up to whole groups); 0 when W's type cannot be. */
size_t cpu_lanes_bytes(const cpu_mat *W);

/* Repacks W (its data in the file's layout) into dst (cpu_lanes_bytes(W) bytes), over pool's
 * threads (pool may be NULL: this thread). */
void cpu_lanes_pack(const cpu_mat *W, uint8_t *dst, clara_pool *pool);

#endif
