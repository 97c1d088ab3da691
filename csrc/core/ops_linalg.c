/* Matrix products through the one GEMM wrapper, linear layers, pairwise distances. */
#include "blas.h"
#include "error.h"
#include "ops.h"
#include <stdlib.h>
#include <string.h>

/* How a 2-D strided matrix (rows x cols, strides rs, cs) can go to GEMM as is. */
static int gemm_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, int *trans, int64_t *ld) {
  if (cols == 1) cs = 1;
  if (rows == 1) rs = cols;
  if (cs == 1 && rs >= cols) {
    *trans = 0, *ld = rs > 0 ? rs : 1;
    return 1;
  }
  if (rs == 1 && cs >= rows) {
    *trans = 1, *ld = cs > 0 ? cs : 1;
    return 1;
  }
  return 0;
}

ds_tensor *ds_matmul(ds_tensor *a, ds_tensor *b) {
  char s1[128], s2[128];
  int batched = a->ndim == 3;
  if (!((a->ndim == 2 && b->ndim == 2) || (a->ndim == 3 && b->ndim == 3)) ||
      a->shape[a->ndim - 1] != b->shape[b->ndim - 2] || (batched && a->shape[0] != b->shape[0])) {
    ds_error("matmul: size mismatch, a: %s, b: %s", ds_shape_str(a, s1, sizeof s1),
             ds_shape_str(b, s2, sizeof s2));
    return NULL;
  }
  int o = batched;
  int64_t nb = batched ? a->shape[0] : 1, m = a->shape[o], k = a->shape[o + 1], n = b->shape[o + 1];
  int64_t shape[3] = {nb, m, n};
  ds_tensor *out = ds_tensor_empty(batched ? 3 : 2, batched ? shape : shape + 1);
  if (!out) return NULL;
  ds_tensor *ca = a, *cb = b;
  int ta, tb;
  int64_t lda, ldb;
  ds_retain(a);
  ds_retain(b);
  if (!gemm_layout(m, k, a->stride[o], a->stride[o + 1], &ta, &lda)) {
    ds_release(ca);
    ca = ds_clone(a);
    ta = 0, lda = k;
  }
  if (!gemm_layout(k, n, b->stride[o], b->stride[o + 1], &tb, &ldb)) {
    ds_release(cb);
    cb = ds_clone(b);
    tb = 0, ldb = n;
  }
  if (!ca || !cb) {
    ds_release(ca), ds_release(cb), ds_release(out);
    return NULL;
  }
  for (int64_t i = 0; i < nb; i++) {
    const float *pa = ds_data(ca) + (batched ? i * ca->stride[0] : 0);
    const float *pb = ds_data(cb) + (batched ? i * cb->stride[0] : 0);
    ds_gemm(ta, tb, m, n, k, 1.0f, pa, lda, pb, ldb, 0.0f, ds_data(out) + i * m * n, n);
  }
  ds_release(ca);
  ds_release(cb);
  return out;
}

static int check_linear(ds_tensor *x, ds_tensor *w, ds_tensor *b) {
  char s1[128], s2[128], s3[128] = "none";
  if (x->ndim != 2 || w->ndim != 2 || x->shape[1] != w->shape[1] ||
      (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))) {
    if (b) ds_shape_str(b, s3, sizeof s3);
    return ds_error("linear: size mismatch, input: %s, weight: %s, bias: %s",
                    ds_shape_str(x, s1, sizeof s1), ds_shape_str(w, s2, sizeof s2), s3);
  }
  return DS_OK;
}

