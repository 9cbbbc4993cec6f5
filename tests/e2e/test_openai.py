"""The OpenAI-compatible API (/v1/models, /v1/chat/completions, /v1/completions) and streaming,
through the official OpenAI Node SDK (npm package `openai`, pinned, installed under BUILD by this
suite: node and npm are required, and a missing one fails the suite) and `curl -N`. Independent
truths: `clara ask --json` (greedy answers from the same documents and question), the store's own
POST /v1/collections/{c}/query, and the non-streamed reply of the same request."""

import json
import os
import re
import shutil
import subprocess
import time

from harness import BUILD, CLARA, ROOT, check, npm_install, report, run
from server_harness import (DEMO, FACTS, SLOW, TMP, Server, big_model,
                            check_no_sanitizer_reports, cleanup, raw_request, wait_for)

SDK_VERSION = "4.104.0"  # the last major version that supports node 18 (Debian 12's)
# shared by the sanitizer builds (build/asan, build/tsan): one install, one generated model
SDK_DIR = os.path.join(ROOT, "build", "openai-sdk")
CLIENT = os.path.join(ROOT, "tests", "e2e", "openai_client.cjs")

DOCS = ["The sky is blue and the grass is green.", "Paris is the capital of France."]
QUESTION = "What color is the sky?"


