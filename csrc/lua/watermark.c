/* Binding of the white-box watermark loss ops. A class map is a Lua table
 * {[class id + 1] = centre row (1-based) or 0}, or nil (row = class id). */
#include <stdlib.h>
#include "../core/error.h"
#include "../core/ops_watermark.h"
#include "binding.h"

/* The integer list at idx, each value plus `add`, in a userdata left on the stack
 * (collected with it, so a later argument error leaks nothing). */
static int64_t *int_list(lua_State *L, int idx, int64_t *n, int64_t add) {
  luaL_checktype(L, idx, LUA_TTABLE);
  *n = (int64_t)luaL_len(L, idx);
  int64_t *v = lua_newuserdatauv(L, sizeof *v * (size_t)(*n + 1), 0);
  for (int64_t k = 0; k < *n; k++) {
    lua_geti(L, idx, k + 1);
    v[k] = (int64_t)lua_tointeger(L, -1) + add;
    lua_pop(L, 1);
  }
  return v;
}

/* class map at idx as an array of 0-based rows (-1: none) */
static int64_t *class_map(lua_State *L, int idx, int64_t *classes) {
  if (lua_isnoneornil(L, idx)) return NULL;
  return int_list(L, idx, classes, -1);
}

/* (h, y, c, map|nil, classes) -> loss */
static int l_pull(lua_State *L) {
  int64_t classes = luaL_optinteger(L, 5, 0);
  int64_t *map = class_map(L, 4, &classes);
  ds_tensor *r = ds_wm_pull(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), map, classes);
  lt_push(L, r);
  return 1;
}

static int l_pull_backward(lua_State *L) { /* (h, y, c, map, classes, g) -> gh, gc */
  int64_t classes = luaL_optinteger(L, 5, 0);
  float g = (float)luaL_checknumber(L, 6);
  int64_t *map = class_map(L, 4, &classes);
  ds_tensor *gh, *gc;
  int rc = ds_wm_pull_backward(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), map, classes, g, &gh, &gc);
  if (rc) return lt_raise(L);
  lt_push(L, gh);
  lt_push(L, gc);
  return 2;
}

static int l_push(lua_State *L) {
  int64_t classes = luaL_optinteger(L, 5, 0);
  int64_t *map = class_map(L, 4, &classes);
  ds_tensor *r = ds_wm_push(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), map, classes);
  lt_push(L, r);
  return 1;
}

static int l_push_backward(lua_State *L) {
  int64_t classes = luaL_optinteger(L, 5, 0);
  float g = (float)luaL_checknumber(L, 6);
  int64_t *map = class_map(L, 4, &classes);
  ds_tensor *r = ds_wm_push_backward(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), map, classes, g);
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

/* (h, y, c, A, b, targets{class ids}, l1, l2) -> loss, d/dc (d/dh: wm_pull_add) */
static int l_reference_loss(lua_State *L) {
  int64_t s, *targets = int_list(L, 6, &s, 0);
  ds_tensor *gc;
  float v;
  if (ds_wm_reference_loss(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), lt_check(L, 4), lt_check(L, 5), targets, s,
                           (float)luaL_checknumber(L, 7), (float)luaL_checknumber(L, 8), &v, &gc))
    return lt_raise(L);
  lt_push(L, ds_scalar_tensor(v));
  lt_push(L, gc);
  return 2;
}

/* (x, y, c, A, b, targets, l1, l2[, over]) -> relu(x), and wm_reference_loss's loss and
 * centre gradient on it, made in the same pass; over: relu(x) written over x */
static int l_relu_reference(lua_State *L) {
  int64_t s, *targets = int_list(L, 6, &s, 0);
  ds_tensor *gc;
  float v;
  ds_tensor *h = ds_wm_relu_reference(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), lt_check(L, 4), lt_check(L, 5),
                                      targets, s, (float)luaL_checknumber(L, 7), (float)luaL_checknumber(L, 8),
                                      lua_toboolean(L, 9), &v, &gc);
  if (!h) return lt_raise(L);
  lt_push(L, h);
  lt_push(L, ds_scalar_tensor(v));
  lt_push(L, gc);
  return 3;
}

