"""`clara tokenize` against a real peer: Hugging Face's own JavaScript tokenizer implementation
(@huggingface/tokenizers, pinned below; the tokenizer of transformers.js) run by
tests/peer/peer_tokenize.mjs on each fixture's Hugging Face tokenizer.json with CLaRa's added
tokens. Every passage/question of the QA data set plus the edge cases of tok_inputs.py must encode
to identical ids, and our decodes must equal the peer's.

The npm package is installed into BUILD/peer when missing. Without node/npm or registry access
the suite prints SKIP with the reason and counts nothing (neither passed nor failed)."""

import atexit
import json
import os
import random
import shutil
import subprocess
import tempfile

from harness import BUILD, FIXTURES, ROOT, check, report, run
import gen_fixtures as gf
import tok_inputs as ti

PKG, VERSION = "@huggingface/tokenizers", "0.2.0"
PEER_DIR = os.path.join(BUILD, "peer")
MODULES = os.path.join(PEER_DIR, "node_modules")
SCRIPT = os.path.join(ROOT, "tests", "peer", "peer_tokenize.mjs")
OUT = tempfile.mkdtemp(prefix="clara_tokpeer_")
atexit.register(shutil.rmtree, OUT, True)


def skip(reason):
    print("=" * 70)
    print("SKIP test_tokenizer_peer.py: %s" % reason)
    print("=" * 70)
    report("test_tokenizer_peer.py")


