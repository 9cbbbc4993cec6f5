#!/usr/bin/env python3
"""json_memory.py - resident memory of clara-server under 64 concurrent ~4 MB request bodies (the
JSON memory-amplification load of tests/e2e/json_memory_load.py: bodies of a million tiny values,
deep nesting, maximal valid-looking requests refused late, vectors refused late, two real ones).

Starts $BUILD/clara-server (default build/) with the demo model, answers one maximal valid
request first so that the model and its working buffers are in the baseline, then for each round
resets the peak (VmHWM), sends the burst, and prints the peak above the baseline, how long RSS
took to come back under baseline + 100 MiB, RSS 10 s after the burst, the statuses and the wall
time. Extra arguments go to the server.

  bench/json_memory.py [--rounds N] [--kinds numbers,late,...] [-- SERVER ARGS...]
  BUILD=build/asan bench/json_memory.py"""

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from json_memory_load import MIX, bodies, burst, post_raw, reset_peak, settle  # noqa: E402
from server_harness import Server, cleanup  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kinds", help="comma-separated kinds, each repeated to 64 requests")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("server_args", nargs="*")
    a = ap.parse_args()
    mix = MIX
    if a.kinds:
        ks = a.kinds.split(",")
        mix = [ks[i % len(ks)] for i in range(64)]
    s = Server("--keep-alive", "-1", "--log-level", "warn", "--max-conns-per-client", "200",
               "--max-connections", "1024", "--max-request-tokens", "300000", "--compress-cut", "1",
               "--db", "none", *a.server_args,
               threads=a.threads)
    try:
        path, body = bodies()["valid"]
        st, _, err = post_raw(s.port, path, body, 300)
        if st != 200:
            print("warm-up request: %s %s" % (st, err))
        time.sleep(1)
        base = s.rss_kb()
        print("baseline RSS %.1f MiB (model loaded, one maximal request answered)" % (base / 1024))
        for r in range(a.rounds):
            if not reset_peak(s.proc.pid):
                print("cannot reset VmHWM: the peak includes everything before")
            t0 = time.time()
            res = burst(s.port, mix, timeout=300)
            wall = time.time() - t0
            peak = s.rss_kb("VmHWM")
            took, _ = settle(s, base + 100 * 1024, 10)
            time.sleep(max(0, 10 - (took or 10)))
            after = s.rss_kb()
            counts = collections.Counter("%s:%s" % (k, st) for k, st, _, _ in res)
            print("round %d: peak %+.0f MiB, back under +100 MiB after %s, RSS 10 s after %+.0f "
                  "MiB, wall %.1f s" % (r + 1, (peak - base) / 1024,
                                        "%.1f s" % took if took is not None else "> 10 s",
                                        (after - base) / 1024, wall))
            print("  statuses: " + ", ".join("%s x%d" % kv for kv in sorted(counts.items())))
    finally:
        cleanup()


if __name__ == "__main__":
    main()
