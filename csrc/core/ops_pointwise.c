/* Elementwise ops with broadcasting, and the unary math with their gradients. */
#include "error.h"
#include "iter.h"
#include "ops.h"
#include "parallel.h"
#include <math.h>
#include <string.h>

const char *const ds_binary_names[DS_BINARY_COUNT] = {"add", "sub", "mul", "div", "maximum",
                                                       "minimum", "eq", "ne", "lt", "le", "gt", "ge"};
const char *const ds_unary_names[DS_UNARY_COUNT] = {"neg", "exp", "log", "sqrt", "pow",
                                                     "abs", "relu", "sigmoid", "tanh", "square",
                                                     "clamp_min", "clamp_max", "sign", "round"};

#define BINARY_LOOP(EXPR)                                                          \
  for (int64_t i = 0; i < n; i++) {                                                \
    float x = a[i * sa], y = b[i * sb];                                            \
    o[i * so] = (EXPR);                                                            \
  }

static void binary_row(void *ctx, int64_t n, float *const *p, const int64_t *st) {
  int op = *(const int *)ctx;
  float *o = p[0];
  const float *a = p[1], *b = p[2];
  int64_t so = st[0], sa = st[1], sb = st[2];
  switch (op) {
  case DS_ADD: BINARY_LOOP(x + y); break;
  case DS_SUB: BINARY_LOOP(x - y); break;
  case DS_MUL: BINARY_LOOP(x * y); break;
  case DS_DIV: BINARY_LOOP(x / y); break;
  case DS_MAXIMUM: BINARY_LOOP(x > y ? x : y); break;
  case DS_MINIMUM: BINARY_LOOP(x < y ? x : y); break;
  case DS_EQ: BINARY_LOOP(x == y); break;
  case DS_NE: BINARY_LOOP(x != y); break;
  case DS_LT: BINARY_LOOP(x < y); break;
  case DS_LE: BINARY_LOOP(x <= y); break;
  case DS_GT: BINARY_LOOP(x > y); break;
  case DS_GE: BINARY_LOOP(x >= y); break;
  }
}

int ds_binary_into(int op, ds_tensor *out, ds_tensor *a, ds_tensor *b) {
  int64_t shape[DS_MAXDIM];
  int nd = ds_broadcast_shape(ds_binary_names[op], a, b, shape);
  if (nd < 0) return DS_EFAIL;
  if (nd != out->ndim || memcmp(shape, out->shape, (size_t)nd * sizeof(int64_t))) {
    char s1[128], s2[128], s3[128];
    return ds_error("%s: result shape does not fit, out: %s, a: %s, b: %s", ds_binary_names[op],
                    ds_shape_str(out, s1, sizeof s1), ds_shape_str(a, s2, sizeof s2),
                    ds_shape_str(b, s3, sizeof s3));
  }
  ds_tensor *ea = ds_expand(a, nd, shape), *eb = ea ? ds_expand(b, nd, shape) : NULL;
  if (!eb) {
    ds_release(ea);
    return DS_EFAIL;
  }
  float *ptr[3] = {ds_data(out), ds_data(ea), ds_data(eb)};
  int64_t st[3][DS_MAXDIM];
  memcpy(st[0], out->stride, sizeof st[0]);
  memcpy(st[1], ea->stride, sizeof st[1]);
  memcpy(st[2], eb->stride, sizeof st[2]);
  ds_iterate_parallel(nd, shape, 3, ptr, (const int64_t(*)[DS_MAXDIM])st, binary_row, &op);
  ds_release(ea);
  ds_release(eb);
  return DS_OK;
}

ds_tensor *ds_binary(int op, ds_tensor *a, ds_tensor *b) {
  int64_t shape[DS_MAXDIM];
  int nd = ds_broadcast_shape(ds_binary_names[op], a, b, shape);
  if (nd < 0) return NULL;
  ds_tensor *out = ds_tensor_empty(nd, shape);
  if (out && ds_binary_into(op, out, a, b)) {
    ds_release(out);
    return NULL;
  }
  return out;
}

typedef struct { int op; float p; } unary_ctx;

#define UNARY_LOOP(EXPR)                                                           \
  for (int64_t i = 0; i < n; i++) {                                                \
    float x = a[i * sa];                                                           \
    o[i * so] = (EXPR);                                                            \
  }

static inline float sigmoidf(float x) {
  return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}

static void unary_row(void *vctx, int64_t n, float *const *p, const int64_t *st) {
  const unary_ctx *c = vctx;
  float *o = p[0], q = c->p;
  const float *a = p[1];
  int64_t so = st[0], sa = st[1];
  switch (c->op) {
  case DS_NEG: UNARY_LOOP(-x); break;
  case DS_EXP: UNARY_LOOP(expf(x)); break;
  case DS_LOG: UNARY_LOOP(logf(x)); break;
  case DS_SQRT: UNARY_LOOP(sqrtf(x)); break;
  case DS_POW: UNARY_LOOP(powf(x, q)); break;
  case DS_ABS: UNARY_LOOP(fabsf(x)); break;
  case DS_RELU: UNARY_LOOP(x < 0 ? 0 : x); break; /* NaN stays NaN */
  case DS_SIGMOID: UNARY_LOOP(sigmoidf(x)); break;
  case DS_TANH: UNARY_LOOP(tanhf(x)); break;
  case DS_SQUARE: UNARY_LOOP(x * x); break;
  case DS_CLAMP_MIN: UNARY_LOOP(x < q ? q : x); break;
  case DS_CLAMP_MAX: UNARY_LOOP(x > q ? q : x); break;
  case DS_SIGN: UNARY_LOOP((float)((x > 0) - (x < 0))); break;
  case DS_ROUND: UNARY_LOOP(nearbyintf(x)); break;
  }
}

