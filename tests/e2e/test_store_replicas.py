"""Scale-out: two clara-server replicas on one PostgreSQL server (tests/e2e/pg_harness.py) behind
a real nginx (Debian's /usr/sbin/nginx) that runs deploy/nginx.conf, its placeholders filled in
the way docs/DEPLOY.md says (so the shipped file is the one tested).

- shared store: memories added through replica 1, directly and through nginx, are listed alike by
  both replicas and nginx, read back one by one from replica 2, and a query on replica 2 gives the
  same answer and the same chosen memories as on replica 1; nginx spreads requests over both;
- caches: replica 2 has queried (its vector cache and collection index are warm); then replica 1
  adds, replaces and deletes memories; each time replica 2's next query shows the change in its
  `memories`, with the scores a freshly started server (empty cache) gives;
- the same on two servers sharing one SQLite file, where SQLite hands a deleted row's id to the
  next row: a chunk added after a delete must not get the deleted chunk's cached vectors;
- failover: writer threads add through nginx while replica 1 is killed with SIGKILL (several
  times, restarted on its port in between): every add answered 201 is afterwards read back through
  replica 2 with its text; the adds that were in flight on the killed replica are answered 502 or
  503, never 201; adds go on succeeding through replica 2.

nginx runs in a temporary prefix on a free loopback port, started by the test and stopped by its
PID; as root its workers run as the unprivileged test user."""

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from harness import ROOT, check, report, run
from pg_harness import PostgresServer, free_port, unprivileged_user
from server_harness import DEMO, TMP, Server, check_no_sanitizer_reports, cleanup

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
TEMPLATE = os.path.join(ROOT, "deploy", "nginx.conf")
INSTALL_HINT = ("nginx is not installed (%s): on Debian/Ubuntu `apt-get install nginx` "
                "(CI: .ci/install-deps)" % NGINX)
PG = None
QUERY = {"query": "Which river runs past the old mill?", "max_new_tokens": 8, "top_k": 16}


