// The CUDA kernels of afgan-tf and their launch functions (declared in gpu_kernels.h). No TensorFlow here:
// compiled by nvcc into the op library (setup.py / Bazel compile every *.cu.cc) and into the standalone
// harness (custom_ops/harness/), and by g++ with -DAFGAN_HOST_KERNELS into the harness's CPU build, where
// each launch runs the same item / phase functions in host loops.
//
// Kernels: gpu_kernels.h's grid-stride for_each_item runs the item functors (upfirdn2d, bias_act forward /
// backward, the generic filtered_lrelu kernels A and B); the fused tiled filtered_lrelu runs the phases of
// filtered_lrelu_tile.h with a barrier between them (one block per tile x channel block x sample).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gpu_kernels.h"

namespace afgan {

#if !defined(AFGAN_HOST_KERNELS)
namespace {

template <typename T>
__global__ void __launch_bounds__(kTileThreads) FlreluTileKernel(tile::Params p, tile::IO<T> io, int64_t nblocks) {
  extern __shared__ float afgan_flrelu_smem[];
  const int64_t blk = blockIdx.x + static_cast<int64_t>(blockIdx.y) * gridDim.x;
  if (blk >= nblocks) return;  // uniform over the block
  for (int phase = 0; phase < tile::kNumPhases; ++phase) {
    tile::run_phase<T>(phase, p, blk, threadIdx.x, afgan_flrelu_smem, io);
    __syncthreads();
  }
}

}  // namespace

template <typename T>
afgan_error_t launch_flrelu_tiled(const tile::Params& p, const tile::IO<T>& io, afgan_stream_t stream) {
  const int64_t nblocks = p.num_blocks();
  if (nblocks == 0) return cudaSuccess;
  if (p.nthreads < 1 || p.nthreads > kTileThreads) return cudaErrorInvalidConfiguration;
  const int64_t gx = nblocks < 65536 ? nblocks : 65536;
  const int64_t gy = (nblocks + gx - 1) / gx;
  if (gy > 65535) return cudaErrorInvalidConfiguration;
  const size_t smem_bytes = static_cast<size_t>(p.smem_floats) * sizeof(float);
  if (smem_bytes > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(FlreluTileKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(smem_bytes));
    if (e != cudaSuccess) return e;
  }
  FlreluTileKernel<T><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), p.nthreads, smem_bytes,
                        stream>>>(p, io, nblocks);
  return cudaGetLastError();
}

#else  // AFGAN_HOST_KERNELS: the same phases in host loops.

// Like the emulator op (filtered_lrelu_emu_op.cc): every block, every phase as a loop over the thread
// indices, shared memory = a host buffer filled with NaN (a phase reading unwritten shared memory yields
// NaN), a guard zone after it (an overflowing write returns error 2).
template <typename T>
afgan_error_t launch_flrelu_tiled(const tile::Params& p, const tile::IO<T>& io, afgan_stream_t) {
  constexpr int kGuard = 64;
  constexpr float kSentinel = -1.2345e30f;
  std::vector<float> smem(static_cast<size_t>(p.smem_floats) + kGuard);
  for (int64_t blk = 0; blk < p.num_blocks(); ++blk) {
    std::fill(smem.begin(), smem.begin() + p.smem_floats, std::numeric_limits<float>::quiet_NaN());
    std::fill(smem.begin() + p.smem_floats, smem.end(), kSentinel);
    for (int phase = 0; phase < tile::kNumPhases; ++phase)
      for (int tid = 0; tid < p.nthreads; ++tid) tile::run_phase<T>(phase, p, blk, tid, smem.data(), io);
    for (int g = 0; g < kGuard; ++g)
      if (smem[p.smem_floats + g] != kSentinel) return 2;
  }
  return 0;
}
#endif

template <typename T>
afgan_error_t launch_upfirdn2d(const Upfirdn2dArgs<T>& a, afgan_stream_t stream) {
  return for_each_item(a, stream);
}

template <typename T>
afgan_error_t launch_bias_act(const BiasActArgs<T>& a, afgan_stream_t stream) {
  return for_each_item(a, stream);
}

template <typename T>
afgan_error_t launch_bias_act_grad(const BiasActGradArgs<T>& a, afgan_stream_t stream) {
  return for_each_item(a, stream);
}

template <typename T>
afgan_error_t launch_flrelu_generic(const FlGeneric& k, const T* src, const T* bias, float* hi, uint8_t* code_w,
                                    const uint8_t* code_r, T* out, afgan_stream_t stream) {
  FlHighArgs<T> A;
  A.src = src;
  A.bias = bias;
  A.hi = hi;
  A.code_w = code_w;
  A.code_r = code_r;
  A.fa = k.fa;
  A.g = k.g;
  A.mode = k.mode;
  afgan_error_t e = for_each_item(A, stream);
  if (e != afgan_error_t()) return e;
  FlLowArgs<T> B;
  B.hi = hi;
  B.out = out;
  B.fb = k.fb;
  B.g = k.g;
  B.mode = k.mode;
  return for_each_item(B, stream);
}

#define AFGAN_INSTANTIATE(T)                                                                                     \
  template afgan_error_t launch_upfirdn2d<T>(const Upfirdn2dArgs<T>&, afgan_stream_t);                           \
  template afgan_error_t launch_bias_act<T>(const BiasActArgs<T>&, afgan_stream_t);                              \
  template afgan_error_t launch_bias_act_grad<T>(const BiasActGradArgs<T>&, afgan_stream_t);                     \
  template afgan_error_t launch_flrelu_generic<T>(const FlGeneric&, const T*, const T*, float*, uint8_t*,        \
                                                  const uint8_t*, T*, afgan_stream_t);                           \
  template afgan_error_t launch_flrelu_tiled<T>(const tile::Params&, const tile::IO<T>&, afgan_stream_t);
AFGAN_INSTANTIATE(float)
AFGAN_INSTANTIATE(half_t)
#undef AFGAN_INSTANTIATE

}  // namespace afgan

#if defined(AFGAN_CUDA_BUILD_INFO) && !defined(AFGAN_HOST_KERNELS)
// CUDA version and architectures of this build (setup.py), read by afgan_tf.ops._selfcheck (ctypes) to
// check the driver at load time.
extern "C" __attribute__((used, visibility("default"))) const char afgan_cuda_build_info[] = AFGAN_CUDA_BUILD_INFO;
#endif
