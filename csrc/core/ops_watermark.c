/* The white-box watermark losses (DeepSigns), each variant's value and gradients in
 * one op. Sums are kept in double (the losses are gradient-checked in float32). */
#include "ops_watermark.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "blas.h"
#include "error.h"

/* ---- checks ---- */

static int check_inputs(const char *op, ds_tensor *h, ds_tensor *y, ds_tensor *a, ds_tensor *b) {
  char s1[128], s2[128], s3[128], s4[128];
  if (h->ndim != 2 || y->ndim != 1 || y->shape[0] != h->shape[0] || a->ndim != 2 || a->shape[0] != h->shape[1] ||
      b->ndim != 2 || b->shape[1] != a->shape[1])
    return ds_error("%s: size mismatch, activations: %s, labels: %s, A: %s, bits: %s (want B x M, B, M x N, s x N)", op,
                    ds_shape_str(h, s1, sizeof s1), ds_shape_str(y, s2, sizeof s2), ds_shape_str(a, s3, sizeof s3),
                    ds_shape_str(b, s4, sizeof s4));
  if (!ds_is_contiguous(h) || !ds_is_contiguous(y))
    return ds_error("%s: the activations and the labels must be contiguous (:contiguous())", op);
  if (!ds_is_contiguous(a) || !ds_is_contiguous(b)) return ds_error("%s: A and the bits must be contiguous", op);
  return DS_OK;
}

static int check_labels(const char *op, ds_tensor *y, int64_t classes) {
  for (int64_t i = 0; i < y->shape[0]; i++) {
    float v = ds_data(y)[i];
    if (!(v >= 0 && v < classes && v == floorf(v)))
      return ds_error("%s: label %g at row %lld is not a class id in 0..%lld", op, v, (long long)i + 1,
                      (long long)classes - 1);
  }
  return DS_OK;
}

/* rows x M centres or means, with M the activations' width */
static int check_rows(const char *op, const char *what, ds_tensor *c, ds_tensor *h, int64_t min_rows) {
  char s1[128], s2[128];
  if (c->ndim != 2 || c->shape[1] != h->shape[1] || c->shape[0] < min_rows || !ds_is_contiguous(c))
    return ds_error("%s: %s %s do not fit activations %s (want a contiguous K x %lld with K >= %lld)", op, what,
                    ds_shape_str(c, s1, sizeof s1), ds_shape_str(h, s2, sizeof s2), (long long)h->shape[1],
                    (long long)min_rows);
  return DS_OK;
}

/* ---- row kernels ---- */

static double sqdist(const float *a, const float *b, int64_t m) {
  double d = 0;
#pragma omp simd reduction(+ : d)
  for (int64_t k = 0; k < m; k++) d += (double)(a[k] - b[k]) * (double)(a[k] - b[k]);
  return d;
}

static double dot(const float *a, const float *b, int64_t m) {
  double d = 0;
#pragma omp simd reduction(+ : d)
  for (int64_t k = 0; k < m; k++) d += (double)a[k] * (double)b[k];
  return d;
}

/* The pull of one row: returns ||hi - ci||^2, sets gi = g (hi - ci) and adds -g (hi - ci)
 * into gci. A row's sum runs in float lanes (the callers sum the rows in double). */
static double pull_row(const float *restrict hi, const float *restrict ci, int64_t m, float g, float *restrict gi,
                       float *restrict gci) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t k = 0; k < m; k++) {
    float e = hi[k] - ci[k];
    acc += e * e;
    gi[k] = g * e;
    gci[k] -= g * e;
  }
  return acc;
}

/* k x k squared distances between the rows of c; NULL when out of memory */
static double *row_dists(const float *c, int64_t k, int64_t m) {
  double *d = malloc(sizeof *d * (size_t)(k * k + 1));
  if (!d) return NULL;
  for (int64_t u = 0; u < k; u++) {
    d[u * k + u] = 0;
    for (int64_t v = u + 1; v < k; v++) d[u * k + v] = d[v * k + u] = sqdist(c + u * m, c + v * m, m);
  }
  return d;
}

/* One row of the projection loss: z = mu_row A (N logits); returns the summed BCE of the
 * bits b_row against sigmoid(z) and adds g (sigmoid(z) - b) A^T into grow. -1: out of
 * memory. */
