"""`clara memory` (cli/cmd_memory.c) on real stores: a SQLite file, and a real PostgreSQL server
started here (pg_harness.py) for import/export between backends.

Truths: what was added (texts, --file contents), the real clara-server's query reply on the same
store and model, `clara tokenize` and the exported byte ranges for chunks, and the exported lines
themselves (an export -> import -> export round trip must be byte-identical, vectors included).

Covers: add (--text, --file, long text -> chunks), list (collections, memories, paging), get, rm
(one, --all), query (== the server's query), reindex with another model (then a query recompresses
nothing), export -> import into another SQLite file and into PostgreSQL, import --skip-existing,
and clear errors (exit 1 and a message) for a missing collection, a bad --db and a corrupt
import line."""

import json
import os
import re
import shutil
import time

from harness import check, report, run
from server_harness import DEMO, Server, check_no_sanitizer_reports, cleanup
from store_harness import OUT, PASSAGES, export, long_text, memory, model, n_tokens, new_db

MODEL = ["--model", DEMO, "--threads", "2"]
STATE = {}


def ok(args, db, what, stdin=None):
    rc, out, err = memory(args, db, stdin=stdin)
    check(rc == 0, "%s: exit %d: %s" % (what, rc, err.strip()[-300:]))
    return out, err


def fails(args, db, what, pattern):
    rc, out, err = memory(args, db)
    check(rc == 1 and re.search(pattern, err) and not out.strip(),
          "%s -> exit 1 and /%s/ (exit %d, %r, out %r)" % (what, pattern, rc, err.strip()[-300:],
                                                           out[:80]))


def test_add_list_get_rm():
    db = new_db("sqlite", "cli")
    STATE["db"] = db
    ids = []
    for i, t in enumerate(PASSAGES[:4]):
        out, _ = ok(["add", "--collection", "notes", "--text", t, "--dtype", "f32",
                     "--metadata", json.dumps({"i": i})] + MODEL, db, "add %d" % i)
        m = re.fullmatch(r"added ([0-9a-f]{32}) to notes \(1 chunk\)\n", out)
        check(m, "add prints the id: %r" % out)
        ids.append(m.group(1) if m else None)
    path = os.path.join(OUT, "long.txt")
    lt = long_text(800, seed=7)
    with open(path, "w") as f:
        f.write(lt)
    out, _ = ok(["add", "--collection", "notes", "--file", path, "--id", "long", "--json",
                 "--dtype", "f32"] + MODEL, db, "add --file")
    j = json.loads(out) if out.strip() else {}
    check(j.get("id") == "long" and j.get("chunks", 0) >= 3, "add --file long text: %s" % j)
    line = [json.loads(x) for x in export(db, "notes") if json.loads(x)["id"] == "long"][0]
    pieces = [lt.encode()[c["start"]:c["start"] + c["len"]].decode() for c in line["chunks"]]
    check(len(pieces) == j.get("chunks") and "".join(pieces) == lt and
          max(n_tokens(DEMO, pieces)) <= 256, "--file: chunks of <= 256 tokens cover the text")
    ids.append("long")
    ok(["add", "--collection", "other", "--text", PASSAGES[5], "--id", "o1"] + MODEL, db, "add o1")
    STATE["ids"] = ids

    out, _ = ok(["list"], db, "list collections")
    check(out == "notes\t5 memories\t%d chunks\nother\t1 memories\t1 chunks\n" % (4 + j["chunks"]),
          "list collections: %r" % out)
    out, _ = ok(["list", "--json"], db, "list collections --json")
    got = [json.loads(x) for x in out.splitlines()]
    check([{k: c[k] for k in ("name", "memories", "chunks")} for c in got] ==
          [{"name": "notes", "memories": 5, "chunks": 4 + j["chunks"]},
           {"name": "other", "memories": 1, "chunks": 1}] and
          all(isinstance(c.get("created_ms"), int) for c in got),
          "list --json (the server's collection objects): %r" % out)
    seen, after, pages = [], None, 0
    while pages < 10:
        rc, out, err = memory(["list", "--collection", "notes", "--limit", "2", "--json"] +
                              (["--after", after] if after else []), db)
        pages += 1
        seen += [json.loads(x) for x in out.splitlines()]
        m = re.search(r"more: --after (\d+)", err)
        if not m:
            break
        after = m.group(1)
    check([m["id"] for m in seen] == ids and pages == 3,
          "3 pages of 2, 2, 1 in added order: %s" % [m["id"] for m in seen])
    check([m["text"] for m in seen] == PASSAGES[:4] + [lt] and
          [m["metadata"] for m in seen] == [{"i": i} for i in range(4)] + [None],
          "listed texts and metadata are what was added")
    out, _ = ok(["get", "--collection", "notes", "--id", "long"], db, "get")
    check(out == lt + "\n", "get prints the text")
    out, _ = ok(["get", "--collection", "notes", "--id", ids[1], "--json"], db, "get --json")
    check(json.loads(out)["text"] == PASSAGES[1] and json.loads(out)["metadata"] == {"i": 1},
          "get --json")
    # rm one, rm --all
    out, _ = ok(["rm", "--collection", "other", "--id", "o1"], db, "rm one")
    check(out == "deleted 1 memory\n", "rm one: %r" % out)
    fails(["get", "--collection", "other", "--id", "o1"], db, "get a deleted memory",
          r"no memory 'o1'")
    shutil.copy(db, db + ".copy")
    out, _ = ok(["rm", "--collection", "notes", "--all"], db + ".copy", "rm --all")
    check(out == "deleted 5 memories\n", "rm --all: %r" % out)
    out, _ = ok(["list"], db + ".copy", "list after rm --all")
    check("notes" not in out, "the collection is gone: %r" % out)


