/* cmd_engine.c - the model commands: compress, ask, retrieve, paraphrase. They share one option
 * parser; output is human-readable by default and JSON with --json (shapes in README.md). */
#include <cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json_text.h"
#include "base/log.h"
#include "base/mapfile.h"
#include "cli.h"
#include "clara.h"

typedef struct {
    const char *cmd, *model, *base, *clara, *query, *docs_file;
    int threads, json, dump_logits, max_new_tokens, top_k, template_index, chunk;
    double temperature, top_p; /* sampling (0: greedy, the reference) */
    int sample_top_k;
    unsigned long long seed;
    clara_adapter_policy policy;
    clara_text *docs;
    size_t n_docs, cap_docs;
    clara_text *queries; /* compress: every --query, compressed with the query reasoner */
    size_t n_queries;
    char *docs_file_text;
    /* long documents: --chunk splits them (chunk i is of document chunk_of[i]); otherwise those
     * the encoder cuts are listed in cut[] and reported */
    clara_text *chunk_docs;
    uint32_t *chunk_of, *cut;
    size_t n_cut;
    cli_backend backend;  /* --backend, --gpu-layers */
    const clara_ctx *ctx; /* for the backend and device of --json */
} engine_opts;

static void engine_usage(FILE *out, const char *cmd) {
    fprintf(
        out,
        "usage: clara %s (--model FILE | --base FILE --clara FILE) [--doc TEXT ...]\n"
        "          [--docs-file FILE.jsonl]%s\n"
        "          [--threads N] [--backend B] [--gpu-layers N]\n"
        "          [--adapter-policy hf|all] [--json]\n"
        "\n"
        "  --model FILE          a GGUF written by `clara convert`, or the name of a model\n"
        "                        pulled with `clara pull` "
        "(apple/CLaRa-7B-Instruct:compression-16)\n"
        "  --base F --clara F    two-file mode: any GGUF of the base model (llama.cpp layout)\n"
        "                        and an add-on from `clara convert --addon-only`\n"
        "  --doc TEXT            a document (repeat for several)\n"
        "  --docs-file FILE      documents, one per line: a JSON string or {\"text\": ...}\n"
        "  --threads N           worker threads (default: physical cores)\n" CLI_BACKEND_HELP
        "  --adapter-policy P    hf (default: as AutoModel.from_pretrained) or all\n"
        "                        (pure_inference: every adapter in the file)\n"
        "  --chunk               read documents longer than the model's doc_max_length\n"
        "                        tokens in chunks (default: cut them, as the reference\n"
        "                        does, and say so)\n"
        "  --json                machine-readable output\n"
        "%s"
        "%s",
        cmd,
        strcmp(cmd, "compress") == 0     ? "\n          [--query TEXT ...]"
        : strcmp(cmd, "paraphrase") == 0 ? "\n          [--template 0..12] [--max-new-tokens N]"
        : strcmp(cmd, "retrieve") == 0 ? "\n          --query TEXT [--top-k K] [--max-new-tokens N]"
                                       : "\n          --query TEXT [--max-new-tokens N]",
        strcmp(cmd, "compress") == 0
            ? "  --query TEXT          (repeatable) also compress TEXT as an E2E retrieval query\n"
              "                        (query-reasoner adapter): the vectors /v1/retrieve ranks\n"
              "                        documents with (cosine similarity); no --doc needed\n"
            : "",
        strcmp(cmd, "compress") == 0
            ? ""
            : "  --temperature T       sample at temperature T (default 0: greedy, the\n"
              "                        reference's answer); with --top-p P, --sample-top-k K\n"
              "  --seed N              the sampler's seed (default 0): the same seed, the same\n"
              "                        answer\n");
}

static int add_doc(engine_opts *o, const char *text, size_t len) {
    if (o->n_docs == o->cap_docs) {
        size_t cap = o->cap_docs ? o->cap_docs * 2 : 8;
        clara_text *d = realloc(o->docs, cap * sizeof *d);
        if (!d) return -1;
        o->docs = d;
        o->cap_docs = cap;
    }
    o->docs[o->n_docs].text = text;
    o->docs[o->n_docs].len = len;
    o->n_docs++;
    return 0;
}

