/* elemconv.c - f32/f16/bf16 element conversion used by the converter's streaming writer. */
#include "convert/elemconv.h"

#include <string.h>

#include "base/fp16.h"

int clara_elemconv_supported(clara_type t) {
    return t == CLARA_TYPE_F32 || t == CLARA_TYPE_F16 || t == CLARA_TYPE_BF16;
}

static float load_elem(clara_type t, const unsigned char *p) {
    uint16_t h;
    float f;
    switch (t) {
    case CLARA_TYPE_F16:
        memcpy(&h, p, 2);
        return clara_f16_to_f32(h);
    case CLARA_TYPE_BF16:
        memcpy(&h, p, 2);
        return clara_bf16_to_f32(h);
    default:
        memcpy(&f, p, 4);
        return f;
    }
}

static void store_elem(clara_type t, unsigned char *p, float f) {
    uint16_t h;
    switch (t) {
    case CLARA_TYPE_F16:
        h = clara_f32_to_f16(f);
        memcpy(p, &h, 2);
        break;
    case CLARA_TYPE_BF16:
        h = clara_f32_to_bf16(f);
        memcpy(p, &h, 2);
        break;
    default:
        memcpy(p, &f, 4);
        break;
    }
}

static size_t elem_size(clara_type t) {
    return t == CLARA_TYPE_F32 ? 4 : 2;
}

void clara_convert_elems(clara_type src_type, const void *src, clara_type dst_type, void *dst,
                         size_t n) {
    if (src_type == dst_type) {
        memcpy(dst, src, n * elem_size(src_type));
        return;
    }
    const unsigned char *s = src;
    unsigned char *d = dst;
    size_t ss = elem_size(src_type), ds = elem_size(dst_type);
    for (size_t i = 0; i < n; i++)
        store_elem(dst_type, d + i * ds, load_elem(src_type, s + i * ss));
}
