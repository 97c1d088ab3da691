/* Binding of the white-box watermark losses (core.watermark): one function per
 * variant returning the loss and its gradients. */
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
    int ok;
    v[k] = (int64_t)lua_tointegerx(L, -1, &ok) + add;
    if (!ok) luaL_error(L, "entry %d of argument #%d is not an integer", (int)k + 1, idx);
    lua_pop(L, 1);
  }
  return v;
}

/* reference_loss(h, y, c, A, b, targets{class ids}, l1, l2) -> loss, d/dh, d/dc */
static int l_reference_loss(lua_State *L) {
  int64_t s, *targets = int_list(L, 6, &s, 0);
  ds_tensor *gh, *gc;
  float v;
  if (ds_wm_reference_loss(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), lt_check(L, 4), lt_check(L, 5), targets, s,
                           (float)luaL_checknumber(L, 7), (float)luaL_checknumber(L, 8), &v, &gh, &gc))
    return lt_raise(L);
  lt_push(L, ds_scalar_tensor(v));
  lt_push(L, gh);
  lt_push(L, gc);
  return 3;
}

/* paper_loss(h, y, mu, A, b, targets{class ids}, l1, l2) -> loss, d/dh, d/dmu */
static int l_paper_loss(lua_State *L) {
  int64_t s, *targets = int_list(L, 6, &s, 0);
  ds_tensor *gh, *gmu;
  float v;
  if (ds_wm_paper_loss(lt_check(L, 1), lt_check(L, 2), lt_check(L, 3), lt_check(L, 4), lt_check(L, 5), targets, s,
                       (float)luaL_checknumber(L, 7), (float)luaL_checknumber(L, 8), &v, &gh, &gmu))
    return lt_raise(L);
  lt_push(L, ds_scalar_tensor(v));
  lt_push(L, gh);
  lt_push(L, gmu);
  return 3;
}

static const luaL_Reg fns[] = {{"reference_loss", l_reference_loss}, {"paper_loss", l_paper_loss}, {NULL, NULL}};

void lt_open_watermark(lua_State *L) { lt_register(L, "watermark", fns); }
