/* test_tokenizer.c - src/tokenizer.c on a tiny handcrafted vocabulary (an in-memory GGUF), every
 * expected id list computed by hand from spec §3.2/§3.3:
 *
 *   ids 0 <unk> 1 <s> 2 </s> 3 ▁ 4 a 5 b 6 c 7 ▁a 8 ab 9 bc 10 ▁ab 11 é 12 <SEP> 13 <MEM1>
 *       14 <MEM10> 15 x 16 aa 17 b▁ 18 abc 19 q, 20 + b = <0xBB> for every byte b (20..275)
 *   merges by rank: 0 "a b", 1 "▁ a", 2 "b c", 3 "▁a b", 4 "a a", 5 "b ▁"
 *   added: <unk> <s> </s> <SEP> <MEM1> special; <MEM10> added but not special */
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "t.h"
#include "tokenizer.h"

#define SP   "\xe2\x96\x81" /* ▁ */
#define NB   276
#define B(x) (20 + (x)) /* id of the byte piece <0xXX> */

typedef struct {
    const char *norm, *scheme;
    bool split, byte_fallback, fuse_unk, ignore_merges, no_bytes;
    int unk;               /* unknown_token_id, -1 for none */
    const char *bad_merge; /* replaces merge 0 */
    int32_t bad_added;     /* replaces added id 3, unless 0 */
    uint8_t bad_flags;     /* flags of the first added token */
    bool drop_flags, no_tokens;
} opts;

static char g_bytes[256][8];

static const char *piece_of(int i) {
    static const char *const fixed[] = {"<unk>",   "<s>", "</s>", SP,      "a",   "b",     "c",
                                        SP "a",    "ab",  "bc",   SP "ab", "é",   "<SEP>", "<MEM1>",
                                        "<MEM10>", "x",   "aa",   "b" SP,  "abc", "q"};
    if (i < 20) return fixed[i];
    snprintf(g_bytes[i - 20], 8, "<0x%02X>", i - 20);
    return g_bytes[i - 20];
}

/* Builds the GGUF for the options and loads it; NULL (with the status in *st) on failure. */
static clara_tokenizer *make(opts o, clara_status *st) {
    const char *pieces[NB];
    int n = o.no_bytes ? 20 : NB;
    for (int i = 0; i < NB; i++) pieces[i] = piece_of(i);
    const char *merges[] = {"a b", SP " a", "b c", SP "a b", "a a", "b " SP};
    if (o.bad_merge) merges[0] = o.bad_merge;
    int32_t added[] = {0, 1, 2, 12, 13, 14};
    uint8_t flags[] = {1, 1, 1, 1, 1, 0};
    if (o.bad_added) added[3] = o.bad_added;
    if (o.bad_flags) flags[0] = o.bad_flags;
    gguf_writer *w = gguf_writer_new();
    if (!o.no_tokens) gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", pieces, (uint64_t)n);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 6);
    if (o.unk >= 0) gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)o.unk);
    gguf_writer_set_str(w, "clara.tokenizer.normalizer", o.norm ? o.norm : "legacy");
    gguf_writer_set_str(w, "clara.tokenizer.prepend_scheme", o.scheme ? o.scheme : "always");
    gguf_writer_set_bool(w, "clara.tokenizer.metaspace_split", o.split);
    gguf_writer_set_bool(w, "clara.tokenizer.byte_fallback", o.byte_fallback);
    gguf_writer_set_bool(w, "clara.tokenizer.fuse_unk", o.fuse_unk);
    gguf_writer_set_bool(w, "clara.tokenizer.ignore_merges", o.ignore_merges);
    gguf_writer_set_arr(w, "clara.tokenizer.added_token_ids", GGUF_VT_I32, added, 6);
    gguf_writer_set_arr(w, "clara.tokenizer.added_token_flags", GGUF_VT_U8, flags,
                        o.drop_flags ? 5 : 6);
    uint8_t *buf = NULL;
    size_t len = 0;
    gguf_ctx *g = NULL;
    clara_tokenizer *t = NULL;
    clara_status s = gguf_writer_begin_mem(w);
    if (s == CLARA_OK) s = gguf_writer_finish_mem(w, &buf, &len);
    gguf_writer_free(w);
    if (s == CLARA_OK) s = gguf_parse(buf, len, "tiny.gguf", &g);
    if (s == CLARA_OK) s = clara_tokenizer_load(g, &t);
    gguf_free(g);
    free(buf);
    if (st) *st = s;
    return t;
}

