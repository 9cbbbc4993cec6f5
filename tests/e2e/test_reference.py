#!/usr/bin/python3
"""Self-validation of the numpy CLaRa reference (tests/reference) before it is used as the oracle.

Every check compares against an independent truth: Debian's SentencePiece for the tokenizer,
jinja2 for the chat template, explicit per-element formulas (float64 loops) for the transformer
math, algebraic invariances (RoPE shift, left padding, batching, LoRA merge), and the structural
facts the spec states for compression and prompts. Prints "reference: N passed, N failed".

Fixtures come from tests/fixtures/gen_fixtures.py into $BUILD/fixtures (generated if missing).
"""

import json
import math
import os
import subprocess
import sys
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))

import ref_clara as rc  # noqa: E402
import ref_model as rm  # noqa: E402
import ref_tokenizer as rt  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(ROOT, BUILD)
FIXTURES = os.path.join(BUILD, "fixtures")
PY = "/usr/bin/python3"
DATA = os.path.join(ROOT, "tests", "data", "wiki-passages-qa.jsonl")
F32 = np.float32

passed = 0
failed = 0
VERBOSE = os.environ.get("REF_VERBOSE") == "1"


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        if VERBOSE:
            print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}" + (f": {detail}" if detail else ""))


def close(name, a, b, tol):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        check(name, False, f"shapes {a.shape} vs {b.shape}")
        return
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    check(name, err <= tol, f"max abs diff {err:.3g} > {tol:g}")


def run_test(fn):
    try:
        fn()
    except Exception:  # a crashing test is a failed test, and the others still run
        check(fn.__name__, False, "exception:\n" + traceback.format_exc())


# ---- fixtures ---------------------------------------------------------------------------------

VARIANTS = ["instruct16", "instruct128", "base16", "e2e16", "e2e16_noqr", "nosep128", "partial16"]


def fixtures_current():
    """True when $BUILD/fixtures carries the stamp the generator would write now."""
    stamp = os.path.join(FIXTURES, "fixtures.stamp")
    if not all(os.path.isdir(os.path.join(FIXTURES, v)) for v in VARIANTS + ["base"]):
        return False
    if not os.path.exists(stamp):
        return False
    try:
        sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
        import gen_fixtures as gf

        want = gf.source_hash(gf.args_key("tiny", 0, list(gf.VARIANTS), False))
    except Exception:  # an older/newer generator without these helpers: regenerate
        return False
    with open(stamp) as f:
        return f.read().strip() == want


def ensure_fixtures():
    if fixtures_current():
        return True
    gen = os.path.join(ROOT, "tests", "fixtures", "gen_fixtures.py")
    if not os.path.exists(gen):
        check("fixtures", False, "tests/fixtures/gen_fixtures.py is missing")
        return False
    r = subprocess.run([PY, gen, "--out", FIXTURES, "--quiet"], capture_output=True, text=True)
    check("fixtures generated", r.returncode == 0, r.stderr[-2000:])
    return r.returncode == 0


_models = {}


def model(variant, policy="hf"):
    key = (variant, policy)
    if key not in _models:
        _models[key] = rc.Clara(
            os.path.join(FIXTURES, "base"), os.path.join(FIXTURES, variant), adapter_policy=policy
        )
    m = _models[key]
    m.active = list(m.adapters.values())  # fresh-load state for each use
    return m


