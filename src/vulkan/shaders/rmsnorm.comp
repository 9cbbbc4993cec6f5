#version 450
/* rmsnorm.comp - HF's RMSNorm of one row per workgroup: out = w * (x * 1/sqrt(mean(x^2) + eps)).
 * The squares are summed in f32 (f64 is optional in Vulkan): each of the 64 invocations takes
 * every 64th element, then a fixed tree adds the partial sums. */
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Input { float x[]; };
layout(std430, binding = 1) readonly buffer Weight { float w[]; };
layout(std430, binding = 2) writeonly buffer Out { float o[]; };

layout(push_constant) uniform Params {
    uint n; /* row width */
    float eps;
} p;

shared float part[64];

void main() {
    uint tid = gl_LocalInvocationID.x, base = gl_WorkGroupID.x * p.n;
    float s = 0.0;
    for (uint i = tid; i < p.n; i += 64u) s += x[base + i] * x[base + i];
    part[tid] = s;
    barrier();
    for (uint step = 32u; step > 0u; step >>= 1) {
        if (tid < step) part[tid] += part[tid + step];
        barrier();
    }
    float inv = 1.0 / sqrt(part[0] / float(p.n) + p.eps);
    for (uint i = tid; i < p.n; i += 64u) o[base + i] = w[i] * (x[base + i] * inv);
}
