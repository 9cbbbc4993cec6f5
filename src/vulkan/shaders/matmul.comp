#version 450
/* matmul.comp - y[t][r] = dot(W row r, x row t), or y[t][r] += alpha * dot when accumulating, for
 * one weight type fixed by the specialization constant WTYPE (the clara_type number: f32, f16,
 * bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q8_z, q4_k, q5_k or q6_k; src/quant.c describes the
 * blocks). x is f32: quantized rows are dequantized here, as quant.c dequantizes them, and
 * multiplied with the f32 activations.
 *
 * One workgroup of 64 invocations computes NR = 4 rows (r = row0 + NR * gl_WorkGroupID.x + i) of
 * one token (t = gl_WorkGroupID.y): invocation k takes the row's elements k, k + 64, ... (float
 * types) or 32-element units k, k + 64, ... (quantized types), loads x for them once and adds
 * them to its partial sum of each of the 4 rows; the 64 partial sums of each row are then added
 * by a fixed tree in shared memory. Every output is therefore the same sum in the same order
 * whatever the device's scheduling, the number of rows or the number of tokens in the batch: a
 * token's result is bit-identical alone or in a batch. Weights are read as 32-bit words, four
 * bytes at a time (no 8- or 16-bit storage feature is needed: Vulkan 1.1 core only); a row may
 * start at any byte (rows of q4_0, q5_0, q6_k ... blocks are not whole words). */
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint WTYPE = 0;

layout(std430, binding = 0) readonly buffer Weights { uint w[]; };
layout(std430, binding = 1) readonly buffer Acts { float x[]; };
layout(std430, binding = 2) buffer Out { float y[]; };

layout(push_constant) uniform Params {
    uint rows;      /* all rows of W: y's row stride */
    uint cols;      /* elements per row: x's row stride */
    uint row0;      /* first row of this dispatch (dispatches are split at 65535 workgroups) */
    uint row_bytes; /* bytes per row of W */
    uint accumulate;
    float alpha;
} p;

const uint T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8,
           T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14, T_BF16 = 30, T_Q8_Z = 64;
const uint NR = 4; /* rows per workgroup (ops.c's CLVK_MATMUL_ROWS) */

shared float part[NR * 64u];

/* The activations of the 32-element unit being worked on (quantized types), loaded once for the
 * NR rows. */
float xv[32];

uint byte_at(uint o) {
    return (w[o >> 2] >> ((o & 3u) * 8u)) & 0xffu;
}

/* Bytes o .. o + 3 as a little-endian word, o any byte offset. The word after is needed only when
 * o is not aligned, and then byte o + 3 lies in it; its index is clamped to the buffer all the
 * same, so that a compiler that loads both sides of the select never reads past the end. */
uint word_at(uint o) {
    uint i = o >> 2, sh = (o & 3u) * 8u;
    uint next = w[min(i + 1u, uint(w.length()) - 1u)];
    return sh == 0u ? w[i] : (w[i] >> sh) | (next << (32u - sh));
}

uint u16_at(uint o) { /* o even */
    return (w[o >> 2] >> ((o & 2u) * 8u)) & 0xffffu;
}

float f16_at(uint o) {
    return unpackHalf2x16(u16_at(o)).x;
}

/* Element k of a float row at byte ro. */
float float_at(uint ro, uint k) {
    if (WTYPE == T_F32) return uintBitsToFloat(w[(ro >> 2) + k]);
    if (WTYPE == T_F16) return f16_at(ro + 2u * k);
    return uintBitsToFloat(u16_at(ro + 2u * k) << 16); /* bf16 */
}

/* Quantized rows are taken in units of 32 elements: a whole block of the 32-element types, one
 * of the 8 sub-blocks of a 256-element K-quant super-block. Each unit_* function returns the sum
 * over its unit of w * xv. For the types added with the K-quants every weight is dequantized
 * first with `precise` arithmetic, in the order and roundings of quant.c's dequantizers (no fused
 * multiply-add), so w is the CPU's value bit for bit; q8_0 and q4_0 multiply the codes first and
 * the block scale last (the same value to rounding, and exact when one x is nonzero). */

/* q8_0 block (34 bytes): f16 scale d, 32 int8 codes; value = code * d. */
float unit_q8_0(uint bo) {
    float s = 0.0;
    for (uint q = 0u; q < 8u; q++) {
        uint c4 = word_at(bo + 2u + 4u * q);
        for (uint b = 0u; b < 4u; b++)
            s += float(int(c4 << (24u - 8u * b)) >> 24) * xv[4u * q + b];
    }
    return s * f16_at(bo);
}

/* q4_0 block (18 bytes): f16 scale d, 16 bytes of 4-bit codes: byte j holds element j (low
 * nibble) and element j + 16 (high nibble); value = (code - 8) * d. */
