#!/usr/bin/python3
"""gen_unit_data.py - writes the small sample files under tests/unit/data/ that the safetensors,
zip and pickle unit tests read, plus expected.json with the values they must find.

The independent truth is Python's own pickle, zipfile and json modules and numpy: .pth files are
pickled by the real pickle module with a fake `torch` / `torch._utils` registered in sys.modules, so
the GLOBAL names and persistent ids are exactly what torch.save emits (protocol 2 by default).
Run: /usr/bin/python3 tests/unit/gen_unit_data.py  (outputs are committed; deterministic).
"""
import collections
import io
import json
import os
import pickle
import shutil
import struct
import sys
import types
import zipfile
import zlib

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

# ---- a fake torch, just enough for pickle to find the globals by name ----
torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
torch._utils = utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = utils


def _fake(module, name):
    def f(*a):
        raise RuntimeError("never called")

    f.__module__, f.__name__, f.__qualname__ = module, name, name
    return f


utils._rebuild_tensor_v2 = _fake("torch._utils", "_rebuild_tensor_v2")
utils._rebuild_parameter = _fake("torch._utils", "_rebuild_parameter")
STORAGE_CLASS = {}
for cls, dt in [("FloatStorage", "F32"), ("HalfStorage", "F16"), ("BFloat16Storage", "BF16"),
                ("DoubleStorage", "F64"), ("LongStorage", "I64"), ("IntStorage", "I32"),
                ("ShortStorage", "I16"), ("CharStorage", "I8"), ("ByteStorage", "U8"),
                ("BoolStorage", "BOOL")]:
    c = type(cls, (), {"__module__": "torch"})
    setattr(torch, cls, c)
    STORAGE_CLASS[dt] = c

NP = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
      "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def raw_bytes(dtype, values):
    """Little-endian bytes of `values` (a numpy array) stored as `dtype`."""
    if dtype == "BF16":  # values are chosen exactly representable in bf16
        f = np.asarray(values, dtype="<f4")
        return (f.view("<u4") >> 16).astype("<u2").tobytes()
    return np.asarray(values, dtype=np.dtype(NP[dtype]).newbyteorder("<")).tobytes()


class Storage:
    def __init__(self, key, dtype, values):
        self.key, self.dtype = key, dtype
        self.values = np.asarray(values).reshape(-1)
        self.data = raw_bytes(dtype, self.values)


class Tensor:
    def __init__(self, storage, offset, shape, stride, param=False):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride
        self.param = param

    def __reduce_ex__(self, proto):
        args = (self.storage, self.offset, tuple(self.shape), tuple(self.stride), False,
                collections.OrderedDict())
        if self.param:  # nn.Parameter: _rebuild_parameter(tensor, requires_grad, hooks)
            inner = Tensor(self.storage, self.offset, self.shape, self.stride)
            return (utils._rebuild_parameter, (inner, True, collections.OrderedDict()))
        return (utils._rebuild_tensor_v2, args)

    def row_major_bytes(self):
        es = 2 if self.storage.dtype == "BF16" else np.dtype(NP[self.storage.dtype]).itemsize
        flat = np.frombuffer(self.storage.data, dtype=np.uint8).reshape(-1, es)
        idx = np.full(self.shape, self.offset, dtype=np.int64) if self.shape else \
            np.array(self.offset)
        for d, (n, s) in enumerate(zip(self.shape, self.stride)):
            shp = [1] * len(self.shape)
            shp[d] = n
            idx = idx + (np.arange(n) * s).reshape(shp)
        return flat[idx.reshape(-1)].tobytes()


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", STORAGE_CLASS[obj.dtype], obj.key, "cpu", len(obj.values))
        return None


def pickle_bytes(obj, protocol=2):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def storages_of(obj, acc):
    if isinstance(obj, dict):
        for v in obj.values():
            storages_of(v, acc)
    elif isinstance(obj, Tensor):
        acc[obj.storage.key] = obj.storage
    return acc


def zput(z, name, data, compress=zipfile.ZIP_STORED):
    """writestr with a fixed timestamp so the outputs are reproducible"""
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = compress
    z.writestr(info, data)


