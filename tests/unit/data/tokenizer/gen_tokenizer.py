#!/usr/bin/python3
"""gen_tokenizer.py - builds the small tokenizer test data for tests/unit/test_hf_tokenizer.c.

Trains a tiny SentencePiece BPE model (byte fallback, Llama/Mistral-like options) on passages of
tests/data/wiki-passages-qa.jsonl, converts it to a Hugging Face tokenizer.json in the
"legacy" Llama/Mistral layout (what transformers' LlamaConverter wrote for Mistral-7B v0.2), and
writes expected.json with the values Python's sentencepiece reports, which the C reader must match.
Run with Debian's /usr/bin/python3 (it has the sentencepiece module):

    /usr/bin/python3 tests/unit/data/tokenizer/gen_tokenizer.py [path/to/wiki-passages-qa.jsonl]

Outputs (next to this script): tokenizer.model, tokenizer.json, tokenizer_metaspace.json,
tokenizer_clara.json, tokenizer_config.json, tokenizer_config_objects.json, expected.json.
"""
import json
import os
import sys
import tempfile

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "data", "wiki-passages-qa.jsonl")

# Mistral-7B-Instruct-v0.2's current chat template (spec section 8.2).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must "
    "alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception "
    "of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)


def training_text():
    lines = []
    with open(DATA, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 60:
                break
            rec = json.loads(line)
            for doc in rec["docs"][:3]:
                lines.extend(s.strip() for s in doc.split("\n") if s.strip())
            lines.extend(rec["question"])
    # a few non-ASCII lines so that multi-byte pieces (and code-point splitting) are exercised
    lines += ["café naïve résumé façade déjà vu"] * 30 + ["東京 大阪 京都 東京都"] * 30
    return lines


def train(tmp):
    path = os.path.join(tmp, "corpus.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(training_text()) + "\n")
    prefix = os.path.join(tmp, "tok")
    # Llama/Mistral-style options: BPE, byte fallback, digits split, identity normalization,
    # whitespace kept as is (allow_whitespace_only_pieces gives pieces like "▁▁").
    spm.SentencePieceTrainer.train(
        input=path, model_prefix=prefix, model_type="bpe", vocab_size=1000, byte_fallback=True,
        num_threads=1, split_digits=True, allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity",
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2)
    with open(prefix + ".model", "rb") as f:
        return f.read()


def piece_type(sp, i):
    if sp.is_unknown(i):
        return 2
    if sp.is_control(i):
        return 3
    if sp.is_unused(i):
        return 5
    if sp.is_byte(i):
        return 6
    return 1


def spm_merges(vocab, vocab_scores):
    """Merges the way transformers' SentencePieceExtractor.extract(vocab_scores) built them when
    Mistral's tokenizer.json was written (transformers 4.3x): every split of every piece into two
    pieces of the vocabulary (split at code points), splits of one piece ordered by (left id,
    right id), then all stably sorted by the piece's score, highest first."""
    merges = []
    for merge, score in vocab_scores.items():
        local = []
        for k in range(1, len(merge)):
            left, right = merge[:k], merge[k:]
            if left in vocab and right in vocab:
                local.append((left, right, score))
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: x[2], reverse=True)
    return [(a, b) for a, b, _ in merges]


def added(content, i, special=True):
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": not special, "special": special}


def legacy_json(vocab, merges):
    """tokenizer.json in the layout of Mistral-7B-Instruct-v0.2 (LlamaConverter, legacy=True)."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added("<unk>", 0), added("<s>", 1), added("</s>", 2)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [], "special_tokens": {
                               "<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }


def main():
    with tempfile.TemporaryDirectory() as tmp:
        model = train(tmp)
    with open(os.path.join(HERE, "tokenizer.model"), "wb") as f:
        f.write(model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    n = sp.get_piece_size()
    pieces = [sp.id_to_piece(i) for i in range(n)]
    scores = [sp.get_score(i) for i in range(n)]
    types = [piece_type(sp, i) for i in range(n)]

    # LlamaConverter.vocab(): the first three pieces are forced to <unk>, <s>, </s> with score 0
    vocab_scores = {"<unk>": 0.0, "<s>": 0.0, "</s>": 0.0}
    vocab_scores.update((pieces[i], scores[i]) for i in range(3, n))
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = spm_merges(vocab, vocab_scores)

    def dump(name, obj):
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=2)
            f.write("\n")

    tj = legacy_json(vocab, merges)
    dump("tokenizer.json", tj)

    # Newer layout: Metaspace pre-tokenizer, no normalizer, merges as [left, right] pairs.
    meta = json.loads(json.dumps(tj))
    meta["normalizer"] = None
    meta["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                             "prepend_scheme": "first", "split": False}
    meta["decoder"] = {"type": "Metaspace", "replacement": "\u2581",
                       "prepend_scheme": "first", "split": False}
    meta["model"]["merges"] = [[a, b] for a, b in merges]
    meta["model"]["ignore_merges"] = False
    dump("tokenizer_metaspace.json", meta)

    # CLaRa-style: added special tokens that extend the vocabulary (spec 3.1, n_mem = 2), plus
    # one non-special added token (a user-defined one).
    clara = json.loads(json.dumps(tj))
    extra = ["<MEM0>", "<MEM1>", "<AE>", "<ENC>", "<SEP>"]
    clara["added_tokens"] += [added(t, n + k) for k, t in enumerate(extra)]
    clara["added_tokens"].append(added("[user tok]", n + len(extra), special=False))
    dump("tokenizer_clara.json", clara)

    dump("tokenizer_config.json", {
        "add_bos_token": True, "add_eos_token": False,
        "added_tokens_decoder": {str(i): {k: v for k, v in added(p, i).items() if k != "id"}
                                 for i, p in enumerate(["<unk>", "<s>", "</s>"])},
        "additional_special_tokens": [], "bos_token": "<s>", "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": True,
        "model_max_length": 1000000000000000019884624838656, "pad_token": None,
        "sp_model_kwargs": {}, "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
        "use_default_system_prompt": False})
    tok = {"__type": "AddedToken", "lstrip": False, "normalized": True, "rstrip": False,
           "single_word": False}
    dump("tokenizer_config_objects.json", {
        "add_bos_token": False, "add_eos_token": True,
        "bos_token": dict(tok, content="<s>"), "eos_token": dict(tok, content="</s>"),
        "unk_token": dict(tok, content="<unk>"), "pad_token": "</s>",
        "chat_template": [{"name": "tool_use", "template": "{{ tools }}"},
                          {"name": "default", "template": CHAT_TEMPLATE}],
        "legacy": False, "add_prefix_space": True})

    dump("expected.json", {
        "n_vocab": n, "pieces": pieces, "scores": scores, "types": types,
        "merges": [a + " " + b for a, b in merges],
        "unk_id": sp.unk_id(), "bos_id": sp.bos_id(), "eos_id": sp.eos_id(),
        "pad_id": sp.pad_id(), "clara_extra": extra, "chat_template": CHAT_TEMPLATE})
    print(f"{n} pieces, {len(merges)} merges, model {len(model)} bytes")


if __name__ == "__main__":
    main()
