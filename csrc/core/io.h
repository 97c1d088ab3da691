/* Readers for the data set formats: IDX (MNIST, Fashion-MNIST; raw or gzip)
 * and the CIFAR-10 binary batches. Each validates the whole file and returns
 * NULL with a message naming the file and the problem on anything malformed. */
#ifndef DS_IO_H
#define DS_IO_H

#include "tensor.h"

/* Values as stored (no scaling); any IDX element type. */
ds_tensor *ds_read_idx(const char *path);
/* Same, from an in-memory buffer (for the fuzzer); `name` is used in messages. */
ds_tensor *ds_parse_idx(const unsigned char *buf, size_t len, const char *name);

/* images: N x 3 x 32 x 32 in [0,1]; labels: N class ids. */
int ds_read_cifar(const char *path, ds_tensor **images, ds_tensor **labels);
int ds_parse_cifar(const unsigned char *buf, size_t len, const char *name, ds_tensor **images,
                   ds_tensor **labels);

/* Random crop after zero padding, and horizontal flip with probability flip_p,
 * per image of an N x C x H x W batch (drawn from the one generator). */
ds_tensor *ds_augment_crop_flip(ds_tensor *x, int pad, float flip_p);

#endif
