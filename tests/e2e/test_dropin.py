#!/usr/bin/env python3
"""Acceptance: clara-server as a drop-in for the Python server "CLaRa Remembers It All"
(github.com/EricBintner/CLaRa-Remembers-It-All: FastAPI + pydantic v2 on Python 3.11). Its own
tests (tests/test_api.py), its example client (examples/python_client.py) and its README's curl
and JavaScript fetch calls, written again here as requests against the real server on the demo
model; what that suite took from its mocked model (the answer text, a 16.0 ratio) is checked
against our own truth instead (the `clara` CLI's answer, the counts' own ratio). Then the error
shapes FastAPI gives (422 detail lists: Python's json module itself says where a malformed body
fails), /status's field types, the .env file and the Python server's flags and variables, GET /
and /docs, and /v1/retrieve with fewer documents than top_k."""

import datetime
import json
import os
import re
import shutil
import subprocess
import time

from harness import CLARA, ROOT, check, report, run
from server_harness import DEMO, SERVER, TMP, Server, check_no_sanitizer_reports, cleanup

S = None  # the main server: demo model, no key


def cli_answer(memories, query, max_new_tokens):
    args = [CLARA, "ask", "--model", DEMO, "--json", "--threads", "2", "--query", query,
            "--max-new-tokens", str(max_new_tokens)]
    for m in memories:
        args += ["--doc", m]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["answer"]


def check_counts(j, what):
    """The fields CompressResponse declares, with its types, and a ratio that is the counts'."""
    for k, t in [("success", bool), ("original_tokens", int), ("compressed_tokens", int),
                 ("compression_ratio", (int, float)), ("latency_ms", (int, float))]:
        check(isinstance(j.get(k), t) and not (t is int and isinstance(j.get(k), bool)),
              "%s: %s is %s (%r)" % (what, k, t, j.get(k)))
    check("error" in j and "answer" in j, "%s: error and answer present (%s)" % (what, j.keys()))
    if j.get("success"):
        check(j["error"] is None and isinstance(j["answer"], str), "%s: error null" % what)
        ratio = j["original_tokens"] / j["compressed_tokens"]
        check(abs(j["compression_ratio"] - ratio) <= 0.006,
              "%s: compression_ratio %s = original/compressed %.3f" % (what, j["compression_ratio"],
                                                                       ratio))


def detail_of(j):
    return j.get("detail") if isinstance(j, dict) else None


# ---- its tests/test_api.py --------------------------------------------------------------------


def test_api_health():
    # TestHealthEndpoint.test_health_ok: 200 {"status": "ok"} (we add model_loaded beside)
    st, j, _, _ = S.get("/health")
    check(st == 200 and j["status"] == "ok", "test_health_ok (%s %s)" % (st, j))
    check(set(j) - {"model_loaded"} == {"status"}, "health: status and only our model_loaded")


def test_api_health_not_loaded():
    # TestHealthEndpoint.test_health_not_loaded: a model that cannot load -> /health 503
    path = os.path.join(TMP, "dropin-vanishing.gguf")
    shutil.copy(DEMO, path)
    v = Server("--model", path, "--keep-alive", "0", "--db", "none")
    os.rename(path, path + ".away")
    st, j, _, _ = v.post("/compress", {"memories": ["Test"], "query": "Test"})
    # ClaraModel.compress catches the failure: 200, success false, counts at zero
    check(st == 200 and j["success"] is False and j["answer"] is None and j["error"] and
          j["error_type"] == "model_unavailable", "model failure -> 200 success:false (%s %s)" %
          (st, j))
    check_counts(j, "model failure")
    check(j["original_tokens"] == 0 and j["compressed_tokens"] == 0, "failure counts are zero")
    st, j, _, _ = v.get("/health")
    check(st == 503, "test_health_not_loaded: 503 (%s %s)" % (st, j))
    check(v.status()["errors"] == 1, "the failure counts as an error")
    v.stop()


def test_api_status():
    # TestStatusEndpoint.test_status_returns_model_info (its model name is the mock's; ours is
    # the file we serve)
    st, j, _, _ = S.get("/status")
    check(st == 200, "status 200")
    check(j["model"] == os.path.realpath(DEMO) or j["model"].endswith("clara-demo.gguf"),
          "model names the served file (%s)" % j["model"])
    check(j["subfolder"] == "compression-16", "subfolder compression-16 (%s)" % j["subfolder"])
    check(j["initialized"] is False, "not initialized before the first request")
    check("uptime_seconds" in j and isinstance(j["uptime_seconds"], int), "uptime_seconds int")


