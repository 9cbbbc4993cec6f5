/* backend_arg.c - the options every model command takes for where its layers run: --backend
 * auto|cpu|vulkan|cuda|mps and --gpu-layers N, with CLARA_BACKEND / CLARA_GPU_LAYERS as their
 * defaults, and the `backend` / `device` fields of the commands' --json output. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The value of --gpu-layers or CLARA_GPU_LAYERS: -1 (as many as fit) up to 100000. */
static int parse_layers(const char *cmd, const char *what, const char *s, int *out) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < -1 || v > 100000) {
        fprintf(stderr,
                "clara %s: %s takes -1 (as many as fit), 0 (the CPU only) or a layer count, not "
                "'%s'\n",
                cmd, what, s);
        return 2;
    }
    *out = (int)v;
    return 0;
}

static int parse_backend(const char *cmd, const char *what, const char *s,
                         clara_backend_choice *out) {
    if (clara_backend_parse(s, out) == CLARA_OK) return 0;
    fprintf(stderr, "clara %s: %s: %s\n", cmd, what, clara_last_error());
    return 2;
}

int cli_backend_opt(const char *cmd, cli_backend *b, int is_layers, const char *val) {
    if (is_layers) {
        b->layers_given = 1;
        return parse_layers(cmd, "--gpu-layers", val, &b->gpu_layers);
    }
    b->backend_given = 1;
    return parse_backend(cmd, "--backend", val, &b->backend);
}

int cli_backend_apply(const char *cmd, const cli_backend *b, clara_ctx_params *cp) {
    const char *env_b = getenv("CLARA_BACKEND"), *env_l = getenv("CLARA_GPU_LAYERS");
    if (b->backend_given)
        cp->backend = b->backend;
    else if (env_b && *env_b && parse_backend(cmd, "CLARA_BACKEND", env_b, &cp->backend))
        return 2;
    if (b->layers_given)
        cp->gpu_layers = b->gpu_layers;
    else if (env_l && *env_l && parse_layers(cmd, "CLARA_GPU_LAYERS", env_l, &cp->gpu_layers))
        return 2;
    return 0;
}

void cli_backend_json(cJSON *root, const clara_ctx *ctx) {
    clara_ctx_backend_info bi;
    clara_ctx_backend(ctx, &bi);
    cJSON_AddStringToObject(root, "backend", bi.backend);
    cJSON_AddNumberToObject(root, "cpu_repacked_bytes", (double)bi.cpu_repacked);
    if (strcmp(bi.backend, "cpu") == 0) {
        clara_backend_info ci;
        clara_backend_describe(&ci);
        cJSON_AddStringToObject(root, "device", ci.device);
    } else {
        cJSON_AddStringToObject(root, "device", bi.device);
        cJSON_AddNumberToObject(root, "gpu_layers", bi.gpu_layers);
    }
}
