"""Reference CLaRa pipeline (spec §2, §3.1, §5-§11, §14.4) on top of ref_model and ref_tokenizer.

Loads a Hugging Face checkpoint pair (Mistral base folder + CLaRa variant folder), applies the
adapter-loading policy of §6, and implements compression, the QA/paraphrase prompts, the
embedding replacement, greedy generation and E2E retrieval, in float32 numpy.

The object keeps the "active adapter" state the way the PyTorch reference does (§5): right after
loading, all loaded adapters are active (summed); compression switches to encoder_adapter, query
encoding to query_reasoner_adapter, generation to decoder_adapter when one is loaded and otherwise
leaves the previous choice in place.
"""

import json
import os

import numpy as np

import ref_model as rm
import ref_tokenizer as rt

F32 = np.float32

PAD_ID = 1  # CLaRa sets pad = bos = 1 (§3.1)
EOS_ID = 2
DECODER_MAX_LEN = 1024  # prompt truncation (§8.3)

QA_SYSTEM = (
    "You are a helpful assistant. Your task is to extract relevant information from provided "
    "documents and to answer to questions as briefly as possible."
)
PARAPHRASE_SYSTEM = (
    "You are a helpful assistant. Your task is follow the instructions to paraphrase the "
    "background information."
)
PARAPHRASE_TEMPLATES = [
    "Background: {docs} means the same as",
    "Background: {docs} Can you put the above sentences in your own terms?",
    "Background: {docs} Please provide a reinterpretation of the preceding background text.",
    "These two expressions are equivalent in essence:\n(1) {docs}\n(2)",
    "Background: {docs} is a paraphrase of what?",
    "Background: {docs} Could you give me a different version of the background sentences above?",
    "In other words, background: {docs} is just another way of saying:",
    "You're getting across the same point whether you say background: {docs} or",
    "Background: {docs} After unpacking the ideas in the background information above, we got:",
    "Background: {docs} Please offer a restatement of the background sentences I've just read.",
    "Background: {docs}, which also means:",
    "Strip away the mystery, and you'll find background: {docs} is simply another rendition of:",
    "The essence of background: {docs} is captured again in the following statement:",
]

ENC = "encoder_adapter"
DEC = "decoder_adapter"
QRY = "query_reasoner_adapter"

_MODULE_PATHS = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}


class ClaraError(Exception):
    """A request the reference cannot serve (spec §14.4) or a malformed checkpoint."""


# ---- file reading (delegated to tests/reference/readers.py, written independently) ----------


def _readers():
    import readers  # noqa: E402  (sibling module owned by the fixtures helper)

    return readers


def _f32(a):
    """float32 copy of a readers.Tensor (BF16 widened exactly) or of an array."""
    if hasattr(a, "f32"):
        a = a.f32()
    return np.ascontiguousarray(np.asarray(a, dtype=F32))


def load_base_tensors(base_dir):
    """All base tensors as float32, following model.safetensors.index.json (§2.1)."""
    rd = _readers()
    if os.path.exists(os.path.join(base_dir, "model.safetensors.index.json")):
        tensors = rd.read_safetensors_index(base_dir)
    else:
        tensors = rd.read_safetensors(os.path.join(base_dir, "model.safetensors"))[0]
    return {name: _f32(t) for name, t in tensors.items()}


def load_pth(path):
    return _readers().read_pth(path)


# ---- model -----------------------------------------------------------------------------------


