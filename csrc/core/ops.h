/* deepsigns core operations. Each op's backward sits beside its forward in the
 * same file; forwards allocate their result, backwards return fresh gradients.
 * All return NULL (or DS_EFAIL) with a message naming the op and every operand's
 * shape on bad input. Dimensions are 0-based. */
#ifndef DS_OPS_H
#define DS_OPS_H

#include "tensor.h"

/* Whether v takes the place of the running maximum best: larger, or NaN (a NaN, once
 * met, stays: max, max pooling and ReLU propagate NaN as PyTorch does). */
static inline int ds_max_takes(float v, float best) { return v > best || (v != v && best == best); }

/* ---- pointwise (ops_pointwise.c) ---- */
enum ds_binary_op { DS_ADD, DS_SUB, DS_MUL, DS_DIV, DS_MAXIMUM, DS_MINIMUM,
                    DS_EQ, DS_NE, DS_LT, DS_LE, DS_GT, DS_GE, DS_BINARY_COUNT };
enum ds_unary_op { DS_NEG, DS_EXP, DS_LOG, DS_SQRT, DS_POW, DS_ABS, DS_RELU, DS_SIGMOID,
                   DS_TANH, DS_SQUARE, DS_CLAMP_MIN, DS_CLAMP_MAX, DS_SIGN, DS_ROUND, DS_UNARY_COUNT };
extern const char *const ds_binary_names[DS_BINARY_COUNT];
extern const char *const ds_unary_names[DS_UNARY_COUNT];

ds_tensor *ds_binary(int op, ds_tensor *a, ds_tensor *b);
/* out = a op b where out has the broadcast shape (out may alias a). */
int ds_binary_into(int op, ds_tensor *out, ds_tensor *a, ds_tensor *b);
ds_tensor *ds_unary(int op, ds_tensor *x, float p);
int ds_unary_into(int op, ds_tensor *out, ds_tensor *x, float p);
/* Gradient of a unary op from its input x, output y and output gradient gy. */
ds_tensor *ds_unary_backward(int op, ds_tensor *x, ds_tensor *y, ds_tensor *gy, float p);
/* out += alpha * x (same shape; out contiguous). */
int ds_axpy(ds_tensor *out, float alpha, ds_tensor *x);

/* ---- reductions (ops_reduce.c) ---- */
ds_tensor *ds_sum_all(ds_tensor *x);
ds_tensor *ds_sum_dim(ds_tensor *x, int dim, int keepdim);
/* Sums g down to `shape` (the inverse of broadcasting; for backward). */
ds_tensor *ds_sum_to(ds_tensor *g, int ndim, const int64_t *shape);
ds_tensor *ds_max_all(ds_tensor *x);
/* Max over dim: values and 0-based indices (as floats). */
int ds_max_dim(ds_tensor *x, int dim, int keepdim, ds_tensor **values, ds_tensor **indices);
int ds_all_finite(ds_tensor *x);
int ds_moments(ds_tensor *x, double *mean, double *var);
/* The k-th smallest |value| (0-based k) over several tensors together. */
int ds_abs_kth(ds_tensor *const *ts, int n, int64_t k, float *out);

/* ---- linear algebra (ops_linalg.c) ---- */
/* 2-D x 2-D or batched 3-D x 3-D; transposed views go to GEMM without copies. */
ds_tensor *ds_matmul(ds_tensor *a, ds_tensor *b);
/* y = x W^T + b (b may be NULL); x: B x in, W: out x in. relu: the layer's ReLU applied
 * in the same pass over the output. */
ds_tensor *ds_linear(ds_tensor *x, ds_tensor *w, ds_tensor *b, int relu);
/* The backward of ds_linear from the output gradient gy (yrelu: the output of a linear
 * with its ReLU, whose mask gy passes through first; NULL without one): the input
 * gradient into a new *gx when gx is not NULL, and the weight and bias gradients ADDED
 * into gw (out x in) and gb (out) when they are not NULL, as Torch7's accGradParameters
 * does into a layer's persistent gradient buffers. */
int ds_linear_backward(ds_tensor *x, ds_tensor *w, ds_tensor *gy, ds_tensor *yrelu, ds_tensor **gx, ds_tensor *gw,
                       ds_tensor *gb);
/* Pairwise squared distances: a n x m, b k x m -> n x k. */
ds_tensor *ds_sqdist(ds_tensor *a, ds_tensor *b);
int ds_sqdist_backward(ds_tensor *a, ds_tensor *b, ds_tensor *g, ds_tensor **ga, ds_tensor **gb);

