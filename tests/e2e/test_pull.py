"""`clara pull` against a mock Hugging Face Hub on loopback (tests/e2e/mock_hub.py) serving the
fixture checkpoints under the Hub's URL layout: both routes end in a model whose answers equal
those of the same fixtures converted locally; interrupted downloads resume (fewer bytes on the
wire than the file); corrupt files, gated and missing repositories, 500 storms, stalls and a disk
too small fail with clear errors and leave the cache as it was; Ctrl-C then pull again resumes;
two pulls at once both end well; `clara list` / `clara rm`; model names in `clara ask --model`
and in the server, which pulls on first start with /health 503 "downloading" meanwhile."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from harness import CLARA, FIXTURES, check, report, run
import gen_fixtures as gf
import mock_hub
import server_harness as sh

TMP = tempfile.mkdtemp(prefix="clara_pull_")
TOKEN = "hf_test_token_123"
NAME = "apple/CLaRa-7B-Instruct"
BASE_REPO = "mistralai/Mistral-7B-Instruct-v0.2"
GGUF_REPO = "TheBloke/Mistral-7B-Instruct-v0.2-GGUF"
Q4 = "mistral-7b-instruct-v0.2.Q4_K_M.gguf"
DOCS = ["--doc", "The Eiffel tower is in Paris.", "--doc", "Berlin is in Germany.",
        "--doc", "Oslo is cold."]
HUB = None
_n = [0]


def clara(*args, env=None, check_rc=None, timeout=120):
    p = subprocess.run([CLARA] + list(args), capture_output=True, text=True, env=env, timeout=timeout)
    if check_rc is not None:
        assert p.returncode == check_rc, "clara %s: rc %d\n%s" % (" ".join(args), p.returncode, p.stderr)
    return p


def fresh_env(token=None, **extra):
    """The pull's environment: the mock Hub, a new empty cache, no token of the user's."""
    _n[0] += 1
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("CLARA_", "HF_", "HUGGING"))}
    e.update(HF_ENDPOINT=HUB.url, CLARA_CACHE_DIR=os.path.join(TMP, "cache%d" % _n[0]),
             HF_HOME=os.path.join(TMP, "hfhome%d" % _n[0]), CLARA_PULL_RETRIES="3",
             HF_HUB_DOWNLOAD_TIMEOUT="2")
    if token:
        e["HF_TOKEN"] = token
    e.update(extra)
    return e


def entry_dir(env, sub="compression-16"):
    return os.path.join(env["CLARA_CACHE_DIR"], "models--apple--CLaRa-7B-Instruct--" + sub)


def answers(model_args, env=None):
    """ids and text of ask and paraphrase: the model's observable behaviour."""
    out = []
    for cmd in (["ask", "--query", "Where is the tower?", "--max-new-tokens", "8"] + DOCS,
                ["paraphrase", "--template", "1", "--max-new-tokens", "6"] + DOCS[:4]):
        p = clara(*(cmd + model_args + ["--json"]), env=env)
        if p.returncode != 0:
            return "error: " + p.stderr.strip()[-300:]
        j = json.loads(p.stdout)
        j.pop("timings", None)
        out.append(j)
    return out


def file_size(repo_dir, rel):
    return os.path.getsize(os.path.join(repo_dir, rel))


def parts(env):
    found = []
    for d, _, names in os.walk(env["CLARA_CACHE_DIR"]):
        found += [os.path.join(d, n) for n in names if n.endswith(".part")]
    return found