def data_records():
    with open(DATA, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# ---- tokenizer vs SentencePiece --------------------------------------------------------------


def tokenizer_files():
    base = os.path.join(FIXTURES, "base")
    if os.path.exists(os.path.join(base, "tokenizer.model")):
        return base
    return os.path.join(ROOT, "tests", "fixtures", "tokenizer")


def test_strings():
    recs = data_records()
    out = []
    for r in recs[:120]:
        out.extend(r["docs"][:1])
        out.extend(r["question"][:1])
    for r in recs[120:200]:
        out.extend(a for a in r["answers"][:1] if isinstance(a, str))
    out += [
        "", " ", "  ", "   leading", "trailing   ", "a  b   c    d", "\t", "\n", "\n\n", "a\tb\nc\r\nd",
        " \n \t ", "0", "0123456789", "3.14159 and 2,718,281", "year 1999: 42%", "1e-12",
        "😀", "emoji 👍🏽 family 👨‍👩‍👧", "日本語のテキスト", "中文 测试 文本", "한국어", "ελληνικά",
        "Ünïcödé çàfé naïve", "\u00a0non-breaking\u00a0space", "zero\u200bwidth", "x" * 300,
        "a:<s>->", "tab\tseparated\tvalues", "mixed 日本 text 123 😀\n", "What is the capital of France?",
        "Paris is the capital of France.", ":\\ backslash", "quote's \"double\"", "~!@#$%^&*()_+`",
        "\u2581already marked", "\x00\x01 control", "\U0001F600\U0001F601", "ａｂｃ fullwidth",
    ]
    for i in range(1, 9):
        out.append(" " * i + "w" + "\n" * i)
    return out


def test_tokenizer_vs_sentencepiece():
    import sentencepiece as spm

    d = tokenizer_files()
    sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
    tok = rt.load_tokenizer(os.path.join(d, "tokenizer.json"))
    strings = test_strings()
    check("tokenizer: at least 300 test strings", len(strings) >= 300, str(len(strings)))
    bad_enc, bad_dec, bad_rt = [], [], []
    for s in strings:
        ids = tok.encode_segment(s)
        want = sp.encode(s)
        if ids != want:
            bad_enc.append((s[:40], ids[:12], want[:12]))
        if tok.decode(ids) != sp.decode(want):
            bad_dec.append((s[:40], tok.decode(ids)[:40], sp.decode(want)[:40]))
        if tok.decode(ids) != s and "\u2581" not in s:  # a literal ▁ decodes as a space
            bad_rt.append((s[:40], tok.decode(ids)[:40]))
    check("tokenizer: per-segment ids == sp.encode", not bad_enc, f"{len(bad_enc)} differ, e.g. {bad_enc[:2]}")
    check("tokenizer: decode == sp.decode", not bad_dec, f"{len(bad_dec)} differ, e.g. {bad_dec[:2]}")
    check("tokenizer: decode(encode(s)) == s", not bad_rt, f"{len(bad_rt)} differ, e.g. {bad_rt[:2]}")

    # Whole texts with added tokens: each segment encodes like SentencePiece on its own (§3.2).
    bad = []
    for s in strings[:150]:
        text = "<ENC><s>" + s + "</s>"
        want = [tok.added["<ENC>"]] if "<ENC>" in tok.added else []
        if not want:
            break
        want += [1] + (sp.encode(s) if s else []) + [2]
        if tok.encode(text) != want:
            bad.append(s[:40])
    if "<ENC>" in tok.added:
        check("tokenizer: <ENC><s>text</s> == [ENC,1]+sp(text)+[2]", not bad, str(bad[:3]))


def test_tokenizer_added_tokens():
    d = tokenizer_files()
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
    tok = rt.load_tokenizer(os.path.join(d, "tokenizer.json"))
    base = tok.size()
    ids = tok.add_special_tokens([f"<MEM{i}>" for i in range(16)] + ["<AE>", "<ENC>", "<SEP>"])
    check("added ids are consecutive from the base size", ids == list(range(base, base + 19)), str(ids))
    # Issue-1613 example of §3.2: 'a:<s>->' -> ['▁a', ':', '<s>', '▁->'] i.e. segments each prefixed.
    check("a:<s>-> splits into segments", tok.encode("a:<s>->") == sp.encode("a:") + [1] + sp.encode("->"))
    check("<MEM10> is one token", tok.encode("<MEM10>") == [base + 10], str(tok.encode("<MEM10>")))
    # Longest match (no CLaRa token is a prefix of another, so use two that are).
    t2 = rt.load_tokenizer(os.path.join(d, "tokenizer.json"))
    short, longer = t2.add_special_tokens(["<T>", "<T>>"])
    got = t2.encode("a<T>>b<T>")
    want = sp.encode("a") + [longer] + sp.encode("b") + [short]
    check("longest added-token match", got == want, f"{got} != {want}")
    check("adjacent added tokens", tok.encode("<MEM1><MEM10><SEP>") == [base + 1, base + 10, base + 18])
    # The lone ▁ before newlines after <SEP> (§3.2 step 2, §8.3 reading).
    got = tok.encode("<SEP>\n\nQuestion:")
    check("segment after <SEP> gets its own ▁", got == [base + 18] + sp.encode("\n\nQuestion:"), str(got))
    check("empty segments produce nothing", tok.encode("<s></s>") == [1, 2])
    # Decoding: specials dropped, one leading space stripped.
    check("decode skips specials", tok.decode([1] + sp.encode("Paris") + [2, base]) == "Paris")
    # Byte runs: a valid run decodes; an invalid run gives one U+FFFD per byte piece.
    e6, b8, a5 = (tok.vocab["<0x%02X>" % b] for b in (0xE6, 0x97, 0xA5))
    check("valid byte run decodes as UTF-8", tok.decode([e6, b8, a5]) == "\u65e5")
    check("invalid byte run -> U+FFFD per byte", tok.decode([e6, b8]) == "\ufffd\ufffd", repr(tok.decode([e6, b8])))
    x = tok.vocab.get("\u2581a") or tok.vocab.get("a")
    got = tok.decode([e6, x, e6, b8, a5])
    check("byte runs split by a normal piece", got.endswith("\u65e5") and got.startswith("\ufffd"), repr(got))


def test_tokenizer_metaspace():
    d = tokenizer_files()
    with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    legacy = rt.Tokenizer(tj)

    def meta(scheme, split=False):
        t = dict(tj)
        t["normalizer"] = None
        t["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": split}
        return rt.Tokenizer(t)

    first, always, never = meta("first"), meta("always"), meta("never")
    bw = legacy.bpe_word
    check("metaspace first: text at offset 0 gets ▁", first.encode("Hello world") == legacy.encode("Hello world"))
    check("metaspace first: no ▁ after an added token", first.encode("<s>Hello") == [1] + bw("Hello"))
    check("metaspace always: ▁ after an added token", always.encode("<s>Hello") == [1] + bw("\u2581Hello"))
    check("metaspace never: no ▁ at all", never.encode("Hello") == bw("Hello"))
    # Unlike legacy Prepend, Metaspace never doubles an existing leading space.
    check("metaspace: no double ▁ for leading space", always.encode(" Hi") == bw("\u2581Hi"))
    check("legacy: double ▁ for leading space", legacy.encode(" Hi") == bw("\u2581\u2581Hi"))
    sp_split = meta("always", split=True)
    check("metaspace split: words at ▁", sp_split.encode("ab cd") == bw("\u2581ab") + bw("\u2581cd"))
    fixture_meta = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "tokenizer-metaspace.json")
    if os.path.exists(fixture_meta):
        mt = rt.load_tokenizer(fixture_meta)
        check("fixture metaspace file parses as 'first'", mt.metaspace and mt.metaspace["scheme"] == "first")
        check("fixture metaspace: <s>Paris", mt.encode("<s>Paris") == [1] + bw("Paris"))
    # Metaspace decoder: the first token loses its ▁ (all of them), later ones become spaces.
    t = dict(tj)
    t["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    md = rt.Tokenizer(t)
    check("metaspace decoder", md.decode(legacy.encode("Hello world")) == "Hello world")


# ---- chat template -----------------------------------------------------------------------------

SPEC_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)


def render_jinja(template, system, user):
    import jinja2
    import jinja2.sandbox

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return env.from_string(template).render(
        messages=msgs, bos_token="<s>", eos_token="</s>", add_generation_prompt=True
    )


