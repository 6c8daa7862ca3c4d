// CPU emulator of the fused, tiled CUDA filtered_lrelu kernel (test ops; see filtered_lrelu_tile.h).
//
// Ops (same inputs / attrs / outputs as AfganFilteredLrelu / AfganFilteredLreluGrad, plus tiling attrs):
//   AfganFilteredLreluTileEmu(x, fu, fd, b) -> (y, code)
//   AfganFilteredLreluGradTileEmu(dy, fu, fd, code, x_shape; adjoint) -> dx
//   AfganFilteredLreluTilePlan(x_shape, fu, fd) -> [2, 6] int64: the tiles the GPU op would use (no compute)
// They run the phase functions of the CUDA kernel for every thread block, each phase as a sequential loop
// over the thread indices (a barrier between phases is implicit), with a host buffer standing in for the
// block's shared memory. The buffer is filled with NaN before every block, so a phase that reads shared
// memory no earlier phase wrote shows up as NaN in the output. Blocks run in parallel on TF's CPU pool
// (they never share shared memory and write disjoint outputs / code bytes, as on the GPU).
// Tiling attrs: tile_h, tile_w, cb (channels per block, multiple of 4); 0 = the GPU's automatic choice for
// `smem_kb` kB of shared memory; `threads` = threads per block. Checks of the harness itself:
// `reverse_threads` runs the thread indices of each phase in descending order (a result that changes would
// reveal a dependency between threads of one phase, i.e. a missing barrier), `skip_phase` leaves a phase
// out (its readers must then see NaN: before every phase the region it writes is refilled with NaN, so stale
// data of an earlier phase is never mistaken for its output), and a guard zone after the shared memory
// detects overflowing writes.
#include <atomic>
#include <cstring>
#include <limits>
#include <vector>

#include "filtered_lrelu_tile.h"
#include "op_attrs.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

using afgan::tile::Attrs;
using afgan::tile::FilterRef;
using afgan::tile::Params;
using afgan_ops::ReadFilterRef;

Status TileAttrsShape(shape_inference::InferenceContext* c) {
  // Outputs are shaped at run time (the emulator is a test op).
  for (int i = 0; i < c->num_outputs(); ++i) c->set_output(i, c->UnknownShapeOfRank(4));
  return OkStatus();
}

}  // namespace

#define AFGAN_FLRELU_COMMON_ATTRS                                                       \
  Attr("upx: int >= 1")                                                                 \
      .Attr("upy: int >= 1")                                                            \
      .Attr("downx: int >= 1")                                                          \
      .Attr("downy: int >= 1")                                                          \
      .Attr("px0: int")                                                                 \
      .Attr("px1: int")                                                                 \
      .Attr("py0: int")                                                                 \
      .Attr("py1: int")                                                                 \
      .Attr("gain: float")                                                              \
      .Attr("slope: float")                                                             \
      .Attr("flip_filter: bool")                                                        \
      .Attr("tile_h: int = 0")                                                          \
      .Attr("tile_w: int = 0")                                                          \
      .Attr("cb: int = 0")                                                              \
      .Attr("threads: int = 256")                                                       \
      .Attr("smem_kb: int = 48")                                                        \
      .Attr("reverse_threads: bool = false")                                            \
      .Attr("skip_phase: int = -1")

REGISTER_OP("AfganFilteredLreluTileEmu")
    .Input("x: T")
    .Input("fu: float")
    .Input("fd: float")
    .Input("b: T")
    .Output("y: T")
    .Output("code: uint8")
    .Attr("T: {float, half}")
    .AFGAN_FLRELU_COMMON_ATTRS
    .Attr("clamp: float")
    .SetShapeFn(TileAttrsShape);

REGISTER_OP("AfganFilteredLreluGradTileEmu")
    .Input("dy: T")
    .Input("fu: float")
    .Input("fd: float")
    .Input("code: uint8")
    .Input("x_shape: int32")
    .Output("dx: T")
    .Attr("T: {float, half}")
    .AFGAN_FLRELU_COMMON_ATTRS
    .Attr("adjoint: bool = false")
    .SetShapeFn(TileAttrsShape);

// The GPU op's tile plan (shapes only): rows forward / gradient, columns (fits, tile_h, tile_w, channels per
// block, shared-memory bytes, thread blocks). fits = 0: the GPU op takes its generic path.
REGISTER_OP("AfganFilteredLreluTilePlan")
    .Input("x_shape: int32")
    .Input("fu: float")
    .Input("fd: float")
    .Output("plan: int64")
    .AFGAN_FLRELU_COMMON_ATTRS
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->Matrix(2, 6));
      return OkStatus();
    });

#undef AFGAN_FLRELU_COMMON_ATTRS

