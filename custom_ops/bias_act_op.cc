// bias_act: y = clamp(gain * act(x + b), -clamp, clamp), b broadcast along `axis`; plus its gradient op.
//
// Ops:
//   AfganBiasAct(x, b) -> y
//   AfganBiasActGrad(dy, x, b, y; order) -> dx = dy * gain * act^(order)(x + b) * [|y| < clamp]
// For linear/relu/lrelu the first derivative comes from y alone (x may be passed as an empty tensor) and
// the second derivative is 0; other activations need x (and y only when clamping). The Python gradient
// of AfganBiasActGrad is again AfganBiasActGrad (order + 1 w.r.t. x), so second-order gradients work.
// CPU kernel: element-wise over the flattened tensor, chunks shared over TF's intra-op thread pool;
// the per-element math lives in afgan_common.h (shared with the CUDA kernel).
#include <string>

#include "afgan_common.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
using shape_inference::InferenceContext;

REGISTER_OP("AfganBiasAct")
    .Input("x: T")
    .Input("b: T")
    .Output("y: T")
    .Attr("T: {float, half}")
    .Attr("act: {'linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish'}")
    .Attr("alpha: float")
    .Attr("gain: float")
    .Attr("clamp: float")  // < 0: none
    .Attr("axis: int >= 0")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return OkStatus();
    });

REGISTER_OP("AfganBiasActGrad")
    .Input("dy: T")
    .Input("x: T")
    .Input("b: T")
    .Input("y: T")
    .Output("dx: T")
    .Attr("T: {float, half}")
    .Attr("act: {'linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish'}")
    .Attr("alpha: float")
    .Attr("gain: float")
    .Attr("clamp: float")
    .Attr("axis: int >= 0")
    .Attr("order: int = 1")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return OkStatus();
    });

namespace {

int ActCode(const std::string& a) {
  static const char* names[] = {"linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"};
  for (int i = 0; i < 9; ++i)
    if (a == names[i]) return i;
  return -1;
}

struct BiasActAttrs {
  int act = 0, axis = 1;
  float alpha, gain, clamp;
  Status Read(OpKernelConstruction* ctx) {
    std::string a;
    TF_RETURN_IF_ERROR(ctx->GetAttr("act", &a));
    act = ActCode(a);
    if (act < 0) return errors::InvalidArgument("bias_act: unknown act '", a, "'");
    TF_RETURN_IF_ERROR(ctx->GetAttr("alpha", &alpha));
    TF_RETURN_IF_ERROR(ctx->GetAttr("gain", &gain));
    TF_RETURN_IF_ERROR(ctx->GetAttr("clamp", &clamp));
    TF_RETURN_IF_ERROR(ctx->GetAttr("axis", &axis));
    return OkStatus();
  }
};

// Checks b against x and returns the stride ("inner" size) of the bias axis.
Status BiasLayout(const Tensor& x, const Tensor& b, int axis, int64_t* inner, int64_t* nb) {
  *nb = b.NumElements();
  *inner = 1;
  if (*nb == 0) return OkStatus();
  if (axis >= x.dims())
    return errors::InvalidArgument("bias_act: axis ", axis, " out of range for x of shape ", x.shape().DebugString());
  if (b.dims() != 1 || b.dim_size(0) != x.dim_size(axis))
    return errors::InvalidArgument("bias_act: b must be 1-D with x.shape[", axis, "] = ", x.dim_size(axis),
                                   " entries, got shape ", b.shape().DebugString());
  for (int d = axis + 1; d < x.dims(); ++d) *inner *= x.dim_size(d);
  return OkStatus();
}

class BiasActOpCPU : public OpKernel {
 public:
  explicit BiasActOpCPU(OpKernelConstruction* ctx) : OpKernel(ctx) { OP_REQUIRES_OK(ctx, a_.Read(ctx)); }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& b = ctx->input(1);
    int64_t inner, nb;
    OP_REQUIRES_OK(ctx, BiasLayout(x, b, a_.axis, &inner, &nb));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    const float* xp = x.flat<float>().data();
    const float* bp = nb ? b.flat<float>().data() : nullptr;
    float* yp = y->flat<float>().data();
    const BiasActAttrs a = a_;
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    workers->ParallelFor(x.NumElements(), 20, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        float z = xp[i] + (bp ? bp[(i / inner) % nb] : 0.f);
        yp[i] = afgan::bias_act_elem(a.act, z, a.alpha, a.gain, a.clamp);
      }
    });
  }

 private:
  BiasActAttrs a_;
};

