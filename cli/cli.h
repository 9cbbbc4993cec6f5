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

/* --backend / --gpu-layers as given (backend_arg.c). */
typedef struct {
    clara_backend_choice backend;
    int gpu_layers;
    int backend_given, layers_given;
} cli_backend;

/* The help lines of the two options, for every model command's --help. */
#define CLI_BACKEND_HELP                                                                           \
    "  --backend B           where the layers run: auto (a GPU if there is one, else the\n"        \
    "                        CPU), cpu, vulkan (any Vulkan device, lavapipe included);\n"          \
    "                        cuda, mps and gpu mean a GPU (through Vulkan; none is an\n"           \
    "                        error). Default: CLARA_BACKEND or auto\n"                             \
    "  --gpu-layers N        layers on the GPU: -1 as many as fit (default), 0 none;\n"            \
    "                        default: CLARA_GPU_LAYERS or -1\n"

/* Takes the value of --backend (is_layers 0) or --gpu-layers (1); 2 after a message if bad. */
int cli_backend_opt(const char *cmd, cli_backend *b, int is_layers, const char *val);
/* Sets cp's backend and gpu_layers from the options, else CLARA_BACKEND / CLARA_GPU_LAYERS; 2
 * after a message when one of them is bad. */
int cli_backend_apply(const char *cmd, const cli_backend *b, clara_ctx_params *cp);
/* Adds "backend", "device", "cpu_repacked_bytes" (and "gpu_layers" on a GPU) to a --json output. */
struct cJSON;
void cli_backend_json(struct cJSON *root, const clara_ctx *ctx);

#endif
