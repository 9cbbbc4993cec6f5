/* frame.h - strict HTTP/1.1 request framing (RFC 9112), as a pure incremental parser over bytes.
 *
 * The server's connection guard feeds it everything a client sends. It holds each request head
 * until the blank line, validates it (request line, field syntax, the framing headers), passes it
 * on in a canonical form (fields as "name:value", whitespace around values removed, no Cookie
 * fields: what the server behind reads is exactly what was checked), and then passes the body
 * through unchanged, following Content-Length or the chunked coding to know where the body ends
 * and the next request begins. Anything ambiguous - a request that a
 * proxy in front and the server behind could split differently (request smuggling), or that
 * libmicrohttpd would answer with its own HTML page - is an error with an HTTP status and a
 * message, and nothing after it is passed on. No allocation, no I/O: fuzzed directly. */
#ifndef CLARA_HTTP_FRAME_H
#define CLARA_HTTP_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_HEAD_MAX       (16u << 10) /* request line + header fields + blank line */
#define HTTP_LINE_MAX       (8u << 10)  /* the request line alone (longer: 414) */
#define HTTP_FIELDS_MAX     100         /* header fields per request */
#define HTTP_CHUNK_LINE_MAX 256         /* chunk-size line with extensions, trailer lines */
#define HTTP_TRAILERS_MAX   32
#define HTTP_ORIGIN_MAX     256 /* an Origin field kept for the guard's own error replies */

typedef enum {
    HTTP_FRAME_HEAD,       /* reading a request head (idle when nothing is held) */
    HTTP_FRAME_BODY,       /* Content-Length body: `left` bytes to come */
    HTTP_FRAME_CHUNK_SIZE, /* a chunk-size line */
    HTTP_FRAME_CHUNK_DATA, /* `left` bytes of chunk data */
    HTTP_FRAME_CHUNK_END,  /* the CRLF after chunk data */
    HTTP_FRAME_TRAILER,    /* trailer fields after the last chunk, then a blank line */
    HTTP_FRAME_ERROR,      /* stopped: see status, type, msg */
} http_frame_state;

typedef struct {
    http_frame_state state;
    char head[HTTP_HEAD_MAX];
    size_t head_len;
    uint64_t left;
    char line[HTTP_CHUNK_LINE_MAX];
    size_t line_len;
    int trailers;
    uint64_t requests; /* complete requests passed on */
    /* the current request, known once its head is complete */
    bool http10;
    bool have_head;               /* its head is complete (its body is arriving) */
    char origin[HTTP_ORIGIN_MAX]; /* its Origin field ("" for none, or one too long to keep), so
                                   * that an error answered in its body can carry CORS headers */
    /* the error, in HTTP_FRAME_ERROR */
    int status;
    const char *type;
    char msg[160];
} http_frame;

void http_frame_init(http_frame *f);

/* Consumes up to n bytes of input and appends the bytes to pass on to out (which must have room
 * for n + HTTP_HEAD_MAX bytes); *out_len receives how many were appended. Returns how many input
 * bytes were consumed: all of them unless an error stopped it (then f->state is
 * HTTP_FRAME_ERROR). */
size_t http_frame_feed(http_frame *f, const char *in, size_t n, char *out, size_t *out_len);

/* Between requests with nothing held: the connection is idle. */
bool http_frame_idle(const http_frame *f);

/* Validates one complete head (ending in CRLF CRLF). Returns 0, or an HTTP status with *type and
 * msg filled. On success *body is 0 (no body), 1 (Content-Length: *length bytes) or 2 (chunked). */
int http_frame_check_head(const char *head, size_t n, int *body, uint64_t *length, bool *http10,
                          const char **type, char *msg, size_t msg_size);

#endif