namespace {

struct EmuAttrs {
  Attrs a;
  int tile_h = 0, tile_w = 0, cb = 0, threads = 256, smem_kb = 48, skip_phase = -1;
  bool reverse_threads = false;
  Status Read(OpKernelConstruction* ctx, bool has_clamp) {
    TF_RETURN_IF_ERROR(afgan_ops::ReadFlreluAttrs(ctx, has_clamp, &a));
    TF_RETURN_IF_ERROR(ctx->GetAttr("tile_h", &tile_h));
    TF_RETURN_IF_ERROR(ctx->GetAttr("tile_w", &tile_w));
    TF_RETURN_IF_ERROR(ctx->GetAttr("cb", &cb));
    TF_RETURN_IF_ERROR(ctx->GetAttr("threads", &threads));
    TF_RETURN_IF_ERROR(ctx->GetAttr("smem_kb", &smem_kb));
    TF_RETURN_IF_ERROR(ctx->GetAttr("reverse_threads", &reverse_threads));
    TF_RETURN_IF_ERROR(ctx->GetAttr("skip_phase", &skip_phase));
    if (tile_h < 0 || tile_w < 0) return errors::InvalidArgument("tile emulator: tile_h / tile_w must be >= 0");
    if (cb < 0 || cb % 4 != 0) return errors::InvalidArgument("tile emulator: cb must be a multiple of 4 (or 0), got ", cb);
    if (threads < 1) return errors::InvalidArgument("tile emulator: threads must be >= 1, got ", threads);
    return OkStatus();
  }
};

Status Plan(const EmuAttrs& e, Params* p) {
  if (!afgan::tile::plan_tiles(p, static_cast<int64_t>(e.smem_kb) * 1024, e.tile_h, e.tile_w, e.cb, e.threads))
    return errors::InvalidArgument("tile emulator: no tile fits in ", e.smem_kb, " kB of shared memory (filters ",
                                   p->fa.h, "x", p->fa.w, " / ", p->fb.h, "x", p->fb.w,
                                   "); the GPU op uses its generic path for this configuration");
  return OkStatus();
}

// Runs every block; fails when a block wrote past the end of its shared memory (guard zone).
template <typename T>
Status Emulate(OpKernelContext* ctx, const EmuAttrs& e, const Params& p, const afgan::tile::IO<T>& io) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  const int64_t cost = static_cast<int64_t>(p.smem_floats) * 40;
  constexpr int kGuard = 64;
  constexpr float kSentinel = -1.2345e30f;
  std::atomic<bool> overflow{false};
  workers->ParallelFor(p.num_blocks(), cost, [&](int64_t b0, int64_t b1) {
    std::vector<float> smem(p.smem_floats + kGuard);
    for (int64_t blk = b0; blk < b1; ++blk) {
      std::fill(smem.begin(), smem.begin() + p.smem_floats, std::numeric_limits<float>::quiet_NaN());
      std::fill(smem.begin() + p.smem_floats, smem.end(), kSentinel);
      for (int phase = 0; phase < afgan::tile::kNumPhases; ++phase) {  // __syncthreads() between phases
        int off = 0, n = 0;
        afgan::tile::phase_writes(p, phase, &off, &n);
        std::fill(smem.begin() + off, smem.begin() + off + n, std::numeric_limits<float>::quiet_NaN());
        if (phase == e.skip_phase) continue;
        for (int i = 0; i < p.nthreads; ++i) {
          const int tid = e.reverse_threads ? p.nthreads - 1 - i : i;
          afgan::tile::run_phase<T>(phase, p, blk, tid, smem.data(), io);
        }
      }
      for (int g = 0; g < kGuard; ++g)
        if (smem[p.smem_floats + g] != kSentinel) overflow = true;
    }
  });
  if (overflow) return errors::Internal("tile emulator: a block wrote past the end of its shared memory");
  return OkStatus();
}

template <typename T>
class FilteredLreluTileEmuOp : public OpKernel {
 public:
  explicit FilteredLreluTileEmuOp(OpKernelConstruction* ctx) : OpKernel(ctx) { OP_REQUIRES_OK(ctx, e_.Read(ctx, true)); }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& b = ctx->input(3);
    OP_REQUIRES_OK(ctx, afgan_ops::CheckNHWC(x, "filtered_lrelu (tile emulator): x"));
    const int N = x.dim_size(0), H = x.dim_size(1), W = x.dim_size(2), C = x.dim_size(3);
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFlreluBias(b, C, "filtered_lrelu (tile emulator)"));
    FilterRef fu, fd;
    OP_REQUIRES_OK(ctx, ReadFilterRef(ctx->input(1), "fu", e_.a.flip, &fu));
    OP_REQUIRES_OK(ctx, ReadFilterRef(ctx->input(2), "fd", e_.a.flip, &fd));
    Params p;
    OP_REQUIRES(ctx, afgan::tile::make_forward(e_.a, N, H, W, C, fu, fd, &p),
                errors::InvalidArgument("filtered_lrelu (tile emulator): output would be empty for x ",
                                        x.shape().DebugString()));
    OP_REQUIRES_OK(ctx, Plan(e_, &p));
    Tensor* y = nullptr;
    Tensor* code = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({N, p.outH, p.outW, C}), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({N, p.midH, p.midW, p.code_bytes}), &code));
    std::memset(code->flat<uint8_t>().data(), 0, code->NumElements());
    if (y->NumElements() == 0) return;
    afgan::tile::IO<T> io;
    io.src = x.flat<T>().data();
    io.bias = b.dim_size(0) ? b.flat<T>().data() : nullptr;
    io.out = y->flat<T>().data();
    io.code_w = code->flat<uint8_t>().data();
    OP_REQUIRES_OK(ctx, Emulate<T>(ctx, e_, p, io));
  }

 private:
  EmuAttrs e_;
};

