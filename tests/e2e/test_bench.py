"""`clara bench`: random-weight models from `--generate` (two files, the converter's layout: a base
loadable as llama.cpp's `llama` model and a CLaRa add-on), documents of exactly the requested
token count (checked with `clara tokenize` and with the independent numpy reader's BPE), the JSON
contract bench/peer.sh reads, and one-line errors for bad options."""

import json
import os
import subprocess
import tempfile

from harness import CLARA, ROOT, check, report, run
import readers as rd

OUT = tempfile.mkdtemp(prefix="clara_bench_")
TYPES = ("q4_k_m", "f16")
LAYER = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
         "ffn_down")


def clara(*args):
    return subprocess.run([CLARA] + list(args), capture_output=True, text=True)


def generate(t, seed="1", sub=None):
    d = os.path.join(OUT, sub or t)
    p = clara("bench", "--generate", "tiny", "--type", t, "--out", d, "--seed", seed, "--quiet")
    assert p.returncode == 0, p.stderr
    return os.path.join(d, "base.gguf"), os.path.join(d, "clara.gguf")


def bench_json(*args):
    p = clara("bench", "--json", "--reps", "1", "--batches", "1,2", "--threads", "1",
              "--no-roofline", "--quiet", *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_generated_files():
    for t in TYPES:
        base, addon = generate(t)
        for f in (base, addon):
            p = clara("info", "--no-tensors", f)
            check(p.returncode == 0 and "GGUF v3" in p.stdout, "%s: clara info: %s" % (f, p.stderr))
        b, a = rd.read_gguf(base), rd.read_gguf(addon)
        n = b.kv["llama.block_count"]
        want = {"token_embd.weight", "output.weight", "output_norm.weight"}
        want |= {"blk.%d.%s.weight" % (i, x) for i in range(n) for x in LAYER}
        check(set(b.tensors) == want, "%s base: llama.cpp tensor set, extra %s" % (
            t, sorted(set(b.tensors) - want)[:3]))
        check(not [k for k in b.kv if k.startswith("clara.")], "%s base: no clara.* keys" % t)
        check(b.kv["general.architecture"] == "llama" and len(b.kv["tokenizer.ggml.tokens"]) == 1000,
              "%s base: llama architecture, base vocabulary" % t)
        check(not [x for x in a.tensors if x.startswith("blk.")] and a.kv.get("clara.addon") is True,
              "%s add-on: no base blocks, marked as add-on" % t)
        lora = [x for x in a.tensors if x.startswith("clara.encoder_adapter.")]
        check(len(lora) == 2 * 7 * n and a.kv["clara.adapter.encoder_adapter.rank"] == 8,
              "%s add-on: encoder LoRA on all 7 linears, rank 8 (%d tensors)" % (t, len(lora)))
        check(len(a.kv["tokenizer.ggml.tokens"]) == 1019 and a.kv["clara.n_mem"] == 16,
              "%s add-on: 1000 + 19 CLaRa tokens, compression 16" % t)
        p = clara("ask", "--base", base, "--clara", addon, "--doc", "Paris is in France.",
                  "--query", "Where is Paris?", "--max-new-tokens", "4", "--json")
        ans = json.loads(p.stdout) if p.returncode == 0 else {}
        check(len(ans.get("ids", [])) >= 1 and ans.get("prompt_tokens", 0) > 0,
              "%s: the pair answers (%s)" % (t, p.stderr.strip()[-200:]))
    big = rd.read_gguf(os.path.join(OUT, "q4_k_m", "base.gguf"))
    check(big.tensors["blk.0.ffn_gate.weight"].type_name == "Q4_K", "q4_k_m: the mix is applied")
    check(big.kv["general.file_type"] == 15, "q4_k_m: llama.cpp file type 15")


def test_deterministic_seed():
    same = generate("q4_0", "7", "seed7a")[0]
    again = generate("q4_0", "7", "seed7b")[0]
    other = generate("q4_0", "8", "seed8")[0]
    data = [open(f, "rb").read() for f in (same, again, other)]
    check(data[0] == data[1], "the same seed gives the same file")
    check(data[0] != data[2] and len(data[0]) == len(data[2]), "another seed, other weights")


def token_counts(addon, docs_file):
    p = clara("tokenize", "--model", addon, "--input-file", docs_file)
    assert p.returncode == 0, p.stderr
    return [len(json.loads(line)["ids"]) for line in p.stdout.splitlines()]


def test_bench_json():
    base, addon = os.path.join(OUT, "q4_k_m", "base.gguf"), os.path.join(OUT, "q4_k_m", "clara.gguf")
    docs = os.path.join(OUT, "docs.jsonl")
    j = bench_json("--base", base, "--clara", addon, "--save-docs", docs, "--gen-tokens", "6")
    check(j["weight_type"] == "q4_k_m" and j["isa"] in ("ref", "avx2", "avx512") and
          j["model"] == "%s + %s" % (base, addon), "model keys: %s" % {k: j.get(k) for k in ("model", "weight_type", "isa")})
    check(j["machine"] == {"threads": []}, "--no-roofline: no machine figures")
    cpu = j.get("cpu") or {}
    params = cpu.get("params") or {}
    check(cpu.get("kind") in ("zen4", "zen5", "intel-avx512", "intel-avx2", "other") and
          cpu.get("isa") == j["isa"] and cpu.get("l2_kib", 0) > 0 and
          params.get("pf_bytes", {}).get("env") == "CLARA_PF_BYTES" and
          all(p.get("source", "").startswith("default for ") for p in params.values()),
          "cpu: kind, caches and the parameters with their source: %r" % cpu)
    res = j["results"]
    check(len(res) == 1 and res[0]["threads"] == 1 and [c["batch"] for c in res[0]["compress"]] == [1, 2],
          "one thread count, batches 1 and 2")
    counts = token_counts(addon, docs)
    # the encoder row is <ENC><s>text</s>: three ids besides the text's
    check(len(counts) == j["docs"]["count"] == 5 and all(n + 3 == 256 for n in counts),
          "documents are 256 tokens by `clara tokenize`: %s" % counts)
    check(j["docs"]["tokens"] == [256] * 5, "reported per-document tokens")
    tok_json = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "tokenizer.json")
    if rd.read_gguf(addon).kv["tokenizer.ggml.tokens"][:1000] == list(
            sorted(json.load(open(tok_json))["model"]["vocab"].items(), key=lambda kv: kv[1])[i][0]
            for i in range(1000)):
        texts = [json.loads(line) for line in open(docs, encoding="utf-8")]
        ind = [len(rd.hf_encode(tok_json, t)) for t in texts]
        check(ind == counts, "independent BPE agrees: %s vs %s" % (ind, counts))
    for c in res[0]["compress"]:
        check(c["mean_tokens"] == 256 and c["docs_per_s"] > 0 and
              abs(c["tokens_per_s"] - 256 * c["docs_per_s"]) < 1e-6 * c["tokens_per_s"] and
              c["roofline_pct"] is None, "compress figures: %s" % c)
    a = res[0]["answer"]
    check(a["gen_tokens"] == 6 and a["prompt_tokens"] > 5 * 16 and a["prefill_ms"] > 0 and
          a["decode_tok_s"] > 0 and a["decode_roofline_pct"] is None, "answer figures: %s" % a)


