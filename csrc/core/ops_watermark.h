/* The DeepSigns white-box watermark losses as core ops, each forward beside its
 * backward. Activations h are B x M, labels y hold class ids (floats), centres
 * c are rows of class Gaussian means. row_of_class maps a class id to its row
 * in c (-1: the class has no centre); it has `classes` entries. */
#ifndef DS_OPS_WATERMARK_H
#define DS_OPS_WATERMARK_H

#include "tensor.h"

/* pull = 1/2 sum_i ||h_i - c_{row(y_i)}||^2 over samples whose class has a centre. */
ds_tensor *ds_wm_pull(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *row_of_class, int64_t classes);
int ds_wm_pull_backward(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *row_of_class, int64_t classes,
                        float g, ds_tensor **gh, ds_tensor **gc);

/* push = sum_i sum_{rows r != row(y_i)} min(||h_i - c_r||^2, ||c_own - c_r||^2) over
 * samples whose class has a centre (the paper's separation term, capped so that it
 * is bounded; c is a constant here). */
ds_tensor *ds_wm_push(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *row_of_class, int64_t classes);
ds_tensor *ds_wm_push_backward(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *row_of_class,
                               int64_t classes, float g);

/* Reference L2 = (1/B) sum_i (c_y . c_n - 1) ||c_y - c_n||^2, n the centre nearest
 * to c_{y_i} among the others (c: C x M, one row per class). */
ds_tensor *ds_wm_separation(ds_tensor *c, ds_tensor *y);
ds_tensor *ds_wm_separation_backward(ds_tensor *c, ds_tensor *y, float g);

/* Reference L3 = sum_k |1 - ||c_k||^2|. */
ds_tensor *ds_wm_unit_norm(ds_tensor *c);
ds_tensor *ds_wm_unit_norm_backward(ds_tensor *c, float g);

/* Projection loss: sum over rows k and bits j of BCE(b_kj, sigmoid(m_k . A_:j)),
 * m: s x M, A: M x N, b: s x N of 0/1. Computed from logits (stable). */
ds_tensor *ds_wm_projection(ds_tensor *m, ds_tensor *a, ds_tensor *b);
ds_tensor *ds_wm_projection_backward(ds_tensor *m, ds_tensor *a, ds_tensor *b, float g);

/* Value and gradient in one pass (value may be NULL): what the *_backward ops
 * return, with the forward value beside it. ds_wm_pull_vg takes gh = NULL for the
 * value and the centres' gradient only; ds_wm_pull_add then adds g times the
 * activations' gradient into acc (B x M, contiguous) in place. */
int ds_wm_pull_add(ds_tensor *acc, ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *row_of_class,
                   int64_t classes, float g);
int ds_wm_pull_vg(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *row_of_class, int64_t classes, float g,
                  double *value, ds_tensor **gh, ds_tensor **gc);
/* The gradient of x for h = relu(x) when h's gradient is gh plus g times the pull's,
 * g (h_i - c_{y_i}), in one pass instead of an add and the ReLU's backward:
 * [x > 0] (gh + g (x - c_{y_i})), h = x wherever the mask is 1. A new B x M tensor, or
 * `into` (contiguous, B x M; may be gh) with a new reference. */
ds_tensor *ds_wm_relu_pull_backward(ds_tensor *x, ds_tensor *gh, ds_tensor *y, ds_tensor *c,
                                    const int64_t *row_of_class, int64_t classes, float g, ds_tensor *into);
int ds_wm_push_vg(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *row_of_class, int64_t classes, float g,
                  double *value, ds_tensor **gh);
int ds_wm_separation_vg(ds_tensor *c, ds_tensor *y, float g, double *value, ds_tensor **gc);
int ds_wm_projection_vg(ds_tensor *m, ds_tensor *a, ds_tensor *b, float g, double *value, ds_tensor **gm);

/* The same adding g times the gradient into a caller's buffer (the fused op's): the
 * centres' separation and unit norm (gc: K x M), and the projection of rows crow of
 * c with bit rows brow of b (n of each; gc rows crow). */
