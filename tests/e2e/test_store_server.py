"""The memory store's HTTP API (/v1/collections/...) over the real build/clara-server, every API
case on both backends with the same test functions: a SQLite file, and a real PostgreSQL server
started here (pg_harness.py), each test on a fresh database.

Truths the store is held to, all independent of it: what was sent (texts, ids, metadata), the
stateless endpoints on the same texts in the same order (/v1/retrieve for a model with a query
reasoner, /v1/answer for one without; with f16 storage /v1/answer and /v1/retrieve on the f16
vectors of /v1/compress, and docs/PRECISION.md's f16 rule against the f32 `clara ask`),
`clara tokenize` for token counts, the exported byte ranges of chunks, and file hashes.

Covers: CRUD, paging, PUT (recompressed, chunk count changes), deletes, collections, metadata
filters, all-or-nothing adds, equivalence (f32 and f16 storage), long memories in chunks and the
/compress chunking/cut reporting, bad input (4xx JSON, nothing lost), startup refusals (corrupt,
foreign and read-only stores), PostgreSQL unreachable at startup and restarted mid-run, and a
model change (lazy recompression, once)."""

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time

import numpy as np

from harness import check, report, run
from pg_harness import PostgresServer, as_user, chown_tree, unprivileged_user
from server_harness import (DEMO, SERVER, SLOW, TMP, Server, check_no_sanitizer_reports, cleanup,
                            raw_request, wait_for)
from store_harness import (BACKENDS, OUT, PASSAGES, agrees_near_tie, ask_ref, decode_vectors,
                           export, long_text, model, n_tokens, new_db, pg, vectors_of)

C = "/v1/collections"


def add(S, coll, mems, **extra):
    body = {"memories": mems}
    body.update(extra)
    return S.post("%s/%s/memories" % (C, coll), body, timeout=300)


def query(S, coll, q, **kw):
    body = {"query": q}
    body.update(kw)
    return S.post("%s/%s/query" % (C, coll), body, timeout=300)


def listing(S, coll, limit=1000):
    """Every memory of a collection, following 'next' (None when the collection is missing)."""
    out, after = [], None
    while True:
        st, j, _, _ = S.get("%s/%s/memories?limit=%d%s" % (C, coll, limit,
                                                            "&after=" + after if after else ""))
        if st != 200:
            return None
        out += j["memories"]
        after = j["next"]
        if not after:
            return out


def snapshot(S):
    """The whole store as the API shows it: {collection: [(id, text, metadata, chunks)]}."""
    st, j, _, _ = S.get(C)
    assert st == 200, j
    return {c["name"]: [(m["id"], m["text"], m["metadata"], m["chunks"])
                        for m in listing(S, c["name"])] for c in j["collections"]}


def per_backend(fn):
    """fn(kind) run once for each backend, reported under its own name."""
    def each():
        for kind in BACKENDS:
            def one(kind=kind):
                fn(kind)
            one.__name__ = "%s[%s]" % (fn.__name__, kind)
            run(one)
    each.__name__ = fn.__name__
    return each


# ---- CRUD, paging, PUT, DELETE, collections ---------------------------------------------------

