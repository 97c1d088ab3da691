/* White-box watermark losses (DeepSigns), forward and backward side by side. */
#include "ops_watermark.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "blas.h"
#include "error.h"
#include "parallel.h"
#include "simd.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static int check_hyc(const char *op, ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *row_of_class,
                     int64_t classes) {
  char s1[128], s2[128], s3[128];
  if (h->ndim != 2 || y->ndim != 1 || y->shape[0] != h->shape[0] || c->ndim != 2 || c->shape[1] != h->shape[1] ||
      !ds_is_contiguous(h) || !ds_is_contiguous(y) || !ds_is_contiguous(c))
    return ds_error("%s: size mismatch, activations: %s, labels: %s, centres: %s (want B x M, B, K x M)", op,
                    ds_shape_str(h, s1, sizeof s1), ds_shape_str(y, s2, sizeof s2), ds_shape_str(c, s3, sizeof s3));
  for (int64_t i = 0; i < y->shape[0]; i++) {
    float v = ds_data(y)[i];
    if (!(v >= 0 && v < classes)) return ds_error("%s: label %g at row %lld is not a class id in 0..%lld", op, v,
                                                  (long long)i + 1, (long long)classes - 1);
  }
  if (row_of_class) {
    for (int64_t k = 0; k < classes; k++)
      if (row_of_class[k] >= c->shape[0]) return ds_error("%s: class %lld maps to a missing centre row", op, (long long)k);
  } else if (classes > c->shape[0]) /* without a map a class id is a centre row */
    return ds_error("%s: %lld classes but %lld centre rows (pass a class map)", op, (long long)classes,
                    (long long)c->shape[0]);
  return DS_OK;
}

int ds_wm_pull_check(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *map, int64_t classes) {
  return check_hyc("wm_pull", h, y, c, map, classes);
}

static int64_t row_of(const int64_t *map, float label) { return map ? map[(int64_t)label] : (int64_t)label; }

/* Row kernels, accumulated in double (the losses are gradient-checked in float32
 * by finite differences) but vectorised: the simd reduction allows reassociation. */
static double sqdist(const float *a, const float *b, int64_t m) {
  double d = 0;
#pragma omp simd reduction(+ : d)
  for (int64_t k = 0; k < m; k++) d += (double)(a[k] - b[k]) * (double)(a[k] - b[k]);
  return d;
}

/* the same in float lanes (8 wide, half the work), where only an ordering is needed
 * (nearest_others compares every pair of centres each step); four vector sums, as one
 * is a chain of dependent adds (nearest_others: 2.7 -> 1.4 us) */
static double sqdist_f(const float *a, const float *b, int64_t m) {
  v8 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
  int64_t k = 0;
  for (; k + 32 <= m; k += 32) {
    const v8 *av = (const v8 *)(a + k), *bv = (const v8 *)(b + k);
    v8 e0 = av[0] - bv[0], e1 = av[1] - bv[1], e2 = av[2] - bv[2], e3 = av[3] - bv[3];
    s0 += e0 * e0, s1 += e1 * e1, s2 += e2 * e2, s3 += e3 * e3;
  }
  float d = v8_sum((s0 + s1) + (s2 + s3));
  for (; k < m; k++) d += (a[k] - b[k]) * (a[k] - b[k]);
  return d;
}

static double dot(const float *a, const float *b, int64_t m) {
  double d = 0;
#pragma omp simd reduction(+ : d)
  for (int64_t k = 0; k < m; k++) d += (double)a[k] * (double)b[k];
  return d;
}

/* a . b and ||a - b||^2 (the difference taken in float, as sqdist) of one pair, in
 * double, in two vector sums each */