/* (x, y, c, map|nil, classes, g) -> relu(x), the pull's value, g * its centres' gradient */
static int l_relu_pull(lua_State *L) {
  int64_t classes = luaL_optinteger(L, 5, 0);
  int64_t *map = class_map(L, 4, &classes);
  double v;
  ds_tensor *gc, *h = ds_wm_relu_pull(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), map, classes,
                                      (float)luaL_checknumber(L, 6), &v, &gc);
  if (!h) return lt_raise(L);
  lt_push(L, h);
  lua_pushnumber(L, v);
  lt_push(L, gc);
  return 3;
}

/* (h, y, mu, A, b, map, l1, l2) -> loss, d/dh on the target rows (or nil), d/dmu,
 * those rows' ids (or nil) */
static int l_paper_loss(lua_State *L) {
  int64_t classes, *map = int_list(L, 6, &classes, -1);
  ds_tensor *gt, *gmu, *ri;
  float v;
  if (ds_wm_paper_loss(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), lt_check(L, 4), lt_check(L, 5), map, classes,
                       (float)luaL_checknumber(L, 7), (float)luaL_checknumber(L, 8), &v, &gt, &ri, &gmu))
    return lt_raise(L);
  lt_push(L, ds_scalar_tensor(v));
  if (gt) lt_push(L, gt);
  else lua_pushnil(L);
  lt_push(L, gmu);
  if (ri) lt_push(L, ri);
  else lua_pushnil(L);
  return 4;
}

/* (acc, h, y, c, map|nil, classes, g): acc += g * d pull / dh, in place */
static int l_pull_add(lua_State *L) {
  int64_t classes = luaL_optinteger(L, 6, 0);
  int64_t *map = class_map(L, 5, &classes);
  if (ds_wm_pull_add(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), lt_check(L, 4), map, classes,
                     (float)luaL_checknumber(L, 7)))
    return lt_raise(L);
  return 0;
}

/* (x, gh, y, c, map|nil, classes, g[, into]) -> [x > 0] (gh + g (x - c_y)), a new tensor
 * or into itself */
static int l_relu_pull_backward(lua_State *L) {
  int64_t classes = luaL_optinteger(L, 6, 0);
  int64_t *map = class_map(L, 5, &classes);
  ds_tensor *into = lt_opt(L, 8);
  ds_tensor *r = ds_wm_relu_pull_backward(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), lt_check(L, 4), map,
                                          classes, (float)luaL_checknumber(L, 7), into);
  return lt_push_result(L, r, into ? 8 : 0);
}

/* (acc, rows, src, g): acc[rows[k]] += g src[k] */
static int l_rows_add(lua_State *L) {
  if (ds_rows_add(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), (float)luaL_checknumber(L, 4))) return lt_raise(L);
  return 0;
}

static const luaL_Reg fns[] = {{"wm_reference_loss", l_reference_loss}, {"wm_paper_loss", l_paper_loss},
                               {"wm_pull_add", l_pull_add}, {"wm_rows_add", l_rows_add},
                               {"wm_relu_pull_backward", l_relu_pull_backward}, {"wm_relu_pull", l_relu_pull}, {"wm_relu_reference", l_relu_reference},
                               {"wm_pull", l_pull}, {"wm_pull_backward", l_pull_backward}, {"wm_push", l_push},
                               {"wm_push_backward", l_push_backward}, {"wm_separation", l_separation},
                               {"wm_separation_backward", l_separation_backward}, {"wm_unit_norm", l_unit_norm},
                               {"wm_unit_norm_backward", l_unit_norm_backward}, {"wm_projection", l_projection},
                               {"wm_projection_backward", l_projection_backward}, {NULL, NULL}};

void lt_open_watermark(lua_State *L) { luaL_setfuncs(L, fns, 0); }
