/* frame.c - strict HTTP/1.1 request framing (see frame.h). The rules, from RFC 9112 and what
 * request smuggling exploits: a request line of method, origin-form target and HTTP/1.0 or 1.1,
 * separated by single spaces; lines end in CRLF (a bare LF or CR is an error); field names are
 * tokens directly followed by a colon (no space before it); no obsolete line folding; no control
 * bytes in values; at most one Host (exactly one in HTTP/1.1), one Content-Length of digits only,
 * one Transfer-Encoding that is exactly "chunked" (anything else: 501), and never both. */
#include "http/frame.h"

#include <stdio.h>
#include <string.h>

void http_frame_init(http_frame *f) {
    memset(f, 0, sizeof *f);
    f->state = HTTP_FRAME_HEAD;
}

bool http_frame_idle(const http_frame *f) {
    return f->state == HTTP_FRAME_HEAD && f->head_len == 0;
}

/* RFC 9110 tchar */
static bool is_tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-value bytes: visible ASCII, space, tab, obs-text */
static bool is_vchar(unsigned char c) {
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool ieq(const char *a, size_t n, const char *lit) {
    if (strlen(lit) != n) return false;
    for (size_t i = 0; i < n; i++) {
        char c = a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] + 32) : a[i];
        if (c != lit[i]) return false;
    }
    return true;
}

typedef struct {
    const char **type;
    char *msg;
    size_t msg_size;
} errout;

static int fail(errout *e, int status, const char *type, const char *msg) {
    *e->type = type;
    snprintf(e->msg, e->msg_size, "%s", msg);
    return status;
}

/* The request line [p, p+n) without its CRLF. */
static int check_request_line(const char *p, size_t n, bool *http10, errout *e) {
    if (n > HTTP_LINE_MAX) return fail(e, 414, "uri_too_long", "the request line is too long");
    size_t i = 0;
    while (i < n && i < 32 && is_tchar((unsigned char)p[i])) i++;
    if (i == 0 || i >= n || p[i] != ' ')
        return fail(e, 400, "bad_request", "malformed request line (want: METHOD /path HTTP/1.1)");
    size_t t0 = ++i;
    while (i < n && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f) i++;
    if (i == t0 || i >= n || p[i] != ' ')
        return fail(e, 400, "bad_request", "malformed request target (spaces or control bytes)");
    if (p[t0] != '/' && !(i - t0 == 1 && p[t0] == '*'))
        return fail(e, 400, "bad_request", "the request target must be a path starting with /");
    const char *v = p + i + 1;
    size_t vn = n - i - 1;
    if (vn != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return fail(e, 400, "bad_request", "malformed HTTP version in the request line");
    if (memcmp(v, "HTTP/1.1", 8) != 0 && memcmp(v, "HTTP/1.0", 8) != 0)
        return fail(e, 505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served");
    *http10 = v[7] == '0';
    return 0;
}

/* One field line [p, p+n) without its CRLF: name, colon, optional whitespace, value. */
static int split_field(const char *p, size_t n, size_t *name_len, const char **val, size_t *vlen,
                       errout *e) {
    if (n > 0 && (p[0] == ' ' || p[0] == '\t'))
        return fail(e, 400, "bad_request", "obsolete line folding in a header field");
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)p[i])) i++;
    if (i == 0 || i >= n || p[i] != ':')
        return fail(e, 400, "bad_request",
                    "malformed header field (a name of token characters, then ':' with no space "
                    "before it)");
    *name_len = i;
    size_t a = i + 1, b = n;
    for (size_t k = a; k < n; k++)
        if (!is_vchar((unsigned char)p[k]))
            return fail(e, 400, "bad_request", "control character in a header field value");
    while (a < b && (p[a] == ' ' || p[a] == '\t')) a++;
    while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t')) b--;
    *val = p + a;
    *vlen = b - a;
    return 0;
}

typedef struct {
    int n_cl, n_te, n_host;
    const char *cl, *te;
    size_t cl_len, te_len, host_len;
} framing;