static opts dflt(void) {
    return (opts){.byte_fallback = true, .fuse_unk = true, .unk = 0};
}

/* Encodes text (len bytes) and compares with the expected ids (terminated by -9). */
static void expect_n(const clara_tokenizer *t, const char *text, size_t len, const int32_t *want,
                     int line) {
    clara_ids v = {0};
    clara_status s = clara_tokenizer_encode(t, text, len, &v);
    size_t n = 0;
    while (want[n] != -9) n++;
    bool ok = s == CLARA_OK && v.n == n && (n == 0 || memcmp(v.ids, want, n * 4) == 0);
    T_CHECK_MSG(ok, "line %d: encode('%s') gave %zu ids:", line, text, v.n);
    if (!ok)
        for (size_t i = 0; i < v.n; i++) fprintf(stderr, " %d", v.ids[i]);
    if (!ok) fputc('\n', stderr);
    clara_ids_free(&v);
}
#define EXPECT(t, text, ...)                                                                       \
    expect_n(t, text, strlen(text), (const int32_t[]){__VA_ARGS__, -9}, __LINE__)
#define EXPECT_EMPTY(t, text) expect_n(t, text, strlen(text), (const int32_t[]){-9}, __LINE__)

static void test_merges(void) {
    clara_tokenizer *t = make(dflt(), NULL);
    T_CHECK(t != NULL);
    if (!t) return;
    EXPECT(t, "ab", 3, 8);          /* rank 0 (a b) beats rank 1 (▁ a): ▁ ab, not ▁ab */
    EXPECT(t, "abc", 3, 8, 6);      /* ab then nothing merges with c */
    EXPECT(t, "bc a", 3, 9, 7);     /* ▁ b c ▁ a: rank 1 (▁a) first, then bc */
    EXPECT(t, "baaa", 3, 5, 16, 4); /* tie on rank 4 (a a at 2 and 3): leftmost wins */
    EXPECT(t, "b b", 3, 17, 5);     /* the whole segment is one word: "b ▁" merges across */
    EXPECT(t, "aab", 7, 8);         /* ▁ a a b: ab (0), ▁a (1); a a gone */
    EXPECT_EMPTY(t, "");
    EXPECT(t, " ", 3, 3);  /* legacy: prepend + replace = ▁▁ */
    EXPECT(t, "é", 3, 11); /* a two-byte character that is a piece */
    T_EQ_INT(clara_tokenizer_n_vocab(t), NB);
    T_EQ_INT(clara_tokenizer_find_token(t, SP "ab"), 10);
    T_EQ_INT(clara_tokenizer_find_token(t, "zz"), -1);
    T_EQ_STR(clara_tokenizer_piece(t, 17), "b" SP);
    T_CHECK(clara_tokenizer_piece(t, NB) == NULL && clara_tokenizer_piece(t, -1) == NULL);
    clara_tokenizer_free(t);
}