class Nginx:
    """deploy/nginx.conf with its placeholders filled in, run by the test in a temporary prefix."""

    def __init__(self, replicas):
        if not os.access(NGINX, os.X_OK):
            raise RuntimeError(INSTALL_HINT)
        self.prefix = tempfile.mkdtemp(prefix="clara-nginx-")
        os.chmod(self.prefix, 0o755)  # the workers (another user when we are root) enter it
        self.port = free_port()
        if os.geteuid() == 0:
            uid, _ = unprivileged_user()
            import pwd
            user = pwd.getpwuid(uid).pw_name
        else:
            user = getpass.getuser()
        subst = {"@USER@": user, "@LISTEN@": "127.0.0.1:%d" % self.port}
        for i, r in enumerate(replicas):
            subst["@REPLICA%d@" % (i + 1)] = "127.0.0.1:%d" % r
        conf = open(TEMPLATE).read()
        for k, v in subst.items():
            if k not in conf:
                raise RuntimeError("deploy/nginx.conf has no placeholder %s" % k)
            conf = conf.replace(k, v)
        body = "\n".join(l for l in conf.splitlines() if not l.lstrip().startswith("#"))
        left = re.findall(r"@[A-Z0-9_]+@", body)
        if left:
            raise RuntimeError("deploy/nginx.conf has placeholders the test does not fill: %s" %
                               left)
        self.conf = os.path.join(self.prefix, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.argv = [NGINX, "-p", self.prefix + "/", "-c", self.conf, "-e",
                     os.path.join(self.prefix, "error.log")]
        t = subprocess.run(self.argv + ["-t"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        if t.returncode != 0:
            raise RuntimeError("nginx -t refuses deploy/nginx.conf:\n%s" % t.stdout)
        self.proc = subprocess.Popen(self.argv + ["-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("nginx did not start: %s" % self.error_log())
        # a Server-like client for the proxy
        self.client = Server.__new__(Server)
        self.client.port = self.port

    def error_log(self):
        try:
            return open(os.path.join(self.prefix, "error.log")).read()[-3000:]
        except OSError:
            return "(no error.log)"

    def access_log(self):
        try:
            return open(os.path.join(self.prefix, "access.log")).read()
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)


def replica(db, port=0):
    args = ["--model", DEMO, "--db", db]
    if port:
        args += ["--port", str(port)]
    return Server(*args, threads=2)


def add(srv, coll, mems):
    st, j, _, _ = srv.post("/v1/collections/%s/memories" % coll, {"memories": mems}, timeout=120)
    check(st == 201, "adding %d memories to %s answers 201: %d %s" % (len(mems), coll, st, j))
    return [m["id"] for m in j["memories"]] if st == 201 else []


def listing(srv, coll):
    st, j, _, _ = srv.get("/v1/collections/%s/memories?limit=1000" % coll)
    return st, [(m["id"], m["text"], m["metadata"], m["chunks"], m["tokens"]) for m in
                j["memories"]] if st == 200 else j


def query(srv, coll, q=QUERY):
    st, j, _, _ = srv.post("/v1/collections/%s/query" % coll, q, timeout=120)
    if not check(st == 200, "query on :%d answers 200: %d %s" % (srv.port, st, j)):
        return None, []
    return j["answer"], [(m["id"], m["chunk"], m["text"], round(m["score"], 5))
                         for m in j["memories"]]


LONG = " ".join("The old mill stood by the river Avon in spring %d, grinding grain for the "
                "village." % i for i in range(60))


def test_shared_store():
    r1, r2 = replica(PG.url), replica(PG.url)
    ng = Nginx([r1.port, r2.port])
    try:
        ids = add(r1, "shared", [{"text": "The river Avon runs past the old mill.", "id": "avon"},
                                 {"text": LONG, "metadata": {"kind": "long"}},
                                 {"text": "Copper kettles hang in the mill's kitchen."}])
        ids += add(ng.client, "shared", [{"text": "The miller's daughter rows on the river."},
                                         {"text": "Swans nest below the weir.", "id": "swans"}])
        check(len(ids) == 5, "five memories added (through replica 1 and through nginx)")
        l1, l2, ln = listing(r1, "shared"), listing(r2, "shared"), listing(ng.client, "shared")
        check(l1[0] == 200 and len(l1[1]) == 5 and [m[0] for m in l1[1]] == ids,
              "replica 1 lists the five in the order added: %s" % (l1,))
        check(l2 == l1 and ln == l1, "replica 2 and nginx list exactly what replica 1 lists")
        check(any(m[3] > 1 for m in l1[1]), "the long memory has several chunks")
        for i in ids:
            st, j, _, _ = r2.get("/v1/collections/shared/memories/%s" % i)
            want = [m for m in l1[1] if m[0] == i][0]
            check(st == 200 and j["memory"]["text"] == want[1] and j["memory"]["chunks"] ==
                  want[3], "replica 2 reads %s as replica 1 wrote it" % i)
        a1, m1 = query(r1, "shared")
        a2, m2 = query(r2, "shared")
        check(a1 is not None and a1 == a2 and m1 == m2 and len(m1) >= 5,
              "the same query on both replicas: the same answer and memories (%r / %r)" % (a1,
                                                                                           a2))
        # nginx spreads over both replicas
        for _ in range(8):
            ng.client.get("/v1/collections/shared/memories?limit=1")
        ups = set(re.findall(r"upstream=(\S+)", ng.access_log()))
        want = {"127.0.0.1:%d" % r1.port, "127.0.0.1:%d" % r2.port}
        check(want <= ups, "nginx sent requests to both replicas (%s)" % ups)
    finally:
        ng.stop()
        r1.stop()
        r2.stop()


def caches(name, db):
    """Replica 2's caches follow replica 1's writes; its scores are a fresh server's."""
    r1, r2 = replica(db), replica(db)
    coll = "inv"
    try:
        add(r1, coll, [{"text": "The river Avon runs past the old mill.", "id": "avon"},
                       {"text": "Bees hum in the orchard behind the mill.", "id": "bees"}])
        _, before = query(r2, coll)
        _, again = query(r2, coll)  # now from its caches
        check(before == again and {m[0] for m in before} == {"avon", "bees"},
              "%s: replica 2 answers from both memories, twice alike" % name)
        # SQLite gives a new row the largest id when that row was deleted: heron's chunk has
        # the largest id when it is deleted, otter's chunk gets it next, and replacing otter (the
        # newest) deletes its chunk and inserts one in the same transaction
        steps = [
            ("add", lambda: add(r1, coll, [{"text": "A heron waits in the mill race.",
                                            "id": "heron"}]),
             lambda ms: "heron" in {m[0] for m in ms}),
            ("delete", lambda: r1.request("DELETE", "/v1/collections/%s/memories/heron" % coll),
             lambda ms: "heron" not in {m[0] for m in ms}),
            ("add after delete", lambda: add(r1, coll, [{"text": "Otters slide into the cold "
                                                         "millpond at dusk.", "id": "otter"}]),
             lambda ms: "otter" in {m[0] for m in ms}),
            ("replace", lambda: r1.request("PUT", "/v1/collections/%s/memories/otter" % coll,
                                           {"text": "Wasps hum in the orchard by the weir."}),
             lambda ms: any(m[0] == "otter" and m[2].startswith("Wasps") for m in ms)),
        ]
        for what, do, seen in steps:
            _, warm = query(r2, coll)  # replica 2's caches hold the state before the write
            do()
            _, after = query(r2, coll)
            check(seen(after), "%s: after replica 1's %s, replica 2's query shows it: %s" % (
                name, what, [(m[0], m[2][:20]) for m in after]))
            _, own = query(r1, coll)
            fresh = replica(db)
            try:
                _, truth = query(fresh, coll)
            finally:
                fresh.stop()
            check(after == truth and own == truth,
                  "%s: after the %s, both replicas' scores are a fresh server's: %s / %s / %s" %
                  (name, what, [(m[0], m[3]) for m in after], [(m[0], m[3]) for m in own],
                   [(m[0], m[3]) for m in truth]))
        # a collection deleted and made again: SQLite may give it the old one's id, and its
        # write count (the version caches are keyed by) starts again from 0
        for c, text in (("again", "Snow covers the mill wheel in winter."),
                        ("again", "Lanterns glow on the bridge at night.")):
            query(r2, coll)
            add(r1, c, [{"text": text, "id": "only"}])
            _, after = query(r2, c)
            check([(m[0], m[2]) for m in after] == [("only", text)],
                  "%s: replica 2 sees the collection's one memory as it is now: %s" % (
                      name, after))
            fresh = replica(db)
            try:
                _, truth = query(fresh, c)
            finally:
                fresh.stop()
            check(after == truth, "%s: with a fresh server's score: %s / %s" % (name, after,
                                                                               truth))
            st, _, _, _ = r1.request("DELETE", "/v1/collections/%s" % c)
            check(st == 200, "%s: the collection is deleted" % name)
    finally:
        r1.stop()
        r2.stop()


def test_caches_postgres():
    caches("postgresql", PG.url)


def test_caches_sqlite():
    caches("sqlite", os.path.join(TMP, "replicas", "store.db"))


def test_failover():
    r1, r2 = replica(PG.url), replica(PG.url)
    ng = Nginx([r1.port, r2.port])
    lock = threading.Lock()
    results = []  # (id, text, status)
    stop = [False]

    def writer(w):
        n = 0
        while not stop[0]:
            n += 1
            mid = "fo-%d-%d" % (w, n)
            text = "%s: the mill's ledger, page %d. " % (mid, n) + LONG[:400 * (n % 4 + 1)]
            try:
                st, _, _, _ = ng.client.post("/v1/collections/failover/memories",
                                             {"memories": [{"text": text, "id": mid}]},
                                             timeout=120)
            except OSError as e:
                st = "error %s" % e
            with lock:
                results.append((mid, text, st))

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    kills = 0
    caught = 0
    port1 = r1.port
    try:
        for cycle in range(8):
            # wait until nginx sends adds to replica 1 again (it leaves a failed replica out
            # for fail_timeout), then kill it under them
            served = r1.status()["requests_served"]
            deadline = time.time() + 60
            while time.time() < deadline and r1.status()["requests_served"] < served + 2:
                time.sleep(0.02)
            with lock:
                before = len(results)
            r1.proc.kill()
            r1.proc.wait()
            kills += 1
            # let the writers run on replica 2 alone for a while
            while True:
                with lock:
                    done = results[before:]
                if sum(1 for r in done if r[2] == 201) >= 8:
                    break
                time.sleep(0.02)
            with lock:
                caught = sum(1 for r in results if r[2] != 201)
            if caught >= 3 and cycle >= 2:
                break
            r1 = replica(PG.url, port1)
        stop[0] = True
        for t in threads:
            t.join(120)
    finally:
        stop[0] = True
        ng.stop()
    try:
        acked = [r for r in results if r[2] == 201]
        other = [r for r in results if r[2] != 201]
        print("failover: %d kills, %d adds answered 201, others: %s" % (
            kills, len(acked), sorted({str(r[2]) for r in other})))
        check(all(r[2] in (502, 503) for r in other),
              "adds not answered 201 were answered 502 or 503: %s" % [r[2] for r in other][:10])
        check(len(other) >= 1, "the kills caught adds in flight (%d)" % len(other))
        check(len(acked) >= 8 * kills, "adds went on through replica 2 (%d)" % len(acked))
        missing = []
        for mid, text, _ in acked:
            st, j, _, _ = r2.get("/v1/collections/failover/memories/%s" % mid)
            if st != 200 or j["memory"]["text"] != text:
                missing.append((mid, st))
        check(not missing, "every add answered 201 is there through replica 2: missing %s" %
              missing[:5])
        # the in-flight ones: stored whole or not at all
        for mid, text, _ in other:
            st, j, _, _ = r2.get("/v1/collections/failover/memories/%s" % mid)
            check(st == 404 or (st == 200 and j["memory"]["text"] == text),
                  "an add in flight at a kill (%s) is there whole or not at all: %d" % (mid, st))
    finally:
        if r1.proc.poll() is None:
            r1.stop()
        r2.stop()


if __name__ == "__main__":
    try:
        PG = PostgresServer()
        run(test_shared_store)
        run(test_caches_postgres)
        run(test_caches_sqlite)
        run(test_failover)
        check_no_sanitizer_reports()
    finally:
        if PG:
            PG.cleanup()
        cleanup()
    report("test_store_replicas")
