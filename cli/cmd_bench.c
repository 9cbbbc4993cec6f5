/* cmd_bench.c - `clara bench`: machine limits, compression throughput and answer latency of a
 * model, per thread count, as a table or one JSON document (docs/PERFORMANCE.md); and
 * `clara bench --generate SHAPE` writing random-weight models to benchmark. Every error is one
 * line "clara bench: error: ..." with exit status 1. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/threadpool.h"
#include "bench/docs.h"
#include "bench/genmodel.h"
#include "bench/modelinfo.h"
#include "bench/report.h"
#include "bench/roofline.h"
#include "bench/run.h"
#include "cli.h"
#include "clara.h"

#define ANSWER_DOCS 5

typedef struct {
    const char *model, *base, *clara, *text_file, *save_docs, *generate, *type, *out;
    long seed, reps, gen_tokens, doc_tokens;
    int threads[BENCH_MAX_LIST];
    uint32_t batches[BENCH_MAX_LIST];
    size_t n_threads, n_batches;
    int json, no_roofline, quiet, generated_text;
    unsigned parts; /* BENCH_PART_* */
    clara_adapter_policy policy;
    cli_backend backend; /* --backend, --gpu-layers */
} bench_opts;

#define BENCH_PART_COMPRESS 1u
#define BENCH_PART_ANSWER   2u

static void bench_usage(FILE *out) {
    fprintf(
        out,
        "usage: clara bench (--model FILE | --base FILE --clara FILE) [--threads 1,2]\n"
        "                   [--batches 1,4,16] [--reps N] [--gen-tokens N] [--doc-tokens N]\n"
        "                   [--text-file FILE.jsonl | --generated-text] [--save-docs FILE]\n"
        "                   [--no-roofline] [--adapter-policy hf|all] [--parts compress,answer]\n"
        "                   [--backend B] [--gpu-layers N] [--json] [--quiet]\n"
        "       clara bench --generate 7b|1b|tiny --type T --out DIR [--seed N] [--quiet]\n"
        "\n"
        "Measures the machine's limits (memory read bandwidth, f32 FMA and int8 dot peaks),\n"
        "document compression (docs/s, tokens/s, %% of peak) and answer latency from %d\n"
        "compressed documents (prefill, decode tok/s, %% of the bandwidth roofline).\n"
        "The header names the CPU (family/model, caches), the kind its kernel parameters\n"
        "were chosen for and each parameter with its source; CLARA_PF_BYTES,\n"
        "CLARA_PF_GROUPS, CLARA_TASKS_PER_THREAD, CLARA_ROWS_PER_TASK, CLARA_QG_PANELS,\n"
        "CLARA_QG_TASK_KIB, CLARA_PF_LANES and CLARA_QG_TILE_TOKENS force them\n"
        "(docs/PERFORMANCE.md), CLARA_ISA\n"
        "the kernel level, CLARA_REPACK=0 keeps q4_0/q8_0 weights in the file's layout.\n"
        "  --threads LIST     thread counts (default: physical cores, %d here)\n"
        "  --backend B, --gpu-layers N: where the layers run (as for `clara ask`; the\n"
        "                     report names the device, its memory, the layers placed and\n"
        "                     the bytes used; lavapipe timings are for correctness only)\n"
        "  --batches LIST     documents per clara_compress call (default 1,4,16)\n"
        "  --reps N           timed repetitions after a warm-up; medians (default 3)\n"
        "  --gen-tokens N     tokens generated per answer, </s> ignored (default 32)\n"
        "  --doc-tokens N     encoder-row tokens per document, as clara_compress counts\n"
        "                     them (<ENC><s>text</s>; default 256)\n"
        "  --text-file FILE   JSONL text to cut documents from (default, if present:\n"
        "                     %s;\n"
        "                     else generated sentences)\n"
        "  --generated-text   generated sentences even if that file is present\n"
        "  --save-docs FILE   write the documents used, one JSON string per line\n"
        "  --no-roofline      skip the machine limits (percentages are then null)\n"
        "  --parts LIST       what to time: compress, answer or both (default both; a\n"
        "                     part left out is [] / null in the JSON)\n"
        "  --generate SHAPE   write DIR/base.gguf (llama.cpp layout) and DIR/clara.gguf\n"
        "                     (CLaRa add-on) with random weights; T is f32 f16 bf16 q8_0\n"
        "                     q4_0 q4_1 q5_0 q5_1 q4_k_m q5_k_m q6_k\n",
        ANSWER_DOCS, clara_physical_cores(),
        bench_default_text() ? bench_default_text() : "tests/data/wiki-passages-qa.jsonl");
}

static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "clara bench: error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 1;
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi)
        return fail("%s must be an integer in [%ld, %ld], not '%s'", opt, lo, hi, s);
    *out = v;
    return 0;
}

