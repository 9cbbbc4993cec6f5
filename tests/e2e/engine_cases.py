"""Shared by the engine suites: converted fixture models (cached per type), the numpy reference
models (cached per variant and policy), running the CLI, and the fidelity cases."""

import json
import os
import subprocess
import tempfile

import numpy as np

from harness import CLARA, FIXTURES
import ref_clara

OUT = tempfile.mkdtemp(prefix="clara_engine_")
BASE = os.path.join(FIXTURES, "base")
DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                    "wiki-passages-qa.jsonl")
TOL = 1e-4
_models, _ggufs = {}, {}


def passages():
    """The first 12 records of the repository's passage set (tests/data)."""
    out = []
    with open(DATA) as f:
        for line in f:
            rec = json.loads(line)
            out.append((rec["docs"], rec["question"]))
            if len(out) >= 12:
                break
    assert len(out) == 12, "%s holds %d records, the cases need 12" % (DATA, len(out))
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
    """Runs `clara CMD --json`; returns (parsed output or None, stderr)."""
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




def expected(case):
    """The reference's result for a case: (vectors, counts) for compress, else the generation
    dict (answer, ids, prompt_ids, first_logits, top2_gaps[, top_k, scores])."""
    name, cmd, var, pol, docs, q, extra = case
    m = ref(var, pol)
    mnt = int(extra[extra.index("--max-new-tokens") + 1]) if "--max-new-tokens" in extra else 128
    if cmd == "compress":
        return m.compress(docs)
    if cmd == "ask" and not docs:
        return ask_without_documents(m, q, mnt)
    if cmd == "ask":
        return m.ask([q], [docs], mnt)[0]
    if cmd == "paraphrase":
        return m.paraphrase(docs, int(extra[1]), mnt)
    tk = int(extra[1]) if extra[0] == "--top-k" else None
    return m.retrieve(q, docs, mnt, tk)
