"""Two-file mode: a base model GGUF in llama.cpp's layout (`clara convert --base-only`) plus a
CLaRa add-on (`--addon-only`) must give exactly the outputs of the equivalent single file; the
base file must have the keys and tensors llama.cpp's `llama` loader reads (public GGUF spec);
mismatched pairs are refused with a message saying what differs."""

import json
import os
import struct
import subprocess
import tempfile

from harness import CLARA, FIXTURES, check, report, run
import gen_fixtures as gf
import readers as rd

OUT = tempfile.mkdtemp(prefix="clara_two_file_")
BASE = os.path.join(FIXTURES, "base")


def convert(out, *args):
    p = subprocess.run([CLARA, "convert", "--base", BASE, "--out", out, "--type", "f32", "--quiet"] +
                       list(args), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return out


def run_json(args):
    """Output without the wall-clock timings (which differ from run to run)."""
    p = subprocess.run([CLARA] + args + ["--json", "--dump-logits"], capture_output=True, text=True)
    out = json.loads(p.stdout) if p.returncode == 0 else None
    if out:
        out.pop("timings", None)
    return out, p.stderr


def test_pair_equals_single_file():
    gf.ensure(FIXTURES)
    base = convert(os.path.join(OUT, "base.gguf"), "--base-only")
    for var in ("e2e16", "instruct128", "nosep128"):
        single = convert(os.path.join(OUT, var + ".gguf"), "--clara", os.path.join(FIXTURES, var))
        addon = convert(os.path.join(OUT, var + ".addon.gguf"), "--clara", os.path.join(FIXTURES, var),
                        "--addon-only")
        docs = ["--doc", "The Eiffel tower is in Paris.", "--doc", "Berlin is in Germany.",
                "--doc", "Rome is old.", "--doc", "Oslo is cold.", "--doc", "Lima is in Peru."]
        cmds = [["ask", "--query", "Where is the tower?", "--max-new-tokens", "8"] + docs,
                ["paraphrase", "--template", "2", "--max-new-tokens", "6"] + docs[:4]]
        if var == "e2e16":
            cmds.append(["retrieve", "--query", "Which city is cold?", "--max-new-tokens", "6"] + docs)
        for c in cmds:
            a, ea = run_json(c + ["--model", single])
            b, eb = run_json(c + ["--base", base, "--clara", addon])
            check(a is not None and a == b, "%s %s: single %s vs pair %s (%s)" % (
                var, c[0], str(a)[:80], str(b)[:80], (ea + eb).strip()[-200:]))
        g = rd.read_gguf(addon)
        check(not [n for n in g.tensors if n.startswith("blk.")], "%s: add-on holds no base blocks" % var)
        check(g.kv.get("clara.addon") is True, "%s: add-on is marked" % var)


def test_base_file_layout():
    """The keys and tensors llama.cpp's `llama` architecture loader requires (GGUF spec, llama.cpp
    naming): architecture, hyperparameters, tokenizer arrays, and per-layer tensors."""
    base = os.path.join(OUT, "base.gguf")
    g = rd.read_gguf(base)
    cfg = json.load(open(os.path.join(BASE, "config.json")))
    tok = json.load(open(os.path.join(BASE, "tokenizer.json")))
    kv = g.kv
    want = {"general.architecture": "llama", "llama.block_count": cfg["num_hidden_layers"],
            "llama.embedding_length": cfg["hidden_size"], "llama.feed_forward_length": cfg["intermediate_size"],
            "llama.attention.head_count": cfg["num_attention_heads"],
            "llama.attention.head_count_kv": cfg["num_key_value_heads"],
            "llama.context_length": cfg["max_position_embeddings"], "tokenizer.ggml.model": "llama",
            "llama.rope.dimension_count": cfg["hidden_size"] // cfg["num_attention_heads"]}
    bad = [k for k, v in want.items() if kv.get(k) != v]
    check(not bad, "base keys differ: %s" % bad)
    n_vocab = len(tok["model"]["vocab"])
    for k in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        check(len(kv.get(k, [])) == n_vocab, "%s has %d entries (vocab %d)" % (k, len(kv.get(k, [])), n_vocab))
    check(g.kv_types["llama.rope.freq_base"] == 6 and g.kv_types["llama.attention.layer_norm_rms_epsilon"] == 6,
          "rope base / rms eps are f32 values")
    check(not [k for k in kv if k.startswith("clara.")], "no clara.* keys in a base file")
    names = {"token_embd.weight", "output.weight", "output_norm.weight"}
    for i in range(cfg["num_hidden_layers"]):
        names |= {"blk.%d.%s.weight" % (i, n) for n in (
            "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
    check(set(g.tensors) == names, "tensor names: extra %s missing %s" % (
        sorted(set(g.tensors) - names)[:4], sorted(names - set(g.tensors))[:4]))
    H, V = cfg["hidden_size"], n_vocab
    check(g.tensors["token_embd.weight"].dims == (H, V) and g.tensors["output.weight"].dims == (H, V),
          "embedding shapes are [n_embd, n_vocab] (ne order)")
    check(g.tensors["blk.0.ffn_down.weight"].dims == (cfg["intermediate_size"], H), "ffn_down is [n_ff, n_embd]")


def patched_block_count(src, dst, value):
    """Copy of a GGUF with llama.block_count rewritten (its u32 value follows the key and type)."""
    data = bytearray(open(src, "rb").read())
    key = b"llama.block_count"
    at = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key)
    assert struct.unpack_from("<I", data, at)[0] == 4  # GGUF type u32
    struct.pack_into("<I", data, at + 4, value)
    open(dst, "wb").write(bytes(data))
    return dst


def expect_refusal(name, args, words):
    p = subprocess.run([CLARA, "ask", "--query", "q", "--doc", "d"] + args, capture_output=True, text=True)
    check(p.returncode == 1 and all(w in p.stderr for w in words),
          "%s: exit %d, stderr %r (want %s)" % (name, p.returncode, p.stderr.strip(), words))


def test_mismatches_are_refused():
    base = os.path.join(OUT, "base.gguf")
    addon = os.path.join(OUT, "e2e16.addon.gguf")
    single = os.path.join(OUT, "e2e16.gguf")
    wrong = patched_block_count(base, os.path.join(OUT, "base-3-layers.gguf"), 3)
    expect_refusal("layer count", ["--base", wrong, "--clara", addon], ["llama.block_count is 3 in the base, 2"])
    expect_refusal("vocabulary", ["--base", single, "--clara", addon], ["1019 tokens", "1000"])
    expect_refusal("add-on alone", ["--model", addon], ["add-on", "--base"])
    expect_refusal("full file as add-on", ["--base", base, "--clara", single], ["not a CLaRa add-on"])
    expect_refusal("base alone", ["--model", base], ["no CLaRa metadata"])


run(test_pair_equals_single_file)
run(test_base_file_layout)
run(test_mismatches_are_refused)
report("test_two_file")
