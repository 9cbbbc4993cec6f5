/* compat.c - POST /compress as the Python server (FastAPI + pydantic v2, Python 3.11) answers it,
 * so that its clients cannot tell the difference: FastAPI's 422 {"detail": [{type, loc, msg,
 * input}]} for a body that is not valid JSON (located as Python's json module locates the error)
 * or that pydantic's CompressRequest refuses (every error, not just the first; integers in lax
 * mode), and HTTPException's {"detail": "..."} for the other errors. Our own success, error and
 * error_type stay beside detail. The facts come from FastAPI's request handling (a JSON body is
 * parsed with json.loads; JSONDecodeError becomes one "json_invalid" error at ["body", position];
 * an empty body or JSON null is "missing" at ["body"]; other decoding failures are 400 "There was
 * an error parsing the body") and pydantic-core's error types and messages. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json_scan.h"
#include "server.h"

/* ---- Python's json module: where it stops on a malformed text, and what it says ---------------
 */

/* Deeper than this the locator gives up (our scanner refuses 16 levels long before). */
#define PYJ_MAX_DEPTH 64

typedef struct {
    const char *s;
    size_t n;
    const char *msg; /* the JSONDecodeError's msg, NULL while none */
    size_t at;       /* its byte offset */
} pyjson;

static bool pyj_fail(pyjson *p, const char *msg, size_t at) {
    p->msg = msg;
    p->at = at;
    return false;
}

static size_t pyj_ws(const pyjson *p, size_t i) {
    while (i < p->n && strchr(" \t\n\r", p->s[i]) && p->s[i]) i++;
    return i;
}

static bool is_hex(char c) {
    return isxdigit((unsigned char)c) != 0;
}

/* A \uXXXX escape whose 'u' is at i (within a string that began at begin). */
static bool pyj_unicode_escape(pyjson *p, size_t i, size_t *end) {
    if (i + 5 >= p->n) return pyj_fail(p, "Invalid \\uXXXX escape", i);
    for (size_t k = 1; k <= 4; k++)
        if (!is_hex(p->s[i + k])) return pyj_fail(p, "Invalid \\uXXXX escape", i);
    *end = i + 5;
    return true;
}

/* A string whose opening quote is at begin; *end is just past its closing quote. */
static bool pyj_string(pyjson *p, size_t begin, size_t *end) {
    size_t i = begin + 1;
    for (;;) {
        while (i < p->n && p->s[i] != '"' && p->s[i] != '\\') {
            if ((unsigned char)p->s[i] <= 0x1f)
                return pyj_fail(p, "Invalid control character at", i);
            i++;
        }
        if (i >= p->n) return pyj_fail(p, "Unterminated string starting at", begin);
        if (p->s[i] == '"') {
            *end = i + 1;
            return true;
        }
        if (i + 1 >= p->n) return pyj_fail(p, "Unterminated string starting at", begin);
        char c = p->s[i + 1];
        if (c == 'u') {
            if (!pyj_unicode_escape(p, i + 1, &i)) return false;
        } else if (c && strchr("\"\\/bfnrt", c)) {
            i += 2;
        } else {
            return pyj_fail(p, "Invalid \\escape", i);
        }
    }
}

/* A number as json's NUMBER_RE reads it: -?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)? */
static bool pyj_number(pyjson *p, size_t i, size_t *end) {
    size_t j = i + (p->s[i] == '-');
    if (j >= p->n || !isdigit((unsigned char)p->s[j])) return pyj_fail(p, "Expecting value", i);
    if (p->s[j] == '0')
        j++;
    else
        while (j < p->n && isdigit((unsigned char)p->s[j])) j++;
    if (j + 1 < p->n && p->s[j] == '.' && isdigit((unsigned char)p->s[j + 1])) {
        j += 2;
        while (j < p->n && isdigit((unsigned char)p->s[j])) j++;
    }
    if (j < p->n && (p->s[j] == 'e' || p->s[j] == 'E')) {
        size_t k = j + 1;
        if (k < p->n && (p->s[k] == '+' || p->s[k] == '-')) k++;
        if (k < p->n && isdigit((unsigned char)p->s[k])) {
            while (k < p->n && isdigit((unsigned char)p->s[k])) k++;
            j = k;
        }
    }
    *end = j;
    return true;
}

