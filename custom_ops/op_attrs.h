// Host-only helpers shared by the op kernels of afgan-tf (CPU .cc files and the host side of the .cu.cc
// files, which nvcc compiles as host code): reading and validating op attributes, and the input checks
// the CPU, GPU and emulator kernels of one op have in common. No device code here; every check returns
// a Status whose message names the op, the input and the shape it got.
#ifndef AFGAN_TF_CUSTOM_OPS_OP_ATTRS_H_
#define AFGAN_TF_CUSTOM_OPS_OP_ATTRS_H_

#include <cstdint>
#include <string>

#include "afgan_common.h"
#include "filtered_lrelu_tile.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tensorflow {
namespace afgan_ops {

// ------------------------------------------------------------------------------------------------ attributes
// Reads the resampling attrs upx, upy, downx, downy, px0, px1, py0, py1 into the fields of the same names
// of *a. Ctx is OpKernelConstruction (kernels) or shape_inference::InferenceContext (shape functions).
template <typename Ctx, typename A>
Status ReadUpDownPad(Ctx* c, A* a) {
  TF_RETURN_IF_ERROR(c->GetAttr("upx", &a->upx));
  TF_RETURN_IF_ERROR(c->GetAttr("upy", &a->upy));
  TF_RETURN_IF_ERROR(c->GetAttr("downx", &a->downx));
  TF_RETURN_IF_ERROR(c->GetAttr("downy", &a->downy));
  TF_RETURN_IF_ERROR(c->GetAttr("px0", &a->px0));
  TF_RETURN_IF_ERROR(c->GetAttr("px1", &a->px1));
  TF_RETURN_IF_ERROR(c->GetAttr("py0", &a->py0));
  TF_RETURN_IF_ERROR(c->GetAttr("py1", &a->py1));
  return OkStatus();
}

// The up/down/padding attrs alone (shape functions).
struct UpDownPad {
  int upx = 1, upy = 1, downx = 1, downy = 1, px0 = 0, px1 = 0, py0 = 0, py1 = 0;
};

// AfganUpfirdn2d.
struct Upfirdn2dAttrs : UpDownPad {
  bool flip = false;
  float gain = 1.f;
};

inline Status ReadUpfirdn2dAttrs(OpKernelConstruction* ctx, Upfirdn2dAttrs* a) {
  TF_RETURN_IF_ERROR(ReadUpDownPad(ctx, a));
  TF_RETURN_IF_ERROR(ctx->GetAttr("flip_filter", &a->flip));
  TF_RETURN_IF_ERROR(ctx->GetAttr("gain", &a->gain));
  return OkStatus();
}

// AfganFilteredLrelu (has_clamp = true), AfganFilteredLreluGrad and the tile-emulator ops (has_clamp =
// false: clamp stays -1). The struct is the tile engine's (filtered_lrelu_tile.h), used by every kernel.
using FlreluAttrs = afgan::tile::Attrs;

inline Status ReadFlreluAttrs(OpKernelConstruction* ctx, bool has_clamp, FlreluAttrs* a) {
  TF_RETURN_IF_ERROR(ReadUpDownPad(ctx, a));
  TF_RETURN_IF_ERROR(ctx->GetAttr("gain", &a->gain));
  TF_RETURN_IF_ERROR(ctx->GetAttr("slope", &a->slope));
  if (has_clamp) TF_RETURN_IF_ERROR(ctx->GetAttr("clamp", &a->clamp));
  TF_RETURN_IF_ERROR(ctx->GetAttr("flip_filter", &a->flip));
  return OkStatus();
}

// AfganBiasAct / AfganBiasActGrad.
inline int ActCode(const std::string& a) {
  static const char* names[] = {"linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"};
  for (int i = 0; i < 9; ++i)
    if (a == names[i]) return i;
  return -1;
}

struct BiasActAttrs {
  int act = 0, axis = 1;
  float alpha = 0.f, gain = 1.f, clamp = -1.f;
};

inline Status ReadBiasActAttrs(OpKernelConstruction* ctx, BiasActAttrs* b) {
  std::string a;
  TF_RETURN_IF_ERROR(ctx->GetAttr("act", &a));
  b->act = ActCode(a);
  if (b->act < 0) return errors::InvalidArgument("bias_act: unknown act '", a, "'");
  TF_RETURN_IF_ERROR(ctx->GetAttr("alpha", &b->alpha));
  TF_RETURN_IF_ERROR(ctx->GetAttr("gain", &b->gain));
  TF_RETURN_IF_ERROR(ctx->GetAttr("clamp", &b->clamp));
  TF_RETURN_IF_ERROR(ctx->GetAttr("axis", &b->axis));
  return OkStatus();
}

// Checks bias_act's b against x (b empty: no bias) and returns the stride ("inner" size) of the bias axis.
inline Status BiasLayout(const Tensor& x, const Tensor& b, int axis, int64_t* inner, int64_t* nb) {
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

// ------------------------------------------------------------------------------------------------ shape functions
// Filter size (w, h) from a rank-1/rank-2 filter input in shape inference; -1 when unknown.
// IC = shape_inference::InferenceContext (a template so that this header needs no shape_inference.h).
template <typename IC>
void InferFilterSize(IC* c, int input, int64_t* fw, int64_t* fh) {
  auto s = c->input(input);
  *fw = *fh = -1;
  if (!c->RankKnown(s)) return;
  if (c->Rank(s) == 1) {
    if (c->ValueKnown(c->Dim(s, 0))) *fw = *fh = c->Value(c->Dim(s, 0));
  } else if (c->Rank(s) == 2) {
    if (c->ValueKnown(c->Dim(s, 0))) *fh = c->Value(c->Dim(s, 0));
    if (c->ValueKnown(c->Dim(s, 1))) *fw = c->Value(c->Dim(s, 1));
  }
}

// ------------------------------------------------------------------------------------------------ input checks
// `what` names the op and the input, e.g. "filtered_lrelu: x".
inline Status CheckNHWC(const Tensor& t, const char* what) {
  if (t.dims() != 4)
    return errors::InvalidArgument(what, " must be [N, H, W, C], got shape ", t.shape().DebugString());
  return OkStatus();
}

// A filter input: rank 1 (separable) or rank 2 [fh, fw], at least one tap. `what` e.g. "upfirdn2d: f", "fu".
inline Status CheckFilter(const Tensor& f, const char* what) {
  if ((f.dims() != 1 && f.dims() != 2) || f.NumElements() < 1)
    return errors::InvalidArgument(what, " must be 1-D (separable) or 2-D [fh, fw] with at least one tap, got shape ",
                                   f.shape().DebugString());
  return OkStatus();
}

// upfirdn2d's output size (OH, OW) for x [N, H, W, C] and a filter of fw x fh taps.
inline Status Upfirdn2dOutSize(const Tensor& x, const UpDownPad& a, int fw, int fh, int* OH, int* OW) {
  const int64_t nh = x.dim_size(1) * a.upy + a.py0 + a.py1 - fh;
  const int64_t nw = x.dim_size(2) * a.upx + a.px0 + a.px1 - fw;
  if (nh < 0 || nw < 0)
    return errors::InvalidArgument("upfirdn2d: output would be empty for x ", x.shape().DebugString(),
                                   " with this up/padding/filter size");
  *OH = static_cast<int>(nh / a.downy + 1);
  *OW = static_cast<int>(nw / a.downx + 1);
  return OkStatus();
}

// filtered_lrelu's bias: [C], or [0] for none. `op` e.g. "filtered_lrelu".
inline Status CheckFlreluBias(const Tensor& b, int64_t C, const char* op) {
  if (b.dims() != 1 || (b.dim_size(0) != C && b.dim_size(0) != 0))
    return errors::InvalidArgument(op, ": b must be [C] = [", C, "] (or [0] for no bias), got shape ",
                                   b.shape().DebugString());
  return OkStatus();
}

// A filtered_lrelu filter as a tile-engine FilterRef (scales 1), after CheckFilter.
inline Status ReadFilterRef(const Tensor& f, const char* name, bool flip, afgan::tile::FilterRef* out) {
  TF_RETURN_IF_ERROR(CheckFilter(f, name));
  *out = afgan::tile::filter_ref(f.flat<float>().data(), f.dims(), f.dim_size(0), f.dims() == 2 ? f.dim_size(1) : 1,
                                 flip, 1.f, 1.f);
  return OkStatus();
}

// Sizes of AfganFilteredLreluGrad: the forward x size (H, W) and forward y size (oh, ow). Not adjoint: dy
// is y-shaped and x_shape gives H, W (its N and C must match dy); adjoint: dy is x-shaped and oh, ow
// follow from the attrs and the filter sizes. `op` e.g. "filtered_lrelu grad".
inline Status FlreluGradSizes(const Tensor& dy, const Tensor& x_shape, bool adjoint, const FlreluAttrs& a, int fu_w,
                              int fu_h, int fd_w, int fd_h, const char* op, int* H, int* W, int* oh, int* ow) {
  TF_RETURN_IF_ERROR(CheckNHWC(dy, (std::string(op) + ": dy").c_str()));
  const int64_t N = dy.dim_size(0), C = dy.dim_size(3);
  if (!adjoint) {
    if (x_shape.NumElements() != 4) return errors::InvalidArgument(op, ": x_shape must have 4 entries");
    auto v = x_shape.flat<int32>();
    if (v(0) != N || v(3) != C)
      return errors::InvalidArgument(op, ": x_shape ", v(0), "x", v(3), " does not match dy");
    *H = v(1); *W = v(2);
    *oh = dy.dim_size(1); *ow = dy.dim_size(2);
  } else {
    *H = dy.dim_size(1); *W = dy.dim_size(2);
    *oh = afgan::tile::flrelu_out_size(*H, a.upy, a.downy, a.py0, a.py1, fu_h, fd_h);
    *ow = afgan::tile::flrelu_out_size(*W, a.upx, a.downx, a.px0, a.px1, fu_w, fd_w);
  }
  return OkStatus();
}

// The 2-bit code input of AfganFilteredLreluGrad: [N, hiH, hiW, ceil(C / 4)] uint8.
inline Status CheckFlreluCode(const Tensor& code, int64_t N, int64_t hiH, int64_t hiW, int64_t C, const char* op) {
  const int64_t cb = (C + 3) / 4;
  if (code.dims() != 4 || code.dim_size(0) != N || code.dim_size(1) != hiH || code.dim_size(2) != hiW ||
      code.dim_size(3) != cb)
    return errors::InvalidArgument(op, ": code has shape ", code.shape().DebugString(), ", expected [", N, ", ", hiH,
                                   ", ", hiW, ", ", cb, "]");
  return OkStatus();
}

}  // namespace afgan_ops
}  // namespace tensorflow

#endif  // AFGAN_TF_CUSTOM_OPS_OP_ATTRS_H_
