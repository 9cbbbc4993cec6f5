/* fuzz_safetensors.c - libFuzzer target: st_parse on arbitrary bytes, then every accessor, reading
 * each tensor's first and last byte so ASan sees any out-of-range data pointer. */
#include <stddef.h>
#include <stdint.h>

#include "convert/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file *f = NULL;
    if (st_parse(data, size, "fuzz.safetensors", &f) != CLARA_OK) return 0;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < st_n_tensors(f); i++) {
        const st_tensor *t = st_tensor_at(f, i);
        if (t->nbytes) sink ^= t->data[0] ^ t->data[t->nbytes - 1];
        if (st_find(f, t->name) != t) __builtin_trap();
    }
    (void)st_metadata(f, "format");
    (void)sink;
    st_free(f);
    return 0;
}
