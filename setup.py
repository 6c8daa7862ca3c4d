"""afgan-tf: StyleGAN3 (Alias-Free GAN) for TensorFlow 2 / Keras 3.

`pip install .` installs the library and compiles the op library (custom_ops/ -> afgan_tf/_afgan_tf_ops*.so)
with the flags of the installed TensorFlow (`tf.sysconfig`), adding the CUDA kernels when `nvcc` is found.
The compiled ops are optional at run time: when the compiler (or TensorFlow at build time) is missing, the
build step warns and the pure-Python package is installed; every op then runs its pure-TF path.

Environment knobs: AFGAN_TF_BUILD_OPS=0 skips the op library; AFGAN_TF_CUDA=0 skips the CUDA kernels
(=1 makes a CUDA failure fatal); NVCC sets the nvcc path;
AFGAN_TF_CUDA_ARCHS the GPU architectures (default: SASS for 70,75,80,86,89,90 with a
CUDA 12 nvcc, 75,80,86,89,90 with CUDA 13, PTX for the newest); the CUDA version and architectures are recorded in
the library (afgan_tf.ops._selfcheck.cuda_build_info). An nvcc of TensorFlow's CUDA major version is preferred.

Portable CPU build (issue 16): no -march=native. On x86-64 the hot kernels (custom_ops/*.isa.cc) are compiled
once per level (-march=x86-64-v2 / v3 / v4) and chosen by cpuid at load (custom_ops/cpu_isa.h); the rest is
compiled for the compiler's default target. AFGAN_TF_OPS_MARCH adds a -march to the non-ISA sources
(e.g. "native" for a library that only has to run on the build host); AFGAN_TF_OPS_ISA_LEVELS (default
"2,3,4") picks the compiled levels (2 is always kept).
"""
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import platform
import sysconfig

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.develop import develop

HERE = os.path.dirname(os.path.abspath(__file__))
OPS_DIR = os.path.join(HERE, "custom_ops")


def read_requirements(name):
    with open(os.path.join(HERE, name)) as fh:
        return [l.split("#")[0].strip() for l in fh if l.split("#")[0].strip()]


def _warn(msg):
    sys.stderr.write(f"\nWARNING (afgan-tf): {msg}\n\n")