static int projection_row(const float *mu, const float *a, const float *b, int64_t m, int64_t n, float g,
                          float *grow, double *value) {
  float zbuf[256], *z = n <= 256 ? zbuf : malloc(sizeof(float) * (size_t)n);
  if (!z) return -1;
  ds_gemm(0, 0, 1, n, m, 1.0f, mu, m, a, n, 0.0f, z, n);
  double acc = 0;
  for (int64_t j = 0; j < n; j++) { /* BCE from the logit: softplus(z) - b z */
    double v = z[j];
    acc += (v > 0 ? v + log1p(exp(-v)) : log1p(exp(v))) - b[j] * v;
    float sg = z[j] >= 0 ? 1.0f / (1.0f + expf(-z[j])) : expf(z[j]) / (1.0f + expf(z[j]));
    z[j] = g * (sg - b[j]);
  }
  ds_gemm(0, 1, 1, m, n, 1.0f, z, n, a, n, 1.0f, grow, m);
  if (z != zbuf) free(z);
  *value = acc;
  return 0;
}

/* ---- reference variant ---- */

/* nearest other row of every row of c (ties: the lowest index) */
static void nearest_others(const double *dists, int64_t k, int64_t *near) {
  for (int64_t u = 0; u < k; u++) {
    double best = INFINITY;
    for (int64_t v = 0; v < k; v++)
      if (v != u && dists[u * k + v] < best) best = dists[u * k + v], near[u] = v;
  }
}

/* The separation term: it depends only on each sample's centre, so every centre's pair
 * is evaluated once, weighted by its count in the batch. Adds g times its gradient into
 * gc. -1: out of memory. */
static int separation(const float *c, ds_tensor *y, int64_t k, int64_t m, float g, float *gc, double *value) {
  int64_t *counts = calloc((size_t)(2 * k), sizeof(int64_t));
  double *dists = counts ? row_dists(c, k, m) : NULL;
  if (!dists) {
    free(counts);
    return -1;
  }
  int64_t *near = counts + k, b = y->shape[0];
  nearest_others(dists, k, near);
  for (int64_t i = 0; i < b; i++) counts[(int64_t)ds_data(y)[i]]++;
  double acc = 0;
  for (int64_t u = 0; u < k; u++) {
    if (!counts[u]) continue;
    int64_t v = near[u];
    const float *restrict cu = c + u * m, *restrict cv = c + v * m;
    double s = dot(cu, cv, m), d = dists[u * k + v];
    acc += (double)counts[u] * (s - 1) * d;
    /* d/dc_u = c_v d + 2 (s - 1) (c_u - c_v); d/dc_v = c_u d - 2 (s - 1) (c_u - c_v) */
    float scale = (float)counts[u] * g / (float)b, fd = (float)d * scale, fs = (float)(2 * (s - 1)) * scale;
    float *restrict gu = gc + u * m, *restrict gv = gc + v * m;
#pragma omp simd
    for (int64_t j = 0; j < m; j++) {
      float diff = cu[j] - cv[j];
      gu[j] += cv[j] * fd + fs * diff;
      gv[j] += cu[j] * fd - fs * diff;
    }
  }
  free(dists);
  free(counts);
  *value = b ? acc / (double)b : 0.0;
  return 0;
}

/* sum_k |1 - ||c_k||^2|; adds g times its gradient into gc */
static double unit_norm(const float *c, int64_t k, int64_t m, float g, float *gc) {
  double acc = 0;
  for (int64_t u = 0; u < k; u++) {
    const float *cu = c + u * m;
    double n2 = dot(cu, cu, m);
    acc += fabs(1 - n2);
    float f = 2 * g * (n2 > 1 ? 1.0f : (n2 < 1 ? -1.0f : 0.0f));
#pragma omp simd
    for (int64_t j = 0; j < m; j++) gc[u * m + j] += f * cu[j];
  }
  return acc;
}

static int check_reference(ds_tensor *h, ds_tensor *y, ds_tensor *c, ds_tensor *a, ds_tensor *b,
                           const int64_t *targets, int64_t s) {
  const char *op = "wm_reference_loss";
  if (check_inputs(op, h, y, a, b) || check_rows(op, "centres", c, h, 2)) return DS_EFAIL;
  if (b->shape[0] != s) return ds_error("%s: %lld bit rows for %lld targets", op, (long long)b->shape[0], (long long)s);
  for (int64_t k = 0; k < s; k++)
    if (targets[k] < 0 || targets[k] >= c->shape[0])
      return ds_error("%s: target class %lld has no centre row (0..%lld)", op, (long long)targets[k],
                      (long long)c->shape[0] - 1);
  return check_labels(op, y, c->shape[0]);
}

static int target_in_batch(ds_tensor *y, int64_t t) {
  for (int64_t i = 0; i < y->shape[0]; i++)
    if ((int64_t)ds_data(y)[i] == t) return 1;
  return 0;
}

