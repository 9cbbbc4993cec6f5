/* utf8.h - strict UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing past
 * U+10FFFF), shared by the tokenizer and the server. */
#ifndef CLARA_BASE_UTF8_H
#define CLARA_BASE_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length of the well-formed character at s (1..4), or 0 when the bytes there are not one. */
size_t clara_utf8_len(const uint8_t *s, size_t n);

/* True when all n bytes are well-formed UTF-8; otherwise *bad (if given) is the first bad
 * byte's offset. */
bool clara_utf8_valid(const char *s, size_t n, size_t *bad);

#endif
