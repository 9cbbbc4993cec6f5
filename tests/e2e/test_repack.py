"""Weights repacked at load for the AVX-512 kernels (src/cpu/repack.h, src/model_repack.c): the
q4_0 / q8_0 / q4_k / q6_k linear matrices and the output matrix of a model are copied into the
kernels' group order when the AVX-512 level is in use. q4_0 / q8_0 answers must be the same bits
as from the file's rows (CLARA_REPACK=0); q4_k / q6_k decode sums in the packed GEMM's order from
the copy (bit for bit against the GEMM: tests/unit/test_kernels.c), in another order from the
file's rows. The size reported (`cpu_repacked_bytes` in --json) is checked against the layout's
formula applied to the GGUF's own tensor list: per matrix, groups of 16 rows (rounded up) x pairs
of 32-column blocks (rounded up) x (64 bytes of scales + 2 x 16 rows' codes of a block) for q4_0
/ q8_0; x super-blocks of 256 columns x 16 rows x 144 (q4_k) or 212 (q6_k) bytes."""

import json
import os
import shutil
import subprocess
import tempfile

from harness import CLARA, FIXTURES, built_with_vulkan, check, report, run
from engine_cases import gguf
import gen_fixtures as gf
import readers as rd

LINEAR = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
CODE_BYTES = {"q4_0": 16 * 16, "q8_0": 16 * 32}
ROW_SUPER_BLOCK_BYTES = {"q4_k": 144, "q6_k": 212}
DOC = "The Avon flows past the old mill, where the miller keeps bees and a boat."
QUERY = "Who keeps bees by the river?"


def cpu_has_avx512():
    """What dispatch.c asks of the AVX-512 level: F, BW, VL, FMA and F16C."""
    with open("/proc/cpuinfo") as f:
        flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    return all(x in flags for x in ("avx512f", "avx512bw", "avx512vl", "fma", "f16c"))


