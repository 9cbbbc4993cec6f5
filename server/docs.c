/* docs.c - GET /docs: the embedded OpenAPI description (server/openapi.json) as one HTML page a
 * person can read, where the Python server had FastAPI's Swagger UI. Self-contained: no scripts,
 * no styles or fonts from elsewhere (the server may have no way out, and a page that loads code
 * from a CDN is one more thing to trust). Every text from the description is escaped. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

typedef struct {
    char *p;
    size_t n, cap;
    bool failed;
} buf;

static void put(buf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void puts_raw(buf *b, const char *s) {
    put(b, s, strlen(s));
}

/* Text into HTML: the five characters that could start markup or end an attribute. */
static void puts_text(buf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<':
            puts_raw(b, "&lt;");
            break;
        case '>':
            puts_raw(b, "&gt;");
            break;
        case '&':
            puts_raw(b, "&amp;");
            break;
        case '"':
            puts_raw(b, "&quot;");
            break;
        case '\'':
            puts_raw(b, "&#39;");
            break;
        default:
            put(b, s, 1);
        }
    }
}

/* An id for an anchor: letters, digits, '-' and '_' kept, anything else '-'. */
static void puts_id(buf *b, const char *prefix, const char *s) {
    puts_raw(b, prefix);
    for (; s && *s; s++) {
        char c = *s;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        put(b, ok ? &c : "-", 1);
    }
}

static const char *str_of(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A JSON value shown as indented JSON text, escaped. */
static void puts_json(buf *b, const cJSON *v) {
    char *s = cJSON_Print(v);
    if (!s) {
        b->failed = true;
        return;
    }
    puts_raw(b, "<pre>");
    puts_text(b, s);
    puts_raw(b, "</pre>\n");
    free(s);
}

static void operation(buf *b, const char *method, const char *path, const cJSON *op) {
    puts_raw(b, "<section class=\"op\"><h3><span class=\"m\">");
    for (const char *m = method; *m; m++) {
        char c = (char)(*m >= 'a' && *m <= 'z' ? *m - 32 : *m);
        puts_text(b, (char[]){c, 0});
    }
    puts_raw(b, "</span> <code>");
    puts_text(b, path);
    puts_raw(b, "</code></h3>\n");
    const char *summary = str_of(op, "summary"), *desc = str_of(op, "description");
    if (summary) {
        puts_raw(b, "<p><b>");
        puts_text(b, summary);
        puts_raw(b, "</b></p>\n");
    }
    if (desc) {
        puts_raw(b, "<p>");
        puts_text(b, desc);
        puts_raw(b, "</p>\n");
    }
    static const char *const parts[] = {"parameters", "requestBody", "responses"};
    static const char *const titles[] = {"Parameters", "Request body", "Responses"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(op, parts[i]);
        if (!v) continue;
        puts_raw(b, "<details><summary>");
        puts_raw(b, titles[i]);
        puts_raw(b, "</summary>\n");
        puts_json(b, v);
        puts_raw(b, "</details>\n");
    }
    puts_raw(b, "</section>\n");
}

static void paths(buf *b, const cJSON *paths) {
    puts_raw(b, "<h2>Endpoints</h2>\n");
    for (const cJSON *p = paths ? paths->child : NULL; p; p = p->next) {
        for (const cJSON *op = p->child; op; op = op->next)
            if (cJSON_IsObject(op)) operation(b, op->string, p->string, op);
    }
}

static void schemas(buf *b, const cJSON *components) {
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(components, "schemas");
    if (!sc) return;
    puts_raw(b, "<h2>Schemas</h2>\n");
    for (const cJSON *s = sc->child; s; s = s->next) {
        puts_raw(b, "<section class=\"op\"><h3 id=\"");
        puts_id(b, "schema-", s->string);
        puts_raw(b, "\"><code>");
        puts_text(b, s->string);
        puts_raw(b, "</code></h3>\n");
        const char *desc = str_of(s, "description");
        if (desc) {
            puts_raw(b, "<p>");
            puts_text(b, desc);
            puts_raw(b, "</p>\n");
        }
        puts_json(b, s);
        puts_raw(b, "</section>\n");
    }
}

char *srv_docs_html(void) {
    cJSON *api = cJSON_Parse(srv_openapi_json);
    if (!api) return NULL;
    const cJSON *info = cJSON_GetObjectItemCaseSensitive(api, "info");
    const char *title = str_of(info, "title"), *version = str_of(info, "version");
    buf b = {0};
    puts_raw(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>");
    puts_text(&b, title ? title : "API");
    puts_raw(&b, "</title>\n<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;"
                 "padding:0 1em;line-height:1.4}pre{background:#f4f4f4;padding:.6em;"
                 "overflow-x:auto;font-size:90%}.op{border-top:1px solid #ccc;margin-top:1em}"
                 ".m{font-family:monospace;background:#234;color:#fff;padding:0 .4em}"
                 "</style></head><body>\n<h1>");
    puts_text(&b, title ? title : "API");
    if (version) {
        puts_raw(&b, " <small>");
        puts_text(&b, version);
        puts_raw(&b, "</small>");
    }
    puts_raw(&b, "</h1>\n<p>");
    puts_text(&b, str_of(info, "description"));
    puts_raw(&b, "</p>\n<p>The same description, machine-readable: <a href=\"/openapi.json\">"
                 "/openapi.json</a>.</p>\n");
    paths(&b, cJSON_GetObjectItemCaseSensitive(api, "paths"));
    schemas(&b, cJSON_GetObjectItemCaseSensitive(api, "components"));
    puts_raw(&b, "</body></html>\n");
    cJSON_Delete(api);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