def test_api_compress():
    # TestCompressEndpoint.test_compress_success
    mem, q = ["Test memory 1", "Test memory 2"], "What is the test about?"
    st, j, _, _ = S.post("/compress", {"memories": mem, "query": q})
    check(st == 200 and j["success"] is True, "test_compress_success (%s %s)" % (st, j))
    check(j["answer"] == cli_answer(mem, q, 128), "answer = clara ask's")
    check_counts(j, "test_compress_success")
    # test_compress_with_max_tokens
    st, j, _, _ = S.post("/compress", {"memories": ["Test memory"], "query": "Test query",
                                       "max_new_tokens": 256})
    check(st == 200 and j["success"] is True, "test_compress_with_max_tokens (%s)" % st)
    check(j["answer"] == cli_answer(["Test memory"], "Test query", 256), "256-token answer")


def test_api_validation():
    # test_compress_missing_memories, test_compress_missing_query, test_compress_empty_memories:
    # 422, with the detail pydantic writes
    b = {"query": "Test query"}
    st, j, _, _ = S.post("/compress", b)
    check(st == 422 and detail_of(j) == [{"type": "missing", "loc": ["body", "memories"],
                                          "msg": "Field required", "input": b}],
          "test_compress_missing_memories (%s %s)" % (st, j))
    b = {"memories": ["Test memory"]}
    st, j, _, _ = S.post("/compress", b)
    check(st == 422 and detail_of(j) == [{"type": "missing", "loc": ["body", "query"],
                                          "msg": "Field required", "input": b}],
          "test_compress_missing_query (%s %s)" % (st, j))
    st, j, _, _ = S.post("/compress", {"memories": [], "query": "Test query"})
    check(st == 422 and detail_of(j) == [{
        "type": "too_short", "loc": ["body", "memories"],
        "msg": "List should have at least 1 item after validation, not 0", "input": [],
        "ctx": {"field_type": "List", "min_length": 1, "actual_length": 0}}],
        "test_compress_empty_memories (%s %s)" % (st, j))
    check(j["success"] is False and j["error_type"] == "validation_error" and j["error"],
          "our error and error_type stay beside detail")


def test_api_key():
    # TestAPIKeyAuth.test_compress_requires_api_key
    # --no-ui: the Python server's root (the web page at / needs no key, tests/e2e/test_ui.py)
    k = Server("--api-key-file", write(os.path.join(TMP, "dropin-key"), "test-secret-key\n"),
               "--db", "none", "--no-ui")
    b = {"memories": ["Test"], "query": "Test"}
    st, j, _, _ = k.post("/compress", b)
    check(st == 401 and j["detail"] == "Missing API key", "no key -> 401 (%s %s)" % (st, j))
    st, j, _, _ = k.post("/compress", b, headers={"Authorization": "Bearer wrong-key"})
    check(st == 403 and j["detail"] == "Invalid API key", "wrong key -> 403 (%s %s)" % (st, j))
    st, j, _, _ = k.post("/compress", b, headers={"Authorization": "Bearer test-secret-key"})
    check(st == 200 and j["success"] is True, "right key -> 200 (%s)" % st)
    # GET / and /docs are behind the key as /openapi.json is
    for p in ["/", "/docs", "/openapi.json"]:
        check(k.get(p)[0] == 401, "%s needs the key" % p)
    auth = {"Authorization": "Bearer test-secret-key"}
    check(k.get("/docs", headers=auth)[0] == 200 and k.get("/", headers=auth)[0] == 307,
          "/docs and / with the key")
    k.stop()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


# ---- its examples/python_client.py, README curl and JavaScript fetch ------------------------------


