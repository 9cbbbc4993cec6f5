/* model_arg.c - what a command's --model names: a GGUF file, or a model pulled into the cache
 * by name (apple/CLaRa-7B-Instruct:compression-16), which may be a two-file model. */
#include <stdlib.h>

#include "cli.h"
#include "hub/hub.h"

clara_status cli_load_model(const char *model, const char *base, const char *clara,
                            const clara_model_params *mp, clara_model **out) {
    if (!model) return clara_model_load_pair(base, clara, mp, out);
    char *path = NULL, *pair_base = NULL;
    clara_status s = hub_resolve(model, NULL, &path, &pair_base);
    if (s == CLARA_OK)
        s = pair_base ? clara_model_load_pair(pair_base, path, mp, out)
                      : clara_model_load(path, mp, out);
    free(path);
    free(pair_base);
    return s;
}
