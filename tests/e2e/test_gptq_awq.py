"""`clara convert` of GPTQ (v1/v2, sym/asym, act-order, group sizes 32/64/128/-1, 4 and 8 bit)
and AWQ (GEMM) checkpoints (tests/fixtures/gen_gptq_awq.py packs them by the published formulas):
every quantized linear layer of the output GGUF, dequantized by an independent numpy reader of the
block types (tests/reference/quant_ref.py for q4_0/q4_1/q8_0, the q8_z formula of docs/FORMAT.md
here), after undoing the stored input-column permutation (clara.blk.N.<linear>.in_perm) and the
q/k row permutation, equals the float64 formula values scales * (q - zero): exactly for q4_0, q8_0
and q8_z, and for q4_1 within the f16 rounding of its min m = -scale * zero (the documented
bound). Malformed inputs must fail with exit status 1 and one line naming the tensor or key."""

import json
import os
import shutil
import subprocess
import tempfile

import numpy as np

from harness import BUILD, CLARA, check, report, run
import gen_gptq_awq as gq
import quant_ref as qr
import readers as rd

FIX = os.path.join(BUILD, "fixtures_gptq")
CLARA_DIR = gq.ensure(FIX)
OUT = tempfile.mkdtemp(prefix="clara_gptq_")
LINEARS = [("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
           ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
           ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down")]
rd.GGML_TYPES.setdefault(64, ("Q8_Z", 32, 36))  # CLaRa's q8_z (docs/FORMAT.md)
F32 = np.float32


def convert(base, name, extra=()):
    out = os.path.join(OUT, name + ".gguf")
    p = subprocess.run([CLARA, "convert", "--base", base, "--clara", CLARA_DIR, "--out", out,
                        "--quiet"] + list(extra), capture_output=True, text=True)
    return p, out


def hf_to_llama_rows(w, n_head):
    """llama.cpp's q/k layout: per head, view rows as (2, d/2) and transpose to (d/2, 2)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def dequant_q8_z(raw):
    """q8_z: f16 d, u16 z, u8 qs[32]; w = d * (q - z)."""
    b = np.frombuffer(raw, np.uint8).reshape(-1, 36)
    d = np.ascontiguousarray(b[:, 0:2]).view("<f2").astype(F32)
    z = np.ascontiguousarray(b[:, 2:4]).view("<u2").astype(np.int32)
    return (d * (b[:, 4:].astype(np.int32) - z).astype(F32)).reshape(-1)


def expected_type(spec, z):
    mid = 1 << (spec["bits"] - 1)
    sym = bool(np.all(z == mid))
    if spec["bits"] == 4:
        return "Q4_0" if sym else "Q4_1"
    return "Q8_0" if sym else "Q8_Z"


def stored_weight(g, name, tname):
    raw = g.raw(name)
    t = g.tensors[name]
    n_in, n_out = t.dims
    if tname == "Q8_Z":
        return dequant_q8_z(raw).reshape(n_out, n_in)
    return qr.dequantize(tname.lower(), raw).reshape(n_out, n_in)


def check_linear(var, spec, g, bc, layer, gg, exp, z, s, gi):
    """exp: formula values [out, in] (HF order); z, s: zeros and f16 scales [n_groups, out];
    gi: group of each input column."""
    name = "blk.%d.%s.weight" % (layer, gg)
    tag = "%s %s" % (var, name)
    if not check(name in g.tensors, "%s: missing" % tag):
        return
    want_t = expected_type(spec, z)
    t = g.tensors[name]
    if not check(t.type_name == want_t, "%s: type %s, expected %s" % (tag, t.type_name, want_t)):
        return
    w = stored_weight(g, name, want_t)
    perm_name = "clara.blk.%d.%s.in_perm" % (layer, gg)
    want_perm = not bool(np.all(np.diff(gi) >= 0))  # only when sorting by group moves columns
    check((perm_name in g.tensors) == want_perm, "%s: in_perm present=%s, expected %s"
          % (tag, perm_name in g.tensors, want_perm))
    if perm_name in g.tensors:
        perm = g.array(perm_name).astype(np.int64)
        check(sorted(perm.tolist()) == list(range(w.shape[1])), "%s: in_perm is not a permutation" % tag)
        check(bool(np.all(np.diff(gi[perm]) >= 0)), "%s: in_perm does not sort by group" % tag)
        unperm = np.empty_like(w)
        unperm[:, perm] = w  # stored column j is input perm[j]
        w = unperm
    se = s.astype(np.float64)[gi, :].T  # per element [out, in], HF order
    ze = z[gi, :].T.astype(np.float64)
    e = exp
    if gg in ("attn_q", "attn_k"):  # stored rows are in llama.cpp's RoPE order
        nh = bc["num_attention_heads"] if gg == "attn_q" else bc["num_key_value_heads"]
        e, se, ze = (hf_to_llama_rows(x, nh) for x in (exp, se, ze))
    if not check(w.shape == e.shape, "%s: shape %s vs %s" % (tag, w.shape, e.shape)):
        return
    w = w.astype(np.float64)
    if want_t != "Q4_1":
        bad = np.argwhere(w != e)
        first = tuple(bad[0]) if len(bad) else None
        check(len(bad) == 0, "%s: %d values differ from the formula, first %s: %r vs %r"
              % (tag, len(bad), first, w[first] if first else 0, e[first] if first else 0))
        return
    # q4_1 stores d = scale (exact) and m = f16(-scale * zero): the one rounding. Documented
    # bound: |m - (-scale*zero)| <= 2^-11 |scale*zero| (f16 round-to-nearest; subnormal m:
    # 2^-25 absolute), plus the f32 rounding of d*q + m when dequantizing.
    m_exact = -se * ze
    m16 = m_exact.astype(np.float16).astype(np.float64)
    check(bool(np.all(np.abs(m16 - m_exact) <= np.abs(m_exact) * 2.0 ** -11 + 2.0 ** -25)),
          "%s: f16 rounding of the min beyond its bound" % tag)
    diff = np.abs(w - e)
    bound = np.abs(m16 - m_exact) + np.abs(w) * 2.0 ** -24
    check(bool(np.all(diff <= bound)), "%s: q4_1 error exceeds the f16-min bound by %.3g"
          % (tag, float(np.max(diff - bound))))
    # and bit-exactly what d*q + m gives in f32 with m = f16(-scale * zero)
    q = np.rint(e / se + ze)
    pred = (se.astype(F32) * q.astype(F32)) + m16.astype(F32)
    check(np.array_equal(w.astype(F32), pred), "%s: q4_1 values are not d*q + f16(-d*z)" % tag)


def check_variant(var):
    spec = gq.VARIANTS[var]
    base = os.path.join(FIX, var)
    p, out = convert(base, var)
    if not check(p.returncode == 0, "%s: convert failed: %s" % (var, p.stderr.strip()[-400:])):
        return
    g = rd.read_gguf(out)
    bc = json.load(open(os.path.join(base, "config.json")))
    npz = np.load(os.path.join(base, "expected.npz"))
    for layer in range(bc["num_hidden_layers"]):
        for hf, gg in LINEARS:
            key = "model.layers.%d.%s" % (layer, hf)
            check_linear(var, spec, g, bc, layer, gg, npz["w:" + key], npz["z:" + key],
                         npz["s:" + key], npz["g:" + key])
    n_perm = sum(1 for n in g.tensors if n.endswith(".in_perm"))
    want = 14 if spec["desc_act"] and spec["gs"] in (32, 64) else 0  # act-order with > 1 group
    if spec["desc_act"] and spec["gs"] == 128:
        want = 2  # only down_proj (in 320) has more than one group of 128
    check(n_perm == want, "%s: %d in_perm tensors, expected %d" % (var, n_perm, want))
    kv = g.kv
    check(kv.get("clara.quantization.method") == spec["method"], "%s: method key %r" % (var, kv.get("clara.quantization.method")))
    check(kv.get("clara.quantization.format") == spec["fmt"], "%s: format key" % var)
    check(kv.get("clara.quantization.bits") == spec["bits"], "%s: bits key" % var)
    check(kv.get("clara.quantization.group_size") == spec["gs"], "%s: group_size key" % var)
    # norms and tables are the float path (f16 sources -> f32 norms, --type f16 tables)
    src = rd.read_safetensors_index(base)
    check(np.array_equal(g.array("output_norm.weight"), src["model.norm.weight"].f32()),
          "%s: output_norm differs from the f16 source" % var)
    check(g.tensors["token_embd.weight"].type_name == "F16", "%s: token_embd type" % var)


def test_variants():
    for var in gq.VARIANTS:
        check_variant(var)


def test_type_only_for_float_tensors():
    """--type f32 changes the float tensors only; a layer stored as plain .weight in a quantized
    checkpoint (modules_to_not_convert) goes through the float path."""
    var = "gptq_v1_4b_sym_g128"
    spec = gq.VARIANTS[var]
    key = "model.layers.1.mlp.down_proj"
    keep = {}

    def mutate(cfg, t):
        for s in ("qweight", "qzeros", "scales", "g_idx"):
            t.pop(key + "." + s)
        w = np.random.default_rng(5).normal(0, 0.02, size=(128, 320)).astype(np.float16)
        t[key + ".weight"] = keep["w"] = w

    tmp = tempfile.mkdtemp(prefix="clara_gptq_mixed_")
    try:
        base = gq.generate_variant(tmp, "mixed", spec, mutate, os.path.join(FIX, "base"), var)
        p, out = convert(base, "mixed", ["--type", "f32"])
        if not check(p.returncode == 0, "mixed: convert failed: %s" % p.stderr.strip()[-300:]):
            return
        g = rd.read_gguf(out)
        check(g.tensors["blk.1.ffn_down.weight"].type_name == "F32", "mixed: float layer type")
        check(np.array_equal(g.array("blk.1.ffn_down.weight"), keep["w"].astype(F32)),
              "mixed: float layer values")
        check(g.tensors["blk.0.ffn_down.weight"].type_name == "Q4_0", "mixed: quantized layer type")
        check(g.tensors["token_embd.weight"].type_name == "F32", "mixed: --type f32 for the tables")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- malformed inputs --------------------------------------------------------------------------

Q0 = "model.layers.0.self_attn.q_proj"
D1 = "model.layers.1.mlp.down_proj"


def _set_cfg(**kw):
    def m(cfg, t):
        cfg["quantization_config"].update(kw)
    return m


def _drop_row(cfg, t):
    t[Q0 + ".qweight"] = t[Q0 + ".qweight"][:-1]


def _drop_gidx(cfg, t):
    del t[Q0 + ".g_idx"]


def _scales_short(cfg, t):
    t[D1 + ".scales"] = t[D1 + ".scales"][:-1]


def _qzeros_unpacked(cfg, t):
    ng, n = t[Q0 + ".qzeros"].shape
    t[Q0 + ".qzeros"] = np.zeros((ng, n * 8), np.int32)


def _gidx_range(cfg, t):
    t[Q0 + ".g_idx"] = t[Q0 + ".g_idx"].copy()
    t[Q0 + ".g_idx"][5] = 99


def _gidx_uneven(cfg, t):  # group 0 gets 33 columns, group 1 31: blocks straddle groups
    g = t[Q0 + ".g_idx"].copy()
    g[np.flatnonzero(g == 1)[0]] = 0
    t[Q0 + ".g_idx"] = g


def _gidx_not_ascending(cfg, t):
    t[Q0 + ".g_idx"] = t[Q0 + ".g_idx"][::-1].copy()


def _qweight_f32(cfg, t):
    t[Q0 + ".qweight"] = t[Q0 + ".qweight"].astype(np.float32)


def _scales_f32(cfg, t):
    t[Q0 + ".scales"] = t[Q0 + ".scales"].astype(np.float32)


def _no_qcfg(cfg, t):
    del cfg["quantization_config"]


def _nonzero_bias(cfg, t):
    t[Q0 + ".bias"] = np.ones(128, np.float16)


def _inf_scale(cfg, t):
    s = t[Q0 + ".scales"].copy()
    s[0, 3] = np.inf
    t[Q0 + ".scales"] = s


V1 = "gptq_v1_4b_sym_g128"
ACT = "gptq_v1_4b_asym_g32_act"
BAD = [
    # (name, variant, mutate, words the error line must contain)
    ("qweight shape", V1, _drop_row, [Q0 + ".qweight", "shape"]),
    ("bits 3", V1, _set_cfg(bits=3), ["config.json", "bits 3"]),
    ("bits 8 awq", "awq_4b_g128", _set_cfg(bits=8), ["config.json", "bits 8"]),
    ("missing g_idx", ACT, _drop_gidx, [Q0 + ".g_idx", "desc_act"]),
    ("scales shape", V1, _scales_short, [D1 + ".scales", "shape"]),
    ("group size not multiple of 32", V1, _set_cfg(group_size=48), ["config.json", "group_size 48"]),
    ("group size vs tensors", V1, _set_cfg(group_size=64), ["qzeros", "shape"]),
    ("qzeros packing", V1, _qzeros_unpacked, [Q0 + ".qzeros", "shape"]),
    ("awq qzeros packing", "awq_4b_g128", _qzeros_unpacked, [Q0 + ".qzeros", "shape"]),
    ("g_idx out of range", ACT, _gidx_range, [Q0 + ".g_idx", "g_idx[5]"]),
    ("g_idx uneven groups", ACT, _gidx_uneven, [Q0, "multiple of 32"]),
    ("g_idx without desc_act", "gptq_v2_4b_asym_g64", _gidx_not_ascending, [Q0 + ".g_idx", "desc_act"]),
    ("qweight dtype", V1, _qweight_f32, [Q0 + ".qweight", "dtype"]),
    ("scales dtype", V1, _scales_f32, [Q0 + ".scales", "F16"]),
    ("no quantization_config", V1, _no_qcfg, ["config.json", "quantization_config"]),
    ("quant method", V1, _set_cfg(quant_method="bitsandbytes"), ["config.json", "bitsandbytes"]),
    ("checkpoint format", V1, _set_cfg(checkpoint_format="marlin"), ["config.json", "marlin"]),
    ("awq version", "awq_4b_g128", _set_cfg(version="gemv"), ["config.json", "gemv"]),
    ("bias", V1, _nonzero_bias, [Q0 + ".bias", "bias"]),
    ("non-finite scale", V1, _inf_scale, [Q0 + ".scales", "finite"]),
]


def test_malformed():
    tmp = tempfile.mkdtemp(prefix="clara_gptq_bad_")
    try:
        for i, (name, var, mutate, words) in enumerate(BAD):
            base = gq.generate_variant(tmp, "bad%d" % i, gq.VARIANTS[var], mutate,
                                       os.path.join(FIX, "base"), var)
            p, out = convert(base, "bad%d" % i)
            lines = p.stderr.strip().splitlines()
            check(p.returncode == 1, "%s: exit status %d (want 1): %r" % (name, p.returncode, p.stderr[-300:]))
            check(len(lines) == 1 and lines[0].startswith("clara convert: error: "),
                  "%s: want one error line, got %r" % (name, p.stderr[-400:]))
            check(all(w in p.stderr for w in words), "%s: error %r lacks %s" % (name, p.stderr.strip(), words))
            check(not os.path.exists(out), "%s: output file left behind" % name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run(test_variants)
    run(test_type_only_for_float_tensors)
    run(test_malformed)
    shutil.rmtree(OUT, ignore_errors=True)
    report("test_gptq_awq")