static void dot_sqdist(const float *a, const float *b, int64_t m, double *dotp, double *sq) {
  v4d d0 = {0}, d1 = {0}, s0 = {0}, s1 = {0};
  int64_t k = 0;
  for (; k + 8 <= m; k += 8) {
    const v4 *av = (const v4 *)(a + k), *bv = (const v4 *)(b + k);
    v4d a0 = __builtin_convertvector(av[0], v4d), a1 = __builtin_convertvector(av[1], v4d);
    v4d b0 = __builtin_convertvector(bv[0], v4d), b1 = __builtin_convertvector(bv[1], v4d);
    v4d e0 = __builtin_convertvector(av[0] - bv[0], v4d), e1 = __builtin_convertvector(av[1] - bv[1], v4d);
    d0 += a0 * b0, d1 += a1 * b1, s0 += e0 * e0, s1 += e1 * e1;
  }
  double d = v4d_sum(d0 + d1), s = v4d_sum(s0 + s1);
  for (; k < m; k++) {
    double e = a[k] - b[k];
    d += (double)a[k] * (double)b[k], s += e * e;
  }
  *dotp = d, *sq = s;
}

/* k x k squared distances between the centre rows */
static double *centre_dists(const float *c, int64_t k, int64_t m) {
  double *d = malloc(sizeof *d * (size_t)(k * k + 1));
  if (!d) return NULL;
  for (int64_t a = 0; a < k; a++) {
    d[a * k + a] = 0;
    for (int64_t o = a + 1; o < k; o++) d[a * k + o] = d[o * k + a] = sqdist(c + a * m, c + o * m, m);
  }
  return d;
}

/* The push of one row hi from every centre but its own (own), each capped at the
 * distance between the two centres (caps, rows x rows): returns the capped sum and, when
 * gi is not NULL, adds 2 g (hi - c_r) into gi for every centre r still under its cap. */
static double capped_push_row(const float *hi, const float *c, int64_t rows, int64_t own, int64_t m,
                              const double *caps, float g, float *gi) {
  double acc = 0;
  for (int64_t r = 0; r < rows; r++) {
    if (r == own) continue;
    const float *restrict cr = c + r * m;
    double d = sqdist(hi, cr, m), cap = caps[own * rows + r];
    acc += d < cap ? d : cap;
    if (!gi || d >= cap) continue; /* capped: no gradient */
#pragma omp simd
    for (int64_t k = 0; k < m; k++) gi[k] += 2 * g * (hi[k] - cr[k]);
  }
  return acc;
}

/* The paper variant's pass over its target rows (rows idx[first[k]..first[k+1]) of h
 * belong to mean row brow[k], np groups): sum ||h_i - mu_own||^2 into *pull and the
 * capped push from the other means into *push; gt (one row per listed row) set to
 * 2 k1 (h_i - mu_own) - 2 k1 sum over uncapped others (h_i - mu_r); 2 k1 (mu_own -
 * h_i) added into gmu; each group's mean of its rows into means (np x M). Inputs are
 * checked by the caller. -1: out of memory. */
int ds_wm_paper_rows(ds_tensor *h, ds_tensor *mu, const int64_t *idx, const int64_t *first, const int64_t *brow,
                     int64_t np, float k1, double *pull, double *push, float *gt, float *gmu, float *means) {
  int64_t m = h->shape[1], s = mu->shape[0];
  const float *pm = ds_data(mu);
  double *caps = s > 1 ? centre_dists(pm, s, m) : NULL;
  if (s > 1 && !caps) return -1;
  double sp = 0, sq = 0;
  for (int64_t k = 0; k < np; k++) {
    int64_t own = brow[k], cnt = first[k + 1] - first[k];
    const float *restrict co = pm + own * m;
    float *restrict go = gmu + own * m, *restrict mk = means + k * m;
    memset(mk, 0, sizeof(float) * (size_t)m);
    for (int64_t i = first[k]; i < first[k + 1]; i++) {
      const float *restrict hi = ds_data(h) + idx[i] * m;
      float *restrict gi = gt + i * m;
      float row = 0.0f; /* a row's sum in float lanes, the batch's in double */
#pragma omp simd reduction(+ : row)
      for (int64_t j = 0; j < m; j++) {
        float e = hi[j] - co[j];
        row += e * e;
        gi[j] = 2 * k1 * e;
        go[j] -= 2 * k1 * e;
        mk[j] += hi[j];
      }
      sp += row;
      if (s > 1) sq += capped_push_row(hi, pm, s, own, m, caps, -k1, gi);
    }
    float inv = 1.0f / (float)cnt;
#pragma omp simd
    for (int64_t j = 0; j < m; j++) mk[j] *= inv;
  }
  free(caps);
  *pull = sp, *push = sq;
  return 0;
}