def ops_source_hash():
    """Same definition as afgan_tf.ops._custom_ops.source_hash (sha256 of custom_ops/*.h, *.cc in name order)."""
    files = sorted(glob.glob(os.path.join(OPS_DIR, "*.h")) + glob.glob(os.path.join(OPS_DIR, "*.cc")),
                   key=os.path.basename)
    h = hashlib.sha256()
    for p in files:
        with open(p, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def _nvcc_version(nvcc):
    """(major, minor) of an nvcc, or None."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except Exception:
        return None
    import re
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def find_nvcc(tf_cuda_major=None):
    """The nvcc to build the CUDA kernels with: $NVCC if set; else, among the nvcc on PATH and in
    /usr/local/cuda*/bin, one of TensorFlow's CUDA major version (so the kernels run with the drivers that run
    TF), else the first found (its CUDA version is recorded in the build info; the loader's self-check warns
    and falls back to the reference ops when the driver is too old for it)."""
    if os.environ.get("AFGAN_TF_CUDA", "") == "0":
        return None
    if os.environ.get("NVCC"):
        return os.environ["NVCC"] if os.access(os.environ["NVCC"], os.X_OK) else None
    cands = [shutil.which("nvcc")] + sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True) + ["/usr/local/bin/nvcc"]
    found = []
    for cand in cands:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK) and os.path.realpath(cand) not in found:
            found.append(os.path.realpath(cand))
    if not found:
        return None
    if tf_cuda_major is not None:
        for cand in found:
            v = _nvcc_version(cand)
            if v and v[0] == tf_cuda_major:
                return cand
        v = _nvcc_version(found[0])
        _warn(f"no nvcc of TensorFlow's CUDA major version {tf_cuda_major} found; building the CUDA kernels with "
              f"{found[0]} (CUDA {v[0]}.{v[1] if v else '?'}): they need a driver for CUDA {v[0] if v else '?'} "
              "(older drivers: the ops fall back to the reference with a warning). Set NVCC to a CUDA "
              f"{tf_cuda_major} nvcc to build for the drivers TensorFlow supports.")
    return found[0]


# Default GPU architectures per CUDA major version: SASS for each, plus PTX of the newest (JIT-compiled by the
# driver for newer GPUs). CUDA 13 dropped sm_70.
DEFAULT_CUDA_ARCHS = {12: "70,75,80,86,89,90", 13: "75,80,86,89,90"}


def cuda_gencode(archs):
    """-gencode flags: SASS for every arch in `archs` (list of ints) and PTX for the newest."""
    flags = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    flags += ["-gencode", f"arch=compute_{max(archs)},code=compute_{max(archs)}"]
    return flags


class BuildOps(build_ext):
    """Compiles the op library; never fails the install (warns and skips instead)."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = min(4, os.cpu_count() or 1)

    def run(self):
        if os.environ.get("AFGAN_TF_BUILD_OPS", "1") == "0":
            if os.environ.get("AFGAN_TF_QUIET_SKIP", "0") != "1":
                _warn("AFGAN_TF_BUILD_OPS=0: skipping the compiled op library (pure-TF ops only)")
            return
        try:
            super().run()
        except Exception as e:  # compiler missing, TF headers missing, ...
            _warn(f"building the compiled op library failed ({type(e).__name__}: {e}); installing the pure-Python "
                  "package, the ops will use their pure-TF reference path")

    def _up_to_date(self, ext):
        target = self.get_ext_fullpath(ext.name)
        if self.force or not os.path.exists(target):
            return False
        t = os.path.getmtime(target)
        return all(os.path.getmtime(os.path.join(HERE, p)) <= t for p in list(ext.sources) + list(ext.depends))

    def build_extension(self, ext):
        if self._up_to_date(ext):
            print(f"afgan-tf: op library {self.get_ext_fullpath(ext.name)} is up to date")
            return
        try:
            import tensorflow as tf
        except Exception as e:
            raise RuntimeError(f"TensorFlow must be installed before afgan-tf to build the op library ({e}); "
                               "install with --no-build-isolation")
        cflags = list(tf.sysconfig.get_compile_flags())
        lflags = list(tf.sysconfig.get_link_flags())
        march = os.environ.get("AFGAN_TF_OPS_MARCH", "")
        extra = ["-O3", "-g0", "-fPIC", "-Wno-deprecated-declarations", "-Wno-interference-size", "-Wno-unused-function",
                 f'-DAFGAN_OPS_SOURCE_HASH="{ops_source_hash()}"']
        ext.extra_compile_args = cflags + extra + ([f"-march={march}"] if march else [])
        ext.extra_link_args = lflags + ["-Wl,--no-undefined"]
        isa_objs, isa_macros = self._build_isa(cflags + extra)
        ext.define_macros = list(ext.define_macros or []) + isa_macros
        tf_cuda = tf.sysconfig.get_build_info().get("cuda_version") or ""
        nvcc = find_nvcc(int(tf_cuda.split(".")[0]) if tf_cuda[:1].isdigit() else None)
        if nvcc:
            try:
                objs = self._build_cuda(nvcc, cflags)
                ext.extra_objects = objs
                if objs:
                    ext.define_macros = list(ext.define_macros or []) + [("GOOGLE_CUDA", "1")]
            except Exception as e:
                if os.environ.get("AFGAN_TF_CUDA", "") == "1":
                    raise
                _warn(f"compiling the CUDA kernels failed ({e}); building the CPU kernels only")
                ext.extra_objects = []
        # Per-level objects last, v2 first (see custom_ops/cpu_isa.h: the first copy of a shared inline function wins).
        ext.extra_objects = list(ext.extra_objects or []) + isa_objs
        super().build_extension(ext)

    def _build_isa(self, flags):
        """Compiles custom_ops/*.isa.cc once per ISA level; returns (objects, macros for the other sources)."""
        srcs = sorted(glob.glob(os.path.join(OPS_DIR, "*.isa.cc")))
        x86 = platform.machine().lower() in ("x86_64", "amd64")
        if x86:
            levels = sorted({2} | {int(v) for v in os.environ.get("AFGAN_TF_OPS_ISA_LEVELS", "2,3,4").split(",")
                                   if v.strip()})
            bad = [l for l in levels if l not in (2, 3, 4)]
            if bad:
                raise ValueError(f"AFGAN_TF_OPS_ISA_LEVELS: levels must be 2, 3 or 4, got {bad}")
            builds = [(l, [f"-march=x86-64-v{l}"]) for l in levels]
            macros = [("AFGAN_ISA_X86", "1")] + [(f"AFGAN_ISA_HAVE_V{l}", "1") for l in levels]
        else:
            builds, macros = [(0, [])], []
        objs = []
        for level, march in builds:
            out_dir = os.path.join(self.build_temp, f"isa_{level}")
            objs += self.compiler.compile(srcs, output_dir=out_dir, include_dirs=[OPS_DIR],
                                          macros=[("AFGAN_ISA_LEVEL", str(level))],
                                          extra_postargs=flags + march)
        return objs, macros

    def _build_cuda(self, nvcc, cflags):
        srcs = sorted(glob.glob(os.path.join(OPS_DIR, "*.cu.cc")))
        out_dir = os.path.join(self.build_temp, "cuda")
        os.makedirs(out_dir, exist_ok=True)
        inc = [f for f in cflags if f.startswith("-I")]
        defs = [f for f in cflags if f.startswith("-D")]
        ver = _nvcc_version(nvcc) or (0, 0)
        archs = os.environ.get("AFGAN_TF_CUDA_ARCHS", DEFAULT_CUDA_ARCHS.get(ver[0], "80,90"))
        archs = sorted({int(a) for a in archs.split(",") if a.strip()})
        gencode = cuda_gencode(archs)
        # Recorded in the library (symbol afgan_cuda_build_info, read by afgan_tf.ops._selfcheck).
        info = f"cuda={ver[0]}.{ver[1]};sass={','.join(map(str, archs))};ptx={max(archs)}"
        print(f"afgan-tf: CUDA kernels with {nvcc} (CUDA {ver[0]}.{ver[1]}), SASS {archs}, PTX {max(archs)}")
        objs = []
        for src in srcs:
            obj = os.path.join(out_dir, os.path.basename(src).replace(".cu.cc", ".cu.o"))
            cmd = [nvcc, "-c", "-std=c++17", "-x", "cu", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr",
                   "-DNDEBUG", "-DGOOGLE_CUDA=1", "-O3", "-w", f'-DAFGAN_CUDA_BUILD_INFO="{info}"'] + defs + inc + \
                  ["-I", OPS_DIR] + gencode + [src, "-o", obj]
            print(" ".join(cmd))
            subprocess.run(cmd, check=True)
            objs.append(obj)
        return objs