ds_tensor *ds_linear(ds_tensor *x, ds_tensor *w, ds_tensor *b, int relu) {
  if (check_linear(x, w, b)) return NULL;
  int64_t bs = x->shape[0], in = x->shape[1], out_f = w->shape[0];
  ds_tensor *cx = ds_contiguous(x), *cw = ds_contiguous(w), *cb = b ? ds_contiguous(b) : NULL;
  ds_tensor *y = ds_tensor_empty(2, (int64_t[]){bs, out_f});
  if (!cx || !cw || (b && !cb) || !y) {
    ds_release(y);
    y = NULL;
    goto done;
  }
  float *py = ds_data(y);
  float beta = 0.0f;
  if (cb) { /* start from the bias so the GEMM adds onto it */
    const float *pb = ds_data(cb);
    for (int64_t i = 0; i < bs; i++) memcpy(py + i * out_f, pb, (size_t)out_f * sizeof(float));
    beta = 1.0f;
  }
  ds_gemm(0, 1, bs, out_f, in, 1.0f, ds_data(cx), in, ds_data(cw), in, beta, py, out_f);
  if (relu) ds_unary_into(DS_RELU, y, y, 0.0f);
done:
  ds_release(cx), ds_release(cw), ds_release(cb);
  return y;
}

/* accumulator shapes: gw out x in, gb out, both contiguous */
static int check_accumulators(ds_tensor *gw, ds_tensor *gb, int64_t out_f, int64_t in) {
  char s1[128];
  if (gw && (gw->ndim != 2 || gw->shape[0] != out_f || gw->shape[1] != in || !ds_is_contiguous(gw)))
    return ds_error("linear backward: the weight gradient %s is not a contiguous %lldx%lld tensor",
                    ds_shape_str(gw, s1, sizeof s1), (long long)out_f, (long long)in);
  if (gb && (gb->ndim != 1 || gb->shape[0] != out_f || !ds_is_contiguous(gb)))
    return ds_error("linear backward: the bias gradient %s is not a contiguous vector of %lld",
                    ds_shape_str(gb, s1, sizeof s1), (long long)out_f);
  return DS_OK;
}

int ds_linear_backward(ds_tensor *x, ds_tensor *w, ds_tensor *gy, ds_tensor *yrelu, ds_tensor **gx, ds_tensor *gw,
                       ds_tensor *gb) {
  if (check_linear(x, w, NULL)) return DS_EFAIL;
  int64_t bs = x->shape[0], in = x->shape[1], out_f = w->shape[0];
  if (gy->ndim != 2 || gy->shape[0] != bs || gy->shape[1] != out_f || (yrelu && !ds_same_shape(yrelu, gy))) {
    char s1[128], s2[128];
    return ds_error("linear backward: gradient %s does not match output %lldx%lld (input %s)",
                    ds_shape_str(gy, s1, sizeof s1), (long long)bs, (long long)out_f,
                    ds_shape_str(x, s2, sizeof s2));
  }
  if (check_accumulators(gw, gb, out_f, in)) return DS_EFAIL;
  int rc = DS_EFAIL;
  ds_tensor *cx = ds_contiguous(x), *cw = ds_contiguous(w), *rx = NULL;
  /* the gradient at the pre-activation: gy masked by the ReLU's output, or gy itself */
  ds_tensor *cg = yrelu ? ds_unary_backward(DS_RELU, yrelu, NULL, gy, 0.0f) : ds_contiguous(gy);
  if (!cx || !cw || !cg) goto done;
  const float *g = ds_data(cg);
  if (gx) {
    if (!(rx = ds_tensor_empty(2, (int64_t[]){bs, in}))) goto done;
    ds_gemm(0, 0, bs, in, out_f, 1.0f, g, out_f, ds_data(cw), in, 0.0f, ds_data(rx), in);
  }
  if (gw) ds_gemm(1, 0, out_f, in, bs, 1.0f, g, out_f, ds_data(cx), in, 1.0f, ds_data(gw), in);
  if (gb) {
    float *restrict pb = ds_data(gb);
    for (int64_t i = 0; i < bs; i++)
#pragma omp simd
      for (int64_t j = 0; j < out_f; j++) pb[j] += g[i * out_f + j];
  }
  rc = DS_OK;
  if (gx) *gx = rx;
done:
  if (rc) ds_release(rx);
  ds_release(cx), ds_release(cw), ds_release(cg);
  return rc;
}

static int check_sqdist(ds_tensor *a, ds_tensor *b) {
  char s1[128], s2[128];
  if (a->ndim != 2 || b->ndim != 2 || a->shape[1] != b->shape[1])
    return ds_error("sqdist: size mismatch, a: %s, b: %s (both must be rows x features)",
                    ds_shape_str(a, s1, sizeof s1), ds_shape_str(b, s2, sizeof s2));
  return DS_OK;
}

