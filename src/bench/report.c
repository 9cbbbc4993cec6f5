/* report.c - the table and the JSON document of `clara bench` (report.h). */
#include "bench/report.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

static const bench_roofline *machine_for(const bench_report *r, int threads) {
    for (size_t i = 0; i < r->n_machine; i++)
        if (r->machine[i].threads == threads) return &r->machine[i];
    return NULL;
}

/* Achieved compression FLOP/s as a % of the peak that bounds this weight type; -1 if unknown. */
static double compress_pct(const bench_report *r, const bench_compress_result *c, int threads) {
    const bench_roofline *m = machine_for(r, threads);
    double peak = m ? (r->mi->quantized ? m->int8_peak : m->f32_peak) : 0;
    return peak > 0 ? 100.0 * c->flops_per_s / (peak * 1e9) : -1;
}

/* Decode tokens/s if every token read all weights once at the measured bandwidth; -1 if unknown. */
static double decode_roofline(const bench_report *r, int threads) {
    const bench_roofline *m = machine_for(r, threads);
    return m && m->mem_read_gbs > 0 ? m->mem_read_gbs * 1e9 / r->mi->decode_bytes : -1;
}

/* ---- table ---- */

static void cell(FILE *out, double v, int width, int prec) {
    if (v < 0)
        fprintf(out, "%*s", width, "-");
    else
        fprintf(out, "%*.*f", width, prec, v);
}

static void table_machine(FILE *out, const bench_report *r) {
    if (!r->n_machine) {
        fprintf(out, "machine limits: not measured (--no-roofline)\n\n");
        return;
    }
    fprintf(out, "machine limits   mem read GB/s   f32 GFLOP/s (");
    for (int k = 0; k < BENCH_F32_N; k++) fprintf(out, "%s%s", k ? " / " : "", bench_f32_names[k]);
    fprintf(out, ")   int8 GOP/s (");
    for (int k = 0; k < BENCH_INT8_N; k++)
        fprintf(out, "%s%s", k ? " / " : "", bench_int8_names[k]);
    fprintf(out, ")\n");
    for (size_t i = 0; i < r->n_machine; i++) {
        const bench_roofline *m = &r->machine[i];
        fprintf(out, "  threads %-4d   %13.1f   ", m->threads, m->mem_read_gbs);
        for (int k = 0; k < BENCH_F32_N; k++)
            fprintf(out, "%s%.0f", k ? " / " : "", m->f32_gflops[k]);
        fprintf(out, "   ");
        for (int k = 0; k < BENCH_INT8_N; k++)
            fprintf(out, "%s%.0f", k ? " / " : "", m->int8_gops[k]);
        fprintf(out, "\n");
    }
    fprintf(out, "\n");
}

static void table_compress(FILE *out, const bench_report *r) {
    size_t rows = 0;
    for (size_t i = 0; i < r->n_res; i++) rows += r->res[i].n_compress;
    if (rows == 0) return; /* --parts answer */
    fprintf(out,
            "compress         batch     docs/s   tokens/s  mean tokens    GFLOP/s  %% of %s peak\n",
            r->mi->quantized ? "int8" : "f32");
    for (size_t i = 0; i < r->n_res; i++)
        for (size_t j = 0; j < r->res[i].n_compress; j++) {
            const bench_compress_result *c = &r->res[i].compress[j];
            fprintf(out, "  threads %-4d %8u %10.2f %10.1f %12.1f %10.1f ", r->res[i].threads,
                    c->batch, c->docs_per_s, c->tokens_per_s, c->mean_tokens, c->flops_per_s / 1e9);
            cell(out, compress_pct(r, c, r->res[i].threads), 15, 1);
            fprintf(out, "\n");
        }
    fprintf(out, "\n");
}

static void table_answer(FILE *out, const bench_report *r) {
    if (r->n_res == 0 || !r->res[0].has_answer) return; /* --parts compress: on every row */
    fprintf(out, "answer (%zu documents, %u generated tokens)\n", r->answer_docs,
            r->res[0].answer.gen_tokens);
    fprintf(out, "                 prompt tokens  prefill ms  prefill tok/s  decode tok/s  "
                 "roofline tok/s  %% of roofline\n");
    for (size_t i = 0; i < r->n_res; i++) {
        const bench_answer_result *a = &r->res[i].answer;
        double roof = decode_roofline(r, r->res[i].threads);
        fprintf(out, "  threads %-4d %16u %11.1f %14.1f %13.2f ", r->res[i].threads,
                a->prompt_tokens, a->prefill_ms, a->prefill_tok_s, a->decode_tok_s);
        cell(out, roof, 15, 2);
        cell(out, roof > 0 ? 100.0 * a->decode_tok_s / roof : -1, 15, 1);
        fprintf(out, "\n");
    }
}

/* The CPU and what was chosen for it: kind, family/model/name, caches, kernels, each parameter
 * with its source. */
