#!/usr/bin/env bash
# convert_7b.sh - converts a 7B-shaped synthetic CLaRa checkpoint (Mistral-7B shapes: 32 layers,
# hidden 4096, MLP 14336, 32/8 heads, vocabulary 32000; random bf16 values) to f16 with
# `clara convert` and reports wall time, throughput and peak memory next to the model size.
#
#   bench/convert_7b.sh [DIR]      (default build/bench/fx7b; env: TYPE=f16, KEEP_OUTPUT=1,
#                                   CLEANUP=1 removes the generated checkpoint afterwards)
#
# The checkpoint (~15 GB) is generated once with tests/fixtures/gen_fixtures.py and reused while
# its fixtures.stamp is present. The output (~15 GB for f16) goes next to it and is deleted
# afterwards unless KEEP_OUTPUT=1. Needs ~31 GB free on DIR's file system.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${1:-build/bench/fx7b}
TYPE=${TYPE:-f16}
PYTHON=${PYTHON:-/usr/bin/python3}
CLARA=${CLARA:-build/clara}
OUT="$DIR/clara-7b.$TYPE.gguf"

[ -x "$CLARA" ] || make -j"$(nproc)" "$CLARA"
mkdir -p "$DIR"
echo "disk space where the checkpoint goes ($DIR):"
df -h "$DIR"

gib() { awk -v b="$1" 'BEGIN { printf "%.2f GiB", b / 1073741824 }'; }
avail_bytes() { df -P -B1 "$DIR" | awk 'NR == 2 { print $4 }'; }

if [ -f "$DIR/fixtures.stamp" ]; then
    echo "reusing the 7B-shaped checkpoint in $DIR"
else
    need=$((32 * 1024 * 1024 * 1024)) # checkpoint + f16 output, with some room
    if [ "$(avail_bytes)" -lt "$need" ]; then
        echo "convert_7b.sh: need about $(gib "$need") free in $DIR, have $(gib "$(avail_bytes)")" >&2
        exit 1
    fi
    echo "generating the 7B-shaped checkpoint in $DIR (one time, several minutes)"
    "$PYTHON" tests/fixtures/gen_fixtures.py --shape 7b --out "$DIR"
fi

BASE="$DIR/base"
VAR="$DIR/instruct16"
# model size: the base model's safetensors (what "7B in bf16" means); source bytes: every input
# the converter reads (base shards, the two .pth files, configs and tokenizer files)
model_bytes=$(du -cb "$BASE"/*.safetensors | tail -1 | cut -f1)
source_bytes=$(du -cb "$BASE"/* "$VAR"/* | tail -1 | cut -f1)

rm -f "$OUT"
timelog=$(mktemp)
trap 'rm -f "$timelog"' EXIT
# drop the inputs from the page cache when allowed (root), so the run reads from disk like a
# first conversion; otherwise it measures a warm cache
if sync && echo 1 >/proc/sys/vm/drop_caches 2>/dev/null; then cache="cold"; else cache="warm"; fi
echo "converting ($cache page cache): $CLARA convert --type $TYPE"
/usr/bin/time -v -o "$timelog" "$CLARA" convert --base "$BASE" --clara "$VAR" --out "$OUT" \
    --type "$TYPE"

wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$timelog")
rss_kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$timelog")
# h:mm:ss or m:ss.ss -> seconds
secs=$(awk -v t="$wall" 'BEGIN { n = split(t, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }')
out_bytes=$(stat -c %s "$OUT")

echo
echo "== clara convert, 7B-shaped checkpoint, --type $TYPE =="
printf "model size (base safetensors, bf16) %s (%d bytes)\n" "$(gib "$model_bytes")" "$model_bytes"
printf "source bytes read                   %s\n" "$(gib "$source_bytes")"
printf "output size                         %s (%d bytes)\n" "$(gib "$out_bytes")" "$out_bytes"
printf "wall time                           %s s\n" "$secs"
awk -v o="$out_bytes" -v s="$source_bytes" -v t="$secs" 'BEGIN {
    printf "throughput (output / wall)          %.1f MB/s\n", o / t / 1e6
    printf "throughput (source / wall)          %.1f MB/s\n", s / t / 1e6 }'
awk -v k="$rss_kb" -v m="$model_bytes" 'BEGIN {
    printf "peak RSS                            %.1f MiB (%.1f%% of the model size)\n", k / 1024, 100 * k * 1024 / m }'
grep -E "User time|System time|Percent of CPU|Major|Minor" "$timelog" | sed 's/^\t/  /'

if [ "${KEEP_OUTPUT:-0}" != 1 ]; then rm -f "$OUT"; fi
if [ "${CLEANUP:-0}" = 1 ]; then rm -rf "$DIR"; fi
