#version 450
/* swiglu.comp - SwiGLU in place: gate[i] = gate[i] / (1 + e^-gate[i]) * up[i] for i < n. A grid-
 * stride loop, so any n runs within the 65535-workgroup dispatch limit. */
layout(local_size_x = 64) in;

layout(std430, binding = 0) buffer Gate { float g[]; };
layout(std430, binding = 1) readonly buffer Up { float u[]; };

layout(push_constant) uniform Params {
    uint n;
} p;

void main() {
    uint stride = gl_NumWorkGroups.x * 64u;
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
        float v = g[i];
        g[i] = v / (1.0 + exp(-v)) * u[i];
    }
}
