"""The store's database backends (src/store/sqlite.c, pg.c) through the unit binary
build/tests/test_store_db: its battery on SQLite and on a real PostgreSQL server started here
(tests/e2e/pg_harness.py), a store this process cannot write (run as an unprivileged user when
we are root, since root writes anything) and PostgreSQL restarted under an open connection."""

import os
import re
import shutil
import sqlite3
import subprocess
import tempfile

from harness import BUILD, check, report, run
from pg_harness import PostgresServer, as_user, unprivileged_user

BIN = os.path.join(BUILD, "tests", "test_store_db")
APP_ID = 0x436C6152  # DB_APPLICATION_ID
PG = None


def counts(out):
    m = re.search(r"(\d+) passed, (\d+) failed", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, -1)


def run_bin(args=(), env=None, timeout=300, user=None):
    e = dict(os.environ)
    e.pop("CLARA_TEST_PG", None)
    e.update(env or {})
    argv = [BIN] + list(args)
    if user:
        argv = as_user(user[0], user[1], argv)
    r = subprocess.run(argv, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout


CORE = os.path.join(BUILD, "tests", "test_store_core")


def test_store_core():
    """The store above the database (selection, cache, replicas, export/import) on SQLite, then
    on PostgreSQL: two fresh databases (import goes from one to the other)."""
    env = dict(os.environ, CLARA_TEST_PG=PG.new_database("core_a"),
               CLARA_TEST_PG2=PG.new_database("core_b"))
    r = subprocess.run([CORE], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=600)
    p, f = counts(r.stdout)
    check(r.returncode == 0 and f == 0 and "not set" not in r.stdout,
          "the store core passes on SQLite and PostgreSQL (%d checks): %s" % (p, r.stdout[-2000:]))


def test_sqlite():
    rc, out = run_bin()
    p, f = counts(out)
    check(rc == 0 and f == 0 and p > 50, "the SQLite battery passes: %s" % out[-2000:])


def test_postgres():
    rc, out = run_bin(env={"CLARA_TEST_PG": PG.url})
    p, f = counts(out)
    check(rc == 0 and f == 0 and "postgresql" in out,
          "the battery passes on SQLite and PostgreSQL: %s" % out[-2000:])
    rc1, out1 = run_bin()
    check(p > counts(out1)[0], "PostgreSQL ran checks of its own (%d vs %d)" % (
        p, counts(out1)[0]))
    # run twice: the battery leaves the database as it found it
    rc, out = run_bin(env={"CLARA_TEST_PG": PG.url})
    check(rc == 0 and counts(out)[1] == 0, "a second run passes too: %s" % out[-1500:])


def make_store(path):
    """A clara store as the backend leaves it: its application_id, WAL mode, a table."""
    c = sqlite3.connect(path)
    c.execute("PRAGMA application_id = %d" % APP_ID)
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("CREATE TABLE clara_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    c.execute("INSERT INTO clara_meta VALUES ('schema_version', '1')")
    c.commit()
    c.close()


def test_readonly():
    """A store file this user cannot write, and a writable file in a directory it cannot write
    (WAL needs its -wal and -shm there): STORE_READONLY at open, naming the file."""
    uid, gid = unprivileged_user()
    owner = 0 if os.geteuid() == 0 else os.geteuid()
    d = tempfile.mkdtemp(prefix="clara-ro-")
    try:
        binary = os.path.join(d, "test_store_db")  # where the unprivileged user can run it
        shutil.copy(BIN, binary)
        os.chmod(binary, 0o755)
        cases = []
        for name, file_mode in (("readonly-file", 0o644), ("readonly-dir", 0o666)):
            sub = os.path.join(d, name)
            os.mkdir(sub)
            path = os.path.join(sub, "store.db")
            make_store(path)
            os.chmod(path, file_mode if owner == 0 else file_mode & 0o444)
            os.chmod(sub, 0o755 if owner == 0 else 0o555)
            cases.append((name, path))
        os.chmod(d, 0o755)
        for name, path in cases:
            before = open(path, "rb").read()
            r = subprocess.run(as_user(uid, gid, [binary, "--readonly", path]), cwd=d,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=60)
            p, f = counts(r.stdout)
            check(r.returncode == 0 and f == 0 and p >= 2,
                  "%s: opening it gives STORE_READONLY naming the file: %s" % (name, r.stdout))
            check(open(path, "rb").read() == before, "%s: the file is unchanged" % name)
    finally:
        for root, dirs, _ in os.walk(d):
            for x in dirs:
                os.chmod(os.path.join(root, x), 0o755)
        shutil.rmtree(d, ignore_errors=True)


def test_pg_restart():
    """PostgreSQL restarted under an open connection: the next statement may fail once with
    STORE_UNAVAILABLE, then works; a begin() after a restart reconnects by itself."""
    e = dict(os.environ, CLARA_TEST_PG=PG.url)
    p = subprocess.Popen([BIN, "--pg-restart"], env=e, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for _ in range(2):
            line = "-"
            while line and line != "ready\n":  # skip the messages of expected failures
                line = p.stdout.readline()
                lines.append(line)
            if not line:
                break
            PG.restart()
            p.stdin.write("go\n")
            p.stdin.flush()
        out, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = "".join(lines) + out
    pa, f = counts(out)
    check(p.returncode == 0 and f == 0 and pa >= 5 and lines.count("ready\n") == 2,
          "the connection recovers after PostgreSQL restarts: %s" % out[-1500:])


def main():
    global PG
    run(test_sqlite)
    run(test_readonly)
    PG = PostgresServer()
    try:
        run(test_postgres)
        run(test_store_core)
        run(test_pg_restart)
    finally:
        PG.cleanup()
    report("test_store_db")


if __name__ == "__main__":
    main()