ds_tensor *ds_wm_pull(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *map, int64_t classes) {
  if (check_hyc("wm_pull", h, y, c, map, classes)) return NULL;
  int64_t b = h->shape[0], m = h->shape[1];
  double acc = 0;
  for (int64_t i = 0; i < b; i++) {
    int64_t r = row_of(map, ds_data(y)[i]);
    if (r < 0) continue;
    acc += sqdist(ds_data(h) + i * m, ds_data(c) + r * m, m);
  }
  return ds_scalar_tensor((float)(0.5 * acc));
}

int ds_wm_pull_backward(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *map, int64_t classes, float g,
                        ds_tensor **gh, ds_tensor **gc) {
  return ds_wm_pull_vg(h, y, c, map, classes, g, NULL, gh, gc);
}

int ds_wm_pull_vg(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *map, int64_t classes, float g,
                  double *value, ds_tensor **gh, ds_tensor **gc) {
  if (check_hyc("wm_pull", h, y, c, map, classes)) return DS_EFAIL;
  double acc = 0;
  int64_t b = h->shape[0], m = h->shape[1];
  /* every row of rh is written below (zeros for samples without a centre); with gh
   * NULL only the value and the centres' gradient are made (ds_wm_pull_add adds the
   * activations' gradient later, straight into their accumulated gradient) */
  ds_tensor *rh = gh ? ds_tensor_empty(2, h->shape) : NULL, *rc = ds_tensor_new(2, c->shape);
  if ((gh && !rh) || !rc) {
    ds_release(rh), ds_release(rc);
    return DS_EFAIL;
  }
  for (int64_t i = 0; i < b; i++) {
    int64_t r = row_of(map, ds_data(y)[i]);
    if (r < 0) {
      if (rh) memset(ds_data(rh) + i * m, 0, sizeof(float) * (size_t)m);
      continue;
    }
    const float *restrict hi = ds_data(h) + i * m, *restrict cr = ds_data(c) + r * m;
    float *restrict gcr = ds_data(rc) + r * m;
    float row = 0.0f; /* a row's sum in float lanes, the batch's in double */
#pragma omp simd reduction(+ : row)
    for (int64_t k = 0; k < m; k++) {
      float e = hi[k] - cr[k];
      row += e * e;
      gcr[k] -= g * e;
    }
    acc += row;
    if (rh) {
      float *restrict ghi = ds_data(rh) + i * m;
#pragma omp simd
      for (int64_t k = 0; k < m; k++) ghi[k] = g * (hi[k] - cr[k]);
    }
  }
  if (value) *value = 0.5 * acc;
  if (gh) *gh = rh;
  *gc = rc;
  return DS_OK;
}

int ds_wm_pull_add(ds_tensor *acc, ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *map, int64_t classes,
                   float g) {
  if (check_hyc("wm_pull", h, y, c, map, classes)) return DS_EFAIL;
  if (!ds_same_shape(acc, h) || !ds_is_contiguous(acc)) {
    char s1[128], s2[128];
    return ds_error("wm_pull_add: gradient %s does not match activations %s", ds_shape_str(acc, s1, sizeof s1),
                    ds_shape_str(h, s2, sizeof s2));
  }
  int64_t b = h->shape[0], m = h->shape[1];
  for (int64_t i = 0; i < b; i++) {
    int64_t r = row_of(map, ds_data(y)[i]);
    if (r < 0) continue;
    const float *restrict hi = ds_data(h) + i * m, *restrict cr = ds_data(c) + r * m;
    float *restrict ai = ds_data(acc) + i * m;
#pragma omp simd
    for (int64_t k = 0; k < m; k++) ai[k] += g * (hi[k] - cr[k]);
  }
  return DS_OK;
}

typedef struct relu_pull_job {
  const float *x, *g, *c, *y;
  float *r, scale;
  const int64_t *map;
  int64_t m;
} relu_pull_job;

/* GCC (12) sank v into the select's true branch and made a scalar branch per element;
 * without trapping math it computes v everywhere and vectorises (7x faster) */