@per_backend
def test_crud(kind):
    db = new_db(kind, "crud")
    S = Server("--model", DEMO, "--db", db, "--vector-dtype", "f32")
    texts = PASSAGES[:3]
    metas = [{"topic": "sea", "n": 1}, None, {"nested": {"a": [1, 2]}, "s": "ü"}]
    mems = [{"text": t, "id": "m%d" % i} for i, t in enumerate(texts)]
    for m, md in zip(mems, metas):
        if md is not None:
            m["metadata"] = md
    st, j, _, _ = add(S, "notes", mems)
    toks = n_tokens(DEMO, texts)
    check(st == 201 and [m["id"] for m in j["memories"]] == ["m0", "m1", "m2"] and
          all(m["chunks"] == 1 for m in j["memories"]) and
          [m["tokens"] for m in j["memories"]] == toks and len(j["model"]) == 64,
          "add 3 -> 201 with ids, 1 chunk each, tokens %s == clara tokenize %s" % (
              j and [m.get("tokens") for m in j.get("memories", [])], toks))
    # one memory's fields at the top level, no id: one is generated
    st, j, _, _ = S.post("%s/notes/memories" % C, {"text": PASSAGES[3]})
    gen = j["memories"][0]["id"] if st == 201 else ""
    check(st == 201 and re.fullmatch(r"[0-9a-f]{32}", gen), "single add, generated id %r" % gen)
    for m, md in zip(mems, metas):
        st, j, _, _ = S.get("%s/notes/memories/%s" % (C, m["id"]))
        check(st == 200 and j["memory"]["text"] == m["text"] and j["memory"]["metadata"] == md and
              j["memory"]["chunks"] == 1, "GET %s returns what was added (%s)" % (m["id"], j))
    st, j, _, _ = S.get(C)
    check(st == 200 and [(c["name"], c["memories"], c["chunks"]) for c in j["collections"]] ==
          [("notes", 4, 4)], "collection list: %s" % j)
    st, j, _, _ = S.get(C + "/notes")
    check(st == 200 and j["collection"]["name"] == "notes" and j["collection"]["memories"] == 4,
          "collection get: %s" % j)

    # PUT: text replaced and recompressed; a long text takes several chunks; metadata kept
    lt = long_text(700)
    st, j, _, _ = S.request("PUT", "%s/notes/memories/m0" % C, {"text": lt})
    nch = j["memories"][0]["chunks"] if st == 200 else 0
    check(st == 200 and nch >= 3, "PUT a long text -> 200, %d chunks" % nch)
    st, j, _, _ = S.get("%s/notes/memories/m0" % C)
    check(st == 200 and j["memory"]["text"] == lt and j["memory"]["chunks"] == nch and
          j["memory"]["metadata"] == metas[0], "GET after PUT: new text, %d chunks, old metadata"
          % nch)
    st, j, _, _ = S.get(C + "/notes")
    check(j["collection"]["chunks"] == 3 + nch, "collection chunks follow the PUT: %s" % j)
    # its stored vectors are the compression of the new chunks (not the old text's)
    line = [json.loads(x) for x in export(db, "notes") if json.loads(x)["id"] == "m0"][0]
    chunk_texts = [lt.encode()[c["start"]:c["start"] + c["len"]].decode()
                   for c in line["chunks"]]
    st, cj, _, _ = S.post("/v1/compress", {"documents": chunk_texts})
    vs = vectors_of(line)
    check(len(vs) == 1 and np.array_equal(list(vs.values())[0][1], decode_vectors(cj["vectors"])),
          "the PUT memory's stored f32 vectors == /v1/compress of its chunks")
    st, j, _, _ = S.request("PUT", "%s/notes/memories/m0" % C,
                            {"text": "Short again.", "metadata": {"v": 2}})
    check(st == 200 and j["memories"][0]["chunks"] == 1, "PUT back to one chunk")
    st, j, _, _ = S.get("%s/notes/memories/m0" % C)
    check(j["memory"]["text"] == "Short again." and j["memory"]["metadata"] == {"v": 2},
          "PUT with metadata replaces it")
    st, j, _, _ = S.request("PUT", "%s/notes/memories/nope" % C, {"text": "x"})
    check(st == 404 and j["error_type"] == "not_found", "PUT of a missing memory -> 404 (%s)" % j)

    # DELETE one
    st, j, _, _ = S.request("DELETE", "%s/notes/memories/m1" % C)
    check(st == 200 and j["success"] is True, "DELETE m1 -> 200")
    check(S.get("%s/notes/memories/m1" % C)[0] == 404, "m1 gone")
    check(S.request("DELETE", "%s/notes/memories/m1" % C)[0] == 404, "DELETE again -> 404")
    check([m["id"] for m in listing(S, "notes")] == ["m0", "m2", gen], "list after DELETE")

    # paging over more than one page, in added order
    ids = ["p%02d" % i for i in range(11)]
    st, _, _, _ = add(S, "paged", [{"text": "Page memory number %d." % i, "id": i_}
                                   for i, i_ in enumerate(ids)])
    seen, after, pages = [], None, 0
    while pages < 10:
        st, j, _, _ = S.get("%s/paged/memories?limit=4%s" % (C, "&after=" + after if after
                                                             else ""))
        if not check(st == 200, "page %d: %s" % (pages, j)):
            break
        pages += 1
        seen += [m["id"] for m in j["memories"]]
        check(len(j["memories"]) == (4 if pages < 3 else 3), "page %d size" % pages)
        after = j["next"]
        if not after:
            break
    check(seen == ids and pages == 3, "3 pages of 4, 4, 3 in added order: %s" % seen)
    # arguments as clients escape them: %32 is "2"
    st, j, _, _ = S.get("%s/paged/memories?limit=%%32" % C)
    check(st == 200 and len(j["memories"]) == 2, "?limit=%%32 is limit=2 (%s)" % st)
    for bad in ("limit=0", "limit=1001", "limit=x", "after=-1", "after=abc", "limit=%2", "limit=+2",
                "limit=%00", "limit=" + "9" * 40):
        st, j, _, _ = S.get("%s/paged/memories?%s" % (C, bad))
        check(st == 422 and j["error_type"] == "validation_error", "?%s -> 422 (%s)" % (bad, st))

    # durable across a restart
    before = snapshot(S)
    S.stop()
    S = Server("--model", DEMO, "--db", db, "--vector-dtype", "f32")
    check(snapshot(S) == before, "the store is the same after a restart")

    # DELETE a collection
    st, j, _, _ = S.request("DELETE", C + "/paged")
    check(st == 200 and j["deleted_memories"] == 11, "DELETE collection -> 11 deleted (%s)" % j)
    check(S.get(C + "/paged")[0] == 404 and S.get(C + "/paged/memories")[0] == 404 and
          query(S, "paged", "x")[0] == 404, "the collection is gone")
    check(list(snapshot(S)) == ["notes"], "the other collection is kept")
    S.stop()


@per_backend
def test_all_or_nothing(kind):
    db = new_db(kind, "aon")
    S = Server("--model", DEMO, "--db", db, "--vector-dtype", "f32")
    add(S, "c", [{"text": PASSAGES[0], "id": "a"}])
    before = snapshot(S)
    st, j, _, _ = add(S, "c", [{"text": PASSAGES[1], "id": "x1"}, {"text": PASSAGES[2], "id": "x2"},
                               {"text": PASSAGES[3], "id": "a"}])
    check(st == 409 and j["error_type"] == "conflict" and "'a'" in j["error"],
          "3rd memory's id exists -> 409 naming it (%s %s)" % (st, j))
    check(snapshot(S) == before, "none of the 3 stored")
    st, j, _, _ = add(S, "c", [{"text": PASSAGES[1], "id": "y1"}, {"text": PASSAGES[2], "id": "y2"},
                               {"text": PASSAGES[3], "id": "y1"}])
    check(st == 409 and "y1" in j["error"], "a duplicate id within the request -> 409 (%s)" % j)
    st, j, _, _ = add(S, "fresh", [{"text": PASSAGES[1], "id": "z"}, {"text": "t", "id": "w"},
                                   {"text": PASSAGES[3], "id": "z"}])
    check(st == 409, "duplicate into a new collection -> 409")
    check(snapshot(S) == before, "nothing stored, no collection created: %s" % snapshot(S))
    S.stop()


# ---- selection and answers == the stateless endpoints ----------------------------------------

def check_retrieve_equivalence(S, coll, texts, q, k, mnt, what, vectors=None):
    st, qj, _, _ = query(S, coll, q, top_k=k, max_new_tokens=mnt)
    body = {"query": q, "top_k": k, "max_new_tokens": mnt}
    body.update({"vectors": vectors} if vectors else {"documents": texts})
    st2, rj, _, _ = S.post("/v1/retrieve", body)
    if not check(st == 200 and st2 == 200, "%s: query %s %s, retrieve %s" % (what, st, qj, st2)):
        return None
    order = [texts.index(m["text"]) for m in qj["memories"]]
    check(order == rj["top_k"], "%s: selected order %s == retrieve top_k %s" % (
        what, order, rj["top_k"]))
    scores = [m["score"] for m in qj["memories"]]
    want = [rj["scores"][i] for i in rj["top_k"]]
    check(np.allclose(scores, want, rtol=0, atol=1e-6),
          "%s: scores %s == retrieve's %s" % (what, scores, want))
    check(qj["answer"] == rj["answer"] and qj["generated_tokens"] == rj["generated_tokens"] and
          qj["prompt_tokens"] == rj["prompt_tokens"],
          "%s: answer %r/%s == retrieve %r/%s" % (what, qj["answer"], qj["generated_tokens"],
                                                  rj["answer"], rj["generated_tokens"]))
    sel = qj["selection"]
    check(sel["method"] == "cosine" and sel["exact"] is True and sel["considered"] == len(texts),
          "%s: selection %s" % (what, sel))
    return qj


