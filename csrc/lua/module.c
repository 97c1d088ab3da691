/* deepsigns.core: the C part of the deepsigns module (the only exported symbol). */
#include "binding.h"

__attribute__((visibility("default"))) int luaopen_deepsigns_core(lua_State *L) {
  lua_newtable(L);
  lt_open_tensor(L);
  lt_open_ops(L);
  lt_open_nn(L);
  lt_open_sys(L);
  lt_open_io(L);
  lt_open_watermark(L);
  return 1;
}
