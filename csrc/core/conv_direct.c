/* Direct stride-1 convolution: AVX2/FMA kernels over a zero-padded image copy. */
#include "conv_direct.h"
#include "blas.h"
#include <stdlib.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define CDIR_COMPILED 1
#else
#define CDIR_COMPILED 0
#endif

#define MR 4  /* output channels per forward tile */
#define NR 24 /* wide positions per forward tile (3 vectors) */

static int enabled = 1;

void ds_cdir_set_enabled(int on) { enabled = on; }
int ds_cdir_enabled(void) { return CDIR_COMPILED && enabled; }

int ds_cdir_fits(int kh, int kw, int sh, int sw, int ph, int pw) {
  /* padding beyond k-1 would leave the input gradient's full convolution a negative pad */
  return ds_cdir_enabled() && sh == 1 && sw == 1 && ph <= kh - 1 && pw <= kw - 1;
}

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

/* a stride of an odd number of 64-byte lines: successive planes or rows fall in
 * different L1 sets instead of all in one when the size is a multiple of 4 KB */
static int64_t odd_lines(int64_t floats) {
  int64_t s = round_up(floats, 16);
  return (s / 16) % 2 ? s : s + 16;
}

int ds_cdir_init(ds_cdir *d, int c, int h, int w, int co, int kh, int kw, int ph, int pw, const float *wt,
                 int flip) {
  memset(d, 0, sizeof *d);
  d->c = c, d->h = h, d->w = w, d->co = co, d->kh = kh, d->kw = kw, d->ph = ph, d->pw = pw;
  d->hp = h + 2 * ph, d->wp = w + 2 * pw;
  d->oh = d->hp - kh + 1, d->ow = d->wp - kw + 1;
  d->co4 = (int)round_up(co, MR);
  d->kk = (int64_t)c * kh * kw;
  d->plane = odd_lines((int64_t)d->hp * d->wp);
  d->pad_size = c * d->plane + d->wp + 64;
  d->q = (int64_t)d->oh * d->wp, d->qr = round_up(d->q, NR);
  d->gys = odd_lines(round_up(d->q, 8));
  d->off = malloc(sizeof(int) * (size_t)d->kk);
  if (!d->off) return -1;
  for (int ci = 0; ci < c; ci++)
    for (int i = 0; i < kh; i++)
      for (int j = 0; j < kw; j++) d->off[(ci * kh + i) * kw + j] = (int)(ci * d->plane + i * d->wp + j);
  if (!wt) return 0;
  d->wpack = calloc((size_t)(d->co4 * d->kk), sizeof(float));
  if (!d->wpack) {
    ds_cdir_free(d);
    return -1;
  }
  for (int o = 0; o < co; o++)
    for (int ci = 0; ci < c; ci++)
      for (int i = 0; i < kh; i++)
        for (int j = 0; j < kw; j++) {
          float v = flip ? wt[(((int64_t)ci * co + o) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)]
                         : wt[(((int64_t)o * c + ci) * kh + i) * kw + j];
          int64_t k = (ci * kh + i) * kw + j;
          d->wpack[((o / MR) * d->kk + k) * MR + o % MR] = v;
        }
  return 0;
}

void ds_cdir_free(ds_cdir *d) {
  free(d->off), free(d->wpack);
  d->off = NULL, d->wpack = NULL;
}

int64_t ds_cdir_forward_scratch(const ds_cdir *d) { return d->pad_size + d->co4 * d->qr; }
int64_t ds_cdir_wgrad_scratch(const ds_cdir *d) { return d->pad_size + d->co4 * d->gys + d->kk * d->q; }
void ds_cdir_clear(float *scratch, int64_t n) { memset(scratch, 0, sizeof(float) * (size_t)n); }

/* copies the interior rows of the image into the padded copy (padding stays zero) */
static void pad_copy(const ds_cdir *d, const float *x, int64_t xplane, int64_t xrow, float *xp) {
  for (int ci = 0; ci < d->c; ci++)
    for (int y = 0; y < d->h; y++)
      memcpy(xp + ci * d->plane + (int64_t)(y + d->ph) * d->wp + d->pw, x + ci * xplane + y * xrow,
             sizeof(float) * (size_t)d->w);
}

#if CDIR_COMPILED
/* c[4 x 24] = sum over k of a[k][0..3] (x) b[off[k] .. off[k]+24). Twelve accumulators,
 * three B vectors and one broadcast: all sixteen ymm registers, no spills. */
