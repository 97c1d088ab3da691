/* Each white-box variant's whole regularizer as one op: the same kernels as the
 * separate wm_* ops, composed in C, so that a training step pays for one autograd
 * node instead of a dozen small ones (the difference between ~12% and ~2% of an
 * epoch on the paper MLP). */
#include "ops.h"
#include "ops_watermark.h"
#include "error.h"
#include "blas.h"
#include <stdlib.h>
#include <string.h>

static int check_common(const char *op, ds_tensor *h, ds_tensor *y, ds_tensor *a, ds_tensor *b) {
  char s1[128], s2[128], s3[128];
  if (h->ndim != 2 || y->ndim != 1 || y->shape[0] != h->shape[0] || a->ndim != 2 || a->shape[0] != h->shape[1] ||
      b->ndim != 2 || b->shape[1] != a->shape[1])
    return ds_error("%s: size mismatch, activations: %s, A: %s, bits: %s (want B x M, M x N, s x N)", op,
                    ds_shape_str(h, s1, sizeof s1), ds_shape_str(a, s2, sizeof s2), ds_shape_str(b, s3, sizeof s3));
  if (!ds_is_contiguous(h) || !ds_is_contiguous(y))
    return ds_error("%s: the activations and the labels must be contiguous (:contiguous())", op);
  return DS_OK;
}

/* ---- reference: l1 (pull + separation + unit norm) + l2 projection(present target centres) ---- */

/* targets present in the batch: their centre rows and their bit rows */
static int64_t present_targets(ds_tensor *y, const int64_t *targets, int64_t s, int64_t *crow, int64_t *brow) {
  int64_t n = 0;
  for (int64_t k = 0; k < s; k++) {
    int here = 0;
    for (int64_t i = 0; i < y->shape[0] && !here; i++) here = (int64_t)ds_data(y)[i] == targets[k];
    if (here) crow[n] = targets[k], brow[n] = k, n++;
  }
  return n;
}

static int check_reference(ds_tensor *h, ds_tensor *y, ds_tensor *c, ds_tensor *a, ds_tensor *b,
                           const int64_t *targets, int64_t s) {
  if (check_common("wm_reference_loss", h, y, a, b)) return DS_EFAIL;
  if (b->shape[0] != s) return ds_error("wm_reference_loss: %lld bit rows for %lld targets", (long long)b->shape[0], (long long)s);
  if (!ds_is_contiguous(a) || !ds_is_contiguous(b)) return ds_error("wm_reference_loss: A and the bits must be contiguous");
  for (int64_t k = 0; k < s; k++)
    if (targets[k] < 0 || targets[k] >= c->shape[0])
      return ds_error("wm_reference_loss: target class %lld has no centre row", (long long)targets[k]);
  /* the labels and the centres' shape: all that the terms could refuse, checked here
   * because on the second thread below a message would be lost */
  return ds_wm_pull_check(h, y, c, NULL, c->shape[0]);
}

/* The reference's terms over the centres alone (separation, unit norm, the projection
 * of the present targets' centres) and what they need. */
typedef struct reference_terms {
  ds_tensor *c, *y, *a, *b;
  int64_t buf[64], *crow, *brow, np; /* the present targets' centre and bit rows */
  float l1, l2;
  double sep, un, proj;
} reference_terms;

static int reference_terms_init(reference_terms *r, ds_tensor *c, ds_tensor *y, ds_tensor *a, ds_tensor *b,
                                const int64_t *targets, int64_t s, float l1, float l2) {
  *r = (reference_terms){.c = c, .y = y, .a = a, .b = b, .l1 = l1, .l2 = l2};
  r->crow = 2 * s + 1 <= 64 ? r->buf : malloc(sizeof(int64_t) * (size_t)(2 * s + 1));
  if (!r->crow) return ds_error("wm_reference_loss: out of memory");
  r->brow = r->crow + s;
  r->np = present_targets(y, targets, s, r->crow, r->brow);
  return DS_OK;
}

static void reference_terms_free(reference_terms *r) {
  if (r->crow != r->buf) free(r->crow);
}

/* Thread t of `team` adds its share of the terms' gradients into gc: thread 0
 * separation and unit norm, thread 1 the projection (one thread: all three). */
static int reference_centre_terms(void *ctx, int t, int team, float *gc) {
  reference_terms *r = ctx;
  int fail = 0;
  if (t == 0) fail = ds_wm_separation_acc(r->c, r->y, r->l1, &r->sep, gc) || ds_wm_unit_norm_acc(r->c, r->l1, &r->un, gc);
  if (t == (team > 1 ? 1 : 0) && r->np)
    fail = fail || ds_wm_projection_rows_acc(r->c, r->a, r->b, r->crow, r->brow, r->np, r->l2, &r->proj, gc);
  return fail;
}

