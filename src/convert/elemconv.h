/* elemconv.h - element-wise conversion between the plain float types (f32, f16, bf16). Widening
 * is exact; narrowing rounds to nearest even (fp16.h). */
#ifndef CLARA_CONVERT_ELEMCONV_H
#define CLARA_CONVERT_ELEMCONV_H

#include <stddef.h>

#include "clara.h"

/* True when clara_convert_elems supports this type as a source or destination. */
int clara_elemconv_supported(clara_type t);

/* Converts n elements; src and dst may be unaligned; they must not overlap. */
void clara_convert_elems(clara_type src_type, const void *src, clara_type dst_type, void *dst,
                         size_t n);

#endif