int ds_wm_reference_loss(ds_tensor *h, ds_tensor *y, ds_tensor *c, ds_tensor *a, ds_tensor *b,
                         const int64_t *targets, int64_t s, float l1, float l2, float *value, ds_tensor **gh,
                         ds_tensor **gc) {
  if (check_reference(h, y, c, a, b, targets, s)) return DS_EFAIL;
  int64_t rows = h->shape[0], m = h->shape[1], k = c->shape[0], n = a->shape[1];
  ds_tensor *rh = ds_tensor_empty(2, h->shape), *rc = ds_tensor_new(2, c->shape);
  if (!rh || !rc) {
    ds_release(rh), ds_release(rc);
    return DS_EFAIL;
  }
  const float *pc = ds_data(c);
  float *gcp = ds_data(rc);
  double pull = 0, sep = 0, proj = 0;
  for (int64_t i = 0; i < rows; i++) {
    int64_t r = (int64_t)ds_data(y)[i];
    pull += pull_row(ds_data(h) + i * m, pc + r * m, m, l1, ds_data(rh) + i * m, gcp + r * m);
  }
  int fail = separation(pc, y, k, m, l1, gcp, &sep);
  double norm = unit_norm(pc, k, m, l1, gcp);
  for (int64_t t = 0; t < s && !fail; t++) {
    if (!target_in_batch(y, targets[t])) continue; /* no sample of it: no term (the demo's NaN) */
    double v;
    fail = projection_row(pc + targets[t] * m, ds_data(a), ds_data(b) + t * n, m, n, l2, gcp + targets[t] * m, &v);
    proj += v;
  }
  if (fail) {
    ds_release(rh), ds_release(rc);
    return ds_error("wm_reference_loss: out of memory");
  }
  *value = (float)(l1 * (0.5 * pull + sep + norm) + l2 * proj);
  *gh = rh, *gc = rc;
  return DS_OK;
}

/* ---- paper variant ---- */

/* The push's distances of every row to every mean, d[i * C + r] = ||h_i - mu_r||^2, from
 * one GEMM (||h||^2 + ||mu||^2 - 2 h . mu, clamped at 0); NULL when out of memory. */
static double *row_mean_dists(ds_tensor *h, ds_tensor *mu) {
  int64_t rows = h->shape[0], m = h->shape[1], k = mu->shape[0];
  double *d = malloc(sizeof(double) * (size_t)(rows * k + k)), *mm = d ? d + rows * k : NULL;
  float *g = malloc(sizeof(float) * (size_t)(rows * k + 1));
  if (!d || !g) {
    free(d), free(g);
    return NULL;
  }
  ds_gemm(0, 1, rows, k, m, 1.0f, ds_data(h), m, ds_data(mu), m, 0.0f, g, k);
  for (int64_t r = 0; r < k; r++) mm[r] = dot(ds_data(mu) + r * m, ds_data(mu) + r * m, m);
  for (int64_t i = 0; i < rows; i++) {
    double hh = dot(ds_data(h) + i * m, ds_data(h) + i * m, m);
    for (int64_t r = 0; r < k; r++) {
      double v = hh + mm[r] - 2.0 * g[i * k + r];
      d[i * k + r] = v > 0 ? v : 0;
    }
  }
  free(g);
  return d;
}

/* The projection of each target class's mean over the batch's rows of it, m_k: the sum
 * over the targets present and bits j of BCE(b_kj, sigmoid(m_k . A_:j)), whose gradient
 * each mean spreads evenly over its rows of gh. -1: out of memory. */
static int batch_mean_projection(ds_tensor *h, ds_tensor *y, ds_tensor *a, ds_tensor *b, const int64_t *targets,
                                 int64_t s, float l2, float *gh, double *value) {
  int64_t rows = h->shape[0], m = h->shape[1], n = a->shape[1];
  float *mean = calloc((size_t)(2 * m), sizeof(float)), *gmean = mean ? mean + m : NULL;
  if (!mean) return -1;
  double acc = 0;
  int fail = 0;
  for (int64_t t = 0; t < s && !fail; t++) {
    int64_t count = 0;
    memset(mean, 0, sizeof(float) * (size_t)(2 * m));
    for (int64_t i = 0; i < rows; i++) {
      if ((int64_t)ds_data(y)[i] != targets[t]) continue;
      count++;
      const float *restrict hi = ds_data(h) + i * m;
#pragma omp simd
      for (int64_t j = 0; j < m; j++) mean[j] += hi[j];
    }
    if (!count) continue; /* no sample of it in this batch: no term */
    for (int64_t j = 0; j < m; j++) mean[j] /= (float)count;
    double v;
    fail = projection_row(mean, ds_data(a), ds_data(b) + t * n, m, n, l2, gmean, &v);
    acc += v;
    float inv = 1.0f / (float)count;
    for (int64_t i = 0; i < rows && !fail; i++) {
      if ((int64_t)ds_data(y)[i] != targets[t]) continue;
      float *restrict gi = gh + i * m;
#pragma omp simd
      for (int64_t j = 0; j < m; j++) gi[j] += inv * gmean[j];
    }
  }
  free(mean);
  *value = acc;
  return fail ? -1 : 0;
}

