/* Reference implementations of the white-box loss terms (see watermark_terms.h):
 * written for reading, not speed. */
#include "watermark_terms.h"
#include <math.h>
#include <stdlib.h>
#include "error.h"

static double at(ds_tensor *t, int64_t i, int64_t j) { return ds_data(t)[i * t->shape[1] + j]; }

static int check_2d(const char *op, ds_tensor *t, const char *what) {
  char s[128];
  if (t->ndim != 2 || !ds_is_contiguous(t))
    return ds_error("%s: %s must be a contiguous matrix, got %s", op, what, ds_shape_str(t, s, sizeof s));
  return DS_OK;
}

static int check_hyc(const char *op, ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *map,
                     int64_t classes) {
  char s1[128], s2[128], s3[128];
  if (check_2d(op, h, "activations") || check_2d(op, c, "centres")) return DS_EFAIL;
  if (y->ndim != 1 || !ds_is_contiguous(y) || y->shape[0] != h->shape[0] || c->shape[1] != h->shape[1])
    return ds_error("%s: size mismatch, activations: %s, labels: %s, centres: %s", op, ds_shape_str(h, s1, sizeof s1),
                    ds_shape_str(y, s2, sizeof s2), ds_shape_str(c, s3, sizeof s3));
  if (!map && classes > c->shape[0])
    return ds_error("%s: %lld classes but %lld centre rows (pass a class map)", op, (long long)classes,
                    (long long)c->shape[0]);
  for (int64_t k = 0; map && k < classes; k++)
    if (map[k] >= c->shape[0]) return ds_error("%s: class %lld maps to a missing centre row", op, (long long)k);
  for (int64_t i = 0; i < y->shape[0]; i++) {
    float v = ds_data(y)[i];
    if (!(v >= 0 && v < classes && v == floorf(v)))
      return ds_error("%s: label %g at row %lld is not a class id in 0..%lld", op, v, (long long)i + 1,
                      (long long)classes - 1);
  }
  return DS_OK;
}

static int64_t row_of(const int64_t *map, ds_tensor *y, int64_t i) {
  int64_t cls = (int64_t)ds_data(y)[i];
  return map ? map[cls] : cls;
}

static double sqdist(ds_tensor *a, int64_t i, ds_tensor *b, int64_t j) {
  double d = 0;
  for (int64_t k = 0; k < a->shape[1]; k++) d += (at(a, i, k) - at(b, j, k)) * (at(a, i, k) - at(b, j, k));
  return d;
}

int ds_wm_term_pull(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *map, int64_t classes, double *value,
                    ds_tensor **gh, ds_tensor **gc) {
  if (check_hyc("wm_pull", h, y, c, map, classes)) return DS_EFAIL;
  ds_tensor *rh = ds_tensor_new(2, h->shape), *rc = ds_tensor_new(2, c->shape);
  if (!rh || !rc) return ds_release(rh), ds_release(rc), DS_EFAIL;
  int64_t m = h->shape[1];
  double v = 0;
  for (int64_t i = 0; i < h->shape[0]; i++) {
    int64_t r = row_of(map, y, i);
    if (r < 0) continue;
    v += 0.5 * sqdist(h, i, c, r);
    for (int64_t k = 0; k < m; k++) {
      double e = at(h, i, k) - at(c, r, k);
      ds_data(rh)[i * m + k] = (float)e;
      ds_data(rc)[r * m + k] -= (float)e;
    }
  }
  *value = v, *gh = rh, *gc = rc;
  return DS_OK;
}

int ds_wm_term_push(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *map, int64_t classes, double *value,
                    ds_tensor **gh) {
  if (check_hyc("wm_push", h, y, c, map, classes)) return DS_EFAIL;
  ds_tensor *rh = ds_tensor_new(2, h->shape);
  if (!rh) return DS_EFAIL;
  int64_t m = h->shape[1];
  double v = 0;
  for (int64_t i = 0; i < h->shape[0]; i++) {
    int64_t own = row_of(map, y, i);
    if (own < 0) continue;
    for (int64_t r = 0; r < c->shape[0]; r++) {
      if (r == own) continue;
      double d = sqdist(h, i, c, r), cap = sqdist(c, own, c, r);
      v += d < cap ? d : cap;
      if (d >= cap) continue;
      for (int64_t k = 0; k < m; k++) ds_data(rh)[i * m + k] += (float)(2 * (at(h, i, k) - at(c, r, k)));
    }
  }
  *value = v, *gh = rh;
  return DS_OK;
}

