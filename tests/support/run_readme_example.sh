#!/usr/bin/env bash
# Runs one of the README's examples against a private, autostarted daemon; checks its output and
# that the daemon's segments are gone from /dev/shm afterwards; stops the daemon.
#
#   run_readme_example.sh BIN_DIR EXPECTED_OUTPUT COMMAND...
set -euo pipefail
bin_dir="$1"
want="$2"
shift 2
work=$(mktemp -d /tmp/shmstream-readme.XXXXXX)
export SHMSTREAM_SOCKET="$work/ctl.sock"
export SHMSTREAMD="$bin_dir/shmstreamd"
stop() {
  [ -f "$work/ctl.sock.lock" ] && kill "$(cat "$work/ctl.sock.lock")" 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT
out=$("$@")
if [ "$out" != "$(printf "$want")" ]; then
  echo "FAIL: the README example printed '$out', not '$(printf "$want")'"
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