#if defined(__GNUC__) && !defined(__clang__)
#define SELECT_VECTORISES __attribute__((optimize("no-trapping-math")))
#else
#define SELECT_VECTORISES
#endif
SELECT_VECTORISES static void relu_pull_rows(void *ctx, int64_t lo, int64_t hi) {
  const relu_pull_job *j = ctx;
  int64_t m = j->m;
  float s = j->scale;
  for (int64_t i = lo; i < hi; i++) {
    int64_t row = row_of(j->map, j->y[i]);
    const float *restrict xi = j->x + i * m, *gi = j->g + i * m; /* r may be g: not restrict */
    float *ri = j->r + i * m;
    if (row < 0) {
#pragma omp simd
      for (int64_t k = 0; k < m; k++) ri[k] = xi[k] > 0 ? gi[k] : 0.0f;
    } else {
      const float *restrict cr = j->c + row * m;
#pragma omp simd
      for (int64_t k = 0; k < m; k++) { /* computed everywhere, then selected: a vector loop */
        float v = gi[k] + s * (xi[k] - cr[k]);
        ri[k] = xi[k] > 0 ? v : 0.0f;
      }
    }
  }
}

/* rows [lo, hi) of h = relu(x) with the pull's sum and centre gradient; the select is
 * computed everywhere (SELECT_VECTORISES) */
SELECT_VECTORISES static double relu_pull_forward_rows(const float *x, float *h, const float *y, const float *c,
                                                       const int64_t *map, int64_t m, int64_t lo, int64_t hi, float g,
                                                       float *gc) {
  double acc = 0;
  for (int64_t i = lo; i < hi; i++) {
    int64_t r = row_of(map, y[i]);
    const float *xi = x + i * m; /* h may be x (written over): not restrict */
    float *hi_ = h + i * m;
    if (r < 0) {
#pragma omp simd
      for (int64_t k = 0; k < m; k++) hi_[k] = xi[k] > 0 ? xi[k] : 0.0f;
      continue;
    }
    const float *restrict cr = c + r * m;
    float *restrict gcr = gc + r * m;
    float row = 0.0f; /* as ds_wm_pull_vg: a row's sum in float lanes, the batch's in double */
#pragma omp simd reduction(+ : row)
    for (int64_t k = 0; k < m; k++) {
      float v = xi[k] > 0 ? xi[k] : 0.0f, e = v - cr[k];
      hi_[k] = v;
      row += e * e;
      gcr[k] -= g * e;
    }
    acc += row;
  }
  return acc;
}

#define RELU_PULL_MAX_THREADS 16

ds_tensor *ds_wm_relu_pull_then(ds_tensor *x, ds_tensor *y, ds_tensor *c, const int64_t *map, int64_t classes,
                                float g, int over, double *value, ds_tensor **gc, ds_wm_then_fn then, void *ctx) {
  if (check_hyc("wm_relu_pull", x, y, c, map, classes)) return NULL;
  ds_tensor *h = ds_tensor_into("wm_relu_pull", " (written over its input)", over ? x : NULL, x);
  if (!h) return NULL;
  int64_t b = x->shape[0], m = x->shape[1], kc = ds_numel(c);
  int nt = b * m >= (1 << 15) ? ds_get_num_threads() : 1;
  if (nt > RELU_PULL_MAX_THREADS) nt = RELU_PULL_MAX_THREADS;
  if (nt > b) nt = (int)(b > 0 ? b : 1);
  ds_tensor *rc = ds_tensor_empty(2, c->shape);
  /* each further thread sums its rows' centre gradient apart (added in thread order);
   * every thread zeroes its own buffer, so that its lines start in its own cache */
  float *part = nt > 1 ? malloc((size_t)(nt - 1) * (size_t)kc * sizeof(float)) : NULL;
  if (!rc || (nt > 1 && !part)) {
    ds_release(h), ds_release(rc), free(part);
    ds_error("wm_relu_pull: out of memory");
    return NULL;
  }
  double sums[RELU_PULL_MAX_THREADS] = {0};
  int failed = 0;
  const float *px = ds_data(x), *py = ds_data(y), *pc = ds_data(c);
  float *ph = ds_data(h), *pg = ds_data(rc);
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : failed)
  {
    int t = 0, team = 1;
#ifdef _OPENMP
    t = omp_get_thread_num(), team = omp_get_num_threads();
#endif
    int64_t lo = b * t / team, hi = b * (t + 1) / team;
    float *dst = t ? part + (size_t)(t - 1) * (size_t)kc : pg;
    memset(dst, 0, sizeof(float) * (size_t)kc);
    sums[t] = relu_pull_forward_rows(px, ph, py, pc, map, m, lo, hi, g, dst);
    if (then) failed |= then(ctx, t, team, dst);
  }
  double acc = sums[0];
  for (int t = 1; t < nt; t++) {
    const float *restrict q = part + (size_t)(t - 1) * (size_t)kc;
#pragma omp simd
    for (int64_t k = 0; k < kc; k++) pg[k] += q[k];
    acc += sums[t];
  }
  free(part);
  if (failed) {
    ds_release(h), ds_release(rc);
    ds_error("wm_relu_pull: out of memory");
    return NULL;
  }
  *value = 0.5 * acc;
  *gc = rc;
  return h;
}

