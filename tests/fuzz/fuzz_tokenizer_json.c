/* fuzz_tokenizer_json.c - libFuzzer target for the tokenizer.json and tokenizer_config.json
 * readers. The first byte picks the reader: 0 tokenizer.json; 1 tokenizer_config.json applied to
 * a small tokenizer.model vocabulary (so added_tokens_decoder extends it); 2 tokenizer_config.json
 * on an empty tokenizer. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "convert/hf_tokenizer.h"

/* ModelProto: pieces <unk> (UNKNOWN), <s>, </s> (CONTROL), a, b, ab; trainer_spec model_type BPE */
static const uint8_t base_model[] = {
    0x0a, 0x0e, 0x0a, 0x05, '<',  'u',  'n',  'k',  '>',  0x15, 0,    0,    0,    0,    0x18, 0x02,
    0x0a, 0x0c, 0x0a, 0x03, '<',  's',  '>',  0x15, 0,    0,    0,    0,    0x18, 0x03, 0x0a, 0x0d,
    0x0a, 0x04, '<',  '/',  's',  '>',  0x15, 0,    0,    0,    0,    0x18, 0x03, 0x0a, 0x08, 0x0a,
    0x01, 'a',  0x15, 0,    0,    0x80, 0xbf, 0x0a, 0x08, 0x0a, 0x01, 'b',  0x15, 0,    0,    0,
    0xc0, 0x0a, 0x09, 0x0a, 0x02, 'a',  'b',  0x15, 0,    0,    0,    0xbf, 0x12, 0x02, 0x18, 0x02,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    clara_hf_tokenizer t;
    if (size < 1) return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 3) {
    case 0:
        if (hf_tokenizer_parse_json(text, len, "fuzz.json", &t) == CLARA_OK) {
            /* touch everything the converter reads */
            for (uint32_t i = 0; i < t.n_vocab; i++)
                if (!t.tokens[i] || t.token_types[i] < 1 || t.token_types[i] > 6) __builtin_trap();
            for (uint64_t i = 0; i < t.n_merges; i++)
                if (!strchr(t.merges[i], ' ')) __builtin_trap();
        }
        hf_tokenizer_free(&t);
        break;
    case 1:
        if (hf_tokenizer_parse_spm(base_model, sizeof base_model, "fuzz.model", &t) != CLARA_OK)
            __builtin_trap();
        hf_tokenizer_parse_config(text, len, "fuzz_config.json", &t);
        for (uint32_t i = 0; i < t.n_vocab; i++)
            if (!t.tokens[i]) __builtin_trap();
        hf_tokenizer_free(&t);
        break;
    default:
        memset(&t, 0, sizeof t);
        hf_tokenizer_parse_config(text, len, "fuzz_config.json", &t);
        hf_tokenizer_free(&t);
        break;
    }
    return 0;
}
