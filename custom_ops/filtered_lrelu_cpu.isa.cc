// filtered_lrelu CPU engine, compiled once per ISA level (not a standalone translation unit of the op
// library: the build compiles this file with -DAFGAN_ISA_LEVEL=2/3/4 and -march=x86-64-v2/v3/v4, or once with
// AFGAN_ISA_LEVEL=0 and no -march on other architectures; cpu_isa.cc picks one at run time).
//
// Vector width per level (GCC vector extensions over the channel block): v4 16 floats (zmm, 32 registers),
// v3 8 floats (ymm, 16 registers), v2 / generic 4 floats (xmm). The largest channel block per level keeps the
// two-row accumulators of XPass2/YPass2 (2 x CB / W vectors) plus operands within the register file: v4 64
// channels (8 zmm accumulators), v3 32 (8 ymm), v2 16 (8 xmm). A wider block on AVX2 spills accumulators to
// the stack in every tap iteration (the 15x slowdown of issue 16).
//
// TF-free on purpose (see filtered_lrelu_cpu.h): only the standard library and the kernel headers.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__x86_64__) && (defined(__AVX512F__) || defined(__AVX2__)) && defined(__BMI2__)
#include <immintrin.h>
#endif

#include "afgan_common.h"
#include "cpu_taps.h"
#include "filtered_lrelu_cpu.h"

#if !defined(AFGAN_ISA_LEVEL)
#error "compile filtered_lrelu_cpu.isa.cc with -DAFGAN_ISA_LEVEL=0|2|3|4 (see setup.py / custom_ops/BUILD)"
#endif
#if AFGAN_ISA_LEVEL == 4
#define AFGAN_ISA_NS isa_v4
#define AFGAN_VEC_FLOATS 16
#define AFGAN_CB_MAX 64
#elif AFGAN_ISA_LEVEL == 3
#define AFGAN_ISA_NS isa_v3
#define AFGAN_VEC_FLOATS 8
#define AFGAN_CB_MAX 32
#elif AFGAN_ISA_LEVEL == 2
#define AFGAN_ISA_NS isa_v2
#define AFGAN_VEC_FLOATS 4
#define AFGAN_CB_MAX 16
#else
#define AFGAN_ISA_NS isa_generic
#define AFGAN_VEC_FLOATS 4
#define AFGAN_CB_MAX 16
#endif

namespace afgan_flrelu {
namespace AFGAN_ISA_NS {
namespace {

// Per-thread scratch buffers.
struct Scratch {
  std::vector<float> S, U, T, V, wts;
  std::vector<const float*> rows;
};

int MaxTaps(const Taps& t) {
  int m = 0;
  for (int o = 0; o < t.size(); ++o) m = std::max(m, t.end(o) - t.begin(o));
  return m;
}

// Tap table flattened for the inner loops: per output, a contiguous run of (offset, weight).
struct FlatTaps {
  std::vector<int> ptr, off;
  std::vector<float> w;
};

// x-direction table: offsets are (idx - lo) * CB floats; weights resolved from the 1-D filter.
inline FlatTaps FlattenX(const Taps& t, int o0, int o1, int lo, int cb, const std::vector<float>& g) {
  FlatTaps f;
  f.ptr.push_back(0);
  for (int o = o0; o < o1; ++o) {
    for (int q = t.begin(o); q < t.end(o); ++q) {
      f.off.push_back((t.idx[q] - lo) * cb);
      f.w.push_back(g.empty() ? 0.f : g[t.k[q]]);
    }
    f.ptr.push_back(static_cast<int>(f.off.size()));
  }
  return f;
}

// Explicit SIMD over the channel block (GCC/Clang vector extensions): the compiler otherwise tends to
// vectorise the short tap loops with gathers.
template <int CB>
struct VecT {
  static constexpr int W = CB >= AFGAN_VEC_FLOATS ? AFGAN_VEC_FLOATS : CB;  // floats per vector
  static constexpr int K = CB / W;              // vectors per channel block
  typedef float v __attribute__((vector_size(W * sizeof(float))));
  typedef int32_t vi __attribute__((vector_size(W * sizeof(float))));
  typedef uint32_t vu __attribute__((vector_size(W * sizeof(float))));
  static inline v load(const float* p) { v r; std::memcpy(&r, p, sizeof(v)); return r; }
  static inline void store(float* p, const v& r) { std::memcpy(p, &r, sizeof(v)); }
};

// d[0:nc] = acc[0:nc] for a channel block held in K vectors (nc < CB: the last, partial block).
template <int CB>
inline __attribute__((always_inline)) void StoreBlock(float* d, const typename VecT<CB>::v* acc, int nc) {
  using V = VecT<CB>;
  if (nc == CB) {
    for (int k = 0; k < V::K; ++k) V::store(d + k * V::W, acc[k]);
  } else {
    float tmp[CB];
    for (int k = 0; k < V::K; ++k) V::store(tmp + k * V::W, acc[k]);
    for (int c = 0; c < nc; ++c) d[c] = tmp[c];
  }
}

// acc[0:CB] = sum_q w[q] * base[off[q] + 0:CB]
template <int CB>
inline void GatherAcc(float* __restrict dst, const float* __restrict base, const int* __restrict off,
                      const float* __restrict w, int nq) {
  using V = VecT<CB>;
  typename V::v acc[V::K];
  for (int k = 0; k < V::K; ++k) acc[k] = typename V::v{};
  for (int q = 0; q < nq; ++q) {
    const float* s = base + off[q];
    const float wq = w[q];
    for (int k = 0; k < V::K; ++k) acc[k] += wq * V::load(s + k * V::W);
  }
  for (int k = 0; k < V::K; ++k) V::store(dst + k * V::W, acc[k]);
}

// Row pass: for each pixel e in [0, npix): dst[e * dst_stride + 0:nc] = sum_q w[q] * rows[q][e * CB + 0:CB].
template <int CB>
inline void RowAcc(float* __restrict dst, const float* const* rows, const float* w, int nq, int npix,
                   int dst_stride, int nc) {
  using V = VecT<CB>;
  for (int e = 0; e < npix; ++e) {
    typename V::v acc[V::K];
    for (int k = 0; k < V::K; ++k) acc[k] = typename V::v{};
    const size_t o = static_cast<size_t>(e) * CB;
    for (int q = 0; q < nq; ++q) {
      const float* s = rows[q] + o;
      const float wq = w[q];
      for (int k = 0; k < V::K; ++k) acc[k] += wq * V::load(s + k * V::W);
    }
    StoreBlock<CB>(dst + static_cast<size_t>(e) * dst_stride, acc, nc);
  }
}

template <int CB>
class Engine {
 public:
  Engine(const Geometry& g, int down_y, const float* src, const float* bias, float* out, uint8_t* code_w,
         const uint8_t* code_r)
      : g_(g), down_y_(down_y), src_(src), bias_(bias), out_(out), code_w_(code_w), code_r_(code_r) {
    g.Bx.src_range(0, g.outW, &jx_lo_, &jx_hi_);
    if (jx_lo_ >= jx_hi_) { jx_lo_ = 0; jx_hi_ = 0; }
    if (jx_hi_ > jx_lo_) g.Ax.src_range(jx_lo_, jx_hi_, &sx_lo_, &sx_hi_);
    if (sx_lo_ >= sx_hi_) { sx_lo_ = 0; sx_hi_ = 0; }
    cblocks_ = (g.C + CB - 1) / CB;
    code_bytes_ = (g.C + 3) / 4;
    max_taps_ = std::max(MaxTaps(g.Ay), MaxTaps(g.By));
    if (g.fa->sep) ax_ = FlattenX(g.Ax, jx_lo_, std::max(jx_lo_, jx_hi_), sx_lo_, CB, g.fa->gx);
    if (g.fb->sep) bx_ = FlattenX(g.Bx, 0, g.outW, jx_lo_, CB, g.fb->gx);
    // Tile height: large tiles (less halo recomputation) measured fastest; tunable with the env vars
    // AFGAN_TF_FLRELU_TILE_KB (working-set budget, default 4096) and AFGAN_TF_FLRELU_CB (max channel block, 64).
    int wj = std::max(1, jx_hi_ - jx_lo_), ws = std::max(1, sx_hi_ - sx_lo_);
    double hi_per_row = static_cast<double>(g.hiH) / std::max(1, g.outH);
    double src_per_row = static_cast<double>(g.srcH) / std::max(1, g.outH);
    double bytes_per_row = 4.0 * CB * (hi_per_row * (wj + g.outW) + src_per_row * (ws + wj));
    static const double budget = [] {
      const char* e = std::getenv("AFGAN_TF_FLRELU_TILE_KB");
      return (e ? std::atof(e) : 4096.0) * 1024.0;
    }();
    int th = static_cast<int>(budget / std::max(1.0, bytes_per_row));
    th = std::max(1, std::min(th, g.outH));
    const int min_units = 8;
    while (th > 1 && static_cast<int64_t>(g.N) * cblocks_ * ((g.outH + th - 1) / th) < min_units) th = (th + 1) / 2;
    tile_h_ = th;
    tiles_ = (g.outH + th - 1) / th;
  }

