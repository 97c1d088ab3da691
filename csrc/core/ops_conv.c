/* 2-D convolution (direct for stride 1 on AVX2, else im2col + GEMM) and pooling, NCHW,
 * with their gradients. */
#include "blas.h"
#include "conv_direct.h"
#include "error.h"
#include "ops.h"
#include <float.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int out_size(int64_t in, int k, int s, int p) { return (int)((in + 2 * p - k) / s + 1); }

static int check_params(const char *op, ds_tensor *x, ds_conv_params p) {
  char s1[128];
  if (x->ndim != 4)
    return ds_error("%s: input must be N x C x H x W, got %s", op, ds_shape_str(x, s1, sizeof s1));
  if (p.kh < 1 || p.kw < 1 || p.sh < 1 || p.sw < 1 || p.ph < 0 || p.pw < 0)
    return ds_error("%s: kernel and stride must be >= 1 and padding >= 0", op);
  if (x->shape[2] + 2 * p.ph < p.kh || x->shape[3] + 2 * p.pw < p.kw)
    return ds_error("%s: kernel %dx%d larger than the padded input %s", op, p.kh, p.kw,
                    ds_shape_str(x, s1, sizeof s1));
  return DS_OK;
}

/* col: (C*kh*kw) rows of OH*OW values for one image x: C x H x W, written with row
 * stride ld (so that several images sit side by side in one col matrix). */
static void im2col(const float *x, int64_t c, int64_t h, int64_t w, ds_conv_params p, int oh, int ow,
                   float *col, int64_t ld) {
  for (int64_t ci = 0; ci < c; ci++)
    for (int i = 0; i < p.kh; i++)
      for (int j = 0; j < p.kw; j++) {
        float *row = col + ((ci * p.kh + i) * p.kw + j) * ld;
        /* output columns whose input column ix = xo*sw - pw + j lies inside [0, w) */
        int lo = 0, hi = ow;
        while (lo < ow && (int64_t)lo * p.sw - p.pw + j < 0) lo++;
        while (hi > lo && (int64_t)(hi - 1) * p.sw - p.pw + j >= w) hi--;
        for (int y = 0; y < oh; y++) {
          int64_t iy = (int64_t)y * p.sh - p.ph + i;
          float *r = row + (int64_t)y * ow;
          if (iy < 0 || iy >= h) {
            memset(r, 0, sizeof(float) * (size_t)ow);
            continue;
          }
          const float *src = x + (ci * h + iy) * w - p.pw + j;
          for (int xo = 0; xo < lo; xo++) r[xo] = 0.0f;
          if (p.sw == 1)
            memcpy(r + lo, src + lo, sizeof(float) * (size_t)(hi - lo));
          else
            for (int xo = lo; xo < hi; xo++) r[xo] = src[(int64_t)xo * p.sw];
          for (int xo = hi; xo < ow; xo++) r[xo] = 0.0f;
        }
      }
}

/* accumulates col (row stride ld) back into the image gradient gx: C x H x W */
static void col2im(const float *col, int64_t c, int64_t h, int64_t w, ds_conv_params p, int oh, int ow,
                   float *gx, int64_t ld) {
  for (int64_t ci = 0; ci < c; ci++)
    for (int i = 0; i < p.kh; i++)
      for (int j = 0; j < p.kw; j++) {
        const float *row = col + ((ci * p.kh + i) * p.kw + j) * ld;
        int lo = 0, hi = ow;
        while (lo < ow && (int64_t)lo * p.sw - p.pw + j < 0) lo++;
        while (hi > lo && (int64_t)(hi - 1) * p.sw - p.pw + j >= w) hi--;
        for (int y = 0; y < oh; y++) {
          int64_t iy = (int64_t)y * p.sh - p.ph + i;
          if (iy < 0 || iy >= h) continue;
          float *dst = gx + (ci * h + iy) * w - p.pw + j;
          const float *r = row + (int64_t)y * ow;
          if (p.sw == 1)
            for (int xo = lo; xo < hi; xo++) dst[xo] += r[xo];
          else
            for (int xo = lo; xo < hi; xo++) dst[(int64_t)xo * p.sw] += r[xo];
        }
      }
}