def test_chat_template():
    m = model("instruct16")
    templates = [("spec", SPEC_TEMPLATE)]
    tc_path = os.path.join(FIXTURES, "base", "tokenizer_config.json")
    with open(tc_path, encoding="utf-8") as f:
        tc = json.load(f)
    ct = tc.get("chat_template")
    check("fixture tokenizer_config has a chat_template", isinstance(ct, str))
    if isinstance(ct, str):
        templates.append(("fixture", ct))
    questions = ["What is the capital of France?", "a:\\ b", "", "  spaced  ", "日本?"]
    for tname, tpl in templates:
        ok = True
        for q in questions:
            for k in (1, 3):
                user = ("Background:\n" + m.docs_block(k) + "\n\nQuestion:" + q).replace(":\\ ", ": ")
                if render_jinja(tpl, rc.QA_SYSTEM, user) != m.qa_prompt(q, k):
                    ok = False
        for i, t in enumerate(rc.PARAPHRASE_TEMPLATES):
            user = t.replace("{docs}", m.docs_block(2)).replace(":\\ ", ": ")
            if render_jinja(tpl, rc.PARAPHRASE_SYSTEM, user) != m.paraphrase_prompt(2, i):
                ok = False
        check(f"jinja2 ({tname} template) == hand-built prompts", ok)
    check("':\\ ' replacement", "Question:a: b [/INST]" in m.qa_prompt("a:\\ b", 1))
    check("no space after Question:", "\n\nQuestion:Why [/INST]" in m.qa_prompt("Why", 1))


# ---- transformer math ---------------------------------------------------------------------------


