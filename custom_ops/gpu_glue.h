// TensorFlow side of the CUDA kernels (nvcc-compiled OpKernels only): TF tensors -> the plain pointers and
// structs of the TF-free launch functions (gpu_kernels.h).
#ifndef AFGAN_TF_CUSTOM_OPS_GPU_GLUE_H_
#define AFGAN_TF_CUSTOM_OPS_GPU_GLUE_H_

#include "gpu_kernels.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tensorflow {
namespace afgan_gpu {

// Storage type of the launch functions for a TF element type (Eigen::half and afgan::half_t are both the
// 16 bits of an IEEE half).
template <typename T>
struct Dev {
  using type = T;
};
template <>
struct Dev<Eigen::half> {
  using type = afgan::half_t;
};
static_assert(sizeof(Eigen::half) == sizeof(afgan::half_t), "half layouts differ");

template <typename T>
const typename Dev<T>::type* DevPtr(const Tensor& t) {
  return reinterpret_cast<const typename Dev<T>::type*>(t.flat<T>().data());
}
template <typename T>
typename Dev<T>::type* DevPtr(Tensor* t) {
  return reinterpret_cast<typename Dev<T>::type*>(t->flat<T>().data());
}
template <typename T>
const typename Dev<T>::type* DevPtr(const T* p) {
  return reinterpret_cast<const typename Dev<T>::type*>(p);
}
template <typename T>
typename Dev<T>::type* DevPtr(T* p) {
  return reinterpret_cast<typename Dev<T>::type*>(p);
}

inline afgan::DevFilter MakeFilter(const Tensor& t, bool flip, float scale) {
  return afgan::make_dev_filter(t.flat<float>().data(), t.dims(), t.dim_size(0), t.dims() == 2 ? t.dim_size(1) : 1,
                                flip, scale);
}

inline Status LaunchStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return OkStatus();
  return errors::Internal(what, ": kernel launch failed: ", cudaGetErrorString(e));
}

}  // namespace afgan_gpu
}  // namespace tensorflow

#endif  // AFGAN_TF_CUSTOM_OPS_GPU_GLUE_H_