ds_tensor *ds_wm_relu_pull(ds_tensor *x, ds_tensor *y, ds_tensor *c, const int64_t *map, int64_t classes, float g,
                           double *value, ds_tensor **gc) {
  return ds_wm_relu_pull_then(x, y, c, map, classes, g, 0, value, gc, NULL, NULL);
}

ds_tensor *ds_wm_relu_pull_backward(ds_tensor *x, ds_tensor *gh, ds_tensor *y, ds_tensor *c,
                                    const int64_t *map, int64_t classes, float g, ds_tensor *into) {
  if (check_hyc("wm_relu_pull_backward", x, y, c, map, classes)) return NULL;
  if (!ds_same_shape(gh, x)) {
    char s1[128], s2[128];
    ds_error("wm_relu_pull_backward: gradient %s does not match activations %s", ds_shape_str(gh, s1, sizeof s1),
             ds_shape_str(x, s2, sizeof s2));
    return NULL;
  }
  ds_tensor *r = ds_tensor_into("wm_relu_pull_backward", "", into, x), *cg = r ? ds_contiguous(gh) : NULL;
  if (!cg) {
    ds_release(r);
    return NULL;
  }
  int64_t b = x->shape[0], m = x->shape[1];
  relu_pull_job job = {ds_data(x), ds_data(cg), ds_data(c), ds_data(y), ds_data(r), g, map, m};
  /* rows on the threads, as the element-wise ops before split them */
  ds_parallel_ranges(b, m ? ((1 << 15) + m - 1) / m : b + 1, relu_pull_rows, &job);
  ds_release(cg);
  return r;
}

/* The push of sample i from centre r is capped at the distance between its own
 * centre and r: the v1 term is unbounded below and diverges uncapped. */
ds_tensor *ds_wm_push(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *map, int64_t classes) {
  if (check_hyc("wm_push", h, y, c, map, classes)) return NULL;
  int64_t b = h->shape[0], m = h->shape[1], rows = c->shape[0];
  double acc = 0, *caps = centre_dists(ds_data(c), rows, m);
  if (!caps) {
    ds_error("wm_push: out of memory");
    return NULL;
  }
  for (int64_t i = 0; i < b; i++) {
    int64_t own = row_of(map, ds_data(y)[i]);
    if (own < 0) continue;
    acc += capped_push_row(ds_data(h) + i * m, ds_data(c), rows, own, m, caps, 0.0f, NULL);
  }
  free(caps);
  return ds_scalar_tensor((float)acc);
}

ds_tensor *ds_wm_push_backward(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *map, int64_t classes,
                               float g) {
  ds_tensor *gh = NULL;
  ds_wm_push_vg(h, y, c, map, classes, g, NULL, &gh);
  return gh;
}