def write_pth(path, obj, top="archive", protocol=2, byteorder=b"little", pkl=None,
              compress_pkl=False, extra_storage_trim=0):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        zput(z, f"{top}/data.pkl", pkl if pkl is not None else pickle_bytes(obj, protocol),
             zipfile.ZIP_DEFLATED if compress_pkl else zipfile.ZIP_STORED)
        if byteorder is not None:
            zput(z, f"{top}/byteorder", byteorder)
        for key, st in sorted(storages_of(obj, {}).items()):
            zput(z, f"{top}/data/{key}", st.data[:len(st.data) - extra_storage_trim])
        zput(z, f"{top}/version", b"3\n")


def expected_tensors(obj, prefix=""):
    out = []
    for k, v in obj.items():
        name = f"{prefix}/{k}" if prefix else k
        if isinstance(v, dict):
            out += expected_tensors(v, name)
        elif isinstance(v, Tensor):
            contiguous, expect = True, 1
            for n, s in reversed(list(zip(v.shape, v.stride))):
                if n != 1 and s != expect:
                    contiguous = False
                expect *= n
            out.append({"name": name, "dtype": v.storage.dtype, "shape": list(v.shape),
                        "stride": list(v.stride), "offset": v.offset, "key": v.storage.key,
                        "contiguous": contiguous, "hex": v.row_major_bytes().hex()})
    return out


def contig(storage, shape, offset=0, param=False):
    stride, s = [], 1
    for n in reversed(shape):
        stride.insert(0, s)
        s *= n
    return Tensor(storage, offset, shape, stride, param)


def make_pth_samples(expected):
    # decoder_first_last_layers.pth style: flat dict of bf16 tables
    emb = Storage("0", "BF16", np.arange(12, dtype=np.float32) * 0.5 - 2)
    head = Storage("1", "BF16", np.arange(12, dtype=np.float32) * -0.25)
    flat = {"model.embed_tokens.weight": contig(emb, [3, 4]), "lm_head.weight": contig(head, [3, 4])}
    write_pth(f"{OUT}/flat.pth", flat)
    expected["flat.pth"] = {"dir": "archive", "skipped": 0, "tensors": expected_tensors(flat)}

    # adapters.pth style: nested dicts, shared storage, views, parameter, OrderedDict, odd dtypes
    a = Storage("0", "F32", np.arange(24, dtype=np.float32) / 8)
    b = Storage("1", "F16", np.linspace(-1, 1, 6).astype(np.float16))
    c = Storage("2", "I64", [1, -2, 3 << 40, -(1 << 62), 5])
    d = Storage("3", "U8", [0, 7, 255, 128])
    e = Storage("4", "BOOL", [True, False, True])
    g = Storage("5", "I32", [-7, 8, 9, 2 ** 31 - 1])
    enc = collections.OrderedDict()
    enc["model.layers.0.self_attn.q_proj.lora_A.weight"] = contig(a, [2, 4])
    enc["model.layers.0.self_attn.q_proj.lora_B.weight"] = contig(a, [4, 2], offset=8)
    enc["transposed"] = Tensor(a, 1, [4, 3], [1, 4])  # a non-contiguous view of a
    enc["param"] = contig(b, [2, 3], param=True)
    enc._metadata = collections.OrderedDict([("", {"version": 1})])  # as state_dict() sets: BUILD
    dec = {"lm_head.weight": contig(c, [5]), "bytes": contig(d, [2, 2]),
           "mask": contig(e, [3]), "scalar": Tensor(g, 3, [], []),
           "empty": Tensor(g, 0, [0, 4], [4, 1]), "expanded": Tensor(g, 1, [2, 3], [0, 1]),
           "note": "not a tensor", "epoch": 7}
    nested = {"encoder_adapter": enc, "decoder_adapter": dec, "step": 3}
    write_pth(f"{OUT}/nested.pth", nested)
    expected["nested.pth"] = {"dir": "archive", "skipped": 3,
                              "tensors": expected_tensors(nested)}
    write_pth(f"{OUT}/nested_p4.pth", nested, protocol=4, top="nested_p4")
    expected["nested_p4.pth"] = dict(expected["nested.pth"], dir="nested_p4")
    return flat, nested


