/* libFuzzer target: the CIFAR-10 batch parser. */
#include <stddef.h>
#include <stdint.h>
#include "../core/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ds_tensor *x = NULL, *y = NULL;
  if (ds_parse_cifar(data, size, "fuzz", &x, &y) == 0) {
    ds_release(x);
    ds_release(y);
  }
  return 0;
}
