#include "iter.h"

static void iterate(int ndim, const int64_t *shape_in, int nops, float *const *ptr_in,
                    const int64_t (*stride_in)[DS_MAXDIM], ds_row_fn fn, void *ctx, int parallel) {
  int64_t shape[DS_MAXDIM], stride[DS_ITER_MAXOPS][DS_MAXDIM];
  int nd = 0;
  for (int d = 0; d < ndim; d++) {
    if (shape_in[d] == 0) return;
    if (shape_in[d] == 1) continue; /* size-1 dims never move */
    /* merge with the previous dim when every operand is linear across both */
    int merge = nd > 0;
    for (int k = 0; k < nops && merge; k++)
      merge = stride[k][nd - 1] == stride_in[k][d] * shape_in[d];
    if (merge) {
      shape[nd - 1] *= shape_in[d];
      for (int k = 0; k < nops; k++) stride[k][nd - 1] = stride_in[k][d];
    } else {
      shape[nd] = shape_in[d];
      for (int k = 0; k < nops; k++) stride[k][nd] = stride_in[k][d];
      nd++;
    }
  }
  float *ptr[DS_ITER_MAXOPS];
  int64_t step[DS_ITER_MAXOPS];
  for (int k = 0; k < nops; k++) ptr[k] = ptr_in[k];
  if (nd == 0) {
    for (int k = 0; k < nops; k++) step[k] = 0;
    fn(ctx, 1, ptr, step);
    return;
  }
  if (parallel && nd == 1 && shape[0] >= (1 << 16)) { /* one long row: split it across threads */
    int64_t n = shape[0];
#pragma omp parallel for schedule(static)
    for (int64_t part = 0; part < 16; part++) {
      int64_t lo = n * part / 16, hi = n * (part + 1) / 16;
      float *pp[DS_ITER_MAXOPS];
      int64_t st[DS_ITER_MAXOPS];
      for (int k = 0; k < nops; k++) pp[k] = ptr[k] + lo * stride[k][0], st[k] = stride[k][0];
      fn(ctx, hi - lo, pp, st);
    }
    return;
  }
  int inner = nd - 1;
  for (int k = 0; k < nops; k++) step[k] = stride[k][inner];
  int64_t idx[DS_MAXDIM] = {0};
  for (;;) {
    fn(ctx, shape[inner], ptr, step);
    int d = inner - 1;
    for (; d >= 0; d--) {
      idx[d]++;
      for (int k = 0; k < nops; k++) ptr[k] += stride[k][d];
      if (idx[d] < shape[d]) break;
      for (int k = 0; k < nops; k++) ptr[k] -= stride[k][d] * shape[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

void ds_iterate(int ndim, const int64_t *shape, int nops, float *const *ptr, const int64_t (*stride)[DS_MAXDIM],
                ds_row_fn fn, void *ctx) {
  iterate(ndim, shape, nops, ptr, stride, fn, ctx, 0);
}

void ds_iterate_parallel(int ndim, const int64_t *shape, int nops, float *const *ptr,
                         const int64_t (*stride)[DS_MAXDIM], ds_row_fn fn, void *ctx) {
  iterate(ndim, shape, nops, ptr, stride, fn, ctx, 1);
}
