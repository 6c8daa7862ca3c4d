// TensorFlow GPU OpKernels of upfirdn2d and bias_act (float32 and float16, NHWC), plus the generic
// (non-tiled) filtered_lrelu OpKernels the tiled ones of filtered_lrelu_gpu.cu.cc fall back to.
//
// These classes only validate the inputs, allocate the outputs / temporaries and call the launch functions
// of gpu_kernels.h; every CUDA kernel lives in gpu_launch.cu.cc (no TensorFlow there), which the standalone
// harness (custom_ops/harness/, scripts/gpu_check.sh) also builds and checks on a GPU without TensorFlow.
// Kernel design (gpu_kernels.h): upfirdn2d = one thread per output element, polyphase loop over the filter
// footprint; bias_act = element-wise forward and (1st/2nd order) backward; generic filtered_lrelu = kernel A
// (high-rate buffer + 2-bit code, or the code mask in the gradient) then kernel B (FIR + decimation).
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "gpu_glue.h"
#include "op_attrs.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/util/gpu_kernel_helper.h"

namespace tensorflow {
namespace {

using GPUDevice = Eigen::GpuDevice;

using afgan_gpu::Dev;
using afgan_gpu::DevPtr;
using afgan_gpu::LaunchStatus;
using afgan_gpu::MakeFilter;

// ------------------------------------------------------------------------------------------------ upfirdn2d
template <typename T>
class Upfirdn2dOpGPU : public OpKernel {
 public:
  explicit Upfirdn2dOpGPU(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, afgan_ops::ReadUpfirdn2dAttrs(ctx, &a_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& f = ctx->input(1);
    OP_REQUIRES_OK(ctx, afgan_ops::CheckNHWC(x, "upfirdn2d: x"));
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFilter(f, "upfirdn2d: f"));
    const afgan_ops::Upfirdn2dAttrs& a = a_;
    afgan::Upfirdn2dArgs<typename Dev<T>::type> k;
    k.f = MakeFilter(f, a.flip, a.gain);
    k.N = x.dim_size(0); k.H = x.dim_size(1); k.W = x.dim_size(2); k.C = x.dim_size(3);
    OP_REQUIRES_OK(ctx, afgan_ops::Upfirdn2dOutSize(x, a, k.f.w, k.f.h, &k.OH, &k.OW));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({k.N, k.OH, k.OW, k.C}), &y));
    if (y->NumElements() == 0) return;
    k.x = DevPtr<T>(x);
    k.y = DevPtr<T>(y);
    k.upx = a.upx; k.upy = a.upy; k.downx = a.downx; k.downy = a.downy; k.px0 = a.px0; k.py0 = a.py0;
    OP_REQUIRES_OK(ctx, LaunchStatus(afgan::launch_upfirdn2d(k, ctx->eigen_device<GPUDevice>().stream()), "upfirdn2d"));
  }

 private:
  afgan_ops::Upfirdn2dAttrs a_;
};

// ------------------------------------------------------------------------------------------------ bias_act
template <typename T>
class BiasActOpGPU : public OpKernel {
 public:
  explicit BiasActOpGPU(OpKernelConstruction* ctx) : OpKernel(ctx) { OP_REQUIRES_OK(ctx, afgan_ops::ReadBiasActAttrs(ctx, &a_)); }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& b = ctx->input(1);
    int64_t inner, nb;
    OP_REQUIRES_OK(ctx, afgan_ops::BiasLayout(x, b, a_.axis, &inner, &nb));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    if (x.NumElements() == 0) return;
    afgan::BiasActArgs<typename Dev<T>::type> k;
    k.x = DevPtr<T>(x);
    k.b = nb ? DevPtr<T>(b) : nullptr;
    k.y = DevPtr<T>(y);
    k.total = x.NumElements(); k.inner = inner; k.nb = nb;
    k.act = a_.act; k.alpha = a_.alpha; k.gain = a_.gain; k.clamp = a_.clamp;
    OP_REQUIRES_OK(ctx, LaunchStatus(afgan::launch_bias_act(k, ctx->eigen_device<GPUDevice>().stream()), "bias_act"));
  }

 private:
  afgan_ops::BiasActAttrs a_;
};

