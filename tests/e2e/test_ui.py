"""The web page (GET / and /ui/, server/ui/): its files over HTTP (types, Content-Security-Policy,
ETag and 304, no key needed, --no-ui / CLARA_UI=0 restoring the 307 to /docs), and the page itself
in Debian's chromium, headless, driven through the DevTools protocol by the pinned npm package
puppeteer-core (tests/e2e/ui_browser.cjs; no browser download) against a real clara-server with
the demo model and a temporary SQLite store: a collection made, a .jsonl of 20 memories uploaded
with a progress bar, listed, searched, one edited and one deleted, hostile texts shown as text, a
question asked by keyboard alone with the answer streamed in pieces, a memory used opened, a
reload, the Server view, and the API key flow. Independent truths: the repository's files, the
HTTP API (the store's lists, a direct non-streamed request with the same parameters). chromium,
node and npm are required: a missing one fails the suite (.ci/install-deps installs them).
Screenshots of each view at 1280x800 and 375x812 go to build/ui-screenshots/."""

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import time

from harness import ROOT, check, npm_install, report, run
from server_harness import (DEMO, FACTS, SERVER, TMP, Server, big_model, check_no_sanitizer_reports,
                            cleanup)

PUPPETEER_VERSION = "24.43.1"  # the last major version that runs on node 18 (Debian 12's)
PUPPETEER_DIR = os.path.join(ROOT, "build", "ui-test")
CHROMIUM = "/usr/bin/chromium"
DRIVER = os.path.join(ROOT, "tests", "e2e", "ui_browser.cjs")
SHOTS = os.path.join(ROOT, "build", "ui-screenshots")
UI_FILES = {"/": "index.html", "/ui/": "index.html", "/ui/ui.css": "ui.css", "/ui/ui.js": "ui.js"}
TYPES = {"index.html": "text/html", "ui.css": "text/css", "ui.js": "text/javascript"}
KEY = "ui-test-key-5f0e1c"
# the demo model's greedy answer to it has byte-fallback tokens that are not UTF-8 ("\ufffd")
QUESTION = "Where does Alice work?"
MAX_TOKENS = 256
EDITED = "Edited in the browser: the third memory now says the museum opens at nine."
DOCS = ["The sky is blue and the grass is green.", "Paris is the capital of France.",
        "Cats sleep for most of the day."]
MEMORIES = [{"id": "m%02d" % (i + 1), "text": t, "metadata": {"n": i + 1}}
            for i, t in enumerate(FACTS)]


def ui_file(name):
    with open(os.path.join(ROOT, "server", "ui", name), "rb") as f:
        return f.read()


def browse(server, scenario, **cfg):
    """Runs ui_browser.cjs's scenario against server; its observations."""
    cfg.update(chromium=CHROMIUM, base="http://127.0.0.1:%d" % server.port, scenario=scenario,
               shots=SHOTS, profile=os.path.join(TMP, "chromium-" + scenario))
    p = subprocess.run(["node", DRIVER, PUPPETEER_DIR], input=json.dumps(cfg),
                       capture_output=True, text=True, timeout=400)
    if p.returncode != 0:
        raise RuntimeError("ui_browser.cjs failed: " + p.stderr[-3000:])
    obs = json.loads(p.stdout)
    check("error" not in obs, "the %s scenario ran to its end: %s (the page's notice: %r)"
          % (scenario, obs.get("error"), obs.get("errorNotice")))
    return obs


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", head[16:24])


def api_list(s, coll, headers=None):
    out, after = [], None
    while True:
        st, j, _, _ = s.get("/v1/collections/%s/memories?limit=7%s"
                            % (coll, "&after=" + after if after else ""), headers=headers)
        out += j["memories"]
        after = j["next"]
        if not after:
            return out


# ---- the files over HTTP ---------------------------------------------------------------------