  int64_t units() const { return static_cast<int64_t>(g_.N) * cblocks_ * tiles_; }
  int64_t cost_per_unit() const {
    return static_cast<int64_t>(tile_h_) * std::max(1, g_.outW) * CB * 200;
  }

  void Run(int64_t u, Scratch* s) const {
    const int t = static_cast<int>(u % tiles_);
    const int64_t r = u / tiles_;
    const int cb = static_cast<int>(r % cblocks_);
    const int n = static_cast<int>(r / cblocks_);
    const int o0 = t * tile_h_, o1 = std::min(g_.outH, o0 + tile_h_);
    const int c0 = cb * CB, nc = std::min(CB, g_.C - c0);
    const int outW = g_.outW, C = g_.C;

    int jy_lo, jy_hi;
    g_.By.src_range(o0, o1, &jy_lo, &jy_hi);
    if (jy_lo >= jy_hi || jx_lo_ >= jx_hi_) { WriteZeros(n, o0, o1, c0, nc); return; }
    int sy_lo, sy_hi;
    g_.Ay.src_range(jy_lo, jy_hi, &sy_lo, &sy_hi);
    const int nsy = std::max(0, sy_hi - sy_lo), nsx = sx_hi_ - sx_lo_;
    const int nj = jy_hi - jy_lo, wj = jx_hi_ - jx_lo_;
    const size_t srow_len = static_cast<size_t>(nsx) * CB, hrow_len = static_cast<size_t>(wj) * CB;

    // 1. load source rows (+ bias) -> S[nsy][nsx][CB]
    s->S.resize(static_cast<size_t>(nsy) * srow_len);
    float bias[CB];
    for (int c = 0; c < CB; ++c) bias[c] = (bias_ && c < nc) ? bias_[c0 + c] : 0.f;
    for (int iy = 0; iy < nsy; ++iy) {
      const float* p = src_ + ((static_cast<int64_t>(n) * g_.srcH + sy_lo + iy) * g_.srcW + sx_lo_) * C + c0;
      float* d = &s->S[iy * srow_len];
      for (int ix = 0; ix < nsx; ++ix, p += C, d += CB) {
        if (nc == CB) {
          for (int c = 0; c < CB; ++c) d[c] = p[c] + bias[c];
        } else {
          for (int c = 0; c < CB; ++c) d[c] = c < nc ? p[c] + bias[c] : 0.f;
        }
      }
    }

    // 2. stage A -> T[nj][wj][CB]
    s->T.resize(static_cast<size_t>(nj) * hrow_len);
    const FilterInfo& fa = *g_.fa;
    s->rows.resize(std::max(max_taps_, 1));
    s->wts.resize(std::max(max_taps_, 1));
    const float** rows = s->rows.data();
    float* wts = s->wts.data();
    if (fa.sep) {
      s->U.resize(static_cast<size_t>(nsy) * hrow_len);  // x pass: U[nsy][wj][CB]
      for (int iy = 0; iy < nsy; ++iy) {
        const float* srow = &s->S[iy * srow_len];
        float* urow = &s->U[iy * hrow_len];
        for (int jx = 0; jx < wj; ++jx)
          GatherAcc<CB>(urow + static_cast<size_t>(jx) * CB, srow, &ax_.off[ax_.ptr[jx]], &ax_.w[ax_.ptr[jx]],
                        ax_.ptr[jx + 1] - ax_.ptr[jx]);
      }
      for (int jy = 0; jy < nj; ++jy) {  // y pass
        const int J = jy_lo + jy;
        int nq = 0;
        for (int q = g_.Ay.begin(J); q < g_.Ay.end(J); ++q, ++nq) {
          rows[nq] = &s->U[(g_.Ay.idx[q] - sy_lo) * hrow_len];
          wts[nq] = fa.gy[g_.Ay.k[q]];
        }
        RowAcc<CB>(&s->T[jy * hrow_len], rows, wts, nq, wj, CB, CB);
      }
    } else {
      for (int jy = 0; jy < nj; ++jy) {
        const int JY = jy_lo + jy;
        for (int jx = 0; jx < wj; ++jx) {
          const int JX = jx_lo_ + jx;
          using V = VecT<CB>;
          typename V::v acc[V::K];
          for (int k = 0; k < V::K; ++k) acc[k] = typename V::v{};
          for (int qy = g_.Ay.begin(JY); qy < g_.Ay.end(JY); ++qy) {
            const float* srow = &s->S[(g_.Ay.idx[qy] - sy_lo) * srow_len];
            const float* frow = &fa.g2[static_cast<size_t>(g_.Ay.k[qy]) * fa.w];
            for (int qx = g_.Ax.begin(JX); qx < g_.Ax.end(JX); ++qx) {
              const float w = frow[g_.Ax.k[qx]];
              const float* sp = srow + static_cast<size_t>(g_.Ax.idx[qx] - sx_lo_) * CB;
              for (int k = 0; k < V::K; ++k) acc[k] += w * V::load(sp + k * V::W);
            }
          }
          float* dst = &s->T[jy * hrow_len + static_cast<size_t>(jx) * CB];
          for (int k = 0; k < V::K; ++k) V::store(dst + k * V::W, acc[k]);
        }
      }
    }

    // 3. nonlinearity / code mask (branch-free loops over the CB channels of one pixel, vectorisable)
    if (g_.mid == Mid::kForward) {
      int own_lo = std::max(o0 * down_y_, jy_lo);
      int own_hi = std::min((o1 == g_.outH) ? g_.hiH : o1 * down_y_, jy_hi);
      const float gain = g_.gain, slope = g_.slope;
      const float clamp = g_.clamp >= 0.f ? g_.clamp : std::numeric_limits<float>::infinity();
      const int nbytes = (nc + 3) / 4;
      for (int jy = 0; jy < nj; ++jy) {
        const int JY = jy_lo + jy;
        const bool write = code_w_ && JY >= own_lo && JY < own_hi;
        float* v = &s->T[jy * hrow_len];
        uint8_t* crow = write ? code_w_ + ((static_cast<int64_t>(n) * g_.hiH + JY) * g_.hiW + jx_lo_) * code_bytes_ + c0 / 4
                              : nullptr;
        for (int jx = 0; jx < wj; ++jx, v += CB) {
          uint8_t cc[CB];
          for (int c = 0; c < CB; ++c) v[c] = afgan::flrelu_forward_elem(v[c], gain, slope, clamp, &cc[c]);
          if (crow) {
            uint8_t* cb8 = crow + static_cast<int64_t>(jx) * code_bytes_;
            for (int j = 0; j < nbytes; ++j)
              cb8[j] = static_cast<uint8_t>(cc[4 * j] | (cc[4 * j + 1] << 2) | (cc[4 * j + 2] << 4) | (cc[4 * j + 3] << 6));
          }
        }
      }
    } else {
      const float gain = g_.gain;
      const int nbytes = (nc + 3) / 4;
      for (int jy = 0; jy < nj; ++jy) {
        const int JY = jy_lo + jy;
        float* v = &s->T[jy * hrow_len];
        const uint8_t* crow = code_r_ + ((static_cast<int64_t>(n) * g_.hiH + JY) * g_.hiW + jx_lo_) * code_bytes_ + c0 / 4;
        for (int jx = 0; jx < wj; ++jx, v += CB, crow += code_bytes_) {
          uint8_t cc[CB];
          for (int j = 0; j < CB / 4; ++j) {
            const uint8_t byte = j < nbytes ? crow[j] : 0;
            cc[4 * j] = byte & 3u;
            cc[4 * j + 1] = (byte >> 2) & 3u;
            cc[4 * j + 2] = (byte >> 4) & 3u;
            cc[4 * j + 3] = (byte >> 6) & 3u;
          }
          for (int c = 0; c < CB; ++c) v[c] *= afgan::flrelu_code_scale(cc[c], gain, g_.slope);
        }
      }
    }

    // 4. stage B -> output rows [o0, o1)
    const FilterInfo& fb = *g_.fb;
    float* out_base = out_ + (static_cast<int64_t>(n) * g_.outH) * outW * C + c0;
    if (fb.sep) {
      const size_t vrow_len = static_cast<size_t>(outW) * CB;
      s->V.resize(static_cast<size_t>(nj) * vrow_len);  // x pass: V[nj][outW][CB]
      for (int jy = 0; jy < nj; ++jy) {
        const float* trow = &s->T[jy * hrow_len];
        float* vrow = &s->V[jy * vrow_len];
        for (int ox = 0; ox < outW; ++ox)
          GatherAcc<CB>(vrow + static_cast<size_t>(ox) * CB, trow, &bx_.off[bx_.ptr[ox]], &bx_.w[bx_.ptr[ox]],
                        bx_.ptr[ox + 1] - bx_.ptr[ox]);
      }
      for (int oy = o0; oy < o1; ++oy) {  // y pass straight into the output
        int nq = 0;
        for (int q = g_.By.begin(oy); q < g_.By.end(oy); ++q, ++nq) {
          rows[nq] = &s->V[(g_.By.idx[q] - jy_lo) * vrow_len];
          wts[nq] = fb.gy[g_.By.k[q]];
        }
        RowAcc<CB>(out_base + static_cast<int64_t>(oy) * outW * C, rows, wts, nq, outW, C, nc);
      }
    } else {
      for (int oy = o0; oy < o1; ++oy) {
        for (int ox = 0; ox < outW; ++ox) {
          using V = VecT<CB>;
          typename V::v acc[V::K];
          for (int k = 0; k < V::K; ++k) acc[k] = typename V::v{};
          for (int qy = g_.By.begin(oy); qy < g_.By.end(oy); ++qy) {
            const float* trow = &s->T[(g_.By.idx[qy] - jy_lo) * hrow_len];
            const float* frow = &fb.g2[static_cast<size_t>(g_.By.k[qy]) * fb.w];
            for (int qx = g_.Bx.begin(ox); qx < g_.Bx.end(ox); ++qx) {
              const float w = frow[g_.Bx.k[qx]];
              const float* tp = trow + static_cast<size_t>(g_.Bx.idx[qx] - jx_lo_) * CB;
              for (int k = 0; k < V::K; ++k) acc[k] += w * V::load(tp + k * V::W);
            }
          }
          float tmp[CB];
          for (int k = 0; k < V::K; ++k) V::store(tmp + k * V::W, acc[k]);
          float* d = out_base + (static_cast<int64_t>(oy) * outW + ox) * C;
          for (int c = 0; c < nc; ++c) d[c] = tmp[c];
        }
      }
    }
  }

