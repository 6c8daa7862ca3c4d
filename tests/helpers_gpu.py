"""Shared helpers of the GPU-check tests (tests/test_gpu_*.py): paths, the harness builds, the case set."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = os.path.join(ROOT, "custom_ops")
HARNESS_SRCS = [os.path.join(OPS, "gpu_launch.cu.cc"), os.path.join(OPS, "harness", "harness.cc")]


def find_nvcc():
    for cand in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc"):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def run(cmd, **kw):
    """Runs a command, returns CompletedProcess (text); never raises on a non-zero status."""
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def python():
    return sys.executable
