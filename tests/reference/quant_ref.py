"""quant_ref.py - an independent numpy implementation of the dequantizers of GGUF's standard block
types (q4_0, q4_1, q5_0, q5_1, q8_0, q8_1, q4_k, q5_k, q6_k, q8_k), written from the public
description of ggml's block layouts, not from our C code. Every operation is done in float32 in
the same order ggml's reference dequantizers use (scale * code, then +/- the min), so the results
must be bit-identical to src/quant.c's. Also the llama.cpp quantization-mix helpers the quantize
end-to-end test needs."""

import numpy as np

F32 = np.float32

# name: (ggml type id, elements per block, bytes per block)
TYPES = {
    "f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q4_1": (3, 32, 20),
    "q5_0": (6, 32, 22), "q5_1": (7, 32, 24), "q8_0": (8, 32, 34), "q8_1": (9, 32, 36),
    "q4_k": (12, 256, 144), "q5_k": (13, 256, 176), "q6_k": (14, 256, 210),
    "q8_k": (15, 256, 292), "bf16": (30, 1, 2),
}
TYPE_NAMES = {v[0]: k for k, v in TYPES.items()}


def _f16(b, off):
    """The little-endian f16 at byte `off` of every block, as float32 (one per block, column)."""
    return np.ascontiguousarray(b[:, off:off + 2]).view("<f2").astype(F32)


def _u32(b, off):
    return np.ascontiguousarray(b[:, off:off + 4]).view("<u4").astype(np.uint32)


def _nibbles32(qs, qh=None):
    """Codes of 32-element blocks: byte j holds element j (low nibble) and j+16 (high nibble);
    bit j of the 32-bit qh is bit 4 of element j."""
    c = np.concatenate([qs & 15, qs >> 4], axis=1).astype(np.int32)
    if qh is not None:
        c |= ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int32) << 4
    return c


def _scale_min_k4(s):
    """The eight 6-bit (scale, min) pairs of a q4_k/q5_k block from its 12 packed bytes."""
    s = s.astype(np.int32)
    sc, mn = [], []
    for j in range(8):
        if j < 4:
            sc.append(s[:, j] & 63)
            mn.append(s[:, j + 4] & 63)
        else:
            sc.append((s[:, j + 4] & 15) | ((s[:, j - 4] >> 6) << 4))
            mn.append((s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4))
    return np.stack(sc, 1), np.stack(mn, 1)


def _dq_kq(b, bits):
    d, dmin = _f16(b, 0), _f16(b, 2)
    sc, mn = _scale_min_k4(b[:, 4:16])
    qs = b[:, 48:176] if bits == 5 else b[:, 16:144]
    qh = b[:, 16:48].astype(np.int32)
    out = np.empty((b.shape[0], 256), F32)
    for j in range(8):  # sub-block j: chunk j//2 of 32 bytes, low nibbles if j even
        chunk = qs[:, 32 * (j // 2):32 * (j // 2) + 32].astype(np.int32)
        q = chunk >> 4 if j % 2 else chunk & 15
        if bits == 5:
            q = q | (((qh >> j) & 1) << 4)
        dj = d[:, 0] * sc[:, j].astype(F32)
        mj = dmin[:, 0] * mn[:, j].astype(F32)
        out[:, 32 * j:32 * j + 32] = dj[:, None] * q.astype(F32) - mj[:, None]
    return out


def _dq_q6k(b):
    ql, qh = b[:, 0:128].astype(np.int32), b[:, 128:192].astype(np.int32)
    sc = np.ascontiguousarray(b[:, 192:208]).view(np.int8).astype(F32)
    d = _f16(b, 208)[:, 0]
    out = np.empty((b.shape[0], 256), F32)
    for e in range(256):
        h, r = divmod(e, 128)
        quarter, l = divmod(r, 32)
        lo = ql[:, 64 * h + l + 32 * (quarter & 1)]
        lo = lo >> 4 if quarter >= 2 else lo & 15
        q = (lo | (((qh[:, 32 * h + l] >> (2 * quarter)) & 3) << 4)) - 32
        out[:, e] = (d * sc[:, e // 16]) * q.astype(F32)
    return out


def dequantize(type_name, data, n=None):
    """float32 values of the blocks in `data` (bytes or uint8 array) of the named type. Blocks
    with inf/NaN scales give inf/NaN values, as in C."""
    with np.errstate(all="ignore"):
        return _dequantize(type_name, data, n)


def _dequantize(type_name, data, n):
    _, bs, ts = TYPES[type_name]
    raw = np.frombuffer(bytes(data), np.uint8)
    if type_name == "f32":
        return raw.view("<f4").astype(F32)
    if type_name == "f16":
        return raw.view("<f2").astype(F32)
    if type_name == "bf16":
        return (raw.view("<u2").astype(np.uint32) << 16).view(F32)
    b = raw[: len(raw) // ts * ts].reshape(-1, ts)
    if type_name in ("q4_0", "q5_0"):
        qh = _u32(b, 2) if type_name == "q5_0" else None
        c = _nibbles32(b[:, 6:22] if qh is not None else b[:, 2:18], qh)
        y = (c - (16 if qh is not None else 8)).astype(F32) * _f16(b, 0)
    elif type_name in ("q4_1", "q5_1"):
        qh = _u32(b, 4) if type_name == "q5_1" else None
        c = _nibbles32(b[:, 8:24] if qh is not None else b[:, 4:20], qh)
        y = c.astype(F32) * _f16(b, 0) + _f16(b, 2)
    elif type_name in ("q8_0", "q8_1"):
        off = 2 if type_name == "q8_0" else 4
        y = np.ascontiguousarray(b[:, off:off + 32]).view(np.int8).astype(F32) * _f16(b, 0)
    elif type_name in ("q4_k", "q5_k"):
        y = _dq_kq(b, 4 if type_name == "q4_k" else 5)
    elif type_name == "q6_k":
        y = _dq_q6k(b)
    elif type_name == "q8_k":
        d = np.ascontiguousarray(b[:, 0:4]).view("<f4").astype(F32)
        y = d * np.ascontiguousarray(b[:, 4:260]).view(np.int8).astype(F32)
    else:
        raise ValueError("unknown type " + type_name)
    y = y.reshape(-1).astype(F32, copy=False)
    return y if n is None else y[:n]


# ---- llama.cpp's quantization mix (llama_tensor_get_type), for the types `clara quantize` makes

FTYPE = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q4_k_m": 15, "q5_k_m": 17,
         "q6_k": 18}
BASE_TYPE = {"q4_0": "q4_0", "q4_1": "q4_1", "q8_0": "q8_0", "q5_0": "q5_0", "q5_1": "q5_1",
             "q4_k_m": "q4_k", "q5_k_m": "q5_k", "q6_k": "q6_k"}
FALLBACK = {"q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}


def use_more_bits(i_layer, n_layers):
    return (i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8
            or (i_layer - n_layers // 8) % 3 == 2)
