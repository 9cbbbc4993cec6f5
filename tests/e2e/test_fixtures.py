"""Self-checks of the synthetic-checkpoint generator (tests/fixtures/gen_fixtures.py) through the
independent readers of tests/reference/readers.py: tensors read back equal to the generator's
arrays, file layouts follow spec §2 (safetensors shards + index, torch zip+pickle with 64-byte
aligned records and only torch globals), tokenizer.json's merges reproduce SentencePiece's ids,
the chat template renders as spec §8.2 says, and CLaRa vocabulary sizes / added-token ids follow
spec §3.1. Also unit-tests the GGUF v3 reader on a hand-assembled file.

Tiny fixtures are generated into $BUILD/fixtures (skipped when fixtures.stamp matches the
generator's hash). Prints "test_fixtures: N passed, N failed"."""

import io
import json
import os
import pickle
import struct
import sys
import time
import traceback
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))

import gen_fixtures as gf  # noqa: E402
import readers as rd  # noqa: E402
import sentencepiece as spm  # noqa: E402
import spm_to_hf  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
FX = os.path.join(ROOT, BUILD, "fixtures") if not os.path.isabs(BUILD) else os.path.join(BUILD, "fixtures")

passed = failed = 0


def check(cond, msg):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", msg)


def run(fn):
    global failed
    try:
        fn()
    except Exception:
        failed += 1
        print("FAIL: %s raised:" % fn.__name__)
        traceback.print_exc(file=sys.stdout)


def ensure_fixtures(out, variants=None, mismatch=False):
    vs = variants or list(gf.VARIANTS)
    want = gf.source_hash(gf.args_key("tiny", 0, vs, mismatch))
    stamp = os.path.join(out, "fixtures.stamp")
    if os.path.exists(stamp) and open(stamp).read().strip() == want:
        return None
    t0 = time.time()
    gf.generate(out, "tiny", 0, vs, mismatch, log=lambda *a: None)
    return time.time() - t0


def dims_tiny():
    return gf.dims("tiny", gf.vocab_size_of(gf.tokenizer_proto("tiny")))


# ------------------------------------------------------------------------------------------------


def test_generation():
    dt = ensure_fixtures(FX)
    if dt is not None:
        check(dt < 20, "tiny generation took %.1f s (limit 20)" % dt)
    check(open(os.path.join(FX, "fixtures.stamp")).read().strip()
          == gf.source_hash(gf.args_key("tiny", 0, list(gf.VARIANTS), False)), "stamp matches")
    for v in ["base"] + list(gf.VARIANTS):
        check(os.path.isdir(os.path.join(FX, v)), "folder %s exists" % v)


def test_bf16_rounding():
    # hand-computed: 1.0 = 0x3F80; 1 + 2^-8 is a tie -> even 0x3F80; 1 + 3*2^-8 tie -> 0x3F82;
    # 1 + 2^-8 + 2^-20 rounds up -> 0x3F81; -2.0 = 0xC000
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -2.0], dtype=np.float32)
    want = [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC000]
    check(list(gf.f32_to_bf16(x)) == want, "generator bf16 RNE")
    check(list(rd.f32_to_bf16(x)) == want, "reader bf16 RNE")
    check(rd.bf16_to_f32(np.array([0x3F80, 0xC000], np.uint16)).tolist() == [1.0, -2.0], "bf16 -> f32")


