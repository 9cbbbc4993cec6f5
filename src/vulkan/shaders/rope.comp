#version 450
/* rope.comp - rotates the adjacent pairs (2i, 2i+1) of every head of every row by the angle whose
 * cosine and sine the host computed (cs[row][i] = (cos, sin), as forward.c forms them: the f32
 * angle pos * inv_freq[i], then cos/sin in double), so that no device's approximate cos/sin is
 * involved. The rotation is `precise` (no fused multiply-add), which gives the CPU's exact bits:
 * Vulkan's f32 add, subtract and multiply are correctly rounded. Grid-stride over (row, head, i). */
layout(local_size_x = 64) in;

layout(std430, binding = 0) buffer Vecs { float v[]; };
layout(std430, binding = 1) readonly buffer CosSin { vec2 cs[]; };

layout(push_constant) uniform Params {
    uint rows;
    uint n_heads;
    uint head_dim;
} p;

void main() {
    uint half_d = p.head_dim / 2u, per_row = p.n_heads * half_d;
    uint total = p.rows * per_row, stride = gl_NumWorkGroups.x * 64u;
    for (uint j = gl_GlobalInvocationID.x; j < total; j += stride) {
        uint row = j / per_row, h = (j % per_row) / half_d, i = j % half_d;
        vec2 c = cs[row * half_d + i];
        uint o = row * p.n_heads * p.head_dim + h * p.head_dim + 2u * i;
        float a = v[o], b = v[o + 1u];
        precise float p0 = a * c.x - b * c.y;
        precise float p1 = b * c.x + a * c.y;
        v[o] = p0;
        v[o + 1u] = p1;
    }
}
