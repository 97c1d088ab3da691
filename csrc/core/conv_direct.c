/* Direct stride-1 convolution: AVX2/FMA kernels over a zero-padded image copy. */
#include "conv_direct.h"
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
#define WT 6  /* taps per weight-gradient tile */
#define WC 16 /* output channels per weight-gradient tile (2 vectors) */

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
  d->co16 = (int)round_up(co, WC);
  d->mplane = odd_lines((int64_t)d->oh * d->ow);
  /* tap offsets are ints: an image too large for them takes the im2col path */
  if (c * d->plane + (int64_t)kh * d->wp + d->qr >= INT32_MAX / 2) return 1;
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
/* padded copy, the gradient transposed (q x co16), the masked gradient (co x oh x ow),
 * a zero row for the taps past kk */
int64_t ds_cdir_wgrad_scratch(const ds_cdir *d) {
  return d->pad_size + d->q * d->co16 + d->co * d->mplane + d->q + 8;
}

#if CDIR_COMPILED
/* copies the interior rows of the image into the padded copy (padding stays zero) */
static void pad_copy(const ds_cdir *d, const float *x, int64_t xplane, int64_t xrow, float *xp) {
  for (int ci = 0; ci < d->c; ci++)
    for (int y = 0; y < d->h; y++)
      memcpy(xp + ci * d->plane + (int64_t)(y + d->ph) * d->wp + d->pw, x + ci * xplane + y * xrow,
             sizeof(float) * (size_t)d->w);
}

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
          dst[k] = v < 0.0f ? 0.0f : v; /* NaN stays NaN */
        }
      else
        for (int k = 0; k < d->ow; k++) dst[k] = src[k] + bo;
    }
  }
#else
  (void)d, (void)x, (void)xplane, (void)xrow, (void)bias, (void)relu, (void)y, (void)scratch;
#endif
}

/* gt[q][o] = masked[o][y][x] at wide position q = y*wp + x: 8 positions x 8 channels at
 * a time through an in-register transpose, the edges element by element */
static void transpose_grad(const ds_cdir *d, const float *masked, float *gt) {
  int o8 = 0;
#if CDIR_COMPILED
  o8 = d->co / 8 * 8;
  for (int r = 0; r < d->oh; r++)
    for (int k = 0; k + 8 <= d->ow; k += 8)
      for (int o = 0; o < o8; o += 8) {
        const float *src = masked + (int64_t)o * d->mplane + (int64_t)r * d->ow + k;
        __m256 v0 = _mm256_loadu_ps(src), v1 = _mm256_loadu_ps(src + d->mplane);
        __m256 v2 = _mm256_loadu_ps(src + 2 * d->mplane), v3 = _mm256_loadu_ps(src + 3 * d->mplane);
        __m256 v4 = _mm256_loadu_ps(src + 4 * d->mplane), v5 = _mm256_loadu_ps(src + 5 * d->mplane);
        __m256 v6 = _mm256_loadu_ps(src + 6 * d->mplane), v7 = _mm256_loadu_ps(src + 7 * d->mplane);
        __m256 t0 = _mm256_unpacklo_ps(v0, v1), t1 = _mm256_unpackhi_ps(v0, v1);
        __m256 t2 = _mm256_unpacklo_ps(v2, v3), t3 = _mm256_unpackhi_ps(v2, v3);
        __m256 t4 = _mm256_unpacklo_ps(v4, v5), t5 = _mm256_unpackhi_ps(v4, v5);
        __m256 t6 = _mm256_unpacklo_ps(v6, v7), t7 = _mm256_unpackhi_ps(v6, v7);
        __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        float *t = gt + ((int64_t)r * d->wp + k) * d->co16 + o;
        int64_t ld = d->co16;
        _mm256_storeu_ps(t, _mm256_permute2f128_ps(u0, u4, 0x20));
        _mm256_storeu_ps(t + ld, _mm256_permute2f128_ps(u1, u5, 0x20));
        _mm256_storeu_ps(t + 2 * ld, _mm256_permute2f128_ps(u2, u6, 0x20));
        _mm256_storeu_ps(t + 3 * ld, _mm256_permute2f128_ps(u3, u7, 0x20));
        _mm256_storeu_ps(t + 4 * ld, _mm256_permute2f128_ps(u0, u4, 0x31));
        _mm256_storeu_ps(t + 5 * ld, _mm256_permute2f128_ps(u1, u5, 0x31));
        _mm256_storeu_ps(t + 6 * ld, _mm256_permute2f128_ps(u2, u6, 0x31));
        _mm256_storeu_ps(t + 7 * ld, _mm256_permute2f128_ps(u3, u7, 0x31));
      }
#endif
  for (int r = 0; r < d->oh; r++)
    for (int k = 0; k < d->ow; k++) {
      /* what the blocks above did not cover: the last ow % 8 positions, channels past o8 */
      int o0 = k < d->ow / 8 * 8 ? o8 : 0;
      float *t = gt + ((int64_t)r * d->wp + k) * d->co16;
      const float *src = masked + (int64_t)r * d->ow + k;
      for (int o = o0; o < d->co; o++) t[o] = src[o * d->mplane];
    }
}

