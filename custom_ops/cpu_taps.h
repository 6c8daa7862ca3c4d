// Polyphase tap tables for the CPU kernels (host only).
//
// A Taps table lists, for every output index o of a 1-D resampling stage, the (source index, filter
// tap) pairs that contribute to it. Building the tables once per call turns up-/down-sampling into
// plain gathers: no zero-stuffed intermediate exists and zero taps are never visited.
#ifndef AFGAN_TF_CUSTOM_OPS_CPU_TAPS_H_
#define AFGAN_TF_CUSTOM_OPS_CPU_TAPS_H_

#include <algorithm>
#include <vector>

#include "afgan_common.h"

namespace afgan {

struct Taps {
  std::vector<int> ptr;  // [n_out + 1]
  std::vector<int> idx;  // source index
  std::vector<int> k;    // filter tap (correlation form)
  int size() const { return static_cast<int>(ptr.size()) - 1; }
  int begin(int o) const { return ptr[o]; }
  int end(int o) const { return ptr[o + 1]; }
  // Smallest / largest+1 source index used by outputs [o0, o1); lo >= hi when none.
  void src_range(int o0, int o1, int* lo, int* hi) const {
    int a = 1 << 30, b = -(1 << 30);
    for (int t = ptr[o0]; t < ptr[o1]; ++t) { a = std::min(a, idx[t]); b = std::max(b, idx[t] + 1); }
    *lo = a; *hi = b;
  }
  void push(int i, int kk) { idx.push_back(i); k.push_back(kk); }
  void close() { ptr.push_back(static_cast<int>(idx.size())); }
};

// upfirdn2d along one axis: y[o] = sum_k g[k] P[o*down + k] (see first_tap in afgan_common.h).
inline Taps taps_upfirdn(int n_in, int n_out, int up, int down, int p0, int F) {
  Taps t;
  t.ptr.push_back(0);
  for (int o = 0; o < n_out; ++o) {
    for (int k = first_tap(o, down, up, p0); k < F; k += up) {
      int q = o * down + k - p0;  // multiple of up
      int i = floor_div(q, up);
      if (i >= 0 && i < n_in) t.push(i, k);
    }
    t.close();
  }
  return t;
}

// Adjoint of taps_upfirdn(n_in -> n_out): for every i in [0, n_in), the (o, k) with
// o*down + k - p0 == i*up and 0 <= o < n_out.
inline Taps taps_upfirdn_adjoint(int n_in, int n_out, int up, int down, int p0, int F) {
  Taps t;
  t.ptr.push_back(0);
  for (int i = 0; i < n_in; ++i) {
    int m = i * up + p0;  // o*down + k == m
    for (int k = floor_mod(m, down); k < F; k += down) {
      int o = (m - k) / down;
      if (o >= 0 && o < n_out) t.push(o, k);
    }
    t.close();
  }
  return t;
}

}  // namespace afgan

#endif  // AFGAN_TF_CUSTOM_OPS_CPU_TAPS_H_
