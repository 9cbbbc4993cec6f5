"""clara-server when its model file changes under it (issue 16), over real HTTP.

Covers: a model of another shape renamed over the served file between requests (the way `clara
convert` writes one), in both directions (n_mem 2 <-> 16: /v1/compress, /v1/answer and
/v1/retrieve with vectors of the startup shape) -> 503 model_unavailable naming the change, and
recovery once a file of the startup shape is back (logged as a new file); the file overwritten in
place with `cp` and truncated (to 0 and to half) while the model is loaded; the file truncated or
overwritten *while a request computes* (the SIGBUS case) -> the server stays up, the request gets
503, never a wrong answer; a FIFO as the model -> a fast, clear refusal from clara-server,
`clara info` and `clara ask`; the two-file banner and /status giving both files' sizes."""

import os
import re
import shutil
import subprocess
import threading
import time

from harness import CLARA, FIXTURES, check, report, run
from server_harness import DEMO, SERVER, SLOW, TMP, Server, check_no_sanitizer_reports, cleanup

Q = "What outdoor activities does the user enjoy?"
DOCS = ["User likes hiking in national parks.", "User has a dog named Max."]
SMALL = None  # the instruct128 fixture converted: n_mem 2, no query reasoner


def small_model():
    global SMALL
    if SMALL is None:
        import gen_fixtures as gf
        gf.ensure(FIXTURES)
        SMALL = os.path.join(TMP, "instruct128.gguf")
        subprocess.run([CLARA, "convert", "--base", os.path.join(FIXTURES, "base"), "--clara",
                        os.path.join(FIXTURES, "instruct128"), "--out", SMALL, "--quiet"],
                       check=True, timeout=120)
    return SMALL


def replace_by_rename(src, dst):
    """What `clara convert` does: write a new file next to dst, rename it over dst."""
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.rename(tmp, dst)


def overwrite_in_place(src, dst):
    """`cp src dst` onto an existing dst: the same inode, truncated then rewritten."""
    subprocess.run(["cp", src, dst], check=True)


def unavailable(r, *patterns, compress=False):
    """503 model_unavailable with Retry-After; on /compress (compress=True) the Python server's
    200 success:false with the same error_type and message."""
    st, j = r[0], r[1]
    if compress:
        return (st == 200 and j is not None and j.get("success") is False and
                j.get("answer") is None and j.get("error_type") == "model_unavailable" and
                all(re.search(p, j["error"]) for p in patterns))
    return (st == 503 and j is not None and j.get("error_type") == "model_unavailable" and
            r[2].get("retry-after") == "1" and all(re.search(p, j["error"]) for p in patterns))


def shape_of(r):
    return r[1]["vectors"]["shape"] if r[0] == 200 else None


def test_rename_other_shape():
    """n_mem 2 at startup, the demo (n_mem 16) renamed over it: the unchanged server overflowed
    a buffer in /v1/compress and died."""
    path = os.path.join(TMP, "small.gguf")
    shutil.copyfile(small_model(), path)
    s = Server("--model", path, "--keep-alive", "0")
    first = s.post("/v1/compress", {"documents": DOCS})
    check(shape_of(first) == [2, 2, 64], "served n_mem 2 (%s)" % (first[:2],))
    replace_by_rename(DEMO, path)
    r = s.post("/v1/compress", {"documents": DOCS})
    msg = r"model file .*small\.gguf changed since startup: n_mem 2 -> 16.*restart the server"
    check(unavailable(r, msg), "/v1/compress on a model of another shape -> 503 (%s)" % (r[:2],))
    if first[0] == 200:
        r = s.post("/v1/answer", {"query": Q, "vectors": first[1]["vectors"], "max_new_tokens": 8})
        check(unavailable(r, msg), "/v1/answer with startup-shape vectors -> 503 (%s)" % (r[:2],))
    h = s.get("/health")
    check(h[0] == 503 and h[1]["status"] == "error", "/health says the load failed (%s)" % h[1])
    st = s.get("/status")[1]
    check(re.search(msg, st.get("load_error", "")), "/status says why (%s)" % st.get("load_error"))
    check(re.search(r"loading .* failed: model file .* changed since startup", s.text()),
          "the log says the load failed and why")
    replace_by_rename(small_model(), path)
    r = s.post("/v1/compress", {"documents": DOCS})
    check(shape_of(r) == [2, 2, 64] and first[0] == 200 and
          r[1]["vectors"]["data"] == first[1]["vectors"]["data"],
          "recovers when a file of the startup shape is back (%s)" % (r[:2],))
    n = os.path.getsize(path)
    check(re.search(r"small\.gguf: model file changed since startup \(inode \d+ -> \d+, %d -> %d "
                    r"bytes, new modification time\), re-validated: the same shape \(n_mem 2" % (
                        n, n), s.text()),
          "the log says the file is a new one of the startup shape")
    check(s.proc.poll() is None and s.stop() == 0, "the server stayed up and exits 0")