@per_backend
def test_equivalence_f32(kind):
    # (a) models with a query reasoner: the demo model and the E2E fixture
    for name, m in (("demo", DEMO), ("e2e16", model("e2e"))):
        S = Server("--model", m, "--db", new_db(kind, "eq"), "--vector-dtype", "f32")
        texts = PASSAGES
        st, j, _, _ = add(S, "c", [{"text": t} for t in texts])
        check(st == 201, "%s: add %s" % (name, j))
        for q, k, mnt in (("Who repairs clocks?", 3, 24), ("What does the dog chase?", 1, 8),
                          ("Where does the train stop?", 6, 12)):
            check_retrieve_equivalence(S, "c", texts, q, k, mnt, "%s f32 k=%d" % (name, k))
        S.stop()
    # (b) no query reasoner: every memory, in added order == /v1/answer on the same texts
    m = model("instruct")
    S = Server("--model", m, "--db", new_db(kind, "eq"), "--vector-dtype", "f32")
    texts = PASSAGES[:5]
    add(S, "c", [{"text": t} for t in texts])
    for q, mnt in (("Who lit the lamp?", 20), ("What did Marie plant?", 6)):
        st, qj, _, _ = query(S, "c", q, max_new_tokens=mnt)
        st2, aj, _, _ = S.post("/v1/answer", {"query": q, "documents": texts,
                                              "max_new_tokens": mnt})
        if not check(st == 200 and st2 == 200, "instruct query %s %s" % (st, qj)):
            continue
        check(qj["selection"]["method"] == "all" and
              [x["text"] for x in qj["memories"]] == texts, "every memory in added order")
        check(qj["answer"] == aj["answer"] and qj["generated_tokens"] == aj["generated_tokens"]
              and qj["prompt_tokens"] == aj["prompt_tokens"],
              "instruct: answer %r == /v1/answer %r" % (qj["answer"], aj["answer"]))
        ref = ask_ref(m, texts, q, mnt)
        check(qj["answer"] == ref["answer"], "instruct: answer == clara ask %r" % ref["answer"])
    S.stop()


@per_backend
def test_equivalence_f16(kind):
    """f16 storage: the stored vectors are the f32 compression rounded to f16 (relative error
    within docs/PRECISION.md's f16 bound, 0.005); the answers equal the stateless endpoints given
    those f16 vectors exactly, and the f32 answer within the f16 near-tie rule."""
    m = model("instruct")
    db = new_db(kind, "f16")
    S = Server("--model", m, "--db", db)  # f16 is the default
    texts = PASSAGES[:4]
    add(S, "c", [{"text": t} for t in texts])
    st, c32, _, _ = S.post("/v1/compress", {"documents": texts})
    st, c16, _, _ = S.post("/v1/compress", {"documents": texts, "dtype": "f16"})
    v32, v16 = decode_vectors(c32["vectors"]), decode_vectors(c16["vectors"])
    stored = np.concatenate([list(vectors_of(x).values())[0][1] for x in export(db, "c")])
    dts = [list(vectors_of(x).values())[0][0] for x in export(db, "c")]
    check(dts == ["f16"] * 4 and np.array_equal(stored, v16),
          "stored vectors are f16 and == /v1/compress dtype f16")
    rel = [np.linalg.norm(stored[i] - v32[i]) / np.linalg.norm(v32[i]) for i in range(4)]
    check(max(rel) <= 0.005, "f16 vector relative error %.2g <= 0.005" % max(rel))
    agree = 0
    qs = (("Who lit the lamp?", 20), ("What did Marie plant?", 12), ("When does it leave?", 16))
    for q, mnt in qs:
        st, qj, _, _ = query(S, "c", q, max_new_tokens=mnt)
        st2, aj, _, _ = S.post("/v1/answer", {"query": q, "vectors": c16["vectors"],
                                              "max_new_tokens": mnt})
        check(st == 200 and qj["answer"] == aj["answer"] and
              qj["generated_tokens"] == aj["generated_tokens"],
              "f16: answer %r == /v1/answer on the f16 vectors %r" % (qj.get("answer"),
                                                                     aj.get("answer")))
        same, ok, step = agrees_near_tie(m, qj["answer"], ask_ref(m, texts, q, mnt))
        agree += ok
        check(ok, "f16 answer %r vs f32: identical or a near-tie (<0.05) at its first departure "
              "(step %s)" % (qj["answer"], step))
    print("f16 storage [%s]: %d/%d answers agree with f32 (near-tie aware), vector rel. error "
          "max %.2g" % (kind, agree, len(qs), max(rel)))
    S.stop()
    # with a query reasoner: order and scores == /v1/retrieve on the f16 vectors
    S = Server("--model", DEMO, "--db", new_db(kind, "f16"))
    add(S, "c", [{"text": t} for t in PASSAGES])
    st, c16, _, _ = S.post("/v1/compress", {"documents": PASSAGES, "dtype": "f16"})
    qj = check_retrieve_equivalence(S, "c", PASSAGES, "Who repairs clocks?", 3, 16, "demo f16",
                                    vectors=c16["vectors"])
    st, r32, _, _ = S.post("/v1/retrieve", {"query": "Who repairs clocks?", "top_k": 3,
                                            "documents": PASSAGES, "max_new_tokens": 16})
    if qj:
        d = max(abs(x["score"] - r32["scores"][PASSAGES.index(x["text"])])
                for x in qj["memories"])
        check(d <= 0.005, "f16 cosine scores within 0.005 of f32's (%.2g)" % d)
    S.stop()


