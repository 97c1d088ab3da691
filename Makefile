# deepsigns build. Every path and flag can be overridden: make CC=clang CFLAGS=-O0 ...
PREFIX      ?= /usr/local
BUILD       ?= build
PKG_CONFIG  ?= pkg-config
LUA_PC      ?= lua5.4
LUA         ?= lua5.4
BUSTED      ?= $(shell command -v busted 2>/dev/null || echo /usr/bin/busted)
LUA_INCDIR  ?=
LUA_CFLAGS  ?= $(if $(LUA_INCDIR),-I$(LUA_INCDIR),$(shell $(PKG_CONFIG) --cflags $(LUA_PC) 2>/dev/null))
LUA_LIBS    ?= $(shell $(PKG_CONFIG) --libs $(LUA_PC) 2>/dev/null)
# OpenBLAS built on OpenMP (Debian's libopenblas-openmp-dev), so that its threads
# and the core's own OpenMP loops are one team instead of two fighting over the
# cores; linked by path (with a run path) whatever the system alternative is.
MULTIARCH   ?= $(shell gcc -print-multiarch 2>/dev/null)
OPENBLAS_DIR ?= $(firstword $(wildcard /usr/lib/$(MULTIARCH)/openblas-openmp) $(wildcard /usr/lib/$(MULTIARCH)/openblas-pthread))
OPENBLAS_INC ?= $(firstword $(wildcard /usr/include/$(MULTIARCH)/openblas-openmp) $(wildcard /usr/include/$(MULTIARCH)/openblas-pthread))
BLAS_CFLAGS ?= $(if $(OPENBLAS_INC),-I$(OPENBLAS_INC),$(shell $(PKG_CONFIG) --cflags openblas 2>/dev/null))
comma := ,
BLAS_LIBS   ?= $(if $(OPENBLAS_DIR),-L$(OPENBLAS_DIR) -Wl$(comma)-rpath$(comma)$(OPENBLAS_DIR) -lopenblas,$(shell $(PKG_CONFIG) --libs openblas 2>/dev/null))
ZLIB_LIBS   ?= -lz
CRYPTO_LIBS ?= $(shell $(PKG_CONFIG) --libs libcrypto 2>/dev/null || echo -lcrypto)
READLINE_LIBS ?= -lreadline
SAN         ?=
CC          ?= cc
CFLAGS      ?= -O3 -g
# this machine's vector units (AVX2/FMA: the direct convolution kernels), also when a
# LuaRocks build passes its own CFLAGS; ARCH_FLAGS= builds for any x86-64
ARCH_FLAGS  ?= -march=native
# always on: the language level, warnings, and exporting only luaopen_deepsigns_core
DS_CFLAGS   := -fopenmp -fno-math-errno -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -fPIC -fvisibility=hidden
LIBFLAG     ?= -shared
# a plain lua5.4 dlcloses the module at exit; that would unmap libgomp under its still
# running worker threads (a crash at exit), so the module is never unloaded
NODELETE    := -Wl,-z,nodelete
LDFLAGS     ?=
# where `make install` (and the rockspec) put things
LUADIR      ?= $(PREFIX)/share/lua/5.4
LIBDIR      ?= $(PREFIX)/lib/lua/5.4
BINDIR      ?= $(PREFIX)/bin
# where the interpreter looks for the Lua files (the source tree for a plain build)
DS_LUA_DIR  ?= $(CURDIR)/lua

