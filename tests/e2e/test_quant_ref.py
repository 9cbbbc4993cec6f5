"""The C dequantizers (src/quant.c) against the independent numpy ones (tests/reference/
quant_ref.py): build/tests/test_quant --dump writes, per block type, blocks of random bytes (some
with inf/NaN f16 scales) and blocks quantized from many kinds of input, plus the C float32
dequantization; every value must be bit-identical (NaN where NaN). Also a few blocks built by
hand here from the format description, dequantized by numpy, to check the reference itself."""

import os
import subprocess
import tempfile

import numpy as np

from harness import BUILD, check, report, run
import quant_ref as qr

OUT = tempfile.mkdtemp(prefix="clara_quant_ref_")
TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1", "q4_k", "q5_k", "q6_k", "q8_k"]


def test_dump_bit_identical():
    exe = os.environ.get("QUANT_EXE") or os.path.join(BUILD, "tests", "test_quant")
    p = subprocess.run([exe, "--dump", OUT], capture_output=True, text=True)
    if not check(p.returncode == 0, "test_quant --dump failed: %s" % p.stderr):
        return
    for t in TYPES:
        blocks = open(os.path.join(OUT, t + ".bin"), "rb").read()
        c = np.fromfile(os.path.join(OUT, t + ".f32"), dtype="<f4")
        py = qr.dequantize(t, blocks)
        check(py.shape == c.shape, "%s: %s values in numpy, %s in C" % (t, py.shape, c.shape))
        if py.shape != c.shape:
            continue
        nan_c, nan_p = np.isnan(c), np.isnan(py)
        same = (c.view(np.uint32) == py.view(np.uint32)) | (nan_c & nan_p)
        bad = np.flatnonzero(~same)
        check(bad.size == 0, "%s: %d of %d values differ (first at %s: C %r numpy %r)" % (
            t, bad.size, c.size, bad[:1], c[bad[:1]], py[bad[:1]]))
        if t != "q8_k":  # random f16 scales must have produced non-finite values somewhere
            check(not np.all(np.isfinite(c)), "%s: the dump has no inf/NaN case" % t)
        check(np.count_nonzero(c) > c.size // 4, "%s: the dump is mostly zeros" % t)


def test_hand_blocks():
    # q4_0: d = 0.5 (f16 0x3800), byte j = j | (15-j) << 4
    b = bytes([0x00, 0x38]) + bytes([j | (15 - j) << 4 for j in range(16)])
    y = qr.dequantize("q4_0", b)
    check(list(y[:16]) == [0.5 * (j - 8) for j in range(16)], "q4_0 low nibbles: %s" % y[:16])
    check(list(y[16:]) == [0.5 * (7 - j) for j in range(16)], "q4_0 high nibbles: %s" % y[16:])
    # q5_1: d = 1, m = -2 (0xc000), qh bit 31 -> element 31 = (15 | 16) * 1 - 2
    b = bytes([0x00, 0x3C, 0x00, 0xC0]) + (1 << 31).to_bytes(4, "little") + bytes([0xF0] * 16)
    y = qr.dequantize("q5_1", b)
    check(y[31] == 29.0 and y[30] == 13.0 and y[0] == -2.0, "q5_1 hand block: %s" % y)
    # q8_k: d = 0.25 (f32), code -4 at element 200
    qs = bytearray(256)
    qs[200] = 0xFC
    y = qr.dequantize("q8_k", np.float32(0.25).tobytes() + bytes(qs) + bytes(32))
    check(y[200] == -1.0 and np.count_nonzero(y) == 1, "q8_k hand block")
    # q6_k: d = 1, scale of sub-block 0 = 2, element 96 = ql[32] high nibble | qh[0] bits 6-7
    blk = bytearray(210)
    blk[32] = 0xA0
    blk[128] = 0x80
    blk[192 + 6] = 2
    blk[208:210] = bytes([0x00, 0x3C])
    y = qr.dequantize("q6_k", bytes(blk))
    check(y[96] == 2 * ((10 | 2 << 4) - 32), "q6_k element 96: %s" % y[96])


run(test_dump_bit_identical)
run(test_hand_blocks)
report("test_quant_ref.py")