def test_files_over_http():
    s = Server("--model", DEMO, "--api-key", KEY)
    total = 0
    for path, name in UI_FILES.items():
        st, _, h, body = s.get(path)
        want = ui_file(name)
        check(st == 200 and body == want, "GET %s serves server/ui/%s (%s, %d bytes)"
              % (path, name, st, len(body)))
        check(h.get("content-type", "").startswith(TYPES[name]), "%s: %s" % (path, h.get("content-type")))
        csp = h.get("content-security-policy", "")
        check("default-src 'self'" in csp and "unsafe-inline" not in csp and
              "frame-ancestors 'none'" in csp, "%s: a strict CSP: %r" % (path, csp))
        check(h.get("x-content-type-options") == "nosniff", "%s: nosniff" % path)
        tag = '"%s"' % hashlib.sha256(want).hexdigest()[:16]
        check(h.get("etag") == tag, "%s: ETag from the content's SHA-256: %r" % (path, h.get("etag")))
        st, _, h2, body = s.get(path, headers={"If-None-Match": tag})
        check(st == 304 and body == b"" and h2.get("etag") == tag, "%s: 304 on If-None-Match (%s)" % (path, st))
        st, _, _, _ = s.get(path, headers={"If-None-Match": '"0000000000000000"'})
        check(st == 200, "%s: a stale tag gets the file" % path)
        if path != "/ui/":
            total += len(want)
    check(total < 100 * 1024, "the page's files together are well under 100 KB: %d bytes" % total)
    st, _, h, body = s.request("HEAD", "/")
    check(st == 200 and body == b"", "HEAD / (%s)" % st)
    st, j, h, _ = s.post("/", {})
    check(st == 405 and "GET" in h.get("allow", ""), "POST / is 405 (%s %r)" % (st, h.get("allow")))
    # the files need no key; the API still does
    check(s.get("/status")[0] == 401, "/status needs the key")
    check(s.get("/docs")[0] == 401, "/docs needs the key as before")
    # nothing from elsewhere: every reference is to the page's own files, a fragment or data:
    html = ui_file("index.html").decode()
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    check(refs and all(r.startswith(("/ui/", "#", "data:")) for r in refs), "references: %r" % refs)
    for name in ("index.html", "ui.css", "ui.js"):
        text = ui_file(name).decode()
        check("http://" not in text and "https://" not in text and "@import" not in text,
              "%s loads nothing from elsewhere" % name)
        check("innerHTML" not in text and "insertAdjacentHTML" not in text and
              "document.write" not in text, "%s never inserts HTML" % name)
        check(" style=" not in text and "<script>" not in text,
              "%s has no inline style or script" % name)
    s.stop()


def test_no_ui():
    for args, env in ((["--no-ui"], None), ([], {"CLARA_UI": "0"}), ([], {"CLARA_UI": "false"})):
        s = Server("--model", DEMO, *args, env=env)
        st, _, h, _ = s.get("/")
        check(st == 307 and h.get("location") == "/docs", "%s %s: GET / is the 307 to /docs (%s)"
              % (args, env, st))
        for p in ("/ui/", "/ui/ui.js", "/ui/ui.css"):
            check(s.get(p)[0] == 404, "%s %s: %s is 404" % (args, env, p))
        check(s.get("/docs")[0] == 200, "/docs is still there")
        s.stop()
    s = Server("--model", DEMO, env={"CLARA_UI": "1"})
    check(s.get("/")[0] == 200, "CLARA_UI=1 serves the page")
    s.stop()
    p = subprocess.run([SERVER, "--model", DEMO,
                        "--port", "0"], env={"CLARA_UI": "maybe", "PATH": "/usr/bin:/bin", "HOME": TMP},
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 2 and "CLARA_UI" in p.stderr and "maybe" in p.stderr,
          "CLARA_UI=maybe is a startup error naming it: %d %r" % (p.returncode, p.stderr[-300:]))
    h = subprocess.run([SERVER, "--help"],
                       capture_output=True, text=True).stdout
    check("--no-ui" in h and "CLARA_UI" in h, "--help lists --no-ui and CLARA_UI")


# ---- the page in chromium ----------------------------------------------------------------------


