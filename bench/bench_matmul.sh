#!/usr/bin/env bash
# bench_matmul.sh - builds bench/bench_matmul.c against the library and runs it: GEMM GFLOP/s and
# GEMV GB/s of clara_matmul per weight type, instruction-set level and thread count (1, 2).
#
#   bench/bench_matmul.sh [SECONDS_PER_CASE] [TYPES...]     (env: BUILD=build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUT=$BUILD/bench/matmul
mkdir -p "$OUT"
make -s -j"$(nproc)" "$BUILD/libclara.a"
cc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude -Isrc -D_DEFAULT_SOURCE \
    $(pkg-config --cflags libcjson) bench/bench_matmul.c "$BUILD/libclara.a" \
    $(pkg-config --libs libcjson libmicrohttpd) -lm -lpthread -o "$OUT/bench_matmul"
"$OUT/bench_matmul" "$@"
