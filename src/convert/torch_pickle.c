/* torch_pickle.c - the allow-list pickle stack machine (see torch_pickle.h).
 *
 * Opcode semantics follow CPython's Lib/pickle.py _Unpickler (the reference for the format):
 * MARK pushes the current stack height on a separate mark stack; TUPLE/SETITEMS/APPENDS consume
 * everything above the last mark. Every value is heap-allocated and recorded in one list, so a
 * failure at any point frees everything and values may be freely shared through the memo. */
#include "convert/torch_pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

struct pk_result {
    pk_value **all;
    size_t n_all;
    const pk_value *root;
};

typedef struct {
    const char *name;
    const uint8_t *start, *p, *end;
    size_t op_at; /* offset of the opcode being executed, for messages */
    pk_value **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t n_marks;
    pk_value **memo;
    size_t memo_cap, memo_used;
    pk_value **all;
    size_t n_all, all_cap;
    const pk_value *result;
} vm;

static const char *const k_opnames[256] = {
    ['('] = "MARK",
    ['.'] = "STOP",
    ['0'] = "POP",
    ['1'] = "POP_MARK",
    ['2'] = "DUP",
    ['F'] = "FLOAT",
    ['I'] = "INT",
    ['J'] = "BININT",
    ['K'] = "BININT1",
    ['L'] = "LONG",
    ['M'] = "BININT2",
    ['N'] = "NONE",
    ['P'] = "PERSID",
    ['Q'] = "BINPERSID",
    ['R'] = "REDUCE",
    ['S'] = "STRING",
    ['T'] = "BINSTRING",
    ['U'] = "SHORT_BINSTRING",
    ['V'] = "UNICODE",
    ['X'] = "BINUNICODE",
    ['a'] = "APPEND",
    ['b'] = "BUILD",
    ['c'] = "GLOBAL",
    ['d'] = "DICT",
    ['}'] = "EMPTY_DICT",
    ['e'] = "APPENDS",
    ['g'] = "GET",
    ['h'] = "BINGET",
    ['i'] = "INST",
    ['j'] = "LONG_BINGET",
    ['l'] = "LIST",
    [']'] = "EMPTY_LIST",
    ['o'] = "OBJ",
    ['p'] = "PUT",
    ['q'] = "BINPUT",
    ['r'] = "LONG_BINPUT",
    ['s'] = "SETITEM",
    ['t'] = "TUPLE",
    [')'] = "EMPTY_TUPLE",
    ['u'] = "SETITEMS",
    ['G'] = "BINFLOAT",
    ['B'] = "BINBYTES",
    ['C'] = "SHORT_BINBYTES",
    [0x80] = "PROTO",
    [0x81] = "NEWOBJ",
    [0x82] = "EXT1",
    [0x83] = "EXT2",
    [0x84] = "EXT4",
    [0x85] = "TUPLE1",
    [0x86] = "TUPLE2",
    [0x87] = "TUPLE3",
    [0x88] = "NEWTRUE",
    [0x89] = "NEWFALSE",
    [0x8a] = "LONG1",
    [0x8b] = "LONG4",
    [0x8c] = "SHORT_BINUNICODE",
    [0x8d] = "BINUNICODE8",
    [0x8e] = "BINBYTES8",
    [0x8f] = "EMPTY_SET",
    [0x90] = "ADDITEMS",
    [0x91] = "FROZENSET",
    [0x92] = "NEWOBJ_EX",
    [0x93] = "STACK_GLOBAL",
    [0x94] = "MEMOIZE",
    [0x95] = "FRAME",
    [0x96] = "BYTEARRAY8",
    [0x97] = "NEXT_BUFFER",
    [0x98] = "READONLY_BUFFER",
};

const char *pk_opcode_name(uint8_t op) {
    return k_opnames[op] ? k_opnames[op] : "unknown";
}

static const char *const k_kind_names[] = {
    "None",  "bool", "int",  "float",  "str",     "bytes",
    "tuple", "list", "dict", "global", "storage", "tensor",
};