def test_python_client_example():
    # ClaraClient.health(), .status(), .compress() with raise_for_status and the keys main() reads
    st, h, _, _ = S.get("/health")
    check(st < 400 and h == {"status": "ok", "model_loaded": h["model_loaded"]}, "health")
    st, s, _, _ = S.get("/status")
    check(st < 400 and all(k in s for k in ["model", "requests_served"]), "status keys")
    memories = [
        "User enjoys hiking in national parks and photography.",
        "User works as a software engineer and likes Python.",
        "User visited Yellowstone and Yosemite last year.",
        "User has a golden retriever named Max who loves fetch.",
        "User prefers dark mode in all applications.",
        "User drinks coffee in the morning and tea in the afternoon.",
        "User is learning about RAG systems and context compression.",
    ]
    query = "What are the user's hobbies and daily habits?"
    payload = json.dumps({"memories": memories, "query": query, "max_new_tokens": 128})
    st, r, _, _ = S.post("/compress", payload, headers={
        "User-Agent": "python-requests/2.31.0", "Accept": "*/*", "Connection": "keep-alive"})
    check(st < 400 and r["success"] and r["answer"] == cli_answer(memories, query, 128),
          "python_client compress (%s)" % st)
    check_counts(r, "python_client")


def curl(*args):
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}"] + list(args),
                         capture_output=True, text=True, timeout=60)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(body) if body else None


def test_readme_curl():
    url = "http://localhost:%d" % S.port
    code, j = curl(url + "/health")
    check(code == 200 and j["status"] == "ok", "README curl /health")
    code, j = curl("-X", "POST", url + "/compress", "-H", "Content-Type: application/json", "-d",
                   '{"memories": ["User likes hiking", "User has a dog"], '
                   '"query": "What are the user hobbies?"}')
    check(code == 200 and j["success"] is True, "README quick-start curl (%s %s)" % (code, j))
    check(j["answer"] == cli_answer(["User likes hiking", "User has a dog"],
                                    "What are the user hobbies?", 128), "its answer")
    # the API Usage example, with "keep_alive": 300 (a per-request override /status reflects)
    code, j = curl("-X", "POST", url + "/compress", "-H", "Content-Type: application/json", "-d",
                   '''{
    "memories": [
      "User likes hiking in national parks.",
      "User works as a software engineer.",
      "User has a dog named Max."
    ],
    "query": "What outdoor activities does the user enjoy?",
    "keep_alive": 300
  }''')
    check(code == 200 and j["success"] is True, "README API usage curl (%s)" % code)
    code, s = curl(url + "/status")
    check(code == 200 and s["keep_alive_seconds"] == 300, "keep_alive 300 in force (%s)" %
          s["keep_alive_seconds"])
    check_status_types(s, loaded=True)
    # "keep_alive": 60 then none: the override, then the server's default again
    S.post("/compress", {"memories": ["a"], "query": "q", "keep_alive": 60, "max_new_tokens": 1})
    s = S.status()
    check(s["keep_alive_seconds"] == 60 and 58 <= s["seconds_until_unload"] <= 60,
          "keep_alive 60 (%s, %s)" % (s["keep_alive_seconds"], s["seconds_until_unload"]))
    # every model request decides, whatever its endpoint: a chat without keep_alive too
    S.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "q"}],
                                    "documents": ["a"], "max_tokens": 1})
    s = S.status()
    check(s["keep_alive_seconds"] == -1 and s["seconds_until_unload"] is None,
          "after a chat without keep_alive, the server's (-1) in force and shown (%s, %s)"
          % (s["keep_alive_seconds"], s["seconds_until_unload"]))
    S.post("/compress", {"memories": ["a"], "query": "q", "keep_alive": 60, "max_new_tokens": 1})
    S.post("/compress", {"memories": ["a"], "query": "q", "max_new_tokens": 1})
    check(S.status()["keep_alive_seconds"] == -1, "back to the server's (-1)")


def check_status_types(s, loaded):
    for k in ["last_activity", "will_unload_at"]:
        v = s[k]
        if v is None:
            continue
        check(isinstance(v, str) and v.endswith("+00:00"), "%s ISO-8601 UTC (%r)" % (k, v))
        t = datetime.datetime.fromisoformat(v)
        check(t.utcoffset() == datetime.timedelta(0) and abs(t.timestamp() - time.time()) < 400,
              "%s is about now or within keep-alive (%s)" % (k, v))
    check(s["last_activity"] is not None if loaded else True, "last_activity set once used")
    su = s["seconds_until_unload"]
    check(su is None or (isinstance(su, int) and not isinstance(su, bool)),
          "seconds_until_unload int or null (%r)" % su)
    for k in ["backend", "device", "dtype"]:
        check((s[k] is not None) == s["initialized"], "%s null exactly while unloaded (%r)" %
              (k, s[k]))


