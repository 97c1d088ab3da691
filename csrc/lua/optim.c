/* Binding of the fused optimiser steps (core.optim): one pass per parameter, in place. */
#include "../core/ops.h"
#include "binding.h"

static float num(lua_State *L, int idx) { return (float)luaL_checknumber(L, idx); }

static int l_sgd_step(lua_State *L) { /* (p, g, buf|nil, lr, momentum, dampening, nesterov, wd, first) */
  if (ds_sgd_step(lt_check(L, 1), lt_check(L, 2), lt_opt(L, 3), num(L, 4), num(L, 5), num(L, 6),
                  lua_toboolean(L, 7), num(L, 8), lua_toboolean(L, 9)))
    return lt_raise(L);
  return 0;
}

static int l_adam_step(lua_State *L) { /* (p, g, m, v, lr, b1, b2, eps, wd, decoupled, step) */
  if (ds_adam_step(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), lt_check(L, 4), num(L, 5), num(L, 6),
                   num(L, 7), num(L, 8), num(L, 9), lua_toboolean(L, 10), luaL_checkinteger(L, 11)))
    return lt_raise(L);
  return 0;
}

static int l_rmsprop_step(lua_State *L) { /* (p, g, sq, lr, rho, eps, wd) */
  if (ds_rmsprop_step(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), num(L, 4), num(L, 5), num(L, 6), num(L, 7)))
    return lt_raise(L);
  return 0;
}

static const luaL_Reg fns[] = {
    {"sgd_step", l_sgd_step}, {"adam_step", l_adam_step}, {"rmsprop_step", l_rmsprop_step}, {NULL, NULL}};

void lt_open_optim(lua_State *L) { lt_register(L, "optim", fns); }
