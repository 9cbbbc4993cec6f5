"""`clara convert --addon-only --base BASE.gguf`: the add-on made from a base GGUF (llama.cpp's
layout) instead of the Hugging Face base directory must be the add-on the directory gives: the same
tensors (names, shapes, types, bytes), the same metadata but for clara.tokenizer.source (it says
where the vocabulary was read: "tokenizer.json" vs "tokenizer.ggml"), and the same answers in
two-file mode. A llama.cpp-written base (SentencePiece scores, no merges, no chat template) is
simulated by rewriting our --base-only file the way llama.cpp's converter writes a Mistral GGUF
(the repository holds no llama.cpp-written GGUF). Bad and hostile base files are refused cleanly."""

import json
import os
import shutil
import struct
import subprocess
import tempfile

from harness import CLARA, FIXTURES, check, report, run
import gen_fixtures as gf
import readers as rd

OUT = tempfile.mkdtemp(prefix="clara_addon_gguf_")
BASE_DIR = os.path.join(FIXTURES, "base")
VARIANTS = ("e2e16", "instruct128", "nosep128")
# the one metadata value allowed to differ, and why: it names the source of the vocabulary
SOURCE_KEY = "clara.tokenizer.source"


def clara(*args):
    return subprocess.run([CLARA] + list(args), capture_output=True, text=True)


def convert(out, base, *args):
    p = clara("convert", "--base", base, "--out", out, "--quiet", *args)
    assert p.returncode == 0, p.stderr
    return out


def addon(out, base, var, *args):
    return convert(out, base, "--clara", os.path.join(FIXTURES, var), "--addon-only", *args)


def same_addon(name, a_path, b_path, skip_keys=()):
    """A (from the HF directory) and B (from a base GGUF): same tensors and bytes, same keys."""
    a, b = rd.read_gguf(a_path), rd.read_gguf(b_path)
    ta = [(n, t.dims, t.type_name) for n, t in a.tensors.items()]
    tb = [(n, t.dims, t.type_name) for n, t in b.tensors.items()]
    check(ta == tb, "%s: tensor tables differ: %s vs %s" % (name, ta[:3], tb[:3]))
    diff = [n for n in a.tensors if n in b.tensors and a.raw(n) != b.raw(n)]
    check(not diff, "%s: tensor bytes differ: %s" % (name, diff[:4]))
    ka, kb = [k for k in a.kv if k not in skip_keys], [k for k in b.kv if k not in skip_keys]
    check(ka == kb, "%s: key lists differ: %s" % (name, sorted(set(ka) ^ set(kb))[:6]))
    keys = [k for k in a.kv if k not in skip_keys and k != SOURCE_KEY]
    bad = [k for k in keys if a.kv.get(k) != b.kv.get(k) or a.kv_types.get(k) != b.kv_types.get(k)]
    check(not bad, "%s: metadata differs: %s" % (name, bad[:6]))
    clara_keys = [k for k in a.kv if k.startswith("clara.")]
    check(len(clara_keys) > 30, "%s: the add-on has its clara.* keys (%d)" % (name, len(clara_keys)))
    check(a.kv.get(SOURCE_KEY) == "tokenizer.json" and b.kv.get(SOURCE_KEY) == "tokenizer.ggml",
          "%s: %s is %r / %r" % (name, SOURCE_KEY, a.kv.get(SOURCE_KEY), b.kv.get(SOURCE_KEY)))
    return a, b


def answers(base, addon_path, var):
    docs = ["--doc", "The Eiffel tower is in Paris.", "--doc", "Berlin is in Germany.",
            "--doc", "Rome is old.", "--doc", "Oslo is cold.", "--doc", "Lima is in Peru."]
    cmd = ["ask", "--query", "Where is the tower?", "--max-new-tokens", "8"] + docs
    if var == "e2e16":
        cmd = ["retrieve", "--query", "Which city is cold?", "--max-new-tokens", "6"] + docs
    p = clara(*(cmd + ["--base", base, "--clara", addon_path, "--json", "--dump-logits"]))
    out = json.loads(p.stdout) if p.returncode == 0 else None
    if out:
        out.pop("timings", None)
    return out, p.stderr


def same_answers(name, base, a_path, b_path, var):
    a, ea = answers(base, a_path, var)
    b, eb = answers(base, b_path, var)
    check(a is not None and a == b,
          "%s: answers differ: %s vs %s (%s)" % (name, str(a)[:100], str(b)[:100], (ea + eb)[-300:]))