/* "1,4,16" -> values in [lo, hi], at most BENCH_MAX_LIST of them. */
static int parse_list(const char *opt, const char *s, long lo, long hi, long *vals, size_t *n) {
    char item[32];
    *n = 0;
    for (const char *p = s;; p++) {
        size_t len = strcspn(p, ",");
        if (*n == BENCH_MAX_LIST) return fail("%s takes at most %d values", opt, BENCH_MAX_LIST);
        if (len == 0 || len >= sizeof item)
            return fail("%s must be a comma-separated list of integers, not '%s'", opt, s);
        memcpy(item, p, len);
        item[len] = '\0';
        if (parse_long(opt, item, lo, hi, &vals[(*n)++])) return 1;
        p += len;
        if (*p == '\0') return 0;
    }
}

/* "compress,answer" -> BENCH_PART_* bits; each part at most once. */
static int parse_parts(const char *s, unsigned *parts) {
    *parts = 0;
    for (const char *p = s;; p++) {
        size_t len = strcspn(p, ",");
        unsigned bit = len == 8 && strncmp(p, "compress", 8) == 0 ? BENCH_PART_COMPRESS
                       : len == 6 && strncmp(p, "answer", 6) == 0 ? BENCH_PART_ANSWER
                                                                  : 0;
        if (!bit || (*parts & bit))
            return fail("--parts takes compress, answer or compress,answer, not '%s'", s);
        *parts |= bit;
        p += len;
        if (*p == '\0') return 0;
    }
}

static int set_option(bench_opts *o, int ch, const char *arg) {
    long vals[BENCH_MAX_LIST];
    switch (ch) {
    case 't':
        if (parse_list("--threads", arg, 1, 1024, vals, &o->n_threads)) return 1;
        for (size_t i = 0; i < o->n_threads; i++) o->threads[i] = (int)vals[i];
        return 0;
    case 'b':
        if (parse_list("--batches", arg, 1, 4096, vals, &o->n_batches)) return 1;
        for (size_t i = 0; i < o->n_batches; i++) o->batches[i] = (uint32_t)vals[i];
        return 0;
    case 'r':
        return parse_long("--reps", arg, 1, 1000, &o->reps);
    case 'g':
        return parse_long("--gen-tokens", arg, 2, 100000, &o->gen_tokens);
    case 'd':
        return parse_long("--doc-tokens", arg, 4, 100000, &o->doc_tokens);
    case 's':
        return parse_long("--seed", arg, 0, 0x7fffffffL, &o->seed);
    case 'P':
        return parse_parts(arg, &o->parts);
    case 'p':
        if (strcmp(arg, "hf") != 0 && strcmp(arg, "all") != 0)
            return fail("--adapter-policy must be hf or all, not '%s'", arg);
        o->policy = strcmp(arg, "all") == 0 ? CLARA_ADAPTER_POLICY_ALL : CLARA_ADAPTER_POLICY_HF;
        return 0;
    }
    return fail("internal: option %c", ch);
}

static const struct option k_opts[] = {
    {"model", required_argument, 0, 'm'},
    {"base", required_argument, 0, 'B'},
    {"clara", required_argument, 0, 'C'},
    {"threads", required_argument, 0, 't'},
    {"batches", required_argument, 0, 'b'},
    {"reps", required_argument, 0, 'r'},
    {"gen-tokens", required_argument, 0, 'g'},
    {"doc-tokens", required_argument, 0, 'd'},
    {"text-file", required_argument, 0, 'f'},
    {"save-docs", required_argument, 0, 'S'},
    {"no-roofline", no_argument, 0, 'N'},
    {"adapter-policy", required_argument, 0, 'p'},
    {"parts", required_argument, 0, 'P'},
    {"json", no_argument, 0, 'j'},
    {"quiet", no_argument, 0, 'q'},
    {"generate", required_argument, 0, 'G'},
    {"type", required_argument, 0, 'T'},
    {"out", required_argument, 0, 'o'},
    {"seed", required_argument, 0, 's'},
    {"generated-text", no_argument, 0, 'X'},
    {"help", no_argument, 0, 'h'},
    {"backend", required_argument, 0, 'K'},
    {"gpu-layers", required_argument, 0, 'Y'},
    {0, 0, 0, 0},
};

/* The options that only name something. */
static const char **string_slot(bench_opts *o, int ch) {
    switch (ch) {
    case 'm':
        return &o->model;
    case 'B':
        return &o->base;
    case 'C':
        return &o->clara;
    case 'f':
        return &o->text_file;
    case 'S':
        return &o->save_docs;
    case 'G':
        return &o->generate;
    case 'T':
        return &o->type;
    case 'o':
        return &o->out;
    }
    return NULL;
}

