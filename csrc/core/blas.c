/* The only file that includes cblas.h. */
#include "blas.h"
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

/* Tiny products (a watermark projection: 1 x 512 times 512 x 32) cost OpenBLAS more
 * in thread start-up and packing than in arithmetic: plain loops, vectorised along
 * contiguous rows, in float as BLAS does. */
static int small_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                      const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  if (m * n * k > (1 << 15) || (ta && tb)) return 0;
  for (int64_t i = 0; i < m; i++) {
    float *ci = c + i * ldc;
    for (int64_t j = 0; j < n; j++) ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
  }
  if (!tb) /* C[i,:] += alpha A(i,p) B[p,:] */
    for (int64_t i = 0; i < m; i++) {
      float *restrict ci = c + i * ldc;
      for (int64_t p = 0; p < k; p++) {
        float av = alpha * (ta ? a[p * lda + i] : a[i * lda + p]);
        const float *restrict bp = b + p * ldb;
        for (int64_t j = 0; j < n; j++) ci[j] += av * bp[j];
      }
    }
  else /* C[i,j] += alpha dot(A[i,:], B[j,:]), four j at a time: independent sums */
    for (int64_t i = 0; i < m; i++) {
      const float *restrict ai = a + i * lda;
      float *restrict ci = c + i * ldc;
      int64_t j = 0;
      for (; j + 4 <= n; j += 4) {
        const float *restrict b0 = b + j * ldb, *restrict b1 = b0 + ldb, *restrict b2 = b1 + ldb, *restrict b3 = b2 + ldb;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int64_t p = 0; p < k; p++) {
          float av = ai[p];
          s0 += av * b0[p], s1 += av * b1[p], s2 += av * b2[p], s3 += av * b3[p];
        }
        ci[j] += alpha * s0, ci[j + 1] += alpha * s1, ci[j + 2] += alpha * s2, ci[j + 3] += alpha * s3;
      }
      for (; j < n; j++) {
        const float *restrict bj = b + j * ldb;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t p = 0; p < k; p++) acc += ai[p] * bj[p];
        ci[j] += alpha * acc;
      }
    }
  return 1;
}

void ds_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
             int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (use_naive || k == 0) {
    ds_gemm_naive(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (small_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
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
