// filtered_lrelu: fused bias + upsample (FIR) + gain/leaky-ReLU/clamp + downsample (FIR), NHWC.
//
// Ops:
//   AfganFilteredLrelu(x, fu, fd, b) -> (y, code)
//   AfganFilteredLreluGrad(dy, fu, fd, code, x_shape; adjoint) -> dx
// Filters are float32, rank 1 (separable: the same taps along x and y) or rank 2 [fh, fw]; an identity
// filter is the 1-tap rank-1 filter [1]. `code` holds 2 bits per high-rate sample ([N, Hs, Ws, ceil(C/4)]
// uint8, four channels per byte): 0 passed, 1 negative (gradient x slope), 2 clamped (gradient 0).
//
// CPU kernel design (one pass per tile; docs/ALGORITHM.md §1.4, §1.5):
//   work unit = (sample n, block of CB channels, tile of output rows); units run on TF's intra-op pool.
//   1. load the input rows the tile needs (+ bias) into a [rows, cols, CB] buffer;
//   2. stage A (rate increase): polyphase FIR from precomputed tap tables (no zero-stuffing):
//      separable = x pass then y pass, 2-D = one pass;
//   3. nonlinearity in place (forward: gain, lrelu, clamp, write the 2-bit code for the rows the tile
//      owns) or, in the gradient, multiply by the gain/slope/0 read from the code;
//   4. stage B (rate decrease): FIR evaluated only at the kept samples (separable or 2-D);
//   5. write the output tile.
// The gradient runs the same engine with the adjoint tap tables (dy -> high rate -> dx) and the roles
// of fu/fd swapped; its adjoint (for second order) runs the forward tables with the code mask.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "afgan_common.h"
#include "cpu_isa.h"
#include "cpu_taps.h"
#include "filtered_lrelu_cpu.h"
#include "op_attrs.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;
using afgan::tile::flrelu_out_size;
using afgan_ops::InferFilterSize;

REGISTER_OP("AfganFilteredLrelu")
    .Input("x: T")
    .Input("fu: float")
    .Input("fd: float")
    .Input("b: T")
    .Output("y: T")
    .Output("code: uint8")
    .Attr("T: {float, half}")
    .Attr("upx: int >= 1")
    .Attr("upy: int >= 1")
    .Attr("downx: int >= 1")
    .Attr("downy: int >= 1")
    .Attr("px0: int")
    .Attr("px1: int")
    .Attr("py0: int")
    .Attr("py1: int")
    .Attr("gain: float")
    .Attr("slope: float")
    .Attr("clamp: float")  // < 0: no clamping
    .Attr("flip_filter: bool")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      afgan_ops::UpDownPad a;
      TF_RETURN_IF_ERROR(afgan_ops::ReadUpDownPad(c, &a));
      int64_t fuw, fuh, fdw, fdh;
      InferFilterSize(c, 1, &fuw, &fuh);
      InferFilterSize(c, 2, &fdw, &fdh);
      DimensionHandle oh = c->UnknownDim(), ow = c->UnknownDim(), hs = c->UnknownDim(),
                      ws = c->UnknownDim(), cb = c->UnknownDim();
      DimensionHandle h = c->Dim(x, 1), w = c->Dim(x, 2), ch = c->Dim(x, 3);
      if (c->ValueKnown(h) && fuh > 0 && fdh > 0) {
        int64_t o = flrelu_out_size(c->Value(h), a.upy, a.downy, a.py0, a.py1, fuh, fdh);
        if (o < 1) return errors::InvalidArgument("filtered_lrelu: output height would be < 1");
        oh = c->MakeDim(o);
        hs = c->MakeDim((o - 1) * a.downy + fdh);
      }
      if (c->ValueKnown(w) && fuw > 0 && fdw > 0) {
        int64_t o = flrelu_out_size(c->Value(w), a.upx, a.downx, a.px0, a.px1, fuw, fdw);
        if (o < 1) return errors::InvalidArgument("filtered_lrelu: output width would be < 1");
        ow = c->MakeDim(o);
        ws = c->MakeDim((o - 1) * a.downx + fdw);
      }
      if (c->ValueKnown(ch)) cb = c->MakeDim((c->Value(ch) + 3) / 4);
      c->set_output(0, c->MakeShape({c->Dim(x, 0), oh, ow, ch}));
      c->set_output(1, c->MakeShape({c->Dim(x, 0), hs, ws, cb}));
      return OkStatus();
    });

