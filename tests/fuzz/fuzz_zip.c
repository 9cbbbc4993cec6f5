/* fuzz_zip.c - libFuzzer target: zip_parse on arbitrary bytes, then walks every entry (lookup by
 * name, CRC over its data) so ASan sees any out-of-range entry. */
#include <stddef.h>
#include <stdint.h>

#include "convert/zip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zip_archive *z = NULL;
    if (zip_parse(data, size, "fuzz.zip", &z) != CLARA_OK) return 0;
    for (size_t i = 0; i < zip_n_entries(z); i++) {
        const zip_entry *e = zip_entry_at(z, i);
        if (zip_find(z, e->name) != e) __builtin_trap();
        (void)zip_entry_check_crc(z, e);
    }
    zip_free(z);
    return 0;
}
