/* Direct convolution for stride 1 on x86-64 with AVX2 and FMA: an implicit GEMM whose
 * kernel reads every tap straight from a zero-padded copy of the image, so no im2col
 * matrix is written or packed (the copy is 1/(kh*kw) of im2col's size).
 *
 * Layout: each input channel sits in a plane of hp x wp (the padded image) whose
 * stride is not a multiple of 4 KB (planes 4 KB apart would share L1 sets). Output
 * position (y, x) is computed at "wide" index q = y*wp + x, where tap (ci, i, j)
 * reads the padded copy at q + off[ci, i, j]; the columns x >= ow are discarded.
 * The same plan serves the weight gradient (each tap's shifted image against the
 * output gradient, in register tiles) and, built on the flipped kernel, the input
 * gradient as a full convolution of the output gradient. */
#ifndef DS_CONV_DIRECT_H
#define DS_CONV_DIRECT_H

#include <stdint.h>

typedef struct ds_cdir {
  int c, h, w, co, kh, kw, ph, pw, oh, ow;
  int hp, wp, co4; /* padded input; co rounded up to the kernel's 4-row tile */
  int64_t kk;      /* c*kh*kw taps */
  int64_t plane;   /* floats between channel planes of the padded copy */
  int64_t pad_size;/* floats of the padded copy, with slack for the last tile's reads */
  int64_t q, qr;   /* wide positions oh*wp, and rounded up to the 24-wide tile */
  int co16;        /* co rounded up to the weight gradient's 16-channel tile */
  int64_t mplane;  /* floats between planes of the masked output gradient */
  int *off;        /* kk tap offsets into the padded copy */
  float *wpack;    /* [co4/4][kk][4] packed weights (forward and input gradient) */
} ds_cdir;

/* Whether the direct path is compiled in, enabled and fits these parameters. */
int ds_cdir_fits(int kh, int kw, int sh, int sw, int ph, int pw);
/* Test hook: 0 sends every convolution to the im2col + GEMM path. */
void ds_cdir_set_enabled(int on);
int ds_cdir_enabled(void);

/* A plan for input c x h x w, co outputs, kernel kh x kw, padding ph, pw. wt (may be
 * NULL: weight gradient only) is co x c x kh x kw; with flip, wt is laid out
 * c x co x kh x kw (a layer's own weights, for its input gradient) and the plan
 * convolves with the kernel rotated by 180 degrees. Returns 0; 1 when the image is too
 * large for the plan's int offsets (use another path); -1 out of memory. */
int ds_cdir_init(ds_cdir *d, int c, int h, int w, int co, int kh, int kw, int ph, int pw, const float *wt,
                 int flip);
void ds_cdir_free(ds_cdir *d);

/* Per-thread scratch sizes (floats). The scratch must be zeroed before the first
 * image: padding and slack stay zero, later images overwrite only the interior. */
int64_t ds_cdir_forward_scratch(const ds_cdir *d);
int64_t ds_cdir_wgrad_scratch(const ds_cdir *d);

/* y (co x oh x ow, compact) = conv(x) + bias, then ReLU when relu. x's rows have
 * stride xrow and its channel planes stride xplane. */
void ds_cdir_forward(const ds_cdir *d, const float *x, int64_t xplane, int64_t xrow, const float *bias,
                     int relu, float *y, float *scratch);

/* Lays out this image's output gradient gy (co x oh x ow) for the backward pass: masked
 * by the fused ReLU's output yrelu (NULL: none), its sums added into gb (NULL: skipped).
 * With transposed, writes the transposed copy ds_cdir_wgrad reads. Returns the masked
 * gradient (co planes of oh x ow, ds_cdir.mplane apart), which a flipped plan takes as
 * its input. */
const float *ds_cdir_grad_layouts(const ds_cdir *d, const float *gy, const float *yrelu, float *gb,
                                  int transposed, float *scratch);
/* gw (co x c*kh*kw) += this image's weight gradient, from x (compact c x h x w) and the
 * layouts ds_cdir_grad_layouts wrote in the same scratch. */
void ds_cdir_wgrad(const ds_cdir *d, const float *x, float *gw, float *scratch);

#endif
