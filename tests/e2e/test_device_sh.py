"""bench/device.sh (the prepared run for a GPU machine, docs/VULKAN.md) on this machine's Vulkan
device (lavapipe in CI) with the tiny shape: the figures file is written, names the device that
vulkaninfo names, holds our figures for every type asked (positive, every layer on the device),
the fidelity line (a few cases of test_vulkan_engine.py) and the reasons for what did not run;
the time budget is kept and said; llama.cpp on the GPU without its prebuilt package and no
reachable npm registry is reported as not run with what to do, not silently. Also peer.mjs's and
peer.sh's --gpu argument (off|vulkan|cuda; anything else refused). In a build without the Vulkan
backend device.sh must refuse to run (exit 3)."""

import os
import re
import shutil
import subprocess
import sys
import tempfile

from harness import BUILD, ROOT, built_with_vulkan, check, report, run

DEVICE_SH = os.path.join(ROOT, "bench", "device.sh")
REL_BUILD = os.path.relpath(BUILD, ROOT) if BUILD.startswith(ROOT + os.sep) else BUILD
TMP = tempfile.mkdtemp(prefix="clara-device-test.")
FIDELITY_CASES = "test_device_present,test_bad_conditions"


def device_sh(args, env=None, timeout=240):
    e = dict(os.environ, BUILD=REL_BUILD, PYTHON=sys.executable)
    e.pop("OUT", None)
    e.update(env or {})
    return subprocess.run(["bash", DEVICE_SH] + args, capture_output=True, text=True, env=e,
                          timeout=timeout, cwd=TMP)


def vulkan_device_name():
    p = subprocess.run(["vulkaninfo", "--summary"], capture_output=True, text=True)
    m = re.search(r"deviceName\s*=\s*(.+)", p.stdout)
    return m.group(1).strip() if m else None


def read(path):
    with open(path) as f:
        return f.read()


def section(text, typ):
    """The lines of one type's section of the figures file."""
    m = re.search(r"^== %s \(.*?(?=^== |\Z)" % re.escape(typ), text, re.S | re.M)
    return m.group(0) if m else ""


def figure(sec, label):
    """Our figure in the row LABEL of a type's table (None when n/a or missing)."""
    m = re.search(r"^\| %s \| ([0-9.]+|n/a) \|" % re.escape(label), sec, re.M)
    return float(m.group(1)) if m and m.group(1) != "n/a" else None


def test_tiny_run():
    out = os.path.join(TMP, "figs", "device-figures.txt")
    p = device_sh(["--shape", "tiny", "--types", "q4_0,f16", "--skip-peer", "--out", out,
                   "--fidelity-cases", FIDELITY_CASES, "--budget-s", "200"])
    if not check(p.returncode == 0, "device.sh exit %d: %s" % (p.returncode, p.stderr[-1500:])):
        return
    if not check(os.path.isfile(out), "no figures file at %s" % out):
        return
    check(not os.path.exists(out + ".tmp"), "the temporary figures file was left behind")
    check(os.path.isfile(os.path.join(TMP, "figs", "device-logs", "build.log")), "no build log beside it")
    text = read(out)
    name = vulkan_device_name()
    check(name is not None and "llvmpipe" in name, "vulkaninfo names no llvmpipe device: %r" % name)
    check(name is not None and ("vulkan: deviceName         = %s" % name) in text,
          "the machine lines do not name %r:\n%s" % (name, text[:800]))
    check(re.search(r"^cpu: .+ \(\d+ physical cores, \d+ threads\)$", text, re.M) is not None,
          "no cpu line:\n%s" % text[:600])
    check(re.search(r"^fidelity: passed \([1-9]\d* passed, 0 failed; only the cases %s" % FIDELITY_CASES,
                    text, re.M) is not None, "the fidelity line:\n%s" % text)
    check(re.search(r"^build: ok \(Vulkan backend on", text, re.M) is not None, "the build line")
    check(re.search(r"^time: \d+ s of the 200 s budget$", text, re.M) is not None, "the time line")
    for typ in ("q4_0", "f16"):
        sec = section(text, typ)
        if not check(sec, "no section for %s:\n%s" % (typ, text)):
            continue
        check(re.search(r"ours: clara bench --backend vulkan, \d+ threads, on GPU %s \(cpu, 2/2 layers "
                        r"on the device, \d+ MiB used\); CPU .+" % re.escape(name or "?"), sec) is not None,
              "%s: the ours line names the device, all layers and the CPU:\n%s" % (typ, sec))
        # --shape tiny times one batch of 4, compared in place of batch 16
        for label in ("compression, batch 4", "answer decode", "answer prefill"):
            v = figure(sec, label)
            check(v is not None and v > 0, "%s: %s is %r:\n%s" % (typ, label, v, sec))
        check("llama.cpp on the GPU (vulkan): not run (--skip-peer)" in sec, "%s: the peer line:\n%s" % (typ, sec))
        check(re.search(r"^file: .*device-models/tiny-%s/base\.gguf, [0-9.]+ GB$" % typ, sec, re.M) is not None,
              "%s: the base file line" % typ)