def test_query_equals_server():
    db = STATE["db"]
    S = Server("--model", DEMO, "--db", db, "--vector-dtype", "f32")
    for q, k, mnt in (("Who lit the lamp?", 2, 16), ("Which garden?", 4, 10)):
        out, err = ok(["query", "--collection", "notes", "--query", q, "--top-k", str(k),
                       "--max-new-tokens", str(mnt), "--json"] + MODEL, db, "query --json")
        c = json.loads(out) if out.strip() else {}
        st, s, _, _ = S.post("/v1/collections/notes/query", {"query": q, "top_k": k,
                                                             "max_new_tokens": mnt})
        check(st == 200 and c.get("answer") == s["answer"] and c["memories"] == s["memories"] and
              c["selection"] == s["selection"] and c["generated_tokens"] ==
              s["generated_tokens"], "CLI query == the server's query (%r vs %r)" % (
                  c.get("answer"), s.get("answer")))
        out, _ = ok(["query", "--collection", "notes", "--query", q, "--top-k", str(k),
                     "--max-new-tokens", str(mnt)] + MODEL, db, "query")
        check(out == s["answer"] + "\n", "plain query prints the answer")
    S.stop()
    # without a query reasoner: every chunk in added order, == the server
    db2 = new_db("sqlite", "cli_ins")
    ins = model("instruct")
    for t in PASSAGES[:3]:
        ok(["add", "--collection", "c", "--text", t, "--dtype", "f32", "--model", ins], db2,
           "add (instruct)")
    S = Server("--model", ins, "--db", db2, "--vector-dtype", "f32")
    out, _ = ok(["query", "--collection", "c", "--query", "Who?", "--max-new-tokens", "12",
                 "--json", "--model", ins], db2, "query (instruct)")
    st, s, _, _ = S.post("/v1/collections/c/query", {"query": "Who?", "max_new_tokens": 12})
    c = json.loads(out)
    check(st == 200 and c["answer"] == s["answer"] and c["selection"]["method"] == "all" and
          [m["text"] for m in c["memories"]] == PASSAGES[:3],
          "instruct: CLI query == server (%r vs %r)" % (c["answer"], s.get("answer")))
    S.stop()
    STATE["ins_db"] = db2