REGISTER_OP("AfganFilteredLreluGrad")
    .Input("dy: T")
    .Input("fu: float")
    .Input("fd: float")
    .Input("code: uint8")
    .Input("x_shape: int32")  // [4] shape of the forward x (used when adjoint = false)
    .Output("dx: T")
    .Attr("T: {float, half}")
    .Attr("upx: int >= 1")
    .Attr("upy: int >= 1")
    .Attr("downx: int >= 1")
    .Attr("downy: int >= 1")
    .Attr("px0: int")
    .Attr("px1: int")
    .Attr("py0: int")
    .Attr("py1: int")
    .Attr("gain: float")
    .Attr("slope: float")
    .Attr("flip_filter: bool")
    .Attr("adjoint: bool = false")  // true: map x-shaped input to y-shaped output (2nd order)
    .SetShapeFn([](InferenceContext* c) {
      bool adjoint;
      TF_RETURN_IF_ERROR(c->GetAttr("adjoint", &adjoint));
      ShapeHandle d;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &d));
      if (!adjoint) {
        ShapeHandle out;
        TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(4, &out));
        TF_RETURN_IF_ERROR(c->WithRank(out, 4, &out));
        c->set_output(0, out);
        return OkStatus();
      }
      ShapeHandle code;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 4, &code));
      int downx, downy;
      TF_RETURN_IF_ERROR(c->GetAttr("downx", &downx));
      TF_RETURN_IF_ERROR(c->GetAttr("downy", &downy));
      int64_t fdw, fdh;
      InferFilterSize(c, 2, &fdw, &fdh);
      DimensionHandle oh = c->UnknownDim(), ow = c->UnknownDim();
      DimensionHandle hs = c->Dim(code, 1), ws = c->Dim(code, 2);
      if (c->ValueKnown(hs) && fdh > 0) oh = c->MakeDim((c->Value(hs) - fdh) / downy + 1);
      if (c->ValueKnown(ws) && fdw > 0) ow = c->MakeDim((c->Value(ws) - fdw) / downx + 1);
      c->set_output(0, c->MakeShape({c->Dim(d, 0), oh, ow, c->Dim(d, 3)}));
      return OkStatus();
    });

