/* libFuzzer target: safetensors model files and white-box / black-box key files,
 * through the Lua readers (any input must end in a Lua error or a valid value). */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int luaopen_deepsigns_core(lua_State *L);

static lua_State *L;

static const char *harness =
    "local S = require 'deepsigns.safetensors'\n"
    "local wb = require 'deepsigns.watermark.whitebox'\n"
    "local bb = require 'deepsigns.watermark.blackbox'\n"
    "return function(s)\n"
    "  pcall(S.decode, s, 'fuzz')\n"
    "  pcall(wb.decode, s, 'fuzz')\n"
    "  pcall(bb.decode, s, 'fuzz')\n"
    "end\n";

static void setup(void) {
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, DS_LUA_DIR "/?.lua;" DS_LUA_DIR "/?/init.lua;/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua");
  lua_setfield(L, -2, "path");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_deepsigns_core);
  lua_setfield(L, -2, "deepsigns.core");
  lua_pop(L, 2);
  if (luaL_dostring(L, harness) != LUA_OK) {
    fprintf(stderr, "fuzz harness: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_setfield(L, LUA_REGISTRYINDEX, "fuzz_fn");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!L) setup();
  lua_getfield(L, LUA_REGISTRYINDEX, "fuzz_fn");
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}
