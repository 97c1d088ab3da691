/* The tensor box: metatable, construction, views, element access, conversion. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../core/error.h"
#include "binding.h"

/* Memory outside Lua's heap: prompt a full collection when it has grown well
 * past what was live after the last one (Torch's approach). */
static int64_t gc_threshold = 64 << 20;

static void maybe_collect(lua_State *L) {
  if (ds_live_bytes() > gc_threshold) {
    lua_gc(L, LUA_GCCOLLECT);
    int64_t live = ds_live_bytes(), room = live / 4;
    gc_threshold = live + (room > (64 << 20) ? room : (64 << 20));
  }
}

int lt_raise(lua_State *L) { return luaL_error(L, "%s", ds_last_error()); }

void lt_push(lua_State *L, ds_tensor *t) {
  if (!t) lt_raise(L);
  ds_tensor **box = lua_newuserdatauv(L, sizeof *box, 1);
  *box = t;
  luaL_setmetatable(L, LT_TENSOR);
  maybe_collect(L);
}

ds_tensor *lt_check(lua_State *L, int idx) {
  ds_tensor **box = luaL_checkudata(L, idx, LT_TENSOR);
  if (!*box) luaL_argerror(L, idx, "tensor was already freed");
  return *box;
}

ds_tensor *lt_opt(lua_State *L, int idx) { return lua_isnoneornil(L, idx) ? NULL : lt_check(L, idx); }

void lt_push_opt(lua_State *L, ds_tensor *t) {
  if (t) lt_push(L, t);
  else lua_pushnil(L);
}

int lt_dim(lua_State *L, int idx, const ds_tensor *t) {
  lua_Integer d = luaL_checkinteger(L, idx);
  if (d < 0) d += t->ndim + 1;
  if (d < 1 || d > t->ndim) {
    lua_Debug ar;
    const char *fn = "?";
    if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.name) fn = ar.name;
    luaL_error(L, "%s: dimension %d out of range for a %d-dimensional tensor", fn,
               (int)luaL_checkinteger(L, idx), t->ndim);
  }
  return (int)d - 1;
}

int lt_shape(lua_State *L, int idx, int64_t *shape) {
  int n;
  if (lua_istable(L, idx)) {
    n = (int)luaL_len(L, idx);
    if (n > DS_MAXDIM) luaL_error(L, "shape has %d dimensions, at most %d are supported", n, DS_MAXDIM);
    for (int i = 0; i < n; i++) {
      lua_geti(L, idx, i + 1);
      int ok;
      lua_Integer v = lua_tointegerx(L, -1, &ok);
      if (!ok) luaL_error(L, "shape entry %d is not an integer (%s)", i + 1, luaL_typename(L, -1));
      shape[i] = v;
      lua_pop(L, 1);
    }
  } else {
    n = lua_gettop(L) - idx + 1;
    if (n > DS_MAXDIM) luaL_error(L, "shape has %d dimensions, at most %d are supported", n, DS_MAXDIM);
    for (int i = 0; i < n; i++) shape[i] = luaL_checkinteger(L, idx + i);
  }
  if (ds_check_shape("shape", n, shape)) lt_raise(L);
  return n;
}

int64_t *lt_indices(lua_State *L, int idx, int64_t bound, int64_t *n) {
  int64_t *out;
  if (lua_istable(L, idx)) {
    *n = (int64_t)luaL_len(L, idx);
    out = malloc(sizeof *out * (size_t)(*n + 1));
    if (!out) luaL_error(L, "out of memory");
    for (int64_t i = 0; i < *n; i++) {
      lua_geti(L, idx, i + 1);
      int ok;
      lua_Integer v = lua_tointegerx(L, -1, &ok);
      lua_pop(L, 1);
      if (!ok || v < 1 || v > bound) {
        free(out);
        luaL_error(L, "index %d is %s, want an integer in 1..%d", (int)i + 1,
                   ok ? "out of range" : "not an integer", (int)bound);
      }
      out[i] = v - 1;
    }
  } else {
    ds_tensor *t = lt_check(L, idx);
    if (t->ndim != 1) luaL_argerror(L, idx, "indices must be a table or a 1-D tensor");
    *n = t->shape[0];
    out = malloc(sizeof *out * (size_t)(*n + 1));
    if (!out) luaL_error(L, "out of memory");
    for (int64_t i = 0; i < *n; i++) {
      float v = ds_data(t)[i * t->stride[0]];
      if (!(v >= 1 && v <= (float)bound && v == floorf(v))) {
        free(out);
        luaL_error(L, "index %d is %g, want an integer in 1..%d", (int)i + 1, v, (int)bound);
      }
      out[i] = (int64_t)v - 1;
    }
  }
  return out;
}

