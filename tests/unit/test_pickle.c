/* test_pickle.c - the allow-list pickle VM and the .pth reader. .pth samples were pickled by
 * Python's own pickle module with a fake torch registered (tests/unit/gen_unit_data.py), so the
 * opcodes, GLOBAL names and persistent ids are what torch.save writes; the expected tensors
 * (names, strides, row-major bytes computed with numpy) are in tests/unit/data/expected.json.
 * Hand-assembled pickles check each opcode's value and each rejection message. */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdlib.h>

#include "base/mapfile.h"
#include "base/status.h"
#include "convert/pth.h"
#include "convert/torch_pickle.h"
#include "t.h"

#define DATA "tests/unit/data/"

static cJSON *g_expected;

static void check_tensor(const pth_tensor *t, const cJSON *e) {
    T_EQ_STR(t->name, cJSON_GetObjectItem(e, "name")->valuestring);
    T_EQ_STR(st_dtype_name(t->dtype), cJSON_GetObjectItem(e, "dtype")->valuestring);
    T_EQ_STR(t->storage_key, cJSON_GetObjectItem(e, "key")->valuestring);
    T_EQ_INT(t->storage_offset, cJSON_GetObjectItem(e, "offset")->valueint);
    T_EQ_INT(t->contiguous, cJSON_IsTrue(cJSON_GetObjectItem(e, "contiguous")));
    const cJSON *shape = cJSON_GetObjectItem(e, "shape"),
                *stride = cJSON_GetObjectItem(e, "stride");
    T_EQ_INT(t->n_dims, cJSON_GetArraySize(shape));
    for (int d = 0; d < cJSON_GetArraySize(shape) && d < ST_MAX_DIMS; d++) {
        T_EQ_INT(t->shape[d], cJSON_GetArrayItem(shape, d)->valueint);
        T_EQ_INT(t->stride[d], cJSON_GetArrayItem(stride, d)->valueint);
    }
    uint8_t *buf = malloc(t->nbytes + 1);
    T_EQ_INT(pth_tensor_copy(t, buf, t->nbytes), CLARA_OK);
    T_CHECK_MSG(hex_eq(buf, t->nbytes, cJSON_GetObjectItem(e, "hex")->valuestring), "bytes of %s",
                t->name);
    if (t->nbytes > 0) T_EQ_INT(pth_tensor_copy(t, buf, t->nbytes - 1), CLARA_ERR_INVALID_ARG);
    free(buf);
}

static void check_pth(const char *file) {
    char path[256];
    snprintf(path, sizeof path, DATA "%s", file);
    pth_file *f = NULL;
    T_EQ_INT(pth_open(path, &f), CLARA_OK);
    if (!f) {
        fprintf(stderr, "  %s\n", clara_last_error());
        return;
    }
    const cJSON *exp = cJSON_GetObjectItem(g_expected, file);
    const cJSON *ts = cJSON_GetObjectItem(exp, "tensors");
    T_EQ_STR(pth_archive_dir(f), cJSON_GetObjectItem(exp, "dir")->valuestring);
    T_EQ_INT(pth_n_skipped(f), cJSON_GetObjectItem(exp, "skipped")->valueint);
    T_EQ_INT(pth_n_tensors(f), cJSON_GetArraySize(ts));
    size_t i = 0;
    for (const cJSON *e = ts->child; e && i < pth_n_tensors(f); e = e->next, i++) {
        check_tensor(pth_tensor_at(f, i), e);
        T_CHECK(pth_find(f, pth_tensor_at(f, i)->name) == pth_tensor_at(f, i));
    }
    T_EQ_INT(pth_check_crc(f), CLARA_OK);
    pth_free(f);
}

