"""bench/peer.mjs's report (what bench/peer.sh prints): ratios ours/theirs from llama.cpp's JSON and
`clara bench --json`, for one round (the figures of that round) and for several (per thread count
the median of each figure, and of each per-round ratio its median and minimum). The inputs are
written here with figures whose results are worked out by hand below; no llama.cpp run is needed,
only node (the suite is skipped without it)."""

import json
import os
import shutil
import subprocess
import tempfile

from harness import ROOT, check, report, run

SCRIPT = os.path.join(ROOT, "bench", "peer.mjs")
OUT = tempfile.mkdtemp(prefix="clara_peer_report_")


def peer_json(path, threads_tg, cpu=None):
    """llama.cpp's figures: {threads: (pp256, pp512, tg32)}; None: that run did not measure it
    (peer.mjs --pp 0 or --tg 0 leave the key out)."""
    results = []
    for t, (pp256, pp512, tg) in threads_tg.items():
        r = {"threads": t}
        if pp256 is not None:
            r["pp256"] = {"tokens": 256, "tok_s": pp256, "cpu_per_wall": 1.99}
            r["pp512"] = {"tokens": 512, "tok_s": pp512, "cpu_per_wall": 1.99}
        if tg is not None:
            r["tg32"] = {"tokens": 32, "tok_s": tg, "cpu_per_wall": 1.9}
        results.append(r)
    doc = {"engine": "llama.cpp", "package": "node-llama-cpp@3.21.1", "build_type": "prebuilt",
           "llama_cpp": {"release": "v0.4.0", "commit": "80fb11ac"},
           "model": {"path": "base.gguf", "bytes": 4109035808, "type": "llama 7B Q4_0"},
           "reps": 3, "warmup": 1, "tg_prompt": 208, "seed": 1, "results": results}
    if cpu is not None:
        doc["cpu"] = cpu
    with open(path, "w") as f:
        f.write("peer.mjs: progress lines are skipped\n" + json.dumps(doc) + "\n")
    return path


def ours_json(path, threads, compress_b16, decode, cpu=None, roofline=None):
    """`clara bench --json`; compress_b16 None: --parts answer, decode None: --parts compress;
    roofline (read GB/s, decode roofline tok/s): the machine's limits measured beside the answer
    (None: --no-roofline)."""
    comp = [] if compress_b16 is None else [
        {"batch": 1, "tokens_per_s": 70.0, "docs_per_s": 0.27},
        {"batch": 16, "tokens_per_s": compress_b16, "docs_per_s": compress_b16 / 256}]
    answer = None if decode is None else {"prefill_tok_s": 80.0, "decode_tok_s": decode}
    doc = {"results": [{"threads": threads, "compress": comp, "answer": answer}]}
    if roofline is not None:
        doc["machine"] = {"threads": [{"threads": threads, "mem_read_gbs": roofline[0]}]}
        answer["decode_roofline_tok_s"] = roofline[1]
    if cpu is not None:
        doc["cpu"] = cpu
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def report_of(*args):
    p = subprocess.run(["node", SCRIPT] + list(args) + ["--json"], capture_output=True, text=True)
    return p.returncode, (json.loads(p.stdout) if p.returncode == 0 else None), p.stderr


def f(name):
    return os.path.join(OUT, name)


def test_one_round():
    rc, out, err = report_of("--report", peer_json(f("p1"), {2: (40.0, 50.0, 10.0)}),
                             "--ours", "2=" + ours_json(f("o1"), 2, 100.0, 15.0))
    check(rc == 0, "one round: exit %d (%s)" % (rc, err.strip()))
    if rc:
        return
    c = out["comparison"][0]
    check(c["threads"] == 2 and c["theirs"] == {"pp256": 40.0, "pp512": 50.0, "tg": 10.0},
          "one round: theirs %r" % c["theirs"])
    check(c["ratios"] == {"compress_b16_vs_pp256": 2.5, "compress_b16_vs_pp512": 2.0,
                          "decode_vs_tg": 1.5}, "one round: ratios %r" % c["ratios"])
    check("rounds" not in out, "one round: no 'rounds' key (the output is as before --rounds)")
    check("| 2 | 40.0 | 50.0 | 10.0 |" in err, "one round: the table's row:\n" + err)