/* Parses FILE.jsonl in place: each non-empty line holds a JSON string or an object with "text". */
static int read_docs_file(engine_opts *o) {
    size_t len;
    if (clara_read_file(o->docs_file, (size_t)1 << 30, &o->docs_file_text, &len) != CLARA_OK) {
        fprintf(stderr, "clara %s: error: %s\n", o->cmd, clara_last_error());
        return -1;
    }
    char *p = o->docs_file_text;
    for (size_t line = 1; p && *p; line++) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        if (strspn(p, " \t\r") != strlen(p)) {
            cJSON *j = cJSON_Parse(p);
            cJSON *t = cJSON_IsString(j) ? j : cJSON_GetObjectItemCaseSensitive(j, "text");
            if (!cJSON_IsString(t)) {
                fprintf(stderr,
                        "clara %s: error: %s:%zu: expected a JSON string or an object "
                        "with a \"text\" string\n",
                        o->cmd, o->docs_file, line);
                cJSON_Delete(j);
                return -1;
            }
            /* the decoded text is never longer than the JSON line: copy it over the line */
            size_t n = strlen(t->valuestring);
            memcpy(p, t->valuestring, n + 1);
            cJSON_Delete(j);
            if (add_doc(o, p, n) != 0) return -1;
        }
        p = nl ? nl + 1 : NULL;
    }
    return 0;
}

static int parse_int(const char *cmd, const char *opt, const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "clara %s: %s must be an integer in [%d, %d], not '%s'\n", cmd, opt, lo, hi,
                s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_real(const char *cmd, const char *opt, const char *s, double lo, double hi,
                      double *out) {
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= lo && v <= hi)) {
        fprintf(stderr, "clara %s: %s must be a number in [%g, %g], not '%s'\n", cmd, opt, lo, hi,
                s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_seed(const char *cmd, const char *s, unsigned long long *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *s == '-' || *end != '\0' || errno) {
        fprintf(stderr, "clara %s: --seed must be an integer in [0, 2^64), not '%s'\n", cmd, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Returns 0 to run, -1 after printing --help, 2 on a usage error. */
static int parse_opts(int argc, char **argv, engine_opts *o) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"doc", required_argument, 0, 'd'},
        {"docs-file", required_argument, 0, 'f'},
        {"query", required_argument, 0, 'q'},
        {"threads", required_argument, 0, 't'},
        {"max-new-tokens", required_argument, 0, 'n'},
        {"top-k", required_argument, 0, 'k'},
        {"template", required_argument, 0, 'T'},
        {"adapter-policy", required_argument, 0, 'p'},
        {"json", no_argument, 0, 'j'},
        {"chunk", no_argument, 0, 'K'},
        {"dump-logits", no_argument, 0, 'L'},
        {"help", no_argument, 0, 'h'},
        {"base", required_argument, 0, 'B'},
        {"clara", required_argument, 0, 'C'},
        {"temperature", required_argument, 0, 'E'},
        {"top-p", required_argument, 0, 'P'},
        {"sample-top-k", required_argument, 0, 'S'},
        {"seed", required_argument, 0, 'D'},
        {"backend", required_argument, 0, 'G'},
        {"gpu-layers", required_argument, 0, 'Y'},
        {0, 0, 0, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'm':
            o->model = optarg;
            break;
        case 'B':
            o->base = optarg;
            break;
        case 'C':
            o->clara = optarg;
            break;
        case 'd':
            if (add_doc(o, optarg, strlen(optarg)) != 0) return 2;
            break;
        case 'f':
            o->docs_file = optarg;
            break;
        case 'q':
            o->query = optarg;
            if (strcmp(o->cmd, "compress") == 0) {
                clara_text *q = realloc(o->queries, (o->n_queries + 1) * sizeof *q);
                if (!q) return 2;
                o->queries = q;
                o->queries[o->n_queries++] = (clara_text){optarg, strlen(optarg)};
            }
            break;
        case 't':
            if (parse_int(o->cmd, "--threads", optarg, 1, 1024, &o->threads)) return 2;
            break;
        case 'n':
            if (parse_int(o->cmd, "--max-new-tokens", optarg, 0, 1 << 20, &o->max_new_tokens))
                return 2;
            break;
        case 'k':
            if (parse_int(o->cmd, "--top-k", optarg, 1, 1 << 20, &o->top_k)) return 2;
            break;
        case 'T':
            if (parse_int(o->cmd, "--template", optarg, 0, 12, &o->template_index)) return 2;
            break;
        case 'E':
            if (parse_real(o->cmd, "--temperature", optarg, 0, 100, &o->temperature)) return 2;
            break;
        case 'P':
            if (parse_real(o->cmd, "--top-p", optarg, 0, 1, &o->top_p)) return 2;
            break;
        case 'S':
            if (parse_int(o->cmd, "--sample-top-k", optarg, 0, 1 << 20, &o->sample_top_k)) return 2;
            break;
        case 'D':
            if (parse_seed(o->cmd, optarg, &o->seed)) return 2;
            break;
        case 'p':
            if (strcmp(optarg, "hf") == 0)
                o->policy = CLARA_ADAPTER_POLICY_HF;
            else if (strcmp(optarg, "all") == 0)
                o->policy = CLARA_ADAPTER_POLICY_ALL;
            else {
                fprintf(stderr, "clara %s: --adapter-policy must be hf or all\n", o->cmd);
                return 2;
            }
            break;
        case 'j':
            o->json = 1;
            break;
        case 'G':
        case 'Y':
            if (cli_backend_opt(o->cmd, &o->backend, ch == 'Y', optarg)) return 2;
            break;
        case 'K':
            o->chunk = 1;
            break;
        case 'L':
            o->dump_logits = 1;
            break;
        case 'h':
            engine_usage(stdout, o->cmd);
            return -1;
        default:
            engine_usage(stderr, o->cmd);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "clara %s: unexpected argument '%s'\n", o->cmd, argv[optind]);
        return 2;
    }
    if (!o->model == !(o->base && o->clara) || (!o->base != !o->clara)) {
        fprintf(stderr, "clara %s: give --model FILE, or --base FILE with --clara FILE\n", o->cmd);
        return 2;
    }
    return 0;
}

static void print_json(cJSON *root) {
    char *s = cJSON_PrintUnformatted(root);
    if (s) puts(s);
    free(s);
}

static cJSON *float_array(const float *v, size_t n) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i]));
    return a;
}

