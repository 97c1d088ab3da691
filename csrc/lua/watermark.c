/* Binding of the white-box watermark loss ops. A class map is a Lua table
 * {[class id + 1] = centre row (1-based) or 0}, or nil (row = class id). */
#include <stdlib.h>
#include "../core/error.h"
#include "../core/ops_watermark.h"
#include "binding.h"

/* class map at idx into a malloc'd array of 0-based rows (-1: none) */
static int64_t *class_map(lua_State *L, int idx, int64_t *classes) {
  if (lua_isnoneornil(L, idx)) return NULL;
  luaL_checktype(L, idx, LUA_TTABLE);
  int64_t n = (int64_t)luaL_len(L, idx);
  int64_t *map = malloc(sizeof *map * (size_t)(n + 1));
  if (!map) luaL_error(L, "out of memory");
  for (int64_t k = 0; k < n; k++) {
    lua_geti(L, idx, k + 1);
    map[k] = lua_tointeger(L, -1) - 1;
    lua_pop(L, 1);
  }
  *classes = n;
  return map;
}

/* (h, y, c, map|nil, classes) -> loss */
static int l_pull(lua_State *L) {
  int64_t classes = luaL_optinteger(L, 5, 0);
  int64_t *map = class_map(L, 4, &classes);
  ds_tensor *r = ds_wm_pull(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), map, classes);
  free(map);
  lt_push(L, r);
  return 1;
}

static int l_pull_backward(lua_State *L) { /* (h, y, c, map, classes, g) -> gh, gc */
  int64_t classes = luaL_optinteger(L, 5, 0);
  float g = (float)luaL_checknumber(L, 6);
  int64_t *map = class_map(L, 4, &classes);
  ds_tensor *gh, *gc;
  int rc = ds_wm_pull_backward(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), map, classes, g, &gh, &gc);
  free(map);
  if (rc) return lt_raise(L);
  lt_push(L, gh);
  lt_push(L, gc);
  return 2;
}

static int l_push(lua_State *L) {
  int64_t classes = luaL_optinteger(L, 5, 0);
  int64_t *map = class_map(L, 4, &classes);
  ds_tensor *r = ds_wm_push(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), map, classes);
  free(map);
  lt_push(L, r);
  return 1;
}

static int l_push_backward(lua_State *L) {
  int64_t classes = luaL_optinteger(L, 5, 0);
  float g = (float)luaL_checknumber(L, 6);
  int64_t *map = class_map(L, 4, &classes);
  ds_tensor *r = ds_wm_push_backward(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), map, classes, g);
  free(map);
  lt_push(L, r);
  return 1;
}

static int l_separation(lua_State *L) { lt_push(L, ds_wm_separation(lt_check(L, 1), lt_check(L, 2))); return 1; }
static int l_separation_backward(lua_State *L) {
  lt_push(L, ds_wm_separation_backward(lt_check(L, 1), lt_check(L, 2), (float)luaL_checknumber(L, 3)));
  return 1;
}
static int l_unit_norm(lua_State *L) { lt_push(L, ds_wm_unit_norm(lt_check(L, 1))); return 1; }
static int l_unit_norm_backward(lua_State *L) {
  lt_push(L, ds_wm_unit_norm_backward(lt_check(L, 1), (float)luaL_checknumber(L, 2)));
  return 1;
}
static int l_projection(lua_State *L) {
  lt_push(L, ds_wm_projection(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3)));
  return 1;
}
static int l_projection_backward(lua_State *L) {
  lt_push(L, ds_wm_projection_backward(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), (float)luaL_checknumber(L, 4)));
  return 1;
}

static const luaL_Reg fns[] = {{"wm_pull", l_pull}, {"wm_pull_backward", l_pull_backward}, {"wm_push", l_push},
                               {"wm_push_backward", l_push_backward}, {"wm_separation", l_separation},
                               {"wm_separation_backward", l_separation_backward}, {"wm_unit_norm", l_unit_norm},
                               {"wm_unit_norm_backward", l_unit_norm_backward}, {"wm_projection", l_projection},
                               {"wm_projection_backward", l_projection_backward}, {NULL, NULL}};

void lt_open_watermark(lua_State *L) { luaL_setfuncs(L, fns, 0); }
