#!/usr/bin/env bash
# pull_7b.sh - `clara pull` of a 7B-shaped model from the mock Hub (tests/e2e/mock_hub.py) on
# loopback: random-weight stand-ins of the real sizes (tests/fixtures/gen_fixtures.py --shape 7b)
# served under the Hub's layout, pulled by the light or the full route. Reports the wall time of
# each phase (download + verification, conversion, the load check) and the peak memory
# (/usr/bin/time -v's maximum resident set size) of the whole pull.
#
#   ROUTE=light|full TYPE=q4_k_m SHAPE=7b bench/pull_7b.sh [DIR]   (default DIR build/bench/pull7b)
#
# Disk at 7B: the stand-ins (~15 GB of base safetensors; the light route turns them into a base
# GGUF of TYPE first, through a bf16 temporary file, and then deletes them), the pull's
# downloads, and its conversion (the full route writes a bf16 temporary file of ~14.5 GB when it
# quantizes): light ~34 GB at the peak of the preparation, full ~50 GB. Everything under DIR is
# deleted at the end unless KEEP=1. SHAPE=tiny runs the same steps in seconds (a check of the
# script). The light route needs `clara convert --addon-only` to accept a GGUF as --base.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${1:-build/bench/pull7b}
ROUTE=${ROUTE:-light}
TYPE=${TYPE:-q4_k_m}
SHAPE=${SHAPE:-7b}
PYTHON=${PYTHON:-/usr/bin/python3}
CLARA=$(realpath "${CLARA:-build/clara}")
TOKEN=bench-token
NAME=apple/CLaRa-7B-Instruct

[ -x "$CLARA" ] || make -j"$(nproc)" build/clara
[ -x /usr/bin/time ] || { echo "pull_7b.sh: needs /usr/bin/time (Debian package time)" >&2; exit 1; }
mkdir -p "$DIR"
DIR=$(realpath "$DIR")
MOCK_PID=""
cleanup() {
    if [ -n "$MOCK_PID" ]; then kill "$MOCK_PID" 2>/dev/null || true; fi
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$DIR"; fi
}
trap cleanup EXIT
echo "disk where the stand-ins and the cache go ($DIR):"
df -h "$DIR" | tail -1

# The stand-ins: the base safetensors and the CLaRa sub-folder, in the Hub's layouts.
t0=$(date +%s.%N)
$PYTHON tests/fixtures/gen_fixtures.py --out "$DIR/fx" --shape "$SHAPE" --variants instruct16 --quiet
mkdir -p "$DIR/repos/clara" "$DIR/repos/gguf"
ln -sfn "$DIR/fx/instruct16" "$DIR/repos/clara/compression-16"
GGUF_FILE=""
if [ "$ROUTE" = light ]; then
    declare -A SUFFIX=([q4_0]=Q4_0 [q4_k_m]=Q4_K_M [q5_0]=Q5_0 [q5_k_m]=Q5_K_M [q6_k]=Q6_K [q8_0]=Q8_0)
    GGUF_FILE="mistral-7b-instruct-v0.2.${SUFFIX[$TYPE]}.gguf"
    "$CLARA" convert --base "$DIR/fx/base" --base-only --type "$TYPE" --quiet \
        --out "$DIR/repos/gguf/$GGUF_FILE"
    rm -f "$DIR"/fx/base/*.safetensors # not served by this route: disk for the pull
fi
printf 'stand-ins ready in %.0f s\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
du -sh "$DIR/fx/instruct16" "$DIR/fx/base" "$DIR/repos/gguf" 2>/dev/null || true

# The mock Hub (its listing hashes every LFS file once: sha256 of the stand-ins).
$PYTHON tests/e2e/mock_hub.py --repo "$NAME=$DIR/repos/clara" \
    --repo "mistralai/Mistral-7B-Instruct-v0.2=$DIR/fx/base" \
    --repo "TheBloke/Mistral-7B-Instruct-v0.2-GGUF=$DIR/repos/gguf" \
    --gated mistralai/Mistral-7B-Instruct-v0.2 --token "$TOKEN" --port-file "$DIR/port" \
    >"$DIR/mock.log" 2>&1 &
MOCK_PID=$!
for _ in $(seq 1 3000); do [ -s "$DIR/port" ] && break; sleep 0.2; done
[ -s "$DIR/port" ] || { echo "the mock Hub did not start:" >&2; cat "$DIR/mock.log" >&2; exit 1; }

args=(pull "$NAME" --type "$TYPE")
if [ "$ROUTE" = full ]; then args+=(--full); fi
export HF_ENDPOINT="http://127.0.0.1:$(cat "$DIR/port")" HF_TOKEN=$TOKEN CLARA_CACHE_DIR="$DIR/cache"
/usr/bin/time -v -o "$DIR/time.txt" "$CLARA" "${args[@]}" 2>&1 | tee "$DIR/pull.log"
wall=$(grep -oE 'pulled .* in [0-9.]+ s' "$DIR/pull.log" | grep -oE '[0-9.]+ s$')
dl=$(grep -oE 'verified in [0-9.]+ s' "$DIR/pull.log" | grep -oE '[0-9.]+ s')
conv=$(grep -oE 'converted in [0-9.]+ s' "$DIR/pull.log" | grep -oE '[0-9.]+ s')
rss=$(awk -F: '/Maximum resident set size/ { printf "%.2f GiB", $2 / 1048576 }' "$DIR/time.txt")
size=$(du -sh "$DIR/cache"/models--* | cut -f1)
echo
echo "route $ROUTE, type $TYPE, shape $SHAPE ($(nproc) CPUs):"
echo "  downloaded bytes:      $(grep -oE '[0-9.]+ [KMGT]iB to download' "$DIR/pull.log")"
echo "  download + sha256:     $dl"
echo "  conversion:            $conv"
echo "  whole pull:            $wall (with the load check)"
echo "  peak memory (max RSS): $rss"
echo "  model in the cache:    $size"