template <typename T>
class BiasActGradOpGPU : public OpKernel {
 public:
  explicit BiasActGradOpGPU(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, afgan_ops::ReadBiasActAttrs(ctx, &a_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("order", &order_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& g = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& b = ctx->input(2);
    const Tensor& y = ctx->input(3);
    const bool has_x = x.NumElements() == g.NumElements() && g.NumElements() > 0;
    const bool has_y = y.NumElements() == g.NumElements() && g.NumElements() > 0;
    OP_REQUIRES(ctx, has_x || afgan::act_uses_y_only(a_.act),
                errors::InvalidArgument("bias_act grad: x is required for this activation"));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, g.shape(), &dx));
    if (g.NumElements() == 0) return;
    int64_t inner = 1, nb = 0;
    if (has_x) OP_REQUIRES_OK(ctx, afgan_ops::BiasLayout(g, b, a_.axis, &inner, &nb));
    afgan::BiasActGradArgs<typename Dev<T>::type> k;
    k.g = DevPtr<T>(g);
    k.x = has_x ? DevPtr<T>(x) : nullptr;
    k.b = nb ? DevPtr<T>(b) : nullptr;
    k.y = has_y ? DevPtr<T>(y) : nullptr;
    k.dx = DevPtr<T>(dx);
    k.total = g.NumElements(); k.inner = inner; k.nb = nb;
    k.act = a_.act; k.order = order_; k.alpha = a_.alpha; k.gain = a_.gain; k.clamp = a_.clamp;
    OP_REQUIRES_OK(ctx, LaunchStatus(afgan::launch_bias_act_grad(k, ctx->eigen_device<GPUDevice>().stream()),
                                     "bias_act grad"));
  }

 private:
  afgan_ops::BiasActAttrs a_;
  int order_;
};

// ------------------------------------------------------------------------------------------------ filtered_lrelu
template <typename T>
class FilteredLreluOpGPU : public OpKernel {
 public:
  explicit FilteredLreluOpGPU(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, afgan_ops::ReadFlreluAttrs(ctx, true, &a_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& fu = ctx->input(1);
    const Tensor& fd = ctx->input(2);
    const Tensor& b = ctx->input(3);
    OP_REQUIRES_OK(ctx, afgan_ops::CheckNHWC(x, "filtered_lrelu: x"));
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFilter(fu, "fu"));
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFilter(fd, "fd"));
    const int N = x.dim_size(0), H = x.dim_size(1), W = x.dim_size(2), C = x.dim_size(3);
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFlreluBias(b, C, "filtered_lrelu"));
    const afgan::DevFilter FU = MakeFilter(fu, a_.flip, 1.f), FD = MakeFilter(fd, a_.flip, 1.f);
    const int64_t oh = afgan::tile::flrelu_out_size(H, a_.upy, a_.downy, a_.py0, a_.py1, FU.h, FD.h);
    const int64_t ow = afgan::tile::flrelu_out_size(W, a_.upx, a_.downx, a_.px0, a_.px1, FU.w, FD.w);
    OP_REQUIRES(ctx, oh >= 1 && ow >= 1, errors::InvalidArgument("filtered_lrelu: output would be empty"));
    const afgan::FlGeneric k = afgan::make_fl_generic(a_, 0, N, H, W, oh, ow, C, FU, FD);
    Tensor* y = nullptr;
    Tensor* code = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({N, oh, ow, C}), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({N, k.g.hiH, k.g.hiW, k.g.code_bytes}), &code));
    Tensor hi;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_FLOAT, TensorShape({k.hi_floats()}), &hi));
    if (y->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, LaunchStatus(afgan::launch_flrelu_generic(k, DevPtr<T>(x), b.NumElements() ? DevPtr<T>(b) : nullptr,
                                                                  hi.flat<float>().data(), code->flat<uint8_t>().data(),
                                                                  nullptr, DevPtr<T>(y),
                                                                  ctx->eigen_device<GPUDevice>().stream()),
                                     "filtered_lrelu (generic)"));
  }

 private:
  afgan_ops::FlreluAttrs a_;
};

