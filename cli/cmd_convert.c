/* cmd_convert.c - `clara convert --base DIR --clara DIR --out FILE [--type f32|f16|bf16]`. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "cli.h"
#include "convert/convert.h"
#include "dtype.h"

static void convert_usage(FILE *out) {
    fprintf(out,
            "usage: clara convert --base DIR --clara DIR --out FILE [--type f32|f16|bf16] [--quiet]\n"
            "                     [--addon-only | --base-only]\n"
            "\n"
            "Converts a Hugging Face CLaRa checkpoint into one self-contained GGUF file.\n"
            "  --base DIR    the Mistral-7B-Instruct-v0.2 repository (config.json, *.safetensors,\n"
            "                model.safetensors.index.json, tokenizer.json or tokenizer.model)\n"
            "  --clara DIR   a CLaRa subfolder, e.g. CLaRa-7B-Instruct/compression-16 (config.json,\n"
            "                adapters.pth, decoder_first_last_layers.pth)\n"
            "  --out FILE    output GGUF (written to a temporary name, renamed when complete)\n"
            "  --type T      matrix type: f32, f16 (default) or bf16; norms are always f32\n"
            "  --quiet       no progress output\n"
            "  --addon-only  write only CLaRa's parts (adapters, resized tables, vocabulary,\n"
            "                settings): use it with any GGUF of the base model, e.g.\n"
            "                `clara ask --base mistral-7b-instruct-v0.2.Q4_K_M.gguf --clara F`\n"
            "  --base-only   write only the base model, in llama.cpp's layout (no --clara)\n");
}

int cmd_convert(int argc, char **argv) {
    clara_convert_params p = clara_convert_default_params();
    static const struct option opts[] = {
        {"base", required_argument, 0, 'b'}, {"clara", required_argument, 0, 'c'},
        {"out", required_argument, 0, 'o'},  {"type", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'},      {"help", no_argument, 0, 'h'},
        {"addon-only", no_argument, 0, 'A'}, {"base-only", no_argument, 0, 'B'},
        {0, 0, 0, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'b': p.base_dir = optarg; break;
        case 'c': p.clara_dir = optarg; break;
        case 'o': p.out_path = optarg; break;
        case 'q': p.progress = false; break;
        case 'A': p.mode = CLARA_CONVERT_ADDON; break;
        case 'B': p.mode = CLARA_CONVERT_BASE; break;
        case 't': {
            int t = clara_type_from_name(optarg);
            if (t != CLARA_TYPE_F32 && t != CLARA_TYPE_F16 && t != CLARA_TYPE_BF16) {
                fprintf(stderr, "clara convert: --type must be f32, f16 or bf16, not '%s'\n",
                        optarg);
                return 2;
            }
            p.type = (clara_type)t;
            break;
        }
        case 'h': convert_usage(stdout); return 0;
        default: convert_usage(stderr); return 2;
        }
    }
    bool need_clara = p.mode != CLARA_CONVERT_BASE;
    if (optind < argc || !p.base_dir || (need_clara != (p.clara_dir != NULL)) || !p.out_path) {
        if (optind < argc) fprintf(stderr, "clara convert: unexpected argument '%s'\n", argv[optind]);
        else if (!need_clara && p.clara_dir)
            fprintf(stderr, "clara convert: --base-only takes no --clara\n");
        else fprintf(stderr, "clara convert: --base, --clara and --out are required\n");
        convert_usage(stderr);
        return 2;
    }
    clara_status s = clara_convert(&p);
    if (s != CLARA_OK) {
        fprintf(stderr, "clara convert: error: %s\n", clara_last_error());
        return 1;
    }
    if (p.progress) fprintf(stderr, "clara: wrote %s\n", p.out_path);
    return 0;
}
