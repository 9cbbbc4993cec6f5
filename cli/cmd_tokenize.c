/* cmd_tokenize.c - `clara tokenize`: encode text (or decode ids) with a converted model's
 * tokenizer (spec §3), for people (ids and pieces) or as JSON for tests and scripts:
 *
 *   clara tokenize --model M.gguf --text T [--json]          -> ids and pieces / {"ids":[...]}
 *   clara tokenize --model M.gguf --input-file F              -> one {"ids":[...]} per line of F
 *                                                                (each line a JSON string)
 *   clara tokenize --model M.gguf --decode --ids 1,2,3 [--json] -> text / {"text":"..."}
 *   clara tokenize --model M.gguf --decode --input-file F     -> one {"text":"..."} per line of F
 *                                                                (each line a JSON id array)
 *   clara tokenize (--model M.gguf | --base B --clara C) --chunks N (--text T | --input-file F)
 *       -> the memory store's chunks of at most N text tokens (0: the model's doc_max_length):
 *          {"n_tokens":T,"chunks":[{"start":S,"len":L,"n_tokens":K},...]} per text (byte ranges;
 *          n_tokens of the whole text and of each chunk encoded on its own)
 * Errors (unreadable model, invalid UTF-8, bad ids, bad lines) print one line and exit 1. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mapfile.h"
#include "cli.h"
#include "clara.h"
#include "gguf.h"
#include "tokenizer.h"

#define MAX_INPUT_FILE ((size_t)1 << 30)

typedef struct {
    const char *model, *base, *clara, *text, *input, *ids;
    int json, decode;
    long chunks;          /* --chunks N: max tokens per chunk; -1 without the option */
    const clara_model *m; /* loaded for --chunks only (chunking needs doc_max_length) */
} tok_args;

static int fail(const char *what) {
    fprintf(stderr, "clara tokenize: error: %s\n", what);
    return 1;
}

/* Prints one JSON object {key: item} on its own line; takes ownership of item. */
static int print_json(const char *key, cJSON *item) {
    cJSON *o = cJSON_CreateObject();
    if (!o || !item) {
        cJSON_Delete(o);
        cJSON_Delete(item);
        return fail("out of memory");
    }
    cJSON_AddItemToObject(o, key, item);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) return fail("out of memory");
    puts(s);
    cJSON_free(s);
    return 0;
}

static cJSON *ids_json(const clara_ids *v) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < v->n; i++) {
        cJSON *n = cJSON_CreateNumber(v->ids[i]);
        if (!n) {
            cJSON_Delete(a);
            return NULL;
        }
        cJSON_AddItemToArray(a, n);
    }
    return a;
}

static int encode_one(const clara_tokenizer *t, const char *text, size_t len, int json) {
    clara_ids v = {0};
    if (clara_tokenizer_encode(t, text, len, &v) != CLARA_OK) return fail(clara_last_error());
    int rc = 0;
    if (json) {
        rc = print_json("ids", ids_json(&v));
    } else {
        printf("%zu tokens\n", v.n);
        for (size_t i = 0; i < v.n; i++) {
            cJSON *p = cJSON_CreateString(clara_tokenizer_piece(t, v.ids[i]));
            char *s = p ? cJSON_PrintUnformatted(p) : NULL;
            printf("  %8d  %s%s\n", v.ids[i], s ? s : "?",
                   clara_tokenizer_is_special(t, v.ids[i]) ? "  (special)" : "");
            cJSON_free(s);
            cJSON_Delete(p);
        }
    }
    clara_ids_free(&v);
    return rc;
}

/* --chunks: the text's chunks as one JSON line (clara_split_text, clara_count_tokens). */
static int chunks_one(const tok_args *a, const char *text, size_t len) {
    uint32_t total;
    clara_chunk *c = NULL;
    size_t n = 0;
    if (clara_count_tokens(a->m, text, len, &total) != CLARA_OK ||
        clara_split_text(a->m, text, len, (uint32_t)a->chunks, 0, &c, &n) != CLARA_OK)
        return fail(clara_last_error());
    printf("{\"n_tokens\":%u,\"chunks\":[", total);
    for (size_t i = 0; i < n; i++)
        printf("%s{\"start\":%zu,\"len\":%zu,\"n_tokens\":%u}", i ? "," : "", c[i].start, c[i].len,
               c[i].n_tokens);
    puts("]}");
    free(c);
    return 0;
}

/* Prints {"text":"..."} for text of len bytes that may hold NUL bytes: cJSON escapes each
 * NUL-free chunk, the NULs become \u0000. */
