/* fuzz_gguf_base.c - libFuzzer target for reading a base model GGUF's settings and vocabulary
 * (convert/gguf_base.c, `clara convert --addon-only --base FILE.gguf`), including the merge
 * derivation and the table check: whatever the bytes, an error or a consistent result. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "convert/gguf_base.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_ctx *g = NULL;
    if (gguf_parse(data, size, "fuzz.gguf", &g) != CLARA_OK) return 0;
    clara_base_config cfg;
    clara_hf_tokenizer t;
    if (gguf_base_read(g, &cfg, &t) == CLARA_OK) {
        if (t.n_vocab == 0 || cfg.vocab_size != t.n_vocab || cfg.head_dim == 0 ||
            cfg.n_heads % cfg.n_kv_heads != 0)
            __builtin_trap();
        for (uint32_t i = 0; i < t.n_vocab; i++)
            if (!t.tokens[i] || !t.tokens[i][0] || t.token_types[i] < 1 || t.token_types[i] > 6)
                __builtin_trap();
        for (size_t i = 0; i < t.n_added; i++)
            if (t.added[i].id >= t.n_vocab) __builtin_trap();
        for (uint64_t i = 0; i < t.n_merges; i++)
            if (!strchr(t.merges[i], ' ')) __builtin_trap();
        (void)gguf_base_check_tables(g, &cfg);
    }
    hf_tokenizer_free(&t);
    gguf_free(g);
    return 0;
}