def test_peer_not_installed():
    # the GPU prebuilt is missing and npm reaches no registry (as on the device machine): said so
    out = os.path.join(TMP, "nopeer.txt")
    empty = os.path.join(TMP, "empty-peer")
    os.makedirs(empty, exist_ok=True)
    p = device_sh(["--shape", "tiny", "--types", "q4_0", "--skip-fidelity", "--out", out],
                  env={"PEER_DIR": empty, "npm_config_registry": "http://127.0.0.1:9/",
                       "npm_config_fetch_retries": "0"})
    if not check(p.returncode == 0, "device.sh exit %d: %s" % (p.returncode, p.stderr[-1500:])):
        return
    text = read(out)
    check("llama.cpp on the GPU (vulkan): not run (node-llama-cpp GPU prebuilt not installed: run "
          "bench/peer.sh --gpu vulkan once on a machine with network, then carry PEER_DIR)" in text,
          "the missing-prebuilt line:\n%s" % text)
    check("fidelity: not run (--skip-fidelity)" in text, "the skipped fidelity line")
    check(figure(section(text, "q4_0"), "answer decode") is not None, "ours still measured")


def test_budget():
    # a budget too small for anything past the build: every step skipped, and said
    out = os.path.join(TMP, "budget.txt")
    p = device_sh(["--shape", "tiny", "--types", "q8_0", "--out", out, "--budget-s", "1"])
    if not check(p.returncode == 0, "device.sh exit %d: %s" % (p.returncode, p.stderr[-800:])):
        return
    text = read(out)
    check(re.search(r"^skipped: the fidelity suite \(30 s needed, -?\d+ s left of the 1 s budget or this type's share\)$", text, re.M)
          is not None, "the fidelity skip:\n%s" % text)
    check("ours: n/a - skipped (time budget)" in section(text, "q8_0"), "the q8_0 skip:\n%s" % text)
    check(figure(section(text, "q8_0"), "compression, batch 16") is None, "a figure without a run")
    check("| compression, batch 16 | n/a | not run |" in section(text, "q8_0"), "the n/a row:\n%s" % text)


def test_bad_peer_tar():
    # a --peer-tar without node-llama-cpp in it is refused (exit 3), not run as if installed
    d = os.path.join(TMP, "not-peer")
    os.makedirs(os.path.join(d, "node_modules", "something"), exist_ok=True)
    tar = os.path.join(TMP, "not-peer.tar.xz")
    subprocess.run(["tar", "-C", TMP, "-cJf", tar, "not-peer"], check=True)
    p = device_sh(["--shape", "tiny", "--types", "q4_0", "--skip-fidelity", "--out",
                   os.path.join(TMP, "t.txt"), "--peer-tar", tar])
    check(p.returncode == 3 and "holds no node_modules/node-llama-cpp" in p.stderr,
          "bad --peer-tar: exit %d, %r" % (p.returncode, p.stderr[-400:]))
    p = device_sh(["--peer-tar", os.path.join(TMP, "nonexistent.tar.xz")], timeout=30)
    check(p.returncode == 2 and "no such file" in p.stderr, "missing --peer-tar: %r" % p.stderr[-300:])


def test_bad_arguments():
    for args, want in ((["--types", "q4_0,zz"], "--types: 'zz' is not a type"),
                       (["--shape", "70b"], "--shape: 7b, 1b or tiny, got '70b'"),
                       (["--budget-s", "abc"], "--budget-s: expected a positive number"),
                       (["--frobnicate"], "unknown option '--frobnicate'"),
                       (["--out"], "bench/device.sh [--out FILE]")):
        p = device_sh(args, timeout=30)
        check(p.returncode == 2 and want in p.stderr, "%s: exit %d, %r" % (args, p.returncode, p.stderr[-300:]))


def test_peer_gpu_argument():
    node = shutil.which("node")
    if not check(node is not None, "node is needed (.ci/install-deps installs it)"):
        return
    mjs = os.path.join(ROOT, "bench", "peer.mjs")
    missing = os.path.join(TMP, "no-such-modules")
    for bad in ("metal", "VULKAN", "", "on"):
        p = subprocess.run([node, mjs, "--model", "x.gguf", "--gpu", bad, "--module-dir", missing],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode == 2 and "--gpu: off, vulkan, cuda, got '%s'" % bad in p.stderr,
              "peer.mjs --gpu %r: exit %d, %r" % (bad, p.returncode, p.stderr))
    for good in ("off", "vulkan", "cuda"):
        # accepted: the run goes on to look for the package, which is not there
        p = subprocess.run([node, mjs, "--model", "x.gguf", "--gpu", good, "--module-dir", missing],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode == 2 and "node-llama-cpp is not installed under" in p.stderr,
              "peer.mjs --gpu %s: exit %d, %r" % (good, p.returncode, p.stderr))
    p = subprocess.run([node, mjs, "--model", "x.gguf", "--gpu"], capture_output=True, text=True, timeout=30)
    check(p.returncode == 2 and "--gpu needs a value" in p.stderr, "peer.mjs --gpu without a value: %r" % p.stderr)
    p = subprocess.run(["bash", os.path.join(ROOT, "bench", "peer.sh"), "--base", "x.gguf", "--gpu", "rocm"],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 2 and "--gpu: off, vulkan or cuda, got 'rocm'" in p.stderr,
          "peer.sh --gpu rocm: exit %d, %r" % (p.returncode, p.stderr))


def test_no_backend():
    p = device_sh(["--shape", "tiny", "--types", "q4_0", "--skip-peer", "--out", os.path.join(TMP, "x.txt")])
    check(p.returncode == 3 and "the Vulkan backend was not built" in p.stderr,
          "without the backend: exit %d, %r" % (p.returncode, p.stderr[-400:]))


try:
    run(test_bad_arguments)
    run(test_peer_gpu_argument)
    if built_with_vulkan():
        run(test_tiny_run)
        run(test_budget)
        run(test_bad_peer_tar)
        run(test_peer_not_installed)
    else:
        run(test_no_backend)
finally:
    shutil.rmtree(TMP, ignore_errors=True)
report("test_device_sh")
