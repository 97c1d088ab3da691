#!/bin/sh
# Runs busted with the given Lua (or interpreter) and ends with the one line CI
# reads: "N passed, N failed". Usage: busted.sh LUA BUSTED [busted args...]
lua=$1 busted=$2
shift 2
log=$(mktemp)
"$lua" "$busted" -o utfTerminal "$@" 2>&1 | tee "$log"
status=$(tail -c 100000 "$log" | sed 's/\x1b\[[0-9;]*m//g' | grep -E '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' | tail -n 1)
rm -f "$log"
if [ -z "$status" ]; then
  echo "0 passed, 1 failed"
  exit 1
fi
count() { echo "$status" | grep -oE "[0-9]+ $1" | grep -oE '^[0-9]+'; }
passed=$(count 'success(es)?')
failures=$(count 'failures?')
errors=$(count 'errors?')
failed=$((failures + errors))
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