/* torch.<prefix>Storage classes and their element types. */
static const struct {
    const char *cls;
    st_dtype dtype;
} k_storages[] = {
    {"FloatStorage", ST_F32},  {"HalfStorage", ST_F16}, {"BFloat16Storage", ST_BF16},
    {"DoubleStorage", ST_F64}, {"LongStorage", ST_I64}, {"IntStorage", ST_I32},
    {"ShortStorage", ST_I16},  {"CharStorage", ST_I8},  {"ByteStorage", ST_U8},
    {"BoolStorage", ST_BOOL},
};

static clara_status vm_fail(vm *m, clara_status st, const char *fmt, ...) CLARA_PRINTF(3, 4);
static clara_status vm_fail(vm *m, clara_status st, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return clara_fail(st, "%s: pickle: %s (at byte %zu)", m->name, msg, m->op_at);
}

/* Copies s[0, n) into buf with anything unprintable replaced, so messages stay one line. */
static const char *printable(char *buf, size_t cap, const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++)
        buf[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    buf[k] = '\0';
    return buf;
}

static pk_value *new_value(vm *m, pk_kind kind) {
    if (m->n_all >= PK_MAX_VALUES) return NULL;
    if (m->n_all == m->all_cap) {
        size_t cap = m->all_cap ? m->all_cap * 2 : 256;
        pk_value **a = realloc(m->all, cap * sizeof *a);
        if (!a) return NULL;
        m->all = a;
        m->all_cap = cap;
    }
    pk_value *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->kind = kind;
    m->all[m->n_all++] = v;
    return v;
}

static void free_value(pk_value *v) {
    switch (v->kind) {
    case PK_STR:
    case PK_BYTES:
        free(v->u.str.s);
        break;
    case PK_TUPLE:
    case PK_LIST:
        free(v->u.seq.items);
        break;
    case PK_DICT:
        free(v->u.dict.keys);
        free(v->u.dict.vals);
        break;
    default:
        break;
    }
    free(v);
}

static clara_status oom(vm *m) {
    return vm_fail(m, CLARA_ERR_NOMEM, "out of memory or more than %u objects", PK_MAX_VALUES);
}

static clara_status push(vm *m, pk_value *v) {
    if (!v) return oom(m);
    if (m->sp == m->stack_cap) {
        if (m->stack_cap >= PK_MAX_STACK)
            return vm_fail(m, CLARA_ERR_NOMEM, "stack deeper than %u values", PK_MAX_STACK);
        size_t cap = m->stack_cap ? m->stack_cap * 2 : 64;
        pk_value **s = realloc(m->stack, cap * sizeof *s);
        if (!s) return oom(m);
        m->stack = s;
        m->stack_cap = cap;
    }
    m->stack[m->sp++] = v;
    return CLARA_OK;
}

/* Height below which the current MARK protects the stack. */
static size_t stack_floor(const vm *m) {
    return m->n_marks ? m->marks[m->n_marks - 1] : 0;
}

static clara_status pop(vm *m, pk_value **out) {
    if (m->sp <= stack_floor(m)) return vm_fail(m, CLARA_ERR_FORMAT, "stack underflow");
    *out = m->stack[--m->sp];
    return CLARA_OK;
}

static clara_status top(vm *m, pk_value **out) {
    if (m->sp <= stack_floor(m)) return vm_fail(m, CLARA_ERR_FORMAT, "stack underflow");
    *out = m->stack[m->sp - 1];
    return CLARA_OK;
}

/* Removes the last mark; the values above it are stack[*first, old sp). */
static clara_status pop_mark(vm *m, size_t *first, size_t *count) {
    if (!m->n_marks) return vm_fail(m, CLARA_ERR_FORMAT, "no MARK on the stack");
    *first = m->marks[--m->n_marks];
    *count = m->sp - *first;
    m->sp = *first;
    return CLARA_OK;
}

static clara_status need(vm *m, uint64_t n, const uint8_t **out) {
    if ((uint64_t)(m->end - m->p) < n)
        return vm_fail(m, CLARA_ERR_FORMAT, "truncated: %s needs %llu more bytes",
                       pk_opcode_name(m->start[m->op_at]), (unsigned long long)n);
    *out = m->p;
    m->p += n;
    return CLARA_OK;
}

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static clara_status seq_append(vm *m, pk_value *seq, pk_value *item) {
    if (seq->u.seq.n == seq->u.seq.cap) {
        size_t cap = seq->u.seq.cap ? seq->u.seq.cap * 2 : 4;
        pk_value **a = realloc(seq->u.seq.items, cap * sizeof *a);
        if (!a) return oom(m);
        seq->u.seq.items = a;
        seq->u.seq.cap = cap;
    }
    seq->u.seq.items[seq->u.seq.n++] = item;
    return CLARA_OK;
}