static cJSON *int_array(const int32_t *v, size_t n) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

/* {"vectors": [[n_embd floats] x n_mem]} items of a JSON array, one per text. */
static void add_vector_items(cJSON *arr, const clara_model *m, const float *vec, size_t n,
                             const uint32_t *ntok) {
    size_t H = clara_model_n_embd(m), per = (size_t)clara_model_n_mem(m) * H;
    for (size_t i = 0; i < n; i++) {
        cJSON *d = cJSON_CreateObject(), *vs = cJSON_AddArrayToObject(d, "vectors");
        if (ntok) cJSON_AddNumberToObject(d, "n_tokens", ntok[i]);
        for (uint32_t j = 0; j < clara_model_n_mem(m); j++)
            cJSON_AddItemToArray(vs, float_array(vec + i * per + (size_t)j * H, H));
        cJSON_AddItemToArray(arr, d);
    }
}

static void print_vectors(const char *what, const clara_model *m, const float *vec, size_t n,
                          const uint32_t *ntok) {
    size_t per = (size_t)clara_model_n_mem(m) * clara_model_n_embd(m);
    for (size_t i = 0; i < n; i++) {
        printf("%s %zu: ", what, i);
        if (ntok) printf("%u tokens -> ", ntok[i]);
        printf("%u vectors of %u (first values %.6f %.6f %.6f)\n", clara_model_n_mem(m),
               clara_model_n_embd(m), vec[i * per], vec[i * per + 1], vec[i * per + 2]);
    }
}