template <typename T>
class FilteredLreluGradTileEmuOp : public OpKernel {
 public:
  explicit FilteredLreluGradTileEmuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, e_.Read(ctx, false));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("adjoint", &adjoint_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& code = ctx->input(3);
    const Tensor& xs = ctx->input(4);
    FilterRef fu, fd;
    OP_REQUIRES_OK(ctx, ReadFilterRef(ctx->input(1), "fu", e_.a.flip, &fu));
    OP_REQUIRES_OK(ctx, ReadFilterRef(ctx->input(2), "fd", e_.a.flip, &fd));
    const Attrs& a = e_.a;
    int H = 0, W = 0, oh = 0, ow = 0;
    OP_REQUIRES_OK(ctx, afgan_ops::FlreluGradSizes(dy, xs, adjoint_, a, fu.w, fu.h, fd.w, fd.h,
                                                   "filtered_lrelu grad (tile emulator)", &H, &W, &oh, &ow));
    const int N = dy.dim_size(0), C = dy.dim_size(3);
    Params p;
    OP_REQUIRES(ctx, afgan::tile::make_grad(a, adjoint_, N, H, W, oh, ow, C, fu, fd, &p),
                errors::InvalidArgument("filtered_lrelu grad (tile emulator): empty shapes"));
    OP_REQUIRES_OK(ctx, afgan_ops::CheckFlreluCode(code, N, p.midH, p.midW, C, "filtered_lrelu grad (tile emulator)"));
    OP_REQUIRES_OK(ctx, Plan(e_, &p));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({N, p.outH, p.outW, C}), &out));
    if (out->NumElements() == 0) return;
    afgan::tile::IO<T> io;
    io.src = dy.flat<T>().data();
    io.out = out->flat<T>().data();
    io.code_r = code.flat<uint8_t>().data();
    OP_REQUIRES_OK(ctx, Emulate<T>(ctx, e_, p, io));
  }

 private:
  EmuAttrs e_;
  bool adjoint_ = false;
};

class FilteredLreluTilePlanOp : public OpKernel {
 public:
  explicit FilteredLreluTilePlanOp(OpKernelConstruction* ctx) : OpKernel(ctx) { OP_REQUIRES_OK(ctx, e_.Read(ctx, false)); }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& xs = ctx->input(0);
    OP_REQUIRES(ctx, xs.NumElements() == 4,
                errors::InvalidArgument("tile plan: x_shape must have 4 entries, got ", xs.NumElements()));
    auto v = xs.flat<int32>();
    FilterRef fu, fd;
    OP_REQUIRES_OK(ctx, ReadFilterRef(ctx->input(1), "fu", e_.a.flip, &fu));
    OP_REQUIRES_OK(ctx, ReadFilterRef(ctx->input(2), "fd", e_.a.flip, &fd));
    Params f, g;
    OP_REQUIRES(ctx, afgan::tile::make_forward(e_.a, v(0), v(1), v(2), v(3), fu, fd, &f),
                errors::InvalidArgument("tile plan: output would be empty"));
    afgan::tile::make_grad(e_.a, false, v(0), v(1), v(2), f.outH, f.outW, v(3), fu, fd, &g);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({2, 6}), &out));
    auto o = out->matrix<int64_t>();
    Params* ps[2] = {&f, &g};
    for (int r = 0; r < 2; ++r) {
      const bool fits = afgan::tile::plan_tiles(ps[r], static_cast<int64_t>(e_.smem_kb) * 1024, e_.tile_h, e_.tile_w,
                                                e_.cb, e_.threads);
      const int64_t row[6] = {fits, ps[r]->TH, ps[r]->TW, ps[r]->CB, static_cast<int64_t>(ps[r]->smem_floats) * 4,
                              ps[r]->num_blocks()};
      for (int k = 0; k < 6; ++k) o(r, k) = row[k];
    }
  }

 private:
  EmuAttrs e_;
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("AfganFilteredLreluTilePlan").Device(DEVICE_CPU), FilteredLreluTilePlanOp);

#define REGISTER_EMU(T)                                                                                     \
  REGISTER_KERNEL_BUILDER(Name("AfganFilteredLreluTileEmu").Device(DEVICE_CPU).TypeConstraint<T>("T"),      \
                          FilteredLreluTileEmuOp<T>);                                                       \
  REGISTER_KERNEL_BUILDER(Name("AfganFilteredLreluGradTileEmu").Device(DEVICE_CPU).TypeConstraint<T>("T"),  \
                          FilteredLreluGradTileEmuOp<T>);
REGISTER_EMU(float);
REGISTER_EMU(Eigen::half);
#undef REGISTER_EMU

}  // namespace tensorflow
