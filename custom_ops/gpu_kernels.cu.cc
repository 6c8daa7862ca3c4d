// CUDA kernels of the afgan-tf op library (float32 and float16, NHWC), compiled by nvcc.
//
// Same op definitions as the CPU kernels (registered in the .cc files); the per-element math and the
// polyphase index rules come from afgan_common.h (shared inline __host__ __device__ functions).
// Design (generic path; the fused, tiled filtered_lrelu of spec 1.5 is in filtered_lrelu_gpu.cu.cc, which
// falls back to the generic filtered_lrelu kernels below only when no tile fits in shared memory):
//   upfirdn2d:      one thread per output element, polyphase loop over the filter footprint (separable
//                   filters as the product of the two 1-D taps), float accumulation;
//   bias_act:       one element-wise kernel for the forward and one for the (1st/2nd order) backward;
//   filtered_lrelu: kernel A, one thread per (high-rate pixel, 4 channels): polyphase upsampling of x + b,
//                   gain/lrelu/clamp and the packed 2-bit code byte (or, in the gradient, the adjoint
//                   polyphase of dy times the gain/slope/0 read from the code) into a temporary high-rate
//                   buffer; kernel B, one thread per output element: FIR + decimation of that buffer.
// These kernels cannot run on the machine they were written on (no GPU): they are compiled in CI and their
// tests are marked @pytest.mark.gpu.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include <vector>

#include "afgan_common.h"
#include "op_attrs.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/util/gpu_kernel_helper.h"

namespace tensorflow {
namespace {

using GPUDevice = Eigen::GpuDevice;
constexpr int kThreads = 256;

inline int Blocks(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

// A filter on the device: rank 1 (separable) or rank 2 [h, w], read in correlation form.
struct DevFilter {
  const float* f;
  int w, h;
  bool sep;
  bool flip;
  float scale;
  __device__ __forceinline__ float at(int ky, int kx) const {
    if (sep) {
      const float a = flip ? f[kx] : f[w - 1 - kx];
      const float b = flip ? f[ky] : f[h - 1 - ky];
      return a * b * scale;
    }
    return (flip ? f[ky * w + kx] : f[(h - 1 - ky) * w + (w - 1 - kx)]) * scale;
  }
};

DevFilter MakeFilter(const Tensor& t, bool flip, float scale) {
  DevFilter d;
  d.f = t.flat<float>().data();
  d.sep = t.dims() == 1;
  d.w = d.sep ? t.dim_size(0) : t.dim_size(1);
  d.h = t.dim_size(0);
  d.flip = flip;
  d.scale = scale;
  return d;
}

// ------------------------------------------------------------------------------------------------ upfirdn2d
template <typename T>
__global__ void Upfirdn2dKernel(const T* __restrict__ x, T* __restrict__ y, DevFilter f, int N, int H, int W, int C,
                                int OH, int OW, int upx, int upy, int downx, int downy, int px0, int py0) {
  const int64_t total = static_cast<int64_t>(N) * OH * OW * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int c = i % C;
    const int ox = (i / C) % OW;
    const int oy = (i / (static_cast<int64_t>(C) * OW)) % OH;
    const int n = i / (static_cast<int64_t>(C) * OW * OH);
    float acc = 0.f;
    for (int ky = afgan::first_tap(oy, downy, upy, py0); ky < f.h; ky += upy) {
      const int iy = afgan::floor_div(oy * downy + ky - py0, upy);
      if (iy < 0 || iy >= H) continue;
      for (int kx = afgan::first_tap(ox, downx, upx, px0); kx < f.w; kx += upx) {
        const int ix = afgan::floor_div(ox * downx + kx - px0, upx);
        if (ix < 0 || ix >= W) continue;
        acc += f.at(ky, kx) * static_cast<float>(x[((static_cast<int64_t>(n) * H + iy) * W + ix) * C + c]);
      }
    }
    y[i] = static_cast<T>(acc);
  }
}

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
    DevFilter df = MakeFilter(f, a.flip, a.gain);
    const int N = x.dim_size(0), H = x.dim_size(1), W = x.dim_size(2), C = x.dim_size(3);
    int OH = 0, OW = 0;
    OP_REQUIRES_OK(ctx, afgan_ops::Upfirdn2dOutSize(x, a, df.w, df.h, &OH, &OW));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({N, OH, OW, C}), &y));
    if (y->NumElements() == 0) return;
    auto stream = ctx->eigen_device<GPUDevice>().stream();
    Upfirdn2dKernel<T><<<Blocks(y->NumElements()), kThreads, 0, stream>>>(
        x.flat<T>().data(), y->flat<T>().data(), df, N, H, W, C, OH, OW, a.upx, a.upy, a.downx, a.downy, a.px0, a.py0);
  }

 private:
  afgan_ops::Upfirdn2dAttrs a_;
};

