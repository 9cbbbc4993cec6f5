"""Reference tokenizer for CLaRa (spec §3): a plain-Python reading of a Hugging Face tokenizer.json.

Implements exactly what the spec says the fast tokenizer does with Mistral's file:
  1. split on added tokens (longest match at the leftmost position),
  2. normalize each text segment on its own (legacy Prepend("▁") + Replace(" " → "▁"), or the
     Metaspace pre-tokenizer with prepend_scheme first/always/never, chosen from the file),
  3. BPE over the whole segment by merge rank (lowest rank first, leftmost on ties), with byte
     fallback to <0xXX> pieces and <unk>,
and decoding with skip_special_tokens (ByteFallback runs → UTF-8 or one U+FFFD per byte piece,
then the file's decoder chain: Replace / Fuse / Strip / Metaspace).

Written from the spec and from the tokenizer.json format, not from any other implementation.
"""

import heapq
import json

SPACE_MARK = "\u2581"  # "▁", SentencePiece's visible space


class TokenizerError(Exception):
    pass


class Tokenizer:
    def __init__(self, tok_json):
        model = tok_json.get("model") or {}
        if model.get("type", "BPE") != "BPE":
            raise TokenizerError("tokenizer.json: only BPE models are supported")
        if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
            raise TokenizerError("tokenizer.json: subword prefix/suffix not supported")
        self.vocab = dict(model["vocab"])
        self.ranks = {}
        for rank, m in enumerate(model.get("merges", [])):
            a, b = m.split(" ", 1) if isinstance(m, str) else (m[0], m[1])
            # The first occurrence of a pair wins (a later duplicate cannot lower its rank).
            self.ranks.setdefault((a, b), rank)
        self.byte_fallback = bool(model.get("byte_fallback", False))
        self.fuse_unk = bool(model.get("fuse_unk", False))
        self.ignore_merges = bool(model.get("ignore_merges", False))
        unk = model.get("unk_token")
        self.unk_id = self.vocab.get(unk) if unk is not None else None

        self.added = {}  # content -> id
        self.special_ids = set()
        for t in tok_json.get("added_tokens", []):
            self._register_added(t["content"], t["id"], t.get("special", False))

        self.id_to_piece = {}
        for piece, i in self.vocab.items():
            self.id_to_piece[i] = piece
        for content, i in self.added.items():
            self.id_to_piece[i] = content

        self._setup_normalization(tok_json.get("normalizer"), tok_json.get("pre_tokenizer"))
        self.decoder = tok_json.get("decoder")

    # ---- construction helpers -------------------------------------------------------------

    def _register_added(self, content, i, special):
        self.added[content] = i
        if special:
            self.special_ids.add(i)

    def size(self):
        """len(tokenizer) in transformers terms: next free id for add_special_tokens."""
        ids = list(self.vocab.values()) + list(self.added.values())
        return max(len(self.vocab), max(ids) + 1 if ids else 0)

    def add_special_tokens(self, strings):
        """Adds new special tokens with consecutive ids from size() (spec §3.1); returns ids."""
        out = []
        for s in strings:
            if s in self.added or s in self.vocab:
                raise TokenizerError(f"added token {s!r} already exists")
            i = self.size()
            self._register_added(s, i, True)
            self.id_to_piece[i] = s
            out.append(i)
        return out

    def _setup_normalization(self, normalizer, pre_tokenizer):
        # Normalizer: a list of ("prepend", s) / ("replace", a, b) steps applied per segment.
        self.norm_steps = []
        self._collect_normalizer(normalizer)
        # Pre-tokenizer: None or Metaspace.
        self.metaspace = None
        if pre_tokenizer is not None:
            pt = pre_tokenizer
            if pt.get("type") == "Sequence" and len(pt.get("pretokenizers", [])) == 1:
                pt = pt["pretokenizers"][0]
            if pt.get("type") != "Metaspace":
                raise TokenizerError(f"tokenizer.json: unsupported pre_tokenizer {pt.get('type')}")
            scheme = pt.get("prepend_scheme")
            if scheme is None:  # older serialization
                scheme = "always" if pt.get("add_prefix_space", True) else "never"
            if scheme not in ("first", "always", "never"):
                raise TokenizerError(f"tokenizer.json: bad prepend_scheme {scheme!r}")
            self.metaspace = {
                "replacement": pt.get("replacement", SPACE_MARK),
                "scheme": scheme,
                "split": bool(pt.get("split", True)),
            }

    def _collect_normalizer(self, n):
        if n is None:
            return
        typ = n.get("type")
        if typ == "Sequence":
            for sub in n.get("normalizers", []):
                self._collect_normalizer(sub)
        elif typ == "Prepend":
            self.norm_steps.append(("prepend", n["prepend"]))
        elif typ == "Replace":
            pat = n["pattern"]
            if "String" not in pat:
                raise TokenizerError("tokenizer.json: only String Replace patterns are supported")
            self.norm_steps.append(("replace", pat["String"], n["content"]))
        else:
            raise TokenizerError(f"tokenizer.json: unsupported normalizer {typ}")

    # ---- encoding -------------------------------------------------------------------------

    def split_added(self, text):
        """Yields ("added", id, start) and ("text", segment, start) in order (spec §3.2 step 1)."""
        if not self.added:
            if text:
                yield ("text", text, 0)
            return
        by_first = {}
        for content in self.added:
            if content:
                by_first.setdefault(content[0], []).append(content)
        for lst in by_first.values():
            lst.sort(key=len, reverse=True)  # longest first
        seg_start = 0
        i = 0
        n = len(text)
        while i < n:
            match = None
            for cand in by_first.get(text[i], ()):
                if text.startswith(cand, i):
                    match = cand
                    break
            if match is None:
                i += 1
                continue
            if i > seg_start:
                yield ("text", text[seg_start:i], seg_start)
            yield ("added", self.added[match], i)
            i += len(match)
            seg_start = i
        if seg_start < n:
            yield ("text", text[seg_start:], seg_start)

    def normalize_segment(self, seg, start):
        """Returns the list of words BPE sees for one text segment (spec §3.2 step 2)."""
        if not seg:
            return []
        for step in self.norm_steps:
            if step[0] == "prepend":
                seg = step[1] + seg
            else:
                seg = seg.replace(step[1], step[2])
        ms = self.metaspace
        if ms is None:
            return [seg]
        rep = ms["replacement"]
        seg = seg.replace(" ", rep)
        # tokenizers: never prepend when the segment already starts with the replacement;
        # "first" prepends only to the segment that starts at offset 0 of the original input.
        if not seg.startswith(rep) and (
            ms["scheme"] == "always" or (ms["scheme"] == "first" and start == 0)
        ):
            seg = rep + seg
        if not ms["split"]:
            return [seg]
        words, cur = [], ""
        for ch in seg:  # split before every replacement char (MergedWithNext)
            if ch == rep and cur:
                words.append(cur)
                cur = ""
            cur += ch
        if cur:
            words.append(cur)
        return words

    def _initial_symbols(self, word):
        """One symbol per character; byte fallback or <unk> for characters not in the vocab."""
        syms = []  # list of [piece, is_unk]
        for ch in word:
            if ch in self.vocab:
                syms.append([ch, False])
                continue
            if self.byte_fallback:
                pieces = ["<0x%02X>" % b for b in ch.encode("utf-8")]
                if all(p in self.vocab for p in pieces):
                    syms.extend([p, False] for p in pieces)
                    continue
            if self.unk_id is None:
                raise TokenizerError(f"character {ch!r} not in vocabulary and no unk token")
            if self.fuse_unk and syms and syms[-1][1]:
                syms[-1][0] += ch  # fused into the previous unk symbol
            else:
                syms.append([ch, True])
        return syms

    def bpe_word(self, word):
        """BPE of one word: merge lowest-rank adjacent pair first, leftmost on ties (§3.2 step 3)."""
        if self.ignore_merges and word in self.vocab:
            return [self.vocab[word]]
        syms = self._initial_symbols(word)
        n = len(syms)
        pieces = [s[0] for s in syms]
        unk = [s[1] for s in syms]
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        alive = [True] * n
        heap = []

        def push(i):
            j = nxt[i]
            if j < n and not unk[i] and not unk[j]:
                r = self.ranks.get((pieces[i], pieces[j]))
                if r is not None:
                    # i is the symbol index of the left part; indices grow left to right and a
                    # merge keeps the left index, so i orders candidates by position.
                    heapq.heappush(heap, (r, i, pieces[i], pieces[j]))

        for i in range(n - 1):
            push(i)
        while heap:
            r, i, a, b = heapq.heappop(heap)
            j = nxt[i] if alive[i] else n
            if not alive[i] or j >= n or pieces[i] != a or pieces[j] != b:
                continue  # stale entry
            pieces[i] = a + b
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prev[nxt[j]] = i
            if prev[i] >= 0:
                push(prev[i])
            push(i)
        ids = []
        for i in range(n):
            if not alive[i]:
                continue
            if unk[i]:
                ids.append(self.unk_id)
            elif pieces[i] in self.vocab:
                ids.append(self.vocab[pieces[i]])
            else:
                raise TokenizerError(f"merged piece {pieces[i]!r} missing from vocabulary")
        return ids

    def encode(self, text):
        """Encodes with add_special_tokens=False (the only mode CLaRa uses)."""
        ids = []
        for kind, val, start in self.split_added(text):
            if kind == "added":
                ids.append(val)
            else:
                for w in self.normalize_segment(val, start):
                    ids.extend(self.bpe_word(w))
        return ids

    def encode_segment(self, segment, start=1):
        """Encodes a text with no added-token matching, as one segment (for per-segment checks)."""
        ids = []
        for w in self.normalize_segment(segment, start):
            ids.extend(self.bpe_word(w))
        return ids

    # ---- decoding -------------------------------------------------------------------------

    def piece(self, i):
        if i not in self.id_to_piece:
            raise TokenizerError(f"token id {i} out of range")
        return self.id_to_piece[i]

    def decode(self, ids, skip_special_tokens=True):
        toks = [self.piece(i) for i in ids if not (skip_special_tokens and i in self.special_ids)]
        if self.decoder is None:
            return "".join(toks)
        return "".join(self._apply_decoder(self.decoder, toks))

    def _apply_decoder(self, d, toks):
        typ = d.get("type")
        if typ == "Sequence":
            for sub in d.get("decoders", []):
                toks = self._apply_decoder(sub, toks)
            return toks
        if typ == "Replace":
            pat = d["pattern"]
            if "String" not in pat:
                raise TokenizerError("tokenizer.json: only String Replace decoders are supported")
            return [t.replace(pat["String"], d["content"]) for t in toks]
        if typ == "ByteFallback":
            return _byte_fallback(toks)
        if typ == "Fuse":
            return ["".join(toks)]
        if typ == "Strip":
            return [_strip(t, d["content"], d.get("start", 0), d.get("stop", 0)) for t in toks]
        if typ == "Metaspace":
            rep = d.get("replacement", SPACE_MARK)
            scheme = d.get("prepend_scheme")
            if scheme is None:
                scheme = "always" if d.get("add_prefix_space", True) else "never"
            out = []
            for i, t in enumerate(toks):
                # The first token loses every replacement char when a prefix was prepended.
                out.append(t.replace(rep, "" if (i == 0 and scheme != "never") else " "))
            return out
        raise TokenizerError(f"tokenizer.json: unsupported decoder {typ}")


def _byte_fallback(toks):
    out, run = [], []

    def flush():
        if run:
            try:
                out.append(bytes(run).decode("utf-8"))
            except UnicodeDecodeError:
                out.extend(["\ufffd"] * len(run))
            run.clear()

    for t in toks:
        if len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            try:
                run.append(int(t[3:5], 16))
                continue
            except ValueError:
                pass
        flush()
        out.append(t)
    flush()
    return out


def _strip(t, content, start, stop):
    i = 0
    while i < start and i < len(t) and t[i] == content:
        i += 1
    t = t[i:]
    j = 0
    while j < stop and j < len(t) and t[len(t) - 1 - j] == content:
        j += 1
    return t[: len(t) - j]


def load_tokenizer(path):
    with open(path, "r", encoding="utf-8") as f:
        return Tokenizer(json.load(f))
