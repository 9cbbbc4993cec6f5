/* cmd_quantize.c - `clara quantize [--keep-embeddings f16] IN.gguf OUT.gguf TYPE`. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "clara.h"
#include "cli.h"
#include "quantize.h"

static const char *k_usage =
    "usage: clara quantize [--keep-embeddings f16] [--quiet] IN.gguf OUT.gguf TYPE\n"
    "  TYPE: q8_0 q4_0 q4_1 q5_0 q5_1 q4_k_m q5_k_m q6_k (llama.cpp's mixes)\n";

int cmd_quantize(int argc, char **argv) {
    clara_quantize_opts o = {false, stderr};
    static const struct option opts[] = {{"keep-embeddings", required_argument, 0, 'k'},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (ch == 'k' && strcmp(optarg, "f16") == 0)
            o.keep_embeddings_f16 = true;
        else if (ch == 'q')
            o.progress = NULL;
        else if (ch == 'h') {
            fputs(k_usage, stdout);
            return 0;
        } else {
            fputs(k_usage, stderr);
            return 2;
        }
    }
    if (optind != argc - 3) {
        fputs(k_usage, stderr);
        return 2;
    }
    if (clara_quantize_file(argv[optind], argv[optind + 1], argv[optind + 2], &o) != CLARA_OK) {
        fprintf(stderr, "clara quantize: %s\n", clara_last_error());
        return 1;
    }
    return 0;
}