static int check_conv(ds_tensor *x, ds_tensor *w, ds_tensor *b, ds_conv_params *p) {
  char s1[128], s2[128];
  if (w->ndim != 4 || x->ndim != 4 || x->shape[1] != w->shape[1] ||
      (b && (b->ndim != 1 || b->shape[0] != w->shape[0])))
    return ds_error("conv2d: size mismatch, input: %s, weight: %s (want N x C x H x W and "
                    "out x C x kh x kw%s)",
                    ds_shape_str(x, s1, sizeof s1), ds_shape_str(w, s2, sizeof s2),
                    b ? ", bias of size out" : "");
  p->kh = (int)w->shape[2], p->kw = (int)w->shape[3];
  return check_params("conv2d", x, *p);
}

/* The batch is split into one contiguous range of images per thread; each thread
 * runs im2col and its own single-threaded GEMMs, so no core waits on another. */
typedef struct conv_job {
  ds_conv_params p;
  int64_t n, c, h, w, co, kk, ohw, col_size;
  int oh, ow;
  const float *x, *wt, *gy;
  float *y, *gx;
  const float *bias;
  const float *yrelu; /* backward of a fused ReLU: its output, whose zeros mask gy */
  int relu;           /* forward: apply a ReLU to the output */
  const float *wflip; /* c x (co*kh*kw): set when gx is a full convolution of gy */
  const ds_cdir *dir, *dir_gx; /* direct path: the layer's plan, the input gradient's */
} conv_job;

/* Direct path: the scratch comes zeroed (padding and slack stay so). */
static void direct_forward_range(const conv_job *j, int64_t lo, int64_t hi, float *scratch, int t, void *ctx) {
  (void)t, (void)ctx;
  for (int64_t i = lo; i < hi; i++)
    ds_cdir_forward(j->dir, j->x + i * j->c * j->h * j->w, j->h * j->w, j->w, j->bias, j->relu,
                    j->y + i * j->co * j->ohw, scratch);
}

typedef struct grad_slices grad_slices;
static void direct_backward_range(const conv_job *j, int64_t lo, int64_t hi, float *scratch, int t, void *ctx);

/* One image at a time: GEMMs on (co x ohw) slices write straight into y and gx. */
static void conv_forward_range(const conv_job *j, int64_t lo, int64_t hi, float *col, int t, void *ctx) {
  (void)t, (void)ctx;
  for (int64_t i = lo; i < hi; i++) {
    float *yi = j->y + i * j->co * j->ohw;
    im2col(j->x + i * j->c * j->h * j->w, j->c, j->h, j->w, j->p, j->oh, j->ow, col, j->ohw);
    float beta = 0.0f;
    if (j->bias) { /* start from the bias; the GEMM adds onto it */
      for (int64_t o = 0; o < j->co; o++)
        for (int64_t k = 0; k < j->ohw; k++) yi[o * j->ohw + k] = j->bias[o];
      beta = 1.0f;
    }
    ds_gemm(0, 0, j->co, j->ohw, j->kk, 1.0f, j->wt, j->kk, col, j->ohw, beta, yi, j->ohw);
    if (j->relu) /* while the image's output is still in cache */
      for (int64_t k = 0; k < j->co * j->ohw; k++) yi[k] = yi[k] < 0.0f ? 0.0f : yi[k]; /* NaN stays */
  }
}

/* per-thread weight and bias gradient slices */
struct grad_slices { float *gw, *gb; int64_t wsize; };

static void direct_backward_range(const conv_job *j, int64_t lo, int64_t hi, float *scratch, int t, void *ctx) {
  const grad_slices *sl = ctx;
  float *gw = sl->gw ? sl->gw + t * sl->wsize : NULL, *gb = sl->gb ? sl->gb + t * j->co : NULL;
  int64_t own = ds_cdir_wgrad_scratch(j->dir);
  float *gx_scratch = scratch + own;
  for (int64_t i = lo; i < hi; i++) {
    int64_t at = i * j->co * j->ohw;
    const float *g = ds_cdir_grad_layouts(j->dir, j->gy + at, j->yrelu ? j->yrelu + at : NULL, gb, gw != NULL,
                                          scratch);
    if (gw) ds_cdir_wgrad(j->dir, j->x + i * j->c * j->h * j->w, gw, scratch);
    if (j->dir_gx) /* a full convolution of the gradient with the flipped kernel */
      ds_cdir_forward(j->dir_gx, g, j->dir->mplane, j->ow, NULL, 0, j->gx + i * j->c * j->h * j->w, gx_scratch);
  }
}

