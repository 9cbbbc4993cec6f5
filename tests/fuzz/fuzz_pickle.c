/* fuzz_pickle.c - libFuzzer target for the pickle VM and the .pth binding. Each input is run
 * (1) through pk_load as a raw pickle, (2) through pth_parse as a whole .pth file, and (3) as the
 * data.pkl of a small stored ZIP built here with storages archive/data/0..3 (64 bytes each) and
 * correct CRCs, so mutated pickles reach the tensor binding instead of failing the CRC check. */
#include <stdlib.h>
#include <string.h>

#include "convert/pth.h"
#include "convert/torch_pickle.h"
#include "convert/zip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *put(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

/* A stored ZIP of `n` entries (no ZIP64: inputs are small). Returns its length. */
static size_t build_zip(uint8_t *out, const char *const *names, const uint8_t *const *datas,
                        const size_t *sizes, int n) {
    uint8_t *p = out;
    uint32_t offs[8], crcs[8];
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        offs[i] = (uint32_t)(p - out);
        crcs[i] = zip_crc32(0, datas[i], sizes[i]);
        p = put(p, 0x04034b50u, 4), p = put(p, 20, 2), p = put(p, 0, 2), p = put(p, 0, 2);
        p = put(p, 0, 4), p = put(p, crcs[i], 4), p = put(p, sizes[i], 4), p = put(p, sizes[i], 4);
        p = put(p, nl, 2), p = put(p, 0, 2);
        memcpy(p, names[i], nl), p += nl;
        if (sizes[i]) memcpy(p, datas[i], sizes[i]);
        p += sizes[i];
    }
    uint8_t *cd = p;
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        p = put(p, 0x02014b50u, 4), p = put(p, 20, 2), p = put(p, 20, 2), p = put(p, 0, 2);
        p = put(p, 0, 2), p = put(p, 0, 4), p = put(p, crcs[i], 4), p = put(p, sizes[i], 4);
        p = put(p, sizes[i], 4), p = put(p, nl, 2), p = put(p, 0, 2), p = put(p, 0, 2);
        p = put(p, 0, 2), p = put(p, 0, 2), p = put(p, 0, 4), p = put(p, offs[i], 4);
        memcpy(p, names[i], nl), p += nl;
    }
    size_t cd_size = (size_t)(p - cd), cd_off = (size_t)(cd - out);
    p = put(p, 0x06054b50u, 4), p = put(p, 0, 4), p = put(p, (uint64_t)n, 2);
    p = put(p, (uint64_t)n, 2), p = put(p, cd_size, 4), p = put(p, cd_off, 4), p = put(p, 0, 2);
    return (size_t)(p - out);
}

static void walk_pth(const pth_file *f) {
    for (size_t i = 0; i < pth_n_tensors(f); i++) {
        const pth_tensor *t = pth_tensor_at(f, i);
        if (t->nbytes > (1u << 20)) continue; /* stride-0 views can be large; skip the copy */
        uint8_t *buf = malloc(t->nbytes ? t->nbytes : 1);
        if (buf && pth_tensor_copy(t, buf, t->nbytes) != CLARA_OK) __builtin_trap();
        free(buf);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pk_result *r = NULL;
    if (pk_load(data, size, "fuzz.pkl", &r) == CLARA_OK) pk_free(r);
    pth_file *f = NULL;
    if (pth_parse(data, size, "fuzz.pth", &f) == CLARA_OK) {
        walk_pth(f);
        pth_free(f);
    }
    if (size > (1u << 16)) return 0;
    static uint8_t storage[64];
    for (int i = 0; i < 64; i++) storage[i] = (uint8_t)(i * 37 + 1);
    const char *names[] = {"archive/data.pkl", "archive/byteorder", "archive/data/0",
                           "archive/data/1",   "archive/data/2",    "archive/data/3"};
    const uint8_t *datas[] = {data, (const uint8_t *)"little", storage, storage, storage, storage};
    size_t sizes[] = {size, 6, 64, 32, 8, 0};
    uint8_t *zip = malloc(size + 1024);
    if (!zip) return 0;
    size_t n = build_zip(zip, names, datas, sizes, 6);
    if (pth_parse(zip, n, "fuzz.pth", &f) == CLARA_OK) {
        walk_pth(f);
        pth_free(f);
    }
    free(zip);
    return 0;
}