/* Duplicate keys are kept (torch never writes them); the .pth reader rejects duplicate names. */
static clara_status dict_set(vm *m, pk_value *d, pk_value *k, pk_value *v) {
    if (d->u.dict.n == d->u.dict.cap) {
        size_t cap = d->u.dict.cap ? d->u.dict.cap * 2 : 8;
        pk_value **ks = realloc(d->u.dict.keys, cap * sizeof *ks);
        if (ks) d->u.dict.keys = ks;
        pk_value **vs = ks ? realloc(d->u.dict.vals, cap * sizeof *vs) : NULL;
        if (vs) d->u.dict.vals = vs;
        if (!ks || !vs) return oom(m);
        d->u.dict.cap = cap;
    }
    d->u.dict.keys[d->u.dict.n] = k;
    d->u.dict.vals[d->u.dict.n++] = v;
    return CLARA_OK;
}

/* A tuple (or list) of the values stack[first, first + n). */
static clara_status make_seq(vm *m, pk_kind kind, size_t first, size_t n, pk_value **out) {
    pk_value *t = new_value(m, kind);
    if (!t) return oom(m);
    for (size_t i = 0; i < n; i++) {
        clara_status s = seq_append(m, t, m->stack[first + i]);
        if (s != CLARA_OK) return s;
    }
    *out = t;
    return CLARA_OK;
}

/* ---- memo ---- */

static clara_status memo_put(vm *m, uint64_t idx) {
    pk_value *v = NULL;
    clara_status s = top(m, &v);
    if (s != CLARA_OK) return s;
    /* a writer numbers memo slots consecutively, so an index can never exceed the input size */
    if (idx >= PK_MAX_MEMO || idx >= (uint64_t)(m->end - m->start))
        return vm_fail(m, CLARA_ERR_FORMAT, "memo index %llu out of range",
                       (unsigned long long)idx);
    if (idx >= m->memo_cap) {
        size_t cap = m->memo_cap ? m->memo_cap : 64;
        while (cap <= idx) cap *= 2;
        pk_value **a = realloc(m->memo, cap * sizeof *a);
        if (!a) return oom(m);
        memset(a + m->memo_cap, 0, (cap - m->memo_cap) * sizeof *a);
        m->memo = a;
        m->memo_cap = cap;
    }
    if (!m->memo[idx]) m->memo_used++;
    m->memo[idx] = v;
    return CLARA_OK;
}

static clara_status memo_get(vm *m, uint64_t idx) {
    if (idx >= m->memo_cap || !m->memo[idx])
        return vm_fail(m, CLARA_ERR_FORMAT, "memo index %llu out of range (never stored)",
                       (unsigned long long)idx);
    return push(m, m->memo[idx]);
}

/* ---- scalars and strings ---- */

static clara_status push_int(vm *m, int64_t i) {
    pk_value *v = new_value(m, PK_INT);
    if (v) v->u.i = i;
    return push(m, v);
}

/* LONG1/LONG4: little-endian two's complement of n bytes; we only need 64-bit values. */
static clara_status op_long(vm *m, int len_bytes) {
    const uint8_t *p;
    clara_status s = need(m, (uint64_t)len_bytes, &p);
    if (s != CLARA_OK) return s;
    uint64_t n = le(p, len_bytes);
    if (n > 8)
        return vm_fail(m, CLARA_ERR_UNSUPPORTED, "integer of %llu bytes is too large",
                       (unsigned long long)n);
    if ((s = need(m, n, &p)) != CLARA_OK) return s;
    uint64_t u = le(p, (int)n);
    if (n > 0 && n < 8 && (p[n - 1] & 0x80)) u |= ~0ull << (8 * n); /* sign-extend */
    return push_int(m, (int64_t)u);
}

