"""Independent Python readers used by the tests to check the C code: safetensors, PyTorch .pth
(zip + pickle, through Python's zipfile and a restricted pickle.Unpickler that admits only the
torch globals of spec §2.6), GGUF v3, and a straightforward HF-BPE encoder over a tokenizer.json
(spec §3.2). numpy only; nothing here executes code from the files it reads.

API (all raise ValueError on malformed input):
  bf16_to_f32(u16) / f32_to_bf16(f32)      bf16 bit patterns (np.uint16) <-> float32, RNE
  read_safetensors(path) -> (tensors, metadata)   tensors: {name: Tensor}
  read_safetensors_index(dir) -> {name: Tensor} over model.safetensors.index.json's shards
  read_pth(path) -> object                 dicts/lists as in the pickle; tensors as Tensor
  pth_records(path) -> [(name, data_offset, size, compress_type)]
  pickle_globals(pkl_bytes) -> [(module, name)] GLOBAL/STACK_GLOBAL opcodes in order
  read_gguf(path_or_bytes) -> Gguf         .version .kv {key: value} .kv_types {key: type}
                                           .tensors {name: GgufTensorInfo} .alignment .data_offset
                                           .array(name) -> numpy (f32/f16/bf16 as f32 if asked)
  hf_encode(tok_json, text) -> [ids]       legacy-layout BPE of spec §3.2 (added-token split,
                                           per-segment Prepend/Replace, rank merges, byte fallback)
Tensor: .dtype ("BF16", "F16", "F32", ...), .shape, .stride (elements), .offset (elements),
        .storage_key (pth only), .data (numpy; BF16 as np.uint16 bit patterns), .f32()
"""

import collections
import json
import mmap
import os
import pickle
import pickletools
import struct
import zipfile

import numpy as np

# ----------------------------------------------------------------------------------------------
# bf16


