/* sha256.h - SHA-256 (FIPS 180-4), incremental: for the model fingerprint (fingerprint.c), which
 * must not depend on an external crypto library. */
#ifndef CLARA_BASE_SHA256_H
#define CLARA_BASE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define CLARA_SHA256_LEN 32

typedef struct {
    uint32_t h[8];
    uint64_t n_bytes; /* message length so far */
    uint8_t buf[64];  /* a partial block */
    size_t n_buf;
} clara_sha256_ctx;

void clara_sha256_init(clara_sha256_ctx *c);
void clara_sha256_update(clara_sha256_ctx *c, const void *data, size_t n);
void clara_sha256_final(clara_sha256_ctx *c, uint8_t out[CLARA_SHA256_LEN]);
/* One-shot digest of n bytes. */
void clara_sha256(const void *data, size_t n, uint8_t out[CLARA_SHA256_LEN]);

#endif