def ensure_peer():
    """Installs the pinned package into BUILD/peer; returns None or the reason it cannot."""
    if not shutil.which("node"):
        return "node is not installed"
    pj = os.path.join(MODULES, *PKG.split("/"), "package.json")
    if os.path.exists(pj) and json.load(open(pj)).get("version") == VERSION:
        return None
    if not shutil.which("npm"):
        return "npm is not installed"
    os.makedirs(PEER_DIR, exist_ok=True)
    try:
        p = subprocess.run(["npm", "install", "--prefix", PEER_DIR, "--no-save", "--no-audit",
                            "--no-fund", "%s@%s" % (PKG, VERSION)],
                           capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return "npm install %s@%s timed out (registry unreachable?)" % (PKG, VERSION)
    if p.returncode != 0 or not os.path.exists(pj):
        return "npm install %s@%s failed: %s" % (PKG, VERSION, (p.stderr.strip().splitlines() or ["?"])[-1])
    return None


def peer(tok_json, mode, lines):
    path = os.path.join(OUT, "peer_in.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for x in lines:
            f.write(json.dumps(x) + "\n")
    p = subprocess.run(["node", SCRIPT, MODULES, tok_json, mode, path], capture_output=True)
    if p.returncode != 0:
        raise RuntimeError("peer failed: %s" % p.stderr.decode()[-500:])
    return [json.loads(l) for l in p.stdout.decode("utf-8").splitlines()]


def metaspace_json(name, edit=None):
    """tokenizer-metaspace.json (after edit(obj)) with the added tokens of the instruct16
    checkpoint's tokenizer, as the base and the peer's file; returns (base dir, peer json)."""
    base = ti.base_with(OUT, "base_" + name, os.path.join(ti.TOKDIR, "tokenizer-metaspace.json"), edit)
    j = json.load(open(os.path.join(base, "tokenizer.json"), encoding="utf-8"))
    clara = json.load(open(os.path.join(FIXTURES, "instruct16", "tokenizer.json"), encoding="utf-8"))
    have = {a["id"] for a in j["added_tokens"]}
    j["added_tokens"] += [a for a in clara["added_tokens"] if a["id"] not in have]
    path = os.path.join(OUT, "peer-%s.json" % name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    return base, path


def js_divergent(tok_json):
    """Predicate: does an id list hit a documented tokenizers.js difference from the Rust library
    (and spec §3.3)? Its ByteFallback decoder uses a non-fatal TextDecoder per byte run, which
    replaces each maximal invalid subpart by one U+FFFD (Rust: one U+FFFD per byte piece when the
    run is not valid UTF-8) and drops a leading BOM (EF BB BF) of a run. Such lists are compared
    only in the encode direction."""
    j = json.load(open(tok_json, encoding="utf-8"))
    piece = {i: p for p, i in j["model"]["vocab"].items()}
    special = set()
    for a in j["added_tokens"]:
        piece[a["id"]] = a["content"]
        if a.get("special"):
            special.add(a["id"])

    def runs(ids):
        run = []
        for i in ids:
            if i in special:
                continue
            p = piece.get(i, "")
            if len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
                run.append(int(p[3:5], 16))
                continue
            if run:
                yield bytes(run)
            run = []
        if run:
            yield bytes(run)

    def divergent(ids):
        for r in runs(ids):
            if r.startswith(b"\xef\xbb\xbf"):
                return True
            try:
                r.decode("utf-8")
            except UnicodeDecodeError:
                return True
        return False

    return divergent


def compare(name, model, tok_json, variant):
    cfg = json.load(open(os.path.join(FIXTURES, variant, "config.json")))
    texts = ti.passages() + ti.edge_cases(ti.clara_tokens(cfg))
    rc, ours, err = ti.run_batch(model, texts)
    check(rc == 0, "%s: clara tokenize failed: %s" % (name, err))
    theirs = peer(tok_json, "encode", texts)
    check(len(theirs) == len(texts), "%s: peer answered %d of %d" % (name, len(theirs), len(texts)))
    same = sum(1 for a, b in zip(ours, theirs) if a["ids"] == b["ids"])
    for t, a, b in zip(texts, ours, theirs):
        if a["ids"] != b["ids"]:
            print("  differs: %r\n    ours %s\n    peer %s" % (t[:80], a["ids"][:20], b["ids"][:20]))
            break
    print("%s: encode agreement with %s@%s: %d / %d" % (name, PKG, VERSION, same, len(texts)))
    check(same == len(texts), "%s: %d of %d inputs encode differently from the peer"
          % (name, len(texts) - same, len(texts)))
    rnd = random.Random(7)
    n_vocab = len(json.load(open(tok_json, encoding="utf-8"))["model"]["vocab"])
    lists = [o["ids"] for o in ours] + [[rnd.randrange(n_vocab) for _ in range(rnd.randint(0, 30))]
                                        for _ in range(300)]
    divergent = js_divergent(tok_json)
    n_all = len(lists)
    lists = [l for l in lists if not divergent(l)]
    print("%s: %d of %d id lists hit tokenizers.js's TextDecoder byte-run handling (invalid UTF-8 "
          "or a BOM in a <0xXX> run), which differs from Rust tokenizers and spec 3.3; not "
          "compared for decode" % (name, n_all - len(lists), n_all))
    rc, dec, err = ti.run_batch(model, lists, decode=True)
    pdec = peer(tok_json, "decode", lists)
    same = sum(1 for a, b in zip(dec, pdec) if a["text"] == b["text"])
    for ids, a, b in zip(lists, dec, pdec):
        if a["text"] != b["text"]:
            print("  decode differs: %s\n    ours %r\n    peer %r" % (ids[:12], a["text"][:60], b["text"][:60]))
            break
    print("%s: decode agreement: %d / %d" % (name, same, len(lists)))
    check(rc == 0 and same == len(lists), "%s: %d of %d id lists decode differently from the peer"
          % (name, len(lists) - same, len(lists)))


def ms_always_split(j):
    j["pre_tokenizer"].update(prepend_scheme="always", split=True)


def test_peer():
    base = os.path.join(FIXTURES, "base")
    for name, b, tj, var in [
        ("instruct16", base, os.path.join(FIXTURES, "instruct16", "tokenizer.json"), "instruct16"),
        ("nosep128", base, os.path.join(FIXTURES, "nosep128", "tokenizer.json"), "nosep128"),
        ("metaspace16", *metaspace_json("metaspace16"), "instruct16"),
        ("ms_always_split", *metaspace_json("ms_always_split", ms_always_split), "instruct16"),
    ]:
        model = ti.convert(b, os.path.join(FIXTURES, var), OUT, name)
        compare(name, model, tj, var)


if __name__ == "__main__":
    gf.ensure(FIXTURES)
    why = ensure_peer()
    if why:
        skip(why)
    run(test_peer)
    report("test_tokenizer_peer.py")
