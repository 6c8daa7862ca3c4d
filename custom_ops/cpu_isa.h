// Runtime ISA dispatch of the CPU kernels (issue 16).
//
// The hot kernels (the filtered_lrelu engine) are compiled once per x86-64 micro-architecture level into the
// same library: x86-64-v2 (SSE4.2, the baseline), x86-64-v3 (AVX2 + FMA + BMI2) and x86-64-v4 (AVX-512
// F/BW/CD/DQ/VL), each in its own namespace (afgan_flrelu::isa_v2/v3/v4). At load, the highest level the CPU
// (and OS) supports is chosen from cpuid; AFGAN_TF_OPS_ISA=v2|v3|v4 forces a level (a level the CPU cannot run
// is refused: the choice falls back to the best supported level and afgan_tf_ops_isa_error() says why; the
// Python loader turns that into its one-line error). On other architectures one generic build is compiled.
//
// Build rule that keeps the library runnable on a v2 CPU: the per-level objects must not contain code that
// runs before dispatch or is shared with other objects. They include no TensorFlow header (no static
// initialisers), keep their own functions in their namespace, and are linked AFTER the baseline objects with
// the v2 object first, so that the linker keeps the baseline copy of any inline standard-library function
// they share (COMDAT: the first definition wins).
#ifndef AFGAN_TF_CUSTOM_OPS_CPU_ISA_H_
#define AFGAN_TF_CUSTOM_OPS_CPU_ISA_H_

#include "filtered_lrelu_cpu.h"

namespace afgan_isa {

// Level chosen at load: 2, 3, 4 (x86-64) or 0 (generic build).
int ChosenLevel();

// The filtered_lrelu engine of the chosen level.
afgan_flrelu::RunEngineFn FlreluEngine();

}  // namespace afgan_isa

// Introspection for the Python loader (ctypes; afgan_tf.ops.build_info()). Static strings.
extern "C" {
const char* afgan_tf_ops_isa_compiled();   // e.g. "v2,v3,v4" or "generic"
const char* afgan_tf_ops_isa_supported();  // levels of the compiled ones this CPU runs, e.g. "v2,v3"
const char* afgan_tf_ops_isa_chosen();     // e.g. "v3"
const char* afgan_tf_ops_isa_error();      // "" or why AFGAN_TF_OPS_ISA was not honoured
}

#endif  // AFGAN_TF_CUSTOM_OPS_CPU_ISA_H_
