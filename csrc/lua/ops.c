/* Binding of the pointwise ops, reductions and linear algebra. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../core/error.h"
#include "../core/ops.h"
#include "binding.h"

static int op_index(lua_State *L, int idx, const char *const *names, int count) {
  const char *name = luaL_checkstring(L, idx);
  for (int i = 0; i < count; i++)
    if (strcmp(names[i], name) == 0) return i;
  return luaL_argerror(L, idx, lua_pushfstring(L, "unknown op '%s'", name));
}

/* A number operand becomes a 0-dim tensor that broadcasts. */
static ds_tensor *operand(lua_State *L, int idx, ds_tensor **tmp) {
  if (lua_type(L, idx) == LUA_TNUMBER) {
    *tmp = ds_scalar_tensor((float)lua_tonumber(L, idx));
    if (!*tmp) lt_raise(L);
    return *tmp;
  }
  *tmp = NULL;
  return lt_check(L, idx);
}

static int l_binary(lua_State *L) { /* binary(op, a, b) */
  int op = op_index(L, 1, ds_binary_names, DS_BINARY_COUNT);
  ds_tensor *ta, *tb;
  ds_tensor *a = operand(L, 2, &ta);
  ds_tensor *b = lua_type(L, 3) == LUA_TNUMBER ? operand(L, 3, &tb) : (tb = NULL, luaL_testudata(L, 3, LT_TENSOR) ? lt_check(L, 3) : NULL);
  if (!b) {
    ds_release(ta);
    return luaL_typeerror(L, 3, "deepsigns.Tensor or number");
  }
  ds_tensor *r = ds_binary(op, a, b);
  ds_release(ta), ds_release(tb);
  lt_push(L, r);
  return 1;
}

static int l_binary_(lua_State *L) { /* binary_(op, out, a, b): in place */
  int op = op_index(L, 1, ds_binary_names, DS_BINARY_COUNT);
  ds_tensor *out = lt_check(L, 2);
  ds_tensor *ta, *tb, *a = operand(L, 3, &ta);
  ds_tensor *b = lua_type(L, 4) == LUA_TNUMBER ? operand(L, 4, &tb) : (tb = NULL, lt_check(L, 4));
  int rc = ds_binary_into(op, out, a, b);
  ds_release(ta), ds_release(tb);
  if (rc) return lt_raise(L);
  lua_settop(L, 2);
  return 1;
}

static int l_unary(lua_State *L) { /* unary(op, x, p) */
  int op = op_index(L, 1, ds_unary_names, DS_UNARY_COUNT);
  lt_push(L, ds_unary(op, lt_check(L, 2), (float)luaL_optnumber(L, 3, 0)));
  return 1;
}

static int l_unary_(lua_State *L) { /* unary_(op, x, p): in place */
  int op = op_index(L, 1, ds_unary_names, DS_UNARY_COUNT);
  ds_tensor *x = lt_check(L, 2);
  if (ds_unary_into(op, x, x, (float)luaL_optnumber(L, 3, 0))) return lt_raise(L);
  lua_settop(L, 2);
  return 1;
}

static int l_unary_backward(lua_State *L) { /* unary_backward(op, x, y|nil, gy, p) */
  int op = op_index(L, 1, ds_unary_names, DS_UNARY_COUNT);
  lt_push(L, ds_unary_backward(op, lt_check(L, 2), lt_opt(L, 3), lt_check(L, 4), (float)luaL_optnumber(L, 5, 0)));
  return 1;
}

static int l_axpy(lua_State *L) { /* axpy_(out, alpha, x) */
  if (ds_axpy(lt_check(L, 1), (float)luaL_checknumber(L, 2), lt_check(L, 3))) return lt_raise(L);
  lua_settop(L, 1);
  return 1;
}

static int l_sum(lua_State *L) { /* sum(x, dim?, keepdim?) */
  ds_tensor *x = lt_check(L, 1);
  if (lua_isnoneornil(L, 2)) lt_push(L, ds_sum_all(x));
  else lt_push(L, ds_sum_dim(x, lt_dim(L, 2, x), lua_toboolean(L, 3)));
  return 1;
}

static int l_sum_to(lua_State *L) { /* sum_to(g, shape) */
  int64_t shape[DS_MAXDIM];
  ds_tensor *g = lt_check(L, 1);
  int n = lt_shape(L, 2, shape);
  lt_push(L, ds_sum_to(g, n, shape));
  return 1;
}

/* max(x) -> scalar | max(x, dim, keepdim) -> values, and their 0-based positions along dim */
static int l_max(lua_State *L) {
  ds_tensor *x = lt_check(L, 1);
  if (lua_isnoneornil(L, 2)) {
    lt_push(L, ds_max_all(x));
    return 1;
  }
  ds_tensor *v, *ix;
  if (ds_max_dim(x, lt_dim(L, 2, x), lua_toboolean(L, 3), &v, &ix)) return lt_raise(L);
  lt_push(L, v);
  lt_push(L, ix);
  return 2;
}