class DevelopWithOps(develop):
    """`pip install -e .` (legacy path, no pyproject.toml): build the op library in place with THIS interpreter
    (which has TensorFlow), then let setuptools' develop run its isolated editable install without it."""

    def run(self):
        if os.environ.get("AFGAN_TF_BUILD_OPS", "1") != "0":
            cmd = self.distribution.get_command_obj("build_ext")
            cmd.inplace = 1
            self.run_command("build_ext")
        os.environ["AFGAN_TF_BUILD_OPS"] = "0"  # the nested isolated build has no TensorFlow
        os.environ["AFGAN_TF_QUIET_SKIP"] = "1"
        super().run()


def op_extension():
    srcs = sorted(p for p in glob.glob(os.path.join(OPS_DIR, "*.cc")) if not p.endswith((".cu.cc", ".isa.cc")))
    return Extension("afgan_tf._afgan_tf_ops", sources=[os.path.relpath(p, HERE) for p in srcs],
                     include_dirs=[os.path.relpath(OPS_DIR, HERE)], language="c++",
                     depends=[os.path.relpath(p, HERE) for p in
                              glob.glob(os.path.join(OPS_DIR, "*.h")) + glob.glob(os.path.join(OPS_DIR, "*.cu.cc")) +
                              glob.glob(os.path.join(OPS_DIR, "*.isa.cc"))])


setup(
    name="afgan-tf",
    version="0.1.0",
    description="StyleGAN3 (Alias-Free GAN) natively in TensorFlow 2 / Keras 3",
    packages=find_packages(include=["afgan_tf", "afgan_tf.*"]),
    python_requires=">=3.10",
    install_requires=read_requirements("requirements.txt"),
    extras_require={"test": read_requirements("requirements-test.txt"), "torch": ["torch==2.13.0"]},
    include_package_data=True,
    ext_modules=[op_extension()],
    cmdclass={"build_ext": BuildOps, "develop": DevelopWithOps},
)