def test_single_file_and_generated_text():
    demo = os.path.join(os.path.dirname(CLARA), "demo", "clara-demo.gguf")
    j = bench_json("--model", demo, "--generated-text", "--doc-tokens", "100")
    check(j["docs"]["source"] == "generated" and j["docs"]["tokens"] == [100] * 5 and
          j["results"][0]["compress"][0]["mean_tokens"] == 100, "generated text, 100-token documents")


def test_roofline():
    base, addon = os.path.join(OUT, "f16", "base.gguf"), os.path.join(OUT, "f16", "clara.gguf")
    p = clara("bench", "--base", base, "--clara", addon, "--json", "--reps", "1", "--batches", "1",
              "--threads", "1", "--gen-tokens", "2", "--quiet")
    j = json.loads(p.stdout) if p.returncode == 0 else {}
    m = j.get("machine", {}).get("threads", [{}])[0]
    check(m.get("threads") == 1 and m.get("mem_read_gbs", 0) > 0 and m.get("f32_gflops", 0) > 0,
          "machine limits measured: %s %s" % (m, p.stderr.strip()[-200:]))
    r = j.get("results", [{}])[0]
    check(r.get("compress", [{}])[0].get("roofline_pct", 0) > 0 and
          r.get("answer", {}).get("decode_roofline_tok_s", 0) > 0, "percentages are computed")