static int check_paper(ds_tensor *h, ds_tensor *y, ds_tensor *mu, ds_tensor *a, ds_tensor *b,
                       const int64_t *targets, int64_t s) {
  const char *op = "wm_paper_loss";
  if (check_inputs(op, h, y, a, b) || check_rows(op, "class means", mu, h, 2)) return DS_EFAIL;
  if (b->shape[0] != s) return ds_error("%s: %lld bit rows for %lld targets", op, (long long)b->shape[0], (long long)s);
  for (int64_t k = 0; k < s; k++)
    if (targets[k] < 0 || targets[k] >= mu->shape[0])
      return ds_error("%s: target class %lld has no mean row (0..%lld)", op, (long long)targets[k],
                      (long long)mu->shape[0] - 1);
  return check_labels(op, y, mu->shape[0]);
}

int ds_wm_paper_loss(ds_tensor *h, ds_tensor *y, ds_tensor *mu, ds_tensor *a, ds_tensor *b,
                     const int64_t *targets, int64_t s, float l1, float l2, float *value, ds_tensor **gh,
                     ds_tensor **gmu) {
  if (check_paper(h, y, mu, a, b, targets, s)) return DS_EFAIL;
  int64_t rows = h->shape[0], m = h->shape[1], k = mu->shape[0];
  float alpha = 2 * l1 / (float)rows; /* d/dh of (l1 / B) ||h - mu||^2 is alpha (h - mu) */
  ds_tensor *rh = ds_tensor_empty(2, h->shape), *rmu = ds_tensor_new(2, mu->shape);
  double *dist = rh && rmu ? row_mean_dists(h, mu) : NULL, *caps = dist ? row_dists(ds_data(mu), k, m) : NULL;
  float *coef = caps ? malloc(sizeof(float) * (size_t)(rows * k)) : NULL, *kept = coef ? malloc(sizeof(float) * (size_t)(rows + 1)) : NULL;
  if (!kept) {
    ds_release(rh), ds_release(rmu), free(dist), free(caps), free(coef);
    return ds_error("wm_paper_loss: out of memory");
  }
  /* per row: the pull, the capped push, and the coefficients of the means in d/dh:
   * (h_i - mu_y) - sum over uncapped r of (h_i - mu_r) = kept_i h_i + sum_r coef_ir mu_r */
  double pull = 0, push = 0;
  for (int64_t i = 0; i < rows; i++) {
    int64_t own = (int64_t)ds_data(y)[i];
    float *ci = coef + i * k;
    int64_t uncapped = 0;
    for (int64_t r = 0; r < k; r++) {
      ci[r] = 0.0f;
      if (r == own) continue;
      double d = dist[i * k + r], cap = caps[own * k + r];
      push += d < cap ? d : cap;
      if (d < cap) ci[r] = 1.0f, uncapped++;
    }
    ci[own] = -1.0f;
    kept[i] = (float)(1 - uncapped);
  }
  /* gh = alpha (kept_i h_i + coef mu); the pull's part of gmu: -alpha (h_i - mu_{y_i}) */
  float *ph = ds_data(rh), *pg = ds_data(rmu);
  ds_gemm(0, 0, rows, m, k, alpha, coef, k, ds_data(mu), m, 0.0f, ph, m);
  for (int64_t i = 0; i < rows; i++) {
    int64_t own = (int64_t)ds_data(y)[i];
    const float *restrict hi = ds_data(h) + i * m, *restrict mo = ds_data(mu) + own * m;
    float *restrict gi = ph + i * m, *restrict go = pg + own * m;
    float f = alpha * kept[i], row = 0.0f;
#pragma omp simd reduction(+ : row)
    for (int64_t j = 0; j < m; j++) {
      float e = hi[j] - mo[j];
      row += e * e;
      gi[j] += f * hi[j];
      go[j] -= alpha * e;
    }
    pull += row;
  }
  double proj = 0;
  int fail = batch_mean_projection(h, y, a, b, targets, s, l2, ph, &proj);
  free(dist), free(caps), free(coef), free(kept);
  if (fail) {
    ds_release(rh), ds_release(rmu);
    return ds_error("wm_paper_loss: out of memory");
  }
  *value = (float)(l1 * (pull - push) / (double)rows + l2 * proj);
  *gh = rh, *gmu = rmu;
  return DS_OK;
}
