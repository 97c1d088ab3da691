#include "io.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "error.h"
#include "rng.h"

#define MAX_FILE (INT64_C(1) << 34) /* 16 GiB: larger is not a data set we read */

/* Whole file through zlib (reads gzip and plain files alike). */
static unsigned char *slurp(const char *path, size_t *len) {
  gzFile f = gzopen(path, "rb");
  if (!f) {
    ds_error("cannot open %s", path);
    return NULL;
  }
  size_t cap = 1 << 20, n = 0;
  unsigned char *buf = malloc(cap);
  for (;;) {
    if (!buf) {
      gzclose(f);
      ds_error("%s: out of memory", path);
      return NULL;
    }
    if (n == cap) {
      if ((int64_t)cap * 2 > MAX_FILE) {
        free(buf);
        gzclose(f);
        ds_error("%s: larger than 16 GiB", path);
        return NULL;
      }
      unsigned char *bigger = realloc(buf, cap * 2);
      if (!bigger) free(buf);
      buf = bigger;
      cap *= 2;
      continue;
    }
    size_t want = cap - n > (1u << 30) ? (1u << 30) : cap - n;
    int got = gzread(f, buf + n, (unsigned)want);
    if (got < 0) {
      int code;
      const char *msg = gzerror(f, &code);
      ds_error("%s: read error (%s): the file is corrupt or truncated", path, msg);
      free(buf);
      gzclose(f);
      return NULL;
    }
    if (got == 0) break;
    n += (size_t)got;
  }
  gzclose(f);
  *len = n;
  return buf;
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

ds_tensor *ds_parse_idx(const unsigned char *buf, size_t len, const char *name) {
  if (len < 4) {
    ds_error("%s: not an IDX file (only %zu bytes)", name, len);
    return NULL;
  }
  if (buf[0] != 0 || buf[1] != 0) {
    ds_error("%s: not an IDX file (bad magic number %02x%02x%02x%02x)", name, buf[0], buf[1], buf[2], buf[3]);
    return NULL;
  }
  int type = buf[2], nd = buf[3], width;
  switch (type) {
  case 0x08: case 0x09: width = 1; break;
  case 0x0B: width = 2; break;
  case 0x0C: case 0x0D: width = 4; break;
  case 0x0E: width = 8; break;
  default:
    ds_error("%s: unknown IDX element type 0x%02x", name, type);
    return NULL;
  }
  if (nd < 1 || nd > DS_MAXDIM) {
    ds_error("%s: IDX file has %d dimensions (supported: 1 to %d)", name, nd, DS_MAXDIM);
    return NULL;
  }
  if (len < 4 + 4 * (size_t)nd) {
    ds_error("%s: truncated IDX header", name);
    return NULL;
  }
  int64_t shape[DS_MAXDIM], n = 1;
  for (int d = 0; d < nd; d++) {
    shape[d] = be32(buf + 4 + 4 * d);
    if (shape[d] > 0 && n > (INT64_C(1) << 36) / shape[d]) {
      ds_error("%s: IDX dimensions overflow (dimension %d is %lld)", name, d + 1, (long long)shape[d]);
      return NULL;
    }
    n *= shape[d];
  }
  size_t head = 4 + 4 * (size_t)nd, need = (size_t)n * (size_t)width;
  if (len - head != need) {
    ds_error("%s: %s: the header announces %lld values (%zu bytes) but %zu bytes follow", name,
             len - head < need ? "truncated" : "trailing data", (long long)n, need, len - head);
    return NULL;
  }
  ds_tensor *t = ds_tensor_empty(nd, shape);
  if (!t) return NULL;
  float *o = ds_data(t);
  const unsigned char *p = buf + head;
  for (int64_t i = 0; i < n; i++, p += width) {
    switch (type) {
    case 0x08: o[i] = p[0]; break;
    case 0x09: o[i] = (signed char)p[0]; break;
    case 0x0B: o[i] = (int16_t)(p[0] << 8 | p[1]); break;
    case 0x0C: o[i] = (float)(int32_t)be32(p); break;
    case 0x0D: { uint32_t u = be32(p); float f; memcpy(&f, &u, 4); o[i] = f; break; }
    default: {
      uint64_t u = (uint64_t)be32(p) << 32 | be32(p + 4);
      double d;
      memcpy(&d, &u, 8);
      o[i] = (float)d;
    }
    }
    if (!isfinite(o[i])) {
      ds_release(t);
      ds_error("%s: value %lld is not finite", name, (long long)i + 1);
      return NULL;
    }
  }
  return t;
}

ds_tensor *ds_read_idx(const char *path) {
  size_t len;
  unsigned char *buf = slurp(path, &len);
  if (!buf) return NULL;
  ds_tensor *t = ds_parse_idx(buf, len, path);
  free(buf);
  return t;
}

#define CIFAR_RECORD 3073

int ds_parse_cifar(const unsigned char *buf, size_t len, const char *name, ds_tensor **images,
                   ds_tensor **labels) {
  if (len == 0 || len % CIFAR_RECORD) {
    return ds_error("%s: not a CIFAR-10 binary batch: %zu bytes is not a whole number of "
                    "%d-byte records (truncated or another format)", name, len, CIFAR_RECORD);
  }
  int64_t n = (int64_t)(len / CIFAR_RECORD);
  ds_tensor *x = ds_tensor_empty(4, (int64_t[]){n, 3, 32, 32});
  ds_tensor *y = x ? ds_tensor_empty(1, &n) : NULL;
  if (!y) {
    ds_release(x);
    return DS_EFAIL;
  }
  for (int64_t i = 0; i < n; i++) {
    const unsigned char *r = buf + i * CIFAR_RECORD;
    if (r[0] > 9) {
      ds_release(x), ds_release(y);
      return ds_error("%s: record %lld has label %d (CIFAR-10 labels are 0..9)", name, (long long)i + 1, r[0]);
    }
    ds_data(y)[i] = r[0];
    float *o = ds_data(x) + i * 3072;
    for (int k = 0; k < 3072; k++) o[k] = r[1 + k] / 255.0f;
  }
  *images = x;
  *labels = y;
  return DS_OK;
}

int ds_read_cifar(const char *path, ds_tensor **images, ds_tensor **labels) {
  size_t len;
  unsigned char *buf = slurp(path, &len);
  if (!buf) return DS_EFAIL;
  int rc = ds_parse_cifar(buf, len, path, images, labels);
  free(buf);
  return rc;
}

ds_tensor *ds_augment_crop_flip(ds_tensor *x, int pad, float flip_p) {
  char s[128];
  if (x->ndim != 4 || pad < 0) {
    ds_error("augment: expects an N x C x H x W batch and padding >= 0, got %s", ds_shape_str(x, s, sizeof s));
    return NULL;
  }
  ds_tensor *cx = ds_contiguous(x), *y = cx ? ds_tensor_new(4, x->shape) : NULL;
  if (!y) {
    ds_release(cx);
    return NULL;
  }
  int64_t n = x->shape[0], c = x->shape[1], h = x->shape[2], w = x->shape[3];
  for (int64_t i = 0; i < n; i++) {
    int64_t dy = ds_rng_below(2 * pad + 1) - pad, dx = ds_rng_below(2 * pad + 1) - pad;
    int flip = ds_rng_uniform() < flip_p;
    for (int64_t ch = 0; ch < c; ch++) {
      const float *src = ds_data(cx) + (i * c + ch) * h * w;
      float *dst = ds_data(y) + (i * c + ch) * h * w;
      for (int64_t r = 0; r < h; r++) {
        int64_t sr = r + dy;
        if (sr < 0 || sr >= h) continue;
        for (int64_t q = 0; q < w; q++) {
          int64_t sq = (flip ? w - 1 - q : q) + dx;
          if (sq >= 0 && sq < w) dst[r * w + q] = src[sr * w + sq];
        }
      }
    }
  }
  ds_release(cx);
  return y;
}