// ------------------------------------------------------------------------------------------------ bias_act
template <typename T>
__global__ void BiasActKernel(const T* x, const T* b, T* y, int64_t total, int64_t inner, int64_t nb, int act,
                              float alpha, float gain, float clamp) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    float z = static_cast<float>(x[i]) + (nb ? static_cast<float>(b[(i / inner) % nb]) : 0.f);
    y[i] = static_cast<T>(afgan::bias_act_elem(act, z, alpha, gain, clamp));
  }
}

template <typename T>
__global__ void BiasActGradKernel(const T* g, const T* x, const T* b, const T* y, T* dx, int64_t total, int64_t inner,
                                  int64_t nb, int act, int order, float alpha, float gain, float clamp) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    float z = x ? static_cast<float>(x[i]) + (b && nb ? static_cast<float>(b[(i / inner) % nb]) : 0.f) : 0.f;
    float yv = y ? static_cast<float>(y[i]) : 0.f;
    dx[i] = static_cast<T>(afgan::bias_act_grad_elem(act, order, static_cast<float>(g[i]), z, yv, alpha, gain, clamp,
                                                     y != nullptr));
  }
}

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
    auto stream = ctx->eigen_device<GPUDevice>().stream();
    BiasActKernel<T><<<Blocks(x.NumElements()), kThreads, 0, stream>>>(
        x.flat<T>().data(), nb ? b.flat<T>().data() : nullptr, y->flat<T>().data(), x.NumElements(),
        inner, nb, a_.act, a_.alpha, a_.gain, a_.clamp);
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
    auto stream = ctx->eigen_device<GPUDevice>().stream();
    BiasActGradKernel<T><<<Blocks(g.NumElements()), kThreads, 0, stream>>>(
        g.flat<T>().data(), has_x ? x.flat<T>().data() : nullptr, nb ? b.flat<T>().data() : nullptr,
        has_y ? y.flat<T>().data() : nullptr, dx->flat<T>().data(), g.NumElements(),
        inner, nb, a_.act, order_, a_.alpha, a_.gain, a_.clamp);
  }

 private:
  afgan_ops::BiasActAttrs a_;
  int order_;
};

// ------------------------------------------------------------------------------------------------ filtered_lrelu
struct FlGeom {
  int N, C, srcH, srcW, hiH, hiW, outH, outW;
  int upx, upy, downx, downy, px0, py0;
  float gain, slope, clamp;  // clamp: +inf when none
  int code_bytes;
};