def setup():
    """Fixture repositories in the Hub's layouts and the mock Hub serving them."""
    global HUB, LOCAL_FULL, LOCAL_BASE_GGUF, CLARA_DIR
    gf.ensure(FIXTURES)
    repos = os.path.join(TMP, "repos")
    CLARA_DIR = os.path.join(repos, "clara")
    os.makedirs(CLARA_DIR)
    shutil.copytree(os.path.join(FIXTURES, "instruct16"), os.path.join(CLARA_DIR, "compression-16"))
    shutil.copytree(os.path.join(FIXTURES, "instruct128"), os.path.join(CLARA_DIR, "compression-128"))
    open(os.path.join(CLARA_DIR, "README.md"), "w").write("# CLaRa fixture\n")
    base = os.path.join(repos, "base")
    shutil.copytree(os.path.join(FIXTURES, "base"), base)
    # what the real repository also holds and a pull must not download
    with open(os.path.join(base, "consolidated.safetensors"), "wb") as f:
        f.write(open(os.path.join(base, "model-00001-of-00003.safetensors"), "rb").read() + b"x")
    open(os.path.join(base, "pytorch_model.bin"), "wb").write(b"\0" * 4096)
    gguf = os.path.join(repos, "gguf")
    os.makedirs(gguf)
    LOCAL_BASE_GGUF = os.path.join(gguf, Q4)
    clara("convert", "--base", os.path.join(FIXTURES, "base"), "--base-only", "--type", "q4_k_m",
          "--out", LOCAL_BASE_GGUF, "--quiet", check_rc=0)
    LOCAL_FULL = os.path.join(TMP, "local-full-q8_0.gguf")
    clara("convert", "--base", os.path.join(FIXTURES, "base"), "--clara",
          os.path.join(FIXTURES, "instruct16"), "--type", "q8_0", "--out", LOCAL_FULL, "--quiet",
          check_rc=0)
    # a repository whose listing declares a file far larger than any disk
    huge = os.path.join(repos, "huge")
    shutil.copytree(os.path.join(FIXTURES, "instruct16"), os.path.join(huge, "compression-16"))
    HUB = mock_hub.Hub(token=TOKEN)
    HUB.add_repo(mock_hub.Repo(NAME, CLARA_DIR))
    HUB.add_repo(mock_hub.Repo(BASE_REPO, base, gated=True))
    HUB.add_repo(mock_hub.Repo(GGUF_REPO, gguf))
    h = HUB.add_repo(mock_hub.Repo("apple/CLaRa-Huge", huge))
    # a hostile Hub: a listing whose commit id climbs out of the downloads folder
    HUB.add_repo(mock_hub.Repo("apple/CLaRa-Climb", CLARA_DIR, commit="../../../../../climbed"))
    h.add("compression-16/adapters.pth", os.path.join(huge, "compression-16", "adapters.pth"),
          declared_size=10 ** 15)
    HUB.start()


def pull_full(env, *extra, **kw):
    return clara("pull", NAME, "--full", "--type", "q8_0", *extra, env=env, **kw)


def test_full_route():
    """Base safetensors (gated: the token file the HF CLI writes) + CLaRa files, converted here:
    the same answers as `clara convert` of the fixtures; only the converter's files fetched."""
    HUB.log.clear()
    env = fresh_env()
    os.makedirs(env["HF_HOME"])
    open(os.path.join(env["HF_HOME"], "token"), "w").write(TOKEN + "\n")
    p = pull_full(env)
    check(p.returncode == 0, "full pull: rc %d %s" % (p.returncode, p.stderr[-500:]))
    want = answers(["--model", LOCAL_FULL])
    check(isinstance(want, list), "local model answers: %s" % want)
    for name in (NAME, NAME + ":compression-16"):
        got = answers(["--model", name], env)
        check(got == want, "pulled %s answers %s, local %s" % (name, str(got)[:200], str(want)[:200]))
    fetched = {e["file"] for e in HUB.requests() if e["kind"] == "cdn"}
    check("consolidated.safetensors" not in fetched and "pytorch_model.bin" not in fetched,
          "no consolidated/bin weights downloaded: %s" % sorted(fetched))
    check("model-00002-of-00003.safetensors" in fetched, "the shards are downloaded")
    check(all(e["auth"] == "Bearer " + TOKEN for e in HUB.requests() if e["kind"] == "api"),
          "the token file's token is sent")
    lst = json.loads(clara("list", "--json", env=env, check_rc=0).stdout)
    check(len(lst) == 1 and lst[0]["name"] == NAME + ":compression-16" and lst[0]["route"] == "full"
          and lst[0]["type"] == "q8_0" and lst[0]["bytes"] > 0 and lst[0]["pulled_at"],
          "clara list: %s" % lst)
    text = clara("list", env=env, check_rc=0).stdout
    check("full" in text and "q8_0" in text and "KiB" in text, "clara list table: %s" % text)
    check(not parts(env) and not os.path.exists(os.path.join(
        env["CLARA_CACHE_DIR"], ".pull", "models--apple--CLaRa-7B-Instruct--compression-16",
        "downloads")), "no downloads left after a pull")
    # pulled again: nothing downloaded
    HUB.log.clear()
    p = pull_full(env, check_rc=0)
    check(not HUB.requests() and "in the cache" in p.stderr, "a second pull is a no-op: %s" % p.stderr)