def test_readme_javascript():
    node = shutil.which("node")
    if not node:
        check(False, "node is needed for the README's JavaScript example")
        return
    # the README's compressMemories, its TypeScript annotations removed
    script = """
async function compressMemories(memories, query) {
  const response = await fetch("http://localhost:%d/compress", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ memories, query })
  });
  return response.json();
}
compressMemories(["User likes coffee.", "User works remotely."], "What does the user prefer?")
  .then(r => console.log(JSON.stringify(r)), e => { console.error(e); process.exit(1); });
""" % S.port
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
    check(out.returncode == 0, "node fetch ran (%s)" % out.stderr[-300:])
    j = json.loads(out.stdout) if out.returncode == 0 else {}
    check(j.get("success") is True and j.get("answer") == cli_answer(
        ["User likes coffee.", "User works remotely."], "What does the user prefer?", 128),
        "README JavaScript fetch -> the answer (%s)" % str(j)[:200])


# ---- FastAPI's error shapes ----------------------------------------------------------------------


MALFORMED = [b"{", b"   ", b"not json", b'{"memories": ["a"], "query": "q"',
             b"{'memories': ['a'], 'query': 'q'}", b'{"memories": ["a",], "query": "q"}',
             b'{"memories": ["a"], "query": "q", }', b'{"memories": ["a"], "query": "q"} x',
             b'{"a":1}{"b":2}', b"[1,2", b'{"memories" ["a"]}', b'{"memories": ["a\x01"]}',
             b'{"memories": ["\\x"]}', b'{"memories": ["\\u12"]}', b'{"memories": ["\\u12zz"]}',
             b'{"memories": [01]}', b'{"memories": [-]}', b'{"memories": [1.]}',
             b'{"memories": [tru]}', b'{"memories": "abc', b'{"memories": ["a"]\x00}',
             '{"mémoires": ["日本"], , }'.encode(), '\ufeff{"a": }'.encode(), b'{"a": 1',
             b'{"a": [1, 2', b'{"a": {"b": ', b'"\\']


def test_json_invalid():
    """Python's json module is the truth for where a body fails and what it says."""
    for raw in MALFORMED:
        try:
            json.loads(raw)
            check(False, "Python reads %r: not a malformed case" % raw)
            continue
        except json.JSONDecodeError as e:
            want = {"type": "json_invalid", "loc": ["body", e.pos], "msg": "JSON decode error",
                    "input": {}, "ctx": {"error": e.msg}}
        st, j, _, _ = S.post("/compress", raw)
        check(st == 422 and detail_of(j) == [want] and j["error_type"] == "invalid_json",
              "%r -> %s %s (want %s)" % (raw[:40], st, detail_of(j), want))
    # an empty body and JSON null: FastAPI's "missing" body
    for raw in [b"", b"null"]:
        st, j, _, _ = S.post("/compress", raw)
        check(st == 422 and detail_of(j) == [{"type": "missing", "loc": ["body"],
                                              "msg": "Field required", "input": None}],
              "%r -> missing body (%s %s)" % (raw, st, j))
    # bytes that are not UTF-8: Starlette cannot decode them, FastAPI says 400
    st, j, _, _ = S.post("/compress", b'{"memories": ["\xff"], "query": "q"}')
    check(st == 400 and j["detail"] == "There was an error parsing the body",
          "invalid UTF-8 -> 400 (%s %s)" % (st, j))


def err(type_, loc, msg, input_, ctx=None):
    e = {"type": type_, "loc": ["body"] + loc, "msg": msg, "input": input_}
    if ctx:
        e["ctx"] = ctx
    return e