def test_parts():
    """--parts compress / answer time only that part (bench/peer.sh pairs each with llama.cpp's)."""
    base, addon = os.path.join(OUT, "q4_k_m", "base.gguf"), os.path.join(OUT, "q4_k_m", "clara.gguf")
    c = bench_json("--base", base, "--clara", addon, "--parts", "compress")["results"][0]
    check([x["batch"] for x in c["compress"]] == [1, 2] and c["answer"] is None,
          "--parts compress: batches 1 and 2, answer null: %s" % c)
    a = bench_json("--base", base, "--clara", addon, "--parts", "answer", "--gen-tokens", "4")
    r = a["results"][0]
    check(r["compress"] == [] and r["answer"]["gen_tokens"] == 4 and r["answer"]["decode_tok_s"] > 0,
          "--parts answer: no compress rows, an answer: %s" % r)
    p = clara("bench", "--base", base, "--clara", addon, "--reps", "1", "--threads", "1",
              "--no-roofline", "--quiet", "--parts", "answer", "--gen-tokens", "2")
    check(p.returncode == 0 and "answer (5 documents" in p.stdout and "compress " not in p.stdout,
          "--parts answer table: %r" % p.stdout[-400:])


def expect_error(args, words):
    p = clara("bench", *args)
    lines = p.stderr.strip().splitlines()
    check(p.returncode == 1 and len(lines) == 1 and lines[0].startswith("clara bench: error: ") and
          all(w in lines[0] for w in words), "%s: exit %d, stderr %r" % (args, p.returncode, p.stderr))


def test_bad_options():
    base, addon = os.path.join(OUT, "f16", "base.gguf"), os.path.join(OUT, "f16", "clara.gguf")
    pair = ["--base", base, "--clara", addon]
    expect_error(pair + ["--threads", "0"], ["--threads", "'0'"])
    expect_error(pair + ["--batches", "1,x"], ["--batches"])
    expect_error(pair + ["--reps", "0"], ["--reps"])
    expect_error(pair + ["--gen-tokens", "1"], ["--gen-tokens"])
    expect_error(pair + ["--doc-tokens", "300"], ["--doc-tokens", "259"])
    expect_error(pair + ["--frobnicate"], ["--frobnicate"])
    expect_error(pair + ["--parts", "answer,answer"], ["--parts", "answer,answer"])
    expect_error(pair + ["--parts", "decode"], ["--parts", "decode"])
    expect_error(pair + ["--parts", ""], ["--parts"])
    expect_error(["--base", base], ["--model", "--clara"])
    expect_error(["--model", os.path.join(OUT, "missing.gguf")], ["missing.gguf"])
    expect_error(["--generate", "3b", "--type", "f16", "--out", OUT], ["3b"])
    expect_error(["--generate", "tiny", "--type", "q9", "--out", os.path.join(OUT, "q9")], ["q9"])
    expect_error(["--generate", "tiny", "--out", OUT], ["--type"])
    expect_error(["--generate", "tiny", "--type", "f16", "--out", base], ["base.gguf"])


run(test_generated_files)
run(test_deterministic_seed)
run(test_bench_json)
run(test_single_file_and_generated_text)
run(test_roofline)
run(test_parts)
run(test_bad_options)
report("test_bench")
