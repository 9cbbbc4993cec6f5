#!/usr/bin/env bash
# bench_tokenizer.sh - encode throughput of the C tokenizer (src/tokenizer*.c) on the real
# passages of the QA data set, one thread, each passage one BPE segment:
#   1. the converted fixture model (1,019-token vocabulary),
#   2. a 16,000-piece SentencePiece BPE trained on the same passages (Mistral's trainer options,
#      tests/fixtures/spm_to_hf.py), converted to tokenizer.json: closer to Mistral's 32,000
#      pieces / 58,980 merges than the fixture.
#
#   bench/bench_tokenizer.sh [SECONDS]     (env: PASSAGES=..., BUILD=build, PYTHON=/usr/bin/python3)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-2}
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
PASSAGES=${PASSAGES:-tests/data/wiki-passages-qa.jsonl}
OUT=$BUILD/bench/tokenizer
mkdir -p "$OUT"

make -s -j"$(nproc)" "$BUILD/libclara.a" "$BUILD/clara"
cc -std=c11 -O2 -Iinclude -Isrc -D_DEFAULT_SOURCE $(pkg-config --cflags libcjson) \
    bench/bench_tokenizer.c "$BUILD/libclara.a" $(pkg-config --libs libcjson) -lm -lpthread \
    -o "$OUT/bench_tokenizer"

"$PYTHON" -c 'import sys; sys.path.insert(0, "tests/fixtures"); import gen_fixtures as g; g.ensure(sys.argv[1])' \
    "$BUILD/fixtures"
"$BUILD/clara" convert --base "$BUILD/fixtures/base" --clara "$BUILD/fixtures/instruct16" \
    --out "$OUT/instruct16.gguf" --type f32 --quiet
echo "fixture model:"
"$OUT/bench_tokenizer" "$OUT/instruct16.gguf" "$PASSAGES" "$SECS"

if [ ! -f "$OUT/spm16k/tokenizer.json" ]; then
    "$PYTHON" -c 'import sys; sys.path.insert(0, "tests/fixtures"); import spm_to_hf as s
s.train(sys.argv[1], 16000); s.write_committed(sys.argv[1])' "$OUT/spm16k"
fi
echo "16k-piece SentencePiece BPE (tokenizer.json):"
"$OUT/bench_tokenizer" --hf-dir "$OUT/spm16k" "$PASSAGES" "$SECS"