 private:
  void WriteZeros(int n, int o0, int o1, int c0, int nc) const {
    for (int oy = o0; oy < o1; ++oy)
      for (int ox = 0; ox < g_.outW; ++ox) {
        float* d = out_ + ((static_cast<int64_t>(n) * g_.outH + oy) * g_.outW + ox) * g_.C + c0;
        for (int c = 0; c < nc; ++c) d[c] = 0.f;
      }
  }

  const Geometry& g_;
  int down_y_;
  const float* src_;
  const float* bias_;
  float* out_;
  uint8_t* code_w_;
  const uint8_t* code_r_;
  FlatTaps ax_, bx_;
  int jx_lo_ = 0, jx_hi_ = 0, sx_lo_ = 0, sx_hi_ = 0;
  int cblocks_ = 1, code_bytes_ = 1, tile_h_ = 1, tiles_ = 1, max_taps_ = 1;
};

// ------------------------------------------------------------------------------------------------
// Streaming engine (separable filters in both stages; the common case).
//
// Work unit = (sample n, block of CB channels, band of output rows). A unit walks its output rows top
// to bottom and computes every intermediate row exactly once, keeping only the rows still needed in
// ring buffers (no halo recomputation, working set ~ a few hundred KB, i.e. L2-resident):
//   source row i --x pass (+ bias, folded as b * sum of taps)--> U ring [RU][wj][CB]
//   U ring --y pass + nonlinearity/code (or code mask)--> T row [wj][CB] --x pass--> V ring [RV][outW][CB]
//   V ring --y pass--> output row o
// All tap tables are padded to a uniform tap count per pass (zero weights) so the inner loops are
// fixed-length for the common counts (template dispatch) and vectorise over the CB channels.
#define AFGAN_AI inline __attribute__((always_inline))

template <int CB>
using SVec = VecT<CB>;  // the streaming engine's name for the same channel-block vectors

// 64-byte aligned growable float buffer (per thread, reused across calls).
struct AlignedBuf {
  float* p = nullptr;
  size_t n = 0;
  float* get(size_t m) {
    if (m > n) {
      std::free(p);
      size_t bytes = ((std::max<size_t>(m, 16) * sizeof(float) + 63) / 64) * 64;
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      n = bytes / sizeof(float);
    }
    return p;
  }
  ~AlignedBuf() { std::free(p); }
};

struct StreamScratch {
  AlignedBuf U, V, T, S;
  std::vector<const float*> rows;
};

// Padded tap table of one pass: for output o, taps [o * nt, (o + 1) * nt) as (offset, weight);
// lo/hi = source index range (lo >= hi: no taps, output is 0).
struct PassTab {
  int nt = 1;
  std::vector<int> off, lo, hi;
  std::vector<float> w, wsum;
};

// Builds the table for outputs [o0, o1) of `t`; offsets = (idx - base) * stride.
inline PassTab MakePassTab(const Taps& t, int o0, int o1, int base, int stride, const std::vector<float>& g) {
  PassTab p;
  p.nt = 1;
  for (int o = o0; o < o1; ++o) p.nt = std::max(p.nt, t.end(o) - t.begin(o));
  const int n = std::max(0, o1 - o0);
  p.off.assign(static_cast<size_t>(n) * p.nt, 0);
  p.w.assign(static_cast<size_t>(n) * p.nt, 0.f);
  p.lo.assign(n, 0);
  p.hi.assign(n, 0);
  p.wsum.assign(n, 0.f);
  for (int o = o0; o < o1; ++o) {
    const int r = o - o0;
    int lo = 1 << 30, hi = -(1 << 30);
    for (int q = t.begin(o); q < t.end(o); ++q) { lo = std::min(lo, t.idx[q]); hi = std::max(hi, t.idx[q] + 1); }
    if (lo >= hi) { lo = hi = 0; }
    p.lo[r] = lo;
    p.hi[r] = hi;
    int j = 0;
    for (int q = t.begin(o); q < t.end(o); ++q, ++j) {
      p.off[static_cast<size_t>(r) * p.nt + j] = (t.idx[q] - base) * stride;
      p.w[static_cast<size_t>(r) * p.nt + j] = g[t.k[q]];
      p.wsum[r] += g[t.k[q]];
    }
    for (; j < p.nt; ++j) p.off[static_cast<size_t>(r) * p.nt + j] = (lo - base) * stride;  // zero-weight pad
  }
  return p;
}

inline int MaxSpan(const PassTab& p) {
  int m = 1;
  for (size_t r = 0; r < p.lo.size(); ++r) m = std::max(m, p.hi[r] - p.lo[r]);
  return m;
}

// x pass: dst[e][0:CB] = sum_q w[e][q] * src[off[e][q] + 0:CB] (+ wsum[e] * bias).
template <int CB, int NT>
inline void XPass(float* __restrict dst, const float* __restrict src, const int* __restrict off,
                  const float* __restrict w, int nt_rt, int nout, const float* __restrict wsum,
                  const float* __restrict bias) {
  using V = SVec<CB>;
  const int nt = NT > 0 ? NT : nt_rt;
  typename V::v b[V::K];
  for (int k = 0; k < V::K; ++k) b[k] = bias ? V::load(bias + k * V::W) : typename V::v{};
  for (int e = 0; e < nout; ++e, off += nt, w += nt) {
    typename V::v acc[V::K];
    for (int k = 0; k < V::K; ++k) acc[k] = wsum[e] * b[k];
    for (int q = 0; q < nt; ++q) {
      const float* s = src + off[q];
      const float wq = w[q];
      for (int k = 0; k < V::K; ++k) acc[k] += wq * V::load(s + k * V::W);
    }
    for (int k = 0; k < V::K; ++k) V::store(dst + static_cast<size_t>(e) * CB + k * V::W, acc[k]);
  }
}

// y pass: for each pixel e, acc = sum_q w[q] * rows[q][e * CB + 0:CB]; epi(e, acc).
template <int CB, int NT, class Epi>
AFGAN_AI void YPass(const float* const* rows_in, const float* w_in, int nt_rt, int npix, Epi& epi) {
  using V = SVec<CB>;
  constexpr int NB = NT > 0 ? NT : 1;
  const float* rows[NB];
  float w[NB];
  if (NT > 0)
    for (int q = 0; q < NB; ++q) { rows[q] = rows_in[q]; w[q] = w_in[q]; }
  for (int e = 0; e < npix; ++e) {
    typename V::v acc[V::K];
    for (int k = 0; k < V::K; ++k) acc[k] = typename V::v{};
    const size_t o = static_cast<size_t>(e) * CB;
    if (NT > 0) {
      for (int q = 0; q < NB; ++q)
        for (int k = 0; k < V::K; ++k) acc[k] += w[q] * V::load(rows[q] + o + k * V::W);
    } else {
      for (int q = 0; q < nt_rt; ++q)
        for (int k = 0; k < V::K; ++k) acc[k] += w_in[q] * V::load(rows_in[q] + o + k * V::W);
    }
    epi(e, acc);
  }
}

#define AFGAN_NT_CASES(M) M(1) M(2) M(3) M(4) M(6) M(8) M(12) M(24)

template <int CB>
inline void XPassAny(float* dst, const float* src, const PassTab& t, int o_first, int nout, const float* bias) {
  const int* off = t.off.data() + static_cast<size_t>(o_first) * t.nt;
  const float* w = t.w.data() + static_cast<size_t>(o_first) * t.nt;
  const float* ws = t.wsum.data() + o_first;
  switch (t.nt) {
#define AFGAN_X_CASE(N) \
  case N: XPass<CB, N>(dst, src, off, w, N, nout, ws, bias); return;
    AFGAN_NT_CASES(AFGAN_X_CASE)
#undef AFGAN_X_CASE
    default: XPass<CB, 0>(dst, src, off, w, t.nt, nout, ws, bias);
  }
}

template <int CB, class Epi>
inline void YPassAny(const float* const* rows, const float* w, int nt, int npix, Epi& epi) {
  switch (nt) {
#define AFGAN_Y_CASE(N) \
  case N: YPass<CB, N, Epi>(rows, w, N, npix, epi); return;
    AFGAN_NT_CASES(AFGAN_Y_CASE)
#undef AFGAN_Y_CASE
    default: YPass<CB, 0, Epi>(rows, w, nt, npix, epi);
  }
}

// Two adjacent output rows of a y pass in one sweep (register blocking): both rows' taps are merged into
// one ascending list of NU distinct source rows with a weight per output (0 where a row does not
// contribute), so every source element is loaded once for both outputs (about half the L2 traffic of two
// separate sweeps; the interior of every polyphase table has this structure with NU = nt + 1 (up 2) or
// nt + down (down)). Summation order per output is unchanged (ascending source row).
struct PairTab {
  int nu = 0;                 // padded number of distinct rows per pair (uniform)
  std::vector<int> idx;       // [n - 1][nu] source row index (ascending; pads repeat the last one)
  std::vector<float> w;       // [n - 1][nu][2] weight for output o / o + 1
  std::vector<int> lo, hi;    // source row range of the pair; lo >= hi: pair not usable (an empty output)
};

inline int PairRound(int nu) {
  static const int sizes[] = {2, 3, 4, 7, 8, 14, 16};
  for (int s : sizes)
    if (nu <= s) return s;
  return nu;  // runtime tap count (generic loop)
}

// Pairs (o, o + 1) for o = 0, step, 2 step, ... (step 1: every o, for the y passes; step 2: a partition,
// for the x passes). Offsets are p's offsets; an empty output contributes nothing (its pair partner is
// still computed; a pair of two empty outputs reads offset 0 with zero weights). lo/hi are the source
// range of pairs whose outputs are both non-empty with touching source ranges (else lo = hi = 0: the
// y passes then run the two rows separately, so rows no output reads are never computed).
inline PairTab MakePairTab(const PassTab& p, int step = 1) {
  PairTab t;
  const int n = static_cast<int>(p.lo.size()), nt = p.nt;
  const int np = n < 2 ? 0 : (n - 2) / step + 1;
  if (np < 1) return t;
  std::vector<std::vector<int>> lists(np);
  int nu = 1;
  for (int r = 0; r < np; ++r) {
    const int o = r * step;
    std::vector<int>& l = lists[r];
    for (int b = 0; b < 2; ++b)
      if (p.lo[o + b] < p.hi[o + b])
        for (int j = 0; j < nt; ++j) l.push_back(p.off[static_cast<size_t>(o + b) * nt + j]);
    if (l.empty()) l.push_back(0);
    std::sort(l.begin(), l.end());
    l.erase(std::unique(l.begin(), l.end()), l.end());
    nu = std::max(nu, static_cast<int>(l.size()));
  }
  nu = PairRound(nu);
  t.nu = nu;
  t.idx.assign(static_cast<size_t>(np) * nu, 0);
  t.w.assign(static_cast<size_t>(np) * nu * 2, 0.f);
  t.lo.assign(np, 0);
  t.hi.assign(np, 0);
  for (int r = 0; r < np; ++r) {
    const int o = r * step;
    const std::vector<int>& l = lists[r];
    if (p.lo[o] < p.hi[o] && p.lo[o + 1] < p.hi[o + 1] &&
        std::max(p.lo[o], p.lo[o + 1]) <= std::min(p.hi[o], p.hi[o + 1])) {  // no gap: no extra rows computed
      t.lo[r] = std::min(p.lo[o], p.lo[o + 1]);
      t.hi[r] = std::max(p.hi[o], p.hi[o + 1]);
    }
    int* id = &t.idx[static_cast<size_t>(r) * nu];
    for (int u = 0; u < nu; ++u) id[u] = l[std::min<size_t>(u, l.size() - 1)];
    for (int b = 0; b < 2; ++b) {
      if (p.lo[o + b] >= p.hi[o + b]) continue;
      for (int j = 0; j < nt; ++j) {
        const size_t q = static_cast<size_t>(o + b) * nt + j;
        const int u = static_cast<int>(std::lower_bound(l.begin(), l.end(), p.off[q]) - l.begin());
        t.w[(static_cast<size_t>(r) * nu + u) * 2 + b] += p.w[q];
      }
    }
  }
  return t;
}

inline int MaxPairSpan(const PairTab& t) {
  int m = 1;
  for (size_t r = 0; r < t.lo.size(); ++r) m = std::max(m, t.hi[r] - t.lo[r]);
  return m;
}

// acc_b = sum_u w[u][b] * rows[u][e * CB + 0:CB]; epi0(e, acc_0); epi1(e, acc_1).
template <int CB, int NU, class E0, class E1>
AFGAN_AI void YPass2(const float* const* rows_in, const float* w_in, int nu_rt, int npix, E0& epi0, E1& epi1) {
  using V = SVec<CB>;
  constexpr int NB = NU > 0 ? NU : 1;
  const float* rows[NB];
  float w0[NB], w1[NB];
  if (NU > 0)
    for (int u = 0; u < NB; ++u) { rows[u] = rows_in[u]; w0[u] = w_in[2 * u]; w1[u] = w_in[2 * u + 1]; }
  for (int e = 0; e < npix; ++e) {
    typename V::v a0[V::K], a1[V::K];
    for (int k = 0; k < V::K; ++k) a0[k] = a1[k] = typename V::v{};
    const size_t o = static_cast<size_t>(e) * CB;
    if (NU > 0) {
      for (int u = 0; u < NB; ++u)
        for (int k = 0; k < V::K; ++k) {
          const typename V::v d = V::load(rows[u] + o + k * V::W);
          a0[k] += w0[u] * d;
          a1[k] += w1[u] * d;
        }
    } else {
      for (int u = 0; u < nu_rt; ++u)
        for (int k = 0; k < V::K; ++k) {
          const typename V::v d = V::load(rows_in[u] + o + k * V::W);
          a0[k] += w_in[2 * u] * d;
          a1[k] += w_in[2 * u + 1] * d;
        }
    }
    epi0(e, a0);
    epi1(e, a1);
  }
}

template <int CB, class E0, class E1>
inline void YPass2Any(const float* const* rows, const float* w, int nu, int npix, E0& epi0, E1& epi1) {
  switch (nu) {
#define AFGAN_Y2_CASE(N) \
  case N: YPass2<CB, N, E0, E1>(rows, w, N, npix, epi0, epi1); return;
    AFGAN_Y2_CASE(2) AFGAN_Y2_CASE(3) AFGAN_Y2_CASE(4) AFGAN_Y2_CASE(7) AFGAN_Y2_CASE(8) AFGAN_Y2_CASE(14)
    AFGAN_Y2_CASE(16)
#undef AFGAN_Y2_CASE
    default: YPass2<CB, 0, E0, E1>(rows, w, nu, npix, epi0, epi1);
  }
}

// x pass, two adjacent outputs per step (pair table with step 2): dst[e][0:CB] for e in [0, nout).
template <int CB, int NU>
inline void XPass2(float* __restrict dst, const float* __restrict src, const int* __restrict off,
                   const float* __restrict w, int nu_rt, int npair, const float* __restrict wsum,
                   const float* __restrict bias) {
  using V = SVec<CB>;
  const int nu = NU > 0 ? NU : nu_rt;
  typename V::v b[V::K];
  for (int k = 0; k < V::K; ++k) b[k] = bias ? V::load(bias + k * V::W) : typename V::v{};
  for (int p = 0; p < npair; ++p, off += nu, w += 2 * nu) {
    typename V::v a0[V::K], a1[V::K];
    for (int k = 0; k < V::K; ++k) { a0[k] = wsum[2 * p] * b[k]; a1[k] = wsum[2 * p + 1] * b[k]; }
    for (int u = 0; u < nu; ++u) {
      const float* s = src + off[u];
      const float w0 = w[2 * u], w1 = w[2 * u + 1];
      for (int k = 0; k < V::K; ++k) {
        const typename V::v d = V::load(s + k * V::W);
        a0[k] += w0 * d;
        a1[k] += w1 * d;
      }
    }
    float* d0 = dst + static_cast<size_t>(2 * p) * CB;
    for (int k = 0; k < V::K; ++k) { V::store(d0 + k * V::W, a0[k]); V::store(d0 + CB + k * V::W, a1[k]); }
  }
}

// Full x pass of nout outputs: pairs from `t2` (built from `t` with step 2), the odd last output from `t`.
template <int CB>
inline void XPassPairs(float* dst, const float* src, const PassTab& t, const PairTab& t2, int nout, const float* bias) {
  const int npair = t2.nu > 0 ? nout / 2 : 0;
  if (npair > 0) {
    const int* off = t2.idx.data();
    const float* w = t2.w.data();
    const float* ws = t.wsum.data();
    switch (t2.nu) {
#define AFGAN_X2_CASE(N) \
  case N: XPass2<CB, N>(dst, src, off, w, N, npair, ws, bias); break;
      AFGAN_X2_CASE(2) AFGAN_X2_CASE(3) AFGAN_X2_CASE(4) AFGAN_X2_CASE(7) AFGAN_X2_CASE(8) AFGAN_X2_CASE(14)
      AFGAN_X2_CASE(16)
#undef AFGAN_X2_CASE
      default: XPass2<CB, 0>(dst, src, off, w, t2.nu, npair, ws, bias);
    }
  }
  if (2 * npair < nout)
    XPassAny<CB>(dst + static_cast<size_t>(2 * npair) * CB, src, t, 2 * npair, nout - 2 * npair, bias);
}

template <int CB>
struct EpiStore {  // dst[e][0:CB] = acc
  float* dst;
  AFGAN_AI void operator()(int e, typename SVec<CB>::v* acc) const {
    using V = SVec<CB>;
    for (int k = 0; k < V::K; ++k) V::store(dst + static_cast<size_t>(e) * CB + k * V::W, acc[k]);
  }
};

template <int CB>
struct EpiOut {  // output row: dst[e * stride + 0:nc] = acc
  float* dst;
  int stride, nc;
  AFGAN_AI void operator()(int e, typename SVec<CB>::v* acc) const {
    StoreBlock<CB>(dst + static_cast<int64_t>(e) * stride, acc, nc);
  }
};

// Forward nonlinearity (same rule as afgan::flrelu_forward_elem, vectorised) + 2-bit code.
template <int CB>
struct EpiForward {
  float* dst;
  uint8_t* code;  // byte of channel c0 at pixel 0 of this row, or nullptr (row not owned)
  int code_stride, nbytes;
  float gain, slope, clamp;  // clamp = +inf when none
  AFGAN_AI void operator()(int e, typename SVec<CB>::v* acc) const {
    using V = SVec<CB>;
    typedef typename V::vi vi;
    uint8_t bytes[CB / 4];
    for (int k = 0; k < V::K; ++k) {
      typename V::v t = acc[k] * gain;
      vi neg = (vi)t < 0;  // IEEE sign bit (also -0)
      t = neg ? t * slope : t;
      vi bits = (vi)t;
      vi absb = bits & 0x7fffffff;
      typename V::v a = (typename V::v)absb;
      vi cl = a > clamp;  // false for NaN
      vi cb = (bits & static_cast<int32_t>(0x80000000u)) | FloatBits(clamp);
      bits = cl ? cb : bits;
      V::store(dst + static_cast<size_t>(e) * CB + k * V::W, (typename V::v)bits);
      if (code) PackCodes<V::W>(neg, cl, bytes + k * (V::W / 4));
    }
    if (code) {
      uint8_t* p = code + static_cast<int64_t>(e) * code_stride;
      if (nbytes == CB / 4) std::memcpy(p, bytes, CB / 4);
      else std::memcpy(p, bytes, nbytes);
    }
  }
  static inline int32_t FloatBits(float f) { int32_t i; std::memcpy(&i, &f, 4); return i; }
  // code = clamped ? 2 : (neg ? 1 : 0), 2 bits per channel, 4 channels per byte (low bits first).
  template <int W>
  static AFGAN_AI void PackCodes(const typename SVec<CB>::vi& neg, const typename SVec<CB>::vi& cl, uint8_t* out) {
#if defined(__AVX512F__) && defined(__BMI2__)
    if constexpr (W == 16) {
      __m512i n, c;
      std::memcpy(&n, &neg, 64);
      std::memcpy(&c, &cl, 64);
      const uint32_t mn = _mm512_movepi32_mask(n), mc = _mm512_movepi32_mask(c);
      const uint32_t word = _pdep_u32(mn & ~mc, 0x55555555u) | _pdep_u32(mc, 0xAAAAAAAAu);
      std::memcpy(out, &word, 4);
      return;
    }
#elif defined(__x86_64__) && defined(__AVX2__) && defined(__BMI2__)
    if constexpr (W == 8) {
      __m256 n, c;
      std::memcpy(&n, &neg, 32);
      std::memcpy(&c, &cl, 32);
      const uint32_t mn = _mm256_movemask_ps(n), mc = _mm256_movemask_ps(c);
      const uint16_t word = static_cast<uint16_t>(_pdep_u32(mn & ~mc, 0x5555u) | _pdep_u32(mc, 0xAAAAu));
      std::memcpy(out, &word, 2);
      return;
    }
#endif
    for (int j = 0; j < W / 4; ++j) {
      uint32_t b = 0;
      for (int i = 0; i < 4; ++i) {
        const int c = 4 * j + i;
        const uint32_t cc = cl[c] ? 2u : (neg[c] ? 1u : 0u);
        b |= cc << (2 * i);
      }
      out[j] = static_cast<uint8_t>(b);
    }
  }
};

// Backward mask: acc *= (code 0: gain, 1: gain * slope, 2: 0).
template <int CB>
struct EpiMask {
  float* dst;
  const uint8_t* code;  // byte of channel c0 at pixel 0 of this row
  int code_stride, nbytes;
  float gain, gslope;
  AFGAN_AI void operator()(int e, typename SVec<CB>::v* acc) const {
    using V = SVec<CB>;
    const uint8_t* p = code + static_cast<int64_t>(e) * code_stride;
    uint8_t bytes[CB / 4];
    if (nbytes == CB / 4) std::memcpy(bytes, p, CB / 4);
    else {
      for (int j = 0; j < CB / 4; ++j) bytes[j] = j < nbytes ? p[j] : 0;
    }
    typedef typename V::vu vu;
    vu shift;
    for (int c = 0; c < V::W; ++c) shift[c] = 2 * c;
    for (int k = 0; k < V::K; ++k) {
      uint32_t word = 0;
      std::memcpy(&word, bytes + k * (V::W / 4), V::W / 4);
      vu cu = ((vu{} + word) >> shift) & 3u;
      typename V::v s = (cu == 0u) ? (typename V::v{} + gain) : ((cu == 1u) ? (typename V::v{} + gslope) : typename V::v{});
      V::store(dst + static_cast<size_t>(e) * CB + k * V::W, acc[k] * s);
    }
  }
};

// Software prefetch of npix chunks of `bytes` bytes, `stride` bytes apart (rows of the NHWC tensors are
// strided over C: the hardware prefetchers do not follow them well).
inline void PrefetchChunks(const void* base, int npix, int64_t stride, int bytes, bool write) {
  const char* p = static_cast<const char*>(base);
  for (int e = 0; e < npix; ++e, p += stride)
    for (int b = 0; b < bytes; b += 64) {
      if (write) __builtin_prefetch(p + b, 1, 3);
      else __builtin_prefetch(p + b, 0, 3);
    }
}

template <int CB>
class StreamEngine {
 public:
  StreamEngine(const Geometry& g, int down_y, int threads, const float* src, const float* bias, float* out,
               uint8_t* code_w, const uint8_t* code_r)
      : g_(g), down_y_(down_y), src_(src), bias_(bias), out_(out), code_w_(code_w), code_r_(code_r) {
    g.Bx.src_range(0, g.outW, &jx_lo_, &jx_hi_);
    if (jx_lo_ >= jx_hi_) { jx_lo_ = jx_hi_ = 0; }
    if (jx_hi_ > jx_lo_) g.Ax.src_range(jx_lo_, jx_hi_, &sx_lo_, &sx_hi_);
    if (sx_lo_ >= sx_hi_) { sx_lo_ = sx_hi_ = 0; }
    empty_ = jx_hi_ <= jx_lo_ || sx_hi_ <= sx_lo_;
    cblocks_ = (g.C + CB - 1) / CB;
    code_bytes_ = (g.C + 3) / 4;
    wj_ = jx_hi_ - jx_lo_;
    nsx_ = sx_hi_ - sx_lo_;
    const FilterInfo& fa = *g.fa;
    const FilterInfo& fb = *g.fb;
    if (!empty_) {
      ax_direct_ = MakePassTab(g.Ax, jx_lo_, jx_hi_, sx_lo_, g.C, fa.gx);
      ax_copy_ = MakePassTab(g.Ax, jx_lo_, jx_hi_, sx_lo_, CB, fa.gx);
      bx_ = MakePassTab(g.Bx, 0, g.outW, jx_lo_, CB, fb.gx);
      ax2_direct_ = MakePairTab(ax_direct_, 2);
      ax2_copy_ = MakePairTab(ax_copy_, 2);
      bx2_ = MakePairTab(bx_, 2);
    }
    ay_ = MakePassTab(g.Ay, 0, g.hiH, 0, 1, fa.gy);
    by_ = MakePassTab(g.By, 0, g.outH, 0, 1, fb.gy);
    ay2_ = MakePairTab(ay_);
    by2_ = MakePairTab(by_);
    ru_ = std::max(MaxSpan(ay_), MaxPairSpan(ay2_));
    rv_ = std::max(MaxSpan(by_), MaxPairSpan(by2_));
    // Row bands only when (sample, channel block) pairs are too few to feed the threads.
    bands_ = 1;
    const int64_t base = static_cast<int64_t>(g.N) * cblocks_;
    while (base * bands_ < 4 * std::max(1, threads) && g.outH / (bands_ * 2) >= 8) bands_ *= 2;
    band_h_ = (g.outH + bands_ - 1) / bands_;
    bands_ = (g.outH + band_h_ - 1) / band_h_;
    const double macs = static_cast<double>(g.srcH) * wj_ * ax_direct_.nt + static_cast<double>(g.hiH) * wj_ * ay_.nt +
                        static_cast<double>(g.hiH) * g.outW * bx_.nt + static_cast<double>(g.outH) * g.outW * by_.nt;
    cost_ = static_cast<int64_t>(macs * CB / bands_) + 1000;
  }