static bool pyj_value(pyjson *p, size_t i, size_t *end, int depth);

static bool pyj_word(const pyjson *p, size_t i, const char *w) {
    size_t n = strlen(w);
    return i + n <= p->n && memcmp(p->s + i, w, n) == 0;
}

static bool pyj_object(pyjson *p, size_t i, size_t *end, int depth) {
    i = pyj_ws(p, i + 1);
    if (i < p->n && p->s[i] == '}') {
        *end = i + 1;
        return true;
    }
    for (;;) {
        if (i >= p->n || p->s[i] != '"')
            return pyj_fail(p, "Expecting property name enclosed in double quotes", i);
        if (!pyj_string(p, i, &i)) return false;
        i = pyj_ws(p, i);
        if (i >= p->n || p->s[i] != ':') return pyj_fail(p, "Expecting ':' delimiter", i);
        if (!pyj_value(p, pyj_ws(p, i + 1), &i, depth + 1)) return false;
        i = pyj_ws(p, i);
        if (i < p->n && p->s[i] == '}') break;
        if (i >= p->n || p->s[i] != ',') return pyj_fail(p, "Expecting ',' delimiter", i);
        i = pyj_ws(p, i + 1);
    }
    *end = i + 1;
    return true;
}

static bool pyj_array(pyjson *p, size_t i, size_t *end, int depth) {
    i = pyj_ws(p, i + 1);
    if (i < p->n && p->s[i] == ']') {
        *end = i + 1;
        return true;
    }
    for (;;) {
        if (!pyj_value(p, i, &i, depth + 1)) return false;
        i = pyj_ws(p, i);
        if (i < p->n && p->s[i] == ']') break;
        if (i >= p->n || p->s[i] != ',') return pyj_fail(p, "Expecting ',' delimiter", i);
        i = pyj_ws(p, i + 1);
    }
    *end = i + 1;
    return true;
}

/* One value at i (json's scan_once): a failure to start one is "Expecting value" there. */
static bool pyj_value(pyjson *p, size_t i, size_t *end, int depth) {
    if (depth > PYJ_MAX_DEPTH) return pyj_fail(p, NULL, i);
    if (i >= p->n) return pyj_fail(p, "Expecting value", i);
    char c = p->s[i];
    if (c == '"') return pyj_string(p, i, end);
    if (c == '{') return pyj_object(p, i, end, depth);
    if (c == '[') return pyj_array(p, i, end, depth);
    static const char *const words[] = {"null", "true", "false", "NaN", "Infinity", "-Infinity"};
    for (size_t k = 0; k < sizeof words / sizeof words[0]; k++) {
        if (pyj_word(p, i, words[k])) {
            *end = i + strlen(words[k]);
            return true;
        }
    }
    if (c == '-' || isdigit((unsigned char)c)) return pyj_number(p, i, end);
    return pyj_fail(p, "Expecting value", i);
}

/* Characters before byte `at` (Python's positions count characters; the text is valid UTF-8). */
static size_t char_index(const char *s, size_t at) {
    size_t k = 0;
    for (size_t i = 0; i < at; i++) k += ((unsigned char)s[i] & 0xc0) != 0x80;
    return k;
}

/* The json_invalid error of a text our scanner refused, as FastAPI reports it. When Python's
 * json would have read the text (NaN, Infinity, lone surrogates, very long numbers: not JSON by
 * RFC 8259, which we keep to), the error is placed where our scanner stopped. */
