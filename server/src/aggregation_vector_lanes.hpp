// GCC's generic vectors of kWidth floats and their loads and stores, shared
// by the kernels written once for any width (aggregation_robust_lanes.hpp,
// aggregation_stream_lanes.hpp). aggregation_isa.cpp includes it first in
// each instruction set's namespace, which defines kWidth (4, 8 or 16);
// everything here has internal linkage. No include guard on purpose.

namespace {

// One instruction per operation at the width the target supports, and
// explicit, because the compiler does not if-convert the equivalent scalar
// ternaries by itself.
using V = float __attribute__((vector_size(4 * kWidth)));
using VI = std::int32_t __attribute__((vector_size(4 * kWidth)));
using VU = std::uint32_t __attribute__((vector_size(4 * kWidth)));
using VD = double __attribute__((vector_size(8 * kWidth)));

V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
void store(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
V splat(float x) {
  return V{} + x;
}

}  // namespace