int ds_unary_into(int op, ds_tensor *out, ds_tensor *x, float p) {
  if (!ds_same_shape(out, x)) {
    char s1[128], s2[128];
    return ds_error("%s: shapes differ, out: %s, x: %s", ds_unary_names[op],
                    ds_shape_str(out, s1, sizeof s1), ds_shape_str(x, s2, sizeof s2));
  }
  unary_ctx c = {op, p};
  float *ptr[2] = {ds_data(out), ds_data(x)};
  int64_t st[2][DS_MAXDIM];
  memcpy(st[0], out->stride, sizeof st[0]);
  memcpy(st[1], x->stride, sizeof st[1]);
  ds_iterate_parallel(x->ndim, x->shape, 2, ptr, (const int64_t(*)[DS_MAXDIM])st, unary_row, &c);
  return DS_OK;
}

ds_tensor *ds_unary(int op, ds_tensor *x, float p) {
  ds_tensor *out = ds_tensor_like(x);
  if (out) ds_unary_into(op, out, x, p);
  return out;
}

typedef struct {
  int op;
  float q;
  const float *a, *g, *o; /* input, incoming gradient, forward output (or NULL) */
  float *r;
} unary_grad_ctx;

/* r = g * d(op)/dx over [lo, hi): one loop per op, so that each vectorises. */
static void unary_grad_range(void *ctx, int64_t lo, int64_t hi) {
  const unary_grad_ctx *c = ctx;
  const float *restrict a = c->a, *restrict g = c->g, *restrict o = c->o;
  float *restrict r = c->r;
  const float q = c->q;
#define GRAD_LOOP(expr)                                                                                            \
  _Pragma("omp simd") for (int64_t i = lo; i < hi; i++) {                                                                              \
    float v = a[i];                                                                                                \
    (void)v;                                                                                                       \
    r[i] = g[i] * (expr);                                                                                          \
  }
  switch (c->op) {
  case DS_NEG: GRAD_LOOP(-1.0f); break;
  case DS_EXP: if (o) GRAD_LOOP(o[i]) else GRAD_LOOP(expf(v)) break;
  case DS_LOG: GRAD_LOOP(1.0f / v); break;
  case DS_SQRT: if (o) GRAD_LOOP(0.5f / o[i]) else GRAD_LOOP(0.5f / sqrtf(v)) break;
  case DS_POW: GRAD_LOOP(q * powf(v, q - 1)); break;
  case DS_ABS: GRAD_LOOP((float)((v > 0) - (v < 0))); break;
  case DS_RELU: /* a select, as PyTorch's threshold_backward: 0 where x <= 0 */
    _Pragma("omp simd") for (int64_t i = lo; i < hi; i++) r[i] = a[i] > 0 ? g[i] : 0.0f;
    break;
  case DS_SIGMOID:
    if (o) GRAD_LOOP(o[i] * (1 - o[i])) else GRAD_LOOP(sigmoidf(v) * (1 - sigmoidf(v)))
    break;
  case DS_TANH: if (o) GRAD_LOOP(1 - o[i] * o[i]) else GRAD_LOOP(1 - tanhf(v) * tanhf(v)) break;
  case DS_SQUARE: GRAD_LOOP(2 * v); break;
  case DS_CLAMP_MIN: _Pragma("omp simd") for (int64_t i = lo; i < hi; i++) r[i] = a[i] >= q ? g[i] : 0.0f; break;
  case DS_CLAMP_MAX: _Pragma("omp simd") for (int64_t i = lo; i < hi; i++) r[i] = a[i] <= q ? g[i] : 0.0f; break;
  default: GRAD_LOOP(0.0f); break; /* sign, round */
  }
#undef GRAD_LOOP
}

ds_tensor *ds_unary_backward(int op, ds_tensor *x, ds_tensor *y, ds_tensor *gy, float q) {
  char s1[128], s2[128];
  if (!ds_same_shape(x, gy)) {
    ds_error("%s backward: gradient shape %s does not match input %s", ds_unary_names[op],
             ds_shape_str(gy, s1, sizeof s1), ds_shape_str(x, s2, sizeof s2));
    return NULL;
  }
  ds_tensor *gx = ds_tensor_like(x);
  if (!gx) return NULL;
  ds_tensor *cx = ds_contiguous(x), *cy = y ? ds_contiguous(y) : NULL, *cg = ds_contiguous(gy);
  if (!cx || !cg || (y && !cy)) {
    ds_release(gx);
    gx = NULL;
    goto done;
  }
  unary_grad_ctx c = {op, q, ds_data(cx), ds_data(cg), cy ? ds_data(cy) : NULL, ds_data(gx)};
  ds_parallel_ranges(ds_numel(x), 1 << 16, unary_grad_range, &c);
done:
  ds_release(cx);
  ds_release(cy);
  ds_release(cg);
  return gx;
}

int ds_axpy(ds_tensor *out, float alpha, ds_tensor *x) {
  if (!ds_same_shape(out, x) || !ds_is_contiguous(out)) {
    char s1[128], s2[128];
    return ds_error("axpy: shapes differ or destination not contiguous, out: %s, x: %s",
                    ds_shape_str(out, s1, sizeof s1), ds_shape_str(x, s2, sizeof s2));
  }
  ds_tensor *cx = ds_contiguous(x);
  if (!cx) return DS_EFAIL;
  float *o = ds_data(out);
  const float *a = ds_data(cx);
  int64_t n = ds_numel(out);
  for (int64_t i = 0; i < n; i++) o[i] += alpha * a[i];
  ds_release(cx);
  return DS_OK;
}
