/* base64.h - standard base64 (RFC 4648 alphabet, '=' padding). */
#ifndef CLARA_BASE64_H
#define CLARA_BASE64_H

#include <stddef.h>

/* malloc'd, NUL-terminated; NULL when out of memory. */
char *clara_base64_encode(const void *data, size_t n);
/* Decodes base64 (padding optional, no whitespace); malloc'd bytes, or NULL when s is not
 * base64 or memory runs out. */
unsigned char *clara_base64_decode(const char *s, size_t n, size_t *out_len);

#endif