int ds_wm_push_vg(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *map, int64_t classes, float g,
                  double *value, ds_tensor **gh) {
  if (check_hyc("wm_push", h, y, c, map, classes)) return DS_EFAIL;
  double acc = 0;
  int64_t b = h->shape[0], m = h->shape[1], rows = c->shape[0];
  ds_tensor *rh = ds_tensor_new(2, h->shape);
  double *caps = rh ? centre_dists(ds_data(c), rows, m) : NULL;
  if (!caps) {
    ds_release(rh);
    return ds_error("wm_push: out of memory");
  }
  for (int64_t i = 0; i < b; i++) {
    int64_t own = row_of(map, ds_data(y)[i]);
    if (own < 0) continue;
    acc += capped_push_row(ds_data(h) + i * m, ds_data(c), rows, own, m, caps, g, ds_data(rh) + i * m);
  }
  free(caps);
  if (value) *value = acc;
  *gh = rh;
  return DS_OK;
}

static int check_centres(const char *op, ds_tensor *c, ds_tensor *y) {
  char s1[128], s2[128];
  if (c->ndim != 2 || c->shape[0] < 2 || !ds_is_contiguous(c) || (y && (y->ndim != 1 || !ds_is_contiguous(y))))
    return ds_error("%s: want centres K x M with K >= 2 and labels B, got %s and %s", op, ds_shape_str(c, s1, sizeof s1),
                    y ? ds_shape_str(y, s2, sizeof s2) : "none");
  if (y)
    for (int64_t i = 0; i < y->shape[0]; i++) {
      float v = ds_data(y)[i];
      if (!(v >= 0 && v < c->shape[0]))
        return ds_error("%s: label %g at row %lld has no centre (0..%lld)", op, v, (long long)i + 1,
                        (long long)c->shape[0] - 1);
    }
  return DS_OK;
}

/* nearest other centre of every centre (ties: the lowest index); -1 when out of memory */
static int nearest_others(const float *c, int64_t k, int64_t m, int64_t *near) {
  double buf[64], *best = k <= 64 ? buf : malloc(sizeof *best * (size_t)k);
  if (!best) return -1;
  for (int64_t a = 0; a < k; a++) best[a] = INFINITY;
  for (int64_t a = 0; a < k; a++) /* each pair once; ties keep the lower index */
    for (int64_t o = a + 1; o < k; o++) {
      double d = sqdist_f(c + a * m, c + o * m, m);
      if (d < best[a]) best[a] = d, near[a] = o;
      if (d < best[o]) best[o] = d, near[o] = a;
    }
  if (best != buf) free(best);
  return 0;
}

/* The batch term depends only on each sample's centre: count the samples per centre
 * and evaluate every centre's pair once. Adds g times the gradient into gc (k x m,
 * may be NULL) and stores the value; -1 when out of memory. */
static int separation_acc(const float *pc, ds_tensor *y, int64_t k, int64_t m, float g, float *gc, double *value) {
  int64_t buf[64], *counts = 2 * k <= 64 ? buf : malloc(sizeof(int64_t) * (size_t)(2 * k));
  if (!counts) return -1;
  int64_t *near = counts + k, b = y->shape[0];
  memset(counts, 0, sizeof(int64_t) * (size_t)k);
  if (nearest_others(pc, k, m, near)) {
    if (counts != buf) free(counts);
    return -1;
  }
  for (int64_t i = 0; i < b; i++) counts[(int64_t)ds_data(y)[i]]++;
  double acc = 0;
  for (int64_t u = 0; u < k; u++) {
    if (!counts[u]) continue;
    int64_t v = near[u];
    double s, d;
    dot_sqdist(pc + u * m, pc + v * m, m, &s, &d);
    acc += (double)counts[u] * (s - 1) * d;
    if (!gc) continue;
    /* d/du = v d + (s - 1) 2 (u - v); d/dv = u d - (s - 1) 2 (u - v), with the nearest fixed */
    /* the coefficients rounded to float once, so that the loop runs in float lanes */
    float scale = (float)counts[u] * g / (float)b, fd = (float)d * scale, fs = (float)((s - 1) * 2) * scale;
    const float *restrict cu = pc + u * m, *restrict cv = pc + v * m;
    float *restrict gu = gc + u * m, *restrict gv = gc + v * m;
#pragma omp simd
    for (int64_t j = 0; j < m; j++) {
      float diff = cu[j] - cv[j];
      gu[j] += cv[j] * fd + fs * diff;
      gv[j] += cu[j] * fd - fs * diff;
    }
  }
  if (counts != buf) free(counts);
  *value = b ? acc / (double)b : 0.0;
  return 0;
}