def test_three_rounds():
    # tg 10, 8, 12 and decode 15, 7, 13: per-round ratios 1.5, 0.875, 1.0833; compression 100,
    # 90, 120 against pp256 40, 45, 40: 2.5, 2.0, 3.0
    rounds = [((40.0, 50.0, 10.0), 100.0, 15.0), ((45.0, 45.0, 8.0), 90.0, 7.0),
              ((40.0, 40.0, 12.0), 120.0, 13.0)]
    args = []
    for i, (theirs, comp, dec) in enumerate(rounds):
        args += ["--report", peer_json(f("r%d" % i), {2: theirs}),
                 "--ours", "2=" + ours_json(f("q%d" % i), 2, comp, dec)]
    rc, out, err = report_of(*args)
    check(rc == 0, "three rounds: exit %d (%s)" % (rc, err.strip()))
    if rc:
        return
    c = out["comparison"][0]
    check(c["rounds"] == 3, "three rounds: counted %r" % c.get("rounds"))
    check(c["theirs"] == {"pp256": 40.0, "pp512": 45.0, "tg": 10.0}, "medians of theirs %r" % c["theirs"])
    check(c["ours"]["decode_tok_s"] == 13.0 and c["ours"]["compress_b16_tok_s"] == 100.0,
          "medians of ours %r" % c["ours"])
    # the median of the ratios (1.083), not the ratio of the medians (13 / 10 = 1.3)
    check(c["ratios"]["decode_vs_tg"] == 1.083, "median decode ratio %r" % c["ratios"])
    check(c["min_ratios"]["decode_vs_tg"] == 0.875, "lowest decode ratio %r" % c["min_ratios"])
    check(c["ratios"]["compress_b16_vs_pp256"] == 2.5 and
          c["min_ratios"]["compress_b16_vs_pp256"] == 2.0, "compression ratios %r %r" %
          (c["ratios"], c["min_ratios"]))
    per = [r["comparison"][0]["ratios"]["decode_vs_tg"] for r in out["rounds"]]
    check(per == [1.5, 0.875, 1.083], "each round's decode ratio %r" % per)
    check("| 2 (round 2) | 45.0 | 45.0 | 8.0 |" in err and "| 2 (median) |" in err,
          "three rounds: the table has each round and the medians:\n" + err)
    check("3 rounds: a median row's ratio is the median of the rounds' ratios; the lowest: "
          "ours/pp256 2.00, ours/pp512 2.00, ours/tg 0.88" in err,
          "three rounds: the lowest ratios line:\n" + err)


def test_paired_round():
    # what peer.sh gives per round: llama.cpp's pp and tg from separate runs per thread count, ours
    # from --parts compress and --parts answer; 1 thread: pp256 20, tg 5 against 50 and 6 (2.5,
    # 1.2); 2 threads: pp256 40, pp512 50, tg 10 against 90 and 9 (2.25, 1.8, 0.9)
    args = ["--report", peer_json(f("pp1"), {1: (20.0, 25.0, None)}),
            "--also", peer_json(f("tg1"), {1: (None, None, 5.0)}),
            "--also", peer_json(f("pp2"), {2: (40.0, 50.0, None)}),
            "--also", peer_json(f("tg2"), {2: (None, None, 10.0)}),
            "--ours", "1=" + ours_json(f("c1"), 1, 50.0, None),
            "--ours", "1=" + ours_json(f("a1"), 1, None, 6.0),
            "--ours", "2=" + ours_json(f("c2"), 2, 90.0, None),
            "--ours", "2=" + ours_json(f("a2"), 2, None, 9.0)]
    rc, out, err = report_of(*args)
    check(rc == 0, "paired round: exit %d (%s)" % (rc, err.strip()))
    if rc:
        return
    got = {c["threads"]: (c["theirs"], c["ratios"]) for c in out["comparison"]}
    check(got.get(1) == ({"pp256": 20.0, "pp512": 25.0, "tg": 5.0},
                         {"compress_b16_vs_pp256": 2.5, "compress_b16_vs_pp512": 2.0,
                          "decode_vs_tg": 1.2}), "paired round, 1 thread: %r" % (got.get(1),))
    check(got.get(2) == ({"pp256": 40.0, "pp512": 50.0, "tg": 10.0},
                         {"compress_b16_vs_pp256": 2.25, "compress_b16_vs_pp512": 1.8,
                          "decode_vs_tg": 0.9}), "paired round, 2 threads: %r" % (got.get(2),))
    check("| 2 | 40.0 | 50.0 | 10.0 | 1.99, 1.90 | 90.0 | 2.25 | 1.80 | 9.0 | 0.90 |" in err,
          "paired round: the 2-thread row, cpu/wall from both runs:\n" + err)
    check("who goes first alternating" in err, "paired round: the header says how it paired:\n" + err)


