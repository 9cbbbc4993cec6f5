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

import numpy as np

from harness import CLARA, FIXTURES, check, report, run
from engine_cases import OUT, TOL, cases, clara, expected, gguf, max_abs, passages, ref
import ref_clara
import gen_fixtures as gf

def compare_gen(name, got, want):
    check(got["ids"] == want["ids"], "%s: ids %s vs reference %s" % (name, got["ids"][:12], want["ids"][:12]))
    key = "text" if "text" in got else "answer"
    check(got[key] == want["answer"], "%s: text %r vs %r" % (name, got[key][:60], want["answer"][:60]))
    check(got["prompt_tokens"] == len(want["prompt_ids"]), "%s: prompt_tokens %d vs %d" % (
        name, got["prompt_tokens"], len(want["prompt_ids"])))
    d = max_abs(got["first_logits"], want["first_logits"])
    check(d <= TOL, "%s: first-step logits differ by %.3g" % (name, d))
    return d


def run_case(case):
    name, cmd, var, pol, docs, q, extra = case
    got, err = clara(cmd, var, docs, q, pol, extra=extra)
    if not check(got is not None, "%s: clara failed: %s" % (name, err.strip())):
        return
    want = expected(case)
    if cmd == "compress":
        vecs, counts = want
        check([d["n_tokens"] for d in got["docs"]] == list(counts), "%s: n_tokens" % name)
        d = max_abs([x["vectors"] for x in got["docs"]], vecs)
        check(d <= TOL, "%s: vectors differ by %.3g" % (name, d))
        return
    compare_gen(name, got, want)
    if cmd == "retrieve":
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
    # fewer candidates than the model's top_k: all of them, with a note (as /v1/retrieve does)
    p = subprocess.run([CLARA, "retrieve", "--model", gguf("e2e16"), "--doc", "a", "--doc", "b",
                        "--query", "q", "--max-new-tokens", "2", "--json"], capture_output=True,
                       text=True)
    out = json.loads(p.stdout) if p.returncode == 0 else {}
    check(p.returncode == 0 and "only 2 documents were given" in p.stderr and
          sorted(out.get("top_k", [])) == [0, 1], "too few candidates: all used, with a note "
          "(exit %d, %r, %r)" % (p.returncode, p.stderr[-160:], out.get("top_k")))
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


def test_long_prompt_is_not_truncated():
    """Past 1024 prompt tokens the reference truncates (cutting the question and memory slots);
    the engine keeps the whole prompt and warns. Expectation: the reference without truncation."""
    docs = ["document number %d" % i for i in range(62)]
    q = "Which document mentions the number seven?"
    got, err = clara("ask", "instruct16", docs, q, "all", extra=("--max-new-tokens", "6"))
    if not check(got is not None, "long prompt: clara failed: %s" % err):
        return
    check(got["prompt_tokens"] > 1024, "prompt is longer than 1024 (%d)" % got["prompt_tokens"])
    check("would truncate it at 1024" in err, "warning about the reference's truncation: %r" % err)
    saved = ref_clara.DECODER_MAX_LEN
    ref_clara.DECODER_MAX_LEN = 1 << 30
    try:
        want = ref("instruct16", "all").ask([q], [docs], 6)[0]
    finally:
        ref_clara.DECODER_MAX_LEN = saved
    compare_gen("long prompt", got, want)


def test_grouped_query_heads():
    """Decoding takes the 4 query heads of a key/value head together (7B's grouping; the tiny
    fixtures group 2): a fixture shaped that way against the reference, both policies (the decoder
    adapter applied or not), the first step from the prompt and 15 decoded steps."""
    fx = os.path.join(FIXTURES, "..", "fixtures-gqa4")
    gf.ensure(fx, shape="gqa4", variants=["instruct16"])
    base, var = os.path.join(fx, "base"), os.path.join(fx, "instruct16")
    model = os.path.join(OUT, "gqa4.instruct16.f32.gguf")
    p = subprocess.run([CLARA, "convert", "--base", base, "--clara", var, "--out", model,
                        "--type", "f32", "--quiet"], capture_output=True, text=True)
    if not check(p.returncode == 0, "gqa4 convert: %s" % p.stderr):
        return
    P = passages()
    for pol in ("hf", "all"):
        m = ref_clara.Clara(base, var, adapter_policy=pol)
        for k in (1, 3):
            docs, q = [P[i][0][0] for i in range(k)], P[k][1][0]
            args = [CLARA, "ask", "--model", model, "--json", "--threads", "2", "--adapter-policy",
                    pol, "--query", q, "--max-new-tokens", "16", "--dump-logits"]
            for d in docs:
                args += ["--doc", d]
            p = subprocess.run(args, capture_output=True)
            name = "gqa4 ask %s k=%d" % (pol, k)
            if check(p.returncode == 0, "%s: %s" % (name, p.stderr.decode(errors="replace"))):
                compare_gen(name, json.loads(p.stdout), m.ask([q], [docs], 16)[0])


run(test_fidelity_against_reference)
run(test_grouped_query_heads)
run(test_long_prompt_is_not_truncated)
run(test_rejected_inputs)
report("test_engine")