namespace {
using afgan::Taps;
using afgan_flrelu::FilterInfo;
using afgan_flrelu::Geometry;
using afgan_flrelu::Mid;

// Reads a rank-1/rank-2 filter tensor into correlation form (flip unless flip_filter), scaling the
// x/y passes by gx_scale/gy_scale (separable) or the 2-D filter by their product.
Status ReadFilter(const Tensor& f, const char* name, bool flip_filter, float gx_scale, float gy_scale,
                  FilterInfo* out) {
  TF_RETURN_IF_ERROR(afgan_ops::CheckFilter(f, name));
  auto v = f.flat<float>();
  if (f.dims() == 1) {
    int n = static_cast<int>(f.dim_size(0));
    out->sep = true;
    out->w = out->h = n;
    out->gx.resize(n);
    out->gy.resize(n);
    for (int k = 0; k < n; ++k) {
      float t = flip_filter ? v(k) : v(n - 1 - k);
      out->gx[k] = t * gx_scale;
      out->gy[k] = t * gy_scale;
    }
  } else {
    int h = static_cast<int>(f.dim_size(0)), w = static_cast<int>(f.dim_size(1));
    out->sep = false;
    out->w = w;
    out->h = h;
    out->g2.resize(static_cast<size_t>(w) * h);
    for (int ky = 0; ky < h; ++ky)
      for (int kx = 0; kx < w; ++kx) {
        float t = flip_filter ? v(ky * w + kx) : v((h - 1 - ky) * w + (w - 1 - kx));
        out->g2[ky * w + kx] = t * gx_scale * gy_scale;
      }
  }
  return OkStatus();
}

// The engine of the ISA level chosen at load (cpu_isa.cc), on TF's intra-op pool.
void RunEngine(OpKernelContext* ctx, const Geometry& g, int down_y, const float* src, const float* bias,
               float* out, uint8_t* code_w, const uint8_t* code_r) {
  const auto* wt = ctx->device()->tensorflow_cpu_worker_threads();
  afgan_flrelu::ParallelFor pf = [wt](int64_t units, int64_t cost, const std::function<void(int64_t, int64_t)>& fn) {
    wt->workers->ParallelFor(units, cost, fn);
  };
  afgan_isa::FlreluEngine()(g, down_y, wt->num_threads, pf, src, bias, out, code_w, code_r);
}

// True when the streaming engine (separable filters) writes every byte of the code tensor: every
// high-rate column lies in the range the down filter reads and has source taps, and every high-rate row
// is read by some output row and has source taps.
bool CodeFullyWritten(const Geometry& g) {
  if (!g.fa->sep || !g.fb->sep || g.hiH < 1 || g.hiW < 1) return false;
  int lo, hi;
  g.Bx.src_range(0, g.outW, &lo, &hi);
  if (lo != 0 || hi != g.hiW) return false;
  for (int j = 0; j < g.hiW; ++j)
    if (g.Ax.begin(j) >= g.Ax.end(j)) return false;
  std::vector<char> used(g.hiH, 0);
  for (int J : g.By.idx) used[J] = 1;
  for (int J = 0; J < g.hiH; ++J)
    if (!used[J] || g.Ay.begin(J) >= g.Ay.end(J)) return false;
  return true;
}

using afgan_ops::FlreluAttrs;

class FilteredLreluOpCPU : public OpKernel {
 public:
  explicit FilteredLreluOpCPU(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, afgan_ops::ReadFlreluAttrs(ctx, true, &a_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& fu = ctx->input(1);
    const Tensor& fd = ctx->input(2);
    const Tensor& b = ctx->input(3);
    OP_REQUIRES_OK(ctx, afgan_ops::CheckNHWC(x, "filtered_lrelu: x"));
    const int N = x.dim_size(0), H = x.dim_size(1), W = x.dim_size(2), C = x.dim_size(3);
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFlreluBias(b, C, "filtered_lrelu"));
    FilterInfo FU, FD;
    OP_REQUIRES_OK(ctx, ReadFilter(fu, "fu", a_.flip, a_.upx, a_.upy, &FU));
    OP_REQUIRES_OK(ctx, ReadFilter(fd, "fd", a_.flip, 1.f, 1.f, &FD));
    const int64_t oh = flrelu_out_size(H, a_.upy, a_.downy, a_.py0, a_.py1, FU.h, FD.h);
    const int64_t ow = flrelu_out_size(W, a_.upx, a_.downx, a_.px0, a_.px1, FU.w, FD.w);
    OP_REQUIRES(ctx, oh >= 1 && ow >= 1,
                errors::InvalidArgument("filtered_lrelu: output would be empty (", oh, " x ", ow, ") for x ",
                                        x.shape().DebugString(), " and the given up/down/padding/filters"));
    Geometry g;
    g.N = N; g.C = C; g.srcH = H; g.srcW = W;
    g.outH = oh; g.outW = ow;
    g.hiH = (oh - 1) * a_.downy + FD.h;
    g.hiW = (ow - 1) * a_.downx + FD.w;
    g.Ax = afgan::taps_upfirdn(W, g.hiW, a_.upx, 1, a_.px0, FU.w);
    g.Ay = afgan::taps_upfirdn(H, g.hiH, a_.upy, 1, a_.py0, FU.h);
    g.Bx = afgan::taps_upfirdn(g.hiW, ow, 1, a_.downx, 0, FD.w);
    g.By = afgan::taps_upfirdn(g.hiH, oh, 1, a_.downy, 0, FD.h);
    g.fa = &FU; g.fb = &FD;
    g.mid = Mid::kForward;
    g.gain = a_.gain; g.slope = a_.slope; g.clamp = a_.clamp;

    Tensor* y = nullptr;
    Tensor* code = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({N, oh, ow, C}), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({N, g.hiH, g.hiW, (C + 3) / 4}), &code));
    if (y->NumElements() == 0) return;
    // The streaming engine writes every code byte when the filters' footprint covers the whole high-rate
    // grid (the usual case); zero the tensor first only otherwise.
    if (!CodeFullyWritten(g)) std::memset(code->flat<uint8_t>().data(), 0, code->NumElements());
    RunEngine(ctx, g, a_.downy, x.flat<float>().data(), b.dim_size(0) ? b.flat<float>().data() : nullptr,
              y->flat<float>().data(), code->flat<uint8_t>().data(), nullptr);
  }

 private:
  FlreluAttrs a_;
};

