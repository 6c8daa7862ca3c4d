import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long tests (full-size networks, long training); opt in with -m slow")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped automatically where none is present")


def pytest_collection_modifyitems(config, items):
    import pytest
    try:
        import tensorflow as tf
        has_gpu = bool(tf.config.list_physical_devices("GPU"))
    except Exception:  # pragma: no cover
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="no GPU on this machine")
        for item in items:
            if item.get_closest_marker("gpu") is not None:  # not item.keywords: a checkout dir named "gpu" matched
                item.add_marker(skip)


import pytest  # noqa: E402


@pytest.fixture
def reference_ops_unless_custom(request, monkeypatch):
    """Forces the pure-TF reference ops (impl="auto" would pick the compiled op when it is built), except in
    test cases parametrized with impl="custom", which check the compiled op against the same data."""
    from afgan_tf.ops import _common
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    if params.get("impl") != "custom":
        monkeypatch.setenv(_common.FORCE_REF_ENV, "1")
