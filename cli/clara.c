/* clara.c - the `clara` command: a table of subcommands. Invoked as `clara-server` (same binary,
 * by name) it runs the server. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/outfile.h"
#include "cli.h"

static const clara_cmd g_cmds[] = {
    {"pull", "download a CLaRa model from the Hugging Face Hub into the cache", cmd_pull},
    {"list", "list the models in the cache", cmd_list},
    {"rm", "remove a model from the cache", cmd_rm},
    {"convert", "convert a Hugging Face CLaRa checkpoint to GGUF", cmd_convert},
    {"info", "print a GGUF file's metadata and tensor table", cmd_info},
    {"quantize", "rewrite a GGUF with weights in a block type (q8_0, q4_k_m, ...)", cmd_quantize},
    {"tokenize", "encode text or decode ids with a model's tokenizer", cmd_tokenize},
    {"compress", "compress documents into memory vectors", cmd_compress},
    {"ask", "answer a question from documents", cmd_ask},
    {"retrieve", "rank documents by a question and answer from the top-k (E2E models)",
     cmd_retrieve},
    {"paraphrase", "paraphrase documents from their memory vectors", cmd_paraphrase},
    {"memory", "the memory store: add, list, get, rm, query, reindex, export, import", cmd_memory},
    {"bench", "benchmark a model against the machine's limits (or --generate one)", cmd_bench},
    {"serve", "run the HTTP server (the same as clara-server)", cmd_serve},
    {"version", "print the version", cmd_version},
};

int cmd_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("clara %s\n", CLARA_VERSION);
    return 0;
}

static void usage(FILE *out) {
    fprintf(out, "usage: clara <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof g_cmds / sizeof g_cmds[0]; i++)
        fprintf(out, "  %-12s %s\n", g_cmds[i].name, g_cmds[i].help);
    fprintf(out, "\nRun `clara <command> --help` for the options of a command.\n");
}

/* Removes a half-written output file when the user interrupts a conversion. */
static void on_signal(int sig) {
    const char *tmp = clara_outfile_current_tmp();
    if (tmp) unlink(tmp);
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(int argc, char **argv) {
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    const char *prog = strrchr(argv[0], '/');
    prog = prog ? prog + 1 : argv[0];
    if (strcmp(prog, "clara-server") == 0) return cmd_serve(argc, argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) return cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof g_cmds / sizeof g_cmds[0]; i++)
        if (strcmp(argv[1], g_cmds[i].name) == 0) return g_cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "clara: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
