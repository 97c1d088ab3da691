rockspec_format = "3.0"
package = "deepsigns"
version = "scm-1"
source = {
   url = "file://.", -- built from a checkout: luarocks --lua-version=5.4 make rockspec/deepsigns-scm-1.rockspec
}
description = {
   summary = "DeepSigns watermarks for deep neural networks: C tensor core, autograd, Lua API",
   detailed = [[
Embed, extract and attack DeepSigns white-box and black-box watermarks from Lua scripts,
on a C core of float32 tensors, layers, autograd and watermark losses (OpenBLAS GEMM).
Installs the module `deepsigns` and the `deepsigns` interpreter.]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.4, < 5.5",
}
external_dependencies = {
   OPENBLAS = { library = "openblas" },
}
build = {
   type = "make",
   -- the Makefile is the single build definition
   build_variables = {
      CFLAGS = "$(CFLAGS)",
      LIBFLAG = "$(LIBFLAG)",
      LUA_INCDIR = "$(LUA_INCDIR)",
   },
   install_variables = {
      PREFIX = "$(PREFIX)",
      LIBDIR = "$(LIBDIR)",
      LUADIR = "$(LUADIR)",
      BINDIR = "$(BINDIR)",
      CFLAGS = "$(CFLAGS)",
      LIBFLAG = "$(LIBFLAG)",
      LUA_INCDIR = "$(LUA_INCDIR)",
   },
}
