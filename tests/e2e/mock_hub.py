"""A mock of the Hugging Face Hub's download side, on loopback, for `clara pull`'s tests and the
7B pull benchmark. It serves directories as repositories under the Hub's URL layout:

    GET /api/models/OWNER/NAME/revision/REV[?blobs=true]   {"id", "sha", "siblings": [{"rfilename",
                                                            "size", "blobId", "lfs": {"sha256",
                                                            "size", "pointerSize"}}]}
    GET|HEAD /OWNER/NAME/resolve/REV/PATH                   LFS files: 302 to /cdn/SHA256/NAME with
                                                            X-Repo-Commit, X-Linked-Etag,
                                                            X-Linked-Size, ETag; others: 200
    GET /cdn/SHA256/NAME                                    the bytes, Range -> 206 + Content-Range

Errors as the Hub gives them: 404 with X-Error-Code RepoNotFound / RevisionNotFound /
EntryNotFound; a gated repository answers 401 without a token and 403 with a wrong one
(X-Error-Code: GatedRepo). Faults a test switches on (Faults below): drop the connection after N
bytes, wrong bytes, a storm of 500s, a stall, a slow link. Every request is logged with the
bytes of body it sent.

    /usr/bin/python3 tests/e2e/mock_hub.py --repo OWNER/NAME=DIR [--repo ...] [--gated OWNER/NAME]
        [--token T] [--port-file F]     (runs until killed; prints the port)
"""

import argparse
import hashlib
import http.server
import json
import os
import sys
import threading
import time
import urllib.parse

LFS_SUFFIXES = (".safetensors", ".pth", ".gguf", ".bin", ".model")


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git_blob_sha1(path):
    data = open(path, "rb").read()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    """A directory served as a repository: every file under it (links followed)."""

    def __init__(self, repo_id, root, gated=False, commit=None):
        self.id = repo_id
        self.gated = gated
        self.commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
        self.files = {}  # path -> dict(local, size, sha256 or None, lfs)
        for dirpath, _, names in os.walk(root, followlinks=True):
            for n in sorted(names):
                local = os.path.join(dirpath, n)
                rel = os.path.relpath(local, root).replace(os.sep, "/")
                self.add(rel, local)

    def add(self, rel, local, declared_size=None):
        lfs = rel.endswith(LFS_SUFFIXES)
        size = os.path.getsize(local)
        self.files[rel] = dict(local=local, size=size, lfs=lfs,
                               sha256=_sha256_file(local) if lfs else None,
                               blob=_git_blob_sha1(local) if not lfs else None,
                               declared=declared_size)

    def sibling(self, rel):
        f = self.files[rel]
        size = f["declared"] or f["size"]
        s = {"rfilename": rel, "size": size,
             "blobId": f["blob"] or hashlib.sha1(rel.encode()).hexdigest()}
        if f["lfs"]:
            s["lfs"] = {"sha256": f["sha256"], "size": size, "pointerSize": 134}
        return s