def check_clean(obs, allowed_errors=()):
    errs = [m for m in obs["console"] if m["type"] == "error" and
            not any(a in m["text"] for a in allowed_errors)]
    check(not errs, "no console errors: %r" % errs[:5])
    check(not obs["pageErrors"], "no page errors: %r" % obs["pageErrors"][:5])
    check(not obs["dialogs"], "no alert/confirm/prompt dialog fired: %r" % obs["dialogs"])
    check(not obs["failed"], "no request failed: %r" % obs["failed"][:5])
    far = [r["url"] for r in obs["requests"] if not r["url"].startswith(("http://127.0.0.1:", "data:"))]
    check(not far, "nothing requested from elsewhere: %r" % far[:5])


def states_grow(states):
    """Distinct texts the answer showed, in order; each must extend the one before."""
    seen = []
    for s in states:
        if s["text"] and (not seen or s["text"] != seen[-1]):
            seen.append(s["text"])
    return seen, all(b.startswith(a) for a, b in zip(seen, seen[1:]))


def test_browser():
    s = Server("--model", DEMO, "--db", os.path.join(TMP, "ui.db"))
    jsonl = os.path.join(TMP, "memories.jsonl")
    with open(jsonl, "w") as f:
        f.write("\n".join(json.dumps(m) for m in MEMORIES) + "\n")
    shutil.rmtree(SHOTS, ignore_errors=True)
    os.makedirs(SHOTS)
    t0 = time.time()
    obs = browse(s, "main", jsonl=jsonl, question=QUESTION, maxTokens=MAX_TOKENS, edited=EDITED,
                 documents=DOCS)
    print("  the browser scenario took %.1f s (%s)" % (time.time() - t0, obs.get("browserVersion")))

    # the first load: the three files, small
    load = obs.get("load", [])
    check(len(load) == 3 and all(x["status"] == 200 for x in load), "page load: %r"
          % [(x["url"], x["status"]) for x in load])
    size = sum(x["bytes"] for x in load)
    check(size == sum(len(ui_file(n)) for n in ("index.html", "ui.css", "ui.js")) and size < 100 * 1024,
          "the page loads %d bytes (< 100 KB)" % size)

    # upload: 20 memories, the progress bar moving, all listed as stored
    check(obs.get("uploadStatus") == "added 20 memories", "upload: %r" % obs.get("uploadStatus"))
    prog = obs.get("progress", [])
    check(obs.get("progressMax") == 20 and prog and prog[-1] == 20 and len(set(prog)) >= 4 and
          prog == sorted(prog), "the progress bar moved to 20 in steps: %r" % prog)
    listed = obs.get("listedAfterUpload", [])
    check([m["id"] for m in listed] == [m["id"] for m in MEMORIES] and
          [m["text"] for m in listed] == FACTS, "the 20 memories are listed in order: %r" % listed[:3])
    check(["notes", "20", "20"] in obs.get("collectionRow", []), "the collection's row: %r"
          % obs.get("collectionRow"))

    # hostile texts: shown as the characters they are, nothing ran, nothing was fetched
    hostile = {m["id"]: m["text"] for m in obs.get("listedWithHostile", [])}
    check(hostile.get("hostile-img") == "<img src=x onerror=alert(1)>" and
          hostile.get("hostile-script") == "<script>alert(2)</script>" and len(hostile) == 22,
          "hostile memories render as text: %r" % {k: v for k, v in hostile.items() if "hostile" in k})
    check(obs.get("imgElements") == 0, "no <img> or <script> element came from a memory")
    bad = [r["url"] for r in obs["requests"] if r["url"].split("?")[0].rstrip("/").endswith("/x")]
    check(not bad, "no request for the hostile image: %r" % bad)
    check(obs.get("search", {}).get("ids") == ["hostile-img", "hostile-script"] and
          obs["search"]["status"].startswith("2 of 22"), "search: %r" % obs.get("search"))

    # edit and delete, as the API sees them
    check("m05" in obs.get("confirmText", ""), "the delete asks first: %r" % obs.get("confirmText"))
    st, j, _, _ = s.get("/v1/collections/notes/memories/m03")
    check(st == 200 and j["memory"]["text"] == EDITED and j["memory"]["metadata"] == {"n": 3},
          "m03 was edited through the page, its metadata kept: %r" % (j,))
    check(s.get("/v1/collections/notes/memories/m05")[0] == 404, "m05 was deleted through the page")
    stored = api_list(s, "notes")
    check(len(stored) == 21, "21 memories stored: %d" % len(stored))
    after = obs.get("listedAfterReload", [])
    check([(m["id"], m["text"]) for m in after] == [(m["id"], m["text"]) for m in stored],
          "after a reload the page lists what the store holds (%d)" % len(after))

    # the question, by keyboard alone (the pieces of its stream: test_browser_streams; the demo
    # model makes these 256 tokens in ~0.1 s, which the page can receive in one read)
    order = obs.get("tabOrder", [])
    check(order and order[-1] == "ask-question" and len(order) <= 6, "Tab reaches the question: %r" % order)
    check(obs.get("focusBeforeEnter") == "ask-question", "Enter pressed in the question box")
    ask = obs.get("ask", {})
    check(ask.get("maxTokens") == str(MAX_TOKENS), "the token limit typed by keyboard: %r" % ask.get("maxTokens"))
    check(not ask.get("notice"), "no error shown: %r" % ask.get("notice"))
    seen, growing = states_grow(ask.get("states", []))
    check(seen and growing and seen[-1] == ask.get("answer"),
          "the answer grew to its end (%d pieces)" % len(seen))
    # the same request sent directly: streamed, and whole
    req = {"model": "clara", "messages": [{"role": "user", "content": QUESTION}],
           "collection": "notes", "max_tokens": MAX_TOKENS, "stream": True,
           "stream_options": {"include_usage": True}}
    st, _, _, raw = s.post("/v1/chat/completions", req)
    events = [json.loads(e[6:]) for e in raw.decode().split("\n\n") if e.startswith("data: {")]
    text = "".join((e["choices"][0].get("delta") or {}).get("content") or ""
                   for e in events if e.get("choices"))
    check(st == 200 and ask.get("answer") == text,
          "the answer shown equals the same request's sent directly: %r vs %r"
          % (ask.get("answer"), text))
    direct = [e for e in events if "clara" in e][0]
    req.pop("stream")
    st, whole, _, _ = s.post("/v1/chat/completions", req)
    w = whole["choices"][0]["message"]["content"]
    k = next((i for i, (a, b) in enumerate(zip(w, text)) if a != b), min(len(w), len(text)))
    check(w == text, "the streamed pieces make the non-streamed reply: %d vs %d chars, first "
          "difference at %d: %r vs %r" % (len(w), len(text), k, w[k - 5:k + 10], text[k - 5:k + 10]))
    used = direct["clara"]["memories"]
    check(len(ask.get("used", [])) == len(used) and
          all(u["id"] in a and ("%.3f" % u["score"]) in a for u, a in zip(used, ask["used"])),
          "the memories used, with their scores: %r" % ask.get("used", [])[:2])
    check("prefill" in ask.get("timings", "") and "tokens/s" in ask.get("timings", "") and
          "compression" in ask.get("timings", ""), "timings: %r" % ask.get("timings"))
    opened = obs.get("opened", {})
    st, m, _, _ = s.get("/v1/collections/notes/memories/" + used[0]["id"])
    check(opened.get("title") == "Memory " + used[0]["id"] and opened.get("text") == m["memory"]["text"],
          "the first memory used opens: %r" % opened)

    # pasted documents: retrieval, every document with its score
    st, direct, _, _ = s.post("/v1/retrieve", {"query": QUESTION, "documents": DOCS,
                                               "max_new_tokens": 24})
    ad = obs.get("askDocs", {})
    check(st == 200 and ad.get("answer") == direct["answer"], "documents: the same answer as "
          "/v1/retrieve: %r vs %r" % (ad.get("answer"), direct.get("answer")))
    check(len(ad.get("used", [])) == len(DOCS) and
          all(("%.3f" % direct["scores"][i]) in ad["used"][k] for k, i in enumerate(direct["top_k"])),
          "the documents with their scores, best first: %r" % ad.get("used"))

    # the Server view
    facts = obs.get("server", {}).get("facts", {})
    status = s.status()
    check(status["model_name"] in facts.get("Model", "") and "f32" in facts.get("Type", ""),
          "the Server view names the model and its type: %r" % facts)
    check(facts.get("Queue depth") == "0" and int(facts.get("Requests served", "-1")) >= 1,
          "queue depth and requests served: %r" % facts)
    check("loaded" in facts.get("State", "") and "unload" in facts.get("State", ""),
          "keep-alive state: %r" % facts.get("State"))
    check("polls had some" in obs.get("server", {}).get("note", ""), "the latency chart's note")

    # screenshots: each view at both widths, no sideways scrolling on the phone
    for view in ("ask", "memories", "server"):
        for kind, width in (("desktop", 1280), ("phone", 375)):
            p = os.path.join(SHOTS, "%s-%s.png" % (view, kind))
            size = png_size(p) if os.path.exists(p) else None
            check(size is not None and size[0] == width, "%s is a %d px wide PNG: %r" % (p, width, size))
        check(obs["phoneOverflow"].get(view, 999) <= 375, "%s fits 375 px: %r" % (view, obs["phoneOverflow"]))
    check_clean(obs)
    s.stop()