static cJSON *json_invalid_item(const char *body, size_t len, size_t scan_offset) {
    size_t bom = len >= 3 && memcmp(body, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
    pyjson p = {body + bom, len - bom, NULL, 0};
    size_t end = 0;
    if (pyj_value(&p, pyj_ws(&p, 0), &end, 0)) {
        end = pyj_ws(&p, end);
        if (end != p.n) pyj_fail(&p, "Extra data", end);
    }
    const char *msg = p.msg;
    size_t at = msg ? p.at : scan_offset > bom ? scan_offset - bom : 0;
    if (!msg) msg = "Not strict JSON (RFC 8259): NaN, Infinity and lone surrogates are refused";
    cJSON *item = cJSON_CreateObject();
    cJSON_AddStringToObject(item, "type", "json_invalid");
    cJSON *loc = cJSON_AddArrayToObject(item, "loc");
    cJSON_AddItemToArray(loc, cJSON_CreateString("body"));
    cJSON_AddItemToArray(loc, cJSON_CreateNumber((double)char_index(p.s, at)));
    cJSON_AddStringToObject(item, "msg", "JSON decode error");
    cJSON_AddObjectToObject(item, "input");
    cJSON *ctx = cJSON_AddObjectToObject(item, "ctx");
    cJSON_AddStringToObject(ctx, "error", msg);
    return item;
}

/* ---- replies ----------------------------------------------------------------------------------
 */

static char *print_json(cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return s;
}

/* Adds detail (taken) to the error reply *r, which srv_reply_error wrote. */
static void attach_detail(srv_reply *r, cJSON *detail) {
    cJSON *j = r->body ? cJSON_Parse(r->body) : NULL;
    if (!j || !detail) {
        cJSON_Delete(j);
        cJSON_Delete(detail);
        return;
    }
    cJSON_AddItemToObject(j, "detail", detail);
    char *body = print_json(j);
    if (!body) return;
    free(r->body);
    r->body = body;
}

static cJSON *error_item(const char *type, const char *field, int index, const char *msg,
                         const cJSON *input) {
    cJSON *item = cJSON_CreateObject();
    cJSON_AddStringToObject(item, "type", type);
    cJSON *loc = cJSON_AddArrayToObject(item, "loc");
    cJSON_AddItemToArray(loc, cJSON_CreateString("body"));
    if (field) cJSON_AddItemToArray(loc, cJSON_CreateString(field));
    if (index >= 0) cJSON_AddItemToArray(loc, cJSON_CreateNumber(index));
    cJSON_AddStringToObject(item, "msg", msg);
    cJSON_AddItemToObject(item, "input", input ? cJSON_Duplicate(input, 1) : cJSON_CreateNull());
    return item;
}

/* A one-item 422 detail; `error` is our message for the same failure. */
static void reply_422(srv_reply *r, const char *our_type, const char *error, cJSON *item) {
    srv_reply_error(r, 422, our_type, "%s", error);
    cJSON *detail = cJSON_CreateArray();
    cJSON_AddItemToArray(detail, item);
    attach_detail(r, detail);
}

int srv_compress_precheck(const char *body, size_t len, srv_reply *r) {
    if (len == 0) {
        reply_422(r, "invalid_json", "the request body is empty; send a JSON object",
                  error_item("missing", NULL, -1, "Field required", NULL));
        return -1;
    }
    if (!srv_utf8_valid(body, len)) {
        srv_reply_error(r, 400, "invalid_utf8", "the request body is not valid UTF-8");
        attach_detail(r, cJSON_CreateString("There was an error parsing the body"));
        return -1;
    }
    clara_json_scan_result sr;
    clara_json_verdict v = clara_json_scan(body, len, SRV_JSON_MAX_VALUES, SRV_JSON_MAX_DEPTH, &sr);
    if (v == CLARA_JSON_SYNTAX || memchr(body, '\0', len)) {
        char msg[96];
        snprintf(msg, sizeof msg, "malformed JSON near byte %zu",
                 v == CLARA_JSON_SYNTAX ? sr.offset
                                        : (size_t)((const char *)memchr(body, 0, len) - body));
        reply_422(r, "invalid_json", msg, json_invalid_item(body, len, sr.offset));
        return -1;
    }
    if (v != CLARA_JSON_OK || sr.root == '{') return 0; /* limits: our own 422 later */
    /* not an object: pydantic's answer names the value, which the scan has bounded */
    cJSON *value = cJSON_ParseWithLength(body, len);
    if (!value) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return -1;
    }
    if (cJSON_IsNull(value))
        reply_422(r, "validation_error", "the request body must be a JSON object",
                  error_item("missing", NULL, -1, "Field required", NULL));
    else
        reply_422(r, "validation_error", "the request body must be a JSON object",
                  error_item("model_attributes_type", NULL, -1,
                             "Input should be a valid dictionary or object to extract fields from",
                             value));
    cJSON_Delete(value);
    return -1;
}