class Faults:
    """Switchable misbehaviour, keyed by a file's repository path (or "api" for the listing)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.drop_after = {}   # path -> [bytes, times]: close the connection after bytes
        self.corrupt = set()   # paths whose bytes are served altered (sha256 mismatch)
        self.storm = {}        # path or "api" -> [status, times] (times < 0: always)
        self.stall = {}        # path -> seconds to sleep after the headers
        self.rate = 0          # bytes per second of file bodies, 0 = unlimited
        self.ignore_range = False

    def take(self, table, key):
        """The fault for key, counting one use down; None when none is left."""
        v = table.get(key)
        if not v or v[1] == 0:
            return None
        if v[1] > 0:
            v[1] -= 1
        return v[0]


class Hub:
    def __init__(self, token=None):
        self.repos = {}
        self.token = token
        self.faults = Faults()
        self.log = []  # dicts: method, path, range, status, sent, file
        self.lock = threading.Lock()
        self.server = None
        self.thread = None

    def add_repo(self, repo):
        self.repos[repo.id] = repo
        return repo

    def by_sha(self, sha):
        for r in self.repos.values():
            for rel, f in r.files.items():
                if f["sha256"] == sha:
                    return r, rel, f
        return None, None, None

    def start(self):
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def requests(self, file=None):
        with self.lock:
            return [e for e in self.log if file is None or e.get("file") == file]

    def sent_bytes(self, file):
        return sum(e["sent"] for e in self.requests(file) if e["kind"] == "cdn")


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # clients that hang up (a cancelled pull, a timeout) are part of the tests
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    hub = None
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _record(self, kind, status, sent=0, file=None):
        with self.hub.lock:
            self.hub.log.append(dict(method=self.command, path=self.path, kind=kind, status=status,
                                     sent=sent, file=file, range=self.headers.get("Range"),
                                     auth=self.headers.get("Authorization")))

    def _error(self, status, code=None, message=None, kind="api", file=None):
        body = json.dumps({"error": message or code or "error"}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        if message:
            self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._record(kind, status, file=file)

    def _auth_ok(self, repo):
        if not repo.gated:
            return True
        got = self.headers.get("Authorization")
        if not got:
            self._error(401, "GatedRepo", "Access to model %s is restricted. You must have access "
                        "to it and be authenticated to access it. Please log in." % repo.id)
            return False
        if got != "Bearer %s" % self.hub.token:
            self._error(403, "GatedRepo", "Access to model %s is restricted and you are not in the "
                        "authorized list." % repo.id)
            return False
        return True

    def _repo(self, owner, name, rev, file=None):
        repo = self.hub.repos.get("%s/%s" % (owner, name))
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", file=file)
            return None
        if not self._auth_ok(repo):
            return None
        if rev not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", "Invalid rev id: %s" % rev, file=file)
            return None
        return repo

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in u.path.split("/")[1:]]
        if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "revision":
            return self._revision(parts[2], parts[3], "/".join(parts[5:]))
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(parts[0], parts[1], parts[3], "/".join(parts[4:]))
        if len(parts) == 3 and parts[0] == "cdn":
            return self._cdn(parts[1])
        self._error(404, None, "no such route")

    def _revision(self, owner, name, rev):
        storm = self.hub.faults.take(self.hub.faults.storm, "api")
        if storm:
            return self._error(storm, None, "internal error")
        repo = self._repo(owner, name, rev)
        if not repo:
            return
        body = json.dumps({"id": repo.id, "sha": repo.commit,
                           "siblings": [repo.sibling(p) for p in sorted(repo.files)]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self._record("api", 200, len(body))

    def _resolve(self, owner, name, rev, path):
        repo = self._repo(owner, name, rev, file=path)
        if not repo:
            return
        f = repo.files.get(path)
        if f is None:
            return self._error(404, "EntryNotFound", "%s does not exist on %s" % (path, rev),
                               kind="resolve", file=path)
        storm = self.hub.faults.take(self.hub.faults.storm, path)
        if storm:
            return self._error(storm, None, "internal error", kind="resolve", file=path)
        if f["lfs"]:
            self.send_response(302)
            self.send_header("Location", "/cdn/%s/%s" % (f["sha256"], os.path.basename(path)))
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("X-Linked-Etag", '"%s"' % f["sha256"])
            self.send_header("X-Linked-Size", str(f["declared"] or f["size"]))
            self.send_header("ETag", '"%s"' % f["sha256"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return self._record("resolve", 302, file=path)
        self._body(f, path, "resolve", {"X-Repo-Commit": repo.commit, "ETag": '"%s"' % f["blob"]})

    def _cdn(self, sha):
        repo, rel, f = self.hub.by_sha(sha)
        if f is None:
            return self._error(404, None, "no such object", kind="cdn")
        self._body(f, rel, "cdn", {})

    def _body(self, f, rel, kind, headers):
        faults = self.hub.faults
        size = f["size"]
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and not faults.ignore_range:
            first = rng[6:].split("-")[0]
            start = int(first) if first else 0
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return self._record(kind, 416, file=rel)
        status = 206 if start > 0 else 200
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if self.command == "HEAD":
            return self._record(kind, status, file=rel)
        stall = faults.stall.get(rel)
        if stall:
            time.sleep(stall)
        drop = faults.take(faults.drop_after, rel)
        sent = 0
        try:
            with open(f["local"], "rb") as src:
                src.seek(start)
                pos = start
                t0 = time.monotonic()
                while pos < size:
                    chunk = src.read(min(1 << 16, size - pos, faults.rate or (1 << 16)))
                    if not chunk:
                        break
                    if rel in faults.corrupt:
                        chunk = bytes(b ^ 0x5A for b in chunk)
                    if drop is not None and sent + len(chunk) > drop:
                        chunk = chunk[:max(0, drop - sent)]
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    pos += len(chunk)
                    if drop is not None and sent >= drop:
                        self.wfile.flush()
                        self.close_connection = True
                        break
                    if faults.rate:
                        ahead = sent / faults.rate - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self._record(kind, status, sent, file=rel)
        if drop is not None:
            try:
                self.connection.shutdown(2)
            except OSError:
                pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", action="append", default=[], help="OWNER/NAME=DIR")
    ap.add_argument("--gated", action="append", default=[])
    ap.add_argument("--token")
    ap.add_argument("--port-file")
    a = ap.parse_args(argv)
    hub = Hub(token=a.token)
    for spec in a.repo:
        rid, _, d = spec.partition("=")
        hub.add_repo(Repo(rid, d, gated=rid in a.gated))
    hub.start()
    port = hub.server.server_address[1]
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        os.replace(a.port_file + ".tmp", a.port_file)
    print("mock hub on %s" % hub.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    hub.stop()


if __name__ == "__main__":
    sys.exit(main())
