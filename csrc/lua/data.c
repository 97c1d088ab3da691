/* Binding of the data set readers and augmentation (core.data). */
#include "../core/error.h"
#include "../core/io.h"
#include "binding.h"

static int l_read_idx(lua_State *L) {
  lt_push(L, ds_read_idx(luaL_checkstring(L, 1)));
  return 1;
}

static int l_read_cifar(lua_State *L) {
  ds_tensor *x, *y;
  if (ds_read_cifar(luaL_checkstring(L, 1), &x, &y)) return lt_raise(L);
  lt_push(L, x);
  lt_push(L, y);
  return 2;
}

static int l_augment(lua_State *L) { /* augment_crop_flip(x, pad, flip_p) */
  lt_push(L, ds_augment_crop_flip(lt_check(L, 1), (int)luaL_optinteger(L, 2, 4), (float)luaL_optnumber(L, 3, 0.5)));
  return 1;
}

static const luaL_Reg fns[] = {
    {"read_idx", l_read_idx}, {"read_cifar", l_read_cifar}, {"augment_crop_flip", l_augment}, {NULL, NULL}};

void lt_open_data(lua_State *L) { lt_register(L, "data", fns); }
