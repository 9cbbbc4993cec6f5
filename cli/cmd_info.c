/* cmd_info.c - `clara info FILE`: a GGUF file's metadata and tensor table. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "dtype.h"
#include "gguf.h"

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
    int show_tensors = 1;
    static const struct option opts[] = {
        {"no-tensors", no_argument, 0, 'n'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (ch == 'n')
            show_tensors = 0;
        else if (ch == 'h') {
            printf("usage: clara info [--no-tensors] FILE.gguf\n");
            return 0;
        } else
            return 2;
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: clara info [--no-tensors] FILE.gguf\n");
        return 2;
    }
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
