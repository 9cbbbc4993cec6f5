#!/usr/bin/env bash
# device.sh - the prepared run for a machine with a real GPU (issue 22): names the machine, builds,
# runs the Vulkan fidelity suite on the device, generates 7B-shaped random-weight base + CLaRa
# files per weight type, times `clara bench --backend vulkan` on them, and llama.cpp on the same
# base files on the GPU (bench/peer.sh --gpu vulkan, and --gpu cuda where nvidia-smi exists), then
# writes ONE figures file: per type ours against llama.cpp, the ratios against the issue's targets
# (compression >= 1.0x llama.cpp's prompt processing pp512, decode >= 0.9x its tg32), every figure
# labelled with the GPU and the CPU. Keeps a time budget: a step that does not fit is skipped (or
# stopped) and the file says so.
#
#   bench/device.sh [--out FILE] [--types q4_0,q8_0,f16] [--shape 7b|1b|tiny] [--skip-fidelity]
#                   [--skip-peer] [--budget-s 480] [--fidelity-cases NAME,...] [--peer-tar FILE]
#       (env: BUILD=build, PEER_DIR=$BUILD/peer-llama, PYTHON=/usr/bin/python3, OUT: the figures go
#        to $OUT/device-figures.txt when set, else $BUILD/device-figures.txt; logs beside it in
#        device-logs/)
#
# Generated models go to $BUILD/device-models/SHAPE-TYPE/ and are reused when present. --shape tiny
# (for the tests) also makes the timed work small (one batch of 4 8-token documents, compared in
# place of batch 16; 4 generated tokens, 1 rep); --fidelity-cases runs only those cases of the suite (its test does, to stay
# short; the file names them). --peer-tar FILE: a tar.xz of a PEER_DIR holding the GPU prebuilt
# (made on a machine with network, docs/VULKAN.md), unpacked under $BUILD/peer-tar and used as
# PEER_DIR: for a machine without network. The fidelity suite gets at most 30% of the budget.
# Exit status: 0 when the figures file was written (skipped or failed steps are in it), 2 on bad
# arguments, 3 when the build fails or has no Vulkan backend.
set -uo pipefail
CALLER_DIR=$PWD
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PEER_DIR=${PEER_DIR:-$BUILD/peer-llama}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3
START=$SECONDS

die() { echo "device.sh: $*" >&2; exit "${2:-2}"; }
usage() { sed -n "11,15p" "$0" | sed "s/^# \{0,1\}//" >&2; exit "${1:-2}"; }

OUTFILE='' TYPES=q4_0,q8_0,f16 SHAPE=7b FIDELITY=1 PEER=1 BUDGET=480 CASES='' PEER_TAR=''
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || usage; OUTFILE=$2; shift 2 ;;
        --types) [ $# -ge 2 ] || usage; TYPES=$2; shift 2 ;;
        --shape) [ $# -ge 2 ] || usage; SHAPE=$2; shift 2 ;;
        --budget-s) [ $# -ge 2 ] || usage; BUDGET=$2; shift 2 ;;
        --fidelity-cases) [ $# -ge 2 ] || usage; CASES=$2; shift 2 ;;
        --peer-tar) [ $# -ge 2 ] || usage; PEER_TAR=$2; shift 2 ;;
        --skip-fidelity) FIDELITY=0; shift ;;
        --skip-peer) PEER=0; shift ;;
        -h|--help) usage 0 ;;
        *) echo "device.sh: unknown option '$1'" >&2; usage ;;
    esac
done
[[ "$BUDGET" =~ ^[1-9][0-9]*$ ]] || die "--budget-s: expected a positive number of seconds, got '$BUDGET'"
case "$SHAPE" in 7b|1b|tiny) ;; *) die "--shape: 7b, 1b or tiny, got '$SHAPE'" ;; esac
IFS=, read -ra TLIST <<<"$TYPES"
[ "${#TLIST[@]}" -gt 0 ] || die "--types: expected a list such as q4_0,q8_0,f16"
for t in "${TLIST[@]}"; do
    case "$t" in f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_k_m|q5_k_m|q6_k) ;;
        *) die "--types: '$t' is not a type clara bench --generate writes" ;; esac
