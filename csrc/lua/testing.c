/* core.testing: what the specs use to check the library against itself, not part of
 * its API. Switches that send work to the reference paths (the naive GEMM, im2col
 * instead of the direct convolution), and the white-box loss terms one by one
 * (watermark_terms.h), each returning its value and unscaled gradients. A class map
 * is a Lua table {[class id + 1] = centre row (1-based) or 0}, or nil (row = class id). */
#include "../core/blas.h"
#include "../core/conv_direct.h"
#include "../core/error.h"
#include "../core/watermark_terms.h"
#include "binding.h"

/* gemm_naive([on]) -> whether the naive GEMM was in use */
static int l_gemm_naive(lua_State *L) {
  int was = ds_gemm_is_naive();
  if (!lua_isnone(L, 1)) ds_gemm_use_naive(lua_toboolean(L, 1));
  lua_pushboolean(L, was);
  return 1;
}

/* conv_direct([on]) -> whether stride-1 convolutions took the direct path (off sends
 * them to im2col + GEMM) */
static int l_conv_direct(lua_State *L) {
  lua_pushboolean(L, ds_cdir_enabled());
  if (!lua_isnone(L, 1)) ds_cdir_set_enabled(lua_toboolean(L, 1));
  return 1;
}

/* class map at idx as 0-based rows (-1: none), in a userdata left on the stack; NULL for nil */
static int64_t *class_map(lua_State *L, int idx, int64_t *classes) {
  if (lua_isnoneornil(L, idx)) return NULL;
  luaL_checktype(L, idx, LUA_TTABLE);
  *classes = (int64_t)luaL_len(L, idx);
  int64_t *v = lua_newuserdatauv(L, sizeof *v * (size_t)(*classes + 1), 0);
  for (int64_t k = 0; k < *classes; k++) {
    lua_geti(L, idx, k + 1);
    v[k] = (int64_t)lua_tointeger(L, -1) - 1;
    lua_pop(L, 1);
  }
  return v;
}

static int values(lua_State *L, int rc, double v, ds_tensor *g1, ds_tensor *g2) {
  if (rc) return lt_raise(L);
  lua_pushnumber(L, v);
  lt_push(L, g1);
  if (!g2) return 2;
  lt_push(L, g2);
  return 3;
}

static int l_wm_pull(lua_State *L) { /* (h, y, c, map|nil, classes) -> value, gh, gc */
  int64_t classes = luaL_optinteger(L, 5, 0), *map = class_map(L, 4, &classes);
  double v = 0;
  ds_tensor *gh = NULL, *gc = NULL;
  int rc = ds_wm_term_pull(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), map, classes, &v, &gh, &gc);
  return values(L, rc, v, gh, gc);
}

static int l_wm_push(lua_State *L) { /* (h, y, c, map|nil, classes) -> value, gh */
  int64_t classes = luaL_optinteger(L, 5, 0), *map = class_map(L, 4, &classes);
  double v = 0;
  ds_tensor *gh = NULL;
  int rc = ds_wm_term_push(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), map, classes, &v, &gh);
  return values(L, rc, v, gh, NULL);
}

static int l_wm_separation(lua_State *L) { /* (c, y) -> value, gc */
  double v = 0;
  ds_tensor *gc = NULL;
  int rc = ds_wm_term_separation(lt_check(L, 1), lt_check(L, 2), &v, &gc);
  return values(L, rc, v, gc, NULL);
}

static int l_wm_unit_norm(lua_State *L) { /* (c) -> value, gc */
  double v = 0;
  ds_tensor *gc = NULL;
  int rc = ds_wm_term_unit_norm(lt_check(L, 1), &v, &gc);
  return values(L, rc, v, gc, NULL);
}

static int l_wm_projection(lua_State *L) { /* (m, A, b) -> value, gm */
  double v = 0;
  ds_tensor *gm = NULL;
  int rc = ds_wm_term_projection(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), &v, &gm);
  return values(L, rc, v, gm, NULL);
}

static const luaL_Reg fns[] = {{"gemm_naive", l_gemm_naive},         {"conv_direct", l_conv_direct},
                               {"wm_pull", l_wm_pull},               {"wm_push", l_wm_push},
                               {"wm_separation", l_wm_separation}, {"wm_unit_norm", l_wm_unit_norm},
                               {"wm_projection", l_wm_projection},   {NULL, NULL}};

void lt_open_testing(lua_State *L) { lt_register(L, "testing", fns); }
