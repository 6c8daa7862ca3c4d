"""Repository rule that finds the pip-installed TensorFlow (offline) and exposes it to Bazel.

Runs the project's Python (AFGAN_TF_PYTHON, else <workspace>/.venv/bin/python, else python3) to read
tf.sysconfig, symlinks the include directory and libtensorflow_framework.so.2 into the repository and writes:
  @local_tf//:tf_headers    cc_library with TF's headers
  @local_tf//:tf_framework  cc_library wrapping libtensorflow_framework.so.2
  @local_tf//:defs.bzl      TF_COPTS (the -D flags of tf.sysconfig.get_compile_flags(): ABI, Eigen alignment)
"""

_SCRIPT = """
import json, tensorflow as tf
print(json.dumps({"include": tf.sysconfig.get_include(), "lib": tf.sysconfig.get_lib(),
                  "cflags": tf.sysconfig.get_compile_flags(), "version": tf.__version__}))
"""

def _find_python(rctx):
    env = rctx.os.environ.get("AFGAN_TF_PYTHON")
    if env:
        return env
    venv = rctx.path(Label("//:WORKSPACE")).dirname.get_child(".venv").get_child("bin").get_child("python")
    if venv.exists:
        return str(venv)
    py = rctx.which("python3")
    if py == None:
        fail("tf_configure: no Python found; set AFGAN_TF_PYTHON to the Python that has TensorFlow installed")
    return str(py)

def _tf_configure_impl(rctx):
    python = _find_python(rctx)
    res = rctx.execute([python, "-c", _SCRIPT], environment = {"TF_CPP_MIN_LOG_LEVEL": "3"}, quiet = True)
    if res.return_code != 0:
        fail("tf_configure: `%s` could not import tensorflow:\n%s" % (python, res.stderr))
    info = json.decode(res.stdout.strip().splitlines()[-1])
    rctx.symlink(info["include"], "include")
    rctx.symlink(info["lib"] + "/libtensorflow_framework.so.2", "libtensorflow_framework.so.2")
    defines = [f for f in info["cflags"] if f.startswith("-D")]
    rctx.file("defs.bzl", "TF_COPTS = %s\nTF_VERSION = %r\nTF_INCLUDE = %r\n" % (
        repr(defines), info["version"], info["include"]))
    rctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "tf_headers",
    hdrs = glob(["include/**/*.h", "include/**/*.hpp", "include/**/*.inc", "include/**/*.ipp",
                 "include/Eigen/**", "include/unsupported/Eigen/**", "include/third_party/eigen3/**"],
                exclude = ["include/external/**/*.cc"]),
    includes = ["include"],
)

cc_library(
    name = "tf_framework",
    srcs = ["libtensorflow_framework.so.2"],
)

exports_files(["defs.bzl"])
""")

tf_configure = repository_rule(
    implementation = _tf_configure_impl,
    environ = ["AFGAN_TF_PYTHON"],
    local = True,
)
