/* Binding of the layer kernels, losses, optimiser steps and the generator. */
#include <stdlib.h>
#include <string.h>
#include "../core/blas.h"
#include "../core/conv_direct.h"
#include "../core/error.h"
#include "../core/ops.h"
#include "../core/rng.h"
#include "binding.h"

static void push_opt(lua_State *L, ds_tensor *t) {
  if (t) lt_push(L, t);
  else lua_pushnil(L);
}

/* stride h, w and padding h, w at idx..idx+3 */
static ds_conv_params conv_params(lua_State *L, int idx) {
  ds_conv_params p = {0, 0, (int)luaL_optinteger(L, idx, 1), (int)luaL_optinteger(L, idx + 1, 1),
                      (int)luaL_optinteger(L, idx + 2, 0), (int)luaL_optinteger(L, idx + 3, 0)};
  return p;
}

static int l_conv2d(lua_State *L) { /* conv2d(x, w, b|nil, sh, sw, ph, pw, relu?) */
  lt_push(L, ds_conv2d(lt_check(L, 1), lt_check(L, 2), lt_opt(L, 3), conv_params(L, 4), lua_toboolean(L, 8)));
  return 1;
}

/* (x, w, gy, sh, sw, ph, pw, need_x, need_w, need_b, y of a fused relu?) */
static int l_conv2d_backward(lua_State *L) {
  ds_tensor *gx = NULL, *gw = NULL, *gb = NULL;
  if (ds_conv2d_backward(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), lt_opt(L, 11), conv_params(L, 4),
                         lua_toboolean(L, 8) ? &gx : NULL, lua_toboolean(L, 9) ? &gw : NULL,
                         lua_toboolean(L, 10) ? &gb : NULL))
    return lt_raise(L);
  push_opt(L, gx), push_opt(L, gw), push_opt(L, gb);
  return 3;
}

/* conv_direct([on]) -> whether stride-1 convolutions took the direct path (test hook:
 * off sends them to im2col + GEMM, so the specs can compare the two) */
static int l_conv_direct(lua_State *L) {
  lua_pushboolean(L, ds_cdir_enabled());
  if (!lua_isnone(L, 1)) ds_cdir_set_enabled(lua_toboolean(L, 1));
  return 1;
}

/* pooling: (x, kh, kw, sh, sw, ph, pw) */
static ds_conv_params pool_params(lua_State *L, int idx) {
  ds_conv_params p = conv_params(L, idx + 2);
  p.kh = (int)luaL_checkinteger(L, idx);
  p.kw = (int)luaL_checkinteger(L, idx + 1);
  return p;
}

static int l_maxpool2d(lua_State *L) { lt_push(L, ds_maxpool2d(lt_check(L, 1), pool_params(L, 2))); return 1; }
static int l_avgpool2d(lua_State *L) { lt_push(L, ds_avgpool2d(lt_check(L, 1), pool_params(L, 2))); return 1; }
static int l_maxpool2d_backward(lua_State *L) { /* (x, gy, kh, kw, sh, sw, ph, pw) */
  lt_push(L, ds_maxpool2d_backward(lt_check(L, 1), lt_check(L, 2), pool_params(L, 3)));
  return 1;
}
static int l_avgpool2d_backward(lua_State *L) {
  lt_push(L, ds_avgpool2d_backward(lt_check(L, 1), lt_check(L, 2), pool_params(L, 3)));
  return 1;
}

static int l_softmax(lua_State *L) { lt_push(L, ds_softmax(lt_check(L, 1), lua_toboolean(L, 2))); return 1; }
static int l_softmax_backward(lua_State *L) {
  lt_push(L, ds_softmax_backward(lt_check(L, 1), lt_check(L, 2), lua_toboolean(L, 3)));
  return 1;
}

static int l_cross_entropy(lua_State *L) { /* (logits, target, smoothing) -> loss, probs */
  ds_tensor *probs = NULL;
  ds_tensor *loss = ds_cross_entropy(lt_check(L, 1), lt_check(L, 2), (float)luaL_optnumber(L, 3, 0), &probs);
  if (!loss) return lt_raise(L);
  lt_push(L, loss);
  lt_push(L, probs);
  return 2;
}

static int l_cross_entropy_backward(lua_State *L) { /* (probs, target, smoothing, g) */
  lt_push(L, ds_cross_entropy_backward(lt_check(L, 1), lt_check(L, 2), (float)luaL_optnumber(L, 3, 0),
                                       (float)luaL_optnumber(L, 4, 1)));
  return 1;
}

static int l_bce(lua_State *L) { lt_push(L, ds_bce(lt_check(L, 1), lt_check(L, 2))); return 1; }
static int l_bce_backward(lua_State *L) {
  lt_push(L, ds_bce_backward(lt_check(L, 1), lt_check(L, 2), (float)luaL_optnumber(L, 3, 1)));
  return 1;
}

