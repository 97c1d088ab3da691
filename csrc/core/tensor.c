#include "tensor.h"
#include "error.h"
#include "iter.h"
#include <stdatomic.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

static _Atomic int64_t live_tensors, live_bytes;

int64_t ds_live_tensors(void) { return live_tensors; }
int64_t ds_live_bytes(void) { return live_bytes; }

/* Per-batch buffers (hundreds of KB) would each be a fresh mmap with its page
 * faults under glibc's default threshold; keep blocks below 64 MiB on the heap
 * and do not hand freed memory back to the system at every free. */
static void tune_allocator(void) {
  static int done;
  if (done) return;
  done = 1;
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 128 << 20);
}

static ds_storage *storage_new(int64_t n, int zero) {
  tune_allocator();
  ds_storage *s = malloc(sizeof *s);
  if (!s) return NULL;
  size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
  /* cache-line alignment for real arrays, made by hand inside a plain malloc block:
   * a block freed this step is then an exact fit for the same request next step.
   * (aligned_alloc asks for size + alignment, so the hole a freed buffer left was
   * always too small for its successor: the heap grew, and every large buffer was
   * fresh pages, faulted in by the first write, until the holes coalesced.) */
  size_t pad = bytes >= 4096 ? 64 : 0;
  s->block = malloc(bytes + pad);
  if (!s->block) {
    free(s);
    return NULL;
  }
  s->data = (float *)(((uintptr_t)s->block + pad) & ~(uintptr_t)(pad ? pad - 1 : 0));
  if (zero) memset(s->data, 0, bytes);
  s->size = n;
  s->refcount = 1;
  live_bytes += (int64_t)n * (int64_t)sizeof(float);
  return s;
}

static void storage_release(ds_storage *s) {
  if (s && --s->refcount == 0) {
    live_bytes -= s->size * (int64_t)sizeof(float);
    free(s->block);
    free(s);
  }
}

static ds_tensor *header_new(ds_storage *s, int64_t offset, int ndim) {
  ds_tensor *t = calloc(1, sizeof *t);
  if (!t) {
    ds_error("out of memory allocating a tensor header");
    return NULL;
  }
  t->storage = s;
  s->refcount++;
  t->offset = offset;
  t->ndim = ndim;
  t->refcount = 1;
  live_tensors++;
  return t;
}

int ds_check_shape(const char *what, int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > DS_MAXDIM)
    return ds_error("%s: %d dimensions given, at most %d are supported", what, ndim, DS_MAXDIM);
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0)
      return ds_error("%s: size of dimension %d is negative (%lld)", what, d + 1,
                      (long long)shape[d]);
    if (shape[d] > 0 && n > (INT64_C(1) << 40) / shape[d])
      return ds_error("%s: shape too large (more than 2^40 elements)", what);
    n *= shape[d];
  }
  return DS_OK;
}

static ds_tensor *alloc_tensor(int ndim, const int64_t *shape, int zero) {
  if (ds_check_shape("tensor", ndim, shape)) return NULL;
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  ds_storage *s = storage_new(n, zero);
  if (!s) {
    ds_error("out of memory allocating %lld floats", (long long)n);
    return NULL;
  }
  ds_tensor *t = header_new(s, 0, ndim);
  storage_release(s); /* the header holds it now */
  if (!t) return NULL;
  int64_t st = 1;
  for (int d = ndim - 1; d >= 0; d--) {
    t->shape[d] = shape[d];
    t->stride[d] = st;
    st *= shape[d];
  }
  return t;
}

ds_tensor *ds_tensor_new(int ndim, const int64_t *shape) { return alloc_tensor(ndim, shape, 1); }
ds_tensor *ds_tensor_empty(int ndim, const int64_t *shape) { return alloc_tensor(ndim, shape, 0); }
ds_tensor *ds_tensor_like(const ds_tensor *t) { return alloc_tensor(t->ndim, t->shape, 0); }

ds_tensor *ds_scalar_tensor(float v) {
  ds_tensor *t = alloc_tensor(0, NULL, 0);
  if (t) ds_data(t)[0] = v;
  return t;
}

void ds_retain(ds_tensor *t) { t->refcount++; }

void ds_release(ds_tensor *t) {
  if (t && --t->refcount == 0) {
    storage_release(t->storage);
    live_tensors--;
    free(t);
  }
}