/* one function for __gc and __close: idempotent */
static int t_free(lua_State *L) {
  ds_tensor **box = luaL_checkudata(L, 1, LT_TENSOR);
  ds_release(*box);
  *box = NULL;
  return 0;
}

static int t_new(lua_State *L, int zero) {
  int64_t shape[DS_MAXDIM];
  int n = lt_shape(L, 1, shape);
  lt_push(L, zero ? ds_tensor_new(n, shape) : ds_tensor_empty(n, shape));
  return 1;
}
static int t_zeros(lua_State *L) { return t_new(L, 1); }
static int t_empty(lua_State *L) { return t_new(L, 0); }

static int t_full(lua_State *L) {
  int64_t shape[DS_MAXDIM];
  luaL_checktype(L, 1, LUA_TTABLE);
  float v = (float)luaL_checknumber(L, 2);
  int n = lt_shape(L, 1, shape);
  ds_tensor *t = ds_tensor_empty(n, shape);
  if (t) ds_fill(t, v);
  lt_push(L, t);
  return 1;
}

/* Nested tables: the shape is read along first elements, then every row is checked. */
static void table_shape(lua_State *L, int idx, int *nd, int64_t *shape) {
  *nd = 0;
  lua_pushvalue(L, idx);
  while (lua_istable(L, -1)) {
    if (*nd == DS_MAXDIM) luaL_error(L, "tensor: tables nested deeper than %d levels", DS_MAXDIM);
    shape[(*nd)++] = (int64_t)luaL_len(L, -1);
    lua_geti(L, -1, 1);
    lua_remove(L, -2);
  }
  lua_pop(L, 1);
}

static void fill_from_table(lua_State *L, int d, int nd, const int64_t *shape, float **dst, char *path,
                            size_t plen) {
  int64_t len = (int64_t)luaL_len(L, -1);
  if (len != shape[d])
    luaL_error(L, "tensor: entry %s has %d elements, expected %d (rows must all have the same length)",
               plen ? path : "(top)", (int)len, (int)shape[d]);
  for (int64_t i = 1; i <= len; i++) {
    lua_geti(L, -1, i);
    size_t n = plen + (size_t)snprintf(path + plen, 256 - plen, "[%d]", (int)i);
    if (d + 1 < nd) {
      if (!lua_istable(L, -1)) luaL_error(L, "tensor: entry %s is a %s, expected a table", path, luaL_typename(L, -1));
      fill_from_table(L, d + 1, nd, shape, dst, path, n < 256 ? n : 255);
    } else {
      int ok;
      lua_Number v = lua_tonumberx(L, -1, &ok);
      if (!ok || lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "tensor: entry %s is a %s, expected a number", path, luaL_typename(L, -1));
      *(*dst)++ = (float)v;
    }
    lua_pop(L, 1);
    path[plen] = 0;
  }
}

