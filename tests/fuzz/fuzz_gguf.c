/* fuzz_gguf.c - libFuzzer target for the GGUF reader: parses the input and, when it is accepted,
 * reads every key, value, array element and tensor byte through the public API, so that any
 * pointer the parser hands out that is not inside the input shows up under ASan. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gguf.h"

static volatile uint64_t g_sink;

static void touch_kv(const gguf_ctx *g, size_t i) {
    char buf[256];
    const char *key = gguf_kv_key(g, i);
    g_sink += strlen(key);
    gguf_kv_format(g, i, buf, sizeof buf);
    gguf_kv_format(g, i, buf, 7); /* clipped output */
    g_sink += strlen(buf);
    int64_t iv;
    uint64_t uv;
    float fv;
    double dv;
    bool bv;
    const char *sv;
    if (gguf_get_int(g, key, &iv) == CLARA_OK) g_sink += (uint64_t)iv;
    if (gguf_get_uint(g, key, &uv) == CLARA_OK) g_sink += uv;
    if (gguf_get_f32(g, key, &fv) == CLARA_OK) g_sink += fv == fv;
    if (gguf_get_f64(g, key, &dv) == CLARA_OK) g_sink += dv == dv;
    if (gguf_get_bool(g, key, &bv) == CLARA_OK) g_sink += bv;
    if (gguf_get_str(g, key, &sv) == CLARA_OK) g_sink += strlen(sv);
    gguf_vtype et;
    uint64_t n;
    if (gguf_get_arr(g, key, &et, &n) != CLARA_OK) return;
    if (et == GGUF_VT_STR) {
        for (uint64_t j = 0; j < n; j++) g_sink += strlen(gguf_get_arr_str(g, key, j));
        return;
    }
    const void *p;
    if (gguf_get_arr_data(g, key, et, &p, &n) != CLARA_OK) return;
    const uint8_t *b = p;
    for (uint64_t j = 0; j < n * gguf_vtype_size(et); j++) g_sink += b[j];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_ctx *g = NULL;
    if (gguf_parse(data, size, "fuzz.gguf", &g) != CLARA_OK) return 0;
    for (size_t i = 0; i < gguf_n_kv(g); i++) touch_kv(g, i);
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (gguf_find_tensor(g, t->name) != t) __builtin_trap();
        g_sink += t->nbytes;
        if (t->nbytes) g_sink += t->data[0] + t->data[t->nbytes - 1];
    }
    g_sink += gguf_version(g) + gguf_alignment(g) + gguf_data_offset(g);
    gguf_free(g);
    return 0;
}