static void test_bytes_and_unk(void) {
    clara_tokenizer *t = make(dflt(), NULL);
    if (!t) return;
    /* "\n" and the 4-byte emoji U+1F600 (F0 9F 98 80) are not pieces: byte fallback */
    EXPECT(t, "a\n\xf0\x9f\x98\x80", 7, B(0x0A), B(0xF0), B(0x9F), B(0x98), B(0x80));
    EXPECT(t, "\xc3\xbc", 3, B(0xC3), B(0xBC));                          /* ü */
    expect_n(t, "a\0b", 3, (const int32_t[]){7, B(0), 5, -9}, __LINE__); /* NUL is a byte */
    clara_tokenizer_free(t);

    opts o = dflt();
    o.no_bytes = true; /* no <0xXX> pieces: unknown characters become <unk>, fused */
    t = make(o, NULL);
    if (!t) return;
    EXPECT(t, "a \xc3\xbc\xc3\xbc b", 7, 3, 0, 3, 5);
    EXPECT(t,
           "\xc3\xbc"
           "a\xc3\xbc",
           3, 0, 4, 0); /* not fused across a known character */
    clara_tokenizer_free(t);

    o.fuse_unk = false;
    t = make(o, NULL);
    if (!t) return;
    EXPECT(t, "a \xc3\xbc\xc3\xbc b", 7, 3, 0, 0, 3, 5);
    clara_tokenizer_free(t);

    o = dflt();
    o.byte_fallback = false; /* byte pieces exist but are not used */
    t = make(o, NULL);
    if (!t) return;
    EXPECT(t, "\n\n", 3, 0);
    clara_tokenizer_free(t);

    o = dflt();
    o.no_bytes = true;
    o.unk = -1; /* no unk token: an unknown character is an error */
    clara_ids v = {0};
    t = make(o, NULL);
    if (!t) return;
    T_EQ_INT(clara_tokenizer_encode(t, "\n", 1, &v), CLARA_ERR_INVALID_ARG);
    T_EQ_INT(v.n, 0);
    clara_tokenizer_free(t);
}

static void test_added(void) {
    clara_tokenizer *t = make(dflt(), NULL);
    if (!t) return;
    EXPECT(t, "<MEM10>", 14);                                      /* longest match */
    EXPECT(t, "<MEM1>0", 13, 3, B('0'));                           /* shorter one, then "▁0" */
    EXPECT(t, "<MEM1", 3, B('<'), B('M'), B('E'), B('M'), B('1')); /* incomplete: text */
    EXPECT(t, "<s>a", 1, 7); /* every segment after an added token gets its ▁ */
    EXPECT(t, "a<s>a", 7, 1, 7);
    EXPECT(t, "<s> a", 1, 3, 7); /* legacy: " a" → ▁▁a → ▁ ▁a */
    EXPECT(t, "<s><SEP></s>", 1, 12, 2);
    EXPECT(t, "<<s>>", 3, B('<'), 1, 3, B('>'));
    EXPECT(t, "a\n<SEP>\nb", 7, B(0x0A), 12, 3, B(0x0A), 5);
    size_t off = 99;
    T_EQ_INT(clara_tokenizer_find_added(t, "hello <SEP> x <s>", 17, &off), 12);
    T_EQ_INT(off, 6);
    T_EQ_INT(clara_tokenizer_find_added(t, "<MEM1<MEM10>", 12, &off), 14);
    T_EQ_INT(off, 5);
    T_EQ_INT(clara_tokenizer_find_added(t, "<MEM", 4, &off), -1);
    T_CHECK(clara_tokenizer_is_special(t, 12) && clara_tokenizer_is_special(t, 0));
    T_CHECK(!clara_tokenizer_is_special(t, 14) && !clara_tokenizer_is_special(t, 4));
    T_CHECK(!clara_tokenizer_is_special(t, -1) && !clara_tokenizer_is_special(t, NB));
    clara_tokenizer_free(t);
}