def test_pydantic_errors():
    """CompressRequest's fields as pydantic v2 checks them: every error, in field order."""
    M = {"memories": ["a"], "query": "q"}
    INT = "Input should be a valid integer"
    cases = [
        ([1, 2], [err("model_attributes_type", [], "Input should be a valid dictionary or object "
                      "to extract fields from", [1, 2])]),
        ("text", [err("model_attributes_type", [], "Input should be a valid dictionary or object "
                      "to extract fields from", "text")]),
        ({}, [err("missing", ["memories"], "Field required", {}),
              err("missing", ["query"], "Field required", {})]),
        ({"memories": "a", "query": 5},
         [err("list_type", ["memories"], "Input should be a valid list", "a"),
          err("string_type", ["query"], "Input should be a valid string", 5)]),
        ({"memories": [1, None, "x"], "query": "q"},
         [err("string_type", ["memories", 0], "Input should be a valid string", 1),
          err("string_type", ["memories", 1], "Input should be a valid string", None)]),
        ({"memories": {}, "query": ""},
         [err("list_type", ["memories"], "Input should be a valid list", {}),
          err("string_too_short", ["query"], "String should have at least 1 character", "",
              {"min_length": 1})]),
        (dict(M, max_new_tokens=0), [err("greater_than_equal", ["max_new_tokens"],
                                         "Input should be greater than or equal to 1", 0,
                                         {"ge": 1})]),
        (dict(M, max_new_tokens="513"), [err("less_than_equal", ["max_new_tokens"],
                                             "Input should be less than or equal to 512", "513",
                                             {"le": 512})]),
        (dict(M, max_new_tokens=5.5), [err("int_from_float", ["max_new_tokens"],
                                           INT + ", got a number with a fractional part", 5.5)]),
        (dict(M, max_new_tokens="five"), [err("int_parsing", ["max_new_tokens"],
                                              INT + ", unable to parse string as an integer",
                                              "five")]),
        (dict(M, max_new_tokens=None), [err("int_type", ["max_new_tokens"], INT, None)]),
        (dict(M, keep_alive=[1]), [err("int_type", ["keep_alive"], INT, [1])]),
        (dict(M, keep_alive="x"), [err("int_parsing", ["keep_alive"],
                                       INT + ", unable to parse string as an integer", "x")]),
    ]
    for body, want in cases:
        st, j, _, _ = S.post("/compress", json.dumps(body))
        check(st == 422 and detail_of(j) == want and j["error_type"] == "validation_error",
              "%s -> %s %s (want %s)" % (json.dumps(body)[:60], st, detail_of(j), want))
    # pydantic's lax integers: "5", 5.0 and true are integers there, so they are here
    for v, n in [("5", 5), (5.0, 5), (True, 1), (" 7 ", 7)]:
        st, j, _, _ = S.post("/compress", dict(M, max_new_tokens=v))
        check(st == 200 and j["success"] and j["generated_tokens"] <= n,
              "max_new_tokens %r accepted as %d (%s %s)" % (v, n, st, str(j)[:100]))
    st, j, _, _ = S.post("/compress", dict(M, keep_alive=None))
    check(st == 200, "keep_alive null is the default (Optional[int])")
    # our own limits keep their 422, with a detail list too
    st, j, _, _ = S.post("/compress", {"memories": ["a"] * 1025, "query": "q"})
    d = detail_of(j)
    check(st == 422 and isinstance(d, list) and d[0]["type"] == "value_error" and
          d[0]["msg"].startswith("Value error, "), "our limit -> 422 value_error (%s)" % d)
    # other errors: FastAPI's HTTPException string
    st, j, _, _ = S.request("GET", "/compress")
    check(st == 405 and j["detail"] == "Method Not Allowed", "GET /compress -> 405 (%s)" % j)
    # the other endpoints keep their shapes
    st, j, _, _ = S.post("/v1/answer", b"{")
    check(st == 400 and "detail" not in j and j["error_type"] == "invalid_json", "/v1 unchanged")


# ---- configuration: .env, flags and variables ---------------------------------------------------


def server_in(d, *args, env=None):
    return Server("--db", "none", *args, env=env, cwd=d)


