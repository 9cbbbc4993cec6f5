"""`clara tokenize` end to end (spec §3) against the independent Python reference tokenizer
(tests/reference/ref_tokenizer.py, itself validated against sentencepiece): for the legacy-flavour
compression-16 model (instruct16), the different_mem_tokens=false compression-128 model
(nosep128) and a Metaspace-flavour base (prepend_scheme "first"), every passage and question of
the QA data set plus edge cases encode to the reference's ids, and those ids (and random id
lists) decode to the reference's text. Also the CLI's error paths."""

import atexit
import json
import os
import random
import shutil
import subprocess
import tempfile

from harness import CLARA, FIXTURES, check, report, run
import gen_fixtures as gf
import ref_tokenizer as rt
import tok_inputs as ti

gf.ensure(FIXTURES)
OUT = tempfile.mkdtemp(prefix="clara_tok_")
atexit.register(shutil.rmtree, OUT, True)
BASE = os.path.join(FIXTURES, "base")



def ms_always_split(j):
    j["pre_tokenizer"].update(prepend_scheme="always", split=True)


def ms_never(j):
    j["pre_tokenizer"]["prepend_scheme"] = "never"


def legacy_no_prepend(j):
    j["normalizer"]["normalizers"] = [n for n in j["normalizer"]["normalizers"] if n["type"] != "Prepend"]


LEGACY = os.path.join(ti.TOKDIR, "tokenizer.json")
META = os.path.join(ti.TOKDIR, "tokenizer-metaspace.json")
# (name, base tokenizer.json, edit of it (None: the fixture's base as is), CLaRa variant)
VARIANTS = [
    ("instruct16", LEGACY, None, "instruct16"),
    ("nosep128", LEGACY, None, "nosep128"),
    ("metaspace16", META, lambda j: None, "instruct16"),
    ("ms_always_split", META, ms_always_split, "instruct16"),
    ("ms_never", META, ms_never, "nosep128"),
    ("legacy_no_prepend", LEGACY, legacy_no_prepend, "instruct16"),
]
INPUTS = None


def inputs_for(specials):
    return ti.passages() + ti.edge_cases(specials)


def reference(tok_json, variant):
    tok = rt.load_tokenizer(tok_json)
    cfg = json.load(open(os.path.join(FIXTURES, variant, "config.json")))
    specials = ti.clara_tokens(cfg)
    ids = tok.add_special_tokens(specials)
    return tok, specials, ids


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def check_variant(name, tok_json, edit, variant):
    base = BASE
    if edit is not None:
        base = ti.base_with(OUT, "base_" + name, tok_json, edit)
        tok_json = os.path.join(base, "tokenizer.json")
    model = ti.convert(base, os.path.join(FIXTURES, variant), OUT, name)
    ref, specials, special_ids = reference(tok_json, variant)
    texts = inputs_for(specials)
    check(len(texts) >= 500 or not ti.passages(), "%s: %d inputs" % (name, len(texts)))
    rc, outs, err = ti.run_batch(model, texts)
    check(rc == 0 and len(outs) == len(texts), "%s: tokenize --input-file rc %d: %s" % (name, rc, err))
    if rc != 0:
        return
    bad = 0
    for text, out in zip(texts, outs):
        want = ref.encode(text)
        if out["ids"] != want:
            bad += 1
            if bad <= 5:
                i = first_diff(out["ids"], want)
                check(False, "%s: %r: ids differ at %d: %s vs ref %s" % (
                    name, text[:80], i, out["ids"][i:i + 8], want[i:i + 8]))
    check(bad == 0, "%s: %d of %d inputs encode differently from the reference" % (name, bad, len(texts)))
    print("%s: %d inputs, %d identical to the reference" % (name, len(texts), len(texts) - bad))
    # each CLaRa token alone is its id (spec §3.1: consecutive from the base vocabulary)
    rc, single, _ = ti.run_batch(model, specials)
    check(rc == 0 and [o["ids"] for o in single] == [[i] for i in special_ids],
          "%s: CLaRa tokens encode to %s" % (name, special_ids))
    check_decode(name, model, ref, [o["ids"] for o in outs], texts)


