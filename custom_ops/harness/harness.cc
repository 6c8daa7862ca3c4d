// Standalone harness of the afgan-tf CUDA kernels (no TensorFlow): runs the kernels of gpu_launch.cu.cc on
// case files and writes their outputs and timings.
//
//   harness CASES_DIR OUT_DIR [--case NAME]... [--repeat N] [--timing all|skip|only] [--max-gen-elems N]
//
// --timing skip|only: leave out / run only the timing cases (generated inputs); --max-gen-elems N: skip timing
// cases with a generated input of more than N elements (the host build would take minutes on the real sizes).
// A skipped case writes a result.json with status "skipped".
//
// CASES_DIR/<case>/case.json (a flat JSON object, written by tools/make_gpu_cases.py) names the op, dtype,
// parameters and inputs; the inputs are .npy files next to it, or, for timing cases, generated here
// ("gen_<name>": shape) from a fixed pseudo-random sequence. For every case the harness runs
//   upfirdn2d:      forward y, gradient dx (the upfirdn2d of the op's registered gradient);
//   bias_act:       forward y, gradient dx (order 1), second order d2x (order 2 with g = gg * dy);
//   filtered_lrelu: for each path in "paths" (tiled, generic): forward y + code, gradient dx from dy and the
//                   forward's code, second order ju (the gradient's adjoint applied to u);
// and writes OUT_DIR/<case>/<output>[_<path>].npy (cases with "write_outputs": false write none) and
// OUT_DIR/<case>/result.json: status, per-kernel time (ms per call, mean over --repeat calls after one
// warm-up; CUDA events on the GPU, wall clock in the host build), output statistics (max |v|, all finite)
// and, with two paths, the max difference between the paths. A failing case records its error and the
// harness goes on with the next one; the exit status is 1 when any case failed to run.
//
// Built with nvcc (GPU, scripts/gpu_check.sh) or with g++ -DAFGAN_HOST_KERNELS (the same item / phase
// functions in host loops; tests/test_gpu_harness.py), from this file and ../gpu_launch.cu.cc.
#include <algorithm>
#include <chrono>
#include <memory>
#include <cmath>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "../gpu_kernels.h"