static void test_metaspace(void) {
    opts o = dflt();
    o.norm = "metaspace";
    o.scheme = "first";
    clara_tokenizer *t = make(o, NULL);
    if (!t) return;
    EXPECT(t, "ab", 3, 8);
    EXPECT(t, "<s>a", 1, 4); /* "first": only the segment at offset 0 of the input */
    EXPECT(t, "a<s>a", 7, 1, 4);
    EXPECT(t, "<s> a", 1, 7); /* already starts with ▁: nothing prepended */
    EXPECT(t, " a", 7);       /* at offset 0 too: ▁a, not ▁▁a */
    EXPECT(t, SP "a", 7);
    clara_tokenizer_free(t);

    o.scheme = "always";
    t = make(o, NULL);
    if (!t) return;
    EXPECT(t, "<s>a", 1, 7);
    EXPECT(t, "<s> a", 1, 7);
    EXPECT(t, "b b", 3, 17, 5); /* no split: b▁ merges across the word boundary */
    clara_tokenizer_free(t);

    o.split = true; /* split before every ▁: words ▁b, ▁b */
    t = make(o, NULL);
    if (!t) return;
    EXPECT(t, "b b", 3, 5, 3, 5);
    EXPECT(t, "a  b", 7, 3, 3, 5); /* ▁a ▁ ▁b */
    clara_tokenizer_free(t);

    o.split = false;
    o.scheme = "never";
    t = make(o, NULL);
    if (!t) return;
    EXPECT(t, "a b", 4, 3, 5); /* a ▁ b: (a ▁) and (▁ b) have no merge */
    EXPECT(t, "abc", 8, 6);
    clara_tokenizer_free(t);

    o.ignore_merges = true; /* a word that is a piece is taken whole */
    t = make(o, NULL);
    if (!t) return;
    EXPECT(t, "abc", 18);
    EXPECT(t, "abcb", 8, 6, 5);
    clara_tokenizer_free(t);

    o = dflt();
    o.scheme = "never"; /* legacy without Prepend: only the space replacement */
    t = make(o, NULL);
    if (!t) return;
    EXPECT(t, "a b", 4, 3, 5);
    EXPECT(t, " a", 7);
    clara_tokenizer_free(t);
}

static void expect_decode(const clara_tokenizer *t, const int32_t *ids, size_t n, const char *want,
                          size_t want_len, int line) {
    char *text = NULL;
    size_t len = 0;
    clara_status s = clara_tokenizer_decode_len(t, ids, n, &text, &len);
    T_CHECK_MSG(s == CLARA_OK && len == want_len && memcmp(text, want, len) == 0,
                "line %d: decode gave '%s' (%zu bytes), want '%s'", line, text ? text : "(null)",
                len, want);
    free(text);
}
#define DECODE(t, want, ...)                                                                       \
    expect_decode(t, (const int32_t[]){__VA_ARGS__}, sizeof((const int32_t[]){__VA_ARGS__}) / 4,   \
                  want, strlen(want), __LINE__)