@per_backend
def test_filter(kind):
    S = Server("--model", DEMO, "--db", new_db(kind, "filter"), "--vector-dtype", "f32")
    topics = ["sea", "garden", "travel", "pets", "sea", "pets"]
    st, j, _, _ = add(S, "c", [{"text": t, "id": "f%d" % i, "metadata": {"topic": tp, "i": i}}
                               for i, (t, tp) in enumerate(zip(PASSAGES, topics))])
    check(st == 201, "add with metadata")
    for flt in ({"topic": "sea"}, {"topic": "pets"}, {"topic": "sea", "i": 4}):
        sub = [t for i, (t, tp) in enumerate(zip(PASSAGES, topics))
               if tp == flt["topic"] and flt.get("i", i) == i]
        st, qj, _, _ = query(S, "c", "Who is there?", top_k=2, max_new_tokens=8, filter=flt)
        st2, rj, _, _ = S.post("/v1/retrieve", {"query": "Who is there?", "documents": sub,
                                                "top_k": min(2, len(sub)), "max_new_tokens": 8})
        if not check(st == 200, "filter %s: %s %s" % (flt, st, qj)):
            continue
        check(qj["selection"]["considered"] == len(sub) and
              [sub.index(x["text"]) for x in qj["memories"]] == rj["top_k"] and
              qj["answer"] == rj["answer"],
              "filter %s: only matching memories, == /v1/retrieve over them" % flt)
    st, j, _, _ = query(S, "c", "x", filter={"topic": "none"})
    check(st == 422 and j["error_type"] == "no_memories", "filter matching nothing -> 422 (%s)"
          % j)
    S.stop()


# ---- long memories, /compress chunking ----------------------------------------------------------

@per_backend
def test_long_memories(kind):
    db = new_db(kind, "long")
    S = Server("--model", DEMO, "--db", db, "--vector-dtype", "f32")
    lt = long_text(900, seed=3)
    st, j, _, _ = add(S, "c", [{"text": lt, "id": "long"}, {"text": PASSAGES[0], "id": "short"}])
    nch = j["memories"][0]["chunks"] if st == 201 else 0
    check(st == 201 and nch >= 3 and j["memories"][1]["chunks"] == 1, "long memory -> %d chunks"
          % nch)
    line = [json.loads(x) for x in export(db, "c") if json.loads(x)["id"] == "long"][0]
    b = lt.encode()
    pieces = [b[c["start"]:c["start"] + c["len"]].decode() for c in line["chunks"]]
    check(len(pieces) == nch and "".join(pieces) == lt and
          line["chunks"][0]["start"] == 0, "exported chunks concatenate to the text")
    toks = n_tokens(DEMO, pieces)
    check(max(toks) <= 256 and toks == [c["n_tokens"] for c in line["chunks"]],
          "each chunk <= 256 tokens (clara tokenize: %s)" % toks)
    check(j["memories"][0]["tokens"] == sum(toks), "reported tokens == sum over chunks")
    # the query sees the chunks; with every chunk selected they concatenate to the text
    st, qj, _, _ = query(S, "c", "Which river?", top_k=nch + 1, max_new_tokens=4)
    got = sorted((x["chunk"], x["text"]) for x in qj["memories"] if x["id"] == "long")
    check(st == 200 and "".join(t for _, t in got) == lt and len(got) == nch,
          "the query's chunk texts concatenate to the text")
    # /compress reads long memories in chunks; /v1/answer reports the cut, chunks when asked
    docs, q = [lt, PASSAGES[1]], "Which river?"
    st, j, _, _ = S.post("/compress", {"memories": docs, "query": q, "max_new_tokens": 6})
    check(st == 200 and j.get("chunks_read") == nch + 1 and j.get("chunk_of") ==
          [0] * nch + [1], "/compress chunks by default: %s" % {k: j.get(k) for k in (
              "chunks_read", "chunk_of")})
    st, a, _, _ = S.post("/v1/answer", {"documents": pieces + [PASSAGES[1]], "query": q,
                                        "max_new_tokens": 6})
    check(j["answer"] == a["answer"], "/compress chunked == /v1/answer on the chunk texts")
    st, j, _, _ = S.post("/v1/answer", {"documents": docs, "query": q, "max_new_tokens": 6})
    check(st == 200 and j.get("cut_documents") == [0] and "chunks_read" not in j,
          "/v1/answer reports cut_documents [0]: %s" % j.get("cut_documents"))
    st, j2, _, _ = S.post("/v1/answer", {"documents": docs, "query": q, "max_new_tokens": 6,
                                         "chunk": True})
    check(st == 200 and j2.get("chunks_read") == nch + 1 and j2["answer"] == a["answer"],
          "/v1/answer chunk:true reads chunks")
    st, r, _, _ = S.post("/v1/retrieve", {"documents": docs, "query": q, "top_k": 1})
    check(st == 200 and r.get("cut_documents") == [0], "/v1/retrieve reports cut_documents")
    S.stop()
    S = Server("--model", DEMO, "--db", "none", "--compress-cut", "1")
    st, j, _, _ = S.post("/compress", {"memories": docs, "query": q, "max_new_tokens": 6})
    st2, a2, _, _ = S.post("/v1/answer", {"documents": docs, "query": q, "max_new_tokens": 6})
    check(st == 200 and j.get("cut_documents") == [0] and "chunks_read" not in j and
          j["answer"] == a2["answer"], "--compress-cut 1: /compress cuts and says so (%s)" % j)
    S.stop()


# ---- bad input: a clear 4xx JSON error, nothing lost -------------------------------------------