namespace {

using afgan::half_t;

// ------------------------------------------------------------------------------------------------ errors
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct Skip {};
template <typename... A>
[[noreturn]] void fail(const A&... a) {
  std::ostringstream s;
  (s << ... << a);
  throw Error(s.str());
}

void check_launch(afgan_error_t e, const char* what) {
#if defined(AFGAN_HOST_KERNELS)
  if (e != 0) fail(what, ": host kernel error ", e, e == 2 ? " (shared-memory overflow)" : "");
#else
  if (e != cudaSuccess) fail(what, ": launch failed: ", cudaGetErrorString(e));
  const cudaError_t s = cudaDeviceSynchronize();
  if (s != cudaSuccess) fail(what, ": kernel failed: ", cudaGetErrorString(s));
#endif
}

// ------------------------------------------------------------------------------------------------ JSON
// Flat objects only: key -> number | bool | string | [numbers].
struct JVal {
  std::string str;
  std::vector<double> arr;
  double num = 0;
  bool is_str = false, is_arr = false;
};
using JObj = std::map<std::string, JVal>;

JObj parse_json(const std::string& t, const std::string& file) {
  size_t i = 0;
  auto ws = [&] { while (i < t.size() && std::isspace(static_cast<unsigned char>(t[i]))) ++i; };
  auto expect = [&](char c) {
    ws();
    if (i >= t.size() || t[i] != c) fail(file, ": bad JSON near offset ", i, " (expected '", c, "')");
    ++i;
  };
  auto str = [&] {
    expect('"');
    std::string s;
    while (i < t.size() && t[i] != '"') s += t[i++];
    if (i >= t.size()) fail(file, ": unterminated string");
    ++i;
    return s;
  };
  auto number = [&] {
    ws();
    if (t.compare(i, 4, "true") == 0) { i += 4; return 1.0; }
    if (t.compare(i, 5, "false") == 0) { i += 5; return 0.0; }
    if (t.compare(i, 4, "null") == 0) { i += 4; return -1.0; }
    char* end = nullptr;
    const double v = std::strtod(t.c_str() + i, &end);
    if (end == t.c_str() + i) fail(file, ": bad JSON value near offset ", i);
    i = end - t.c_str();
    return v;
  };
  JObj o;
  expect('{');
  ws();
  if (i < t.size() && t[i] == '}') return o;
  while (true) {
    const std::string k = str();
    expect(':');
    ws();
    JVal v;
    if (t[i] == '"') {
      v.str = str();
      v.is_str = true;
    } else if (t[i] == '[') {
      ++i;
      v.is_arr = true;
      ws();
      if (t[i] == ']') {
        ++i;
      } else {
        while (true) {
          ws();
          if (t[i] == '"') {
            v.str += (v.str.empty() ? "" : ",") + str();
            v.is_str = true;
          } else {
            v.arr.push_back(number());
          }
          ws();
          if (t[i] == ',') { ++i; continue; }
          expect(']');
          break;
        }
      }
    } else {
      v.num = number();
    }
    o[k] = v;
    ws();
    if (t[i] == ',') { ++i; continue; }
    expect('}');
    break;
  }
  return o;
}

struct Case {
  std::string name, dir;
  JObj j;
  bool has(const std::string& k) const { return j.count(k) > 0; }
  double num(const std::string& k) const {
    auto it = j.find(k);
    if (it == j.end()) fail(name, ": case.json lacks \"", k, "\"");
    return it->second.num;
  }
  double num(const std::string& k, double dflt) const { return has(k) ? j.at(k).num : dflt; }
  int i(const std::string& k) const { return static_cast<int>(num(k)); }
  int i(const std::string& k, int dflt) const { return has(k) ? static_cast<int>(j.at(k).num) : dflt; }
  std::string s(const std::string& k, const std::string& dflt = "") const { return has(k) ? j.at(k).str : dflt; }
};

// ------------------------------------------------------------------------------------------------ npy
struct Array {
  std::string descr;  // <f4, <f2, |u1
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
  int64_t size() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

int item_bytes(const std::string& d) { return d == "<f4" ? 4 : d == "<f2" ? 2 : d == "|u1" ? 1 : 0; }

Array read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open");
  char magic[8];
  f.read(magic, 8);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0) fail(path, ": not a .npy file");
  uint32_t hlen = 0;
  if (magic[6] == 1) {
    uint16_t h16;
    f.read(reinterpret_cast<char*>(&h16), 2);
    hlen = h16;
  } else {
    f.read(reinterpret_cast<char*>(&hlen), 4);
  }
  std::string h(hlen, ' ');
  f.read(&h[0], hlen);
  Array a;
  const size_t d = h.find("'descr':");
  const size_t q1 = h.find('\'', d + 8), q2 = h.find('\'', q1 + 1);
  a.descr = h.substr(q1 + 1, q2 - q1 - 1);
  if (!item_bytes(a.descr)) fail(path, ": unsupported dtype ", a.descr, " (float32, float16, uint8 only)");
  if (h.find("'fortran_order': True") != std::string::npos) fail(path, ": Fortran order not supported");
  const size_t s0 = h.find('(', h.find("'shape':")), s1 = h.find(')', s0);
  std::stringstream ss(h.substr(s0 + 1, s1 - s0 - 1));
  std::string tok;
  while (std::getline(ss, tok, ','))
    if (tok.find_first_not_of(' ') != std::string::npos) a.shape.push_back(std::stoll(tok));
  a.data.resize(static_cast<size_t>(a.size()) * item_bytes(a.descr));
  f.read(reinterpret_cast<char*>(a.data.data()), a.data.size());
  if (!f) fail(path, ": truncated data");
  return a;
}

