#!/usr/bin/env bash
# memory_7b.sh - peak memory (and time) to answer a 5-document question with a 7B-shaped model
# (Mistral-7B shapes, random weights, the real CLaRa layout: encoder and decoder adapters) in each
# type, measured with /usr/bin/time -v; also the file size and bits/weight of each type.
#
#   bench/memory_7b.sh [TYPES...]     (default: q4_k_m q4_0 q8_0 f16; env: DIR=build/bench/fx7b,
#                                      THREADS=2, KEEP=1 keeps the converted files)
#
# The checkpoint (~16 GB) is generated once (tests/fixtures/gen_fixtures.py --shape 7b) and reused.
# Each type is converted with `clara convert --type T` (quantized types go through a temporary
# bf16 file), then `clara ask` answers one question from 5 real passages
# (tests/data/wiki-passages-qa.jsonl), 16 new tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DIR:-build/bench/fx7b}
THREADS=${THREADS:-2}
PYTHON=${PYTHON:-/usr/bin/python3}
CLARA=${CLARA:-build/clara}
TYPES=${*:-q4_k_m q4_0 q8_0 f16}
DATA=${DATA:-tests/data/wiki-passages-qa.jsonl}

[ -x "$CLARA" ] || make -j2 "$CLARA"
mkdir -p "$DIR"
if [ ! -f "$DIR/fixtures.stamp" ]; then
    echo "generating the 7B-shaped checkpoint in $DIR (one time, ~1 minute, ~16 GB)"
    "$PYTHON" tests/fixtures/gen_fixtures.py --shape 7b --out "$DIR" --quiet
fi
DOCS="$DIR/docs5.jsonl"
"$PYTHON" - "$DATA" "$DOCS" <<'PY'
import json, sys
recs = [json.loads(l) for _, l in zip(range(5), open(sys.argv[1]))]
with open(sys.argv[2], "w") as f:
    for r in recs:
        f.write(json.dumps(r["docs"][0]) + "\n")
print(recs[0]["question"][0])
PY
QUERY=$("$PYTHON" -c "import json,sys; print(json.loads(open('$DATA').readline())['question'][0])")

printf "\n%-8s %12s %10s %14s %14s %10s\n" type "file (GB)" "bits/w" "peak RSS (GB)" "peak (GiB)" "wall (s)"
for t in $TYPES; do
    out="$DIR/clara-7b.$t.gguf"
    if [ ! -f "$out" ]; then
        "$CLARA" convert --base "$DIR/base" --clara "$DIR/instruct16" --out "$out" --type "$t" --quiet
    fi
    log="$DIR/time.$t.log"
    /usr/bin/time -v "$CLARA" ask --model "$out" --docs-file "$DOCS" --query "$QUERY" \
        --max-new-tokens 16 --threads "$THREADS" >"$DIR/answer.$t.txt" 2>"$log"
    rss_kb=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$log")
    wall=$(awk '/Elapsed \(wall clock\)/ { print $NF }' "$log")
    size=$(stat -c %s "$out")
    params=7241732096 # Mistral-7B weights (no CLaRa tables/adapters)
    awk -v t="$t" -v s="$size" -v r="$rss_kb" -v w="$wall" -v p="$params" 'BEGIN {
        printf "%-8s %12.2f %10.2f %14.2f %14.2f %10s\n", t, s / 1e9, s * 8 / p, r * 1024 / 1e9,
               r / 1048576, w }'
    [ "${KEEP:-0}" = 1 ] || rm -f "$out"
done