int ds_wm_term_separation(ds_tensor *c, ds_tensor *y, double *value, ds_tensor **gc) {
  char s[128];
  if (check_2d("wm_separation", c, "centres")) return DS_EFAIL;
  if (c->shape[0] < 2 || y->ndim != 1 || !ds_is_contiguous(y))
    return ds_error("wm_separation: want at least 2 centres and a vector of labels, got centres %s",
                    ds_shape_str(c, s, sizeof s));
  int64_t k = c->shape[0], m = c->shape[1], b = y->shape[0];
  for (int64_t i = 0; i < b; i++) {
    float v = ds_data(y)[i];
    if (!(v >= 0 && v < k)) return ds_error("wm_separation: label %g at row %lld has no centre", v, (long long)i + 1);
  }
  ds_tensor *rc = ds_tensor_new(2, c->shape);
  if (!rc) return DS_EFAIL;
  double v = 0;
  for (int64_t i = 0; i < b; i++) {
    int64_t u = (int64_t)ds_data(y)[i], near = -1;
    double best = INFINITY;
    for (int64_t o = 0; o < k; o++)
      if (o != u && sqdist(c, u, c, o) < best) best = sqdist(c, u, c, o), near = o;
    double s2 = 0;
    for (int64_t j = 0; j < m; j++) s2 += at(c, u, j) * at(c, near, j);
    v += (s2 - 1) * best / (double)b;
    for (int64_t j = 0; j < m; j++) {
      double diff = at(c, u, j) - at(c, near, j);
      ds_data(rc)[u * m + j] += (float)((at(c, near, j) * best + 2 * (s2 - 1) * diff) / (double)b);
      ds_data(rc)[near * m + j] += (float)((at(c, u, j) * best - 2 * (s2 - 1) * diff) / (double)b);
    }
  }
  *value = v, *gc = rc;
  return DS_OK;
}

int ds_wm_term_unit_norm(ds_tensor *c, double *value, ds_tensor **gc) {
  if (check_2d("wm_unit_norm", c, "centres")) return DS_EFAIL;
  ds_tensor *rc = ds_tensor_new(2, c->shape);
  if (!rc) return DS_EFAIL;
  int64_t m = c->shape[1];
  double v = 0;
  for (int64_t u = 0; u < c->shape[0]; u++) {
    double n2 = 0;
    for (int64_t j = 0; j < m; j++) n2 += at(c, u, j) * at(c, u, j);
    v += fabs(1 - n2);
    double sign = n2 > 1 ? 1 : (n2 < 1 ? -1 : 0);
    for (int64_t j = 0; j < m; j++) ds_data(rc)[u * m + j] = (float)(2 * sign * at(c, u, j));
  }
  *value = v, *gc = rc;
  return DS_OK;
}

int ds_wm_term_projection(ds_tensor *mu, ds_tensor *a, ds_tensor *b, double *value, ds_tensor **gm) {
  char s1[128], s2[128], s3[128];
  if (check_2d("wm_projection", mu, "means") || check_2d("wm_projection", a, "A") || check_2d("wm_projection", b, "bits"))
    return DS_EFAIL;
  if (mu->shape[1] != a->shape[0] || b->shape[0] != mu->shape[0] || b->shape[1] != a->shape[1])
    return ds_error("wm_projection: size mismatch, means: %s, A: %s, bits: %s (want s x M, M x N, s x N)",
                    ds_shape_str(mu, s1, sizeof s1), ds_shape_str(a, s2, sizeof s2), ds_shape_str(b, s3, sizeof s3));
  ds_tensor *rm = ds_tensor_new(2, mu->shape);
  if (!rm) return DS_EFAIL;
  int64_t m = mu->shape[1], n = a->shape[1];
  double v = 0;
  for (int64_t k = 0; k < mu->shape[0]; k++)
    for (int64_t j = 0; j < n; j++) {
      double z = 0;
      for (int64_t i = 0; i < m; i++) z += at(mu, k, i) * at(a, i, j);
      double p = 1 / (1 + exp(-z)), t = at(b, k, j);
      v += -(t * log(p) + (1 - t) * log1p(-p));
      for (int64_t i = 0; i < m; i++) ds_data(rm)[k * m + i] += (float)((p - t) * at(a, i, j));
    }
  *value = v, *gm = rm;
  return DS_OK;
}
