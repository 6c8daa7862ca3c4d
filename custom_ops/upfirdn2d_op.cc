// upfirdn2d: upsample (zero-stuff), pad/crop, FIR filter, downsample — NHWC, polyphase.
//
// Op: AfganUpfirdn2d(x [N, H, W, C], f float32 rank 1 (separable) or rank 2 [fh, fw]) -> y
// CPU kernel:
//   1. build per-axis tap tables (output index -> (input index, tap)); zero taps are never visited
//      and no zero-stuffed or padded copy of x exists;
//   2. rank-2 filter: one 2-D pass; rank-1 filter: an x pass into a temporary, then a y pass, each
//      scaled by sqrt(gain);
//   3. each pass: one work unit per output row, all channels vectorised (C is innermost in NHWC),
//      rows shared over TF's intra-op thread pool.
// The gradient (registered in Python) is another AfganUpfirdn2d with up/down swapped, flip negated and
// the adjoint padding, so gradients of any order exist.
#include <cmath>
#include <vector>

#include "afgan_common.h"
#include "cpu_taps.h"
#include "op_attrs.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

REGISTER_OP("AfganUpfirdn2d")
    .Input("x: T")
    .Input("f: float")
    .Output("y: T")
    .Attr("T: {float, half}")
    .Attr("upx: int >= 1")
    .Attr("upy: int >= 1")
    .Attr("downx: int >= 1")
    .Attr("downy: int >= 1")
    .Attr("px0: int")
    .Attr("px1: int")
    .Attr("py0: int")
    .Attr("py1: int")
    .Attr("flip_filter: bool")
    .Attr("gain: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      afgan_ops::UpDownPad a;
      TF_RETURN_IF_ERROR(afgan_ops::ReadUpDownPad(c, &a));
      int64_t fw, fh;
      afgan_ops::InferFilterSize(c, 1, &fw, &fh);
      DimensionHandle oh = c->UnknownDim(), ow = c->UnknownDim();
      if (c->ValueKnown(c->Dim(x, 1)) && fh > 0) {
        int64_t num = c->Value(c->Dim(x, 1)) * a.upy + a.py0 + a.py1 - fh;
        if (num < 0) return errors::InvalidArgument("upfirdn2d: output height would be < 1");
        oh = c->MakeDim(num / a.downy + 1);
      }
      if (c->ValueKnown(c->Dim(x, 2)) && fw > 0) {
        int64_t num = c->Value(c->Dim(x, 2)) * a.upx + a.px0 + a.px1 - fw;
        if (num < 0) return errors::InvalidArgument("upfirdn2d: output width would be < 1");
        ow = c->MakeDim(num / a.downx + 1);
      }
      c->set_output(0, c->MakeShape({c->Dim(x, 0), oh, ow, c->Dim(x, 3)}));
      return OkStatus();
    });

namespace {
using afgan::Taps;

// One 2-D polyphase pass: y[n, oy, ox, :] = sum_{(iy,ky) in ty[oy]} sum_{(ix,kx) in tx[ox]}
// g[ky * fw + kx] * x[n, iy, ix, :].
void Pass(OpKernelContext* ctx, const float* x, float* y, int N, int H, int W, int C, int OH, int OW,
          const Taps& ty, const Taps& tx, const std::vector<float>& g, int fw) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  const int64_t taps = std::max<int64_t>(1, (ty.idx.size() / std::max(1, OH)) * (tx.idx.size() / std::max(1, OW)));
  const int64_t cost = static_cast<int64_t>(OW) * C * taps * 2 + 1;
  workers->ParallelFor(static_cast<int64_t>(N) * OH, cost, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(C);
    for (int64_t r = begin; r < end; ++r) {
      const int n = static_cast<int>(r / OH), oy = static_cast<int>(r % OH);
      for (int ox = 0; ox < OW; ++ox) {
        std::fill(acc.begin(), acc.end(), 0.f);
        float* a = acc.data();
        for (int qy = ty.begin(oy); qy < ty.end(oy); ++qy) {
          const float* xrow = x + (static_cast<int64_t>(n) * H + ty.idx[qy]) * W * C;
          const float* frow = g.data() + static_cast<size_t>(ty.k[qy]) * fw;
          for (int qx = tx.begin(ox); qx < tx.end(ox); ++qx) {
            const float w = frow[tx.k[qx]];
            const float* s = xrow + static_cast<int64_t>(tx.idx[qx]) * C;
            for (int c = 0; c < C; ++c) a[c] += w * s[c];
          }
        }
        float* d = y + ((static_cast<int64_t>(n) * OH + oy) * OW + ox) * C;
        for (int c = 0; c < C; ++c) d[c] = a[c];
      }
    }
  });
}

Taps IdentityTaps(int n) {
  Taps t;
  t.ptr.push_back(0);
  for (int i = 0; i < n; ++i) { t.push(i, 0); t.close(); }
  return t;
}

class Upfirdn2dOpCPU : public OpKernel {
 public:
  explicit Upfirdn2dOpCPU(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, afgan_ops::ReadUpfirdn2dAttrs(ctx, &a_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& f = ctx->input(1);
    OP_REQUIRES_OK(ctx, afgan_ops::CheckNHWC(x, "upfirdn2d: x"));
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFilter(f, "upfirdn2d: f"));
    const int N = x.dim_size(0), H = x.dim_size(1), W = x.dim_size(2), C = x.dim_size(3);
    const bool sep = f.dims() == 1;
    const int fw = sep ? f.dim_size(0) : f.dim_size(1);
    const int fh = f.dim_size(0);
    int OH = 0, OW = 0;
    OP_REQUIRES_OK(ctx, afgan_ops::Upfirdn2dOutSize(x, a_, fw, fh, &OH, &OW));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({N, OH, OW, C}), &y));
    if (y->NumElements() == 0) return;
    auto v = f.flat<float>();
    const Taps tx = afgan::taps_upfirdn(W, OW, a_.upx, a_.downx, a_.px0, fw);
    const Taps ty = afgan::taps_upfirdn(H, OH, a_.upy, a_.downy, a_.py0, fh);
    if (!sep) {
      std::vector<float> g(static_cast<size_t>(fw) * fh);
      for (int ky = 0; ky < fh; ++ky)
        for (int kx = 0; kx < fw; ++kx)
          g[ky * fw + kx] = a_.gain * (a_.flip ? v(ky * fw + kx) : v((fh - 1 - ky) * fw + (fw - 1 - kx)));
      Pass(ctx, x.flat<float>().data(), y->flat<float>().data(), N, H, W, C, OH, OW, ty, tx, g, fw);
      return;
    }
    const float s = std::sqrt(a_.gain);
    std::vector<float> g(fw);
    for (int k = 0; k < fw; ++k) g[k] = s * (a_.flip ? v(k) : v(fw - 1 - k));
    Tensor tmp;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_FLOAT, TensorShape({N, H, OW, C}), &tmp));
    Pass(ctx, x.flat<float>().data(), tmp.flat<float>().data(), N, H, W, C, H, OW, IdentityTaps(H), tx, g, fw);
    Pass(ctx, tmp.flat<float>().data(), y->flat<float>().data(), N, H, OW, C, OH, OW, ty, IdentityTaps(OW), g, 1);
  }

 private:
  afgan_ops::Upfirdn2dAttrs a_;
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("AfganUpfirdn2d").Device(DEVICE_CPU).TypeConstraint<float>("T"), Upfirdn2dOpCPU);

}  // namespace tensorflow
