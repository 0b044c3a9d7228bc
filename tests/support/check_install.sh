#!/usr/bin/env bash
# Builds examples/consumer against an installed shmstream the way users do, with CMake
# (find_package) and with pkg-config, and runs every program against a live daemon of the same
# installation. Fails on the first thing that does not hold.
#
#   check_install.sh SOURCE_DIR tree BUILD_DIR  # `cmake --install BUILD_DIR` into a temporary
#                                               # prefix, and use that
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
    prefix=$work/prefix
    cmake --install "$3" --prefix "$prefix" >/dev/null
    pc=$(find "$prefix" -name shmstream.pc)
    [ -n "$pc" ] || fail "no shmstream.pc installed under $prefix"
    export PKG_CONFIG_PATH=$(dirname "$pc")
    export PYTHONPATH=$prefix/lib/python3/dist-packages PATH=$prefix/bin:$PATH
    cmake_prefix=(-DCMAKE_PREFIX_PATH="$prefix")
    ;;
  system)
    prefix=/usr
    cmake_prefix=()
    ;;
  *) echo "usage: check_install.sh SOURCE_DIR tree BUILD_DIR | SOURCE_DIR system" >&2; exit 2 ;;
esac
for f in bin/shmstream bin/shmstreamd include/shmstream/client.hpp include/shmstream/shmstream.h \
         lib/systemd/system/shmstreamd.service lib/systemd/user/shmstreamd.socket \
         lib/systemd/user/shmstream-bridge-out@.service lib/systemd/user/shmstream-bridge-in@.service \
         lib/tmpfiles.d/shmstream.conf; do
  [ -e "$prefix/$f" ] || fail "$prefix/$f was not installed"
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
