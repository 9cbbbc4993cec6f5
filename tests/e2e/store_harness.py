"""What the memory-store suites (test_store_server.py, test_store_cli.py) share: the fixture
models they run (converted and quantized here from tests/fixtures), a fresh database per test on
either backend (a SQLite file, or a database of one real PostgreSQL server started here), `clara
memory` runs, exports decoded, and independent truths (`clara tokenize`, `clara ask`)."""

import base64
import json
import os
import subprocess
import tempfile

import numpy as np

from harness import CLARA, FIXTURES
from pg_harness import PostgresServer
import gen_fixtures as gf

OUT = tempfile.mkdtemp(prefix="clara-store-test-")
BACKENDS = ("sqlite", "postgresql")
_pg = None
_models = {}
_n_db = [0]


def pg():
    global _pg
    if _pg is None:
        _pg = PostgresServer()
    return _pg


def new_db(kind, name):
    """A fresh, empty store: a SQLite file path, or the URL of a new PostgreSQL database."""
    _n_db[0] += 1
    name = "%s_%d" % (name, _n_db[0])
    if kind == "sqlite":
        return os.path.join(OUT, name + ".db")
    p = pg()
    p._psql("postgres", "CREATE DATABASE %s" % name)
    return "postgresql://%s@127.0.0.1:%d/%s" % (p.user, p.port, name)


def model(name):
    """Fixture GGUFs: 'instruct' (instruct16, f32: no query reasoner), 'e2e' (e2e16, f32: one),
    'instruct_q8' (the same checkpoint as 'instruct', q8_0: same shape, another fingerprint)."""
    if name in _models:
        return _models[name]
    gf.ensure(FIXTURES)
    path = os.path.join(OUT, name + ".gguf")
    if name == "instruct_q8":
        src = model("instruct")
        p = subprocess.run([CLARA, "quantize", "--quiet", src, path, "q8_0"], capture_output=True,
                           text=True, timeout=300)
    else:
        var = {"instruct": "instruct16", "e2e": "e2e16"}[name]
        p = subprocess.run([CLARA, "convert", "--base", os.path.join(FIXTURES, "base"), "--clara",
                            os.path.join(FIXTURES, var), "--out", path, "--type", "f32",
                            "--quiet"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    _models[name] = path
    return path


def fingerprint(m):
    p = subprocess.run([CLARA, "info", "--fingerprint", m], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def memory(args, db, stdin=None, timeout=300):
    """(exit status, stdout, stderr) of `clara memory ARGS --db DB`."""
    p = subprocess.run([CLARA, "memory"] + list(args) + ["--db", db], input=stdin,
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def export(db, collection=None):
    """The exported lines (strings) of a store, in export order."""
    args = ["export"] + (["--collection", collection] if collection else [])
    rc, out, err = memory(args, db)
    assert rc == 0, err
    return [line for line in out.splitlines() if line]


def vectors_of(line, fp=None):
    """{fingerprint: (dtype, float64 array [chunks, n_mem, n_embd])} of an exported line."""
    j = json.loads(line) if isinstance(line, str) else line
    out = {}
    for v in j["vectors"]:
        dt = np.dtype("<f2") if v["dtype"] == "f16" else np.dtype("<f4")
        a = np.stack([np.frombuffer(base64.b64decode(d), dtype=dt) for d in v["data"]])
        out[v["fingerprint"]] = (v["dtype"], a.reshape(len(v["data"]), v["n_mem"],
                                                       v["n_embd"]).astype(np.float64))
    return out if fp is None else out.get(fp)


def decode_vectors(obj):
    """The vectors object of /v1/compress as a float64 array [docs, n_mem, n_embd]."""
    dt = np.dtype("<f2") if obj["dtype"] == "f16" else np.dtype("<f4")
    return np.frombuffer(base64.b64decode(obj["data"]), dtype=dt).reshape(obj["shape"]).astype(
        np.float64)


def n_tokens(m, texts):
    """Token counts of each text on its own (`clara tokenize`, one process)."""
    path = os.path.join(OUT, "tok.jsonl")
    with open(path, "w") as f:
        for t in texts:
            f.write(json.dumps(t) + "\n")
    p = subprocess.run([CLARA, "tokenize", "--model", m, "--input-file", path],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [len(json.loads(line)["ids"]) for line in p.stdout.splitlines()]


def decode_prefixes(m, ids):
    """The decoded text of ids[:j] for j = 0..len(ids)."""
    path = os.path.join(OUT, "dec.jsonl")
    with open(path, "w") as f:
        for j in range(len(ids) + 1):
            f.write(json.dumps(ids[:j]) + "\n")
    p = subprocess.run([CLARA, "tokenize", "--model", m, "--decode", "--input-file", path],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [json.loads(line)["text"] for line in p.stdout.splitlines()]


def ask_ref(m, docs, query, mnt):
    """`clara ask --json --dump-logits` (f32 compression in process): answer, ids, top2_gaps."""
    args = [CLARA, "ask", "--model", m, "--json", "--dump-logits", "--threads", "2", "--query",
            query, "--max-new-tokens", str(mnt)]
    for d in docs:
        args += ["--doc", d]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def agrees_near_tie(m, got_text, ref, near_tie=0.05):
    """docs/PRECISION.md's rule for f16: the generated text equals the f32 one, or first departs
    from it at a step where the f32 run's top-2 logit gap is below the near-tie threshold. The
    step is the longest prefix of the f32 ids whose decoded text starts got_text. Returns
    (identical, agrees, step)."""
    if got_text == ref["answer"]:
        return True, True, None
    pre = decode_prefixes(m, ref["ids"])
    j = max(i for i, t in enumerate(pre) if got_text.startswith(t))
    return False, j < len(ref["top2_gaps"]) and ref["top2_gaps"][j] < near_tie, j


PASSAGES = [
    "The lighthouse keeper lit the lamp every evening at dusk before the fishing boats came home.",
    "Marie planted tomatoes, basil and three rows of beans in the garden behind the school.",
    "The train to the mountains leaves at seven and stops at every village along the river.",
    "Our dog Max likes to chase the red ball across the park until he is too tired to run.",
    "The museum opened a new hall of old maps, compasses and ship logs from the northern seas.",
    "Grandfather repaired clocks in a small shop near the bridge for more than forty years.",
]


def long_text(n_words, seed=0):
    rng = np.random.default_rng(seed)
    words = ["river", "stone", "garden", "lamp", "engine", "window", "market", "winter",
             "bridge", "letter", "music", "harbour", "forest", "candle", "island", "tower"]
    return " ".join(words[i] + ("." if k % 13 == 12 else "")
                    for k, i in enumerate(rng.integers(0, len(words), n_words)))