static clara_status op_string(vm *m, pk_kind kind, int len_bytes) {
    const uint8_t *p;
    clara_status s = need(m, (uint64_t)len_bytes, &p);
    if (s != CLARA_OK) return s;
    uint64_t n = le(p, len_bytes);
    if ((s = need(m, n, &p)) != CLARA_OK) return s;
    pk_value *v = new_value(m, kind);
    if (!v || !(v->u.str.s = malloc((size_t)n + 1))) return oom(m);
    memcpy(v->u.str.s, p, (size_t)n);
    v->u.str.s[n] = '\0';
    v->u.str.len = (size_t)n;
    return push(m, v);
}

static clara_status op_binfloat(vm *m) {
    const uint8_t *p;
    clara_status s = need(m, 8, &p);
    if (s != CLARA_OK) return s;
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u = (u << 8) | p[i]; /* big-endian */
    pk_value *v = new_value(m, PK_FLOAT);
    if (v) memcpy(&v->u.f, &u, 8);
    return push(m, v);
}

/* ---- globals ---- */

static clara_status resolve_global(vm *m, const char *mod, size_t mlen, const char *nm,
                                   size_t nlen) {
    pk_value *g = new_value(m, PK_GLOBAL);
    if (!g) return oom(m);
#define IS(a, n, lit) ((n) == sizeof(lit) - 1 && memcmp((a), (lit), (n)) == 0)
    bool ok = true;
    if (IS(mod, mlen, "torch._utils") && IS(nm, nlen, "_rebuild_tensor_v2"))
        g->u.global.id = PK_G_REBUILD_TENSOR_V2;
    else if (IS(mod, mlen, "torch._utils") && IS(nm, nlen, "_rebuild_parameter"))
        g->u.global.id = PK_G_REBUILD_PARAMETER;
    else if (IS(mod, mlen, "collections") && IS(nm, nlen, "OrderedDict"))
        g->u.global.id = PK_G_ORDERED_DICT;
    else
        ok = false;
    for (size_t i = 0; !ok && IS(mod, mlen, "torch") && i < sizeof k_storages / sizeof *k_storages;
         i++) {
        if (nlen == strlen(k_storages[i].cls) && memcmp(nm, k_storages[i].cls, nlen) == 0) {
            g->u.global.id = PK_G_STORAGE;
            g->u.global.dtype = k_storages[i].dtype;
            ok = true;
        }
    }
#undef IS
    if (!ok) {
        char a[PK_MAX_GLOBAL + 1], b[PK_MAX_GLOBAL + 1];
        return vm_fail(m, CLARA_ERR_UNSUPPORTED, "global '%s.%s' is not allowed",
                       printable(a, sizeof a, mod, mlen), printable(b, sizeof b, nm, nlen));
    }
    return push(m, g);
}

/* GLOBAL: "module\nname\n" */
static clara_status op_global(vm *m) {
    const char *line[2];
    size_t len[2];
    for (int k = 0; k < 2; k++) {
        size_t room = (size_t)(m->end - m->p);
        const uint8_t *nl = memchr(m->p, '\n', room < PK_MAX_GLOBAL ? room : PK_MAX_GLOBAL);
        if (!nl) return vm_fail(m, CLARA_ERR_FORMAT, "GLOBAL argument is not two short lines");
        line[k] = (const char *)m->p;
        len[k] = (size_t)(nl - m->p);
        m->p = nl + 1;
    }
    return resolve_global(m, line[0], len[0], line[1], len[1]);
}

static clara_status op_stack_global(vm *m) {
    pk_value *mod = NULL, *nm = NULL;
    clara_status s = pop(m, &nm);
    if (s == CLARA_OK) s = pop(m, &mod);
    if (s != CLARA_OK) return s;
    if (mod->kind != PK_STR || nm->kind != PK_STR || mod->u.str.len > PK_MAX_GLOBAL ||
        nm->u.str.len > PK_MAX_GLOBAL)
        return vm_fail(m, CLARA_ERR_FORMAT, "STACK_GLOBAL needs two short strings");
    return resolve_global(m, mod->u.str.s, mod->u.str.len, nm->u.str.s, nm->u.str.len);
}