int ds_wm_reference_loss(ds_tensor *h, ds_tensor *y, ds_tensor *c, ds_tensor *a, ds_tensor *b, const int64_t *targets,
                         int64_t s, float l1, float l2, float *value, ds_tensor **gc) {
  reference_terms r;
  if (check_reference(h, y, c, a, b, targets, s) || reference_terms_init(&r, c, y, a, b, targets, s, l1, l2))
    return DS_EFAIL;
  int64_t kc = ds_numel(c);
  double pull = 0;
  ds_tensor *rc = NULL;
  /* The pull (over the batch's activations) and the centre terms (separation, unit
   * norm and the projection, which reads A from memory) are independent: with two
   * threads they run side by side, the centre terms into a buffer of their own that is
   * added after; on one thread, every term adds straight into the pull's gradient. */
  int two = ds_get_num_threads() > 1 && h->shape[0] * h->shape[1] >= (1 << 15);
  float *side = two ? calloc((size_t)kc, sizeof(float)) : NULL;
  two = side != NULL; /* no scratch: the serial order */
  int fail;
  if (two) {
    int fail_pull = 0, fail_side = 0;
#pragma omp parallel sections num_threads(2)
    {
#pragma omp section
      fail_pull = ds_wm_pull_vg(h, y, c, NULL, c->shape[0], l1, &pull, NULL, &rc);
#pragma omp section
      fail_side = reference_centre_terms(&r, 0, 1, side);
    }
    fail = fail_pull || fail_side;
    if (!fail) {
      float *restrict g = ds_data(rc);
#pragma omp simd
      for (int64_t k = 0; k < kc; k++) g[k] += side[k];
    }
    free(side);
  } else
    fail = ds_wm_pull_vg(h, y, c, NULL, c->shape[0], l1, &pull, NULL, &rc) ||
           reference_centre_terms(&r, 0, 1, ds_data(rc));
  if (!fail) {
    *value = (float)(l1 * (pull + r.sep + r.un) + l2 * r.proj);
    *gc = rc;
  } else {
    ds_release(rc);
    /* inputs were checked above, so only memory can have failed; a message set on the
     * other thread is not this one's */
    if (two) ds_error("wm_reference_loss: out of memory");
  }
  reference_terms_free(&r);
  return fail ? DS_EFAIL : DS_OK;
}

/* The same loss made by the ReLU that makes h (ds_wm_relu_pull_then): the centre terms
 * run on the threads' tails, after their rows, each into its own gradient buffer. */
ds_tensor *ds_wm_relu_reference(ds_tensor *x, ds_tensor *y, ds_tensor *c, ds_tensor *a, ds_tensor *b,
                                const int64_t *targets, int64_t s, float l1, float l2, int over, float *value,
                                ds_tensor **gc) {
  reference_terms r;
  if (check_reference(x, y, c, a, b, targets, s) || reference_terms_init(&r, c, y, a, b, targets, s, l1, l2))
    return NULL;
  double pull = 0;
  ds_tensor *h = ds_wm_relu_pull_then(x, y, c, NULL, c->shape[0], l1, over, &pull, gc, reference_centre_terms, &r);
  if (h) *value = (float)(l1 * (pull + r.sep + r.un) + l2 * r.proj);
  reference_terms_free(&r);
  return h;
}

/* ---- paper: (2 pull - push) l1 / B over the target-class rows + l2 projection(batch target means) ---- */

/* The target-class rows of the batch, grouped: idx[0..nt) the rows, and for each
 * present target (np of them) its bit row and the range [first[k], first[k+1]) of its
 * rows within idx. */
typedef struct paper_rows {
  int64_t nt, np, *idx, *first, *brow;
} paper_rows;

static void paper_rows_free(paper_rows *r) { free(r->idx); }

static int paper_rows_of(ds_tensor *y, const int64_t *map, int64_t classes, int64_t s, paper_rows *r) {
  int64_t n = y->shape[0];
  memset(r, 0, sizeof *r);
  r->idx = malloc(sizeof(int64_t) * (size_t)(n + 2 * s + 2));
  if (!r->idx) return ds_error("wm_paper_loss: out of memory");
  r->first = r->idx + n, r->brow = r->first + s + 1;
  for (int64_t k = 0; k < s; k++) { /* grouped by target, in batch order within each */
    int64_t start = r->nt;
    for (int64_t i = 0; i < n; i++) {
      int64_t cls = (int64_t)ds_data(y)[i];
      if (cls >= 0 && cls < classes && map[cls] == k) r->idx[r->nt++] = i;
    }
    if (r->nt > start) r->first[r->np] = start, r->brow[r->np] = k, r->np++;
  }
  r->first[r->np] = r->nt;
  return DS_OK;
}

static int check_paper(ds_tensor *h, ds_tensor *y, ds_tensor *mu, ds_tensor *a, ds_tensor *b, const int64_t *map,
                       int64_t classes) {
  if (check_common("wm_paper_loss", h, y, a, b)) return DS_EFAIL;
  if (b->shape[0] != mu->shape[0])
    return ds_error("wm_paper_loss: %lld bit rows for %lld target means", (long long)b->shape[0], (long long)mu->shape[0]);
  for (int64_t k = 0; k < classes; k++)
    if (map[k] >= mu->shape[0]) return ds_error("wm_paper_loss: class %lld maps to a missing mean row", (long long)k);
  return DS_OK;
}

