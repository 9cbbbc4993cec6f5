/* fuzz_spm_model.c - libFuzzer target for the tokenizer.model (SentencePiece ModelProto)
 * reader, including the merge derivation. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "convert/hf_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    clara_hf_tokenizer t;
    if (hf_tokenizer_parse_spm(data, size, "fuzz.model", &t) == CLARA_OK) {
        for (uint32_t i = 0; i < t.n_vocab; i++)
            if (!t.tokens[i] || !t.tokens[i][0] || t.token_types[i] < 1 || t.token_types[i] > 6)
                __builtin_trap();
        if (t.unk_id < 0 || (uint32_t)t.unk_id >= t.n_vocab) __builtin_trap();
        for (uint64_t i = 0; i < t.n_merges; i++)
            if (!strchr(t.merges[i], ' ')) __builtin_trap();
    }
    hf_tokenizer_free(&t);
    return 0;
}