static const char *global_name(const pk_value *g, char *buf, size_t cap) {
    switch (g->u.global.id) {
    case PK_G_REBUILD_TENSOR_V2:
        return "torch._utils._rebuild_tensor_v2";
    case PK_G_REBUILD_PARAMETER:
        return "torch._utils._rebuild_parameter";
    case PK_G_ORDERED_DICT:
        return "collections.OrderedDict";
    default:
        for (size_t i = 0; i < sizeof k_storages / sizeof *k_storages; i++)
            if (k_storages[i].dtype == g->u.global.dtype)
                snprintf(buf, cap, "torch.%s", k_storages[i].cls);
        return buf;
    }
}

/* ---- torch reconstruction ---- */

static bool is_nonneg_int(const pk_value *v) {
    return v->kind == PK_INT && v->u.i >= 0;
}

/* size/stride tuples: at most ST_MAX_DIMS non-negative ints */
static clara_status int_tuple(vm *m, const pk_value *t, const char *what, uint64_t *dst,
                              uint32_t *n) {
    if (t->kind != PK_TUPLE)
        return vm_fail(m, CLARA_ERR_FORMAT, "tensor %s is a %s, not a tuple", what,
                       k_kind_names[t->kind]);
    if (t->u.seq.n > ST_MAX_DIMS)
        return vm_fail(m, CLARA_ERR_UNSUPPORTED, "tensor has %zu dimensions (at most %d)",
                       t->u.seq.n, ST_MAX_DIMS);
    for (size_t i = 0; i < t->u.seq.n; i++) {
        if (!is_nonneg_int(t->u.seq.items[i]))
            return vm_fail(m, CLARA_ERR_FORMAT, "tensor %s[%zu] is not a non-negative int", what,
                           i);
        dst[i] = (uint64_t)t->u.seq.items[i]->u.i;
    }
    *n = (uint32_t)t->u.seq.n;
    return CLARA_OK;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks
 * [, metadata]) */
static clara_status rebuild_tensor(vm *m, const pk_value *args) {
    pk_value **a = args->u.seq.items;
    size_t n = args->u.seq.n;
    if (n != 6 && n != 7)
        return vm_fail(m, CLARA_ERR_FORMAT, "_rebuild_tensor_v2 takes 6 or 7 arguments, got %zu",
                       n);
    if (a[0]->kind != PK_STORAGE)
        return vm_fail(m, CLARA_ERR_FORMAT, "_rebuild_tensor_v2: storage is a %s",
                       k_kind_names[a[0]->kind]);
    if (!is_nonneg_int(a[1]) || a[4]->kind != PK_BOOL || a[5]->kind != PK_DICT ||
        (n == 7 && a[6]->kind != PK_NONE && a[6]->kind != PK_DICT))
        return vm_fail(m, CLARA_ERR_FORMAT, "_rebuild_tensor_v2: bad argument types");
    pk_value *t = new_value(m, PK_TENSOR);
    if (!t) return oom(m);
    uint32_t nd_stride;
    clara_status s = int_tuple(m, a[2], "size", t->u.tensor.shape, &t->u.tensor.n_dims);
    if (s == CLARA_OK) s = int_tuple(m, a[3], "stride", t->u.tensor.stride, &nd_stride);
    if (s != CLARA_OK) return s;
    if (nd_stride != t->u.tensor.n_dims)
        return vm_fail(m, CLARA_ERR_FORMAT, "tensor size has %u dimensions but stride has %u",
                       t->u.tensor.n_dims, nd_stride);
    t->u.tensor.storage = a[0];
    t->u.tensor.offset = (uint64_t)a[1]->u.i;
    t->u.tensor.requires_grad = a[4]->u.b;
    return push(m, t);
}