def random_weights(rng, hidden=64, layers=2, heads=4, kv_heads=2, ffn=96, vocab=50, theta=1e6, eps=1e-5):
    hp = rm.Hparams(hidden, layers, heads, kv_heads, ffn, vocab, eps=eps, theta=theta)
    d = hp.head_dim

    def w(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(F32)

    lys = []
    for _ in range(layers):
        lys.append({
            "attn_norm": (1 + w(hidden, scale=0.1)), "mlp_norm": (1 + w(hidden, scale=0.1)),
            "q": w(heads * d, hidden), "k": w(kv_heads * d, hidden), "v": w(kv_heads * d, hidden),
            "o": w(hidden, heads * d), "gate": w(ffn, hidden), "up": w(ffn, hidden), "down": w(hidden, ffn),
        })
    return rm.Weights(hp, w(vocab, hidden, scale=1.0), w(vocab, hidden), 1 + w(hidden, scale=0.1), lys)


def random_adapter(rng, wts, r=8, zero_b=False, skip=()):
    mods = {}
    for i, lw in enumerate(wts.layers):
        for m in rm.LORA_MODULES:
            if (i, m) in skip:
                continue
            out_f, in_f = lw[m].shape
            a = (rng.standard_normal((r, in_f)) * 0.1).astype(F32)
            b = np.zeros((out_f, r), F32) if zero_b else (rng.standard_normal((out_f, r)) * 0.1).astype(F32)
            mods[(i, m)] = (a, b)
    return rm.Adapter("t", mods, 2.0)


def merged(wts, adapters):
    lys = []
    for i, lw in enumerate(wts.layers):
        n = dict(lw)
        for ad in adapters:
            for m in rm.LORA_MODULES:
                if (i, m) in ad.mods:
                    a, b = ad.mods[(i, m)]
                    n[m] = (n[m].astype(np.float64) + 2.0 * (b.astype(np.float64) @ a)).astype(F32)
        lys.append(n)
    return rm.Weights(wts.hp, wts.embed, wts.lm_head, wts.norm, lys)


def test_rope_shift_invariance():
    rng = np.random.default_rng(1)
    w = random_weights(rng)
    x = rng.standard_normal((1, 12, 64)).astype(F32)
    mask = np.ones((1, 12), np.int64)
    pos = np.arange(12)[None]
    # Attention alone (one layer's q/k/v), positions shifted by 37.
    h = rm.rms_norm(x, w.layers[0]["attn_norm"], 1e-5)
    q = (h @ w.layers[0]["q"].T).reshape(1, 12, 4, 16)
    k = (h @ w.layers[0]["k"].T).reshape(1, 12, 2, 16)
    v = (h @ w.layers[0]["v"].T).reshape(1, 12, 2, 16)
    allowed = rm.attention_mask(mask)
    outs = []
    for p in (pos, pos + 37):
        c, s = rm.rope_tables(p, 16, 1e6)
        outs.append(rm.attention(rm.apply_rope(q, c, s), rm.apply_rope(k, c, s), v, allowed))
    close("RoPE shift 37: attention output", outs[0], outs[1], 1e-5)
    a = rm.forward(w, x, mask, pos)
    b = rm.forward(w, x, mask, pos + 37)
    close("RoPE shift 37: full forward", a, b, 1e-5)
    # And the rotation really depends on position (the test could not pass with RoPE missing).
    c0, s0 = rm.rope_tables(pos, 16, 1e6)
    c1, s1 = rm.rope_tables(pos + 37, 16, 1e6)
    check("RoPE changes q", np.max(np.abs(rm.apply_rope(q, c0, s0) - rm.apply_rope(q, c1, s1))) > 1e-2)


def test_left_padding_and_batching():
    rng = np.random.default_rng(2)
    w = random_weights(rng)
    ad = random_adapter(rng, w)
    ids = rng.integers(3, 50, size=9)
    res = []
    for pad in (0, 5, 40):
        row = np.concatenate([np.ones(pad, np.int64), ids])[None]
        mask = np.concatenate([np.zeros(pad, np.int64), np.ones(9, np.int64)])[None]
        pos = np.arange(row.shape[1])[None]  # column index, as in compression
        out = rm.forward(w, w.embed[row], mask, pos, [ad])
        res.append(out[0, pad:])
    close("left padding 5 vs 0", res[1], res[0], 1e-5)
    close("left padding 40 vs 0", res[2], res[0], 1e-5)
    # Batching: two rows with different padding in one batch == each alone.
    ids2 = rng.integers(3, 50, size=14)
    rows = np.stack([np.concatenate([np.ones(5, np.int64), ids]), ids2])
    mask = (np.arange(14)[None] >= np.array([[5], [0]])).astype(np.int64)
    pos = np.broadcast_to(np.arange(14), rows.shape)
    both = rm.forward(w, w.embed[rows], mask, pos, [ad])
    alone2 = rm.forward(w, w.embed[ids2][None], np.ones((1, 14), np.int64), np.arange(14)[None], [ad])
    close("batching: row 0", both[0, 5:], res[0], 1e-5)
    close("batching: row 1", both[1], alone2[0], 1e-5)


def test_lora():
    rng = np.random.default_rng(3)
    w = random_weights(rng)
    x = rng.standard_normal((2, 7, 64)).astype(F32)
    mask = np.ones((2, 7), np.int64)
    pos = np.broadcast_to(np.arange(7), (2, 7))
    plain = rm.forward(w, x, mask, pos)
    zero = rm.forward(w, x, mask, pos, [random_adapter(rng, w, zero_b=True)])
    check("LoRA with B=0 == no adapter (exact)", np.array_equal(plain, zero))
    ad = random_adapter(rng, w)
    close("LoRA == merged W + 2·B·A", rm.forward(w, x, mask, pos, [ad]), rm.forward(merged(w, [ad]), x, mask, pos), 1e-4)
    check("LoRA changes the output", np.max(np.abs(rm.forward(w, x, mask, pos, [ad]) - plain)) > 1e-2)
    ad2 = random_adapter(rng, w, skip={(0, "q"), (1, "down")})
    close("two adapters summed == both merged", rm.forward(w, x, mask, pos, [ad, ad2]),
          rm.forward(merged(w, [ad, ad2]), x, mask, pos), 1e-4)


def naive_attention(q, k, v, mask):
    """Per head, per query loops in float64; query head j reads KV head j // (nh // nkv)."""
    b_, t_, nh, d = q.shape
    nkv = k.shape[2]
    out = np.zeros(q.shape)
    for b in range(b_):
        for j in range(nh):
            kv = j // (nh // nkv)
            for t in range(t_):
                keys = [s for s in range(t + 1) if mask[b, s]]
                if not keys:
                    continue
                sc = np.array([float(np.dot(q[b, t, j].astype(np.float64), k[b, s, kv])) / math.sqrt(d) for s in keys])
                p = np.exp(sc - sc.max())
                p /= p.sum()
                out[b, t, j] = sum(pi * v[b, s, kv].astype(np.float64) for pi, s in zip(p, keys))
    return out


def test_gqa_naive():
    rng = np.random.default_rng(4)
    for nh, nkv in ((4, 2), (8, 2), (4, 4), (4, 1)):
        q = rng.standard_normal((2, 6, nh, 8)).astype(F32)
        k = rng.standard_normal((2, 6, nkv, 8)).astype(F32)
        v = rng.standard_normal((2, 6, nkv, 8)).astype(F32)
        mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
        got = rm.attention(q, k, v, rm.attention_mask(mask))
        want = naive_attention(q, k, v, mask)
        close(f"GQA {nh}/{nkv} vs naive per-head loop", got[:, 2:], want[:, 2:], 1e-5)
        close(f"GQA {nh}/{nkv} row 1 all positions", got[1], want[1], 1e-5)


def test_hand_computed_forward():
    """1 layer, 1 head (head dim 4), hidden 4, FFN 3, 3 tokens, theta 100, eps 1e-3, LoRA r=1:
    every step written out with scalar formulas in float64."""
    rng = np.random.default_rng(5)
    hid, ffn, vocab, theta, eps = 4, 3, 6, 100.0, 1e-3
    hp = rm.Hparams(hid, 1, 1, 1, ffn, vocab, eps=eps, theta=theta)
    r = lambda *s: (rng.standard_normal(s) * 0.5).astype(F32)  # noqa: E731
    lw = {"attn_norm": 1 + r(hid), "mlp_norm": 1 + r(hid), "q": r(4, 4), "k": r(4, 4), "v": r(4, 4),
          "o": r(4, 4), "gate": r(3, 4), "up": r(3, 4), "down": r(4, 3)}
    w = rm.Weights(hp, r(vocab, hid), r(vocab, hid), 1 + r(hid), [lw])
    qa, qb = r(1, 4), r(4, 1)
    ad = rm.Adapter("h", {(0, "q"): (qa, qb)}, 2.0)
    ids = [3, 1, 4]
    positions = [7, 8, 9]
    got = rm.forward(w, w.embed[ids][None], np.ones((1, 3)), np.array([positions]), [ad])
    got_logits = rm.logits(w, got)

    D = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731

    def norm(v, g):
        s = sum(e * e for e in v) / len(v)
        return [g[i] * v[i] / math.sqrt(s + eps) for i in range(len(v))]

    def matvec(W, v):
        return [sum(W[o][i] * v[i] for i in range(len(v))) for o in range(len(W))]

    def rope(v, p):
        out = list(v)
        for m in range(2):  # pairs (m, m+2) for head dim 4
            f = p / theta ** (2 * m / 4)
            c, s = math.cos(f), math.sin(f)
            out[m] = v[m] * c - v[m + 2] * s
            out[m + 2] = v[m + 2] * c + v[m] * s
        return out

    Wq = D(lw["q"]) + 2.0 * (D(qb) @ D(qa))
    xs = [list(D(w.embed[i])) for i in ids]
    hs = [norm(x, D(lw["attn_norm"])) for x in xs]
    qs = [rope(matvec(Wq, h), p) for h, p in zip(hs, positions)]
    ks = [rope(matvec(D(lw["k"]), h), p) for h, p in zip(hs, positions)]
    vs = [matvec(D(lw["v"]), h) for h in hs]
    final, want_logits = [], []
    for t in range(3):
        sc = [sum(qs[t][i] * ks[s][i] for i in range(4)) / 2.0 for s in range(t + 1)]
        mx = max(sc)
        e = [math.exp(z - mx) for z in sc]
        a = [sum(e[s] / sum(e) * vs[s][i] for s in range(t + 1)) for i in range(4)]
        x = [xs[t][i] + o for i, o in enumerate(matvec(D(lw["o"]), a))]
        h = norm(x, D(lw["mlp_norm"]))
        g = matvec(D(lw["gate"]), h)
        u = matvec(D(lw["up"]), h)
        m = [g[j] / (1 + math.exp(-g[j])) * u[j] for j in range(ffn)]
        x = [x[i] + dd for i, dd in enumerate(matvec(D(lw["down"]), m))]
        y = norm(x, D(w.norm))
        final.append(y)
        want_logits.append(matvec(D(w.lm_head), y))
    close("hand-computed 1-layer forward: final-norm states", got[0], final, 1e-5)
    close("hand-computed 1-layer forward: logits", got_logits[0], want_logits, 1e-5)


# ---- pipeline on the synthetic checkpoints -----------------------------------------------------


def test_loading_and_policy():
    m = model("instruct16")
    hp = m.weights.hp
    check("n_mem = doc_max_length // compr_rate", m.n_mem == m.cfg["doc_max_length"] // m.cfg["compr_rate"])
    check("V = base + n_mem + 3", m.vocab_size == m.base_vocab + m.n_mem + 3 == m.weights.embed.shape[0])
    with open(os.path.join(FIXTURES, "base", "config.json")) as f:
        bc = json.load(f)
    check("hparams from config", (hp.hidden, hp.layers, hp.heads, hp.kv_heads, hp.eps, hp.theta) ==
          (bc["hidden_size"], bc["num_hidden_layers"], bc["num_attention_heads"], bc["num_key_value_heads"],
           bc["rms_norm_eps"], bc["rope_theta"]))
    # Tables come from decoder_first_last_layers.pth, not from the base safetensors.
    tables = rc.load_pth(os.path.join(FIXTURES, "instruct16", "decoder_first_last_layers.pth"))
    check("embed table replaced", np.array_equal(m.weights.embed, rc._f32(tables["model.embed_tokens.weight"])))
    check("lm_head replaced", np.array_equal(m.weights.lm_head, rc._f32(tables["lm_head.weight"])))
    cfg = m.cfg
    stage = cfg.get("training_stage")
    file_ad = rc.load_pth(os.path.join(FIXTURES, "instruct16", "adapters.pth"))
    if stage == "stage1_2" and not cfg.get("pure_inference"):
        check("hf policy stage1_2: decoder adapter is the fresh zero one", m.adapters[rc.DEC].mods == {})
        check("hf policy stage1_2: query_reasoner skipped", rc.QRY not in m.adapters)
        ma = model("instruct16", "all")
        check("all policy: every file adapter loaded", list(ma.adapters) == list(file_ad))
        check("all policy: decoder adapter from file", bool(ma.adapters[rc.DEC].mods) == (rc.DEC in file_ad))
    else:
        check("instruct16 fixture is stage1_2 with pure_inference false", False, str(stage))
    # Scaling alpha/r with alpha = 2·lora_r.
    check("LoRA scaling 2", all(a.scaling == 2.0 for a in m.adapters.values()))


def test_compression_structure():
    for variant in ("instruct16", "instruct128", "nosep128"):  # nosep128: a single <MEM> id
        m = model(variant)
        doc = "Paris is the capital of France."
        row, mask, n_real = m.encoder_row(doc)
        text_ids = m.tok.encode_segment(doc)
        M = m.doc_max_length + 3
        P = M - n_real
        check(f"{variant}: row length 259+n_mem", len(row) == len(mask) == M + m.n_mem)
        check(f"{variant}: real ids", row[P:M] == [m.enc_id, 1] + text_ids + [2], str(row[P:M]))
        check(f"{variant}: pads", row[:P] == [1] * P and mask[:P] == [0] * P and all(mask[P:]))
        check(f"{variant}: memory ids at 259..", row[M:] == m.mem_ids)
        # A long document keeps its first 259 ids and loses </s>.
        long_doc = " ".join(data_records()[0]["docs"]) * 3
        row, mask, n_real = m.encoder_row(long_doc)
        full = [m.enc_id, 1] + m.tok.encode_segment(long_doc) + [2]
        check(f"{variant}: truncation keeps first 259", n_real == M and row[:M] == full[:M] and 2 not in row[2:M])
        # Pipeline compression == a manual forward with encoder_adapter, at the memory positions.
        vecs, counts = m.compress([doc, long_doc])
        ids = np.array([m.encoder_row(doc)[0]])
        out = rm.forward(m.weights, m.weights.embed[ids], np.array([m.encoder_row(doc)[1]]),
                         np.arange(ids.shape[1])[None], [m.adapters[rc.ENC]])
        close(f"{variant}: compress == manual forward", vecs[0], out[0, M:], 1e-6)
        check(f"{variant}: vectors shape", vecs.shape == (2, m.n_mem, m.weights.hp.hidden))
        check(f"{variant}: n_tokens", counts == [len(text_ids) + 3, M])
        # Padding invariance at the pipeline level: same doc batched with a long one, or alone.
        alone, _ = m.compress([doc])
        close(f"{variant}: batch invariance", alone[0], vecs[0], 1e-5)
        m.doc_max_length += 41  # 41 more pad columns, every position shifted by 41
        try:
            shifted, _ = m.compress([doc])
        finally:
            m.doc_max_length -= 41
        close(f"{variant}: vectors independent of pad count", shifted[0], alone[0], 1e-5)
        check(f"{variant}: vectors not all equal", float(np.std(alone[0])) > 1e-3)


def test_prompt_structure():
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=os.path.join(tokenizer_files(), "tokenizer.model"))
    for variant in ("instruct16", "instruct128"):
        m = model(variant)
        q = "What is the capital of France?"
        ids1 = m.prompt_ids(m.qa_prompt(q, 1))
        head = [1] + sp.encode(" [INST] " + rc.QA_SYSTEM + "\n\nBackground:\n")
        tail = sp.encode("\n\nQuestion:" + q + " [/INST]")
        want = head + m.mem_ids + [m.sep_id] + tail
        check(f"{variant}: 1-doc prompt ids == [1]+sp(head)+MEM+SEP+sp(tail)", ids1 == want)
        first = len(head)
        for k in (2, 3, 5):
            idsk = m.prompt_ids(m.qa_prompt(q, k))
            check(f"{variant}: k={k} adds (k-1)(n_mem+1)", len(idsk) == len(ids1) + (k - 1) * (m.n_mem + 1))
            slots_ok = all(idsk[first + j * (m.n_mem + 1): first + j * (m.n_mem + 1) + m.n_mem] == m.mem_ids
                           and idsk[first + j * (m.n_mem + 1) + m.n_mem] == m.sep_id for j in range(k))
            check(f"{variant}: k={k} slot positions", slots_ok and idsk.index(m.mem_ids[0]) == first)
        q2 = "Who?"
        check(f"{variant}: question tokens only change the tail",
              len(m.prompt_ids(m.qa_prompt(q2, 1))) - len(ids1) == len(sp.encode("\n\nQuestion:" + q2 + " [/INST]")) - len(tail))


def test_replace_embeddings():
    m = model("instruct16")
    k = 3
    vecs = np.random.default_rng(6).standard_normal((k, m.n_mem, m.weights.hp.hidden)).astype(F32)
    ids = m.prompt_ids(m.qa_prompt("Q?", k))
    emb = m.replace_embeddings(ids, vecs)
    first = ids.index(m.mem_ids[0])
    ok = True
    for j in range(k):
        s = first + j * (m.n_mem + 1)
        ok &= np.array_equal(emb[s:s + m.n_mem], vecs[j])
        ok &= np.array_equal(emb[s + m.n_mem], m.weights.embed[m.sep_id])
    check("sep=true: slots hold the vectors, <SEP> keeps its embedding", ok)
    others = [i for i in range(len(ids)) if not (first <= i < first + k * (m.n_mem + 1))]
    check("other rows are token embeddings", np.array_equal(emb[others], m.weights.embed[[ids[i] for i in others]]))
    # sep=false (bug-compatible): document j starts at first + j·n_mem, overwriting a <SEP>.
    ns = model("nosep128")
    check("nosep128 fixture has sep false", ns.sep is False)
    vecs = np.random.default_rng(7).standard_normal((k, ns.n_mem, ns.weights.hp.hidden)).astype(F32)
    ids = ns.prompt_ids(ns.qa_prompt("Q?", k))
    emb = ns.replace_embeddings(ids, vecs)
    first = ids.index(ns.mem_ids[0])
    n = ns.n_mem
    written = np.concatenate(list(vecs))
    check("sep=false: vectors written contiguously from first", np.array_equal(emb[first:first + k * n], written))
    check("sep=false: the first <SEP> is overwritten", ids[first + n] == ns.sep_id and not np.array_equal(emb[first + n], ns.weights.embed[ns.sep_id]))
    tail = range(first + k * n, first + k * (n + 1))
    check("sep=false: last placeholders keep token embeddings",
          all(np.array_equal(emb[i], ns.weights.embed[ids[i]]) for i in tail))


def test_generation():
    m = model("instruct16", "all")
    recs = data_records()
    doc, q = recs[1]["docs"][0], recs[1]["question"][0]
    res = m.ask([q], [[doc]], max_new_tokens=12)[0]
    ids = res["ids"]
    check("generation stops at </s> or max_new_tokens", (ids and ids[-1] == 2) or len(ids) == 12)
    check("no id after </s>", 2 not in ids[:-1])
    check("first id = argmax of first logits", ids[0] == int(np.argmax(res["first_logits"])))
    check("answer = decode(ids)", res["answer"] == m.tok.decode(ids))
    check("one top-2 gap per step", len(res["top2_gaps"]) == len(ids) and min(res["top2_gaps"]) >= 0)
    # Independent recomputation: the prompt forward with positions 0..T-1 and decoder_adapter.
    vecs, _ = m.compress([doc])
    pids = m.prompt_ids(m.qa_prompt(q, 1))
    emb = m.replace_embeddings(pids, vecs)
    out = rm.forward(m.weights, emb[None], np.ones((1, len(pids))), np.arange(len(pids))[None], [m.adapters[rc.DEC]])
    close("first logits == direct prompt forward", res["first_logits"], rm.logits(m.weights, out[0, -1]), 1e-4)
    # Step 2 by direct recomputation of prompt + first id.
    if len(ids) > 1:
        emb2 = np.concatenate([emb, m.weights.embed[[ids[0]]]])
        out2 = rm.forward(m.weights, emb2[None], np.ones((1, len(emb2))), np.arange(len(emb2))[None], [m.adapters[rc.DEC]])
        check("second id = argmax after feeding the first", int(np.argmax(rm.logits(m.weights, out2[0, -1]))) == ids[1])
    check("greedy pick: lowest index on ties", rc.greedy_pick(np.array([1, 3, 3, 2], F32)) == 1)
    # Stop at </s>: swap lm_head rows so that the id chosen at step 1 becomes </s>.
    if len(ids) > 2 and ids[1] not in (ids[0], 2) and ids[0] != 2:
        lm = m.weights.lm_head
        saved = lm.copy()
        lm[[2, ids[1]]] = lm[[ids[1], 2]]
        try:
            stopped = m.ask([q], [[doc]], max_new_tokens=12)[0]["ids"]
        finally:
            lm[:] = saved
        check("generation stops after </s> (included)", stopped == [ids[0], 2], str(stopped))
    else:
        check("eos test precondition (distinct first ids)", False, str(ids))
    # Batch of two questions with different prompt lengths == each alone.
    doc2, q2 = recs[2]["docs"][0], "Why?"
    both = m.ask([q, q2], [[doc], [doc2]], max_new_tokens=6)
    a1 = m.ask([q], [[doc]], max_new_tokens=6)[0]
    a2 = m.ask([q2], [[doc2]], max_new_tokens=6)[0]
    check("batched generation row 0 ids", both[0]["ids"] == a1["ids"])
    check("batched generation row 1 ids", both[1]["ids"] == a2["ids"])
    close("batched generation row 1 first logits", both[1]["first_logits"], a2["first_logits"], 1e-4)


def test_adapter_per_phase():
    # hf policy on stage1_2: generation uses the zero decoder adapter == plain base decoder.
    m = model("instruct16", "hf")
    doc, q = "Paris is the capital of France.", "What is the capital of France?"
    res = m.ask([q], [[doc]], max_new_tokens=1)[0]
    vecs, _ = m.compress([doc])
    pids = m.prompt_ids(m.qa_prompt(q, 1))
    emb = m.replace_embeddings(pids, vecs)
    out = rm.forward(m.weights, emb[None], np.ones((1, len(pids))), np.arange(len(pids))[None], [])
    close("hf stage1_2: answers come from the plain base decoder", res["first_logits"], rm.logits(m.weights, out[0, -1]), 1e-4)
    # A variant without decoder_adapter keeps encoder_adapter active after compression (§5).
    for v in ("base16", "e2e16", "e2e16_noqr", "partial16", "instruct128", "nosep128"):
        mv = model(v)
        if rc.DEC not in mv.adapters:
            r = mv.ask([q], [[doc]], max_new_tokens=1)[0]
            vv, _ = mv.compress([doc])
            p = mv.prompt_ids(mv.qa_prompt(q, 1))
            e = mv.replace_embeddings(p, vv)
            o = rm.forward(mv.weights, e[None], np.ones((1, len(p))), np.arange(len(p))[None], [mv.adapters[rc.ENC]])
            close(f"{v}: no decoder_adapter -> encoder stays active", r["first_logits"], rm.logits(mv.weights, o[0, -1]), 1e-4)
    # A checkpoint without decoder_adapter: encoder_adapter stays active after compression (§5).
    mb = model("base16", "all")
    saved = mb.adapters.pop(rc.DEC)
    try:
        r = mb.ask([q], [[doc]], max_new_tokens=1)[0]
        vv, _ = mb.compress([doc])
        p = mb.prompt_ids(mb.qa_prompt(q, 1))
        e = mb.replace_embeddings(p, vv)
        o = rm.forward(mb.weights, e[None], np.ones((1, len(p))), np.arange(len(p))[None], [mb.adapters[rc.ENC]])
        close("no decoder_adapter: generation keeps encoder_adapter", r["first_logits"], rm.logits(mb.weights, o[0, -1]), 1e-4)
        # ... and right after loading (no compression in between) all loaded adapters are summed.
        mb.active = list(mb.adapters.values())
        r2 = mb.answer_from_vectors([q], vv, 1)[0]
        both = [mb.adapters[n] for n in mb.adapters]
        o2 = rm.forward(mb.weights, e[None], np.ones((1, len(p))), np.arange(len(p))[None], both)
        close("no decoder_adapter, fresh load: all adapters summed", r2["first_logits"], rm.logits(mb.weights, o2[0, -1]), 1e-4)
    finally:
        mb.adapters[rc.DEC] = saved
    # partial16 under 'all': the incomplete decoder adapter has exactly the modules in the file.
    mp = model("partial16", "all")
    file_keys = rc.load_pth(os.path.join(FIXTURES, "partial16", "adapters.pth"))[rc.DEC].keys()
    want_mods = {k.rsplit(".lora_", 1)[0] for k in file_keys if ".lora_" in k}
    got_mods = {f"model.layers.{i}.{rc._MODULE_PATHS[mm]}" for (i, mm) in mp.adapters[rc.DEC].mods}
    check("partial adapter: modules == those in the file", got_mods == want_mods and len(got_mods) < 14)
    # Right after loading, all loaded adapters are active (summed).
    mb = model("base16")
    check("after load: all adapters active", [a.name for a in mb.active] == list(mb.adapters))


def test_retrieve():
    m = model("e2e16_noqr")
    check("stage2 without query_reasoner: copy of encoder",
          rc.QRY in m.adapters and m.adapters[rc.QRY].mods == m.adapters[rc.ENC].mods)
    recs = data_records()
    docs = [recs[i]["docs"][0] for i in range(3, 9)]
    q = docs[4]  # identical text: with the encoder copy its score is exactly the self-cosine
    res = m.retrieve(q, docs, max_new_tokens=2, top_k=3)
    check("retrieve: identical doc ranked first with score ~1", res["top_k"][0] == 4 and abs(res["scores"][4] - 1) < 1e-5,
          str((res["top_k"], res["scores"])))
    sc = res["scores"]
    check("retrieve: top-k in descending score order", [sc[i] for i in res["top_k"]] == sorted(sc, reverse=True)[:3])
    dup = m.retrieve("Who?", [docs[0], docs[1], docs[0], docs[1]], max_new_tokens=1, top_k=2)
    check("retrieve: ties -> lowest index first", dup["top_k"] in ([0, 2], [1, 3]), str(dup["top_k"]))
    # Scores are the cosine of flattened vectors.
    e = model("e2e16")
    qv, _ = e.compress(["Who?"], adapter=rc.QRY)
    dv, _ = e.compress(docs[:3])
    want = [float(np.dot(qv[0].ravel().astype(np.float64), d.ravel()) / np.linalg.norm(qv[0].astype(np.float64)) / np.linalg.norm(d.astype(np.float64))) for d in dv]
    got = e.retrieve("Who?", docs[:3], max_new_tokens=1, top_k=1)
    close("retrieve: scores are cosines", got["scores"], want, 1e-5)
    check("retrieve: default top-k from config", len(e.retrieve("Who?", docs[:6], max_new_tokens=1)["top_k"]) == e.generation_top_k)
    # The prompt has K slots filled in rank order.
    k = 3
    r3 = e.retrieve("Who?", docs[:6], max_new_tokens=1, top_k=k)
    vecs, _ = e.compress(docs[:6])
    pids = e.prompt_ids(e.qa_prompt("Who?", k))
    emb = e.replace_embeddings(pids, vecs[r3["top_k"]])
    dec = [e.adapters[rc.DEC]] if rc.DEC in e.adapters else [e.adapters[rc.ENC]]
    out = rm.forward(e.weights, emb[None], np.ones((1, len(pids))), np.arange(len(pids))[None], dec)
    close("retrieve: prompt slots in rank order", r3["first_logits"], rm.logits(e.weights, out[0, -1]), 1e-4)


def test_paraphrase():
    m = model("base16")
    doc = data_records()[5]["docs"][0]
    r = m.paraphrase([doc], 3, max_new_tokens=4)
    pids = m.prompt_ids(m.paraphrase_prompt(1, 3))
    vecs, _ = m.compress([doc])
    emb = m.replace_embeddings(pids, vecs)
    act = [m.adapters[rc.DEC]] if rc.DEC in m.adapters else [m.adapters[rc.ENC]]
    out = rm.forward(m.weights, emb[None], np.ones((1, len(pids))), np.arange(len(pids))[None], act)
    close("paraphrase: template 3 prompt forward", r["first_logits"], rm.logits(m.weights, out[0, -1]), 1e-4)
    check("paraphrase: template 3 text", "essence:\n(1) " in m.paraphrase_prompt(1, 3))
    check("13 templates", len(rc.PARAPHRASE_TEMPLATES) == 13)


def raises(fn):
    try:
        fn()
    except rc.ClaraError:
        return True
    return False


def test_errors():
    m = model("instruct16")
    check("error: <MEM0> in a document", raises(lambda: m.compress(["a <MEM0> b"])))
    check("error: </s> in a question", raises(lambda: m.ask(["x</s>"], [["doc"]], 1)))
    check("error: <SEP> in a document", raises(lambda: m.ask(["q"], [["<SEP>"]], 1)))
    check("error: unequal document counts", raises(lambda: m.ask(["a", "b"], [["d"], ["d", "e"]], 1)))
    n_fit = (rc.DECODER_MAX_LEN - 40) // (m.n_mem + 1) + 2
    check("error: prompt truncation cuts a slot", raises(lambda: m.ask(["q"], [["d"] * n_fit], 1)))
    e = model("e2e16")
    check("error: fewer candidates than top-k", raises(lambda: e.retrieve("q", ["a", "b"], 1, top_k=3)))
    b = model("base16")
    if rc.QRY not in b.adapters:
        check("error: query_reasoner missing for retrieve", raises(lambda: b.retrieve("q", ["a"], 1, top_k=1)))
    check("error: paraphrase template out of range", raises(lambda: b.paraphrase(["a"], 13, 1)))


def test_cli():
    cli = [PY, os.path.join(ROOT, "tests", "reference", "clara_ref.py")]
    common = ["--base", os.path.join(FIXTURES, "base"), "--clara", os.path.join(FIXTURES, "e2e16")]

    def run(*args):
        r = subprocess.run(cli + list(args) + common, capture_output=True, text=True)
        return r.returncode, (json.loads(r.stdout) if r.returncode == 0 else r.stderr)

    e = model("e2e16")
    rc0, out = run("tokenize", "--text", "<ENC><s>Hello</s>")
    check("cli tokenize", rc0 == 0 and out["ids"] == e.tok.encode("<ENC><s>Hello</s>"), str(out))
    rc0, out = run("compress", "--doc", "Paris is nice.", "--doc", "Rome")
    vecs, counts = e.compress(["Paris is nice.", "Rome"])
    check("cli compress", rc0 == 0 and [d["n_tokens"] for d in out["docs"]] == counts and
          np.allclose(np.array(out["docs"][1]["vectors"]), vecs[1], atol=0), str(out)[:300])
    rc0, out = run("ask", "--doc", "Paris is nice.", "--query", "Where?", "--max-new-tokens", "3")
    check("cli ask", rc0 == 0 and set(out) >= {"answer", "ids", "prompt_tokens", "first_logits", "top2_gaps"}
          and len(out["first_logits"]) == e.vocab_size, str(out)[:300])
    rc0, out = run("retrieve", "--doc", "a", "--doc", "b", "--doc", "c", "--query", "b", "--top-k", "2", "--max-new-tokens", "2")
    check("cli retrieve", rc0 == 0 and len(out["top_k"]) == 2 and len(out["scores"]) == 3, str(out)[:300])
    rc0, out = run("paraphrase", "--doc", "a b c", "--template", "5", "--max-new-tokens", "2")
    check("cli paraphrase", rc0 == 0 and set(out) >= {"text", "ids"}, str(out)[:300])
    rc0, out = run("compress", "--doc", "bad <SEP> doc")
    check("cli error exit 1 with message", rc0 != 0 and "special token" in out, str(out))


def main():
    for t in (test_tokenizer_metaspace, test_rope_shift_invariance, test_left_padding_and_batching, test_lora,
              test_gqa_naive, test_hand_computed_forward):
        run_test(t)
    if ensure_fixtures():
        for t in (test_tokenizer_vs_sentencepiece, test_tokenizer_added_tokens, test_chat_template,
                  test_loading_and_policy, test_compression_structure, test_prompt_structure,
                  test_replace_embeddings, test_generation, test_adapter_per_phase, test_retrieve,
                  test_paraphrase, test_errors, test_cli):
            run_test(t)
    print(f"reference: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
