/* The only file that includes cblas.h. */
#include "blas.h"
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "simd.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static int use_naive;

void ds_gemm_use_naive(int on) { use_naive = on; }
int ds_gemm_is_naive(void) { return use_naive; }

void ds_gemm_naive(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                   int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double acc = 0;
      for (int64_t p = 0; p < k; p++) {
        float av = ta ? a[p * lda + i] : a[i * lda + p];
        float bv = tb ? b[j * ldb + p] : b[p * ldb + j];
        acc += (double)av * bv;
      }
      float *cij = &c[i * ldc + j];
      *cij = (float)(alpha * acc + (beta == 0.0f ? 0.0 : (double)beta * *cij));
    }
}

static void zero_rows(float *c, int64_t m, int64_t n, int64_t ldc) {
  if (ldc == n && m * n < (1 << 16)) {
    memset(c, 0, sizeof(float) * (size_t)(m * n));
    return;
  }
#pragma omp parallel for schedule(static) if (m * n >= (1 << 16))
  for (int64_t i = 0; i < m; i++) memset(c + i * ldc, 0, sizeof(float) * (size_t)n);
}

/* Products with a tiny side (the MLP's 10-way output layer: 128 x 512 times 512 x 10,
 * and its two gradients) or tiny overall (a watermark projection: 1 x 512 times
 * 512 x 32) cost OpenBLAS more in thread start-up and packing than in arithmetic
 * (16-22 GFLOP/s on the output layer's three): plain loops vectorised along
 * contiguous rows, in float as BLAS does, split by rows of C between the threads. */
typedef struct {
  int ta, tb;
  int64_t m, n, k, lda, ldb, ldc;
  float alpha, beta;
  const float *a, *b;
  float *c;
} gemm_job;

/* C's element from its sum: alpha s + beta c, where beta = 0 ignores c (BLAS: it may be NaN) */
static inline float epilogue(const gemm_job *g, float s, float c) {
  return g->alpha * s + (g->beta == 0.0f ? 0.0f : g->beta * c);
}

/* Vectors of eight floats (simd.h): a panel of up to 64 columns of C whose sums stay
 * in registers (a float array here lived on the stack: a load and a store per product). */
enum { PANEL = 64 };

/* C[i, j:j0+8nv] = alpha sum_p A(i,p) B[p, j0:j0+8nv] + beta C[...]: the sums of
 * columns j0.. in nv vector registers, stored from column j >= j0 on (the last panel of
 * a row is moved left to end at the row's end; its columns before j belong to the
 * panel before it). nv is a constant at each call, so the loops over it unroll. */
static inline __attribute__((always_inline)) void panel_of(const gemm_job *g, int64_t i, int64_t j0, int64_t j,
                                                           const int nv) {
  const float *bp = g->b + j0;
  v8 s[PANEL / 8] = {{0}};
  for (int64_t p = 0; p < g->k; p++, bp += g->ldb) {
    float av = g->ta ? g->a[p * g->lda + i] : g->a[i * g->lda + p];
    const v8 *bv = (const v8 *)bp;
    for (int q = 0; q < nv; q++) s[q] += av * bv[q];
  }
  const float alpha = g->alpha, beta = g->beta;
  float *ci = g->c + i * g->ldc;
  if (j == j0) {
    v8 *cv = (v8 *)(ci + j0);
    if (beta == 0.0f)
      for (int q = 0; q < nv; q++) cv[q] = alpha * s[q];
    else
      for (int q = 0; q < nv; q++) cv[q] = alpha * s[q] + beta * cv[q];
    return;
  }
  float acc[PANEL];
  memcpy(acc, s, sizeof(float) * 8 * (size_t)nv);
  for (int64_t c = j; c < j0 + 8 * nv; c++) ci[c] = epilogue(g, acc[c - j0], ci[c]);
}

/* Row i of C in panels of 8 nv columns (n >= 8 nv) */
static inline __attribute__((always_inline)) void panel_row(const gemm_job *g, int64_t i, const int nv) {
  const int64_t w = 8 * nv;
  int64_t j = 0;
  for (; j + w <= g->n; j += w) panel_of(g, i, j, j, nv);
  if (j < g->n) panel_of(g, i, g->n - w, j, nv);
}

/* Rows narrower than 32 columns (only in tiny products) */
static void narrow_row(const gemm_job *g, int64_t i) {
  float acc[PANEL] = {0};
  const float *bp = g->b;
  for (int64_t p = 0; p < g->k; p++, bp += g->ldb) {
    float av = g->ta ? g->a[p * g->lda + i] : g->a[i * g->lda + p];
    for (int64_t j = 0; j < g->n; j++) acc[j] += av * bp[j];
  }
  float *ci = g->c + i * g->ldc;
  for (int64_t j = 0; j < g->n; j++) ci[j] = epilogue(g, acc[j], ci[j]);
}

