"""The engine against the independent numpy reference (tests/reference), on the synthetic
fixtures converted to f32 GGUF: compressed vectors and first-step logits within 1e-4 (max abs),
generated ids, texts and retrieval top-k identical, over cases covering 0/1/3/5 documents, empty
and long (truncated) documents, unicode, both compression settings, sep and different_mem_tokens
both ways, both adapter policies, E2E retrieval and paraphrase. Then the inputs the reference
cannot process (spec §14.4) and invalid inputs must fail cleanly with a non-zero exit.

Reduced precision (bf16/f16 GGUFs) is measured by test_precision.py."""

import json
import os
import subprocess
import tempfile

import numpy as np

from harness import CLARA, FIXTURES, check, report, run
import gen_fixtures as gf
import ref_clara

OUT = tempfile.mkdtemp(prefix="clara_engine_")
BASE = os.path.join(FIXTURES, "base")
DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "..", "shared", "data", "wiki-passages-qa.jsonl")
TOL = 1e-4
_models, _ggufs = {}, {}


def passages():
    out = []
    try:
        with open(DATA) as f:
            for line in f:
                rec = json.loads(line)
                out.append((rec["docs"], rec["question"]))
                if len(out) >= 12:
                    break
    except OSError:
        pass
    if not out:  # fall back to built-in text when the shared data set is absent
        out = [(["Paris is the capital of France. It is on the Seine."],
                ["What is the capital of France?"])] * 12
    return out


