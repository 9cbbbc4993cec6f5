"""GPTQ/AWQ imports computed by the engine: each imported model must behave like a float32 model
whose linear weights are exactly the checkpoint's formula values (written by the fixture
generator as float64, stored here as F32 safetensors — an independent path through the float
converter). q8_z layers (8-bit asymmetric) and act-order input permutations are computed in
float, so their vectors must match to 1e-4; q4_0/q4_1/q8_0 layers use integer dots on 8-bit
quantized activations, so their vectors must agree by cosine > 0.99 and every command must run."""

import json
import os
import shutil
import subprocess
import tempfile

import numpy as np

from harness import BUILD, CLARA, check, report, run
import gen_gptq_awq as gq
import readers as rd
import st_writer

FIX = os.path.join(BUILD, "fixtures_gptq")
CLARA_DIR = gq.ensure(FIX)
OUT = tempfile.mkdtemp(prefix="clara_gptq_engine_")
DOCS = ["The Rhine flows through Basel and Cologne.", "Honey never spoils.",
        "Octopuses have three hearts."]


def dequantized_base(var):
    """A float copy of the base in which every quantized linear weight is the formula value."""
    out = os.path.join(OUT, var + "-f32")
    shutil.copytree(os.path.join(FIX, "base"), out)
    for f in os.listdir(out):
        if f.endswith(".safetensors") or f == "model.safetensors.index.json":
            os.remove(os.path.join(out, f))
    tensors = {k: v.f32() for k, v in rd.read_safetensors_index(os.path.join(FIX, "base")).items()}
    exp = np.load(os.path.join(FIX, var, "expected.npz"))
    for k in exp.files:
        if k.startswith("w:"):
            tensors[k[2:] + ".weight"] = exp[k].astype(np.float32)
    st_writer.write_sharded(out, [st_writer.StTensor(k, "F32", v.shape, (lambda v=v: v))
                                  for k, v in tensors.items()])
    return out


def convert(base, name):
    out = os.path.join(OUT, name + ".gguf")
    p = subprocess.run([CLARA, "convert", "--base", base, "--clara", CLARA_DIR, "--out", out,
                        "--type", "f32", "--quiet"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return out


def cli(cmd, model, extra):
    args = [CLARA, cmd, "--model", model, "--json", "--adapter-policy", "all"] + extra
    for d in DOCS:
        args += ["--doc", d]
    p = subprocess.run(args, capture_output=True, text=True)
    return json.loads(p.stdout) if p.returncode == 0 else None, p.stderr


def compare(var, exact):
    quant = convert(os.path.join(FIX, var), var)
    ref = convert(dequantized_base(var), var + "-f32")
    a, ea = cli("compress", quant, [])
    b, eb = cli("compress", ref, [])
    if not check(a is not None and b is not None, "%s: compress failed: %s %s" % (var, ea, eb)):
        return
    va = np.asarray([d["vectors"] for d in a["docs"]], np.float64).ravel()
    vb = np.asarray([d["vectors"] for d in b["docs"]], np.float64).ravel()
    cos = va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb))
    if exact:
        check(np.max(np.abs(va - vb)) <= 1e-4, "%s: vectors differ by %.3g from the float model" % (
            var, np.max(np.abs(va - vb))))
    check(cos > 0.99, "%s: vector cosine %.5f vs the float model" % (var, cos))
    qa, e1 = cli("ask", quant, ["--query", "How many hearts?", "--max-new-tokens", "6"])
    qb, e2 = cli("ask", ref, ["--query", "How many hearts?", "--max-new-tokens", "6"])
    check(qa is not None and qb is not None, "%s: ask failed: %s %s" % (var, e1, e2))
    if exact and qa and qb:
        check(qa["ids"] == qb["ids"], "%s: ids %s vs float model %s" % (var, qa["ids"], qb["ids"]))
    print("  %s: vector cosine %.6f, max |diff| %.3g" % (var, cos, float(np.max(np.abs(va - vb)))))


def test_imports_compute_like_their_formula_values():
    types = {}
    for var in sorted(gq.VARIANTS):
        g = rd.read_gguf(convert(os.path.join(FIX, var), var + "-probe"))
        types[var] = {t.type_name for n, t in g.tensors.items() if n.startswith("blk.") and t.type_name != "F32"}
    for var, ts in types.items():
        # a model whose blocks are all q8_z is computed in float throughout: exact
        compare(var, exact=ts == {"Q8_Z"})
    check(any("Q8_Z" in t for t in types.values()), "some variant exercises q8_z")


run(test_imports_compute_like_their_formula_values)
report("test_gptq_awq_engine")
