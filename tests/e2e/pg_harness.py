"""A real PostgreSQL server for the tests, on loopback, in a temporary directory.

    pg = PostgresServer()      # initdb + start; pg.url = postgresql://clara@127.0.0.1:PORT/clara
    pg.restart()               # stop and start again: same port, same data
    pg.stop()                  # fast shutdown (clients are disconnected)
    pg.cleanup()               # stop and remove everything (also done at exit)

It never skips: without PostgreSQL's server binaries it raises, saying how to install them.

initdb refuses to run as root, and CI runs as root. Then the server runs as the unprivileged
system user `clara-test` (created here with useradd when it does not exist), through setpriv,
which (unlike su or runuser) needs no PAM or login shell in a bare container; its directory is
chowned to that user. A developer running the tests as themselves runs the server as themselves.

Durability: initdb --no-sync only skips flushing the freshly created cluster (nothing to lose in
a test cluster); the server itself keeps fsync and synchronous_commit on, as in production, so
that a test that kills clara-server mid-write sees what a real deployment would."""

import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

TEST_USER = "clara-test"
INSTALL_HINT = ("PostgreSQL's server binaries (initdb, postgres, pg_isready) are not installed: "
                "on Debian/Ubuntu `apt-get install postgresql` (CI: .ci/install-deps)")


def find_bindir():
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and postgres (or PG_BINDIR)."""
    cands = [os.environ["PG_BINDIR"]] if os.environ.get("PG_BINDIR") else []
    found = glob.glob("/usr/lib/postgresql/*/bin")
    found.sort(key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
    cands += reversed(found)
    for d in cands:
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "postgres",
                                                                 "pg_isready")):
            return d
    raise RuntimeError(INSTALL_HINT)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unprivileged_user():
    """(uid, gid) to run the server as: ourselves, or clara-test when we are root."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", TEST_USER], check=True)
        pw = pwd.getpwnam(TEST_USER)
    return pw.pw_uid, pw.pw_gid


def as_user(uid, gid, argv):
    """argv run as uid/gid (through setpriv when that means dropping root)."""
    if os.geteuid() != 0 or uid == 0:
        return argv
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups", "--"] + argv


def chown_tree(path, uid, gid):
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.chown(os.path.join(root, n), uid, gid, follow_symlinks=False)


class PostgresServer:
    def __init__(self, user="clara", dbname="clara"):
        self.bindir = find_bindir()
        self.uid, self.gid = unprivileged_user()
        self.dir = tempfile.mkdtemp(prefix="clara-pg-")
        self.data = os.path.join(self.dir, "data")
        self.sockdir = os.path.join(self.dir, "sock")
        self.log = os.path.join(self.dir, "postgres.log")
        os.mkdir(self.sockdir)
        chown_tree(self.dir, self.uid, self.gid)
        self.user, self.dbname = user, dbname
        self.port = free_port()
        self.proc = None
        atexit.register(self.cleanup)
        self._initdb()
        self.start()
        self._psql("postgres", "CREATE DATABASE %s" % dbname)
        self.url = "postgresql://%s@127.0.0.1:%d/%s" % (user, self.port, dbname)

    def new_database(self, name):
        """Another empty database on this server; returns its URL."""
        self._psql("postgres", "CREATE DATABASE %s" % name)
        return "postgresql://%s@127.0.0.1:%d/%s" % (self.user, self.port, name)

    def _bin(self, name):
        return os.path.join(self.bindir, name)

    def _run(self, argv, **kw):
        return subprocess.run(as_user(self.uid, self.gid, argv), cwd=self.dir,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)

    def _initdb(self):
        r = self._run([self._bin("initdb"), "-D", self.data, "-A", "trust", "-U", self.user,
                       "-E", "UTF8", "--locale=C", "--no-sync"])
        if r.returncode != 0:
            raise RuntimeError("initdb failed (%d):\n%s" % (r.returncode, r.stdout))

    def start(self, timeout=30):
        """Starts the server on self.port and waits until it accepts connections."""
        logf = open(self.log, "a")
        argv = [self._bin("postgres"), "-D", self.data, "-k", self.sockdir, "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on",
                "-c", "synchronous_commit=on", "-c", "max_connections=50"]
        self.proc = subprocess.Popen(as_user(self.uid, self.gid, argv), cwd=self.dir,
                                     stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited with %d:\n%s" % (self.proc.returncode,
                                                                     self.log_tail()))
            r = subprocess.run([self._bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                                str(self.port), "-U", self.user, "-d", "postgres"])
            if r.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("postgres did not accept connections in %d s:\n%s" % (
            timeout, self.log_tail()))

    def stop(self, timeout=30):
        """Fast shutdown (SIGINT): sessions are ended, committed data is on disk."""
        if not self.proc or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n=30):
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def _psql(self, db, sql):
        psql = self._bin("psql") if os.access(self._bin("psql"), os.X_OK) else "psql"
        r = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                            "-p", str(self.port), "-U", self.user, "-d", db, "-c", sql],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError("psql %r failed: %s" % (sql, r.stdout))
        return r.stdout