const float *ds_cdir_grad_layouts(const ds_cdir *d, const float *gy, const float *yrelu, float *gb,
                                  int transposed, float *scratch) {
  float *gt = scratch + d->pad_size, *masked = gt + d->q * d->co16;
  int64_t ohw = (int64_t)d->oh * d->ow;
  for (int o = 0; o < d->co; o++) {
    const float *g = gy + o * ohw, *m = yrelu ? yrelu + o * ohw : NULL;
    float *mk = masked + o * d->mplane, s = 0.0f;
    /* simd reductions: a plain float sum would be kept in order, one lane at a time */
    if (m) {
#pragma omp simd reduction(+ : s)
      for (int64_t k = 0; k < ohw; k++) {
        float gv = g[k], v = m[k] > 0.0f ? gv : 0.0f;
        mk[k] = v, s += v;
      }
    } else {
#pragma omp simd reduction(+ : s)
      for (int64_t k = 0; k < ohw; k++) mk[k] = g[k], s += g[k];
    }
    if (gb) gb[o] += s;
  }
  if (transposed) transpose_grad(d, masked, gt);
  return masked;
}

#if CDIR_COMPILED
/* out[r][0..16) = sum over valid wide positions q of x_r[q] * gt[q][0..16): six taps by
 * sixteen channels in twelve accumulators, held over the whole image */
__attribute__((noinline)) static void wgrad_tile(const float *const xr[WT], const float *gt, int64_t gts, int oh,
                                                 int ow, int wp, float *out) {
  __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
  __m256 a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
  const float *x0 = xr[0], *x1 = xr[1], *x2 = xr[2], *x3 = xr[3], *x4 = xr[4], *x5 = xr[5];
  for (int y = 0; y < oh; y++)
    for (int64_t q = (int64_t)y * wp, end = q + ow; q < end; q++) {
      const float *g = gt + q * gts;
      __m256 g0 = _mm256_loadu_ps(g), g1 = _mm256_loadu_ps(g + 8);
      __m256 v = _mm256_broadcast_ss(x0 + q);
      a00 = _mm256_fmadd_ps(v, g0, a00), a01 = _mm256_fmadd_ps(v, g1, a01);
      v = _mm256_broadcast_ss(x1 + q);
      a10 = _mm256_fmadd_ps(v, g0, a10), a11 = _mm256_fmadd_ps(v, g1, a11);
      v = _mm256_broadcast_ss(x2 + q);
      a20 = _mm256_fmadd_ps(v, g0, a20), a21 = _mm256_fmadd_ps(v, g1, a21);
      v = _mm256_broadcast_ss(x3 + q);
      a30 = _mm256_fmadd_ps(v, g0, a30), a31 = _mm256_fmadd_ps(v, g1, a31);
      v = _mm256_broadcast_ss(x4 + q);
      a40 = _mm256_fmadd_ps(v, g0, a40), a41 = _mm256_fmadd_ps(v, g1, a41);
      v = _mm256_broadcast_ss(x5 + q);
      a50 = _mm256_fmadd_ps(v, g0, a50), a51 = _mm256_fmadd_ps(v, g1, a51);
    }
  _mm256_storeu_ps(out, a00), _mm256_storeu_ps(out + 8, a01), _mm256_storeu_ps(out + 16, a10);
  _mm256_storeu_ps(out + 24, a11), _mm256_storeu_ps(out + 32, a20), _mm256_storeu_ps(out + 40, a21);
  _mm256_storeu_ps(out + 48, a30), _mm256_storeu_ps(out + 56, a31), _mm256_storeu_ps(out + 64, a40);
  _mm256_storeu_ps(out + 72, a41), _mm256_storeu_ps(out + 80, a50), _mm256_storeu_ps(out + 88, a51);
}
#endif

/* gw[o][k] += sum over positions of gy[o] * (the padded image read from tap k's offset),
 * in register tiles of 6 taps x 16 channels: no im2col, no packing */
void ds_cdir_wgrad(const ds_cdir *d, const float *x, float *gw, float *scratch) {
#if CDIR_COMPILED
  float *xp = scratch, *gt = scratch + d->pad_size;
  const float *zero = gt + d->q * d->co16 + d->co * d->mplane; /* cleared, never written */
  pad_copy(d, x, (int64_t)d->h * d->w, d->w, xp);
  for (int ct = 0; ct < d->co16 / WC; ct++) {
    int cols = d->co - ct * WC < WC ? d->co - ct * WC : WC;
    for (int64_t k0 = 0; k0 < d->kk; k0 += WT) {
      const float *xr[WT];
      for (int r = 0; r < WT; r++) xr[r] = k0 + r < d->kk ? xp + d->off[k0 + r] : zero;
      float out[WT * WC];
      wgrad_tile(xr, gt + ct * WC, d->co16, d->oh, d->ow, d->wp, out);
      for (int r = 0; r < WT && k0 + r < d->kk; r++)
        for (int c = 0; c < cols; c++) gw[(int64_t)(ct * WC + c) * d->kk + k0 + r] += out[r * WC + c];
    }
  }
#else
  (void)d, (void)x, (void)gw, (void)scratch;
#endif
}