def test_reindex():
    db = STATE["ins_db"]
    q8 = model("instruct_q8")
    rc, out, err = memory(["reindex", "--model", q8], db)
    check(rc == 0 and "3 chunk(s) compressed for model" in err, "reindex: %r" % err[-200:])
    rc, out, err = memory(["reindex", "--model", q8], db)
    check(rc == 0 and "0 chunk(s) compressed" in err, "a second reindex compresses nothing")
    rc, out, err = memory(["query", "--collection", "c", "--query", "Who?", "--json",
                           "--max-new-tokens", "8", "--model", q8], db)
    check(rc == 0 and "compress" not in err, "query after reindex needs no recompression: %r"
          % err)
    S = Server("--model", q8, "--db", db)
    st, s, _, _ = S.post("/v1/collections/c/query", {"query": "Who?", "max_new_tokens": 8})
    check(st == 200 and "compressed" not in S.text() and json.loads(out)["answer"] == s["answer"],
          "the server under the reindexed model recompresses nothing and agrees")
    S.stop()
    lines = [json.loads(x) for x in export(db)]
    check(all(len(x["vectors"]) == 2 for x in lines), "both models' vectors in the export")


def test_export_import():
    src = STATE["db"]
    dump = os.path.join(OUT, "dump.jsonl")
    rc, _, err = memory(["export", "--out", dump], src)
    check(rc == 0 and "exported 5 memories" in err, "export: %r" % err)
    with open(dump) as f:
        want = f.read()
    check(want.splitlines() == export(src), "--out and standard output agree")
    q = ["query", "--collection", "notes", "--query", "Who lit the lamp?", "--top-k", "3",
         "--max-new-tokens", "12", "--json"] + MODEL
    ref = json.loads(memory(q, src)[1])
    for kind in ("sqlite", "postgresql"):
        dst = new_db(kind, "imp")
        rc, _, err = memory(["import", "--in", dump], dst)
        check(rc == 0 and "imported 5 memories" in err, "import into %s: %r" % (kind, err))
        got = "\n".join(export(dst)) + "\n"
        check(got == want, "%s: the export of the import is byte-identical (vectors too)" % kind)
        rc, out, err = memory(q, dst)
        a = json.loads(out) if rc == 0 else {}
        check(a.get("answer") == ref["answer"] and a.get("memories") == ref["memories"] and
              "compress" not in err, "%s: the same query gives the same answer" % kind)
        rc, _, err = memory(["import", "--in", dump], dst)
        check(rc == 1 and re.search(r"line 1: .*(exists|already|duplicate)", err),
              "%s: importing again -> exit 1 naming the line: %r" % (kind, err.strip()))
        rc, _, err = memory(["import", "--in", dump, "--skip-existing"], dst)
        check(rc == 0 and "skipped 5 already there" in err, "%s: --skip-existing: %r" % (kind,
                                                                                         err))
        check("\n".join(export(dst)) + "\n" == want, "%s: nothing changed by the re-imports" %
              kind)
        # from standard input, into a store that has part of it
        dst2 = new_db(kind, "imp")
        memory(["import"], dst2, stdin=want.splitlines()[0] + "\n")
        rc, _, err = memory(["import", "--skip-existing"], dst2, stdin=want)
        check(rc == 0 and "imported 4 memories, skipped 1" in err, "%s: partial import %r" % (
            kind, err.strip()))
        check("\n".join(export(dst2)) + "\n" == want, "%s: stdin import identical" % kind)


