/* Batch normalisation, dropout masks and row indexing, beside their gradients. */
#include "error.h"
#include "ops.h"
#include "parallel.h"
#include "rng.h"
#include <math.h>
#include <string.h>

/* x as N x C x S (S = H*W, or 1 for N x C). */
static int bn_dims(ds_tensor *x, int64_t *n, int64_t *c, int64_t *s) {
  if (x->ndim != 2 && x->ndim != 4) return 0;
  *n = x->shape[0], *c = x->shape[1];
  *s = x->ndim == 4 ? x->shape[2] * x->shape[3] : 1;
  return 1;
}

static int is_vec(ds_tensor *t, int64_t c) { return t && t->ndim == 1 && t->shape[0] == c && ds_is_contiguous(t); }

ds_tensor *ds_batchnorm(ds_tensor *x, ds_tensor *gamma, ds_tensor *beta, ds_tensor *run_mean,
                        ds_tensor *run_var, int training, float momentum, float eps,
                        ds_tensor **save_mean, ds_tensor **save_invstd) {
  int64_t n, c, s;
  char s1[128];
  if (!bn_dims(x, &n, &c, &s)) {
    ds_error("batchnorm: input must be N x C or N x C x H x W, got %s", ds_shape_str(x, s1, sizeof s1));
    return NULL;
  }
  if (!is_vec(gamma, c) || !is_vec(beta, c) || !is_vec(run_mean, c) || !is_vec(run_var, c)) {
    ds_error("batchnorm: weight, bias and running statistics must be contiguous vectors of size %lld "
             "(input %s)", (long long)c, ds_shape_str(x, s1, sizeof s1));
    return NULL;
  }
  int64_t cnt = n * s;
  if (training && cnt < 2) {
    ds_error("batchnorm: training needs more than one value per channel (input %s)",
             ds_shape_str(x, s1, sizeof s1));
    return NULL;
  }
  ds_tensor *cx = ds_contiguous(x), *y = ds_tensor_like(x);
  ds_tensor *sm = ds_tensor_empty(1, &c), *si = ds_tensor_empty(1, &c);
  if (!cx || !y || !sm || !si) {
    ds_release(cx), ds_release(y), ds_release(sm), ds_release(si);
    return NULL;
  }
  const float *px = ds_data(cx);
  for (int64_t ch = 0; ch < c; ch++) {
    double mean, var;
    if (training) {
      double acc = 0, acc2 = 0;
      for (int64_t i = 0; i < n; i++) {
        const float *r = px + (i * c + ch) * s;
        for (int64_t k = 0; k < s; k++) acc += r[k];
      }
      mean = acc / (double)cnt;
      for (int64_t i = 0; i < n; i++) {
        const float *r = px + (i * c + ch) * s;
        for (int64_t k = 0; k < s; k++) acc2 += (r[k] - mean) * (r[k] - mean);
      }
      var = acc2 / (double)cnt;
      float *rm = ds_data(run_mean), *rv = ds_data(run_var);
      rm[ch] = (float)((1 - momentum) * rm[ch] + momentum * mean);
      rv[ch] = (float)((1 - momentum) * rv[ch] + momentum * var * (double)cnt / (double)(cnt - 1));
    } else {
      mean = ds_data(run_mean)[ch];
      var = ds_data(run_var)[ch];
    }
    float inv = (float)(1.0 / sqrt(var + eps)), g = ds_data(gamma)[ch], b = ds_data(beta)[ch];
    ds_data(sm)[ch] = (float)mean;
    ds_data(si)[ch] = inv;
    for (int64_t i = 0; i < n; i++) {
      const float *r = px + (i * c + ch) * s;
      float *o = ds_data(y) + (i * c + ch) * s;
      for (int64_t k = 0; k < s; k++) o[k] = (r[k] - (float)mean) * inv * g + b;
    }
  }
  ds_release(cx);
  *save_mean = sm;
  *save_invstd = si;
  return y;
}

