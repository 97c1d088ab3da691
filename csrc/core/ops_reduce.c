/* Reductions over everything or over one dimension. */
#include "error.h"
#include "iter.h"
#include "ops.h"
#include "parallel.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

ds_tensor *ds_sum_all(ds_tensor *x) {
  ds_tensor *c = ds_contiguous(x);
  if (!c) return NULL;
  /* in double, in 16 lanes (four vector registers, so that the adds do not wait on
   * each other), summed at the end: the serial loop ran at one element a nanosecond */
  const float *a = ds_data(c);
  int64_t n = ds_numel(c), i = 0;
  double lane[16] = {0}, acc = 0;
  for (; i + 16 <= n; i += 16)
#pragma omp simd
    for (int j = 0; j < 16; j++) lane[j] += a[i + j];
  for (; i < n; i++) acc += a[i];
  for (int j = 0; j < 16; j++) acc += lane[j];
  ds_release(c);
  return ds_scalar_tensor((float)acc);
}

/* x viewed as outer x len x inner around `dim`. */
static void split_dims(const ds_tensor *x, int dim, int64_t *outer, int64_t *len, int64_t *inner) {
  *outer = 1, *inner = 1;
  for (int d = 0; d < dim; d++) *outer *= x->shape[d];
  for (int d = dim + 1; d < x->ndim; d++) *inner *= x->shape[d];
  *len = x->shape[dim];
}

static ds_tensor *reduced_like(const ds_tensor *x, int dim, int keepdim) {
  int64_t shape[DS_MAXDIM];
  int nd = 0;
  for (int d = 0; d < x->ndim; d++) {
    if (d == dim) {
      if (keepdim) shape[nd++] = 1;
    } else
      shape[nd++] = x->shape[d];
  }
  return ds_tensor_new(nd, shape);
}

static int check_dim(const char *op, const ds_tensor *x, int dim) {
  if (dim < 0 || dim >= x->ndim)
    return ds_error("%s: dimension %d out of range for a %d-dimensional tensor", op, dim + 1, x->ndim);
  return DS_OK;
}

ds_tensor *ds_sum_dim(ds_tensor *x, int dim, int keepdim) {
  if (check_dim("sum", x, dim)) return NULL;
  ds_tensor *c = ds_contiguous(x), *out = c ? reduced_like(x, dim, keepdim) : NULL;
  if (!out) {
    ds_release(c);
    return NULL;
  }
  int64_t outer, len, inner;
  split_dims(x, dim, &outer, &len, &inner);
  const float *a = ds_data(c);
  float *o = ds_data(out);
  for (int64_t i = 0; i < outer; i++)
    for (int64_t j = 0; j < len; j++) {
      const float *row = a + (i * len + j) * inner;
      float *orow = o + i * inner;
      for (int64_t k = 0; k < inner; k++) orow[k] += row[k];
    }
  ds_release(c);
  return out;
}

ds_tensor *ds_sum_to(ds_tensor *g, int ndim, const int64_t *shape) {
  char s1[128];
  if (ndim > g->ndim) {
    ds_error("sum_to: cannot reduce %s to %d dimensions", ds_shape_str(g, s1, sizeof s1), ndim);
    return NULL;
  }
  ds_retain(g);
  ds_tensor *cur = g;
  /* sum away leading dims, then size-1 dims (keeping them) */
  while (cur->ndim > ndim) {
    ds_tensor *next = ds_sum_dim(cur, 0, 0);
    ds_release(cur);
    if (!next) return NULL;
    cur = next;
  }
  for (int d = 0; d < ndim; d++) {
    if (shape[d] == cur->shape[d]) continue;
    if (shape[d] != 1) {
      ds_error("sum_to: cannot reduce %s to the given shape", ds_shape_str(g, s1, sizeof s1));
      ds_release(cur);
      return NULL;
    }
    ds_tensor *next = ds_sum_dim(cur, d, 1);
    ds_release(cur);
    if (!next) return NULL;
    cur = next;
  }
  if (!ds_is_contiguous(cur)) {
    ds_tensor *c = ds_clone(cur);
    ds_release(cur);
    cur = c;
  }
  return cur;
}

ds_tensor *ds_max_all(ds_tensor *x) {
  if (ds_numel(x) == 0) {
    ds_error("max: the tensor is empty");
    return NULL;
  }
  ds_tensor *c = ds_contiguous(x);
  if (!c) return NULL;
  const float *a = ds_data(c);
  float m = a[0];
  int64_t n = ds_numel(c);
  for (int64_t i = 1; i < n; i++)
    if (a[i] > m || isnan(a[i])) m = a[i];
  ds_release(c);
  return ds_scalar_tensor(m);
}

