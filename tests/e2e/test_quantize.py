"""`clara quantize` end to end: the fixture model converted to f32 is quantized with every mix;
the output, read with the independent GGUF reader and dequantized with the independent numpy
dequantizers (tests/reference/quant_ref.py), must have the tensor types llama.cpp's rules give
(computed here: output.weight q6_k/q8_0, use_more_bits layers of attn_v/ffn_down in q6_k for the
_M mixes, K-quant fallbacks for rows not a multiple of 256 - the tiny fixture's 64 and 160),
values within each type's error bound of the input, untouched bytes for kept tensors (LoRA,
norms), and the input's metadata plus general.file_type/quantization_version."""

import os
import subprocess
import tempfile

import numpy as np

from harness import CLARA, FIXTURES, check, report, run
import gen_fixtures as gf
import quant_ref as qr
import readers as rd

OUT = tempfile.mkdtemp(prefix="clara_quantize_")
SRC = os.path.join(OUT, "f32.gguf")


def setup():
    gf.ensure(FIXTURES)
    p = subprocess.run([CLARA, "convert", "--base", os.path.join(FIXTURES, "base"), "--clara",
                        os.path.join(FIXTURES, "instruct16"), "--out", SRC, "--type", "f32",
                        "--quiet"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def expected_types(g, mix, keep_f16=False):
    """llama.cpp's llama_tensor_get_type for our mixes, written from its documented rules."""
    base = qr.BASE_TYPE[mix]
    k_mix = mix in ("q4_k_m", "q5_k_m")
    names = [n for n in g.tensors if not n.startswith("clara.")]
    n_v = sum("attn_v.weight" in n for n in names)
    n_down = sum("ffn_down" in n for n in names)
    has_output = "output.weight" in g.tensors
    i_v = i_down = 0
    out = {}
    for name, t in g.tensors.items():
        tname = t.type_name.lower()
        if (name.startswith("clara.") or len(t.dims) < 2 or not name.endswith("weight")
                or tname not in ("f32", "f16", "bf16")):
            out[name] = tname
            continue
        nt = base
        if name == "output.weight" or (not has_output and name == "token_embd.weight"):
            nt = "q8_0" if t.dims[0] % 256 else ("q6_k" if nt != "q8_0" else nt)
        elif name == "token_embd.weight":
            if keep_f16:
                out[name] = "f16"
                continue
        elif "attn_v.weight" in name:
            if k_mix and qr.use_more_bits(i_v, n_v):
                nt = "q6_k"
            i_v += 1
        elif "ffn_down" in name:
            if k_mix and qr.use_more_bits(i_down, n_down):
                nt = "q6_k"
            i_down += 1
        if t.dims[0] % qr.TYPES[nt][1]:
            if nt in qr.FALLBACK:
                nt = qr.FALLBACK[nt]
                if t.dims[0] % 32:
                    nt = "f16"
            else:
                nt = tname
        out[name] = nt
    return out


def f16_err(v16):
    return np.maximum(np.abs(v16) * 2.0 ** -11, 2.0 ** -25)


def bound(typ, blocks, x):
    """Per-element error bound for one row-major array of blocks of `typ` and source values x
    (shape (nblocks, block)); see tests/unit/test_quant.c for the derivations."""
    b = np.frombuffer(blocks, np.uint8).reshape(x.shape[0], -1)
    d = np.abs(qr._f16(b, 0 if typ != "q6_k" else 208).astype(np.float64))
    amax = np.abs(x).max(axis=1, keepdims=True)
    slack = 1e-5 * amax + 1e-30
    if typ in ("q8_0", "q8_1"):
        return d / 2 + 128 * f16_err(d) + slack
    if typ in ("q4_0", "q5_0"):
        off = 8 if typ == "q4_0" else 16
        return d + (off + 1) * f16_err(d) + slack
    if typ in ("q4_1", "q5_1"):
        top = 15 if typ == "q4_1" else 31
        return d / 2 + (top + 1) * f16_err(d) + f16_err(qr._f16(b, 2)) + slack
    if typ == "f16":
        return np.abs(x) * 2.0 ** -11 + 2.0 ** -25
    # K-quants (not reached by the tiny fixture, whose rows are 64 and 160): a sanity bound
    return amax / 4 + 64 * f16_err(d) + slack


def check_mix(mix, keep_f16=False):
    out = os.path.join(OUT, "%s%s.gguf" % (mix, "_f16emb" if keep_f16 else ""))
    cmd = [CLARA, "quantize"] + (["--keep-embeddings", "f16"] if keep_f16 else []) + [SRC, out, mix]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if not check(p.returncode == 0, "%s: exit %d: %s" % (mix, p.returncode, p.stderr[-400:])):
        return
    check("bits/weight" in p.stderr.splitlines()[-1], "%s: no summary line" % mix)
    gi, go = rd.read_gguf(SRC), rd.read_gguf(out)
    # metadata
    for k, v in gi.kv.items():
        if k not in ("general.file_type", "general.quantization_version"):
            check(go.kv.get(k) == v and go.kv_types.get(k) == gi.kv_types[k],
                  "%s: key %s not copied" % (mix, k))
    check(go.kv.get("general.file_type") == qr.FTYPE[mix], "%s: file_type %r" % (
        mix, go.kv.get("general.file_type")))
    check(go.kv.get("general.quantization_version") == 2, "%s: quantization_version" % mix)
    # tensors
    want = expected_types(gi, mix, keep_f16)
    check(list(go.tensors) == list(gi.tensors), "%s: tensor list differs" % mix)
    worst = 0.0
    for name, ti in gi.tensors.items():
        to = go.tensors.get(name)
        if to is None:
            continue
        typ = to.type_name.lower()
        check(to.dims == ti.dims, "%s %s: dims %s vs %s" % (mix, name, to.dims, ti.dims))
        if not check(typ == want[name], "%s %s: type %s, llama.cpp's rules give %s" % (
                mix, name, typ, want[name])):
            continue
        if typ == ti.type_name.lower():
            check(go.raw(name) == gi.raw(name), "%s %s: kept tensor changed" % (mix, name))
            continue
        x = gi.array(name).astype(np.float32).reshape(-1)
        y = qr.dequantize(typ, go.raw(name))
        bs = qr.TYPES[typ][1]
        xb = x.reshape(-1, bs).astype(np.float64)
        err = np.abs(y.reshape(-1, bs).astype(np.float64) - xb)
        bnd = bound(typ, go.raw(name), xb)
        ok = bool(np.all(err <= bnd))
        check(ok, "%s %s (%s): max error %g beyond the bound (worst excess %g)" % (
            mix, name, typ, err.max(), (err - bnd).max()))
        worst = max(worst, float((err / np.maximum(np.abs(xb).max(1, keepdims=True), 1e-30)).max()))
    print("%-7s ok; worst error / block amax %.4f; %s" % (
        mix + (" +f16 emb" if keep_f16 else ""), worst, p.stderr.splitlines()[-1]))


def test_mixes():
    for mix in qr.FTYPE:
        check_mix(mix)
    check_mix("q4_k_m", keep_f16=True)


def test_fallback_reported():
    p = subprocess.run([CLARA, "quantize", SRC, os.path.join(OUT, "x.gguf"), "q4_k_m"],
                       capture_output=True, text=True)
    lines = [l for l in p.stderr.splitlines() if "ffn_down.weight" in l and "clara." not in l]
    check(lines and all("fallback" in l for l in lines), "fallback not reported: %s" % lines)


def test_errors():
    p = subprocess.run([CLARA, "quantize", SRC, os.path.join(OUT, "y.gguf"), "q3_k"],
                       capture_output=True, text=True)
    check(p.returncode == 1 and "unknown quantization type 'q3_k'" in p.stderr, p.stderr)
    check(not os.path.exists(os.path.join(OUT, "y.gguf")), "output written on error")
    p = subprocess.run([CLARA, "quantize", SRC], capture_output=True, text=True)
    check(p.returncode == 2, "usage error exit %d" % p.returncode)
    bad = os.path.join(OUT, "bad.gguf")
    open(bad, "wb").write(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    p = subprocess.run([CLARA, "quantize", bad, os.path.join(OUT, "z.gguf"), "q8_0"],
                       capture_output=True, text=True)
    check(p.returncode == 1 and "bad.gguf" in p.stderr and len(p.stderr.splitlines()) == 1,
          "bad input: %r" % p.stderr)


def test_nan_row_refused():
    """A NaN in one row of a big tensor (rows are quantized on every core): a clear error naming
    the tensor, exit 1, no output; the first rows of another tensor are not enough to hide it."""
    g = rd.read_gguf(SRC)
    t = g.tensors["blk.1.ffn_down.weight"]
    raw = bytearray(open(SRC, "rb").read())
    rows = t.dims[1]
    row = rows // 2 + 1  # a row in the middle: another task's than the first
    at = g.data_offset + t.offset + (row * t.dims[0] + 3) * 4
    raw[at:at + 4] = np.array([np.nan], dtype="<f4").tobytes()
    bad = os.path.join(OUT, "nan.gguf")
    open(bad, "wb").write(bytes(raw))
    out = os.path.join(OUT, "nan-q4.gguf")
    p = subprocess.run([CLARA, "quantize", bad, out, "q4_k_m"], capture_output=True, text=True)
    check(p.returncode == 1 and "blk.1.ffn_down.weight" in p.stderr and "NaN" in p.stderr,
          "a NaN row: exit %d, %r" % (p.returncode, p.stderr[-300:]))
    check(not os.path.exists(out), "no output written")


run(setup)
run(test_mixes)
run(test_nan_row_refused)
run(test_fallback_reported)
run(test_errors)
report("test_quantize.py")
