/* test_base.c - base helpers: f16/bf16 conversions against hand-computed IEEE values, error
 * messages, atomic output files. */
#include <stdlib.h>
#include <unistd.h>

#include "base/fp16.h"
#include "base/json_text.h"
#include "base/outfile.h"
#include "base/status.h"
#include "base/utf8.h"
#include "t.h"

static void test_f16_known_values(void) {
    /* hand-computed binary16 encodings */
    T_EQ_INT(clara_f32_to_f16(1.0f), 0x3c00);
    T_EQ_INT(clara_f32_to_f16(-2.0f), 0xc000);
    T_EQ_INT(clara_f32_to_f16(65504.0f), 0x7bff);
    T_EQ_INT(clara_f32_to_f16(65520.0f), 0x7c00);           /* rounds up to inf */
    T_EQ_INT(clara_f32_to_f16(65519.996f), 0x7bff);         /* just below the tie */
    T_EQ_INT(clara_f32_to_f16(5.9604644775390625e-8f), 1);  /* 2^-24, smallest subnormal */
    T_EQ_INT(clara_f32_to_f16(2.98023223876953125e-8f), 0); /* 2^-25: tie to even -> 0 */
    T_EQ_INT(clara_f32_to_f16(4.4703483581542969e-8f), 1);  /* 1.5 * 2^-25 -> 1 */
    T_EQ_INT(clara_f32_to_f16(6.103515625e-5f), 0x0400);    /* smallest normal */
    T_EQ_INT(clara_f32_to_f16(1.0009765625f), 0x3c01);      /* 1 + 2^-10 */
    T_EQ_INT(clara_f32_to_f16(1.00048828125f), 0x3c00);     /* 1 + 2^-11: tie to even */
    T_EQ_INT(clara_f32_to_f16(1.00146484375f), 0x3c02);     /* 1 + 3*2^-11: tie to even up */
    T_EQ_INT(clara_f32_to_f16(-0.0f), 0x8000);
    T_EQ_INT(clara_f32_to_f16(INFINITY), 0x7c00);
    T_CHECK((clara_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (clara_f32_to_f16(NAN) & 0x3ff) != 0);
    T_NEAR(clara_f16_to_f32(0x3555), 0.333251953125, 0);
    T_NEAR(clara_f16_to_f32(0x0001), 5.9604644775390625e-8, 0);
    T_NEAR(clara_f16_to_f32(0xfbff), -65504.0, 0);
}

/* Every f16 value converts to f32 and back unchanged. */
static void test_f16_roundtrip_all(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        uint16_t x = (uint16_t)h;
        if ((x & 0x7c00) == 0x7c00 && (x & 0x3ff)) continue; /* NaN payloads may be quieted */
        if (clara_f32_to_f16(clara_f16_to_f32(x)) != x) bad++;
    }
    T_EQ_INT(bad, 0);
}

/* Midpoints between consecutive f16 values round to the even neighbour. */
static void test_f16_midpoints(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 0x7bff; h++) {
        double lo = clara_f16_to_f32((uint16_t)h), hi = clara_f16_to_f32((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2); /* exact in f32 */
        uint16_t want = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (clara_f32_to_f16(mid) != want) bad++;
    }
    T_EQ_INT(bad, 0);
}

static void test_bf16(void) {
    T_EQ_INT(clara_f32_to_bf16(1.0f), 0x3f80);
    T_EQ_INT(clara_f32_to_bf16(clara_bits_f32(0x3f808000u)), 0x3f80); /* tie to even (down) */
    T_EQ_INT(clara_f32_to_bf16(clara_bits_f32(0x3f818000u)), 0x3f82); /* tie to even (up) */
    T_EQ_INT(clara_f32_to_bf16(clara_bits_f32(0x3f808001u)), 0x3f81);
    T_NEAR(clara_bf16_to_f32(0xc040), -3.0, 0);
}

static void test_errors(void) {
    clara_status s = clara_fail(CLARA_ERR_FORMAT, "bad %s at %d", "thing", 7);
    T_EQ_INT(s, CLARA_ERR_FORMAT);
    T_EQ_STR(clara_last_error(), "bad thing at 7");
    clara_fail_context(s, "in file %s", "x.gguf");
    T_EQ_STR(clara_last_error(), "in file x.gguf: bad thing at 7");
    T_EQ_STR(clara_status_name(CLARA_ERR_NOT_FOUND), "not found");
    T_EQ_STR(clara_status_name(CLARA_ERR_CANCELLED), "cancelled");
}