def test_base():
    d = dims_tiny()
    bdir = os.path.join(FX, "base")
    cfg = json.load(open(os.path.join(bdir, "config.json")))
    want = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 64,
            "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 1e6, "sliding_window": None,
            "max_position_embeddings": 32768, "hidden_act": "silu", "tie_word_embeddings": False,
            "vocab_size": 1000, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}
    for k, v in want.items():
        check(cfg.get(k, "missing") == v, "base config %s = %r (got %r)" % (k, v, cfg.get(k)))
    for k in ("attention_dropout", "initializer_range", "use_cache", "transformers_version"):
        check(k in cfg, "base config has %s" % k)
    gen = json.load(open(os.path.join(bdir, "generation_config.json")))
    check(gen["bos_token_id"] == 1 and gen["eos_token_id"] == 2, "generation_config ids")

    index = json.load(open(os.path.join(bdir, "model.safetensors.index.json")))
    shards = sorted(set(index["weight_map"].values()))
    check(shards == ["model-%05d-of-00003.safetensors" % i for i in (1, 2, 3)], "3 shards named like HF")
    # expected names from spec §2.1
    names = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for i in range(2):
        for m in ("input_layernorm", "post_attention_layernorm"):
            names.add("model.layers.%d.%s.weight" % (i, m))
        for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
            names.add("model.layers.%d.self_attn.%s.weight" % (i, m))
        for m in ("gate_proj", "up_proj", "down_proj"):
            names.add("model.layers.%d.mlp.%s.weight" % (i, m))
    check(set(index["weight_map"]) == names, "weight_map has exactly the spec §2.1 names")
    shapes = {"model.embed_tokens.weight": (1000, 64), "lm_head.weight": (1000, 64),
              "model.norm.weight": (64,), "model.layers.1.self_attn.q_proj.weight": (64, 64),
              "model.layers.1.self_attn.k_proj.weight": (32, 64),
              "model.layers.0.self_attn.v_proj.weight": (32, 64),
              "model.layers.0.mlp.gate_proj.weight": (160, 64),
              "model.layers.0.mlp.down_proj.weight": (64, 160)}
    tensors = rd.read_safetensors_index(bdir)
    for n, s in shapes.items():
        check(tensors[n].shape == s, "%s shape %s" % (n, s))
    total = 0
    for shard in shards:
        buf = open(os.path.join(bdir, shard), "rb").read()
        (hlen,) = struct.unpack_from("<Q", buf)
        check(hlen % 8 == 0, "%s header length multiple of 8" % shard)
        ts, meta = rd.read_safetensors(os.path.join(bdir, shard))
        check(meta == {"format": "pt"}, "%s __metadata__" % shard)
        check(all(t.dtype == "BF16" for t in ts.values()), "%s all BF16" % shard)
        check(all(index["weight_map"][n] == shard for n in ts), "%s tensors match index" % shard)
        total += sum(t.data.nbytes for t in ts.values())
    check(index["metadata"]["total_size"] == total, "index total_size = sum of tensor bytes")
    rnd = gf.Rand(0)
    exp = gf.base_tensors(d, rnd)
    bad = [n for n, (s, p) in exp.items() if not np.array_equal(tensors[n].data, p())]
    check(not bad, "base tensors read back equal (bad: %s)" % bad[:3])
    e = tensors["model.embed_tokens.weight"].f32()
    check(0.015 < float(e.std()) < 0.025, "embedding std ~0.02")
    nrm = tensors["model.norm.weight"].f32()
    check(float(nrm.min()) >= 0.89 and float(nrm.max()) <= 1.11 and float(nrm.std()) > 0.01, "norm ~1 +- 0.1")