def test_roofline():
    # both decodes against the roofline ours measured beside its answer (the same base weights are
    # read per token): rounds of (read GB/s, roofline tok/s, ours, theirs) = (48, 12, 9, 10): 75%,
    # 83.3%; (33, 8, 7.6, 7.2): 95%, 90%; (40, 10, 9.5, 8): 95%, 80%. Medians: 40 GB/s, 10 tok/s,
    # ours 95%, theirs 83.3%.
    rounds = [(48.0, 12.0, 9.0, 10.0), (33.0, 8.0, 7.6, 7.2), (40.0, 10.0, 9.5, 8.0)]
    args = []
    for i, (gbs, roof, dec, tg) in enumerate(rounds):
        args += ["--report", peer_json(f("rf%d" % i), {2: (40.0, 50.0, tg)}),
                 "--ours", "2=" + ours_json(f("rq%d" % i), 2, None, dec, roofline=(gbs, roof))]
    rc, out, err = report_of(*args)
    check(rc == 0, "roofline: exit %d (%s)" % (rc, err.strip()))
    if rc:
        return
    per = [r["comparison"][0]["roofline"] for r in out["rounds"]]
    check(per[0] == {"read_gbs": 48.0, "tok_s": 12.0, "ours_pct": 75.0, "theirs_pct": 83.3},
          "roofline, round 1: %r" % per[0])
    check([p["ours_pct"] for p in per] == [75.0, 95.0, 95.0] and
          [p["theirs_pct"] for p in per] == [83.3, 90.0, 80.0], "roofline, each round: %r" % per)
    med = out["comparison"][0]["roofline"]
    check(med == {"read_gbs": 40.0, "tok_s": 10.0, "ours_pct": 95.0, "theirs_pct": 83.3},
          "roofline, medians: %r" % med)
    check("| 9.0 | 0.90 | 48.0 | 12.0 (75%, 83%) |" in err,
          "roofline: round 1's row ends with read GB/s and the roofline:\n" + err)
    # --no-roofline (no machine limits): n/a, and no roofline object
    rc, out, err = report_of("--report", peer_json(f("rn"), {2: (40.0, 50.0, 10.0)}),
                             "--ours", "2=" + ours_json(f("rno"), 2, None, 9.0))
    check(rc == 0 and out["comparison"][0]["roofline"] is None and
          "| 9.0 | 0.90 | n/a | n/a |" in err, "no roofline measured: %r\n%s" %
          (out and out["comparison"][0].get("roofline"), err))


def this_cpu():
    """vendor, family, model of this machine from /proc/cpuinfo (what peer.mjs labels with)."""
    with open("/proc/cpuinfo") as f:
        first = f.read().split("\n\n")[0]
    kv = dict((k.strip(), v.strip()) for k, v in
              (line.split(":", 1) for line in first.splitlines() if ":" in line))
    return kv.get("vendor_id"), int(kv.get("cpu family")), int(kv.get("model"))


def test_cpu_labels():
    # the peer's record of its CPU labels every figure; the kind comes from clara bench's "cpu"
    zen4 = {"vendor": "AuthenticAMD", "family": 25, "model": 17, "name": "AMD EPYC 9R14",
            "kind": "other"}
    rc, out, err = report_of("--report", peer_json(f("c1"), {2: (19.0, 20.0, 6.5)}, zen4),
                             "--ours", "2=" + ours_json(f("d1"), 2, 39.0, 5.6,
                                                        {"kind": "zen4", "family": 25}))
    check(rc == 0, "cpu labels: exit %d (%s)" % (rc, err.strip()))
    if rc:
        return
    check(out["cpu"]["kind"] == "zen4" and out["cpu"]["model"] == 17 and
          out["cpu"]["name"] == "AMD EPYC 9R14", "cpu labels: top-level cpu %r" % out["cpu"])
    check([c["cpu"] for c in out["comparison"]] == ["zen4 25/17"],
          "cpu labels: each row's cpu %r" % [c.get("cpu") for c in out["comparison"]])
    check("cpu: AMD EPYC 9R14 (AuthenticAMD family 25 model 17, kind zen4)" in err,
          "cpu labels: the table's cpu line:\n" + err)
    check("| zen4 25/17 | 2 | 19.0 | 20.0 | 6.5 |" in err, "cpu labels: the row:\n" + err)
    # a peer file from before the label: this machine's CPU, from /proc/cpuinfo
    if os.path.exists("/proc/cpuinfo"):
        rc, out, err = report_of("--report", peer_json(f("c2"), {2: (40.0, 50.0, 10.0)}))
        vendor, fam, model = this_cpu()
        check(rc == 0 and out["cpu"]["vendor"] == vendor and out["cpu"]["family"] == fam and
              out["cpu"]["model"] == model and out["comparison"][0]["cpu"].endswith(
                  " %d/%d" % (fam, model)), "cpu labels, unlabelled peer file: %r" %
              (out and out["cpu"],))


def test_bad_arguments():
    rc, _, err = report_of("--ours", "2=" + f("o1"), "--report", f("p1"))
    check(rc == 2 and "--ours needs a --report before it" in err, "ours first: %d %s" % (rc, err))
    rc, _, err = report_of("--also", f("p1"), "--report", f("p1"))
    check(rc == 2 and "--also needs a --report before it" in err, "also first: %d %s" % (rc, err))
    rc, _, err = report_of("--report", f("missing.json"))
    check(rc == 2 and "missing.json" in err, "missing file: %d %s" % (rc, err))


if not shutil.which("node"):
    print("SKIP test_peer_report.py: node is not installed")
else:
    run(test_one_round)
    run(test_three_rounds)
    run(test_paired_round)
    run(test_roofline)
    run(test_cpu_labels)
    run(test_bad_arguments)
shutil.rmtree(OUT, True)
report("test_peer_report.py")