done
if [ -z "$OUTFILE" ]; then OUTFILE=${OUT:+$OUT/device-figures.txt}; OUTFILE=${OUTFILE:-$BUILD/device-figures.txt}; fi
case "$OUTFILE" in /*) ;; *) OUTFILE=$CALLER_DIR/$OUTFILE ;; esac
mkdir -p "$(dirname "$OUTFILE")" || die "cannot create the directory of '$OUTFILE'"
LOGS=$(dirname "$OUTFILE")/device-logs
mkdir -p "$LOGS" || die "cannot create '$LOGS'"
if [ -n "$PEER_TAR" ]; then
    case "$PEER_TAR" in /*) ;; *) PEER_TAR=$CALLER_DIR/$PEER_TAR ;; esac
    [ -f "$PEER_TAR" ] || die "--peer-tar '$PEER_TAR': no such file"
fi
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (the report is written by bench/device_report.py)"
RUN=$(mktemp -d "${TMPDIR:-/tmp}/clara-device.XXXXXX")
trap 'rm -rf "$RUN"' EXIT
note() { echo "$*" >>"$RUN/notes.txt"; echo "device.sh: $*" >&2; }
left() { echo $((BUDGET - (SECONDS - START))); }
# fits NEED WHAT: true when NEED seconds are left of the budget (and of the share), else notes the skip
fits() {
    [ "$(limit)" -ge "$1" ] && return 0
    note "skipped: $2 (${1} s needed, $(limit) s left of the ${BUDGET} s budget or this type's share)"
    return 1
}
# limit: seconds a step may take: what is left of the budget, or of the current share (until
# SHARE_END, in $SECONDS) if that is less
SHARE_END=''
limit() {
    local l=$(($(left)))
    [ -z "$SHARE_END" ] || [ $((SHARE_END - SECONDS)) -ge "$l" ] || l=$((SHARE_END - SECONDS))
    echo "$l"
}
# bounded LOG CMD...: runs CMD with $(limit) as its limit; 124 when stopped
bounded() {
    local log=$1
    shift
    timeout --kill-after=5 "$(limit)" "$@" >"$log" 2>&1
}

# ---- the machine
CORES=$(lscpu -p=core,socket 2>/dev/null | grep -v '^#' | sort -u | wc -l)
[ "$CORES" -gt 0 ] 2>/dev/null || CORES=$(nproc)
CPU_NAME=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
{
    echo "cpu: ${CPU_NAME:-?} ($CORES physical cores, $(nproc) threads)"
    if command -v vulkaninfo >/dev/null; then
        vulkaninfo --summary 2>/dev/null | grep -E '^GPU[0-9]+:|deviceName|deviceType|driverName|apiVersion' |
            sed 's/^[[:space:]]*/vulkan: /'
    else
        echo "vulkan: vulkaninfo not found (package vulkan-tools)"
    fi
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/nvidia-smi: /'
    fi
} >"$RUN/machine.txt"
cat "$RUN/machine.txt" >&2

# ---- the build
echo "device.sh: make -j$(nproc) all (log: $LOGS/build.log)" >&2
MAKE=(make -j"$(nproc)" BUILD="$BUILD" ${SANITIZER:+SANITIZER=$SANITIZER})
BUILT="ok"
if ! "${MAKE[@]}" all >"$LOGS/build.log" 2>&1; then
    # `all` also makes the demo model, which needs python3 with numpy; the figures need only clara
    "${MAKE[@]}" "$BUILD/clara" >>"$LOGS/build.log" 2>&1 || die "the build failed (see $LOGS/build.log)" 3
    BUILT="make all FAILED (see device-logs/build.log: $(grep -m1 -iE 'error|No module' "$LOGS/build.log" | cut -c1-160)); $BUILD/clara built alone"
fi
[ "$(cat "$BUILD/gen/vulkan.stamp" 2>/dev/null)" = on ] ||
    die "the Vulkan backend was not built ($BUILD/gen/vulkan.stamp is not 'on': libvulkan-dev and glslc are needed, see $LOGS/build.log)" 3