/* Cross-option checks; returns 0 or 1 after printing the error. */
static int check_opts(const bench_opts *o) {
    if (o->generate) {
        if (!bench_gen_shape_known(o->generate))
            return fail("--generate takes 7b, 1b or tiny, not '%s'", o->generate);
        if (!o->type || !o->out) return fail("--generate needs --type T and --out DIR");
        if (o->model || o->base || o->clara) return fail("--generate takes no model files");
        return 0;
    }
    if (o->type || o->out) return fail("--type and --out go with --generate");
    if (o->text_file && o->generated_text)
        return fail("--text-file and --generated-text exclude each other");
    if (!o->model == !(o->base && o->clara) || !o->base != !o->clara)
        return fail("give --model FILE, or --base FILE with --clara FILE");
    return 0;
}

/* Returns 0 to run, -1 after --help, 1 on a bad option (error printed). */
static int parse_opts(int argc, char **argv, bench_opts *o) {
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":", k_opts, NULL)) != -1) {
        const char **slot = string_slot(o, ch);
        if (slot) {
            *slot = optarg;
        } else if (ch == 'N' || ch == 'j' || ch == 'q' || ch == 'X') {
            *(ch == 'N'   ? &o->no_roofline
              : ch == 'j' ? &o->json
              : ch == 'q' ? &o->quiet
                          : &o->generated_text) = 1;
        } else if (ch == 'h') {
            bench_usage(stdout);
            return -1;
        } else if (ch == 'K' || ch == 'Y') {
            if (cli_backend_opt("bench", &o->backend, ch == 'Y', optarg)) return 1;
        } else if (ch == ':') {
            return fail("%s needs a value", argv[optind - 1]);
        } else if (ch == '?') {
            return fail("unknown option '%s' (see clara bench --help)", argv[optind - 1]);
        } else if (set_option(o, ch, optarg)) {
            return 1;
        }
    }
    if (optind < argc) return fail("unexpected argument '%s'", argv[optind]);
    return check_opts(o);
}

static int run_generate(const bench_opts *o) {
    bench_gen_params p = {o->generate, o->type, o->out, (uint64_t)o->seed, !o->quiet};
    if (bench_generate(&p) != CLARA_OK) return fail("%s", clara_last_error());
    if (!o->quiet)
        fprintf(stderr, "clara bench: wrote %s/base.gguf and %s/clara.gguf\n", o->out, o->out);
    return 0;
}

/* ---- the benchmark ---- */

typedef struct {
    const bench_opts *o;
    clara_model *model;
    bench_model_info mi;
    bench_docs docs;
    bench_roofline machine[BENCH_MAX_LIST];
    size_t n_machine;
    bench_thread_result res[BENCH_MAX_LIST];
    size_t n_res;
    clara_ctx_backend_info device; /* where the last run's layers ran */
} bench_state;

