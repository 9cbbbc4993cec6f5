/* cli.h - subcommands of the clara program; each returns the process exit status
 * (0 ok, 1 failure, 2 usage error). */
#ifndef CLARA_CLI_H
#define CLARA_CLI_H

#include "clara.h"

typedef struct {
    const char *name;
    const char *help;
    int (*fn)(int argc, char **argv);
} clara_cmd;

int cmd_convert(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_compress(int argc, char **argv);
int cmd_ask(int argc, char **argv);
int cmd_retrieve(int argc, char **argv);
int cmd_paraphrase(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_memory(int argc, char **argv);
int cmd_pull(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_rm(int argc, char **argv);

/* Loads what --model names (a file, or a pulled model's name: model_arg.c), else the pair
 * --base/--clara. */
clara_status cli_load_model(const char *model, const char *base, const char *clara,
                            const clara_model_params *mp, clara_model **out);

#endif