__attribute__((noinline)) static void fwd_tile(int64_t kk, const float *a, const float *b, const int *off,
                                               float *c, int64_t ldc) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
  __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
  for (int64_t k = 0; k < kk; k++, a += MR) {
    const float *bk = b + off[k];
    __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8), b2 = _mm256_loadu_ps(bk + 16);
    __m256 av = _mm256_broadcast_ss(a);
    c00 = _mm256_fmadd_ps(av, b0, c00), c01 = _mm256_fmadd_ps(av, b1, c01), c02 = _mm256_fmadd_ps(av, b2, c02);
    av = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(av, b0, c10), c11 = _mm256_fmadd_ps(av, b1, c11), c12 = _mm256_fmadd_ps(av, b2, c12);
    av = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(av, b0, c20), c21 = _mm256_fmadd_ps(av, b1, c21), c22 = _mm256_fmadd_ps(av, b2, c22);
    av = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(av, b0, c30), c31 = _mm256_fmadd_ps(av, b1, c31), c32 = _mm256_fmadd_ps(av, b2, c32);
  }
  _mm256_storeu_ps(c, c00), _mm256_storeu_ps(c + 8, c01), _mm256_storeu_ps(c + 16, c02);
  c += ldc;
  _mm256_storeu_ps(c, c10), _mm256_storeu_ps(c + 8, c11), _mm256_storeu_ps(c + 16, c12);
  c += ldc;
  _mm256_storeu_ps(c, c20), _mm256_storeu_ps(c + 8, c21), _mm256_storeu_ps(c + 16, c22);
  c += ldc;
  _mm256_storeu_ps(c, c30), _mm256_storeu_ps(c + 8, c31), _mm256_storeu_ps(c + 16, c32);
}

#endif

void ds_cdir_forward(const ds_cdir *d, const float *x, int64_t xplane, int64_t xrow, const float *bias,
                     int relu, float *y, float *scratch) {
#if CDIR_COMPILED
  float *xp = scratch, *yb = scratch + d->pad_size;
  pad_copy(d, x, xplane, xrow, xp);
  /* position blocks outside, channel tiles inside: a block's taps stay in L1 */
  for (int t = 0; t < d->co4 / MR; t++)
    for (int64_t q = 0; q < d->qr; q += NR)
      fwd_tile(d->kk, d->wpack + t * d->kk * MR, xp + q, d->off, yb + t * MR * d->qr + q, d->qr);
  for (int o = 0; o < d->co; o++) {
    float bo = bias ? bias[o] : 0.0f;
    for (int r = 0; r < d->oh; r++) {
      const float *src = yb + o * d->qr + (int64_t)r * d->wp;
      float *dst = y + ((int64_t)o * d->oh + r) * d->ow;
      if (relu)
        for (int k = 0; k < d->ow; k++) {
          float v = src[k] + bo;
          dst[k] = v > 0.0f ? v : 0.0f;
        }
      else
        for (int k = 0; k < d->ow; k++) dst[k] = src[k] + bo;
    }
  }
#else
  (void)d, (void)x, (void)xplane, (void)xrow, (void)bias, (void)relu, (void)y, (void)scratch;
#endif
}

float *ds_cdir_wide_grad(const ds_cdir *d, const float *gy, const float *yrelu, float *gb, float *scratch) {
  float *gw = scratch + d->pad_size;
  for (int o = 0; o < d->co; o++) {
    double total = 0;
    for (int r = 0; r < d->oh; r++) {
      int64_t at = ((int64_t)o * d->oh + r) * d->ow;
      const float *g = gy + at, *m = yrelu ? yrelu + at : NULL;
      float *dst = gw + o * d->gys + (int64_t)r * d->wp, s = 0.0f;
      if (m)
        for (int k = 0; k < d->ow; k++) {
          float v = m[k] > 0.0f ? g[k] : 0.0f;
          dst[k] = v, s += v;
        }
      else
        for (int k = 0; k < d->ow; k++) dst[k] = g[k], s += g[k];
      for (int k = d->ow; k < d->wp; k++) dst[k] = 0.0f;
      total += s;
    }
    if (gb) gb[o] += (float)total;
  }
  return gw;
}

/* gw += G (co x q, the wide gradient) times T^T, where row k of T (kk x q) is the padded
 * image read from tap k's offset: one contiguous copy per row, then one GEMM. (Dot
 * products straight from the padded copy, without T, ran slower than OpenBLAS on it.) */
void ds_cdir_wgrad(const ds_cdir *d, const float *x, float *gw, float *scratch) {
  float *xp = scratch, *g = scratch + d->pad_size, *taps = g + d->co4 * d->gys;
  pad_copy(d, x, (int64_t)d->h * d->w, d->w, xp);
  for (int64_t k = 0; k < d->kk; k++) memcpy(taps + k * d->q, xp + d->off[k], sizeof(float) * (size_t)d->q);
  ds_gemm(0, 1, d->co, d->kk, d->q, 1.0f, g, d->gys, taps, d->q, 1.0f, gw, d->kk);
}