template <typename T>
class FilteredLreluGradOpGPU : public OpKernel {
 public:
  explicit FilteredLreluGradOpGPU(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, afgan_ops::ReadFlreluAttrs(ctx, false, &a_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("adjoint", &adjoint_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& fu = ctx->input(1);
    const Tensor& fd = ctx->input(2);
    const Tensor& code = ctx->input(3);
    const Tensor& xs = ctx->input(4);  // host memory
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFilter(fu, "fu"));
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFilter(fd, "fd"));
    const afgan::DevFilter FU = MakeFilter(fu, a_.flip, 1.f), FD = MakeFilter(fd, a_.flip, 1.f);
    int H = 0, W = 0, oh = 0, ow = 0;
    OP_REQUIRES_OK(ctx, afgan_ops::FlreluGradSizes(dy, xs, adjoint_, a_, FU.w, FU.h, FD.w, FD.h, "filtered_lrelu grad",
                                                   &H, &W, &oh, &ow));
    const int N = dy.dim_size(0), C = dy.dim_size(3);
    OP_REQUIRES(ctx, oh >= 1 && ow >= 1 && H >= 1 && W >= 1,
                errors::InvalidArgument("filtered_lrelu grad: empty shapes"));
    const afgan::FlGeneric k = afgan::make_fl_generic(a_, adjoint_ ? 1 : 2, N, H, W, oh, ow, C, FU, FD);
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFlreluCode(code, N, k.g.hiH, k.g.hiW, C, "filtered_lrelu grad"));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({N, k.g.outH, k.g.outW, C}), &out));
    Tensor hi;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_FLOAT, TensorShape({k.hi_floats()}), &hi));
    if (out->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, LaunchStatus(afgan::launch_flrelu_generic(k, DevPtr<T>(dy), static_cast<const typename Dev<T>::type*>(nullptr),
                                                                  hi.flat<float>().data(), nullptr,
                                                                  code.flat<uint8_t>().data(), DevPtr<T>(out),
                                                                  ctx->eigen_device<GPUDevice>().stream()),
                                     "filtered_lrelu grad (generic)"));
  }

 private:
  afgan_ops::FlreluAttrs a_;
  bool adjoint_ = false;
};

}  // namespace

// The generic filtered_lrelu kernels are no longer registered: the ops' GPU kernels are the tiled ones of
// filtered_lrelu_gpu.cu.cc, which construct these for the configurations they cannot take.
OpKernel* NewFilteredLreluGenericGPU(OpKernelConstruction* ctx, DataType dtype, bool grad) {
  if (dtype == DT_HALF)
    return grad ? static_cast<OpKernel*>(new FilteredLreluGradOpGPU<Eigen::half>(ctx))
                : static_cast<OpKernel*>(new FilteredLreluOpGPU<Eigen::half>(ctx));
  return grad ? static_cast<OpKernel*>(new FilteredLreluGradOpGPU<float>(ctx))
              : static_cast<OpKernel*>(new FilteredLreluOpGPU<float>(ctx));
}

#define REGISTER_GPU(T)                                                                                     \
  REGISTER_KERNEL_BUILDER(Name("AfganUpfirdn2d").Device(DEVICE_GPU).TypeConstraint<T>("T"),                 \
                          Upfirdn2dOpGPU<T>);                                                               \
  REGISTER_KERNEL_BUILDER(Name("AfganBiasAct").Device(DEVICE_GPU).TypeConstraint<T>("T"), BiasActOpGPU<T>); \
  REGISTER_KERNEL_BUILDER(Name("AfganBiasActGrad").Device(DEVICE_GPU).TypeConstraint<T>("T"),               \
                          BiasActGradOpGPU<T>);

REGISTER_GPU(float);
REGISTER_GPU(Eigen::half);

}  // namespace tensorflow

#endif  // GOOGLE_CUDA
