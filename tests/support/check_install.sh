#!/usr/bin/env bash
# Builds examples/consumer against an installed shmstream the way users do, with CMake
# (find_package) and with pkg-config, and runs every program against a live daemon of the same
# installation. Fails on the first thing that does not hold.
#
#   check_install.sh SOURCE_DIR tree BUILD_DIR  # `cmake --install BUILD_DIR --prefix ~/.local`
#                                               # for a throwaway $HOME, and use that (the
#                                               # Python package from the user site, the
#                                               # user units where systemd --user looks)
#   check_install.sh SOURCE_DIR system          # use what is installed in /usr (the .deb)
set -euo pipefail
src=$(realpath "$1")
mode=$2
work=$(mktemp -d /tmp/shmstream-test-install.XXXXXX)
daemon=""
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "check_install: FAIL: $*" >&2; exit 1; }

case "$mode" in
  tree)
    export HOME=$work/home
    prefix=$HOME/.local
    cmake --install "$3" --prefix "$prefix" >/dev/null
    pc=$(find "$prefix" -name shmstream.pc)
    [ -n "$pc" ] || fail "no shmstream.pc installed under $prefix"
    export PKG_CONFIG_PATH=$(dirname "$pc")
    unset PYTHONPATH PYTHONNOUSERSITE
    export PATH=$prefix/bin:$PATH
    cmake_prefix=(-DCMAKE_PREFIX_PATH="$prefix")
    user_units=share/systemd/user
    ;;
  system)
    prefix=/usr
    cmake_prefix=()
    user_units=lib/systemd/user
    ;;
  *) echo "usage: check_install.sh SOURCE_DIR tree BUILD_DIR | SOURCE_DIR system" >&2; exit 2 ;;
esac
for f in bin/shmstream bin/shmstreamd include/shmstream/client.hpp include/shmstream/shmstream.h \
         lib/systemd/system/shmstreamd.service "$user_units/shmstreamd.socket" \
         "$user_units/shmstreamd.service" "$user_units/shmstream-bridge-out@.service" \
         "$user_units/shmstream-bridge-in@.service" lib/tmpfiles.d/shmstream.conf \
         share/man/man1/shmstream.1.gz share/man/man8/shmstreamd.8.gz \
         share/bash-completion/completions/shmstream share/doc/shmstream/copyright \
         share/doc/libshmstream0/copyright; do
  [ -e "$prefix/$f" ] || fail "$prefix/$f was not installed"
done
# The units start this installation's daemon, from where systemd --user looks for them.
grep -qx "ExecStart=$prefix/bin/shmstreamd --foreground --socket %t/shmstream/control.sock" \
  "$prefix/$user_units/shmstreamd.service" ||
  fail "the user unit does not start $prefix/bin/shmstreamd: $(grep ExecStart "$prefix/$user_units/shmstreamd.service")"
if command -v systemd-analyze >/dev/null; then
  # (Whole outputs into grep: grep -q leaving early would break a writer's pipe.)
  grep -qx "$prefix/$user_units" <<<"$(systemd-analyze --user unit-paths 2>/dev/null)" ||
    fail "systemd --user does not look in $prefix/$user_units"
fi
for page in "$prefix/share/man/man1/shmstream.1.gz" "$prefix/share/man/man8/shmstreamd.8.gz"; do
  if command -v man >/dev/null; then
    grep -q "^NAME" <<<"$(MANWIDTH=80 man -l "$page" 2>&1)" ||
      fail "man -l $page renders no NAME section"
  fi
done
libdir=$(pkg-config --variable=libdir shmstream) || fail "pkg-config does not find shmstream"
libdir=$(realpath "$libdir")
[ -e "$libdir/libshmstream.so.0" ] && [ -e "$libdir/libshmstream.a" ] ||
  fail "libshmstream.so.0 and libshmstream.a are not both in $libdir"
# The shared library exports the API and nothing else (no Cap'n Proto, fmt or internals).
leaked=$(nm -D --defined-only "$libdir/libshmstream.so.0" | c++filt | grep -v shmstream || true)
[ -z "$leaked" ] || fail "libshmstream.so exports non-shmstream symbols: $(echo "$leaked" | head -3)"