static int print_text_json(const char *text, size_t len) {
    fputs("{\"text\":\"", stdout);
    for (size_t i = 0;;) {
        cJSON *c = cJSON_CreateString(text + i);
        char *s = c ? cJSON_PrintUnformatted(c) : NULL;
        cJSON_Delete(c);
        if (!s) return fail("out of memory");
        fwrite(s + 1, 1, strlen(s) - 2, stdout); /* without the quotes */
        cJSON_free(s);
        i += strlen(text + i);
        if (i >= len) break;
        fputs("\\u0000", stdout);
        i++;
    }
    fputs("\"}\n", stdout);
    return 0;
}

static int decode_one(const clara_tokenizer *t, const clara_ids *v, int json) {
    char *text;
    size_t len;
    if (clara_tokenizer_decode_len(t, v->ids, v->n, &text, &len) != CLARA_OK)
        return fail(clara_last_error());
    int rc = 0;
    if (json)
        rc = print_text_json(text, len);
    else
        fwrite(text, 1, len, stdout), putchar('\n');
    free(text);
    return rc;
}

/* cJSON ends strings at a NUL, so a "\u0000" escape would silently cut the text: refused. */
static bool has_nul_escape(const char *line, size_t len) {
    for (size_t i = 0; i + 1 < len; i++) {
        if (line[i] != '\\') continue;
        if (line[i + 1] == 'u' && i + 6 <= len && memcmp(line + i + 2, "0000", 4) == 0) return true;
        i++; /* skip the escaped character */
    }
    return false;
}

/* "1,2,3" → ids */
static int parse_id_list(const char *s, clara_ids *v) {
    while (*s) {
        char *end;
        errno = 0;
        long x = strtol(s, &end, 10);
        if (end == s || errno || x < INT32_MIN || x > INT32_MAX || (*end && *end != ','))
            return fail("--ids: expected comma-separated integers");
        if (clara_ids_push(v, (int32_t)x) != CLARA_OK) return fail(clara_last_error());
        s = *end ? end + 1 : end;
    }
    return 0;
}

/* One line of --input-file: a JSON string (encode) or a JSON array of ids (decode). */
static int batch_line(const clara_tokenizer *t, const char *line, size_t len, size_t lineno,
                      const tok_args *a) {
    char msg[160];
    cJSON *j = cJSON_ParseWithLength(line, len);
    int rc;
    if (!a->decode) {
        if (!cJSON_IsString(j) || has_nul_escape(line, len)) {
            snprintf(msg, sizeof msg, "%s:%zu: not a JSON string without U+0000", a->input, lineno);
            cJSON_Delete(j);
            return fail(msg);
        }
        size_t n = strlen(j->valuestring);
        rc =
            a->chunks >= 0 ? chunks_one(a, j->valuestring, n) : encode_one(t, j->valuestring, n, 1);
        cJSON_Delete(j);
        return rc;
    }
    clara_ids v = {0};
    const cJSON *it;
    rc = cJSON_IsArray(j) ? 0 : 1;
    cJSON_ArrayForEach(it, j) {
        double d = cJSON_IsNumber(it) ? it->valuedouble : 0.5;
        if (rc || d != (double)(int32_t)d || clara_ids_push(&v, (int32_t)d) != CLARA_OK) {
            rc = 1;
            break;
        }
    }
    cJSON_Delete(j);
    if (rc) {
        clara_ids_free(&v);
        snprintf(msg, sizeof msg, "%s:%zu: not a JSON array of token ids", a->input, lineno);
        return fail(msg);
    }
    rc = decode_one(t, &v, 1);
    clara_ids_free(&v);
    return rc;
}

static int run_batch(const clara_tokenizer *t, const tok_args *a) {
    char *buf;
    size_t len;
    if (clara_read_file(a->input, MAX_INPUT_FILE, &buf, &len) != CLARA_OK)
        return fail(clara_last_error());
    int rc = 0;
    size_t lineno = 0;
    for (size_t i = 0; i < len && rc == 0;) {
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - buf) : len;
        lineno++;
        size_t k = i;
        while (k < e && (buf[k] == ' ' || buf[k] == '\t' || buf[k] == '\r')) k++;
        if (k < e) rc = batch_line(t, buf + i, e - i, lineno, a); /* blank lines skipped */
        i = e + 1;
    }
    free(buf);
    return rc;
}