def expected_bytes(path, cpu_layers=None, clara_file=None):
    """The layout's size for the output matrix and the linear maps of layers [0, cpu_layers); in
    two-file mode the CLaRa file's tensors (its output matrix, for its added tokens) replace the
    base's of the same name."""
    tensors = dict(rd.read_gguf(path).tensors)
    if clara_file:
        tensors.update(rd.read_gguf(clara_file).tensors)
    total = 0
    for name, t in tensors.items():
        parts = name.split(".")
        linear = parts[0] == "blk" and parts[2] in LINEAR and (cpu_layers is None or
                                                               int(parts[1]) < cpu_layers)
        typ = t.type_name.lower()
        if not (linear or name == "output.weight"):
            continue
        cols, rows = t.dims[0], t.dims[1]
        groups = (rows + 15) // 16
        if typ in CODE_BYTES:
            total += groups * ((cols // 32 + 1) // 2) * (64 + 2 * CODE_BYTES[typ])
        elif typ in ROW_SUPER_BLOCK_BYTES:
            total += groups * 16 * (cols // 256) * ROW_SUPER_BLOCK_BYTES[typ]
    return total


def clara(cmd, model, env_extra, *extra):
    """`clara CMD --json` on model (a path, or a (base, clara) pair of files)."""
    env = dict(os.environ)
    env.pop("CLARA_REPACK", None)
    env.update(env_extra)
    where = ["--model", model] if isinstance(model, str) else ["--base", model[0], "--clara", model[1]]
    args = [CLARA, cmd] + where + ["--json", "--threads", "2", "--doc", DOC] + list(extra)
    p = subprocess.run(args, capture_output=True, env=env)
    if not check(p.returncode == 0, "%s %s: %s" % (cmd, env_extra, p.stderr.decode()[-300:])):
        return None
    return json.loads(p.stdout)


def test_size_and_when():
    avx512 = cpu_has_avx512()
    print("this CPU %s the AVX-512 level: repacking is %s here" %
          ("has" if avx512 else "lacks", "expected" if avx512 else "not expected"))
    for typ in ("q4_0", "q8_0"):
        model = gguf("instruct16", typ)
        want = expected_bytes(model)
        check(want > 0, "%s: the fixture has no %s matrices" % (typ, typ))
        got = clara("compress", model, {})
        if got is not None:
            check(got["cpu_repacked_bytes"] == (want if avx512 else 0),
                  "%s: %s bytes repacked, the layout gives %d" % (typ, got["cpu_repacked_bytes"], want))
        off = clara("compress", model, {"CLARA_REPACK": "0"})
        if off is not None:
            check(off["cpu_repacked_bytes"] == 0, "%s: CLARA_REPACK=0 repacked %s bytes" % (
                typ, off["cpu_repacked_bytes"]))
        avx2 = clara("compress", model, {"CLARA_ISA": "avx2"})
        if avx2 is not None:
            check(avx2["cpu_repacked_bytes"] == 0, "%s: the AVX2 level repacked %s bytes" % (
                typ, avx2["cpu_repacked_bytes"]))
    # a float model has nothing to repack
    got = clara("compress", gguf("instruct16", "f16"), {})
    if got is not None:
        check(got["cpu_repacked_bytes"] == 0, "f16: %s bytes repacked" % got["cpu_repacked_bytes"])


def test_device_layers():
    """Layers a Vulkan device runs are not repacked (the file alone holds them; their upload reads
    it): all on lavapipe, the output matrix only (it stays on the CPU); one of the 2 layers, the
    other and the output. In a build with the backend lavapipe must be there (CI installs it)."""
    if not built_with_vulkan():
        print("built without the Vulkan backend: the placement cases do not apply")
        return
    if not cpu_has_avx512():
        return
    for typ in ("q4_0", "q8_0"):
        model = gguf("instruct16", typ)
        n_layer = rd.read_gguf(model).kv["llama.block_count"]
        for gpu_layers, cpu_layers in ((None, 0), (1, n_layer - 1)):
            extra = ("--backend", "vulkan") + (("--gpu-layers", str(gpu_layers)) if gpu_layers else ())
            got = clara("compress", model, {}, *extra)
            if got is None:
                continue
            check(got["backend"] == "vulkan", "%s %s: ran on %s" % (typ, extra, got["backend"]))
            want = expected_bytes(model, cpu_layers)
            check(got["cpu_repacked_bytes"] == want, "%s %s: %s bytes repacked, want %d" % (
                typ, extra, got["cpu_repacked_bytes"], want))


def test_same_bits():
    """Compression vectors, answer ids and first-step logits: the same values either way (all of
    the --json output but the timings and the repacked size)."""
    for typ in ("q4_0", "q8_0"):
        model = gguf("instruct16", typ)
        for cmd, extra in (("compress", ()), ("ask", ("--query", QUERY, "--dump-logits",
                                                     "--max-new-tokens", "12"))):
            on, off = clara(cmd, model, {}, *extra), clara(cmd, model, {"CLARA_REPACK": "0"}, *extra)
            if on is None or off is None:
                continue
            for k in ("cpu_repacked_bytes", "backend", "device", "timings"):
                on.pop(k, None), off.pop(k, None)
            check("ids" in on or "docs" in on, "%s %s: no ids or vectors in %s" % (typ, cmd, sorted(on)))
            check(on == off, "%s %s: the output differs with the repacked weights" % (typ, cmd))


def test_k_quants():
    """A generated q4_k_m pair (its linear maps q4_k and q6_k, 256 columns: the fixtures' 64 take
    no k-quants): the size repacked follows the layout, CLARA_REPACK=0 repacks nothing, and the
    answer from the copy agrees with the file's rows as two orders of f32 sums do: first-step
    logits within 1e-4 (2.4e-7 measured; the scalar reference level, which rounds its own way,
    is 0.014 from both on this random model, and a wrong code, scale or min moves them by far
    more), and the same ids wherever each step's top-2 gap is far wider than that."""
    out = tempfile.mkdtemp(prefix="clara_repack_")
    p = subprocess.run([CLARA, "bench", "--generate", "tiny", "--type", "q4_k_m", "--out", out,
                        "--seed", "1", "--quiet"], capture_output=True, text=True)
    if not check(p.returncode == 0, "generate: %s" % p.stderr[-300:]):
        return
    pair = (os.path.join(out, "base.gguf"), os.path.join(out, "clara.gguf"))
    types = {t.type_name.lower() for t in rd.read_gguf(pair[0]).tensors.values()}
    check({"q4_k", "q6_k"} <= types, "the q4_k_m pair has %s" % sorted(types))
    want = expected_bytes(pair[0], clara_file=pair[1])
    ask = ("--query", QUERY, "--dump-logits", "--max-new-tokens", "12")
    on, off = clara("ask", pair, {}, *ask), clara("ask", pair, {"CLARA_REPACK": "0"}, *ask)
    if on is None or off is None:
        return
    check(on["cpu_repacked_bytes"] == (want if cpu_has_avx512() else 0),
          "q4_k_m: %s bytes repacked, the layout gives %d" % (on["cpu_repacked_bytes"], want))
    check(off["cpu_repacked_bytes"] == 0, "q4_k_m: CLARA_REPACK=0 repacked %s bytes" %
          off["cpu_repacked_bytes"])
    diff = max(abs(a - b) for a, b in zip(on["first_logits"], off["first_logits"]))
    check(len(on["first_logits"]) == len(off["first_logits"]) > 0 and diff < 1e-4,
          "q4_k_m: first-step logits differ by %g between the copy and the file's rows" % diff)
    if min(on["top2_gaps"]) > 1e-3:
        check(on["ids"] == off["ids"], "q4_k_m: ids %s from the copy, %s from the file's rows" %
              (on["ids"], off["ids"]))
    else:
        check(False, "q4_k_m: a top-2 gap of %g: pick a query whose answer has no near tie" %
              min(on["top2_gaps"]))
    print("q4_k_m: %d bytes repacked; first-step logits within %.4g of the file's rows" %
          (on["cpu_repacked_bytes"], diff))
    shutil.rmtree(out, ignore_errors=True)


gf.ensure(FIXTURES)
run(test_size_and_when)
run(test_device_layers)
run(test_same_bits)
run(test_k_quants)
report("test_repack")