static void test_pth_samples(void) {
    check_pth("flat.pth");
    check_pth("nested.pth");
    check_pth("nested_p4.pth"); /* protocol 4: FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL */
    pth_file *f = NULL;
    if (pth_open(DATA "nested.pth", &f) != CLARA_OK) return;
    const pth_tensor *t =
        pth_find(f, "encoder_adapter/model.layers.0.self_attn.q_proj.lora_A.weight");
    T_CHECK(t && t->type == CLARA_TYPE_F32 && t->contiguous);
    T_CHECK((t = pth_find(f, "encoder_adapter/param")) && t->type == CLARA_TYPE_F16);
    T_CHECK((t = pth_find(f, "decoder_adapter/bytes")) && t->dtype == ST_U8 && t->type == -1);
    T_CHECK((t = pth_find(f, "decoder_adapter/scalar")) && t->n_dims == 0 && t->numel == 1);
    T_CHECK((t = pth_find(f, "decoder_adapter/expanded")) && t->numel == 6 && !t->contiguous);
    T_CHECK(pth_find(f, "decoder_adapter/note") == NULL);
    T_CHECK(pth_find(f, "step") == NULL);
    pth_free(f);
}

static void expect_pth_error(const char *file, clara_status want, const char *msg) {
    char path[256];
    snprintf(path, sizeof path, DATA "%s", file);
    pth_file *f = NULL;
    T_EQ_INT(pth_open(path, &f), want);
    T_CHECK(f == NULL);
    T_CHECK(err_has(msg));
    pth_free(f);
}

static void test_pth_bad(void) {
    expect_pth_error("bad_byteorder.pth", CLARA_ERR_UNSUPPORTED,
                     "byteorder is 'big'; only little-endian");
    expect_pth_error("bad_storage_small.pth", CLARA_ERR_FORMAT,
                     "tensor 'model.embed_tokens.weight': storage '0' holds 22 bytes, too small "
                     "for 12 elements of BF16");
    expect_pth_error("bad_compressed.pth", CLARA_ERR_UNSUPPORTED,
                     "entry 'archive/data.pkl' is compressed (method 8)");
    expect_pth_error("bad_missing_storage.pth", CLARA_ERR_FORMAT,
                     "tensor 'w': storage entry 'archive/data/1' is missing");
    expect_pth_error("bad_nested_deep.pth", CLARA_ERR_UNSUPPORTED, "nested deeper than 64");
    expect_pth_error("bad_os_system.pth", CLARA_ERR_UNSUPPORTED,
                     "bad_os_system.pth: pickle: global 'os.system' is not allowed");
    expect_pth_error("bad_crc.pth", CLARA_ERR_FORMAT, "entry 'archive/data.pkl': CRC-32 mismatch");
    expect_pth_error("bad_no_pkl.pth", CLARA_ERR_FORMAT, "bad_no_pkl.pth: no archive/data.pkl");
    expect_pth_error("bad_two_dirs.pth", CLARA_ERR_FORMAT,
                     "entry 'other/data/1' is outside the archive directory 'archive/'");
    expect_pth_error("bad_duplicate.zip", CLARA_ERR_FORMAT, "duplicate entry 'a'");
    expect_pth_error("zip64.zip", CLARA_ERR_FORMAT, "pickle: "); /* "hello pickle" is no pickle */

    /* every truncation of a valid .pth is rejected */
    clara_mapped m;
    if (clara_map_file(DATA "flat.pth", &m) != CLARA_OK) return;
    int accepted = 0;
    for (size_t n = 0; n < m.size; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, m.data, n);
        pth_file *f = NULL;
        if (pth_parse(copy, n, "cut.pth", &f) == CLARA_OK) accepted++;
        pth_free(f);
        free(copy);
    }
    T_EQ_INT(accepted, 0);
    clara_unmap_file(&m);
}

/* Loads a hand-assembled pickle; returns the status (result freed). */
static clara_status load(const char *bytes, size_t n) {
    pk_result *r = NULL;
    clara_status s = pk_load((const uint8_t *)bytes, n, "t.pkl", &r);
    pk_free(r);
    return s;
}
#define LOAD(lit) load(lit, sizeof(lit) - 1)