note "build: $BUILT (Vulkan backend on; $BUILD, $(git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
CLARA=$BUILD/clara

# ---- the fidelity suite on the device
if [ "$FIDELITY" = 0 ]; then
    note "fidelity: not run (--skip-fidelity)"
elif fits 30 "the fidelity suite"; then
    SHARE_END=$((SECONDS + BUDGET * 3 / 10))
    bounded "$LOGS/fidelity.log" env BUILD="$BUILD" CLARA_VK_CASES="$CASES" \
        "$PYTHON" tests/e2e/test_vulkan_engine.py
    rc=$?
    SHARE_END=''
    TOTAL=$(grep -oE '[0-9]+ passed, [0-9]+ failed' "$LOGS/fidelity.log" | tail -1)
    TOTAL=${TOTAL:-no total line}${CASES:+; only the cases $CASES}
    if [ "$rc" = 0 ]; then
        note "fidelity: passed ($TOTAL; tests/e2e/test_vulkan_engine.py, --backend vulkan: the device named in the ours lines below)"
    elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        note "fidelity: stopped at its share of the budget, $((BUDGET * 3 / 10)) s ($TOTAL; see device-logs/fidelity.log)"
    else
        note "fidelity: FAILED (exit $rc, $TOTAL; see device-logs/fidelity.log; its last line: $(tail -1 "$LOGS/fidelity.log" | cut -c1-200))"
    fi
fi

# ---- per type: the models, ours, llama.cpp on the GPU
if [ "$SHAPE" = tiny ]; then
    BENCH_ARGS=(--batches 4 --reps 1 --doc-tokens 8 --gen-tokens 4 --no-roofline)
    PEER_ARGS=(--reps 1 --tg 4 --tg-prompt 8)
else
    BENCH_ARGS=(--batches 4,16 --reps 2)
    PEER_ARGS=(--reps 2)
fi
if [ -n "$PEER_TAR" ] && [ "$PEER" = 1 ]; then
    rm -rf "$BUILD/peer-tar" && mkdir -p "$BUILD/peer-tar" &&
        tar -xJf "$PEER_TAR" -C "$BUILD/peer-tar" 2>"$LOGS/peer-tar.log" ||
        die "--peer-tar '$PEER_TAR': could not unpack it (see $LOGS/peer-tar.log)" 3
    FOUND=$(find "$BUILD/peer-tar" -maxdepth 4 -type d -path '*/node_modules/node-llama-cpp' | head -1)
    [ -n "$FOUND" ] || die "--peer-tar '$PEER_TAR' holds no node_modules/node-llama-cpp" 3
    PEER_DIR=$(dirname "$(dirname "$FOUND")")
    note "llama.cpp: node-llama-cpp from $(basename "$PEER_TAR"), unpacked into $PEER_DIR"
fi
GPUS=(vulkan)
command -v nvidia-smi >/dev/null && GPUS+=(cuda)

peer_run() { # TYPE GPU BASE
    local t=$1 g=$2 base=$3 log=$LOGS/peer-$1-$2.log
    if [ "$PEER" = 0 ]; then echo "not run (--skip-peer)" >"$RUN/$t/peer-$g.note"; return; fi
    if ! command -v node >/dev/null; then
        echo "not run (node not found: node >= 20 runs node-llama-cpp)" >"$RUN/$t/peer-$g.note"
        return
    fi
    fits 20 "llama.cpp on $g for $t" || { echo "skipped (time budget)" >"$RUN/$t/peer-$g.note"; return; }
    echo "device.sh: $t: bench/peer.sh --gpu $g (log: $log)" >&2
    timeout --kill-after=5 "$(limit)" env BUILD="$BUILD" PEER_DIR="$PEER_DIR" bash bench/peer.sh --base "$base" \
        --gpu "$g" --threads "$CORES" --json "${PEER_ARGS[@]}" >"$RUN/$t/peer-$g.json" 2>"$log"
    local rc=$?
    case $rc in
        0) ;;
        5) echo "not run (node-llama-cpp GPU prebuilt not installed: run bench/peer.sh --gpu $g once on a machine with network, then carry PEER_DIR)" >"$RUN/$t/peer-$g.note" ;;
        124|137) echo "stopped at the time budget" >"$RUN/$t/peer-$g.note" ;;
        *) echo "FAILED (exit $rc): $(grep -v '^peer.sh: llama.cpp' "$log" | tail -2 | tr '\n' ' ' | cut -c1-400)" >"$RUN/$t/peer-$g.note" ;;
    esac
}