class BiasActGradOpCPU : public OpKernel {
 public:
  explicit BiasActGradOpCPU(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, a_.Read(ctx));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("order", &order_));
    OP_REQUIRES(ctx, order_ == 1 || order_ == 2, errors::InvalidArgument("bias_act grad: order must be 1 or 2"));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& b = ctx->input(2);
    const Tensor& y = ctx->input(3);
    const bool y_only = afgan::act_uses_y_only(a_.act);
    const bool need_x = !y_only;
    const bool need_y = y_only ? (a_.act != afgan::kLinear || a_.clamp >= 0.f) : a_.clamp >= 0.f;
    OP_REQUIRES(ctx, !need_x || x.shape() == dy.shape(),
                errors::InvalidArgument("bias_act grad: x must have the shape of dy ", dy.shape().DebugString(),
                                        ", got ", x.shape().DebugString()));
    OP_REQUIRES(ctx, !need_y || y.shape() == dy.shape(),
                errors::InvalidArgument("bias_act grad: y must have the shape of dy ", dy.shape().DebugString(),
                                        ", got ", y.shape().DebugString()));
    int64_t inner = 1, nb = 0;
    if (need_x) OP_REQUIRES_OK(ctx, BiasLayout(x, b, a_.axis, &inner, &nb));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, dy.shape(), &dx));
    const float* gp = dy.flat<float>().data();
    const float* xp = need_x ? x.flat<float>().data() : nullptr;
    const float* bp = (need_x && nb) ? b.flat<float>().data() : nullptr;
    const float* yp = need_y ? y.flat<float>().data() : nullptr;
    float* dp = dx->flat<float>().data();
    const BiasActAttrs a = a_;
    const int order = order_;
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    workers->ParallelFor(dy.NumElements(), 20, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        float z = xp ? xp[i] + (bp ? bp[(i / inner) % nb] : 0.f) : 0.f;
        float yv = yp ? yp[i] : 0.f;
        dp[i] = afgan::bias_act_grad_elem(a.act, order, gp[i], z, yv, a.alpha, a.gain, a.clamp, yp != nullptr);
      }
    });
  }

 private:
  BiasActAttrs a_;
  int order_ = 1;
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("AfganBiasAct").Device(DEVICE_CPU).TypeConstraint<float>("T"), BiasActOpCPU);
REGISTER_KERNEL_BUILDER(Name("AfganBiasActGrad").Device(DEVICE_CPU).TypeConstraint<float>("T"), BiasActGradOpCPU);

#if defined(AFGAN_OPS_SOURCE_HASH_HEADER)
#include "custom_ops/afgan_source_hash.h"  // generated by the Bazel build
#endif
#ifndef AFGAN_OPS_SOURCE_HASH
#define AFGAN_OPS_SOURCE_HASH "unknown"
#endif

// Build identity of the library: ABI version and the hash of the sources it was compiled from
// (sha256 of the concatenated custom_ops/*.h, *.cc files in name order; set by setup.py / Bazel).
REGISTER_OP("AfganOpsInfo")
    .Output("abi_version: int32")
    .Output("source_hash: string")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->Scalar());
      c->set_output(1, c->Scalar());
      return OkStatus();
    });

class OpsInfoOp : public OpKernel {
 public:
  explicit OpsInfoOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    out->scalar<int32>()() = afgan::kOpsAbiVersion;
    Tensor* hash = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({}), &hash));
    hash->scalar<tstring>()() = AFGAN_OPS_SOURCE_HASH;
  }
};
REGISTER_KERNEL_BUILDER(Name("AfganOpsInfo").Device(DEVICE_CPU), OpsInfoOp);

}  // namespace tensorflow
