#!/usr/bin/env bash
# Sets everything up (./.venv, the op library via pip incl. the CUDA kernels when nvcc exists) and runs the test
# suite; then builds the same op library with Bazel (offline; installs Debian's bazel-bootstrap if missing) and
# runs the op tests against that build too. Extra arguments go to the main pytest run.
#   AFGAN_TF_SKIP_BAZEL=1 bash scripts/test.sh     # skip the Bazel part
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# The op library was just built: its tests must run, not skip.
export AFGAN_TF_REQUIRE_OPS="${AFGAN_TF_REQUIRE_OPS:-1}"
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "no tests collected"; exit 1; fi
if [ "$rc" != 0 ]; then exit "$rc"; fi
if [ "${AFGAN_TF_SKIP_BAZEL:-0}" != 1 ]; then
  echo "== Bazel build of the op library, and the op tests against it"
  bash scripts/build_bazel.sh
  AFGAN_TF_OP_LIBRARY="$PWD/bazel-bin/custom_ops/_afgan_tf_ops.so" .venv/bin/python -m pytest -q tests/test_custom_ops.py \
    tests/test_flrelu_tile_emu.py tests/test_bias_act_cpu_kernel.py
fi