static clara_status op_reduce(vm *m) {
    pk_value *args = NULL, *fn = NULL;
    clara_status s = pop(m, &args);
    if (s == CLARA_OK) s = pop(m, &fn);
    if (s != CLARA_OK) return s;
    if (fn->kind != PK_GLOBAL)
        return vm_fail(m, CLARA_ERR_UNSUPPORTED, "REDUCE: the callable is a %s, not a global",
                       k_kind_names[fn->kind]);
    if (args->kind != PK_TUPLE)
        return vm_fail(m, CLARA_ERR_FORMAT, "REDUCE: arguments are a %s, not a tuple",
                       k_kind_names[args->kind]);
    size_t n = args->u.seq.n;
    switch (fn->u.global.id) {
    case PK_G_ORDERED_DICT:
        if (n != 0) return vm_fail(m, CLARA_ERR_UNSUPPORTED, "OrderedDict() with arguments");
        return push(m, new_value(m, PK_DICT));
    case PK_G_REBUILD_TENSOR_V2:
        return rebuild_tensor(m, args);
    case PK_G_REBUILD_PARAMETER:
        /* _rebuild_parameter(data, requires_grad, backward_hooks): the parameter is its tensor */
        if (n != 3 || args->u.seq.items[0]->kind != PK_TENSOR ||
            args->u.seq.items[1]->kind != PK_BOOL || args->u.seq.items[2]->kind != PK_DICT)
            return vm_fail(m, CLARA_ERR_FORMAT, "_rebuild_parameter: bad arguments");
        return push(m, args->u.seq.items[0]);
    default: {
        char buf[64];
        return vm_fail(m, CLARA_ERR_UNSUPPORTED, "REDUCE of '%s' is not allowed",
                       global_name(fn, buf, sizeof buf));
    }
    }
}

/* BINPERSID with ('storage', torch.<T>Storage, key, location, numel) */
static clara_status op_binpersid(vm *m) {
    pk_value *pid = NULL;
    clara_status s = pop(m, &pid);
    if (s != CLARA_OK) return s;
    pk_value **a = pid->kind == PK_TUPLE ? pid->u.seq.items : NULL;
    if (!a || pid->u.seq.n != 5 || a[0]->kind != PK_STR || strcmp(a[0]->u.str.s, "storage") != 0)
        return vm_fail(m, CLARA_ERR_UNSUPPORTED, "persistent id is not a ('storage', ...) 5-tuple");
    if (a[1]->kind != PK_GLOBAL || a[1]->u.global.id != PK_G_STORAGE || a[2]->kind != PK_STR ||
        a[3]->kind != PK_STR || !is_nonneg_int(a[4]))
        return vm_fail(m, CLARA_ERR_FORMAT, "persistent id has bad field types");
    if (a[2]->u.str.len == 0 || strlen(a[2]->u.str.s) != a[2]->u.str.len)
        return vm_fail(m, CLARA_ERR_FORMAT, "storage key is empty or contains NUL");
    pk_value *st = new_value(m, PK_STORAGE);
    if (!st) return oom(m);
    st->u.storage.dtype = a[1]->u.global.dtype;
    st->u.storage.key = a[2]->u.str.s;
    st->u.storage.location = a[3]->u.str.s;
    st->u.storage.numel = (uint64_t)a[4]->u.i;
    return push(m, st);
}

/* BUILD: only the harmless case of attribute state on a dict (a state_dict OrderedDict carries
 * `_metadata`); the state is dropped. */
static clara_status op_build(vm *m) {
    pk_value *state = NULL, *obj = NULL;
    clara_status s = pop(m, &state);
    if (s == CLARA_OK) s = top(m, &obj);
    if (s != CLARA_OK) return s;
    if (obj->kind != PK_DICT || (state->kind != PK_DICT && state->kind != PK_NONE))
        return vm_fail(m, CLARA_ERR_UNSUPPORTED, "BUILD of a %s with %s state is not supported",
                       k_kind_names[obj->kind], k_kind_names[state->kind]);
    return CLARA_OK;
}

/* ---- containers ---- */

static clara_status op_tuple_n(vm *m, size_t n) {
    if (m->sp - stack_floor(m) < n) return vm_fail(m, CLARA_ERR_FORMAT, "stack underflow");
    m->sp -= n;
    pk_value *t = NULL;
    clara_status s = make_seq(m, PK_TUPLE, m->sp, n, &t);
    return s == CLARA_OK ? push(m, t) : s;
}

static clara_status op_tuple_mark(vm *m) {
    size_t first = 0, n = 0;
    pk_value *t = NULL;
    clara_status s = pop_mark(m, &first, &n);
    if (s == CLARA_OK) s = make_seq(m, PK_TUPLE, first, n, &t);
    return s == CLARA_OK ? push(m, t) : s;
}

