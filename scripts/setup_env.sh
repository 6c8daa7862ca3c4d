#!/usr/bin/env bash
# Creates ./.venv (once) and installs afgan-tf with everything it needs. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q -r requirements.txt -r requirements-test.txt 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
# --no-build-isolation: the op library compiles against the TensorFlow installed just above.
.venv/bin/python -m pip install -q --no-build-isolation --no-deps -e . 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
