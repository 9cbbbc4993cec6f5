#!/usr/bin/env bash
# peer.sh - side-by-side with llama.cpp: prompt processing (pp256, pp512: that many random token ids
# in one batch on an empty sequence, tokens/s) and token generation (tg32: tokens decoded one at a
# time, greedy, after a 16-token prompt or --tg-prompt N) of llama.cpp on a GGUF base model, on
# the CPU, through the prebuilt binaries of the npm package node-llama-cpp (pinned; installed once
# into $PEER_DIR, default build/peer-llama; never built from source). --gpu vulkan|cuda runs it on
# the GPU instead, every layer offloaded, with the prebuilt @node-llama-cpp/linux-x64-vulkan (or
# linux-x64-cuda + linux-x64-cuda-ext) of the same version, installed once when asked (exit 5 when
# that install fails: no registry reachable), and ours with --backend vulkan. --install-only
# installs and stops (to pack a PEER_DIR for a machine without network, bench/device.sh --peer-tar). Each figure is the median of R
# repetitions after one warm-up; the sequence is cleared before each. With --clara, also runs ours
# (`$BUILD/clara bench --base BASE --clara ADDON --threads N --json --parts compress`, then
# `--parts answer --gen-tokens TG --reps R`, where that command exists)
# and prints ours/theirs: compression tokens/s at batch 16 against pp256 and pp512, answer decode
# tokens/s against tg. Each of our figures is measured right next to the llama.cpp figure it is
# compared with, who goes first alternating between rounds. With --rounds N that repeats N times and
# the report gives each round's ratios, their medians and their minimum: on a machine whose memory
# bandwidth drifts, a ratio should pair figures taken seconds apart, not minutes.
#
#   bench/peer.sh --base BASE.gguf [--clara ADDON.gguf] [--threads N[,N...]] [--reps R] [--json]
#                 [--tg N] [--tg-prompt N] [--rounds N] [--flash-attn auto|on|off] [--verbose]
#                 [--gpu off|vulkan|cuda] [--install-only]
#       (env: BUILD=build, PEER_DIR=build/peer-llama, CLARA_BENCH_ARGS="--batches 16 ..." extra
#        options for `clara bench`)
#
# Output: a table and one JSON line ({"cpu": ..., "peer": ..., "comparison": [...]}, and "rounds":
# [...] with --rounds N > 1, "comparison" then holding the medians); with --json only the JSON
# line on stdout (the table goes to stderr). The last columns: the read bandwidth our answer's
# run measured just before it and the decode roofline it gives, both decodes as a % of it.
# Every figure is labelled with the CPU it was measured on: a "cpu:" line (name, vendor, family,
# model, kind) over the table, a cpu column in each row ("zen4 25/17": kind family/model), "cpu"
# in the JSON and in each comparison row; the kind is the one `clara bench` chose its kernel
# parameters for. Needs node >= 20 and npm (first run only, ~85 MB).
# The machine should be otherwise idle: llama.cpp's threads spin, and with a busy core their speed
# collapses (cpu/wall in the table is how many cores it really kept busy).
set -euo pipefail
CALLER_DIR=$PWD
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PEER_DIR=${PEER_DIR:-$BUILD/peer-llama}
PKG_VERSION=3.21.1

die() { echo "peer.sh: $*" >&2; exit 2; }
usage() { sed -n "20,24p" "$0" | sed "s/^# \{0,1\}//" >&2; exit "${1:-2}"; }

BASE='' CLARA_ADDON='' THREADS=2 REPS=3 JSON=0 TG=32 TG_PROMPT=16 ROUNDS=1 FA=auto GPU=off INSTALL_ONLY=0 VERBOSE=()
while [ $# -gt 0 ]; do
    case "$1" in
        --base) [ $# -ge 2 ] || usage; BASE=$2; shift 2 ;;
        --clara) [ $# -ge 2 ] || usage; CLARA_ADDON=$2; shift 2 ;;
        --threads) [ $# -ge 2 ] || usage; THREADS=$2; shift 2 ;;
        --reps) [ $# -ge 2 ] || usage; REPS=$2; shift 2 ;;
        --tg) [ $# -ge 2 ] || usage; TG=$2; shift 2 ;;
        --tg-prompt) [ $# -ge 2 ] || usage; TG_PROMPT=$2; shift 2 ;;
        --rounds) [ $# -ge 2 ] || usage; ROUNDS=$2; shift 2 ;;
        --flash-attn) [ $# -ge 2 ] || usage; FA=$2; shift 2 ;;
        --gpu) [ $# -ge 2 ] || usage; GPU=$2; shift 2 ;;
        --json) JSON=1; shift ;;
        --install-only) INSTALL_ONLY=1; shift ;;
        --verbose) VERBOSE=(--verbose); shift ;;
        -h|--help) usage 0 ;;
        *) echo "peer.sh: unknown option '$1'" >&2; usage ;;
    esac