def bf16_to_f32(u16):
    u16 = np.asarray(u16, dtype=np.uint16)
    return (u16.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(f32):
    """Round to nearest even (finite inputs); returns np.uint16 bit patterns."""
    u = np.ascontiguousarray(f32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


class Tensor:
    def __init__(self, dtype, shape, data, stride=None, offset=0, storage_key=None):
        self.dtype = dtype
        self.shape = tuple(shape)
        self.data = data
        self.stride = tuple(stride) if stride is not None else None
        self.offset = offset
        self.storage_key = storage_key

    def f32(self):
        if self.dtype == "BF16":
            return bf16_to_f32(self.data)
        return self.data.astype(np.float32)

    def __repr__(self):
        return "Tensor(%s, %s)" % (self.dtype, self.shape)


# safetensors dtype names -> numpy storage dtype (BF16 kept as raw uint16)
ST_DTYPES = {
    "BF16": np.uint16,
    "F16": np.float16,
    "F32": np.float32,
    "F64": np.float64,
    "I8": np.int8,
    "U8": np.uint8,
    "I16": np.int16,
    "I32": np.int32,
    "I64": np.int64,
    "BOOL": np.bool_,
}

# ----------------------------------------------------------------------------------------------
# safetensors


def parse_safetensors(buf, name="safetensors"):
    if len(buf) < 8:
        raise ValueError("%s: shorter than the 8-byte header length" % name)
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > len(buf) - 8:
        raise ValueError("%s: header length %d past end of file" % (name, n))
    header = json.loads(bytes(buf[8 : 8 + n]).decode("utf-8"))
    base = 8 + n
    meta = header.pop("__metadata__", None)
    tensors = {}
    for tname, info in header.items():
        dt = ST_DTYPES.get(info["dtype"])
        if dt is None:
            raise ValueError("%s: %s: unknown dtype %r" % (name, tname, info["dtype"]))
        shape = [int(d) for d in info["shape"]]
        b, e = info["data_offsets"]
        if not (0 <= b <= e <= len(buf) - base):
            raise ValueError("%s: %s: data_offsets out of range" % (name, tname))
        count = int(np.prod(shape, dtype=np.int64))
        if count * np.dtype(dt).itemsize != e - b:
            raise ValueError("%s: %s: size does not match shape" % (name, tname))
        arr = np.frombuffer(buf, dtype=np.dtype(dt).newbyteorder("<"), count=count, offset=base + b)
        tensors[tname] = Tensor(info["dtype"], shape, arr.reshape(shape))
    return tensors, meta, header


def _map(path):
    """Read-only mapping of a file (numpy arrays made from it stay valid while referenced)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def read_safetensors(path):
    buf = _map(path)
    tensors, meta, _ = parse_safetensors(buf, os.path.basename(path))
    return tensors, meta


def read_safetensors_index(model_dir):
    with open(os.path.join(model_dir, "model.safetensors.index.json")) as f:
        index = json.load(f)
    out = {}
    shards = {}
    for tname, shard in index["weight_map"].items():
        if shard not in shards:
            shards[shard] = read_safetensors(os.path.join(model_dir, shard))[0]
        if tname not in shards[shard]:
            raise ValueError("%s: %s not in %s" % (model_dir, tname, shard))
        out[tname] = shards[shard][tname]
    return out


# ----------------------------------------------------------------------------------------------
# PyTorch .pth (zip + pickle)

PTH_STORAGES = {
    "BFloat16Storage": ("BF16", np.uint16),
    "HalfStorage": ("F16", np.float16),
    "FloatStorage": ("F32", np.float32),
    "DoubleStorage": ("F64", np.float64),
    "LongStorage": ("I64", np.int64),
    "IntStorage": ("I32", np.int32),
    "ShortStorage": ("I16", np.int16),
    "CharStorage": ("I8", np.int8),
    "ByteStorage": ("U8", np.uint8),
    "BoolStorage": ("BOOL", np.bool_),
}


class _StorageType:
    def __init__(self, name):
        self.name = name


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks, *meta):
    dtype, key, arr = storage
    itemsize = arr.itemsize
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    if storage_offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise ValueError("negative size, stride or offset")
    if all(s > 0 for s in size):
        last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))
        if last >= arr.size:
            raise ValueError("tensor view past the end of storage %s" % key)
    view = np.lib.stride_tricks.as_strided(
        arr[storage_offset:],
        shape=size,
        strides=tuple(st * itemsize for st in stride),
        writeable=False,
    )
    return Tensor(dtype, size, np.array(view), stride, storage_offset, key)


def _rebuild_parameter(data, requires_grad, hooks):
    return data


class RestrictedUnpickler(pickle.Unpickler):
    """torch.load(weights_only=True)-like: only the globals of spec §2.6 are admitted."""

    def __init__(self, f, zf, prefix):
        super().__init__(f)
        self.zf = zf
        self.prefix = prefix
        self.names = set(zf.namelist())

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in PTH_STORAGES:
            return _StorageType(name)
        raise pickle.UnpicklingError("global '%s.%s' is not allowed" % (module, name))

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError("bad persistent id %r" % (pid,))
        _, stype, key, location, numel = pid
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError("storage type is not a torch storage class")
        dtype, npdt = PTH_STORAGES[stype.name]
        rec = self.prefix + "data/" + str(key)
        if rec not in self.names:
            raise pickle.UnpicklingError("missing storage record data/%s" % key)
        raw = self.zf.read(rec)
        if len(raw) != numel * np.dtype(npdt).itemsize:
            raise pickle.UnpicklingError("storage %s: %d bytes for %d elements" % (key, len(raw), numel))
        return (dtype, key, np.frombuffer(raw, dtype=np.dtype(npdt).newbyteorder("<")))


def _pth_open(path):
    zf = zipfile.ZipFile(path)
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
        raise ValueError("%s: expected one <dir>/data.pkl" % path)
    prefix = pkl[0][: -len("data.pkl")]
    if any(not n.startswith(prefix) for n in names):
        raise ValueError("%s: entries do not share the top-level directory" % path)
    return zf, prefix


def read_pth(path):
    import io

    zf, prefix = _pth_open(path)
    with zf:
        pkl = zf.read(prefix + "data.pkl")
        return RestrictedUnpickler(io.BytesIO(pkl), zf, prefix).load()


def pth_records(path):
    """[(name, absolute data offset, size, compress_type)] read from the local headers."""
    out = []
    with open(path, "rb") as f, zipfile.ZipFile(path) as zf:
        for zi in zf.infolist():
            f.seek(zi.header_offset)
            hdr = f.read(30)
            sig, = struct.unpack_from("<I", hdr, 0)
            if sig != 0x04034B50:
                raise ValueError("%s: bad local header for %s" % (path, zi.filename))
            nlen, xlen = struct.unpack_from("<HH", hdr, 26)
            out.append((zi.filename, zi.header_offset + 30 + nlen + xlen, zi.file_size, zi.compress_type))
    return out


def pickle_globals(pkl):
    out = []
    strings = []
    for op, arg, _ in pickletools.genops(pkl):
        if op.name == "GLOBAL":
            mod, name = arg.split(" ", 1)
            out.append((mod, name))
        elif op.name == "STACK_GLOBAL":
            out.append((strings[-2], strings[-1]))
        if isinstance(arg, str):
            strings.append(arg)
    return out


# ----------------------------------------------------------------------------------------------
# GGUF v3

GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
GGUF_STRING, GGUF_ARRAY = 8, 9

# ggml tensor types: id -> (name, block elements, block bytes)
GGML_TYPES = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    30: ("BF16", 1, 2),
    64: ("Q8_Z", 32, 36),  # CLaRa's GPTQ 8-bit asymmetric block (docs/FORMAT.md)
}
_GGML_NP = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I8": np.int8,
            "I16": np.int16, "I32": np.int32, "I64": np.int64, "F64": np.float64}


class GgufTensorInfo:
    def __init__(self, name, dims, ggml_type, offset):
        self.name = name
        self.dims = tuple(dims)  # ne[0] first (fastest varying)
        self.type = ggml_type
        self.offset = offset  # relative to the data section
        tname, blk, bbytes = GGML_TYPES[ggml_type]
        self.type_name = tname
        n = int(np.prod(self.dims, dtype=np.int64)) if self.dims else 1
        if self.dims and self.dims[0] % blk:
            raise ValueError("tensor %s: ne[0]=%d not a multiple of block %d" % (name, self.dims[0], blk))
        self.nbytes = n // blk * bbytes

    @property
    def shape(self):
        """numpy (row-major) shape: dims reversed."""
        return tuple(reversed(self.dims))


class _Cursor:
    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def take(self, fmt):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise ValueError("gguf: truncated at offset %d" % self.pos)
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take("<Q")
        if n > len(self.buf) - self.pos:
            raise ValueError("gguf: string length %d past end" % n)
        s = bytes(self.buf[self.pos : self.pos + n]).decode("utf-8")
        self.pos += n
        return s

    def value(self, vtype, depth=0):
        if vtype in GGUF_SCALARS:
            return self.take(GGUF_SCALARS[vtype])
        if vtype == GGUF_STRING:
            return self.string()
        if vtype == GGUF_ARRAY:
            if depth > 4:
                raise ValueError("gguf: arrays nested too deep")
            etype = self.take("<I")
            n = self.take("<Q")
            if n > len(self.buf):
                raise ValueError("gguf: array count %d too large" % n)
            return [self.value(etype, depth + 1) for _ in range(n)]
        raise ValueError("gguf: unknown value type %d" % vtype)


class Gguf:
    def __init__(self, buf):
        c = _Cursor(buf)
        self.buf = buf
        if bytes(buf[:4]) != b"GGUF":
            raise ValueError("gguf: bad magic")
        c.pos = 4
        self.version = c.take("<I")
        if self.version != 3:
            raise ValueError("gguf: version %d, expected 3" % self.version)
        n_tensors = c.take("<Q")
        n_kv = c.take("<Q")
        self.kv = collections.OrderedDict()
        self.kv_types = {}
        for _ in range(n_kv):
            key = c.string()
            vtype = c.take("<I")
            if vtype == GGUF_ARRAY:
                etype = struct.unpack_from("<I", buf, c.pos)[0]
                self.kv_types[key] = (GGUF_ARRAY, etype)
            else:
                self.kv_types[key] = vtype
            self.kv[key] = c.value(vtype)
        self.tensors = collections.OrderedDict()
        for _ in range(n_tensors):
            name = c.string()
            nd = c.take("<I")
            if nd > 8:
                raise ValueError("gguf: tensor %s has %d dims" % (name, nd))
            dims = [c.take("<Q") for _ in range(nd)]
            ttype = c.take("<I")
            if ttype not in GGML_TYPES:
                raise ValueError("gguf: tensor %s: unknown type %d" % (name, ttype))
            off = c.take("<Q")
            self.tensors[name] = GgufTensorInfo(name, dims, ttype, off)
        self.alignment = self.kv.get("general.alignment", 32)
        a = self.alignment
        if self.kv_types.get("general.alignment", 4) != 4 or a <= 0 or a & (a - 1):
            raise ValueError("gguf: general.alignment must be a u32 power of two")
        self.data_offset = (c.pos + a - 1) // a * a
        for t in self.tensors.values():
            if t.offset % a:
                raise ValueError("gguf: tensor %s offset %d not aligned to %d" % (t.name, t.offset, a))
            if self.data_offset + t.offset + t.nbytes > len(buf):
                raise ValueError("gguf: tensor %s data past end of file" % t.name)

    def raw(self, name):
        t = self.tensors[name]
        s = self.data_offset + t.offset
        return bytes(self.buf[s : s + t.nbytes])

    def array(self, name, bf16_as_f32=False):
        """numpy array in row-major shape; quantized types come back as raw uint8 blocks."""
        t = self.tensors[name]
        npdt = _GGML_NP.get(t.type_name)
        if npdt is None:
            return np.frombuffer(self.raw(name), dtype=np.uint8)
        a = np.frombuffer(self.buf, dtype=np.dtype(npdt).newbyteorder("<"),
                          count=t.nbytes // np.dtype(npdt).itemsize,
                          offset=self.data_offset + t.offset).reshape(t.shape)
        if t.type_name == "BF16" and bf16_as_f32:
            return bf16_to_f32(a)
        return a


def read_gguf(src):
    if isinstance(src, (bytes, bytearray, memoryview)):
        return Gguf(src)
    return Gguf(_map(src))


# ----------------------------------------------------------------------------------------------
# HF BPE (legacy Llama layout, spec §3.2)


class HfBpe:
    def __init__(self, tok):
        if isinstance(tok, str):
            with open(tok, encoding="utf-8") as f:
                tok = json.load(f)
        m = tok["model"]
        self.vocab = m["vocab"]
        self.ranks = {}
        for i, mg in enumerate(m["merges"]):
            pair = tuple(mg.split(" ", 1)) if isinstance(mg, str) else tuple(mg)
            self.ranks.setdefault(pair, i)
        self.added = {a["content"]: a["id"] for a in tok["added_tokens"]}
        self.unk = self.vocab[m["unk_token"]]

    def _bpe(self, word):
        syms = []
        for ch in word:
            if ch in self.vocab:
                syms.append(ch)
            else:
                for b in ch.encode("utf-8"):
                    syms.append("<0x%02X>" % b)
        while len(syms) > 1:
            best, at = None, -1
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best):
                    best, at = r, i
            if best is None:
                break
            syms[at : at + 2] = [syms[at] + syms[at + 1]]
        return [self.vocab.get(s, self.unk) for s in syms]

    def encode(self, text):
        ids = []
        seg_start = i = 0
        keys = sorted(self.added, key=len, reverse=True)
        while i < len(text):
            hit = next((k for k in keys if text.startswith(k, i)), None)
            if hit is None:
                i += 1
                continue
            if i > seg_start:
                ids += self._bpe("\u2581" + text[seg_start:i].replace(" ", "\u2581"))
            ids.append(self.added[hit])
            i += len(hit)
            seg_start = i
        if seg_start < len(text):
            ids += self._bpe("\u2581" + text[seg_start:].replace(" ", "\u2581"))
        return ids


def hf_encode(tok, text):
    return HfBpe(tok).encode(text)
