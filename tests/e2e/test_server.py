"""clara-server over real HTTP: the real build/clara-server is started on a free loopback port
(--port 0, the port is read from its "listening on" line) with the demo model, and is always
killed at the end.

Covers: /compress equal to `clara ask --json` for the same input, the Python server's README
request shapes, /v1/compress -> /v1/answer equal to /compress, /v1/retrieve equal to
`clara retrieve --json` (and 422 on a model without a query reasoner), 16 clients x 10 requests
identical to the sequential answers, >= 60 malformed requests each answered with the right 4xx
JSON while /health stays 200, slowloris, API keys, CORS, queue-full 503 + Retry-After, dropped
tasks of clients that left, keep-alive unload/reload and per-request 0 / -1, endpoints that must
not load the model, configuration errors, graceful SIGTERM."""

import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

from harness import CLARA, FIXTURES, ROOT, check, report, run
from server_harness import (DEMO, SERVER, SLOW, TEST_BACKEND, TMP, VULKAN_BUILT, Server,
                            check_no_sanitizer_reports, cleanup, metric, raw_request, wait_for)

def cli(cmd, memories, query=None, max_new_tokens=None, extra=(), model=DEMO):
    args = [CLARA, cmd, "--model", model, "--json", "--threads", "2"]
    if TEST_BACKEND:  # the server's backend, so that both compute the same
        args += ["--backend", TEST_BACKEND]
    for m in memories:
        args += ["--doc", m]
    if query is not None:
        args += ["--query", query]
    if max_new_tokens is not None:
        args += ["--max-new-tokens", str(max_new_tokens)]
    out = subprocess.run(args + list(extra), capture_output=True, text=True,
                         timeout=600 if TEST_BACKEND else 60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def n_tokens(text):
    out = subprocess.run([CLARA, "tokenize", "--model", DEMO, "--json", "--text", text],
                         capture_output=True, text=True, timeout=30)
    return len(json.loads(out.stdout)["ids"])


CASES = [
    (["User likes hiking in national parks.", "User works as a software engineer.",
      "User has a dog named Max."], "What outdoor activities does the user enjoy?", 128),
    (["The sky is blue."], "What colour is the sky?", 16),
    (["Paris is the capital of France. " * 40, "Zürich liegt in der Schweiz — 日本語も。", ""],
     "Where is Zürich?", 40),
    (["one", "two", "three", "four", "five", "six", "seven"], "Count them.", 1),
]


def body(case):
    return {"memories": case[0], "query": case[1], "max_new_tokens": case[2]}


SEQ = {}  # case index -> /compress answer


def test_compress_equals_cli():
    """/compress reads long memories in chunks (as `clara ask --chunk`); --compress-cut 1 cuts
    them as the reference does (as `clara ask`, which says which documents it cut)."""
    cut = Server("--compress-cut", "1")
    for i, c in enumerate(CASES):
        st, j, _, _ = cut.post("/compress", body(c))
        want = cli("ask", c[0], c[1], c[2])
        check(st == 200 and j["answer"] == want["answer"] and
              j["cut_documents"] == want["cut_documents"],
              "case %d: --compress-cut 1 answers as clara ask (cut %s)" % (i, j.get("cut_documents")))
        check(j.get("compressed_tokens") == 16 * len(c[0]), "case %d: cut: compressed_tokens" % i)
    check(cut.stop() == 0, "the --compress-cut server stops")
    for i, c in enumerate(CASES):
        st, j, _, _ = S.post("/compress", body(c))
        want = cli("ask", c[0], c[1], c[2], extra=["--chunk"])
        if not check(st == 200 and j and j["success"] is True, "case %d: status %s %s" % (i, st, j)):
            continue
        SEQ[i] = j["answer"]
        check(j["answer"] == want["answer"], "case %d: answer differs from clara ask" % i)
        check(j["prompt_tokens"] == want["prompt_tokens"], "case %d: prompt_tokens" % i)
        check(j["generated_tokens"] == len(want["ids"]), "case %d: generated_tokens" % i)
        orig = sum(n_tokens(m) for m in c[0])
        check(j["original_tokens"] == orig, "case %d: original_tokens %s vs %d" % (
            i, j["original_tokens"], orig))
        n_chunks = len(want["chunk_of"])
        check(j["chunks_read"] == n_chunks and j["chunk_of"] == want["chunk_of"],
              "case %d: read in %d chunks, as clara ask --chunk" % (i, n_chunks))
        check(j["compressed_tokens"] == 16 * n_chunks, "case %d: compressed_tokens" % i)
        check(abs(j["compression_ratio"] - orig / (16.0 * n_chunks)) <= 0.0051,
              "case %d: compression_ratio %s" % (i, j["compression_ratio"]))
        check(isinstance(j["latency_ms"], (int, float)) and j["latency_ms"] >= 0, "latency_ms")
        check(set(j["timings"]) >= {"queue_ms", "compress_ms", "generate_ms"}, "timings")
    # max_new_tokens defaults to 128, as in the Python server
    st, j, _, _ = S.post("/compress", {"memories": CASES[0][0], "query": CASES[0][1]})
    check(st == 200 and j["answer"] == SEQ.get(0), "default max_new_tokens is 128")


def test_python_readme_shapes():
    # the README's curl example, byte for byte (indented JSON)
    curl_body = '''{
    "memories": [
      "User likes hiking in national parks.",
      "User works as a software engineer.",
      "User has a dog named Max."
    ],
    "query": "What outdoor activities does the user enjoy?"
  }'''
    st, j, _, _ = S.post("/compress", curl_body, headers={"User-Agent": "curl/7.88.1",
                                                          "Accept": "*/*"})
    check(st == 200 and j["answer"] == SEQ.get(0), "README curl example")
    for k, t in [("success", bool), ("answer", str), ("original_tokens", int),
                 ("compressed_tokens", int), ("compression_ratio", (int, float)),
                 ("latency_ms", (int, float))]:
        check(isinstance(j.get(k), t), "response field %s has the Python server's type" % k)
    # requests.post(url, json=payload): compact separators, requests' default headers
    payload = json.dumps(body(CASES[1]), separators=(", ", ": ")).encode()
    st, j, _, _ = S.post("/compress", payload, headers={
        "User-Agent": "python-requests/2.31.0", "Accept-Encoding": "gzip, deflate",
        "Accept": "*/*", "Connection": "keep-alive", "Content-Length": str(len(payload))})
    check(st == 200 and j["answer"] == SEQ.get(1), "requests json= shape")
    # curl -d without -H sends x-www-form-urlencoded: refused (a web page can send that type to
    # any server without asking), with a message that says what to send
    st, j, _, _ = S.post("/compress", json.dumps(body(CASES[1])),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    check(st == 415 and j["error_type"] == "unsupported_media_type" and
          "application/json" in j["error"], "form content type -> 415 (%s %s)" % (st, j))
    st, j, _, _ = S.post("/compress", json.dumps(body(CASES[1])),
                         headers={"Content-Type": "Application/JSON; charset=utf-8"})
    check(st == 200 and j["answer"] == SEQ.get(1), "JSON media type with parameters, any case")
    st, j, _, _ = S.get("/health")
    check(st == 200 and j["status"] == "ok", "GET /health {status: ok}")
    st, j, _, _ = S.get("/status")
    for k in ["model", "initialized", "backend", "device", "dtype", "load_time_seconds",
              "requests_served", "errors", "avg_latency_ms", "uptime_seconds",
              "keep_alive_seconds", "last_activity", "will_unload_at", "seconds_until_unload",
              "threads", "isa", "memory"]:
        check(k in j, "/status has %s" % k)
    if TEST_BACKEND == "vulkan":  # the layers on the device: named, with its memory and use
        g = j.get("gpu") or {}
        check(j["backend"] == "vulkan" and j["device"] == g.get("name") and g.get("layers", 0) > 0
              and g.get("bytes_used", 0) > 0 and g.get("memory_bytes", 0) > 0,
              "/status on the device: %r %r %r" % (j["backend"], j["device"], g))
    else:
        check(j["backend"] == "cpu" and j["device"] == "cpu" and j.get("gpu") is None,
              "/status on the CPU: %r %r" % (j["backend"], j.get("gpu")))
    cpu = j.get("cpu") or {}
    check(cpu.get("kind") in ("zen4", "zen5", "intel-avx512", "intel-avx2", "other") and
          isinstance(cpu.get("family"), int) and isinstance(cpu.get("amx"), bool),
          "/status cpu: %r" % cpu)


def f32s(b64):
    raw = base64.b64decode(b64)
    return struct.unpack("<%df" % (len(raw) // 4), raw)


def test_v1_compress_answer():
    c = CASES[0]
    st, j, _, _ = S.post("/v1/compress", {"documents": c[0]})
    if not check(st == 200 and j["success"], "/v1/compress: %s %s" % (st, j)):
        return
    v = j["vectors"]
    check(v["dtype"] == "f32" and v["shape"] == [3, 16, 64], "shape %s" % v["shape"])
    got = f32s(v["data"])
    want = cli("compress", c[0])
    flat = [x for d in want["docs"] for row in d["vectors"] for x in row]
    check(len(got) == len(flat) and max(abs(a - b) for a, b in zip(got, flat)) <= 1e-6,
          "/v1/compress vectors equal clara compress")
    check(j["n_tokens"] == [d["n_tokens"] for d in want["docs"]], "n_tokens per document")
    st, a, _, _ = S.post("/v1/answer", {"query": c[1], "vectors": v, "max_new_tokens": c[2]})
    check(st == 200 and a["answer"] == SEQ.get(0), "/v1/answer from vectors equals /compress")
    st, a, _, _ = S.post("/v1/answer", {"query": c[1], "documents": c[0], "max_new_tokens": c[2]})
    check(st == 200 and a["answer"] == SEQ.get(0), "/v1/answer from documents equals /compress")
    st, h, _, _ = S.post("/v1/compress", {"documents": c[0], "dtype": "f16"})
    raw = base64.b64decode(h["vectors"]["data"])
    half = struct.unpack("<%de" % (len(raw) // 2), raw)
    check(h["vectors"]["dtype"] == "f16" and len(half) == 3 * 16 * 64, "f16 vectors")
    check(max(abs(a - b) for a, b in zip(half, flat)) <= 1e-2 * max(1, max(map(abs, flat))),
          "f16 vectors round the f32 ones")
    st, a, _, _ = S.post("/v1/answer", {"query": c[1], "vectors": h["vectors"], "max_new_tokens": 4})
    check(st == 200 and a["success"], "/v1/answer accepts f16 vectors")
    check(h["vectors"]["encoding"] == "base64-le", "the vectors say their encoding")
    for enc, want in (("base64-le", 200), (None, 200), ("hex", 422), (5, 422)):
        st, a, _, _ = S.post("/v1/answer", {"query": c[1], "vectors": dict(h["vectors"],
                                                                          encoding=enc),
                                            "max_new_tokens": 2})
        check(st == want, "vectors with encoding %r -> %d (%s %s)" % (enc, want, st, a))


def test_retrieve():
    docs = ["Cats purr.", "The Eiffel Tower is in Paris.", "Dogs bark.", "Water boils at 100 C.",
            "Bees make honey.", "Snow is cold.", "Rust is a language."]
    q = "Where is the Eiffel Tower?"
    want = cli("retrieve", docs, q, 24, extra=["--top-k", "3"])
    st, j, _, _ = S.post("/v1/retrieve", {"query": q, "documents": docs, "top_k": 3,
                                          "max_new_tokens": 24})
    if not check(st == 200, "/v1/retrieve: %s %s" % (st, j)):
        return
    check(j["answer"] == want["answer"] and j["top_k"] == want["top_k"], "retrieve = clara retrieve")
    check(max(abs(a - b) for a, b in zip(j["scores"], want["scores"])) < 1e-6, "scores")
    st, v, _, _ = S.post("/v1/compress", {"documents": docs})
    st, k, _, _ = S.post("/v1/retrieve", {"query": q, "vectors": v["vectors"], "top_k": 3,
                                          "max_new_tokens": 24})
    check(st == 200 and k["answer"] == want["answer"] and k["top_k"] == want["top_k"],
          "retrieve from vectors")


def test_parallel_clients():
    if len(SEQ) < len(CASES):
        check(False, "sequential answers missing")
        return
    results, lock = [], threading.Lock()

    def client(ci):
        for r in range(10):
            i = (ci + r) % len(CASES)
            try:
                st, j, _, _ = S.post("/compress", body(CASES[i]), timeout=120)
                ok = st == 200 and j["answer"] == SEQ[i]
            except Exception as e:  # noqa: BLE001 - any failure counts
                ok, st = False, repr(e)
            with lock:
                results.append((ok, st))

    ts = [threading.Thread(target=client, args=(c,)) for c in range(16)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    bad = [r for r in results if not r[0]]
    check(len(results) == 160 and not bad, "16x10 parallel answers identical (%d bad: %s)" % (
        len(bad), bad[:3]))
    m = S.get("/metrics")[3].decode()
    batched = re.search(r'clara_batch_tasks_bucket\{le="1"\} (\d+)', m)
    total = re.search(r"clara_batch_tasks_count (\d+)", m)
    check(batched and total and int(total.group(1)) > int(batched.group(1)),
          "some scheduler passes merged several requests")
    print("parallel: 160 requests in %.2f s" % (time.time() - t0))


BIG = "x" * (300 << 10)
M1 = {"memories": ["a"], "query": "q"}


def malformed_cases():
    """(method, path, body, headers, status, error_type)"""
    P, C, A, R, V = "POST", "/compress", "/v1/answer", "/v1/retrieve", "/v1/compress"
    good_vec = {"dtype": "f32", "shape": [1, 16, 64],
                "data": base64.b64encode(b"\0" * (16 * 64 * 4)).decode()}
    bad_json = [b"", b"{", b'{"memories": ["a"], "query": "q"', b"not json",
                b"{'memories': ['a'], 'query': 'q'}", b'{"memories": ["a",], "query": "q"}',
                b'{"memories": ["a"], "query": "q"} trailing', b'{"a":1}{"b":2}', b"[1,2",
                b'{"memories": ["\\ud800"], "query": "q"}', b'{"memories": ["\\udc00x"], "query": "q"}',
                b'{"memories": ["a"], "query": "q", }', b'{"memories": ["a"], "query": "q", '
                b'"max_new_tokens": NaN}', b'{"memories": ["a"], "query": "q"\x00}']
    # /compress answers malformed JSON as FastAPI does: 422 (the detail is test_dropin.py's)
    cases = [(P, C, b, {}, 422, "invalid_json") for b in bad_json]
    cases += [(P, A, b, {}, 400, "invalid_json") for b in bad_json]
    bad_utf8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\x80",
                b"\xf8\x88\x80\x80\x80", b"\xc2"]
    cases += [(P, C, b'{"memories": ["ok' + u + b'"], "query": "q"}', {}, 400, "invalid_utf8")
              for u in bad_utf8]
    cases.append((P, C, b'{"memories": ["a"], "query": "\xfe"}', {}, 400, "invalid_utf8"))
    vt = "validation_error"
    wrong = [[], "string", 5, {"memories": "a", "query": "q"}, {"memories": [1, 2], "query": "q"},
             {"memories": [None], "query": "q"}, {"memories": {}, "query": "q"},
             {"memories": ["a"], "query": 5}, {"memories": ["a"], "query": None},
             {"memories": ["a"], "query": ["q"]},
             dict(M1, max_new_tokens=5.5), dict(M1, max_new_tokens=None),
             dict(M1, keep_alive="x"), dict(M1, keep_alive=1.5),
             {}, {"memories": ["a"]}, {"query": "q"},
             {"memories": [], "query": "q"}, {"memories": ["a"], "query": ""},
             dict(M1, max_new_tokens=0), dict(M1, max_new_tokens=513),
             dict(M1, max_new_tokens=-1), dict(M1, max_new_tokens=1e20),
             {"memories": ["a"] * 1025, "query": "q"}, {"memories": [BIG], "query": "q"},
             {"memories": ["a"], "query": "q" * 20000}]
    cases += [(P, C, json.dumps(w).encode(), {}, 422, vt) for w in wrong]
    cases.append((P, C, b'{"memories": ["a\\u0000b"], "query": "q"}', {}, 422, vt))
    cases += [(P, V, {"documents": ["a"], "dtype": "f64"}, {}, 422, vt),
              (P, V, {"documents": ["a"], "dtype": 5}, {}, 422, vt), (P, V, {}, {}, 422, vt),
              (P, A, {"query": "q", "vectors": "abc"}, {}, 422, vt),
              (P, A, {"query": "q", "vectors": dict(good_vec, data="!!!!")}, {}, 422, vt),
              (P, A, {"query": "q", "vectors": dict(good_vec, shape=[1, 16, 63])}, {}, 422, vt),
              (P, A, {"query": "q", "vectors": dict(good_vec, shape=[2, 16, 64])}, {}, 422, vt),
              (P, A, {"query": "q", "vectors": good_vec, "documents": ["a"]}, {}, 422, vt),
              (P, A, {"documents": ["a"]}, {}, 422, vt),
              (P, R, {"query": "q", "documents": ["a"], "top_k": 0}, {}, 422, vt),
              (P, R, {"query": "q", "documents": ["a"], "top_k": "3"}, {}, 422, vt),
              (P, R, {"query": "q"}, {}, 422, vt),
              (P, C, {"memories": ["a <MEM0> b"], "query": "q"}, {}, 422, "invalid_input")]
    cases += [("GET", C, None, {}, 405, "method_not_allowed"),
              ("PUT", A, M1, {}, 405, "method_not_allowed"),
              ("DELETE", "/health", None, {}, 405, "method_not_allowed"),
              ("POST", "/health", M1, {}, 405, "method_not_allowed"),
              ("POST", "/metrics", M1, {}, 405, "method_not_allowed"),
              ("PATCH", "/status", M1, {}, 405, "method_not_allowed"),
              ("OPTIONS", C, None, {}, 405, "method_not_allowed")]
    cases += [("GET", p, None, {}, 404, "not_found") for p in
              ["/doc", "/docs/", "/v2/compress", "/COMPRESS", "/etc/passwd", "/compress%00"]]
    cases.append(("POST", "/compress/", M1, {}, 404, "not_found"))
    cases.append((P, C, M1, {"X-Big": "h" * (12 << 10)}, 431, "headers_too_large"))
    return cases


def test_malformed_requests():
    cases = malformed_cases()
    n = 0
    for (method, path, b, headers, want, etype) in cases:
        st, j, _, _ = S.request(method, path, b, headers=headers)
        ok = check(st == want and isinstance(j, dict) and j.get("success") is False and
                   j.get("error_type") == etype and isinstance(j.get("error"), str),
                   "%s %s %r -> %s %s (want %d %s)" % (method, path, str(b)[:60], st, j, want, etype))
        check(S.healthy(), "healthy after %s %s" % (method, path))
        n += ok
    # bodies over --max-body: announced by Content-Length (answered before reading) and chunked
    huge = b'{"memories": ["' + b"a" * (5 << 20) + b'"], "query": "q"}'
    st, j, _, _ = S.post("/compress", huge)
    n += check(st == 413 and j["error_type"] == "payload_too_large", "huge body -> 413 (%s)" % st)
    check(S.healthy(), "healthy after huge body")
    chunk = b"a" * 65536
    req = (b"POST /compress HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
           b"Content-Type: application/json\r\n\r\n" +
           b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(80)) + b"0\r\n\r\n")
    out = raw_request(S.port, req)
    n += check(out.startswith(b"HTTP/1.1 413") and b"payload_too_large" in out,
               "chunked huge body -> 413 (%r)" % out[:40])
    check(S.healthy(), "healthy after chunked huge body")
    out = raw_request(S.port, b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Huge: " + b"h" * (200 << 10) +
                      b"\r\n\r\n")
    n += check(out == b"" or re.match(rb"HTTP/1\.[01] 4\d\d", out) is not None,
               "200 KiB header -> 4xx or closed (%r)" % out[:40])
    check(S.healthy(), "healthy after 200 KiB header")
    out = raw_request(S.port, b"GARBAGE\r\n\r\n")
    n += check(out == b"" or re.match(rb"HTTP/1\.[01] 4\d\d", out) is not None,
               "garbage request line -> 4xx (%r)" % out[:40])
    check(S.healthy(), "healthy after garbage request line")
    check(n >= 60, "at least 60 malformed requests answered correctly (%d)" % n)


def test_slowloris():
    t0 = time.time()
    socks = []
    for part in [b"POST /compress HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"memo",
                 b"GET /health HTTP/1.1\r\nHost: localhost\r\n"]:
        s = socket.create_connection(("127.0.0.1", S.port), timeout=15)
        s.sendall(part)
        socks.append(s)
    t1 = time.time()
    check(S.healthy() and time.time() - t1 < 1, "health answers while slow clients hang on")
    for s in socks:
        try:
            data = s.recv(1024)
        except (ConnectionResetError, socket.timeout):
            data = b""
        check(data == b"" or data.startswith(b"HTTP/1.1 4"), "slow client cut off (%r)" % data[:30])
        s.close()
    took = time.time() - t0
    check(took < 8, "slow clients closed by the 2 s connection timeout (%.1f s)" % took)
    check(S.healthy(), "healthy after slowloris")


def test_auth_and_cors():
    key = "s3cret-key-123"
    a = Server("--api-key", key, "--cors-origins", "http://a.example, http://b.example")
    good = {"Authorization": "Bearer " + key}
    cases = [({}, 401), ({"Authorization": "Bearer wrong"}, 403),
             ({"Authorization": "Basic " + key}, 401), ({"Authorization": "Bearer "}, 401),
             ({"Authorization": "Bearer " + key[:-1]}, 403),
             ({"Authorization": "Bearer " + key + "x"}, 403), ({"Authorization": key}, 401)]
    for h, want in cases:
        st, j, _, _ = a.post("/compress", body(CASES[1]), headers=h)
        check(st == want and j["error_type"] == ("unauthorized" if want == 401 else "forbidden"),
              "auth %r -> %s (want %d)" % (h, st, want))
        check(a.healthy(), "healthy after auth %r" % h)
    for p in ["/status", "/metrics", "/openapi.json"]:
        check(a.get(p)[0] == 401, "%s needs the key" % p)
        check(a.get(p, headers=good)[0] == 200, "%s with the key" % p)
    check(a.get("/health")[0] == 200, "/health needs no key")
    st, j, hd, _ = a.post("/compress", body(CASES[1]), headers=dict(good, Origin="http://a.example"))
    check(st == 200 and j["answer"] == SEQ.get(1), "right key -> answer")
    check(hd.get("access-control-allow-origin") == "http://a.example", "CORS allowed origin")
    check("Retry-After" in hd.get("access-control-expose-headers", "") and
          hd.get("x-content-type-options") == "nosniff", "CORS: Retry-After readable; nosniff")
    st, _, hd, _ = a.get("/health", headers={"Origin": "http://evil.example"})
    check("access-control-allow-origin" not in hd and hd.get("vary") == "Origin",
          "CORS: other origins get no header, and the reply varies by Origin")
    st, _, hd, _ = a.request("OPTIONS", "/compress", headers={
        "Origin": "http://b.example", "Access-Control-Request-Method": "POST"})
    check(st == 204 and hd.get("access-control-allow-origin") == "http://b.example" and
          "POST" in hd.get("access-control-allow-methods", ""), "CORS preflight")
    # the OpenAI SDK sends its own headers from a browser: the preflight allows what it asks for
    asked = "authorization, content-type, x-stainless-timeout, x-stainless-retry-count"
    st, _, hd, _ = a.request("OPTIONS", "/v1/chat/completions", headers={
        "Origin": "http://b.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": asked})
    allowed = {x.strip().lower() for x in hd.get("access-control-allow-headers", "").split(",")}
    check(st == 204 and set(asked.split(", ")) <= allowed, "preflight allows the headers asked "
          "for (%r)" % hd.get("access-control-allow-headers"))
    st, _, hd, _ = a.request("OPTIONS", "/v1/chat/completions", headers={
        "Origin": "http://b.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-a\u00e9"})
    check(st == 204 and hd.get("access-control-allow-headers") == "Authorization, Content-Type",
          "a malformed header list is not echoed (%r)" % hd.get("access-control-allow-headers"))
    st, _, hd, _ = S.get("/health", headers={"Origin": "http://a.example"})
    check("access-control-allow-origin" not in hd, "CORS off by default")
    check(a.stop() == 0, "auth server exits 0")


def long_body(n=512, docs=1):
    """A request that keeps the scheduler busy: n new tokens, `docs` full-length documents."""
    mem = CASES[0][0][:1] if docs == 1 else [("Document %d. " % i) + "word " * 300 for i in range(docs)]
    return {"memories": mem, "query": CASES[0][1], "max_new_tokens": n}


def test_queue_disconnect_shutdown():
    q = Server("--parallel", "1", "--max-queue", "2", "--compress-cut", "1")
    st, j, _, _ = q.post("/compress", long_body())
    gen = j["generated_tokens"]
    check(gen > 100, "long request generates many tokens (%d)" % gen)
    docs0 = metric(q, "clara_documents_compressed_total")
    res = []
    # the two requests must outlast the handler's 50 ms disconnect check by far
    ts = [threading.Thread(target=lambda: res.append(q.post("/compress", long_body(docs=40))[0]))
          for _ in range(2)]
    for t in ts:
        t.start()
    time.sleep(0.03 if not SLOW else 0.2)
    # a client that sends 7 documents and leaves while its task is still queued
    left = json.dumps({"memories": ["m%d" % i for i in range(7)], "query": "q"}).encode()
    raw_request(q.port, b"POST /compress HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n"
                b"Content-Type: application/json\r\n\r\n%s" % (len(left), left), read=False)
    for t in ts:
        t.join()
    time.sleep(0.2)
    check(res == [200, 200], "queued requests succeed (%s)" % res)
    docs1 = metric(q, "clara_documents_compressed_total")
    check(docs1 == docs0 + 80, "the departed client's 7 documents were never compressed "
          "(%s -> %s)" % (docs0, docs1))
    check(re.search(r"POST /compress 499", q.text()) is not None, "logged as 499")
    # queue full: 12 at once against a queue of 2 -> some 503 with Retry-After, the rest 200
    out = []
    lock = threading.Lock()

    def one():
        st, j, hd, _ = q.post("/compress", long_body(256), timeout=120)
        with lock:
            out.append((st, hd.get("retry-after"), j and j.get("error_type")))

    ts = [threading.Thread(target=one) for _ in range(12)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    full = [o for o in out if o[0] == 503]
    check(full and all(o[1] == "1" and o[2] == "overloaded" for o in full),
          "queue full -> 503 overloaded with Retry-After (%s)" % out)
    check(all(o[0] in (200, 503) for o in out), "otherwise 200 (%s)" % out)
    # SIGTERM while a request runs: it still gets its answer, the exit status is 0
    res = []
    t = threading.Thread(target=lambda: res.append(q.post("/compress", long_body())[0]))
    t.start()
    time.sleep(0.05)
    q.proc.send_signal(signal.SIGTERM)
    t.join()
    rc = q.proc.wait(timeout=20)
    check(res == [200] and rc == 0, "graceful stop: in-flight request %s, exit %s" % (res, rc))


def test_keep_alive():
    k = Server("--keep-alive", "1")
    for p in ["/health", "/status", "/metrics", "/openapi.json"]:
        check(k.get(p)[0] == 200, "%s answers" % p)
    s = k.status()
    check(s["initialized"] is False and s["model_loads"] == 0, "health/status/metrics do not load")
    check(metric(k, "clara_model_loaded") == 0, "metrics: model not loaded")
    # requests arriving while the model loads wait and succeed
    res, lock = [], threading.Lock()

    def one():
        st, j, _, _ = k.post("/compress", body(CASES[1]))
        with lock:
            res.append(st == 200 and j["answer"] == SEQ.get(1))

    ts = [threading.Thread(target=one) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(res == [True] * 8, "8 requests on a cold server all answered (%s)" % res)
    s = k.status()
    # (on a slow machine the 1 s may already have passed: then it is unloaded)
    check(s["model_loads"] == 1 and (not s["initialized"] or (
        s["seconds_until_unload"] is not None and s["seconds_until_unload"] <= 1.0)),
        "loaded once, unload scheduled (%s)" % s)
    check(wait_for(lambda: not k.status()["initialized"], 4), "unloaded after 1 s idle")
    check(k.status()["model_unloads"] == 1, "one unload")
    st, j, _, _ = k.post("/compress", body(CASES[1]))
    check(st == 200 and j["answer"] == SEQ.get(1) and k.status()["model_loads"] == 2,
          "transparent reload")
    st, j, _, _ = k.post("/compress", dict(body(CASES[1]), keep_alive=0))
    check(st == 200 and wait_for(lambda: not k.status()["initialized"], 0.5),
          "keep_alive 0 unloads right after the request")
    st, j, _, _ = k.post("/compress", dict(body(CASES[1]), keep_alive=-1))
    time.sleep(1.6)
    s = k.status()
    check(st == 200 and s["initialized"] and s["will_unload_at"] is None,
          "keep_alive -1 keeps the model (%s)" % s)
    k.post("/compress", dict(body(CASES[1]), keep_alive=1))
    check(wait_for(lambda: not k.status()["initialized"], 4), "keep_alive 1 after -1 unloads")
    check(k.stop() == 0, "keep-alive server exits 0")


def test_model_load_failure():
    path = os.path.join(TMP, "vanishing.gguf")
    shutil.copy(DEMO, path)
    v = Server("--model", path, "--keep-alive", "0")
    st, j, _, _ = v.post("/compress", body(CASES[1]))
    check(st == 200 and j["answer"] == SEQ.get(1), "served from a copy of the demo model")
    check(wait_for(lambda: not v.status()["initialized"], 2), "unloaded (keep-alive 0)")
    os.rename(path, path + ".away")
    st, j, hd, _ = v.post("/v1/answer", {"documents": CASES[1][0], "query": CASES[1][1]})
    check(st == 503 and j["error_type"] == "model_unavailable" and hd.get("retry-after") == "1",
          "a model that cannot load -> 503 model_unavailable (%s %s)" % (st, j))
    # /compress: 200 success:false, as the Python server answers a model that fails to load
    st, j, hd, _ = v.post("/compress", body(CASES[1]))
    check(st == 200 and j["success"] is False and j["answer"] is None and
          j["error_type"] == "model_unavailable" and "cannot be loaded" in j["error"] and
          j["original_tokens"] == 0, "/compress: a model that cannot load -> 200 success:false "
          "(%s %s)" % (st, j))
    st, j, _, _ = v.get("/health")
    check(st == 503 and j["status"] == "error", "/health 503 after a failed load (%s)" % j)
    os.rename(path + ".away", path)
    st, j, _, _ = v.post("/compress", body(CASES[1]))
    check(st == 200 and v.healthy(), "recovers once the file is back")
    check(v.stop() == 0, "exits 0")


def test_other_models_and_config():
    import gen_fixtures as gf
    gf.ensure(FIXTURES)
    noqr = os.path.join(TMP, "instruct16.gguf")
    subprocess.run([CLARA, "convert", "--base", os.path.join(FIXTURES, "base"), "--clara",
                    os.path.join(FIXTURES, "instruct16"), "--out", noqr, "--quiet"], check=True,
                   timeout=120)
    m = Server("--model", noqr, env={"CLARA_KEEP_ALIVE": "7", "CLARA_MAX_NEW_TOKENS": "3"})
    st, j, _, _ = m.post("/v1/retrieve", {"query": "q", "documents": ["a", "b"]})
    check(st == 422 and j["error_type"] == "retrieval_unsupported", "retrieve without QR -> 422")
    c = CASES[0]
    st, j, _, _ = m.post("/compress", {"memories": c[0], "query": c[1]})
    want = cli("ask", c[0], c[1], 3, model=noqr)
    check(st == 200 and j["answer"] == want["answer"] and j["generated_tokens"] <= 3,
          "CLARA_MAX_NEW_TOKENS default and answer on a second model")
    check(m.status()["keep_alive_seconds"] == 7, "CLARA_KEEP_ALIVE from the environment")
    m.stop()
    m = Server("--model", noqr, "--keep-alive", "9", env={"CLARA_KEEP_ALIVE": "7"})
    check(m.status()["keep_alive_seconds"] == 9, "the command line overrides the environment")
    m.stop()
    keyfile = os.path.join(TMP, "key")
    with open(keyfile, "w") as f:
        f.write("from-file\n")
    m = Server(env={"CLARA_API_KEY_FILE": keyfile})
    check(m.get("/status")[0] == 401 and
          m.get("/status", headers={"Authorization": "Bearer from-file"})[0] == 200,
          "CLARA_API_KEY_FILE")
    m.stop()

    def fails(args, env, pattern):
        e = {k: v for k, v in os.environ.items() if not k.startswith("CLARA_")}
        e.update(env)
        p = subprocess.run([SERVER, "--port", "0"] + args, env=e, capture_output=True, text=True,
                           timeout=30)
        check(p.returncode == 2 and re.search(pattern, p.stderr),
              "%s %s -> exit %d: %s" % (args, env, p.returncode, p.stderr.strip()[:200]))

    fails([], {"CLARA_BACKEND": "mlx"}, r"not built into this binary; available: auto, cpu, vulkan")
    fails(["--backend", "opencl"], {}, r"unknown backend 'opencl'")
    fails(["--gpu-layers", "many"], {}, r"gpu-layers")
    if VULKAN_BUILT:  # a device that is not there: the server does not start
        fails(["--backend", "vulkan"], {"CLARA_VK_DEVICE": "9"},
              r"backend vulkan: .*CLARA_VK_DEVICE=9 names no compute device")
    else:
        fails(["--backend", "cuda"], {}, r"built without it")
    fails(["--base", "a.gguf"], {}, r"--base FILE with --clara FILE")
    fails(["--base", "a.gguf", "--clara", DEMO, "--model", DEMO], {}, r"--base FILE with --clara FILE")
    fails(["--base", "/nonexistent/base.gguf", "--clara", DEMO], {}, r"base model /nonexistent")
    # a model name neither cached nor downloadable (offline): clara pull's cache, docs/PULL.md
    fails([], {"CLARA_MODEL": "apple/CLaRa-7B-Instruct", "HF_HUB_OFFLINE": "1",
               "CLARA_CACHE_DIR": os.path.join(TMP, "empty-cache")},
          r"not in the cache.*clara pull apple/CLaRa-7B-Instruct:compression-16.*HF_HUB_OFFLINE")
    fails(["--keep-alive", "soon"], {}, r"keep-alive")
    fails(["--max-new-tokens", "513"], {}, r"max-new-tokens")
    p = subprocess.run([CLARA, "serve", "--version"], capture_output=True, text=True, timeout=10)
    check(p.returncode == 0 and "clara-server" in p.stdout, "clara serve --version")
    p = subprocess.run([SERVER, "--help"], capture_output=True, text=True, timeout=10)
    check(p.returncode == 0 and "CLARA_MAX_BODY" in p.stdout, "--help lists the env variables")


def test_two_file_mode():
    """The demo checkpoint as a base GGUF (llama.cpp layout) plus a CLaRa add-on answers exactly
    as the single demo file does."""
    hf = os.path.join(os.path.dirname(DEMO), "hf")
    base, addon = os.path.join(TMP, "demo-base.gguf"), os.path.join(TMP, "demo-addon.gguf")
    for out, extra in ((base, ["--base-only"]), (addon, ["--clara", os.path.join(hf, "e2e16"), "--addon-only"])):
        p = subprocess.run([CLARA, "convert", "--base", os.path.join(hf, "base"), "--out", out, "--type", "f32",
                            "--quiet"] + extra, capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, "convert %s: %s" % (extra, p.stderr))
    m = Server("--base", base, "--clara", addon)
    st, j, _, _ = m.post("/compress", body(CASES[0]))
    st2, j2, _, _ = S.post("/compress", body(CASES[0]))
    check(st == 200 and st2 == 200 and j["answer"] == j2["answer"], "two-file answer equals the single file: %s vs %s" % (
        j, j2))
    m.stop()


def test_openapi_and_docs():
    st, j, _, _ = S.get("/openapi.json")
    check(st == 200 and j["openapi"].startswith("3."), "openapi.json is OpenAPI 3")
    paths = ["/compress", "/v1/compress", "/v1/answer", "/v1/retrieve", "/health", "/status",
             "/metrics", "/openapi.json", "/v1/collections", "/v1/collections/{c}",
             "/v1/collections/{c}/memories", "/v1/collections/{c}/memories/{id}",
             "/v1/collections/{c}/query", "/v1/models", "/v1/chat/completions",
             "/v1/completions"]
    check(sorted(j["paths"]) == sorted(paths), "openapi lists every endpoint")
    with open(os.path.join(ROOT, "docs", "API.md")) as f:
        doc = f.read()
    for p in paths:
        check(("`%s`" % p) in doc or (" %s" % p) in doc, "docs/API.md documents %s" % p)
    for v in ["CLARA_MODEL", "CLARA_HOST", "CLARA_PORT", "CLARA_BACKEND", "CLARA_KEEP_ALIVE",
              "CLARA_API_KEY", "CLARA_CORS_ORIGINS", "CLARA_MAX_NEW_TOKENS", "CLARA_LOG_LEVEL",
              "CLARA_THREADS", "CLARA_PARALLEL", "CLARA_MAX_QUEUE", "CLARA_MAX_BODY", "CLARA_DB",
              "CLARA_VECTOR_CACHE", "CLARA_VECTOR_DTYPE", "CLARA_COMPRESS_CUT"]:
        check(v in doc, "docs/API.md documents %s" % v)
    m = S.get("/metrics")[3].decode()
    for name in ["clara_requests_total", "clara_request_duration_seconds_bucket",
                 "clara_documents_compressed_total", "clara_prompt_tokens_total",
                 "clara_generated_tokens_total", "clara_queue_depth", "clara_batch_tasks_bucket",
                 "clara_model_loaded", "clara_resident_memory_bytes"]:
        check(name in m, "metrics has %s" % name)


if __name__ == "__main__":
    t0 = time.time()
    try:
        S = Server("--conn-timeout", "2", "--keep-alive", "-1")
        for fn in [test_compress_equals_cli, test_python_readme_shapes, test_v1_compress_answer,
                   test_retrieve, test_parallel_clients, test_malformed_requests, test_slowloris,
                   test_auth_and_cors, test_queue_disconnect_shutdown, test_keep_alive,
                   test_model_load_failure,
                   test_other_models_and_config, test_two_file_mode, test_openapi_and_docs]:
            run(fn)
        check(S.stop() == 0, "main server exits 0 on SIGTERM")
        check_no_sanitizer_reports()
    finally:
        cleanup()
    print("server tests took %.1f s" % (time.time() - t0))
    report("test_server")