float unit_q4_0(uint bo) {
    float s = 0.0;
    for (uint q = 0u; q < 4u; q++) {
        uint c4 = word_at(bo + 2u + 4u * q);
        for (uint b = 0u; b < 4u; b++) {
            uint c = c4 >> (8u * b), j = 4u * q + b;
            s += float(int(c & 15u) - 8) * xv[j] + float(int((c >> 4) & 15u) - 8) * xv[j + 16u];
        }
    }
    return s * f16_at(bo);
}

/* q4_1 (20 bytes: f16 d, f16 m, 16 bytes of codes as q4_0), q5_0 (22 bytes: f16 d, 32 fifth bits
 * qh as a little-endian u32, 16 bytes of low nibbles) and q5_1 (24 bytes: f16 d, f16 m, qh, low
 * nibbles). Element j's code is its nibble (j < 16: low nibble of byte j, else high nibble of byte
 * j - 16) with bit j of qh above it for the 5-bit types; value = (code - 16) * d for q5_0 and
 * code * d + m for q4_1 and q5_1. */
float unit_q_01(uint bo) {
    bool has_min = WTYPE != T_Q5_0, five = WTYPE != T_Q4_1;
    uint qo = bo + (WTYPE == T_Q4_1 ? 4u : WTYPE == T_Q5_0 ? 6u : 8u);
    uint qh = five ? word_at(bo + (WTYPE == T_Q5_0 ? 2u : 4u)) : 0u;
    float d = f16_at(bo), m = has_min ? f16_at(bo + 2u) : 0.0;
    float s = 0.0;
    for (uint q = 0u; q < 4u; q++) {
        uint c4 = word_at(qo + 4u * q);
        for (uint b = 0u; b < 4u; b++) {
            uint c = c4 >> (8u * b), j = 4u * q + b;
            uint c0 = (c & 15u) | (((qh >> j) & 1u) << 4);
            uint c1 = ((c >> 4) & 15u) | (((qh >> (j + 16u)) & 1u) << 4);
            precise float w0, w1;
            if (has_min) {
                w0 = float(c0) * d + m;
                w1 = float(c1) * d + m;
            } else {
                w0 = float(int(c0) - 16) * d;
                w1 = float(int(c1) - 16) * d;
            }
            s += w0 * xv[j] + w1 * xv[j + 16u];
        }
    }
    return s;
}

/* q8_z (36 bytes, GPTQ 8-bit asymmetric): f16 d, u16 zero point, 32 uint8 codes;
 * value = d * (code - zero). */
float unit_q8_z(uint bo) {
    float d = f16_at(bo);
    int zero = int(u16_at(bo + 2u));
    float s = 0.0;
    for (uint q = 0u; q < 8u; q++) {
        uint c4 = word_at(bo + 4u + 4u * q);
        for (uint b = 0u; b < 4u; b++) {
            precise float wv = d * float(int((c4 >> (8u * b)) & 255u) - zero);
            s += wv * xv[4u * q + b];
        }
    }
    return s;
}

/* The 6-bit scale (x) and min (y) of sub-block j of a q4_k/q5_k super-block, from the 12 bytes
 * at so: j < 4 in the low 6 bits of bytes j and j + 4; j >= 4 in the nibbles of byte j + 4 with
 * the top two bits of bytes j - 4 and j. */
uvec2 k_scale_min(uint so, uint j) {
    if (j < 4u) return uvec2(byte_at(so + j) & 63u, byte_at(so + j + 4u) & 63u);
    uint b = byte_at(so + j + 4u);
    return uvec2((b & 15u) | ((byte_at(so + j - 4u) >> 6) << 4),
                 (b >> 4) | ((byte_at(so + j) >> 6) << 4));
}

/* q4_k (144 bytes: f16 d, f16 dmin, 12 bytes of scales and mins, 128 bytes of nibbles) and q5_k
 * (176 bytes: the same header, 32 bytes qh, then the nibbles). Sub-block j (32 elements) has its
 * codes in bytes 32 * (j / 2) .. + 31 of the nibbles, the low nibble for even j and the high one
 * for odd j, with bit j of qh[l] above for q5_k; value = (d * sc_j) * code - dmin * m_j. */
float unit_q45_k(uint bo, uint j) {
    uvec2 sm = k_scale_min(bo + 4u, j);
    precise float dj = f16_at(bo) * float(sm.x);
    precise float mj = f16_at(bo + 2u) * float(sm.y);
    uint qo = bo + (WTYPE == T_Q5_K ? 48u : 16u) + 32u * (j >> 1), shift = (j & 1u) * 4u;
    float s = 0.0;
    for (uint q = 0u; q < 8u; q++) {
        uint c4 = word_at(qo + 4u * q) >> shift;
        uint h4 = WTYPE == T_Q5_K ? word_at(bo + 16u + 4u * q) >> j : 0u;
        for (uint b = 0u; b < 4u; b++) {
            uint c = ((c4 >> (8u * b)) & 15u) | (((h4 >> (8u * b)) & 1u) << 4);
            precise float wv = dj * float(c) - mj;
            s += wv * xv[4u * q + b];
        }
    }
    return s;
}

