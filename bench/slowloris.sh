#!/usr/bin/env bash
# slowloris.sh - the issue-16 slowloris run on loopback, bounded (at most ~2 minutes).
#
# Starts $BUILD/clara-server (default build/) with the demo model and its default limits on a free
# loopback port, then for DURATION seconds (default 60, at most 100) keeps CONNS (default 600)
# connections from 20 loopback source addresses (127.0.0.2-21) each sending one byte of an endless
# request head every PERIOD seconds (default 5), reopening any the server closes, while a normal
# client from 127.0.0.1 sends one GET /health and one small POST /compress every second. Prints
# the normal client's answered count, p50/p99/max latency and the attack's figures (as JSON), the
# CPU, and exits non-zero unless every normal request was answered with p99 < 1 s.
#
#   bench/slowloris.sh
#   DURATION=30 CONNS=1000 bench/slowloris.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILD=${BUILD:-build} DURATION=${DURATION:-60} CONNS=${CONNS:-600} PERIOD=${PERIOD:-5}
if [ "$DURATION" -gt 100 ]; then DURATION=100; fi
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
exec /usr/bin/python3 - <<'PY'
import json, os, re, signal, subprocess, sys, tempfile, time
sys.path.insert(0, "tests/e2e")
import slowloris
log = tempfile.NamedTemporaryFile(prefix="clara-slowloris-", suffix=".log", delete=False)
srv = subprocess.Popen([os.path.join(os.environ["BUILD"], "clara-server"), "--port", "0",
                        "--keep-alive", "-1", "--db", "none"], stdout=subprocess.DEVNULL, stderr=log)
try:
    port = None
    for _ in range(300):
        m = re.search(r"listening on http://[^ ]*:(\d+)", open(log.name).read())
        if m:
            port = int(m.group(1))
            break
        time.sleep(0.05)
    if port is None:
        sys.exit("the server did not start: " + open(log.name).read()[-500:])
    r = slowloris.run(port, conns=int(os.environ["CONNS"]), sources=20,
                      period=float(os.environ["PERIOD"]), seconds=float(os.environ["DURATION"]))
    text = open(log.name).read()
    r["server_408"] = text.count("408 request_timeout")
    r["server_evictions"] = text.count("make room for a new client")
    r["server_429"] = text.count(" 429 too_many_connections")
    print(json.dumps(r, indent=1))
    ok = r["ok"] == r["requests"] > 0 and r["p99_s"] < 1.0
    print("normal client: %d/%d answered, p50 %.1f ms, p99 %.1f ms, max %.1f ms -> %s" % (
        r["ok"], r["requests"], r["p50_s"] * 1e3, r["p99_s"] * 1e3, r["max_s"] * 1e3,
        "PASS" if ok else "FAIL"))
finally:
    srv.send_signal(signal.SIGTERM)
    srv.wait(timeout=30)
    os.unlink(log.name)
sys.exit(0 if ok else 1)
PY
