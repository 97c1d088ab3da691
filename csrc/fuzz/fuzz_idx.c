/* libFuzzer target: the IDX parser. */
#include <stddef.h>
#include <stdint.h>
#include "../core/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ds_release(ds_parse_idx(data, size, "fuzz"));
  return 0;
}
