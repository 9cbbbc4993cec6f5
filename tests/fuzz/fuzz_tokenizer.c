/* fuzz_tokenizer.c - libFuzzer target for the tokenizer loader and codec: the input is a GGUF
 * file; when its tokenizer keys load, a few fixed texts, the input's own bytes (as text) and ids
 * derived from the input are encoded and decoded, so loader validation gaps show up as crashes or
 * ASan reports in encode/decode rather than passing silently. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"

static volatile uint64_t g_sink;

static void roundtrip(const clara_tokenizer *t, const char *text, size_t len) {
    clara_ids v = {0};
    if (clara_tokenizer_encode(t, text, len, &v) == CLARA_OK) {
        char *out;
        size_t n;
        if (clara_tokenizer_decode_len(t, v.ids, v.n, &out, &n) == CLARA_OK) {
            g_sink += n;
            free(out);
        }
    }
    size_t off;
    g_sink += (uint64_t)clara_tokenizer_find_added(t, text, len, &off);
    clara_ids_free(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_ctx *g;
    if (gguf_parse(data, size, "fuzz.gguf", &g) != CLARA_OK) return 0;
    clara_tokenizer *t;
    clara_status s = clara_tokenizer_load(g, &t);
    gguf_free(g);
    if (s != CLARA_OK) return 0;
    static const char *const texts[] = {"<ENC><s>Paris is the capital of France.</s><MEM0>",
                                        " \n\t  x \xe2\x96\x81y \xf0\x9f\x98\x80 <SEP>", ""};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        roundtrip(t, texts[i], strlen(texts[i]));
    size_t tail = size < 256 ? size : 256; /* the input's last bytes as text (often invalid) */
    roundtrip(t, (const char *)data + size - tail, tail);
    uint32_t nv = clara_tokenizer_n_vocab(t);
    int32_t ids[64];
    size_t n = 0;
    for (size_t i = 0; i + 4 <= size && n < 64; i += 97) {
        uint32_t x;
        memcpy(&x, data + i, 4);
        ids[n++] = (int32_t)(x % (nv + 1)); /* sometimes out of range */
    }
    char *out;
    if (clara_tokenizer_decode(t, ids, n, &out) == CLARA_OK) {
        g_sink += strlen(out);
        free(out);
    }
    for (uint32_t i = 0; i < nv && i < 64; i++)
        g_sink += (uint64_t)clara_tokenizer_find_token(t, clara_tokenizer_piece(t, (int32_t)i)) +
                  clara_tokenizer_is_special(t, (int32_t)i);
    clara_tokenizer_free(t);
    return 0;
}
