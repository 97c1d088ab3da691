/* The one GEMM of deepsigns. C = alpha * op(A) op(B) + beta * C, row-major,
 * op(X) = X or X^T. Goes to OpenBLAS's cblas_sgemm, to plain loops for tiny products
 * and small ones with a side <= 16 (faster there), or to the naive loop when
 * ds_gemm_use_naive(1) was called (used by the specs to cross-check). */
#ifndef DS_BLAS_H
#define DS_BLAS_H

#include <stdint.h>

void ds_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
             const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
             int64_t ldc);
void ds_gemm_naive(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                   int64_t ldc);
void ds_gemm_use_naive(int on);
int ds_gemm_is_naive(void);

/* GFLOP/s of cblas_sgemm called directly on m x k times k x n (the benchmark's
 * reference beside ds.matmul); -1 when out of memory. */
double ds_bench_raw_sgemm(int64_t m, int64_t n, int64_t k, int reps);

/* Threads for OpenBLAS and for the core's own OpenMP loops. */
void ds_set_num_threads(int n);
int ds_get_num_threads(void);
/* Inside a parallel region each thread runs its own single-threaded GEMMs:
 * ds_blas_serial_begin() returns the OpenBLAS thread count to restore with
 * ds_blas_serial_end(). */
int ds_blas_serial_begin(void);
void ds_blas_serial_end(int saved);

#endif
