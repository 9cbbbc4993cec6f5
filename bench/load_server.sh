#!/usr/bin/env bash
# load_server.sh - a bounded load test of clara-server on loopback (at most ~2 minutes).
#
# Starts $BUILD/clara-server (default build/) with MODEL (default: the demo model) on a free
# loopback port, measures sequential /compress throughput, then runs CLIENTS concurrent clients
# for DURATION seconds while a prober hits /health every 20 ms, and prints p50/p99 latency, throughput,
# the 5xx count (must be 0), /health p99 while the engine is busy, and resident memory at start
# and end. Exit status is non-zero if any request failed or got a 5xx.
#
#   bench/load_server.sh                   # CLIENTS=8 DURATION=60 (seconds, at most 100)
#   CLIENTS=16 DURATION=30 MODEL=x.gguf bench/load_server.sh
#   MIX=readme SEQ_N=8 MODEL=x.gguf bench/load_server.sh   # only the Python README's request shape
#                                          (3 short memories, default max_new_tokens 128)
#   MODE=continuous BASE=b.gguf CLARA=c.gguf bench/load_server.sh
#                                          # continuous batching with streamed answers (bench/continuous.py:
#                                          one alone, 8 together, one joining 7, compression mid-stream)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${MODE:-}" = continuous ]; then exec /usr/bin/python3 bench/continuous.py; fi
export BUILD=${BUILD:-build} CLIENTS=${CLIENTS:-8} SECONDS_LOAD=${DURATION:-60} MODEL=${MODEL:-}
export MIX=${MIX:-all} SEQ_N=${SEQ_N:-30}
if [ "$SECONDS_LOAD" -gt 100 ]; then SECONDS_LOAD=100; fi
exec /usr/bin/python3 - <<'PY'
import http.client, json, os, re, signal, subprocess, sys, tempfile, threading, time

build, clients, dur = os.environ["BUILD"], int(os.environ["CLIENTS"]), float(os.environ["SECONDS_LOAD"])
args = [os.path.join(build, "clara-server"), "--host", "127.0.0.1", "--port", "0", "--log-level", "warn",
        "--keep-alive", "-1", "--db", "none"]  # no memory store: never one under ~/.local/share
if os.environ.get("MODEL"):
    args += ["--model", os.environ["MODEL"]]
log = tempfile.NamedTemporaryFile(prefix="clara-load-", suffix=".log", delete=False)
proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
port = None
for _ in range(1000):
    m = re.search(r"listening on http://[^ ]*:(\d+)", open(log.name, errors="replace").read())
    if m:
        port = int(m.group(1))
        break
    if proc.poll() is not None:
        break
    time.sleep(0.02)
if port is None:
    sys.exit("server did not start:\n" + open(log.name).read())

def rss():
    for line in open("/proc/%d/status" % proc.pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0

PAYLOADS = [
    {"memories": ["User likes hiking in national parks.", "User works as a software engineer.",
                  "User has a dog named Max."], "query": "What outdoor activities does the user enjoy?"},
    {"memories": ["The sky is blue.", "Grass is green.", "Snow is white.", "Coal is black."],
     "query": "What colour is snow?", "max_new_tokens": 64},
    {"memories": ["Paris is the capital of France. " * 20], "query": "Capital of France?", "max_new_tokens": 32},
]
if os.environ["MIX"] == "readme":
    PAYLOADS = PAYLOADS[:1]
failures, statuses, lat, hlat = [], {}, [], []
lock = threading.Lock()

def post(conn, i):
    body = json.dumps(PAYLOADS[i % len(PAYLOADS)])
    t = time.perf_counter()
    conn.request("POST", "/compress", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    return r.status, time.perf_counter() - t, data

def seq(n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t = time.perf_counter()
    for i in range(n):
        st, _, _ = post(c, i)
        assert st == 200, st
    c.close()
    return n / (time.perf_counter() - t)

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))] * 1e3 if v else float("nan")

seq(min(6, int(os.environ["SEQ_N"])))  # loads the model and warms up
rss_start = rss()
seq_rps = seq(int(os.environ["SEQ_N"]))
stop = time.time() + dur

def worker(w):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    i = w
    while time.time() < stop:
        try:
            st, dt, data = post(c, i)
        except Exception as e:  # noqa: BLE001
            with lock:
                failures.append(repr(e))
            c.close()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            continue
        with lock:
            statuses[st] = statuses.get(st, 0) + 1
            if st == 200:
                lat.append(dt)
        i += 1
    c.close()

def prober():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while time.time() < stop:
        t = time.perf_counter()
        c.request("GET", "/health")
        r = c.getresponse()
        r.read()
        dt = time.perf_counter() - t
        with lock:
            hlat.append(dt)
            statuses["health %d" % r.status] = statuses.get("health %d" % r.status, 0) + 1
        time.sleep(0.02)
    c.close()

rss_mid = []
def sampler():
    time.sleep(dur / 2)
    rss_mid.append(rss())

t0 = time.perf_counter()
ts = [threading.Thread(target=sampler)] + [threading.Thread(target=worker, args=(w,)) for w in range(clients)] + [threading.Thread(target=prober)]
for t in ts:
    t.start()
for t in ts:
    t.join()
elapsed = time.perf_counter() - t0
rss_end = rss()
proc.send_signal(signal.SIGTERM)
rc = proc.wait(timeout=30)
n5xx = sum(v for k, v in statuses.items() if str(k).split()[-1].startswith("5"))
print("clara-server load test: %d clients x %.0f s on 127.0.0.1 (%s)" % (clients, dur, os.environ.get("MODEL") or "demo model"))
print("  sequential /compress:      %.3f req/s" % seq_rps)
print("  concurrent /compress:      %.3f req/s (%d ok), %.2fx sequential" % (len(lat) / elapsed, len(lat), len(lat) / elapsed / seq_rps))
print("  /compress latency:         p50 %.1f ms  p99 %.1f ms  max %.1f ms" % (pct(lat, 50), pct(lat, 99), pct(lat, 100)))
print("  /health while busy:        p50 %.2f ms  p99 %.2f ms  (%d probes)" % (pct(hlat, 50), pct(hlat, 99), len(hlat)))
print("  statuses:                  %s" % dict(sorted((str(k), v) for k, v in statuses.items())))
print("  5xx: %d   client errors: %d   server exit: %d" % (n5xx, len(failures), rc))
print("  RSS: start %.1f MiB  half-way %.1f MiB  end %.1f MiB" % (rss_start, rss_mid[0] if rss_mid else 0, rss_end))
os.unlink(log.name)
sys.exit(1 if n5xx or failures or rc or any(not str(k).endswith("200") for k in statuses) else 0)
PY
