#!/usr/bin/python3
"""Command-line front end of the float32 numpy CLaRa reference (the oracle for the C engine).

Prints JSON in the shapes the C CLI uses:
  tokenize   {"ids": [...]}
  compress   {"docs": [{"n_tokens": N, "vectors": [[...], ...]}, ...]}
  ask        {"answer", "ids", "prompt_tokens", "first_logits", "top2_gaps"}
  retrieve   {"answer", "ids", "top_k", "scores", "prompt_tokens", "first_logits", "top2_gaps"}
  paraphrase {"text", "ids", "prompt_tokens", "first_logits", "top2_gaps"}
Errors (spec §14.4 and malformed inputs) print "error: ..." to stderr and exit with status 1.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ref_clara  # noqa: E402
import ref_tokenizer  # noqa: E402


def floats(a):
    return [float(x) for x in a]


def gen_fields(r):
    return {
        "prompt_tokens": len(r["prompt_ids"]),
        "first_logits": floats(r["first_logits"]) if r["first_logits"] is not None else [],
        "top2_gaps": r["top2_gaps"],
    }


def run(args):
    model = ref_clara.Clara(args.base, args.clara, adapter_policy=args.adapter_policy)
    cmd = args.command
    if cmd == "tokenize":
        text = args.text if args.text is not None else (args.query or "")
        return {"ids": model.tok.encode(text)}
    if cmd == "compress":
        vecs, counts = model.compress(args.doc or [])
        return {
            "docs": [
                {"n_tokens": n, "vectors": [floats(v) for v in doc]} for n, doc in zip(counts, vecs)
            ]
        }
    if cmd == "ask":
        if args.query is None or not args.doc:
            raise ref_clara.ClaraError("ask needs --query and at least one --doc")
        r = model.ask([args.query], [args.doc], args.max_new_tokens)[0]
        return dict({"answer": r["answer"], "ids": r["ids"]}, **gen_fields(r))
    if cmd == "retrieve":
        if args.query is None or not args.doc:
            raise ref_clara.ClaraError("retrieve needs --query and at least one --doc")
        r = model.retrieve(args.query, args.doc, args.max_new_tokens, args.top_k)
        out = {"answer": r["answer"], "ids": r["ids"], "top_k": r["top_k"], "scores": r["scores"]}
        return dict(out, **gen_fields(r))
    if cmd == "paraphrase":
        if not args.doc:
            raise ref_clara.ClaraError("paraphrase needs at least one --doc")
        r = model.paraphrase(args.doc, args.template, args.max_new_tokens)
        return dict({"text": r["answer"], "ids": r["ids"]}, **gen_fields(r))
    raise ref_clara.ClaraError(f"unknown command {cmd}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("command", choices=["tokenize", "compress", "ask", "retrieve", "paraphrase"])
    p.add_argument("--base", required=True, help="Mistral base folder (safetensors, tokenizer)")
    p.add_argument("--clara", required=True, help="CLaRa variant folder (config, adapters)")
    p.add_argument("--doc", action="append", help="a document (repeat for several)")
    p.add_argument("--query", help="the question")
    p.add_argument("--text", help="text for tokenize")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--template", type=int, default=0, help="paraphrase template index 0..12")
    p.add_argument("--top-k", type=int, default=None, help="E2E top-k (default: config)")
    p.add_argument("--adapter-policy", choices=["hf", "all"], default="hf")
    args = p.parse_args(argv)
    try:
        out = run(args)
    except (ref_clara.ClaraError, ref_tokenizer.TokenizerError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
