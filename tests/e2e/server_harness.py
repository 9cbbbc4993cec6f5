"""What every server suite needs: the real build/clara-server started on a free loopback port
(--port 0, the port read from its "listening on" line), requests over real HTTP, raw sockets, the
metrics, and cleanup that kills every server a suite started (call cleanup() in a finally)."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import BUILD, CLARA, ROOT, check

SERVER = os.path.join(BUILD, "clara-server")
DEMO = os.path.join(BUILD, "demo", "clara-demo.gguf")
TMP = tempfile.mkdtemp(prefix="clara-server-test-")
SLOW = bool(os.environ.get("SANITIZER")) or any(s in BUILD for s in ("/tsan", "/asan", "/ubsan"))
SANITIZER_REPORT = re.compile(r"(ERROR|WARNING): (Address|Thread)Sanitizer|runtime error|"
                              r"LeakSanitizer")
_servers = []


# A random ~1B q4_0 pair, slow enough (~30 ms a token on 2 cores) to watch tokens arrive one by
# one; the demo model makes 256 tokens in ~0.1 s, which a reader can receive in one piece. Shared
# by the sanitizer builds (build/asan, build/tsan): one generated model.
BIG = os.path.join(ROOT, "build", "openai-1b-q4_0")


def big_model():
    """The server arguments of the 1B pair, generated once with `clara bench --generate`."""
    if not os.path.exists(os.path.join(BIG, "clara.gguf")):
        p = subprocess.run([CLARA, "bench", "--generate", "1b", "--type", "q4_0", "--out", BIG,
                            "--quiet"], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("clara bench --generate failed: " + p.stderr[-2000:])
    return ["--base", os.path.join(BIG, "base.gguf"), "--clara", os.path.join(BIG, "clara.gguf")]


# Twenty short facts, memories of the store suites and the web page's test.
FACTS = ["Paris is the capital of France.", "The Seine flows through Paris.",
         "The Louvre is a museum in Paris.", "Berlin is the capital of Germany.",
         "Madrid is the capital of Spain.", "Rome is the capital of Italy.",
         "The Danube flows through Vienna.", "Lisbon lies on the Atlantic coast.",
         "Alice has a dog named Max.", "Alice works as a nurse.",
         "Bob plays the violin on Sundays.", "Bob lives in Lyon.",
         "The train to Marseille leaves at eight.", "Coffee is served until noon.",
         "The library closes at six on Saturdays.", "Tea grows in the hills of Darjeeling.",
         "Mount Blanc is the highest peak of the Alps.", "Oslo is the capital of Norway.",
         "The meeting moved to Thursday.", "Carol prefers green tea to coffee."]


# CLARA_TEST_BACKEND=vulkan runs the servers of a suite with --backend vulkan (tests/run_tests.sh
# does so for test_server.py where the Vulkan backend is built), unless a test gives --backend
TEST_BACKEND = os.environ.get("CLARA_TEST_BACKEND", "")
# How long a request may take: on a Vulkan device that may be lavapipe (a submit and wait per
# operation on the CPU), a 40-document compression takes over 30 s on 2 cores
REQUEST_TIMEOUT = 300 if TEST_BACKEND == "vulkan" else 30
try:
    with open(os.path.join(BUILD, "gen", "vulkan.stamp")) as _f:
        VULKAN_BUILT = _f.read().strip() == "on"
except OSError:
    VULKAN_BUILT = False


class Server:
    def __init__(self, *args, env=None, threads=2, cwd=None):
        self.log = os.path.join(TMP, "server-%d.log" % len(_servers))
        e = {k: v for k, v in os.environ.items() if not k.startswith("CLARA_")}
        # ThreadSanitizer sleeps 1 s at exit by default (to catch races in atexit handlers),
        # which the exit-time bounds would count; no other option changes
        e.setdefault("TSAN_OPTIONS", "atexit_sleep_ms=0")
        # the default memory store lives under XDG_DATA_HOME: one per server, never the user's
        e["XDG_DATA_HOME"] = os.path.join(TMP, "data-%d" % len(_servers))
        e.update(env or {})
        if TEST_BACKEND and "--backend" not in args and "CLARA_BACKEND" not in e:
            args = ("--backend", TEST_BACKEND) + tuple(args)
        self.proc = subprocess.Popen([os.path.abspath(SERVER), "--port", "0", "--threads", str(threads)] +
                                     list(args), stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "w"), env=e, cwd=cwd)
        _servers.append(self)
        self.port = None
        deadline = time.time() + 30
        while time.time() < deadline and self.proc.poll() is None:
            m = re.search(r"listening on http://[^ ]*:(\d+)", self.text())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.02)
        if self.port is None:
            raise RuntimeError("server did not start: " + self.text()[-2000:])

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def request(self, method, path, body=None, headers=None, timeout=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout or REQUEST_TIMEOUT)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode()
            h = {"Content-Type": "application/json"} if body is not None else {}
            h.update(headers or {})
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            try:
                j = json.loads(data)
            except ValueError:
                j = None
            return r.status, j, dict((k.lower(), v) for k, v in r.getheaders()), data
        finally:
            c.close()

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def status(self):
        return self.get("/status")[1]

    def healthy(self):
        return self.get("/health")[0] == 200

    def rss_kb(self, field="VmRSS"):
        with open("/proc/%d/status" % self.proc.pid) as f:
            m = re.search(r"^%s:\s+(\d+) kB" % field, f.read(), re.M)
        return int(m.group(1))

    def wait(self, timeout=120):
        """The exit status, or None if the process is still running after `timeout` s."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def raw_request(port, data, timeout=10, read=True, host="127.0.0.1", source=None):
    """Sends raw bytes; returns everything the server sends until it closes (or the timeout)."""
    s = socket.create_connection((host, port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    try:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not b:
                break
            out += b
        return out
    finally:
        s.close()


def wait_for(fn, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if fn():
            return True
        time.sleep(0.05)
    return fn()


def metric(server, name):
    m = re.search(r"^%s (\d+)" % re.escape(name), server.get("/metrics")[3].decode(), re.M)
    return int(m.group(1)) if m else None


def check_no_sanitizer_reports():
    errs = [s for s in _servers if SANITIZER_REPORT.search(s.text())]
    # the logs go with the temporary directory: the failure shows the first report
    first = ""
    if errs:
        t = errs[0].text()
        first = "\n" + t[SANITIZER_REPORT.search(t).start():][:6000]
    check(not errs, "no sanitizer reports in server logs (%s)%s" % ([s.log for s in errs], first))


def cleanup():
    for s in _servers:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
    shutil.rmtree(TMP, ignore_errors=True)