ds_tensor *ds_wm_separation(ds_tensor *c, ds_tensor *y) {
  if (check_centres("wm_separation", c, y)) return NULL;
  double v;
  if (separation_acc(ds_data(c), y, c->shape[0], c->shape[1], 0.0f, NULL, &v)) {
    ds_error("wm_separation: out of memory");
    return NULL;
  }
  return ds_scalar_tensor((float)v);
}

ds_tensor *ds_wm_separation_backward(ds_tensor *c, ds_tensor *y, float g) {
  ds_tensor *gc = NULL;
  ds_wm_separation_vg(c, y, g, NULL, &gc);
  return gc;
}

int ds_wm_separation_vg(ds_tensor *c, ds_tensor *y, float g, double *value, ds_tensor **out) {
  if (check_centres("wm_separation", c, y)) return DS_EFAIL;
  ds_tensor *gc = ds_tensor_new(2, c->shape);
  if (!gc) return DS_EFAIL;
  double v;
  if (separation_acc(ds_data(c), y, c->shape[0], c->shape[1], g, ds_data(gc), &v)) {
    ds_release(gc);
    return ds_error("wm_separation: out of memory");
  }
  if (value) *value = v;
  *out = gc;
  return DS_OK;
}

/* sum_k |1 - ||c_k||^2|; adds g times its gradient into gc when not NULL */
static double unit_norm_acc(const float *c, int64_t k, int64_t m, float g, float *gc) {
  double acc = 0;
  for (int64_t a = 0; a < k; a++) {
    const float *ca = c + a * m;
    double n2 = dot(ca, ca, m);
    acc += fabs(1 - n2);
    if (!gc) continue;
    float sgn = n2 > 1 ? 1.0f : (n2 < 1 ? -1.0f : 0.0f), f = g * sgn * 2;
    for (int64_t j = 0; j < m; j++) gc[a * m + j] += f * ca[j];
  }
  return acc;
}

ds_tensor *ds_wm_unit_norm(ds_tensor *c) {
  if (check_centres("wm_unit_norm", c, NULL)) return NULL;
  return ds_scalar_tensor((float)unit_norm_acc(ds_data(c), c->shape[0], c->shape[1], 0.0f, NULL));
}

ds_tensor *ds_wm_unit_norm_backward(ds_tensor *c, float g) {
  if (check_centres("wm_unit_norm", c, NULL)) return NULL;
  ds_tensor *gc = ds_tensor_new(2, c->shape);
  if (gc) unit_norm_acc(ds_data(c), c->shape[0], c->shape[1], g, ds_data(gc));
  return gc;
}

int ds_wm_unit_norm_acc(ds_tensor *c, float g, double *value, float *gc) {
  if (check_centres("wm_unit_norm", c, NULL)) return DS_EFAIL;
  *value = unit_norm_acc(ds_data(c), c->shape[0], c->shape[1], g, gc);
  return DS_OK;
}

int ds_wm_separation_acc(ds_tensor *c, ds_tensor *y, float g, double *value, float *gc) {
  if (check_centres("wm_separation", c, y)) return DS_EFAIL;
  if (separation_acc(ds_data(c), y, c->shape[0], c->shape[1], g, gc, value))
    return ds_error("wm_separation: out of memory");
  return DS_OK;
}

static int check_projection(ds_tensor *mu, ds_tensor *a, ds_tensor *b) {
  char s1[128], s2[128], s3[128];
  if (mu->ndim != 2 || a->ndim != 2 || b->ndim != 2 || mu->shape[1] != a->shape[0] || b->shape[0] != mu->shape[0] ||
      b->shape[1] != a->shape[1] || !ds_is_contiguous(mu) || !ds_is_contiguous(a) || !ds_is_contiguous(b))
    return ds_error("wm_projection: size mismatch, means: %s, A: %s, bits: %s (want s x M, M x N, s x N)",
                    ds_shape_str(mu, s1, sizeof s1), ds_shape_str(a, s2, sizeof s2), ds_shape_str(b, s3, sizeof s3));
  return DS_OK;
}