def sdk(server, calls, key="unused"):
    """Runs calls through the SDK against server; one result per call."""
    p = subprocess.run(["node", CLIENT, SDK_DIR, "http://127.0.0.1:%d/v1" % server.port, key],
                       input=json.dumps(calls), capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError("openai_client.cjs failed: " + p.stderr[-3000:])
    return json.loads(p.stdout)


def curl_stream(server, path, body, key=None):
    """POSTs body with `curl -N`; the SSE events' data, in order."""
    cmd = ["curl", "-sN", "-H", "Content-Type: application/json", "-d", json.dumps(body),
           "http://127.0.0.1:%d%s" % (server.port, path)]
    if key:
        cmd[2:2] = ["-H", "Authorization: Bearer " + key]
    out = subprocess.run(cmd, capture_output=True, timeout=600).stdout.decode()
    events = [e[len("data: "):] for e in out.split("\n\n") if e.startswith("data: ")]
    return events


def chunk_text(e):
    c = e["choices"][0] if e.get("choices") else {}
    return (c.get("delta") or {}).get("content") or c.get("text") or ""


def cli_ask(docs, question, max_tokens, model_args=("--model", DEMO)):
    args = [CLARA, "ask"] + list(model_args) + ["--query", question, "--max-new-tokens",
                                                str(max_tokens), "--threads", "2", "--json"]
    for d in docs:
        args += ["--doc", d]
    p = subprocess.run(args, capture_output=True, text=True, timeout=600)
    return json.loads(p.stdout)


def chat(docs=None, question=QUESTION, **kw):
    p = {"model": "anything", "messages": [{"role": "user", "content": question}]}
    if docs is not None:
        p["documents"] = docs
    p.update(kw)
    return {"op": "chat", "params": p}


def test_greedy_equals_cli_and_stream_equals_whole():
    s = Server("--model", DEMO)
    ref = cli_ask(DOCS, QUESTION, 24)
    r = sdk(s, [chat(DOCS, max_tokens=24),
                chat(DOCS, max_tokens=24, stream=True, stream_options={"include_usage": True}),
                {"op": "completion", "params": {"model": "x", "prompt": QUESTION,
                                                "documents": DOCS, "max_tokens": 24}},
                {"op": "completion", "params": {"model": "x", "prompt": [QUESTION],
                                                "documents": DOCS, "max_tokens": 24,
                                                "stream": True}},
                chat(DOCS, max_tokens=24, temperature=0)])
    whole, streamed, comp, comp_s, again = r
    print("cli: %r\nchat: %r" % (ref["answer"], whole.get("text")))
    check(whole.get("object") == "chat.completion" and whole.get("role") == "assistant",
          "chat.completion shape: %r" % whole)
    check(whole.get("text") == ref["answer"], "temperature 0 equals clara ask: %r vs %r" %
          (whole.get("text"), ref["answer"]))
    check(whole.get("usage") == {"prompt_tokens": ref["prompt_tokens"],
                                 "completion_tokens": len(ref["ids"]),
                                 "total_tokens": ref["prompt_tokens"] + len(ref["ids"])},
          "usage counts the CLI's tokens: %r" % whole.get("usage"))
    check(whole.get("finish_reason") == ("length" if len(ref["ids"]) == 24 else "stop"),
          "finish_reason: %r" % whole.get("finish_reason"))
    check(streamed.get("text") == whole.get("text"), "streamed text equals the whole reply: %r" %
          streamed.get("text"))
    check(streamed.get("roles") == ["assistant"] and streamed.get("objects") ==
          ["chat.completion.chunk"], "chunks: role once, chat.completion.chunk: %r" % streamed)
    check(streamed.get("usage") == whole.get("usage"), "include_usage: the usage chunk")
    check(streamed.get("finish_reason") == whole.get("finish_reason"), "stream finish_reason")
    check(comp.get("object") == "text_completion" and comp.get("text") == ref["answer"],
          "completions equal the chat with one user message: %r" % comp)
    check(comp_s.get("text") == ref["answer"], "streamed completion: %r" % comp_s.get("text"))
    # curl -N: raw SSE, the same text
    ev = curl_stream(s, "/v1/chat/completions", chat(DOCS, max_tokens=24, stream=True)["params"])
    check(ev and ev[-1] == "[DONE]", "curl: the stream ends with [DONE]: %r" % ev[-2:])
    text = "".join(chunk_text(json.loads(e)) for e in ev[:-1])
    check(text == ref["answer"], "curl's streamed text equals clara ask: %r" % text)
    # the documents came back: served from the document cache, the same answer
    check(whole["clara"]["documents"] == 2, "clara.documents: %r" % whole["clara"])
    check(again["clara"]["documents_from_cache"] == 2 and again["text"] == ref["answer"],
          "a repeated document is not recompressed, same answer: %r" % again["clara"])
    logged = re.findall(r"POST /v1/chat/completions 200 [\d.]+ ms tokens=(\d+)", s.text())
    # the SDK's two chats and its streamed one, and curl's streamed one
    check(logged == [str(len(ref["ids"]))] * 4, "the log counts every chat's tokens, streamed "
          "too: %r" % logged)
    t0, t1 = whole["clara"]["timings"], again["clara"]["timings"]
    check(t0["compress_ms"] > 0 and t1["compress_ms"] == 0,
          "compress_ms: the documents' compression, none from the cache (%r, %r)"
          % (t0["compress_ms"], t1["compress_ms"]))
    dc = s.status()["document_cache"]
    check(dc["entries"] == 2 and dc["hits"] >= 8 and dc["misses"] == 2,
          "/status document_cache: %r" % dc)
    m = sdk(s, [{"op": "models"}])[0]["models"]
    check(len(m) == 1 and m[0]["id"] == s.status()["model_name"] and m[0]["object"] == "model",
          "/v1/models: %r" % m)
    s.stop()


def test_cache_off_same_answer():
    s = Server("--model", DEMO, "--doc-cache", "0")
    ref = cli_ask(DOCS, QUESTION, 16)
    r = sdk(s, [chat(DOCS, max_tokens=16), chat(DOCS, max_tokens=16)])
    check(all(x.get("text") == ref["answer"] for x in r), "without the cache: %r" % r)
    check(r[1]["clara"]["documents_from_cache"] == 0, "--doc-cache 0: nothing cached")
    check(s.status()["document_cache"]["entries"] == 0, "the cache stays empty")
    s.stop()


def test_seeded_sampling():
    s = Server("--model", DEMO)
    kw = dict(max_tokens=32, temperature=1.0, top_p=0.95)
    r = sdk(s, [chat(DOCS, seed=7, **kw), chat(DOCS, seed=7, **kw), chat(DOCS, seed=8, **kw),
                chat(DOCS, seed=7, stream=True, **kw), chat(DOCS, **kw), chat(DOCS, **kw)])
    a, b, c, d, e, f = r
    print("seed 7: %r\nseed 8: %r" % (a["text"], c["text"]))
    check(a["text"] == b["text"] and a["clara"]["seed"] == 7, "the same seed, the same answer")
    check(a["text"] != c["text"], "another seed, another answer")
    check(d["text"] == a["text"], "streamed with the same seed: the same answer")
    check(e["clara"]["seed"] != f["clara"]["seed"], "no seed: a fresh one each time")
    replay = sdk(s, [chat(DOCS, seed=e["clara"]["seed"], **kw)])[0]
    check(replay["text"] == e["text"], "the reported seed replays the answer")
    s.stop()


def test_stop_sequences():
    s = Server("--model", DEMO)
    full = sdk(s, [chat(DOCS, max_tokens=32)])[0]["text"]
    # a stop sequence from the middle of the greedy answer: the answer ends before it
    at = next(i for i in range(6, len(full) - 3) if "\ufffd" not in full[i:i + 3])
    stop = full[at:at + 3]
    want = full[:full.find(stop)]
    r = sdk(s, [chat(DOCS, max_tokens=32, stop=stop),
                chat(DOCS, max_tokens=32, stop=["zzzz-never", stop], stream=True),
                chat(DOCS, max_tokens=32, stop="zzzz-never"),
                chat(DOCS, max_tokens=32, stop=[full[:1] + "\u00e9never"], stream=True)])
    print("full %r stop %r" % (full, stop))
    check(r[0]["text"] == want and r[0]["finish_reason"] == "stop",
          "stop: cut before it: %r" % r[0])
    check(r[0]["usage"]["completion_tokens"] < 32, "stop ends generation early")
    check(r[1]["text"] == want and r[1]["finish_reason"] == "stop", "stop, streamed: %r" % r[1])
    check(stop not in "".join(r[1]["chunks"]), "no chunk carries the stop text")
    check(r[2]["text"] == full and r[2]["finish_reason"] == "length", "no match: the whole text")
    check(r[3]["text"] == full, "a held-back prefix of a stop that never comes is sent: %r" % r[3])
    s.stop()


def test_chat_turns_and_parts():
    s = Server("--model", DEMO)
    conv = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Hello there."},
            {"role": "assistant", "content": "Hi! How can I help?"},
            {"role": "user", "content": QUESTION}]
    parts = [{"role": "user", "content": [{"type": "text", "text": "What color"},
                                          {"type": "text", "text": "is the sky?"}]}]
    r = sdk(s, [{"op": "chat", "params": {"model": "m", "messages": conv, "max_tokens": 16}},
                {"op": "chat", "params": {"model": "m", "messages": conv, "max_tokens": 16,
                                          "stream": True}},
                {"op": "chat", "params": {"model": "m", "messages": conv[-1:], "max_tokens": 16}},
                {"op": "chat", "params": {"model": "m", "messages": parts, "max_tokens": 16}},
                chat(None, "What color\nis the sky?", max_tokens=16),
                {"op": "chat", "params": {"model": "m", "messages": conv, "max_tokens": 16,
                                          "documents": DOCS}}])
    multi, multi_s, single, p, joined, with_docs = r
    check("error" not in multi and multi["clara"]["context"] == "none", "multi-turn: %r" % multi)
    check(multi_s["text"] == multi["text"], "multi-turn streamed equals whole")
    check(multi["usage"]["prompt_tokens"] > single["usage"]["prompt_tokens"] + 10,
          "the earlier turns are in the prompt: %r vs %r" % (multi["usage"], single["usage"]))
    check(p["text"] == joined["text"] and p["usage"] == joined["usage"],
          "text parts are joined by newlines: %r vs %r" % (p, joined))
    check(with_docs["clara"]["context"] == "documents" and "error" not in with_docs,
          "turns with documents: %r" % with_docs.get("clara"))
    s.stop()


