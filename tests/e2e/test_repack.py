"""Weights repacked at load for the AVX-512 kernels (src/cpu/repack.h, src/model_repack.c): the
q4_0 / q8_0 linear matrices and the output matrix of a model are copied into the kernels' group
order when the AVX-512 level is in use, and the answers must be the same bits as from the file's
rows (CLARA_REPACK=0). The size reported (`cpu_repacked_bytes` in --json) is checked against the
layout's formula applied to the GGUF's own tensor list: per matrix, groups of 16 rows (rounded up)
x pairs of 32-column blocks (rounded up) x (64 bytes of scales + 2 x 16 rows' codes of a block)."""

import json
import os
import subprocess

from harness import CLARA, FIXTURES, built_with_vulkan, check, report, run
from engine_cases import gguf
import gen_fixtures as gf
import readers as rd

LINEAR = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
CODE_BYTES = {"q4_0": 16 * 16, "q8_0": 16 * 32}
DOC = "The Avon flows past the old mill, where the miller keeps bees and a boat."
QUERY = "Who keeps bees by the river?"


def cpu_has_avx512():
    """What dispatch.c asks of the AVX-512 level: F, BW, VL, FMA and F16C."""
    with open("/proc/cpuinfo") as f:
        flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    return all(x in flags for x in ("avx512f", "avx512bw", "avx512vl", "fma", "f16c"))


def expected_bytes(path, cpu_layers=None):
    """The layout's size for the output matrix and the linear maps of layers [0, cpu_layers)."""
    g = rd.read_gguf(path)
    total = 0
    for name, t in g.tensors.items():
        parts = name.split(".")
        linear = parts[0] == "blk" and parts[2] in LINEAR and (cpu_layers is None or
                                                               int(parts[1]) < cpu_layers)
        if not (linear or name == "output.weight") or t.type_name.lower() not in CODE_BYTES:
            continue
        cols, rows = t.dims[0], t.dims[1]
        total += (rows + 15) // 16 * ((cols // 32 + 1) // 2) * (64 + 2 * CODE_BYTES[t.type_name.lower()])
    return total


def clara(cmd, model, env_extra, *extra):
    env = dict(os.environ)
    env.pop("CLARA_REPACK", None)
    env.update(env_extra)
    args = [CLARA, cmd, "--model", model, "--json", "--threads", "2", "--doc", DOC] + list(extra)
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


gf.ensure(FIXTURES)
run(test_size_and_when)
run(test_device_layers)
run(test_same_bits)
report("test_repack")