int ds_batchnorm_backward(ds_tensor *x, ds_tensor *gamma, ds_tensor *save_mean,
                          ds_tensor *save_invstd, ds_tensor *gy, int training, ds_tensor **gx,
                          ds_tensor **ggamma, ds_tensor **gbeta) {
  int64_t n, c, s;
  char s1[128], s2[128];
  if (!bn_dims(x, &n, &c, &s) || !ds_same_shape(x, gy) || !is_vec(gamma, c) ||
      !is_vec(save_mean, c) || !is_vec(save_invstd, c))
    return ds_error("batchnorm backward: size mismatch, input: %s, gradient: %s",
                    ds_shape_str(x, s1, sizeof s1), ds_shape_str(gy, s2, sizeof s2));
  int64_t cnt = n * s;
  ds_tensor *cx = ds_contiguous(x), *cg = ds_contiguous(gy);
  ds_tensor *rx = gx ? ds_tensor_like(x) : NULL, *rgam = ds_tensor_empty(1, &c), *rbet = ds_tensor_empty(1, &c);
  if (!cx || !cg || (gx && !rx) || !rgam || !rbet) {
    ds_release(cx), ds_release(cg), ds_release(rx), ds_release(rgam), ds_release(rbet);
    return DS_EFAIL;
  }
  const float *px = ds_data(cx), *pg = ds_data(cg);
  for (int64_t ch = 0; ch < c; ch++) {
    float mean = ds_data(save_mean)[ch], inv = ds_data(save_invstd)[ch], gam = ds_data(gamma)[ch];
    double sg = 0, sgx = 0;
    for (int64_t i = 0; i < n; i++) {
      const float *r = px + (i * c + ch) * s, *g = pg + (i * c + ch) * s;
      for (int64_t k = 0; k < s; k++) {
        sg += g[k];
        sgx += (double)g[k] * (r[k] - mean) * inv;
      }
    }
    ds_data(rbet)[ch] = (float)sg;
    ds_data(rgam)[ch] = (float)sgx;
    if (!rx) continue;
    float k1 = gam * inv, mg = (float)(sg / (double)cnt), mgx = (float)(sgx / (double)cnt);
    for (int64_t i = 0; i < n; i++) {
      const float *r = px + (i * c + ch) * s, *g = pg + (i * c + ch) * s;
      float *o = ds_data(rx) + (i * c + ch) * s;
      for (int64_t k = 0; k < s; k++) {
        float xhat = (r[k] - mean) * inv;
        o[k] = training ? k1 * (g[k] - mg - xhat * mgx) : k1 * g[k];
      }
    }
  }
  ds_release(cx), ds_release(cg);
  if (gx) *gx = rx;
  if (ggamma) *ggamma = rgam; else ds_release(rgam);
  if (gbeta) *gbeta = rbet; else ds_release(rbet);
  return DS_OK;
}

/* Dropout masks (n values of 0 or 1/(1-p); y = x * mask when x is given) from a
 * counter-based generator: element i keeps its value when
 * hash(key, i) >= p 2^32, with the key one draw of the global generator per mask. Each
 * element depends only on the key and its index, so the mask is the same whatever the
 * thread count and the blocks run on all threads in vector lanes. */
typedef struct dropout_job {
  float *pm, *py;
  const float *px;
  uint64_t key;
  uint32_t thresh;
  float keep;
} dropout_job;

static inline uint32_t mix32(uint32_t x) { /* MurmurHash3's finaliser: full avalanche */
  x ^= x >> 16;
  x *= 0x85ebca6bu;
  x ^= x >> 13;
  x *= 0xc2b2ae35u;
  x ^= x >> 16;
  return x;
}

static void dropout_range(void *ctx, int64_t lo, int64_t hi) {
  const dropout_job *j = ctx;
  uint32_t k0 = (uint32_t)j->key, k1 = (uint32_t)(j->key >> 32), thresh = j->thresh;
  float keep = j->keep, *restrict pm = j->pm, *restrict py = j->py;
  const float *restrict px = j->px;
  for (int64_t i0 = lo; i0 < hi;) { /* segments where the index's high word is constant */
    int64_t end = ((i0 >> 32) + 1) << 32;
    if (end > hi) end = hi;
    uint32_t top = (uint32_t)(i0 >> 32) ^ k1, base = (uint32_t)i0;
    int64_t len = end - i0;
#pragma omp simd
    for (int64_t i = 0; i < len; i++) {
      uint32_t u = mix32(mix32((base + (uint32_t)i) ^ k0) + top);
      pm[i0 + i] = u >= thresh ? keep : 0.0f;
    }
    if (px)
#pragma omp simd
      for (int64_t i = i0; i < end; i++) py[i] = px[i] * pm[i];
    i0 = end;
  }
}

static void dropout_fill(float *pm, const float *px, float *py, int64_t n, float p) {
  dropout_job job = {pm, py, px, ds_rng_next(), (uint32_t)fmin((double)p * 4294967296.0, 4294967295.0),
                     1.0f / (1.0f - p)};
  ds_parallel_ranges(n, 1 << 15, dropout_range, &job);
}

static int check_p(float p) {
  if (!(p >= 0 && p < 1)) return ds_error("dropout: probability must be in [0, 1), got %g", p);
  return DS_OK;
}

ds_tensor *ds_dropout_mask(ds_tensor *x, float p) {
  if (check_p(p)) return NULL;
  ds_tensor *m = ds_tensor_like(x);
  if (m) dropout_fill(ds_data(m), NULL, NULL, ds_numel(m), p);
  return m;
}

ds_tensor *ds_dropout(ds_tensor *x, float p, ds_tensor **mask) {
  if (check_p(p)) return NULL;
  ds_tensor *cx = ds_contiguous(x), *m = cx ? ds_tensor_like(x) : NULL, *y = m ? ds_tensor_like(x) : NULL;
  if (!y) {
    ds_release(cx), ds_release(m);
    return NULL;
  }
  dropout_fill(ds_data(m), ds_data(cx), ds_data(y), ds_numel(m), p);
  ds_release(cx);
  *mask = m;
  return y;
}

