"""The memory store survives clara-server being killed (SIGKILL) at random moments while clients
add memories, on SQLite and on a real PostgreSQL server (tests/e2e/pg_harness.py).

For each backend: writer threads add memories in a loop (one or several per request, short texts
and long ones that make several chunks, explicit and generated ids, metadata) while the test kills
the server 20-300 ms after each restart became ready, 50 times (CLARA_DURABILITY_KILLS), and
restarts it on the same --db. Every memory acknowledged with 201 is recorded with its text and
metadata. After each kill (server down) and at the end (after a clean stop):

- every acknowledged memory is there with its text, metadata and collection;
- nothing is half-written: every memory in the database came from a request we sent, with that
  request's text; the memories of one request (one transaction) are all there or none is; each
  memory has all n_chunks chunks (seq 0..n-1, each chunk's text the slice of the memory's text
  its byte range names), and each chunk exactly one f16 vector row of n_mem x n_embd values.
  SQLite: read with Python's sqlite3 module, read-only, plus PRAGMA integrity_check == ok.
  PostgreSQL: SQL through psql, plus the consistency of `clara memory export`;
- vectors never change: those exported the first time a memory is seen are compared with every
  later export; and independently, they are the f16 bits /v1/compress (dtype f16) gives for each
  chunk's text (the chunk texts cut from the export's byte ranges), on a separate oracle server
  with no store.
At the end the acknowledged memories are also listed through GET /v1/collections/{c}/memories.
Unacknowledged adds may or may not be there, but never partially.

CLARA_DURABILITY_KILLS sets the kills per backend; CLARA_DURABILITY_SEED the random seed."""

import base64
import http.client
import json
import os
import random
import sqlite3
import subprocess
import threading
import time

from harness import BUILD, CLARA, check, report, run
from pg_harness import PostgresServer
from server_harness import DEMO, TMP, Server, check_no_sanitizer_reports, cleanup

KILLS = int(os.environ.get("CLARA_DURABILITY_KILLS", "50"))
SEED = int(os.environ.get("CLARA_DURABILITY_SEED", str(int(time.time() * 1000) % 1000000)))
WRITERS = 3
COLLECTIONS = ("dur-a", "dur-b")
WORDS = ("river stone lantern copper meadow signal harbor violet engine thunder quiet orchard "
         "falcon ledger marble canyon velvet ember glacier compass café naïve Zürich 東京").split()
ORACLE = None


