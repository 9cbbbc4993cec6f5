"""continuous.py - continuous batching measured through the server (bench/load_server.sh
MODE=continuous runs it): streamed /v1/answer requests of 3 documents of ~150 tokens and 64 new
tokens, on a model given by MODEL or BASE + CLARA (a random ~1B q4_0 pair from
`clara bench --generate 1b --type q4_0`), THREADS engine threads (default 2).

  1. one request alone, ROUNDS times: time to first token, decode tokens/s, its compress + prefill
  2. 8 concurrent requests: the aggregate decode tokens/s (all tokens after each request's first,
     over the span from the first first-token to the last token), against 1.
  3. a request arriving while 7 others decode: its time to first token minus its own
     compress + prefill time alone (from 1), in decoding steps of the 7 (their median gap), p95
  4. a /v1/compress of 16 documents arriving while 4 streams decode: the longest gap between two
     tokens of a stream during it, against their median gap.
Token times are the server's (its debug log says when each token was generated): a token whose
text ends inside a UTF-8 sequence is sent with the next one, so the times the client receives text
count two tokens as one gap (random-weight models emit such byte tokens often). The gaps between
pieces of text as the client saw them are printed beside.
Prints one table; every figure is labelled with the CPU. Exit status 0 (figures, not a test)."""
import http.client, json, os, re, statistics, subprocess, sys, tempfile, threading, time

BUILD = os.environ.get("BUILD", "build")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
THREADS = os.environ.get("THREADS", "2")
NEW = 64


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def start_server():
    args = [os.path.join(BUILD, "clara-server"), "--host", "127.0.0.1", "--port", "0",
            "--log-level", "debug", "--keep-alive", "-1", "--db", "none", "--threads", THREADS, "--parallel", "16",
            "--max-request-tokens", "100000", "--request-timeout", "600"]
    if os.environ.get("BASE"):
        args += ["--base", os.environ["BASE"], "--clara", os.environ["CLARA"]]
    elif os.environ.get("MODEL"):
        args += ["--model", os.environ["MODEL"]]
    log = tempfile.NamedTemporaryFile(prefix="clara-cont-", suffix=".log", delete=False)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(3000):
        m = re.search(r"listening on http://[^ ]*:(\d+)", open(log.name, errors="replace").read())
        if m:
            return proc, int(m.group(1)), log.name
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    sys.exit("server did not start:\n" + open(log.name).read())


PROC, PORT, LOG = start_server()
PASSAGES = [json.loads(l)["docs"][0] for l in open("tests/data/wiki-passages-qa.jsonl")][:200]
_next = [0]


def docs(n):
    out = []
    for _ in range(n):
        out.append(PASSAGES[_next[0] % len(PASSAGES)][:600])
        _next[0] += 1
    return out


def stream(body, started=None):
    """POSTs a streamed /v1/answer; returns (t_start, [times: the first event's, when the first
    token exists, then each piece of text's], final json). `started` (a threading.Semaphore) is
    released at the first event."""
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/answer", body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError("status %d: %s" % (r.status, r.read()[:300]))
    times, final = [], None
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        ev = json.loads(data)
        delta = (ev.get("choices") or [{}])[0].get("delta", {}).get("content")
        if not times or delta:
            times.append(time.perf_counter())
            if started and len(times) == 1:
                started.release()
        if "timings" in ev or "answer" in ev:
            final = ev
    c.close()
    return t0, times, final


def request(n_docs=3, new=NEW):
    return {"query": "What is this document about?", "documents": docs(n_docs), "max_new_tokens": new,
            "stream": True}


