/* cmd_info.c - `clara info FILE`: a GGUF file's metadata and tensor table; with --fingerprint,
 * the loaded model's fingerprint (clara_model_fingerprint: what its vectors depend on). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "clara.h"
#include "dtype.h"
#include "gguf.h"

#define INFO_USAGE                                                                                 \
    "usage: clara info [--no-tensors] FILE.gguf\n"                                                 \
    "       clara info --fingerprint [--base BASE.gguf] [--adapter-policy hf|all] FILE.gguf\n"     \
    "  --fingerprint  load FILE as a model (with --base: FILE is the CLaRa add-on) and print\n"    \
    "                 the model fingerprint (64 hex digits: what its vectors depend on,\n"         \
    "                 docs/STORE.md); the time it took goes to stderr\n"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int print_fingerprint(const char *path, const char *base, clara_adapter_policy policy) {
    clara_model_params mp = clara_model_default_params();
    mp.adapter_policy = policy;
    clara_model *m;
    clara_status s =
        base ? clara_model_load_pair(base, path, &mp, &m) : clara_model_load(path, &mp, &m);
    char fp[CLARA_FINGERPRINT_LEN + 1];
    double t0 = now_ms();
    if (s == CLARA_OK) s = clara_model_fingerprint(m, fp);
    double ms = now_ms() - t0;
    if (s == CLARA_OK) {
        printf("%s\n", fp);
        fprintf(stderr, "fingerprint computed in %.1f ms\n", ms);
    } else {
        fprintf(stderr, "clara info: error: %s\n", clara_last_error());
    }
    clara_model_free(m);
    return s == CLARA_OK ? 0 : 1;
}

static void print_tensors(const gguf_ctx *g) {
    uint64_t total = 0;
    printf("\n%zu tensors:\n", gguf_n_tensors(g));
    printf("  %-52s %-6s %-22s %14s %12s\n", "name", "type", "shape", "offset", "bytes");
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        char shape[64] = "[";
        for (uint32_t d = 0; d < t->n_dims; d++) {
            char part[24];
            snprintf(part, sizeof part, "%s%" PRIu64, d ? ", " : "", t->ne[d]);
            strncat(shape, part, sizeof shape - strlen(shape) - 2);
        }
        strcat(shape, "]");
        printf("  %-52s %-6s %-22s %14" PRIu64 " %12" PRIu64 "\n", t->name,
               clara_type_name(t->type), shape, t->offset, t->nbytes);
        total += t->nbytes;
    }
    printf("  total %.2f MB of tensor data\n", (double)total / 1e6);
}

int cmd_info(int argc, char **argv) {
    int show_tensors = 1, fingerprint = 0;
    const char *base = NULL;
    clara_adapter_policy policy = CLARA_ADAPTER_POLICY_HF;
    static const struct option opts[] = {
        {"no-tensors", no_argument, 0, 'n'}, {"fingerprint", no_argument, 0, 'f'},
        {"base", required_argument, 0, 'B'}, {"adapter-policy", required_argument, 0, 'p'},
        {"help", no_argument, 0, 'h'},       {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (ch == 'n')
            show_tensors = 0;
        else if (ch == 'f')
            fingerprint = 1;
        else if (ch == 'B')
            base = optarg;
        else if (ch == 'p' && (strcmp(optarg, "hf") == 0 || strcmp(optarg, "all") == 0))
            policy = strcmp(optarg, "hf") == 0 ? CLARA_ADAPTER_POLICY_HF : CLARA_ADAPTER_POLICY_ALL;
        else if (ch == 'h') {
            printf(INFO_USAGE);
            return 0;
        } else {
            fprintf(stderr, INFO_USAGE);
            return 2;
        }
    }
    if (optind != argc - 1 || (base && !fingerprint)) {
        fprintf(stderr, INFO_USAGE);
        return 2;
    }
    if (fingerprint) return print_fingerprint(argv[optind], base, policy);
    gguf_ctx *g;
    if (gguf_open(argv[optind], &g) != CLARA_OK) {
        fprintf(stderr, "clara info: error: %s\n", clara_last_error());
        return 1;
    }
    printf("%s: GGUF v%u, alignment %u, %zu keys, %zu tensors\n\n", argv[optind], gguf_version(g),
           gguf_alignment(g), gguf_n_kv(g), gguf_n_tensors(g));
    char buf[512];
    for (size_t i = 0; i < gguf_n_kv(g); i++) {
        gguf_kv_format(g, i, buf, sizeof buf);
        printf("  %-48s = %s\n", gguf_kv_key(g, i), buf);
    }
    if (show_tensors) print_tensors(g);
    gguf_free(g);
    return 0;
}
