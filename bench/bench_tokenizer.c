/* bench_tokenizer.c - encode throughput of src/tokenizer.c on real English passages.
 *
 *   bench_tokenizer MODEL.gguf PASSAGES.jsonl [SECONDS]
 *   bench_tokenizer --hf-dir DIR PASSAGES.jsonl [SECONDS]
 *
 * The second form builds the tokenizer from a Hugging Face tokenizer directory (tokenizer.json)
 * through an in-memory GGUF holding only the tokenizer keys, so vocabularies bigger than the test
 * fixture's can be measured without a full checkpoint. Every "docs" entry of the JSONL file is
 * encoded as one text (one segment: BPE over the whole ~1-2 KB passage), repeatedly for at least
 * SECONDS (default 2) on one thread; prints MB/s and tokens/s. Built by bench/bench_tokenizer.sh.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/mapfile.h"
#include "convert/hf_tokenizer.h"
#include "gguf.h"
#include "tokenizer.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int die(const char *what) {
    fprintf(stderr, "bench_tokenizer: %s: %s\n", what, clara_last_error());
    return 1;
}

/* The tokenizer keys `clara convert` writes (docs/FORMAT.md), from a parsed tokenizer.json. */
static clara_status hf_to_gguf(const clara_hf_tokenizer *t, uint8_t **buf, size_t *len) {
    static const char *const schemes[] = {"never", "first", "always"};
    gguf_writer *w = gguf_writer_new();
    int32_t *ids = malloc(sizeof *ids * (t->n_added + 1));
    uint8_t *flags = malloc(t->n_added + 1);
    clara_status s = w && ids && flags ? CLARA_OK : CLARA_ERR_NOMEM;
    for (size_t i = 0; s == CLARA_OK && i < t->n_added; i++) {
        ids[i] = (int32_t)t->added[i].id;
        flags[i] = t->added[i].special ? 1 : 0;
    }
    if (s == CLARA_OK)
        s = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)t->tokens,
                                    t->n_vocab);
    if (s == CLARA_OK)
        s = gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)t->merges,
                                    t->n_merges);
    if (s == CLARA_OK && t->unk_id >= 0)
        s = gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)t->unk_id);
    if (s == CLARA_OK)
        s = gguf_writer_set_str(w, "clara.tokenizer.normalizer",
                                t->norm == CLARA_NORM_LEGACY ? "legacy" : "metaspace");
    if (s == CLARA_OK)
        s = gguf_writer_set_str(w, "clara.tokenizer.prepend_scheme", schemes[t->prepend_scheme]);
    if (s == CLARA_OK)
        s = gguf_writer_set_bool(w, "clara.tokenizer.byte_fallback", t->byte_fallback);
    if (s == CLARA_OK) s = gguf_writer_set_bool(w, "clara.tokenizer.fuse_unk", t->fuse_unk);
    if (s == CLARA_OK)
        s = gguf_writer_set_arr(w, "clara.tokenizer.added_token_ids", GGUF_VT_I32, ids, t->n_added);
    if (s == CLARA_OK)
        s = gguf_writer_set_arr(w, "clara.tokenizer.added_token_flags", GGUF_VT_U8, flags,
                                t->n_added);
    if (s == CLARA_OK) s = gguf_writer_begin_mem(w);
    if (s == CLARA_OK) s = gguf_writer_finish_mem(w, buf, len);
    gguf_writer_free(w);
    free(ids);
    free(flags);
    return s;
}

static clara_status load(const char *a, const char *b, clara_tokenizer **tok, uint8_t **mem) {
    gguf_ctx *g;
    clara_status s;
    *mem = NULL;
    if (strcmp(a, "--hf-dir") == 0) {
        clara_hf_tokenizer hf;
        size_t len;
        s = hf_tokenizer_load_dir(b, &hf);
        if (s == CLARA_OK) s = hf_to_gguf(&hf, mem, &len);
        hf_tokenizer_free(&hf);
        if (s == CLARA_OK) s = gguf_parse(*mem, len, b, &g);
    } else {
        s = gguf_open(a, &g);
    }
    if (s != CLARA_OK) return s;
    s = clara_tokenizer_load(g, tok);
    gguf_free(g);
    return s;
}

/* Every docs[] string of the JSONL file. */
static size_t read_docs(const char *path, char ***out) {
    char *buf;
    size_t len, n = 0, cap = 0;
    *out = NULL;
    if (clara_read_file(path, (size_t)1 << 30, &buf, &len) != CLARA_OK) return 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *d, *docs = cJSON_GetObjectItemCaseSensitive(j, "docs");
        cJSON_ArrayForEach(d, docs) {
            if (!cJSON_IsString(d)) continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                *out = realloc(*out, cap * sizeof **out);
            }
            (*out)[n++] = strdup(d->valuestring);
        }
        cJSON_Delete(j);
    }
    free(buf);
    return n;
}

int main(int argc, char **argv) {
    int hf = argc > 1 && strcmp(argv[1], "--hf-dir") == 0;
    if (argc < 3 + hf) {
        fprintf(stderr, "usage: bench_tokenizer (MODEL.gguf | --hf-dir DIR) PASSAGES.jsonl [S]\n");
        return 2;
    }
    double secs = argc > 3 + hf ? atof(argv[3 + hf]) : 2.0;
    clara_tokenizer *tok;
    uint8_t *mem;
    if (load(argv[1], argv[2], &tok, &mem) != CLARA_OK) return die("loading the tokenizer");
    char **docs;
    size_t n = read_docs(argv[2 + hf], &docs);
    if (n == 0) return die("reading the passages");
    size_t bytes = 0, tokens = 0, rounds = 0;
    clara_ids ids = {0};
    double t0 = now(), t1;
    do {
        for (size_t i = 0; i < n; i++) {
            ids.n = 0;
            size_t l = strlen(docs[i]);
            if (clara_tokenizer_encode(tok, docs[i], l, &ids) != CLARA_OK) return die("encode");
            bytes += l;
            tokens += ids.n;
        }
        rounds++;
        t1 = now();
    } while (t1 - t0 < secs);
    printf("%u-token vocabulary, %zu passages (%.1f KB avg), %zu rounds: %.1f MB/s, %.2f M "
           "tokens/s, %.2f bytes/token\n",
           clara_tokenizer_n_vocab(tok), n, (double)bytes / (double)(n * rounds) / 1e3, rounds,
           (double)bytes / (t1 - t0) / 1e6, (double)tokens / (t1 - t0) / 1e6,
           (double)bytes / (double)tokens);
    clara_ids_free(&ids);
    for (size_t i = 0; i < n; i++) free(docs[i]);
    free(docs);
    clara_tokenizer_free(tok);
    free(mem);
    return 0;
}
