/* Binding of the data set readers and file helpers. */
#include <fcntl.h>
#include <unistd.h>
#include "../core/error.h"
#include "../core/hash.h"
#include "../core/io.h"
#include "binding.h"

static int l_read_idx(lua_State *L) {
  lt_push(L, ds_read_idx(luaL_checkstring(L, 1)));
  return 1;
}

static int l_read_cifar(lua_State *L) {
  ds_tensor *x, *y;
  if (ds_read_cifar(luaL_checkstring(L, 1), &x, &y)) return lt_raise(L);
  lt_push(L, x);
  lt_push(L, y);
  return 2;
}

static int l_augment(lua_State *L) { /* augment_crop_flip(x, pad, flip_p) */
  lt_push(L, ds_augment_crop_flip(lt_check(L, 1), (int)luaL_optinteger(L, 2, 4), (float)luaL_optnumber(L, 3, 0.5)));
  return 1;
}

/* fsync(path): flush a written file to disk before it is renamed into place. */
static int l_fsync(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int fd = open(path, O_RDONLY);
  if (fd < 0 || fsync(fd) != 0) {
    if (fd >= 0) close(fd);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot sync %s", path);
    return 2;
  }
  close(fd);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_sha256(lua_State *L) { /* hex digest of a string */
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char hex[65];
  if (ds_sha256_hex(s, len, hex)) return lt_raise(L);
  lua_pushstring(L, hex);
  return 1;
}

static const luaL_Reg fns[] = {{"sha256", l_sha256}, {"read_idx", l_read_idx}, {"read_cifar", l_read_cifar},
                               {"augment_crop_flip", l_augment}, {"fsync", l_fsync}, {NULL, NULL}};

void lt_open_io(lua_State *L) { luaL_setfuncs(L, fns, 0); }
