#!/usr/bin/env bash
# store.sh - the memory store's figures on the random-weight 1B q4_0 bench model, 2 threads
# (docs/PERFORMANCE.md, "Memory store"). Everything is written under a temporary directory (every
# server gets --db there); nothing touches the default store.
#
#   a. adding memories vs plain compression: the same N_DOCS passages (one chunk each) through
#      POST /v1/collections/{c}/memories and POST /v1/compress (documents/s, ratio);
#   b. ranking SIZES stored chunks (cold, warm), candidates, recall against brute force, and
#   d. the SQLite file size against the raw f16 vectors + texts: bench/bench_store.c (direct store
#      access; it explains how the stored vectors are synthesized from real passages);
#   c. POST /v1/collections/{c}/query (top_k 5) vs POST /v1/answer with the 5 selected memories'
#      vectors plus the query's own rank_ms (same max_new_tokens, median of N_QUERIES);
#   e. clara-server's resident memory after E_QUERIES queries (32 new chunks each) over the
#      10,000-chunk collection with --vector-cache 64 and 1024.
#
#   bench/store.sh                          # SIZES=10000,100000 N_DOCS=24 N_QUERIES=8 E_QUERIES=40
#   SIZES=10000 bench/store.sh              # skips the 100,000-chunk collection (~6.6 GB on disk)
#   WORK=/tmp/x SIZES=none bench/store.sh   # only a, c, e (e reuses $WORK/store-10000.db)
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILD=${BUILD:-build} SIZES=${SIZES:-10000,100000} N_DOCS=${N_DOCS:-24}
export N_QUERIES=${N_QUERIES:-8} E_QUERIES=${E_QUERIES:-40} THREADS=${THREADS:-2}
export BENCH_DIR=$BUILD/bench-1b-q4_0
make -s "$BUILD/clara" "$BUILD/clara-server" "$BUILD/bench/bench_store"
if [ ! -f "$BENCH_DIR/clara.gguf" ]; then
    echo "== generating the random-weight 1B q4_0 model into $BENCH_DIR (once)"
    "$BUILD/clara" bench --generate 1b --type q4_0 --out "$BENCH_DIR"
fi
if [ -n "${WORK:-}" ]; then mkdir -p "$WORK"; else # WORK=dir keeps the files (and reuses them)
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/clara-store-bench.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi
export WORK
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores; $THREADS threads"
echo "== b, d: ranking, recall and size of $SIZES stored chunks (bench/bench_store.c)"
[ "$SIZES" = none ] || "$BUILD/bench/bench_store" --base "$BENCH_DIR/base.gguf" --clara "$BENCH_DIR/clara.gguf" \
    --data tests/data/wiki-passages-qa.jsonl --work "$WORK" --threads "$THREADS" \
    --vectors "$BUILD/bench/store-vectors.bin" --sizes "$SIZES" --keep 10000
echo "== a, c, e: clara-server"
exec /usr/bin/python3 - <<'PY'
import atexit, base64, http.client, json, os, re, statistics, subprocess, sys, time

B, W = os.environ["BUILD"], os.environ["WORK"]
MODEL = ["--base", os.environ["BENCH_DIR"] + "/base.gguf", "--clara", os.environ["BENCH_DIR"] + "/clara.gguf"]
N, NQ, NE = int(os.environ["N_DOCS"]), int(os.environ["N_QUERIES"]), int(os.environ["E_QUERIES"])

def server(db, cache_mb=None):
    log = open(os.path.join(W, "server.log"), "w+")
    args = [os.path.join(B, "clara-server"), "--host", "127.0.0.1", "--port", "0", "--log-level", "info",
            "--keep-alive", "-1", "--threads", os.environ["THREADS"], "--max-body", str(64 << 20),
            "--db", db] + MODEL
    if cache_mb:
        args += ["--vector-cache", str(cache_mb)]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
    atexit.register(lambda: p.poll() is None and (p.terminate(), p.wait()))
    for _ in range(3000):
        m = re.search(r"listening on http://[^ ]*:(\d+)", open(log.name, errors="replace").read())
        if m:
            return p, int(m.group(1))
        if p.poll() is not None:
            break
        time.sleep(0.02)
    sys.exit("server did not start:\n" + open(log.name).read())

