#include "parallel.h"
#ifdef _OPENMP
#include <omp.h>
#endif

void ds_parallel_ranges(int64_t n, int64_t min, ds_range_fn fn, void *ctx) {
  if (n < min) {
    fn(ctx, 0, n);
    return;
  }
#pragma omp parallel
  {
    int t = 0, nt = 1;
#ifdef _OPENMP
    t = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
    int64_t lo = t == 0 ? 0 : (n * t / nt) & ~(int64_t)15, hi = t == nt - 1 ? n : (n * (t + 1) / nt) & ~(int64_t)15;
    if (hi > lo) fn(ctx, lo, hi);
  }
}