/* --chunk: the documents become their chunks. Otherwise: which documents the encoder cuts, said
 * on stderr (and in --json output as cut_documents). Returns 0, or 1 after an error message. */
static int prepare_docs(const clara_model *m, engine_opts *o) {
    uint32_t limit = clara_model_doc_max_length(m);
    size_t n = 0, cap = o->n_docs + 1;
    if (!o->chunk) {
        o->cut = malloc(cap * sizeof *o->cut);
        for (size_t i = 0; o->cut && i < o->n_docs; i++) {
            uint32_t t = 0;
            if (clara_count_tokens(m, o->docs[i].text, o->docs[i].len, &t) != CLARA_OK ||
                t <= limit)
                continue;
            o->cut[o->n_cut++] = (uint32_t)i;
            fprintf(stderr,
                    "clara %s: document %zu has %u tokens; the encoder reads its first %u "
                    "(--chunk reads it whole, in chunks)\n",
                    o->cmd, i, t, limit);
        }
        return 0;
    }
    o->chunk_docs = malloc(cap * sizeof *o->chunk_docs);
    o->chunk_of = malloc(cap * sizeof *o->chunk_of);
    for (size_t i = 0; o->chunk_docs && o->chunk_of && i < o->n_docs; i++) {
        clara_chunk *c = NULL;
        size_t k = 0;
        if (clara_split_text(m, o->docs[i].text, o->docs[i].len, 0, 4096, &c, &k) != CLARA_OK) {
            fprintf(stderr, "clara %s: error: document %zu: %s\n", o->cmd, i, clara_last_error());
            return 1;
        }
        if (k == 0 && (c = realloc(c, sizeof *c))) { /* an empty document stays one document */
            c[0] = (clara_chunk){0, o->docs[i].len, 0};
            k = 1;
        }
        if (n + k > cap) {
            cap = (n + k) * 2;
            clara_text *d = realloc(o->chunk_docs, cap * sizeof *d);
            uint32_t *f = d ? realloc(o->chunk_of, cap * sizeof *f) : NULL;
            if (d) o->chunk_docs = d;
            if (f) o->chunk_of = f;
            if (!d || !f) k = 0, o->n_docs = i; /* out of memory: stop */
        }
        for (size_t j = 0; j < k; j++, n++) {
            o->chunk_docs[n] = (clara_text){o->docs[i].text + c[j].start, c[j].len};
            o->chunk_of[n] = (uint32_t)i;
        }
        free(c);
    }
    if (!o->chunk_docs || !o->chunk_of) {
        fprintf(stderr, "clara %s: error: out of memory\n", o->cmd);
        return 1;
    }
    o->docs = o->chunk_docs; /* run_engine keeps and frees the array given */
    o->n_docs = n;
    return 0;
}

/* cut_documents or chunk_of, as the server's replies carry them. */
static void add_chunking(cJSON *root, const engine_opts *o) {
    cJSON *a = cJSON_AddArrayToObject(root, o->chunk ? "chunk_of" : "cut_documents");
    size_t n = o->chunk ? o->n_docs : o->n_cut;
    for (size_t i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(o->chunk ? o->chunk_of[i] : o->cut[i]));
}

static int run_compress(clara_ctx *ctx, clara_model *m, engine_opts *o) {
    size_t per = (size_t)clara_model_n_mem(m) * clara_model_n_embd(m);
    float *vec = malloc(o->n_docs * per * sizeof(float) + 1);
    float *qvec = malloc(o->n_queries * per * sizeof(float) + 1);
    uint32_t *ntok = malloc(o->n_docs * sizeof(uint32_t) + 1);
    int rc = 0;
    if (!vec || !qvec || !ntok || clara_compress(ctx, o->docs, o->n_docs, vec, ntok) != CLARA_OK ||
        (o->n_queries && clara_compress_queries(ctx, o->queries, o->n_queries, qvec) != CLARA_OK)) {
        fprintf(stderr, "clara compress: error: %s\n",
                vec && qvec && ntok ? clara_last_error() : "out of memory");
        rc = 1;
    } else if (o->json) {
        cJSON *root = cJSON_CreateObject();
        add_vector_items(cJSON_AddArrayToObject(root, "docs"), m, vec, o->n_docs, ntok);
        if (o->n_queries)
            add_vector_items(cJSON_AddArrayToObject(root, "queries"), m, qvec, o->n_queries, NULL);
        add_chunking(root, o);
        cli_backend_json(root, o->ctx);
        print_json(root);
        cJSON_Delete(root);
    } else {
        print_vectors("document", m, vec, o->n_docs, ntok);
        print_vectors("query", m, qvec, o->n_queries, NULL);
    }
    free(vec);
    free(qvec);
    free(ntok);
    return rc;
}