void write_npy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape, const void* data,
               size_t bytes) {
  std::string h = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (";
  for (size_t k = 0; k < shape.size(); ++k) h += std::to_string(shape[k]) + (shape.size() == 1 || k + 1 < shape.size() ? "," : "");
  h += "), }";
  while ((10 + h.size() + 1) % 64) h += ' ';
  h += '\n';
  const std::string tmp = path + ".tmp";
  std::ofstream f(tmp, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  const uint16_t hl = static_cast<uint16_t>(h.size());
  f.write(reinterpret_cast<const char*>(&hl), 2);
  f.write(h.data(), h.size());
  f.write(static_cast<const char*>(data), bytes);
  f.close();
  if (!f || std::rename(tmp.c_str(), path.c_str()) != 0) fail(path, ": write failed");
}

// ------------------------------------------------------------------------------------------------ buffers
// Host copy + device copy (the same memory in the host build).
template <typename T>
struct Buf {
  std::vector<T> h;
  T* d = nullptr;
  std::vector<int64_t> shape;
  Buf() = default;
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { release(); }
  void release() {
#if !defined(AFGAN_HOST_KERNELS)
    if (d) cudaFree(d);
#endif
    d = nullptr;
  }
  int64_t size() const { return static_cast<int64_t>(h.size()); }
  void alloc(const std::vector<int64_t>& s) {
    release();
    shape = s;
    int64_t n = 1;
    for (auto v : s) n *= v;
    h.assign(static_cast<size_t>(n), T());
#if defined(AFGAN_HOST_KERNELS)
    d = h.data();
#else
    if (n > 0 && cudaMalloc(&d, static_cast<size_t>(n) * sizeof(T)) != cudaSuccess) fail("cudaMalloc of ", n * sizeof(T), " bytes failed");
    if (n > 0) cudaMemset(d, 0, static_cast<size_t>(n) * sizeof(T));
#endif
  }
  void upload() {
#if !defined(AFGAN_HOST_KERNELS)
    if (!h.empty()) cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
#endif
  }
  void download() {
#if !defined(AFGAN_HOST_KERNELS)
    if (!h.empty()) check_launch(cudaMemcpy(h.data(), d, h.size() * sizeof(T), cudaMemcpyDeviceToHost), "download");
#endif
  }
  void zero() {
#if defined(AFGAN_HOST_KERNELS)
    std::fill(h.begin(), h.end(), T());
#else
    if (!h.empty()) cudaMemset(d, 0, h.size() * sizeof(T));
#endif
  }
};

template <typename T>
AFGAN_HD float to_f(T v) { return static_cast<float>(v); }

template <typename T>
const char* descr_of();
template <>
const char* descr_of<float>() { return "<f4"; }
template <>
const char* descr_of<half_t>() { return "<f2"; }

// ------------------------------------------------------------------------------------------------ device helpers
// The harness's own element loops (input generation, output statistics) run through gpu_kernels.h's
// for_each_item, where the buffers live.
template <typename Item>
void run_items(const Item& item) {
  check_launch(afgan::for_each_item(item, nullptr), "harness helper kernel");
}

// Deterministic inputs for timing cases: uniform in [-1, 1), a counter-based hash (splitmix64) of (seed, i),
// the seed from the input's name; generated where the buffer lives (no large host loops or copies).
template <typename T>
struct FillItem {
  T* d;
  uint64_t seed;
  int64_t n;
  int64_t items() const { return n; }
  AFGAN_HD void operator()(int64_t i) const {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    d[i] = static_cast<T>(static_cast<float>(static_cast<double>(z >> 40) * (1.0 / 8388608.0) - 1.0));
  }
};

template <typename T>
void generate(Buf<T>& b, const std::vector<int64_t>& shape, const std::string& name) {
  b.alloc(shape);
  uint64_t s = 1469598103934665603ull;
  for (char c : name) s = (s ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  run_items(FillItem<T>{b.d, s, b.size()});
}

// Statistics of an output a (and its difference to b), computed where the data lives:
// u[0] = bits of max |a| over finite values, u[1] = non-finite count, u[2] = bits of max |a - b|, u[3] = NaN
// differences (non-negative float bits order like the floats).
template <typename T>
struct StatItem {
  const T* a;
  const T* b;
  unsigned* u;
  int64_t n;
  int64_t items() const { return n; }
  AFGAN_HD static unsigned bits(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    unsigned v;
    std::memcpy(&v, &f, 4);
    return v;
#endif
  }
  AFGAN_HD static void amax(unsigned* p, unsigned v) {
#if defined(__CUDA_ARCH__)
    atomicMax(p, v);
#else
    if (v > *p) *p = v;
#endif
  }
  AFGAN_HD static void inc(unsigned* p) {
#if defined(__CUDA_ARCH__)
    atomicAdd(p, 1u);
#else
    ++*p;
#endif
  }
  AFGAN_HD void operator()(int64_t i) const {
    const float v = to_f(a[i]);
    if (!(fabsf(v) <= 3.402823466e38f)) inc(u + 1);  // inf or NaN
    else amax(u, bits(fabsf(v)));
    if (b) {
      const float d = fabsf(v - to_f(b[i]));
      if (d != d) inc(u + 3);
      else amax(u + 2, bits(d));
    }
  }
};

struct Stats {
  double maxabs = 0, maxdiff = 0;
  bool finite = true, diff_ok = true;
};

template <typename T>
Stats stats(const Buf<T>& a, const Buf<T>* b) {
  Buf<unsigned> u;
  u.alloc({4});
  run_items(StatItem<T>{a.d, b ? b->d : nullptr, u.d, a.size()});
  u.download();
  Stats s;
  float f;
  std::memcpy(&f, &u.h[0], 4);
  s.maxabs = f;
  s.finite = u.h[1] == 0;
  std::memcpy(&f, &u.h[2], 4);
  s.maxdiff = f;
  s.diff_ok = u.h[3] == 0;
  return s;
}

template <typename T>
void load(Buf<T>& b, const Case& c, const std::string& name, bool required = true) {
  if (c.has("gen_" + name)) {
    const JVal& v = c.j.at("gen_" + name);
    std::vector<int64_t> shape(v.arr.begin(), v.arr.end());
    generate(b, shape, c.name + "/" + name);
    return;
  }
  const std::string path = c.dir + "/" + name + ".npy";
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (required) fail(c.name, ": input ", name, ".npy missing");
    b.alloc({0});
    return;
  }
  Array a = read_npy(path);
  if (a.descr != descr_of<T>()) fail(path, ": dtype ", a.descr, ", expected ", descr_of<T>());
  b.alloc(a.shape);
  std::memcpy(b.h.data(), a.data.data(), a.data.size());
  b.upload();
}

// ------------------------------------------------------------------------------------------------ results
struct Result {
  std::ostringstream times, stats;
  bool first_time = true, first_stat = true;
  void time(const std::string& k, double ms) {
    times << (first_time ? "" : ", ") << "\"" << k << "\": " << ms;
    first_time = false;
  }
  void stat(const std::string& k, double v) {
    stats << (first_stat ? "" : ", ") << "\"" << k << "\": " << (std::isfinite(v) ? v : -1.0);
    first_stat = false;
  }
};

// Runs fn once (warm-up, checked), then `repeat` times, returns ms per call.
template <typename F>
double timed(F fn, int repeat, const char* what) {
  check_launch(fn(), what);
  if (repeat <= 0) return 0;
#if defined(AFGAN_HOST_KERNELS)
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < repeat; ++r) check_launch(fn(), what);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / repeat;
#else
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaEventRecord(e0, nullptr);
  for (int r = 0; r < repeat; ++r) {
    const cudaError_t e = fn();
    if (e != cudaSuccess) fail(what, ": launch failed: ", cudaGetErrorString(e));
  }
  cudaEventRecord(e1, nullptr);
  check_launch(cudaEventSynchronize(e1), what);
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return ms / repeat;
#endif
}

struct Out {
  const Case& c;
  const std::string& out_dir;
  Result& r;
  bool write;
  template <typename T>
  void operator()(Buf<T>& b, const std::string& name) {
    const Stats s = stats(b, static_cast<const Buf<T>*>(nullptr));
    r.stat(name + "_maxabs", s.maxabs);
    r.stat(name + "_finite", s.finite ? 1 : 0);
    if (!write) return;
    b.download();
    write_npy(out_dir + "/" + name + ".npy", descr_of<T>(), b.shape, b.h.data(), b.h.size() * sizeof(T));
  }
};

template <typename T>
double max_diff(const Buf<T>& a, const Buf<T>& b) {
  if (a.size() != b.size()) return INFINITY;
  const Stats s = stats(a, &b);
  return s.diff_ok ? s.maxdiff : INFINITY;
}

std::vector<int64_t> nhwc(int N, int H, int W, int C) { return {N, H, W, C}; }

// ------------------------------------------------------------------------------------------------ upfirdn2d
template <typename T>
void run_upfirdn2d(const Case& c, Out& out, Result& r, int repeat) {
  Buf<T> x, dy, y, dx;
  Buf<float> f;
  load(x, c, "x");
  load(f, c, "f");
  if (x.shape.size() != 4) fail(c.name, ": x must be NHWC");
  const int N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3];
  const bool flip = c.i("flip") != 0;
  afgan::Upfirdn2dArgs<T> a;
  a.f = afgan::make_dev_filter(f.d, static_cast<int>(f.shape.size()), f.shape[0], f.shape.size() == 2 ? f.shape[1] : 1,
                               flip, static_cast<float>(c.num("gain")));
  a.N = N; a.H = H; a.W = W; a.C = C;
  a.upx = c.i("upx"); a.upy = c.i("upy"); a.downx = c.i("downx"); a.downy = c.i("downy");
  a.px0 = c.i("px0"); a.py0 = c.i("py0");
  const int px1 = c.i("px1"), py1 = c.i("py1");
  a.OH = (H * a.upy + a.py0 + py1 - a.f.h) / a.downy + 1;
  a.OW = (W * a.upx + a.px0 + px1 - a.f.w) / a.downx + 1;
  if (a.OH < 1 || a.OW < 1) fail(c.name, ": empty output");
  y.alloc(nhwc(N, a.OH, a.OW, C));
  a.x = x.d;
  a.y = y.d;
  r.time("forward", timed([&] { return afgan::launch_upfirdn2d(a, nullptr); }, repeat, "upfirdn2d"));
  out(y, "y");
  // Gradient: the op's registered gradient, an upfirdn2d of dy with up/down swapped and the filter reversed.
  load(dy, c, "dy");
  if (dy.shape != y.shape) fail(c.name, ": dy shape does not match y");
  const afgan::Upfirdn2dGradPad gp = afgan::upfirdn2d_grad_pad(a.f.w, a.f.h, H, W, a.OH, a.OW, a.upx, a.upy, a.downx,
                                                               a.downy, a.px0, a.py0);
  afgan::Upfirdn2dArgs<T> g = a;
  g.f.flip = !flip;
  g.H = a.OH; g.W = a.OW;
  g.upx = a.downx; g.upy = a.downy; g.downx = a.upx; g.downy = a.upy; g.px0 = gp.px0; g.py0 = gp.py0;
  g.OH = (a.OH * g.upy + gp.py0 + gp.py1 - a.f.h) / g.downy + 1;
  g.OW = (a.OW * g.upx + gp.px0 + gp.px1 - a.f.w) / g.downx + 1;
  if (g.OH != H || g.OW != W) fail(c.name, ": gradient size ", g.OH, "x", g.OW, " != ", H, "x", W);
  dx.alloc(x.shape);
  g.x = dy.d;
  g.y = dx.d;
  r.time("backward", timed([&] { return afgan::launch_upfirdn2d(g, nullptr); }, repeat, "upfirdn2d grad"));
  out(dx, "dx");
}

