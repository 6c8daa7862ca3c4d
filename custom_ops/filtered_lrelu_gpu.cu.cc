// TensorFlow OpKernels of the fused, tiled CUDA filtered_lrelu (docs/ALGORITHM.md §1.5); the kernel itself (FlreluTileKernel,
// launch_flrelu_tiled) is in gpu_launch.cu.cc, free of TensorFlow. One thread block per (sample, channel
// block, output tile);
// bias, upsampling, gain/lrelu/clamp + 2-bit code (or the code mask in the gradient) and downsampling all in
// shared memory; only the output tile and the code bytes touch global memory. The algorithm lives in
// filtered_lrelu_tile.h as phase functions shared with the CPU emulator (filtered_lrelu_emu_op.cc), which
// is how it is tested on machines without a GPU (tests/test_flrelu_tile_emu.py).
//
// Registered for DEVICE_GPU (float32, float16) for AfganFilteredLrelu and AfganFilteredLreluGrad. When no
// tile fits in the shared-memory budget (SmemBudget: 48 kB by default; with 48 kB the tiles take separable
// filters up to 22 taps at up = down = 1, 38 at 2, 44 at 4 -- StyleGAN3 uses 12 / 24) the op runs the
// generic two-kernel path of gpu_kernels.cu.cc instead.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include <cstdlib>
#include <memory>

#include "filtered_lrelu_tile.h"
#include "gpu_glue.h"
#include "op_attrs.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/util/gpu_kernel_helper.h"

namespace tensorflow {

// Generic (non-tiled) filtered_lrelu kernels of gpu_kernels.cu.cc, for the configurations the tiled kernel
// cannot take.
OpKernel* NewFilteredLreluGenericGPU(OpKernelConstruction* ctx, DataType dtype, bool grad);

namespace {

using GPUDevice = Eigen::GpuDevice;
using afgan::tile::FilterRef;
using afgan::tile::Params;
using afgan_ops::ReadFilterRef;

using afgan::kTileThreads;

// Shared-memory budget per block for the tile planner: 48 kB (no opt-in needed on any architecture), or
// AFGAN_TF_FLRELU_GPU_SMEM_KB kB (larger tiles, less halo recomputation; capped at the device's opt-in
// maximum, e.g. 163 kB on sm_80). Untuned: no GPU was available when this was written.
int64_t SmemBudget() {
  static const int64_t requested = [] {
    const char* e = std::getenv("AFGAN_TF_FLRELU_GPU_SMEM_KB");
    const int64_t kb = e ? std::atoll(e) : 48;
    return (kb > 0 ? kb : 48) * 1024;
  }();
  if (requested <= 48 * 1024) return requested;
  int dev = 0, optin = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
    return 48 * 1024;
  return requested < optin ? requested : optin;
}

using afgan_gpu::Dev;

template <typename T>
Status Launch(OpKernelContext* ctx, const Params& p, const afgan::tile::IO<T>& io) {
  afgan::tile::IO<typename Dev<T>::type> d;
  d.src = reinterpret_cast<const typename Dev<T>::type*>(io.src);
  d.bias = reinterpret_cast<const typename Dev<T>::type*>(io.bias);
  d.out = reinterpret_cast<typename Dev<T>::type*>(io.out);
  d.code_w = io.code_w;
  d.code_r = io.code_r;
  const cudaError_t e = afgan::launch_flrelu_tiled(p, d, ctx->eigen_device<GPUDevice>().stream());
  if (e != cudaSuccess)
    return errors::Internal("filtered_lrelu: tiled kernel launch failed (", p.num_blocks(), " blocks, ",
                            static_cast<int64_t>(p.smem_floats) * 4, " bytes of shared memory): ", cudaGetErrorString(e),
                            p.smem_floats * 4 > 48 * 1024 ? " (lower AFGAN_TF_FLRELU_GPU_SMEM_KB)" : "");
  return OkStatus();
}

template <typename T>
class FilteredLreluTiledGPU : public OpKernel {
 public:
  explicit FilteredLreluTiledGPU(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, afgan_ops::ReadFlreluAttrs(ctx, true, &a_));
    generic_.reset(NewFilteredLreluGenericGPU(ctx, DataTypeToEnum<T>::v(), false));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& b = ctx->input(3);
    OP_REQUIRES_OK(ctx, afgan_ops::CheckNHWC(x, "filtered_lrelu: x"));
    const int N = x.dim_size(0), H = x.dim_size(1), W = x.dim_size(2), C = x.dim_size(3);
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFlreluBias(b, C, "filtered_lrelu"));
    FilterRef fu, fd;
    OP_REQUIRES_OK(ctx, ReadFilterRef(ctx->input(1), "fu", a_.flip, &fu));
    OP_REQUIRES_OK(ctx, ReadFilterRef(ctx->input(2), "fd", a_.flip, &fd));
    Params p;
    OP_REQUIRES(ctx, afgan::tile::make_forward(a_, N, H, W, C, fu, fd, &p),
                errors::InvalidArgument("filtered_lrelu: output would be empty for x ", x.shape().DebugString(),
                                        " and the given up/down/padding/filters"));
    if (!afgan::tile::plan_tiles(&p, SmemBudget(), 0, 0, 0, kTileThreads)) {
      generic_->Compute(ctx);
      return;
    }
    Tensor* y = nullptr;
    Tensor* code = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({N, p.outH, p.outW, C}), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({N, p.midH, p.midW, p.code_bytes}), &code));
    if (y->NumElements() == 0) return;
    auto stream = ctx->eigen_device<GPUDevice>().stream();
    // Code bytes of samples the down filter never reads stay 0.
    cudaMemsetAsync(code->flat<uint8_t>().data(), 0, code->NumElements(), stream);
    afgan::tile::IO<T> io;
    io.src = x.flat<T>().data();
    io.bias = b.dim_size(0) ? b.flat<T>().data() : nullptr;
    io.out = y->flat<T>().data();
    io.code_w = code->flat<uint8_t>().data();
    OP_REQUIRES_OK(ctx, Launch<T>(ctx, p, io));
  }

 private:
  afgan_ops::FlreluAttrs a_;
  std::unique_ptr<OpKernel> generic_;
};

