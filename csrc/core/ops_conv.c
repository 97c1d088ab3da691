/* 2-D convolution (im2col + GEMM) and pooling, NCHW, with their gradients. */
#include "blas.h"
#include "error.h"
#include "ops.h"
#include <float.h>
#include <stdlib.h>
#include <string.h>

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

/* col: (C*kh*kw) x (OH*OW) from one image x: C x H x W */
static void im2col(const float *x, int64_t c, int64_t h, int64_t w, ds_conv_params p, int oh, int ow,
                   float *col) {
  for (int64_t ci = 0; ci < c; ci++)
    for (int i = 0; i < p.kh; i++)
      for (int j = 0; j < p.kw; j++) {
        float *row = col + ((ci * p.kh + i) * p.kw + j) * (int64_t)oh * ow;
        for (int y = 0; y < oh; y++) {
          int64_t iy = (int64_t)y * p.sh - p.ph + i;
          float *r = row + (int64_t)y * ow;
          if (iy < 0 || iy >= h) {
            memset(r, 0, sizeof(float) * (size_t)ow);
            continue;
          }
          const float *src = x + (ci * h + iy) * w;
          for (int xo = 0; xo < ow; xo++) {
            int64_t ix = (int64_t)xo * p.sw - p.pw + j;
            r[xo] = (ix >= 0 && ix < w) ? src[ix] : 0.0f;
          }
        }
      }
}