def make_pth_bad(flat):
    write_pth(f"{OUT}/bad_byteorder.pth", flat, byteorder=b"big")
    write_pth(f"{OUT}/bad_storage_small.pth", flat, extra_storage_trim=2)
    write_pth(f"{OUT}/bad_compressed.pth", flat, compress_pkl=True)
    pkl = pickle_bytes({"w": flat["lm_head.weight"]})
    with zipfile.ZipFile(f"{OUT}/bad_missing_storage.pth", "w") as z:
        zput(z, "archive/data.pkl", pkl)  # storage '1' is never written
    # a dict nested 100 levels deep through the memo: } q0 then 100 x ( } X'k' h0 s q0 )
    body = b"\x80\x02}q\x00"
    for _ in range(100):
        body += b"}X\x01\x00\x00\x00kh\x00sq\x00"
    write_pth(f"{OUT}/bad_nested_deep.pth", None, pkl=body + b".")
    # the global that every pickle exploit uses
    write_pth(f"{OUT}/bad_os_system.pth", None,
              pkl=b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.")
    with zipfile.ZipFile(f"{OUT}/bad_no_pkl.pth", "w") as z:
        zput(z, "archive/version", b"3\n")
    with zipfile.ZipFile(f"{OUT}/bad_two_dirs.pth", "w") as z:
        zput(z, "archive/data.pkl", pkl)
        zput(z, "other/data/1", flat["lm_head.weight"].storage.data)
    # a wrong CRC for data.pkl: change one key byte after writing
    write_pth(f"{OUT}/bad_crc.pth", flat)
    raw = bytearray(open(f"{OUT}/bad_crc.pth", "rb").read())
    i = raw.index(b"lm_head.weight")
    raw[i] = ord("L")
    open(f"{OUT}/bad_crc.pth", "wb").write(raw)


def make_zip64(path, files):
    """A ZIP written by hand with ZIP64 everywhere: sizes/offsets as 0xFFFFFFFF in the central
    directory with a ZIP64 extra field, a ZIP64 EOCD record and locator, and local headers whose
    extra field pads the data to 64 bytes (as torch does) so local and central extras differ."""
    out, central = bytearray(), bytearray()
    for name, data in files:
        nb = name.encode()
        off = len(out)
        pad = (-(off + 30 + len(nb) + 4)) % 64
        local_extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        crc = zlib.crc32(data)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc, len(data),
                           len(data), len(nb), len(local_extra)) + nb + local_extra + data
        z64 = struct.pack("<HHQQQ", 1, 24, len(data), len(data), off)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc,
                               0xFFFFFFFF, 0xFFFFFFFF, len(nb), len(z64), 0, 0, 0, 0,
                               0xFFFFFFFF) + nb + z64
    cd_off = len(out)
    out += central
    eocd64 = len(out)
    n = len(files)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(central), cd_off)
    out += struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    open(path, "wb").write(out)


def make_zip_samples(expected):
    files = [("archive/data.pkl", b"hello pickle"), ("archive/data/0", bytes(range(200))),
             ("archive/empty", b"")]
    make_zip64(f"{OUT}/zip64.zip", files)
    with zipfile.ZipFile(f"{OUT}/comment.zip", "w") as z:
        for name, data in files:
            zput(z, name, data)
        z.comment = b"C" * 300
    exp = []
    for path in ("zip64.zip", "comment.zip"):
        with zipfile.ZipFile(f"{OUT}/{path}") as z:  # Python's reader is the truth
            assert z.testzip() is None
            exp = [{"name": i.filename, "size": i.file_size, "crc": i.CRC,
                    "hex": z.read(i).hex()} for i in z.infolist()]
            expected[path] = exp
    with zipfile.ZipFile(f"{OUT}/bad_deflated.zip", "w", zipfile.ZIP_DEFLATED) as z:
        zput(z, "archive/data.pkl", b"x" * 100, zipfile.ZIP_DEFLATED)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(f"{OUT}/bad_duplicate.zip", "w") as z:
            zput(z, "a", b"1")
            zput(z, "a", b"2")