static void print_gen(const engine_opts *o, const clara_model *m, const clara_gen_result *r,
                      const float *first_logits, clara_task task) {
    if (!o->json) {
        fwrite(r->text, 1, r->text_len, stdout); /* with any NUL byte it holds */
        putchar('\n');
        fflush(stdout);
        if (task == CLARA_TASK_RETRIEVE) {
            fprintf(stderr, "top-k:");
            for (size_t i = 0; i < r->k; i++)
                fprintf(stderr, " %u (%.4f)", r->top_k[i], r->scores[r->top_k[i]]);
            fputc('\n', stderr);
        }
        fprintf(
            stderr,
            "%u prompt tokens, %zu generated; compress %.0f ms, prefill %.0f ms, decode %.0f ms "
            "(%.2f tokens/s)\n",
            r->prompt_tokens, r->n_ids, r->compress_ms, r->prefill_ms, r->decode_ms,
            r->n_ids > 1 && r->decode_ms > 0 ? (double)(r->n_ids - 1) * 1e3 / r->decode_ms : 0.0);
        return;
    }
    cJSON *root = cJSON_CreateObject();
    json_add_text(root, task == CLARA_TASK_PARAPHRASE ? "text" : "answer", r->text, r->text_len);
    cJSON_AddItemToObject(root, "ids", int_array(r->ids, r->n_ids));
    cJSON_AddNumberToObject(root, "prompt_tokens", r->prompt_tokens);
    if (task == CLARA_TASK_RETRIEVE) {
        cJSON *tk = cJSON_AddArrayToObject(root, "top_k");
        for (size_t i = 0; i < r->k; i++) cJSON_AddItemToArray(tk, cJSON_CreateNumber(r->top_k[i]));
        cJSON_AddItemToObject(root, "scores", float_array(r->scores, r->n_scores));
    }
    if (o->n_docs || o->n_cut) add_chunking(root, o);
    cJSON *tm = cJSON_AddObjectToObject(root, "timings");
    cJSON_AddNumberToObject(tm, "compress_ms", r->compress_ms);
    cJSON_AddNumberToObject(tm, "prefill_ms", r->prefill_ms);
    cJSON_AddNumberToObject(tm, "decode_ms", r->decode_ms);
    if (o->dump_logits) {
        if (first_logits)
            cJSON_AddItemToObject(root, "first_logits",
                                  float_array(first_logits, clara_model_n_vocab(m)));
        cJSON_AddItemToObject(root, "top2_gaps", float_array(r->top2_gaps, r->n_ids));
    }
    cli_backend_json(root, o->ctx);
    print_json(root);
    cJSON_Delete(root);
}

