/* clara.h - the one public header of the clara-server engine.
 *
 * CLaRa (Apple, arXiv 2511.18659) is Mistral-7B-Instruct-v0.2 plus LoRA adapters that compress
 * documents into a few "memory token" vectors and answer questions from them. This header is the
 * stable C interface: opaque objects, status codes, and clara_last_error() for the message that
 * explains the last failure on the calling thread.
 */
#ifndef CLARA_H
#define CLARA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLARA_VERSION "0.1.0"

/* Every fallible library function returns one of these and records a message (what failed, in
 * which file or field) that clara_last_error() returns on the same thread. */
typedef enum {
    CLARA_OK = 0,
    CLARA_ERR_IO = 1,     /* a file could not be opened, read, written or mapped */
    CLARA_ERR_FORMAT = 2, /* input is malformed or corrupt (the SQLITE_CORRUPT of this project) */
    CLARA_ERR_UNSUPPORTED = 3, /* well-formed but uses something we do not implement */
    CLARA_ERR_NOMEM = 4,       /* allocation failed or a size exceeds a safety limit */
    CLARA_ERR_INVALID_ARG = 5, /* the caller passed something invalid */
    CLARA_ERR_NOT_FOUND = 6,   /* a required key, tensor or file is missing */
} clara_status;

/* Tensor element types. The numeric values are GGUF's (ggml_type) so they are written to files
 * as-is; the quantized block types are listed so the type table has room for them. */
typedef enum {
    CLARA_TYPE_F32 = 0,
    CLARA_TYPE_F16 = 1,
    CLARA_TYPE_Q4_0 = 2,
    CLARA_TYPE_Q4_1 = 3,
    CLARA_TYPE_Q5_0 = 6,
    CLARA_TYPE_Q5_1 = 7,
    CLARA_TYPE_Q8_0 = 8,
    CLARA_TYPE_Q8_1 = 9,
    CLARA_TYPE_Q2_K = 10,
    CLARA_TYPE_Q3_K = 11,
    CLARA_TYPE_Q4_K = 12,
    CLARA_TYPE_Q5_K = 13,
    CLARA_TYPE_Q6_K = 14,
    CLARA_TYPE_Q8_K = 15,
    CLARA_TYPE_I8 = 24,
    CLARA_TYPE_I16 = 25,
    CLARA_TYPE_I32 = 26,
    CLARA_TYPE_I64 = 27,
    CLARA_TYPE_F64 = 28,
    CLARA_TYPE_BF16 = 30,
    CLARA_TYPE_COUNT = 31,
} clara_type;

/* Message describing the last error on this thread ("" if none). Valid until the next failing
 * call on the same thread. */
const char *clara_last_error(void);

/* Short name of a status code, e.g. "format error". */
const char *clara_status_name(clara_status st);

#ifdef __cplusplus
}
#endif

#endif /* CLARA_H */
