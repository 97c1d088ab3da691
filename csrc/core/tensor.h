/* deepsigns core tensors.
 *
 * A tensor is a float32 n-dimensional view (shape, strides in elements, offset)
 * onto a refcounted storage. Views (reshape, transpose, narrow, select) share the
 * storage; ds_contiguous copies only when needed. Every constructor returns a new
 * reference (refcount 1) or NULL with a message in ds_last_error().
 *
 *   ds_tensor *a = ds_tensor_new(2, (int64_t[]){2, 3});   // zeros
 *   ds_tensor *t = ds_transpose(a, 0, 1);                 // 3x2 view of a
 *   ds_release(a); ds_release(t);
 *
 * Dimensions are 0-based here; the Lua binding converts from 1-based.
 */
#ifndef DS_TENSOR_H
#define DS_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define DS_MAXDIM 8

typedef struct ds_storage {
  float *data;
  void *block; /* what malloc returned (data is aligned within it) */
  int64_t size; /* elements */
  int refcount;
} ds_storage;

typedef struct ds_tensor {
  ds_storage *storage;
  int64_t offset;
  int ndim;
  int64_t shape[DS_MAXDIM];
  int64_t stride[DS_MAXDIM];
  int refcount;
} ds_tensor;

/* Live counters (for ds.memory() and leak checks). */
int64_t ds_live_tensors(void);
int64_t ds_live_bytes(void);

ds_tensor *ds_tensor_new(int ndim, const int64_t *shape);   /* zero-filled */
ds_tensor *ds_tensor_empty(int ndim, const int64_t *shape); /* uninitialised */
ds_tensor *ds_tensor_like(const ds_tensor *t);              /* uninitialised, same shape */
ds_tensor *ds_scalar_tensor(float v);                       /* 0-dim */
void ds_retain(ds_tensor *t);
void ds_release(ds_tensor *t); /* NULL is fine */

static inline float *ds_data(const ds_tensor *t) { return t->storage->data + t->offset; }
int64_t ds_numel(const ds_tensor *t);
int ds_is_contiguous(const ds_tensor *t);
int ds_same_shape(const ds_tensor *a, const ds_tensor *b);
/* "2x3" (or "scalar") into buf; returns buf. */
char *ds_shape_str(const ds_tensor *t, char *buf, size_t n);
/* Validates a shape given by a user; `what` names the caller. */
int ds_check_shape(const char *what, int ndim, const int64_t *shape);

/* Views: share storage with t. */
ds_tensor *ds_view(ds_tensor *t, int ndim, const int64_t *shape); /* needs contiguous t */
ds_tensor *ds_reshape(ds_tensor *t, int ndim, const int64_t *shape); /* view or copy */
ds_tensor *ds_transpose(ds_tensor *t, int d1, int d2);
ds_tensor *ds_narrow(ds_tensor *t, int dim, int64_t start, int64_t len);
ds_tensor *ds_select(ds_tensor *t, int dim, int64_t index);
/* Broadcast view of t to a larger shape (stride 0 on expanded dims). */
ds_tensor *ds_expand(ds_tensor *t, int ndim, const int64_t *shape);

/* Copies. */
ds_tensor *ds_contiguous(ds_tensor *t); /* new reference: t itself if already contiguous */
ds_tensor *ds_clone(const ds_tensor *t);
int ds_copy(ds_tensor *dst, const ds_tensor *src); /* src broadcast to dst's shape */
void ds_fill(ds_tensor *t, float v);

/* Element offset (in storage) of a multi-index; no checks. */
int64_t ds_offset_of(const ds_tensor *t, const int64_t *index);

/* Broadcast shape of a and b into out (returns ndim, or DS_EFAIL naming `op`). */
int ds_broadcast_shape(const char *op, const ds_tensor *a, const ds_tensor *b, int64_t *out);

#endif
