"""clara-server's memory under request bodies built to amplify a JSON tree parser (issue 16,
item 3): 64 concurrent bodies of ~4 MB (tests/e2e/json_memory_load.py: a million tiny numbers,
strings or objects, two million levels of nesting, maximal valid-looking requests refused only
after their last field, vectors refused only after decoding them, and two real maximal requests)
sent at once to the demo model's server, after one real maximal request has been answered (so
the model and its working buffers are in the baseline).

Checks: the peak resident memory (VmHWM, reset before the burst) stays below the baseline + 1 GiB;
VmRSS is back under the baseline + 100 MiB within 10 s; every request is answered with a JSON
2xx/4xx saying what was wrong; /health still answers 200. Under AddressSanitizer the bounds hold
as they are (its shadow is in the baseline). Under ThreadSanitizer the RSS figures are mostly its
shadow of every page touched (+979 MiB peak measured for this load), so only those two bounds are
skipped there, with the reason printed; everything else is checked, with longer timeouts."""

import os
import time

from harness import BUILD, check, report, run
from json_memory_load import MIX, bodies, burst, post_raw, reset_peak, settle
from server_harness import SLOW, Server, check_no_sanitizer_reports, cleanup

S = None
TSAN = os.environ.get("SANITIZER") == "thread" or "/tsan" in BUILD
MIB = 1024
PEAK_LIMIT_KB = 1024 * MIB
SETTLE_LIMIT_KB = 100 * MIB
SETTLE_S = 10

# what each kind must be answered with: status, error_type, a piece of the message
WANT = {
    "numbers": (422, "validation_error", "more than 4096 JSON values"),
    "strings": (422, "validation_error", "more than 4096 JSON values"),
    "objects": (422, "validation_error", "more than 4096 JSON values"),
    "nested": (422, "validation_error", "more than 16 deep"),
    "late": (422, "validation_error", "max_new_tokens"),
    "vectors": (422, "validation_error", "non-finite"),
}


def answered_well(kind, status, j):
    """The request got a JSON 2xx/4xx; the kinds refused by validation say why."""
    if status is None or not (200 <= status < 300 or 400 <= status < 500):
        return False
    if not isinstance(j, dict) or not isinstance(j.get("success"), bool):
        return False
    if kind == "valid":  # answered, or refused by a token limit of the request
        return status == 200 and j["success"] is True and isinstance(j.get("answer"), str) or (
            status == 422 and j["success"] is False)
    st, etype, text = WANT[kind]
    return status == st and j.get("error_type") == etype and text in j.get("error", "")


def test_amplification_burst():
    path, body = bodies()["valid"]
    st, j, err = post_raw(S.port, path, body, 600 if SLOW else 120)
    check(st == 200, "a maximal valid request (1,024 memories, %d bytes) answered: %s %s" % (
        len(body), st, err or str(j)[:200]))
    time.sleep(0.5)
    base = S.rss_kb()
    if not reset_peak(S.proc.pid):
        print("note: VmHWM cannot be reset here; the peak includes the warm-up")
    t0 = time.time()
    res = burst(S.port, MIX, timeout=900 if SLOW else 120)
    wall = time.time() - t0
    peak = S.rss_kb("VmHWM")
    took, rss = settle(S, base + SETTLE_LIMIT_KB, SETTLE_S)
    print("baseline %.0f MiB; 64 bodies of ~4 MB: peak %+.0f MiB, back under +100 MiB after %s "
          "(RSS then %+.0f MiB), burst %.1f s" % (
              base / MIB, (peak - base) / MIB, "%.1f s" % took if took is not None else "> 10 s",
              (rss - base) / MIB, wall))
    bad = [(k, st, err or str(j)[:160]) for k, st, j, err in res if not answered_well(k, st, j)]
    check(len(res) == len(MIX) == 64 and not bad,
          "all 64 answered with the right JSON 2xx/4xx (%d bad: %s)" % (len(bad), bad[:4]))
    if TSAN:
        print("skipped under ThreadSanitizer: the two RSS bounds (its shadow of every page the "
              "burst touched is in RSS)")
    else:
        check(peak - base < PEAK_LIMIT_KB,
              "peak RSS %+.0f MiB over the baseline, under +1024 MiB" % ((peak - base) / MIB))
        check(took is not None, "RSS back under the baseline + 100 MiB within %d s (%+.0f MiB)" % (
            SETTLE_S, (rss - base) / MIB))
    check(S.healthy(), "/health 200 after the burst")


def test_limits_named():
    """A text just over the value limit and one just over the depth limit are refused with
    the limit in the message, and ones just at the limits get past the scan."""
    items = ",".join(["1"] * 4094)  # root object + array + 4094 numbers = 4096 values
    st, j, _, _ = S.post("/compress", '{"memories":[%s]}' % items)
    # past the scan, pydantic's validation names each of the 4094 numbers and the missing
    # query (FastAPI's detail)
    check(st == 422 and len(j["detail"]) == 4095 and j["detail"][4093]["loc"] ==
          ["body", "memories", 4093] and j["detail"][0]["type"] == "string_type" and
          j["detail"][4094]["loc"] == ["body", "query"],
          "4096 values get past the scan (%s %s)" % (st, str(j)[:300]))
    st, j, _, _ = S.post("/compress", '{"memories":[%s,1]}' % items)
    check(st == 422 and j["error_type"] == "validation_error" and "4096" in j["error"],
          "4097 values refused, naming the limit (%s %s)" % (st, j))
    deep = '{"memories":["a"],"query":"q","x":%s}' % ("[" * 15 + "]" * 15)
    st, j, _, _ = S.post("/compress", deep.replace('"q"', '"q","max_new_tokens":1'))
    check(st == 200, "16 levels of nesting in an unknown field are fine (%s %s)" % (st, j))
    st, j, _, _ = S.post("/compress", deep.replace("[" * 15, "[" * 16).replace("]" * 15, "]" * 16))
    check(st == 422 and "16" in j["error"], "17 levels refused, naming the limit (%s %s)" % (st, j))


def main():
    global S
    try:
        # the token limit is raised so that the real maximal requests (1,024 full documents,
        # 265,219 tokens) are computed and their memory counts; long memories are cut, as the
        # reference does, so that they fit the context (chunked, they would not)
        S = Server("--keep-alive", "-1", "--max-conns-per-client", "200", "--max-connections",
                   "1024", "--max-request-tokens", "300000", "--compress-cut", "1")
        t0 = time.time()
        run(test_amplification_burst)
        run(test_limits_named)
        check(S.stop() == 0, "server exits 0 on SIGTERM")
        check_no_sanitizer_reports()
        print("memory tests took %.1f s" % (time.time() - t0))
    finally:
        cleanup()
    report("test_server_memory")


if __name__ == "__main__":
    main()