def test_tokenizer_files():
    bdir = os.path.join(FX, "base")
    tc = json.load(open(os.path.join(bdir, "tokenizer_config.json")))
    check(tc["add_bos_token"] is True and tc["add_eos_token"] is False, "add_bos/eos")
    check("legacy" not in tc, "legacy absent")
    check(tc["pad_token"] is None, "pad_token null")
    check((tc["bos_token"], tc["eos_token"], tc["unk_token"]) == ("<s>", "</s>", "<unk>"), "special tokens")
    check(tc["clean_up_tokenization_spaces"] is False, "no clean-up")
    # chat template of spec §8.2, rendered the way transformers does
    import jinja2

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    tpl = env.from_string(tc["chat_template"])
    msgs = [{"role": "system", "content": "SYSTEM"}, {"role": "user", "content": "USER"}]
    out = tpl.render(messages=msgs, bos_token="<s>", eos_token="</s>", add_generation_prompt=True)
    check(out == "<s> [INST] SYSTEM\n\nUSER [/INST]", "chat template [system,user]: %r" % out)
    out = tpl.render(messages=[{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"},
                               {"role": "user", "content": "V"}], bos_token="<s>", eos_token="</s>")
    check(out == "<s> [INST] U [/INST] A</s> [INST] V [/INST]", "chat template multi-turn: %r" % out)
    try:
        tpl.render(messages=[{"role": "assistant", "content": "A"}], bos_token="<s>", eos_token="</s>")
        check(False, "template rejects assistant-first")
    except jinja2.exceptions.TemplateError:
        check(True, "")
    # the template text is the spec's (§8.2) verbatim, kept in tests/data/chat_template.jinja
    with open(os.path.join(ROOT, "tests", "data", "chat_template.jinja"), encoding="utf-8") as f:
        check(tc["chat_template"] == f.read(), "chat template equals spec §8.2 text")
    stm = json.load(open(os.path.join(bdir, "special_tokens_map.json")))
    check(stm["bos_token"]["content"] == "<s>" and stm["unk_token"]["content"] == "<unk>", "special_tokens_map")

    tj = json.load(open(os.path.join(bdir, "tokenizer.json")))
    check(tj["normalizer"] == {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}, "legacy normalizer")
    check(tj["pre_tokenizer"] is None, "no pre-tokenizer")
    m = tj["model"]
    check(m["type"] == "BPE" and m["byte_fallback"] is True and m["fuse_unk"] is True
          and m["unk_token"] == "<unk>", "BPE model flags")
    check([a["content"] for a in tj["added_tokens"]] == ["<unk>", "<s>", "</s>"]
          and all(a["special"] for a in tj["added_tokens"]), "added tokens")
    check([x["type"] for x in tj["decoder"]["decoders"]] == ["Replace", "ByteFallback", "Fuse", "Strip"]
          and tj["decoder"]["decoders"][3]["start"] == 1, "decoder sequence")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(bdir, "tokenizer.model"))
    vocab = m["vocab"]
    check(len(vocab) == sp.GetPieceSize() == 1000, "vocab size 1000")
    check([vocab["<unk>"], vocab["<s>"], vocab["</s>"]] == [0, 1, 2], "<unk> <s> </s> = 0 1 2")
    check(all(vocab["<0x%02X>" % b] == 3 + b for b in range(256)), "byte pieces at 3..258")
    check(all(sp.IdToPiece(i) == p for p, i in vocab.items()), "vocab = SentencePiece pieces")
    check(all(isinstance(x, str) and x.count(" ") == 1 for x in m["merges"]), "legacy merges are 'a b' strings")

    ms = json.load(open(os.path.join(gf.TOKENIZER_DIR, "tokenizer-metaspace.json")))
    check(ms["normalizer"] is None and ms["pre_tokenizer"]["type"] == "Metaspace"
          and ms["pre_tokenizer"]["prepend_scheme"] == "first", "metaspace flavour pre-tokenizer")
    check([" ".join(x) for x in ms["model"]["merges"]] == m["merges"] and ms["model"]["vocab"] == vocab,
          "metaspace flavour: same vocab and merges (pair form)")
    check(open(os.path.join(gf.TOKENIZER_DIR, "tokenizer.json"), "rb").read()
          == open(os.path.join(bdir, "tokenizer.json"), "rb").read(), "base tokenizer.json is the committed one")