// Kernel A. mode 0: forward (x + b -> polyphase up -> nonlinearity, write code);
// mode 1: adjoint of the gradient (x-shaped input, forward tables, code mask instead of the nonlinearity);
// mode 2: gradient (dy -> adjoint of the down stage -> code mask).
template <typename T>
__global__ void FlreluHighKernel(const T* __restrict__ src, const T* __restrict__ bias, float* __restrict__ hi,
                                 uint8_t* __restrict__ code_w, const uint8_t* __restrict__ code_r, DevFilter fa,
                                 FlGeom g, int mode) {
  const int quads = (g.C + 3) / 4;
  const int64_t total = static_cast<int64_t>(g.N) * g.hiH * g.hiW * quads;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int q = i % quads;
    const int jx = (i / quads) % g.hiW;
    const int jy = (i / (static_cast<int64_t>(quads) * g.hiW)) % g.hiH;
    const int n = i / (static_cast<int64_t>(quads) * g.hiW * g.hiH);
    const int64_t pix = (static_cast<int64_t>(n) * g.hiH + jy) * g.hiW + jx;
    uint32_t packed = 0;
    const uint8_t cbyte = code_r ? code_r[pix * g.code_bytes + q] : 0;
    for (int e = 0; e < 4; ++e) {
      const int c = 4 * q + e;
      if (c >= g.C) break;
      float acc = 0.f;
      if (mode != 2) {  // polyphase upsampling of the source
        const float bc = bias ? static_cast<float>(bias[c]) : 0.f;
        for (int ky = afgan::first_tap(jy, 1, g.upy, g.py0); ky < fa.h; ky += g.upy) {
          const int iy = afgan::floor_div(jy + ky - g.py0, g.upy);
          if (iy < 0 || iy >= g.srcH) continue;
          for (int kx = afgan::first_tap(jx, 1, g.upx, g.px0); kx < fa.w; kx += g.upx) {
            const int ix = afgan::floor_div(jx + kx - g.px0, g.upx);
            if (ix < 0 || ix >= g.srcW) continue;
            acc += fa.at(ky, kx) *
                   (static_cast<float>(src[((static_cast<int64_t>(n) * g.srcH + iy) * g.srcW + ix) * g.C + c]) + bc);
          }
        }
      } else {  // adjoint of the down stage: dT[j] = sum_{o*down + k = j} g[k] dy[o]
        for (int ky = afgan::floor_mod(jy, g.downy); ky < fa.h; ky += g.downy) {
          const int oy = (jy - ky) / g.downy;
          if (oy < 0 || oy >= g.srcH) continue;
          for (int kx = afgan::floor_mod(jx, g.downx); kx < fa.w; kx += g.downx) {
            const int ox = (jx - kx) / g.downx;
            if (ox < 0 || ox >= g.srcW) continue;
            acc += fa.at(ky, kx) * static_cast<float>(src[((static_cast<int64_t>(n) * g.srcH + oy) * g.srcW + ox) * g.C + c]);
          }
        }
      }
      float v;
      if (mode == 0) {
        uint8_t code;
        v = afgan::flrelu_forward_elem(acc, g.gain, g.slope, g.clamp, &code);
        packed |= static_cast<uint32_t>(code) << (2 * e);
      } else {
        v = acc * afgan::flrelu_code_scale((cbyte >> (2 * e)) & 3u, g.gain, g.slope);
      }
      hi[pix * g.C + c] = v;
    }
    if (code_w) code_w[pix * g.code_bytes + q] = static_cast<uint8_t>(packed);
  }
}

// Kernel B. mode 0/1: FIR + decimation of the high-rate buffer (forward tables);
// mode 2: adjoint of the upsampling stage: dx[i] = sum_k g[k] dT[i*up + p0 - k].
template <typename T>
__global__ void FlreluLowKernel(const float* __restrict__ hi, T* __restrict__ out, DevFilter fb, FlGeom g, int mode) {
  const int64_t total = static_cast<int64_t>(g.N) * g.outH * g.outW * g.C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int c = i % g.C;
    const int ox = (i / g.C) % g.outW;
    const int oy = (i / (static_cast<int64_t>(g.C) * g.outW)) % g.outH;
    const int n = i / (static_cast<int64_t>(g.C) * g.outW * g.outH);
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
}

// Kernel parameters from the op attrs (the sizes are filled in by the op).
FlGeom GeomFromAttrs(const afgan_ops::FlreluAttrs& a) {
  FlGeom g{};
  g.upx = a.upx; g.upy = a.upy; g.downx = a.downx; g.downy = a.downy; g.px0 = a.px0; g.py0 = a.py0;
  g.gain = a.gain; g.slope = a.slope;
  g.clamp = a.clamp >= 0.f ? a.clamp : __builtin_huge_valf();
  return g;
}