def st_bytes(tensors, metadata=None):
    """tensors: [(name, dtype, shape, raw bytes)] -> safetensors image (header padded to 8)."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + data


def st_tensor(name, dtype, shape, values):
    return (name, dtype, shape, raw_bytes(dtype, np.asarray(values).reshape(-1)))


def make_st_samples(expected):
    ts = [st_tensor("a", "F32", [2, 3], np.arange(6) * 1.5),
          st_tensor("b", "BF16", [4], [1.0, -2.0, 0.5, 3.0]),
          st_tensor("c", "I64", [2], [-1, 1 << 40]),
          st_tensor("d", "U8", [3], [1, 2, 250]),
          st_tensor("e", "F16", [], [0.25]),
          st_tensor("z", "F32", [0, 5], [])]
    open(f"{OUT}/small.safetensors", "wb").write(st_bytes(ts, {"format": "pt", "k": "v"}))
    expected["small.safetensors"] = [{"name": n, "dtype": d, "shape": s, "hex": r.hex()}
                                     for n, d, s, r in ts]
    shard1 = [st_tensor("model.layers.0.w", "BF16", [2, 2], [1, 2, 3, 4]),
              st_tensor("model.norm.weight", "F32", [3], [1, 1, 1])]
    shard2 = [st_tensor("lm_head.weight", "BF16", [2, 3], [0.5] * 6),
              st_tensor("unlisted", "F32", [1], [9])]
    names = {"model-00001-of-00002.safetensors": shard1,
             "model-00002-of-00002.safetensors": shard2}

    def model_dir(d, weight_map, shards):
        shutil.rmtree(f"{OUT}/{d}", ignore_errors=True)
        os.makedirs(f"{OUT}/{d}")
        for fn, t in shards.items():
            open(f"{OUT}/{d}/{fn}", "wb").write(st_bytes(t, {"format": "pt"}))
        if weight_map is not None:
            json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map},
                      open(f"{OUT}/{d}/model.safetensors.index.json", "w"), indent=1)

    wm = {"model.layers.0.w": "model-00001-of-00002.safetensors",
          "model.norm.weight": "model-00001-of-00002.safetensors",
          "lm_head.weight": "model-00002-of-00002.safetensors"}
    model_dir("st_sharded", wm, names)
    expected["st_sharded"] = {"names": sorted(wm), "total_bytes": 8 + 12 + 12}
    model_dir("st_single", None, {"model.safetensors": shard1})
    model_dir("st_missing_shard", dict(wm, extra="model-00003-of-00003.safetensors"), names)
    model_dir("st_traversal", dict(wm, extra="../small.safetensors"), names)
    model_dir("st_absent_tensor", dict(wm, ghost="model-00001-of-00002.safetensors"), names)
    shutil.rmtree(f"{OUT}/st_empty_dir", ignore_errors=True)
    os.makedirs(f"{OUT}/st_empty_dir")
    open(f"{OUT}/st_empty_dir/.gitkeep", "w").close()


def make_corpora():
    """Seed corpora for the fuzz targets (tests/fuzz/corpus/<target>/), from the samples above."""
    fuzz = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz")

    def put(target, name, data):
        d = os.path.join(fuzz, "corpus", target)
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, name), "wb").write(data)
        os.makedirs(os.path.join(fuzz, "regressions", target), exist_ok=True)
        open(os.path.join(fuzz, "regressions", target, ".gitkeep"), "w").close()

    read = lambda f: open(os.path.join(OUT, f), "rb").read()
    put("safetensors", "small", read("small.safetensors"))
    put("safetensors", "shard1", read("st_sharded/model-00001-of-00002.safetensors"))
    put("safetensors", "empty", st_bytes([]))
    for f in ("zip64.zip", "comment.zip", "flat.pth", "bad_deflated.zip", "bad_duplicate.zip"):
        put("zip", f, read(f))
    for f in ("nested.pth", "nested_p4.pth", "flat.pth"):
        with zipfile.ZipFile(os.path.join(OUT, f)) as z:
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
            put("pickle", f.replace(".pth", ".pkl"), z.read(pkl))
    put("pickle", "flat.pth", read("flat.pth"))
    put("pickle", "os_system.pkl", b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.")
    put("pickle", "values.pkl", pickle.dumps((-5, 200, 0x1234, -(1 << 40), 1.5, "h\u00e9", True, None,
                                              [1, 2], {"a": b"xy"}), protocol=2))


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}
    flat, _ = make_pth_samples(expected)
    make_pth_bad(flat)
    make_zip_samples(expected)
    make_st_samples(expected)
    make_corpora()
    with open(f"{OUT}/expected.json", "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