static void conv_backward_range(const conv_job *j, int64_t lo, int64_t hi, float *col, int t, void *ctx) {
  const grad_slices *sl = ctx;
  float *gw = sl->gw ? sl->gw + t * sl->wsize : NULL, *gb = sl->gb ? sl->gb + t * j->co : NULL;
  float *masked = col + j->col_size; /* this image's gy through the fused ReLU */
  for (int64_t i = lo; i < hi; i++) {
    const float *gi = j->gy + i * j->co * j->ohw;
    if (j->yrelu) {
      const float *yi = j->yrelu + i * j->co * j->ohw;
      for (int64_t k = 0; k < j->co * j->ohw; k++) masked[k] = yi[k] > 0.0f ? gi[k] : 0.0f;
      gi = masked;
    }
    if (gb)
      for (int64_t o = 0; o < j->co; o++) {
        double s = 0;
        for (int64_t k = 0; k < j->ohw; k++) s += gi[o * j->ohw + k];
        gb[o] += (float)s;
      }
    if (gw) {
      im2col(j->x + i * j->c * j->h * j->w, j->c, j->h, j->w, j->p, j->oh, j->ow, col, j->ohw);
      ds_gemm(0, 1, j->co, j->kk, j->ohw, 1.0f, gi, j->ohw, col, j->ohw, 1.0f, gw, j->kk);
    }
    if (j->gx && j->wflip) { /* gx = gy padded by k-1-p, convolved with the flipped kernel */
      ds_conv_params q = {j->p.kh, j->p.kw, 1, 1, j->p.kh - 1 - j->p.ph, j->p.kw - 1 - j->p.pw};
      int64_t hw = j->h * j->w, kf = j->co * j->p.kh * j->p.kw;
      im2col(gi, j->co, j->oh, j->ow, q, (int)j->h, (int)j->w, col, hw);
      ds_gemm(0, 0, j->c, hw, kf, 1.0f, j->wflip, kf, col, hw, 0.0f, j->gx + i * j->c * hw, hw);
    } else if (j->gx) {
      ds_gemm(1, 0, j->kk, j->ohw, j->co, 1.0f, j->wt, j->kk, gi, j->ohw, 0.0f, col, j->ohw);
      col2im(col, j->c, j->h, j->w, j->p, j->oh, j->ow, j->gx + i * j->c * j->h * j->w, j->ohw);
    }
  }
}

static int thread_id(void);

/* Runs fn on the batch, image by image, handed out to the threads as they come free
 * (a fixed half each left one core waiting whenever the other was slowed); each thread
 * has its own zeroed buffer and single-threaded GEMMs. Returns nonzero when a buffer
 * could not be had (that thread's images are then not done). */
typedef void (*conv_range_fn)(const conv_job *j, int64_t lo, int64_t hi, float *col, int t, void *ctx);
static int run_parallel(const conv_job *j, int nt, conv_range_fn fn, void *ctx) {
  int failed = 0, saved = ds_blas_serial_begin();
#pragma omp parallel num_threads(nt)
  {
    int t = thread_id();
    float *col = calloc((size_t)(j->col_size + (j->yrelu ? j->co * j->ohw : 0) + 1), sizeof(float));
    if (!col) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < j->n; i++)
      if (col) fn(j, i, i + 1, col, t, ctx);
    free(col);
  }
  ds_blas_serial_end(saved);
  return failed;
}

static int threads_for(int64_t n) {
#ifdef _OPENMP
  int t = omp_get_max_threads();
  return t < n ? t : (int)(n > 0 ? n : 1);
#else
  (void)n;
  return 1;
#endif
}