  int64_t units() const { return static_cast<int64_t>(g_.N) * cblocks_ * bands_; }
  int64_t cost_per_unit() const { return cost_; }

  void Run(int64_t u, StreamScratch* s) const {
    const int band = static_cast<int>(u % bands_);
    const int64_t r = u / bands_;
    const int cb = static_cast<int>(r % cblocks_);
    const int n = static_cast<int>(r / cblocks_);
    const int o0 = band * band_h_, o1 = std::min(g_.outH, o0 + band_h_);
    const int c0 = cb * CB, nc = std::min(CB, g_.C - c0);
    const int outW = g_.outW, C = g_.C;
    float* out_n = out_ + static_cast<int64_t>(n) * g_.outH * outW * C + c0;
    if (empty_) {
      for (int oy = o0; oy < o1; ++oy) ZeroRow(out_n + static_cast<int64_t>(oy) * outW * C, nc);
      return;
    }
    const size_t urow = static_cast<size_t>(wj_) * CB, vrow = static_cast<size_t>(outW) * CB;
    float* U = s->U.get(static_cast<size_t>(ru_) * urow);
    float* V = s->V.get(static_cast<size_t>(rv_) * vrow);
    float* T = s->T.get(2 * urow);
    float* T1 = T + urow;
    float* S = nc < CB ? s->S.get(static_cast<size_t>(nsx_) * CB) : nullptr;
    s->rows.resize(std::max({ay_.nt, by_.nt, ay2_.nu, by2_.nu, 1}));
    const float** rows = s->rows.data();
    float bias[CB];
    for (int c = 0; c < CB; ++c) bias[c] = (bias_ && c < nc) ? bias_[c0 + c] : 0.f;
    const float* biasp = bias_ ? bias : nullptr;
    const int own_lo = o0 == 0 ? 0 : o0 * down_y_;
    const int own_hi = o1 == g_.outH ? g_.hiH : o1 * down_y_;
    const int nbytes = (nc + 3) / 4;
    const float clamp = g_.clamp >= 0.f ? g_.clamp : std::numeric_limits<float>::infinity();
    const float* src_n = src_ + (static_cast<int64_t>(n) * g_.srcH * g_.srcW + sx_lo_) * C + c0;

    int u_next = -(1 << 30), v_next = -(1 << 30);
    // Source rows [max(u_next, ilo), ihi) -> U ring (x pass, bias folded in).
    auto ensure_u = [&](int ilo, int ihi) {
      for (int i = std::max(u_next, ilo); i < ihi; ++i) {
        float* ud = U + static_cast<size_t>(i % ru_) * urow;
        const float* sp = src_n + static_cast<int64_t>(i) * g_.srcW * C;
        if (i + 1 < g_.srcH) PrefetchChunks(sp + static_cast<int64_t>(g_.srcW) * C, nsx_, 4LL * C, 4 * nc, false);
        if (nc == CB) {
          XPassPairs<CB>(ud, sp, ax_direct_, ax2_direct_, wj_, biasp);
        } else {
          for (int ix = 0; ix < nsx_; ++ix)
            for (int c = 0; c < CB; ++c) S[ix * CB + c] = c < nc ? sp[static_cast<int64_t>(ix) * C + c] : 0.f;
          XPassPairs<CB>(ud, S, ax_copy_, ax2_copy_, wj_, biasp);
        }
      }
      u_next = std::max(u_next, ihi);
    };
    auto fwd_epi = [&](float* dst, int J) {
      EpiForward<CB> epi{dst, nullptr, code_bytes_, nbytes, g_.gain, g_.slope, clamp};
      if (code_w_ && J >= own_lo && J < own_hi)
        epi.code = code_w_ + ((static_cast<int64_t>(n) * g_.hiH + J) * g_.hiW + jx_lo_) * code_bytes_ + c0 / 4;
      return epi;
    };
    auto mask_epi = [&](float* dst, int J) {
      return EpiMask<CB>{dst, code_r_ + ((static_cast<int64_t>(n) * g_.hiH + J) * g_.hiW + jx_lo_) * code_bytes_ + c0 / 4,
                         code_bytes_, nbytes, g_.gain, g_.gain * g_.slope};
    };
    // High-rate rows [max(v_next, jlo), jhi) -> T -> V ring (two rows per sweep where possible).
    auto ensure_v = [&](int jlo, int jhi) {
      int J = std::max(v_next, jlo);
      while (J < jhi) {
        if (J + 1 < jhi && ay2_.nu > 0 && ay2_.lo[J] < ay2_.hi[J]) {
          ensure_u(ay2_.lo[J], ay2_.hi[J]);
          const int nu = ay2_.nu;
          for (int q = 0; q < nu; ++q) rows[q] = U + static_cast<size_t>(ay2_.idx[static_cast<size_t>(J) * nu + q] % ru_) * urow;
          const float* w = &ay2_.w[static_cast<size_t>(J) * nu * 2];
          if (g_.mid == Mid::kForward) {
            EpiForward<CB> e0 = fwd_epi(T, J), e1 = fwd_epi(T1, J + 1);
            YPass2Any<CB>(rows, w, nu, wj_, e0, e1);
          } else {
            EpiMask<CB> e0 = mask_epi(T, J), e1 = mask_epi(T1, J + 1);
            for (int jj = J + 2; jj < std::min(J + 4, g_.hiH); ++jj)
              PrefetchChunks(mask_epi(T, jj).code, wj_, code_bytes_, nbytes, false);
            YPass2Any<CB>(rows, w, nu, wj_, e0, e1);
          }
          XPassPairs<CB>(V + static_cast<size_t>(J % rv_) * vrow, T, bx_, bx2_, outW, nullptr);
          XPassPairs<CB>(V + static_cast<size_t>((J + 1) % rv_) * vrow, T1, bx_, bx2_, outW, nullptr);
          J += 2;
          continue;
        }
        const int ilo = ay_.lo[J], ihi = ay_.hi[J];
        if (ilo >= ihi) {
          std::memset(T, 0, urow * sizeof(float));
        } else {
          ensure_u(ilo, ihi);
          const int nt = ay_.nt;
          for (int q = 0; q < nt; ++q)
            rows[q] = U + static_cast<size_t>((ay_.off[static_cast<size_t>(J) * nt + q]) % ru_) * urow;
          const float* w = &ay_.w[static_cast<size_t>(J) * nt];
          if (g_.mid == Mid::kForward) {
            EpiForward<CB> epi = fwd_epi(T, J);
            YPassAny<CB>(rows, w, nt, wj_, epi);
          } else {
            EpiMask<CB> epi = mask_epi(T, J);
            YPassAny<CB>(rows, w, nt, wj_, epi);
          }
        }
        XPassPairs<CB>(V + static_cast<size_t>(J % rv_) * vrow, T, bx_, bx2_, outW, nullptr);
        ++J;
      }
      v_next = std::max(v_next, jhi);
    };

    for (int oy = o0; oy < o1;) {
      float* orow = out_n + static_cast<int64_t>(oy) * outW * C;
      for (int r = oy + 2; r < std::min(oy + 4, o1); ++r)
        PrefetchChunks(out_n + static_cast<int64_t>(r) * outW * C, outW, 4LL * C, 4 * nc, true);
      if (oy + 1 < o1 && by2_.nu > 0 && by2_.lo[oy] < by2_.hi[oy]) {
        ensure_v(by2_.lo[oy], by2_.hi[oy]);
        const int nu = by2_.nu;
        for (int q = 0; q < nu; ++q) rows[q] = V + static_cast<size_t>(by2_.idx[static_cast<size_t>(oy) * nu + q] % rv_) * vrow;
        EpiOut<CB> e0{orow, C, nc}, e1{orow + static_cast<int64_t>(outW) * C, C, nc};
        YPass2Any<CB>(rows, &by2_.w[static_cast<size_t>(oy) * nu * 2], nu, outW, e0, e1);
        oy += 2;
        continue;
      }
      const int jlo = by_.lo[oy], jhi = by_.hi[oy];
      if (jlo >= jhi) { ZeroRow(orow, nc); ++oy; continue; }
      ensure_v(jlo, jhi);
      const int nt = by_.nt;
      for (int q = 0; q < nt; ++q) rows[q] = V + static_cast<size_t>(by_.off[static_cast<size_t>(oy) * nt + q] % rv_) * vrow;
      EpiOut<CB> epi{orow, C, nc};
      YPassAny<CB>(rows, &by_.w[static_cast<size_t>(oy) * nt], nt, outW, epi);
      ++oy;
    }
  }
 private:
  void ZeroRow(float* d, int nc) const {
    for (int ox = 0; ox < g_.outW; ++ox, d += g_.C)
      for (int c = 0; c < nc; ++c) d[c] = 0.f;
  }