static void note_field(framing *fr, const char *name, size_t nl, const char *v, size_t vl) {
    if (ieq(name, nl, "content-length")) {
        fr->n_cl++;
        fr->cl = v;
        fr->cl_len = vl;
    } else if (ieq(name, nl, "transfer-encoding")) {
        fr->n_te++;
        fr->te = v;
        fr->te_len = vl;
    } else if (ieq(name, nl, "host")) {
        fr->n_host++;
        fr->host_len = vl;
    }
}

/* What the framing headers say about the body; see frame.h. */
static int decide_body(const framing *fr, bool http10, int *body, uint64_t *length, errout *e) {
    if (fr->n_host > 1) return fail(e, 400, "bad_request", "more than one Host header");
    if (!http10 && (fr->n_host == 0 || fr->host_len == 0))
        return fail(e, 400, "bad_request", "an HTTP/1.1 request needs a Host header");
    if (fr->n_cl && fr->n_te)
        return fail(e, 400, "bad_request",
                    "both Content-Length and Transfer-Encoding: the body's end is ambiguous");
    if (fr->n_cl > 1) return fail(e, 400, "bad_request", "more than one Content-Length header");
    if (fr->n_te > 1) return fail(e, 400, "bad_request", "more than one Transfer-Encoding header");
    *body = 0;
    *length = 0;
    if (fr->n_te) {
        if (http10) return fail(e, 400, "bad_request", "Transfer-Encoding in an HTTP/1.0 request");
        if (!ieq(fr->te, fr->te_len, "chunked"))
            return fail(e, 501, "not_implemented",
                        "unsupported Transfer-Encoding (only \"chunked\" is accepted)");
        *body = 2;
        return 0;
    }
    if (fr->n_cl) {
        if (fr->cl_len == 0 || fr->cl_len > 18)
            return fail(e, 400, "bad_request", "invalid Content-Length");
        uint64_t v = 0;
        for (size_t i = 0; i < fr->cl_len; i++) {
            if (fr->cl[i] < '0' || fr->cl[i] > '9')
                return fail(e, 400, "bad_request", "invalid Content-Length (digits only)");
            v = v * 10 + (uint64_t)(fr->cl[i] - '0');
        }
        *length = v;
        *body = v > 0;
    }
    return 0;
}

/* The end of the line starting at p within [p, end): the offset of its CR (followed by LF), or
 * -1 with an error for a bare CR or LF. */
static long line_end(const char *p, const char *end, errout *e) {
    for (const char *q = p; q < end; q++) {
        if (*q == '\n') return fail(e, 400, "bad_request", "bare LF in the request head"), -1;
        if (*q == '\r') {
            if (q + 1 >= end || q[1] != '\n')
                return fail(e, 400, "bad_request", "bare CR in the request head"), -1;
            return q - p;
        }
    }
    return fail(e, 400, "bad_request", "unterminated line in the request head"), -1;
}

int http_frame_check_head(const char *head, size_t n, int *body, uint64_t *length, bool *http10,
                          const char **type, char *msg, size_t msg_size) {
    errout e = {type, msg, msg_size};
    const char *p = head, *end = head + n;
    long ln = line_end(p, end, &e);
    if (ln < 0) return 400;
    int rc = check_request_line(p, (size_t)ln, http10, &e);
    if (rc) return rc;
    p += ln + 2;
    framing fr = {0};
    int fields = 0;
    while (p < end) {
        ln = line_end(p, end, &e);
        if (ln < 0) return 400;
        if (ln == 0) break; /* the blank line */
        if (++fields > HTTP_FIELDS_MAX)
            return fail(&e, 431, "headers_too_large", "too many header fields");
        size_t nl, vl;
        const char *v;
        rc = split_field(p, (size_t)ln, &nl, &v, &vl, &e);
        if (rc) return rc;
        note_field(&fr, p, nl, v, vl);
        p += ln + 2;
    }
    return decide_body(&fr, *http10, body, length, &e);
}

/* Writes a checked head as the server behind will read it: the request line, then each field as
 * "name:value" with the whitespace around the value removed (libmicrohttpd 0.9.75 keeps trailing
 * whitespace, so "Transfer-Encoding: chunked " would be chunked to us and not to it), and
 * without Cookie fields (unused here; libmicrohttpd answers some malformed ones with its own
 * page). Never longer than the head, and a subsequence of it. Returns the length written; the
 * Origin field's value goes to origin (HTTP_ORIGIN_MAX bytes; left as it is when the value does
 * not fit). */