class FilteredLreluGradOpCPU : public OpKernel {
 public:
  explicit FilteredLreluGradOpCPU(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, afgan_ops::ReadFlreluAttrs(ctx, false, &a_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("adjoint", &adjoint_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& fu = ctx->input(1);
    const Tensor& fd = ctx->input(2);
    const Tensor& code = ctx->input(3);
    const Tensor& xs = ctx->input(4);
    FilterInfo FU, FD;
    OP_REQUIRES_OK(ctx, ReadFilter(fu, "fu", a_.flip, a_.upx, a_.upy, &FU));
    OP_REQUIRES_OK(ctx, ReadFilter(fd, "fd", a_.flip, 1.f, 1.f, &FD));
    int H = 0, W = 0, oh = 0, ow = 0;  // forward x size and forward y size
    OP_REQUIRES_OK(ctx, afgan_ops::FlreluGradSizes(dy, xs, adjoint_, a_, FU.w, FU.h, FD.w, FD.h, "filtered_lrelu grad",
                                                   &H, &W, &oh, &ow));
    const int N = dy.dim_size(0), C = dy.dim_size(3);
    const int hiH = (oh - 1) * a_.downy + FD.h, hiW = (ow - 1) * a_.downx + FD.w;
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFlreluCode(code, N, hiH, hiW, C, "filtered_lrelu grad"));
    Geometry g;
    g.N = N; g.C = C; g.hiH = hiH; g.hiW = hiW;
    g.mid = Mid::kMask;
    g.gain = a_.gain; g.slope = a_.slope;
    if (!adjoint_) {
      g.srcH = oh; g.srcW = ow; g.outH = H; g.outW = W;
      g.Ax = afgan::taps_upfirdn_adjoint(hiW, ow, 1, a_.downx, 0, FD.w);
      g.Ay = afgan::taps_upfirdn_adjoint(hiH, oh, 1, a_.downy, 0, FD.h);
      g.Bx = afgan::taps_upfirdn_adjoint(W, hiW, a_.upx, 1, a_.px0, FU.w);
      g.By = afgan::taps_upfirdn_adjoint(H, hiH, a_.upy, 1, a_.py0, FU.h);
      g.fa = &FD; g.fb = &FU;
    } else {
      g.srcH = H; g.srcW = W; g.outH = oh; g.outW = ow;
      g.Ax = afgan::taps_upfirdn(W, hiW, a_.upx, 1, a_.px0, FU.w);
      g.Ay = afgan::taps_upfirdn(H, hiH, a_.upy, 1, a_.py0, FU.h);
      g.Bx = afgan::taps_upfirdn(hiW, ow, 1, a_.downx, 0, FD.w);
      g.By = afgan::taps_upfirdn(hiH, oh, 1, a_.downy, 0, FD.h);
      g.fa = &FU; g.fb = &FD;
    }
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({N, g.outH, g.outW, C}), &out));
    if (out->NumElements() == 0) return;
    RunEngine(ctx, g, 1, dy.flat<float>().data(), nullptr, out->flat<float>().data(), nullptr,
              code.flat<uint8_t>().data());
  }

 private:
  FlreluAttrs a_;
  bool adjoint_ = false;
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("AfganFilteredLrelu").Device(DEVICE_CPU).TypeConstraint<float>("T"), FilteredLreluOpCPU);
REGISTER_KERNEL_BUILDER(Name("AfganFilteredLreluGrad").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        FilteredLreluGradOpCPU);

}  // namespace tensorflow