static int run_generate(clara_ctx *ctx, clara_model *m, engine_opts *o, clara_task task) {
    clara_gen_params p = clara_gen_default_params();
    p.task = task;
    p.query = o->query;
    p.query_len = o->query ? strlen(o->query) : 0;
    p.docs = o->docs;
    p.n_docs = o->n_docs;
    if (o->max_new_tokens >= 0) p.max_new_tokens = (uint32_t)o->max_new_tokens;
    p.top_k = (uint32_t)o->top_k;
    /* fewer documents than the model picks: all of them are used, as /v1/retrieve does */
    uint32_t k = p.top_k ? p.top_k : clara_model_generation_top_k(m);
    if (task == CLARA_TASK_RETRIEVE && o->n_docs && k > o->n_docs) {
        fprintf(stderr,
                "clara %s: note: top_k is %u but only %zu documents were given: all of them "
                "are used\n",
                o->cmd, k, o->n_docs);
        p.top_k = (uint32_t)o->n_docs;
    }
    p.paraphrase_template = o->template_index;
    p.temperature = (float)o->temperature;
    p.top_p = (float)o->top_p;
    p.sample_top_k = (uint32_t)o->sample_top_k;
    p.seed = o->seed;
    float *logits = o->dump_logits ? malloc(clara_model_n_vocab(m) * sizeof(float)) : NULL;
    p.first_logits = logits;
    clara_gen_result r;
    if (clara_generate(ctx, &p, &r) != CLARA_OK) {
        fprintf(stderr, "clara %s: error: %s\n", o->cmd, clara_last_error());
        free(logits);
        return 1;
    }
    print_gen(o, m, &r, r.n_ids ? logits : NULL, task);
    clara_gen_result_free(&r);
    free(logits);
    return 0;
}

static int run_engine(int argc, char **argv, const char *cmd) {
    engine_opts o;
    memset(&o, 0, sizeof o);
    o.cmd = cmd;
    o.max_new_tokens = -1;
    o.top_p = 1.0;
    int rc = parse_opts(argc, argv, &o);
    if (rc == 0 && o.docs_file && read_docs_file(&o) != 0) rc = 1;
    if (rc == 0 && o.n_docs == 0 && strcmp(cmd, "ask") != 0 && o.n_queries == 0) {
        fprintf(stderr, "clara %s: give at least one --doc or a --docs-file\n", cmd);
        rc = 2;
    }
    if (rc == 0 && strcmp(cmd, "compress") != 0 && strcmp(cmd, "paraphrase") != 0 && !o.query) {
        fprintf(stderr, "clara %s: --query is required\n", cmd);
        rc = 2;
    }
    clara_model *m = NULL;
    clara_ctx *ctx = NULL;
    if (rc == 0) {
        clara_model_params mp = clara_model_default_params();
        mp.adapter_policy = o.policy;
        clara_ctx_params cp = clara_ctx_default_params();
        cp.n_threads = o.threads;
        rc = cli_backend_apply(cmd, &o.backend, &cp);
        clara_status ls = rc ? CLARA_OK : cli_load_model(o.model, o.base, o.clara, &mp, &m);
        if (rc == 0 && (ls != CLARA_OK || clara_ctx_create(m, &cp, &ctx) != CLARA_OK)) {
            fprintf(stderr, "clara %s: error: %s\n", cmd, clara_last_error());
            rc = 1;
        }
        o.ctx = ctx;
    }
    clara_text *given = o.docs; /* --chunk replaces o.docs with the chunks */
    if (rc == 0) rc = prepare_docs(m, &o);
    if (rc == 0) {
        if (strcmp(cmd, "compress") == 0)
            rc = run_compress(ctx, m, &o);
        else if (strcmp(cmd, "ask") == 0)
            rc = run_generate(ctx, m, &o, CLARA_TASK_ANSWER);
        else if (strcmp(cmd, "retrieve") == 0)
            rc = run_generate(ctx, m, &o, CLARA_TASK_RETRIEVE);
        else
            rc = run_generate(ctx, m, &o, CLARA_TASK_PARAPHRASE);
    }
    clara_ctx_free(ctx);
    clara_model_free(m);
    free(given);
    free(o.chunk_docs);
    free(o.chunk_of);
    free(o.cut);
    free(o.queries);
    free(o.docs_file_text);
    return rc < 0 ? 0 : rc;
}

int cmd_compress(int argc, char **argv) {
    return run_engine(argc, argv, "compress");
}
int cmd_ask(int argc, char **argv) {
    return run_engine(argc, argv, "ask");
}
int cmd_retrieve(int argc, char **argv) {
    return run_engine(argc, argv, "retrieve");
}
int cmd_paraphrase(int argc, char **argv) {
    return run_engine(argc, argv, "paraphrase");
}
