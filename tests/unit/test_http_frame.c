/* test_http_frame.c - the strict HTTP/1.1 request framer: valid streams (pipelined, chunked with
 * extensions and trailers, HTTP/1.0, empty lines between requests) pass through byte for byte
 * whatever the split points; each kind of malformed or ambiguous framing stops with the right
 * status at the first byte that makes it so. */
#include <stdlib.h>

#include "http/frame.h"
#include "t.h"

/* Feeds s in pieces of `step` bytes; returns the bytes passed on (malloc'd) and their count. */
static char *feed(http_frame *f, const char *s, size_t n, size_t step, size_t *out_n) {
    char *out = malloc(n + HTTP_HEAD_MAX);
    size_t total = 0;
    http_frame_init(f);
    for (size_t at = 0; at < n;) {
        size_t k = n - at < step ? n - at : step, ol = 0;
        size_t used = http_frame_feed(f, s + at, k, out + total, &ol);
        total += ol;
        at += used;
        if (used < k) break;
    }
    *out_n = total;
    return out;
}

/* Heads are passed on canonical ("name:value", no whitespace around values, no Cookie); bodies,
 * chunk lines and trailers unchanged. */
static void test_valid_streams_pass_canonical(void) {
    static const char stream[] =
        "POST /compress HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}"
        "POST /v1/answer HTTP/1.1\r\nHost: localhost \r\nTransfer-Encoding: Chunked\t\r\n"
        "Cookie: a=\"\r\n\r\n"
        "3;name=value\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\n"
        "GET /health HTTP/1.0\r\n\r\n"
        "GET /status HTTP/1.1\r\nHost: [::1]:8765\r\nX-Empty:\r\nX-Tab: a\tb\r\n\r\n";
    static const char want[] =
        "POST /compress HTTP/1.1\r\nHost:localhost\r\nContent-Length:2\r\n\r\n{}"
        "POST /v1/answer HTTP/1.1\r\nHost:localhost\r\nTransfer-Encoding:Chunked\r\n\r\n"
        "3;name=value\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\n"
        "GET /health HTTP/1.0\r\n\r\n"
        "GET /status HTTP/1.1\r\nHost:[::1]:8765\r\nX-Empty:\r\nX-Tab:a\tb\r\n\r\n";
    size_t n = sizeof stream - 1, wn = sizeof want - 1;
    http_frame *f = malloc(sizeof *f);
    for (size_t step = 1; step <= n; step += step < 8 ? 1 : 13) {
        size_t got;
        char *out = feed(f, stream, n, step, &got);
        T_CHECK_MSG(f->state == HTTP_FRAME_HEAD && f->requests == 4, "step %zu: state %d, %llu",
                    step, (int)f->state, (unsigned long long)f->requests);
        T_CHECK_MSG(got == wn && memcmp(out, want, wn) == 0, "step %zu: passed on %zu, want %zu",
                    step, got, wn);
        T_CHECK(http_frame_idle(f));
        free(out);
    }
    /* empty lines before a request are dropped, not passed on */
    size_t got;
    char *out = feed(f, "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 31, 5, &got);
    T_CHECK(got == 26 && memcmp(out, "GET / HTTP/1.1\r\nHost:a\r\n\r\n", 26) == 0 &&
            f->requests == 1);
    free(out);
    free(f);
}

static void expect_error(const char *req, int status, size_t max_passed) {
    http_frame *f = malloc(sizeof *f);
    for (size_t step = 1; step <= 64; step *= 4) {
        size_t got;
        char *out = feed(f, req, strlen(req), step, &got);
        T_CHECK_MSG(f->state == HTTP_FRAME_ERROR && f->status == status && f->type && f->msg[0],
                    "%.40s (step %zu): state %d status %d", req, step, (int)f->state, f->status);
        T_CHECK_MSG(got <= max_passed, "%.40s: passed on %zu bytes", req, got);
        free(out);
    }
    free(f);
}

static void test_errors(void) {
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: "
                 "chunked\r\n\r\n",
                 400, 0);
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                 400, 0);
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400, 0);
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501, 0);
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, 0);
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1234567890123456789\r\n\r\n", 400,
                 0);
    expect_error("GARBAGE\r\n\r\n", 400, 0);
    expect_error("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, 0);
    expect_error("GET / HTTP/1.1\r\n\r\n", 400, 0);
    expect_error("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, 0);
    expect_error("GET / HTTP/1.1\nHost: a\n\n", 400, 0);
    expect_error("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n", 400, 0);
    expect_error("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400, 0);
    expect_error("GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", 400, 0);
    /* the head before a bad chunk was passed on; nothing after the bad line is */
    static const char chunked[] =
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    char buf[256];
    snprintf(buf, sizeof buf, "%s2\r\nabc\r\n0\r\n\r\n", chunked);
    expect_error(buf, 400, strlen(chunked) + 5);
    snprintf(buf, sizeof buf, "%sg\r\n", chunked);
    expect_error(buf, 400, strlen(chunked));
    snprintf(buf, sizeof buf, "%s1\r\na\r\n0\r\nbad trailer\r\n\r\n", chunked);
    expect_error(buf, 400, strlen(chunked) + 11);
    /* sizes */
    char *big = malloc(HTTP_HEAD_MAX + 64);
    memset(big, 'a', HTTP_HEAD_MAX + 63);
    memcpy(big, "GET /", 5);
    big[HTTP_HEAD_MAX + 63] = '\0';
    expect_error(big, 414, 0);
    memcpy(big, "GET / HTTP/1.1\r\nHost: a\r\nX: ", 28);
    expect_error(big, 431, 0);
    free(big);
}

/* The current request's Origin is kept while its body arrives (the guard's own errors carry CORS
 * headers from it), and forgotten once the request is complete or when its value is too long. */
static void test_origin_kept(void) {
    static const char req[] = "POST /x HTTP/1.1\r\nHost: a\r\norigin:  http://a.example \r\n"
                              "Content-Length: 4\r\n\r\n{}";
    http_frame *f = malloc(sizeof *f);
    size_t n;
    free(feed(f, req, strlen(req), 7, &n));
    T_EQ_INT(f->state, HTTP_FRAME_BODY);
    T_CHECK(f->have_head);
    T_EQ_STR(f->origin, "http://a.example");
    char out[16];
    size_t ol = 0;
    http_frame_feed(f, "{}", 2, out, &ol);
    T_CHECK(!f->have_head);
    T_EQ_STR(f->origin, "");
    char *big = malloc(HTTP_ORIGIN_MAX + 128);
    int k = snprintf(big, HTTP_ORIGIN_MAX + 128,
                     "POST /x HTTP/1.1\r\nHost: a\r\nOrigin: %0*d\r\n"
                     "Content-Length: 4\r\n\r\n",
                     HTTP_ORIGIN_MAX, 0);
    free(feed(f, big, (size_t)k, 64, &n));
    T_EQ_INT(f->state, HTTP_FRAME_BODY);
    T_EQ_STR(f->origin, "");
    free(big);
    free(f);
}

int main(void) {
    test_valid_streams_pass_canonical();
    test_errors();
    test_origin_kept();
    return t_report("test_http_frame");
}