def build_weights(tensors, cfg):
    hp = rm.Hparams(
        hidden=cfg["hidden_size"],
        layers=cfg["num_hidden_layers"],
        heads=cfg["num_attention_heads"],
        kv_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
        ffn=cfg["intermediate_size"],
        vocab=cfg["vocab_size"],
        eps=cfg.get("rms_norm_eps", 1e-5),
        theta=cfg.get("rope_theta", 10000.0),
        head_dim=cfg.get("head_dim"),
    )

    def get(name):
        if name not in tensors:
            raise ClaraError(f"base: missing tensor {name}")
        return tensors[name]

    layers = []
    for i in range(hp.layers):
        p = f"model.layers.{i}."
        lw = {
            "attn_norm": get(p + "input_layernorm.weight"),
            "mlp_norm": get(p + "post_attention_layernorm.weight"),
        }
        for short, path in _MODULE_PATHS.items():
            lw[short] = get(p + path + ".weight")
        layers.append(lw)
    embed = get("model.embed_tokens.weight")
    lm_head = tensors.get("lm_head.weight", embed)  # only when tie_word_embeddings
    return rm.Weights(hp, embed, lm_head, get("model.norm.weight"), layers)


def parse_adapter(name, state, n_layers, lora_r):
    """Keeps only lora_A/lora_B keys (§2.4); a module with no tensors contributes 0 (§6)."""
    mods = {}
    for i in range(n_layers):
        for short, path in _MODULE_PATHS.items():
            key = f"model.layers.{i}.{path}"
            a = state.get(key + ".lora_A.weight")
            b = state.get(key + ".lora_B.weight")
            if a is None and b is None:
                continue
            if a is None or b is None:
                raise ClaraError(f"adapters.pth: {name}: {key} has only one of lora_A/lora_B")
            a, b = _f32(a), _f32(b)
            if a.shape[0] != lora_r or b.shape[1] != lora_r:
                raise ClaraError(f"adapters.pth: {name}: {key} rank differs from lora_r={lora_r}")
            mods[(i, short)] = (a, b)
    # lora_alpha = 2·lora_r (§2.4) ⇒ scaling = alpha / r = 2.
    return rm.Adapter(name, mods, (2.0 * lora_r) / lora_r)


def select_adapters(file_adapters, cfg, policy, n_layers):
    """The §6 policy. file_adapters: ordered dict name -> state dict. Returns ordered dict."""
    if policy not in ("hf", "all"):
        raise ClaraError(f"unknown adapter policy {policy!r}")
    pure = policy == "all" or bool(cfg.get("pure_inference", False))
    stage = cfg.get("training_stage")
    r = int(cfg.get("lora_r", 16))
    loaded = {}
    if not pure and stage in ("stage1_2", "stage2_reasoning"):
        # Freshly initialised decoder_adapter: B = 0, so it contributes exactly nothing.
        loaded[DEC] = rm.Adapter(DEC, {}, 2.0)
    for name, state in file_adapters.items():
        if not pure:
            if stage == "stage1" and name == QRY:
                continue
            if stage == "stage1_2" and name in (QRY, DEC):
                continue
            if stage == "stage2_reasoning" and name == DEC:
                continue
        loaded[name] = parse_adapter(name, state, n_layers, r)
    if stage == "stage2" and QRY not in file_adapters and ENC in loaded:
        loaded[QRY] = loaded[ENC].copy(QRY)
    return loaded