CORE_SRC := $(wildcard csrc/core/*.c)
LUA_SRC  := $(wildcard csrc/lua/*.c)
CORE_OBJ := $(CORE_SRC:csrc/%.c=$(BUILD)/obj/%.o)
LUA_OBJ  := $(LUA_SRC:csrc/%.c=$(BUILD)/obj/%.o)
HEADERS  := $(wildcard csrc/core/*.h csrc/lua/*.h)
MODULE   := $(BUILD)/lib/deepsigns/core.so
INTERP   := $(BUILD)/bin/deepsigns
ALL_CFLAGS = $(CFLAGS) $(ARCH_FLAGS) $(DS_CFLAGS) $(SAN) $(LUA_CFLAGS) $(BLAS_CFLAGS)

.SECONDARY:
.PHONY: all deps test test-slow test-slurm test-asan fuzz demo bench doc install clean
all: $(MODULE) $(INTERP)

$(BUILD)/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(MODULE): $(CORE_OBJ) $(LUA_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -fopenmp $(LIBFLAG) $(NODELETE) -o $@ $^ $(BLAS_LIBS) $(ZLIB_LIBS) $(CRYPTO_LIBS) -lm $(LDFLAGS)

$(BUILD)/obj/main.o: csrc/main.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DDS_LUA_DIR='"$(DS_LUA_DIR)"' -c $< -o $@

$(INTERP): $(BUILD)/obj/main.o $(CORE_OBJ) $(LUA_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -fopenmp -o $@ $^ $(LUA_LIBS) $(BLAS_LIBS) $(ZLIB_LIBS) $(CRYPTO_LIBS) $(READLINE_LIBS) -lm -ldl -Wl,-E $(LDFLAGS)

# Debian packages the build, the tests and the demo need; installed when root.
deps:
	@sh .ci/deps.sh

TEST_ENV = LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/?.lua;;" \
           LUA_CPATH="$(CURDIR)/$(BUILD)/lib/?.so;;" DEEPSIGNS_BIN="$(CURDIR)/$(BUILD)/bin/deepsigns"
test: deps
	@$(MAKE) --no-print-directory all
	@$(TEST_ENV) sh .ci/busted.sh $(LUA) $(BUSTED) --exclude-tags=slow,slurm spec

test-slow: deps all
	@$(TEST_ENV) sh .ci/busted.sh $(LUA) $(BUSTED) --tags=slow spec

# A real sweep on a one-node Slurm cluster the spec starts and stops (as root).
test-slurm: deps
	@sh .ci/deps.sh slurm
	@$(MAKE) --no-print-directory all
	@$(TEST_ENV) sh .ci/busted.sh $(LUA) $(BUSTED) --tags=slurm spec

# The suite once more with AddressSanitizer and UBSan: the instrumented
# interpreter runs busted itself, so the module and Lua share one runtime.
test-asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="-O1 -g -fno-omit-frame-pointer" \
	   SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" all
	@LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/?.lua;;" \
	 LUA_CPATH="$(CURDIR)/build-asan/lib/?.so;;" ASAN_OPTIONS=detect_leaks=1 \
	 LSAN_OPTIONS=suppressions=$(CURDIR)/.ci/lsan.supp:print_suppressions=0 \
	 sh .ci/busted.sh build-asan/bin/deepsigns $(BUSTED) --exclude-tags=slow,slurm spec

# libFuzzer harnesses (clang), each run for FUZZ_SECONDS on a copy of its seed corpus,
# under ASan + UBSan; findings go to build-fuzz/artifacts/.
FUZZ_SECONDS ?= 20
FUZZ_CC ?= clang
FUZZERS := idx cifar safetensors
FUZZ_OBJ = $(CORE_SRC:csrc/%.c=build-fuzz/obj/%.o) $(LUA_SRC:csrc/%.c=build-fuzz/obj/%.o)
build-fuzz/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -O1 -g $(DS_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined $(LUA_CFLAGS) $(BLAS_CFLAGS) -c $< -o $@
build-fuzz/fuzz_%: csrc/fuzz/fuzz_%.c $(FUZZ_OBJ)
	$(FUZZ_CC) -O1 -g -fopenmp -fsanitize=fuzzer,address,undefined -DDS_LUA_DIR='"$(CURDIR)/lua"' $(LUA_CFLAGS) $^ \
	  -o $@ $(LUA_LIBS) $(BLAS_LIBS) $(ZLIB_LIBS) $(CRYPTO_LIBS) -lm
fuzz: deps $(FUZZERS:%=build-fuzz/fuzz_%)
	@for f in $(FUZZERS); do \
	  rm -rf build-fuzz/corpus/$$f; mkdir -p build-fuzz/corpus/$$f build-fuzz/artifacts; \
	  cp spec/fixtures/fuzz/$$f/* build-fuzz/corpus/$$f/; \
	  echo "fuzzing $$f for $(FUZZ_SECONDS) s"; \
	  ASAN_OPTIONS=detect_leaks=0 build-fuzz/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=4096 \
	    -artifact_prefix=build-fuzz/artifacts/$$f- build-fuzz/corpus/$$f 2>&1 | tail -n 3 || exit 1; \
	done

# The reference as HTML (build/doc/index.html), from the doc comments ds.help reads.
LDOC ?= ldoc
doc: deps
	@cd doc && $(LDOC) -c config.ld . >/dev/null && echo "reference written to build/doc/index.html"

demo: deps all
	@$(INTERP) examples/demo.lua

bench: deps all
	@$(INTERP) examples/bench/run.lua

install: all
	mkdir -p $(DESTDIR)$(LIBDIR)/deepsigns $(DESTDIR)$(LUADIR) $(DESTDIR)$(BINDIR)
	cp $(MODULE) $(DESTDIR)$(LIBDIR)/deepsigns/core.so
	cp -R lua/deepsigns $(DESTDIR)$(LUADIR)/
	$(MAKE) --no-print-directory BUILD=$(BUILD)/installed DS_LUA_DIR= $(BUILD)/installed/bin/deepsigns
	cp $(BUILD)/installed/bin/deepsigns $(DESTDIR)$(BINDIR)/deepsigns

clean:
	rm -rf build build-asan build-fuzz