template <typename T>
class FilteredLreluGradTiledGPU : public OpKernel {
 public:
  explicit FilteredLreluGradTiledGPU(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, afgan_ops::ReadFlreluAttrs(ctx, false, &a_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("adjoint", &adjoint_));
    generic_.reset(NewFilteredLreluGenericGPU(ctx, DataTypeToEnum<T>::v(), true));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& code = ctx->input(3);
    const Tensor& xs = ctx->input(4);  // host memory
    FilterRef fu, fd;
    OP_REQUIRES_OK(ctx, ReadFilterRef(ctx->input(1), "fu", a_.flip, &fu));
    OP_REQUIRES_OK(ctx, ReadFilterRef(ctx->input(2), "fd", a_.flip, &fd));
    int H = 0, W = 0, oh = 0, ow = 0;
    OP_REQUIRES_OK(ctx, afgan_ops::FlreluGradSizes(dy, xs, adjoint_, a_, fu.w, fu.h, fd.w, fd.h, "filtered_lrelu grad",
                                                   &H, &W, &oh, &ow));
    const int N = dy.dim_size(0), C = dy.dim_size(3);
    Params p;
    OP_REQUIRES(ctx, afgan::tile::make_grad(a_, adjoint_, N, H, W, oh, ow, C, fu, fd, &p),
                errors::InvalidArgument("filtered_lrelu grad: empty shapes (x ", H, "x", W, ", y ", oh, "x", ow, ")"));
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFlreluCode(code, N, p.midH, p.midW, C, "filtered_lrelu grad"));
    if (!afgan::tile::plan_tiles(&p, SmemBudget(), 0, 0, 0, kTileThreads)) {
      generic_->Compute(ctx);
      return;
    }
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({N, p.outH, p.outW, C}), &out));
    if (out->NumElements() == 0) return;
    afgan::tile::IO<T> io;
    io.src = dy.flat<T>().data();
    io.out = out->flat<T>().data();
    io.code_r = code.flat<uint8_t>().data();
    OP_REQUIRES_OK(ctx, Launch<T>(ctx, p, io));
  }

 private:
  afgan_ops::FlreluAttrs a_;
  bool adjoint_ = false;
  std::unique_ptr<OpKernel> generic_;
};

}  // namespace

#define REGISTER_TILED_GPU(T)                                                                           \
  REGISTER_KERNEL_BUILDER(Name("AfganFilteredLrelu").Device(DEVICE_GPU).TypeConstraint<T>("T"),         \
                          FilteredLreluTiledGPU<T>);                                                    \
  REGISTER_KERNEL_BUILDER(                                                                              \
      Name("AfganFilteredLreluGrad").Device(DEVICE_GPU).TypeConstraint<T>("T").HostMemory("x_shape"),   \
      FilteredLreluGradTiledGPU<T>);
REGISTER_TILED_GPU(float);
REGISTER_TILED_GPU(Eigen::half);
#undef REGISTER_TILED_GPU

}  // namespace tensorflow

#endif  // GOOGLE_CUDA
