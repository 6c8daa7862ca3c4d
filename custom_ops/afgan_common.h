// Per-element math and index helpers shared by the CPU (.cc) and CUDA (.cu.cc) kernels of afgan-tf.
//
// Everything here is a small inline function compiled for host and device (AFGAN_HD), so the CPU and
// GPU kernels agree bit-for-bit on the element-wise parts (activations, their derivatives, the
// filtered_lrelu sign/clamp code) and on the polyphase index arithmetic.
#ifndef AFGAN_TF_CUSTOM_OPS_AFGAN_COMMON_H_
#define AFGAN_TF_CUSTOM_OPS_AFGAN_COMMON_H_

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define AFGAN_HD __host__ __device__ __forceinline__
#else
#define AFGAN_HD inline
#endif

namespace afgan {

// Version of the op interface (names, inputs, attrs). Must equal OPS_ABI_VERSION in
// afgan_tf/ops/_custom_ops.py; the loader rejects a library built from other sources.
constexpr int kOpsAbiVersion = 3;

// ------------------------------------------------------------------------------------------------
// Integer helpers.
AFGAN_HD int floor_div(int a, int b) {  // b > 0
  int q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}
AFGAN_HD int floor_mod(int a, int b) { return a - floor_div(a, b) * b; }

// ------------------------------------------------------------------------------------------------
// bias_act activations. z = x + b; derivatives of order 1 and 2 w.r.t. z.
enum Act : int {
  kLinear = 0, kRelu = 1, kLrelu = 2, kTanh = 3, kSigmoid = 4, kElu = 5, kSelu = 6, kSoftplus = 7,
  kSwish = 8
};

// Activations whose first derivative is read from the output y alone (piecewise linear: the
// second derivative is 0, the backward keeps only y).
AFGAN_HD bool act_uses_y_only(int act) { return act == kLinear || act == kRelu || act == kLrelu; }

constexpr float kSeluScale = 1.0507009873554805f;
constexpr float kSeluAlpha = 1.6732632423543772f;

AFGAN_HD float sigmoidf_(float z) { return 1.f / (1.f + expf(-z)); }

AFGAN_HD float act_forward(int act, float z, float alpha) {
  switch (act) {
    case kLinear: return z;
    case kRelu: return z > 0.f ? z : 0.f;
    case kLrelu: return z >= 0.f ? z : z * alpha;
    case kTanh: return tanhf(z);
    case kSigmoid: return sigmoidf_(z);
    case kElu: return z >= 0.f ? z : expm1f(z);
    case kSelu: return z >= 0.f ? kSeluScale * z : kSeluScale * kSeluAlpha * expm1f(z);
    case kSoftplus: return z > 20.f ? z : log1pf(expf(z));
    case kSwish: return z * sigmoidf_(z);
  }
  return z;
}

// d act / d z. For the y-only activations `yv` is the forward output (sign decides the slope;
// exactly zero counts as negative) and z is not used.
AFGAN_HD float act_deriv1(int act, float z, float yv, float alpha) {
  switch (act) {
    case kLinear: return 1.f;
    case kRelu: return yv > 0.f ? 1.f : 0.f;
    case kLrelu: return yv > 0.f ? 1.f : alpha;
    case kTanh: { float t = tanhf(z); return 1.f - t * t; }
    case kSigmoid: { float s = sigmoidf_(z); return s * (1.f - s); }
    case kElu: return z >= 0.f ? 1.f : expf(z);
    case kSelu: return z >= 0.f ? kSeluScale : kSeluScale * kSeluAlpha * expf(z);
    case kSoftplus: return z > 20.f ? 1.f : sigmoidf_(z);
    case kSwish: { float s = sigmoidf_(z); return s + z * s * (1.f - s); }
  }
  return 1.f;
}

AFGAN_HD float act_deriv2(int act, float z, float alpha) {
  switch (act) {
    case kTanh: { float t = tanhf(z); return -2.f * t * (1.f - t * t); }
    case kSigmoid: { float s = sigmoidf_(z); return s * (1.f - s) * (1.f - 2.f * s); }
    case kElu: return z >= 0.f ? 0.f : expf(z);
    case kSelu: return z >= 0.f ? 0.f : kSeluScale * kSeluAlpha * expf(z);
    case kSoftplus: { if (z > 20.f) return 0.f; float s = sigmoidf_(z); return s * (1.f - s); }
    case kSwish: { float s = sigmoidf_(z); return s * (1.f - s) * (2.f + z * (1.f - 2.f * s)); }
    default: return 0.f;  // piecewise linear
  }
}

// bias_act forward for one element: clamp(gain * act(z), -clamp, clamp); clamp < 0 means none.
AFGAN_HD float bias_act_elem(int act, float z, float alpha, float gain, float clamp) {
  float v = act_forward(act, z, alpha) * gain;
  if (clamp >= 0.f) v = v > clamp ? clamp : (v < -clamp ? -clamp : v);
  return v;
}

// bias_act backward (order 1 or 2) for one element: g * gain * act^(order)(z) * [|y| < clamp].
AFGAN_HD float bias_act_grad_elem(int act, int order, float g, float z, float yv, float alpha,
                                  float gain, float clamp, bool has_y) {
  if (clamp >= 0.f && has_y && fabsf(yv) >= clamp) return 0.f;
  float d = order == 1 ? act_deriv1(act, z, yv, alpha) : act_deriv2(act, z, alpha);
  return g * gain * d;
}

// ------------------------------------------------------------------------------------------------
// filtered_lrelu nonlinearity with the 2-bit code: 0 = passed, 1 = negative (scaled by slope),
// 2 = clamped (gradient 0). Four codes are packed per byte along the channel axis.
enum FlreluCode : uint32_t { kCodePass = 0, kCodeNeg = 1, kCodeClamp = 2 };

AFGAN_HD bool sign_bit(float v) {
#if defined(__CUDA_ARCH__)
  return signbit(v);
#else
  return std::signbit(v);
#endif
}

// One high-rate sample of the forward: t -> clamp(gain * lrelu(t)); `clamp` is +inf when there is none.
// Branch-free (ternaries) so the CPU loops over channels vectorise.
AFGAN_HD float flrelu_forward_elem(float t, float gain, float slope, float clamp, uint8_t* code) {
  float v = t * gain;
  const bool neg = sign_bit(v);  // IEEE sign bit after the gain (also -0)
  v = neg ? v * slope : v;
  const bool clamped = fabsf(v) > clamp;
  v = clamped ? copysignf(clamp, v) : v;
  *code = clamped ? static_cast<uint8_t>(kCodeClamp) : (neg ? static_cast<uint8_t>(kCodeNeg) : static_cast<uint8_t>(kCodePass));
  return v;
}

// Gradient multiplier for one high-rate sample given its code.
AFGAN_HD float flrelu_code_scale(uint32_t code, float gain, float slope) {
  return code == kCodePass ? gain : (code == kCodeNeg ? gain * slope : 0.f);
}

AFGAN_HD uint32_t code_get(const uint8_t* row, int c) { return (row[c >> 2] >> ((c & 3) * 2)) & 3u; }

// ------------------------------------------------------------------------------------------------
// Polyphase index arithmetic of upfirdn2d along one axis. With the correlation-form filter
// g[k] (= f[k] when flip_filter, f[F-1-k] otherwise), output o of upfirdn2d is
//   y[o] = sum_k g[k] * P[o*down + k],  P[q] = x[(q - p0) / up] if (q - p0) % up == 0 and in range.
// first_tap returns the smallest k >= 0 with (o*down + k - p0) % up == 0; then k += up.
AFGAN_HD int first_tap(int o, int down, int up, int p0) { return floor_mod(p0 - o * down, up); }

}  // namespace afgan

#endif  // AFGAN_TF_CUSTOM_OPS_AFGAN_COMMON_H_