class Writers:
    """Writer threads adding memories to whatever server is up (self.port, None while down)."""

    def __init__(self, seed):
        self.port = None
        self.lock = threading.Lock()
        self.stop = False
        self.acked = {}      # (collection, id) -> (text, metadata)
        self.requests = []   # [(collection, [(id or None, text, metadata)], acked ids or None)]
        self.by_text = {}    # text -> (request index, collection, explicit id or None, metadata)
        self.in_flight_lost = 0  # requests that got no reply (the server died under them)
        self.other = []      # unexpected statuses
        self.threads = [threading.Thread(target=self.loop, args=(i, seed + i), daemon=True)
                        for i in range(WRITERS)]
        for t in self.threads:
            t.start()

    def text(self, rng, tag):
        long = rng.random() < 0.3
        n = rng.randint(300, 900) if long else rng.randint(3, 30)
        return tag + " " + " ".join(rng.choice(WORDS) for _ in range(n))

    def loop(self, w, seed):
        rng = random.Random(seed)
        n = 0
        while not self.stop:
            port = self.port
            if port is None:
                time.sleep(0.01)
                continue
            coll = rng.choice(COLLECTIONS)
            mems = []
            for _ in range(rng.choice((1, 1, 2, 3))):
                n += 1
                tag = "w%d-%d-%08x" % (w, n, rng.getrandbits(32))
                mid = tag if rng.random() < 0.5 else None
                meta = {"writer": w, "n": n} if rng.random() < 0.5 else None
                mems.append((mid, self.text(rng, tag), meta))
            with self.lock:
                ri = len(self.requests)
                self.requests.append((coll, mems, None))
                for mid, text, meta in mems:
                    self.by_text[text] = (ri, coll, mid, meta)
            body = {"memories": [dict({"text": t}, **({"id": i} if i else {}),
                                      **({"metadata": m} if m else {})) for i, t, m in mems]}
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                c.request("POST", "/v1/collections/%s/memories" % coll, body=json.dumps(body),
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                data = r.read()
                c.close()
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.in_flight_lost += 1
                time.sleep(0.005)
                continue
            if r.status != 201:
                with self.lock:
                    self.other.append((r.status, data[:200]))
                continue
            ids = [m["id"] for m in json.loads(data)["memories"]]
            with self.lock:
                self.requests[ri] = (coll, mems, ids)
                for (mid, text, meta), got in zip(mems, ids):
                    if mid:
                        assert got == mid
                    self.acked[(coll, got)] = (text, meta)

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join(120)


# ---- what is in the store ------------------------------------------------------------------------

def sqlite_rows(path):
    """{(collection, id): memory} read with the sqlite3 module, read-only; and integrity_check."""
    c = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        integrity = c.execute("PRAGMA integrity_check").fetchall()
        mems = {}
        for mid, coll, ext, text, meta, n in c.execute(
                "SELECT m.id, c.name, m.ext_id, m.text, m.metadata, m.n_chunks FROM memories m "
                "JOIN collections c ON c.id = m.collection_id"):
            mems[mid] = {"key": (coll, ext), "text": text, "metadata": meta, "n_chunks": n,
                         "chunks": []}
        orphans = 0
        for cid, mid, seq, bs, bl, ctext, nv, vbytes, vdtype in c.execute(
                "SELECT c.id, c.memory_id, c.seq, c.byte_start, c.byte_len, c.text, "
                "(SELECT count(*) FROM vectors v WHERE v.chunk_id = c.id), "
                "(SELECT length(data) FROM vectors v WHERE v.chunk_id = c.id), "
                "(SELECT dtype FROM vectors v WHERE v.chunk_id = c.id) "
                "FROM chunks c ORDER BY c.memory_id, c.seq"):
            if mid not in mems:
                orphans += 1
                continue
            mems[mid]["chunks"].append((seq, bs, bl, ctext, nv, vbytes, vdtype))
        orphans += c.execute("SELECT count(*) FROM vectors WHERE chunk_id NOT IN "
                             "(SELECT id FROM chunks)").fetchone()[0]
    finally:
        c.close()
    return integrity, {m["key"]: m for m in mems.values()}, orphans


def psql(pg, sql):
    r = subprocess.run([os.path.join(pg.bindir, "psql"), "-X", "-A", "-t", "-q", "-v",
                        "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user,
                        "-d", pg.dbname, "-c", sql], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError("psql failed: %s" % r.stdout)
    return r.stdout


def pg_problems(pg):
    """Rows of PostgreSQL that break the all-or-nothing rules (each a line of text)."""
    bad = psql(pg, """
        SELECT 'memory ' || m.ext_id || ' has ' || (SELECT count(*) FROM chunks c
               WHERE c.memory_id = m.id) || ' of ' || m.n_chunks || ' chunks'
          FROM memories m
         WHERE m.n_chunks <> (SELECT count(*) FROM chunks c WHERE c.memory_id = m.id)
            OR m.n_chunks - 1 <> (SELECT max(seq) FROM chunks c WHERE c.memory_id = m.id)
        UNION ALL
        SELECT 'chunk ' || c.id || ' has ' || (SELECT count(*) FROM vectors v
               WHERE v.chunk_id = c.id) || ' vector rows'
          FROM chunks c WHERE (SELECT count(*) FROM vectors v WHERE v.chunk_id = c.id) <> 1
        UNION ALL
        SELECT 'chunk ' || c.id || ' is not its byte range of the text'
          FROM chunks c JOIN memories m ON m.id = c.memory_id
         WHERE c.text <> convert_from(substring(convert_to(m.text, 'UTF8')
               FROM c.byte_start + 1 FOR c.byte_len), 'UTF8')
        UNION ALL
        SELECT 'orphan chunk ' || c.id FROM chunks c
         WHERE NOT EXISTS (SELECT 1 FROM memories m WHERE m.id = c.memory_id)
        UNION ALL
        SELECT 'vector row of chunk ' || v.chunk_id || ': ' || v.dtype || ', '
               || length(v.data) || ' bytes'
          FROM vectors v WHERE v.dtype <> 1 OR length(v.data) <> 16 * 64 * 2""")
    return [l for l in bad.splitlines() if l.strip()]


def export(db):
    r = subprocess.run([CLARA, "memory", "export", "--db", db], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=300)
    if r.returncode != 0:
        raise RuntimeError("clara memory export failed: %s" % r.stderr.decode()[-2000:])
    out = {}
    for line in r.stdout.decode().splitlines():
        j = json.loads(line)
        out[(j["collection"], j["id"])] = j
    return out


def chunk_texts(j):
    t = j["text"].encode()
    return [t[c["start"]:c["start"] + c["len"]].decode() for c in j["chunks"]]


def oracle_vectors(texts):
    """Each text's f16 vector bytes from /v1/compress of the oracle server (no store)."""
    out = []
    for i in range(0, len(texts), 32):
        part = texts[i:i + 32]
        st, j, _, _ = ORACLE.post("/v1/compress", {"documents": part, "dtype": "f16"},
                                  timeout=300)
        if st != 200:
            raise RuntimeError("oracle /v1/compress: %d %s" % (st, j))
        data = base64.b64decode(j["vectors"]["data"])
        per = len(data) // len(part)
        out += [data[k * per:(k + 1) * per] for k in range(len(part))]
    return out


class Verifier:
    def __init__(self, name, db, pg=None):
        self.name, self.db, self.pg = name, db, pg
        self.first_vectors = {}  # (collection, id) -> [bytes per chunk] of its first export
        self.failures = 0
        self.rounds = 0
        self.unacked_present = set()  # committed, but the reply was lost
        self.new = []  # memories first seen in this round: their vectors go to the oracle
        self.oracle_chunks = 0

    def fail(self, cond, msg):
        if not cond:
            self.failures += 1
            if self.failures <= 20:
                check(False, "%s: %s" % (self.name, msg))
        return cond

    def verify(self, w, when):
        """Checks the store (the server is down) against what the writers were told."""
        self.rounds += 1
        with w.lock:
            acked = dict(w.acked)
            requests = list(w.requests)
            by_text = dict(w.by_text)
        if self.pg is None:
            integrity, rows, orphans = sqlite_rows(self.db)
            self.fail(integrity == [("ok",)], "%s: PRAGMA integrity_check says %s" % (
                when, integrity))
            self.fail(orphans == 0, "%s: %d chunks or vector rows without their memory" % (
                when, orphans))
            for key, m in rows.items():
                ch = m["chunks"]
                tb = m["text"].encode()
                self.fail([c[0] for c in ch] == list(range(m["n_chunks"])),
                          "%s: %s has chunks %s of %d" % (when, key, [c[0] for c in ch],
                                                          m["n_chunks"]))
                for seq, bs, bl, ctext, nv, vbytes, vdtype in ch:
                    self.fail(tb[bs:bs + bl].decode(errors="replace") == ctext,
                              "%s: %s chunk %d is not its byte range" % (when, key, seq))
                    self.fail(nv == 1 and vbytes == 16 * 64 * 2 and vdtype == 1,
                              "%s: %s chunk %d has %d vector rows (%s bytes, dtype %s)" % (
                                  when, key, seq, nv, vbytes, vdtype))
        else:
            for p in pg_problems(self.pg)[:10]:
                self.fail(False, "%s: %s" % (when, p))
        exp = export(self.db)
        if self.pg is None:
            self.fail(set(exp) == set(rows), "%s: the export and the tables hold other "
                      "memories (%d vs %d)" % (when, len(exp), len(rows)))
        # every acknowledged memory, as acknowledged
        missing = [k for k in acked if k not in exp]
        self.fail(not missing, "%s: %d acknowledged memories are missing, e.g. %s" % (
            when, len(missing), missing[:3]))
        for k, (text, meta) in acked.items():
            if k in exp:
                self.fail(exp[k]["text"] == text, "%s: %s has another text" % (when, k))
                self.fail(exp[k]["metadata"] == meta, "%s: %s has metadata %r, not %r" % (
                    when, k, exp[k]["metadata"], meta))
        # nothing we did not send, nothing partial
        present_by_request = {}
        for k, j in exp.items():
            src = by_text.get(j["text"])
            if not self.fail(src is not None, "%s: %s holds a text no request sent" % (when, k)):
                continue
            ri, coll, mid, meta = src
            self.fail(coll == k[0] and (mid is None or mid == k[1]) and j["metadata"] == meta,
                      "%s: %s is not what its request sent" % (when, k))
            present_by_request.setdefault(ri, []).append(k)
            if k not in acked:
                self.unacked_present.add(k)
            self.check_export_line(k, j, when)
        for ri, keys in present_by_request.items():
            coll, mems, ids = requests[ri]
            self.fail(len(keys) == len(mems), "%s: request %d of %d memories is there in part "
                      "(%d)" % (when, ri, len(mems), len(keys)))
        self.check_oracle(exp, when)
        return exp

    def check_export_line(self, k, j, when):
        vs = j["vectors"]
        if not self.fail(len(vs) == 1 and vs[0]["dtype"] == "f16" and
                         len(vs[0]["data"]) == len(j["chunks"]) and len(j["chunks"]) >= 1,
                         "%s: %s exports %d chunks and vectors %s" % (
                             when, k, len(j["chunks"]),
                             [(v["dtype"], len(v["data"])) for v in vs])):
            return
        end = 0
        for c in j["chunks"]:
            self.fail(c["start"] >= end and c["len"] > 0 and
                      c["start"] + c["len"] <= len(j["text"].encode()),
                      "%s: %s has chunk ranges %s" % (when, k, j["chunks"]))
            end = c["start"] + c["len"]
        data = [base64.b64decode(d) for d in vs[0]["data"]]
        if k in self.first_vectors:
            self.fail(self.first_vectors[k] == data, "%s: the vectors of %s changed" % (when, k))
        else:
            self.first_vectors[k] = data
            self.new.append(k)

    def check_oracle(self, exp, when):
        """The vectors of the memories seen for the first time are /v1/compress's f16 bits."""
        keys, texts = [], []
        for k in self.new:
            for i, t in enumerate(chunk_texts(exp[k])):
                keys.append((k, i))
                texts.append(t)
        self.new = []
        if not texts:
            return
        got = oracle_vectors(texts)
        bad = [kk for kk, g in zip(keys, got) if self.first_vectors[kk[0]][kk[1]] != g]
        self.fail(not bad, "%s: %d chunks' stored vectors are not /v1/compress's f16 bits, "
                  "e.g. %s" % (when, len(bad), bad[:3]))
        self.oracle_chunks += len(texts)


def start(db):
    return Server("--model", DEMO, "--db", db, threads=2)


def durability(name, db, pg=None):
    rng = random.Random(SEED)
    v = Verifier(name, db, pg)
    srv = start(db)
    w = Writers(SEED * 7 + len(name))
    lost_before = 0
    kills = 0
    cycles_with_loss = 0
    t0 = time.time()
    try:
        for i in range(KILLS):
            w.port = srv.port
            time.sleep(rng.uniform(0.02, 0.3))
            srv.proc.kill()
            srv.proc.wait()
            w.port = None
            kills += 1
            # the writers' requests that were in flight fail now; wait until each has noticed
            time.sleep(0.05)
            with w.lock:
                if w.in_flight_lost > lost_before:
                    cycles_with_loss += 1
                lost_before = w.in_flight_lost
            v.verify(w, "after kill %d" % (i + 1))
            srv = start(db)
        w.port = srv.port
        time.sleep(0.3)
        w.port = None
        time.sleep(0.05)
        w.finish()
        # the acknowledged memories through the HTTP API of the restarted server
        for coll in COLLECTIONS:
            listed, after = set(), None
            while True:
                q = "?limit=1000" + ("&after=%s" % after if after else "")
                st, j, _, _ = srv.get("/v1/collections/%s/memories%s" % (coll, q))
                if st == 404:
                    break
                if not check(st == 200, "%s: listing %s answers %d %s" % (name, coll, st, j)):
                    break
                listed |= {(coll, m["id"]) for m in j["memories"]}
                after = j["next"]
                if not after:
                    break
            want = {k for k in w.acked if k[0] == coll}
            check(want <= listed, "%s: GET lists every acknowledged memory of %s (%d missing)" %
                  (name, coll, len(want - listed)))
        check(srv.stop() == 0, "%s: a clean stop at the end exits 0" % name)
        v.verify(w, "at the end")
    finally:
        w.stop = True
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
    dt = time.time() - t0
    n_req = len(w.requests)
    print("%s: %d kills in %.0f s; %d requests, %d memories acknowledged, %d requests lost in "
          "flight (in %d of the kills), %d unacknowledged memories present (whole), %d other "
          "replies, %d chunks checked against /v1/compress; seed %d" % (
              name, kills, dt, n_req, len(w.acked), w.in_flight_lost, cycles_with_loss,
              len(v.unacked_present - set(w.acked)), len(w.other), v.oracle_chunks, SEED))
    check(kills >= KILLS, "%s: killed %d times" % (name, kills))
    check(v.failures == 0, "%s: every check after every kill held (%d failures)" % (
        name, v.failures))
    check(not w.other, "%s: every reply was 201 (or none, the server dying): %s" % (
        name, w.other[:5]))
    # the test must have tested something: acknowledged writes, multi-chunk ones, kills that
    # caught requests in flight
    multi = sum(1 for k in v.first_vectors if len(v.first_vectors[k]) > 1)
    check(len(w.acked) >= KILLS, "%s: writes were acknowledged between kills (%d)" % (
        name, len(w.acked)))
    check(multi > 0, "%s: memories of several chunks were written (%d)" % (name, multi))
    check(cycles_with_loss >= KILLS // 5, "%s: kills caught requests in flight (%d of %d)" % (
        name, cycles_with_loss, kills))
    check(v.oracle_chunks >= len(v.first_vectors), "%s: every chunk checked against "
          "/v1/compress (%d chunks, %d memories)" % (name, v.oracle_chunks, len(v.first_vectors)))


def test_sqlite():
    durability("sqlite", os.path.join(TMP, "durability", "store.db"))


def test_postgres():
    pg = PostgresServer()
    try:
        durability("postgresql", pg.url, pg)
    finally:
        pg.cleanup()


if __name__ == "__main__":
    print("seed %d, %d kills per backend" % (SEED, KILLS))
    try:
        ORACLE = Server("--model", DEMO, "--db", "none", threads=2)
        run(test_sqlite)
        run(test_postgres)
        check_no_sanitizer_reports()
    finally:
        cleanup()
    report("test_store_durability")