/* The paper loss with the activations' gradient as its target rows only: gt (nt x M,
 * NULL when no target row is in the batch) for rows r->idx of h. One pass over those
 * rows (pull, capped push, their gradient, the means: ds_wm_paper_rows), then the
 * projection of the means, whose gradient each mean spreads evenly over its rows. */
static int paper_compute(ds_tensor *h, ds_tensor *y, ds_tensor *mu, ds_tensor *a, ds_tensor *b, const int64_t *map,
                         int64_t classes, float l1, float l2, float *value, ds_tensor **gt, paper_rows *r,
                         ds_tensor **gmu) {
  if (check_paper(h, y, mu, a, b, map, classes) || ds_wm_pull_check(h, y, mu, map, classes)) return DS_EFAIL;
  if (paper_rows_of(y, map, classes, mu->shape[0], r)) return paper_rows_free(r), DS_EFAIL;
  int64_t m = h->shape[1];
  float k1 = l1 / (float)h->shape[0];
  double pull = 0, push = 0, proj = 0;
  ds_tensor *rmu = ds_tensor_new(2, mu->shape), *rt = NULL, *means = NULL;
  float *gmeans = NULL;
  int fail = !rmu;
  if (!fail && r->nt) {
    rt = ds_tensor_empty(2, (int64_t[]){r->nt, m});
    means = ds_tensor_empty(2, (int64_t[]){r->np, m});
    gmeans = calloc((size_t)(r->np * m), sizeof(float));
    if (!rt || !means || !gmeans ||
        ds_wm_paper_rows(h, mu, r->idx, r->first, r->brow, r->np, k1, &pull, &push, ds_data(rt), ds_data(rmu),
                         ds_data(means)))
      fail = ds_error("wm_paper_loss: out of memory");
    else
      fail = ds_wm_projection_rows_acc(means, a, b, NULL, r->brow, r->np, l2, &proj, gmeans);
    if (!fail) { /* a mean spreads its gradient evenly over its rows */
      float *restrict g = ds_data(rt);
      for (int64_t k = 0; k < r->np; k++) {
        float inv = 1.0f / (float)(r->first[k + 1] - r->first[k]);
        const float *restrict gk = gmeans + k * m;
        for (int64_t i = r->first[k]; i < r->first[k + 1]; i++)
#pragma omp simd
          for (int64_t j = 0; j < m; j++) g[i * m + j] += inv * gk[j];
      }
    }
  }
  free(gmeans);
  ds_release(means);
  if (!fail) {
    *value = (float)((pull - push) * k1 + l2 * proj);
    *gt = rt, *gmu = rmu;
  } else {
    ds_release(rt), ds_release(rmu);
    paper_rows_free(r);
  }
  return fail ? DS_EFAIL : DS_OK;
}

int ds_wm_paper_loss(ds_tensor *h, ds_tensor *y, ds_tensor *mu, ds_tensor *a, ds_tensor *b, const int64_t *map,
                     int64_t classes, float l1, float l2, float *value, ds_tensor **gt, ds_tensor **rows_of_gt,
                     ds_tensor **gmu) {
  paper_rows r;
  *gt = *rows_of_gt = NULL;
  if (paper_compute(h, y, mu, a, b, map, classes, l1, l2, value, gt, &r, gmu)) return DS_EFAIL;
  if (*gt) {
    ds_tensor *ri = ds_tensor_empty(1, (int64_t[]){r.nt});
    if (!ri) {
      ds_release(*gt), ds_release(*gmu);
      paper_rows_free(&r);
      return DS_EFAIL;
    }
    for (int64_t k = 0; k < r.nt; k++) ds_data(ri)[k] = (float)r.idx[k];
    *rows_of_gt = ri;
  }
  paper_rows_free(&r);
  return DS_OK;
}

int ds_rows_add(ds_tensor *acc, ds_tensor *rows_idx, ds_tensor *src, float g) {
  char s1[128], s2[128];
  if (acc->ndim != 2 || src->ndim != 2 || rows_idx->ndim != 1 || src->shape[1] != acc->shape[1] ||
      src->shape[0] != rows_idx->shape[0] || !ds_is_contiguous(acc) || !ds_is_contiguous(src) ||
      !ds_is_contiguous(rows_idx))
    return ds_error("rows_add: rows %s do not fit the gradient %s", ds_shape_str(src, s1, sizeof s1),
                    ds_shape_str(acc, s2, sizeof s2));
  int64_t m = acc->shape[1];
  for (int64_t k = 0; k < src->shape[0]; k++) { /* all checked before acc is touched */
    float v = ds_data(rows_idx)[k];
    if (!(v >= 0 && v < acc->shape[0])) return ds_error("rows_add: row %g out of range", v);
  }
  for (int64_t k = 0; k < src->shape[0]; k++) {
    float *restrict dst = ds_data(acc) + (int64_t)ds_data(rows_idx)[k] * m;
    const float *restrict from = ds_data(src) + k * m;
#pragma omp simd
    for (int64_t j = 0; j < m; j++) dst[j] += g * from[j];
  }
  return DS_OK;
}
