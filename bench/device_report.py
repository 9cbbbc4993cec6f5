#!/usr/bin/env python3
"""device_report.py - the figures file of bench/device.sh from what it collected in one directory:
machine.txt (CPU, Vulkan devices, nvidia-smi), notes.txt (build, fidelity, skipped steps, time),
and per weight type TYPE/ours.json (`clara bench --json`), TYPE/peer-GPU.json (`bench/peer.sh
--gpu GPU --json`), TYPE/files.txt and TYPE/*.note (why a figure is missing). Writes one text file
(to a temporary name, then renamed): per type a table of ours against llama.cpp on each GPU
backend, the ratios against issue 22's targets, every figure labelled with the GPU and the CPU it
was measured on. A figure that is missing is written as n/a with its reason, never left out."""

import argparse
import datetime
import json
import os
import subprocess
import sys

# issue 22: 7B q4_0 compression >= 1.0x llama.cpp's prompt processing on the same GPU, decode
# >= 0.9x its token generation
TARGET_COMPRESS = 1.0
TARGET_DECODE = 0.9


def last_json(path):
    """The last line of a file that parses as a JSON object, or None."""
    try:
        with open(path) as f:
            lines = f.read().strip().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if isinstance(v, dict):
            return v
    return None


def read_text(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def fmt(x, digits=1):
    return "n/a" if x is None else "%.*f" % (digits, x)


def ratio(a, b):
    return a / b if a is not None and b else None


def ours_figures(o):
    """compress b4/b16 tok/s, prefill and decode tok/s, device and CPU labels from clara bench."""
    res = (o.get("results") or [{}])[0]
    comp = {c.get("batch"): num(c.get("tokens_per_s")) for c in res.get("compress") or []}
    ans = res.get("answer") or {}
    dev = o.get("device") or {}
    cpu = o.get("cpu") or {}
    used = num(dev.get("bytes_used"))
    gpu = "%s (%s, %s/%s layers on the device, %s MiB used)" % (
        dev.get("name", "?"), dev.get("type", "?"), dev.get("layers", "?"), dev.get("n_layer", "?"),
        fmt(used / 2**20, 0) if used is not None else "?")
    # compared at batch 16 (bench/peer.sh's pairing), or the largest batch timed (--shape tiny)
    main_batch = 16 if 16 in comp else max([b for b in comp if isinstance(b, int)], default=16)
    return {
        "compress_main": comp.get(main_batch), "main_batch": main_batch,
        "other_batches": sorted((b, v) for b, v in comp.items() if isinstance(b, int) and b != main_batch),
        "prefill": num(ans.get("prefill_tok_s")), "decode": num(ans.get("decode_tok_s")),
        "gpu": gpu, "gpu_name": dev.get("name", "?"),
        "cpu": "%s (%s)" % (cpu.get("name", "?"), cpu.get("kind", "?")),
        "threads": res.get("threads"),
    }


def peer_figures(p):
    """pp256/pp512/tgN tok/s and labels from bench/peer.sh --json (llama.cpp on a GPU)."""
    peer = p.get("peer") or {}
    res = (peer.get("results") or [{}])[0]
    tg_key = next((k for k in res if k.startswith("tg") and k[2:].isdigit()), "tg")
    tok = lambda k: num((res.get(k) or {}).get("tok_s"))  # noqa: E731
    cpu = peer.get("cpu") or p.get("cpu") or {}
    rel = (peer.get("llama_cpp") or {}).get("release", "?")
    return {
        "pp256": tok("pp256"), "pp512": tok("pp512"), "tg": tok(tg_key), "tg_key": tg_key,
        "gpu_name": " + ".join(peer.get("gpu_devices") or []) or "?",
        "gpu": "%s (%s layers offloaded, llama.cpp %s, %s)" % (
            " + ".join(peer.get("gpu_devices") or []) or "?", peer.get("gpu_layers", "?"), rel,
            peer.get("package", "?")),
        "cpu": "%s (%s)" % (cpu.get("name", "?"), cpu.get("kind", "?")),
    }


def verdict(r, target):
    if r is None:
        return "n/a"
    return "met" if r >= target else "NOT met"


def type_section(d, t, gpus, shape):
    out = ["", "== %s (%s shape)" % (t, shape)]
    files = read_text(os.path.join(d, t, "files.txt"))
    for line in files.splitlines():
        name, size = line.rsplit(" ", 1)
        out.append("file: %s, %.3f GB" % (name, int(size) / 1e9))
    o = last_json(os.path.join(d, t, "ours.json"))
    ours = ours_figures(o) if o else None
    if ours:
        out.append("ours: clara bench --backend vulkan, %s threads, on GPU %s; CPU %s" % (
            ours["threads"], ours["gpu"], ours["cpu"]))
    else:
        why = read_text(os.path.join(d, t, "ours.note"), "clara bench wrote no JSON")
        out.append("ours: n/a - %s" % why)
    peers = {}
    for g in gpus:
        p = last_json(os.path.join(d, t, "peer-%s.json" % g))
        if p:
            peers[g] = peer_figures(p)
            out.append("llama.cpp %s: on GPU %s; CPU %s" % (g, peers[g]["gpu"], peers[g]["cpu"]))
        else:
            why = read_text(os.path.join(d, t, "peer-%s.note" % g), "peer.sh wrote no JSON")
            out.append("llama.cpp on the GPU (%s): %s" % (g, why))
    g0 = ours["gpu_name"] if ours else "?"
    out.append("| figure | ours tok/s (GPU %s) | llama.cpp | its tok/s | ours/llama.cpp | target |" % g0)
    out.append("| --- | --- | --- | --- | --- | --- |")
    pick = lambda k: ours[k] if ours else None  # noqa: E731
    comp = "compression, batch %d" % (ours["main_batch"] if ours else 16)
    rows = [(comp, "compress_main", "pp512", TARGET_COMPRESS),
            (comp, "compress_main", "pp256", None),
            ("answer decode", "decode", "tg", TARGET_DECODE),
            ("answer prefill", "prefill", "pp256", None)]
    seen = set()
    for label, ok, pk, target in rows:
        if not peers and ok in seen:
            continue
        seen.add(ok)
        if not peers:
            out.append("| %s | %s | not run | n/a | n/a | %s |" % (
                label, fmt(pick(ok)), ">= %.1f" % target if target else "-"))
        for g, pf in peers.items():
            r = ratio(pick(ok), pf[pk])
            name = pf["tg_key"] if pk == "tg" else pk
            tgt = ">= %.1f: %s" % (target, verdict(r, target)) if target else "-"
            out.append("| %s | %s | %s %s (GPU %s) | %s | %s | %s |" % (
                label, fmt(pick(ok)), g, name, pf["gpu_name"], fmt(pf[pk]), fmt(r, 2), tgt))
    for b, v in ours["other_batches"] if ours else []:
        out.append("| compression, batch %d | %s | - | - | - | - |" % (b, fmt(v)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--types", required=True)
    ap.add_argument("--shape", required=True)
    ap.add_argument("--threads", required=True)
    ap.add_argument("--gpus", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["clara-server on a GPU machine: bench/device.sh, %s, commit %s" % (now, commit),
             "targets (issue 22, 7B q4_0 on the same GPU): compression >= %.1fx llama.cpp's pp512, "
             "decode >= %.1fx its token generation" % (TARGET_COMPRESS, TARGET_DECODE),
             "models: random weights from `clara bench --generate %s` (base.gguf for both engines, "
             "clara.gguf for ours); %s threads (physical cores)" % (a.shape, a.threads)]
    lines += read_text(os.path.join(a.dir, "machine.txt")).splitlines()
    lines += read_text(os.path.join(a.dir, "notes.txt")).splitlines()
    for t in a.types.split(","):
        lines += type_section(a.dir, t, a.gpus.split(","), a.shape)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