int64_t ds_numel(const ds_tensor *t) {
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
  return n;
}

int ds_is_contiguous(const ds_tensor *t) {
  int64_t st = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (t->shape[d] != 1 && t->stride[d] != st) return 0;
    st *= t->shape[d];
  }
  return 1;
}

int ds_same_shape(const ds_tensor *a, const ds_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d]) return 0;
  return 1;
}

char *ds_shape_str(const ds_tensor *t, char *buf, size_t n) {
  if (t->ndim == 0) {
    snprintf(buf, n, "scalar");
    return buf;
  }
  size_t used = 0;
  buf[0] = 0;
  for (int d = 0; d < t->ndim && used < n; d++)
    used += (size_t)snprintf(buf + used, n - used, d ? "x%lld" : "%lld", (long long)t->shape[d]);
  return buf;
}

int64_t ds_offset_of(const ds_tensor *t, const int64_t *index) {
  int64_t off = t->offset;
  for (int d = 0; d < t->ndim; d++) off += index[d] * t->stride[d];
  return off;
}

static ds_tensor *view_of(ds_tensor *t, int ndim) { return header_new(t->storage, t->offset, ndim); }

ds_tensor *ds_view(ds_tensor *t, int ndim, const int64_t *shape) {
  if (ds_check_shape("view", ndim, shape)) return NULL;
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  char sa[128];
  if (n != ds_numel(t)) {
    ds_error("view: shape has %lld elements but the tensor (%s) has %lld", (long long)n,
             ds_shape_str(t, sa, sizeof sa), (long long)ds_numel(t));
    return NULL;
  }
  if (!ds_is_contiguous(t)) {
    ds_error("view: tensor (%s) is not contiguous; use reshape or clone", ds_shape_str(t, sa, sizeof sa));
    return NULL;
  }
  ds_tensor *v = view_of(t, ndim);
  if (!v) return NULL;
  int64_t st = 1;
  for (int d = ndim - 1; d >= 0; d--) {
    v->shape[d] = shape[d];
    v->stride[d] = st;
    st *= shape[d];
  }
  return v;
}

ds_tensor *ds_reshape(ds_tensor *t, int ndim, const int64_t *shape) {
  if (ds_is_contiguous(t)) return ds_view(t, ndim, shape);
  ds_tensor *c = ds_clone(t);
  if (!c) return NULL;
  ds_tensor *v = ds_view(c, ndim, shape);
  ds_release(c);
  return v;
}

static int check_dim(const char *op, const ds_tensor *t, int dim) {
  if (dim < 0 || dim >= t->ndim)
    return ds_error("%s: dimension %d out of range for a %d-dimensional tensor", op, dim + 1, t->ndim);
  return DS_OK;
}

ds_tensor *ds_transpose(ds_tensor *t, int d1, int d2) {
  if (check_dim("transpose", t, d1) || check_dim("transpose", t, d2)) return NULL;
  ds_tensor *v = view_of(t, t->ndim);
  if (!v) return NULL;
  memcpy(v->shape, t->shape, sizeof v->shape);
  memcpy(v->stride, t->stride, sizeof v->stride);
  v->shape[d1] = t->shape[d2], v->shape[d2] = t->shape[d1];
  v->stride[d1] = t->stride[d2], v->stride[d2] = t->stride[d1];
  return v;
}

ds_tensor *ds_narrow(ds_tensor *t, int dim, int64_t start, int64_t len) {
  if (check_dim("narrow", t, dim)) return NULL;
  if (start < 0 || len < 0 || start + len > t->shape[dim]) {
    ds_error("narrow: range [%lld, %lld] out of bounds for dimension %d of size %lld",
             (long long)start + 1, (long long)(start + len), dim + 1, (long long)t->shape[dim]);
    return NULL;
  }
  ds_tensor *v = view_of(t, t->ndim);
  if (!v) return NULL;
  memcpy(v->shape, t->shape, sizeof v->shape);
  memcpy(v->stride, t->stride, sizeof v->stride);
  v->offset += start * t->stride[dim];
  v->shape[dim] = len;
  return v;
}

