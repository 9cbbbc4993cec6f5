#version 450
/* rows.comp - strided copies and adds of rows of floats between buffers (or within one, when the
 * ranges do not overlap): for plane p < planes, row r < rows, element i < width,
 *   dst[dst_off + p*dst_plane + r*dst_row + i] = src[...]          (mode 0: copy)
 *   dst[dst_off + p*dst_plane + r*dst_row + i] += src[...]         (mode 1: add, the residual)
 * with src indexed the same way by src_off, src_plane, src_row. The engine's layers use it to
 * gather a sequence's rows, to write new key/value rows into a slot's head-major cache (a plane
 * per head) and for the residual adds. Grid-stride, so any size runs in one dispatch. */
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Src { float s[]; };
layout(std430, binding = 1) buffer Dst { float d[]; };

layout(push_constant) uniform Params {
    uint planes, rows, width;
    uint src_off, src_plane, src_row;
    uint dst_off, dst_plane, dst_row;
    uint mode;
} p;

void main() {
    uint per_plane = p.rows * p.width, total = p.planes * per_plane;
    uint stride = gl_NumWorkGroups.x * 64u;
    for (uint j = gl_GlobalInvocationID.x; j < total; j += stride) {
        uint pl = j / per_plane, r = (j % per_plane) / p.width, i = j % p.width;
        float v = s[p.src_off + pl * p.src_plane + r * p.src_row + i];
        uint o = p.dst_off + pl * p.dst_plane + r * p.dst_row + i;
        d[o] = p.mode == 1u ? d[o] + v : v;
    }
}