# ---- a GGUF writer (for rewritten and hostile base files) -------------------------------------

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
           11: "<q", 12: "<d"}


def _value(vtype, v):
    if vtype in _SCALAR:
        return struct.pack(_SCALAR[vtype], v)
    if vtype == 8:
        b = v.encode()
        return struct.pack("<Q", len(b)) + b
    etype, items = v
    return struct.pack("<IQ", etype, len(items)) + b"".join(_value(etype, x) for x in items)


def write_gguf(path, kvs, tensors, align=32):
    """kvs: [(key, vtype, value)], arrays as (9, (etype, list)); tensors: [(name, dims, type, raw)]."""
    h = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, vtype, v in kvs:
        h += _value(8, key) + struct.pack("<I", vtype) + _value(vtype, v)
    off, data = 0, b""
    for name, dims, ttype, raw in tensors:
        h += _value(8, name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        h += struct.pack("<IQ", ttype, off)
        pad = (-len(raw)) % align
        data += raw + b"\0" * pad
        off += len(raw) + pad
    h += b"\0" * ((-len(h)) % align)
    with open(path, "wb") as f:
        f.write(h + data)
    return path


def kvs_of(g):
    out = []
    for k, v in g.kv.items():
        t = g.kv_types[k]
        out.append((k, 9, (t[1], list(v))) if isinstance(t, tuple) else (k, t, v))
    return out


def tensors_of(g):
    return [(n, t.dims, t.type, g.raw(n)) for n, t in g.tensors.items()]


def rewrite(src, dst, edit_kv=None, edit_tensors=None):
    """Copy of GGUF src with its key list / tensor list passed through the edit functions."""
    g = rd.read_gguf(src)
    kvs, ts = kvs_of(g), tensors_of(g)
    if edit_kv:
        kvs = edit_kv(kvs)
    if edit_tensors:
        ts = edit_tensors(ts)
    return write_gguf(dst, kvs, ts)


def set_kv(kvs, key, vtype, value):
    out = [x for x in kvs if x[0] != key]
    out.append((key, vtype, value))
    return out


def drop_kv(kvs, *keys):
    return [x for x in kvs if x[0] not in keys]


def llamacpp_like(kvs):
    """What llama.cpp's converter writes for a SentencePiece vocabulary (Mistral v0.2 from
    tokenizer.model): the model's own scores, no merges; no chat template in older files."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=os.path.join(BASE_DIR, "tokenizer.model"))
    scores = [sp.GetScore(i) for i in range(sp.GetPieceSize())]
    kvs = drop_kv(kvs, "tokenizer.ggml.merges", "tokenizer.chat_template", "tokenizer.ggml.padding_token_id")
    return set_kv(kvs, "tokenizer.ggml.scores", 9, (6, scores))


# ---- cases ------------------------------------------------------------------------------------


def test_addon_equals_directory_addon():
    gf.ensure(FIXTURES)
    base16 = convert(os.path.join(OUT, "base.f16.gguf"), BASE_DIR, "--base-only")
    q = clara("quantize", "--quiet", base16, os.path.join(OUT, "base.q4_k_m.gguf"), "q4_k_m")
    check(q.returncode == 0, "quantize the base: %s" % q.stderr)
    baseq = os.path.join(OUT, "base.q4_k_m.gguf")
    for var in VARIANTS:
        a = addon(os.path.join(OUT, var + ".A.gguf"), BASE_DIR, var)
        for tag, base in (("f16", base16), ("q4_k_m", baseq)):
            b = addon(os.path.join(OUT, "%s.B.%s.gguf" % (var, tag)), base, var)
            same_addon("%s from %s base" % (var, tag), a, b)
            same_answers("%s with %s base" % (var, tag), base, a, b, var)
    # a quantized add-on (convert --type) from the GGUF equals the one from the directory
    a = addon(os.path.join(OUT, "e2e16.A.q8_0.gguf"), BASE_DIR, "e2e16", "--type", "q8_0")
    b = addon(os.path.join(OUT, "e2e16.B.q8_0.gguf"), baseq, "e2e16", "--type", "q8_0")
    same_addon("e2e16 --type q8_0", a, b)


def test_llamacpp_written_base():
    """Scores from tokenizer.model and no merges (llama.cpp's SentencePiece route): the add-on's
    merges are derived from the scores and must equal tokenizer.json's."""
    base16 = os.path.join(OUT, "base.f16.gguf")
    lc = rewrite(base16, os.path.join(OUT, "base.llamacpp.gguf"), llamacpp_like)
    g = rd.read_gguf(lc)
    check("tokenizer.ggml.merges" not in g.kv and min(g.kv["tokenizer.ggml.scores"]) < 0,
          "the simulated llama.cpp base has SentencePiece scores and no merges")
    for var in ("e2e16", "nosep128"):
        a = os.path.join(OUT, var + ".A.gguf")
        b = addon(os.path.join(OUT, var + ".B.llamacpp.gguf"), lc, var)
        # scores are the base's own (zero in tokenizer.json, SentencePiece's here); the chat
        # template is whatever the base file has (none here)
        ga, gb = same_addon("%s from llama.cpp-like base" % var, a, b,
                            skip_keys=("tokenizer.ggml.scores", "tokenizer.chat_template"))
        check(ga.kv["tokenizer.ggml.merges"] == gb.kv.get("tokenizer.ggml.merges"),
              "%s: merges derived from the scores equal tokenizer.json's" % var)
        same_answers("%s with llama.cpp-like base" % var, lc, a, b, var)


def expect_refused(name, base, words, var="e2e16", mode=("--addon-only",), clara_dir=None):
    out = os.path.join(OUT, "refused.gguf")
    cdir = clara_dir or os.path.join(FIXTURES, var)
    p = clara("convert", "--base", base, "--clara", cdir, "--out", out, "--quiet", *mode)
    if mode == ("--base-only",):
        p = clara("convert", "--base", base, "--out", out, "--quiet", *mode)
    msg = p.stderr.strip()
    check(p.returncode == 1 and all(w in msg for w in words) and msg.count("\n") == 0,
          "%s: exit %d, stderr %r (want %s)" % (name, p.returncode, msg, words))
    check(not os.path.exists(out), "%s: no output file is left" % name)
    left = [f for f in os.listdir(OUT) if f.startswith("refused.gguf")]
    check(not left, "%s: no temporary file is left: %s" % (name, left))


def test_wrong_base_is_refused():
    base16 = os.path.join(OUT, "base.f16.gguf")
    # another shape: the gqa4 fixtures (hidden 512) beside the tiny CLaRa tables (hidden 64)
    fx = os.path.join(FIXTURES, "..", "fixtures-gqa4")
    gf.ensure(fx, shape="gqa4", variants=["instruct16"])
    gqa = convert(os.path.join(OUT, "base.gqa4.gguf"), os.path.join(fx, "base"), "--base-only")
    expect_refused("gqa4 base", gqa, ["decoder_first_last_layers.pth", "[1019, 512]"])
    # the same shape, another vocabulary: CLaRa's tokenizer.json catches it ...
    def swap(kvs):
        toks = list(dict((k, v) for k, _, v in kvs)["tokenizer.ggml.tokens"][1])
        toks[500], toks[501] = toks[501], toks[500]
        return set_kv(kvs, "tokenizer.ggml.tokens", 9, (8, toks))
    other = rewrite(base16, os.path.join(OUT, "base.othervocab.gguf"), swap)
    expect_refused("other vocabulary", other, ["tokenizer.json", "token 500", "base.othervocab.gguf"])
    # ... which is not required: without it the conversion goes on and equals A
    nojson = os.path.join(OUT, "e2e16-notokenizer")
    shutil.copytree(os.path.join(FIXTURES, "e2e16"), nojson)
    os.remove(os.path.join(nojson, "tokenizer.json"))
    b = os.path.join(OUT, "e2e16.B.nojson.gguf")
    p = clara("convert", "--base", base16, "--clara", nojson, "--out", b, "--quiet", "--addon-only")
    check(p.returncode == 0, "CLaRa's tokenizer.json is optional: %s" % p.stderr)
    if p.returncode == 0:
        ga, gb = rd.read_gguf(os.path.join(OUT, "e2e16.A.gguf")), rd.read_gguf(b)
        check([k for k in ga.kv if ga.kv[k] != gb.kv.get(k)] == ["general.name", SOURCE_KEY],
              "without tokenizer.json only the name (from the folder's name) and the source differ")
        check(all(ga.raw(n) == gb.raw(n) for n in ga.tensors), "same tensors without tokenizer.json")
    # a base with one more token: the tables' rows no longer fit (reported against the .pth)
    def grow_kv(kvs):
        d = dict((k, v) for k, _, v in kvs)
        kvs = set_kv(kvs, "tokenizer.ggml.tokens", 9, (8, d["tokenizer.ggml.tokens"][1] + ["<extra>"]))
        kvs = set_kv(kvs, "tokenizer.ggml.scores", 9, (6, d["tokenizer.ggml.scores"][1] + [0.0]))
        kvs = set_kv(kvs, "tokenizer.ggml.token_type", 9, (5, d["tokenizer.ggml.token_type"][1] + [4]))
        return set_kv(kvs, "llama.vocab_size", 4, 1001)
    def grow_t(ts):
        return [(n, (64, 1001), 0, b"\0" * (4 * 64 * 1001)) if n in ("token_embd.weight", "output.weight")
                else (n, d, t, r) for n, d, t, r in ts]
    grown = rewrite(base16, os.path.join(OUT, "base.1001.gguf"), grow_kv, grow_t)
    expect_refused("vocabulary 1001", grown, ["1019 rows", "1020 tokens", "1001 base"], clara_dir=nojson)
    # the tables of the base itself must fit its vocabulary
    short_t = rewrite(base16, os.path.join(OUT, "base.shortembd.gguf"), None,
                      lambda ts: [(n, (64, 999), 0, b"\0" * (4 * 64 * 999)) if n == "token_embd.weight"
                                  else x for x in ts for n in [x[0]]])
    expect_refused("embedding rows", short_t, ["base.shortembd.gguf", "token_embd.weight", "[64, 999]"])


def test_not_a_base_is_refused():
    base16 = os.path.join(OUT, "base.f16.gguf")
    a = os.path.join(OUT, "e2e16.A.gguf")
    expect_refused("an add-on as base", a, ["e2e16.A.gguf", "CLaRa model file", "clara."])
    full = convert(os.path.join(OUT, "e2e16.full.gguf"), BASE_DIR, "--clara", os.path.join(FIXTURES, "e2e16"))
    expect_refused("a full CLaRa file as base", full, ["e2e16.full.gguf", "CLaRa model file"])
    data = open(base16, "rb").read()
    for cut in (2, 100, 5000, len(data) - 1000):
        t = os.path.join(OUT, "base.cut%d.gguf" % cut)
        open(t, "wb").write(data[:cut])
        expect_refused("truncated at %d" % cut, t, ["base.cut%d.gguf" % cut])
    expect_refused("not GGUF", os.path.join(BASE_DIR, "config.json"), ["config.json", "not a GGUF"])
    # a GGUF base with the modes that need the base weights
    expect_refused("--base-only from GGUF", base16, ["only --addon-only"], mode=("--base-only",))
    expect_refused("full from GGUF", base16, ["only --addon-only"], mode=())
    cases = [
        ("architecture", lambda k: set_kv(k, "general.architecture", 8, "qwen2"),
         ["general.architecture", "qwen2"]),
        ("no architecture", lambda k: drop_kv(k, "general.architecture"), ["general.architecture", "missing"]),
        ("no tokens", lambda k: drop_kv(k, "tokenizer.ggml.tokens"), ["tokenizer.ggml.tokens", "missing"]),
        ("no tokenizer model", lambda k: drop_kv(k, "tokenizer.ggml.model"), ["tokenizer.ggml.model", "missing"]),
        ("gpt2 tokenizer", lambda k: set_kv(k, "tokenizer.ggml.model", 8, "gpt2"), ["tokenizer.ggml.model", "gpt2"]),
        ("no token types", lambda k: drop_kv(k, "tokenizer.ggml.token_type"), ["tokenizer.ggml.token_type"]),
        ("no hidden size", lambda k: drop_kv(k, "llama.embedding_length"), ["llama.embedding_length", "missing"]),
        ("no merges and no scores", lambda k: drop_kv(k, "tokenizer.ggml.merges", "tokenizer.ggml.scores"),
         ["tokenizer.ggml.merges", "tokenizer.ggml.scores"]),
    ]
    for name, edit, words in cases:
        bad = rewrite(base16, os.path.join(OUT, "base.bad.gguf"), edit)
        expect_refused(name, bad, ["base.bad.gguf"] + words)


def test_hostile_base_fails_cleanly():
    base16 = os.path.join(OUT, "base.f16.gguf")
    g = rd.read_gguf(base16)
    toks, types = g.kv["tokenizer.ggml.tokens"], g.kv["tokenizer.ggml.token_type"]
    cases = [
        ("tokens shorter than scores", lambda k: set_kv(k, "tokenizer.ggml.tokens", 9, (8, toks[:900])),
         ["tokenizer.ggml.scores has 1000 entries", "900"]),
        ("vocabulary shorter than llama.vocab_size", lambda k: set_kv(set_kv(set_kv(
            k, "tokenizer.ggml.tokens", 9, (8, toks[:900])), "tokenizer.ggml.scores", 9, (6, [0.0] * 900)),
            "tokenizer.ggml.token_type", 9, (5, types[:900])), ["llama.vocab_size is 1000", "900 tokens"]),
        ("token types shorter", lambda k: set_kv(k, "tokenizer.ggml.token_type", 9, (5, types[:10])),
         ["tokenizer.ggml.token_type", "10 entries"]),
        ("scores shorter", lambda k: set_kv(k, "tokenizer.ggml.scores", 9, (6, [0.0] * 999)),
         ["tokenizer.ggml.scores", "999"]),
        ("scores of the wrong type", lambda k: set_kv(k, "tokenizer.ggml.scores", 9, (5, [0] * 1000)),
         ["tokenizer.ggml.scores"]),
        ("tokens of the wrong type", lambda k: set_kv(k, "tokenizer.ggml.tokens", 9, (5, [0] * 1000)),
         ["tokenizer.ggml.tokens"]),
        ("merges of the wrong type", lambda k: set_kv(k, "tokenizer.ggml.merges", 9, (4, [1, 2])),
         ["tokenizer.ggml.merges"]),
        ("bad merge", lambda k: set_kv(k, "tokenizer.ggml.merges", 9, (8, ["nospace"])), ["tokenizer.ggml.merges[0]"]),
        ("bad token type", lambda k: set_kv(k, "tokenizer.ggml.token_type", 9, (5, [9] + types[1:])),
         ["tokenizer.ggml.token_type[0]"]),
        ("empty token", lambda k: set_kv(k, "tokenizer.ggml.tokens", 9, (8, [""] + toks[1:])),
         ["tokenizer.ggml.tokens[0]"]),
        ("duplicate token", lambda k: set_kv(k, "tokenizer.ggml.tokens", 9, (8, toks[:5] + [toks[3]] + toks[6:])),
         ["twice"]),
        ("bos id out of range", lambda k: set_kv(k, "tokenizer.ggml.bos_token_id", 4, 5000),
         ["tokenizer.ggml.bos_token_id", "5000"]),
        ("architecture of the wrong type", lambda k: set_kv(k, "general.architecture", 4, 7), ["general.architecture"]),
        ("block count of the wrong type", lambda k: set_kv(k, "llama.block_count", 8, "two"), ["llama.block_count"]),
        ("heads not a multiple", lambda k: set_kv(k, "llama.attention.head_count_kv", 4, 3), ["head_count_kv"]),
        ("zero heads", lambda k: set_kv(k, "llama.attention.head_count", 4, 0), ["llama.attention.head_count"]),
        ("RoPE scaling", lambda k: set_kv(k, "llama.rope.scaling.type", 8, "linear"),
         ["llama.rope.scaling.type", "linear"]),
        ("NaN eps", lambda k: set_kv(k, "llama.attention.layer_norm_rms_epsilon", 6, float("nan")),
         ["layer_norm_rms_epsilon"]),
    ]
    for name, edit, words in cases:
        bad = rewrite(base16, os.path.join(OUT, "base.hostile.gguf"), edit)
        expect_refused(name, bad, ["base.hostile.gguf"] + words)
    # huge declared counts: the tokens array claims 2^40 strings, the key count 2^60
    data = bytearray(open(base16, "rb").read())
    key = b"tokenizer.ggml.tokens"
    at = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 4 + 4
    for count in (1 << 40, (1 << 64) - 1):
        bad = bytearray(data)
        struct.pack_into("<Q", bad, at, count)
        p = os.path.join(OUT, "base.huge.gguf")
        open(p, "wb").write(bytes(bad))
        expect_refused("tokens count %d" % count, p, ["base.huge.gguf", "tokenizer.ggml.tokens"])
    bad = bytearray(data)
    struct.pack_into("<Q", bad, 16, 1 << 60)  # n_kv
    open(os.path.join(OUT, "base.huge.gguf"), "wb").write(bytes(bad))
    expect_refused("key count 2^60", os.path.join(OUT, "base.huge.gguf"), ["base.huge.gguf"])


run(test_addon_equals_directory_addon)
run(test_llamacpp_written_base)
run(test_wrong_base_is_refused)
run(test_not_a_base_is_refused)
run(test_hostile_base_fails_cleanly)
report("test_addon_from_gguf")