def _test_strings():
    out = []
    with open(spm_to_hf.DATA, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 120:
                break
            rec = json.loads(line)
            out.append(rec["question"][0])
            out.append(rec["docs"][0][: 80 + (i * 37) % 400])
            out.append(str(rec["answers"][0]))
    out += ["", " ", "  ", "a", " leading", "trailing ", "two  spaces", "tab\tand\nnewline\n\n",
            "caf\u00e9 na\u00efve \u4e2d\u6587 \U0001F600 \u00e9\u00e9", "1234567890 3.14159",
            "\u2581already", "ALL CAPS", "x" * 50, "Question:What is it?", ":\\ odd", "<sx> </ss> <unk",
            "Zürich — “quoted” ‘text’", "\r\n\x00\x7f", "ØÆÅ ßẞ", "a:<b>->c"]
    return out


def test_bpe_matches_sentencepiece():
    sp = spm.SentencePieceProcessor(model_file=os.path.join(FX, "base", "tokenizer.model"))
    bpe = rd.HfBpe(os.path.join(FX, "base", "tokenizer.json"))
    strs = _test_strings()
    check(len(strs) >= 200, "at least 200 strings (%d)" % len(strs))
    bad = [s for s in strs if bpe.encode(s) != sp.encode(s)]
    check(not bad, "HF-BPE ids == SentencePiece ids on %d strings (%d differ, e.g. %r)"
          % (len(strs), len(bad), bad[:2]))
    bpe_ms = rd.HfBpe(os.path.join(gf.TOKENIZER_DIR, "tokenizer-metaspace.json"))
    check(all(bpe_ms._bpe("\u2581" + s.replace(" ", "\u2581")) == sp.encode(s) for s in strs[:50] if s),
          "metaspace-flavour merges give the same ids")
    # added-token segmentation (spec §3.2): each segment gets its own leading U+2581
    sub = rd.HfBpe(os.path.join(FX, "instruct16", "tokenizer.json"))
    ids = sub.encode("<ENC><s>Paris is big.</s><MEM0><MEM15><SEP>\n\nQuestion:")
    want = [1017, 1] + sp.encode("Paris is big.") + [2, 1000, 1015, 1018] + sp.encode("\n\nQuestion:")
    check(ids == want, "segmented encode %s" % ids)
    check(sp.encode("\n\nQuestion:")[0] == sp.PieceToId("\u2581"), "lone U+2581 before the newlines")


def _variant_token_table(var):
    """Independent statement of spec §3.1 for vocabulary size 1000."""
    if var == "nosep128":
        return {"<MEM>": 1000, "<AE>": 1001, "<ENC>": 1002, "<SEP>": 1003}, 1004
    n = {"instruct128": 2}.get(var, 16)
    t = {"<MEM%d>" % i: 1000 + i for i in range(n)}
    t.update({"<AE>": 1000 + n, "<ENC>": 1001 + n, "<SEP>": 1002 + n})
    return t, 1003 + n


CLARA_KEYS = ["compr_rate", "doc_max_length", "different_mem_tokens", "sep", "generation_top_k", "lora",
              "lora_r", "training_stage", "pure_inference", "max_new_tokens", "decoder_model_name",
              "quantization", "pad_token_id", "compr_model_name", "transformers_version", "ae_mode",
              "attn_implementation", "auto_map", "compr_base_model_name", "compr_every_n_layer",
              "compr_linear_type", "compr_mlp_hidden_dim", "compr_n_layers", "compr_rms_norm",
              "compr_use_mlp", "device_map", "kbtc_training", "load_adapters", "load_pretrained_checkpoint",
              "lora_compressor", "lora_r_compressor", "model_type", "optimize_mem_tokens",
              "stage2_retrieval_top_n", "training_form"]

EXPECTED_CFG = {
    "instruct16": ("stage1_2", 16, True, True),
    "instruct128": ("stage1_2", 128, True, True),
    "base16": ("stage1", 16, True, True),
    "e2e16": ("stage2", 16, True, True),
    "e2e16_noqr": ("stage2", 16, True, True),
    "nosep128": ("stage1_2", 128, False, False),
    "partial16": ("stage1_2", 16, True, True),
}
EXPECTED_ADAPTERS = {
    "e2e16": ["encoder_adapter", "decoder_adapter", "query_reasoner_adapter"],
}


def _lora_names(layers=2, skip=()):
    out = []
    for i in range(layers):
        for blk, mods in (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                          ("mlp", ("gate_proj", "up_proj", "down_proj"))):
            for m in mods:
                if (i, m) in skip:
                    continue
                out += ["model.layers.%d.%s.%s.lora_%s.weight" % (i, blk, m, ab) for ab in "AB"]
    return out


def check_pth_container(path):
    name = os.path.relpath(path, FX)
    recs = rd.pth_records(path)
    names = [r[0] for r in recs]
    check(all(n.startswith("archive/") for n in names), "%s: entries under archive/" % name)
    for must in ("archive/data.pkl", "archive/version", "archive/byteorder"):
        check(must in names, "%s: has %s" % (name, must))
    check(all(r[3] == zipfile.ZIP_STORED for r in recs), "%s: all stored" % name)
    check(all(r[1] % 64 == 0 for r in recs), "%s: every record 64-byte aligned" % name)
    with zipfile.ZipFile(path) as z:
        check(z.read("archive/version") == b"3\n" and z.read("archive/byteorder") == b"little",
              "%s: version/byteorder content" % name)
        pkl = z.read("archive/data.pkl")
    check(pkl[:2] == b"\x80\x02", "%s: pickle protocol 2" % name)
    g = set(rd.pickle_globals(pkl))
    check(g == {("torch._utils", "_rebuild_tensor_v2"), ("torch", "BFloat16Storage"),
                ("collections", "OrderedDict")}, "%s: globals %s" % (name, sorted(g)))


def test_variants():
    d = dims_tiny()
    rnd = gf.Rand(0)
    base = rd.read_safetensors_index(os.path.join(FX, "base"))
    for var, (stage, compr, sep, dmt) in EXPECTED_CFG.items():
        vdir = os.path.join(FX, var)
        cfg = json.load(open(os.path.join(vdir, "config.json")))
        check(sorted(cfg) == sorted(CLARA_KEYS), "%s: config keys = spec §2.3 keys" % var)
        check((cfg["training_stage"], cfg["compr_rate"], cfg["sep"], cfg["different_mem_tokens"])
              == (stage, compr, sep, dmt), "%s: config values" % var)
        check(cfg["doc_max_length"] == 256 and cfg["lora_r"] == 8 and cfg["pure_inference"] is False
              and cfg["decoder_model_name"] == "mistralai/Mistral-7B-Instruct-v0.2", "%s: fixed values" % var)
        table, V = _variant_token_table(var)
        tj = json.load(open(os.path.join(vdir, "tokenizer.json")))
        got = {a["content"]: a["id"] for a in tj["added_tokens"] if a["id"] >= 1000}
        check(got == table, "%s: added token ids per spec §3.1" % var)
        check(all(a["special"] and not a["normalized"] for a in tj["added_tokens"]), "%s: added special" % var)

        for f in ("adapters.pth", "decoder_first_last_layers.pth"):
            check_pth_container(os.path.join(vdir, f))
        dfl = rd.read_pth(os.path.join(vdir, "decoder_first_last_layers.pth"))
        check(list(dfl) == ["model.embed_tokens.weight", "lm_head.weight"], "%s: dfl keys" % var)
        exp_dfl, exp_ad = gf.variant_tensors(d, rnd, var)
        for k, t in dfl.items():
            check(t.dtype == "BF16" and t.shape == (V, 64), "%s: %s is bf16 [%d,64]" % (var, k, V))
            check(np.array_equal(t.data, exp_dfl[k][1]()), "%s: %s equals generator" % (var, k))
            b = base[k].f32()
            diff = np.abs(t.f32()[:1000] - b)
            check(0 < float(diff.max()) < 0.05 and float(np.mean(diff > 0)) > 0.5,
                  "%s: %s rows 0..999 slightly differ from base" % (var, k))
        ads = rd.read_pth(os.path.join(vdir, "adapters.pth"))
        want_ads = EXPECTED_ADAPTERS.get(var, ["encoder_adapter", "decoder_adapter"])
        check(list(ads) == want_ads, "%s: adapters %s" % (var, list(ads)))
        for ad, sd in ads.items():
            skip = ()
            if var == "partial16" and ad == "decoder_adapter":
                skip = {(1, "gate_proj"), (1, "up_proj"), (1, "down_proj")}
            check(list(sd) == _lora_names(2, skip) + ["model.embed_tokens.weight", "lm_head.weight"],
                  "%s/%s: state_dict keys" % (var, ad))
            bad = [k for k, t in sd.items() if not np.array_equal(t.data, exp_ad[ad][k][1]())]
            check(not bad, "%s/%s: tensors equal generator (bad %s)" % (var, ad, bad[:3]))
            check(all(np.array_equal(sd[k].data, dfl[k].data) for k in dfl),
                  "%s/%s: embedding copies = dfl" % (var, ad))
            a = sd["model.layers.0.mlp.down_proj.lora_A.weight"]
            bq = sd["model.layers.1.self_attn.v_proj.lora_B.weight"]
            check(a.shape == (8, 160) and bq.shape == (32, 8), "%s/%s: LoRA shapes" % (var, ad))
            check(all(t.dtype == "BF16" for t in sd.values()), "%s/%s: bf16" % (var, ad))
            check(all(np.count_nonzero(t.data) > t.data.size // 2 for k, t in sd.items() if "lora_B" in k),
                  "%s/%s: LoRA B non-zero" % (var, ad))
        if var == "e2e16":
            enc, dec = ads["encoder_adapter"], ads["decoder_adapter"]
            qa = enc["model.layers.0.self_attn.q_proj.lora_A.weight"]
            qb = enc["model.layers.0.self_attn.q_proj.lora_B.weight"]
            check(qa.storage_key == qb.storage_key and qb.offset == 8 * 64, "e2e16: offset view in shared storage")
            ka = dec["model.layers.0.self_attn.k_proj.lora_A.weight"]
            check(ka.stride == (1, 8), "e2e16: transposed view stride (1, 8)")
            keys = {ads[a]["model.embed_tokens.weight"].storage_key for a in ads}
            check(len(keys) == 1, "e2e16: embedding copies share one storage")
        else:
            st = [t.storage_key for sd in ads.values() for t in sd.values()]
            check(len(st) == len(set(st)), "%s: one storage per tensor" % var)


def test_mismatch_option():
    out = os.path.join(os.path.dirname(FX), "fixtures-mismatch")
    ensure_fixtures(out, ["instruct16"], True)
    dfl = rd.read_pth(os.path.join(out, "instruct16", "decoder_first_last_layers.pth"))
    ads = rd.read_pth(os.path.join(out, "instruct16", "adapters.pth"))
    e = ads["encoder_adapter"]["model.embed_tokens.weight"].data
    check(int(np.sum(e != dfl["model.embed_tokens.weight"].data)) == 1, "--mismatch-embedding: one element differs")
    check(np.array_equal(ads["decoder_adapter"]["model.embed_tokens.weight"].data,
                         dfl["model.embed_tokens.weight"].data), "--mismatch-embedding: other copies equal")


def test_restricted_unpickler():
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    raw = pickle.dumps({"x": Evil()}, protocol=2)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", raw)
        z.writestr("archive/version", "3\n")
    path = os.path.join(os.path.dirname(FX), "evil.pth")
    open(path, "wb").write(buf.getvalue())
    try:
        rd.read_pth(path)
        check(False, "restricted unpickler rejects os.system")
    except pickle.UnpicklingError as e:
        check("not allowed" in str(e), "rejection message: %s" % e)


def test_padded_tokenizer():
    proto = gf.tokenizer_proto("7b")
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto)
    small = spm.SentencePieceProcessor(model_file=os.path.join(gf.TOKENIZER_DIR, "tokenizer.model"))
    check(sp.GetPieceSize() == 32000, "padded model has 32000 pieces")
    check(all(sp.IdToPiece(i) == small.IdToPiece(i) for i in range(1000)), "first 1000 pieces unchanged")
    strs = _test_strings()[:60]
    check(all(sp.encode(s) == small.encode(s) for s in strs), "padding does not change encoding")
    tj = spm_to_hf.hf_tokenizer(proto, "legacy")
    small_tj = json.load(open(os.path.join(gf.TOKENIZER_DIR, "tokenizer.json")))
    check(len(tj["model"]["vocab"]) == 32000 and tj["model"]["vocab"]["<ph_31999>"] == 31999, "padded vocab")
    check(tj["model"]["merges"] == small_tj["model"]["merges"], "placeholders add no merges")


# ---- GGUF ---------------------------------------------------------------------------------------


def _gs(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def build_gguf():
    kv = b""
    kvs = [
        ("u8", 0, struct.pack("<B", 200)), ("i8", 1, struct.pack("<b", -5)),
        ("u16", 2, struct.pack("<H", 60000)), ("i16", 3, struct.pack("<h", -300)),
        ("u32", 4, struct.pack("<I", 4000000000)), ("i32", 5, struct.pack("<i", -70000)),
        ("f32", 6, struct.pack("<f", 1.5)), ("bool", 7, struct.pack("<B", 1)),
        ("str", 8, _gs("h\u00e9llo")), ("u64", 10, struct.pack("<Q", 2**40 + 3)),
        ("i64", 11, struct.pack("<q", -(2**40))), ("f64", 12, struct.pack("<d", 0.1)),
        ("arr.i32", 9, struct.pack("<IQ", 5, 3) + struct.pack("<3i", 1, -2, 3)),
        ("arr.str", 9, struct.pack("<IQ", 8, 2) + _gs("a") + _gs("<0x0A>")),
        ("arr.nested", 9, struct.pack("<IQ", 9, 2) + struct.pack("<IQ", 0, 2) + bytes([1, 2])
         + struct.pack("<IQ", 0, 1) + bytes([7])),
        ("general.alignment", 4, struct.pack("<I", 64)),
    ]
    for k, t, v in kvs:
        kv += _gs(k) + struct.pack("<I", t) + v
    f32 = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5  # dims (3, 2)
    f16 = np.array([1, -2, 0.5, 65504], dtype=np.float16)
    bf = np.array([[0x3F80, 0xC000], [0x4040, 0x0000]], dtype=np.uint16)
    q8 = bytes(range(34))
    blobs = [("t.f32", [3, 2], 0, f32.tobytes()), ("t.f16", [4], 1, f16.tobytes()),
             ("t.bf16", [2, 2], 30, bf.tobytes()), ("t.q8", [32], 8, q8)]
    infos = b""
    data = b""
    for name, dims, typ, blob in blobs:
        data += b"\0" * ((-len(data)) % 64)
        infos += _gs(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", x) for x in dims)
        infos += struct.pack("<IQ", typ, len(data))
        data += blob
    head = b"GGUF" + struct.pack("<IQQ", 3, len(blobs), len(kvs)) + kv + infos
    head += b"\0" * ((-len(head)) % 64)
    return head + data, head, f32, f16, bf, q8


def test_gguf_reader():
    buf, head, f32, f16, bf, q8 = build_gguf()
    g = rd.read_gguf(buf)
    check(g.version == 3 and g.alignment == 64 and g.data_offset == len(head), "gguf header/alignment")
    want = {"u8": 200, "i8": -5, "u16": 60000, "i16": -300, "u32": 4000000000, "i32": -70000, "f32": 1.5,
            "bool": True, "str": "h\u00e9llo", "u64": 2**40 + 3, "i64": -(2**40), "f64": 0.1,
            "arr.i32": [1, -2, 3], "arr.str": ["a", "<0x0A>"], "arr.nested": [[1, 2], [7]]}
    for k, v in want.items():
        check(g.kv[k] == v, "gguf kv %s = %r (got %r)" % (k, v, g.kv.get(k)))
    check(g.kv_types["arr.str"] == (9, 8) and g.kv_types["u32"] == 4, "gguf kv types")
    check(g.tensors["t.f32"].dims == (3, 2) and g.array("t.f32").shape == (2, 3), "gguf dims reversed")
    check(np.array_equal(g.array("t.f32"), f32), "gguf f32 data")
    check(np.array_equal(g.array("t.f16"), f16), "gguf f16 data")
    check(np.array_equal(g.array("t.bf16"), bf), "gguf bf16 raw")
    check(g.array("t.bf16", bf16_as_f32=True).tolist() == [[1.0, -2.0], [3.0, 0.0]], "gguf bf16 -> f32")
    check(g.raw("t.q8") == q8 and g.tensors["t.q8"].nbytes == 34, "gguf q8_0 raw block")
    check(all(t.offset % 64 == 0 for t in g.tensors.values()), "gguf offsets aligned")
    bad_cases = {
        "magic": b"GGUX" + buf[4:],
        "version": buf[:4] + struct.pack("<I", 2) + buf[8:],
        "truncated header": buf[:40],
        "truncated data": buf[:-10],
    }
    # misaligned tensor offset: patch t.f16's offset (its info follows t.f32's)
    i = head.index(_gs("t.f16")) + len(_gs("t.f16")) + 4 + 8 + 4
    bad_cases["misaligned"] = buf[:i] + struct.pack("<Q", 65) + buf[i + 8:]
    j = head.index(_gs("general.alignment")) + len(_gs("general.alignment")) + 4
    bad_cases["alignment 48"] = buf[:j] + struct.pack("<I", 48) + buf[j + 4:]
    for what, b in bad_cases.items():
        try:
            rd.read_gguf(b)
            check(False, "gguf reader rejects %s" % what)
        except ValueError:
            check(True, "")


def main():
    for fn in (test_generation, test_bf16_rounding, test_base, test_tokenizer_files,
               test_bpe_matches_sentencepiece, test_variants, test_mismatch_option,
               test_restricted_unpickler, test_padded_tokenizer, test_gguf_reader):
        run(fn)
    print("test_fixtures: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