static void table_backend(FILE *out, const clara_backend_info *b) {
    fprintf(out, "  cpu: %s, %s family %u model %u, %d cores, L1d %u KiB, L2 %u KiB, L3 %u KiB\n",
            b->device[0] ? b->device : "?", b->vendor[0] ? b->vendor : "?", b->family, b->model,
            b->cores, b->l1d_kib, b->l2_kib, b->l3_kib);
    fprintf(out, "  kind %s (%s): the parameters below are this kind's unless forced\n", b->kind,
            b->kind_why);
    fprintf(out, "  kernels: %s, AMX %s%s\n", b->isa, b->amx ? "on" : "off",
            b->wide_units_halved ? ", 512-bit operations on 256-bit units" : "");
    for (int i = 0; i < b->n_params; i++)
        fprintf(out, "  param %-17s %8lld  %-36s [%s]\n", b->params[i].name, b->params[i].value,
                b->params[i].source, b->params[i].env);
}

/* Where the layers ran: the CPU, or the GPU with its memory, the layers and the bytes used. */
static void table_device(FILE *out, const clara_ctx_backend_info *d) {
    if (!d) return;
    if (strcmp(d->backend, "vulkan") == 0)
        fprintf(out,
                "  device: vulkan on %s (%s device, %.0f MiB), %u/%u layers, %.1f MiB in use%s\n",
                d->device, d->device_type, d->device_memory / 1048576.0, d->gpu_layers, d->n_layer,
                d->bytes_used / 1048576.0,
                strcmp(d->device_type, "cpu") == 0 ? " (timings: correctness only)" : "");
    else
        fprintf(out, "  device: the CPU%s%s\n", d->note[0] ? ": " : "", d->note);
    if (d->cpu_repacked)
        fprintf(out,
                "  weights: %.0f MiB of q4_0 / q8_0 repacked at load for the CPU kernels "
                "(CLARA_REPACK=0: read from the file)\n",
                d->cpu_repacked / 1048576.0);
}

void bench_report_table(FILE *out, const bench_report *r) {
    const bench_model_info *mi = r->mi;
    fprintf(out, "clara bench: %s\n", r->model);
    fprintf(out,
            "  %s, %u layers, %.1f M linear weights (%.1f MB read per decoded token), kernels %s\n",
            mi->weight_type, mi->n_layer, mi->linear_params / 1e6, mi->decode_bytes / 1e6, r->isa);
    fprintf(out, "  documents: %zu of %u tokens, from %s\n", r->docs->n,
            r->docs->n ? r->docs->tokens[0] : 0, r->docs->source);
    table_backend(out, r->backend);
    table_device(out, r->device);
    fprintf(out, "\n");
    table_machine(out, r);
    table_compress(out, r);
    table_answer(out, r);
}

/* ---- JSON ---- */

static void add_num_or_null(cJSON *o, const char *key, double v) {
    if (v < 0)
        cJSON_AddNullToObject(o, key);
    else
        cJSON_AddNumberToObject(o, key, v);
}

static cJSON *json_machine(const bench_report *r) {
    cJSON *m = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(m, "threads");
    for (size_t i = 0; i < r->n_machine; i++) {
        const bench_roofline *x = &r->machine[i];
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "threads", x->threads);
        cJSON_AddNumberToObject(t, "mem_read_gbs", x->mem_read_gbs);
        cJSON_AddNumberToObject(t, "f32_gflops", x->f32_peak);
        cJSON_AddNumberToObject(t, "int8_gops", x->int8_peak);
        cJSON *f = cJSON_AddObjectToObject(t, "f32_gflops_by_isa");
        for (int k = 0; k < BENCH_F32_N; k++)
            cJSON_AddNumberToObject(f, bench_f32_names[k], x->f32_gflops[k]);
        cJSON *q = cJSON_AddObjectToObject(t, "int8_gops_by_isa");
        for (int k = 0; k < BENCH_INT8_N; k++)
            cJSON_AddNumberToObject(q, bench_int8_names[k], x->int8_gops[k]);
        cJSON_AddItemToArray(arr, t);
    }
    return m;
}