static size_t canonical_head(const char *head, size_t n, char *out, char *origin) {
    const char *p = head, *end = head + n;
    const char *eol = memchr(p, '\r', (size_t)(end - p));
    size_t o = (size_t)(eol - p) + 2;
    memcpy(out, p, o);
    p = eol + 2;
    while (p < end) {
        eol = memchr(p, '\r', (size_t)(end - p));
        size_t ln = (size_t)(eol - p), nl, vl;
        const char *v, *type = NULL;
        char msg[8];
        errout e = {&type, msg, sizeof msg};
        if (ln > 0 && split_field(p, ln, &nl, &v, &vl, &e) == 0 && !ieq(p, nl, "cookie")) {
            if (ieq(p, nl, "origin") && vl < HTTP_ORIGIN_MAX) {
                memcpy(origin, v, vl);
                origin[vl] = '\0';
            }
            memcpy(out + o, p, nl + 1);
            memcpy(out + o + nl + 1, v, vl);
            o += nl + 1 + vl;
            memcpy(out + o, "\r\n", 2);
            o += 2;
        }
        p = eol + 2;
    }
    memcpy(out + o, "\r\n", 2);
    return o + 2;
}

static size_t stop(http_frame *f, int status, const char *type, const char *msg, size_t used) {
    f->state = HTTP_FRAME_ERROR;
    f->status = status;
    f->type = type;
    snprintf(f->msg, sizeof f->msg, "%s", msg);
    return used;
}

static void request_done(http_frame *f) {
    f->state = HTTP_FRAME_HEAD;
    f->head_len = 0;
    f->have_head = false;
    f->origin[0] = '\0';
    f->requests++;
}

/* Head bytes: held until the blank line, then checked and passed on whole. */
static size_t feed_head(http_frame *f, const char *in, size_t n, char *out, size_t *ol) {
    size_t i = 0;
    while (i < n) {
        if (f->head_len == 0 && (in[i] == '\r' || in[i] == '\n')) {
            /* RFC 9112 2.2: empty lines before a request line may be ignored; we pass none on */
            i++;
            continue;
        }
        if (f->head_len == HTTP_HEAD_MAX)
            return stop(f, 431, "headers_too_large", "the request head is too large", i);
        f->head[f->head_len++] = in[i++];
        size_t h = f->head_len;
        /* a bare LF or CR is refused at once rather than waiting for a blank line that a
         * lenient parser would have seen */
        bool lf = f->head[h - 1] == '\n', after_cr = h >= 2 && f->head[h - 2] == '\r';
        if (lf != after_cr)
            return stop(f, 400, "bad_request",
                        lf ? "bare LF in the request head" : "bare CR in the request head", i);
        if (h >= 4 && memcmp(f->head + h - 4, "\r\n\r\n", 4) == 0) break;
        if (h > HTTP_LINE_MAX + 2 && !memchr(f->head, '\n', h))
            return stop(f, 414, "uri_too_long", "the request line is too long", i);
    }
    size_t h = f->head_len;
    if (h < 4 || memcmp(f->head + h - 4, "\r\n\r\n", 4) != 0) return i;
    int body;
    uint64_t len;
    const char *type = NULL;
    char msg[sizeof f->msg];
    int st = http_frame_check_head(f->head, h, &body, &len, &f->http10, &type, msg, sizeof msg);
    if (st) return stop(f, st, type, msg, i);
    f->origin[0] = '\0';
    f->have_head = true;
    *ol += canonical_head(f->head, h, out + *ol, f->origin);
    f->head_len = 0;
    if (body == 1) {
        f->state = HTTP_FRAME_BODY;
        f->left = len;
    } else if (body == 2) {
        f->state = HTTP_FRAME_CHUNK_SIZE;
        f->line_len = 0;
    } else {
        request_done(f);
    }
    return i;
}