def test_dotenv():
    d = os.path.join(TMP, "dotenv-1")
    os.makedirs(d, exist_ok=True)
    write(os.path.join(d, ".env"), """# clara-server configuration
export CLARA_KEEP_ALIVE = 42   # seconds
CLARA_MAX_NEW_TOKENS='3'
CLARA_API_KEY="k e\\"y#1"
CLARA_CACHE=~/.cache/clara-server
CLARA_SUBFOLDER=compression-16
CLARA_TYPO=1
clara_log_level=info
this line is not a statement
""")
    s = server_in(d)
    log = s.text()
    auth = {"Authorization": 'Bearer k e"y#1'}
    st, j, _, _ = s.get("/status", headers=auth)
    check(st == 200, "API key from .env, double quotes and escapes (%s)" % st)
    check(j["keep_alive_seconds"] == 42, "export, spaces and a comment (%s)" % j.get(
        "keep_alive_seconds"))
    st, j, _, _ = s.post("/compress", {"memories": ["a"], "query": "q"}, headers=auth)
    check(st == 200 and j["generated_tokens"] <= 3, "single-quoted CLARA_MAX_NEW_TOKENS")
    check("unknown variable CLARA_TYPO in .env" in log, "unknown variable warned: " + log[:300])
    check("CLARA_CACHE " not in log and "CLARA_SUBFOLDER " not in log and "LOG_LEVEL" not in log,
          "known variables not warned about")
    check(".env line 9 cannot be read" in log, "the unreadable line named")
    s.stop()
    # the real environment wins over the file; an unknown CLARA_ variable there is warned too
    s = server_in(d, env={"CLARA_KEEP_ALIVE": "7", "CLARA_API_KEY": "env", "CLARA_NOPE": "1",
                          "CLARA_ISA": "ref"})
    check(s.get("/status", headers={"Authorization": "Bearer env"})[1]["keep_alive_seconds"] == 7,
          "the environment wins over .env")
    check("unknown variable CLARA_NOPE in the environment" in s.text() and
          "CLARA_ISA" not in s.text(), "environment variables checked")
    s.stop()
    # the command line wins over both
    s = server_in(d, "--keep-alive", "9", "--api-key", "f")
    check(s.get("/status", headers={"Authorization": "Bearer f"})[1]["keep_alive_seconds"] == 9,
          "the command line wins")
    s.stop()


def run_server(args, cwd=None, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("CLARA_")}
    e.update(env or {})
    return subprocess.run([os.path.abspath(SERVER)] + args, capture_output=True, text=True,
                          timeout=30, cwd=cwd, env=e)


def test_flags_and_variables():
    out = run_server(["--help"])
    for f in ["--subfolder", "--workers", "--reload", "--version", "CLARA_DEVICE_ID",
              "CLARA_RATE_LIMIT", "CLARA_CACHE", ".env"]:
        check(out.returncode == 0 and f in out.stdout, "--help lists %s" % f)
    out = run_server(["--version"])
    check(out.returncode == 0 and re.match(r"clara-server \d", out.stdout), "--version")
    for args, env, pat in [(["--subfolder", "compression-64"], {}, "compression-16 or"),
                           ([], {"CLARA_WORKERS": "two"}, "workers"),
                           ([], {"CLARA_RELOAD": "maybe"}, "reload"),
                           ([], {"CLARA_DEVICE_ID": "-1"}, "device id")]:
        out = run_server(args + ["--db", "none"], env=env)
        check(out.returncode == 2 and pat in out.stderr, "%s %s refused (%s)" % (
            args, env, out.stderr[-200:]))
    s = Server("--db", "none", "--workers", "4", "--reload", "--subfolder", "compression-128",
               env={"CLARA_DEVICE_ID": "1", "CLARA_RATE_LIMIT": "60", "CLARA_BATCH_SIZE": "4",
                    "CLARA_CACHE": "/nonexistent"})
    log = s.text()
    for pat in ["workers 4", "reload", "CLARA_DEVICE_ID is ignored", "CLARA_RATE_LIMIT is not "
                "enforced", "CLARA_BATCH_SIZE", "subfolder compression-128 was asked for, but the "
                "model file is compression-16"]:
        check(pat in log, "note: %s" % pat)
    check("unknown variable" not in log, "the Python server's variables are known")
    with open(os.path.join(ROOT, "docs", "API.md")) as f:
        doc = f.read()
    for w in ["--subfolder", "--workers", "--reload", "CLARA_SUBFOLDER", "CLARA_WORKERS",
              "CLARA_DEVICE_ID", "CLARA_RATE_LIMIT", "CLARA_CACHE`", ".env", "--host 0.0.0.0",
              "--cors-origins", "5 ms", "json_invalid", "top_k_used"]:
        check(w in doc, "docs/API.md documents %s" % w)
    api = S.get("/openapi.json")[1]["components"]["schemas"]
    check(api["Status"]["properties"]["last_activity"].get("format") == "date-time" and
          "top_k_used" in api["V1RetrieveResponse"]["properties"] and
          "FastAPIValidationError" in api, "openapi.json describes the new shapes")
    check(s.healthy() and s.status()["subfolder"] == "compression-16", "serves the model's")
    s.stop()


