// bias_act: y = clamp(gain * act(x + b), -clamp, clamp), b broadcast along `axis`; plus its gradient op.
//
// Ops:
//   AfganBiasAct(x, b) -> y
//   AfganBiasActGrad(dy, x, b, y; order) -> dx = dy * gain * act^(order)(x + b) * [|y| < clamp]
// For linear/relu/lrelu the first derivative comes from y alone (x may be passed as an empty tensor) and
// the second derivative is 0; other activations need x (and y only when clamping). The Python gradient
// of AfganBiasActGrad is again AfganBiasActGrad (order + 1 w.r.t. x), so second-order gradients work.
// CPU kernel: specialised per activation / clamp (templates), bias read per row segment, vectorised
// branch-free inner loops over flat element ranges shared on TF's intra-op thread pool, output written in
// place when the input buffer can be forwarded. The per-element math lives in afgan_common.h (shared with
// the CUDA kernel).
#include <algorithm>
#include <cmath>
#include <string>

#include "afgan_common.h"
#include "op_attrs.h"
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

using afgan_ops::BiasActAttrs;
using afgan_ops::BiasLayout;

// ------------------------------------------------------------------------------------------------
// CPU loops. The activation and the clamp are template parameters (the per-element switch of
// afgan_common.h folds away), the bias is read per [row, C] segment (no per-element index arithmetic),
// and the inner loops are branch-free so they vectorise. Work is split over flat element ranges
// [begin, end) on TF's intra-op pool; a range may start and end anywhere inside a bias row.

template <int A, bool CL>
AFGAN_HD float FwdElem(float z, float alpha, float gain, float clamp) {
  float v = afgan::act_forward(A, z, alpha) * gain;
  if (CL) v = v > clamp ? clamp : (v < -clamp ? -clamp : v);
  return v;
}

// y[i] = f(x[i] + bias), bias = b[c] (inner == 1: bias on the last axis) or b[(i / inner) % nb].
template <int A, bool CL>
void FwdRange(const float* x, const float* b, float* y, int64_t begin, int64_t end, int64_t inner, int64_t nb,
              float alpha, float gain, float clamp) {
  if (b == nullptr) {
#pragma GCC ivdep
    for (int64_t i = begin; i < end; ++i) y[i] = FwdElem<A, CL>(x[i], alpha, gain, clamp);
    return;
  }
  int64_t i = begin;
  if (inner == 1) {
    int64_t c = begin % nb;
    while (i < end) {
      const int64_t n = std::min(end - i, nb - c);
      const float* xs = x + i;
      const float* bs = b + c;
      float* ys = y + i;
#pragma GCC ivdep
      for (int64_t j = 0; j < n; ++j) ys[j] = FwdElem<A, CL>(xs[j] + bs[j], alpha, gain, clamp);
      i += n;
      c = 0;
    }
  } else {
    int64_t seg = begin / inner, off = begin % inner;
    while (i < end) {
      const int64_t n = std::min(end - i, inner - off);
      const float bv = b[seg % nb];
      const float* xs = x + i;
      float* ys = y + i;
#pragma GCC ivdep
      for (int64_t j = 0; j < n; ++j) ys[j] = FwdElem<A, CL>(xs[j] + bv, alpha, gain, clamp);
      i += n;
      off = 0;
      ++seg;
    }
  }
}

// Backward, y-only activations (linear/relu/lrelu; order 1 -- order 2 is 0 and handled by the generic
// path): dx = dy * gain * slope(y) * [|y| < clamp]. No bias, no x: a flat element-wise loop.
template <int A, bool CL>
void GradYOnlyRange(const float* g, const float* yv, float* dx, int64_t begin, int64_t end, float alpha, float gain,
                    float clamp) {
#pragma GCC ivdep
  for (int64_t i = begin; i < end; ++i) {
    const float y = (A == afgan::kLinear && !CL) ? 0.f : yv[i];
    const float r = g[i] * gain * afgan::act_deriv1(A, 0.f, y, alpha);
    dx[i] = (CL && std::fabs(y) >= clamp) ? 0.f : r;
  }
}

// Backward, activations that need z = x + b (and every order-2 call; rare in the networks): the shared
// per-element math, walking the same bias segments as FwdRange.
void GradGenericRange(int act, int order, const float* g, const float* x, const float* b, const float* yv, float* dx,
                      int64_t begin, int64_t end, int64_t inner, int64_t nb, float alpha, float gain, float clamp) {
  const bool has_y = yv != nullptr;
  auto elem = [&](int64_t k, float bv) {
    const float z = x ? x[k] + bv : 0.f;
    dx[k] = afgan::bias_act_grad_elem(act, order, g[k], z, has_y ? yv[k] : 0.f, alpha, gain, clamp, has_y);
  };
  if (b == nullptr || x == nullptr) {
    for (int64_t i = begin; i < end; ++i) elem(i, 0.f);
    return;
  }
  int64_t i = begin;
  if (inner == 1) {
    int64_t c = begin % nb;
    while (i < end) {
      const int64_t n = std::min(end - i, nb - c);
      for (int64_t j = 0; j < n; ++j) elem(i + j, b[c + j]);
      i += n;
      c = 0;
    }
  } else {
    int64_t seg = begin / inner, off = begin % inner;
    while (i < end) {
      const int64_t n = std::min(end - i, inner - off);
      const float bv = b[seg % nb];
      for (int64_t j = 0; j < n; ++j) elem(i + j, bv);
      i += n;
      off = 0;
      ++seg;
    }
  }
}

