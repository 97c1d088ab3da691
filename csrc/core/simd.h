/* GCC/Clang vector types for loops whose sums must stay in registers: an array of
 * sums indexed in a loop lives on the stack (a load and a store per step), and one
 * vector sum is a chain of dependent adds (its latency, not the adds, sets the pace).
 * Unaligned and may alias any float/double data. Without AVX the compiler splits them. */
#ifndef DS_SIMD_H
#define DS_SIMD_H

typedef float v8 __attribute__((vector_size(32), aligned(4), may_alias));
typedef float v4 __attribute__((vector_size(16), aligned(4), may_alias));
typedef double v4d __attribute__((vector_size(32), aligned(8), may_alias));

static inline float v8_sum(v8 v) {
  float s = 0.0f;
  for (int i = 0; i < 8; i++) s += v[i];
  return s;
}

static inline double v4d_sum(v4d v) { return (v[0] + v[1]) + (v[2] + v[3]); }

#endif