// ------------------------------------------------------------------------------------------------ bias_act
template <typename T>
void run_bias_act(const Case& c, Out& out, Result& r, int repeat) {
  Buf<T> x, b, dy, gg, y, dx, d2x, g2;
  load(x, c, "x");
  load(b, c, "b", false);
  const int axis = c.i("axis", 1);
  int64_t inner = 1, nb = 0;
  if (b.size() > 0) {
    if (axis < 0 || axis >= static_cast<int>(x.shape.size()) || x.shape[axis] != b.size())
      fail(c.name, ": b of ", b.size(), " does not match x's axis ", axis);
    for (size_t k = axis + 1; k < x.shape.size(); ++k) inner *= x.shape[k];
    nb = b.size();
  }
  const int act = c.i("act");
  const float alpha = static_cast<float>(c.num("alpha", 0)), gain = static_cast<float>(c.num("gain", 1));
  const float clamp = static_cast<float>(c.num("clamp", -1));
  y.alloc(x.shape);
  afgan::BiasActArgs<T> a;
  a.x = x.d; a.b = nb ? b.d : nullptr; a.y = y.d;
  a.total = x.size(); a.inner = inner; a.nb = nb; a.act = act; a.alpha = alpha; a.gain = gain; a.clamp = clamp;
  r.time("forward", timed([&] { return afgan::launch_bias_act(a, nullptr); }, repeat, "bias_act"));
  out(y, "y");
  // Gradient as the op's registered gradient calls it: y-only activations get y alone; the others x, b and
  // (with a clamp) y.
  load(dy, c, "dy");
  dx.alloc(x.shape);
  const bool y_only = afgan::act_uses_y_only(act);
  afgan::BiasActGradArgs<T> g;
  g.g = dy.d; g.dx = dx.d;
  g.x = y_only ? nullptr : x.d;
  g.b = y_only || !nb ? nullptr : b.d;
  g.y = (y_only || clamp >= 0) ? y.d : nullptr;
  g.total = x.size(); g.inner = inner; g.nb = y_only ? 0 : nb; g.act = act; g.order = 1;
  g.alpha = alpha; g.gain = gain; g.clamp = clamp;
  r.time("backward", timed([&] { return afgan::launch_bias_act_grad(g, nullptr); }, repeat, "bias_act grad"));
  out(dx, "dx");
  if (y_only) return;  // piecewise linear: no second-order kernel
  // Second order (the gradient's gradient w.r.t. x): order 2 with g = gg * dy.
  load(gg, c, "gg");
  g2.alloc(x.shape);
  for (int64_t k = 0; k < x.size(); ++k) g2.h[k] = static_cast<T>(to_f(gg.h[k]) * to_f(dy.h[k]));
  g2.upload();
  d2x.alloc(x.shape);
  afgan::BiasActGradArgs<T> h = g;
  h.g = g2.d; h.dx = d2x.d; h.order = 2;
  r.time("second_order", timed([&] { return afgan::launch_bias_act_grad(h, nullptr); }, repeat, "bias_act grad2"));
  out(d2x, "d2x");
}

