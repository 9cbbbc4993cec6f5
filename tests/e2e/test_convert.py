"""`clara convert` end to end on the synthetic checkpoints (tests/fixtures): every tensor of the
output GGUF, read back with the independent Python GGUF reader, equals the source value read with
the independent safetensors/.pth readers — bit-exact for f32 and bf16, exactly rounded for f16 —
after the q/k row permutation computed here the way llama.cpp's converter describes it; metadata
round-trips against the configs and tokenizer files; the permutation is verified by computing one
attention score both ways (HF rotate-half RoPE vs adjacent-pair RoPE on the permuted rows)."""

import json
import os
import subprocess
import tempfile

import numpy as np

from harness import CLARA, FIXTURES, check, report, run
import gen_fixtures as gf
import readers as rd

OUT = tempfile.mkdtemp(prefix="clara_convert_")
BASE = os.path.join(FIXTURES, "base")
LINEARS = [("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
           ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
           ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down")]


def convert(var, typ, base=BASE, extra=()):
    out = os.path.join(OUT, "%s.%s.gguf" % (var, typ))
    cmd = [CLARA, "convert", "--base", base, "--clara", os.path.join(FIXTURES, var),
           "--out", out, "--type", typ, "--quiet"] + list(extra)
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p, out


def hf_to_llama_rows(w, n_head):
    """llama.cpp's q/k layout: per head, view rows as (2, d/2) and transpose to (d/2, 2)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def expect_bits(src, typ):
    """Expected stored values for a source tensor: f32 values, or 16-bit patterns."""
    x = src.f32()
    if typ == "f32":
        return x
    if typ == "bf16":
        return src.data if src.dtype == "BF16" else rd.f32_to_bf16(x)
    return x.astype(np.float16).view(np.uint16)


def stored(g, name):
    a = g.array(name)
    return a.view(np.uint16) if a.dtype == np.float16 else a


def same(a, b):
    return a.shape == b.shape and np.array_equal(np.asarray(a), np.asarray(b))


def load_sources(var):
    cfg = json.load(open(os.path.join(FIXTURES, var, "config.json")))
    base_cfg = json.load(open(os.path.join(BASE, "config.json")))
    return (cfg, base_cfg, rd.read_safetensors_index(BASE),
            rd.read_pth(os.path.join(FIXTURES, var, "decoder_first_last_layers.pth")),
            rd.read_pth(os.path.join(FIXTURES, var, "adapters.pth")))


def check_tensors(var, typ, g):
    cfg, bc, base, tables, adapters = load_sources(var)
    nh, nkv = bc["num_attention_heads"], bc["num_key_value_heads"]
    want = {}  # gguf name -> (expected array, type name)
    mat = typ.upper()
    want["token_embd.weight"] = (expect_bits(tables["model.embed_tokens.weight"], typ), mat)
    want["output.weight"] = (expect_bits(tables["lm_head.weight"], typ), mat)
    want["output_norm.weight"] = (base["model.norm.weight"].f32(), "F32")
    for i in range(bc["num_hidden_layers"]):
        p = "model.layers.%d." % i
        want["blk.%d.attn_norm.weight" % i] = (base[p + "input_layernorm.weight"].f32(), "F32")
        want["blk.%d.ffn_norm.weight" % i] = (base[p + "post_attention_layernorm.weight"].f32(), "F32")
        for hf, gg in LINEARS:
            src = base[p + hf + ".weight"]
            e = expect_bits(src, typ)
            if gg in ("attn_q", "attn_k"):
                e = hf_to_llama_rows(e, nh if gg == "attn_q" else nkv)
            want["blk.%d.%s.weight" % (i, gg)] = (e, mat)
    for ad, sd in adapters.items():
        for i in range(bc["num_hidden_layers"]):
            for hf, gg in LINEARS:
                k = "model.layers.%d.%s.lora_%s.weight"
                if (k % (i, hf, "A")) not in sd:
                    continue
                a = expect_bits(sd[k % (i, hf, "A")], typ)
                b = expect_bits(sd[k % (i, hf, "B")], typ)
                if gg in ("attn_q", "attn_k"):
                    b = hf_to_llama_rows(b, nh if gg == "attn_q" else nkv)
                want["clara.%s.blk.%d.%s.lora_a" % (ad, i, gg)] = (a, mat)
                want["clara.%s.blk.%d.%s.lora_b" % (ad, i, gg)] = (b, mat)
    check(set(g.tensors) == set(want), "%s/%s: tensor set differs: extra %s missing %s" % (
        var, typ, sorted(set(g.tensors) - set(want))[:5], sorted(set(want) - set(g.tensors))[:5]))
    bad = [n for n, (e, t) in want.items()
           if n in g.tensors and (g.tensors[n].type_name != t or not same(stored(g, n), e))]
    check(not bad, "%s/%s: %d tensors differ from the source, e.g. %s" % (var, typ, len(bad), bad[:3]))
    return cfg, bc


def check_metadata(var, g):
    cfg, bc = json.load(open(os.path.join(FIXTURES, var, "config.json"))), \
        json.load(open(os.path.join(BASE, "config.json")))
    tok = json.load(open(os.path.join(BASE, "tokenizer.json")))
    kv = g.kv
    n_mem = cfg["doc_max_length"] // cfg["compr_rate"]
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv_: kv_[1])
    added = (["<MEM%d>" % i for i in range(n_mem)] if cfg["different_mem_tokens"] else ["<MEM>"]) + \
        ["<AE>", "<ENC>", "<SEP>"]
    tokens = [p for p, _ in vocab] + added
    nb = len(vocab)
    expect = {
        "general.architecture": "llama",
        "llama.embedding_length": bc["hidden_size"], "llama.block_count": bc["num_hidden_layers"],
        "llama.feed_forward_length": bc["intermediate_size"],
        "llama.attention.head_count": bc["num_attention_heads"],
        "llama.attention.head_count_kv": bc["num_key_value_heads"],
        "llama.context_length": bc["max_position_embeddings"],
        "llama.rope.dimension_count": bc["hidden_size"] // bc["num_attention_heads"],
        "llama.vocab_size": len(tokens),
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.padding_token_id": 1,
        "tokenizer.ggml.merges": [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]],
        "tokenizer.chat_template": json.load(open(os.path.join(BASE, "tokenizer_config.json")))["chat_template"],
        "clara.compr_rate": cfg["compr_rate"], "clara.doc_max_length": cfg["doc_max_length"],
        "clara.n_mem": n_mem, "clara.sep": cfg["sep"],
        "clara.different_mem_tokens": cfg["different_mem_tokens"],
        "clara.generation_top_k": cfg["generation_top_k"], "clara.training_stage": cfg["training_stage"],
        "clara.pure_inference": cfg["pure_inference"], "clara.lora_r": cfg["lora_r"],
        "clara.mem_token_ids": [nb + (i if cfg["different_mem_tokens"] else 0) for i in range(n_mem)],
        "clara.enc_token_id": tokens.index("<ENC>"), "clara.sep_token_id": tokens.index("<SEP>"),
        "clara.ae_token_id": tokens.index("<AE>"), "clara.tokenizer.normalizer": "legacy",
        "clara.decoder_model_name": cfg["decoder_model_name"],
    }
    bad = [k for k, v in expect.items() if kv.get(k) != v]
    check(not bad, "%s: metadata differs for %s" % (var, [(k, str(kv.get(k))[:60]) for k in bad[:4]]))
    check(abs(kv["llama.rope.freq_base"] - bc["rope_theta"]) == 0, "%s: rope theta" % var)
    check(abs(kv["llama.attention.layer_norm_rms_epsilon"] - np.float32(bc["rms_norm_eps"])) == 0,
          "%s: rms eps" % var)
    types = kv["tokenizer.ggml.token_type"]
    check(types[0] == 2 and types[1] == 3 and types[2] == 3 and types[3] == 6 and types[-1] == 3,
          "%s: token types unk/control/byte: %s %s" % (var, types[:4], types[-1]))
    ids = kv["clara.tokenizer.added_token_ids"]
    check(ids == [0, 1, 2] + list(range(nb, len(tokens))), "%s: added token ids %s" % (var, ids))
    adapters = rd.read_pth(os.path.join(FIXTURES, var, "adapters.pth"))
    check(kv["clara.adapters"] == list(adapters), "%s: adapter list %s" % (var, kv["clara.adapters"]))
    for a in adapters:
        check(kv["clara.adapter.%s.rank" % a] == cfg["lora_r"] and
              kv["clara.adapter.%s.alpha" % a] == 2 * cfg["lora_r"], "%s: rank/alpha of %s" % (var, a))


def test_variants_f32_bf16_f16():
    gf.ensure(FIXTURES)
    for var in gf.VARIANTS:
        for typ in ("f32", "bf16", "f16"):
            p, out = convert(var, typ)
            if not check(p.returncode == 0, "%s/%s: convert failed: %s" % (var, typ, p.stderr.strip())):
                continue
            g = rd.read_gguf(out)
            check(g.kv["general.file_type"] == {"f32": 0, "f16": 1, "bf16": 32}[typ], "file_type")
            check_tensors(var, typ, g)
            if typ == "f32":
                check_metadata(var, g)
            check(not [f for f in os.listdir(OUT) if ".tmp." in f], "temporary file left behind")
            os.remove(out)


def rope_hf(x, pos, theta):
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    c, s = np.cos(pos * inv), np.sin(pos * inv)
    a, b = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def rope_adjacent(x, pos, theta):
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    c, s = np.cos(pos * inv), np.sin(pos * inv)
    a, b = x[..., 0::2], x[..., 1::2]
    y = np.empty_like(x)
    y[..., 0::2] = a * c - b * s
    y[..., 1::2] = b * c + a * s
    return y


def test_qk_permutation_attention_scores():
    """q.k scores from the HF weights with HF RoPE equal those from the GGUF's permuted weights
    with llama.cpp's adjacent-pair RoPE, including the LoRA delta W + 2*B*A."""
    p, out = convert("instruct16", "f32")
    if not check(p.returncode == 0, "convert failed: %s" % p.stderr):
        return
    g = rd.read_gguf(out)
    cfg, bc, base, tables, adapters = load_sources("instruct16")
    H, nh, nkv = bc["hidden_size"], bc["num_attention_heads"], bc["num_key_value_heads"]
    d, theta = H // nh, bc["rope_theta"]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, H))
    enc = adapters["encoder_adapter"]
    for use_lora in (False, True):
        def hf_w(mod):
            w = base["model.layers.1.self_attn.%s.weight" % mod].f32().astype(np.float64)
            if use_lora:
                k = "model.layers.1.self_attn.%s.lora_%s.weight"
                w = w + 2.0 * enc[k % (mod, "B")].f32().astype(np.float64) @ enc[k % (mod, "A")].f32()
            return w

        def gg_w(mod):
            w = g.array("blk.1.%s.weight" % mod).astype(np.float64)
            if use_lora:
                n = "clara.encoder_adapter.blk.1.%s.lora_" % mod
                w = w + 2.0 * g.array(n + "b").astype(np.float64) @ g.array(n + "a")
            return w
        q_hf = (x[0] @ hf_w("q_proj").T).reshape(nh, d)
        k_hf = (x[1] @ hf_w("k_proj").T).reshape(nkv, d)
        q_gg = (x[0] @ gg_w("attn_q").T).reshape(nh, d)
        k_gg = (x[1] @ gg_w("attn_k").T).reshape(nkv, d)
        s_hf = np.array([rope_hf(q_hf[h], 9, theta) @ rope_hf(k_hf[h * nkv // nh], 4, theta) for h in range(nh)])
        s_gg = np.array([rope_adjacent(q_gg[h], 9, theta) @ rope_adjacent(k_gg[h * nkv // nh], 4, theta)
                         for h in range(nh)])
        check(np.allclose(s_hf, s_gg, rtol=1e-9, atol=1e-12), "scores differ (lora=%s): %s vs %s" % (
            use_lora, s_hf[:3], s_gg[:3]))
        # and the unpermuted weights would NOT agree with adjacent-pair RoPE (the test can fail)
        q_raw = (x[0] @ hf_w("q_proj").T).reshape(nh, d)
        k_raw = (x[1] @ hf_w("k_proj").T).reshape(nkv, d)
        s_raw = np.array([rope_adjacent(q_raw[h], 9, theta) @ rope_adjacent(k_raw[h * nkv // nh], 4, theta)
                          for h in range(nh)])
        check(not np.allclose(s_hf, s_raw, rtol=1e-6), "unpermuted rows should give different scores")


def test_partial_adapter_and_warnings():
    p, out = convert("partial16", "f32")
    check(p.returncode == 0, "partial16 converts: %s" % p.stderr)
    check("missing" in p.stderr and "contribute zero" in p.stderr,
          "warning about missing LoRA modules: %r" % p.stderr)
    g = rd.read_gguf(out)
    check("clara.decoder_adapter.blk.1.ffn_gate.lora_a" not in g.tensors and
          "clara.decoder_adapter.blk.0.ffn_gate.lora_a" in g.tensors, "missing modules absent")


def test_mismatched_embedding_copy_warns():
    fx = os.path.join(FIXTURES, "..", "fixtures-mismatch")
    gf.ensure(fx, variants=["instruct16"], mismatch=True)
    out = os.path.join(OUT, "mismatch.gguf")
    p = subprocess.run([CLARA, "convert", "--base", os.path.join(fx, "base"), "--clara",
                        os.path.join(fx, "instruct16"), "--out", out, "--quiet"],
                       capture_output=True, text=True)
    check(p.returncode == 0, "mismatch converts: %s" % p.stderr)
    check("encoder_adapter/model.embed_tokens.weight differs" in p.stderr,
          "warning names the differing copy: %r" % p.stderr)
    check("decoder_adapter/model.embed_tokens.weight" not in p.stderr, "only the changed copy warns")


def test_info_prints_metadata_and_tensors():
    p, out = convert("e2e16", "f16")
    r = subprocess.run([CLARA, "info", out], capture_output=True, text=True)
    check(r.returncode == 0, "info exit %d: %s" % (r.returncode, r.stderr))
    check("general.architecture" in r.stdout and "llama" in r.stdout, "info shows metadata")
    check("clara.query_reasoner_adapter.blk.1.ffn_down.lora_b" in r.stdout, "info shows tensors")
    check("clara.n_mem" in r.stdout, "info shows clara keys")


for t in (test_variants_f32_bf16_f16, test_qk_permutation_attention_scores,
          test_partial_adapter_and_warnings, test_mismatched_embedding_copy_warns,
          test_info_prints_metadata_and_tensors):
    run(t)
report("test_convert")