def test_light_route():
    """The CLaRa sub-folder + the community base GGUF, add-on written here (two-file mode): the
    same answers as the pair converted locally; no request to the gated base repository."""
    HUB.log.clear()
    env = fresh_env()
    p = clara("pull", NAME + ":compression-16", env=env)
    check(p.returncode == 0, "light pull: rc %d %s" % (p.returncode, p.stderr[-600:]))
    check(not [e for e in HUB.requests() if BASE_REPO in e["path"]], "the gated repository is not asked")
    addon = os.path.join(TMP, "local-addon.gguf")
    c = clara("convert", "--base", LOCAL_BASE_GGUF, "--clara", os.path.join(FIXTURES, "instruct16"),
              "--addon-only", "--type", "q4_k_m", "--out", addon, "--quiet")
    check(c.returncode == 0, "local add-on from the GGUF: %s" % c.stderr[-300:])
    want = answers(["--base", LOCAL_BASE_GGUF, "--clara", addon])
    got = answers(["--model", NAME], env)
    check(isinstance(want, list) and got == want, "light route answers %s, local pair %s" % (
        str(got)[:200], str(want)[:200]))
    lst = json.loads(clara("list", "--json", env=env, check_rc=0).stdout)
    check(lst and lst[0]["route"] == "light" and lst[0]["type"] == "q4_k_m", "list: %s" % lst)
    p = clara("pull", NAME, "--type", "q4_1", env=env)
    check(p.returncode == 1 and "--full" in p.stderr and "--base-gguf" in p.stderr,
          "a type the GGUF repository lacks: %s" % p.stderr)


def test_gated():
    env = fresh_env()
    p = pull_full(env)
    check(p.returncode == 1 and "gated" in p.stderr and "HF_TOKEN" in p.stderr and
          "license" in p.stderr and "401" in p.stderr, "no token: %s" % p.stderr)
    p = pull_full(fresh_env(token="hf_wrong"))
    check(p.returncode == 1 and "403" in p.stderr and "has no access" in p.stderr,
          "wrong token: %s" % p.stderr)
    check(not os.path.exists(entry_dir(env)), "no model in the cache after a refusal")


def test_not_found():
    env = fresh_env()
    cases = [
        (["pull", "apple/No-Such-Model"], "repository not found"),
        (["pull", NAME + ":compression-99"], "sub-folder 'compression-99' not found"),
        (["pull", NAME, "--base-gguf", GGUF_REPO + "/missing.Q4_K_M.gguf"], "missing.Q4_K_M.gguf not found"),
        (["pull", "not a name"], "not a model name"),
    ]
    for args, want in cases:
        p = clara(*args, env=env)
        check(p.returncode in (1, 2) and want in p.stderr, "%s: rc %d %s" % (args, p.returncode, p.stderr))
    check(not os.path.exists(env["CLARA_CACHE_DIR"]) or
          not [d for d in os.listdir(env["CLARA_CACHE_DIR"]) if d.startswith("models--")],
          "nothing in the cache")


def test_hostile_commit():
    """The commit id names a folder of the cache: one that is no git commit id is refused before
    anything is written (a hostile HF_ENDPOINT could otherwise write files of its choosing
    anywhere, with sha256 sums of its own)."""
    env = fresh_env()
    p = clara("pull", "apple/CLaRa-Climb", env=env)
    check(p.returncode == 1 and "no commit id (40 hex digits)" in p.stderr,
          "refused: rc %d %s" % (p.returncode, p.stderr.strip()[-200:]))
    climbed = [os.path.join(d, n) for d, dirs, _ in os.walk(TMP) for n in dirs if n == "climbed"]
    check(not climbed, "nothing written outside the cache: %s" % climbed)


