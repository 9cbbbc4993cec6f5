/* cmd_memory.c - `clara memory`: the memory store from the command line, on the same database
 * the server uses (SQLite file or PostgreSQL, --db / CLARA_DB):
 *
 *   add      split a text into chunks, compress them and store the memory
 *   list     a collection's memories (paged), or the collections
 *   get      one memory
 *   rm       one memory, or a whole collection
 *   query    answer a question from a collection (as POST /v1/collections/{c}/query does)
 *   reindex  make vectors for every chunk that has none under the given model
 *   export   JSON lines with the vectors (backups; SQLite <-> PostgreSQL)
 *   import   such lines back */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "base/json_text.h"
#include "cli.h"
#include "clara.h"
#include "store/store.h"

typedef struct {
    const char *sub, *db, *model, *base, *clara, *collection, *id, *text, *file, *metadata;
    const char *query, *filter, *out, *in, *after, *dtype;
    int threads, top_k, max_new_tokens, limit, all, json, skip_existing;
    char *db_owned;
    cli_backend backend; /* --backend, --gpu-layers */
} mem_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: clara memory <command> [options]\n\n"
            "  add      --collection C (--text T | --file F) [--id ID] [--metadata JSON]\n"
            "           [--dtype f16|f32] MODEL\n"
            "  list     [--collection C [--limit N] [--after CURSOR]]   (no C: the collections)\n"
            "  get      --collection C --id ID\n"
            "  rm       --collection C (--id ID | --all)\n"
            "  query    --collection C --query Q [--top-k K] [--max-new-tokens N]\n"
            "           [--filter JSON] MODEL\n"
            "  reindex  [--collection C] MODEL\n"
            "  export   [--collection C] [--out FILE]      (default: standard output)\n"
            "  import   [--in FILE] [--skip-existing]      (default: standard input)\n\n"
            "  MODEL    --model M.gguf | --base B.gguf --clara C.gguf  [--threads N]\n"
            "           [--backend auto|cpu|vulkan|cuda|mps] [--gpu-layers N]  (as for\n"
            "           `clara ask`; CLARA_BACKEND, CLARA_GPU_LAYERS)\n"
            "  --db FILE|URL  the store: a SQLite file or postgresql://... (default $CLARA_DB,\n"
            "                 else $XDG_DATA_HOME/clara-server/memories.db)\n"
            "  --json   print JSON (add, list, get, query)\n\n"
            "A memory longer than the model's doc_max_length tokens is stored as several chunks\n"
            "(nothing is cut). Vectors are stored under the model's fingerprint: `query` with\n"
            "another model compresses the chunks it has no vectors for first; `reindex` does\n"
            "that for the whole store at once.\n");
}

static int fail(const mem_opts *o, const char *msg) {
    fprintf(stderr, "clara memory %s: error: %s\n", o->sub ? o->sub : "", msg);
    return 1;
}

