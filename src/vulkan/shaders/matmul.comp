#version 450
/* matmul.comp - y[t][r] = dot(W row r, x row t), or y[t][r] += alpha * dot when accumulating, for
 * one weight type fixed by the specialization constant WTYPE (the clara_type number: f32, f16,
 * bf16, q8_0 or q4_0; src/quant.c describes the blocks). x is f32: quantized rows are dequantized
 * here (code * block scale, exact in f32) and multiplied with the f32 activations.
 *
 * One workgroup per output element (row r = row0 + gl_WorkGroupID.x, token t = gl_WorkGroupID.y).
 * Its 64 invocations take the row's elements (float types) or 32-element blocks (quantized types)
 * in turn, and the 64 partial sums are added by a fixed tree in shared memory, so a result does
 * not depend on the device's scheduling. Weights are read as 32-bit words, so no 8- or 16-bit
 * storage feature is needed (Vulkan 1.1 core only). */
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

const uint T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q8_0 = 8, T_BF16 = 30;

shared float part[64];

uint byte_at(uint o) {
    return (w[o >> 2] >> ((o & 3u) * 8u)) & 0xffu;
}

uint u16_at(uint o) { /* o even */
    return (w[o >> 2] >> ((o & 2u) * 8u)) & 0xffffu;
}

float f16_at(uint o) {
    return unpackHalf2x16(u16_at(o)).x;
}

/* Float rows: invocation i takes elements i, i+64, ... */
float dot_float(uint ro, uint xo, uint tid) {
    float s = 0.0;
    for (uint k = tid; k < p.cols; k += 64u) {
        float wv;
        if (WTYPE == T_F32)
            wv = uintBitsToFloat(w[(ro >> 2) + k]);
        else if (WTYPE == T_F16)
            wv = f16_at(ro + 2u * k);
        else
            wv = uintBitsToFloat(u16_at(ro + 2u * k) << 16);
        s += wv * x[xo + k];
    }
    return s;
}

/* q8_0 block (34 bytes): f16 scale d, 32 int8 codes; value = code * d. */
float dot_q8_0_block(uint bo, uint xo) {
    float s = 0.0;
    for (uint j = 0u; j < 32u; j++) {
        int code = int(byte_at(bo + 2u + j) << 24) >> 24;
        s += float(code) * x[xo + j];
    }
    return s * f16_at(bo);
}

/* q4_0 block (18 bytes): f16 scale d, 16 bytes of 4-bit codes: byte j holds element j (low
 * nibble) and element j + 16 (high nibble); value = (code - 8) * d. */
float dot_q4_0_block(uint bo, uint xo) {
    float s = 0.0;
    for (uint j = 0u; j < 16u; j++) {
        uint q = byte_at(bo + 2u + j);
        s += float(int(q & 15u) - 8) * x[xo + j] + float(int(q >> 4) - 8) * x[xo + j + 16u];
    }
    return s * f16_at(bo);
}

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint r = p.row0 + gl_WorkGroupID.x, t = gl_WorkGroupID.y;
    uint ro = r * p.row_bytes, xo = t * p.cols;
    float s = 0.0;
    if (WTYPE == T_F32 || WTYPE == T_F16 || WTYPE == T_BF16) {
        s = dot_float(ro, xo, tid);
    } else {
        uint block_bytes = WTYPE == T_Q8_0 ? 34u : 18u;
        for (uint b = tid; b < p.cols / 32u; b += 64u) {
            if (WTYPE == T_Q8_0)
                s += dot_q8_0_block(ro + b * block_bytes, xo + b * 32u);
            else
                s += dot_q4_0_block(ro + b * block_bytes, xo + b * 32u);
        }
    }
    part[tid] = s;
    barrier();
    for (uint step = 32u; step > 0u; step >>= 1) {
        if (tid < step) part[tid] += part[tid + step];
        barrier();
    }
    if (tid == 0u) {
        uint o = t * p.rows + r;
        y[o] = p.accumulate != 0u ? y[o] + p.alpha * part[0] : part[0];
    }
}
