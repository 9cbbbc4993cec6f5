"""Bad-files suite for `clara convert`: each case copies the good synthetic checkpoint (base +
one CLaRa variant) into a temporary directory, breaks exactly one thing, and checks that the
converter fails cleanly: exit status 1 (not a signal), stderr whose last line is
"clara convert: error: ..." naming the offending file (its basename) and the problem (a keyword),
no other stderr lines unless the case is known to warn first, no output or temporary file left in
the output directory, and no sanitizer report. The broken inputs are built here, from the bytes
of the good files (truncation, header edits) or re-serialized with the fixture writers."""

import collections
import json
import os
import shutil
import struct
import subprocess
import tempfile
import zipfile

import numpy as np

from harness import CLARA, FIXTURES, check, report, run
import gen_fixtures as gf
import pth_writer
import readers as rd

TMP = tempfile.mkdtemp(prefix="clara_bad_")
SHARD1 = "model-00001-of-00003.safetensors"
SHARD2 = "model-00002-of-00003.safetensors"
STORAGE = {"BF16": "BFloat16Storage", "F16": "HalfStorage", "F32": "FloatStorage"}


# --- helpers that build broken inputs -------------------------------------------------------------


def read_st(path):
    """(header dict, data bytes) of a safetensors file."""
    buf = open(path, "rb").read()
    (n,) = struct.unpack_from("<Q", buf, 0)
    return json.loads(buf[8:8 + n]), buf[8 + n:]