/* One row of the projection loss: z = mu_row A (N logits), the BCE of the bits b_row
 * into *value, and, when grow is not NULL, g (sigmoid(z) - b) A^T added into grow.
 * -1 when out of memory. */
static int projection_row(const float *mu, const float *a, const float *b, int64_t m, int64_t n, float g,
                          float *grow, double *value) {
  float zbuf[256], *z = n <= 256 ? zbuf : malloc(sizeof(float) * (size_t)n);
  if (!z) return -1;
  ds_gemm(0, 0, 1, n, m, 1.0f, mu, m, a, n, 0.0f, z, n); /* its small-product loops: sums in registers */
  double acc = 0;
  for (int64_t j = 0; j < n; j++) { /* BCE with logits: softplus(z) - b z, in double */
    float v = z[j];
    double dv = v, t = b[j];
    acc += (dv > 0 ? dv + log1p(exp(-dv)) : log1p(exp(dv))) - t * dv;
    float sg = v >= 0 ? 1.0f / (1.0f + expf(-v)) : expf(v) / (1.0f + expf(v));
    z[j] = g * (sg - b[j]);
  }
  if (grow) ds_gemm(0, 1, 1, m, n, 1.0f, z, n, a, n, 1.0f, grow, m);
  if (z != zbuf) free(z);
  *value = acc;
  return 0;
}

/* the rows crow of mu with the bit rows brow (n of each): the summed loss, and the
 * gradient added into rows crow of grad when it is not NULL */
static int projection_rows(ds_tensor *mu, ds_tensor *a, ds_tensor *b, const int64_t *crow, const int64_t *brow,
                           int64_t n, float g, float *grad, double *value) {
  int64_t m = mu->shape[1], nb = a->shape[1];
  double acc = 0, v;
  for (int64_t r = 0; r < n; r++) {
    int64_t cr = crow ? crow[r] : r, br = brow ? brow[r] : r;
    if (projection_row(ds_data(mu) + cr * m, ds_data(a), ds_data(b) + br * nb, m, nb, g, grad ? grad + cr * m : NULL,
                       &v))
      return ds_error("wm_projection: out of memory");
    acc += v;
  }
  *value = acc;
  return DS_OK;
}

ds_tensor *ds_wm_projection(ds_tensor *mu, ds_tensor *a, ds_tensor *b) {
  if (check_projection(mu, a, b)) return NULL;
  double acc = 0;
  if (projection_rows(mu, a, b, NULL, NULL, mu->shape[0], 0.0f, NULL, &acc)) return NULL;
  return ds_scalar_tensor((float)acc);
}

/* d/dmu = (sigmoid(z) - b) A^T */
ds_tensor *ds_wm_projection_backward(ds_tensor *mu, ds_tensor *a, ds_tensor *b, float g) {
  ds_tensor *gm = NULL;
  ds_wm_projection_vg(mu, a, b, g, NULL, &gm);
  return gm;
}

int ds_wm_projection_vg(ds_tensor *mu, ds_tensor *a, ds_tensor *b, float g, double *value, ds_tensor **out) {
  if (check_projection(mu, a, b)) return DS_EFAIL;
  ds_tensor *gm = ds_tensor_new(2, mu->shape);
  if (!gm) return DS_EFAIL;
  double acc = 0;
  if (projection_rows(mu, a, b, NULL, NULL, mu->shape[0], g, ds_data(gm), &acc)) {
    ds_release(gm);
    return DS_EFAIL;
  }
  if (value) *value = acc;
  *out = gm;
  return DS_OK;
}

int ds_wm_projection_rows_acc(ds_tensor *c, ds_tensor *a, ds_tensor *b, const int64_t *crow, const int64_t *brow,
                              int64_t n, float g, double *value, float *gc) {
  if (c->ndim != 2 || a->ndim != 2 || b->ndim != 2 || c->shape[1] != a->shape[0] || b->shape[1] != a->shape[1] ||
      !ds_is_contiguous(c) || !ds_is_contiguous(a) || !ds_is_contiguous(b))
    return ds_error("wm_projection: size mismatch");
  return projection_rows(c, a, b, crow, brow, n, g, gc, value);
}