def test_browser_streams():
    """The answer arrives in pieces, token by token: asked in the page on the 1B pair
    (server_harness.big_model: ~30 ms a token here), pasted documents, 48 new tokens."""
    s = Server(*big_model(), "--db", "none")
    obs = browse(s, "stream", question=QUESTION, documents=DOCS, maxTokens=48)
    st = obs.get("stream", {})
    check(not st.get("notice"), "no error shown: %r" % st.get("notice"))
    seen, growing = states_grow(st.get("states", []))
    check(len(seen) >= 2 and growing and seen[-1] == st.get("answer"),
          "the answer arrived in %d growing pieces" % len(seen))
    times = sorted({round(x["t"]) for x in st.get("states", []) if x["text"]})
    check(len(times) >= 2 and times[-1] - times[0] > 100,
          "at different times, over more than 100 ms: %r" % times[:10])
    _, status, _, _ = s.get("/status")
    path = "/v1/retrieve" if status.get("can_retrieve") else "/v1/answer"
    _, whole, _, _ = s.post(path, {"query": QUESTION, "documents": DOCS, "max_new_tokens": 48})
    check(st.get("answer") == whole.get("answer"), "the page's answer is %s's: %r vs %r"
          % (path, st.get("answer"), whole.get("answer")))
    s.stop()