def test_collection():
    db = os.path.join(TMP, "oai.db")
    s = Server("--model", DEMO, "--db", db, "--vector-dtype", "f32")
    mems = [{"text": t} for t in DOCS + ["Bananas are yellow.", "Snow is white."]]
    st, j, _, _ = s.post("/v1/collections/facts/memories", {"memories": mems})
    check(st in (200, 201), "memories added: %d %r" % (st, j))
    st, q, _, _ = s.post("/v1/collections/facts/query", {"query": QUESTION, "max_new_tokens": 16})
    check(st == 200, "store query: %r" % q)
    r = sdk(s, [chat(None, max_tokens=16, collection="facts"),
                chat(None, max_tokens=16, collection="facts", stream=True),
                chat(None, max_tokens=16, collection="nope"),
                chat(DOCS, max_tokens=16, collection="facts")])
    check(r[0].get("text") == q["answer"], "collection: the store query's answer: %r vs %r" %
          (r[0].get("text"), q["answer"]))
    check(r[0]["clara"]["context"] == "collection" and r[0]["clara"]["memories"] ==
          q["memories"], "the same memories selected: %r" % r[0]["clara"])
    check(r[1]["text"] == q["answer"], "collection, streamed")
    check(r[2]["error"]["status"] == 404 and r[2]["error"]["class"] == "NotFoundError",
          "unknown collection: 404: %r" % r[2])
    check(r[3]["error"]["status"] == 400, "documents and collection: 400")
    s.stop()