static void test_vm_values(void) {
    /* ( BININT -5, BININT1 200, BININT2 0x1234, LONG1 3 bytes -8388608, LONG1 8 bytes 2^62,
     *   LONG1 0 bytes, BINFLOAT 1.5, SHORT_BINUNICODE "hé", NEWTRUE, NONE ) TUPLE STOP */
    static const char p[] = "\x80\x02("
                            "J\xfb\xff\xff\xff"
                            "K\xc8"
                            "M\x34\x12"
                            "\x8a\x03\x00\x00\x80"
                            "\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40"
                            "\x8a\x00"
                            "G\x3f\xf8\x00\x00\x00\x00\x00\x00"
                            "\x8c\x03h\xc3\xa9"
                            "\x88N"
                            "t.";
    pk_result *r = NULL;
    T_EQ_INT(pk_load((const uint8_t *)p, sizeof p - 1, "t.pkl", &r), CLARA_OK);
    if (!r) return;
    const pk_value *t = pk_root(r);
    T_EQ_INT(t->kind, PK_TUPLE);
    T_EQ_INT(t->u.seq.n, 10);
    if (t->u.seq.n == 10) {
        pk_value **it = t->u.seq.items;
        T_EQ_INT(it[0]->u.i, -5);
        T_EQ_INT(it[1]->u.i, 200);
        T_EQ_INT(it[2]->u.i, 0x1234);
        T_EQ_INT(it[3]->u.i, -8388608);
        T_EQ_INT(it[4]->u.i, 1ll << 62);
        T_EQ_INT(it[5]->u.i, 0);
        T_CHECK(it[6]->kind == PK_FLOAT && it[6]->u.f == 1.5);
        T_CHECK(it[7]->kind == PK_STR && it[7]->u.str.len == 3 &&
                !strcmp(it[7]->u.str.s, "h\xc3\xa9"));
        T_CHECK(it[8]->kind == PK_BOOL && it[8]->u.b);
        T_EQ_INT(it[9]->kind, PK_NONE);
    }
    pk_free(r);
    /* memo sharing: [x, x] where x is the same dict object */
    static const char q[] = "\x80\x02](}q\x00h\x00"
                            "e.";
    T_EQ_INT(pk_load((const uint8_t *)q, sizeof q - 1, "t.pkl", &r), CLARA_OK);
    if (r) {
        const pk_value *l = pk_root(r);
        T_CHECK(l->kind == PK_LIST && l->u.seq.n == 2 && l->u.seq.items[0] == l->u.seq.items[1]);
        pk_free(r);
    }
}

static void test_vm_rejects(void) {
    T_EQ_INT(LOAD("\x80\x02"
                  "cbuiltins\neval\nX\x01\x00\x00\x00"
                  "1\x85R."),
             CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("t.pkl: pickle: global 'builtins.eval' is not allowed (at byte 2)"));
    T_EQ_INT(LOAD("\x80\x02"
                  "cos\nsystem\n)R."),
             CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("global 'os.system' is not allowed"));
    T_EQ_INT(LOAD("\x80\x04\x8c\x05posix\x8c\x06system\x93."), CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("global 'posix.system' is not allowed")); /* STACK_GLOBAL too */
    T_EQ_INT(LOAD("\x80\x02\xff."), CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("opcode 0xff (unknown) is not supported (at byte 2)"));
    T_EQ_INT(LOAD("\x80\x02(i__main__\nX\n."), CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("opcode 0x69 (INST) is not supported"));
    T_EQ_INT(LOAD("\x80\x02"
                  "ctorch\nFloatStorage\n)R."),
             CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("REDUCE of 'torch.FloatStorage' is not allowed"));
    T_EQ_INT(LOAD("\x80\x02N)R."), CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("REDUCE: the callable is a None, not a global"));
    T_EQ_INT(LOAD("\x80\x02s."), CLARA_ERR_FORMAT);
    T_CHECK(err_has("stack underflow"));
    T_EQ_INT(LOAD("\x80\x02N(0."), CLARA_OK);        /* POP on an empty frame drops the MARK */
    T_EQ_INT(LOAD("\x80\x02N(."), CLARA_ERR_FORMAT); /* STOP cannot pop below a MARK */
    T_CHECK(err_has("stack underflow"));
    T_EQ_INT(LOAD("\x80\x02h\x05."), CLARA_ERR_FORMAT);
    T_CHECK(err_has("memo index 5 out of range"));
    T_EQ_INT(LOAD("\x80\x02Nr\xff\xff\xff\xff."), CLARA_ERR_FORMAT);
    T_CHECK(err_has("memo index 4294967295 out of range"));
    T_EQ_INT(LOAD("\x80\x02X\x10\x00\x00\x00"
                  "ab"),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("truncated: BINUNICODE needs 16 more bytes"));
    T_EQ_INT(LOAD("\x80\x02N"), CLARA_ERR_FORMAT);
    T_CHECK(err_has("data ends without STOP"));
    T_EQ_INT(LOAD("\x80\x06N."), CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("pickle protocol 6"));
    T_EQ_INT(LOAD("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01."), CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("integer of 9 bytes is too large"));
    T_EQ_INT(LOAD("\x80\x02(X\x07\x00\x00\x00storageX\x01\x00\x00\x00xX\x01\x00\x00\x00"
                  "0"
                  "X\x03\x00\x00\x00"
                  "cpuK\x01tQ."),
             CLARA_ERR_FORMAT);
    T_CHECK(err_has("persistent id has bad field types"));
    T_EQ_INT(LOAD("\x80\x02N}b."), CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("BUILD of a None with dict state is not supported"));
    T_EQ_INT(LOAD("\x80\x02\x95\xff\x00\x00\x00\x00\x00\x00\x00N."), CLARA_ERR_FORMAT);
    T_CHECK(err_has("FRAME of 255 bytes runs past the end"));
}