static cJSON *json_result(const bench_report *r, const bench_thread_result *res) {
    cJSON *o = cJSON_CreateObject(), *cs = cJSON_CreateArray();
    cJSON_AddNumberToObject(o, "threads", res->threads);
    cJSON_AddItemToObject(o, "compress", cs);
    for (size_t j = 0; j < res->n_compress; j++) {
        const bench_compress_result *c = &res->compress[j];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddNumberToObject(x, "batch", c->batch);
        cJSON_AddNumberToObject(x, "docs_per_s", c->docs_per_s);
        cJSON_AddNumberToObject(x, "tokens_per_s", c->tokens_per_s);
        cJSON_AddNumberToObject(x, "mean_tokens", c->mean_tokens);
        cJSON_AddNumberToObject(x, "gflops", c->flops_per_s / 1e9);
        add_num_or_null(x, "roofline_pct", compress_pct(r, c, res->threads));
        cJSON_AddItemToArray(cs, x);
    }
    if (!res->has_answer) {
        cJSON_AddNullToObject(o, "answer");
        return o;
    }
    const bench_answer_result *a = &res->answer;
    double roof = decode_roofline(r, res->threads);
    cJSON *x = cJSON_AddObjectToObject(o, "answer");
    cJSON_AddNumberToObject(x, "docs", (double)r->answer_docs);
    cJSON_AddNumberToObject(x, "prompt_tokens", a->prompt_tokens);
    cJSON_AddNumberToObject(x, "gen_tokens", a->gen_tokens);
    cJSON_AddNumberToObject(x, "prefill_ms", a->prefill_ms);
    cJSON_AddNumberToObject(x, "prefill_tok_s", a->prefill_tok_s);
    cJSON_AddNumberToObject(x, "decode_tok_s", a->decode_tok_s);
    add_num_or_null(x, "decode_roofline_tok_s", roof);
    add_num_or_null(x, "decode_roofline_pct", roof > 0 ? 100.0 * a->decode_tok_s / roof : -1);
    return o;
}

static cJSON *json_docs(const bench_docs *d) {
    cJSON *o = cJSON_CreateObject(), *t = cJSON_AddArrayToObject(o, "tokens");
    cJSON_AddStringToObject(o, "source", d->source);
    cJSON_AddNumberToObject(o, "count", (double)d->n);
    for (size_t i = 0; i < d->n; i++) cJSON_AddItemToArray(t, cJSON_CreateNumber(d->tokens[i]));
    return o;
}

static cJSON *json_backend(const clara_backend_info *b) {
    cJSON *o = cJSON_CreateObject(), *ps = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "backend", b->backend);
    cJSON_AddStringToObject(o, "name", b->device);
    cJSON_AddStringToObject(o, "vendor", b->vendor);
    cJSON_AddNumberToObject(o, "family", b->family);
    cJSON_AddNumberToObject(o, "model", b->model);
    cJSON_AddStringToObject(o, "kind", b->kind);
    cJSON_AddStringToObject(o, "kind_why", b->kind_why);
    cJSON_AddNumberToObject(o, "cores", b->cores);
    cJSON_AddNumberToObject(o, "l1d_kib", b->l1d_kib);
    cJSON_AddNumberToObject(o, "l2_kib", b->l2_kib);
    cJSON_AddNumberToObject(o, "l3_kib", b->l3_kib);
    cJSON_AddStringToObject(o, "isa", b->isa);
    cJSON_AddBoolToObject(o, "amx", b->amx);
    cJSON_AddItemToObject(o, "params", ps);
    for (int i = 0; i < b->n_params; i++) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddNumberToObject(p, "value", (double)b->params[i].value);
        cJSON_AddStringToObject(p, "source", b->params[i].source);
        cJSON_AddStringToObject(p, "env", b->params[i].env);
        cJSON_AddItemToObject(ps, b->params[i].name, p);
    }
    return o;
}

static cJSON *json_device(const clara_ctx_backend_info *d) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "backend", d->backend);
    cJSON_AddStringToObject(o, "name", d->device);
    cJSON_AddStringToObject(o, "type", d->device_type);
    cJSON_AddNumberToObject(o, "memory_bytes", (double)d->device_memory);
    cJSON_AddNumberToObject(o, "layers", d->gpu_layers);
    cJSON_AddNumberToObject(o, "n_layer", d->n_layer);
    cJSON_AddNumberToObject(o, "bytes_used", (double)d->bytes_used);
    cJSON_AddStringToObject(o, "note", d->note);
    cJSON_AddNumberToObject(o, "cpu_repacked_bytes", (double)d->cpu_repacked);
    return o;
}

clara_status bench_report_json(FILE *out, const bench_report *r) {
    cJSON *root = cJSON_CreateObject(), *res = cJSON_CreateArray();
    cJSON_AddStringToObject(root, "model", r->model);
    cJSON_AddStringToObject(root, "weight_type", r->mi->weight_type);
    cJSON_AddStringToObject(root, "isa", r->isa);
    cJSON_AddItemToObject(root, "cpu", json_backend(r->backend));
    if (r->device) {
        cJSON_AddStringToObject(root, "backend", r->device->backend);
        cJSON_AddItemToObject(root, "device", json_device(r->device));
    }
    cJSON_AddNumberToObject(root, "linear_params", r->mi->linear_params);
    cJSON_AddNumberToObject(root, "decode_bytes_per_token", r->mi->decode_bytes);
    cJSON_AddItemToObject(root, "docs", json_docs(r->docs));
    cJSON_AddItemToObject(root, "machine", json_machine(r));
    cJSON_AddItemToObject(root, "results", res);
    for (size_t i = 0; i < r->n_res; i++) cJSON_AddItemToArray(res, json_result(r, &r->res[i]));
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!s) return clara_fail(CLARA_ERR_NOMEM, "out of memory writing JSON");
    fprintf(out, "%s\n", s);
    cJSON_free(s);
    return CLARA_OK;
}