# Over FACTS the demo model's long answers hold a decoded <0x00> (a NUL byte, which JSON carries
# as \u0000) and byte-fallback runs that a later byte rewrites ("#" from <0x23> becomes two U+FFFD
# when <0x80> follows): found by the web page's test, which saw streamed text cut short and differ
# between identical requests.
def test_stream_equals_whole_with_byte_runs():
    db = os.path.join(TMP, "oai-bytes.db")
    s = Server("--model", DEMO, "--db", db)
    st, j, _, _ = s.post("/v1/collections/notes/memories",
                         {"memories": [{"id": "m%02d" % i, "text": t} for i, t in enumerate(FACTS)]})
    check(st in (200, 201), "memories added: %d %r" % (st, j))
    wholes = []
    for q in ["Where does Alice work?", "Which city is the capital of France?"]:
        body = {"model": "clara", "messages": [{"role": "user", "content": q}],
                "collection": "notes", "max_tokens": 256}
        st, whole, _, _ = s.post("/v1/chat/completions", body)
        w = whole["choices"][0]["message"]["content"]
        wholes.append(w)
        check(whole["usage"]["completion_tokens"] == 256 and len(w) > 100,
              "%s: the whole answer is not cut at a NUL byte: %d tokens, %d characters"
              % (q, whole["usage"]["completion_tokens"], len(w)))
        for run_ in range(2):  # the pieces fall differently each time
            events = curl_stream(s, "/v1/chat/completions", dict(body, stream=True))
            text = "".join(chunk_text(json.loads(e)) for e in events if e.startswith("{"))
            check(text == w, "%s, streamed (run %d): the whole answer, %d vs %d characters"
                  % (q, run_ + 1, len(text), len(w)))
        ours = {"query": q, "documents": FACTS[:5], "max_new_tokens": 256}
        st, a, _, _ = s.post("/v1/answer", ours)
        events = curl_stream(s, "/v1/answer", dict(ours, stream=True))
        text = "".join(chunk_text(json.loads(e)) for e in events if e.startswith("{"))
        check(st == 200 and text == a["answer"], "%s: /v1/answer streamed equals whole" % q)
    check(any("\x00" in w for w in wholes), "the case holds a NUL byte: %r" % [w[:40] for w in wholes])
    check(any("\ufffd" in w for w in wholes), "the case holds U+FFFD from a byte run")
    s.stop()


