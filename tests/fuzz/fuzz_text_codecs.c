/* fuzz_text_codecs.c - libFuzzer target for the small text codecs of src/base/ that read request
 * bodies and model output: base64 (vectors in /v1/answer, /v1/retrieve and memory imports), the
 * strict UTF-8 check (every text the server takes) and json_text (answers that may hold NUL).
 * Checked on the same bytes:
 *   - base64: decode(encode(x)) == x and the encoding has the RFC 4648 length and alphabet; a
 *     text decodes exactly when, less its trailing '='s, its length is not 1 mod 4 and every byte
 *     is in the alphabet; then it gives floor(6n / 8) bytes, whose encoding is the text again
 *     (up to the unused low bits of its last character, and its padding);
 *   - UTF-8: clara_utf8_valid and clara_utf8_len agree with an independent decoder (code points
 *     by their value: no overlongs, no surrogates, nothing past U+10FFFF), including the offset
 *     of the first bad byte;
 *   - json_text: the item prints as one JSON string whose unescaped bytes are exactly the input
 *     (NUL bytes included), and cJSON reads it back as the input up to its first NUL. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "base/base64.h"
#include "base/json_text.h"
#include "base/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

static const char k_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_index(unsigned char c) {
    const char *p = c ? strchr(k_b64, c) : NULL;
    return p ? (int)(p - k_b64) : -1;
}

static void base64_round_trip(const uint8_t *data, size_t size) {
    char *enc = clara_base64_encode(data, size);
    CHECK(enc != NULL);
    size_t el = strlen(enc);
    CHECK(el == (size + 2) / 3 * 4);
    for (size_t i = 0; i < el; i++)
        CHECK(b64_index((unsigned char)enc[i]) >= 0 || (enc[i] == '=' && i + 2 >= el));
    size_t n = 0;
    unsigned char *dec = clara_base64_decode(enc, el, &n);
    CHECK(dec != NULL && n == size && (size == 0 || memcmp(dec, data, size) == 0));
    free(dec);
    free(enc);
}

static void base64_decode_text(const char *s, size_t size) {
    size_t n = size;
    while (n > 0 && s[n - 1] == '=') n--;
    bool valid = n % 4 != 1;
    for (size_t i = 0; valid && i < n; i++) valid = b64_index((unsigned char)s[i]) >= 0;
    size_t out_len = (size_t)-1;
    unsigned char *dec = clara_base64_decode(s, size, &out_len);
    CHECK((dec != NULL) == valid);
    if (!dec) return;
    CHECK(out_len == n * 6 / 8);
    char *enc = clara_base64_encode(dec, out_len);
    CHECK(enc != NULL);
    size_t el = strlen(enc);
    while (el > 0 && enc[el - 1] == '=') el--;
    CHECK(el == n);
    if (n > 0) {
        CHECK(memcmp(enc, s, n - 1) == 0);
        int unused = (int)(n * 6 - out_len * 8); /* low bits of the last character */
        int a = b64_index((unsigned char)enc[n - 1]), b = b64_index((unsigned char)s[n - 1]);
        CHECK(a >= 0 && b >= 0 && a >> unused == b >> unused && (a & ((1 << unused) - 1)) == 0);
    }
    free(enc);
    free(dec);
}

/* An independent UTF-8 decoder: the length of the character at s, or 0 when ill-formed. */
static size_t ref_utf8_len(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    size_t len = c < 0x80             ? 1
                 : (c & 0xE0) == 0xC0 ? 2
                 : (c & 0xF0) == 0xE0 ? 3
                 : (c & 0xF8) == 0xF0 ? 4
                                      : 0;
    if (len == 0 || len > n) return 0;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1Fu : len == 3 ? c & 0x0Fu : c & 0x07u;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3Fu);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

static void utf8_agrees(const uint8_t *s, size_t n) {
    size_t i = 0, ref_bad = (size_t)-1;
    while (i < n) {
        size_t want = ref_utf8_len(s + i, n - i);
        CHECK(clara_utf8_len(s + i, n - i) == want);
        if (!want) {
            ref_bad = i;
            break;
        }
        i += want;
    }
    size_t bad = (size_t)-1;
    bool ok = clara_utf8_valid((const char *)s, n, &bad);
    CHECK(ok == (ref_bad == (size_t)-1));
    CHECK(ok ? bad == (size_t)-1 : bad == ref_bad);
    CHECK(clara_utf8_len(s, 0) == 0);
}

static int hex_value(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Unescapes the JSON string literal lit (as json_text writes escapes) into out; its length. */
static size_t unescape(const char *lit, char *out) {
    size_t ll = strlen(lit), o = 0;
    CHECK(ll >= 2 && lit[0] == '"' && lit[ll - 1] == '"');
    for (size_t i = 1; i + 1 < ll; i++) {
        unsigned char c = (unsigned char)lit[i];
        CHECK(c != '"' && c >= 0x20);
        if (c != '\\') {
            out[o++] = (char)c;
            continue;
        }
        CHECK(i + 2 < ll);
        char e = lit[++i];
        if (e == 'u') {
            CHECK(i + 5 < ll && lit[i + 1] == '0' && lit[i + 2] == '0');
            int h = hex_value(lit[i + 3]), l = hex_value(lit[i + 4]);
            CHECK(h >= 0 && l >= 0);
            out[o++] = (char)(h << 4 | l);
            i += 4;
            continue;
        }
        const char *k = strchr("\"\\/bfnrt", e);
        CHECK(e && k);
        out[o++] = "\"\\/\b\f\n\r\t"[k - "\"\\/bfnrt"];
    }
    return o;
}

static void json_text_round_trip(const char *s, size_t n) {
    cJSON *item = json_text(s, n);
    CHECK(item != NULL);
    char *lit = cJSON_PrintUnformatted(item);
    CHECK(lit != NULL);
    char *back = malloc(strlen(lit) + 1);
    CHECK(back != NULL);
    size_t bn = unescape(lit, back);
    CHECK(bn == n && memcmp(back, s, n) == 0);
    cJSON *parsed = cJSON_Parse(lit);
    size_t z = strnlen(s, n);
    CHECK(cJSON_IsString(parsed) && strlen(parsed->valuestring) == z &&
          memcmp(parsed->valuestring, s, z) == 0);
    cJSON_Delete(parsed);
    free(back);
    cJSON_free(lit);
    cJSON_Delete(item);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 16)) return 0;
    /* an exact-size copy without a terminator */
    char *s = malloc(size ? size : 1);
    if (!s) return 0;
    memcpy(s, data, size);
    base64_round_trip(data, size);
    base64_decode_text(s, size);
    utf8_agrees(data, size);
    json_text_round_trip(s, size);
    free(s);
    return 0;
}