def test_rename_other_shape_back():
    """n_mem 16 at startup, n_mem 2 renamed over it: the unchanged server answered 200 with
    uninitialised heap memory as vectors."""
    path = os.path.join(TMP, "demo-copy.gguf")
    shutil.copyfile(DEMO, path)
    s = Server("--model", path, "--keep-alive", "0")
    first = s.post("/v1/compress", {"documents": DOCS})
    check(shape_of(first) == [2, 16, 64], "served n_mem 16 (%s)" % (first[:2],))
    ans = s.post("/v1/answer", {"query": Q, "documents": DOCS, "max_new_tokens": 16})
    check(s.text().count("the file validated at startup") == 2,
          "each load logs that it is the file validated at startup")
    replace_by_rename(small_model(), path)
    msg = r"changed since startup: n_mem 16 -> 2, vocabulary 1019 -> 1005, retrieval yes -> no"
    r = s.post("/v1/compress", {"documents": DOCS})
    check(unavailable(r, msg), "/v1/compress -> 503 (%s)" % (r[:2],))
    if first[0] == 200:
        for ep in ("/v1/answer", "/v1/retrieve"):
            r = s.post(ep, {"query": Q, "vectors": first[1]["vectors"], "max_new_tokens": 8})
            check(unavailable(r, msg), "%s with n_mem-16 vectors -> 503 (%s)" % (ep, r[:2]))
    replace_by_rename(DEMO, path)
    r = s.post("/v1/compress", {"documents": DOCS})
    check(first[0] == 200 and r[0] == 200 and
          r[1]["vectors"]["data"] == first[1]["vectors"]["data"], "recovers (%s)" % (r[:2],))
    r = s.post("/v1/answer", {"query": Q, "documents": DOCS, "max_new_tokens": 16})
    check(r[0] == 200 and ans[0] == 200 and r[1]["answer"] == ans[1]["answer"], "same answer")
    check(s.proc.poll() is None and s.stop() == 0, "the server stayed up and exits 0")