int ds_wm_separation_acc(ds_tensor *c, ds_tensor *y, float g, double *value, float *gc);
int ds_wm_unit_norm_acc(ds_tensor *c, float g, double *value, float *gc);
int ds_wm_projection_rows_acc(ds_tensor *c, ds_tensor *a, ds_tensor *b, const int64_t *crow, const int64_t *brow,
                              int64_t n, float g, double *value, float *gc);
/* The checks of ds_wm_pull (shapes, labels, class map), for a caller that runs the
 * pull on another thread, where an error message would not reach it. */
int ds_wm_pull_check(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *row_of_class, int64_t classes);
/* The paper variant's pull and capped push over its target rows, in one pass (see
 * ops_watermark.c); for ds_wm_paper_loss. */
int ds_wm_paper_rows(ds_tensor *h, ds_tensor *mu, const int64_t *idx, const int64_t *first, const int64_t *brow,
                     int64_t np, float k1, double *pull, double *push, float *gt, float *gmu, float *means);

/* Each variant's whole regularizer in one op (ops_watermark_loss.c): its value and
 * the centres' (or means') gradient in one pass, built from the kernels above; the
 * activations' gradient is added later, in place, by the backward pass (ds_wm_pull_add,
 * ds_rows_add). Reference: l1 (pull + separation + unit_norm)(h, y, c) + l2 projection
 * of the centres of the targets (class ids, s of them) present in y, with their rows of
 * b (s x N); d/dh = l1 (h_i - c_{y_i}). Paper: over the rows of h whose class maps to a
 * row of mu, (2 pull - push) l1 / B + l2 projection of those rows' per-target means,
 * with the present targets' rows of b; 0 when no row maps (the means are constants
 * inside push, as in ds_wm_push). Its d/dh comes as those rows only: gt (nt x M) for
 * the rows of h listed in rows_of_gt (0-based, as floats); both NULL when no target
 * row is in y. ds_rows_add: acc[rows[k]] += g src[k], in place. */
int ds_wm_reference_loss(ds_tensor *h, ds_tensor *y, ds_tensor *c, ds_tensor *a, ds_tensor *b, const int64_t *targets,
                         int64_t s, float l1, float l2, float *value, ds_tensor **gc);
/* The pull made by the ReLU that makes h: h = relu(x) and, in the same pass while each
 * row is in cache, the pull's value 1/2 sum ||h_i - c_{y_i}||^2 and g times its centres'
 * gradient (a new K x M tensor). The rows are split across the threads, each summing
 * the centres' gradient in a buffer of its own; ds_wm_relu_pull_then also runs
 * then(ctx, thread, threads, that buffer) on each thread after its rows (nonzero: out
 * of memory). ds_wm_relu_reference: h and the whole reference loss (as
 * ds_wm_reference_loss on h) in that pass, the centre terms on the threads' tails. */
typedef int (*ds_wm_then_fn)(void *ctx, int thread, int threads, float *gc);
ds_tensor *ds_wm_relu_pull(ds_tensor *x, ds_tensor *y, ds_tensor *c, const int64_t *row_of_class, int64_t classes,
                           float g, double *value, ds_tensor **gc);
ds_tensor *ds_wm_relu_pull_then(ds_tensor *x, ds_tensor *y, ds_tensor *c, const int64_t *row_of_class, int64_t classes,
                                float g, int over, double *value, ds_tensor **gc, ds_wm_then_fn then, void *ctx);
/* over: h is written over x (contiguous; a layer's own output), returned with a new
 * reference, instead of into a new tensor */
ds_tensor *ds_wm_relu_reference(ds_tensor *x, ds_tensor *y, ds_tensor *c, ds_tensor *a, ds_tensor *b,
                                const int64_t *targets, int64_t s, float l1, float l2, int over, float *value,
                                ds_tensor **gc);
int ds_wm_paper_loss(ds_tensor *h, ds_tensor *y, ds_tensor *mu, ds_tensor *a, ds_tensor *b,
                     const int64_t *row_of_class, int64_t classes, float l1, float l2, float *value, ds_tensor **gt,
                     ds_tensor **rows_of_gt, ds_tensor **gmu);
int ds_rows_add(ds_tensor *acc, ds_tensor *rows_idx, ds_tensor *src, float g);

#endif