/* `left` body or chunk bytes pass through as they come. */
static size_t feed_data(http_frame *f, const char *in, size_t n, char *out, size_t *ol) {
    size_t k = n < f->left ? n : (size_t)f->left;
    memcpy(out + *ol, in, k);
    *ol += k;
    f->left -= k;
    if (f->left == 0) {
        if (f->state == HTTP_FRAME_BODY) {
            request_done(f);
        } else {
            f->state = HTTP_FRAME_CHUNK_END;
            f->line_len = 0;
        }
    }
    return k;
}

/* A chunk-size line: hex digits, optionally ";extensions" (visible bytes). */
static int chunk_size(const char *p, size_t n, uint64_t *size) {
    size_t i = 0;
    uint64_t v = 0;
    while (i < n && i < 15) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) break;
        v = v * 16 + (uint64_t)d;
        i++;
    }
    if (i == 0 || (i < n && p[i] != ';')) return -1;
    for (; i < n; i++)
        if (!is_vchar((unsigned char)p[i]) || p[i] == '\t') return -1;
    *size = v;
    return 0;
}

/* Checks a complete line of the chunked coding (without its CRLF) and moves to the next state;
 * -1 after stop() on an error. */
static int check_line(http_frame *f, size_t ln) {
    if (f->state == HTTP_FRAME_CHUNK_END) {
        if (ln != 0) return stop(f, 400, "bad_request", "chunk data longer than its size", 0), -1;
        f->state = HTTP_FRAME_CHUNK_SIZE;
    } else if (f->state == HTTP_FRAME_CHUNK_SIZE) {
        uint64_t size;
        if (chunk_size(f->line, ln, &size) != 0)
            return stop(f, 400, "bad_request", "invalid chunk size in the chunked body", 0), -1;
        f->left = size;
        f->trailers = 0;
        f->state = size ? HTTP_FRAME_CHUNK_DATA : HTTP_FRAME_TRAILER;
    } else if (ln == 0) {
        request_done(f);
    } else {
        const char *type = NULL, *v;
        char msg[sizeof f->msg];
        errout e = {&type, msg, sizeof msg};
        size_t nl, vl;
        if (++f->trailers > HTTP_TRAILERS_MAX)
            return stop(f, 431, "headers_too_large", "too many trailer fields", 0), -1;
        if (split_field(f->line, ln, &nl, &v, &vl, &e) != 0) return stop(f, 400, type, msg, 0), -1;
    }
    return 0;
}

/* A line of the chunked coding (size line, the CRLF after data, a trailer line) is held until
 * its CRLF, then checked and passed on. */
static size_t feed_line(http_frame *f, const char *in, size_t n, char *out, size_t *ol) {
    size_t i = 0;
    while (i < n) {
        char c = in[i++];
        if (f->line_len == sizeof f->line)
            return stop(f, 400, "bad_request", "a chunk-size or trailer line is too long", i);
        f->line[f->line_len++] = c;
        if (c == '\n') break;
    }
    size_t ln = f->line_len;
    if (f->line[ln - 1] != '\n') return i;
    if (ln < 2 || f->line[ln - 2] != '\r' || memchr(f->line, '\r', ln - 2))
        return stop(f, 400, "bad_request", "bare CR or LF in the chunked body", i);
    if (check_line(f, ln - 2) != 0) return i;
    /* only a line found valid is passed on */
    memcpy(out + *ol, f->line, ln);
    *ol += ln;
    f->line_len = 0;
    return i;
}

size_t http_frame_feed(http_frame *f, const char *in, size_t n, char *out, size_t *out_len) {
    size_t used = 0;
    *out_len = 0;
    while (used < n && f->state != HTTP_FRAME_ERROR) {
        const char *p = in + used;
        size_t left = n - used;
        switch (f->state) {
        case HTTP_FRAME_HEAD:
            used += feed_head(f, p, left, out, out_len);
            break;
        case HTTP_FRAME_BODY:
        case HTTP_FRAME_CHUNK_DATA:
            used += feed_data(f, p, left, out, out_len);
            break;
        default:
            used += feed_line(f, p, left, out, out_len);
            break;
        }
    }
    return used;
}