static void test_outfile(void) {
    char dir[] = "/tmp/clara_outfile_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/out.bin", dir);
    clara_outfile f;
    T_EQ_INT(clara_outfile_open(&f, path), CLARA_OK);
    T_CHECK(access(path, F_OK) != 0); /* not visible under the final name yet */
    T_EQ_INT(clara_outfile_write(&f, "abc", 3), CLARA_OK);
    T_EQ_INT(clara_outfile_pad(&f, 100), CLARA_OK);
    T_EQ_INT(f.written, 103);
    T_EQ_INT(clara_outfile_commit(&f), CLARA_OK);
    T_CHECK(access(path, F_OK) == 0);
    unlink(path);
    T_EQ_INT(clara_outfile_open(&f, path), CLARA_OK);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s", f.tmp_path);
    clara_outfile_abort(&f);
    T_CHECK(access(path, F_OK) != 0 && access(tmp, F_OK) != 0);
    T_CHECK(clara_outfile_current_tmp() == NULL);
    rmdir(dir);
}

/* Hand-picked sequences from Unicode Table 3-7: each boundary of every lead-byte range. */
static void test_utf8(void) {
    static const struct {
        const char *s;
        size_t n, bad; /* bad = (size_t)-1 when valid */
    } cases[] = {
        {"plain", 5, (size_t)-1},
        {"\xc2\x80", 2, (size_t)-1},         /* U+0080 */
        {"\xc1\xbf", 2, 0},                  /* overlong */
        {"\xe0\xa0\x80", 3, (size_t)-1},     /* U+0800 */
        {"\xe0\x9f\xbf", 3, 0},              /* overlong 3-byte */
        {"\xed\x9f\xbf", 3, (size_t)-1},     /* U+D7FF */
        {"\xed\xa0\x80", 3, 0},              /* surrogate U+D800 */
        {"\xf0\x90\x80\x80", 4, (size_t)-1}, /* U+10000 */
        {"\xf4\x8f\xbf\xbf", 4, (size_t)-1}, /* U+10FFFF */
        {"\xf4\x90\x80\x80", 4, 0},          /* past U+10FFFF */
        {"ab\xe2\x82", 4, 2},                /* truncated euro sign */
        {"a\x80", 2, 1},                     /* lone continuation */
        {"\xf5\x80\x80\x80", 4, 0},          /* lead byte never valid */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t bad = (size_t)-1;
        bool ok = clara_utf8_valid(cases[i].s, cases[i].n, &bad);
        T_CHECK_MSG(ok == (cases[i].bad == (size_t)-1) && (ok || bad == cases[i].bad),
                    "case %zu: ok %d bad %zu", i, ok, bad);
    }
    T_EQ_INT(clara_utf8_len((const uint8_t *)"\xf0\x9f\x9a\x80", 4), 4); /* emoji */
    T_EQ_INT(clara_utf8_len((const uint8_t *)"\xf0\x9f\x9a", 3), 0);
}

/* json_text: text without NUL is an ordinary string; with NUL bytes every byte is kept, NUL and
 * the other control bytes escaped as JSON escapes them. */
static void test_json_text(void) {
    cJSON *o = cJSON_CreateObject();
    T_CHECK(json_add_text(o, "plain", "caf\xc3\xa9 \"q\"\n", 10));
    T_CHECK(json_add_text(o, "nul", "a\0b\"\\\x01\t\xef\xbf\xbdz", 11));
    T_CHECK(json_add_text(o, "empty", NULL, 0));
    char *out = cJSON_PrintUnformatted(o);
    T_EQ_STR(out, "{\"plain\":\"caf\xc3\xa9 \\\"q\\\"\\n\",\"nul\":\"a\\u0000b\\\"\\\\\\u0001\\t"
                  "\xef\xbf\xbdz\",\"empty\":\"\"}");
    T_CHECK(cJSON_IsString(cJSON_GetObjectItem(o, "plain")));
    T_CHECK(cJSON_IsRaw(cJSON_GetObjectItem(o, "nul")));
    free(out);
    cJSON_Delete(o);
}

int main(void) {
    T_RUN(test_utf8);
    T_RUN(test_json_text);
    T_RUN(test_f16_known_values);
    T_RUN(test_f16_roundtrip_all);
    T_RUN(test_f16_midpoints);
    T_RUN(test_bf16);
    T_RUN(test_errors);
    T_RUN(test_outfile);
    return t_report("test_base");
}