static void test_decode(void) {
    clara_tokenizer *t = make(dflt(), NULL);
    if (!t) return;
    DECODE(t, "a ab b", 1, 7, 10, 3, 5, 2); /* specials dropped, ▁ → space, strip 1 */
    DECODE(t, " a", 3, 3, 4);               /* only one leading space removed */
    DECODE(t, "a", 12, 4);                  /* CLaRa's <SEP> skipped */
    DECODE(t, "<MEM10>x", 14, 15);          /* non-special added token kept */
    DECODE(t, "a\xf0\x9f\x98\x80", 4, B(0xF0), B(0x9F), B(0x98), B(0x80)); /* byte run */
    DECODE(t, "\xef\xbf\xbd", B(0xC3)); /* lone lead byte: U+FFFD */
    DECODE(t,
           "\xef\xbf\xbd\xef\xbf\xbd"
           "a",
           B(0xF0), B(0x9F), 4); /* one U+FFFD per byte */
    /* specials are dropped before ByteFallback: C3 BC BC is one invalid run, 3 x U+FFFD */
    DECODE(t, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", B(0xC3), B(0xBC), 1, B(0xBC));
    DECODE(t,
           "\xc3\xbc"
           "a",
           B(0xC3), B(0xBC), 4);
    DECODE(t, "AB", 3, B('A'), B('B')); /* "▁" then bytes: leading space stripped */
    DECODE(t, "", 0, 1, 2);
    DECODE(t, "b c", 17, 6);                                                 /* b▁ → "b " */
    expect_decode(t, (const int32_t[]){4, B(0), 5}, 3, "a\0b", 3, __LINE__); /* NUL kept */
    char *text = (char *)1;
    T_EQ_INT(clara_tokenizer_decode(t, (const int32_t[]){4, NB}, 2, &text), CLARA_ERR_INVALID_ARG);
    T_CHECK(text == NULL);
    T_EQ_INT(clara_tokenizer_decode(t, (const int32_t[]){-1}, 1, &text), CLARA_ERR_INVALID_ARG);
    T_EQ_INT(clara_tokenizer_decode(t, NULL, 0, &text), CLARA_OK);
    T_EQ_STR(text, "");
    free(text);
    clara_tokenizer_free(t);
}

/* clara_tokenizer_final_ids: a trailing byte run (specials inside it included) is not final, for
 * the next byte can rewrite it ("#" from <0x23> becomes two U+FFFD with <0x80>); and for random
 * id sequences of pieces, bytes and specials, the text of the final ids of every prefix is a prefix
 * of the whole sequence's text (what a stream may send at each token). */
static void test_final_ids(void) {
    clara_tokenizer *t = make(dflt(), NULL);
    if (!t) return;
    DECODE(t, "a#", 4, B('#'));
    DECODE(t, "a\xef\xbf\xbd\xef\xbf\xbd", 4, B('#'), B(0x80)); /* the run rewritten */
    T_EQ_INT(clara_tokenizer_final_ids(t, (const int32_t[]){4, B('#')}, 2), 1);
    T_EQ_INT(clara_tokenizer_final_ids(t, (const int32_t[]){4, B(0xC3), 2, B(0xBC)}, 4), 1);
    T_EQ_INT(clara_tokenizer_final_ids(t, (const int32_t[]){B(0xC3), B(0xBC), 4}, 3), 3);
    T_EQ_INT(clara_tokenizer_final_ids(t, (const int32_t[]){4, 12, 1}, 3), 1); /* specials */
    T_EQ_INT(clara_tokenizer_final_ids(t, (const int32_t[]){B('a')}, 1), 0);
    T_EQ_INT(clara_tokenizer_final_ids(t, NULL, 0), 0);
    static const int32_t pool[] = {1,       2,       3,       4,       7,       10,
                                   12,      17,      B('#'),  B(0x80), B(0xC3), B(0xBC),
                                   B(0xE2), B(0x82), B(0xAC), B(0xF0), B(0x9F), B(0)};
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    int bad = 0;
    for (int trial = 0; trial < 2000; trial++) {
        int32_t ids[12];
        size_t n = 1 + trial % 12;
        for (size_t i = 0; i < n; i++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            ids[i] = pool[rng % (sizeof pool / sizeof pool[0])];
        }
        char *whole = NULL;
        size_t wlen = 0;
        if (clara_tokenizer_decode_len(t, ids, n, &whole, &wlen) != CLARA_OK) {
            bad++;
            continue;
        }
        for (size_t k = 0; k <= n; k++) {
            char *part = NULL;
            size_t plen = 0;
            size_t m = clara_tokenizer_final_ids(t, ids, k);
            bad += m > k || clara_tokenizer_decode_len(t, ids, m, &part, &plen) != CLARA_OK ||
                   plen > wlen || memcmp(part, whole, plen) != 0;
            free(part);
        }
        free(whole);
    }
    T_CHECK_MSG(bad == 0, "%d prefixes whose final text is not a prefix of the whole text", bad);
    clara_tokenizer_free(t);
}

static void test_invalid_utf8(void) {
    clara_tokenizer *t = make(dflt(), NULL);
    if (!t) return;
    static const struct {
        const char *s;
        size_t len, off;
    } bad[] = {
        {"a\xff"
         "b",
         3, 1},
        {"ab\xc0\x80", 4, 2}, /* invalid byte, overlong NUL */
        {"\xe0\x80\xaf", 3, 0},
        {"\xed\xa0\x80", 3, 0}, /* overlong /, surrogate */
        {"x\xe2\x96", 3, 1},
        {"\xf4\x90\x80\x80", 4, 0}, /* truncated, > U+10FFFF */
        {"\x80", 1, 0},
        {"ok\xf8\x88\x80\x80\x80", 7, 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clara_ids v = {0};
        clara_ids_push(&v, 42);
        clara_status s = clara_tokenizer_encode(t, bad[i].s, bad[i].len, &v);
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu", bad[i].off);
        T_CHECK_MSG(s == CLARA_ERR_INVALID_ARG && strstr(clara_last_error(), want) && v.n == 1 &&
                        v.ids[0] == 42,
                    "case %zu: %s", i, clara_last_error());
        clara_ids_free(&v);
    }
    EXPECT(t, "\xf4\x8f\xbf\xbf", 3, B(0xF4), B(0x8F), B(0xBF), B(0xBF)); /* U+10FFFF is fine */
    clara_tokenizer_free(t);
}

static void expect_load_error(opts o, clara_status want, const char *needle, int line) {
    clara_status s = CLARA_OK;
    clara_tokenizer *t = make(o, &s);
    T_CHECK_MSG(t == NULL && s == want && strstr(clara_last_error(), needle) &&
                    strstr(clara_last_error(), "tiny.gguf"),
                "line %d: status %d, message '%s'", line, s, clara_last_error());
    clara_tokenizer_free(t);
}

static void test_load_errors(void) {
    opts o = dflt();
    o.bad_merge = "a z";
    expect_load_error(o, CLARA_ERR_FORMAT, "right piece", __LINE__);
    o.bad_merge = "c a"; /* "ca" is not a piece */
    expect_load_error(o, CLARA_ERR_FORMAT, "merged piece", __LINE__);
    o.bad_merge = "ab";
    expect_load_error(o, CLARA_ERR_FORMAT, "one space", __LINE__);
    o.bad_merge = "a b c";
    expect_load_error(o, CLARA_ERR_FORMAT, "one space", __LINE__);
    o = dflt();
    o.bad_added = NB;
    expect_load_error(o, CLARA_ERR_FORMAT, "not a token id", __LINE__);
    o.bad_added = 1;
    expect_load_error(o, CLARA_ERR_FORMAT, "twice", __LINE__);
    o = dflt();
    o.bad_flags = 1 | 2;
    expect_load_error(o, CLARA_ERR_UNSUPPORTED, "lstrip", __LINE__);
    o.bad_flags = 8;
    expect_load_error(o, CLARA_ERR_UNSUPPORTED, "normalized", __LINE__);
    o = dflt();
    o.drop_flags = true;
    expect_load_error(o, CLARA_ERR_FORMAT, "added_token_flags", __LINE__);
    o = dflt();
    o.norm = "bert";
    expect_load_error(o, CLARA_ERR_UNSUPPORTED, "normalizer", __LINE__);
    o = dflt();
    o.scheme = "first"; /* with the legacy normalizer */
    expect_load_error(o, CLARA_ERR_UNSUPPORTED, "first", __LINE__);
    o = dflt();
    o.unk = NB;
    expect_load_error(o, CLARA_ERR_FORMAT, "unknown_token_id", __LINE__);
    o = dflt();
    o.no_tokens = true;
    expect_load_error(o, CLARA_ERR_NOT_FOUND, "tokenizer.ggml.tokens", __LINE__);
    o = dflt();
    o.no_bytes = true; /* vocabulary of 20: added id 14 fine, merges fine → loads */
    clara_tokenizer *t = make(o, NULL);
    T_CHECK(t != NULL);
    clara_tokenizer_free(t);
}

static void test_ids(void) {
    clara_ids v = {0};
    int fails = 0;
    for (int i = 0; i < 1000; i++) fails += clara_ids_push(&v, i) != CLARA_OK;
    T_EQ_INT(fails, 0);
    T_EQ_INT(v.n, 1000);
    T_EQ_INT(v.ids[999], 999);
    clara_ids_free(&v);
    T_CHECK(v.ids == NULL && v.n == 0 && v.cap == 0);
    clara_ids_free(NULL);
    clara_tokenizer_free(NULL);
}

int main(void) {
    T_RUN(test_merges);
    T_RUN(test_bytes_and_unk);
    T_RUN(test_added);
    T_RUN(test_metaspace);
    T_RUN(test_decode);
    T_RUN(test_final_ids);
    T_RUN(test_invalid_utf8);
    T_RUN(test_load_errors);
    T_RUN(test_ids);
    return t_report("test_tokenizer");
}