int ds_max_dim(ds_tensor *x, int dim, int keepdim, ds_tensor **values, ds_tensor **indices) {
  if (check_dim("max", x, dim)) return DS_EFAIL;
  if (x->shape[dim] == 0) return ds_error("max: dimension %d is empty", dim + 1);
  ds_tensor *c = ds_contiguous(x);
  ds_tensor *v = c ? reduced_like(x, dim, keepdim) : NULL, *ix = v ? reduced_like(x, dim, keepdim) : NULL;
  if (!ix) {
    ds_release(c);
    ds_release(v);
    return DS_EFAIL;
  }
  int64_t outer, len, inner;
  split_dims(x, dim, &outer, &len, &inner);
  const float *a = ds_data(c);
  float *vo = ds_data(v), *io = ds_data(ix);
  for (int64_t i = 0; i < outer; i++)
    for (int64_t k = 0; k < inner; k++) {
      const float *p = a + i * len * inner + k;
      float best = p[0];
      int64_t bi = 0;
      for (int64_t j = 1; j < len; j++)
        if (ds_max_takes(p[j * inner], best)) best = p[j * inner], bi = j;
      vo[i * inner + k] = best;
      io[i * inner + k] = (float)bi;
    }
  ds_release(c);
  *values = v;
  if (indices) *indices = ix;
  else ds_release(ix);
  return DS_OK;
}

typedef struct { const uint32_t *a; int bad; } finite_ctx;

static void finite_range(void *ctx, int64_t lo, int64_t hi) {
  finite_ctx *f = ctx;
  const uint32_t *a = f->a;
  uint32_t bad = 0;
  /* exponent bits all ones <=> inf or nan; an integer OR-reduction vectorises */
  for (int64_t i = lo; i < hi; i++) bad |= ((a[i] & 0x7f800000u) == 0x7f800000u);
  if (bad) __atomic_store_n(&f->bad, 1, __ATOMIC_RELAXED);
}

int ds_all_finite(ds_tensor *x) {
  ds_tensor *c = ds_contiguous(x);
  if (!c) return 0;
  finite_ctx f = {(const uint32_t *)ds_data(c), 0};
  ds_parallel_ranges(ds_numel(c), 1 << 17, finite_range, &f);
  ds_release(c);
  return !f.bad;
}

typedef struct { double sum, sumsq; } moments_acc;

static void moments_row(void *ctx, int64_t n, float *const *p, const int64_t *st) {
  moments_acc *m = ctx;
  for (int64_t i = 0; i < n; i++) {
    double v = p[0][i * st[0]];
    m->sum += v;
    m->sumsq += v * v;
  }
}

/* Mean and (population) variance of all elements, without copying strided input. */
int ds_moments(ds_tensor *x, double *mean, double *var) {
  int64_t n = ds_numel(x);
  if (n == 0) return ds_error("moments: the tensor is empty");
  moments_acc m = {0, 0};
  float *ptr[1] = {ds_data(x)};
  ds_iterate(x->ndim, x->shape, 1, ptr, (const int64_t(*)[DS_MAXDIM])x->stride, moments_row, &m);
  *mean = m.sum / (double)n;
  double v = m.sumsq / (double)n - *mean * *mean;
  *var = v > 0 ? v : 0;
  return DS_OK;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

int ds_abs_kth(ds_tensor *const *ts, int n, int64_t k, float *out) {
  int64_t total = 0;
  for (int i = 0; i < n; i++) total += ds_numel(ts[i]);
  if (k < 0 || k >= total) return ds_error("abs_kth: rank %lld out of range for %lld values", (long long)k + 1, (long long)total);
  float *buf = malloc(sizeof(float) * (size_t)total);
  if (!buf) return ds_error("abs_kth: out of memory");
  int64_t at = 0;
  for (int i = 0; i < n; i++) {
    ds_tensor *c = ds_contiguous(ts[i]);
    if (!c) {
      free(buf);
      return DS_EFAIL;
    }
    for (int64_t j = 0; j < ds_numel(c); j++) buf[at++] = fabsf(ds_data(c)[j]);
    ds_release(c);
  }
  qsort(buf, (size_t)total, sizeof(float), cmp_float);
  *out = buf[k];
  free(buf);
  return DS_OK;
}