/* C[i,j] = alpha dot(A[i,:], B[j,:]) + beta C[i,j], four j at a time: independent sums */
static void dots(const gemm_job *g, int64_t i) {
  const float *restrict ai = g->a + i * g->lda;
  float *restrict ci = g->c + i * g->ldc;
  float sums[4];
  for (int64_t j = 0; j < g->n; j += 4) {
    int w = g->n - j < 4 ? (int)(g->n - j) : 4;
    const float *b0 = g->b + j * g->ldb, *b1 = w > 1 ? b0 + g->ldb : b0, *b2 = w > 2 ? b0 + 2 * g->ldb : b0,
                *b3 = w > 3 ? b0 + 3 * g->ldb : b0;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t p = 0; p < g->k; p++) {
      float av = ai[p];
      s0 += av * b0[p], s1 += av * b1[p], s2 += av * b2[p], s3 += av * b3[p];
    }
    sums[0] = s0, sums[1] = s1, sums[2] = s2, sums[3] = s3;
    for (int q = 0; q < w; q++) ci[j + q] = epilogue(g, sums[q], ci[j + q]);
  }
}

static void skinny_row(const gemm_job *g, int64_t i) {
  if (g->tb) {
    dots(g, i);
  } else if (g->n >= PANEL) {
    panel_row(g, i, PANEL / 8);
  } else if (g->n >= PANEL / 2) { /* a watermark projection's 32 bits */
    panel_row(g, i, PANEL / 16);
  } else {
    narrow_row(g, i);
  }
}

/* Measured against OpenBLAS on 2 threads: ahead on products with a side <= 16 up to
 * about a million multiply-adds (the output layer's three: 2.3x, 1.2x, 2x), behind
 * beyond that (OpenBLAS keeps a block of B in registers across rows; these loops read
 * B once per row of C). */
static int skinny_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                       const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  int64_t size = m * n * k;
  int tiny_side = (m <= 16 || n <= 16 || k <= 16) && (tb || n >= PANEL);
  if ((ta && tb) || size > (tiny_side ? (1 << 20) : (1 << 15))) return 0;
  gemm_job g = {ta, tb, m, n, k, lda, ldb, ldc, alpha, beta, a, b, c};
  if (size < (1 << 16) || m == 1) { /* not worth a parallel region */
    for (int64_t i = 0; i < m; i++) skinny_row(&g, i);
    return 1;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; i++) skinny_row(&g, i);
  return 1;
}

void ds_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
             int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (use_naive || k == 0) {
    ds_gemm_naive(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (skinny_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
  if (beta == 0.0f) {
    /* OpenBLAS's own beta = 0 pass is slow (4x a memset, 0.2 ms on the MLP's weight
     * gradient): zero C here, in parallel by row blocks for large C, and accumulate */
    zero_rows(c, m, n, ldc);
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              (blasint)m, (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c,
              (blasint)ldc);
}

static int num_threads = 0; /* 0: not set yet, OpenBLAS's own default */

void ds_set_num_threads(int n) {
  num_threads = n;
  openblas_set_num_threads(n);
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
}

int ds_get_num_threads(void) { return num_threads ? num_threads : openblas_get_num_threads(); }

int ds_blas_serial_begin(void) {
  int saved = openblas_get_num_threads();
  if (saved != 1) openblas_set_num_threads(1);
  return saved;
}

void ds_blas_serial_end(int saved) {
  if (saved != 1) openblas_set_num_threads(saved);
}

double ds_bench_raw_sgemm(int64_t m, int64_t n, int64_t k, int reps) {
  float *a = malloc(sizeof(float) * (size_t)(m * k)), *b = malloc(sizeof(float) * (size_t)(k * n));
  float *c = malloc(sizeof(float) * (size_t)(m * n));
  if (!a || !b || !c) {
    free(a), free(b), free(c);
    return -1;
  }
  for (int64_t i = 0; i < m * k; i++) a[i] = (float)(i % 7) * 0.1f;
  for (int64_t i = 0; i < k * n; i++) b[i] = (float)(i % 5) * 0.1f;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, 1.0f, a, (blasint)k, b,
              (blasint)n, 0.0f, c, (blasint)n); /* warm-up */
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int r = 0; r < reps; r++)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, 1.0f, a, (blasint)k, b,
                (blasint)n, 0.0f, c, (blasint)n);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  free(a), free(b), free(c);
  return 2.0 * (double)m * (double)n * (double)k * reps / secs / 1e9;
}
