/* Fused optimiser steps: one pass over each parameter, in place. */
#include "error.h"
#include "ops.h"
#include "parallel.h"
#include <math.h>

static int check(const char *op, ds_tensor *p, ds_tensor *g, ds_tensor *s1, ds_tensor *s2) {
  int64_t n = ds_numel(p);
  ds_tensor *all[4] = {p, g, s1, s2};
  for (int i = 0; i < 4; i++)
    if (all[i] && (!ds_is_contiguous(all[i]) || ds_numel(all[i]) != n)) {
      char a[128], b[128];
      return ds_error("%s: parameter %s and its gradient or state %s differ in size or layout", op,
                      ds_shape_str(p, a, sizeof a), ds_shape_str(all[i], b, sizeof b));
    }
  return DS_OK;
}

int ds_sgd_step(ds_tensor *p, ds_tensor *g, ds_tensor *buf, float lr, float momentum,
                float dampening, int nesterov, float wd, int first) {
  if (check("sgd", p, g, buf, NULL)) return DS_EFAIL;
  float *w = ds_data(p), *b = buf ? ds_data(buf) : NULL, *d = ds_data(g);
  int64_t n = ds_numel(p);
  for (int64_t i = 0; i < n; i++) {
    float gi = d[i] + wd * w[i];
    if (b) {
      b[i] = first ? gi : momentum * b[i] + (1 - dampening) * gi;
      gi = nesterov ? gi + momentum * b[i] : b[i];
    }
    w[i] -= lr * gi;
  }
  return DS_OK;
}

typedef struct adam_params {
  float beta1, beta2, eps, step_size, rbc2, l2, shrink;
  float *w, *m, *v, *g;
} adam_params;

static void adam_range(void *ctx, int64_t lo, int64_t hi) {
  const adam_params *a = ctx;
  float *restrict w = a->w, *restrict pm = a->m, *restrict pv = a->v;
  const float *restrict d = a->g;
  const float beta1 = a->beta1, beta2 = a->beta2, eps = a->eps, step_size = a->step_size, rbc2 = a->rbc2,
              l2 = a->l2, shrink = a->shrink;
#pragma omp simd
  for (int64_t i = lo; i < hi; i++) {
    float gi = d[i] + l2 * w[i];
    float mi = beta1 * pm[i] + (1 - beta1) * gi;
    float vi = beta2 * pv[i] + (1 - beta2) * gi * gi;
    pm[i] = mi;
    pv[i] = vi;
    w[i] = w[i] * shrink - step_size * mi / (sqrtf(vi) * rbc2 + eps);
  }
}

int ds_adam_step(ds_tensor *p, ds_tensor *g, ds_tensor *m, ds_tensor *v, float lr, float beta1,
                 float beta2, float eps, float wd, int decoupled, int64_t step) {
  if (check("adam", p, g, m, v)) return DS_EFAIL;
  adam_params a = {.w = ds_data(p), .m = ds_data(m), .v = ds_data(v), .g = ds_data(g)};
  float bc1 = 1.0f - powf(beta1, (float)step), bc2 = 1.0f - powf(beta2, (float)step);
  a.beta1 = beta1, a.beta2 = beta2, a.eps = eps;
  a.step_size = lr / bc1, a.rbc2 = 1.0f / sqrtf(bc2);
  a.l2 = decoupled ? 0.0f : wd, a.shrink = decoupled ? 1.0f - lr * wd : 1.0f;
  ds_parallel_ranges(ds_numel(p), 1 << 16, adam_range, &a);
  return DS_OK;
}

/* Keras/PyTorch RMSprop: sq = rho sq + (1-rho) g^2; w -= lr g / (sqrt(sq) + eps) */
int ds_rmsprop_step(ds_tensor *p, ds_tensor *g, ds_tensor *sq, float lr, float rho, float eps, float wd) {
  if (check("rmsprop", p, g, sq, NULL)) return DS_EFAIL;
  float *w = ds_data(p), *s = ds_data(sq), *d = ds_data(g);
  int64_t n = ds_numel(p);
  for (int64_t i = 0; i < n; i++) {
    float gi = d[i] + wd * w[i];
    s[i] = rho * s[i] + (1 - rho) * gi * gi;
    w[i] -= lr * gi / (sqrtf(s[i]) + eps);
  }
  return DS_OK;
}