done
[ -n "$BASE" ] || [ "$INSTALL_ONLY" = 1 ] || { echo "peer.sh: --base BASE.gguf is required" >&2; usage; }
[[ "$THREADS" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--threads: expected N or N,N,..., got '$THREADS'"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "--reps: expected a positive integer, got '$REPS'"
[[ "$TG" =~ ^[1-9][0-9]*$ ]] || die "--tg: expected a positive integer, got '$TG'"
[[ "$TG_PROMPT" =~ ^[1-9][0-9]*$ ]] || die "--tg-prompt: expected a positive integer, got '$TG_PROMPT'"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds: expected a positive integer, got '$ROUNDS'"
case "$GPU" in off|vulkan|cuda) ;; *) die "--gpu: off, vulkan or cuda, got '$GPU'" ;; esac

check_gguf() { # FILE WHAT
    [ -e "$1" ] || die "$2 '$1': no such file"
    { [ -f "$1" ] && [ -r "$1" ]; } || die "$2 '$1': not a readable file"
    [ "$(head -c 4 "$1")" = GGUF ] || die "$2 '$1': not a GGUF file (no 'GGUF' magic)"
}
# file arguments are relative to the caller's directory; BUILD and PEER_DIR to the repository's
case "$BASE" in /*) ;; *) BASE=$CALLER_DIR/$BASE ;; esac
case "$CLARA_ADDON" in /*|'') ;; *) CLARA_ADDON=$CALLER_DIR/$CLARA_ADDON ;; esac
[ "$INSTALL_ONLY" = 1 ] || check_gguf "$BASE" "--base"
[ -z "$CLARA_ADDON" ] || check_gguf "$CLARA_ADDON" "--clara"

command -v node >/dev/null || die "node not found (node >= 20 is needed: apt-get install nodejs, or nodejs.org)"
node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' ||
    die "node $(node --version) is too old: node-llama-cpp $PKG_VERSION needs node >= 20"

# Install the pinned package once. On Linux only the binary package for this machine and --gpu
# comes along (--omit=optional, then named explicitly): all the CUDA/Vulkan ones are ~650 MB more.
# --ignore-scripts: its postinstall step could try to build llama.cpp from source.
installed() { # DIR/node_modules/PKG -> its version, or nothing
    node -e 'try { console.log(require(require("path").resolve(process.argv[1], "package.json")).version) } catch {}' "$1" 2>/dev/null
}
case "$(node -p process.platform)-$(node -p process.arch)-$GPU" in
    linux-x64-off) BIN_PKGS=(@node-llama-cpp/linux-x64) ;;
    linux-x64-vulkan) BIN_PKGS=(@node-llama-cpp/linux-x64-vulkan) ;;
    linux-x64-cuda) BIN_PKGS=(@node-llama-cpp/linux-x64-cuda @node-llama-cpp/linux-x64-cuda-ext) ;;
    linux-arm64-off) BIN_PKGS=(@node-llama-cpp/linux-arm64) ;;
    linux-arm-off) BIN_PKGS=(@node-llama-cpp/linux-armv7l) ;;
    *-off) BIN_PKGS=() ;;
    *) die "--gpu $GPU: node-llama-cpp has no prebuilt $GPU binary for $(node -p process.platform)-$(node -p process.arch) that this script installs" ;;
esac
MISSING=0
[ "$(installed "$PEER_DIR/node_modules/node-llama-cpp")" = "$PKG_VERSION" ] || MISSING=1
for p in "${BIN_PKGS[@]}"; do [ "$(installed "$PEER_DIR/node_modules/$p")" = "$PKG_VERSION" ] || MISSING=1; done
if [ "$MISSING" = 1 ]; then
    command -v npm >/dev/null || die "npm not found (needed once, to install node-llama-cpp $PKG_VERSION into $PEER_DIR)"
    echo "peer.sh: installing node-llama-cpp@$PKG_VERSION ${BIN_PKGS[*]} into $PEER_DIR" >&2
    mkdir -p "$PEER_DIR"
    PKGS=(--omit=optional "node-llama-cpp@$PKG_VERSION")
    for p in "${BIN_PKGS[@]}"; do PKGS+=("$p@$PKG_VERSION"); done
    npm install --prefix "$PEER_DIR" --save-exact --ignore-scripts --no-audit --no-fund --loglevel=error \
        "${PKGS[@]}" >&2 || {
        echo "peer.sh: npm install node-llama-cpp@$PKG_VERSION ${BIN_PKGS[*]} failed (is the npm registry reachable?)" >&2
        exit 5
    }
fi

if [ "$INSTALL_ONLY" = 1 ]; then
    echo "peer.sh: node-llama-cpp@$PKG_VERSION ${BIN_PKGS[*]} installed in $PEER_DIR" >&2
    exit 0
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/clara-peer.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

CLARA=$BUILD/clara
OURS_NOTE=''
if [ -n "$CLARA_ADDON" ]; then
    HELP=$("$CLARA" bench --help 2>&1 || true)
    if [ ! -x "$CLARA" ]; then
        OURS_NOTE="$CLARA is not built (run make)"
    elif [[ "$HELP" == *"unknown command 'bench'"* ]]; then
        OURS_NOTE="$CLARA has no bench command yet"
    fi
fi
IFS=, read -ra TLIST <<<"$THREADS"
read -ra EXTRA <<<"${CLARA_BENCH_ARGS:-}"
[ "$GPU" = off ] || EXTRA+=(--backend vulkan) # ours reaches every GPU through Vulkan
R=''
llama() { # OUT THREADS PP TG: peer.mjs with pp list PP (0: none) and TG generated tokens (0: none)
    echo "peer.sh: llama.cpp$R, threads $2:$([ "$3" = 0 ] || echo " pp $3")$([ "$4" = 0 ] || echo " tg $4")" >&2
    node bench/peer.mjs --module-dir "$PEER_DIR" --model "$BASE" --threads "$2" --reps "$REPS" \
        --pp "$3" --tg "$4" --tg-prompt "$TG_PROMPT" --flash-attn "$FA" --gpu "$GPU" "${VERBOSE[@]}" >"$1" ||
        die "the llama.cpp run failed (see above)"
}
ours() { # OUT THREADS PART
    local ARGS=("${EXTRA[@]}" --parts "$3")
    # The answer is timed like llama.cpp's tg beside it: as many tokens and repetitions (medians
    # of both), whatever CLARA_BENCH_ARGS says (its --reps then sets the compression's alone).
    # One 32-token decode lasts ~4 s: one repetition against llama.cpp's two let a dip of the
    # machine's bandwidth of a few seconds decide a round's ratio.
    [ "$3" != answer ] || ARGS+=(--gen-tokens "$TG" --reps "$REPS")
    echo "peer.sh: ours$R: $CLARA bench --base $BASE --clara $CLARA_ADDON --threads $2 --json ${ARGS[*]}" >&2
    "$CLARA" bench --base "$BASE" --clara "$CLARA_ADDON" --threads "$2" --json "${ARGS[@]}" >"$1" ||
        echo "peer.sh: clara bench --threads $2 --parts $3 failed (status $?)" >&2
}
# Each of our figures is taken right next to llama.cpp's matching one (pp next to compression,
# tg next to the answer), and who goes first alternates: odd rounds llama pp, ours compress,
# ours answer, llama tg; even rounds the reverse. A drifting machine then shifts both sides of a
# ratio alike.
REPORT=()
for round in $(seq "$ROUNDS"); do
    [ "$ROUNDS" = 1 ] || R=" (round $round of $ROUNDS)"
    F=$TMP/r$round
    if [ -z "$CLARA_ADDON" ] || [ -n "$OURS_NOTE" ]; then
        llama "$F.peer.json" "$THREADS" 256,512 "$TG"
        REPORT+=(--report "$F.peer.json")
        continue
    fi
    PEERS=() OURS=()
    for t in "${TLIST[@]}"; do
        if [ $((round % 2)) = 1 ]; then
            llama "$F.pp.$t.json" "$t" 256,512 0
            ours "$F.c.$t.json" "$t" compress
            ours "$F.a.$t.json" "$t" answer
            llama "$F.tg.$t.json" "$t" 0 "$TG"
        else
            ours "$F.c.$t.json" "$t" compress
            llama "$F.pp.$t.json" "$t" 256,512 0
            llama "$F.tg.$t.json" "$t" 0 "$TG"
            ours "$F.a.$t.json" "$t" answer
        fi
        PEERS+=("$F.pp.$t.json" "$F.tg.$t.json")
        OURS+=(--ours "$t=$F.c.$t.json" --ours "$t=$F.a.$t.json")
    done
    REPORT+=(--report "${PEERS[0]}")
    for f in "${PEERS[@]:1}"; do REPORT+=(--also "$f"); done
    REPORT+=("${OURS[@]}")
done
[ -z "$OURS_NOTE" ] || REPORT+=(--ours-note "$OURS_NOTE")
[ "$JSON" = 0 ] || REPORT+=(--json)
node bench/peer.mjs "${REPORT[@]}"
