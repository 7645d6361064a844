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

// minLanes(a, b) = b < a ? b : a and maxLanes(a, b) = a < b ? b : a, lane
// by lane, and whether any lane of a compare result is set. On x86 each is
// one instruction (EDGEFL_LANES_X86: 1 SSE, 2 AVX2, 3 AVX-512, set by
// aggregation_isa.cpp); x86's min and max return their second operand when
// the two compare equal, so the operands are swapped to keep the same
// result for -0 and +0, and every build returns the same bits. The
// compiler does not pick these by itself where a min and a max share one
// compare: it emits the compare and two blends.
#if EDGEFL_LANES_X86 == 3
// The zero-masking forms with every lane kept: the plain ones start from an
// undefined vector, which GCC 12 warns about.
V minLanes(V a, V b) {
  return _mm512_maskz_min_ps(static_cast<__mmask16>(0xffff), b, a);
}
V maxLanes(V a, V b) {
  return _mm512_maskz_max_ps(static_cast<__mmask16>(0xffff), b, a);
}
bool any(VI mask) {
  return _mm512_movepi32_mask(__builtin_bit_cast(__m512i, mask)) != 0;
}
#elif EDGEFL_LANES_X86 == 2
V minLanes(V a, V b) {
  return _mm256_min_ps(b, a);
}
V maxLanes(V a, V b) {
  return _mm256_max_ps(b, a);
}
bool any(VI mask) {
  return _mm256_movemask_ps(__builtin_bit_cast(__m256, mask)) != 0;
}
#elif EDGEFL_LANES_X86 == 1
V minLanes(V a, V b) {
  return _mm_min_ps(b, a);
}
V maxLanes(V a, V b) {
  return _mm_max_ps(b, a);
}
bool any(VI mask) {
  return _mm_movemask_ps(__builtin_bit_cast(__m128, mask)) != 0;
}
#else
V minLanes(V a, V b) {
  return b < a ? b : a;
}
V maxLanes(V a, V b) {
  return a < b ? b : a;
}
bool any(VI mask) {
  std::int32_t bits = 0;
  for (std::size_t l = 0; l < kWidth; ++l) bits |= mask[l];
  return bits != 0;
}
#endif

}  // namespace