/* q6_k (210 bytes): 128 bytes ql of low nibbles, 64 bytes qh of high 2-bit pairs, 16 int8 scales
 * (one per 16 elements), f16 d last. Sub-block j = 4h + quarter (h: which 128 half) takes the low
 * nibbles (quarter < 2) or high nibbles of ql[64h + 32 (quarter & 1) + l] and bits 2 quarter of
 * qh[32h + l]; value = (d * sc) * (code - 32), sc = scales[8h + 2 quarter + l / 16]. */
float unit_q6_k(uint bo, uint j) {
    uint h = j >> 2, quarter = j & 3u;
    uint lo = bo + 64u * h + 32u * (quarter & 1u), lshift = quarter >= 2u ? 4u : 0u;
    uint ho = bo + 128u + 32u * h, hshift = 2u * quarter, so = bo + 192u + 8u * h + 2u * quarter;
    float d = f16_at(bo + 208u);
    precise float ds0 = d * float(int(byte_at(so) << 24) >> 24);
    precise float ds1 = d * float(int(byte_at(so + 1u) << 24) >> 24);
    float s = 0.0;
    for (uint q = 0u; q < 8u; q++) {
        uint c4 = word_at(lo + 4u * q) >> lshift, h4 = word_at(ho + 4u * q) >> hshift;
        for (uint b = 0u; b < 4u; b++) {
            uint c = ((c4 >> (8u * b)) & 15u) | (((h4 >> (8u * b)) & 3u) << 4);
            precise float wv = (q < 4u ? ds0 : ds1) * float(int(c) - 32);
            s += wv * xv[4u * q + b];
        }
    }
    return s;
}

/* Bytes of one block of WTYPE and its 32-element units. */
const uint BLOCK_BYTES = WTYPE == T_Q8_0   ? 34u
                         : WTYPE == T_Q4_0 ? 18u
                         : WTYPE == T_Q4_1 ? 20u
                         : WTYPE == T_Q5_0 ? 22u
                         : WTYPE == T_Q5_1 ? 24u
                         : WTYPE == T_Q8_Z ? 36u
                         : WTYPE == T_Q4_K ? 144u
                         : WTYPE == T_Q5_K ? 176u
                                           : 210u;
const uint UNITS = WTYPE == T_Q4_K || WTYPE == T_Q5_K || WTYPE == T_Q6_K ? 8u : 1u;

/* Unit u of the row at byte ro, against xv. */
float unit_dot(uint ro, uint u) {
    uint bo = ro + (u / UNITS) * BLOCK_BYTES, j = u % UNITS;
    if (WTYPE == T_Q8_0) return unit_q8_0(bo);
    if (WTYPE == T_Q4_0) return unit_q4_0(bo);
    if (WTYPE == T_Q4_1 || WTYPE == T_Q5_0 || WTYPE == T_Q5_1) return unit_q_01(bo);
    if (WTYPE == T_Q8_Z) return unit_q8_z(bo);
    if (WTYPE == T_Q6_K) return unit_q6_k(bo, j);
    return unit_q45_k(bo, j);
}

void main() {
    uint tid = gl_LocalInvocationID.x, t = gl_WorkGroupID.y;
    uint r0 = p.row0 + NR * gl_WorkGroupID.x, xo = t * p.cols;
    uint nr = min(NR, p.rows - r0); /* the last group may have fewer rows */
    float s[NR];
    for (uint i = 0u; i < NR; i++) s[i] = 0.0;
    if (WTYPE == T_F32 || WTYPE == T_F16 || WTYPE == T_BF16) {
        for (uint k = tid; k < p.cols; k += 64u) {
            float xk = x[xo + k];
            for (uint i = 0u; i < nr; i++) s[i] += float_at((r0 + i) * p.row_bytes, k) * xk;
        }
    } else {
        for (uint u = tid; u < p.cols / 32u; u += 64u) {
            for (uint l = 0u; l < 32u; l++) xv[l] = x[xo + 32u * u + l];
            for (uint i = 0u; i < nr; i++) s[i] += unit_dot((r0 + i) * p.row_bytes, u);
        }
    }
    for (uint i = 0u; i < NR; i++) part[64u * i + tid] = s[i];
    barrier();
    for (uint step = 32u; step > 0u; step >>= 1) {
        if (tid < step)
            for (uint i = 0u; i < NR; i++) part[64u * i + tid] += part[64u * i + tid + step];
        barrier();
    }
    if (tid < nr) {
        uint o = t * p.rows + r0 + tid;
        float v = part[64u * tid];
        y[o] = p.accumulate != 0u ? y[o] + p.alpha * v : v;
    }
}
