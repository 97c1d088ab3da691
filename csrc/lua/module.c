/* deepsigns.core: the C part of the deepsigns module (the only exported symbol), a
 * table of areas (see binding.h). */
#include "binding.h"

void lt_register(lua_State *L, const char *area, const luaL_Reg *fns) {
  lua_newtable(L);
  luaL_setfuncs(L, fns, 0);
  lua_setfield(L, -2, area);
}

__attribute__((visibility("default"))) int luaopen_deepsigns_core(lua_State *L) {
  lua_newtable(L);
  lt_open_tensor(L);
  lt_open_ops(L);
  lt_open_nn(L);
  lt_open_optim(L);
  lt_open_rng(L);
  lt_open_data(L);
  lt_open_sys(L);
  lt_open_watermark(L);
  lt_open_testing(L);
  return 1;
}