class Clara:
    def __init__(self, base_dir, clara_dir, adapter_policy="hf"):
        with open(os.path.join(base_dir, "config.json"), encoding="utf-8") as f:
            self.base_cfg = json.load(f)
        with open(os.path.join(clara_dir, "config.json"), encoding="utf-8") as f:
            self.cfg = json.load(f)
        cfg = self.cfg
        self.doc_max_length = int(cfg["doc_max_length"])
        self.compr_rate = int(cfg["compr_rate"])
        self.n_mem = self.doc_max_length // self.compr_rate
        self.sep = bool(cfg.get("sep", False))
        self.different_mem_tokens = bool(cfg.get("different_mem_tokens", False))
        self.generation_top_k = int(cfg.get("generation_top_k", 1))

        self._load_tokenizer(base_dir)
        self._load_weights(base_dir, clara_dir)
        self.adapters = {}
        if cfg.get("lora", True):
            file_adapters = load_pth(os.path.join(clara_dir, "adapters.pth"))
            self.adapters = select_adapters(
                file_adapters, cfg, adapter_policy, self.weights.hp.layers
            )
        # from_pretrained ends with set_adapter(all loaded adapters) (§5).
        self.active = list(self.adapters.values())

    def _load_tokenizer(self, base_dir):
        self.tok = rt.load_tokenizer(os.path.join(base_dir, "tokenizer.json"))
        self.bos_token = "<s>"
        cfg_path = os.path.join(base_dir, "tokenizer_config.json")
        if os.path.exists(cfg_path):
            with open(cfg_path, encoding="utf-8") as f:
                tc = json.load(f)
            bos = tc.get("bos_token", "<s>")
            self.bos_token = bos["content"] if isinstance(bos, dict) else bos
        self.base_vocab = self.tok.size()
        if self.different_mem_tokens:
            self.mem_strings = [f"<MEM{i}>" for i in range(self.n_mem)]
            added = self.tok.add_special_tokens(self.mem_strings + ["<AE>", "<ENC>", "<SEP>"])
            self.mem_ids = added[: self.n_mem]
        else:
            self.mem_strings = ["<MEM>"] * self.n_mem
            added = self.tok.add_special_tokens(["<MEM>", "<AE>", "<ENC>", "<SEP>"])
            self.mem_ids = [added[0]] * self.n_mem
        self.ae_id, self.enc_id, self.sep_id = added[-3:]
        self.vocab_size = self.tok.size()

    def _load_weights(self, base_dir, clara_dir):
        tensors = load_base_tensors(base_dir)
        tables = load_pth(os.path.join(clara_dir, "decoder_first_last_layers.pth"))
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            if name not in tables:
                raise ClaraError(f"decoder_first_last_layers.pth: missing {name}")
            t = _f32(tables[name])
            if t.shape[0] != self.vocab_size:
                raise ClaraError(
                    f"decoder_first_last_layers.pth: {name} has {t.shape[0]} rows, "
                    f"expected {self.vocab_size} (base {self.base_vocab} + CLaRa tokens)"
                )
            tensors[name] = t  # replaces the base table entirely (§2.5)
        cfg = dict(self.base_cfg)
        cfg["vocab_size"] = self.vocab_size
        self.weights = build_weights(tensors, cfg)

    # ---- helpers ------------------------------------------------------------------------------

    def set_adapter(self, name):
        if name not in self.adapters:
            raise ClaraError(f"adapter {name} is not loaded (needed for this mode)")
        self.active = [self.adapters[name]]

    def check_plain_text(self, text, what):
        """§14.4: literal special-token strings in user text would become special ids."""
        for kind, val, _ in self.tok.split_added(text):
            if kind == "added":
                raise ClaraError(
                    f"{what} contains the special token {self.tok.piece(val)!r} literally"
                )

    def embed(self, ids):
        return self.weights.embed[np.asarray(ids, dtype=np.int64)]

    # ---- §7 compression -----------------------------------------------------------------------

    def encoder_row(self, text):
        """(ids, mask, n_real) of one §7 row: <ENC><s>text</s>, truncated, left padded, memory."""
        m = self.doc_max_length + 3
        ids = self.tok.encode("<ENC>" + "<s>" + text + "</s>")[:m]
        n_real = len(ids)
        row = [PAD_ID] * (m - n_real) + ids + list(self.mem_ids)
        mask = [0] * (m - n_real) + [1] * (n_real + self.n_mem)
        return row, mask, n_real

    def compress(self, texts, adapter=ENC, what="document"):
        """Returns (vectors [N, n_mem, H], n_real list). Uses `adapter` (encoder by default)."""
        for t in texts:
            self.check_plain_text(t, what)
        self.set_adapter(adapter)
        if not texts:
            return np.zeros((0, self.n_mem, self.weights.hp.hidden), F32), []
        rows = [self.encoder_row(t) for t in texts]
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        mask = np.array([r[1] for r in rows], dtype=np.int64)
        counts = [r[2] for r in rows]
        pos = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)  # column index (§4.2)
        out = rm.forward(self.weights, self.embed(ids), mask, pos, self.active)
        mem = set(self.mem_ids)
        vecs = []
        for b in range(ids.shape[0]):
            sel = [t for t in range(ids.shape[1]) if int(ids[b, t]) in mem]  # by id, as the reference
            if len(sel) != self.n_mem:
                raise ClaraError(f"{what} {b}: found {len(sel)} memory tokens, expected {self.n_mem}")
            vecs.append(out[b, sel])
        return np.stack(vecs).astype(F32), counts

    # ---- §8 prompts ---------------------------------------------------------------------------

    def docs_block(self, k):
        return ("".join(self.mem_strings) + "<SEP>") * k

    def chat(self, system, user):
        """The chat template of §8.2 with [system, user]."""
        return self.bos_token + " [INST] " + system + "\n\n" + user + " [/INST]"

    def qa_prompt(self, question, k):
        user = "Background:\n" + self.docs_block(k) + "\n\nQuestion:" + question
        user = user.replace(":\\ ", ": ")
        return self.chat(QA_SYSTEM, user)

    def paraphrase_prompt(self, k, template):
        if not 0 <= template < len(PARAPHRASE_TEMPLATES):
            raise ClaraError(f"paraphrase template index {template} is not in 0..12")
        user = PARAPHRASE_TEMPLATES[template].replace("{docs}", self.docs_block(k))
        user = user.replace(":\\ ", ": ")
        return self.chat(PARAPHRASE_SYSTEM, user)

    def prompt_ids(self, prompt):
        return self.tok.encode(prompt)[:DECODER_MAX_LEN]  # right truncation

    def replace_embeddings(self, ids, vectors):
        """§8.4: overwrite the memory placeholders with the k documents' vectors (bug-compatible
        with sep=false: document j starts at first + j·n_mem)."""
        emb = self.embed(ids).copy()
        k = vectors.shape[0]
        try:
            first = list(ids).index(self.mem_ids[0])
        except ValueError:
            raise ClaraError("prompt has no memory slot (truncated at 1024 tokens?)") from None
        slot = self.n_mem + (1 if self.sep else 0)
        for j in range(k):
            start = first + j * slot
            if start + self.n_mem > len(ids):
                raise ClaraError(f"prompt truncated at {DECODER_MAX_LEN} tokens cuts memory slot {j}")
            emb[start : start + self.n_mem] = vectors[j]
        return emb

    # ---- §9 generation ------------------------------------------------------------------------

    def use_decoder_adapter(self):
        """§5: decoder_adapter if loaded; otherwise the previously active set stays active."""
        if DEC in self.adapters:
            self.active = [self.adapters[DEC]]

    def generate(self, prompt_embs, max_new_tokens):
        """Greedy generation for a batch of prompts given as embeddings [T_b, H] (left padded).

        Returns per row: (new ids, first-step logits, top-2 gaps per step).
        """
        bsz = len(prompt_embs)
        t0 = max(e.shape[0] for e in prompt_embs)
        hid = self.weights.hp.hidden
        x = np.zeros((bsz, t0, hid), F32)
        mask = np.zeros((bsz, t0), np.int64)
        for b, e in enumerate(prompt_embs):
            x[b, t0 - e.shape[0] :] = e
            x[b, : t0 - e.shape[0]] = self.embed([PAD_ID])
            mask[b, t0 - e.shape[0] :] = 1
        new_ids = [[] for _ in range(bsz)]
        first_logits = [None] * bsz
        gaps = [[] for _ in range(bsz)]
        done = [False] * bsz
        for _step in range(max_new_tokens):
            pos = np.cumsum(mask, axis=1) - 1
            pos = np.where(mask == 0, 1, pos)  # generate(): pads get position 1 (§4.2)
            out = rm.forward(self.weights, x, mask, pos, self.active)
            lg = rm.logits(self.weights, out[:, -1, :])
            step_ids = []
            for b in range(bsz):
                if done[b]:
                    step_ids.append(PAD_ID)  # finished rows are padded (§9)
                    continue
                row = lg[b]
                nxt = greedy_pick(row)
                if first_logits[b] is None:
                    first_logits[b] = row.copy()
                top2 = np.sort(row)[-2:]
                gaps[b].append(float(top2[1] - top2[0]))
                new_ids[b].append(nxt)
                step_ids.append(nxt)
                if nxt == EOS_ID:
                    done[b] = True
            if all(done):
                break
            x = np.concatenate([x, self.embed(step_ids)[:, None, :]], axis=1)
            mask = np.concatenate([mask, np.ones((bsz, 1), np.int64)], axis=1)
        return [(new_ids[b], first_logits[b], gaps[b]) for b in range(bsz)]

    # ---- entry points -------------------------------------------------------------------------

    def answer_from_vectors(self, questions, vectors, max_new_tokens, prompt_fn=None):
        """§8 + §9 for B questions with k = len(vectors) / B documents each, in order."""
        bsz = len(questions)
        if bsz == 0 or vectors.shape[0] % bsz != 0:
            raise ClaraError("every question must have the same number of documents")
        k = vectors.shape[0] // bsz
        embs, prompts = [], []
        for b, q in enumerate(questions):
            prompt = prompt_fn(k) if prompt_fn else self.qa_prompt(q, k)
            ids = self.prompt_ids(prompt)
            embs.append(self.replace_embeddings(ids, vectors[b * k : (b + 1) * k]))
            prompts.append(ids)
        self.use_decoder_adapter()
        res = self.generate(embs, max_new_tokens)
        return [
            {
                "answer": self.tok.decode(ids),
                "ids": ids,
                "prompt_ids": prompts[b],
                "first_logits": fl,
                "top2_gaps": g,
            }
            for b, (ids, fl, g) in enumerate(res)
        ]

    def ask(self, questions, documents, max_new_tokens=128):
        """generate_from_text: documents[b] is the list of documents of question b."""
        if not documents or len({len(d) for d in documents}) != 1:
            raise ClaraError("every question must have the same number of documents")
        for q in questions:
            self.check_plain_text(q, "question")
        flat = [d for docs in documents for d in docs]
        vecs, _ = self.compress(flat)
        return self.answer_from_vectors(questions, vecs, max_new_tokens)

    def paraphrase(self, documents, template, max_new_tokens=128):
        """generate_from_paraphrase for one row of k documents."""
        vecs, _ = self.compress(documents)
        return self.answer_from_vectors(
            [""], vecs, max_new_tokens, prompt_fn=lambda k: self.paraphrase_prompt(k, template)
        )[0]

    def retrieve(self, question, documents, max_new_tokens=128, top_k=None):
        """generate_from_questions for one question and its N candidates (§10)."""
        k = self.generation_top_k if top_k is None else int(top_k)
        if k < 1 or k > len(documents):
            raise ClaraError(f"top-k {k} needs at least {k} candidate documents, got {len(documents)}")
        self.check_plain_text(question, "question")
        qv, _ = self.compress([question], adapter=QRY, what="question")
        dv, _ = self.compress(documents, adapter=ENC)
        scores = cosine_scores(qv[0].reshape(-1), dv.reshape(dv.shape[0], -1))
        order = np.argsort(-scores, kind="stable")[:k]  # descending, lowest index on ties
        res = self.answer_from_vectors([question], dv[order], max_new_tokens)[0]
        res["top_k"] = [int(i) for i in order]
        res["scores"] = [float(s) for s in scores]
        return res


def greedy_pick(logits_row):
    """argmax over all V logits; the lowest index wins ties (§9)."""
    return int(np.argmax(logits_row))


def cosine_scores(q, docs):
    """(q/‖q‖)·(d/‖d‖) with norms floored at 1e-12 (F.normalize semantics), float32."""
    qn = q / max(np.float32(np.linalg.norm(q)), F32(1e-12))
    dn = np.linalg.norm(docs, axis=1, keepdims=True).astype(F32)
    dd = docs / np.maximum(dn, F32(1e-12))
    return (dd @ qn.astype(F32)).astype(F32)
