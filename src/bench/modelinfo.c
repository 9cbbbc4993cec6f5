/* modelinfo.c - model facts for the roofline figures of `clara bench` (modelinfo.h), from the
 * GGUF tensor table: in two-file mode the base holds the blocks and the add-on holds the tables
 * and adapters, and output.weight is the add-on's (as the loader binds it). */
#include "bench/modelinfo.h"

#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "dtype.h"
#include "gguf.h"

/* llama.cpp's llama_ftype values and names */
static const struct {
    uint32_t ftype;
    const char *name;
} k_ftypes[] = {{0, "f32"},     {1, "f16"},     {2, "q4_0"},    {3, "q4_1"},    {7, "q8_0"},
                {8, "q5_0"},    {9, "q5_1"},    {10, "q2_k"},   {11, "q3_k_s"}, {12, "q3_k_m"},
                {13, "q3_k_l"}, {14, "q4_k_s"}, {15, "q4_k_m"}, {16, "q5_k_s"}, {17, "q5_k_m"},
                {18, "q6_k"},   {32, "bf16"}};

static bool starts_with(const char *s, const char *p) {
    return strncmp(s, p, strlen(p)) == 0;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static double elems(const gguf_tensor *t) {
    double n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) n *= (double)t->ne[d];
    return n;
}

/* Sums the block matrices of g; returns the type holding the most of their elements. */
static clara_type scan_blocks(const gguf_ctx *g, bench_model_info *mi) {
    double by_type[CLARA_TYPE_Q8_Z + 1] = {0};
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (!starts_with(t->name, "blk.") || t->n_dims != 2 || !ends_with(t->name, ".weight"))
            continue;
        mi->linear_params += elems(t);
        mi->decode_bytes += (double)t->nbytes;
        if ((unsigned)t->type <= CLARA_TYPE_Q8_Z) by_type[t->type] += elems(t);
        if (ends_with(t->name, ".attn_q.weight")) {
            mi->n_layer++;
            mi->q_out = (uint32_t)t->ne[1];
        }
    }
    int best = 0;
    for (int k = 1; k <= CLARA_TYPE_Q8_Z; k++)
        if (by_type[k] > by_type[best]) best = k;
    return (clara_type)best;
}

static void scan_encoder_lora(const gguf_ctx *g, bench_model_info *mi) {
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (starts_with(t->name, "clara.encoder_adapter.") &&
            (ends_with(t->name, ".lora_a") || ends_with(t->name, ".lora_b")))
            mi->lora_params += elems(t);
    }
}

static void name_type(const gguf_ctx *g, clara_type dominant, bench_model_info *mi) {
    uint64_t ft;
    snprintf(mi->weight_type, sizeof mi->weight_type, "%s", clara_type_name(dominant));
    if (gguf_find_key(g, "general.file_type") >= 0 &&
        gguf_get_uint(g, "general.file_type", &ft) == CLARA_OK)
        for (size_t i = 0; i < sizeof k_ftypes / sizeof k_ftypes[0]; i++)
            if (k_ftypes[i].ftype == ft)
                snprintf(mi->weight_type, sizeof mi->weight_type, "%s", k_ftypes[i].name);
    mi->quantized =
        dominant != CLARA_TYPE_F32 && dominant != CLARA_TYPE_F16 && dominant != CLARA_TYPE_BF16;
}

static clara_status read_files(const gguf_ctx *prim, const gguf_ctx *base, bench_model_info *mi) {
    const gguf_ctx *blocks = base ? base : prim;
    clara_type dominant = scan_blocks(blocks, mi);
    if (mi->n_layer == 0)
        return clara_fail(CLARA_ERR_FORMAT, "%s: no blk.N.attn_q.weight tensors",
                          gguf_name(blocks));
    name_type(blocks, dominant, mi);
    scan_encoder_lora(prim, mi);
    const gguf_tensor *out = gguf_find_tensor(prim, "output.weight");
    if (!out && base) out = gguf_find_tensor(base, "output.weight");
    if (!out) return clara_fail(CLARA_ERR_NOT_FOUND, "%s: no output.weight", gguf_name(prim));
    mi->decode_bytes += (double)out->nbytes;
    uint64_t n_mem = 0, doc_max = 0;
    clara_status s = gguf_get_uint(prim, "clara.n_mem", &n_mem);
    if (s == CLARA_OK) s = gguf_get_uint(prim, "clara.doc_max_length", &doc_max);
    mi->n_mem = (uint32_t)n_mem;
    mi->doc_max_len = (uint32_t)doc_max;
    return s;
}

clara_status bench_model_info_read(const char *primary, const char *base, bench_model_info *out) {
    memset(out, 0, sizeof *out);
    gguf_ctx *p = NULL, *b = NULL;
    clara_status s = gguf_open(primary, &p);
    if (s == CLARA_OK && base) s = gguf_open(base, &b);
    if (s == CLARA_OK) s = read_files(p, b, out);
    gguf_free(b);
    gguf_free(p);
    return s;
}

double bench_compress_flops(const bench_model_info *mi, uint32_t n_tokens) {
    double n = (double)n_tokens + mi->n_mem;
    return 2.0 * n * (mi->linear_params + mi->lora_params) +
           2.0 * mi->n_layer * (double)mi->q_out * n * (n + 1);
}
