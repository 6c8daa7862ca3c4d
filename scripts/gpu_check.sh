#!/usr/bin/env bash
# One-command check of the afgan-tf CUDA kernels on a GPU machine WITHOUT TensorFlow (docs/gpu_check.md).
#
#   scripts/gpu_check.sh [--cpu] CASES_DIR OUT_DIR
#
# CASES_DIR: written on any machine with TensorFlow by `python tools/make_gpu_cases.py --out CASES_DIR`.
# Needs: nvcc, nvidia-smi, python3 with numpy; optional: compute-sanitizer, torch (timing for scale).
# Stages (each goes on after a failure of the one before; the whole script keeps to $AFGAN_GPU_CHECK_BUDGET_S
# seconds, default 330, so it ends within 6 minutes on one H100):
#   1 build     detect the architecture (nvidia-smi --query-gpu=compute_cap), nvcc the harness for it
#   2 run       every case: forward / backward / second order, tiled and generic filtered_lrelu, timings
#   3 sanitize  compute-sanitizer memcheck and racecheck on a few small cases
#   4 torch     PyTorch's reference composition of each timing case on the GPU (for scale)
#   5 compare   numpy-only comparison with the expected outputs -> OUT_DIR/report.json, OUT_DIR/report.txt
# OUT_DIR receives at most 7 files (report.json, report.txt, build.log, harness.log, sanitizer.log,
# sanitizer.json, torch.json); the per-case outputs stay in a scratch directory ($AFGAN_GPU_CHECK_WORK or
# a mktemp dir). --cpu (or AFGAN_GPU_CHECK_CPU=1): build the harness's host version with g++ (the same kernels'
# item / phase functions in loops), run the correctness cases (and timing cases with tiny generated inputs),
# skip the sanitizer and torch: the harness and the comparison proven on a machine without a GPU
# (tests/test_gpu_harness.py). Timing cases the run stage could not reach in its time are reported as skipped.
# Exit status: 0 when every stage that ran passed, 1 otherwise, 2 on bad arguments.
set -u

