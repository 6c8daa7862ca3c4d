#!/usr/bin/env bash
# Builds the op library with Bazel (offline), installing Debian's Bazel 4.2.3 if it is missing.
#   scripts/build_bazel.sh [--cuda] [extra bazel build args]
# Output: bazel-bin/custom_ops/_afgan_tf_ops.so. Run the op tests against it with
#   AFGAN_TF_OP_LIBRARY=$PWD/bazel-bin/custom_ops/_afgan_tf_ops.so .venv/bin/python -m pytest -q tests/test_custom_ops.py
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v bazel >/dev/null 2>&1; then
  echo "bazel not found: installing bazel-bootstrap + bazel-rules-java (apt)" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq bazel-bootstrap bazel-rules-java
fi
export AFGAN_TF_PYTHON="${AFGAN_TF_PYTHON:-$PWD/.venv/bin/python}"
ARGS=()
for a in "$@"; do
  if [ "$a" = "--cuda" ]; then ARGS+=("--config=cuda"); else ARGS+=("$a"); fi
done
# Keep Bazel's cache inside the project (.bazel_cache/ is git-ignored).
bazel --output_user_root="$PWD/.bazel_cache" build "${ARGS[@]+"${ARGS[@]}"}" //custom_ops:_afgan_tf_ops.so
ls -l bazel-bin/custom_ops/_afgan_tf_ops.so