def test_browser_api_key():
    s = Server("--model", DEMO, "--api-key", KEY, "--db", os.path.join(TMP, "key.db"))
    auth = {"Authorization": "Bearer " + KEY}
    st, _, _, _ = s.post("/v1/collections/private/memories", {"memories": ["A secret note."]},
                         headers=auth)
    check(st == 201, "a memory stored with the key (%s)" % st)
    obs = browse(s, "key", key=KEY)
    first = obs.get("keyFirst", {})
    bad = obs.get("badKey", {})
    check(bad.get("open") is True and "ASCII" in bad.get("title", "") and bad.get("stored") is None,
          "a key no browser can send is refused in the dialog, not kept: %r" % bad)
    # opened twice: once for the first call's 401, once more at once for the refused key
    check(first.get("opened") == 2 and first.get("stored") == KEY and not first.get("notice"),
          "the page asked (again for the refused key) and kept the key in sessionStorage: %r"
          % first)
    check(first.get("collections") == ["private"], "then it read the store: %r" % first.get("collections"))
    again = obs.get("keyAfterReload", {})
    check(again.get("opened") == 0 and again.get("dialogOpen") is False and not again.get("notice"),
          "after a reload it does not ask again: %r" % again)
    check(not [r for r in obs["requests"] if KEY in r["url"]], "the key is in no URL")
    api = [r for r in obs["requests"] if "/v1/" in r["url"] or "/status" in r["url"]]
    sent = [r for r in api if r["auth"] == "Bearer " + KEY]
    check(len(sent) >= 3 and all(r["auth"] in (None, "Bearer " + KEY) for r in api),
          "API calls carry Authorization: Bearer (%d of %d)" % (len(sent), len(api)))
    # the page's first calls were answered 401 (the browser logs that); nothing else went wrong
    check(any("401" in m["text"] for m in obs["console"]), "the 401 that made the page ask")
    check_clean(obs, allowed_errors=("status of 401",))
    s.stop()


