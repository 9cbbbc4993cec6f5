"""Shared inputs for the tokenizer end-to-end suites (test_tokenizer.py, test_tokenizer_peer.py):
the real passages and questions of tests/data/wiki-passages-qa.jsonl plus
hand-picked edge cases, and helpers to convert the fixture models and to run `clara tokenize`."""

import json
import os
import random
import shutil
import subprocess
import tempfile

from harness import CLARA, FIXTURES, ROOT

PASSAGES = os.environ.get("CLARA_PASSAGES",
                          os.path.join(ROOT, "tests", "data", "wiki-passages-qa.jsonl"))
TOKDIR = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
SPACE_MARK = "\u2581"


def passages():
    """Every doc and question of the QA file ([] when it is not available)."""
    if not os.path.exists(PASSAGES):
        return []
    out = []
    with open(PASSAGES, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            out.extend(rec.get("docs", []))
            out.extend(rec.get("question", []))
    return out


def clara_tokens(cfg):
    """CLaRa's added token strings in id order (spec §3.1), from a CLaRa config.json."""
    n_mem = cfg["doc_max_length"] // cfg["compr_rate"]
    if cfg.get("different_mem_tokens", True):
        mem = ["<MEM%d>" % i for i in range(n_mem)]
    else:
        mem = ["<MEM>"]
    return mem + ["<AE>", "<ENC>", "<SEP>"]


def edge_cases(specials):
    """Strings exercising the corners of spec §3.2: added tokens, whitespace, bytes, scripts."""
    s = list(specials) + ["<unk>", "<s>", "</s>"]
    cases = s + [
        "", " ", "  ", "   x", "x   ", "\t", "\n", "\n\n", "\r\n", " \n \t ", "a\tb\nc\r\nd",
        "0123456789", "3.14159 2,718 1e-9 -42", "1000000 000 00", "x" * 300, "ab" * 200,
        "aaaaaaa", "   leading", "trailing   ", "a  b   c    d",
        "héllo wörld", "naïve café résumé", "Ünïcödé", "ñ", "ß", "ﬁ ligature",
        "😀", "👍🏽", "👨‍👩‍👧‍👦 family", "🇫🇷 flag", "emoji 😀 in text 🎉!",
        "中文字符测试", "日本語のテキスト", "한국어 텍스트", "Русский текст", "العربية",
        "हिन्दी देवनागरी", "ελληνικά", "עברית", "ไทย", "e\u0301 combining", "\u200b zero width",
        "\ufeffBOM", "\ufffd replacement", "\uffff nonchar", "\U0010ffff max", "\U0001f600\U0001f601",
        "\x01\x02\x7f control", "~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./",
        SPACE_MARK, SPACE_MARK + "x", " " + SPACE_MARK + "x", SPACE_MARK + " x", "a" + SPACE_MARK * 3,
        "<ENC><s>Paris is the capital of France.</s>", "<ENC><s>Paris</s><MEM0>",
        "a:<s>->", "<s> hello", "<s>  hello", "<s>\nhello", "hello<s>", "<s><s></s></s>",
        "<s", "</s", "<s >", "< s>", "<<s>>", "<MEM16>", "<MEM1><MEM10>", "<MEM", "<SEP",
        "<SEP>\n\nQuestion:What is the capital of France?", "x<AE>y<ENC>z<SEP>w",
        "<unk><unk>", "text <unk> text", " <s> ", "<s> </s>", "</s>\n",
        "<s> [INST] You are a helpful assistant. Your task is to extract relevant information "
        "from provided documents and to answer to questions as briefly as possible.\n\n"
        "Background:\n" + "".join(specials[:-3]) + "<SEP>\n\nQuestion:What is the capital of "
        "France? [/INST]",
        "Document:\nQuery:\n", "C:\\ path", ":\\ escaped", "tab\tafter <s>\tspecial",
    ]
    # every added token glued to text, spaces and other added tokens
    for t in s:
        cases += [t + "x", "x" + t, " " + t + " ", t + t, t + " " + t, "\n" + t + "\n"]
    rnd = random.Random(1234)
    alphabet = list("abcdefgh  \n\t.,é中😀") + [SPACE_MARK] + s
    for _ in range(200):  # random mixtures
        cases.append("".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 40))))
    return cases


def convert(base, clara, out_dir, name):
    out = os.path.join(out_dir, name + ".gguf")
    p = subprocess.run([CLARA, "convert", "--base", base, "--clara", clara, "--out", out,
                        "--type", "f32", "--quiet"], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("convert %s failed: %s" % (name, p.stderr.strip()))
    return out


def metaspace_base(out_dir):
    """A copy of the fixture base model whose tokenizer.json is the Metaspace flavour."""
    return base_with(out_dir, "base_metaspace", os.path.join(TOKDIR, "tokenizer-metaspace.json"))


def base_with(out_dir, name, tok_json, edit=None):
    """A copy of the fixture base model with tok_json (after edit(obj), if given) as its
    tokenizer.json; returns (directory, path of that tokenizer.json)."""
    d = os.path.join(out_dir, name)
    if not os.path.exists(d):
        shutil.copytree(os.path.join(FIXTURES, "base"), d)
        j = json.load(open(tok_json, encoding="utf-8"))
        if edit:
            edit(j)
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False)
    return d


def run_batch(model, lines, decode=False):
    """`clara tokenize --input-file` over JSON lines; returns (returncode, parsed outputs, stderr)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
        for x in lines:
            f.write(json.dumps(x) + "\n")
        path = f.name
    cmd = [CLARA, "tokenize", "--model", model, "--input-file", path] + (["--decode"] if decode else [])
    p = subprocess.run(cmd, capture_output=True)
    os.unlink(path)
    outs = [json.loads(l) for l in p.stdout.decode("utf-8").splitlines()] if p.returncode == 0 else []
    return p.returncode, outs, p.stderr.decode("utf-8", "replace")
