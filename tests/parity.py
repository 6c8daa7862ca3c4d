"""The one shared helper for "compare against a parity fixture" (tests/fixtures/, outputs of the original
implementation; tests/fixtures/README.md says what each file holds, how it was made and the tolerances).

``load(name)`` opens ``tests/fixtures/<name>`` and **fails** the test when the file is missing (a missing fixture is a
broken checkout, never a reason to skip); ``nchw_to_nhwc`` converts the original's layout; ``assert_close`` compares
and records the max error. Set ``AFGAN_TF_PARITY_REPORT=<file>`` to append one JSON line per comparison.
"""
import json
import os

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES_DIR = os.path.join(_HERE, "fixtures")
BASELINES_DIR = os.path.join(_HERE, "..", "benchmarks", "baselines")


def parity_path(name):
    return os.path.join(FIXTURES_DIR, name)


def fixture_path(name, folder=FIXTURES_DIR):
    """Path of a fixture file; fails the calling test when it is missing."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        pytest.fail(f"fixture {os.path.normpath(path)} is missing (it is part of the repository: restore it with "
                    f"git checkout)")
    return path


def load(name):
    return np.load(fixture_path(name), allow_pickle=False)


def meta(npz, key):
    """JSON blob stored as a 0-d unicode array."""
    return json.loads(str(npz[key]))


def nchw_to_nhwc(a):
    a = np.asarray(a)
    if a.ndim == 4:
        return np.transpose(a, (0, 2, 3, 1))
    return a


def nhwc_to_nchw(a):
    a = np.asarray(a)
    if a.ndim == 4:
        return np.transpose(a, (0, 3, 1, 2))
    return a


def assert_close(actual, expected, atol, rtol=0.0, name=""):
    """Asserts |actual - expected| <= atol + rtol * |expected| elementwise; returns the max abs error."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != expected {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{name}: non-finite values in the result"
    err = np.abs(actual - expected)
    max_abs = float(err.max()) if err.size else 0.0
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    report = os.environ.get("AFGAN_TF_PARITY_REPORT")
    if report:
        with open(report, "a") as fh:
            fh.write(json.dumps(dict(name=name, max_abs=max_abs, max_ref=scale, atol=float(atol),
                                     rtol=float(rtol))) + "\n")
    bad = err > atol + rtol * np.abs(expected)
    if np.any(bad):
        idx = np.unravel_index(np.argmax(err - (atol + rtol * np.abs(expected))), err.shape)
        raise AssertionError(f"{name}: max abs error {max_abs:.3g} (ref max {scale:.3g}) exceeds atol={atol:g} "
                             f"rtol={rtol:g}; {int(bad.sum())} of {bad.size} elements; worst at {idx}: "
                             f"{actual[idx]!r} vs {expected[idx]!r}")
    return max_abs


def case_names(name):
    """The case list (``meta/cases``) of an ops_*.npz fixture, for parametrize. A missing file gives one
    placeholder case, so that the test runs and :func:`load` fails it (instead of collecting nothing)."""
    try:
        z = np.load(parity_path(name), allow_pickle=False)
    except (FileNotFoundError, OSError):
        return [f"<missing fixture {name}>"]
    return json.loads(str(z["meta/cases"]))


def need_op_library(op_name="filtered_lrelu"):
    """Skips a test of the compiled op library when it is missing or AFGAN_TF_FORCE_REF is set; fails instead of
    skipping when AFGAN_TF_REQUIRE_OPS is set (scripts/test.sh, CI: the library was just built and must work)."""
    import os
    from afgan_tf.ops import _custom_ops
    if os.environ.get("AFGAN_TF_FORCE_REF", "0") not in ("", "0"):
        pytest.skip("AFGAN_TF_FORCE_REF is set")
    if not _custom_ops.is_available(op_name):
        if os.environ.get("AFGAN_TF_REQUIRE_OPS", "0") not in ("", "0"):
            pytest.fail(f"AFGAN_TF_REQUIRE_OPS is set but the op library is not available: {_custom_ops.load_error()}")
        pytest.skip(f"compiled op library not available: {_custom_ops.load_error()}")


def skip_unless_compiled(impl, op_name):
    """Skips an impl="custom" case when the compiled op library does not provide ``op_name``."""
    if impl == "custom":
        from afgan_tf.ops import _custom_ops
        if not _custom_ops.is_available(op_name):
            pytest.skip(f"compiled {op_name} not available: {_custom_ops.load_error()}")