# ---- GET / and /docs; /v1/retrieve with fewer documents ------------------------------------------


def test_root_and_docs():
    # the Python server's root, with the web page switched off (--no-ui, as S is started); with
    # it on (the default), / is the page (tests/e2e/test_ui.py)
    st, _, h, _ = S.get("/")
    check(st in (302, 307) and h.get("location") == "/docs", "GET / redirects to /docs (%s)" % st)
    st, _, h, raw = S.get("/docs")
    page = raw.decode()
    check(st == 200 and h["content-type"].startswith("text/html"), "GET /docs is HTML")
    csp = h.get("content-security-policy", "")
    check("default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script" not in csp
          and h.get("x-frame-options") == "DENY" and h.get("x-content-type-options") == "nosniff",
          "/docs: no script, no framing (%r)" % csp)
    api = S.get("/openapi.json")[1]
    for p in api["paths"]:
        check("<code>%s</code>" % p in page, "/docs shows %s" % p)
    check("<script" not in page.lower() and not re.search(r"(src|href)\s*=\s*\"https?:", page),
          "/docs loads nothing from elsewhere")
    # every text escaped: no tag but the page's own, quotes from the description as entities
    tags = set(re.findall(r"</?([a-zA-Z0-9]+)", page))
    check(tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "small",
                   "p", "a", "section", "span", "code", "b", "details", "summary", "pre"},
          "only the page's own tags (%s)" % tags)
    check('"memories"' not in page and "&quot;memories&quot;" in page, "JSON text escaped")


def test_retrieve_fewer_documents():
    st, j, _, _ = S.post("/v1/retrieve", {"query": "q", "documents": ["alpha", "beta"]})
    check(st == 200 and j["top_k_used"] == 2 and sorted(j["top_k"]) == [0, 1] and
          "only 2 documents" in j.get("note", ""), "2 documents, top_k 5 -> both used (%s %s)" %
          (st, str(j)[:200]))
    want = subprocess.run([CLARA, "retrieve", "--model", DEMO, "--json", "--threads", "2",
                           "--doc", "alpha", "--doc", "beta", "--query", "q", "--top-k", "2"],
                          capture_output=True, text=True, timeout=60)
    if want.returncode == 0:
        w = json.loads(want.stdout)
        check(j["answer"] == w["answer"] and j["top_k"] == w["top_k"],
              "the same as clara retrieve --top-k 2")
    else:
        check(False, "clara retrieve --top-k 2: " + want.stderr[-200:])
    st, j, _, _ = S.post("/v1/retrieve", {"query": "q", "documents": ["a", "b", "c"], "top_k": 9})
    check(st == 200 and j["top_k_used"] == 3 and "note" in j, "top_k 9 over 3 documents")
    docs = ["d%d" % i for i in range(6)]
    st, j, _, _ = S.post("/v1/retrieve", {"query": "q", "documents": docs})
    check(st == 200 and j["top_k_used"] == 5 and "note" not in j, "enough documents: no note")


if __name__ == "__main__":
    t0 = time.time()
    try:
        S = Server("--keep-alive", "-1", "--db", "none", "--no-ui")
        for fn in [test_api_status, test_api_health, test_api_compress, test_api_validation,
                   test_api_key, test_api_health_not_loaded, test_python_client_example,
                   test_readme_curl, test_readme_javascript, test_json_invalid,
                   test_pydantic_errors, test_dotenv, test_flags_and_variables,
                   test_root_and_docs, test_retrieve_fewer_documents]:
            run(fn)
        check(S.stop() == 0, "exits 0")
        check_no_sanitizer_reports()
    finally:
        cleanup()
    print("drop-in tests took %.1f s" % (time.time() - t0))
    report("test_dropin")
