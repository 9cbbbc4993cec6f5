"""Continuous batching through the real server: a request that arrives while others decode joins
their batch at the next step (it is answered long before they finish, where a batch that runs to
its end made it wait for all of them), gets exactly the answer it gets alone (and the CLI's), a
/v1/compress arriving mid-answer is served while the answers go on, and /metrics shows the token
latencies and the running batch."""

import http.client
import json
import re
import subprocess
import threading
import time

from harness import BUILD, check, report, run
from server_harness import DEMO, Server, check_no_sanitizer_reports, cleanup

DOC = "Paris is the capital of France. The Seine flows through it."


def answer(q, new, docs=None):
    return {"query": q, "documents": docs or [DOC], "max_new_tokens": new}


def timed_post(s, body, out, key, path="/v1/answer"):
    t0 = time.perf_counter()
    st, j, _, _ = s.post(path, body, timeout=300)
    out[key] = (st, j, t0, time.perf_counter())


def test_joins_running_batch():
    s = Server("--db", "none", "--keep-alive", "-1")
    st, alone, _, _ = s.post("/v1/answer", answer("Where is the Seine?", 8))
    check(st == 200, "short answer alone: %s" % st)
    out, started = {}, [threading.Event() for _ in range(3)]

    def long_stream(i):
        """A streamed answer that does not stop at </s> (the demo model's random weights may end
        any time): its end time and token count."""
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=300)
        c.request("POST", "/v1/completions", body=json.dumps({
            "prompt": "Tell me all %d." % i, "documents": [DOC], "max_tokens": 512,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}),
            headers={"Content-Type": "application/json"})
        r = c.getresponse()
        tokens = None
        for line in r:
            started[i].set()
            if line.startswith(b"data: {"):
                usage = json.loads(line[6:]).get("usage")
                tokens = usage["completion_tokens"] if usage else tokens
        out[i] = (r.status, {"usage": {"completion_tokens": tokens}}, 0, time.perf_counter())
        c.close()

    longs = [threading.Thread(target=long_stream, args=(i,)) for i in range(3)]
    for t in longs:
        t.start()
    for e in started:  # the long answers decode (their first tokens are out)
        e.wait(60)
    timed_post(s, answer("Where is the Seine?", 8), out, "short")
    for t in longs:
        t.join()
    st, j, t0, t1 = out["short"]
    check(st == 200 and j["answer"] == alone["answer"] and
          j["generated_tokens"] == alone["generated_tokens"],
          "the joining request gets its answer alone: %s %r" % (st, j.get("answer")))
    long_ends = [out[i][3] for i in range(3)]
    long_tokens = [out[i][1]["usage"]["completion_tokens"] for i in range(3)]
    check(long_tokens == [512] * 3, "long answers of 512 tokens: %s" % long_tokens)
    check(all(out[i][0] == 200 for i in range(3)), "long answers: %s" % [out[i][0] for i in range(3)])
    # it came back while the long answers were still decoding (512 tokens each)
    check(t0 < min(long_ends) and t1 < min(long_ends),
          "answered before the running answers ended (%.3f s vs %.3f s; long tokens %s)" %
          (t1 - t0, min(long_ends) - t0, long_tokens))
    check(j["timings"]["batch_size"] >= 2, "it ran in a batch of %s" % j["timings"]["batch_size"])
    # and the CLI gives the same ids on the same input
    cli = subprocess.run([BUILD + "/clara", "ask", "--model", DEMO, "--doc", DOC, "--query",
                          "Where is the Seine?", "--max-new-tokens", "8", "--json"],
                         capture_output=True, text=True, timeout=120)
    check(cli.returncode == 0 and json.loads(cli.stdout)["answer"] == j["answer"],
          "clara ask agrees: %s" % cli.stdout[:200])
    m = s.get("/metrics")[3].decode()
    n_ttft = re.search(r"^clara_time_to_first_token_seconds_count (\d+)", m, re.M)
    n_itl = re.search(r"^clara_inter_token_latency_seconds_count (\d+)", m, re.M)
    check(n_ttft and int(n_ttft.group(1)) == 5, "one first token per answer: %s" %
          (n_ttft and n_ttft.group(1)))
    total = alone["generated_tokens"] * 2 + sum(long_tokens)
    check(n_itl and int(n_itl.group(1)) == total - 5, "inter-token gaps: %s of %d" %
          (n_itl and n_itl.group(1), total - 5))
    check(re.search(r"^clara_running_requests 0$", m, re.M), "running batch empty at the end")
    s.stop()


def test_compress_mid_answer():
    s = Server("--db", "none", "--keep-alive", "-1")
    s.post("/v1/answer", answer("warm up", 2))
    out = {}
    t = threading.Thread(target=timed_post, args=(s, {
        "prompt": "Tell me everything.", "documents": [DOC], "max_tokens": 512, "ignore_eos": True},
        out, "long", "/v1/completions"))
    t.start()
    time.sleep(0.1)
    docs = ["Document number %d says something about rivers and cities." % i for i in range(16)]
    timed_post(s, {"documents": docs}, out, "compress", path="/v1/compress")
    t.join()
    st, j, _, _ = out["compress"]
    check(st == 200 and j["vectors"]["shape"][0] == 16, "16 documents compressed mid-answer: %s" % st)
    st2, alone, _, _ = s.post("/v1/compress", {"documents": docs})
    check(st2 == 200 and alone["vectors"] == j["vectors"], "the same vectors as alone")
    check(out["long"][0] == 200 and out["long"][1]["usage"]["completion_tokens"] == 512,
          "the answer went on: %s" % out["long"][0])
    s.stop()


if __name__ == "__main__":
    try:
        for fn in [test_joins_running_batch, test_compress_mid_answer]:
            run(fn)
        check_no_sanitizer_reports()
    finally:
        cleanup()
    report("test_server_batching")