static int thread_id(void) {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

static conv_job make_job(ds_tensor *x, ds_tensor *w, ds_conv_params p) {
  conv_job j = {0};
  j.p = p;
  j.n = x->shape[0], j.c = x->shape[1], j.h = x->shape[2], j.w = x->shape[3], j.co = w->shape[0];
  j.oh = out_size(j.h, p.kh, p.sh, p.ph), j.ow = out_size(j.w, p.kw, p.sw, p.pw);
  j.kk = j.c * p.kh * p.kw, j.ohw = (int64_t)j.oh * j.ow;
  j.col_size = j.kk * j.ohw;
  return j;
}

ds_tensor *ds_conv2d(ds_tensor *x, ds_tensor *w, ds_tensor *b, ds_conv_params p, int relu) {
  if (check_conv(x, w, b, &p)) return NULL;
  int nt = threads_for(x->shape[0]);
  conv_job j = make_job(x, w, p);
  ds_tensor *cx = ds_contiguous(x), *cw = ds_contiguous(w), *cb = b ? ds_contiguous(b) : NULL;
  ds_tensor *y = ds_tensor_empty(4, (int64_t[]){j.n, j.co, j.oh, j.ow});
  if (!cx || !cw || (b && !cb) || !y) {
    ds_release(y);
    y = NULL;
    goto done;
  }
  j.x = ds_data(cx), j.wt = ds_data(cw), j.bias = cb ? ds_data(cb) : NULL, j.y = ds_data(y);
  j.relu = relu;
  ds_cdir dir;
  int direct = ds_cdir_fits(p.kh, p.kw, p.sh, p.sw, p.ph, p.pw);
  if (direct) {
    int st = ds_cdir_init(&dir, (int)j.c, (int)j.h, (int)j.w, (int)j.co, p.kh, p.kw, p.ph, p.pw, j.wt, 0);
    if (st < 0) {
      ds_error("conv2d: out of memory");
      ds_release(y);
      y = NULL;
      goto done;
    }
    if (st > 0) direct = 0; /* too large for the direct plan */
    else j.dir = &dir, j.col_size = ds_cdir_forward_scratch(&dir);
  }
  int failed = run_parallel(&j, nt, direct ? direct_forward_range : conv_forward_range, NULL);
  if (direct) ds_cdir_free(&dir);
  if (failed) {
    ds_error("conv2d: out of memory for the convolution's buffer");
    ds_release(y);
    y = NULL;
  }
done:
  ds_release(cx), ds_release(cw), ds_release(cb);
  return y;
}

/* With stride 1, the input gradient is a full convolution of gy with the flipped kernel:
 * one GEMM with a deep inner dimension (co*kh*kw) writing straight into gx, instead of
 * a shallow one (co) into a column buffer that is then scattered back. The bigger
 * output (h*w vs oh*ow) is cheaper than the scatter while h*w <= 1.4 oh*ow. */
static int full_conv_input_grad(const conv_job *j) {
  const ds_conv_params *p = &j->p;
  return p->sh == 1 && p->sw == 1 && p->ph <= p->kh - 1 && p->pw <= p->kw - 1 &&
         j->h * j->w * 5 <= j->ohw * 7;
}

/* wflip[ci][o][kh-1-a][kw-1-b] = w[o][ci][a][b] */
static float *flip_kernel(const conv_job *j, const float *wt) {
  int kh = j->p.kh, kw = j->p.kw;
  float *f = malloc(sizeof(float) * (size_t)(j->c * j->co * kh * kw));
  if (!f) return NULL;
  for (int64_t o = 0; o < j->co; o++)
    for (int64_t ci = 0; ci < j->c; ci++)
      for (int a = 0; a < kh; a++)
        for (int b = 0; b < kw; b++)
          f[((ci * j->co + o) * kh + (kh - 1 - a)) * kw + (kw - 1 - b)] = wt[((o * j->c + ci) * kh + a) * kw + b];
  return f;
}

int ds_conv2d_backward(ds_tensor *x, ds_tensor *w, ds_tensor *gy, ds_tensor *yrelu, ds_conv_params p,
                       ds_tensor **gx, ds_tensor **gw, ds_tensor **gb) {
  if (check_conv(x, w, NULL, &p)) return DS_EFAIL;
  int nt = threads_for(x->shape[0]);
  conv_job j = make_job(x, w, p);
  if (gy->ndim != 4 || gy->shape[0] != j.n || gy->shape[1] != j.co || gy->shape[2] != j.oh ||
      gy->shape[3] != j.ow) {
    char s1[128];
    return ds_error("conv2d backward: gradient %s does not match output %lldx%lldx%dx%d",
                    ds_shape_str(gy, s1, sizeof s1), (long long)j.n, (long long)j.co, j.oh, j.ow);
  }
  if (yrelu && !ds_same_shape(yrelu, gy)) {
    char s1[128], s2[128];
    return ds_error("conv2d backward: ReLU output %s does not match the gradient %s",
                    ds_shape_str(yrelu, s1, sizeof s1), ds_shape_str(gy, s2, sizeof s2));
  }
  int rc = DS_EFAIL;
  ds_tensor *cx = ds_contiguous(x), *cw = ds_contiguous(w), *cg = ds_contiguous(gy);
  ds_tensor *cy = yrelu ? ds_contiguous(yrelu) : NULL;
  ds_tensor *rx = NULL, *rw = NULL, *rb = NULL;
  ds_cdir dir = {0}, dir_gx = {0};
  int64_t wsize = j.co * j.kk;
  /* per-thread weight and bias gradients, summed in thread order afterwards */
  float *acc = calloc((size_t)(nt * (wsize + j.co)) + 1, sizeof(float)), *wflip = NULL;
  if (!cx || !cw || !cg || (yrelu && !cy) || !acc) {
    if (!acc) ds_error("conv2d backward: out of memory");
    goto done;
  }
  int direct = ds_cdir_fits(p.kh, p.kw, p.sh, p.sw, p.ph, p.pw);
  if (direct) {
    int st = ds_cdir_init(&dir, (int)j.c, (int)j.h, (int)j.w, (int)j.co, p.kh, p.kw, p.ph, p.pw, NULL, 0);
    if (!st && gx)
      st = ds_cdir_init(&dir_gx, (int)j.co, j.oh, j.ow, (int)j.c, p.kh, p.kw, p.kh - 1 - p.ph, p.kw - 1 - p.pw,
                        ds_data(cw), 1);
    if (st < 0) {
      ds_error("conv2d backward: out of memory");
      goto done;
    }
    if (st > 0) { /* too large for the direct plans */
      ds_cdir_free(&dir), ds_cdir_free(&dir_gx);
      direct = 0;
    } else {
      j.dir = &dir, j.dir_gx = gx ? &dir_gx : NULL;
      j.col_size = ds_cdir_wgrad_scratch(&dir) + (gx ? ds_cdir_forward_scratch(&dir_gx) : 0);
    }
  }
  int full = !direct && gx && full_conv_input_grad(&j);
  if (full && !(wflip = flip_kernel(&j, ds_data(cw)))) {
    ds_error("conv2d backward: out of memory");
    goto done;
  }
  /* the full convolution writes every element of gx; the scatter adds into zeros */
  if (gx && !(rx = full || direct ? ds_tensor_empty(4, x->shape) : ds_tensor_new(4, x->shape))) goto done;
  if (gw && !(rw = ds_tensor_new(4, w->shape))) goto done;
  if (gb && !(rb = ds_tensor_new(1, (int64_t[]){j.co}))) goto done;
  j.x = ds_data(cx), j.wt = ds_data(cw), j.gy = ds_data(cg), j.gx = rx ? ds_data(rx) : NULL;
  j.yrelu = cy ? ds_data(cy) : NULL;
  if (full) {
    j.wflip = wflip;
    int64_t need = j.co * p.kh * p.kw * j.h * j.w;
    if (need > j.col_size) j.col_size = need;
  }
  grad_slices slices = {rw ? acc : NULL, rb ? acc + nt * wsize : NULL, wsize};
  int failed = run_parallel(&j, nt, direct ? direct_backward_range : conv_backward_range, &slices);
  if (failed) {
    ds_error("conv2d backward: out of memory for the convolution's buffer");
    goto done;
  }
  for (int t = 0; t < nt; t++) {
    if (rw)
      for (int64_t k = 0; k < wsize; k++) ds_data(rw)[k] += acc[t * wsize + k];
    if (rb)
      for (int64_t o = 0; o < j.co; o++) ds_data(rb)[o] += acc[nt * wsize + t * j.co + o];
  }
  rc = DS_OK;
done:
  free(acc), free(wflip);
  ds_cdir_free(&dir), ds_cdir_free(&dir_gx);
  if (rc) {
    ds_release(rx), ds_release(rw), ds_release(rb);
  } else {
    if (gx) *gx = rx;
    if (gw) *gw = rw;
    if (gb) *gb = rb;
  }
  ds_release(cx), ds_release(cw), ds_release(cg), ds_release(cy);
  return rc;
}

/* Pooling: one plane at a time; max keeps the first maximum (ties go left/up). */

/* Windows that tile the plane (stride = kernel, no padding): every input element is in
 * at most one window, so the loops need no bounds tests and the gradient is written
 * once per element instead of accumulated into a zeroed buffer. */
static int tiles(ds_conv_params p) { return p.sh == p.kh && p.sw == p.kw && p.ph == 0 && p.pw == 0; }

static void pool_tiles_forward(const float *src, int64_t h, int64_t w, int kh, int kw, int oh, int ow,
                               int is_max, float inv, float *dst) {
  for (int yo = 0; yo < oh; yo++) {
    const float *r = src + (int64_t)yo * kh * w;
    float *d = dst + (int64_t)yo * ow;
    if (kh == 2 && kw == 2 && is_max) {
      for (int xo = 0; xo < ow; xo++) {
        float a = r[2 * xo], b = r[2 * xo + 1], c = r[w + 2 * xo], e = r[w + 2 * xo + 1];
        float m = a;
        if (ds_max_takes(b, m)) m = b;
        if (ds_max_takes(c, m)) m = c;
        if (ds_max_takes(e, m)) m = e;
        d[xo] = m;
      }
      continue;
    }
    for (int xo = 0; xo < ow; xo++) {
      const float *t = r + (int64_t)xo * kw;
      float acc = is_max ? t[0] : 0.0f;
      for (int i = 0; i < kh; i++)
        for (int j = 0; j < kw; j++) {
          float v = t[(int64_t)i * w + j];
          if (!is_max) acc += v;
          else if (ds_max_takes(v, acc)) acc = v;
        }
      d[xo] = is_max ? acc : acc * inv;
    }
  }
  (void)h;
}

static void pool_tiles_backward(const float *src, const float *g, int64_t h, int64_t w, int kh, int kw,
                                int oh, int ow, int is_max, float inv, float *dst) {
  /* rows and columns past the last whole window get no gradient */
  for (int64_t iy = (int64_t)oh * kh; iy < h; iy++) memset(dst + iy * w, 0, sizeof(float) * (size_t)w);
  for (int yo = 0; yo < oh; yo++)
    for (int i = 0; i < kh; i++) {
      float *d = dst + ((int64_t)yo * kh + i) * w;
      for (int64_t ix = (int64_t)ow * kw; ix < w; ix++) d[ix] = 0.0f;
    }
  for (int yo = 0; yo < oh; yo++) {
    const float *r = src + (int64_t)yo * kh * w;
    float *d = dst + (int64_t)yo * kh * w;
    for (int xo = 0; xo < ow; xo++) {
      const float *t = r + (int64_t)xo * kw;
      float *dt = d + (int64_t)xo * kw, gv = g[(int64_t)yo * ow + xo];
      if (!is_max) {
        for (int i = 0; i < kh; i++)
          for (int j = 0; j < kw; j++) dt[(int64_t)i * w + j] = gv * inv;
        continue;
      }
      int64_t at = 0;
      float best = t[0];
      for (int i = 0; i < kh; i++)
        for (int j = 0; j < kw; j++) {
          int64_t k = (int64_t)i * w + j;
          dt[k] = 0.0f;
          if (ds_max_takes(t[k], best)) best = t[k], at = k;
        }
      dt[at] = gv;
    }
  }
}

static ds_tensor *pool_forward(const char *op, ds_tensor *x, ds_conv_params p, int is_max) {
  if (check_params(op, x, p)) return NULL;
  int64_t n = x->shape[0], c = x->shape[1], h = x->shape[2], w = x->shape[3];
  int oh = out_size(h, p.kh, p.sh, p.ph), ow = out_size(w, p.kw, p.sw, p.pw);
  ds_tensor *cx = ds_contiguous(x), *y = cx ? ds_tensor_empty(4, (int64_t[]){n, c, oh, ow}) : NULL;
  if (!y) {
    ds_release(cx);
    return NULL;
  }
  float inv = 1.0f / (float)(p.kh * p.kw);
  if (tiles(p)) {
    const float *src = ds_data(cx);
    float *dst = ds_data(y);
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < n * c; pl++) pool_tiles_forward(src + pl * h * w, h, w, p.kh, p.kw, oh, ow, is_max, inv, dst + pl * oh * ow);
    ds_release(cx);
    return y;
  }
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < n * c; pl++) {
    const float *src = ds_data(cx) + pl * h * w;
    float *dst = ds_data(y) + pl * oh * ow;
    for (int yo = 0; yo < oh; yo++)
      for (int xo = 0; xo < ow; xo++) {
        float acc = is_max ? -FLT_MAX : 0.0f;
        for (int i = 0; i < p.kh; i++) {
          int64_t iy = (int64_t)yo * p.sh - p.ph + i;
          if (iy < 0 || iy >= h) continue;
          for (int j = 0; j < p.kw; j++) {
            int64_t ix = (int64_t)xo * p.sw - p.pw + j;
            if (ix < 0 || ix >= w) continue;
            float v = src[iy * w + ix];
            if (is_max) {
              if (ds_max_takes(v, acc)) acc = v;
            } else
              acc += v;
          }
        }
        dst[yo * ow + xo] = is_max ? acc : acc * inv;
      }
  }
  ds_release(cx);
  return y;
}

