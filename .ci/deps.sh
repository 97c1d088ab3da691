#!/bin/sh
# Checks that what deepsigns needs is there - commands, pkg-config entries, headers,
# Lua modules, the Fashion-MNIST files - whatever installed it. Only when something is
# missing: installs the Debian packages that provide it (as root, with apt-get), or
# prints the exact command and stops. `deps.sh slurm` also checks the Slurm daemons.
missing=""
need() { # need "what" "debian package(s)" test...
  what=$1 pkgs=$2
  shift 2
  if ! "$@" >/dev/null 2>&1; then
    echo "missing: $what" >&2
    missing="$missing $pkgs"
  fi
}
has() { command -v "$1"; }
pc() { pkg-config --exists "$1"; }
lua_module() { lua5.4 -e "require '$1'"; }
any_file() { for f in "$@"; do [ -e "$f" ] && return 0; done; return 1; }

need "a C compiler (cc)" gcc has "${CC:-cc}"
need "make" make has make
need "pkg-config" pkg-config has pkg-config
need "lua5.4" lua5.4 has lua5.4
need "Lua 5.4 headers" liblua5.4-dev any_file /usr/include/lua5.4/lua.h /usr/local/include/lua5.4/lua.h
need "OpenBLAS (OpenMP build)" "libopenblas-dev libopenblas-openmp-dev" \
  any_file /usr/lib/*/openblas-openmp/libopenblas.so /usr/lib/*/libopenblas.so /usr/local/lib/libopenblas.so
need "zlib" zlib1g-dev pc zlib
need "libcrypto (OpenSSL)" libssl-dev pc libcrypto
need "readline headers" libreadline-dev any_file /usr/include/readline/readline.h
need "clang (the fuzzers)" clang has clang
need "clang's sanitizer runtime" libclang-rt-14-dev any_file /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a
need "Lua module lfs" lua-filesystem lua_module lfs
need "Lua module cjson" lua-cjson lua_module cjson
need "busted" lua-busted has busted
need "luarocks" luarocks has luarocks
need "tmux" tmux has tmux
need "GNU parallel" parallel has parallel
need "gnuplot" gnuplot-nox has gnuplot
need "LDoc (make doc)" lua-ldoc has ldoc
need "the Fashion-MNIST files" dataset-fashion-mnist \
  any_file /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte
if [ "$1" = slurm ]; then # make test-slurm: a one-node cluster
  need "munged" munge has munged
  need "slurmctld" slurmctld has slurmctld
  need "slurmd" slurmd has slurmd
  need "the Slurm commands (sbatch, squeue, scontrol)" slurm-client has sbatch
fi

[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing missing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq $missing >/dev/null || {
    echo "apt-get install failed for:$missing" >&2; exit 1; }
else
  echo "install what is missing, on Debian with: sudo apt-get install -y$missing" >&2
  exit 1
fi