no_files() { # TYPE WHY: ours and llama.cpp are both n/a for this type
    echo "$2" >"$RUN/$1/ours.note"
    for g in "${GPUS[@]}"; do echo "not run (no model files)" >"$RUN/$1/peer-$g.note"; done
}
mkdir -p "$BUILD/device-models" || die "cannot create $BUILD/device-models" 3
N_LEFT=${#TLIST[@]}
for t in "${TLIST[@]}"; do
    mkdir -p "$RUN/$t"
    # each type gets an equal share of what is left (a slow one cannot starve the types after it),
    # at least 60 s; what a type leaves unused goes to the ones after it
    SHARE=$(($(left) / N_LEFT))
    [ "$SHARE" -ge 60 ] || SHARE=60
    SHARE_END=$((SECONDS + SHARE))
    N_LEFT=$((N_LEFT - 1))
    DIR=$BUILD/device-models/$SHAPE-$t
    if [ ! -s "$DIR/base.gguf" ] || [ ! -s "$DIR/clara.gguf" ]; then
        fits 30 "$t (generating the $SHAPE files)" || { no_files "$t" "skipped (time budget)"; continue; }
        echo "device.sh: $t: generating $SHAPE files into $DIR" >&2
        rm -rf "$DIR.tmp"
        if bounded "$LOGS/generate-$t.log" "$CLARA" bench --generate "$SHAPE" --type "$t" --out "$DIR.tmp" --quiet; then
            rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
        else
            rm -rf "$DIR.tmp"
            no_files "$t" "generation failed or stopped at the budget: $(tail -1 "$LOGS/generate-$t.log" | cut -c1-300)"
            continue
        fi
    fi
    stat -c '%n %s' "$DIR/base.gguf" "$DIR/clara.gguf" >"$RUN/$t/files.txt"
    # ours may take half of what is left of the share when llama.cpp is to run after it
    TYPE_END=$SHARE_END
    if [ "$PEER" = 1 ] && command -v node >/dev/null; then SHARE_END=$((SECONDS + (TYPE_END - SECONDS) / 2)); fi
    if fits 20 "clara bench on $t"; then
        echo "device.sh: $t: clara bench --backend vulkan (log: $LOGS/ours-$t.log)" >&2
        timeout --kill-after=5 "$(limit)" "$CLARA" bench --base "$DIR/base.gguf" --clara "$DIR/clara.gguf" \
            --backend vulkan --threads "$CORES" "${BENCH_ARGS[@]}" --json >"$RUN/$t/ours.json" 2>"$LOGS/ours-$t.log"
        rc=$?
        [ "$rc" = 0 ] || echo "clara bench $({ [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && echo 'stopped at the time budget' || echo "FAILED (exit $rc)"): $(tail -1 "$LOGS/ours-$t.log" | cut -c1-300)" >"$RUN/$t/ours.note"
    else
        echo "skipped (time budget)" >"$RUN/$t/ours.note"
    fi
    SHARE_END=$TYPE_END
    for g in "${GPUS[@]}"; do peer_run "$t" "$g" "$DIR/base.gguf"; done
done

note "time: $((SECONDS - START)) s of the ${BUDGET} s budget"
"$PYTHON" bench/device_report.py --dir "$RUN" --types "$TYPES" --shape "$SHAPE" --threads "$CORES" \
    --gpus "$(IFS=,; echo "${GPUS[*]}")" --out "$OUTFILE" || die "writing the figures file failed" 3
echo "device.sh: figures in $OUTFILE" >&2