def test_errors():
    db = STATE["db"]
    fails(["list", "--collection", "nope"], db, "list a missing collection",
          r"no collection named 'nope'")
    fails(["get", "--collection", "nope", "--id", "x"], db, "get in a missing collection",
          r"no collection named 'nope'")
    fails(["rm", "--collection", "nope", "--all"], db, "rm a missing collection",
          r"no collection named 'nope'")
    fails(["query", "--collection", "nope", "--query", "q"] + MODEL, db,
          "query a missing collection", r"no collection named 'nope'")
    fails(["get", "--collection", "notes", "--id", "../x"], db, "a hostile id", r"memory id")
    png = os.path.join(OUT, "x.png")
    with open(png, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + bytes(200))
    fails(["list"], png, "--db a PNG", re.escape(png) + r".*not a SQLite database")
    fails(["list"], os.path.join(OUT, "missing", "x.db"), "--db a missing file",
          r"does not exist")
    fails(["list"], "postgresql://clara@127.0.0.1:1/clara", "--db an unreachable PostgreSQL",
          r"127\.0\.0\.1|connect")
    dump = os.path.join(OUT, "bad.jsonl")
    good = export(db)[:2]
    with open(dump, "w") as f:
        f.write(good[0] + "\n" + good[1] + "\n" + '{"collection": "notes", "id": "z", "text": \n')
    dst = new_db("sqlite", "bad_import")
    rc, out, err = memory(["import", "--in", dump], dst)
    check(rc == 1 and "line 3" in err, "a corrupt import line -> exit 1 naming line 3: %r" %
          err.strip())
    check(len(export(dst)) == 2, "the lines before it are imported")
    for bad, pat in (('{"collection":"c","id":"y","text":"t","chunks":[{"start":0,"len":99,'
                      '"n_tokens":1}],"vectors":[]}', r"line 1"),
                     ('["not an object"]', r"line 1"), ('{"id":"q"}', r"line 1")):
        rc, out, err = memory(["import"], new_db("sqlite", "bad_import"), stdin=bad + "\n")
        check(rc == 1 and re.search(pat, err), "import %s -> exit 1: %r" % (bad[:40],
                                                                           err.strip()))


def test_import_whole_line():
    """A line whose second model's vectors are bad is refused whole: nothing of it is stored
    (a half-imported memory would be skipped by a retry with --skip-existing)."""
    lines = [json.loads(x) for x in export(STATE["ins_db"])]
    good = lines[0]
    check(len(good["vectors"]) == 2, "the line has two models' vectors")
    for what, mutate in (("second model's data cut", lambda v: v[1].update(data=v[1]["data"][:0])),
                         ("second model's fingerprint bad", lambda v: v[1].update(
                             fingerprint="zz")),
                         ("first model's base64 bad", lambda v: v[0].update(data=["!!"]))):
        bad = json.loads(json.dumps(good))
        mutate(bad["vectors"])
        dst = new_db("sqlite", "whole")
        rc, _, err = memory(["import"], dst, stdin=json.dumps(bad) + "\n")
        check(rc == 1 and "line 1" in err and "imported 0 memories" in err,
              "%s -> exit 1: %r" % (what, err.strip()))
        check(export(dst) == [], "%s: nothing of the line stored" % what)
    for field, val in (("created_ms", 1e300), ("updated_ms", "soon")):
        bad = dict(good, **{field: val})
        rc, _, err = memory(["import"], new_db("sqlite", "whole"), stdin=json.dumps(bad) + "\n")
        check(rc == 1 and field in err, "%s %r -> exit 1: %r" % (field, val, err.strip()))


def main():
    try:
        for t in (test_add_list_get_rm, test_query_equals_server, test_reindex,
                  test_export_import, test_errors, test_import_whole_line):
            t0 = time.time()
            run(t)
            print("%s: %.1f s" % (t.__name__, time.time() - t0))
        check_no_sanitizer_reports()
    finally:
        cleanup()
        shutil.rmtree(OUT, ignore_errors=True)
    report("test_store_cli")


if __name__ == "__main__":
    main()