/* ---- convolution and pooling (ops_conv.c), NCHW ---- */
typedef struct ds_conv_params { int kh, kw, sh, sw, ph, pw; } ds_conv_params;
/* relu: apply a ReLU to the output in the same pass; its backward then takes that
 * output as yrelu (NULL without the ReLU) */
ds_tensor *ds_conv2d(ds_tensor *x, ds_tensor *w, ds_tensor *b, ds_conv_params p, int relu);
int ds_conv2d_backward(ds_tensor *x, ds_tensor *w, ds_tensor *gy, ds_tensor *yrelu, ds_conv_params p, ds_tensor **gx,
                       ds_tensor **gw, ds_tensor **gb);
ds_tensor *ds_maxpool2d(ds_tensor *x, ds_conv_params p);
ds_tensor *ds_maxpool2d_backward(ds_tensor *x, ds_tensor *gy, ds_conv_params p);
ds_tensor *ds_avgpool2d(ds_tensor *x, ds_conv_params p);
ds_tensor *ds_avgpool2d_backward(ds_tensor *x, ds_tensor *gy, ds_conv_params p);

/* ---- softmax and losses (ops_loss.c); rows are the last dimension ---- */
ds_tensor *ds_softmax(ds_tensor *x, int log);
ds_tensor *ds_softmax_backward(ds_tensor *y, ds_tensor *gy, int log);
/* Mean cross-entropy of logits (B x C) against class ids (B) or soft targets
 * (B x C), with label smoothing eps. Saves probabilities for the backward. */
ds_tensor *ds_cross_entropy(ds_tensor *logits, ds_tensor *target, float smoothing, ds_tensor **probs);
ds_tensor *ds_cross_entropy_backward(ds_tensor *probs, ds_tensor *target, float smoothing, float g);
/* Mean binary cross-entropy, p clamped to [1e-7, 1-1e-7]. */
ds_tensor *ds_bce(ds_tensor *p, ds_tensor *t);
ds_tensor *ds_bce_backward(ds_tensor *p, ds_tensor *t, float g);

/* ---- normalisation, dropout, indexing (ops_nn.c) ---- */
/* x: N x C or N x C x H x W. In training, saves mean and inverse std per channel
 * and updates running stats (unbiased variance) with `momentum`. */
ds_tensor *ds_batchnorm(ds_tensor *x, ds_tensor *gamma, ds_tensor *beta, ds_tensor *run_mean,
                        ds_tensor *run_var, int training, float momentum, float eps,
                        ds_tensor **save_mean, ds_tensor **save_invstd);
/* training selects batch statistics (else the saved running ones are constants). */
int ds_batchnorm_backward(ds_tensor *x, ds_tensor *gamma, ds_tensor *save_mean,
                          ds_tensor *save_invstd, ds_tensor *gy, int training, ds_tensor **gx,
                          ds_tensor **ggamma, ds_tensor **gbeta);
/* Mask of 0 or 1/(1-p) shaped like x. */
ds_tensor *ds_dropout_mask(ds_tensor *x, float p);
/* x * mask and the mask (the same draws as ds_dropout_mask), in one pass */
ds_tensor *ds_dropout(ds_tensor *x, float p, ds_tensor **mask);
/* Rows of x (along dim 0) at 0-based idx. */
ds_tensor *ds_index_select(ds_tensor *x, const int64_t *idx, int64_t n);
/* Zeros shaped like x (with x's first dim = rows) plus g added at rows idx. */
ds_tensor *ds_index_add(int ndim, const int64_t *shape, const int64_t *idx, int64_t n, ds_tensor *g);
/* y[i] = x[i, idx[i]] for x: B x C. */
ds_tensor *ds_gather_rows(ds_tensor *x, ds_tensor *idx);
ds_tensor *ds_gather_rows_backward(ds_tensor *x, ds_tensor *idx, ds_tensor *g);

/* ---- optimiser steps (optim.c): in place on contiguous tensors ---- */
int ds_sgd_step(ds_tensor *p, ds_tensor *g, ds_tensor *buf, float lr, float momentum,
                float dampening, int nesterov, float weight_decay, int first);
int ds_adam_step(ds_tensor *p, ds_tensor *g, ds_tensor *m, ds_tensor *v, float lr, float beta1,
                 float beta2, float eps, float weight_decay, int decoupled, int64_t step);
int ds_rmsprop_step(ds_tensor *p, ds_tensor *g, ds_tensor *sq, float lr, float rho, float eps,
                    float weight_decay);

#endif