enum { PREFETCH_ROWS = 2 }; /* best of 1, 2, 4, 8 on 3 KB rows (Fashion-MNIST images) */

ds_tensor *ds_index_select(ds_tensor *x, const int64_t *idx, int64_t n) {
  char s1[128];
  if (x->ndim < 1) {
    ds_error("index_select: cannot index a scalar");
    return NULL;
  }
  for (int64_t i = 0; i < n; i++)
    if (idx[i] < 0 || idx[i] >= x->shape[0]) {
      ds_error("index_select: index %lld out of range for %s (dimension 1)", (long long)idx[i] + 1,
               ds_shape_str(x, s1, sizeof s1));
      return NULL;
    }
  int64_t shape[DS_MAXDIM];
  memcpy(shape, x->shape, sizeof shape);
  shape[0] = n;
  ds_tensor *cx = ds_contiguous(x), *y = cx ? ds_tensor_empty(x->ndim, shape) : NULL;
  if (!y) {
    ds_release(cx);
    return NULL;
  }
  int64_t row = x->shape[0] ? ds_numel(x) / x->shape[0] : 0;
  /* a batch of rows drawn at random from a large data set is bound by memory latency:
   * two threads keep twice the misses in flight, and each asks for the row after next
   * before copying this one (a copy alone has one row's misses in flight) */
  float *dst = ds_data(y);
  const float *src = ds_data(cx);
  const size_t bytes = sizeof(float) * (size_t)row;
#pragma omp parallel for schedule(static) if (n * row >= (1 << 16))
  for (int64_t i = 0; i < n; i++) {
    if (i + PREFETCH_ROWS < n) {
      const char *ahead = (const char *)(src + idx[i + PREFETCH_ROWS] * row);
      for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch(ahead + b, 0, 0);
    }
    memcpy(dst + i * row, src + idx[i] * row, bytes);
  }
  ds_release(cx);
  return y;
}

ds_tensor *ds_index_add(int ndim, const int64_t *shape, const int64_t *idx, int64_t n, ds_tensor *g) {
  ds_tensor *r = ds_tensor_new(ndim, shape);
  if (!r) return NULL;
  ds_tensor *cg = ds_contiguous(g);
  int64_t row = shape[0] ? ds_numel(r) / shape[0] : 0;
  if (!cg || g->ndim != ndim || g->shape[0] != n || ds_numel(g) != n * row) {
    if (cg) ds_error("index_add: gradient does not match the selected rows");
    ds_release(cg), ds_release(r);
    return NULL;
  }
  for (int64_t i = 0; i < n; i++) {
    float *dst = ds_data(r) + idx[i] * row;
    const float *src = ds_data(cg) + i * row;
    for (int64_t k = 0; k < row; k++) dst[k] += src[k];
  }
  ds_release(cg);
  return r;
}

static int check_gather(ds_tensor *x, ds_tensor *idx) {
  char s1[128], s2[128];
  if (x->ndim != 2 || idx->ndim != 1 || idx->shape[0] != x->shape[0])
    return ds_error("gather: size mismatch, x: %s, index: %s (want B x C and B)",
                    ds_shape_str(x, s1, sizeof s1), ds_shape_str(idx, s2, sizeof s2));
  for (int64_t i = 0; i < idx->shape[0]; i++) {
    float v = ds_data(idx)[i * idx->stride[0]];
    if (!(v >= 0 && v < x->shape[1]))
      return ds_error("gather: index %g at row %lld out of range 0..%lld", v, (long long)i + 1,
                      (long long)x->shape[1] - 1);
  }
  return DS_OK;
}

ds_tensor *ds_gather_rows(ds_tensor *x, ds_tensor *idx) {
  if (check_gather(x, idx)) return NULL;
  ds_tensor *y = ds_tensor_empty(1, &x->shape[0]);
  if (!y) return NULL;
  for (int64_t i = 0; i < x->shape[0]; i++) {
    int64_t j = (int64_t)ds_data(idx)[i * idx->stride[0]];
    ds_data(y)[i] = ds_data(x)[i * x->stride[0] + j * x->stride[1]];
  }
  return y;
}

ds_tensor *ds_gather_rows_backward(ds_tensor *x, ds_tensor *idx, ds_tensor *g) {
  if (check_gather(x, idx)) return NULL;
  if (g->ndim != 1 || g->shape[0] != x->shape[0]) {
    ds_error("gather backward: gradient does not match");
    return NULL;
  }
  ds_tensor *r = ds_tensor_new(2, x->shape);
  if (!r) return NULL;
  for (int64_t i = 0; i < x->shape[0]; i++) {
    int64_t j = (int64_t)ds_data(idx)[i * idx->stride[0]];
    ds_data(r)[i * x->shape[1] + j] += ds_data(g)[i * g->stride[0]];
  }
  return r;
}