  const Geometry& g_;
  int down_y_;
  const float* src_;
  const float* bias_;
  float* out_;
  uint8_t* code_w_;
  const uint8_t* code_r_;
  PassTab ax_direct_, ax_copy_, bx_, ay_, by_;
  PairTab ay2_, by2_, ax2_direct_, ax2_copy_, bx2_;
  bool empty_ = false;
  int jx_lo_ = 0, jx_hi_ = 0, sx_lo_ = 0, sx_hi_ = 0, wj_ = 0, nsx_ = 0;
  int cblocks_ = 1, code_bytes_ = 1, ru_ = 1, rv_ = 1, bands_ = 1, band_h_ = 1;
  int64_t cost_ = 1;
};

template <int CB>
void RunEngineCB(const Geometry& g, int down_y, int threads, const ParallelFor& pf, const float* src,
                 const float* bias, float* out, uint8_t* code_w, const uint8_t* code_r) {
  if (g.fa->sep && g.fb->sep) {
    StreamEngine<CB> e(g, down_y, threads, src, bias, out, code_w, code_r);
    pf(e.units(), e.cost_per_unit(), [&e](int64_t begin, int64_t end) {
      thread_local StreamScratch scratch;
      for (int64_t u = begin; u < end; ++u) e.Run(u, &scratch);
    });
    return;
  }
  Engine<CB> e(g, down_y, src, bias, out, code_w, code_r);
  pf(e.units(), e.cost_per_unit(), [&e](int64_t begin, int64_t end) {
    thread_local Scratch scratch;
    for (int64_t u = begin; u < end; ++u) e.Run(u, &scratch);
  });
}

}  // namespace

void RunEngine(const Geometry& g, int down_y, int threads, const ParallelFor& pf, const float* src,
               const float* bias, float* out, uint8_t* code_w, const uint8_t* code_r) {
  // AFGAN_TF_FLRELU_CB lowers the largest channel block (tuning / tests); the level's maximum is the default.
  static const int cb_max = [] {
    const char* e = std::getenv("AFGAN_TF_FLRELU_CB");
    const int v = e ? std::atoi(e) : AFGAN_CB_MAX;
    return std::min(v, AFGAN_CB_MAX);
  }();
#if AFGAN_CB_MAX >= 64
  if (g.C >= 64 && cb_max >= 64) return RunEngineCB<64>(g, down_y, threads, pf, src, bias, out, code_w, code_r);
#endif
#if AFGAN_CB_MAX >= 32
  if (g.C >= 32 && cb_max >= 32) return RunEngineCB<32>(g, down_y, threads, pf, src, bias, out, code_w, code_r);
#endif
  if (g.C >= 16 && cb_max >= 16) return RunEngineCB<16>(g, down_y, threads, pf, src, bias, out, code_w, code_r);
  if (g.C >= 8 && cb_max >= 8) return RunEngineCB<8>(g, down_y, threads, pf, src, bias, out, code_w, code_r);
  RunEngineCB<4>(g, down_y, threads, pf, src, bias, out, code_w, code_r);
}

}  // namespace AFGAN_ISA_NS
}  // namespace afgan_flrelu
