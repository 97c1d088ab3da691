/* Element loops split across the OpenMP threads in one contiguous block each.
 * Below `min` elements the whole range runs on the calling thread, as a plain call
 * that keeps the body's own vector loop (GCC compiles the serial case of a combined
 * "parallel for simd ... if (...)" as a scalar loop). */
#ifndef DS_PARALLEL_H
#define DS_PARALLEL_H

#include <stdint.h>

typedef void (*ds_range_fn)(void *ctx, int64_t lo, int64_t hi);

/* Block edges are multiples of 16 elements (whole cache lines of floats). */
void ds_parallel_ranges(int64_t n, int64_t min, ds_range_fn fn, void *ctx);

#endif