// ------------------------------------------------------------------------------------------------ filtered_lrelu
template <typename T>
void run_filtered_lrelu(const Case& c, Out& out, Result& r, int repeat, const std::string& out_dir) {
  Buf<T> x, b, dy, u;
  Buf<float> fu, fd;
  load(x, c, "x");
  load(b, c, "b", false);
  load(fu, c, "fu");
  load(fd, c, "fd");
  load(dy, c, "dy");
  load(u, c, "u");
  if (x.shape.size() != 4) fail(c.name, ": x must be NHWC");
  const int N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3];
  afgan::tile::Attrs a;
  a.upx = c.i("upx"); a.upy = c.i("upy"); a.downx = c.i("downx"); a.downy = c.i("downy");
  a.px0 = c.i("px0"); a.px1 = c.i("px1"); a.py0 = c.i("py0"); a.py1 = c.i("py1");
  a.gain = static_cast<float>(c.num("gain")); a.slope = static_cast<float>(c.num("slope"));
  a.clamp = static_cast<float>(c.num("clamp", -1)); a.flip = c.i("flip") != 0;
  auto rank = [](const Buf<float>& f) { return static_cast<int>(f.shape.size()); };
  const afgan::tile::FilterRef FU = afgan::tile::filter_ref(fu.d, rank(fu), fu.shape[0], rank(fu) == 2 ? fu.shape[1] : 1,
                                                            a.flip, 1.f, 1.f);
  const afgan::tile::FilterRef FD = afgan::tile::filter_ref(fd.d, rank(fd), fd.shape[0], rank(fd) == 2 ? fd.shape[1] : 1,
                                                            a.flip, 1.f, 1.f);
  const afgan::DevFilter DU = afgan::make_dev_filter(fu.d, rank(fu), fu.shape[0], rank(fu) == 2 ? fu.shape[1] : 1, a.flip, 1.f);
  const afgan::DevFilter DD = afgan::make_dev_filter(fd.d, rank(fd), fd.shape[0], rank(fd) == 2 ? fd.shape[1] : 1, a.flip, 1.f);
  const int64_t oh = afgan::tile::flrelu_out_size(H, a.upy, a.downy, a.py0, a.py1, FU.h, FD.h);
  const int64_t ow = afgan::tile::flrelu_out_size(W, a.upx, a.downx, a.px0, a.px1, FU.w, FD.w);
  if (oh < 1 || ow < 1) fail(c.name, ": empty output");
  const T* bias = b.size() ? b.d : nullptr;
  if (b.size() && b.size() != C) fail(c.name, ": b must have C entries");
  if (dy.shape != nhwc(N, oh, ow, C)) fail(c.name, ": dy must be [N, ", oh, ", ", ow, ", C]");
  if (u.shape != x.shape) fail(c.name, ": u must be x-shaped");
  std::stringstream paths(c.s("paths", "tiled,generic"));
  std::string path;
  std::map<std::string, Buf<T>*> ys, dxs, jus;
  std::vector<std::unique_ptr<Buf<T>>> keep;
  auto buf = [&](const std::vector<int64_t>& s) {
    keep.emplace_back(new Buf<T>());
    keep.back()->alloc(s);
    return keep.back().get();
  };
  const int64_t smem_kb = c.i("smem_kb", 48);
  while (std::getline(paths, path, ',')) {
    Buf<T>* y = buf(nhwc(N, oh, ow, C));
    Buf<T>* dx = buf(x.shape);
    Buf<T>* ju = buf(dy.shape);
    Buf<uint8_t> code;
    if (path == "tiled") {
      afgan::tile::Params pf, pg, pa;
      afgan::tile::make_forward(a, N, H, W, C, FU, FD, &pf);
      afgan::tile::make_grad(a, false, N, H, W, oh, ow, C, FU, FD, &pg);
      afgan::tile::make_grad(a, true, N, H, W, oh, ow, C, FU, FD, &pa);
      for (auto* p : {&pf, &pg, &pa})
        if (!afgan::tile::plan_tiles(p, smem_kb * 1024, c.i("tile_h", 0), c.i("tile_w", 0), c.i("cb", 0),
                                     afgan::kTileThreads))
          fail(c.name, ": no tile fits in ", smem_kb, " kB (the op takes its generic path here)");
      r.stat("tile_forward_th", pf.TH);
      r.stat("tile_forward_tw", pf.TW);
      r.stat("tile_forward_cb", pf.CB);
      r.stat("tile_forward_smem", pf.smem_floats * 4.0);
      code.alloc(nhwc(N, pf.midH, pf.midW, pf.code_bytes));
      afgan::tile::IO<T> io;
      io.src = x.d; io.bias = bias; io.out = y->d; io.code_w = code.d;
      r.time("forward_tiled", timed([&] { code.zero(); return afgan::launch_flrelu_tiled(pf, io, nullptr); }, repeat,
                                    "filtered_lrelu tiled"));
      afgan::tile::IO<T> ig;
      ig.src = dy.d; ig.out = dx->d; ig.code_r = code.d;
      r.time("backward_tiled", timed([&] { return afgan::launch_flrelu_tiled(pg, ig, nullptr); }, repeat,
                                     "filtered_lrelu tiled grad"));
      afgan::tile::IO<T> ia;
      ia.src = u.d; ia.out = ju->d; ia.code_r = code.d;
      r.time("second_order_tiled", timed([&] { return afgan::launch_flrelu_tiled(pa, ia, nullptr); }, repeat,
                                         "filtered_lrelu tiled adjoint"));
    } else if (path == "generic") {
      const afgan::FlGeneric kf = afgan::make_fl_generic(a, 0, N, H, W, oh, ow, C, DU, DD);
      const afgan::FlGeneric kg = afgan::make_fl_generic(a, 2, N, H, W, oh, ow, C, DU, DD);
      const afgan::FlGeneric ka = afgan::make_fl_generic(a, 1, N, H, W, oh, ow, C, DU, DD);
      Buf<float> hi;
      hi.alloc({kf.hi_floats()});
      code.alloc(nhwc(N, kf.g.hiH, kf.g.hiW, kf.g.code_bytes));
      r.time("forward_generic", timed([&] { return afgan::launch_flrelu_generic<T>(kf, x.d, bias, hi.d, code.d, nullptr, y->d, nullptr); },
                                      repeat, "filtered_lrelu generic"));
      r.time("backward_generic", timed([&] { return afgan::launch_flrelu_generic<T>(kg, dy.d, nullptr, hi.d, nullptr, code.d, dx->d, nullptr); },
                                       repeat, "filtered_lrelu generic grad"));
      r.time("second_order_generic", timed([&] { return afgan::launch_flrelu_generic<T>(ka, u.d, nullptr, hi.d, nullptr, code.d, ju->d, nullptr); },
                                           repeat, "filtered_lrelu generic adjoint"));
    } else {
      fail(c.name, ": unknown path '", path, "' (tiled, generic)");
    }
    out(*y, "y_" + path);
    out(*dx, "dx_" + path);
    out(*ju, "ju_" + path);
    if (out.write) {
      code.download();
      write_npy(out_dir + "/code_" + path + ".npy", "|u1", code.shape, code.h.data(), code.h.size());
    }
    ys[path] = y; dxs[path] = dx; jus[path] = ju;
  }
  if (ys.count("tiled") && ys.count("generic")) {
    r.stat("paths_maxdiff_y", max_diff(*ys["tiled"], *ys["generic"]));
    r.stat("paths_maxdiff_dx", max_diff(*dxs["tiled"], *dxs["generic"]));
    r.stat("paths_maxdiff_ju", max_diff(*jus["tiled"], *jus["generic"]));
  }
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') o += '\\';
    if (ch == '\n') { o += "\\n"; continue; }
    o += ch;
  }
  return o;
}