def run_many(bodies, delays=None):
    res = [None] * len(bodies)

    def go(i):
        if delays:
            time.sleep(delays[i])
        res[i] = stream(bodies[i])
    ts = [threading.Thread(target=go, args=(i,)) for i in range(len(bodies))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return res


def gaps(times):
    return [b - a for a, b in zip(times, times[1:])]


TOKEN_LINE = re.compile(r"token (\d+) of task (0x[0-9a-f]+|\(nil\)) at ([0-9.]+) s")


def engine_tokens(a, b):
    """The server's token times (seconds, the clock of time.perf_counter) of the answers that
    generated a token in [a, b]: a list of lists, one per answer, in order of generation."""
    tasks, spans = {}, []
    for line in open(LOG, errors="replace"):
        m = TOKEN_LINE.search(line)
        if not m:
            continue
        n, key, t = int(m.group(1)), m.group(2), float(m.group(3))
        if n == 1 or key not in tasks:  # an answer's first token (a freed task's address is reused)
            tasks[key] = []
            spans.append(tasks[key])
        tasks[key].append(t)
    return [ts for ts in spans if any(a <= t <= b for t in ts)]


stream(request())  # loads the model, warms up
alone = []
for _ in range(ROUNDS):
    t0, times, final = stream(request())
    tm = final.get("timings", {}) if final else {}
    n = (final or {}).get("generated_tokens", len(times))
    alone.append({"ttft": times[0] - t0, "tps": (n - 1) / (times[-1] - times[0]),
                  "own": (tm.get("compress_ms", 0) + tm.get("generate_ms", 0)) / 1e3 - (times[-1] - times[0]),
                  "step": statistics.median(gaps(times))})
one_tps = statistics.median(a["tps"] for a in alone)
own = statistics.median(a["ttft"] for a in alone)
step1 = statistics.median(a["step"] for a in alone)

agg, steady, steady_text = [], [], []
for _ in range(ROUNDS):
    res = run_many([request() for _ in range(8)])
    first = min(t[1][0] for t in res)
    last = max(t[1][-1] for t in res)
    toks = sum(((f or {}).get("generated_tokens", len(tt)) - 1) for _, tt, f in res)
    agg.append(toks / (last - first))
    # decoding together: from the last of the 8 first tokens to the first of the 8 last ones,
    # the pieces of text every stream received (a token whose text is held back, an incomplete
    # UTF-8 sequence, arrives with the next: a lower bound on tokens)
    a, b = max(t[1][0] for t in res), min(t[1][-1] for t in res)
    if b > a:
        steady_text.append(sum(sum(1 for x in tt if a < x <= b) for _, tt, _ in res) / (b - a))
    toks = engine_tokens(first, last)
    a, b = max(ts[0] for ts in toks), min(ts[-1] for ts in toks)
    if b > a and len(toks) == 8:
        steady.append(sum(sum(1 for x in ts if a < x <= b) for ts in toks) / (b - a))
agg_tps = statistics.median(agg)

def decoding(n, new):
    """n streamed requests started; returns once all of them decode: (threads, results)."""
    res, started = [None] * n, threading.Semaphore(0)

    def go(i):
        res[i] = stream(request(new=new), started)
    ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for _ in range(n):
        started.acquire()
    return ts, res


late = []
for _ in range(max(ROUNDS, 4)):
    ts, res = decoding(7, NEW * 4)
    t0, times, final = stream(request())
    for t in ts:
        t.join()
    g7 = statistics.median(g for _, tt, _ in res for g in gaps(tt))
    tm = (final or {}).get("timings", {})
    ran = (tm.get("compress_ms", 0) + tm.get("prefill_ms", 0)) / 1e3  # its phases, as they ran
    late.append((((times[0] - t0) - own) / g7, ((times[0] - t0) - ran) / g7))
late_p95 = sorted(x[0] for x in late)[min(len(late) - 1, int(0.95 * len(late)))]
wait_p95 = sorted(x[1] for x in late)[min(len(late) - 1, int(0.95 * len(late)))]

stall = []
for _ in range(ROUNDS):
    ts, res = decoding(4, NEW * 4)
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=600)
    a = time.perf_counter()
    c.request("POST", "/v1/compress", body=json.dumps({"documents": docs(16)}),
              headers={"Content-Type": "application/json"})
    c.getresponse().read()
    b = time.perf_counter()
    c.close()
    for t in ts:
        t.join()
    def longest(streams):
        worst, med = 0.0, []
        for tt in streams:
            med += gaps(tt)
            worst = max([worst] + [y - x for x, y in zip(tt, tt[1:]) if y > a and x < b])
        return worst, statistics.median(med)
    toks = engine_tokens(a, b)
    stall.append(longest(toks) + longest([tt for _, tt, _ in res]) + (b - a, len(toks)))

PROC.terminate()
PROC.wait(timeout=30)
os.unlink(LOG)
cpu = cpu_name()
print("continuous batching, %s threads, %s (CPU: %s)" % (THREADS, os.environ.get("CLARA") or os.environ.get("MODEL") or "demo model", cpu))
print("  one request alone: first token %.2f s, decode %.1f tok/s, step %.1f ms (rounds: %s)" % (
    own, one_tps, step1 * 1e3, ", ".join("%.1f" % a["tps"] for a in alone)))
print("  8 concurrent, all decoding: aggregate %.1f tok/s = %.2fx one alone (rounds: %s)" % (
    statistics.median(steady), statistics.median(steady) / one_tps, ", ".join("%.1f" % x for x in steady)))
print("    (pieces of text as the clients received them: %.1f tok/s = %.2fx)" % (
    statistics.median(steady_text), statistics.median(steady_text) / one_tps))
print("  8 concurrent, first to last token (compressions of the others inside): %.1f tok/s = %.2fx"
      " (rounds: %s)" % (agg_tps, agg_tps / one_tps, ", ".join("%.1f" % x for x in agg)))
print("  arriving while 7 decode: first token = its first token alone + %.2f steps (p95; rounds: %s)" % (
    late_p95, ", ".join("%.2f" % x[0] for x in late)))
print("    = its own compression + prefill as they ran (the 7 stepping between their layers) + %.2f steps"
      " (p95; rounds: %s)" % (wait_p95, ", ".join("%.2f" % x[1] for x in late)))
for worst, med, worst_text, med_text, span, n in stall:
    print("  16-document /v1/compress (%.1f s) mid-stream: longest token gap of the %d streams %.0f ms"
          " (median %.0f ms): +%.0f ms; between pieces of text received %.0f ms: +%.0f ms" % (
              span, n, worst * 1e3, med * 1e3, (worst - med) * 1e3, worst_text * 1e3, (worst_text - med_text) * 1e3))