CPU="${AFGAN_GPU_CHECK_CPU:-0}"
if [ "${1:-}" = "--cpu" ]; then CPU=1; shift; fi
if [ $# -ne 2 ]; then
  echo "usage: scripts/gpu_check.sh [--cpu] CASES_DIR OUT_DIR" >&2
  exit 2
fi
CASES="$1"
OUT="$2"
if [ ! -d "$CASES" ]; then
  echo "gpu_check: cases directory $CASES does not exist (make it with: python tools/make_gpu_cases.py --out $CASES)" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HDIR="$ROOT/custom_ops/harness"
PY="${PYTHON:-python3}"
BUDGET="${AFGAN_GPU_CHECK_BUDGET_S:-330}"
START=$(date +%s)
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
CASES="$(cd "$CASES" && pwd)"
WORK="${AFGAN_GPU_CHECK_WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
RESULTS="$WORK/results"
rm -rf "$RESULTS"
mkdir -p "$RESULTS"
STATUS=0
EXTRA=()

left() { echo $((BUDGET - ($(date +%s) - START))); }
# Seconds for a stage: min(cap, time left - reserve for the later stages), at least 5.
stage_time() {
  local cap=$1 reserve=$2 l
  l=$(($(left) - reserve))
  [ "$l" -gt "$cap" ] && l=$cap
  [ "$l" -lt 5 ] && l=5
  echo "$l"
}
stage_json() {  # file stage status summary
  printf '{"stage": "%s", "status": "%s", "summary": "%s"}\n' "$2" "$3" "$(echo "$4" | tr '"\n' "' ")" > "$1"
}
log() { echo "gpu_check [$(($(date +%s) - START)) s]: $*"; }

# ------------------------------------------------------------------------------------------------ 1 build
HARNESS="$WORK/harness"
rm -f "$HARNESS"
if [ "$CPU" = "1" ]; then
  ARCH="host"
  log "build: host version (g++)"
  timeout "$(stage_time 240 60)" "${CXX:-g++}" -O2 -std=c++17 -Wall -Wno-sign-compare -DAFGAN_HOST_KERNELS -I"$ROOT/custom_ops" -x c++ \
    "$ROOT/custom_ops/gpu_launch.cu.cc" "$HDIR/harness.cc" -o "$HARNESS" > "$OUT/build.log" 2>&1
  rc=$?
else
  NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
  CAP="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')"
  if [ -z "$CAP" ]; then
    CAP="${AFGAN_GPU_CHECK_ARCH:-90}"
    log "build: nvidia-smi gave no compute capability; assuming sm_$CAP"
  fi
  ARCH="sm_$CAP"
  log "build: $NVCC for $ARCH ($("$NVCC" --version 2>/dev/null | tail -n1))"
  timeout "$(stage_time 240 150)" "$NVCC" -O3 -std=c++17 --expt-relaxed-constexpr -lineinfo -DNDEBUG \
    -gencode "arch=compute_$CAP,code=sm_$CAP" -I"$ROOT/custom_ops" -x cu \
    "$ROOT/custom_ops/gpu_launch.cu.cc" "$HDIR/harness.cc" -o "$HARNESS" > "$OUT/build.log" 2>&1
  rc=$?
fi
if [ $rc -ne 0 ] || [ ! -x "$HARNESS" ]; then
  log "build FAILED (rc $rc), see build.log"
  stage_json "$WORK/build.json" build fail "harness build for $ARCH failed (rc $rc), see build.log"
  STATUS=1
else
  stage_json "$WORK/build.json" build ok "harness built for $ARCH"
fi
EXTRA+=(--extra "$WORK/build.json")

# ------------------------------------------------------------------------------------------------ 2 run
if [ -x "$HARNESS" ]; then
  : > "$OUT/harness.log"
  if [ "$CPU" = "1" ]; then  # the host build: correctness cases and tiny timing cases only
    RUNS=("all --max-gen-elems 100000")
  else                       # correctness first; the timing cases get the time left
    RUNS=("skip" "only")
  fi
  for sel in "${RUNS[@]}"; do
    if [ "$sel" = "skip" ]; then t=$(stage_time 120 200); else t=$(stage_time 200 100); fi
    log "run: --timing $sel ($t s)"
    # shellcheck disable=SC2086
    timeout "$t" "$HARNESS" "$CASES" "$RESULTS" --timing $sel >> "$OUT/harness.log" 2>&1
    rc=$?
    [ $rc -eq 124 ] && log "run: --timing $sel stopped at its time limit"
    [ $rc -ne 0 ] && STATUS=1
    tail -n1 "$OUT/harness.log"
  done
fi

# ------------------------------------------------------------------------------------------------ 3 sanitize
if [ "$CPU" != "1" ] && [ -x "$HARNESS" ]; then
  SAN="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
  if [ -x "$SAN" ]; then
    log "sanitize: memcheck + racecheck"
    : > "$OUT/sanitizer.log"
    nerr=0
    nrun=0
    summary=""
    for tool in memcheck racecheck; do
      for c in odd_c13_clamp odd_2d_fd_c17_fp16 sg3t256_L0_36_512_32 odd_huge_filter_generic d32_skipdown odd_act_swish; do
        [ -f "$CASES/$c/case.json" ] || continue
        t=$(stage_time 40 70)
        echo "=== $tool $c" >> "$OUT/sanitizer.log"
        timeout "$t" "$SAN" --tool "$tool" --error-exitcode 9 "$HARNESS" "$CASES" "$WORK/san_$tool" --case "$c" \
          --repeat 0 >> "$OUT/sanitizer.log" 2>&1
        rc=$?
        nrun=$((nrun + 1))
        if [ $rc -ne 0 ]; then
          nerr=$((nerr + 1))
          summary="$summary $tool/$c:rc$rc"
        fi
      done
    done
    if [ $nerr -eq 0 ]; then
      stage_json "$OUT/sanitizer.json" sanitizer ok "$nrun runs (memcheck, racecheck), no errors"
    else
      stage_json "$OUT/sanitizer.json" sanitizer fail "$nerr of $nrun runs reported errors or failed:$summary (see sanitizer.log)"
      STATUS=1
    fi
  else
    stage_json "$OUT/sanitizer.json" sanitizer skipped "compute-sanitizer not found"
  fi
  EXTRA+=(--extra "$OUT/sanitizer.json")
fi

# ------------------------------------------------------------------------------------------------ 4 torch
if [ "$CPU" != "1" ]; then
  if "$PY" -c "import torch" > /dev/null 2>&1; then
    t=$(stage_time 90 20)
    log "torch: reference composition timings ($t s)"
    timeout "$((t + 10))" "$PY" "$HDIR/torch_ref.py" "$CASES" "$OUT/torch.json" --device cuda --budget-s "$t" \
      --only-timing || true
  else
    stage_json "$OUT/torch.json" torch skipped "torch is not importable"
  fi
  [ -f "$OUT/torch.json" ] && EXTRA+=(--extra "$OUT/torch.json")
fi

# ------------------------------------------------------------------------------------------------ 5 compare
log "compare"
"$PY" "$HDIR/compare.py" "$CASES" "$RESULTS" "$OUT" "${EXTRA[@]}" \
  --title "afgan-tf GPU kernel check ($ARCH, $(date -u +%Y-%m-%dT%H:%MZ))" || STATUS=1
log "done (status $STATUS); report: $OUT/report.txt"
[ -z "${AFGAN_GPU_CHECK_WORK:-}" ] && rm -rf "$WORK"
exit $STATUS
