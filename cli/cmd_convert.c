/* cmd_convert.c - `clara convert --base DIR --clara DIR --out FILE [--type T]`. A quantized T
 * (q8_0, q4_k_m, ...) converts to a temporary bf16 GGUF (exactly the checkpoint's values) and
 * quantizes that with `clara quantize`'s rules. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "cli.h"
#include "convert/convert.h"
#include "dtype.h"
#include "quantize.h"

static void convert_usage(FILE *out) {
    fprintf(
        out,
        "usage: clara convert --base DIR --clara DIR --out FILE [--type T] [--quiet]\n"
        "                     [--addon-only | --base-only]\n"
        "\n"
        "Converts a Hugging Face CLaRa checkpoint into one self-contained GGUF file.\n"
        "  --base DIR    the Mistral-7B-Instruct-v0.2 repository (config.json, *.safetensors,\n"
        "                model.safetensors.index.json, tokenizer.json or tokenizer.model)\n"
        "  --clara DIR   a CLaRa subfolder, e.g. CLaRa-7B-Instruct/compression-16 (config.json,\n"
        "                adapters.pth, decoder_first_last_layers.pth)\n"
        "  --out FILE    output GGUF (written to a temporary name, renamed when complete)\n"
        "  --type T      matrix type: f32, f16 (default) or bf16 (norms are always f32), or\n"
        "                a quantization mix: q8_0 q4_0 q4_1 q5_0 q5_1 q4_k_m q5_k_m q6_k\n"
        "                (LoRA tensors and norms stay unquantized; see `clara quantize`)\n"
        "  --keep-embeddings f16  with a quantized --type, keep token_embd in f16\n"
        "  --base DIR may also be a GPTQ or AWQ checkpoint: its layers are repacked exactly\n"
        "  --quiet       no progress output\n"
        "  --addon-only  write only CLaRa's parts (adapters, resized tables, vocabulary,\n"
        "                settings): use it with any GGUF of the base model, e.g.\n"
        "                `clara ask --base mistral-7b-instruct-v0.2.Q4_K_M.gguf --clara F`;\n"
        "                here --base may also be that base GGUF FILE (llama.cpp layout, any\n"
        "                type): its llama.* settings and tokenizer.ggml.* vocabulary replace\n"
        "                the Hugging Face directory, whose weights an add-on does not need\n"
        "  --base-only   write only the base model, in llama.cpp's layout (no --clara)\n");
}

/* Converts to a temporary bf16 file beside the output, then quantizes it into the output. */
static clara_status convert_quantized(clara_convert_params *p, const char *mix,
                                      clara_quantize_opts *qopts) {
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.bf16.gguf", p->out_path);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return clara_fail(CLARA_ERR_INVALID_ARG, "output path is too long");
    const char *out = p->out_path;
    p->out_path = tmp;
    clara_status s = clara_convert(p);
    p->out_path = out;
    if (s == CLARA_OK) {
        if (p->progress) fprintf(stderr, "clara: quantizing to %s\n", mix);
        qopts->progress = p->progress ? stderr : NULL;
        s = clara_quantize_file(tmp, out, mix, qopts);
    }
    unlink(tmp);
    return s;
}

int cmd_convert(int argc, char **argv) {
    clara_convert_params p = clara_convert_default_params();
    const char *mix = NULL;
    clara_quantize_opts qopts = {false, stderr};
    static const struct option opts[] = {
        {"base", required_argument, 0, 'b'},
        {"clara", required_argument, 0, 'c'},
        {"out", required_argument, 0, 'o'},
        {"type", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {"addon-only", no_argument, 0, 'A'},
        {"base-only", no_argument, 0, 'B'},
        {"keep-embeddings", required_argument, 0, 'k'},
        {0, 0, 0, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'b':
            p.base_dir = optarg;
            break;
        case 'c':
            p.clara_dir = optarg;
            break;
        case 'o':
            p.out_path = optarg;
            break;
        case 'q':
            p.progress = false;
            break;
        case 'A':
            p.mode = CLARA_CONVERT_ADDON;
            break;
        case 'B':
            p.mode = CLARA_CONVERT_BASE;
            break;
        case 't': {
            int t = clara_type_from_name(optarg);
            if (clara_quantize_ftype(optarg) >= 0) {
                mix = optarg;
                p.type = CLARA_TYPE_BF16;
            } else if (t == CLARA_TYPE_F32 || t == CLARA_TYPE_F16 || t == CLARA_TYPE_BF16) {
                p.type = (clara_type)t;
            } else {
                fprintf(stderr,
                        "clara convert: --type '%s' is not one of f32 f16 bf16 q8_0 q4_0 "
                        "q4_1 q5_0 q5_1 q4_k_m q5_k_m q6_k\n",
                        optarg);
                return 2;
            }
            break;
        }
        case 'k':
            if (strcmp(optarg, "f16") != 0) {
                fprintf(stderr, "clara convert: --keep-embeddings takes f16\n");
                return 2;
            }
            qopts.keep_embeddings_f16 = true;
            break;
        case 'h':
            convert_usage(stdout);
            return 0;
        default:
            convert_usage(stderr);
            return 2;
        }
    }
    bool need_clara = p.mode != CLARA_CONVERT_BASE;
    if (optind < argc || !p.base_dir || (need_clara != (p.clara_dir != NULL)) || !p.out_path) {
        if (optind < argc)
            fprintf(stderr, "clara convert: unexpected argument '%s'\n", argv[optind]);
        else if (!need_clara && p.clara_dir)
            fprintf(stderr, "clara convert: --base-only takes no --clara\n");
        else
            fprintf(stderr, "clara convert: --base, --clara and --out are required\n");
        convert_usage(stderr);
        return 2;
    }
    clara_status s = mix ? convert_quantized(&p, mix, &qopts) : clara_convert(&p);
    if (s != CLARA_OK) {
        fprintf(stderr, "clara convert: error: %s\n", clara_last_error());
        return 1;
    }
    if (p.progress) fprintf(stderr, "clara: wrote %s\n", p.out_path);
    return 0;
}
