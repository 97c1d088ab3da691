/* Walks the index space of a shape over up to three strided operands, calling a
 * row kernel on the innermost (coalesced) dimension. Used by copy, fill and the
 * pointwise ops so that each handles any strides and broadcasting (stride 0). */
#ifndef DS_ITER_H
#define DS_ITER_H

#include "tensor.h"

#define DS_ITER_MAXOPS 3

typedef void (*ds_row_fn)(void *ctx, int64_t n, float *const *ptr, const int64_t *step);

/* ptr[k] points at operand k's first element; stride[k] its strides for `shape`. */
void ds_iterate(int ndim, const int64_t *shape, int nops, float *const *ptr,
                const int64_t (*stride)[DS_MAXDIM], ds_row_fn fn, void *ctx);
/* The same, but a long single row may be split across threads: only for kernels
 * whose outputs are elementwise (no shared accumulator in ctx). */
void ds_iterate_parallel(int ndim, const int64_t *shape, int nops, float *const *ptr,
                         const int64_t (*stride)[DS_MAXDIM], ds_row_fn fn, void *ctx);

#endif
