"""Reduced precision and quantization: the fidelity cases of test_engine.py run on bf16, f16,
q8_0, q6_k, q5_k_m, q5_1, q5_0, q4_1, q4_k_m and q4_0 GGUFs of the fixtures and are compared with the float32 reference.

Random tiny models produce near-ties that lower precision may legitimately flip, so a generation
case agrees when its ids equal the reference's or first diverge at a step where the reference's
top-2 logit gap is below the type's near-tie threshold. Requirements (issues: engine for bf16/f16,
quantization for q8_0): ≥ 95% agreement and vectors within the bound (relative L2 error per
document, docs/PRECISION.md and docs/QUANTIZATION.md). The other types must run every case end
to end; their figures are printed (not bounded). Prints per type: strict and near-tie-aware
agreement, max and mean relative first-step logit error, vector relative error and cosine."""

import numpy as np

from harness import FIXTURES, check, report, run
from engine_cases import cases, clara, expected
import gen_fixtures as gf

# type: (near-tie threshold, vector relative error bound or None, required agreement or None)
TYPES = {
    "bf16": (0.05, 0.05, 0.95),
    "f16": (0.05, 0.005, 0.95),
    "q8_0": (0.15, 0.10, 0.95),
    "q6_k": (0.15, None, None),
    "q5_k_m": (0.15, None, None),
    "q5_1": (0.15, None, None),
    "q5_0": (0.15, None, None),
    "q4_1": (0.15, None, None),
    "q4_k_m": (0.15, None, None),
    "q4_0": (0.15, None, None),
}
_expected = {}


def divergence_ok(got, want, gaps, near_tie):
    """(strictly equal, equal or first divergence at a near-tie step)."""
    if got == want:
        return True, True
    j = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return False, j < len(gaps) and gaps[j] < near_tie


def rel_logit_error(got, want):
    g, w = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(g - w)) / np.max(np.abs(w))), float(np.mean(np.abs(g - w)) / np.mean(np.abs(w)))


def measure(typ):
    near_tie, vec_bound, need = TYPES[typ]
    strict = aware = n_gen = 0
    vec_rel, vec_cos, lmax, lmean = [], [], [], []
    for c in cases():
        name, cmd, var, pol, docs, q, extra = c
        if name not in _expected:
            _expected[name] = expected(c)
        want = _expected[name]
        got, err = clara(cmd, var, docs, q, pol, typ=typ, extra=extra)
        if not check(got is not None, "%s/%s: clara failed: %s" % (typ, name, err.strip())):
            continue
        if cmd == "compress":
            for d, ref_v in zip(got["docs"], want[0]):
                v, r = np.asarray(d["vectors"], np.float64).ravel(), np.asarray(ref_v, np.float64).ravel()
                vec_rel.append(np.linalg.norm(v - r) / np.linalg.norm(r))
                vec_cos.append(v @ r / (np.linalg.norm(v) * np.linalg.norm(r)))
            continue
        n_gen += 1
        s, a = divergence_ok(got["ids"], want["ids"], want["top2_gaps"], near_tie)
        strict += s
        aware += a
        mx, mn = rel_logit_error(got["first_logits"], want["first_logits"])
        lmax.append(mx)
        lmean.append(mn)
        check(np.all(np.isfinite(got["first_logits"])), "%s/%s: non-finite logits" % (typ, name))
    print("%-6s %d generation cases: identical %d (%.1f%%), identical-or-near-tie(<%.2f) %d (%.1f%%); "
          "first-step logits relative error max %.3g mean %.3g; vectors relative error max %.3g, "
          "cosine min %.6f" % (typ, n_gen, strict, 100.0 * strict / n_gen, near_tie, aware,
                               100.0 * aware / n_gen, max(lmax), float(np.mean(lmean)), max(vec_rel),
                               min(vec_cos)))
    if need is not None:
        check(aware >= need * n_gen, "%s: only %d of %d cases agree (near-tie aware)" % (typ, aware, n_gen))
    if vec_bound is not None:
        check(max(vec_rel) <= vec_bound, "%s: vector relative error %.4g above the documented %.4g" % (
            typ, max(vec_rel), vec_bound))


def test_types():
    gf.ensure(FIXTURES)
    for t in TYPES:
        run(lambda: measure(t))


run(test_types)
report("test_precision")