// Which cases run: timing cases are those with generated inputs ("gen_<name>": shape).
struct Select {
  std::string timing = "all";   // all | skip | only
  int64_t max_gen_elems = -1;   // skip timing cases with a larger generated input (-1: no limit)
};

bool run_case(const std::string& cases_dir, const std::string& name, const std::string& out_root, int repeat_override,
              const Select& sel) {
  Case c;
  c.name = name;
  c.dir = cases_dir + "/" + name;
  const std::string out_dir = out_root + "/" + name;
  mkdir(out_dir.c_str(), 0755);
  Result r;
  std::string status = "ok", error;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    std::ifstream f(c.dir + "/case.json");
    if (!f) fail(c.dir, "/case.json: cannot open");
    std::stringstream ss;
    ss << f.rdbuf();
    c.j = parse_json(ss.str(), c.dir + "/case.json");
    bool generated = false;
    int64_t gen_max = 0;
    for (const auto& kv : c.j) {
      if (kv.first.rfind("gen_", 0) != 0) continue;
      generated = true;
      double n = 1;
      for (double d : kv.second.arr) n *= d;
      gen_max = std::max(gen_max, static_cast<int64_t>(n));
    }
    if ((sel.timing == "skip" && generated) || (sel.timing == "only" && !generated) ||
        (generated && sel.max_gen_elems >= 0 && gen_max > sel.max_gen_elems))
      throw Skip();
    const int repeat = repeat_override >= 0 ? repeat_override : c.i("repeat", 3);
    Out out{c, out_dir, r, c.i("write_outputs", 1) != 0};
    const std::string op = c.s("op"), dt = c.s("dtype", "float32");
    if (dt != "float32" && dt != "float16") fail(name, ": dtype must be float32 or float16");
    const bool h = dt == "float16";
    if (op == "upfirdn2d") h ? run_upfirdn2d<half_t>(c, out, r, repeat) : run_upfirdn2d<float>(c, out, r, repeat);
    else if (op == "bias_act") h ? run_bias_act<half_t>(c, out, r, repeat) : run_bias_act<float>(c, out, r, repeat);
    else if (op == "filtered_lrelu")
      h ? run_filtered_lrelu<half_t>(c, out, r, repeat, out_dir) : run_filtered_lrelu<float>(c, out, r, repeat, out_dir);
    else fail(name, ": unknown op '", op, "'");
  } catch (const Skip&) {
    status = "skipped";
  } catch (const std::exception& e) {
    status = "error";
    error = e.what();
#if !defined(AFGAN_HOST_KERNELS)
    cudaGetLastError();  // clear a sticky launch error where possible
#endif
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  struct stat st;
  if (status == "skipped" && stat((out_dir + "/result.json").c_str(), &st) == 0) return true;  // keep a real result
  std::ofstream o(out_dir + "/result.json");
  o << "{\"case\": \"" << json_escape(name) << "\", \"status\": \"" << status << "\", \"error\": \""
    << json_escape(error) << "\", \"wall_s\": " << wall << ", \"time_ms\": {" << r.times.str() << "}, \"stats\": {"
    << r.stats.str() << "}}\n";
  std::printf("%-48s %s %s\n", name.c_str(), status.c_str(), error.c_str());
  std::fflush(stdout);
  return status != "error";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s CASES_DIR OUT_DIR [--case NAME]... [--repeat N] [--timing all|skip|only] [--max-gen-elems N]\n", argv[0]);
    return 2;
  }
  const std::string cases = argv[1], out = argv[2];
  std::vector<std::string> only;
  int repeat = -1;
  Select sel;
  for (int k = 3; k < argc; ++k) {
    const std::string a = argv[k];
    if (a == "--case" && k + 1 < argc) only.push_back(argv[++k]);
    else if (a == "--repeat" && k + 1 < argc) repeat = std::atoi(argv[++k]);
    else if (a == "--timing" && k + 1 < argc) sel.timing = argv[++k];
    else if (a == "--max-gen-elems" && k + 1 < argc) sel.max_gen_elems = std::atoll(argv[++k]);
    else { std::fprintf(stderr, "harness: unknown argument %s\n", a.c_str()); return 2; }
  }
  if (sel.timing != "all" && sel.timing != "skip" && sel.timing != "only") {
    std::fprintf(stderr, "harness: --timing must be all, skip or only\n");
    return 2;
  }
  mkdir(out.c_str(), 0755);
  std::vector<std::string> names = only;
  if (names.empty()) {
    DIR* d = opendir(cases.c_str());
    if (!d) { std::fprintf(stderr, "harness: cannot open cases directory %s\n", cases.c_str()); return 2; }
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      struct stat st;
      if (n[0] != '.' && stat((cases + "/" + n + "/case.json").c_str(), &st) == 0) names.push_back(n);
    }
    closedir(d);
    std::sort(names.begin(), names.end());
  }
#if !defined(AFGAN_HOST_KERNELS)
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) { std::fprintf(stderr, "harness: no CUDA device\n"); return 2; }
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
#endif
  int failed = 0;
  for (const auto& n : names) failed += run_case(cases, n, out, repeat, sel) ? 0 : 1;
  std::printf("%zu cases, %d failed to run\n", names.size(), failed);
  return failed ? 1 : 0;
}