/* A tensor with 9 dimensions through the real reconstruction path. */
static void test_vm_tensor_dims(void) {
    static const char p[] = "\x80\x02"
                            "ctorch._utils\n_rebuild_tensor_v2\n"
                            "((X\x07\x00\x00\x00storage"
                            "ctorch\nFloatStorage\n"
                            "X\x01\x00\x00\x00"
                            "0X\x03\x00\x00\x00"
                            "cpuK\x01tQ"
                            "K\x00(K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01t"
                            "(K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01t"
                            "\x89"
                            "ccollections\nOrderedDict\n)Rt"
                            "R.";
    T_EQ_INT(load(p, sizeof p - 1), CLARA_ERR_UNSUPPORTED);
    T_CHECK(err_has("tensor has 9 dimensions (at most 8)"));
}

static void test_vm_deep(void) {
    /* 100000 nested MARKs hit the mark limit */
    size_t n = 100000;
    char *p = malloc(n + 3);
    memcpy(p, "\x80\x02", 2);
    memset(p + 2, '(', n);
    p[n + 2] = '.';
    T_EQ_INT(load(p, n + 3), CLARA_ERR_NOMEM);
    T_CHECK(err_has("more than 4096 nested MARKs"));
    /* 100000 pushes of the same memo entry are allowed (below the stack limit) */
    memcpy(p, "\x80\x02Nq\x00", 5);
    for (size_t i = 5; i + 2 < n; i += 2) memcpy(p + i, "h\x00", 2);
    p[n - 1] = '.';
    T_EQ_INT(load(p, n), CLARA_OK);
    free(p);
    /* lists nested 100000 deep through the memo: ] q0 then ( ] h0 a q0 ) x 100000: the VM never
     * recurses, so loading and freeing are fine */
    size_t reps = 100000, len = 2 + 3 + reps * 6 + 1;
    p = malloc(len);
    memcpy(p, "\x80\x02]q\x00", 5);
    for (size_t i = 0; i < reps; i++)
        memcpy(p + 5 + 6 * i,
               "]h\x00"
               "aq\x00",
               6);
    p[len - 1] = '.';
    pk_result *r = NULL;
    T_EQ_INT(pk_load((const uint8_t *)p, len, "deep.pkl", &r), CLARA_OK);
    int depth = 0;
    for (const pk_value *v = r ? pk_root(r) : NULL; v && v->kind == PK_LIST && v->u.seq.n;
         v = v->u.seq.items[0])
        depth++;
    T_EQ_INT(depth, reps);
    pk_free(r);
    free(p);
}

int main(void) {
    char *text = NULL;
    size_t len;
    if (clara_read_file(DATA "expected.json", 1 << 20, &text, &len) != CLARA_OK ||
        !(g_expected = cJSON_Parse(text))) {
        fprintf(stderr, "cannot load %sexpected.json: %s\n", DATA, clara_last_error());
        return 1;
    }
    free(text);
    T_RUN(test_pth_samples);
    T_RUN(test_pth_bad);
    T_RUN(test_vm_values);
    T_RUN(test_vm_rejects);
    T_RUN(test_vm_tensor_dims);
    T_RUN(test_vm_deep);
    cJSON_Delete(g_expected);
    return t_report("pickle");
}