def test_browser_edits():
    """Edit, then Save with nothing changed: nothing is sent (the text area would have turned
    the CR and CRLF line breaks into LF); Save with the metadata field emptied clears it."""
    s = Server("--model", DEMO, "--db", os.path.join(TMP, "edits.db"))
    mem = {"id": "crlf", "text": "line one\rline two\r\nline three ends here.",
           "metadata": {"k": "v"}}
    obs = browse(s, "edits", collection="edits", memory=mem,
                 collUrl="/v1/collections/edits/memories",
                 memoryUrl="/v1/collections/edits/memories/crlf")
    before, same = obs.get("before") or {}, obs.get("afterUnchanged") or {}
    check(before.get("text") == mem["text"] and obs.get("shownMeta") == '{"k":"v"}',
          "the memory as stored, its metadata shown: %r" % obs.get("shownMeta"))
    check(obs.get("putsUnchanged") == 0 and same.get("text") == mem["text"] and
          same.get("updated_ms") == before.get("updated_ms"),
          "Save with nothing edited sends nothing; the text keeps its line breaks: %r" % same)
    cleared = obs.get("afterCleared") or {}
    check(obs.get("putsCleared") == 1 and not cleared.get("metadata") and
          cleared.get("text") == mem["text"],
          "Save with the metadata emptied clears it and keeps the text as it was: %r" % cleared)
    check(not obs.get("notice"), "no error shown: %r" % obs.get("notice"))
    check_clean(obs)
    s.stop()


def test_browser_stream_cut():
    """An answer's stream that ends without [DONE] is shown as cut off, not as a shorter answer."""
    s = Server("--model", DEMO, "--db", "none")
    obs = browse(s, "cut", question=QUESTION, documents=DOCS)
    cut = obs.get("cut", {})
    check(cut.get("noticeShown") and "cut off" in cut.get("notice", "") and
          cut.get("answer") == "Hel", "the page shows the piece that came and says the answer was "
          "cut off: %r" % cut)
    s.stop()


def test_docs():
    api = open(os.path.join(ROOT, "docs", "API.md")).read()
    for w in ("--no-ui", "CLARA_UI", "/ui/", "Content-Security-Policy"):
        check(w in api, "docs/API.md mentions %s" % w)
    readme = open(os.path.join(ROOT, "README.md")).read()
    for view in ("ask", "memories", "server"):
        for kind in ("desktop", "phone"):
            p = "docs/ui/%s-%s.png" % (view, kind)
            check(p in readme and png_size(os.path.join(ROOT, p)) is not None,
                  "README shows %s" % p)


if __name__ == "__main__":
    t0 = time.time()
    try:
        run(test_files_over_http)
        run(test_no_ui)
        run(test_docs)
        npm_install(PUPPETEER_DIR, "puppeteer-core", PUPPETEER_VERSION, ("node", "npm", CHROMIUM))
        run(test_browser)
        run(test_browser_streams)
        run(test_browser_api_key)
        run(test_browser_edits)
        run(test_browser_stream_cut)
        check_no_sanitizer_reports()
    except Exception as e:  # chromium, node or puppeteer-core missing: a failure, never a skip
        check(False, "test_ui could not run: %s" % e)
    finally:
        cleanup()
    print("ui tests took %.1f s" % (time.time() - t0))
    report("test_ui")