static int parse(int argc, char **argv, mem_opts *o) {
    static const struct option opts[] = {{"db", required_argument, 0, 'd'},
                                         {"model", required_argument, 0, 'm'},
                                         {"base", required_argument, 0, 'B'},
                                         {"clara", required_argument, 0, 'C'},
                                         {"collection", required_argument, 0, 'c'},
                                         {"id", required_argument, 0, 'i'},
                                         {"text", required_argument, 0, 't'},
                                         {"file", required_argument, 0, 'f'},
                                         {"metadata", required_argument, 0, 'M'},
                                         {"query", required_argument, 0, 'q'},
                                         {"filter", required_argument, 0, 'F'},
                                         {"out", required_argument, 0, 'o'},
                                         {"in", required_argument, 0, 'I'},
                                         {"after", required_argument, 0, 'a'},
                                         {"dtype", required_argument, 0, 'D'},
                                         {"threads", required_argument, 0, 'T'},
                                         {"top-k", required_argument, 0, 'k'},
                                         {"max-new-tokens", required_argument, 0, 'n'},
                                         {"limit", required_argument, 0, 'l'},
                                         {"all", no_argument, 0, 'A'},
                                         {"json", no_argument, 0, 'j'},
                                         {"backend", required_argument, 0, 'G'},
                                         {"gpu-layers", required_argument, 0, 'Y'},
                                         {"skip-existing", no_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            o->db = optarg;
            break;
        case 'm':
            o->model = optarg;
            break;
        case 'B':
            o->base = optarg;
            break;
        case 'C':
            o->clara = optarg;
            break;
        case 'c':
            o->collection = optarg;
            break;
        case 'i':
            o->id = optarg;
            break;
        case 't':
            o->text = optarg;
            break;
        case 'f':
            o->file = optarg;
            break;
        case 'M':
            o->metadata = optarg;
            break;
        case 'q':
            o->query = optarg;
            break;
        case 'F':
            o->filter = optarg;
            break;
        case 'o':
            o->out = optarg;
            break;
        case 'I':
            o->in = optarg;
            break;
        case 'a':
            o->after = optarg;
            break;
        case 'D':
            o->dtype = optarg;
            break;
        case 'T':
            o->threads = atoi(optarg);
            break;
        case 'G':
        case 'Y':
            if (cli_backend_opt("memory", &o->backend, c == 'Y', optarg)) return 2;
            break;
        case 'k':
            o->top_k = atoi(optarg);
            break;
        case 'n':
            o->max_new_tokens = atoi(optarg);
            break;
        case 'l':
            o->limit = atoi(optarg);
            break;
        case 'A':
            o->all = 1;
            break;
        case 'j':
            o->json = 1;
            break;
        case 's':
            o->skip_existing = 1;
            break;
        case 'h':
            usage(stdout);
            return -1;
        default:
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "clara memory %s: unexpected argument '%s'\n", o->sub, argv[optind]);
        return 2;
    }
    if (!o->db) o->db = getenv("CLARA_DB");
    if (!o->db || !*o->db) o->db = o->db_owned = store_default_path();
    if (!o->db) {
        fprintf(stderr, "clara memory: error: no --db and neither CLARA_DB, XDG_DATA_HOME nor "
                        "HOME is set\n");
        return 2;
    }
    return 0;
}

/* ---- model ---------------------------------------------------------------------------------- */

typedef struct {
    clara_model *m;
    clara_ctx *ctx;
    char fp[CLARA_FINGERPRINT_LEN + 1];
    store_model sm;
} engine;

static int load_engine(const mem_opts *o, engine *e) {
    if (!o->model && !(o->base && o->clara))
        return fail(o, "give the model: --model M.gguf, or --base B.gguf --clara C.gguf");
    clara_model_params mp = clara_model_default_params();
    clara_ctx_params cp = clara_ctx_default_params();
    cp.n_threads = o->threads;
    if (cli_backend_apply("memory", &o->backend, &cp)) return 2;
    clara_status s = o->model ? clara_model_load(o->model, &mp, &e->m)
                              : clara_model_load_pair(o->base, o->clara, &mp, &e->m);
    if (s == CLARA_OK) s = clara_ctx_create(e->m, &cp, &e->ctx);
    if (s == CLARA_OK) s = clara_model_fingerprint(e->m, e->fp);
    if (s != CLARA_OK) return fail(o, clara_last_error());
    const char *name = o->model ? o->model : o->clara;
    e->sm = (store_model){e->fp, strrchr(name, '/') ? strrchr(name, '/') + 1 : name,
                          clara_model_n_mem(e->m), clara_model_n_embd(e->m)};
    return 0;
}

static void free_engine(engine *e) {
    clara_ctx_free(e->ctx);
    clara_model_free(e->m);
}

static store_code compress_direct(void *arg, const clara_text *texts, size_t n, float *vectors,
                                  store_err *err) {
    engine *e = arg;
    if (clara_compress(e->ctx, texts, n, vectors, NULL) != CLARA_OK)
        return store_fail(err, STORE_INVALID, "%s", clara_last_error());
    return STORE_OK;
}

static void progress(void *arg, int64_t done, int64_t total) {
    (void)arg;
    fprintf(stderr, "\rcompressing chunks: %lld / %lld", (long long)done, (long long)total);
    if (done >= total) fprintf(stderr, "\n");
}

/* ---- commands ---------------------------------------------------------------------------- */