static int l_all_finite(lua_State *L) { lua_pushboolean(L, ds_all_finite(lt_check(L, 1))); return 1; }

static int l_moments(lua_State *L) { /* mean, std of all elements */
  double mean, var;
  if (ds_moments(lt_check(L, 1), &mean, &var)) return lt_raise(L);
  lua_pushnumber(L, mean);
  lua_pushnumber(L, sqrt(var));
  return 2;
}

static int l_abs_kth(lua_State *L) { /* abs_kth({tensors}, k 1-based) */
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = (int)luaL_len(L, 1);
  if (n < 1 || n > 4096) return luaL_argerror(L, 1, "expects 1 to 4096 tensors");
  static ds_tensor *ts[4096]; /* not re-entrant; Lua is single-threaded here */
  for (int i = 0; i < n; i++) {
    lua_geti(L, 1, i + 1);
    ts[i] = lt_check(L, -1);
    lua_pop(L, 1); /* still referenced by the table */
  }
  float v;
  if (ds_abs_kth(ts, n, luaL_checkinteger(L, 2) - 1, &v)) return lt_raise(L);
  lua_pushnumber(L, v);
  return 1;
}

static int l_matmul(lua_State *L) { lt_push(L, ds_matmul(lt_check(L, 1), lt_check(L, 2))); return 1; }

static int l_linear(lua_State *L) { /* linear(x, w, b|nil, relu?) */
  lt_push(L, ds_linear(lt_check(L, 1), lt_check(L, 2), lt_opt(L, 3), lua_toboolean(L, 4)));
  return 1;
}

/* linear_backward(x, w, gy, yrelu|nil, need_x, gw|nil, gb|nil) -> gx|nil; the weight and
 * bias gradients are added into gw and gb */
static int l_linear_backward(lua_State *L) {
  ds_tensor *gx = NULL;
  int need_x = lua_toboolean(L, 5);
  if (ds_linear_backward(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), lt_opt(L, 4), need_x ? &gx : NULL,
                         lt_opt(L, 6), lt_opt(L, 7)))
    return lt_raise(L);
  lt_push_opt(L, gx);
  return 1;
}

static int l_sqdist(lua_State *L) { lt_push(L, ds_sqdist(lt_check(L, 1), lt_check(L, 2))); return 1; }

static int l_sqdist_backward(lua_State *L) { /* (a, b, g) -> ga, gb */
  ds_tensor *ga, *gb;
  if (ds_sqdist_backward(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), &ga, &gb)) return lt_raise(L);
  lt_push(L, ga);
  lt_push(L, gb);
  return 2;
}

static int l_index_select(lua_State *L) { /* (x, indices 1-based) */
  ds_tensor *x = lt_check(L, 1);
  if (x->ndim < 1) return luaL_argerror(L, 1, "cannot index a scalar");
  int64_t n, *idx = lt_indices(L, 2, x->shape[0], &n);
  ds_tensor *r = ds_index_select(x, idx, n);
  free(idx);
  lt_push(L, r);
  return 1;
}

static int l_index_add(lua_State *L) { /* (like, indices 1-based, g): zeros like `like` + g at rows */
  ds_tensor *like = lt_check(L, 1);
  if (like->ndim < 1) return luaL_argerror(L, 1, "cannot index a scalar");
  int64_t n, *idx = lt_indices(L, 2, like->shape[0], &n);
  ds_tensor *r = ds_index_add(like->ndim, like->shape, idx, n, lt_check(L, 3));
  free(idx);
  lt_push(L, r);
  return 1;
}

static int l_gather_rows(lua_State *L) { lt_push(L, ds_gather_rows(lt_check(L, 1), lt_check(L, 2))); return 1; }
static int l_gather_rows_backward(lua_State *L) {
  lt_push(L, ds_gather_rows_backward(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3)));
  return 1;
}

static const luaL_Reg fns[] = {
    {"binary", l_binary}, {"binary_", l_binary_}, {"unary", l_unary}, {"unary_", l_unary_},
    {"unary_backward", l_unary_backward}, {"axpy_", l_axpy}, {"sum", l_sum}, {"sum_to", l_sum_to}, {"max", l_max},
    {"all_finite", l_all_finite}, {"moments", l_moments}, {"abs_kth", l_abs_kth}, {"matmul", l_matmul},
    {"linear", l_linear}, {"linear_backward", l_linear_backward}, {"sqdist", l_sqdist},
    {"sqdist_backward", l_sqdist_backward}, {"index_select", l_index_select}, {"index_add", l_index_add},
    {"gather_rows", l_gather_rows}, {"gather_rows_backward", l_gather_rows_backward}, {NULL, NULL}};

void lt_open_ops(lua_State *L) { lt_register(L, "ops", fns); }
