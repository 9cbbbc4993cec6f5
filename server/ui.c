/* ui.c - the web page: GET / and /ui/ serve the single-page application written in server/ui/
 * (index.html, ui.css, ui.js), embedded in the binary at build time (the Makefile's UI_C rule),
 * so the server needs no file at run time and the page loads nothing from elsewhere. Each file is
 * served with its content type, a strict Content-Security-Policy (no inline script or style, only
 * this server), nosniff, and an ETag made from its SHA-256: a browser revalidates (no-cache) and
 * gets 304 while the file is unchanged. The files need no API key; the page's API calls do. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/sha256.h"
#include "server.h"

extern const unsigned char srv_ui_index_html[], srv_ui_ui_css[], srv_ui_ui_js[];
extern const size_t srv_ui_index_html_len, srv_ui_ui_css_len, srv_ui_ui_js_len;

typedef struct {
    const char *path;
    const unsigned char *data;
    const size_t *len;
    const char *type;
    char etag[24]; /* "\"" + 16 hex digits of the SHA-256 + "\"" */
} ui_file;

static ui_file g_files[] = {
    {"/", srv_ui_index_html, &srv_ui_index_html_len, "text/html; charset=utf-8", ""},
    {"/ui", srv_ui_index_html, &srv_ui_index_html_len, "text/html; charset=utf-8", ""},
    {"/ui/", srv_ui_index_html, &srv_ui_index_html_len, "text/html; charset=utf-8", ""},
    {"/ui/index.html", srv_ui_index_html, &srv_ui_index_html_len, "text/html; charset=utf-8", ""},
    {"/ui/ui.css", srv_ui_ui_css, &srv_ui_ui_css_len, "text/css; charset=utf-8", ""},
    {"/ui/ui.js", srv_ui_ui_js, &srv_ui_ui_js_len, "text/javascript; charset=utf-8", ""},
};
#define N_FILES (sizeof g_files / sizeof g_files[0])

static pthread_once_t g_etags_once = PTHREAD_ONCE_INIT;

static void make_etags(void) {
    for (size_t i = 0; i < N_FILES; i++) {
        uint8_t h[CLARA_SHA256_LEN];
        clara_sha256(g_files[i].data, *g_files[i].len, h);
        char *e = g_files[i].etag;
        e[0] = '"';
        for (int k = 0; k < 8; k++) snprintf(e + 1 + 2 * k, 3, "%02x", h[k]);
        e[17] = '"';
        e[18] = '\0';
    }
}

static const ui_file *find(const char *path) {
    for (size_t i = 0; i < N_FILES; i++)
        if (strcmp(path, g_files[i].path) == 0) return &g_files[i];
    return NULL;
}

bool srv_ui_path(const char *path) {
    return find(path) != NULL;
}

/* If-None-Match: "*" or a comma-separated list of tags, weak ones (W/"...") included. */
static bool etag_matches(const char *header, const char *etag) {
    if (!header) return false;
    if (strcmp(header, "*") == 0) return true;
    size_t n = strlen(etag);
    for (const char *p = header; (p = strstr(p, etag)) != NULL; p += n) {
        char after = p[n];
        if (after == '\0' || after == ',' || after == ' ' || after == '\t') return true;
    }
    return false;
}

void srv_ui_serve(const char *path, const char *if_none_match, srv_reply *r) {
    pthread_once(&g_etags_once, make_etags);
    const ui_file *f = find(path);
    if (!f) {
        srv_reply_error(r, 404, "not_found", "no such endpoint");
        return;
    }
    r->page = SRV_PAGE_UI;
    r->etag = f->etag;
    r->cache_control = "no-cache"; /* revalidate each time: a new binary may serve a new page */
    r->content_type = f->type;
    if (etag_matches(if_none_match, f->etag)) {
        r->status = 304;
        r->body = strdup("");
        return;
    }
    r->status = 200;
    r->body = malloc(*f->len + 1);
    if (!r->body) return; /* srv_route answers 500 */
    memcpy(r->body, f->data, *f->len);
    r->body[*f->len] = '\0';
}
