#!/usr/bin/env bash
# bench_decode.sh - builds bench/bench_decode.c against the library and runs it: the cost of one
# decode step (clara_forward_batch, one row per sequence, LoRA active, logits) at 1, 2, 4, 8 and
# 16 rows on a model pair, e.g. one `clara bench --generate 1b --type q4_0 --out DIR` wrote.
#
#   bench/bench_decode.sh BASE.gguf CLARA.gguf [THREADS=2] [ROUNDS=5] [STEPS=8]
#   (env: BENCH_PROMPT=64 tokens of context before the steps; BENCH_ROWS=1,2,4,8,16 the rows)
#   (env: BUILD=build; CLARA_ISA=avx2|avx512|ref forces a level)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUT=$BUILD/bench/decode
mkdir -p "$OUT"
make -s -j"$(nproc)" "$BUILD/libclara.a"
cc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude -Isrc -D_DEFAULT_SOURCE \
    $(pkg-config --cflags libcjson) bench/bench_decode.c "$BUILD/libclara.a" \
    $(pkg-config --libs libcjson libmicrohttpd sqlite3 libpq) -lm -lpthread -o "$OUT/bench_decode"
"$OUT/bench_decode" "$@"
