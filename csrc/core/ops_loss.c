/* Softmax, log-softmax and the losses, each beside its gradient. */
#include "error.h"
#include "ops.h"
#include <math.h>

static int rows_of(const ds_tensor *x, int64_t *rows, int64_t *cols) {
  if (x->ndim < 1) return 0;
  *cols = x->shape[x->ndim - 1];
  *rows = *cols ? ds_numel(x) / *cols : 0;
  return 1;
}

static void softmax_row(const float *x, float *y, int64_t c, int want_log) {
  float m = x[0];
  for (int64_t j = 1; j < c; j++) m = x[j] > m ? x[j] : m;
  double s = 0;
  for (int64_t j = 0; j < c; j++) s += exp((double)(x[j] - m));
  float ls = (float)log(s);
  for (int64_t j = 0; j < c; j++) y[j] = want_log ? x[j] - m - ls : expf(x[j] - m - ls);
}

ds_tensor *ds_softmax(ds_tensor *x, int log) {
  int64_t rows, cols;
  if (!rows_of(x, &rows, &cols)) {
    ds_error("%s: input must have at least one dimension", log ? "log_softmax" : "softmax");
    return NULL;
  }
  ds_tensor *cx = ds_contiguous(x), *y = cx ? ds_tensor_like(x) : NULL;
  if (y)
    for (int64_t i = 0; i < rows && cols; i++)
      softmax_row(ds_data(cx) + i * cols, ds_data(y) + i * cols, cols, log);
  ds_release(cx);
  return y;
}

/* softmax: gx = y * (g - sum(g*y)); log_softmax: gx = g - exp(y) * sum(g) */
ds_tensor *ds_softmax_backward(ds_tensor *y, ds_tensor *gy, int log) {
  int64_t rows, cols;
  if (!rows_of(y, &rows, &cols) || !ds_same_shape(y, gy)) {
    ds_error("softmax backward: gradient shape does not match the output");
    return NULL;
  }
  ds_tensor *cy = ds_contiguous(y), *cg = ds_contiguous(gy), *gx = ds_tensor_like(y);
  if (cy && cg && gx)
    for (int64_t i = 0; i < rows; i++) {
      const float *o = ds_data(cy) + i * cols, *g = ds_data(cg) + i * cols;
      float *r = ds_data(gx) + i * cols;
      double s = 0;
      for (int64_t j = 0; j < cols; j++) s += log ? g[j] : (double)g[j] * o[j];
      for (int64_t j = 0; j < cols; j++)
        r[j] = log ? g[j] - expf(o[j]) * (float)s : o[j] * (g[j] - (float)s);
    }
  else {
    ds_release(gx);
    gx = NULL;
  }
  ds_release(cy), ds_release(cg);
  return gx;
}

/* Target probability q_ij for hard (class id) or soft targets, with smoothing. */
static int check_ce(ds_tensor *logits, ds_tensor *target) {
  char s1[128], s2[128];
  int hard = target->ndim == 1;
  if (logits->ndim != 2 || (hard && target->shape[0] != logits->shape[0]) ||
      (!hard && !ds_same_shape(logits, target)))
    return ds_error("cross_entropy: size mismatch, logits: %s, target: %s (want B x C logits and "
                    "B class ids or B x C probabilities)",
                    ds_shape_str(logits, s1, sizeof s1), ds_shape_str(target, s2, sizeof s2));
  if (hard) {
    ds_tensor *ct = ds_contiguous(target);
    if (!ct) return DS_EFAIL;
    const float *t = ds_data(ct);
    int64_t c = logits->shape[1];
    for (int64_t i = 0; i < target->shape[0]; i++)
      if (!(t[i] >= 0 && t[i] < c && t[i] == floorf(t[i]))) {
        ds_release(ct);
        return ds_error("cross_entropy: label %g at row %lld is not a class id in 0..%lld", t[i],
                        (long long)i + 1, (long long)c - 1);
      }
    ds_release(ct);
  }
  return DS_OK;
}

static inline float target_prob(const float *t, int hard, int64_t i, int64_t j, int64_t c, float eps) {
  float q = hard ? (float)((int64_t)t[i] == j) : t[i * c + j];
  return eps > 0 ? (1 - eps) * q + eps / (float)c : q;
}

