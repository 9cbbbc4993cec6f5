"""The JSON memory-amplification load shared by tests/e2e/test_server_memory.py and
bench/json_memory.py: bodies of ~4 MB (just under the default --max-body of 4 MiB) that cost a
tree parser far more memory than their size, bodies of maximal valid requests, a burst of them
sent at once over raw sockets, and the server's resident memory around it.

Kinds (each body is one request):
  numbers   {"memories": [1,1,1,...]}       ~2 M values, 2 bytes each
  strings   {"memories": ["","",...]}       ~1.3 M empty strings, 3 bytes each
  objects   {"memories": [{},{},...]}       ~1.3 M empty objects
  nested    {"a": [[[[...]]]]}               ~2 M levels of nesting
  late      1,024 memories of ~3.9 KB and a query, then "max_new_tokens": 0 as the last field:
            the whole tree is built before the request is refused (422)
  vectors   /v1/answer with f16 vectors of 1,024 documents whose very last value is +inf:
            the whole base64 string is decoded before the request is refused (422); 2.8 MB,
            as 1,024 documents of the demo model's 16 x 64 values are the most a request holds
  valid     1,024 memories of ~3.9 KB, max_new_tokens 1: a real request, answered (200)"""

import base64
import json
import re
import socket
import struct
import threading
import time

SIZE = 4_000_000  # bytes per amplifying body; the default --max-body is 4,194,304
N_DOCS = 1024
DOC = ("Paris is the capital of France and the seat of its government. " * 80)[:3900]


def _fill(head, unit, tail, size=SIZE):
    n = (size - len(head) - len(tail)) // len(unit)
    return head + unit * (n - 1) + unit.rstrip(b",") + tail


def vectors_body(n_mem, n_embd):
    """A /v1/answer body with f16 vectors of N_DOCS documents; the last value is +inf."""
    count = N_DOCS * n_mem * n_embd
    raw = bytearray(struct.pack("<e", 0.25) * count)
    raw[-2:] = struct.pack("<H", 0x7C00)
    data = base64.b64encode(bytes(raw)).decode()
    return json.dumps({"query": "Where?", "max_new_tokens": 1,
                       "vectors": {"dtype": "f16", "shape": [N_DOCS, n_mem, n_embd],
                                   "data": data}}).encode()


def bodies(n_mem=16, n_embd=64):
    """kind -> (path, body); n_mem and n_embd are the demo model's."""
    docs = json.dumps([DOC] * N_DOCS)
    depth = SIZE // 2 - 10
    return {
        "numbers": ("/compress", _fill(b'{"memories":[', b"1,", b'],"query":"q"}')),
        "strings": ("/compress", _fill(b'{"memories":[', b'"",', b'],"query":"q"}')),
        "objects": ("/compress", _fill(b'{"memories":[', b"{},", b'],"query":"q"}')),
        "nested": ("/compress", b'{"a":' + b"[" * depth + b"]" * depth + b"}"),
        "late": ("/compress",
                 ('{"memories":%s,"query":"Where?","max_new_tokens":0}' % docs).encode()),
        "vectors": ("/v1/answer", vectors_body(n_mem, n_embd)),
        "valid": ("/compress",
                  ('{"memories":%s,"query":"Where?","max_new_tokens":1}' % docs).encode()),
    }


# 64 requests: mostly the amplifying kinds, a few real ones (each costs ~3 s of compute on
# 2 threads with the demo model, so only 2).
MIX = (["numbers"] * 12 + ["strings"] * 12 + ["objects"] * 10 + ["nested"] * 6 + ["late"] * 14 +
       ["vectors"] * 8 + ["valid"] * 2)


def post_raw(port, path, body, timeout):
    """One POST over its own connection; returns (status, parsed JSON or None, error)."""
    req = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (path.encode(), len(body)))
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as e:
        return None, None, repr(e)
    out = b""
    try:
        s.sendall(req + body)
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except OSError as e:
        if not out:
            return None, None, repr(e)
    finally:
        s.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3})", out)
    head, _, payload = out.partition(b"\r\n\r\n")
    try:
        j = json.loads(payload)
    except ValueError:
        j = None
    return (int(m.group(1)) if m else None), j, None if m else "no status line: %r" % out[:60]


def burst(port, kinds, timeout=120):
    """Sends one request per entry of kinds at once; returns [(kind, status, json, error)]."""
    all_bodies = bodies()
    results = [None] * len(kinds)
    gate = threading.Barrier(len(kinds))

    def one(i):
        path, body = all_bodies[kinds[i]]
        gate.wait()
        results[i] = (kinds[i],) + post_raw(port, path, body, timeout)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(kinds))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results


def reset_peak(pid):
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def settle(server, limit_kb, timeout):
    """Polls VmRSS until it is at most limit_kb; returns (seconds taken or None, last RSS kB)."""
    t0 = time.time()
    while True:
        rss = server.rss_kb()
        if rss <= limit_kb:
            return time.time() - t0, rss
        if time.time() - t0 > timeout:
            return None, rss
        time.sleep(0.1)
