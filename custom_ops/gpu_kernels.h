// Device code of afgan-tf without TensorFlow: the per-item functions of every CUDA kernel, their plain
// argument structs (pointers, sizes, strides, parameters) and the launch functions' declarations.
//
// Built three ways from the same source:
//   * into the op library: gpu_launch.cu.cc (nvcc) defines the kernels and launch functions, the TF
//     OpKernels of gpu_kernels.cu.cc / filtered_lrelu_gpu.cu.cc only validate, allocate and call them;
//   * into the standalone harness (custom_ops/harness/, nvcc, no TensorFlow) for the GPU check;
//   * as a host program (g++ -DAFGAN_HOST_KERNELS): every "launch" runs the same item / phase functions in
//     loops on the CPU (the tiled filtered_lrelu like the emulator op: thread loops per phase, a NaN-filled
//     host buffer as shared memory), so the harness and its comparison are proven without a GPU.
// A kernel is a grid-stride loop over work items; item i of every kernel is one AFGAN_HD function below, so
// the host build computes exactly what one GPU thread computes for that item.
//
// Storage types: float and afgan::half_t (IEEE binary16 bits; layout-compatible with __half and Eigen::half;
// the GPU converts with the CUDA intrinsics, the host build with the software rounding below -- both round
// to nearest even). All arithmetic is float32.
#ifndef AFGAN_TF_CUSTOM_OPS_GPU_KERNELS_H_
#define AFGAN_TF_CUSTOM_OPS_GPU_KERNELS_H_

#include <cstdint>
#include <cstring>

#include "afgan_common.h"
#include "filtered_lrelu_tile.h"

#if defined(AFGAN_HOST_KERNELS)
using afgan_stream_t = void*;
using afgan_error_t = int;  // 0 = success
#else
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
using afgan_stream_t = cudaStream_t;
using afgan_error_t = cudaError_t;
#endif

