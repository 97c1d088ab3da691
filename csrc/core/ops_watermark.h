/* The DeepSigns white-box watermark losses: one entry point per variant, each
 * returning the loss value and all of its gradients from one pass, so that a
 * training step records one autograd node whose backward only scales them.
 *
 * Shapes: activations h are B x M (contiguous), labels y hold B class ids (as
 * floats), the projection matrix A is M x N, the bits b are s x N of 0/1, one row
 * per target class. Every function checks its inputs first and returns DS_EFAIL
 * with a message naming the op and the shapes; outputs are new references.
 *
 *   float v; ds_tensor *gh, *gc;
 *   ds_wm_reference_loss(h, y, c, a, b, targets, 1, 0.01f, 0.01f, &v, &gh, &gc);
 *
 * The terms one by one, in plain loops, are in watermark_terms.h: the specs check
 * these fused losses against them. */
#ifndef DS_OPS_WATERMARK_H
#define DS_OPS_WATERMARK_H

#include "tensor.h"

/* "reference", the authors' demo code: c holds one trainable centre per class
 * (C x M) and targets the s target class ids (b's rows in order).
 *   value = l1 (pull + separation + unit_norm) + l2 projection
 *   pull       = 1/2 sum_i ||h_i - c_{y_i}||^2
 *   separation = (1/B) sum_i (c_{y_i} . c_n - 1) ||c_{y_i} - c_n||^2, n the centre nearest
 *                to c_{y_i} among the others (held fixed for the gradient)
 *   unit_norm  = sum_k |1 - ||c_k||^2|
 *   projection = sum over the targets present in y, and bits j, of
 *                BCE(b_kj, sigmoid(c_{t_k} . A_:j))
 * gh: B x M, gc: C x M. */
int ds_wm_reference_loss(ds_tensor *h, ds_tensor *y, ds_tensor *c, ds_tensor *a, ds_tensor *b,
                         const int64_t *targets, int64_t s, float l1, float l2, float *value, ds_tensor **gh,
                         ds_tensor **gc);

/* "paper", the paper's equations: mu holds one trainable mean per class (C x M) and
 * targets the s target class ids (b's rows in order).
 *   value = (l1 / B) sum_i [ ||h_i - mu_{y_i}||^2 - push_i ] + l2 projection
 *   push_i = sum over the other classes r of min(||h_i - mu_r||^2, ||mu_{y_i} - mu_r||^2):
 *            each activation is pushed from every other class's mean until it is at
 *            least as far from it as its own mean is (capped, so the loss is bounded
 *            below; the means are constants in it and learn from the pull alone, so each
 *            tracks its class's mean activation)
 *   projection = sum over the targets k present in y, and bits j, of
 *            BCE(b_kj, sigmoid(m_k . A_:j)), m_k the mean of the batch's rows of class t_k:
 *            the target means as the batch estimates them, the quantity extraction reads
 *            over the trigger inputs
 * gh: B x M, gmu: C x M. */
int ds_wm_paper_loss(ds_tensor *h, ds_tensor *y, ds_tensor *mu, ds_tensor *a, ds_tensor *b,
                     const int64_t *targets, int64_t s, float l1, float l2, float *value, ds_tensor **gh,
                     ds_tensor **gmu);

#endif