static clara_status op_setitem(vm *m) {
    pk_value *k = NULL, *v = NULL, *d = NULL;
    clara_status s = pop(m, &v);
    if (s == CLARA_OK) s = pop(m, &k);
    if (s == CLARA_OK) s = top(m, &d);
    if (s != CLARA_OK) return s;
    if (d->kind != PK_DICT)
        return vm_fail(m, CLARA_ERR_FORMAT, "SETITEM on a %s", k_kind_names[d->kind]);
    return dict_set(m, d, k, v);
}

static clara_status op_setitems(vm *m) {
    size_t first = 0, n = 0;
    pk_value *d = NULL;
    clara_status s = pop_mark(m, &first, &n);
    if (s == CLARA_OK) s = top(m, &d);
    if (s != CLARA_OK) return s;
    if (d->kind != PK_DICT || n % 2)
        return vm_fail(m, CLARA_ERR_FORMAT, "SETITEMS on a %s with %zu values",
                       k_kind_names[d->kind], n);
    for (size_t i = 0; i < n && s == CLARA_OK; i += 2)
        s = dict_set(m, d, m->stack[first + i], m->stack[first + i + 1]);
    return s;
}

static clara_status op_append(vm *m, bool many) {
    size_t first = 0, n = 1;
    pk_value *l, *v = NULL;
    clara_status s = many ? pop_mark(m, &first, &n) : pop(m, &v);
    if (s == CLARA_OK) s = top(m, &l);
    if (s != CLARA_OK) return s;
    if (l->kind != PK_LIST)
        return vm_fail(m, CLARA_ERR_FORMAT, "APPEND on a %s", k_kind_names[l->kind]);
    for (size_t i = 0; i < n && s == CLARA_OK; i++)
        s = seq_append(m, l, many ? m->stack[first + i] : v);
    return s;
}

static clara_status op_mark(vm *m) {
    if (m->n_marks >= PK_MAX_MARKS)
        return vm_fail(m, CLARA_ERR_NOMEM, "more than %u nested MARKs", PK_MAX_MARKS);
    m->marks[m->n_marks++] = m->sp;
    return CLARA_OK;
}

static clara_status op_pop(vm *m) {
    pk_value *v = NULL;
    size_t first = 0, n = 0;
    if (m->sp > stack_floor(m)) return pop(m, &v);
    return pop_mark(m, &first, &n); /* CPython: POP on an empty frame drops the mark */
}

/* ---- dispatch ---- */

static clara_status op_arg(vm *m, int n, uint64_t *out) {
    const uint8_t *p;
    clara_status s = need(m, (uint64_t)n, &p);
    if (s == CLARA_OK) *out = le(p, n);
    return s;
}

static clara_status op_frame_or_proto(vm *m, uint8_t op) {
    uint64_t a;
    clara_status s = op_arg(m, op == 0x80 ? 1 : 8, &a);
    if (s != CLARA_OK) return s;
    if (op == 0x80 && a > 5)
        return vm_fail(m, CLARA_ERR_UNSUPPORTED, "pickle protocol %llu", (unsigned long long)a);
    if (op == 0x95 && a > (uint64_t)(m->end - m->p))
        return vm_fail(m, CLARA_ERR_FORMAT, "FRAME of %llu bytes runs past the end",
                       (unsigned long long)a);
    return CLARA_OK;
}

static clara_status op_get_put(vm *m, uint8_t op) {
    uint64_t idx = 0;
    clara_status s = CLARA_OK;
    if (op == 'h' || op == 'q')
        s = op_arg(m, 1, &idx);
    else if (op == 'j' || op == 'r')
        s = op_arg(m, 4, &idx);
    else
        idx = m->memo_used; /* MEMOIZE */
    if (s != CLARA_OK) return s;
    return (op == 'h' || op == 'j') ? memo_get(m, idx) : memo_put(m, idx);
}

static clara_status op_int(vm *m, uint8_t op) {
    uint64_t a;
    int n = op == 'J' ? 4 : op == 'K' ? 1 : 2;
    clara_status s = op_arg(m, n, &a);
    if (s != CLARA_OK) return s;
    return push_int(m, op == 'J' ? (int64_t)(int32_t)(uint32_t)a : (int64_t)a);
}