def gguf(var, typ="f32"):
    key = (var, typ)
    if key not in _ggufs:
        out = os.path.join(OUT, "%s.%s.gguf" % key)
        p = subprocess.run([CLARA, "convert", "--base", BASE, "--clara", os.path.join(FIXTURES, var),
                            "--out", out, "--type", typ, "--quiet"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        _ggufs[key] = out
    return _ggufs[key]


def ref(var, policy):
    key = (var, policy)
    if key not in _models:
        _models[key] = ref_clara.Clara(BASE, os.path.join(FIXTURES, var), adapter_policy=policy)
    return _models[key]


def clara(cmd, var, docs, query=None, policy="hf", typ="f32", extra=()):
    args = [CLARA, cmd, "--model", gguf(var, typ), "--json", "--threads", "2",
            "--adapter-policy", policy] + list(extra)
    for d in docs:
        args += ["--doc", d]
    if query is not None:
        args += ["--query", query]
    if cmd != "compress":
        args.append("--dump-logits")
    p = subprocess.run(args, capture_output=True)
    if p.returncode != 0:
        return None, p.stderr.decode("utf-8", "replace")
    return json.loads(p.stdout), p.stderr.decode("utf-8", "replace")


def max_abs(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def compare_gen(name, got, want):
    check(got["ids"] == want["ids"], "%s: ids %s vs reference %s" % (name, got["ids"][:12], want["ids"][:12]))
    key = "text" if "text" in got else "answer"
    check(got[key] == want["answer"], "%s: text %r vs %r" % (name, got[key][:60], want["answer"][:60]))
    check(got["prompt_tokens"] == len(want["prompt_ids"]), "%s: prompt_tokens %d vs %d" % (
        name, got["prompt_tokens"], len(want["prompt_ids"])))
    d = max_abs(got["first_logits"], want["first_logits"])
    check(d <= TOL, "%s: first-step logits differ by %.3g" % (name, d))
    return d


# (name, command, variant, policy, documents, query, extra CLI args)
def cases():
    P = passages()
    long_doc = " ".join(P[0][0] * 6)  # far beyond doc_max_length: truncated to 259 ids
    uni = "Zürich – 東京 ☕ naïve café — ½ ∑ 🚀 emoji and ‘quotes’"
    c = []
    for var in ("instruct16", "instruct128", "nosep128"):
        for pol in ("hf", "all"):
            c.append(("compress %s %s" % (var, pol), "compress", var, pol, [P[1][0][0], "", long_doc], None, ()))
    for var in ("instruct16", "instruct128", "nosep128", "base16", "partial16"):
        for pol in ("hf", "all"):
            for k in (0, 1, 3, 5):
                docs = [P[(i + k) % len(P)][0][0] for i in range(k)]
                q = P[k][1][0]
                c.append(("ask %s %s k=%d" % (var, pol, k), "ask", var, pol, docs, q,
                          ("--max-new-tokens", "12")))
    c.append(("ask empty+long", "ask", "instruct16", "all", ["", long_doc], "Who?", ("--max-new-tokens", "10")))
    c.append(("ask unicode", "ask", "instruct16", "all", [uni, P[2][0][0]], uni + " ?", ("--max-new-tokens", "10")))
    c.append(("ask colon-backslash", "ask", "instruct128", "all", [P[3][0][0]], "Note:\\ what is it?",
              ("--max-new-tokens", "8")))
    for var in ("e2e16", "e2e16_noqr"):
        for pol in ("hf", "all"):
            docs = [P[i][0][0] for i in range(6)]
            c.append(("retrieve %s %s" % (var, pol), "retrieve", var, pol, docs, P[4][1][0],
                      ("--max-new-tokens", "10")))
    c.append(("retrieve top-k 2", "retrieve", "e2e16", "hf", [P[i][0][0] for i in range(4)], P[1][1][0],
              ("--top-k", "2", "--max-new-tokens", "6")))
    for t in (0, 3, 12):
        c.append(("paraphrase base16 t=%d" % t, "paraphrase", "base16", "hf", [P[5][0][0], P[6][0][0]], None,
                  ("--template", str(t), "--max-new-tokens", "10")))
    return c


def ask_without_documents(m, q, mnt):
    """The reference fails on 0 documents (no memory slot to overwrite, like PyTorch's
    _replace_embeddings); the engine answers from the empty-background prompt. The expectation is
    built from the reference's own steps without the slot replacement."""
    ids = m.prompt_ids(m.qa_prompt(q, 0))
    m.compress([])  # the reference switches to the encoder adapter even for no documents
    m.use_decoder_adapter()
    new, first, gaps = m.generate([m.embed(ids)], mnt)[0]
    return {"answer": m.tok.decode(new), "ids": new, "prompt_ids": ids, "first_logits": first,
            "top2_gaps": gaps}


def run_case(case):
    name, cmd, var, pol, docs, q, extra = case
    got, err = clara(cmd, var, docs, q, pol, extra=extra)
    if not check(got is not None, "%s: clara failed: %s" % (name, err.strip())):
        return
    m = ref(var, pol)
    mnt = int(extra[extra.index("--max-new-tokens") + 1]) if "--max-new-tokens" in extra else 128
    if cmd == "compress":
        vecs, counts = m.compress(docs)
        check([d["n_tokens"] for d in got["docs"]] == list(counts), "%s: n_tokens" % name)
        d = max_abs([x["vectors"] for x in got["docs"]], vecs)
        check(d <= TOL, "%s: vectors differ by %.3g" % (name, d))
    elif cmd == "ask" and not docs:
        compare_gen(name, got, ask_without_documents(m, q, mnt))
    elif cmd == "ask":
        compare_gen(name, got, m.ask([q], [docs], mnt)[0])
    elif cmd == "paraphrase":
        compare_gen(name, got, m.paraphrase(docs, int(extra[1]), mnt))
    else:
        tk = int(extra[1]) if extra[0] == "--top-k" else None
        want = m.retrieve(q, docs, mnt, tk)
        compare_gen(name, got, want)
        check(got["top_k"] == want["top_k"], "%s: top_k %s vs %s" % (name, got["top_k"], want["top_k"]))
        check(max_abs(got["scores"], want["scores"]) <= TOL, "%s: scores" % name)


def test_fidelity_against_reference():
    gf.ensure(FIXTURES)
    cs = cases()
    check(len(cs) >= 30, "at least 30 cases (%d)" % len(cs))
    for c in cs:
        try:
            run_case(c)
        except Exception as e:  # a reference failure is a test failure, with the case named
            check(False, "%s: raised %r" % (c[0], e))


def expect_error(name, args, keyword):
    p = subprocess.run([CLARA] + args, capture_output=True)
    err = p.stderr.decode("utf-8", "replace")
    check(p.returncode == 1 and keyword in err and "Sanitizer" not in err and "runtime error" not in err,
          "%s: exit %d, stderr %r (want %r)" % (name, p.returncode, err.strip()[-200:], keyword))


def test_rejected_inputs():
    m16, qr = gguf("instruct16"), gguf("instruct16")
    for tok in ("<MEM0>", "<SEP>", "<ENC>", "</s>", "<s>"):
        expect_error("document with %s" % tok, ["compress", "--model", m16, "--doc", "a %s b" % tok],
                     "special token '%s'" % tok)
    expect_error("query with <MEM3>", ["ask", "--model", m16, "--doc", "x", "--query", "q <MEM3>"],
                 "special token '<MEM3>'")
    expect_error("too few candidates", ["retrieve", "--model", gguf("e2e16"), "--doc", "a", "--doc", "b",
                                        "--query", "q"], "at least top_k = 5")
    expect_error("no query reasoner", ["retrieve", "--model", qr, "--doc", "a", "--query", "q"],
                 "query_reasoner_adapter")
    expect_error("unknown model file", ["ask", "--model", "/nonexistent.gguf", "--query", "q"], "nonexistent")
    expect_error("not a gguf", ["ask", "--model", "/etc/hostname", "--query", "q"], "hostname")
    expect_error("empty query", ["ask", "--model", m16, "--doc", "a", "--query", ""], "query is empty")
    expect_error("too many documents", ["ask", "--model", m16, "--query", "q", "--max-new-tokens", "4"] +
                 sum([["--doc", "d"] for _ in range(2100)], []), "context")
    bad = b"caf\xc3 invalid"
    p = subprocess.run([CLARA.encode(), b"compress", b"--model", m16.encode(), b"--doc", bad], capture_output=True)
    check(p.returncode == 1 and b"UTF-8" in p.stderr, "invalid UTF-8 document: %r" % p.stderr)
    p = subprocess.run([CLARA.encode(), b"ask", b"--model", m16.encode(), b"--query", bad], capture_output=True)
    check(p.returncode == 1 and b"UTF-8" in p.stderr, "invalid UTF-8 query: %r" % p.stderr)


run(test_fidelity_against_reference)
run(test_rejected_inputs)
report("test_engine")
