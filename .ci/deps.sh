#!/bin/sh
# Installs the Debian packages deepsigns needs when they are missing (as root),
# otherwise prints the exact command and stops.
PKGS="gcc make pkg-config lua5.4 liblua5.4-dev libopenblas-dev libopenblas-openmp-dev zlib1g-dev libssl-dev libreadline-dev
clang libclang-rt-14-dev lua-filesystem lua-cjson lua-busted luarocks tmux parallel dataset-fashion-mnist gnuplot-nox"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "installing missing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq $missing >/dev/null || {
    echo "apt-get install failed for:$missing" >&2; exit 1; }
else
  echo "missing Debian packages:$missing" >&2
  echo "install them with: sudo apt-get install -y$missing" >&2
  exit 1
fi