/* ---- pydantic's CompressRequest ---------------------------------------------------------------
 */

/* An integer in pydantic's lax mode: a JSON integer, a number without fraction, true/false, or a
 * string of digits (surrounding whitespace, a sign, underscores between digits and a ".000"
 * fraction allowed). Returns NULL with *v set, or pydantic's error type and message. */
static const char *lax_int(const cJSON *x, double *v, const char **msg) {
    if (cJSON_IsBool(x)) {
        *v = cJSON_IsTrue(x) ? 1 : 0;
        return NULL;
    }
    if (cJSON_IsNumber(x)) {
        if (x->valuedouble != floor(x->valuedouble)) {
            *msg = "Input should be a valid integer, got a number with a fractional part";
            return "int_from_float";
        }
        *v = x->valuedouble;
        return NULL;
    }
    if (!cJSON_IsString(x)) {
        *msg = "Input should be a valid integer";
        return "int_type";
    }
    *msg = "Input should be a valid integer, unable to parse string as an integer";
    const char *s = x->valuestring;
    while (isspace((unsigned char)*s)) s++;
    int sign = *s == '-' ? -1 : 1;
    if (*s == '+' || *s == '-') s++;
    double acc = 0;
    int digits = 0;
    for (; isdigit((unsigned char)*s) || (*s == '_' && digits && isdigit((unsigned char)s[1])); s++)
        if (*s != '_') acc = acc * 10 + (*s - '0'), digits++;
    if (*s == '.' && digits)
        for (s++; *s == '0'; s++) {
        }
    while (isspace((unsigned char)*s)) s++;
    if (!digits || *s) return "int_parsing";
    *v = sign * acc;
    return NULL;
}

/* An integer field: absent is fine; null is allowed only when `optional`. Bounds lo..hi unless
 * lo > hi. Appends errors to detail; on success writes the value back as a JSON number. */
static void check_int(cJSON *root, const char *key, bool optional, long lo, long hi,
                      cJSON *detail) {
    cJSON *x = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!x || (optional && cJSON_IsNull(x))) return;
    double v;
    const char *msg = NULL, *type = lax_int(x, &v, &msg);
    char buf[96];
    cJSON *ctx = NULL;
    if (!type && lo <= hi && (v < (double)lo || v > (double)hi)) {
        bool low = v < (double)lo;
        type = low ? "greater_than_equal" : "less_than_equal";
        snprintf(buf, sizeof buf, "Input should be %s than or equal to %ld",
                 low ? "greater" : "less", low ? lo : hi);
        msg = buf;
        ctx = cJSON_CreateObject();
        cJSON_AddNumberToObject(ctx, low ? "ge" : "le", (double)(low ? lo : hi));
    }
    if (type) {
        cJSON *item = error_item(type, key, -1, msg, x);
        if (ctx) cJSON_AddItemToObject(item, "ctx", ctx);
        cJSON_AddItemToArray(detail, item);
        return;
    }
    if (!cJSON_IsNumber(x))
        cJSON_ReplaceItemInObjectCaseSensitive(root, key, cJSON_CreateNumber(v));
}

static void check_memories(cJSON *root, cJSON *detail) {
    cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "memories");
    if (!m) {
        cJSON_AddItemToArray(detail, error_item("missing", "memories", -1, "Field required", root));
        return;
    }
    if (!cJSON_IsArray(m)) {
        cJSON_AddItemToArray(
            detail, error_item("list_type", "memories", -1, "Input should be a valid list", m));
        return;
    }
    int i = 0, bad = 0;
    for (cJSON *e = m->child; e; e = e->next, i++) {
        if (cJSON_IsString(e)) continue;
        cJSON *item =
            error_item("string_type", "memories", -1, "Input should be a valid string", e);
        cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(item, "loc"), cJSON_CreateNumber(i));
        cJSON_AddItemToArray(detail, item);
        bad++;
    }
    if (i == 0 && !bad) {
        cJSON *item = error_item("too_short", "memories", -1,
                                 "List should have at least 1 item after validation, not 0", m);
        cJSON *ctx = cJSON_AddObjectToObject(item, "ctx");
        cJSON_AddStringToObject(ctx, "field_type", "List");
        cJSON_AddNumberToObject(ctx, "min_length", 1);
        cJSON_AddNumberToObject(ctx, "actual_length", 0);
        cJSON_AddItemToArray(detail, item);
    }
}

