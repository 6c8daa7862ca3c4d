// Fused, tiled filtered_lrelu (docs/ALGORITHM.md §1.4, §1.5): the algorithm of the CUDA kernel, written as phases that
// also run on the CPU.
//
// One thread block computes one output tile (TH x TW pixels) of one sample for a block of CB channels:
//   phase 0  load the two filters (correlation form, gains folded in) into shared memory;
//   phase 1  load the source footprint of the tile (+ bias) into shared memory (region A);
//   phase 2  stage A (rate change of the first filter) in shared memory: separable filters as an x pass
//            (A -> B) then a y pass (B -> A), a 2-D filter as one pass (A -> B); the y / 2-D pass also
//            applies the middle step: forward = gain, leaky ReLU, clamp and the packed 2-bit code
//            (written to global memory for the high-rate samples this tile owns), mask = multiply by the
//            gain / gain*slope / 0 read from the code;
//   phase 3  stage B (FIR + decimation) evaluated only at the kept samples: separable = x pass into the
//            other region, then y pass into global memory; 2-D = one pass into global memory.
// Every phase is an AFGAN_HD function of (block index, thread index, shared-memory pointer, params); a
// thread handles the work items tid, tid + nthreads, ... of its phase. The CUDA kernel
// (filtered_lrelu_gpu.cu.cc) runs the phases with __syncthreads() between them; the CPU emulator
// (filtered_lrelu_emu_op.cc, test op AfganFilteredLreluTileEmu) runs the SAME functions for every block
// with a sequential loop over the thread indices of each phase and a host buffer as shared memory, so the
// tile algorithm is tested on machines without a GPU.
//
// The same engine runs the three directions of the op (see make_forward / make_grad below):
//   forward:        x (+b) --[fu, up]--> high rate --lrelu/clamp, write code--> --[fd, down]--> y
//   gradient:       dy --[adjoint of fd]--> high rate --x code mask--> --[adjoint of fu]--> dx
//   adjoint of the gradient (second order): forward stages with the code mask.
// A stage along one axis is out[o] = sum_k g[k] * P[o*down + k], P[q] = in[(q - p0) / up] when
// (q - p0) is a multiple of up and in range (else 0) -- afgan::first_tap gives the first useful k.
// The adjoint of (up, down, p0, g with F taps) is (down, up, F - 1 - p0, reversed g).
#ifndef AFGAN_TF_CUSTOM_OPS_FILTERED_LRELU_TILE_H_
#define AFGAN_TF_CUSTOM_OPS_FILTERED_LRELU_TILE_H_

#include <cmath>
#include <cstdint>

#include "afgan_common.h"