static ds_tensor *pool_backward(const char *op, ds_tensor *x, ds_tensor *gy, ds_conv_params p,
                                int is_max) {
  if (check_params(op, x, p)) return NULL;
  int64_t n = x->shape[0], c = x->shape[1], h = x->shape[2], w = x->shape[3];
  int oh = out_size(h, p.kh, p.sh, p.ph), ow = out_size(w, p.kw, p.sw, p.pw);
  if (gy->ndim != 4 || gy->shape[0] != n || gy->shape[1] != c || gy->shape[2] != oh ||
      gy->shape[3] != ow) {
    char s1[128];
    ds_error("%s backward: gradient %s does not match output %lldx%lldx%dx%d", op,
             ds_shape_str(gy, s1, sizeof s1), (long long)n, (long long)c, oh, ow);
    return NULL;
  }
  int tiled = tiles(p); /* the tiled path writes every element; the other adds into zeros */
  ds_tensor *cx = ds_contiguous(x), *cg = ds_contiguous(gy);
  ds_tensor *gx = tiled ? ds_tensor_empty(4, x->shape) : ds_tensor_new(4, x->shape);
  if (!cx || !cg || !gx) {
    ds_release(cx), ds_release(cg), ds_release(gx);
    return NULL;
  }
  float inv = 1.0f / (float)(p.kh * p.kw);
  if (tiled) {
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < n * c; pl++)
      pool_tiles_backward(ds_data(cx) + pl * h * w, ds_data(cg) + pl * oh * ow, h, w, p.kh, p.kw, oh, ow,
                          is_max, inv, ds_data(gx) + pl * h * w);
    ds_release(cx), ds_release(cg);
    return gx;
  }
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < n * c; pl++) {
    const float *src = ds_data(cx) + pl * h * w, *g = ds_data(cg) + pl * oh * ow;
    float *dst = ds_data(gx) + pl * h * w;
    for (int yo = 0; yo < oh; yo++)
      for (int xo = 0; xo < ow; xo++) {
        float best = -FLT_MAX, gv = g[yo * ow + xo];
        int64_t at = -1;
        for (int i = 0; i < p.kh; i++) {
          int64_t iy = (int64_t)yo * p.sh - p.ph + i;
          if (iy < 0 || iy >= h) continue;
          for (int j = 0; j < p.kw; j++) {
            int64_t ix = (int64_t)xo * p.sw - p.pw + j;
            if (ix < 0 || ix >= w) continue;
            if (!is_max)
              dst[iy * w + ix] += gv * inv;
            else if (ds_max_takes(src[iy * w + ix], best) || at < 0)
              best = src[iy * w + ix], at = iy * w + ix;
          }
        }
        if (is_max && at >= 0) dst[at] += gv;
      }
  }
  ds_release(cx), ds_release(cg);
  return gx;
}

ds_tensor *ds_maxpool2d(ds_tensor *x, ds_conv_params p) { return pool_forward("maxpool2d", x, p, 1); }
ds_tensor *ds_maxpool2d_backward(ds_tensor *x, ds_tensor *gy, ds_conv_params p) {
  return pool_backward("maxpool2d", x, gy, p, 1);
}
ds_tensor *ds_avgpool2d(ds_tensor *x, ds_conv_params p) { return pool_forward("avgpool2d", x, p, 0); }
ds_tensor *ds_avgpool2d_backward(ds_tensor *x, ds_tensor *gy, ds_conv_params p) {
  return pool_backward("avgpool2d", x, gy, p, 0);
}