def test_overwrite_in_place_while_loaded():
    """--keep-alive -1: the model stays mapped between requests while its file is rewritten or cut.
    The unchanged server died of SIGBUS on the next request."""
    path = os.path.join(TMP, "loaded.gguf")
    shutil.copyfile(DEMO, path)
    s = Server("--model", path, "--keep-alive", "-1")
    body = {"memories": DOCS, "query": Q, "max_new_tokens": 16}
    good = s.post("/compress", body)
    check(good[0] == 200, "served (%s)" % (good[:2],))
    size = os.path.getsize(path)
    steps = [
        ("cp of a model of another shape", lambda: overwrite_in_place(small_model(), path),
         r"changed since startup: n_mem 16 -> 2"),
        ("truncate to 0", lambda: os.truncate(path, 0), r"loaded\.gguf: not a GGUF file"),
        ("truncate to half", lambda: os.truncate(path, size // 2), r"loaded\.gguf: .*"),
    ]
    for what, act, pattern in steps:
        act()
        r = s.post("/compress", body)
        check(unavailable(r, "the model cannot be loaded: .*" + pattern, compress=True),
              "%s while loaded -> 503 (%s)" % (what, r[:2]))
        check(s.proc.poll() is None, "%s: the server is up" % what)
        overwrite_in_place(DEMO, path)
        r = s.post("/compress", body)
        check(r[0] == 200 and good[0] == 200 and r[1]["answer"] == good[1]["answer"],
              "%s: recovers with the good file back in place (%s)" % (what, r[:2]))
    check(re.search(r"loaded\.gguf changed on disk while in use: %d bytes when loaded, %d now; "
                    r"reloading the model" % (size, os.path.getsize(small_model())), s.text()),
          "the log says the loaded file changed and the model is reloaded")
    check(re.search(r"loaded\.gguf: model file changed since startup \(inode (\d+) -> \1, %d -> %d "
                    r"bytes, new modification time\), re-validated" % (size, size), s.text()),
          "the log says a reload found the file rewritten in place, of the same shape")
    check(s.stop() == 0, "exits 0")


def test_change_during_request():
    """The file is cut or overwritten while a long request computes on it: its pages vanish under
    the engine (SIGBUS). The unchanged server died; now the request fails with 503 and the
    server recovers once the file is good again."""
    path = os.path.join(TMP, "busy.gguf")
    shutil.copyfile(DEMO, path)
    s = Server("--model", path, "--keep-alive", "-1", "--max-request-tokens", "200000")
    docs = [("Document %d. " % i) + "word " * 300 for i in range(200)]
    body = {"memories": docs, "query": Q, "max_new_tokens": 512}
    t0 = time.time()
    good = s.post("/compress", body, timeout=300)
    took = time.time() - t0
    if not check(good[0] == 200, "the long request runs (%s)" % (good[:2],)):
        return
    size = os.path.getsize(path)
    actions = [("truncate to 0", lambda: os.truncate(path, 0)),
               ("truncate to half", lambda: os.truncate(path, size // 2)),
               ("cp of a smaller model", lambda: overwrite_in_place(small_model(), path))]
    for what, act in actions:
        hit, replies = False, []
        for attempt in range(6):
            out = []
            th = threading.Thread(target=lambda: out.append(_post(s, body)))
            th.start()
            time.sleep(took * 0.4)
            act()
            th.join()
            replies.append(out[0])
            alive = s.proc.poll() is None
            if not alive:
                break
            r = out[0]
            during = unavailable(r, r"the model file changed on disk while this request ran, so "
                                 r"its result was discarded: .*busy\.gguf", compress=True)
            ok = (r[0] == 200 and r[1]["answer"] == good[1]["answer"]) or during or unavailable(
                r, r"the model cannot be loaded: .*busy\.gguf",
                compress=True)  # changed before it started
            check(ok, "%s: a correct answer or 503, never wrong data (%s)" % (what, r[:2]))
            overwrite_in_place(DEMO, path)
            if during:
                hit = True
                break
            took *= 0.7 if r[0] == 200 and r[1]["success"] else 1.3  # earlier if it finished
        check(s.proc.poll() is None, "%s during a request: the server is up (exit %s; %s)" % (
            what, s.proc.returncode, [r[:2] for r in replies]))
        check(hit, "%s: a request was running when the file changed (%d tries)" % (
            what, len(replies)))
        if s.proc.poll() is not None:
            return
        r = s.post("/compress", body, timeout=300)
        check(r[0] == 200 and r[1]["answer"] == good[1]["answer"],
              "%s: recovers with the good file back (%s)" % (what, r[:2]))
    check(re.search(r"busy\.gguf was truncated while in use \(%d bytes when loaded, \d+ now\): its "
                    r"mapped pages vanished" % size, s.text()),
          "the log shows a fault absorbed in the model mapping")
    check(s.stop() == 0, "exits 0")


def _post(s, body):
    try:
        return s.post("/compress", body, timeout=300)
    except Exception as e:  # the server died mid-request
        return (None, None, {}, repr(e))


def test_fifo_model():
    fifo = os.path.join(TMP, "model.fifo")
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARA_")}
    cases = [
        ([SERVER, "--port", "0", "--model", fifo], 2,
         r"error: model \(--model\): .*model\.fifo: is a FIFO, not a regular file"),
        ([SERVER, "--port", "0", "--base", fifo, "--clara", DEMO], 2,
         r"error: base model \(--base\): .*model\.fifo: is a FIFO, not a regular file"),
        ([CLARA, "info", fifo], 1, r"model\.fifo: is a FIFO, not a regular file"),
        ([CLARA, "ask", "--model", fifo, "--doc", "a", "--query", "b"], 1,
         r"model\.fifo: is a FIFO, not a regular file"),
    ]
    limit = 10 if SLOW else 2
    for args, rc, pattern in cases:
        t0 = time.time()
        try:
            p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=limit + 3)
            got, err = p.returncode, p.stderr
        except subprocess.TimeoutExpired:
            got, err = None, "hung"
        took = time.time() - t0
        check(got == rc and took < limit and re.search(pattern, err),
              "%s -> exit %s in %.1f s: %s" % (" ".join(args[-4:]), got, took, err.strip()[:200]))


def test_two_file_banner():
    hf = os.path.join(os.path.dirname(DEMO), "hf")
    base, addon = os.path.join(TMP, "tf-base.gguf"), os.path.join(TMP, "tf-addon.gguf")
    for out, extra in ((base, ["--base-only"]),
                       (addon, ["--clara", os.path.join(hf, "e2e16"), "--addon-only"])):
        p = subprocess.run([CLARA, "convert", "--base", os.path.join(hf, "base"), "--out", out,
                            "--type", "f32", "--quiet"] + extra, capture_output=True, text=True,
                           timeout=60)
        check(p.returncode == 0, "convert %s: %s" % (extra, p.stderr))
    nb, na = os.path.getsize(base), os.path.getsize(addon)
    s = Server("--base", base, "--clara", addon)
    want = "base %.1f MiB + add-on %.1f MiB (mapped when loaded)" % (nb / 1048576, na / 1048576)
    check(want in s.text(), "banner gives both sizes: %r in %r" % (want, s.text()[-700:]))
    check(re.search(r"model: +.*tf-addon\.gguf \(.*\) on base .*tf-base\.gguf", s.text()),
          "banner names both files")
    mem = s.status()["memory"]
    check(mem["model_file_bytes"] == nb + na and mem["base_file_bytes"] == nb,
          "/status memory counts both files (%s; base %d, add-on %d)" % (mem, nb, na))
    s.stop()


def main():
    try:
        for t in (test_fifo_model, test_two_file_banner, test_rename_other_shape,
                  test_rename_other_shape_back, test_overwrite_in_place_while_loaded,
                  test_change_during_request):
            run(t)
        check_no_sanitizer_reports()
    finally:
        cleanup()
    report("test_server_modelfile")


if __name__ == "__main__":
    main()
