// filtered_lrelu CPU engine: the types shared by the op (filtered_lrelu_op.cc) and the per-ISA kernel
// objects (filtered_lrelu_cpu.isa.cc, compiled once per x86-64 level), and the runtime dispatch.
//
// This header and the ISA objects do not include TensorFlow: the op hands the engine a Geometry and a
// ParallelFor callback (TF's intra-op pool), so no TF inline function or static initialiser is compiled with
// -march=x86-64-v3/v4 (see cpu_isa.h for why that matters).
#ifndef AFGAN_TF_CUSTOM_OPS_FILTERED_LRELU_CPU_H_
#define AFGAN_TF_CUSTOM_OPS_FILTERED_LRELU_CPU_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "cpu_taps.h"

namespace afgan_flrelu {
using afgan::Taps;

struct FilterInfo {
  bool sep = true;
  int w = 1, h = 1;
  std::vector<float> gx, gy, g2;  // correlation-form taps, gains folded in
};

enum class Mid { kForward, kMask };

struct Geometry {
  int N = 0, C = 0;
  int srcH = 0, srcW = 0;  // stage A source
  int hiH = 0, hiW = 0;    // high-rate (code) domain
  int outH = 0, outW = 0;  // stage B output
  Taps Ax, Ay, Bx, By;
  const FilterInfo* fa = nullptr;
  const FilterInfo* fb = nullptr;
  Mid mid = Mid::kForward;
  float gain = 1.f, slope = 0.2f, clamp = -1.f;
};


// fn(begin, end) over [0, units) on the caller's thread pool; cost = estimated cycles per unit.
using ParallelFor = std::function<void(int64_t units, int64_t cost, const std::function<void(int64_t, int64_t)>& fn)>;

// Runs the engine: stage A (rate increase) + nonlinearity/code (or code mask) + stage B (rate decrease) for
// every (sample, channel block, row band); see filtered_lrelu_op.cc for the design.
using RunEngineFn = void (*)(const Geometry& g, int down_y, int threads, const ParallelFor& pf, const float* src,
                             const float* bias, float* out, uint8_t* code_w, const uint8_t* code_r);

// One definition per compiled level, in namespace afgan_flrelu::isa_v2 / isa_v3 / isa_v4 (x86-64) or
// isa_generic (other architectures).
#define AFGAN_FLRELU_DECLARE_ENGINE(NS)                                                                  \
  namespace NS {                                                                                         \
  void RunEngine(const Geometry& g, int down_y, int threads, const ParallelFor& pf, const float* src,      \
                 const float* bias, float* out, uint8_t* code_w, const uint8_t* code_r);                 \
  }
AFGAN_FLRELU_DECLARE_ENGINE(isa_v2)
AFGAN_FLRELU_DECLARE_ENGINE(isa_v3)
AFGAN_FLRELU_DECLARE_ENGINE(isa_v4)
AFGAN_FLRELU_DECLARE_ENGINE(isa_generic)
#undef AFGAN_FLRELU_DECLARE_ENGINE

}  // namespace afgan_flrelu

#endif  // AFGAN_TF_CUSTOM_OPS_FILTERED_LRELU_CPU_H_