def call(port, path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t = time.perf_counter()
    c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    dt = time.perf_counter() - t
    c.close()
    if r.status not in (200, 201):
        sys.exit("%s: %d %s" % (path, r.status, data[:300]))
    return json.loads(data), dt

def rss_mb(p):
    for line in open("/proc/%d/status" % p.pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0

# the last passages of the file (bench_store uses the first), short enough to be one chunk each
rows = [r for r in map(json.loads, open("tests/data/wiki-passages-qa.jsonl")) if len(r["docs"][0].split()) <= 80][-N:]
docs = [r["docs"][0] for r in rows]
questions = [r["question"][0] for r in rows]

PARTS = os.environ.get("PARTS", "ace")  # e.g. PARTS=e: only the resident-memory part

# a. adding memories vs compressing the same documents
if "a" not in PARTS and "c" not in PARTS:
    docs = docs[:1]
p, port = server(os.path.join(W, "a.db"))
call(port, "/v1/compress", {"documents": docs[:2]})  # loads the model
comp, add = [], []
for rep in range(3 if "a" in PARTS or "c" in PARTS else 0):
    vec, dt = call(port, "/v1/compress", {"documents": docs, "dtype": "f16"})
    comp.append(N / dt)
    ra, dt = call(port, "/v1/collections/a%d/memories" % rep, {"memories": docs})
    add.append(N / dt)
    assert all(m["chunks"] == 1 for m in ra["memories"]), ra["memories"]
    print("  a. round %d: /v1/compress %.2f documents/s, memories %.2f documents/s" % (rep + 1, comp[-1], add[-1]), flush=True)
if comp:
  c_med, a_med = statistics.median(comp), statistics.median(add)
  print("a. %d passages (one chunk each): POST /v1/compress %.2f documents/s, POST /v1/collections/{c}/memories "
      "%.2f documents/s (median of 3 alternating rounds): ratio %.3f" % (N, c_med, a_med, a_med / c_med), flush=True)

# c. a query's answer vs /v1/answer from the same vectors + the query's ranking time
per = 16 * 2048 * 2
qt, at, ratios = [], [], []
if comp:
    raw = base64.b64decode(vec["vectors"]["data"])
    per = len(raw) // N
    shape = vec["vectors"]["shape"]
for i in range(NQ if "c" in PARTS else 0):
    q = questions[i % N]
    rq, tq = call(port, "/v1/collections/a0/query", {"query": q, "top_k": 5, "max_new_tokens": 32})
    idx = [docs.index(m["text"]) for m in rq["memories"]]
    vb = {"dtype": "f16", "encoding": "base64-le", "shape": [len(idx), shape[1], shape[2]],
          "data": base64.b64encode(b"".join(raw[j * per:(j + 1) * per] for j in idx)).decode()}
    ra, ta = call(port, "/v1/answer", {"query": q, "vectors": vb, "max_new_tokens": 32})
    rank = rq["timings"]["rank_ms"] / 1e3
    same = ra["answer"] == rq["answer"]
    qt.append(tq); at.append(ta + rank); ratios.append(tq / (ta + rank))
    print("  c. query %d: /query %.0f ms (%s, rank %.2f ms, %d tokens), /v1/answer %.0f ms (%d tokens)%s"
          % (i + 1, tq * 1e3, rq["selection"]["method"], rank * 1e3, rq["generated_tokens"], ta * 1e3,
             ra["generated_tokens"], "" if same else " ANSWERS DIFFER"), flush=True)
if qt: print("c. /v1/collections/{c}/query (top_k 5, max_new_tokens 32, %d memories) median %.0f ms vs /v1/answer "
      "with the 5 selected vectors + rank_ms median %.0f ms: ratio of medians %.3f, median ratio %.3f"
      % (N, statistics.median(qt) * 1e3, statistics.median(at) * 1e3, statistics.median(qt) / statistics.median(at),
         statistics.median(ratios)), flush=True)
p.terminate(); p.wait()

# e. resident memory with a small and a large vector cache
db10k = os.path.join(W, "store-10000.db")
if not os.path.exists(db10k):
    print("e. skipped: SIZES has no 10000")
    sys.exit(0)
for mb in (64, 1024):
    p, port = server(db10k, mb)
    call(port, "/v1/compress", {"documents": docs[:1]})
    r_model = rss_mb(p)
    t = time.perf_counter()
    for i in range(NE):
        if i == 2:  # after two queries the generation buffers exist; the cache holds 64 chunks
            r0 = rss_mb(p)
        words = " ".join("k%d" % (32 * i + j) for j in range(32))
        rq, _ = call(port, "/v1/collections/bench/query", {"query": words, "top_k": 32, "max_new_tokens": 1})
        if (i + 1) % 10 == 0 or i + 1 == NE:
            print("  e. --vector-cache %d: %d/%d queries, RSS %.0f MB, %.0f s" % (mb, i + 1, NE, rss_mb(p), time.perf_counter() - t), flush=True)
    print("e. --vector-cache %d: RSS %.0f MB with the model loaded, %.0f MB after 2 queries, %.0f MB after %d queries "
          "(%d chunks of 10,000 touched, %.0f MB as f32): +%.0f MB since the 2nd query"
          % (mb, r_model, r0, rss_mb(p), NE, 32 * NE, 32 * NE * per * 2 / 1e6, rss_mb(p) - r0), flush=True)
    p.terminate(); p.wait()
PY
