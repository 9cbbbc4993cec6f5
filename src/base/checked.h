/* checked.h - overflow-checked size arithmetic for parsers of untrusted files. */
#ifndef CLARA_BASE_CHECKED_H
#define CLARA_BASE_CHECKED_H

#include <stdbool.h>
#include <stdint.h>

/* Each returns false (and leaves *out unspecified) when the result does not fit in 64 bits. */
static inline bool clara_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
static inline bool clara_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

#endif