static void note(const bench_opts *o, const char *fmt, ...) {
    if (o->quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "clara bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

/* Model facts, the model itself, and the documents. */
static int prepare(bench_state *st) {
    const bench_opts *o = st->o;
    const char *primary = o->model ? o->model : o->clara;
    if (bench_model_info_read(primary, o->base, &st->mi) != CLARA_OK)
        return fail("%s", clara_last_error());
    if ((uint32_t)o->doc_tokens > st->mi.doc_max_len + 3)
        return fail("--doc-tokens %ld is more than the model's documents hold (%u)", o->doc_tokens,
                    st->mi.doc_max_len + 3);
    clara_model_params mp = clara_model_default_params();
    mp.adapter_policy = o->policy;
    clara_status s = cli_load_model(o->model, o->base, o->clara, &mp, &st->model);
    if (s != CLARA_OK) return fail("%s", clara_last_error());
    size_t n_docs = ANSWER_DOCS;
    for (size_t i = 0; i < o->n_batches; i++)
        if (o->batches[i] > n_docs) n_docs = o->batches[i];
    bench_docs_params dp = {primary, o->text_file, o->generated_text, n_docs,
                            (uint32_t)o->doc_tokens};
    if (bench_docs_build(&dp, &st->docs) != CLARA_OK) return fail("%s", clara_last_error());
    if (o->save_docs && bench_docs_save(&st->docs, o->save_docs) != CLARA_OK)
        return fail("%s", clara_last_error());
    return 0;
}

/* clara_compress's own counts must be the ones the documents were fitted to. */
static int check_tokens(const bench_state *st, const uint32_t *n_tokens, uint32_t batch) {
    for (uint32_t i = 0; i < batch; i++)
        if (n_tokens[i] != st->docs.tokens[i])
            return fail("document %u: clara_compress counted %u tokens, the tokenizer %u", i,
                        n_tokens[i], st->docs.tokens[i]);
    return 0;
}

typedef struct {
    const bench_opts *o;
    char step[96];
} bench_step;

/* Progress of one step (which threads, which case), after each timed pass. */
static void step_progress(void *arg, const char *what, int done, int total, double seconds) {
    const bench_step *b = arg;
    note(b->o, "%s: %s %d/%d (%.1f s)", b->step, what, done, total, seconds);
}

static int run_threads(bench_state *st, int threads) {
    const bench_opts *o = st->o;
    bench_thread_result *r = &st->res[st->n_res];
    clara_ctx_params cp = clara_ctx_default_params();
    clara_ctx *ctx = NULL;
    uint32_t n_tokens[4096];
    int rc = 0;
    cp.n_threads = threads;
    if (cli_backend_apply("bench", &o->backend, &cp)) return 1;
    if (clara_ctx_create(st->model, &cp, &ctx) != CLARA_OK) return fail("%s", clara_last_error());
    r->threads = threads;
    for (size_t i = 0; (o->parts & BENCH_PART_COMPRESS) && i < o->n_batches && rc == 0; i++) {
        bench_step b = {o, ""};
        snprintf(b.step, sizeof b.step, "threads %d, compressing a batch of %u (case %zu/%zu)",
                 threads, o->batches[i], i + 1, o->n_batches);
        bench_progress pr = {step_progress, &b};
        note(o, "%s", b.step);
        if (bench_compress_run(ctx, st->model, st->docs.docs, o->batches[i], (int)o->reps, &st->mi,
                               &r->compress[i], n_tokens, &pr) != CLARA_OK)
            rc = fail("%s", clara_last_error());
        else
            rc = check_tokens(st, n_tokens, o->batches[i]);
        r->n_compress = i + 1;
    }
    r->has_answer = rc == 0 && (o->parts & BENCH_PART_ANSWER);
    bench_step b = {o, ""};
    snprintf(b.step, sizeof b.step, "threads %d, answering from %d documents", threads,
             ANSWER_DOCS);
    bench_progress pr = {step_progress, &b};
    if (r->has_answer) note(o, "%s", b.step);
    if (r->has_answer &&
        bench_answer_run(ctx, st->model, st->docs.docs, ANSWER_DOCS, st->docs.query,
                         (uint32_t)o->gen_tokens, (int)o->reps, &r->answer, &pr) != CLARA_OK)
        rc = fail("%s", clara_last_error());
    clara_ctx_backend(ctx, &st->device); /* the bytes in use after the runs */
    clara_ctx_free(ctx);
    if (rc == 0) st->n_res++;
    return rc;
}

static int report(const bench_state *st) {
    const bench_opts *o = st->o;
    char model[8300];
    if (o->model)
        snprintf(model, sizeof model, "%s", o->model);
    else
        snprintf(model, sizeof model, "%s + %s", o->base, o->clara);
    clara_backend_info backend;
    clara_backend_describe(&backend);
    bench_report r = {model,       backend.isa,   &backend, &st->mi,   &st->docs,  ANSWER_DOCS,
                      st->machine, st->n_machine, st->res,  st->n_res, &st->device};
    if (!o->json) {
        bench_report_table(stdout, &r);
        return 0;
    }
    return bench_report_json(stdout, &r) == CLARA_OK ? 0 : fail("%s", clara_last_error());
}

static int run_bench(const bench_opts *o) {
    bench_state *st = calloc(1, sizeof *st);
    if (!st) return fail("out of memory");
    st->o = o;
    int rc = prepare(st);
    if (rc == 0 && !o->no_roofline) {
        note(o, "measuring the machine's limits");
        if (bench_roofline_measure(o->threads, o->n_threads, st->machine) != CLARA_OK)
            rc = fail("%s", clara_last_error());
        st->n_machine = o->n_threads;
    }
    for (size_t i = 0; i < o->n_threads && rc == 0; i++) rc = run_threads(st, o->threads[i]);
    if (rc == 0) rc = report(st);
    bench_docs_free(&st->docs);
    clara_model_free(st->model);
    free(st);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    bench_opts o = {.seed = 1,
                    .reps = 3,
                    .gen_tokens = 32,
                    .doc_tokens = 256,
                    .parts = BENCH_PART_COMPRESS | BENCH_PART_ANSWER};
    o.threads[0] = clara_physical_cores();
    o.n_threads = 1;
    const uint32_t batches[] = {1, 4, 16};
    memcpy(o.batches, batches, sizeof batches);
    o.n_batches = 3;
    int rc = parse_opts(argc, argv, &o);
    if (rc != 0) return rc < 0 ? 0 : rc;
    return o.generate ? run_generate(&o) : run_bench(&o);
}
