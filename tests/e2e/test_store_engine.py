"""The engine's memory-store support through the CLI, against independent truth:

- chunking (`clara tokenize --chunks N`, clara_split_text): every chunk re-tokenized on its own by
  `clara tokenize` has the reported n_tokens, at most N; the chunks tile the text exactly; breaks
  fall after whitespace; each chunk is as long as it can be (the next break, or for a split word
  the next character, would exceed N); long words, multi-byte text, whitespace-only text,
  special-token strings, invalid UTF-8 and a 10 MB text;
- token counts (clara_count_tokens) equal the tokenizer's id count;
- query vectors (`clara compress --query`, clara_compress_queries): the cosine scores numpy
  computes from them and the documents' vectors equal the scores `clara retrieve` reports;
- the model fingerprint (`clara info --fingerprint`): stable, different for another type, another
  seed or another adapter; one file vs the equivalent base + add-on pair."""

import json
import os
import random
import subprocess
import tempfile
import time

import numpy as np

from harness import BUILD, CLARA, FIXTURES, check, report, run
from engine_cases import gguf, passages
import gen_fixtures as gf

OUT = tempfile.mkdtemp(prefix="clara_store_engine_")
SANITIZED = os.path.basename(BUILD.rstrip("/")) in ("asan", "ubsan", "tsan")
WS = " \t\n\v\f\r"


def model():
    gf.ensure(FIXTURES)
    return gguf("e2e16")