namespace afgan {
namespace tile {

struct Stage {
  int up = 1, down = 1, p0 = 0;
};

// A filter as given to the op (rank 1 = separable: the same taps along x and y; rank 2 = [h, w]), read
// in correlation form: tap k = f[k] when flip, f[F - 1 - k] otherwise; scaled by sx (x taps), sy (y taps)
// or sx * sy (2-D taps).
struct FilterRef {
  const float* f = nullptr;
  int w = 1, h = 1;
  bool sep = true;
  bool flip = false;
  float sx = 1.f, sy = 1.f;
};

enum Mode : int { kForward = 0, kMask = 1 };
constexpr int kNumPhases = 6;

struct Params {
  int N = 0, C = 0;
  int srcH = 0, srcW = 0;  // stage A input
  int midH = 0, midW = 0;  // high-rate (code) domain
  int outH = 0, outW = 0;  // stage B output
  Stage ax, ay, bx, by;
  FilterRef fa, fb;
  int mode = kForward;
  float gain = 1.f, slope = 0.2f, clamp = INFINITY;  // clamp: +inf when none
  int code_bytes = 1;                                 // ceil(C / 4)
  // Tiling (plan_tiles).
  int TH = 1, TW = 1, CB = 4;  // output tile, channels per block (multiple of 4)
  int HJH = 1, HJW = 1;        // high-rate tile extent (upper bound over tiles)
  int SH = 1, SW = 1;          // source tile extent
  int tilesY = 1, tilesX = 1, cblocks = 1;
  int nthreads = 256;
  int off_fa = 0, off_fb = 0, off_A = 0, off_B = 0, smem_floats = 0;
  int64_t num_blocks() const { return static_cast<int64_t>(N) * cblocks * tilesY * tilesX; }
};

template <typename T>
struct IO {
  const T* src = nullptr;
  const T* bias = nullptr;  // [C] or null
  T* out = nullptr;
  uint8_t* code_w = nullptr;        // forward: [N, midH, midW, code_bytes], zero-initialised by the caller
  const uint8_t* code_r = nullptr;  // mask
};

// ------------------------------------------------------------------------------------------------ geometry
// Number of stage inputs an output tile of n samples reads (upper bound over tile positions).
AFGAN_HD int span(int n, const Stage& s, int F) {
  const int L = (n - 1) * s.down + F - 1;
  return (L + s.up - 1) / s.up + 1;
}
// First stage input read by the tile starting at output o0.
AFGAN_HD int span_origin(int o0, const Stage& s) { return floor_div(o0 * s.down - s.p0, s.up); }

struct Block {
  int n, c0, o0y, o0x;  // sample, first channel, tile origin (output)
  int J0y, J0x;         // high-rate origin
  int S0y, S0x;         // source origin
};

AFGAN_HD Block decode_block(const Params& p, int64_t blk) {
  Block b;
  const int tx = static_cast<int>(blk % p.tilesX);
  blk /= p.tilesX;
  const int ty = static_cast<int>(blk % p.tilesY);
  blk /= p.tilesY;
  const int cb = static_cast<int>(blk % p.cblocks);
  b.n = static_cast<int>(blk / p.cblocks);
  b.c0 = cb * p.CB;
  b.o0y = ty * p.TH;
  b.o0x = tx * p.TW;
  b.J0y = span_origin(b.o0y, p.by);
  b.J0x = span_origin(b.o0x, p.bx);
  b.S0y = span_origin(b.J0y, p.ay);
  b.S0x = span_origin(b.J0x, p.ax);
  return b;
}

AFGAN_HD int filter_floats(const FilterRef& f) { return f.sep ? f.w + f.h : f.w * f.h; }

// Correlation-form tap with gains (host and device; reads the op's filter tensor).
AFGAN_HD float tap1(const FilterRef& f, int F, int k, float s) { return (f.flip ? f.f[k] : f.f[F - 1 - k]) * s; }
AFGAN_HD float tap2(const FilterRef& f, int ky, int kx) {
  const float t = f.flip ? f.f[ky * f.w + kx] : f.f[(f.h - 1 - ky) * f.w + (f.w - 1 - kx)];
  return t * f.sx * f.sy;
}

// ------------------------------------------------------------------------------------------------ phases
// Phase 0: filters -> shared memory ([gx | gy] for separable, [h][w] for 2-D).
AFGAN_HD void phase_load_filters(const Params& p, int tid, float* sm) {
  for (int r = 0; r < 2; ++r) {
    const FilterRef& f = r == 0 ? p.fa : p.fb;
    float* d = sm + (r == 0 ? p.off_fa : p.off_fb);
    const int n = filter_floats(f);
    for (int i = tid; i < n; i += p.nthreads) {
      if (f.sep)
        d[i] = i < f.w ? tap1(f, f.w, i, f.sx) : tap1(f, f.h, i - f.w, f.sy);
      else
        d[i] = tap2(f, i / f.w, i % f.w);
    }
  }
}

// Phase 1: source footprint (+ bias) -> region A [SH][SW][CB]; zero outside the source / channels.
template <typename T>
AFGAN_HD void phase_load_source(const Params& p, int64_t blk, int tid, float* sm, const IO<T>& io) {
  const Block b = decode_block(p, blk);
  float* S = sm + p.off_A;
  const int total = p.SH * p.SW * p.CB;
  for (int i = tid; i < total; i += p.nthreads) {
    const int c = i % p.CB;
    const int sx = (i / p.CB) % p.SW;
    const int sy = i / (p.CB * p.SW);
    const int iy = b.S0y + sy, ix = b.S0x + sx, ch = b.c0 + c;
    float v = 0.f;
    if (iy >= 0 && iy < p.srcH && ix >= 0 && ix < p.srcW && ch < p.C) {
      v = static_cast<float>(io.src[((static_cast<int64_t>(b.n) * p.srcH + iy) * p.srcW + ix) * p.C + ch]);
      if (io.bias) v += static_cast<float>(io.bias[ch]);
    }
    S[i] = v;
  }
}

// Phase 2a (separable stage A only): x pass, region A [SH][SW][CB] -> region B [SH][HJW][CB].
AFGAN_HD void phase_stage_a_x(const Params& p, int64_t blk, int tid, float* sm) {
  if (!p.fa.sep) return;
  const Block b = decode_block(p, blk);
  const float* g = sm + p.off_fa;  // gx
  const float* S = sm + p.off_A;
  float* U = sm + p.off_B;
  const int total = p.SH * p.HJW * p.CB;
  for (int i = tid; i < total; i += p.nthreads) {
    const int c = i % p.CB;
    const int jx = (i / p.CB) % p.HJW;
    const int sy = i / (p.CB * p.HJW);
    const int J = b.J0x + jx;
    float acc = 0.f;
    if (J >= 0 && J < p.midW) {
      for (int k = first_tap(J, p.ax.down, p.ax.up, p.ax.p0); k < p.fa.w; k += p.ax.up) {
        const int ix = floor_div(J * p.ax.down + k - p.ax.p0, p.ax.up);
        if (ix < 0 || ix >= p.srcW) continue;
        acc += g[k] * S[(sy * p.SW + (ix - b.S0x)) * p.CB + c];
      }
    }
    U[i] = acc;
  }
}

// Middle step for one high-rate pixel and 4 channels (ch0 = first channel of the quad).
template <typename T>
AFGAN_HD void mid_quad(const Params& p, const Block& b, int J, int JX, int ch0, float v[4], const IO<T>& io) {
  const int64_t pix = (static_cast<int64_t>(b.n) * p.midH + J) * p.midW + JX;
  const int byte_idx = ch0 >> 2;
  if (ch0 >= p.C) {  // quad entirely in the channel padding of the last block: no code byte
    for (int e = 0; e < 4; ++e) v[e] = 0.f;
    return;
  }
  if (p.mode == kForward) {
    uint32_t packed = 0;
    for (int e = 0; e < 4; ++e) {
      uint8_t code = 0;
      v[e] = flrelu_forward_elem(v[e], p.gain, p.slope, p.clamp, &code);
      if (ch0 + e < p.C) packed |= static_cast<uint32_t>(code) << (2 * e);
    }
    if (io.code_w) {
      // Write the code of the samples the down filter reads, from the tile that owns them: the owner of
      // row J is output row o = min(floor(J / down), out - 1) (it reads J whenever anyone does).
      const int oy = floor_div(J, p.by.down) < p.outH - 1 ? floor_div(J, p.by.down) : p.outH - 1;
      const int ox = floor_div(JX, p.bx.down) < p.outW - 1 ? floor_div(JX, p.bx.down) : p.outW - 1;
      const bool read = J - oy * p.by.down < p.fb.h && JX - ox * p.bx.down < p.fb.w;
      const bool own = oy >= b.o0y && oy < b.o0y + p.TH && ox >= b.o0x && ox < b.o0x + p.TW;
      if (read && own) io.code_w[pix * p.code_bytes + byte_idx] = static_cast<uint8_t>(packed);
    }
  } else {
    const uint32_t byte = io.code_r[pix * p.code_bytes + byte_idx];
    for (int e = 0; e < 4; ++e) v[e] *= flrelu_code_scale((byte >> (2 * e)) & 3u, p.gain, p.slope);
  }
}

// Phase 2b: y pass (separable: region B -> region A) or the 2-D pass (region A -> region B), then the
// middle step; one work item = (high-rate pixel, quad of 4 channels). Out-of-domain samples are 0.
template <typename T>
AFGAN_HD void phase_stage_a_y_mid(const Params& p, int64_t blk, int tid, float* sm, const IO<T>& io) {
  const Block b = decode_block(p, blk);
  const int quads = p.CB / 4;
  const float* in = sm + (p.fa.sep ? p.off_B : p.off_A);
  float* Tt = sm + (p.fa.sep ? p.off_A : p.off_B);
  const float* g = sm + p.off_fa;
  const int total = p.HJH * p.HJW * quads;
  for (int i = tid; i < total; i += p.nthreads) {
    const int q = i % quads;
    const int jx = (i / quads) % p.HJW;
    const int jy = i / (quads * p.HJW);
    const int J = b.J0y + jy, JX = b.J0x + jx;
    float v[4] = {0.f, 0.f, 0.f, 0.f};
    const bool inside = J >= 0 && J < p.midH && JX >= 0 && JX < p.midW;
    if (inside) {
      if (p.fa.sep) {
        const float* gy = g + p.fa.w;
        for (int k = first_tap(J, p.ay.down, p.ay.up, p.ay.p0); k < p.fa.h; k += p.ay.up) {
          const int iy = floor_div(J * p.ay.down + k - p.ay.p0, p.ay.up);
          if (iy < 0 || iy >= p.srcH) continue;
          const float* u = in + ((iy - b.S0y) * p.HJW + jx) * p.CB + 4 * q;
          for (int e = 0; e < 4; ++e) v[e] += gy[k] * u[e];
        }
      } else {
        for (int ky = first_tap(J, p.ay.down, p.ay.up, p.ay.p0); ky < p.fa.h; ky += p.ay.up) {
          const int iy = floor_div(J * p.ay.down + ky - p.ay.p0, p.ay.up);
          if (iy < 0 || iy >= p.srcH) continue;
          for (int kx = first_tap(JX, p.ax.down, p.ax.up, p.ax.p0); kx < p.fa.w; kx += p.ax.up) {
            const int ix = floor_div(JX * p.ax.down + kx - p.ax.p0, p.ax.up);
            if (ix < 0 || ix >= p.srcW) continue;
            const float w = g[ky * p.fa.w + kx];
            const float* s = in + ((iy - b.S0y) * p.SW + (ix - b.S0x)) * p.CB + 4 * q;
            for (int e = 0; e < 4; ++e) v[e] += w * s[e];
          }
        }
      }
      mid_quad(p, b, J, JX, b.c0 + 4 * q, v, io);
    }
    float* d = Tt + (jy * p.HJW + jx) * p.CB + 4 * q;
    for (int e = 0; e < 4; ++e) d[e] = v[e];
  }
}

// Phase 3a (separable stage B only): x pass, high-rate tile [HJH][HJW][CB] -> [HJH][TW][CB].
AFGAN_HD void phase_stage_b_x(const Params& p, int64_t blk, int tid, float* sm) {
  if (!p.fb.sep) return;
  const Block b = decode_block(p, blk);
  const float* Tt = sm + (p.fa.sep ? p.off_A : p.off_B);
  float* V = sm + (p.fa.sep ? p.off_B : p.off_A);
  const float* g = sm + p.off_fb;  // gx
  const int total = p.HJH * p.TW * p.CB;
  for (int i = tid; i < total; i += p.nthreads) {
    const int c = i % p.CB;
    const int ox = (i / p.CB) % p.TW;
    const int jy = i / (p.CB * p.TW);
    const int O = b.o0x + ox;
    float acc = 0.f;
    if (O < p.outW) {
      for (int k = first_tap(O, p.bx.down, p.bx.up, p.bx.p0); k < p.fb.w; k += p.bx.up) {
        const int J = floor_div(O * p.bx.down + k - p.bx.p0, p.bx.up);
        if (J < 0 || J >= p.midW) continue;
        acc += g[k] * Tt[(jy * p.HJW + (J - b.J0x)) * p.CB + c];
      }
    }
    V[i] = acc;
  }
}

// Phase 3b: y pass (separable) or the 2-D pass of stage B, written to global memory.
template <typename T>
AFGAN_HD void phase_stage_b_y_store(const Params& p, int64_t blk, int tid, float* sm, const IO<T>& io) {
  const Block b = decode_block(p, blk);
  const float* in = p.fb.sep ? sm + (p.fa.sep ? p.off_B : p.off_A) : sm + (p.fa.sep ? p.off_A : p.off_B);
  const float* g = sm + p.off_fb;
  const int inW = p.fb.sep ? p.TW : p.HJW;
  const int total = p.TH * p.TW * p.CB;
  for (int i = tid; i < total; i += p.nthreads) {
    const int c = i % p.CB;
    const int ox = (i / p.CB) % p.TW;
    const int oy = i / (p.CB * p.TW);
    const int O = b.o0y + oy, OX = b.o0x + ox, ch = b.c0 + c;
    if (O >= p.outH || OX >= p.outW || ch >= p.C) continue;
    float acc = 0.f;
    if (p.fb.sep) {
      const float* gy = g + p.fb.w;
      for (int k = first_tap(O, p.by.down, p.by.up, p.by.p0); k < p.fb.h; k += p.by.up) {
        const int J = floor_div(O * p.by.down + k - p.by.p0, p.by.up);
        if (J < 0 || J >= p.midH) continue;
        acc += gy[k] * in[((J - b.J0y) * inW + ox) * p.CB + c];
      }
    } else {
      for (int ky = first_tap(O, p.by.down, p.by.up, p.by.p0); ky < p.fb.h; ky += p.by.up) {
        const int J = floor_div(O * p.by.down + ky - p.by.p0, p.by.up);
        if (J < 0 || J >= p.midH) continue;
        for (int kx = first_tap(OX, p.bx.down, p.bx.up, p.bx.p0); kx < p.fb.w; kx += p.bx.up) {
          const int JX = floor_div(OX * p.bx.down + kx - p.bx.p0, p.bx.up);
          if (JX < 0 || JX >= p.midW) continue;
          acc += g[ky * p.fb.w + kx] * in[((J - b.J0y) * inW + (JX - b.J0x)) * p.CB + c];
        }
      }
    }
    io.out[((static_cast<int64_t>(b.n) * p.outH + O) * p.outW + OX) * p.C + ch] = static_cast<T>(acc);
  }
}

// The phase sequence shared by the CUDA kernel and the CPU emulator (a barrier separates phases).
template <typename T>
AFGAN_HD void run_phase(int phase, const Params& p, int64_t blk, int tid, float* sm, const IO<T>& io) {
  switch (phase) {
    case 0: phase_load_filters(p, tid, sm); break;
    case 1: phase_load_source(p, blk, tid, sm, io); break;
    case 2: phase_stage_a_x(p, blk, tid, sm); break;
    case 3: phase_stage_a_y_mid(p, blk, tid, sm, io); break;
    case 4: phase_stage_b_x(p, blk, tid, sm); break;
    case 5: phase_stage_b_y_store(p, blk, tid, sm, io); break;
  }
}

// Shared-memory range [*off, *off + *n) a phase writes (host; the emulator poisons it with NaN before the
// phase, so a later phase reading data the phase should have written -- not stale data of an earlier
// phase in the same region -- sees NaN).
inline void phase_writes(const Params& p, int phase, int* off, int* n) {
  const int A[2] = {p.off_A, p.off_B - p.off_A}, B[2] = {p.off_B, p.smem_floats - p.off_B};
  const int* r = nullptr;
  switch (phase) {
    case 0: *off = 0; *n = p.off_A; return;
    case 1: r = A; break;
    case 2: r = p.fa.sep ? B : nullptr; break;
    case 3: r = p.fa.sep ? A : B; break;
    case 4: r = p.fb.sep ? (p.fa.sep ? B : A) : nullptr; break;
    default: break;
  }
  *off = r ? r[0] : 0;
  *n = r ? r[1] : 0;
}

// ------------------------------------------------------------------------------------------------ host setup
inline int64_t flrelu_out_size(int64_t n, int up, int down, int p0, int p1, int fu, int fd) {
  const int64_t num = n * up + p0 + p1 - (fu - 1) - (fd - 1) + (down - 1);
  return num < 0 ? -1 : num / down;
}

struct Attrs {
  int upx = 1, upy = 1, downx = 1, downy = 1, px0 = 0, px1 = 0, py0 = 0, py1 = 0;
  float gain = 1.f, slope = 0.2f, clamp = -1.f;  // clamp < 0: none
  bool flip = false;
};

inline FilterRef filter_ref(const float* f, int rank, int d0, int d1, bool flip, float sx, float sy) {
  FilterRef r;
  r.f = f;
  r.sep = rank == 1;
  r.h = d0;
  r.w = rank == 1 ? d0 : d1;
  r.flip = flip;
  r.sx = sx;
  r.sy = sy;
  return r;
}

inline Stage adjoint(const Stage& s, int F) {
  Stage a;
  a.up = s.down;
  a.down = s.up;
  a.p0 = F - 1 - s.p0;
  return a;
}

inline FilterRef reversed(FilterRef f) {
  f.flip = !f.flip;
  return f;
}

// Forward: x [N, H, W, C] -> y [N, outH, outW, C], code [N, midH, midW, ceil(C/4)].
// fu / fd: FilterRef of the op's filters (scales 1); returns false when the output would be empty.
inline bool make_forward(const Attrs& a, int N, int H, int W, int C, FilterRef fu, FilterRef fd, Params* p) {
  Params& q = *p;
  q.N = N; q.C = C; q.srcH = H; q.srcW = W;
  fu.sx = static_cast<float>(a.upx); fu.sy = static_cast<float>(a.upy);
  const int64_t oh = flrelu_out_size(H, a.upy, a.downy, a.py0, a.py1, fu.h, fd.h);
  const int64_t ow = flrelu_out_size(W, a.upx, a.downx, a.px0, a.px1, fu.w, fd.w);
  if (oh < 1 || ow < 1) return false;
  q.outH = static_cast<int>(oh); q.outW = static_cast<int>(ow);
  q.midH = (q.outH - 1) * a.downy + fd.h;
  q.midW = (q.outW - 1) * a.downx + fd.w;
  q.ax.up = a.upx; q.ax.down = 1; q.ax.p0 = a.px0;
  q.ay.up = a.upy; q.ay.down = 1; q.ay.p0 = a.py0;
  q.bx.up = 1; q.bx.down = a.downx; q.bx.p0 = 0;
  q.by.up = 1; q.by.down = a.downy; q.by.p0 = 0;
  q.fa = fu; q.fb = fd;
  q.mode = kForward;
  q.gain = a.gain; q.slope = a.slope;
  q.clamp = a.clamp >= 0.f ? a.clamp : INFINITY;
  q.code_bytes = (C + 3) / 4;
  return true;
}

// Gradient (adjoint = false): dy [N, oh, ow, C] -> dx [N, H, W, C] with the code mask; adjoint = true
// (its adjoint, second order): x-shaped [N, H, W, C] -> y-shaped, forward stages with the mask.
inline bool make_grad(const Attrs& a, bool adj, int N, int H, int W, int oh, int ow, int C, FilterRef fu,
                      FilterRef fd, Params* p) {
  Params& q = *p;
  q.N = N; q.C = C;
  fu.sx = static_cast<float>(a.upx); fu.sy = static_cast<float>(a.upy);
  if (oh < 1 || ow < 1 || H < 1 || W < 1) return false;
  q.midH = (oh - 1) * a.downy + fd.h;
  q.midW = (ow - 1) * a.downx + fd.w;
  Stage ux, uy, dx, dy;
  ux.up = a.upx; ux.p0 = a.px0;
  uy.up = a.upy; uy.p0 = a.py0;
  dx.down = a.downx;
  dy.down = a.downy;
  if (!adj) {
    q.srcH = oh; q.srcW = ow; q.outH = H; q.outW = W;
    q.ax = adjoint(dx, fd.w); q.ay = adjoint(dy, fd.h);
    q.bx = adjoint(ux, fu.w); q.by = adjoint(uy, fu.h);
    q.fa = reversed(fd); q.fb = reversed(fu);
  } else {
    q.srcH = H; q.srcW = W; q.outH = oh; q.outW = ow;
    q.ax = ux; q.ay = uy; q.bx = dx; q.by = dy;
    q.fa = fu; q.fb = fd;
  }
  q.mode = kMask;
  q.gain = a.gain; q.slope = a.slope;
  q.code_bytes = (C + 3) / 4;
  return true;
}

// Shared-memory layout for tile (TH, TW) and CB channels (floats; regions 4-float aligned).
inline void layout(Params* p, int TH, int TW, int CB) {
  Params& q = *p;
  q.TH = TH; q.TW = TW; q.CB = CB;
  q.HJH = span(TH, q.by, q.fb.h);
  q.HJW = span(TW, q.bx, q.fb.w);
  q.SH = span(q.HJH, q.ay, q.fa.h);
  q.SW = span(q.HJW, q.ax, q.fa.w);
  const int S = q.SH * q.SW * CB, U = q.fa.sep ? q.SH * q.HJW * CB : 0, Tt = q.HJH * q.HJW * CB;
  const int V = q.fb.sep ? q.HJH * TW * CB : 0;
  // separable A: S(A) -> U(B) -> T(A) -> V(B); 2-D A: S(A) -> T(B) -> V(A).
  int regA = S, regB = 0;
  if (q.fa.sep) {
    regA = regA > Tt ? regA : Tt;
    regB = U > V ? U : V;
  } else {
    regA = regA > V ? regA : V;
    regB = Tt;
  }
  auto r4 = [](int n) { return (n + 3) / 4 * 4; };
  q.off_fa = 0;
  q.off_fb = r4(filter_floats(q.fa));
  q.off_A = q.off_fb + r4(filter_floats(q.fb));
  q.off_B = q.off_A + r4(regA);
  q.smem_floats = q.off_B + r4(regB);
  q.tilesY = (q.outH + TH - 1) / TH;
  q.tilesX = (q.outW + TW - 1) / TW;
  q.cblocks = (q.C + CB - 1) / CB;
}

// Chooses the tile (largest square-ish tile, then the largest channel block) whose shared memory fits in
// `budget_bytes`; th/tw/cb > 0 force a value. Returns false when not even a 1x1 tile of 4 channels fits
// (very large filters): the caller then uses the generic (non-tiled) path.
inline bool plan_tiles(Params* p, int64_t budget_bytes, int th = 0, int tw = 0, int cb = 0, int nthreads = 256) {
  p->nthreads = nthreads;
  static const int sizes[] = {32, 24, 16, 12, 8, 6, 4, 3, 2, 1};
  static const int cbs[] = {16, 8, 4};
  const int cmax = (p->C + 3) / 4 * 4;
  for (int si = 0; si < 10; ++si) {
    const int TH = th > 0 ? th : (sizes[si] < p->outH ? sizes[si] : p->outH);
    const int TW = tw > 0 ? tw : (sizes[si] < p->outW ? sizes[si] : p->outW);
    for (int ci = 0; ci < 3; ++ci) {
      const int CB = cb > 0 ? cb : cbs[ci];
      if (cb <= 0 && CB > cmax && CB != 4) continue;
      layout(p, TH, TW, CB);
      if (static_cast<int64_t>(p->smem_floats) * 4 <= budget_bytes) return true;
      if (cb > 0) break;
    }
    if (th > 0 && tw > 0) break;
  }
  return false;
}

}  // namespace tile
}  // namespace afgan

#endif  // AFGAN_TF_CUSTOM_OPS_FILTERED_LRELU_TILE_H_
