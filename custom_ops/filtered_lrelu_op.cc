// filtered_lrelu: fused bias + upsample (FIR) + gain/leaky-ReLU/clamp + downsample (FIR), NHWC.
//
// Ops:
//   AfganFilteredLrelu(x, fu, fd, b) -> (y, code)
//   AfganFilteredLreluGrad(dy, fu, fd, code, x_shape; adjoint) -> dx
// Filters are float32, rank 1 (separable: the same taps along x and y) or rank 2 [fh, fw]; an identity
// filter is the 1-tap rank-1 filter [1]. `code` holds 2 bits per high-rate sample ([N, Hs, Ws, ceil(C/4)]
// uint8, four channels per byte): 0 passed, 1 negative (gradient x slope), 2 clamped (gradient 0).
//
// CPU kernel design (one pass per tile; spec 1.4/1.5):
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
#include <cstring>
#include <vector>

#include "afgan_common.h"
#include "cpu_taps.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

namespace {

// Filter size (w, h) from a rank-1/rank-2 filter shape in shape inference; -1 when unknown.
void InferFilterSize(InferenceContext* c, int input, int64_t* fw, int64_t* fh) {
  ShapeHandle s = c->input(input);
  *fw = *fh = -1;
  if (!c->RankKnown(s)) return;
  if (c->Rank(s) == 1) {
    if (c->ValueKnown(c->Dim(s, 0))) *fw = *fh = c->Value(c->Dim(s, 0));
  } else if (c->Rank(s) == 2) {
    if (c->ValueKnown(c->Dim(s, 0))) *fh = c->Value(c->Dim(s, 0));
    if (c->ValueKnown(c->Dim(s, 1))) *fw = c->Value(c->Dim(s, 1));
  }
}

int64_t FlreluOutSize(int64_t n, int up, int down, int p0, int p1, int64_t fu, int64_t fd) {
  int64_t num = n * up + p0 + p1 - (fu - 1) - (fd - 1) + (down - 1);
  return num < 0 ? -1 : num / down;
}

}  // namespace

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
      int upx, upy, downx, downy, px0, px1, py0, py1;
      TF_RETURN_IF_ERROR(c->GetAttr("upx", &upx));
      TF_RETURN_IF_ERROR(c->GetAttr("upy", &upy));
      TF_RETURN_IF_ERROR(c->GetAttr("downx", &downx));
      TF_RETURN_IF_ERROR(c->GetAttr("downy", &downy));
      TF_RETURN_IF_ERROR(c->GetAttr("px0", &px0));
      TF_RETURN_IF_ERROR(c->GetAttr("px1", &px1));
      TF_RETURN_IF_ERROR(c->GetAttr("py0", &py0));
      TF_RETURN_IF_ERROR(c->GetAttr("py1", &py1));
      int64_t fuw, fuh, fdw, fdh;
      InferFilterSize(c, 1, &fuw, &fuh);
      InferFilterSize(c, 2, &fdw, &fdh);
      DimensionHandle oh = c->UnknownDim(), ow = c->UnknownDim(), hs = c->UnknownDim(),
                      ws = c->UnknownDim(), cb = c->UnknownDim();
      DimensionHandle h = c->Dim(x, 1), w = c->Dim(x, 2), ch = c->Dim(x, 3);
      if (c->ValueKnown(h) && fuh > 0 && fdh > 0) {
        int64_t o = FlreluOutSize(c->Value(h), upy, downy, py0, py1, fuh, fdh);
        if (o < 1) return errors::InvalidArgument("filtered_lrelu: output height would be < 1");
        oh = c->MakeDim(o);
        hs = c->MakeDim((o - 1) * downy + fdh);
      }
      if (c->ValueKnown(w) && fuw > 0 && fdw > 0) {
        int64_t o = FlreluOutSize(c->Value(w), upx, downx, px0, px1, fuw, fdw);
        if (o < 1) return errors::InvalidArgument("filtered_lrelu: output width would be < 1");
        ow = c->MakeDim(o);
        ws = c->MakeDim((o - 1) * downx + fdw);
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

struct FilterInfo {
  bool sep = true;
  int w = 1, h = 1;
  std::vector<float> gx, gy, g2;  // correlation-form taps, gains folded in
};

// Reads a rank-1/rank-2 filter tensor into correlation form (flip unless flip_filter), scaling the
// x/y passes by gx_scale/gy_scale (separable) or the 2-D filter by their product.
Status ReadFilter(const Tensor& f, const char* name, bool flip_filter, float gx_scale, float gy_scale,
                  FilterInfo* out) {
  if (f.dims() != 1 && f.dims() != 2)
    return errors::InvalidArgument(name, " must be 1-D (separable) or 2-D [fh, fw], got shape ",
                                   f.shape().DebugString());
  if (f.NumElements() < 1) return errors::InvalidArgument(name, " must have at least one tap");
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

enum class Mid { kForward, kMask };

struct Geometry {
  int N = 0, C = 0;
  int srcH = 0, srcW = 0;  // stage A source
  int hiH = 0, hiW = 0;    // high-rate (code) domain
  int outH = 0, outW = 0;  // stage B output
  Taps Ax, Ay, Bx, By;
  const FilterInfo* fa = nullptr;
  const FilterInfo* fb = nullptr;
  Mid mid = Mid::kForward;
  float gain = 1.f, slope = 0.2f, clamp = -1.f;
};

// Per-thread scratch buffers.
struct Scratch {
  std::vector<float> S, U, T, V;
};

template <int CB>
class Engine {
 public:
  Engine(const Geometry& g, const float* src, const float* bias, float* out, uint8_t* code_w,
         const uint8_t* code_r)
      : g_(g), src_(src), bias_(bias), out_(out), code_w_(code_w), code_r_(code_r) {
    g.Bx.src_range(0, g.outW, &jx_lo_, &jx_hi_);
    if (jx_lo_ >= jx_hi_) { jx_lo_ = 0; jx_hi_ = 0; }
    if (jx_hi_ > jx_lo_) g.Ax.src_range(jx_lo_, jx_hi_, &sx_lo_, &sx_hi_);
    if (sx_lo_ >= sx_hi_) { sx_lo_ = 0; sx_hi_ = 0; }
    cblocks_ = (g.C + CB - 1) / CB;
    code_bytes_ = (g.C + 3) / 4;
    // Tile height: keep the per-tile working set around 768 kB, but leave enough units to share.
    int wj = std::max(1, jx_hi_ - jx_lo_), ws = std::max(1, sx_hi_ - sx_lo_);
    double hi_per_row = static_cast<double>(g.hiH) / std::max(1, g.outH);
    double src_per_row = static_cast<double>(g.srcH) / std::max(1, g.outH);
    double bytes_per_row =
        4.0 * CB * (hi_per_row * (2.0 * wj + g.outW) + src_per_row * (ws + wj) + g.outW);
    int th = static_cast<int>(768.0 * 1024.0 / std::max(1.0, bytes_per_row));
    th = std::max(1, std::min(th, g.outH));
    int min_units = 16;
    while (th > 1 && static_cast<int64_t>(g.N) * cblocks_ * ((g.outH + th - 1) / th) < min_units) th = (th + 1) / 2;
    tile_h_ = th;
    tiles_ = (g.outH + th - 1) / th;
  }

  int64_t units() const { return static_cast<int64_t>(g_.N) * cblocks_ * tiles_; }
  int64_t cost_per_unit() const {
    return static_cast<int64_t>(tile_h_) * std::max(1, g_.outW) * CB * 200;
  }

  void Run(int64_t u, Scratch* s) const {
    int t = static_cast<int>(u % tiles_);
    int64_t r = u / tiles_;
    int cb = static_cast<int>(r % cblocks_);
    int n = static_cast<int>(r / cblocks_);
    int o0 = t * tile_h_, o1 = std::min(g_.outH, o0 + tile_h_);
    int c0 = cb * CB, nc = std::min(CB, g_.C - c0);
    const int outW = g_.outW;

    int jy_lo, jy_hi;
    g_.By.src_range(o0, o1, &jy_lo, &jy_hi);
    if (jy_lo >= jy_hi || jx_lo_ >= jx_hi_) { WriteZeros(n, o0, o1, c0, nc); return; }
    int sy_lo, sy_hi;
    g_.Ay.src_range(jy_lo, jy_hi, &sy_lo, &sy_hi);
    const int nsy = std::max(0, sy_hi - sy_lo), nsx = sx_hi_ - sx_lo_;
    const int nj = jy_hi - jy_lo, wj = jx_hi_ - jx_lo_;

    // 1. load source rows (+ bias) -> S[nsy][nsx][CB]
    s->S.assign(static_cast<size_t>(nsy) * nsx * CB, 0.f);
    float bias[CB];
    for (int c = 0; c < CB; ++c) bias[c] = (bias_ && c < nc) ? bias_[c0 + c] : 0.f;
    for (int iy = 0; iy < nsy; ++iy)
      for (int ix = 0; ix < nsx; ++ix) {
        const float* p = src_ + ((static_cast<int64_t>(n) * g_.srcH + sy_lo + iy) * g_.srcW + sx_lo_ + ix) * g_.C + c0;
        float* d = &s->S[(static_cast<size_t>(iy) * nsx + ix) * CB];
        if (nc == CB) {
          for (int c = 0; c < CB; ++c) d[c] = p[c] + bias[c];
        } else {
          for (int c = 0; c < nc; ++c) d[c] = p[c] + bias[c];
        }
      }

    // 2. stage A -> T[nj][wj][CB]
    s->T.assign(static_cast<size_t>(nj) * wj * CB, 0.f);
    const FilterInfo& fa = *g_.fa;
    if (fa.sep) {
      // x pass: U[nsy][wj][CB]
      s->U.resize(static_cast<size_t>(nsy) * wj * CB);
      for (int iy = 0; iy < nsy; ++iy) {
        const float* srow = &s->S[static_cast<size_t>(iy) * nsx * CB];
        float* urow = &s->U[static_cast<size_t>(iy) * wj * CB];
        for (int jx = 0; jx < wj; ++jx) {
          float acc[CB] = {0.f};
          const int J = jx_lo_ + jx;
          for (int q = g_.Ax.begin(J); q < g_.Ax.end(J); ++q) {
            const float w = fa.gx[g_.Ax.k[q]];
            const float* sp = srow + static_cast<size_t>(g_.Ax.idx[q] - sx_lo_) * CB;
            for (int c = 0; c < CB; ++c) acc[c] += w * sp[c];
          }
          std::memcpy(urow + static_cast<size_t>(jx) * CB, acc, sizeof(acc));
        }
      }
      // y pass: T[jy] += w * U[iy] (row axpy)
      const size_t rowlen = static_cast<size_t>(wj) * CB;
      for (int jy = 0; jy < nj; ++jy) {
        float* trow = &s->T[jy * rowlen];
        const int J = jy_lo + jy;
        for (int q = g_.Ay.begin(J); q < g_.Ay.end(J); ++q) {
          const float w = fa.gy[g_.Ay.k[q]];
          const float* urow = &s->U[static_cast<size_t>(g_.Ay.idx[q] - sy_lo) * rowlen];
          for (size_t e = 0; e < rowlen; ++e) trow[e] += w * urow[e];
        }
      }
    } else {
      for (int jy = 0; jy < nj; ++jy) {
        const int JY = jy_lo + jy;
        for (int jx = 0; jx < wj; ++jx) {
          const int JX = jx_lo_ + jx;
          float acc[CB] = {0.f};
          for (int qy = g_.Ay.begin(JY); qy < g_.Ay.end(JY); ++qy) {
            const float* srow = &s->S[static_cast<size_t>(g_.Ay.idx[qy] - sy_lo) * nsx * CB];
            const float* frow = &fa.g2[static_cast<size_t>(g_.Ay.k[qy]) * fa.w];
            for (int qx = g_.Ax.begin(JX); qx < g_.Ax.end(JX); ++qx) {
              const float w = frow[g_.Ax.k[qx]];
              const float* sp = srow + static_cast<size_t>(g_.Ax.idx[qx] - sx_lo_) * CB;
              for (int c = 0; c < CB; ++c) acc[c] += w * sp[c];
            }
          }
          std::memcpy(&s->T[(static_cast<size_t>(jy) * wj + jx) * CB], acc, sizeof(acc));
        }
      }
    }

    // 3. nonlinearity / code mask
    if (g_.mid == Mid::kForward) {
      // rows this tile owns in the code tensor
      int own_lo = o0 * (g_.outH > 0 ? DownY() : 1);
      int own_hi = (o1 == g_.outH) ? g_.hiH : o1 * DownY();
      own_lo = std::max(own_lo, jy_lo);
      own_hi = std::min(own_hi, jy_hi);
      const float gain = g_.gain, slope = g_.slope, clamp = g_.clamp;
      for (int jy = 0; jy < nj; ++jy) {
        const int JY = jy_lo + jy;
        const bool write = code_w_ && JY >= own_lo && JY < own_hi;
        for (int jx = 0; jx < wj; ++jx) {
          float* v = &s->T[(static_cast<size_t>(jy) * wj + jx) * CB];
          if (!write) {
            for (int c = 0; c < CB; ++c) {
              uint32_t code;
              v[c] = afgan::flrelu_forward_elem(v[c], gain, slope, clamp, &code);
            }
          } else {
            uint8_t* crow = code_w_ + ((static_cast<int64_t>(n) * g_.hiH + JY) * g_.hiW + jx_lo_ + jx) * code_bytes_ + c0 / 4;
            for (int c4 = 0; c4 < CB; c4 += 4) {
              uint32_t packed = 0;
              for (int c = 0; c < 4; ++c) {
                uint32_t code;
                v[c4 + c] = afgan::flrelu_forward_elem(v[c4 + c], gain, slope, clamp, &code);
                packed |= code << (2 * c);
              }
              if (c4 < nc) crow[c4 / 4] = static_cast<uint8_t>(packed);
            }
          }
        }
      }
    } else {
      const float gain = g_.gain, slope = g_.slope;
      for (int jy = 0; jy < nj; ++jy) {
        const int JY = jy_lo + jy;
        for (int jx = 0; jx < wj; ++jx) {
          float* v = &s->T[(static_cast<size_t>(jy) * wj + jx) * CB];
          const uint8_t* crow = code_r_ + ((static_cast<int64_t>(n) * g_.hiH + JY) * g_.hiW + jx_lo_ + jx) * code_bytes_ + c0 / 4;
          for (int c = 0; c < nc; ++c) v[c] *= afgan::flrelu_code_scale(afgan::code_get(crow, c), gain, slope);
        }
      }
    }

    // 4. stage B -> output rows [o0, o1)
    const FilterInfo& fb = *g_.fb;
    float* out_base = out_ + (static_cast<int64_t>(n) * g_.outH) * outW * g_.C + c0;
    if (fb.sep) {
      // x pass: V[nj][outW][CB]
      s->V.resize(static_cast<size_t>(nj) * outW * CB);
      for (int jy = 0; jy < nj; ++jy) {
        const float* trow = &s->T[static_cast<size_t>(jy) * wj * CB];
        float* vrow = &s->V[static_cast<size_t>(jy) * outW * CB];
        for (int ox = 0; ox < outW; ++ox) {
          float acc[CB] = {0.f};
          for (int q = g_.Bx.begin(ox); q < g_.Bx.end(ox); ++q) {
            const float w = fb.gx[g_.Bx.k[q]];
            const float* tp = trow + static_cast<size_t>(g_.Bx.idx[q] - jx_lo_) * CB;
            for (int c = 0; c < CB; ++c) acc[c] += w * tp[c];
          }
          std::memcpy(vrow + static_cast<size_t>(ox) * CB, acc, sizeof(acc));
        }
      }
      // y pass
      std::vector<float>& row = s->U;  // reuse as one output row
      row.resize(static_cast<size_t>(outW) * CB);
      const size_t rowlen = static_cast<size_t>(outW) * CB;
      for (int oy = o0; oy < o1; ++oy) {
        std::fill(row.begin(), row.end(), 0.f);
        for (int q = g_.By.begin(oy); q < g_.By.end(oy); ++q) {
          const float w = fb.gy[g_.By.k[q]];
          const float* vrow = &s->V[static_cast<size_t>(g_.By.idx[q] - jy_lo) * rowlen];
          for (size_t e = 0; e < rowlen; ++e) row[e] += w * vrow[e];
        }
        StoreRow(out_base + static_cast<int64_t>(oy) * outW * g_.C, row.data(), nc);
      }
    } else {
      std::vector<float>& row = s->U;
      row.resize(static_cast<size_t>(outW) * CB);
      for (int oy = o0; oy < o1; ++oy) {
        for (int ox = 0; ox < outW; ++ox) {
          float acc[CB] = {0.f};
          for (int qy = g_.By.begin(oy); qy < g_.By.end(oy); ++qy) {
            const float* trow = &s->T[static_cast<size_t>(g_.By.idx[qy] - jy_lo) * wj * CB];
            const float* frow = &fb.g2[static_cast<size_t>(g_.By.k[qy]) * fb.w];
            for (int qx = g_.Bx.begin(ox); qx < g_.Bx.end(ox); ++qx) {
              const float w = frow[g_.Bx.k[qx]];
              const float* tp = trow + static_cast<size_t>(g_.Bx.idx[qx] - jx_lo_) * CB;
              for (int c = 0; c < CB; ++c) acc[c] += w * tp[c];
            }
          }
          std::memcpy(&row[static_cast<size_t>(ox) * CB], acc, sizeof(acc));
        }
        StoreRow(out_base + static_cast<int64_t>(oy) * outW * g_.C, row.data(), nc);
      }
    }
  }

  int down_y_ = 1;

 private:
  int DownY() const { return down_y_; }

  void StoreRow(float* dst, const float* row, int nc) const {
    for (int ox = 0; ox < g_.outW; ++ox) {
      float* d = dst + static_cast<int64_t>(ox) * g_.C;
      const float* s = row + static_cast<size_t>(ox) * CB;
      if (nc == CB) {
        for (int c = 0; c < CB; ++c) d[c] = s[c];
      } else {
        for (int c = 0; c < nc; ++c) d[c] = s[c];
      }
    }
  }

  void WriteZeros(int n, int o0, int o1, int c0, int nc) const {
    for (int oy = o0; oy < o1; ++oy)
      for (int ox = 0; ox < g_.outW; ++ox) {
        float* d = out_ + ((static_cast<int64_t>(n) * g_.outH + oy) * g_.outW + ox) * g_.C + c0;
        for (int c = 0; c < nc; ++c) d[c] = 0.f;
      }
  }

  const Geometry& g_;
  const float* src_;
  const float* bias_;
  float* out_;
  uint8_t* code_w_;
  const uint8_t* code_r_;
  int jx_lo_ = 0, jx_hi_ = 0, sx_lo_ = 0, sx_hi_ = 0;
  int cblocks_ = 1, code_bytes_ = 1, tile_h_ = 1, tiles_ = 1;
};

template <int CB>
void RunEngineCB(OpKernelContext* ctx, const Geometry& g, int down_y, const float* src, const float* bias,
                 float* out, uint8_t* code_w, const uint8_t* code_r) {
  Engine<CB> e(g, src, bias, out, code_w, code_r);
  e.down_y_ = down_y;
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  workers->ParallelFor(e.units(), e.cost_per_unit(), [&e](int64_t begin, int64_t end) {
    thread_local Scratch scratch;
    for (int64_t u = begin; u < end; ++u) e.Run(u, &scratch);
  });
}

void RunEngine(OpKernelContext* ctx, const Geometry& g, int down_y, const float* src, const float* bias,
               float* out, uint8_t* code_w, const uint8_t* code_r) {
  if (g.C >= 16)
    RunEngineCB<16>(ctx, g, down_y, src, bias, out, code_w, code_r);
  else if (g.C >= 8)
    RunEngineCB<8>(ctx, g, down_y, src, bias, out, code_w, code_r);
  else
    RunEngineCB<4>(ctx, g, down_y, src, bias, out, code_w, code_r);
}

struct FlreluAttrs {
  int upx, upy, downx, downy, px0, px1, py0, py1;
  float gain, slope, clamp = -1.f;
  bool flip;
  Status Read(OpKernelConstruction* ctx, bool has_clamp) {
    TF_RETURN_IF_ERROR(ctx->GetAttr("upx", &upx));
    TF_RETURN_IF_ERROR(ctx->GetAttr("upy", &upy));
    TF_RETURN_IF_ERROR(ctx->GetAttr("downx", &downx));
    TF_RETURN_IF_ERROR(ctx->GetAttr("downy", &downy));
    TF_RETURN_IF_ERROR(ctx->GetAttr("px0", &px0));
    TF_RETURN_IF_ERROR(ctx->GetAttr("px1", &px1));
    TF_RETURN_IF_ERROR(ctx->GetAttr("py0", &py0));
    TF_RETURN_IF_ERROR(ctx->GetAttr("py1", &py1));
    TF_RETURN_IF_ERROR(ctx->GetAttr("gain", &gain));
    TF_RETURN_IF_ERROR(ctx->GetAttr("slope", &slope));
    if (has_clamp) TF_RETURN_IF_ERROR(ctx->GetAttr("clamp", &clamp));
    TF_RETURN_IF_ERROR(ctx->GetAttr("flip_filter", &flip));
    return OkStatus();
  }
};

class FilteredLreluOpCPU : public OpKernel {
 public:
  explicit FilteredLreluOpCPU(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, a_.Read(ctx, true));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& fu = ctx->input(1);
    const Tensor& fd = ctx->input(2);
    const Tensor& b = ctx->input(3);
    OP_REQUIRES(ctx, x.dims() == 4,
                errors::InvalidArgument("filtered_lrelu: x must be [N, H, W, C], got shape ", x.shape().DebugString()));
    const int N = x.dim_size(0), H = x.dim_size(1), W = x.dim_size(2), C = x.dim_size(3);
    OP_REQUIRES(ctx, b.dims() == 1 && (b.dim_size(0) == C || b.dim_size(0) == 0),
                errors::InvalidArgument("filtered_lrelu: b must be [C] = [", C, "] (or [0] for no bias), got shape ",
                                        b.shape().DebugString()));
    FilterInfo FU, FD;
    OP_REQUIRES_OK(ctx, ReadFilter(fu, "fu", a_.flip, a_.upx, a_.upy, &FU));
    OP_REQUIRES_OK(ctx, ReadFilter(fd, "fd", a_.flip, 1.f, 1.f, &FD));
    const int64_t oh = FlreluOutSize(H, a_.upy, a_.downy, a_.py0, a_.py1, FU.h, FD.h);
    const int64_t ow = FlreluOutSize(W, a_.upx, a_.downx, a_.px0, a_.px1, FU.w, FD.w);
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
    std::memset(code->flat<uint8_t>().data(), 0, code->NumElements());
    RunEngine(ctx, g, a_.downy, x.flat<float>().data(), b.dim_size(0) ? b.flat<float>().data() : nullptr,
              y->flat<float>().data(), code->flat<uint8_t>().data(), nullptr);
  }

 private:
  FlreluAttrs a_;
};

class FilteredLreluGradOpCPU : public OpKernel {
 public:
  explicit FilteredLreluGradOpCPU(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, a_.Read(ctx, false));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("adjoint", &adjoint_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& fu = ctx->input(1);
    const Tensor& fd = ctx->input(2);
    const Tensor& code = ctx->input(3);
    const Tensor& xs = ctx->input(4);
    OP_REQUIRES(ctx, dy.dims() == 4,
                errors::InvalidArgument("filtered_lrelu grad: dy must be [N, H, W, C], got ", dy.shape().DebugString()));
    OP_REQUIRES(ctx, code.dims() == 4, errors::InvalidArgument("filtered_lrelu grad: code must be rank 4"));
    FilterInfo FU, FD;
    OP_REQUIRES_OK(ctx, ReadFilter(fu, "fu", a_.flip, a_.upx, a_.upy, &FU));
    OP_REQUIRES_OK(ctx, ReadFilter(fd, "fd", a_.flip, 1.f, 1.f, &FD));
    const int N = dy.dim_size(0), C = dy.dim_size(3);
    int H, W, oh, ow;  // forward x size and forward y size
    if (!adjoint_) {
      OP_REQUIRES(ctx, xs.NumElements() == 4, errors::InvalidArgument("filtered_lrelu grad: x_shape must have 4 entries"));
      auto v = xs.flat<int32>();
      H = v(1); W = v(2);
      OP_REQUIRES(ctx, v(0) == N && v(3) == C,
                  errors::InvalidArgument("filtered_lrelu grad: x_shape ", v(0), "x", v(3), " does not match dy"));
      oh = dy.dim_size(1); ow = dy.dim_size(2);
    } else {
      H = dy.dim_size(1); W = dy.dim_size(2);
      oh = FlreluOutSize(H, a_.upy, a_.downy, a_.py0, a_.py1, FU.h, FD.h);
      ow = FlreluOutSize(W, a_.upx, a_.downx, a_.px0, a_.px1, FU.w, FD.w);
    }
    const int hiH = (oh - 1) * a_.downy + FD.h, hiW = (ow - 1) * a_.downx + FD.w;
    OP_REQUIRES(ctx, code.dim_size(0) == N && code.dim_size(1) == hiH && code.dim_size(2) == hiW &&
                         code.dim_size(3) == (C + 3) / 4,
                errors::InvalidArgument("filtered_lrelu grad: code has shape ", code.shape().DebugString(), ", expected [",
                                        N, ", ", hiH, ", ", hiW, ", ", (C + 3) / 4, "]"));
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