static void check_query(cJSON *root, cJSON *detail) {
    cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "query");
    cJSON *item = NULL;
    if (!q)
        item = error_item("missing", "query", -1, "Field required", root);
    else if (!cJSON_IsString(q))
        item = error_item("string_type", "query", -1, "Input should be a valid string", q);
    else if (!q->valuestring[0]) {
        item = error_item("string_too_short", "query", -1,
                          "String should have at least 1 character", q);
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(item, "ctx"), "min_length", 1);
    }
    if (item) cJSON_AddItemToArray(detail, item);
}

/* "memories: Field required; query: ..." for our error field. */
static void summarise(const cJSON *detail, char *out, size_t cap) {
    size_t o = 0;
    out[0] = '\0';
    for (const cJSON *e = detail->child; e && o + 1 < cap; e = e->next) {
        const cJSON *loc = cJSON_GetObjectItemCaseSensitive(e, "loc");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "msg");
        char where[64] = "body";
        size_t w = 0;
        const cJSON *first = loc && loc->child ? loc->child->next : NULL; /* after "body" */
        for (const cJSON *l = first; l && w + 1 < sizeof where; l = l->next)
            w += cJSON_IsString(l)
                     ? (size_t)snprintf(where + w, sizeof where - w, "%s%s", w ? "." : "",
                                        l->valuestring)
                     : (size_t)snprintf(where + w, sizeof where - w, "[%d]", l->valueint);
        o += (size_t)snprintf(out + o, cap - o, "%s%s: %s", o ? "; " : "", where,
                              cJSON_IsString(msg) ? msg->valuestring : "");
    }
}

int srv_compress_validate(cJSON *root, srv_reply *r) {
    cJSON *detail = cJSON_CreateArray();
    if (!detail) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return -1;
    }
    /* the model's fields in their order, as pydantic reports them */
    check_memories(root, detail);
    check_query(root, detail);
    check_int(root, "max_new_tokens", false, 1, SRV_MAX_NEW_TOKENS_LIMIT, detail);
    check_int(root, "keep_alive", true, 1, 0, detail);
    if (!detail->child) {
        cJSON_Delete(detail);
        return 0;
    }
    char msg[400];
    summarise(detail, msg, sizeof msg);
    srv_reply_error(r, 422, "validation_error", "%s", msg);
    attach_detail(r, detail);
    return -1;
}

/* FastAPI's own words where the Python server has an answer for the same case. */
static const char *http_exception_detail(int status, const char *type, const char *error) {
    if (status == 401) return "Missing API key";
    if (status == 403 && strcmp(type, "forbidden") == 0) return "Invalid API key";
    if (status == 405) return "Method Not Allowed";
    return error;
}

void srv_compress_error_detail(srv_reply *r) {
    cJSON *j = r->body ? cJSON_Parse(r->body) : NULL;
    if (!j || cJSON_GetObjectItemCaseSensitive(j, "detail")) {
        cJSON_Delete(j);
        return;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "error_type");
    const char *error = cJSON_IsString(e) ? e->valuestring : "";
    const char *type = cJSON_IsString(t) ? t->valuestring : "";
    cJSON *detail;
    if (r->status == 422) {
        /* one of our own limits (sizes, counts, text the tokenizer refuses): pydantic's word for a
         * check a model makes itself is value_error */
        char msg[700];
        snprintf(msg, sizeof msg, "Value error, %s", error);
        detail = cJSON_CreateArray();
        cJSON_AddItemToArray(detail, error_item("value_error", NULL, -1, msg, NULL));
    } else {
        detail = cJSON_CreateString(http_exception_detail(r->status, type, error));
    }
    cJSON_Delete(j);
    attach_detail(r, detail);
}