ds_tensor *ds_cross_entropy(ds_tensor *logits, ds_tensor *target, float eps, ds_tensor **probs) {
  if (check_ce(logits, target)) return NULL;
  int64_t b = logits->shape[0], c = logits->shape[1];
  int hard = target->ndim == 1;
  ds_tensor *logp = ds_softmax(logits, 1), *ct = ds_contiguous(target);
  if (!logp || !ct) {
    ds_release(logp), ds_release(ct);
    return NULL;
  }
  const float *lp = ds_data(logp), *t = ds_data(ct);
  double loss = 0;
  for (int64_t i = 0; i < b; i++)
    for (int64_t j = 0; j < c; j++) {
      float q = target_prob(t, hard, i, j, c, eps);
      if (q != 0) loss -= (double)q * lp[i * c + j];
    }
  float *p = ds_data(logp);
  for (int64_t k = 0; k < b * c; k++) p[k] = expf(p[k]); /* keep probabilities for backward */
  ds_release(ct);
  *probs = logp;
  return ds_scalar_tensor(b ? (float)(loss / (double)b) : 0.0f);
}

ds_tensor *ds_cross_entropy_backward(ds_tensor *probs, ds_tensor *target, float eps, float g) {
  if (check_ce(probs, target)) return NULL;
  int64_t b = probs->shape[0], c = probs->shape[1];
  int hard = target->ndim == 1;
  ds_tensor *ct = ds_contiguous(target), *gx = ds_tensor_like(probs);
  if (!ct || !gx) {
    ds_release(ct), ds_release(gx);
    return NULL;
  }
  const float *p = ds_data(probs), *t = ds_data(ct);
  float *r = ds_data(gx), scale = b ? g / (float)b : 0.0f;
  for (int64_t i = 0; i < b; i++)
    for (int64_t j = 0; j < c; j++) r[i * c + j] = (p[i * c + j] - target_prob(t, hard, i, j, c, eps)) * scale;
  ds_release(ct);
  return gx;
}

#define BCE_LO 1e-7f
#define BCE_HI (1.0f - 1e-7f)

static int check_bce(ds_tensor *p, ds_tensor *t) {
  char s1[128], s2[128];
  if (!ds_same_shape(p, t))
    return ds_error("bce: size mismatch, p: %s, target: %s", ds_shape_str(p, s1, sizeof s1),
                    ds_shape_str(t, s2, sizeof s2));
  return DS_OK;
}

ds_tensor *ds_bce(ds_tensor *p, ds_tensor *t) {
  if (check_bce(p, t)) return NULL;
  ds_tensor *cp = ds_contiguous(p), *ct = ds_contiguous(t);
  if (!cp || !ct) {
    ds_release(cp), ds_release(ct);
    return NULL;
  }
  int64_t n = ds_numel(p);
  double loss = 0;
  for (int64_t i = 0; i < n; i++) {
    float q = ds_data(cp)[i], y = ds_data(ct)[i];
    q = q < BCE_LO ? BCE_LO : q > BCE_HI ? BCE_HI : q;
    loss -= y * log((double)q) + (1 - y) * log(1.0 - q);
  }
  ds_release(cp), ds_release(ct);
  return ds_scalar_tensor(n ? (float)(loss / (double)n) : 0.0f);
}

/* clamped inputs get no gradient, as with an explicit clamp */
ds_tensor *ds_bce_backward(ds_tensor *p, ds_tensor *t, float g) {
  if (check_bce(p, t)) return NULL;
  ds_tensor *cp = ds_contiguous(p), *ct = ds_contiguous(t), *gx = ds_tensor_like(p);
  if (!cp || !ct || !gx) {
    ds_release(cp), ds_release(ct), ds_release(gx);
    return NULL;
  }
  int64_t n = ds_numel(p);
  for (int64_t i = 0; i < n; i++) {
    float q = ds_data(cp)[i], y = ds_data(ct)[i];
    ds_data(gx)[i] = (q < BCE_LO || q > BCE_HI) ? 0.0f : g / (float)n * (q - y) / (q * (1 - q));
  }
  ds_release(cp), ds_release(ct);
  return gx;
}