def write_st(path, header, data, raw_header=None):
    hb = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((-len(hb)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + data)


def edit_st(path, fn):
    """fn(header, data) edits the header in place (and may return new data bytes)."""
    h, d = read_st(path)
    new = fn(h, d)
    write_st(path, h, d if new is None else new)


def truncate(path, keep):
    """Cuts a file to its first `keep` bytes (negative: drops that many from the end)."""
    buf = open(path, "rb").read()
    open(path, "wb").write(buf[:keep] if keep >= 0 else buf[:len(buf) + keep])


def edit_json(path, fn):
    obj = json.load(open(path), object_pairs_hook=collections.OrderedDict)
    fn(obj)
    json.dump(obj, open(path, "w"), indent=2)


def to_refs(obj):
    """Tensors read by readers.read_pth -> pth_writer TensorRefs (contiguous copies)."""
    if isinstance(obj, dict):
        return collections.OrderedDict((k, to_refs(v)) for k, v in obj.items())
    if isinstance(obj, rd.Tensor):
        data = np.ascontiguousarray(obj.data)
        return pth_writer.contiguous(STORAGE[obj.dtype], data.shape, lambda d=data: d)
    return obj


def edit_pth(path, fn):
    """Reads a .pth, lets fn edit the nested dict of numpy-backed tensors, writes it back."""
    obj = rd.read_pth(path)
    fn(obj)
    pth_writer.write_pth(path, to_refs(obj))


def zip_entries(path):
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def write_zip(path, entries, deflate=()):
    """Rewrites a .pth archive with Python's zipfile (stored entries unless named in deflate)."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries:
            z.writestr(name, data, zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED)


def edit_zip(path, fn, deflate=()):
    ents = collections.OrderedDict(zip_entries(path))
    fn(ents)
    write_zip(path, list(ents.items()), deflate)


def edit_pickle(path, fn):
    def f(ents):
        ents["archive/data.pkl"] = fn(ents["archive/data.pkl"])

    edit_zip(path, f)


def cfg(name):
    return json.load(open(os.path.join(FIXTURES, name, "config.json")))


# --- the cases ------------------------------------------------------------------------------------

CASES = []


def case(name, file, keywords, variant="instruct16", warns=False):
    """Registers fn(base, clara, outdir) -> optional output path; `file` is the basename the
    message must name (or a function of the base directory giving it), `keywords` a list of which
    at least one must appear (case-insensitive)."""

    def deco(fn):
        CASES.append(dict(name=name, fn=fn, file=file, kw=keywords, variant=variant, warns=warns))
        return fn

    return deco


def shard(b, name=SHARD1):
    return os.path.join(b, name)


for cut in (0, 4, 8, 100, -1, -4096):
    case("safetensors truncated at %d" % cut, SHARD1, ["too short", "exceeds", "outside", "empty"])(
        lambda b, c, o, cut=cut: truncate(shard(b), cut))


@case("safetensors header length past the end", SHARD2, ["header length", "exceeds"])
def _(b, c, o):
    buf = bytearray(open(shard(b, SHARD2), "rb").read())
    struct.pack_into("<Q", buf, 0, len(buf) + 10)
    open(shard(b, SHARD2), "wb").write(buf)


@case("safetensors header length 2^63", SHARD2, ["header length", "exceeds"])
def _(b, c, o):
    buf = bytearray(open(shard(b, SHARD2), "rb").read())
    struct.pack_into("<Q", buf, 0, 1 << 63)
    open(shard(b, SHARD2), "wb").write(buf)


@case("safetensors bad JSON header", SHARD1, ["json"])
def _(b, c, o):
    h, d = read_st(shard(b))
    raw = json.dumps(h, separators=(",", ":")).encode()
    write_st(shard(b), None, d, raw_header=raw[:-5] + b"}}")


@case("safetensors unknown dtype", SHARD1, ["dtype"])
def _(b, c, o):
    edit_st(shard(b), lambda h, d: h["model.embed_tokens.weight"].__setitem__("dtype", "Q4_K"))


@case("safetensors shape/offset size mismatch", SHARD2, ["span", "need"])
def _(b, c, o):
    def f(h, d):
        t = h["model.layers.0.mlp.down_proj.weight"]
        t["shape"] = [t["shape"][0], t["shape"][1] + 1]

    edit_st(shard(b, SHARD2), f)


@case("safetensors overlapping tensors", SHARD2, ["overlap"])
def _(b, c, o):
    def f(h, d):
        # two norm weights of the same size: point the second at the first's bytes
        small = sorted(k for k in h if "layernorm" in k)
        h[small[1]]["data_offsets"] = list(h[small[0]]["data_offsets"])

    edit_st(shard(b, SHARD2), f)


@case("safetensors data_offsets past the end", SHARD1, ["outside", "past the end"])
def _(b, c, o):
    def f(h, d):
        t = h["model.embed_tokens.weight"]
        n = t["data_offsets"][1] - t["data_offsets"][0]
        t["data_offsets"] = [len(d) - n + 64, len(d) + 64]

    edit_st(shard(b), f)


@case("safetensors data_offsets reversed", SHARD1, ["outside", "begin"])
def _(b, c, o):
    def f(h, d):
        t = h["model.embed_tokens.weight"]
        t["data_offsets"] = [t["data_offsets"][1], t["data_offsets"][0]]

    edit_st(shard(b), f)


@case("safetensors absurd shape", SHARD1, ["overflow", "shape", "size"])
def _(b, c, o):
    edit_st(shard(b), lambda h, d: h["model.embed_tokens.weight"].__setitem__(
        "shape", [1 << 40, 1 << 40, 1 << 40]))


@case("missing shard file", SHARD2, ["no such file", "missing", "cannot"])
def _(b, c, o):
    os.remove(shard(b, SHARD2))


@case("index names a tensor absent from its shard", SHARD1, ["does not contain"])
def _(b, c, o):
    edit_json(os.path.join(b, "model.safetensors.index.json"),
              lambda j: j["weight_map"].__setitem__("model.norm.weight", SHARD1))


@case("index path traversal", "model.safetensors.index.json", ["../x.safetensors"])
def _(b, c, o):
    edit_json(os.path.join(b, "model.safetensors.index.json"),
              lambda j: j["weight_map"].__setitem__("model.norm.weight", "../x.safetensors"))


@case("index weight_map not an object", "model.safetensors.index.json", ["weight_map"])
def _(b, c, o):
    edit_json(os.path.join(b, "model.safetensors.index.json"), lambda j: j.__setitem__("weight_map", [1]))


@case("base config.json missing", "config.json", ["no such file", "cannot", "missing"])
def _(b, c, o):
    os.remove(os.path.join(b, "config.json"))


@case("base config missing hidden_size", "config.json", ["hidden_size"])
def _(b, c, o):
    edit_json(os.path.join(b, "config.json"), lambda j: j.pop("hidden_size"))


@case("base config num_attention_heads is a string", "config.json", ["num_attention_heads"])
def _(b, c, o):
    edit_json(os.path.join(b, "config.json"), lambda j: j.__setitem__("num_attention_heads", "4"))


@case("base config absurd num_hidden_layers", "config.json", ["num_hidden_layers"])
def _(b, c, o):
    edit_json(os.path.join(b, "config.json"), lambda j: j.__setitem__("num_hidden_layers", 1 << 40))


@case("CLaRa config.json missing", "config.json", ["no such file", "cannot", "missing"])
def _(b, c, o):
    os.remove(os.path.join(c, "config.json"))


@case("CLaRa config missing compr_rate", "config.json", ["compr_rate"])
def _(b, c, o):
    edit_json(os.path.join(c, "config.json"), lambda j: j.pop("compr_rate"))


@case("CLaRa config sep is a string", "config.json", ["sep"])
def _(b, c, o):
    edit_json(os.path.join(c, "config.json"), lambda j: j.__setitem__("sep", "yes"))


@case("CLaRa config compr_rate > doc_max_length", "config.json", ["compr_rate", "doc_max_length"])
def _(b, c, o):
    edit_json(os.path.join(c, "config.json"), lambda j: j.__setitem__("compr_rate", 512))


@case("CLaRa config bad JSON", "config.json", ["json"])
def _(b, c, o):
    truncate(os.path.join(c, "config.json"), -10)


def shard_of(b, name):
    return json.load(open(os.path.join(b, "model.safetensors.index.json")))["weight_map"][name]


Q0 = "model.layers.0.self_attn.q_proj.weight"


@case("q_proj one row short", lambda b: shard_of(b, Q0), ["shape", "expected"])
def _(b, c, o):
    def f(h, d):
        t = h[Q0]
        t["shape"][0] -= 1
        t["data_offsets"][1] -= t["shape"][1] * 2

    edit_st(shard(b, shard_of(b, Q0)), f)


@case("base tensor missing (index and shard)", "model.safetensors.index.json", ["model.norm.weight' is missing"])
def _(b, c, o):
    p = os.path.join(b, "model.safetensors.index.json")
    j = json.load(open(p))
    f = j["weight_map"].pop("model.norm.weight")
    json.dump(j, open(p, "w"))

    def g(h, d):
        h.pop("model.norm.weight")

    edit_st(shard(b, f), g)


@case("decoder_first_last_layers.pth one row short", "decoder_first_last_layers.pth", ["rows", "shape"])
def _(b, c, o):
    def f(obj):
        t = obj["lm_head.weight"]
        obj["lm_head.weight"] = rd.Tensor(t.dtype, (t.shape[0] - 1, t.shape[1]), t.data[:-1])

    edit_pth(os.path.join(c, "decoder_first_last_layers.pth"), f)


@case("decoder_first_last_layers.pth without lm_head", "decoder_first_last_layers.pth", ["lm_head", "missing"])
def _(b, c, o):
    edit_pth(os.path.join(c, "decoder_first_last_layers.pth"), lambda obj: obj.pop("lm_head.weight"))


@case("adapters.pth missing", "adapters.pth", ["no such file", "cannot", "missing"])
def _(b, c, o):
    os.remove(os.path.join(c, "adapters.pth"))


@case("adapter with only lora_A", "adapters.pth", ["lora_b", "lora_a", "only"])
def _(b, c, o):
    edit_pth(os.path.join(c, "adapters.pth"), lambda obj: obj["decoder_adapter"].pop(
        "model.layers.1.self_attn.v_proj.lora_B.weight"))


@case("LoRA rank differs from config lora_r", "adapters.pth", ["rank", "lora_r"])
def _(b, c, o):
    r = cfg("instruct16")["lora_r"]

    def f(obj):
        for k, t in list(obj["encoder_adapter"].items()):
            if "lora_A" in k:
                obj["encoder_adapter"][k] = rd.Tensor(t.dtype, (r // 2, t.shape[1]), t.data[: r // 2])
            elif "lora_B" in k:
                obj["encoder_adapter"][k] = rd.Tensor(t.dtype, (t.shape[0], r // 2),
                                                      np.ascontiguousarray(t.data[:, : r // 2]))

    edit_pth(os.path.join(c, "adapters.pth"), f)


@case("LoRA A/B ranks disagree", "adapters.pth", ["rank", "shape"])
def _(b, c, o):
    k = "model.layers.0.mlp.up_proj.lora_A.weight"

    def f(obj):
        t = obj["decoder_adapter"][k]
        obj["decoder_adapter"][k] = rd.Tensor(t.dtype, (t.shape[0] - 1, t.shape[1]), t.data[:-1])

    edit_pth(os.path.join(c, "adapters.pth"), f)


@case("no encoder_adapter", "adapters.pth", ["encoder_adapter"])
def _(b, c, o):
    edit_pth(os.path.join(c, "adapters.pth"), lambda obj: obj.pop("encoder_adapter"))


@case("adapter tensor with wrong dtype class (ComplexFloatStorage)", "adapters.pth",
      ["ComplexFloatStorage", "not allowed"])
def _(b, c, o):
    edit_pickle(os.path.join(c, "adapters.pth"),
                lambda p: p.replace(b"torch\nBFloat16Storage\n", b"torch\nComplexFloatStorage\n", 1))


@case("compressed data.pkl entry", "adapters.pth", ["compress", "deflate", "method"])
def _(b, c, o):
    p = os.path.join(c, "adapters.pth")
    write_zip(p, zip_entries(p), deflate=("archive/data.pkl",))


@case("truncated .pth (half)", "adapters.pth", ["zip", "end of central directory", "truncat"])
def _(b, c, o):
    p = os.path.join(c, "adapters.pth")
    truncate(p, os.path.getsize(p) // 2)


@case("truncated .pth (last byte)", "decoder_first_last_layers.pth", ["zip", "central directory", "truncat"])
def _(b, c, o):
    truncate(os.path.join(c, "decoder_first_last_layers.pth"), -1)


@case("pickle global os.system", "adapters.pth", ["os.system"])
def _(b, c, o):
    edit_pickle(os.path.join(c, "adapters.pth"),
                lambda p: b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsq\x00\x85R.")


@case("pickle global builtins.eval", "decoder_first_last_layers.pth", ["builtins.eval"])
def _(b, c, o):
    edit_pickle(os.path.join(c, "decoder_first_last_layers.pth"),
                lambda p: p.replace(b"ctorch._utils\n_rebuild_tensor_v2\n", b"cbuiltins\neval\n", 1))


@case("pickle nested 100000 lists", "adapters.pth", ["deep", "nest", "limit", "mark", "stack"])
def _(b, c, o):
    edit_pickle(os.path.join(c, "adapters.pth"), lambda p: b"\x80\x02" + b"(" * 100000 + b"l" * 100000 + b".")


@case("pickle dicts nested 200 deep", "adapters.pth", ["deep", "nest", "level"])
def _(b, c, o):
    body = b"".join(b"}X\x01\x00\x00\x00k" for _ in range(200)) + b"}" + b"s" * 200
    edit_pickle(os.path.join(c, "adapters.pth"), lambda p: b"\x80\x02" + body + b".")


@case("pickle unknown opcode", "adapters.pth", ["opcode"])
def _(b, c, o):
    edit_pickle(os.path.join(c, "adapters.pth"), lambda p: b"\x80\x02}\xff.")


@case("pickle without STOP", "adapters.pth", ["stop", "end", "truncat"])
def _(b, c, o):
    edit_pickle(os.path.join(c, "adapters.pth"), lambda p: p[:-1])


@case("storage too small for a tensor", "decoder_first_last_layers.pth", ["storage", "small", "past"])
def _(b, c, o):
    def f(ents):
        ents["archive/data/0"] = ents["archive/data/0"][:-64]

    edit_zip(os.path.join(c, "decoder_first_last_layers.pth"), f)


@case("storage entry missing", "decoder_first_last_layers.pth", ["storage", "missing"])
def _(b, c, o):
    edit_zip(os.path.join(c, "decoder_first_last_layers.pth"), lambda e: e.pop("archive/data/1"))


@case("byteorder big", "adapters.pth", ["byteorder", "endian"])
def _(b, c, o):
    edit_zip(os.path.join(c, "adapters.pth"), lambda e: e.__setitem__("archive/byteorder", b"big"))


@case("bad zip EOCD signature", "adapters.pth", ["zip", "end of central directory"])
def _(b, c, o):
    p = os.path.join(c, "adapters.pth")
    buf = bytearray(open(p, "rb").read())
    i = buf.rfind(b"PK\x05\x06")
    buf[i:i + 4] = b"PK\x05\x07"
    open(p, "wb").write(buf)


@case("zip EOCD absurd entry count", "adapters.pth", ["entr", "central directory", "count"])
def _(b, c, o):
    p = os.path.join(c, "adapters.pth")
    buf = bytearray(open(p, "rb").read())
    i = buf.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", buf, i + 8, 0xFFFE, 0xFFFE)
    open(p, "wb").write(buf)


@case("zip central directory offset past the end", "adapters.pth", ["central directory", "past", "offset"])
def _(b, c, o):
    p = os.path.join(c, "adapters.pth")
    buf = bytearray(open(p, "rb").read())
    i = buf.rfind(b"PK\x05\x06")
    struct.pack_into("<I", buf, i + 16, len(buf) + 1000)
    open(p, "wb").write(buf)


@case("not a zip at all", "adapters.pth", ["zip"])
def _(b, c, o):
    open(os.path.join(c, "adapters.pth"), "wb").write(b"\x80\x02}q\x00." * 10)


@case("no tokenizer files", "base", ["tokenizer"])
def _(b, c, o):
    os.remove(os.path.join(b, "tokenizer.json"))
    os.remove(os.path.join(b, "tokenizer.model"))


@case("tokenizer.json WordPiece model", "tokenizer.json", ["wordpiece", "bpe"])
def _(b, c, o):
    edit_json(os.path.join(b, "tokenizer.json"), lambda j: j["model"].__setitem__("type", "WordPiece"))


@case("tokenizer.json bad JSON", "tokenizer.json", ["json"])
def _(b, c, o):
    truncate(os.path.join(b, "tokenizer.json"), 1000)


@case("tokenizer.json merge of unknown tokens", "tokenizer.json", ["merge"])
def _(b, c, o):
    edit_json(os.path.join(b, "tokenizer.json"), lambda j: j["model"]["merges"].insert(0, "zzqq xxyy"))


@case("tokenizer_config.json bad JSON", "tokenizer_config.json", ["json"])
def _(b, c, o):
    open(os.path.join(b, "tokenizer_config.json"), "w").write("{\"add_bos_token\": tru")


@case("tokenizer.model garbage (no tokenizer.json)", "tokenizer.model", ["proto", "truncat", "field", "wire"])
def _(b, c, o):
    os.remove(os.path.join(b, "tokenizer.json"))
    p = os.path.join(b, "tokenizer.model")
    truncate(p, os.path.getsize(p) // 3)


@case("output in a nonexistent directory", "model.gguf", ["no such file", "cannot create"])
def _(b, c, o):
    return os.path.join(o, "no", "such", "dir", "model.gguf")


@case("e2e: query_reasoner lora_B wrong rows", "adapters.pth", ["shape", "lora_b", "rows"], variant="e2e16")
def _(b, c, o):
    k = "model.layers.1.mlp.down_proj.lora_B.weight"

    def f(obj):
        t = obj["query_reasoner_adapter"][k]
        obj["query_reasoner_adapter"][k] = rd.Tensor(t.dtype, (t.shape[0] - 2, t.shape[1]), t.data[:-2])

    edit_pth(os.path.join(c, "adapters.pth"), f)


@case("e2e: a shared storage entry cut short", "adapters.pth", ["storage", "too small"], variant="e2e16")
def _(b, c, o):
    p = os.path.join(c, "adapters.pth")
    ents = collections.OrderedDict(zip_entries(p))
    keys = sorted(k for k in ents if k.startswith("archive/data/"))
    ents[keys[-1]] = ents[keys[-1]][: len(ents[keys[-1]]) // 2]
    write_zip(p, list(ents.items()))


@case("norm weight with dtype I16", SHARD2, ["dtype I16"])
def _(b, c, o):
    def f(h, d):
        t = h["model.layers.0.input_layernorm.weight"]
        t["dtype"] = "I16"

    edit_st(shard(b, SHARD2), f)



@case("pth view offset past its storage", "decoder_first_last_layers.pth", ["past", "storage"])
def _(b, c, o):
    def f(obj):
        t = obj["lm_head.weight"]
        data = np.ascontiguousarray(t.data)
        st = pth_writer.Storage(STORAGE[t.dtype], data.size, lambda: data.reshape(-1))
        obj["lm_head.weight"] = pth_writer.TensorRef(st, 7, data.shape)

    edit_pth(os.path.join(c, "decoder_first_last_layers.pth"), f)


@case("pth absurd stride", "decoder_first_last_layers.pth", ["past", "storage", "overflow"])
def _(b, c, o):
    def f(obj):
        t = obj["model.embed_tokens.weight"]
        data = np.ascontiguousarray(t.data)
        st = pth_writer.Storage(STORAGE[t.dtype], data.size, lambda: data.reshape(-1))
        obj["model.embed_tokens.weight"] = pth_writer.TensorRef(st, 0, data.shape, (1 << 62, 1))

    edit_pth(os.path.join(c, "decoder_first_last_layers.pth"), f)


@case("pth storage class ShortStorage", "decoder_first_last_layers.pth", ["I16", "type", "dtype"])
def _(b, c, o):
    edit_pickle(os.path.join(c, "decoder_first_last_layers.pth"),
                lambda p: p.replace(b"torch\nBFloat16Storage\n", b"torch\nShortStorage\n"))


@case("pth root is a list", "adapters.pth", ["not a dict", "list"])
def _(b, c, o):
    edit_pickle(os.path.join(c, "adapters.pth"), lambda p: b"\x80\x02]q\x00.")


@case("pth tensor with 3 dimensions", "decoder_first_last_layers.pth", ["shape", "dimensions"])
def _(b, c, o):
    def f(obj):
        t = obj["lm_head.weight"]
        obj["lm_head.weight"] = rd.Tensor(t.dtype, (1,) + t.shape, t.data.reshape((1,) + t.shape))

    edit_pth(os.path.join(c, "decoder_first_last_layers.pth"), f)


@case("empty adapters.pth", "adapters.pth", ["zip", "short", "empty"])
def _(b, c, o):
    open(os.path.join(c, "adapters.pth"), "wb").close()


@case("adapters.pth is a directory", "adapters.pth", ["directory", "not a regular file", "cannot"])
def _(b, c, o):
    os.remove(os.path.join(c, "adapters.pth"))
    os.mkdir(os.path.join(c, "adapters.pth"))


@case("shard is a directory", SHARD2, ["directory", "not a regular file", "cannot"])
def _(b, c, o):
    os.remove(shard(b, SHARD2))
    os.mkdir(shard(b, SHARD2))


@case("pickle string length past the end", "adapters.pth", ["truncated", "past the end"])
def _(b, c, o):
    edit_pickle(os.path.join(c, "adapters.pth"), lambda p: b"\x80\x02}X\xff\xff\xff\x7fabc")


@case("pickle huge memo index", "adapters.pth", ["memo"])
def _(b, c, o):
    edit_pickle(os.path.join(c, "adapters.pth"), lambda p: b"\x80\x02}r\xff\xff\xff\x7fj\xff\xff\xff\x7f.")


@case("safetensors duplicate tensor name", SHARD2, ["duplicate"])
def _(b, c, o):
    h, d = read_st(shard(b, SHARD2))
    raw = json.dumps(h, separators=(",", ":")).encode()
    k = [n for n in h if "layernorm" in n][0]
    entry = json.dumps({k: h[k]}, separators=(",", ":")).encode()[1:-1]
    write_st(shard(b, SHARD2), None, d, raw_header=raw[:-1] + b"," + entry + b"}")


@case("safetensors header is a list", SHARD2, ["object"])
def _(b, c, o):
    write_st(shard(b, SHARD2), None, read_st(shard(b, SHARD2))[1], raw_header=b"[1,2,3]")


@case("newline in a tensor name and dtype (message stays one line)", SHARD1, ["dtype"])
def _(b, c, o):
    def f(h, d):
        h["model.embed_tokens.weight\nclara: injected"] = dict(h.pop("model.embed_tokens.weight"), dtype="Q4\nK")

    edit_st(shard(b), f)


@case("newline in a .pth key (message stays one line)", "adapters.pth", ["lora"])
def _(b, c, o):
    def f(obj):
        ad = obj["decoder_adapter"]
        k = "model.layers.1.self_attn.v_proj.lora_B.weight"
        ad[k.replace("v_proj", "v_proj\nclara convert: error: injected")] = ad.pop(k)

    edit_pth(os.path.join(c, "adapters.pth"), f)


@case("index weight_map value is a number", "model.safetensors.index.json", ["shard"])
def _(b, c, o):
    edit_json(os.path.join(b, "model.safetensors.index.json"),
              lambda j: j["weight_map"].__setitem__("model.norm.weight", 5))


@case("base config hidden_size not a multiple of heads", "config.json", ["hidden_size", "multiple"])
def _(b, c, o):
    edit_json(os.path.join(b, "config.json"), lambda j: j.__setitem__("hidden_size", 66))


@case("tokenizer.json absurd token id", "tokenizer.json", ["id", "vocab"])
def _(b, c, o):
    edit_json(os.path.join(b, "tokenizer.json"), lambda j: j["model"]["vocab"].__setitem__("<zz>", 1 << 40))


@case("tokenizer.json added token id far past the vocabulary", "tokenizer.json", ["id", "added"])
def _(b, c, o):
    edit_json(os.path.join(b, "tokenizer.json"), lambda j: j["added_tokens"].append(
        dict(j["added_tokens"][-1], id=4000000000, content="<zz>")))


@case("vocab_size differs from the tokenizer (warns, then the table shape fails)", SHARD1,
      ["model.embed_tokens.weight", "expected shape"], warns=True)
def _(b, c, o):
    edit_json(os.path.join(b, "config.json"), lambda j: j.__setitem__("vocab_size", j["vocab_size"] - 1))


# --- running --------------------------------------------------------------------------------------


def setup(i, variant):
    gf.ensure(FIXTURES)
    root = os.path.join(TMP, "case%02d" % i)
    b, c, o = os.path.join(root, "base"), os.path.join(root, "clara"), os.path.join(root, "out")
    shutil.copytree(os.path.join(FIXTURES, "base"), b)
    shutil.copytree(os.path.join(FIXTURES, variant), c)
    os.makedirs(o)
    return root, b, c, o


def run_case(i, cs):
    root, b, c, o = setup(i, cs["variant"])
    out = cs["fn"](b, c, o) or os.path.join(o, "model.gguf")
    p = subprocess.run([CLARA, "convert", "--base", b, "--clara", c, "--out", out, "--quiet"],
                       capture_output=True, text=True)
    name = cs["name"]
    want = cs["file"](b) if callable(cs["file"]) else cs["file"]
    lines = p.stderr.splitlines()
    last = lines[-1] if lines else ""
    check(p.returncode == 1, "%s: exit status %d (want 1): %r" % (name, p.returncode, p.stderr[-300:]))
    check(last.startswith("clara convert: error: "), "%s: last stderr line %r" % (name, last))
    others = lines[:-1]
    if cs["warns"]:
        check(others and all(l.startswith("clara: warning: ") for l in others),
              "%s: want warning lines before the error, got %r" % (name, others))
    else:
        check(not others, "%s: stderr has %d lines: %r" % (name, len(lines), p.stderr[:600]))
    check(want in last, "%s: message does not name %s: %r" % (name, want, last))
    low = last.lower()
    check(any(k.lower() in low for k in cs["kw"]), "%s: message lacks any of %s: %r" % (name, cs["kw"], last))
    check("Sanitizer" not in p.stderr and "runtime error" not in p.stderr,
          "%s: sanitizer report: %s" % (name, p.stderr[:2000]))
    outdir = os.path.dirname(out)
    left = os.listdir(outdir) if os.path.isdir(outdir) else []
    check(not left, "%s: files left in the output directory: %s" % (name, left))
    if os.environ.get("BAD_FILES_VERBOSE"):
        print("%-55s %s" % (name, last))
    shutil.rmtree(root, ignore_errors=True)


def test_bad_files():
    check(len(CASES) >= 35, "at least 35 cases (have %d)" % len(CASES))
    for i, cs in enumerate(CASES):
        try:
            run_case(i, cs)
        except Exception as e:  # a broken case-builder counts as a failure, others still run
            check(False, "%s: case raised %r" % (cs["name"], e))


def test_good_copy_converts():
    """The copy-and-run machinery itself works: an unbroken copy converts (so the failures above
    are caused by the breakage, not by the setup)."""
    root, b, c, o = setup(999, "instruct16")
    out = os.path.join(o, "model.gguf")
    p = subprocess.run([CLARA, "convert", "--base", b, "--clara", c, "--out", out, "--quiet"],
                       capture_output=True, text=True)
    check(p.returncode == 0 and os.path.exists(out), "good copy converts: %s" % p.stderr)
    # and the pth round trip through the test's own writers keeps it convertible
    edit_pth(os.path.join(c, "adapters.pth"), lambda obj: None)
    write_zip(os.path.join(c, "decoder_first_last_layers.pth"),
              zip_entries(os.path.join(c, "decoder_first_last_layers.pth")))
    os.remove(out)
    p = subprocess.run([CLARA, "convert", "--base", b, "--clara", c, "--out", out, "--quiet"],
                       capture_output=True, text=True)
    check(p.returncode == 0 and os.path.exists(out), "rewritten copy converts: %s" % p.stderr)
    shutil.rmtree(root, ignore_errors=True)


run(test_good_copy_converts)
run(test_bad_files)
shutil.rmtree(TMP, ignore_errors=True)
report("test_bad_files")
