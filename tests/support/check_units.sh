#!/usr/bin/env bash
# Checks deploy/'s systemd units with systemd-analyze verify (system and user scope), pointing
# them at the daemon just built; any complaint fails, warnings included. Exit 77 (skipped) where
# systemd-analyze is missing.
#   check_units.sh SOURCE_DIR BIN_DIR
set -euo pipefail
src=$1 bin=$2
if ! command -v systemd-analyze >/dev/null; then
  echo "skipped: systemd-analyze is not installed (package systemd)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for scope in system user; do
  mkdir -p "$work/$scope" "$work/run"
  chmod 700 "$work/run"
  cp "$src/deploy/systemd/$scope/shmstreamd.socket" "$work/$scope/"
  sed "s|@SHMSTREAM_BINDIR@|$bin|" "$src/deploy/systemd/$scope/shmstreamd.service.in" \
    >"$work/$scope/shmstreamd.service"
  flag=""
  units=(./shmstreamd.socket ./shmstreamd.service)
  if [ "$scope" = user ]; then
    flag="--user"
    # The bridge templates, as instance cam0 (verify reads the template beside it).
    for direction in out in; do
      sed "s|@SHMSTREAM_BINDIR@|$bin|" \
        "$src/deploy/systemd/user/shmstream-bridge-$direction@.service.in" \
        >"$work/user/shmstream-bridge-$direction@.service"
      units+=("./shmstream-bridge-$direction@cam0.service")
    done
  fi
  if ! out=$(cd "$work/$scope" && XDG_RUNTIME_DIR="$work/run" \
      systemd-analyze $flag verify "${units[@]}" 2>&1) || [ -n "$out" ]; then
    echo "$scope units: systemd-analyze verify complained:"
    echo "$out"
    status=1
  else
    echo "$scope units: verified"
  fi
done
# The tmpfiles configuration creates the system socket's directory, reachable by all.
if ! grep -Eq '^d /run/shmstream +0755 root root' "$src/deploy/tmpfiles.d/shmstream.conf"; then
  echo "tmpfiles.d/shmstream.conf: no /run/shmstream 0755 entry"
  status=1
fi
exit $status