// Runs fn(begin, end) over [0, total) on the intra-op pool; `cost` = estimated cycles per element.
template <typename Fn>
void ParallelElems(OpKernelContext* ctx, int64_t total, int64_t cost, const Fn& fn) {
  if (total <= 0) return;
  if (total * cost < 32768) {  // too small to be worth a thread hand-off
    fn(0, total);
    return;
  }
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  workers->ParallelFor(total, cost, [&](int64_t begin, int64_t end) { fn(begin, end); });
}

using FwdFn = void (*)(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t, float, float, float);
using GradFn = void (*)(const float*, const float*, float*, int64_t, int64_t, float, float, float);

template <int A>
FwdFn PickFwd(bool cl) { return cl ? &FwdRange<A, true> : &FwdRange<A, false>; }

FwdFn SelectFwd(int act, bool cl) {
  switch (act) {
    case afgan::kLinear: return PickFwd<afgan::kLinear>(cl);
    case afgan::kRelu: return PickFwd<afgan::kRelu>(cl);
    case afgan::kLrelu: return PickFwd<afgan::kLrelu>(cl);
    case afgan::kTanh: return PickFwd<afgan::kTanh>(cl);
    case afgan::kSigmoid: return PickFwd<afgan::kSigmoid>(cl);
    case afgan::kElu: return PickFwd<afgan::kElu>(cl);
    case afgan::kSelu: return PickFwd<afgan::kSelu>(cl);
    case afgan::kSoftplus: return PickFwd<afgan::kSoftplus>(cl);
    case afgan::kSwish: return PickFwd<afgan::kSwish>(cl);
  }
  return nullptr;
}

GradFn SelectGradYOnly(int act, bool cl) {
  switch (act) {
    case afgan::kLinear: return cl ? &GradYOnlyRange<afgan::kLinear, true> : &GradYOnlyRange<afgan::kLinear, false>;
    case afgan::kRelu: return cl ? &GradYOnlyRange<afgan::kRelu, true> : &GradYOnlyRange<afgan::kRelu, false>;
    case afgan::kLrelu: return cl ? &GradYOnlyRange<afgan::kLrelu, true> : &GradYOnlyRange<afgan::kLrelu, false>;
  }
  return nullptr;
}

// Cycles per element for the pool's cost model: memory-bound for the piecewise-linear activations,
// transcendental (exp/tanh, scalar) for the others.
int64_t ElemCost(int act) { return afgan::act_uses_y_only(act) ? 4 : 40; }

class BiasActOpCPU : public OpKernel {
 public:
  explicit BiasActOpCPU(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, afgan_ops::ReadBiasActAttrs(ctx, &a_));
    fwd_ = SelectFwd(a_.act, a_.clamp >= 0.f);
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& b = ctx->input(1);
    int64_t inner, nb;
    OP_REQUIRES_OK(ctx, BiasLayout(x, b, a_.axis, &inner, &nb));
    Tensor* y = nullptr;
    // Writes in place into x's buffer when nobody else holds it (each element is read before it is written).
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &y));
    const float* xp = x.flat<float>().data();
    const float* bp = nb ? b.flat<float>().data() : nullptr;
    float* yp = y->flat<float>().data();
    const BiasActAttrs a = a_;
    const FwdFn fwd = fwd_;
    ParallelElems(ctx, x.NumElements(), ElemCost(a.act), [&](int64_t begin, int64_t end) {
      fwd(xp, bp, yp, begin, end, inner, nb, a.alpha, a.gain, a.clamp);
    });
  }

 private:
  BiasActAttrs a_;
  FwdFn fwd_ = nullptr;
};

class BiasActGradOpCPU : public OpKernel {
 public:
  explicit BiasActGradOpCPU(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, afgan_ops::ReadBiasActAttrs(ctx, &a_));
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
    // dx may overwrite dy in place (same index read before write).
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, dy.shape(), &dx));
    const float* gp = dy.flat<float>().data();
    const float* xp = need_x ? x.flat<float>().data() : nullptr;
    const float* bp = (need_x && nb) ? b.flat<float>().data() : nullptr;
    const float* yp = need_y ? y.flat<float>().data() : nullptr;
    float* dp = dx->flat<float>().data();
    const BiasActAttrs a = a_;
    const int order = order_;
    const int64_t total = dy.NumElements();
    if (y_only && order == 1) {
      const GradFn fn = SelectGradYOnly(a.act, a.clamp >= 0.f);
      ParallelElems(ctx, total, ElemCost(a.act), [&](int64_t begin, int64_t end) {
        fn(gp, yp, dp, begin, end, a.alpha, a.gain, a.clamp);
      });
      return;
    }
    ParallelElems(ctx, total, ElemCost(a.act), [&](int64_t begin, int64_t end) {
      GradGenericRange(a.act, order, gp, xp, bp, yp, dp, begin, end, inner, nb, a.alpha, a.gain, a.clamp);
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