static int t_from_table(lua_State *L) {
  if (lua_type(L, 1) == LUA_TNUMBER) {
    lt_push(L, ds_scalar_tensor((float)lua_tonumber(L, 1)));
    return 1;
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  int nd;
  int64_t shape[DS_MAXDIM];
  table_shape(L, 1, &nd, shape);
  /* validate before allocating so a bad table leaks nothing */
  int64_t total = 1;
  for (int d = 0; d < nd; d++) total *= shape[d];
  float *tmp = lua_newuserdatauv(L, sizeof(float) * (size_t)(total + 1), 0);
  float *cur = tmp;
  char path[256] = "";
  lua_pushvalue(L, 1);
  fill_from_table(L, 0, nd, shape, &cur, path, 0);
  lua_pop(L, 1);
  ds_tensor *t = ds_tensor_empty(nd, shape);
  if (t) memcpy(ds_data(t), tmp, sizeof(float) * (size_t)total);
  lt_push(L, t);
  return 1;
}

static int t_size(lua_State *L) {
  ds_tensor *t = lt_check(L, 1);
  if (!lua_isnoneornil(L, 2)) {
    lua_pushinteger(L, t->shape[lt_dim(L, 2, t)]);
    return 1;
  }
  lua_createtable(L, t->ndim, 0);
  for (int d = 0; d < t->ndim; d++) {
    lua_pushinteger(L, t->shape[d]);
    lua_rawseti(L, -2, d + 1);
  }
  return 1;
}

static int t_stride(lua_State *L) {
  ds_tensor *t = lt_check(L, 1);
  lua_createtable(L, t->ndim, 0);
  for (int d = 0; d < t->ndim; d++) {
    lua_pushinteger(L, t->stride[d]);
    lua_rawseti(L, -2, d + 1);
  }
  return 1;
}

static int t_dim(lua_State *L) { lua_pushinteger(L, lt_check(L, 1)->ndim); return 1; }
static int t_numel(lua_State *L) { lua_pushinteger(L, ds_numel(lt_check(L, 1))); return 1; }
static int t_is_contiguous(lua_State *L) { lua_pushboolean(L, ds_is_contiguous(lt_check(L, 1))); return 1; }
static int t_same_shape(lua_State *L) { lua_pushboolean(L, ds_same_shape(lt_check(L, 1), lt_check(L, 2))); return 1; }
static int t_storage_id(lua_State *L) { lua_pushlightuserdata(L, lt_check(L, 1)->storage); return 1; }

static int t_item(lua_State *L) {
  ds_tensor *t = lt_check(L, 1);
  if (ds_numel(t) != 1) {
    char s[128];
    return luaL_error(L, "item: tensor has %d elements (%s), expected exactly one", (int)ds_numel(t),
                      ds_shape_str(t, s, sizeof s));
  }
  int64_t idx[DS_MAXDIM] = {0};
  lua_pushnumber(L, t->storage->data[ds_offset_of(t, idx)]);
  return 1;
}

/* Element at 1-based indices given as arguments idx.. idx+ndim-1. */
static float *element(lua_State *L, ds_tensor *t, int idx, const char *what) {
  int64_t at[DS_MAXDIM];
  int given = lua_gettop(L) - idx + 1;
  if (given < t->ndim) luaL_error(L, "%s: %d indices given for a %d-dimensional tensor", what, given, t->ndim);
  for (int d = 0; d < t->ndim; d++) {
    lua_Integer i = luaL_checkinteger(L, idx + d);
    if (i < 1 || i > t->shape[d])
      luaL_error(L, "%s: index %d out of range for dimension %d of size %d", what, (int)i, d + 1,
                 (int)t->shape[d]);
    at[d] = i - 1;
  }
  return &t->storage->data[ds_offset_of(t, at)];
}

static int t_get(lua_State *L) {
  ds_tensor *t = lt_check(L, 1);
  lua_pushnumber(L, *element(L, t, 2, "get"));
  return 1;
}

static int t_set(lua_State *L) { /* set(t, i, j, ..., v) */
  ds_tensor *t = lt_check(L, 1);
  int top = lua_gettop(L);
  float v = (float)luaL_checknumber(L, top);
  lua_settop(L, top - 1);
  *element(L, t, 2, "set") = v;
  lua_settop(L, 1);
  return 1;
}

/* Flat list of values in row-major order. */
static int t_flat(lua_State *L) {
  ds_tensor *t = lt_check(L, 1);
  ds_tensor *c = ds_contiguous(t);
  if (!c) return lt_raise(L);
  int64_t n = ds_numel(c);
  lua_createtable(L, (int)n, 0);
  for (int64_t i = 0; i < n; i++) {
    lua_pushnumber(L, ds_data(c)[i]);
    lua_rawseti(L, -2, i + 1);
  }
  ds_release(c);
  return 1;
}

static void push_nested(lua_State *L, const float **p, int d, const ds_tensor *t) {
  if (d == t->ndim) {
    lua_pushnumber(L, *(*p)++);
    return;
  }
  lua_createtable(L, (int)t->shape[d], 0);
  for (int64_t i = 0; i < t->shape[d]; i++) {
    push_nested(L, p, d + 1, t);
    lua_rawseti(L, -2, i + 1);
  }
}

static int t_totable(lua_State *L) {
  ds_tensor *t = lt_check(L, 1);
  ds_tensor *c = ds_contiguous(t);
  if (!c) return lt_raise(L);
  luaL_checkstack(L, DS_MAXDIM + 4, "totable");
  const float *p = ds_data(c);
  push_nested(L, &p, 0, c);
  ds_release(c);
  return 1;
}

static int t_view(lua_State *L) {
  ds_tensor *t = lt_check(L, 1);
  int64_t shape[DS_MAXDIM];
  int n = lt_shape(L, 2, shape);
  lt_push(L, ds_view(t, n, shape));
  return 1;
}

static int t_reshape(lua_State *L) {
  ds_tensor *t = lt_check(L, 1);
  int64_t shape[DS_MAXDIM];
  int n = lt_shape(L, 2, shape);
  lt_push(L, ds_reshape(t, n, shape));
  return 1;
}

static int t_expand(lua_State *L) {
  ds_tensor *t = lt_check(L, 1);
  int64_t shape[DS_MAXDIM];
  int n = lt_shape(L, 2, shape);
  lt_push(L, ds_expand(t, n, shape));
  return 1;
}

static int t_transpose(lua_State *L) {
  ds_tensor *t = lt_check(L, 1);
  lt_push(L, ds_transpose(t, lt_dim(L, 2, t), lt_dim(L, 3, t)));
  return 1;
}

static int t_narrow(lua_State *L) {
  ds_tensor *t = lt_check(L, 1);
  int d = lt_dim(L, 2, t);
  lt_push(L, ds_narrow(t, d, luaL_checkinteger(L, 3) - 1, luaL_checkinteger(L, 4)));
  return 1;
}

static int t_select(lua_State *L) {
  ds_tensor *t = lt_check(L, 1);
  int d = lt_dim(L, 2, t);
  lt_push(L, ds_select(t, d, luaL_checkinteger(L, 3) - 1));
  return 1;
}

static int t_contiguous(lua_State *L) { lt_push(L, ds_contiguous(lt_check(L, 1))); return 1; }
static int t_clone(lua_State *L) { lt_push(L, ds_clone(lt_check(L, 1))); return 1; }

static int t_copy(lua_State *L) {
  ds_tensor *dst = lt_check(L, 1), *src = lt_check(L, 2);
  if (ds_copy(dst, src)) return lt_raise(L);
  lua_settop(L, 1);
  return 1;
}

static int t_fill(lua_State *L) {
  ds_fill(lt_check(L, 1), (float)luaL_checknumber(L, 2));
  lua_settop(L, 1);
  return 1;
}

/* to_bytes(t, dtype?, scale?): raw little-endian float32 bytes (row-major), or with
 * dtype "u8" one byte per value, round(value * scale) clamped to 0..255 (image files). */
static int t_to_bytes(lua_State *L) {
  const char *dtype = luaL_optstring(L, 2, "f32");
  float scale = (float)luaL_optnumber(L, 3, 1.0);
  if (strcmp(dtype, "f32") != 0 && strcmp(dtype, "u8") != 0) return luaL_argerror(L, 2, "dtype must be \"f32\" or \"u8\"");
  ds_tensor *t = lt_check(L, 1);
  int64_t n = ds_numel(t);
  luaL_Buffer b; /* made before the copy below: a memory error here leaks nothing */
  char *out = luaL_buffinitsize(L, &b, (size_t)n * (dtype[0] == 'f' ? sizeof(float) : 1));
  ds_tensor *c = ds_contiguous(t);
  if (!c) return lt_raise(L);
  if (dtype[0] == 'f') {
    memcpy(out, ds_data(c), sizeof(float) * (size_t)n);
    luaL_pushresultsize(&b, sizeof(float) * (size_t)n);
  } else {
    for (int64_t i = 0; i < n; i++) {
      float v = nearbyintf(ds_data(c)[i] * scale);
      out[i] = (char)(unsigned char)(v > 255 ? 255 : (v > 0 ? v : 0)); /* NaN -> 0 */
    }
    luaL_pushresultsize(&b, (size_t)n);
  }
  ds_release(c);
  return 1;
}

/* from_bytes(string, shape, offset?, dtype?) with dtype "f32" (default) or "u8" (scaled by `scale`). */
static int t_from_bytes(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  luaL_checktype(L, 2, LUA_TTABLE);
  int64_t shape[DS_MAXDIM];
  int nd = lt_shape(L, 2, shape);
  lua_Integer off = luaL_optinteger(L, 3, 0);
  const char *dtype = luaL_optstring(L, 4, "f32");
  float scale = (float)luaL_optnumber(L, 5, 1.0);
  int64_t n = 1;
  for (int d = 0; d < nd; d++) n *= shape[d];
  size_t width = strcmp(dtype, "u8") == 0 ? 1 : strcmp(dtype, "f32") == 0 ? 4 : 0;
  if (!width) return luaL_argerror(L, 4, "dtype must be \"f32\" or \"u8\"");
  if (off < 0 || (size_t)off > len || (len - (size_t)off) / width < (size_t)n)
    return luaL_error(L, "from_bytes: need %d bytes at offset %d, the data has %d", (int)(n * (int64_t)width),
                      (int)off, (int)len);
  ds_tensor *t = ds_tensor_empty(nd, shape);
  if (t) {
    const unsigned char *p = (const unsigned char *)s + off;
    if (width == 4) memcpy(ds_data(t), p, (size_t)n * 4);
    else
      for (int64_t i = 0; i < n; i++) ds_data(t)[i] = p[i] * scale;
  }
  lt_push(L, t);
  return 1;
}

static int t_getuv(lua_State *L) {
  luaL_checkudata(L, 1, LT_TENSOR);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static int t_setuv(lua_State *L) {
  luaL_checkudata(L, 1, LT_TENSOR);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 1);
  return 0;
}

static const luaL_Reg tensor_fns[] = {
    {"zeros", t_zeros}, {"empty", t_empty}, {"full", t_full},
    {"from_table", t_from_table}, {"size", t_size}, {"stride", t_stride}, {"dim", t_dim},
    {"numel", t_numel}, {"is_contiguous", t_is_contiguous}, {"same_shape", t_same_shape}, {"storage_id", t_storage_id},
    {"item", t_item}, {"get", t_get}, {"set", t_set}, {"flat", t_flat}, {"totable", t_totable},
    {"view", t_view}, {"reshape", t_reshape}, {"expand", t_expand}, {"transpose", t_transpose},
    {"narrow", t_narrow}, {"select", t_select}, {"contiguous", t_contiguous}, {"clone", t_clone},
    {"copy", t_copy}, {"fill", t_fill}, {"to_bytes", t_to_bytes}, {"from_bytes", t_from_bytes},
    {"getuv", t_getuv}, {"setuv", t_setuv}, {"free", t_free}, {NULL, NULL}};

void lt_open_tensor(lua_State *L) {
  lt_register(L, "tensor", tensor_fns);
  lua_getfield(L, -1, "tensor");
  luaL_newmetatable(L, LT_TENSOR); /* sets __name, used in "deepsigns.Tensor expected" messages */
  lua_pushcfunction(L, t_free);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, t_free);
  lua_setfield(L, -2, "__close");
  lua_setfield(L, -2, "metatable"); /* core.tensor.metatable: the Lua side adds methods and operators */
  lua_pop(L, 1);
}