/* accumulates col back into the image gradient gx: C x H x W */
static void col2im(const float *col, int64_t c, int64_t h, int64_t w, ds_conv_params p, int oh, int ow,
                   float *gx) {
  for (int64_t ci = 0; ci < c; ci++)
    for (int i = 0; i < p.kh; i++)
      for (int j = 0; j < p.kw; j++) {
        const float *row = col + ((ci * p.kh + i) * p.kw + j) * (int64_t)oh * ow;
        for (int y = 0; y < oh; y++) {
          int64_t iy = (int64_t)y * p.sh - p.ph + i;
          if (iy < 0 || iy >= h) continue;
          float *dst = gx + (ci * h + iy) * w;
          const float *r = row + (int64_t)y * ow;
          for (int xo = 0; xo < ow; xo++) {
            int64_t ix = (int64_t)xo * p.sw - p.pw + j;
            if (ix >= 0 && ix < w) dst[ix] += r[xo];
          }
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

ds_tensor *ds_conv2d(ds_tensor *x, ds_tensor *w, ds_tensor *b, ds_conv_params p) {
  if (check_conv(x, w, b, &p)) return NULL;
  int64_t n = x->shape[0], c = x->shape[1], h = x->shape[2], wd = x->shape[3], co = w->shape[0];
  int oh = out_size(h, p.kh, p.sh, p.ph), ow = out_size(wd, p.kw, p.sw, p.pw);
  int64_t kk = c * p.kh * p.kw, ohw = (int64_t)oh * ow;
  ds_tensor *cx = ds_contiguous(x), *cw = ds_contiguous(w), *cb = b ? ds_contiguous(b) : NULL;
  ds_tensor *y = ds_tensor_empty(4, (int64_t[]){n, co, oh, ow});
  float *col = malloc(sizeof(float) * (size_t)(kk * ohw + 1));
  if (!cx || !cw || (b && !cb) || !y || !col) {
    if (!col) ds_error("conv2d: out of memory for the im2col buffer");
    ds_release(y);
    y = NULL;
    goto done;
  }
  for (int64_t i = 0; i < n; i++) {
    float *yi = ds_data(y) + i * co * ohw;
    im2col(ds_data(cx) + i * c * h * wd, c, h, wd, p, oh, ow, col);
    float beta = 0.0f;
    if (cb) {
      for (int64_t o = 0; o < co; o++)
        for (int64_t k = 0; k < ohw; k++) yi[o * ohw + k] = ds_data(cb)[o];
      beta = 1.0f;
    }
    ds_gemm(0, 0, co, ohw, kk, 1.0f, ds_data(cw), kk, col, ohw, beta, yi, ohw);
  }
done:
  free(col);
  ds_release(cx), ds_release(cw), ds_release(cb);
  return y;
}

int ds_conv2d_backward(ds_tensor *x, ds_tensor *w, ds_tensor *gy, ds_conv_params p, ds_tensor **gx,
                       ds_tensor **gw, ds_tensor **gb) {
  if (check_conv(x, w, NULL, &p)) return DS_EFAIL;
  int64_t n = x->shape[0], c = x->shape[1], h = x->shape[2], wd = x->shape[3], co = w->shape[0];
  int oh = out_size(h, p.kh, p.sh, p.ph), ow = out_size(wd, p.kw, p.sw, p.pw);
  int64_t kk = c * p.kh * p.kw, ohw = (int64_t)oh * ow;
  if (gy->ndim != 4 || gy->shape[0] != n || gy->shape[1] != co || gy->shape[2] != oh ||
      gy->shape[3] != ow) {
    char s1[128];
    return ds_error("conv2d backward: gradient %s does not match output %lldx%lldx%dx%d",
                    ds_shape_str(gy, s1, sizeof s1), (long long)n, (long long)co, oh, ow);
  }
  int rc = DS_EFAIL;
  ds_tensor *cx = ds_contiguous(x), *cw = ds_contiguous(w), *cg = ds_contiguous(gy);
  ds_tensor *rx = NULL, *rw = NULL, *rb = NULL;
  float *col = malloc(sizeof(float) * (size_t)(kk * ohw + 1));
  if (!cx || !cw || !cg || !col) {
    if (!col) ds_error("conv2d backward: out of memory for the im2col buffer");
    goto done;
  }
  if (gx && !(rx = ds_tensor_new(4, x->shape))) goto done;
  if (gw && !(rw = ds_tensor_new(4, w->shape))) goto done;
  if (gb && !(rb = ds_tensor_new(1, (int64_t[]){co}))) goto done;
  for (int64_t i = 0; i < n; i++) {
    const float *gi = ds_data(cg) + i * co * ohw;
    if (rw) {
      im2col(ds_data(cx) + i * c * h * wd, c, h, wd, p, oh, ow, col);
      ds_gemm(0, 1, co, kk, ohw, 1.0f, gi, ohw, col, ohw, 1.0f, ds_data(rw), kk);
    }
    if (rx) {
      ds_gemm(1, 0, kk, ohw, co, 1.0f, ds_data(cw), kk, gi, ohw, 0.0f, col, ohw);
      col2im(col, c, h, wd, p, oh, ow, ds_data(rx) + i * c * h * wd);
    }
    if (rb)
      for (int64_t o = 0; o < co; o++) {
        double s = 0;
        for (int64_t k = 0; k < ohw; k++) s += gi[o * ohw + k];
        ds_data(rb)[o] += (float)s;
      }
  }
  rc = DS_OK;
done:
  free(col);
  if (rc) {
    ds_release(rx), ds_release(rw), ds_release(rb);
  } else {
    if (gx) *gx = rx;
    if (gw) *gw = rw;
    if (gb) *gb = rb;
  }
  ds_release(cx), ds_release(cw), ds_release(cg);
  return rc;
}

/* Pooling: one plane at a time; max keeps the first maximum (ties go left/up). */
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
              if (v > acc) acc = v;
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
  ds_tensor *cx = ds_contiguous(x), *cg = ds_contiguous(gy), *gx = ds_tensor_new(4, x->shape);
  if (!cx || !cg || !gx) {
    ds_release(cx), ds_release(cg), ds_release(gx);
    return NULL;
  }
  float inv = 1.0f / (float)(p.kh * p.kw);
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
            else if (src[iy * w + ix] > best || at < 0)
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
