/* The only file that includes cblas.h. */
#include "blas.h"
#include <cblas.h>

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

void ds_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
             int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (use_naive || k == 0) {
    ds_gemm_naive(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              (blasint)m, (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c,
              (blasint)ldc);
}

#ifdef _OPENMP
#include <omp.h>
#endif

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
