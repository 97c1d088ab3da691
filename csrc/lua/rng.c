/* Binding of the one seeded generator (core.rng): seeding, its state, scalar draws,
 * permutations and random tensors. */
#include <stdlib.h>
#include <string.h>
#include "../core/rng.h"
#include "binding.h"

static int l_seed(lua_State *L) {
  ds_rng_seed((uint64_t)luaL_checkinteger(L, 1));
  return 0;
}

static int l_rng_state(lua_State *L) {
  ds_rng_state s;
  ds_rng_get_state(&s);
  lua_pushlstring(L, (const char *)&s, sizeof s);
  return 1;
}

static int l_set_rng_state(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  if (n != sizeof(ds_rng_state)) return luaL_argerror(L, 1, "not a generator state");
  ds_rng_state st;
  memcpy(&st, s, sizeof st);
  ds_rng_set_state(&st);
  return 0;
}

static int l_uniform(lua_State *L) { lua_pushnumber(L, ds_rng_uniform()); return 1; }
static int l_normal(lua_State *L) { lua_pushnumber(L, ds_rng_normal()); return 1; }

static int l_randint(lua_State *L) { /* uniform integer in [lo, hi] */
  lua_Integer lo = luaL_checkinteger(L, 1), hi = luaL_checkinteger(L, 2);
  if (hi < lo) return luaL_error(L, "randint: empty range [%d, %d]", (int)lo, (int)hi);
  lua_pushinteger(L, lo + ds_rng_below(hi - lo + 1));
  return 1;
}

static int l_randperm(lua_State *L) { /* 1-based permutation as a Lua table */
  lua_Integer n = luaL_checkinteger(L, 1);
  if (n < 0) return luaL_argerror(L, 1, "size must be >= 0");
  int64_t *p = malloc(sizeof *p * (size_t)(n + 1));
  if (!p) return luaL_error(L, "randperm: out of memory");
  ds_rng_permutation(n, p);
  lua_createtable(L, (int)n, 0);
  for (lua_Integer i = 0; i < n; i++) {
    lua_pushinteger(L, p[i] + 1);
    lua_rawseti(L, -2, i + 1);
  }
  free(p);
  return 1;
}

static int l_rand(lua_State *L) { /* rand(shape, lo, hi): uniform in [lo, hi) */
  int64_t shape[DS_MAXDIM];
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = lt_shape(L, 1, shape);
  ds_tensor *t = ds_tensor_empty(n, shape);
  if (t) ds_rng_fill_uniform(t, (float)luaL_optnumber(L, 2, 0), (float)luaL_optnumber(L, 3, 1));
  lt_push(L, t);
  return 1;
}

static int l_randn(lua_State *L) { /* randn(shape, mean, std) */
  int64_t shape[DS_MAXDIM];
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = lt_shape(L, 1, shape);
  ds_tensor *t = ds_tensor_empty(n, shape);
  if (t) ds_rng_fill_normal(t, (float)luaL_optnumber(L, 2, 0), (float)luaL_optnumber(L, 3, 1));
  lt_push(L, t);
  return 1;
}

static const luaL_Reg fns[] = {{"seed", l_seed}, {"state", l_rng_state}, {"set_state", l_set_rng_state},
                               {"uniform", l_uniform}, {"normal", l_normal}, {"randint", l_randint},
                               {"randperm", l_randperm}, {"rand", l_rand}, {"randn", l_randn}, {NULL, NULL}};

void lt_open_rng(lua_State *L) { lt_register(L, "rng", fns); }