def test_dropped_connection_resumes():
    rel = "compression-16/adapters.pth"
    size = file_size(CLARA_DIR, rel)
    HUB.log.clear()
    HUB.faults.drop_after[rel] = [size // 3, 1]
    try:
        p = pull_full(fresh_env(token=TOKEN))
    finally:
        HUB.faults.reset()
    check(p.returncode == 0, "pull with a dropped connection: %s" % p.stderr[-400:])
    reqs = [e for e in HUB.requests(rel) if e["kind"] == "cdn"]
    check(len(reqs) == 2, "two transfers of %s: %s" % (rel, reqs))
    if len(reqs) == 2:
        check(reqs[0]["sent"] == size // 3, "the first stopped at the drop (%d)" % reqs[0]["sent"])
        check(reqs[1]["range"] == "bytes=%d-" % (size // 3), "resumed with Range: %s" % reqs[1]["range"])
        check(0 < reqs[1]["sent"] < size and reqs[0]["sent"] + reqs[1]["sent"] == size,
              "resumed, not restarted: %d of %d bytes the second time" % (reqs[1]["sent"], size))


def test_corrupt_file_refused():
    """A file whose bytes do not match the Hub's sha256 is refused and deleted; a previous pull
    of the model stays as it was."""
    env = fresh_env(token=TOKEN)
    pull_full(env, check_rc=0)
    before = json.loads(clara("list", "--json", env=env, check_rc=0).stdout)
    rel = "compression-16/decoder_first_last_layers.pth"
    HUB.faults.corrupt.add(rel)
    try:
        p = clara("pull", NAME, "--full", "--type", "f16", env=env)
    finally:
        HUB.faults.reset()
    check(p.returncode == 1 and rel in p.stderr and "sha256" in p.stderr and "deleted" in p.stderr,
          "corrupt file: %s" % p.stderr)
    check(not [x for x in parts(env) if "decoder_first_last" in x], "the corrupt part is deleted")
    after = json.loads(clara("list", "--json", env=env, check_rc=0).stdout)
    check(after == before, "the cache keeps the previous model: %s vs %s" % (after, before))
    check(answers(["--model", NAME], env) == answers(["--model", LOCAL_FULL]), "which still loads")
    p = clara("pull", NAME, "--full", "--type", "f16", env=env)
    check(p.returncode == 0 and "f16" in clara("list", env=env).stdout, "then a clean pull: %s" % p.stderr[-300:])


def test_500_storm():
    rel = "compression-16/config.json"
    HUB.log.clear()
    HUB.faults.storm[rel] = [500, 2]
    HUB.faults.storm["api"] = [503, 1]
    try:
        p = pull_full(fresh_env(token=TOKEN))
    finally:
        HUB.faults.reset()
    statuses = [e["status"] for e in HUB.requests(rel)]
    check(p.returncode == 0 and statuses[:3] == [500, 500, 200], "two 500s then OK: %s %s" % (
        statuses, p.stderr[-300:]))
    HUB.faults.storm[rel] = [500, -1]
    t0 = time.time()
    try:
        p = pull_full(fresh_env(token=TOKEN))
    finally:
        HUB.faults.reset()
    check(p.returncode == 1 and "HTTP 500" in p.stderr and "3 tries" in p.stderr and rel in p.stderr,
          "a storm that does not end: %s" % p.stderr)
    check(time.time() - t0 < 20, "gives up in bounded time (%.1f s)" % (time.time() - t0))


def test_stall():
    rel = "compression-16/adapters.pth"
    HUB.faults.stall[rel] = 30
    t0 = time.time()
    try:
        p = pull_full(fresh_env(token=TOKEN, HF_HUB_DOWNLOAD_TIMEOUT="1", CLARA_PULL_RETRIES="2"))
    finally:
        HUB.faults.reset()
    dt = time.time() - t0
    check(p.returncode == 1 and "no data for 1 s" in p.stderr and "adapters.pth" in p.stderr,
          "a stalled server: %s" % p.stderr)
    check(dt < 15, "timed out, not hung (%.1f s)" % dt)


def test_disk_too_small():
    HUB.log.clear()
    env = fresh_env()
    p = clara("pull", "apple/CLaRa-Huge", "--full", env=dict(env, HF_TOKEN=TOKEN))
    check(p.returncode == 1 and "not enough disk space" in p.stderr and "CLARA_CACHE_DIR" in p.stderr,
          "refused: %s" % p.stderr)
    check(not [e for e in HUB.requests() if e["kind"] in ("cdn", "resolve")],
          "refused before downloading anything")


def test_sigint_then_resume():
    rel = "compression-16/adapters.pth"
    size = file_size(CLARA_DIR, rel)
    env = fresh_env(token=TOKEN)
    HUB.log.clear()
    HUB.faults.rate = 100 * 1024
    proc = subprocess.Popen([CLARA, "pull", NAME, "--full", "--type", "q8_0"], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        ok = sh.wait_for(lambda: [x for x in parts(env) if x.endswith("adapters.pth.part")
                                  and os.path.getsize(x) > size // 4], 20)
        check(ok, "the download is under way")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        HUB.faults.reset()
        if proc.poll() is None:
            proc.kill()
    check(proc.returncode == 130 and "run the same command again to resume" in err,
          "Ctrl-C: rc %s %s" % (proc.returncode, err[-300:]))
    kept = [x for x in parts(env) if x.endswith("adapters.pth.part")]
    check(kept and 0 < os.path.getsize(kept[0]) < size, "the partial file is kept")
    check(not os.path.exists(entry_dir(env)), "no model in the cache yet")
    have = os.path.getsize(kept[0]) if kept else 0
    # the mock notices the hang-up at its next write: its record of that transfer comes first
    sh.wait_for(lambda: [e for e in HUB.requests(rel) if e["kind"] == "cdn"], 10)
    HUB.log.clear()
    p = pull_full(env)
    check(p.returncode == 0, "pull again: %s" % p.stderr[-300:])
    reqs = [e for e in HUB.requests(rel) if e["kind"] == "cdn"]
    check(len(reqs) == 1 and reqs[0]["range"] == "bytes=%d-" % have and reqs[0]["sent"] == size - have,
          "resumed from %d: %s" % (have, reqs))
    check(answers(["--model", NAME], env) == answers(["--model", LOCAL_FULL]), "the resumed model answers right")


def test_two_pulls_at_once():
    env = fresh_env(token=TOKEN)
    rel = "compression-16/adapters.pth"
    HUB.log.clear()
    HUB.faults.rate = 400 * 1024
    try:
        procs = [subprocess.Popen([CLARA, "pull", NAME, "--full", "--type", "q8_0"], env=env,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=60)[1] for p in procs]
    finally:
        HUB.faults.reset()
    check(all(p.returncode == 0 for p in procs), "both pulls succeed: %s" % [o[-200:] for o in outs])
    check(any("waiting for it" in o for o in outs) and any("in the cache" in o for o in outs),
          "the second waits for the first, then finds the model: %s" % [o[-300:] for o in outs])
    check(HUB.sent_bytes(rel) == file_size(CLARA_DIR, rel), "each file downloaded once: %s" % [
        (e["range"], e["sent"], e["status"]) for e in HUB.requests(rel)])
    check(answers(["--model", NAME], env) == answers(["--model", LOCAL_FULL]), "the model is sound")


def test_rm_and_names():
    env = fresh_env(token=TOKEN)
    pull_full(env, check_rc=0)
    clara("pull", NAME + ":compression-128", "--full", "--type", "f16", env=env, check_rc=0)
    lst = json.loads(clara("list", "--json", env=env, check_rc=0).stdout)
    check([e["name"] for e in lst] == [NAME + ":compression-128", NAME + ":compression-16"],
          "two models listed: %s" % lst)
    p = clara("rm", NAME + ":compression-128", env=env)
    check(p.returncode == 0 and not os.path.exists(entry_dir(env, "compression-128")), "rm: %s" % p.stderr)
    p = clara("rm", NAME + ":compression-128", env=env)
    check(p.returncode == 1 and "not in the cache" in p.stderr, "rm twice: %s" % p.stderr)
    p = clara("ask", "--model", NAME + ":compression-128", "--query", "q", "--doc", "d", env=env)
    check(p.returncode == 1 and "clara pull " + NAME + ":compression-128" in p.stderr,
          "a name not pulled says how to get it: %s" % p.stderr)
    check(clara("pull", "--help").returncode == 0 and "--full" in clara("pull", "--help").stdout,
          "pull --help")


def test_offline():
    env = fresh_env(token=TOKEN)
    pull_full(env, check_rc=0)
    HUB.log.clear()
    p = pull_full(dict(env, HF_HUB_OFFLINE="1"))
    check(p.returncode == 0 and "in the cache" in p.stderr and not HUB.requests(),
          "offline, cached: %s" % p.stderr)
    p = clara("pull", NAME + ":compression-128", env=dict(env, HF_HUB_OFFLINE="1"))
    check(p.returncode == 1 and "HF_HUB_OFFLINE" in p.stderr and not HUB.requests(),
          "offline, not cached: %s" % p.stderr)


def test_server_pulls_on_first_start():
    env = fresh_env(token=TOKEN)
    HUB.faults.rate = 200 * 1024
    try:
        s = sh.Server("--db", "none", env=dict(env, CLARA_MODEL=NAME, CLARA_SUBFOLDER="compression-16",
                                               CLARA_PULL_FULL="1", CLARA_PULL_TYPE="q8_0"))
        st, j, _, _ = s.get("/health")
        check(st == 503 and j["status"] == "downloading" and j["progress"]["phase"] in (
            "resolving", "downloading"), "health while pulling: %s %s" % (st, j))
        sh.wait_for(lambda: s.get("/health")[1].get("progress", {}).get("bytes_total", 0) > 0, 20)
        st, j, _, _ = s.get("/health")
        check(st == 503 and j["progress"]["phase"] == "downloading" and
              j["progress"]["bytes_total"] > 0 and j["progress"]["files_total"] == 14,
              "health while downloading: %s %s" % (st, j))
        st, j, _, _ = s.post("/compress", {"memories": ["a b c"], "query": "q"})
        check(st == 503 and "downloading" in json.dumps(j), "model requests wait: %s %s" % (st, j))
        stj = s.status()
        check(stj["download"]["model"] == NAME and stj["download"]["bytes_total"] > 0, "status: %s" % stj)
        sh.wait_for(lambda: s.get("/health")[1].get("progress", {}).get("bytes_done", 0) > 0, 20)
        check(s.get("/health")[1]["progress"]["bytes_done"] > 0, "progress moves")
        check(sh.wait_for(s.healthy, 60), "healthy once pulled: %s" % s.text()[-600:])
    finally:
        HUB.faults.reset()
    st, j, _, _ = s.post("/compress", {"memories": ["The Eiffel tower is in Paris."], "query": "Where?"})
    check(st == 200, "serves after the pull: %s %s" % (st, j))
    check("downloading" in s.text() and "pulled " + NAME in s.text(), "progress in the log")
    check(s.stop() == 0, "stops cleanly")
    # cached now: the next start serves it without asking the Hub
    HUB.log.clear()
    s2 = sh.Server("--db", "none", "--model", NAME, env=dict(env, HF_HUB_OFFLINE="1"))
    check(s2.healthy() and not HUB.requests() and "models--apple--CLaRa" in s2.text(),
          "second start from the cache: %s" % s2.text()[-400:])
    s2.stop()


def test_server_pull_failure():
    env = fresh_env()
    try:  # it may be gone before the harness reads its port
        sh.Server("--db", "none", "--model", "apple/No-Such-Model", env=env)
    except RuntimeError:
        pass
    s = sh._servers[-1]
    rc = s.wait(30)
    check(rc == 1 and "repository not found" in s.text(), "a failed pull stops the server: %s %s" % (
        rc, s.text()[-400:]))


if __name__ == "__main__":
    try:
        setup()
        for t in (test_full_route, test_light_route, test_gated, test_not_found,
                  test_hostile_commit, test_dropped_connection_resumes, test_corrupt_file_refused, test_500_storm,
                  test_stall, test_disk_too_small, test_sigint_then_resume, test_two_pulls_at_once,
                  test_rm_and_names, test_offline, test_server_pulls_on_first_start,
                  test_server_pull_failure):
            if len(sys.argv) < 2 or t.__name__ in sys.argv[1:]:
                run(t)
        sh.check_no_sanitizer_reports()
    finally:
        sh.cleanup()
        if HUB:
            HUB.stop()
        shutil.rmtree(TMP, ignore_errors=True)
    report("test_pull")