/* batchnorm(x, gamma, beta, run_mean, run_var, training, momentum, eps) -> y, mean, invstd */
static int l_batchnorm(lua_State *L) {
  ds_tensor *m = NULL, *s = NULL;
  ds_tensor *y = ds_batchnorm(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), lt_check(L, 4), lt_check(L, 5),
                              lua_toboolean(L, 6), (float)luaL_optnumber(L, 7, 0.1),
                              (float)luaL_optnumber(L, 8, 1e-5), &m, &s);
  if (!y) return lt_raise(L);
  lt_push(L, y);
  lt_push(L, m);
  lt_push(L, s);
  return 3;
}

/* batchnorm_backward(x, gamma, mean, invstd, gy, training, need_x) -> gx|nil, ggamma, gbeta */
static int l_batchnorm_backward(lua_State *L) {
  ds_tensor *gx = NULL, *gg = NULL, *gb = NULL;
  if (ds_batchnorm_backward(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), lt_check(L, 4), lt_check(L, 5),
                            lua_toboolean(L, 6), lua_toboolean(L, 7) ? &gx : NULL, &gg, &gb))
    return lt_raise(L);
  push_opt(L, gx), push_opt(L, gg), push_opt(L, gb);
  return 3;
}

static int l_dropout(lua_State *L) { /* (x, p) -> x * mask, mask */
  ds_tensor *mask = NULL, *y = ds_dropout(lt_check(L, 1), (float)luaL_checknumber(L, 2), &mask);
  if (!y) return lt_raise(L);
  lt_push(L, y);
  lt_push(L, mask);
  return 2;
}

static int l_dropout_mask(lua_State *L) {
  lt_push(L, ds_dropout_mask(lt_check(L, 1), (float)luaL_checknumber(L, 2)));
  return 1;
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

static float num(lua_State *L, int idx) { return (float)luaL_checknumber(L, idx); }

/* each step's last argument, clear: g is set to zero in the same pass */
static int l_sgd_step(lua_State *L) { /* (p, g, buf|nil, lr, momentum, dampening, nesterov, wd, first, clear) */
  if (ds_sgd_step(lt_check(L, 1), lt_check(L, 2), lt_opt(L, 3), num(L, 4), num(L, 5), num(L, 6),
                  lua_toboolean(L, 7), num(L, 8), lua_toboolean(L, 9), lua_toboolean(L, 10)))
    return lt_raise(L);
  return 0;
}

static int l_adam_step(lua_State *L) { /* (p, g, m, v, lr, b1, b2, eps, wd, decoupled, step, clear) */
  if (ds_adam_step(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), lt_check(L, 4), num(L, 5), num(L, 6),
                   num(L, 7), num(L, 8), num(L, 9), lua_toboolean(L, 10), luaL_checkinteger(L, 11),
                   lua_toboolean(L, 12)))
    return lt_raise(L);
  return 0;
}

static int l_rmsprop_step(lua_State *L) { /* (p, g, sq, lr, rho, eps, wd, clear) */
  if (ds_rmsprop_step(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), num(L, 4), num(L, 5), num(L, 6), num(L, 7),
                      lua_toboolean(L, 8)))
    return lt_raise(L);
  return 0;
}

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

static int l_memory(lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, ds_live_tensors());
  lua_setfield(L, -2, "tensors");
  lua_pushinteger(L, ds_live_bytes());
  lua_setfield(L, -2, "bytes");
  return 1;
}

static int l_set_num_threads(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  if (n < 1) return luaL_argerror(L, 1, "number of threads must be >= 1");
  ds_set_num_threads((int)n);
  return 0;
}

static int l_get_num_threads(lua_State *L) { lua_pushinteger(L, ds_get_num_threads()); return 1; }

static const luaL_Reg fns[] = {
    {"conv2d", l_conv2d}, {"conv2d_backward", l_conv2d_backward}, {"conv_direct", l_conv_direct}, {"maxpool2d", l_maxpool2d},
    {"maxpool2d_backward", l_maxpool2d_backward}, {"avgpool2d", l_avgpool2d},
    {"avgpool2d_backward", l_avgpool2d_backward}, {"softmax", l_softmax},
    {"softmax_backward", l_softmax_backward}, {"cross_entropy", l_cross_entropy},
    {"cross_entropy_backward", l_cross_entropy_backward}, {"bce", l_bce}, {"bce_backward", l_bce_backward},
    {"batchnorm", l_batchnorm}, {"batchnorm_backward", l_batchnorm_backward},
    {"dropout_mask", l_dropout_mask}, {"dropout", l_dropout}, {"index_select", l_index_select}, {"index_add", l_index_add},
    {"gather_rows", l_gather_rows}, {"gather_rows_backward", l_gather_rows_backward},
    {"sgd_step", l_sgd_step}, {"adam_step", l_adam_step}, {"rmsprop_step", l_rmsprop_step},
    {"seed", l_seed}, {"rng_state", l_rng_state}, {"set_rng_state", l_set_rng_state},
    {"uniform", l_uniform}, {"normal", l_normal}, {"randint", l_randint}, {"randperm", l_randperm},
    {"memory", l_memory}, {"set_num_threads", l_set_num_threads}, {"get_num_threads", l_get_num_threads},
    {NULL, NULL}};

void lt_open_nn(lua_State *L) { luaL_setfuncs(L, fns, 0); }
