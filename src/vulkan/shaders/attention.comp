#version 450
/* attention.comp - causal attention of one sequence's query rows over its keys and values, with
 * grouped-query heads: forward.c's attention (attn_task) on the device. Workgroup (h, t) takes
 * query head h of query row t0 + t, which attends to keys [0, keys0 + t0 + t) of key/value head
 * h / group (keys0: the keys the sequence's first query row sees, itself included):
 *   s_k = (q · K_k) * scale;  p_k = exp(s_k - max s) / sum exp(s_j - max s);  out = sum p_k V_k
 * all in f32, in the CPU's order where it matters: the scores of one row go to a scratch row
 * (keys_cap floats per workgroup), are turned into exponentials, then multiplied by 1/sum before
 * the value rows are added up key by key (like the scalar CPU kernel). Max and sum over the 64
 * invocations' parts by a fixed tree, so results do not depend on scheduling.
 * Keys and values: head kvh's key row k is K[k_off + kvh*head_step + k*kv_stride] (a slot's
 * head-major cache, or the batch's own rows), the same for V at v_off. */
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Queries { float q[]; };
layout(std430, binding = 1) readonly buffer Keys { float K[]; };
layout(std430, binding = 2) readonly buffer Values { float V[]; };
layout(std430, binding = 3) writeonly buffer Out { float o[]; };
layout(std430, binding = 4) buffer Scores { float sc[]; };

layout(push_constant) uniform Params {
    uint q_off, q_stride;     /* query row t of the sequence: q_off + t*q_stride, head h at +h*d */
    uint k_off, v_off, head_step, kv_stride;
    uint out_off, out_stride; /* like the queries */
    uint group, d;            /* query heads per key/value head; head_dim */
    uint keys0, t0, keys_cap;
    float scale;
} p;

shared float part[64];

/* The fixed-tree reduction of part[] (max when take_max, else sum); every invocation gets it. */
float reduce(float v, bool take_max) {
    uint tid = gl_LocalInvocationID.x;
    part[tid] = v;
    barrier();
    for (uint step = 32u; step > 0u; step >>= 1) {
        if (tid < step)
            part[tid] = take_max ? max(part[tid], part[tid + step]) : part[tid] + part[tid + step];
        barrier();
    }
    float r = part[0];
    barrier();
    return r;
}

void main() {
    uint tid = gl_LocalInvocationID.x, h = gl_WorkGroupID.x, t = p.t0 + gl_WorkGroupID.y;
    uint n_keys = p.keys0 + t, kvh = h / p.group;
    uint qo = p.q_off + t * p.q_stride + h * p.d;
    uint ko = p.k_off + kvh * p.head_step, vo = p.v_off + kvh * p.head_step;
    uint so = (gl_WorkGroupID.y * gl_NumWorkGroups.x + h) * p.keys_cap;
    float mx = -1.0 / 0.0;
    for (uint k = tid; k < n_keys; k += 64u) {
        float s = 0.0;
        for (uint e = 0u; e < p.d; e++) s += q[qo + e] * K[ko + k * p.kv_stride + e];
        s *= p.scale;
        sc[so + k] = s;
        mx = max(mx, s);
    }
    mx = reduce(mx, true);
    float sum = 0.0;
    for (uint k = tid; k < n_keys; k += 64u) { /* each invocation its own scores */
        float e = exp(sc[so + k] - mx);
        sc[so + k] = e;
        sum += e;
    }
    float inv = 1.0 / reduce(sum, false);
    memoryBarrierBuffer(); /* every invocation reads every score below */
    barrier();
    uint oo = p.out_off + t * p.out_stride + h * p.d;
    for (uint e = tid; e < p.d; e += 64u) {
        float acc = 0.0;
        for (uint k = 0u; k < n_keys; k++) acc += (sc[so + k] * inv) * V[vo + k * p.kv_stride + e];
        o[oo + e] = acc;
    }
}