namespace afgan {

// ------------------------------------------------------------------------------------------------ half
inline uint16_t float_to_half_bits_host(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return static_cast<uint16_t>(sign | (absx > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (absx < 0x38800000u) {                                                // half subnormal or zero
    if (absx < 0x33000000u) return static_cast<uint16_t>(sign);           // < 2^-25: rounds to 0
    const int e = static_cast<int>(absx >> 23);                            // 102..112
    const uint32_t m = (absx & 0x7fffffu) | 0x800000u;
    const int shift = 126 - e;  // value = m * 2^(e - 150); half unit 2^-24 -> m >> (126 - e)
    uint32_t h = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = ((absx - 0x38000000u) >> 13);  // rebias 127 -> 15
  const uint32_t rem = absx & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

inline float half_bits_to_float_host(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
  if (e == 0x1f) {
    x = sign | 0x7f800000u | (m << 13);
  } else if (e == 0) {
    if (m == 0) {
      x = sign;
    } else {  // subnormal: normalise
      int k = -1;
      do { ++k; m <<= 1; } while (!(m & 0x400u));
      x = sign | (static_cast<uint32_t>(112 - k) << 23) | ((m & 0x3ffu) << 13);
    }
  } else {
    x = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

struct half_t {
  uint16_t bits;
  half_t() = default;
  AFGAN_HD explicit half_t(float f) {
#if defined(__CUDA_ARCH__)
    bits = __half_as_ushort(__float2half_rn(f));
#else
    bits = float_to_half_bits_host(f);
#endif
  }
  AFGAN_HD explicit operator float() const {
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half(bits));
#else
    return half_bits_to_float_host(bits);
#endif
  }
};
static_assert(sizeof(half_t) == 2, "half_t must be 16 bits");

// ------------------------------------------------------------------------------------------------ filters
// A filter in global memory: rank 1 (separable, the same taps along x and y) or rank 2 [h, w], read in
// correlation form (tap k = f[k] when flip, f[F - 1 - k] otherwise), times `scale`.
struct DevFilter {
  const float* f = nullptr;
  int w = 1, h = 1;
  bool sep = true;
  bool flip = false;
  float scale = 1.f;
  AFGAN_HD float at(int ky, int kx) const {
    if (sep) {
      const float a = flip ? f[kx] : f[w - 1 - kx];
      const float b = flip ? f[ky] : f[h - 1 - ky];
      return a * b * scale;
    }
    return (flip ? f[ky * w + kx] : f[(h - 1 - ky) * w + (w - 1 - kx)]) * scale;
  }
};

// f: the filter's data; rank 1 (d0 taps) or 2 ([d0, d1]) -- the same reading as the tile engine's filter_ref.
inline DevFilter make_dev_filter(const float* f, int rank, int d0, int d1, bool flip, float scale) {
  const tile::FilterRef r = tile::filter_ref(f, rank, d0, d1, flip, 1.f, 1.f);
  DevFilter d;
  d.f = r.f;
  d.sep = r.sep;
  d.h = r.h;
  d.w = r.w;
  d.flip = r.flip;
  d.scale = scale;
  return d;
}

// ------------------------------------------------------------------------------------------------ item loops
// for_each_item(item, stream): runs item(i) for i in [0, item.items()) -- a grid-stride CUDA kernel (256
// threads per block), or a host loop in the host build. Every element-wise kernel of the library and the
// harness's helpers go through it.
#if defined(AFGAN_HOST_KERNELS)
template <typename Item>
afgan_error_t for_each_item(const Item& item, afgan_stream_t) {
  const int64_t total = item.items();
  for (int64_t i = 0; i < total; ++i) item(i);
  return 0;
}
#elif defined(__CUDACC__)
template <typename Item>
__global__ void ForEachItemKernel(Item item, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
    item(i);
}
template <typename Item>
afgan_error_t for_each_item(const Item& item, afgan_stream_t stream) {
  const int64_t total = item.items();
  if (total <= 0) return cudaSuccess;
  const int64_t want = (total + 255) / 256;
  const int blocks = static_cast<int>(want < (int64_t{1} << 30) ? want : (int64_t{1} << 30));
  ForEachItemKernel<Item><<<blocks, 256, 0, stream>>>(item, total);
  return cudaGetLastError();
}
#endif

// ------------------------------------------------------------------------------------------------ upfirdn2d
// y [N, OH, OW, C] = upfirdn2d(x [N, H, W, C]); one item per output element, polyphase loop over the taps.
template <typename T>
struct Upfirdn2dArgs {
  const T* x = nullptr;
  T* y = nullptr;
  DevFilter f;  // scale = gain
  int N = 0, H = 0, W = 0, C = 0, OH = 0, OW = 0;
  int upx = 1, upy = 1, downx = 1, downy = 1, px0 = 0, py0 = 0;
  int64_t items() const { return static_cast<int64_t>(N) * OH * OW * C; }
  AFGAN_HD void operator()(int64_t i) const {
    const int c = static_cast<int>(i % C);
    const int ox = static_cast<int>((i / C) % OW);
    const int oy = static_cast<int>((i / (static_cast<int64_t>(C) * OW)) % OH);
    const int n = static_cast<int>(i / (static_cast<int64_t>(C) * OW * OH));
    float acc = 0.f;
    for (int ky = first_tap(oy, downy, upy, py0); ky < f.h; ky += upy) {
      const int iy = floor_div(oy * downy + ky - py0, upy);
      if (iy < 0 || iy >= H) continue;
      for (int kx = first_tap(ox, downx, upx, px0); kx < f.w; kx += upx) {
        const int ix = floor_div(ox * downx + kx - px0, upx);
        if (ix < 0 || ix >= W) continue;
        acc += f.at(ky, kx) * static_cast<float>(x[((static_cast<int64_t>(n) * H + iy) * W + ix) * C + c]);
      }
    }
    y[i] = static_cast<T>(acc);
  }
};

// Padding of upfirdn2d's gradient (an upfirdn2d with up/down swapped and the filter reversed): the same rule
// as the op's registered gradient (afgan_tf/ops/_custom_ops.py).
struct Upfirdn2dGradPad {
  int px0, px1, py0, py1;
};
inline Upfirdn2dGradPad upfirdn2d_grad_pad(int fw, int fh, int H, int W, int OH, int OW, int upx, int upy, int downx,
                                           int downy, int px0, int py0) {
  Upfirdn2dGradPad g;
  g.px0 = fw - px0 - 1;
  g.px1 = W * upx - OW * downx + px0 - upx + 1;
  g.py0 = fh - py0 - 1;
  g.py1 = H * upy - OH * downy + py0 - upy + 1;
  return g;
}

// ------------------------------------------------------------------------------------------------ bias_act
// Element-wise over x (any layout): bias b[(i / inner) % nb] (nb = 0: no bias).
template <typename T>
struct BiasActArgs {
  const T* x = nullptr;
  const T* b = nullptr;
  T* y = nullptr;
  int64_t total = 0, inner = 1, nb = 0;
  int act = 0;
  float alpha = 0.f, gain = 1.f, clamp = -1.f;
  int64_t items() const { return total; }
  AFGAN_HD void operator()(int64_t i) const {
    const float z = static_cast<float>(x[i]) + (nb ? static_cast<float>(b[(i / inner) % nb]) : 0.f);
    y[i] = static_cast<T>(bias_act_elem(act, z, alpha, gain, clamp));
  }
};

// dx = g * gain * act^(order)(z) * [|y| < clamp]; x / b / y may be null (see AfganBiasActGrad).
template <typename T>
struct BiasActGradArgs {
  const T* g = nullptr;
  const T* x = nullptr;
  const T* b = nullptr;
  const T* y = nullptr;
  T* dx = nullptr;
  int64_t total = 0, inner = 1, nb = 0;
  int act = 0, order = 1;
  float alpha = 0.f, gain = 1.f, clamp = -1.f;
  int64_t items() const { return total; }
  AFGAN_HD void operator()(int64_t i) const {
    const float z = x ? static_cast<float>(x[i]) + (b && nb ? static_cast<float>(b[(i / inner) % nb]) : 0.f) : 0.f;
    const float yv = y ? static_cast<float>(y[i]) : 0.f;
    dx[i] = static_cast<T>(bias_act_grad_elem(act, order, static_cast<float>(g[i]), z, yv, alpha, gain, clamp,
                                              y != nullptr));
  }
};

// ------------------------------------------------------------------------------------------------ filtered_lrelu
// Generic (non-tiled) path: kernel A writes the high-rate buffer hi [N, hiH, hiW, C] (float32), kernel B
// filters / decimates it. Modes: 0 forward (x + b -> up -> lrelu/clamp + code), 1 adjoint of the gradient
// (forward stages, code mask), 2 gradient (dy -> adjoint of the down stage -> code mask -> adjoint of up).
struct FlGeom {
  int N = 0, C = 0, srcH = 0, srcW = 0, hiH = 0, hiW = 0, outH = 0, outW = 0;
  int upx = 1, upy = 1, downx = 1, downy = 1, px0 = 0, py0 = 0;
  float gain = 1.f, slope = 0.2f, clamp = INFINITY;  // clamp: +inf when none
  int code_bytes = 1;
};

// Kernel A: one item per (high-rate pixel, quad of 4 channels).
template <typename T>
struct FlHighArgs {
  const T* src = nullptr;
  const T* bias = nullptr;
  float* hi = nullptr;
  uint8_t* code_w = nullptr;
  const uint8_t* code_r = nullptr;
  DevFilter fa;
  FlGeom g;
  int mode = 0;
  int64_t items() const { return static_cast<int64_t>(g.N) * g.hiH * g.hiW * g.code_bytes; }
  AFGAN_HD void operator()(int64_t i) const {
    const int quads = g.code_bytes;
    const int q = static_cast<int>(i % quads);
    const int jx = static_cast<int>((i / quads) % g.hiW);
    const int jy = static_cast<int>((i / (static_cast<int64_t>(quads) * g.hiW)) % g.hiH);
    const int n = static_cast<int>(i / (static_cast<int64_t>(quads) * g.hiW * g.hiH));
    const int64_t pix = (static_cast<int64_t>(n) * g.hiH + jy) * g.hiW + jx;
    uint32_t packed = 0;
    const uint8_t cbyte = code_r ? code_r[pix * g.code_bytes + q] : 0;
    for (int e = 0; e < 4; ++e) {
      const int c = 4 * q + e;
      if (c >= g.C) break;
      float acc = 0.f;
      if (mode != 2) {  // polyphase upsampling of the source
        const float bc = bias ? static_cast<float>(bias[c]) : 0.f;
        for (int ky = first_tap(jy, 1, g.upy, g.py0); ky < fa.h; ky += g.upy) {
          const int iy = floor_div(jy + ky - g.py0, g.upy);
          if (iy < 0 || iy >= g.srcH) continue;
          for (int kx = first_tap(jx, 1, g.upx, g.px0); kx < fa.w; kx += g.upx) {
            const int ix = floor_div(jx + kx - g.px0, g.upx);
            if (ix < 0 || ix >= g.srcW) continue;
            acc += fa.at(ky, kx) *
                   (static_cast<float>(src[((static_cast<int64_t>(n) * g.srcH + iy) * g.srcW + ix) * g.C + c]) + bc);
          }
        }
      } else {  // adjoint of the down stage: dT[j] = sum_{o*down + k = j} g[k] dy[o]
        for (int ky = floor_mod(jy, g.downy); ky < fa.h; ky += g.downy) {
          const int oy = (jy - ky) / g.downy;
          if (oy < 0 || oy >= g.srcH) continue;
          for (int kx = floor_mod(jx, g.downx); kx < fa.w; kx += g.downx) {
            const int ox = (jx - kx) / g.downx;
            if (ox < 0 || ox >= g.srcW) continue;
            acc += fa.at(ky, kx) *
                   static_cast<float>(src[((static_cast<int64_t>(n) * g.srcH + oy) * g.srcW + ox) * g.C + c]);
          }
        }
      }
      float v;
      if (mode == 0) {
        uint8_t code;
        v = flrelu_forward_elem(acc, g.gain, g.slope, g.clamp, &code);
        packed |= static_cast<uint32_t>(code) << (2 * e);
      } else {
        v = acc * flrelu_code_scale((cbyte >> (2 * e)) & 3u, g.gain, g.slope);
      }
      hi[pix * g.C + c] = v;
    }
    if (code_w) code_w[pix * g.code_bytes + q] = static_cast<uint8_t>(packed);
  }
};

// Kernel B: one item per output element. Mode 0/1: FIR + decimation of hi; mode 2: adjoint of the upsampling
// stage, dx[i] = sum_k g[k] dT[i*up + p0 - k].
template <typename T>
struct FlLowArgs {
  const float* hi = nullptr;
  T* out = nullptr;
  DevFilter fb;
  FlGeom g;
  int mode = 0;
  int64_t items() const { return static_cast<int64_t>(g.N) * g.outH * g.outW * g.C; }
  AFGAN_HD void operator()(int64_t i) const {
    const int c = static_cast<int>(i % g.C);
    const int ox = static_cast<int>((i / g.C) % g.outW);
    const int oy = static_cast<int>((i / (static_cast<int64_t>(g.C) * g.outW)) % g.outH);
    const int n = static_cast<int>(i / (static_cast<int64_t>(g.C) * g.outW * g.outH));
    float acc = 0.f;
    for (int ky = 0; ky < fb.h; ++ky) {
      const int jy = mode == 2 ? oy * g.upy + g.py0 - ky : oy * g.downy + ky;
      if (jy < 0 || jy >= g.hiH) continue;
      for (int kx = 0; kx < fb.w; ++kx) {
        const int jx = mode == 2 ? ox * g.upx + g.px0 - kx : ox * g.downx + kx;
        if (jx < 0 || jx >= g.hiW) continue;
        acc += fb.at(ky, kx) * hi[((static_cast<int64_t>(n) * g.hiH + jy) * g.hiW + jx) * g.C + c];
      }
    }
    out[i] = static_cast<T>(acc);
  }
};

// Generic-path geometry of one filtered_lrelu call (forward, gradient or its adjoint), from the op's attrs
// and the forward sizes: x [N, H, W, C], y [N, oh, ow, C]. Filters fu / fd as given to the op.
struct FlGeneric {
  FlGeom g;
  DevFilter fa, fb;  // kernel A / kernel B filters
  int mode = 0;
  int64_t hi_floats() const { return static_cast<int64_t>(g.N) * g.hiH * g.hiW * g.C; }
};
// direction: 0 forward (x -> y), 1 adjoint of the gradient (x-shaped -> y-shaped), 2 gradient (dy -> dx).
inline FlGeneric make_fl_generic(const tile::Attrs& a, int direction, int N, int H, int W, int oh, int ow, int C,
                                 DevFilter fu, DevFilter fd) {
  FlGeneric r;
  fu.scale = static_cast<float>(a.upx * a.upy);
  fd.scale = 1.f;
  FlGeom& g = r.g;
  g.upx = a.upx; g.upy = a.upy; g.downx = a.downx; g.downy = a.downy; g.px0 = a.px0; g.py0 = a.py0;
  g.gain = a.gain; g.slope = a.slope;
  g.clamp = a.clamp >= 0.f ? a.clamp : INFINITY;
  g.N = N; g.C = C;
  g.hiH = (oh - 1) * a.downy + fd.h;
  g.hiW = (ow - 1) * a.downx + fd.w;
  g.code_bytes = (C + 3) / 4;
  r.mode = direction;
  if (direction == 2) {
    g.srcH = oh; g.srcW = ow; g.outH = H; g.outW = W;
    r.fa = fd; r.fb = fu;
  } else {
    g.srcH = H; g.srcW = W; g.outH = oh; g.outW = ow;
    r.fa = fu; r.fb = fd;
  }
  return r;
}

// ------------------------------------------------------------------------------------------------ launches
// Every launch function runs on `stream` (host build: synchronously) and returns the launch status; the
// caller owns all buffers (device memory on the GPU). T = float or half_t.
template <typename T>
afgan_error_t launch_upfirdn2d(const Upfirdn2dArgs<T>& a, afgan_stream_t stream);
template <typename T>
afgan_error_t launch_bias_act(const BiasActArgs<T>& a, afgan_stream_t stream);
template <typename T>
afgan_error_t launch_bias_act_grad(const BiasActGradArgs<T>& a, afgan_stream_t stream);
// Generic filtered_lrelu: kernel A into `hi` (hi_floats() floats), then kernel B. Forward: code_w receives
// every code byte; gradient / adjoint: code_r is read.
template <typename T>
afgan_error_t launch_flrelu_generic(const FlGeneric& k, const T* src, const T* bias, float* hi, uint8_t* code_w,
                                    const uint8_t* code_r, T* out, afgan_stream_t stream);
// Tiled filtered_lrelu: p planned by tile::plan_tiles (p.nthreads threads per block, p.smem_floats floats of
// dynamic shared memory; above 48 kB the launch opts in). Forward: io.code_w must be zero-filled first.
template <typename T>
afgan_error_t launch_flrelu_tiled(const tile::Params& p, const tile::IO<T>& io, afgan_stream_t stream);

// Threads per block of the tiled kernel (the plan's nthreads must not exceed it: __launch_bounds__).
constexpr int kTileThreads = 256;

}  // namespace afgan

#endif  // AFGAN_TF_CUSTOM_OPS_GPU_KERNELS_H_