static clara_status push_bool(vm *m, bool b) {
    pk_value *v = new_value(m, PK_BOOL);
    if (v) v->u.b = b;
    return push(m, v);
}

static clara_status step(vm *m, uint8_t op) {
    pk_value *v = NULL;
    switch (op) {
    case 0x80:
    case 0x95:
        return op_frame_or_proto(m, op);
    case '}':
        return push(m, new_value(m, PK_DICT));
    case ']':
        return push(m, new_value(m, PK_LIST));
    case ')':
        return push(m, new_value(m, PK_TUPLE));
    case 'N':
        return push(m, new_value(m, PK_NONE));
    case 0x88:
    case 0x89:
        return push_bool(m, op == 0x88);
    case '(':
        return op_mark(m);
    case 'X':
        return op_string(m, PK_STR, 4);
    case 0x8c:
        return op_string(m, PK_STR, 1);
    case 0x8d:
        return op_string(m, PK_STR, 8);
    case 'B':
        return op_string(m, PK_BYTES, 4);
    case 'C':
        return op_string(m, PK_BYTES, 1);
    case 0x8e:
        return op_string(m, PK_BYTES, 8);
    case 'q':
    case 'r':
    case 0x94:
    case 'h':
    case 'j':
        return op_get_put(m, op);
    case 'J':
    case 'K':
    case 'M':
        return op_int(m, op);
    case 0x8a:
        return op_long(m, 1);
    case 0x8b:
        return op_long(m, 4);
    case 'G':
        return op_binfloat(m);
    case 't':
        return op_tuple_mark(m);
    case 0x85:
    case 0x86:
    case 0x87:
        return op_tuple_n(m, (size_t)(op - 0x84));
    case 's':
        return op_setitem(m);
    case 'u':
        return op_setitems(m);
    case 'a':
    case 'e':
        return op_append(m, op == 'e');
    case 'c':
        return op_global(m);
    case 0x93:
        return op_stack_global(m);
    case 'R':
        return op_reduce(m);
    case 'Q':
        return op_binpersid(m);
    case 'b':
        return op_build(m);
    case '0':
        return op_pop(m);
    case '1': {
        size_t f = 0, n = 0;
        return pop_mark(m, &f, &n);
    }
    case '2': {
        clara_status s = top(m, &v);
        return s == CLARA_OK ? push(m, v) : s;
    }
    case '.': {
        clara_status s = pop(m, &v);
        if (s == CLARA_OK) m->result = v;
        return s;
    }
    default:
        return vm_fail(m, CLARA_ERR_UNSUPPORTED, "opcode 0x%02x (%s) is not supported", op,
                       pk_opcode_name(op));
    }
}

static void vm_release(vm *m) {
    free(m->stack);
    free(m->marks);
    free(m->memo);
}

clara_status pk_load(const uint8_t *data, size_t len, const char *name, pk_result **out) {
    *out = NULL;
    vm m = {.name = name ? name : "pickle", .start = data, .p = data, .end = data + len};
    clara_status s = CLARA_OK;
    pk_result *r = calloc(1, sizeof *r);
    m.marks = malloc(PK_MAX_MARKS * sizeof *m.marks);
    if (!r || !m.marks) s = oom(&m);
    while (s == CLARA_OK && !m.result) {
        if (m.p == m.end) {
            m.op_at = len;
            s = vm_fail(&m, CLARA_ERR_FORMAT, "data ends without STOP");
            break;
        }
        m.op_at = (size_t)(m.p - m.start);
        s = step(&m, *m.p++);
    }
    vm_release(&m);
    if (s == CLARA_OK) {
        r->all = m.all;
        r->n_all = m.n_all;
        r->root = m.result;
        *out = r;
        return CLARA_OK;
    }
    for (size_t i = 0; i < m.n_all; i++) free_value(m.all[i]);
    free(m.all);
    free(r);
    return s;
}

const pk_value *pk_root(const pk_result *r) {
    return r->root;
}

void pk_free(pk_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_all; i++) free_value(r->all[i]);
    free(r->all);
    free(r);
}
