/* Shared helpers of the Lua binding. A Lua tensor is a full userdata box that
 * holds one reference to a core ds_tensor, plus one user value (a table the Lua
 * side uses for autograd state). The module deepsigns.core is a table of areas,
 * each a table of functions registered by one file of this folder:
 *   tensor (tensor_box.c), ops (ops.c), nn (nn.c), optim (optim.c), rng (rng.c),
 *   data (io.c), sys (sys.c), watermark (watermark.c), testing (testing.c: reference
 *   and switch functions the specs use, not part of the library's API). */
#ifndef DS_BINDING_H
#define DS_BINDING_H

#include <lauxlib.h>
#include <lua.h>
#include "../core/tensor.h"

#define LT_TENSOR "deepsigns.Tensor"

ds_tensor *lt_check(lua_State *L, int idx);
ds_tensor *lt_opt(lua_State *L, int idx); /* nil -> NULL */
/* Pushes a box owning t; t == NULL raises the core's last error. */
void lt_push(lua_State *L, ds_tensor *t);
/* Pushes t's box, or nil for NULL (an optional result). */
void lt_push_opt(lua_State *L, ds_tensor *t);
/* Raises the core's last error. */
int lt_raise(lua_State *L);
/* 1-based (or negative, from the end) dimension argument -> 0-based. */
int lt_dim(lua_State *L, int idx, const ds_tensor *t);
/* Shape from a table {2,3} or from the integer arguments starting at idx. */
int lt_shape(lua_State *L, int idx, int64_t *shape);
/* 1-based indices from a table or tensor at idx into a malloc'd 0-based array. */
int64_t *lt_indices(lua_State *L, int idx, int64_t bound, int64_t *n);

/* Sets module[area] to a new table of fns (the module table is on the stack top). */
void lt_register(lua_State *L, const char *area, const luaL_Reg *fns);

void lt_open_tensor(lua_State *L);
void lt_open_ops(lua_State *L);
void lt_open_nn(lua_State *L);
void lt_open_optim(lua_State *L);
void lt_open_rng(lua_State *L);
void lt_open_data(lua_State *L);
void lt_open_sys(lua_State *L);
void lt_open_watermark(lua_State *L);
void lt_open_testing(lua_State *L);

#endif
