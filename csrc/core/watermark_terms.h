/* The white-box loss terms one by one, in plain loops summed in double: the
 * reference the specs check the fused losses of ops_watermark.h against (values and
 * gradients). Training never calls these. Each returns the term's value and its
 * unscaled gradients as new tensors, or DS_EFAIL with a message.
 *
 * A class map row_of_class (`classes` entries) gives a class id's row of c, or -1
 * when the class has none; NULL means row = class id. */
#ifndef DS_WATERMARK_TERMS_H
#define DS_WATERMARK_TERMS_H

#include "tensor.h"

/* 1/2 sum_i ||h_i - c_{row(y_i)}||^2 over the rows whose class has a centre. */
int ds_wm_term_pull(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *row_of_class, int64_t classes,
                    double *value, ds_tensor **gh, ds_tensor **gc);

/* sum_i sum_{r != own} min(||h_i - c_r||^2, ||c_own - c_r||^2), c held constant. */
int ds_wm_term_push(ds_tensor *h, ds_tensor *y, ds_tensor *c, const int64_t *row_of_class, int64_t classes,
                    double *value, ds_tensor **gh);

/* (1/B) sum_i (c_y . c_n - 1) ||c_y - c_n||^2, n the nearest other centre of y. */
int ds_wm_term_separation(ds_tensor *c, ds_tensor *y, double *value, ds_tensor **gc);

/* sum_k |1 - ||c_k||^2|. */
int ds_wm_term_unit_norm(ds_tensor *c, double *value, ds_tensor **gc);

/* sum_{k,j} BCE(b_kj, sigmoid(m_k . A_:j)); m: s x M, A: M x N, b: s x N. */
int ds_wm_term_projection(ds_tensor *m, ds_tensor *a, ds_tensor *b, double *value, ds_tensor **gm);

#endif