# A daemon of this installation, on a private socket.
export SHMSTREAM_SOCKET=$work/ctl.sock
mkfifo "$work/ready"
"$prefix/bin/shmstreamd" --foreground --socket "$SHMSTREAM_SOCKET" --persist-dir "$work/persist" \
  --log-level warn --ready-fd 3 3>"$work/ready" &
daemon=$!
read -r -t 10 -n 1 _ <"$work/ready" || fail "the installed shmstreamd did not start"

run() {  # run PROGRAM: it must succeed and say its bytes came back intact
  local out
  out=$("$@") || fail "$* exited $?"
  echo "  $out"
  [[ "$out" == *"1048576 bytes written and read back intact"* ]] || fail "$*: unexpected output"
}
uses_installed_library() {  # the program loads libshmstream.so.0 from the installation
  local loaded
  loaded=$(ldd "$1" | awk '$1 == "libshmstream.so.0" { print $3 }')
  [ -n "$loaded" ] && [ "$(realpath "$loaded")" = "$(realpath "$libdir/libshmstream.so.0")" ] ||
    fail "$1 does not load $libdir/libshmstream.so.0: $(ldd "$1" | grep shmstream)"
}

echo "check_install: CMake, find_package(shmstream CONFIG REQUIRED)"
cmake -S "$src/examples/consumer" -B "$work/cmake" "${cmake_prefix[@]}" >/dev/null ||
  fail "configuring the consumer project with CMake"
cmake --build "$work/cmake" >/dev/null || fail "building the consumer project with CMake"
uses_installed_library "$work/cmake/consumer_cpp"
uses_installed_library "$work/cmake/consumer_c"
! ldd "$work/cmake/consumer_c_static" | grep -q libshmstream ||
  fail "consumer_c_static loads libshmstream.so: it should have linked libshmstream.a"
run "$work/cmake/consumer_cpp"
run "$work/cmake/consumer_c"
run "$work/cmake/consumer_c_static"

echo "check_install: pkg-config --cflags --libs shmstream"
rpath=-Wl,-rpath,$libdir
# shellcheck disable=SC2046  # pkg-config's output is meant to be split
c++ -std=c++20 -o "$work/pc_cpp" "$src/examples/consumer/consumer.cpp" \
  $(pkg-config --cflags --libs shmstream) "$rpath" || fail "building consumer.cpp with pkg-config"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror -o "$work/pc_c" "$src/examples/consumer/consumer.c" \
  $(pkg-config --cflags --libs shmstream) "$rpath" || fail "building consumer.c with pkg-config"
uses_installed_library "$work/pc_cpp"
uses_installed_library "$work/pc_c"
run "$work/pc_cpp"
run "$work/pc_c"

echo "check_install: the library autostarts the daemon installed with it"
(
  export SHMSTREAM_SOCKET=$work/autostart/ctl.sock
  mkdir -m 0700 "$work/autostart"
  PATH=/usr/bin:/bin run "$work/pc_c"
  started=$(head -1 "$SHMSTREAM_SOCKET.lock")
  [ "$(readlink "/proc/$started/exe")" = "$(realpath "$prefix/bin/shmstreamd")" ] ||
    fail "the autostarted daemon is $(readlink "/proc/$started/exe"), not $prefix/bin/shmstreamd"
  "$prefix/bin/shmstream" --no-autostart daemon stop >/dev/null || fail "daemon stop"
)

echo "check_install: Python module (import shmstream), reading what the installed CLI wrote"
/usr/bin/python3 - <<'PY' || fail "the installed Python module"
import os, subprocess, sys
import shmstream
data = os.urandom(1 << 20)
subprocess.run(["shmstream", "--no-autostart", "write", "py-check"], input=data, check=True)
client = shmstream.Client()
reader = client.open("py-check")
got = b"".join(bytes(chunk) for chunk in reader)
assert got == data, "the Python reader read other bytes than the CLI wrote"
client.remove("py-check")
print(f"  python: {len(got)} bytes read back intact ({shmstream.__file__})")
PY
echo "check_install: OK ($mode: $prefix)"