static void row_sqnorms(const float *a, int64_t n, int64_t m, double *out) {
  for (int64_t i = 0; i < n; i++) {
    double s = 0;
    for (int64_t j = 0; j < m; j++) s += (double)a[i * m + j] * a[i * m + j];
    out[i] = s;
  }
}

ds_tensor *ds_sqdist(ds_tensor *a, ds_tensor *b) {
  if (check_sqdist(a, b)) return NULL;
  int64_t n = a->shape[0], k = b->shape[0], m = a->shape[1];
  ds_tensor *ca = ds_contiguous(a), *cb = ds_contiguous(b);
  ds_tensor *d = ds_tensor_empty(2, (int64_t[]){n, k});
  double *na = malloc(sizeof(double) * (size_t)(n + k + 1));
  if (!ca || !cb || !d || !na) {
    if (!na) ds_error("sqdist: out of memory");
    ds_release(d);
    d = NULL;
    goto done;
  }
  double *nb = na + n;
  row_sqnorms(ds_data(ca), n, m, na);
  row_sqnorms(ds_data(cb), k, m, nb);
  float *pd = ds_data(d);
  ds_gemm(0, 1, n, k, m, -2.0f, ds_data(ca), m, ds_data(cb), m, 0.0f, pd, k);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < k; j++) {
      double v = pd[i * k + j] + na[i] + nb[j];
      pd[i * k + j] = v > 0 ? (float)v : 0.0f; /* rounding can dip below zero */
    }
done:
  free(na);
  ds_release(ca), ds_release(cb);
  return d;
}

/* ga = 2 (rowsum(g) * a - g b); gb = 2 (colsum(g) * b - g^T a) */
int ds_sqdist_backward(ds_tensor *a, ds_tensor *b, ds_tensor *g, ds_tensor **ga, ds_tensor **gb) {
  if (check_sqdist(a, b)) return DS_EFAIL;
  int64_t n = a->shape[0], k = b->shape[0], m = a->shape[1];
  int rc = DS_EFAIL;
  ds_tensor *ca = ds_contiguous(a), *cb = ds_contiguous(b), *cg = ds_contiguous(g);
  ds_tensor *ra = NULL, *rb = NULL;
  if (!ca || !cb || !cg) goto done;
  if (cg->ndim != 2 || cg->shape[0] != n || cg->shape[1] != k) {
    char s1[128];
    ds_error("sqdist backward: gradient %s does not match %lldx%lld", ds_shape_str(g, s1, sizeof s1),
             (long long)n, (long long)k);
    goto done;
  }
  const float *pa = ds_data(ca), *pb = ds_data(cb), *pg = ds_data(cg);
  if (ga) {
    if (!(ra = ds_tensor_empty(2, (int64_t[]){n, m}))) goto done;
    float *r = ds_data(ra);
    for (int64_t i = 0; i < n; i++) {
      double s = 0;
      for (int64_t j = 0; j < k; j++) s += pg[i * k + j];
      for (int64_t c = 0; c < m; c++) r[i * m + c] = (float)(2.0 * s) * pa[i * m + c];
    }
    ds_gemm(0, 0, n, m, k, -2.0f, pg, k, pb, m, 1.0f, r, m);
  }
  if (gb) {
    if (!(rb = ds_tensor_empty(2, (int64_t[]){k, m}))) goto done;
    float *r = ds_data(rb);
    for (int64_t j = 0; j < k; j++) {
      double s = 0;
      for (int64_t i = 0; i < n; i++) s += pg[i * k + j];
      for (int64_t c = 0; c < m; c++) r[j * m + c] = (float)(2.0 * s) * pb[j * m + c];
    }
    ds_gemm(1, 0, k, m, n, -2.0f, pg, k, pa, m, 1.0f, r, m);
  }
  rc = DS_OK;
done:
  if (rc) {
    ds_release(ra), ds_release(rb);
  } else {
    if (ga) *ga = ra;
    if (gb) *gb = rb;
  }
  ds_release(ca), ds_release(cb), ds_release(cg);
  return rc;
}