def check_decode(name, model, ref, id_lists, texts):
    rnd = random.Random(99)
    n_vocab = ref.size()
    byte_ids = [ref.vocab["<0x%02X>" % b] for b in range(256)]
    extra = []
    for _ in range(300):  # random ids over the whole vocabulary, specials included
        extra.append([rnd.randrange(n_vocab) for _ in range(rnd.randint(0, 30))])
    for _ in range(200):  # byte runs, valid and invalid UTF-8, mixed with pieces
        extra.append([rnd.choice(byte_ids) if rnd.random() < 0.8 else rnd.randrange(n_vocab)
                      for _ in range(rnd.randint(1, 12))])
    lists = id_lists + extra
    rc, outs, err = ti.run_batch(model, lists, decode=True)
    check(rc == 0 and len(outs) == len(lists), "%s: decode --input-file rc %d: %s" % (name, rc, err))
    if rc != 0:
        return
    bad = 0
    for ids, out in zip(lists, outs):
        want = ref.decode(ids, skip_special_tokens=True)
        if out["text"] != want:
            bad += 1
            if bad <= 5:
                check(False, "%s: decode %s: %r vs ref %r" % (name, ids[:12], out["text"][:60], want[:60]))
    check(bad == 0, "%s: %d of %d id lists decode differently from the reference" % (name, bad, len(lists)))
    print("%s: %d id lists, %d decode identically" % (name, len(lists), len(lists) - bad))


def test_variants():
    for v in VARIANTS:
        check_variant(*v)


def test_spec_examples():
    """Spec §3.2/§7 worked shapes on the fixture vocabulary: the ▁ after an added token."""
    model = os.path.join(OUT, "instruct16.gguf")
    ref, _, ids = reference(os.path.join(ti.TOKDIR, "tokenizer.json"), "instruct16")
    rc, outs, _ = ti.run_batch(model, ["<ENC><s>Paris</s>", "<SEP>\n\nQ"])
    check(rc == 0, "spec examples ran")
    if rc:
        return
    paris = ref.encode_segment("Paris")  # "▁Paris" on its own
    check(outs[0]["ids"] == [ids[-2], 1] + paris + [2], "<ENC><s>Paris</s> = %s" % outs[0]["ids"])
    lone = ref.vocab[ti.SPACE_MARK]
    check(outs[1]["ids"][:4] == [ids[-1], lone, ref.vocab["<0x0A>"], ref.vocab["<0x0A>"]],
          "<SEP>\\n\\n starts with a lone ▁: %s" % outs[1]["ids"])


def cli(args, **kw):
    return subprocess.run([CLARA, "tokenize"] + args, capture_output=True, **kw)


def test_cli_errors():
    model = os.path.join(OUT, "instruct16.gguf")
    p = cli(["--model", model, "--text", b"ab\xffcd"])
    err = p.stderr.decode()
    check(p.returncode == 1 and "byte offset 2" in err and err.count("\n") == 1,
          "invalid UTF-8 rejected with its offset: rc %d %r" % (p.returncode, err))
    p = cli(["--model", model, "--text", b"\xed\xa0\x80"])  # a UTF-8-encoded surrogate
    check(p.returncode == 1, "surrogate rejected")
    p = cli(["--model", os.path.join(OUT, "missing.gguf"), "--text", "x"])
    err = p.stderr.decode()
    check(p.returncode == 1 and "missing.gguf" in err and err.count("\n") == 1,
          "missing model: rc %d %r" % (p.returncode, err))
    p = cli(["--model", os.path.join(FIXTURES, "base", "config.json"), "--text", "x"])
    check(p.returncode == 1, "non-GGUF model rejected")
    p = cli(["--model", model, "--decode", "--ids", "1,999999"])
    check(p.returncode == 1 and b"999999" in p.stderr, "out-of-range id rejected")
    p = cli(["--model", model, "--text", "Hi <s>", "--json"])
    check(p.returncode == 0 and json.loads(p.stdout) == {"ids": json.loads(p.stdout)["ids"]}
          and p.stdout.decode().startswith('{"ids":['), "--json output %r" % p.stdout)
    p = cli(["--model", model, "--decode", "--ids", ",".join(map(str, json.loads(
        cli(["--model", model, "--text", "Hi there", "--json"]).stdout)["ids"]))])
    check(p.returncode == 0 and p.stdout == b"Hi there\n", "decode round trip %r" % p.stdout)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write('"ok"\n42\n')
    p = cli(["--model", model, "--input-file", f.name])
    check(p.returncode == 1 and b":2:" in p.stderr, "bad input line named: %r" % p.stderr)
    os.unlink(f.name)
    p = cli(["--model", model])
    check(p.returncode == 2, "usage error")
    # --threads is taken as by every model command (the README says so)
    p = cli(["--model", model, "--text", "Hi there", "--json", "--threads", "2"])
    q = cli(["--model", model, "--text", "Hi there", "--json"])
    check(p.returncode == 0 and p.stdout == q.stdout, "--threads 2 accepted: %r" % p.stderr)
    for bad in ["0", "x", ""]:
        p = cli(["--model", model, "--text", "x", "--threads", bad])
        check(p.returncode == 2 and b"--threads" in p.stderr, "--threads %r refused" % bad)


run(test_variants)
run(test_spec_examples)
run(test_cli_errors)
report("test_tokenizer.py")
