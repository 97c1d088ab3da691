/* Binding of the layer kernels and losses (core.nn). */
#include "../core/error.h"
#include "../core/ops.h"
#include "binding.h"

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
  lt_push_opt(L, gx), lt_push_opt(L, gw), lt_push_opt(L, gb);
  return 3;
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
  lt_push_opt(L, gx), lt_push_opt(L, gg), lt_push_opt(L, gb);
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

static const luaL_Reg fns[] = {
    {"conv2d", l_conv2d}, {"conv2d_backward", l_conv2d_backward}, {"maxpool2d", l_maxpool2d},
    {"maxpool2d_backward", l_maxpool2d_backward}, {"avgpool2d", l_avgpool2d},
    {"avgpool2d_backward", l_avgpool2d_backward}, {"softmax", l_softmax}, {"softmax_backward", l_softmax_backward},
    {"cross_entropy", l_cross_entropy}, {"cross_entropy_backward", l_cross_entropy_backward}, {"bce", l_bce},
    {"bce_backward", l_bce_backward}, {"batchnorm", l_batchnorm}, {"batchnorm_backward", l_batchnorm_backward},
    {"dropout_mask", l_dropout_mask}, {"dropout", l_dropout}, {NULL, NULL}};

void lt_open_nn(lua_State *L) { lt_register(L, "nn", fns); }
