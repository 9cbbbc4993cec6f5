/* gguf_base.h - the base model's settings and tokenizer read from a base GGUF in llama.cpp's
 * layout (general.architecture "llama", llama.*, tokenizer.ggml.*), for `clara convert
 * --addon-only --base FILE.gguf`: they fill the same structs as config.json and the Hugging Face
 * tokenizer files, so the add-on written is the one the Hugging Face base directory gives. */
#ifndef CLARA_CONVERT_GGUF_BASE_H
#define CLARA_CONVERT_GGUF_BASE_H

#include <stdbool.h>

#include "clara.h"
#include "convert/hf_config.h"
#include "convert/hf_tokenizer.h"
#include "gguf.h"

/* True when `path` is a regular file that starts with the magic "GGUF" (false for a directory,
 * a missing or unreadable file, or any other file). */
bool gguf_base_is_gguf(const char *path);

/* Reads the transformer settings and the vocabulary of a base model GGUF. A CLaRa file (one with
 * clara.* keys), another architecture, a missing key or an array of the wrong type or length is
 * an error naming the file and the key. On failure *tok is left freed. */
clara_status gguf_base_read(const gguf_ctx *g, clara_base_config *cfg, clara_hf_tokenizer *tok);

/* The base's own token tables (replaced by CLaRa's, so only checked, as for the Hugging Face
 * base): token_embd.weight, and output.weight when present, are [hidden size, vocabulary]. */
clara_status gguf_base_check_tables(const gguf_ctx *g, const clara_base_config *cfg);

/* When CLARA_DIR/tokenizer.json exists (CLaRa's sub-folder ships the tokenizer it was trained
 * with: the base vocabulary plus its own tokens), its first tokens must be the base GGUF's:
 * another model of the same shape (e.g. Llama 2 beside Mistral) is refused. The file is never
 * required; one that cannot be read is reported as a warning and not used. */
clara_status gguf_base_cross_check(const clara_hf_tokenizer *tok, const char *gguf_path,
                                   const char *clara_dir);

#endif