def tokenize_many(m, texts):
    """Token ids of each text, from `clara tokenize --input-file` (one process)."""
    path = os.path.join(OUT, "tok_in.jsonl")
    with open(path, "w") as f:
        for t in texts:
            f.write(json.dumps(t) + "\n")
    p = subprocess.run([CLARA, "tokenize", "--model", m, "--input-file", path],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return [json.loads(line)["ids"] for line in p.stdout.splitlines()]


def chunks(m, text, n, extra=()):
    """(parsed output or None, stderr, seconds) of `clara tokenize --chunks n` on one text."""
    path = os.path.join(OUT, "chunk_in.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps(text) + "\n")
    t0 = time.time()
    p = subprocess.run([CLARA, "tokenize", "--chunks", str(n), "--input-file", path] +
                       (list(extra) or ["--model", m]), capture_output=True, text=True)
    dt = time.time() - t0
    return (json.loads(p.stdout) if p.returncode == 0 else None), p.stderr, dt


def verify(name, m, text, n, out, limit, greedy=True, sample=None):
    """The chunk invariants against the tokenizer; sample: check that many random chunks only."""
    cs = out["chunks"]
    b = text.encode("utf-8")
    pos = 0
    for c in cs:
        if c["start"] != pos:
            break
        pos += c["len"]
    check(pos == len(b) and all(c["len"] > 0 for c in cs),
          "%s: chunks tile the text (end %d of %d)" % (name, pos, len(b)))
    pieces = [b[c["start"]:c["start"] + c["len"]] for c in cs]
    try:
        strs = [p.decode("utf-8") for p in pieces]
    except UnicodeDecodeError:
        check(False, "%s: a chunk is cut inside a UTF-8 character" % name)
        return
    check("".join(strs) == text, "%s: concatenation is the text" % name)
    idx = list(range(len(cs)))
    if sample is not None and len(idx) > sample:
        idx = sorted(random.Random(1).sample(idx, sample))
    got = tokenize_many(m, [strs[i] for i in idx])
    bad = [(i, cs[i]["n_tokens"], len(ids)) for i, ids in zip(idx, got) if len(ids) != cs[i]["n_tokens"]]
    check(not bad, "%s: n_tokens re-tokenized (chunk, reported, actual) %s" % (name, bad[:5]))
    check(all(c["n_tokens"] <= limit for c in cs), "%s: every chunk <= %d tokens" % (name, limit))
    # breaks after whitespace, or inside a run too long for one chunk (then the chunk is full)
    forced = [i for i in idx[:-1] if i < len(cs) - 1 and not (
        strs[i][-1] in WS and strs[i + 1][0] not in WS)]
    if not greedy:
        return forced
    # greedy: one more word (to the next break), or one more character after a forced split,
    # would not fit
    longer = []
    for i in idx:
        if i == len(cs) - 1:
            continue
        rest = strs[i + 1]
        if i in forced:
            ext = strs[i] + rest[0]
        else:
            k = 0
            while k < len(rest) and rest[k] in WS:
                k += 1
            while k < len(rest) and rest[k] not in WS:
                k += 1
            while k < len(rest) and rest[k] in WS:
                k += 1
            ext = strs[i] + rest[:k] if k < len(rest) else strs[i] + rest
            if k >= len(rest) and i + 2 < len(cs):
                ext = strs[i] + rest  # the next chunk is one word: extending means all of it
        longer.append(ext)
    ext_ids = tokenize_many(m, longer) if longer else []
    fits = [j for j, ids in enumerate(ext_ids) if len(ids) <= limit]
    check(not fits, "%s: chunks are maximal (%d could take one more word/character)" % (name, len(fits)))
    return forced


def english(n_words, seed=0):
    words = " ".join(" ".join(d) for d, _ in passages()).split()
    rnd = random.Random(seed)
    seps = [" "] * 12 + ["\n", "  ", "\n\n", "\t", ", "]
    return "".join(rnd.choice(words) + rnd.choice(seps) for _ in range(n_words))


def test_chunks_english():
    m = model()
    text = english(3000)
    for n in (0, 48, 7):
        out, err, _ = chunks(m, text, n)
        if not check(out is not None, "chunks %d failed: %s" % (n, err.strip())):
            continue
        limit = n or 256
        forced = verify("english/%d" % n, m, text, n, out, limit)
        check(len(out["chunks"]) > 1, "english/%d: several chunks" % n)
        check(not forced or n == 7, "english/%d: no word split (%s)" % (n, forced[:3]))
        total = len(tokenize_many(m, [text])[0])
        check(out["n_tokens"] == total, "english: n_tokens %d vs tokenizer %d" % (out["n_tokens"], total))


def test_chunks_long_word_and_unicode():
    m = model()
    word = "x" * 20000
    out, err, _ = chunks(m, "start " + word + " end", 32)
    if check(out is not None, "long word: %s" % err.strip()):
        forced = verify("long word", m, "start " + word + " end", 32, out, 32)
        check(len(out["chunks"]) > 10 and len(forced) > 10, "the 20,000-char word is split (%d chunks)" %
              len(out["chunks"]))
    uni = ("Zürich liegt am Zürichsee. 東京は日本の首都です。 Ελληνικά κείμενα 🙂🙃 naïve café " * 40 +
           "é" * 3000 + " 中" * 10 + "中文" * 2000 + " 🙂" * 5 + "🙂" * 500)
    for n in (0, 20, 5):
        out, err, _ = chunks(m, uni, n)
        if check(out is not None, "unicode/%d: %s" % (n, err.strip())):
            verify("unicode/%d" % n, m, uni, n, out, n or 256)


def test_chunks_edge_inputs():
    m = model()
    for t in ("", " ", " \n\t  \r\n", "\n" * 5000):
        out, err, _ = chunks(m, t, 0)
        check(out is not None and out["chunks"] == [], "whitespace-only %r: no chunk (%s)" % (t[:8], out or err))
    out, _, _ = chunks(m, "   \n leading whitespace then words  ", 0)
    check(out is not None and len(out["chunks"]) == 1 and out["chunks"][0]["start"] == 0,
          "leading whitespace joins the first chunk: %s" % out)
    sp = "word" + " " * 30000 + "next"
    out, err, _ = chunks(m, sp, 16)
    if check(out is not None, "long whitespace run: %s" % err.strip()):
        verify("long whitespace run", m, sp, 16, out, 16)
    for bad in ("some text <SEP> more", "a </s> b", "x <MEM0>"):
        out, err, _ = chunks(m, bad, 0)
        check(out is None and "special token" in err, "special string refused: %r -> %s" % (bad, err.strip()))
    p = subprocess.run([CLARA, "tokenize", "--model", m, "--chunks", "0", "--text", b"ab \xff cd"],
                       capture_output=True)
    check(p.returncode == 1 and b"UTF-8" in p.stderr, "invalid UTF-8 refused: %r" % p.stderr)
    out, err, _ = chunks(m, "hello", 257)
    check(out is None and "doc_max_length" in err, "max_tokens over doc_max_length refused: %s" % err.strip())
    out, err, _ = chunks(m, "🙂🙂🙂", 1)
    check(out is None and "alone is more than" in err, "a character over the limit fails: %s" % err.strip())


def test_chunks_10mb():
    m = model()
    base = english(20000, seed=3)
    text = (base * (10_000_000 // len(base) + 1))[:10_000_000]
    text = text[:text.rfind(" ")]
    out, err, dt = chunks(m, text, 0)
    if not check(out is not None, "10 MB: %s" % err.strip()):
        return
    print("10 MB text: %d chunks in %.2f s (the CLI process: load, parse, count, split)" % (
        len(out["chunks"]), dt))
    verify("10 MB", m, text, 0, out, 256, greedy=True, sample=150)


def e2e_vectors(m, docs, queries):
    args = [CLARA, "compress", "--model", m, "--json", "--threads", "2"]
    for d in docs:
        args += ["--doc", d]
    for q in queries:
        args += ["--query", q]
    p = subprocess.run(args, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    return ([np.array(d["vectors"], dtype=np.float32) for d in j["docs"]],
            [np.array(q["vectors"], dtype=np.float32) for q in j.get("queries", [])])


def cosine(q, d):
    q = q.astype(np.float64).ravel()
    d = d.astype(np.float64).ravel()
    return float(np.dot(q, d) / (max(np.linalg.norm(q), 1e-12) * max(np.linalg.norm(d), 1e-12)))


def test_query_vectors_match_retrieval():
    gf.ensure(FIXTURES)
    docs = ["The Eiffel tower is in Paris.", "Berlin is in Germany.", "Rome is old.",
            "Oslo is cold in winter.", "Lima is in Peru.", "The Nile is a long river in Africa."]
    queries = ["Which city is cold?", "Where is the tower?", "Tell me about rivers."]
    for var in ("e2e16", "e2e16_noqr"):
        m = gguf(var)
        dv, qv = e2e_vectors(m, docs, queries)
        check(len(qv) == len(queries), "%s: one vector block per query" % var)
        enc, _ = e2e_vectors(m, queries, [])
        differs = any(float(np.max(np.abs(a - b))) > 0 for a, b in zip(enc, qv))
        check(differs == (var == "e2e16"), "%s: query vectors %s the encoder's" % (
            var, "differ from" if var == "e2e16" else "(encoder serves as query reasoner) equal"))
        for qi, q in enumerate(queries):
            p = subprocess.run([CLARA, "retrieve", "--model", m, "--json", "--threads", "2", "--query", q,
                                "--top-k", "2", "--max-new-tokens", "1"] +
                               sum((["--doc", d] for d in docs), []), capture_output=True, text=True)
            if not check(p.returncode == 0, "%s retrieve: %s" % (var, p.stderr.strip())):
                continue
            scores = json.loads(p.stdout)["scores"]
            mine = [cosine(qv[qi], d) for d in dv]
            diff = max(abs(a - b) for a, b in zip(scores, mine))
            # the engine sums in double and rounds to f32: identical vectors agree to f32 rounding
            check(diff <= 1e-6, "%s q%d: retrieve scores %s vs numpy cosine %s (diff %.3g)" % (
                var, qi, scores[:3], mine[:3], diff))
    p = subprocess.run([CLARA, "compress", "--model", gguf("instruct16"), "--query", "q"],
                       capture_output=True, text=True)
    check(p.returncode == 1 and "query_reasoner" in p.stderr,
          "no query reasoner: clear failure (%s)" % p.stderr.strip())
    p = subprocess.run([CLARA, "compress", "--model", gguf("e2e16"), "--query", "a <SEP> b"],
                       capture_output=True, text=True)
    check(p.returncode == 1 and "query 0 contains the special token" in p.stderr,
          "special string in a query refused (%s)" % p.stderr.strip())


def fingerprint(args):
    p = subprocess.run([CLARA, "info", "--fingerprint"] + list(args), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    fp = p.stdout.strip()
    assert len(fp) == 64 and all(c in "0123456789abcdef" for c in fp), fp
    return fp, p.stderr.strip()


def convert(out, var_dir, *args, base=None):
    p = subprocess.run([CLARA, "convert", "--base", base or os.path.join(FIXTURES, "base"), "--out", out,
                        "--quiet"] + (["--clara", var_dir] if var_dir else []) + list(args),
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return out


def test_fingerprint():
    gf.ensure(FIXTURES)
    f32 = gguf("e2e16")
    a, _ = fingerprint([f32])
    check(fingerprint([f32])[0] == a, "same file twice: same fingerprint")
    check(fingerprint([gguf("e2e16", "bf16")])[0] != a, "bf16 conversion: different fingerprint")
    q8 = os.path.join(OUT, "e2e16.q8_0.gguf")
    p = subprocess.run([CLARA, "quantize", f32, q8, "q8_0"], capture_output=True, text=True)
    if check(p.returncode == 0, "quantize q8_0: %s" % p.stderr.strip()[-200:]):
        check(fingerprint([q8])[0] != a, "q8_0 quantization: different fingerprint")
    check(fingerprint([gguf("e2e16_noqr")])[0] != a, "another adapter set: different fingerprint")
    # another seed: the same shapes and names, other weights
    seed_dir = os.path.join(OUT, "seed1")
    gf.ensure(seed_dir, seed=1, variants=["e2e16"])
    other = convert(os.path.join(OUT, "seed1.gguf"), os.path.join(seed_dir, "e2e16"), "--type", "f32",
                    base=os.path.join(seed_dir, "base"))
    check(fingerprint([other])[0] != a, "another seed: different fingerprint")
    # the adapter policy changes no adapter compression uses on instruct16: same vectors, same print
    ins = gguf("instruct16")
    check(fingerprint([ins])[0] == fingerprint([ins, "--adapter-policy", "all"])[0],
          "instruct16 hf vs all (same encoder, no query reasoner either way): same fingerprint")
    # one file vs the equivalent base + add-on pair
    base = convert(os.path.join(OUT, "base.gguf"), None, "--type", "f32", "--base-only")
    addon = convert(os.path.join(OUT, "e2e16.addon.gguf"), os.path.join(FIXTURES, "e2e16"), "--type",
                    "f32", "--addon-only")
    pair, _ = fingerprint(["--base", base, addon])
    print("one file %s, base + add-on pair %s" % (a[:16], pair[:16]))
    check(pair == a, "base + add-on pair of the same tensors: the single file's fingerprint")



for t in (test_chunks_english, test_chunks_long_word_and_unicode, test_chunks_edge_inputs, test_chunks_10mb,
          test_query_vectors_match_retrieval, test_fingerprint):
    run(t)
report("test_store_engine")
