#!/usr/bin/env bash
# bench_prefix.sh - builds bench/bench_prefix.c against the library and runs it: the prefill of a
# 5-document answer with the prompt heads' cache off, with the head computed and with it cached,
# in alternating rounds, checking that every answer is bit for bit the same (docs/PERFORMANCE.md).
#
#   bench/bench_prefix.sh MODEL.gguf | BASE.gguf CLARA.gguf     (env: BUILD=build ROUNDS THREADS)
#   e.g. build/clara bench --generate 7b --type q4_0 --out build/bench/g7b.q4_0
#        bench/bench_prefix.sh build/bench/g7b.q4_0/base.gguf build/bench/g7b.q4_0/clara.gguf
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUT=$BUILD/bench/prefix
mkdir -p "$OUT"
make -s -j"$(nproc)" "$BUILD/libclara.a"
cc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude -Isrc -D_DEFAULT_SOURCE \
    $(pkg-config --cflags libcjson) bench/bench_prefix.c "$BUILD/libclara.a" \
    $(pkg-config --libs libcjson libmicrohttpd sqlite3 libpq) -lm -lpthread -o "$OUT/bench_prefix"
"$OUT/bench_prefix" "$@"