static int usage(FILE *f, int rc) {
    fprintf(f,
            "usage: clara tokenize --model FILE.gguf (--text T | --input-file F) [--json]\n"
            "       clara tokenize --model FILE.gguf --decode (--ids 1,2,3 | --input-file F) "
            "[--json]\n"
            "       clara tokenize (--model FILE.gguf | --base B.gguf --clara C.gguf) --chunks N\n"
            "                      (--text T | --input-file F)\n"
            "--threads N, --backend B and --gpu-layers N are accepted as by every model command\n"
            "(tokenizing uses one thread and no GPU).\n"
            "--input-file: one JSON string (or, with --decode, one JSON id array) per line;\n"
            "prints one {\"ids\":[...]} (or {\"text\":\"...\"}) line per input line.\n"
            "--chunks N: split each text as the memory store does, into chunks of at most N\n"
            "text tokens (0: the model's doc_max_length) that end after whitespace (a longer\n"
            "word is split between characters); prints one JSON line per text:\n"
            "{\"n_tokens\":T,\"chunks\":[{\"start\":S,\"len\":L,\"n_tokens\":K},...]} (byte\n"
            "ranges of the text; n_tokens of the whole text and of each chunk on its own).\n"
            "It loads the whole model (two-file mode: --base and --clara).\n");
    return rc;
}

static int parse_args(int argc, char **argv, tok_args *a) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"text", required_argument, 0, 't'},
                                         {"input-file", required_argument, 0, 'i'},
                                         {"ids", required_argument, 0, 'I'},
                                         {"json", no_argument, 0, 'j'},
                                         {"decode", no_argument, 0, 'd'},
                                         {"threads", required_argument, 0, 'T'},
                                         {"backend", required_argument, 0, 'G'},
                                         {"gpu-layers", required_argument, 0, 'Y'},
                                         {"chunks", required_argument, 0, 'c'},
                                         {"base", required_argument, 0, 'B'},
                                         {"clara", required_argument, 0, 'C'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'm':
            a->model = optarg;
            break;
        case 't':
            a->text = optarg;
            break;
        case 'i':
            a->input = optarg;
            break;
        case 'I':
            a->ids = optarg;
            break;
        case 'j':
            a->json = 1;
            break;
        case 'd':
            a->decode = 1;
            break;
        case 'B':
            a->base = optarg;
            break;
        case 'C':
            a->clara = optarg;
            break;
        case 'c': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || n < 0 || n > 1000000) {
                fprintf(stderr, "clara tokenize: error: --chunks takes 0 to 1000000, not '%s'\n",
                        optarg);
                return 2;
            }
            a->chunks = n;
            break;
        }
        case 'T': { /* every model command takes it; tokenizing runs on one thread */
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || n < 1 || n > 1024) {
                fprintf(stderr, "clara tokenize: error: --threads takes 1 to 1024, not '%s'\n",
                        optarg);
                return 2;
            }
            break;
        }
        case 'G':
        case 'Y': { /* checked like every model command's; tokenizing needs no device */
            cli_backend b = {0};
            if (cli_backend_opt("tokenize", &b, ch == 'Y', optarg)) return 2;
            break;
        }
        case 'h':
            return usage(stdout, 0) - 1; /* -1: done, exit 0 */
        default:
            return usage(stderr, 2);
        }
    }
    int n_in = !!a->text + !!a->input + !!a->ids;
    /* two-file mode only for --chunks (the rest reads just the tokenizer, in the add-on) */
    bool pair = a->base && a->clara && !a->model && a->chunks >= 0;
    if (optind != argc || (!a->model && !pair) || (a->model && (a->base || a->clara)) ||
        n_in != 1 || (a->decode && a->text) || (!a->decode && a->ids) ||
        (a->chunks >= 0 && a->decode))
        return usage(stderr, 2);
    return 0;
}

/* --chunks: the whole model (chunking needs its doc_max_length and special tokens). */
static int run_chunks(tok_args *a) {
    clara_model_params mp = clara_model_default_params();
    clara_model *m;
    clara_status s = cli_load_model(a->model, a->base, a->clara, &mp, &m);
    if (s != CLARA_OK) return fail(clara_last_error());
    a->m = m;
    int rc = a->input ? run_batch(NULL, a) : chunks_one(a, a->text, strlen(a->text));
    clara_model_free(m);
    if (fflush(stdout) != 0 && rc == 0) rc = fail("writing the output failed");
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    tok_args a = {0};
    a.chunks = -1;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : rc;
    if (a.chunks >= 0) return run_chunks(&a);
    gguf_ctx *g;
    if (gguf_open(a.model, &g) != CLARA_OK) return fail(clara_last_error());
    clara_tokenizer *t;
    clara_status s = clara_tokenizer_load(g, &t);
    gguf_free(g);
    if (s != CLARA_OK) return fail(clara_last_error());
    if (a.input) {
        rc = run_batch(t, &a);
    } else if (a.text) {
        rc = encode_one(t, a.text, strlen(a.text), a.json);
    } else {
        clara_ids v = {0};
        rc = parse_id_list(a.ids, &v);
        if (rc == 0) rc = decode_one(t, &v, a.json);
        clara_ids_free(&v);
    }
    clara_tokenizer_free(t);
    if (fflush(stdout) != 0 && rc == 0) rc = fail("writing the output failed");
    return rc;
}