static char *read_file(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    size_t k;
    while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            char *p = realloc(buf, (cap *= 2) + 1);
            if (!p) free(buf);
            buf = p;
        }
    }
    if (f != stdin) fclose(f);
    if (buf) buf[n] = 0;
    *len = n;
    return buf;
}

static int run_add(const mem_opts *o, store *st) {
    if (!o->collection || (!o->text == !o->file))
        return fail(o, "add needs --collection C and one of --text T or --file F");
    size_t len = 0;
    char *owned = o->file ? read_file(o->file, &len) : NULL;
    if (o->file && !owned) return fail(o, "cannot read --file");
    const char *text = owned ? owned : o->text;
    if (!owned) len = strlen(text);
    engine e = {0};
    clara_chunk *chunks = NULL;
    size_t n = 0;
    float *v = NULL;
    int rc = load_engine(o, &e);
    if (rc == 0 && clara_split_text(e.m, text, len, 0, STORE_MAX_CHUNKS, &chunks, &n) != CLARA_OK)
        rc = fail(o, clara_last_error());
    if (rc == 0 && n == 0) rc = fail(o, "the text is empty");
    size_t per = (size_t)e.sm.n_mem * e.sm.n_embd;
    clara_text *docs = rc == 0 ? malloc(n * sizeof *docs) : NULL;
    v = rc == 0 ? malloc(n * per * sizeof *v) : NULL;
    if (rc == 0 && (!docs || !v)) rc = fail(o, "out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++)
        docs[i] = (clara_text){text + chunks[i].start, chunks[i].len};
    if (rc == 0 && n > 1) fprintf(stderr, "compressing %zu chunks...\n", n);
    if (rc == 0 && clara_compress(e.ctx, docs, n, v, NULL) != CLARA_OK)
        rc = fail(o, clara_last_error());
    char id[1][STORE_NAME_MAX + 1];
    store_err err = {0};
    store_memory_in in = {o->id, text, len, o->metadata, chunks, n, v, 0, 0};
    store_dtype dt = o->dtype && strcmp(o->dtype, "f32") == 0 ? STORE_F32 : STORE_F16;
    if (rc == 0 && store_add(st, o->collection, true, &e.sm, dt, &in, 1, id, &err) != STORE_OK)
        rc = fail(o, err.msg);
    if (rc == 0) {
        if (o->json)
            printf("{\"id\":\"%s\",\"chunks\":%zu}\n", id[0], n);
        else
            printf("added %s to %s (%zu chunk%s)\n", id[0], o->collection, n, n == 1 ? "" : "s");
    }
    free(docs);
    free(v);
    free(chunks);
    free(owned);
    free_engine(&e);
    return rc;
}

/* One JSON value on a line of its own (freed). */
static void print_json(cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    if (s) puts(s);
    free(s);
    cJSON_Delete(j);
}

static void print_memory(const mem_opts *o, const store_memory *m) {
    if (o->json) {
        print_json(store_memory_json(m));
    } else {
        printf("%s\t%u chunk%s\t%.70s%s\n", m->id, m->n_chunks, m->n_chunks == 1 ? "" : "s",
               m->text, m->text_len > 70 ? "..." : "");
    }
}

static int run_list(const mem_opts *o, store *st) {
    store_err err = {0};
    if (!o->collection) {
        store_collection *c = NULL;
        size_t n = 0;
        if (store_collections(st, &c, &n, &err) != STORE_OK) return fail(o, err.msg);
        for (size_t i = 0; i < n; i++) {
            if (o->json)
                print_json(store_collection_json(&c[i]));
            else
                printf("%s\t%lld memories\t%lld chunks\n", c[i].name, (long long)c[i].n_memories,
                       (long long)c[i].n_chunks);
        }
        store_collections_free(c, n);
        return 0;
    }
    store_memory *m = NULL;
    size_t n = 0;
    int64_t next = 0;
    if (store_list(st, o->collection, o->after ? atoll(o->after) : 0,
                   o->limit > 0 ? (size_t)o->limit : 100, &m, &n, &next, &err) != STORE_OK)
        return fail(o, err.msg);
    for (size_t i = 0; i < n; i++) {
        print_memory(o, &m[i]);
        store_memory_free(&m[i]);
    }
    free(m);
    if (next) fprintf(stderr, "more: --after %lld\n", (long long)next);
    return 0;
}

static int run_get(const mem_opts *o, store *st) {
    if (!o->collection || !o->id) return fail(o, "get needs --collection C --id ID");
    store_memory m;
    store_err err = {0};
    if (store_get(st, o->collection, o->id, &m, &err) != STORE_OK) return fail(o, err.msg);
    if (o->json)
        print_memory(o, &m);
    else
        printf("%s\n", m.text);
    store_memory_free(&m);
    return 0;
}

static int run_rm(const mem_opts *o, store *st) {
    store_err err = {0};
    if (!o->collection || !o->id == !o->all)
        return fail(o, "rm needs --collection C and one of --id ID or --all");
    int64_t n = 1;
    store_code rc = o->all ? store_delete_collection(st, o->collection, &n, &err)
                           : store_delete_memory(st, o->collection, o->id, &err);
    if (rc != STORE_OK) return fail(o, err.msg);
    printf("deleted %lld memor%s\n", (long long)n, n == 1 ? "y" : "ies");
    return 0;
}

static int run_reindex(const mem_opts *o, store *st, const char *coll, engine *e) {
    int64_t done = 0;
    store_err err = {0};
    store_dtype dt = o->dtype && strcmp(o->dtype, "f32") == 0 ? STORE_F32 : STORE_F16;
    if (store_catch_up(st, coll, &e->sm, dt, 16, compress_direct, e, progress, &done, &err) !=
        STORE_OK)
        return fail(o, err.msg);
    if (done || strcmp(o->sub, "reindex") == 0)
        fprintf(stderr, "%lld chunk(s) compressed for model %.12s\n", (long long)done, e->fp);
    return 0;
}

/* query --json: the answer and the selection, as the server's query reply names them. */
static void print_query_json(const engine *e, const store_selection *sel,
                             const clara_gen_result *res) {
    cJSON *j = cJSON_CreateObject();
    json_add_text(j, "answer", res->text, res->text_len);
    store_selection_add_json(j, sel);
    cJSON_AddStringToObject(j, "model", e->fp);
    cJSON_AddNumberToObject(j, "prompt_tokens", res->prompt_tokens);
    cJSON_AddNumberToObject(j, "generated_tokens", (double)res->n_ids);
    cli_backend_json(j, e->ctx);
    print_json(j);
}

static int run_query(const mem_opts *o, store *st) {
    if (!o->collection || !o->query) return fail(o, "query needs --collection C --query Q");
    engine e = {0};
    int rc = load_engine(o, &e);
    if (rc == 0) rc = run_reindex(o, st, o->collection, &e);
    size_t per = (size_t)e.sm.n_mem * e.sm.n_embd;
    float *qv = NULL;
    bool cosine = rc == 0 && clara_model_can_retrieve(e.m);
    if (cosine && (!(qv = malloc(per * sizeof *qv)) ||
                   clara_compress_queries(e.ctx, &(clara_text){o->query, strlen(o->query)}, 1,
                                          qv) != CLARA_OK))
        rc = fail(o, qv ? clara_last_error() : "out of memory");
    uint32_t k = o->top_k > 0 ? (uint32_t)o->top_k : clara_model_generation_top_k(e.m);
    store_query q = {o->collection,
                     &e.sm,
                     cosine ? STORE_SELECT_COSINE : STORE_SELECT_FULLTEXT,
                     qv,
                     o->query,
                     strlen(o->query),
                     k ? k : 5,
                     o->top_k > 0 ? 0 : (1024 - 128) / (e.sm.n_mem + 1),
                     o->filter,
                     true};
    store_selection sel = {0};
    store_err err = {0};
    if (rc == 0 && store_select(st, &q, &sel, &err) != STORE_OK) rc = fail(o, err.msg);
    if (rc == 0 && sel.n == 0) rc = fail(o, "no memory to answer from");
    clara_gen_result res = {0};
    if (rc == 0) {
        clara_gen_params p = clara_gen_default_params();
        p.task = CLARA_TASK_ANSWER;
        p.query = o->query;
        p.query_len = strlen(o->query);
        p.vectors = sel.vectors;
        p.n_docs = sel.n;
        if (o->max_new_tokens > 0) p.max_new_tokens = (uint32_t)o->max_new_tokens;
        if (clara_generate(e.ctx, &p, &res) != CLARA_OK) rc = fail(o, clara_last_error());
    }
    if (rc == 0 && o->json) {
        print_query_json(&e, &sel, &res);
    } else if (rc == 0) {
        fwrite(res.text, 1, res.text_len, stdout); /* with any NUL byte it holds */
        putchar('\n');
        for (size_t i = 0; i < sel.n; i++)
            fprintf(stderr, "  [%s #%u  %s %.4f] %.60s\n", sel.memory_ids[i], sel.chunk_seq[i],
                    sel.method, sel.scores[i], sel.texts[i]);
    }
    clara_gen_result_free(&res);
    store_selection_free(&sel);
    free(qv);
    free_engine(&e);
    return rc;
}

static int write_line(void *arg, const char *line) {
    return fprintf(arg, "%s\n", line) < 0;
}

static int run_export(const mem_opts *o, store *st) {
    FILE *f = o->out ? fopen(o->out, "w") : stdout;
    if (!f) return fail(o, "cannot open --out for writing");
    size_t n = 0;
    store_err err = {0};
    store_code rc = store_export(st, o->collection, write_line, f, &n, &err);
    if (f != stdout && fclose(f) != 0 && rc == STORE_OK)
        rc = store_fail(&err, STORE_IO, "writing %s failed", o->out);
    if (rc != STORE_OK) return fail(o, err.msg);
    fprintf(stderr, "exported %zu memor%s\n", n, n == 1 ? "y" : "ies");
    return 0;
}

static int run_import(const mem_opts *o, store *st) {
    FILE *f = o->in ? fopen(o->in, "r") : stdin;
    if (!f) return fail(o, "cannot open --in");
    char *line = NULL;
    size_t cap = 0, added = 0, skipped = 0, lineno = 0;
    ssize_t len;
    int rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (len == 1 && line[0] == '\n') continue;
        bool skip = false;
        store_err err = {0};
        if (store_import_line(st, line, (size_t)len, o->skip_existing, &skip, &err) != STORE_OK) {
            fprintf(stderr, "clara memory import: error: line %zu: %s\n", lineno, err.msg);
            rc = 1;
        }
        skip ? skipped++ : added++;
    }
    free(line);
    if (f != stdin) fclose(f);
    if (rc) added--; /* the line that failed */
    fprintf(stderr, "imported %zu memor%s%s", added, added == 1 ? "y" : "ies", skipped ? "" : "\n");
    if (skipped) fprintf(stderr, ", skipped %zu already there\n", skipped);
    return rc;
}

