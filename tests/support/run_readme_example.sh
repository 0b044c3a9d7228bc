#!/usr/bin/env bash
# Runs the README's example against a private, autostarted daemon; checks its output and that
# the daemon's segments are gone from /dev/shm afterwards; stops the daemon.
set -euo pipefail
example="$1"
work=$(mktemp -d /tmp/shmstream-readme.XXXXXX)
export SHMSTREAM_SOCKET="$work/ctl.sock"
export SHMSTREAMD="$(dirname "$example")/shmstreamd"
stop() {
  [ -f "$work/ctl.sock.lock" ] && kill "$(cat "$work/ctl.sock.lock")" 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT
out=$("$example")
if [ "$out" != "hello, readers" ]; then
  echo "FAIL: the README example printed '$out'"
  exit 1
fi
# The daemon logs its segment prefix ("segments in /dev/shm as shmstream.<tag>.*").
prefix=$(grep -o 'shmstream\.[0-9a-f]*\.\*' "$work/ctl.sock.log" | head -1 | tr -d '*')
if [ -z "$prefix" ]; then
  echo "FAIL: the autostarted daemon did not log its segment prefix"
  exit 1
fi
if ls /dev/shm | grep -q "^$prefix"; then
  echo "FAIL: segments left in /dev/shm: $(ls /dev/shm | grep "^$prefix")"
  exit 1
fi
echo "README example printed '$out' and left nothing in /dev/shm"