@per_backend
def test_bad_input(kind):
    S = Server("--model", DEMO, "--db", new_db(kind, "bad"), "--vector-dtype", "f32")
    add(S, "c", [{"text": t, "id": "k%d" % i, "metadata": {"i": i}}
                 for i, t in enumerate(PASSAGES[:3])])
    before = snapshot(S)
    errors0 = S.status()["errors"]

    def refused(res, status, etype, what, text=None):
        st, j, h, raw = res
        ok = (st == status and isinstance(j, dict) and j.get("success") is False and
              (etype is None or j.get("error_type") == etype) and j.get("error") and
              (text is None or text in j["error"]) and "application/json" in
              h.get("content-type", ""))
        check(ok, "%s -> %d %s (got %s %s)" % (what, status, etype, st, j or raw[:120]))
        check(snapshot(S) == before, "%s: store unchanged" % what)

    for method, path, body in (("GET", "/nope", None), ("GET", "/nope/memories", None),
                               ("DELETE", "/nope", None), ("GET", "/nope/memories/k0", None),
                               ("DELETE", "/nope/memories/k0", None),
                               ("PUT", "/nope/memories/k0", {"text": "x"}),
                               ("POST", "/nope/query", {"query": "x"})):
        refused(S.request(method, C + path, body), 404, "not_found", "%s %s" % (method, path))
    for name in ("..%2Fx", "%2E%2E", "a" * 300, "a%01b", "a%20b", ".hidden", "-x", "..", "a%2Fb",
                 "a%00b", "a%0", "a%zz"):
        refused(S.get("%s/%s/memories" % (C, name)), 422, "invalid_name", "collection %r" %
                name[:20])
        refused(add(S, name, [{"text": "x"}]), 422, "invalid_name", "add into %r" % name[:20])
    for mid in ("..%2Fx", "%2E%2E", "b" * 129, "a%01b"):
        refused(S.get("%s/c/memories/%s" % (C, mid)), 422, "invalid_name", "memory id %r in URL"
                % mid[:20])
        refused(S.request("DELETE", "%s/c/memories/%s" % (C, mid)), 422, "invalid_name",
                "DELETE memory id %r" % mid[:20])
    out = raw_request(S.port, b"GET /v1/collections/a b/memories HTTP/1.1\r\nHost: x\r\n\r\n")
    check(re.match(rb"HTTP/1\.[01] 4\d\d", out), "a raw space in the path -> 4xx (%r)" % out[:40])
    for mid in ("../etc/passwd", "", ".x", "a/b", "c" * 129, "a\u0001b", "a b", "é"):
        refused(add(S, "c", [{"text": "fine", "id": "ok1"}, {"text": "x", "id": mid}]), 422,
                "invalid_name", "memory id %r in the body" % mid[:20])
    refused(add(S, "c", [{"text": "x", "id": 7}]), 422, "validation_error", "numeric id")
    refused(add(S, "c", [{"text": "x", "id": "k1"}]), 409, "conflict", "duplicate id", "k1")
    # one id twice in one request: refused before compressing, naming both (not "exists in the
    # collection", which may not even exist)
    for coll in ("c", "fresh"):
        refused(add(S, coll, [{"text": "a", "id": "n1"}, "b", {"text": "c", "id": "n1"}]), 409,
                "conflict", "one id twice in a request into %s" % coll, "memories 0 and 2")
    for md in ([1, 2], "s", 3, True):
        refused(add(S, "c", [{"text": "x", "metadata": md}]), 422, "validation_error",
                "metadata %r" % (md,))
    refused(add(S, "c", [{"text": "x", "metadata": {"k": "v" * (65 << 10)}}]), 413, "too_large",
            "metadata over 64 KiB")
    # a number past the double range: cJSON reads infinity, which would be stored as null
    for md in ('{"a": 1e999}', '{"a": [1, {"b": -1e400}]}'):
        refused(S.post(C + "/c/memories", '{"text": "x", "metadata": %s}' % md), 422,
                "validation_error", "metadata %s" % md, "out of range")
    refused(S.post(C + "/c/query", '{"query": "x", "filter": {"i": 1e999}}'), 422,
            "validation_error", "filter 1e999", "out of range")
    # a key twice in one object: the filter matched the first value, most clients read the last
    for md in ('{"a": 1, "a": 2}', '{"o": {"b": [{"c": 1, "c": 1}]}}'):
        refused(S.post(C + "/c/memories", '{"text": "x", "metadata": %s}' % md), 422,
                "validation_error", "metadata %s" % md, "twice")
    refused(S.post(C + "/c/query", '{"query": "x", "filter": {"i": 1, "i": 2}}'), 422,
            "validation_error", "filter with a key twice", "'i' twice")
    for f in ([1], "topic", 2):
        refused(query(S, "c", "x", filter=f), 422, "validation_error", "filter %r" % (f,))
    refused(add(S, "c", [{"text": ""}]), 422, "validation_error", "empty text")
    refused(add(S, "c", [{"text": " \t\n "}]), 422, "validation_error", "white space only",
            "more than white space")
    refused(S.post(C + "/c/memories", {"text": "x", "memories": ["y"]}), 422, "validation_error",
            "'text' beside 'memories'", "not both")
    refused(add(S, "c", [{"text": "x"}], dtype="f8"), 422, "validation_error", "dtype f8")
    refused(query(S, "c", ""), 422, "validation_error", "empty query")
    refused(query(S, "c", "x", top_k=0), 422, "validation_error", "top_k 0")
    refused(S.post(C + "/c/memories", json.dumps({"text": "x"}),
                   headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type",
            "text/plain body")
    refused(S.post(C + "/c/memories", "{not json"), 400, None, "malformed JSON")
    big = "word " * (2 << 20)  # 10 MiB
    refused(add(S, "c", [{"text": big}]), 413, "payload_too_large", "a 10 MiB memory")
    # an empty collection: its only memory deleted
    add(S, "empty", [{"text": "soon gone", "id": "g"}])
    S.request("DELETE", C + "/empty/memories/g")
    before = snapshot(S)
    refused(query(S, "empty", "anything?"), 422, "no_memories", "query on an empty collection")
    check(S.healthy(), "/health still 200")
    # refusals are the client's mistakes, as on the model endpoints: not the server's errors
    errors = S.status()["errors"]
    check(errors == errors0, "/status errors unchanged by the refusals (%d, was %d)"
          % (errors, errors0))
    S.stop()
    # over the chunk cap, with the body limit raised: 413 before anything is stored
    huge = "ab " * (5 << 20)  # ~1.3M tokens > 4096 chunks x 256
    S = Server("--model", DEMO, "--db", new_db(kind, "bad"), "--max-body", str(40 << 20))
    add(S, "c", [{"text": "kept", "id": "kept"}])
    before = snapshot(S)
    refused(add(S, "c", [{"text": "fine", "id": "n1"}, {"text": huge}]), 413, "too_many_tokens",
            "a memory over --max-request-tokens", "--max-request-tokens")
    S.stop()
    S = Server("--model", DEMO, "--db", new_db(kind, "bad"), "--max-body", str(40 << 20),
               "--max-request-tokens", "1073741824")
    add(S, "c", [{"text": "kept", "id": "kept"}])
    before = snapshot(S)
    refused(add(S, "c", [{"text": "fine", "id": "n1"}, {"text": huge}]), 413, "too_large",
            "a memory over the 4096-chunk cap", "4096 chunks")
    S.stop()


@per_backend
def test_percent_encoded_names(kind):
    """A valid name the client percent-encoded (Python's quote and JavaScript's
    encodeURIComponent escape ':') is the same name."""
    S = Server("--model", DEMO, "--db", new_db(kind, "pct"))
    st, j, _, _ = add(S, "a%3Ab", [{"text": "colon", "id": "k:1"}])
    check(st == 201, "a percent-encoded valid name is accepted (%s %s)" % (st, j))
    for path in ("/a:b/memories/k:1", "/a%3ab/memories/k%3A1"):
        st, j, _, _ = S.get(C + path)
        check(st == 200 and j["memory"]["text"] == "colon", "%s is a:b's k:1 (%s %s)" % (
            path, st, j))
    S.stop()


@per_backend
def test_metadata_cache_bound(kind):
    """A collection's index holds its memories' metadata parsed (for filters): 4,000 small values
    of metadata parse into ~400 KB, and the cache counted 256 bytes, so two collections of 300
    such memories held ~250 MB under --vector-cache 8 (and each worker thread's malloc arena
    kept its own copy of an index too big to cache). RSS stays near its size before the
    queries."""
    S = Server("--model", DEMO, "--db", new_db(kind, "mdcache"), "--vector-cache", "8")
    md = {"k%d" % i: i for i in range(4000)}  # under the 4,096 values a body may hold
    for c in ("a", "b"):
        for i in range(300):
            st, j, _, _ = S.post("%s/%s/memories" % (C, c), {"text": "memory %d" % i,
                                                            "metadata": md}, timeout=60)
            assert st == 201, j
    base = S.rss_kb()
    peak = base
    for i in range(6):
        st, j, _, _ = query(S, "ab"[i % 2], "memory?", max_new_tokens=1, filter={"k1": 1})
        check(st == 200 and len(j["memories"]) >= 1, "filtered query %d -> 200 (%s)" % (i, st))
        peak = max(peak, S.rss_kb())
    # a sanitizer's allocator keeps freed memory in quarantine: the bound is the plain build's
    check(SLOW or peak - base < 64 << 10, "RSS %d -> %d MB over the queries (--vector-cache 8)"
          % (base >> 10, peak >> 10))
    S.stop()


# ---- startup refusals ---------------------------------------------------------------------------

def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def refuses_to_start(db, what, user=None, model_path=DEMO, server=SERVER):
    e = {k: v for k, v in os.environ.items() if not k.startswith("CLARA_")}
    e["XDG_DATA_HOME"] = os.path.join(TMP, "refuse-data")
    argv = [server, "--port", "0", "--model", model_path, "--db", db]
    if user:
        argv = as_user(user[0], user[1], argv)
    p = subprocess.run(argv, env=e, capture_output=True, text=True, timeout=60)
    check(p.returncode != 0 and db in p.stderr and "error" in p.stderr,
          "%s: exits non-zero naming the file (exit %d: %s)" % (what, p.returncode,
                                                                p.stderr.strip()[-300:]))
    return p.stderr


def test_startup_refusals():
    d = os.path.join(OUT, "refuse")
    os.makedirs(d)
    corrupt = os.path.join(d, "corrupt.db")
    with open(corrupt, "wb") as f:  # a SQLite header, then garbage
        f.write(b"SQLite format 3\x00" + bytes(range(256)) * 40)
    png = os.path.join(d, "picture.png")
    with open(png, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(4000))
    other = os.path.join(d, "other-app.db")
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    c.execute("INSERT INTO customers (name) VALUES ('Ada'), ('Grace')")
    c.commit()
    c.close()
    for path, what in ((corrupt, "a corrupt SQLite file"), (png, "a PNG"),
                       (other, "another application's SQLite database")):
        h = sha(path)
        refuses_to_start(path, what)
        check(sha(path) == h and not os.path.exists(path + "-wal") and
              not os.path.exists(path + "-journal"), "%s: its bytes are unchanged" % what)
    c = sqlite3.connect(other)
    check(c.execute("SELECT name FROM customers ORDER BY id").fetchall() == [("Ada",), ("Grace",)]
          and [r[0] for r in c.execute("SELECT name FROM sqlite_master")] == ["customers"],
          "the other app's database still holds only its table")
    c.close()

    # read-only: a store this user cannot write (file), and one in a directory it cannot write
    uid, gid = unprivileged_user()
    ro = os.path.join(OUT, "ro")
    os.makedirs(ro)
    os.chmod(OUT, 0o711)  # mkdtemp's 0700 would keep the unprivileged user out of everything
    os.chmod(ro, 0o755)
    server = os.path.join(ro, "clara-server")
    mdl = os.path.join(ro, "model.gguf")
    shutil.copy(SERVER, server)
    shutil.copy(DEMO, mdl)
    os.chmod(mdl, 0o644)
    os.chmod(server, 0o755)
    for name, fmode, dmode in (("file", 0o444, 0o777), ("dir", 0o666, 0o555)):
        sub = os.path.join(ro, name)
        os.makedirs(sub)
        db = os.path.join(sub, "memories.db")
        S = Server("--model", DEMO, "--db", db)  # a real store with a memory in it
        add(S, "c", [{"text": "kept", "id": "kept"}])
        S.stop()
        for extra in ("-wal", "-shm"):
            if os.path.exists(db + extra):
                os.remove(db + extra)
        chown_tree(sub, 0 if os.geteuid() == 0 else os.geteuid(), os.getegid())
        os.chmod(db, fmode)
        os.chmod(sub, dmode)
        h = sha(db)
        err = refuses_to_start(db, "read-only store (%s)" % name, user=(uid, gid),
                               model_path=mdl, server=server)
        check(re.search(r"read-only|readonly|permission|cannot write|not writable", err, re.I),
              "read-only (%s): the message says why: %s" % (name, err.strip()[-200:]))
        check(sha(db) == h, "read-only (%s): unchanged" % name)
        os.chmod(sub, 0o755)


# ---- PostgreSQL down at startup, restarted mid-run ---------------------------------------------

def test_pg_unreachable_then_up():
    p = PostgresServer()
    url = p.url
    p.stop()
    S = Server("--model", DEMO, "--db", url, "--vector-dtype", "f32")
    for method, path, body in (("GET", C, None), ("POST", C + "/c/memories", {"text": "x"}),
                               ("GET", C + "/c/memories", None),
                               ("POST", C + "/c/query", {"query": "x"})):
        st, j, h, _ = S.request(method, path, body)
        check(st == 503 and j["error_type"] == "store_unavailable" and h.get("retry-after"),
              "PG down: %s %s -> 503 with Retry-After (%s %s %s)" % (method, path, st, j,
                                                                    h.get("retry-after")))
    check(S.healthy(), "/health 200 while the store is unreachable")
    st, j, _, _ = S.post("/compress", {"memories": ["a"], "query": "b", "max_new_tokens": 2})
    check(st == 200, "stateless endpoints work while the store is down")
    p.start()
    st, j, _, _ = add(S, "c", [{"text": PASSAGES[0], "id": "a"}])
    check(st == 201, "once PostgreSQL is up the store works (%s %s)" % (st, j))
    check([m["id"] for m in listing(S, "c") or []] == ["a"], "and holds the memory")
    S.stop()
    p.cleanup()


def test_pg_restart_midrun():
    p = pg()
    S = Server("--model", DEMO, "--db", new_db("postgresql", "restart"), "--vector-dtype", "f32")
    acked, statuses, stop = [], [], threading.Event()
    bad = []

    def writer():
        i = 0
        while not stop.is_set():
            st, j, h, _ = add(S, "c", [{"text": "Memory number %d." % i, "id": "w%d" % i}])
            statuses.append(st)
            if st == 201:
                acked.append("w%d" % i)
                i += 1
            elif st == 503 and h.get("retry-after"):
                time.sleep(0.05)
            else:
                bad.append((st, j))
                i += 1
    t = threading.Thread(target=writer)
    t.start()
    wait_for(lambda: len(acked) >= 5, 30)
    p.restart()
    n_at_restart = len(acked)
    wait_for(lambda: len(acked) >= n_at_restart + 5, 60)
    stop.set()
    t.join(60)
    check(not bad, "during the restart only 201 or 503 + Retry-After: %s" % bad[:3])
    check(len(acked) >= n_at_restart + 5, "writes recover after the restart (%d acked, %d at "
          "restart)" % (len(acked), n_at_restart))
    print("PostgreSQL restart: %d writes acknowledged, %d answered 503" % (
        len(acked), statuses.count(503)))
    ids = [m["id"] for m in listing(S, "c") or []]
    check(set(acked) <= set(ids), "every acknowledged write is there (%d missing)" % len(
        set(acked) - set(ids)))
    st, j, _, _ = query(S, "c", "Which number?", top_k=2, max_new_tokens=4)
    check(st == 200, "query after the restart: %s" % st)
    S.stop()


@per_backend
def test_list_page_bytes(kind):
    """A page of memories holds at most 8 MiB of text and metadata (one memory at least): four
    of 2.4 MB come as pages of three and one, the cursor going on where the first stopped."""
    S = Server("--model", DEMO, "--db", new_db(kind, "pagebytes"), "--max-body", str(16 << 20),
               "--max-request-tokens", str(1 << 20))
    big = "word " * 480000  # ~960,000 tokens: under the chunk cap
    for i in range(4):
        st, j, _, _ = add(S, "c", [{"text": "%d %s" % (i, big), "id": "m%d" % i}])
        check(st == 201, "a 2.4 MB memory (%s %s)" % (st, j.get("error") if j else j))
    st, j, _, raw = S.get(C + "/c/memories?limit=1000")
    first = [m["id"] for m in j["memories"]] if st == 200 else []
    check(first == ["m0", "m1", "m2"] and j["next"] and len(raw) < 8.5 * (1 << 20),
          "the first page stops at 8 MiB: %r, %d bytes, next %r" % (first, len(raw), j.get("next")))
    st, j, _, _ = S.get(C + "/c/memories?limit=1000&after=" + str(j.get("next")))
    rest = [m["id"] for m in j["memories"]] if st == 200 else []
    check(rest == ["m3"] and j["next"] is None and j["memories"][0]["text"] == "3 " + big,
          "the next page holds the rest: %r" % rest)
    st, j, _, _ = S.get(C + "/c/memories?limit=1")
    check(st == 200 and [m["id"] for m in j["memories"]] == ["m0"] and j["next"],
          "limit=1 as before")
    S.stop()


def pg_processes(p):
    """The PIDs of a PostgreSQL server's processes: the postmaster and its children."""
    with open(os.path.join(p.data, "postmaster.pid")) as f:
        master = int(f.readline())
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                        kids.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return [master] + kids


def test_pg_stalls():
    """A PostgreSQL that does not answer (a table locked by another session, the server stopped
    with SIGSTOP) costs a request --db-timeout, then 503; a connection the server ended while idle
    is reset before it is used, never a failed request."""
    p = PostgresServer()
    S = Server("--model", DEMO, "--db", p.url, "--db-timeout", "2", "--vector-dtype", "f32")
    check(add(S, "c", [{"text": PASSAGES[0], "id": "a"}])[0] == 201, "a first memory")
    psql = p._bin("psql") if os.access(p._bin("psql"), os.X_OK) else "psql"
    locker = subprocess.Popen([psql, "-X", "-q", "-h", "127.0.0.1", "-p", str(p.port), "-U",
                               p.user, "-d", p.dbname], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                              env=dict(os.environ, PGAPPNAME="locker"))
    locker.stdin.write("BEGIN; LOCK TABLE memories IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);\n")
    locker.stdin.flush()
    time.sleep(1)
    for what, call in (("add", lambda: add(S, "c", [{"text": "x", "id": "b"}])),
                       ("list", lambda: S.get(C + "/c/memories"))):
        t0 = time.time()
        st, j, h, _ = call()
        took = time.time() - t0
        check(st == 503 and j["error_type"] == "store_unavailable" and h.get("retry-after") and
              1.8 < took < 4, "%s behind a locked table: 503 after --db-timeout 2 (%s in %.1f s: %s)"
              % (what, st, took, j.get("error")))
        print("  %s behind a locked table, --db-timeout 2: %d in %.2f s" % (what, st, took))
    p._psql("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'locker'")  # its lock goes with it
    locker.kill()
    locker.wait()
    check(add(S, "c", [{"text": "x", "id": "b"}])[0] == 201, "the lock gone, the add goes in")
    pids = pg_processes(p)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.time()
        st, j, _, _ = S.get(C + "/c/memories")
        took = time.time() - t0
        check(st == 503 and j["error_type"] == "store_unavailable" and took < 10,
              "a stopped PostgreSQL: 503 in %.1f s, not a hang (%s %s)" % (took, st, j.get("error")))
        print("  a SIGSTOPped PostgreSQL, --db-timeout 2: %d in %.2f s" % (st, took))
        check(S.healthy(), "/health 200 meanwhile")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    ok = wait_for(lambda: S.get(C + "/c/memories")[0] == 200, 30)
    check(ok, "PostgreSQL going on: the store answers again")
    for i in range(3):
        p._psql("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'clara-server'")
        time.sleep(0.3)
        st, j, _, _ = S.get(C + "/c/memories")
        check(st == 200 and len(j["memories"]) == 2, "the connection ended while idle (%d): the "
              "next read is served (%s %s)" % (i, st, j.get("error")))
    S.stop()
    p.cleanup()


def test_pg_replicas_commit_order():
    """Two replicas writing at once: one writes 400 memories in one request while the other
    keeps adding single ones. Writes take turns, so ids follow the commits: the 400 stay
    together in the listing (ordered by id), and a reader paging with `after` cursors can never
    have passed an id whose memory commits later."""
    url = new_db("postgresql", "order")
    A = Server("--model", DEMO, "--db", url, "--vector-dtype", "f32")
    B = Server("--model", DEMO, "--db", url, "--vector-dtype", "f32")
    check(add(A, "c", [{"text": "first", "id": "first"}])[0] == 201, "a first memory")
    done, during = threading.Event(), []

    def big():
        st, j, _, _ = add(A, "c", [{"text": "Batch memory %d." % i, "id": "a%03d" % i}
                                   for i in range(400)])
        check(st == 201, "the batch of 400 (%s %s)" % (st, j.get("error") if j else j))
        done.set()
    t = threading.Thread(target=big)
    t.start()
    k = 0
    while not done.is_set():
        st, _, _, _ = add(B, "c", [{"text": "Single memory %d." % k, "id": "b%03d" % k}])
        check(st == 201, "a single add on the other replica (%s)" % st)
        if not done.is_set():
            during.append(k)
        k += 1
    t.join()
    ids = [m["id"] for m in listing(B, "c") or []]
    where = [i for i, x in enumerate(ids) if x.startswith("a")]
    check(len(where) == 400 and where[-1] - where[0] == 399,
          "the batch's 400 memories are together in the listing (positions %s..%s of %d, %d "
          "single adds sent while it ran)" % (where[:1], where[-1:], len(ids), len(during)))
    check(len(during) >= 3, "single adds were sent while the batch ran (%d)" % len(during))
    A.stop()
    B.stop()


# ---- model change: lazy recompression, once ----------------------------------------------------

@per_backend
def test_model_change(kind):
    a, b = model("instruct"), model("instruct_q8")
    db = new_db(kind, "model")
    S = Server("--model", a, "--db", db, "--vector-dtype", "f32")
    texts = PASSAGES[:3] + [long_text(400, seed=5)]
    st, j, _, _ = add(S, "c", [{"text": t} for t in texts])
    nch = sum(m["chunks"] for m in j["memories"])
    fa = j["model"]
    S.stop()
    S = Server("--model", b, "--db", db, "--vector-dtype", "f32")
    q = "Who lit the lamp?"
    st, j, _, _ = query(S, "c", q, max_new_tokens=12)
    logged = re.findall(r"compressed (\d+) chunk\(s\)", S.text())
    check(st == 200 and j["model"] != fa and j["timings"]["recompress_ms"] > 0 and
          logged == [str(nch)], "model B: first query recompresses all %d chunks (log %s, %s ms)"
          % (nch, logged, j and j.get("timings", {}).get("recompress_ms")))
    pieces = [x["text"] for x in j["memories"]]
    check("".join(pieces) == "".join(texts), "every chunk used, in added order")
    st2, aj, _, _ = S.post("/v1/answer", {"query": q, "documents": pieces, "max_new_tokens": 12})
    check(j["answer"] == aj["answer"] and j["generated_tokens"] == aj["generated_tokens"],
          "answer under B %r == /v1/answer under B %r" % (j["answer"], aj["answer"]))
    st, j2, _, _ = query(S, "c", "Who planted beans?", max_new_tokens=4)
    check(st == 200 and re.findall(r"compressed (\d+) chunk\(s\)", S.text()) == logged and
          j2["timings"]["recompress_ms"] == 0, "a second query recompresses nothing (%s ms)" %
          (j2 and j2.get("timings", {}).get("recompress_ms")))
    lines = [json.loads(x) for x in export(db, "c")]
    check(all(len(x["vectors"]) == 2 for x in lines), "both models' vectors are kept")
    S.stop()


@per_backend
def test_query_while_written(kind):
    """Queries on one server while another, with another model, keeps adding to the collection
    (its chunks have only that model's vectors until a query here makes this model's): the
    collection changes between the catch-up and the reads, and every query is still answered."""
    db = new_db(kind, "race")
    A = Server("--model", model("instruct"), "--db", db, "--vector-dtype", "f32")
    B = Server("--model", model("instruct_q8"), "--db", db, "--vector-dtype", "f32")
    check(add(A, "c", [{"text": t} for t in PASSAGES[:3]])[0] == 201, "three memories")
    stop, added = threading.Event(), []

    def writer():
        while not stop.is_set():
            st, _, _, _ = add(B, "c", [{"text": "Note %d: the lamp was lit at %d." % (len(added),
                                                                                    len(added))}])
            added.append(st)
    t = threading.Thread(target=writer)
    t.start()
    answers = []
    try:
        for i in range(12):
            st, j, _, _ = query(A, "c", "Who lit the lamp?", top_k=2, max_new_tokens=2)
            answers.append((st, j.get("error") if st != 200 else None))
    finally:
        stop.set()
        t.join(60)
    check(all(st == 201 for st in added), "the other model's adds: %s" % set(added))
    check(all(st == 200 for st, _ in answers) and len(added) > 10,
          "12 queries while %d memories were added: %s" % (len(added), [a for a in answers
                                                                         if a[0] != 200][:3]))
    A.stop()
    B.stop()


def main():
    try:
        only = os.environ.get("ONLY")
        for t in (test_crud, test_all_or_nothing, test_equivalence_f32, test_equivalence_f16,
                  test_filter, test_long_memories, test_bad_input, test_percent_encoded_names,
                  test_metadata_cache_bound, test_list_page_bytes,
                  test_startup_refusals,
                  test_pg_unreachable_then_up, test_pg_restart_midrun, test_pg_stalls,
                  test_pg_replicas_commit_order, test_model_change, test_query_while_written):
            if only and only not in t.__name__:
                continue
            t0 = time.time()
            run(t)
            print("%s: %.1f s" % (t.__name__, time.time() - t0))
        check_no_sanitizer_reports()
    finally:
        cleanup()
        shutil.rmtree(OUT, ignore_errors=True)
    report("test_store_server")


if __name__ == "__main__":
    main()