int cmd_memory(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    mem_opts o = {0};
    o.sub = argv[1];
    int rc = parse(argc - 1, argv + 1, &o);
    if (rc != 0) {
        free(o.db_owned);
        return rc < 0 ? 0 : rc;
    }
    store_options so = {o.db, 0, strcmp(o.sub, "add") == 0 || strcmp(o.sub, "import") == 0, 0};
    store *st = NULL;
    store_err err = {0};
    if (store_open(&so, &st, &err) != STORE_OK) {
        rc = fail(&o, err.msg);
        free(o.db_owned);
        return rc;
    }
    engine e = {0};
    if (strcmp(o.sub, "add") == 0)
        rc = run_add(&o, st);
    else if (strcmp(o.sub, "list") == 0)
        rc = run_list(&o, st);
    else if (strcmp(o.sub, "get") == 0)
        rc = run_get(&o, st);
    else if (strcmp(o.sub, "rm") == 0)
        rc = run_rm(&o, st);
    else if (strcmp(o.sub, "query") == 0)
        rc = run_query(&o, st);
    else if (strcmp(o.sub, "reindex") == 0)
        rc = load_engine(&o, &e) || run_reindex(&o, st, o.collection, &e);
    else if (strcmp(o.sub, "export") == 0)
        rc = run_export(&o, st);
    else if (strcmp(o.sub, "import") == 0)
        rc = run_import(&o, st);
    else {
        fprintf(stderr, "clara memory: unknown command '%s'\n\n", o.sub);
        usage(stderr);
        rc = 2;
    }
    free_engine(&e);
    store_close(st);
    free(o.db_owned);
    return rc;
}