using afgan::tile::flrelu_out_size;

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
    DevFilter FU = MakeFilter(fu, a_.flip, static_cast<float>(a_.upx * a_.upy)), FD = MakeFilter(fd, a_.flip, 1.f);
    FlGeom g = GeomFromAttrs(a_);
    g.N = x.dim_size(0); g.srcH = x.dim_size(1); g.srcW = x.dim_size(2); g.C = x.dim_size(3);
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFlreluBias(b, g.C, "filtered_lrelu"));
    g.outH = flrelu_out_size(g.srcH, a_.upy, a_.downy, a_.py0, a_.py1, FU.h, FD.h);
    g.outW = flrelu_out_size(g.srcW, a_.upx, a_.downx, a_.px0, a_.px1, FU.w, FD.w);
    OP_REQUIRES(ctx, g.outH >= 1 && g.outW >= 1, errors::InvalidArgument("filtered_lrelu: output would be empty"));
    g.hiH = (g.outH - 1) * a_.downy + FD.h;
    g.hiW = (g.outW - 1) * a_.downx + FD.w;
    g.code_bytes = (g.C + 3) / 4;
    Tensor* y = nullptr;
    Tensor* code = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({g.N, g.outH, g.outW, g.C}), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({g.N, g.hiH, g.hiW, g.code_bytes}), &code));
    Tensor hi;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_FLOAT, TensorShape({g.N, g.hiH, g.hiW, g.C}), &hi));
    if (y->NumElements() == 0) return;
    auto stream = ctx->eigen_device<GPUDevice>().stream();
    const int64_t na = static_cast<int64_t>(g.N) * g.hiH * g.hiW * g.code_bytes;
    FlreluHighKernel<T><<<Blocks(na), kThreads, 0, stream>>>(x.flat<T>().data(), b.NumElements() ? b.flat<T>().data() : nullptr,
                                                            hi.flat<float>().data(), code->flat<uint8_t>().data(), nullptr,
                                                            FU, g, 0);
    FlreluLowKernel<T><<<Blocks(y->NumElements()), kThreads, 0, stream>>>(hi.flat<float>().data(), y->flat<T>().data(),
                                                                          FD, g, 0);
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
    DevFilter FU = MakeFilter(fu, a_.flip, static_cast<float>(a_.upx * a_.upy)), FD = MakeFilter(fd, a_.flip, 1.f);
    FlGeom g = GeomFromAttrs(a_);
    g.N = dy.dim_size(0); g.C = dy.dim_size(3);
    int H = 0, W = 0, oh = 0, ow = 0;
    OP_REQUIRES_OK(ctx, afgan_ops::FlreluGradSizes(dy, xs, adjoint_, a_, FU.w, FU.h, FD.w, FD.h, "filtered_lrelu grad",
                                                   &H, &W, &oh, &ow));
    g.hiH = (oh - 1) * a_.downy + FD.h;
    g.hiW = (ow - 1) * a_.downx + FD.w;
    g.code_bytes = (g.C + 3) / 4;
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFlreluCode(code, g.N, g.hiH, g.hiW, g.C, "filtered_lrelu grad"));
    Tensor* out = nullptr;
    const int outH = adjoint_ ? oh : H, outW = adjoint_ ? ow : W;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({g.N, outH, outW, g.C}), &out));
    Tensor hi;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_FLOAT, TensorShape({g.N, g.hiH, g.hiW, g.C}), &hi));
    if (out->NumElements() == 0) return;
    auto stream = ctx->eigen_device<GPUDevice>().stream();
    const int64_t na = static_cast<int64_t>(g.N) * g.hiH * g.hiW * g.code_bytes;
    g.srcH = dy.dim_size(1); g.srcW = dy.dim_size(2);
    g.outH = outH; g.outW = outW;
    const int mode = adjoint_ ? 1 : 2;
    FlreluHighKernel<T><<<Blocks(na), kThreads, 0, stream>>>(dy.flat<T>().data(), nullptr, hi.flat<float>().data(),
                                                            nullptr, code.flat<uint8_t>().data(), adjoint_ ? FU : FD, g,
                                                            mode);
    FlreluLowKernel<T><<<Blocks(out->NumElements()), kThreads, 0, stream>>>(hi.flat<float>().data(),
                                                                            out->flat<T>().data(), adjoint_ ? FD : FU,
                                                                            g, mode);
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