def test_errors_and_key():
    s = Server("--model", DEMO, "--api-key", "sekret")
    bad = [{"model": "m", "messages": "hi"}, {"model": "m", "messages": []},
           {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2},
           {"model": "m", "messages": [{"role": "wizard", "content": "x"}]},
           {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
           {"model": "m", "messages": [{"role": "user", "content": 5}]},
           {"model": "m", "messages": [{"role": "user", "content": ""}]},
           {"model": "m", "messages": [{"role": "assistant", "content": "x"}]},
           {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000},
           {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
           {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1]},
           {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}]
    r = sdk(s, [{"op": "chat", "params": p} for p in bad], key="sekret")
    for p, x in zip(bad, r):
        e = x.get("error") or {}
        check(e.get("api_error") and e.get("status") == 400 and e.get("class") ==
              "BadRequestError" and e.get("type") == "invalid_request_error" and e.get("message"),
              "%s -> 400 BadRequestError: %r" % (json.dumps(p)[:80], x))
    wrong = sdk(s, [chat(DOCS, max_tokens=4)], key="wrong")[0]["error"]
    check(wrong["status"] == 403 and wrong["class"] == "PermissionDeniedError",
          "wrong key: 403: %r" % wrong)
    ok = sdk(s, [chat(DOCS, max_tokens=4)], key="sekret")[0]
    check("text" in ok, "the right key works: %r" % ok)
    st, j, _, _ = s.post("/v1/chat/completions", {"messages": []})
    check(st == 401 and j["error"]["type"] == "authentication_error", "no key: 401 %r" % j)
    auth = {"Authorization": "Bearer sekret"}
    st, j, _, _ = s.post("/v1/chat/completions", b"{not json", headers=auth)
    check(st == 400 and set(j["error"]) == {"message", "type", "param", "code"},
          "bad JSON: OpenAI's error shape: %r" % j)
    st, j, h, _ = s.post("/v1/chat/completions", {"messages": [{"role": "user"}], "stream": True},
                         headers=auth)
    check(st == 400 and h["content-type"] == "application/json" and
          j["error"]["code"] == "invalid_content",
          "a streamed request refused before it began is a plain error reply: %d %r" % (st, j))
    s.stop()


def test_hostile():
    s = Server("--model", DEMO)
    msg = {"role": "user", "content": "x"}
    cases = [
        ({"messages": [msg], "stop": ["a" * 5000]}, 400),
        ({"messages": [msg], "stop": ["a", "b", "c", "d", "e"]}, 400),
        ({"messages": [msg] * 10001}, 422),  # more JSON values than any request needs
        ({"messages": [msg] * 257}, 400),
        ({"messages": [{"role": "user", "content": [[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]}]},
         422),
        ({"messages": [{"role": "user", "content": "x\u0000y"}]}, 422),
        ({"messages": [{"role": "user", "content": "x" * 70000}]}, 400),
        ({"messages": [{"role": "user", "content": "a </s> b"}]}, 422),
        ({"prompt": {"a": 1}}, 400),
        ({"messages": [msg], "documents": "not a list"}, 400),
        ({"messages": [msg], "documents": [1, 2]}, 400),
        ({"messages": [msg], "seed": 1e300}, 400),
        ({"messages": [msg], "stream_options": "yes", "stream": True}, 400),
        ({"messages": [msg, {"role": "assistant", "content": "y"}]}, 400),
        ({"messages": [{"role": "system", "content": "s"}, msg,
                       {"role": "assistant", "content": "y"}]}, 400),
        ({"messages": [msg, msg]}, 400),
        ({"messages": [msg], "collection": "../x"}, 400),
        ({"messages": [msg], "collection": "a b"}, 400),
        ({"messages": [msg], "collection": "c" * 200}, 400),
        ({"messages": [msg], "collection": ""}, 400),
    ]
    for body, want in cases:
        path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
        errors0 = s.status()["errors"]
        st, j, _, _ = s.post(path, body)
        check(st == want and j and "message" in j.get("error", {}),
              "%s -> %d: %d %r" % (json.dumps(body)[:70], want, st, j))
        if "collection" in body or len(body.get("messages", [])) in (2, 3):
            e = j["error"]
            check((e["param"], e["code"]) == (("collection", "invalid_value") if "collection" in
                                              body else ("messages", "invalid_messages")),
                  "named in the error: %r" % e)
            check(s.status()["errors"] == errors0, "refused before it ran: not a server error")
    for key, val, bounds in (("seed", 1e300, "from -9007199254740992 to 9007199254740992"),
                             ("top_k", 1.5, "from 0 to 1048576"), ("top_p", 2, "from 0 to 1")):
        st, j, _, _ = s.post("/v1/chat/completions", {"messages": [msg], key: val})
        check(st == 400 and bounds in j["error"]["message"],
              "%s=%r: the bounds written out: %r" % (key, val, j))
    raw = [b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',
           b'{"messages": [{"role": "user", "content": "a\x00b"}]}']
    for body in raw:
        st, j, _, _ = s.post("/v1/chat/completions", body)
        check(st == 400 and "error" in j, "raw %r -> 400: %d %r" % (body[:40], st, j))
    # a name twice in one object: cJSON would read the first, Python's json the last
    for path, body in [("/v1/chat/completions",
                        b'{"messages": [{"role": "user", "content": "x"}], "messages": 5}'),
                       ("/v1/chat/completions",
                        b'{"messages": [{"role": "user", "content": "x", "content": "y"}]}'),
                       ("/v1/answer", b'{"documents": ["a"], "documents": 5, "query": "q"}'),
                       ("/compress", b'{"memories": ["a"], "query": "q", "max_new_tokens": 600,'
                                     b' "max_new_tokens": 5}'),
                       ("/v1/collections/c/memories", b'{"text": "a", "text": "b"}')]:
        st, j, _, _ = s.post(path, body)
        e = j.get("error")
        msg = e["message"] if isinstance(e, dict) else e
        check(st == 422 and "twice in one object" in msg,
              "%s with a duplicated key -> 422: %d %r" % (path, st, j))
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
           b"application/json\r\nContent-Length: 10\r\n\r\n{\"messages")
    check(raw_request(s.port, req, timeout=5).startswith(b"HTTP/1.1 400"), "truncated body")
    check(s.healthy(), "the server still answers")
    r = sdk(s, [chat(DOCS, max_tokens=4)])[0]
    check("text" in r, "and still generates: %r" % r)
    s.stop()


def test_our_endpoints_stream():
    s = Server("--model", DEMO, "--db", os.path.join(TMP, "oai-stream.db"))
    body = {"query": QUESTION, "documents": DOCS, "max_new_tokens": 20}
    st, _, _, _ = s.post("/v1/collections/facts/memories", {"memories": DOCS})
    check(st == 201, "memories added (%s)" % st)
    query = "/v1/collections/facts/query"
    st0 = s.status()
    for path, extra in (("/v1/answer", {}), ("/v1/retrieve", {"top_k": 1}),
                        (query, {"documents": None})):
        b = {k: v for k, v in dict(body, **extra).items() if v is not None}
        st, whole, _, _ = s.post(path, b)
        ev = curl_stream(s, path, dict(b, stream=True))
        check(st == 200 and ev[-1] == "[DONE]", "%s: streamed, ends with [DONE]" % path)
        events = [json.loads(e) for e in ev[:-1]]
        text = "".join(chunk_text(e) for e in events)
        last = events[-1]
        check(text == whole["answer"] and last.get("answer") == whole["answer"],
              "%s: streamed pieces make the answer: %r vs %r" % (path, text, whole["answer"]))
        check(last["choices"][0]["finish_reason"] in ("stop", "length"), "final choice")
        for k in ("prompt_tokens", "generated_tokens", "timings", "top_k", "scores", "memories",
                  "model"):
            if k in whole:
                check(k in last and (k == "timings" or last[k] == whole[k]),
                      "%s: final event has %s" % (path, k))
        if path == query:
            check(set(whole["timings"]) == set(last["timings"]) and
                  whole["timings"]["rank_ms"] >= 0, "the store's timings: %r" % last["timings"])
    check(wait_for(lambda: s.status()["requests_served"] == st0["requests_served"] + 6, 10) and
          s.status()["errors"] == st0["errors"],
          "3 streams and 3 replies counted once each, as served: %r" % s.status())
    for path in ("/v1/answer", query):
        st, j, _, _ = s.post(path, dict(body, stream="yes"))
        check(st == 422, "%s: stream must be a boolean: %d" % (path, st))
    s.stop()


def test_streaming_is_real():
    """64 tokens of a 0.85 B model (~80 ms a token here): the first piece arrives long before the
    last. ignore_eos keeps random weights from stopping early."""
    n = 64 if not SLOW else 12
    s = Server(*big_model(), "--keep-alive", "-1")
    sdk(s, [chat(None, "Warm up.", max_tokens=1)])  # the model load is not part of the figure
    r = sdk(s, [chat(None, "Tell me a long story.", max_tokens=n, ignore_eos=True, stream=True),
                chat(None, "Tell me a long story.", max_tokens=n, ignore_eos=True)])
    st, whole = r
    content_times = [t for t, c in zip(st["times"][1:], st["chunks"][1:]) if c]
    print("token arrival (ms): %s; total %d ms" % (st["times"], st["total_ms"]))
    check(whole["usage"]["completion_tokens"] == n, "ignore_eos: %d tokens" % n)
    check(st["text"] == whole["text"], "streamed equals whole (big model)")
    check(len(content_times) >= n // 2, "pieces come one by one: %d" % len(content_times))
    check(content_times and content_times[0] < st["total_ms"] / 2,
          "the first piece arrives before half the total time: %s of %d ms" %
          (content_times[:1], st["total_ms"]))
    check(content_times and content_times[-1] - content_times[0] > st["total_ms"] / 3,
          "pieces are spread over the generation")
    # a client that leaves mid-stream frees the scheduler within a step
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
    c.request("POST", "/v1/chat/completions", json.dumps(
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 400, "ignore_eos": True,
         "stream": True}), {"Content-Type": "application/json"})
    resp = c.getresponse()
    check(resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream",
          "SSE headers")
    resp.read1(100)
    c.close()
    t0 = time.time()
    r = sdk(s, [chat(None, "Next.", max_tokens=2)])[0]
    waited = time.time() - t0
    check("text" in r and waited < (60 if SLOW else 8),
          "the next request is served once the stream's client left: %.1f s" % waited)
    check("request cancelled" in s.text(), "the server cancelled the abandoned stream")
    check(wait_for(lambda: "POST /v1/chat/completions 499" in s.text(), 10),
          "the abandoned stream is logged 499, as API.md says, not 200")
    check(s.text().count(" 499 ") == 1, "the streams read to their end are not 499s")
    s.stop()


def test_docs():
    doc = open(os.path.join(ROOT, "docs", "API.md")).read()
    for w in ("## OpenAI-compatible API", "/v1/chat/completions", "documents_from_cache",
              "ignore_eos", "--doc-cache", "data: [DONE]"):
        check(w in doc, "docs/API.md mentions %s" % w)
    s = Server("--model", DEMO)
    st, j, _, _ = s.get("/openapi.json")
    for p in ("/v1/models", "/v1/chat/completions", "/v1/completions"):
        check(p in j["paths"], "openapi.json lists %s" % p)
    s.stop()


if __name__ == "__main__":
    t0 = time.time()
    try:
        npm_install(SDK_DIR, "openai", SDK_VERSION)
        for fn in [test_greedy_equals_cli_and_stream_equals_whole, test_cache_off_same_answer,
                   test_seeded_sampling, test_stop_sequences, test_chat_turns_and_parts,
                   test_collection, test_stream_equals_whole_with_byte_runs, test_errors_and_key, test_hostile, test_our_endpoints_stream,
                   test_streaming_is_real, test_docs]:
            run(fn)
        check_no_sanitizer_reports()
    except Exception as e:  # the SDK could not be installed: a failure, never a skip
        check(False, "test_openai could not run: %s" % e)
    finally:
        cleanup()
    print("openai tests took %.1f s" % (time.time() - t0))
    report("test_openai")