ds_tensor *ds_select(ds_tensor *t, int dim, int64_t index) {
  if (check_dim("select", t, dim)) return NULL;
  if (index < 0 || index >= t->shape[dim]) {
    ds_error("select: index %lld out of range for dimension %d of size %lld", (long long)index + 1,
             dim + 1, (long long)t->shape[dim]);
    return NULL;
  }
  ds_tensor *v = view_of(t, t->ndim - 1);
  if (!v) return NULL;
  v->offset += index * t->stride[dim];
  for (int d = 0, k = 0; d < t->ndim; d++) {
    if (d == dim) continue;
    v->shape[k] = t->shape[d];
    v->stride[k] = t->stride[d];
    k++;
  }
  return v;
}

ds_tensor *ds_expand(ds_tensor *t, int ndim, const int64_t *shape) {
  char sa[128];
  if (ndim < t->ndim || ndim > DS_MAXDIM) {
    ds_error("expand: cannot expand %s to %d dimensions", ds_shape_str(t, sa, sizeof sa), ndim);
    return NULL;
  }
  ds_tensor *v = view_of(t, ndim);
  if (!v) return NULL;
  int lead = ndim - t->ndim;
  for (int d = 0; d < ndim; d++) {
    int64_t have = d < lead ? 1 : t->shape[d - lead];
    int64_t st = d < lead ? 0 : t->stride[d - lead];
    if (have == shape[d]) {
      v->shape[d] = have;
      v->stride[d] = have == 1 ? 0 : st;
    } else if (have == 1) {
      v->shape[d] = shape[d];
      v->stride[d] = 0;
    } else {
      ds_release(v);
      ds_error("expand: cannot expand %s, dimension %d has size %lld, wanted %lld",
               ds_shape_str(t, sa, sizeof sa), d - lead + 1, (long long)have, (long long)shape[d]);
      return NULL;
    }
  }
  return v;
}

int ds_broadcast_shape(const char *op, const ds_tensor *a, const ds_tensor *b, int64_t *out) {
  int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
  for (int d = 0; d < nd; d++) {
    int ia = d - (nd - a->ndim), ib = d - (nd - b->ndim);
    int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
    if (sa != sb && sa != 1 && sb != 1) {
      char s1[128], s2[128];
      return ds_error("%s: shapes do not broadcast, a: %s, b: %s", op, ds_shape_str(a, s1, sizeof s1),
                      ds_shape_str(b, s2, sizeof s2));
    }
    out[d] = sa == 1 ? sb : sa;
  }
  return nd;
}

static void copy_row(void *ctx, int64_t n, float *const *p, const int64_t *st) {
  (void)ctx;
  float *d = p[0];
  const float *s = p[1];
  if (st[0] == 1 && st[1] == 1) {
    memmove(d, s, (size_t)n * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < n; i++) d[i * st[0]] = s[i * st[1]];
}

int ds_copy(ds_tensor *dst, const ds_tensor *src) {
  ds_tensor *e = ds_expand((ds_tensor *)src, dst->ndim, dst->shape);
  if (!e) {
    char s1[128], s2[128];
    return ds_error("copy: source %s does not fit destination %s", ds_shape_str(src, s1, sizeof s1),
                    ds_shape_str(dst, s2, sizeof s2));
  }
  float *ptr[2] = {ds_data(dst), ds_data(e)};
  int64_t st[2][DS_MAXDIM];
  memcpy(st[0], dst->stride, sizeof st[0]);
  memcpy(st[1], e->stride, sizeof st[1]);
  ds_iterate_parallel(dst->ndim, dst->shape, 2, ptr, (const int64_t(*)[DS_MAXDIM])st, copy_row, NULL);
  ds_release(e);
  return DS_OK;
}

ds_tensor *ds_clone(const ds_tensor *t) {
  ds_tensor *c = ds_tensor_like(t);
  if (c && ds_copy(c, t)) {
    ds_release(c);
    return NULL;
  }
  return c;
}

ds_tensor *ds_contiguous(ds_tensor *t) {
  if (ds_is_contiguous(t)) {
    ds_retain(t);
    return t;
  }
  return ds_clone(t);
}

static void fill_row(void *ctx, int64_t n, float *const *p, const int64_t *st) {
  float v = *(const float *)ctx;
  for (int64_t i = 0; i < n; i++) p[0][i * st[0]] = v;
}

void ds_fill(ds_tensor *t, float v) {
  float *ptr[1] = {ds_data(t)};
  ds_iterate_parallel(t->ndim, t->shape, 1, ptr, (const int64_t(*)[DS_MAXDIM])t->stride, fill_row, &v);
}
